# format.py: the .mixrt file format of FORMAT.md: its constants, a streaming writer and a small
# memory-mapped reader (the C++ core has its own validating reader, cpp/src/format/model_file.cpp).
# Part sizes and layouts of the dtypes come from mixrt.quant.layouts. Tested by
# tests/test_convert.py (round trips, layout, refusals, no partial files) and
# tests/test_quant_layouts.py (quantized dtypes).
from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .quant import blockfp, layouts

MAGIC = b"MIXRT\x00\r\n"
VERSION_MAJOR = 1
VERSION_MINOR = 4  # the highest minor version this writer knows (FORMAT.md 2)
ALIGNMENT = 64
HEADER_SIZE = 128

# Tensor dtypes (FORMAT.md 5) by code; the quantized ones (since 1.1) are 2-dim only.
DTYPE_F32 = 0
DTYPE_F16 = 1
DTYPE_Q8 = 2
DTYPE_Q4 = 3
DTYPE_MIX = 4
DTYPE_CODES = {"f32": DTYPE_F32, "f16": DTYPE_F16, "q8": DTYPE_Q8, "q4": DTYPE_Q4,
               "mix": DTYPE_MIX,
               # the block formats with a shared exponent (FORMAT.md 5.6, quant/blockfp.py)
               "bfp8": 5, "bfp6": 6, "bfp5": 7, "bfp4": 8, "bfp3": 9, "mxint8": 10, "mxfp4": 11,
               "quik": 12}
DTYPE_NAMES = {code: name for name, code in DTYPE_CODES.items()}
# The minor version that introduced each dtype: a file's version_minor is the highest it uses.
_DTYPE_SINCE = {code: 0 if code < DTYPE_Q8 else 1 if code <= DTYPE_MIX else 2 if code <= 11 else 3
                for code in DTYPE_NAMES}
# Metadata keys of the model variants of FORMAT.md 3.3 and the pre-tokenizers of 3.2 (since 1.4):
# a file with any of them is 1.4.
_VARIANT_KEY_PREFIXES = ("llama.rope.", "llama.bias.", "llama.sliding_window", "tokenizer.pre",
                         "tokenizer.ignore_merges", "tokenizer.normalizer")
_FLOAT_DTYPES = {DTYPE_F32: np.dtype("<f4"), DTYPE_F16: np.dtype("<f2")}  # one part, any dims

# Metadata value types (FORMAT.md 3).
META_I64 = 1
META_F64 = 2
META_STRING = 3
META_STRING_ARRAY = 4
META_F32_ARRAY = 5
META_I32_ARRAY = 6

MAX_NAME_BYTES = 256
MAX_DIMS = 4
_KEY_PATTERN = re.compile(r"[a-z0-9_.]+")
# magic, version_major, version_minor, alignment, flags, metadata_offset, metadata_size,
# tensor_table_offset, tensor_table_size, data_offset, data_size, file_size, 48 reserved bytes.
_HEADER = struct.Struct("<8s4I7Q48x")
assert _HEADER.size == HEADER_SIZE


class FormatError(ValueError):
    """Data that cannot go into (or did not come out of) a valid .mixrt file."""


def part_sizes(dtype: int, dims: tuple[int, ...], k4: int = 0, nnz: int = 0, out_cols: int = 0) -> list[int]:
    """The exact byte size of each part of a tensor of this dtype and dims (FORMAT.md 5); k4 and
    nnz (4-bit columns, outliers) only for mix, out_cols (fp16 columns) only for quik."""
    m, k = (1, math.prod(dims)) if dtype in _FLOAT_DTYPES else dims
    return layouts.part_sizes(DTYPE_NAMES[dtype], m, k, k4, nnz, out_cols)


def _align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<I", len(data)) + data


def _checked_name(kind: str, name: str, pattern: re.Pattern | None = None) -> bytes:
    """Encodes a metadata key or tensor name after checking the rules of FORMAT.md 3 and 4."""
    size = len(name.encode("utf-8"))
    if not 1 <= size <= MAX_NAME_BYTES:
        raise FormatError(f"{kind} {name!r}: expected 1..{MAX_NAME_BYTES} bytes, found {size}")
    if pattern is not None and not pattern.fullmatch(name):
        raise FormatError(f"{kind} {name!r}: expected only the characters [a-z0-9_.]")
    return _string(name)


