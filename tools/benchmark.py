#!/usr/bin/env python3
"""Frame-rate benchmark: the engine against the bare model, a naive loop and transformers.

    tools/benchmark.py --model dpt_hybrid --weights random --device cpu --size 640x480 \\
        --frames 10 --json /tmp/bench.json

Systems, all on the same weights and synthetic uint8 frames of --size:
  engine        dpt_ros.engine.Engine: uint8 frame in, depth at the frame size out
                (on CUDA pipelined, max_in_flight frames in flight).
  forward       the bare model on an already resized and normalised tensor at network size:
                the floor any pipeline can reach.
  naive         synchronous numpy resize + normalise, .to(device), forward, .cpu(), resize back.
  transformers  Hugging Face DPTImageProcessor + DPTForDepthEstimation carrying the same
                weights (random weights are created in transformers and mapped into dpt_ros
                through dpt_ros.model.hf; a transformers DPT folder as --weights also works),
                plus its post_process_depth_estimation back to the frame size.
  engine[V]     --variants: the engine with the options of VARIANTS[V] (precision, memory
                format, int8 dynamic quantisation of the Linear layers, torch.compile, CUDA
                graphs, TensorRT) on its own copy of the weights.
On the CPU the systems are interleaved frame by frame (--rounds), starting each round with the
next system, so that load from other processes hits all of them alike; the ratios are what to
compare.
JSON: config, systems.<name>.{ms_per_frame (median), p90_ms, fps, latency_ms, stages, peak
host RSS, peak device memory}, ratios, checks (same-weights proof), variants.<name>.{ms, ratio
to transformers and to the fp32 engine, depth error against our fp32 output as a share of its
range (median, max), setup and first-frame seconds (compile time)}, notes.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import inspect
import json
import platform
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpt_ros import transforms  # noqa: E402
from dpt_ros.engine import PRECISIONS, STAGES, Engine, EngineConfig  # noqa: E402

SYSTEMS = ("engine", "forward", "naive", "transformers")
# Engine options tried against each other (--variants). "int8": EngineConfig.int8, dynamic int8
# quantisation of every nn.Linear (torch.ao; the ViT's attention and MLP).
VARIANTS: dict[str, dict] = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "fp32+cl": {"precision": "fp32", "channels_last": True},
    "bf16": {"precision": "bf16", "channels_last": False},
    "bf16+cl": {"precision": "bf16", "channels_last": True},
    "auto": {"precision": "auto"},
    "int8": {"precision": "fp32", "channels_last": True, "int8": True},
    "int8+bf16+cl": {"precision": "bf16", "channels_last": True, "int8": True},
    "compile": {"precision": "fp32", "channels_last": True, "compile": True},
    "bf16+cl+compile": {"precision": "bf16", "channels_last": True, "compile": True},
    "fp32-eager": {"precision": "fp32", "cuda_graphs": False},
    "fp16-eager": {"precision": "fp16", "cuda_graphs": False},
    "fp16+graphs": {"precision": "fp16"},
    "fp32+graphs": {"precision": "fp32"},
    "bf16+graphs": {"precision": "bf16"},
    "tensorrt-fp16": {"precision": "fp16", "backend": "tensorrt", "cuda_graphs": False},
    "tensorrt-fp32": {"precision": "fp32", "backend": "tensorrt", "cuda_graphs": False},
}


@dataclass
class Record:
    submitted: float  # perf_counter seconds
    done: float
    stages: dict[str, float] = field(default_factory=dict)  # ms


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dpt_hybrid", help="depth model name or plug-in")
    parser.add_argument("--weights", default="random", help="'random', checkpoint or HF folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", *PRECISIONS),
        help="the engine's (and forward's, naive's) precision; auto as the front ends",
    )
    parser.add_argument(
        "--transformers-precision",
        default="fp32",
        choices=tuple(PRECISIONS),
        help="transformers' precision (the baseline of the goals: fp32)",
    )
    parser.add_argument(
        "--variants",
        default="",
        type=_variants,
        help=f"comma-separated engine variants to add, from {','.join(VARIANTS)}",
    )
    parser.add_argument("--size", default="640x480", type=_size, help="frame WIDTHxHEIGHT")
    parser.add_argument("--net-size", type=int, default=384)
    parser.add_argument("--frames", type=int, default=20, help="timed frames per system")
    parser.add_argument("--warmup", type=int, default=2, help="untimed frames per system first")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        type=_systems,
        help=f"comma-separated subset of {','.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="interleave the systems in this many rounds (0: one frame per round on the CPU, "
        "one round on CUDA, where the engine needs runs of frames to pipeline)",
    )
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="an image file to use as the frames (resized to --size) instead of synthetic ones",
    )
    parser.add_argument(
        "--init-errors",
        action="store_true",
        help="also measure each engine's error on dpt_ros' own random initialisation (the "
        "fan-in weights shared with transformers make the random network chaotic)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CUDA graphs of the engine (default: the engine's, on for CUDA)",
    )
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--int8", action="store_true", help="EngineConfig.int8 (CPU)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0 or args.rounds < 0:
        parser.error("--frames must be >= 1, --warmup and --rounds >= 0")
    return args


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return width, height


def _variants(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown variants {unknown}: choose from {VARIANTS}")
    return names


def _systems(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown systems {unknown}: choose from {SYSTEMS}")
    return names


# ---------------------------------------------------------------------- models


def hf_config_for(model: str):
    """A transformers DPTConfig describing the same network as dpt_ros's ``model``."""
    from transformers import BitConfig
    from transformers import DPTConfig as HFConfig

    from dpt_ros.model import model_config

    cfg = model_config(model)
    if cfg.task != "depth" or cfg.metric_scale is not None:
        raise ValueError(f"{model} is not a relative-depth model (transformers has no equivalent)")
    common = {
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "layer_norm_eps": cfg.layer_norm_eps,
        "image_size": cfg.pretrain_size,
        "patch_size": cfg.patch_size,
        "qkv_bias": cfg.qkv_bias,
        "readout_type": cfg.readout,
        "neck_hidden_sizes": list(cfg.stage_channels),
        "fusion_hidden_size": cfg.features,
        "use_batch_norm_in_fusion_residual": cfg.use_bn,
        "architectures": ["DPTForDepthEstimation"],
    }
    if cfg.backbone == "vit":
        return HFConfig(
            **common, backbone_out_indices=list(cfg.hooks), reassemble_factors=[4, 2, 1, 0.5]
        )
    grid = cfg.pretrain_size // cfg.patch_size
    stages = len(cfg.resnet_layers)
    bit = BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        depths=list(cfg.resnet_layers),
        hidden_sizes=[*cfg.resnet_channels, cfg.resnet_channels[-1] * 2],
        embedding_size=cfg.resnet_stem_channels,
        out_features=[f"stage{i + 1}" for i in range(stages)],
        embedding_dynamic_padding=True,
    )
    return HFConfig(
        **common,
        is_hybrid=True,
        backbone_config=bit,
        backbone_out_indices=[0, 1, *cfg.hooks[2:]],
        reassemble_factors=[1, 1, 1, 0.5],
        neck_ignore_stages=[0, 1],
        backbone_featmap_shape=[1, cfg.resnet_channels[-1], grid, grid],
    )


