"""The sharding_indexed codec: layout, partial I/O, request counts, writes, bad input."""

from __future__ import annotations

import json
from typing import Any

import crc32c
import numcodecs
import numpy as np
import pytest

from chunkref.config import config
from chunkref.errors import ChunkNotFoundError, CodecError, MetadataError, ShardError
from chunkref.storage import CountingStore, FsspecStore, LocalStore, MemoryStore
from chunkref.zarr import api
from chunkref.zarr.chunkio import ChunkRequest, IOOptions
from chunkref.zarr.codecs import ChunkSpec, CodecPipeline, get_codec_class
from chunkref.zarr.codecs.shard_index import EMPTY, ShardIndexCache
from chunkref.zarr.codecs.sharding import ShardingCodec

BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
ZSTD = {"name": "zstd", "configuration": {"level": 1, "checksum": False}}
CRC = {"name": "crc32c"}
MAX = (1 << 64) - 1


def sharding_json(inner, codecs=(BYTES, ZSTD), index_codecs=(BYTES, CRC), location: str | None = "end") -> dict:
    conf: dict[str, Any] = {"chunk_shape": list(inner), "codecs": list(codecs), "index_codecs": list(index_codecs)}
    if location is not None:
        conf["index_location"] = location
    return {"name": "sharding_indexed", "configuration": conf}


def write_meta(store, path, shape, shards, inner, dtype="int32", fill=0, grid=None, **kw) -> None:
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": grid or {"name": "regular", "configuration": {"chunk_shape": list(shards)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": [sharding_json(inner, **kw)],
        "attributes": {},
    }
    store.set(f"{path}/zarr.json" if path else "zarr.json", json.dumps(meta).encode())


def open_custom(store, shape, shards, inner, path="a", **kw):
    write_meta(store, path, shape, shards, inner, **kw)
    return api.open_array(store, path=path)


def options(**kw) -> IOOptions:
    base = dict(array_path="/a", write_empty_chunks=False, read_missing_chunks=True, coalesce_max_gap=1 << 20,
                coalesce_max_bytes=16 << 20)
    base.update(kw)
    return IOOptions(**base)


def data(shape, dtype="int32", seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1000, size=shape).astype(dtype)


# --- codec configuration --------------------------------------------------------------------------


def test_registered_and_json_round_trip():
    assert get_codec_class("sharding_indexed") is ShardingCodec
    js = sharding_json((4, 4))
    codec = ShardingCodec.from_json(js["configuration"])
    assert codec.to_json() == js
    # index_location absent (tensorstore) means end, and is written explicitly.
    conf = dict(js["configuration"])
    del conf["index_location"]
    assert ShardingCodec.from_json(conf).index_location == "end"


@pytest.mark.parametrize(
    "conf, match",
    [
        ({"chunk_shape": [4, 0], "codecs": [BYTES]}, "chunk_shape"),
        ({"chunk_shape": [4], "codecs": [BYTES], "index_location": "middle"}, "index_location"),
        ({"chunk_shape": [4], "codecs": [BYTES], "index_codecs": [BYTES, ZSTD]}, "fixed"),
        ({"chunk_shape": [4], "codecs": [ZSTD]}, "array->bytes"),
        ({"chunk_shape": [4], "codecs": [BYTES], "extra": 1}, "unknown"),
        ({"codecs": [BYTES]}, "chunk_shape"),
    ],
)
def test_bad_configuration(conf, match):
    with pytest.raises(CodecError, match=match):
        ShardingCodec.from_json(conf)


def test_shard_not_multiple_of_inner_is_metadata_error():
    store = MemoryStore()
    write_meta(store, "a", (16, 16), (8, 8), (3, 4))
    with pytest.raises(MetadataError, match="multiple"):
        api.open_array(store, path="a")[...]


def test_rectilinear_shard_edges_must_be_divisible():
    codec = ShardingCodec.from_json(sharding_json((4,))["configuration"])
    from chunkref.zarr.grid import RectilinearGrid

    codec.check_grid(RectilinearGrid((24,), ((8, 12, 4),)))
    with pytest.raises(MetadataError, match="shard 1 along axis 0 has length 10"):
        codec.check_grid(RectilinearGrid((24,), ((8, 10, 6),)))
    # Opening such an array fails at once, naming the document.
    store = MemoryStore()
    grid = {"name": "rectilinear", "configuration": {"kind": "inline", "chunk_shapes": [[4, 5], [8]]}}
    write_meta(store, "b", (9, 8), None, (2, 4), grid=grid)
    with pytest.raises(MetadataError, match=r"b/zarr.json.*shard 1 along axis 0 has length 5"):
        api.open_array(store, path="b")


