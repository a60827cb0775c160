"""The node never dies from its input, refuses what would cost without bound, stays supervised
and stops cleanly (issue 9), and honours qos_overrides (issue 10, section 3).

Over real DDS: node subprocesses with tiny stand-in models (plug-ins), a test peer in this
process. The fuzz corpus sends hostile values for the fields of Image, CompressedImage,
CameraInfo and PointCloud2, each followed by a valid frame that must be served. Parts that need
no DDS (header parsing, pixel formats, limits, logging) are tested directly.
"""

from __future__ import annotations

import array
import io
import re
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2  # noqa: E402

from dpt_ros import messages, topics  # noqa: E402
from dpt_ros.synthetic import make_scene  # noqa: E402
from tests import ros_helpers as h  # noqa: E402
from tests import standin_faults as faults  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

STANDIN = "tests.ros_helpers:gray_inverse_depth"
FRAME = "camera_optical"
WIDTH, HEIGHT = 64, 48
TIMEOUT = 60.0
LIMITS = {"max_pixels": 7680 * 4320, "max_aspect_ratio": 8.0}
EITHER = ""  # a fuzz case that may be refused (with a reason) or used, but must not hurt


# ============================================================================ messages, no DDS
def _encoded(ext: str, pixels: np.ndarray) -> bytes:
    ok, data = cv2.imencode(ext, pixels)
    assert ok, ext
    return data.tobytes()


