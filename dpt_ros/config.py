"""Typed settings for the node, the bag tool and the webcam demo, and their parameter specs.

One schema serves every front end: each setting is a dataclass field whose metadata holds the
description, the range or the choices and whether it may change at run time. From it come

- ``parameter_specs(NodeSettings)``: the flat list of ROS parameters the node declares (name,
  kind, default, description, range/choices, read_only),
- ``load_settings(path)``: settings from a YAML file in the ROS params-file format
  (``depth_node: {ros__parameters: {...}}``) or a plain mapping, nested (``align: {gate: 0.3}``)
  or flat (``align.gate: 0.3``),
- ``update_settings(settings, changes)``: run-time changes, validated as a whole.

Every error is a ``ConfigError`` that names the parameter and says what is wrong. The module is
ROS-free; ``dpt_ros/ros/node.py`` turns the specs into ``rcl_interfaces`` descriptors.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import yaml

from dpt_ros.align import AlignConfig
from dpt_ros.precision import PRECISION_CHOICES, precision_problem
from dpt_ros.viz import COLORMAPS

if TYPE_CHECKING:  # the engine pulls in torch: only the methods that need it import it
    from dpt_ros.engine import EngineConfig
    from dpt_ros.pipeline import PipelineConfig

__all__ = [
    "BagSettings",
    "CameraSettings",
    "CloudSettings",
    "ConfigError",
    "InputSettings",
    "KINDS",
    "ModelSettings",
    "NodeSettings",
    "ParamSpec",
    "VizSettings",
    "ROS_BUILTIN_PARAMETERS",
    "WebcamSettings",
    "describe_parameters",
    "load_settings",
    "parameter_specs",
    "parse_parameter_text",
    "read_parameters_file",
    "settings_from_mapping",
    "settings_to_parameters",
    "spec_by_name",
    "update_settings",
]

KINDS = ("bool", "int", "float", "str", "float_list")
PRECISIONS = PRECISION_CHOICES
IMAGE_TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("best_effort", "reliable")
TRANSFORM_SOURCES = ("auto", "tf", "parameters")
_DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")

S = TypeVar("S")


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names it and gives the reason."""


# ============================================================================ field helpers
def _param(
    default: Any,
    description: str,
    *,
    range: tuple[float, float] | None = None,  # noqa: A002
    choices: tuple | None = None,
    read_only: bool = False,
    check: Callable[[Any], str | None] | None = None,
    aliases: Mapping[str, Any] | None = None,
) -> Any:
    meta: dict[str, Any] = {"description": description, "read_only": read_only}
    if aliases is not None:
        meta["aliases"] = dict(aliases)
    if range is not None:
        meta["range"] = range
    if choices is not None:
        meta["choices"] = choices
    if check is not None:
        meta["check"] = check
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def _group(cls: type, prefix: str, read_only: bool | None = None) -> Any:
    """A nested settings group; its parameters are named ``prefix + field name``.

    ``read_only`` overrides the members' own flag (AlignConfig knows nothing about ROS)."""
    return field(default_factory=cls, metadata={"group": prefix, "read_only": read_only})


def _check_device(value: str) -> str | None:
    if not _DEVICE_PATTERN.match(value):
        return "must be 'cpu', 'cuda' or 'cuda:N'"
    return None


def _check_length(*lengths: int) -> Callable[[tuple[float, ...]], str | None]:
    def check(value: tuple[float, ...]) -> str | None:
        if len(value) not in lengths:
            wanted = " or ".join(str(n) for n in lengths)
            return f"must hold {wanted} numbers, got {len(value)}"
        return None

    return check


