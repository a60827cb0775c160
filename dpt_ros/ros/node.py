"""The ROS 2 node: camera (+ LiDAR) in; metric depth, point clouds and segmentation out.

Threading: image callbacks only store the raw message in a single slot that always holds the
newest unprocessed frame (a newer frame replaces it and counts as a drop), so a flood costs one
pointer swap per frame and latency stays bounded whatever the input rate; camera infos and LiDAR
scans are converted into short stamp-indexed buffers. One supervised worker thread takes the
newest frame, checks its size against the limits, decodes it, matches camera info and LiDAR to
it by stamp, runs the pipeline for the outputs somebody subscribes to and publishes them with
the input image's header. No exception from a message ends the node: each is counted and logged
(throttled per reason) and the latest reasons go to /diagnostics.

Outputs (relative names, from dpt_ros.topics): depth/image (32FC1 metres, REP 117: NaN no
estimate, +Inf beyond range, -Inf too close; only while a metric scale is known),
depth/camera_info, depth/color, depth_relative/image (32FC1 relative inverse depth) with
depth_relative/camera_info, points (x, y, z, packed rgb), segmentation/image (mono8: ADE20K class
index + 1, 0 = "other", the authors' convention; see dpt_ros.viz.ADE20K_CLASSES),
segmentation/color with segmentation/camera_info, and /diagnostics. Inputs: image (or
image/compressed), camera_info and, with use_lidar, lidar/points. Every publisher and
subscription accepts rclpy's ``qos_overrides.<topic>.<publisher|subscription>.<policy>``
parameters (history, depth, reliability, durability).

A lifecycle (managed) node: configure loads the model(s), activate creates the topics and
starts the worker, deactivate stops both, cleanup frees the model(s); ``autostart`` (default
true) does configure + activate at start-up. Each output's camera_info is the pipeline's camera
of that output's grid (``Result.camera``: binning, ROI, rectification and resizing applied).

Run: ``python -m dpt_ros.ros.node --ros-args -p model:=dpt_hybrid -p weights:=random``
(the same ``main`` as the ``depth_node`` console script and ``ros2 run dpt_ros depth_node``).
"""

from __future__ import annotations

import bisect
import gc
import math
import re
import signal
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from lifecycle_msgs.msg import State
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSPolicyKind,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from dpt_ros.capture import LatestSlot
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
from dpt_ros.messages import ImageLimitError
from dpt_ros.pipeline import Frame, Pipeline, Result
from dpt_ros.ros.convert import (
    CameraInfoConversionError,
    ImageConversionError,
    PointCloudConversionError,
    camera_info_to_camera,
    camera_to_camera_info,
    compressed_to_rgb,
    copy_header,
    depth_to_image,
    image_to_rgb,
    mono8_to_image,
    pointcloud2_to_xyz,
    rgb_to_image,
    stamp_to_ns,
    xyzrgb_to_pointcloud2,
)
from dpt_ros.ros.tf import LidarTransformSource, TransformUnavailable, tf_message_type
from dpt_ros.topics import (
    CAMERA_INFO,
    DEPTH,
    DEPTH_COLOR,
    DEPTH_INFO,
    DEPTH_RELATIVE,
    DEPTH_RELATIVE_INFO,
    DEPTH_TOPICS,
    IMAGE,
    IMAGE_COMPRESSED,
    INPUT_TOPICS,
    LABEL_TOPICS,
    LIDAR_POINTS,
    OUTPUT_TOPICS,
    POINTS,
    SEGMENTATION,
    SEGMENTATION_COLOR,
    SEGMENTATION_INFO,
    TF,
    TF_STATIC,
)
from dpt_ros.viz import depth_picture, segmentation_picture

NODE_NAME = "depth_node"
WARN_PERIOD_S = 5.0  # per reason: one kind of problem never hides another
CAMERA_INFO_BUFFER = 30
RECENT_REASONS = 5  # latest distinct problems shown in /diagnostics
SUPERVISE_PERIOD_S = 0.5
MAX_PUBLISHERS_TRACKED = 64  # image publishers whose sequence numbers are followed
TF_QUEUE_DEPTH = 100  # tf2's TransformListener queue depth
# The QoS policies users may override per topic (rclpy's qos_overrides.* parameters).
QOS_OVERRIDES = (
    QoSPolicyKind.HISTORY,
    QoSPolicyKind.DEPTH,
    QoSPolicyKind.RELIABILITY,
    QoSPolicyKind.DURABILITY,
)

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

