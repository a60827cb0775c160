"""Test utilities for the ROS integration tests: stand-in models, the node as a subprocess,
a test-side rclpy node that publishes inputs and collects outputs, and rosbags -> rclpy.

The stand-in models are loaded by the node through the same plug-in path users have
(``model:=tests.ros_helpers:gray_inverse_depth``), so the node under test builds its engine
exactly as in production. They decode what the test encoded into the image: the grey level is
an affine map of the scene's inverse depth, and the stand-in maps the normalised network input
back to it, so after the LiDAR fit the node's metric depth can be checked against the truth.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Inverse depth 1/NEAR_M maps to grey 255, 0 (infinitely far) to grey 0.
NEAR_M = 2.0


def jpeg_claiming(rgb: np.ndarray, width: int, height: int) -> bytes:
    """A small real JPEG of ``rgb`` whose SOF0 header claims ``width`` x ``height``: a few KB
    that would make a decoder allocate the claimed size."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", rgb)
    assert ok
    data = bytearray(encoded.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


# ============================================================================ stand-in models
def encode_inverse_depth(depth: np.ndarray, near: float = NEAR_M) -> np.ndarray:
    """HxW depth (metres, inf = sky) -> HxWx3 uint8 whose grey level is 255 * near / depth."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = np.where(np.isfinite(depth) & (depth > 0), near / depth, 0.0)
    grey = np.clip(np.rint(inverse * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


# A test holds the stand-in's forward, and with it the node's worker, with files: while
# $DPT_TEST_GATE/closed exists, forward() creates $DPT_TEST_GATE/entered and waits. Ordering by
# an event the test controls, instead of hoping that one stage outlasts another.
GATE_ENV = "DPT_TEST_GATE"


def wait_at_gate() -> None:
    gate = os.environ.get(GATE_ENV)
    if not gate:
        return
    closed = Path(gate) / "closed"
    if closed.exists():
        (Path(gate) / "entered").touch()
        while closed.exists():
            time.sleep(0.005)


def gray_inverse_depth() -> Any:
    """Plug-in: a torch module returning the input's grey level in [0, 1] (N, H, W).

    The engine normalises pixels as (v / 255 - 0.5) / 0.5, so (x + 1) / 2 is v / 255: an
    affine map of the encoded inverse depth, which is what a relative-depth network gives.
    Waits at the test's gate (`wait_at_gate`) when one is set up.
    """
    import torch

    class GrayInverseDepth(torch.nn.Module):
        output_semantics = "relative_inverse_depth"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            wait_at_gate()
            return (x.mean(dim=1) + 1.0) * 0.5

    return GrayInverseDepth()


# A test sees when the node loads and frees a model: every tracked stand-in touches
# $DPT_TEST_MODELS/loaded.<n> when made and released.<n> when garbage-collected.
MODELS_ENV = "DPT_TEST_MODELS"


def tracked_gray_inverse_depth() -> Any:
    """Plug-in: ``gray_inverse_depth`` whose creation and release are marked by files in
    $DPT_TEST_MODELS (``loaded.<n>``, ``released.<n>``; n counts the models made)."""
    import weakref

    module = gray_inverse_depth()
    folder = Path(os.environ[MODELS_ENV])
    n = len(list(folder.glob("loaded.*")))
    (folder / f"loaded.{n}").touch()
    weakref.finalize(module, (folder / f"released.{n}").touch)
    return module


def ground_rows() -> Any:
    """Plug-in for real street images: output = image row, 0 at the top, 1 at the bottom.

    For a flat road seen by a level camera, inverse depth is affine in the image row, so after
    the LiDAR fit this "network" gets the road right and everything standing on it wrong: a
    known, checkable answer on real data (the RANSAC inliers are the road).
    """
    import torch

    class GroundRows(torch.nn.Module):
        output_semantics = "relative_inverse_depth"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, _, height, width = x.shape
            rows = torch.linspace(0.0, 1.0, height, dtype=x.dtype, device=x.device)
            return rows.view(1, height, 1).expand(n, height, width).contiguous()

    return GroundRows()


def grey_level_segmentation() -> Any:
    """Plug-in segmentation: 3 classes by grey level (< 1/3, < 2/3, rest), as logits.

    Labels are argmax + 1, so a pixel of grey v gets label 1 + min(2, floor(3 v / 256)) up to
    the engine's resizing at class borders.
    """
    import torch

    class GreyLevelSegmentation(torch.nn.Module):
        output_semantics = "labels"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = (x.mean(dim=1, keepdim=True) + 1.0) * 0.5
            centres = torch.tensor([1.0 / 6.0, 0.5, 5.0 / 6.0], dtype=x.dtype, device=x.device)
            return -((v - centres.view(1, 3, 1, 1)) ** 2) * 100.0

    return GreyLevelSegmentation()


def expected_labels(grey: np.ndarray) -> np.ndarray:
    """Labels ``grey_level_segmentation`` gives to uint8 grey levels (away from borders)."""
    v = grey.astype(np.float64) / 255.0
    return (1 + np.argmin(np.abs(v[..., None] - np.array([1 / 6, 0.5, 5 / 6])), axis=-1)).astype(
        np.uint8
    )


# ============================================================================ environment
def ros_env(**extra: str) -> dict[str, str]:
    """Environment for a ROS subprocess: this process's (conftest set the private domain,
    LOCALHOST discovery and the Fast DDS profile) plus the repository on PYTHONPATH."""
    env = dict(os.environ)
    for name in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID"):
        if not env.get(name):
            raise RuntimeError(f"{name} must be set before starting ROS processes (conftest)")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def parameter_args(parameters: dict[str, Any]) -> list[str]:
    """``-p name:=value`` arguments (YAML syntax for values)."""
    args: list[str] = []
    for name, value in parameters.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple, np.ndarray)):
            text = "[" + ",".join(repr(float(v)) for v in np.ravel(value)) + "]"
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = str(value)
        args += ["-p", f"{name}:={text}"]
    return args


class NodeProcess:
    """``python -m dpt_ros.ros.node`` in a subprocess, its output captured in a file."""

    def __init__(
        self,
        parameters: dict[str, Any] | None = None,
        *,
        namespace: str = "",
        remaps: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        args = [sys.executable, "-m", "dpt_ros.ros.node", "--ros-args"]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        for source, target in (remaps or {}).items():
            args += ["-r", f"{source}:={target}"]
        # Parameter files first: rcl lets later sources override earlier ones.
        args += list(extra_args)
        args += parameter_args(parameters or {})
        self.args = args
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop())
            prefix="depth_node_", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            args,
            cwd=REPO,
            env=env or ros_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if not self.alive:
                return text in self.log()
            time.sleep(0.1)
        return False

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> int:
        if self.alive:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        Path(self._log.name).unlink(missing_ok=True)


# ============================================================================ test-side node
class TestPeer:
    """An rclpy node in the test process: publishes inputs, records outputs, sets parameters.

    Spins in a background thread; every recorded message is kept per topic in arrival order.
    """

    __test__ = False  # not a pytest class

    def __init__(self, name: str = "dpt_test_peer", namespace: str = "") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, namespace=namespace, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self.arrival: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        self._publishers: dict[str, Any] = {}
        self._subscriptions: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutdown races
                if not self.context.ok():
                    return
                raise

    # ---------------------------------------------------------------- publishing
    def publisher(self, msg_type: type, topic: str, reliable: bool = True) -> Any:
        key = f"{topic}:{msg_type.__name__}"
        if key not in self._publishers:
            from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

            qos = QoSProfile(
                history=HistoryPolicy.KEEP_LAST,
                depth=10,
                reliability=ReliabilityPolicy.RELIABLE
                if reliable
                else ReliabilityPolicy.BEST_EFFORT,
            )
            self._publishers[key] = self.node.create_publisher(msg_type, topic, qos)
        return self._publishers[key]

    def publish(self, topic: str, msg: Any, reliable: bool = True) -> None:
        self.publisher(type(msg), topic, reliable).publish(msg)

    # ---------------------------------------------------------------- recording
    def subscribe(self, msg_type: type, topic: str, depth: int = 100) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE
        )

        def record(msg: Any, topic: str = topic) -> None:
            with self._lock:
                self.received[topic].append(msg)
                self.arrival[topic].append(time.perf_counter())

        self._subscriptions[topic] = self.node.create_subscription(msg_type, topic, record, qos)

    def unsubscribe(self, topic: str) -> None:
        self.node.destroy_subscription(self._subscriptions.pop(topic))

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self.received[topic])

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self.arrival.clear()

    def by_stamp(self, topic: str, stamp_ns: int) -> Any | None:
        for msg in reversed(self.messages(topic)):
            if msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp_ns:
                return msg
        return None

    def wait_for(self, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Poll ``condition`` until it returns something truthy; returns it (or None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.02)
        return condition() or None

    def wait_for_subscribers(self, topics: Iterable[str], timeout: float = 30.0) -> bool:
        """Until every publisher on ``topics`` (created beforehand) sees a subscriber."""
        pubs = [p for key, p in self._publishers.items() if key.split(":")[0] in set(topics)]
        return bool(
            self.wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs), timeout)
        )

    def wait_for_publishers(self, topics: Iterable[str], timeout: float = 30.0) -> bool:
        topics = list(topics)
        return bool(
            self.wait_for(lambda: all(self.node.count_publishers(t) > 0 for t in topics), timeout)
        )

    # ---------------------------------------------------------------- parameters
    def set_parameters(self, node_name: str, values: dict[str, Any], timeout: float = 10.0):
        """SetParameters on ``node_name``; returns the list of SetParametersResult."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.node.create_client(SetParameters, f"{node_name}/set_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"no {node_name}/set_parameters service")
            request = SetParameters.Request()
            request.parameters = [
                Parameter(name, value=list(v) if isinstance(v, tuple) else v).to_parameter_msg()
                for name, v in values.items()
            ]
            future = client.call_async(request)
            if not self.wait_for(future.done, timeout):
                raise TimeoutError("set_parameters did not answer")
            return future.result().results
        finally:
            self.node.destroy_client(client)

    def get_parameters(self, node_name: str, names: list[str], timeout: float = 10.0) -> list:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        client = self.node.create_client(GetParameters, f"{node_name}/get_parameters")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"no {node_name}/get_parameters service")
            future = client.call_async(GetParameters.Request(names=names))
            if not self.wait_for(future.done, timeout):
                raise TimeoutError("get_parameters did not answer")
            return [parameter_value_to_python(v) for v in future.result().values]
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.context.try_shutdown()
        self._thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()


