#!/usr/bin/env bash
# Set up the Jetson demo on JetPack 6 (Ubuntu 22.04, Python 3.10), from an edgevit checkout
# (or with EDGEVIT_WHEEL=path/to/edgevit-*.whl built on an arm64 machine):
#
#   ORT_WHEEL=onnxruntime_gpu-....whl examples/jetson/setup.sh [VENV]    # default VENV: ~/edgevit-venv
#
# ONNX Runtime with the CUDA and TensorRT providers is NVIDIA's build for JetPack (the
# onnxruntime-gpu wheel from the Jetson Zoo / jetson-ai-lab index): pass its file in
# ORT_WHEEL. Without it, PyPI's onnxruntime is installed, which runs on the CPU only (the
# demo then says it fell back). The venv sees the system's packages (JetPack's TensorRT
# and OpenCV), so numpy stays below 2, which JetPack's OpenCV is built against. No torch.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${1:-$HOME/edgevit-venv}"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev g++
python3 -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
EDGEVIT="${EDGEVIT_WHEEL:-$REPO}"
if [ -n "${ORT_WHEEL:-}" ]; then
    # not the [onnx] extra: it would add PyPI's CPU onnxruntime, which overwrites the GPU build's module
    "$VENV/bin/pip" install -q "numpy<2" "$ORT_WHEEL" "$EDGEVIT" "onnx>=1.16"
else
    "$VENV/bin/pip" install -q "numpy<2" "$EDGEVIT[onnx]"
fi
"$VENV/bin/python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, 'providers:', ', '.join(o.get_available_providers()))"
echo "ready: . $VENV/bin/activate && python $HERE/demo.py MODEL.onnx --source /dev/video0"
