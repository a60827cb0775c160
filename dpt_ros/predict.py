"""Depth (or segmentation) for image files: ``python -m dpt_ros.predict IMAGE... --out DIR``.

For each image it writes into ``--out`` (file names say what the pixels are):

- relative models (dpt_hybrid, dpt_large, dpt_base): ``<stem>_inverse_depth.npy`` (float32
  relative inverse depth, no unit, larger is closer), ``<stem>_inverse_depth.png`` (16-bit,
  min-max scaled as the authors' ``write_depth`` does; min and max in the PNG's text) and
  ``<stem>_inverse_depth_color.png`` (a colour preview);
- metric models (dpt_hybrid_kitti, dpt_hybrid_nyu): ``<stem>_depth_m.npy`` (float32 metres),
  ``<stem>_depth_mm.png`` (16-bit millimetres) or, with ``--png-format kitti``,
  ``<stem>_depth_kitti.png`` (metres x 256, KITTI's format), and ``<stem>_depth_color.png``.
  A depth that does not fit the PNG is written 0 (invalid) and counted, never saturated;
- segmentation models (``*_ade20k``): ``<stem>_labels.png`` (class ids, 0 = other) and
  ``<stem>_segmentation.png`` (ADE20K colours over the image).

Every PNG carries text metadata (what it holds, the scale, the model, the weights and whether
they were random). All input paths are checked before the model loads; an image that still
fails is reported and the others are processed (exit code 2 at the end, with a summary). Files
are written atomically with the user's umask (``dpt_ros.export``); an output path that is one
of the inputs is refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from dpt_ros.config import InputSettings
from dpt_ros.export import (
    PNG_FORMATS,
    ExportError,
    depth_file_names,
    model_metadata,
    write_color_png,
    write_depth_png,
    write_inverse_depth_png,
    write_labels_png,
    write_npy,
)
from dpt_ros.messages import image_file_size_problem
from dpt_ros.pipeline import flat_output_problem
from dpt_ros.precision import PRECISION_CHOICES

LOG = logging.getLogger("dpt_ros.predict")
INPUT_MULTIPLE = 32
MAX_IMAGE_PIXELS = InputSettings().max_image_pixels  # the node's limit (8K UHD)


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as uint8 RGB, with an error that names the file."""
    if not path.is_file():
        raise FileNotFoundError(f"input image not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        known = cv2.haveImageReader(str(path))  # a known signature: the data itself is broken
        why = "corrupt or truncated data" if known else "not an image format OpenCV reads"
        raise ValueError(f"cannot decode image {path} ({why})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def input_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an input image (missing, a folder, unreadable, not an image
    format OpenCV knows by its signature), or None. Cheap: reads the file's first bytes only."""
    if not path.exists():
        return f"input image not found: {path}"
    if not path.is_file():
        return f"input {path} is not a file"
    if not os.access(path, os.R_OK):
        return f"input image {path} is not readable (permissions)"
    if path.stat().st_size == 0:
        return f"input image {path} is empty (0 bytes)"
    if not cv2.haveImageReader(str(path)):
        return f"cannot decode image {path} (not an image format OpenCV reads)"
    too_large = image_file_size_problem(path, MAX_IMAGE_PIXELS)  # before decoding allocates it
    if too_large:
        return f"input image {path}: {too_large}"
    return None


def net_size_arg(text: str) -> int | str:
    """``--net-size``: 'auto' or a positive multiple of 32 (the network needs multiples of 32)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer, got {text!r}") from None
    if value <= 0 or value % INPUT_MULTIPLE:
        raise argparse.ArgumentTypeError(
            f"must be a positive multiple of {INPUT_MULTIPLE} (as the node requires), got {value}"
        )
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dpt_ros.predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("images", nargs="+", type=Path, help="input image files")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument(
        "--model",
        default="dpt_hybrid",
        help="model name (dpt_hybrid, dpt_large, dpt_base, *_ade20k, dpt_hybrid_kitti, "
        "dpt_hybrid_nyu) or package.module:callable",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="'random' (offline, untrained, seeded: the same output every run), a registry "
        "name, a checkpoint path or URL, or a Hugging Face DPT folder; default: the released "
        "checkpoint of --model",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_CHOICES,
        help="auto: bf16 on a CPU with native bf16, else fp32; fp16 on CUDA (default)",
    )
    parser.add_argument(
        "--net-size",
        type=net_size_arg,
        default="auto",
        help="network input size: 'auto' (default) = the model's own size and the authors' "
        "'minimal' resize (384 for dpt_hybrid/large/base, 1216x352 KITTI, 640x480 NYU, 480 "
        "ADE20K); N = both sides at least N pixels (a multiple of 32)",
    )
    parser.add_argument(
        "--png-format",
        default="mm",
        choices=tuple(PNG_FORMATS),
        help="metric depth PNG: mm = millimetres (up to 65.535 m), kitti = metres x 256 (up to "
        "256 m, KITTI's format); relative inverse depth is always min-max scaled",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def _outputs(stem: str, segmentation: bool, metric: bool, png_format: str) -> dict[str, str]:
    """Output kind -> file name for one input."""
    if segmentation:
        return {"labels": f"{stem}_labels.png", "overlay": f"{stem}_segmentation.png"}
    return depth_file_names(stem, metric, png_format)


class _Job:
    """One run: the engine and what every output file says about its origin."""

    def __init__(self, args: argparse.Namespace) -> None:
        from dpt_ros.engine import Engine, EngineConfig

        self.args = args
        self.segmentation = args.model.endswith("_ade20k")
        config = EngineConfig(
            model=None if self.segmentation else args.model,
            weights=None if self.segmentation else args.weights,
            segmentation_model=args.model if self.segmentation else None,
            segmentation_weights=args.weights if self.segmentation else None,
            device=args.device,
            precision=args.precision,
            net_size=args.net_size,
        )
        self.engine = Engine(config)
        self.metric = self.engine.depth_semantics == "metric_depth"
        if args.weights == "random":
            LOG.warning("random weights: the outputs show the pipeline, not a real estimate")
        self.metadata = {
            **model_metadata(args.model, args.weights),
            "dpt_ros.net_size": str(args.net_size),
        }

    def process(self, path: Path, out_dir: Path) -> str:
        """Predict and write one image; returns a line for the user."""
        from dpt_ros.viz import colorize_depth, colorize_inverse_depth, overlay

        rgb = read_rgb(path)
        net_h, net_w = self.engine.resize_rule.input_size(*rgb.shape[:2])
        args, meta = (
            self.args,
            {
                **self.metadata,
                "dpt_ros.source": path.name,
                "dpt_ros.network_input": f"{net_w}x{net_h} ({self.engine.resize_rule.method})",
            },
        )
        pred = self.engine.infer(
            rgb, want_depth=not self.segmentation, want_labels=self.segmentation
        )
        names = _outputs(path.stem, self.segmentation, self.metric, args.png_format)
        notes = []
        if pred.labels is not None:
            write_labels_png(out_dir / names["labels"], pred.labels, meta)
            preview = {**meta, "dpt_ros.content": "ADE20K colours over the image (a picture)"}
            write_color_png(out_dir / names["overlay"], overlay(rgb, pred.labels), preview)
            warning = None  # one class everywhere can be a real answer (a wall, the sky)
        else:
            depth = pred.depth.astype(np.float32)
            write_npy(out_dir / names["npy"], depth)
            what = "metric depth" if self.metric else "relative inverse depth"
            preview = {**meta, "dpt_ros.content": f"colour preview of the {what} (a picture)"}
            if self.metric:
                lost = write_depth_png(
                    out_dir / names["png"], depth, png_format=args.png_format, metadata=meta
                )
                if lost:
                    hint = (
                        "; --png-format kitti holds up to 256 m" if args.png_format == "mm" else ""
                    )
                    notes.append(
                        f"{lost} pixels beyond the {args.png_format} PNG's range written as 0 "
                        f"(invalid){hint}"
                    )
                write_color_png(out_dir / names["color"], colorize_depth(depth), preview)
            else:
                write_inverse_depth_png(out_dir / names["png"], depth, meta)
                write_color_png(out_dir / names["color"], colorize_inverse_depth(depth), preview)
            warning = flat_output_problem(depth, f"the {what}")
        if warning:
            LOG.warning("%s: %s", path.name, warning)
            notes.append(warning)
        size = f"{rgb.shape[1]}x{rgb.shape[0]}"
        line = f"{path.name} -> {out_dir}/{', '.join(names.values())} ({size})"
        return line + "".join(f"; {note}" for note in notes)


def run(args: argparse.Namespace) -> int:
    inputs = [p.resolve() for p in args.images]
    # Everything that can be checked without the model is checked before it loads.
    problems = {path: problem for path in inputs if (problem := input_problem(path))}
    out_dir = args.out.resolve()
    segmentation = args.model.endswith("_ade20k")
    for path in inputs:
        # Either kind of depth model's names (which one it is is known once it loads).
        names = {
            out_dir / name
            for metric in (False, True)
            for name in _outputs(path.stem, segmentation, metric, args.png_format).values()
        }
        clash = names & set(inputs)
        if clash:
            raise ValueError(
                f"refusing to overwrite input {sorted(clash)[0]}: choose another --out"
            )
    for problem in problems.values():
        print(f"error: {problem}", file=sys.stderr)
    todo = [path for path in inputs if path not in problems]
    if not todo:
        print(
            f"error: none of the {len(inputs)} inputs can be read; no model loaded", file=sys.stderr
        )
        return 2
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {args.out} is a file, not a folder")
    job = _Job(args)  # before the folder: a model that cannot load leaves nothing behind
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create --out {args.out}: {error.strerror or error}") from None
    failed = dict(problems)
    for done, path in enumerate(todo):
        try:
            print(job.process(path, out_dir))
        except (ValueError, OSError, ExportError) as error:
            print(f"error: {error}", file=sys.stderr)
            failed[path] = str(error)
        except KeyboardInterrupt:  # files are written atomically: the finished ones are whole
            print(
                f"interrupted: {done - len(failed) + len(problems)} of {len(inputs)} images "
                f"done; {path.name} and the rest not written",
                file=sys.stderr,
            )
            return 130
    if failed:
        print(
            f"{len(inputs) - len(failed)} of {len(inputs)} images done; failed: "
            + ", ".join(path.name for path in inputs if path in failed),
            file=sys.stderr,
        )
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return run(args)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while the model loads: nothing written yet
        print("interrupted before any image was done", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
