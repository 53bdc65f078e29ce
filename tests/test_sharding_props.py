"""Property tests: sharded arrays behave like numpy arrays (random shapes, selections, layouts)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunkref.storage import MemoryStore
from chunkref.zarr import api

BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
CRC = {"name": "crc32c"}
INNER_CHAINS = [
    [BYTES],
    [BYTES, {"name": "zstd", "configuration": {"level": 1, "checksum": False}}],
    [{"name": "transpose", "configuration": {"order": None}}, BYTES, {"name": "gzip", "configuration": {"level": 1}}],
]


@st.composite
def layouts(draw):
    ndim = draw(st.integers(1, 3))
    inner = [draw(st.integers(1, 4)) for _ in range(ndim)]
    rectilinear = draw(st.booleans())
    edges = []
    shape = []
    for c in inner:
        if rectilinear:
            axis = [c * draw(st.integers(1, 3)) for _ in range(draw(st.integers(1, 3)))]
            total = sum(axis)
            shape.append(draw(st.integers(max(1, total - axis[-1] + 1), total)))
            edges.append(axis)
        else:
            s = c * draw(st.integers(1, 3))
            edges.append(s)
            shape.append(draw(st.integers(1, 3 * s)))
    chain = [dict(c) for c in draw(st.sampled_from(INNER_CHAINS))]
    if chain[0]["name"] == "transpose":
        chain[0] = {"name": "transpose", "configuration": {"order": list(draw(st.permutations(range(ndim))))}}
    index_codecs = draw(st.sampled_from([[BYTES, CRC], [BYTES]]))
    location = draw(st.sampled_from(["start", "end"]))
    return tuple(shape), edges, rectilinear, inner, chain, index_codecs, location


def create(layout, fill):
    shape, edges, rectilinear, inner, chain, index_codecs, location = layout
    if rectilinear:
        grid = {"name": "rectilinear", "configuration": {"kind": "inline", "chunk_shapes": edges}}
    else:
        grid = {"name": "regular", "configuration": {"chunk_shape": edges}}
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": "int16",
        "chunk_grid": grid,
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": inner,
                    "codecs": chain,
                    "index_codecs": index_codecs,
                    "index_location": location,
                },
            }
        ],
        "attributes": {},
    }
    store = MemoryStore()
    store.set("a/zarr.json", json.dumps(meta).encode())
    return store, api.open_array(store, path="a")


def slices(shape):
    return st.tuples(
        *[
            st.builds(lambda a, b, s: slice(min(a, b), max(a, b), s), st.integers(0, n), st.integers(0, n), st.integers(1, 3))
            for n in shape
        ]
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts(), data=st.data())
def test_writes_and_reads_match_numpy(layout, data):
    shape = layout[0]
    fill = data.draw(st.integers(-3, 3))
    store, a = create(layout, fill)
    ref = np.full(shape, fill, dtype="int16")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    for _ in range(data.draw(st.integers(1, 4))):
        sel = data.draw(slices(shape))
        target = ref[sel]
        # Values mixing the fill value in, so some inner chunks end up empty.
        val = rng.integers(-3, 4, size=target.shape).astype("int16") * data.draw(st.sampled_from([0, 1]))
        a[sel] = val
        ref[sel] = val
    np.testing.assert_array_equal(a[...], ref)
    sel = data.draw(slices(shape))
    np.testing.assert_array_equal(api.open_array(store, path="a")[sel], ref[sel])
    # Orthogonal and point selections through a fresh handle (cold index cache).
    idx = tuple(np.sort(rng.integers(0, n, size=data.draw(st.integers(1, 4)))) for n in shape)
    np.testing.assert_array_equal(api.open_array(store, path="a").oindex[idx], ref[np.ix_(*idx)])
    pts = tuple(rng.integers(0, n, size=5) for n in shape)
    np.testing.assert_array_equal(api.open_array(store, path="a").vindex[pts], ref[pts])
    # Shards holding only the fill value are not stored.
    if (ref == fill).all():
        assert sorted(store.list()) == ["a/zarr.json"]


@settings(max_examples=30, deadline=None)
@given(layout=layouts(), data=st.data())
def test_fancy_writes_match_numpy(layout, data):
    shape = layout[0]
    store, a = create(layout, 0)
    ref = np.zeros(shape, dtype="int16")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    idx = tuple(np.unique(rng.integers(0, n, size=3)) for n in shape)
    a.oindex[idx] = 5
    ref[np.ix_(*idx)] = 5
    pts = tuple(rng.integers(0, n, size=4) for n in shape)
    a.vindex[pts] = 9
    ref[pts] = 9
    np.testing.assert_array_equal(api.open_array(store, path="a")[...], ref)


@pytest.mark.parametrize("location", ["start", "end"])
def test_batch_of_small_writes_equals_numpy(location):
    layout = ((12, 10), [6, 10], False, [3, 5], [BYTES], [BYTES, CRC], location)
    store, a = create(layout, 0)
    ref = np.zeros((12, 10), dtype="int16")
    with a.batch():
        for i in range(12):
            a[i, i % 10] = i + 1
            ref[i, i % 10] = i + 1
            np.testing.assert_array_equal(a[i], ref[i])
    np.testing.assert_array_equal(api.open_array(store, path="a")[...], ref)
