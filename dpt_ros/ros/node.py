"""The ROS 2 node: camera (+ LiDAR) in; metric depth, point clouds and segmentation out.

Threading: subscription callbacks only convert a message to numpy and hand it over. Images go
into a single slot that always holds the newest unprocessed frame (a newer frame replaces it and
counts as a drop), so latency stays bounded whatever the input rate; camera infos and LiDAR
scans go into short stamp-indexed buffers. One worker thread takes the newest frame, matches
camera info and LiDAR to it by stamp, runs the pipeline for the outputs somebody subscribes to
and publishes them with the input image's header.

Outputs (relative names): depth (32FC1 metres, NaN unknown, only while a metric scale is known),
depth_relative (32FC1 relative inverse depth), depth/camera_info, points (x, y, z, packed rgb),
segmentation (mono8: ADE20K class index + 1, 0 = "other", the authors' convention; see
dpt_ros.viz.ADE20K_CLASSES), segmentation/color, depth/color and /diagnostics. Inputs: image
(or image/compressed), camera_info and, with use_lidar, lidar/points.

Run: ``python -m dpt_ros.ros.node --ros-args -p model:=dpt_hybrid -p weights:=random``
(the same ``main`` as the ``depth_node`` console script and ``ros2 run dpt_ros depth_node``).
"""

from __future__ import annotations

import bisect
import math
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dpt_ros.config import (
    ROS_BUILTIN_PARAMETERS,
    ConfigError,
    NodeSettings,
    ParamSpec,
    parameter_specs,
    settings_from_mapping,
    spec_by_name,
    update_settings,
)
from dpt_ros.geometry import CameraModel
from dpt_ros.pipeline import Frame, Pipeline, Result
from dpt_ros.ros.convert import (
    CameraInfoConversionError,
    ImageConversionError,
    PointCloudConversionError,
    camera_info_to_camera,
    compressed_to_rgb,
    copy_header,
    depth_to_image,
    image_to_rgb,
    mono8_to_image,
    pointcloud2_to_xyz,
    rgb_to_image,
    scale_camera_info,
    stamp_to_ns,
    xyzrgb_to_pointcloud2,
)
from dpt_ros.ros.tf import LidarTransformSource, TransformUnavailable
from dpt_ros.viz import colorize_depth, colorize_inverse_depth, overlay

NODE_NAME = "depth_node"
WARN_PERIOD_S = 5.0
CAMERA_INFO_BUFFER = 30

_ROS_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "int": ParameterType.PARAMETER_INTEGER,
    "float": ParameterType.PARAMETER_DOUBLE,
    "str": ParameterType.PARAMETER_STRING,
    "float_list": ParameterType.PARAMETER_DOUBLE_ARRAY,
}
_PARAMETER_TYPES = {
    "bool": Parameter.Type.BOOL,
    "int": Parameter.Type.INTEGER,
    "float": Parameter.Type.DOUBLE,
    "str": Parameter.Type.STRING,
    "float_list": Parameter.Type.DOUBLE_ARRAY,
}
# Parameters rclpy or the middleware handle themselves; overrides of them are not typos.
_FOREIGN_PREFIXES = ("qos_overrides.",)
_FOREIGN_NAMES = (*ROS_BUILTIN_PARAMETERS, "start_type_description_service")

# Topic names (relative, so namespaces and remaps apply).
DEPTH, DEPTH_RELATIVE, DEPTH_INFO = "depth", "depth_relative", "depth/camera_info"
POINTS, SEGMENTATION, SEGMENTATION_COLOR, DEPTH_COLOR = (
    "points",
    "segmentation",
    "segmentation/color",
    "depth/color",
)
OUTPUT_TOPICS = (
    DEPTH,
    DEPTH_RELATIVE,
    DEPTH_INFO,
    POINTS,
    SEGMENTATION,
    SEGMENTATION_COLOR,
    DEPTH_COLOR,
)
# The LiDAR input; not "points", which is the output cloud (a remap would catch both).
LIDAR_POINTS = "lidar/points"
INPUT_TOPICS = ("image", "image/compressed", "camera_info", LIDAR_POINTS)
_DEPTH_TOPICS = (DEPTH, DEPTH_RELATIVE, DEPTH_INFO, DEPTH_COLOR, POINTS)
_LABEL_TOPICS = (SEGMENTATION, SEGMENTATION_COLOR)


