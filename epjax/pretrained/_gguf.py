"""A GGUF reader and the dequantisation of its block formats, in NumPy.

GGUF (llama.cpp's file format) is a little-endian header -- magic ``GGUF``, version, tensor and metadata
counts -- followed by typed key/value metadata, a table of tensor descriptors ``(name, dims, type, offset)``
and the aligned tensor data. Two layout conventions matter to a reader:

- ``dims`` lists the fastest-varying axis first (ggml's ``ne[0]``), so the NumPy shape is ``dims`` reversed: a
  linear layer stored with dims ``[in, out]`` is the ``[out, in]`` matrix PyTorch would hold.
- quantised types pack consecutive runs of 32 values of the fastest axis into blocks, each with its own scale:

  ====== ======== ================================================ =========================================
  type   bytes    block layout                                     value ``x_i``
  ====== ======== ================================================ =========================================
  F32    4 / elt  ``float32``                                      ``x``
  F16    2 / elt  ``float16``                                      ``x``
  BF16   2 / elt  ``bfloat16`` (top half of a ``float32``)         ``x``
  Q8_0   34 / 32  ``d: f16, q[32]: int8``                          ``d q_i``
  Q4_0   18 / 32  ``d: f16, 16 bytes``: ``q_i`` = low nibble of    ``d (q_i - 8)``
                  byte ``i`` for ``i < 16``, high nibble of byte
                  ``i - 16`` otherwise
  Q4_1   20 / 32  ``d: f16, m: f16``, nibbles as Q4_0               ``d q_i + m``
  ====== ======== ================================================ =========================================

Every other tensor type -- Q5_0, Q5_1, the K-quants Q2_K .. Q6_K, the IQ and TQ types, MXFP4, ... -- is
decoded by the ``gguf`` package's ``gguf.quants.dequantize`` (block sizes from ``gguf.GGML_QUANT_SIZES``); a
type neither decodes (Q8_1, Q8_K, the integer types, ...) is refused with a ``ValueError`` naming it.

The reader parses the header itself (``gguf.GGUFReader`` builds a NumPy view per metadata element, far slower
for a large vocabulary) and memory-maps the tensor data, so nothing is read until a tensor is asked for. The
``gguf`` package is the test oracle for the reader and for every dequantiser. Every malformed input -- not a
GGUF file, a truncated or corrupt header, a tensor type nothing here decodes -- is a ``ValueError`` naming the
file and the problem.
"""

from __future__ import annotations

import importlib.metadata
import mmap
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32

# ggml type id -> (name, elements per block, bytes per block) of the types epjax dequantises itself; every
# other id is named, sized and dequantised through the ``gguf`` package when it is installed.
_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    8: ("Q8_0", 32, 34),
    30: ("BF16", 1, 2),
}
SUPPORTED_TYPES = tuple(name for name, _, _ in _TYPES.values())  # decoded here; others by gguf.quants

# GGUF metadata value types: id -> struct format (scalars), 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "?",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
_STRING, _ARRAY = 8, 9


def _import_gguf() -> Any:
    """The ``gguf`` package, or ``None`` when it is not installed."""
    try:
        import gguf
    except ImportError:  # pragma: no cover - exercised only without the optional dependency
        return None
    return gguf


def _gguf_type(type_id: int) -> Any:
    """``gguf.GGMLQuantizationType(type_id)``, or ``None`` (no gguf package, or an id it does not know)."""
    gguf = _import_gguf()
    try:
        return None if gguf is None else gguf.GGMLQuantizationType(type_id)
    except ValueError:
        return None


def type_name(type_id: int) -> str:
    """The ggml name of a tensor type id (``"Q4_1"``), also for types epjax does not dequantise itself."""
    if type_id in _TYPES:
        return _TYPES[type_id][0]
    qtype = _gguf_type(type_id)
    return f"type id {type_id}" if qtype is None else qtype.name


def block_layout(type_id: int) -> tuple[str, int, int] | None:
    """``(name, values per block, bytes per block)`` of a tensor type, or ``None`` when its size is unknown.

    epjax's own table for the types it dequantises, ``gguf.GGML_QUANT_SIZES`` for the others.
    """
    if type_id in _TYPES:
        return _TYPES[type_id]
    qtype = _gguf_type(type_id)
    gguf = _import_gguf()
    if qtype is None or qtype not in gguf.GGML_QUANT_SIZES:
        return None
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    return qtype.name, block, block_bytes


