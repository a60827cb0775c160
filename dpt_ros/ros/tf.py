"""The camera<-LiDAR transform: from tf2 when ``tf2_ros`` imports, else from a ROS-free
``TfBuffer`` fed with /tf and /tf_static (``add_tf_message``) and from parameters.

``transform_to_matrix`` and ``compose_transforms`` work on any object shaped like
``geometry_msgs/TransformStamped`` (rclpy messages and ``rosbags`` dataclasses alike), so a
``/tf_static`` read from a bag turns into a 4x4 without tf2: what machines with rclpy from PyPI
(no ``tf2_ros``) need for bags and tests.
"""

from __future__ import annotations

import importlib.util
import threading
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
    "tf_message_type",
    "transform_to_matrix",
]


def tf2_available() -> bool:
    """True when ``tf2_ros`` can be imported (a full ROS 2 install, not rclpy from PyPI)."""
    try:
        return importlib.util.find_spec("tf2_ros") is not None
    except (ImportError, ValueError):
        return False


def tf_message_type() -> type | None:
    """``tf2_msgs.msg.TFMessage``, or None when ``tf2_msgs`` is not importable (rclpy from
    PyPI ships no tf2_msgs): what a node needs to read /tf and /tf_static without tf2_ros."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


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
    imports, else parameters). ``node`` is needed for tf2 only. Without ``tf2_ros``, "tf" and
    "auto" keep a ROS-free ``TfBuffer`` (``fallback``) that the owner feeds with the /tf and
    /tf_static messages it receives (``add_tf_message``); "auto" falls back to the matrix for
    frames that buffer does not connect. Thread-safe: callbacks feed, a worker looks up.
    """

    def __init__(self, mode: str, matrix: np.ndarray | None = None, node: Any = None) -> None:
        if mode not in ("auto", "tf", "parameters"):
            raise ValueError(f"unknown transform source {mode!r}; use auto, tf or parameters")
        tf2 = tf2_available()
        # Without tf2, "tf" and "auto" honour transforms handed to ``add_tf_message`` (a
        # ROS-free TfBuffer: /tf_static and /tf, chains, interpolation); "auto" then falls back
        # to the matrix.
        self.fallback = TfBuffer() if mode != "parameters" and not tf2 else None
        self._lock = threading.Lock()  # TfBuffer is not thread-safe
        if mode == "auto":
            mode = "tf" if tf2 else "parameters"
        self.mode = mode
        self._matrix: np.ndarray | None = None
        self._buffer = None
        self._listener = None
        if mode == "tf" and not tf2:
            pass  # the fallback buffer alone
        elif mode == "tf":
            if node is None:
                raise ValueError("a tf transform source needs the node to listen on")
            import tf2_ros

            self._buffer = tf2_ros.Buffer()
            self._listener = tf2_ros.TransformListener(self._buffer, node)
        else:
            self.set_matrix(matrix)

    @property
    def describe(self) -> str:
        if self._buffer is not None:
            return "tf2"
        if self.mode == "tf":
            return "/tf and /tf_static (no tf2)"
        return "parameters" + (" (and /tf, /tf_static: no tf2)" if self.fallback else "")

    def set_matrix(self, matrix: np.ndarray | None) -> None:
        """Replace the parameter transform (None: not set)."""
        self._matrix = None if matrix is None else as_transform(matrix)

    @property
    def has_matrix(self) -> bool:
        return self._matrix is not None

    def add_tf_message(self, message: Any, static: bool = False) -> None:
        """Feed a ``tf2_msgs/TFMessage`` (from /tf or /tf_static) to the no-tf2 fallback."""
        if self.fallback is not None:
            with self._lock:
                self.fallback.add_message(message, static=static)

    def _from_fallback(
        self, camera_frame: str, lidar_frame: str, stamp_ns: int
    ) -> np.ndarray | None:
        """T_cam_lidar from the fallback buffer, or None when it does not connect the frames."""
        if self.fallback is None:
            return None
        with self._lock:
            if not self.fallback.connected(camera_frame, lidar_frame):
                return None
            return self.fallback.lookup(camera_frame, lidar_frame, stamp_ns)

    def lookup(
        self, camera_frame: str, lidar_frame: str, stamp_ns: int, timeout_s: float = 0.0
    ) -> np.ndarray:
        """T_cam_lidar at ``stamp_ns``; TransformUnavailable says why when there is none."""
        if self._buffer is None:
            found = self._from_fallback(camera_frame, lidar_frame, stamp_ns)
            if found is not None:
                return found
            if self.mode == "tf":
                with self._lock:
                    frames = self.fallback.frames
                raise TransformUnavailable(
                    f"no transform {lidar_frame!r} -> {camera_frame!r} in /tf and /tf_static "
                    f"(no tf2; frames received: {frames or 'none'})"
                )
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
