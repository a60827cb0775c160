"""Message conversions: every image encoding, malformed messages, depth, camera info, clouds."""

from __future__ import annotations

import array
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs is not installed")

from builtin_interfaces.msg import Time  # noqa: E402
from conftest import require_shared  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from dpt_ros.geometry import CameraModel  # noqa: E402
from dpt_ros.ros import convert  # noqa: E402
from dpt_ros.ros.convert import (  # noqa: E402
    CameraInfoConversionError,
    ImageConversionError,
    PointCloudConversionError,
)

pytestmark = pytest.mark.ros

HEADER = Header(stamp=Time(sec=1317046000, nanosec=100000000), frame_id="camera_optical")
NATIVE = "<" if sys.byteorder == "little" else ">"
FOREIGN = ">" if NATIVE == "<" else "<"


def as_data(raw: bytes | np.ndarray) -> array.array:
    out = array.array("B")
    out.frombytes(bytes(raw) if not isinstance(raw, np.ndarray) else raw.tobytes())
    return out


def image_msg(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """An Image with rows of ``pixels`` (H, W[, C]) in the given byte order plus ``pad`` bytes."""
    height, width = pixels.shape[:2]
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = pixels.reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, pad), 0xAB, np.uint8)], axis=1)
    return Image(
        header=HEADER,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=bigendian,
        step=padded.shape[1],
        data=as_data(padded),
    )


def random_rgb(height: int = 6, width: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------ image encodings


@pytest.mark.parametrize("pad", [0, 7])
def test_rgb8_is_a_view_over_the_message_buffer(pad: int) -> None:
    rgb = random_rgb()
    msg = image_msg(rgb, "rgb8", pad=pad)
    out = convert.image_to_rgb(msg)
    assert out.shape == (6, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert "rgb8" in convert.ZERO_COPY_ENCODINGS


def test_rgba8_drops_alpha_without_copy() -> None:
    rgb = random_rgb()
    rgba = np.concatenate([rgb, np.full((6, 5, 1), 9, np.uint8)], axis=2)
    msg = image_msg(rgba, "rgba8", pad=3)
    out = convert.image_to_rgb(msg)
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding", ["bgr8", "8UC3"])
def test_bgr8_and_generic_8uc3_swap_channels(encoding: str) -> None:
    rgb = random_rgb()
    out = convert.image_to_rgb(image_msg(rgb[:, :, ::-1], encoding, pad=5))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["bgra8", "8UC4"])
def test_bgra8_swaps_channels_and_drops_alpha(encoding: str) -> None:
    rgb = random_rgb()
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((6, 5, 1), 200, np.uint8)], axis=2)
    np.testing.assert_array_equal(convert.image_to_rgb(image_msg(bgra, encoding, pad=1)), rgb)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_is_replicated_to_three_channels(encoding: str) -> None:
    grey = random_rgb()[:, :, 0]
    out = convert.image_to_rgb(image_msg(grey, encoding, pad=3))
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_mono16_keeps_the_high_byte_in_either_byte_order(
    encoding: str, pad: int, bigendian: bool
) -> None:
    values = np.random.default_rng(1).integers(0, 65536, (4, 7), dtype=np.uint16)
    # an odd pad makes rows start at odd addresses: the view must still read them right
    out = convert.image_to_rgb(image_msg(values, encoding, pad=pad, bigendian=bigendian))
    expected = (values >> 8).astype(np.uint8)
    np.testing.assert_array_equal(out, np.repeat(expected[:, :, None], 3, axis=2))


@pytest.mark.parametrize("encoding", ["rgb16", "bgr16"])
def test_16bit_colour_big_endian(encoding: str) -> None:
    rgb16 = np.random.default_rng(2).integers(0, 65536, (3, 4, 3), dtype=np.uint16)
    pixels = rgb16 if encoding == "rgb16" else rgb16[:, :, ::-1]
    out = convert.image_to_rgb(image_msg(np.ascontiguousarray(pixels), encoding, bigendian=True))
    np.testing.assert_array_equal(out, (rgb16 >> 8).astype(np.uint8))


