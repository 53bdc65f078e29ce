"""The ``chunkref.padded`` array->array codec: chunks stored larger than their declared shape.

Why it exists
-------------
HDF5 (and therefore NetCDF-4) stores a partial chunk padded to the full chunk shape: a 31-day
file in chunks of 10 days has a last chunk holding 10 rows, 1 of them real.  A ``rectilinear``
chunk grid encodes every chunk at its *own* declared shape, so when files are concatenated the
chunk that is partial in its file (declared edge 1) is still stored with 10 rows.  Reading it as
a 1-row chunk would fail (or, for a codec that does not check sizes, return wrong values), and the
bytes cannot be truncated (they are compressed).

This codec states the truth in the metadata: per axis, the declared chunk edges (exactly the
grid's) and the stored (padded) edges, both in the ``rectilinear`` run-length form::

    {"name": "chunkref.padded",
     "configuration": {"chunk_shapes":  [[[10, 3], 1, [10, 2], 8], 3, 4],
                       "stored_shapes": [[[10, 3], 10, [10, 2], 10], 3, 4]}}

An axis entry is a positive int (every chunk has that edge) or a list of edges and
``[value, count]`` runs.  ``resolve`` maps a chunk's declared shape to its stored shape, so the
inner codecs decode the padded chunk and ``decode`` crops it to the declared shape; ``encode``
pads with the fill value.  It must be the first codec of the chain.

The engine hands a codec the declared chunk shape only (not the chunk's grid position), so the
declared -> stored mapping is per edge length and axis; a configuration in which one declared edge
length maps to two stored lengths on the same axis is rejected (combine never writes one).

Other readers do not know ``chunkref.padded`` and refuse the array (zarr-python raises
``UnknownCodecError``), which is the point: they can never misread a padded chunk.  Exports
that cannot express it (kerchunk JSON, plain Zarr) must re-encode those chunks or refuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from chunkref.errors import CodecError
from chunkref.zarr.codecs.base import ArrayArrayCodec, ChunkSpec, check_configuration

__all__ = ["PADDED_CODEC_NAME", "PaddedCodec", "decode_edges", "encode_edges"]

PADDED_CODEC_NAME = "chunkref.padded"


def encode_edges(edges: Sequence[int]) -> int | list:
    """Run-length form of one axis' edges (a bare int when every edge is equal)."""
    edges = [int(e) for e in edges]
    if edges and all(e == edges[0] for e in edges):
        return edges[0] if len(edges) > 1 else [edges[0]]
    out: list = []
    i = 0
    while i < len(edges):
        j = i
        while j < len(edges) and edges[j] == edges[i]:
            j += 1
        if j - i > 2:
            out.append([edges[i], j - i])
        else:
            out.extend(edges[i:j])
        i = j
    return out


def decode_edges(spec: Any, what: str) -> tuple[int, ...] | int:
    """Inverse of :func:`encode_edges`; a bare int comes back as an int (any number of chunks)."""

    def ok(x: Any) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool) and x >= 1

    if ok(spec):
        return int(spec)
    if not isinstance(spec, (list, tuple)):
        raise CodecError(f"codec {PADDED_CODEC_NAME!r}: {what} must be a positive int or a list, got {spec!r}")
    out: list[int] = []
    for item in spec:
        if ok(item):
            out.append(int(item))
        elif isinstance(item, (list, tuple)) and len(item) == 2 and ok(item[0]) and ok(item[1]):
            out.extend([int(item[0])] * int(item[1]))
        else:
            raise CodecError(
                f"codec {PADDED_CODEC_NAME!r}: {what} item {item!r} is neither a positive int nor a [value, count] pair"
            )
    return tuple(out)


def _edge_map(declared: Any, stored: Any, axis: int) -> dict[int, int]:
    if isinstance(declared, int) or isinstance(stored, int):
        if isinstance(declared, int) and isinstance(stored, int):
            pairs = [(declared, stored)]
        elif isinstance(declared, int):
            pairs = [(declared, s) for s in stored]
        else:
            pairs = [(d, stored) for d in declared]
    else:
        if len(declared) != len(stored):
            raise CodecError(
                f"codec {PADDED_CODEC_NAME!r}: axis {axis} lists {len(declared)} declared edges but "
                f"{len(stored)} stored edges"
            )
        pairs = list(zip(declared, stored))
    mapping: dict[int, int] = {}
    for d, s in pairs:
        if s < d:
            raise CodecError(
                f"codec {PADDED_CODEC_NAME!r}: axis {axis} stores a chunk of declared edge {d} in {s} "
                "elements (a stored edge must be at least the declared one)"
            )
        prev = mapping.setdefault(d, s)
        if prev != s:
            raise CodecError(
                f"codec {PADDED_CODEC_NAME!r}: axis {axis} maps the declared edge {d} to two stored edges "
                f"({prev} and {s}); chunks are identified by their declared shape"
            )
    return mapping


