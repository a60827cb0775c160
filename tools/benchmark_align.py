#!/usr/bin/env python3
"""Benchmark LiDAR alignment: accuracy of lstsq vs the robust fit under outliers, and speed.

Scenes: ray-cast synthetic layouts (street with sky, boxes, planes) and, when present, the real
RGB-D frames of ../shared/sampledata/rgbd (LiDAR simulated from their sensor depth). The
"network output" is the true inverse depth under an unknown affine map with 3 % multiplicative
noise. The LiDAR has range noise, a camera-LiDAR baseline (parallax) and a share of gross
outliers. Accuracy is AbsRel / RMSE / delta<1.25 of the metric depth against the truth.

    python tools/benchmark_align.py [--json results.json] [--seeds 3] [--repeats 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpt_ros.align import affine_to_depth, fit_scale_shift, project_lidar, sample_prediction  # noqa: E402
from dpt_ros.synthetic import (  # noqa: E402
    LAYOUTS,
    RGBD_SAMPLES,
    Scene,
    make_relative_prediction,
    make_scene,
    scene_from_rgbd,
)

OUTLIER_SHARES = (0.0, 0.1, 0.3, 0.5)
METHODS = {"lstsq": ("lstsq", "none"), "ransac+huber": ("ransac", "huber")}
TIMED_METHODS = {
    "lstsq": ("lstsq", "none"),
    "ransac": ("ransac", "none"),
    "ransac+huber": ("ransac", "huber"),
    "ransac+tukey": ("ransac", "tukey"),
}
POINT_COUNTS = (1_000, 10_000, 100_000)


def depth_metrics(metric: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """AbsRel, RMSE, delta<1.25 over pixels with a true depth; coverage = share of those pixels
    that got a metric depth (a fit can leave pixels NaN where its inverse depth is <= 0)."""
    has_truth = np.isfinite(truth) & (truth > 0)
    covered = has_truth & np.isfinite(metric)
    m, t = metric[covered].astype(np.float64), truth[covered].astype(np.float64)
    if m.size == 0:
        return {"absrel": np.nan, "rmse": np.nan, "delta1": np.nan, "coverage": 0.0}
    ratio = np.maximum(m / t, t / m)
    return {
        "absrel": float(np.mean(np.abs(m - t) / t)),
        "rmse": float(np.sqrt(np.mean((m - t) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "coverage": float(covered.sum() / max(has_truth.sum(), 1)),
    }


def build_scene(name: str, share: float, seed: int, rgbd_root: Path | None) -> Scene:
    if name in LAYOUTS:
        return make_scene(320, 240, layout=name, seed=seed, lidar_outlier_share=share)
    return scene_from_rgbd(rgbd_root, name, lidar_outlier_share=share, seed=seed)


def accuracy(scenes: list[str], seeds: int, rgbd_root: Path | None) -> list[dict]:
    rows = []
    for name in scenes:
        for share in OUTLIER_SHARES:
            per_method: dict[str, list[dict]] = {m: [] for m in METHODS}
            n_points = []
            for seed in range(seeds):
                rng = np.random.default_rng(1000 + seed)
                scene = build_scene(name, share, seed, rgbd_root)
                truth = np.where(np.isfinite(scene.depth), scene.depth, np.inf)
                # The unknown affine map a relative network would apply.
                pred = make_relative_prediction(
                    truth, scale=rng.uniform(1.0, 10.0), shift=rng.uniform(0.0, 1.0), seed=seed
                )
                proj = project_lidar(scene.lidar_points, scene.T_cam_lidar, scene.camera)
                values = sample_prediction(pred, proj)
                n_points.append(len(proj))
                for label, (method, refine) in METHODS.items():
                    fit = fit_scale_shift(values, proj.depth, method, refine=refine, seed=seed)
                    metric = affine_to_depth(pred, fit.scale, fit.shift)
                    result = depth_metrics(metric, scene.depth)
                    result["ok"] = float(fit.ok)
                    per_method[label].append(result)
            for label, results in per_method.items():
                row = {"scene": name, "outliers": share, "method": label}
                row["lidar_points"] = float(np.mean(n_points))
                for key in results[0]:
                    row[key] = float(np.nanmean([r[key] for r in results]))
                rows.append(row)
    return rows


def timing_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n projected LiDAR samples of a street scene: 3 % prediction noise, 2 cm range noise,
    30 % gross outliers."""
    rng = np.random.default_rng(seed)
    scene = make_scene(320, 240, layout="street", seed=seed)
    pred = make_relative_prediction(scene.depth, seed=seed)
    valid = np.flatnonzero(np.isfinite(scene.depth.ravel()))
    pick = rng.choice(valid, n)
    depth = scene.depth.ravel()[pick].astype(np.float32) + rng.normal(0, 0.02, n).astype(np.float32)
    outlier = rng.random(n) < 0.3
    depth[outlier] = rng.uniform(1.0, 80.0, outlier.sum())
    return pred.ravel()[pick], depth


