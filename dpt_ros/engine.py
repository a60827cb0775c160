"""Inference engine: uint8 RGB frames in, depth and labels out, on CUDA or on the CPU.

One object turns frames into `Prediction`s with the same API on every device:
``infer(rgb)``, ``submit(rgb).result()`` and ``infer_batch(frames)``.

CPU: synchronous, under ``torch.inference_mode``. Preprocessing is the authors' own
(`dpt_ros.transforms.preprocess_image`); predictions are resized back as
`transforms.resize_prediction` does (bicubic depth, bilinear logits) but with OpenCV: the same
kernels and pixel-centre convention, ~8x faster on the CPU than torch's, and closer to the exact
float64 result than torch's float32 bicubic (they differ by ~3e-5 of the value range).

CUDA (per input size, a ring of ``max_in_flight + 1`` slots, each allocated once and reused):
    host: copy frame -> pinned uint8 slot
    upload stream:   pinned -> device uint8 (non_blocking), event
    compute streams: wait event; uint8 -> float, bicubic resize, normalise (on device);
                     forward under autocast; resize back; argmax + 1 for labels; event
                     (depth and segmentation on their own streams, so they run concurrently)
    download stream: wait compute events; device -> pinned output slot (non_blocking), event
    result():        waits for that frame's download event only, then copies out of the slot.
fp16/bf16 run under autocast; a device-side all-finite flag travels with the download, and a
model whose output was not finite is rerun in eager fp32 for that frame and stays so (logged
once; compiled models get the same check). CUDA graphs of each model's forward per input
shape, captured once a shape repeats (`dpt_ros.graph_cache`: bounded LRU), and torch.compile.
Results never alias the pinned slots (a slot is reused ``max_in_flight + 1`` frames later):
``result()`` returns fresh arrays. A slot whose previous frame was never collected is
collected (copied out) before reuse, which is also what bounds the frames in flight.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import nn

from dpt_ros import transforms
from dpt_ros.graph_cache import GraphCache
from dpt_ros.precision import cpu_native_bf16, precision_problem, resolve_precision
from dpt_ros.quantize import quantize_linear_int8
from dpt_ros.trt_backend import TensorRTBackend

LOG = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
BACKENDS = ("pytorch", "tensorrt")
STAGES = ("host_copy", "upload", "preprocess", "forward", "postprocess", "download", "total")
DEPTH, SEGMENTATION = "depth", "segmentation"
_KINDS = (DEPTH, SEGMENTATION)
_DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
# Pools for this many distinct input sizes stay allocated; the least recently used goes first.
_MAX_POOLS = 4
# Labels are argmax + 1 in uint8, so a segmentation model may have at most 255 classes.
_MAX_CLASSES = 255


@dataclass
class EngineConfig:
    """What to run and where. ``output_size`` is (width, height); None keeps the input size.

    ``precision``: fp32, bf16, fp16 (CUDA only) or auto (`dpt_ros.precision`: bf16 on a CPU
    with native bf16, else fp32; fp16 on CUDA). ``model=None`` runs segmentation only.
    ``channels_last=None`` turns it on where it pays (CPU; CUDA with fp16/bf16). ``tf32`` allows
    TF32 matmuls/convolutions on CUDA (process-wide). ``batch_size`` is the chunk size of
    `Engine.infer_batch`. ``threads`` sets torch's (process-wide) intra-op thread count.
    ``cuda_graphs``: None = on for CUDA (a forward is captured once its input shape has been
    seen ``graph_after`` times; at most ``max_graphs`` graphs and ``graph_memory_mib`` of
    device memory kept, least recently used dropped first), off on the CPU; False = off.
    ``int8`` (CPU): the Linear layers dynamically quantised (`dpt_ros.quantize`).
    ``backend='tensorrt'`` (CUDA): `dpt_ros.trt_backend` engines per input shape, cached in
    ``trt_cache_dir`` (default ~/.cache/dpt_ros/tensorrt); PyTorch when unavailable.
    """

    model: str | None = "dpt_hybrid"
    weights: str | None = None
    segmentation_model: str | None = None
    segmentation_weights: str | None = None
    device: str = "cpu"
    precision: str = "fp32"
    net_size: int | str = transforms.AUTO  # "auto": each model's own size (transforms.resize_rule)
    output_size: tuple[int, int] | None = None
    threads: int | None = None
    cuda_graphs: bool | None = None
    graph_after: int = 2
    max_graphs: int = 8
    graph_memory_mib: int = 4096
    compile: bool = False
    int8: bool = False
    backend: str = "pytorch"
    trt_cache_dir: str | None = None
    max_in_flight: int = 2
    batch_size: int = 4
    channels_last: bool | None = None
    tf32: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.fullmatch(self.device.strip()):
            raise ValueError(f"unknown device {self.device!r}: use 'cpu', 'cuda' or 'cuda:N'")
        self.device = self.device.strip()
        problem = precision_problem(self.device, self.precision)
        if problem is not None:
            raise ValueError(problem)
        if self.net_size != transforms.AUTO and not _is_positive_int(self.net_size):
            raise ValueError(
                f"net_size must be 'auto' or a positive integer, got {self.net_size!r}"
            )
        if self.output_size is not None:
            size = tuple(self.output_size)
            if len(size) != 2 or not all(_is_positive_int(v) for v in size):
                raise ValueError(
                    f"output_size must be (width, height) with positive integers or None, "
                    f"got {self.output_size!r}"
                )
            self.output_size = (int(size[0]), int(size[1]))
        if self.threads is not None and not _is_positive_int(self.threads):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if not _is_positive_int(self.max_in_flight):
            raise ValueError(
                f"max_in_flight must be a positive integer, got {self.max_in_flight!r}"
            )
        if not _is_positive_int(self.batch_size):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.backend == "tensorrt" and self.device == "cpu":
            raise ValueError("backend 'tensorrt' needs CUDA (EngineConfig.device='cuda')")
        if self.int8 and self.device != "cpu":
            raise ValueError("int8 (dynamic quantisation of the Linear layers) is CPU only")
        for name in ("graph_after", "max_graphs", "graph_memory_mib"):
            value = getattr(self, name)
            if not (_is_positive_int(value) or value == 0) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


@dataclass
class Prediction:
    """One frame's outputs. ``depth`` is relative inverse depth unless ``depth_semantics`` is
    ``"metric_depth"`` (metres); ``labels`` are argmax + 1 (0 = "other"). ``timings`` holds
    milliseconds per stage (`STAGES`; for a batch, the batch's time divided by its size)."""

    depth: np.ndarray | None
    depth_semantics: str
    labels: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)


