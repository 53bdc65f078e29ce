"""Property tests: every indexing kind against numpy, on regular and rectilinear grids.

For a random array, grid and selection, reading through the projections from a chunked copy
(edge chunks padded to their declared shape) must equal numpy's result, and scattering a value
through the projections must equal numpy's assignment.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkref.zarr.grid import RectilinearGrid, RegularGrid
from chunkref.zarr.indexing import axis as axis_mod
from chunkref.zarr.indexing import make_indexer, selection_kind
from test_indexing_support import assemble, check_projections, read, split_chunks, write

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def grids(draw, min_ndim=0, max_ndim=3, max_extent=11):
    ndim = draw(st.integers(min_ndim, max_ndim))
    shape = tuple(draw(st.integers(0, max_extent)) for _ in range(ndim))
    if draw(st.booleans()):
        return RegularGrid(shape, tuple(draw(st.integers(1, 5)) for _ in range(ndim)))
    edges = []
    for n in shape:
        axis: list[int] = []
        while sum(axis) < n or not axis:
            axis.append(draw(st.integers(1, 5)))
        axis += draw(st.lists(st.integers(1, 4), max_size=2))  # edges summing past the extent
        edges.append(tuple(axis))
    return RectilinearGrid(shape, tuple(edges))


def _slices(n):
    bound = st.none() | st.integers(-n - 2, n + 2)
    return st.builds(slice, bound, bound, st.sampled_from([None, 1, 1, 2, 3, -1, -2, 4]))


def _int_arrays(n, max_len=6):
    return st.lists(st.integers(-n, n - 1), max_size=max_len).map(lambda v: np.array(v, dtype=np.int64))


@st.composite
def basic_selections(draw, shape):
    items = []
    for n in shape:
        if n and draw(st.integers(0, 3)) == 0:
            items.append(draw(st.integers(-n, n - 1)))
        else:
            items.append(draw(_slices(n)))
    # Replace a run by an ellipsis, or drop trailing axes; insert new axes.
    if draw(st.booleans()):
        i = draw(st.integers(0, len(items)))
        j = draw(st.integers(i, len(items)))
        items[i:j] = [Ellipsis]
    elif items and draw(st.booleans()):
        items = items[: draw(st.integers(0, len(items)))]
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    if len(items) == 1 and draw(st.booleans()):
        return items[0]
    return tuple(items)


@st.composite
def orthogonal_selections(draw, shape):
    items = []
    for n in shape:
        choice = draw(st.integers(0, 4 if n else 2))
        if choice == 0:
            items.append(draw(_slices(n)))
        elif choice == 1:
            items.append(draw(_int_arrays(n)) if n else np.zeros(0, dtype=np.int64))
        elif choice == 2:
            items.append(np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool))
        elif choice == 3:
            items.append(draw(st.integers(-n, n - 1)))
        else:  # sorted unique runs (become slices inside chunks)
            lo = draw(st.integers(0, n - 1))
            hi = draw(st.integers(lo, n))
            items.append(list(range(lo, hi)))
    return tuple(items)


def numpy_orthogonal(a, sel):
    """Reference orthogonal indexing: np.ix_ over per-axis index arrays, ints dropped."""
    idx, drop = [], []
    for axis, (s, n) in enumerate(zip(sel, a.shape)):
        if isinstance(s, slice):
            idx.append(np.arange(n)[s])
        elif isinstance(s, (int, np.integer)):
            idx.append(np.array([s]))
            drop.append(axis)
        else:
            s = np.asarray(s)
            idx.append(np.flatnonzero(s) if s.dtype == bool else s.astype(np.int64))
    return np.ix_(*idx), tuple(drop)


@st.composite
def vindex_selections(draw, shape):
    """numpy advanced selections: broadcast int arrays and ints, masks, mixed with slices."""
    ndim = len(shape)
    if ndim == 0:
        return draw(st.sampled_from([(), Ellipsis]))  # a 0-d boolean mask is refused on purpose
    kind = draw(st.integers(0, 3))
    if kind == 0 or not any(shape):
        return np.array(
            draw(st.lists(st.booleans(), min_size=math.prod(shape), max_size=math.prod(shape))), dtype=bool
        ).reshape(shape)
    if kind == 1 and ndim >= 2:  # leading mask over k axes, then slices
        k = draw(st.integers(1, ndim - 1))
        m = np.array(
            draw(st.lists(st.booleans(), min_size=math.prod(shape[:k]), max_size=math.prod(shape[:k]))),
            dtype=bool,
        )
        rest = tuple(draw(_slices(n)) for n in shape[k:])
        return (m.reshape(shape[:k]), *rest)
    bshape = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    items = []
    for n in shape:
        c = draw(st.integers(0, 3)) if n else 2
        if c <= 1:
            # Broadcasts against bshape: a suffix of it, some dims set to 1.
            sub = bshape[draw(st.integers(0, len(bshape))) :]
            sub = tuple(1 if draw(st.booleans()) else d for d in sub)
            items.append(
                np.array(
                    draw(st.lists(st.integers(-n, n - 1), min_size=math.prod(sub), max_size=math.prod(sub))),
                    dtype=np.int64,
                ).reshape(sub)
            )
        elif c == 2 or kind == 3:
            items.append(draw(_slices(n)))
        else:
            items.append(draw(st.integers(-n, n - 1)))
    if not any(isinstance(s, np.ndarray) for s in items):
        a = next((i for i, n in enumerate(shape) if n), None)
        if a is None:
            return np.zeros(shape, dtype=bool)
        items[a] = np.array(draw(st.lists(st.integers(-shape[a], shape[a] - 1), min_size=1, max_size=4)))
    return tuple(items)


@st.composite
def block_selections(draw, grid):
    items = []
    for g in grid.grid_shape:
        if g and draw(st.booleans()):
            items.append(draw(st.integers(-g, g - 1)))
        else:
            b = st.none() | st.integers(-g - 1, g + 1)
            items.append(slice(draw(b), draw(b), draw(st.sampled_from([None, 1]))))
    if items and draw(st.booleans()):
        items = items[: draw(st.integers(0, len(items)))]
    return tuple(items)


def numpy_blocks(a, grid, sel):
    sel = sel + (slice(None),) * (grid.ndim - len(sel))
    out = []
    for s, sizes in zip(sel, grid.chunk_sizes):
        starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))
        ks = [s] if isinstance(s, int) else list(range(len(sizes)))[s]
        ks = [k % len(sizes) for k in ks]
        if not ks:
            out.append(slice(0, 0))
        else:
            out.append(slice(int(starts[ks[0]]), int(starts[ks[-1] + 1])))
    return tuple(out)


class _Vectorised:
    """Force the numpy path of the slice projection (the plain-Python one serves small spans)."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.saved = axis_mod.SMALL_AXIS_CHUNKS
        if self.on:
            axis_mod.SMALL_AXIS_CHUNKS = 0

    def __exit__(self, *exc):
        axis_mod.SMALL_AXIS_CHUNKS = self.saved


