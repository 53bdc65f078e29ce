"""Chunk grids: how an array's index space is cut into chunks.

Two kinds share one interface, :class:`ChunkGrid`:

* :class:`RegularGrid` (Zarr ``regular``): every chunk has ``chunk_shape``; edge chunks overhang
  the array and are *encoded at the full chunk shape*.
* :class:`RectilinearGrid` (zarr-extensions ``rectilinear``): per axis, a list of edge lengths.
  Each chunk is encoded at its own declared edge shape; the edges may sum past the extent.

Both store per-axis *offsets* (``offsets[axis][k]`` is where chunk ``k`` starts; one more entry
than chunks), so mapping positions to chunks is a ``searchsorted``, never a Python loop per
element.  :mod:`chunkref.zarr.indexing` builds selections on top of this.

The number of chunks along an axis (``grid_shape``) counts the chunks that start inside the
array; declared edges past the extent are kept (they round-trip through metadata and come back
into play when the array grows) but hold no data.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chunkref.errors import InvalidArgumentError, MetadataError


class ChunkGrid(ABC):
    """Common interface of regular and rectilinear grids (frozen dataclasses)."""

    shape: tuple[int, ...]

    # Implemented by subclasses -----------------------------------------------------------------

    @property
    @abstractmethod
    def is_regular(self) -> bool: ...

    @property
    @abstractmethod
    def offsets(self) -> tuple[np.ndarray, ...]:
        """Per axis, int64 chunk start positions plus the end of the last chunk in the array.

        ``offsets[a]`` has ``grid_shape[a] + 1`` entries; the last may exceed ``shape[a]``.
        """

    @abstractmethod
    def with_shape(self, shape: Sequence[int]) -> ChunkGrid:
        """The grid of the same array resized to ``shape``."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The v3 ``chunk_grid`` metadata object."""

    # Shared ------------------------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of chunks along each axis."""
        return tuple(len(o) - 1 for o in self.offsets)

    @property
    def nchunks(self) -> int:
        return math.prod(self.grid_shape)

    @property
    def edge_lengths(self) -> tuple[np.ndarray, ...]:
        """Per axis, the declared (encoded) length of each chunk in the grid."""
        return tuple(np.diff(o) for o in self.offsets)

    @property
    def chunk_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Per axis, the length of each chunk's data inside the array (sums to ``shape``).

        This is the form dask expects: ``da.from_array(a, chunks=a.chunk_sizes)``.
        """
        out = []
        for o, n in zip(self.offsets, self.shape):
            clipped = np.minimum(o, n)
            out.append(tuple(int(x) for x in np.diff(clipped)))
        return tuple(out)

    def chunk_shape_at(self, coords: Sequence[int]) -> tuple[int, ...]:
        """Declared (encoded) shape of the chunk at grid ``coords``."""
        return tuple(int(o[c + 1] - o[c]) for o, c in zip(self.offsets, coords))

    def chunk_data_shape(self, coords: Sequence[int]) -> tuple[int, ...]:
        """Shape of the part of chunk ``coords`` that lies inside the array."""
        return tuple(
            int(min(o[c + 1], n) - o[c]) for o, c, n in zip(self.offsets, coords, self.shape)
        )

    def chunk_origin(self, coords: Sequence[int]) -> tuple[int, ...]:
        """Array position of the first element of chunk ``coords``."""
        return tuple(int(o[c]) for o, c in zip(self.offsets, coords))

    def chunk_slices(self, coords: Sequence[int]) -> tuple[slice, ...]:
        """Slices of the array covered by chunk ``coords`` (clipped to the array)."""
        return tuple(
            slice(int(o[c]), int(min(o[c + 1], n))) for o, c, n in zip(self.offsets, coords, self.shape)
        )

    def chunk_index(self, axis: int, positions: np.ndarray | int) -> np.ndarray:
        """Chunk indices along ``axis`` holding each array position (vectorised)."""
        o = self.offsets[axis]
        return np.searchsorted(o, positions, side="right") - 1

    def all_coords(self) -> np.ndarray:
        """Every chunk's grid coordinates, shape ``(nchunks, ndim)``, in C order."""
        gs = self.grid_shape
        if not gs:
            return np.zeros((1, 0), dtype=np.int64)
        return np.stack(np.unravel_index(np.arange(math.prod(gs)), gs), axis=-1).astype(np.int64)

    def iter_coords(self) -> Iterator[tuple[int, ...]]:
        """Every chunk's coordinates in C order."""
        return itertools.product(*(range(n) for n in self.grid_shape))

    def check_coords(self, coords: Sequence[int]) -> None:
        gs = self.grid_shape
        if len(coords) != len(gs) or any(not (0 <= c < n) for c, n in zip(coords, gs)):
            from chunkref.errors import BoundsCheckError

            raise BoundsCheckError(f"chunk coordinates {tuple(coords)} outside grid of shape {gs}")


