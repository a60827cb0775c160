"""Test-wide settings, and what a green run is allowed to leave out.

DDS must never leave this machine: every process that may start rclpy gets a private domain
and localhost-only discovery before rclpy is imported, and the Fast DDS profile with a large
shared-memory segment so camera-sized best-effort messages are not dropped. The domain is one
that no other test run on this machine holds (a lock file per domain under the temp dir), and
rclpy's log files go to a temporary directory, not ``~/.ros/log``.

Skips: on a developer's machine a missing optional dependency or a missing ``../shared`` skips
the tests that need it, and the summary lists how many tests skipped and why. In CI
(``CI=true``) the run fails instead: at start-up when a dependency that ``tools/setup.sh``
installs is missing or broken, or when ``../shared`` is absent; and any test that still skips
fails, unless its reason is on `CI_ALLOWED_SKIPS` (CUDA tests on a machine without a GPU).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# DPT_ROS_SHARED points elsewhere (tests of this policy use it to simulate a missing ../shared).
SHARED = Path(os.environ.get("DPT_ROS_SHARED") or REPO.parent / "shared").resolve()

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")
NO_CUDA_REASON = "no CUDA device"
# Reasons a test may skip in CI. Everything else that skips there is a broken set-up.
CI_ALLOWED_SKIPS = (NO_CUDA_REASON,)
# Modules the test suite imports from what tools/setup.sh installs (requirements-dev.txt and
# what it includes); in CI each must import, or the run stops before collecting any test.
CI_REQUIRED_MODULES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "cv2",
    "yaml",
    "safetensors",
    "PIL",
    "tqdm",
    "rosbags.highlevel",
    "rosbags.typesys",
    "transformers",
    "open3d",
    "ray",
    "rclpy",
    "sensor_msgs.msg",
    "std_msgs.msg",
    "geometry_msgs.msg",
    "diagnostic_msgs.msg",
    "builtin_interfaces.msg",
)
REQUIREMENTS = ("requirements-dev.txt",)
# ../shared parts the tests read (reference numerics, KITTI, RGB-D and bag samples).
SHARED_PARTS = ("dpt_reference", "sampledata")

DOMAIN_IDS = range(1, 101)  # Fast DDS: 0..101 on every platform; 0 is everybody's default
_DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "dpt_ros_test_domains"


# ---------------------------------------------------------------------------- ROS environment
def _hold_free_domain(avoid: str | None) -> tuple[int, object]:
    """Lock a ROS domain id no other test run holds; returns (id, open lock file).

    The lock (flock on ``<tmp>/dpt_ros_test_domains/<id>.lock``) lives as long as the file
    stays open, i.e. this pytest process; node subprocesses inherit the id, not the lock.
    ``avoid`` (the ROS_DOMAIN_ID of the shell, e.g. the user's own from tools/ros_env.sh,
    where their live nodes are) is never taken.
    """
    _DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        _DOMAIN_LOCK_DIR.chmod(0o1777)  # shared by every user's runs, like /tmp itself
    candidates = [d for d in DOMAIN_IDS if str(d) != (avoid or "").strip()]
    start = os.getpid() % len(candidates)  # parallel runs start their search apart
    for domain in candidates[start:] + candidates[:start]:
        path = _DOMAIN_LOCK_DIR / f"{domain}.lock"
        try:
            handle = open(path, "a")  # noqa: SIM115 (held open for the whole session)
        except OSError:
            continue  # another user's lock file we may not open: that domain is in use
        with contextlib.suppress(OSError):
            path.chmod(0o666)  # other users' runs must be able to open it to test the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                continue
            raise
        return domain, handle
    raise RuntimeError(
        f"every ROS domain id in {DOMAIN_IDS.start}..{DOMAIN_IDS.stop - 1} is held by another "
        f"test run (locks in {_DOMAIN_LOCK_DIR})"
    )


_DOMAIN_ID, _DOMAIN_LOCK = _hold_free_domain(os.environ.get("ROS_DOMAIN_ID"))
os.environ["ROS_DOMAIN_ID"] = str(_DOMAIN_ID)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# rclpy (in this process and in node subprocesses) writes its log files here, not ~/.ros/log.
_ROS_LOG_DIR = tempfile.mkdtemp(prefix="dpt_ros_test_ros_log_")
os.environ["ROS_LOG_DIR"] = _ROS_LOG_DIR


# ---------------------------------------------------------------------------- CI: set-up checks
def _requirement_names(path: Path, seen: set[Path] | None = None) -> list[str]:
    """Distribution names in a pip requirements file (following ``-r``), markers applied."""
    seen = seen if seen is not None else set()
    if path in seen:
        return []
    seen.add(path)
    names: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].split("\t#")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            names += _requirement_names(path.parent / line.split(maxsplit=1)[1], seen)
            continue
        if line.startswith("-"):
            continue
        try:
            from packaging.requirements import Requirement

            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate():
                names.append(requirement.name)
        except ImportError:
            names.append(re.split(r"[\s;<>=!~\[]", line, maxsplit=1)[0])
    return names


def setup_problems() -> list[str]:
    """What the set-up should have provided and did not: missing distributions, modules that
    do not import (with the error), a missing ../shared. Empty when the set-up is complete."""
    from importlib import metadata

    problems = []
    for requirements in REQUIREMENTS:
        for name in _requirement_names(REPO / requirements):
            try:
                metadata.distribution(name)
            except metadata.PackageNotFoundError:
                problems.append(f"distribution {name!r} ({requirements}) is not installed")
    for module in CI_REQUIRED_MODULES:
        try:
            importlib.import_module(module)
        except Exception as error:  # ImportError, or a broken install failing at import
            problems.append(f"module {module!r} does not import: {type(error).__name__}: {error}")
    for part in SHARED_PARTS:
        if not (SHARED / part).is_dir():
            problems.append(f"{SHARED / part} is missing (the project's shared data, ../shared)")
    return problems


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SKIPS] = []
    if not CI:
        return
    problems = setup_problems()
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise pytest.UsageError(
            "CI=true and the test set-up is incomplete, so tests would skip instead of run:\n"
            f"{lines}\nRun tools/setup_system.sh and tools/setup.sh (or .ci/run), and provide "
            "../shared. Unset CI to run with skips on a developer's machine."
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_ROS_LOG_DIR, ignore_errors=True)


# ---------------------------------------------------------------------------- CUDA marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: CUDA tests cannot run either way
        has_cuda = False
    skip_cuda = pytest.mark.skip(reason=NO_CUDA_REASON)
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)


# ---------------------------------------------------------------------------- skips: CI and summary
_SKIPS = pytest.StashKey[list]()


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ").strip()


def _allowed_in_ci(reason: str, keywords) -> bool:
    return reason in CI_ALLOWED_SKIPS and "cuda" in keywords


def _ci_failure(what: str, reason: str) -> str:
    return (
        f"{what} skipped in CI ({reason!r}): with CI=true only {list(CI_ALLOWED_SKIPS)} skips "
        "are allowed; a skip here means a broken set-up (tools/setup.sh, ../shared)"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        allowed = _allowed_in_ci(reason, item.keywords)
        if CI and not allowed:
            report.outcome = "failed"
            report.longrepr = _ci_failure(item.nodeid, reason)
        else:
            item.config.stash[_SKIPS].append((item.nodeid, reason, allowed))
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    if report.skipped:  # a module-level importorskip / pytest.skip(allow_module_level=True)
        reason = _skip_reason(report)
        if CI:
            report.outcome = "failed"
            report.longrepr = _ci_failure(f"module {collector.nodeid}", reason)
        else:
            collector.config.stash[_SKIPS].append((collector.nodeid, reason, False))
    return report


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    skips = config.stash.get(_SKIPS, [])
    if not skips:
        return
    by_reason = Counter((reason, allowed) for _, reason, allowed in skips)
    terminalreporter.section("skipped tests, by reason", sep="-")
    for (reason, allowed), count in by_reason.most_common():
        note = " (allowed in CI)" if allowed else ""
        terminalreporter.line(f"{count:5d} skipped: {reason}{note}")
    cuda = sum(count for (_, allowed), count in by_reason.items() if allowed)
    other = len(skips) - cuda
    terminalreporter.line(
        f"{len(skips)} skipped in all: {cuda} CUDA tests (no GPU here; run "
        f"tools/run_gpu_checks.sh on a GPU machine), {other} for missing dependencies or data"
        + (" (CI=true would fail on these)" if other and not CI else "")
    )


# ---------------------------------------------------------------------------- ../shared fixtures
def require_shared(path: Path, what: str) -> Path:
    """``path`` when it exists; else skip the test (developer's machine) naming what is missing.
    In CI the skip turns into a failure (see the module docstring)."""
    if not path.exists():
        pytest.skip(f"{what} is not present: {path}")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (reference numerics and sample data); skips the test when absent."""
    return require_shared(SHARED, "../shared")


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    return require_shared(shared_dir / "dpt_reference", "../shared/dpt_reference")


@pytest.fixture(scope="session")
def sampledata_dir(shared_dir: Path) -> Path:
    return require_shared(shared_dir / "sampledata", "../shared/sampledata")