BAYER_OFFSETS = {  # pattern -> (row, col) of R and of B in the 2x2 tile
    "rggb": ((0, 0), (1, 1)),
    "bggr": ((1, 1), (0, 0)),
    "gbrg": ((1, 0), (0, 1)),
    "grbg": ((0, 1), (1, 0)),
}


def bayer_mosaic(pattern: str, colour: tuple[int, int, int], size: int, dtype: type) -> np.ndarray:
    red, green, blue = colour
    mosaic = np.full((size, size), green, dtype=dtype)
    (r_row, r_col), (b_row, b_col) = BAYER_OFFSETS[pattern]
    mosaic[r_row::2, r_col::2] = red
    mosaic[b_row::2, b_col::2] = blue
    return mosaic


@pytest.mark.parametrize("pattern", list(BAYER_OFFSETS))
def test_bayer8_uniform_colour_decodes_to_that_colour(pattern: str) -> None:
    colour = (200, 100, 30)
    msg = image_msg(bayer_mosaic(pattern, colour, 8, np.uint8), f"bayer_{pattern}8", pad=4)
    out = convert.image_to_rgb(msg)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to(colour, (4, 4, 3)))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pattern", list(BAYER_OFFSETS))
def test_bayer16_uniform_colour_decodes_to_that_colour(pattern: str, bigendian: bool) -> None:
    colour = (200, 100, 30)
    mosaic = bayer_mosaic(pattern, tuple(c * 256 + 77 for c in colour), 8, np.uint16)
    out = convert.image_to_rgb(image_msg(mosaic, f"bayer_{pattern}16", bigendian=bigendian))
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to(colour, (4, 4, 3)))


def packed_422(y: np.ndarray, u: int, v: int, order: str) -> np.ndarray:
    """(H, W) luma with constant chroma -> (H, W, 2) bytes in UYVY or YUYV order."""
    height, width = y.shape
    packed = np.empty((height, width // 2, 4), np.uint8)
    y0, y1 = y[:, 0::2], y[:, 1::2]
    if order == "uyvy":
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = u, y0, v, y1
    else:
        packed[..., 0], packed[..., 1], packed[..., 2], packed[..., 3] = y0, u, y1, v
    return packed.reshape(height, width, 2)


@pytest.mark.parametrize(
    ("encoding", "order"),
    [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")],
)
def test_yuv422_byte_orders(encoding: str, order: str) -> None:
    # black/white columns with neutral chroma: only the right byte order gives 0 and 255
    luma = np.tile(np.array([16, 235], np.uint8), (4, 3))
    out = convert.image_to_rgb(image_msg(packed_422(luma, 128, 128, order), encoding, pad=2))
    assert out.shape == (4, 6, 3)
    assert np.all(out[:, 0::2] <= 2) and np.all(out[:, 1::2] >= 253)
    # strong V is red: R well above G and B
    red = convert.image_to_rgb(image_msg(packed_422(luma * 0 + 100, 128, 240, order), encoding))
    assert np.all(red[..., 0].astype(int) - red[..., 2] > 100)
    assert np.all(red[..., 0].astype(int) - red[..., 1] > 100)


def test_sequence_data_without_buffer_is_accepted() -> None:
    rgb = random_rgb(2, 2)

    class PlainImage:  # duck-typed message whose data is a list of ints
        height, width, encoding, is_bigendian, step = 2, 2, "rgb8", False, 6
        data = rgb.reshape(-1).tolist()

    np.testing.assert_array_equal(convert.image_to_rgb(PlainImage()), rgb)


# ------------------------------------------------------------------------------ malformed images


def test_step_too_small_is_rejected() -> None:
    msg = image_msg(random_rgb(), "rgb8")
    msg.step = 14
    with pytest.raises(
        ImageConversionError, match=r"step 14 is smaller than one row .*\(15 bytes\)"
    ):
        convert.image_to_rgb(msg)


def test_wrong_data_length_names_expected_and_got() -> None:
    msg = image_msg(random_rgb(), "rgb8", pad=2)
    msg.data = msg.data[:-1]
    with pytest.raises(ImageConversionError, match=r"expected 102 bytes, got 101"):
        convert.image_to_rgb(msg)


def test_unknown_encoding_lists_supported_ones() -> None:
    msg = image_msg(random_rgb(), "rgb8")
    msg.encoding = "hsv8"
    with pytest.raises(ImageConversionError, match=r"'hsv8'.*supported:.*rgb8.*bayer_rggb8"):
        convert.image_to_rgb(msg)


def test_zero_size_is_rejected() -> None:
    msg = Image(height=0, width=4, encoding="rgb8", step=12)
    with pytest.raises(ImageConversionError, match="zero size"):
        convert.image_to_rgb(msg)


def test_odd_width_yuv422_is_rejected() -> None:
    msg = image_msg(np.zeros((2, 3, 2), np.uint8), "yuv422")
    with pytest.raises(ImageConversionError, match="width must be even"):
        convert.image_to_rgb(msg)


def test_image_conversion_error_is_a_value_error() -> None:
    assert issubclass(ImageConversionError, ValueError)
    assert issubclass(PointCloudConversionError, convert.ConversionError)


# ------------------------------------------------------------------------------ compressed


def compressed_msg(bgr_or_grey: np.ndarray, extension: str, fmt: str) -> CompressedImage:
    ok, encoded = cv2.imencode(extension, bgr_or_grey)
    assert ok
    return CompressedImage(header=HEADER, format=fmt, data=as_data(encoded))


def smooth_rgb(height: int = 32, width: int = 48) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 7 % 256, cols * 5 % 256, (rows + cols) * 2 % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "bgr8; png compressed bgr8"])
def test_png_round_trip_is_exact(fmt: str) -> None:
    rgb = smooth_rgb()
    out = convert.compressed_to_rgb(compressed_msg(rgb[:, :, ::-1], ".png", fmt))
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8"])
def test_jpeg_round_trip_is_close(fmt: str) -> None:
    rgb = smooth_rgb()
    out = convert.compressed_to_rgb(compressed_msg(rgb[:, :, ::-1], ".jpg", fmt))
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 4


def test_png_compressed_as_rgb_is_not_swapped() -> None:
    rgb = smooth_rgb()
    msg = compressed_msg(rgb, ".png", "rgb8; png compressed rgb8")
    np.testing.assert_array_equal(convert.compressed_to_rgb(msg), rgb)


def test_mono_16bit_and_bgra_png() -> None:
    grey16 = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)
    out = convert.compressed_to_rgb(compressed_msg(grey16, ".png", "mono16; png compressed mono16"))
    np.testing.assert_array_equal(out, np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, 2))
    rgb = smooth_rgb()
    bgra = np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    out = convert.compressed_to_rgb(compressed_msg(bgra, ".png", "png"))
    np.testing.assert_array_equal(out, rgb)


