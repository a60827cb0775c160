#!/usr/bin/env bash
# Creates .venv with everything dpt_ros and its tests need (idempotent: reruns are quick).
# torch/torchvision are pinned to the pair that lies on the CI machines' disk; see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${DPT_ROS_VENV:-.venv}
stamp="$VENV/.dpt_ros-installed"
# One installer at a time: parallel runs (tests, demo, a second terminal) share one venv.
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
want=$(cat requirements.txt requirements-ros.txt requirements-dev.txt setup.py | sha256sum | cut -c1-16)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[setup] creating $VENV"
    "$PY" -m venv "$VENV"
fi
echo "[setup] installing requirements into $VENV (first time: a few minutes, ~6 GB)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
echo "$want" > "$stamp"
echo "[setup] done"
