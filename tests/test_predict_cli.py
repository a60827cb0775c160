"""python -m dpt_ros.predict as a user meets it (issue 10, section 5): inputs checked before the
model loads, one bad file does not stop the rest, files say what they hold, the user's umask,
net sizes the network can take, seeded random weights and a warning for a flat output."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dpt_ros.export import read_png_metadata
from dpt_ros.model import factory
from dpt_ros.model.dpt import DPT, DPTConfig
from dpt_ros.predict import main
from tests.ros_helpers import jpeg_claiming

RELATIVE = "tests.ros_helpers:gray_inverse_depth"  # relative inverse depth = grey level in [0, 1]
METRIC = "tests.test_predict_cli:grey_metres"  # metres = grey level * 100 (0 .. 100 m)
FLAT = "tests.test_predict_cli:flat_depth"


def grey_metres() -> torch.nn.Module:
    class GreyMetres(torch.nn.Module):
        output_semantics = "metric_depth"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.mean(dim=1) + 1.0) * 50.0

    return GreyMetres()


def flat_depth() -> torch.nn.Module:
    class Flat(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x[:, 0])

    return Flat()


def interrupting_depth() -> torch.nn.Module:
    """Ctrl-C arriving during the second image's forward."""

    class Interrupting(torch.nn.Module):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Interrupting.calls += 1
            if Interrupting.calls == 2:
                raise KeyboardInterrupt
            return x.mean(dim=1) + 2.0

    return Interrupting()


def write_image(path: Path, left: int = 20, right: int = 230) -> None:
    grey = np.tile(np.linspace(left, right, 96), (64, 1)).astype(np.uint8)
    cv2.imwrite(str(path), np.repeat(grey[:, :, None], 3, axis=2))


def run(*args: object, model: str = RELATIVE) -> int:
    return main([str(a) for a in args] + ["--model", model, "--net-size", "64"])


def test_inputs_are_checked_before_the_model_loads(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    # A model that cannot even be imported: reaching it would change the error.
    code = run(tmp_path / "missing.png", tmp_path / "notes.txt", "--out", tmp_path / "o",
               model="tests.no_such_module:nothing")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "input image not found" in err and "missing.png" in err
    assert "cannot decode image" in err and "notes.txt" in err
    assert "no model loaded" in err and "no_such_module" not in err
    assert not (tmp_path / "o").exists()


def test_empty_and_oversized_images_are_refused_before_decoding(tmp_path: Path, capsys) -> None:
    """A 0-byte file, and a 2 KB JPEG whose SOF claims 16000x16000 (decoding it took 52 s and
    9.7 GB), are refused from their first bytes, before the model loads."""
    (tmp_path / "empty.png").write_bytes(b"")
    write_image(tmp_path / "small.png")
    small = cv2.imread(str(tmp_path / "small.png"))
    (tmp_path / "huge.jpg").write_bytes(jpeg_claiming(small, 16000, 16000))
    code = run(tmp_path / "empty.png", tmp_path / "huge.jpg", "--out", tmp_path / "o",
               model="tests.no_such_module:nothing")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "empty.png is empty (0 bytes)" in err
    assert "huge.jpg" in err and "16000x16000" in err and "max_image_pixels" in err
    assert "no model loaded" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_or_cannot_be_made_is_one_line(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    assert run(tmp_path / "a.png", "--out", tmp_path / "a.png") == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {tmp_path / 'a.png'} is a file, not a folder\n"
    assert (tmp_path / "a.png").read_bytes() == before
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a parent folder should be")
    assert run(tmp_path / "a.png", "--out", blocker / "sub") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create --out") and "Traceback" not in err


def test_a_model_that_fails_leaves_no_output_folder(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.png")
    code = run(tmp_path / "a.png", "--out", tmp_path / "o", model="tests.no_such_module:nothing")
    assert code == 2 and "no_such_module" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_ctrl_c_says_what_was_done_and_leaves_whole_files(tmp_path: Path, capsys) -> None:
    for name in ("a", "b", "c"):
        write_image(tmp_path / f"{name}.png")
    out = tmp_path / "out"
    code = run(*(tmp_path / f"{n}.png" for n in "abc"), "--out", out,
               model="tests.test_predict_cli:interrupting_depth")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 130
    assert "interrupted: 1 of 3 images done; b.png and the rest not written" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [
        "a_inverse_depth.npy",
        "a_inverse_depth.png",
        "a_inverse_depth_color.png",
    ]


def test_one_bad_file_does_not_stop_the_others(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "c.png")
    good_png = (tmp_path / "a.png").read_bytes()
    (tmp_path / "b.png").write_bytes(good_png[:40])  # a PNG signature, then nothing
    out = tmp_path / "out"
    assert run(tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "--out", out) == 2
    captured = capsys.readouterr()
    assert "b.png (corrupt or truncated data)" in captured.err
    assert "2 of 3 images done; failed: b.png" in captured.err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"{s}_inverse_depth{x}" for s in "ac" for x in (".npy", ".png", "_color.png")
    )


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_users_umask(tmp_path: Path, umask: int) -> None:
    write_image(tmp_path / "a.png")
    old = os.umask(umask)
    try:
        assert run(tmp_path / "a.png", "--out", tmp_path / "out") == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


@pytest.mark.parametrize("size", ["100", "0", "big"])
def test_a_net_size_the_network_cannot_take_is_refused(tmp_path: Path, size, capsys) -> None:
    write_image(tmp_path / "a.png")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "a.png"), "--out", str(tmp_path), "--net-size", size])
    assert exit_info.value.code == 2
    assert "--net-size" in capsys.readouterr().err


