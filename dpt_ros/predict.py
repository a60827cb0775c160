"""Depth (or segmentation) for image files: ``python -m dpt_ros.predict IMAGE... --out DIR``.

For each image it writes, next to nothing else but into ``--out``:

- ``<stem>_depth.npy``: float32 depth at the image size (relative inverse depth, or metres
  for the metric models);
- ``<stem>_depth.png``: the same as a 16-bit PNG (relative: min-max scaled to 0..65535, as the
  authors' ``write_depth`` does; metric: millimetres);
- ``<stem>_depth_color.png``: a colour preview;
- for segmentation models ``<stem>_labels.png`` (class ids, 0 = other) and
  ``<stem>_segmentation.png`` (ADE20K colours over the image).

Files are written to a temporary name and renamed, so an interrupted run never leaves a
truncated output, and an output path that is one of the inputs is refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

LOG = logging.getLogger("dpt_ros.predict")


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as uint8 RGB, with an error that names the file."""
    if not path.is_file():
        raise FileNotFoundError(f"input image not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image {path} (not an image format OpenCV reads)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def depth_to_png16(depth: np.ndarray, metric: bool) -> np.ndarray:
    """uint16 image of a depth map: millimetres when metric, else min-max scaled (NaN -> 0)."""
    finite = np.isfinite(depth)
    out = np.zeros(depth.shape, np.uint16)
    if not finite.any():
        return out
    if metric:
        out[finite] = np.clip(np.rint(depth[finite] * 1000.0), 0, 65535).astype(np.uint16)
        return out
    lo, hi = float(depth[finite].min()), float(depth[finite].max())
    if hi > lo:
        scaled = (depth[finite] - lo) / (hi - lo) * 65535.0
        out[finite] = np.rint(scaled).astype(np.uint16)
    return out


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_png(path: Path, image: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"OpenCV could not write {path}")

    write_atomically(path, write)


def _write_rgb_png(path: Path, rgb: np.ndarray) -> None:
    _write_png(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    write_atomically(path, write)


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
        help="'random' (offline, untrained), a registry name, a checkpoint path or URL, or a "
        "Hugging Face DPT folder; default: the released checkpoint of --model",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--net-size", type=int, default=384, help="network input size (px)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from dpt_ros.engine import Engine, EngineConfig
    from dpt_ros.viz import colorize_depth, colorize_inverse_depth, overlay

    inputs = [p.resolve() for p in args.images]
    args.out.mkdir(parents=True, exist_ok=True)
    out_dir = args.out.resolve()

    is_segmentation = args.model.endswith("_ade20k")
    config = EngineConfig(
        model=None if is_segmentation else args.model,
        weights=None if is_segmentation else args.weights,
        segmentation_model=args.model if is_segmentation else None,
        segmentation_weights=args.weights if is_segmentation else None,
        device=args.device,
        precision=args.precision,
        net_size=args.net_size,
    )
    engine = Engine(config)
    if args.weights == "random":
        LOG.warning("random weights: the outputs show the pipeline, not a real depth estimate")

    for path in inputs:
        stem = path.stem
        targets = [out_dir / f"{stem}{suffix}" for suffix in _SUFFIXES]
        clash = set(targets) & set(inputs)
        if clash:
            first = sorted(clash)[0]
            raise ValueError(f"refusing to overwrite input {first}: choose another --out")
        rgb = read_rgb(path)
        pred = engine.infer(rgb, want_depth=not is_segmentation, want_labels=is_segmentation)
        if pred.depth is not None:
            metric = pred.depth_semantics == "metric_depth"
            _write_npy(out_dir / f"{stem}_depth.npy", pred.depth.astype(np.float32))
            _write_png(out_dir / f"{stem}_depth.png", depth_to_png16(pred.depth, metric))
            colorize = colorize_depth if metric else colorize_inverse_depth
            preview = colorize(pred.depth)
            _write_rgb_png(out_dir / f"{stem}_depth_color.png", preview)
        if pred.labels is not None:
            _write_png(out_dir / f"{stem}_labels.png", pred.labels)
            blended = overlay(rgb, pred.labels)
            _write_rgb_png(out_dir / f"{stem}_segmentation.png", blended)
        timing = ", ".join(f"{k} {v:.1f} ms" for k, v in pred.timings.items())
        print(f"{path.name} -> {out_dir}/{stem}_* ({rgb.shape[1]}x{rgb.shape[0]}; {timing})")
    return 0


_SUFFIXES = (
    "_depth.npy",
    "_depth.png",
    "_depth_color.png",
    "_labels.png",
    "_segmentation.png",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return run(args)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
