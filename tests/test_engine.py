"""Engine on the CPU: API, sizes, batches, equality with the authors' pipeline, errors."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dpt_ros import transforms
from dpt_ros.engine import STAGES, Engine, EngineConfig, Prediction


class TinyDepth(nn.Module):
    """Two convolutions, (N,3,H,W) -> (N,H,W), non-negative; fixed weights."""

    output_semantics = "relative_inverse_depth"

    def __init__(self, seed: int = 0, keep_channel: bool = False) -> None:
        super().__init__()
        self.keep_channel = keep_channel
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 1, 3, padding=1)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.softplus(self.conv2(torch.relu(self.conv1(x))))
        return out if self.keep_channel else out[:, 0]


class TinySegmentation(nn.Module):
    """(N,3,H,W) -> (N,5,H,W) logits."""

    output_semantics = "labels"

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 3, padding=1)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class InfInBf16(TinyDepth):
    """Finite in fp32, infinite whenever autocast hands it bfloat16 activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * float("inf") if out.dtype == torch.bfloat16 else out


class WrongShape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2]


def make_tiny() -> nn.Module:
    """Plug-in entry point for ``EngineConfig(model="test_engine:make_tiny")``."""
    return TinyDepth()


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([xx * 255 / max(width, 1), yy * 255 / max(height, 1), (xx + yy) % 256], -1)
    noisy = smooth + rng.normal(0, 20, smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------- independent oracle
# The authors' preprocessing (MiDaS Resize(keep_aspect_ratio, ensure_multiple_of=32,
# resize_method="lower_bound", cv2.INTER_CUBIC) + NormalizeImage(0.5, 0.5)), written out here
# from its definition instead of calling dpt_ros.transforms, so that a slip there (a wrong
# normalisation, a wrong size rule, another kernel) cannot hide in both sides of a comparison.
def reference_net_size(height: int, width: int, net_size: int) -> tuple[int, int]:
    """MiDaS lower_bound: scale so both sides reach net_size, round to a multiple of 32 (half
    to even, as numpy), and round up instead where that fell below net_size."""
    scale = max(net_size / height, net_size / width)
    sides = []
    for side in (height, width):
        x = scale * side
        y = round(x / 32) * 32
        if y < net_size:
            y = math.ceil(x / 32) * 32
        sides.append(y)
    return sides[0], sides[1]


def _keys_cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution kernel with OpenCV's a = -0.75."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _cubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of a 4-tap bicubic resize: pixel centres at (i + 0.5) * scale - 0.5,
    edge pixels repeated (cv2.INTER_CUBIC's convention; no antialiasing when shrinking)."""
    matrix = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(x)
        for j in range(base - 1, base + 3):
            matrix[i, min(max(j, 0), n_in - 1)] += _keys_cubic(np.float64(x - j))
    return matrix


def reference_preprocess(rgb: np.ndarray, net_size: int) -> np.ndarray:
    """uint8 HxWx3 -> float32 (3, h, w): bicubic resize of the 0-255 values (linear, so it
    commutes with the scaling), then v / 127.5 - 1 == (v / 255 - 0.5) / 0.5."""
    h, w = reference_net_size(*rgb.shape[:2], net_size)
    rows, cols = _cubic_matrix(rgb.shape[0], h), _cubic_matrix(rgb.shape[1], w)
    planes = [rows @ rgb[:, :, c].astype(np.float64) @ cols.T for c in range(3)]
    return (np.stack(planes) / 127.5 - 1.0).astype(np.float32)


def authors_depth(model: nn.Module, rgb: np.ndarray, net_size: int, size=None) -> np.ndarray:
    """The authors' pipeline: preprocessing, forward, bicubic back to the image size."""
    x = torch.from_numpy(reference_preprocess(rgb, net_size))[None]
    with torch.inference_mode():
        out = model(x)
        if out.dim() == 4:
            out = out[:, 0]
        out = transforms.resize_prediction(out, size=size or rgb.shape[:2])
    return out[0].numpy()


def authors_labels(model: nn.Module, rgb: np.ndarray, net_size: int) -> np.ndarray:
    x = torch.from_numpy(reference_preprocess(rgb, net_size))[None]
    with torch.inference_mode():
        logits = transforms.resize_prediction(model(x), size=rgb.shape[:2])
    return (logits.argmax(1) + 1)[0].numpy().astype(np.uint8)


@pytest.fixture
def depth_model() -> TinyDepth:
    return TinyDepth()


def test_infer_returns_depth_at_input_size_for_odd_sizes(depth_model: TinyDepth) -> None:
    engine = Engine(EngineConfig(model=None, net_size=64), depth_model=depth_model)
    rgb = frame(479, 641)
    pred = engine.infer(rgb)
    assert isinstance(pred, Prediction)
    assert pred.depth.shape == (479, 641) and pred.depth.dtype == np.float32
    assert pred.labels is None
    assert pred.depth_semantics == "relative_inverse_depth"
    assert set(STAGES) <= set(pred.timings)
    assert all(ms >= 0 for ms in pred.timings.values())
    assert np.isfinite(pred.depth).all()  # bicubic may overshoot below 0, as the authors'


def test_output_size_is_width_height(depth_model: TinyDepth) -> None:
    config = EngineConfig(model=None, net_size=64, output_size=(200, 90))
    pred = Engine(config, depth_model=depth_model).infer(frame(120, 160))
    assert pred.depth.shape == (90, 200)


@pytest.mark.parametrize("size", [(120, 160), (479, 641), (31, 17)])
def test_fp32_equals_authors_pipeline(depth_model: TinyDepth, size: tuple[int, int]) -> None:
    rgb = frame(*size, seed=3)
    pred = Engine(EngineConfig(model=None, net_size=96), depth_model=depth_model).infer(rgb)
    expected = authors_depth(depth_model, rgb, net_size=96)
    # Engine resizes back with OpenCV's bicubic; torch's float32 bicubic rounds at ~1e-5.
    np.testing.assert_allclose(pred.depth, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


class FirstChannel(nn.Module):
    """The network input's first (red) channel, as depth: shows exactly what the net saw."""

    output_semantics = "relative_inverse_depth"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].clone()


@pytest.mark.parametrize(("grey", "expected"), [(0, -1.0), (51, -0.6), (255, 1.0)])
def test_network_input_of_a_flat_image_is_hand_computed(grey: int, expected: float) -> None:
    # (v / 255 - 0.5) / 0.5 for v = 0, 51, 255: -1, -0.6, 1 (a bicubic of a constant is the
    # constant). A wrong normalisation (v / 256, another mean) changes every pixel.
    rgb = np.full((37, 53, 3), grey, np.uint8)
    pred = Engine(EngineConfig(model=None, net_size=64), depth_model=FirstChannel()).infer(rgb)
    np.testing.assert_allclose(pred.depth, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("height", "width", "net_size", "net_hw"),
    [
        # scale = max(96/120, 96/160) = 0.8: 96 x 128
        (120, 160, 96, (96, 128)),
        # scale = 96/479: width 128.46 -> 128
        (479, 641, 96, (96, 128)),
        # scale = 96/17 = 5.647: height 175.06 -> 160 (5.47 rounds to 5), width 96
        (31, 17, 96, (160, 96)),
        # scale = 384/375 = 1.024: width 1271.8 -> 1280 (39.74 rounds to 40), height 384
        (375, 1242, 384, (384, 1280)),
        # scale = 64/50 = 1.28: height 64, width 96 (3 x 32 exactly)
        (50, 75, 64, (64, 96)),
    ],
)
def test_network_input_sizes_are_the_authors(
    height: int, width: int, net_size: int, net_hw: tuple[int, int]
) -> None:
    assert reference_net_size(height, width, net_size) == net_hw
    assert transforms.network_input_size(height, width, net_size) == net_hw
    rgb = frame(height, width, seed=8)
    got = transforms.preprocess_image(rgb, net_size=net_size)
    expected = reference_preprocess(rgb, net_size)
    assert got.shape == (3, *net_hw)
    # OpenCV computes its cubic coefficients in single precision: ~1e-6 of the [-1, 1] range.
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    on_device = transforms.preprocess_tensor(torch.from_numpy(rgb)[None], size=net_hw)
    # torch's float32 bicubic (the CUDA path's, run here on the CPU) computes source positions
    # in float32: ~1e-4 px at x ~ 1200. A v / 256 slip would be off by up to 8e-3.
    np.testing.assert_allclose(on_device[0].numpy(), expected, rtol=0, atol=3e-4)


def test_fp32_with_requested_output_size_equals_authors(depth_model: TinyDepth) -> None:
    rgb = frame(100, 150, seed=4)
    config = EngineConfig(model=None, net_size=64, output_size=(75, 50))
    pred = Engine(config, depth_model=depth_model).infer(rgb)
    expected = authors_depth(depth_model, rgb, net_size=64, size=(50, 75))
    np.testing.assert_allclose(pred.depth, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_n1hw_output_is_accepted() -> None:
    model = TinyDepth(keep_channel=True)
    rgb = frame(60, 80)
    pred = Engine(EngineConfig(model=None, net_size=64), depth_model=model).infer(rgb)
    expected = authors_depth(model, rgb, net_size=64)
    np.testing.assert_allclose(pred.depth, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_labels_equal_authors_argmax_plus_one() -> None:
    seg = TinySegmentation()
    rgb = frame(90, 130, seed=5)
    engine = Engine(EngineConfig(model=None, net_size=64), segmentation_model=seg)
    pred = engine.infer(rgb, want_depth=False)
    assert pred.depth is None and pred.depth_semantics == "none"
    assert pred.labels.shape == (90, 130) and pred.labels.dtype == np.uint8
    assert pred.labels.min() >= 1 and pred.labels.max() <= 5
    expected = authors_labels(seg, rgb, net_size=64)
    # Near-ties may flip under float rounding; everything else must agree.
    assert (pred.labels == expected).mean() > 0.999


def test_depth_and_labels_together(depth_model: TinyDepth) -> None:
    engine = Engine(
        EngineConfig(model=None, net_size=64, output_size=(64, 48)),
        depth_model=depth_model,
        segmentation_model=TinySegmentation(),
    )
    pred = engine.infer(frame(96, 128))
    assert pred.depth.shape == (48, 64) and pred.labels.shape == (48, 64)
    assert {"forward_depth", "forward_segmentation"} <= set(pred.timings)
    only_depth = engine.infer(frame(96, 128), want_labels=False)
    assert only_depth.labels is None
    np.testing.assert_array_equal(only_depth.depth, pred.depth)


def test_submit_handle_gives_the_same_result(depth_model: TinyDepth) -> None:
    engine = Engine(EngineConfig(model=None, net_size=64), depth_model=depth_model)
    rgb = frame(70, 90)
    handle = engine.submit(rgb)
    assert handle.done()
    np.testing.assert_array_equal(handle.result().depth, engine.infer(rgb).depth)
    assert handle.result() is handle.result()


def test_batch_equals_single_and_keeps_order(depth_model: TinyDepth) -> None:
    engine = Engine(
        EngineConfig(model=None, net_size=64, batch_size=2),
        depth_model=depth_model,
        segmentation_model=TinySegmentation(),
    )
    frames = [frame(60, 80, 0), frame(50, 70, 1), frame(60, 80, 2), frame(60, 80, 3)]
    frames.append(frame(50, 70, 4))
    batch = engine.infer_batch(frames)
    assert len(batch) == len(frames)
    for rgb, pred in zip(frames, batch, strict=True):
        single = engine.infer(rgb)
        assert pred.depth.shape == rgb.shape[:2]
        np.testing.assert_allclose(pred.depth, single.depth, rtol=1e-5, atol=1e-6)
        assert (pred.labels == single.labels).mean() > 0.999


def test_channels_last_gives_the_same_depth(depth_model: TinyDepth) -> None:
    rgb = frame(64, 96)
    plain_config = EngineConfig(model=None, net_size=64, channels_last=False)
    plain = Engine(plain_config, depth_model=TinyDepth()).infer(rgb)
    config = EngineConfig(model=None, net_size=64, channels_last=True)
    channels_last = Engine(config, depth_model=depth_model).infer(rgb)
    np.testing.assert_allclose(channels_last.depth, plain.depth, rtol=1e-5, atol=1e-6)


def test_model_from_config_plugin_name() -> None:
    engine = Engine(EngineConfig(model="test_engine:make_tiny", weights=None, net_size=64))
    rgb = frame(40, 60)
    expected = authors_depth(TinyDepth(), rgb, net_size=64)
    pred = engine.infer(rgb)
    np.testing.assert_allclose(pred.depth, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def tiny_dpt(name: str) -> nn.Module:
    """The real DPT-Hybrid architecture, shrunk (random weights) so the test stays fast."""
    from dpt_ros.model import build_model

    return build_model(
        name,
        depth=2,
        embed_dim=64,
        num_heads=2,
        hooks=(0, 1, 0, 1),
        stage_channels=(256, 512, 64, 64),
        features=32,
        resnet_layers=(1, 1, 1),
    ).eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_real_dpt_depth_and_segmentation_equal_authors(channels_last: bool) -> None:
    depth, seg = tiny_dpt("dpt_hybrid"), tiny_dpt("dpt_hybrid_ade20k")
    rgb = frame(90, 140, seed=7)
    expected_depth = authors_depth(depth, rgb, net_size=64)
    expected_labels = authors_labels(seg, rgb, net_size=64)
    config = EngineConfig(model=None, net_size=64, channels_last=channels_last)
    pred = Engine(config, depth_model=depth, segmentation_model=seg).infer(rgb)
    scale = np.abs(expected_depth).max()
    np.testing.assert_allclose(pred.depth, expected_depth, rtol=0, atol=1e-4 * scale)
    assert pred.labels.max() <= 150
    assert (pred.labels == expected_labels).mean() > 0.999


def test_threads_setting_is_applied(depth_model: TinyDepth) -> None:
    before = torch.get_num_threads()
    try:
        Engine(EngineConfig(model=None, threads=1), depth_model=depth_model)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bf16_on_cpu_is_close_to_fp32() -> None:
    rgb = frame(64, 80)
    fp32 = Engine(EngineConfig(model=None, net_size=64), depth_model=TinyDepth()).infer(rgb)
    config = EngineConfig(model=None, net_size=64, precision="bf16")
    engine = Engine(config, depth_model=TinyDepth())
    bf16 = engine.infer(rgb)
    assert engine.precisions == {"depth": "bf16"}
    assert bf16.depth.dtype == np.float32
    np.testing.assert_allclose(bf16.depth, fp32.depth, rtol=0, atol=0.05 * fp32.depth.max())


def test_non_finite_half_output_falls_back_to_fp32_once(caplog: pytest.LogCaptureFixture) -> None:
    rgb = frame(64, 80)
    expected = Engine(EngineConfig(model=None, net_size=64), depth_model=TinyDepth()).infer(rgb)
    engine = Engine(
        EngineConfig(model=None, net_size=64, precision="bf16"), depth_model=InfInBf16()
    )
    with caplog.at_level(logging.WARNING, logger="dpt_ros.engine"):
        first = engine.infer(rgb)
        second = engine.infer(rgb)
    assert engine.precisions == {"depth": "fp32"}
    warnings = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1 and "depth" in warnings[0].getMessage()
    for pred in (first, second):
        assert np.isfinite(pred.depth).all()
        np.testing.assert_allclose(pred.depth, expected.depth, rtol=1e-6, atol=1e-7)


class AlwaysInf(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], *x.shape[2:]), float("inf"))


def test_non_finite_compiled_model_falls_back_to_eager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Stand-in for a miscompiled network (torch.compile itself is too slow for a unit test).
    monkeypatch.setattr(torch, "compile", lambda module: AlwaysInf())
    rgb = frame(64, 80)
    expected = Engine(EngineConfig(model=None, net_size=64), depth_model=TinyDepth()).infer(rgb)
    engine = Engine(EngineConfig(model=None, net_size=64, compile=True), depth_model=TinyDepth())
    assert isinstance(engine.depth_model, AlwaysInf)
    with caplog.at_level(logging.WARNING, logger="dpt_ros.engine"):
        first, second = engine.infer(rgb), engine.infer(rgb)
    assert isinstance(engine.depth_model, TinyDepth)
    warnings = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1 and "torch.compile" in warnings[0]
    for pred in (first, second):
        np.testing.assert_allclose(pred.depth, expected.depth, rtol=1e-6, atol=1e-7)


def _rss_bytes() -> int:
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_no_memory_growth_over_1000_frames() -> None:
    engine = Engine(
        EngineConfig(model=None, net_size=32, output_size=(48, 32)),
        depth_model=TinyDepth(),
        segmentation_model=TinySegmentation(),
    )
    frames = [frame(30, 40, seed) for seed in range(4)]
    for i in range(100):
        engine.infer(frames[i % 4])
    baseline = _rss_bytes()
    kept = []
    for i in range(1000):
        pred = engine.infer(frames[i % 4])
        if i % 250 == 0:
            kept.append(pred)
    growth = _rss_bytes() - baseline
    # A per-frame leak of even the 48x32 outputs (~7 kB) would add ~7 MB.
    assert growth < 4 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1000 frames"
    assert engine.allocated_buffers() == 0  # the CPU path keeps no pools
    assert len(kept) == 4


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (np.zeros((10, 10, 3), np.float32), TypeError, "uint8"),
        (np.zeros((10, 10), np.uint8), ValueError, r"\(H, W, 3\)"),
        (np.zeros((10, 10, 4), np.uint8), ValueError, r"\(H, W, 3\)"),
        (np.zeros((0, 10, 3), np.uint8), ValueError, "empty"),
        ([[1, 2, 3]], TypeError, "numpy array"),
    ],
)
def test_bad_frames_are_rejected(depth_model: TinyDepth, bad, error, match) -> None:
    engine = Engine(EngineConfig(model=None, net_size=64), depth_model=depth_model)
    with pytest.raises(error, match=match):
        engine.infer(bad)
    with pytest.raises(error, match=match):
        engine.infer_batch([frame(10, 10), bad])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"device": "mps"}, "unknown device 'mps'"),
        ({"device": "cuda:x"}, "unknown device"),
        ({"precision": "int8"}, "unknown precision 'int8'"),
        ({"net_size": 0}, "net_size"),
        ({"output_size": (640,)}, "output_size"),
        ({"output_size": (640, -1)}, "output_size"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"batch_size": 0}, "batch_size"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_config_values_are_rejected(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EngineConfig(**overrides)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_a_gpu_is_a_clear_error(depth_model: TinyDepth) -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        Engine(EngineConfig(model=None, device="cuda"), depth_model=depth_model)


def test_cuda_graphs_need_cuda(depth_model: TinyDepth) -> None:
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        Engine(EngineConfig(model=None, cuda_graphs=True), depth_model=depth_model)


def test_missing_heads_are_clear_errors(depth_model: TinyDepth) -> None:
    with pytest.raises(ValueError, match="no model"):
        Engine(EngineConfig(model=None))
    depth_only = Engine(EngineConfig(model=None, net_size=64), depth_model=depth_model)
    with pytest.raises(ValueError, match="no segmentation model"):
        depth_only.infer(frame(20, 20), want_labels=True)
    labels_only = Engine(EngineConfig(model=None), segmentation_model=TinySegmentation())
    with pytest.raises(ValueError, match="no depth model"):
        labels_only.infer(frame(20, 20))
    with pytest.raises(ValueError, match="nothing to do"):
        depth_only.infer(frame(20, 20), want_depth=False)


def test_models_in_the_wrong_role_are_rejected(depth_model: TinyDepth) -> None:
    with pytest.raises(ValueError, match="pass it as segmentation_model"):
        Engine(EngineConfig(model=None), depth_model=TinySegmentation())
    with pytest.raises(ValueError, match="expected 'labels'"):
        Engine(EngineConfig(model=None), segmentation_model=depth_model)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        Engine(EngineConfig(model=None), depth_model=lambda x: x)  # type: ignore[arg-type]


def test_plugin_returning_the_wrong_shape_is_a_clear_error() -> None:
    engine = Engine(EngineConfig(model=None, net_size=64), depth_model=WrongShape())
    with pytest.raises(ValueError, match=r"depth model returned shape \(1, 2, 64, 64\)"):
        engine.infer(frame(64, 64))
