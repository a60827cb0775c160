"""The depth node over real DDS: a node subprocess, a test peer in this process.

The node runs as ``python -m dpt_ros.ros.node`` with the stand-in models of ros_helpers loaded
through the ``module:callable`` plug-in path. The peer publishes a synthetic street scene
(640x480: above Fast DDS' default 512 KiB shared-memory segment, so the shipped profile is in
play), its camera info and a simulated LiDAR scan, and checks every output.
"""

from __future__ import annotations

import array
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402

from dpt_ros import topics  # noqa: E402
from dpt_ros.ros.convert import pointcloud2_to_structured, unpack_rgb  # noqa: E402
from dpt_ros.ros.tf import tf2_available  # noqa: E402
from dpt_ros.synthetic import make_scene  # noqa: E402
from tests import ros_helpers as h  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
STANDIN = "tests.ros_helpers:gray_inverse_depth"
STANDIN_SEGMENTATION = "tests.ros_helpers:grey_level_segmentation"
FRAME = "camera_optical"
LIDAR_FRAME = "lidar"
IMAGE_TOPICS = (
    topics.DEPTH,
    topics.DEPTH_RELATIVE,
    topics.SEGMENTATION,
    topics.SEGMENTATION_COLOR,
    topics.DEPTH_COLOR,
)
OUTPUTS = {
    **dict.fromkeys(IMAGE_TOPICS, Image),
    **dict.fromkeys(topics.CAMERA_INFO_TOPICS, CameraInfo),
    topics.POINTS: PointCloud2,
}
TIMEOUT = 60.0


class Harness:
    """The node under test, the peer and the scene, with a clock for unique stamps."""

    def __init__(self) -> None:
        self.scene = make_scene(640, 480, seed=2, layout="street")
        self.grey = h.encode_inverse_depth(self.scene.depth)
        self.params = {
            "model": STANDIN,
            "segmentation_model": STANDIN_SEGMENTATION,
            "device": "cpu",
            "threads": 1,
            "use_lidar": True,
            "lidar_transform_source": "parameters",
            "lidar_T_cam_lidar": self.scene.T_cam_lidar,
            "diagnostics_period": 0.3,
            # Deep enough that a flood reaches the node's own drop logic (test below).
            "input_depth": 50,
        }
        self.proc = h.NodeProcess(self.params)
        self.peer = h.TestPeer()
        for topic, msg_type in OUTPUTS.items():
            self.peer.subscribe(msg_type, topic)
        self.peer.subscribe(DiagnosticArray, "/diagnostics")
        for topic, msg_type in (
            ("image", Image),
            ("camera_info", CameraInfo),
            ("lidar/points", PointCloud2),
        ):
            self.peer.publisher(msg_type, topic)
        self._stamp = 1_700_000_000 * 10**9

    def next_stamp(self, step_s: float = 0.1) -> int:
        self._stamp += int(step_s * 1e9)
        return self._stamp

    def send(self, stamp: int, image: Image | None = None, info: bool = True, scan: bool = True):
        if scan:
            self.peer.publish("lidar/points", h.cloud_msg(self.scene.lidar_points, stamp, "lidar"))
        if info:
            self.peer.publish("camera_info", h.camera_info_msg(self.scene.camera, stamp, FRAME))
        if scan or info:
            # Let the scan and the camera info reach the node's buffers before the image.
            time.sleep(0.1)
        self.peer.publish("image", image or h.image_msg(self.grey, stamp, FRAME))

    def outputs(self, stamp: int, topics=tuple(OUTPUTS), timeout: float = TIMEOUT) -> dict:
        found = self.peer.wait_for(
            lambda: all(self.peer.by_stamp(t, stamp) for t in topics), timeout
        )
        assert found, (
            f"missing outputs for stamp {stamp}: "
            f"{[t for t in topics if not self.peer.by_stamp(t, stamp)]}\n{self.proc.log()[-3000:]}"
        )
        return {t: self.peer.by_stamp(t, stamp) for t in topics}

    def diagnostics(self, condition=lambda d: True, timeout: float = TIMEOUT) -> dict:
        def latest():
            msgs = self.peer.messages("/diagnostics")
            values = h.diagnostics_values(msgs[-1]) if msgs else {}
            return values if values and condition(values) else None

        values = self.peer.wait_for(latest, timeout)
        assert values, f"no matching diagnostics\n{self.proc.log()[-3000:]}"
        return values

    def close(self) -> None:
        self.peer.close()
        self.proc.__exit__()


