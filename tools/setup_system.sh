#!/usr/bin/env bash
# System packages (Debian) that the tests and optional features need; .ci/run calls this before
# tools/run_tests.sh. Idempotent and quick when everything is there: apt runs only for what is missing.
set -euo pipefail
PACKAGES=(
    libusb-1.0-0        # open3d-cpu (PLY export, cloud window)
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "[setup_system] missing Debian packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
    echo "[setup_system] installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