def test_undecodable_and_empty_compressed_data() -> None:
    garbage = CompressedImage(format="jpeg", data=as_data(b"not an image at all"))
    with pytest.raises(
        ImageConversionError, match=r"19 bytes, format 'jpeg'.*could not be decoded"
    ):
        convert.compressed_to_rgb(garbage)
    with pytest.raises(ImageConversionError, match="no data"):
        convert.compressed_to_rgb(CompressedImage(format="png"))
    depth = CompressedImage(format="16UC1; compressedDepth png", data=as_data(b"\0" * 20))
    with pytest.raises(ImageConversionError, match="compressedDepth"):
        convert.compressed_to_rgb(depth)


# ------------------------------------------------------------------------------ images out


def test_rgb_to_image_round_trip_and_header_copy() -> None:
    rgb = random_rgb(5, 9)
    msg = convert.rgb_to_image(rgb, HEADER)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", 5, 9, 27)
    assert msg.header == HEADER and msg.header is not HEADER
    np.testing.assert_array_equal(convert.image_to_rgb(msg), rgb)
    bgr = convert.rgb_to_image(rgb[:, ::2], HEADER, encoding="bgr8")  # non-contiguous input
    assert bgr.encoding == "bgr8" and bgr.step == 15
    np.testing.assert_array_equal(np.frombuffer(bgr.data, np.uint8)[:3], rgb[0, 0, ::-1])
    np.testing.assert_array_equal(convert.image_to_rgb(bgr), rgb[:, ::2])


def test_mono8_to_image_holds_labels() -> None:
    labels = np.arange(24, dtype=np.uint8).reshape(4, 6)
    msg = convert.mono8_to_image(labels, HEADER)
    assert (msg.encoding, msg.step) == ("mono8", 6)
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(4, 6), labels)


