"""Unit tests of chunkref.zarr.indexing: errors (numpy's exception types), dispatch, projection
shapes (slices preferred, outer selections), helpers, zarr-python parity and a speed check."""

from __future__ import annotations

import time

import numpy as np
import pytest

from chunkref.errors import (
    BoundsCheckError,
    ChunkrefError,
    InvalidArgumentError,
    InvalidSelectionError,
    SelectionTypeError,
)
from chunkref.zarr.grid import RectilinearGrid, RegularGrid
from chunkref.zarr.indexing import (
    ChunkProjection,
    chunks_for_region,
    chunks_outside,
    is_basic_selection,
    make_indexer,
    normalize_resize,
    selection_is_empty,
    selection_kind,
)
from test_indexing_support import assemble, check_projections, read, split_chunks, write

GRID = RegularGrid((10, 7), (3, 4))
RECT = RectilinearGrid((10, 7), ((4, 1, 2, 3, 6), (2, 5, 9)))
A = np.arange(70, dtype=np.int64).reshape(10, 7)


def _read(sel, kind="basic", grid=GRID):
    ix = make_indexer(sel, grid, kind)
    check_projections(ix, grid)
    return read(ix, split_chunks(A, grid))


# --- errors: the same builtin types numpy raises --------------------------------------------

NUMPY_ERROR_CASES = [
    ("x",),
    (1.5,),
    (slice(1.5, 3),),
    (0, 0, 0),
    (Ellipsis, Ellipsis),
    ([1, 2], [1, 2, 3]),
    (np.ones(9, dtype=bool),),
    (np.ones((10, 6), dtype=bool),),
    (slice(None, None, 0),),
    ([1.0],),
    (10,),
    (-11,),
    (0, 7),
    ([0, 10],),
    ([-11],),
    ({},),
    (np.array([1.5]),),
]


@pytest.mark.parametrize("sel", NUMPY_ERROR_CASES, ids=repr)
@pytest.mark.parametrize("grid", [GRID, RECT], ids=["regular", "rectilinear"])
def test_errors_match_numpy(sel, grid):
    with pytest.raises(Exception) as np_exc:
        A[sel]
    expected = type(np_exc.value)
    for kind in ("basic", "vindex"):
        with pytest.raises(expected) as exc:
            make_indexer(sel, grid, kind)
        assert isinstance(exc.value, ChunkrefError), exc.value


def test_error_classes_and_messages():
    with pytest.raises(BoundsCheckError, match=r"index 10 is out of bounds for axis 0 with size 10"):
        make_indexer((10,), GRID)
    with pytest.raises(BoundsCheckError, match=r"index 9 is out of bounds for axis 1 with size 7"):
        make_indexer(([0, 1], [2, 9]), GRID, "vindex")
    with pytest.raises(BoundsCheckError, match=r"index -8 .* axis 1"):
        make_indexer((slice(None), [-8]), GRID, "orthogonal")
    with pytest.raises(SelectionTypeError):
        make_indexer(slice("a", None), GRID)
    with pytest.raises(InvalidArgumentError, match="step cannot be zero"):
        make_indexer((slice(None), slice(None, None, 0)), GRID)
    with pytest.raises(InvalidSelectionError, match="too many indices"):
        make_indexer((0, 0, 0), GRID, "orthogonal")
    with pytest.raises(InvalidArgumentError, match="unknown indexing kind"):
        make_indexer((), GRID, "fancy")


def test_orthogonal_errors():
    with pytest.raises(InvalidSelectionError, match="1-dimensional"):
        make_indexer(([[1]], 0), GRID, "orthogonal")
    with pytest.raises(InvalidSelectionError, match="1-dimensional"):
        make_indexer(np.ones((10, 7), dtype=bool), GRID, "orthogonal")
    with pytest.raises(InvalidSelectionError, match="newaxis"):
        make_indexer((None, [1]), GRID, "orthogonal")
    with pytest.raises(InvalidSelectionError, match="boolean index did not match"):
        make_indexer((np.ones(3, dtype=bool),), GRID, "orthogonal")


