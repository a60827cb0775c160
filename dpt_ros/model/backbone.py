"""timm ViT and hybrid ResNet-50+ViT backbones that hand DPT the tokens after chosen blocks.

The modules are timm's own (`VisionTransformer`, `ResNetV2`; the hybrid's patch embedding is
key-compatible with timm's `HybridEmbed`), so the state dict keeps timm's key names, which are
the ones the authors' checkpoints use under ``pretrained.model``. Only the forward pass is DPT's:
it runs at any input size whose sides are multiples of the token stride, with the position
embedding resized bilinearly the way the authors' ``_resize_pos_embed`` does, and it stops after
the last tapped block.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import StdConv2dSame
from timm.layers.padding import pad_same
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

__all__ = [
    "DPTVisionTransformer",
    "LegacyStdConv2dSame",
    "ResNetPatchEmbed",
    "build_resnet_stem",
    "resize_pos_embed",
    "resnet_stride",
]


def resnet_stride(num_stages: int) -> int:
    """Output stride of a ResNetV2 stem (x4) followed by `num_stages` stages (the first keeps
    the resolution, every later one halves it)."""
    return 4 * 2 ** (num_stages - 1)


class LegacyStdConv2dSame(StdConv2dSame):
    """Weight standardisation as timm 0.4.x computed it, (w - mean) / (std + eps), eps 1e-5.

    The released DPT-Hybrid weights were trained with it; current timm normalises with
    sqrt(var + 1e-8) instead, which moves DPT-Hybrid's output by ~4e-4 (relative).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_pad:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        std, mean = torch.std_mean(self.weight, dim=(1, 2, 3), keepdim=True, unbiased=False)
        weight = (self.weight - mean) / (std + self.eps)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


LEGACY_STD_CONV_EPS = 1e-5


def build_resnet_stem(
    layers: tuple[int, ...],
    channels: tuple[int, ...],
    stem_channels: int = 64,
    std_conv_eps: float = 1e-8,
    legacy_std_conv: bool = False,
) -> ResNetV2:
    """The convolutional part of timm's R50+ViT hybrid (``vit_base_r50_s16_384``): a BiT
    ResNetV2 without pre-activation, TF-"same" padding and weight-standardised convolutions.

    By default the convolutions are current timm's StdConv2dSame (eps `std_conv_eps`), as in
    the authors' code run with today's timm; `legacy_std_conv` selects timm 0.4.x's formula
    (`LegacyStdConv2dSame`), the one the released weights were trained with.
    """
    if len(layers) != len(channels):
        raise ValueError(
            f"ResNet stem: {len(layers)} stage depths but {len(channels)} stage widths "
            f"({layers} vs {channels})"
        )
    return ResNetV2(
        layers=list(layers),
        channels=tuple(channels),
        stem_chs=stem_channels,
        num_classes=0,
        global_pool="",
        preact=False,
        stem_type="same",
        conv_layer=(
            partial(LegacyStdConv2dSame, eps=LEGACY_STD_CONV_EPS)
            if legacy_std_conv
            else partial(StdConv2dSame, eps=std_conv_eps)
        ),
    )


def resize_pos_embed(
    pos_embed: torch.Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resize a square grid of position embeddings (1, prefix + G*G, C) to `grid_size`.

    Bilinear with align_corners=False, as the authors' ``_resize_pos_embed`` (not timm's own
    bicubic resample), and applied even when the size is unchanged, which is then exact.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    old = int(round(grid.shape[0] ** 0.5))
    if old * old != grid.shape[0]:
        raise ValueError(f"position embedding has {grid.shape[0]} grid tokens, not a square")
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=grid_size, mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_size[0] * grid_size[1], -1)
    return torch.cat([prefix, grid], dim=1)


class ResNetPatchEmbed(nn.Module):
    """Tokens from a ResNet feature map: `backbone`, then a `proj` conv (kernel = stride =
    `patch_size` on the feature map) to the embedding width.

    Key-compatible with timm's HybridEmbed (``patch_embed.backbone``, ``patch_embed.proj``), but
    sized from the ResNet's configuration instead of a trial forward pass at construction.
    """

    def __init__(
        self,
        backbone: ResNetV2,
        img_size: int = 384,
        patch_size: int = 1,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        **_: object,
    ) -> None:
        super().__init__()
        if in_chans != backbone.in_chans:
            raise ValueError(f"ResNet stem takes {backbone.in_chans} channels, not {in_chans}")
        self.backbone = backbone
        self.stride = resnet_stride(len(backbone.stages))
        self.patch_size = (patch_size, patch_size)
        self.img_size = (img_size, img_size)
        side = img_size // (self.stride * patch_size)
        self.grid_size = (side, side)
        self.num_patches = side * side
        self.proj = nn.Conv2d(
            backbone.num_features, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias
        )

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        ratio = self.stride * self.patch_size[0]
        return ratio if as_scalar else (ratio, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.backbone.forward_features(x))
        return x.flatten(2).transpose(1, 2)