def _compressed(data: bytes, fmt: str = "jpeg") -> SimpleNamespace:
    return SimpleNamespace(format=fmt, data=data)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) claims another size."""
    data = bytearray(_encoded(".jpg", np.full((8, 8, 3), 100, np.uint8)))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def _png_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encoded(".png", np.zeros((4, 4), np.uint8)))
    data[16:20], data[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    return bytes(data)


def _pillow_png(mode: str) -> bytes:
    from PIL import Image as PILImage

    rgb = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    picture = PILImage.fromarray(rgb)
    (picture.convert("P") if mode == "P" else picture.convert(mode)).save(buffer, "PNG")
    return buffer.getvalue()


RGB = np.random.default_rng(1).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
FLOAT = RGB.astype(np.float32) / 255.0
# Every decoded pixel format: (encoded bytes, expected RGB or None when only the shape counts).
DECODABLE = {
    "jpeg": (_encoded(".jpg", RGB[:, :, ::-1]), None),
    "png rgb": (_encoded(".png", RGB[:, :, ::-1]), RGB),
    "png 16-bit": (_encoded(".png", RGB[:, :, ::-1].astype(np.uint16) * 257), RGB),
    "png grey": (_encoded(".png", RGB[:, :, 0]), np.repeat(RGB[:, :, :1], 3, axis=2)),
    "png grey+alpha": (_pillow_png("LA"), None),
    "png rgba": (_encoded(".png", np.dstack([RGB[:, :, ::-1], RGB[:, :, :1]])), RGB),
    "png palette": (_pillow_png("P"), None),
    "radiance hdr (float)": (_encoded(".hdr", FLOAT[:, :, ::-1]), RGB),
    "pfm (float)": (_encoded(".pfm", FLOAT[:, :, ::-1]), RGB),
    "tiff float": (_encoded(".tiff", FLOAT[:, :, ::-1]), RGB),
    "bmp": (_encoded(".bmp", RGB[:, :, ::-1]), RGB),
    "webp": (_encoded(".webp", RGB[:, :, ::-1]), None),
}


@pytest.mark.parametrize("name", list(DECODABLE))
def test_every_decoded_pixel_format_is_converted(name: str) -> None:
    data, expected = DECODABLE[name]
    assert messages.encoded_image_size(data)[:2] == (WIDTH, HEIGHT)
    rgb = messages.compressed_to_rgb(_compressed(data), **LIMITS)
    assert rgb.shape == (HEIGHT, WIDTH, 3) and rgb.dtype == np.uint8
    if expected is not None:
        assert np.abs(rgb.astype(int) - expected).max() <= 1, name


def test_pixel_formats_without_a_colour_scale_are_refused() -> None:
    data = _encoded(".tiff", RGB[:, :, 0].astype(np.int32))
    with pytest.raises(messages.ImageConversionError, match="int32 pixels"):
        messages.compressed_to_rgb(_compressed(data), **LIMITS)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_jpeg_claiming(16000, 16000), r"16000x16000 = 256000000 pixels, more than"),
        (_jpeg_claiming(10000, 1), r"aspect ratio 1e\+04 is above max_aspect_ratio"),
        (_png_claiming(100000, 1), "aspect ratio"),
        (_jpeg_claiming(10, 0), "zero size"),
        (b"\x00garbage" * 10, "no header that tells its size"),
    ],
)
def test_compressed_limits_are_checked_on_the_header_before_decoding(
    data: bytes, reason: str, monkeypatch
) -> None:
    def no_decoding(*args):
        raise AssertionError("decoded before the header was checked")

    monkeypatch.setattr(messages.cv2, "imdecode", no_decoding)
    with pytest.raises(messages.ImageConversionError, match=reason):
        messages.compressed_to_rgb(_compressed(data), **LIMITS)


def test_raw_image_limits_refuse_before_touching_pixels() -> None:
    # The frame error: a legal 1x10000 rgb8 image (network input 384 x 3840000).
    wide = h.image_msg(np.zeros((1, 10000, 3), np.uint8), 0, FRAME)
    with pytest.raises(messages.ImageLimitError, match="aspect ratio 1e\\+04"):
        messages.image_to_rgb(wide, **LIMITS)
    # 65535 x 65535 announced with 12 bytes of data: refused by the limit, not the length.
    huge = h.image_msg(np.zeros((2, 2, 3), np.uint8), 0, FRAME)
    huge.width = huge.height = 65535
    huge.step = 3 * 65535
    with pytest.raises(messages.ImageLimitError, match="max_image_pixels"):
        messages.image_to_rgb(huge, **LIMITS)
    assert messages.image_to_rgb(wide).shape == (1, 10000, 3)  # no limits: as before


def test_point_step_beyond_a_c_int_is_a_conversion_error() -> None:
    cloud = h.cloud_msg(np.ones((4, 3)), 0, "lidar")
    cloud.point_step = 2**31
    with pytest.raises(messages.PointCloudConversionError, match="point_step 2147483648"):
        messages.pointcloud2_to_xyz(cloud)


def test_logging_across_severities_never_raises(capfd) -> None:
    """rclpy fixes a call site's severity at first use; _report logs each severity from its
    own call site, throttled per reason, and keeps the latest reasons."""
    import rclpy.logging

    from dpt_ros.ros.node import DepthNode

    stub = SimpleNamespace(
        _warn_lock=threading.Lock(),
        _reasons={},
        _warned={},
        get_logger=lambda: rclpy.logging.get_logger("reliability_test"),
    )
    from collections import OrderedDict

    stub._reasons = OrderedDict()
    order = ["warning", "error", "info", "warning", "error"]
    for i, severity in enumerate(order):
        DepthNode._report(stub, f"reason {i}", f"message {i} at {severity}", severity)
    for _ in range(3):  # the same reason again: counted, not logged again within the period
        DepthNode._report(stub, "reason 0", "message 0 again", "error")
    err = capfd.readouterr().err
    for i, severity in enumerate(order):
        assert f"message {i} at {severity}" in err
    assert "message 0 again" not in err
    assert stub._reasons["reason 0"] == (4, "message 0 again")


# ============================================================================ over DDS
class Rig:
    """A node subprocess in its own namespace and the shared test peer."""

    def __init__(self, peer: h.TestPeer, namespace: str, params: dict, **kwargs) -> None:
        self.peer, self.ns = peer, namespace
        self.scene = make_scene(WIDTH, HEIGHT, seed=3, layout="street")
        self.grey = h.encode_inverse_depth(self.scene.depth)
        self.proc = h.NodeProcess(
            {"model": STANDIN, "threads": 1, "diagnostics_period": 0.2, **params},
            namespace=namespace,
            **kwargs,
        )
        self._stamp = 1_700_000_000 * 10**9
        for topic in (topics.DEPTH_RELATIVE, topics.DEPTH_RELATIVE_INFO):
            peer.subscribe(Image if topic.endswith("image") else CameraInfo, self.t(topic))

    def t(self, topic: str) -> str:
        return f"{self.ns}/{topic}"

    def next_stamp(self) -> int:
        self._stamp += 100_000_000
        return self._stamp

    def valid_image(self, stamp: int, compressed: bool = False, grey: int | None = None):
        pixels = self.grey if grey is None else np.full_like(self.grey, grey)
        if not compressed:
            return h.image_msg(pixels, stamp, FRAME)
        msg = CompressedImage(format="png", data=_encoded(".png", pixels[:, :, ::-1]))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        msg.header.frame_id = FRAME
        return msg

    def image_topic(self, compressed: bool) -> str:
        return self.t(topics.IMAGE_COMPRESSED if compressed else topics.IMAGE)

    def send_frame(self, compressed: bool = False, lidar: bool = True, info: bool = True) -> int:
        stamp = self.next_stamp()
        if lidar:
            self.peer.publish(
                self.t("lidar/points"), h.cloud_msg(self.scene.lidar_points, stamp, "lidar")
            )
        if info:
            self.peer.publish(
                self.t("camera_info"), h.camera_info_msg(self.scene.camera, stamp, FRAME)
            )
        if lidar or info:
            time.sleep(0.03)
        self.peer.publish(self.image_topic(compressed), self.valid_image(stamp, compressed))
        return stamp

    def served(self, stamp: int, timeout: float = TIMEOUT) -> bool:
        topic = self.t(topics.DEPTH_RELATIVE)
        return bool(self.peer.wait_for(lambda: self.peer.by_stamp(topic, stamp), timeout))

    def status(self, condition=lambda s: True, timeout: float = TIMEOUT) -> DiagnosticStatus:
        name = f"{self.ns}/depth_node: depth"

        def latest():
            for msg in reversed(self.peer.messages("/diagnostics")):
                for status in msg.status:
                    if status.name == name:
                        return status if condition(status) else None
            return None

        status = self.peer.wait_for(latest, timeout)
        assert status is not None, f"no matching diagnostics from {name}\n{self.proc.log()[-3000:]}"
        return status


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def counters(status: DiagnosticStatus, *keys: str) -> dict[str, int]:
    v = values(status)
    return {k: int(v[k]) for k in keys}


@pytest.fixture(scope="module")
def peer():
    test_peer = h.TestPeer("reliability_peer")
    test_peer.subscribe(DiagnosticArray, "/diagnostics", depth=1000)
    try:
        yield test_peer
    finally:
        test_peer.close()


# ---------------------------------------------------------------------------- fuzz corpus
def _image_cases(rig: Rig) -> list[tuple[str, object, str | None]]:
    """(what, Image, expected reason or None when the message is legal and must be served)."""

    def image(**fields) -> Image:
        msg = rig.valid_image(rig.next_stamp())
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    row = WIDTH * 3
    return [
        ("height 0", image(height=0), "zero size"),
        ("width 0", image(width=0), "zero size"),
        ("height 2**32-1", image(height=2**32 - 1), "max_image_pixels"),
        ("width 2**32-1", image(width=2**32 - 1), "max_image_pixels"),
        ("65535x65535", image(width=65535, height=65535, step=3 * 65535), "max_image_pixels"),
        (
            "legal 1x10000 rgb8",
            image(width=10000, height=1, step=30000, data=array.array("B", bytes(30000))),
            "aspect ratio",
        ),
        ("encoding ''", image(encoding=""), "unsupported image encoding"),
        ("encoding xyz8", image(encoding="xyz8"), "unsupported image encoding"),
        ("encoding 32FC1", image(encoding="32FC1"), "unsupported image encoding"),
        ("encoding with NUL", image(encoding="rgb8\x00"), None),  # DDS strings end at NUL
        ("step 0", image(step=0), "is smaller than one row"),
        ("step row-1", image(step=row - 1), "is smaller than one row"),
        ("step 2**32-1", image(step=2**32 - 1), "data length is wrong"),
        ("data empty", image(data=array.array("B")), "data length is wrong"),
        ("data short", image(data=array.array("B", bytes(row * HEIGHT - 1))), "data length"),
        ("data long", image(data=array.array("B", bytes(row * HEIGHT + 1))), "data length"),
        ("yuv422 odd width", image(encoding="yuv422", width=63, step=126), "must be even"),
        ("mono16 odd data", image(encoding="mono16", step=WIDTH * 2), "data length"),
        ("bigendian rgb8", image(is_bigendian=1), None),
        ("bayer 2x1", _bayer(rig), None),
        ("frame_id 100k chars", image(header=_header(rig, "f" * 100_000)), None),
        ("frame_id unicode", image(header=_header(rig, "kamera/λ")), None),
    ]


def _header(rig: Rig, frame_id: str):
    from dpt_ros.ros.convert import make_header

    return make_header(rig.next_stamp(), frame_id)


def _bayer(rig: Rig) -> Image:
    msg = h.image_msg(np.zeros((1, 2, 3), np.uint8), rig.next_stamp(), FRAME)
    msg.encoding, msg.step, msg.data = "bayer_rggb8", 2, array.array("B", bytes(2))
    return msg


def _compressed_cases(rig: Rig) -> list[tuple[str, object, str | None]]:
    def compressed(data: bytes, fmt: str = "jpeg") -> CompressedImage:
        msg = rig.valid_image(rig.next_stamp(), compressed=True)
        msg.format, msg.data = fmt, data
        return msg

    cases: list[tuple[str, object, str | None]] = [
        ("no data", compressed(b""), "has no data"),
        (
            "random bytes",
            compressed(bytes(np.random.default_rng(4).integers(0, 255, 999))),
            "no header",
        ),
        (
            "895-byte JPEG claiming 16000x16000",
            compressed(_jpeg_claiming(16000, 16000)),
            "max_image_pixels",
        ),
        ("JPEG claiming 10000x1", compressed(_jpeg_claiming(10000, 1)), "aspect ratio"),
        ("JPEG height 0 (DNL)", compressed(_jpeg_claiming(10, 0)), "zero size"),
        ("PNG claiming 100000x1", compressed(_png_claiming(100000, 1), "png"), "aspect ratio"),
        ("truncated PNG", compressed(DECODABLE["png rgb"][0][:60], "png"), "could not be decoded"),
        (
            "compressedDepth",
            compressed(DECODABLE["png 16-bit"][0], "16UC1; compressedDepth png"),
            "holds depth",
        ),
        (
            "int32 TIFF",
            compressed(_encoded(".tiff", RGB[:, :, 0].astype(np.int32))),
            "int32 pixels",
        ),
        ("format garbage", compressed(DECODABLE["png rgb"][0], "\x00\xff garbage"), None),
    ]
    cases += [(name, compressed(data), None) for name, (data, _) in DECODABLE.items()]
    return cases


def _camera_info_cases(rig: Rig) -> list[tuple[str, object, str | None]]:
    def info(**fields) -> CameraInfo:
        msg = h.camera_info_msg(rig.scene.camera, rig.next_stamp(), FRAME)
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    k = np.array(rig.scene.camera.K, dtype=np.float64).reshape(-1)
    return [
        ("k zero", info(k=np.zeros(9)), "CameraInfo is not usable"),
        ("k NaN", info(k=np.where(np.arange(9) == 0, np.nan, k)), "CameraInfo is not usable"),
        ("k inf", info(k=np.where(np.arange(9) == 4, np.inf, k)), "CameraInfo is not usable"),
        ("width 0", info(width=0), "CameraInfo is not usable"),
        ("height 0", info(height=0), "CameraInfo is not usable"),
        ("distortion bogus", info(distortion_model="bogus", d=[0.1]), "CameraInfo is not usable"),
        ("d NaN", info(d=[np.nan, 0.0, 0.0, 0.0, 0.0]), "CameraInfo is not usable"),
        # Refused with a reason or used (no cloud when it does not fit the image): either.
        ("d 1000 values", info(d=[0.0] * 1000), EITHER),
        ("width 2**32-1", info(width=2**32 - 1), EITHER),
        ("binning 2**32-1", info(binning_x=2**32 - 1, binning_y=2**32 - 1), EITHER),
        ("p NaN", info(p=[np.nan] * 12), EITHER),
        ("frame_id empty", info(header=_header(rig, "")), None),
    ]


def _points_cases(rig: Rig) -> list[tuple[str, object, str | None]]:
    from sensor_msgs.msg import PointField

    def cloud(**fields) -> PointCloud2:
        msg = h.cloud_msg(rig.scene.lidar_points[:200], rig.next_stamp(), "lidar")
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    def field_change(index: int, **changes) -> list:
        out = []
        for i, f in enumerate(h.cloud_msg(np.ones((1, 3)), 0, "lidar").fields):
            if i == index:
                for name, value in changes.items():
                    setattr(f, name, value)
            out.append(f)
        return out

    xyz = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, n in enumerate("xyz")
    ]
    return [
        ("point_step 2**31", cloud(point_step=2**31), "PointCloud2"),
        ("point_step 2**32-1", cloud(point_step=2**32 - 1), "PointCloud2"),
        ("point_step 0", cloud(point_step=0), "PointCloud2"),
        ("row_step 0", cloud(row_step=0), "row_step"),
        ("row_step 2**32-1", cloud(row_step=2**32 - 1), "PointCloud2"),
        ("height 2**32-1", cloud(height=2**32 - 1), "PointCloud2"),
        ("width 2**32-1", cloud(width=2**32 - 1), "PointCloud2"),
        ("data empty", cloud(data=array.array("B")), "data length"),
        ("data short", cloud(data=array.array("B", bytes(100))), "data length"),
        ("no fields", cloud(fields=[]), "lacks field"),
        ("x datatype 0", cloud(fields=field_change(0, datatype=0)), "unknown datatype"),
        ("x datatype 99", cloud(fields=field_change(0, datatype=99)), "unknown datatype"),
        ("x INT8", cloud(fields=field_change(0, datatype=PointField.INT8)), "must be FLOAT32"),
        ("x offset 2**31", cloud(fields=field_change(0, offset=2**31)), "does not fit"),
        ("x count 2**31", cloud(fields=field_change(0, count=2**31)), "PointCloud2"),
        ("x twice", cloud(fields=[*xyz, xyz[0]]), "appears twice"),
        ("bigendian", cloud(is_bigendian=True), None),
        ("empty cloud", cloud(width=0, row_step=0, data=array.array("B")), None),
    ]


def _run_corpus(rig: Rig, compressed: bool) -> None:
    image_cases = _compressed_cases(rig) if compressed else _image_cases(rig)
    cases = [
        *((rig.image_topic(compressed), c) for c in image_cases),
        *((rig.t("camera_info"), c) for c in _camera_info_cases(rig)),
        *((rig.t("lidar/points"), c) for c in _points_cases(rig)),
    ]
    before = rig.status()
    keys = (
        "images_in",
        "frames_processed",
        "frame_errors",
        "refused.image_limits",
        "malformed.image",
        "malformed.camera_info",
        "malformed.points",
        "dropped.slot",
        "dropped.reader_queue",
        "worker_restarts",
    )
    start = counters(before, *keys)
    served_legal = 0
    for topic, (what, msg, reason) in cases:
        rig.peer.publish(topic, msg)
        if reason is None and topic == rig.image_topic(compressed):
            # A legal (if unusual) image is served itself.
            stamp = h.stamp_ns(msg)
            assert rig.served(stamp), (what, rig.proc.log()[-3000:])
            served_legal += 1
        time.sleep(0.02)
        stamp = rig.send_frame(compressed)
        assert rig.served(stamp), (what, rig.proc.log()[-3000:])
        assert rig.proc.alive, (what, rig.proc.log()[-3000:])
    expected = {
        "image": sum(1 for t, c in cases if t == rig.image_topic(compressed) and c[2]),
        "camera_info": sum(1 for t, c in cases if t.endswith("camera_info") and c[2]),
        "points": sum(1 for t, c in cases if t.endswith("points") and c[2]),
    }
    either = sum(1 for t, c in cases if t.endswith("camera_info") and c[2] == EITHER)
    valid_frames = len(cases) + served_legal
    end = rig.status(
        lambda s: int(values(s)["frames_processed"]) >= start["frames_processed"] + valid_frames
    )
    delta = {k: v - start[k] for k, v in counters(end, *keys).items()}
    log = rig.proc.log()
    assert "Traceback" not in log and "[ERROR]" not in log, log[-5000:]
    assert delta["frame_errors"] == 0 and delta["worker_restarts"] == 0, delta
    assert delta["frames_processed"] == valid_frames, delta
    assert delta["dropped.reader_queue"] == 0, delta
    # Every bad image was refused (limits) or skipped (malformed), unless a newer frame
    # replaced it in the slot first: each one is accounted for, none was processed.
    refused = delta["refused.image_limits"] + delta["malformed.image"]
    assert refused + delta["dropped.slot"] == expected["image"], (delta, expected)
    assert refused >= expected["image"] - 2, (delta, expected)
    assert delta["images_in"] == valid_frames + expected["image"], delta
    assert 0 <= delta["malformed.camera_info"] - expected["camera_info"] <= either, delta
    assert delta["malformed.points"] == expected["points"], delta
    for topic, (what, _, reason) in cases:
        if reason and not topic.endswith(("image", "compressed")):
            assert reason in log, (what, reason)
    assert end.level != DiagnosticStatus.ERROR, values(end)
    assert any(k.startswith("reason.") for k in values(end)), values(end)


QOS_OVERRIDES = {
    "qos_overrides./fuzz_raw/image.subscription.reliability": "reliable",
    "qos_overrides./fuzz_raw/depth_relative/image.publisher.durability": "transient_local",
    "qos_overrides./fuzz_raw/depth_relative/image.publisher.depth": 3,
}


@pytest.fixture(scope="module")
def rigs(peer, tmp_path_factory):
    """Every long-lived node of this module, started together (start-up is the slow part)."""
    import yaml

    params_file = tmp_path_factory.mktemp("qos") / "qos.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": QOS_OVERRIDES}}))
    lidar = {"use_lidar": True, "lidar_transform_source": "parameters", "input_depth": 100}
    rigs = {}
    for name, transport in (("raw", "raw"), ("compressed", "compressed")):
        scene = make_scene(WIDTH, HEIGHT, seed=3, layout="street")
        # An integer array for the transform, as YAML writes one: accepted at start-up.
        matrix = [int(v) if float(v).is_integer() else float(v) for v in scene.T_cam_lidar.flat]
        params = {**lidar, "image_transport": transport, "lidar_T_cam_lidar": matrix}
        rigs[name] = Rig(
            peer,
            f"/fuzz_{name}",
            params,
            extra_args=["--params-file", str(params_file)] if name == "raw" else (),
        )
    rigs["supervised"] = Rig(
        peer, "/supervised", {"model": "tests.standin_faults:on_demand_faults"}
    )
    for sig in ("sigint", "sigterm"):
        rigs[sig] = Rig(peer, f"/{sig}", {"model": "tests.standin_faults:slow_grey"})
    try:
        for name, rig in rigs.items():
            compressed = name == "compressed"
            inputs = {
                rig.image_topic(compressed): CompressedImage if compressed else Image,
                rig.t("camera_info"): CameraInfo,
                rig.t("lidar/points"): PointCloud2,
            }
            for topic, msg_type in inputs.items():
                peer.publisher(msg_type, topic)
            if name not in ("raw", "compressed"):
                del inputs[rig.t("lidar/points")]  # LiDAR is off in these
            assert peer.wait_for_subscribers(inputs, TIMEOUT), rig.proc.log()
            assert peer.wait_for_publishers([rig.t(topics.DEPTH_RELATIVE)], TIMEOUT)
        yield rigs
    finally:
        for rig in rigs.values():  # all at once: each takes seconds to wind torch down
            if rig.proc.alive:
                rig.proc.process.send_signal(signal.SIGINT)
        for rig in rigs.values():
            rig.proc.__exit__()


def test_fuzz_corpus_raw_transport(rigs) -> None:
    _run_corpus(rigs["raw"], compressed=False)


def test_fuzz_corpus_compressed_transport(rigs) -> None:
    _run_corpus(rigs["compressed"], compressed=True)


def test_qos_overrides_take_effect(rigs, peer) -> None:
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    rig = rigs["raw"]
    subs = peer.node.get_subscriptions_info_by_topic(rig.t("image"))
    ours = [s for s in subs if s.node_name == "depth_node" and s.node_namespace == rig.ns]
    # The default is best effort.
    assert ours and ours[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    pubs = peer.node.get_publishers_info_by_topic(rig.t(topics.DEPTH_RELATIVE))
    ours = [p for p in pubs if p.node_namespace == rig.ns]
    assert ours and ours[0].qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
    # The other node kept the defaults.
    other = rigs["compressed"]
    pubs = peer.node.get_publishers_info_by_topic(other.t(topics.DEPTH_RELATIVE))
    assert pubs and pubs[0].qos_profile.durability == DurabilityPolicy.VOLATILE
    # The overrides are read-only parameters with the values given.
    node = f"{rig.ns}/depth_node"
    assert peer.get_parameters(node, list(QOS_OVERRIDES)) == list(QOS_OVERRIDES.values())


def test_run_time_values_are_typed_as_at_start_up(rigs, peer) -> None:
    """What ``ros2 param set`` sends: integers for floats, ``[]`` as an empty bool array, the
    empty name; the start-up value (an integer array in the command line) is floats."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import get_parameter_value

    rig = rigs["raw"]
    node = f"{rig.ns}/depth_node"
    (start_value,) = peer.get_parameters(node, ["lidar_T_cam_lidar"])
    assert all(isinstance(v, float) for v in start_value)
    client = peer.node.create_client(SetParameters, f"{node}/set_parameters")

    def ros2_param_set(name: str, text: str):
        request = SetParameters.Request(
            parameters=[ParameterMsg(name=name, value=get_parameter_value(text))]
        )
        future = client.call_async(request)
        assert peer.wait_for(future.done, TIMEOUT)
        return future.result().results[0]

    try:
        assert client.wait_for_service(timeout_sec=TIMEOUT)
        identity = "[" + ", ".join(str(int(v)) for v in np.eye(4).flat) + "]"
        for name, text in (("lidar_T_cam_lidar", identity), ("align.gate", "1")):
            result = ros2_param_set(name, text)
            assert result.successful, (name, result.reason)
        assert peer.get_parameters(node, ["lidar_T_cam_lidar", "align.gate"]) == [
            list(np.eye(4).flat),
            1.0,
        ]
        result = ros2_param_set("lidar_translation", "[]")  # already empty: stays valid
        assert result.successful, result.reason
        result = ros2_param_set("", "1")
        assert not result.successful and "unknown parameter ''" in result.reason
    finally:
        peer.node.destroy_client(client)
        reset = {"lidar_T_cam_lidar": start_value, "align.gate": 0.3}
        assert all(r.successful for r in peer.set_parameters(node, reset))
    (value,) = peer.get_parameters(node, ["lidar_T_cam_lidar"])
    assert value == start_value


