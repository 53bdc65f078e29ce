"""Interoperability with tensorstore (``zarr`` v2 and ``zarr3`` drivers), both directions.

tensorstore handles arrays only (no groups) and numeric dtypes only (no strings), so the matrix
is numeric dtypes x codecs x key encodings x layouts.  Its compact metadata forms are part of
the test: ``chunk_key_encoding`` without configuration, no ``attributes``, v2 ``fill_value:
null`` with the ``shuffle: -1`` blosc default, absent ``index_location`` in sharding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import chunkref

ts = pytest.importorskip("tensorstore")

NUMERIC = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "complex64", "complex128"]  # fmt: skip


def spec(driver: str, path, **extra) -> dict:
    return {"driver": driver, "kvstore": {"driver": "file", "path": str(path)}, **extra}


def values(dtype: str, shape=(7, 5)) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "b":
        return (np.arange(n) % 3 == 1).reshape(shape)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        v = (np.arange(n, dtype=np.int64) * 37 % 251).astype(dt)
        v[0], v[1] = info.min, info.max
        return v.reshape(shape)
    v = np.linspace(-3, 3, n).astype(dt)
    v[0] = np.nan
    v[1] = -np.inf
    v[2] = -0.0
    return v.reshape(shape)


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


def ts_read(path, driver: str) -> np.ndarray:
    return ts.open(spec(driver, path), open=True, read=True).result().read().result()


# -- tensorstore writes, chunkref reads -----------------------------------------------------------

V3_CODECS = {
    "default": None,  # tensorstore: bytes only
    "gzip": [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "gzip", "configuration": {"level": 3}},
    ],
    "zstd": [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "zstd", "configuration": {"level": 1}},
    ],
    "blosc": [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {
            "name": "blosc",
            "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 4},
        },
    ],
    "crc32c": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
    "big-endian": [{"name": "bytes", "configuration": {"endian": "big"}}],
    "transpose": [
        {"name": "transpose", "configuration": {"order": [1, 0]}},
        {"name": "bytes", "configuration": {"endian": "little"}},
    ],
    "sharded": [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [2, 2],
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd"}],
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"},
                ],
            },
        }
    ],
}


@pytest.mark.parametrize("dtype", NUMERIC)
def test_v3_dtypes_tensorstore_to_chunkref(tmp_path, dtype) -> None:
    v = values(dtype)
    meta = {"shape": list(v.shape), "data_type": dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [3, 2]}}}  # fmt: skip
    t = ts.open(spec("zarr3", tmp_path, metadata=meta), create=True).result()
    t[1:, :] = v[1:, :]
    doc = json.loads((tmp_path / "zarr.json").read_text())
    assert doc["chunk_key_encoding"] == {"name": "default"} and "attributes" not in doc  # compact forms
    a = chunkref.open_array(str(tmp_path), mode="r")
    assert a.dtype == np.dtype(dtype) and a.shape == v.shape and a.chunks == (3, 2)
    expected = t.read().result()
    assert bits(a[...]) == bits(expected)
    assert bits(a[2:, ::-2]) == bits(expected[2:, ::-2])


@pytest.mark.parametrize("codecs", list(V3_CODECS), ids=list(V3_CODECS))
def test_v3_codecs_tensorstore_to_chunkref(tmp_path, codecs) -> None:
    v = values("int32", (8, 6))
    meta = {"shape": [8, 6], "data_type": "int32", "fill_value": -7,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 4]}}}  # fmt: skip
    if V3_CODECS[codecs] is not None:
        meta["codecs"] = V3_CODECS[codecs]
    t = ts.open(spec("zarr3", tmp_path, metadata=meta), create=True).result()
    t[:7, 1:] = v[:7, 1:]
    a = chunkref.open_array(str(tmp_path), mode="r")
    assert a.fill_value == -7
    expected = t.read().result()
    np.testing.assert_array_equal(a[...], expected)
    np.testing.assert_array_equal(a.oindex[[7, 0, 3], [5, 0]], expected[np.ix_([7, 0, 3], [5, 0])])
    if codecs == "sharded":
        assert a.shards == (4, 4) and a.chunks == (2, 2)


@pytest.mark.parametrize("separator", ["/", "."])
@pytest.mark.parametrize("encoding", ["default", "v2"])
def test_v3_key_encodings_tensorstore_to_chunkref(tmp_path, encoding, separator) -> None:
    meta = {"shape": [5, 5], "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 2]}},
            "chunk_key_encoding": {"name": encoding, "configuration": {"separator": separator}}}  # fmt: skip
    t = ts.open(spec("zarr3", tmp_path, metadata=meta), create=True).result()
    t[...] = np.arange(25, dtype="u1").reshape(5, 5)
    a = chunkref.open_array(str(tmp_path), mode="r")
    np.testing.assert_array_equal(a[...], np.arange(25).reshape(5, 5))


V2_COMPRESSORS = {
    "default-blosc": None,  # tensorstore default: blosc lz4 shuffle -1, fill_value null
    "zlib": {"id": "zlib", "level": 3},
    "zstd": {"id": "zstd", "level": 2},
    "bz2": {"id": "bz2", "level": 1},
    "raw": "raw",
}


@pytest.mark.parametrize("dtype", NUMERIC)
def test_v2_dtypes_tensorstore_to_chunkref(tmp_path, dtype) -> None:
    v = values(dtype)
    dt = np.dtype(dtype)
    meta = {"shape": list(v.shape), "chunks": [3, 2], "dtype": dt.str}
    t = ts.open(spec("zarr", tmp_path, metadata=meta), create=True).result()
    t[...] = v
    doc = json.loads((tmp_path / ".zarray").read_text())
    assert doc["fill_value"] is None and doc["compressor"]["shuffle"] == -1
    a = chunkref.open_array(str(tmp_path), mode="r")
    assert a.zarr_format == 2 and a.dtype == dt and a.fill_value is None
    assert bits(a[...]) == bits(v)


@pytest.mark.parametrize("compressor", list(V2_COMPRESSORS), ids=list(V2_COMPRESSORS))
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("separator", [".", "/"])
def test_v2_layouts_tensorstore_to_chunkref(tmp_path, compressor, order, separator) -> None:
    v = values("<f8", (6, 5, 4))
    meta = {"shape": [6, 5, 4], "chunks": [4, 2, 3], "dtype": "<f8", "order": order,
            "dimension_separator": separator, "fill_value": 1.5}  # fmt: skip
    comp = V2_COMPRESSORS[compressor]
    if comp == "raw":
        meta["compressor"] = None
    elif comp is not None:
        meta["compressor"] = comp
    t = ts.open(spec("zarr", tmp_path, metadata=meta), create=True).result()
    t[:5] = v[:5]
    a = chunkref.open_array(str(tmp_path), mode="r")
    assert a.fill_value == 1.5
    assert bits(a[...]) == bits(t.read().result())


def test_v2_big_endian_tensorstore_to_chunkref(tmp_path) -> None:
    v = values(">i4")
    t = ts.open(
        spec("zarr", tmp_path, metadata={"shape": [7, 5], "chunks": [4, 4], "dtype": ">i4"}), create=True
    ).result()
    t[...] = v
    a = chunkref.open_array(str(tmp_path), mode="r")
    assert a.dtype == np.dtype(">i4")
    np.testing.assert_array_equal(a[...], v)


# -- chunkref writes, tensorstore reads ------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", NUMERIC)
def test_dtypes_chunkref_to_tensorstore(tmp_path, dtype, zarr_format) -> None:
    v = values(dtype)
    fill = {"bool": True, "float64": np.nan, "uint64": 2**64 - 1, "int64": -(2**63)}.get(dtype, 0)
    a = chunkref.create_array(
        str(tmp_path), shape=v.shape, chunks=(3, 2), dtype=dtype, zarr_format=zarr_format, fill_value=fill
    )
    a[1:, :] = v[1:, :]
    expected = a[...]
    out = ts_read(tmp_path, "zarr3" if zarr_format == 3 else "zarr")
    assert out.dtype == np.dtype(dtype)
    assert bits(out) == bits(expected)


CR_V3 = {
    "default-zstd": {},
    "none": {"compressors": None},
    "gzip": {"compressors": [{"name": "gzip", "configuration": {"level": 6}}]},
    "blosc": {
        "compressors": [
            {
                "name": "blosc",
                "configuration": {
                    "cname": "zstd",
                    "clevel": 3,
                    "shuffle": "bitshuffle",
                    "typesize": 2,
                    "blocksize": 0,
                },
            }
        ]
    },
    "crc32c": {"compressors": [{"name": "crc32c"}]},
    "transpose": {"filters": [{"name": "transpose", "configuration": {"order": [1, 0]}}]},
    "dot-keys": {"chunk_key_encoding": {"name": "default", "separator": "."}},
    "v2-keys": {"chunk_key_encoding": {"name": "v2", "separator": "/"}},
    "sharded": {"shards": (4, 6), "chunks": (2, 3)},
}


@pytest.mark.parametrize("case", list(CR_V3), ids=list(CR_V3))
def test_v3_codecs_chunkref_to_tensorstore(tmp_path, case) -> None:
    kwargs = dict(CR_V3[case])
    chunks = kwargs.pop("chunks", (3, 4))
    v = values("int16", (9, 7))
    a = chunkref.create_array(
        str(tmp_path), shape=(9, 7), chunks=chunks, dtype="int16", fill_value=-1, **kwargs
    )
    a[...] = v
    a[0:2, 0:3] = -1  # an all-fill chunk: deleted (or an empty inner chunk when sharded)
    expected = a[...]
    np.testing.assert_array_equal(ts_read(tmp_path, "zarr3"), expected)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize(
    "compressor",
    [
        None,
        {"id": "zlib", "level": 1},
        {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": -1, "blocksize": 0},
    ],
)
@pytest.mark.parametrize("separator", [".", "/"])
def test_v2_layouts_chunkref_to_tensorstore(tmp_path, order, compressor, separator) -> None:
    v = values("<u4", (6, 5, 4))
    a = chunkref.create_array(
        str(tmp_path), shape=(6, 5, 4), chunks=(4, 2, 3), dtype="<u4", zarr_format=2, order=order,
        compressors=compressor, chunk_key_encoding={"name": "v2", "separator": separator}, fill_value=None,
    )  # fmt: skip
    a[...] = v
    np.testing.assert_array_equal(ts_read(tmp_path, "zarr"), v)


def test_tensorstore_resizes_chunkref_array(tmp_path) -> None:
    """Both writers on one array: tensorstore grows it, chunkref sees the new shape and data."""
    a = chunkref.create_array(str(tmp_path), shape=(4, 4), chunks=(2, 2), dtype="f4", compressors=None)
    a[...] = 1
    t = ts.open(spec("zarr3", tmp_path), open=True).result()
    t = t.resize(exclusive_max=[6, 4]).result()
    t[4:6] = 2
    b = chunkref.open_array(str(tmp_path), mode="r")
    assert b.shape == (6, 4)
    np.testing.assert_array_equal(b[...], np.concatenate([np.ones((4, 4)), np.full((2, 4), 2)]).astype("f4"))