def test_refused_on_purpose():
    # Boolean scalars (numpy adds an axis) and new axes mixed with arrays are refused clearly.
    for sel in (True, np.bool_(False), np.array(True), (None, [1, 2])):
        with pytest.raises(InvalidSelectionError):
            make_indexer(sel, GRID, "vindex" if isinstance(sel, tuple) else "basic")


def test_block_errors():
    with pytest.raises(BoundsCheckError, match="block index 4 is out of bounds for axis 0 with 4 chunks"):
        make_indexer(4, GRID, "blocks")
    with pytest.raises(InvalidSelectionError, match="step-1"):
        make_indexer(slice(None, None, 2), GRID, "blocks")
    with pytest.raises(InvalidSelectionError):
        make_indexer([0, 1], GRID, "blocks")
    with pytest.raises(InvalidSelectionError):
        make_indexer((0, 0, 0), GRID, "blocks")


# --- dispatch --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sel, kind",
    [
        ((), "basic"),
        (Ellipsis, "basic"),
        ((1, slice(2), None), "basic"),
        (np.int64(3), "basic"),
        (np.array(3), "basic"),
        ([1, 2], "orthogonal"),
        ((slice(None), [3, 1]), "orthogonal"),
        (([3, 1], 0), "orthogonal"),
        ((0, [3, 1]), "orthogonal"),
        ((np.ones(10, dtype=bool), slice(1, 3)), "orthogonal"),
        (([1, 2], [3, 4]), "vindex"),
        (([[1, 2]], slice(None)), "vindex"),
        (np.ones((10, 7), dtype=bool), "vindex"),
        ((None, [1, 2]), "vindex"),
    ],
    ids=repr,
)
def test_selection_kind(sel, kind):
    assert selection_kind(sel, GRID.shape) == kind
    assert selection_kind(sel, GRID.ndim) == kind
    assert is_basic_selection(sel) == (kind == "basic")


def test_selection_kind_numpy_moves_axes():
    # numpy puts the array axis first when advanced indices are not adjacent; orthogonal
    # indexing would not, so such selections go to vindex (and still match numpy).
    grid = RegularGrid((4, 5, 6), (2, 2, 2))
    a = np.arange(120).reshape(4, 5, 6)
    sel = (slice(None), [3, 1], 0)
    assert selection_kind(sel, grid.shape) == "orthogonal"  # adjacent: in place
    sel = (0, slice(None), [3, 1])
    assert selection_kind(sel, grid.shape) == "vindex"  # non-adjacent, slice before the array
    ix = make_indexer(sel, grid)
    assert ix.shape == a[sel].shape == (2, 5)
    np.testing.assert_array_equal(read(ix, split_chunks(a, grid)), a[sel])


# --- projection shapes -----------------------------------------------------------------------


def test_basic_projections_are_slices_and_complete():
    ix = make_indexer((slice(3, 9), 5), GRID)
    assert ix.shape == (6,) and ix.drop_axes == (1,)
    assert ix.projections() == [
        ChunkProjection((1, 1), (slice(0, 3), 1), (slice(0, 3),), False),
        ChunkProjection((2, 1), (slice(0, 3), 1), (slice(3, 6),), False),
    ]
    ix = make_indexer((slice(9, 10), slice(4, 7)), GRID)  # the edge chunk's data, all of it
    assert ix.projections() == [
        ChunkProjection((3, 1), (slice(0, 1), slice(0, 3)), (slice(0, 1), slice(0, 3)), True)
    ]


def test_negative_step_projections():
    ix = make_indexer(slice(None, None, -1), RegularGrid((7,), (3,)))
    # Chunk side ascending, output side descending; whole chunks are complete.
    assert ix.projections() == [
        ChunkProjection((0,), (slice(0, 3),), (slice(6, 3, -1),), True),
        ChunkProjection((1,), (slice(0, 3),), (slice(3, 0, -1),), True),
        ChunkProjection((2,), (slice(0, 1),), (slice(0, None, -1),), True),
    ]
    np.testing.assert_array_equal(_read((slice(8, 1, -3), slice(None, None, -2))), A[8:1:-3, ::-2])


