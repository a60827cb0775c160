"""ROS message <-> numpy conversions without cv_bridge.

Readers are duck-typed: they accept any object with the ``sensor_msgs`` attribute names, so they
work on rclpy messages (``data`` is an ``array.array('B')``) and on ``rosbags`` dataclasses
(``data`` is a numpy uint8 array) alike. Writers always build rclpy messages.

Zero-copy: ``image_to_rgb`` returns a numpy view over ``msg.data`` (no pixel copy) for the
encodings in ``ZERO_COPY_ENCODINGS``, honouring ``step`` padding; such views may be
non-contiguous and share memory with the message. ``image_to_depth`` is zero-copy for 32FC1 in
host byte order. Every other path copies once, inside the colour conversion.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from dpt_ros.geometry import CameraModel

HOST_IS_BIGENDIAN = sys.byteorder == "big"


class ConversionError(ValueError):
    """A message cannot be converted; the text names the problem."""


class ImageConversionError(ConversionError):
    """An Image or CompressedImage is malformed or uses an unsupported encoding."""


class PointCloudConversionError(ConversionError):
    """A PointCloud2's layout is inconsistent or lacks the fields asked for."""


class CameraInfoConversionError(ConversionError):
    """A CameraInfo does not describe a usable calibrated camera."""


# encoding -> (channels, bytes per channel). Generic OpenCV-style names follow cv_bridge's
# convention that a bare 8UC3/8UC4 buffer is in OpenCV's BGR(A) order.
_LAYOUT: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "8UC3": (3, 1),
    "8UC4": (4, 1),
    "rgb16": (3, 2),
    "bgr16": (3, 2),
    "mono8": (1, 1),
    "8UC1": (1, 1),
    "mono16": (1, 2),
    "16UC1": (1, 2),
    "bayer_rggb8": (1, 1),
    "bayer_bggr8": (1, 1),
    "bayer_gbrg8": (1, 1),
    "bayer_grbg8": (1, 1),
    "bayer_rggb16": (1, 2),
    "bayer_bggr16": (1, 2),
    "bayer_gbrg16": (1, 2),
    "bayer_grbg16": (1, 2),
    # packed 4:2:2, two bytes per pixel
    "yuv422": (2, 1),
    "uyvy": (2, 1),
    "yuv422_yuy2": (2, 1),
    "yuyv": (2, 1),
}

# OpenCV names a Bayer pattern after the second row's first two pixels, ROS after the first
# row's: ROS rggb is OpenCV BayerBG.
_BAYER_TO_RGB = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}

# ROS "yuv422" and "uyvy" are U Y0 V Y1; "yuv422_yuy2" and "yuyv" are Y0 U Y1 V.
_YUV_TO_RGB = {
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV,
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUT)
ZERO_COPY_ENCODINGS: frozenset[str] = frozenset({"rgb8", "rgba8"})
DEPTH_ENCODINGS: tuple[str, ...] = ("32FC1", "16UC1")


