"""DPT's convolutional decoder: Reassemble (read, concatenate, resample) and RefineNet fusion.

Child names and indices follow the authors' modules (``act_postprocessN.{0,3,4}``,
``resConfUnit1``, ``layer1_rn`` ...) because the released checkpoints address them that way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "FeatureFusionBlock",
    "FusionDecoder",
    "Reassemble",
    "ReadoutAdd",
    "ReadoutIgnore",
    "ReadoutProject",
    "ResidualConvUnit",
    "make_readout",
    "make_resample",
]

READOUTS = ("ignore", "add", "project")


class ReadoutIgnore(nn.Module):
    """Drop the readout (class) token."""

    def __init__(self, start_index: int = 1) -> None:
        super().__init__()
        self.start_index = start_index

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.start_index :]


class ReadoutAdd(nn.Module):
    """Add the readout token to every patch token."""

    def __init__(self, start_index: int = 1) -> None:
        super().__init__()
        self.start_index = start_index

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, self.start_index :] + tokens[:, 0].unsqueeze(1)


class ReadoutProject(nn.Module):
    """Concatenate the readout token to every patch token and project back (Linear + GELU)."""

    def __init__(self, embed_dim: int, start_index: int = 1) -> None:
        super().__init__()
        self.start_index = start_index
        self.project = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.start_index :]
        readout = tokens[:, 0].unsqueeze(1).expand_as(patches)
        return self.project(torch.cat((patches, readout), -1))


def make_readout(kind: str, embed_dim: int, start_index: int = 1) -> nn.Module:
    if kind == "ignore":
        return ReadoutIgnore(start_index)
    if kind == "add":
        return ReadoutAdd(start_index)
    if kind == "project":
        return ReadoutProject(embed_dim, start_index)
    raise ValueError(f"unknown readout {kind!r}; expected one of {READOUTS}")


def make_resample(channels: int, factor: float) -> nn.Module | None:
    """x4 / x2: transposed conv (kernel = stride = factor); x1: none; x0.5: strided 3x3 conv."""
    if factor in (4, 2):
        return nn.ConvTranspose2d(channels, channels, kernel_size=int(factor), stride=int(factor))
    if factor == 1:
        return None
    if factor == 0.5:
        return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
    raise ValueError(f"unsupported resample factor {factor}; expected 4, 2, 1 or 0.5")


class Reassemble(nn.Sequential):
    """Tokens (N, 1 + rows*cols, C) -> feature map (N, out_channels, rows*f, cols*f).

    Laid out as the authors' nn.Sequential: 0 readout, 1-2 the (parameter-free) transpose and
    unflatten, which `forward` does itself because the grid size changes per call, 3 the 1x1
    projection to the stage width, 4 the resampling (absent at factor 1).
    """

    def __init__(self, readout: str, embed_dim: int, out_channels: int, factor: float) -> None:
        layers = [
            make_readout(readout, embed_dim),
            nn.Identity(),
            nn.Identity(),
            nn.Conv2d(embed_dim, out_channels, kernel_size=1),
        ]
        resample = make_resample(out_channels, factor)
        if resample is not None:
            layers.append(resample)
        super().__init__(*layers)

    def forward(self, tokens: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        readout, _transpose, _unflatten, *convs = self
        x = readout(tokens).transpose(1, 2).unflatten(2, grid_size)
        for conv in convs:
            x = conv(x)
        return x


class ResidualConvUnit(nn.Module):
    """ReLU-conv3x3(-BN)-ReLU-conv3x3(-BN) plus identity; convs carry a bias only without BN."""

    def __init__(self, features: int, use_bn: bool = False) -> None:
        super().__init__()
        self.use_bn = use_bn
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=not use_bn)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=not use_bn)
        if use_bn:
            self.bn1 = nn.BatchNorm2d(features)
            self.bn2 = nn.BatchNorm2d(features)
        self.activation = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.activation(x))
        if self.use_bn:
            out = self.bn1(out)
        out = self.conv2(self.activation(out))
        if self.use_bn:
            out = self.bn2(out)
        return out + x


class FeatureFusionBlock(nn.Module):
    """RefineNet-style fusion: add the residual-refined skip, refine, upsample x2
    (bilinear, align_corners=True as the authors), 1x1 conv."""

    def __init__(self, features: int, use_bn: bool = False) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.resConfUnit1 = ResidualConvUnit(features, use_bn)
        self.resConfUnit2 = ResidualConvUnit(features, use_bn)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class FusionDecoder(nn.Module):
    """The authors' ``scratch``: 3x3 convs from the four stage widths to `features`, four
    fusion blocks from 1/32 up to 1/2 resolution, then `head`."""

    def __init__(
        self, stage_channels: tuple[int, ...], features: int, use_bn: bool, head: nn.Module
    ) -> None:
        super().__init__()
        if len(stage_channels) != 4:
            raise ValueError(f"expected 4 stage widths, got {stage_channels}")
        c1, c2, c3, c4 = stage_channels
        self.layer1_rn = nn.Conv2d(c1, features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(c2, features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(c3, features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(c4, features, 3, padding=1, bias=False)
        self.refinenet1 = FeatureFusionBlock(features, use_bn)
        self.refinenet2 = FeatureFusionBlock(features, use_bn)
        self.refinenet3 = FeatureFusionBlock(features, use_bn)
        self.refinenet4 = FeatureFusionBlock(features, use_bn)
        self.output_conv = head

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        layer1, layer2, layer3, layer4 = features
        path = self.refinenet4(self.layer4_rn(layer4))
        path = self.refinenet3(path, self.layer3_rn(layer3))
        path = self.refinenet2(path, self.layer2_rn(layer2))
        path = self.refinenet1(path, self.layer1_rn(layer1))
        return self.output_conv(path)
