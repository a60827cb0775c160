#!/usr/bin/env python3
"""The depth node under a flood: output rate at 200 Hz in vs 30 Hz in, latency, memory, drops.

Starts ``python -m dpt_ros.ros.node`` with a cheap stand-in model (a plug-in, so the node's own
code is what is measured) and publishes 640x480 rgb8 frames best-effort, as a camera driver
does: first at ``--low-rate`` (30 Hz), then at ``--high-rate`` (200 Hz) for ``--seconds``
(60 s). For each phase, after ``--warmup`` seconds: the rate of ``depth_relative/image``
received, the latency (publish stamp -> output received; one clock, one machine) median and
p95, and the node's drop counters from /diagnostics by place (DDS reader queue vs the node's
newest-frame slot). The node's RSS is sampled from /proc every 0.5 s over the flood.

    .venv/bin/python tools/benchmark_node_flood.py --json flood.json

Goals (issue 9): output at 200 Hz in >= 0.8 x output at 30 Hz in; RSS growth after warm-up
under 5 %. DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a private
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

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

DROP_KEYS = ("images_in", "frames_processed", "dropped.reader_queue", "dropped.slot")


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Peer:
    """Publishes frames, records outputs (arrival time per stamp) and the node's diagnostics."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from dpt_ros.topics import DEPTH_RELATIVE, IMAGE

        rclpy.init()
        self.node = rclpy.create_node("flood_peer")
        camera_qos = QoSProfile(
            depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
        )
        self.publisher = self.node.create_publisher(Image, IMAGE, camera_qos)
        self.arrivals: list[tuple[int, float]] = []  # (stamp ns, arrival wall ns)
        self.diagnostics: dict[str, str] = {}
        self.lock = threading.Lock()
        reliable = QoSProfile(
            depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
        )
        self.node.create_subscription(Image, DEPTH_RELATIVE, self._on_depth, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.output_topic = DEPTH_RELATIVE

    def _on_depth(self, msg) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            self.arrivals.append((stamp, now))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith("depth_node: depth"):
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}

    def counters(self) -> dict[str, int]:
        with self.lock:
            return {k: int(self.diagnostics.get(k, 0)) for k in DROP_KEYS}

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def run_phase(peer: Peer, msg, rate: float, seconds: float, warmup: float, pid: int) -> dict:
    """Publish at ``rate`` for ``seconds``; figures over the time after ``warmup``."""
    period = 1.0 / rate
    rss: list[tuple[float, float]] = []
    start = time.perf_counter()
    next_rss = start
    counters_at_warmup = None
    warm_wall_ns = None
    sent = 0
    next_send = start
    while (now := time.perf_counter()) - start < seconds:
        if now >= next_rss:
            rss.append((now - start, rss_mib(pid)))
            next_rss += 0.5
        if counters_at_warmup is None and now - start >= warmup:
            time.sleep(0.3)  # let a diagnostics message arrive
            counters_at_warmup = peer.counters()
            warm_wall_ns = time.time_ns()
        stamp = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        peer.publisher.publish(msg)
        sent += 1
        next_send += period
        delay = next_send - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            next_send = time.perf_counter()  # behind: send as fast as possible, no burst
    end_wall_ns = time.time_ns()
    time.sleep(1.5)  # the last outputs and a diagnostics message after the phase
    counters_end = peer.counters()
    with peer.lock:
        arrivals = [(s, a) for s, a in peer.arrivals if warm_wall_ns <= s <= end_wall_ns]
    latencies = [(a - s) / 1e6 for s, a in arrivals]
    measured_s = (end_wall_ns - warm_wall_ns) / 1e9
    drops = {k: counters_end[k] - counters_at_warmup[k] for k in DROP_KEYS}
    return {
        "rate_in_requested_hz": rate,
        "rate_in_achieved_hz": sent / seconds,
        "measured_s": round(measured_s, 2),
        "rate_out_hz": len(arrivals) / measured_s,
        "latency_ms": {
            "median": statistics.median(latencies) if latencies else None,
            "p95": percentile(latencies, 95),
            "max": max(latencies) if latencies else None,
        },
        "node_counters_after_warmup": drops,
        "rate_seen_by_node_hz": drops["images_in"] / measured_s,
        "rss_samples_mib": [(round(t, 1), round(v, 1)) for t, v in rss],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tests.ros_helpers:gray_inverse_depth")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--low-rate", type=float, default=30.0)
    parser.add_argument("--high-rate", type=float, default=200.0)
    parser.add_argument("--low-seconds", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the flood")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if not 0 <= args.warmup < min(args.low_seconds, args.seconds) - 1:
        parser.error("--warmup must leave at least 1 s of each phase to measure")

    from dpt_ros.ros.convert import make_header, rgb_to_image
    from dpt_ros.synthetic import make_scene

    rgb = make_scene(args.width, args.height, seed=0).rgb
    log = tempfile.NamedTemporaryFile(prefix="flood_node_", suffix=".log", delete=False)  # noqa: SIM115
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dpt_ros.ros.node",
            "--ros-args",
            "-p",
            f"model:={args.model}",
            "-p",
            "threads:=1",
            "-p",
            "diagnostics_period:=0.25",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    peer = Peer()
    try:
        deadline = time.monotonic() + 120
        while peer.publisher.get_subscription_count() == 0 or not peer.node.count_publishers(
            peer.output_topic
        ):
            if time.monotonic() > deadline or node.poll() is not None:
                raise SystemExit(f"node did not come up:\n{Path(log.name).read_text()[-3000:]}")
            time.sleep(0.1)
        msg = rgb_to_image(rgb, make_header(0, "camera_optical"))
        time.sleep(1.0)
        rss_start = rss_mib(node.pid)
        low = run_phase(peer, msg, args.low_rate, args.low_seconds, args.warmup, node.pid)
        high = run_phase(peer, msg, args.high_rate, args.seconds, args.warmup, node.pid)
        rss_end = rss_mib(node.pid)
        flood_rss = [v for t, v in high["rss_samples_mib"] if t >= args.warmup]
        rss_warm = flood_rss[0]
        result = {
            "what": "depth node under a flood of 640x480 rgb8 frames (best effort, depth 1)",
            "model": args.model,
            "size": f"{args.width}x{args.height}",
            "cpu_count": os.cpu_count(),
            "low": {k: v for k, v in low.items() if k != "rss_samples_mib"},
            "high": {k: v for k, v in high.items() if k != "rss_samples_mib"},
            "output_rate_ratio_high_vs_low": high["rate_out_hz"] / low["rate_out_hz"],
            "rss_mib": {
                "start": rss_start,
                "flood_after_warmup": rss_warm,
                "end": rss_end,
                "max": max(v for _, v in low["rss_samples_mib"] + high["rss_samples_mib"]),
                "growth_after_warmup_pct": 100.0 * (rss_end - rss_warm) / rss_warm,
            },
            "rss_samples_flood_mib": high["rss_samples_mib"],
        }
    finally:
        peer.close()
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(30)
            except subprocess.TimeoutExpired:
                node.kill()
        log.close()
    node_log = Path(log.name).read_text()
    result["node_exit_code"] = node.returncode
    result["node_log_errors"] = [line for line in node_log.splitlines() if "ERROR" in line]
    Path(log.name).unlink()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
