"""Indexers: a selection over a chunk grid, as per-chunk projections.

``make_indexer(selection, grid, kind)`` returns an :class:`Indexer`: the result ``shape``, the
``buffer_shape`` the engine fills, and one :class:`ChunkProjection` per touched chunk, in C order
of chunk coordinates, such that ``chunk[chunk_selection]`` holds the values of
``buffer[out_selection]`` (and a write assigns the other way round).

* ``basic`` -- numpy's ``a[selection]``: ints, slices (any step), ``...``, ``None``; a selection
  with arrays is dispatched exactly as numpy would (to ``orthogonal`` when that gives numpy's
  result, else to ``vindex``), so a full boolean mask works.
* ``orthogonal`` -- ``a.oindex[...]``: per-axis int arrays (any order, duplicates) and 1-d
  boolean masks, slices, ints.  Result axes follow the array's axes, ints dropped.
* ``vindex`` -- ``a.vindex[...]``: numpy advanced indexing (broadcast int arrays, ints, a full
  or partial boolean mask, optionally mixed with slices).  Points are grouped by chunk with one
  stable argsort; the engine fills ``buffer_shape`` (the points flattened to one axis) and
  reshapes it, in C order, to ``shape``.
* ``blocks`` -- ``a.blocks[...]``: ints and step-1 slices in chunk units, translated through the
  grid's offsets (so it works for rectilinear grids) into a basic selection.  Dimensions are
  kept (``a.blocks[1]`` is the whole chunk row), as in zarr-python and dask.

Performance: basic and orthogonal selections are the cartesian product of per-axis
projections (:mod:`.axis`) computed once; the projections are produced by C-level
``itertools.product``/``map`` with no Python frame per chunk.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any, NamedTuple

import numpy as np

from chunkref.errors import InvalidArgumentError, InvalidSelectionError
from chunkref.zarr.grid import ChunkGrid
from chunkref.zarr.indexing.axis import (
    AxisProjection,
    _break_counts,
    project_array,
    project_int,
    project_slice,
)
from chunkref.zarr.indexing.selection import (
    ARRAY,
    INT,
    MASK,
    NEWAXIS,
    SLICE,
    Entry,
    check_array,
    check_int,
    check_mask,
    expand_entries,
    kind_of_entries,
    parse_entries,
    slice_indices,
)

KINDS = ("basic", "orthogonal", "vindex", "blocks")


class ChunkProjection(NamedTuple):
    """One chunk touched by a selection.

    Attributes
    ----------
    coords
        Grid coordinates of the chunk.
    chunk_selection
        Selection of the decoded chunk, relative to its *declared* shape
        (``grid.chunk_shape_at(coords)``): ints, positive-step slices, int64 arrays.
    out_selection
        Selection of the indexer's buffer (``buffer_shape``).  ``chunk[chunk_selection]`` has
        the shape of ``buffer[out_selection]``.
    is_complete
        The selection covers every element of the chunk's data inside the array
        (``grid.chunk_data_shape(coords)``) exactly once, in ascending order with step 1 on
        the chunk side, so a write can build the chunk without reading the old one.
    """

    coords: tuple[int, ...]
    chunk_selection: tuple[Any, ...]
    out_selection: tuple[Any, ...]
    is_complete: bool


class Indexer(ABC):
    """A selection mapped onto a chunk grid (see the module docstring)."""

    kind: str
    grid: ChunkGrid
    #: Result shape (integer-indexed axes dropped, ``None`` axes added).
    shape: tuple[int, ...]
    #: Shape of the buffer the projections address; equals ``shape`` except for vindex.
    buffer_shape: tuple[int, ...]
    #: Array axes dropped from the result by integer indices (basic / orthogonal).
    drop_axes: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        """Number of selected elements."""
        return math.prod(self.shape)

    @property
    def is_empty(self) -> bool:
        return self.size == 0

    @property
    @abstractmethod
    def nchunks(self) -> int:
        """Number of chunks the selection touches."""

    def __len__(self) -> int:
        return self.nchunks

    @abstractmethod
    def __iter__(self) -> Iterator[ChunkProjection]: ...

    def projections(self) -> list[ChunkProjection]:
        """Every :class:`ChunkProjection` in C order of chunk coordinates."""
        return list(iter(self))

    @abstractmethod
    def chunk_coords(self) -> np.ndarray:
        """Coordinates of the touched chunks, shape ``(nchunks, ndim)`` int64, in C order."""

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} kind={self.kind!r} shape={self.shape} "
            f"buffer_shape={self.buffer_shape} nchunks={self.nchunks}>"
        )


# --- basic / orthogonal: cartesian product of per-axis projections --------------------------


def _as_index_array(s: Any) -> np.ndarray:
    """A slice (explicit start; any step) or an index array as an index array."""
    if isinstance(s, slice):
        step = s.step or 1
        stop = s.stop if s.stop is not None else -1  # only descending output slices omit stop
        return np.arange(s.start, stop, step, dtype=np.int64)
    return s


def _outer_forms(sels: list[Any], position: int, kept: int) -> list[np.ndarray]:
    """Every selection of one axis as an index array shaped to broadcast along result axis
    ``position`` of ``kept`` result axes (the ``np.ix_`` form)."""
    shape = [1] * kept
    shape[position] = -1
    return [_as_index_array(s).reshape(shape) for s in sels]


class ProductIndexer(Indexer):
    """Basic and orthogonal selections: every combination of the per-axis projections."""

    def __init__(
        self, kind: str, grid: ChunkGrid, axes: Sequence[AxisProjection], out_axes: Sequence[int | None]
    ) -> None:
        """``axes``: one projection per array axis; ``out_axes``: per result axis, the array
        axis it comes from, or None for an axis added by ``np.newaxis``."""
        self.kind = kind
        self.grid = grid
        self._axes = list(axes)
        self._out_axes = list(out_axes)
        self.shape = tuple(1 if a is None else self._axes[a].length for a in out_axes)
        self.buffer_shape = self.shape
        self.drop_axes = tuple(i for i, ax in enumerate(self._axes) if ax.dropped)
        self._chunks = [ax.chunks for ax in self._axes]
        self._chunk_sels = [ax.chunk_sels for ax in self._axes]
        # An int index only ever touches one chunk, so leaving dropped axes out of the output
        # product (and adding single-entry lists for new axes) keeps every product in step.
        self._out_sels = [[0] if a is None else self._axes[a].out_sels for a in out_axes]
        self._complete = [ax.complete for ax in self._axes]
        self._has_arrays = any(
            isinstance(s, np.ndarray) for ax in self._axes for s in (*ax.chunk_sels, *ax.out_sels)
        )
        self._has_ints = bool(self.drop_axes)

    @property
    def axes(self) -> list[AxisProjection]:
        """The per-axis projections (one per array axis)."""
        return self._axes

    @property
    def nchunks(self) -> int:
        return math.prod(len(c) for c in self._chunks)

    def __iter__(self) -> Iterator[ChunkProjection]:
        plain = zip(
            product(*self._chunks),
            product(*self._chunk_sels),
            product(*self._out_sels),
            map(all, product(*self._complete)),
        )
        if not self._has_arrays:
            return map(ChunkProjection._make, plain)
        return self._iter_fancy()

    def projections(self) -> list[ChunkProjection]:
        return list(iter(self))

    def _iter_fancy(self) -> Iterator[ChunkProjection]:
        """Orthogonal selections with index arrays.

        numpy broadcasts several index arrays together (and moves the broadcast axes to the
        front when an int separates them from the rest), which is not the outer product.  A
        chunk (or output) selection holding two or more arrays -- or one array and an int --
        is therefore given in ``np.ix_`` form: every non-int entry an index array shaped to
        broadcast along its own result axis.  The forms are built once per axis and chunk.
        """
        axes = self._axes
        kept_axes = [a for a, ax in enumerate(axes) if not ax.dropped]
        cs_outer = [ax.chunk_sels for ax in axes]
        for j, a in enumerate(kept_axes):
            cs_outer[a] = _outer_forms(axes[a].chunk_sels, j, len(kept_axes))
        os_outer = [_outer_forms(sels, j, len(self._out_sels)) for j, sels in enumerate(self._out_sels)]
        cs_flags = [[type(s) is np.ndarray for s in ax.chunk_sels] for ax in axes]
        os_flags = [[type(s) is np.ndarray for s in sels] for sels in self._out_sels]
        cs_limit = 1 if self._has_ints else 2
        for coords, cs, cso, csf, os, oso, osf, comp in zip(
            product(*self._chunks),
            product(*self._chunk_sels),
            product(*cs_outer),
            product(*cs_flags),
            product(*self._out_sels),
            product(*os_outer),
            product(*os_flags),
            product(*self._complete),
        ):
            yield ChunkProjection(
                coords, cso if sum(csf) >= cs_limit else cs, oso if sum(osf) >= 2 else os, all(comp)
            )

    def chunk_coords(self) -> np.ndarray:
        ndim = len(self._chunks)
        if ndim == 0:
            return np.zeros((1, 0), dtype=np.int64)
        grids = np.meshgrid(*[np.asarray(c, dtype=np.int64) for c in self._chunks], indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=-1)


def _basic_indexer(entries: list[Entry], grid: ChunkGrid, kind: str = "basic") -> ProductIndexer:
    shape = grid.shape
    axes: list[AxisProjection] = []
    out_axes: list[int | None] = []
    for e in entries:
        if e.tag == NEWAXIS:
            out_axes.append(None)
        elif e.tag == INT:
            axes.append(project_int(check_int(e.value, e.axis, shape[e.axis]), e.axis, grid))
        elif e.tag == SLICE:
            start, _, step, length = slice_indices(e.value, shape[e.axis], e.axis)
            out_axes.append(e.axis)
            axes.append(project_slice(start, step, length, e.axis, grid))
        else:  # pragma: no cover - dispatch guarantees basic entries here
            raise InvalidSelectionError(f"array index on axis {e.axis} in a basic selection")
    return ProductIndexer(kind, grid, axes, out_axes)


def _orthogonal_indexer(entries: list[Entry], grid: ChunkGrid) -> ProductIndexer:
    shape = grid.shape
    axes: list[AxisProjection] = []
    out_axes: list[int | None] = []
    for e in entries:
        a = e.axis
        if e.tag == NEWAXIS:
            raise InvalidSelectionError("np.newaxis (None) is not supported in orthogonal selections")
        if e.tag == INT:
            axes.append(project_int(check_int(e.value, a, shape[a]), a, grid))
            continue
        out_axes.append(a)
        if e.tag == SLICE:
            start, _, step, length = slice_indices(e.value, shape[a], a)
            axes.append(project_slice(start, step, length, a, grid))
            continue
        if e.value.ndim != 1:
            raise InvalidSelectionError(
                f"orthogonal selection: the {'boolean' if e.tag == MASK else 'integer'} array for axis {a} "
                f"must be 1-dimensional, got shape {e.value.shape}"
            )
        if e.tag == MASK:
            check_mask(e.value, a, shape)
            positions = np.flatnonzero(e.value).astype(np.int64, copy=False)
        else:
            positions = check_array(e.value, a, shape[a])
        axes.append(project_array(positions, a, grid))
    return ProductIndexer("orthogonal", grid, axes, out_axes)


# --- vindex: numpy advanced indexing, points grouped by chunk --------------------------------


class VindexIndexer(Indexer):
    """numpy advanced indexing (coordinates, masks, optionally mixed with slices).

    The selected points (the broadcast index arrays, flattened in C order) form one buffer
    axis; slice axes keep their own buffer axes.  The points axis sits where numpy puts the
    broadcast axes: in place of the advanced indices when they are adjacent, else first.
    """

    kind = "vindex"

    def __init__(self, grid: ChunkGrid, entries: list[Entry]) -> None:
        self.grid = grid
        shape = grid.shape
        adv_axes: list[int] = []
        arrays: list[np.ndarray] = []
        adv_entries: list[int] = []
        slice_axes: list[int] = []
        slice_projs: list[AxisProjection] = []
        for i, e in enumerate(entries):
            a = e.axis
            if e.tag == NEWAXIS:
                raise InvalidSelectionError(
                    "np.newaxis (None) cannot be combined with array indices; add the axis to the result instead"
                )
            if e.tag == SLICE:
                start, _, step, length = slice_indices(e.value, shape[a], a)
                slice_axes.append(a)
                slice_projs.append(project_slice(start, step, length, a, grid))
                continue
            adv_entries.append(i)
            if e.tag == INT:
                adv_axes.append(a)
                arrays.append(np.asarray(check_int(e.value, a, shape[a]), dtype=np.int64))
            elif e.tag == ARRAY:
                adv_axes.append(a)
                arrays.append(check_array(e.value, a, shape[a]))
            else:  # MASK over axes a .. a+ndim-1
                check_mask(e.value, a, shape)
                for k, nz in enumerate(np.nonzero(e.value)):
                    adv_axes.append(a + k)
                    arrays.append(nz.astype(np.int64, copy=False))
        try:
            bshape = np.broadcast_shapes(*(x.shape for x in arrays))
        except ValueError:
            shapes = " ".join(str(x.shape) for x in arrays)
            raise InvalidSelectionError(
                f"shape mismatch: indexing arrays could not be broadcast together with shapes {shapes}"
            ) from None
        npts = math.prod(bshape)
        points = [np.broadcast_to(x, bshape).reshape(-1) for x in arrays]

        adjacent = adv_entries[-1] - adv_entries[0] + 1 == len(adv_entries)
        p = sum(1 for e in entries[: adv_entries[0]] if e.tag == SLICE) if adjacent else 0
        lengths = tuple(sp.length for sp in slice_projs)
        self.shape = lengths[:p] + tuple(bshape) + lengths[p:]
        self.buffer_shape = lengths[:p] + (npts,) + lengths[p:]
        self._points_dim = p
        self._adv_axes = adv_axes
        self._slice_axes = slice_axes
        self._slice_projs = slice_projs
        self._projections = self._build(points, npts) if npts and all(len(sp) for sp in slice_projs) else []

    def _group(self, points: list[np.ndarray], npts: int) -> tuple[np.ndarray, list, list, list]:
        """Group points by chunk over the advanced axes: coords, chunk sels, out sels, complete."""
        grid = self.grid
        axes = self._adv_axes
        cidx, local = zip(*(_chunk_and_local(grid, a, x) for a, x in zip(axes, points)))
        gshape = tuple(grid.grid_shape[a] for a in axes)
        flat = cidx[0] if len(axes) == 1 else np.ravel_multi_index(cidx, gshape)
        order: np.ndarray | None = None
        if npts > 1 and (flat[1:] < flat[:-1]).any():
            # Stable, so duplicate points keep their order and a write keeps numpy's last-wins.
            order = np.argsort(flat, kind="stable")
            flat = flat[order]
            local = tuple(loc[order] for loc in local)
        bounds = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [npts]))
        counts = ends - starts
        first = starts if order is None else order[starts]
        gcidx = [c[first] for c in cidx]
        # Complete: the chunk's data points, each once, in C order (flat index 0, 1, 2, ...).
        # Only groups with exactly as many points as the chunk has data can be; check those.
        gdl = [
            np.minimum(grid.offsets[a][c + 1], grid.shape[a]) - grid.offsets[a][c]
            for a, c in zip(axes, gcidx)
        ]
        expected = gdl[0]
        for d in gdl[1:]:
            expected = expected * d
        complete_arr = counts == expected
        if complete_arr.any():
            lf = local[0]
            for loc, d in zip(local[1:], gdl[1:]):
                lf = lf * np.repeat(d, counts) + loc
            complete_arr &= (lf[starts] == 0) & (_break_counts(lf, starts, ends) == 0)
        complete = complete_arr.tolist()
        s_list = starts.tolist()
        e_list = ends.tolist()
        if order is None:
            out_sels: list[Any] = [slice(s, e) for s, e in zip(s_list, e_list)]
        else:
            out_run = (_break_counts(order, starts, ends) == 0).tolist()
            out_sels = [
                slice(f, f + e - s) if run else order[s:e]
                for s, e, run, f in zip(s_list, e_list, out_run, first.tolist())
            ]
        per_axis = [[loc[s:e] for s, e in zip(s_list, e_list)] for loc in local]
        chunk_sels = list(zip(*per_axis))
        coords = np.stack(gcidx, axis=-1)
        return coords, chunk_sels, out_sels, complete

    def _build(self, points: list[np.ndarray], npts: int) -> list[ChunkProjection]:
        gcoords, gsel, gout, gcomp = self._group(points, npts)
        if not self._slice_axes:
            return list(
                map(
                    ChunkProjection._make,
                    zip(map(tuple, gcoords.tolist()), gsel, ((o,) for o in gout), gcomp),
                )
            )
        ndim = self.grid.ndim
        projs = self._slice_projs
        dims = (len(gsel), *(len(sp) for sp in projs))
        combos = np.indices(dims).reshape(len(dims), -1)
        coords = np.empty((combos.shape[1], ndim), dtype=np.int64)
        coords[:, self._adv_axes] = gcoords[combos[0]]
        for j, (a, sp) in enumerate(zip(self._slice_axes, projs)):
            coords[:, a] = np.asarray(sp.chunks, dtype=np.int64)[combos[j + 1]]
        order = np.lexsort(coords.T[::-1])  # C order of full chunk coordinates
        coords_list = coords[order].tolist()
        combos_list = combos[:, order].T.tolist()
        p = self._points_dim
        adv = self._adv_axes
        out: list[ChunkProjection] = []
        for c, combo in zip(coords_list, combos_list):
            g = combo[0]
            cs: list[Any] = [None] * ndim
            for a, loc in zip(adv, gsel[g]):
                cs[a] = loc
            os: list[Any] = []
            complete = gcomp[g]
            for a, sp, j in zip(self._slice_axes, projs, combo[1:]):
                cs[a] = sp.chunk_sels[j]
                os.append(sp.out_sels[j])
                complete = complete and sp.complete[j]
            os.insert(p, gout[g])
            out.append(ChunkProjection(tuple(c), tuple(cs), tuple(os), complete))
        return out

    @property
    def nchunks(self) -> int:
        return len(self._projections)

    def __iter__(self) -> Iterator[ChunkProjection]:
        return iter(self._projections)

    def projections(self) -> list[ChunkProjection]:
        return list(self._projections)

    def chunk_coords(self) -> np.ndarray:
        if not self._projections:
            return np.zeros((0, self.grid.ndim), dtype=np.int64)
        return np.array([p.coords for p in self._projections], dtype=np.int64).reshape(-1, self.grid.ndim)


def _chunk_and_local(grid: ChunkGrid, axis: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chunk index of every position along ``axis`` and its offset inside the chunk."""
    if grid.is_regular:
        c = grid.chunk_shape[axis]  # type: ignore[attr-defined]
        k = x // c
        return k, x - k * c
    o = grid.offsets[axis]
    k = np.searchsorted(o, x, side="right") - 1
    return k, x - o[k]


