"""The depth node over real DDS: a node subprocess, a test peer in this process.

The node runs as ``python -m dpt_ros.ros.node`` with the stand-in models of ros_helpers loaded
through the ``module:callable`` plug-in path. The peer publishes a synthetic street scene
(640x480: above Fast DDS' default 512 KiB shared-memory segment, so the shipped profile is in
play), its camera info and a simulated LiDAR scan, and checks every output.
"""

from __future__ import annotations

import array
import re
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402

from dpt_ros import topics  # noqa: E402
from dpt_ros.ros.convert import image_to_rgb, pointcloud2_to_structured, unpack_rgb  # noqa: E402
from dpt_ros.ros.tf import tf2_available  # noqa: E402
from dpt_ros.synthetic import make_scene  # noqa: E402
from dpt_ros.viz import colorize_depth, overlay  # noqa: E402
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
            # A scan that reaches the node after its image is waited for, so the tests need
            # no sleeps to put the scan first (a frame's camera_info may be late too: the
            # previous one, 0.1 s older, is within camera_info_tolerance).
            "lidar_wait": 2.0,
        }
        self.gate = Path(tempfile.mkdtemp(prefix="dpt_node_gate_"))  # h.wait_at_gate
        self.proc = h.NodeProcess(self.params, env=h.ros_env(**{h.GATE_ENV: str(self.gate)}))
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

    def prime(self, timeout: float = TIMEOUT) -> None:
        """Send frames until one comes back with every output: from then on the node holds a
        camera_info that later frames can fall back on (an event, not a sleep)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stamp = self.next_stamp()
            self.send(stamp)
            if self.peer.wait_for(lambda s=stamp: all(self.peer.by_stamp(t, s) for t in OUTPUTS)):
                return
        raise AssertionError(f"no frame came back with every output\n{self.proc.log()[-3000:]}")

    def close(self) -> None:
        self.peer.close()
        self.proc.__exit__()
        shutil.rmtree(self.gate, ignore_errors=True)


@pytest.fixture(scope="module")
def harness():
    rig = Harness()
    try:
        assert rig.peer.wait_for_subscribers(["image", "camera_info", "lidar/points"], TIMEOUT), (
            rig.proc.log()
        )
        assert rig.peer.wait_for_publishers(list(OUTPUTS), TIMEOUT)
        rig.prime()
        yield rig
    finally:
        rig.close()


def _frame(rig: Harness) -> tuple[int, dict]:
    stamp = rig.next_stamp()
    rig.send(stamp)
    return stamp, rig.outputs(stamp)


def assert_depth_per_pixel(
    depth: np.ndarray, rig: Harness, fit_error: float = 0.02, min_known: float = 0.85
) -> None:
    """Every pixel where the answer is known: away from depth edges (grey levels within 4 of
    each other over 7x7 pixels, the reach of the engine's bicubic resizes: 90 % of the scene
    nearer than 25 m) the stand-in's output follows the grey level, so a pixel's depth is off
    only by the grey level's rounding (half a level of 255 * NEAR_M / depth: a relative error
    of depth / (510 * NEAR_M); the resizes add < 0.3 %) and by the fit's error."""
    grey = rig.grey[:, :, 0]
    kernel = np.ones((7, 7), np.uint8)
    smooth = cv2.dilate(grey, kernel).astype(int) - cv2.erode(grey, kernel) <= 4
    truth = rig.scene.depth
    near = np.isfinite(truth) & (truth < 25.0)
    known = smooth & near
    assert known.sum() > min_known * near.sum()  # the check covers most of the scene
    error = np.abs(depth[known] - truth[known]) / truth[known]
    bound = truth[known] / (510.0 * h.NEAR_M) + fit_error
    worst = np.argmax(error - bound)
    assert (error <= bound).all(), (
        f"{np.sum(error > bound)} of {known.sum()} pixels beyond rounding + {fit_error:.0%}; "
        f"worst {error[worst]:.4f} at {truth[known][worst]:.2f} m (bound {bound[worst]:.4f})"
    )


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
    assert_depth_per_pixel(depth, harness)
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
    # The cloud is the metric depth image decimated by cloud.stride (default 2): every point
    # is the depth of its pixel (whose values assert_depth_per_pixel checks).
    depth = h.image_array(out[topics.DEPTH])
    assert len(xyz) == np.isfinite(depth[::2, ::2]).sum()
    assert (rows % 2 == 0).all() and (cols % 2 == 0).all()
    np.testing.assert_allclose(xyz[ok][:, 2], depth[rows, cols], rtol=1e-5)
    assert_depth_per_pixel(depth, harness)


