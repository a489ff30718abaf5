"""Read the metadata table of a .tflite flatbuffer with no dependency at all.

Only what edgevit needs: ``Model.metadata[i] = {name, buffer}`` and ``Model.buffers[j].data``
(TFLite schema field ids: Model.buffers = 4, Model.metadata = 6; Metadata.name = 0,
Metadata.buffer = 1; Buffer.data = 0). Devices with only ``tflite_runtime`` can read
edgevit metadata too.
"""

from __future__ import annotations

import io
import struct
import zipfile

from edgevit.errors import ArtifactError

STANDARD_METADATA_KEY = "TFLITE_METADATA"  # the TFLite Model Metadata entry app runtimes read


class _Table:
    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, field_id: int) -> int | None:
        entry = 4 + 2 * field_id
        if entry >= self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + offset if offset else None

    def _indirect(self, field_id: int) -> int | None:
        at = self._field(field_id)
        return None if at is None else at + struct.unpack_from("<I", self.buf, at)[0]

    def u32(self, field_id: int, default: int = 0) -> int:
        at = self._field(field_id)
        return default if at is None else struct.unpack_from("<I", self.buf, at)[0]

    def _vector(self, field_id: int, item_size: int) -> tuple[int, int] | None:
        """(start, length) of a vector field, checked to lie inside the buffer."""
        at = self._indirect(field_id)
        if at is None:
            return None
        length = struct.unpack_from("<I", self.buf, at)[0]
        if at + 4 + length * item_size > len(self.buf):
            raise ValueError(f"a vector of {length} items runs past the end of the file")
        return at + 4, length

    def bytes_(self, field_id: int) -> bytes | None:
        vector = self._vector(field_id, 1)
        if vector is None:
            return None
        start, length = vector
        return self.buf[start: start + length]

    def tables(self, field_id: int) -> list["_Table"]:
        vector = self._vector(field_id, 4)
        if vector is None:
            return []
        start, count = vector
        items = []
        for i in range(count):
            slot = start + 4 * i
            items.append(_Table(self.buf, slot + struct.unpack_from("<I", self.buf, slot)[0]))
        return items


def read_metadata_entries(data: bytes, source: str = "model") -> dict[str, bytes]:
    """Metadata name -> payload bytes of a TFLite model (``ArtifactError`` if malformed)."""
    try:
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ValueError("no TFL3 file identifier")
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        buffers = model.tables(4)
        entries = {}
        for meta in model.tables(6):
            name = (meta.bytes_(0) or b"").decode("utf-8", "replace")
            index = meta.u32(1)
            payload = buffers[index].bytes_(0) if index < len(buffers) else None
            entries[name] = payload or b""
        return entries
    except (struct.error, ValueError, IndexError) as exc:
        raise ArtifactError(f"{source} is not a valid TFLite flatbuffer (truncated or corrupt: {exc})") from None


def packed_files(data: bytes) -> list[str]:
    """Names of the files packed in the zip archive after a .tflite flatbuffer (the
    metadata's associated files, such as ``labels.txt``); [] when there is none."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return []
