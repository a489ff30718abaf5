#!/usr/bin/env bash
# Set up the Raspberry Pi demo on Raspberry Pi OS 64-bit (bookworm, Python 3.11), from an
# edgevit checkout (or with EDGEVIT_WHEEL=path/to/edgevit-*.whl built on an arm64 machine):
#
#   examples/raspberry_pi/setup.sh [VENV]          # default VENV: ~/edgevit-venv
#
# The venv sees the system's packages, so the camera stack from apt (python3-picamera2)
# works in it; numpy stays below 2 because apt's picamera2 and simplejpeg are built
# against numpy 1.x. Installs edgevit's device profile with LiteRT (ai-edge-litert): no torch.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${1:-$HOME/edgevit-venv}"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
[ "$(uname -m)" = aarch64 ] || echo "setup.sh: note: this is $(uname -m); the Pi demo wants 64-bit Raspberry Pi OS (aarch64)" >&2

packages="python3-venv python3-dev g++"
if [ -e /etc/rpi-issue ] || grep -qi raspberry /proc/device-tree/model 2>/dev/null; then
    packages="$packages python3-picamera2 python3-opencv"  # camera and video files
fi
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "numpy<2" "${EDGEVIT_WHEEL:-$REPO}[tflite]"
"$VENV/bin/edgevit" info --native
echo "ready: . $VENV/bin/activate && python $HERE/demo.py MODEL.tflite --source camera"