def diagnostics_values(msg: Any) -> dict[str, str]:
    """KeyValues of the depth node's status in a DiagnosticArray (empty if absent)."""
    for status in msg.status:
        if status.name.endswith(": depth"):
            return {kv.key: kv.value for kv in status.values}
    return {}


# ============================================================================ messages
def stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def image_msg(rgb: np.ndarray, stamp: int, frame_id: str, encoding: str = "rgb8") -> Any:
    from dpt_ros.ros.convert import make_header, rgb_to_image

    return rgb_to_image(np.ascontiguousarray(rgb), make_header(stamp, frame_id), encoding)


def camera_info_msg(camera: Any, stamp: int, frame_id: str) -> Any:
    from dpt_ros.ros.convert import camera_to_camera_info, make_header

    return camera_to_camera_info(camera, make_header(stamp, frame_id))


def cloud_msg(points: np.ndarray, stamp: int, frame_id: str) -> Any:
    from dpt_ros.ros.convert import make_header, xyzrgb_to_pointcloud2

    return xyzrgb_to_pointcloud2(np.asarray(points, np.float32), None, make_header(stamp, frame_id))


def image_array(msg: Any) -> np.ndarray:
    """A received Image as numpy: (H, W) for 32FC1/mono8, (H, W, 3) for rgb8."""
    dtype, channels = {"32FC1": (np.float32, 1), "mono8": (np.uint8, 1), "rgb8": (np.uint8, 3)}[
        msg.encoding
    ]
    itemsize = np.dtype(dtype).itemsize
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    rows = buf.reshape(msg.height, msg.step)[:, : msg.width * channels * itemsize]
    out = np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width, channels)
    return out[:, :, 0] if channels == 1 else out


