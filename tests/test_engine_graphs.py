"""CUDA graph cache bookkeeping and the TensorRT backend's cache keys and fallbacks, with
fakes on the CPU; the same on a real GPU where one is present (marked ``cuda``)."""

from __future__ import annotations

import importlib.util
import logging
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dpt_ros.config import ConfigError, ModelSettings
from dpt_ros.engine import Engine, EngineConfig
from dpt_ros.graph_cache import GraphCache
from dpt_ros.trt_backend import EngineKey, TensorRTBackend, weights_hash


class TinyDepth(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.conv(x))[:, 0]


def frame(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------ graph cache


def test_a_key_is_captured_only_once_it_repeats() -> None:
    cache = GraphCache(max_graphs=4, max_bytes=1 << 30, capture_after=2)
    assert [cache.should_capture("a") for _ in range(3)] == [False, False, True]
    assert cache.should_capture("b") is False  # counted per key
    assert cache.put("a", "graph-a", 10) == []
    assert cache.get("a") == "graph-a" and "a" in cache and len(cache) == 1
    assert GraphCache(4, 1 << 30, capture_after=0).should_capture("x") is True


def test_least_recently_used_graph_is_evicted_by_count() -> None:
    cache = GraphCache(max_graphs=2, max_bytes=1 << 30, capture_after=0)
    cache.put("a", "A", 1)
    cache.put("b", "B", 1)
    cache.get("a")  # now b is the least recently used
    assert cache.put("c", "C", 1) == ["B"]
    assert cache.keys() == ["a", "c"]


def test_graphs_are_evicted_to_fit_the_memory_bound() -> None:
    cache = GraphCache(max_graphs=10, max_bytes=100, capture_after=0)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.put("c", "C", 50) == ["A"]
    assert cache.nbytes == 90 and cache.keys() == ["b", "c"]


def test_a_graph_larger_than_the_bound_is_not_kept_nor_recaptured() -> None:
    cache = GraphCache(max_graphs=10, max_bytes=100, capture_after=0)
    cache.put("small", "S", 10)
    assert cache.put("huge", "H", 101) == ["H"]
    assert "huge" not in cache and cache.keys() == ["small"]
    assert cache.should_capture("huge") is False


def test_replacing_a_key_returns_the_old_graph() -> None:
    cache = GraphCache(max_graphs=3, max_bytes=100, capture_after=0)
    cache.put("a", "A1", 10)
    assert cache.put("a", "A2", 10) == ["A1"]
    assert cache.get("a") == "A2" and cache.nbytes == 10


def test_drop_and_clear() -> None:
    cache = GraphCache(max_graphs=5, max_bytes=100, capture_after=0)
    for key in (("depth", 1), ("segmentation", 1), ("depth", 2)):
        cache.put(key, key, 1)
    assert sorted(cache.drop(lambda key: key[0] == "depth")) == [("depth", 1), ("depth", 2)]
    assert cache.keys() == [("segmentation", 1)]
    assert cache.clear() == [("segmentation", 1)] and len(cache) == 0


def test_disabled_cache_never_captures_and_sightings_are_bounded() -> None:
    off = GraphCache(max_graphs=0, max_bytes=100, capture_after=0)
    assert off.should_capture("a") is False
    cache = GraphCache(max_graphs=2, max_bytes=100, capture_after=1, max_tracked=3)
    cache.should_capture("a")
    for key in ("b", "c", "d"):  # pushes "a" out of the tracked sightings
        cache.should_capture(key)
    assert cache.should_capture("a") is False  # counted afresh
    assert cache.should_capture("a") is True
    with pytest.raises(ValueError, match="must be >= 0"):
        GraphCache(max_graphs=-1, max_bytes=1)


def test_graph_settings_on_the_cpu() -> None:
    engine = Engine(EngineConfig(model=None, net_size=64), depth_model=TinyDepth())
    assert engine._graphs.max_graphs == 0  # default: graphs only on CUDA
    engine.infer(frame())
    assert len(engine._graphs) == 0
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        Engine(EngineConfig(model=None, cuda_graphs=True), depth_model=TinyDepth())
    with pytest.raises(ValueError, match="max_graphs must be an integer >= 0"):
        EngineConfig(model=None, max_graphs=-1)


# ------------------------------------------------------------------ TensorRT backend


class FakeTrt(types.SimpleNamespace):
    """Stands in for torch_tensorrt: ``compile`` returns a module or raises, ``save`` writes."""

    def __init__(self, fail: bool = False, result: nn.Module | None = None) -> None:
        super().__init__(__version__="10.99-fake", builds=0, saves=[])
        self.fail = fail
        self.result = result

    def compile(self, module, ir, arg_inputs, enabled_precisions):  # noqa: A003
        self.builds += 1
        assert ir == "dynamo" and len(arg_inputs) == 1
        if self.fail:
            raise RuntimeError("unsupported operator")
        return self.result or module

    def save(self, module, path, arg_inputs):
        Path(path).write_bytes(b"engine")
        self.saves.append(path)


def backend(trt: FakeTrt | None, cache: Path, model: nn.Module | None = None) -> TensorRTBackend:
    def importer(name: str):
        assert name == "torch_tensorrt"
        if trt is None:
            raise ImportError("No module named 'torch_tensorrt'")
        return trt

    return TensorRTBackend(
        model or TinyDepth(), "dpt_hybrid", "fp16", cache, importer, gpu_name=lambda d: "H200"
    )


def test_missing_tensorrt_falls_back_with_one_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dpt_ros.trt_backend"):
        trt = backend(None, tmp_path)
        assert trt.module_for(torch.zeros(1, 3, 8, 8)) is None
    assert not trt.available
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "torch-tensorrt is not installed" in messages[0] and "dpt_ros[tensorrt]" in messages[0]
    assert "PyTorch path" in messages[0]


def test_failed_build_falls_back_once_per_shape(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeTrt(fail=True)
    trt = backend(fake, tmp_path)
    x = torch.zeros(1, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="dpt_ros.trt_backend"):
        assert trt.module_for(x) is None
        assert trt.module_for(x) is None
    assert fake.builds == 1  # not retried every frame
    assert "unsupported operator" in trt.reason
    assert len([r for r in caplog.records if "build" in r.getMessage()]) == 1
    assert list(tmp_path.iterdir()) == []


def test_engine_is_built_once_saved_and_loaded_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = TinyDepth(seed=5)
    fake = FakeTrt(result=built)
    model = TinyDepth()
    x = torch.zeros(1, 3, 8, 16)
    assert backend(fake, tmp_path, model).module_for(x) is built
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [backend(fake, tmp_path, model).key(x).filename()]
    assert files[0].name.startswith("dpt_hybrid_1x8x16_fp16_")

    loaded = TinyDepth(seed=9)
    loads: list[str] = []

    def fake_load(path: str):
        loads.append(path)
        return types.SimpleNamespace(module=lambda: loaded)

    monkeypatch.setattr(torch.export, "load", fake_load)
    again = backend(fake, tmp_path, model)
    assert again.module_for(x) is loaded
    assert fake.builds == 1 and loads == [str(files[0])]
    # Another input size is another engine.
    assert again.module_for(torch.zeros(1, 3, 16, 16)) is built and fake.builds == 2


def test_unreadable_cached_engine_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTrt()
    x = torch.zeros(1, 3, 8, 8)
    trt = backend(fake, tmp_path)
    (tmp_path / trt.key(x).filename()).write_bytes(b"truncated")

    def broken(path: str):
        raise RuntimeError("bad archive")

    monkeypatch.setattr(torch.export, "load", broken)
    assert trt.module_for(x) is not None and fake.builds == 1


def test_cache_key_covers_every_field() -> None:
    base = EngineKey("dpt_hybrid", "abc", (1, 3, 384, 512), "fp16", "H200", "10.9")
    variants = [
        EngineKey("dpt_large", "abc", (1, 3, 384, 512), "fp16", "H200", "10.9"),
        EngineKey("dpt_hybrid", "abd", (1, 3, 384, 512), "fp16", "H200", "10.9"),
        EngineKey("dpt_hybrid", "abc", (1, 3, 384, 384), "fp16", "H200", "10.9"),
        EngineKey("dpt_hybrid", "abc", (1, 3, 384, 512), "fp32", "H200", "10.9"),
        EngineKey("dpt_hybrid", "abc", (1, 3, 384, 512), "fp16", "H100", "10.9"),
        EngineKey("dpt_hybrid", "abc", (1, 3, 384, 512), "fp16", "H200", "10.10"),
    ]
    names = {key.filename() for key in [base, *variants]}
    assert len(names) == 7
    assert base.filename() == EngineKey(*vars(base).values()).filename()
    odd = EngineKey("pkg.mod:make/../x", "abc", (2, 3, 64, 96), "fp16", "H200", "10.9")
    assert "/" not in odd.filename() and odd.filename().startswith("pkg-mod-make----x_2x64x96_")


def test_weights_hash_follows_the_weights() -> None:
    a, b = TinyDepth(seed=0), TinyDepth(seed=0)
    assert weights_hash(a) == weights_hash(b)
    with torch.no_grad():
        b.conv.bias.add_(1e-3)
    assert weights_hash(a) != weights_hash(b)


def test_tensorrt_backend_needs_cuda() -> None:
    with pytest.raises(ValueError, match="'tensorrt' needs CUDA"):
        EngineConfig(model=None, backend="tensorrt")
    with pytest.raises(ConfigError, match="'backend'.*needs CUDA"):
        ModelSettings(backend="tensorrt")
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        EngineConfig(model=None, backend="onnx")
    settings = ModelSettings(device="cuda", backend="tensorrt", precision="fp16")
    assert settings.engine_config().backend == "tensorrt"


def test_non_finite_tensorrt_output_falls_back_to_eager_fp32(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine's forward with a (fake) TensorRT module that overflows: rerun in eager fp32,
    TensorRT and the lower precision dropped for good, one warning."""

    class Overflows(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], *x.shape[2:]), float("inf"))

    rgb = frame()
    expected = Engine(EngineConfig(model=None, net_size=64), depth_model=TinyDepth()).infer(rgb)
    engine = Engine(
        EngineConfig(model=None, net_size=64, precision="bf16"), depth_model=TinyDepth()
    )
    runner = engine._runners["depth"]
    runner.trt = backend(FakeTrt(result=Overflows()), tmp_path, runner.eager)
    with caplog.at_level(logging.WARNING, logger="dpt_ros.engine"):
        first, second = engine.infer(rgb), engine.infer(rgb)
    assert runner.trt is None and engine.precisions == {"depth": "fp32"}
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1 and "TensorRT" in warnings[0]
    for pred in (first, second):
        np.testing.assert_allclose(pred.depth, expected.depth, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ on a GPU


@pytest.mark.cuda
def test_cuda_graphs_are_captured_once_a_size_repeats_and_bounded() -> None:
    config = EngineConfig(model=None, device="cuda", net_size=64, max_graphs=2, graph_after=2)
    engine = Engine(config, depth_model=TinyDepth())
    eager = Engine(
        EngineConfig(model=None, device="cuda", net_size=64, cuda_graphs=False), TinyDepth()
    )
    rgb = frame(48, 64)
    counts = []
    for _ in range(4):
        np.testing.assert_allclose(
            engine.infer(rgb).depth, eager.infer(rgb).depth, rtol=1e-5, atol=1e-6
        )
        counts.append(len(engine._graphs))
    assert counts == [0, 0, 1, 1]
    (first,) = engine._graphs.keys()
    for size in ((64, 96), (96, 64)):  # two more sizes, three times each: LRU keeps two
        for _ in range(3):
            engine.infer(frame(*size))
    assert len(engine._graphs) == 2 and first not in engine._graphs
    assert len(eager._graphs) == 0


@pytest.mark.cuda
def test_tensorrt_missing_on_a_gpu_runs_pytorch(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch_tensorrt") is not None:
        pytest.skip("torch_tensorrt is installed")
    config = EngineConfig(
        model=None, device="cuda", net_size=64, backend="tensorrt", trt_cache_dir=str(tmp_path)
    )
    engine = Engine(config, depth_model=TinyDepth())
    assert engine._runners["depth"].trt is None
    assert np.isfinite(engine.infer(frame()).depth).all()
