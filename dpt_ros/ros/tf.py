"""The camera<-LiDAR transform: from tf2 when ``tf2_ros`` imports, else from parameters.

``transform_to_matrix`` and ``compose_transforms`` work on any object shaped like
``geometry_msgs/TransformStamped`` (rclpy messages and ``rosbags`` dataclasses alike), so a
``/tf_static`` read from a bag turns into a 4x4 without tf2: what machines with rclpy from PyPI
(no ``tf2_ros``) need for bags and tests.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

import numpy as np

from dpt_ros.geometry import as_transform, transform_from_quaternion
from dpt_ros.tf_buffer import TfBuffer, TransformUnavailable, strip_frame

__all__ = [
    "LidarTransformSource",
    "TransformUnavailable",
    "compose_transforms",
    "tf2_available",
    "transform_to_matrix",
]


def tf2_available() -> bool:
    """True when ``tf2_ros`` can be imported (a full ROS 2 install, not rclpy from PyPI)."""
    try:
        return importlib.util.find_spec("tf2_ros") is not None
    except (ImportError, ValueError):
        return False


def transform_to_matrix(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` (or a TransformStamped) -> 4x4 mapping child to parent."""
    t = getattr(transform, "transform", transform)
    translation = (t.translation.x, t.translation.y, t.translation.z)
    rotation = (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w)
    return transform_from_quaternion(translation, rotation)


_strip = strip_frame  # tf2 ignores a leading slash; some bags carry "/velo_link"


def compose_transforms(
    transforms: Iterable[Any], target_frame: str, source_frame: str
) -> np.ndarray:
    """T_target_source (4x4: points in ``source_frame`` -> ``target_frame``) from a list of
    TransformStamped (header.frame_id = parent, child_frame_id = child), walking the tree in
    either direction. For ``/tf_static``, where each edge has one value; later messages for the
    same edge replace earlier ones. Raises TransformUnavailable when the frames do not connect.
    """
    buffer = TfBuffer()
    buffer.add_all(transforms, static=True)
    target, source = _strip(target_frame), _strip(source_frame)
    if target != source and not buffer.connected(target, source):
        raise TransformUnavailable(
            f"no transform chain from {source!r} to {target!r} in the given transforms "
            f"(frames: {buffer.frames})"
        )
    return as_transform(buffer.lookup(target, source))


class LidarTransformSource:
    """T_cam_lidar for a frame pair at a stamp.

    ``mode``: "tf" (a tf2 buffer filled by a TransformListener on ``node``), "parameters" (a
    fixed matrix, replaceable at run time with ``set_matrix``), or "auto" (tf when ``tf2_ros``
    imports, else parameters). ``node`` is needed for tf only.
    """

    def __init__(self, mode: str, matrix: np.ndarray | None = None, node: Any = None) -> None:
        if mode not in ("auto", "tf", "parameters"):
            raise ValueError(f"unknown transform source {mode!r}; use auto, tf or parameters")
        # Without tf2, "auto" still honours transforms handed to ``add_tf_message`` (a ROS-free
        # TfBuffer: /tf_static and /tf, chains, interpolation) and falls back to the matrix.
        self.fallback = TfBuffer() if mode == "auto" and not tf2_available() else None
        if mode == "auto":
            mode = "tf" if tf2_available() else "parameters"
        self.mode = mode
        self._matrix: np.ndarray | None = None
        self._buffer = None
        self._listener = None
        if mode == "tf":
            if not tf2_available():
                raise ValueError(
                    "lidar_transform_source is 'tf' but tf2_ros cannot be imported (rclpy from "
                    "PyPI has no tf2): set lidar_T_cam_lidar, or lidar_translation and "
                    "lidar_rotation, with lidar_transform_source 'parameters'"
                )
            if node is None:
                raise ValueError("a tf transform source needs the node to listen on")
            import tf2_ros

            self._buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._buffer, node)
        else:
            self.set_matrix(matrix)

    @property
    def describe(self) -> str:
        return "tf2" if self.mode == "tf" else "parameters"

    def set_matrix(self, matrix: np.ndarray | None) -> None:
        """Replace the parameter transform (None: not set)."""
        self._matrix = None if matrix is None else as_transform(matrix)

    @property
    def has_matrix(self) -> bool:
        return self._matrix is not None

    def add_tf_message(self, message: Any, static: bool = False) -> None:
        """Feed a ``tf2_msgs/TFMessage`` (from /tf or /tf_static) to the no-tf2 fallback."""
        if self.fallback is not None:
            self.fallback.add_message(message, static=static)

    def lookup(
        self, camera_frame: str, lidar_frame: str, stamp_ns: int, timeout_s: float = 0.0
    ) -> np.ndarray:
        """T_cam_lidar at ``stamp_ns``; TransformUnavailable says why when there is none."""
        if self.mode == "parameters":
            if self.fallback is not None and self.fallback.connected(camera_frame, lidar_frame):
                return self.fallback.lookup(camera_frame, lidar_frame, stamp_ns)
            if self._matrix is None:
                raise TransformUnavailable(
                    "no camera<-LiDAR transform: tf2_ros is not available and neither "
                    "lidar_T_cam_lidar nor lidar_translation + lidar_rotation is set"
                )
            return self._matrix
        from rclpy.duration import Duration
        from rclpy.time import Time

        try:
            msg = self._buffer.lookup_transform(
                _strip(camera_frame),
                _strip(lidar_frame),
                Time(nanoseconds=int(stamp_ns)),
                timeout=Duration(nanoseconds=int(timeout_s * 1e9)),
            )
        except Exception as error:  # tf2's lookup, connectivity and extrapolation errors
            raise TransformUnavailable(
                f"tf2 has no transform {lidar_frame!r} -> {camera_frame!r} at the image stamp: "
                f"{error}"
            ) from None
        return transform_to_matrix(msg)