# ---------------------------------------------------------------------------------------------
# headers and stamps


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (or anything with ``sec``/``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


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


def _byte_view(data: Any) -> np.ndarray:
    """A flat uint8 view over a message's ``data`` without copying where the buffer allows."""
    if isinstance(data, np.ndarray):
        if data.dtype == np.uint8 and data.ndim == 1 and data.flags.c_contiguous:
            return data
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        # plain sequences of ints (hand-built messages) have no buffer to view
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _to_message_bytes(values: np.ndarray) -> array.array:
    """Contiguous bytes of ``values`` as the ``array.array('B')`` rclpy stores (one copy)."""
    flat = np.ascontiguousarray(values).reshape(-1).view(np.uint8)
    out = array.array("B")
    out.frombytes(flat)
    return out


def _check_image_size(msg: Any) -> tuple[int, int, int]:
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageConversionError(f"Image has zero size ({width}x{height})")
    return height, width, step


def _pixel_view(msg: Any, encoding: str) -> np.ndarray:
    """(H, W, C) view of the pixels in the message's byte order, honouring ``step``."""
    height, width, step = _check_image_size(msg)
    channels, depth = _LAYOUT[encoding]
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageConversionError(
            f"Image step {step} is smaller than one row of {width} {encoding} pixels "
            f"({row_bytes} bytes)"
        )
    buf = _byte_view(msg.data)
    expected = step * height
    if buf.size != expected:
        raise ImageConversionError(
            f"Image data length is wrong for {width}x{height} {encoding} with step {step}: "
            f"expected {expected} bytes, got {buf.size}"
        )
    byte_order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype(np.uint8) if depth == 1 else np.dtype(byte_order + "u2")
    return np.ndarray(
        (height, width, channels),
        dtype=dtype,
        buffer=buf,
        strides=(step, channels * depth, depth),
    )


def _normalise_encoding(encoding: str) -> str:
    if encoding in _LAYOUT:
        return encoding
    lowered = encoding.lower()
    if lowered in _LAYOUT:
        return lowered
    raise ImageConversionError(
        f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
    )


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """Keep the high byte of 16-bit data; native-order uint8."""
    if pixels.dtype.itemsize == 1:
        return pixels
    return (pixels >> 8).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# images in


def image_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` -> uint8 (H, W, 3) RGB.

    Supported encodings: ``SUPPORTED_ENCODINGS``. 16-bit data (mono16, rgb16, bayer_*16) keeps
    its high byte; ``is_bigendian`` is honoured. The generic ``8UC1``/``8UC3``/``8UC4``/``16UC1``
    are read as mono8/bgr8/bgra8/mono16. For ``ZERO_COPY_ENCODINGS`` the result is a view over
    ``msg.data`` (possibly non-contiguous, writable iff the buffer is); otherwise a new array.
    Raises ImageConversionError for zero size, a step too small for the width, a data length
    other than ``step * height`` or an unknown encoding.
    """
    encoding = _normalise_encoding(str(msg.encoding))
    pixels = _pixel_view(msg, encoding)
    if encoding in ("rgb8", "rgba8"):
        return pixels[:, :, :3]
    if encoding.startswith("bayer_"):
        pattern = encoding[len("bayer_") : len("bayer_") + 4]
        mosaic = pixels[:, :, 0]
        if not mosaic.dtype.isnative:
            mosaic = mosaic.astype(np.uint16)
        return _to_8bit(cv2.cvtColor(mosaic, _BAYER_TO_RGB[pattern]))
    if encoding in _YUV_TO_RGB:
        if msg.width % 2:
            raise ImageConversionError(f"{encoding} image width must be even, got {msg.width}")
        return cv2.cvtColor(pixels, _YUV_TO_RGB[encoding])
    pixels = _to_8bit(pixels)
    if encoding == "rgb16":
        return np.ascontiguousarray(pixels)
    if encoding in ("bgr8", "8UC3", "bgr16"):
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if encoding in ("bgra8", "8UC4"):
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    # single channel: mono8, 8UC1, mono16, 16UC1
    return cv2.cvtColor(pixels[:, :, 0], cv2.COLOR_GRAY2RGB)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> uint8 (H, W, 3) RGB.

    ``format`` follows image_transport: ``"jpeg"``, ``"png"`` or ``"<orig>; <codec> compressed
    <enc>"``. The decoded pixels are taken as BGR (what OpenCV-based publishers write) unless the
    compressed encoding says rgb. Grey and 16-bit images (high byte kept) are accepted.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ImageConversionError(
            f"CompressedImage format {fmt!r} holds depth (compressedDepth), not a colour image"
        )
    buf = _byte_view(msg.data)
    if buf.size == 0:
        raise ImageConversionError(f"CompressedImage (format {fmt!r}) has no data")
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageConversionError(
            f"CompressedImage data ({buf.size} bytes, format {fmt!r}) could not be decoded"
        )
    decoded = _to_8bit(decoded)
    compressed_as = fmt.rpartition("compressed")[2].strip().lower() if ";" in fmt else ""
    already_rgb = compressed_as.startswith("rgb")
    if decoded.ndim == 2 or decoded.shape[2] == 1:
        return cv2.cvtColor(decoded.reshape(decoded.shape[:2]), cv2.COLOR_GRAY2RGB)
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_RGBA2RGB if already_rgb else cv2.COLOR_BGRA2RGB)
    return decoded if already_rgb else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def image_to_depth(msg: Any) -> np.ndarray:
    """Depth ``sensor_msgs/Image`` -> float32 (H, W) metres, NaN where unknown (REP 118).

    32FC1 is metres (non-finite stays NaN; zero-copy when in host byte order); 16UC1 is
    millimetres with 0 meaning unknown (the two encodings REP 118 allows).
    """
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"unsupported depth encoding {encoding!r}; supported: {', '.join(DEPTH_ENCODINGS)}"
        )
    if encoding != "32FC1":
        millimetres = _pixel_view(msg, encoding)[:, :, 0]
        depth = millimetres.astype(np.float32) / np.float32(1000.0)
        depth[millimetres == 0] = np.nan
        return depth
    height, width, step = _check_image_size(msg)
    if step < width * 4:
        raise ImageConversionError(
            f"Image step {step} is smaller than one row of {width} 32FC1 pixels ({width * 4} bytes)"
        )
    buf = _byte_view(msg.data)
    if buf.size != step * height:
        raise ImageConversionError(
            f"Image data length is wrong for {width}x{height} 32FC1 with step {step}: "
            f"expected {step * height} bytes, got {buf.size}"
        )
    dtype = np.dtype(">f4" if msg.is_bigendian else "<f4")
    depth = np.ndarray((height, width), dtype=dtype, buffer=buf, strides=(step, 4))
    if dtype.isnative:
        return depth
    return depth.astype(np.float32)


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


def _camera_info_field(msg: Any, name: str) -> Any:
    # ROS 1 messages (rosbags) spell the matrices in capitals: K, D, R, P.
    return getattr(msg, name) if hasattr(msg, name) else getattr(msg, name.upper())


def camera_info_to_camera(msg: Any) -> CameraModel:
    """``sensor_msgs/CameraInfo`` -> CameraModel (K, D, distortion model, size).

    Raises CameraInfoConversionError for an uncalibrated camera (K all zero), zero size, or a
    distortion model / coefficient count the camera model does not accept.
    """
    try:
        return CameraModel.from_camera_info(
            [float(v) for v in _camera_info_field(msg, "k")],
            [float(v) for v in _camera_info_field(msg, "d")],
            str(msg.distortion_model),
            int(msg.width),
            int(msg.height),
        )
    except ValueError as error:
        raise CameraInfoConversionError(f"CameraInfo is not usable: {error}") from error


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

_POINTFIELD_TYPES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_POINTFIELD_NAMES = {
    PointField.INT8: "INT8",
    PointField.UINT8: "UINT8",
    PointField.INT16: "INT16",
    PointField.UINT16: "UINT16",
    PointField.INT32: "INT32",
    PointField.UINT32: "UINT32",
    PointField.FLOAT32: "FLOAT32",
    PointField.FLOAT64: "FLOAT64",
}


def _field_dtype(msg: Any, names: Sequence[str] | None) -> np.dtype:
    order = ">" if msg.is_bigendian else "<"
    point_step = int(msg.point_step)
    fields = {}
    for field in msg.fields:
        name = str(field.name)
        if name in fields:
            raise PointCloudConversionError(f"PointCloud2 field {name!r} appears twice")
        fields[name] = field
    wanted = list(fields) if names is None else list(names)
    missing = [name for name in wanted if name not in fields]
    if missing:
        raise PointCloudConversionError(
            f"PointCloud2 lacks field(s) {missing}; it has {list(fields)}"
        )
    formats, offsets = [], []
    for name in wanted:
        field = fields[name]
        code = int(field.datatype)
        if code not in _POINTFIELD_TYPES:
            raise PointCloudConversionError(
                f"PointCloud2 field {name!r} has unknown datatype {code}"
            )
        count = max(int(field.count), 1)
        base = np.dtype(order + _POINTFIELD_TYPES[code])
        fmt = base if count == 1 else np.dtype((base, (count,)))
        offset = int(field.offset)
        if offset + fmt.itemsize > point_step:
            raise PointCloudConversionError(
                f"PointCloud2 field {name!r} ({_POINTFIELD_NAMES[code]} x{count} at offset "
                f"{offset}) does not fit in point_step {point_step}"
            )
        formats.append(fmt)
        offsets.append(offset)
    return np.dtype(
        {"names": wanted, "formats": formats, "offsets": offsets, "itemsize": point_step}
    )


def pointcloud2_to_structured(msg: Any, names: Sequence[str] | None = None) -> np.ndarray:
    """(height, width) structured view over a PointCloud2's points (no copy).

    ``names`` selects fields (default: all). Honours field offsets, ``point_step`` padding,
    ``row_step`` padding and ``is_bigendian``; values keep the message's byte order. Duck-typed:
    rosbags messages work too.
    """
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    dtype = _field_dtype(msg, names)
    buf = _byte_view(msg.data)
    if height * width == 0:
        if buf.size != 0 and height * row_step != buf.size:
            raise PointCloudConversionError(
                f"PointCloud2 has no points ({width}x{height}) but {buf.size} data bytes"
            )
        return np.zeros((height, width), dtype=dtype)
    if point_step <= 0:
        raise PointCloudConversionError(
            f"PointCloud2 point_step must be positive, got {point_step}"
        )
    if row_step < width * point_step:
        raise PointCloudConversionError(
            f"PointCloud2 row_step {row_step} is smaller than width {width} x point_step "
            f"{point_step} = {width * point_step}"
        )
    if buf.size != row_step * height:
        raise PointCloudConversionError(
            f"PointCloud2 data length is wrong for {width}x{height} points with row_step "
            f"{row_step}: expected {row_step * height} bytes, got {buf.size}"
        )
    return np.ndarray((height, width), dtype=dtype, buffer=buf, strides=(row_step, point_step))


def pointcloud2_to_xyz(
    msg: Any, dtype: type = np.float32, keep_organized: bool = False
) -> np.ndarray:
    """PointCloud2 -> (N, 3) finite points (x, y, z fields as FLOAT32 or FLOAT64).

    With ``keep_organized`` the result is (height, width, 3) with non-finite points kept.
    Raises PointCloudConversionError when x/y/z are missing, not floating point, or the sizes
    in the message do not add up.
    """
    points = pointcloud2_to_structured(msg, ("x", "y", "z"))
    for field in msg.fields:
        if field.name in ("x", "y", "z") and int(field.datatype) not in (
            PointField.FLOAT32,
            PointField.FLOAT64,
        ):
            raise PointCloudConversionError(
                f"PointCloud2 field {field.name!r} is "
                f"{_POINTFIELD_NAMES.get(int(field.datatype), int(field.datatype))}; "
                "x, y and z must be FLOAT32 or FLOAT64"
            )
        if field.name in ("x", "y", "z") and int(field.count) > 1:
            raise PointCloudConversionError(
                f"PointCloud2 field {field.name!r} has count {field.count}; expected 1"
            )
    if keep_organized:
        grid = np.empty(points.shape + (3,), dtype=dtype)
        for axis, name in enumerate(("x", "y", "z")):
            grid[..., axis] = points[name]
        return grid
    columns = [points[name].reshape(-1) for name in ("x", "y", "z")]
    # per-column tests and gathers: several times faster than isfinite(...).all(axis=1) on Nx3
    finite = np.isfinite(columns[0]) & np.isfinite(columns[1]) & np.isfinite(columns[2])
    xyz = np.empty((int(np.count_nonzero(finite)), 3), dtype=dtype)
    for axis, column in enumerate(columns):
        xyz[:, axis] = column[finite]
    return xyz


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


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of the packed ``rgb`` field: float32 or uint32 (...,) -> uint8 (..., 3)."""
    values = np.ascontiguousarray(packed)
    if values.dtype.kind == "f":
        values = values.astype(np.float32).view(np.uint32)
    values = values.astype(np.uint32)
    return np.stack([(values >> 16) & 0xFF, (values >> 8) & 0xFF, values & 0xFF], axis=-1).astype(
        np.uint8
    )


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
