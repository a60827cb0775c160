"""The bag tool on Ray: one task per recorded bag, or per time chunk of a long one.

``python -m dpt_ros.bag IN... --out OUT --ray [ADDRESS]`` hands its jobs (one
:class:`dpt_ros.bag.BagJob` per input) to :func:`main`. Each bag becomes a Ray task with the
resources asked for (``--cpus-per-task``, ``--gpus-per-task``); with ``--chunk-seconds`` a long
bag is split by log time into chunks, each processed by its own task after a warm-up over the
preceding seconds (so the temporal scale filter starts each chunk in the state a sequential run
had), then the chunk outputs are concatenated in order into one output bag (raw bytes).

This module is the Ray front end of the bag tool, nothing more: scheduling, placement and
retries are Ray's (tasks with ``max_retries``; ``ray.wait`` for progress). Results and outputs
are the bag tool's own (``BagJob.run``, ``merge_bags``), so they are written atomically
(temporary path beside the output, then a rename) and equal a local run's.

What is retried: a task whose worker process or node dies (killed, out of memory, node lost)
and a task that raised an unexpected exception (a flaky network filesystem), up to
``--retries`` times. A retried bag continues from the journal its killed attempt left (the bag
tool's resume: the same messages as an uninterrupted run); a retried chunk starts over. Input
and output problems (a corrupt bag, a missing topic, an existing output) are reported at once
without retrying, since they would fail the same way again. A bag that keeps failing is
reported with its reason; the others finish.

Ray is optional (``pip install '.[ray]'``): importing this module does not import Ray.
"""

from __future__ import annotations

import argparse
import copy as _copy
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RAY_MISSING",
    "BagOutcome",
    "FleetError",
    "FleetOptions",
    "FleetReport",
    "add_arguments",
    "import_ray",
    "main",
    "run_on_ray",
]

RAY_MISSING = (
    "--ray needs Ray, which is not installed: pip install '.[ray]' (from the dpt_ros checkout; "
    "or pip install 'ray==2.60.0')"
)
LOCAL = "local"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
CHUNKS_SUFFIX = ".chunks"  # <output>.chunks/part-NNNN: chunk outputs until they are merged
_ADDRESS = re.compile(r"local|auto|ray://\S+|(\[[0-9a-fA-F:.]+\]|[\w.-]+):\d{1,5}")


class FleetError(RuntimeError):
    """A one-line problem with the Ray settings or the cluster (no traceback for the user)."""


def import_ray() -> Any:
    """The ``ray`` module; FleetError naming ``pip install '.[ray]'`` when it is missing."""
    try:
        import ray
    except ImportError as exc:
        raise FleetError(RAY_MISSING) from exc
    return ray


