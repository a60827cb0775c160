"""The output bag: input topics copied, the pipeline's outputs added, with rosbags' Writer.

Input messages are copied as raw bytes when the input is a rosbag2 (no re-serialisation); a ROS
1 bag's messages are converted to their ROS 2 types with rosbags' own converter (the same code
as ``rosbags-convert``). Outputs are ``rosbags`` dataclasses of the ROS 2 typestore, built from
the same field dicts (``dpt_ros.messages.image_fields`` ...) as the node's rclpy messages, and
serialised as CDR. Every output carries its input image's header and the input image's log
time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpt_ros import topics
from dpt_ros.bag.errors import BagOutputError
from dpt_ros.bag.reading import TopicPlan, describe_error, quiet
from dpt_ros.geometry import CameraModel
from dpt_ros.messages import camera_model_info_fields, image_fields, pointcloud2_fields
from dpt_ros.pipeline import Result
from dpt_ros.viz import depth_picture, segmentation_picture

IMAGE, CAMERA_INFO, POINT_CLOUD = (
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CameraInfo",
    "sensor_msgs/msg/PointCloud2",
)
OUTPUT_TYPES = {
    topics.DEPTH: IMAGE,
    topics.DEPTH_INFO: CAMERA_INFO,
    topics.DEPTH_COLOR: IMAGE,
    topics.DEPTH_RELATIVE: IMAGE,
    topics.DEPTH_RELATIVE_INFO: CAMERA_INFO,
    topics.SEGMENTATION: IMAGE,
    topics.SEGMENTATION_COLOR: IMAGE,
    topics.SEGMENTATION_INFO: CAMERA_INFO,
    topics.POINTS: POINT_CLOUD,
}


def ros2_typestore() -> Any:
    """The ROS 2 typestore outputs (and converted ROS 1 messages) are written with."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def storage_plugin(storage: str) -> Any:
    from rosbags.rosbag2 import StoragePlugin

    return {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]


def open_writer(path: Path, storage: str) -> Any:
    """An open rosbags rosbag2 Writer; MCAP with zstd chunk compression (MCAP's own, which
    every MCAP reader handles: Foxglove, ros2 bag), sqlite3 uncompressed."""
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

    writer = Writer(path, version=9, storage_plugin=storage_plugin(storage))
    if storage == "mcap":
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    return writer


class OutputBag:
    """One rosbag2 being written: ``copy`` input messages, ``add`` a frame's outputs, ``close``.

    ``reader`` is the open input AnyReader (its connections are registered up front, so every
    output bag of one input has the same topics); ``labels`` says whether segmentation outputs
    exist.
    """

    def __init__(
        self,
        path: Path,
        reader: Any,
        plan: TopicPlan,
        storage: str,
        *,
        labels: bool,
        typestore: Any,
    ) -> None:
        from rosbags.convert.converter import create_connections_converters

        self.path = path
        self.typestore = typestore
        self.counts: dict[str, int] = {}
        try:
            self.writer = open_writer(path, storage)
        except Exception as error:  # rosbags' WriterError, OSError
            raise BagOutputError(
                f"{path}: cannot create the output bag: {describe_error(error)}"
            ) from None
        # ROS 2 input: raw bytes with the input's own definitions; ROS 1: converted to ROS 2.
        store = None if reader.is2 else typestore
        self._connections, self._converters = quiet(
            create_connections_converters, reader.connections, store, reader, self.writer
        )
        self._outputs: dict[str, Any] = {}
        for camera in plan.cameras:
            names = [t for t in OUTPUT_TYPES if labels or t not in topics.LABEL_TOPICS]
            for name in names:
                topic = camera.output(name)
                self._outputs[topic] = self.writer.add_connection(
                    topic, OUTPUT_TYPES[name], typestore=typestore
                )

    # ------------------------------------------------------------------ writing
    def copy(self, connection: Any, log_ns: int, raw: Any) -> None:
        data = self._converters[connection.msgtype](raw)
        self.writer.write(self._connections[(connection.id, connection.owner)], log_ns, data)
        self.counts["copied"] = self.counts.get("copied", 0) + 1

    def write(self, topic: str, log_ns: int, msg: Any) -> None:
        data = self.typestore.serialize_cdr(msg, msg.__msgtype__)
        self.writer.write(self._outputs[topic], log_ns, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


# ============================================================================ messages
class MessageFactory:
    """rosbags dataclasses of the output messages, from the shared field dicts."""

    def __init__(self, typestore: Any) -> None:
        types = typestore.types
        self._image = types[IMAGE]
        self._info = types[CAMERA_INFO]
        self._cloud = types[POINT_CLOUD]
        self._field = types["sensor_msgs/msg/PointField"]
        self._header = types["std_msgs/msg/Header"]
        self._time = types["builtin_interfaces/msg/Time"]
        self._roi = types["sensor_msgs/msg/RegionOfInterest"]

    def header(self, header: Any) -> Any:
        """A ROS 2 Header with the input's stamp and frame_id (a ROS 1 seq is dropped)."""
        stamp = self._time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec))
        return self._header(stamp=stamp, frame_id=str(header.frame_id))

    def image(self, values: np.ndarray, encoding: str, header: Any) -> Any:
        return self._image(header=header, **image_fields(values, encoding))

    def camera_info(self, camera: CameraModel, header: Any) -> Any:
        """CameraInfo of exactly ``camera``'s grid (the pipeline's ``Result.camera``: binning,
        ROI, rectification and resizing already applied), so binning 0 and a full-image ROI --
        the node's ``camera_to_camera_info`` writes the same fields."""
        return self._info(
            header=header,
            binning_x=0,
            binning_y=0,
            roi=self._roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            **camera_model_info_fields(camera),
        )

    def cloud(self, points: np.ndarray, colors: np.ndarray | None, organized: bool, header: Any):
        fields = pointcloud2_fields(points, colors, organized)
        fields["fields"] = [
            self._field(name=name, offset=offset, datatype=datatype, count=count)
            for name, offset, datatype, count in fields["fields"]
        ]
        return self._cloud(header=header, **fields)


