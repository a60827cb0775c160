#!/usr/bin/env python3
"""Frames per second of the bag tool against a plain Pipeline loop and the node over DDS.

One run, the same frames, side by side (JSON out):

- ``bag_tool``: ``dpt_ros.bag.process_bag`` on a synthetic drive (read, decode, match camera
  info + LiDAR + /tf_static, batched inference, LiDAR fit, cloud, colour images, write a bag);
- ``pipeline_loop``: the same bag read with rosbags and each frame run through
  ``Pipeline.process`` one by one, nothing written (the floor of what any front end costs);
- ``node_dds``: the same messages published to ``python -m dpt_ros.ros.node`` over DDS
  (image, camera_info, LiDAR), one frame at a time (the next once the previous frame's
  depth_relative/image has arrived, so nothing is dropped).

Then peak memory (resident set sampled every 10 ms in a child process, over its level
before processing) of the bag tool on the sample-sized drive and on
one ten times longer, with a tiny stand-in network, to show memory does not grow with the bag.

    .venv/bin/python tools/benchmark_bag.py --json out/bench_bag.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
sys.path.insert(0, str(REPO))


def make_bag(path: Path, frames: int, width: int, height: int) -> None:
    from dpt_ros.bag.synthetic_bag import CameraSpec, write_synthetic_bag

    write_synthetic_bag(
        path,
        frames=frames,
        cameras=(CameraSpec("/camera", width, height),),
        seed=7,
        lidar_rings=16,
        lidar_points_per_ring=1024,
        lidar_outlier_share=0.02,
    )


def overrides(args: argparse.Namespace) -> dict:
    return {
        "model": args.model,
        "weights": args.weights,
        "device": "cpu",
        "net_size": args.net_size,
        "threads": args.threads,
    }


def run_bag_tool(bag: Path, work: Path, args: argparse.Namespace) -> dict:
    from dpt_ros.bag import BagOptions, process_bag

    out = work / "bag_tool_out"
    shutil.rmtree(out, ignore_errors=True)
    options = BagOptions.from_config(None, overrides(args))
    from dpt_ros.engine import Engine

    engine = Engine(options.settings.node.model.engine_config())
    engine.warmup(args.width, args.height, 1)
    start = time.perf_counter()
    report = process_bag(bag, out, options, engine=engine)
    wall = time.perf_counter() - start
    return {
        "frames": report.frames_out,
        "wall_s": round(wall, 3),
        "frames_per_s": round(report.frames_out / wall, 4),
        "fits_ok": report.fits_ok,
    }


def frames_of(bag: Path) -> tuple[list, object]:
    """[(image, camera_info, scan, log)] per frame and T_cam_lidar from /tf_static."""
    from dpt_ros.bag.reading import open_bag
    from dpt_ros.tf_buffer import TfBuffer

    tf = TfBuffer()
    by_stamp: dict[int, dict] = {}
    with open_bag(bag) as reader:
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == "/tf_static":
                tf.add_message(msg, static=True)
                continue
            s = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            kind = connection.msgtype.rsplit("/", 1)[1]
            by_stamp.setdefault(s, {})[kind] = (connection.msgtype, msg)
    return [by_stamp[s] for s in sorted(by_stamp)], tf.lookup("camera_optical", "lidar")


def run_pipeline_loop(bag: Path, args: argparse.Namespace) -> dict:
    from dpt_ros.bag import BagOptions
    from dpt_ros.engine import Engine
    from dpt_ros.messages import camera_info_to_camera, image_to_rgb, pointcloud2_to_xyz
    from dpt_ros.pipeline import Frame, Pipeline

    settings = BagOptions.from_config(None, overrides(args)).settings.node
    engine = Engine(settings.model.engine_config())
    engine.warmup(args.width, args.height, 1)
    pipeline = Pipeline(engine, settings.pipeline_config())
    start = time.perf_counter()
    frames, T = frames_of(bag)  # reading and deserialising counts, as it does for the tool
    fits = 0
    for f in frames:
        image = f["Image"][1]
        frame = Frame(
            image_to_rgb(image),
            image.header.stamp.sec * 10**9 + image.header.stamp.nanosec,
            image.header.frame_id,
            camera_info_to_camera(f["CameraInfo"][1]),
            lidar_points=pointcloud2_to_xyz(f["PointCloud2"][1]),
            T_cam_lidar=T,
        )
        result = pipeline.process(frame, want_depth=True, want_points=True)
        fits += int(result.raw_fit is not None and result.raw_fit.ok)
    wall = time.perf_counter() - start
    return {
        "frames": len(frames),
        "wall_s": round(wall, 3),
        "frames_per_s": round(len(frames) / wall, 4),
        "fits_ok": fits,
    }


def run_node(bag: Path, args: argparse.Namespace) -> dict:
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from dpt_ros import topics
    from dpt_ros.messages import stamp_to_ns
    from tests.ros_helpers import to_rclpy

    frames, T = frames_of(bag)
    parameters = {
        **{k: str(v) for k, v in overrides(args).items()},
        "use_lidar": "true",
        "lidar_transform_source": "parameters",
        "lidar_T_cam_lidar": "[" + ",".join(repr(float(v)) for v in T.reshape(-1)) + "]",
        "input_reliability": "reliable",
        "input_depth": "10",
    }
    command = [sys.executable, "-m", "dpt_ros.ros.node", "--ros-args"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={value}"]
    log = tempfile.NamedTemporaryFile(prefix="bench_node_", suffix=".log", delete=False)  # noqa: SIM115
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    node = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    rclpy.init()
    peer = rclpy.create_node("bench_bag_player")
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
    )
    arrivals: dict[int, float] = {}
    for name, kind in (
        (topics.DEPTH_RELATIVE, Image),
        (topics.DEPTH, Image),
        (topics.POINTS, PointCloud2),
        (topics.DEPTH_COLOR, Image),
    ):
        callback = (
            (lambda msg: arrivals.setdefault(stamp_to_ns(msg.header.stamp), time.perf_counter()))
            if name == topics.DEPTH_RELATIVE
            else (lambda msg: None)
        )
        peer.create_subscription(kind, name, callback, qos)
    pubs = {
        "Image": peer.create_publisher(Image, "image", qos),
        "CameraInfo": peer.create_publisher(CameraInfo, "camera_info", qos),
        "PointCloud2": peer.create_publisher(PointCloud2, "lidar/points", qos),
    }
    spinning = True

    def spin() -> None:
        while spinning:
            rclpy.spin_once(peer, timeout_sec=0.02)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    def wait(condition, timeout: float) -> bool:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if node.poll() is not None:
                raise SystemExit("the node exited:\n" + Path(log.name).read_text())
            time.sleep(0.002)
        return False

    try:
        if not wait(lambda: all(p.get_subscription_count() for p in pubs.values()), 300):
            raise SystemExit("the node did not subscribe:\n" + Path(log.name).read_text())
        wait(lambda: peer.count_publishers(topics.DEPTH_RELATIVE) > 0, 60)
        time.sleep(1.0)
        start = None
        for i, f in enumerate([frames[0], *frames]):  # the first one again: warm-up
            if i == 1:
                start = time.perf_counter()
            for kind in ("PointCloud2", "CameraInfo", "Image"):
                msgtype, msg = f[kind]
                rclpy_msg = to_rclpy(msg, msgtype)
                if i == 0:
                    rclpy_msg.header.stamp.sec -= 1  # a stamp of its own
                pubs[kind].publish(rclpy_msg)
            image = f["Image"][1]
            s = stamp_to_ns(image.header.stamp) - (10**9 if i == 0 else 0)
            if not wait(lambda s=s: s in arrivals, args.timeout):
                raise SystemExit(f"no depth for frame {i}:\n" + Path(log.name).read_text())
        wall = time.perf_counter() - start
        return {
            "frames": len(frames),
            "wall_s": round(wall, 3),
            "frames_per_s": round(len(frames) / wall, 4),
        }
    finally:
        spinning = False
        spinner.join(timeout=2)
        node.send_signal(signal.SIGINT)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
        peer.destroy_node()
        rclpy.try_shutdown()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def child_memory(bag: Path, out: Path) -> None:
    """In a child process: the bag tool with a tiny stand-in network; prints max RSS (MiB)."""
    import torch

    from dpt_ros.bag import BagOptions, process_bag

    class Mean(torch.nn.Module):
        output_semantics = "relative_inverse_depth"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=1) + 2.0

    from dpt_ros.engine import Engine, EngineConfig

    # Everything imported and the engine built first: the growth after this is the bag's.
    engine = Engine(EngineConfig(model=None, net_size=64), depth_model=Mean())
    options = BagOptions.from_config(None, {"net_size": 64})
    page = os.sysconf("SC_PAGE_SIZE")

    def rss_mib() -> float:  # resident set now (ru_maxrss would keep the import's peak)
        return int(Path("/proc/self/statm").read_text().split()[1]) * page / 2**20

    baseline = rss_mib()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    report = process_bag(bag, out, options, engine=engine)
    done.set()
    sampler.join()
    print(
        json.dumps(
            {
                "frames": report.frames_out,
                "rss_before_mib": round(baseline, 1),
                "peak_rss_while_processing_mib": round(peak[0], 1),
                "growth_mib": round(peak[0] - baseline, 1),
                "wall_s": round(report.wall_s, 2),
            }
        )
    )


def measure_memory(bag: Path, work: Path) -> dict:
    out = work / f"mem_{bag.name}"
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, __file__, "--child-memory", str(bag), str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    data = json.loads(result.stdout.strip().splitlines()[-1])
    data["bag_mb"] = round(sum(p.stat().st_size for p in bag.rglob("*") if p.is_file()) / 1e6, 2)
    shutil.rmtree(out, ignore_errors=True)
    return data


def compare_speed(bag: Path, work: Path, args: argparse.Namespace) -> dict:
    """The three systems on the same bag, one after the other, and their ratios."""
    result = {"bag_tool": run_bag_tool(bag, work, args)}
    result["pipeline_loop"] = run_pipeline_loop(bag, args)
    if not args.skip_node:
        result["node_dds"] = run_node(bag, args)
    tool = result["bag_tool"]["frames_per_s"]
    result["ratio_bag_tool_to_pipeline_loop"] = round(
        tool / result["pipeline_loop"]["frames_per_s"], 3
    )
    if "node_dds" in result:
        result["ratio_bag_tool_to_node_dds"] = round(tool / result["node_dds"]["frames_per_s"], 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dpt_hybrid")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--net-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, all three alike")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--memory-frames", type=int, default=20, help="the sample's length")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--skip-node", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory part")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--child-memory", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        child_memory(*args.child_memory)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_bag_") as tmp:
        work = Path(tmp)
        bag = work / "drive"
        make_bag(bag, args.frames, args.width, args.height)
        result = {
            "what": "frames/s on the same synthetic drive, CPU, measured one after the other "
            "in one run",
            "model": args.model,
            "weights": args.weights,
            "net_size": args.net_size,
            "image": f"{args.width}x{args.height}",
            "frames": args.frames,
            "cpu_count": os.cpu_count(),
            "load_average_before": os.getloadavg(),
        }
        if not args.memory_only:
            result.update(compare_speed(bag, work, args))
        small, large = work / "mem_1x", work / "mem_10x"
        make_bag(small, args.memory_frames, args.width, args.height)
        make_bag(large, 10 * args.memory_frames, args.width, args.height)
        result["peak_memory"] = {
            "sample_length": measure_memory(small, work),
            "ten_times_longer": measure_memory(large, work),
        }
        result["load_average_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