# ============================================================================ the schema
@dataclass(frozen=True)
class ModelSettings:
    """The networks and where they run; fixed for the life of a process."""

    model: str = _param(
        "dpt_hybrid",
        "depth network: dpt_hybrid, dpt_large, dpt_base, dpt_hybrid_kitti, dpt_hybrid_nyu, or a "
        "plug-in 'package.module:callable' returning a torch module (normalised N,3,H,W image "
        "-> relative inverse depth)",
        read_only=True,
        check=lambda v: None if v.strip() else "must name a model",
    )
    weights: str = _param(
        "",
        "depth weights: '' = the released checkpoint of the model (downloaded once, verified), "
        "'random' = random initialisation, or a checkpoint path, URL or Hugging Face DPT folder",
        read_only=True,
    )
    segmentation_model: str = _param(
        "",
        "segmentation network (e.g. dpt_hybrid_ade20k); '' = no segmentation outputs",
        read_only=True,
    )
    segmentation_weights: str = _param(
        "", "segmentation weights, same forms as 'weights'", read_only=True
    )
    device: str = _param(
        "cpu", "torch device: cpu, cuda or cuda:N", read_only=True, check=_check_device
    )
    precision: str = _param(
        "auto",
        "inference precision; auto = bf16 on a CPU with native bf16 (AVX512-BF16/AMX), else "
        "fp32, and fp16 on CUDA; fp16 needs CUDA; below fp32 a non-finite output reruns in fp32",
        choices=PRECISIONS,
        read_only=True,
    )
    net_size: int = _param(
        0,
        "network input size; 0 (or 'auto') = the model's own size and the authors' 'minimal' "
        "resize (384x384 for dpt_hybrid/large/base, 1216x352 for dpt_hybrid_kitti, 640x480 for "
        "dpt_hybrid_nyu, 480x480 for *_ade20k); N = both image sides at least N (multiple of "
        "32), larger is sharper and slower",
        range=(0, 2048),
        read_only=True,
        check=lambda v: None if v % 32 == 0 else "must be a multiple of 32",
        aliases={"auto": 0},
    )
    output_width: int = _param(
        0,
        "width of the depth outputs in pixels; 0 = the input image's (with output_height)",
        range=(0, 16384),
        read_only=True,
    )
    output_height: int = _param(
        0,
        "height of the depth outputs in pixels; 0 = the input image's (with output_width)",
        range=(0, 16384),
        read_only=True,
    )
    threads: int = _param(
        0, "CPU threads for torch; 0 = torch's default", range=(0, 1024), read_only=True
    )
    cuda_graphs: bool = _param(
        True,
        "on CUDA, capture the network in a CUDA graph once an input size repeats (bounded "
        "cache, least recently used dropped); ignored on the CPU",
        read_only=True,
    )
    compile: bool = _param(False, "torch.compile the network at start-up", read_only=True)
    int8: bool = _param(
        False,
        "CPU: quantise the network's Linear layers to int8 (dynamic; ~15% faster with bf16, "
        "depth error ~0.1% of the range)",
        read_only=True,
    )
    backend: str = _param(
        "pytorch",
        "tensorrt: TensorRT engines through torch-tensorrt (CUDA; pip install "
        "'dpt_ros[tensorrt]'), built once per input size and cached in ~/.cache/dpt_ros/tensorrt; "
        "falls back to pytorch with a warning when unavailable",
        choices=("pytorch", "tensorrt"),
        read_only=True,
    )

    def __post_init__(self) -> None:
        if (self.output_width == 0) != (self.output_height == 0):
            raise ConfigError(
                "parameters 'output_width' and 'output_height': set both or neither, got "
                f"{self.output_width}x{self.output_height}"
            )
        problem = precision_problem(self.device, self.precision)
        if problem is not None:
            raise ConfigError(f"parameter 'precision': {problem}")
        if self.backend == "tensorrt" and self.device == "cpu":
            raise ConfigError("parameter 'backend': 'tensorrt' needs CUDA (device 'cpu')")
        if self.int8 and self.device != "cpu":
            raise ConfigError(f"parameter 'int8': CPU only (device {self.device!r})")

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(width, height) of the outputs, or None for the input size."""
        return (self.output_width, self.output_height) if self.output_width else None

    def engine_config(self) -> EngineConfig:
        """The engine's configuration ('' means None: the released checkpoint / no model)."""
        from dpt_ros.engine import EngineConfig

        return EngineConfig(
            model=self.model,
            weights=self.weights or None,
            segmentation_model=self.segmentation_model or None,
            segmentation_weights=self.segmentation_weights or None,
            device=self.device,
            precision=self.precision,
            net_size=self.net_size or "auto",
            output_size=self.output_size,
            threads=self.threads or None,
            cuda_graphs=None if self.cuda_graphs else False,
            compile=self.compile,
            int8=self.int8,
            backend=self.backend,
        )


