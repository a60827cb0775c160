"""Bag messages in log-time order -> events: messages to copy and images ready for the pipeline.

The matcher sees every message once, in log-time order. Camera infos, LiDAR scans and
transforms go into small buffers; each image waits until the bag has been read ``lookahead``
seconds past it (a camera info or scan recorded just after its image still matches), then is
matched by header stamp to the nearest camera info (within ``camera_info_tolerance``) and LiDAR
scan (within ``lidar_stamp_tolerance``) and to the camera<-LiDAR transform at its stamp.
Events leave strictly in log-time order, so the stream can be cut anywhere between two events
(resume segments, time chunks). Memory is bounded by the lookahead window and the buffers.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpt_ros.bag.reading import TopicPlan
from dpt_ros.config import NodeSettings
from dpt_ros.geometry import CameraModel
from dpt_ros.messages import (
    ConversionError,
    camera_info_to_camera,
    compressed_to_rgb,
    image_to_rgb,
    pointcloud2_to_xyz,
    stamp_to_ns,
)
from dpt_ros.pipeline import Frame
from dpt_ros.tf_buffer import TfBuffer, TransformUnavailable

LOOKAHEAD_S = 0.1  # beyond the LiDAR tolerance: recorders log a scan a little after its image
CAMERA_INFO_BUFFER = 30


@dataclass
class CopyEvent:
    """An input message to copy unchanged into the output."""

    connection: Any
    log_ns: int
    raw: Any


@dataclass
class ImageEvent:
    """An image with everything matched to it; ``frame`` None when it cannot be processed
    (``problem`` says why). ``warmup`` images only feed the temporal filter."""

    camera: int
    log_ns: int
    connection: Any
    raw: Any
    copy: bool
    warmup: bool
    header: Any = None
    frame: Frame | None = None
    problem: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class _Info:
    stamp: int
    msg: Any
    camera: CameraModel | None
    problem: str


@dataclass
class _Scan:
    stamp: int
    frame_id: str
    points: np.ndarray


class Matcher:
    """Feed ``(connection, log_ns, raw)`` in log order with ``feed``; ``finish`` at the end.

    ``copy_range`` / ``process_range`` are [start, end) log-time bounds (None = open);
    images before ``warm_from`` are not processed, images in ``[warm_from, process start)``
    are warm-up. ``T_parameters`` is the camera<-LiDAR transform from the settings (None when
    not set); ``transform_source`` is the node's ``lidar_transform_source``.
    """

    def __init__(
        self,
        reader: Any,
        plan: TopicPlan,
        settings: NodeSettings,
        *,
        tf: TfBuffer,
        copy_range: tuple[int | None, int | None] = (None, None),
        process_range: tuple[int | None, int | None] = (None, None),
        warm_from: int | None = None,
        T_parameters: np.ndarray | None = None,
        counters: dict[str, int] | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        self.reader = reader
        self.plan = plan
        self.settings = settings
        self.tf = tf
        self.copy_range = copy_range
        self.process_range = process_range
        self.warm_from = warm_from if warm_from is not None else process_range[0]
        self.T_parameters = T_parameters
        self.counters = counters if counters is not None else {}
        self.lock = lock if lock is not None else threading.Lock()  # guards ``counters``
        inp = settings.input
        self.lookahead_ns = int((max(inp.lidar_stamp_tolerance, 0.0) + LOOKAHEAD_S) * 1e9)
        self.info_tolerance_ns = int(inp.camera_info_tolerance * 1e9)
        self.lidar_tolerance_ns = int(inp.lidar_stamp_tolerance * 1e9)
        self._image_topics = {c.image: i for i, c in enumerate(plan.cameras)}
        self._info_topics = {c.camera_info for c in plan.cameras if c.camera_info}
        self._infos: dict[str, deque[_Info]] = {
            t: deque(maxlen=CAMERA_INFO_BUFFER) for t in self._info_topics
        }
        self._scans: deque[_Scan] = deque(maxlen=inp.lidar_buffer_size)
        self._pending: deque[CopyEvent | ImageEvent] = deque()

    # ------------------------------------------------------------------ feeding
    def _count(self, key: str) -> None:
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1

    def observe(self, connection: Any, log_ns: int, raw: Any) -> None:
        """Feed a message to the buffers only (context before the processed range)."""
        topic = connection.topic
        if topic in self._info_topics:
            self._add_info(connection, raw)
        elif topic == self.plan.lidar:
            self._add_scan(connection, raw)
        elif topic == self.plan.tf:
            self._add_tf(connection, raw, static=False)

    def feed(self, connection: Any, log_ns: int, raw: Any) -> Iterator[CopyEvent | ImageEvent]:
        """Take one message; yield the events that are ready (in log-time order)."""
        yield from self._release(log_ns)
        self.observe(connection, log_ns, raw)
        if self._in(self.copy_range, log_ns) and connection.topic not in self._image_topics:
            self._pending.append(CopyEvent(connection, log_ns, raw))
        camera = self._image_topics.get(connection.topic)
        if camera is not None:
            copy = self._in(self.copy_range, log_ns)
            start, end = self.process_range
            processed = self._in((self.warm_from, end), log_ns)
            if processed or copy:
                warmup = start is not None and log_ns < start
                self._pending.append(
                    ImageEvent(camera, log_ns, connection, raw, copy, warmup or not processed)
                )
                if not processed:
                    self._pending[-1].problem = "outside the processed range"

    def finish(self) -> Iterator[CopyEvent | ImageEvent]:
        yield from self._release(None)

    @staticmethod
    def _in(bounds: tuple[int | None, int | None], log_ns: int) -> bool:
        start, end = bounds
        return (start is None or log_ns >= start) and (end is None or log_ns < end)

    def _release(self, now_ns: int | None) -> Iterator[CopyEvent | ImageEvent]:
        pending = self._pending
        while pending:
            head = pending[0]
            waiting = isinstance(head, ImageEvent) and now_ns is not None
            if waiting and now_ns < head.log_ns + self.lookahead_ns:
                return
            pending.popleft()
            if isinstance(head, ImageEvent) and not head.problem:
                self._match(head)
            yield head

    # ------------------------------------------------------------------ buffers
    def _deserialize(self, connection: Any, raw: Any, kind: str) -> Any | None:
        try:
            return self.reader.deserialize(raw, connection.msgtype)
        except Exception:  # a malformed message is counted, never fatal
            self._count(f"malformed {kind}")
            return None

    def _add_info(self, connection: Any, raw: Any) -> None:
        msg = self._deserialize(connection, raw, "camera_info")
        if msg is None:
            return
        try:
            camera, problem = camera_info_to_camera(msg), ""
        except ConversionError as error:
            camera, problem = None, str(error)
        except (AttributeError, TypeError, ValueError) as error:
            camera, problem = None, f"CameraInfo is malformed: {error}"
        buffer = self._infos[connection.topic]
        stamp = stamp_to_ns(msg.header.stamp)
        if buffer and stamp < buffer[-1].stamp:
            buffer.clear()  # time went backwards (a restarted recording): old ones no longer apply
        buffer.append(_Info(stamp, msg, camera, problem))

    def _add_scan(self, connection: Any, raw: Any) -> None:
        msg = self._deserialize(connection, raw, "points")
        if msg is None:
            return
        try:
            points = pointcloud2_to_xyz(msg)
        except (ConversionError, AttributeError, TypeError, ValueError):
            self._count("malformed points")
            return
        stamp = stamp_to_ns(msg.header.stamp)
        if self._scans and stamp < self._scans[-1].stamp:
            self._scans.clear()
        self._scans.append(_Scan(stamp, str(msg.header.frame_id), points))

    def _add_tf(self, connection: Any, raw: Any, static: bool) -> None:
        msg = self._deserialize(connection, raw, "tf")
        if msg is None:
            return
        for transform in msg.transforms:
            try:
                self.tf.add(transform, static=static)
            except (ValueError, AttributeError, TypeError):
                self._count("malformed tf")

    @staticmethod
    def _nearest(items: Any, stamp: int, tolerance: int) -> Any | None:
        best = min(items, key=lambda item: abs(item.stamp - stamp), default=None)
        if best is None or abs(best.stamp - stamp) > tolerance:
            return None
        return best

    # ------------------------------------------------------------------ matching
    def _match(self, event: ImageEvent) -> None:
        camera_topics = self.plan.cameras[event.camera]
        msg = self._deserialize(event.connection, event.raw, "image")
        if msg is None:
            event.problem = "malformed image (cannot be deserialised)"
            return
        try:
            header = msg.header
            stamp = stamp_to_ns(header.stamp)
            frame_id = str(header.frame_id)
            rgb = compressed_to_rgb(msg) if camera_topics.compressed else image_to_rgb(msg)
        except (ConversionError, AttributeError, TypeError, ValueError) as error:
            self._count("malformed image")
            event.problem = f"malformed image: {error}"
            return
        event.header = header
        camera: CameraModel | None = None
        if camera_topics.camera_info is None:
            event.notes.append("no camera_info topic")
        else:
            info = self._nearest(
                self._infos[camera_topics.camera_info], stamp, self.info_tolerance_ns
            )
            if info is None:
                event.notes.append("no camera_info within tolerance")
            elif info.camera is None:
                event.notes.append("unusable camera_info")
            elif info.camera.size != (rgb.shape[1], rgb.shape[0]):
                event.notes.append("camera_info size differs from the image")
            else:
                camera = info.camera
        lidar: dict[str, Any] = {}
        if self.plan.lidar is not None and camera is not None:
            lidar = self._lidar_for(stamp, frame_id, event)
        event.frame = Frame(
            rgb=np.ascontiguousarray(rgb),
            stamp_ns=stamp,
            frame_id=frame_id,
            camera=camera,
            image_topic=camera_topics.image,  # image_rect* is rectified (image_type auto)
            **lidar,
        )

    def _lidar_for(self, stamp: int, camera_frame: str, event: ImageEvent) -> dict[str, Any]:
        scan = self._nearest(self._scans, stamp, self.lidar_tolerance_ns)
        if scan is None:
            event.notes.append("no LiDAR scan within tolerance")
            return {}
        try:
            T = self.transform(camera_frame, scan.frame_id, stamp)
        except TransformUnavailable:
            event.notes.append("no camera<-LiDAR transform at the image stamp")
            return {}
        return {
            "lidar_points": scan.points,
            "lidar_frame_id": scan.frame_id,
            "lidar_stamp_ns": scan.stamp,
            "T_cam_lidar": T,
        }

    def transform(self, camera_frame: str, lidar_frame: str, stamp_ns: int | None) -> np.ndarray:
        """T_cam_lidar: from the bag's /tf_static + /tf when they connect the frames (and the
        source is 'auto' or 'tf'), else from the parameters (source 'auto' or 'parameters')."""
        source = self.settings.input.lidar_transform_source
        if source != "parameters" and self.tf.connected(camera_frame, lidar_frame):
            return self.tf.lookup(camera_frame, lidar_frame, stamp_ns)
        if source != "tf" and self.T_parameters is not None:
            return self.T_parameters
        raise TransformUnavailable(
            f"no transform from {lidar_frame!r} to {camera_frame!r} in the bag's /tf_static "
            f"and /tf (frames: {self.tf.frames or 'none'})"
            + ("" if source == "tf" else " and none in the settings")
        )
