"""Offline rosbag processing: recorded bags in, depth, point clouds and segmentation out.

``python -m dpt_ros.bag IN [IN ...] --out OUT`` (console script ``dpt_bag``); the library API
(``BagJob``, ``process_bag``, chunks, ``merge_bags``) is what other front ends call per bag or
per time chunk. Modules: ``reading`` (open, topics), ``matching`` (image + camera_info + LiDAR +
TF), ``writing`` (output bag), ``exports``, ``segments`` (work folder, resume, merge), ``job``,
``report``, ``cli``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpt_ros.bag.errors import BagError, BagInputError, BagOutputError
from dpt_ros.bag.job import BagJob, JobPlan
from dpt_ros.bag.options import BagOptions
from dpt_ros.bag.report import JobReport

__all__ = [
    "BagError",
    "BagInputError",
    "BagJob",
    "BagOptions",
    "BagOutputError",
    "JobPlan",
    "JobReport",
    "bag_time_range",
    "merge_bags",
    "process_bag",
    "split_time_range",
]


def process_bag(
    input: str | Path,  # noqa: A002
    output: str | Path,
    options: BagOptions | None = None,
    **job_kwargs: Any,
) -> JobReport:
    """``BagJob(input, output, options, **job_kwargs).run()``."""
    return BagJob(input, output, options, **job_kwargs).run()


def bag_time_range(path: str | Path) -> tuple[int, int]:
    """(first, last) message log time of a bag in nanoseconds."""
    from dpt_ros.bag.reading import open_bag

    with open_bag(path) as reader:
        if reader.message_count == 0:
            raise BagInputError(f"{path}: the bag holds no messages")
        return int(reader.start_time), int(reader.end_time) - 1


def split_time_range(path: str | Path, chunk_s: float) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` log-time ranges of at most ``chunk_s`` seconds covering
    the whole bag (the last ends one nanosecond after the last message)."""
    if not chunk_s > 0:
        raise BagInputError(f"chunk length must be positive, got {chunk_s}")
    first, last = bag_time_range(path)
    step = int(chunk_s * 1e9)
    bounds = list(range(first, last + 1, step)) + [last + 1]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def merge_bags(
    parts: Sequence[str | Path],
    output: str | Path,
    *,
    storage: str = "mcap",
    overwrite: bool = False,
) -> int:
    """Concatenate chunk outputs (consecutive ``[start, end)`` ranges of one input) into one
    bag at ``output``, atomically (a ``.partial`` folder beside it, then a rename); raw bytes,
    no re-serialisation. Exports of the parts are merged into ``output/exports``. Returns the
    number of messages written."""
    import os
    import shutil

    from dpt_ros.bag.writing import write_merged

    output = Path(output)
    if output.exists() and not overwrite:
        raise BagOutputError(f"{output} exists; give overwrite=True to replace it")
    work = output.with_name(output.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        count = write_merged([Path(p) for p in parts], work / "bag", storage)
        for part in parts:
            exports = Path(part) / "exports"
            if exports.is_dir():
                shutil.copytree(exports, work / "bag" / "exports", dirs_exist_ok=True)
        if output.exists():
            shutil.rmtree(output)
        os.replace(work / "bag", output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return count