@dataclass(frozen=True)
class InputSettings:
    """How the node subscribes and matches camera info and LiDAR to images."""

    image_transport: str = _param(
        "raw",
        "'raw': subscribe to sensor_msgs/Image on 'image'; 'compressed': CompressedImage "
        "(jpeg/png) on 'image/compressed'",
        choices=IMAGE_TRANSPORTS,
        read_only=True,
    )
    input_reliability: str = _param(
        "best_effort",
        "QoS reliability of the input subscriptions; best_effort (sensor data) also receives "
        "from reliable publishers",
        choices=RELIABILITIES,
        read_only=True,
    )
    input_depth: int = _param(
        1,
        "QoS history depth (keep last) of the input subscriptions",
        range=(1, 1000),
        read_only=True,
    )
    output_reliability: str = _param(
        "reliable",
        "QoS reliability of the outputs; reliable publishers serve best_effort and reliable "
        "subscribers alike",
        choices=RELIABILITIES,
        read_only=True,
    )
    max_image_pixels: int = _param(
        7680 * 4320,
        "largest input image (width x height, default 8K UHD); larger images are refused "
        "before decoding (compressed: by their header)",
        range=(1, 1_000_000_000),
    )
    max_aspect_ratio: float = _param(
        8.0,
        "largest long side / short side of an input image; the network input grows with it "
        "(the short side is resized up to the network size), so wider images are refused",
        range=(1.0, 1000.0),
    )
    use_lidar: bool = _param(
        False,
        "subscribe to 'lidar/points' (sensor_msgs/PointCloud2) and fit the metric scale to the "
        "LiDAR",
        read_only=True,
    )
    lidar_transform_source: str = _param(
        "auto",
        "where T_cam_lidar comes from: 'tf' (tf2, looked up at the image stamp; without "
        "tf2_ros the node reads /tf and /tf_static itself, which needs tf2_msgs), 'parameters' "
        "(lidar_T_cam_lidar, or lidar_translation + lidar_rotation), 'auto' = tf when tf2_ros "
        "is importable, else the parameters (and /tf, /tf_static when tf2_msgs is)",
        choices=TRANSFORM_SOURCES,
        read_only=True,
    )
    lidar_translation: tuple[float, ...] = _param(
        (),
        "LiDAR origin in the camera optical frame (x, y, z metres): the translation of "
        "T_cam_lidar; empty = not set",
        check=_check_length(0, 3),
    )
    lidar_rotation: tuple[float, ...] = _param(
        (),
        "rotation of T_cam_lidar as a quaternion (x, y, z, w), as tf2 writes it; empty = not set",
        check=_check_length(0, 4),
    )
    lidar_T_cam_lidar: tuple[float, ...] = _param(
        (),
        "T_cam_lidar as 16 numbers (row-major 4x4, LiDAR frame -> camera optical frame); "
        "overrides lidar_translation/lidar_rotation; empty = not set",
        check=_check_length(0, 16),
    )
    tf_timeout: float = _param(
        0.05,
        "seconds to wait for tf2 to have the transform at the image stamp",
        range=(0.0, 10.0),
    )
    lidar_stamp_tolerance: float = _param(
        0.05,
        "largest |image stamp - LiDAR stamp| (seconds) for a scan to be used with an image",
        range=(0.0, 10.0),
    )
    lidar_wait: float = _param(
        0.05,
        "when the newest scan is older than the image, seconds the worker waits for one with "
        "the image's stamp (a LiDAR driver often publishes after the camera); 0 = do not wait",
        range=(0.0, 5.0),
    )
    lidar_buffer_size: int = _param(
        10, "LiDAR scans kept for matching to images by stamp", range=(1, 1000), read_only=True
    )
    camera_info_tolerance: float = _param(
        1.0,
        "camera info is matched by stamp; without an exact match, the latest one is used if "
        "its stamp is within this many seconds of the image's",
        range=(0.0, 1e9),
    )


@dataclass(frozen=True)
class CameraSettings:
    """How the camera_info describes the image (REP 104, image_geometry)."""

    image_type: str = _param(
        "auto",
        "the input image: 'raw' = projected with camera_info's K and D; 'rectified' = with P "
        "(e.g. image_rect, KITTI); 'auto' = rectified when the image topic's last name starts "
        "with image_rect (image_proc's names), else raw. Binning and ROI are applied as "
        "image_geometry does",
        choices=("auto", "raw", "rectified"),
        read_only=True,
    )
    rectify: bool = _param(
        False,
        "rectify a raw image first (OpenCV remap with K, D, R, P; maps made once per "
        "camera_info) so every output and its camera_info lie on the rectified grid",
        read_only=True,
    )