# ============================================================================ settings
@dataclass(frozen=True)
class FleetOptions:
    """How bags are spread over Ray.

    ``address``: "local" starts a private Ray instance on this machine (stopped at the end);
    "auto" joins the cluster this machine belongs to (``ray start``); "ray://host:port" uses
    Ray Client; "host:port" a head's GCS address. ``local_cpus``: CPUs of a local instance
    (None: all of this machine's). ``chunk_seconds``: 0 = one task per bag. ``warmup_s``:
    warm-up before each chunk (None: the bag tool's default).
    """

    address: str = LOCAL
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    chunk_seconds: float = 0.0
    warmup_s: float | None = None
    retries: int = 3
    local_cpus: int | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not _ADDRESS.fullmatch(self.address):
            # Often an input that `--ray [ADDRESS]` took for its address.
            raise FleetError(
                f"--ray {self.address!r} is not a Ray address ('local', 'auto', ray://HOST:PORT "
                "or HOST:PORT); put --ray after the inputs, or write --ray local"
            )
        for name, low in (("cpus_per_task", 0.0), ("gpus_per_task", 0.0), ("chunk_seconds", 0.0)):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= low):
                raise FleetError(f"--{name.replace('_', '-')} must be >= {low:g}, got {value}")
        if self.cpus_per_task == 0 and self.gpus_per_task == 0:
            raise FleetError("--cpus-per-task and --gpus-per-task cannot both be 0")
        if self.warmup_s is not None and not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise FleetError(f"--chunk-warmup must be >= 0 seconds, got {self.warmup_s}")
        if self.retries < 0:
            raise FleetError(f"--retries must be >= 0, got {self.retries}")
        if self.local_cpus is not None and self.local_cpus < 1:
            raise FleetError(f"a local Ray instance needs at least 1 CPU, got {self.local_cpus}")

    @property
    def starts_local(self) -> bool:
        return self.address == LOCAL

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FleetOptions:
        """From the bag tool's parsed arguments (see :func:`add_arguments`)."""
        workers = getattr(args, "workers", None)
        return cls(
            address=args.ray,
            cpus_per_task=args.cpus_per_task,
            gpus_per_task=args.gpus_per_task,
            chunk_seconds=args.chunk_seconds,
            warmup_s=args.chunk_warmup,
            retries=args.retries,
            # --workers N (the bag tool's default 1): room for N tasks at once on a local
            # instance, as the local tool runs N bags at once. A cluster has its own size.
            local_cpus=max(1, math.ceil(workers * args.cpus_per_task)) if workers else None,
            quiet=bool(getattr(args, "quiet", False)),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Ray options to the bag tool's parser (they need Ray only when ``--ray`` is used)."""
    group = parser.add_argument_group(
        "Ray (many bags on a cluster; optional extra: pip install '.[ray]')"
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="run each bag (or chunk) as a Ray task. No ADDRESS or 'local': start a Ray instance "
        "on this machine with room for --workers tasks; 'auto': the cluster this machine joined "
        "with `ray start`; "
        "ray://HOST:PORT (Ray Client) or HOST:PORT (a head) for another cluster",
    )
    group.add_argument(
        "--cpus-per-task",
        type=float,
        default=1.0,
        metavar="N",
        help="CPUs Ray reserves for each task (default 1; torch uses that many threads)",
    )
    group.add_argument(
        "--gpus-per-task",
        type=float,
        default=0.0,
        metavar="N",
        help="GPUs Ray reserves for each task (fractions share a GPU, e.g. 0.5); with N > 0 "
        "the task runs on the GPU Ray assigned to it (--device cuda)",
    )
    group.add_argument(
        "--chunk-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="split each bag by log time into chunks of S seconds, one task each, merged in "
        "order into one output (default 0: one task per bag)",
    )
    group.add_argument(
        "--chunk-warmup",
        type=float,
        default=None,
        metavar="S",
        help="seconds before each chunk run (outputs discarded) to bring the temporal scale "
        "filter to a sequential run's state (default: the bag tool's, 5 s)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="times Ray retries a task whose worker died or that raised an unexpected error "
        "(input problems are not retried; default 3)",
    )


# ============================================================================ results
@dataclass
class BagOutcome:
    """What became of one input bag: its report when done, else the reason it failed."""

    input: str
    output: str
    report: Any | None = None  # dpt_ros.bag.JobReport
    error: str = ""
    chunks: int = 1
    input_problem: bool = False  # the error is the bag tool's (BagError), not Ray's or a crash

    @property
    def ok(self) -> bool:
        return self.report is not None and not self.error

    @property
    def message(self) -> str:
        """The failure in one line, naming the input."""
        return self.error if self.input in self.error else f"{self.input}: {self.error}"


@dataclass
class FleetReport:
    """The run's summary: per-bag outcomes, frames and overall frames per second."""

    outcomes: list[BagOutcome]
    wall_s: float
    address: str
    interrupted: bool = False
    cluster: dict[str, float] = field(default_factory=dict)  # Ray's resources at the start

    @property
    def done(self) -> list[BagOutcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[BagOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def frames(self) -> int:
        return sum(int(o.report.frames_out) for o in self.done)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        """A few lines for the terminal: counts, then each failure with its reason."""
        lines = [
            f"ray ({self.address}): {len(self.done)} of {len(self.outcomes)} bag(s) done, "
            f"{len(self.failed)} failed{' (interrupted)' if self.interrupted else ''}; "
            f"{self.frames} frame(s) in {self.wall_s:.1f} s ({self.frames_per_s:.2f} frames/s "
            "overall)"
        ]
        lines += [f"  failed: {o.message}" for o in self.failed]
        return "\n".join(lines)

    def to_dict(self, output: str = "") -> dict[str, Any]:
        """JSON for ``--report``: the local tool's keys (``bags``: the report of every bag
        done, ``failed``: one line per failed bag, ``total``: the reports merged) plus ``ray``
        (address, resources, counts, wall time and frames/s of the whole run)."""
        from dpt_ros.bag import JobReport

        reports = [o.report for o in self.done]
        inputs = ",".join(o.input for o in self.outcomes)
        return {
            "bags": [{**o.report.to_dict(), "chunks": o.chunks} for o in self.done],
            "failed": [o.message for o in self.failed],
            "total": JobReport.merge(reports, input=inputs, output=output).to_dict(),
            "ray": {
                "address": self.address,
                "cluster": self.cluster,
                "bags": len(self.outcomes),
                "done": len(self.done),
                "failed": len(self.failed),
                "interrupted": self.interrupted,
                "frames": self.frames,
                "wall_s": self.wall_s,
                "frames_per_s": self.frames_per_s,
            },
        }


@dataclass(frozen=True)
class _Failed:
    """A task's failure. An input/output problem (BagError) is returned, not raised, so that
    Ray does not retry it; ``input_problem`` tells the two kinds apart for the exit code."""

    reason: str
    input_problem: bool = False


# ============================================================================ Ray tasks
# Plain functions, made Ray tasks in run_on_ray (Ray is imported lazily). They run on the
# cluster, where the bags are; the driver never opens a bag.
def _task_run(job: Any) -> Any:
    from dpt_ros.bag import BagError
    from dpt_ros.bag.segments import WorkDir

    if not (job.resume or job.overwrite) and WorkDir(Path(job.output)).journal_path.is_file():
        # An earlier attempt (this task's, killed and retried by Ray, or an interrupted run)
        # left its work folder: continue it. Resuming gives the messages of an uninterrupted
        # run, and the journal is checked against the input and the options.
        job = _replace(job, resume=True)
    try:
        return job.run()
    except BagError as exc:
        return _Failed(str(exc), input_problem=True)


def _task_plan_chunks(job: Any, chunk_s: float) -> Any:
    from dpt_ros.bag import BagError, split_time_range

    try:
        job.plan()  # topics, transform, output: fail before any chunk is spent
        ranges = split_time_range(job.input, chunk_s)
    except BagError as exc:
        return _Failed(str(exc), input_problem=True)
    _chunks_dir(job).mkdir(exist_ok=True)
    return ranges


def _task_merge(job: Any, parts: list[str], reports: list[Any]) -> Any:
    from dpt_ros.bag import BagError, JobReport, merge_bags

    try:
        merge_bags(
            [Path(p) for p in parts],
            Path(job.output),
            storage=job.options.settings.storage,
            overwrite=job.overwrite,
        )
    except BagError as exc:
        return _Failed(str(exc), input_problem=True)
    shutil.rmtree(_chunks_dir(job), ignore_errors=True)
    report = JobReport.merge(reports, input=str(job.input), output=str(job.output))
    # The parts' exports now live in the output (merge_bags moved them there).
    for key, where in report.exports.items():
        for part in parts:
            if where.startswith(part + os.sep):
                report.exports[key] = str(Path(job.output) / Path(where).relative_to(part))
    return report


def _chunks_dir(job: Any) -> Path:
    output = Path(job.output)
    return output.with_name(output.name + CHUNKS_SUFFIX)


def _part_path(job: Any, index: int) -> Path:
    return _chunks_dir(job) / f"part-{index:04d}"


def _chunk_job(job: Any, index: int, start_ns: int, end_ns: int, warmup_s: float | None) -> Any:
    """The job for one chunk: its own output under ``<output>.chunks/`` and log-time bounds.

    A chunk's output is ours alone, not the user's: whatever an earlier attempt left there is
    replaced (a chunk is short; its journal might come from a run with other bounds)."""
    changes: dict[str, Any] = {
        "output": _part_path(job, index),
        "start_ns": start_ns,
        "end_ns": end_ns,
        "overwrite": True,
        "resume": False,
    }
    if warmup_s is not None:
        changes["warmup_s"] = warmup_s
    return _replace(job, **changes)


def _on_gpu(job: Any) -> Any:
    """The job with device 'cuda': Ray makes the GPU(s) it assigned the only visible ones."""
    from dpt_ros.config import update_settings

    settings = update_settings(job.options.settings, {"device": "cuda"})
    return _replace(job, options=dataclasses.replace(job.options, settings=settings))


def _replace(job: Any, **changes: Any) -> Any:
    """A copy of a BagJob with some of its public attributes changed (output, bounds, ...)."""
    copy = _copy.copy(job)
    for name, value in changes.items():
        if not hasattr(job, name):
            raise AttributeError(f"BagJob has no attribute {name!r}")
        setattr(copy, name, Path(value) if name in ("input", "output") else value)
    return copy


# ============================================================================ driver
def _reason(exc: BaseException, retries: int) -> str:
    """One line for a task that failed after Ray's retries."""
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[0] if text else ''} (after {retries} retries)"
    if isinstance(exc, rex.WorkerCrashedError | rex.NodeDiedError | rex.LocalRayletDiedError):
        return f"its worker died {retries + 1} time(s) (killed, out of memory or node lost)"
    if isinstance(exc, rex.TaskCancelledError):
        return "cancelled"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _connect(ray: Any, options: FleetOptions) -> None:
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # the driver reports per task; worker logs stay in Ray's files
        "logging_level": logging.ERROR,
    }
    if options.starts_local:
        kwargs.update(address=LOCAL, num_cpus=options.local_cpus)
    else:
        kwargs["address"] = options.address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        what = (
            "start a local Ray instance"
            if options.starts_local
            else f"reach the Ray cluster at {options.address!r}"
        )
        raise FleetError(f"cannot {what}: {first[0] if first else type(exc).__name__}") from exc


def run_on_ray(
    jobs: Sequence[Any],
    options: FleetOptions | None = None,
    on_event: Callable[[str, bool], None] | None = None,
) -> FleetReport:
    """Process ``jobs`` (:class:`dpt_ros.bag.BagJob`, one per input bag) as Ray tasks.

    Returns when every bag is done or failed, or on Ctrl-C (``interrupted``; outstanding tasks
    are cancelled, nothing complete-looking is left). ``on_event(line, bag_finished)`` gets one
    line per finished bag (``bag_finished`` True) and per finished chunk (False). Raises
    FleetError when Ray is missing, a local instance cannot start or the cluster cannot be
    reached. Outputs are the jobs' own (atomic); chunk outputs wait in ``<output>.chunks/``.
    """
    options = FleetOptions() if options is None else options
    # Tasks run in other working directories (on other machines): absolute paths only.
    jobs = [_replace(j, input=Path(j.input).absolute(), output=Path(j.output).absolute())
            for j in jobs]  # fmt: skip
    ray = import_ray()
    if options.gpus_per_task > 0:
        jobs = [_on_gpu(job) for job in jobs]
    start = time.perf_counter()
    _connect(ray, options)
    try:
        cluster = {k: float(v) for k, v in ray.cluster_resources().items() if "node:" not in k}
        return _drive(ray, jobs, options, on_event or (lambda line, bag: None), start, cluster)
    finally:
        # Disconnects from a cluster; stops a local instance with all its processes.
        ray.shutdown()


def _drive(
    ray: Any,
    jobs: list[Any],
    options: FleetOptions,
    on_event: Callable[[str, bool], None],
    start: float,
    cluster: dict[str, float],
) -> FleetReport:
    task = {
        "num_cpus": options.cpus_per_task,
        "num_gpus": options.gpus_per_task,
        "max_retries": options.retries,
        "retry_exceptions": True,
    }
    run = ray.remote(_task_run).options(**task)
    plan = ray.remote(_task_plan_chunks).options(num_cpus=0.1, max_retries=options.retries)
    merge = ray.remote(_task_merge).options(num_cpus=0.1, max_retries=options.retries)

    outcomes = [BagOutcome(str(job.input), str(job.output)) for job in jobs]
    chunk_reports: dict[int, list[Any]] = {}
    chunks_left: dict[int, int] = {}
    pending: dict[Any, tuple[str, int, int]] = {}  # ref -> (kind, bag, chunk)
    for i, job in enumerate(jobs):
        if options.chunk_seconds > 0:
            pending[plan.remote(job, options.chunk_seconds)] = ("plan", i, -1)
        else:
            pending[run.remote(job)] = ("bag", i, -1)

    finished = 0

    def fail(i: int, failure: _Failed) -> None:
        nonlocal finished
        if not outcomes[i].error:
            outcomes[i].error = failure.reason
            outcomes[i].input_problem = failure.input_problem
            finished += 1
            on_event(f"[{finished}/{len(jobs)}] FAILED {outcomes[i].message}", True)
            # Cancel the bag's other chunks: the bag has failed already.
            for ref, (_, j, _) in list(pending.items()):
                if j == i:
                    ray.cancel(ref, force=True)
                    del pending[ref]
            shutil.rmtree(_chunks_dir(jobs[i]), ignore_errors=True)

    def done(i: int, report: Any) -> None:
        nonlocal finished
        outcomes[i].report = report
        finished += 1
        chunks = outcomes[i].chunks
        took = (
            f"{chunks} chunks, {report.wall_s:.1f} s of task time"
            if chunks > 1
            else f"in {report.wall_s:.1f} s"
        )
        on_event(
            f"[{finished}/{len(jobs)}] done {outcomes[i].input} -> {outcomes[i].output}: "
            f"{report.frames_out} frame(s) {took}",
            True,
        )

    interrupted = False
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                if ref not in pending:  # cancelled by fail() of the same bag
                    continue
                kind, i, c = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    value = _Failed(_reason(exc, options.retries))
                if isinstance(value, _Failed):
                    if kind == "chunk":
                        value = dataclasses.replace(
                            value, reason=f"{value.reason} (chunk {c + 1} of {outcomes[i].chunks})"
                        )
                    fail(i, value)
                elif kind == "plan":
                    outcomes[i].chunks = len(value)
                    chunks_left[i] = len(value)
                    chunk_reports[i] = [None] * len(value)
                    for c2, (lo, hi) in enumerate(value):
                        part = _chunk_job(jobs[i], c2, lo, hi, options.warmup_s)
                        pending[run.remote(part)] = ("chunk", i, c2)
                elif kind == "chunk":
                    chunk_reports[i][c] = value
                    chunks_left[i] -= 1
                    on_event(
                        f"  {outcomes[i].input}: chunk {c + 1} of {outcomes[i].chunks} done, "
                        f"{value.frames_out} frame(s) in {value.wall_s:.1f} s",
                        False,
                    )
                    if chunks_left[i] == 0:
                        parts = [str(_part_path(jobs[i], k)) for k in range(outcomes[i].chunks)]
                        pending[merge.remote(jobs[i], parts, chunk_reports[i])] = ("merge", i, -1)
                else:  # a whole bag, or the merge of its chunks
                    done(i, value)
    except KeyboardInterrupt:
        interrupted = True
        for ref in pending:
            ray.cancel(ref, force=True)
        for i, outcome in enumerate(outcomes):
            if not outcome.ok and not outcome.error:
                outcome.error = "interrupted (Ctrl-C)"
                shutil.rmtree(_chunks_dir(jobs[i]), ignore_errors=True)
    return FleetReport(outcomes, time.perf_counter() - start, options.address, interrupted, cluster)


# ============================================================================ CLI hook
def main(args: argparse.Namespace, jobs: Sequence[Any]) -> int:
    """The bag tool with ``--ray``: run ``jobs`` on Ray, print progress and one summary.

    Exit codes (as the local tool's): 0 every bag done; 2 a usage, cluster, input or output
    problem (a corrupt bag, an existing output); 1 a bag failed otherwise (a crash after the
    retries); 130 Ctrl-C.
    """
    try:
        options = FleetOptions.from_args(args)
        _check_settings(args, jobs, options)
        import_ray()
    except FleetError as exc:
        print(f"dpt_bag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bar = _progress_bar(len(jobs), options.quiet)

    def on_event(line: str, bag_finished: bool) -> None:
        if bar is not None:
            bar.update(int(bag_finished))
            bar.write(line, file=sys.stderr)
        elif not options.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        report = run_on_ray(jobs, options, on_event)
    except FleetError as exc:
        print(f"dpt_bag: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # while Ray was starting or stopping; run_on_ray shut it down
        print("dpt_bag: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    if report.failed:
        print(report.summary(), file=sys.stderr, flush=True)
    elif not options.quiet:
        print(report.summary(), flush=True)
    report_path = getattr(args, "report", None)
    if report_path:
        _write_json(Path(report_path), report.to_dict(str(getattr(args, "out", ""))))
    if report.interrupted:
        return EXIT_INTERRUPTED
    if any(o.input_problem for o in report.failed):
        return EXIT_USAGE  # as the local tool: 2 for input and output problems
    return EXIT_FAILED if report.failed else EXIT_OK


def _check_settings(args: argparse.Namespace, jobs: Sequence[Any], options: FleetOptions) -> None:
    """Settings that cannot work on Ray. GPUs come from Ray's reservation, so the device
    setting must agree with it; a preview video is one per chunk, not one per bag."""
    if options.chunk_seconds > 0 and any("preview" in job.options.exports for job in jobs):
        raise FleetError(
            "--export preview with --chunk-seconds: every chunk would make its own preview and "
            "contact sheet; run the bag without --chunk-seconds for its preview"
        )
    if "," in str(getattr(args, "device", None) or ""):
        raise FleetError(
            "--device lists several devices; with --ray, Ray places tasks on GPUs: give "
            "--device cuda --gpus-per-task N"
        )
    devices = {str(job.options.settings.node.model.device) for job in jobs}
    on_cuda = any(d.startswith("cuda") for d in devices)
    if options.gpus_per_task > 0 and not on_cuda:
        raise FleetError(
            "--gpus-per-task reserves GPUs, but the device is the CPU: add --device cuda"
        )
    if on_cuda and options.gpus_per_task == 0:
        raise FleetError(
            "--device cuda with --ray needs --gpus-per-task N (Ray hides GPUs from tasks that "
            "reserve none)"
        )


def _progress_bar(total: int, quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="bag", desc="bags", file=sys.stderr)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from dpt_ros.export import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