# --- blocks -----------------------------------------------------------------------------------


def block_selection(selection: Any, grid: ChunkGrid) -> tuple[slice, ...]:
    """Translate a selection in chunk units (ints, step-1 slices) to array slices."""
    entries = expand_entries(parse_entries(selection), grid.ndim)
    gshape = grid.grid_shape
    out: list[slice] = []
    for e in entries:
        a = e.axis
        o = grid.offsets[a]
        n = grid.shape[a]
        if e.tag == INT:
            k = e.value
            if not -gshape[a] <= k < gshape[a]:
                from chunkref.errors import BoundsCheckError

                raise BoundsCheckError(
                    f"block index {k} is out of bounds for axis {a} with {gshape[a]} chunks"
                )
            k = k + gshape[a] if k < 0 else k
            out.append(slice(int(o[k]), int(min(o[k + 1], n))))
        elif e.tag == SLICE:
            start, stop, step, length = slice_indices(e.value, gshape[a], a)
            if step != 1:
                raise InvalidSelectionError(
                    f"block selections support only step-1 slices (axis {a}: {e.value!r})"
                )
            if length == 0:
                out.append(slice(0, 0))
            else:
                out.append(slice(int(o[start]), int(min(o[stop], n))))
        else:
            what = "np.newaxis (None)" if e.tag == NEWAXIS else "arrays"
            raise InvalidSelectionError(f"block selections take ints and slices only, got {what} (axis {a})")
    return tuple(out)