# --- whole-shard encode / decode ------------------------------------------------------------------


@pytest.mark.parametrize("location", ["start", "end"])
@pytest.mark.parametrize(
    "index_codecs", [(BYTES, CRC), (BYTES,), ({"name": "bytes", "configuration": {"endian": "big"}}, CRC), (BYTES, CRC, CRC)]
)
@pytest.mark.parametrize(
    "inner_codecs",
    [
        (BYTES,),
        (BYTES, ZSTD),
        ({"name": "transpose", "configuration": {"order": [1, 0]}}, BYTES, {"name": "gzip", "configuration": {"level": 1}}),
        ({"name": "bytes", "configuration": {"endian": "big"}}, CRC),
        ({"name": "transpose", "configuration": {"order": [1, 0]}}, {"name": "bytes", "configuration": {"endian": "big"}}, ZSTD),
        (BYTES, {"name": "zstd", "configuration": {"level": 3, "checksum": True}}),
        (sharding_json((2, 2)),),
    ],
)
def test_whole_shard_round_trip(location, index_codecs, inner_codecs):
    js = sharding_json((4, 4), codecs=inner_codecs, index_codecs=index_codecs, location=location)
    pipe = CodecPipeline.from_v3([js], "int32", (8, 12))
    spec = ChunkSpec((8, 12), np.dtype("int32"), 0)
    a = data((8, 12))
    a[:4, :4] = 0  # one empty inner chunk: left out of the shard
    blob = pipe.encode(a, spec)
    np.testing.assert_array_equal(pipe.decode(blob, spec), a)
    # Layout: index where configured, with absolute offsets, C-order compacted chunks.
    isz = 16 * 6 + 4 * (len(index_codecs) - 1)
    raw = blob[:isz] if location == "start" else blob[-isz:]
    dt = ">u8" if index_codecs[0]["configuration"]["endian"] == "big" else "<u8"
    index = np.frombuffer(raw[: 16 * 6], dtype=dt).reshape(6, 2)
    assert tuple(index[0]) == (MAX, MAX)
    offs = index[1:, 0].astype(np.int64)
    assert (np.diff(offs) > 0).all()
    assert offs[0] == (isz if location == "start" else 0)
    assert offs[-1] + int(index[-1, 1]) == (len(blob) if location == "start" else len(blob) - isz)
    if len(index_codecs) > 1:
        assert int.from_bytes(raw[-4:], "little") == crc32c.crc32c(raw[:-4])


def test_whole_shard_decode_is_independent_of_chunk_order():
    pipe = CodecPipeline.from_v3([sharding_json((2,), codecs=(BYTES,), location="start")], "uint8", (6,))
    spec = ChunkSpec((6,), np.dtype("uint8"), 7)
    # Chunks 2, 0 stored in reverse order with a gap; chunk 1 empty.
    isz = 16 * 3 + 4
    body = bytearray(b"\xee" * 3) + bytes([5, 6]) + b"\xee" + bytes([1, 2])
    offs = {2: isz + 3, 0: isz + 6}
    index = np.array([[offs[0], 2], [MAX, MAX], [offs[2], 2]], dtype="<u8").tobytes()
    blob = index + crc32c.crc32c(index).to_bytes(4, "little") + bytes(body)
    np.testing.assert_array_equal(pipe.decode(blob, spec), [1, 2, 7, 7, 5, 6])


# --- array round trips ----------------------------------------------------------------------------


def test_array_round_trip_and_partial_reads():
    store = MemoryStore()
    a = api.create_array(store, name="x", shape=(20, 30), chunks=(4, 5), shards=(8, 10), dtype="int32", fill_value=-1)
    v = data((20, 30))
    a[...] = v
    np.testing.assert_array_equal(a[...], v)
    np.testing.assert_array_equal(a[3:17, 2:29], v[3:17, 2:29])
    np.testing.assert_array_equal(a[::3, 28:1:-4], v[::3, 28:1:-4])
    assert a[19, 29] == v[19, 29]
    np.testing.assert_array_equal(a[5], v[5])
    np.testing.assert_array_equal(a.oindex[[1, 5, 19, 5], [0, 29, 3]], v[np.ix_([1, 5, 19, 5], [0, 29, 3])])
    np.testing.assert_array_equal(a.vindex[[1, 5, 19], [0, 29, 3]], v[[1, 5, 19], [0, 29, 3]])
    mask = v % 7 == 0
    np.testing.assert_array_equal(a.vindex[mask], v[mask])
    np.testing.assert_array_equal(a[None, 2:4, 3], v[None, 2:4, 3])