def test_newaxis_and_zero_d():
    np.testing.assert_array_equal(_read((None, 2, None, slice(1, 6), None)), A[None, 2, None, 1:6, None])
    g0 = RegularGrid((), ())
    a0 = np.array(5, dtype=np.int64)
    for sel in ((), Ellipsis, None, (None, Ellipsis)):
        ix = make_indexer(sel, g0)
        assert ix.shape == a0[sel].shape
        np.testing.assert_array_equal(read(ix, split_chunks(a0, g0)), a0[sel])
        assert ix.projections()[0].coords == ()


def test_orthogonal_prefers_slices():
    ix = make_indexer(([0, 1, 2, 4, 5], slice(None)), GRID, "orthogonal")
    p = ix.projections()
    # Sorted runs inside a chunk are slices on both sides.
    assert p[0].chunk_selection == (slice(0, 3), slice(0, 4)) and p[0].out_selection == (
        slice(0, 3),
        slice(0, 4),
    )
    assert p[0].is_complete
    assert p[2].chunk_selection == (slice(1, 3), slice(0, 4)) and p[2].out_selection == (
        slice(3, 5),
        slice(0, 4),
    )
    # Unsorted / duplicated: arrays, and an outer (np.ix_-style) selection when two axes need them.
    sel = ([5, 0, 5], [6, 0, 6])
    p = {q.coords: q for q in make_indexer(sel, GRID, "orthogonal")}
    assert p[(0, 0)] == ChunkProjection((0, 0), (slice(0, 1), slice(0, 1)), (slice(1, 2), slice(1, 2)), False)
    cs, os = p[(1, 1)].chunk_selection, p[(1, 1)].out_selection
    assert [c.tolist() for c in cs] == [[[2], [2]], [[2, 2]]]
    assert [o.tolist() for o in os] == [[[0], [2]], [[0, 2]]]
    cs, os = p[(1, 0)].chunk_selection, p[(1, 0)].out_selection
    assert cs[0].tolist() == [2, 2] and cs[1] == slice(0, 1)  # one array: no outer form needed
    np.testing.assert_array_equal(_read(sel, "orthogonal"), A[np.ix_(*sel)])
    np.testing.assert_array_equal(_read(sel, "orthogonal", RECT), A[np.ix_(*sel)])


def test_orthogonal_array_with_int_keeps_axis_order():
    grid = RegularGrid((4, 5, 6, 3), (2, 2, 4, 2))
    a = np.arange(360).reshape(4, 5, 6, 3)
    sel = (slice(None), [4, 0, 4], slice(1, 5), 1)
    ix = make_indexer(sel, grid, "orthogonal")
    # numpy's a[:, [4, 0, 4], 1:5, 1] would move the array axis first; orthogonal keeps it.
    expected = a[:, :, 1:5, 1][:, [4, 0, 4]]
    assert ix.shape == expected.shape
    store = split_chunks(a, grid)
    np.testing.assert_array_equal(read(ix, store), expected)
    write(ix, store, -expected)
    b = a.copy()
    b[:, 4, 1:5, 1] = -expected[:, 2]
    b[:, 0, 1:5, 1] = -expected[:, 1]
    np.testing.assert_array_equal(assemble(store, grid), b)


