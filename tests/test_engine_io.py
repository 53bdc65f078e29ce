"""I/O behaviour of the Zarr engine, observed through counting and latency store wrappers.

* a read call issues exactly one batched ``get_many`` listing only the chunks it touches;
* the batch is in flight concurrently (a LatencyStore read of N chunks costs ~1 latency);
* zero-size selections do no I/O at all;
* opening a consolidated hierarchy costs O(1) reads, a plain one O(depth);
* ``write_empty_chunks`` (per array, global config, env var, inherited from a group), with
  NaN == NaN and -0.0 != 0.0 compared by bits;
* ``read_missing_chunks=False``; resize deletes chunks; append; failed writes write nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import chunkref as zarr
from chunkref.errors import (
    ChunkNotFoundError,
    ChunkrefError,
    CodecError,
    InvalidArgumentError,
)
from chunkref.storage import CountingStore, LatencyStore, LocalStore, MemoryStore


def snapshot(store) -> dict[str, bytes]:
    return {k: store.get(k) for k in store.list()}


def chunk_keys(store, prefix: str = "a/c/") -> set[str]:
    return set(store.list_prefix(prefix))


@pytest.fixture
def counted():
    """A CountingStore over a MemoryStore holding a 2-D array ``a`` (chunks 4x4, 10x10)."""
    store = CountingStore(MemoryStore())
    a = zarr.create_array(store, name="a", shape=(10, 10), chunks=(4, 4), dtype="i4", fill_value=-1)
    a[...] = np.arange(100, dtype="i4").reshape(10, 10)
    store.reset()
    return store, a


# -- reads: one batch, only touched chunks ---------------------------------------------------------


@pytest.mark.parametrize(
    "kind, selection, keys",
    [
        ("basic", (slice(2, 5), 7), {"a/c/0/1", "a/c/1/1"}),
        ("basic", (slice(None), slice(None)), {f"a/c/{i}/{j}" for i in range(3) for j in range(3)}),
        ("basic", (slice(None, None, -3), 9), {"a/c/0/2", "a/c/1/2", "a/c/2/2"}),
        ("oindex", ([0, 9], [1, 5]), {"a/c/0/0", "a/c/0/1", "a/c/2/0", "a/c/2/1"}),
        ("vindex", ([0, 9], [1, 5]), {"a/c/0/0", "a/c/2/1"}),
        ("blocks", (1, slice(1, 3)), {"a/c/1/1", "a/c/1/2"}),
    ],
)
def test_read_is_one_batch_of_touched_chunks(counted, kind, selection, keys) -> None:
    store, a = counted
    indexer = {"basic": a, "oindex": a.oindex, "vindex": a.vindex, "blocks": a.blocks}[kind]
    indexer[selection]
    assert store.counts["get_many"] == 1
    assert store.counts["get"] == 0
    assert store.total_requests == 1  # no listing, no exists probes
    (batch,) = store.batches
    assert {k for k, _ in batch} == keys
    assert len(batch) == len(keys)  # no duplicate requests
    assert all(r is None for _, r in batch)  # whole chunks


def test_mask_read_touches_only_masked_chunks(counted) -> None:
    store, a = counted
    mask = np.zeros((10, 10), dtype=bool)
    mask[0, 0] = mask[9, 9] = True
    np.testing.assert_array_equal(a[mask], [0, 99])
    assert [sorted(k for k, _ in b) for b in store.batches] == [["a/c/0/0", "a/c/2/2"]]


def test_missing_chunks_are_requested_once_and_read_as_fill(counted) -> None:
    store, a = counted
    store.inner.delete("a/c/1/1")
    store.reset()
    out = a[4:8, 4:8]
    assert (out == -1).all()
    assert store.counts["get_many"] == 1 and store.counts["absent"] == 1


@pytest.mark.parametrize(
    "selection",
    [
        (slice(0, 0), slice(None)),
        (slice(5, 2), 3),
        (slice(None), slice(3, 3)),
    ],
)
def test_zero_size_reads_do_no_io(counted, selection) -> None:
    store, a = counted
    out = a[selection]
    assert out.size == 0
    assert out.shape == np.empty((10, 10))[selection].shape
    assert a.oindex[[], :].shape == (0, 10)
    assert a.vindex[[], []].shape == (0,)
    assert a[np.zeros((10, 10), dtype=bool)].shape == (0,)
    assert store.total_requests == 0


def test_zero_size_writes_do_no_io(counted) -> None:
    store, a = counted
    a[0:0] = 5
    a.oindex[[], [1]] = 5
    a.vindex[[], []] = 5
    assert store.total_requests == 0


def test_empty_array_io() -> None:
    store = CountingStore(MemoryStore())
    a = zarr.create_array(store, name="a", shape=(0, 5), chunks=(2, 2), dtype="f8")
    store.reset()
    assert a[...].shape == (0, 5)
    a[...] = 1.0
    assert store.total_requests == 0


def test_write_is_batched(counted) -> None:
    """A write: one batched fetch of partly covered chunks, one set_many, no per-chunk calls."""
    store, a = counted
    a[1:9, 1:9] = 7  # touches all 9 chunks; all but the centre one partly
    assert store.counts["get_many"] == 1
    assert store.counts["set_many"] == 1
    assert store.counts["get"] == store.counts["set"] == 0
    assert len(store.batches[0]) == 8
    assert "a/c/1/1" not in {k for k, _ in store.batches[0]}  # completely covered: not read
    store.reset()
    a[0:4, 0:8] = 3  # two complete chunks: nothing to read
    assert store.counts["get_many"] == 0
    assert store.counts["set_many"] == 1 and store.counts["keys_written"] == 2


def test_latency_store_batch_is_concurrent() -> None:
    """A 25-chunk read through a 50 ms store takes about one round trip, not 25."""
    inner = MemoryStore()
    a = zarr.create_array(inner, name="a", shape=(50, 50), chunks=(10, 10), dtype="u2")
    a[...] = 1
    slow = LatencyStore(inner, latency=0.05)
    b = zarr.open_array(slow, path="a", mode="r", zarr_format=3)
    slow = b.store  # mode "r" made a read-only copy of the wrapper
    slow.reset()
    t0 = time.perf_counter()
    out = b[...]
    elapsed = time.perf_counter() - t0
    assert (out == 1).all()
    assert slow.max_in_flight == 25
    assert elapsed < 0.05 * 5, elapsed  # serial requests would take 1.25 s


def test_latency_store_concurrent_callers() -> None:
    """Reads from several threads overlap (the engine holds no global lock around I/O)."""
    from concurrent.futures import ThreadPoolExecutor

    inner = MemoryStore()
    a = zarr.create_array(inner, name="a", shape=(40,), chunks=(10,), dtype="u1")
    a[...] = 2
    slow = LatencyStore(inner, latency=0.1)
    b = zarr.open_array(slow, path="a", mode="r")
    slow = b.store
    slow.reset()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: b[i * 10 : (i + 1) * 10], range(4)))
    elapsed = time.perf_counter() - t0
    assert all((r == 2).all() for r in results)
    assert slow.max_in_flight >= 2
    assert elapsed < 0.1 * 3, elapsed


def test_local_store_many_chunks_one_batch(tmp_path) -> None:
    store = CountingStore(LocalStore(tmp_path / "x.zarr"))
    a = zarr.create_array(store, name="a", shape=(64, 64), chunks=(8, 8), dtype="f4")
    a[...] = np.arange(64 * 64, dtype="f4").reshape(64, 64)
    store.reset()
    np.testing.assert_array_equal(a[3:61, 5:59], np.arange(64 * 64, dtype="f4").reshape(64, 64)[3:61, 5:59])
    assert store.counts["get_many"] == 1 and store.counts["keys_read"] == 64


# -- metadata: consolidated vs plain hierarchies -------------------------------------------------


def build_hierarchy(store, zarr_format: int, n_groups: int = 4, n_arrays: int = 4) -> list[str]:
    root = zarr.create_group(store, zarr_format=zarr_format, attributes={"root": True})
    paths = []
    for i in range(n_groups):
        g = root.create_group(f"g{i}")
        sub = g.create_group("sub")
        for j in range(n_arrays):
            g.create_array(f"a{j}", shape=(4,), chunks=(2,), dtype="i2")
            paths.append(f"g{i}/a{j}")
        sub.create_array("deep", shape=(3, 3), chunks=(3, 3), dtype="f4")
        paths.append(f"g{i}/sub/deep")
    return paths


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_consolidated_open_is_constant_cost(zarr_format) -> None:
    store = CountingStore(MemoryStore())
    paths = build_hierarchy(store, zarr_format)
    n_nodes = len(paths) + 8
    zarr.consolidate_metadata(store)
    store.reset()
    g = zarr.open_group(store, mode="r")
    members = dict(g.members(max_depth=None))
    assert len(members) == n_nodes
    for p in paths:
        arr = g[p]
        assert isinstance(arr, zarr.Array) and arr.path == p
    # One batched metadata read for the whole hierarchy, nothing else.
    assert store.total_requests == 1, store.counts
    assert store.counts["get_many"] == 1


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_plain_open_costs_a_batch_per_level(zarr_format) -> None:
    store = CountingStore(MemoryStore())
    paths = build_hierarchy(store, zarr_format)
    store.reset()
    g = zarr.open_group(store, mode="r", use_consolidated=False)
    members = dict(g.members(max_depth=None))
    assert len(members) == len(paths) + 8
    # Root + 3 levels below it: each level is one listing and one batched read per group; the
    # cost grows with the number of groups, never with the number of arrays.
    n_groups = 1 + 4 + 4
    assert store.counts["get"] == 0
    assert store.counts["get_many"] <= 1 + n_groups
    assert store.counts["list_dir"] <= n_groups


def test_consolidated_metadata_can_be_ignored_or_required() -> None:
    store = MemoryStore()
    build_hierarchy(store, 3, n_groups=1, n_arrays=1)
    with pytest.raises(KeyError):
        zarr.open_group(store, mode="r", use_consolidated=True)
    zarr.consolidate_metadata(store)
    g = zarr.open_group(store, mode="r", use_consolidated=True)
    assert g.metadata.consolidated is not None
    # Stale consolidated metadata is what use_consolidated=False is for.
    zarr.open_group(store, mode="r+", use_consolidated=False).create_array("late", shape=(1,), dtype="u1")
    assert "late" not in zarr.open_group(store, mode="r").keys()
    assert "late" in zarr.open_group(store, mode="r", use_consolidated=False).keys()


# -- write_empty_chunks --------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_write_empty_chunks_false_deletes_chunks_that_become_fill(zarr_format) -> None:
    store = MemoryStore()
    a = zarr.create_array(
        store, name="a", shape=(8,), chunks=(4,), dtype="i4", fill_value=5, zarr_format=zarr_format
    )
    assert a.write_empty_chunks is False  # zarr-python's default
    a[...] = 5
    assert a.nchunks_initialized == 0
    a[...] = np.arange(8)
    assert a.nchunks_initialized == 2
    a[0:4] = 5  # chunk 0 becomes all fill: deleted, not rewritten
    a[6:8] = 5
    assert a.nchunks_initialized == 1
    a[4:6] = 5  # now chunk 1 is fill too (partial write + existing content)
    assert a.nchunks_initialized == 0
    np.testing.assert_array_equal(a[...], np.full(8, 5))


def test_write_empty_chunks_true_keeps_them() -> None:
    store = MemoryStore()
    a = zarr.create_array(
        store,
        name="a",
        shape=(8,),
        chunks=(4,),
        dtype="i4",
        fill_value=5,
        config={"write_empty_chunks": True},
    )
    assert a.config["write_empty_chunks"] is True
    a[...] = 5
    assert chunk_keys(store) == {"a/c/0", "a/c/1"}


@pytest.mark.parametrize(
    "fill, written, stored",
    [
        (np.nan, np.nan, False),  # NaN == NaN (by bits)
        (0.0, -0.0, True),  # -0.0 is not the fill 0.0
        (-0.0, 0.0, True),
        (-0.0, -0.0, False),
        (np.inf, np.inf, False),
        (0.0, 0.0, False),
    ],
)
def test_fill_comparison_is_bitwise(fill, written, stored) -> None:
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(4,), chunks=(4,), dtype="f8", fill_value=fill)
    a[...] = written
    assert (chunk_keys(store) == {"a/c/0"}) is stored
    out = a[...]
    assert out.tobytes() == np.full(4, written).tobytes()


def test_other_nan_payloads_are_not_fill() -> None:
    """Only the exact NaN bits of the fill value count as fill (zarr-python compares bytes)."""
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(2,), chunks=(2,), dtype="f4", fill_value=np.nan)
    odd_nan = np.array([0x7FC00001, 0x7FC00001], dtype="<u4").view("f4")
    a[...] = odd_nan
    assert chunk_keys(store) == {"a/c/0"}
    assert a[...].view("<u4").tolist() == [0x7FC00001] * 2


@pytest.mark.parametrize(
    "dtype, fill, value",
    [
        ("str", "", ""),
        ("S3", b"ab", b"ab"),
        ("U2", "q", "q"),
        ("bool", True, True),
        ("c16", complex(np.nan, 1), complex(np.nan, 1)),
        ("M8[s]", np.datetime64("NaT", "s"), np.datetime64("NaT", "s")),
        ([("x", "<i2"), ("y", "<f4")], (1, 2.5), (1, 2.5)),
    ],
    ids=str,
)
def test_empty_chunks_for_every_dtype(dtype, fill, value) -> None:
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(6,), chunks=(3,), dtype=dtype, fill_value=fill)
    values = np.array([value] * 6, dtype=a.dtype)
    a[...] = values
    assert chunk_keys(store) == set()
    with zarr.config.set({"array.write_empty_chunks": True}):
        a[...] = values
    assert chunk_keys(store) == {"a/c/0", "a/c/1"}


def test_global_config_and_per_array_override() -> None:
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(4,), chunks=(2,), dtype="u1")
    b = zarr.create_array(
        store, name="b", shape=(4,), chunks=(2,), dtype="u1", config={"write_empty_chunks": False}
    )
    with zarr.config.set({"array.write_empty_chunks": True}):
        assert a.write_empty_chunks is True and b.write_empty_chunks is False
        a[...] = 0
        b[...] = 0
    assert chunk_keys(store, "a/") == {"a/c/0", "a/c/1", "a/zarr.json"}
    assert chunk_keys(store, "b/") == {"b/zarr.json"}
    assert a.write_empty_chunks is False  # restored on exit


def test_env_var_sets_write_empty_chunks(monkeypatch) -> None:
    monkeypatch.setenv("CHUNKREF_ARRAY__WRITE_EMPTY_CHUNKS", "true")
    zarr.config.refresh()
    try:
        store = MemoryStore()
        a = zarr.create_array(store, name="a", shape=(2,), chunks=(2,), dtype="u1")
        a[...] = 0
        assert chunk_keys(store) == {"a/c/0"}
    finally:
        monkeypatch.delenv("CHUNKREF_ARRAY__WRITE_EMPTY_CHUNKS")
        zarr.config.refresh()
    assert zarr.config.get("array.write_empty_chunks") is False


def test_env_var_read_at_import() -> None:
    """The environment variable works in a fresh process too (read when chunkref is imported)."""
    code = (
        "import chunkref as zarr\n"
        "a = zarr.create_array(None, shape=(2,), chunks=(2,), dtype='u1')\n"
        "a[...] = 0\n"
        "print(a.write_empty_chunks, sorted(a.store.list()))\n"
    )
    env = {**os.environ, "CHUNKREF_ARRAY__WRITE_EMPTY_CHUNKS": "True"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True ['c/0', 'zarr.json']"


def test_group_config_is_inherited_on_reopen() -> None:
    """zarr-python loses runtime settings on re-open; a group's config= reaches g["a"]."""
    store = MemoryStore()
    root = zarr.open_group(store, mode="w")
    root.create_group("sub").create_array("t", shape=(4,), chunks=(2,), dtype="f4")
    g = zarr.open_group(store, mode="r+", config={"write_empty_chunks": True})
    for arr in (g["sub/t"], g["sub"]["t"], dict(g.members(max_depth=None))["sub/t"]):
        assert arr.write_empty_chunks is True
    g["sub/t"][...] = 0
    assert chunk_keys(store, "sub/t/c/") == {"sub/t/c/0", "sub/t/c/1"}
    # Arrays created through the group inherit it too; an explicit config wins.
    assert g.create_array("n", shape=(1,), dtype="u1").write_empty_chunks is True
    assert (
        g.create_array("m", shape=(1,), dtype="u1", config={"write_empty_chunks": False}).write_empty_chunks
        is False
    )
    # And without the group config, the default applies again.
    assert zarr.open_group(store, mode="r")["sub/t"].write_empty_chunks is False
    # Consolidated metadata path keeps the config as well.
    zarr.consolidate_metadata(store)
    gc = zarr.open_group(store, mode="r", config={"read_missing_chunks": False})
    assert gc["sub/t"].config["read_missing_chunks"] is False


