"""Reading a Core ML ML Program: its operations and their constant values, as numpy.

Weight blobs live in the package's ``weights/weight.bin``: at each referenced offset a
64-byte record (sentinel 0xDEADBEEF, data type, size, data offset) points at the raw
little-endian data; the value's declared tensor type gives the dtype and shape. Sub-byte
integers (int4, uint1..uint6: compressed weights) are packed least significant bit first,
in blobs and in immediate bytes alike, and are read unpacked, one int8/uint8 per element.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgevit.errors import ArtifactError, UnsupportedOperationError, first_line

from .files import inside, read_regular_file

# MIL DataType enum value -> numpy dtype (MIL.proto)
_NUMPY_DTYPES = {
    1: np.bool_, 10: np.float16, 11: np.float32, 12: np.float64,
    21: np.int8, 22: np.int16, 23: np.int32, 24: np.int64,
    31: np.uint8, 32: np.uint16, 33: np.uint32, 34: np.uint64,
}
# sub-byte MIL DataType -> (numpy dtype it unpacks to, bits per element)
_SUB_BYTE = {
    25: (np.int8, 4), 35: (np.uint8, 4), 36: (np.uint8, 2), 37: (np.uint8, 1), 38: (np.uint8, 6), 39: (np.uint8, 3),
}
_STRING = 2
_SENTINEL = 0xDEADBEEF


@dataclass
class Operation:
    """One MIL operation: its type, named inputs (value names or constants), outputs."""

    type: str
    name: str
    inputs: dict[str, list[Any]]  # input name -> list of ("ref", name) or ("const", value)
    outputs: list[str]
    output_dtypes: list[Any]
    attributes: dict[str, Any]  # const ops: {"val": value}


def tensor_dtype(value_type) -> Any:
    """numpy dtype of a tensor ValueType (``str`` for strings; int8/uint8 for the sub-byte
    integers). Valid types edgevit does not read (lists, dictionaries, 8-bit floats,
    bfloat16) are UnsupportedOperationError."""
    kind = value_type.WhichOneof("type")
    if kind != "tensorType":
        raise UnsupportedOperationError(f"a {kind} value")
    tensor = value_type.tensorType
    if tensor.dataType == _STRING:
        return str
    if tensor.dataType in _SUB_BYTE:
        return _SUB_BYTE[tensor.dataType][0]
    if tensor.dataType not in _NUMPY_DTYPES:
        raise UnsupportedOperationError(f"a tensor of MIL data type {tensor.dataType}")
    return _NUMPY_DTYPES[tensor.dataType]


def _bits(value_type) -> int | None:
    """Bits per element of a sub-byte tensor type (None for the others)."""
    sub_byte = _SUB_BYTE.get(value_type.tensorType.dataType)
    return sub_byte[1] if sub_byte else None


def packed_size(count: int, bits: int) -> int:
    """Bytes that ``count`` elements of ``bits`` bits take, packed."""
    return (count * bits + 7) // 8


def unpack_bits(packed: np.ndarray, bits: int, count: int, dtype=np.uint8) -> np.ndarray:
    """The first ``count`` ``bits``-wide integers (1..8 bits) packed in the uint8 array
    ``packed``, least significant bit first (an element may straddle two bytes), as uint8,
    or as two's complement for ``dtype`` int8."""
    if packed.size < packed_size(count, bits):
        raise ValueError(f"{packed.size} bytes hold fewer than {count} {bits}-bit values")
    stream = np.unpackbits(packed[:packed_size(count, bits)], bitorder="little")[:count * bits]
    values = np.packbits(stream.reshape(count, bits), axis=-1, bitorder="little").reshape(count)
    if np.dtype(dtype) != np.int8:
        return values
    return (values << (8 - bits)).view(np.int8) >> (8 - bits)  # sign-extend


def _shape(value_type) -> tuple[int, ...]:
    return tuple(int(d.constant.size) for d in value_type.tensorType.dimensions)


