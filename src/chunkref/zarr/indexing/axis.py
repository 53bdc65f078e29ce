"""Per-axis projections: which chunks one axis of a selection touches, and where.

For one axis of an outer (basic or orthogonal) selection, an :class:`AxisProjection` lists, in
ascending chunk order, every chunk the selection touches along that axis with

* the selection inside the chunk (an ``int``, a positive-step ``slice`` or an int64 array),
  relative to the chunk's *declared* start (``grid.offsets[axis][k]``);
* the matching selection of the output axis (a ``slice``, possibly with a negative step, or an
  int64 array); unused for an axis dropped by an integer index;
* whether the chunk's data along this axis (the part inside the array) is covered exactly once,
  in ascending order.

Everything is computed with numpy over the axis' chunk offsets (one ``searchsorted`` or integer
division, never a loop per element); the only Python loop is the one that turns the per-chunk
numbers into slice objects, once per chunk along the axis.  An n-d selection is the cartesian
product of its axes' projections (see :mod:`chunkref.zarr.indexing.indexers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref.zarr.grid import ChunkGrid

#: Slices spanning fewer chunks than this along an axis are projected in plain Python; more go
#: through numpy.  Tests lower it to 0 to exercise the vectorised path on small arrays.
SMALL_AXIS_CHUNKS = 16


@dataclass(frozen=True, slots=True)
class AxisProjection:
    """What one axis of an outer selection touches (all lists aligned, ascending chunks)."""

    chunks: list[int]
    chunk_sels: list[Any]
    out_sels: list[Any]
    complete: list[bool]
    #: Output length along this axis (0 for an axis dropped by an integer index).
    length: int
    #: True when an integer index drops the axis from the result.
    dropped: bool = False

    def __len__(self) -> int:
        return len(self.chunks)


def _empty() -> AxisProjection:
    return AxisProjection([], [], [], [], 0)


def _data_lengths(offsets: np.ndarray, extent: int, ks: np.ndarray) -> np.ndarray:
    """Length of the data inside the array of chunks ``ks`` (edge chunks are cut at ``extent``)."""
    return np.minimum(offsets[ks + 1], extent) - offsets[ks]


def project_int(index: int, axis: int, grid: ChunkGrid) -> AxisProjection:
    """An integer index (already wrapped and bounds-checked): one chunk, axis dropped."""
    if grid.is_regular:
        c = grid.chunk_shape[axis]  # type: ignore[attr-defined]
        k = index // c
        start, stop = k * c, (k + 1) * c
    else:
        offsets = grid.offsets[axis]
        k = int(grid.chunk_index(axis, index))
        start, stop = int(offsets[k]), int(offsets[k + 1])
    data_len = min(stop, grid.shape[axis]) - start
    return AxisProjection([k], [index - start], [None], [data_len == 1], 0, dropped=True)


def project_slice(start: int, step: int, length: int, axis: int, grid: ChunkGrid) -> AxisProjection:
    """A slice given by its normalised ``start``, ``step`` and ``length`` (``slice.indices``).

    Negative steps are turned around: the chunk side always reads ascending (positive step)
    and the output side gets the matching descending slice, so ``out[o] = chunk[c]`` holds
    for both directions.
    """
    if length == 0:
        return _empty()
    reverse = step < 0
    if reverse:
        step = -step
        first = start - (length - 1) * step  # lowest selected position
    else:
        first = start
    offsets = grid.offsets[axis]
    extent = grid.shape[axis]
    last = first + (length - 1) * step
    if grid.is_regular:
        c = grid.chunk_shape[axis]  # type: ignore[attr-defined]
        k0, k1 = first // c, last // c
        if k1 - k0 < SMALL_AXIS_CHUNKS:
            return _project_slice_small(
                first, step, length, reverse, k0, [k * c for k in range(k0, k1 + 2)], extent
            )
    else:
        k0, k1 = (int(k) for k in grid.chunk_index(axis, np.array((first, last))))
        if k1 - k0 < SMALL_AXIS_CHUNKS:
            return _project_slice_small(
                first, step, length, reverse, k0, offsets[k0 : k1 + 2].tolist(), extent
            )
    ks = np.arange(k0, k1 + 1, dtype=np.int64)
    lo = offsets[ks]
    hi = offsets[ks + 1]
    # Selected element i sits at first + i*step; chunk k holds i in [ceil((lo-first)/step),
    # ceil((hi-first)/step)).  ceil(a/b) == -((-a)//b) for b > 0.
    i_lo = np.maximum(-((first - lo) // step), 0)
    i_hi = np.minimum(-((first - hi) // step), length)
    if step > 1:
        keep = i_hi > i_lo  # steps longer than a chunk skip chunks entirely
        if not keep.all():
            ks, lo, hi, i_lo, i_hi = ks[keep], lo[keep], hi[keep], i_lo[keep], i_hi[keep]
    c_start = first + i_lo * step - lo
    c_stop = first + (i_hi - 1) * step - lo + 1
    if step == 1:
        complete = ((c_start == 0) & (c_stop == np.minimum(hi, extent) - lo)).tolist()
    else:
        # A step > 1 covers a chunk only when the chunk holds a single element.
        complete = ((c_stop - c_start == 1) & (np.minimum(hi, extent) - lo == 1)).tolist()
    cs = c_start.tolist()
    ce = c_stop.tolist()
    ol = i_lo.tolist()
    oh = i_hi.tolist()
    if step == 1:
        chunk_sels = [slice(a, b) for a, b in zip(cs, ce)]
    else:
        chunk_sels = [slice(a, b, step) for a, b in zip(cs, ce)]
    if reverse:
        # Ascending element i is output element length-1-i.
        n1 = length - 1
        out_sels = [slice(n1 - a, (n1 - b) if b <= n1 else None, -1) for a, b in zip(ol, oh)]
    else:
        out_sels = [slice(a, b) for a, b in zip(ol, oh)]
    return AxisProjection(ks.tolist(), chunk_sels, out_sels, complete, length)


def _project_slice_small(
    first: int, step: int, length: int, reverse: bool, k0: int, bounds: list[int], extent: int
) -> AxisProjection:
    """:func:`project_slice` in plain Python for a few chunks (numpy's per-call cost dominates there).

    ``bounds`` are the offsets of chunks ``k0 ..`` plus the end of the last one.
    """
    chunks: list[int] = []
    chunk_sels: list[Any] = []
    out_sels: list[Any] = []
    complete: list[bool] = []
    n1 = length - 1
    for j in range(len(bounds) - 1):
        lo = bounds[j]
        hi = bounds[j + 1]
        i_lo = max(-((first - lo) // step), 0)
        i_hi = min(-((first - hi) // step), length)
        if i_hi <= i_lo:
            continue
        c_start = first + i_lo * step - lo
        c_stop = first + (i_hi - 1) * step - lo + 1
        data_len = min(hi, extent) - lo
        chunks.append(k0 + j)
        if step == 1:
            chunk_sels.append(slice(c_start, c_stop))
            complete.append(c_start == 0 and c_stop == data_len)
        else:
            chunk_sels.append(slice(c_start, c_stop, step))
            complete.append(c_stop - c_start == 1 and data_len == 1)
        if reverse:
            out_sels.append(slice(n1 - i_lo, (n1 - i_hi) if i_hi <= n1 else None, -1))
        else:
            out_sels.append(slice(i_lo, i_hi))
    return AxisProjection(chunks, chunk_sels, out_sels, complete, length)


def _break_counts(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per group ``[start, end)``, how many neighbours in ``values`` do not differ by exactly 1."""
    breaks = np.empty(len(values), dtype=np.int64)
    breaks[0] = 0
    np.cumsum(np.diff(values) != 1, out=breaks[1:])
    return breaks[ends - 1] - breaks[starts]


def group_positions(
    positions: np.ndarray, axis: int, grid: ChunkGrid
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group 1-d array positions by chunk: ``(order, chunks, starts, ends, local)``.

    ``order`` is None when the positions already come in non-decreasing chunk order, else the
    stable permutation that sorts them (so duplicates keep their order: numpy's last-wins
    assignment is preserved).  ``local`` holds the sorted positions relative to their chunk's
    start; group ``g`` is ``[starts[g], ends[g])`` of the sorted order and lies in chunk
    ``chunks[g]``.
    """
    cidx = np.asarray(grid.chunk_index(axis, positions), dtype=np.int64)
    order: np.ndarray | None = None
    if len(cidx) > 1 and (cidx[1:] < cidx[:-1]).any():
        order = np.argsort(cidx, kind="stable")
        cidx = cidx[order]
        positions = positions[order]
    bounds = np.flatnonzero(cidx[1:] != cidx[:-1]) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(cidx)]))
    local = positions - grid.offsets[axis][cidx]
    return order, cidx[starts], starts, ends, local


def project_array(positions: np.ndarray, axis: int, grid: ChunkGrid) -> AxisProjection:
    """A 1-d int64 index array (wrapped, bounds-checked): any order, duplicates allowed.

    Per chunk, a run of consecutive ascending positions becomes a slice on the chunk side; the
    output side is a slice when the chunk's elements are consecutive in the output.
    """
    n = len(positions)
    if n == 0:
        return _empty()
    order, chunks, starts, ends, local = group_positions(positions, axis, grid)
    chunk_run = _break_counts(local, starts, ends) == 0
    if order is None:
        out_run = np.ones(len(starts), dtype=bool)  # groups are consecutive in the output
    else:
        out_run = _break_counts(order, starts, ends) == 0
    counts = ends - starts
    data_len = _data_lengths(grid.offsets[axis], grid.shape[axis], chunks)
    complete = (chunk_run & (local[starts] == 0) & (counts == data_len)).tolist()
    chunk_sels: list[Any] = []
    out_sels: list[Any] = []
    first_local = local[starts].tolist()
    first_out = (starts if order is None else order[starts]).tolist()
    for s, e, cr, orun, fl, fo in zip(
        starts.tolist(), ends.tolist(), chunk_run.tolist(), out_run.tolist(), first_local, first_out
    ):
        chunk_sels.append(slice(fl, fl + e - s) if cr else local[s:e])
        out_sels.append(slice(fo, fo + e - s) if orun else order[s:e])  # type: ignore[index]
    return AxisProjection(chunks.tolist(), chunk_sels, out_sels, complete, n)
