#!/usr/bin/env bash
# The test command: sets up .venv on a fresh machine, lints, and runs the whole test suite.
# Extra arguments go to pytest. With CI=true (.ci/run) skips fail the run, see tests/conftest.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
source tools/ros_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
