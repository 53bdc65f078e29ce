"""The ``bytes`` array->bytes codec (v3 core) and its v2 counterpart.

v3 ``bytes`` lays the elements out in C order with the configured ``endian``; the endian is
required for multi-byte types and absent for 1-byte ones (zarr-python drops it there, and so do
we on :meth:`BytesCodec.evolve`).  The pre-1.0 name ``endian`` is accepted on read.

In v2 the byte order lives in the dtype itself (``<i4``, ``>f8``, structured fields each with
their own), so :class:`RawBytesCodec` writes the array's memory as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from chunkref.errors import ChunkDecodeError, CodecError
from chunkref.zarr.codecs.base import (
    ArrayBytesCodec,
    BytesLike,
    ChunkSpec,
    check_configuration,
    is_variable_dtype,
)

__all__ = ["BytesCodec", "RawBytesCodec", "has_endianness"]

_ENDIANS = ("little", "big")
_NATIVE = sys.byteorder


def has_endianness(dtype: np.dtype) -> bool:
    """Whether the byte order matters for ``dtype`` (any multi-byte numeric component)."""
    if dtype.fields:
        return any(has_endianness(f[0]) for f in dtype.fields.values())
    if dtype.subdtype is not None:
        return has_endianness(dtype.subdtype[0])
    if dtype.kind == "U":  # UCS-4 code units
        return dtype.itemsize > 0
    return dtype.kind in "iufcmM" and dtype.itemsize > 1


def _check_array(array: np.ndarray, spec: ChunkSpec, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != spec.shape:
        raise CodecError(f"codec {name!r}: array of shape {array.shape} does not match the chunk shape {spec.shape}")
    return array


def _from_bytes(data: BytesLike, dtype: np.dtype, spec: ChunkSpec, name: str) -> np.ndarray:
    expected = spec.size * dtype.itemsize
    try:
        arr = np.frombuffer(data, dtype=dtype)
    except ValueError as exc:  # length not a multiple of the item size
        raise ChunkDecodeError(f"codec {name!r}: {memoryview(data).nbytes} bytes do not hold {spec.shape} {dtype}") from exc
    if arr.nbytes != expected:
        raise ChunkDecodeError(f"codec {name!r}: {arr.nbytes} bytes, expected {expected} for {spec.shape} {dtype}")
    return arr.reshape(spec.shape)


@dataclass(frozen=True, eq=True, repr=False)
class BytesCodec(ArrayBytesCodec):
    """``{"name": "bytes", "configuration": {"endian": "little" | "big"}}``."""

    name: ClassVar[str] = "bytes"
    aliases: ClassVar[tuple[str, ...]] = ("endian",)
    endian: str | None = _NATIVE

    def __post_init__(self) -> None:
        if self.endian is not None and self.endian not in _ENDIANS:
            raise CodecError(f"codec 'bytes': endian must be 'little' or 'big', got {self.endian!r}")

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> BytesCodec:
        conf = check_configuration("bytes", configuration, ("endian",))
        return cls(endian=conf.get("endian"))

    def configuration(self) -> dict[str, Any] | None:
        return None if self.endian is None else {"endian": self.endian}

    def evolve(self, spec: ChunkSpec) -> BytesCodec:
        if is_variable_dtype(spec.dtype):
            raise CodecError(
                f"codec 'bytes' cannot encode the variable-length dtype {spec.dtype}; use vlen-utf8 or vlen-bytes"
            )
        if not has_endianness(spec.dtype):
            return self if self.endian is None else BytesCodec(endian=None)
        if self.endian is None:
            if spec.dtype.fields:
                # zarr-python 3.1 writes structured types as {"name": "bytes"} with no endian,
                # in its (little-endian) native field order: read them that way.
                return BytesCodec(endian="little")
            raise CodecError(f"codec 'bytes': 'endian' is required for the multi-byte dtype {spec.dtype}")
        return self

    def stored_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype whose memory layout is the stored bytes."""
        if self.endian is None or not has_endianness(dtype):
            return dtype
        return dtype.newbyteorder("<" if self.endian == "little" else ">")

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        return nbytes

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> BytesLike:
        array = _check_array(array, spec, self.name)
        target = self.stored_dtype(spec.dtype)
        # Returned as a typed C-contiguous array: the next codec reads its buffer directly.
        return np.ascontiguousarray(array, dtype=target)

    def decode(self, data: BytesLike, spec: ChunkSpec) -> np.ndarray:
        stored = self.stored_dtype(spec.dtype)
        arr = _from_bytes(data, stored, spec, self.name)
        if stored != spec.dtype:
            arr = arr.astype(spec.dtype)
        return arr


@dataclass(frozen=True, eq=True, repr=False)
class RawBytesCodec(ArrayBytesCodec):
    """The implicit array->bytes step of a v2 chain: the chunk's memory, in C order, as its dtype
    says (byte order included).  Not registered: it has no v3 JSON form of its own; its
    :meth:`to_json` gives the equivalent v3 ``bytes`` codec."""

    name: ClassVar[str] = "bytes"

    def evolve(self, spec: ChunkSpec) -> RawBytesCodec:
        if is_variable_dtype(spec.dtype):
            raise CodecError(f"a v2 array of dtype {spec.dtype} needs an object codec as its first filter")
        return self

    def configuration(self) -> dict[str, Any] | None:
        return None

    def v3_equivalent(self, dtype: np.dtype) -> BytesCodec:
        """The v3 ``bytes`` codec that stores the same bytes for ``dtype``."""
        if not has_endianness(dtype):
            return BytesCodec(endian=None)
        order = dtype.byteorder if dtype.byteorder in "<>" else ("<" if _NATIVE == "little" else ">")
        if dtype.fields:
            orders = {f[0].byteorder for f in dtype.fields.values() if has_endianness(f[0])}
            if len(orders - {"="}) > 1:
                raise CodecError(f"dtype {dtype} mixes byte orders; no v3 bytes codec is equivalent")
        return BytesCodec(endian="little" if order == "<" else "big")

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        return nbytes

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> BytesLike:
        array = _check_array(array, spec, self.name)
        return np.ascontiguousarray(array, dtype=spec.dtype)

    def decode(self, data: BytesLike, spec: ChunkSpec) -> np.ndarray:
        return _from_bytes(data, spec.dtype, spec, self.name)