def test_partial_writes_merge():
    store = MemoryStore()
    a = api.create_array(store, name="x", shape=(20, 30), chunks=(4, 5), shards=(8, 10), dtype="int32", fill_value=-1)
    v = np.full((20, 30), -1, dtype="int32")
    a[5:7, 3:12] = 7
    v[5:7, 3:12] = 7
    np.testing.assert_array_equal(a[...], v)
    a[0:8, 0:10] = np.arange(80).reshape(8, 10)  # a whole shard
    v[0:8, 0:10] = np.arange(80).reshape(8, 10)
    a.oindex[[1, 5, 19], [0, 29, 3]] = -5
    v[np.ix_([1, 5, 19], [0, 29, 3])] = -5
    a.vindex[[2, 6, 18], [0, 28, 3]] = -7
    v[[2, 6, 18], [0, 28, 3]] = -7
    a[3, 4] = 99
    v[3, 4] = 99
    a[10:20:3, ::7] = 5
    v[10:20:3, ::7] = 5
    np.testing.assert_array_equal(a[...], v)
    # Writing the fill value everywhere removes every shard.
    a[...] = -1
    assert sorted(store.list()) == ["x/zarr.json", "zarr.json"]


def test_edge_shards_and_fill_value():
    store = MemoryStore()
    a = api.create_array(store, name="x", shape=(13, 7), chunks=(3, 2), shards=(6, 4), dtype="float32", fill_value=np.nan)
    v = np.arange(91, dtype="float32").reshape(13, 7)
    a[...] = v
    np.testing.assert_array_equal(a[...], v)
    np.testing.assert_array_equal(a[12:, 5:], v[12:, 5:])
    a[12, 6] = np.nan
    v[12, 6] = np.nan
    np.testing.assert_array_equal(a[...], v)
    b = api.create_array(store, name="y", shape=(13, 7), chunks=(3, 2), shards=(6, 4), dtype="float32", fill_value=np.nan)
    assert np.isnan(b[...]).all()


def test_rectilinear_outer_grid():
    store = MemoryStore()
    grid = {"name": "rectilinear", "configuration": {"kind": "inline", "chunk_shapes": [[4, 8, 12], [6, 3]]}}
    a = open_custom(store, (22, 9), None, (2, 3), grid=grid, location="start")
    v = data((22, 9))
    a[...] = v
    np.testing.assert_array_equal(a[...], v)
    np.testing.assert_array_equal(a[3:21, 2:8], v[3:21, 2:8])
    a[5:13, 1] = -3
    v[5:13, 1] = -3
    np.testing.assert_array_equal(a[...], v)
    # The index size differs per shard: 2x2, 4x2 and 6x1 (edge shard) inner chunks.
    for key, n in (("a/c/0/0", 4), ("a/c/1/0", 8), ("a/c/2/1", 6)):
        blob = store.get(key)
        index = np.frombuffer(blob[: 16 * n], dtype="<u8").reshape(n, 2)
        assert int.from_bytes(blob[16 * n : 16 * n + 4], "little") == crc32c.crc32c(blob[: 16 * n])
        stored = index[:, 0] != MAX
        assert (index[stored, 0] >= 16 * n + 4).all()


@pytest.mark.parametrize("endian", ["little", "big"])
def test_zstd_kernel_with_transpose_and_byte_order(endian):
    store = MemoryStore()
    codecs = ({"name": "transpose", "configuration": {"order": [2, 0, 1]}}, {"name": "bytes", "configuration": {"endian": endian}}, ZSTD)
    a = open_custom(store, (9, 10, 11), (6, 10, 8), (3, 5, 4), dtype="float64", fill=np.nan, codecs=codecs)
    v = np.random.default_rng(3).normal(size=(9, 10, 11))
    v[:3, :5, :4] = np.nan  # an inner chunk of fill (NaN): left out
    a[...] = v
    np.testing.assert_array_equal(a[...], v)
    np.testing.assert_array_equal(api.open_array(store, path="a")[2:8, 1:9, 3:10], v[2:8, 1:9, 3:10])
    a[4, :, 5] = -1.5
    v[4, :, 5] = -1.5
    np.testing.assert_array_equal(api.open_array(store, path="a")[...], v)


def test_nested_sharding_array():
    store = MemoryStore()
    a = open_custom(store, (16, 16), (8, 8), (4, 4), codecs=(sharding_json((2, 2)),))
    v = data((16, 16))
    a[...] = v
    a[1:3, 5:14] = 0
    v[1:3, 5:14] = 0
    np.testing.assert_array_equal(a[...], v)
    np.testing.assert_array_equal(a[6:11, 3], v[6:11, 3])