__all__ = ["INPUT_TOPICS", "OUTPUT_TOPICS", "DepthNode", "LatestSlot", "StampedBuffer", "main"]
_CAMERA_INFO_TOPICS = {DEPTH_INFO, DEPTH_RELATIVE_INFO, SEGMENTATION_INFO}
# The primary states with a shutdown transition (lifecycle design: all but finalized).
_SHUTDOWN_FROM = (
    State.PRIMARY_STATE_UNCONFIGURED,
    State.PRIMARY_STATE_INACTIVE,
    State.PRIMARY_STATE_ACTIVE,
)


# ============================================================================ hand-over
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
    msg: Any  # the raw Image or CompressedImage: decoded by the worker, only if taken
    received: float  # time.perf_counter() at the callback


@dataclass
class _Scan:
    frame_id: str
    points: np.ndarray  # (N, 3) float32, finite


@dataclass
class _CameraEntry:
    camera: CameraModel


@dataclass
class _Stats:
    """Counters and per-period latency sums; guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    images_in: int = 0
    dropped: int = 0  # replaced in the newest-frame slot before the worker took them
    dropped_reader_queue: int = 0  # lost before the callback: publisher sequence-number gaps
    last_sequence: dict[bytes, int] = field(default_factory=dict)  # publisher gid -> number
    processed: int = 0
    idle: int = 0  # frames taken but not computed: nobody subscribed to any output
    errors: int = 0
    refused_image: int = 0  # beyond max_image_pixels / max_aspect_ratio
    callback_errors: int = 0  # unexpected exceptions in callbacks (counted, never raised)
    worker_restarts: int = 0
    worker_death: str = ""  # why the worker thread ended, for the supervisor
    unhealthy: str = ""  # set by a failed frame or a dead worker, cleared by a served frame
    malformed: dict[str, int] = field(
        default_factory=lambda: {"image": 0, "camera_info": 0, "points": 0, "tf": 0}
    )
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUT_TOPICS, 0))
    segmentation_runs: int = 0
    latency_sums: dict[str, float] = field(default_factory=dict)
    latency_count: int = 0
    # the latest period's mean latencies, kept through periods without frames
    latency: dict[str, float] = field(default_factory=dict)
    last: Result | None = None
    last_error: str = ""
    last_lidar_problem: str = ""
    last_camera_problem: str = ""
    mark_time: float = field(default_factory=time.monotonic)
    mark_in: int = 0
    mark_out: int = 0
    mark_lost: int = 0


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


def _floats(param: Parameter) -> list[float]:
    return [float(v) for v in param.value or ()]


_NUMBERS = re.compile(r"\d+(\.\d+)?")


def _reason_of(error: BaseException) -> str:
    """The kind of a problem, for per-reason throttling: its text with numbers blanked
    ("Image step 6 is smaller than ..." and "Image step 9 ..." are one reason)."""
    text = str(error).split("\n", 1)[0]
    return f"{type(error).__name__}: {_NUMBERS.sub('N', text)[:120]}"


# ============================================================================ the node
class DepthNode(LifecycleNode):
    """A managed node (ROS 2 lifecycle, design article "Managed nodes"): the constructor
    declares and checks the parameters and starts /diagnostics; ``configure`` loads the models
    and runs one warm-up frame, ``activate`` creates the subscriptions and publishers and
    starts the worker thread, ``deactivate`` stops the worker and removes them, ``cleanup``
    frees the models (and the CUDA cache), ``shutdown`` does what is needed from any state.
    ``autostart`` (a parameter, read by ``main``) configures and activates at start-up.

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
        self._reasons: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._warn_lock = threading.Lock()
        self._running = False
        self._models = (depth_model, segmentation_model)
        self._engine: Any = None
        self._pipeline: Pipeline | None = None
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._image_topic = ""
        self._worker: threading.Thread | None = None
        self._slot = LatestSlot()
        # Why the last transition failed, in one line (main's "cannot start" when autostarting).
        self.transition_failure = ""
        self._settings = self._declare_parameters()
        settings = self._settings
        self._transforms: LidarTransformSource | None = None
        if settings.input.use_lidar:
            self._transforms = self._make_transform_source(settings)
        self._camera_infos = StampedBuffer(CAMERA_INFO_BUFFER)
        self._scans = StampedBuffer(settings.input.lidar_buffer_size)
        self.add_pre_set_parameters_callback(self._typed_changes)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # /diagnostics in every state: it says which state the node is in.
        self._diagnostics_pub = self.create_publisher(
            DiagnosticArray,
            "/diagnostics",
            10,
            qos_overriding_options=QoSOverridingOptions(QOS_OVERRIDES),
        )
        self._diagnostics_timer = self.create_timer(
            settings.diagnostics_period,
            self._publish_diagnostics,
            callback_group=MutuallyExclusiveCallbackGroup(),
        )
        self._supervisor = self.create_timer(
            SUPERVISE_PERIOD_S, self._supervise, callback_group=MutuallyExclusiveCallbackGroup()
        )

    @property
    def autostart(self) -> bool:
        return self._settings.autostart

    @property
    def lifecycle_state(self) -> str:
        """The current lifecycle state's label: unconfigured, inactive, active, finalized, ..."""
        return str(self._state_machine.current_state[1])

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model(s) and run one warm-up frame; a failure leaves the node unconfigured
        with one ERROR line (none when autostarting: ``main`` reports it as "cannot start")."""
        settings = self._settings
        log = self.get_logger()
        log.info(
            f"loading model {settings.model.model!r} (weights "
            f"{settings.model.weights or 'default'!r}) on {settings.model.device}"
        )
        try:
            # The engine import pulls in torch: only once the settings are known to be good.
            from dpt_ros.engine import Engine

            depth_model, segmentation_model = self._models
            engine = Engine(
                settings.model.engine_config(),
                depth_model=depth_model,
                segmentation_model=segmentation_model,
            )
            # One frame of the output size (VGA when unset): lazy allocations, kernel choices
            # and the first-call costs are paid here, not by the first camera frame.
            model = settings.model
            engine.warmup(model.output_width or 640, model.output_height or 480, frames=1)
        except Exception as error:  # noqa: BLE001 (any load failure: one line, stay alive)
            clear = isinstance(error, (ConfigError, RuntimeError, ValueError, OSError, ImportError))
            detail = "" if clear else "\n" + traceback.format_exc()
            self.transition_failure = f"{_first_line(error) if clear else error}{detail}"
            if not self.autostart:
                log.error(f"configure failed, still unconfigured: {self.transition_failure}")
            self._release_models()
            return TransitionCallbackReturn.FAILURE
        self._engine = engine
        self._pipeline = Pipeline(engine, settings.pipeline_config())
        log.info(f"configured: {engine.depth_semantics} depth on {settings.model.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Create the subscriptions and publishers and start the worker."""
        try:
            self._create_topics(self._settings)
            self._check_qos_overrides()
        except (ConfigError, ValueError) as error:
            self.transition_failure = _first_line(error)
            if not self.autostart:
                self.get_logger().error(f"activate failed: {self.transition_failure}")
            self._destroy_topics()
            return TransitionCallbackReturn.FAILURE
        self._slot = LatestSlot()
        self._running = True
        self._start_worker()
        self.get_logger().info(
            f"ready: {self._engine.depth_semantics} depth on {self._settings.model.device}"
            + (f", LiDAR transform from {self._transforms.describe}" if self._transforms else "")
        )
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the worker (the frame in progress publishes nothing) and remove the topics."""
        self._stop_worker()
        self._destroy_topics()
        self.get_logger().info("deactivated: no subscriptions, no outputs")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model(s) and, on CUDA, the memory torch's allocator keeps cached."""
        self._release_models()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From unconfigured, inactive or active: stop, remove the topics, free the models."""
        self._stop_worker()
        self._destroy_topics()
        self._release_models()
        self.get_logger().info(f"finalized (from {state.label})")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: drop everything and go back to unconfigured."""
        self._stop_worker()
        self._destroy_topics()
        self._release_models()
        self.get_logger().error(f"error in a transition from {state.label}: back to unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self, timeout: float = 30.0) -> None:
        self._running = False
        self._slot.close()
        worker = self._worker
        if worker is not None and worker.is_alive() and threading.current_thread() is not worker:
            worker.join(timeout=timeout)

    def _release_models(self) -> None:
        engine, self._engine, self._pipeline = self._engine, None, None
        with self._stats.lock:
            self._stats.last = None  # holds arrays of the model's outputs
        if engine is None:
            return
        engine.close()
        del engine
        gc.collect()  # modules in reference cycles would otherwise outlive the cleanup
        if self._settings.model.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

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
        if source.fallback is not None and tf_message_type() is None:
            # No tf2_ros, and not even the message type to read /tf with ourselves.
            if source.mode == "tf":
                raise ConfigError(
                    "parameter 'lidar_transform_source' is 'tf' but neither tf2_ros nor "
                    "tf2_msgs can be imported (rclpy from PyPI has neither), so /tf cannot be "
                    "read: set lidar_T_cam_lidar, or lidar_translation and lidar_rotation, "
                    "with lidar_transform_source 'parameters'"
                )
            source.fallback = None
        if source.mode == "parameters" and not source.has_matrix and source.fallback is None:
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

        def qos(reliable: str, depth: int) -> QoSProfile:
            # A fresh profile per entity: rclpy writes the qos_overrides.* values into it.
            return QoSProfile(
                reliability=reliability[reliable],
                history=HistoryPolicy.KEEP_LAST,
                depth=depth,
                durability=DurabilityPolicy.VOLATILE,
            )

        def subscribe(msg_type: type, topic: str, callback: Any) -> Any:
            subscription = self.create_subscription(
                msg_type,
                topic,
                callback,
                qos(inp.input_reliability, inp.input_depth),
                callback_group=MutuallyExclusiveCallbackGroup(),
                qos_overriding_options=QoSOverridingOptions(QOS_OVERRIDES),
            )
            self._subs.append(subscription)
            return subscription

        if inp.image_transport == "compressed":
            image = subscribe(CompressedImage, IMAGE_COMPRESSED, self._on_image)
        else:
            image = subscribe(Image, IMAGE, self._on_image)
        # Resolved (namespace, remaps): what image_type 'auto' reads the image's kind from.
        self._image_topic = image.topic_name
        subscribe(CameraInfo, CAMERA_INFO, self._on_camera_info)
        if inp.use_lidar:
            subscribe(PointCloud2, LIDAR_POINTS, self._on_points)
        if self._transforms is not None and self._transforms.fallback is not None:
            self._subscribe_tf()
        types = dict.fromkeys(_CAMERA_INFO_TOPICS, CameraInfo) | {POINTS: PointCloud2}
        self._pubs = {
            topic: self.create_publisher(
                types.get(topic, Image),
                topic,
                qos(inp.output_reliability, 1),
                qos_overriding_options=QoSOverridingOptions(QOS_OVERRIDES),
            )
            for topic in OUTPUT_TOPICS
        }

    def _subscribe_tf(self) -> None:
        """Without tf2_ros: /tf and /tf_static into the transform source's own buffer, with
        tf2's TransformListener QoS (/tf volatile; /tf_static transient-local and reliable, so
        transforms latched before activation arrive). Absolute names, as tf2 uses."""
        message = tf_message_type()
        for topic, durability, static in (
            (TF, DurabilityPolicy.VOLATILE, False),
            (TF_STATIC, DurabilityPolicy.TRANSIENT_LOCAL, True),
        ):
            qos = QoSProfile(
                reliability=ReliabilityPolicy.RELIABLE,
                history=HistoryPolicy.KEEP_LAST,
                depth=TF_QUEUE_DEPTH,
                durability=durability,
            )
            self._subs.append(
                self.create_subscription(
                    message,
                    topic,
                    lambda msg, static=static: self._on_tf(msg, static),
                    qos,
                    callback_group=MutuallyExclusiveCallbackGroup(),
                )
            )

    def _destroy_topics(self) -> None:
        pubs, self._pubs = self._pubs, {}
        subs, self._subs = self._subs, []
        for subscription in subs:
            self.destroy_subscription(subscription)
        for publisher in pubs.values():
            self.destroy_publisher(publisher)

    def _check_qos_overrides(self) -> None:
        """A qos_overrides.* value for no topic of this node is a typo: refuse it by name."""
        overrides = getattr(self, "_parameter_overrides", {})
        stray = sorted(
            name
            for name in overrides
            if name.startswith(_FOREIGN_PREFIXES) and not self.has_parameter(name)
        )
        if stray:
            names = self.get_parameters_by_prefix("qos_overrides")
            declared = sorted({name.rsplit(".", 1)[0] for name in names})
            raise ConfigError(
                f"QoS override(s) {stray} match no publisher or subscription of this node; "
                f"it has: {', '.join(declared)} (names are the resolved topic names)"
            )

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Image | CompressedImage, info: Any) -> None:
        """Store the raw message only: decoding waits for the worker to take this frame.

        Two parameters without defaults: rclpy passes the MessageInfo (publisher gid and
        sequence number) only to a callback that cannot be called with the message alone."""
        try:
            lost = self._sequence_gap(info)
            dropped = self._slot.put(_Incoming(msg, time.perf_counter()))
            with self._stats.lock:
                self._stats.images_in += 1
                self._stats.dropped += int(dropped)
                self._stats.dropped_reader_queue += lost
        except Exception as error:  # noqa: BLE001 (no message may end the node)
            self._callback_failed("image", error)

    def _sequence_gap(self, info: Any) -> int:
        """Messages of this publisher that never reached the callback (DDS reader queue or
        transport), from the gap in its publication sequence numbers; 0 when unknown."""
        if not info:
            return 0
        number = info.get("publication_sequence_number")
        gid = info.get("publisher_gid") or {}
        if not number:
            return 0
        key = bytes(gid.get("data", b""))
        with self._stats.lock:
            seen = self._stats.last_sequence
            previous = seen.get(key)
            if previous is None and len(seen) >= MAX_PUBLISHERS_TRACKED:
                seen.clear()  # publishers that came and went: forget them, stay bounded
            seen[key] = number
        if previous is None or number <= previous:
            return 0  # first message of this publisher, or it restarted
        return number - previous - 1

    def _image_limits(self) -> dict[str, Any]:
        inp = self._settings.input
        return {"max_pixels": inp.max_image_pixels, "max_aspect_ratio": inp.max_aspect_ratio}

    def _decode(self, msg: Any) -> np.ndarray:
        """The worker's conversion of a taken frame, size limits first (nothing allocated
        before them: raw images by their fields, compressed ones by their header)."""
        if isinstance(msg, CompressedImage):
            return compressed_to_rgb(msg, **self._image_limits())
        return image_to_rgb(msg, **self._image_limits())

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = camera_info_to_camera(msg)
            self._camera_infos.add(stamp_to_ns(msg.header.stamp), _CameraEntry(camera))
        except CameraInfoConversionError as error:
            self._malformed("camera_info", error)
        except Exception as error:  # noqa: BLE001 (no message may end the node)
            self._callback_failed("camera_info", error)

    def _on_points(self, msg: PointCloud2) -> None:
        try:
            points = pointcloud2_to_xyz(msg)
            self._scans.add(stamp_to_ns(msg.header.stamp), _Scan(str(msg.header.frame_id), points))
        except PointCloudConversionError as error:
            self._malformed("points", error)
        except Exception as error:  # noqa: BLE001 (no message may end the node)
            self._callback_failed("points", error)

    def _on_tf(self, msg: Any, static: bool) -> None:
        try:
            self._transforms.add_tf_message(msg, static=static)
        except (ValueError, AttributeError, TypeError) as error:
            self._malformed("tf", error)  # an empty frame id, a zero quaternion, ...
        except Exception as error:  # noqa: BLE001 (no message may end the node)
            self._callback_failed("tf", error)

    # ------------------------------------------------------------------ reporting
    def _report(self, reason: str, text: str, severity: str = "warning") -> None:
        """Remember ``text`` as the latest of ``reason`` (for /diagnostics) and log it at most
        once per WARN_PERIOD_S per reason. Never raises.

        rclpy fixes a call site's severity at its first use and raises when one call site
        logs at another; each severity therefore has its own call site below.
        """
        now = time.monotonic()
        with self._warn_lock:
            count = self._reasons.pop(reason, (0, ""))[0] + 1
            self._reasons[reason] = (count, text.split("\n", 1)[0])
            while len(self._reasons) > 4 * RECENT_REASONS:
                self._reasons.popitem(last=False)
            if now - self._warned.get(reason, -math.inf) < WARN_PERIOD_S:
                return
            self._warned[reason] = now
        try:
            logger = self.get_logger()
            if severity == "error":
                logger.error(text)
            elif severity == "info":
                logger.info(text)
            else:
                logger.warning(text)
        except Exception:  # noqa: BLE001, S110 (a failing log line must not end the caller)
            pass

    def _malformed(self, kind: str, error: Exception) -> None:
        refused = isinstance(error, ImageLimitError)
        with self._stats.lock:
            if refused:
                self._stats.refused_image += 1
            else:
                self._stats.malformed[kind] += 1
        what = "refusing an image" if refused else f"skipping a malformed {kind} message"
        self._report(f"{kind}: {_reason_of(error)}", f"{what}: {error}")

    def _callback_failed(self, kind: str, error: Exception) -> None:
        with self._stats.lock:
            self._stats.callback_errors += 1
            self._stats.malformed[kind] += 1
        text = f"skipping a {kind} message that failed: {type(error).__name__}: {error}"
        self._report(f"{kind}: {_reason_of(error)}", text)

    def _typed_changes(self, params: list[Parameter]) -> list[Parameter]:
        """Run-time values in the declared type, as at start-up (``_typed_override``): an
        integer (array) for a float (list) parameter, or an empty list (``ros2 param set x []``
        sends a typed empty array), would otherwise fail rclpy's type check."""
        known = spec_by_name(NodeSettings)
        out = []
        for param in params:
            kind = (known[param.name].kind if param.name in known else None, param.type_)
            empty_list = kind[0] == "float_list" and not _as_python(param.value)
            if kind == ("float_list", Parameter.Type.INTEGER_ARRAY) or empty_list:
                param = Parameter(param.name, Parameter.Type.DOUBLE_ARRAY, _floats(param))
            elif kind == ("float", Parameter.Type.INTEGER):
                param = Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
            out.append(param)
        return out

    # ------------------------------------------------------------------ run-time parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {}
        known = spec_by_name(NodeSettings)
        for param in params:
            spec = known.get(param.name)
            if spec is None:
                if param.name in _FOREIGN_NAMES or param.name.startswith(_FOREIGN_PREFIXES):
                    continue  # use_sim_time and friends: rclpy's business
                return SetParametersResult(
                    successful=False, reason=f"unknown parameter {param.name!r}"
                )
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
                if matrix is None and self._transforms.fallback is None:  # no /tf to fall on
                    raise ConfigError(
                        "parameters 'lidar_T_cam_lidar' / 'lidar_translation' + "
                        "'lidar_rotation': the LiDAR transform comes from them, they cannot "
                        "all be cleared while use_lidar is true"
                    )
                self._transforms.set_matrix(matrix)
            if self._pipeline is not None:  # else configure builds it from the new settings
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
    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, name="dpt_worker", daemon=True)
        self._worker.start()

    def _work(self) -> None:
        try:
            while self._running:
                item = self._slot.take(timeout=0.5)
                if item is not None:
                    self._handle(item)
        except BaseException as error:  # noqa: BLE001 (recorded for the supervisor)
            with self._stats.lock:
                self._stats.worker_death = f"{type(error).__name__}: {error}"

    def _handle(self, item: _Incoming) -> None:
        """One taken frame: decode it (limits first), run and publish; every failure counted."""
        try:
            rgb = self._decode(item.msg)
        except ImageConversionError as error:
            self._malformed("image", error)
            return
        except Exception as error:  # noqa: BLE001 (a decoder surprise is the message's fault)
            self._callback_failed("image", error)
            return
        try:
            self._process(item, rgb)
        except Exception as error:  # one bad frame must not end the node
            if not self._running:
                return  # shutting down: the frame in progress is abandoned, not an error
            problem = f"{type(error).__name__}: {error}"
            with self._stats.lock:
                self._stats.errors += 1
                self._stats.last_error = problem
                self._stats.unhealthy = f"frames are failing: {problem}"
            self._report(
                f"frame failed: {_reason_of(error)}",
                f"frame failed: {problem}\n{traceback.format_exc()}",
                "error",
            )
        else:
            with self._stats.lock:
                self._stats.unhealthy = ""

    def _supervise(self) -> None:
        """Restart a worker thread that ended (a plug-in may raise anything, even SystemExit);
        until a frame is served again, /diagnostics says ERROR."""
        if not self._running or self._worker is None or self._worker.is_alive():
            return
        with self._stats.lock:
            death = self._stats.worker_death or "it ended without an exception"
            self._stats.worker_death = ""
            self._stats.worker_restarts += 1
            self._stats.unhealthy = f"the worker thread died ({death}) and was restarted"
        self._report("worker died", f"the worker thread died ({death}); restarting it", "error")
        self._start_worker()

    @property
    def frames_processed(self) -> int:
        with self._stats.lock:
            return self._stats.processed

    def _subscribed(self, topic: str) -> bool:
        publisher = self._pubs.get(topic)  # none while inactive
        return publisher is not None and publisher.get_subscription_count() > 0

    def _process(self, item: _Incoming, rgb: np.ndarray) -> None:
        taken = time.perf_counter()
        settings = self._settings
        header = copy_header(item.msg.header)
        stamp = stamp_to_ns(header.stamp)
        want_labels = self._engine.segmentation_model is not None and any(
            self._subscribed(t) for t in LABEL_TOPICS
        )
        want_depth = any(self._subscribed(t) for t in DEPTH_TOPICS)
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
            rgb=rgb,
            stamp_ns=stamp,
            frame_id=str(header.frame_id),
            camera=camera_entry.camera if camera_entry else None,
            image_topic=self._image_topic,
            **frame_kwargs,
        )
        result = self._pipeline.process(
            frame, want_depth=want_depth, want_labels=want_labels, want_points=want_points
        )
        for note in result.notes:
            self._report(note.split(":")[0], note)
        t_publish = time.perf_counter()
        self._publish(rgb, header, result, settings)
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
        self._report("camera_info", problem)
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
            self._report("lidar", f"{problem}: no LiDAR fit for this frame")
        return out

    # ------------------------------------------------------------------ outputs
    def _publish(
        self,
        rgb: np.ndarray,
        header: Any,
        result: Result,
        settings: NodeSettings,
    ) -> None:
        sent: list[str] = []
        # The image on the outputs' grid (rectified when the input was rectified).
        grid_rgb = rgb if result.rgb is None else result.rgb

        def send(topic: str, make: Any) -> None:
            # Not once stopping: the context may be going away under the worker.
            if self._running and self._subscribed(topic):
                self._pubs[topic].publish(make())
                sent.append(topic)

        def info(topic: str) -> None:
            # The pipeline's camera of the outputs' grid (binning, ROI, rectification and
            # resizing applied; P and its Tx kept), so each image's camera_info is exact.
            if result.camera is not None:
                send(topic, lambda: camera_to_camera_info(result.camera, header))

        if result.relative is not None:
            relative = np.ascontiguousarray(result.relative, dtype=np.float32)
            send(DEPTH_RELATIVE, lambda: depth_to_image(relative, header))
            if result.metric is not None:
                metric = np.ascontiguousarray(result.metric, dtype=np.float32)
                send(DEPTH, lambda: depth_to_image(metric, header))
            info(DEPTH_RELATIVE_INFO)
            info(DEPTH_INFO)
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
                lambda: rgb_to_image(self._label_picture(grid_rgb, labels, settings), header),
            )
            info(SEGMENTATION_INFO)
        with self._stats.lock:
            for topic in sent:
                self._stats.published[topic] += 1

    @staticmethod
    def _depth_picture(result: Result, settings: NodeSettings) -> np.ndarray:
        viz = settings.viz
        return depth_picture(
            result.metric,
            result.relative,
            colormap=viz.colormap,
            min_depth=viz.min_depth,
            max_depth=viz.max_depth,
        )

    @staticmethod
    def _label_picture(rgb: np.ndarray, labels: np.ndarray, settings: NodeSettings) -> np.ndarray:
        return segmentation_picture(rgb, labels, settings.viz.overlay_alpha)

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        settings, engine, state = self._settings, self._engine, self.lifecycle_state
        now = time.monotonic()
        with self._stats.lock:
            s = self._stats
            period = max(now - s.mark_time, 1e-9)
            rate_in = (s.images_in - s.mark_in) / period
            rate_out = (s.processed - s.mark_out) / period
            rate_lost = (s.dropped_reader_queue - s.mark_lost) / period
            s.mark_time, s.mark_in, s.mark_out = now, s.images_in, s.processed
            s.mark_lost = s.dropped_reader_queue
            if s.latency_count:
                s.latency = {k: v / s.latency_count for k, v in s.latency_sums.items()}
                s.latency_sums, s.latency_count = {}, 0
            latency = s.latency
            counters = {
                "images_in": s.images_in,
                "frames_processed": s.processed,
                "frames_dropped": s.dropped,
                "dropped.slot": s.dropped,
                "dropped.reader_queue": s.dropped_reader_queue,
                "frames_idle": s.idle,
                "frame_errors": s.errors,
                "refused.image_limits": s.refused_image,
                "callback_errors": s.callback_errors,
                "worker_restarts": s.worker_restarts,
                "segmentation_runs": s.segmentation_runs,
                **{f"malformed.{k}": v for k, v in s.malformed.items()},
                **{f"published.{k}": v for k, v in s.published.items()},
            }
            last, last_error, unhealthy = s.last, s.last_error, s.unhealthy
            problems = [p for p in (s.last_camera_problem, s.last_lidar_problem) if p]
        with self._warn_lock:
            recent = list(self._reasons.values())[-RECENT_REASONS:][::-1]
        values = {
            "rate_in_hz": f"{rate_in:.3f}",
            "rate_sent_hz": f"{rate_in + rate_lost:.3f}",
            "rate_out_hz": f"{rate_out:.3f}",
            **{k: str(v) for k, v in counters.items()},
            **{f"latency.{k}": f"{v:.2f}" for k, v in sorted(latency.items())},
            "model": settings.model.model,
            "weights": settings.model.weights or "default",
            "device": settings.model.device,
            "lidar": "off" if self._transforms is None else self._transforms.describe,
            "lifecycle_state": state,
            "model_loaded": str(engine is not None).lower(),
        }
        if engine is not None:
            values["precision"] = ",".join(f"{k}:{v}" for k, v in engine.precisions.items())
            values["depth_semantics"] = engine.depth_semantics
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
        for i, (count, text) in enumerate(recent, 1):
            values[f"reason.{i}"] = f"[{count}x] {text[:300]}"
        level, message = DiagnosticStatus.OK, "running" if state == "active" else state
        if problems:
            level, message = DiagnosticStatus.WARN, "; ".join(problems)
        if (
            last is not None
            and settings.input.use_lidar
            and last.fit_status in ("empty", "expired")
        ):
            level, message = DiagnosticStatus.WARN, f"no metric scale: {last.fit_reason}"
        if unhealthy:  # whatever the input: a failing frame or worker stays ERROR until served
            level, message = DiagnosticStatus.ERROR, unhealthy
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
        """Shut down (lifecycle ``shutdown``) while the context is still valid: the frame in
        progress finishes its computation but publishes nothing more, the models are freed."""
        if self._state_machine.current_state[0] in _SHUTDOWN_FROM:
            self.trigger_shutdown()


