"""The bag tool on Ray (``python -m dpt_ros.bag ... --ray``): same outputs as the local tool,
chunked bags equal to their sequential run, retries after a killed worker, a corrupt bag
reported while the others finish, and no Ray process left behind (after the run and after
Ctrl-C).

Every Ray process runs in a loopback-only network namespace (tests/fleet_helpers.py): drivers with
``--ray`` (a local instance) each in a fresh one, drivers with ``--ray ADDRESS`` inside the
namespace of one Ray head shared by the module. The namespace also proves that nothing is left
behind: once Ray is stopped, no process may still live in it.

Bags are small synthetic recordings (64x48 images, camera_info, LiDAR, /tf_static) whose images
are the scene's inverse depth encoded as grey, with a gain that drifts over time so that every
frame's LiDAR fit differs and the temporal scale filter's state matters. The stand-in model
(``tests.ros_helpers:gray_inverse_depth``) is loaded through the plug-in path in each Ray
worker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import fleet_helpers
from tests.fleet_helpers import PYTHON, REPO, RayHead, write_bag
from tests.ros_helpers import GATE_ENV

pytest.importorskip("ray")
pytest.importorskip("rosbags.rosbag2")
pytestmark = pytest.mark.slow

STANDIN = "tests.ros_helpers:gray_inverse_depth"
DIES_ONCE = "tests.test_fleet:gray_inverse_depth_dies_once"
SLOW = "tests.test_fleet:slow_gray_inverse_depth"
FILTER_TOPICS_WORDS = ("depth/image", "depth/color", "points")  # where the filter acts


# ============================================================================ stand-in plug-ins
def gray_inverse_depth_dies_once() -> Any:
    """Plug-in: the grey stand-in, whose first process to reach its second batch is killed
    (SIGKILL, as the OOM killer would) while the task is part-way through its bag. Once, per
    marker file ``$DPT_TEST_DIE_ONCE``; every later process runs normally."""
    from tests.ros_helpers import gray_inverse_depth

    base = type(gray_inverse_depth())
    marker = os.environ["DPT_TEST_DIE_ONCE"]

    class DiesOnce(base):
        calls = 0

        def forward(self, x):
            DiesOnce.calls += 1
            if DiesOnce.calls == 2:
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().forward(x)

    return DiesOnce()


def slow_gray_inverse_depth() -> Any:
    """Plug-in: the grey stand-in taking 0.3 s per batch, and holding at the test's gate
    (``ros_helpers.wait_at_gate``) when one is set, so that a run can be interrupted while its
    tasks are busy, whatever the machine's speed."""
    from tests.ros_helpers import gray_inverse_depth, wait_at_gate

    base = type(gray_inverse_depth())

    class Slow(base):
        def forward(self, x):
            wait_at_gate()
            time.sleep(0.3)
            return super().forward(x)

    return Slow()


# ============================================================================ bags
def corrupt_copy(good: Path, path: Path) -> Path:
    """A copy of ``good`` whose MCAP file is cut off part-way (a recording that crashed)."""
    shutil.copytree(good, path)
    (data,) = path.glob("*.mcap")
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    return path


def bag_messages(path: Path) -> list[tuple[str, int, str, bytes]]:
    """(topic, log time, type, raw CDR bytes) of every message, in log-time then topic order."""
    from rosbags.highlevel import AnyReader

    with AnyReader([path]) as reader:
        out = [(c.topic, t, c.msgtype, bytes(raw)) for c, t, raw in reader.messages()]
    return sorted(out, key=lambda m: (m[1], m[0]))


def assert_same_messages(got: Path, want: Path, tolerance: float | None = None) -> int:
    """Same messages; with ``tolerance``, messages the scale filter shapes may differ by that
    much (relative, float payloads) or by 1 (uint8 colour). Returns how many were not equal."""
    a, b = bag_messages(got), bag_messages(want)
    assert [m[:3] for m in a] == [m[:3] for m in b], f"{got} and {want} hold different messages"
    unequal = 0
    for (topic, stamp, msgtype, raw_a), (_, _, _, raw_b) in zip(a, b, strict=True):
        if raw_a == raw_b:
            continue
        unequal += 1
        where = f"{topic} @ {stamp} in {got}"
        assert tolerance is not None, f"{where} differs from the local run"
        assert any(w in topic for w in FILTER_TOPICS_WORDS), f"{where} differs (no filter there)"
        assert len(raw_a) == len(raw_b), f"{where}: size differs"
        _assert_close_payload(msgtype, raw_a, raw_b, tolerance, where)
    return unequal


def _assert_close_payload(msgtype: str, raw_a: bytes, raw_b: bytes, tol: float, where: str):
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    ma, mb = store.deserialize_cdr(raw_a, msgtype), store.deserialize_cdr(raw_b, msgtype)
    if msgtype.endswith("Image") and ma.encoding == "32FC1":
        x, y = ma.data.view(np.float32), mb.data.view(np.float32)
        np.testing.assert_allclose(x, y, rtol=tol, atol=0, equal_nan=True, err_msg=where)
    elif msgtype.endswith("PointCloud2"):
        x = ma.data.reshape(-1, ma.point_step)[:, :12].copy().view(np.float32)
        y = mb.data.reshape(-1, mb.point_step)[:, :12].copy().view(np.float32)
        np.testing.assert_allclose(x, y, rtol=tol, atol=0, equal_nan=True, err_msg=where)
    else:  # colour-mapped depth: a value on a bin edge may land one step away
        diff = np.abs(ma.data.astype(np.int16) - mb.data.astype(np.int16))
        assert diff.max() <= 1, f"{where}: colour differs by {diff.max()}"