@dataclass(frozen=True)
class CloudSettings:
    """The PointCloud2 built from metric depth."""

    stride: int = _param(
        2, "take every stride-th pixel in rows and columns (1 = every pixel)", range=(1, 64)
    )
    organized: bool = _param(
        False,
        "publish an organised cloud (height x width grid, NaN where depth is unknown) instead "
        "of a dense list of valid points",
    )


@dataclass(frozen=True)
class VizSettings:
    """Pictures for people: colour-mapped depth and the segmentation overlay."""

    colormap: str = _param("turbo", "colour map of depth/color", choices=tuple(COLORMAPS))
    min_depth: float = _param(
        0.0,
        "depth (m) at the warm end of depth/color; 0 = 2nd percentile of each frame",
        range=(0.0, 1e6),
    )
    max_depth: float = _param(
        0.0,
        "depth (m) at the cold end of depth/color; 0 = 98th percentile of each frame",
        range=(0.0, 1e6),
    )
    overlay_alpha: float = _param(
        0.5,
        "weight of the class colours over the image in segmentation/color",
        range=(0.0, 1.0),
    )

    def __post_init__(self) -> None:
        if self.min_depth and self.max_depth and self.min_depth >= self.max_depth:
            raise ConfigError(
                f"parameter 'viz.min_depth' ({self.min_depth}) must be below 'viz.max_depth' "
                f"({self.max_depth})"
            )


@dataclass(frozen=True)
class NodeSettings:
    """Everything the ROS node reads; see ``parameter_specs(NodeSettings)`` for the names."""

    model: ModelSettings = _group(ModelSettings, "")
    input: InputSettings = _group(InputSettings, "")
    camera: CameraSettings = _group(CameraSettings, "")
    align: AlignConfig = _group(AlignConfig, "align.", read_only=False)
    cloud: CloudSettings = _group(CloudSettings, "cloud.")
    viz: VizSettings = _group(VizSettings, "viz.")
    refine_metric_scale: bool = _param(
        False,
        "for metric-depth models (dpt_hybrid_kitti/nyu): correct their scale with a scale-only "
        "LiDAR fit; otherwise their metres are used as they are",
    )
    diagnostics_period: float = _param(
        1.0, "seconds between /diagnostics messages", range=(0.05, 3600.0), read_only=True
    )
    autostart: bool = _param(
        True,
        "the node is a lifecycle (managed) node: true = configure and activate itself at "
        "start-up; false = wait unconfigured for a lifecycle manager (ros2 lifecycle set)",
        read_only=True,
    )

    def __post_init__(self) -> None:
        inp = self.input
        if bool(inp.lidar_translation) != bool(inp.lidar_rotation):
            raise ConfigError(
                "parameters 'lidar_translation' and 'lidar_rotation': set both or neither, got "
                f"{list(inp.lidar_translation)} and {list(inp.lidar_rotation)}"
            )
        if inp.lidar_rotation and not 1e-6 < float(np.linalg.norm(inp.lidar_rotation)) < 1e6:
            raise ConfigError(
                f"parameter 'lidar_rotation': quaternion {list(inp.lidar_rotation)} has no "
                "usable norm"
            )
        if inp.lidar_T_cam_lidar:
            from dpt_ros.geometry import as_transform

            try:
                as_transform(np.reshape(inp.lidar_T_cam_lidar, (4, 4)))
            except ValueError as error:
                raise ConfigError(f"parameter 'lidar_T_cam_lidar': {error}") from None

    def pipeline_config(self) -> PipelineConfig:
        """The pipeline's share of these settings (all of it changeable at run time)."""
        from dpt_ros.pipeline import PipelineConfig

        return PipelineConfig(
            align=self.align,
            refine_metric_scale=self.refine_metric_scale,
            cloud_stride=self.cloud.stride,
            cloud_organized=self.cloud.organized,
            image_type=self.camera.image_type,
            rectify=self.camera.rectify,
        )

    @property
    def lidar_transform_from_parameters(self) -> np.ndarray | None:
        """T_cam_lidar (4x4) from the parameters, or None when they are not set."""
        from dpt_ros.geometry import transform_from_quaternion

        inp = self.input
        if inp.lidar_T_cam_lidar:
            return np.reshape(np.asarray(inp.lidar_T_cam_lidar, dtype=np.float64), (4, 4))
        if inp.lidar_translation:
            return transform_from_quaternion(inp.lidar_translation, inp.lidar_rotation)
        return None


