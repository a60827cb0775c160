"""Pictures for people: colour-mapped depth, the ADE20K palette and label overlays.

Everything works on whole arrays through 256-entry lookup tables, so a VGA frame costs a few
milliseconds. Outputs are RGB uint8 (not OpenCV's BGR), ready for an rgb8 ROS image.
"""

from __future__ import annotations

import math
from functools import cache

import cv2
import numpy as np

__all__ = [
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "COLORMAPS",
    "colorize_depth",
    "colorize_inverse_depth",
    "depth_picture",
    "label_to_color",
    "overlay",
    "segmentation_picture",
]

COLORMAPS: dict[str, int] = {
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "magma": cv2.COLORMAP_MAGMA,
    "plasma": cv2.COLORMAP_PLASMA,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "jet": cv2.COLORMAP_JET,
    "bone": cv2.COLORMAP_BONE,
    "gray": -1,
}

_PERCENTILE_SAMPLES = 20_000
_INVALID_INDEX = 256

# SceneParse150 (the ADE20K benchmark the DPT segmentation models were trained on), in the class
# order of the public ADE20K definitions. Index 0 is "other": the authors' scripts report
# labels = argmax + 1, so class k of the network's 150 logits is label k + 1.
ADE20K_CLASSES: tuple[str, ...] = (
    "other",
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball",
    "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

# RGB per label; row 0 ("other") is black, rows 1..150 the standard ADE20K benchmark colours.
ADE20K_PALETTE: np.ndarray = np.array(
    [
        [0, 0, 0],
        [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
        [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],
        [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51],
        [255, 6, 82], [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3],
        [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71],
        [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
        [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10],
        [7, 255, 255], [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7],
        [255, 122, 8], [0, 255, 20], [255, 8, 41], [255, 5, 153], [6, 51, 255],
        [235, 12, 255], [160, 150, 20], [0, 163, 255], [140, 140, 140], [250, 10, 15],
        [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0], [153, 255, 0],
        [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
        [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],
        [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0],
        [0, 143, 255], [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173],
        [10, 0, 255], [173, 255, 0], [0, 255, 153], [255, 92, 0], [255, 0, 255],
        [255, 0, 245], [255, 0, 102], [255, 173, 0], [255, 0, 20], [255, 184, 184],
        [0, 31, 255], [0, 255, 61], [0, 71, 255], [255, 0, 204], [0, 255, 194],
        [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255], [0, 194, 255],
        [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10], [255, 112, 0],
        [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0], [8, 184, 170],
        [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],
        [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],
        [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
        [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],
        [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],
        [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255],
        [0, 255, 204], [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255],
        [71, 0, 255], [122, 0, 255], [0, 255, 184], [0, 92, 255], [184, 255, 0],
        [0, 133, 255], [255, 214, 0], [25, 194, 194], [102, 255, 0], [92, 0, 255],
    ],
    dtype=np.uint8,
)  # fmt: skip
ADE20K_PALETTE.setflags(write=False)


@cache
def _colormap_lut(colormap: str) -> np.ndarray:
    """(256, 3) RGB uint8 table for a colormap name."""
    key = colormap.lower()
    if key not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; choose one of {sorted(COLORMAPS)}")
    ramp = np.arange(256, dtype=np.uint8)
    if COLORMAPS[key] < 0:
        lut = np.repeat(ramp[:, None], 3, axis=1)
    else:
        lut = cv2.applyColorMap(ramp[:, None], COLORMAPS[key])[:, 0, ::-1]
    lut = np.ascontiguousarray(lut)
    lut.setflags(write=False)
    return lut


def _check_color(color: tuple[int, int, int] | np.ndarray, name: str) -> np.ndarray:
    value = np.asarray(color)
    if value.shape != (3,) or np.any(value < 0) or np.any(value > 255):
        raise ValueError(f"{name} must be three values in 0..255 (RGB), got {color!r}")
    return value.astype(np.uint8)


def _value_range(
    values: np.ndarray,
    finite: np.ndarray,
    min_value: float | None,
    max_value: float | None,
    percentiles: tuple[float, float],
) -> tuple[float, float]:
    lo_p, hi_p = percentiles
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    if min_value is not None and max_value is not None:
        lo, hi = float(min_value), float(max_value)
    else:
        # Percentiles of a regular subsample: a picture's range needs no exact order statistics,
        # and a full-frame percentile is the slowest step otherwise.
        step = max(1, int(math.sqrt(values.size / _PERCENTILE_SAMPLES)))
        sample = values[::step, ::step]
        valid = sample[finite[::step, ::step]]
        auto_lo, auto_hi = (
            np.percentile(valid, [lo_p, hi_p]) if valid.size else np.array([0.0, 1.0])
        )
        lo = float(auto_lo) if min_value is None else float(min_value)
        hi = float(auto_hi) if max_value is None else float(max_value)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"min_value and max_value must be finite, got {lo!r} and {hi!r}")
    if hi < lo:
        if min_value is not None and max_value is not None:
            raise ValueError(f"max_value ({hi}) is below min_value ({lo})")
        # One fixed bound beyond the data's automatic other bound: the picture saturates at
        # that end instead of failing (a fixed near limit on a far-away scene, say).
        lo, hi = (lo, lo) if min_value is not None else (hi, hi)
    return lo, hi


def _colorize(
    values: np.ndarray,
    *,
    min_value: float | None,
    max_value: float | None,
    percentiles: tuple[float, float],
    colormap: str,
    invalid_color: tuple[int, int, int],
    reverse: bool,
    name: str,
) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty HxW array, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {values.dtype}")
    lut = np.concatenate(
        [_colormap_lut(colormap), _check_color(invalid_color, "invalid_color")[None]]
    )
    values = values.astype(np.float32, copy=False)
    finite = np.isfinite(values)
    lo, hi = _value_range(values, finite, min_value, max_value, percentiles)
    # NaN and inf become 0 here only to keep the cast defined; they get the invalid colour below.
    if hi > lo:
        scaled = np.where(finite, (values - lo) * (255.0 / (hi - lo)), 0.0)
    else:  # an empty range: a step at that value
        scaled = np.where(finite & (values > lo), 255.0, 0.0)
    index = np.clip(scaled, 0.0, 255.0).astype(np.uint16)
    if reverse:
        index = 255 - index
    index[~finite] = _INVALID_INDEX  # the extra last row of the table
    return np.take(lut, index, axis=0)


def colorize_depth(
    depth: np.ndarray,
    min_value: float | None = None,
    max_value: float | None = None,
    *,
    percentiles: tuple[float, float] = (2.0, 98.0),
    colormap: str = "turbo",
    invalid_color: tuple[int, int, int] = (0, 0, 0),
    near_is_warm: bool = True,
) -> np.ndarray:
    """Colour-map an HxW depth image (metres) to HxWx3 RGB uint8.

    The range is ``[min_value, max_value]``; a bound left as None comes from the percentiles of
    the finite values, so a few far outliers do not wash the picture out. Values outside the
    range are clamped; NaN and inf get ``invalid_color``. ``near_is_warm`` puts near depths at
    the high (warm) end of the colormap, the usual reading for depth.
    """
    return _colorize(
        depth,
        min_value=min_value,
        max_value=max_value,
        percentiles=percentiles,
        colormap=colormap,
        invalid_color=invalid_color,
        reverse=near_is_warm,
        name="depth",
    )


def colorize_inverse_depth(
    inverse_depth: np.ndarray,
    min_value: float | None = None,
    max_value: float | None = None,
    *,
    percentiles: tuple[float, float] = (2.0, 98.0),
    colormap: str = "turbo",
    invalid_color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Colour-map relative inverse depth (large = near) to HxWx3 RGB uint8.

    Same mapping as :func:`colorize_depth`, with near (large values) at the warm end, so the
    relative and the metric pictures of one frame read alike. The range defaults to percentiles
    because relative output has no fixed units.
    """
    return _colorize(
        inverse_depth,
        min_value=min_value,
        max_value=max_value,
        percentiles=percentiles,
        colormap=colormap,
        invalid_color=invalid_color,
        reverse=False,
        name="inverse_depth",
    )


def _check_palette(palette: np.ndarray) -> np.ndarray:
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] == 0:
        raise ValueError(f"palette must be a Kx3 array of RGB colours, got shape {palette.shape}")
    return palette.astype(np.uint8, copy=False)


def label_to_color(labels: np.ndarray, palette: np.ndarray = ADE20K_PALETTE) -> np.ndarray:
    """HxW integer labels to HxWx3 RGB uint8 through ``palette`` (row = label)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be an HxW array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    palette = _check_palette(palette)
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= palette.shape[0]:
            raise ValueError(
                f"labels span {low}..{high} but the palette has colours for "
                f"0..{palette.shape[0] - 1}"
            )
    return np.take(palette, labels, axis=0)


def overlay(
    rgb: np.ndarray,
    labels: np.ndarray,
    alpha: float = 0.5,
    palette: np.ndarray = ADE20K_PALETTE,
) -> np.ndarray:
    """Blend the label colours over the image: ``(1 - alpha) * rgb + alpha * colour``, uint8."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be HxWx3 uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    if np.shape(labels) != rgb.shape[:2]:
        raise ValueError(
            f"labels shape {np.shape(labels)} does not match the image size {rgb.shape[:2]}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = label_to_color(labels, palette)
    return cv2.addWeighted(rgb, 1.0 - alpha, colors, alpha, 0.0)


def depth_picture(
    metric: np.ndarray | None,
    relative: np.ndarray | None,
    *,
    colormap: str = "turbo",
    min_depth: float = 0.0,
    max_depth: float = 0.0,
) -> np.ndarray:
    """The colour picture of one frame's depth, as the front ends show it (HxWx3 RGB uint8).

    Metric depth (metres) when there is one, ``min_depth``/``max_depth`` fixing the range (0 =
    per-frame percentiles); otherwise the relative inverse depth. Near is warm in both.
    """
    if metric is not None:
        return colorize_depth(metric, min_depth or None, max_depth or None, colormap=colormap)
    if relative is None:
        raise ValueError("depth_picture needs metric or relative depth, got neither")
    return colorize_inverse_depth(relative, colormap=colormap)


def segmentation_picture(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """:func:`overlay` of ``labels`` on ``rgb`` resized (INTER_AREA) to the labels' size."""
    height, width = np.shape(labels)[:2]
    rgb = np.ascontiguousarray(rgb)
    if rgb.shape[:2] != (height, width):
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return overlay(rgb, labels, alpha)