_SOURCE_LOCATION = re.compile(r",? at /\S+:\d+")


def _first_line(error: BaseException) -> str:
    """The first line of an error without rcl's C source locations (", at /x/y.c:271")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return _SOURCE_LOCATION.sub("", lines[0]) if lines else type(error).__name__


def _params_file_problem(argv: list[str]) -> str | None:
    """Why a ``--params-file`` of the command line cannot be read, in our words (rcl's own
    parser reports a missing file as "Error opening YAML file")."""
    for flag, path in zip(argv, argv[1:], strict=False):
        if flag != "--params-file":
            continue
        file = Path(path)
        if not file.exists():
            return f"--params-file {path}: no such file"
        if not file.is_file():
            return f"--params-file {path}: not a regular file"
        try:
            with file.open("rb"):
                pass
        except OSError as error:
            return f"--params-file {path}: cannot be read ({error.strerror})"
    return None


def _stray_arguments_problem(argv: list[str]) -> str | None:
    """Arguments outside ``--ros-args``: rclpy ignores them silently, so a ``--params-file``
    before ``--ros-args`` would drop the user's parameters without a word."""
    try:  # rcl parses the ROS arguments (params files too) to remove them
        stray = rclpy.utilities.remove_ros_args(argv)[1:]
    except Exception:  # noqa: BLE001 (a bad --ros-args: rclpy.init says why, in one line)
        return None
    if not stray:
        return None
    return (
        f"unexpected argument(s) {' '.join(stray)!r}: the node takes ROS arguments only, after "
        "--ros-args (--ros-args --params-file FILE -p NAME:=VALUE)"
    )


