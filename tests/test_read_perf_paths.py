"""Correctness of the fast read paths (benchmarks/read_refs.py measures their speed).

* ``_threads.run_dynamic``: load-balanced batches on the shared pool.
* ``CodecPipeline.decode_into``: the fused unshuffle + copy for HDF5's shuffle chains, checked
  against h5py and numcodecs over many selections, dtypes and byte orders; corrupt data still
  raises typed errors naming the chunk.
"""

from __future__ import annotations

import os
import threading

import h5py
import numcodecs
import numpy as np
import pytest

import chunkref
from chunkref import _threads
from chunkref.config import config
from chunkref.errors import ChunkDecodeError, ShortReadError
from chunkref.zarr import chunkio
from chunkref.zarr.codecs.base import ChunkSpec
from chunkref.zarr.codecs.pipeline import CodecPipeline

# --- run_dynamic -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("n, grab", [(1, 1), (7, 1), (100, 3), (5, 10)])
def test_run_dynamic_processes_every_item_once(workers, n, grab):
    seen: list[int] = []
    lock = threading.Lock()

    def work(batch):
        assert 1 <= len(batch) <= grab or workers == 1 or n <= grab
        with lock:
            seen.extend(batch)

    with config.set({"threading.max_workers": workers}):
        _threads.run_dynamic(work, list(range(n)), grab)
    assert sorted(seen) == list(range(n))


def test_run_dynamic_error_propagates_and_stops_others():
    done: list[int] = []
    lock = threading.Lock()

    def work(batch):
        if 10 in batch:
            raise ChunkDecodeError("bad chunk 10")
        with lock:
            done.extend(batch)

    with config.set({"threading.max_workers": 2}):
        with pytest.raises(ChunkDecodeError, match="bad chunk 10"):
            _threads.run_dynamic(work, list(range(1000)), 1)
    assert 10 not in done
    assert len(done) < 999  # the other worker stopped taking items


# --- decode_into (fused unshuffle) ---------------------------------------------------------------


def _shuffle_zlib_pipeline(dtype, chunk_shape, compressor="zlib", elementsize=None):
    comp = {"id": compressor, "level": 4} if compressor != "zstd" else {"id": "zstd", "level": 1}
    conf = {"id": "shuffle"} if elementsize is None else {"id": "shuffle", "elementsize": elementsize}
    return CodecPipeline.from_v2(comp, [conf], dtype, chunk_shape=chunk_shape)


def _encode(dtype, chunk, compressor="zlib", elementsize=None):
    elementsize = np.dtype(dtype).itemsize if elementsize is None else elementsize
    shuffled = numcodecs.Shuffle(elementsize).encode(np.ascontiguousarray(chunk, dtype=dtype))
    if compressor == "zstd":
        return numcodecs.Zstd(1).encode(shuffled)
    return numcodecs.Zlib(4).encode(shuffled)


SELECTIONS = [
    (slice(None), slice(None), slice(None)),
    (slice(1, 4), slice(0, 7), slice(2, 5)),
    (2, slice(None), slice(3, 9)),
    (0, 5, 7),
    (slice(0, 0), slice(None), slice(None)),
    (slice(None, None, 2), slice(1, None, 3), slice(None)),
]


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i2", "<u8", ">f4", ">i4", "<c8"])
@pytest.mark.parametrize("sel", SELECTIONS)
def test_decode_into_matches_decode(dtype, sel):
    rng = np.random.default_rng(0)
    shape = (5, 8, 10)
    chunk = (rng.random(shape) * 1000).astype(dtype)
    pipe = _shuffle_zlib_pipeline(dtype, shape)
    spec = ChunkSpec(shape, np.dtype(dtype), 0)
    data = _encode(dtype, chunk)
    assert pipe._plan(spec, config.get("codec.max_decoded_bytes")).unshuffle == np.dtype(dtype).itemsize
    out = np.full((12, 20, 30), 7, dtype=dtype)
    out_sel = tuple(
        s if isinstance(s, int) else slice(3, 3 + len(range(*s.indices(n))))
        for s, n in zip(sel, shape)
    )
    pipe.decode_into(data, spec, out[(*out_sel, Ellipsis)], sel)
    expected = np.full_like(out, 7)
    expected[out_sel] = chunk[sel]
    np.testing.assert_array_equal(out, expected)


