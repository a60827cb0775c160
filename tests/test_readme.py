"""The README's parameter table and commands stay in step with the code."""

from __future__ import annotations

from pathlib import Path

from dpt_ros.config import describe_parameters

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_readme_parameter_table_matches_the_schema() -> None:
    rows = list(describe_parameters())
    missing = [row for row in rows if row not in README]
    assert not missing, "README parameter table is stale; regenerate it:\n" + "\n".join(missing)


def test_readme_commands_exist() -> None:
    assert "bash tools/run_demo.sh" in README
    assert "bash tools/run_tests.sh" in README
    for script in ("run_demo.sh", "run_tests.sh", "setup.sh", "ros_env.sh"):
        assert (REPO / "tools" / script).is_file()
    ci = (REPO / ".ci" / "run").read_text()
    assert "tools/run_tests.sh" in ci
