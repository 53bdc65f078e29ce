"""ChunkTable: one array's chunk references as numpy columns.

A chunk table holds, for every position of an array's chunk grid (flat, C order), where the
chunk's stored bytes live:

============  ==========  ===============================================================
column        dtype       meaning
============  ==========  ===============================================================
``source``    int32       index into ``Manifest.sources``; ``INLINE`` (-1) for inline bytes;
                          ``NATIVE`` (-2): a repository object named by its content id
``offset``    uint64      first byte of the chunk in its source
``length``    uint64      number of bytes; ``ABSENT`` (2**64-1): no chunk (reads as fill);
                          ``WHOLE`` (2**64-2): the whole source (kerchunk ``[url]``)
``cid``       uint8       optional, shape ``(nchunks, CID_WIDTH)``: binary CIDv1 of the
                          chunk's stored bytes; an all-zero row means "not recorded"
============  ==========  ===============================================================

plus ``inline``: a dict from flat index to bytes for chunks small enough to live in the manifest
itself (their ``source`` is ``INLINE``, ``offset`` 0 and ``length`` the byte count).

Why columns: a manifest of millions of chunks costs 20 bytes per chunk here (plus inline bytes),
can be filled, compared, concatenated and serialised with vectorised numpy, and a lookup is an
index computation, not a dict of per-key Python objects.

The content-id column stores binary CIDv1 (``<version><codec><multihash>``): for the default
sha2-256 over raw bytes that is ``01 55 12 20`` + 32 digest bytes = 36 bytes (:data:`CID_WIDTH`).
A 2-D ``uint8`` array is used rather than numpy ``S36`` because ``S`` scalars drop trailing NUL
bytes, which a binary digest may end with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref.errors import BoundsCheckError, InvalidArgumentError

#: ``length`` sentinel: the chunk is not present (reads as the fill value).
ABSENT = np.uint64(2**64 - 1)
#: ``length`` sentinel: the chunk is the whole source (kerchunk's ``[url]`` form).
WHOLE = np.uint64(2**64 - 2)
#: ``source`` value of chunks whose bytes live in :attr:`ChunkTable.inline`.
INLINE = -1
#: ``source`` value of chunks that are repository objects named by their content id (the ``cid``
#: column must hold it; ``length`` is the object's size, ``offset`` 0).
NATIVE = -2
#: Width in bytes of a binary CIDv1 with a 32-byte digest (sha2-256, blake3).
CID_WIDTH = 36

# Largest offset/length accepted as a real byte position (anything at or above the sentinels is
# reserved); 2**63 also keeps every value representable as a signed 64-bit integer (parquet).
MAX_BYTE_POSITION = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where one chunk's bytes are.

    Attributes
    ----------
    source
        Index into ``Manifest.sources``, or ``INLINE``.
    offset, length
        Byte range in the source (``length`` is None for a whole-source reference).
    data
        The bytes themselves for inline chunks, else None.
    """

    source: int
    offset: int
    length: int | None
    data: bytes | None = None

    @property
    def is_inline(self) -> bool:
        return self.source == INLINE


def _grid_shape(grid_shape: Iterable[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(n) for n in grid_shape)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"grid_shape must be a sequence of ints, got {grid_shape!r}") from exc
    if any(n < 0 for n in shape):
        raise InvalidArgumentError(f"grid_shape must be non-negative, got {shape}")
    return shape


def _column(values: Any, dtype: np.dtype, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,):
        if arr.size == n:
            arr = arr.reshape(n)
        else:
            raise InvalidArgumentError(f"ChunkTable column {name!r} needs {n} entries, got shape {arr.shape}")
    if arr.dtype != dtype:
        if arr.dtype.kind == "i" and dtype.kind == "u" and arr.size and arr.min() < 0:
            raise InvalidArgumentError(f"ChunkTable column {name!r} has negative values")
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