@pytest.fixture(scope="module")
def harness():
    rig = Harness()
    try:
        assert rig.peer.wait_for_subscribers(["image", "camera_info", "lidar/points"], TIMEOUT), (
            rig.proc.log()
        )
        assert rig.peer.wait_for_publishers(list(OUTPUTS), TIMEOUT)
        yield rig
    finally:
        rig.close()


def _frame(rig: Harness) -> tuple[int, dict]:
    stamp = rig.next_stamp()
    rig.send(stamp)
    return stamp, rig.outputs(stamp)


# ============================================================================ outputs
def test_every_output_has_the_input_header_size_and_encoding(harness: Harness) -> None:
    for _ in range(2):
        stamp, out = _frame(harness)
    for topic, msg in out.items():
        assert h.stamp_ns(msg) == stamp, topic
        assert msg.header.frame_id == FRAME, topic
        assert (msg.width, msg.height) == (640, 480) or topic == "points", topic
    encodings = {t: out[t].encoding for t in IMAGE_TOPICS}
    assert encodings == {
        "depth/image": "32FC1",
        "depth_relative/image": "32FC1",
        "segmentation/image": "mono8",
        "segmentation/color": "rgb8",
        "depth/color": "rgb8",
    }
    for topic in topics.CAMERA_INFO_TOPICS:  # image_transport pairs X/image with X/camera_info
        info = out[topic]
        assert (info.width, info.height) == (640, 480), topic
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), harness.scene.camera.K)


def test_metric_depth_matches_the_scene(harness: Harness) -> None:
    _, out = _frame(harness)
    depth = h.image_array(out[topics.DEPTH])
    truth = harness.scene.depth
    near = np.isfinite(truth) & (truth < 25.0)
    valid = near & np.isfinite(depth)
    assert valid.sum() > 0.95 * near.sum()
    relative_error = np.abs(depth[valid] - truth[valid]) / truth[valid]
    assert np.median(relative_error) < 0.02
    sky = ~np.isfinite(truth)
    # REP 117: +Inf where the depth is known to be beyond the range (the sky)
    assert sky.any() and np.isposinf(depth[sky]).mean() > 0.99

    values = harness.diagnostics(lambda d: d.get("fit_status") == "tracking")
    # The stand-in outputs near / depth with near = 2 m: inverse depth = 0.5 * output.
    assert float(values["scale"]) == pytest.approx(1.0 / h.NEAR_M, rel=0.02)
    assert abs(float(values["shift"])) < 0.01
    assert int(values["lidar_points_used"]) > 500
    assert values["model"] == STANDIN and values["device"] == "cpu"
    assert float(values["latency.engine_ms"]) > 0 and "latency.fit_ms" in values


def test_point_cloud_fields_and_coordinates(harness: Harness) -> None:
    _, out = _frame(harness)
    cloud = out["points"]
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1),
    ]
    assert (cloud.point_step, cloud.height, cloud.is_dense) == (16, 1, True)
    points = pointcloud2_to_structured(cloud).reshape(-1)
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=1).astype(np.float64)
    assert np.isfinite(xyz).all() and len(xyz) > 10_000
    # Every point lies on the scene: projecting it back lands on a pixel of the same depth.
    camera = harness.scene.camera
    uv, ok = camera.project(xyz)
    assert ok.mean() > 0.99
    cols, rows = np.rint(uv[ok]).astype(int).T
    truth = harness.scene.depth[rows, cols]
    finite = np.isfinite(truth)
    relative_error = np.abs(xyz[ok][finite, 2] - truth[finite]) / truth[finite]
    assert np.median(relative_error) < 0.02
    colours = unpack_rgb(points["rgb"])[ok]
    np.testing.assert_array_equal(colours[:, 0], harness.grey[rows, cols, 0])
    # The cloud is the metric depth image decimated by cloud.stride (default 2).
    depth = h.image_array(out[topics.DEPTH])
    assert len(xyz) == np.isfinite(depth[::2, ::2]).sum()


def test_segmentation_and_pictures(harness: Harness) -> None:
    _, out = _frame(harness)
    labels = h.image_array(out[topics.SEGMENTATION])
    expected = h.expected_labels(harness.grey[:, :, 0])
    assert (labels == expected).mean() > 0.95
    colour = h.image_array(out["segmentation/color"])
    assert colour.shape == (480, 640, 3) and len(np.unique(colour.reshape(-1, 3), axis=0)) >= 3
    picture = h.image_array(out["depth/color"])
    assert picture.shape == (480, 640, 3) and picture.std() > 10


