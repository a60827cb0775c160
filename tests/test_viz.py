"""Colour maps, the ADE20K palette and overlays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dpt_ros.viz import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    COLORMAPS,
    colorize_depth,
    colorize_inverse_depth,
    label_to_color,
    overlay,
)


def _turbo(index: np.ndarray) -> np.ndarray:
    """OpenCV's own turbo colour for uint8 indices, as RGB."""
    return cv2.applyColorMap(np.asarray(index, np.uint8).reshape(-1, 1), cv2.COLORMAP_TURBO)[
        :, 0, ::-1
    ]


def test_colorize_depth_explicit_range_matches_opencv_colormap() -> None:
    depth = np.array([[1.0, 3.0, 5.0], [0.5, 9.0, 2.0]], np.float32)
    rgb = colorize_depth(depth, 1.0, 5.0, near_is_warm=False)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    expected_index = np.clip((depth - 1.0) * 255.0 / 4.0, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb.reshape(-1, 3), _turbo(expected_index.ravel()))


def test_colorize_depth_near_is_warm_reverses_the_map() -> None:
    depth = np.array([[1.0, 5.0]], np.float32)
    warm = colorize_depth(depth, 1.0, 5.0)
    np.testing.assert_array_equal(warm[0, 0], _turbo(np.array([255]))[0])
    np.testing.assert_array_equal(warm[0, 1], _turbo(np.array([0]))[0])


def test_colorize_depth_invalid_colour_for_nan_and_inf() -> None:
    depth = np.array([[1.0, np.nan, np.inf, -np.inf, 2.0]], np.float32)
    rgb = colorize_depth(depth, invalid_color=(255, 0, 255))
    for col in (1, 2, 3):
        np.testing.assert_array_equal(rgb[0, col], [255, 0, 255])
    assert not np.array_equal(rgb[0, 0], [255, 0, 255])


def test_colorize_depth_percentiles_ignore_outliers() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 2.0, (64, 64)).astype(np.float32)
    depth[0, 0] = 1e6  # one far outlier must not squash the rest into one colour
    rgb = colorize_depth(depth, colormap="gray", near_is_warm=False)
    assert len(np.unique(rgb[1:, :, 0])) > 200


def test_colorize_depth_all_invalid_and_constant_inputs() -> None:
    all_nan = colorize_depth(np.full((4, 5), np.nan, np.float32), invalid_color=(1, 2, 3))
    assert (all_nan == [1, 2, 3]).all()
    constant = colorize_depth(np.full((4, 5), 7.0, np.float32))
    assert (constant == constant[0, 0]).all()


def test_one_fixed_bound_beyond_the_data_saturates_instead_of_failing() -> None:
    depth = np.linspace(1.0, 3.0, 12, dtype=np.float32).reshape(3, 4)
    far_min = colorize_depth(depth, min_value=5.0, colormap="gray", near_is_warm=False)
    assert (far_min == 0).all()
    near_max = colorize_depth(depth, max_value=0.5, colormap="gray", near_is_warm=False)
    assert (near_max == 255).all()


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_every_named_colormap_works_in_any_case(name: str) -> None:
    depth = np.linspace(1, 10, 20, dtype=np.float32).reshape(4, 5)
    lower = colorize_depth(depth, colormap=name)
    upper = colorize_depth(depth, colormap=name.upper())
    np.testing.assert_array_equal(lower, upper)
    assert len(np.unique(lower.reshape(-1, 3), axis=0)) > 5


def test_colorize_inverse_depth_puts_near_at_the_warm_end() -> None:
    depth = np.array([[1.0, 2.0, 4.0]], np.float32)
    from_depth = colorize_depth(depth, 1.0, 4.0, colormap="inferno")
    inverse = 1.0 / depth
    from_inverse = colorize_inverse_depth(inverse, 0.25, 1.0, colormap="inferno")
    # both put the nearest pixel at the top of the map and the farthest at the bottom
    np.testing.assert_array_equal(from_depth[0, 0], from_inverse[0, 0])
    np.testing.assert_array_equal(from_depth[0, 2], from_inverse[0, 2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"colormap": "rainbowish"}, "unknown colormap"),
        ({"min_value": 5.0, "max_value": 1.0}, "below min_value"),
        ({"percentiles": (90.0, 10.0)}, "percentiles"),
        ({"invalid_color": (0, 0, 300)}, "invalid_color"),
        ({"min_value": float("nan"), "max_value": 1.0}, "finite"),
    ],
)
def test_colorize_depth_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        colorize_depth(np.ones((2, 2), np.float32), **kwargs)


@pytest.mark.parametrize("bad", [np.ones((2, 2, 1)), np.ones(4), np.zeros((0, 3))])
def test_colorize_depth_rejects_bad_shapes(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="HxW"):
        colorize_depth(bad)


def test_ade20k_palette_and_class_names_follow_the_benchmark() -> None:
    assert len(ADE20K_CLASSES) == 151 and ADE20K_PALETTE.shape == (151, 3)
    assert ADE20K_PALETTE.dtype == np.uint8
    assert ADE20K_CLASSES[0] == "other" and tuple(ADE20K_PALETTE[0]) == (0, 0, 0)
    # spot checks of the public SceneParse150 order and colours (label = class index + 1)
    assert ADE20K_CLASSES[1] == "wall" and tuple(ADE20K_PALETTE[1]) == (120, 120, 120)
    assert ADE20K_CLASSES[3] == "sky" and tuple(ADE20K_PALETTE[3]) == (6, 230, 230)
    assert ADE20K_CLASSES[13] == "person" and tuple(ADE20K_PALETTE[13]) == (150, 5, 61)
    assert ADE20K_CLASSES[21] == "car" and tuple(ADE20K_PALETTE[21]) == (0, 102, 200)
    assert ADE20K_CLASSES[150] == "flag" and tuple(ADE20K_PALETTE[150]) == (92, 0, 255)
    assert len(set(ADE20K_CLASSES)) == 151
    assert not ADE20K_PALETTE.flags.writeable


def test_label_to_color_looks_up_every_label() -> None:
    labels = np.arange(151, dtype=np.uint8).reshape(1, 151)
    np.testing.assert_array_equal(label_to_color(labels)[0], ADE20K_PALETTE)
    custom = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)
    np.testing.assert_array_equal(
        label_to_color(np.array([[1, 0]], np.int32), custom), [[[40, 50, 60], [10, 20, 30]]]
    )


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([[151]], np.uint8), "0..150"),
        (np.array([[-1]], np.int32), "0..150"),
        (np.zeros((2, 2), np.float32), "integers"),
        (np.zeros((2, 2, 1), np.uint8), "HxW"),
    ],
)
def test_label_to_color_rejects_bad_labels(labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        label_to_color(labels)


def test_overlay_blends_with_alpha() -> None:
    rgb = np.full((3, 4, 3), 100, np.uint8)
    labels = np.full((3, 4), 21, np.uint8)  # car: (0, 102, 200)
    out = overlay(rgb, labels, alpha=0.25)
    np.testing.assert_allclose(out[0, 0], [75, 100.5, 125], atol=1)
    np.testing.assert_array_equal(overlay(rgb, labels, alpha=0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, labels, alpha=1.0)[1, 2], ADE20K_PALETTE[21])


def test_overlay_rejects_mismatched_inputs() -> None:
    rgb = np.zeros((3, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        overlay(rgb, np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match="alpha"):
        overlay(rgb, np.zeros((3, 4), np.uint8), alpha=1.5)
    with pytest.raises(ValueError, match="uint8"):
        overlay(rgb.astype(np.float32), np.zeros((3, 4), np.uint8))
