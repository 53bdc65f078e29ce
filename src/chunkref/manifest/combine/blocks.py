"""What combine keeps of each input: chunk-table column blocks and chunk edges, in growing buffers.

Combining 10,000 manifests must not hold 10,000 copies of anything per input that the output
does not need.  Every input array contributes a *block*: its chunk table's columns (source,
offset, length, content ids, inline bytes) and, per concatenation dimension, its chunk edges.
They are appended to one growing numpy buffer per variable and column (:class:`Growable`,
amortised growth), so the per-input cost is the block's bytes plus a few integers, not an
ndarray header (~100 bytes) per column and input.  At the end the output tables are built by
copying blocks into preallocated arrays (one slice copy when the blocks already lie in output
order, the usual case of inputs given in time order).

* :class:`Growable` — a 1-d (or ``(n, width)``) numpy array grown by appending blocks.
* :class:`Columns` — one variable's chunk-table blocks; :meth:`Columns.table` is a zero-copy
  :class:`~chunkref.manifest.table.ChunkTable` view of one block.
* :class:`AxisEdges` — one variable's chunk edges (declared and stored) and extent along one
  concatenation dimension, per key id of that dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from chunkref.errors import CombineError
from chunkref.manifest.table import ABSENT, INLINE, ChunkTable

__all__ = ["AxisEdges", "Columns", "Growable"]

_INITIAL = 16


class Growable:
    """A numpy array grown by appending blocks (capacity x1.5 when full, amortised O(1)).

    Parameters
    ----------
    dtype
        Element type.
    width
        Row width for a 2-d buffer (content ids), None for 1-d.
    fill
        Value of rows that :meth:`resize` adds.
    """

    __slots__ = ("data", "size", "fill")

    def __init__(self, dtype: type | np.dtype, width: int | None = None, fill: int = 0) -> None:
        shape = (_INITIAL,) if width is None else (_INITIAL, width)
        self.data = np.full(shape, fill, dtype)
        self.size = 0
        self.fill = fill

    def _reserve(self, n: int) -> None:
        if n <= len(self.data):
            return
        cap = max(n, len(self.data) + len(self.data) // 2)  # x1.5: less slack than doubling
        new = np.full((cap,) + self.data.shape[1:], self.fill, self.data.dtype)
        new[: self.size] = self.data[: self.size]
        self.data = new

    def append(self, block: np.ndarray) -> int:
        """Append rows; returns the index of the first."""
        start = self.size
        end = start + len(block)
        self._reserve(end)
        self.data[start:end] = block
        self.size = end
        return start

    def resize(self, n: int) -> None:
        """Grow to at least ``n`` rows, new rows set to ``fill``."""
        if n > self.size:
            self._reserve(n)
            self.size = n

    def view(self, start: int, n: int) -> np.ndarray:
        """Rows ``start:start+n`` (a view: valid until the next append)."""
        return self.data[start : start + n]

    def __getitem__(self, i: int) -> int:
        return int(self.data[i])

    def __setitem__(self, i: int, value: int) -> None:
        self.data[i] = value

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


class Columns:
    """The chunk-table blocks of one output variable, one per input piece, end to end."""

    __slots__ = ("source", "offset", "length", "cid", "inline", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.source = Growable(np.int32)
        self.offset = Growable(np.uint64)
        self.length = Growable(np.uint64, fill=int(ABSENT))
        self.cid: Growable | None = None
        self.inline: dict[int, bytes] = {}  # buffer row -> bytes (coordinates, small variables)

    @property
    def size(self) -> int:
        return self.source.size

    def append(self, table: ChunkTable, label: str) -> int:
        """Copy ``table``'s columns in; returns the block's first row."""
        start = self.source.append(table.source)
        self.offset.append(table.offset)
        self.length.append(table.length)
        end = self.source.size
        if table.cid is not None:
            width = table.cid.shape[1]
            if self.cid is None:
                self.cid = Growable(np.uint8, width)
                self.cid.resize(start)  # earlier blocks: "not recorded" (zero rows)
            elif self.cid.data.shape[1] != width:
                raise CombineError(
                    f"{label}: variable {self.path!r}: content ids of {width} bytes, earlier inputs record "
                    f"{self.cid.data.shape[1]}",
                    file=label,
                    variable=self.path,
                    field="cid",
                )
            self.cid.append(table.cid)
        elif self.cid is not None:
            self.cid.resize(end)
        for flat, data in table.inline.items():
            self.inline[start + int(flat)] = data
        return start

    def table(self, start: int, grid_shape: Sequence[int]) -> ChunkTable:
        """The block at ``start`` as a ChunkTable over ``grid_shape`` (columns are views)."""
        n = math.prod(grid_shape)
        source = self.source.view(start, n)
        inline = {}
        rows = np.flatnonzero(source == INLINE)
        if rows.size:
            inline = {int(r): self.inline[start + int(r)] for r in rows}
        cid = None if self.cid is None else self.cid.view(start, n)
        if cid is not None and not cid.any():
            cid = None
        return ChunkTable(grid_shape, source, self.offset.view(start, n), self.length.view(start, n), inline=inline, cid=cid)


class AxisEdges:
    """One variable's chunks along one concatenation dimension, per key id of that dimension.

    For each key: the declared edges (clipped to the extent), the stored edges (what the bytes
    hold, larger when padded), the extent, and the input that gave them (for messages).
    """

    __slots__ = ("where", "count", "extent", "input", "declared", "stored")

    def __init__(self) -> None:
        self.where = Growable(np.int64, fill=-1)
        self.count = Growable(np.int64, fill=-1)
        self.extent = Growable(np.int64, fill=-1)
        self.input = Growable(np.int64, fill=-1)
        self.declared = Growable(np.int64)
        self.stored = Growable(np.int64)

    def has(self, kid: int) -> bool:
        return kid < self.where.size and self.where[kid] >= 0

    def get(self, kid: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``(declared, stored, extent, input)`` of key id ``kid`` (copies of the edges)."""
        w, c = self.where[kid], self.count[kid]
        return (
            self.declared.view(w, c).copy(),
            self.stored.view(w, c).copy(),
            self.extent[kid],
            self.input[kid],
        )

    def count_of(self, kid: int) -> int:
        return self.count[kid]

    def matches(self, kid: int, declared: np.ndarray, stored: np.ndarray) -> bool:
        w, c = self.where[kid], self.count[kid]
        return bool(
            c == len(declared)
            and np.array_equal(self.declared.view(w, c), declared)
            and np.array_equal(self.stored.view(w, c), stored)
        )

    def put(self, kid: int, declared: np.ndarray, stored: np.ndarray, extent: int, input_index: int) -> None:
        for g in (self.where, self.count, self.extent, self.input):
            g.resize(kid + 1)
        self.where[kid] = self.declared.append(np.asarray(declared, np.int64))
        self.stored.append(np.asarray(stored, np.int64))
        self.count[kid] = len(declared)
        self.extent[kid] = int(extent)
        self.input[kid] = input_index

    def concatenated(self, kids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Declared and stored edges of ``kids`` end to end (vectorised gather)."""
        kid = np.asarray(kids, np.int64)
        if kid.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        where = self.where.data[kid]
        count = self.count.data[kid]
        total = int(count.sum())
        # Row i of the result is where[k] + (i - first row of key k): one arange, one repeat.
        firsts = np.cumsum(count) - count
        rows = np.repeat(where - firsts, count) + np.arange(total, dtype=np.int64)
        return self.declared.data[rows], self.stored.data[rows]

    def total_extent(self, kids: Sequence[int]) -> int:
        kid = np.asarray(kids, np.int64)
        return int(self.extent.data[kid].sum()) if kid.size else 0


class Pieces:
    """One variable's pieces: per position (key ids along its concatenation dims) the input that
    gave it, where its block starts in the variable's :class:`Columns`, its time units and, for
    coordinates, its values.

    Stored as parallel growing arrays; with one concatenation dimension (the usual case) the
    position -> piece map is an array indexed by key id too, so a piece costs a few integers.
    Values of 1-d pieces go end to end into one buffer (coordinates are concatenated at the end
    anyway); others are kept as arrays.
    """

    __slots__ = ("ndim", "_by_kid", "_by_key", "input", "start", "units", "_vbuf", "_vstart", "_vcount", "_varrays")

    def __init__(self, ndim: int) -> None:
        self.ndim = ndim
        self._by_kid = Growable(np.int64, fill=-1) if ndim == 1 else None
        self._by_key: dict[tuple[int, ...], int] | None = None if ndim == 1 else {}
        self.input = Growable(np.int64)
        self.start = Growable(np.int64)
        self.units: list = []  # interned TimeUnits (or None) per piece
        self._vbuf: Growable | None = None
        self._vstart: Growable | None = None  # per piece, only once some piece keeps values
        self._vcount: Growable | None = None
        self._varrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.input.size

    def find(self, kk: tuple[int, ...]) -> int:
        """Index of the piece at key ids ``kk``, or -1."""
        if self._by_kid is not None:
            kid = kk[0]
            return self._by_kid[kid] if kid < self._by_kid.size else -1
        return self._by_key.get(kk, -1)  # type: ignore[union-attr]

    def add(self, kk: tuple[int, ...], input_index: int, start: int, units: object) -> int:
        i = self.input.append(np.asarray([input_index], np.int64))
        self.start.append(np.asarray([start], np.int64))
        self.units.append(units)
        if self._by_kid is not None:
            self._by_kid.resize(kk[0] + 1)
            self._by_kid[kk[0]] = i
        else:
            self._by_key[kk] = i  # type: ignore[index]
        return i

    def items(self) -> list[tuple[tuple[int, ...], int]]:
        """``(key ids, piece index)`` of every piece."""
        if self._by_kid is not None:
            kids = np.flatnonzero(self._by_kid.view(0, self._by_kid.size) >= 0)
            return [((int(k),), self._by_kid[int(k)]) for k in kids]
        return list(self._by_key.items())  # type: ignore[union-attr]

    def set_values(self, i: int, values: np.ndarray) -> None:
        """Keep piece ``i``'s values (coordinates; values read for a comparison)."""
        values = np.asarray(values)
        if values.ndim == 1 and not values.dtype.hasobject:
            if self._vbuf is None:
                self._vbuf = Growable(values.dtype)
            if self._vstart is None or self._vcount is None:
                self._vstart = Growable(np.int64, fill=-1)
                self._vcount = Growable(np.int64, fill=0)
            self._vstart.resize(len(self))
            self._vcount.resize(len(self))
            if self._vbuf.data.dtype == values.dtype:
                self._vstart[i] = self._vbuf.append(values)
                self._vcount[i] = len(values)
                return
        self._varrays[i] = values

    def values_of(self, i: int) -> np.ndarray | None:
        """Piece ``i``'s kept values (a view for 1-d ones: use before the next :meth:`set_values`)."""
        if i in self._varrays:
            return self._varrays[i]
        if self._vstart is None or self._vcount is None or i >= self._vstart.size:
            return None
        start = self._vstart[i]
        if start < 0:
            return None
        return self._vbuf.view(start, self._vcount[i])  # type: ignore[union-attr]

    def gather_values(self, indices: Sequence[int]) -> np.ndarray | None:
        """The kept 1-d values of pieces ``indices`` end to end (None unless all are in the buffer)."""
        idx = np.asarray(indices, np.int64)
        if self._vbuf is None or self._vstart is None or self._vcount is None or idx.size == 0 or self._varrays:
            return None
        if int(idx.max()) >= self._vstart.size:
            return None
        start = self._vstart.data[idx]
        count = self._vcount.data[idx]
        if (start < 0).any():
            return None
        firsts = np.cumsum(count) - count
        rows = np.repeat(start - firsts, count) + np.arange(int(count.sum()), dtype=np.int64)
        return self._vbuf.data[rows]

    def starts_of(self, kids: Sequence[int]) -> np.ndarray | None:
        """Block starts of the pieces at key ids ``kids`` (one concatenation dim), None if one is missing."""
        assert self._by_kid is not None
        kid = np.asarray(kids, np.int64)
        if kid.size and int(kid.max()) >= self._by_kid.size:
            return None
        idx = self._by_kid.data[kid]
        if (idx < 0).any():
            return None
        return self.start.data[idx]

    def drop_values(self) -> None:
        """Forget every kept value (after they went into the output)."""
        self._vbuf = None
        self._varrays.clear()
        self._vstart = self._vcount = None