def test_vlen_strings_inside_shards():
    store = MemoryStore()
    a = api.create_array(store, name="s", shape=(10,), chunks=(2,), shards=(4,), dtype=str)
    v = np.array([f"x{i}" * i for i in range(10)], dtype=object)
    a[...] = v
    assert list(a[...]) == list(v)
    a[3:6] = "z"
    v[3:6] = "z"
    assert list(a[1:9]) == list(v[1:9])


# --- request counts -------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "local", "fsspec-file", "fsspec-memory"])
def counting(request, tmp_path):
    if request.param == "memory":
        inner = MemoryStore()
    elif request.param == "local":
        inner = LocalStore(tmp_path / "store")
    elif request.param == "fsspec-file":
        inner = FsspecStore(f"file://{tmp_path / 'fs'}")
    else:
        inner = FsspecStore(f"memory://sharding-tests/{tmp_path.name}")
    return CountingStore(inner)


def make_counted(store, shape=(64, 64), shards=(32, 32), inner=(8, 8)):
    a = api.create_array(store, name="x", shape=shape, chunks=inner, shards=shards, dtype="int32", fill_value=0)
    v = data(shape) + 1
    a[...] = v
    return api.open_array(store, path="x"), v


def test_cold_then_warm_single_inner_chunk(counting):
    a, v = make_counted(counting)
    counting.reset()
    np.testing.assert_array_equal(a[8:16, 16:24], v[8:16, 16:24])
    assert counting.counts["get_many"] == 2 and counting.counts["keys_read"] == 2
    index_req, chunk_req = counting.batches[0][0], counting.batches[1][0]
    assert index_req[0] == chunk_req[0] == "x/c/0/0"
    assert index_req[1].length == 16 * 16 + 4  # suffix request for the index at the end
    counting.reset()
    np.testing.assert_array_equal(a[9:12, 17:20], v[9:12, 17:20])
    assert counting.counts["get_many"] == 1 and counting.counts["keys_read"] == 1


def test_many_shards_one_index_batch_one_data_batch(counting):
    a, v = make_counted(counting)
    counting.reset()
    # One inner chunk row in every shard (partial reads of all 4 shards).
    np.testing.assert_array_equal(a[3, :], v[3, :])
    np.testing.assert_array_equal(a[40:42, 5:60], v[40:42, 5:60])
    assert counting.counts["get_many"] == 4
    first, second = counting.batches[0], counting.batches[1]
    assert sorted(k for k, _ in first) == ["x/c/0/0", "x/c/0/1"]
    # The 4 touched inner chunks of a shard row are adjacent: merged into one range per shard.
    assert sorted(k for k, _ in second) == ["x/c/0/0", "x/c/0/1"]


def test_ranges_merge_only_within_gap(counting):
    a, v = make_counted(counting)
    a[...]  # warm the index cache
    sel = (slice(0, 8), slice(0, 32, 24))  # inner chunks (0,0) and (0,3): two apart
    with config.set({"array.coalesce_max_gap_bytes": 0}):
        counting.reset()
        b = api.open_array(counting, path="x")
        b[...]
        counting.reset()
        np.testing.assert_array_equal(b[sel], v[sel])
        assert counting.counts["keys_read"] == 2
    with config.set({"array.coalesce_max_gap_bytes": 1 << 20}):
        c = api.open_array(counting, path="x")
        c[...]
        counting.reset()
        np.testing.assert_array_equal(c[sel], v[sel])
        assert counting.counts["keys_read"] == 1


@pytest.mark.parametrize("remote", [False, True])
def test_local_stores_do_not_read_large_holes(remote):
    from chunkref.storage import LatencyStore

    counting = CountingStore(MemoryStore())
    store = LatencyStore(counting, latency=0.0) if remote else counting
    # 5 uncompressed inner chunks of 32 KiB in one shard; read the first and the last: the
    # 96 KiB between them are worth reading on a remote store, not on a local one.
    a = open_custom(store, (5, 8192), (5, 8192), (1, 8192), codecs=(BYTES,))
    v = data((5, 8192))
    a[...] = v
    a[0, 0]  # cache the index
    counting.reset()
    np.testing.assert_array_equal(a[::4, :5], v[::4, :5])
    assert counting.counts["keys_read"] == (1 if remote else 2)


