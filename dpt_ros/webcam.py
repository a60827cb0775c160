"""Live depth, segmentation and a point cloud from a camera, a video, a stream or images.

    python -m dpt_ros.webcam --source SRC [options]        (console script: dpt_webcam)

SRC is a camera index (``0``), a video file, a stream URL (``rtsp://``, ``http://``), a folder
of images or a glob (see ``dpt_ros.capture``). No ROS is needed. Frames go through the same
``Pipeline`` as the ROS node; settings come from the same schema (``WebcamSettings``, which
shares the node's model, cloud and viz parameters), from ``--config FILE`` and from flags.

Window (OpenCV): input | colour depth | segmentation overlay, with frames/s and latency drawn.
Keys: ``q``/Esc quit, ``c`` next colour map, ``s`` snapshot, space pause. ``--cloud`` adds a
live Open3D point-cloud window. Without a usable display (``--no-display``, no ``DISPLAY``, a
dead X server, or an OpenCV built without GUI such as opencv-python-headless) it runs headless
and says why in one line. ``--record``, ``--stats``, ``--max-frames`` and ``--snapshot-every``
work either way.

Depth is relative unless the model outputs metres (``dpt_hybrid_kitti``, ``dpt_hybrid_nyu``);
there is no LiDAR here. The cloud of relative depth is drawn in relative units (see
:func:`relative_to_pseudo_depth`) and is labelled so. Intrinsics come from ``--camera-info``
(a camera_calibration or CameraInfo YAML) or a pinhole camera with ``--fov``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dpt_ros.calibration import CalibrationError, read_camera_info_yaml
from dpt_ros.capture import CapturedFrame, CaptureThread, FrameSource, SourceError, open_source
from dpt_ros.config import (
    ROS_BUILTIN_PARAMETERS,
    ConfigError,
    NodeSettings,
    WebcamSettings,
    parse_parameter_text,
    read_parameters_file,
    settings_from_mapping,
    spec_by_name,
)
from dpt_ros.display import CloudWindow, Window, display_problem, gui_problem
from dpt_ros.export import (
    ExportError,
    atomic_output,
    depth_file_names,
    model_metadata,
    write_color_png,
    write_depth_png,
    write_inverse_depth_png,
    write_npy,
    write_ply,
)
from dpt_ros.geometry import CameraModel
from dpt_ros.viz import COLORMAPS, depth_picture, segmentation_picture

LOG = logging.getLogger("dpt_ros.webcam")

NODE_NAME = "dpt_webcam"
# Relative inverse depth drawn as a cloud: its 98th percentile at 1, its 2nd at 10 (no unit).
RELATIVE_NEAR, RELATIVE_FAR = 1.0, 10.0
_LIVE_RECORD_FPS = 10.0  # a live source's recording rate when none is given
_QUIT_KEYS = (ord("q"), ord("Q"), 27)

# flag destination -> WebcamSettings parameter it sets (values parsed and checked by the schema)
_FLAG_PARAMETERS = {
    "source": "source",
    "model": "model",
    "weights": "weights",
    "segmentation_model": "segmentation_model",
    "segmentation_weights": "segmentation_weights",
    "device": "device",
    "precision": "precision",
    "net_size": "net_size",
    "threads": "threads",
    "colormap": "viz.colormap",
    "width": "width",
    "height": "height",
    "fps": "fps",
    "fov": "horizontal_fov",
    "camera_info": "camera_info_file",
    "cloud_stride": "cloud.stride",
    "frame_id": "frame_id",
    "snapshot_dir": "snapshot_dir",
}


class DemoError(RuntimeError):
    """A problem that ends the demo with one line (bad camera info, output path, ...)."""


# ============================================================================ arguments
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dpt_ros.webcam",
        description="Live depth, segmentation and point clouds from a camera, video, stream or "
        "images (no ROS needed). Keys in the window: q quit, c next colour map, s snapshot, "
        "space pause.",
    )
    add = parser.add_argument
    add("--source", help="camera index (0), video file, rtsp:// or http:// URL, folder or glob")
    add("--config", type=Path, help="settings YAML (plain mapping or ROS params file)")
    add(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any WebcamSettings parameter, e.g. -p viz.overlay_alpha=0.3 (repeatable)",
    )
    group = parser.add_argument_group("model (the node's parameters of the same names)")
    group.add_argument("--model", help="depth network or plug-in 'package.module:callable'")
    group.add_argument("--weights", help="'random', a checkpoint path/URL; default: released")
    group.add_argument("--segmentation-model", help="e.g. dpt_hybrid_ade20k")
    group.add_argument("--segmentation-weights")
    group.add_argument("--device", help="cpu, cuda or cuda:N")
    group.add_argument("--precision", help="auto (default), fp32, bf16, or fp16 (CUDA)")
    group.add_argument("--net-size", help="network input size, a multiple of 32 (384)")
    group.add_argument("--threads", help="CPU threads for torch (0 = default)")
    group = parser.add_argument_group("capture and camera")
    group.add_argument("--width", help="requested camera width (0 = driver default)")
    group.add_argument("--height", help="requested camera height (0 = driver default)")
    group.add_argument("--fps", help="requested camera frame rate (0 = driver default)")
    group.add_argument(
        "--realtime",
        action="store_true",
        help="files/folders: drop frames like a live camera instead of processing every frame",
    )
    group.add_argument(
        "--camera-info",
        metavar="FILE",
        help="camera_calibration YAML (ost.yaml) or CameraInfo YAML",
    )
    group.add_argument("--fov", help="horizontal field of view in degrees without --camera-info")
    group = parser.add_argument_group("output")
    group.add_argument("--no-display", action="store_true", help="run without windows")
    group.add_argument("--cloud", action="store_true", help="live Open3D point-cloud window")
    group.add_argument("--cloud-stride", help="every n-th pixel in the cloud and PLY (2)")
    group.add_argument("--colormap", help=f"depth colour map: {', '.join(COLORMAPS)}")
    group.add_argument(
        "--record",
        type=Path,
        metavar="OUT.mp4",
        help="write the side-by-side view as a video (.mp4 or .avi)",
    )
    group.add_argument(
        "--record-fps",
        type=float,
        default=0.0,
        help="frame rate written into the recording (default: the file's; "
        f"live sources: {_LIVE_RECORD_FPS:g})",
    )
    group.add_argument("--stats", type=Path, metavar="OUT.json", help="write run statistics")
    group.add_argument("--max-frames", type=int, default=0, help="stop after N processed frames")
    group.add_argument(
        "--snapshot-every",
        type=int,
        default=0,
        metavar="N",
        help="also take a snapshot every N processed frames",
    )
    group.add_argument("--snapshot-dir", help="folder for snapshots (snapshots)")
    group.add_argument(
        "--publish",
        metavar="NS",
        help="publish the captured frames on NS/image_raw and NS/camera_info (needs rclpy)",
    )
    group.add_argument("--frame-id", help="frame_id of the published messages")
    add("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    for name in ("max_frames", "snapshot_every"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.record_fps < 0:
        parser.error("--record-fps must be >= 0")
    return args


def _config_file_values(path: Path) -> dict[str, Any]:
    """Flat values of a settings file; the node's own parameters (a shared depth.yaml) are
    skipped with one line, anything else unknown is an error later."""
    values = read_parameters_file(path, NODE_NAME)
    for name in ROS_BUILTIN_PARAMETERS:
        values.pop(name, None)
    ours, node_only = spec_by_name(WebcamSettings), spec_by_name(NodeSettings)
    skipped = sorted(name for name in values if name not in ours and name in node_only)
    if skipped:
        LOG.info("%s: ignoring node-only parameters %s", path, ", ".join(skipped))
    return {name: value for name, value in values.items() if name not in skipped}


def settings_from_args(args: argparse.Namespace) -> WebcamSettings:
    """WebcamSettings from ``--config``, then the flags, then ``-p NAME=VALUE`` (later wins).

    Raises ConfigError naming the parameter for an unknown name or a bad value.
    """
    values: dict[str, Any] = _config_file_values(args.config) if args.config else {}
    for dest, name in _FLAG_PARAMETERS.items():
        text = getattr(args, dest)
        if text is not None:
            values[name] = parse_parameter_text(name, str(text), WebcamSettings)
    if args.realtime:
        values["realtime"] = True
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"-p needs NAME=VALUE, got {item!r}")
        values[name.strip()] = parse_parameter_text(name.strip(), text, WebcamSettings)
    try:
        return settings_from_mapping(values, WebcamSettings)
    except ConfigError as error:
        where = f" (in {args.config} or the flags)" if args.config else ""
        raise ConfigError(f"{error}{where}") from None


# ============================================================================ pictures
def relative_to_pseudo_depth(inverse: np.ndarray) -> np.ndarray:
    """Relative inverse depth (H, W) -> a depth-like map (no unit) for drawing a cloud.

    Linear in inverse depth: the 98th percentile (near) goes to RELATIVE_NEAR (1) and the 2nd
    percentile to RELATIVE_FAR (10); what lies beyond twice RELATIVE_FAR, and non-finite
    pixels, become NaN. Only the shape is meaningful, never the scale.
    """
    inverse = np.asarray(inverse, dtype=np.float32)
    finite = np.isfinite(inverse)
    out = np.full(inverse.shape, np.nan, np.float32)
    if not finite.any():
        return out
    step = max(1, int(np.sqrt(inverse.size / 20_000)))
    sample = inverse[::step, ::step][finite[::step, ::step]]
    lo, hi = np.percentile(sample if sample.size else inverse[finite], [2.0, 98.0])
    if not hi > lo:
        out[finite] = RELATIVE_NEAR
        return out
    near, far = 1.0 / RELATIVE_NEAR, 1.0 / RELATIVE_FAR
    scaled = far + (inverse - lo) * ((near - far) / (hi - lo))
    keep = finite & (scaled > far / 2.0)
    out[keep] = 1.0 / scaled[keep]
    return out


def _put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    thickness = max(1, int(round(scale * 2)))
    cv2.putText(
        image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA
    )
    cv2.putText(
        image,
        text,
        origin,
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )


def _paused(view: np.ndarray) -> np.ndarray:
    """The last view with PAUSED across its middle."""
    view = view.copy()
    scale = max(0.8, view.shape[0] / 200)
    _put_text(view, "PAUSED (space)", (16, view.shape[0] // 2), scale)
    return view


def compose_view(
    rgb: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    status: str,
) -> np.ndarray:
    """Input | each panel (resized to the input's size) side by side, titled, with ``status``
    along the bottom; returned as BGR uint8 for OpenCV's window and video writer."""
    height, width = rgb.shape[:2]
    tiles = [rgb]
    for _, picture in panels:
        if picture.shape[:2] != (height, width):
            picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_NEAREST)
        tiles.append(picture)
    view = cv2.cvtColor(np.concatenate(tiles, axis=1), cv2.COLOR_RGB2BGR)
    scale = max(0.4, min(1.2, height / 600))
    line = int(30 * scale)
    for i, title in enumerate(["input"] + [title for title, _ in panels]):
        _put_text(view, title, (i * width + 8, line), scale)
    _put_text(view, status, (8, height - line // 2), scale)
    return view


# ============================================================================ statistics
@dataclass
class RunStats:
    """Counters and per-frame timings of one run; ``summary()`` is what --stats writes."""

    latencies_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    processed: int = 0
    started: float | None = None
    finished: float | None = None
    snapshots: list[str] = field(default_factory=list)

    def add(self, latency_ms: float, timings: Mapping[str, float]) -> None:
        self.processed += 1
        self.latencies_ms.append(latency_ms)
        for stage, ms in timings.items():
            self.stages_ms[stage].append(float(ms))

    @property
    def wall_s(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return max(self.finished - self.started, 1e-9)

    @property
    def fps(self) -> float:
        return self.processed / self.wall_s if self.processed else 0.0

    @staticmethod
    def _describe(values: Sequence[float]) -> dict[str, float]:
        if not values:
            return {}
        array = np.asarray(values, dtype=np.float64)
        return {
            "median": round(float(np.median(array)), 3),
            "p95": round(float(np.percentile(array, 95)), 3),
            "mean": round(float(array.mean()), 3),
            "max": round(float(array.max()), 3),
        }

    def summary(self, capture: CaptureThread, extra: Mapping[str, Any]) -> dict[str, Any]:
        left = capture.pending
        return {
            "frames": self.processed,
            "fps": round(self.fps, 4),
            "frames_captured": capture.captured,
            "frames_processed": self.processed,
            "frames_dropped": capture.dropped,
            "frames_left": left,  # read but not processed when the run stopped
            "frames_unreadable": capture.source.unreadable,
            "wall_s": round(self.wall_s, 6),
            "latency_ms": self._describe(self.latencies_ms),
            "stages_ms": {k: self._describe(v) for k, v in sorted(self.stages_ms.items())},
            "snapshots": list(self.snapshots),
            **extra,
        }


# ============================================================================ the demo
class _Cameras:
    """The camera model for a frame size: from the camera info file (scaled to the frame when
    the aspect ratio matches) or a pinhole camera with the configured field of view."""

    def __init__(self, settings: WebcamSettings) -> None:
        self._file = settings.camera_info_file
        self._calibrated = read_camera_info_yaml(self._file) if self._file else None
        self._fov = settings.horizontal_fov
        self._cache: dict[tuple[int, int], CameraModel] = {}
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        if self._calibrated is not None:
            return f"camera info {self._file}"
        return f"pinhole camera, {self._fov:g} deg horizontal field of view"

    def for_size(self, width: int, height: int) -> CameraModel:
        with self._lock:
            camera = self._cache.get((width, height))
            if camera is None:
                camera = self._make(width, height)
                self._cache[(width, height)] = camera
            return camera

    def _make(self, width: int, height: int) -> CameraModel:
        calibrated = self._calibrated
        if calibrated is None:
            return CameraModel.from_fov(width, height, self._fov)
        if calibrated.size == (width, height):
            return calibrated
        if abs(calibrated.width * height - calibrated.height * width) > 0.01 * width * height:
            raise DemoError(
                f"camera info {self._file} is for {calibrated.width}x{calibrated.height} images "
                f"but the source delivers {width}x{height} (another aspect ratio)"
            )
        LOG.warning(
            "camera info %s is for %dx%d; scaled to the frames' %dx%d",
            self._file,
            calibrated.width,
            calibrated.height,
            width,
            height,
        )
        return calibrated.scaled(width, height)


def _check_output_path(path: Path | None, what: str, inputs: Sequence[Path]) -> None:
    if path is None:
        return
    if path.resolve() in {p.resolve() for p in inputs}:
        raise DemoError(f"refusing to overwrite the input {path} with {what}")
    if not path.parent.is_dir():
        raise DemoError(f"{what} folder {path.parent} does not exist")
    if path.is_dir():
        raise DemoError(f"{what} {path} is a folder; give a file name")
    try:  # before the model loads, not at the first frame
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise DemoError(f"cannot write {what} {path}: {error.strerror or error}") from None


def _source_paths(text: str) -> list[Path]:
    path = Path(text).expanduser()
    return [path] if path.is_file() else []


class _Recorder:
    """The side-by-side video, written through a temporary file and renamed when complete."""

    def __init__(self, path: Path, fps: float, stack: contextlib.ExitStack) -> None:
        self.path = path
        self.fps = fps
        self._tmp = stack.enter_context(atomic_output(path))
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0
        stack.callback(self._release)  # runs before atomic_output renames (LIFO)

    def write(self, bgr: np.ndarray) -> None:
        # Codecs want even sides (4:2:0 chroma); pad with black rather than resample.
        pad_y, pad_x = bgr.shape[0] % 2, bgr.shape[1] % 2
        if pad_x or pad_y:
            bgr = cv2.copyMakeBorder(bgr, 0, pad_y, 0, pad_x, cv2.BORDER_CONSTANT)
        if self._writer is None:
            fourcc = "MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"
            self._writer = cv2.VideoWriter(
                str(self._tmp),
                cv2.VideoWriter_fourcc(*fourcc),
                self.fps,
                (bgr.shape[1], bgr.shape[0]),
            )
            if not self._writer.isOpened():
                raise DemoError(
                    f"cannot write the recording {self.path} (OpenCV has no {fourcc} encoder "
                    "for this format; use .mp4 or .avi)"
                )
        self._writer.write(bgr)
        self.frames += 1

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()


def save_snapshot(
    folder: Path,
    name: str,
    rgb: np.ndarray,
    metric: np.ndarray | None,
    relative: np.ndarray | None,
    cloud: tuple[np.ndarray, np.ndarray | None] | None,
    view_bgr: np.ndarray | None = None,
    metadata: Mapping[str, object] | None = None,
) -> list[Path]:
    """Write one snapshot into ``folder`` (created) and return the files written.

    ``NAME_input.png`` (the frame); the depth files named by ``export.depth_file_names`` so
    they say what they hold: ``NAME_depth_m.npy`` + ``NAME_depth_mm.png`` (float32 metres, NaN
    unknown; 16-bit millimetres) when ``metric`` is given, else ``NAME_inverse_depth.npy`` +
    ``NAME_inverse_depth.png`` (relative inverse depth; 16-bit min-max scaled); ``NAME_view.png``
    (the side-by-side view) and ``NAME_cloud.ply`` (Open3D). Without Open3D the PLY is skipped
    with a warning that says what to install.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / name
    written = []
    meta = dict(metadata or {})
    path = base.with_name(f"{name}_input.png")
    write_color_png(path, rgb, meta)
    written.append(path)
    if metric is not None or relative is not None:
        names = depth_file_names(name, metric is not None)
        depth = metric if metric is not None else relative
        path = folder / names["npy"]
        write_npy(path, np.asarray(depth, np.float32))
        written.append(path)
        path = folder / names["png"]
        if metric is not None:
            write_depth_png(path, metric, metadata=meta)
        else:
            write_inverse_depth_png(path, relative, metadata=meta)
        written.append(path)
    if view_bgr is not None:
        path = base.with_name(f"{name}_view.png")
        write_color_png(path, cv2.cvtColor(view_bgr, cv2.COLOR_BGR2RGB), meta)
        written.append(path)
    if cloud is not None:
        path = base.with_name(f"{name}_cloud.ply")
        try:
            write_ply(path, cloud[0], cloud[1])
            written.append(path)
        except ExportError as error:
            LOG.warning("snapshot %s: no PLY: %s", name, error)
    return written


class Demo:
    """One run: source -> capture thread -> Pipeline -> window / recording / snapshots."""

    def __init__(self, settings: WebcamSettings, args: argparse.Namespace) -> None:
        self.settings = settings
        self.args = args
        self.stats = RunStats()
        self.colormap = settings.viz.colormap
        self.paused = False
        self._cloud_window: CloudWindow | None = None
        self._warned_relative_cloud = False
        self._cameras = _Cameras(settings)
        self._publisher = None
        self._source: FrameSource | None = None

    # ------------------------------------------------------------------ set-up
    def _open(self, stack: contextlib.ExitStack) -> CaptureThread:
        settings, args = self.settings, self.args
        inputs = _source_paths(settings.source)
        _check_output_path(args.record, "the recording", inputs)
        _check_output_path(args.stats, "the statistics", inputs)
        source = open_source(settings.source, settings.width, settings.height, settings.fps)
        self._source = source
        stack.callback(source.close)
        LOG.warning(
            "source: %s (%s%s)",
            source.description,
            "live" if source.live else "file",
            f", {source.fps:g} frames/s" if source.fps else "",
        )
        if args.publish:
            self._publisher = _make_publisher(args.publish, settings.frame_id)
            stack.callback(self._publisher.close)
            LOG.warning(
                "publishing %s and %s", self._publisher.image_topic, self._publisher.info_topic
            )

        from dpt_ros.engine import Engine  # torch: only once the source is known to be good
        from dpt_ros.pipeline import Pipeline, PipelineConfig

        model = settings.model
        LOG.warning(
            "loading %s (weights %s) on %s, net size %d",
            model.model,
            model.weights or "released",
            model.device,
            model.net_size,
        )
        self.engine = Engine(model.engine_config())
        self.pipeline = Pipeline(
            self.engine,
            PipelineConfig(
                cloud_stride=settings.cloud.stride,
                cloud_organized=False,
                image_type=settings.camera.image_type,
                rectify=settings.camera.rectify,
            ),
        )
        if model.weights == "random":
            LOG.warning("random weights: the pictures show the pipeline, not a real estimate")
        self.metric = self.engine.depth_semantics == "metric_depth"
        if not self.metric:
            LOG.warning(
                "relative depth (no metric scale: %s outputs relative inverse depth)", model.model
            )
        live = source.live or settings.realtime
        pace = source.fps if settings.realtime and not source.live else 0.0
        if settings.realtime and not source.live and not pace:
            LOG.warning("%s has no frame rate: --realtime cannot pace it", source.description)
        capture = CaptureThread(source, drop=live, pace_fps=pace, on_frame=self._on_frame)
        return capture

    def _on_frame(self, frame: CapturedFrame) -> None:
        if self._publisher is not None:
            height, width = frame.rgb.shape[:2]
            camera = self._cameras.for_size(width, height)
            self._publisher.publish(frame.rgb, frame.stamp_ns, camera)

    def _open_windows(self, stack: contextlib.ExitStack) -> Window | None:
        if self.args.no_display:
            if self.args.cloud:
                LOG.warning("--cloud needs a display: no cloud window with --no-display")
            return None
        problem = display_problem() or gui_problem()
        if problem is None:
            try:
                window = Window()
            except cv2.error as error:
                problem = f"cannot open an OpenCV window ({str(error).strip().splitlines()[-1]})"
        if problem is not None:
            print(f"{problem}: running headless", file=sys.stderr)
            if self.args.cloud:
                LOG.warning("--cloud needs a display: no cloud window")
            return None
        stack.callback(window.close)
        if self.args.cloud:
            kind = "metric depth" if self.metric else "RELATIVE depth (no metric scale)"
            try:
                self._cloud_window = CloudWindow(f"dpt_ros cloud: {kind}")
                stack.callback(lambda: self._cloud_window and self._cloud_window.close())
            except ExportError as error:
                LOG.warning("no cloud window: %s", error)
        return window

    # ------------------------------------------------------------------ per frame
    def _cloud(self, result: Any, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        depth = result.metric if result.metric is not None else None
        if depth is None and result.relative is not None:
            depth = relative_to_pseudo_depth(result.relative)
            if not self._warned_relative_cloud:
                LOG.warning(
                    "point cloud in relative units (no metric scale: use a metric model such as "
                    "dpt_hybrid_kitti or dpt_hybrid_nyu for metres)"
                )
                self._warned_relative_cloud = True
        if depth is None or result.camera is None:
            return None
        return self.pipeline.cloud_from_depth(depth, result.camera, rgb)

    def _panels(self, frame: CapturedFrame, result: Any) -> list[tuple[str, np.ndarray]]:
        viz = self.settings.viz
        panels = []
        if result.relative is not None:
            title = "depth (m)" if result.metric is not None else "depth (relative)"
            picture = depth_picture(
                result.metric,
                result.relative,
                colormap=self.colormap,
                min_depth=viz.min_depth,
                max_depth=viz.max_depth,
            )
            panels.append((f"{title}, {self.colormap}", picture))
        if result.labels is not None:
            panels.append(
                ("segmentation", segmentation_picture(frame.rgb, result.labels, viz.overlay_alpha))
            )
        return panels

    def _status(self, latency_ms: float) -> str:
        fps = self.stats.fps
        capture = self._capture
        text = f"{fps:.1f} fps  latency {latency_ms:.0f} ms"
        if capture.dropped:
            text += f"  dropped {capture.dropped}"
        return text

    def _snapshot(self, frame: CapturedFrame, result: Any, view: np.ndarray) -> None:
        settings = self.settings
        name = time.strftime("snapshot_%Y%m%d-%H%M%S") + f"_{frame.index:06d}"
        meta = {
            "dpt_ros.source": settings.source,
            **model_metadata(settings.model.model, settings.model.weights),
            "dpt_ros.frame_index": str(frame.index),
        }
        cloud = self._cloud(result, frame.rgb)
        written = save_snapshot(
            Path(settings.snapshot_dir),
            name,
            frame.rgb,
            result.metric,
            result.relative,
            cloud,
            view,
            meta,
        )
        self.stats.snapshots.extend(str(p) for p in written)
        LOG.warning("snapshot: %s", ", ".join(str(p) for p in written))

    def _handle_key(self, key: int, frame: CapturedFrame, result: Any, view: np.ndarray) -> bool:
        """React to a key; False to quit."""
        if key < 0:
            return True
        key &= 0xFF
        if key in _QUIT_KEYS:
            return False
        if key in (ord("c"), ord("C")):
            names = list(COLORMAPS)
            self.colormap = names[(names.index(self.colormap) + 1) % len(names)]
            LOG.warning("colour map: %s", self.colormap)
        elif key in (ord("s"), ord("S")):
            self._snapshot(frame, result, view)
        elif key == ord(" "):
            self.paused = not self.paused
        return True

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        """Process until the source ends, --max-frames, q, or Ctrl-C; returns the statistics."""
        from dpt_ros.pipeline import Frame

        args, settings = self.args, self.settings
        with contextlib.ExitStack() as stack:
            capture = self._capture = self._open(stack)
            window = self._open_windows(stack)
            recorder = None
            if args.record is not None:
                fps = args.record_fps or (
                    self._source.fps if not self._source.live and self._source.fps else 0
                )
                recorder = _Recorder(args.record, fps or _LIVE_RECORD_FPS, stack)
            progress = _progress(self._source, args.max_frames, window is None)
            stack.callback(progress.close)
            capture.start()
            stack.callback(capture.stop)
            want_labels = self.engine.segmentation_model is not None
            last: tuple[CapturedFrame, Any, np.ndarray] | None = None
            try:
                while not (args.max_frames and self.stats.processed >= args.max_frames):
                    # (checked once something was shown: some backends map the window late)
                    if window is not None and last is not None and window.closed:
                        break
                    if self.paused and last is not None:
                        key = window.show(_paused(last[2]), wait_ms=30)
                        if not self._handle_key(key, *last):
                            break
                        continue
                    captured = capture.get(timeout=0.05)
                    if captured is None:
                        if capture.error is not None:
                            raise SourceError(f"{self._source.description}: {capture.error}")
                        if capture.ended:
                            break
                        idle = window is not None and last is not None
                        if idle and not self._handle_key(window.show(last[2]), *last):
                            break
                        continue
                    # Latency runs from the read for live sources; a file frame processed frame by
                    # frame waits in the read-ahead by design, so its clock starts at hand-over.
                    since = captured.grabbed if capture.drop else time.perf_counter()
                    if self.stats.started is None:
                        self.stats.started = time.perf_counter()
                    height, width = captured.rgb.shape[:2]
                    frame = Frame(
                        rgb=captured.rgb,
                        stamp_ns=captured.stamp_ns,
                        frame_id=settings.frame_id,
                        camera=self._cameras.for_size(width, height),
                    )
                    result = self.pipeline.process(frame, want_labels=want_labels)
                    timings = dict(result.timings)
                    t0 = time.perf_counter()
                    if self._cloud_window is not None:
                        cloud = self._cloud(result, captured.rgb)
                        if cloud is not None and not self._cloud_window.update(*cloud):
                            self._cloud_window.close()  # closed by the user: the demo goes on
                            self._cloud_window = None
                        timings["cloud_window"] = (time.perf_counter() - t0) * 1e3
                    t0 = time.perf_counter()
                    latency_ms = (t0 - since) * 1e3
                    view = compose_view(
                        captured.rgb, self._panels(captured, result), self._status(latency_ms)
                    )
                    timings["view"] = (time.perf_counter() - t0) * 1e3
                    if recorder is not None:
                        t0 = time.perf_counter()
                        recorder.write(view)
                        timings["record"] = (time.perf_counter() - t0) * 1e3
                    key = -1
                    if window is not None:
                        t0 = time.perf_counter()
                        key = window.show(view)
                        timings["display"] = (time.perf_counter() - t0) * 1e3
                    done = time.perf_counter()
                    self.stats.finished = done
                    self.stats.add((done - since) * 1e3, timings)
                    progress.update(1)
                    last = (captured, result, view)
                    every = args.snapshot_every
                    if every and self.stats.processed % every == 0:
                        self._snapshot(captured, result, view)
                    if not self._handle_key(key, captured, result, view):
                        break
            except KeyboardInterrupt:
                LOG.warning("interrupted: finishing the outputs")
            capture.stop()
            summary = self.stats.summary(capture, self._describe_run(recorder))
            if recorder is not None and recorder.frames == 0:
                raise DemoError(f"no frame was processed: {args.record} not written")
        return summary

    def _describe_run(self, recorder: _Recorder | None) -> dict[str, Any]:
        settings = self.settings
        return {
            "source": self._source.description,
            "model": settings.model.model,
            "weights": settings.model.weights or "released",
            "segmentation_model": settings.model.segmentation_model,
            "device": settings.model.device,
            "precision": settings.model.precision,
            "net_size": settings.model.net_size,
            "depth": "metric" if self.metric else "relative",
            "camera": self._cameras.description,
            "record": str(recorder.path) if recorder is not None else None,
            "record_frames": recorder.frames if recorder is not None else 0,
            "record_fps": recorder.fps if recorder is not None else None,
        }


def _progress(source: FrameSource, max_frames: int, headless: bool) -> Any:
    from tqdm import tqdm

    total = source.frame_count or None
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    # Only headless and on a terminal: the window shows its own numbers.
    return tqdm(total=total, unit="frame", disable=None if headless else True, leave=False)


def _make_publisher(namespace: str, frame_id: str) -> Any:
    try:
        from dpt_ros.ros.camera_publisher import CameraPublisher
    except ImportError as error:
        raise DemoError(
            f"--publish needs rclpy and sensor_msgs ({error.name or error} is missing): pip "
            "install -r requirements-ros.txt, or source a ROS 2 install"
        ) from None
    return CameraPublisher(namespace, frame_id, NODE_NAME)


def _write_stats(path: Path, summary: Mapping[str, Any]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")


def _run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        summary = Demo(settings, args).run()
        if args.stats is not None:
            _write_stats(args.stats, summary)
    except (
        SourceError,
        ConfigError,
        CalibrationError,
        DemoError,
        ExportError,
        OSError,
        RuntimeError,
        ValueError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    latency = summary["latency_ms"]
    print(
        f"{summary['frames']} frames processed of {summary['frames_captured']} captured "
        f"({summary['frames_dropped']} dropped) in {summary['wall_s']:.1f} s: "
        f"{summary['fps']:.2f} frames/s, latency median {latency.get('median', 0):.0f} ms, "
        f"p95 {latency.get('p95', 0):.0f} ms",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 on success, 2 with one ``error:`` line on bad input, 130 on Ctrl-C
    before the first frame."""
    args = parse_args(argv)
    # The package's messages go to this run's stderr as plain lines, whatever the embedding
    # program (or pytest) did to the root logger.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("dpt_ros")
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logger.propagate = False
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


if __name__ == "__main__":
    sys.exit(main())
