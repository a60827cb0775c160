"""Files a person opens: depth and label PNGs, ``.npy`` arrays and PLY point clouds.

Shared by every front end that writes files (``dpt_ros.predict``, the bag tool's ``--export``,
the webcam demo's snapshots), so a depth PNG means the same thing whichever tool wrote it.

- Every file is written atomically: to a temporary name beside the target, then renamed, so an
  interrupted run never leaves a half-written file under the final name. Files get the user's
  umask (``0o666 & ~umask``), like any file a program creates with ``open``.
- Depth PNGs are 16-bit single channel. ``png_format="mm"`` stores millimetres (at most 65.535 m,
  the convention of TUM RGB-D and of ROS ``16UC1`` depth, REP 118); ``"kitti"`` stores metres x 256
  (at most 255.996 m, the KITTI depth benchmark's convention, which the authors use for their KITTI
  model). 0 means invalid. A finite depth that does not fit is written as 0 and counted, never
  saturated: a 78 m pixel must not read back as 65.535 m.
- PNGs carry text metadata (PNG ``tEXt`` chunks, written with Pillow because OpenCV cannot): what
  the pixels hold, their scale, and whatever the caller adds: ``model_metadata`` names the model
  and whether its weights were random.
- ``depth_file_names`` gives names that say inverse vs metric depth (and the PNG format).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

PNG_FORMATS = {"mm": 1000.0, "kitti": 256.0}
"""Depth PNG formats: name -> stored value per metre."""

PNG_SCALE_TEXT = {"mm": "millimetres (value / 1000 = metres)", "kitti": "metres x 256 (KITTI)"}


def depth_file_names(stem: str, metric: bool, png_format: str = "mm") -> dict[str, str]:
    """File names that say what they hold, for every tool that writes depth files.

    Metric depth: ``<stem>_depth_m.npy`` (float32 metres), ``<stem>_depth_mm.png`` or
    ``<stem>_depth_kitti.png`` (the PNG format), ``<stem>_depth_color.png``. Relative inverse
    depth: ``<stem>_inverse_depth.npy``, ``<stem>_inverse_depth.png``,
    ``<stem>_inverse_depth_color.png``. Keys: "npy", "png", "color".
    """
    if png_format not in PNG_FORMATS:
        raise ExportError(f"png_format must be one of {sorted(PNG_FORMATS)}, got {png_format!r}")
    if metric:
        return {
            "npy": f"{stem}_depth_m.npy",
            "png": f"{stem}_depth_{png_format}.png",
            "color": f"{stem}_depth_color.png",
        }
    return {
        "npy": f"{stem}_inverse_depth.npy",
        "png": f"{stem}_inverse_depth.png",
        "color": f"{stem}_inverse_depth_color.png",
    }


def model_metadata(model: str, weights: str | None) -> dict[str, str]:
    """PNG text naming the network behind a file: ``dpt_ros.model``, ``dpt_ros.weights`` and
    ``dpt_ros.random_weights`` ("yes (untrained, seeded)" / "no"), for every tool's exports.
    ``weights`` as the tools take it: None/'' = the released checkpoint, 'random', a path..."""
    random_weights = weights == "random"
    return {
        "dpt_ros.model": model,
        "dpt_ros.weights": weights or "released checkpoint",
        "dpt_ros.random_weights": "yes (untrained, seeded)" if random_weights else "no",
    }


class ExportError(RuntimeError):
    """A file cannot be written (missing optional package, bad array); the text says why."""


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is
    untouched. The temporary name keeps the suffix, so writers that choose a format by file
    extension (OpenCV, Open3D) still work. The final file has mode ``0o666 & ~umask``.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise ExportError(f"nothing was written to {path}")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_image(values: np.ndarray, what: str, channels: int | None = None) -> np.ndarray:
    values = np.asarray(values)
    ok_shape = values.ndim == 2 if channels is None else values.ndim == 3 and values.shape[2] == 3
    if not ok_shape or values.shape[0] == 0 or values.shape[1] == 0:
        want = "(H, W)" if channels is None else "(H, W, 3)"
        raise ExportError(f"{what} must be a non-empty {want} array, got shape {values.shape}")
    return values


def _write_png(path: str | os.PathLike, image: np.ndarray, metadata: Mapping[str, object] | None):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_text(str(key), str(value))
    # uint16 (H, W) becomes Pillow's "I;16" (a 16-bit grey PNG), uint8 grey or RGB as such.
    picture = Image.fromarray(np.ascontiguousarray(image))
    with atomic_output(path) as tmp:
        picture.save(tmp, format="PNG", pnginfo=info)


def depth_to_png16(depth_m: np.ndarray, png_format: str = "mm") -> tuple[np.ndarray, int]:
    """float (H, W) metres -> (uint16 (H, W), number of finite depths that did not fit).

    NaN, +-Inf and depths <= 0 become 0 (invalid) without being counted: they were never valid
    depths. A positive finite depth above the format's range is written 0 and counted.
    Raises ExportError for an unknown ``png_format``.
    """
    if png_format not in PNG_FORMATS:
        raise ExportError(f"png_format must be one of {sorted(PNG_FORMATS)}, got {png_format!r}")
    depth = _check_image(depth_m, "depth").astype(np.float64, copy=False)
    scaled = np.rint(
        np.where(np.isfinite(depth) & (depth > 0), depth, 0.0) * PNG_FORMATS[png_format]
    )
    too_far = scaled > 65535
    out = np.where(too_far, 0, scaled).astype(np.uint16)
    return out, int(np.count_nonzero(too_far))


def write_depth_png(
    path: str | os.PathLike,
    depth_m: np.ndarray,
    *,
    png_format: str = "mm",
    metadata: Mapping[str, object] | None = None,
) -> int:
    """Metric depth (H, W) in metres -> 16-bit PNG; returns how many pixels did not fit.

    See the module docstring for the formats. The PNG's text says what it holds and its scale.
    """
    image, overflow = depth_to_png16(depth_m, png_format)
    text = {
        "dpt_ros.content": "metric depth",
        "dpt_ros.scale": PNG_SCALE_TEXT[png_format],
        "dpt_ros.invalid": "0",
        "dpt_ros.out_of_range_pixels": str(overflow),
        **(metadata or {}),
    }
    _write_png(path, image, text)
    return overflow


def write_inverse_depth_png(
    path: str | os.PathLike, inverse: np.ndarray, metadata: Mapping[str, object] | None = None
) -> None:
    """Relative inverse depth (H, W) -> 16-bit PNG scaled min..max to 0..65535.

    Relative inverse depth has no unit; the min and max used are stored in the PNG's text
    (``dpt_ros.min``, ``dpt_ros.max``) so the values can be mapped back. Non-finite pixels -> 0.
    """
    values = _check_image(inverse, "inverse depth").astype(np.float64, copy=False)
    finite = np.isfinite(values)
    image = np.zeros(values.shape, np.uint16)
    lo = hi = 0.0
    if finite.any():
        lo, hi = float(values[finite].min()), float(values[finite].max())
        if hi > lo:
            image[finite] = np.rint((values[finite] - lo) / (hi - lo) * 65535.0).astype(np.uint16)
    text = {
        "dpt_ros.content": "relative inverse depth (no unit; larger is closer)",
        "dpt_ros.scale": "min-max: 0 = dpt_ros.min, 65535 = dpt_ros.max",
        "dpt_ros.min": repr(lo),
        "dpt_ros.max": repr(hi),
        **(metadata or {}),
    }
    _write_png(path, image, text)


def write_labels_png(
    path: str | os.PathLike, labels: np.ndarray, metadata: Mapping[str, object] | None = None
) -> None:
    """Class labels uint8 (H, W) -> 8-bit grey PNG (ADE20K index + 1, 0 = "other")."""
    labels = _check_image(labels, "labels")
    if labels.dtype != np.uint8:
        raise ExportError(f"labels must be uint8, got {labels.dtype}")
    text = {"dpt_ros.content": "segmentation labels (ADE20K class index + 1, 0 = other)"}
    _write_png(path, labels, {**text, **(metadata or {})})


def write_color_png(
    path: str | os.PathLike, rgb: np.ndarray, metadata: Mapping[str, object] | None = None
) -> None:
    """uint8 (H, W, 3) RGB picture -> colour PNG (previews, colour maps, snapshots)."""
    rgb = _check_image(rgb, "colour image", channels=3)
    if rgb.dtype != np.uint8:
        raise ExportError(f"colour image must be uint8, got {rgb.dtype}")
    _write_png(path, rgb, metadata)


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The PNG text chunks of ``path`` as a dict (empty when there are none)."""
    from PIL import Image

    with Image.open(path) as picture:
        return {str(k): str(v) for k, v in getattr(picture, "text", {}).items()}


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` through ``atomic_output`` (float32 depth in metres, NaN = unknown, etc.)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array))


def open3d_or_error(feature: str):
    """Import Open3D or raise ExportError telling how to install it for ``feature``."""
    try:
        import open3d
    except ImportError as error:
        raise ExportError(
            f"{feature} needs Open3D: pip install open3d-cpu (or open3d on a CUDA machine); "
            "Debian/Ubuntu also need: apt-get install libusb-1.0-0"
        ) from error
    return open3d


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None) -> int:
    """Points (N, 3) in metres and optional uint8 (N, 3) RGB -> binary PLY with Open3D.

    Non-finite points are dropped; returns the number of points written. Raises ExportError when
    Open3D is missing, the shapes disagree, or Open3D fails to write.
    """
    points = (
        np.asarray(points, dtype=np.float64).reshape(-1, 3) if np.size(points) else np.zeros((0, 3))
    )
    keep = np.isfinite(points).all(axis=1)
    if colors is not None:
        colors = np.asarray(colors)
        if colors.dtype != np.uint8 or colors.reshape(-1, 3).shape[0] != keep.shape[0]:
            raise ExportError(
                f"colors must be uint8 (N, 3) matching {keep.shape[0]} points, got "
                f"{colors.dtype} {colors.shape}"
            )
        colors = colors.reshape(-1, 3)[keep]
    points = points[keep]
    o3d = open3d_or_error("PLY export")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    if colors is not None:
        cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
    with atomic_output(path) as tmp:
        if not o3d.io.write_point_cloud(str(tmp), cloud, write_ascii=False):
            raise ExportError(f"Open3D could not write {path}")
    return int(points.shape[0])


__all__ = [
    "PNG_FORMATS",
    "ExportError",
    "atomic_output",
    "depth_file_names",
    "depth_to_png16",
    "model_metadata",
    "open3d_or_error",
    "read_png_metadata",
    "write_color_png",
    "write_depth_png",
    "write_inverse_depth_png",
    "write_labels_png",
    "write_npy",
    "write_ply",
]
