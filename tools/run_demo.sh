#!/usr/bin/env bash
# The main job on the bundled default: depth for the bundled sample image, written to out/demo.
# Offline machines use random weights (DPT_WEIGHTS=random, the default here); with network access,
# DPT_WEIGHTS=dpt_hybrid downloads and verifies the authors' released checkpoint once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m dpt_ros.predict dpt_ros/data/sample_scene.png \
    --model "${DPT_MODEL:-dpt_hybrid}" --weights "${DPT_WEIGHTS:-random}" \
    --out "${DPT_OUT:-out/demo}" "$@"