def test_open_array_config_and_with_config() -> None:
    store = MemoryStore()
    zarr.create_array(store, name="a", shape=(4,), chunks=(2,), dtype="u1")
    a = zarr.open_array(store, path="a", mode="r+", config={"write_empty_chunks": True})
    a[...] = 0
    assert chunk_keys(store) == {"a/c/0", "a/c/1"}
    b = a.with_config({"write_empty_chunks": False})
    b[...] = 0
    assert chunk_keys(store) == set()
    with pytest.raises(InvalidArgumentError, match="unknown"):
        zarr.open_array(store, path="a", config={"write_empty_chunk": True})


# -- read_missing_chunks -------------------------------------------------------------------------


def test_read_missing_chunks_false_raises_typed_error() -> None:
    store = MemoryStore()
    a = zarr.create_array(
        store, name="temp", shape=(4, 4), chunks=(2, 2), dtype="i4", config={"read_missing_chunks": False}
    )
    a[0:2, 0:2] = 1
    np.testing.assert_array_equal(a[0:2, 0:2], 1)
    with pytest.raises(ChunkNotFoundError, match="temp/c/1/0") as info:
        a[2:4, 0:2]
    assert isinstance(info.value, KeyError) and isinstance(info.value, ChunkrefError)
    with zarr.config.set({"array.read_missing_chunks": False}):
        with pytest.raises(ChunkNotFoundError):
            zarr.open_array(store, path="temp")[...]