class TensorInfo(NamedTuple):
    """One tensor descriptor of a GGUF file.

    Attributes:
        name: the tensor's name, e.g. ``"blk.0.attn_q.weight"``.
        shape: the NumPy shape (GGUF's dims reversed).
        type_id: the ggml type id (:data:`SUPPORTED_TYPES` are decoded by epjax, the others by ``gguf``).
        offset: byte offset of the data in the file.
        nbytes: size of the stored data in bytes (0 for a type whose size is unknown: no ``gguf`` package,
            or an id it does not know).
    """

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        """The ggml name of the tensor's type."""
        return type_name(self.type_id)


class GGUFFile:
    """A parsed GGUF file: metadata, tensor descriptors and memory-mapped tensor data.

    Create it with :func:`read_gguf`. Tensors are dequantised on request with :meth:`tensor`.

    Attributes:
        path: the file.
        version: the GGUF version (2 or 3).
        metadata: ``key -> value``; strings are ``str``, string arrays lists of ``str``, numeric arrays NumPy
            arrays, scalars Python numbers.
        tensors: ``name -> TensorInfo`` in file order.
    """

    def __init__(
        self, path: Path, version: int, metadata: dict[str, Any], tensors: dict[str, TensorInfo], buffer: Any
    ):
        self.path = path
        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self._buffer = buffer

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor ``name`` as a read-only ``uint8`` array (no copy)."""
        info = self._info(name)
        if block_layout(info.type_id) is None:
            raise ValueError(
                f"{self.path}: tensor {info.name!r} has type {info.type_name}, whose layout epjax does not know "
                f"({_UNKNOWN_HINT}); epjax reads {', '.join(SUPPORTED_TYPES)} and every type the gguf package "
                "dequantises."
            )
        return np.frombuffer(self._buffer, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def tensor(self, name: str, dtype: Any = np.float32) -> np.ndarray:
        """Tensor ``name`` dequantised to ``dtype``, in NumPy shape order (GGUF dims reversed)."""
        info = self._info(name)
        raw = self.raw(name)
        try:
            values = dequantize(raw, info.type_id, info.shape)
        except ValueError as err:
            raise ValueError(f"{self.path}: tensor {info.name!r}: {err}") from None
        return values.astype(dtype, copy=False)

    def _info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise ValueError(f"{self.path}: no tensor named {name!r} in this GGUF file.")
        return self.tensors[name]

    def __repr__(self) -> str:
        arch = self.metadata.get("general.architecture", "?")
        return (
            f"GGUFFile({str(self.path)!r}, version={self.version}, architecture={arch!r}, "
            f"{len(self.tensors)} tensors)"
        )


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parse the header of the GGUF file at ``path`` and memory-map its tensor data.

    Raises:
        ValueError: the file is missing, is not a GGUF file, is truncated or corrupt, or is big-endian.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"GGUF file not found: {str(path)!r} does not exist or is not a file.")
    size = path.stat().st_size
    if size < 24:
        raise ValueError(f"{path}: not a GGUF file (only {size} bytes; a GGUF header alone takes 24).")
    with open(path, "rb") as f:
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if buffer[:4] != _MAGIC:
        raise ValueError(
            f"{path}: not a GGUF file (the first bytes are {bytes(buffer[:4])!r}, expected b'GGUF')."
        )
    try:
        version, metadata, tensors = _parse(buffer, size)
    except (struct.error, UnicodeDecodeError, IndexError, OverflowError, MemoryError) as err:
        raise ValueError(f"{path}: corrupt or truncated GGUF header ({type(err).__name__}: {err}).") from None
    except _Corrupt as err:
        raise ValueError(f"{path}: corrupt GGUF file: {err}.") from None
    return GGUFFile(path, version, metadata, tensors, buffer)


class _Corrupt(Exception):
    pass


class _Cursor:
    """Sequential little-endian reads from a buffer, with bounds checks."""

    def __init__(self, buffer: Any, size: int):
        self.buffer, self.size, self.pos = buffer, size, 0

    def scalar(self, fmt: str) -> Any:
        value = struct.unpack_from("<" + fmt, self.buffer, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def count(self, what: str, item_bytes: int = 1) -> int:
        n = self.scalar("Q")
        if n * item_bytes > self.size - self.pos:
            raise _Corrupt(f"{what} claims {n} items at byte {self.pos}, more than the file holds")
        return n

    def string(self) -> str:
        n = self.count("a string", 1)
        text = self.buffer[self.pos : self.pos + n].decode("utf-8")
        self.pos += n
        return text

    def value(self, value_type: int) -> Any:
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type = self.scalar("I")
            if item_type == _STRING:
                return [self.string() for _ in range(self.count("a string array", 8))]
            if item_type in _NUMPY:
                dtype = np.dtype(_NUMPY[item_type])
                n = self.count("an array", dtype.itemsize)
                out = np.frombuffer(self.buffer, dtype=dtype, count=n, offset=self.pos).copy()
                self.pos += n * dtype.itemsize
                return out
            if item_type == _ARRAY:
                return [self.value(_ARRAY) for _ in range(self.count("an array of arrays", 12))]
            raise _Corrupt(f"unknown array element type {item_type} at byte {self.pos}")
        raise _Corrupt(f"unknown metadata value type {value_type} at byte {self.pos}")


def _parse(buffer: Any, size: int) -> tuple[int, dict[str, Any], dict[str, TensorInfo]]:
    cur = _Cursor(buffer, size)
    cur.pos = 4
    version = cur.scalar("I")
    if version not in (2, 3):
        if version & 0xFFFF == 0 and version >> 16:
            raise _Corrupt(f"big-endian GGUF files are not supported (version field {version:#x})")
        raise _Corrupt(f"unsupported GGUF version {version} (supported: 2, 3)")
    tensor_count = cur.count("the tensor table", 24)
    kv_count = cur.count("the metadata table", 12)
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string()
        metadata[key] = cur.value(cur.scalar("I"))
    infos = []
    for _ in range(tensor_count):
        name = cur.string()
        n_dims = cur.scalar("I")
        if n_dims > 8:
            raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions")
        dims = [cur.scalar("Q") for _ in range(n_dims)]
        infos.append((name, tuple(reversed(dims)), cur.scalar("I"), cur.scalar("Q")))
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment < 1:
        raise _Corrupt(f"general.alignment = {alignment!r} is not a positive integer")
    data_start = -(-cur.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, shape, type_id, offset in infos:
        nbytes = 0
        layout = block_layout(type_id)
        if layout is not None:
            type_, block, block_bytes = layout
            n = int(np.prod(shape, dtype=np.int64))
            if shape and shape[-1] % block:
                raise _Corrupt(
                    f"tensor {name!r} of type {type_} has a row of {shape[-1]} "
                    f"values, not a multiple of its block size {block}"
                )
            nbytes = n // block * block_bytes
        start = data_start + offset
        if start + nbytes > size:
            raise _Corrupt(
                f"tensor {name!r} ({nbytes} bytes at byte {start}) runs past the end of the "
                f"file ({size} bytes)"
            )
        tensors[name] = TensorInfo(name, shape, type_id, start, nbytes)
    return version, metadata, tensors


_UNKNOWN_HINT = "the gguf package is not installed, or does not know this type"


def _half(blocks: np.ndarray, start: int) -> np.ndarray:
    """The little-endian float16 at bytes ``start:start+2`` of each block, as float32 ``[n, 1]``."""
    return np.ascontiguousarray(blocks[:, start : start + 2]).view("<f2").astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """``[n, 16]`` bytes -> ``[n, 32]`` 4-bit values: the 16 low nibbles, then the 16 high ones."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=1)


