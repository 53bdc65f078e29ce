"""Variable-length codecs: ``vlen-utf8`` and ``vlen-bytes`` (array->bytes).

Wire format (numcodecs VLen, shared by v2 object filters and the v3 codecs): a u32le element
count, then for each element in C order a u32le byte length and the bytes.  The count must equal
the chunk's element count and every length must fit in the buffer: a hostile header can neither
make us allocate a huge object array nor read past the buffer (numcodecs' C decoder does the
per-element bounds checks, after our header checks).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numcodecs.vlen import VLenBytes, VLenUTF8

from chunkref.errors import ChunkDecodeError, CodecError
from chunkref.zarr.codecs.base import ArrayBytesCodec, BytesLike, ChunkSpec, byte_view, check_configuration

__all__ = ["VLenBytesCodec", "VLenUTF8Codec", "check_vlen_header"]

_utf8 = VLenUTF8()
_bytes = VLenBytes()


def check_vlen_header(view: memoryview, count: int, codec: str) -> None:
    """Validate the element count of a VLen buffer before decoding it."""
    if len(view) < 4:
        raise ChunkDecodeError(f"codec {codec!r}: {len(view)} bytes is too short for the element count")
    (n,) = struct.unpack_from("<I", view, 0)
    if n != count:
        raise ChunkDecodeError(f"codec {codec!r}: buffer holds {n} elements, the chunk has {count}")
    if len(view) < 4 + 4 * n:
        raise ChunkDecodeError(f"codec {codec!r}: {len(view)} bytes cannot hold {n} element lengths")


class _VLenCodec(ArrayBytesCodec):
    _numcodec: ClassVar[Any]
    _kinds: ClassVar[str]

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> _VLenCodec:
        check_configuration(cls.name, configuration)
        return cls()

    def configuration(self) -> dict[str, Any]:
        # zarr-python writes an empty configuration object for these.
        return {}

    def evolve(self, spec: ChunkSpec) -> _VLenCodec:
        if spec.dtype.kind not in self._kinds:
            raise CodecError(f"codec {self.name!r} cannot encode dtype {spec.dtype}")
        return self

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> BytesLike:
        array = np.asarray(array)
        if array.shape != spec.shape:
            raise CodecError(f"codec {self.name!r}: array of shape {array.shape} does not match the chunk shape {spec.shape}")
        if array.dtype != object:
            array = array.astype(object)
        try:
            return self._numcodec.encode(np.ascontiguousarray(array))
        except (TypeError, ValueError, UnicodeError) as exc:
            raise CodecError(f"codec {self.name!r}: cannot encode: {exc}") from exc

    def decode(self, data: BytesLike, spec: ChunkSpec) -> np.ndarray:
        view = byte_view(data)
        check_vlen_header(view, spec.size, self.name)
        try:
            out = self._numcodec.decode(view)
        except (ValueError, UnicodeError) as exc:
            raise ChunkDecodeError(f"codec {self.name!r}: {exc}") from exc
        out = out.reshape(spec.shape)
        if spec.dtype != out.dtype:
            out = out.astype(spec.dtype)
        return out


@dataclass(frozen=True, eq=True, repr=False)
class VLenUTF8Codec(_VLenCodec):
    """``{"name": "vlen-utf8", "configuration": {}}``: variable-length UTF-8 strings."""

    name: ClassVar[str] = "vlen-utf8"
    _numcodec: ClassVar[Any] = _utf8
    _kinds: ClassVar[str] = "OTU"


@dataclass(frozen=True, eq=True, repr=False)
class VLenBytesCodec(_VLenCodec):
    """``{"name": "vlen-bytes", "configuration": {}}``: variable-length byte strings."""

    name: ClassVar[str] = "vlen-bytes"
    _numcodec: ClassVar[Any] = _bytes
    _kinds: ClassVar[str] = "OS"