def test_without_camera_info_depth_still_flows_but_no_cloud_or_fit(harness: Harness) -> None:
    stamp = harness.next_stamp(50.0)  # far from every camera info and scan
    harness.send(stamp, info=False, scan=False)
    harness.outputs(stamp, (topics.DEPTH_RELATIVE, "depth/color", "segmentation/color"))
    time.sleep(0.5)
    for topic in ("points", "depth/camera_info", topics.DEPTH):
        assert harness.peer.by_stamp(topic, stamp) is None, topic
    assert harness.proc.wait_for_log("no camera_info within", 10)
    values = harness.diagnostics(lambda d: d.get("fit_status") in ("expired", "empty"))
    assert "camera_info" in values["fit_reason"] or values["fit_reason"]
    # The next complete frame brings the scale back.
    _, out = _frame(harness)
    assert out[topics.DEPTH] is not None


def test_a_scan_arriving_just_after_its_image_is_still_used(harness: Harness) -> None:
    before = harness.diagnostics()
    stamp = harness.next_stamp()
    harness.send(stamp, scan=False)
    time.sleep(0.02)  # within lidar_wait (0.05 s): the worker waits for the scan
    harness.peer.publish("lidar/points", h.cloud_msg(harness.scene.lidar_points, stamp, "lidar"))
    harness.outputs(stamp, (topics.DEPTH, "points"))
    values = harness.diagnostics(
        lambda d: int(d["frames_processed"]) > int(before["frames_processed"])
    )
    assert int(values["lidar_points_used"]) > 500, values


# ============================================================================ robustness
def _bad_messages(stamp: int) -> list[tuple[str, object]]:
    def image(**fields) -> Image:
        msg = h.image_msg(np.zeros((4, 4, 3), np.uint8), stamp, FRAME)
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    info = h.camera_info_msg(make_scene(8, 6).camera, stamp, FRAME)
    info.k = np.zeros(9)
    cloud = h.cloud_msg(np.ones((10, 3)), stamp, LIDAR_FRAME)
    cloud.data = array.array("B", bytes(5))
    return [
        ("image", image(step=6)),  # step shorter than a row
        ("image", image(data=array.array("B", bytes(10)))),  # wrong data length
        ("image", image(encoding="xyz8")),  # unknown encoding
        ("image", image(width=0, height=0, step=0, data=array.array("B"))),  # zero size
        ("camera_info", info),  # K all zero: not calibrated
        ("lidar/points", cloud),  # data shorter than row_step * height
    ]


def test_malformed_messages_are_skipped_and_the_node_keeps_going(harness: Harness) -> None:
    before = harness.diagnostics()
    for topic, msg in _bad_messages(harness.next_stamp()):
        harness.peer.publish(topic, msg)
        time.sleep(0.05)
    counts = {"image": 4, "camera_info": 1, "points": 1}
    values = harness.diagnostics(
        lambda d: all(
            int(d[f"malformed.{k}"]) >= int(before[f"malformed.{k}"]) + n for k, n in counts.items()
        )
    )
    assert int(values["frame_errors"]) == int(before["frame_errors"])
    assert harness.proc.alive
    assert harness.proc.wait_for_log("skipping a malformed image message", 10)
    _frame(harness)  # still serving


def test_runtime_parameters_are_validated(harness: Harness) -> None:
    node = "/depth_node"
    rejected = {
        "align.gate": (-1.0, "align.gate"),
        "align.min_depth": (500.0, "min_depth"),
        "viz.colormap": ("rainbow", "viz.colormap"),
        "lidar_translation": ([1.0, 2.0], "lidar_translation"),
        "model": ("dpt_large", "read-only"),
        "cloud.stride": ("wide", "type"),
    }
    for name, (value, reason) in rejected.items():
        (result,) = harness.peer.set_parameters(node, {name: value})
        assert not result.successful, name
        assert reason in result.reason, (name, result.reason)
    assert harness.peer.get_parameters(node, ["align.gate", "cloud.stride", "model"]) == [
        0.3,
        2,
        STANDIN,
    ]

    (result,) = harness.peer.set_parameters(node, {"cloud.stride": 4})
    assert result.successful, result.reason
    try:
        assert harness.peer.get_parameters(node, ["cloud.stride"]) == [4]
        _, out = _frame(harness)
        depth = h.image_array(out[topics.DEPTH])
        assert out["points"].width == np.isfinite(depth[::4, ::4]).sum()
    finally:
        (result,) = harness.peer.set_parameters(node, {"cloud.stride": 2})
        assert result.successful


