"""Shared helpers for the indexing tests (no tests here): a chunked copy of a numpy array, reads
and writes through an indexer's projections, and invariant checks on every projection."""

from __future__ import annotations

import numpy as np

from chunkref.zarr.grid import ChunkGrid
from chunkref.zarr.indexing import Indexer

PAD = -1  # value of the declared-shape padding of edge chunks (data values are >= 0)
UNSET = -2  # buffer initial value: left in the result only if a projection is missing


def split_chunks(a: np.ndarray, grid: ChunkGrid) -> dict[tuple[int, ...], np.ndarray]:
    """Chunk storage: each chunk at its declared shape, padding past the array edge."""
    store = {}
    for coords in grid.iter_coords():
        chunk = np.full(grid.chunk_shape_at(coords), PAD, dtype=a.dtype)
        sl = grid.chunk_slices(coords)
        chunk[tuple(slice(0, s.stop - s.start) for s in sl)] = a[sl]
        store[coords] = chunk
    return store


def assemble(store: dict[tuple[int, ...], np.ndarray], grid: ChunkGrid, dtype=np.int64) -> np.ndarray:
    out = np.full(grid.shape, UNSET, dtype=dtype)
    for coords in grid.iter_coords():
        sl = grid.chunk_slices(coords)
        out[sl] = store[coords][tuple(slice(0, s.stop - s.start) for s in sl)]
    return out


def read(ix: Indexer, store: dict) -> np.ndarray:
    buf = np.full(ix.buffer_shape, UNSET, dtype=np.int64)
    for p in ix:
        buf[p.out_selection] = store[p.coords][p.chunk_selection]
    return buf.reshape(ix.shape)


def write(ix: Indexer, store: dict, value: np.ndarray) -> None:
    value = np.broadcast_to(value, ix.shape).reshape(ix.buffer_shape)
    for p in ix:
        store[p.coords][p.chunk_selection] = value[p.out_selection]


def check_projections(ix: Indexer, grid: ChunkGrid) -> None:
    """Invariants every indexer must satisfy, independent of the selection kind."""
    projections = ix.projections()
    assert len(projections) == ix.nchunks == len(ix)
    coords = [p.coords for p in projections]
    # Unique chunks in C order, inside the grid.
    assert coords == sorted(set(coords)), coords
    gshape = grid.grid_shape
    for c in coords:
        assert len(c) == grid.ndim and all(0 <= k < g for k, g in zip(c, gshape)), (c, gshape)
        assert all(type(k) is int for k in c)
    cc = ix.chunk_coords()
    assert cc.dtype == np.int64 and cc.shape == (len(coords), grid.ndim)
    assert [tuple(r) for r in cc.tolist()] == coords
    buf = np.zeros(ix.buffer_shape)
    for p in projections:
        declared = grid.chunk_shape_at(p.coords)
        data = grid.chunk_data_shape(p.coords)
        # Selections stay inside the declared chunk: no negative (wrapping) indices.
        for s in p.chunk_selection:
            if isinstance(s, slice):
                assert s.start is not None and s.start >= 0 and (s.step is None or s.step > 0), s
            elif isinstance(s, np.ndarray):
                assert s.dtype == np.int64 and (s.size == 0 or s.min() >= 0), s
            else:
                assert type(s) is int and s >= 0, s
        hits = np.zeros(declared, dtype=np.int64)
        np.add.at(hits, p.chunk_selection, 1)
        sub = np.zeros(declared)[p.chunk_selection]
        assert sub.size > 0, p  # no empty projections
        assert sub.shape == buf[p.out_selection].shape, (p, sub.shape, buf[p.out_selection].shape)
        region = tuple(slice(0, d) for d in data)
        # Nothing is selected in the padding past the array edge.
        assert hits.sum() == hits[region].sum(), p
        covered_once = bool((hits[region] == 1).all())
        if p.is_complete:
            assert covered_once, p
        elif not any(isinstance(s, np.ndarray) for s in p.chunk_selection):
            # Slices and ints only: ascending, so single full coverage means complete.
            assert not covered_once, p