# ============================================================================ hand-over
class LatestSlot:
    """A one-item mailbox: ``put`` replaces what is there (and says so), ``take`` waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False

    def put(self, item: Any) -> bool:
        """Store ``item``; True when it replaced an item nobody had taken (a drop)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The newest item, or None on timeout or after ``close``."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class StampedBuffer:
    """The last ``maxlen`` (stamp_ns, value) pairs, searchable by stamp; thread-safe."""

    def __init__(self, maxlen: int) -> None:
        self._items: deque[tuple[int, Any]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, value: Any) -> None:
        with self._lock:
            if self._items and stamp_ns < self._items[-1][0]:
                # A bag restarted or sim time was reset: older entries no longer apply.
                self._items.clear()
            self._items.append((stamp_ns, value))

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> tuple[int, Any] | None:
        """The entry closest in time to ``stamp_ns`` if within ``tolerance_ns``, else None."""
        with self._lock:
            items = list(self._items)
        if not items:
            return None
        stamps = [s for s, _ in items]
        i = bisect.bisect_left(stamps, stamp_ns)
        best = min(
            (j for j in (i - 1, i) if 0 <= j < len(items)),
            key=lambda j: abs(stamps[j] - stamp_ns),
        )
        if abs(stamps[best] - stamp_ns) > tolerance_ns:
            return None
        return items[best]

    def latest_stamp(self) -> int | None:
        with self._lock:
            return self._items[-1][0] if self._items else None


@dataclass
class _Incoming:
    header: Any  # the input image's std_msgs/Header
    rgb: np.ndarray  # may be a view over the message buffer (kept alive through the view)
    received: float  # time.perf_counter() at the callback


@dataclass
class _Scan:
    frame_id: str
    points: np.ndarray  # (N, 3) float32, finite


@dataclass
class _CameraEntry:
    camera: CameraModel
    msg: CameraInfo


@dataclass
class _Stats:
    """Counters and per-period latency sums; guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    images_in: int = 0
    dropped: int = 0
    processed: int = 0
    idle: int = 0  # frames taken but not computed: nobody subscribed to any output
    errors: int = 0
    malformed: dict[str, int] = field(
        default_factory=lambda: {"image": 0, "camera_info": 0, "points": 0}
    )
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUT_TOPICS, 0))
    segmentation_runs: int = 0
    latency_sums: dict[str, float] = field(default_factory=dict)
    latency_count: int = 0
    last: Result | None = None
    last_error: str = ""
    last_lidar_problem: str = ""
    last_camera_problem: str = ""
    mark_time: float = field(default_factory=time.monotonic)
    mark_in: int = 0
    mark_out: int = 0


# ============================================================================ parameters
def parameter_descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The rcl_interfaces descriptor of one spec: type, description, range, read_only."""
    constraints = spec.constraint_text
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=_ROS_TYPES[spec.kind],
        description=spec.description,
        additional_constraints=constraints,
        read_only=spec.read_only,
    )
    if spec.range is not None and spec.kind == "float":
        lo, hi = spec.range
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
        ]
    elif spec.range is not None and spec.kind == "int":
        lo, hi = spec.range
        descriptor.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    return descriptor