@pytest.mark.parametrize("gap, max_bytes", [(0, 0), (0, 600), (1 << 20, 1200), (1 << 20, 16 << 20)])
def test_reads_correct_for_any_coalescing(gap, max_bytes):
    from chunkref.storage import LatencyStore

    counting = CountingStore(MemoryStore())
    store = LatencyStore(counting, latency=0.0)
    a, v = make_counted(store)
    with config.set({"array.coalesce_max_gap_bytes": gap, "array.coalesce_max_bytes": max_bytes}):
        b = api.open_array(store, path="x")
        b[0, 0]
        b[40, 40]
        counting.reset()
        sel = (slice(3, 29), slice(2, 31, 3))
        np.testing.assert_array_equal(b[sel], v[sel])
        ranges = [r for _, r in counting.batches[-1]]
        if max_bytes == 0:
            assert len(ranges) == 4 * 4  # every inner chunk on its own
        else:
            assert max(r.stop - r.start for r in ranges) <= max(max_bytes, max(1, 8 * 8 * 4 + 64))


def test_whole_shard_read_is_one_request(counting):
    a, v = make_counted(counting)
    counting.reset()
    np.testing.assert_array_equal(a[32:64, 0:32], v[32:64, 0:32])
    assert counting.counts["get_many"] == 1
    assert counting.batches[0] == [("x/c/1/0", None)]
    counting.reset()
    np.testing.assert_array_equal(a[...], v)
    assert counting.counts["get_many"] == 1 and counting.counts["keys_read"] == 4


def test_full_shard_write_never_reads(counting):
    a, v = make_counted(counting)
    counting.reset()
    a[...] = v * 2
    assert counting.counts["get_many"] == 0 and counting.counts["get"] == 0
    assert counting.counts["keys_written"] == 4
    np.testing.assert_array_equal(a[...], v * 2)


def test_large_writes_go_out_in_waves(monkeypatch):
    import chunkref.zarr.codecs.sharding as sharding_mod

    monkeypatch.setattr(sharding_mod, "_WAVE_BYTES", 2048)
    store = CountingStore(MemoryStore())
    a, v = make_counted(store)
    store.reset()
    v = v * 3
    a[...] = v
    a[1:60, 2] = 0
    v[1:60, 2] = 0
    # One wave per shard (4096 B of chunks each) for the full write; the column write touches
    # 4 chunks in each of 2 shards: one wave.
    assert store.counts["set_many"] == 4 + 1
    np.testing.assert_array_equal(api.open_array(store, path="x")[...], v)


def test_large_local_reads_go_in_waves(monkeypatch):
    import chunkref.zarr.codecs.sharding as sharding_mod

    monkeypatch.setattr(sharding_mod, "_READ_WAVE_BYTES", 4096)
    store = CountingStore(MemoryStore())
    a, v = make_counted(store)
    store.delete("x/c/1/0")
    v[32:, :32] = 0
    store.reset()
    np.testing.assert_array_equal(a[...], v)
    assert store.counts["get_many"] == 4  # one shard per wave (4 KiB decoded each)
    np.testing.assert_array_equal(a[5:60, 1:63], v[5:60, 1:63])


def test_partial_shard_write_reads_once_writes_once(counting):
    a, v = make_counted(counting)
    counting.reset()
    a[1:3, 1:40] = -1
    v[1:3, 1:40] = -1
    assert counting.counts["get_many"] == 1 and counting.counts["keys_read"] == 2
    assert counting.counts["keys_written"] == 2
    counting.reset()
    np.testing.assert_array_equal(a[1:3, 1:40], v[1:3, 1:40])
    # The write left the new indexes in the cache: one data request.
    assert counting.counts["get_many"] == 1


def test_missing_shard_reads_fill(counting):
    a = api.create_array(counting, name="x", shape=(16,), chunks=(4,), shards=(8,), dtype="int16", fill_value=3)
    counting.reset()
    np.testing.assert_array_equal(a[2:5], [3, 3, 3])
    assert counting.counts["get_many"] == 1
    b = a.with_config({"read_missing_chunks": False})
    with pytest.raises(ChunkNotFoundError, match="x/c/0"):
        b[2:5]


def test_empty_inner_chunks_left_out_and_empty_shard_deleted():
    store = MemoryStore()
    a = api.create_array(store, name="x", shape=(16,), chunks=(4,), shards=(16,), dtype="int16", fill_value=0)
    v = np.zeros(16, dtype="int16")
    v[5] = 1
    a[...] = v
    blob = store.get("x/c/0")
    index = np.frombuffer(blob[-(16 * 4 + 4) : -4], dtype="<u8").reshape(4, 2)
    assert [tuple(r) == (MAX, MAX) for r in index.tolist()] == [True, False, True, True]
    a[5] = 0
    assert not store.exists("x/c/0")
    w = a.with_config({"write_empty_chunks": True})
    w[...] = 0
    blob = store.get("x/c/0")
    index = np.frombuffer(blob[-(16 * 4 + 4) : -4], dtype="<u8").reshape(4, 2)
    assert (index[:, 0] != MAX).all()