def build_models(args: argparse.Namespace, notes: list[str]):
    """(ours, hf or None): the same weights in both when transformers is benchmarked."""
    from dpt_ros.model import MODEL_NAMES, create_model, load_model

    hf = None
    ours = None
    if "transformers" in args.systems:
        try:
            from transformers import DPTForDepthEstimation

            if args.weights and (Path(args.weights) / "config.json").is_file():
                hf = DPTForDepthEstimation.from_pretrained(args.weights, local_files_only=True)
                ours = create_model(args.model, args.weights)
            elif args.weights != "random" or args.model not in MODEL_NAMES:
                raise ValueError(
                    "needs --weights random (one random network shared by both) or a "
                    "transformers DPT folder; dpt_ros maps weights from transformers only"
                )
            else:
                hf = DPTForDepthEstimation(hf_config_for(args.model))
                _fill_fan_in(hf)
                with tempfile.TemporaryDirectory() as folder:
                    hf.save_pretrained(folder)
                    ours = load_model(folder)
            hf = _allow_non_square(hf.eval())
        except Exception as exc:  # the benchmark still runs the other systems
            hf = None
            notes.append(f"transformers skipped: {type(exc).__name__}: {exc}")
    if ours is None:
        ours = create_model(args.model, args.weights)
    return ours, hf