class Handle:
    """A submitted frame. ``result()`` blocks until that frame (and only it) is ready.

    ``debug`` (filled when the result is collected) holds ``events``: CUDA event times in ms
    relative to the engine's start, ``buffers``: data pointers of the slot's buffers, ``slot``:
    the slot index, and ``rerun_fp32``: the models rerun in fp32 for this frame; empty on the
    CPU.
    """

    def __init__(self, engine: Engine, pending: _Pending) -> None:
        self._engine = engine
        self._pending = pending

    def result(self) -> Prediction:
        return self._engine._collect(self._pending)[0]

    def done(self) -> bool:
        """True when ``result()`` will not block (never blocks itself)."""
        pending = self._pending
        if pending.predictions is not None:
            return True
        return pending.slot is not None and pending.slot.events["download_end"].query()

    @property
    def debug(self) -> dict:
        return self._pending.debug


class Engine:
    """Runs a depth model, a segmentation model or both on uint8 RGB frames.

    ``depth_model`` / ``segmentation_model`` override the config's names (plug-ins and tests).
    Not re-entrant across threads beyond an internal lock: calls are serialised.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        depth_model: nn.Module | None = None,
        segmentation_model: nn.Module | None = None,
    ) -> None:
        self.config = config = config if config is not None else EngineConfig()
        self.device = _resolve_device(config.device)
        self._cuda = self.device.type == "cuda"
        if config.cuda_graphs and not self._cuda:
            raise ValueError("cuda_graphs needs a CUDA device (EngineConfig.device='cuda')")
        self._graphs = GraphCache(
            max_graphs=config.max_graphs if self._cuda and config.cuda_graphs is not False else 0,
            max_bytes=config.graph_memory_mib << 20,
            capture_after=config.graph_after,
        )
        precision, why = resolve_precision(config.device, config.precision)
        if self._cuda and precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise RuntimeError(f"precision 'bf16' is not supported by {self.device}; use fp16")
        LOG.info("precision %s (%s: %s)", precision, config.precision, why)
        if precision == "bf16" and not self._cuda and not cpu_native_bf16()[0]:
            LOG.warning("bf16 on a CPU without native bf16 is emulated and slower than fp32")
        # What was asked for with auto resolved; `precisions` says what runs now.
        self.precision = precision
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        # channels_last pays on the CPU (oneDNN's convolutions; DPT-Hybrid's ResNet ~7-10%
        # faster) and on CUDA below fp32 (tensor-core convolutions).
        self._channels_last = (
            config.channels_last
            if config.channels_last is not None
            else not self._cuda or precision != "fp32"
        )
        if self._cuda:
            torch.backends.cuda.matmul.allow_tf32 = config.tf32
            torch.backends.cudnn.allow_tf32 = config.tf32
            # Stream frames share a few fixed shapes: autotuned convolutions pay off.
            torch.backends.cudnn.benchmark = True

        self._runners: dict[str, _Runner] = {}
        if depth_model is None and config.model is not None:
            depth_model = _create(config.model, config.weights)
        if segmentation_model is None and config.segmentation_model is not None:
            segmentation_model = _create(config.segmentation_model, config.segmentation_weights)
        for kind, module in ((DEPTH, depth_model), (SEGMENTATION, segmentation_model)):
            if module is not None:
                self._runners[kind] = self._make_runner(kind, module)
        if not self._runners:
            raise ValueError("no model: set EngineConfig.model and/or segmentation_model")
        # One preprocessed input feeds both models: its size follows the depth model's own
        # rule (or the segmentation model's when it runs alone).
        self.resize_rule = transforms.resize_rule(
            config.net_size, next(iter(self._runners.values())).eager
        )

        self._lock = threading.RLock()
        self._pools: OrderedDict[tuple[int, int, int], _Pool] = OrderedDict()
        if self._cuda:
            with torch.cuda.device(self.device):
                self._upload_stream = torch.cuda.Stream(self.device)
                self._download_stream = torch.cuda.Stream(self.device)
                self._origin = torch.cuda.Event(enable_timing=True)
                self._origin.record(torch.cuda.current_stream(self.device))
                torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ public API

    @property
    def depth_model(self) -> nn.Module | None:
        runner = self._runners.get(DEPTH)
        return runner.module if runner else None

    @property
    def segmentation_model(self) -> nn.Module | None:
        runner = self._runners.get(SEGMENTATION)
        return runner.module if runner else None

    @property
    def precisions(self) -> dict[str, str]:
        """Precision each model runs in now (fp16/bf16 fall back to fp32 on non-finite output)."""
        return {kind: runner.precision for kind, runner in self._runners.items()}

    @property
    def channels_last(self) -> bool:
        """Whether the models and their inputs use the channels_last memory format."""
        return self._channels_last

    @property
    def depth_semantics(self) -> str:
        runner = self._runners.get(DEPTH)
        return runner.semantics if runner else "none"

    def infer(
        self, rgb: np.ndarray, want_depth: bool = True, want_labels: bool | None = None
    ) -> Prediction:
        return self.submit(rgb, want_depth, want_labels).result()

    def submit(
        self, rgb: np.ndarray, want_depth: bool = True, want_labels: bool | None = None
    ) -> Handle:
        """Start one frame; on CUDA this returns before the frame is computed."""
        _check_frame(rgb)
        kinds = self._wanted(want_depth, want_labels)
        with self._lock:
            return Handle(self, self._start([rgb], kinds))

    def infer_batch(
        self,
        frames: Sequence[np.ndarray],
        want_depth: bool = True,
        want_labels: bool | None = None,
    ) -> list[Prediction]:
        """Frames of the same size run as real batches of ``batch_size``; order is kept."""
        if isinstance(frames, np.ndarray):
            raise TypeError("infer_batch takes a sequence of HxWx3 frames, not one array")
        frames = list(frames)
        for i, rgb in enumerate(frames):
            _check_frame(rgb, f"frames[{i}]")
        kinds = self._wanted(want_depth, want_labels)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(frames):
            by_size.setdefault(rgb.shape[:2], []).append(i)
        size = self.config.batch_size
        chunks = [idx[j : j + size] for idx in by_size.values() for j in range(0, len(idx), size)]
        results: list[Prediction | None] = [None] * len(frames)
        with self._lock:
            pendings = [(chunk, self._start([frames[i] for i in chunk], kinds)) for chunk in chunks]
            for chunk, pending in pendings:
                for i, prediction in zip(chunk, self._collect(pending), strict=True):
                    results[i] = prediction
        return results  # type: ignore[return-value]

    def warmup(self, width: int, height: int, frames: int = 3) -> None:
        """Run a few frames of this size (allocates the pool, autotunes, captures graphs once
        ``frames`` > ``graph_after``)."""
        rgb = np.zeros((height, width, 3), np.uint8)
        for _ in range(frames):
            self.infer(rgb, DEPTH in self._runners, SEGMENTATION in self._runners)

    def allocated_buffers(self) -> int:
        """Number of pooled host and device buffers held now (constant once sizes are seen)."""
        with self._lock:
            return sum(slot.buffer_count() for pool in self._pools.values() for slot in pool.slots)

    def close(self) -> None:
        """Collect every frame in flight and free the pools."""
        with self._lock:
            for pool in self._pools.values():
                self._drain(pool)
            self._pools.clear()
            if self._cuda:
                torch.cuda.synchronize(self.device)
            self._graphs.clear()

    # ------------------------------------------------------------------ set-up

    def _make_runner(self, kind: str, module: nn.Module) -> _Runner:
        if not isinstance(module, nn.Module):
            raise TypeError(f"{kind} model must be a torch.nn.Module, got {type(module).__name__}")
        default = "labels" if kind == SEGMENTATION else "relative_inverse_depth"
        semantics = getattr(module, "output_semantics", default)
        if kind == DEPTH and semantics == "labels":
            raise ValueError(
                "the depth model is a segmentation model (output_semantics 'labels'): "
                "pass it as segmentation_model"
            )
        if kind == SEGMENTATION and semantics != "labels":
            raise ValueError(
                f"the segmentation model has output_semantics {semantics!r}, expected 'labels'"
            )
        module = module.eval().requires_grad_(False).to(self.device)
        if self.config.int8:
            module = quantize_linear_int8(module)
        if self._channels_last:
            module = module.to(memory_format=torch.channels_last)
        eager = module
        if self.config.compile:
            module = torch.compile(module)
        stream = torch.cuda.Stream(self.device) if self._cuda else None
        runner = _Runner(
            kind, module, semantics, self.precision, stream, eager, self.config.compile
        )
        if self.config.backend == "tensorrt":
            name = self.config.model if kind == DEPTH else self.config.segmentation_model
            trt = TensorRTBackend(
                eager, name or type(eager).__name__, self.precision, self.config.trt_cache_dir
            )
            runner.trt = trt if trt.available else None
        return runner

    def _wanted(self, want_depth: bool, want_labels: bool | None) -> tuple[str, ...]:
        if want_labels is None:
            want_labels = SEGMENTATION in self._runners
        if want_depth and DEPTH not in self._runners:
            raise ValueError("this engine has no depth model: call with want_depth=False")
        if want_labels and SEGMENTATION not in self._runners:
            raise ValueError(
                "this engine has no segmentation model (EngineConfig.segmentation_model): "
                "call with want_labels=False"
            )
        kinds = tuple(k for k, w in ((DEPTH, want_depth), (SEGMENTATION, want_labels)) if w)
        if not kinds:
            raise ValueError("nothing to do: want_depth and want_labels are both off")
        return kinds

    # ------------------------------------------------------------------ shared pieces

    def _start(self, frames: list[np.ndarray], kinds: tuple[str, ...]) -> _Pending:
        if self._cuda:
            with torch.cuda.device(self.device), torch.inference_mode():
                return self._start_cuda(frames, kinds)
        return self._run_cpu(frames, kinds)

    def _collect(self, pending: _Pending) -> list[Prediction]:
        if pending.predictions is None:
            with self._lock:
                self._resolve(pending)
        return pending.predictions  # type: ignore[return-value]

    def _output_hw(self, height: int, width: int) -> tuple[int, int]:
        if self.config.output_size is None:
            return height, width
        width_out, height_out = self.config.output_size
        return height_out, width_out

    def _autocast(self, precision: str) -> contextlib.AbstractContextManager:
        if precision == "fp32":
            return contextlib.nullcontext()
        # No weight-cast cache: it would be captured into CUDA graphs and outlive the context.
        return torch.autocast(self.device.type, dtype=PRECISIONS[precision], cache_enabled=False)

    def _forward(
        self, runner: _Runner, x: torch.Tensor, batch: int, precision: str, check: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model output as float32 ((N,H,W) depth or (N,C,H,W) logits) and, with ``check``, a
        device-side all-finite flag (read later, so no host synchronisation here)."""
        trt = runner.trt.module_for(x) if runner.trt is not None else None
        if trt is not None:  # precision is compiled into the TensorRT engine
            out = trt(x)
        else:
            with self._autocast(precision):
                out = runner.module(x)
        out = _checked_output(runner.kind, out, batch).float()
        finite = torch.isfinite(out).all() if check else None
        return out, finite

    def _fall_back(self, runner: _Runner) -> None:
        """After a non-finite output: plain eager fp32 from now on (says so once)."""
        if runner.checked:
            what = runner.precision + (" (torch.compile)" if runner.compiled else "")
            what += " (TensorRT)" if runner.trt is not None else ""
            LOG.warning(
                "%s model produced non-finite values in %s: rerunning in eager fp32 and "
                "staying there",
                runner.kind,
                what,
            )
            runner.precision = "fp32"
            runner.module = runner.eager
            runner.compiled = False
            runner.trt = None

    # ------------------------------------------------------------------ CPU path

    def _run_cpu(self, frames: list[np.ndarray], kinds: tuple[str, ...]) -> _Pending:
        n = len(frames)
        height, width = frames[0].shape[:2]
        out_hw = self._output_hw(height, width)
        t0 = time.perf_counter()
        frames = [np.ascontiguousarray(rgb) for rgb in frames]
        t1 = time.perf_counter()
        net = np.stack(
            [
                transforms.preprocess_image(
                    rgb, net_size=self.resize_rule.net_size, method=self.resize_rule.method
                )
                for rgb in frames
            ]
        )
        t2 = time.perf_counter()
        x = torch.from_numpy(net)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t3 = time.perf_counter()
        outputs: dict[str, np.ndarray] = {}
        forward_ms: dict[str, float] = {}
        with torch.inference_mode():
            for kind in kinds:
                start = time.perf_counter()
                runner = self._runners[kind]
                out, finite = self._forward(runner, x, n, runner.precision, runner.checked)
                if finite is not None and not bool(finite):
                    self._fall_back(runner)
                    out, _ = self._forward(runner, x, n, "fp32", False)
                outputs[kind] = out.numpy()
                forward_ms[kind] = (time.perf_counter() - start) * 1e3
        t4 = time.perf_counter()
        depth = [None] * n
        labels = [None] * n
        if DEPTH in outputs:
            depth = [_resize_cpu(plane, out_hw) for plane in outputs[DEPTH]]
        if SEGMENTATION in outputs:
            labels = [_labels_cpu(logits, out_hw) for logits in outputs[SEGMENTATION]]
        t5 = time.perf_counter()
        timings = {
            "host_copy": (t1 - t0) * 1e3,
            "upload": (t3 - t2) * 1e3,
            "preprocess": (t2 - t1) * 1e3,
            "forward": (t4 - t3) * 1e3,
            "postprocess": (t5 - t4) * 1e3,
            "download": 0.0,
            "total": (t5 - t0) * 1e3,
        }
        if len(kinds) > 1:
            timings.update({f"forward_{kind}": ms for kind, ms in forward_ms.items()})
        timings = {key: ms / n for key, ms in timings.items()}
        pending = _Pending(kinds=kinds, batch=n)
        pending.predictions = [
            Prediction(
                depth=depth[i],
                depth_semantics=self.depth_semantics if depth[i] is not None else "none",
                labels=labels[i],
                timings=dict(timings),
            )
            for i in range(n)
        ]
        return pending

    # ------------------------------------------------------------------ CUDA path

    def _pool(self, batch: int, height: int, width: int) -> _Pool:
        key = (batch, height, width)
        pool = self._pools.get(key)
        if pool is not None:
            self._pools.move_to_end(key)
            return pool
        if len(self._pools) >= _MAX_POOLS:
            _, oldest = self._pools.popitem(last=False)
            self._drain(oldest)
        net_hw = self.resize_rule.input_size(height, width)
        pool = _Pool(
            key=key,
            net_hw=tuple(net_hw),
            out_hw=self._output_hw(height, width),
            slots=[
                _Slot(
                    index=i,
                    batch=batch,
                    in_hw=(height, width),
                    net_hw=tuple(net_hw),
                    out_hw=self._output_hw(height, width),
                    device=self.device,
                    channels_last=self._channels_last,
                    kinds=tuple(self._runners),
                )
                for i in range(self.config.max_in_flight + 1)
            ],
        )
        # The pool's buffers were initialised on the current stream; the side streams must not
        # touch them before that (once per input size).
        torch.cuda.current_stream(self.device).synchronize()
        self._pools[key] = pool
        return pool

    def _drain(self, pool: _Pool) -> None:
        for slot in pool.slots:
            if slot.owner is not None:
                self._resolve(slot.owner)

    def _start_cuda(self, frames: list[np.ndarray], kinds: tuple[str, ...]) -> _Pending:
        n = len(frames)
        height, width = frames[0].shape[:2]
        pool = self._pool(n, height, width)
        slot = pool.next_slot()
        if slot.owner is not None:
            # The ring is full: the oldest frame must leave its slot before the slot is reused.
            self._resolve(slot.owner)
        t0 = time.perf_counter()
        for i, rgb in enumerate(frames):
            np.copyto(slot.host_in_np[i], rgb)
        host_copy_ms = (time.perf_counter() - t0) * 1e3
        ev = slot.events

        upload = self._upload_stream
        with torch.cuda.stream(upload):
            ev["upload_start"].record(upload)
            slot.dev_in.copy_(slot.host_in, non_blocking=True)
            ev["upload_end"].record(upload)

        runners = [self._runners[kind] for kind in kinds]
        first = runners[0]
        with torch.cuda.stream(first.stream):
            first.stream.wait_event(ev["upload_end"])
            ev["preprocess_start"].record(first.stream)
            x = transforms.preprocess_tensor(slot.dev_in, size=pool.net_hw, channels_last=True)
            slot.dev_net.copy_(x)
            ev["preprocess_end"].record(first.stream)

        checked = []
        for runner in runners:
            stream = runner.stream
            with torch.cuda.stream(stream):
                if runner is not first:
                    stream.wait_event(ev["preprocess_end"])
                if runner.checked:
                    checked.append(runner.kind)
                self._compute_cuda(runner, pool, slot, n)

        download = self._download_stream
        with torch.cuda.stream(download):
            for runner in runners:
                download.wait_event(ev[f"postprocess_end:{runner.kind}"])
            ev["download_start"].record(download)
            if DEPTH in kinds:
                slot.host_depth.copy_(slot.dev_depth, non_blocking=True)
            if SEGMENTATION in kinds:
                slot.host_labels.copy_(slot.dev_labels, non_blocking=True)
            if checked:
                slot.host_flags.copy_(slot.dev_flags, non_blocking=True)
            ev["download_end"].record(download)

        pending = _Pending(kinds=kinds, batch=n, slot=slot, pool=pool)
        pending.host_copy_ms = host_copy_ms
        pending.checked = tuple(checked)
        slot.owner = pending
        return pending

    def _compute_cuda(self, runner: _Runner, pool: _Pool, slot: _Slot, batch: int) -> None:
        """Forward and postprocess on the runner's (current) stream; no host synchronisation."""
        stream, kind, ev = runner.stream, runner.kind, slot.events
        precision, check = runner.precision, runner.checked
        ev[f"forward_start:{kind}"].record(stream)
        key = (kind, tuple(slot.dev_net.shape), precision)
        graph = self._graphs.get(key)
        # TensorRT engines launch their own kernels: no graphs around them.
        if graph is None and runner.trt is None and self._graphs.should_capture(key):
            graph = self._capture(runner, slot.dev_net, batch, precision, check)
            self._release(self._graphs.put(key, graph, graph.nbytes))
            graph = self._graphs.get(key)
        if graph is not None:
            graph.static_in.copy_(slot.dev_net)
            graph.graph.replay()
            out, finite = graph.static_out, graph.static_finite
        else:
            out, finite = self._forward(runner, slot.dev_net, batch, precision, check)
        ev[f"forward_end:{kind}"].record(stream)
        self._postprocess_cuda(kind, out, slot, pool.out_hw)
        if finite is not None:
            slot.dev_flags[_KINDS.index(kind)].copy_(finite)
        ev[f"postprocess_end:{kind}"].record(stream)

    def _postprocess_cuda(
        self, kind: str, out: torch.Tensor, slot: _Slot, out_hw: tuple[int, int]
    ) -> None:
        resized = transforms.resize_prediction(out, size=out_hw)
        if kind == DEPTH:
            slot.dev_depth.copy_(resized)
        else:
            slot.dev_labels.copy_(resized.argmax(dim=1).add_(1))

    def _capture(
        self, runner: _Runner, example: torch.Tensor, batch: int, precision: str, check: bool
    ) -> _Graph:
        """CUDA graph of the forward (and finite check) for one input shape, on the runner's
        stream. Warm-up runs first so autotuning and lazy initialisation stay out of the graph."""
        static_in = torch.empty_like(example)
        static_in.copy_(example)
        for _ in range(3):
            self._forward(runner, static_in, batch, precision, check)
        runner.stream.synchronize()
        reserved = torch.cuda.memory_reserved(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=runner.stream, capture_error_mode="thread_local"):
            static_out, static_finite = self._forward(runner, static_in, batch, precision, check)
        # The graph's private memory pool, plus its input buffer.
        nbytes = torch.cuda.memory_reserved(self.device) - reserved + static_in.nbytes
        return _Graph(graph, static_in, static_out, static_finite, precision, nbytes)

    def _release(self, graphs: list[_Graph]) -> None:
        """Drop evicted graphs once the device has finished any replay of them (their memory
        pools go with them). Rare: only when the cache overflows."""
        if graphs:
            torch.cuda.synchronize(self.device)
            graphs.clear()

    def _resolve(self, pending: _Pending) -> None:
        """Wait for one frame's download, rerun non-finite outputs in fp32, copy out, free the
        slot. Called with the lock held."""
        if pending.predictions is not None:
            return
        with torch.cuda.device(self.device), torch.inference_mode():
            self._resolve_cuda(pending)

    def _resolve_cuda(self, pending: _Pending) -> None:
        slot, pool = pending.slot, pending.pool
        assert slot is not None and pool is not None
        ev = slot.events
        ev["download_end"].synchronize()
        n, kinds = pending.batch, pending.kinds
        bad = [k for k in pending.checked if not bool(slot.host_flags_np[_KINDS.index(k)])]
        if bad:
            self._rerun_fp32(bad, pool, slot, n)
        timings, events = _cuda_timings(ev, kinds, self._origin, pending.host_copy_ms)
        timings = {key: ms / n for key, ms in timings.items()}
        depth = slot.host_depth_np.copy() if DEPTH in kinds else None
        labels = slot.host_labels_np.copy() if SEGMENTATION in kinds else None
        pending.debug = {
            "events": events,
            "buffers": slot.pointers(),
            "slot": slot.index,
            "rerun_fp32": tuple(bad),
        }
        pending.predictions = [
            Prediction(
                depth=depth[i] if depth is not None else None,
                depth_semantics=self.depth_semantics if depth is not None else "none",
                labels=labels[i] if labels is not None else None,
                timings=dict(timings),
            )
            for i in range(n)
        ]
        slot.owner = None
        pending.slot = pending.pool = None

    def _rerun_fp32(self, kinds: list[str], pool: _Pool, slot: _Slot, batch: int) -> None:
        # Rare path: may synchronise. Every stream goes idle first so that graphs captured in
        # the failed precision can be dropped safely.
        torch.cuda.synchronize(self.device)
        for kind in kinds:
            runner = self._runners[kind]
            self._fall_back(runner)
            self._release(self._graphs.drop(lambda key, kind=kind: key[0] == kind))
            with torch.cuda.stream(runner.stream):
                out, _ = self._forward(runner, slot.dev_net, batch, "fp32", False)
                self._postprocess_cuda(kind, out, slot, pool.out_hw)
                target = slot.host_depth if kind == DEPTH else slot.host_labels
                source = slot.dev_depth if kind == DEPTH else slot.dev_labels
                target.copy_(source, non_blocking=True)
        torch.cuda.synchronize(self.device)


