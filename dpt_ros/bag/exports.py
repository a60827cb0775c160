"""``--export``: per-frame files (depth PNG, .npy, PLY) and a preview (MP4 + contact sheet).

Files go under ``<output>/exports/<camera>/`` (the camera is its image topic's namespace), named
by the input image's header stamp in nanoseconds with the suffixes of
``export.depth_file_names`` (``<stamp>_depth_m.npy``, ``<stamp>_depth_mm.png`` or
``<stamp>_depth_kitti.png``; ``<stamp>_inverse_depth.npy`` / ``.png`` without a metric scale),
as ``dpt_predict`` and the webcam name theirs, with the PNG text of ``export.model_metadata``,
and are written through ``dpt_ros.export`` (atomic, umask). The preview is built from one small
JPEG tile per frame (input | depth colour | segmentation) kept beside the exports while the run
goes on, so an interrupted run resumes it; when the run completes the tiles become
``preview.mp4`` (OpenCV VideoWriter) and ``contact_sheet.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dpt_ros import export
from dpt_ros.bag.errors import BagOutputError
from dpt_ros.pipeline import Result
from dpt_ros.viz import depth_picture, segmentation_picture

EXPORTS = ("png", "npy", "ply", "preview")
TILE_HEIGHT = 240
SHEET_TILES = 6
PREVIEW_FPS = 10.0


def _tile(picture: np.ndarray) -> np.ndarray:
    """``picture`` scaled to the preview's row height (INTER_AREA), aspect kept."""
    width = max(2, int(round(picture.shape[1] * TILE_HEIGHT / picture.shape[0])))
    return cv2.resize(picture, (width, TILE_HEIGHT), interpolation=cv2.INTER_AREA)


class Exporter:
    """Writes the wanted exports of each frame into ``root`` (``<output>/exports``);
    ``metadata`` (PNG text, e.g. ``export.model_metadata``) goes into every depth PNG."""

    def __init__(
        self,
        root: Path,
        wanted: frozenset[str],
        png_format: str,
        viz: Any,
        metadata: dict[str, str] | None = None,
    ) -> None:
        unknown = sorted(set(wanted) - set(EXPORTS))
        if unknown:
            raise ValueError(f"unknown export(s) {unknown}; choose from {list(EXPORTS)}")
        self.root = root
        self.wanted = wanted
        self.png_format = png_format
        self.viz = viz
        self.metadata = dict(metadata or {})
        self.counts: dict[str, int] = {}

    def _count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def _dir(self, camera: Any, kind: str) -> Path:
        path = self.root / camera.slug / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def frame(self, camera: Any, result: Result, log_ns: int) -> None:
        """Export one processed frame (overlays on ``result.rgb``, the image on the outputs'
        grid); missing data (no metric scale, no cloud) is counted."""
        if not self.wanted:
            return
        name = f"{result.stamp_ns:019d}"
        try:
            self._frame(camera, result, result.rgb, name, log_ns)
        except OSError as error:
            raise BagOutputError(f"{self.root}: cannot write exports: {error}") from None

    def _frame(self, camera: Any, result: Result, rgb: np.ndarray, name: str, log_ns: int) -> None:
        metric, relative = result.metric, result.relative
        names = export.depth_file_names(name, metric is not None, self.png_format)
        meta = {**self.metadata, "dpt_ros.stamp_ns": str(result.stamp_ns)}
        if "png" in self.wanted and relative is not None:
            folder = self._dir(camera, "depth_png")
            if metric is not None:
                overflow = export.write_depth_png(
                    folder / names["png"], metric, png_format=self.png_format, metadata=meta
                )
                self._count("png", 1)
                self._count("png out-of-range pixels (written as 0)", overflow)
            else:
                export.write_inverse_depth_png(folder / names["png"], relative, metadata=meta)
                self._count("png relative (no metric scale)")
        if "npy" in self.wanted and relative is not None:
            folder = self._dir(camera, "depth_npy")
            if metric is not None:
                export.write_npy(folder / names["npy"], metric.astype(np.float32))
                self._count("npy")
            else:
                export.write_npy(folder / names["npy"], relative.astype(np.float32))
                self._count("npy relative (no metric scale)")
        if "ply" in self.wanted:
            if result.points is not None:
                points = result.points.reshape(-1, 3)
                colors = None if result.colors is None else result.colors.reshape(-1, 3)
                export.write_ply(self._dir(camera, "points_ply") / f"{name}.ply", points, colors)
                self._count("ply")
            else:
                self._count("ply skipped (no cloud)")
        if "preview" in self.wanted:
            tiles = [_tile(rgb)]
            if relative is not None:
                viz = self.viz
                tiles.append(
                    _tile(
                        depth_picture(
                            metric,
                            relative,
                            colormap=viz.colormap,
                            min_depth=viz.min_depth,
                            max_depth=viz.max_depth,
                        )
                    )
                )
            if result.labels is not None:
                tiles.append(
                    _tile(segmentation_picture(rgb, result.labels, self.viz.overlay_alpha))
                )
            strip = np.concatenate(tiles, axis=1)
            folder = self._dir(camera, ".preview_tiles")
            with export.atomic_output(folder / f"{log_ns:020d}.jpg") as tmp:
                cv2.imwrite(str(tmp), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))

    def finish(self, cameras: Any) -> dict[str, str]:
        """Turn the preview tiles into ``preview.mp4`` and ``contact_sheet.png`` per camera;
        returns {what: path} of the files written."""
        written: dict[str, str] = {}
        for camera in cameras:
            base = self.root / camera.slug
            for kind in ("depth_png", "depth_npy", "points_ply"):
                if (base / kind).is_dir():
                    written[f"{camera.slug}/{kind}"] = str(base / kind)
            tiles_dir = base / ".preview_tiles"
            if "preview" not in self.wanted or not tiles_dir.is_dir():
                continue
            tiles = sorted(tiles_dir.glob("*.jpg"))
            if tiles:
                video = base / "preview.mp4"
                sheet = base / "contact_sheet.png"
                self._video(tiles, video)
                self._sheet(tiles, sheet)
                written[f"{camera.slug}/preview"] = str(video)
                written[f"{camera.slug}/contact_sheet"] = str(sheet)
            shutil.rmtree(tiles_dir)
        return written

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise BagOutputError(f"{path}: a preview tile cannot be read back")
        return image

    def _video(self, tiles: list[Path], path: Path) -> None:
        first = self._read(tiles[0])
        height, width = first.shape[:2]
        size = (width - width % 2, height - height % 2)  # codecs want even sizes
        with export.atomic_output(path) as tmp:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), PREVIEW_FPS, size)
            if not writer.isOpened():
                raise BagOutputError(f"{path}: OpenCV cannot write MP4 (mp4v) video here")
            try:
                for tile in tiles:
                    image = self._read(tile)
                    if image.shape[:2] != (size[1], size[0]):
                        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                    writer.write(image)
            finally:
                writer.release()

    def _sheet(self, tiles: list[Path], path: Path) -> None:
        count = min(SHEET_TILES, len(tiles))
        picks = np.linspace(0, len(tiles) - 1, count).round().astype(int)
        rows = [self._read(tiles[i]) for i in picks]
        width = max(row.shape[1] for row in rows)
        rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
        sheet = cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_BGR2RGB)
        export.write_color_png(path, sheet)
