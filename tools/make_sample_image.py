#!/usr/bin/env python3
"""Render the bundled demo image ``dpt_ros/data/sample_scene.png`` and its true depth.

The sample is made by the project (a ray-cast street scene from ``dpt_ros.synthetic``), so it
can ship under the package's own licence; the KITTI frames in ../shared are non-commercial
and must never be bundled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from dpt_ros.synthetic import make_scene

DATA = Path(__file__).resolve().parents[1] / "dpt_ros" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DATA, help="output folder")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    scene = make_scene(width, height, layout="street", seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out / "sample_scene.png"), cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR))
    depth_mm = np.where(np.isfinite(scene.depth), np.clip(scene.depth * 1000.0, 0, 65535), 0)
    cv2.imwrite(str(args.out / "sample_scene_depth.png"), depth_mm.astype(np.uint16))
    camera = {
        "width": width,
        "height": height,
        "k": scene.camera.K.ravel().tolist(),
        "d": list(map(float, scene.camera.D)),
        "distortion_model": scene.camera.distortion_model,
        "depth_png": "uint16 millimetres, 0 = no return (sky)",
        "source": f"tools/make_sample_image.py --size {args.size} --seed {args.seed}",
    }
    (args.out / "sample_scene.json").write_text(json.dumps(camera, indent=2) + "\n")
    print(f"wrote {args.out}/sample_scene.png, sample_scene_depth.png, sample_scene.json")


if __name__ == "__main__":
    main()