def test_relative_outputs_say_what_they_hold(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    assert run(tmp_path / "a.png", "--out", tmp_path) == 0
    meta = read_png_metadata(tmp_path / "a_inverse_depth.png")
    assert meta["dpt_ros.content"].startswith("relative inverse depth")
    assert meta["dpt_ros.scale"].startswith("min-max")
    assert meta["dpt_ros.model"] == RELATIVE and meta["dpt_ros.random_weights"] == "no"
    assert meta["dpt_ros.net_size"] == "64"
    assert meta["dpt_ros.network_input"] == "96x64 (lower_bound)"  # 96x64 is at least 64
    # the stored min and max map the PNG back to the .npy values
    png = cv2.imread(str(tmp_path / "a_inverse_depth.png"), cv2.IMREAD_UNCHANGED)
    lo, hi = float(meta["dpt_ros.min"]), float(meta["dpt_ros.max"])
    back = lo + png / 65535.0 * (hi - lo)
    np.testing.assert_allclose(back, np.load(tmp_path / "a_inverse_depth.npy"), atol=1e-4)
    preview = read_png_metadata(tmp_path / "a_inverse_depth_color.png")
    assert "preview" in preview["dpt_ros.content"]


def test_metric_png_never_saturates(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.png", left=0, right=255)  # 0 .. 100 m
    assert run(tmp_path / "a.png", "--out", tmp_path / "mm", model=METRIC) == 0
    out = capsys.readouterr().out
    metres = np.load(tmp_path / "mm" / "a_depth_m.npy")
    mm = cv2.imread(str(tmp_path / "mm" / "a_depth_mm.png"), cv2.IMREAD_UNCHANGED)
    far = metres > 65.5355
    assert far.any() and (mm[far] == 0).all()  # invalid, not 65.535 m
    np.testing.assert_allclose(mm[~far] / 1000.0, metres[~far], atol=6e-4)
    assert f"{int(far.sum())} pixels beyond the mm PNG's range" in out
    meta = read_png_metadata(tmp_path / "mm" / "a_depth_mm.png")
    assert meta["dpt_ros.content"] == "metric depth"
    assert meta["dpt_ros.out_of_range_pixels"] == str(int(far.sum()))

    assert (
        run(tmp_path / "a.png", "--out", tmp_path / "k", "--png-format", "kitti", model=METRIC) == 0
    )
    kitti = cv2.imread(str(tmp_path / "k" / "a_depth_kitti.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(kitti / 256.0, metres, atol=1 / 512 + 1e-6)  # all 0..100 m fit
    assert "KITTI" in read_png_metadata(tmp_path / "k" / "a_depth_kitti.png")["dpt_ros.scale"]


def test_a_flat_output_is_warned_about(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.png")
    assert run(tmp_path / "a.png", "--out", tmp_path, model=FLAT) == 0
    captured = capsys.readouterr()
    assert "is flat (every pixel 0)" in captured.out + captured.err


def tiny_dpt(name: str) -> DPT:
    config = DPTConfig(embed_dim=32, depth=4, num_heads=2, hooks=(0, 1, 2, 3),
                       stage_channels=(8, 16, 32, 32), features=16, pretrain_size=64)  # fmt: skip
    return DPT(config)


def test_random_weights_are_the_same_every_run(monkeypatch) -> None:
    monkeypatch.setattr(factory, "build_model", tiny_dpt)
    torch.manual_seed(1234)
    before = torch.rand(3)
    torch.manual_seed(1234)
    a = factory.create_model("dpt_hybrid", "random").state_dict()
    b = factory.create_model("dpt_hybrid", "random").state_dict()
    assert torch.equal(torch.rand(3), before)  # the caller's random stream is untouched
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