def _encode_value(key: str, value: Any) -> bytes:
    """Type code and encoding of one metadata value; Python types map as FORMAT.md 3 lists."""
    if isinstance(value, (bool, int)):
        if not -(2**63) <= value < 2**63:
            raise FormatError(f"metadata {key}: {value} does not fit in an i64")
        return struct.pack("<Iq", META_I64, value)
    if isinstance(value, float):
        return struct.pack("<Id", META_F64, value)
    if isinstance(value, str):
        return struct.pack("<I", META_STRING) + _string(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return (struct.pack("<IQ", META_STRING_ARRAY, len(value))
                + b"".join(_string(item) for item in value))
    if isinstance(value, np.ndarray) and value.ndim == 1:
        if value.dtype == np.float32:
            return struct.pack("<IQ", META_F32_ARRAY, value.size) + value.astype("<f4").tobytes()
        if value.dtype == np.int32:
            return struct.pack("<IQ", META_I32_ARRAY, value.size) + value.astype("<i4").tobytes()
    kind = f"numpy {value.dtype} array of {value.ndim} dims" if isinstance(value, np.ndarray) \
        else type(value).__name__
    raise TypeError(f"metadata {key}: a {kind} has no .mixrt type (expected bool, int, float, "
                    "str, list of str, or 1-dim numpy float32 or int32 array)")


@dataclass(frozen=True)
class _Declared:
    name: str
    dtype: int
    dims: tuple[int, ...]
    sizes: tuple[int, ...]  # bytes of each part


class MixrtWriter:
    """Writes one .mixrt file in a single pass, holding at most one tensor's data at a time.

    with MixrtWriter(path) as writer:
        writer.add_metadata({...})
        writer.declare_tensor(name, "f16", dims)    # every tensor, before any data
        writer.declare_tensor(name, "mix", (m, k), k4=k4, nnz=nnz)
        writer.write_tensor(name, array)            # then the data, in declared order:
        writer.write_tensor(name, parts)            # an array, or a quantized dtype's parts

    The file is built as a temporary next to `path` and renamed onto it only when the block ends
    without an exception and every declared tensor was written; otherwise nothing is left behind.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.temp_path = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._metadata: dict[str, bytes] = {}
        self._tensors: list[_Declared] = []
        self._layout_written = False
        self._data_offsets: list[list[int]] = []  # absolute file offset of each tensor's parts
        self._file_size = 0
        self._written = 0
        self._file = None

    def __enter__(self) -> MixrtWriter:
        self._file = open(self.temp_path, "wb")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._finish()
        except BaseException:
            self._discard()
            raise

    def add_metadata(self, entries: dict[str, Any]) -> None:
        self._require_layout_open("add_metadata")
        for key, value in entries.items():
            if key in self._metadata:
                raise FormatError(f"metadata {key}: duplicate key")
            self._metadata[key] = (_checked_name("metadata key", key, _KEY_PATTERN)
                                   + _encode_value(key, value))

    def declare_tensor(self, name: str, dtype: str, dims, k4: int = 0, nnz: int = 0,
                       out_cols: int = 0) -> None:
        """Declares a tensor: its dtype name and dims, for mix its 4-bit columns k4 and outlier
        count nnz, for quik its fp16 columns out_cols, which fix the part sizes."""
        self._require_layout_open("declare_tensor")
        if dtype not in DTYPE_CODES:
            raise FormatError(f"tensor {name}: dtype expected one of {sorted(DTYPE_CODES)}, "
                              f"found {dtype!r}")
        dims = tuple(int(d) for d in dims)
        if not 1 <= len(dims) <= MAX_DIMS or min(dims) < 1:
            raise FormatError(f"tensor {name}: dims expected 1..{MAX_DIMS} values >= 1, "
                              f"found {list(dims)}")
        if any(t.name == name for t in self._tensors):
            raise FormatError(f"tensor {name}: declared twice")
        _checked_name("tensor name", name)
        code = DTYPE_CODES[dtype]
        if code not in _FLOAT_DTYPES and len(dims) != 2:
            raise FormatError(f"tensor {name}: a {dtype} tensor expected 2 dims, "
                              f"found {list(dims)}")
        if code == DTYPE_MIX:
            if dims[1] > layouts.MAX_MIX_K:
                raise FormatError(f"tensor {name}: mix K expected <= {layouts.MAX_MIX_K}, "
                                  f"found {dims[1]}")
            if k4 % layouts.GROUP or not 0 <= k4 <= dims[1]:
                raise FormatError(f"tensor {name}: k4 expected a multiple of {layouts.GROUP} "
                                  f"in 0..{dims[1]}, found {k4}")
            if not 0 <= nnz < 2**32:
                raise FormatError(f"tensor {name}: nnz expected 0..2^32-1, found {nnz}")
        elif k4 or nnz:
            raise FormatError(f"tensor {name}: k4 and nnz expected only for mix, found "
                              f"k4={k4}, nnz={nnz} for {dtype}")
        if dtype == "quik" and not 0 <= out_cols <= dims[1]:
            raise FormatError(f"tensor {name}: out_cols expected 0..{dims[1]}, found {out_cols}")
        if dtype != "quik" and out_cols:
            raise FormatError(f"tensor {name}: out_cols expected only for quik, found {out_cols} for {dtype}")
        self._tensors.append(_Declared(name, code, dims, tuple(part_sizes(code, dims, k4, nnz, out_cols))))

    def write_tensor(self, name: str, data) -> None:
        """Writes the data of the next declared tensor: for f32/f16 an array of its dims (converted
        to the dtype), for a quantized dtype the list of its parts (as the mixrt.quant pack
        functions return them), each exactly the declared size."""
        if not self._layout_written:
            self._write_layout()
        if self._written == len(self._tensors):
            raise FormatError(f"tensor {name}: not declared, or written twice")
        tensor = self._tensors[self._written]
        if name != tensor.name:
            raise FormatError(f"tensor {name}: written out of order, expected {tensor.name} next")
        parts = ([self._float_part(tensor, data)] if tensor.dtype in _FLOAT_DTYPES
                 else self._quantized_parts(tensor, data))
        for part, offset in zip(parts, self._data_offsets[self._written]):
            self._file.write(bytes(offset - self._file.tell()))
            self._file.write(part.data)
        self._written += 1

    @staticmethod
    def _float_part(tensor: _Declared, array) -> np.ndarray:
        array = np.asarray(array)
        if array.shape != tensor.dims:
            raise FormatError(f"tensor {tensor.name}: dims expected {list(tensor.dims)}, "
                              f"found {list(array.shape)}")
        with np.errstate(over="ignore"):  # overflow to inf is reported below
            stored = np.ascontiguousarray(array, dtype=_FLOAT_DTYPES[tensor.dtype])
        if not np.isfinite(stored).all():
            if np.isfinite(array).all():
                raise FormatError(f"tensor {tensor.name}: values expected within the "
                                  f"{DTYPE_NAMES[tensor.dtype]} range, found up to "
                                  f"{np.abs(array).max():g}")
            raise FormatError(f"tensor {tensor.name}: values expected finite, "
                              f"found NaN or infinity")
        return stored

    @staticmethod
    def _quantized_parts(tensor: _Declared, parts) -> list[np.ndarray]:
        """The parts as contiguous arrays after checking their count, types (the part's own, or
        uint8 for raw bytes), byte sizes, and that float parts (scales, mins, outliers) are
        finite."""
        dtype = DTYPE_NAMES[tensor.dtype]
        if isinstance(parts, np.ndarray) or len(parts) != len(tensor.sizes):
            raise FormatError(f"tensor {tensor.name}: a {dtype} tensor expected a list of "
                              f"{len(tensor.sizes)} parts")
        checked = []
        for i, (part, size, part_dtype) in enumerate(zip(parts, tensor.sizes,
                                                         layouts.PART_DTYPES[dtype])):
            part = np.ascontiguousarray(part)
            if part.dtype not in (part_dtype, np.uint8):
                raise FormatError(f"tensor {tensor.name}: part {i} expected {part_dtype} values "
                                  f"or raw bytes, found {part.dtype}")
            if part.nbytes != size:
                raise FormatError(f"tensor {tensor.name}: part {i} expected {size} bytes, "
                                  f"found {part.nbytes}")
            if part_dtype.kind == "f" and not np.isfinite(part.reshape(-1).view(part_dtype)).all():
                raise FormatError(f"tensor {tensor.name}: part {i} values expected finite, "
                                  f"found NaN or infinity")
            checked.append(part)
        if dtype in layouts.BLOCK_FORMATS and (checked[1].view(np.uint8) > blockfp.EXP_MAX).any():
            raise FormatError(f"tensor {tensor.name}: {dtype} shared exponents expected at most "
                              f"{blockfp.EXP_MAX}, found 255 (NaN)")
        return checked

    def _require_layout_open(self, method: str) -> None:
        if self._layout_written:
            raise FormatError(f"{method}: called after tensor data was written")

    def _write_layout(self) -> None:
        """Writes header, metadata and tensor table; fixes where each part's data goes (each at
        the next aligned offset)."""
        metadata = struct.pack("<Q", len(self._metadata)) + b"".join(self._metadata.values())
        table = [struct.pack("<Q", len(self._tensors))]
        data_end = 0
        relative_offsets = []
        for tensor in self._tensors:
            offsets = []
            for size in tensor.sizes:
                offsets.append(_align(data_end))
                data_end = offsets[-1] + size
            table.append(_string(tensor.name)
                         + struct.pack(f"<II{len(tensor.dims)}QI", tensor.dtype, len(tensor.dims),
                                       *tensor.dims, len(tensor.sizes))
                         + b"".join(struct.pack("<QQ", offset, size)
                                    for offset, size in zip(offsets, tensor.sizes)))
            relative_offsets.append(offsets)
        table = b"".join(table)
        table_offset = HEADER_SIZE + len(metadata)
        data_offset = _align(table_offset + len(table))
        minor = max([_DTYPE_SINCE[t.dtype] for t in self._tensors]
                    + [4 for key in self._metadata if key.startswith(_VARIANT_KEY_PREFIXES)], default=0)
        self._file.write(_HEADER.pack(MAGIC, VERSION_MAJOR, minor, ALIGNMENT, 0,
                                      HEADER_SIZE, len(metadata), table_offset, len(table),
                                      data_offset, data_end, data_offset + data_end))
        self._file.write(metadata)
        self._file.write(table)
        self._file.write(bytes(data_offset - self._file.tell()))
        self._data_offsets = [[data_offset + offset for offset in offsets]
                              for offsets in relative_offsets]
        self._file_size = data_offset + data_end
        self._layout_written = True

    def _finish(self) -> None:
        if not self._layout_written:
            self._write_layout()
        unwritten = [t.name for t in self._tensors[self._written:]]
        if unwritten:
            raise FormatError(f"tensors declared but never written: {', '.join(unwritten)}")
        assert self._file.tell() == self._file_size
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temp_path, self.path)

    def _discard(self) -> None:
        self._file.close()
        self.temp_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: int
    dims: tuple[int, ...]
    parts: tuple[tuple[int, int], ...]  # (offset from data_offset, size in bytes) of each part
    _file: np.memmap
    _data_offset: int

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, f"unknown dtype {self.dtype}")

    def part_views(self) -> list[np.ndarray]:
        """Each part as a read-only uint8 view into the mapped file (what mixrt.quant's unpack
        and dequantize functions take)."""
        start = self._data_offset
        return [self._file[start + offset:start + offset + size] for offset, size in self.parts]

    def array(self) -> np.ndarray:
        """The tensor as a read-only numpy view into the mapped file (f32 and f16 only)."""
        if self.dtype not in _FLOAT_DTYPES:
            raise FormatError(f"tensor {self.name}: a {self.dtype_name} tensor has no numpy view "
                              f"(dequantize() decodes it)")
        offset, _ = self.parts[0]
        return np.ndarray(self.dims, _FLOAT_DTYPES[self.dtype], buffer=self._file,
                          offset=self._data_offset + offset)

    def dequantize(self) -> np.ndarray:
        """The tensor's values as a float32 array of its dims, whatever its dtype."""
        if self.dtype in _FLOAT_DTYPES:
            return self.array().astype(np.float32)
        return layouts.dequantize(self.dtype_name, self.part_views(), *self.dims)


