"""dask integration: arrays as dask sources and targets, regular and rectilinear grids.

``dask.array.from_array(a, chunks=a.chunk_sizes)`` gives one dask chunk per stored chunk (also
for rectilinear grids); ``dask.array.store`` into chunk-aligned regions writes whole chunks and
never reads.  Arrays, groups and stores pickle, so process-based schedulers and
``distributed`` work (the LocalCluster test is marked slow: it starts two worker processes).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import chunkref
from chunkref.storage import CountingStore, LocalStore, MemoryStore

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")


@pytest.fixture(params=["regular", "rectilinear"])
def source(request, tmp_path):
    chunks = (4, 3) if request.param == "regular" else ((3, 5, 2, 4), (1, 4, 2))
    a = chunkref.create_array(
        str(tmp_path / "src"), shape=(14, 7), chunks=chunks, dtype="f8", fill_value=np.nan
    )
    data = np.arange(98, dtype="f8").reshape(14, 7)
    a[...] = data
    return a, data


def test_from_array_chunk_sizes(source) -> None:
    a, data = source
    x = da.from_array(a, chunks=a.chunk_sizes)
    assert x.chunks == a.chunk_sizes
    assert x.dtype == a.dtype and x.shape == a.shape
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(x.compute(), data)
        np.testing.assert_array_equal(
            (x[2:11, ::2] * 2).sum(axis=0).compute(), (data[2:11, ::2] * 2).sum(axis=0)
        )


def test_from_array_reads_each_chunk_once(tmp_path) -> None:
    store = CountingStore(LocalStore(tmp_path / "s"))
    a = chunkref.create_array(store, shape=(20, 9), chunks=((5, 10, 5), (4, 5)), dtype="i4")
    a[...] = np.arange(180).reshape(20, 9)
    store.reset()
    x = da.from_array(a, chunks=a.chunk_sizes)
    with dask.config.set(scheduler="threads"):
        total = int(x.sum().compute())
    assert total == sum(range(180))
    # One batched request per dask task, each asking for exactly its own chunk.
    keys = [k for batch in store.batches for k, _ in batch]
    assert sorted(keys) == sorted(f"c/{i}/{j}" for i in range(3) for j in range(2))
    assert store.counts["get_many"] == 6


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_store_chunk_aligned_regions(tmp_path, zarr_format) -> None:
    data = np.random.default_rng(0).standard_normal((12, 10)).astype("f4")
    x = da.from_array(data, chunks=(4, 5))
    store = CountingStore(LocalStore(tmp_path / "dst"))
    target = chunkref.create_array(store, shape=(12, 10), chunks=(4, 5), dtype="f4", zarr_format=zarr_format)
    store.reset()
    with dask.config.set(scheduler="threads"):
        da.store(x, target, lock=False)
    assert store.counts["get_many"] == 0 and store.counts["get"] == 0  # whole chunks: no reads
    assert store.counts["keys_written"] == 6
    np.testing.assert_array_equal(target[...], data)
    # Into a region of a bigger array, still chunk aligned.
    big = chunkref.create_array(
        str(tmp_path / "big"), shape=(24, 10), chunks=(4, 5), dtype="f4", fill_value=-1
    )
    with dask.config.set(scheduler="threads"):
        da.store(x, big, regions=(slice(8, 20), slice(None)), lock=False)
    expected = np.full((24, 10), -1, dtype="f4")
    expected[8:20] = data
    np.testing.assert_array_equal(big[...], expected)


def test_store_into_rectilinear_target(tmp_path) -> None:
    chunks = ((3, 5, 2, 4), (1, 4, 2))
    data = np.arange(98, dtype="i2").reshape(14, 7)
    x = da.from_array(data, chunks=chunks)
    store = CountingStore(MemoryStore())
    target = chunkref.create_array(store, shape=(14, 7), chunks=chunks, dtype="i2")
    store.reset()
    with dask.config.set(scheduler="threads"):
        da.store(x, target, lock=False)
    assert store.counts["get_many"] == 0
    np.testing.assert_array_equal(target[...], data)
    # Rectilinear chunks are stored at their own edge shapes (no padding to a common size).
    raw = chunkref.create_array(MemoryStore(), shape=(14, 7), chunks=chunks, dtype="i2", compressors=None)
    with dask.config.set(scheduler="threads"):
        da.store(x, raw, lock=False)
    assert len(raw.store.get("c/1/1")) == 5 * 4 * 2


def test_unaligned_store_with_lock_is_correct(tmp_path) -> None:
    """Dask chunks that split stored chunks need dask's lock (read-modify-write)."""
    data = np.arange(100, dtype="u2").reshape(10, 10)
    x = da.from_array(data, chunks=(3, 3))
    target = chunkref.create_array(str(tmp_path / "t"), shape=(10, 10), chunks=(4, 4), dtype="u2")
    with dask.config.set(scheduler="threads"):
        da.store(x, target, lock=True)
    np.testing.assert_array_equal(target[...], data)


def test_arrays_groups_and_stores_pickle(tmp_path) -> None:
    store = LocalStore(tmp_path / "p")
    g = chunkref.open_group(store, mode="w", config={"write_empty_chunks": True})
    a = g.create_array("x", shape=(4, 4), chunks=(2, 2), dtype="i8")
    a[...] = np.arange(16).reshape(4, 4)
    for obj in (a, g, store, g["x"], a.lazy[1:3], CountingStore(store)):
        clone = pickle.loads(pickle.dumps(obj))
        assert type(clone) is type(obj)
    a2 = pickle.loads(pickle.dumps(g["x"]))
    assert a2.write_empty_chunks is True  # runtime settings travel with the array
    np.testing.assert_array_equal(a2[...], np.arange(16).reshape(4, 4))
    a2[0, 0] = 100  # the clone writes to the same directory
    assert int(a[0, 0]) == 100
    lazy = pickle.loads(pickle.dumps(a.lazy[1:3, ::-1]))
    np.testing.assert_array_equal(np.asarray(lazy), np.arange(16).reshape(4, 4)[1:3, ::-1])


def test_dask_graph_with_cloudpickle(tmp_path) -> None:
    """The task graph (holding the array) survives the serialisation distributed uses."""
    cloudpickle = pytest.importorskip("cloudpickle")
    a = chunkref.create_array(str(tmp_path / "c"), shape=(6, 6), chunks=(3, 3), dtype="f4")
    a[...] = 1.5
    x = da.from_array(a, chunks=a.chunk_sizes)
    restored = cloudpickle.loads(cloudpickle.dumps(x))
    with dask.config.set(scheduler="sync"):
        assert float(restored.sum().compute()) == 1.5 * 36


@pytest.mark.slow
def test_distributed_local_cluster(tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    src = chunkref.create_array(
        str(tmp_path / "src"), shape=(40, 30), chunks=((10, 20, 10), (15, 15)), dtype="i4"
    )
    data = np.arange(1200, dtype="i4").reshape(40, 30)
    src[...] = data
    dst = chunkref.create_array(
        str(tmp_path / "dst"), shape=(40, 30), chunks=((10, 20, 10), (15, 15)), dtype="i4"
    )
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="512MiB"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        x = da.from_array(src, chunks=src.chunk_sizes)
        assert int(client.compute(x.sum()).result()) == int(data.sum())
        da.store(x + 1, dst, lock=False, compute=True)
    np.testing.assert_array_equal(dst[...], data + 1)