@dataclass(frozen=True)
class BagSettings:
    """Offline processing of recorded bags (``python -m dpt_ros.bag``).

    The node's parameters, under the same names (so a node parameter file such as
    ``config/kitti.yaml`` works as is), plus what only the bag tool has. Topics are chosen on
    the command line (``--image-topic`` ...), not here: they differ per bag.
    """

    node: NodeSettings = _group(NodeSettings, "")
    storage: str = _param(
        "mcap", "storage of the output bag (rosbag2)", choices=("mcap", "sqlite3"), read_only=True
    )
    png_format: str = _param(
        "mm",
        "16-bit depth PNG export: 'mm' = millimetres, 'kitti' = metres x 256 (KITTI's format)",
        choices=("mm", "kitti"),
        read_only=True,
    )
    batch_size: int = _param(
        4, "frames per inference batch (the engine's infer_batch)", range=(1, 64), read_only=True
    )


@dataclass(frozen=True)
class WebcamSettings:
    """The live demo (``python -m dpt_ros.webcam``) on a camera, a video, a stream or images."""

    model: ModelSettings = _group(ModelSettings, "")
    camera: CameraSettings = _group(CameraSettings, "")
    cloud: CloudSettings = _group(CloudSettings, "cloud.")
    viz: VizSettings = _group(VizSettings, "viz.")
    source: str = _param(
        "0",
        "camera index (0, 1, ...), video file, stream URL (rtsp://, http://, ...), folder of "
        "images or a glob pattern",
        check=lambda v: None if v.strip() else "must name a source",
    )
    width: int = _param(
        640, "requested camera width in pixels; 0 = the driver's default", range=(0, 16384)
    )
    height: int = _param(
        480, "requested camera height in pixels; 0 = the driver's default", range=(0, 16384)
    )
    fps: float = _param(
        30.0, "requested camera frame rate; 0 = the driver's default", range=(0.0, 1000.0)
    )
    realtime: bool = _param(
        False,
        "files and folders: drop frames like a live camera, paced at the file's rate, instead "
        "of processing every frame",
    )
    horizontal_fov: float = _param(
        70.0,
        "horizontal field of view in degrees of the pinhole camera assumed when no "
        "camera_info_file is given (webcams are uncalibrated)",
        range=(1.0, 179.0),
    )
    camera_info_file: str = _param(
        "",
        "intrinsics: a camera_calibration YAML (ost.yaml) or a sensor_msgs/CameraInfo YAML; "
        "'' = a pinhole camera from horizontal_fov",
    )
    frame_id: str = _param(
        "camera_optical_frame", "frame_id of the images and camera info published with --publish"
    )
    snapshot_dir: str = _param("snapshots", "folder for the snapshots ('s' key, --snapshot-every)")