@dataclass(frozen=True)
class MixrtFile:
    header: dict[str, int]
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]


class _Cursor:
    """Reads the encodings of FORMAT.md 3 and 4 from one section's bytes."""

    def __init__(self, data: bytes, section: str):
        self.data, self.section, self.pos = data, section, 0

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise FormatError(f"{self.section}: truncated at byte {self.pos}")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        (size,) = self.unpack("<I")
        return self.unpack(f"{size}s")[0].decode("utf-8")

    def array(self, dtype: str) -> np.ndarray:
        """A numeric array in native byte order, decoded from its little-endian `dtype`."""
        (count,) = self.unpack("<Q")
        raw = self.unpack(f"{count * np.dtype(dtype).itemsize}s")[0]
        return np.frombuffer(raw, dtype=dtype).astype(np.dtype(dtype).newbyteorder("="))

    def value(self, kind: int) -> Any:
        if kind == META_I64:
            return self.unpack("<q")[0]
        if kind == META_F64:
            return self.unpack("<d")[0]
        if kind == META_STRING:
            return self.string()
        if kind == META_STRING_ARRAY:
            (count,) = self.unpack("<Q")
            return [self.string() for _ in range(count)]
        if kind == META_F32_ARRAY:
            return self.array("<f4")
        if kind == META_I32_ARRAY:
            return self.array("<i4")
        raise FormatError(f"{self.section}: unknown value type {kind}")

    def done(self) -> None:
        if self.pos != len(self.data):
            raise FormatError(f"{self.section}: expected {len(self.data)} bytes, "
                              f"consumed {self.pos}")


