"""Optional TensorRT backend: torch-tensorrt engines built once per input shape, cached on disk.

``pip install 'dpt_ros[tensorrt]'`` (torch-tensorrt for torch 2.14; not a core dependency).
`TensorRTBackend.module_for(x)` returns a TensorRT-compiled module for the shape, dtype and
device of `x`, or None, in which case the caller runs its PyTorch module. An engine is
compiled ahead of time (``torch_tensorrt.compile(ir="dynamo")``), saved with
``torch_tensorrt.save`` (an ExportedProgram) and loaded with ``torch.export.load`` next time.
Its file name holds a digest of everything that makes an engine valid (`EngineKey`): the
model, a hash of its weights, the input shape, the precision, the GPU and the TensorRT
version; a file for another GPU or TensorRT version is simply never looked up.

When torch-tensorrt is missing, or a build or load fails, the backend says so once (a
warning with the reason) and returns None from then on for that shape: the engine keeps
running the PyTorch path. fp16 engines get the engine's finite-value check like any fp16
forward, and a non-finite output drops the runner to eager fp32 (`dpt_ros.engine`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

__all__ = ["EngineKey", "TensorRTBackend", "default_cache_dir", "weights_hash"]

LOG = logging.getLogger(__name__)
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
INSTALL_HINT = "pip install 'dpt_ros[tensorrt]' (torch-tensorrt for torch 2.14)"


def default_cache_dir() -> Path:
    """``$DPT_ROS_TRT_CACHE``, else ``$XDG_CACHE_HOME/dpt_ros/tensorrt`` (~/.cache/...)."""
    if os.environ.get("DPT_ROS_TRT_CACHE"):
        return Path(os.environ["DPT_ROS_TRT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dpt_ros" / "tensorrt"


def weights_hash(module: nn.Module) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    """What a cached TensorRT engine is valid for."""

    model: str
    weights: str  # weights_hash
    input_shape: tuple[int, ...]  # (N, 3, H, W)
    precision: str
    gpu: str
    tensorrt: str

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def filename(self) -> str:
        """``<model>_<N>x<H>x<W>_<precision>_<digest>.ep`` (model name made path-safe)."""
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.model)[:60]
        shape = "x".join(str(v) for v in (self.input_shape[0], *self.input_shape[2:]))
        return f"{safe}_{shape}_{self.precision}_{self.digest()[:20]}.ep"


class TensorRTBackend:
    """TensorRT modules for one PyTorch module, per input shape, built or loaded on demand.

    ``importer`` imports torch_tensorrt (tests pass a fake). ``gpu_name`` defaults to the
    name of the CUDA device the input lives on.
    """

    def __init__(
        self,
        module: nn.Module,
        model_name: str,
        precision: str,
        cache_dir: Path | str | None = None,
        importer: Callable[[str], ModuleType] = importlib.import_module,
        gpu_name: Callable[[torch.device], str] | None = None,
    ) -> None:
        if precision not in _DTYPES:
            raise ValueError(f"unknown precision {precision!r} for TensorRT")
        self.module = module
        self.model_name = model_name
        self.precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._gpu_name = gpu_name or (lambda device: torch.cuda.get_device_name(device))
        self._built: dict[tuple, nn.Module | None] = {}
        self._weights: str | None = None
        self.trt: ModuleType | None = None
        self.reason: str | None = None
        try:
            self.trt = importer("torch_tensorrt")
        except ImportError as exc:
            self._give_up(f"torch-tensorrt is not installed ({exc}); {INSTALL_HINT}")

    @property
    def available(self) -> bool:
        return self.trt is not None

    def key(self, x: torch.Tensor) -> EngineKey:
        if self._weights is None:
            self._weights = weights_hash(self.module)
        return EngineKey(
            model=self.model_name,
            weights=self._weights,
            input_shape=tuple(x.shape),
            precision=self.precision,
            gpu=self._gpu_name(x.device),
            tensorrt=str(getattr(self.trt, "__version__", "unknown")),
        )

    def module_for(self, x: torch.Tensor) -> nn.Module | None:
        """The TensorRT module for inputs like `x`, or None (run PyTorch)."""
        if self.trt is None:
            return None
        shape = (tuple(x.shape), x.dtype, str(x.device))
        if shape not in self._built:
            self._built[shape] = self._load_or_build(x)
        return self._built[shape]

    def _load_or_build(self, x: torch.Tensor) -> nn.Module | None:
        key = self.key(x)
        path = self.cache_dir / key.filename()
        if path.is_file():
            try:
                module = torch.export.load(str(path)).module()
                LOG.info("TensorRT engine loaded from %s", path)
                return module
            except Exception as exc:  # a stale or corrupt file: build again
                LOG.warning("TensorRT engine %s unreadable (%s): rebuilding", path, exc)
        try:
            module = self._build(x, path)
        except Exception as exc:
            self._give_up(
                f"TensorRT build for input {tuple(x.shape)} {self.precision} failed "
                f"({type(exc).__name__}: {exc})"
            )
            return None
        LOG.info("TensorRT engine built for %s and cached as %s", tuple(x.shape), path)
        return module

    def _build(self, x: torch.Tensor, path: Path) -> nn.Module:
        trt = self.trt
        assert trt is not None
        inputs = [x.contiguous()]
        compiled = trt.compile(
            self.module,
            ir="dynamo",
            arg_inputs=inputs,
            enabled_precisions={torch.float32, _DTYPES[self.precision]},
        )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed: a crash mid-save never leaves a truncated engine.
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            trt.save(compiled, str(partial), arg_inputs=inputs)
            os.replace(partial, path)
        except Exception as exc:  # the engine still runs; only the cache is lost
            partial.unlink(missing_ok=True)
            LOG.warning("TensorRT engine not cached (%s: %s)", type(exc).__name__, exc)
        return compiled

    def _give_up(self, reason: str) -> None:
        if self.reason is None:
            LOG.warning("%s: running the PyTorch path", reason)
        self.reason = reason