def test_segmentation_and_pictures(harness: Harness) -> None:
    _, out = _frame(harness)
    labels = h.image_array(out[topics.SEGMENTATION])
    expected = h.expected_labels(harness.grey[:, :, 0])
    assert (labels == expected).mean() > 0.95
    colormap, min_depth, max_depth, alpha = harness.peer.get_parameters(
        "/depth_node", ["viz.colormap", "viz.min_depth", "viz.max_depth", "viz.overlay_alpha"]
    )
    # The overlay: ADE20K's benchmark colours for labels 1..3, blended over the input image
    # as (1 - alpha) * image + alpha * colour, per pixel (OpenCV rounds: within 1 level).
    palette = np.array([[0, 0, 0], [120, 120, 120], [180, 120, 120], [6, 230, 230]])
    colour = image_to_rgb(out[topics.SEGMENTATION_COLOR]).astype(np.float64)
    by_hand = (1 - alpha) * harness.grey + alpha * palette[labels]
    assert colour.shape == (480, 640, 3) and np.abs(colour - by_hand).max() <= 1.0
    np.testing.assert_array_equal(colour, overlay(harness.grey, labels, alpha))
    # The depth picture: the received depth through the configured colour map, exactly.
    depth = h.image_array(out[topics.DEPTH])
    picture = image_to_rgb(out[topics.DEPTH_COLOR])
    expected = colorize_depth(depth, min_depth or None, max_depth or None, colormap=colormap)
    np.testing.assert_array_equal(picture, expected)


def test_without_camera_info_depth_still_flows_but_no_cloud_or_fit(harness: Harness) -> None:
    stamp = harness.next_stamp(50.0)  # far from every camera info and scan
    harness.send(stamp, info=False, scan=False)
    before = harness.diagnostics()
    harness.outputs(stamp, (topics.DEPTH_RELATIVE, "depth/color", "segmentation/color"))
    # The frame is done (counted after all its outputs went out): nothing else comes for it.
    values = harness.diagnostics(
        lambda d: int(d["frames_processed"]) > int(before["frames_processed"])
    )
    for topic in ("points", "depth/camera_info", topics.DEPTH):
        assert harness.peer.by_stamp(topic, stamp) is None, topic
    assert harness.proc.wait_for_log("no camera_info within", 10)
    assert values["fit_status"] in ("expired", "empty"), values
    # Without a camera the node matches no scan (the log above says why): no fit, and the
    # last good one, 50 s old, has expired.
    reason = values["fit_reason"]
    assert reason.startswith("no LiDAR scan with this frame"), reason
    if values["fit_status"] == "expired":
        assert re.search(r"; last good fit is 5\d\.\d\d s old \(hold ", reason), reason
    else:  # this test alone: no fit before
        assert reason.endswith("no scale yet"), reason
    # The next complete frame brings the scale back: a fresh fit, the scene's depth again.
    _, out = _frame(harness)
    assert_depth_per_pixel(h.image_array(out[topics.DEPTH]), harness)
    values = harness.diagnostics(lambda d: d.get("fit_status") == "tracking")
    assert float(values["scale"]) == pytest.approx(1.0 / h.NEAR_M, rel=0.02)