def _regular_offsets(extent: int, chunk: int) -> np.ndarray:
    n = -(-extent // chunk) if extent > 0 else 0
    return np.arange(n + 1, dtype=np.int64) * chunk


@dataclass(frozen=True)
class RegularGrid(ChunkGrid):
    """Chunks of one shape (``chunk_shape``) tiling the array, edge chunks overhanging."""

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    _offsets: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        chunks = tuple(int(c) for c in self.chunk_shape)
        if len(shape) != len(chunks):
            raise MetadataError(f"chunk shape {chunks} does not match the rank of array shape {shape}")
        if any(c < 1 for c in chunks):
            raise MetadataError(f"chunk shape {chunks} must be positive in every dimension")
        if any(s < 0 for s in shape):
            raise MetadataError(f"array shape {shape} must not be negative")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "chunk_shape", chunks)
        object.__setattr__(self, "_offsets", tuple(_regular_offsets(s, c) for s, c in zip(shape, chunks)))

    @property
    def is_regular(self) -> bool:
        return True

    @property
    def offsets(self) -> tuple[np.ndarray, ...]:
        return self._offsets

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(-(-s // c) if s > 0 else 0 for s, c in zip(self.shape, self.chunk_shape))

    def chunk_shape_at(self, coords: Sequence[int]) -> tuple[int, ...]:
        return self.chunk_shape

    def chunk_index(self, axis: int, positions: np.ndarray | int) -> np.ndarray:
        return np.asarray(positions) // self.chunk_shape[axis]

    def with_shape(self, shape: Sequence[int]) -> RegularGrid:
        return RegularGrid(tuple(shape), self.chunk_shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": "regular", "configuration": {"chunk_shape": list(self.chunk_shape)}}


@dataclass(frozen=True)
class RectilinearGrid(ChunkGrid):
    """Per-axis explicit chunk edge lengths (the zarr-extensions ``rectilinear`` grid).

    ``edges[a]`` lists every declared edge length along axis ``a``; they sum to at least
    ``shape[a]``.
    """

    shape: tuple[int, ...]
    edges: tuple[tuple[int, ...], ...]
    _offsets: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        edges = tuple(tuple(int(e) for e in axis) for axis in self.edges)
        if len(shape) != len(edges):
            raise MetadataError(f"rectilinear chunk shapes have {len(edges)} axes, array shape {shape} has {len(shape)}")
        offsets = []
        for a, (n, axis) in enumerate(zip(shape, edges)):
            if any(e < 1 for e in axis):
                raise MetadataError(f"rectilinear edge lengths must be positive (axis {a}: {list(axis)[:10]}...)")
            cum = np.zeros(len(axis) + 1, dtype=np.int64)
            np.cumsum(axis, out=cum[1:])
            if cum[-1] < n:
                raise MetadataError(
                    f"rectilinear edges along axis {a} sum to {int(cum[-1])}, less than the extent {n}"
                )
            # Chunks that start inside the array (all of them up to the one holding n-1).
            nused = int(np.searchsorted(cum, n, side="left")) if n > 0 else 0
            offsets.append(cum[: nused + 1])
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "_offsets", tuple(offsets))

    @property
    def is_regular(self) -> bool:
        return False

    @property
    def offsets(self) -> tuple[np.ndarray, ...]:
        return self._offsets

    def with_shape(self, shape: Sequence[int]) -> RectilinearGrid:
        """Growing past the declared edges appends one edge covering the gap; shrinking keeps them."""
        new_edges = []
        for n, axis in zip(shape, self.edges):
            total = sum(axis)
            new_edges.append(axis + ((int(n) - total,) if n > total else ()))
        return RectilinearGrid(tuple(shape), tuple(new_edges))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": "rectilinear",
            "configuration": {
                "kind": "inline",
                "chunk_shapes": [_encode_axis(axis, n) for axis, n in zip(self.edges, self.shape)],
            },
        }


def _encode_axis(edges: tuple[int, ...], extent: int) -> int | list:
    """Shortest spec form of one axis: a bare int when uniform, else runs as ``[value, count]``."""
    if edges and all(e == edges[0] for e in edges) and len(edges) == max(1, -(-extent // edges[0])):
        return edges[0]
    out: list = []
    i = 0
    while i < len(edges):
        j = i
        while j < len(edges) and edges[j] == edges[i]:
            j += 1
        run = j - i
        v = edges[i]
        # Use a [value, count] pair only where it is shorter than writing the values out.
        if len(f"[{v},{run}]") < len(",".join([str(v)] * run)):
            out.append([v, run])
        else:
            out.extend([v] * run)
        i = j
    return out


def _decode_axis(spec: Any, extent: int, axis: int) -> tuple[int, ...]:
    def bad(why: str) -> MetadataError:
        return MetadataError(f"chunk_grid.configuration.chunk_shapes[{axis}]: {why} (got {spec!r})")

    if isinstance(spec, bool):
        raise bad("must be a positive int or a list")
    if isinstance(spec, int):
        if spec < 1:
            raise bad("edge length must be >= 1")
        return (spec,) * max(1, -(-extent // spec))
    if not isinstance(spec, list):
        raise bad("must be a positive int or a list")
    out: list[int] = []
    for item in spec:
        if isinstance(item, int) and not isinstance(item, bool):
            if item < 1:
                raise bad("edge lengths must be >= 1")
            out.append(item)
        elif (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in item)
        ):
            out.extend([item[0]] * item[1])
        else:
            raise bad(f"item {item!r} is neither a positive int nor a [value, count] pair")
    if sum(out) < extent:
        raise bad(f"edges sum to {sum(out)}, less than the extent {extent}")
    return tuple(out)


def parse_chunk_grid(meta: Any, shape: Sequence[int]) -> ChunkGrid:
    """Build a grid from a v3 ``chunk_grid`` metadata value (strict, per spec)."""
    shape = tuple(int(s) for s in shape)
    if isinstance(meta, str):
        raise MetadataError(f"chunk_grid {meta!r} needs a configuration")
    if not isinstance(meta, dict) or "name" not in meta:
        raise MetadataError(f"chunk_grid must be an object with a name, got {meta!r}")
    name = meta["name"]
    conf = meta.get("configuration")
    extra = set(meta) - {"name", "configuration"}
    if extra:
        raise MetadataError(f"chunk_grid has unknown fields {sorted(extra)}")
    if not isinstance(conf, dict):
        raise MetadataError(f"chunk_grid {name!r} needs a configuration object")
    if name == "regular":
        cs = conf.get("chunk_shape")
        if not isinstance(cs, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in cs):
            raise MetadataError(f"chunk_grid.configuration.chunk_shape must be a list of ints, got {cs!r}")
        return RegularGrid(shape, tuple(cs))
    if name == "rectilinear":
        if conf.get("kind") != "inline":
            raise MetadataError(f"rectilinear chunk_grid kind must be 'inline', got {conf.get('kind')!r}")
        shapes = conf.get("chunk_shapes")
        if not isinstance(shapes, list) or len(shapes) != len(shape):
            raise MetadataError(
                f"rectilinear chunk_shapes must list one entry per dimension ({len(shape)}), got {shapes!r}"
            )
        return RectilinearGrid(shape, tuple(_decode_axis(s, n, a) for a, (s, n) in enumerate(zip(shapes, shape))))
    from chunkref.errors import UnsupportedFeatureError

    raise UnsupportedFeatureError(f"unsupported chunk_grid {name!r} (known: regular, rectilinear)")


def grid_from_chunks(shape: Sequence[int], chunks: Any) -> ChunkGrid:
    """A grid from user ``chunks``: an int, a tuple of ints, or per-axis tuples of edge lengths.

    Per-axis lists that are really regular (dask style, ``(10, 10, 10, 5)`` for extent 35)
    give a :class:`RegularGrid`; truly irregular ones a :class:`RectilinearGrid`.  An axis given
    as ``-1`` or ``None`` is one chunk covering the whole extent.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        chunks = (int(chunks),) * len(shape)
    chunks = tuple(chunks)
    if len(chunks) != len(shape):
        raise InvalidArgumentError(f"chunks {chunks!r} do not match the rank of shape {shape}")
    regular: list[int] = []
    per_axis: list[tuple[int, ...]] = []
    all_regular = True
    for n, c in zip(shape, chunks):
        if c is None or (isinstance(c, (int, np.integer)) and c == -1):
            c = max(n, 1)
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            c = int(c)
            if c < 1:
                raise InvalidArgumentError(f"chunk length {c} must be >= 1")
            regular.append(c)
            per_axis.append((c,) * max(1, -(-n // c)))
            continue
        edges = tuple(int(e) for e in c)
        if not edges or any(e < 1 for e in edges):
            raise InvalidArgumentError(f"chunk edges {edges!r} must be positive")
        if sum(edges) < n:
            raise InvalidArgumentError(f"chunk edges {edges!r} sum to {sum(edges)}, less than the extent {n}")
        per_axis.append(edges)
        first = edges[0]
        # Dask-style regular: all equal but the last, which is no longer, and no surplus chunks.
        if all(e == first for e in edges[:-1]) and edges[-1] <= first and len(edges) == max(1, -(-n // first)):
            regular.append(first)
        else:
            all_regular = False
            regular.append(first)
    if all_regular:
        return RegularGrid(shape, tuple(regular))
    return RectilinearGrid(shape, tuple(per_axis))