def _check_nested(ix, store):
    """A chunk selection is itself a numpy selection of the chunk: re-indexing it over an inner
    grid (what sharding does) with kind "basic" gives ``chunk[chunk_selection]``."""
    for p in ix.projections()[:3]:
        chunk = store[p.coords]
        inner = RegularGrid(chunk.shape, tuple(max(1, n // 2) for n in chunk.shape))
        nested = make_indexer(p.chunk_selection, inner, "basic")
        np.testing.assert_array_equal(read(nested, split_chunks(chunk, inner)), chunk[p.chunk_selection])


def _roundtrip(a, grid, ix, expected_read, expected_after_write, value):
    store = split_chunks(a, grid)
    check_projections(ix, grid)
    _check_nested(ix, store)
    got = read(ix, store)
    assert got.shape == expected_read.shape
    np.testing.assert_array_equal(got, expected_read)
    write(ix, store, value)
    np.testing.assert_array_equal(assemble(store, grid), expected_after_write)


def _value(shape, data):
    return np.arange(math.prod(shape), dtype=np.int64).reshape(shape) + 1000


@SETTINGS
@given(data=st.data(), grid=grids(), vectorised=st.booleans())
def test_basic_matches_numpy(data, grid, vectorised):
    a = np.arange(math.prod(grid.shape), dtype=np.int64).reshape(grid.shape)
    sel = data.draw(basic_selections(grid.shape))
    expected = a[sel]
    with _Vectorised(vectorised):
        ix = make_indexer(sel, grid, "basic")
    assert ix.shape == expected.shape and ix.buffer_shape == expected.shape
    assert selection_kind(sel, grid.shape) == "basic"
    value = _value(expected.shape, data)
    after = a.copy()
    after[sel] = value
    _roundtrip(a, grid, ix, expected, after, value)


@SETTINGS
@given(data=st.data(), grid=grids(), vectorised=st.booleans())
def test_orthogonal_matches_numpy(data, grid, vectorised):
    a = np.arange(math.prod(grid.shape), dtype=np.int64).reshape(grid.shape)
    sel = data.draw(orthogonal_selections(grid.shape))
    ix_sel, drop = numpy_orthogonal(a, sel)
    expected = a[ix_sel].squeeze(axis=drop) if drop else a[ix_sel]
    with _Vectorised(vectorised):
        ix = make_indexer(sel, grid, "orthogonal")
    assert ix.shape == expected.shape
    assert ix.drop_axes == drop
    value = _value(expected.shape, data)
    after = a.copy()
    after[ix_sel] = np.expand_dims(value, drop) if drop else value
    _roundtrip(a, grid, ix, expected, after, value)


@SETTINGS
@given(data=st.data(), grid=grids(), vectorised=st.booleans())
def test_vindex_matches_numpy(data, grid, vectorised):
    a = np.arange(math.prod(grid.shape), dtype=np.int64).reshape(grid.shape)
    sel = data.draw(vindex_selections(grid.shape))
    expected = a[sel]
    with _Vectorised(vectorised):
        ix = make_indexer(sel, grid, "vindex")
    assert ix.shape == expected.shape
    assert math.prod(ix.buffer_shape) == expected.size
    value = _value(expected.shape, data)
    after = a.copy()
    after[sel] = value  # duplicates: numpy's last-wins, which the projections keep
    _roundtrip(a, grid, ix, expected, after, value)


@SETTINGS
@given(data=st.data(), grid=grids(), vectorised=st.booleans())
def test_getitem_dispatch_matches_numpy(data, grid, vectorised):
    """``a[sel]`` for any numpy selection: kind "basic" dispatches like numpy does."""
    a = np.arange(math.prod(grid.shape), dtype=np.int64).reshape(grid.shape)
    which = data.draw(st.integers(0, 2))
    if which == 0:
        sel = data.draw(vindex_selections(grid.shape))
    else:
        # One array among ints and slices: orthogonal when numpy agrees, else vindex.
        sel = list(
            data.draw(basic_selections(grid.shape).filter(lambda s: isinstance(s, tuple) and None not in s))
        )
        axes = [i for i, s in enumerate(sel) if s is not Ellipsis]
        candidates = [i for i in axes if i < len(grid.shape) and grid.shape[i] and Ellipsis not in sel[:i]]
        if candidates:
            i = data.draw(st.sampled_from(candidates))
            sel[i] = data.draw(_int_arrays(grid.shape[i]))
        sel = tuple(sel)
    expected = a[sel]
    kind = selection_kind(sel, grid.shape)
    with _Vectorised(vectorised):
        ix = make_indexer(sel, grid, "basic")
        ix2 = make_indexer(sel, grid, kind)
    assert ix.shape == expected.shape == ix2.shape
    value = _value(expected.shape, data)
    after = a.copy()
    after[sel] = value
    _roundtrip(a, grid, ix, expected, after, value)
    _roundtrip(a, grid, ix2, expected, after, value)


@SETTINGS
@given(data=st.data(), grid=grids(), vectorised=st.booleans())
def test_blocks_match_numpy(data, grid, vectorised):
    a = np.arange(math.prod(grid.shape), dtype=np.int64).reshape(grid.shape)
    sel = data.draw(block_selections(grid))
    region = numpy_blocks(a, grid, sel)
    expected = a[region]
    with _Vectorised(vectorised):
        ix = make_indexer(sel, grid, "blocks")
    assert ix.shape == expected.shape
    value = _value(expected.shape, data)
    after = a.copy()
    after[region] = value
    _roundtrip(a, grid, ix, expected, after, value)


@pytest.mark.parametrize("vectorised", [False, True])
def test_full_read_all_complete(vectorised):
    for grid in (RegularGrid((10, 7), (3, 4)), RectilinearGrid((10, 7), ((4, 4, 2, 5), (1, 6, 3)))):
        with _Vectorised(vectorised):
            ix = make_indexer(..., grid)
        assert ix.nchunks == grid.nchunks
        assert all(p.is_complete for p in ix)
        ixv = make_indexer(np.ones(grid.shape, dtype=bool), grid, "vindex")
        assert ixv.nchunks == grid.nchunks and all(p.is_complete for p in ixv)