# ============================================================================ running the tool
def bag_args(inputs: list[Path], out: Path, *extra: str, model: str = STANDIN) -> list[str]:
    return [
        PYTHON, "-m", "dpt_ros.bag", *map(str, inputs), "--out", str(out),
        "--model", model, "--device", "cpu", "--net-size", "64", *extra,
    ]  # fmt: skip


def run_local(inputs: list[Path], out: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        bag_args(inputs, out, *extra), env=fleet_helpers.ray_env(), capture_output=True, text=True,
        timeout=600, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def local_ray_env() -> Iterator[dict[str, str]]:
    """The environment for drivers that start a local Ray instance (``--ray``) in a namespace
    of their own; Ray's session files go to a short-lived folder, not /tmp/ray."""
    problem = fleet_helpers.netns_problem()
    if problem:
        # On a developer's machine without root; CI (root) turns this skip into a failure.
        pytest.skip(f"no loopback-only network namespace for Ray: {problem}")
    ray_tmp = tempfile.mkdtemp(prefix="dpt_ray_")  # short: unix socket paths <= 107 bytes
    yield fleet_helpers.ray_env(RAY_TMPDIR=ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three short bags, one long bag, one corrupt bag, and the local tool's outputs."""
    root = tmp_path_factory.mktemp("fleet_bags")
    short = [write_bag(root / f"drive_{i}", seconds=2.0, seed=i) for i in range(3)]
    long = write_bag(root / "long_drive", seconds=8.0, seed=7)
    corrupt = corrupt_copy(short[0], root / "crashed_drive")
    ref = root / "local"
    run_local([*short, long], ref)
    return {"root": root, "short": short, "long": long, "corrupt": corrupt, "ref": ref}


@pytest.fixture(scope="module")
def head(local_ray_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """One Ray head (2 CPUs) for the module's ``--ray ADDRESS`` runs."""
    work = tmp_path_factory.mktemp("ray_head")
    head = RayHead(work, DPT_TEST_DIE_ONCE=str(work / "died_once")).start()
    head.marker = work / "died_once"
    yield head
    head.stop()  # every process in its namespace, by pid


def run_on_head(head: RayHead, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        head.command(args), env=head.env, capture_output=True, text=True, timeout=600, cwd=REPO
    )


def run_with_local_ray(
    env: dict[str, str], args: list[str]
) -> tuple[subprocess.CompletedProcess, list]:
    """Run a driver that starts its own Ray (``--ray``) in a fresh namespace; returns it and the
    processes still alive in that namespace once it exited (there should be none)."""
    proc = subprocess.Popen(
        fleet_helpers.in_netns(args), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    netns = fleet_helpers.own_netns(proc)
    stdout, stderr = proc.communicate(timeout=600)
    left = fleet_helpers.wait_until_empty(netns, timeout=20)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), left


# ============================================================================ tests
def test_three_bags_on_a_local_ray_equal_the_local_tool(local_ray_env, bags, tmp_path):
    out = tmp_path / "ray"
    report = tmp_path / "report.json"
    done, left = run_with_local_ray(
        local_ray_env,
        bag_args(bags["short"], out, "--ray", "--workers", "2", "--report", str(report)),
    )
    assert done.returncode == 0, done.stderr
    assert not left, f"Ray processes left behind after the run: {left}"
    assert "3 of 3 bag(s) done, 0 failed" in done.stdout
    for bag in bags["short"]:
        assert_same_messages(out / bag.name, bags["ref"] / bag.name)
    summary = json.loads(report.read_text())
    assert (summary["ray"]["done"], summary["ray"]["failed"]) == (3, 0)
    assert summary["ray"]["cluster"]["CPU"] == 2.0  # --workers 2: room for two tasks
    assert summary["total"]["frames_out"] == summary["ray"]["frames"] == 3 * 10
    assert [b["input"] for b in summary["bags"]] == [str(b) for b in bags["short"]]
    assert not list(out.glob("*.partial")) and not list(out.glob("*.chunks"))


def test_a_chunked_long_bag_equals_its_sequential_run(head, bags, tmp_path):
    long, ref = bags["long"], bags["ref"] / bags["long"].name
    out = tmp_path / "chunked"
    report = tmp_path / "report.json"
    done = run_on_head(
        head,
        bag_args([long], out, "--ray", head.address, "--chunk-seconds", "2", "--export", "npy",
                 "--report", str(report)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "frame(s) 4 chunks" in done.stderr, done.stderr
    assert done.stderr.count(" done, ") == 4, done.stderr  # a progress line per chunk
    unequal = assert_same_messages(out, ref, tolerance=1e-5)
    assert not out.with_name(out.name + ".chunks").exists()
    # Every chunk's per-frame exports end up in the one output, where the report says.
    (where,) = json.loads(report.read_text())["bags"][0]["exports"].values()
    assert Path(where).parent.parent == out / "exports"
    assert len(list(Path(where).glob("*.npy"))) == 40  # 8 s at 5 Hz
    # The warm-up is what makes it equal: without it the filter restarts at each chunk.
    cold = tmp_path / "cold"
    done = run_on_head(
        head,
        bag_args(
            [long], cold, "--ray", head.address, "--chunk-seconds", "2", "--chunk-warmup", "0"
        ),
    )
    assert done.returncode == 0, done.stderr
    with pytest.raises(AssertionError):
        assert_same_messages(cold, ref, tolerance=1e-5)
    assert unequal <= len(bag_messages(ref))


def test_a_killed_worker_is_retried_and_the_output_is_complete(head, bags, tmp_path):
    bag = bags["short"][1]
    out = tmp_path / "retried"
    done = run_on_head(
        head, bag_args([bag], out, "--ray", head.address, "--retries", "2", model=DIES_ONCE)
    )
    assert head.marker.exists(), "the stand-in did not kill its worker"
    assert done.returncode == 0, done.stderr
    assert "1 of 1 bag(s) done" in done.stdout
    assert_same_messages(out, bags["ref"] / bag.name)
    assert not list(tmp_path.glob("*.partial"))


def test_a_corrupt_bag_is_reported_and_the_others_finish(head, bags, tmp_path):
    good = bags["short"][1:]
    out = tmp_path / "mixed"
    done = run_on_head(head, bag_args([bags["corrupt"], *good], out, "--ray", head.address))
    assert done.returncode == 2, done.stderr  # an input problem, as the local tool says
    assert "2 of 3 bag(s) done, 1 failed" in done.stderr
    failed = [line for line in done.stderr.splitlines() if "failed: " in line]
    assert len(failed) == 1 and str(bags["corrupt"]) in failed[0], done.stderr
    assert "Traceback" not in done.stderr
    for bag in good:
        assert_same_messages(out / bag.name, bags["ref"] / bag.name)
    assert not (out / bags["corrupt"].name).exists()


def test_ctrl_c_stops_the_run_and_leaves_no_ray_process(local_ray_env, bags, tmp_path):
    out = tmp_path / "interrupted"
    args = bag_args([*bags["short"], bags["long"]], out, "--ray", "--workers", "2", model=SLOW)
    # The gate stays closed: no bag can finish, so Ctrl-C always lands mid-run (an event, not
    # a hope that the run outlasts a sleep).
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "closed").touch()
    env = {**local_ray_env, GATE_ENV: str(gate)}
    proc = subprocess.Popen(
        fleet_helpers.in_netns(args), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    netns = fleet_helpers.own_netns(proc)
    deadline = time.monotonic() + 300
    # Interrupt once a task is inside the model, writing its output's work folder.
    while not (gate / "entered").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the Ray tasks never started"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
    stdout, stderr = proc.communicate(timeout=120)
    left = fleet_helpers.wait_until_empty(netns, timeout=20)
    for pid, _ in left:
        os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert not left, f"Ray processes left behind after Ctrl-C: {left}"
    assert "interrupted" in stdout + stderr
    assert "Traceback" not in stderr
    complete = [p for p in out.iterdir() if (p / "metadata.yaml").exists()] if out.exists() else []
    assert len(complete) < 4, "everything finished before Ctrl-C: the test proved nothing"


# ============================================================================ without a cluster
def test_ray_options_are_checked_before_anything_starts(bags, tmp_path, capsys):
    from dpt_ros.bag.cli import main

    base = [str(bags["short"][0]), "--out", str(tmp_path / "out"), "--model", STANDIN, "--ray"]
    for args, message in [
        (["--retries", "-1"], "--retries must be >= 0"),
        (["--cpus-per-task", "0"], "cannot both be 0"),
        (["--chunk-seconds", "-2"], "--chunk-seconds must be >= 0"),
        (["--device", "cuda:0,cuda:1"], "--device lists several devices"),
        (["--device", "cuda"], "needs --gpus-per-task"),
        (["--gpus-per-task", "1"], "add --device cuda"),
        (["--ray", "drive_9"], "'drive_9' is not a Ray address"),  # an input, taken by --ray
        (["--chunk-seconds", "2", "--export", "preview"], "--export preview with --chunk"),
    ]:
        assert main([*base, *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_without_ray_the_message_names_the_extra(bags, tmp_path, monkeypatch, capsys):
    from dpt_ros import fleet
    from dpt_ros.bag.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # what a missing package looks like
    with pytest.raises(fleet.FleetError, match=r"pip install '\.\[ray\]'"):
        fleet.import_ray()
    out = tmp_path / "out"
    assert main([str(bags["short"][0]), "--out", str(out), "--model", STANDIN, "--ray"]) == 2
    err = capsys.readouterr().err
    assert "pip install '.[ray]'" in err and "Traceback" not in err, err
    assert not out.exists()