# ---------------------------------------------------------------------------- supervision
def test_a_failing_model_and_a_dead_worker_are_supervised(rigs, peer) -> None:
    rig = rigs["supervised"]
    image = rig.image_topic(False)
    # A warning first (no camera_info), then a frame error: the dying order.
    assert rig.served(rig.send_frame(lidar=False, info=False))
    peer.publish(image, rig.valid_image(rig.next_stamp(), grey=faults.RAISE_GREY))
    failing = rig.status(lambda s: s.level == DiagnosticStatus.ERROR)
    assert "frames are failing" in failing.message and "on demand" in failing.message
    time.sleep(0.6)  # no input: still ERROR (the old node went back to OK)
    assert rig.status().level == DiagnosticStatus.ERROR
    for _ in range(10):  # every later frame is served, with warnings between errors
        assert rig.served(rig.send_frame(lidar=False, info=False)), rig.proc.log()[-3000:]
    rig.status(lambda s: s.level != DiagnosticStatus.ERROR)  # served again: healthy
    # SystemExit ends the worker thread: the supervisor restarts it and says so.
    peer.publish(image, rig.valid_image(rig.next_stamp(), grey=faults.EXIT_GREY))
    died = rig.status(lambda s: "worker thread died" in s.message)
    assert died.level == DiagnosticStatus.ERROR
    assert int(values(died)["worker_restarts"]) == 1
    for _ in range(3):
        assert rig.served(rig.send_frame(lidar=False, info=True)), rig.proc.log()[-3000:]
    healthy = rig.status(lambda s: s.level != DiagnosticStatus.ERROR)
    assert int(values(healthy)["frame_errors"]) == 1
    assert rig.proc.alive
    assert rig.proc.stop() == 0
    log = rig.proc.log()
    assert "frame failed: RuntimeError: stand-in failure on demand" in log
    assert "the worker thread died (SystemExit" in log
    assert "no camera_info within" in log
    assert "Logger severity cannot be changed" not in log


