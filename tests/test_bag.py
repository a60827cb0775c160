"""The offline bag tool (dpt_ros.bag): bags in, bags (+ exports) out, checked against truth.

Most tests write a small synthetic drive (``dpt_ros.bag.synthetic_bag``) whose images encode
the scene's inverse depth as grey levels; the ``gray_inverse_depth`` stand-in turns them back
into an affine map of inverse depth, so after the LiDAR fit (10 % outliers, parallax between
LiDAR and camera) every output pixel and cloud point is checked against the ray-cast truth. The
same for compressed images, a ROS 1 bag, a dynamic /tf and two cameras. The KITTI bags and the
ROS 1 bag of ../shared run through the CLI when present.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dpt_ros import topics
from dpt_ros.bag import BagInputError, BagJob, BagOptions, merge_bags, process_bag
from dpt_ros.bag.cli import main
from dpt_ros.bag.synthetic_bag import CameraSpec, write_synthetic_bag
from dpt_ros.messages import camera_info_to_camera, image_to_depth, pointcloud2_to_xyz
from tests.ros_helpers import NEAR_M, encode_inverse_depth, gray_inverse_depth

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "dpt_ros" / "data" / "sample_drive"
SMALL = CameraSpec("/cam", 96, 64)
# Fit tolerance on inverse depth, in grey levels: 0.5 from the 8-bit encoding plus the fit.
INVERSE_TOLERANCE_GREY = 1.2


def encode(scene):  # noqa: ANN001, ANN201 - the bag writer's encode hook
    return encode_inverse_depth(scene.depth)


def slow_gray_inverse_depth():  # noqa: ANN201 - a plug-in for the kill/resume test
    """gray_inverse_depth that takes 0.3 s per batch, so a run can be killed half-way."""
    import torch

    inner = gray_inverse_depth()

    class Slow(torch.nn.Module):
        output_semantics = "relative_inverse_depth"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.3)
            return inner(x)

    return Slow()


def options(**kwargs) -> BagOptions:  # noqa: ANN003
    overrides = {"net_size": 64, "align.smoothing": 0.0, **kwargs.pop("overrides", {})}
    return BagOptions.from_config(None, overrides, **kwargs)


def read(path: Path) -> list[tuple[str, str, int, object, bytes]]:
    """(topic, type, log time, message, raw bytes) of every message."""
    from rosbags.highlevel import AnyReader

    with AnyReader([path]) as reader:
        return [
            (c.topic, c.msgtype, t, reader.deserialize(raw, c.msgtype), bytes(raw))
            for c, t, raw in reader.messages()
        ]


def stamp(msg) -> int:  # noqa: ANN001
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def tree_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            digest.update(p.name.encode() + p.read_bytes())
    return digest.hexdigest()


def check_against_truth(out: Path, truth, cameras, frame_ids=None) -> None:  # noqa: ANN001
    """Every camera frame: depth per pixel and cloud per point agree with the truth."""
    messages = read(out)
    by_topic: dict[str, dict[int, object]] = {}
    logs: dict[tuple[str, int], int] = {}
    for topic, _, log, msg, _ in messages:
        if not hasattr(msg, "header"):
            continue  # /tf, /tf_static
        by_topic.setdefault(topic, {})[stamp(msg)] = msg
        logs[(topic, stamp(msg))] = log
    for frame in truth:
        spec = cameras[frame.camera]
        ns = spec.namespace
        depth_msg = by_topic[f"{ns}/{topics.DEPTH}"][frame.stamp_ns]
        assert depth_msg.header.frame_id == spec.frame_id
        image_topic = f"{ns}/image_raw" + ("/compressed" if spec.compressed else "")
        for name in (
            topics.DEPTH,
            topics.DEPTH_RELATIVE,
            topics.DEPTH_COLOR,
            topics.POINTS,
            topics.DEPTH_INFO,
        ):
            msg = by_topic[f"{ns}/{name}"][frame.stamp_ns]
            assert msg.header.frame_id == spec.frame_id, name
            assert logs[(f"{ns}/{name}", frame.stamp_ns)] == logs[(image_topic, frame.stamp_ns)]
        true = frame.scene.depth
        depth = image_to_depth(depth_msg)
        valid = np.isfinite(true) & (true < 150)
        assert np.isfinite(depth[valid]).mean() > 0.99
        both = valid & np.isfinite(depth)
        grey_error = np.abs(1.0 / depth[both] - 1.0 / true[both]) * 255.0 * NEAR_M
        assert grey_error.max() < INVERSE_TOLERANCE_GREY, (ns, frame.stamp_ns, grey_error.max())
        # The cloud: metric depth at stride 2, in the optical frame.
        cloud = by_topic[f"{ns}/{topics.POINTS}"][frame.stamp_ns]
        xyz = pointcloud2_to_xyz(cloud, np.float64)
        camera = camera_info_to_camera(by_topic[f"{ns}/{topics.DEPTH_INFO}"][frame.stamp_ns])
        uv, ok = camera.project(xyz)
        cols, rows = np.rint(uv[ok]).astype(int).T
        assert ok.all() and (cols % 2 == 0).all() and (rows % 2 == 0).all()
        z_true = true[rows, cols]
        keep = np.isfinite(z_true) & (z_true < 150)
        cloud_grey = np.abs(1 / xyz[ok][keep, 2] - 1 / z_true[keep]) * 255.0 * NEAR_M
        assert cloud_grey.max() < INVERSE_TOLERANCE_GREY
        assert keep.sum() >= 0.99 * np.isfinite(true[::2, ::2]).sum() - np.sum(
            true[::2, ::2] >= 150
        )


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A 6-frame encoded drive (MCAP) with 10 % LiDAR outliers: (path, truth)."""
    path = tmp_path_factory.mktemp("drive") / "drive"
    truth = write_synthetic_bag(
        path,
        frames=6,
        cameras=(SMALL,),
        lidar_rings=32,
        lidar_points_per_ring=1024,
        lidar_outlier_share=0.1,
        encode=encode,
    )
    return path, truth