def test_decode_into_non_contiguous_destination_falls_back():
    shape = (4, 6)
    chunk = np.arange(24, dtype="<f4").reshape(shape)
    pipe = _shuffle_zlib_pipeline("<f4", shape)
    spec = ChunkSpec(shape, np.dtype("<f4"), 0)
    out = np.zeros((8, 12), "<f4")
    dest = out[::2, ::2]  # last axis strided: no uint8 view possible
    pipe.decode_into(_encode("<f4", chunk), spec, dest, (slice(None), slice(None)))
    np.testing.assert_array_equal(out[::2, ::2], chunk)
    assert not out[1::2].any()


@pytest.mark.parametrize("compressor", ["zlib", "gzip", "zstd"])
def test_decode_into_other_compressors(compressor):
    shape = (6, 7)
    chunk = np.arange(42, dtype="<i4").reshape(shape) * 1000
    comp = {"id": compressor, "level": 1}
    pipe = CodecPipeline.from_v2(comp, [{"id": "shuffle", "elementsize": 4}], "<i4", chunk_shape=shape)
    data = numcodecs.get_codec(comp).encode(numcodecs.Shuffle(4).encode(chunk))
    out = np.zeros(shape, "<i4")
    pipe.decode_into(data, ChunkSpec(shape, np.dtype("<i4"), 0), out[...], (slice(None), slice(None)))
    np.testing.assert_array_equal(out, chunk)


def test_decode_into_elementsize_mismatch_uses_generic_path():
    # shuffle with elementsize 2 on float32 data: not the fused case, still exact.
    shape = (10,)
    chunk = np.linspace(0, 1, 10, dtype="<f4")
    pipe = _shuffle_zlib_pipeline("<f4", shape, elementsize=2)
    spec = ChunkSpec(shape, np.dtype("<f4"), 0)
    assert pipe._plan(spec, config.get("codec.max_decoded_bytes")).unshuffle == 0
    out = np.zeros(shape, "<f4")
    pipe.decode_into(_encode("<f4", chunk, elementsize=2), spec, out[...], (slice(None),))
    np.testing.assert_array_equal(out, chunk)


def test_decode_into_rejects_wrong_size_and_corrupt_data():
    shape = (8, 8)
    pipe = _shuffle_zlib_pipeline("<f4", shape)
    spec = ChunkSpec(shape, np.dtype("<f4"), 0)
    out = np.zeros(shape, "<f4")
    short = _encode("<f4", np.zeros((8, 7), "<f4"))
    with pytest.raises(ChunkDecodeError):
        pipe.decode_into(short, spec, out[...], (slice(None), slice(None)))
    long = _encode("<f4", np.zeros((8, 9), "<f4"))
    with pytest.raises(ChunkDecodeError):
        pipe.decode_into(long, spec, out[...], (slice(None), slice(None)))
    with pytest.raises(ChunkDecodeError):
        pipe.decode_into(b"\x78\x9c garbage", spec, out[...], (slice(None), slice(None)))
    assert not out.any()


def _netcdf_like(path, shape=(6, 20, 30), chunks=(2, 7, 8), dtype="f4", **kw):
    rng = np.random.default_rng(1)
    data = (rng.random(shape) * 100).astype(dtype)
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=data, chunks=chunks, compression="gzip", compression_opts=4, shuffle=True, **kw)
    return data