def test_output_images_reject_bad_arrays() -> None:
    with pytest.raises(ImageConversionError, match=r"uint8 \(H, W, 3\).*float32 \(4, 4, 3\)"):
        convert.rgb_to_image(np.zeros((4, 4, 3), np.float32), HEADER)
    with pytest.raises(ImageConversionError, match="'rgb8' or 'bgr8'"):
        convert.rgb_to_image(random_rgb(), HEADER, encoding="mono8")
    with pytest.raises(ImageConversionError, match=r"float32 \(H, W\)"):
        convert.depth_to_image(np.zeros((4, 4), np.float64), HEADER)
    with pytest.raises(ImageConversionError, match="zero size"):
        convert.mono8_to_image(np.zeros((0, 4), np.uint8), HEADER)


# ------------------------------------------------------------------------------ depth


def test_32fc1_round_trip_keeps_nans() -> None:
    depth = np.random.default_rng(3).uniform(0.5, 80.0, (7, 11)).astype(np.float32)
    depth[2, 3] = np.nan
    depth[0, :4] = np.nan
    msg = convert.depth_to_image(depth, HEADER)
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("32FC1", 44, sys.byteorder == "big")
    back = convert.image_to_depth(msg)
    np.testing.assert_array_equal(back, depth)  # NaNs compare equal positionally here
    assert np.shares_memory(back, np.frombuffer(msg.data, np.uint8))


def test_32fc1_foreign_byte_order_and_padding() -> None:
    depth = np.array([[1.5, np.nan, 3.25], [4.0, 0.5, np.inf]], np.float32)
    rows = depth.astype(FOREIGN + "f4").view(np.uint8).reshape(2, 12)
    padded = np.concatenate([rows, np.zeros((2, 4), np.uint8)], axis=1)
    msg = Image(height=2, width=3, encoding="32FC1", step=16, data=as_data(padded))
    msg.is_bigendian = FOREIGN == ">"
    out = convert.image_to_depth(msg)
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, depth)


def test_16uc1_millimetres_with_zero_unknown() -> None:
    mm = np.array([[0, 1000, 2500], [65535, 1, 0]], np.uint16)
    out = convert.image_to_depth(image_msg(mm, "16UC1", pad=2, bigendian=True))
    expected = np.array([[np.nan, 1.0, 2.5], [65.535, 0.001, np.nan]], np.float32)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_depth_rejects_colour_encodings() -> None:
    with pytest.raises(ImageConversionError, match=r"depth encoding 'rgb8'.*32FC1"):
        convert.image_to_depth(image_msg(random_rgb(), "rgb8"))


# ------------------------------------------------------------------------------ headers


def test_stamp_nanosecond_round_trip() -> None:
    ns = 1_317_046_000_123_456_789
    stamp = convert.ns_to_stamp(ns)
    assert (stamp.sec, stamp.nanosec) == (1_317_046_000, 123_456_789)
    assert convert.stamp_to_ns(stamp) == ns
    header = convert.make_header(ns, "cam")
    assert header.frame_id == "cam" and convert.stamp_to_ns(header.stamp) == ns
    copied = convert.copy_header(header)
    copied.stamp.sec = 5
    assert header.stamp.sec == 1_317_046_000


# ------------------------------------------------------------------------------ camera info

KITTI_K = [721.5377, 0.0, 609.5593, 0.0, 721.5377, 172.854, 0.0, 0.0, 1.0]


def kitti_info() -> CameraInfo:
    return CameraInfo(
        header=HEADER,
        width=1242,
        height=375,
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=KITTI_K,
        r=np.eye(3).reshape(-1),
        p=KITTI_K[:3] + [0.0] + KITTI_K[3:6] + [0.0] + KITTI_K[6:] + [0.0],
    )