# ============================================================================ against truth
def test_depth_and_cloud_match_the_truth(drive, tmp_path: Path) -> None:  # noqa: ANN001
    path, truth = drive
    before = tree_hash(path)
    report = process_bag(path, tmp_path / "out", options(), depth_model=gray_inverse_depth())
    assert tree_hash(path) == before  # the input is untouched
    assert (report.frames_in, report.frames_out, report.fits_ok) == (6, 6, 6)
    assert report.median_scale == pytest.approx(1 / NEAR_M, rel=0.05)
    check_against_truth(tmp_path / "out", truth, (SMALL,))
    # Input topics copied unchanged, byte for byte.
    inputs = {(t, log): raw for t, _, log, _, raw in read(path)}
    outputs = {(t, log): raw for t, _, log, _, raw in read(tmp_path / "out")}
    assert all(outputs[key] == raw for key, raw in inputs.items())
    assert not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize(
    "variant",
    ["compressed_sqlite3", "ros1", "dynamic_tf", "two_cameras"],
)
def test_variants_match_the_truth(variant: str, tmp_path: Path) -> None:
    cameras = (SMALL,)
    kwargs: dict = {"storage": "mcap"}
    image_topics: tuple[str, ...] = ()
    name = "bag"
    if variant == "compressed_sqlite3":
        cameras = (CameraSpec("/cam", 96, 64, compressed=True),)
        kwargs["storage"] = "sqlite3"
    elif variant == "ros1":
        kwargs["storage"] = "ros1"
        name = "bag.bag"
    elif variant == "dynamic_tf":
        kwargs["dynamic_tf"] = True
    else:
        cameras = (SMALL, CameraSpec("/cam2", 64, 64, fov_deg=60.0, frame_id="camera2_optical"))
        image_topics = ("/cam/image_raw", "/cam2/image_raw")
    truth = write_synthetic_bag(
        tmp_path / name,
        frames=3,
        cameras=cameras,
        lidar_rings=32,
        lidar_points_per_ring=1024,
        lidar_outlier_share=0.1,
        encode=encode,
        **kwargs,
    )
    report = process_bag(
        tmp_path / name,
        tmp_path / "out",
        options(image_topics=image_topics),
        depth_model=gray_inverse_depth(),
    )
    assert report.frames_out == len(truth) and report.fits_ok == len(truth)
    where = "/tf" if variant == "dynamic_tf" else "/tf_static"
    assert any(f"the bag's {where}" in note for note in report.notes)
    check_against_truth(tmp_path / "out", truth, cameras)
    if variant == "ros1":  # converted to ROS 2 types: a ROS 2 header has no seq
        types = {t: ty for t, ty, *_ in read(tmp_path / "out")}
        assert types["/tf_static"] == "tf2_msgs/msg/TFMessage"