def dequantize(raw: np.ndarray, type_id: int | str, shape: tuple[int, ...]) -> np.ndarray:
    """Decode stored GGUF tensor bytes to float32 of NumPy ``shape`` (formulas in the module docstring).

    :data:`SUPPORTED_TYPES` are decoded here; every other type through ``gguf.quants.dequantize``.

    Args:
        raw: the stored bytes, ``uint8`` (any shape; it is flattened).
        type_id: the ggml type id or name (``"Q4_1"``).
        shape: NumPy shape of the tensor (GGUF dims reversed); its last axis a multiple of the block size.

    Returns:
        A new float32 array of ``shape``.

    Raises:
        ValueError: a type neither epjax nor the ``gguf`` package decodes, or ``raw`` of the wrong size.
    """
    if isinstance(type_id, str):
        ids = {name: i for i, (name, _, _) in _TYPES.items()}
        gguf = _import_gguf()
        if type_id not in ids and gguf is not None and type_id in gguf.GGMLQuantizationType.__members__:
            ids[type_id] = int(gguf.GGMLQuantizationType[type_id])
        if type_id not in ids:
            raise ValueError(
                f"cannot dequantise type {type_id!r} ({_UNKNOWN_HINT}); epjax reads "
                f"{', '.join(SUPPORTED_TYPES)} and every type the gguf package dequantises."
            )
        type_id = ids[type_id]
    layout = block_layout(type_id)
    if layout is None:
        raise ValueError(
            f"cannot dequantise type {type_name(type_id)} ({_UNKNOWN_HINT}); epjax reads "
            f"{', '.join(SUPPORTED_TYPES)} and every type the gguf package dequantises."
        )
    name, block, block_bytes = layout
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.asarray(raw).reshape(-1).view(np.uint8)
    if n % block or raw.size != n // block * block_bytes:
        raise ValueError(
            f"{name} data for shape {tuple(shape)} must be {n // block * block_bytes} bytes "
            f"(blocks of {block} values in {block_bytes} bytes), got {raw.size} bytes."
        )
    if type_id not in _TYPES:
        return _dequantize_with_gguf(raw, type_id, shape, block, block_bytes)
    if name == "F32":
        out = raw.view("<f4").astype(np.float32)
    elif name == "F16":
        out = raw.view("<f2").astype(np.float32)
    elif name == "BF16":
        out = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        blocks = raw.reshape(-1, block_bytes)
        d = _half(blocks, 0)
        if name == "Q8_0":
            out = d * blocks[:, 2:].view(np.int8)
        elif name == "Q4_0":
            out = d * (_nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8))
        else:  # Q4_1
            out = d * _nibbles(blocks[:, 4:]) + _half(blocks, 2)
        out = out.astype(np.float32, copy=False)
    return out.reshape(shape)