# -- resize and append ------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_resize_shrink_deletes_outside_chunks(zarr_format) -> None:
    store = CountingStore(MemoryStore())
    a = zarr.create_array(store, name="a", shape=(10, 10), chunks=(3, 3), dtype="i2", zarr_format=zarr_format)
    a[...] = np.arange(100).reshape(10, 10)
    assert a.nchunks_initialized == 16
    store.reset()
    a.resize((4, 7))
    assert store.counts["delete_many"] == 1
    assert a.nchunks_initialized == 6  # chunk rows 0-1, columns 0-2
    np.testing.assert_array_equal(a[...], np.arange(100).reshape(10, 10)[:4, :7])
    b = zarr.open_array(store, path="a", mode="r")
    assert b.shape == (4, 7)
    # Growing back: the region that was cut off reads as fill, not as the stale bytes.
    a.resize(10, 10)
    expected = np.zeros((10, 10), dtype="i2")
    expected[:4, :7] = np.arange(100).reshape(10, 10)[:4, :7]
    np.testing.assert_array_equal(a[...], expected)


def test_resize_rectilinear() -> None:
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(35,), chunks=((10, 20, 5),), dtype="u1", fill_value=9)
    a[...] = 1
    a.resize(12)
    assert sorted(chunk_keys(store)) == ["a/c/0", "a/c/1"]
    np.testing.assert_array_equal(a[...], np.ones(12))
    a.resize(35)
    np.testing.assert_array_equal(a[...], [1] * 12 + [9] * 23)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_append(zarr_format) -> None:
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(3, 4), chunks=(2, 2), dtype="f8", zarr_format=zarr_format)
    data = np.arange(12.0).reshape(3, 4)
    a[...] = data
    assert a.append(np.ones((2, 4))) == (5, 4)
    assert a.append(np.full((5, 1), 7.0), axis=1) == (5, 5)
    expected = np.concatenate([np.concatenate([data, np.ones((2, 4))]), np.full((5, 1), 7.0)], axis=1)
    np.testing.assert_array_equal(a[...], expected)
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[...], expected)
    with pytest.raises(InvalidArgumentError):
        a.append(np.ones((2, 3)))


