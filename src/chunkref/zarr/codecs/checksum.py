"""The ``crc32c`` bytes->bytes codec: appends the CRC-32C (Castagnoli) of the data as a
little-endian u32 and verifies it on decode.

Uses the ``crc32c`` package (hardware CRC, ~11 GB/s here; numcodecs' codec is 5-8x slower
because it copies the buffer).  Decoding returns a zero-copy view of the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import crc32c as _crc32c

from chunkref.errors import ChunkDecodeError
from chunkref.zarr.codecs.base import BytesBytesCodec, BytesLike, ChunkSpec, byte_view, check_configuration

__all__ = ["Crc32cCodec", "crc32c_of"]


def crc32c_of(data: BytesLike) -> int:
    """CRC-32C of any buffer."""
    return _crc32c.crc32c(data)


@dataclass(frozen=True, eq=True, repr=False)
class Crc32cCodec(BytesBytesCodec):
    """``{"name": "crc32c"}`` (no configuration)."""

    name: ClassVar[str] = "crc32c"
    inflates: ClassVar[bool] = False

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> Crc32cCodec:
        check_configuration("crc32c", configuration)
        return cls()

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        return nbytes + 4

    def encode(self, data: BytesLike, spec: ChunkSpec) -> BytesLike:
        view = byte_view(data)
        out = bytearray(view)
        out += _crc32c.crc32c(view).to_bytes(4, "little")
        return out

    def decode(self, data: BytesLike, spec: ChunkSpec, max_size: int, exact: bool = False) -> BytesLike:
        view = byte_view(data)
        n = len(view) - 4
        if n < 0:
            raise ChunkDecodeError(f"codec 'crc32c': {len(view)} bytes is too short for a checksum")
        if n > max_size or (exact and n != max_size):
            raise ChunkDecodeError(f"codec 'crc32c': payload of {n} bytes, expected {'exactly' if exact else 'at most'} {max_size}")
        payload = view[:n]
        stored = int.from_bytes(view[n:], "little")
        actual = _crc32c.crc32c(payload)
        if stored != actual:
            raise ChunkDecodeError(f"codec 'crc32c': checksum mismatch (stored {stored:#010x}, computed {actual:#010x})")
        return payload