def test_camera_info_to_camera_and_back() -> None:
    camera = convert.camera_info_to_camera(kitti_info())
    assert isinstance(camera, CameraModel)
    assert (camera.width, camera.height, camera.fx, camera.cy) == (1242, 375, 721.5377, 172.854)
    msg = convert.camera_to_camera_info(camera, HEADER)
    assert msg.header == HEADER and (msg.width, msg.height) == (1242, 375)
    np.testing.assert_allclose(msg.k, KITTI_K)
    np.testing.assert_allclose(msg.p, kitti_info().p)
    np.testing.assert_allclose(msg.r, np.eye(3).reshape(-1))
    assert msg.distortion_model == "plumb_bob" and len(msg.d) == 5 and not any(msg.d)


def test_camera_to_camera_info_with_given_projection() -> None:
    camera = CameraModel.pinhole(500.0, 500.0, 320.0, 240.0, 640, 480)
    p = np.array([[500.0, 0, 320, -60.0], [0, 500, 240, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(convert.camera_to_camera_info(camera, HEADER, p).p, p.reshape(-1))
    with pytest.raises(CameraInfoConversionError, match="3x4"):
        convert.camera_to_camera_info(camera, HEADER, np.eye(3))


def test_uncalibrated_camera_info_is_rejected() -> None:
    info = kitti_info()
    info.k = [0.0] * 9
    with pytest.raises(CameraInfoConversionError, match="not calibrated"):
        convert.camera_info_to_camera(info)
    info = kitti_info()
    info.width = 0
    with pytest.raises(CameraInfoConversionError, match="width and height"):
        convert.camera_info_to_camera(info)


def test_scale_camera_info_matches_camera_model_scaled() -> None:
    info = kitti_info()
    info.p[3] = -386.1448  # a stereo Tx scales with fx
    scaled = convert.scale_camera_info(info, 621, 188)
    expected = convert.camera_info_to_camera(info).scaled(621, 188)
    assert (scaled.width, scaled.height) == (621, 188) and scaled.header == HEADER
    np.testing.assert_allclose(np.asarray(scaled.k).reshape(3, 3), expected.K)
    np.testing.assert_allclose(np.asarray(scaled.p).reshape(3, 4)[:, :3], expected.K)
    assert scaled.p[3] == pytest.approx(-386.1448 * 621 / 1242)
    with pytest.raises(CameraInfoConversionError, match="positive"):
        convert.scale_camera_info(info, 0, 10)


def test_ros1_style_camera_info_with_capital_matrices() -> None:
    class Ros1Info:
        width, height, distortion_model = 1242, 375, "plumb_bob"
        K, D = KITTI_K, [0.0] * 5

    assert convert.camera_info_to_camera(Ros1Info()).fx == 721.5377


# ------------------------------------------------------------------------------ point clouds

FLOAT_TYPES = {"f4": PointField.FLOAT32, "f8": PointField.FLOAT64, "u2": PointField.UINT16}


def cloud_msg(
    values: dict[str, np.ndarray],
    offsets: dict[str, int],
    point_step: int,
    height: int = 1,
    row_pad: int = 0,
    bigendian: bool = False,
) -> PointCloud2:
    """PointCloud2 with the given per-field arrays (shape (height*width,)) at chosen offsets."""
    order = ">" if bigendian else "<"
    names = list(values)
    dtype = np.dtype(
        {
            "names": names,
            "formats": [order + values[n].dtype.str[1:] for n in names],
            "offsets": [offsets[n] for n in names],
            "itemsize": point_step,
        }
    )
    count = len(next(iter(values.values())))
    width = count // height
    points = np.zeros(count, dtype)
    raw = np.frombuffer(points, np.uint8).copy().reshape(count, point_step)
    raw[:] = 0xEE  # gaps hold junk, never read
    points = raw.view(dtype).reshape(count)
    for name in names:
        points[name] = values[name]
    rows = points.view(np.uint8).reshape(height, width * point_step)
    rows = np.concatenate([rows, np.full((height, row_pad), 0xCD, np.uint8)], axis=1)
    return PointCloud2(
        header=HEADER,
        height=height,
        width=width,
        fields=[
            PointField(
                name=n, offset=offsets[n], datatype=FLOAT_TYPES[values[n].dtype.str[1:]], count=1
            )
            for n in names
        ],
        is_bigendian=bigendian,
        point_step=point_step,
        row_step=width * point_step + row_pad,
        data=as_data(rows),
        is_dense=False,
    )


def xyz_columns(n: int, dtype: type = np.float32, seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-50, 50, (n, 3)).astype(dtype)


@pytest.mark.parametrize("bigendian", [False, True])
def test_cloud_with_unusual_field_order_and_gaps(bigendian: bool) -> None:
    xyz = xyz_columns(10)
    intensity = np.arange(10, dtype=np.float32)
    values = {"intensity": intensity, "z": xyz[:, 2], "x": xyz[:, 0], "y": xyz[:, 1]}
    msg = cloud_msg(values, {"intensity": 0, "z": 8, "x": 16, "y": 24}, 36, bigendian=bigendian)
    out = convert.pointcloud2_to_xyz(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, xyz)
    structured = convert.pointcloud2_to_structured(msg, ["intensity"])
    np.testing.assert_array_equal(structured["intensity"].reshape(-1), intensity)


def test_float64_cloud_keeps_precision_on_request() -> None:
    xyz = xyz_columns(8, np.float64) + 1e6
    msg = cloud_msg({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}, {"x": 0, "y": 8, "z": 16}, 32)
    np.testing.assert_array_equal(convert.pointcloud2_to_xyz(msg, dtype=np.float64), xyz)
    np.testing.assert_allclose(convert.pointcloud2_to_xyz(msg), xyz, rtol=1e-7)


def test_organised_cloud_with_row_padding_and_nans() -> None:
    xyz = xyz_columns(12)
    xyz[[1, 7]] = np.nan
    xyz[4, 2] = np.inf
    values = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    msg = cloud_msg(values, {"x": 0, "y": 4, "z": 8}, 16, height=3, row_pad=10)
    finite = np.isfinite(xyz).all(axis=1)
    np.testing.assert_array_equal(convert.pointcloud2_to_xyz(msg), xyz[finite])
    grid = convert.pointcloud2_to_xyz(msg, keep_organized=True)
    assert grid.shape == (3, 4, 3)
    np.testing.assert_array_equal(grid.reshape(-1, 3), xyz)


def test_empty_cloud_gives_no_points() -> None:
    msg = PointCloud2(
        height=1,
        width=0,
        point_step=16,
        row_step=0,
        fields=[PointField(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")],
    )
    assert convert.pointcloud2_to_xyz(msg).shape == (0, 3)


def test_malformed_clouds_have_clear_errors() -> None:
    xyz = xyz_columns(4)
    good = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    msg = cloud_msg({"x": xyz[:, 0], "z": xyz[:, 2]}, {"x": 0, "z": 8}, 16)
    with pytest.raises(
        PointCloudConversionError, match=r"lacks field\(s\) \['y'\]; it has \['x', 'z'\]"
    ):
        convert.pointcloud2_to_xyz(msg)
    msg = cloud_msg(good, {"x": 0, "y": 4, "z": 8}, 16)
    msg.point_step = 10
    with pytest.raises(PointCloudConversionError, match="'z'.*offset 8.*point_step 10"):
        convert.pointcloud2_to_xyz(msg)
    msg = cloud_msg(good, {"x": 0, "y": 4, "z": 8}, 16)
    msg.row_step = 60
    with pytest.raises(PointCloudConversionError, match="row_step 60 is smaller than width 4"):
        convert.pointcloud2_to_xyz(msg)
    msg = cloud_msg(good, {"x": 0, "y": 4, "z": 8}, 16)
    msg.data = msg.data[:-16]
    with pytest.raises(PointCloudConversionError, match="expected 64 bytes, got 48"):
        convert.pointcloud2_to_xyz(msg)
    ints = {"x": xyz[:, 0], "y": xyz[:, 1], "z": np.arange(4, dtype=np.uint16)}
    with pytest.raises(PointCloudConversionError, match="'z' is UINT16"):
        convert.pointcloud2_to_xyz(cloud_msg(ints, {"x": 0, "y": 4, "z": 8}, 12))
    msg = cloud_msg(good, {"x": 0, "y": 4, "z": 8}, 16)
    msg.fields[1].datatype = 42
    with pytest.raises(PointCloudConversionError, match="unknown datatype 42"):
        convert.pointcloud2_to_xyz(msg)


def test_xyzrgb_unorganised_drops_nans_and_packs_rgb() -> None:
    xyz = xyz_columns(6)
    xyz[2, 0] = np.nan
    rgb = np.array([[255, 128, 1]] * 6, np.uint8)
    rgb[3] = (1, 2, 3)
    msg = convert.xyzrgb_to_pointcloud2(xyz, rgb, HEADER, organized=False)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 5, 16, 80)
    assert msg.is_dense and msg.header == HEADER
    assert [(f.name, f.offset, f.datatype) for f in msg.fields] == [
        ("x", 0, 7),
        ("y", 4, 7),
        ("z", 8, 7),
        ("rgb", 12, 7),
    ]
    packed = np.frombuffer(msg.data, np.uint8).reshape(5, 16)[:, 12:].copy().view(NATIVE + "u4")
    assert packed[0, 0] == 0x00FF8001 and packed[2, 0] == 0x00010203
    keep = np.isfinite(xyz).all(axis=1)
    np.testing.assert_array_equal(convert.pointcloud2_to_xyz(msg), xyz[keep])
    colours = convert.unpack_rgb(convert.pointcloud2_to_structured(msg, ["rgb"])["rgb"])
    np.testing.assert_array_equal(colours.reshape(-1, 3), rgb[keep])


def test_xyzrgb_organised_keeps_nans_and_grid() -> None:
    xyz = xyz_columns(12).reshape(3, 4, 3)
    xyz[1, 2] = np.nan
    rgb = random_rgb(3, 4)
    msg = convert.xyzrgb_to_pointcloud2(xyz, rgb, HEADER, organized=True)
    assert (msg.height, msg.width, msg.row_step, msg.is_dense) == (3, 4, 64, False)
    np.testing.assert_array_equal(convert.pointcloud2_to_xyz(msg, keep_organized=True), xyz)
    dense = convert.xyzrgb_to_pointcloud2(np.nan_to_num(xyz), rgb, HEADER, organized=True)
    assert dense.is_dense


def test_xyz_only_cloud_and_bad_inputs() -> None:
    msg = convert.xyzrgb_to_pointcloud2(xyz_columns(3), None, HEADER)
    assert msg.point_step == 12 and [f.name for f in msg.fields] == ["x", "y", "z"]
    with pytest.raises(PointCloudConversionError, match=r"\(N, 3\) or \(H, W, 3\)"):
        convert.xyzrgb_to_pointcloud2(np.zeros((4, 2), np.float32), None, HEADER)
    with pytest.raises(PointCloudConversionError, match="rgb must be uint8"):
        convert.xyzrgb_to_pointcloud2(xyz_columns(3), np.zeros((3, 3), np.float32), HEADER)


# ------------------------------------------------------------------------------ real bags


def rclpy_header(header) -> Header:  # noqa: ANN001 - a rosbags dataclass
    return Header(
        stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id
    )


def rclpy_pointcloud2(msg) -> PointCloud2:  # noqa: ANN001 - a rosbags dataclass
    return PointCloud2(
        header=rclpy_header(msg.header),
        height=msg.height,
        width=msg.width,
        fields=[
            PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
            for f in msg.fields
        ],
        is_bigendian=bool(msg.is_bigendian),
        point_step=msg.point_step,
        row_step=msg.row_step,
        data=as_data(msg.data),
        is_dense=bool(msg.is_dense),
    )


def rclpy_image(msg) -> Image:  # noqa: ANN001 - a rosbags dataclass
    return Image(
        header=rclpy_header(msg.header),
        height=msg.height,
        width=msg.width,
        encoding=msg.encoding,
        is_bigendian=bool(msg.is_bigendian),
        step=msg.step,
        data=as_data(msg.data),
    )


def read_bag(path: Path, topic: str, ros1: bool = False) -> list:
    rosbags_highlevel = pytest.importorskip("rosbags.highlevel")
    typesys = pytest.importorskip("rosbags.typesys")
    store = typesys.get_typestore(typesys.Stores.ROS1_NOETIC if ros1 else typesys.Stores.ROS2_JAZZY)
    with rosbags_highlevel.AnyReader([path], default_typestore=store) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        assert connections, f"{topic} not in {path}"
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(connections)]


def test_real_padded_vendor_cloud_from_ros1_bag(sampledata_dir: Path) -> None:
    bag = sampledata_dir / "ros1" / "embag_test.bag"
    if not bag.is_file():
        pytest.skip(f"{bag} is not present")
    messages = read_bag(bag, "/luminar_pointcloud", ros1=True)
    assert len(messages) == 5
    for raw_msg in messages:
        assert raw_msg.point_step == 32
        assert [(f.name, f.offset) for f in raw_msg.fields][:4] == [
            ("x", 0),
            ("y", 4),
            ("z", 8),
            ("intensity", 16),
        ]
        # independent reference: strided float32 reads straight from the bytes
        floats = np.frombuffer(raw_msg.data.tobytes(), "<f4").reshape(-1, 8)
        reference = floats[:, :3][np.isfinite(floats[:, :3]).all(axis=1)]
        for msg in (rclpy_pointcloud2(raw_msg), raw_msg):  # rclpy message and rosbags duck
            xyz = convert.pointcloud2_to_xyz(msg)
            np.testing.assert_array_equal(xyz, reference)
            assert 30_000 < len(xyz) <= raw_msg.width
            ranges = np.linalg.norm(xyz, axis=1)
            assert 0 < ranges.max() < 260
            fields = convert.pointcloud2_to_structured(msg, ["intensity", "laser_id"])
            np.testing.assert_array_equal(fields["intensity"].reshape(-1), floats[:, 4])
            assert fields["laser_id"].dtype.kind == "u"


KITTI_BAG = Path("rosbag2") / "kitti_2frames_raw_sqlite3"


def test_kitti_rosbag2_image_and_clouds(sampledata_dir: Path) -> None:
    bag = sampledata_dir / KITTI_BAG
    if not bag.is_dir():
        pytest.skip(f"{bag} is not present")
    # The bag's frames against the KITTI files they were made from: both must be there (a
    # missing file skips the test visibly, and fails it in CI), never a silent pass.
    kitti = sampledata_dir / "kitti_object" / "training"
    frames = ("000001", "000002")
    pngs = [require_shared(kitti / "image_2" / f"{f}.png", "KITTI sample image") for f in frames]
    scans = [require_shared(kitti / "velodyne" / f"{f}.bin", "KITTI sample scan") for f in frames]
    images = read_bag(bag, "/kitti/camera_color_left/image_raw")
    clouds = read_bag(bag, "/kitti/velo/pointcloud")
    infos = read_bag(bag, "/kitti/camera_color_left/camera_info")
    assert len(images) == len(clouds) == len(infos) == 2
    for png, velodyne, image, cloud, info, count in zip(
        pngs, scans, images, clouds, infos, (120_268, 126_891), strict=True
    ):
        msg = rclpy_image(image)
        rgb = convert.image_to_rgb(msg)
        assert rgb.shape == (375, 1242, 3)
        assert np.shares_memory(rgb, np.frombuffer(msg.data, np.uint8))
        np.testing.assert_array_equal(rgb, cv2.imread(str(png))[:, :, ::-1])
        np.testing.assert_array_equal(convert.image_to_rgb(image), rgb)  # rosbags duck

        xyz = convert.pointcloud2_to_xyz(rclpy_pointcloud2(cloud))
        assert xyz.shape == (count, 3)
        scan = np.fromfile(velodyne, np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(xyz, scan[:, :3])

        camera = convert.camera_info_to_camera(info)
        assert (camera.width, camera.height, camera.fx) == (1242, 375, 721.5377)


def test_kitti_mcap_compressed_images_match_raw(sampledata_dir: Path) -> None:
    mcap = sampledata_dir / "rosbag2" / "kitti_2frames_png_mcap"
    raw = sampledata_dir / KITTI_BAG
    if not (mcap.is_dir() and raw.is_dir()):
        pytest.skip("KITTI rosbag2 sample bags are not present")
    compressed = read_bag(mcap, "/kitti/camera_color_left/image_raw/compressed")
    images = read_bag(raw, "/kitti/camera_color_left/image_raw")
    for packed, image in zip(compressed, images, strict=True):
        assert packed.format == "rgb8; png compressed bgr8"
        np.testing.assert_array_equal(
            convert.compressed_to_rgb(packed), convert.image_to_rgb(image)
        )