def test_index_cache_is_bounded_and_per_instance():
    store = MemoryStore()
    a = api.create_array(store, name="x", shape=(64,), chunks=(4,), shards=(8,), dtype="int16", fill_value=0)
    codec = a.codec_pipeline.partial_codec
    with config.set({"array.shard_index_cache_size": 3}):
        a[...] = np.arange(64)
        assert len(codec.index_cache) == 3
        for i in range(8):
            assert a[i * 8 + 1] == i * 8 + 1
        assert len(codec.index_cache) == 3
    b = api.open_array(store, path="x")
    assert b.codec_pipeline.partial_codec.index_cache is not codec.index_cache
    cache = ShardIndexCache()
    with config.set({"array.shard_index_cache_size": 0}):
        cache.put(store, "k", np.zeros((1, 2), dtype=np.uint64))
    assert cache.get(store, "k") is None


def test_stale_cached_index_is_refetched():
    store = MemoryStore()
    a = api.create_array(store, name="x", shape=(16,), chunks=(4,), shards=(16,), dtype="int32", fill_value=0)
    a[...] = np.arange(16)
    a[...]
    other = api.open_array(store, path="x")  # another handle: its own cache
    other[...] = np.arange(16) * 10
    other[2:9] = np.array([1, 2, 3, 4, 5, 6, 7]) * 1000  # re-laid out shard
    np.testing.assert_array_equal(a[5:7], [4000, 5000])
    store.delete("x/c/0")
    np.testing.assert_array_equal(a[5:7], [0, 0])


# --- hand-driven codec I/O (no array layer) -------------------------------------------------------


def test_read_partial_many_with_hand_built_requests():
    pipe = CodecPipeline.from_v3([sharding_json((2, 2))], "int32", (4, 4))
    codec = pipe.partial_codec
    spec = ChunkSpec((4, 4), np.dtype("int32"), -1)
    store = CountingStore(MemoryStore())
    v = np.arange(32, dtype="int32").reshape(4, 8)
    store.set("c/0/0", pipe.encode(v[:, :4], spec))
    store.set("c/0/1", pipe.encode(v[:, 4:], spec))
    out = np.zeros((3, 3), dtype="int32")
    reqs = [
        ChunkRequest("c/0/0", (0, 0), spec, (slice(1, 4), slice(3, 4)), (slice(0, 3), slice(0, 1)), False),
        ChunkRequest("c/0/1", (0, 1), spec, (slice(1, 4), slice(0, 2)), (slice(0, 3), slice(1, 3)), False),
    ]
    codec.read_partial_many(store, reqs, out, options())
    np.testing.assert_array_equal(out, v[1:4, 3:6])
    assert store.counts["get_many"] == 2


def test_boolean_masks_in_shard_selections():
    pipe = CodecPipeline.from_v3([sharding_json((2, 2))], "int32", (4, 4))
    codec = pipe.partial_codec
    spec = ChunkSpec((4, 4), np.dtype("int32"), -1)
    store = MemoryStore()
    v = np.arange(16, dtype="int32").reshape(4, 4)
    store.set("c/0/0", pipe.encode(v, spec))
    mask = v % 3 == 0
    out = np.zeros(int(mask.sum()), dtype="int32")
    codec.read_partial_many(store, [ChunkRequest("c/0/0", (0, 0), spec, (mask,), (slice(None),), False)], out, options())
    np.testing.assert_array_equal(out, v[mask])
    row = np.array([True, False, True, False])
    out = np.zeros((2, 2), dtype="int32")
    req = ChunkRequest("c/0/0", (0, 0), spec, (row, slice(1, 3)), (slice(None), slice(None)), False)
    codec.read_partial_many(store, [req], out, options())
    np.testing.assert_array_equal(out, v[row, 1:3])
    codec.write_partial_many(store, [req], np.full((2, 2), 7, dtype="int32"), options())
    v[row, 1:3] = 7
    np.testing.assert_array_equal(pipe.decode(store.get("c/0/0"), spec), v)


# --- hand-built and damaged shards ----------------------------------------------------------------