def _dequantize_with_gguf(
    raw: np.ndarray, type_id: int, shape: tuple[int, ...], block: int, block_bytes: int
) -> np.ndarray:
    """``gguf.quants.dequantize`` of ``raw`` (rows of the last axis, as the file stores them) as float32."""
    gguf = _import_gguf()
    qtype = gguf.GGMLQuantizationType(type_id)
    row_bytes = (shape[-1] if shape else 1) // block * block_bytes
    try:
        out = gguf.quants.dequantize(raw.reshape(-1, row_bytes) if row_bytes else raw, qtype)
    except NotImplementedError:
        raise ValueError(
            f"cannot dequantise type {qtype.name}: neither epjax nor the installed gguf package "
            f"({importlib.metadata.version('gguf')}) decodes it; epjax reads {', '.join(SUPPORTED_TYPES)} and "
            "every type gguf.quants.dequantize implements."
        ) from None
    return np.asarray(out, dtype=np.float32).reshape(shape)


def metadata_value(
    file: GGUFFile | Mapping[str, Any], key: str, default: Any = ..., *, path: Any = None
) -> Any:
    """``metadata[key]``, or ``default``; raise a ``ValueError`` naming the key when required and missing."""
    metadata = file.metadata if isinstance(file, GGUFFile) else file
    if key in metadata:
        return metadata[key]
    if default is ...:
        where = file.path if isinstance(file, GGUFFile) else path
        raise ValueError(f"{where}: the GGUF metadata has no {key!r} entry, which this model needs.")
    return default


__all__ = [
    "GGUFFile",
    "SUPPORTED_TYPES",
    "TensorInfo",
    "block_layout",
    "dequantize",
    "metadata_value",
    "read_gguf",
    "type_name",
]