class DPTVisionTransformer(VisionTransformer):
    """timm's VisionTransformer (plain or with a ResNet stem as patch embedding) whose
    `forward_taps` returns intermediate features for DPT at any input size.

    Position embeddings resized per grid size are cached in plain attributes (never in the
    state dict). Entries stay valid while `pos_embed` is the same storage, unmodified: the
    cache keeps an alias of that storage, so its address cannot be reused by another tensor,
    and compares the shared version counter. Nothing is cached while a gradient has to flow
    into `pos_embed` or while a CUDA graph is being captured.
    """

    max_cached_grids = 8

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        patch_size: int = 16,
        pretrain_size: int = 384,
        num_classes: int = 1000,
        resnet: ResNetV2 | None = None,
    ) -> None:
        embed_kwargs: dict = {}
        if resnet is not None:
            stride = resnet_stride(len(resnet.stages))
            if patch_size % stride or pretrain_size % patch_size:
                raise ValueError(
                    f"hybrid ViT: token stride {patch_size} must be a multiple of the ResNet "
                    f"stride {stride} and divide the pre-training size {pretrain_size}"
                )
            # Tokens come from the ResNet's last stage through a (patch_size / stride) conv.
            embed_kwargs["embed_layer"] = partial(ResNetPatchEmbed, backbone=resnet)
            patch_size //= stride
        super().__init__(
            img_size=pretrain_size,
            patch_size=patch_size,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            norm_layer=partial(nn.LayerNorm, eps=layer_norm_eps),
            **embed_kwargs,
        )
        self.token_stride = patch_size * (1 if resnet is None else stride)
        self._pos_embed_source: tuple[torch.Tensor, int] | None = None
        self._pos_embed_cache: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def is_hybrid(self) -> bool:
        return isinstance(self.patch_embed, ResNetPatchEmbed)

    def pos_embed_for(self, grid_size: tuple[int, int]) -> torch.Tensor:
        """The position embedding for a token grid of `grid_size` (rows, cols)."""
        param = self.pos_embed
        if (
            (torch.is_grad_enabled() and param.requires_grad)
            or torch.compiler.is_compiling()
            or (param.is_cuda and torch.cuda.is_current_stream_capturing())
        ):
            # Training needs the autograd graph; a compiled graph folds the resize in by itself;
            # a captured CUDA graph must own its input (a cache entry it read could be evicted
            # and freed while the graph still replays from its address).
            return resize_pos_embed(param, grid_size, self.num_prefix_tokens)
        source = self._pos_embed_source
        if (
            source is None
            or source[0].data_ptr() != param.data_ptr()
            or source[0].device != param.device
            or source[0].dtype != param.dtype
            or source[1] != param._version
        ):
            self._pos_embed_cache.clear()
            self._pos_embed_source = (param.detach(), param._version)
        cached = self._pos_embed_cache.get(grid_size)
        if cached is None:
            if len(self._pos_embed_cache) >= self.max_cached_grids:
                self._pos_embed_cache.pop(next(iter(self._pos_embed_cache)))
            cached = resize_pos_embed(param.detach(), grid_size, self.num_prefix_tokens)
            self._pos_embed_cache[grid_size] = cached
        return cached

    def forward_taps(
        self, x: torch.Tensor, block_taps: tuple[int, ...], stage_taps: tuple[int, ...] = ()
    ) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Run up to the last tapped block.

        Returns the outputs of ResNet stages `stage_taps` (hybrid only; feature maps N,C,h,w),
        then those of transformer blocks `block_taps` (tokens N, 1 + rows*cols, C), and the
        token grid size (rows, cols).
        """
        grid = (x.shape[-2] // self.token_stride, x.shape[-1] // self.token_stride)
        taps: list[torch.Tensor] = []
        if self.is_hybrid:
            resnet = self.patch_embed.backbone
            x = resnet.stem(x)
            for index, stage in enumerate(resnet.stages):
                x = stage(x)
                if index in stage_taps:
                    taps.append(x)
            x = resnet.norm(x)
        elif stage_taps:
            raise ValueError("stage taps need a hybrid (ResNet stem) backbone")
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed_for(grid)
        x = self.pos_drop(x)
        last = max(block_taps)
        for index, block in enumerate(self.blocks[: last + 1]):
            x = block(x)
            if index in block_taps:
                taps.append(x)
        return taps, grid
