"""ROS message fields -> numpy, without ROS: the readers every front end shares.

Duck-typed: they accept any object with the ``sensor_msgs`` attribute names, so they work on
rclpy messages (``data`` is an ``array.array('B')``), on ``rosbags`` dataclasses (``data`` is a
numpy uint8 array, ROS 1 CameraInfo spells K, D, R, P in capitals) and on hand-built objects.
Nothing here imports rclpy or a message package; the writers that build rclpy messages live in
``dpt_ros.ros.convert``.

Zero-copy: ``image_to_rgb`` returns a numpy view over ``msg.data`` (no pixel copy) for the
encodings in ``ZERO_COPY_ENCODINGS``, honouring ``step`` padding; such views may be
non-contiguous and share memory with the message. ``image_to_depth`` is zero-copy for 32FC1 in
host byte order. Every other path copies once, inside the colour conversion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from dpt_ros.geometry import CameraModel

# sensor_msgs/PointField datatype codes (PointField.msg).
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)


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


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (or anything with ``sec``/``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


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


_POINTFIELD_TYPES: dict[int, str] = {
    INT8: "i1",
    UINT8: "u1",
    INT16: "i2",
    UINT16: "u2",
    INT32: "i4",
    UINT32: "u4",
    FLOAT32: "f4",
    FLOAT64: "f8",
}
_POINTFIELD_NAMES = {
    INT8: "INT8",
    UINT8: "UINT8",
    INT16: "INT16",
    UINT16: "UINT16",
    INT32: "INT32",
    UINT32: "UINT32",
    FLOAT32: "FLOAT32",
    FLOAT64: "FLOAT64",
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
            FLOAT32,
            FLOAT64,
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


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of the packed ``rgb`` field: float32 or uint32 (...,) -> uint8 (..., 3)."""
    values = np.ascontiguousarray(packed)
    if values.dtype.kind == "f":
        values = values.astype(np.float32).view(np.uint32)
    values = values.astype(np.uint32)
    return np.stack([(values >> 16) & 0xFF, (values >> 8) & 0xFF, values & 0xFF], axis=-1).astype(
        np.uint8
    )
