"""The cloud writer packs straight into the message's buffer, and the node-cost benchmark
runs (tiny frame, no timing asserted)."""

from __future__ import annotations

import array
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from dpt_ros.messages import pointcloud2_fields, pointcloud2_to_structured  # noqa: E402
from dpt_ros.ros.convert import make_header, xyzrgb_to_pointcloud2  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_cloud_is_packed_into_the_message_buffer() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(1000, 3)).astype(np.float32)
    points[::7] = np.nan
    colors = rng.integers(0, 256, (1000, 3), dtype=np.uint8)
    msg = xyzrgb_to_pointcloud2(points, colors, make_header(5, "cam"))
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    cloud = pointcloud2_to_structured(msg).reshape(-1)
    finite = np.isfinite(points).all(axis=1)
    np.testing.assert_array_equal(np.stack([cloud[n] for n in "xyz"], -1), points[finite])
    packed = cloud["rgb"].view(np.uint32)
    expected = colors[finite].astype(np.uint32)
    np.testing.assert_array_equal(
        packed, (expected[:, 0] << 16) | (expected[:, 1] << 8) | expected[:, 2]
    )


def test_pointcloud2_fields_writes_into_the_given_buffer() -> None:
    points = np.arange(12, dtype=np.float64).reshape(4, 3)  # not float32: converted once
    given: list[np.ndarray] = []

    def buffer(nbytes: int) -> np.ndarray:
        given.append(np.zeros(nbytes, np.uint8))
        return given[0]

    fields = pointcloud2_fields(points, None, buffer=buffer)
    assert fields["data"] is given[0] and fields["point_step"] == 12
    np.testing.assert_array_equal(given[0].view(np.float32).reshape(4, 3), points)


def test_node_cost_benchmark_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "benchmark_node_cost.py"),
            "--size",
            "64x48",
            "--repeats",
            "2",
            "--no-publish",
            "--json",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    report = json.loads(out.read_text())
    assert {"image_in_rgb8", "depth_out", "color_out", "cloud_build", "cloud_out"} <= set(
        report["stages_ms"]
    )
    assert report["sizes"]["depth_bytes"] == 64 * 48 * 4
    assert report["sizes"]["cloud_bytes"] == report["sizes"]["cloud_points"] * 16