def test_a_scan_arriving_just_after_its_image_is_still_used(harness: Harness) -> None:
    before = harness.diagnostics()
    stamp = harness.next_stamp()
    harness.send(stamp, scan=False)
    # Only once the node has the image (an event: its count) does the scan go out; the worker
    # waits up to lidar_wait (2 s here) for it.
    harness.diagnostics(lambda d: int(d["images_in"]) > int(before["images_in"]))
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
    counters = ("images_in", "frames_processed", "frames_dropped", "frames_idle")

    def quiet() -> dict | None:  # two diagnostics in a row with the same counts: node idle
        msgs = harness.peer.messages("/diagnostics")[-2:]
        values = [h.diagnostics_values(m) for m in msgs]
        same = len(values) == 2 and all(values)
        return values[1] if same and all(values[0][k] == values[1][k] for k in counters) else None

    before = harness.peer.wait_for(quiet, TIMEOUT)
    assert before, harness.proc.log()[-3000:]
    image = h.image_msg(harness.grey, 0, FRAME)

    def publish(stamp: int) -> None:
        image.header.stamp.sec, image.header.stamp.nanosec = divmod(stamp, 10**9)
        harness.peer.publish("image", image)

    closed, entered = harness.gate / "closed", harness.gate / "entered"
    closed.touch()  # the stand-in's forward holds the worker until it is removed
    try:
        busy = harness.next_stamp(0.01)
        publish(busy)
        assert harness.peer.wait_for(entered.exists, TIMEOUT), harness.proc.log()[-3000:]
        # The worker is inside the forward of `busy`. Ten more images, each counted in by the
        # node before the next goes out, all arrive while it is busy.
        stamps = []
        for n in range(2, 12):
            stamps.append(harness.next_stamp(0.01))
            publish(stamps[-1])
            harness.diagnostics(lambda d, n=n: int(d["images_in"]) >= int(before["images_in"]) + n)
    finally:
        closed.unlink(missing_ok=True)
    entered.unlink(missing_ok=True)
    harness.outputs(stamps[-1], (topics.DEPTH_RELATIVE,))
    got = [h.stamp_ns(m) for m in harness.peer.messages(topics.DEPTH_RELATIVE)]
    # Exactly the frame in progress and the newest: the nine between were replaced in the
    # node's one-frame slot (counted as drops), not queued.
    assert [s for s in got if s in {busy, *stamps}] == [busy, stamps[-1]]
    values = harness.diagnostics(
        lambda d: int(d["frames_processed"]) >= int(before["frames_processed"]) + 2
    )
    delta = {k: int(values[k]) - int(before[k]) for k in counters}
    assert delta == {"images_in": 11, "frames_processed": 2, "frames_dropped": 9, "frames_idle": 0}
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


# ============================================================================ no tf2
def _transform_stamped(parent: str, child: str, T: np.ndarray, stamp: int):  # noqa: ANN202
    """geometry_msgs/TransformStamped mapping ``child`` points into ``parent`` (4x4 ``T``)."""
    from geometry_msgs.msg import TransformStamped

    from dpt_ros.ros.convert import make_header

    rvec = cv2.Rodrigues(np.ascontiguousarray(T[:3, :3]))[0].ravel()
    angle = float(np.linalg.norm(rvec))
    axis = rvec / angle if angle > 0 else np.zeros(3)
    msg = TransformStamped()
    msg.header = make_header(stamp, parent)
    msg.child_frame_id = child
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in T[:3, 3])
    q.x, q.y, q.z = (float(v) for v in axis * np.sin(angle / 2))
    q.w = float(np.cos(angle / 2))
    return msg