def test_vindex_groups_points_in_chunk_order():
    rows = np.array([9, 0, 4, 0, 9])
    cols = np.array([6, 0, 3, 0, 0])
    ix = make_indexer((rows, cols), GRID, "vindex")
    assert ix.shape == ix.buffer_shape == (5,)
    assert [p.coords for p in ix] == [(0, 0), (1, 0), (3, 0), (3, 1)]
    p = ix.projections()[0]
    np.testing.assert_array_equal(p.out_selection[0], [1, 3])  # both (0, 0) points
    np.testing.assert_array_equal(_read((rows, cols), "vindex"), A[rows, cols])
    # Multi-dimensional index arrays: buffer is the flat points, result is their shape.
    r2 = rows[:4].reshape(2, 2)
    ix = make_indexer((r2, 1), RECT, "vindex")
    assert ix.shape == (2, 2) and ix.buffer_shape == (4,)
    np.testing.assert_array_equal(_read((r2, 1), "vindex", RECT), A[r2, 1])


def test_vindex_duplicates_last_wins():
    grid = RegularGrid((6,), (4,))
    store = split_chunks(np.zeros(6, dtype=np.int64), grid)
    ix = make_indexer(([1, 5, 1, 1],), grid, "vindex")
    write(ix, store, np.array([10, 20, 30, 40]))
    expected = np.zeros(6, dtype=np.int64)
    expected[[1, 5, 1, 1]] = [10, 20, 30, 40]
    np.testing.assert_array_equal(assemble(store, grid), expected)
    assert expected[1] == 40


def test_mask_via_getitem():
    mask = (A % 3 == 0) & (A > 10)
    for grid in (GRID, RECT):
        np.testing.assert_array_equal(_read(mask, "basic", grid), A[mask])
        np.testing.assert_array_equal(_read(mask, "vindex", grid), A[mask])
        np.testing.assert_array_equal(_read((mask[:, 0], slice(2, 5)), "basic", grid), A[mask[:, 0], 2:5])


def test_blocks_rectilinear():
    # RECT offsets along axis 0: 0, 4, 5, 7, 10 (the last edge overhangs); axis 1: 0, 2, 7.
    np.testing.assert_array_equal(_read(1, "blocks", RECT), A[4:5])
    np.testing.assert_array_equal(_read((slice(1, 3), -1), "blocks", RECT), A[4:7, 2:7])
    np.testing.assert_array_equal(_read((-1,), "blocks", RECT), A[7:10])
    assert make_indexer((slice(3, 1),), RECT, "blocks").shape == (0, 7)
    # Block slices clip like numpy (and dask) slices; zarr-python raises past the last block.
    assert make_indexer((slice(None), slice(5, 9)), RECT, "blocks").shape == (10, 0)
    assert make_indexer((), RECT, "blocks").kind == "blocks"


def test_large_axis_vectorised_paths():
    # Thousands of chunks along an axis use the numpy code paths.
    grid = RectilinearGrid((5000,), (tuple([3, 1, 4, 1, 5, 9, 2, 6] * 700),))
    a = np.arange(5000, dtype=np.int64)
    store = split_chunks(a, grid)
    rng = np.random.default_rng(0)
    idx = rng.integers(-5000, 5000, 3000)
    for sel, kind in [
        (slice(7, 4990, 7), "basic"),
        (slice(4990, 7, -3), "basic"),
        (idx, "orthogonal"),
        (np.sort(idx % 5000), "orthogonal"),
        (idx, "vindex"),
        (a % 7 == 1, "vindex"),
    ]:
        ix = make_indexer(sel, grid, kind)
        np.testing.assert_array_equal(read(ix, store), a[sel])
        check_projections(ix, grid)


# --- helpers for the array layer -------------------------------------------------------------


def test_normalize_resize():
    assert normalize_resize((4, 5), (6, 0)) == (6, 0)
    assert normalize_resize((4,), 7) == (7,)
    assert normalize_resize((4,), np.int64(7)) == (7,)
    for bad in ((1,), (1, -1), (1.5, 2), 3, "ab", None, (True, 2)):
        with pytest.raises(InvalidArgumentError):
            normalize_resize((4, 5), bad)


