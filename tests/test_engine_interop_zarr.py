"""Interoperability with zarr-python 3.1.6, both directions, on disk (LocalStore directories).

Every case is generated here: one library writes a directory, the other opens it and must see
the same values (bit for bit), dtype, fill value, attributes, dimension names and chunking.
Matrix: v2 and v3; every dtype zarr-python supports; codecs (gzip, zlib, zstd, blosc variants,
bz2, lz4, crc32c, numcodecs.* filters); both key separators; F order (v2 ``order``, v3
``transpose``); special fill values; attributes; consolidated metadata; hierarchies.
"""

from __future__ import annotations

import json

import numcodecs
import numpy as np
import pytest

import chunkref

zarr = pytest.importorskip("zarr")
if not zarr.__version__.startswith("3."):
    pytest.skip("these tests target zarr-python 3.x", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::FutureWarning", "ignore::RuntimeWarning"
)


# -- helpers ---------------------------------------------------------------------------------------


def zstore(path):
    return zarr.storage.LocalStore(str(path))


def as_numpy(values, dtype) -> np.ndarray:
    """zarr-python returns vlen strings as StringDType arrays; compare them as objects."""
    values = np.asarray(values)
    if dtype.kind == "O" or values.dtype.kind == "T":
        return values.astype(object)
    return values


def assert_same_values(actual, expected) -> None:
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape
    if expected.dtype.kind in "OT" or actual.dtype.kind in "OT":
        assert actual.astype(object).tolist() == expected.astype(object).tolist()
        return
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes(), (
        actual,
        expected,
    )


def same_fill(a, b, dtype: np.dtype) -> bool:
    """Fill values equal bit for bit (NaN payloads and -0.0 included)."""
    if dtype.kind == "O":
        return a == b
    return np.array(a, dtype=dtype).tobytes() == np.array(b, dtype=dtype).tobytes()


# -- dtypes ----------------------------------------------------------------------------------------

STRUCT = [("a", "<i4"), ("b", "<f8"), ("c", "S2")]


