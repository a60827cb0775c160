"""The CUDA path's bookkeeping, on the CPU: ring of slots, pools per input size, handles,
timings from events, the fp32 fallback.

No GPU needed: torch.cuda's streams, events, device contexts and pinned memory are replaced by
fakes (a stream runs its work at once, in submission order; an event records a tick of a fake
clock), and an engine built for the CPU is switched onto its CUDA code path, so
``Engine._start_cuda`` / ``_resolve_cuda`` run their real code on CPU tensors. What only a GPU
can show (real overlap of streams, asynchronous copies) stays in ``test_engine_cuda.py``
(``tools/run_gpu_checks.sh``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging

import numpy as np
import pytest
import torch
from test_engine import InfInBf16, TinyDepth, TinySegmentation, frame

from dpt_ros import engine as engine_module
from dpt_ros.engine import STAGES, Engine, EngineConfig


class FakeEvent:
    """A CUDA event on a fake clock: each ``record`` is one tick (1 ms) later than the last."""

    clock = itertools.count(1)

    def __init__(self, *args, **kwargs) -> None:
        self.tick: int | None = None

    def record(self, stream=None) -> None:
        self.tick = next(FakeEvent.clock)

    def query(self) -> bool:
        return self.tick is not None

    def synchronize(self) -> None:
        assert self.tick is not None, "waiting for an event that was never recorded"

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.tick is not None and end.tick is not None, "event not recorded"
        return float(end.tick - self.tick)


class FakeStream:
    """Runs work at once; remembers which events it was told to wait for."""

    def __init__(self, *args, **kwargs) -> None:
        self.waited: list[FakeEvent] = []

    def wait_event(self, event: FakeEvent) -> None:
        assert event.tick is not None, "a stream waits for an event nobody recorded yet"
        self.waited.append(event)

    def synchronize(self) -> None:
        pass


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    """Replace what the CUDA path needs from a device; returns a factory of engines on it."""
    real_empty, real_ones = torch.empty, torch.ones

    def unpinned(real):
        def make(*args, pin_memory: bool = False, **kwargs):
            return real(*args, **kwargs)

        return make

    monkeypatch.setattr(torch, "empty", unpinned(real_empty))
    monkeypatch.setattr(torch, "ones", unpinned(real_ones))
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream=None: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "device", lambda device=None: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    def make(depth=None, segmentation=None, **config) -> Engine:
        config.setdefault("model", None)
        config.setdefault("net_size", 64)
        engine = Engine(EngineConfig(**config), depth_model=depth, segmentation_model=segmentation)
        # The CPU-built engine, switched onto its CUDA code path with fake streams.
        engine._cuda = True
        engine._upload_stream, engine._download_stream = FakeStream(), FakeStream()
        engine._origin = FakeEvent()
        engine._origin.record()
        for runner in engine._runners.values():
            runner.stream = FakeStream()
        return engine

    return make


def cpu_engine(depth=None, segmentation=None, **config) -> Engine:
    config.setdefault("model", None)
    config.setdefault("net_size", 64)
    return Engine(EngineConfig(**config), depth_model=depth, segmentation_model=segmentation)


def close(actual: np.ndarray, expected: np.ndarray) -> None:
    # The CUDA path preprocesses with torch's bicubic and resizes back with it, the CPU path
    # with OpenCV's: the same kernels, float32 rounding apart.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("size", [(60, 80), (47, 33)])
def test_cuda_path_equals_the_cpu_path(fake_cuda, size: tuple[int, int]) -> None:
    rgb = frame(*size, seed=2)
    gpu = fake_cuda(TinyDepth(), TinySegmentation()).infer(rgb)
    cpu = cpu_engine(TinyDepth(), TinySegmentation()).infer(rgb)
    assert gpu.depth.shape == size and gpu.labels.shape == size
    close(gpu.depth, cpu.depth)
    assert (gpu.labels == cpu.labels).mean() > 0.99
    assert set(STAGES) <= set(gpu.timings)


def test_the_network_input_size_is_the_cpu_paths(fake_cuda) -> None:
    class Recorder(TinyDepth):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.shapes.append(tuple(x.shape))
            return super().forward(x)

    shapes = {}
    for name, make in (("cuda", fake_cuda), ("cpu", cpu_engine)):
        model = Recorder()
        model.shapes = []
        make(model).infer(frame(75, 50))
        shapes[name] = model.shapes
    assert shapes["cuda"] == shapes["cpu"] == [(1, 3, 96, 64)]


def test_ring_slots_are_reused_in_turn_and_a_full_ring_collects_the_oldest(fake_cuda) -> None:
    ring = 3
    engine = fake_cuda(TinyDepth(), max_in_flight=ring - 1)
    frames = [frame(40, 56, seed) for seed in range(2 * ring + 1)]
    handles = []
    for i, rgb in enumerate(frames):
        handles.append(engine.submit(rgb))
        if i >= ring:
            # Frame i took the slot of frame i - ring, which was collected first, and only it.
            assert handles[i - ring]._pending.predictions is not None
            assert handles[i - ring + 1]._pending.predictions is None
        if i == 0:
            buffers = engine.allocated_buffers()
    assert engine.allocated_buffers() == buffers  # allocated once, for the first frame
    expected = [cpu_engine(TinyDepth()).infer(rgb).depth for rgb in frames]
    for i in (4, 0, 6, 2, 5, 1, 3):  # any order
        close(handles[i].result().depth, expected[i])
    slots = [handle.debug["slot"] for handle in handles]
    assert slots == [i % ring for i in range(len(frames))]
    pointers = [handle.debug["buffers"] for handle in handles]
    for i in range(ring, len(frames)):
        assert pointers[i] == pointers[i - ring]
    assert len({p["host_in"] for p in pointers}) == ring


def test_results_are_copies_not_views_of_the_slots(fake_cuda) -> None:
    engine = fake_cuda(TinyDepth(), TinySegmentation(), max_in_flight=1)
    first = engine.infer(frame(40, 56, 1))
    kept_depth, kept_labels = first.depth.copy(), first.labels.copy()
    for seed in range(2, 6):  # every slot of the ring rewritten
        engine.infer(frame(40, 56, seed))
    np.testing.assert_array_equal(first.depth, kept_depth)
    np.testing.assert_array_equal(first.labels, kept_labels)


def test_input_sizes_get_pools_and_the_least_recently_used_goes(fake_cuda) -> None:
    engine = fake_cuda(TinyDepth())
    kept = engine_module._MAX_POOLS
    sizes = [(30 + 4 * i, 40 + 3 * i) for i in range(kept + 1)]
    pending = engine.submit(frame(*sizes[0], seed=9))  # left uncollected in the first pool
    for size in sizes[1:]:
        engine.infer(frame(*size))
    keys = list(engine._pools)
    assert len(keys) == kept and (1, *sizes[0]) not in keys  # first pool evicted ...
    assert pending._pending.predictions is not None  # ... after its frame was collected
    close(pending.result().depth, cpu_engine(TinyDepth()).infer(frame(*sizes[0], seed=9)).depth)
    engine.infer(frame(*sizes[1]))  # a hit moves its pool to the back
    assert list(engine._pools)[-1] == (1, *sizes[1])
    engine.close()
    assert engine.allocated_buffers() == 0


def test_batches_get_their_own_pool_and_keep_order(fake_cuda) -> None:
    engine = fake_cuda(TinyDepth(), batch_size=2)
    frames = [frame(40, 56, seed) for seed in range(3)]
    batch = engine.infer_batch(frames)
    assert {key[0] for key in engine._pools} == {1, 2}  # a batch of 2 and the last single
    for rgb, pred in zip(frames, batch, strict=True):
        close(pred.depth, cpu_engine(TinyDepth()).infer(rgb).depth)


def test_stage_timings_come_from_the_frames_own_events(fake_cuda) -> None:
    engine = fake_cuda(TinyDepth(), TinySegmentation())
    handle = engine.submit(frame(40, 56))
    pred = handle.result()
    ev = handle.debug["events"]
    # Each stage starts after the one it waits for (fake streams run in submission order).
    order = ["upload_start", "upload_end", "preprocess_start", "preprocess_end"]
    assert [ev[name] for name in order] == sorted(ev[name] for name in order)
    for kind in ("depth", "segmentation"):
        assert ev["preprocess_end"] <= ev[f"forward_start:{kind}"] < ev[f"forward_end:{kind}"]
        assert ev[f"forward_end:{kind}"] <= ev["download_start"]
    assert ev["download_start"] < ev["download_end"]
    t = pred.timings
    assert t["upload"] == ev["upload_end"] - ev["upload_start"]
    assert t["preprocess"] == ev["preprocess_end"] - ev["preprocess_start"]
    assert t["download"] == ev["download_end"] - ev["download_start"]
    forward = {
        k: ev[f"forward_end:{k}"] - ev[f"forward_start:{k}"] for k in ("depth", "segmentation")
    }
    assert t["forward"] == sum(forward.values())
    assert (t["forward_depth"], t["forward_segmentation"]) == (
        forward["depth"],
        forward["segmentation"],
    )
    assert t["total"] == pytest.approx(t["host_copy"] + ev["download_end"] - ev["upload_start"])
    # The segmentation stream waited for the preprocessing, not for the depth forward; the
    # download for both models.
    depth_runner, seg_runner = engine._runners["depth"], engine._runners["segmentation"]
    slot_events = engine._pools[(1, 40, 56)].slots[handle.debug["slot"]].events
    assert seg_runner.stream.waited[-1] is slot_events["preprocess_end"]
    assert depth_runner.stream.waited[-1] is slot_events["upload_end"]
    assert set(engine._download_stream.waited[-2:]) == {
        slot_events["postprocess_end:depth"], slot_events["postprocess_end:segmentation"]
    }  # fmt: skip


def test_batch_timings_are_per_frame(fake_cuda) -> None:
    engine = fake_cuda(TinyDepth(), batch_size=4)
    preds = engine.infer_batch([frame(40, 56, s) for s in range(4)])
    single = fake_cuda(TinyDepth()).infer(frame(40, 56))
    # The same events, a batch of 4: each frame gets a quarter of the batch's time.
    assert preds[0].timings["upload"] == pytest.approx(single.timings["upload"] / 4)
    assert all(p.timings == preds[0].timings for p in preds)


def test_non_finite_half_output_reruns_that_frame_in_fp32_and_stays(
    fake_cuda, caplog: pytest.LogCaptureFixture
) -> None:
    rgb = frame(40, 56)
    expected = cpu_engine(TinyDepth()).infer(rgb).depth
    engine = fake_cuda(InfInBf16(), precision="bf16")
    assert engine.precisions == {"depth": "bf16"}
    with caplog.at_level(logging.WARNING, logger="dpt_ros.engine"):
        handles = [engine.submit(rgb) for _ in range(2)]  # both in flight in bf16
        preds = [handle.result() for handle in handles]
        preds.append(engine.infer(rgb))
    assert engine.precisions == {"depth": "fp32"}
    assert handles[0].debug["rerun_fp32"] == ("depth",)
    warnings = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1
    for pred in preds:
        assert np.isfinite(pred.depth).all()
        close(pred.depth, expected)


def test_handle_done_polls_the_download_event(fake_cuda) -> None:
    engine = fake_cuda(TinyDepth())
    handle = engine.submit(frame(40, 56))
    slot = handle._pending.slot
    assert handle.done()  # the fake download has already been recorded
    slot.events["download_end"].tick = None  # as if the copy were still running
    assert not handle.done()
    slot.events["download_end"].record()
    assert handle.done() and handle.result().depth.shape == (40, 56)
    assert handle.done()  # collected: no slot, no event any more


@pytest.mark.parametrize(
    ("precision", "compiled", "checked"),
    [("fp32", False, False), ("bf16", False, True), ("fp16", False, True), ("fp32", True, True)],
)
def test_which_outputs_get_the_finite_check(precision: str, compiled: bool, checked: bool) -> None:
    runner = engine_module._Runner(
        kind="depth", module=TinyDepth(), semantics="relative_inverse_depth",
        precision=precision, stream=None, eager=TinyDepth(), compiled=compiled,
    )  # fmt: skip
    assert runner.checked is checked
