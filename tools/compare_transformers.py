#!/usr/bin/env python3
"""CPU forward time of dpt_ros's DPT next to transformers' DPTForDepthEstimation, same weights.

For each variant a random transformers DPT with the variant's architecture is built locally
(nothing is downloaded), its weights are mapped into ours with dpt_ros.model.hf, and both run
the same 1x3xSxS input. Runs alternate between the two so that load from other processes hits
both alike. Prints (or writes) JSON: per variant the parameter counts, the median and all
times in ms, and the largest output difference relative to max |output|.

    .venv/bin/python tools/compare_transformers.py --threads 2 --runs 5 --out compare.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpt_ros.model import model_config  # noqa: E402
from dpt_ros.model.hf import model_from_hf  # noqa: E402

VARIANTS = ("dpt_hybrid", "dpt_base", "dpt_large")


def hf_settings(name: str) -> dict:
    """transformers DPTConfig arguments for the authors' variant `name` (depth models)."""
    config = model_config(name)
    hybrid = config.backbone == "hybrid"
    settings = {
        "architectures": ["DPTForDepthEstimation"],
        "hidden_size": config.embed_dim,
        "num_hidden_layers": config.depth,
        "num_attention_heads": config.num_heads,
        "intermediate_size": int(config.embed_dim * config.mlp_ratio),
        "image_size": config.pretrain_size,
        "patch_size": config.patch_size,
        "layer_norm_eps": config.layer_norm_eps,
        "neck_hidden_sizes": list(config.stage_channels),
        "fusion_hidden_size": config.features,
        "readout_type": config.readout,
        "is_hybrid": hybrid,
    }
    if hybrid:
        # transformers uses backbone_out_indices[2:] for the ViT taps of the hybrid.
        settings["backbone_out_indices"] = [2, 5, *config.hooks[2:]]
        settings["reassemble_factors"] = [1, 1, 1, 0.5]
        settings["backbone_featmap_shape"] = [1, config.resnet_channels[-1], 24, 24]
    else:
        settings["backbone_out_indices"] = list(config.hooks)
    return settings


def randomise(model: torch.nn.Module) -> None:
    """Gain-1 random weights (as ../shared/dpt_reference/fill.py's rule), so that the output
    varies across the image and a mapping error would show; transformers' own init leaves the
    depth map almost constant and zeroes the class token and position embeddings."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2 and not name.endswith(("cls_token", "position_embeddings")):
                fan_in = param[0].numel()
                param.normal_(0.0, fan_in**-0.5)
            elif name.endswith(("cls_token", "position_embeddings")):
                param.normal_(0.0, 0.5)
            elif name.endswith("weight"):
                param.normal_(1.0, 0.02)
            else:
                param.normal_(0.0, 0.02)


def build_pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    import transformers

    torch.manual_seed(0)
    hf_model = transformers.DPTForDepthEstimation(transformers.DPTConfig(**hf_settings(name)))
    randomise(hf_model)
    ours = model_from_hf(hf_model.config.to_dict(), hf_model.state_dict(), where=name)
    return ours.eval(), hf_model.eval()


def timed_ms(fn, x: torch.Tensor) -> float:
    start = time.perf_counter()
    fn(x)
    return (time.perf_counter() - start) * 1e3


def compare(name: str, size: tuple[int, int], runs: int, warmup: int) -> dict:
    config = model_config(name)
    if config.backbone == "hybrid" and size != (config.pretrain_size, config.pretrain_size):
        side = config.pretrain_size
        return {"model": name, "skipped": f"transformers' hybrid DPT accepts only {side}x{side}"}
    ours, hf_model = build_pair(name)

    def run_hf(x: torch.Tensor) -> torch.Tensor:
        return hf_model(pixel_values=x).predicted_depth

    torch.manual_seed(1)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        a, b = ours(x), run_hf(x)
        diff = float((a - b).abs().max() / b.abs().max())
        for _ in range(warmup):
            ours(x)
            run_hf(x)
        ours_ms, hf_ms = [], []
        for _ in range(runs):
            ours_ms.append(timed_ms(ours, x))
            hf_ms.append(timed_ms(run_hf, x))
    result = {
        "model": name,
        "params_ours": sum(p.numel() for p in ours.parameters()),
        "params_transformers": sum(p.numel() for p in hf_model.parameters()),
        "ours_ms_median": statistics.median(ours_ms),
        "transformers_ms_median": statistics.median(hf_ms),
        "ours_ms": [round(t, 1) for t in ours_ms],
        "transformers_ms": [round(t, 1) for t in hf_ms],
        "max_rel_diff_float32": diff,
        "transformers_attn_implementation": hf_model.config._attn_implementation,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--models", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model (median)")
    parser.add_argument("--warmup", type=int, default=1)
    # transformers' DPT takes square inputs only (its ViT neck assumes a square token grid).
    parser.add_argument("--size", type=int, default=384, help="input side (square)")
    parser.add_argument("--out", type=Path, default=None, help="write JSON here (else stdout)")
    args = parser.parse_args(argv)

    import timm
    import transformers

    torch.set_num_threads(args.threads)
    report = {
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "input": [1, 3, args.size, args.size],
        "dtype": "float32",
        "runs": args.runs,
        "warmup": args.warmup,
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "transformers": transformers.__version__,
        },
        "results": [],
    }
    for name in args.models:
        report["results"].append(compare(name, (args.size, args.size), args.runs, args.warmup))
        print(json.dumps(report["results"][-1]), file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