class WeightFile:
    """The weight files an ML Program names (``@model_path/weights/...``, relative to the
    folder of its specification), each read once, only from inside the package."""

    PREFIX = "@model_path/"

    def __init__(self, package: Path, model_dir: Path | None = None) -> None:
        self.package = Path(package)
        self.model_dir = model_dir or self.package / "Data" / "com.apple.CoreML"
        self._files: dict[str, bytes] = {}

    def file(self, file_name: str) -> bytes:
        """The bytes of weight file ``file_name`` (an ArtifactError unless it is a regular
        file inside the package)."""
        if file_name not in self._files:
            shown = repr(file_name[:200])
            if not file_name.startswith(self.PREFIX):
                raise ArtifactError(f"{self.package}: weight file {shown} is not under {self.PREFIX}")
            where = inside(self.model_dir, file_name[len(self.PREFIX):], f"{self.package}: weight file")
            self._files[file_name] = read_regular_file(where, f"{self.package}: weight file {shown}")
        return self._files[file_name]

    def contents(self) -> list[bytes]:
        """Every weight file read so far, in name order (what the integrity digest covers)."""
        return [self._files[name] for name in sorted(self._files)]

    def blob(self, file_name: str, offset: int) -> tuple[bytes, int, int]:
        """(file bytes, data start, data size) of the blob whose record is at ``offset``.

        A missing file, a record past the end, a wrong sentinel or data running past the
        end of the file is an :class:`ArtifactError`.
        """
        data = self.file(file_name)
        ok = 0 <= offset and offset + 24 <= len(data)
        if ok:
            sentinel, _, size, start = struct.unpack_from("<IIQQ", data, offset)
            ok = sentinel == _SENTINEL and start + size <= len(data)
        if not ok:
            raise ArtifactError(f"{self.package}: weight file {file_name[:200]!r} is truncated or corrupt "
                                f"(blob at {offset})")
        return data, start, size

    def read(self, file_name: str, offset: int, dtype, shape: tuple[int, ...], bits: int | None = None
             ) -> np.ndarray:
        """The blob as an array of ``dtype`` and ``shape`` (no copy), or unpacked from
        ``bits``-bit elements (int4, uint1..uint6)."""
        data, start, size = self.blob(file_name, offset)
        count = math.prod(shape)
        need = packed_size(count, bits) if bits else count * np.dtype(dtype).itemsize
        if need > size:
            kind = np.dtype(dtype).name.replace("8", str(bits)) if bits else np.dtype(dtype).name
            raise ArtifactError(f"{self.package}: blob at {offset} holds {size} bytes, "
                                f"fewer than a {kind} tensor of shape {shape}")
        if bits:
            packed = np.frombuffer(data, dtype=np.uint8, count=need, offset=start)
            return unpack_bits(packed, bits, count, dtype).reshape(shape)
        return np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape)


_MAX_LIST = 1 << 20  # items in an immediate list value (a classifier's classes)


def _decode_list(value, weights: WeightFile) -> list[Any]:
    """An immediate list of scalars (a classifier's class names or ids) as a Python list."""
    declared = value.type.listType
    items = list(value.immediateValue.list.values) if value.WhichOneof("value") == "immediateValue" else None
    if items is None or len(items) > _MAX_LIST:
        raise UnsupportedOperationError("a list value that is not an immediate list of scalars")
    if declared.length.WhichOneof("dimension") == "constant" and declared.length.constant.size != len(items):
        raise ValueError(f"a list declares {declared.length.constant.size} items and holds {len(items)}")
    decoded = []
    for item in items:
        if item.type.WhichOneof("type") != "tensorType" or item.type.tensorType.rank != 0:
            raise UnsupportedOperationError("a list of non-scalar values")
        element = decode_value(item, weights)
        decoded.append(element if isinstance(element, str) else element.reshape(()).item())
    return decoded


