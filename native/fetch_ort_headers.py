#!/usr/bin/env python3
"""Fetch ONNX Runtime's C/C++ headers from Debian's ``libonnxruntime-dev`` package.

ONNX Runtime's Python wheels ship no headers; Debian's -dev package does (trixie: 1.21).
This script downloads that one .deb from the Debian archive, checks its pinned SHA-256,
and unpacks only ``usr/include/onnxruntime/*.h`` into ``build/ort-headers/`` (nothing is
installed system-wide). ``pip install`` then builds ``libedgevit_ort.so`` against them.
The headers' API version (21) must be no newer than the ONNX Runtime that loads the
library, which itself asks ONNX Runtime only for API version 17 (ORT 1.17 and newer).

    python native/fetch_ort_headers.py [--deb FILE] [--output DIR]

Standard library only, so it runs before any dependency is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import lzma
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

URL = "http://deb.debian.org/debian/pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb"
SHA256 = "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08"
PREFIX = "./usr/include/onnxruntime/"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "build" / "ort-headers"
MAX_DEB = 8 << 20  # the package is 85 KB


def ar_members(data: bytes) -> dict[str, bytes]:
    """The members of an ``ar`` archive (a .deb), by name."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    members, offset = {}, 8
    while offset + 60 <= len(data):
        header = data[offset:offset + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        start = offset + 60
        if start + size > len(data):
            raise ValueError(f"ar member {name} is truncated")
        members[name] = data[start:start + size]
        offset = start + size + (size & 1)
    return members


def headers(deb: bytes) -> dict[str, bytes]:
    """The ``*.h`` files under usr/include/onnxruntime of the package, by bare file name."""
    members = ar_members(deb)
    if "data.tar.xz" not in members:
        raise ValueError(f"no data.tar.xz in the package (members: {sorted(members)})")
    found = {}
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(members["data.tar.xz"]))) as tar:
        for info in tar.getmembers():
            name = info.name[len(PREFIX):] if info.name.startswith(PREFIX) else ""
            if info.isfile() and name.endswith(".h") and "/" not in name and name not in ("", ".", ".."):
                found[name] = tar.extractfile(info).read()
    if "onnxruntime_c_api.h" not in found:
        raise ValueError("the package has no onnxruntime_c_api.h")
    return found


def download() -> bytes:
    with urllib.request.urlopen(URL, timeout=60) as response:
        return response.read(MAX_DEB + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path, help="a local copy of the .deb instead of downloading it")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="include directory to write")
    args = parser.parse_args(argv)
    if (args.output / "onnxruntime_c_api.h").is_file():
        print(f"ONNX Runtime headers already in {args.output}")
        return 0
    try:
        deb = args.deb.read_bytes() if args.deb else download()
        digest = hashlib.sha256(deb).hexdigest()
        if digest != SHA256:
            raise ValueError(f"SHA-256 {digest} is not the pinned {SHA256}")
        files = headers(deb)
    except (OSError, ValueError, lzma.LZMAError, tarfile.TarError) as exc:
        print(f"error: cannot fetch ONNX Runtime's headers ({args.deb or URL}): {exc}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ort-headers-", dir=args.output.parent))
    for name, content in files.items():
        (staging / name).write_bytes(content)
    shutil.rmtree(args.output, ignore_errors=True)
    staging.rename(args.output)
    print(f"ONNX Runtime {len(files)} headers (Debian libonnxruntime-dev 1.21.0) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
