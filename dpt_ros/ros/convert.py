"""numpy -> ROS messages without cv_bridge: the writers that build rclpy messages.

The readers (message -> numpy, duck-typed, no ROS imports) live in ``dpt_ros.messages`` and are
re-exported here, so the node imports its conversions from one place.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from dpt_ros.geometry import CameraModel
from dpt_ros.messages import (
    DEPTH_ENCODINGS,
    HOST_IS_BIGENDIAN,
    SUPPORTED_ENCODINGS,
    ZERO_COPY_ENCODINGS,
    CameraInfoConversionError,
    ConversionError,
    ImageConversionError,
    PointCloudConversionError,
    camera_info_to_camera,
    camera_model_info_fields,
    compressed_to_rgb,
    image_fields,
    image_to_depth,
    image_to_rgb,
    pointcloud2_fields,
    pointcloud2_to_structured,
    pointcloud2_to_xyz,
    scaled_camera_info_fields,
    stamp_to_ns,
    unpack_rgb,
)

# ---------------------------------------------------------------------------------------------
# headers and stamps


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (nanosec always in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def copy_header(header: Any) -> Header:
    """A fresh ``std_msgs/Header`` with the same stamp and frame_id (duck-typed input)."""
    return Header(
        stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
        frame_id=str(header.frame_id),
    )


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """A ``std_msgs/Header`` from a nanosecond stamp and a frame id."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# ---------------------------------------------------------------------------------------------
# buffers


def _to_message_bytes(values: np.ndarray) -> array.array:
    """Contiguous bytes of ``values`` as the ``array.array('B')`` rclpy stores (one copy)."""
    flat = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
    out = array.array("B")
    out.frombytes(flat)
    return out


class _MessageBuffer:
    """Allocates the ``array.array('B')`` a message will own and hands out a writable numpy
    view of it, so a packer writes the message's bytes in place (no copy afterwards)."""

    def __init__(self) -> None:
        self.data = array.array("B")

    def __call__(self, nbytes: int) -> np.ndarray:
        self.data = array.array("B", b"\0") * nbytes
        return np.frombuffer(self.data, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# images out


def _image_message(values: np.ndarray, header: Any, encoding: str) -> Image:
    fields = image_fields(values, encoding)  # checks dtype and shape, packs the pixels
    msg = Image()
    msg.header = copy_header(header)
    msg.height, msg.width = fields["height"], fields["width"]
    msg.encoding = fields["encoding"]
    msg.is_bigendian = fields["is_bigendian"]
    msg.step = fields["step"]
    msg.data = _to_message_bytes(fields["data"])
    return msg


def rgb_to_image(rgb: np.ndarray, header: Any, encoding: str = "rgb8") -> Image:
    """uint8 (H, W, 3) RGB -> ``sensor_msgs/Image`` in ``encoding`` ("rgb8" or "bgr8")."""
    if encoding not in ("rgb8", "bgr8"):
        raise ImageConversionError(
            f"rgb_to_image encoding must be 'rgb8' or 'bgr8', got {encoding!r}"
        )
    return _image_message(rgb, header, encoding)


def mono8_to_image(mono: np.ndarray, header: Any) -> Image:
    """uint8 (H, W) (grey values or class ids such as segmentation labels) -> mono8 Image."""
    return _image_message(mono, header, "mono8")


def depth_to_image(depth: np.ndarray, header: Any) -> Image:
    """float32 (H, W) depth in metres, NaN where unknown -> 32FC1 Image (REP 118), host order."""
    return _image_message(depth, header, "32FC1")


# ---------------------------------------------------------------------------------------------
# camera info


def camera_to_camera_info(
    camera: CameraModel, header: Any, projection: Sequence[float] | np.ndarray | None = None
) -> CameraInfo:
    """CameraModel -> ``sensor_msgs/CameraInfo`` with R = I and P = [K | 0] unless given.

    ``projection`` (3x4, e.g. from ``scale_camera_info``) keeps a stereo baseline or a
    rectified projection that differs from K. An undistorted camera is written as plumb_bob
    with five zero coefficients, which every ROS consumer understands.
    """
    return _camera_info_message(camera_model_info_fields(camera, projection), header)


def _camera_info_message(fields: dict[str, Any], header: Any) -> CameraInfo:
    msg = CameraInfo()
    msg.header = copy_header(header)
    msg.width, msg.height = fields["width"], fields["height"]
    msg.distortion_model = fields["distortion_model"]
    msg.d = [float(v) for v in fields["d"]]
    msg.k, msg.r, msg.p = fields["k"], fields["r"], fields["p"]
    return msg


def scale_camera_info(msg: Any, width: int, height: int, header: Any = None) -> CameraInfo:
    """CameraInfo for the same camera's image resized to (width, height).

    K and P are scaled like ``CameraModel.scaled`` (principal point with the half-pixel offset,
    P's Tx/Ty with the focal lengths); D, R and the distortion model are kept. ``header``
    replaces the message's header when given.
    """
    fields = scaled_camera_info_fields(msg, width, height)
    return _camera_info_message(fields, msg.header if header is None else header)


# ---------------------------------------------------------------------------------------------
# point clouds


def xyzrgb_to_pointcloud2(
    points: np.ndarray,
    rgb: np.ndarray | None,
    header: Any,
    organized: bool = False,
) -> PointCloud2:
    """Points (N, 3) or (H, W, 3) and optional uint8 colours of the same shape -> PointCloud2.

    Fields x, y, z (FLOAT32) and, with colours, ``rgb`` (FLOAT32 holding 0x00RRGGBB, as RViz
    expects; point_step 16, else 12). ``organized`` keeps the (H, W) grid and NaN points with
    ``is_dense`` telling whether any point is non-finite; otherwise the cloud is flattened to
    one row and points with a non-finite coordinate are dropped (``is_dense`` True).
    """
    buffer = _MessageBuffer()
    fields = pointcloud2_fields(points, rgb, organized, buffer=buffer)
    msg = PointCloud2()
    msg.header = copy_header(header)
    msg.height, msg.width = fields["height"], fields["width"]
    msg.fields = [
        PointField(name=name, offset=offset, datatype=datatype, count=count)
        for name, offset, datatype, count in fields["fields"]
    ]
    msg.is_bigendian = fields["is_bigendian"]
    msg.point_step = fields["point_step"]
    msg.row_step = fields["row_step"]
    msg.is_dense = fields["is_dense"]
    msg.data = buffer.data
    return msg


__all__ = [
    "DEPTH_ENCODINGS",
    "HOST_IS_BIGENDIAN",
    "SUPPORTED_ENCODINGS",
    "ZERO_COPY_ENCODINGS",
    "CameraInfoConversionError",
    "ConversionError",
    "ImageConversionError",
    "PointCloudConversionError",
    "camera_info_to_camera",
    "camera_to_camera_info",
    "compressed_to_rgb",
    "copy_header",
    "depth_to_image",
    "image_to_depth",
    "image_to_rgb",
    "make_header",
    "mono8_to_image",
    "ns_to_stamp",
    "pointcloud2_to_structured",
    "pointcloud2_to_xyz",
    "rgb_to_image",
    "scale_camera_info",
    "stamp_to_ns",
    "unpack_rgb",
    "xyzrgb_to_pointcloud2",
]
