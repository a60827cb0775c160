"""dpt_ros.tf_buffer: chains, static and dynamic edges, interpolation, errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from dpt_ros.geometry import transform_from_quaternion
from dpt_ros.tf_buffer import TfBuffer, TransformUnavailable


def _tf(parent: str, child: str, xyz, xyzw, stamp_ns: int = 0) -> SimpleNamespace:
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return SimpleNamespace(
        header=SimpleNamespace(frame_id=parent, stamp=SimpleNamespace(sec=sec, nanosec=nanosec)),
        child_frame_id=child,
        transform=SimpleNamespace(
            translation=SimpleNamespace(**dict(zip("xyz", xyz, strict=True))),
            rotation=SimpleNamespace(**dict(zip("xyzw", xyzw, strict=True))),
        ),
    )


def _yaw(angle: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2))


def test_chain_of_three_edges_in_both_directions() -> None:
    buffer = TfBuffer()
    buffer.add(_tf("base", "lidar", (0.0, 0.0, 1.0), _yaw(0.0)), static=True)
    buffer.add(_tf("/base", "mount", (1.0, 0.0, 0.0), _yaw(math.pi / 2)), static=True)
    buffer.add(_tf("mount", "camera", (0.0, 2.0, 0.0), _yaw(0.0)), static=True)
    T = buffer.lookup("camera", "lidar")
    expected = (
        np.linalg.inv(transform_from_quaternion((0, 2, 0), _yaw(0)))
        @ np.linalg.inv(transform_from_quaternion((1, 0, 0), _yaw(math.pi / 2)))
        @ transform_from_quaternion((0, 0, 1), _yaw(0))
    )
    np.testing.assert_allclose(T, expected, atol=1e-12)
    # The LiDAR origin: (0, 0, 1) in base, (0, 1, 1) in mount (yawed 90 degrees at (1, 0, 0)),
    # (0, -1, 1) in camera (2 m along mount's y).
    np.testing.assert_allclose(T @ [0, 0, 0, 1], [0.0, -1.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(buffer.lookup("lidar", "camera") @ T, np.eye(4), atol=1e-12)
    assert buffer.frames == ["base", "camera", "lidar", "mount"]


def test_dynamic_edge_is_interpolated_slerp_and_lerp() -> None:
    buffer = TfBuffer()
    buffer.add(_tf("odom", "base", (0.0, 0.0, 0.0), _yaw(0.0), stamp_ns=1_000_000_000))
    buffer.add(_tf("odom", "base", (2.0, 4.0, 0.0), _yaw(math.pi / 2), stamp_ns=2_000_000_000))
    T = buffer.lookup("odom", "base", 1_250_000_000)
    np.testing.assert_allclose(T[:3, 3], [0.5, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(
        T[:3, :3], transform_from_quaternion((0, 0, 0), _yaw(math.pi / 8))[:3, :3], atol=1e-12
    )
    np.testing.assert_allclose(buffer.lookup("odom", "base", 2_000_000_000)[:3, 3], [2, 4, 0])
    np.testing.assert_allclose(buffer.lookup("odom", "base")[:3, 3], [2, 4, 0])  # latest
    with pytest.raises(TransformUnavailable, match="after the last sample.*extrapolation"):
        buffer.lookup("odom", "base", 2_000_000_001)
    with pytest.raises(TransformUnavailable, match="before the first sample"):
        buffer.lookup("base", "odom", 999_999_999)


def test_slerp_takes_the_short_way_round() -> None:
    buffer = TfBuffer()
    q = _yaw(math.radians(170))
    buffer.add(_tf("a", "b", (0, 0, 0), q, stamp_ns=0))
    buffer.add(_tf("a", "b", (0, 0, 0), tuple(-v for v in _yaw(math.radians(-170))), stamp_ns=2))
    R = buffer.lookup("a", "b", 1)[:3, :3]
    assert math.degrees(math.atan2(R[1, 0], R[0, 0])) == pytest.approx(180.0, abs=1e-9) or (
        math.degrees(math.atan2(R[1, 0], R[0, 0])) == pytest.approx(-180.0, abs=1e-9)
    )


def test_static_and_dynamic_mix_and_cache_bound() -> None:
    buffer = TfBuffer(cache_s=1.0)
    buffer.add(_tf("base", "camera", (0.0, 0.0, 0.5), _yaw(0.0)), static=True)
    for k in range(50):
        buffer.add(_tf("odom", "base", (0.1 * k, 0.0, 0.0), _yaw(0.0), stamp_ns=k * 100_000_000))
    T = buffer.lookup("odom", "camera", 4_550_000_000)
    np.testing.assert_allclose(T[:3, 3], [4.55, 0.0, 0.5], atol=1e-12)
    with pytest.raises(TransformUnavailable, match="before the first sample"):
        buffer.lookup("odom", "camera", 3_000_000_000)  # pruned: older than the cache


def test_errors() -> None:
    buffer = TfBuffer()
    buffer.add(_tf("a", "b", (0, 0, 0), _yaw(0.0)), static=True)
    with pytest.raises(TransformUnavailable, match="no transform chain from 'b' to 'c'"):
        buffer.lookup("c", "b")
    assert not buffer.can_transform("c", "b") and buffer.can_transform("a", "b")
    assert buffer.connected("b", "b")
    with pytest.raises(ValueError, match="empty frame id"):
        buffer.add(_tf("", "x", (0, 0, 0), _yaw(0.0)))
    with pytest.raises(ValueError, match="zero quaternion"):
        buffer.add(_tf("a", "x", (0, 0, 0), (0, 0, 0, 0)))
    with pytest.raises(ValueError, match="to itself"):
        buffer.add(_tf("a", "/a", (0, 0, 0), _yaw(0.0)))
    with pytest.raises(ValueError, match="cache_s"):
        TfBuffer(cache_s=0)


def test_node_fallback_uses_the_buffer_without_tf2(monkeypatch: pytest.MonkeyPatch) -> None:
    from dpt_ros.ros import tf as ros_tf

    monkeypatch.setattr(ros_tf, "tf2_available", lambda: False)
    source = ros_tf.LidarTransformSource("auto", np.eye(4))
    message = SimpleNamespace(transforms=[_tf("camera", "lidar", (1.0, 2.0, 3.0), _yaw(0.0))])
    source.add_tf_message(message, static=True)
    np.testing.assert_allclose(source.lookup("camera", "lidar", 0)[:3, 3], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(source.lookup("camera", "other", 0), np.eye(4))  # parameters