def _as_python(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return list(value)
    return value


# ============================================================================ the node
class DepthNode(Node):
    """Declares the parameters, loads the models, wires topics and runs the worker thread.

    ``depth_model`` / ``segmentation_model`` (torch modules) override the configured names; the
    command line reaches the same through ``model:=package.module:callable``.
    """

    def __init__(
        self,
        node_name: str = NODE_NAME,
        *,
        depth_model: Any = None,
        segmentation_model: Any = None,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(node_name, **node_kwargs)
        self._stats = _Stats()
        self._warned: dict[str, float] = {}
        self._warn_lock = threading.Lock()
        self._settings = self._declare_parameters()
        settings = self._settings
        log = self.get_logger()
        self._transforms: LidarTransformSource | None = None
        if settings.input.use_lidar:
            self._transforms = self._make_transform_source(settings)

        # The engine import pulls in torch: only once the settings are known to be good.
        from dpt_ros.engine import Engine

        log.info(
            f"loading model {settings.model.model!r} (weights "
            f"{settings.model.weights or 'default'!r}) on {settings.model.device}"
        )
        self._engine = Engine(
            settings.model.engine_config(),
            depth_model=depth_model,
            segmentation_model=segmentation_model,
        )
        self._pipeline = Pipeline(self._engine, settings.pipeline_config())

        self._slot = LatestSlot()
        self._camera_infos = StampedBuffer(CAMERA_INFO_BUFFER)
        self._scans = StampedBuffer(settings.input.lidar_buffer_size)
        self._create_topics(settings)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(
            settings.diagnostics_period,
            self._publish_diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self._running = True
        self._worker = threading.Thread(target=self._work, name="dpt_worker", daemon=True)
        self._worker.start()
        log.info(
            f"ready: {self._engine.depth_semantics} depth on {settings.model.device}"
            + (f", LiDAR transform from {self._transforms.describe}" if self._transforms else "")
        )

    # ------------------------------------------------------------------ set-up
    def _declare_parameters(self) -> NodeSettings:
        specs = parameter_specs(NodeSettings)
        known = spec_by_name(NodeSettings)
        # rclpy keeps command-line and params-file values here until a parameter is declared.
        overrides = getattr(self, "_parameter_overrides", {})
        unknown = sorted(
            name
            for name in overrides
            if name not in known
            and name not in _FOREIGN_NAMES
            and not name.startswith(_FOREIGN_PREFIXES)
        )
        if unknown:
            # Fails the same way a YAML file with this name would (with a did-you-mean).
            settings_from_mapping(dict.fromkeys(unknown, None))
        for spec in specs:
            value = None
            if spec.name in overrides:
                overrides[spec.name] = self._typed_override(spec, overrides[spec.name])
                value = overrides[spec.name].value
            descriptor = parameter_descriptor(spec)
            if spec.kind == "float_list":
                # An empty list has no ROS type of its own (rclpy reads [] as a byte array):
                # declare by type, then set the list, typed, unless a non-empty override is in.
                if value is not None and not value:
                    del overrides[spec.name]
                param = self.declare_parameter(spec.name, Parameter.Type.DOUBLE_ARRAY, descriptor)
                if param.value is None:
                    initial = list(spec.default) if value is None else value
                    self.set_parameters(
                        [Parameter(spec.name, Parameter.Type.DOUBLE_ARRAY, initial)]
                    )
            else:
                self.declare_parameter(spec.name, spec.default, descriptor)
        values = {spec.name: _as_python(self.get_parameter(spec.name).value) for spec in specs}
        return settings_from_mapping(values)

    def _typed_override(self, spec: ParamSpec, override: Parameter) -> Parameter:
        """The override in the spec's ROS type: ``-p gate:=1`` or YAML ``[0, 0, 1]`` are
        integers to rcl, and a float parameter would reject them with a bare type error."""
        value = override.value
        if spec.kind == "float_list" and value is None:
            value = []  # rcl reads an empty YAML list as "not set"
        try:
            value = spec.coerce(_as_python(value))
        except ConfigError as error:
            raise ConfigError(f"{error} (from the command line or parameters file)") from None
        if spec.kind == "float_list":
            value = list(value)
        return Parameter(spec.name, _PARAMETER_TYPES[spec.kind], value)

    def _make_transform_source(self, settings: NodeSettings) -> LidarTransformSource:
        try:
            source = LidarTransformSource(
                settings.input.lidar_transform_source,
                settings.lidar_transform_from_parameters,
                node=self,
            )
        except ValueError as error:
            raise ConfigError(f"parameter 'lidar_transform_source': {error}") from None
        if source.mode == "parameters" and not source.has_matrix:
            raise ConfigError(
                "use_lidar is true but there is no camera<-LiDAR transform: tf2_ros is not "
                "importable (or lidar_transform_source is 'parameters') and neither "
                "lidar_T_cam_lidar nor lidar_translation + lidar_rotation is set"
            )
        return source

    def _create_topics(self, settings: NodeSettings) -> None:
        inp = settings.input
        reliability = {
            "best_effort": ReliabilityPolicy.BEST_EFFORT,
            "reliable": ReliabilityPolicy.RELIABLE,
        }
        input_qos = QoSProfile(
            reliability=reliability[inp.input_reliability],
            history=HistoryPolicy.KEEP_LAST,
            depth=inp.input_depth,
            durability=DurabilityPolicy.VOLATILE,
        )
        output_qos = QoSProfile(
            reliability=reliability[inp.output_reliability],
            history=HistoryPolicy.KEEP_LAST,
            depth=1,
            durability=DurabilityPolicy.VOLATILE,
        )
        if inp.image_transport == "compressed":
            self.create_subscription(
                CompressedImage,
                "image/compressed",
                self._on_compressed,
                input_qos,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        else:
            self.create_subscription(
                Image,
                "image",
                self._on_image,
                input_qos,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        self.create_subscription(
            CameraInfo,
            "camera_info",
            self._on_camera_info,
            input_qos,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        if inp.use_lidar:
            self.create_subscription(
                PointCloud2,
                LIDAR_POINTS,
                self._on_points,
                input_qos,
                callback_group=MutuallyExclusiveCallbackGroup(),
            )
        types = {DEPTH_INFO: CameraInfo, POINTS: PointCloud2}
        self._pubs = {
            topic: self.create_publisher(types.get(topic, Image), topic, output_qos)
            for topic in OUTPUT_TOPICS
        }

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except ImageConversionError as error:
            self._malformed("image", error)
            return
        self._hand_over(msg.header, rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        try:
            rgb = compressed_to_rgb(msg)
        except ImageConversionError as error:
            self._malformed("image", error)
            return
        self._hand_over(msg.header, rgb)

    def _hand_over(self, header: Any, rgb: np.ndarray) -> None:
        dropped = self._slot.put(_Incoming(header, rgb, time.perf_counter()))
        with self._stats.lock:
            self._stats.images_in += 1
            self._stats.dropped += int(dropped)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = camera_info_to_camera(msg)
        except CameraInfoConversionError as error:
            self._malformed("camera_info", error)
            return
        self._camera_infos.add(stamp_to_ns(msg.header.stamp), _CameraEntry(camera, msg))

    def _on_points(self, msg: PointCloud2) -> None:
        try:
            points = pointcloud2_to_xyz(msg)
        except PointCloudConversionError as error:
            self._malformed("points", error)
            return
        self._scans.add(stamp_to_ns(msg.header.stamp), _Scan(str(msg.header.frame_id), points))

    def _warn(self, key: str, text: str, error: bool = False) -> None:
        """Log at most once per WARN_PERIOD_S per ``key`` (rclpy throttles per call site, which
        would let one kind of problem hide another)."""
        now = time.monotonic()
        with self._warn_lock:
            if now - self._warned.get(key, -math.inf) < WARN_PERIOD_S:
                return
            self._warned[key] = now
        (self.get_logger().error if error else self.get_logger().warning)(text)

    def _malformed(self, kind: str, error: Exception) -> None:
        with self._stats.lock:
            self._stats.malformed[kind] += 1
        self._warn(f"malformed {kind}", f"skipping a malformed {kind} message: {error}")

    # ------------------------------------------------------------------ run-time parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {}
        known = spec_by_name(NodeSettings)
        for param in params:
            spec = known.get(param.name)
            if spec is None:
                continue  # use_sim_time and friends: rclpy's business
            if spec.read_only:
                return SetParametersResult(
                    successful=False, reason=f"parameter {param.name!r} is read-only"
                )
            value = _as_python(param.value)
            if spec.kind == "float_list" and value is None:
                value = []
            changes[param.name] = value
        if not changes:
            return SetParametersResult(successful=True)
        try:
            settings = update_settings(self._settings, changes)
            if self._transforms is not None and self._transforms.mode == "parameters":
                matrix = settings.lidar_transform_from_parameters
                if matrix is None:
                    raise ConfigError(
                        "parameters 'lidar_T_cam_lidar' / 'lidar_translation' + "
                        "'lidar_rotation': the LiDAR transform comes from them, they cannot "
                        "all be cleared while use_lidar is true"
                    )
                self._transforms.set_matrix(matrix)
            self._pipeline.update_config(
                {
                    "align": settings.align,
                    "refine_metric_scale": settings.refine_metric_scale,
                    "cloud_stride": settings.cloud.stride,
                    "cloud_organized": settings.cloud.organized,
                }
            )
        except (ConfigError, ValueError) as error:
            return SetParametersResult(successful=False, reason=str(error))
        self._settings = settings
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while self._running:
            item = self._slot.take(timeout=0.5)
            if item is None:
                continue
            try:
                self._process(item)
            except Exception as error:  # one bad frame must not end the node
                with self._stats.lock:
                    self._stats.errors += 1
                    self._stats.last_error = f"{type(error).__name__}: {error}"
                self._warn(
                    "frame failed",
                    f"frame failed: {type(error).__name__}: {error}\n{traceback.format_exc()}",
                    error=True,
                )

    def _subscribed(self, topic: str) -> bool:
        return self._pubs[topic].get_subscription_count() > 0

    def _process(self, item: _Incoming) -> None:
        taken = time.perf_counter()
        settings = self._settings
        header = copy_header(item.header)
        stamp = stamp_to_ns(header.stamp)
        want_labels = self._engine.segmentation_model is not None and any(
            self._subscribed(t) for t in _LABEL_TOPICS
        )
        want_depth = any(self._subscribed(t) for t in _DEPTH_TOPICS)
        if not (want_depth or want_labels):
            with self._stats.lock:
                self._stats.idle += 1
            return
        want_points = self._subscribed(POINTS)

        camera_entry = self._match_camera_info(stamp, settings)
        frame_kwargs: dict[str, Any] = {}
        if settings.input.use_lidar and want_depth and camera_entry is not None:
            frame_kwargs = self._match_lidar(stamp, header.frame_id, settings)
        frame = Frame(
            rgb=item.rgb,
            stamp_ns=stamp,
            frame_id=str(header.frame_id),
            camera=camera_entry.camera if camera_entry else None,
            **frame_kwargs,
        )
        result = self._pipeline.process(
            frame, want_depth=want_depth, want_labels=want_labels, want_points=want_points
        )
        for note in result.notes:
            self._warn(note.split(":")[0], note)
        t_publish = time.perf_counter()
        self._publish(item, header, result, camera_entry, settings)
        done = time.perf_counter()
        timings = {f"{k}_ms": float(v) for k, v in result.timings.items()}
        timings["queue_ms"] = (taken - item.received) * 1e3
        timings["publish_ms"] = (done - t_publish) * 1e3
        timings["receive_to_publish_ms"] = (done - item.received) * 1e3
        with self._stats.lock:
            stats = self._stats
            stats.processed += 1
            stats.segmentation_runs += int(result.labels is not None)
            stats.last = result
            stats.latency_count += 1
            for key, ms in timings.items():
                stats.latency_sums[key] = stats.latency_sums.get(key, 0.0) + ms

    def _match_camera_info(self, stamp: int, settings: NodeSettings) -> _CameraEntry | None:
        tolerance = settings.input.camera_info_tolerance
        match = self._camera_infos.nearest(stamp, int(tolerance * 1e9))
        if match is not None:
            with self._stats.lock:
                self._stats.last_camera_problem = ""
            return match[1]
        latest = self._camera_infos.latest_stamp()
        where = (
            "none received yet"
            if latest is None
            else f"the nearest is {abs(latest - stamp) * 1e-9:.3f} s away"
        )
        problem = (
            f"no camera_info within {tolerance} s of the image ({where}): no point cloud and "
            "no LiDAR fit for this frame"
        )
        with self._stats.lock:
            self._stats.last_camera_problem = problem
        self._warn("camera_info", problem)
        return None

    def _match_lidar(self, stamp: int, camera_frame: str, settings: NodeSettings) -> dict:
        tolerance = settings.input.lidar_stamp_tolerance
        match = self._scans.nearest(stamp, int(tolerance * 1e9))
        deadline = time.monotonic() + settings.input.lidar_wait
        while match is None and time.monotonic() < deadline and self._running:
            latest = self._scans.latest_stamp()
            if latest is not None and latest > stamp:
                break  # newer scans came and none matched: this image's scan is not coming
            time.sleep(0.005)
            match = self._scans.nearest(stamp, int(tolerance * 1e9))
        problem = ""
        out: dict[str, Any] = {}
        if match is None:
            latest = self._scans.latest_stamp()
            where = (
                "none received yet"
                if latest is None
                else f"the nearest is {abs(latest - stamp) * 1e-9:.3f} s away"
            )
            problem = f"no LiDAR scan within {tolerance} s of the image ({where})"
        else:
            scan_stamp, scan = match
            try:
                T = self._transforms.lookup(
                    camera_frame, scan.frame_id, stamp, settings.input.tf_timeout
                )
                out = {
                    "lidar_points": scan.points,
                    "lidar_frame_id": scan.frame_id,
                    "lidar_stamp_ns": scan_stamp,
                    "T_cam_lidar": T,
                }
            except TransformUnavailable as error:
                problem = str(error)
        with self._stats.lock:
            self._stats.last_lidar_problem = problem
        if problem:
            self._warn("lidar", f"{problem}: no LiDAR fit for this frame")
        return out

    # ------------------------------------------------------------------ outputs
    def _publish(
        self,
        item: _Incoming,
        header: Any,
        result: Result,
        camera_entry: _CameraEntry | None,
        settings: NodeSettings,
    ) -> None:
        sent: list[str] = []

        def send(topic: str, make: Any) -> None:
            if self._subscribed(topic):
                self._pubs[topic].publish(make())
                sent.append(topic)

        if result.relative is not None:
            relative = np.ascontiguousarray(result.relative, dtype=np.float32)
            height, width = relative.shape
            send(DEPTH_RELATIVE, lambda: depth_to_image(relative, header))
            if result.metric is not None:
                metric = np.ascontiguousarray(result.metric, dtype=np.float32)
                send(DEPTH, lambda: depth_to_image(metric, header))
            if camera_entry is not None:
                send(DEPTH_INFO, lambda: scale_camera_info(camera_entry.msg, width, height, header))
            if result.points is not None:
                send(
                    POINTS,
                    lambda: xyzrgb_to_pointcloud2(
                        result.points, result.colors, header, organized=settings.cloud.organized
                    ),
                )
            send(DEPTH_COLOR, lambda: rgb_to_image(self._depth_picture(result, settings), header))
        if result.labels is not None:
            labels = np.ascontiguousarray(result.labels, dtype=np.uint8)
            send(SEGMENTATION, lambda: mono8_to_image(labels, header))
            send(
                SEGMENTATION_COLOR,
                lambda: rgb_to_image(self._label_picture(item.rgb, labels, settings), header),
            )
        with self._stats.lock:
            for topic in sent:
                self._stats.published[topic] += 1

    @staticmethod
    def _depth_picture(result: Result, settings: NodeSettings) -> np.ndarray:
        viz = settings.viz
        if result.metric is not None:
            return colorize_depth(
                result.metric, viz.min_depth or None, viz.max_depth or None, colormap=viz.colormap
            )
        return colorize_inverse_depth(result.relative, colormap=viz.colormap)

    @staticmethod
    def _label_picture(rgb: np.ndarray, labels: np.ndarray, settings: NodeSettings) -> np.ndarray:
        height, width = labels.shape
        rgb = np.ascontiguousarray(rgb)
        if rgb.shape[:2] != (height, width):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        return overlay(rgb, labels, settings.viz.overlay_alpha)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        settings = self._settings
        now = time.monotonic()
        with self._stats.lock:
            s = self._stats
            period = max(now - s.mark_time, 1e-9)
            rate_in = (s.images_in - s.mark_in) / period
            rate_out = (s.processed - s.mark_out) / period
            s.mark_time, s.mark_in, s.mark_out = now, s.images_in, s.processed
            latency = {k: v / s.latency_count for k, v in s.latency_sums.items()}
            s.latency_sums, s.latency_count = {}, 0
            counters = {
                "images_in": s.images_in,
                "frames_processed": s.processed,
                "frames_dropped": s.dropped,
                "frames_idle": s.idle,
                "frame_errors": s.errors,
                "segmentation_runs": s.segmentation_runs,
                **{f"malformed.{k}": v for k, v in s.malformed.items()},
                **{f"published.{k}": v for k, v in s.published.items()},
            }
            last, last_error = s.last, s.last_error
            problems = [p for p in (s.last_camera_problem, s.last_lidar_problem) if p]
        values = {
            "rate_in_hz": f"{rate_in:.3f}",
            "rate_out_hz": f"{rate_out:.3f}",
            **{k: str(v) for k, v in counters.items()},
            **{f"latency.{k}": f"{v:.2f}" for k, v in sorted(latency.items())},
            "model": settings.model.model,
            "weights": settings.model.weights or "default",
            "device": settings.model.device,
            "precision": ",".join(f"{k}:{v}" for k, v in self._engine.precisions.items()),
            "depth_semantics": self._engine.depth_semantics,
            "lidar": "off" if self._transforms is None else self._transforms.describe,
        }
        if last is not None:
            values.update(
                {
                    "fit_status": last.fit_status,
                    "fit_reason": last.fit_reason,
                    "scale": "" if last.scale is None else f"{last.scale:.6g}",
                    "shift": "" if last.shift is None else f"{last.shift:.6g}",
                    "lidar_points_used": str(last.lidar_points_used),
                }
            )
        if last_error:
            values["last_error"] = last_error
        level, message = DiagnosticStatus.OK, "running"
        if problems:
            level, message = DiagnosticStatus.WARN, "; ".join(problems)
        if (
            last is not None
            and settings.input.use_lidar
            and last.fit_status in ("empty", "expired")
        ):
            level, message = DiagnosticStatus.WARN, f"no metric scale: {last.fit_reason}"
        if last_error and rate_out == 0 and rate_in > 0:
            level, message = DiagnosticStatus.ERROR, f"frames are failing: {last_error}"
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: depth",
            message=message,
            hardware_id=settings.model.device,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Stop the worker (the frame in progress finishes first)."""
        self._running = False
        self._slot.close()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=30.0)
        self._engine.close()


def main(args: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code (non-zero on start-up failure)."""
    rclpy.init(args=sys.argv if args is None else args)
    try:
        node = DepthNode()
    except Exception as error:  # start-up failures end the process with their own message
        logger = rclpy.logging.get_logger(NODE_NAME)
        clear = isinstance(error, (ConfigError, RuntimeError, ValueError, OSError, ImportError))
        detail = "" if clear else "\n" + traceback.format_exc()
        logger.fatal(f"cannot start: {error}{detail}")
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
