"""numpy -> ROS messages without cv_bridge: the writers that build rclpy messages.

The readers (message -> numpy, duck-typed, no ROS imports) live in ``dpt_ros.messages`` and are
re-exported here, so the node imports its conversions from one place.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from dpt_ros.geometry import CameraModel
from dpt_ros.messages import (
    DEPTH_ENCODINGS,
    SUPPORTED_ENCODINGS,
    ZERO_COPY_ENCODINGS,
    CameraInfoConversionError,
    ConversionError,
    ImageConversionError,
    PointCloudConversionError,
    _camera_info_field,
    camera_info_to_camera,
    compressed_to_rgb,
    image_to_depth,
    image_to_rgb,
    pointcloud2_to_structured,
    pointcloud2_to_xyz,
    stamp_to_ns,
    unpack_rgb,
)

HOST_IS_BIGENDIAN = sys.byteorder == "big"


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


# ---------------------------------------------------------------------------------------------
# images out


def _image_message(pixels: np.ndarray, header: Any, encoding: str) -> Image:
    pixels = np.ascontiguousarray(pixels)
    msg = Image()
    msg.header = copy_header(header)
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = HOST_IS_BIGENDIAN if pixels.dtype.itemsize > 1 else False
    msg.step = int(pixels.strides[0])
    msg.data = _to_message_bytes(pixels)
    return msg


def _check_output_image(values: np.ndarray, what: str, ndim: int, dtype: type) -> None:
    shape_ok = values.ndim == ndim and (ndim == 2 or values.shape[2] == 3)
    if not shape_ok or values.dtype != dtype:
        expected = "(H, W)" if ndim == 2 else "(H, W, 3)"
        raise ImageConversionError(
            f"{what} must be a {np.dtype(dtype).name} {expected} array, got "
            f"{values.dtype.name} {values.shape}"
        )
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ImageConversionError(f"{what} has zero size {values.shape}")


def rgb_to_image(rgb: np.ndarray, header: Any, encoding: str = "rgb8") -> Image:
    """uint8 (H, W, 3) RGB -> ``sensor_msgs/Image`` in ``encoding`` ("rgb8" or "bgr8")."""
    _check_output_image(rgb, "RGB image", 3, np.uint8)
    if encoding == "rgb8":
        return _image_message(rgb, header, "rgb8")
    if encoding == "bgr8":
        return _image_message(rgb[:, :, ::-1], header, "bgr8")
    raise ImageConversionError(f"rgb_to_image encoding must be 'rgb8' or 'bgr8', got {encoding!r}")


def mono8_to_image(mono: np.ndarray, header: Any) -> Image:
    """uint8 (H, W) (grey values or class ids such as segmentation labels) -> mono8 Image."""
    _check_output_image(mono, "mono8 image", 2, np.uint8)
    return _image_message(mono, header, "mono8")


def depth_to_image(depth: np.ndarray, header: Any) -> Image:
    """float32 (H, W) depth in metres, NaN where unknown -> 32FC1 Image (REP 118), host order."""
    _check_output_image(depth, "depth image", 2, np.float32)
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
    fields = camera.camera_info_fields()
    msg = CameraInfo()
    msg.header = copy_header(header)
    msg.width, msg.height = int(fields["width"]), int(fields["height"])
    msg.distortion_model = fields["distortion_model"]
    msg.d = [float(v) for v in fields["d"]] or [0.0] * 5
    msg.k = np.asarray(fields["k"], dtype=np.float64)
    msg.r = np.asarray(fields["r"], dtype=np.float64)
    if projection is None:
        msg.p = np.asarray(fields["p"], dtype=np.float64)
    else:
        p = np.asarray(projection, dtype=np.float64)
        if p.size != 12:
            raise CameraInfoConversionError(f"projection must be 3x4, got shape {p.shape}")
        msg.p = p.reshape(-1)
    return msg


def _scale_intrinsic_rows(matrix: np.ndarray, sx: float, sy: float) -> np.ndarray:
    # Same pixel-centre convention as CameraModel.scaled: u' = (u + 0.5) * sx - 0.5, so the
    # published camera_info agrees with the geometry the point cloud was built from.
    out = matrix.copy()
    out[0] *= sx
    out[1] *= sy
    out[0, 2] = (matrix[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (matrix[1, 2] + 0.5) * sy - 0.5
    return out


def scale_camera_info(msg: Any, width: int, height: int, header: Any = None) -> CameraInfo:
    """CameraInfo for the same camera's image resized to (width, height).

    K and P are scaled like ``CameraModel.scaled`` (principal point with the half-pixel offset,
    P's Tx/Ty with the focal lengths); D, R and the distortion model are kept. ``header``
    replaces the message's header when given.
    """
    src_width, src_height = int(msg.width), int(msg.height)
    if src_width <= 0 or src_height <= 0:
        raise CameraInfoConversionError(f"CameraInfo has zero size ({src_width}x{src_height})")
    if int(width) <= 0 or int(height) <= 0:
        raise CameraInfoConversionError(f"target size must be positive, got {width}x{height}")
    sx, sy = int(width) / src_width, int(height) / src_height
    k = np.asarray(_camera_info_field(msg, "k"), dtype=np.float64).reshape(3, 3)
    p = np.asarray(_camera_info_field(msg, "p"), dtype=np.float64).reshape(3, 4)
    out = CameraInfo()
    out.header = copy_header(msg.header if header is None else header)
    out.width, out.height = int(width), int(height)
    out.distortion_model = str(msg.distortion_model)
    out.d = [float(v) for v in _camera_info_field(msg, "d")]
    out.k = _scale_intrinsic_rows(k, sx, sy).reshape(-1)
    out.r = np.asarray(_camera_info_field(msg, "r"), dtype=np.float64).reshape(-1)
    out.p = _scale_intrinsic_rows(p, sx, sy).reshape(-1)
    return out


# ---------------------------------------------------------------------------------------------
# point clouds


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> uint32 0x00RRGGBB, the layout RViz reads from a float32 ``rgb`` field."""
    rgb32 = rgb.astype(np.uint32)
    return (rgb32[..., 0] << 16) | (rgb32[..., 1] << 8) | rgb32[..., 2]


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
    points = np.asarray(points)
    if points.ndim not in (2, 3) or points.shape[-1] != 3:
        raise PointCloudConversionError(
            f"points must be (N, 3) or (H, W, 3), got shape {points.shape}"
        )
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != points.shape or rgb.dtype != np.uint8:
            raise PointCloudConversionError(
                f"rgb must be uint8 with the points' shape {points.shape}, got "
                f"{rgb.dtype.name} {rgb.shape}"
            )
    grid = points.shape[:-1] if points.ndim == 3 else (1, points.shape[0])
    xyz = points.reshape(-1, 3)
    colours = None if rgb is None else rgb.reshape(-1, 3)
    finite = np.isfinite(xyz[:, 0]) & np.isfinite(xyz[:, 1]) & np.isfinite(xyz[:, 2])
    if organized:
        height, width = grid
        is_dense = bool(finite.all())
    else:
        if not finite.all():
            # integer take is several times faster than boolean-mask indexing of Nx3 rows
            kept = np.flatnonzero(finite)
            xyz = np.take(xyz, kept, axis=0)
            colours = None if colours is None else np.take(colours, kept, axis=0)
        height, width = 1, xyz.shape[0]
        is_dense = True

    names = ["x", "y", "z"] + ([] if colours is None else ["rgb"])
    cloud = np.empty((height * width, len(names)), dtype=np.float32)
    cloud[:, :3] = xyz
    if colours is not None:
        cloud.view(np.uint32)[:, 3] = _pack_rgb(colours)

    msg = PointCloud2()
    msg.header = copy_header(header)
    msg.height, msg.width = int(height), int(width)
    msg.fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate(names)
    ]
    msg.is_bigendian = HOST_IS_BIGENDIAN
    msg.point_step = 4 * len(names)
    msg.row_step = 4 * len(names) * int(width)
    msg.is_dense = is_dense
    msg.data = _to_message_bytes(cloud)
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
