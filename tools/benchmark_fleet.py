#!/usr/bin/env python3
"""Bags per minute of the bag tool on Ray (1 and 2 workers) against the local tool.

    tools/benchmark_fleet.py --bags 4 --seconds 4 --rounds 2 --json /tmp/fleet.json

Each system is a fresh ``python -m dpt_ros.bag`` process over the same synthetic bags, run as a
user runs it; wall time from start to exit (interpreter, Ray start-up and shutdown included):
  local_1   the local tool, --workers 1 (bags one after another in this process)
  local_2   the local tool, --workers 2 (a process pool)
  ray_1     --ray --workers 1: a local Ray instance with room for one task
  ray_2     --ray --workers 2: a local Ray instance with room for two tasks
The systems are interleaved round by round, starting each round with the next system, so that
load from other processes hits them alike; the median over rounds is reported.
Ray's overhead per bag = (ray_N - local_N) / bags, for N = 1 and 2.

Ray runs inside a loopback-only network namespace (its processes would otherwise connect to the
machine's network address): the script re-executes itself under ``unshare -n`` (root needed).
JSON: config, systems.<name>.{wall_s (median), runs, bags_per_min, frames}, overhead_s_per_bag,
ratios, notes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import fleet_helpers  # noqa: E402

SYSTEMS = {
    "local_1": ["--workers", "1"],
    "local_2": ["--workers", "2"],
    "ray_1": ["--ray", "--workers", "1"],
    "ray_2": ["--ray", "--workers", "2"],
}
_INSIDE = "DPT_FLEET_BENCHMARK_IN_NETNS"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bags", type=int, default=4, help="number of input bags")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each bag (s)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every system")
    parser.add_argument(
        "--model",
        default="tests.ros_helpers:gray_inverse_depth",
        help="depth model or plug-in (default: a tiny stand-in, so the figures are the tools' "
        "own overhead; dpt_hybrid with --weights random for a network's share)",
    )
    parser.add_argument("--weights", default="", help="weights for --model ('random' for DPT)")
    parser.add_argument("--net-size", type=int, default=64, help="network input size")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args(argv)


def run_system(name: str, bags: list[Path], out: Path, args: argparse.Namespace) -> dict:
    report = out.with_suffix(".json")
    argv = [
        sys.executable, "-m", "dpt_ros.bag", *map(str, bags), "--out", str(out),
        "--model", args.model, "--device", "cpu", "--net-size", str(args.net_size),
        "--quiet", "--report", str(report), *SYSTEMS[name],
    ]  # fmt: skip
    if args.weights:
        argv += ["--weights", args.weights]
    start = time.perf_counter()
    # Ray's session files in the benchmark's folder, not /tmp/ray.
    env = fleet_helpers.ray_env(RAY_TMPDIR=str(out.parent / "ray"))
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    data = json.loads(report.read_text())  # the local tool and --ray write the same keys
    return {"wall_s": wall, "frames": data["total"]["frames_out"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.environ.get(_INSIDE) != "1":
        problem = fleet_helpers.netns_problem()
        if problem:
            raise SystemExit(f"benchmark_fleet: {problem}")
        env = fleet_helpers.ray_env(**{_INSIDE: "1"})
        command = fleet_helpers.in_netns([sys.executable, __file__, *sys.argv[1:]])
        return subprocess.run(command, env=env).returncode

    with tempfile.TemporaryDirectory(prefix="dpt_fleet_bench_") as tmp:
        root = Path(tmp)
        bags = [
            fleet_helpers.write_bag(root / f"drive_{i}", args.seconds, seed=i)
            for i in range(args.bags)
        ]
        runs: dict[str, list[dict]] = {name: [] for name in args.systems}
        for r in range(args.rounds):
            order = args.systems[r % len(args.systems) :] + args.systems[: r % len(args.systems)]
            for name in order:
                result = run_system(name, bags, root / f"out_{name}_{r}", args)
                runs[name].append(result)
                print(f"round {r + 1}: {name:8s} {result['wall_s']:.1f} s", file=sys.stderr)

    systems = {}
    for name, results in runs.items():
        wall = statistics.median(x["wall_s"] for x in results)
        systems[name] = {
            "wall_s": wall,
            "runs": [x["wall_s"] for x in results],
            "bags_per_min": 60.0 * args.bags / wall,
            "frames": results[0]["frames"],
        }
    overhead = {
        f"workers_{n}": (systems[f"ray_{n}"]["wall_s"] - systems[f"local_{n}"]["wall_s"])
        / args.bags
        for n in (1, 2)
        if f"ray_{n}" in systems and f"local_{n}" in systems
    }
    ratios = {}
    if "ray_1" in systems and "ray_2" in systems:
        ratios["ray_2_over_ray_1_bags_per_min"] = (
            systems["ray_2"]["bags_per_min"] / systems["ray_1"]["bags_per_min"]
        )
    for n in (1, 2):
        if f"ray_{n}" in systems and f"local_{n}" in systems:
            ratios[f"ray_{n}_over_local_{n}_wall"] = (
                systems[f"ray_{n}"]["wall_s"] / systems[f"local_{n}"]["wall_s"]
            )
    result = {
        "config": {
            "bags": args.bags,
            "seconds_per_bag": args.seconds,
            "frames_per_bag": round(args.seconds * fleet_helpers.RATE_HZ),
            "image": "64x48",
            "model": args.model,
            "net_size": args.net_size,
            "rounds": args.rounds,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "systems": systems,
        "overhead_s_per_bag": overhead,
        "ratios": ratios,
        "notes": [
            "wall time of a whole CLI run (interpreter, imports, Ray start and stop included)",
            "Ray inside a loopback-only network namespace; a local instance per run",
            "other processes share this machine's CPUs: compare ratios from one run",
        ],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
