"""The v3 compressor codecs: ``gzip``, ``zstd`` and ``blosc`` (bytes->bytes).

Encoding produces what zarr-python 3 produces (zstd and blosc through numcodecs, byte for
byte); gzip is written by libdeflate (a valid RFC 1952 container, deterministic: no mtime).
Decoding is bounded by the size the pipeline expects (see :mod:`.bounded`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import deflate
import numcodecs.blosc
import numcodecs.zstd

from chunkref.errors import CodecError
from chunkref.zarr.codecs import bounded
from chunkref.zarr.codecs.base import BytesBytesCodec, BytesLike, ChunkSpec, byte_view, check_configuration

__all__ = ["BLOSC_CNAMES", "BLOSC_SHUFFLES", "BloscCodec", "GzipCodec", "ZstdCodec", "compressed_bound"]


def compressed_bound(nbytes: int) -> int:
    """An upper bound of what any of these compressors makes of ``nbytes`` (incompressible data
    grows by a few header bytes per block)."""
    return nbytes + nbytes // 16 + 1024


def _int(name: str, key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CodecError(f"codec {name!r}: {key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


@dataclass(frozen=True, eq=True, repr=False)
class GzipCodec(BytesBytesCodec):
    """``{"name": "gzip", "configuration": {"level": 0..9}}``: a gzip (RFC 1952) container."""

    name: ClassVar[str] = "gzip"
    level: int = 5

    def __post_init__(self) -> None:
        _int("gzip", "level", self.level, 0, 9)

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> GzipCodec:
        conf = check_configuration("gzip", configuration, ("level",))
        return cls(**conf)

    def configuration(self) -> dict[str, Any]:
        return {"level": self.level}

    def max_encoded_size(self, nbytes: int, spec: ChunkSpec) -> int:
        return compressed_bound(nbytes)

    def encode(self, data: BytesLike, spec: ChunkSpec) -> BytesLike:
        return deflate.gzip_compress(byte_view(data), self.level)

    def decode(self, data: BytesLike, spec: ChunkSpec, max_size: int, exact: bool = False) -> BytesLike:
        return bounded.gzip_decompress(data, max_size, exact, "gzip")


@dataclass(frozen=True, eq=True, repr=False)
class ZstdCodec(BytesBytesCodec):
    """``{"name": "zstd", "configuration": {"level": int, "checksum": bool}}``."""

    name: ClassVar[str] = "zstd"
    level: int = 0
    checksum: bool = False
    _codec: Any = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        _int("zstd", "level", self.level, -131072, 22)
        if not isinstance(self.checksum, bool):
            raise CodecError(f"codec 'zstd': checksum must be a boolean, got {self.checksum!r}")
        object.__setattr__(self, "_codec", numcodecs.zstd.Zstd(level=self.level, checksum=self.checksum))

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> ZstdCodec:
        conf = check_configuration("zstd", configuration, ("level", "checksum"))
        return cls(**conf)

    def configuration(self) -> dict[str, Any]:
        # zarr-python always writes checksum, false included; so do we.
        return {"level": self.level, "checksum": self.checksum}

    def max_encoded_size(self, nbytes: int, spec: ChunkSpec) -> int:
        return compressed_bound(nbytes)

    def encode(self, data: BytesLike, spec: ChunkSpec) -> BytesLike:
        return self._codec.encode(data)

    def decode(self, data: BytesLike, spec: ChunkSpec, max_size: int, exact: bool = False) -> BytesLike:
        return bounded.zstd_decompress(data, max_size, exact, "zstd")


BLOSC_CNAMES = ("lz4", "lz4hc", "blosclz", "zstd", "snappy", "zlib")
BLOSC_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@dataclass(frozen=True, eq=True, repr=False)
class BloscCodec(BytesBytesCodec):
    """``{"name": "blosc", "configuration": {"typesize", "cname", "clevel", "shuffle", "blocksize"}}``.

    ``shuffle`` is a string in v3 (``"noshuffle"``, ``"shuffle"``, ``"bitshuffle"``).  When
    ``typesize`` or ``shuffle`` is absent, :meth:`evolve` derives it from the dtype as
    zarr-python does (typesize = item size; bitshuffle for 1-byte items, else shuffle).
    """

    name: ClassVar[str] = "blosc"
    cname: str = "zstd"
    clevel: int = 5
    shuffle: str | None = None
    typesize: int | None = None
    blocksize: int = 0
    _codec: Any = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.cname not in BLOSC_CNAMES:
            raise CodecError(f"codec 'blosc': cname must be one of {list(BLOSC_CNAMES)}, got {self.cname!r}")
        _int("blosc", "clevel", self.clevel, 0, 9)
        if self.shuffle is not None and self.shuffle not in BLOSC_SHUFFLES:
            raise CodecError(
                f"codec 'blosc': shuffle must be one of {list(BLOSC_SHUFFLES)} in Zarr v3, got {self.shuffle!r}"
            )
        if self.typesize is not None:
            _int("blosc", "typesize", self.typesize, 1, 255)
        _int("blosc", "blocksize", self.blocksize, 0, 2**31 - 1)
        if self.typesize is not None and self.shuffle is not None:
            object.__setattr__(
                self,
                "_codec",
                numcodecs.blosc.Blosc(
                    cname=self.cname,
                    clevel=self.clevel,
                    shuffle=BLOSC_SHUFFLES[self.shuffle],
                    blocksize=self.blocksize,
                    typesize=self.typesize,
                ),
            )

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> BloscCodec:
        conf = check_configuration("blosc", configuration, ("typesize", "cname", "clevel", "shuffle", "blocksize"))
        return cls(**conf)

    def configuration(self) -> dict[str, Any]:
        conf: dict[str, Any] = {}
        if self.typesize is not None:
            conf["typesize"] = self.typesize
        conf.update(cname=self.cname, clevel=self.clevel)
        if self.shuffle is not None:
            conf["shuffle"] = self.shuffle
        conf["blocksize"] = self.blocksize
        return conf

    def evolve(self, spec: ChunkSpec) -> BloscCodec:
        itemsize = 1 if spec.nbytes is None else max(1, min(255, spec.dtype.itemsize))
        typesize = self.typesize if self.typesize is not None else itemsize
        shuffle = self.shuffle if self.shuffle is not None else ("bitshuffle" if itemsize == 1 else "shuffle")
        if typesize == self.typesize and shuffle == self.shuffle:
            return self
        return BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=shuffle, typesize=typesize, blocksize=self.blocksize)

    def max_encoded_size(self, nbytes: int, spec: ChunkSpec) -> int:
        return compressed_bound(nbytes)

    def encode(self, data: BytesLike, spec: ChunkSpec) -> BytesLike:
        codec = self._codec if self._codec is not None else self.evolve(spec)._codec
        return codec.encode(byte_view(data))

    def decode(self, data: BytesLike, spec: ChunkSpec, max_size: int, exact: bool = False) -> BytesLike:
        return bounded.blosc_decompress(data, max_size, exact, "blosc")
