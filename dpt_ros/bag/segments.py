"""The work folder of a run: resumable segments, the progress journal, merging, the final rename.

A run writes into ``<output>.partial/`` beside the output, never into the output itself:

    <output>.partial/journal.json      what is done (atomically replaced after each segment)
    <output>.partial/segments/00000/   closed rosbag2 bags, one per ``segment_frames`` images
    <output>.partial/exports/          --export files (kept across a resume)

After every ``segment_frames`` images the current segment bag is closed and the journal records
it with the log time where the next segment starts, the temporal filter's exact state and the
counters. A killed run leaves the folder; ``--resume`` checks the journal against the input
(size, modification time) and the options, drops the unfinished segment, restores the filter
and continues at the recorded log time, so the merged result holds the same messages as an
uninterrupted run. When the run completes the segments are merged into one bag (raw bytes, in
order), the exports move into it and the folder is renamed onto the output in one step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from dpt_ros.align import ScaleShiftFit
from dpt_ros.bag.errors import BagOutputError
from dpt_ros.bag.writing import write_merged

JOURNAL_VERSION = 1


def input_identity(path: Path) -> dict[str, int]:
    """Size and newest modification time of a bag (file or directory)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        "size": sum(p.stat().st_size for p in files),
        "mtime_ns": max((p.stat().st_mtime_ns for p in files), default=0),
    }


def _encode(value: Any) -> Any:
    if isinstance(value, ScaleShiftFit):
        fields = dataclasses.asdict(dataclasses.replace(value, inliers=np.zeros(0, bool)))
        fields.pop("inliers")
        return {"__fit__": {k: _encode(v) for k, v in fields.items()}}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__fit__" in value:
        fields = {k: _decode(v) for k, v in value["__fit__"].items()}
        fields["pred_range"] = tuple(fields["pred_range"])
        # The inlier mask of the held fit is never used again; its numbers are exact.
        return ScaleShiftFit(inliers=np.zeros(0, bool), **fields)
    if isinstance(value, dict) and "__float__" in value:
        return float(value["__float__"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_filter(state: dict[str, Any]) -> dict[str, Any]:
    """``Pipeline.snapshot_filter()`` -> JSON (floats round-trip exactly)."""
    return {k: _encode(v) for k, v in state.items()}


def decode_filter(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _decode(v) for k, v in data.items()}


class WorkDir:
    """``<output>.partial``: create, resume or clear it; record segments; finish the output."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(output.name + ".partial")
        self.journal_path = self.path / "journal.json"
        self.scales_path = self.path / "scales.txt"
        self.segments_dir = self.path / "segments"
        self.exports_dir = self.path / "exports"
        self.journal: dict[str, Any] = {}

    def check(self, identity: dict[str, Any], resume: bool, overwrite: bool) -> dict[str, Any]:
        """The journal to continue (``resume``) or a fresh one; changes nothing on disk.

        BagOutputError when there is nothing to resume, the journal belongs to another input
        or other options, or an interrupted run's folder is in the way of a fresh run.
        """
        if resume:
            if not self.journal_path.is_file() and self.output.exists():
                raise BagOutputError(f"{self.output} is complete already: nothing to resume")
            if not self.journal_path.is_file():
                raise BagOutputError(
                    f"{self.output}: nothing to resume (no {self.journal_path}); run without "
                    "--resume"
                )
            try:
                journal = json.loads(self.journal_path.read_text())
            except (OSError, ValueError) as error:
                raise BagOutputError(f"{self.journal_path}: unreadable journal: {error}") from None
            for key, value in identity.items():
                if journal.get(key) != value:
                    raise BagOutputError(
                        f"{self.output}: cannot resume: the interrupted run had a different "
                        f"{key} ({journal.get(key)!r}, now {value!r}); start over with "
                        "--overwrite"
                    )
            self.journal = journal
            return journal
        if self.path.exists() and not overwrite:
            raise BagOutputError(
                f"{self.path} exists (an interrupted run): continue it with --resume or start "
                "over with --overwrite"
            )
        return {"version": JOURNAL_VERSION, **identity, "segments": []}

    def start(self, journal: dict[str, Any], resume: bool) -> None:
        """Make the folder ready for ``journal`` (from ``check``): a fresh one, or the resumed
        one without the segment that was being written when the run stopped."""
        self.journal = journal
        if resume:
            done = {s["dir"] for s in journal["segments"]}
            for stale in self.segments_dir.glob("*"):
                if stale.name not in done:
                    shutil.rmtree(stale)
            scales = self.scales()  # drop those of the unfinished segment
            self.scales_path.write_text("".join(f"{value!r}\n" for value in scales))
            return
        if self.path.exists():
            shutil.rmtree(self.path)  # check() allowed it: --overwrite
        self.segments_dir.mkdir(parents=True)
        self._save()

    def segment_path(self) -> Path:
        return self.segments_dir / f"{len(self.journal['segments']):05d}"

    def record(
        self, boundary_ns: int | None, filter_state: dict, report: dict, scales: list[float]
    ) -> None:
        """A segment is closed: the next one starts at ``boundary_ns`` (None: the end).

        ``report`` is the report's counters (without its per-frame scales); ``scales`` (the
        segment's new ones) are appended to ``scales.txt``, so the journal stays small however
        long the bag.
        """
        with open(self.scales_path, "a") as f:
            f.writelines(f"{value!r}\n" for value in scales)
            f.flush()
            os.fsync(f.fileno())
        self.journal["segments"].append({"dir": self.segment_path().name, "next_ns": boundary_ns})
        self.journal["filter"] = encode_filter(filter_state)
        self.journal["report"] = {**report, "scales_count": report.get("scales_count", 0)}
        self._save()

    def scales(self) -> list[float]:
        """The scales the journal counts (lines past them belong to an unfinished segment)."""
        count = int(self.journal.get("report", {}).get("scales_count", 0))
        if not count:
            return []
        lines = self.scales_path.read_text().splitlines()[:count]
        return [float(line) for line in lines]

    def _save(self) -> None:
        tmp = self.journal_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.journal, indent=1))
        os.replace(tmp, self.journal_path)

    def finish(self, storage: str, overwrite: bool) -> None:
        """Merge the segments into the final bag, put the exports in it, rename onto output."""
        parts = [self.segments_dir / s["dir"] for s in self.journal["segments"]]
        final = self.path / "bag"
        if final.exists():
            shutil.rmtree(final)
        if len(parts) == 1:
            os.replace(parts[0], final)
        else:
            write_merged(parts, final, storage)
        if self.exports_dir.is_dir() and any(self.exports_dir.iterdir()):
            os.replace(self.exports_dir, final / "exports")
        if self.output.exists():
            if not overwrite:
                raise BagOutputError(f"{self.output} appeared while the run went on; kept")
            shutil.rmtree(self.output) if self.output.is_dir() else self.output.unlink()
        os.replace(final, self.output)
        shutil.rmtree(self.path)