def test_drops_are_counted_by_place(rigs, peer) -> None:
    """A burst: whatever did not reach the callback is counted from the publisher's sequence
    gaps (reader queue), whatever reached it was processed or replaced in the slot."""
    rig = rigs["sigint"]  # input_depth 1, best effort (the camera-driver default), 0.4 s/frame
    assert rig.served(rig.send_frame(lidar=False, info=False))
    keys = ("images_in", "frames_processed", "frames_idle", "dropped.slot", "dropped.reader_queue")
    before = counters(rig.status(), *keys)
    burst = [rig.next_stamp() for _ in range(60)]
    for stamp in burst:
        peer.publish(rig.image_topic(False), rig.valid_image(stamp))
    assert rig.served(burst[-1])  # the newest frame always gets through

    def settled(status: DiagnosticStatus) -> bool:
        now = counters(status, *keys)
        seen = now["images_in"] + now["dropped.reader_queue"]
        handled = now["frames_processed"] + now["frames_idle"] + now["dropped.slot"]
        total = before["images_in"] + before["dropped.reader_queue"] + len(burst)
        return seen >= total and handled == now["images_in"]

    after = rig.status(settled)
    delta = {k: v - before[k] for k, v in counters(after, *keys).items()}
    assert delta["images_in"] + delta["dropped.reader_queue"] == len(burst), delta
    assert delta["dropped.reader_queue"] > 0 or delta["dropped.slot"] > 0, delta
    assert delta["frames_processed"] < len(burst), delta
    assert "rate_sent_hz" in values(after) and "rate_in_hz" in values(after)