# ============================================================================ rosbags -> rclpy
def to_rclpy(msg: Any, typename: str) -> Any:
    """A ``rosbags`` message (dataclass) as the rclpy message of ``typename``
    (``pkg/msg/Name``), field by field."""
    package, _, name = typename.split("/")
    cls = getattr(importlib.import_module(f"{package}.msg"), name)
    out = cls()
    for field, field_type in cls.get_fields_and_field_types().items():
        value = getattr(msg, field)
        setattr(out, field, _convert_field(value, field_type))
    return out


def _convert_field(value: Any, field_type: str) -> Any:
    base = field_type.split("<")[-1].rstrip(">").split("[")[0]
    is_sequence = field_type.startswith("sequence<") or "[" in field_type
    if "/" in base:  # nested message type, e.g. std_msgs/Header
        package, name = base.split("/")
        typename = f"{package}/msg/{name}"
        if is_sequence:
            return [to_rclpy(item, typename) for item in value]
        return to_rclpy(value, typename)
    if is_sequence:
        if isinstance(value, np.ndarray) and base in ("uint8", "octet", "byte"):
            return value.tobytes()
        return np.asarray(value) if isinstance(value, np.ndarray) else list(value)
    return value


def read_bag(path: Path) -> list[tuple[str, str, int, Any]]:
    """(topic, typename, log time ns, rosbags message) for every message, in time order."""
    from rosbags.highlevel import AnyReader

    out = []
    with AnyReader([Path(path)]) as reader:
        for connection, timestamp, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            out.append((connection.topic, connection.msgtype, timestamp, msg))
    return out