def test_without_tf2_the_node_takes_the_lidar_transform_from_tf_static(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """lidar_transform_source 'tf' on a machine without tf2_ros: the node reads /tf_static
    (transient-local, reliable, as tf2 does) and /tf (volatile) into its own buffer, chains
    camera <- base_link <- lidar and fits the metric scale with it. Without tf2_msgs (rclpy
    from PyPI) nothing can publish a TFMessage: the node then subscribes with a stand-in type
    and the test hands the /tf_static message to that subscription's callback."""
    import threading
    from types import SimpleNamespace

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from dpt_ros.geometry import transform_from_quaternion
    from dpt_ros.ros import node as node_module
    from dpt_ros.ros import tf as ros_tf

    tf_message = ros_tf.tf_message_type()
    monkeypatch.setattr(ros_tf, "tf2_available", lambda: False)
    if tf_message is None:
        from std_msgs.msg import Empty

        monkeypatch.setattr(node_module, "tf_message_type", lambda: Empty)

    scene = make_scene(320, 240, seed=2, layout="street")
    grey = h.encode_inverse_depth(scene.depth)
    # camera_optical <- base_link <- lidar, whose product is the scene's T_cam_lidar.
    T_base_lidar = transform_from_quaternion((0.3, -0.1, 1.2), (0.0, 0.0, 0.2588, 0.9659))
    T_cam_base = scene.T_cam_lidar @ np.linalg.inv(T_base_lidar)
    params = {
        "model": STANDIN,
        "device": "cpu",
        "threads": 1,
        "use_lidar": True,
        "lidar_transform_source": "tf",
        "lidar_wait": 2.0,
    }
    context = rclpy.Context()
    rclpy.init(context=context)
    node = node_module.DepthNode(
        "depth_node_no_tf2",  # its own name: later tests call depth_node's services
        context=context,
        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
    )
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    executor.add_node(node)

    def spin() -> None:
        while context.ok():
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutdown races
                if not context.ok():
                    return
                raise

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    peer = h.TestPeer()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS, node.transition_failure
        infos = {
            topic: peer.wait_for(lambda t=topic: peer.node.get_subscriptions_info_by_topic(t))
            for topic in ("/tf", "/tf_static")
        }
        static_qos, dynamic_qos = infos["/tf_static"][0].qos_profile, infos["/tf"][0].qos_profile
        assert static_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert static_qos.reliability == ReliabilityPolicy.RELIABLE
        assert dynamic_qos.durability == DurabilityPolicy.VOLATILE

        stamp = 1_700_000_000 * 10**9
        chain = [
            _transform_stamped(FRAME, "base_link", T_cam_base, stamp),
            _transform_stamped("base_link", LIDAR_FRAME, T_base_lidar, stamp),
        ]
        if tf_message is not None:  # over DDS, latched as a static broadcaster does
            latched = QoSProfile(
                depth=1,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
                reliability=ReliabilityPolicy.RELIABLE,
            )
            peer.node.create_publisher(tf_message, "/tf_static", latched).publish(
                tf_message(transforms=chain)
            )
        else:
            (static_sub,) = [s for s in node._subs if s.topic_name == "/tf_static"]
            static_sub.callback(SimpleNamespace(transforms=chain))

        peer.subscribe(Image, topics.DEPTH)
        for topic, msg_type in (
            ("image", Image),
            ("camera_info", CameraInfo),
            ("lidar/points", PointCloud2),
        ):
            peer.publisher(msg_type, topic)
        assert peer.wait_for_subscribers(["/image", "/camera_info", "/lidar/points"])
        assert peer.wait_for_publishers([f"/{topics.DEPTH}"])
        depth = None
        deadline = time.monotonic() + TIMEOUT
        while depth is None and time.monotonic() < deadline:
            stamp += 100_000_000
            peer.publish("lidar/points", h.cloud_msg(scene.lidar_points, stamp, LIDAR_FRAME))
            peer.publish("camera_info", h.camera_info_msg(scene.camera, stamp, FRAME))
            peer.publish("image", h.image_msg(grey, stamp, FRAME))
            depth = peer.wait_for(lambda s=stamp: peer.by_stamp(topics.DEPTH, s), 5.0)
        assert depth is not None, "no metric depth: the transform from /tf_static was not used"
        # per pixel, as for the node fed by parameters: the chain from TF gives the same fit
        # (this street scene has more depth edges than the harness's: 57 % of it is smooth)
        assert_depth_per_pixel(
            h.image_array(depth), SimpleNamespace(grey=grey, scene=scene), min_known=0.5
        )
    finally:
        peer.close()
        node.trigger_shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(5)


def test_transform_source_tf_without_tf2_uses_its_own_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from dpt_ros.ros import tf as ros_tf

    monkeypatch.setattr(ros_tf, "tf2_available", lambda: False)
    source = ros_tf.LidarTransformSource("tf", np.eye(4))
    assert source.mode == "tf" and "no tf2" in source.describe
    with pytest.raises(ros_tf.TransformUnavailable, match="frames received: none"):
        source.lookup("camera", "lidar", 0)  # never the matrix: 'tf' means TF
    T = np.eye(4)
    T[:3, 3] = (1.0, 2.0, 3.0)
    source.add_tf_message(
        SimpleNamespace(transforms=[_transform_stamped("camera", "lidar", T, 0)]), static=True
    )
    np.testing.assert_allclose(source.lookup("camera", "lidar", 5), T, atol=1e-12)