@dataclass(frozen=True, eq=True, repr=False)
class PaddedCodec(ArrayArrayCodec):
    """Chunks stored padded beyond their declared shape (see the module docstring).

    Parameters
    ----------
    chunk_shapes, stored_shapes
        Per axis, the declared and the stored edges in run-length form (JSON values as written).
    """

    name: ClassVar[str] = PADDED_CODEC_NAME
    chunk_shapes: tuple[Any, ...]
    stored_shapes: tuple[Any, ...]
    _maps: tuple[dict[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.chunk_shapes) != len(self.stored_shapes):
            raise CodecError(
                f"codec {PADDED_CODEC_NAME!r}: chunk_shapes has {len(self.chunk_shapes)} axes, "
                f"stored_shapes {len(self.stored_shapes)}"
            )
        maps = []
        for a, (d, s) in enumerate(zip(self.chunk_shapes, self.stored_shapes)):
            maps.append(
                _edge_map(decode_edges(d, f"chunk_shapes[{a}]"), decode_edges(s, f"stored_shapes[{a}]"), a)
            )
        object.__setattr__(self, "chunk_shapes", tuple(_freeze(x) for x in self.chunk_shapes))
        object.__setattr__(self, "stored_shapes", tuple(_freeze(x) for x in self.stored_shapes))
        object.__setattr__(self, "_maps", tuple(maps))

    @classmethod
    def from_edges(cls, declared: Sequence[Sequence[int]], stored: Sequence[Sequence[int]]) -> PaddedCodec:
        """The codec for per-axis declared and stored edge lists (aligned, one entry per chunk)."""
        return cls(
            chunk_shapes=tuple(encode_edges(d) for d in declared),
            stored_shapes=tuple(encode_edges(s) for s in stored),
        )

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> PaddedCodec:
        conf = check_configuration(
            PADDED_CODEC_NAME, configuration, ("chunk_shapes", "stored_shapes"), ("chunk_shapes", "stored_shapes")
        )
        cs, ss = conf["chunk_shapes"], conf["stored_shapes"]
        for name, v in (("chunk_shapes", cs), ("stored_shapes", ss)):
            if not isinstance(v, list):
                raise CodecError(f"codec {PADDED_CODEC_NAME!r}: {name} must be a list (one entry per axis), got {v!r}")
        return cls(chunk_shapes=tuple(cs), stored_shapes=tuple(ss))

    def configuration(self) -> dict[str, Any]:
        return {"chunk_shapes": [_thaw(x) for x in self.chunk_shapes], "stored_shapes": [_thaw(x) for x in self.stored_shapes]}

    @property
    def is_identity(self) -> bool:
        """Whether no chunk is padded (the codec could be dropped)."""
        return all(d == s for m in self._maps for d, s in m.items())

    def stored_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The stored (padded) shape of a chunk of declared ``shape``."""
        return tuple(m.get(int(n), int(n)) for m, n in zip(self._maps, shape))

    def evolve(self, spec: ChunkSpec) -> PaddedCodec:
        if spec.ndim != len(self._maps):
            raise CodecError(
                f"codec {PADDED_CODEC_NAME!r} describes {len(self._maps)} axes, the chunk has {spec.ndim} dimensions"
            )
        return self

    def resolve(self, spec: ChunkSpec) -> ChunkSpec:
        return spec.evolve(shape=self.stored_shape(spec.shape))

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        return self.resolve(spec).nbytes

    def decode(self, array: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        stored = self.stored_shape(spec.shape)
        if array.shape != stored:
            raise CodecError(
                f"codec {PADDED_CODEC_NAME!r}: inner codecs decoded shape {array.shape}, expected the stored shape {stored}"
            )
        return array[tuple(slice(0, n) for n in spec.shape)]

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        stored = self.stored_shape(spec.shape)
        if stored == tuple(array.shape):
            return array
        out = np.empty(stored, dtype=array.dtype)
        out[...] = spec.fill_value if spec.fill_value is not None else np.zeros((), array.dtype)
        out[tuple(slice(0, n) for n in array.shape)] = array
        return out


def _freeze(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(i) for i in x)
    return int(x)


def _thaw(x: Any) -> Any:
    if isinstance(x, tuple):
        return [_thaw(i) for i in x]
    return x


def _register() -> None:
    from chunkref.zarr.codecs.registry import register_codec

    register_codec(PaddedCodec)


_register()
