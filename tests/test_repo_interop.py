"""Repository sessions with zarr-python, xarray and dask (peers as oracles)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import chunkref
from chunkref.repo import Repository

zarr = pytest.importorskip("zarr")


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.create(tmp_path / "repo")


def test_zarr_python_writes_and_reads_sessions(repo: Repository) -> None:
    s = repo.writable_session()
    store = s.zarr_store()
    g = zarr.open_group(store, mode="a")
    a = g.create_array("z", shape=(30, 20), chunks=(10, 10), dtype="f8", fill_value=np.nan)
    value = np.random.default_rng(0).random((30, 20))
    a[...] = value
    sh = g.create_array("sh", shape=(32, 32), chunks=(4, 4), shards=(16, 16), dtype="i4")
    sh[...] = np.arange(32 * 32).reshape(32, 32)
    c = s.commit("zarr-python")
    # zarr-python reads what zarr-python wrote; chunkref's engine reads it too.
    r = zarr.open_group(repo.readonly_session().zarr_store(), mode="r")
    np.testing.assert_array_equal(r["z"][...], value)
    np.testing.assert_array_equal(r["sh"][5:20, 3:30], np.arange(32 * 32).reshape(32, 32)[5:20, 3:30])
    np.testing.assert_array_equal(chunkref.open_array(repo.readonly_session().store, path="z", mode="r")[...], value)
    # A partial write through zarr-python changes exactly one chunk.
    s = repo.writable_session()
    zarr.open_array(s.zarr_store(), path="z", mode="r+")[0, 0] = -1
    c2 = s.commit("one")
    assert repo.diff(c, c2).chunks["z"].tolist() == [[0, 0]]
    with pytest.raises(Exception):
        zarr.open_array(repo.readonly_session().zarr_store(), path="z", mode="r+")[0, 0] = 5
    # Adapters pickle (dask ships them).
    again = pickle.loads(pickle.dumps(repo.readonly_session().zarr_store()))
    assert zarr.open_array(again, path="z", mode="r")[0, 0] == -1


def test_xarray_roundtrip_and_append(repo: Repository) -> None:
    xr = pytest.importorskip("xarray")
    ds = xr.Dataset(
        {"temp": (("time", "x"), np.arange(40.0).reshape(8, 5), {"units": "K"})},
        coords={"time": np.arange(8), "x": np.arange(5) * 10},
        attrs={"title": "t"},
    )
    s = repo.writable_session()
    ds.chunk({"time": 4}).to_zarr(s.zarr_store(), zarr_format=3, consolidated=False, mode="w")
    c1 = s.commit("dataset")
    back = xr.open_zarr(repo.readonly_session().zarr_store(), consolidated=False)
    xr.testing.assert_identical(back.load(), ds)
    more = ds.isel(time=slice(0, 4)).assign_coords(time=np.arange(8, 12))
    s = repo.writable_session()
    more.to_zarr(s.zarr_store(), append_dim="time", consolidated=False)
    c2 = s.commit("append")
    out = xr.open_zarr(repo.readonly_session().zarr_store(), consolidated=False).load()
    assert out.sizes["time"] == 12
    np.testing.assert_array_equal(out.temp.values[8:], ds.temp.values[:4])
    old = xr.open_zarr(repo.readonly_session(commit=c1).zarr_store(), consolidated=False)
    assert old.sizes["time"] == 8
    d = repo.diff(c1, c2)
    assert "temp" in d.metadata and d.chunks["temp"][:, 0].tolist() == [2]


def test_dask_forks_write_and_merge(repo: Repository) -> None:
    dask = pytest.importorskip("dask")
    s = repo.writable_session()
    chunkref.open_group(s.store, mode="a").create_array("d", shape=(40, 10), chunks=(10, 10), dtype="i4")
    s.commit("array")
    s = repo.writable_session()

    def task(fork, i):  # runs on a worker: writes its block, returns its (small) change set
        a = chunkref.open_array(fork.store, path="d", mode="r+")
        a[i * 10 : (i + 1) * 10] = i
        return fork

    tasks = [dask.delayed(task)(s.fork(), i) for i in range(4)]
    forks = dask.compute(*tasks, scheduler="threads")
    forks = [pickle.loads(pickle.dumps(f)) for f in forks]  # as if returned by other processes
    assert all(len(pickle.dumps(f)) < 20_000 for f in forks)
    s.merge(*forks)
    s.commit("dask")
    np.testing.assert_array_equal(
        chunkref.open_array(repo.readonly_session().store, path="d", mode="r")[:, 0], np.repeat(np.arange(4), 10)
    )


@pytest.mark.slow
def test_dask_forks_in_processes(repo: Repository) -> None:
    dask = pytest.importorskip("dask")
    s = repo.writable_session()
    chunkref.open_group(s.store, mode="a").create_array("p", shape=(20,), chunks=(5,), dtype="i8")
    s.commit("array")
    s = repo.writable_session()
    forks = dask.compute(*[dask.delayed(_proc_task)(s.fork(), i) for i in range(4)], scheduler="processes",
                         num_workers=2)
    s.merge(*forks)
    s.commit("processes")
    np.testing.assert_array_equal(
        chunkref.open_array(repo.readonly_session().store, path="p", mode="r")[:], np.repeat(np.arange(4), 5)
    )


def _proc_task(fork, i):
    chunkref.open_array(fork.store, path="p", mode="r+")[i * 5 : (i + 1) * 5] = i
    return fork
