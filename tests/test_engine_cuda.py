"""Engine on CUDA: the streams path against the CPU path, overlap, buffer reuse, fallback.

Self-contained (random stand-in models); run with
``python -m pytest tests/test_engine_cuda.py -m cuda`` on a machine with a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from dpt_ros.engine import STAGES, Engine, EngineConfig

pytestmark = pytest.mark.cuda


class SmallDepth(nn.Module):
    """A few convolutions, (N,3,H,W) -> (N,H,W), non-negative; fixed weights."""

    output_semantics = "relative_inverse_depth"

    def __init__(self, width: int = 16, layers: int = 2, seed: int = 0) -> None:
        super().__init__()
        chans = [3] + [width] * layers
        self.body = nn.Sequential(
            *(
                m
                for a, b in zip(chans[:-1], chans[1:], strict=True)
                for m in (nn.Conv2d(a, b, 3, padding=1), nn.ReLU())
            )
        )
        self.head = nn.Conv2d(width, 1, 3, padding=1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.head(self.body(x)))[:, 0]


class SmallSegmentation(nn.Module):
    output_semantics = "labels"

    def __init__(self, classes: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, classes, 3, padding=1)
        generator = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


class OverflowsInFp16(SmallDepth):
    """Finite in fp32; in fp16 every activation overflows (> 65504), whatever its sign."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(self.body(x))  # fp16 under autocast
        return ((feat.abs() + 1.0) * 1e5)[:, 0] / 1e5