# --- entry point ------------------------------------------------------------------------------


def make_indexer(selection: Any, grid: ChunkGrid, kind: str = "basic") -> Indexer:
    """Map ``selection`` over ``grid`` to per-chunk projections.

    Parameters
    ----------
    selection
        Anything numpy accepts as an index (see the module docstring for each kind).
    grid
        The array's chunk grid (regular or rectilinear).
    kind
        ``"basic"`` (``a[sel]``, numpy semantics including arrays and masks),
        ``"orthogonal"`` (``a.oindex``), ``"vindex"`` (``a.vindex``) or ``"blocks"``.

    Raises
    ------
    BoundsCheckError
        An integer index is out of range (names axis, index and extent).
    InvalidSelectionError
        A malformed selection (type, too many indices, non-broadcastable arrays); an
        ``IndexError``, as in numpy.
    SelectionTypeError
        Slice bounds that are not integers (a ``TypeError``, as in numpy).
    InvalidArgumentError
        A slice step of zero, or an unknown ``kind`` (``ValueError``).
    """
    if kind == "blocks":
        slices = block_selection(selection, grid)
        entries = [Entry(SLICE, s, a) for a, s in enumerate(slices)]
        return _basic_indexer(entries, grid, "blocks")
    if kind not in KINDS:
        raise InvalidArgumentError(f"unknown indexing kind {kind!r}; expected one of {KINDS}")
    entries = expand_entries(parse_entries(selection), grid.ndim)
    if kind == "basic":
        kind = kind_of_entries(entries)
        if kind == "basic":
            return _basic_indexer(entries, grid)
    if kind == "orthogonal":
        return _orthogonal_indexer(entries, grid)
    if not any(e.tag in (ARRAY, MASK) for e in entries):
        # No arrays: numpy's advanced-indexing rules reduce to basic indexing.
        return _basic_indexer(entries, grid, "vindex")
    return VindexIndexer(grid, entries)
