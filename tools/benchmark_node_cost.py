#!/usr/bin/env python3
"""The node's own per-frame cost besides the network: message conversion and publishing.

    source tools/ros_env.sh
    .venv/bin/python tools/benchmark_node_cost.py --size 1920x1080 --repeats 20 --json cost.json

Stages, each timed on its own (median and p90 ms over --repeats), on a synthetic frame of
--size (smooth metric depth with 5 % unknown pixels, as sky or a failed fit leaves them):
  image_in_rgb8 / image_in_bgr8   sensor_msgs/Image -> uint8 RGB (dpt_ros.messages reader)
  image_in_jpeg                   sensor_msgs/CompressedImage (JPEG q90) -> RGB
  depth_out                       float32 depth -> 32FC1 Image
  color_picture / color_out       depth colour map (dpt_ros.viz), then -> rgb8 Image
  cloud_build                     Pipeline.cloud_from_depth (the node's settings: every
                                  --stride-th pixel, coloured, dense)
  cloud_out / cloud_out_organized points -> PointCloud2 (dense list; organized grid)
  publish_depth / _color / _cloud rclpy publish of the finished message, one best-effort
                                  subscriber matched in this process (not spun)
``node_total`` sums what the node does per frame for raw images in and depth, colour and
cloud out: image_in_rgb8, depth_out, color_picture, color_out, cloud_build, cloud_out and the
three publishes. The JSON also holds the message sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dpt_ros.geometry import CameraModel  # noqa: E402
from dpt_ros.pipeline import Pipeline, PipelineConfig  # noqa: E402
from dpt_ros.viz import depth_picture  # noqa: E402

NODE_STAGES = (
    "image_in_rgb8",
    "depth_out",
    "color_picture",
    "color_out",
    "cloud_build",
    "cloud_out",
    "publish_depth",
    "publish_color",
    "publish_cloud",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1920x1080", help="frame WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per stage")
    parser.add_argument("--stride", type=int, default=2, help="cloud stride (cloud.stride)")
    parser.add_argument("--no-publish", action="store_true", help="skip the rclpy stages")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WIDTHxHEIGHT, got {args.size!r}")
    if width < 2 or height < 2 or args.repeats < 1 or args.stride < 1:
        parser.error("--size must be at least 2x2, --repeats and --stride at least 1")
    args.width, args.height = width, height
    return args


def synthetic_frame(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB, float32 metric depth in metres with 5 % NaN)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    depth = 2.0 + 30.0 * (yy / height) ** 2 + 3.0 * np.sin(xx / 97.0)
    depth[rng.random(depth.shape) < 0.05] = np.nan
    rgb = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 256], -1)
    rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, depth.astype(np.float32)


def timed(fn: Callable[[], object], repeats: int) -> tuple[dict[str, float], object]:
    result = fn()  # warm-up (allocations, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
    array = np.asarray(times)
    return {"median": float(np.median(array)), "p90": float(np.percentile(array, 90))}, result


class _Stub:
    """Pipeline needs an engine object; cloud_from_depth never calls it."""

    def infer(self, rgb: np.ndarray, want_depth: bool = True, want_labels: bool | None = None):
        raise AssertionError("not used")


def measure(args: argparse.Namespace) -> dict:
    from dpt_ros.ros import convert

    width, height = args.width, args.height
    rgb, depth = synthetic_frame(width, height)
    camera = CameraModel.from_fov(width, height, 90.0)
    header = convert.make_header(1_000_000_000, "camera_optical_frame")
    stages: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}

    def stage(name: str, fn: Callable[[], object]) -> object:
        stages[name], result = timed(fn, args.repeats)
        return result

    image_rgb8 = convert.rgb_to_image(rgb, header)
    image_bgr8 = convert.rgb_to_image(rgb, header, encoding="bgr8")
    ok, jpeg = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    from sensor_msgs.msg import CompressedImage

    compressed = CompressedImage(header=header, format="rgb8; jpeg compressed bgr8")
    compressed.data = jpeg.tobytes()
    stage("image_in_rgb8", lambda: convert.image_to_rgb(image_rgb8))
    stage("image_in_bgr8", lambda: convert.image_to_rgb(image_bgr8))
    stage("image_in_jpeg", lambda: convert.compressed_to_rgb(compressed))

    depth_msg = stage("depth_out", lambda: convert.depth_to_image(depth, header))
    picture = stage("color_picture", lambda: depth_picture(depth, None))
    color_msg = stage("color_out", lambda: convert.rgb_to_image(picture, header))

    pipeline = Pipeline(_Stub(), PipelineConfig(cloud_stride=args.stride))
    points, colors = stage("cloud_build", lambda: pipeline.cloud_from_depth(depth, camera, rgb))
    cloud_msg = stage("cloud_out", lambda: convert.xyzrgb_to_pointcloud2(points, colors, header))
    organized = Pipeline(
        _Stub(), PipelineConfig(cloud_stride=args.stride, cloud_organized=True)
    ).cloud_from_depth(depth, camera, rgb)
    stage(
        "cloud_out_organized",
        lambda: convert.xyzrgb_to_pointcloud2(*organized, header, organized=True),
    )
    for name, msg in (("depth", depth_msg), ("color", color_msg), ("cloud", cloud_msg)):
        sizes[f"{name}_bytes"] = len(msg.data)
    sizes["cloud_points"] = int(points.shape[0])

    notes: list[str] = []
    if args.no_publish:
        notes.append("publish stages skipped (--no-publish)")
    else:
        try:
            publish_stages(args, depth_msg, color_msg, cloud_msg, stage)
        except ImportError as exc:
            notes.append(f"publish stages skipped: {exc}")
    total = sum(stages[name]["median"] for name in NODE_STAGES if name in stages)
    return {"stages_ms": stages, "node_total_ms": total, "sizes": sizes, "notes": notes}


def publish_stages(args, depth_msg, color_msg, cloud_msg, stage) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("node_cost_benchmark", context=context)
        sink = rclpy.create_node("node_cost_sink", context=context)
        for name, kind, msg in (
            ("depth", Image, depth_msg),
            ("color", Image, color_msg),
            ("cloud", PointCloud2, cloud_msg),
        ):
            topic = f"node_cost/{name}"
            publisher = node.create_publisher(kind, topic, qos_profile_sensor_data)
            sink.create_subscription(kind, topic, lambda _msg: None, qos_profile_sensor_data)
            deadline = time.monotonic() + 5.0
            while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            stage(f"publish_{name}", lambda publisher=publisher, msg=msg: publisher.publish(msg))
        sink.destroy_node()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = measure(args)
    report = {
        "config": {
            "size": f"{args.width}x{args.height}",
            "repeats": args.repeats,
            "stride": args.stride,
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "python": platform.python_version(),
        },
        **results,
    }
    print(f"node cost at {report['config']['size']} (ms, median / p90):")
    for name, value in results["stages_ms"].items():
        mark = "*" if name in NODE_STAGES else " "
        print(f" {mark} {name:<22}{value['median']:9.2f}{value['p90']:9.2f}")
    print(f"   node_total (*)        {results['node_total_ms']:9.2f}")
    for note in results["notes"]:
        print(f"note: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
