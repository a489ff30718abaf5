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
# If the head runs Ray's token authentication (recent Ray turns it on for `ray start --head`
# when ~/.ray/auth_token exists there, which ray.init() creates), copy that file to
# ~/.ray/auth_token on the Pi (or point RAY_AUTH_TOKEN_PATH at it, or set RAY_AUTH_TOKEN):
# when a token is there, this script turns token mode on for the node.
set -euo pipefail
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || { echo "usage: $0 HEAD_IP:PORT [DEVICE] [ray start options, e.g. --block]" >&2; exit 2; }
ADDRESS="$1"
shift
DEVICE=pi-5
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then  # a device name, not an option
    DEVICE="$1"
    shift
fi
case "$DEVICE" in *[!A-Za-z0-9_.-]*) echo "worker.sh: bad device name '$DEVICE'" >&2; exit 2;; esac
RAY="$(command -v ray)" || { echo "worker.sh: ray is not installed: pip install \".[tflite,distributed]\"" >&2; exit 2; }
PYTHON="$(dirname "$RAY")/python3"  # the Python Ray's workers will run in
"$PYTHON" -c 'import edgevit' 2>/dev/null \
    || { echo "worker.sh: edgevit is not installed next to $RAY: pip install \".[tflite,distributed]\"" >&2; exit 2; }
"$PYTHON" -c 'import edgevit.runtimes.litert as l; l.find_interpreter()' 2>/dev/null \
    || { echo "worker.sh: no TFLite runtime next to $RAY: pip install \".[tflite]\" (or tflite-runtime)" >&2; exit 2; }
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; }; then
    export RAY_AUTH_MODE=token
fi
exec "$RAY" start --address="$ADDRESS" --resources="{\"$DEVICE\": 1}" --disable-usage-stats "$@"