@pytest.mark.parametrize("workers", [1, 2])
def test_engine_reads_hdf5_shuffle_gzip_like_h5py(tmp_path, workers):
    path = tmp_path / "v.h5"
    data = _netcdf_like(path)
    arr = chunkref.open(chunkref.scan(str(path)))["v"]
    selections = [
        (...,),
        (slice(1, 5), slice(3, 19), slice(2, 29)),
        (3, slice(None), 7),
        (slice(None, None, -1), slice(2, 18, 3), slice(None)),
        ([0, 5, 2], slice(None), slice(4, 9)),
        (np.array([1, 4]), np.array([2, 9]), 3),
    ]
    with config.set({"threading.max_workers": workers}):
        for sel in selections:
            np.testing.assert_array_equal(arr[sel], data[sel], err_msg=str(sel))
        np.testing.assert_array_equal(arr.get_orthogonal_selection(([0, 5], [1, 19], slice(None))), data[np.ix_([0, 5], [1, 19], range(30))])


def test_engine_big_endian_hdf5_shuffle(tmp_path):
    path = tmp_path / "be.h5"
    data = _netcdf_like(path, dtype=">i4")
    arr = chunkref.open(chunkref.scan(str(path)))["v"]
    np.testing.assert_array_equal(arr[...], data)
    np.testing.assert_array_equal(arr[2:5, 1:13, 4:22], data[2:5, 1:13, 4:22])


def test_engine_corrupt_chunk_names_the_chunk(tmp_path):
    path = tmp_path / "v.h5"
    _netcdf_like(path)
    manifest = chunkref.scan(str(path))
    table = manifest.tables["v"]
    # Point chunk 0 at the bytes of a neighbour shifted by one: inflate fails.
    off = int(table.offset[1])
    table.offset[0] = off + 1
    arr = chunkref.open(manifest)["v"]
    with pytest.raises(ChunkDecodeError, match=r"v/c/0/0/0"):
        arr[...]


# --- ReferenceStore: local pread path ------------------------------------------------------------