def build_shard(chunks: dict[int, bytes], n: int, *, order, location="end", gap=0, crc=True) -> bytes:
    """A shard with the given encoded inner chunks, stored in ``order`` with ``gap`` junk bytes."""
    isz = 16 * n + (4 if crc else 0)
    base = isz if location == "start" else 0
    body = bytearray()
    index = np.full((n, 2), MAX, dtype="<u8")
    for i in order:
        body += b"\xab" * gap
        index[i] = (base + len(body), len(chunks[i]))
        body += chunks[i]
    raw = index.tobytes()
    if crc:
        raw += crc32c.crc32c(raw).to_bytes(4, "little")
    return raw + bytes(body) if location == "start" else bytes(body) + raw


@pytest.mark.parametrize("location", ["start", "end"])
def test_hand_built_shuffled_shard_with_gaps(location):
    store = CountingStore(MemoryStore())
    a = open_custom(store, (8, 8), (8, 8), (2, 4), dtype="uint16", location=location)
    v = np.arange(64, dtype="uint16").reshape(8, 8)
    zc = numcodecs.Zstd(level=1)
    chunks = {}
    for i in range(8):
        r, c = divmod(i, 2)
        if i != 5:
            chunks[i] = zc.encode(np.ascontiguousarray(v[2 * r : 2 * r + 2, 4 * c : 4 * c + 4]))
    v[4:6, 4:8] = 0  # inner chunk 5 empty
    order = [7, 2, 0, 6, 3, 1, 4]
    store.set("a/c/0/0", build_shard(chunks, 8, order=order, location=location, gap=5))
    np.testing.assert_array_equal(a[...], v)
    b = api.open_array(store, path="a")
    np.testing.assert_array_equal(b[1:7, 3:6], v[1:7, 3:6])
    np.testing.assert_array_equal(b[4:6, 4:8], 0)
    b[0, 0] = 1000
    v[0, 0] = 1000
    np.testing.assert_array_equal(api.open_array(store, path="a")[...], v)


def damaged(location="end"):
    store = MemoryStore()
    a = open_custom(store, (8,), (8,), (2,), location=location)
    a[...] = np.arange(1, 9)
    return store, api.open_array(store, path="a")


def reopen(store):
    return api.open_array(store, path="a")


@pytest.mark.parametrize("sel", [slice(None), slice(2, 3)])
def test_truncated_shard(sel):
    store, a = damaged()
    blob = store.get("a/c/0")
    store.set("a/c/0", blob[:40])
    with pytest.raises(ShardError, match="a/c/0"):
        reopen(store)[sel]


@pytest.mark.parametrize("sel", [slice(None), slice(2, 3)])
def test_index_checksum_failure(sel):
    store, _ = damaged()
    blob = bytearray(store.get("a/c/0"))
    blob[-10] ^= 0xFF
    store.set("a/c/0", bytes(blob))
    with pytest.raises(ShardError, match=r"a/c/0.*checksum"):
        reopen(store)[sel]


def rewrite_index(store, fn, location="end"):
    blob = store.get("a/c/0")
    isz = 16 * 4 + 4
    raw = blob[-isz:] if location == "end" else blob[:isz]
    index = np.frombuffer(raw[:-4], dtype="<u8").reshape(4, 2).copy()
    fn(index)
    new = index.tobytes()
    new += crc32c.crc32c(new).to_bytes(4, "little")
    store.set("a/c/0", blob[:-isz] + new if location == "end" else new + blob[isz:])


@pytest.mark.parametrize("sel", [slice(None), slice(2, 4)])
def test_offset_past_end(sel):
    store, _ = damaged()
    rewrite_index(store, lambda ix: ix.__setitem__((1, 0), 10_000))
    with pytest.raises(ShardError, match=r"a/c/0.*(\(1,\)|past)"):
        reopen(store)[sel]


@pytest.mark.parametrize("sel", [slice(None), slice(0, 4)])
def test_overlapping_chunks(sel):
    store, _ = damaged()
    rewrite_index(store, lambda ix: ix.__setitem__((1, 0), ix[0, 0] + 1))
    with pytest.raises(ShardError, match=r"a/c/0.*overlap"):
        reopen(store)[sel]


@pytest.mark.parametrize(
    "edit",
    [
        lambda ix: ix.__setitem__((2, 1), 1 << 63),  # absurd length
        lambda ix: ix.__setitem__((2, 1), MAX),  # half-empty entry
        lambda ix: ix.__setitem__((2, 1), 0),  # zero length
    ],
)
def test_absurd_index_entries(edit):
    store, _ = damaged()
    rewrite_index(store, edit)
    with pytest.raises(ShardError, match=r"a/c/0.*inner chunk \(2,\)"):
        reopen(store)[4:6]


