"""Test-wide settings.

DDS must never leave this machine: every process that may start rclpy gets a private domain
and localhost-only discovery before rclpy is imported, and the Fast DDS profile with a large
shared-memory segment so camera-sized best-effort messages are not dropped.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared").resolve()

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# A private domain per test run, so parallel runs (and other sessions) never see each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_shm.xml"))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: CUDA tests cannot run either way
        has_cuda = False
    skip_cuda = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (reference numerics and sample data); skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def reference_dir(shared_dir: Path) -> Path:
    path = shared_dir / "dpt_reference"
    if not path.is_dir():
        pytest.skip("../shared/dpt_reference is not present")
    return path


@pytest.fixture(scope="session")
def sampledata_dir(shared_dir: Path) -> Path:
    path = shared_dir / "sampledata"
    if not path.is_dir():
        pytest.skip("../shared/sampledata is not present")
    return path
