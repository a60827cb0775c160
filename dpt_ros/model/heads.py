"""DPT output heads: monocular depth, semantic segmentation (main and auxiliary), and the fixed
inversion that turns the fine-tuned KITTI / NYU models' output into metres.

Heads are nn.Sequential with the authors' indices (``scratch.output_conv.{0,2,4}``,
``auxlayer.{0,1,4}``) so that checkpoints load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AuxiliaryHead", "DepthHead", "InverseDepthToMetric", "SegmentationHead"]


def _upsample2x() -> nn.Upsample:
    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)


class DepthHead(nn.Sequential):
    """conv3x3 (F -> F/2), x2 upsampling to input resolution, conv3x3 (-> hidden) + ReLU,
    conv1x1 (-> 1), ReLU when the output must be non-negative. Output (N, 1, H, W)."""

    def __init__(self, features: int, hidden: int = 32, non_negative: bool = True) -> None:
        super().__init__(
            nn.Conv2d(features, features // 2, kernel_size=3, padding=1),
            _upsample2x(),
            nn.Conv2d(features // 2, hidden, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, kernel_size=1),
            nn.ReLU(inplace=True) if non_negative else nn.Identity(),
            nn.Identity(),
        )


class AuxiliaryHead(nn.Sequential):
    """conv3x3-BN-ReLU-dropout-conv1x1 to class logits at the decoder's 1/2 resolution.

    Only used as a training loss by the authors; kept so the released ADE20K checkpoints load
    strictly, and not part of `DPT.forward`.
    """

    def __init__(self, features: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__(
            nn.Conv2d(features, features, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(features),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout, inplace=False),
            nn.Conv2d(features, num_classes, kernel_size=1),
        )


class SegmentationHead(AuxiliaryHead):
    """The auxiliary head's layers followed by x2 bilinear upsampling (align_corners=True) of
    the logits to input resolution. Output (N, num_classes, H, W)."""

    def __init__(self, features: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__(features, num_classes, dropout)
        self.append(_upsample2x())


class InverseDepthToMetric(nn.Module):
    """depth = 1 / max(scale * prediction + shift, 1e-8): the fixed affine map and inversion
    that isl-org/DPT's ``DPTDepthModel(invert=True)`` applies for its KITTI and NYU models.
    Computed (and returned) in at least float32."""

    min_inverse_depth = 1e-8

    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale = float(scale)
        self.shift = float(shift)

    def forward(self, prediction: torch.Tensor) -> torch.Tensor:
        # At least float32: in half precision 1e-8 underflows and metres lose ~3 digits.
        prediction = prediction.to(torch.promote_types(prediction.dtype, torch.float32))
        inverse_depth = self.scale * prediction + self.shift
        return 1.0 / inverse_depth.clamp_min(self.min_inverse_depth)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}"
