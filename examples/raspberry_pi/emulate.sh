#!/usr/bin/env bash
# The Raspberry Pi demo on arm64, under emulation, on an x86-64 Debian/Ubuntu machine (as root).
#
#   examples/raspberry_pi/emulate.sh [WORK_DIR]          # default WORK_DIR: ./emulation
#
# 1. Registers qemu-aarch64 (qemu-user-static) with binfmt_misc and builds a Debian bookworm
#    arm64 root with debootstrap (kept in $EDGEVIT_ARM64_ROOT between runs).
# 2. Here ($PYTHON, with edgevit's workstation profile): trains edgenext_xx_small on digits,
#    exports fp32, fp16 and int8 .tflite files and fp32 and int8 .onnx files, runs the
#    boards' demos on 32 images, and writes the native kernels' parity cases (float64
#    torch references), and the trained model exported standard and with --native-ops,
#    single-node graphs of each custom op, and x86's outputs of all of them.
# 3. In the root: builds an edgevit wheel from this checkout (the C++ kernels and
#    libedgevit_ort.so compiled for aarch64, against ONNX Runtime's headers from
#    native/fetch_ort_headers.py; through ninja: the root has g++ but no make), installs it with ai-edge-litert
#    (the Pi's setup.sh), with tflite-runtime (numpy<2) and with onnxruntime (the Jetson's
#    setup.sh, PyPI's CPU build) in three venvs;
#    runs the Pi demo on the .tflite files in the first two, the Jetson demo (its CPU
#    fallback) on the .onnx files in the third, the kernels on the cases, and the native graphs
#    through libedgevit_ort.so in a process that imports onnxruntime and numpy only.
# 4. Compares: fp32 logits within 1e-4 of x86, fp16 within the fp16 parity tolerance, int8
#    top-1 equal, kernels within 1e-5 of the reference, the native graphs within 1e-5 of x86's
#    standard export and of the float64 references. Exit 0 only if all hold.
#    WORK_DIR/results.json has the numbers; WORK_DIR/timings.txt the wall time of each step
#    (emulated time: not a speed claim).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="$(mkdir -p "${1:-emulation}" && cd "${1:-emulation}" && pwd)"
ROOT="${EDGEVIT_ARM64_ROOT:-/var/cache/edgevit/arm64-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-python3}"
CA_BUNDLE="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
STARTED=$SECONDS

say() { echo "[emulate $(( SECONDS - STARTED ))s] $*"; }
timed() {  # timed "what" command...: run it, append "what: N s" to timings.txt
    local what="$1" t0=$SECONDS
    shift
    say "$what"
    "$@"
    echo "$what: $(( SECONDS - t0 )) s" >> "$WORK/timings.txt"
}

[ "$(id -u)" = 0 ] || { echo "emulate.sh: run as root (debootstrap, binfmt_misc and chroot need it)" >&2; exit 2; }
[ "$(uname -m)" = x86_64 ] || { echo "emulate.sh: meant for an x86-64 host (this is $(uname -m))" >&2; exit 2; }
"$PYTHON" -c "import torch, edgevit" 2>/dev/null || {
    echo "emulate.sh: $PYTHON needs edgevit's workstation profile (pip install torch==2.13.0 && pip install \".[export]\"); set PYTHON=" >&2
    exit 2
}
: > "$WORK/timings.txt"

host_tools() {
    if ! command -v debootstrap >/dev/null || [ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static >/dev/null
    fi
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then  # flags F: the interpreter works inside the chroot
        grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
    fi
}

build_root() {
    [ -e "$ROOT/.edgevit-root" ] && return 0
    rm -rf "$ROOT.partial" && mkdir -p "$(dirname "$ROOT")"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-dev,g++,ca-certificates \
        bookworm "$ROOT.partial" "$MIRROR" > "$WORK/debootstrap.log"
    touch "$ROOT.partial/.edgevit-root"
    rm -rf "$ROOT" && mv "$ROOT.partial" "$ROOT"
}

copy_in() {  # this checkout (tracked and untracked, not ignored), the x86 side's files, DNS and CA bundle
    rm -rf "$ROOT/opt/edgevit" && mkdir -p "$ROOT/opt/edgevit/src" "$ROOT/opt/edgevit/results"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) \
        | tar -C "$ROOT/opt/edgevit/src" -xf -
    mkdir -p "$ROOT/opt/edgevit/src/build" && cp -r "$REPO/build/ort-headers" "$ROOT/opt/edgevit/src/build/"
    cp -r "$WORK/host" "$ROOT/opt/edgevit/work"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    cp "$CA_BUNDLE" "$ROOT/opt/edgevit/ca.crt"
}

