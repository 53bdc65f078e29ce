"""Codec output equals zarr-python 3.1.6's, byte for byte; each side decodes the other's chunks.

zarr-python writes an array into a MemoryStore; we parse its ``zarr.json`` codecs with
``CodecPipeline.from_v3``, encode the same chunk and compare the stored bytes, and decode its
bytes.  For v2 we compare against numcodecs chains the same way.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
from zarr.storage import MemoryStore  # noqa: E402

from chunkref.zarr.codecs import ChunkSpec, CodecPipeline  # noqa: E402


def _zarr_array(data, chunks, zarr_format=3, **kwargs):
    store = MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = zarr.create_array(
            store=store,
            shape=data.shape,
            chunks=chunks,
            dtype=kwargs.pop("dtype", data.dtype),
            zarr_format=zarr_format,
            **kwargs,
        )
        arr[...] = data
    return store._store_dict


def _first_chunk(data, chunks):
    return data[tuple(slice(0, c) for c in chunks)]


V3_CASES = {
    "bytes-le": dict(dtype="<i4", kw=dict(compressors=None)),
    "bytes-u1": dict(dtype="u1", kw=dict(compressors=None)),
    "bytes-big": dict(dtype="<f8", kw=dict(compressors=None, serializer=zarr.codecs.BytesCodec(endian="big"))),
    "transpose": dict(
        dtype="<u2", kw=dict(compressors=None, filters=[zarr.codecs.TransposeCodec(order=(1, 0, 2))])
    ),
    "zstd": dict(dtype="<i8", kw=dict(compressors=[zarr.codecs.ZstdCodec(level=3)])),
    "zstd-checksum": dict(dtype="<i8", kw=dict(compressors=[zarr.codecs.ZstdCodec(level=1, checksum=True)])),
    "blosc-default": dict(dtype="<i4", kw=dict(compressors=[zarr.codecs.BloscCodec()])),
    "blosc-lz4-bitshuffle": dict(
        dtype="<f4", kw=dict(compressors=[zarr.codecs.BloscCodec(cname="lz4", clevel=3, shuffle="bitshuffle")])
    ),
    "blosc-u1": dict(dtype="u1", kw=dict(compressors=[zarr.codecs.BloscCodec(cname="zlib")])),
    "crc32c": dict(dtype="<u4", kw=dict(compressors=[zarr.codecs.Crc32cCodec()])),
    "zstd+crc32c": dict(
        dtype="<i2", kw=dict(compressors=[zarr.codecs.ZstdCodec(level=0), zarr.codecs.Crc32cCodec()])
    ),
}


@pytest.mark.parametrize("case", sorted(V3_CASES))
def test_v3_chunk_bytes_equal_zarr_python(case):
    dtype = np.dtype(V3_CASES[case]["dtype"])
    shape, chunks = (12, 10, 6), (6, 5, 6)
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 50, size=shape) * 3).astype(dtype)
    stored = _zarr_array(data, chunks, **V3_CASES[case]["kw"])
    meta = json.loads(stored["zarr.json"].to_bytes())
    pipe = CodecPipeline.from_v3(meta["codecs"], dtype, chunks)
    # Our JSON round-trips theirs exactly (after their own evolution).
    assert pipe.to_json() == meta["codecs"]
    spec = ChunkSpec(chunks, dtype, 0)
    theirs = stored["c/0/0/0"].to_bytes()
    chunk = _first_chunk(data, chunks)
    assert pipe.encode(chunk, spec) == theirs
    np.testing.assert_array_equal(pipe.decode(theirs, spec), chunk)


def test_v3_gzip_decodable_both_ways():
    data = np.arange(600, dtype="<f8").reshape(20, 30)
    stored = _zarr_array(data, (10, 10), compressors=[zarr.codecs.GzipCodec(level=6)])
    meta = json.loads(stored["zarr.json"].to_bytes())
    assert meta["codecs"][1] == {"name": "gzip", "configuration": {"level": 6}}
    pipe = CodecPipeline.from_v3(meta["codecs"], data.dtype, (10, 10))
    spec = ChunkSpec((10, 10), data.dtype, 0)
    theirs = stored["c/1/2"].to_bytes()
    np.testing.assert_array_equal(pipe.decode(theirs, spec), data[10:20, 20:30])
    ours = pipe.encode(data[10:20, 20:30], spec)
    assert ours[:2] == b"\x1f\x8b"  # a gzip container, not zlib
    their_codec = zarr.codecs.GzipCodec(level=6)._gzip_codec
    assert bytes(their_codec.decode(ours)) == data[10:20, 20:30].tobytes()


@pytest.mark.parametrize("codec", ["vlen-utf8", "vlen-bytes"])
def test_v3_vlen_bytes_equal_zarr_python(codec):
    if codec == "vlen-utf8":
        data = np.array(["", "a", "héllo", "wörld" * 7, "x", "🙂", "z", "end"], dtype=object).reshape(2, 4)
        dtype = str
    else:
        data = np.array([b"", b"a", b"\x00\xff", b"abc" * 9, b"x", b"y", b"z", b"w"], dtype=object).reshape(2, 4)
        dtype = zarr.dtype.VariableLengthBytes()
    store = MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = zarr.create_array(store=store, shape=(2, 4), chunks=(2, 4), dtype=dtype)
        arr[...] = data
    stored = store._store_dict
    meta = json.loads(stored["zarr.json"].to_bytes())
    assert meta["codecs"][0]["name"] == codec
    pipe = CodecPipeline.from_v3(meta["codecs"], object, (2, 4))
    spec = ChunkSpec((2, 4), np.dtype(object), None)
    theirs = stored["c/0/0"].to_bytes()
    assert pipe.encode(data, spec) == theirs
    np.testing.assert_array_equal(pipe.decode(theirs, spec), data)


def test_v3_numcodecs_delta_chain_equal_zarr_python():
    import zarr.codecs.numcodecs as znc

    data = np.cumsum(np.arange(100, dtype="<i4")).astype("<i4").reshape(10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = _zarr_array(
            data, (5, 10), filters=[znc.Delta(dtype="<i4")], compressors=[znc.Zlib(level=1)]
        )
    meta = json.loads(stored["zarr.json"].to_bytes())
    names = [c["name"] for c in meta["codecs"]]
    assert names == ["numcodecs.delta", "bytes", "numcodecs.zlib"]
    pipe = CodecPipeline.from_v3(meta["codecs"], data.dtype, (5, 10))
    assert pipe.to_json() == meta["codecs"]
    spec = ChunkSpec((5, 10), data.dtype, 0)
    theirs = stored["c/1/0"].to_bytes()
    np.testing.assert_array_equal(pipe.decode(theirs, spec), data[5:])
    assert pipe.encode(data[5:], spec) == theirs


V2_CASES = {
    "zstd": dict(compressors=[__import__("numcodecs").Zstd(level=1)], filters=None),
    "blosc": dict(compressors=[__import__("numcodecs").Blosc(cname="lz4", clevel=5, shuffle=1)], filters=None),
    "zlib+delta": dict(
        compressors=[__import__("numcodecs").Zlib(level=4)], filters=[__import__("numcodecs").Delta(dtype="<i4")]
    ),
    "none": dict(compressors=None, filters=None),
}


@pytest.mark.parametrize("case", sorted(V2_CASES))
@pytest.mark.parametrize("order", ["C", "F"])
def test_v2_chunk_bytes_equal_zarr_python(case, order):
    data = (np.arange(12 * 10, dtype="<i4").reshape(12, 10) % 17) * 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = _zarr_array(data, (6, 5), zarr_format=2, order=order, **V2_CASES[case])
    meta = json.loads(stored[".zarray"].to_bytes())
    assert meta["order"] == order
    pipe = CodecPipeline.from_v2(meta["compressor"], meta["filters"], np.dtype(meta["dtype"]), meta["order"], (6, 5))
    spec = ChunkSpec((6, 5), np.dtype("<i4"), 0)
    theirs = stored["1.1"].to_bytes()
    chunk = data[6:12, 5:10]
    np.testing.assert_array_equal(pipe.decode(theirs, spec), chunk)
    assert pipe.encode(chunk, spec) == theirs
    assert pipe.to_v2_json() == (meta["compressor"], meta["filters"])


def test_v2_vlen_utf8_object_filter_equal_zarr_python():
    data = np.array(["a", "bb", "", "dddd"], dtype=object).reshape(2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = _zarr_array(data, (2, 2), zarr_format=2, dtype=str)
    meta = json.loads(stored[".zarray"].to_bytes())
    pipe = CodecPipeline.from_v2(meta["compressor"], meta["filters"], np.dtype("O"), meta["order"])
    spec = ChunkSpec((2, 2), np.dtype("O"), "")
    theirs = stored["0.0"].to_bytes()
    np.testing.assert_array_equal(pipe.decode(theirs, spec), data)
    assert pipe.encode(data, spec) == theirs