# ---------------------------------------------------------------------------- signals
def test_sigint_and_sigterm_mid_processing_exit_0_with_one_info_line(rigs) -> None:
    signalled = {sig: rigs[sig.name.lower()] for sig in (signal.SIGINT, signal.SIGTERM)}
    for rig in signalled.values():
        assert rig.served(rig.send_frame(lidar=False, info=False))
    for sig, rig in signalled.items():
        # A frame in progress (the stand-in sleeps 0.4 s in forward), then the signal.
        rig.send_frame(lidar=False, info=False)
        time.sleep(0.15)
        rig.proc.process.send_signal(sig)
    for sig, rig in signalled.items():
        code = rig.proc.wait(30)
        log = rig.proc.log()
        assert code == 0, (sig, log)
        assert "ERROR" not in log and "Traceback" not in log, log
        stopped = [line for line in log.splitlines() if "stopped (" in line]
        assert len(stopped) == 1 and f"stopped ({sig.name})" in stopped[0], log
        assert stopped[0].startswith("[INFO]"), stopped


# ---------------------------------------------------------------------------- start-up
def test_arguments_before_ros_args_are_refused(tmp_path: Path, capfd) -> None:  # noqa: ANN001
    """rclpy ignores what is not inside --ros-args: a --params-file before it was dropped
    without a word and the node ran on defaults."""
    from dpt_ros.ros import node

    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    threads: 1\n")
    argv = ["depth_node", "--params-file", str(params), "--ros-args", "-p", "threads:=1"]
    assert node.main(argv) == 1  # refused before rclpy.init: nothing to shut down
    err = capfd.readouterr().err
    assert f"cannot start: unexpected argument(s) '--params-file {params}'" in err
    assert "after --ros-args" in err and "Traceback" not in err