def spin_cycles(milliseconds: float) -> int:
    """GPU clock cycles that ``torch.cuda._sleep`` spins for about ``milliseconds`` here."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 10_000_000
    torch.cuda._sleep(cycles)  # first call: lazy start-up out of the measurement
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return int(cycles * milliseconds / max(start.elapsed_time(end), 1e-3))


class SpinningDepth(SmallDepth):
    """SmallDepth whose forward first keeps the GPU busy for a set time: a stage that lasts
    ~100 ms by construction, not by being heavy on today's GPU, so orderings that depend on
    it (the next upload starts before this forward ends) hold on any device."""

    def __init__(self, milliseconds: float = 100.0) -> None:
        super().__init__()
        self.cycles = spin_cycles(milliseconds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.cuda._sleep(self.cycles)
        return super().forward(x)


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 256], -1)
    return np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def close(actual: np.ndarray, expected: np.ndarray, rel: float) -> None:
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * np.abs(expected).max())


def cuda_engine(**config) -> Engine:
    """fp32 comparisons against the CPU need TF32 off (the engine's default turns it on)."""
    config.setdefault("model", None)
    config.setdefault("net_size", 128)
    config.setdefault("device", "cuda")
    config.setdefault("tf32", False)
    depth = config.pop("depth_model", SmallDepth())
    seg = config.pop("segmentation_model", None)
    return Engine(EngineConfig(**config), depth_model=depth, segmentation_model=seg)


def cpu_engine(**config) -> Engine:
    config.update(device="cpu")
    config.pop("tf32", None)
    return cuda_engine(**config)


@pytest.mark.parametrize("size", [(480, 640), (479, 641), (100, 37)])
def test_fp32_equals_cpu_path(size: tuple[int, int]) -> None:
    rgb = frame(*size, seed=1)
    gpu = cuda_engine(segmentation_model=SmallSegmentation()).infer(rgb)
    cpu = cpu_engine(segmentation_model=SmallSegmentation()).infer(rgb)
    assert gpu.depth.shape == size and gpu.depth.dtype == np.float32
    assert gpu.labels.shape == size and gpu.labels.dtype == np.uint8
    close(gpu.depth, cpu.depth, 2e-4)
    assert (gpu.labels == cpu.labels).mean() > 0.999
    assert set(STAGES) <= set(gpu.timings)
    assert all(ms >= 0 for ms in gpu.timings.values())


def test_output_size_on_cuda() -> None:
    rgb = frame(240, 320)
    gpu = cuda_engine(output_size=(160, 100)).infer(rgb)
    cpu = cpu_engine(output_size=(160, 100)).infer(rgb)
    assert gpu.depth.shape == (100, 160)
    close(gpu.depth, cpu.depth, 2e-4)


@pytest.mark.parametrize(("precision", "rel"), [("fp16", 2e-2), ("bf16", 6e-2)])
def test_half_precisions_are_close_to_cpu(precision: str, rel: float) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bfloat16")
    rgb = frame(240, 320, seed=2)
    engine = cuda_engine(precision=precision)
    pred = engine.infer(rgb)
    assert engine.precisions == {"depth": precision}
    close(pred.depth, cpu_engine().infer(rgb).depth, rel)


def test_batch_equals_single_on_cuda() -> None:
    engine = cuda_engine(batch_size=3, segmentation_model=SmallSegmentation())
    frames = [frame(120, 160, s) for s in range(5)] + [frame(90, 100, 9)]
    batch = engine.infer_batch(frames)
    for rgb, pred in zip(frames, batch, strict=True):
        single = engine.infer(rgb)
        close(pred.depth, single.depth, 1e-5)
        assert (pred.labels == single.labels).mean() > 0.999


def test_results_do_not_alias_reused_slots() -> None:
    engine = cuda_engine(max_in_flight=2)
    frames = [frame(120, 160, s) for s in range(8)]
    handles = [engine.submit(rgb) for rgb in frames[:2]]
    first = handles[0].result()
    kept = first.depth.copy()
    for rgb in frames[2:]:
        engine.submit(rgb).result()
    np.testing.assert_array_equal(first.depth, kept)
    expected = [cpu_engine().infer(rgb).depth for rgb in frames[:2]]
    close(first.depth, expected[0], 2e-4)
    close(handles[1].result().depth, expected[1], 2e-4)


def test_submit_many_then_collect_in_any_order() -> None:
    engine = cuda_engine(max_in_flight=2)
    frames = [frame(96, 128, s) for s in range(7)]
    handles = [engine.submit(rgb) for rgb in frames]  # more than the ring: oldest are collected
    for i in (6, 0, 3, 1, 5, 2, 4):
        close(handles[i].result().depth, cpu_engine().infer(frames[i]).depth, 2e-4)


def test_pinned_buffers_are_allocated_once_and_reused() -> None:
    ring = 3
    engine = cuda_engine(max_in_flight=ring - 1, segmentation_model=SmallSegmentation())
    frames = [frame(120, 160, s) for s in range(4)]
    engine.warmup(160, 120)
    buffers = engine.allocated_buffers()
    torch.cuda.synchronize()
    device_bytes = torch.cuda.memory_allocated()
    pointers = []
    for i in range(4 * ring):
        handle = engine.submit(frames[i % 4])
        handle.result()
        pointers.append(handle.debug["buffers"])
    torch.cuda.synchronize()
    assert engine.allocated_buffers() == buffers
    assert torch.cuda.memory_allocated() == device_bytes  # no per-frame device allocation
    host_in = [p["host_in"] for p in pointers]
    assert len(set(host_in)) == ring
    for i in range(ring, len(pointers)):
        assert pointers[i] == pointers[i - ring]


def test_no_device_memory_growth_over_many_frames() -> None:
    engine = cuda_engine(segmentation_model=SmallSegmentation())
    frames = [frame(60, 80, s) for s in range(3)]
    for i in range(20):
        engine.infer(frames[i % 3])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    handles = []
    for i in range(500):
        handles.append(engine.submit(frames[i % 3]))
        if len(handles) > 2:
            handles.pop(0).result()
    for handle in handles:
        handle.result()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before


def test_upload_of_next_frame_overlaps_compute_of_previous() -> None:
    # One forward takes ~100 ms by construction, far longer than submitting the next frame.
    engine = cuda_engine(depth_model=SpinningDepth(), net_size=768, max_in_flight=2)
    frames = [frame(720, 1280, s) for s in range(5)]
    engine.warmup(1280, 720)
    handles = [engine.submit(rgb) for rgb in frames[:3]]
    for handle in handles:
        handle.result()
    events = [h.debug["events"] for h in handles]
    for prev, nxt in zip(events[:-1], events[1:], strict=True):
        assert nxt["upload_start"] < prev["forward_end:depth"], (prev, nxt)
        assert nxt["upload_end"] <= nxt["preprocess_start"]
        assert prev["forward_end:depth"] <= nxt["forward_start:depth"]  # one compute stream
        assert prev["download_end"] <= nxt["download_start"]


def test_depth_and_segmentation_run_on_separate_streams() -> None:
    engine = cuda_engine(
        depth_model=SpinningDepth(), segmentation_model=SmallSegmentation(), net_size=768
    )
    engine.warmup(1280, 720)
    handle = engine.submit(frame(720, 1280))
    handle.result()
    ev = handle.debug["events"]
    # The segmentation stream starts right after preprocessing, not after the depth forward.
    assert ev["forward_start:segmentation"] < ev["forward_end:depth"]
    assert ev["forward_start:depth"] < ev["forward_end:segmentation"]


def test_fp16_non_finite_output_reruns_in_fp32_and_stays(caplog: pytest.LogCaptureFixture) -> None:
    rgb = frame(120, 160)
    model = OverflowsInFp16()
    with torch.inference_mode():
        probe = model.cuda()(torch.randn(1, 3, 64, 64, device="cuda"))
        with torch.autocast("cuda", dtype=torch.float16):
            overflow = model(torch.randn(1, 3, 64, 64, device="cuda"))
    assert torch.isfinite(probe).all() and not torch.isfinite(overflow).all()
    expected = cuda_engine(depth_model=OverflowsInFp16()).infer(rgb).depth
    engine = cuda_engine(depth_model=model, precision="fp16")
    with caplog.at_level(logging.WARNING, logger="dpt_ros.engine"):
        handles = [engine.submit(rgb) for _ in range(3)]
        preds = [h.result() for h in handles]
        preds.append(engine.infer(rgb))
    assert engine.precisions == {"depth": "fp32"}
    assert "depth" in handles[0].debug["rerun_fp32"]
    warnings = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1
    for pred in preds:
        assert np.isfinite(pred.depth).all()
        close(pred.depth, expected, 1e-5)


def test_cuda_graphs_equal_eager() -> None:
    frames = [frame(120, 160, s) for s in range(4)]
    eager = cuda_engine(segmentation_model=SmallSegmentation())
    graphs = cuda_engine(segmentation_model=SmallSegmentation(), cuda_graphs=True)
    for rgb in frames:
        a, b = eager.infer(rgb), graphs.infer(rgb)
        close(b.depth, a.depth, 1e-5)
        assert (a.labels == b.labels).mean() > 0.999


def test_cuda_graph_survives_position_embedding_cache_eviction() -> None:
    """A captured graph must not read a cached position embedding that later gets evicted."""
    from dpt_ros.model import build_model

    def tiny_vit() -> nn.Module:
        torch.manual_seed(0)
        return build_model(
            "dpt_base",
            depth=4,
            embed_dim=64,
            num_heads=2,
            hooks=(0, 1, 2, 3),
            stage_channels=(16, 32, 64, 64),
            features=32,
        ).eval()

    rgb = frame(96, 128)
    eager = cuda_engine(depth_model=tiny_vit(), net_size=96)
    graphs = cuda_engine(depth_model=tiny_vit(), net_size=96, cuda_graphs=True)
    expected = eager.infer(rgb).depth
    close(graphs.infer(rgb).depth, expected, 1e-5)
    backbone = graphs.depth_model.pretrained.model
    for extra in range(backbone.max_cached_grids + 2):  # push every earlier grid out
        backbone.pos_embed_for((3 + extra, 5))
    torch.cuda.empty_cache()
    scratch = torch.full((1 << 22,), float("nan"), device="cuda")  # reuse freed memory
    close(graphs.infer(rgb).depth, expected, 1e-5)
    del scratch


def test_cuda_graphs_with_fp16_fallback() -> None:
    rgb = frame(120, 160)
    expected = cuda_engine(depth_model=OverflowsInFp16()).infer(rgb).depth
    engine = cuda_engine(depth_model=OverflowsInFp16(), precision="fp16", cuda_graphs=True)
    for _ in range(3):
        close(engine.infer(rgb).depth, expected, 1e-5)
    assert engine.precisions == {"depth": "fp32"}


def test_input_sizes_get_their_own_pools() -> None:
    engine = cuda_engine()
    # Five sizes: more than the pools kept, so the least recently used one is drained and freed.
    sizes = [(120, 160), (90, 100), (61, 77), (64, 64), (33, 200)]
    for height, width in sizes * 2:
        rgb = frame(height, width)
        close(engine.infer(rgb).depth, cpu_engine().infer(rgb).depth, 2e-4)
    engine.close()
    assert engine.allocated_buffers() == 0


def test_unknown_cuda_index_is_a_clear_error() -> None:
    index = torch.cuda.device_count()
    with pytest.raises(RuntimeError, match="CUDA"):
        Engine(EngineConfig(model=None, device=f"cuda:{index}"), depth_model=SmallDepth())