def values_for(dtype_spec, shape=(5, 4)) -> np.ndarray:
    """Deterministic values with the awkward ones in them."""
    rng = np.random.default_rng(42)
    n = int(np.prod(shape))
    if dtype_spec in (str, "str"):
        out = np.empty(n, dtype=object)
        out[:] = [["", "a", "bé", "中文", "\U0001f600x"][i % 5] * (i % 3) for i in range(n)]
        return out.reshape(shape)
    if dtype_spec is bytes:
        out = np.empty(n, dtype=object)
        out[:] = [bytes([i % 7]) * (i % 4) for i in range(n)]
        return out.reshape(shape)
    dt = np.dtype(dtype_spec)
    if dt.fields:
        out = np.zeros(n, dtype=dt)
        out["a"] = np.arange(n) - 3
        out["b"] = rng.standard_normal(n)
        out["c"] = [b"xy"[: i % 3] for i in range(n)]
        return out.reshape(shape)
    if dt.kind == "b":
        return (np.arange(n) % 3 == 0).reshape(shape)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        v = rng.integers(info.min, info.max, size=n, endpoint=True, dtype=dt.newbyteorder("="))
        v[:2] = [info.min, info.max]
        return v.astype(dt).reshape(shape)
    if dt.kind == "f":
        v = (rng.standard_normal(n) * 1000).astype(dt)
        v[:4] = [np.nan, np.inf, -np.inf, -0.0]
        return v.reshape(shape)
    if dt.kind == "c":
        v = np.empty(n, dtype=dt)
        v.real = rng.standard_normal(n)
        v.imag = rng.standard_normal(n)
        v[0] = complex(np.nan, np.inf)
        return v.reshape(shape)
    if dt.kind in "mM":
        v = rng.integers(-(10**9), 10**9, size=n).astype(dt)
        v[0] = np.array("NaT", dtype=dt)
        return v.reshape(shape)
    if dt.kind == "S":
        return np.array([b"abcdef"[: i % (dt.itemsize + 1)] for i in range(n)], dtype=dt).reshape(shape)
    if dt.kind == "U":
        return np.array(["aé中z"[: i % (dt.itemsize // 4 + 1)] for i in range(n)], dtype=dt).reshape(shape)
    raise AssertionError(dt)


# (id, dtype, fill_value or "default")
DTYPE_CASES = [
    ("bool", "bool", True),
    ("i1", "i1", -5),
    ("i2", "i2", "default"),
    ("i4", "i4", 2**31 - 1),
    ("i8", "i8", -(2**63)),
    ("u1", "u1", 255),
    ("u2", "u2", "default"),
    ("u4", "u4", 7),
    ("u8", "u8", 2**64 - 1),
    ("f2", "f2", np.nan),
    ("f4", "f4", -np.inf),
    ("f8", "f8", np.nan),
    ("f8-inf", "f8", np.inf),
    ("f8-negzero", "f8", -0.0),
    ("c8", "c8", complex(1, -2)),
    ("c16", "c16", complex(np.nan, np.inf)),
    ("M8[ns]", "M8[ns]", "default"),  # NaT
    ("M8[s]-NaT", "M8[s]", np.datetime64("NaT", "s")),
    ("M8[D]", "M8[D]", np.datetime64("2001-02-03")),
    ("m8[ms]", "m8[ms]", np.timedelta64(5, "ms")),
    ("S5", "S5", b"ab"),
    ("U4", "U4", "zz"),
    ("str", str, "default"),
    ("str-fill", str, "fill"),
    ("bytes", bytes, "default"),
    ("struct", STRUCT, "default"),
    ("i4-be", ">i4", 3),
    ("f8-be", ">f8", 1.5),
]


def fill_arg(fill):
    return {} if isinstance(fill, str) and fill == "default" else {"fill_value": fill}


def check_read(cr_arr, expected_values, *, fill, dtype_spec, attrs=None) -> None:
    """A chunkref array matches what zarr-python wrote."""
    assert_same_values(as_numpy(cr_arr[...], cr_arr.dtype), as_numpy(expected_values, cr_arr.dtype))
    if attrs is not None:
        assert dict(cr_arr.attrs) == attrs


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("case_id, dtype_spec, fill", DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
def test_dtypes_zarr_python_to_chunkref(tmp_path, zarr_format, case_id, dtype_spec, fill) -> None:
    values = values_for(dtype_spec)
    # zarr-python reads ``bytes`` as numpy's zero-length "S0"; vlen bytes have their own dtype.
    zp_dtype = zarr.dtype.VariableLengthBytes() if dtype_spec is bytes else dtype_spec
    z = zarr.create_array(
        zstore(tmp_path), name="arr", shape=values.shape, chunks=(2, 3), dtype=zp_dtype, zarr_format=zarr_format,
        attributes={"case": case_id, "n": [1, 2.5, None]}, **fill_arg(fill),
    )  # fmt: skip
    z[1:, :] = values[1:, :]  # row 0 stays fill (chunks (0, *) are partly written)
    expected = np.asarray(z[...])
    a = chunkref.open_array(str(tmp_path), path="arr", mode="r")
    assert a.zarr_format == zarr_format
    assert a.shape == z.shape and a.chunks == z.chunks
    zd = z.dtype.to_native_dtype() if hasattr(z.dtype, "to_native_dtype") else np.dtype(z.dtype)
    if dtype_spec in (str, bytes):
        assert a.dtype == np.dtype(object)
    elif zarr_format == 3:
        # v3 data types have no byte order (the bytes codec has it): arrays read as native.
        assert a.dtype == zd.newbyteorder("="), (a.dtype, zd)
        expected = expected.astype(a.dtype)
    else:
        assert a.dtype == zd, (a.dtype, zd)
    assert same_fill(a.fill_value, z.fill_value, a.dtype), (a.fill_value, z.fill_value)
    check_read(a, expected, fill=fill, dtype_spec=dtype_spec, attrs={"case": case_id, "n": [1, 2.5, None]})
    # A selection that crosses partial edge chunks.
    assert_same_values(as_numpy(a[3:, 1::2], a.dtype), as_numpy(expected[3:, 1::2], a.dtype))


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("case_id, dtype_spec, fill", DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
def test_dtypes_chunkref_to_zarr_python(tmp_path, zarr_format, case_id, dtype_spec, fill) -> None:
    values = values_for(dtype_spec)
    a = chunkref.create_array(
        str(tmp_path), name="arr", shape=values.shape, chunks=(2, 3), dtype=dtype_spec,
        attributes={"case": case_id}, zarr_format=zarr_format, **fill_arg(fill),
    )  # fmt: skip
    a[1:, :] = values[1:, :]
    expected = a[...]
    z = zarr.open_array(zstore(tmp_path), path="arr", mode="r")
    assert z.metadata.zarr_format == zarr_format
    assert z.shape == a.shape and z.chunks == a.chunks
    assert dict(z.attrs) == {"case": case_id}
    assert same_fill(z.fill_value, a.fill_value, a.dtype), (z.fill_value, a.fill_value)
    assert_same_values(as_numpy(z[...], a.dtype), as_numpy(expected, a.dtype))
    if not (isinstance(fill, str) and fill == "default") and dtype_spec not in (str, bytes):
        row0 = np.asarray(z[0, :])
        assert all(same_fill(v, a.fill_value, a.dtype) for v in row0.astype(a.dtype))


# -- codecs ----------------------------------------------------------------------------------------

# (id, zarr_format, chunkref kwargs (JSON), zarr-python kwargs (objects), dtype)
CODEC_CASES = [
    ("v3-none", 3, {"compressors": None}, {"compressors": None}, "i4"),
    ("v3-gzip", 3, {"compressors": [{"name": "gzip", "configuration": {"level": 5}}]}, None, "f8"),
    (
        "v3-zstd",
        3,
        {"compressors": [{"name": "zstd", "configuration": {"level": 3, "checksum": True}}]},
        None,
        "u2",
    ),
    (
        "v3-blosc-lz4-shuffle",
        3,
        {
            "compressors": [
                {
                    "name": "blosc",
                    "configuration": {
                        "cname": "lz4",
                        "clevel": 5,
                        "shuffle": "shuffle",
                        "typesize": 4,
                        "blocksize": 0,
                    },
                }
            ]
        },
        None,
        "f4",
    ),
    (
        "v3-blosc-zstd-bitshuffle",
        3,
        {
            "compressors": [
                {
                    "name": "blosc",
                    "configuration": {
                        "cname": "zstd",
                        "clevel": 3,
                        "shuffle": "bitshuffle",
                        "typesize": 8,
                        "blocksize": 0,
                    },
                }
            ]
        },
        None,
        "i8",
    ),
    (
        "v3-blosc-noshuffle",
        3,
        {
            "compressors": [
                {
                    "name": "blosc",
                    "configuration": {
                        "cname": "blosclz",
                        "clevel": 1,
                        "shuffle": "noshuffle",
                        "blocksize": 0,
                    },
                }
            ]
        },
        None,
        "u1",
    ),
    ("v3-crc32c", 3, {"compressors": [{"name": "crc32c"}]}, None, "i2"),
    (
        "v3-gzip-crc32c",
        3,
        {"compressors": [{"name": "gzip", "configuration": {"level": 1}}, {"name": "crc32c"}]},
        None,
        "i2",
    ),
    (
        "v3-transpose-F",
        3,
        {"filters": [{"name": "transpose", "configuration": {"order": [1, 0]}}]},
        None,
        "f8",
    ),
    ("v3-bytes-big", 3, {"serializer": {"name": "bytes", "configuration": {"endian": "big"}}}, None, "i4"),
    (
        "v3-numcodecs-delta",
        3,
        {"filters": [{"name": "numcodecs.delta", "configuration": {"dtype": "<i4"}}], "compressors": None},
        None,
        "i4",
    ),
    (
        "v3-numcodecs-fixedscaleoffset",
        3,
        {
            "filters": [
                {
                    "name": "numcodecs.fixedscaleoffset",
                    "configuration": {"offset": 0, "scale": 10, "dtype": "<f8", "astype": "<i4"},
                }
            ]
        },
        None,
        "f8",
    ),
    (
        "v3-numcodecs-bitround",
        3,
        {"filters": [{"name": "numcodecs.bitround", "configuration": {"keepbits": 8}}]},
        None,
        "f4",
    ),
    (
        "v3-numcodecs-zlib",
        3,
        {"compressors": [{"name": "numcodecs.zlib", "configuration": {"level": 4}}]},
        None,
        "i4",
    ),
    (
        "v3-numcodecs-bz2",
        3,
        {"compressors": [{"name": "numcodecs.bz2", "configuration": {"level": 1}}]},
        None,
        "i4",
    ),
    ("v3-sep-dot", 3, {"chunk_key_encoding": {"name": "default", "separator": "."}}, None, "i4"),
    ("v3-v2-keys", 3, {"chunk_key_encoding": {"name": "v2", "separator": "."}}, None, "i4"),
    ("v2-none", 2, {"compressors": None}, None, "i4"),
    ("v2-gzip", 2, {"compressors": {"id": "gzip", "level": 5}}, None, "f8"),
    ("v2-zlib", 2, {"compressors": {"id": "zlib", "level": 1}}, None, "i2"),
    ("v2-zstd", 2, {"compressors": {"id": "zstd", "level": 3}}, None, "u4"),
    ("v2-bz2", 2, {"compressors": {"id": "bz2", "level": 2}}, None, "u4"),
    ("v2-lz4", 2, {"compressors": {"id": "lz4", "acceleration": 1}}, None, "i8"),
    (
        "v2-blosc-lz4",
        2,
        {"compressors": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0}},
        None,
        "f4",
    ),
    (
        "v2-blosc-zstd-bit",
        2,
        {"compressors": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0}},
        None,
        "f8",
    ),
    (
        "v2-blosc-auto",
        2,
        {"compressors": {"id": "blosc", "cname": "lz4hc", "clevel": 5, "shuffle": -1, "blocksize": 0}},
        None,
        "i2",
    ),
    ("v2-crc32c", 2, {"compressors": {"id": "crc32c"}}, None, "i4"),
    (
        "v2-delta",
        2,
        {"filters": [{"id": "delta", "dtype": "<i4"}], "compressors": {"id": "zlib", "level": 1}},
        None,
        "i4",
    ),
    (
        "v2-fixedscaleoffset",
        2,
        {"filters": [{"id": "fixedscaleoffset", "offset": 0, "scale": 100, "dtype": "<f8", "astype": "<i4"}]},
        None,
        "f8",
    ),
    ("v2-bitround", 2, {"filters": [{"id": "bitround", "keepbits": 6}]}, None, "f4"),
    ("v2-shuffle", 2, {"filters": [{"id": "shuffle", "elementsize": 4}], "compressors": None}, None, "i4"),
    ("v2-order-F", 2, {"order": "F"}, None, "f8"),
    ("v2-order-F-3d", 2, {"order": "F", "compressors": {"id": "gzip", "level": 1}}, None, "i2"),
    ("v2-sep-slash", 2, {"chunk_key_encoding": {"name": "v2", "separator": "/"}}, None, "i4"),
]


def zarr_python_kwargs(zarr_format: int, cr_kwargs: dict) -> dict:
    """The same encoding as zarr-python wants it (numcodecs objects for v2)."""
    out = dict(cr_kwargs)
    if zarr_format == 2:
        if isinstance(out.get("compressors"), dict):
            out["compressors"] = numcodecs.get_codec(dict(out["compressors"]))
        if "filters" in out:
            out["filters"] = [numcodecs.get_codec(dict(f)) for f in out["filters"]]
    return out


def codec_values(dtype: str, shape) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    if dt.kind == "f":
        v = np.linspace(-50, 50, n).astype(dt)
        return v.reshape(shape)
    info = np.iinfo(dt)
    return (
        (np.arange(n) % min(1000, int(info.max)) + (info.min if info.min < 0 else 0) // 2)
        .astype(dt)
        .reshape(shape)
    )


def codec_shape(case_id: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if case_id.endswith("-3d"):
        return (6, 5, 4), (4, 2, 3)
    return (9, 7), (4, 3)


def expected_after_codec(case_id: str, values: np.ndarray) -> np.ndarray:
    """Lossy codecs: what the data becomes (computed with numcodecs itself)."""
    if "fixedscaleoffset" in case_id:
        scale = 10 if case_id.startswith("v3") else 100
        return (np.round(values * scale) / scale).astype(values.dtype)
    if "bitround" in case_id:
        keep = 8 if case_id.startswith("v3") else 6
        return (
            numcodecs.BitRound(keepbits=keep)
            .decode(numcodecs.BitRound(keepbits=keep).encode(values))
            .reshape(values.shape)
        )
    return values


@pytest.mark.parametrize(
    "case_id, zarr_format, cr_kwargs, _unused, dtype", CODEC_CASES, ids=[c[0] for c in CODEC_CASES]
)
def test_codecs_zarr_python_to_chunkref(tmp_path, case_id, zarr_format, cr_kwargs, _unused, dtype) -> None:
    shape, chunks = codec_shape(case_id)
    values = codec_values(dtype, shape)
    z = zarr.create_array(
        zstore(tmp_path), name="c", shape=shape, chunks=chunks, dtype=dtype, zarr_format=zarr_format,
        **zarr_python_kwargs(zarr_format, cr_kwargs),
    )  # fmt: skip
    z[...] = values
    expected = np.asarray(z[...])
    np.testing.assert_array_equal(expected, expected_after_codec(case_id, values))
    a = chunkref.open_array(str(tmp_path / "c"), mode="r")
    assert_same_values(a[...], expected)
    assert_same_values(a[1:-1:2, ::-1], expected[1:-1:2, ::-1])


@pytest.mark.parametrize(
    "case_id, zarr_format, cr_kwargs, _unused, dtype", CODEC_CASES, ids=[c[0] for c in CODEC_CASES]
)
def test_codecs_chunkref_to_zarr_python(tmp_path, case_id, zarr_format, cr_kwargs, _unused, dtype) -> None:
    shape, chunks = codec_shape(case_id)
    values = codec_values(dtype, shape)
    a = chunkref.create_array(
        str(tmp_path), name="c", shape=shape, chunks=chunks, dtype=dtype, zarr_format=zarr_format, **cr_kwargs
    )
    a[...] = values
    expected = expected_after_codec(case_id, values)
    assert_same_values(a[...], expected)
    z = zarr.open_array(zstore(tmp_path), path="c", mode="r")
    assert_same_values(np.asarray(z[...]), expected)
    # The same stored bytes: zarr-python re-encodes our chunk (0, 0) identically when it is
    # deterministic (no compressor or a fixed-level one) - a byte-level check of the layout.
    if case_id in ("v3-none", "v2-none", "v3-crc32c", "v2-order-F", "v3-transpose-F", "v3-bytes-big"):
        scratch = tmp_path / "zp"
        z2 = zarr.create_array(
            zstore(scratch), name="c", shape=shape, chunks=chunks, dtype=dtype, zarr_format=zarr_format,
            **zarr_python_kwargs(zarr_format, cr_kwargs),
        )  # fmt: skip
        z2[...] = values
        key_cr = sorted(p.relative_to(tmp_path) for p in (tmp_path / "c").rglob("*") if p.is_file())
        key_zp = sorted(p.relative_to(scratch) for p in (scratch / "c").rglob("*") if p.is_file())
        assert key_cr == key_zp
        for k in key_cr:
            if k.name in ("zarr.json", ".zarray", ".zattrs"):
                continue
            assert (tmp_path / k).read_bytes() == (scratch / k).read_bytes(), k


# -- metadata details ------------------------------------------------------------------------------


def test_dimension_names_and_attrs_both_ways(tmp_path) -> None:
    z = zarr.create_array(
        zstore(tmp_path / "a"), shape=(2, 3), dtype="f4", dimension_names=["y", None],
        attributes={"units": "K", "nested": {"x": [1, "two", None, True]}, "uni": "た"},
    )  # fmt: skip
    z.attrs["later"] = 1.5
    a = chunkref.open_array(str(tmp_path / "a"), mode="r")
    assert a.dimension_names == ("y", None)
    assert dict(a.attrs) == {"units": "K", "nested": {"x": [1, "two", None, True]}, "uni": "た", "later": 1.5}

    b = chunkref.create_array(str(tmp_path / "b"), shape=(2, 3), dtype="f4", dimension_names=["t", "x"])
    b.attrs["units"] = "m"
    b.attrs.update({"big": 2**63 + 5, "neg": -(2**62)})
    zb = zarr.open_array(zstore(tmp_path / "b"), mode="r")
    assert zb.metadata.dimension_names == ("t", "x")
    assert dict(zb.attrs) == {"units": "m", "big": 2**63 + 5, "neg": -(2**62)}


def test_v2_dimension_names_are_xarray_attribute(tmp_path) -> None:
    chunkref.create_array(str(tmp_path), shape=(2, 3), dtype="f4", zarr_format=2, dimension_names=["y", "x"])
    z = zarr.open_array(zstore(tmp_path), mode="r")
    assert z.attrs["_ARRAY_DIMENSIONS"] == ["y", "x"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_hierarchy_both_ways(tmp_path, zarr_format) -> None:
    # zarr-python writes, chunkref reads.
    root = zarr.open_group(
        zstore(tmp_path / "zp"), mode="w", zarr_format=zarr_format, attributes={"title": "t"}
    )
    g = root.create_group("g1", attributes={"level": 1})
    g.create_group("deep").create_array("leaf", shape=(3,), dtype="u1", fill_value=3)
    arr = root.create_array("top", shape=(4,), chunks=(2,), dtype="i8")
    arr[...] = [1, 2, 3, 4]
    c = chunkref.open_group(str(tmp_path / "zp"), mode="r")
    assert c.zarr_format == zarr_format
    assert dict(c.attrs) == {"title": "t"}
    assert sorted(n for n, _ in c.members(max_depth=None)) == ["g1", "g1/deep", "g1/deep/leaf", "top"]
    assert dict(c["g1"].attrs) == {"level": 1}
    np.testing.assert_array_equal(c["top"][...], [1, 2, 3, 4])
    np.testing.assert_array_equal(c["g1/deep/leaf"][...], [3, 3, 3])
    # chunkref writes, zarr-python reads.
    croot = chunkref.open_group(
        str(tmp_path / "cr"), mode="w", zarr_format=zarr_format, attributes={"title": "c"}
    )
    croot.create_group("a").create_group("b", attributes={"k": [1]})
    carr = croot.create_array("a/b/data", shape=(5,), chunks=(2,), dtype="f4", fill_value=np.nan)
    carr[1:3] = 1.0
    zr = zarr.open_group(zstore(tmp_path / "cr"), mode="r")
    assert zr.metadata.zarr_format == zarr_format
    assert dict(zr.attrs) == {"title": "c"}
    assert dict(zr["a/b"].attrs) == {"k": [1]}
    assert sorted(k for k, _ in zr.members(max_depth=None)) == ["a", "a/b", "a/b/data"]
    np.testing.assert_array_equal(zr["a/b/data"][...], [np.nan, 1, 1, np.nan, np.nan])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_consolidated_metadata_both_ways(tmp_path, zarr_format) -> None:
    # zarr-python consolidates; chunkref reads the hierarchy from the consolidated document only.
    root = zarr.open_group(zstore(tmp_path / "zp"), mode="w", zarr_format=zarr_format)
    root.create_group("sub").create_array("x", shape=(2, 2), dtype="i2", fill_value=9, attributes={"a": 1})
    zarr.consolidate_metadata(zstore(tmp_path / "zp"))
    from chunkref.storage import CountingStore, LocalStore

    counting = CountingStore(LocalStore(tmp_path / "zp", read_only=True))
    c = chunkref.open_group(counting, mode="r")
    assert c.metadata.consolidated is not None
    members = dict(c.members(max_depth=None))
    assert sorted(members) == ["sub", "sub/x"]
    x = c["sub/x"]
    assert x.shape == (2, 2) and x.fill_value == 9 and dict(x.attrs) == {"a": 1}
    assert counting.counts["get_many"] == 1 and counting.counts["list_dir"] == 0
    np.testing.assert_array_equal(x[...], np.full((2, 2), 9))
    # chunkref consolidates; zarr-python opens with use_consolidated=True.
    croot = chunkref.open_group(str(tmp_path / "cr"), mode="w", zarr_format=zarr_format)
    croot.create_group("s").create_array("y", shape=(3,), dtype="f8", attributes={"u": "K"})
    croot.create_array("z", shape=(1,), dtype=str)
    chunkref.consolidate_metadata(str(tmp_path / "cr"))
    zr = zarr.open_group(zstore(tmp_path / "cr"), mode="r", use_consolidated=True)
    assert zr.metadata.consolidated_metadata is not None
    assert sorted(zr.metadata.consolidated_metadata.flattened_metadata) == ["s", "s/y", "z"]
    assert dict(zr["s/y"].attrs) == {"u": "K"}
    if zarr_format == 3:
        doc = json.loads((tmp_path / "cr" / "zarr.json").read_text())
        assert doc["consolidated_metadata"]["kind"] == "inline"
    else:
        doc = json.loads((tmp_path / "cr" / ".zmetadata").read_text())
        assert doc["zarr_consolidated_format"] == 1
        assert "s/y/.zarray" in doc["metadata"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zero_d_and_empty_arrays_both_ways(tmp_path, zarr_format) -> None:
    z = zarr.create_array(
        zstore(tmp_path / "zp"), name="s", shape=(), dtype="f8", zarr_format=zarr_format, fill_value=1.0
    )
    z[()] = 4.5
    zarr.create_array(
        zstore(tmp_path / "zp"), name="e", shape=(0, 3), chunks=(2, 2), dtype="i4", zarr_format=zarr_format
    )
    c = chunkref.open_group(str(tmp_path / "zp"), mode="r")
    assert float(c["s"][()]) == 4.5
    assert c["e"][...].shape == (0, 3)
    a = chunkref.create_array(str(tmp_path / "cr"), name="s", shape=(), dtype="f8", zarr_format=zarr_format)
    a[()] = 2.5
    key = "c" if zarr_format == 3 else "0"
    assert (tmp_path / "cr" / "s" / key).exists()
    assert float(zarr.open_array(zstore(tmp_path / "cr"), path="s", mode="r")[()]) == 2.5


def test_chunkref_writes_into_zarr_python_array(tmp_path) -> None:
    """Mixed writers on one array: partial writes by chunkref keep zarr-python's data."""
    z = zarr.create_array(zstore(tmp_path), shape=(10, 10), chunks=(3, 4), dtype="f4", fill_value=-1)
    z[...] = np.arange(100, dtype="f4").reshape(10, 10)
    a = chunkref.open_array(str(tmp_path), mode="r+")
    a[2:5, 3:9] = 0
    expected = np.arange(100, dtype="f4").reshape(10, 10)
    expected[2:5, 3:9] = 0
    np.testing.assert_array_equal(np.asarray(zarr.open_array(zstore(tmp_path), mode="r")[...]), expected)
    a.resize((12, 7))
    z2 = zarr.open_array(zstore(tmp_path), mode="r")
    assert z2.shape == (12, 7)
    exp2 = np.full((12, 7), -1, dtype="f4")
    exp2[:10, :7] = expected[:, :7]
    np.testing.assert_array_equal(np.asarray(z2[...]), exp2)


def test_sharded_both_ways(tmp_path) -> None:
    z = zarr.create_array(zstore(tmp_path / "zp"), shape=(10, 9), chunks=(2, 3), shards=(4, 6), dtype="u2")
    z[...] = np.arange(90, dtype="u2").reshape(10, 9)
    a = chunkref.open_array(str(tmp_path / "zp"), mode="r")
    assert a.shards == (4, 6) and a.chunks == (2, 3)
    np.testing.assert_array_equal(a[...], np.arange(90).reshape(10, 9))
    np.testing.assert_array_equal(a[3:7, 2:8], np.arange(90).reshape(10, 9)[3:7, 2:8])
    b = chunkref.create_array(str(tmp_path / "cr"), shape=(10, 9), chunks=(2, 3), shards=(4, 6), dtype="u2")
    b[...] = np.arange(90, dtype="u2").reshape(10, 9)
    b[0:2, 0:3] = 0  # one inner chunk back to fill: recorded as empty in the index
    expected = np.arange(90, dtype="u2").reshape(10, 9)
    expected[0:2, 0:3] = 0
    np.testing.assert_array_equal(
        np.asarray(zarr.open_array(zstore(tmp_path / "cr"), mode="r")[...]), expected
    )


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zip_stores_both_ways(tmp_path, zarr_format) -> None:
    data = np.arange(15, dtype="i2").reshape(3, 5)
    g = chunkref.open_group(str(tmp_path / "cr.zip"), mode="w", zarr_format=zarr_format, attributes={"z": 1})
    a = g.create_array("x", shape=(3, 5), chunks=(2, 2), dtype="i2")
    a[...] = data
    g.store.close()
    zs = zarr.storage.ZipStore(str(tmp_path / "cr.zip"), mode="r")
    zg = zarr.open_group(zs, mode="r")
    assert dict(zg.attrs) == {"z": 1}
    np.testing.assert_array_equal(np.asarray(zg["x"][...]), data)
    zs.close()
    zs = zarr.storage.ZipStore(str(tmp_path / "zp.zip"), mode="w")
    zg = zarr.open_group(zs, mode="w", zarr_format=zarr_format)
    zg.create_array("y", shape=(4,), chunks=(3,), dtype="f4", fill_value=np.nan)[:2] = 1.5
    zs.close()
    c = chunkref.open_group(str(tmp_path / "zp.zip"), mode="r")
    np.testing.assert_array_equal(c["y"][...], [1.5, 1.5, np.nan, np.nan])
