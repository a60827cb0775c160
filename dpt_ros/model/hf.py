"""Hugging Face ``transformers`` DPT checkpoints -> our DPT (the authors' key names).

A directory written by ``DPTForDepthEstimation`` / ``DPTForSemanticSegmentation``
``.save_pretrained`` (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``, sharded
or not) is read without importing ``transformers``: the config gives a ``DPTConfig``, every
weight is renamed to the authors' key, and the result is loaded strictly. Both implement the
same network, so outputs agree to float rounding (tests/test_hf_equivalence.py).

Correspondences (HF -> authors'):
  embeddings + ``encoder.layer.i`` -> ``pretrained.model`` (timm ViT; q/k/v fused into ``qkv``)
  ``embeddings.backbone.bit`` -> ``pretrained.model.patch_embed.backbone`` (timm ResNetV2)
  ``neck.reassemble_stage.readout_projects.i`` -> ``pretrained.act_postprocess{i+1}.0.project``
  ``neck.reassemble_stage.layers.i.projection/resize`` -> ``pretrained.act_postprocess{i+1}.3/.4``
  ``neck.convs.i`` -> ``scratch.layer{i+1}_rn``
  ``neck.fusion_stage.layers.j`` -> ``scratch.refinenet{4-j}`` (HF fuses deepest first)
  ``head.head`` -> ``scratch.output_conv``; ``auxiliary_head.head`` -> ``auxlayer``
Entries with no HF counterpart, which ``forward`` never uses, keep fixed values: the ViT's
ImageNet classifier ``pretrained.model.head`` is zero, and ``auxlayer`` (when the HF model was
saved without its auxiliary head) keeps the fresh model's initialisation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dpt_ros.model.dpt import DPT, DPTConfig, model_config
from dpt_ros.model.weights import WeightsError, load_into, read_state_dict

__all__ = [
    "convert_state_dict",
    "dpt_config_from_hf",
    "load_hf_model",
    "model_from_hf",
]

# transformers' DPTConfig defaults (identical in 4.x and 5.x); older config.json files omit some.
_HF_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "image_size": 384,
    "patch_size": 16,
    "num_channels": 3,
    "is_hybrid": False,
    "qkv_bias": True,
    "backbone_out_indices": [2, 5, 8, 11],
    "readout_type": "project",
    "reassemble_factors": [4, 2, 1, 0.5],
    "neck_hidden_sizes": [96, 192, 384, 768],
    "fusion_hidden_size": 256,
    "head_in_index": -1,
    "use_batch_norm_in_fusion_residual": False,
    "use_bias_in_fusion_residual": None,
    "add_projection": False,
    "backbone_featmap_shape": [1, 1024, 24, 24],
    "neck_ignore_stages": [0, 1],
    "backbone_config": None,
}
# What timm's ResNetV2 stem of DPT-Hybrid is (vit_base_r50_s16_384): BiT bottlenecks without
# pre-activation, TF-"same" padding, GroupNorm(32); depths and widths are free.
_BIT_EXPECTED: dict[str, Any] = {
    "layer_type": "bottleneck",
    "global_padding": "same",
    "embedding_dynamic_padding": True,
    "num_groups": 32,
    "width_factor": 1,
    "hidden_act": "relu",
    "output_stride": 32,
    "num_channels": 3,
}
_BIT_DEFAULTS: dict[str, Any] = {
    **_BIT_EXPECTED,
    "depths": [3, 4, 9],
    "hidden_sizes": [256, 512, 1024, 2048],
    "embedding_size": 64,
}
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_ARCHITECTURES = {"DPTForDepthEstimation": "depth", "DPTForSemanticSegmentation": "segmentation"}


def _unsupported(directory: Path | str, what: str) -> WeightsError:
    return WeightsError(
        f"Hugging Face DPT at {directory}: {what}; only the authors' DPT architecture "
        "(ViT or ViT-Hybrid/BiT backbone, Reassemble, RefineNet fusion, depth or segmentation "
        "head) maps onto dpt_ros's DPT"
    )


def _as_square(value: Any, name: str, where: Path | str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise _unsupported(where, f"{name}={value} is not square")
        value = value[0]
    return int(value)


def _task(hf: Mapping[str, Any], where: Path | str) -> str:
    architectures = hf.get("architectures") or []
    tasks = {_ARCHITECTURES[a] for a in architectures if a in _ARCHITECTURES}
    if len(tasks) == 1:
        return tasks.pop()
    raise _unsupported(
        where,
        f"config.architectures={architectures} names neither DPTForDepthEstimation nor "
        "DPTForSemanticSegmentation (a bare DPTModel has no head)",
    )


def dpt_config_from_hf(hf_config: Mapping[str, Any], where: Path | str = "config") -> DPTConfig:
    """Our ``DPTConfig`` for a ``transformers`` DPT ``config.json`` dict; errors if none fits."""
    hf = {**_HF_DEFAULTS, **hf_config}
    if hf.get("model_type", "dpt") != "dpt":
        raise _unsupported(where, f"model_type is {hf.get('model_type')!r}, not 'dpt'")
    task = _task(hf, where)
    hybrid = bool(hf["is_hybrid"])
    checks = {
        "hidden_act": (hf["hidden_act"], "gelu"),
        "num_channels": (hf["num_channels"], 3),
        "head_in_index": (hf["head_in_index"], -1),
        "add_projection": (bool(hf["add_projection"]), False),
    }
    if not hybrid and hf["backbone_config"] is not None:
        backbone = hf["backbone_config"]
        kind = backbone.get("model_type") if isinstance(backbone, Mapping) else backbone
        raise _unsupported(where, f"its backbone is {kind!r} (from backbone_config)")
    if hf.get("backbone") not in (None, ""):
        raise _unsupported(where, f"its backbone is {hf['backbone']!r}")
    factors = [float(f) for f in hf["reassemble_factors"]]
    if hybrid:
        checks["reassemble_factors[2:]"] = (factors[2:], [1.0, 0.5])
        checks["neck_ignore_stages"] = (list(hf["neck_ignore_stages"]), [0, 1])
        checks["readout_type"] = (hf["readout_type"], "project")
        bit = {**_BIT_DEFAULTS, **(hf["backbone_config"] or {})}
        for key, want in _BIT_EXPECTED.items():
            got = bit[key].lower() if isinstance(bit[key], str) else bit[key]
            checks[f"backbone_config.{key}"] = (got, want)
        resnet_layers = tuple(int(d) for d in bit["depths"])
        resnet_channels = tuple(int(c) for c in bit["hidden_sizes"][: len(resnet_layers)])
        checks["backbone_featmap_shape[1]"] = (
            int(hf["backbone_featmap_shape"][1]),
            resnet_channels[-1],
        )
    else:
        checks["reassemble_factors"] = (factors, [4.0, 2.0, 1.0, 0.5])
    use_bn = bool(hf["use_batch_norm_in_fusion_residual"])
    if hf["use_bias_in_fusion_residual"] is not None:
        checks["use_bias_in_fusion_residual"] = (
            bool(hf["use_bias_in_fusion_residual"]),
            not use_bn,
        )
    if len(hf["neck_hidden_sizes"]) != 4 or len(hf["backbone_out_indices"]) != 4:
        raise _unsupported(where, "DPT needs exactly 4 neck_hidden_sizes and backbone_out_indices")
    bad = [f"{k}={got!r} (needs {want!r})" for k, (got, want) in checks.items() if got != want]
    if bad:
        raise _unsupported(where, "unsupported settings: " + ", ".join(bad))

    embed_dim = int(hf["hidden_size"])
    indices = [int(i) for i in hf["backbone_out_indices"]]
    hooks = (0, 1, *indices[2:]) if hybrid else tuple(indices)
    if task == "segmentation":
        num_classes = len(hf["id2label"]) if hf.get("id2label") else int(hf.get("num_labels", 2))
        base = model_config("dpt_hybrid_ade20k" if hybrid else "dpt_large_ade20k")
    else:
        num_classes = model_config("dpt_hybrid").num_classes
        base = model_config("dpt_hybrid" if hybrid else "dpt_base")
    hybrid_fields = (
        {
            "resnet_layers": resnet_layers,
            "resnet_channels": resnet_channels,
            "resnet_stem_channels": int(bit["embedding_size"]),
        }
        if hybrid
        else {}
    )
    try:
        return dataclasses.replace(
            base,
            **hybrid_fields,
            backbone="hybrid" if hybrid else "vit",
            embed_dim=embed_dim,
            depth=int(hf["num_hidden_layers"]),
            num_heads=int(hf["num_attention_heads"]),
            patch_size=_as_square(hf["patch_size"], "patch_size", where),
            pretrain_size=_as_square(hf["image_size"], "image_size", where),
            hooks=hooks,
            stage_channels=tuple(int(c) for c in hf["neck_hidden_sizes"]),
            features=int(hf["fusion_hidden_size"]),
            readout=hf["readout_type"],
            task=task,
            num_classes=num_classes,
            use_bn=use_bn,
            non_negative=True,
            depth_head_hidden=32,
            metric_scale=None,
            metric_shift=None,
            layer_norm_eps=float(hf["layer_norm_eps"]),
            qkv_bias=bool(hf["qkv_bias"]),
            mlp_ratio=int(hf["intermediate_size"]) / embed_dim,
        )
    except (TypeError, ValueError) as exc:
        raise _unsupported(where, f"its settings give no valid DPTConfig ({exc})") from exc


# --------------------------------------------------------------------------- key mapping

_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _rules() -> list[_Rule]:
    vit = "pretrained.model."
    bit = vit + "patch_embed.backbone."
    table: list[tuple[str, Callable[[re.Match[str]], str]]] = [
        (r"dpt\.embeddings\.cls_token", lambda m: vit + "cls_token"),
        (r"dpt\.embeddings\.position_embeddings", lambda m: vit + "pos_embed"),
        (
            r"dpt\.embeddings\.patch_embeddings\.projection\.(\w+)",
            lambda m: vit + f"patch_embed.proj.{m[1]}",
        ),
        (r"dpt\.embeddings\.projection\.(\w+)", lambda m: vit + f"patch_embed.proj.{m[1]}"),
        (
            r"dpt\.embeddings\.backbone\.bit\.embedder\.convolution\.weight",
            lambda m: bit + "stem.conv.weight",
        ),
        (
            r"dpt\.embeddings\.backbone\.bit\.embedder\.norm\.(\w+)",
            lambda m: bit + f"stem.norm.{m[1]}",
        ),
        (
            r"dpt\.embeddings\.backbone\.bit\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)",
            lambda m: bit + f"stages.{m[1]}.blocks.{m[2]}.{m[3]}",
        ),
        (
            r"dpt\.encoder\.layer\.(\d+)\.layernorm_before\.(\w+)",
            lambda m: vit + f"blocks.{m[1]}.norm1.{m[2]}",
        ),
        (
            r"dpt\.encoder\.layer\.(\d+)\.layernorm_after\.(\w+)",
            lambda m: vit + f"blocks.{m[1]}.norm2.{m[2]}",
        ),
        (
            r"dpt\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(\w+)",
            lambda m: vit + f"blocks.{m[1]}.attn.proj.{m[2]}",
        ),
        (
            r"dpt\.encoder\.layer\.(\d+)\.intermediate\.dense\.(\w+)",
            lambda m: vit + f"blocks.{m[1]}.mlp.fc1.{m[2]}",
        ),
        (
            r"dpt\.encoder\.layer\.(\d+)\.output\.dense\.(\w+)",
            lambda m: vit + f"blocks.{m[1]}.mlp.fc2.{m[2]}",
        ),
        (r"dpt\.layernorm\.(\w+)", lambda m: vit + f"norm.{m[1]}"),
        (
            r"neck\.reassemble_stage\.readout_projects\.(\d)\.0\.(\w+)",
            lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.0.project.0.{m[2]}",
        ),
        (
            r"neck\.reassemble_stage\.layers\.(\d)\.projection\.(\w+)",
            lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.3.{m[2]}",
        ),
        (
            r"neck\.reassemble_stage\.layers\.(\d)\.resize\.(\w+)",
            lambda m: f"pretrained.act_postprocess{int(m[1]) + 1}.4.{m[2]}",
        ),
        (r"neck\.convs\.(\d)\.weight", lambda m: f"scratch.layer{int(m[1]) + 1}_rn.weight"),
        (
            r"neck\.fusion_stage\.layers\.(\d)\.projection\.(\w+)",
            lambda m: f"scratch.refinenet{4 - int(m[1])}.out_conv.{m[2]}",
        ),
        (
            r"neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.convolution(\d)\.(\w+)",
            lambda m: f"scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}.{m[4]}",
        ),
        (
            r"neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.batch_norm(\d)\.(\w+)",
            lambda m: f"scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.bn{m[3]}.{m[4]}",
        ),
        (r"head\.head\.(\d)\.(\w+)", lambda m: f"scratch.output_conv.{m[1]}.{m[2]}"),
        (r"auxiliary_head\.head\.(\d)\.(\w+)", lambda m: f"auxlayer.{m[1]}.{m[2]}"),
    ]
    return [(re.compile(pattern + "$"), target) for pattern, target in table]


_RULES = _rules()
_QKV = re.compile(r"dpt\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(\w+)$")


def convert_state_dict(hf_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``transformers`` DPT state dict to the authors' keys (q, k, v fused to qkv)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in hf_state_dict.items():
        match = _QKV.match(key)
        if match:
            qkv.setdefault((match[1], match[3]), {})[match[2]] = value
            continue
        for pattern, target in _RULES:
            match = pattern.match(key)
            if match:
                out[target(match)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise WeightsError(
            f"{len(unknown)} Hugging Face DPT weights have no counterpart in dpt_ros's DPT, e.g. "
            + ", ".join(sorted(unknown)[:5])
        )
    for (block, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise WeightsError(f"encoder layer {block}: {kind} has only {sorted(parts)}")
        fused = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
        out[f"pretrained.model.blocks.{block}.attn.qkv.{kind}"] = fused
    return out


# --------------------------------------------------------------------------- loading


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    present = [name for name in _WEIGHT_FILES if (directory / name).is_file()]
    if not present:
        raise WeightsError(
            f"Hugging Face DPT at {directory} has no weights: expected one of "
            f"{', '.join(_WEIGHT_FILES)}"
        )
    first = directory / present[0]
    if not first.name.endswith(".index.json"):
        return read_state_dict(first)
    try:
        shards = sorted(set(json.loads(first.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"{first} is not a valid shard index: {exc}") from exc
    state_dict: dict[str, torch.Tensor] = {}
    for shard in shards:
        state_dict.update(read_state_dict(directory / shard))
    return state_dict


def model_from_hf(
    hf_config: Mapping[str, Any],
    hf_state_dict: Mapping[str, torch.Tensor],
    overrides: Mapping[str, Any] | None = None,
    where: Path | str = "Hugging Face DPT",
) -> DPT:
    """Our DPT (eval mode) from a ``transformers`` DPT config dict and state dict.

    ``overrides`` replace fields of the derived ``DPTConfig`` that do not change the weights
    (e.g. ``metric_scale`` / ``metric_shift``).
    """
    config = dpt_config_from_hf(hf_config, where)
    if overrides:
        try:
            config = dataclasses.replace(config, **overrides)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"{where}: {exc}") from exc
    state_dict = convert_state_dict(hf_state_dict)
    model = DPT(config)
    own = model.state_dict()
    has_aux = any(k.startswith("auxlayer.") for k in state_dict)
    for key in own.keys() - state_dict.keys():
        if key.startswith("pretrained.model.head."):
            state_dict[key] = torch.zeros_like(own[key])
        elif key.startswith("auxlayer.") and not has_aux:
            state_dict[key] = own[key]
    load_into(model, state_dict, source=str(where))
    return model.eval()


def load_hf_model(
    directory: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> DPT:
    """Our DPT carrying the weights of a ``transformers`` DPT directory, in eval mode."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise WeightsError(
            f"{directory} is not a Hugging Face model directory: it has no config.json"
        )
    try:
        hf_config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise WeightsError(f"{config_file} is not valid JSON: {exc}") from exc
    hf_state_dict = _read_weights(directory)
    where = f"Hugging Face DPT at {directory}"
    return model_from_hf(hf_config, hf_state_dict, overrides, where).to(map_location)
