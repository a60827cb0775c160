"""The depth node as a managed (lifecycle) node, and the camera_info of its outputs, over DDS.

Three node processes with stand-in models: one started with ``autostart:=false`` and driven
through every transition by the lifecycle services (/depth_node/change_state, get_state) of
lifecycle_msgs, fed a binned camera (binning 2); one whose model cannot load (configure fails,
the node stays up and unconfigured); one that starts itself (the default) on an ``image_rect``
topic, so ``image_type: auto`` takes its images as rectified.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from dpt_ros import topics  # noqa: E402
from tests import ros_helpers as h  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

TIMEOUT = 60.0
FRAME = "camera_optical"
OUT_IMAGE = topics.DEPTH_RELATIVE
OUT_INFO = topics.DEPTH_RELATIVE_INFO

# A camera calibrated at 1280x960 (plumb_bob, a stereo right camera: P has Tx), sending
# 640x480 images binned 2x2.
K_FULL = [800.0, 0.0, 640.5, 0.0, 820.0, 480.25, 0.0, 0.0, 1.0]
D = [-0.1, 0.01, 0.001, -0.002, 0.0]
P_FULL = [780.0, 0.0, 630.0, -390.0, 0.0, 780.0, 470.0, 0.0, 0.0, 0.0, 1.0, 0.0]
# Hand-computed (image_geometry: rows 0 and 1 of K and P divided by the binning).
K_BINNED = [400.0, 0.0, 320.25, 0.0, 410.0, 240.125, 0.0, 0.0, 1.0]
P_BINNED = [390.0, 0.0, 315.0, -195.0, 0.0, 390.0, 235.0, 0.0, 0.0, 0.0, 1.0, 0.0]
# A rectified 640x480 image: R rotates the raw camera onto the rectified one.
K_RAW = [500.0, 0.0, 321.0, 0.0, 505.0, 239.0, 0.0, 0.0, 1.0]
COS, SIN = np.cos(0.01), np.sin(0.01)
R_RECT = [COS, 0.0, SIN, 0.0, 1.0, 0.0, -SIN, 0.0, COS]
P_RECT = [480.0, 0.0, 318.0, -48.0, 0.0, 480.0, 241.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def camera_info(stamp: int, width, height, k, d, r, p, binning: int = 0) -> CameraInfo:
    from dpt_ros.ros.convert import make_header

    msg = CameraInfo()
    msg.header = make_header(stamp, FRAME)
    msg.width, msg.height = width, height
    msg.distortion_model = "plumb_bob"
    msg.d, msg.k, msg.r, msg.p = list(d), list(k), list(r), list(p)
    msg.binning_x = msg.binning_y = binning
    return msg


def binned_info(stamp: int) -> CameraInfo:
    return camera_info(stamp, 1280, 960, K_FULL, D, np.eye(3).ravel(), P_FULL, binning=2)


def rectified_info(stamp: int) -> CameraInfo:
    return camera_info(stamp, 640, 480, K_RAW, D, R_RECT, P_RECT)


class Lifecycle:
    """Lifecycle service calls from the test peer."""

    def __init__(self, peer: h.TestPeer, node: str) -> None:
        self.peer, self.node = peer, node

    def _call(self, srv_type: type, name: str, request):
        client = self.peer.node.create_client(srv_type, f"{self.node}/{name}")
        try:
            assert client.wait_for_service(timeout_sec=TIMEOUT), f"no {self.node}/{name}"
            future = client.call_async(request)
            assert self.peer.wait_for(future.done, TIMEOUT), f"{name} did not answer"
            return future.result()
        finally:
            self.peer.node.destroy_client(client)

    def change(self, transition: str) -> bool:
        request = ChangeState.Request()
        request.transition.label = transition
        return self._call(ChangeState, "change_state", request).success

    def state(self) -> str:
        return self._call(GetState, "get_state", GetState.Request()).current_state.label


class Rig:
    def __init__(self, peer: h.TestPeer, namespace: str, image_topic: str, make_info) -> None:
        self.peer, self.ns, self.make_info = peer, namespace, make_info
        self.image_topic = f"{namespace}/{image_topic}"
        self.grey = np.repeat(np.linspace(40, 220, 640, dtype=np.uint8)[None, :, None], 480, 0)
        self.grey = np.repeat(self.grey, 3, axis=2)
        self.stamp = 1_700_000_000 * 10**9
        for topic, msg_type in ((OUT_IMAGE, Image), (OUT_INFO, CameraInfo)):
            peer.subscribe(msg_type, f"{namespace}/{topic}")
        peer.publisher(Image, self.image_topic)
        peer.publisher(CameraInfo, f"{namespace}/camera_info")

    def send(self) -> int:
        self.stamp += 100_000_000
        self.peer.publish(f"{self.ns}/camera_info", self.make_info(self.stamp))
        self.peer.publish(self.image_topic, h.image_msg(self.grey, self.stamp, FRAME))
        return self.stamp

    def outputs(self, stamp: int, timeout: float = 1.0):
        topics_ = (f"{self.ns}/{OUT_IMAGE}", f"{self.ns}/{OUT_INFO}")
        found = self.peer.wait_for(
            lambda: all(self.peer.by_stamp(t, stamp) for t in topics_), timeout
        )
        return [self.peer.by_stamp(t, stamp) for t in topics_] if found else None

    def serve(self, proc: h.NodeProcess) -> tuple:
        """Send frames until one comes back with its camera_info; (image, camera_info)."""
        for _ in range(int(TIMEOUT)):
            out = self.outputs(self.send())
            if out:
                return tuple(out)
        raise AssertionError(f"no output came back\n{proc.log()[-3000:]}")

    def sent_count(self) -> int:
        return len(self.peer.messages(f"{self.ns}/{OUT_IMAGE}"))


def _statuses(peer: h.TestPeer, node: str) -> list[dict]:
    name = f"{node}: depth"
    return [
        {kv.key: kv.value for kv in status.values}
        for msg in peer.messages("/diagnostics")
        for status in msg.status
        if status.name == name
    ]


def diagnostics_after(peer: h.TestPeer, proc: h.NodeProcess, n: int = 2) -> dict:
    """/depth_node's diagnostics values, ``n`` messages after now (so everything sent before
    this call had time to reach the node and be counted)."""
    start = len(_statuses(peer, "/depth_node"))
    values = peer.wait_for(
        lambda: (
            statuses[-1] if len(statuses := _statuses(peer, "/depth_node")) >= start + n else None
        ),
        TIMEOUT,
    )
    assert values, f"no diagnostics\n{proc.log()[-3000:]}"
    return values


@pytest.fixture(scope="module")
def peer():
    peer = h.TestPeer("dpt_lifecycle_peer")
    peer.subscribe(DiagnosticArray, "/diagnostics")
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture(scope="module")
def models_dir():
    folder = Path(tempfile.mkdtemp(prefix="dpt_models_"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def nodes(models_dir: Path):
    """Three nodes, started together: "managed" (autostart:=false, the tracked stand-in, a
    binned camera), "broken" (weights that do not exist, autostart:=false) and "rect" (the
    default autostart, on an image_rect topic, net_size given as the word 'auto')."""
    stand_in = {"threads": 1, "diagnostics_period": 0.2}
    procs = {
        "managed": h.NodeProcess(
            {
                **stand_in,
                "model": "tests.ros_helpers:tracked_gray_inverse_depth",
                "autostart": False,
            },
            env=h.ros_env(**{h.MODELS_ENV: str(models_dir)}),
        ),
        "broken": h.NodeProcess(
            {"model": "dpt_hybrid", "weights": "/nonexistent/dpt.pt", "autostart": False},
            namespace="/broken",
        ),
        "rect": h.NodeProcess(
            {**stand_in, "model": "tests.ros_helpers:gray_inverse_depth", "net_size": "auto"},
            namespace="/rect",
            remaps={"image": "image_rect"},
        ),
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.__exit__()


def test_transitions_driven_through_the_lifecycle_services(
    peer: h.TestPeer, nodes: dict, models_dir: Path
) -> None:
    managed = nodes["managed"]
    life = Lifecycle(peer, "/depth_node")
    rig = Rig(peer, "", "image", binned_info)
    assert life.state() == "unconfigured", managed.log()
    values = diagnostics_after(peer, managed, 1)
    assert (values["lifecycle_state"], values["model_loaded"]) == ("unconfigured", "false")
    assert not list(models_dir.glob("loaded.*"))  # nothing loaded before configure

    assert life.change("configure"), managed.log()
    assert life.state() == "inactive"
    assert (models_dir / "loaded.0").exists()
    # Inactive: no subscription, no outputs, whatever arrives.
    assert peer.node.count_subscribers("/image") == 0
    assert peer.node.count_publishers(f"/{OUT_IMAGE}") == 0
    for _ in range(3):
        rig.send()
    values = diagnostics_after(peer, managed)
    assert (values["lifecycle_state"], values["model_loaded"]) == ("inactive", "true")
    assert values["images_in"] == "0" and rig.sent_count() == 0
    assert not (models_dir / "released.0").exists()  # the node holds the model it loaded

    assert life.change("activate"), managed.log()
    assert life.state() == "active"
    image, info = rig.serve(managed)
    assert (image.width, image.height) == (640, 480)
    # The output's camera_info: the binned camera, exactly (P's Tx kept, binning applied).
    assert (info.width, info.height, info.binning_x, info.binning_y) == (640, 480, 0, 0)
    np.testing.assert_allclose(info.k, K_BINNED, atol=1e-9)
    np.testing.assert_allclose(info.p, P_BINNED, atol=1e-9)
    np.testing.assert_allclose(info.d, D, atol=1e-12)
    np.testing.assert_allclose(info.r, np.eye(3).ravel(), atol=1e-12)
    assert info.distortion_model == "plumb_bob"
    assert diagnostics_after(peer, managed, 1)["lifecycle_state"] == "active"

    assert life.change("deactivate"), managed.log()
    assert life.state() == "inactive"
    assert peer.wait_for(lambda: peer.node.count_publishers(f"/{OUT_IMAGE}") == 0, TIMEOUT)
    before, images_in = rig.sent_count(), diagnostics_after(peer, managed, 1)["images_in"]
    for _ in range(3):
        rig.send()
    values = diagnostics_after(peer, managed)
    assert values["images_in"] == images_in and rig.sent_count() == before

    assert life.change("cleanup"), managed.log()
    assert life.state() == "unconfigured"
    assert peer.wait_for(lambda: (models_dir / "released.0").exists(), TIMEOUT), managed.log()
    assert diagnostics_after(peer, managed, 1)["model_loaded"] == "false"

    # Again: a fresh model, outputs flow.
    assert life.change("configure") and life.change("activate"), managed.log()
    assert (models_dir / "loaded.1").exists()
    rig.serve(managed)
    assert not (models_dir / "released.1").exists()

    assert life.change("shutdown"), managed.log()
    assert life.state() == "finalized"
    assert peer.wait_for(lambda: (models_dir / "released.1").exists(), TIMEOUT), managed.log()
    assert managed.alive
    assert managed.stop() == 0, managed.log()
    log = managed.log()
    assert "ERROR" not in log and "Traceback" not in log, log


def test_a_failing_configure_leaves_the_node_unconfigured_and_alive(
    peer: h.TestPeer, nodes: dict
) -> None:
    broken = nodes["broken"]
    life = Lifecycle(peer, "/broken/depth_node")
    assert life.state() == "unconfigured", broken.log()
    assert not life.change("configure")
    assert life.state() == "unconfigured"
    assert broken.alive
    errors = [line for line in broken.log().splitlines() if line.startswith("[ERROR]")]
    assert len(errors) == 1, broken.log()
    assert "configure failed" in errors[0] and "checkpoint not found" in errors[0], errors
    assert "Traceback" not in broken.log()
    assert not life.change("configure")  # and again: still up, still the same answer
    assert broken.alive and life.state() == "unconfigured"


def test_autostart_serves_rectified_input_with_the_projection_camera(
    peer: h.TestPeer, nodes: dict
) -> None:
    autostarted = nodes["rect"]
    rig = Rig(peer, "/rect", "image_rect", rectified_info)
    assert Lifecycle(peer, "/rect/depth_node").state() == "active", autostarted.log()
    _, info = rig.serve(autostarted)
    # image_type auto + image_rect: the image is rectified, so its camera is P's (REP 104).
    assert (info.width, info.height) == (640, 480)
    np.testing.assert_allclose(info.k, np.reshape(P_RECT, (3, 4))[:, :3].ravel(), atol=1e-9)
    np.testing.assert_allclose(info.p, P_RECT, atol=1e-9)
    np.testing.assert_allclose(info.d, np.zeros(5), atol=0)
    np.testing.assert_allclose(info.r, np.eye(3).ravel(), atol=1e-12)
    # net_size:=auto was accepted and stored as 0, the parameter's value for 'auto'.
    assert peer.get_parameters("/rect/depth_node", ["net_size"]) == [0]