# ---------------------------------------------------------------------- internals


@dataclass
class _Runner:
    kind: str
    module: nn.Module  # what runs: the model, or torch.compile of it
    semantics: str
    precision: str
    stream: torch.cuda.Stream | None
    eager: nn.Module
    compiled: bool
    trt: TensorRTBackend | None = None  # backend 'tensorrt': per-shape engines

    @property
    def checked(self) -> bool:
        """Whether outputs get the finite check: below fp32, and under torch.compile (which
        was seen to return NaN for DPT-Hybrid on the CPU at 384x512 where eager was finite)."""
        return self.precision != "fp32" or self.compiled


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static_in: torch.Tensor
    static_out: torch.Tensor
    static_finite: torch.Tensor | None
    precision: str
    nbytes: int


_EVENT_NAMES = (
    "upload_start",
    "upload_end",
    "preprocess_start",
    "preprocess_end",
    *(f"{stage}:{kind}" for kind in _KINDS for stage in ("forward_start", "forward_end")),
    *(f"postprocess_end:{kind}" for kind in _KINDS),
    "download_start",
    "download_end",
)


class _Slot:
    """One frame's worth of pinned host and device buffers plus its timing events."""

    def __init__(
        self,
        index: int,
        batch: int,
        in_hw: tuple[int, int],
        net_hw: tuple[int, int],
        out_hw: tuple[int, int],
        device: torch.device,
        channels_last: bool,
        kinds: tuple[str, ...],
    ) -> None:
        self.index = index
        self.owner: _Pending | None = None
        height, width = in_hw
        self.host_in = torch.empty((batch, height, width, 3), dtype=torch.uint8, pin_memory=True)
        self.host_in_np = self.host_in.numpy()
        self.dev_in = torch.empty((batch, height, width, 3), dtype=torch.uint8, device=device)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.dev_net = torch.empty(
            (batch, 3, *net_hw), dtype=torch.float32, device=device, memory_format=layout
        )
        self.dev_flags = torch.ones(len(_KINDS), dtype=torch.bool, device=device)
        self.host_flags = torch.ones(len(_KINDS), dtype=torch.bool, pin_memory=True)
        self.host_flags_np = self.host_flags.numpy()
        self.dev_depth = self.host_depth = self.host_depth_np = None
        self.dev_labels = self.host_labels = self.host_labels_np = None
        if DEPTH in kinds:
            self.dev_depth = torch.empty((batch, *out_hw), dtype=torch.float32, device=device)
            self.host_depth = torch.empty((batch, *out_hw), dtype=torch.float32, pin_memory=True)
            self.host_depth_np = self.host_depth.numpy()
        if SEGMENTATION in kinds:
            self.dev_labels = torch.empty((batch, *out_hw), dtype=torch.uint8, device=device)
            self.host_labels = torch.empty((batch, *out_hw), dtype=torch.uint8, pin_memory=True)
            self.host_labels_np = self.host_labels.numpy()
        self.events = {name: torch.cuda.Event(enable_timing=True) for name in _EVENT_NAMES}

    def buffers(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in (
            "host_in",
            "dev_in",
            "dev_net",
            "dev_flags",
            "host_flags",
            "dev_depth",
            "host_depth",
            "dev_labels",
            "host_labels",
        ):
            tensor = getattr(self, name)
            if tensor is not None:
                yield name, tensor

    def buffer_count(self) -> int:
        return sum(1 for _ in self.buffers())

    def pointers(self) -> dict[str, int]:
        return {name: tensor.data_ptr() for name, tensor in self.buffers()}


@dataclass
class _Pool:
    """The slots for one (batch, height, width)."""

    key: tuple[int, int, int]
    net_hw: tuple[int, int]
    out_hw: tuple[int, int]
    slots: list[_Slot]
    cursor: int = 0

    def next_slot(self) -> _Slot:
        slot = self.slots[self.cursor]
        self.cursor = (self.cursor + 1) % len(self.slots)
        return slot


@dataclass
class _Pending:
    kinds: tuple[str, ...]
    batch: int
    slot: _Slot | None = None
    pool: _Pool | None = None
    host_copy_ms: float = 0.0
    checked: tuple[str, ...] = ()
    predictions: list[Prediction] | None = None
    debug: dict = field(default_factory=dict)


def _cuda_timings(
    ev: dict[str, torch.cuda.Event],
    kinds: tuple[str, ...],
    origin: torch.cuda.Event,
    host_copy_ms: float,
) -> tuple[dict[str, float], dict[str, float]]:
    forward = {k: ev[f"forward_start:{k}"].elapsed_time(ev[f"forward_end:{k}"]) for k in kinds}
    post = {k: ev[f"forward_end:{k}"].elapsed_time(ev[f"postprocess_end:{k}"]) for k in kinds}
    timings = {
        "host_copy": host_copy_ms,
        "upload": ev["upload_start"].elapsed_time(ev["upload_end"]),
        "preprocess": ev["preprocess_start"].elapsed_time(ev["preprocess_end"]),
        "forward": sum(forward.values()),
        "postprocess": sum(post.values()),
        "download": ev["download_start"].elapsed_time(ev["download_end"]),
        "total": host_copy_ms + ev["upload_start"].elapsed_time(ev["download_end"]),
    }
    if len(kinds) > 1:
        timings.update({f"forward_{k}": ms for k, ms in forward.items()})
    recorded = [
        "upload_start",
        "upload_end",
        "preprocess_start",
        "preprocess_end",
        *(f"{stage}:{k}" for k in kinds for stage in ("forward_start", "forward_end")),
        *(f"postprocess_end:{k}" for k in kinds),
        "download_start",
        "download_end",
    ]
    events = {name: origin.elapsed_time(ev[name]) for name in recorded}
    return timings, events


def _checked_output(kind: str, out: object, batch: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{kind} model returned {type(out).__name__}, expected a torch.Tensor")
    shape = tuple(out.shape)
    if kind == DEPTH:
        if out.dim() == 4 and shape[1] == 1:
            out = out[:, 0]
        if out.dim() != 3 or shape[0] != batch:
            raise ValueError(
                f"depth model returned shape {shape} for a batch of {batch}; "
                f"expected (N, H, W) or (N, 1, H, W) with N = {batch}"
            )
    elif out.dim() != 4 or shape[0] != batch or not 1 <= shape[1] <= _MAX_CLASSES:
        raise ValueError(
            f"segmentation model returned shape {shape} for a batch of {batch}; "
            f"expected (N, C, H, W) logits with N = {batch} and 1 <= C <= {_MAX_CLASSES}"
        )
    if not out.is_floating_point():
        raise TypeError(f"{kind} model returned dtype {out.dtype}, expected a float tensor")
    return out


def _resize_cpu(
    plane: np.ndarray, out_hw: tuple[int, int], interpolation: int = cv2.INTER_CUBIC
) -> np.ndarray:
    """OpenCV's bicubic / bilinear use the same kernels, half-pixel centres and clamped border
    as torch's (align_corners=False), so this is `transforms.resize_prediction` on the CPU."""
    height, width = out_hw
    plane = np.ascontiguousarray(plane, dtype=np.float32)
    if plane.shape == (height, width):
        return plane.copy()
    return cv2.resize(plane, (width, height), interpolation=interpolation)


def _labels_cpu(logits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """argmax + 1 over bilinearly resized logits (as `transforms.resize_prediction`), one class
    plane at a time (a running maximum), so the full (C, H, W) resized stack is never held;
    ties keep the lower class, as argmax does."""
    best = _resize_cpu(logits[0], out_hw, cv2.INTER_LINEAR)
    labels = np.ones(out_hw, np.uint8)
    for c in range(1, logits.shape[0]):
        plane = _resize_cpu(logits[c], out_hw, cv2.INTER_LINEAR)
        better = plane > best
        np.copyto(best, plane, where=better)
        labels[better] = c + 1
    return labels


def _check_frame(rgb: object, name: str = "frame") -> None:
    if not isinstance(rgb, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array (H, W, 3) uint8 RGB, got {type(rgb).__name__}"
        )
    if rgb.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3) (RGB), got {rgb.shape}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {rgb.shape}")


def _resolve_device(spec: str) -> torch.device:
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {spec!r} requested but CUDA is not available "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})"
            )
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist"
            )
        device = torch.device("cuda", index)
    return device


def _create(model: str, weights: str | None) -> nn.Module:
    from dpt_ros.model.factory import create_model

    return create_model(model, weights)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


__all__ = ["STAGES", "PRECISIONS", "Engine", "EngineConfig", "Handle", "Prediction"]