def test_parameter_transform_from_config_when_the_bag_has_no_tf(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    truth = write_synthetic_bag(
        bag, frames=2, cameras=(SMALL,), encode=encode, lidar_rings=32, lidar_points_per_ring=1024
    )
    stripped = tmp_path / "no_tf"
    _copy_without(bag, stripped, "/tf_static")
    T = truth[0].scene.T_cam_lidar
    config = tmp_path / "params.yaml"
    config.write_text(
        "/**:\n  ros__parameters:\n    lidar_T_cam_lidar: "
        f"{[float(v) for v in T.reshape(-1)]}\n    net_size: 64\n"
    )
    code = main(
        [
            str(stripped),
            "--out",
            str(tmp_path / "out"),
            "--config",
            str(config),
            "--model",
            "tests.ros_helpers:gray_inverse_depth",
            "--quiet",
        ]
    )
    assert code == 0
    check_against_truth(tmp_path / "out", truth, (SMALL,))


def _copy_without(source: Path, target: Path, topic: str) -> None:
    from rosbags.rosbag2 import Writer

    from dpt_ros.bag.reading import open_bag

    with open_bag(source) as reader, Writer(target, version=9) as writer:
        conns = {}
        for c in reader.connections:
            if c.topic != topic:
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=reader.typestore)
        for c, t, raw in reader.messages():
            if c.id in conns:
                writer.write(conns[c.id], t, raw)


def test_malformed_messages_are_skipped_and_counted(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Writer

    from dpt_ros.bag.reading import open_bag

    bag = tmp_path / "bag"
    write_synthetic_bag(bag, frames=4, cameras=(SMALL,), encode=encode)
    broken = tmp_path / "broken"
    images = 0
    with open_bag(bag) as reader, Writer(broken, version=9) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=reader.typestore)
                 for c in reader.connections}  # fmt: skip
        for c, t, raw in reader.messages():
            if c.topic == "/cam/image_raw":
                images += 1
                if images == 2:  # a data length that does not match step * height
                    msg = reader.deserialize(raw, c.msgtype)
                    msg.data = msg.data[:-7]
                    raw = reader.typestore.serialize_cdr(msg, c.msgtype)
                elif images == 3:  # bytes that do not deserialise at all
                    raw = bytes(raw[:40])
            writer.write(conns[c.id], t, raw)
    report = process_bag(broken, tmp_path / "out", options(), depth_model=gray_inverse_depth())
    assert (report.frames_in, report.frames_out) == (4, 2)
    reasons = "; ".join(report.skipped)
    assert "frame: malformed image: Image data length is wrong" in reasons
    assert "frame: malformed image (cannot be deserialised)" in reasons
    assert report.malformed["malformed image"] == 2
    # Both are still copied unchanged into the output.
    with open_bag(tmp_path / "out") as reader:
        copied = [bytes(raw) for c, _, raw in reader.messages() if c.topic == "/cam/image_raw"]
    with open_bag(broken) as reader:
        assert copied == [bytes(r) for c, _, r in reader.messages() if c.topic == "/cam/image_raw"]


# ============================================================================ real bags
@pytest.mark.slow
def test_kitti_bags(sampledata_dir: Path, tmp_path: Path) -> None:
    bags = sampledata_dir / "rosbag2"
    for name, image in (
        ("kitti_2frames_raw_sqlite3", "image_raw"),
        ("kitti_2frames_png_mcap", "image_raw/compressed"),
    ):
        if not (bags / name).is_dir():
            pytest.skip(f"{name} is not in ../shared/sampledata/rosbag2")
        out = tmp_path / name
        code = main(
            [
                str(bags / name),
                "--out",
                str(out),
                "--config",
                str(REPO / "config" / "kitti.yaml"),
                "--model",
                "tests.ros_helpers:ground_rows",
                "--net-size",
                "64",
                "--quiet",
                "--export",
                "png,preview",
                "--png-format",
                "kitti",
            ]
        )
        assert code == 0
        messages = read(out)
        ns = "/kitti/camera_color_left"
        images = [m for t, _, _, m, _ in messages if t == f"{ns}/{image}"]
        depths = [m for t, _, _, m, _ in messages if t == f"{ns}/{topics.DEPTH}"]
        assert len(images) == 2 and len(depths) >= 1
        for d in depths:
            assert d.header.frame_id == "camera_color_left" and (d.width, d.height) == (1242, 375)
        # The ground-rows stand-in is right on the road: there the depth agrees with the LiDAR.
        depth = image_to_depth(depths[0])
        assert np.nanmedian(depth[300:, 500:700]) == pytest.approx(8.0, rel=0.5)
        pngs = list((out / "exports" / "kitti_camera_color_left" / "depth_png").glob("*.png"))
        assert pngs and (out / "exports" / "kitti_camera_color_left" / "preview.mp4").is_file()


