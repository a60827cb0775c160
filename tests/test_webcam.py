"""The webcam demo (python -m dpt_ros.webcam) headless, on videos, streams of images and bad
sources, with tiny stand-in models loaded through the plug-in path users have."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dpt_ros import display, webcam
from dpt_ros.calibration import CalibrationError, read_camera_info_yaml
from dpt_ros.capture import CaptureThread, FrameSource, SourceError, open_source
from dpt_ros.config import ConfigError
from tests.ros_helpers import jpeg_claiming

REPO = Path(__file__).resolve().parents[1]
GREY = "tests.ros_helpers:gray_inverse_depth"  # relative inverse depth = grey level
SEGMENTATION = "tests.ros_helpers:grey_level_segmentation"
METRIC = "tests.test_webcam:metric_from_grey"
FAST = ["--net-size", "64", "--threads", "1"]


def metric_from_grey():
    """Plug-in: metres = 1 + 9 * grey in [0, 1]; pure black pixels give 0 m (invalid)."""
    import torch

    class MetricFromGrey(torch.nn.Module):
        output_semantics = "metric_depth"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            grey = (x.mean(dim=1) + 1.0) * 0.5
            return torch.where(grey > 0.02, 1.0 + 9.0 * grey, torch.zeros_like(grey))

    return MetricFromGrey()


# ============================================================================ helpers
def scene(index: int, width: int, height: int) -> np.ndarray:
    """A moving grey ramp with a black (invalid for METRIC) square: RGB uint8."""
    x = np.linspace(0.0, 1.0, width)[None, :] + np.linspace(0.0, 0.5, height)[:, None]
    grey = (np.mod(x + 0.05 * index, 1.5) / 1.5 * 200 + 40).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[height // 4 : height // 2, width // 4 : width // 2] = 0
    return rgb


def write_video(path: Path, frames: int, width: int, height: int, fps: float = 25.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(cv2.cvtColor(scene(i, width, height), cv2.COLOR_RGB2BGR))
    writer.release()


def write_images(folder: Path, count: int, width: int = 96, height: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"frame_{i:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(scene(i, width, height), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def run_demo(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    code = webcam.main([str(a) for a in args])
    return code, capsys.readouterr().err


def read_video(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(bgr)
    capture.release()
    return frames


def check_stats(stats: dict) -> None:
    assert stats["frames"] == stats["frames_processed"] > 0
    assert stats["frames_captured"] == (
        stats["frames_processed"] + stats["frames_dropped"] + stats["frames_left"]
    )
    assert stats["fps"] == pytest.approx(stats["frames"] / stats["wall_s"], rel=1e-3)
    latency = stats["latency_ms"]
    assert 0 < latency["median"] <= latency["p95"] <= latency["max"]
    for stage in ("engine", "engine.forward", "total", "view"):
        assert stats["stages_ms"][stage]["median"] >= 0
    # the pipeline's own time is part of each frame's latency
    assert stats["stages_ms"]["total"]["median"] <= latency["max"]


@pytest.fixture(autouse=True)
def _no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# ============================================================================ headless runs
def test_generated_odd_size_video_recording_and_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    width, height, count = 642, 362, 12
    video = tmp_path / "odd.mp4"
    write_video(video, count, width, height)
    record, stats_path = tmp_path / "view.mp4", tmp_path / "stats.json"
    code, err = run_demo(
        capsys, "--source", video, "--model", GREY, "--segmentation-model", SEGMENTATION,
        *FAST, "--no-display", "--record", record, "--stats", stats_path,
    )  # fmt: skip
    assert code == 0, err
    stats = json.loads(stats_path.read_text())
    check_stats(stats)
    # a file is processed frame by frame: nothing dropped, every frame processed
    assert stats["frames"] == stats["frames_captured"] == count and stats["frames_dropped"] == 0
    assert stats["depth"] == "relative" and stats["record_frames"] == count
    frames = read_video(record)
    assert len(frames) == count
    # input | depth | segmentation, each at the input's size
    assert frames[0].shape == (height, 3 * width, 3)
    # the first panel holds the input (lossy codec, text in the corners)
    truth = cv2.cvtColor(scene(5, width, height), cv2.COLOR_RGB2BGR).astype(np.float32)
    panel = frames[5][:, :width].astype(np.float32)
    middle = slice(height // 8, height - height // 8)
    assert np.abs(panel[middle] - truth[middle]).mean() < 8.0
    assert not list(tmp_path.glob(".view.mp4*")), "temporary recording left behind"


def test_bikes_sample_video(
    sampledata_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    video = sampledata_dir / "video" / "bikes.mp4"
    record, stats_path = tmp_path / "bikes.mp4", tmp_path / "stats.json"
    code, err = run_demo(
        capsys, "--source", video, "--model", GREY, *FAST, "--no-display",
        "--max-frames", 8, "--record", record, "--stats", stats_path,
    )  # fmt: skip
    assert code == 0, err
    stats = json.loads(stats_path.read_text())
    check_stats(stats)
    assert stats["frames"] == 8 and stats["record_fps"] == pytest.approx(25.0)
    frames = read_video(record)
    assert len(frames) == 8 and frames[0].shape == (272, 2 * 640, 3)


def test_folder_of_images_skips_unreadable_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "images"
    first = write_images(folder, 5)[0]
    (folder / "frame_002b.png").write_bytes(b"not a png")
    # Refused from its header: decoding these 2 KB allocated 768 MB and took 15 s a frame.
    (folder / "frame_003b.jpg").write_bytes(jpeg_claiming(cv2.imread(str(first)), 16000, 16000))
    stats_path = tmp_path / "stats.json"
    code, err = run_demo(
        capsys, "--source", folder, "--model", GREY, *FAST, "--no-display",
        "--stats", stats_path,
    )  # fmt: skip
    assert code == 0, err
    stats = json.loads(stats_path.read_text())
    check_stats(stats)
    assert (stats["frames"], stats["frames_unreadable"]) == (5, 2)
    assert "frame_002b.png" in err
    assert "skipping" in err and "frame_003b.jpg: JPEG header is 16000x16000" in err


def test_glob_source_and_max_frames(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_images(tmp_path / "a", 4)
    stats_path = tmp_path / "stats.json"
    code, err = run_demo(
        capsys, "--source", str(tmp_path / "a" / "frame_00[0-2].png"), "--model", GREY, *FAST,
        "--no-display", "--max-frames", 2, "--stats", stats_path,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stats_path.read_text())["frames"] == 2


# ============================================================================ display fallback
def test_no_display_set_falls_back_to_headless(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_images(tmp_path / "in", 2)
    code, err = run_demo(capsys, "--source", tmp_path / "in", "--model", GREY, *FAST)
    assert code == 0, err
    assert "no display (DISPLAY is not set): running headless" in err


def test_dead_x_server_falls_back_to_headless(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = next(n for n in range(97, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    monkeypatch.setenv("DISPLAY", f":{number}")
    write_images(tmp_path / "in", 2)
    code, err = run_demo(capsys, "--source", tmp_path / "in", "--model", GREY, *FAST)
    assert code == 0, err
    assert f"cannot connect to the X server at DISPLAY=:{number}: running headless" in err


def test_display_probe_without_gui_opencv() -> None:
    assert display.display_problem({}) in (None, "no display (DISPLAY is not set)")
    if not cv2.currentUIFramework():  # opencv-python-headless, as the tests install
        assert "opencv-python" in display.gui_problem()
    else:
        assert display.gui_problem() is None


# ============================================================================ bad input
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.mp4", "video file not found: missing.mp4"),
        ("broken.mp4", "video file broken.mp4 cannot be opened"),
        ("empty_folder", "folder empty_folder holds no images"),
        ("nothing_*.png", "pattern 'nothing_*.png' matches no image files"),
    ],
)
def test_bad_sources_exit_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    (tmp_path / "empty_folder").mkdir()
    code, err = run_demo(capsys, "--source", source, "--model", GREY)
    assert code == 2
    assert err.strip().splitlines() == [f"error: {err.strip().removeprefix('error: ')}"]
    assert message in err and "Traceback" not in err


def test_missing_camera_index(tmp_path: Path) -> None:
    index = next(i for i in range(9, 64) if not Path(f"/dev/video{i}").exists())
    result = subprocess.run(
        [sys.executable, "-m", "dpt_ros.webcam", "--source", str(index)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: cannot open camera {index} (no such camera, or it is busy)"
    )


def test_tools_wrapper_runs_the_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "webcam_demo.py"), "--source", "gone.mp4"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (2, "error: video file not found: gone.mp4\n")


def test_bad_settings_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "in"
    images = write_images(folder, 1)
    code, err = run_demo(capsys, "--source", folder, "--net-size", "100")
    assert code == 2 and "parameter 'net_size': must be a multiple of 32" in err
    (tmp_path / "garbage.yaml").write_text(": : :\n  - [\n")
    code, err = run_demo(capsys, "--source", folder, "--config", tmp_path / "garbage.yaml")
    assert code == 2 and len(err.splitlines()) == 1 and "is not valid YAML: expected" in err
    code, err = run_demo(capsys, "--source", folder, "-p", "viz.colour=gray")
    assert code == 2 and "unknown parameter 'viz.colour'" in err
    code, err = run_demo(capsys, "--source", images[0], "--record", images[0])
    assert code == 2 and "refusing to overwrite the input" in err
    assert cv2.imread(str(images[0])) is not None
    code, err = run_demo(capsys, "--source", folder, "--record", tmp_path / "no" / "x.mp4")
    assert code == 2 and "does not exist" in err
    # Checked before the model loads (the model here cannot even be imported).
    code, err = run_demo(capsys, "--source", folder, "--stats", tmp_path, "--model", "no.such:x")
    assert (code, err) == (2, f"error: the statistics {tmp_path} is a folder; give a file name\n")
    proc_file = Path("/proc") / "dpt_ros_webcam_test.mp4"  # /proc takes no new files, even as root
    code, err = run_demo(capsys, "--source", folder, "--record", proc_file, "--model", "no.such:x")
    assert code == 2 and err.startswith(f"error: cannot write the recording {proc_file}: ")
    assert len(err.splitlines()) == 1


def test_settings_from_config_file_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "webcam.yaml"
    path.write_text("model: dpt_large\nviz:\n  colormap: gray\ncloud.stride: 4\n")
    args = webcam.parse_args(["--config", str(path), "--source", "clip.mp4", "--colormap", "jet"])
    settings = webcam.settings_from_args(args)
    assert (settings.model.model, settings.viz.colormap, settings.cloud.stride) == (
        "dpt_large",
        "jet",  # flags override the file
        4,
    )
    assert settings.source == "clip.mp4"
    # the node's own params file works too: node-only parameters are skipped
    node_file = webcam.settings_from_args(
        webcam.parse_args(["--config", str(REPO / "config" / "depth.yaml")])
    )
    assert node_file.model.net_size == 0  # depth.yaml's default: auto (the model's own size)
    path.write_text("use_lidarr: true\n")
    with pytest.raises(ConfigError, match="use_lidarr"):
        webcam.settings_from_args(webcam.parse_args(["--config", str(path)]))


# ============================================================================ snapshots
def test_metric_snapshot_contents(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    o3d = pytest.importorskip("open3d")
    images = write_images(tmp_path / "in", 1, width=97, height=61)
    snapdir, stride = tmp_path / "snaps", 3
    code, err = run_demo(
        capsys, "--source", tmp_path / "in", "--model", METRIC, *FAST, "--no-display",
        "--snapshot-every", 1, "--snapshot-dir", snapdir, "--cloud-stride", stride,
    )  # fmt: skip
    assert code == 0, err
    (ply,) = snapdir.glob("*_cloud.ply")
    name = ply.name.removesuffix("_cloud.ply")
    rgb = cv2.cvtColor(cv2.imread(str(snapdir / f"{name}_input.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(rgb, cv2.cvtColor(cv2.imread(str(images[0])), cv2.COLOR_BGR2RGB))
    depth = np.load(snapdir / f"{name}_depth_m.npy")
    assert depth.shape == (61, 97) and depth.dtype == np.float32
    valid = np.isfinite(depth)
    assert 0 < valid.sum() < depth.size  # the black square is invalid
    assert np.nanmin(depth) > 0 and np.nanmax(depth) <= 10.5  # (bicubic overshoot at edges)
    png = cv2.imread(str(snapdir / f"{name}_depth_mm.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == depth.shape
    np.testing.assert_array_equal(png[valid], np.rint(depth[valid].astype(np.float64) * 1000))
    assert (png[~valid] == 0).all()
    cloud = o3d.io.read_point_cloud(str(ply))
    points = np.asarray(cloud.points)
    decimated = depth[::stride, ::stride]
    assert len(points) == np.isfinite(decimated).sum()
    np.testing.assert_allclose(
        np.sort(points[:, 2]), np.sort(decimated[np.isfinite(decimated)]), rtol=1e-5
    )
    assert cloud.has_colors()
    view = cv2.imread(str(snapdir / f"{name}_view.png"))
    assert view.shape == (61, 2 * 97, 3)


def test_relative_snapshot_cloud_uses_relative_units(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    o3d = pytest.importorskip("open3d")
    write_images(tmp_path / "in", 1)
    snapdir = tmp_path / "snaps"
    code, err = run_demo(
        capsys, "--source", tmp_path / "in", "--model", GREY, *FAST, "--no-display",
        "--snapshot-every", 1, "--snapshot-dir", snapdir, "--cloud-stride", 2,
    )  # fmt: skip
    assert code == 0, err
    assert "point cloud in relative units" in err
    (ply,) = snapdir.glob("*_cloud.ply")
    inverse = np.load(next(snapdir.glob("*_inverse_depth.npy")))
    pseudo = webcam.relative_to_pseudo_depth(inverse)[::2, ::2]
    points = np.asarray(o3d.io.read_point_cloud(str(ply)).points)
    assert len(points) == np.isfinite(pseudo).sum() > 0
    png = next(snapdir.glob("*_inverse_depth.png"))
    from dpt_ros.export import read_png_metadata

    assert "relative inverse depth" in read_png_metadata(png)["dpt_ros.content"]


def test_without_open3d_or_rclpy_the_features_say_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d raises ImportError
    write_images(tmp_path / "in", 1)
    snapdir = tmp_path / "snaps"
    code, err = run_demo(
        capsys, "--source", tmp_path / "in", "--model", GREY, *FAST, "--no-display",
        "--snapshot-every", 1, "--snapshot-dir", snapdir,
    )  # fmt: skip
    assert code == 0, err
    assert "PLY export needs Open3D: pip install open3d-cpu" in err
    assert len(list(snapdir.glob("*_input.png"))) == 1 and not list(snapdir.glob("*.ply"))
    with pytest.raises(webcam.ExportError, match="--cloud window needs Open3D"):
        display.CloudWindow("cloud")
    monkeypatch.setitem(sys.modules, "rclpy", None)
    monkeypatch.delitem(sys.modules, "dpt_ros.ros.camera_publisher", raising=False)
    code, err = run_demo(capsys, "--source", tmp_path / "in", "--model", GREY, "--publish", "cam")
    assert code == 2 and "--publish needs rclpy and sensor_msgs" in err


def test_relative_to_pseudo_depth() -> None:
    inverse = np.linspace(0.0, 1.0, 1000, dtype=np.float32).reshape(20, 50)
    inverse[0, 0] = np.nan
    depth = webcam.relative_to_pseudo_depth(inverse)
    assert np.isnan(depth[0, 0])
    finite = depth[np.isfinite(depth)]
    assert np.all(np.diff(finite) <= 0)  # nearer (larger inverse) is smaller depth
    assert finite.min() >= webcam.RELATIVE_NEAR * 0.9
    assert finite.max() <= 2 * webcam.RELATIVE_FAR


# ============================================================================ camera info
def test_camera_info_files(tmp_path: Path) -> None:
    ost = tmp_path / "ost.yaml"
    ost.write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: laptop\n"
        "camera_matrix: {rows: 3, cols: 3, data: [500.0, 0, 319.5, 0, 505.0, 239.5, 0, 0, 1]}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [0.1, -0.05, 0, 0, 0]}\n"
        "projection_matrix: {rows: 3, cols: 4, data: [480, 0, 320, 0, 0, 480, 240, 0, 0, 0, 1, 0]}"
    )
    camera = read_camera_info_yaml(ost)
    assert (camera.fx, camera.fy, camera.cx, camera.size) == (500.0, 505.0, 319.5, (640, 480))
    assert camera.distortion_model == "plumb_bob" and camera.D[0] == pytest.approx(0.1)
    assert camera.rectified().fx == 480.0  # the projection matrix is read too
    echo = tmp_path / "info.yaml"  # `ros2 topic echo --once /camera_info > info.yaml`
    echo.write_text(
        "header:\n  stamp: {sec: 1, nanosec: 0}\n  frame_id: cam\nheight: 240\nwidth: 320\n"
        "distortion_model: plumb_bob\nd: [0.0, 0.0, 0.0, 0.0, 0.0]\n"
        "k: [250.0, 0.0, 159.5, 0.0, 250.0, 119.5, 0.0, 0.0, 1.0]\n---\n"
    )
    assert read_camera_info_yaml(echo).size == (320, 240)
    bad = tmp_path / "bad.yaml"
    bad.write_text("width: 320\n")
    with pytest.raises(CalibrationError, match="lacks height, k"):
        read_camera_info_yaml(bad)
    with pytest.raises(CalibrationError, match="cannot read camera info file"):
        read_camera_info_yaml(tmp_path / "none.yaml")


def test_camera_info_of_another_aspect_ratio_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    info = tmp_path / "info.yaml"
    info.write_text("width: 640\nheight: 480\nk: [500, 0, 319.5, 0, 500, 239.5, 0, 0, 1]\n")
    write_images(tmp_path / "in", 1, width=96, height=64)  # 3:2, not 4:3
    code, err = run_demo(
        capsys, "--source", tmp_path / "in", "--model", GREY, *FAST, "--camera-info", info
    )
    assert code == 2 and "is for 640x480 images but the source delivers 96x64" in err


# ============================================================================ capture thread
class _FastLiveSource(FrameSource):
    """A live source that produces ``count`` frames as fast as it can."""

    def __init__(self, count: int) -> None:
        super().__init__("fake camera", live=True, fps=0.0, frame_count=0)
        self._left = count

    def read(self) -> np.ndarray | None:
        if self._left == 0:
            return None
        self._left -= 1
        time.sleep(0.001)
        return np.zeros((4, 4, 3), np.uint8)


def test_live_capture_keeps_only_the_newest_frame() -> None:
    capture = CaptureThread(_FastLiveSource(200), drop=True).start()
    taken = []
    while not capture.ended:
        frame = capture.get(timeout=0.05)
        if frame is not None:
            taken.append(frame.index)
            time.sleep(0.02)  # a slow model
    capture.stop()
    assert capture.captured == 200
    assert capture.dropped > 100  # the slow consumer saw few frames...
    assert len(taken) + capture.dropped + capture.pending == capture.captured
    assert taken == sorted(taken) and taken[-1] == 199  # ...always the newest one


def test_open_source_reads_the_first_frame(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", 3, 64, 48)
    source = open_source(str(tmp_path / "v.mp4"))
    try:
        assert not source.live and source.frame_count == 3
        frames = [source.read() for _ in range(4)]
        assert [f is None for f in frames] == [False, False, False, True]
        assert frames[0].shape == (48, 64, 3)
    finally:
        source.close()
    with pytest.raises(SourceError, match="video file not found"):
        open_source(str(tmp_path / "nope.avi"))


# ============================================================================ --publish
@pytest.mark.ros
@pytest.mark.slow
def test_publish_camera_frames_over_dds(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import CameraInfo, Image

    from tests.ros_helpers import TestPeer, image_array, ros_env, stamp_ns

    video = tmp_path / "clip.mp4"
    write_video(video, 60, 160, 96, fps=20.0)
    peer = TestPeer("webcam_test_peer")
    try:
        peer.subscribe(Image, "/laptop/image_raw")
        peer.subscribe(CameraInfo, "/laptop/camera_info")
        process = subprocess.Popen(
            [
                sys.executable, "-m", "dpt_ros.webcam", "--source", str(video), "--model", GREY,
                *FAST, "--no-display", "--realtime", "--publish", "/laptop", "--fov", "90",
                "--frame-id", "laptop_optical",
            ],
            cwd=REPO, env=ros_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output
        assert "publishing /laptop/image_raw and /laptop/camera_info" in output
        images = peer.messages("/laptop/image_raw")
        infos = peer.messages("/laptop/camera_info")
        assert images and infos, output
    finally:
        peer.close()
    image = images[-1]
    assert (image.width, image.height, image.encoding) == (160, 96, "rgb8")
    assert image.header.frame_id == "laptop_optical"
    frame = image_array(image)
    assert frame.shape == (96, 160, 3) and frame.std() > 0
    info = next(i for i in infos if stamp_ns(i) == stamp_ns(image))
    assert (info.width, info.height) == (160, 96)
    assert info.k[0] == pytest.approx(80.0)  # 90 degrees over 160 px: f = 80