def _raw_manifest(tmp_path, blob, chunk, name="data.bin"):
    """An int32 1-d array whose chunks are consecutive ``chunk``-byte slices of ``blob``."""
    from chunkref.manifest import ChunkTable, Manifest

    path = tmp_path / name
    path.write_bytes(blob)
    n = len(blob) // chunk
    m = Manifest(location=str(tmp_path / "refs.json"))
    src = m.add_source(str(path))
    t = ChunkTable.empty((n,))
    t.set_refs(np.arange(n), src, np.arange(n) * chunk, chunk)
    doc = {
        "zarr_format": 3, "node_type": "array", "shape": [n * chunk // 4], "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk // 4]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
    }
    m.add_array("a", {"zarr.json": doc}, t)
    return m, path


@pytest.mark.parametrize("concurrency", [1, 8])
def test_local_batched_parallel_reads_are_exact(tmp_path, concurrency):
    from chunkref.reference import ReferenceStore

    blob = np.random.default_rng(2).integers(0, 256, 96 * 65536, dtype=np.uint8).tobytes()  # 6 MiB
    m, _ = _raw_manifest(tmp_path, blob, 65536)
    s = ReferenceStore(m)
    order = np.random.default_rng(3).permutation(96).tolist()
    with config.set({"io.concurrency": concurrency}):
        got = s.get_many([(f"a/c/{i}", None) for i in order])
    assert got == [blob[i * 65536 : (i + 1) * 65536] for i in order]
    arr = chunkref.open(m)["a"]
    np.testing.assert_array_equal(arr[...], np.frombuffer(blob, "<i4"))


def test_local_whole_source_refs_and_ranges(tmp_path):
    from chunkref.manifest.table import WHOLE
    from chunkref.reference import ReferenceStore
    from chunkref.storage.base import OffsetRequest, RangeRequest, SuffixRequest

    blob = bytes(range(256)) * 2
    m, _ = _raw_manifest(tmp_path, blob, 64)
    m.tables["a"].set_ref((1,), 0, 0, int(WHOLE))
    s = ReferenceStore(m)
    assert s.get("a/c/1") == blob
    assert s.get("a/c/1", RangeRequest(10, 20)) == blob[10:20]
    assert s.get("a/c/1", OffsetRequest(500)) == blob[500:]
    assert s.get("a/c/1", SuffixRequest(5)) == blob[-5:]
    assert s.get("a/c/1", SuffixRequest(5000)) == blob
    with pytest.raises(ShortReadError, match=r"a/c/1.*data\.bin"):
        s.get("a/c/1", OffsetRequest(513))
    with pytest.raises(ShortReadError, match=r"a/c/1.*data\.bin"):
        s.get("a/c/1", RangeRequest(500, 600))


def test_local_source_truncated_during_use_is_a_short_read(tmp_path):
    from chunkref.reference import ReferenceStore

    blob = bytes(8 * 1024 * 1024)
    m, path = _raw_manifest(tmp_path, blob, 1 << 20)
    s = ReferenceStore(m)
    assert s.get("a/c/7") == blob[-(1 << 20):]
    with open(path, "r+b") as f:
        f.truncate(7 * (1 << 20) + 100)
    with config.set({"io.concurrency": 4}):
        with pytest.raises(ShortReadError, match=r"a/c/7.*array 'a'.*data\.bin"):
            s.get_many([(f"a/c/{i}", None) for i in range(8)])
    with pytest.raises(ShortReadError):
        chunkref.open(m)["a"][...]


def test_local_source_not_a_regular_file(tmp_path):
    from chunkref.errors import SourceUnavailableError
    from chunkref.reference import ReferenceStore

    m, path = _raw_manifest(tmp_path, bytes(256), 64)
    s = ReferenceStore(m)
    path.unlink()
    with pytest.raises(SourceUnavailableError, match=r"a/c/0.*does not exist"):
        s.get("a/c/0")
    path.mkdir()
    with pytest.raises(SourceUnavailableError, match=r"a/c/0.*data\.bin"):
        s.get("a/c/0")
    path.rmdir()
    os.mkfifo(path)
    with pytest.raises(SourceUnavailableError, match="not a regular file"):
        s.get("a/c/0")


def test_local_verify_detects_changed_bytes(tmp_path):
    from chunkref.errors import HashMismatchError
    from chunkref.manifest.cid import compute_cid
    from chunkref.reference import ReferenceStore

    blob = bytes(range(256))
    m, path = _raw_manifest(tmp_path, blob, 64)
    for i in range(4):
        m.tables["a"].set_cid((i,), compute_cid(blob[i * 64 : (i + 1) * 64]))
    s = ReferenceStore(m, verify=True)
    assert s.get_many([(f"a/c/{i}", None) for i in range(4)]) == [blob[i * 64 : (i + 1) * 64] for i in range(4)]
    path.write_bytes(blob[:64] + b"\x00" + blob[65:])
    with pytest.raises(HashMismatchError, match=r"c/1.*data\.bin"):
        s.get_many([(f"a/c/{i}", None) for i in range(4)])


# --- direct reads of uncompressed chunks into the output ----------------------------------------


def test_contiguous_span_matches_numpy():
    rng = np.random.default_rng(5)
    for _ in range(3000):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(x) for x in rng.integers(1, 5, ndim))
        sel = []
        for n in shape:
            kind = rng.integers(0, 4)
            if kind == 0:
                sel.append(int(rng.integers(0, n)))
            elif kind == 1:
                sel.append(slice(None))
            else:
                a = int(rng.integers(0, n + 1))
                b = int(rng.integers(a, n + 1))
                sel.append(slice(a, b, 2 if kind == 3 and rng.random() < 0.3 else None))
        sel = tuple(sel)
        idx = np.arange(int(np.prod(shape))).reshape(shape)[sel].ravel()
        span = chunkio.contiguous_span(sel, shape)
        is_run = idx.size > 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size))
        steps = any(isinstance(s, slice) and s.step not in (None, 1) for s in sel)
        if steps:
            assert span is None, (shape, sel)  # strided slices are never taken as runs
        elif idx.size == 0:
            assert span is None or span[1] == 0, (shape, sel)
        else:
            assert (span is not None) == is_run, (shape, sel)
            if span is not None:
                assert span == (int(idx[0]), idx.size), (shape, sel)


