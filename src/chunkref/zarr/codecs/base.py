"""The codec abstraction: :class:`ChunkSpec` and the :class:`Codec` base classes.

A codec is a small frozen dataclass holding its configuration.  Three kinds exist, as in the
Zarr v3 spec, and a chain is ``array_array* array_bytes bytes_bytes*``:

* :class:`ArrayArrayCodec` — ndarray -> ndarray (``transpose``, numcodecs ``delta``...);
  :meth:`Codec.resolve` gives the spec of its output;
* :class:`ArrayBytesCodec` — ndarray -> bytes (``bytes``, ``vlen-utf8``, ``sharding_indexed``);
* :class:`BytesBytesCodec` — bytes -> bytes (``gzip``, ``zstd``, ``blosc``, ``crc32c``); its
  ``decode`` receives ``max_size``, the most bytes it may produce, and ``exact``, whether that is
  the one correct size, so that a decompression bomb fails before it allocates.

Codecs are built from JSON with :meth:`Codec.from_json` (the ``configuration`` object; strict:
unknown keys are errors naming the codec), then :meth:`Codec.evolve` fills in what depends on
the array (blosc ``typesize``, ``bytes`` endian for 1-byte types, nested pipelines of the
sharding codec), and :meth:`Codec.to_json` writes the v3 form back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np

from chunkref.errors import CodecError

__all__ = [
    "ArrayArrayCodec",
    "ArrayBytesCodec",
    "BytesBytesCodec",
    "BytesLike",
    "ChunkSpec",
    "byte_view",
    "Codec",
    "CodecKind",
    "check_configuration",
    "is_variable_dtype",
]

CodecKind = Literal["array_array", "array_bytes", "bytes_bytes"]
BytesLike = Any
"""bytes, bytearray, memoryview or a C-contiguous numpy array (any object with the buffer
protocol).  Encoders may return a typed ndarray so that the next codec sees its item size (v2
blosc takes ``typesize`` from it, as numcodecs does)."""


def byte_view(data: BytesLike) -> memoryview:
    """A flat unsigned-byte memoryview of any contiguous buffer (no copy)."""
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def is_variable_dtype(dtype: np.dtype) -> bool:
    """Whether elements of ``dtype`` have no fixed byte size (object, numpy StringDType)."""
    return dtype.hasobject or dtype.kind == "T"


@dataclass(frozen=True, slots=True)
class ChunkSpec:
    """What a pipeline decodes one chunk to.

    Attributes
    ----------
    shape
        The declared (encoded) chunk shape: ``grid.chunk_shape_at(coords)``.
    dtype
        The numpy dtype of the decoded chunk.
    fill_value
        The array's fill value (a numpy scalar, or None for v2 ``null``).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    fill_value: Any = None

    def __post_init__(self) -> None:
        if type(self.shape) is not tuple:
            object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not isinstance(self.dtype, np.dtype):
            object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int | None:
        """Bytes of the decoded chunk, or None for variable-size dtypes."""
        if is_variable_dtype(self.dtype):
            return None
        return math.prod(self.shape) * self.dtype.itemsize

    def evolve(self, **changes: Any) -> ChunkSpec:
        """A copy with some fields replaced."""
        return replace(self, **changes)


def check_configuration(
    name: str,
    configuration: Mapping[str, Any] | None,
    allowed: Iterable[str] = (),
    required: Iterable[str] = (),
) -> dict[str, Any]:
    """Validate a codec ``configuration`` object; return it as a dict.

    Raises
    ------
    CodecError
        If it is not an object, has keys outside ``allowed`` or lacks a ``required`` key; the
        message names the codec and the keys.
    """
    if configuration is None:
        configuration = {}
    if not isinstance(configuration, Mapping):
        raise CodecError(f"codec {name!r}: configuration must be a JSON object, got {configuration!r}")
    allowed = set(allowed)
    unknown = sorted(set(configuration) - allowed)
    if unknown:
        raise CodecError(
            f"codec {name!r}: unknown configuration key(s) {unknown}; allowed: {sorted(allowed)}"
        )
    missing = [k for k in required if k not in configuration]
    if missing:
        raise CodecError(f"codec {name!r}: missing configuration key(s) {missing}")
    return dict(configuration)


