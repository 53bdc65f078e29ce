"""Region helpers for the array layer: resize arguments, chunks inside a box, empty selections."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from chunkref.errors import InvalidArgumentError
from chunkref.zarr.grid import ChunkGrid, RegularGrid


def normalize_resize(shape: Sequence[int], new_shape: Any) -> tuple[int, ...]:
    """Validate the argument of ``Array.resize``: an int (1-d arrays) or one int per axis, >= 0.

    Raises
    ------
    InvalidArgumentError
        When the rank differs from ``shape`` or a length is negative or not an integer.
    """
    ndim = len(shape)
    if isinstance(new_shape, (int, np.integer)) and not isinstance(new_shape, bool):
        new_shape = (new_shape,)
    try:
        items = tuple(new_shape)
    except TypeError:
        raise InvalidArgumentError(
            f"resize: new shape {new_shape!r} must be an int or a tuple of ints"
        ) from None
    out = []
    for a, n in enumerate(items):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise InvalidArgumentError(f"resize: length {n!r} for axis {a} is not an integer")
        if n < 0:
            raise InvalidArgumentError(f"resize: length {int(n)} for axis {a} must not be negative")
        out.append(int(n))
    if len(out) != ndim:
        raise InvalidArgumentError(
            f"resize: new shape {tuple(out)} has {len(out)} dimensions, the array has {ndim} (shape {tuple(shape)})"
        )
    return tuple(out)


def _axis_chunk_range(grid: ChunkGrid, axis: int, s: slice) -> range:
    """Chunk indices along ``axis`` that intersect the (clipped, step-1) slice ``s``."""
    n = grid.shape[axis]
    start, stop, step = s.indices(n)
    if step != 1:
        raise InvalidArgumentError(f"region slices must have step 1 (axis {axis}: {s!r})")
    if stop <= start:
        return range(0)
    k0 = int(grid.chunk_index(axis, start))
    k1 = int(grid.chunk_index(axis, stop - 1))
    return range(k0, k1 + 1)


def _product_coords(ranges: Sequence[range]) -> np.ndarray:
    if not ranges:
        return np.zeros((1, 0), dtype=np.int64)
    if any(len(r) == 0 for r in ranges):
        return np.zeros((0, len(ranges)), dtype=np.int64)
    grids = np.meshgrid(*[np.arange(r.start, r.stop, dtype=np.int64) for r in ranges], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=-1)


def chunks_for_region(grid: ChunkGrid, region: Sequence[slice] | slice) -> np.ndarray:
    """Coordinates ``(n, ndim)`` (C order) of the chunks of ``grid`` that intersect ``region``.

    ``region`` is one step-1 slice per axis (missing trailing axes mean the whole axis);
    slices are clipped to the array as numpy clips them.
    """
    if isinstance(region, slice):
        region = (region,)
    region = tuple(region)
    if len(region) > grid.ndim:
        raise InvalidArgumentError(f"region {region!r} has more axes than the grid ({grid.ndim})")
    region = region + (slice(None),) * (grid.ndim - len(region))
    for a, s in enumerate(region):
        if not isinstance(s, slice):
            raise InvalidArgumentError(f"region entries must be slices (axis {a}: {s!r})")
    return _product_coords([_axis_chunk_range(grid, a, s) for a, s in enumerate(region)])


def chunks_outside(old_grid: ChunkGrid, new_grid: ChunkGrid | Sequence[int]) -> np.ndarray:
    """Chunks of ``old_grid`` lying entirely outside the new shape (what a resize deletes).

    ``new_grid`` is the resized grid or just the new shape.  Returns coordinates ``(n, ndim)``
    in C order; chunks that straddle the new boundary are kept.
    """
    new_shape = new_grid.shape if isinstance(new_grid, ChunkGrid) else tuple(int(s) for s in new_grid)
    if len(new_shape) != old_grid.ndim:
        raise InvalidArgumentError(f"new shape {new_shape} does not match the grid's rank {old_grid.ndim}")
    gshape = old_grid.grid_shape
    if math.prod(gshape) == 0:
        return np.zeros((0, old_grid.ndim), dtype=np.int64)
    # Per axis, how many old chunks start inside the new extent.
    keep = [int(np.searchsorted(o[:-1], n, side="left")) for o, n in zip(old_grid.offsets, new_shape)]
    if all(k >= g for k, g in zip(keep, gshape)):
        return np.zeros((0, old_grid.ndim), dtype=np.int64)
    coords = old_grid.all_coords()
    outside = np.zeros(len(coords), dtype=bool)
    for a, k in enumerate(keep):
        outside |= coords[:, a] >= k
    return coords[outside]


def selection_is_empty(selection: Any, shape: Sequence[int], kind: str = "basic") -> bool:
    """Whether ``selection`` of an array of ``shape`` selects no element (errors as for reads)."""
    from chunkref.zarr.indexing.indexers import make_indexer

    shape = tuple(int(s) for s in shape)
    if kind == "blocks":
        raise InvalidArgumentError("selection_is_empty needs the chunk grid for block selections")
    # One chunk covering the array: the selection is parsed and checked, no chunk maths.
    grid = RegularGrid(shape, tuple(max(n, 1) for n in shape))
    return make_indexer(selection, grid, kind).size == 0
