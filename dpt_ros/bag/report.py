"""What a bag job did: counters, fit statistics and timing; JSON for ``--report``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class JobReport:
    """Per bag (or merged over several). ``skipped``: output (or whole frame) -> reason ->
    count; ``malformed``: message kind -> count; ``scales``: the scale of every frame that had
    one (for the median; not in the JSON)."""

    input: str = ""
    output: str = ""
    frames_in: int = 0
    frames_out: int = 0
    warmup_frames: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    fits_tried: int = 0
    fits_ok: int = 0
    messages_copied: int = 0
    messages_written: dict[str, int] = field(default_factory=dict)
    bad_messages: list[str] = field(default_factory=list)
    exports: dict[str, str] = field(default_factory=dict)
    export_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    resumed_from_frame: int = 0
    scales: list[float] = field(default_factory=list, repr=False)

    @property
    def fit_success_rate(self) -> float | None:
        return self.fits_ok / self.fits_tried if self.fits_tried else None

    @property
    def median_scale(self) -> float | None:
        return float(sorted(self.scales)[len(self.scales) // 2]) if self.scales else None

    @property
    def frames_per_s(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else math.nan

    def skip(self, what: str, reason: str) -> None:
        key = f"{what}: {reason}"
        self.skipped[key] = self.skipped.get(key, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("scales")
        out.update(
            fit_success_rate=self.fit_success_rate,
            median_scale=self.median_scale,
            frames_per_s=None if math.isnan(self.frames_per_s) else self.frames_per_s,
        )
        return out

    def summary(self) -> list[str]:
        """Lines for people: frames, skips by reason, fit, scale, time."""
        rate = self.fit_success_rate
        lines = [
            f"{self.input} -> {self.output}",
            f"  frames: {self.frames_in} in, {self.frames_out} out"
            + (f" ({self.warmup_frames} warm-up)" if self.warmup_frames else ""),
        ]
        for key, count in sorted(self.skipped.items()):
            lines.append(f"  skipped {key}: {count}")
        for key, count in sorted(self.malformed.items()):
            lines.append(f"  {key} messages skipped: {count}")
        for message in self.bad_messages:
            lines.append(f"  unreadable: {message}")
        if self.fits_tried:
            lines.append(
                f"  LiDAR fit: {self.fits_ok}/{self.fits_tried} frames ({rate:.0%})"
                + (f", median scale {self.median_scale:.4g}" if self.median_scale else "")
            )
        else:
            lines.append("  LiDAR fit: not tried (no LiDAR scans matched to images)")
        lines.append(
            f"  messages: {self.messages_copied} copied, "
            f"{sum(self.messages_written.values())} outputs written"
        )
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.extend(f"  export {k}: {v}" for k, v in sorted(self.exports.items()))
        lines.append(f"  wall time {self.wall_s:.1f} s ({self.frames_per_s:.2f} frames/s)")
        return lines

    @classmethod
    def merge(cls, reports: Sequence[JobReport], input: str = "", output: str = "") -> JobReport:  # noqa: A002
        """One report over several (chunks of one bag, or several bags)."""
        out = cls(input=input, output=output)
        for r in reports:
            out.frames_in += r.frames_in
            out.frames_out += r.frames_out
            out.warmup_frames += r.warmup_frames
            out.fits_tried += r.fits_tried
            out.fits_ok += r.fits_ok
            out.messages_copied += r.messages_copied
            out.wall_s += r.wall_s
            out.scales.extend(r.scales)
            out.bad_messages.extend(r.bad_messages)
            out.notes.extend(n for n in r.notes if n not in out.notes)
            for mine, theirs in (
                (out.skipped, r.skipped),
                (out.malformed, r.malformed),
                (out.messages_written, r.messages_written),
                (out.export_counts, r.export_counts),
            ):
                for key, count in theirs.items():
                    mine[key] = mine.get(key, 0) + count
            out.exports.update(r.exports)
        return out