def test_outputs_without_subscribers_are_not_computed(harness: Harness) -> None:
    skipped = (*topics.LABEL_TOPICS, "points")
    for topic in skipped:
        harness.peer.unsubscribe(topic)
    try:
        assert harness.peer.wait_for(
            lambda: all(harness.peer.node.count_subscribers(t) == 0 for t in skipped), TIMEOUT
        )
        time.sleep(0.5)
        before = harness.diagnostics()
        stamp = harness.next_stamp()
        harness.send(stamp)
        harness.outputs(stamp, (topics.DEPTH, topics.DEPTH_RELATIVE, "depth/color"))
        after = harness.diagnostics(
            lambda d: int(d["frames_processed"]) > int(before["frames_processed"])
        )
        assert after["segmentation_runs"] == before["segmentation_runs"]
        assert after["published.points"] == before["published.points"]
        assert int(after["published.depth/image"]) > int(before["published.depth/image"])
    finally:
        for topic in skipped:
            harness.peer.subscribe(OUTPUTS[topic], topic)
        harness.peer.wait_for(
            lambda: all(harness.peer.node.count_subscribers(t) == 1 for t in skipped), TIMEOUT
        )


def test_a_flood_of_frames_is_dropped_not_queued(harness: Harness) -> None:
    before = harness.diagnostics()
    image = h.image_msg(harness.grey, 0, FRAME)
    stamps = []
    for _ in range(40):
        stamp = harness.next_stamp(0.01)
        image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 10**9)
        harness.peer.publish("image", image)
        stamps.append(stamp)
    # The newest frame always gets through; most of the older ones are replaced, not queued.
    harness.outputs(stamps[-1], (topics.DEPTH_RELATIVE,))
    got = [h.stamp_ns(m) for m in harness.peer.messages(topics.DEPTH_RELATIVE)]
    got = [s for s in got if s in set(stamps)]
    assert got == sorted(got)
    assert len(got) < len(stamps)
    values = harness.diagnostics(
        lambda d: int(d["frames_processed"]) >= int(before["frames_processed"]) + len(got)
    )
    delta = {
        k: int(values[k]) - int(before[k])
        for k in ("images_in", "frames_processed", "frames_dropped", "frames_idle")
    }
    # input_depth 50 lets DDS hand every image to the node: the single slot does the dropping,
    # and every image that reached it was either processed or replaced by a newer one.
    assert delta["images_in"] > len(stamps) // 2
    assert delta["frames_dropped"] > 0
    assert (
        delta["frames_processed"] + delta["frames_dropped"] + delta["frames_idle"]
        == (delta["images_in"])
    )
    assert harness.proc.alive


def test_fastdds_profile_loads_cleanly(harness: Harness) -> None:
    # Fast DDS reports a profile it cannot parse (and then ignores it) on the node's output.
    log = harness.proc.log()
    assert "XMLPARSER" not in log, log[-3000:]
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in h.ros_env()


# ============================================================================ start-up
def test_start_up_errors_end_the_node_with_a_clear_message() -> None:
    plugin = {"model": STANDIN, "threads": 1}
    cases = {
        "missing weights": (
            {"model": "dpt_hybrid", "weights": "/nonexistent/dpt.pt"},
            "checkpoint not found: /nonexistent/dpt.pt",
        ),
        "bad plug-in": ({"model": "tests.ros_helpers:nope"}, "has no attribute 'nope'"),
        "bad value": ({**plugin, "align.gate": -1.0}, "'align.gate': must be in"),
        "typo": ({**plugin, "align.gte": 0.3}, "did you mean 'align.gate'"),
        "lidar without transform": (
            {**plugin, "use_lidar": True, "lidar_transform_source": "parameters"},
            "no camera<-LiDAR transform",
        ),
    }
    procs = {name: h.NodeProcess(params) for name, (params, _) in cases.items()}
    try:
        for name, (_, message) in cases.items():
            code = procs[name].wait(TIMEOUT)
            log = procs[name].log()
            assert code != 0, (name, log)
            assert "cannot start" in log and message in log, (name, log)
    finally:
        for proc in procs.values():
            proc.__exit__()