def test_ros1_bag_without_camera_says_what_it_has(
    sampledata_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bag = sampledata_dir / "ros1" / "embag_test.bag"
    if not bag.is_file():
        pytest.skip("../shared/sampledata/ros1/embag_test.bag is absent")
    assert main([str(bag), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no image topic" in err and "/luminar_pointcloud" in err and str(bag) in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_bundled_sample(tmp_path: Path) -> None:
    report = process_bag(
        SAMPLE,
        tmp_path / "out",
        BagOptions.from_config(None, {"net_size": 64}, exports=frozenset({"preview", "png"})),
        depth_model=_ground_rows(),
    )
    assert report.frames_in == report.frames_out == 20
    assert report.fits_ok >= 15  # a level camera on a flat street: the road fits
    names = {t for t, *_ in read(tmp_path / "out")}
    assert {"/camera/image_raw", "/lidar/points", "/tf_static", "/camera/depth/image"} <= names
    exports = tmp_path / "out" / "exports" / "camera"
    import cv2

    sheet = cv2.imread(str(exports / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 200
    video = cv2.VideoCapture(str(exports / "preview.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    assert len(list((exports / "depth_png").glob("*.png"))) == 20


def _ground_rows():  # noqa: ANN202
    from tests.ros_helpers import ground_rows

    return ground_rows()


# ============================================================================ safety
def test_existing_output_is_refused_and_overwrite_replaces_it(
    drive, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    path, _ = drive
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    args = [
        str(path),
        "--out",
        str(out),
        "--model",
        "tests.ros_helpers:gray_inverse_depth",
        "--net-size",
        "64",
        "--quiet",
    ]
    assert main(args) == 2
    assert "exists; give --overwrite" in capsys.readouterr().err
    assert (out / "keep").read_text() == "x"
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "keep").exists() and (out / "metadata.yaml").is_file()


def test_unwritable_output_is_one_line_and_leaves_the_input(drive, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path, _ = drive
    before = {p: p.read_bytes() for p in path.iterdir()}
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output's folder should be")
    args = ["--model", "tests.ros_helpers:gray_inverse_depth", "--net-size", "64", "--quiet"]
    assert main([str(path), "--out", str(blocker / "out"), *args]) == 2
    assert capsys.readouterr().err == (
        f"dpt_bag: error: {blocker / 'out'}: the folder {blocker} is not a folder\n"
    )
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root writes anyway; /proc takes no new folders
        read_only = Path("/proc")
    out = read_only / f"dpt_bag_test_{os.getpid()}"
    assert main([str(path), "--out", str(out), *args]) == 2  # was 1 with a raw OSError
    err = capsys.readouterr().err
    assert err.startswith(f"dpt_bag: error: {out}: cannot write {out}.partial: ")
    assert len(err.splitlines()) == 1 and "Error:" not in err
    assert not out.exists() and {p: p.read_bytes() for p in path.iterdir()} == before


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dpt_ros.bag", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_leaves_no_output_and_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_synthetic_bag(bag, frames=12, cameras=(SMALL,), encode=encode, lidar_outlier_share=0.1)
    common = [
        "--model",
        "tests.test_bag:slow_gray_inverse_depth",
        "--net-size",
        "64",
        "--segment-frames",
        "3",
        "--batch-size",
        "2",
        "--quiet",
    ]
    out = tmp_path / "out"
    proc = _cli(str(bag), "--out", str(out), *common)
    journal = tmp_path / "out.partial" / "journal.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and '"next_ns": 1' in journal.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and journal.is_file()
    resumed = _cli(str(bag), "--out", str(out), *common, "--resume", "--report",
                   str(tmp_path / "resumed.json"))  # fmt: skip
    assert resumed.wait(120) == 0, resumed.communicate()
    reference = _cli(str(bag), "--out", str(tmp_path / "reference"), *common, "--report",
                     str(tmp_path / "reference.json"))  # fmt: skip
    assert reference.wait(120) == 0, reference.communicate()
    import json

    summaries = [json.loads((tmp_path / f"{name}.json").read_text())["bags"][0]
                 for name in ("resumed", "reference")]  # fmt: skip
    keys = ("frames_in", "frames_out", "fits_tried", "fits_ok", "median_scale", "skipped")
    assert [{k: r[k] for k in keys} for r in summaries][0] == {k: summaries[1][k] for k in keys}
    assert summaries[0]["resumed_from_frame"] > 0
    got = sorted((t, log, raw) for t, _, log, _, raw in read(out))
    want = sorted((t, log, raw) for t, _, log, _, raw in read(tmp_path / "reference"))
    assert len(got) == len(want) and got == want


def test_truncated_bag_names_the_file(drive, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path, _ = drive
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    mcap = next(broken.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main([str(broken), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_corrupt_middle_stops_or_is_skipped_with_skip_bad(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    bag = tmp_path / "bag"
    # 256x192 frames: the MCAP has several chunks, and one in the middle is damaged.
    write_synthetic_bag(bag, frames=12, cameras=(CameraSpec("/cam", 256, 192),))
    mcap = next(bag.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    middle = int(len(data) * 0.55)
    data[middle : middle + 2000] = bytes(b ^ 0x5A for b in data[middle : middle + 2000])
    mcap.write_bytes(bytes(data))
    args = [str(bag), "--model", "tests.ros_helpers:gray_inverse_depth", "--net-size", "64"]
    assert main([*args, "--out", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{bag}: the bag is corrupt or truncated after log time" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "a.partial").exists()
    report = tmp_path / "report.json"
    assert main([*args, "--out", str(tmp_path / "b"), "--skip-bad", "--report", str(report)]) == 0
    import json

    data = json.loads(report.read_text())["bags"][0]
    assert data["bad_messages"] and 0 < data["frames_out"] < 12
    assert "unreadable:" in capsys.readouterr().out


@pytest.mark.slow
def test_two_bags_with_two_workers(drive, tmp_path: Path) -> None:  # noqa: ANN001
    path, _ = drive
    second = tmp_path / "second"
    write_synthetic_bag(second, frames=2, cameras=(SMALL,), encode=encode, storage="sqlite3")
    out = tmp_path / "outs"
    proc = _cli(
        str(path),
        str(second),
        "--out",
        str(out),
        "--workers",
        "2",
        "--model",
        "tests.ros_helpers:gray_inverse_depth",
        "--net-size",
        "64",
        "--report",
        str(tmp_path / "report.json"),
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert (out / "drive" / "metadata.yaml").is_file() and (
        out / "second" / "metadata.yaml"
    ).is_file()
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert [b["frames_out"] for b in report["bags"]] == [6, 2]
    assert report["total"]["frames_out"] == 8 and "frames: 6 in, 6 out" in stdout


def test_chunks_merged_equal_the_sequential_run(drive, tmp_path: Path) -> None:  # noqa: ANN001
    from dpt_ros.bag import split_time_range

    path, _ = drive
    model = gray_inverse_depth()
    opts = options(overrides={"align.smoothing": 0.0})
    process_bag(path, tmp_path / "whole", opts, depth_model=model)
    ranges = split_time_range(path, 0.25)
    assert len(ranges) >= 2
    parts = []
    for i, (start, end) in enumerate(ranges):
        parts.append(tmp_path / f"part{i}")
        BagJob(
            path, parts[-1], opts, start_ns=start, end_ns=end, warmup_s=0.5, depth_model=model
        ).run()
    merge_bags(parts, tmp_path / "merged")
    got = sorted((t, log, raw) for t, _, log, _, raw in read(tmp_path / "merged"))
    want = sorted((t, log, raw) for t, _, log, _, raw in read(tmp_path / "whole"))
    assert got == want


# ============================================================================ messages
def _two_camera_bag(tmp_path: Path) -> Path:
    bag = tmp_path / "two"
    write_synthetic_bag(bag, frames=1, cameras=(SMALL, CameraSpec("/cam2", 64, 64)))
    return bag


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "no such file or directory"),
        ("not_a_bag", "not a rosbag2 directory (no metadata.yaml)"),
        (
            "several_images",
            "several image topics: /cam/image_raw, /cam2/image_raw; pick with --image-topic",
        ),
        (
            "no_such_image",
            "--image-topic /nope: no such topic in the bag; image topics: "
            "/cam/image_raw, /cam2/image_raw",
        ),
        ("wrong_type", "--image-topic /cam/camera_info is a sensor_msgs/msg/CameraInfo, not"),
        (
            "no_such_lidar",
            "--lidar-topic /velo: no such topic in the bag; PointCloud2 topics: /lidar/points",
        ),
        ("camera_info_count", "2 --camera-info-topic for 1 image topic(s)"),
        (
            "no_transform",
            "needs the transform to camera /cam/image_raw (frame 'camera_optical'), "
            "but the bag's /tf_static and /tf do not connect them",
        ),
        ("output_in_input", "the output would overwrite or sit inside the input"),
        ("resume_nothing", "nothing to resume"),
        ("bad_config", "unknown parameter(s) 'no_such_parameter'"),
        ("garbage_config", "is not valid YAML: expected <block end>, but found ':' (line 1"),
        ("bad_export", "unknown --export ['gif']"),
        ("bad_value", "parameter 'net_size'"),
    ],
)
def test_every_input_problem_is_one_line(
    case: str, expected: str, drive, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    path, _ = drive
    out = str(tmp_path / "out")
    two = str(_two_camera_bag(tmp_path)) if case in ("several_images", "no_such_image") else ""
    args = {
        "missing": [str(tmp_path / "nothing"), "--out", out],
        "not_a_bag": [str(tmp_path), "--out", out],
        "several_images": [two, "--out", out],
        "no_such_image": [two, "--out", out, "--image-topic", "/nope"],
        "wrong_type": [str(path), "--out", out, "--image-topic", "/cam/camera_info"],
        "no_such_lidar": [str(path), "--out", out, "--lidar-topic", "/velo"],
        "camera_info_count": [
            str(path),
            "--out",
            out,
            "--camera-info-topic",
            "/cam/camera_info",
            "--camera-info-topic",
            "/cam/camera_info",
        ],
        "no_transform": None,
        "output_in_input": [str(path), "--out", str(path / "inside")],
        "resume_nothing": [str(path), "--out", out, "--resume"],
        "bad_config": None,
        "garbage_config": None,
        "bad_export": [str(path), "--out", out, "--export", "png,gif"],
        "bad_value": [str(path), "--out", out, "--net-size", "sixty"],
    }[case]
    if case == "no_transform":
        stripped = tmp_path / "no_tf"
        _copy_without(path, stripped, "/tf_static")
        args = [str(stripped), "--out", out]
    if case == "bad_config":
        config = tmp_path / "bad.yaml"
        config.write_text("no_such_parameter: 1\n")
        args = [str(path), "--out", out, "--config", str(config)]
    if case == "garbage_config":  # PyYAML's own message spans four lines
        config = tmp_path / "garbage.yaml"
        config.write_text(": : :\n  - [\n")
        args = [str(path), "--out", out, "--config", str(config)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert err.startswith("dpt_bag: error: ") and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and not Path(out).exists()


def test_a_model_that_cannot_load_is_one_line_and_leaves_nothing(
    drive, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    path, _ = drive
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--model", "no_such_model", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'no_such_model'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_library_errors_are_bag_errors(tmp_path: Path) -> None:
    with pytest.raises(BagInputError, match="no such file"):
        BagJob(tmp_path / "none", tmp_path / "out").plan()


# ============================================================================ output grid
def _camera_bag(path: Path, image_topic: str, info: dict, rgb: np.ndarray, frames: int = 2):
    """A bag with ``frames`` images on ``image_topic`` and a CameraInfo (``info``: its fields,
    binning_x/y and roi as (x, y, h, w) included) on ``<ns>/camera_info``; returns the
    (stamp, CameraInfo) messages written."""
    from dpt_ros.bag.writing import open_writer, ros2_typestore
    from dpt_ros.messages import image_fields

    store = ros2_typestore()
    t = store.types
    info = dict(info)
    x, y, h, w = info.pop("roi", (0, 0, 0, 0))
    roi = t["sensor_msgs/msg/RegionOfInterest"](
        x_offset=x, y_offset=y, height=h, width=w, do_rectify=False
    )
    fields = {
        "binning_x": 0,
        "binning_y": 0,
        "d": np.zeros(5),
        "r": np.eye(3).reshape(-1),
        "distortion_model": "plumb_bob",
        **info,
    }
    fields = {
        k: np.asarray(v, np.float64).reshape(-1) if k in "dkrp" else v for k, v in fields.items()
    }
    writer = open_writer(path, "mcap")
    image_conn = writer.add_connection(image_topic, "sensor_msgs/msg/Image", typestore=store)
    ns = image_topic.rsplit("/", 1)[0]
    info_conn = writer.add_connection(
        f"{ns}/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store
    )
    infos = []
    for i in range(frames):
        stamp_ns = 1_700_000_000_000_000_000 + i * 100_000_000
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        header = t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id="cam"
        )
        msg = t["sensor_msgs/msg/CameraInfo"](header=header, roi=roi, **fields)
        image = t["sensor_msgs/msg/Image"](header=header, **image_fields(rgb, "rgb8"))
        writer.write(info_conn, stamp_ns, store.serialize_cdr(msg, msg.__msgtype__))
        writer.write(image_conn, stamp_ns, store.serialize_cdr(image, image.__msgtype__))
        infos.append((stamp_ns, msg))
    writer.close()
    return infos


def _textured(width: int, height: int) -> np.ndarray:
    """Smooth random texture: rectification visibly moves it."""
    import cv2

    noise = np.random.default_rng(3).uniform(0, 255, (height // 4, width // 4, 3))
    return (
        cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
        .clip(0, 255)
        .astype(np.uint8)
    )


def _outputs_by_name(out: Path, ns: str) -> dict[str, object]:
    """The first message of each ``<ns>/<output>`` topic."""
    found: dict[str, object] = {}
    for topic, _, _, msg, _ in read(out):
        if topic.startswith(f"{ns}/"):
            found.setdefault(topic[len(ns) + 1 :], msg)
    return found


def test_rectify_feeds_the_engine_the_rectified_image_like_pipeline_process(
    tmp_path: Path,
) -> None:
    from dpt_ros.engine import Engine
    from dpt_ros.messages import camera_model_info_fields
    from dpt_ros.pipeline import Frame, Pipeline

    rgb = _textured(96, 64)
    K = [[80.0, 0, 47.5], [0, 80.0, 31.5], [0, 0, 1]]
    P = [[70.0, 0, 46.0, 0], [0, 70.0, 30.0, 0], [0, 0, 1, 0]]
    info = {"width": 96, "height": 64, "k": K, "p": P, "d": [-0.35, 0.12, 0.0, 0.0, 0.0]}
    infos = _camera_bag(tmp_path / "bag", "/cam/image_raw", info, rgb)
    opts = options(overrides={"rectify": True})
    report = process_bag(tmp_path / "bag", tmp_path / "out", opts, depth_model=gray_inverse_depth())
    assert report.frames_out == 2
    got = _outputs_by_name(tmp_path / "out", "/cam")

    settings = opts.settings.node
    engine = Engine(settings.model.engine_config(), depth_model=gray_inverse_depth())
    pipeline = Pipeline(engine, settings.pipeline_config())
    stamp_ns, msg = infos[0]
    frame = Frame(
        rgb=rgb,
        stamp_ns=stamp_ns,
        frame_id="cam",
        camera=camera_info_to_camera(msg),
        image_topic="/cam/image_raw",
    )
    expected = pipeline.process(frame, want_depth=True)
    relative = image_to_depth(got[topics.DEPTH_RELATIVE])
    np.testing.assert_allclose(relative, expected.relative, atol=1e-5)
    # The raw image through the engine gives something else: the test can tell them apart.
    raw = engine.infer(rgb, want_depth=True).depth
    assert np.abs(relative - raw).max() > 0.05
    fields = camera_model_info_fields(expected.camera)
    for name in (topics.DEPTH_INFO, topics.DEPTH_RELATIVE_INFO):
        out_info = got[name]
        assert (out_info.width, out_info.height) == (fields["width"], fields["height"])
        assert out_info.distortion_model == fields["distortion_model"]
        for key in ("k", "d", "r", "p"):
            np.testing.assert_allclose(getattr(out_info, key), fields[key], err_msg=key)
    np.testing.assert_allclose(np.reshape(got[topics.DEPTH_INFO].k, (3, 3)), np.array(P)[:, :3])
    assert not np.any(got[topics.DEPTH_INFO].d)  # rectified: no distortion left


def test_output_camera_info_is_the_binned_resized_output_grid(tmp_path: Path) -> None:
    # Calibrated at 192x128, delivered binned by 2 (96x64), outputs resized to 48x32.
    K = [[100.0, 0, 95.5], [0, 100.0, 63.5], [0, 0, 1]]
    P = [[100.0, 0, 95.5, -10.0], [0, 100.0, 63.5, 0], [0, 0, 1, 0]]
    info = {"width": 192, "height": 128, "k": K, "p": P, "binning_x": 2, "binning_y": 2}
    _camera_bag(tmp_path / "bag", "/cam/image_raw", info, _textured(96, 64))
    opts = options(overrides={"output_width": 48, "output_height": 32})
    process_bag(tmp_path / "bag", tmp_path / "out", opts, depth_model=gray_inverse_depth())
    got = _outputs_by_name(tmp_path / "out", "/cam")
    # Binning divides the rows (image_geometry): fx 50, cx 47.75, Tx -5 at 96x64; resizing
    # by 0.5 keeps pixel centres: c' = (c + 0.5) * 0.5 - 0.5.
    cx, cy = (47.75 + 0.5) * 0.5 - 0.5, (31.75 + 0.5) * 0.5 - 0.5
    for name in (topics.DEPTH_INFO, topics.DEPTH_RELATIVE_INFO):
        msg = got[name]
        assert (msg.width, msg.height, msg.binning_x, msg.binning_y) == (48, 32, 0, 0)
        assert (msg.roi.width, msg.roi.height) == (0, 0)
        np.testing.assert_allclose(msg.k, [25.0, 0, cx, 0, 25.0, cy, 0, 0, 1])
        np.testing.assert_allclose(msg.p, [25.0, 0, cx, -2.5, 0, 25.0, cy, 0, 0, 0, 1, 0])
    assert got[topics.DEPTH_RELATIVE].width == 48


@pytest.mark.parametrize("image", ["image_raw", "image_rect_color"])
def test_image_type_auto_reads_the_bag_topic(image: str, tmp_path: Path) -> None:
    # A distorted calibration: on image_rect* the image is already rectified (K = P, no D).
    K = [[80.0, 0, 47.5], [0, 80.0, 31.5], [0, 0, 1]]
    P = [[70.0, 0, 46.0, 0], [0, 70.0, 30.0, 0], [0, 0, 1, 0]]
    info = {"width": 96, "height": 64, "k": K, "p": P, "d": [-0.35, 0.12, 0.0, 0.0, 0.0]}
    _camera_bag(tmp_path / "bag", f"/cam/{image}", info, _textured(96, 64))
    process_bag(tmp_path / "bag", tmp_path / "out", options(), depth_model=gray_inverse_depth())
    msg = _outputs_by_name(tmp_path / "out", "/cam")[topics.DEPTH_INFO]
    rectified = image != "image_raw"
    expected_k = np.array(P)[:, :3] if rectified else np.array(K)
    np.testing.assert_allclose(np.reshape(msg.k, (3, 3)), expected_k)
    assert bool(np.any(msg.d)) is not rectified


# ============================================================================ exports
@pytest.mark.parametrize("png_format", ["mm", "kitti"])
def test_export_names_and_metadata_match_predict(drive, png_format: str, tmp_path: Path) -> None:  # noqa: ANN001
    from dpt_ros.export import depth_file_names, read_png_metadata

    path, truth = drive
    opts = options(
        overrides={"png_format": png_format, "model": "dpt_hybrid", "weights": "random"},
        exports=frozenset({"png", "npy"}),
    )
    process_bag(path, tmp_path / "out", opts, depth_model=gray_inverse_depth())
    folder = tmp_path / "out" / "exports" / "cam"
    stem = f"{truth[0].stamp_ns:019d}"
    names = depth_file_names(stem, metric=True, png_format=png_format)
    assert names["png"].endswith(f"_depth_{png_format}.png")
    png, npy = folder / "depth_png" / names["png"], folder / "depth_npy" / names["npy"]
    assert png.is_file() and npy.is_file() and npy.name.endswith("_depth_m.npy")
    meta = read_png_metadata(png)
    assert meta["dpt_ros.model"] == "dpt_hybrid" and meta["dpt_ros.weights"] == "random"
    assert meta["dpt_ros.random_weights"].startswith("yes")
    assert meta["dpt_ros.stamp_ns"] == str(truth[0].stamp_ns)
    depth = np.load(npy)
    true = truth[0].scene.depth
    both = np.isfinite(true) & (true < 150) & np.isfinite(depth)
    assert np.abs(1 / depth[both] - 1 / true[both]).max() * 255.0 * NEAR_M < INVERSE_TOLERANCE_GREY
    # Without LiDAR there is no scale: relative inverse depth, named as predict names it.
    opts = options(lidar_topic="", exports=frozenset({"png", "npy"}))
    process_bag(path, tmp_path / "rel", opts, depth_model=gray_inverse_depth())
    folder = tmp_path / "rel" / "exports" / "cam"
    names = depth_file_names(stem, metric=False)
    assert (folder / "depth_png" / names["png"]).name.endswith("_inverse_depth.png")
    assert (folder / "depth_png" / names["png"]).is_file()
    assert (folder / "depth_npy" / f"{stem}_inverse_depth.npy").is_file()
    assert "dpt_ros.min" in read_png_metadata(folder / "depth_png" / names["png"])
