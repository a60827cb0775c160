"""tools/benchmark.py's engine variants on a tiny plug-in model: every option builds and runs,
errors are reported against our fp32 output, and int8 Linear layers accept bf16 autocast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import benchmark  # noqa: E402

from dpt_ros.quantize import _AnyFloatLinear, quantize_linear_int8  # noqa: E402


class TinyLinearDepth(nn.Module):
    """Patchify conv, a per-pixel MLP (nn.Linear, what int8 quantises), depth head."""

    output_semantics = "relative_inverse_depth"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 16, 3, padding=1)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.embed(x).permute(0, 2, 3, 1)
        features = features + self.mlp(features)
        return nn.functional.softplus(self.head(features.permute(0, 3, 1, 2)))[:, 0]


def make_tiny() -> nn.Module:
    return TinyLinearDepth()


def test_int8_linear_layers_run_under_bf16_autocast() -> None:
    model = TinyLinearDepth().eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        expected = model(x)
        quantized = quantize_linear_int8(TinyLinearDepth())
        wrapped = [m for m in quantized.modules() if isinstance(m, _AnyFloatLinear)]
        assert len(wrapped) == 2
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = quantized(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_variants_are_timed_and_their_errors_reported(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = benchmark.main(
        [
            "--model",
            "test_benchmark_variants:make_tiny",
            "--weights",
            "",
            "--systems",
            "engine",
            "--variants",
            "fp32,bf16+cl,int8,int8+bf16+cl",
            "--size",
            "40x32",
            "--net-size",
            "32",
            "--frames",
            "1",
            "--warmup",
            "0",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    rows = report["variants"]
    assert set(rows) == {
        "engine",
        "engine[fp32]",
        "engine[bf16+cl]",
        "engine[int8]",
        "engine[int8+bf16+cl]",
    }
    assert rows["engine[fp32]"]["error_max"] == 0.0
    assert rows["engine[bf16+cl]"]["precision"] == "bf16"
    assert rows["engine[bf16+cl]"]["channels_last"] is True
    for name, row in rows.items():
        assert row["ms_per_frame"] > 0, name
        assert 0 <= row["error_median"] <= row["error_max"] < 0.2, name
    assert rows["engine[int8]"]["error_max"] > 0  # quantised for real


def test_unknown_variant_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--variants", "fp8"])
    assert "unknown variants ['fp8']" in capsys.readouterr().err
