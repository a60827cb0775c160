"""tools/ros_env.sh keeps one ROS_DOMAIN_ID per user (issue 10, section 5), and a test run
does not join it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def source(env: dict[str, str]) -> subprocess.CompletedProcess:
    script = f'source "{REPO}/tools/ros_env.sh" && echo "$ROS_DOMAIN_ID"'
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)


def test_one_domain_per_user_kept_in_the_config_folder(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    first, second = source(env), source(env)
    domain = first.stdout.strip()
    assert first.returncode == 0 and first.stderr.count("\n") == 1  # only the printed id
    assert 1 <= int(domain) <= 100 and second.stdout.strip() == domain
    assert (tmp_path / "dpt_ros" / "ros_domain_id").read_text().strip() == domain
    assert f"ROS_DOMAIN_ID={domain}" in second.stderr


def test_an_id_already_set_is_respected(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "XDG_CONFIG_HOME": str(tmp_path), "ROS_DOMAIN_ID": "42"}
    result = source(env)
    assert result.stdout.strip() == "42" and "already set" in result.stderr
    assert not (tmp_path / "dpt_ros").exists()


def test_a_test_run_never_takes_the_users_domain() -> None:
    from conftest import _hold_free_domain

    # A free id, as the user's from ros_env.sh would be (no test run holds it) ...
    free, lock = _hold_free_domain(None)
    lock.close()
    # ... is the first choice of this process, yet not taken when it is the user's.
    domain, lock = _hold_free_domain(str(free))
    lock.close()
    assert domain != free