# ============================================================================ parameter specs
@dataclass(frozen=True)
class ParamSpec:
    """One parameter: flat dotted ``name``, ``kind`` (one of KINDS), default and constraints."""

    name: str
    kind: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple | None = None
    read_only: bool = False
    check: Callable[[Any], str | None] | None = field(default=None, compare=False, repr=False)
    path: tuple[str, ...] = ()  # attribute path inside the settings object
    # Words that stand for a value (net_size: 'auto' = 0); not part of equality.
    aliases: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def coerce(self, value: Any) -> Any:
        """The value in this parameter's type, or ConfigError naming the parameter."""
        if self.aliases and isinstance(value, str) and value in self.aliases:
            value = self.aliases[value]
        value = self._typed(value)
        if self.choices is not None and value not in self.choices:
            self._fail(f"must be one of {list(self.choices)}, got {value!r}")
        if self.range is not None:
            lo, hi = self.range
            items = value if self.kind == "float_list" else (value,)
            for item in items:
                if not lo <= item <= hi:
                    self._fail(f"must be in [{lo}, {hi}], got {item!r}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                self._fail(problem)
        return value

    def _typed(self, value: Any) -> Any:
        if isinstance(value, np.generic):
            value = value.item()
        if self.kind == "bool":
            if not isinstance(value, bool):
                self._fail(f"must be true or false, got {value!r}")
            return value
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                self._fail(f"must be an integer, got {value!r}")
            return int(value)
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self._fail(f"must be a number, got {value!r}")
            if not math.isfinite(value):
                self._fail(f"must be finite, got {value!r}")
            return float(value)
        if self.kind == "str":
            if not isinstance(value, str):
                self._fail(f"must be a string, got {value!r}")
            return value
        # float_list
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            self._fail(f"must be a list of numbers, got {value!r}")
        items = []
        for item in value:
            if isinstance(item, np.generic):
                item = item.item()
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                self._fail(f"must be a list of numbers, got item {item!r}")
            if not math.isfinite(item):
                self._fail(f"must hold finite numbers, got {item!r}")
            items.append(float(item))
        return tuple(items)

    def _fail(self, reason: str) -> typing.NoReturn:
        raise ConfigError(f"parameter {self.name!r}: {reason}")

    @property
    def constraint_text(self) -> str:
        """Human-readable range/choices, for descriptors and docs."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        if self.range is not None:
            parts.append(f"in [{self.range[0]}, {self.range[1]}]")
        return "; ".join(parts)


def _kind_of(annotation: Any) -> str:
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is str:
        return "str"
    if typing.get_origin(annotation) is tuple and typing.get_args(annotation) == (float, ...):
        return "float_list"
    raise TypeError(f"settings field type {annotation!r} has no parameter kind")


def _walk(cls: type, prefix: str, path: tuple[str, ...], read_only: bool | None):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if "group" in f.metadata:
            group_ro = f.metadata["read_only"]
            yield from _walk(
                hints[f.name],
                prefix + f.metadata["group"],
                path + (f.name,),
                read_only if group_ro is None else group_ro,
            )
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = _kind_of(hints[f.name])
        if kind == "float" and isinstance(default, int):
            default = float(default)
        ro = f.metadata.get("read_only", False) if read_only is None else read_only
        yield ParamSpec(
            name=prefix + f.name,
            kind=kind,
            default=default,
            description=f.metadata.get("description", ""),
            range=f.metadata.get("range"),
            choices=f.metadata.get("choices"),
            read_only=ro,
            check=f.metadata.get("check"),
            path=path + (f.name,),
            aliases=f.metadata.get("aliases"),
        )


@cache
def parameter_specs(settings_cls: type = NodeSettings) -> tuple[ParamSpec, ...]:
    """Every parameter of a settings class, in declaration order, with flat dotted names."""
    specs = tuple(_walk(settings_cls, "", (), None))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TypeError(f"{settings_cls.__name__} has duplicate parameter names {duplicates}")
    return specs


@cache
def spec_by_name(settings_cls: type = NodeSettings) -> dict[str, ParamSpec]:
    return {spec.name: spec for spec in parameter_specs(settings_cls)}


# ============================================================================ values <-> settings
def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(f"setting names must be strings, got {key!r}")
        name = prefix + key
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def settings_to_parameters(settings: Any) -> dict[str, Any]:
    """Flat ``{parameter name: value}`` of a settings object (lists as tuples)."""
    out = {}
    for spec in parameter_specs(type(settings)):
        value = settings
        for attr in spec.path:
            value = getattr(value, attr)
        out[spec.name] = value
    return out


def _build(cls: type, flat: Mapping[str, Any], path: tuple[str, ...] = ()) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if "group" in f.metadata:
            kwargs[f.name] = _build(hints[f.name], flat, path + (f.name,))
        elif path + (f.name,) in flat:
            kwargs[f.name] = flat[path + (f.name,)]
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        # AlignConfig's own checks name the field as "align.<name>" already.
        raise ConfigError(f"invalid settings: {error}") from None


def settings_from_mapping(
    values: Mapping[str, Any], settings_cls: type[S] = NodeSettings, base: S | None = None
) -> S:
    """Settings from a (nested or flat dotted) mapping; missing names keep ``base``'s values
    (or the defaults). Unknown names and bad values raise ConfigError."""
    specs = spec_by_name(settings_cls)
    flat = _flatten(values)
    unknown = sorted(set(flat) - set(specs))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, list(specs), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown parameter(s) {', '.join(hints)} for {settings_cls.__name__}")
    current = settings_to_parameters(base) if base is not None else {}
    by_path: dict[tuple[str, ...], Any] = {}
    for name, spec in specs.items():
        if name in flat:
            by_path[spec.path] = spec.coerce(flat[name])
        elif name in current:
            by_path[spec.path] = current[name]
    return _build(settings_cls, by_path)


def update_settings(settings: S, changes: Mapping[str, Any]) -> S:
    """``settings`` with ``changes`` (flat parameter names) applied and validated as a whole."""
    return settings_from_mapping(changes, type(settings), base=settings)


def _node_matches(key: str, node_name: str) -> bool:
    if key in ("/**", "**"):
        return True
    key = key.strip("/")
    if not key:
        return False
    # "ns/depth_node", "/**/depth_node" and "depth_node" all address a node called depth_node.
    return key.split("/")[-1] == node_name


def yaml_problem(error: yaml.YAMLError) -> str:
    """A PyYAML error on one line: the problem and where (PyYAML's own text spans several
    lines with a quoted excerpt)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def read_parameters_file(path: str | Path, node_name: str = "depth_node") -> dict[str, Any]:
    """Flat parameter values from a YAML file.

    ROS params-file format (``<node>: {ros__parameters: {...}}``; ``/**`` and namespaced node
    keys allowed, later sections override earlier ones) or a plain mapping of settings.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read settings file {path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(
            f"settings file {path} is not valid YAML: {yaml_problem(error)}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"settings file {path} must hold a mapping, got {type(data).__name__}")
    sections = {k: v for k, v in data.items() if isinstance(v, Mapping) and "ros__parameters" in v}
    if not sections:
        return _flatten(data)
    if len(sections) != len(data):
        stray = sorted(set(data) - set(sections))
        raise ConfigError(
            f"settings file {path} mixes ROS params-file sections with plain settings {stray}"
        )
    flat: dict[str, Any] = {}
    matched = False
    for key, section in sections.items():
        if _node_matches(str(key), node_name):
            matched = True
            params = section["ros__parameters"]
            if not isinstance(params, Mapping):
                raise ConfigError(f"{path}: '{key}: ros__parameters' must be a mapping")
            flat.update(_flatten(params))
    if not matched:
        raise ConfigError(
            f"settings file {path} has no section for node {node_name!r} (sections: "
            f"{sorted(sections)})"
        )
    return flat


def load_settings(
    path: str | Path,
    settings_cls: type[S] = NodeSettings,
    node_name: str = "depth_node",
    overrides: Mapping[str, Any] | None = None,
) -> S:
    """Settings from a YAML file (see ``read_parameters_file``) plus ``overrides``.

    ROS-only parameters that every node has (``use_sim_time``) are accepted and ignored.
    """
    flat = read_parameters_file(path, node_name)
    flat.update(overrides or {})
    for name in ROS_BUILTIN_PARAMETERS:
        flat.pop(name, None)
    try:
        return settings_from_mapping(flat, settings_cls)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


# rclpy declares these on every node; YAML files and launch files may set them.
ROS_BUILTIN_PARAMETERS = ("use_sim_time",)


def parse_parameter_text(name: str, text: str, settings_cls: type = NodeSettings) -> Any:
    """A parameter value from its command-line / launch-argument text (YAML syntax: ``true``,
    ``384``, ``0.5``, ``[1.0, 2.0]``); strings stay strings. Validated against the spec."""
    specs = spec_by_name(settings_cls)
    if name not in specs:
        raise ConfigError(f"unknown parameter {name!r}; known: {sorted(specs)}")
    spec = specs[name]
    if spec.kind == "str":
        return spec.coerce(text)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"parameter {name!r}: cannot parse {text!r}") from None
    return spec.coerce(value)


def describe_parameters(settings_cls: type = NodeSettings) -> Iterable[str]:
    """One Markdown table row per parameter (name, default, changeable, description)."""
    for spec in parameter_specs(settings_cls):
        default = list(spec.default) if spec.kind == "float_list" else spec.default
        extra = f" ({spec.constraint_text})" if spec.constraint_text else ""
        mode = "start-up" if spec.read_only else "run time"
        text = f"{spec.description}{extra}".replace("|", "\\|")  # keep the table's columns
        yield f"| `{spec.name}` | `{default!r}` | {mode} | {text} |"
