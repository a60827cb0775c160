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

import io
import os
import re
from collections.abc import Callable, Sequence
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


class ImageLimitError(ImageConversionError):
    """An image is well formed but beyond the size limits (``check_image_limits``)."""


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


def check_image_limits(
    width: int,
    height: int,
    *,
    max_pixels: int | None = None,
    max_aspect_ratio: float | None = None,
    what: str = "Image",
) -> None:
    """Refuse an image whose size would make one message cost without bound.

    The network input grows with the aspect ratio (the shorter side is resized up to the
    network size), the decoded buffers with the pixel count. Raises ImageLimitError naming the
    size and the limit (ImageConversionError for a zero size); None disables a limit.
    """
    if width <= 0 or height <= 0:
        raise ImageConversionError(f"{what} has zero size ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLimitError(
            f"{what} is {width}x{height} = {width * height} pixels, more than max_image_pixels "
            f"({max_pixels})"
        )
    aspect = max(width, height) / min(width, height)
    if max_aspect_ratio is not None and aspect > max_aspect_ratio:
        raise ImageLimitError(
            f"{what} is {width}x{height}, aspect ratio {aspect:.4g} is above max_aspect_ratio "
            f"({max_aspect_ratio:g})"
        )


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (ITU T.81 table B.1): baseline, extended, progressive, lossless,
# arithmetic and hierarchical variants; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC})
_RADIANCE_SIZE = re.compile(rb"^([-+])([XY]) (\d+) ([-+])([XY]) (\d+)$")