def test_shipped_configs_start_the_node() -> None:
    # Through rcl's own params-file parser: nested groups, empty lists, '' strings, "/**".
    procs = {
        config: h.NodeProcess(
            {"model": STANDIN, "threads": 1},
            extra_args=["--params-file", str(REPO / "config" / config)],
        )
        for config in ("depth.yaml", "kitti.yaml")
    }
    try:
        for config, proc in procs.items():
            assert proc.wait_for_log("ready:", TIMEOUT), (config, proc.log())
        source = "tf2" if tf2_available() else "parameters"
        assert f"LiDAR transform from {source}" in procs["kitti.yaml"].log()
        assert "LiDAR" not in procs["depth.yaml"].log()
        for config, proc in procs.items():
            assert proc.stop() == 0, (config, proc.log())
    finally:
        for proc in procs.values():
            proc.__exit__()


# ============================================================================ parts, no DDS
def test_latest_slot_keeps_only_the_newest_item() -> None:
    from dpt_ros.ros.node import LatestSlot

    slot = LatestSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True  # replaced 1: a drop
    assert slot.take(0.0) == 2
    assert slot.take(0.01) is None
    slot.put(3)
    slot.close()
    assert slot.take(0.0) is None


def test_stamped_buffer_matches_the_nearest_stamp_within_tolerance() -> None:
    from dpt_ros.ros.node import StampedBuffer

    buffer = StampedBuffer(maxlen=3)
    assert buffer.nearest(100, 10**9) is None
    for stamp in (100, 200, 300, 400):
        buffer.add(stamp, f"v{stamp}")
    assert buffer.nearest(240, 50) == (200, "v200")
    assert buffer.nearest(260, 50) == (300, "v300")
    assert buffer.nearest(100, 60) is None  # fell out of the buffer (maxlen 3)
    assert buffer.nearest(1000, 100) is None
    buffer.add(50, "restart")  # time went backwards (bag restart): old entries are dropped
    assert buffer.nearest(400, 10**9) == (50, "restart")


def test_transform_source_looks_up_tf2_at_the_image_stamp(monkeypatch) -> None:
    import importlib.machinery
    import sys
    import types
    from types import SimpleNamespace

    from dpt_ros.ros.tf import LidarTransformSource, TransformUnavailable

    calls = []

    class Buffer:
        def lookup_transform(self, target, source, time, timeout):
            calls.append((target, source, time.nanoseconds, timeout.nanoseconds))
            if source == "missing":
                raise LookupError("frame does not exist")
            t = SimpleNamespace(x=1.0, y=2.0, z=3.0)
            q = SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0)
            return SimpleNamespace(transform=SimpleNamespace(translation=t, rotation=q))

    fake = types.ModuleType("tf2_ros")
    fake.__spec__ = importlib.machinery.ModuleSpec("tf2_ros", None)
    fake.Buffer = Buffer
    fake.TransformListener = lambda buffer, node: ("listening", node)
    monkeypatch.setitem(sys.modules, "tf2_ros", fake)

    source = LidarTransformSource("auto", None, node="the node")
    assert source.mode == "tf" and source.describe == "tf2"
    T = source.lookup("/camera", "lidar", 1_500_000_000, timeout_s=0.25)
    np.testing.assert_allclose(T[:3, 3], [1.0, 2.0, 3.0])
    assert calls == [("camera", "lidar", 1_500_000_000, 250_000_000)]
    with pytest.raises(TransformUnavailable, match="frame does not exist"):
        source.lookup("camera", "missing", 0)


def test_transform_source_from_parameters() -> None:
    from dpt_ros.ros.tf import LidarTransformSource, TransformUnavailable

    source = LidarTransformSource("parameters", None)
    with pytest.raises(TransformUnavailable, match="neither lidar_T_cam_lidar nor"):
        source.lookup("camera", "lidar", 0)
    T = np.eye(4)
    T[:3, 3] = (0.1, 0.2, 0.3)
    source.set_matrix(T)
    np.testing.assert_allclose(source.lookup("camera", "lidar", 0), T)
    with pytest.raises(ValueError, match="rotation"):
        source.set_matrix(np.diag([2.0, 1.0, 1.0, 1.0]))