inside() {  # run a bash script in the arm64 root
    # /proc only: with the host's /sys there too, onnxruntime's cpuinfo reads x86 CPU files in an
    # aarch64 process and crashes; without it, it only warns that it cannot identify the CPU
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
        PIP_CERT=/opt/edgevit/ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        bash -euo pipefail -c "mkdir -p /opt/edgevit && cd /opt/edgevit && $1"
}
cleanup() { mountpoint -q "$ROOT/proc" 2>/dev/null && umount "$ROOT/proc" || true; }
trap cleanup EXIT

run_demo_in() {  # venv demo suffix: the demo on every *.suffix artifact, scores to results/<venv>/<file>.npz
    inside "mkdir -p results/$1 && for a in work/artifacts/*.$3; do
        f=\$(basename \$a)
        $1/bin/python src/examples/$2/demo.py \$a --source work/images --threads 2 --json \
            --save results/$1/\$f.npz > results/$1/\$f.jsonl 2> results/$1/\$f.stderr
        $1/bin/edgevit --json info \$a > results/$1/\$f-info.json
    done"
}

timed "host tools and qemu-aarch64 in binfmt_misc" host_tools
timed "ONNX Runtime's headers (Debian libonnxruntime-dev)" "$PYTHON" "$REPO/native/fetch_ort_headers.py"
timed "Debian bookworm arm64 root ($ROOT)" build_root
inside '[ "$(uname -m)" = aarch64 ] && python3 --version' | sed 's/^/[arm64] /'
rm -rf "$WORK/host" "$WORK/arm64" "$WORK/arm64-kernels.json" "$WORK"/arm64-native-ort.*
timed "x86: train, export .tflite fp32/fp16/int8 and .onnx fp32/int8, demos, kernel cases" \
    "$PYTHON" "$HERE/emulation.py" prepare "$WORK"
timed "copy the checkout and the artifacts into the root" copy_in
timed "arm64: edgevit wheel (C++ kernels compiled for aarch64)" \
    inside "python3 -m venv build && build/bin/pip wheel -q --no-deps -w dist ./src"
# the boards' own setup scripts make the ai-edge-litert and onnxruntime venvs, from that wheel
timed "arm64: Raspberry Pi setup.sh (ai-edge-litert, numpy<2)" \
    inside 'EDGEVIT_WHEEL="$(ls dist/edgevit-*.whl)" src/examples/raspberry_pi/setup.sh /opt/edgevit/litert'
timed "arm64: venv with tflite-runtime and numpy<2" \
    inside 'python3 -m venv tflite-runtime && tflite-runtime/bin/pip install -q "numpy<2" tflite-runtime "$(ls dist/edgevit-*.whl)"'
timed "arm64: Jetson setup.sh (onnxruntime from PyPI: CPU only)" \
    inside 'EDGEVIT_WHEEL="$(ls dist/edgevit-*.whl)" src/examples/jetson/setup.sh /opt/edgevit/onnx'
inside 'for v in litert tflite-runtime; do echo "$v: $($v/bin/python -c "import numpy, edgevit.runtimes.litert as l; print(\"numpy\", numpy.__version__, \"|\", *l.find_interpreter()[1:])")"; done' \
    | sed 's/^/[arm64] /'
timed "arm64: Pi demo through ai-edge-litert" run_demo_in litert raspberry_pi tflite
timed "arm64: Pi demo through tflite-runtime" run_demo_in tflite-runtime raspberry_pi tflite
timed "arm64: Jetson demo through onnxruntime (CPU fallback)" run_demo_in onnx jetson onnx
timed "arm64: native kernel parity" \
    inside "litert/bin/edgevit info --native && litert/bin/python src/examples/raspberry_pi/emulation.py kernels work/kernel_cases.npz results/kernels.json"
timed "arm64: --native-ops graphs through libedgevit_ort.so, onnxruntime and numpy only" \
    inside 'onnx/bin/python -I src/examples/raspberry_pi/emulation.py native-ort "$(ls onnx/lib/python3*/site-packages/edgevit/lib/libedgevit_ort.so)" work/native results/native-ort.json'
mkdir -p "$WORK/arm64"
cp -r "$ROOT/opt/edgevit/results/litert" "$WORK/arm64/ai-edge-litert"
cp -r "$ROOT/opt/edgevit/results/tflite-runtime" "$WORK/arm64/tflite-runtime"
cp -r "$ROOT/opt/edgevit/results/onnx" "$WORK/arm64/onnxruntime"
cp "$ROOT/opt/edgevit/results/kernels.json" "$WORK/arm64-kernels.json"
cp "$ROOT/opt/edgevit/results/native-ort.json" "$WORK/arm64-native-ort.json"
cp "$ROOT/opt/edgevit/results/native-ort.npz" "$WORK/arm64-native-ort.npz"
cp "$ROOT"/opt/edgevit/dist/edgevit-*.whl "$WORK/"
say "compare (total $(( SECONDS - STARTED )) s)"
echo "total: $(( SECONDS - STARTED )) s" >> "$WORK/timings.txt"
"$PYTHON" "$HERE/emulation.py" compare "$WORK"