# -- failed writes leave no partial writes ----------------------------------------------------------


def test_uncastable_value_writes_nothing() -> None:
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(8,), chunks=(2,), dtype="i4")
    a[...] = np.arange(8)
    before = snapshot(store)
    with pytest.raises(InvalidArgumentError, match="/a"):
        a[...] = ["1", "2", "x", "4", "5", "6", "7", "8"]
    with pytest.raises(InvalidArgumentError):
        a[0:4] = np.ones(3)  # does not broadcast
    assert snapshot(store) == before


def test_encode_error_in_one_chunk_writes_nothing() -> None:
    """A value one chunk could not encode (a non-str in a vlen-utf8 array) aborts the whole write.

    The engine checks variable-length elements before encoding, so the error names the array,
    the element and its position rather than the chunk it would have landed in.
    """
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(6,), chunks=(2,), dtype=str)
    a[...] = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
    before = snapshot(store)
    bad = np.array(["x", "y", "z", 4, "w", "v"], dtype=object)
    with pytest.raises((CodecError, InvalidArgumentError)) as info:
        a[...] = bad
    assert isinstance(info.value, ValueError)
    assert "'/a'" in str(info.value) and "int 4 (at (3,)" in str(info.value)
    assert snapshot(store) == before
    assert a[...].tolist() == ["a", "b", "c", "d", "e", "f"]


