"""Precision on the CPU: ``auto`` (native bf16 detection mocked both ways), refusals, the
finite-value fallback, and float32 preprocessing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dpt_ros import precision as precision_module
from dpt_ros import transforms
from dpt_ros.config import ConfigError, ModelSettings, NodeSettings, settings_from_mapping
from dpt_ros.engine import Engine, EngineConfig
from dpt_ros.precision import cpu_flags, cpu_native_bf16, precision_problem, resolve_precision
from dpt_ros.predict import parse_args

ZEN4_FLAGS = "fpu vme sse sse2 avx2 avx512f avx512_vnni avx512_bf16 vaes"
SKYLAKE_FLAGS = "fpu vme sse sse2 avx2 avx512f avx512bw avx512vl"


class TinyDepth(nn.Module):
    """(N,3,H,W) -> (N,H,W), non-negative; fixed weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 1, 3, padding=1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.conv2(torch.relu(self.conv1(x))))[:, 0]


class InfInBf16(TinyDepth):
    """Finite in fp32, infinite whenever autocast hands it bfloat16 activations."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        self.calls.append(out.dtype)
        return out * float("inf") if out.dtype == torch.bfloat16 else out


def frame(height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Makes /proc/cpuinfo read as a CPU with the given flags (None: unreadable)."""

    def fake(flags: str | None) -> None:
        path = tmp_path / "cpuinfo"
        if flags is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n")
        monkeypatch.setattr(precision_module, "_CPUINFO", path)

    return fake


def test_cpu_flags_are_read_from_cpuinfo(cpuinfo) -> None:
    cpuinfo(ZEN4_FLAGS)
    assert {"avx512_bf16", "avx512_vnni"} <= cpu_flags()
    cpuinfo(None)
    assert cpu_flags() == frozenset()


@pytest.mark.parametrize(
    ("flags", "native", "words"),
    [
        (ZEN4_FLAGS, True, "avx512_bf16"),
        ("avx512f amx_tile amx_bf16", True, "amx_bf16"),
        (SKYLAKE_FLAGS, False, "no native bf16"),
        ("", False, "could not be read"),
    ],
)
def test_native_bf16_detection(flags: str, native: bool, words: str) -> None:
    found, why = cpu_native_bf16(flags.split())
    assert found is native
    assert words in why


@pytest.mark.parametrize(("flags", "picked"), [(ZEN4_FLAGS, "bf16"), (SKYLAKE_FLAGS, "fp32")])
def test_auto_picks_by_cpu_and_logs_why(
    cpuinfo, flags: str, picked: str, caplog: pytest.LogCaptureFixture
) -> None:
    cpuinfo(flags)
    assert resolve_precision("cpu", "auto")[0] == picked
    with caplog.at_level(logging.INFO, logger="dpt_ros.engine"):
        engine = Engine(EngineConfig(model=None, net_size=64, precision="auto"), TinyDepth())
    assert engine.precision == picked
    assert engine.precisions == {"depth": picked}
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"precision {picked} (auto:" in message
    expected = "native bf16 (avx512_bf16)" if picked == "bf16" else "no native bf16"
    assert expected in message
    pred = engine.infer(frame())
    assert pred.depth.dtype == np.float32 and np.isfinite(pred.depth).all()


def test_explicit_precisions_are_kept_on_the_cpu(cpuinfo) -> None:
    cpuinfo(SKYLAKE_FLAGS)
    assert resolve_precision("cpu", "bf16") == ("bf16", "requested")
    assert resolve_precision("cpu", "fp32") == ("fp32", "requested")
    cpuinfo(ZEN4_FLAGS)
    engine = Engine(EngineConfig(model=None, net_size=64, precision="fp32"), TinyDepth())
    assert engine.precisions == {"depth": "fp32"}


def test_auto_on_cuda_is_fp16() -> None:
    assert resolve_precision("cuda:1", "auto")[0] == "fp16"