def _png_size(head: bytes) -> tuple[int, int] | None:
    # PNG spec 11.2.2: IHDR comes first; width and height are 4-byte big-endian.
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _jpeg_size(buf: bytes) -> tuple[int, int] | None:
    # Walk the marker segments (T.81 B.1.1) up to the first SOF: P, Y, X after the length.
    i = 2
    while i + 4 <= len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            i += 2
            continue
        length = int.from_bytes(buf[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > len(buf):
                return None
            height = int.from_bytes(buf[i + 5 : i + 7], "big")
            width = int.from_bytes(buf[i + 7 : i + 9], "big")
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        i += 2 + length
    return None


def _radiance_size(buf: bytes) -> tuple[int, int] | None:
    # Radiance RGBE: text header, an empty line, then e.g. "-Y 480 +X 640".
    lines = buf[:65536].split(b"\n")
    for j, line in enumerate(lines):
        if not line.strip() and j + 1 < len(lines):
            match = _RADIANCE_SIZE.match(lines[j + 1].strip())
            if not match:
                return None
            first, second = int(match.group(3)), int(match.group(6))
            return (second, first) if match.group(2) == b"Y" else (first, second)
    return None


def _netpbm_size(buf: bytes) -> tuple[int, int] | None:
    # PBM/PGM/PPM (P1-P6) and PFM (PF, Pf): magic, then width and height as text; # comments.
    tokens: list[bytes] = []
    for line in buf[:4096].split(b"\n"):
        tokens += line.split(b"#")[0].split()
        if len(tokens) >= 3:
            break
    if len(tokens) < 3 or not (tokens[1].isdigit() and tokens[2].isdigit()):
        return None
    return int(tokens[1]), int(tokens[2])


def _tiff_size(buf: bytes) -> tuple[int, int] | None:
    # TIFF 6.0: byte order, 42, offset of the first IFD; tags 256/257 are width/length.
    order = "little" if buf[:2] == b"II" else "big"
    offset = int.from_bytes(buf[4:8], order)
    if offset + 2 > len(buf):
        return None
    count = int.from_bytes(buf[offset : offset + 2], order)
    size: dict[int, int] = {}
    for k in range(count):
        entry = buf[offset + 2 + 12 * k : offset + 14 + 12 * k]
        if len(entry) < 12:
            return None
        tag, kind = int.from_bytes(entry[0:2], order), int.from_bytes(entry[2:4], order)
        if tag in (256, 257):
            size[tag] = int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order)
    return (size[256], size[257]) if len(size) == 2 else None


def _pillow_size(buf: bytes) -> tuple[int, int, str] | None:
    # Pillow's Image.open parses the header only; the pixels load on first access.
    try:
        from PIL import Image as PILImage

        with PILImage.open(io.BytesIO(buf)) as image:
            return int(image.size[0]), int(image.size[1]), str(image.format)
    except Exception:  # noqa: BLE001 (any parser failure means "size unknown")
        return None


def image_file_size_problem(path: str | os.PathLike, max_pixels: int) -> str | None:
    """Why the image file ``path`` is refused by the size its header claims, or None.

    Reads the first MiB only (a JPEG's SOF may follow large EXIF/ICC segments): a few bytes can
    claim 16000x16000, and decoding would allocate it. None also when no header tells the size
    (the decoder then decides). OSError when the file cannot be read.
    """
    with open(path, "rb") as f:
        header = encoded_image_size(f.read(1 << 20))
    if header is None:
        return None
    width, height, kind = header
    try:
        check_image_limits(width, height, max_pixels=max_pixels, what=f"{kind} header")
    except ImageConversionError as error:
        return str(error)
    return None


def encoded_image_size(data: Any) -> tuple[int, int, str] | None:
    """(width, height, format) from an encoded image's header, without decoding any pixel.

    PNG (IHDR), JPEG (the first SOF marker), Radiance HDR, TIFF (first IFD) and Netpbm/PFM are
    parsed here; other formats (BMP, WebP, ...) through Pillow's lazy ``Image.open``, which reads
    only the header. None when the size cannot be read from the header.
    """
    buf = data if isinstance(data, bytes) else _byte_view(data).tobytes()
    for signature, reader, name in (
        (_PNG_SIGNATURE, _png_size, "PNG"),
        (b"\xff\xd8", _jpeg_size, "JPEG"),
        (b"#?RADIANCE", _radiance_size, "Radiance HDR"),
        (b"#?RGBE", _radiance_size, "Radiance HDR"),
        (b"II*\x00", _tiff_size, "TIFF"),
        (b"MM\x00*", _tiff_size, "TIFF"),
        *((magic, _netpbm_size, "Netpbm") for magic in (b"PF", b"Pf", b"P4", b"P5", b"P6")),
    ):
        if buf.startswith(signature):
            size = reader(buf)
            return None if size is None else (*size, name)
    return _pillow_size(buf)


def _decoded_to_rgb(decoded: np.ndarray, already_rgb: bool, fmt: str) -> np.ndarray:
    """Any OpenCV-decoded image -> uint8 (H, W, 3) RGB, or ImageConversionError.

    uint8 as it is; uint16 keeps its high byte; float (HDR, PFM, float TIFF) is taken as
    [0, 1] (clipped, NaN -> 0); 1 channel is grey, 2 grey + alpha, 3 BGR (RGB when the
    format says so), 4 BGRA. Palette images arrive expanded by OpenCV.
    """
    if decoded.ndim == 2:
        decoded = decoded[:, :, None]
    channels = decoded.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageConversionError(
            f"CompressedImage (format {fmt!r}) decodes to {channels} channels; 1 to 4 supported"
        )
    if decoded.dtype == np.uint16:
        decoded = _to_8bit(decoded)
    elif decoded.dtype.kind == "f":
        scaled = np.nan_to_num(decoded.astype(np.float32, copy=False), nan=0.0)
        decoded = np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise ImageConversionError(
            f"CompressedImage (format {fmt!r}) decodes to {decoded.dtype} pixels, which have no "
            "colour scale; supported: 8- and 16-bit unsigned, float"
        )
    if channels <= 2:  # grey, or grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(decoded[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_RGBA2RGB if already_rgb else cv2.COLOR_BGRA2RGB)
    return decoded if already_rgb else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------
# images in


def image_to_rgb(
    msg: Any, *, max_pixels: int | None = None, max_aspect_ratio: float | None = None
) -> np.ndarray:
    """``sensor_msgs/Image`` -> uint8 (H, W, 3) RGB.

    Supported encodings: ``SUPPORTED_ENCODINGS``. 16-bit data (mono16, rgb16, bayer_*16) keeps
    its high byte; ``is_bigendian`` is honoured. The generic ``8UC1``/``8UC3``/``8UC4``/``16UC1``
    are read as mono8/bgr8/bgra8/mono16. For ``ZERO_COPY_ENCODINGS`` the result is a view over
    ``msg.data`` (possibly non-contiguous, writable iff the buffer is); otherwise a new array.
    Raises ImageConversionError for zero size, a step too small for the width, a data length
    other than ``step * height``, an unknown encoding, or a size beyond ``max_pixels`` /
    ``max_aspect_ratio`` (``check_image_limits``; checked before any pixel is touched).
    """
    encoding = _normalise_encoding(str(msg.encoding))
    check_image_limits(
        int(msg.width), int(msg.height), max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio
    )
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


def compressed_to_rgb(
    msg: Any, *, max_pixels: int | None = None, max_aspect_ratio: float | None = None
) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> uint8 (H, W, 3) RGB.

    ``format`` follows image_transport: ``"jpeg"``, ``"png"`` or ``"<orig>; <codec> compressed
    <enc>"``. The decoded pixels are taken as BGR (what OpenCV-based publishers write) unless the
    compressed encoding says rgb. Every decoded pixel format is converted or refused
    (``_decoded_to_rgb``: 8/16-bit, float, 1 to 4 channels). With a limit set, the size is read
    from the header (``encoded_image_size``) and checked before anything is decoded; data whose
    size the header does not tell is then refused.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ImageConversionError(
            f"CompressedImage format {fmt!r} holds depth (compressedDepth), not a colour image"
        )
    buf = _byte_view(msg.data)
    if buf.size == 0:
        raise ImageConversionError(f"CompressedImage (format {fmt!r}) has no data")
    if max_pixels is not None or max_aspect_ratio is not None:
        header = encoded_image_size(buf)
        if header is None:
            raise ImageConversionError(
                f"CompressedImage data ({buf.size} bytes, format {fmt!r}, starting "
                f"{bytes(buf[:8])!r}) has no header that tells its size; refused before decoding"
            )
        width, height, kind = header
        check_image_limits(
            width,
            height,
            max_pixels=max_pixels,
            max_aspect_ratio=max_aspect_ratio,
            what=f"CompressedImage ({kind} header)",
        )
    decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ImageConversionError(
            f"CompressedImage data ({buf.size} bytes, format {fmt!r}) could not be decoded"
        )
    if max_pixels is not None and decoded.shape[0] * decoded.shape[1] > max_pixels:
        raise ImageLimitError(
            f"CompressedImage decoded to {decoded.shape[1]}x{decoded.shape[0]}, more than its "
            f"header said and than max_image_pixels ({max_pixels})"
        )
    compressed_as = fmt.rpartition("compressed")[2].strip().lower() if ";" in fmt else ""
    return _decoded_to_rgb(decoded, compressed_as.startswith("rgb"), fmt)


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
    """``sensor_msgs/CameraInfo`` -> CameraModel of the image as delivered.

    K, D, R, P and the distortion model, with binning and ROI applied as image_geometry does
    (see ``CameraModel.from_camera_info``); ``.rectified()`` of the result is the camera of the
    rectified image. Messages without R, P, binning or ROI (hand-built objects) are read as
    R = I, P = [K | 0], no binning, full image. Raises CameraInfoConversionError for an
    uncalibrated camera (K all zero), zero size, an ROI outside the image, a bad R or P, or a
    distortion model / coefficient count the camera model does not accept.
    """
    roi = getattr(msg, "roi", None)
    try:
        r = _camera_info_field(msg, "r") if hasattr(msg, "r") or hasattr(msg, "R") else None
        p = _camera_info_field(msg, "p") if hasattr(msg, "p") or hasattr(msg, "P") else None
        return CameraModel.from_camera_info(
            [float(v) for v in _camera_info_field(msg, "k")],
            [float(v) for v in _camera_info_field(msg, "d")],
            str(msg.distortion_model),
            int(msg.width),
            int(msg.height),
            r=None if r is None else [float(v) for v in r],
            p=None if p is None else [float(v) for v in p],
            binning_x=int(getattr(msg, "binning_x", 0)),
            binning_y=int(getattr(msg, "binning_y", 0)),
            roi=None
            if roi is None
            else (int(roi.x_offset), int(roi.y_offset), int(roi.height), int(roi.width)),
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
    try:
        return np.dtype(
            {"names": wanted, "formats": formats, "offsets": offsets, "itemsize": point_step}
        )
    except (ValueError, TypeError, OverflowError) as error:
        # numpy item sizes are C ints: point_step or a field count beyond 2**31 cannot be read
        raise PointCloudConversionError(
            f"PointCloud2 layout (point_step {point_step}) cannot be represented: {error}"
        ) from None


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


# ---------------------------------------------------------------------------------------------
# numpy -> message fields (the ROS-free half of the writers)
#
# The rclpy writers in ``dpt_ros.ros.convert`` and the bag tool's rosbags writer both build
# their messages from these dicts, so pixel layout, cloud packing and camera-info scaling exist
# once. ``data`` is always a contiguous 1-D uint8 numpy array in the message's byte order.

HOST_IS_BIGENDIAN = not np.little_endian

# encoding -> (dtype, ndim) of the array an output image is made from
OUTPUT_IMAGE_ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "mono8": (np.uint8, 2),
    "32FC1": (np.float32, 2),
}


def image_fields(values: np.ndarray, encoding: str) -> dict[str, Any]:
    """uint8 (H, W, 3) RGB ("rgb8" / "bgr8"), uint8 (H, W) ("mono8") or float32 (H, W)
    ("32FC1", metres with NaN unknown, REP 118) -> ``sensor_msgs/Image`` fields: height, width,
    encoding, is_bigendian (host order for multi-byte pixels), step (no padding) and data.

    Raises ImageConversionError for another encoding, dtype or shape, or zero size.
    """
    if encoding not in OUTPUT_IMAGE_ENCODINGS:
        raise ImageConversionError(
            f"output image encoding must be one of {list(OUTPUT_IMAGE_ENCODINGS)}, got {encoding!r}"
        )
    dtype, ndim = OUTPUT_IMAGE_ENCODINGS[encoding]
    values = np.asarray(values)
    shape_ok = values.ndim == ndim and (ndim == 2 or values.shape[2] == 3)
    if not shape_ok or values.dtype != dtype:
        expected = "(H, W)" if ndim == 2 else "(H, W, 3)"
        raise ImageConversionError(
            f"{encoding} image must be a {np.dtype(dtype).name} {expected} array, got "
            f"{values.dtype.name} {values.shape}"
        )
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise ImageConversionError(f"{encoding} image has zero size {values.shape}")
    if encoding == "bgr8":
        values = values[:, :, ::-1]
    pixels = np.ascontiguousarray(values)
    return {
        "height": int(pixels.shape[0]),
        "width": int(pixels.shape[1]),
        "encoding": encoding,
        "is_bigendian": HOST_IS_BIGENDIAN if pixels.dtype.itemsize > 1 else False,
        "step": int(pixels.strides[0]),
        "data": pixels.reshape(-1).view(np.uint8),
    }


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) -> uint32 0x00RRGGBB, the layout RViz reads from a float32 ``rgb`` field;
    the inverse of ``unpack_rgb``."""
    rgb32 = rgb.astype(np.uint32)
    return (rgb32[..., 0] << 16) | (rgb32[..., 1] << 8) | rgb32[..., 2]


def pointcloud2_fields(
    points: np.ndarray,
    rgb: np.ndarray | None = None,
    organized: bool = False,
    *,
    buffer: Callable[[int], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Points (N, 3) or (H, W, 3) and optional uint8 colours of the same shape ->
    ``sensor_msgs/PointCloud2`` fields.

    Fields x, y, z (FLOAT32) and, with colours, ``rgb`` (FLOAT32 holding 0x00RRGGBB, as RViz
    expects; point_step 16, else 12); ``fields`` is a list of (name, offset, datatype, count).
    ``organized`` keeps the (H, W) grid and NaN points with ``is_dense`` telling whether any
    point is non-finite; otherwise the cloud is one row of the finite points (``is_dense``
    True). ``buffer(nbytes)`` gives the writable uint8 array to pack into (a writer passes
    its message's own buffer, so the points are copied once); default a new array.
    Raises PointCloudConversionError for bad shapes or colours.
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
    nbytes = height * width * 4 * len(names)
    data = np.empty(nbytes, np.uint8) if buffer is None else buffer(nbytes)
    cloud = data.view(np.float32).reshape(height * width, len(names))
    if colours is None:
        cloud[:] = xyz
    else:
        # Whole 12-byte points as one element each: ~20x faster than a strided (N, 3) copy.
        rows = cloud.view(np.dtype([("xyz", "V12"), ("rgb", np.uint32)])).reshape(-1)
        rows["xyz"] = np.ascontiguousarray(xyz, dtype=np.float32).view("V12").reshape(-1)
        rows["rgb"] = pack_rgb(colours)
    return {
        "height": int(height),
        "width": int(width),
        "fields": [(name, 4 * i, FLOAT32, 1) for i, name in enumerate(names)],
        "is_bigendian": HOST_IS_BIGENDIAN,
        "point_step": 4 * len(names),
        "row_step": 4 * len(names) * int(width),
        "is_dense": is_dense,
        "data": data,
    }


def camera_model_info_fields(
    camera: CameraModel, projection: Sequence[float] | np.ndarray | None = None
) -> dict[str, Any]:
    """CameraModel -> ``sensor_msgs/CameraInfo`` fields (width, height, distortion_model, d, k,
    r, p as float64 arrays) with R = I and P = [K | 0] unless ``projection`` (3x4) is given.

    An undistorted camera is written as plumb_bob with five zero coefficients, which every ROS
    consumer understands.
    """
    fields = camera.camera_info_fields()
    if projection is None:
        p = np.asarray(fields["p"], dtype=np.float64).reshape(-1)
    else:
        p = np.asarray(projection, dtype=np.float64)
        if p.size != 12:
            raise CameraInfoConversionError(f"projection must be 3x4, got shape {p.shape}")
        p = p.reshape(-1)
    d = [float(v) for v in fields["d"]] or [0.0] * 5
    return {
        "width": int(fields["width"]),
        "height": int(fields["height"]),
        "distortion_model": fields["distortion_model"],
        "d": np.asarray(d, dtype=np.float64),
        "k": np.asarray(fields["k"], dtype=np.float64).reshape(-1),
        "r": np.asarray(fields["r"], dtype=np.float64).reshape(-1),
        "p": p,
    }


def _scale_intrinsic_rows(matrix: np.ndarray, sx: float, sy: float) -> np.ndarray:
    # Same pixel-centre convention as CameraModel.scaled: u' = (u + 0.5) * sx - 0.5, so the
    # published camera_info agrees with the geometry the point cloud was built from.
    out = matrix.copy()
    out[0] *= sx
    out[1] *= sy
    out[0, 2] = (matrix[0, 2] + 0.5) * sx - 0.5
    out[1, 2] = (matrix[1, 2] + 0.5) * sy - 0.5
    return out


def scaled_camera_info_fields(msg: Any, width: int, height: int) -> dict[str, Any]:
    """CameraInfo fields (width, height, distortion_model, d, k, r, p) for the same camera's
    image resized to (width, height); duck-typed input (ROS 1 capitals too).

    K and P are scaled like ``CameraModel.scaled`` (principal point with the half-pixel offset,
    P's Tx/Ty with the focal lengths); D, R and the distortion model are kept.
    """
    src_width, src_height = int(msg.width), int(msg.height)
    if src_width <= 0 or src_height <= 0:
        raise CameraInfoConversionError(f"CameraInfo has zero size ({src_width}x{src_height})")
    if int(width) <= 0 or int(height) <= 0:
        raise CameraInfoConversionError(f"target size must be positive, got {width}x{height}")
    sx, sy = int(width) / src_width, int(height) / src_height
    k = np.asarray(_camera_info_field(msg, "k"), dtype=np.float64).reshape(3, 3)
    p = np.asarray(_camera_info_field(msg, "p"), dtype=np.float64).reshape(3, 4)
    return {
        "width": int(width),
        "height": int(height),
        "distortion_model": str(msg.distortion_model),
        "d": np.asarray([float(v) for v in _camera_info_field(msg, "d")], dtype=np.float64),
        "k": _scale_intrinsic_rows(k, sx, sy).reshape(-1),
        "r": np.asarray(_camera_info_field(msg, "r"), dtype=np.float64).reshape(-1),
        "p": _scale_intrinsic_rows(p, sx, sy).reshape(-1),
    }
