#!/usr/bin/env bash
# Join a Ray cluster as a device that runs a split plan's sub-models (README: "Split across
# devices"). Needs only the device profile with Ray, no torch:
#     pip install "edgevit-*.whl[tflite,distributed]"   (or ".[tflite,distributed]" in a checkout)
#
#   examples/raspberry_pi/worker.sh HEAD_IP:6379 [DEVICE]      # DEVICE: its name in devices.yaml (default pi-5)
#   examples/raspberry_pi/worker.sh HEAD_IP:6379 pi-5 --block  # stay in the foreground (for a systemd unit)
#
# The head (e.g. the Jetson, or the workstation) runs  ray start --head --port=6379  and
# then  edgevit run --plan plan/ --backend ray --address HEAD_IP:6379 image.png : every
# sub-model the plan gives to DEVICE runs here, on its .tflite artifact, sent by the head.
# Stop with  ray stop .
#
# Ray clusters started with `ray start --head` use token authentication: copy the head's
# ~/.ray/auth_token to ~/.ray/auth_token on the Pi (or point RAY_AUTH_TOKEN_PATH at it, or
# set RAY_AUTH_TOKEN). When a token is there, this script turns token mode on for the node.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 HEAD_IP:PORT [DEVICE] [--block]" >&2; exit 2; }
ADDRESS="$1"
DEVICE="${2:-pi-5}"
shift $(( $# >= 2 ? 2 : 1 ))
command -v ray >/dev/null || { echo "worker.sh: ray is not installed: pip install \".[tflite,distributed]\"" >&2; exit 2; }
python3 -c 'import edgevit.runtimes.litert as l; l.find_interpreter()' 2>/dev/null \
    || { echo "worker.sh: no TFLite runtime: pip install \".[tflite]\" (or tflite-runtime)" >&2; exit 2; }
case "$DEVICE" in *[!A-Za-z0-9_.-]*|"") echo "worker.sh: bad device name '$DEVICE'" >&2; exit 2;; esac
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; }; then
    export RAY_AUTH_MODE=token
fi
exec ray start --address="$ADDRESS" --resources="{\"$DEVICE\": 1}" --disable-usage-stats "$@"
