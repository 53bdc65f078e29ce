"""scan_zarr: existing Zarr stores (v2, v3, sharded) as manifests, combined with each other."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import chunkref.entry as entry
from chunkref.errors import ScanError
from chunkref.manifest.combine import combine
from chunkref.scanners.zarr_store import scan_zarr


def make_store(path, fmt, n, start, chunk=10, shards=None):
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    t = g.create_array("time", shape=(n,), chunks=(n,), dtype="f8", dimension_names=["time"] if fmt == 3 else None)
    t[:] = np.arange(start, start + n, dtype="f8")
    kw = {"shards": shards} if shards else {}
    a = g.create_array("v", shape=(n, 6), chunks=(chunk, 3), dtype="i4",
                       dimension_names=["time", "x"] if fmt == 3 else None, **kw)
    a[:] = np.arange(start * 6, (start + n) * 6, dtype="i4").reshape(n, 6)
    if fmt == 2:
        t.attrs["_ARRAY_DIMENSIONS"] = ["time"]
        a.attrs["_ARRAY_DIMENSIONS"] = ["time", "x"]
    return str(path)


@pytest.mark.parametrize("fmt", [2, 3])
def test_scan_zarr_reads_like_zarr(tmp_path, fmt):
    url = make_store(tmp_path / "s.zarr", fmt, 25, 0)
    m = scan_zarr(url, content_ids=True)
    g = entry.open(m)
    np.testing.assert_array_equal(g["v"][...], zarr.open_group(url, mode="r")["v"][...])
    t = m.tables["v"]
    assert t.cid is not None and t.present().all()
    assert (t.offset == 0).all()  # whole-object references
    assert entry.scan(url).tables["v"] == t.__class__(t.grid_shape, t.source, t.offset, t.length)


def test_scan_zarr_sharded_keeps_sharding(tmp_path):
    url = make_store(tmp_path / "sh.zarr", 3, 40, 0, chunk=5, shards=(20, 6))
    m = scan_zarr(url)
    assert m.nodes["v"]["zarr.json"]["codecs"][0]["name"] == "sharding_indexed"
    assert m.tables["v"].grid_shape == (2, 1)
    g = entry.open(m)
    np.testing.assert_array_equal(g["v"][7:33, 1:5], zarr.open_group(url, mode="r")["v"][7:33, 1:5])


@pytest.mark.parametrize("fmt", [2, 3])
def test_combine_zarr_stores_of_uneven_lengths(tmp_path, fmt):
    a = make_store(tmp_path / "a.zarr", fmt, 25, 0)
    b = make_store(tmp_path / "b.zarr", fmt, 17, 25)
    m = combine([scan_zarr(a), scan_zarr(b)], "time")
    g = entry.open(m)
    np.testing.assert_array_equal(g["v"][...], np.arange(42 * 6, dtype="i4").reshape(42, 6))
    np.testing.assert_array_equal(g["time"][...], np.arange(42.0))
    # Zarr encodes partial edge chunks at the full chunk size: padded, then clipped edges.
    assert g["v"].chunk_sizes[0] == (10, 10, 5, 10, 7)
    assert m.nodes["v"]["zarr.json"]["codecs"][0]["name"] == "chunkref.padded"


def test_scan_zarr_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanError, match="not a Zarr store"):
        scan_zarr(str(tmp_path / "empty"))
