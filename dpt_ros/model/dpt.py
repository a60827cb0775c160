"""The DPT network (Ranftl, Bochkovskiy, Koltun: "Vision Transformers for Dense Prediction",
ICCV 2021) and its released variants.

Structure and state-dict keys are those of the authors' code (isl-org/MiDaS ``DPTDepthModel``,
isl-org/DPT ``DPTDepthModel`` / ``DPTSegmentationModel``):

    pretrained.model.*            timm ViT-B/16, ViT-L/16 or R50+ViT-B/16
    pretrained.act_postprocessN   Reassemble for tap N (hybrid taps 1-2 are ResNet stages as-is)
    scratch.layerN_rn, scratch.refinenetN, scratch.output_conv   decoder and head
    auxlayer                      auxiliary segmentation head (segmentation only, unused in forward)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from dpt_ros.model.backbone import DPTVisionTransformer, build_resnet_stem, resnet_stride
from dpt_ros.model.decoder import READOUTS, FusionDecoder, Reassemble
from dpt_ros.model.heads import AuxiliaryHead, DepthHead, InverseDepthToMetric, SegmentationHead

__all__ = ["DPT", "DPTConfig", "DPTEncoder", "MODEL_NAMES", "build_model", "model_config"]

BACKBONES = ("vit", "hybrid")
TASKS = ("depth", "segmentation")
# Reassemble resampling per tap relative to the 1/16 token grid: to 1/4, 1/8, 1/16, 1/32.
RESAMPLE_FACTORS = (4, 2, 1, 0.5)
TOKEN_STRIDE = 16
INPUT_MULTIPLE = 32


@dataclass(frozen=True)
class DPTConfig:
    """Everything that shapes a DPT. Defaults are DPT-Base (ViT-B/16, depth)."""

    backbone: str = "vit"  # "vit" | "hybrid" (ResNet-50 stem + ViT)
    embed_dim: int = 768
    depth: int = 12  # transformer blocks
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    patch_size: int = 16  # token stride in input pixels (hybrid: ResNet stride x 1x1 proj)
    pretrain_size: int = 384  # position-embedding grid = pretrain_size // patch_size
    # 0-based taps. vit: four block indices; hybrid: two ResNet stage indices, two block indices.
    hooks: tuple[int, int, int, int] = (2, 5, 8, 11)
    stage_channels: tuple[int, int, int, int] = (96, 192, 384, 768)  # Reassemble widths
    features: int = 256  # decoder width D
    readout: str = "project"  # "ignore" | "add" | "project"
    task: str = "depth"  # "depth" | "segmentation"
    num_classes: int = 150  # segmentation classes
    use_bn: bool = False  # BatchNorm in the fusion blocks' residual units
    non_negative: bool = True  # ReLU on the depth output
    depth_head_hidden: int = 32  # width of the depth head's last hidden layer
    # Fixed inversion of the fine-tuned metric models: depth = 1 / (scale * pred + shift).
    metric_scale: float | None = None
    metric_shift: float | None = None
    vit_num_classes: int = 1000  # timm ViT's ImageNet head: unused, kept for checkpoint keys
    # Hybrid only: the timm ResNetV2 stem.
    resnet_layers: tuple[int, ...] = (3, 4, 9)
    resnet_channels: tuple[int, ...] = (256, 512, 1024)
    resnet_stem_channels: int = 64
    std_conv_eps: float = 1e-8  # current timm's weight standardisation
    legacy_std_conv: bool = False  # timm 0.4.x's, which the released weights were trained with
    # The authors' input size (height, width) and resize rule for this variant (net_size "auto";
    # isl-org/DPT run_monodepth.py / run_segmentation.py, MiDaS hub transforms).
    net_size: tuple[int, int] = (384, 384)
    resize_method: str = "minimal"

    def __post_init__(self) -> None:
        for name in ("hooks", "stage_channels", "resnet_layers", "resnet_channels", "net_size"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.patch_size != TOKEN_STRIDE:
            raise ValueError(
                f"patch_size must be {TOKEN_STRIDE}: Reassemble resamples a 1/16 token grid to "
                f"1/4 ... 1/32 (got {self.patch_size})"
            )
        if self.pretrain_size % self.patch_size:
            raise ValueError(
                f"pretrain_size {self.pretrain_size} is not a multiple of patch_size "
                f"{self.patch_size}"
            )
        if len(self.hooks) != 4 or len(self.stage_channels) != 4:
            raise ValueError(
                f"DPT needs 4 hooks and 4 stage widths, got {self.hooks} and {self.stage_channels}"
            )
        blocks = self.hooks[2:] if self.backbone == "hybrid" else self.hooks
        if list(blocks) != sorted(set(blocks)) or not 0 <= blocks[0] <= blocks[-1] < self.depth:
            raise ValueError(
                f"block hooks {blocks} must be increasing indices below depth {self.depth}"
            )
        if len(self.net_size) != 2 or any(s <= 0 or s % INPUT_MULTIPLE for s in self.net_size):
            raise ValueError(
                f"net_size must be (height, width), positive multiples of {INPUT_MULTIPLE}, "
                f"got {self.net_size}"
            )
        if self.backbone == "hybrid":
            self._check_hybrid()
        if (self.metric_scale is None) != (self.metric_shift is None):
            raise ValueError("metric_scale and metric_shift must be given together")
        if self.metric_scale is not None and self.task != "depth":
            raise ValueError("metric_scale / metric_shift apply to depth models only")

    def _check_hybrid(self) -> None:
        if self.hooks[:2] != (0, 1):
            raise ValueError(
                f"hybrid hooks must start with ResNet stages (0, 1) (1/4 and 1/8 resolution), "
                f"got {self.hooks[:2]}"
            )
        if len(self.resnet_layers) != len(self.resnet_channels) or len(self.resnet_layers) < 2:
            raise ValueError(
                f"resnet_layers {self.resnet_layers} and resnet_channels {self.resnet_channels} "
                "must have the same length, at least 2"
            )
        if resnet_stride(len(self.resnet_layers)) > self.patch_size:
            raise ValueError(
                f"{len(self.resnet_layers)} ResNet stages reduce by more than the token stride "
                f"{self.patch_size}"
            )
        if self.stage_channels[:2] != self.resnet_channels[:2]:
            raise ValueError(
                f"hybrid stage_channels[:2] {self.stage_channels[:2]} must equal the widths of "
                f"ResNet stages 0 and 1 {self.resnet_channels[:2]} (taps 1-2 are not projected)"
            )

    @property
    def output_semantics(self) -> str:
        if self.task == "segmentation":
            return "labels"
        return "relative_inverse_depth" if self.metric_scale is None else "metric_depth"


class DPTEncoder(nn.Module):
    """The authors' ``pretrained``: the timm backbone (`model`) and one Reassemble per tap
    (`act_postprocessN`), mapping an image to four feature maps at 1/4, 1/8, 1/16, 1/32."""

    def __init__(self, config: DPTConfig) -> None:
        super().__init__()
        resnet = None
        if config.backbone == "hybrid":
            resnet = build_resnet_stem(
                config.resnet_layers,
                config.resnet_channels,
                config.resnet_stem_channels,
                config.std_conv_eps,
                config.legacy_std_conv,
            )
        self.model = DPTVisionTransformer(
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            layer_norm_eps=config.layer_norm_eps,
            patch_size=config.patch_size,
            pretrain_size=config.pretrain_size,
            num_classes=config.vit_num_classes,
            resnet=resnet,
        )
        hybrid = resnet is not None
        self.stage_taps = tuple(config.hooks[:2]) if hybrid else ()
        self.block_taps = tuple(config.hooks[2:]) if hybrid else tuple(config.hooks)
        reassembles = [
            Reassemble(config.readout, config.embed_dim, channels, factor)
            for channels, factor in zip(config.stage_channels, RESAMPLE_FACTORS, strict=True)
        ]
        if hybrid:
            # ResNet stage outputs already are 1/4 and 1/8 feature maps.
            reassembles[0] = nn.Identity()
            reassembles[1] = nn.Identity()
        self.act_postprocess1, self.act_postprocess2 = reassembles[0], reassembles[1]
        self.act_postprocess3, self.act_postprocess4 = reassembles[2], reassembles[3]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, grid = self.model.forward_taps(x, self.block_taps, self.stage_taps)
        reassembles = (
            self.act_postprocess1,
            self.act_postprocess2,
            self.act_postprocess3,
            self.act_postprocess4,
        )
        return [
            layer(tap) if isinstance(layer, nn.Identity) else layer(tap, grid)
            for layer, tap in zip(reassembles, taps, strict=True)
        ]


class DPT(nn.Module):
    """DPT for depth or semantic segmentation.

    forward(x): x is (N, 3, H, W), normalised with mean = std = 0.5, H and W multiples of 32.
    Returns (N, H, W) depth -- relative inverse depth, or metres (in at least float32) for the
    metric variants -- or (N, num_classes, H, W) segmentation logits. `output_semantics` says
    which.
    """

    def __init__(self, config: DPTConfig) -> None:
        super().__init__()
        self.config = config
        self.output_semantics = config.output_semantics
        # Read by dpt_ros.transforms.resize_rule for net_size "auto".
        self.net_size = config.net_size
        self.resize_method = config.resize_method
        if config.task == "segmentation":
            head: nn.Module = SegmentationHead(config.features, config.num_classes)
        else:
            head = DepthHead(config.features, config.depth_head_hidden, config.non_negative)
        self.pretrained = DPTEncoder(config)
        self.scratch = FusionDecoder(config.stage_channels, config.features, config.use_bn, head)
        if config.task == "segmentation":
            self.auxlayer = AuxiliaryHead(config.features, config.num_classes)
        self.to_metric = (
            InverseDepthToMetric(config.metric_scale, config.metric_shift)
            if config.metric_scale is not None
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"DPT expects a (N, 3, H, W) batch, got shape {tuple(x.shape)}")
        if x.shape[-2] % INPUT_MULTIPLE or x.shape[-1] % INPUT_MULTIPLE:
            raise ValueError(
                f"DPT input height and width must be multiples of {INPUT_MULTIPLE}, got "
                f"{x.shape[-2]}x{x.shape[-1]} (resize with dpt_ros.transforms first)"
            )
        out = self.scratch(self.pretrained(x))
        if self.config.task == "segmentation":
            return out
        out = out.squeeze(dim=1)
        return out if self.to_metric is None else self.to_metric(out)


_VIT_BASE = {"embed_dim": 768, "depth": 12, "num_heads": 12}
_VIT_LARGE = {"embed_dim": 1024, "depth": 24, "num_heads": 16}
_DPT_BASE = DPTConfig(**_VIT_BASE, hooks=(2, 5, 8, 11), stage_channels=(96, 192, 384, 768))
# Taps after blocks 6, 12, 18, 24 as in the authors' code (the paper's text says 5, 12, 18, 24).
_DPT_LARGE = DPTConfig(**_VIT_LARGE, hooks=(5, 11, 17, 23), stage_channels=(256, 512, 1024, 1024))
_DPT_HYBRID = DPTConfig(
    backbone="hybrid", **_VIT_BASE, hooks=(0, 1, 8, 11), stage_channels=(256, 512, 768, 768)
)
# run_segmentation.py: 480x480 for both ADE20K models.
_SEGMENTATION = {
    "task": "segmentation",
    "use_bn": True,
    "num_classes": 150,
    "net_size": (480, 480),
}

_VARIANTS: dict[str, DPTConfig] = {
    "dpt_base": _DPT_BASE,
    "dpt_large": _DPT_LARGE,
    "dpt_hybrid": _DPT_HYBRID,
    "dpt_hybrid_ade20k": dataclasses.replace(_DPT_HYBRID, **_SEGMENTATION),
    "dpt_large_ade20k": dataclasses.replace(_DPT_LARGE, **_SEGMENTATION),
    # isl-org/DPT run_monodepth.py: the fine-tuned models' fixed scale and shift, and their
    # input sizes (net_w x net_h = 1216x352 for KITTI, 640x480 for NYU).
    "dpt_hybrid_kitti": dataclasses.replace(
        _DPT_HYBRID, metric_scale=0.00006016, metric_shift=0.00579, net_size=(352, 1216)
    ),
    "dpt_hybrid_nyu": dataclasses.replace(
        _DPT_HYBRID, metric_scale=0.000305, metric_shift=0.1378, net_size=(480, 640)
    ),
}

MODEL_NAMES: tuple[str, ...] = tuple(_VARIANTS)


def model_config(name: str) -> DPTConfig:
    """The configuration of a released variant (one of MODEL_NAMES)."""
    try:
        return _VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown DPT model {name!r}; known: {', '.join(MODEL_NAMES)}") from None


def build_model(name: str, **overrides: object) -> DPT:
    """A randomly initialised DPT of a released variant, with `overrides` applied to its
    config (e.g. ``readout="add"``). Nothing is downloaded."""
    return DPT(dataclasses.replace(model_config(name), **overrides))