def test_store_failure_mid_write_is_reported() -> None:
    """A store that refuses the batch raises; the array's metadata and old chunks stay readable."""
    from chunkref.errors import StoreError
    from chunkref.storage import FaultStore

    inner = MemoryStore()
    a = zarr.create_array(inner, name="a", shape=(4,), chunks=(2,), dtype="u1")
    a[...] = 1
    faulty = FaultStore(inner, fail_keys=lambda k: "/c/" in k, ops=("set",), exc=StoreError)
    b = zarr.open_array(faulty, path="a")
    with pytest.raises(StoreError):
        b[...] = 2
    np.testing.assert_array_equal(zarr.open_array(inner, path="a", mode="r")[...], [1, 1, 1, 1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chunks": (2, 2), "shards": (4, 4)},
        {"chunks": ((3, 4, 3), (5, 5))},
        {"chunks": (3, 3), "zarr_format": 2, "order": "F"},
        {"chunks": (3, 3), "compressors": [{"name": "gzip", "configuration": {"level": 1}}]},
    ],
    ids=["sharded", "rectilinear", "v2-F", "gzip"],
)
def test_shrink_then_grow_shows_fill_for_every_layout(kwargs) -> None:
    store = MemoryStore()
    a = zarr.create_array(store, name="a", shape=(10, 10), dtype="i4", fill_value=-1, **kwargs)
    a[...] = np.arange(100).reshape(10, 10)
    a.resize((5, 6))
    a.resize((10, 10))
    expected = np.full((10, 10), -1)
    expected[:5, :6] = np.arange(100).reshape(10, 10)[:5, :6]
    np.testing.assert_array_equal(a[...], expected)
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[...], expected)