def _fill_fan_in(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights with gain ~1 per layer (the rule of ../shared/dpt_reference/fill.py).
    transformers' own init (normal, std 0.02) lets the non-negative head output all zeros,
    which would make the same-weights check below vacuous."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if not tensor.is_floating_point():
                continue
            z = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                value = 1 + 0.1 * z.abs()
            elif leaf == "weight" and tensor.dim() == 1:
                value = 1 + 0.02 * z
            elif leaf == "weight":
                value = z / tensor[0].numel() ** 0.5
            elif leaf.endswith(("position_embeddings", "cls_token")):
                value = 0.5 * z
            else:
                value = 0.02 * z
            tensor.copy_(value.to(tensor.dtype))


def _allow_non_square(hf):
    """transformers' DPT reshapes tokens to a square grid in its neck (and its hybrid refuses
    non-square inputs unless the position embedding is interpolated, which
    DPTForDepthEstimation does not pass down). The authors' aspect-keeping 384x512 input needs
    the real grid, so hand it over; the computation is otherwise transformers' own."""
    patch = hf.config.patch_size
    grid: dict[str, tuple[int, int]] = {}
    embeddings, neck = hf.dpt.embeddings, hf.neck
    embed, reassemble = embeddings.forward, neck.forward
    interpolate = "interpolate_pos_encoding" in inspect.signature(embed).parameters

    def embeddings_forward(pixel_values, *args, **kwargs):
        grid["hw"] = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        if interpolate:
            kwargs["interpolate_pos_encoding"] = True
        return embed(pixel_values, *args, **kwargs)

    def neck_forward(hidden_states, patch_height=None, patch_width=None):
        if patch_height is None:
            patch_height, patch_width = grid["hw"]
        return reassemble(hidden_states, patch_height, patch_width)

    embeddings.forward = embeddings_forward
    neck.forward = neck_forward
    return hf


# ---------------------------------------------------------------------- systems


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        import contextlib

        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


class EngineSystem:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        cuda = engine.device.type == "cuda"
        self.in_flight = engine.config.max_in_flight if cuda else 1

    def run(self, frames: list[np.ndarray]) -> list[Record]:
        records: list[Record] = []
        pending: deque = deque()

        def finish() -> None:
            submitted, handle = pending.popleft()
            prediction = handle.result()
            records.append(Record(submitted, time.perf_counter(), dict(prediction.timings)))

        for rgb in frames:
            pending.append((time.perf_counter(), self.engine.submit(rgb)))
            while len(pending) >= self.in_flight:
                finish()
        while pending:
            finish()
        return records


class ForwardSystem:
    def __init__(self, engine: Engine, rgb: np.ndarray, net_size: int) -> None:
        self.model = engine.depth_model
        self.device = engine.device
        self.precision = engine.precisions["depth"]
        x = torch.from_numpy(transforms.preprocess_image(rgb, net_size=net_size))[None]
        memory_format = torch.channels_last if engine.channels_last else torch.contiguous_format
        self.x = x.to(self.device).contiguous(memory_format=memory_format)

    def run(self, frames: list[np.ndarray]) -> list[Record]:
        records = []
        for _ in frames:
            start = time.perf_counter()
            with torch.inference_mode(), _autocast(self.device, self.precision):
                self.model(self.x)
            _sync(self.device)
            done = time.perf_counter()
            records.append(Record(start, done, {"forward": (done - start) * 1e3}))
        return records


class NaiveSystem:
    """What a first implementation does: everything synchronous, float32 over the bus."""

    def __init__(self, engine: Engine, net_size: int) -> None:
        self.model = engine.depth_model
        self.device = engine.device
        self.precision = engine.precisions["depth"]
        self.net_size = net_size

    def run(self, frames: list[np.ndarray]) -> list[Record]:
        records = []
        for rgb in frames:
            t0 = time.perf_counter()
            height, width = rgb.shape[:2]
            net_h, net_w = transforms.network_input_size(height, width, self.net_size)
            image = cv2.resize(rgb.astype(np.float32) / 255.0, (net_w, net_h), cv2.INTER_CUBIC)
            image = (image - 0.5) / 0.5
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
            t1 = time.perf_counter()
            x = x.to(self.device)
            _sync(self.device)
            t2 = time.perf_counter()
            with torch.inference_mode(), _autocast(self.device, self.precision):
                out = self.model(x)
            _sync(self.device)
            t3 = time.perf_counter()
            out = out.float().cpu()
            t4 = time.perf_counter()
            depth = torch.nn.functional.interpolate(
                out[:, None], size=(height, width), mode="bicubic", align_corners=False
            )[0, 0].numpy()
            t5 = time.perf_counter()
            assert depth.shape == (height, width)
            stages = _stage_ms(t0, t1, t2, t3, t4, t5, order=("preprocess", "upload", "forward"))
            records.append(Record(t0, t5, stages))
        return records


class TransformersSystem:
    def __init__(self, hf, device: torch.device, precision: str, net_size: int) -> None:
        from transformers import DPTImageProcessor

        self.model = hf.to(device)
        self.device = device
        self.precision = precision
        self.processor = DPTImageProcessor(
            size={"height": net_size, "width": net_size},
            keep_aspect_ratio=True,
            ensure_multiple_of=32,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )

    def depth(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        t0 = time.perf_counter()
        pixels = self.processor(images=rgb, return_tensors="pt")["pixel_values"]
        t1 = time.perf_counter()
        pixels = pixels.to(self.device)
        _sync(self.device)
        t2 = time.perf_counter()
        with torch.inference_mode(), _autocast(self.device, self.precision):
            outputs = self.model(pixel_values=pixels)
        _sync(self.device)
        t3 = time.perf_counter()
        with torch.inference_mode():
            post = self.processor.post_process_depth_estimation(
                outputs, target_sizes=[rgb.shape[:2]]
            )
            depth = post[0]["predicted_depth"].float().cpu().numpy()
        t4 = time.perf_counter()
        stages = _stage_ms(t0, t1, t2, t3, t4, order=("preprocess", "upload", "forward"))
        return depth, stages

    def run(self, frames: list[np.ndarray]) -> list[Record]:
        records = []
        for rgb in frames:
            start = time.perf_counter()
            _, stages = self.depth(rgb)
            records.append(Record(start, time.perf_counter(), stages))
        return records


def _stage_ms(*times: float, order: tuple[str, ...]) -> dict[str, float]:
    """Consecutive perf_counter marks -> stage ms; what follows ``order`` is postprocess
    (download included when there is one more mark)."""
    spans = [(b - a) * 1e3 for a, b in zip(times[:-1], times[1:], strict=True)]
    stages = dict(zip(order, spans, strict=False))
    rest = spans[len(order) :]
    if len(rest) == 2:
        stages["download"], stages["postprocess"] = rest
    else:
        stages["postprocess"] = sum(rest)
    stages["total"] = sum(spans)
    return stages


# ---------------------------------------------------------------------- measurement


def _proc_status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Tally:
    records: list[Record] = field(default_factory=list)
    intervals_ms: list[float] = field(default_factory=list)
    block_ms: list[float] = field(default_factory=list)  # mean ms per frame of each round
    wall_s: float = 0.0
    peak_rss_mib: float = 0.0
    rss_growth_mib: float = 0.0
    peak_device_mib: float | None = None
    device_growth_mib: float | None = None


def run_block(
    run: Callable[[list[np.ndarray]], list[Record]],
    frames: list[np.ndarray],
    tally: Tally,
    device: torch.device,
) -> None:
    cuda = device.type == "cuda"
    _sync(device)
    rss_before = _proc_status_kib("VmRSS") or 0
    _reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        device_before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    records = run(frames)
    elapsed = time.perf_counter() - start
    tally.wall_s += elapsed
    tally.block_ms.append(elapsed * 1e3 / max(len(records), 1))
    previous = start
    for record in records:
        tally.intervals_ms.append((record.done - previous) * 1e3)
        previous = record.done
    tally.records.extend(records)
    peak = _proc_status_kib("VmHWM") or 0
    tally.peak_rss_mib = max(tally.peak_rss_mib, peak / 1024)
    tally.rss_growth_mib = max(tally.rss_growth_mib, (peak - rss_before) / 1024)
    if cuda:
        peak_device = torch.cuda.max_memory_allocated(device)
        tally.peak_device_mib = max(tally.peak_device_mib or 0.0, peak_device / 2**20)
        growth = (peak_device - device_before) / 2**20
        tally.device_growth_mib = max(tally.device_growth_mib or 0.0, growth)


def _median_p90(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(array)), "p90": float(np.percentile(array, 90))}


def summarise(tally: Tally) -> dict:
    frames = len(tally.records)
    per_frame = _median_p90(tally.intervals_ms)
    latency = _median_p90([(r.done - r.submitted) * 1e3 for r in tally.records])
    keys = [k for k in STAGES if any(k in r.stages for r in tally.records)]
    keys += sorted({k for r in tally.records for k in r.stages} - set(keys))
    stages = {k: _median_p90([r.stages[k] for r in tally.records if k in r.stages]) for k in keys}
    # Everything but the network: robust to load from other processes, which mostly hits the
    # (long) forward.
    overhead = [(r.done - r.submitted) * 1e3 - r.stages.get("forward", 0.0) for r in tally.records]
    return {
        "frames": frames,
        "ms_per_frame": per_frame["median"],
        "p90_ms": per_frame["p90"],
        "fps": frames / tally.wall_s if tally.wall_s > 0 else None,
        "latency_ms": latency,
        "stages_ms": stages,
        "overhead_ms": _median_p90(overhead),
        "peak_host_rss_mib": round(tally.peak_rss_mib, 1),
        "host_rss_growth_mib": round(tally.rss_growth_mib, 1),
        "peak_device_mib": _round(tally.peak_device_mib),
        "device_growth_mib": _round(tally.device_growth_mib),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def synthetic_frames(width: int, height: int, count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(count):
        base = np.stack([xx / width, yy / height, 0.5 + 0.5 * np.sin((xx + yy + 40 * i) / 30)], -1)
        noisy = base * 255 + rng.normal(0, 12, base.shape)
        frames.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return frames


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    width, height = args.size
    notes: list[str] = []
    ours, hf = build_models(args, notes)
    # Our fp32 output: the yardstick of every variant's error (and of the same-weights checks).
    reference = Engine(
        EngineConfig(
            model=None,
            device=args.device,
            precision="fp32",
            net_size=args.net_size,
            channels_last=False,
            cuda_graphs=False,
        ),
        depth_model=copy.deepcopy(ours),
    )
    config = EngineConfig(
        model=None,
        device=args.device,
        precision=args.precision,
        net_size=args.net_size,
        max_in_flight=args.max_in_flight,
        cuda_graphs=args.cuda_graphs,
        compile=args.compile,
        int8=args.int8,
    )
    engine = Engine(config, depth_model=ours)
    device = engine.device
    frames = synthetic_frames(width, height)
    if args.image is not None:
        image = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"error: cannot read image {args.image}")
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        frames = [np.ascontiguousarray(image[:, :, ::-1])]
    net_hw = transforms.network_input_size(height, width, args.net_size)

    systems: dict[str, Callable[[list[np.ndarray]], list[Record]]] = {}
    transformers_system = None
    for name in args.systems:
        if name == "engine":
            systems[name] = EngineSystem(engine).run
        elif name == "forward":
            systems[name] = ForwardSystem(engine, frames[0], args.net_size).run
        elif name == "naive":
            systems[name] = NaiveSystem(engine, args.net_size).run
        elif name == "transformers" and hf is not None:
            transformers_system = TransformersSystem(
                hf, device, args.transformers_precision, args.net_size
            )
            systems[name] = transformers_system.run

    setup: dict[str, dict[str, float]] = {}
    engines = {"engine": engine} if "engine" in systems else {}
    for name in args.variants:
        start = time.perf_counter()
        try:
            variant = build_variant(name, config, reference.depth_model)
            built = time.perf_counter()
            variant.infer(frames[0])  # compiles, autotunes
        except Exception as exc:  # one failing option must not cost the others
            notes.append(f"variant {name} skipped: {type(exc).__name__}: {exc}")
            continue
        setup[f"engine[{name}]"] = {
            "setup_s": built - start,
            "first_frame_s": time.perf_counter() - built,
        }
        engines[f"engine[{name}]"] = variant
        systems[f"engine[{name}]"] = EngineSystem(variant).run

    checks = same_weights_checks(reference, hf, frames[0], args, device, net_hw)

    for run in systems.values():  # warm-up: allocation, autotuning, graph capture
        if args.warmup:
            run([frames[i % len(frames)] for i in range(args.warmup)])
    rounds = args.rounds or (args.frames if device.type == "cpu" else 1)
    rounds = min(rounds, args.frames)
    tallies = {name: Tally() for name in systems}
    sequence = [frames[i % len(frames)] for i in range(args.frames)]
    for r in range(rounds):
        block = sequence[r * args.frames // rounds : (r + 1) * args.frames // rounds]
        names = list(systems)
        # Rotate who goes first each round: the first run after another system pays for caches.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run_block(systems[name], block, tallies[name], device)

    results = {name: summarise(tally) for name, tally in tallies.items()}
    variants = variant_table(results, engines, reference, frames[0], setup, transformers_system)
    for name, row in variants.items():
        for base in ("transformers", "engine[fp32]"):
            if name in tallies and base in tallies and base != name:
                paired = [
                    a / max(b, 1e-9)
                    for a, b in zip(tallies[name].block_ms, tallies[base].block_ms, strict=True)
                ]
                row[f"vs_{base}_paired"] = float(np.median(paired))
    if args.init_errors:
        init_errors(variants, args, config, frames[0])
    ratios: dict[str, float] = {}
    for base in ("forward", "naive", "transformers"):
        if "engine" in results and base in results:
            ratios[f"engine/{base}"] = results["engine"]["ms_per_frame"] / max(
                results[base]["ms_per_frame"], 1e-9
            )
            # Rounds run the systems back to back, so per-round ratios cancel slow drifts in load.
            paired = [
                e / max(b, 1e-9)
                for e, b in zip(tallies["engine"].block_ms, tallies[base].block_ms, strict=True)
            ]
            ratios[f"engine/{base} (median of per-round ratios)"] = float(np.median(paired))
    report = {
        "config": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "size": f"{width}x{height}",
            "network_input_hw": list(net_hw),
            "rounds": rounds,
            "device_name": _device_name(device),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
        },
        "systems": results,
        "ratios": ratios,
        "checks": checks,
        "variants": variants,
        "notes": notes,
    }
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def build_variant(name: str, base: EngineConfig, model: torch.nn.Module) -> Engine:
    """The engine with VARIANTS[name]'s options on its own copy of `model`'s weights."""
    options = VARIANTS[name]
    return Engine(dataclasses.replace(base, **options), depth_model=copy.deepcopy(model))


def variant_table(results, engines, reference, rgb, setup, transformers_system) -> dict:
    """Per engine system: time, ratios, setup/compile seconds and the depth error against our
    fp32 output on one frame, as a share of that output's range (median and max)."""
    expected = reference.infer(rgb).depth
    scale = max(float(expected.max() - expected.min()), 1e-12)
    outputs = {name: engine.infer(rgb).depth for name, engine in engines.items()}
    if transformers_system is not None:
        outputs["transformers"] = transformers_system.depth(rgb)[0]
    table = {}
    for name, depth in outputs.items():
        error = np.abs(depth.astype(np.float64) - expected) / scale
        row = {
            "ms_per_frame": results.get(name, {}).get("ms_per_frame"),
            "error_median": float(np.median(error)),
            "error_max": float(error.max()),
            **setup.get(name, {}),
        }
        if name in engines:
            row["precision"] = engines[name].precisions["depth"]
            row["channels_last"] = engines[name].channels_last
        for base in ("transformers", "engine[fp32]"):
            if row["ms_per_frame"] is not None and base in results and base != name:
                row[f"vs_{base}"] = row["ms_per_frame"] / max(results[base]["ms_per_frame"], 1e-9)
        table[name] = row
    return table


def init_errors(variants: dict, args, config: EngineConfig, rgb: np.ndarray) -> None:
    """Adds error_median_init / error_max_init: each engine system's depth error against our
    fp32 output with dpt_ros' own random initialisation (``create_model(model, 'random')``),
    one engine at a time."""
    from dpt_ros.model import create_model

    model = create_model(args.model, "random")
    fp32 = dataclasses.replace(
        config, precision="fp32", channels_last=False, compile=False, cuda_graphs=False
    )
    expected = Engine(fp32, depth_model=copy.deepcopy(model)).infer(rgb).depth
    scale = max(float(expected.max() - expected.min()), 1e-12)
    for name, row in variants.items():
        if name == "engine":
            engine = Engine(config, depth_model=copy.deepcopy(model))
        elif name.startswith("engine["):
            engine = build_variant(name[len("engine[") : -1], config, model)
        else:
            continue
        error = np.abs(engine.infer(rgb).depth.astype(np.float64) - expected) / scale
        row["error_median_init"] = float(np.median(error))
        row["error_max_init"] = float(error.max())
        del engine


def same_weights_checks(engine, hf, rgb, args, device, net_hw) -> dict:
    """Proof that the systems compute the same network: ours vs transformers on one tensor,
    and the engine vs the authors' pipeline (preprocess_image, forward, resize back)."""
    checks: dict[str, float | list[int]] = {}
    model = engine.depth_model
    x = torch.from_numpy(transforms.preprocess_image(rgb, net_size=args.net_size))[None]
    x = x.to(device)
    with torch.inference_mode(), _autocast(device, engine.precisions["depth"]):
        ours = model(x).float()
        if hf is not None:
            theirs = hf.to(device)(pixel_values=x).predicted_depth.float()
            checks["forward_max_rel_diff_dpt_ros_vs_transformers"] = float(
                (ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12)
            )
        authors = transforms.resize_prediction(ours, size=rgb.shape[:2])[0].cpu().numpy()
    depth = engine.infer(rgb).depth
    checks["engine_max_rel_diff_vs_authors_pipeline"] = float(
        np.abs(depth - authors).max() / max(np.abs(authors).max(), 1e-12)
    )
    checks["network_input_hw"] = list(net_hw)
    return checks


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def print_table(report: dict) -> None:
    cfg = report["config"]
    print(
        f"\n{cfg['model']} ({cfg['weights']}) on {cfg['device']} [{cfg['device_name']}], "
        f"{cfg['precision']}, frames {cfg['size']} -> network {cfg['network_input_hw'][0]}x"
        f"{cfg['network_input_hw'][1]}, {cfg['frames']} frames, {cfg['threads']} threads"
    )
    stages = ("host_copy", "upload", "preprocess", "forward", "postprocess", "download")
    header = (
        f"{'system':<13}{'ms/frame':>10}{'p90':>9}{'fps':>8}{'latency':>9}"
        + "".join(f"{s[:8]:>10}" for s in stages)
        + f"{'overhead':>10}{'RSS MiB':>9}{'dev MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, r in report["systems"].items():
        cells = [
            f"{r['stages_ms'][s]['median']:10.1f}" if s in r["stages_ms"] else f"{'-':>10}"
            for s in stages
        ]
        device_mib = r["peak_device_mib"]
        print(
            f"{name:<13}{r['ms_per_frame']:10.1f}{r['p90_ms']:9.1f}{r['fps']:8.2f}"
            f"{r['latency_ms']['median']:9.1f}"
            + "".join(cells)
            + f"{r['overhead_ms']['median']:10.1f}{r['peak_host_rss_mib']:9.0f}"
            + f"{'-' if device_mib is None else f'{device_mib:.0f}':>9}"
        )
    print("(stage columns: medians in ms; overhead: everything but the forward)")
    for name, ratio in report["ratios"].items():
        print(f"{name}: {ratio:.3f}")
    for name, value in report["checks"].items():
        print(f"check {name}: {value}")
    if report["variants"]:
        print(
            "\n(vs: ratios of medians; paired: median of per-round ratios)\n"
            f"{'engine system':<24}{'ms/frame':>10}{'vs transf.':>11}{'paired':>8}{'vs fp32':>9}"
            f"{'paired':>8}"
            f"{'err med %':>10}{'err max %':>10}{'setup s':>9}{'1st s':>8}"
            f"{'init med %':>11}{'init max %':>11}"
        )
    for name, row in report["variants"].items():

        def cell(key: str, width: int, fmt: str, row=row) -> str:
            value = row.get(key)
            return f"{'-':>{width}}" if value is None else f"{value:{width}{fmt}}"

        print(
            f"{name:<24}{cell('ms_per_frame', 10, '.1f')}{cell('vs_transformers', 11, '.3f')}"
            f"{cell('vs_transformers_paired', 8, '.3f')}{cell('vs_engine[fp32]', 9, '.3f')}"
            f"{cell('vs_engine[fp32]_paired', 8, '.3f')}{row['error_median'] * 100:10.3f}"
            f"{row['error_max'] * 100:10.3f}{cell('setup_s', 9, '.1f')}"
            f"{cell('first_frame_s', 8, '.1f')}"
            + "".join(
                "-".rjust(11) if key not in row else f"{row[key] * 100:11.3f}"
                for key in ("error_median_init", "error_max_init")
            )
        )
    for note in report["notes"]:
        print(f"note: {note}")


if __name__ == "__main__":
    sys.exit(main())