def test_fp16_on_the_cpu_is_refused_by_engine_config_and_settings() -> None:
    with pytest.raises(ValueError, match="'fp16' needs CUDA"):
        EngineConfig(model=None, precision="fp16")
    with pytest.raises(ConfigError, match=r"parameter 'precision': precision 'fp16' needs CUDA"):
        ModelSettings(precision="fp16")
    # The node's path: parameters -> settings.
    with pytest.raises(ConfigError, match="'precision'.*needs CUDA"):
        settings_from_mapping({"precision": "fp16"}, NodeSettings)
    assert ModelSettings(device="cuda", precision="fp16").engine_config().precision == "fp16"
    assert precision_problem("cuda:0", "fp16") is None
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        resolve_precision("cpu", "int8")


def test_front_end_defaults_are_auto() -> None:
    settings = ModelSettings()
    assert settings.precision == "auto"
    config = settings.engine_config()
    assert config.precision == "auto"
    # cuda_graphs: true in the schema means "on CUDA" and is no error on the CPU.
    assert config.cuda_graphs is None
    assert ModelSettings(cuda_graphs=False).engine_config().cuda_graphs is False
    assert parse_args(["a.png", "--out", "x"]).precision == "auto"


def test_auto_bf16_non_finite_output_reruns_in_fp32_and_stays(
    cpuinfo, caplog: pytest.LogCaptureFixture
) -> None:
    cpuinfo(ZEN4_FLAGS)
    rgb = frame()
    expected = Engine(EngineConfig(model=None, net_size=64), TinyDepth()).infer(rgb).depth
    model = InfInBf16()
    engine = Engine(EngineConfig(model=None, net_size=64, precision="auto"), model)
    assert engine.precisions == {"depth": "bf16"}
    with caplog.at_level(logging.WARNING, logger="dpt_ros.engine"):
        outputs = [engine.infer(rgb).depth for _ in range(3)]
    # bf16 once, its fp32 rerun, then fp32 for good.
    assert model.calls == [torch.bfloat16, torch.float32, torch.float32, torch.float32]
    assert engine.precisions == {"depth": "fp32"}
    warnings = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1
    for depth in outputs:
        np.testing.assert_allclose(depth, expected, rtol=1e-6, atol=1e-7)


def test_bf16_on_a_cpu_without_native_bf16_warns(cpuinfo, caplog: pytest.LogCaptureFixture) -> None:
    cpuinfo(SKYLAKE_FLAGS)
    with caplog.at_level(logging.WARNING, logger="dpt_ros.engine"):
        Engine(EngineConfig(model=None, net_size=64, precision="bf16"), TinyDepth())
    assert any("emulated" in r.getMessage() for r in caplog.records)


def test_cpu_preprocessing_stays_float32() -> None:
    rgb = frame(47, 61)
    net = transforms.preprocess_image(rgb, net_size=64)
    assert net.dtype == np.float32
    # Against the float64 reference computation: float32 rounding only.
    image = cv2_resize_float64(rgb, net.shape[1:])
    np.testing.assert_allclose(net, image, rtol=0, atol=2e-5)


def cv2_resize_float64(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    image = cv2.resize(rgb / 255.0, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    return ((image - 0.5) / 0.5).transpose(2, 0, 1)


class TinyMlpDepth(TinyDepth):
    """TinyDepth with a per-pixel MLP: nn.Linear layers for int8 to quantise."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mlp = nn.Sequential(nn.Linear(3, 16), nn.GELU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_int8_linear_layers_stay_close_to_fp32(precision: str) -> None:
    from dpt_ros.quantize import _AnyFloatLinear

    rgb = frame()
    model = TinyMlpDepth()
    expected = Engine(EngineConfig(model=None, net_size=64), model).infer(rgb).depth
    config = EngineConfig(model=None, net_size=64, precision=precision, int8=True)
    engine = Engine(config, model)
    assert sum(isinstance(m, _AnyFloatLinear) for m in engine.depth_model.modules()) == 2
    assert isinstance(model.mlp[0], nn.Linear)  # the caller's model is left as it was
    depth = engine.infer(rgb).depth
    error = np.abs(depth - expected) / (expected.max() - expected.min())
    assert 0 < error.max() < 0.05


def test_int8_is_cpu_only() -> None:
    with pytest.raises(ValueError, match="int8 .* is CPU only"):
        EngineConfig(model=None, device="cuda", int8=True)
    with pytest.raises(ConfigError, match="parameter 'int8': CPU only"):
        ModelSettings(device="cuda", int8=True)
    assert ModelSettings(int8=True).engine_config().int8 is True