class ChunkTable:
    """Chunk references of one array, as numpy columns indexed by flat C-order grid position.

    Parameters
    ----------
    grid_shape
        Number of chunks along each axis (``ChunkGrid.grid_shape``).
    source, offset, length
        Columns of ``nchunks`` entries (flattened if given with the grid's shape); omitted
        columns start as "absent" (``length == ABSENT``).
    inline
        Flat index -> bytes for inline chunks (their ``source`` must be ``INLINE``; the other
        columns are set here).
    cid
        Optional ``(nchunks, width)`` uint8 content-id column (see the module docstring).
    """

    __slots__ = ("grid_shape", "nchunks", "source", "offset", "length", "inline", "cid")

    def __init__(
        self,
        grid_shape: Sequence[int],
        source: Any = None,
        offset: Any = None,
        length: Any = None,
        *,
        inline: Mapping[int, bytes] | None = None,
        cid: Any = None,
    ) -> None:
        self.grid_shape: tuple[int, ...] = _grid_shape(grid_shape)
        n = math.prod(self.grid_shape)
        self.nchunks: int = n
        self.source: np.ndarray = (
            np.zeros(n, np.int32) if source is None else _column(source, np.dtype(np.int32), n, "source")
        )
        self.offset: np.ndarray = (
            np.zeros(n, np.uint64) if offset is None else _column(offset, np.dtype(np.uint64), n, "offset")
        )
        self.length: np.ndarray = (
            np.full(n, ABSENT, np.uint64)
            if length is None
            else _column(length, np.dtype(np.uint64), n, "length")
        )
        self.inline: dict[int, bytes] = {}
        for idx, data in (inline or {}).items():
            self._set_inline_flat(self._check_flat(int(idx)), data)
        self.cid: np.ndarray | None = None
        if cid is not None:
            c = np.ascontiguousarray(np.asarray(cid, dtype=np.uint8))
            if c.ndim != 2 or c.shape[0] != n:
                raise InvalidArgumentError(f"ChunkTable cid column needs shape ({n}, width), got {c.shape}")
            self.cid = c

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def empty(cls, grid_shape: Sequence[int]) -> ChunkTable:
        """A table whose chunks are all absent."""
        return cls(grid_shape)

    def copy(self) -> ChunkTable:
        """A deep copy (columns and inline bytes)."""
        return ChunkTable(
            self.grid_shape,
            self.source.copy(),
            self.offset.copy(),
            self.length.copy(),
            inline=dict(self.inline),
            cid=None if self.cid is None else self.cid.copy(),
        )

    # -- indices ---------------------------------------------------------------------------------

    def flat_index(self, coords: Sequence[int]) -> int:
        """Flat C-order position of chunk ``coords`` (bounds checked)."""
        coords = tuple(int(c) for c in coords)
        if len(coords) != len(self.grid_shape):
            raise BoundsCheckError(
                f"chunk coords {coords} have {len(coords)} dimensions, the grid has {len(self.grid_shape)}"
            )
        flat = 0
        for c, n in zip(coords, self.grid_shape):
            if not 0 <= c < n:
                raise BoundsCheckError(f"chunk coords {coords} out of bounds for grid {self.grid_shape}")
            flat = flat * n + c
        return flat

    def flat_indices(self, coords: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`flat_index` for an ``(n, ndim)`` integer array of chunk coords."""
        coords = np.asarray(coords, dtype=np.int64)
        if coords.ndim != 2 or coords.shape[1] != len(self.grid_shape):
            raise BoundsCheckError(
                f"chunk coords of shape {coords.shape} do not match a {len(self.grid_shape)}-d grid"
            )
        if coords.shape[0] == 0:
            return np.zeros(0, np.int64)
        if self.grid_shape == ():
            return np.zeros(coords.shape[0], np.int64)
        bad = (coords < 0) | (coords >= np.asarray(self.grid_shape, np.int64))
        if bad.any():
            row = int(np.nonzero(bad.any(axis=1))[0][0])
            raise BoundsCheckError(
                f"chunk coords {tuple(coords[row].tolist())} out of bounds for grid {self.grid_shape}"
            )
        return np.ravel_multi_index(tuple(coords.T), self.grid_shape).astype(np.int64)

    def coords_of(self, flat: int) -> tuple[int, ...]:
        """Grid coords of flat position ``flat``."""
        flat = self._check_flat(flat)
        return tuple(int(c) for c in np.unravel_index(flat, self.grid_shape)) if self.grid_shape else ()

    def _check_flat(self, flat: int) -> int:
        if not 0 <= flat < self.nchunks:
            raise BoundsCheckError(f"flat chunk index {flat} out of bounds for grid {self.grid_shape}")
        return flat

    # -- writes ----------------------------------------------------------------------------------

    def set_ref(self, coords: Sequence[int], source: int, offset: int, length: int) -> None:
        """Point chunk ``coords`` at ``length`` bytes of source ``source`` from ``offset``."""
        flat = self.flat_index(coords)
        source, offset, length = int(source), int(offset), int(length)
        if source < 0:
            raise InvalidArgumentError(f"chunk {coords}: source index must be >= 0, got {source}")
        _check_position(offset, f"chunk {tuple(coords)}: offset")
        if length != int(WHOLE):
            _check_position(length, f"chunk {tuple(coords)}: length")
            _check_position(offset + length, f"chunk {tuple(coords)}: offset + length")
        self.inline.pop(flat, None)
        self.source[flat] = source
        self.offset[flat] = offset
        self.length[flat] = length

    def set_refs(self, flat: Any, source: Any, offset: Any, length: Any) -> None:
        """Vectorised :meth:`set_ref` over flat positions (scanners fill whole tables this way)."""
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        if flat.size == 0:
            return
        if flat.min() < 0 or flat.max() >= self.nchunks:
            raise BoundsCheckError(f"flat chunk indices out of bounds for grid {self.grid_shape}")
        src = np.broadcast_to(np.asarray(source, dtype=np.int64), flat.shape)
        off = np.broadcast_to(np.asarray(offset), flat.shape)
        ln = np.broadcast_to(np.asarray(length), flat.shape)
        if src.min() < 0:
            raise InvalidArgumentError("source indices must be >= 0")
        for name, col in (("offset", off), ("length", ln)):
            if col.dtype.kind == "i" and col.min() < 0:
                raise InvalidArgumentError(f"negative chunk {name}")
        off = off.astype(np.uint64)
        ln = ln.astype(np.uint64)
        whole = ln == WHOLE
        if (off > MAX_BYTE_POSITION).any() or ((ln > MAX_BYTE_POSITION) & ~whole).any():
            raise InvalidArgumentError("chunk offset or length out of range")
        if ((off + np.where(whole, 0, ln)) > MAX_BYTE_POSITION).any():
            raise InvalidArgumentError("chunk offset + length out of range")
        if self.inline:
            for f in np.intersect1d(flat, np.fromiter(self.inline, np.int64, len(self.inline))).tolist():
                self.inline.pop(int(f), None)
        self.source[flat] = src.astype(np.int32)
        self.offset[flat] = off
        self.length[flat] = ln

    def set_inline(self, coords: Sequence[int], data: bytes) -> None:
        """Store chunk ``coords`` inline (its bytes live in the manifest)."""
        self._set_inline_flat(self.flat_index(coords), data)

    def _set_inline_flat(self, flat: int, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"inline chunk data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        self.inline[flat] = data
        self.source[flat] = INLINE
        self.offset[flat] = 0
        self.length[flat] = len(data)

    def set_absent(self, coords: Sequence[int]) -> None:
        """Mark chunk ``coords`` missing (it reads as the fill value)."""
        flat = self.flat_index(coords)
        self.inline.pop(flat, None)
        self.source[flat] = 0
        self.offset[flat] = 0
        self.length[flat] = ABSENT
        if self.cid is not None:
            self.cid[flat] = 0

    def set_cid(self, coords: Sequence[int], cid: bytes) -> None:
        """Record the binary content id of chunk ``coords`` (creates the column on first use)."""
        flat = self.flat_index(coords)
        cid = bytes(cid)
        if self.cid is None:
            self.cid = np.zeros((self.nchunks, len(cid)), np.uint8)
        if len(cid) != self.cid.shape[1]:
            raise InvalidArgumentError(
                f"chunk {tuple(coords)}: content id of {len(cid)} bytes, the table stores {self.cid.shape[1]}"
            )
        self.cid[flat] = np.frombuffer(cid, np.uint8)

    # -- reads -----------------------------------------------------------------------------------

    def lookup(self, coords: Sequence[int]) -> ChunkRef | None:
        """The reference of chunk ``coords``, or None when it is absent."""
        return self.lookup_flat(self.flat_index(coords))

    def lookup_flat(self, flat: int) -> ChunkRef | None:
        """:meth:`lookup` by flat position."""
        flat = self._check_flat(int(flat))
        length = self.length[flat]
        if length == ABSENT:
            return None
        source = int(self.source[flat])
        if source == INLINE:
            data = self.inline[flat]
            return ChunkRef(INLINE, 0, len(data), data)
        return ChunkRef(source, int(self.offset[flat]), None if length == WHOLE else int(length))

    def take(self, flat: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(source, offset, length)`` columns at the flat positions ``flat`` (a batch lookup).

        Paged tables (:class:`chunkref.manifest.pages.PagedChunkTable`) load only the pages
        these positions fall in.
        """
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.nchunks):
            raise BoundsCheckError(f"flat chunk indices out of bounds for grid {self.grid_shape}")
        return self.source[flat], self.offset[flat], self.length[flat]

    def cid_of(self, flat: int) -> bytes | None:
        """Binary content id of a chunk, or None when not recorded."""
        if self.cid is None:
            return None
        row = self.cid[self._check_flat(int(flat))]
        return None if not row.any() else row.tobytes()

    def present(self) -> np.ndarray:
        """Boolean mask (flat) of chunks that exist."""
        return self.length != ABSENT

    @property
    def nbytes_referenced(self) -> int:
        """Total bytes of the present, sized chunks (inline included; whole-file refs excluded)."""
        mask = (self.length != ABSENT) & (self.length != WHOLE)
        return int(self.length[mask].sum(dtype=np.uint64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkTable):
            return NotImplemented
        if self.grid_shape != other.grid_shape:
            return False
        p = self.present()
        if not np.array_equal(p, other.present()):
            return False
        if not (
            np.array_equal(self.length, other.length)
            and np.array_equal(self.source[p], other.source[p])
            and np.array_equal(self.offset[p], other.offset[p])
        ):
            return False
        if self.inline != other.inline:
            return False
        a = self.cid if self.cid is not None and self.cid.any() else None
        b = other.cid if other.cid is not None and other.cid.any() else None
        if (a is None) != (b is None):
            return False
        return a is None or np.array_equal(a, b)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ChunkTable(grid_shape={self.grid_shape}, present={int(self.present().sum())}/{self.nchunks}, "
            f"inline={len(self.inline)})"
        )


def _check_position(value: int, what: str) -> None:
    if value < 0 or value > MAX_BYTE_POSITION:
        raise InvalidArgumentError(f"{what} {value} out of range [0, 2**63)")