def test_chunks_for_region():
    np.testing.assert_array_equal(
        chunks_for_region(GRID, (slice(5, 7), slice(3, None))), [[1, 0], [1, 1], [2, 0], [2, 1]]
    )
    np.testing.assert_array_equal(chunks_for_region(RECT, (slice(4, 6),)), [[1, 0], [1, 1], [2, 0], [2, 1]])
    assert chunks_for_region(GRID, (slice(5, 5),)).shape == (0, 2)
    assert chunks_for_region(GRID, slice(20, 30)).shape == (0, 2)
    assert chunks_for_region(RegularGrid((), ()), ()).shape == (1, 0)
    with pytest.raises(InvalidArgumentError):
        chunks_for_region(GRID, (slice(None, None, 2),))
    with pytest.raises(InvalidArgumentError):
        chunks_for_region(GRID, (1,))


def test_chunks_outside():
    # Shrinking (10, 7) to (4, 3) with chunks (3, 4): rows 0-1 and column 0 survive.
    doomed = chunks_outside(GRID, GRID.with_shape((4, 3)))
    kept = {(0, 0), (1, 0)}
    assert {tuple(c) for c in doomed.tolist()} == set(GRID.iter_coords()) - kept
    assert chunks_outside(GRID, (10, 7)).shape == (0, 2)
    assert chunks_outside(GRID, (20, 20)).shape == (0, 2)
    assert len(chunks_outside(GRID, (0, 7))) == GRID.nchunks
    # Rectilinear: offsets 0, 4, 5, 7 along axis 0; new extent 5 keeps chunks 0 and 1.
    doomed = chunks_outside(RECT, (5, 7))
    assert sorted({c[0] for c in doomed.tolist()}) == [2, 3]


def test_selection_is_empty():
    assert selection_is_empty((slice(3, 3),), (10, 7))
    assert not selection_is_empty((slice(3, 4),), (10, 7))
    assert selection_is_empty(([],), (10, 7), "orthogonal")
    assert selection_is_empty(np.zeros((10, 7), dtype=bool), (10, 7))
    assert selection_is_empty((), (0, 7))
    with pytest.raises(BoundsCheckError):
        selection_is_empty((11,), (10, 7))


# --- parity with zarr-python (regular grids) -------------------------------------------------


@pytest.fixture(scope="module")
def zarr_array():
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(store={}, shape=(10, 7), chunks=(3, 4), dtype="i8")
    z[:] = A
    return z


@pytest.mark.parametrize(
    "kind, sel",
    [
        ("blocks", 1),
        ("blocks", (-1, slice(0, 1))),
        ("blocks", (slice(1, 3), 1)),
        ("blocks", (slice(None), slice(1, 9))),
        ("orthogonal", ([9, 0, 0, 4], slice(1, 6))),
        ("orthogonal", (np.arange(10) % 2 == 0, [6, 1])),
        ("orthogonal", (3, [6, 1, 1])),
        ("vindex", ([9, 0, 0, 4], [1, 6, 6, 0])),
        ("vindex", (A % 4 == 1,)),
        ("basic", (slice(2, 9, 3), -1)),
        ("basic", (A > 60,)),
    ],
    ids=repr,
)
def test_zarr_python_parity(zarr_array, kind, sel):
    expected = {
        "blocks": zarr_array.blocks,
        "orthogonal": zarr_array.oindex,
        "vindex": zarr_array.vindex,
        "basic": zarr_array,
    }[kind][sel if not (isinstance(sel, tuple) and len(sel) == 1) else sel[0]]
    np.testing.assert_array_equal(_read(sel, kind), expected)


# --- speed -----------------------------------------------------------------------------------


def test_enumeration_cost_per_chunk():
    """32768 chunks (512^3 in 16^3): a full read's projections in well under 10 us each."""
    grid = RegularGrid((512,) * 3, (16,) * 3)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        ix = make_indexer(..., grid)
        n = sum(1 for _ in ix)
        best = min(best, time.perf_counter() - t0)
    assert n == 32768
    assert best / n < 10e-6, f"{best / n * 1e6:.2f} us per chunk"