def test_resize_shrink_costs_one_batch_per_cut_axis() -> None:
    store = CountingStore(MemoryStore())
    a = zarr.create_array(store, name="a", shape=(12, 12), chunks=(5, 5), dtype="u1")
    a[...] = 1
    store.reset()
    a.resize((7, 12))  # cuts chunk row 1 (rows 5-9); deletes row 2
    assert store.counts["get_many"] == 1 and store.counts["delete_many"] == 1
    assert store.counts["set_many"] == 2  # the 3 rewritten chunks, then the metadata document
    assert store.counts["keys_written"] == 3 + 1
    store.reset()
    a.resize((7, 15))  # growing rewrites nothing
    assert store.counts["get_many"] == 0 and store.counts["keys_written"] == 1


def test_sharded_missing_shard_and_empty_inner_chunks() -> None:
    store = MemoryStore()
    a = zarr.create_array(
        store,
        name="t",
        shape=(8, 8),
        chunks=(2, 2),
        shards=(4, 4),
        dtype="i4",
        config={"read_missing_chunks": False},
    )
    a[0:2, 0:2] = 1
    with pytest.raises(ChunkNotFoundError, match="t/c/1/1"):
        a[4:8, 4:8]
    # An inner chunk recorded as empty in an existing shard's index is the fill value, not missing.
    np.testing.assert_array_equal(a[2:4, 2:4], 0)
    a[0:2, 0:2] = 0  # the shard's only non-empty inner chunk becomes fill: the shard is deleted
    assert chunk_keys(store, "t/c/") == set()


@pytest.mark.network
def test_http_reads_are_concurrent_and_batched(http_server) -> None:
    """Over a real HTTP server: one read of 16 chunks keeps several requests in flight."""
    from chunkref.storage import FsspecStore
    from servers import HTTP_OPTIONS

    url, path = http_server.new_dir()
    a = zarr.create_array(str(path), shape=(40, 40), chunks=(10, 10), dtype="i2", compressors=None)
    a[...] = np.arange(1600, dtype="i2").reshape(40, 40)
    remote = zarr.open_array(
        FsspecStore(url, storage_options=HTTP_OPTIONS, read_only=True), mode="r", zarr_format=3
    )
    http_server.reset()
    with http_server.misbehave(delay=0.05):
        t0 = time.perf_counter()
        out = remote[...]
        elapsed = time.perf_counter() - t0
    np.testing.assert_array_equal(out, np.arange(1600).reshape(40, 40))
    assert http_server.count("GET") == 16
    assert http_server.max_in_flight >= 4
    assert elapsed < 16 * 0.05, elapsed  # serial requests would take at least 0.8 s
    http_server.reset()
    assert remote[0:0].size == 0 and http_server.count("GET") == 0