def test_index_at_start_must_not_overlap_data():
    store, _ = damaged(location="start")
    rewrite_index(store, lambda ix: ix.__setitem__((0, 0), 10), location="start")
    with pytest.raises(ShardError, match=r"a/c/0.*inner chunk \(0,\).*before byte"):
        reopen(store)[...]


def test_corrupt_inner_chunk_names_shard_and_chunk():
    store, _ = damaged()
    blob = bytearray(store.get("a/c/0"))
    blob[2] ^= 0xFF  # inside inner chunk 0's zstd frame header / data
    blob[0:4] = b"\x00\x00\x00\x00"
    store.set("a/c/0", bytes(blob))
    with pytest.raises(ShardError, match=r"a/c/0.*inner chunk \(0,\)"):
        reopen(store)[0:2]
    with pytest.raises(ShardError, match=r"a/c/0.*inner chunk \(0,\)"):
        reopen(store)[...]


def test_empty_marker_constant():
    assert int(EMPTY) == MAX


# --- Array.batch() ---------------------------------------------------------------------------------


def test_batch_writes_each_shard_once():
    store = CountingStore(MemoryStore())
    a = api.create_array(store, name="x", shape=(32, 32), chunks=(4, 4), shards=(16, 16), dtype="int32", fill_value=0)
    v = np.zeros((32, 32), dtype="int32")
    a[0:16, 0:16] = 1  # an existing shard that the batch must merge with
    v[0:16, 0:16] = 1
    store.reset()
    with a.batch():
        for i in range(32):
            a[i, :] = i + 2
            v[i, :] = i + 2
            a[i, 3] = -1
            v[i, 3] = -1
            np.testing.assert_array_equal(a[i], v[i])  # reads see the buffered writes
        assert store.counts["keys_written"] == 0
    assert store.counts["set_many"] == 1 and store.counts["keys_written"] == 4
    # Only the one stored shard was ever read, once.
    assert store.counts["keys_read"] <= 1 + 32  # row reads inside the block may read stored shards
    np.testing.assert_array_equal(api.open_array(store, path="x")[...], v)
    np.testing.assert_array_equal(a[...], v)


def test_batch_first_touch_reads_each_shard_once():
    store = CountingStore(MemoryStore())
    a = api.create_array(store, name="x", shape=(64,), chunks=(4,), shards=(32,), dtype="int32", fill_value=0)
    a[...] = np.arange(64)
    store.reset()
    with a.batch():
        for i in range(0, 64, 3):
            a[i] = -i
    assert store.counts["get_many"] == 2 and store.counts["keys_read"] == 2
    assert store.counts["keys_written"] == 2
    ref = np.arange(64)
    ref[::3] *= -1
    np.testing.assert_array_equal(a[...], ref)


def test_batch_discards_on_error_and_deletes_empty_shards():
    store = MemoryStore()
    a = api.create_array(store, name="x", shape=(16,), chunks=(4,), shards=(8,), dtype="int32", fill_value=0)
    a[...] = 5
    with pytest.raises(RuntimeError):
        with a.batch():
            a[...] = 7
            raise RuntimeError("boom")
    np.testing.assert_array_equal(a[...], 5)
    with a.batch():
        a[0:8] = 0
        with a.batch():  # nested blocks join the outer one
            a[9] = 1
        assert store.exists("x/c/0")
    assert not store.exists("x/c/0")
    np.testing.assert_array_equal(a[...], [0] * 8 + [5, 1] + [5] * 6)


def test_batch_on_unsharded_array():
    store = CountingStore(MemoryStore())
    a = api.create_array(store, name="x", shape=(16,), chunks=(4,), dtype="int32", fill_value=0)
    store.reset()
    with a.batch():
        for i in range(16):
            a[i] = i
    assert store.counts["set_many"] == 1 and store.counts["keys_written"] == 4
    np.testing.assert_array_equal(a[...], np.arange(16))


def test_concurrent_readers_and_writers_of_different_shards():
    from concurrent.futures import ThreadPoolExecutor

    store = MemoryStore()
    a = api.create_array(store, name="x", shape=(64, 64), chunks=(8, 8), shards=(16, 64), dtype="int32", fill_value=0)
    v = data((64, 64))

    def write(i: int) -> None:
        a[16 * i : 16 * i + 16] = v[16 * i : 16 * i + 16]

    def read(i: int) -> None:
        r = i % 4
        np.testing.assert_array_equal(a[16 * r + 3 : 16 * r + 13, 5:60], v[16 * r + 3 : 16 * r + 13, 5:60])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
        list(pool.map(read, range(64)))
    np.testing.assert_array_equal(a[...], v)
