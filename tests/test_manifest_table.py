"""ChunkTable and Manifest model."""

from __future__ import annotations

import numpy as np
import pytest

from chunkref.errors import BoundsCheckError, InvalidArgumentError, ManifestError, NodeNotFoundError
from chunkref.manifest import ABSENT, INLINE, WHOLE, ChunkRef, ChunkTable, Manifest, Source


def test_empty_table_is_absent():
    t = ChunkTable.empty((2, 3))
    assert t.nchunks == 6
    assert t.source.dtype == np.int32 and t.offset.dtype == np.uint64 and t.length.dtype == np.uint64
    assert not t.present().any()
    assert t.lookup((1, 2)) is None
    assert (t.length == ABSENT).all()


def test_set_ref_and_lookup():
    t = ChunkTable.empty((2, 3))
    t.set_ref((1, 2), 4, 100, 50)
    assert t.flat_index((1, 2)) == 5
    assert t.lookup((1, 2)) == ChunkRef(4, 100, 50, None)
    assert t.present().sum() == 1
    t.set_inline((0, 0), b"abc")
    r = t.lookup((0, 0))
    assert r.is_inline and r.data == b"abc" and r.length == 3 and t.source[0] == INLINE
    # an inline chunk turned back into a reference forgets its bytes
    t.set_ref((0, 0), 0, 0, 1)
    assert 0 not in t.inline
    t.set_ref((0, 1), 0, 0, int(WHOLE))
    assert t.lookup((0, 1)).length is None
    t.set_absent((1, 2))
    assert t.lookup((1, 2)) is None


def test_bounds_and_bad_values():
    t = ChunkTable.empty((2, 3))
    with pytest.raises(BoundsCheckError):
        t.flat_index((2, 0))
    with pytest.raises(BoundsCheckError):
        t.flat_index((0,))
    with pytest.raises(InvalidArgumentError):
        t.set_ref((0, 0), 0, -1, 5)
    with pytest.raises(InvalidArgumentError):
        t.set_ref((0, 0), 0, 2**63, 5)
    with pytest.raises(InvalidArgumentError):
        t.set_ref((0, 0), -2, 0, 5)
    with pytest.raises(InvalidArgumentError):
        ChunkTable((2,), source=[0, 0, 0])


def test_vectorised_fill_and_flat_indices():
    t = ChunkTable.empty((100, 100))
    flat = np.arange(0, 10000, 2)
    t.set_refs(flat, 0, flat * 10, 10)
    assert t.present().sum() == 5000
    assert t.lookup((0, 2)) == ChunkRef(0, 20, 10)
    coords = np.array([[0, 2], [99, 98]])
    assert t.flat_indices(coords).tolist() == [2, 9998]
    with pytest.raises(BoundsCheckError):
        t.flat_indices(np.array([[100, 0]]))
    with pytest.raises(InvalidArgumentError):
        t.set_refs([0], 0, -5, 10)


def test_scalar_grid():
    t = ChunkTable.empty(())
    assert t.nchunks == 1
    t.set_ref((), 0, 8, 8)
    assert t.lookup(()) == ChunkRef(0, 8, 8)


def test_cid_column_keeps_trailing_nul():
    t = ChunkTable.empty((3,))
    cid = bytes(35) + b"\x01"
    t.set_cid((1,), cid)
    cid0 = b"\x01" + bytes(35)
    t.set_cid((2,), cid0)
    assert t.cid.shape == (3, 36)
    assert t.cid_of(1) == cid and t.cid_of(2) == cid0 and t.cid_of(0) is None
    with pytest.raises(InvalidArgumentError):
        t.set_cid((0,), b"short")


def test_table_equality_and_copy():
    t = ChunkTable.empty((4,))
    t.set_ref((1,), 0, 5, 6)
    t.set_inline((2,), b"x")
    u = t.copy()
    assert u == t
    u.set_ref((3,), 0, 1, 1)
    assert u != t


def _v3_array(shape, chunks, dtype="float32"):
    return {
        "zarr.json": {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(shape),
            "data_type": dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0.0,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "attributes": {},
        }
    }


def test_manifest_nodes_and_sources():
    m = Manifest()
    i = m.add_source("s3://b/f.nc", size=10)
    assert m.add_source("s3://b/f.nc") == i
    assert m.add_source("s3://b/f.nc", etag="x") == i
    assert m.sources[i] == Source("s3://b/f.nc", 10, None, "x")
    t = ChunkTable.empty((2,))
    t.set_ref((0,), i, 0, 4)
    m.add_array("g/sub/a", _v3_array((10,), (5,)), t)
    assert m.groups() == ["", "g", "g/sub"]
    assert m.arrays() == ["g/sub/a"]
    assert m.zarr_format("g") == 3
    m.add_group("g", {"x": 1})
    assert m.attributes("g") == {"x": 1}
    m.refuse("g/bad", "compound dtype")
    assert m.refused == {"g/bad": "compound dtype"}
    with pytest.raises(NodeNotFoundError):
        m.documents("nope")


def test_manifest_v2_documents():
    m = Manifest()
    docs = {
        ".zarray": {
            "zarr_format": 2, "shape": [7, 3], "chunks": [2, 3], "dtype": "<i4", "compressor": None,
            "filters": None, "fill_value": 0, "order": "C",
        },
        ".zattrs": {"_ARRAY_DIMENSIONS": ["x", "y"]},
    }
    m.add_array("a", docs, ChunkTable.empty((4, 1)))
    m.add_group("", {"title": "t"}, zarr_format=2)
    assert m.nodes[""] == {".zgroup": {"zarr_format": 2}, ".zattrs": {"title": "t"}}
    assert m.zarr_format("a") == 2


def test_manifest_rejects_inconsistent_input():
    m = Manifest()
    with pytest.raises(ManifestError, match="grid"):
        m.add_array("a", _v3_array((10,), (5,)), ChunkTable.empty((3,)))
    t = ChunkTable.empty((2,))
    t.set_ref((0,), 3, 0, 1)
    with pytest.raises(ManifestError, match="source 3"):
        m.add_array("a", _v3_array((10,), (5,)), t)
    with pytest.raises(ManifestError, match="invalid node path"):
        m.add_group("a/../b")
    m.add_array("a", _v3_array((10,), (5,)), ChunkTable.empty((2,)))
    with pytest.raises(ManifestError, match="ancestor"):
        m.add_group("a/b")
    with pytest.raises(ManifestError):
        m.add_array("", _v3_array((10,), (5,)), ChunkTable.empty((2,)))


def test_million_chunk_table_is_cheap():
    import time

    t0 = time.perf_counter()
    t = ChunkTable.empty((1000, 1000))
    flat = np.arange(t.nchunks)
    t.set_refs(flat, 0, flat * 100, 100)
    assert t.present().all()
    assert time.perf_counter() - t0 < 2.0
    assert t.source.nbytes + t.offset.nbytes + t.length.nbytes == 20 * 10**6