def frame_outputs(
    factory: MessageFactory,
    camera: Any,
    result: Result,
    header: Any,
    viz: Any,
    organized: bool,
) -> tuple[list[tuple[str, Any]], list[str]]:
    """The output messages of one frame as (topic, message), and the outputs it could not
    give, each as "<topic name>: <reason>" (counted in the summary). What the node publishes,
    with the node's meanings (``dpt_ros.topics``): every camera_info is ``result.camera``, the
    exact grid of the outputs, and overlays are drawn on ``result.rgb`` (the image on that
    grid: rectified when the input was rectified)."""
    out: list[tuple[str, Any]] = []
    missing: list[str] = []
    h = factory.header(header)
    output_camera = result.camera
    if result.relative is not None:
        relative = np.ascontiguousarray(result.relative, dtype=np.float32)
        out.append((camera.output(topics.DEPTH_RELATIVE), factory.image(relative, "32FC1", h)))
        if result.metric is not None:
            metric = np.ascontiguousarray(result.metric, dtype=np.float32)
            out.append((camera.output(topics.DEPTH), factory.image(metric, "32FC1", h)))
        else:
            missing.append(f"{topics.DEPTH}: no metric scale")
        if output_camera is not None:
            for name in (topics.DEPTH_INFO, topics.DEPTH_RELATIVE_INFO):
                out.append((camera.output(name), factory.camera_info(output_camera, h)))
        else:
            missing.append(f"{topics.DEPTH_INFO}: no camera_info")
        if result.points is not None:
            cloud = factory.cloud(result.points, result.colors, organized, h)
            out.append((camera.output(topics.POINTS), cloud))
        else:
            why = "no camera_info" if output_camera is None else "no metric scale"
            missing.append(f"{topics.POINTS}: {why}")
        picture = depth_picture(
            result.metric,
            result.relative,
            colormap=viz.colormap,
            min_depth=viz.min_depth,
            max_depth=viz.max_depth,
        )
        out.append((camera.output(topics.DEPTH_COLOR), factory.image(picture, "rgb8", h)))
    if result.labels is not None:
        labels = np.ascontiguousarray(result.labels, dtype=np.uint8)
        out.append((camera.output(topics.SEGMENTATION), factory.image(labels, "mono8", h)))
        colour = segmentation_picture(result.rgb, labels, viz.overlay_alpha)
        out.append((camera.output(topics.SEGMENTATION_COLOR), factory.image(colour, "rgb8", h)))
        if output_camera is not None:
            info = factory.camera_info(output_camera, h)
            out.append((camera.output(topics.SEGMENTATION_INFO), info))
    return out, missing


# ============================================================================ merging
def copy_bag(source: Path, writer: Any) -> int:
    """Copy every message of a rosbag2 into an open rosbags Writer (raw bytes); connections
    already in the writer with the same topic, type and QoS are reused. Returns the count."""
    from rosbags.convert.converter import create_connections_converters

    from dpt_ros.bag.reading import open_bag, stream

    count = 0
    with open_bag(source) as reader:
        connections, converters = quiet(
            create_connections_converters, reader.connections, None, reader, writer
        )
        for connection, log_ns, raw in stream(reader, source):
            data = converters[connection.msgtype](raw)
            writer.write(connections[(connection.id, connection.owner)], log_ns, data)
            count += 1
    return count


def write_merged(parts: Sequence[Path], output: Path, storage: str) -> int:
    """One rosbag2 at ``output`` (must not exist) holding every message of ``parts``."""
    writer = open_writer(output, storage)
    try:
        count = sum(copy_bag(part, writer) for part in parts)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return count
