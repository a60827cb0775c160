"""dpt_ros.export: 16-bit depth PNGs that never saturate, PNG text that says what a file holds,
atomic writes with the user's umask (issue 10, section 5)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from dpt_ros.export import (
    ExportError,
    atomic_output,
    depth_file_names,
    depth_to_png16,
    model_metadata,
    read_png_metadata,
    write_depth_png,
    write_labels_png,
)


def test_millimetres_write_what_does_not_fit_as_invalid_and_count_it() -> None:
    depth = np.array([[0.5, 65.535, 65.5356, 78.0], [np.nan, np.inf, -1.0, 0.0]])
    image, too_far = depth_to_png16(depth, "mm")
    # 65.5356 m rounds to 65536 mm: one past the top; 78 m must not read back as 65.535 m
    np.testing.assert_array_equal(image, [[500, 65535, 0, 0], [0, 0, 0, 0]])
    assert image.dtype == np.uint16 and too_far == 2  # invalid inputs are not "too far"


def test_kitti_format_holds_256_metres() -> None:
    depth = np.array([[78.0, 1.0 / 256, 255.99, 256.0]])
    image, too_far = depth_to_png16(depth, "kitti")
    np.testing.assert_array_equal(image, [[19968, 1, 65533, 0]])
    assert too_far == 1


def test_depth_png_round_trip_and_text(tmp_path: Path) -> None:
    depth = np.array([[1.234, 78.0], [np.nan, 12.0]], np.float32)
    path = tmp_path / "d_depth_mm.png"
    lost = write_depth_png(path, depth, metadata={"dpt_ros.model": "dpt_hybrid_kitti"})
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, [[1234, 0], [0, 12000]])
    meta = read_png_metadata(path)
    assert lost == 1 and meta["dpt_ros.out_of_range_pixels"] == "1"
    assert meta["dpt_ros.content"] == "metric depth" and meta["dpt_ros.invalid"] == "0"
    assert meta["dpt_ros.scale"].startswith("millimetres")
    assert meta["dpt_ros.model"] == "dpt_hybrid_kitti"


def test_labels_png_says_what_it_holds(tmp_path: Path) -> None:
    write_labels_png(tmp_path / "l.png", np.array([[0, 3]], np.uint8), {"dpt_ros.model": "x"})
    meta = read_png_metadata(tmp_path / "l.png")
    assert "ADE20K" in meta["dpt_ros.content"] and meta["dpt_ros.model"] == "x"
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "l.png"), -1), [[0, 3]])


def test_unknown_png_format_is_an_error() -> None:
    with pytest.raises(ExportError, match="png_format"):
        depth_to_png16(np.ones((2, 2)), "cm")


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_atomic_output_respects_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_output(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]


def test_file_names_say_inverse_or_metric() -> None:
    assert depth_file_names("f", metric=False) == {
        "npy": "f_inverse_depth.npy",
        "png": "f_inverse_depth.png",
        "color": "f_inverse_depth_color.png",
    }
    metric = depth_file_names("f", metric=True, png_format="kitti")
    assert metric == {
        "npy": "f_depth_m.npy",
        "png": "f_depth_kitti.png",
        "color": "f_depth_color.png",
    }
    with pytest.raises(ExportError, match="png_format"):
        depth_file_names("f", metric=True, png_format="cm")


def test_model_metadata_says_whether_the_weights_were_random() -> None:
    assert model_metadata("dpt_hybrid", "random")["dpt_ros.random_weights"].startswith("yes")
    released = model_metadata("dpt_hybrid_kitti", None)
    assert released == {
        "dpt_ros.model": "dpt_hybrid_kitti",
        "dpt_ros.weights": "released checkpoint",
        "dpt_ros.random_weights": "no",
    }
