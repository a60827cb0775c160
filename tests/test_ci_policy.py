"""The skip policy of tests/conftest.py: in CI (CI=true) a broken set-up fails the run.

Each case runs pytest in a subprocess on a tiny test file written to a temporary directory,
with this suite's conftest loaded as a plugin, so the policy is checked exactly as a run sees it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TESTS = """
import pytest

@pytest.mark.cuda
def test_needs_a_gpu():
    pass

def test_runs():
    pass

def test_skips_for_missing_data():
    pytest.skip("some sample file is not present")
"""


def run_pytest(tmp_path: Path, *, ci: bool, module: str = SAMPLE_TESTS, **env: str):
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(module))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    cuda: needs a GPU\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "CUDA_VISIBLE_DEVICES")}
    pythonpath = os.pathsep.join(p for p in (env.pop("PYTHONPATH", ""), str(REPO / "tests")) if p)
    # No GPU for the child, whatever this machine has: the CUDA test must skip.
    environ.update(PYTHONPATH=pythonpath, CUDA_VISIBLE_DEVICES="", **env)
    if ci:
        environ["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-rs",
         str(tmp_path)],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_developer_run_skips_and_the_summary_says_why(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, ci=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "1 skipped: no CUDA device (allowed in CI)" in out
    assert "1 skipped: some sample file is not present" in out
    assert "2 skipped in all: 1 CUDA tests" in out and "CI=true would fail on these" in out
    assert out.rstrip().splitlines()[-1].startswith("=") and "1 passed, 2 skipped" in out


@pytest.mark.slow
def test_ci_run_fails_any_skip_but_cuda(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, ci=True)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "skipped in CI ('some sample file is not present')" in out
    assert "1 skipped: no CUDA device (allowed in CI)" in out
    # pytest's own closing line: one failure (the skip), one pass, the CUDA skip counted.
    last = out.rstrip().splitlines()[-1]
    assert "1 failed" in last and "1 passed" in last and "1 skipped" in last, last


@pytest.mark.slow
def test_ci_run_with_a_module_level_importorskip_fails(tmp_path: Path) -> None:
    module = 'import pytest\npytest.importorskip("no_such_module_dpt")\ndef test_x():\n    pass\n'
    result = run_pytest(tmp_path, ci=True, module=module)
    assert result.returncode != 0, result.stdout
    assert "skipped in CI" in result.stdout and "no_such_module_dpt" in result.stdout


@pytest.mark.slow
def test_ci_run_stops_on_a_broken_dependency_and_a_missing_shared(tmp_path: Path) -> None:
    fake = tmp_path / "fake_modules"
    fake.mkdir()
    (fake / "ray.py").write_text('raise ImportError("simulated broken install")\n')
    result = run_pytest(
        tmp_path, ci=True, PYTHONPATH=str(fake), DPT_ROS_SHARED=str(tmp_path / "no_shared")
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    err = result.stderr
    assert "CI=true and the test set-up is incomplete" in err
    assert "module 'ray' does not import: ImportError: simulated broken install" in err
    assert f"{tmp_path / 'no_shared' / 'dpt_reference'} is missing" in err
    assert "passed" not in result.stdout  # stopped before any test ran


def test_requirement_names_follow_includes_and_markers(tmp_path: Path) -> None:
    from conftest import _requirement_names

    (tmp_path / "base.txt").write_text("torch==2.14.1  # pinned\nnumpy>=1.26\n")
    (tmp_path / "dev.txt").write_text(
        "-r base.txt\n# comment\npytest>=8\nfoo[extra]>=1 ; python_version < '3'\nbar-baz\n"
    )
    assert _requirement_names(tmp_path / "dev.txt") == ["torch", "numpy", "pytest", "bar-baz"]


def test_each_run_holds_a_ros_domain_of_its_own() -> None:
    from conftest import _hold_free_domain

    mine = int(os.environ["ROS_DOMAIN_ID"])  # held by this run (conftest)
    other, lock = _hold_free_domain(avoid="7")
    try:
        assert other not in (mine, 7)
        third, lock3 = _hold_free_domain(avoid=None)
        lock3.close()
        assert third not in (mine, other)  # both are held: a third run gets a third domain
    finally:
        lock.close()


def test_ros_logs_go_to_a_temporary_directory() -> None:
    log_dir = Path(os.environ["ROS_LOG_DIR"])
    assert log_dir.is_dir() and log_dir.name.startswith("dpt_ros_test_ros_log_")
    assert Path.home() / ".ros" not in log_dir.parents