def _h5_raw(path, split):
    rng = np.random.default_rng(6)
    cont = rng.random((12, 30, 40)).astype("<f4")
    chunked = rng.integers(-1000, 1000, (9, 20, 16)).astype("<i2")
    with h5py.File(path, "w") as f:
        f.create_dataset("cont", data=cont)
        f.create_dataset("chunked", data=chunked, chunks=(4, 7, 16))
    m = chunkref.scan(str(path), contiguous_split_bytes=split)
    return m, {"cont": cont, "chunked": chunked}


RAW_SELECTIONS = [
    (...,),
    (5,),
    (slice(2, 7),),
    (3, slice(4, 20)),
    (3, 7),
    (3, 7, slice(5, 9)),
    (slice(1, 11), slice(0, 3), slice(None)),
    (slice(None), 5, slice(None)),
    (slice(None, None, -2), slice(1, 20, 3), slice(None)),
    ([1, 4, 2], slice(None), slice(2, 6)),
    (slice(0, 0),),
]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("split", [0, 4800])  # whole dataset as one chunk / pieces of one plane
def test_direct_reads_match_h5py(tmp_path, workers, split):
    m, data = _h5_raw(tmp_path / "raw.h5", split)
    g = chunkref.open(m)
    calls = []
    store = g["cont"]._store
    orig = store.get_many_into

    def counting(reqs):
        calls.append(len(reqs))
        return orig(reqs)

    store.get_many_into = counting
    with config.set({"threading.max_workers": workers}):
        for name in ("cont", "chunked"):
            arr = g[name]
            for sel in RAW_SELECTIONS:
                np.testing.assert_array_equal(arr[sel], data[name][sel], err_msg=f"{name} {sel}")
    assert calls  # the direct path was taken


def test_direct_read_checks_the_chunk_size(tmp_path):
    m, data = _h5_raw(tmp_path / "raw.h5", 4800)
    t = m.tables["cont"]
    t.length[3] += 4  # a reference 4 bytes longer than a chunk of its shape
    arr = chunkref.open(m)["cont"]
    np.testing.assert_array_equal(arr[2], data["cont"][2])
    for sel in [(3,), (3, 5), (...,)]:
        with pytest.raises(ChunkDecodeError, match=r"cont/c/3/0/0.*array .cont.*raw\.h5.*4804 bytes, expected 4800"):
            arr[sel]
    t.length[3] -= 8
    with pytest.raises(ChunkDecodeError, match=r"cont/c/3/0/0"):
        arr[3, 0]


def test_direct_read_absent_chunks(tmp_path):
    m, data = _h5_raw(tmp_path / "raw.h5", 4800)
    m.tables["cont"].set_absent((4, 0, 0))
    arr = chunkref.open(m)["cont"]
    got = arr[3:6]
    np.testing.assert_array_equal(got[0], data["cont"][3])
    assert (got[1] == arr.fill_value).all()
    with config.set({"array.read_missing_chunks": False}):
        with pytest.raises(chunkref.errors.ChunkNotFoundError, match=r"cont/c/4/0/0"):
            arr[3:6]


def test_direct_read_source_changed_is_short_read(tmp_path):
    path = tmp_path / "raw.h5"
    m, _ = _h5_raw(path, 4800)
    arr = chunkref.open(m)["cont"]
    end = int(m.tables["cont"].offset[11])
    with open(path, "r+b") as f:
        f.truncate(end + 10)
    with pytest.raises(ShortReadError, match=r"cont/c/11/0/0.*raw\.h5"):
        arr[...]


