"""The authors' DPT preprocessing, and resizing predictions back to the image.

As in isl-org/MiDaS and isl-org/DPT (``Resize`` + ``NormalizeImage`` + ``PrepareForNet``): RGB
scaled to [0, 1], resized keeping the aspect ratio so that both sides are multiples of 32,
bicubic, then normalised with mean = std = 0.5 to about [-1, 1]. The bicubic resize is not
clamped, as the authors' is not.

Which size: `resize_rule` ("auto", the default) takes each model's own network size and the
"minimal" rule of the authors' run scripts (isl-org/DPT ``run_monodepth.py`` /
``run_segmentation.py``, the MiDaS hub's ``dpt_transform``): 384x384 for DPT-Base/Large/Hybrid,
1216x352 for DPT-Hybrid-KITTI, 640x480 for DPT-Hybrid-NYU, 480x480 for the ADE20K models. An
explicit size keeps this package's earlier rule: both sides at least that size ("lower_bound").

`preprocess_image` is the numpy/OpenCV path (the authors' own ``cv2.INTER_CUBIC``, in float32);
`preprocess_tensor` does the same on whatever device a tensor lives on with PyTorch's bicubic
(same a = -0.75 kernel and pixel-centre convention; on camera images they agree to ~2e-5,
OpenCV computing its float coefficients in single precision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "AUTO",
    "MEAN",
    "RESIZE_METHODS",
    "ResizeRule",
    "STD",
    "network_input_size",
    "preprocess_image",
    "preprocess_tensor",
    "resize_prediction",
    "resize_rule",
]

MEAN = 0.5
STD = 0.5
# uint8 -> normalised float32 network value, each entry rounded once from float64.
_NORMALISED_UINT8 = ((np.arange(256) / 255.0 - MEAN) / STD).astype(np.float32)
RESIZE_METHODS = ("lower_bound", "upper_bound", "minimal")
AUTO = "auto"
# What "auto" means for a model that does not state its own size (a plug-in): the size and rule
# an explicit net_size of 384 gives.
DEFAULT_NET_SIZE = 384
EXPLICIT_METHOD = "lower_bound"


def _as_hw(size: int | tuple[int, int], what: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"{what} must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def _constrain_to_multiple(
    x: float, multiple: int, min_val: int = 0, max_val: int | None = None
) -> int:
    # MiDaS Resize.constrain_to_multiple_of, including numpy's round-half-to-even.
    y = int(np.round(x / multiple) * multiple)
    if max_val is not None and y > max_val:
        y = int(math.floor(x / multiple) * multiple)
    if y < min_val:
        y = int(math.ceil(x / multiple) * multiple)
    return y


def network_input_size(
    height: int,
    width: int,
    net_size: int | tuple[int, int] = 384,
    multiple: int = 32,
    method: str = "lower_bound",
) -> tuple[int, int]:
    """(height, width) the network sees for an image of `height` x `width`, aspect kept.

    MiDaS ``Resize(keep_aspect_ratio=True, ensure_multiple_of=multiple, resize_method=...)``:
    "lower_bound" scales so that both sides are at least `net_size` (the authors' default);
    "upper_bound" so that both are at most `net_size`; "minimal" scales as little as possible
    (used by the authors' run scripts, e.g. with net_size (352, 1216) for KITTI).
    `net_size` is an int or (height, width).
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
    if int(multiple) != multiple or multiple <= 0:
        raise ValueError(f"multiple must be a positive integer, got {multiple!r}")
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive integers, got {height}x{width}")
    net_h, net_w = _as_hw(net_size, "net_size")
    scale_h, scale_w = net_h / height, net_w / width
    if method == "lower_bound":
        scale_h = scale_w = max(scale_h, scale_w)
    elif method == "upper_bound":
        scale_h = scale_w = min(scale_h, scale_w)
    elif abs(1 - scale_w) < abs(1 - scale_h):
        scale_h = scale_w
    else:
        scale_w = scale_h
    if method == "lower_bound":
        bounds_h, bounds_w = {"min_val": net_h}, {"min_val": net_w}
    elif method == "upper_bound":
        bounds_h, bounds_w = {"max_val": net_h}, {"max_val": net_w}
    else:
        bounds_h = bounds_w = {}
    new_h = _constrain_to_multiple(scale_h * height, multiple, **bounds_h)
    new_w = _constrain_to_multiple(scale_w * width, multiple, **bounds_w)
    if new_h <= 0 or new_w <= 0:
        raise ValueError(
            f"{height}x{width} with net_size {net_size} and method {method!r} gives an empty "
            f"network input ({new_h}x{new_w})"
        )
    return new_h, new_w


@dataclass(frozen=True)
class ResizeRule:
    """How frames are resized for one model: ``net_size`` (height, width) and ``method``."""

    net_size: tuple[int, int]
    method: str

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the network input for a `height` x `width` image."""
        return network_input_size(height, width, self.net_size, method=self.method)


def resize_rule(net_size: int | str | tuple[int, int], model: object = None) -> ResizeRule:
    """The resize rule for ``net_size`` ("auto", an int, or (height, width)) and a model.

    "auto": the model's own ``net_size`` ((height, width)) and ``resize_method`` attributes
    (a ``DPT`` and its ``DPTConfig`` have them, from the variant table in
    ``dpt_ros.model.dpt``); a model without them (a plug-in) gets 384 with "lower_bound".
    An explicit size always uses "lower_bound" (each side at least that size). A size that is
    not a multiple of 32 raises ValueError, as the network needs multiples of 32.
    """
    if isinstance(net_size, str):
        if net_size != AUTO:
            raise ValueError(
                f"net_size must be {AUTO!r}, an int or (height, width), got {net_size!r}"
            )
        own = getattr(model, "net_size", None)
        method = getattr(model, "resize_method", None)
        if own is None or method is None:
            return ResizeRule((DEFAULT_NET_SIZE, DEFAULT_NET_SIZE), EXPLICIT_METHOD)
        size, how = _as_hw(own, "the model's net_size"), str(method)
    else:
        size, how = _as_hw(net_size, "net_size"), EXPLICIT_METHOD
    if how not in RESIZE_METHODS:
        raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {how!r}")
    if size[0] % 32 or size[1] % 32:
        raise ValueError(f"net_size must be a multiple of 32, got {size[0]}x{size[1]}")
    return ResizeRule(size, how)


def _check_rgb_array(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"expected an HxWx3 numpy RGB image, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"image is empty: shape {rgb.shape}")
    if rgb.dtype != np.uint8 and not np.issubdtype(rgb.dtype, np.floating):
        raise ValueError(f"expected uint8 (0-255) or floating (0-1) RGB, got dtype {rgb.dtype}")


def preprocess_image(
    rgb: np.ndarray,
    net_size: int | tuple[int, int] = 384,
    multiple: int = 32,
    method: str = "lower_bound",
    interpolation: int = cv2.INTER_CUBIC,
) -> np.ndarray:
    """HxWx3 RGB (uint8 0-255, or floating 0-1) -> float32 (3, h, w) network input.

    The authors' pipeline (RGB / 255, ``cv2.resize`` to `network_input_size(...)` with
    INTER_CUBIC, (x - 0.5) / 0.5, CHW) in float32 throughout: uint8 values are normalised
    through a 256-entry table (exact, rounded once from float64), then resized; normalising
    before the resize is the same affine map, as the bicubic weights sum to 1. Against the
    authors' float64 arithmetic the result differs by float32 rounding (~1e-6) only.
    """
    _check_rgb_array(rgb)
    height, width = rgb.shape[:2]
    new_h, new_w = network_input_size(height, width, net_size, multiple, method)
    if rgb.dtype == np.uint8:
        image = _NORMALISED_UINT8[rgb]
    else:
        image = (rgb.astype(np.float32) - np.float32(MEAN)) / np.float32(STD)
    if (new_h, new_w) != (height, width):
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def preprocess_tensor(
    rgb: torch.Tensor,
    size: tuple[int, int],
    channels_last: bool | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Batch of RGB images -> normalised (N, 3, h, w) network input on the same device.

    `rgb` is (N, H, W, 3) or (N, 3, H, W), uint8 (0-255) or floating (0-1); `channels_last`
    says which when the shape does not (default: inferred). Resized to `size` (h, w) with
    bicubic interpolation (align_corners=False, unclamped) in float32 or wider, then cast to
    `dtype`.
    """
    if not isinstance(rgb, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(rgb).__name__}")
    if rgb.ndim != 4:
        raise ValueError(
            f"expected a 4-D batch (N,H,W,3) or (N,3,H,W), got shape {tuple(rgb.shape)}"
            + (" (add a batch dimension)" if rgb.ndim == 3 else "")
        )
    if rgb.dtype != torch.uint8 and not rgb.dtype.is_floating_point:
        raise ValueError(f"expected uint8 (0-255) or floating (0-1) RGB, got dtype {rgb.dtype}")
    if not dtype.is_floating_point:
        raise ValueError(f"output dtype must be floating, got {dtype}")
    if channels_last is None:
        if (rgb.shape[-1] == 3) == (rgb.shape[1] == 3):
            raise ValueError(
                f"cannot tell the channel axis of shape {tuple(rgb.shape)}: pass channels_last"
            )
        channels_last = rgb.shape[-1] == 3
    if (rgb.shape[-1] if channels_last else rgb.shape[1]) != 3:
        layout = "(N,H,W,3)" if channels_last else "(N,3,H,W)"
        raise ValueError(f"expected 3 RGB channels in layout {layout}, got {tuple(rgb.shape)}")
    out_h, out_w = _as_hw(size, "size")
    x = rgb.permute(0, 3, 1, 2) if channels_last else rgb
    work = torch.promote_types(dtype, torch.float32)
    x = x.to(work) / 255.0 if rgb.dtype == torch.uint8 else x.to(work)
    if tuple(x.shape[-2:]) != (out_h, out_w):
        x = F.interpolate(x, size=(out_h, out_w), mode="bicubic", align_corners=False)
    return ((x - MEAN) / STD).to(dtype).contiguous()


def resize_prediction(
    prediction: torch.Tensor, size: tuple[int, int], mode: str | None = None
) -> torch.Tensor:
    """Resize network output back to the image size (height, width).

    (N, H, W) depth: bicubic, align_corners=False, as the authors' run scripts (unclamped, so
    it may overshoot slightly at sharp edges). (N, C, H, W) logits: bilinear, align_corners=
    False, which never overshoots. (The authors' ``run_segmentation.py`` instead upsamples
    softmax probabilities bicubically before the argmax; boundaries may differ by a pixel.)
    `mode` overrides the interpolation.
    """
    if not isinstance(prediction, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(prediction).__name__}")
    if prediction.ndim not in (3, 4):
        raise ValueError(
            f"expected (N,H,W) depth or (N,C,H,W) logits, got shape {tuple(prediction.shape)}"
        )
    if not prediction.dtype.is_floating_point:
        raise ValueError(f"expected a floating tensor, got dtype {prediction.dtype}")
    out_h, out_w = _as_hw(size, "size")
    if mode is not None and mode not in ("bicubic", "bilinear"):
        raise ValueError(f"mode must be 'bicubic' or 'bilinear', got {mode!r}")
    depth = prediction.ndim == 3
    x = prediction.unsqueeze(1) if depth else prediction
    if tuple(x.shape[-2:]) != (out_h, out_w):
        mode = mode or ("bicubic" if depth else "bilinear")
        x = F.interpolate(x, size=(out_h, out_w), mode=mode, align_corners=False)
    return x.squeeze(1) if depth else x