class Codec:
    """Base class of every codec.

    Subclasses are frozen dataclasses whose fields are the configuration; they set the class
    attributes :attr:`name` and :attr:`kind`, implement :meth:`from_json`,
    :meth:`configuration`, ``encode`` and ``decode`` and, where it applies, :meth:`evolve`,
    :meth:`resolve`, :meth:`encoded_size` and :meth:`max_encoded_size`.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[CodecKind]
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names accepted on read (``endian`` for ``bytes``)."""

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> Codec:
        """Build the codec from its v3 ``configuration`` object (None when absent)."""
        check_configuration(cls.name, configuration)
        return cls()

    def configuration(self) -> dict[str, Any] | None:
        """The v3 ``configuration`` object, or None to write the bare ``{"name": ...}`` form."""
        return None

    def to_json(self) -> dict[str, Any]:
        """The v3 JSON object ``{"name": ..., "configuration": {...}}``.

        Never the short-hand string form nor ``must_understand`` (v3.0 readers reject both).
        """
        conf = self.configuration()
        if conf is None:
            return {"name": self.name}
        return {"name": self.name, "configuration": conf}

    def evolve(self, spec: ChunkSpec) -> Codec:
        """This codec with the defaults that depend on the array filled in.

        ``spec`` is the representation this codec receives on encode.  May raise
        :class:`~chunkref.errors.CodecError` when the codec cannot handle it.
        """
        return self

    def resolve(self, spec: ChunkSpec) -> ChunkSpec:
        """The representation this codec outputs on encode, given its input ``spec``."""
        return spec

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        """Encoded size for ``nbytes`` of input, for fixed-size codecs; else None."""
        return None

    def max_encoded_size(self, nbytes: int, spec: ChunkSpec) -> int:
        """An upper bound of the encoded size (used to bound the decoding of later codecs)."""
        exact = self.encoded_size(nbytes, spec)
        if exact is not None:
            return exact
        # Generous: no sane codec doubles its input; the bound only has to stop bombs.
        return 2 * nbytes + 65536

    def __repr__(self) -> str:
        conf = self.configuration()
        return f"{type(self).__name__}({conf or ''})"


class ArrayArrayCodec(Codec):
    """ndarray -> ndarray."""

    kind: ClassVar[CodecKind] = "array_array"

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        """Encode ``array`` (of ``spec``) into an array of ``self.resolve(spec)``."""
        raise CodecError(f"codec {self.name!r} cannot encode")

    def decode(self, array: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        """Decode an array of ``self.resolve(spec)`` back to ``spec``."""
        raise CodecError(f"codec {self.name!r} cannot decode")

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        out = self.resolve(spec).nbytes
        return out


class ArrayBytesCodec(Codec):
    """ndarray -> bytes (exactly one per pipeline)."""

    kind: ClassVar[CodecKind] = "array_bytes"

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> BytesLike:
        """Serialize ``array`` (shape ``spec.shape``, dtype ``spec.dtype``)."""
        raise CodecError(f"codec {self.name!r} cannot encode")

    def decode(self, data: BytesLike, spec: ChunkSpec) -> np.ndarray:
        """Deserialize to an array of exactly ``spec.shape`` and ``spec.dtype``.

        The result may share memory with ``data`` (zero copy), and is then read-only when
        ``data`` is immutable.
        """
        raise CodecError(f"codec {self.name!r} cannot decode")


class BytesBytesCodec(Codec):
    """bytes -> bytes."""

    kind: ClassVar[CodecKind] = "bytes_bytes"
    inflates: ClassVar[bool] = True
    """Whether decoding may produce more bytes than it receives (compressors; not checksums).
    The pipeline applies the ``codec.max_decoded_bytes`` cap to such codecs."""

    def encode(self, data: BytesLike, spec: ChunkSpec) -> BytesLike:
        """Encode ``data``; ``spec`` describes the array the bytes represent."""
        raise CodecError(f"codec {self.name!r} cannot encode")

    def decode(self, data: BytesLike, spec: ChunkSpec, max_size: int, exact: bool = False) -> BytesLike:
        """Decode ``data`` to at most ``max_size`` bytes (exactly ``max_size`` when ``exact``).

        Raises
        ------
        ChunkDecodeError
            On corrupt input or when the output would exceed ``max_size`` (checked before
            allocating wherever the format states its size).
        """
        raise CodecError(f"codec {self.name!r} cannot decode")
