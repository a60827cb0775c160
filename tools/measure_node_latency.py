#!/usr/bin/env python3
"""Per-frame latency through the depth node: image published -> depth received, over DDS.

Starts ``python -m dpt_ros.ros.node`` (DPT-Hybrid by default, random weights: the timing is the
same as with the released ones) and publishes one image at a time, waiting for its
``depth_relative/image`` before sending the next, so every number is one frame's latency with no
queueing. Next to it: what the node measured inside itself for the same frame (receive ->
publish, and the engine's own Prediction.timings), read from /diagnostics.

    .venv/bin/python tools/measure_node_latency.py --frames 10 > latency.json

Prints JSON. DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a private
ROS_DOMAIN_ID) and uses config/fastdds_shm.xml unless the environment says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "sampledata"

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def load_image(source: str, width: int, height: int) -> tuple[np.ndarray, str]:
    """RGB frame to send: a file, the TUM RGB-D sample (640x480), or a synthetic scene."""
    import cv2

    if source not in ("tum", "synthetic"):
        bgr = cv2.imread(source, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read image {source}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), source
    tum = SHARED / "rgbd" / "tum" / "TUM_color.png"
    if source == "tum" and tum.is_file():
        return cv2.cvtColor(cv2.imread(str(tum)), cv2.COLOR_BGR2RGB), "sampledata/rgbd/tum"
    from dpt_ros.synthetic import make_scene

    return make_scene(width, height, seed=0).rgb, f"synthetic {width}x{height}"


def summary(values: list[float]) -> dict:
    """mean, median, min and max in ms (one decimal)."""
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 1),
        "median": round(statistics.median(ordered), 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dpt_hybrid")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--net-size", type=int, default=384)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--frames", type=int, default=10, help="measured frames")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--image", default="tum", help="'tum', 'synthetic' or an image path")
    parser.add_argument("--width", type=int, default=640, help="synthetic image width")
    parser.add_argument("--height", type=int, default=480, help="synthetic image height")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per frame")
    args = parser.parse_args()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from dpt_ros.ros.convert import make_header, rgb_to_image, stamp_to_ns
    from dpt_ros.topics import DEPTH_RELATIVE

    rgb, source = load_image(args.image, args.width, args.height)
    parameters = {
        "model": args.model,
        "weights": args.weights,
        "device": args.device,
        "precision": args.precision,
        "net_size": str(args.net_size),
        "threads": str(args.threads),
        "diagnostics_period": "0.2",
    }
    command = [sys.executable, "-m", "dpt_ros.ros.node", "--ros-args"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={value}"]
    log = tempfile.NamedTemporaryFile(prefix="latency_node_", suffix=".log", delete=False)  # noqa: SIM115
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    node_process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)

    rclpy.init()
    peer = rclpy.create_node("latency_probe")
    reliable = QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
    )
    arrivals: dict[int, float] = {}
    diagnostics: list[tuple[float, dict]] = []
    lock = threading.Lock()

    def on_depth(msg: Image) -> None:
        now = time.perf_counter()
        with lock:
            arrivals.setdefault(stamp_to_ns(msg.header.stamp), now)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": depth"):
                with lock:
                    diagnostics.append(
                        (time.perf_counter(), {v.key: v.value for v in status.values})
                    )

    peer.create_subscription(Image, DEPTH_RELATIVE, on_depth, reliable)
    peer.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable)
    publisher = peer.create_publisher(Image, "image", reliable)
    spinning = True

    def spin() -> None:
        while spinning:
            rclpy.spin_once(peer, timeout_sec=0.02)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    def wait(condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if node_process.poll() is not None:
                raise SystemExit("the node exited:\n" + Path(log.name).read_text())
            time.sleep(0.005)
        return False

    try:
        if not wait(lambda: publisher.get_subscription_count() > 0, 300):
            raise SystemExit("the node did not subscribe:\n" + Path(log.name).read_text())
        wait(lambda: peer.count_publishers(DEPTH_RELATIVE) > 0, 60)
        time.sleep(0.5)
        end_to_end, node_internal, engine = [], {}, {}
        base = 1_700_000_000 * 10**9
        for i in range(args.warmup + args.frames):
            stamp = base + i * 100_000_000
            msg = rgb_to_image(rgb, make_header(stamp, "camera"))
            sent = time.perf_counter()
            publisher.publish(msg)
            if not wait(lambda s=stamp: s in arrivals, args.timeout):
                raise SystemExit(f"no depth for frame {i}:\n" + Path(log.name).read_text())
            # The diagnostics period after this frame holds this frame's own timings.
            wait(
                lambda n=i + 1: any(
                    int(d.get("frames_processed", 0)) >= n and "latency.total_ms" in d
                    for _, d in diagnostics
                ),
                10,
            )
            with lock:
                latest = next(
                    d
                    for _, d in reversed(diagnostics)
                    if int(d.get("frames_processed", 0)) >= i + 1 and "latency.total_ms" in d
                )
                received = arrivals[stamp]
            if i < args.warmup:
                continue
            end_to_end.append((received - sent) * 1e3)
            for key, value in latest.items():
                if key.startswith("latency."):
                    node_internal.setdefault(key[len("latency.") :], []).append(float(value))
            time.sleep(0.2)
        for key in list(node_internal):
            if key.startswith("engine."):
                engine[key[len("engine.") :]] = summary(node_internal.pop(key))
        result = {
            "what": "image publish -> depth_relative/image received (one frame in flight)",
            "model": args.model,
            "weights": args.weights,
            "device": args.device,
            "precision": args.precision,
            "net_size": args.net_size,
            "image": {"source": source, "width": rgb.shape[1], "height": rgb.shape[0]},
            "frames": args.frames,
            "publish_to_depth_ms": summary(end_to_end),
            "node_ms": {k: summary(v) for k, v in sorted(node_internal.items())},
            "engine_timings_ms": engine,
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "rmw": os.environ.get("RMW_IMPLEMENTATION"),
            "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"),
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        spinning = False
        spinner.join(timeout=2)
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(20)
        except subprocess.TimeoutExpired:
            node_process.kill()
        peer.destroy_node()
        rclpy.try_shutdown()
        log.close()
        Path(log.name).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