def test_get_many_into_api(tmp_path):
    from chunkref.errors import InvalidArgumentError
    from chunkref.manifest.cid import compute_cid
    from chunkref.manifest.table import WHOLE
    from chunkref.reference import ReferenceStore
    from chunkref.storage.base import RangeRequest

    blob = bytes(range(256))
    m, _ = _raw_manifest(tmp_path, blob, 64)
    t = m.tables["a"]
    t.set_inline((2,), blob[128:192])
    t.set_absent((3,))
    t.set_cid((0,), compute_cid(blob[:64]))
    s = ReferenceStore(m, verify=True)
    bufs = [np.zeros(64, np.uint8), np.zeros(16, np.uint8), np.zeros(64, np.uint8), np.zeros(64, np.uint8)]
    got = s.get_many_into([
        ("a/c/0", None, bufs[0], 64),  # verified: read whole, checked, copied
        ("a/c/1", RangeRequest(8, 24), bufs[1], 64),  # local range: preadv
        ("a/c/2", None, bufs[2], 64),  # inline
        ("a/c/3", None, bufs[3], 64),  # absent
    ])
    assert got == [True, True, True, False]
    assert bufs[0].tobytes() == blob[:64] and bufs[1].tobytes() == blob[72:88]
    assert bufs[2].tobytes() == blob[128:192] and not bufs[3].any()
    with pytest.raises(InvalidArgumentError, match="a/c/1"):
        ro = np.zeros(64, np.uint8)
        ro.flags.writeable = False
        s.get_many_into([("a/c/1", None, ro, None)])
    with pytest.raises(ShortReadError, match="a/c/1"):
        s.get_many_into([("a/c/1", None, np.zeros(63, np.uint8), None)])
    with pytest.raises(ChunkDecodeError, match="a/c/2.*64 bytes, expected 32"):
        s.get_many_into([("a/c/2", RangeRequest(0, 8), np.zeros(8, np.uint8), 32)])
    t.set_ref((1,), 0, 0, int(WHOLE))
    s = ReferenceStore(m)
    buf = np.zeros(10, np.uint8)
    assert s.get_many_into([("a/c/1", RangeRequest(100, 110), buf, 256)]) == [True]
    assert buf.tobytes() == blob[100:110]
    with pytest.raises(ChunkDecodeError, match="a/c/1.*256 bytes, expected 64"):
        s.get_many_into([("a/c/1", RangeRequest(0, 10), buf, 64)])


# --- LocalStore.get_many_into (Zarr stores on disk) ---------------------------------------------


def _local_raw_array(tmp_path, chunks=(4, 50), compressors=None):
    data = np.arange(40 * 50, dtype="<f8").reshape(40, 50) * 1.5
    a = chunkref.create_array(str(tmp_path / "a.zarr"), shape=data.shape, dtype=data.dtype, chunks=chunks,
                              compressors=compressors, fill_value=-1)
    a[...] = data
    return data, chunkref.open_array(str(tmp_path / "a.zarr"), mode="r")


def test_local_store_direct_reads_match(tmp_path):
    from chunkref.storage.local import LocalStore

    data, arr = _local_raw_array(tmp_path)
    assert isinstance(arr._store, LocalStore)
    calls = []
    orig = arr._store.get_many_into
    arr._store.get_many_into = lambda reqs: calls.append(len(reqs)) or orig(reqs)
    for sel in [(...,), (7,), (slice(3, 29),), (5, slice(10, 20)), (slice(None), 3), (slice(None, None, -3),),
                ([1, 30], slice(None)), (np.arange(40) % 3 == 0,)]:
        np.testing.assert_array_equal(arr[sel], data[sel], err_msg=str(sel))
    assert calls