def read_mixrt(path: str | os.PathLike) -> MixrtFile:
    """Maps a .mixrt file and decodes its header, metadata and tensor table (light checks only)."""
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    if mapped.size < HEADER_SIZE:
        raise FormatError(f"{path}: expected at least {HEADER_SIZE} bytes, found {mapped.size}")
    fields = _HEADER.unpack(mapped[:HEADER_SIZE].tobytes())
    header = dict(zip(("magic", "version_major", "version_minor", "alignment", "flags",
                       "metadata_offset", "metadata_size", "tensor_table_offset",
                       "tensor_table_size", "data_offset", "data_size", "file_size"), fields))
    if header["magic"] != MAGIC:
        raise FormatError(f"{path}: magic expected {MAGIC!r}, found {header['magic']!r}")
    if header["version_major"] != VERSION_MAJOR:
        raise FormatError(f"{path}: version_major expected {VERSION_MAJOR}, "
                          f"found {header['version_major']}")
    if header["file_size"] != mapped.size:
        raise FormatError(f"{path}: file_size expected {header['file_size']}, "
                          f"found {mapped.size}")

    def section(offset: str, size: str, name: str) -> _Cursor:
        start = header[offset]
        return _Cursor(mapped[start:start + header[size]].tobytes(), name)

    cursor = section("metadata_offset", "metadata_size", "metadata")
    metadata = {}
    for _ in range(cursor.unpack("<Q")[0]):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.unpack("<I")[0])
    cursor.done()

    cursor = section("tensor_table_offset", "tensor_table_size", "tensor table")
    tensors = {}
    for _ in range(cursor.unpack("<Q")[0]):
        name = cursor.string()
        dtype, ndim = cursor.unpack("<II")
        dims = cursor.unpack(f"<{ndim}Q")
        (nparts,) = cursor.unpack("<I")
        parts = tuple(cursor.unpack("<QQ") for _ in range(nparts))
        tensors[name] = TensorInfo(name, dtype, dims, parts, mapped, header["data_offset"])
    cursor.done()
    return MixrtFile(header, metadata, tensors)