def time_call(fn, repeats: int) -> dict[str, float]:
    """Wall-clock statistics, plus the median CPU time of the calling thread: on a shared
    machine the wall clock also counts time spent waiting for a core."""
    for _ in range(3):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - start_cpu) * 1e3)
        wall.append((time.perf_counter() - start) * 1e3)
    s = np.asarray(wall)
    return {
        "median_ms": float(np.median(s)),
        "p10_ms": float(np.percentile(s, 10)),
        "p90_ms": float(np.percentile(s, 90)),
        "min_ms": float(s.min()),
        "cpu_median_ms": float(np.median(cpu)),
    }


def speed(repeats: int) -> list[dict]:
    rows = []
    for n in POINT_COUNTS:
        pred, depth = timing_data(n)
        for label, (method, refine) in TIMED_METHODS.items():
            stats = time_call(
                lambda p=pred, d=depth, m=method, r=refine: fit_scale_shift(p, d, m, refine=r),
                repeats,
            )
            rows.append({"stage": "fit", "method": label, "points": n, **stats})
    # A KITTI-sized frame: 1242x375 image, ~130k-point 64-ring scan.
    scene = make_scene(1242, 375, layout="street", lidar_rings=64, lidar_points_per_ring=2048)
    pred = make_relative_prediction(scene.depth)
    stats = time_call(
        lambda: project_lidar(scene.lidar_points, scene.T_cam_lidar, scene.camera), repeats
    )
    rows.append(
        {"stage": "project_lidar", "method": "zbuffer 5x5", "points": len(scene.lidar_points)}
        | stats
    )
    fit = fit_scale_shift(*timing_data(10_000))
    stats = time_call(lambda: affine_to_depth(pred, fit.scale, fit.shift, 0.1, 200.0), repeats)
    rows.append({"stage": "to_metric", "method": "1242x375", "points": pred.size} | stats)
    return rows


def print_tables(acc: list[dict], spd: list[dict]) -> None:
    print("\nAccuracy (mean over seeds; metrics over pixels with true depth)")
    header = f"{'scene':8s} {'outliers':>8s} {'method':13s} {'pts':>6s} {'AbsRel':>7s} "
    header += f"{'RMSE m':>7s} {'d<1.25':>7s} {'cover':>6s} {'ok':>4s}"
    print(header)
    print("-" * len(header))
    for r in acc:
        print(
            f"{r['scene']:8s} {r['outliers']:>8.0%} {r['method']:13s} {r['lidar_points']:>6.0f} "
            f"{r['absrel']:>7.4f} {r['rmse']:>7.3f} {r['delta1']:>7.4f} {r['coverage']:>6.1%} "
            f"{r['ok']:>4.2f}"
        )
    print("\nSpeed (ms; wall clock unless 'cpu': CPU time of this thread)")
    header = f"{'stage':14s} {'method':13s} {'points':>7s} {'median':>7s} {'p10':>7s} "
    header += f"{'p90':>7s} {'min':>7s} {'cpu med':>7s}"
    print(header)
    print("-" * len(header))
    for r in spd:
        print(
            f"{r['stage']:14s} {r['method']:13s} {r['points']:>7d} {r['median_ms']:>7.2f} "
            f"{r['p10_ms']:>7.2f} {r['p90_ms']:>7.2f} {r['min_ms']:>7.2f} "
            f"{r['cpu_median_ms']:>7.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write results to this JSON file")
    parser.add_argument("--seeds", type=int, default=3, help="scenes per (layout, outlier share)")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per measurement")
    parser.add_argument(
        "--rgbd",
        type=Path,
        default=REPO.parent / "shared" / "sampledata" / "rgbd",
        help="sampledata/rgbd folder (skipped when absent)",
    )
    parser.add_argument("--no-rgbd", action="store_true", help="synthetic scenes only")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.repeats < 1:
        parser.error("--seeds and --repeats must be >= 1")

    scenes = list(LAYOUTS)
    rgbd_root = None
    if not args.no_rgbd and args.rgbd.is_dir():
        rgbd_root = args.rgbd
        scenes += list(RGBD_SAMPLES)
    elif not args.no_rgbd:
        print(f"note: {args.rgbd} not found; synthetic scenes only", file=sys.stderr)

    load_before = os.getloadavg()
    acc = [] if args.skip_accuracy else accuracy(scenes, args.seeds, rgbd_root)
    spd = [] if args.skip_speed else speed(args.repeats)
    print_tables(acc, spd)
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "seeds": args.seeds,
        "repeats": args.repeats,
    }
    print(
        f"\nload average before/after: {load_before[0]:.2f} / {meta['load_average_after'][0]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "accuracy": acc, "speed": spd}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
