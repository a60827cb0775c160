"""Frame -> Result: the one path the node, the rosbag tool and the webcam demo share.

A :class:`Pipeline` runs the engine on a frame, projects the frame's LiDAR scan into the
prediction, fits scale and shift, smooths them over time, converts to metres and builds the
point cloud, doing only the work the caller asks for. It is ROS-free and single-threaded: front
ends own threading and call :meth:`Pipeline.process` from one worker.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import cv2
import numpy as np

from dpt_ros.align import (
    AlignConfig,
    ScaleShiftFilter,
    ScaleShiftFit,
    affine_to_depth,
    fit_scale_shift,
    project_lidar,
    sample_prediction,
)
from dpt_ros.geometry import IMAGE_TYPES, CameraModel, backproject_depth, resolve_image_type

__all__ = ["Frame", "PipelineConfig", "Pipeline", "Result"]

METRIC_DEPTH = "metric_depth"
_FILTER_SETTINGS = ("smoothing", "gate", "gate_max_rejections", "hold_time")
_CAMERA_CACHE_SIZE = 8


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera image and what is known about it.

    ``T_cam_lidar`` maps LiDAR-frame points into the camera's optical frame; it is required
    whenever ``lidar_points`` are given. ``lidar_points`` may have extra columns (intensity,
    ring): only x, y, z are used.
    """

    rgb: np.ndarray  # (H, W, 3) uint8
    stamp_ns: int
    frame_id: str = ""
    camera: CameraModel | None = None
    lidar_points: np.ndarray | None = None  # (N, 3+) in the LiDAR frame
    lidar_frame_id: str = ""
    lidar_stamp_ns: int | None = None
    T_cam_lidar: np.ndarray | None = None  # (4, 4)
    image_topic: str = ""  # the image's topic, for image_type "auto"

    def __post_init__(self) -> None:
        rgb = self.rgb
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
            raise ValueError(
                f"frame rgb must be a uint8 numpy array, got {type(rgb).__name__} "
                f"{getattr(rgb, 'dtype', '')}"
            )
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise ValueError(f"frame rgb must be HxWx3 with H, W > 0, got shape {rgb.shape}")
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, (int, np.integer)):
            raise ValueError(f"frame stamp_ns must be an int (nanoseconds), got {self.stamp_ns!r}")
        if self.camera is not None and not isinstance(self.camera, CameraModel):
            raise ValueError(
                f"frame camera must be a CameraModel or None, got {type(self.camera).__name__}"
            )
        if self.lidar_points is not None:
            points = np.asarray(self.lidar_points)
            if points.ndim != 2 or points.shape[1] < 3:
                raise ValueError(f"frame lidar_points must be Nx3 (or wider), got {points.shape}")
            if self.T_cam_lidar is None:
                raise ValueError(
                    "frame has lidar_points but no T_cam_lidar: the camera<-LiDAR transform is "
                    "needed to project them"
                )
        if self.T_cam_lidar is not None and np.shape(self.T_cam_lidar) != (4, 4):
            raise ValueError(f"frame T_cam_lidar must be 4x4, got {np.shape(self.T_cam_lidar)}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


@dataclass(eq=False)
class Result:
    """What the pipeline made of one frame; arrays are at the engine's output size.

    ``camera`` describes exactly the grid of the outputs (rectified when the input was
    rectified); ``rgb`` is the image on the input-size version of that grid (the frame's image,
    or its rectified version), for overlays. ``metric`` follows REP 117/118: NaN where there is
    no estimate, +Inf beyond ``align.max_depth`` (and where the fitted inverse depth is not
    positive: at infinity, e.g. sky), -Inf closer than ``align.min_depth``.

    ``fit_status`` is the temporal filter's state ("tracking": fresh fit, "holding": last good
    fit reused, "expired": held too long, no scale, "empty": no scale yet), "metric_model" when a
    metric model's own output is used, or "not_computed" when no depth was asked for.
    ``fit_reason`` says why in words; ``notes`` lists what was skipped and why (missing camera,
    no scale for the cloud) for the front end to log.
    """

    stamp_ns: int
    frame_id: str
    relative: np.ndarray | None = None  # (H, W) float32 relative inverse depth (or model metres)
    metric: np.ndarray | None = None  # (H, W) float32 metres, NaN unknown; None: no scale
    labels: np.ndarray | None = None  # (H, W) uint8, argmax + 1, 0 = "other"
    depth_semantics: str | None = None
    camera: CameraModel | None = None  # the camera of the outputs' grid and size
    rgb: np.ndarray | None = None  # (H, W, 3) uint8 image on the outputs' grid (input size)
    fit: ScaleShiftFit | None = None  # the (filtered) fit applied to get ``metric``
    raw_fit: ScaleShiftFit | None = None  # this frame's own LiDAR fit
    fit_status: str = "not_computed"
    fit_reason: str = ""
    scale: float | None = None
    shift: float | None = None
    lidar_points_used: int = 0  # projected LiDAR points that entered the fit
    points: np.ndarray | None = None  # (h, w, 3) organised with NaN, or (N, 3) finite; float32
    colors: np.ndarray | None = None  # uint8 RGB matching ``points``
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the pipeline; all of them may change at run time (see update_config).

    Depth limits live in ``align`` (``align.min_depth`` / ``align.max_depth``): they bound the
    LiDAR points used, the metric output and the cloud alike.
    """

    align: AlignConfig = field(default_factory=AlignConfig)
    refine_metric_scale: bool = field(
        default=False,
        metadata={"description": "for metric-depth models: correct their scale with a "
                  "scale-only LiDAR fit (else their output is used as is)"},
    )  # fmt: skip
    cloud_stride: int = field(
        default=1,
        metadata={"description": "keep every n-th pixel in both directions for the point cloud",
                  "range": (1, 64)},
    )  # fmt: skip
    cloud_organized: bool = field(
        default=False,
        metadata={"description": "organised cloud (image grid with NaN holes) instead of a "
                  "dense list of valid points"},
    )  # fmt: skip
    cloud_colors: bool = field(
        default=True, metadata={"description": "colour the cloud's points from the image"}
    )
    image_type: str = field(
        default="auto",
        metadata={"description": "the input image: 'raw' (K, D), 'rectified' (P) or 'auto' "
                  "(geometry.resolve_image_type)", "choices": IMAGE_TYPES},
    )  # fmt: skip
    rectify: bool = field(
        default=False,
        metadata={"description": "rectify a raw input image first (remap maps made once per "
                  "camera) so every output lies on the rectified grid"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not isinstance(self.align, AlignConfig):
            raise ValueError(f"align must be an AlignConfig, got {type(self.align).__name__}")
        if self.image_type not in IMAGE_TYPES:
            raise ValueError(f"image_type must be one of {IMAGE_TYPES}, got {self.image_type!r}")
        for name in ("refine_metric_scale", "cloud_organized", "cloud_colors", "rectify"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false, got {value!r}")
        stride = self.cloud_stride
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)):
            raise ValueError(f"cloud_stride must be an int, got {stride!r}")
        lo, hi = _field_range("cloud_stride")
        if not lo <= stride <= hi:
            raise ValueError(f"cloud_stride must be in [{lo}, {hi}], got {stride}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PipelineConfig:
        """Build from a mapping: field names, ``align`` as a mapping, or ``align.<name>`` keys."""
        return cls().replace(values)

    def replace(self, changes: Mapping[str, Any]) -> PipelineConfig:
        """A copy with ``changes`` applied and validated (ValueError names the bad setting)."""
        top: dict[str, Any] = {}
        align_changes: dict[str, Any] = {}
        names = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key.startswith("align."):
                align_changes[key[len("align.") :]] = value
            elif key == "align" and isinstance(value, Mapping):
                align_changes.update(value)
            elif key in names:
                top[key] = value
            else:
                raise ValueError(
                    f"unknown pipeline setting {key!r}; known: {sorted(names - {'align'})} and "
                    f"align.<{'|'.join(f.name for f in fields(AlignConfig))}>"
                )
        if align_changes:
            base = top.get("align", self.align)
            if not isinstance(base, AlignConfig):
                raise ValueError(f"align must be an AlignConfig, got {type(base).__name__}")
            unknown = sorted(set(align_changes) - {f.name for f in fields(AlignConfig)})
            if unknown:
                raise ValueError(f"unknown align setting(s) {unknown}")
            top["align"] = dataclasses.replace(base, **align_changes)
        return dataclasses.replace(self, **top)


def _field_range(name: str) -> tuple[int, int]:
    return next(f.metadata["range"] for f in fields(PipelineConfig) if f.name == name)


class Predictor(Protocol):
    """What the pipeline needs from an engine (dpt_ros.engine.Engine provides it)."""

    def infer(self, rgb: np.ndarray, want_depth: bool = True, want_labels: bool | None = None):
        """-> a Prediction with depth, depth_semantics, labels and timings."""
        ...


class Pipeline:
    """Runs one frame through engine, LiDAR alignment and cloud building.

    Stateful only in the temporal scale filter; call :meth:`reset` when the stream jumps.
    """

    def __init__(self, engine: Predictor, config: PipelineConfig | None = None) -> None:
        if not callable(getattr(engine, "infer", None)):
            raise ValueError(f"engine must have an infer(rgb, ...) method, got {engine!r}")
        config = PipelineConfig() if config is None else config
        if not isinstance(config, PipelineConfig):
            raise ValueError(f"config must be a PipelineConfig, got {type(config).__name__}")
        self.engine = engine
        self._config = config
        self._filter = ScaleShiftFilter.from_config(config.align)
        self._lock = threading.Lock()
        self._cameras: dict[tuple, CameraModel] = {}
        # (frame, its rectified image): engine_input and the rest of the frame's processing
        # share one remap.
        self._last_rectified: tuple[Frame, np.ndarray] | None = None

    @property
    def config(self) -> PipelineConfig:
        return self._config

    def update_config(
        self, changes: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> PipelineConfig:
        """Apply settings at run time; a bad value raises ValueError and changes nothing.

        Keys are PipelineConfig field names, ``align`` (an AlignConfig or a mapping) or
        ``align.<name>``. The temporal filter keeps its state across changes.
        """
        merged = {**(changes or {}), **kwargs}
        with self._lock:
            new = self._config.replace(merged)
            for name in _FILTER_SETTINGS:
                setattr(self._filter, name, getattr(new.align, name))
            self._config = new
        return new

    def reset(self) -> None:
        """Forget the scale history (a new bag, a jump in time, a recalibration)."""
        with self._lock:
            self._filter.reset()

    # ------------------------------------------------------------------ per frame
    def process(
        self,
        frame: Frame,
        want_depth: bool = True,
        want_labels: bool = False,
        want_points: bool = False,
    ) -> Result:
        """Run what the wanted outputs need. Points need a metric scale and a camera model."""
        if not isinstance(frame, Frame):
            raise ValueError(f"process() takes a Frame, got {type(frame).__name__}")
        start = time.perf_counter()
        config = self._config  # one snapshot per frame: updates apply from the next frame on
        result = Result(stamp_ns=int(frame.stamp_ns), frame_id=frame.frame_id)
        need_depth = bool(want_depth or want_points)
        want_labels = bool(want_labels)
        # An engine may run only one of the two models; ask it only for what it has.
        if need_depth and getattr(self.engine, "depth_model", True) is None:
            result.notes.append("depth requested but the engine has no depth model")
            need_depth = False
        if want_labels and getattr(self.engine, "segmentation_model", True) is None:
            result.notes.append("labels requested but the engine has no segmentation model")
            want_labels = False
        if not (need_depth or want_labels):
            result.timings["total"] = (time.perf_counter() - start) * 1e3
            return result

        rgb = self.engine_input(frame, config)
        t_engine = time.perf_counter()
        if rgb is not frame.rgb:
            result.timings["rectify"] = (t_engine - start) * 1e3
        prediction = self.engine.infer(rgb, want_depth=need_depth, want_labels=want_labels)
        result.timings["engine"] = (time.perf_counter() - t_engine) * 1e3
        return self._finish(
            frame, prediction, config, result, need_depth, want_labels, want_points, start
        )

    def wanted(
        self, want_depth: bool = True, want_labels: bool = False, want_points: bool = False
    ) -> tuple[bool, bool]:
        """(depth, labels): what the engine must compute for these outputs; what ``process``
        asks the engine for, for callers that run the engine themselves (batched)."""
        need_depth = bool(want_depth or want_points)
        if need_depth and getattr(self.engine, "depth_model", True) is None:
            need_depth = False
        labels = bool(want_labels) and getattr(self.engine, "segmentation_model", True) is not None
        return need_depth, labels

    def process_prediction(
        self,
        frame: Frame,
        prediction: Any,
        want_depth: bool = True,
        want_labels: bool = False,
        want_points: bool = False,
    ) -> Result:
        """``process`` for a frame whose engine prediction the caller already has (from
        ``Engine.infer_batch`` or ``submit``, computed for ``wanted(...)``): LiDAR fit,
        temporal filter, metres and cloud. Frames must come in stamp order, as for ``process``.
        """
        if not isinstance(frame, Frame):
            raise ValueError(f"process_prediction() takes a Frame, got {type(frame).__name__}")
        start = time.perf_counter()
        need_depth, want_labels = self.wanted(want_depth, want_labels, want_points)
        result = Result(stamp_ns=int(frame.stamp_ns), frame_id=frame.frame_id)
        result.timings["engine"] = 0.0
        return self._finish(
            frame, prediction, self._config, result, need_depth, want_labels, want_points, start
        )

    def engine_input(self, frame: Frame, config: PipelineConfig | None = None) -> np.ndarray:
        """The image the engine must see for ``frame``: its rectified version when ``rectify``
        is on and the image is raw and distorted (the remap maps are made once per camera),
        else ``frame.rgb`` itself. Callers that run the engine themselves use this."""
        return self._input_grid(frame, self._config if config is None else config)[0]

    def snapshot_filter(self) -> dict[str, Any]:
        """The temporal filter's complete state (a copy), for ``restore_filter``: a resumed or
        split run continues exactly where the interrupted one stopped."""
        with self._lock:
            return copy.deepcopy(vars(self._filter))

    def restore_filter(self, state: Mapping[str, Any]) -> None:
        """Put back a state from ``snapshot_filter`` (settings stay the current ones)."""
        with self._lock:
            settings = {name: getattr(self._filter, name) for name in _FILTER_SETTINGS}
            vars(self._filter).update(copy.deepcopy(dict(state)))
            vars(self._filter).update(settings)

    def _finish(
        self,
        frame: Frame,
        prediction: Any,
        config: PipelineConfig,
        result: Result,
        need_depth: bool,
        want_labels: bool,
        want_points: bool,
        start: float,
    ) -> Result:
        for stage, ms in (getattr(prediction, "timings", None) or {}).items():
            result.timings[f"engine.{stage}"] = float(ms)
        rgb, input_camera, camera_problem = self._input_grid(frame, config)
        result.rgb = rgb
        if want_labels:
            result.labels = prediction.labels
            if result.labels is None:
                raise RuntimeError("engine returned no labels although labels were requested")

        if need_depth:
            depth = prediction.depth
            if depth is None:
                raise RuntimeError("engine returned no depth although depth was requested")
            result.relative = depth
            result.depth_semantics = prediction.depth_semantics
            flat = flat_output_problem(depth, "the depth prediction")
            if flat:
                result.notes.append(flat)
            camera = self._output_camera(input_camera, depth.shape[1], depth.shape[0])
            result.camera = camera
            if camera_problem:
                result.notes.append(camera_problem)
            self._align(frame, depth, camera, camera_problem, config, result)
            if want_points:
                self._build_cloud(rgb, camera, config, result)
        elif want_labels:
            labels = result.labels
            result.camera = self._output_camera(input_camera, labels.shape[1], labels.shape[0])

        result.timings["total"] = (time.perf_counter() - start) * 1e3
        return result

    # ------------------------------------------------------------------ stages
    def _align(
        self,
        frame: Frame,
        pred: np.ndarray,
        camera: CameraModel | None,
        camera_problem: str,
        config: PipelineConfig,
        result: Result,
    ) -> None:
        align = config.align
        metric_model = result.depth_semantics == METRIC_DEPTH
        if metric_model and not config.refine_metric_scale:
            t0 = time.perf_counter()
            result.metric = rep117_depth(
                pred, 1.0, 0.0, align.min_depth, align.max_depth, METRIC_DEPTH
            )
            result.timings["metric"] = (time.perf_counter() - t0) * 1e3
            result.fit_status, result.fit_reason = "metric_model", "the model outputs metres"
            result.scale, result.shift = 1.0, 0.0
            return

        raw: ScaleShiftFit | None = None
        if frame.lidar_points is None:
            cause = "no LiDAR scan with this frame"
        elif camera is None:
            cause = f"LiDAR not used: {camera_problem}"
        else:
            cause = ""
            t0 = time.perf_counter()
            projection = project_lidar(
                frame.lidar_points,
                frame.T_cam_lidar,
                camera,
                min_depth=align.min_depth,
                max_depth=align.max_depth,
                zbuffer_window=align.zbuffer_window,
                zbuffer_margin=align.zbuffer_margin,
            )
            t1 = time.perf_counter()
            fit_kwargs = align.fit_kwargs()
            if metric_model:
                fit_kwargs["scale_only"] = True
            raw = fit_scale_shift(
                sample_prediction(pred, projection),
                projection.depth,
                pred_semantics=result.depth_semantics or "relative_inverse_depth",
                **fit_kwargs,
            )
            result.timings["project"] = (t1 - t0) * 1e3
            result.timings["fit"] = (time.perf_counter() - t1) * 1e3
            result.lidar_points_used = len(projection)

        with self._lock:
            fit = self._filter.update(raw, frame.stamp_ns * 1e-9)
            state, reason = self._filter.state, self._filter.reason
        result.raw_fit, result.fit, result.fit_status = raw, fit, state
        result.fit_reason = f"{cause}; {reason}" if cause else reason

        t0 = time.perf_counter()
        if fit is not None:
            result.scale, result.shift = fit.scale, fit.shift
            result.metric = rep117_depth(
                pred, fit.scale, fit.shift, align.min_depth, align.max_depth, fit.pred_semantics
            )
        elif metric_model:
            # Without a LiDAR correction a metric model still knows its own scale.
            result.scale, result.shift = 1.0, 0.0
            result.metric = rep117_depth(
                pred, 1.0, 0.0, align.min_depth, align.max_depth, METRIC_DEPTH
            )
            result.fit_reason += "; using the model's own metres"
        result.timings["metric"] = (time.perf_counter() - t0) * 1e3

    def _build_cloud(
        self, rgb: np.ndarray, camera: CameraModel | None, config: PipelineConfig, result: Result
    ) -> None:
        if result.metric is None:
            result.notes.append(f"no point cloud: no metric scale ({result.fit_reason})")
            return
        if camera is None:
            result.notes.append("no point cloud: no usable camera model")
            return
        t0 = time.perf_counter()
        result.points, result.colors = self.cloud_from_depth(
            result.metric, camera, rgb, config=config
        )
        result.timings["cloud"] = (time.perf_counter() - t0) * 1e3

    def cloud_from_depth(
        self,
        depth: np.ndarray,
        camera: CameraModel,
        rgb: np.ndarray | None = None,
        *,
        config: PipelineConfig | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Points of an (H, W) depth map (z along the optical axis) seen by ``camera`` (its size
        is (W, H)), every ``cloud_stride``-th pixel, coloured from ``rgb`` (any size, resized)
        when ``cloud_colors`` is on. Returns float32 (N, 3) finite points, or (h, w, 3) with NaN
        when ``cloud_organized``, and the matching uint8 RGB colours or None. ``config``
        defaults to the current settings (``process`` passes its per-frame snapshot)."""
        config = self._config if config is None else config
        stride = config.cloud_stride
        cloud_camera = self._decimated_camera(camera, stride)
        points = backproject_depth(depth[::stride, ::stride], cloud_camera)
        colors = None
        if config.cloud_colors and rgb is not None:
            if (rgb.shape[1], rgb.shape[0]) != camera.size:
                rgb = cv2.resize(rgb, camera.size, interpolation=cv2.INTER_AREA)
            colors = rgb[::stride, ::stride]
        if not config.cloud_organized:
            # Per-coordinate checks and compress: several times faster than .all(axis=2) and
            # boolean indexing on a VGA cloud.
            valid = np.isfinite(points[..., 0])
            valid &= np.isfinite(points[..., 1])
            valid &= np.isfinite(points[..., 2])
            keep = valid.ravel()
            points = np.compress(keep, points.reshape(-1, 3), axis=0)
            if colors is not None:
                colors = np.compress(keep, colors.reshape(-1, 3), axis=0)
        return points, None if colors is None else np.ascontiguousarray(colors)

    # ------------------------------------------------------------------ cameras
    def _input_grid(
        self, frame: Frame, config: PipelineConfig
    ) -> tuple[np.ndarray, CameraModel | None, str]:
        """(image, its camera, problem): the frame's image as the engine gets it -- rectified
        when ``rectify`` is on and the image is raw -- and the camera of that image (None and
        why when there is no usable one)."""
        camera = frame.camera
        if camera is None:
            problem = "no camera model (camera_info) for this frame: no LiDAR fit, no cloud"
            return frame.rgb, None, problem
        if camera.size != frame.size:
            problem = (
                f"camera model is {camera.width}x{camera.height} but the image is "
                f"{frame.size[0]}x{frame.size[1]}: camera_info does not belong to this image "
                "(its binning and roi are applied)"
            )
            return frame.rgb, None, problem
        kind = resolve_image_type(config.image_type, frame.image_topic)
        if kind == "raw" and not (config.rectify and camera.needs_rectification):
            return frame.rgb, camera, ""
        try:
            rectified = self._cached_camera(camera, ("rectified",))
        except ValueError as error:
            return frame.rgb, None, f"no rectified camera: {error}"
        if kind == "rectified":
            return frame.rgb, rectified, ""
        last = self._last_rectified
        if last is not None and last[0] is frame:
            return last[1], rectified, ""
        # The value-keyed cache keeps one raw camera, and with it its remap maps, across the
        # per-message CameraModels a front end builds.
        image = self._cached_camera(camera, ("raw",)).rectify_image(frame.rgb)
        self._last_rectified = (frame, image)
        return image, rectified, ""

    def _output_camera(
        self, camera: CameraModel | None, width: int, height: int
    ) -> CameraModel | None:
        """The camera at the prediction's size (None stays None)."""
        if camera is None or camera.size == (width, height):
            return camera
        return self._cached_camera(camera, ("scaled", width, height))

    def _decimated_camera(self, camera: CameraModel, stride: int) -> CameraModel:
        """The camera whose pixel (i, j) is pixel (stride*i, stride*j) of ``camera``.

        Unlike resizing, decimation keeps pixel centres where they were, so K is divided by the
        stride with no half-pixel offset.
        """
        if stride == 1:
            return camera
        return self._cached_camera(camera, ("stride", stride))

    def _cached_camera(self, camera: CameraModel, how: tuple) -> CameraModel:
        # Keyed by value: front ends build a new CameraModel per camera_info message, and the
        # camera's per-pixel ray grid is worth keeping across frames.
        key = (camera.key, how)
        cached = self._cameras.get(key)
        if cached is None:
            if how[0] == "raw":
                cached = camera
            elif how[0] == "rectified":
                cached = camera.rectified()
            elif how[0] == "scaled":
                cached = camera.scaled(how[1], how[2])
            else:
                stride = how[1]
                K = camera.K.copy()
                K[:2] /= stride
                cached = CameraModel(
                    K,
                    camera.D,
                    camera.distortion_model,
                    math.ceil(camera.width / stride),
                    math.ceil(camera.height / stride),
                )
            if len(self._cameras) >= _CAMERA_CACHE_SIZE:
                self._cameras.clear()
            self._cameras[key] = cached
        return cached


def rep117_depth(
    pred: np.ndarray,
    scale: float,
    shift: float,
    min_depth: float,
    max_depth: float,
    pred_semantics: str,
) -> np.ndarray:
    """Metric depth (float32 metres) with the invalid values of REP 117 / REP 118.

    Depth = 1 / (scale * p + shift), as ``dpt_ros.align.affine_to_depth``. NaN: no estimate (a
    non-finite prediction; a metric model's non-positive output). +Inf: beyond ``max_depth``,
    or a relative inverse depth whose fitted inverse is not positive (at infinity: sky).
    -Inf: closer than ``min_depth``. Costmaps clear free space along +Inf rays; every consumer
    that checks ``isfinite`` treats all three as "no valid depth".
    """
    depth = affine_to_depth(pred, scale, shift, 0.0, np.inf, pred_semantics)
    p = np.asarray(pred, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        if pred_semantics != METRIC_DEPTH:
            beyond = np.isfinite(p) & ~(np.float32(scale) * p + np.float32(shift) > 0)
            depth[beyond] = np.inf
        depth[depth > max_depth] = np.inf
        depth[depth < min_depth] = -np.inf
    depth[~np.isfinite(p)] = np.nan  # affine_to_depth maps an infinite inverse depth to 0 m
    return depth


def flat_output_problem(values: np.ndarray, what: str) -> str | None:
    """Why ``values`` carry no picture -- every finite value the same, or none finite, as an
    untrained (random) or broken network can give -- or None. ``what`` names them."""
    lo, hi = float(np.min(values)), float(np.max(values))  # NaN if any NaN
    if lo != hi and np.isfinite(lo) and np.isfinite(hi):
        return None
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return f"{what} has no finite value: the output is empty"
    lo, hi = float(finite.min()), float(finite.max())
    if lo == hi:
        return f"{what} is flat (every pixel {lo:g}): the output shows nothing"
    return None
