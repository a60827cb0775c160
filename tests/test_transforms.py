"""The authors' preprocessing (MiDaS Resize / NormalizeImage / PrepareForNet) and the resize of
predictions back to the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpt_ros.transforms import (
    network_input_size,
    preprocess_image,
    preprocess_tensor,
    resize_prediction,
)


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A camera-like uint8 RGB image: smooth gradients plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack(
        [
            128 + 100 * np.sin(xx / 37.0 + c) * np.cos(yy / 23.0 - c) + rng.normal(0, 6, xx.shape)
            for c in range(3)
        ],
        axis=-1,
    )
    return np.clip(base, 0, 255).astype(np.uint8)


# --- network input size --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ((384, 384), (384, 384)),
        ((480, 640), (384, 512)),
        ((640, 480), (512, 384)),
        ((375, 1242), (384, 1280)),  # KITTI: 1242 * 384/375 = 1271.8 -> 1280
        ((10, 10), (384, 384)),
        ((1080, 1920), (384, 672)),  # 682.7 -> 21.3 multiples -> 672
        # numpy's round-half-to-even, as MiDaS: 400/32 = 12.5 -> 12, 432/32 = 13.5 -> 14
        ((384, 400), (384, 384)),
        ((384, 432), (384, 448)),
    ],
)
def test_lower_bound_size(image: tuple[int, int], expected: tuple[int, int]) -> None:
    assert network_input_size(*image) == expected


def test_lower_bound_fits_the_short_side_and_keeps_the_aspect() -> None:
    for height in range(100, 1300, 61):
        for width in range(100, 1300, 73):
            new_h, new_w = network_input_size(height, width, 384)
            assert new_h % 32 == 0 and new_w % 32 == 0
            # the short side becomes net_size, the long one its scaled length +- 16 pixels
            short, long_ = sorted((height, width))
            new_short, new_long = (new_h, new_w) if height <= width else (new_w, new_h)
            assert new_short == 384
            assert abs(new_long - long_ * 384 / short) <= 16


def test_upper_bound_and_minimal_sizes() -> None:
    assert network_input_size(375, 1242, method="upper_bound") == (128, 384)
    assert network_input_size(1080, 1920, method="upper_bound") == (224, 384)
    # The authors' KITTI / NYU settings (isl-org/DPT run_monodepth.py).
    assert network_input_size(375, 1242, (352, 1216), method="minimal") == (352, 1216)
    assert network_input_size(480, 640, (480, 640), method="minimal") == (480, 640)
    assert network_input_size(600, 800, (480, 640), method="minimal") == (480, 640)
    assert network_input_size(384, 384, 384, multiple=14) == (392, 392)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "fit"}, "resize method"),
        ({"net_size": 0}, "net_size"),
        ({"net_size": (384,)}, "net_size"),
        ({"multiple": 0}, "multiple"),
    ],
)
def test_bad_size_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        network_input_size(480, 640, **kwargs)
    with pytest.raises(ValueError, match="image size"):
        network_input_size(0, 640)


# --- numpy preprocessing ---------------------------------------------------------------------


def test_preprocess_image_normalises_to_minus_one_one() -> None:
    for value, expected in ((0, -1.0), (255, 1.0), (51, -0.6)):
        image = np.full((240, 320, 3), value, np.uint8)
        out = preprocess_image(image)
        assert out.dtype == np.float32 and out.shape == (3, 384, 512)
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_preprocess_image_without_resize_is_exact_and_keeps_channel_order() -> None:
    image = smooth_image(384, 416)
    image[..., 0] = 0  # red channel off: must stay channel 0 (no BGR swap)
    out = preprocess_image(image)
    assert out.shape == (3, 384, 416)
    expected = (image.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    np.testing.assert_array_equal(out, expected.astype(np.float32))
    assert (out[0] == -1).all() and (out[1:] > -1).any()


def test_preprocess_image_accepts_float_in_unit_range() -> None:
    image = smooth_image(200, 300)
    np.testing.assert_allclose(
        preprocess_image(image.astype(np.float32) / 255), preprocess_image(image), atol=1e-6
    )


def test_preprocess_image_is_bicubic_and_unclamped() -> None:
    # A hard edge: bicubic rings past the input range, as in the authors' pipeline.
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, 50:] = 255
    out = preprocess_image(image)
    assert out.max() > 1.0 and out.min() < -1.0


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((32, 32), np.uint8), "HxWx3"),
        (np.zeros((32, 32, 4), np.uint8), "HxWx3"),
        (np.zeros((0, 32, 3), np.uint8), "empty"),
        (np.zeros((32, 32, 3), np.uint16), "dtype uint16"),
        (np.zeros((32, 32, 3), np.int32), "dtype int32"),
        ([[0, 0, 0]], "numpy"),
    ],
)
def test_preprocess_image_rejects_bad_input(image, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess_image(image)


# --- torch preprocessing --------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(375, 1242), (480, 640), (300, 200)])
def test_preprocess_tensor_matches_the_numpy_path(height: int, width: int) -> None:
    images = np.stack([smooth_image(height, width, seed) for seed in (1, 2)])
    expected = np.stack([preprocess_image(image) for image in images])
    size = expected.shape[-2:]
    nhwc = torch.from_numpy(images)
    for batch, kwargs in (
        (nhwc, {}),
        (nhwc.permute(0, 3, 1, 2), {}),
        (nhwc.float() / 255, {}),
        (nhwc.permute(0, 3, 1, 2).double() / 255, {"dtype": torch.float64}),
    ):
        out = preprocess_tensor(batch, size, **kwargs)
        assert out.shape == (2, 3, *size) and out.is_contiguous()
        # OpenCV's float resize uses float32 coefficient tables: agreement ~1e-5, not exact.
        np.testing.assert_allclose(out.double().numpy(), expected, atol=5e-5)


def test_preprocess_tensor_output_dtype_and_explicit_layout() -> None:
    batch = torch.from_numpy(smooth_image(64, 96))[None]
    out = preprocess_tensor(batch, (64, 96), dtype=torch.float16)
    assert out.dtype == torch.float16
    # A 3x3 image is ambiguous: the caller names the layout.
    tiny = torch.zeros(1, 3, 3, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="channels_last"):
        preprocess_tensor(tiny, (32, 32))
    assert preprocess_tensor(tiny, (32, 32), channels_last=True).shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    ("batch", "kwargs", "message"),
    [
        (torch.zeros(8, 8, 3, dtype=torch.uint8), {}, "batch dimension"),
        (torch.zeros(1, 8, 8, 4, dtype=torch.uint8), {}, "channel axis"),
        (torch.zeros(1, 8, 8, 4, dtype=torch.uint8), {"channels_last": True}, "3 RGB"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.int32), {}, "dtype torch.int32"),
        (torch.zeros(1, 8, 8, 3, dtype=torch.uint8), {"dtype": torch.uint8}, "floating"),
        (np.zeros((1, 8, 8, 3), np.uint8), {}, "torch.Tensor"),
    ],
)
def test_preprocess_tensor_rejects_bad_input(batch, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        preprocess_tensor(batch, (32, 32), **kwargs)


# --- prediction resize ----------------------------------------------------------------------


def step(shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.zeros(shape)
    x[..., shape[-1] // 2 :] = 1.0
    return x


def test_depth_is_resized_bicubically() -> None:
    out = resize_prediction(step((2, 24, 32)), (375, 500))
    assert out.shape == (2, 375, 500)
    assert out.max() > 1.0 and out.min() < 0.0  # bicubic overshoot at the edge


def test_logits_are_resized_bilinearly() -> None:
    out = resize_prediction(step((2, 150, 24, 32)), (375, 500))
    assert out.shape == (2, 150, 375, 500)
    assert out.max() <= 1.0 and out.min() >= 0.0  # no overshoot
    assert ((out > 0) & (out < 1)).any()  # interpolated, not nearest
    assert resize_prediction(step((1, 2, 4, 4)), (8, 8), mode="bicubic").max() > 1.0


def test_same_size_is_unchanged() -> None:
    depth = torch.rand(1, 48, 64)
    assert torch.equal(resize_prediction(depth, (48, 64)), depth)


@pytest.mark.parametrize(
    ("prediction", "kwargs", "message"),
    [
        (torch.zeros(48, 64), {}, "shape"),
        (torch.zeros(1, 48, 64, dtype=torch.long), {}, "floating"),
        (torch.zeros(1, 48, 64), {"mode": "nearest"}, "mode"),
        (torch.zeros(1, 48, 64), {"size": (0, 5)}, "size"),
        (np.zeros((1, 48, 64)), {}, "torch.Tensor"),
    ],
)
def test_resize_prediction_rejects_bad_input(prediction, kwargs: dict, message: str) -> None:
    kwargs = {"size": (96, 128)} | kwargs
    with pytest.raises(ValueError, match=message):
        resize_prediction(prediction, **kwargs)
