"""A small ROS-free transform buffer: static and dynamic transforms, chains, interpolation.

What tf2's ``BufferCore`` does for one process, without ROS: it takes
``geometry_msgs/TransformStamped`` messages (rclpy messages, ``rosbags`` dataclasses or any
object with the same attribute names) from ``/tf_static`` and ``/tf`` and answers "T_target_source
at this stamp" over chains of any length. Between two samples of a dynamic edge the rotation is
slerped and the translation interpolated linearly (as tf2 does); a stamp outside an edge's
samples is an extrapolation error, not a guess. Static edges hold at every stamp. Frame ids are
compared without a leading slash (tf2 ignores it). Used by the bag tool and by the node when
tf2_ros is not importable.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpt_ros.geometry import transform_from_quaternion

__all__ = ["TfBuffer", "TransformUnavailable", "strip_frame"]

DEFAULT_CACHE_S = 10.0  # tf2's default cache time


class TransformUnavailable(RuntimeError):
    """The transform cannot be had (frames not connected, stamp outside the data, ...)."""


def strip_frame(frame: str) -> str:
    """A frame id as tf2 compares it: without a leading slash."""
    return str(frame).lstrip("/")


@dataclass
class _Edge:
    """Samples of one parent->child transform: (stamp_ns, translation, quaternion xyzw)."""

    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    rotations: list[np.ndarray] = field(default_factory=list)


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Shortest-path spherical interpolation of unit quaternions (x, y, z, w)."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are one rotation: take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp avoids dividing by sin(~0)
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(dot, 1.0))
    s = math.sin(theta)
    return (math.sin((1.0 - t) * theta) * q0 + math.sin(t * theta) * q1) / s


class TfBuffer:
    """Transforms by (parent, child) edge; lookups walk the tree in either direction.

    ``cache_s`` bounds the history kept per dynamic edge (older samples than the newest minus
    ``cache_s`` are dropped), so memory stays bounded on a long stream. Not thread-safe.
    """

    def __init__(self, cache_s: float = DEFAULT_CACHE_S) -> None:
        if not cache_s > 0:
            raise ValueError(f"cache_s must be positive, got {cache_s!r}")
        self.cache_ns = int(cache_s * 1e9)
        self._edges: dict[tuple[str, str], _Edge] = {}
        self._neighbours: dict[str, set[tuple[str, str]]] = {}

    # ------------------------------------------------------------------ filling
    def add(self, transform: Any, static: bool = False) -> None:
        """One TransformStamped (header.frame_id = parent, child_frame_id = child).

        A static edge keeps only its latest value (as ``/tf_static`` latching does); a dynamic
        edge keeps its samples in stamp order. Raises ValueError for an empty frame id, a
        non-finite value or a zero quaternion.
        """
        parent = strip_frame(transform.header.frame_id)
        child = strip_frame(transform.child_frame_id)
        if not parent or not child:
            raise ValueError(f"transform with an empty frame id: {parent!r} -> {child!r}")
        if parent == child:
            raise ValueError(f"transform from frame {parent!r} to itself")
        t = transform.transform
        translation = np.array(
            [t.translation.x, t.translation.y, t.translation.z], dtype=np.float64
        )
        rotation = np.array(
            [t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w], dtype=np.float64
        )
        norm = float(np.linalg.norm(rotation))
        if not (np.isfinite(translation).all() and math.isfinite(norm) and norm > 1e-9):
            raise ValueError(
                f"transform {parent!r} -> {child!r} has a non-finite value or zero quaternion"
            )
        rotation /= norm
        key = (parent, child)
        edge = self._edges.get(key)
        if edge is None or edge.static != static:
            edge = self._edges[key] = _Edge(static=static)
            self._neighbours.setdefault(parent, set()).add(key)
            self._neighbours.setdefault(child, set()).add(key)
        if static:  # valid at every stamp: its own stamp does not matter
            edge.stamps, edge.translations, edge.rotations = [0], [translation], [rotation]
            return
        stamp = int(transform.header.stamp.sec) * 1_000_000_000 + int(
            transform.header.stamp.nanosec
        )
        i = bisect.bisect_right(edge.stamps, stamp)
        if i > 0 and edge.stamps[i - 1] == stamp:  # same stamp again: the newer value wins
            edge.translations[i - 1], edge.rotations[i - 1] = translation, rotation
        else:
            edge.stamps.insert(i, stamp)
            edge.translations.insert(i, translation)
            edge.rotations.insert(i, rotation)
        horizon = edge.stamps[-1] - self.cache_ns
        drop = bisect.bisect_left(edge.stamps, horizon)
        if drop > 0:
            del edge.stamps[:drop], edge.translations[:drop], edge.rotations[:drop]

    def add_message(self, message: Any, static: bool = False) -> None:
        """Every transform of a ``tf2_msgs/TFMessage``."""
        for transform in message.transforms:
            self.add(transform, static=static)

    def add_all(self, transforms: Iterable[Any], static: bool = False) -> None:
        for transform in transforms:
            self.add(transform, static=static)

    @property
    def frames(self) -> list[str]:
        """Every frame id seen, sorted."""
        return sorted(self._neighbours)

    # ------------------------------------------------------------------ lookups
    def lookup(
        self, target_frame: str, source_frame: str, stamp_ns: int | None = None
    ) -> np.ndarray:
        """T_target_source (4x4 float64: points in ``source_frame`` -> ``target_frame``).

        ``stamp_ns`` None uses each dynamic edge's latest sample (tf2's "time 0"). Raises
        TransformUnavailable when the frames do not connect or a dynamic edge on the chain has
        no samples around ``stamp_ns``.
        """
        target, source = strip_frame(target_frame), strip_frame(source_frame)
        if target == source:
            return np.eye(4)
        path = self._path(source, target)
        T = np.eye(4)  # T_frame_source for the frame reached so far
        for parent, child, forward in path:
            T_parent_child = self._edge_at(parent, child, stamp_ns)
            T = (T_parent_child if forward else np.linalg.inv(T_parent_child)) @ T
        return T

    def can_transform(
        self, target_frame: str, source_frame: str, stamp_ns: int | None = None
    ) -> bool:
        try:
            self.lookup(target_frame, source_frame, stamp_ns)
        except TransformUnavailable:
            return False
        return True

    def connected(self, target_frame: str, source_frame: str) -> bool:
        """True when a chain of edges (at any time) joins the two frames."""
        target, source = strip_frame(target_frame), strip_frame(source_frame)
        if target == source:
            return True
        try:
            self._path(source, target)
        except TransformUnavailable:
            return False
        return True

    def _path(self, source: str, target: str) -> list[tuple[str, str, bool]]:
        """Edges from source to target: (parent, child, True) when walked child -> parent."""
        # Breadth-first: the shortest chain, as in a tree there is only one.
        previous: dict[str, tuple[str, tuple[str, str, bool]] | None] = {source: None}
        queue = deque([source])
        while queue:
            frame = queue.popleft()
            if frame == target:
                break
            for parent, child in self._neighbours.get(frame, ()):
                # From the child we go up (apply T_parent_child), from the parent down.
                step = (parent, child, frame == child)
                other = parent if frame == child else child
                if other not in previous:
                    previous[other] = (frame, step)
                    queue.append(other)
        if target not in previous:
            raise TransformUnavailable(
                f"no transform chain from {source!r} to {target!r} (frames: {self.frames})"
            )
        steps = []
        frame = target
        while previous[frame] is not None:
            frame, step = previous[frame]  # type: ignore[misc]
            steps.append(step)
        return steps[::-1]

    def _edge_at(self, parent: str, child: str, stamp_ns: int | None) -> np.ndarray:
        edge = self._edges[(parent, child)]
        if edge.static or stamp_ns is None:
            return transform_from_quaternion(edge.translations[-1], edge.rotations[-1])
        stamps = edge.stamps
        stamp = int(stamp_ns)
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            return transform_from_quaternion(edge.translations[i], edge.rotations[i])
        if i == 0 or i == len(stamps):
            when = "before the first" if i == 0 else "after the last"
            raise TransformUnavailable(
                f"transform {parent!r} -> {child!r} at {stamp * 1e-9:.6f} s is {when} sample "
                f"({stamps[0] * 1e-9:.6f}..{stamps[-1] * 1e-9:.6f} s): extrapolation refused"
            )
        t0, t1 = stamps[i - 1], stamps[i]
        w = (stamp - t0) / (t1 - t0)
        translation = (1.0 - w) * edge.translations[i - 1] + w * edge.translations[i]
        rotation = _slerp(edge.rotations[i - 1], edge.rotations[i], w)
        return transform_from_quaternion(translation, rotation)
