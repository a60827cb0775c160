#!/usr/bin/env python3
"""Write the bundled sample bag ``dpt_ros/data/sample_drive`` (rosbag2, MCAP, zstd chunks).

A 2-second drive at 10 Hz through a ray-cast street (``dpt_ros.synthetic``): a 320x240 camera
(``/camera/image_raw`` rgb8 + ``/camera/camera_info``), a 16-ring LiDAR (``/lidar/points``,
frame ``lidar``) and ``/tf_static`` (``base_link -> lidar``, ``base_link -> camera_link ->
camera_optical``). Made by the project, so it ships under the package's licence (MIT); KITTI
data must never be bundled.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from dpt_ros.bag.synthetic_bag import CameraSpec, write_synthetic_bag

DEFAULT = Path(__file__).resolve().parents[1] / "dpt_ros" / "data" / "sample_drive"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT, help="output bag folder")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--force", action="store_true", help="replace an existing bag")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.out.exists():
        if not args.force:
            parser.error(f"{args.out} exists; give --force to replace it")
        shutil.rmtree(args.out)
    write_synthetic_bag(
        args.out,
        frames=args.frames,
        cameras=(CameraSpec("/camera", width, height),),
        seed=args.seed,
        storage=args.storage,
        lidar_rings=16,
        lidar_points_per_ring=1024,
        lidar_outlier_share=0.02,
    )
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB, {args.frames} frames {width}x{height})")


if __name__ == "__main__":
    main()