def _autostart(node: DepthNode) -> bool:
    """configure, then activate, as a lifecycle manager would; False when either fails."""
    for transition in (node.trigger_configure, node.trigger_activate):
        if transition() != TransitionCallbackReturn.SUCCESS:
            node.transition_failure = node.transition_failure or "a transition failed"
            return False
    return True


def main(args: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code (non-zero on start-up failure).

    With ``autostart`` (the default) the node configures and activates itself and a failure
    of either ends the process; without it the node waits, unconfigured, for a lifecycle
    manager (``ros2 lifecycle set``, launch_ros' LifecycleNode, nav2's lifecycle_manager). A
    finalized node stays up, doing nothing, until the process is stopped.

    SIGINT and SIGTERM stop the worker before the ROS context goes (rclpy's own handlers
    would shut the context down under a worker that is still publishing): exit 0 with one
    INFO line.
    """
    logger = rclpy.logging.get_logger(NODE_NAME)
    argv = list(sys.argv if args is None else args)
    problem = _params_file_problem(argv) or _stray_arguments_problem(argv)
    if problem is not None:
        logger.fatal(f"cannot start: {problem}")
        return 1
    # rcl logs its own "Failed to parse global arguments" before raising: one line is ours.
    rcl_level = rclpy.logging.get_logger_effective_level("rcl")
    rclpy.logging.set_logger_level("rcl", rclpy.logging.LoggingSeverity.FATAL)
    try:
        # Our handlers below, not rclpy's: the context must outlive the worker.
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as error:  # noqa: BLE001 (bad --ros-args, --params-file: one line)
        logger.fatal(f"cannot start: {_first_line(error)}")
        return 1
    finally:
        rclpy.logging.set_logger_level("rcl", rcl_level)
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            node = DepthNode()
        except Exception as error:  # start-up failures end the process with their own message
            clear = isinstance(error, (ConfigError, RuntimeError, ValueError, OSError, ImportError))
            detail = "" if clear else "\n" + traceback.format_exc()
            logger.fatal(f"cannot start: {_first_line(error) if clear else error}{detail}")
            rclpy.try_shutdown()
            return 1
        if node.autostart and not _autostart(node):
            logger.fatal(f"cannot start: {node.transition_failure}")
            node.destroy_node()
            rclpy.try_shutdown()
            return 1
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        try:
            while not stop.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except (KeyboardInterrupt, ExternalShutdownException):
            received.append("KeyboardInterrupt")
        finally:
            node.close()
            cause = received[0] if received else "shutdown"
            logger.info(f"stopped ({cause}): {node.frames_processed} frames processed")
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
