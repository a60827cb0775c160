"""``python -m dpt_ros.bag IN [IN ...] --out OUT [options]`` (console script ``dpt_bag``).

Parses the command line into ``BagJob``s and runs them: one after the other, or ``--workers N``
at a time in separate processes (each with its own engine; ``--device cuda:0,cuda:1`` spreads
them). Every input or usage problem is one line on stderr and exit code 2; a model that cannot
load is exit code 1. With ``dpt_ros.fleet`` importable, its ``add_arguments(parser)`` adds the
Ray options and ``main(args, jobs)`` runs the jobs when ``--ray`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpt_ros.bag.errors import BagError, BagInputError, BagOutputError
from dpt_ros.bag.exports import EXPORTS
from dpt_ros.bag.job import BagJob
from dpt_ros.bag.options import BagOptions
from dpt_ros.bag.report import JobReport
from dpt_ros.config import BagSettings, spec_by_name, update_settings

PROG = "dpt_bag"
RANDOM_WEIGHTS_NOTE = (
    "random weights: the network has not learnt depth, so its output is noise with no depth "
    "order and no LiDAR scale can be fitted (expected; use --weights '' or DPT_WEIGHTS="
    "dpt_hybrid for the released checkpoint)"
)


def _fleet() -> Any:
    try:
        from dpt_ros import fleet  # the Ray front end (optional)
    except ImportError:
        return None
    return fleet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Depth, point clouds and segmentation for recorded bags (rosbag2 sqlite3/"
        "MCAP, ROS 1): writes new bags with the input topics plus the outputs.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="rosbag2 folder or ROS 1 .bag")
    parser.add_argument(
        "--out",
        required=True,
        metavar="OUT",
        help="output bag (one input) or folder of output bags (several inputs)",
    )
    settings = parser.add_argument_group("settings (the node's parameters)")
    settings.add_argument(
        "--config",
        metavar="FILE",
        help="node parameter file (ROS params-file YAML, e.g. config/kitti.yaml)",
    )
    for flag, name in (
        ("--model", "model"),
        ("--weights", "weights"),
        ("--segmentation-model", "segmentation_model"),
        ("--segmentation-weights", "segmentation_weights"),
        ("--precision", "precision"),
        ("--net-size", "net_size"),
    ):
        description = spec_by_name(BagSettings)[name].description
        settings.add_argument(flag, dest=name, metavar=name.upper(), help=description)
    settings.add_argument(
        "--device", help="cpu, cuda, cuda:N, or a comma list spread over --workers"
    )
    settings.add_argument("--batch-size", type=int, help="frames per inference batch")
    topics = parser.add_argument_group("topics (automatic when the bag has one of a kind)")
    topics.add_argument(
        "--image-topic",
        action="append",
        default=[],
        help="image topic (Image or CompressedImage); repeat for several cameras",
    )
    topics.add_argument(
        "--camera-info-topic",
        action="append",
        default=[],
        help="CameraInfo topic, one per --image-topic (default: beside it)",
    )
    lidar = topics.add_mutually_exclusive_group()
    lidar.add_argument("--lidar-topic", help="LiDAR PointCloud2 topic")
    lidar.add_argument("--no-lidar", action="store_true", help="do not use LiDAR")
    out = parser.add_argument_group("outputs")
    out.add_argument("--storage", choices=("mcap", "sqlite3"), help="output storage (mcap)")
    out.add_argument(
        "--export",
        action="append",
        default=[],
        metavar="KIND",
        help=f"also write files: {', '.join(EXPORTS)} (comma list or repeated)",
    )
    out.add_argument("--png-format", choices=("mm", "kitti"), help="depth PNG: mm or kitti")
    out.add_argument("--report", metavar="FILE", help="write a JSON report")
    run = parser.add_argument_group("running")
    run.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run")
    run.add_argument(
        "--skip-bad", action="store_true", help="go on past unreadable parts of a bag (reported)"
    )
    run.add_argument("--workers", type=int, default=1, help="bags processed in parallel")
    run.add_argument(
        "--segment-frames",
        type=int,
        default=50,
        help="images per resumable segment (resume granularity)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    fleet = _fleet()
    if fleet is not None and hasattr(fleet, "add_arguments"):
        fleet.add_arguments(parser)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from dpt_ros.config import ConfigError, parse_parameter_text

    values: dict[str, Any] = {}
    for name in (
        "model",
        "weights",
        "segmentation_model",
        "segmentation_weights",
        "precision",
        "net_size",
    ):
        text = getattr(args, name)
        if text is not None:
            try:
                values[name] = parse_parameter_text(name, text, BagSettings)
            except ConfigError as error:
                raise BagInputError(str(error)) from None
    if args.device is not None:
        values["device"] = args.device.split(",")[0].strip()
    for name in ("storage", "png_format", "batch_size"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return values


def jobs_from_args(args: argparse.Namespace) -> list[BagJob]:
    """One BagJob per input; OUT is the bag for one input, a folder of bags for several."""
    exports = frozenset(k.strip() for text in args.export for k in text.split(",") if k.strip())
    options = BagOptions.from_config(
        args.config,
        _overrides(args),
        image_topics=tuple(args.image_topic),
        camera_info_topics=tuple(args.camera_info_topic),
        lidar_topic="" if args.no_lidar else args.lidar_topic,
        exports=exports,
        skip_bad=args.skip_bad,
        segment_frames=args.segment_frames,
    )
    if args.workers < 1:
        raise BagInputError(f"--workers must be >= 1, got {args.workers}")
    inputs = [Path(p) for p in args.inputs]
    out = Path(args.out)
    if len(inputs) == 1:
        outputs = [out]
    else:
        names = [p.stem if p.suffix == ".bag" else p.name for p in inputs]
        if len(set(names)) != len(names):
            raise BagInputError(
                f"several inputs share a name ({', '.join(sorted(names))}): their outputs in "
                f"{out} would collide; process them separately"
            )
        if out.exists() and not out.is_dir():
            raise BagOutputError(f"{out} exists and is not a folder (several inputs)")
        out.mkdir(parents=True, exist_ok=True)
        outputs = [out / name for name in names]
    return [
        BagJob(i, o, options, overwrite=args.overwrite, resume=args.resume)
        for i, o in zip(inputs, outputs, strict=True)
    ]


def _run_one(job: BagJob, device: str | None, quiet: bool) -> JobReport:
    if device is not None and device != job.options.settings.node.model.device:
        settings = update_settings(job.options.settings, {"device": device})
        job.options = dataclasses.replace(job.options, settings=settings)
    plan = job.plan()  # every input problem before the model loads
    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=plan.image_count, unit="frame", desc=job.input.name, leave=False)
    try:
        return job.run(progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


def _worker(job: BagJob, device: str | None) -> tuple[dict | None, str | None, int]:
    """Runs in a worker process: (report, error message, exit code)."""
    try:
        report = _run_one(job, device, quiet=True)
    except BagError as error:
        return None, str(error), 2
    except Exception as error:  # a model that cannot load, a failing plug-in
        return None, f"{job.input}: {type(error).__name__}: {error}", 1
    return {**report.to_dict(), "scales": report.scales}, None, 0


def _report_from(data: dict) -> JobReport:
    fields = {k: v for k, v in data.items() if k in JobReport.__dataclass_fields__}
    return JobReport(**fields)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        jobs = jobs_from_args(args)
    except BagError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    fleet = _fleet()
    if fleet is not None and getattr(args, "ray", None) is not None:
        return int(fleet.main(args, jobs))
    devices = [d.strip() for d in args.device.split(",")] if args.device else [None]
    reports: list[JobReport] = []
    failures: list[tuple[str, int]] = []
    if args.workers == 1 or len(jobs) == 1:
        for i, job in enumerate(jobs):
            try:
                reports.append(_run_one(job, devices[i % len(devices)], args.quiet))
            except BagError as error:
                failures.append((str(error), 2))
            except KeyboardInterrupt:
                print(f"{PROG}: interrupted; continue with --resume", file=sys.stderr)
                return 130
            except Exception as error:  # model loading, plug-ins: said in one line
                failures.append((f"{job.input}: {type(error).__name__}: {error}", 1))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: torch and its thread pools do not survive fork well
        context = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        try:
            with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
                futures = [
                    pool.submit(_worker, job, devices[i % len(devices)])
                    for i, job in enumerate(jobs)
                ]
                for future in futures:
                    data, message, code = future.result()
                    if message is not None:
                        failures.append((message, code))
                    else:
                        reports.append(_report_from(data))
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted; continue with --resume", file=sys.stderr)
            return 130
    random_weights = jobs[0].options.settings.node.model.weights == "random"
    for report in reports:
        if random_weights and report.fits_ok == 0 and RANDOM_WEIGHTS_NOTE not in report.notes:
            report.notes.append(RANDOM_WEIGHTS_NOTE)
    if not args.quiet:
        for report in reports:
            print("\n".join(report.summary()))
    for message, _ in failures:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    if args.report:
        total = JobReport.merge(reports, input=",".join(args.inputs), output=args.out)
        data = {
            "bags": [r.to_dict() for r in reports],
            "failed": [m for m, _ in failures],
            "total": total.to_dict(),
        }
        Path(args.report).write_text(json.dumps(data, indent=1))
    if failures:
        return max(code for _, code in failures)
    return 0
