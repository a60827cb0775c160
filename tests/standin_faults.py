"""Stand-in models (plug-ins) that misbehave on demand, for the node's reliability tests.

Loaded by the node under test through the plug-in path (``model:=tests.standin_faults:...``),
so the node builds its engine exactly as in production. A uniform grey image selects the
misbehaviour: the engine resizes a uniform image to a uniform tensor, so the grey level
survives preprocessing exactly (to float rounding).
"""

from __future__ import annotations

import time
from typing import Any

# Grey levels of a uniform input image that trigger a fault.
RAISE_GREY = 13  # forward raises RuntimeError: a failed frame
EXIT_GREY = 17  # forward raises SystemExit: the worker thread ends (the supervisor restarts it)


def on_demand_faults() -> Any:
    """Plug-in: the input's grey level as relative inverse depth, or a fault (see above)."""
    import torch

    class OnDemandFaults(torch.nn.Module):
        output_semantics = "relative_inverse_depth"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            grey = (x.mean(dim=1) + 1.0) * 0.5  # v / 255 for the engine's mean = std = 0.5
            level = float(grey.mean()) * 255.0
            if abs(level - RAISE_GREY) < 0.5 and float(grey.std()) < 1e-3:
                raise RuntimeError(f"stand-in failure on demand (grey {RAISE_GREY})")
            if abs(level - EXIT_GREY) < 0.5 and float(grey.std()) < 1e-3:
                raise SystemExit(f"stand-in worker exit on demand (grey {EXIT_GREY})")
            return grey

    return OnDemandFaults()


def slow_grey(seconds: float = 0.4) -> Any:
    """Plug-in: the input's grey level, after ``seconds`` of sleep (a frame in progress to
    interrupt with a signal)."""
    import torch

    class SlowGrey(torch.nn.Module):
        output_semantics = "relative_inverse_depth"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(seconds)
            return (x.mean(dim=1) + 1.0) * 0.5

    return SlowGrey()
