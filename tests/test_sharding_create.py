"""Creating sharded arrays: regular and rectilinear shard grids through create_array."""

from __future__ import annotations

import numpy as np
import pytest

import chunkref
import chunkref.storage
from chunkref.errors import InvalidArgumentError, NoChunkShapeError


def test_rectilinear_shards_from_create_array() -> None:
    a = chunkref.create_array(None, shape=(95, 40), chunks=(10, 8), shards=((30, 50, 20), 16), dtype="f4")
    x = np.random.default_rng(0).random((95, 40), dtype="f4")
    a[...] = x
    np.testing.assert_array_equal(a[...], x)
    np.testing.assert_array_equal(a[25:62, 7:33], x[25:62, 7:33])
    assert a.chunks == (10, 8)
    assert a.chunk_sizes == ((30, 50, 15), (16, 16, 8))
    assert a.metadata.to_json()["chunk_grid"] == {
        "name": "rectilinear",
        "configuration": {"kind": "inline", "chunk_shapes": [[30, 50, 20], 16]},
    }
    with pytest.raises(NoChunkShapeError):
        _ = a.shards


def test_shard_edges_must_be_multiples_of_the_chunks() -> None:
    with pytest.raises(InvalidArgumentError, match="shard edge 35 along axis 0"):
        chunkref.create_array(None, shape=(100,), chunks=(10,), shards=((35, 65),), dtype="i4")
    with pytest.raises(InvalidArgumentError, match="regular shape"):
        chunkref.create_array(None, shape=(100,), chunks=((10, 20, 70),), shards=(100,), dtype="i4")


def test_single_vlen_string_into_a_shard() -> None:
    # Regression: a 0-d part assigned into an object chunk stored the 0-d array as the element.
    a = chunkref.create_array(None, shape=(1, 2, 3), chunks=(1, 1, 1), shards=(1, 1, 3), dtype=str)
    a[0, 1, 2] = "😀中"
    a[0, 0, :2] = ["x", "yy"]
    assert a[...].tolist() == [[["x", "yy", ""], ["", "", "😀中"]]]


def test_bad_string_element_writes_no_shard_at_all() -> None:
    # Large sharded writes are stored in waves; a bad element must be caught before any wave.
    store = chunkref.storage.MemoryStore()
    a = chunkref.create_array(store, shape=(64,), chunks=(4,), shards=(8,), dtype=str)
    before = dict(store._data)
    value = np.array([f"s{i}" for i in range(64)], dtype=object)
    value[40] = 7
    with pytest.raises(InvalidArgumentError, match=r"int 7 \(at \(40,\)"):
        a[...] = value
    assert dict(store._data) == before
