"""python -m dpt_ros.predict: outputs, formats, and that inputs are never overwritten."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dpt_ros.export import depth_to_png16
from dpt_ros.predict import main

STANDIN = "tests.ros_helpers:gray_inverse_depth"  # relative depth = grey level in [0, 1]


def write_gradient(path: Path, width: int = 160, height: int = 96) -> np.ndarray:
    grey = np.tile(np.linspace(20, 230, width), (height, 1)).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    cv2.imwrite(str(path), rgb)
    return grey


def run(*args: object) -> int:
    return main([str(a) for a in args] + ["--model", STANDIN, "--net-size", "64"])


def test_writes_depth_npy_png16_and_preview(tmp_path: Path) -> None:
    grey = write_gradient(tmp_path / "scene.png")
    out = tmp_path / "out"
    assert run(tmp_path / "scene.png", "--out", out) == 0

    depth = np.load(out / "scene_inverse_depth.npy")
    assert depth.dtype == np.float32 and depth.shape == grey.shape
    # The stand-in returns the grey level; resizing to the network and back keeps a gradient.
    np.testing.assert_allclose(depth, grey / 255.0, atol=0.01)

    png = cv2.imread(str(out / "scene_inverse_depth.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == grey.shape
    assert png.min() == 0 and png.max() == 65535  # relative depth is min-max scaled
    assert np.all(np.diff(png[grey.shape[0] // 2].astype(int)) >= -1)  # monotonic like the input

    preview = cv2.imread(str(out / "scene_inverse_depth_color.png"), cv2.IMREAD_UNCHANGED)
    assert preview.shape == (*grey.shape, 3)
    assert sorted(p.name for p in out.iterdir()) == [
        "scene_inverse_depth.npy",
        "scene_inverse_depth.png",
        "scene_inverse_depth_color.png",
    ]  # no temporary files left behind


def test_refuses_to_overwrite_an_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_gradient(tmp_path / "a.png")
    victim = tmp_path / "a_inverse_depth.png"
    write_gradient(victim, 64, 32)
    before = victim.read_bytes()
    assert run(tmp_path / "a.png", victim, "--out", tmp_path) == 2
    assert "refusing to overwrite input" in capsys.readouterr().err
    assert victim.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "message"), [(None, "input image not found"), (b"not an image", "cannot decode")]
)
def test_bad_inputs_name_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture, content: bytes | None, message: str
) -> None:
    path = tmp_path / "broken.png"
    if content is not None:
        path.write_bytes(content)
    assert run(path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err and "broken.png" in err


def test_png16_units() -> None:
    metric = np.array([[0.5, 2.0], [np.nan, 70.0]], np.float32)
    image, too_far = depth_to_png16(metric, "mm")  # 70 m does not fit: 0 (invalid), counted
    np.testing.assert_array_equal(image, [[500, 2000], [0, 0]])
    assert too_far == 1