def decode_value(value, weights: WeightFile) -> Any:
    """A MIL Value (immediate or blob) as a numpy array, numpy scalar or str (an immediate
    list of scalars: a Python list)."""
    if value.type.WhichOneof("type") == "listType":
        return _decode_list(value, weights)
    dtype = tensor_dtype(value.type)
    shape = _shape(value.type)
    bits = _bits(value.type)
    kind = value.WhichOneof("value")
    if kind == "blobFileValue":
        return weights.read(value.blobFileValue.fileName, value.blobFileValue.offset, dtype, shape, bits)
    tensor = value.immediateValue.tensor
    field = tensor.WhichOneof("value")
    if dtype is str:
        strings = list(tensor.strings.values)
        return strings[0] if not shape else np.array(strings).reshape(shape)
    if bits:
        packed = np.frombuffer(tensor.bytes.values, dtype=np.uint8)
        array = unpack_bits(packed, bits, math.prod(shape), dtype)
    elif field == "bytes":
        array = np.frombuffer(tensor.bytes.values, dtype=dtype)
    elif field is None:
        array = np.zeros(0, dtype=dtype)
    else:
        array = np.asarray(list(getattr(tensor, field).values), dtype=dtype)
    return array.reshape(shape)


def _operation(op, weights: WeightFile) -> Operation:
    if len(op.blocks):
        raise UnsupportedOperationError("nested blocks (control flow)")
    name_attr = op.attributes.get("name")
    name = decode_value(name_attr, weights) if name_attr is not None else (op.outputs[0].name if op.outputs else "")
    attributes = {k: decode_value(v, weights) for k, v in op.attributes.items() if k != "name"}
    inputs = {
        key: [("ref", arg.name) if arg.name else ("const", decode_value(arg.value, weights))
              for arg in binding.arguments]
        for key, binding in op.inputs.items()
    }
    if op.type.startswith("constexpr_"):  # up to iOS17 a constexpr op's parameters are attributes
        inputs.update((key, [("const", value)]) for key, value in attributes.items())
        attributes = {}
    output_dtypes = [tensor_dtype(o.type) if o.type.WhichOneof("type") == "tensorType" else None for o in op.outputs]
    return Operation(op.type, str(name), inputs, [o.name for o in op.outputs], output_dtypes, attributes)


def read_program(spec, package: Path, weights: WeightFile | None = None
                 ) -> tuple[list[str], list[Operation], list[str], str]:
    """(input names, operations in order, output names, opset) of the ``main`` function."""
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{package} is not an ML Program (it is a {spec.WhichOneof('Type')} model)")
    function = spec.mlProgram.functions.get("main")
    if function is None:
        raise UnsupportedOperationError(f"{package.name}: the program has no 'main' function, the only one "
                                        f"edgevit's reference interpreter runs")
    if function.opset not in function.block_specializations:
        raise ArtifactError(f"{package}: function main has no block for its opset {function.opset[:40]!r}")
    block = function.block_specializations[function.opset]
    weights = weights or WeightFile(package)
    inputs = [i.name for i in function.inputs]
    defined = set(inputs)
    operations = []
    for index, op in enumerate(block.operations):
        where = f"{package.name}: op #{index} '{op.type[:60]}' in function main"
        try:
            operation = _operation(op, weights)
        except UnsupportedOperationError as exc:
            raise UnsupportedOperationError(
                f"{where} has {exc}, which edgevit's reference interpreter does not read") from None
        except (ValueError, TypeError, OverflowError, IndexError) as exc:  # values that do not fit their type
            raise ArtifactError(f"{where} holds a malformed value: {first_line(exc)}") from None
        for args in operation.inputs.values():
            for kind, ref in args:
                if kind == "ref" and ref not in defined:
                    raise ArtifactError(f"{where} reads {ref[:80]!r}, which no input or earlier op defines")
        defined.update(operation.outputs)
        operations.append(operation)
    missing = [name for name in block.outputs if name not in defined]
    if missing:
        raise ArtifactError(f"{package.name}: function main returns {missing[0][:80]!r}, which no op defines")
    return inputs, operations, list(block.outputs), function.opset