def test_start_up_faults_end_with_one_line(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("depth_node: [\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("/**:\n  ros__parameters:\n    qos_overrides./imag.subscription.depth: 3\n")
    plugin = {"model": STANDIN, "threads": 1}
    cases = {
        "missing params file": (
            plugin,
            ["--params-file", str(tmp_path / "none.yaml")],
            "no such file",
        ),
        "invalid params file": (
            plugin,
            ["--params-file", str(bad_yaml)],
            "Couldn't parse params file",
        ),
        "fp16 on the CPU": ({**plugin, "precision": "fp16"}, [], "'fp16' needs CUDA"),
        "weights /dev/zero": (
            {"model": "dpt_base", "weights": "/dev/zero", "threads": 1},
            [],
            "/dev/zero is a device, pipe or socket",
        ),
        "qos override typo": (
            plugin,
            ["--params-file", str(typo)],
            "match no publisher or subscription",
        ),
    }
    procs = {name: h.NodeProcess(p, extra_args=a) for name, (p, a, _) in cases.items()}
    try:
        for name, (_, _, message) in cases.items():
            code = procs[name].wait(TIMEOUT)
            log = procs[name].log()
            assert code == 1, (name, log)
            lines = [line for line in log.splitlines() if re.match(r"\[(ERROR|FATAL)\]", line)]
            assert len(lines) == 1, (name, log)
            assert "cannot start" in lines[0] and message in lines[0], (name, log)
            assert "Traceback" not in log, (name, log)
    finally:
        for proc in procs.values():
            proc.__exit__()