def test_local_store_direct_read_checks_size_and_absence(tmp_path):
    from chunkref.storage.base import RangeRequest

    data, arr = _local_raw_array(tmp_path)
    chunk_file = tmp_path / "a.zarr" / "c" / "2" / "0"
    chunk_file.write_bytes(chunk_file.read_bytes() + b"xx")
    np.testing.assert_array_equal(arr[0:8], data[0:8])
    with pytest.raises(ChunkDecodeError, match=r"c/2/0.*1602 bytes, expected 1600"):
        arr[9]
    chunk_file.unlink()
    got = arr[8:12]
    assert (got == -1).all()
    with config.set({"array.read_missing_chunks": False}):
        with pytest.raises(chunkref.errors.ChunkNotFoundError, match="c/2/0"):
            arr[8:12]
    store = arr._store
    buf = np.zeros(10, np.uint8)
    with pytest.raises(ShortReadError, match="c/0/0"):
        store.get_many_into([("c/0/0", RangeRequest(1595, 1605), buf, None)])
    with pytest.raises(ShortReadError, match="c/0/0"):
        store.get_many_into([("c/0/0", None, buf, None)])
    with pytest.raises(chunkref.errors.InvalidArgumentError, match="c/0/0"):
        store.get_many_into([("c/0/0", None, b"read-only", None)])
    with pytest.raises(chunkref.errors.InvalidKeyError):
        store.get_many_into([("../x", None, buf, None)])
    assert store.get_many_into([("c/0/0", RangeRequest(0, 10), buf, 1600), ("c/9/9", None, buf, None)]) == [True, False]


def test_local_store_compressed_arrays_do_not_take_the_direct_path(tmp_path):
    data, arr = _local_raw_array(tmp_path, compressors=({"name": "zstd", "configuration": {"level": 1}},))
    arr._store.get_many_into = None  # would fail if called
    np.testing.assert_array_equal(arr[...], data)


def test_scanned_netcdf_chain_takes_the_fused_path(tmp_path):
    netCDF4 = pytest.importorskip("netCDF4")
    path = tmp_path / "t.nc"
    data = np.random.default_rng(9).random((4, 10, 12)).astype("f4")
    with netCDF4.Dataset(path, "w") as ds:
        for name, n in zip("tyx", data.shape):
            ds.createDimension(name, n)
        v = ds.createVariable("tas", "f4", ("t", "y", "x"), zlib=True, complevel=4, shuffle=True, chunksizes=(2, 5, 12))
        v[:] = data
    arr = chunkref.open(chunkref.scan(str(path)))["tas"]
    spec = ChunkSpec((2, 5, 12), np.dtype("f4"), 0)
    assert arr.codec_pipeline._plan(spec, config.get("codec.max_decoded_bytes")).unshuffle == 4
    np.testing.assert_array_equal(arr[...], data)
    np.testing.assert_array_equal(arr[1:3, 2:9, 5], data[1:3, 2:9, 5])


def test_local_reads_across_many_sources_hold_few_descriptors(tmp_path):
    """A call touching more files than the descriptor limit allows still works: sources are
    opened one at a time per batch."""
    resource = pytest.importorskip("resource")
    from chunkref.manifest import ChunkTable, Manifest
    from chunkref.reference import ReferenceStore

    n = 300
    m = Manifest(location=str(tmp_path / "refs.json"))
    t = ChunkTable.empty((n,))
    for i in range(n):
        (tmp_path / f"f{i}.bin").write_bytes(i.to_bytes(4, "little") * 4)
        t.set_ref((i,), m.add_source(str(tmp_path / f"f{i}.bin")), 4, 8)
    doc = {
        "zarr_format": 3, "node_type": "array", "shape": [2 * n], "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
    }
    m.add_array("a", {"zarr.json": doc}, t)
    s = ReferenceStore(m)
    arr = chunkref.open(m)["a"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 64
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, in_use + 100), hard))
    try:
        got = s.get_many([(f"a/c/{i}", None) for i in range(n)])
        np.testing.assert_array_equal(arr[...], np.repeat(np.arange(n, dtype="<i4"), 2))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert got == [i.to_bytes(4, "little") * 2 for i in range(n)]
