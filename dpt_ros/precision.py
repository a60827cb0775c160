"""Inference precision: what each device accepts, and what ``auto`` picks.

Torch-free (the settings schema checks with it before anything imports torch), except for
`resolve_precision` on CUDA, which asks torch about the GPU.

``auto`` picks:
  - CPU: ``bf16`` when the CPU executes bfloat16 natively (the ``avx512_bf16`` or
    ``amx_bf16`` flag in /proc/cpuinfo, the instructions oneDNN uses for bf16 matmuls and
    convolutions), else ``fp32`` (emulated bf16 is slower than fp32);
  - CUDA: ``fp16`` (tensor cores on every CUDA GPU; outputs get the finite-value check and
    fall back to fp32, as every below-fp32 precision does).
``fp16`` on a CPU is refused: oneDNN has no fp16 kernels for most CPUs and autocast to fp16 on
the CPU is slower than fp32 there.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "NATIVE_BF16_FLAGS",
    "PRECISION_CHOICES",
    "cpu_flags",
    "cpu_native_bf16",
    "precision_problem",
    "resolve_precision",
]

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")
# /proc/cpuinfo flags of native bfloat16 arithmetic: AVX512-BF16 (Cooper Lake, Zen 4 and
# later) and AMX-BF16 (Sapphire Rapids and later).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_CPUINFO = Path("/proc/cpuinfo")


def precision_problem(device: str, precision: str) -> str | None:
    """Why `precision` cannot run on `device` ('cpu', 'cuda', 'cuda:N'), or None if it can."""
    if precision not in PRECISION_CHOICES:
        return f"unknown precision {precision!r}: use one of {', '.join(PRECISION_CHOICES)}"
    if precision == "fp16" and device.strip() == "cpu":
        return "precision 'fp16' needs CUDA (the CPU has no fast fp16): use auto, bf16 or fp32"
    return None


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The CPU feature flags of the first processor in `cpuinfo` (default /proc/cpuinfo);
    empty if unreadable."""
    try:
        text = (cpuinfo or _CPUINFO).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_native_bf16(flags: Iterable[str] | None = None) -> tuple[bool, str]:
    """(whether the CPU has native bf16, the reason in words). `flags` default: `cpu_flags()`."""
    flags = frozenset(cpu_flags() if flags is None else flags)
    found = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if found:
        return True, f"the CPU has native bf16 ({', '.join(found)})"
    if not flags:
        return False, "the CPU's feature flags could not be read (/proc/cpuinfo)"
    return False, f"the CPU has no native bf16 (none of {', '.join(NATIVE_BF16_FLAGS)})"


def resolve_precision(device: str, precision: str) -> tuple[str, str]:
    """(the precision to run, why): ``auto`` resolved for `device`, others checked as given.

    Raises ValueError with `precision_problem`'s message for a precision the device refuses.
    """
    problem = precision_problem(device, precision)
    if problem is not None:
        raise ValueError(problem)
    on_cpu = device.strip() == "cpu"
    if precision != "auto":
        return precision, "requested"
    if on_cpu:
        native, why = cpu_native_bf16()
        return ("bf16" if native else "fp32"), why
    return "fp16", "CUDA device (tensor cores); fp32 fallback on non-finite output"
