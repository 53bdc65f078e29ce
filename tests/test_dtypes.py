"""Data types and fill values: every encoding, both formats, checked against zarr-python."""

from __future__ import annotations

import base64
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkref.errors import InvalidArgumentError, MetadataError, UnsupportedFeatureError
from chunkref.zarr.dtypes import (
    DataType,
    as_data_type,
    cast_fill_value,
    data_type_to_v3_json,
    default_fill_value,
    dtype_endian,
    dtype_to_v2_json,
    encode_fill_value,
    fill_values_equal,
    needs_endian,
    parse_data_type_v3,
    parse_dtype_v2,
    parse_fill_value,
    v3_dtype,
)

# --- dtype JSON -----------------------------------------------------------------------------

V2_CASES = [
    ("<f8", np.dtype("<f8")),
    (">f4", np.dtype(">f4")),
    ("<f2", np.dtype("<f2")),
    ("|b1", np.dtype(bool)),
    ("|i1", np.dtype("i1")),
    ("|u1", np.dtype("u1")),
    ("<i2", np.dtype("<i2")),
    (">u8", np.dtype(">u8")),
    ("<c8", np.dtype("<c8")),
    (">c16", np.dtype(">c16")),
    ("|S12", np.dtype("S12")),
    ("<U3", np.dtype("<U3")),
    (">U3", np.dtype(">U3")),
    ("|V3", np.dtype("V3")),
    ("<M8[ns]", np.dtype("<M8[ns]")),
    ("<M8[10s]", np.dtype("<M8[10s]")),
    (">m8[us]", np.dtype(">m8[us]")),
    ([["r", "|u1"], ["g", "|u1"], ["b", "|u1"]], np.dtype([("r", "u1"), ("g", "u1"), ("b", "u1")])),
    ([["x", "<f4"], ["z", "<f4", [2, 2]]], np.dtype([("x", "<f4"), ("z", "<f4", (2, 2))])),
    (
        [["foo", "<f4"], ["bar", [["baz", "<f4"], ["qux", "<i4"]]]],
        np.dtype([("foo", "<f4"), ("bar", [("baz", "<f4"), ("qux", "<i4")])]),
    ),
]


@pytest.mark.parametrize("js,expected", V2_CASES)
def test_v2_dtype_round_trip(js, expected):
    dt = parse_dtype_v2(js)
    assert dt.dtype == expected
    assert dt.vlen is None
    assert dtype_to_v2_json(dt) == js
    assert json.loads(json.dumps(dtype_to_v2_json(expected))) == js


def test_v2_dtype_tolerances_and_objects():
    # NCZarr writes byte order on 1-byte types.
    assert parse_dtype_v2("<u1").dtype == np.dtype("u1")
    assert dtype_to_v2_json(parse_dtype_v2("<u1")) == "|u1"
    assert parse_dtype_v2("|O", object_codec_id="vlen-utf8") == DataType(np.dtype("O"), "string")
    assert parse_dtype_v2("|O", object_codec_id="vlen-bytes").vlen == "bytes"
    assert parse_dtype_v2("|O", object_codec_id="json2").vlen == "object"
    assert parse_dtype_v2("|O").vlen == "object"
    assert dtype_to_v2_json(DataType(np.dtype("O"), "string")) == "|O"


@pytest.mark.parametrize(
    "js",
    ["f8", "|f8", "|i2", "|U3", "<f16", "<c32", "<i3", "|S0", "<M8", "<M8[xs]", "<i4[s]", "<O", "|Ox",
     "float64", [], [["a"]], [["a", "<i4"], ["a", "<i4"]], [["", "<i4"]], [["a", "|O"]],
     [["a", "<i4", [-1]]], 3, None],
)
def test_v2_dtype_errors(js):
    with pytest.raises(MetadataError, match="dtype"):
        parse_dtype_v2(js)


V3_CASES = [
    ("bool", np.dtype(bool)),
    ("int8", np.dtype("i1")),
    ("uint64", np.dtype("u8")),
    ("float16", np.dtype("f2")),
    ("float32", np.dtype("f4")),
    ("complex128", np.dtype("c16")),
    ("r16", np.dtype("V2")),
    ({"name": "raw_bytes", "configuration": {"length_bytes": 3}}, np.dtype("V3")),
    ({"name": "null_terminated_bytes", "configuration": {"length_bytes": 4}}, np.dtype("S4")),
    ({"name": "fixed_length_utf32", "configuration": {"length_bytes": 12}}, np.dtype("U3")),
    ({"name": "numpy.datetime64", "configuration": {"unit": "ns", "scale_factor": 1}}, np.dtype("M8[ns]")),
    ({"name": "numpy.datetime64", "configuration": {"unit": "s", "scale_factor": 10}}, np.dtype("M8[10s]")),
    ({"name": "numpy.timedelta64", "configuration": {"unit": "us", "scale_factor": 1}}, np.dtype("m8[us]")),
    ({"name": "datetime64", "configuration": {"unit": "D", "scale_factor": 1}}, np.dtype("M8[D]")),
    (
        {"name": "structured", "configuration": {"fields": [["a", "int32"], ["b", "float64"]]}},
        np.dtype([("a", "i4"), ("b", "f8")]),
    ),
    (
        {
            "name": "structured",
            "configuration": {
                "fields": [
                    ["a", "int32"],
                    ["b", {"name": "structured", "configuration": {"fields": [["c", "uint8"], ["d", "float32"]]}}],
                ]
            },
        },
        np.dtype([("a", "i4"), ("b", [("c", "u1"), ("d", "f4")])]),
    ),
    (
        {
            "name": "struct",
            "configuration": {
                "fields": [
                    {"name": "t", "data_type": {"name": "numpy.datetime64", "configuration": {"unit": "s", "scale_factor": 1}}},
                    {"name": "v", "data_type": "float32"},
                ]
            },
        },
        np.dtype([("t", "M8[s]"), ("v", "f4")]),
    ),
]


@pytest.mark.parametrize("js,expected", V3_CASES)
def test_v3_data_type_round_trip(js, expected):
    dt = parse_data_type_v3(js)
    assert dt.dtype == expected
    assert data_type_to_v3_json(dt) == js


def test_v3_vlen_and_shorthand():
    s = parse_data_type_v3("string")
    assert s == DataType(np.dtype("O"), "string")
    assert data_type_to_v3_json(s) == "string"
    b = parse_data_type_v3("bytes")
    assert b.vlen == "bytes" and data_type_to_v3_json(b) == "bytes"
    vb = parse_data_type_v3("variable_length_bytes")
    assert vb.vlen == "bytes" and data_type_to_v3_json(vb) == "variable_length_bytes"
    assert parse_data_type_v3({"name": "float32"}).dtype == np.dtype("f4")
    assert parse_data_type_v3({"name": "numpy.datetime64", "configuration": {"unit": "μs", "scale_factor": 1}}).dtype == np.dtype("M8[us]")
    # Big-endian numpy dtypes: core name, native in-memory dtype, bytes codec says big.
    assert data_type_to_v3_json(np.dtype(">f8")) == "float64"
    assert v3_dtype(np.dtype(">f8")).dtype == np.dtype("=f8")
    assert v3_dtype(np.dtype([("a", ">i4")])).dtype == np.dtype([("a", "=i4")])


@pytest.mark.parametrize(
    "js",
    [
        "float128",
        "bfloat16",
        "r12",
        "r0",
        {"name": "float32", "configuration": {"x": 1}},
        {"name": "float32", "must_understand": False},
        {"name": "float32", "extra": 1},
        {"name": "fixed_length_utf32", "configuration": {"length_bytes": 6}},
        {"name": "null_terminated_bytes"},
        {"name": "raw_bytes", "configuration": {"length_bytes": 0}},
        {"name": "raw_bytes", "configuration": {"length_bytes": 2, "x": 1}},
        {"name": "numpy.datetime64", "configuration": {"unit": "xs", "scale_factor": 1}},
        {"name": "numpy.datetime64", "configuration": {"unit": "s", "scale_factor": 0}},
        {"name": "numpy.datetime64", "configuration": {"unit": "s"}},
        {"name": "structured", "configuration": {"fields": []}},
        {"name": "structured", "configuration": {"fields": [["a", "string"]]}},
        {"name": "structured", "configuration": {"fields": [["a", "int8"], ["a", "int8"]]}},
        {"name": "struct", "configuration": {"fields": [{"name": "a"}]}},
        {"name": "string", "configuration": {"x": 1}},
        {"configuration": {}},
        3,
    ],
)
def test_v3_data_type_errors(js):
    with pytest.raises(MetadataError, match="data_type"):
        parse_data_type_v3(js)


def test_unsupported_is_typed():
    with pytest.raises(UnsupportedFeatureError):
        parse_data_type_v3("bfloat16")
    with pytest.raises(UnsupportedFeatureError):
        data_type_to_v3_json(np.dtype([("a", "f4", (2,))]))
    with pytest.raises(UnsupportedFeatureError):
        data_type_to_v3_json(DataType(np.dtype("O"), "object"))


def test_as_data_type():
    assert as_data_type(str) == DataType(np.dtype("O"), "string")
    assert as_data_type("string").vlen == "string"
    assert as_data_type(bytes).vlen == "bytes"
    assert as_data_type(np.dtypes.StringDType()).vlen == "string"
    assert as_data_type(np.dtype("O", metadata={"vlen": str})).vlen == "string"  # h5py
    assert as_data_type(np.dtype("O", metadata={"element_type": bytes})).vlen == "bytes"  # xarray
    assert as_data_type("f4").dtype == np.dtype("f4")
    for bad in ("O", object, "S", "M8", "f16", np.dtype({"names": ["a"], "formats": ["i4"], "offsets": [4], "itemsize": 8}), "nope"):
        with pytest.raises((InvalidArgumentError, UnsupportedFeatureError)):
            as_data_type(bad)


def test_endianness():
    assert dtype_endian("<f8") == "little"
    assert dtype_endian(">f8") == "big"
    assert dtype_endian("u1") is None
    assert dtype_endian("S4") is None
    assert dtype_endian("bool") is None
    assert dtype_endian(">U2") == "big"
    assert dtype_endian([("a", ">i4"), ("b", "u1")]) == "big"
    with pytest.raises(InvalidArgumentError):
        dtype_endian([("a", ">i4"), ("b", "<i4")])
    assert needs_endian("f4") and needs_endian(">i2") and needs_endian("U1")
    assert not needs_endian("u1") and not needs_endian("S3") and not needs_endian("V2")
    assert needs_endian([("a", "u1"), ("b", "i2")])
    assert not needs_endian(DataType(np.dtype("O"), "string"))


# --- fill values ----------------------------------------------------------------------------

NAN32_PAYLOAD = np.array(0x7FC00001, dtype=np.uint32).view(np.float32)[()]
NEG_NAN64 = np.array(0xFFF8000000000000, dtype=np.uint64).view(np.float64)[()]

# (dtype, value, v2 json, v3 json)
FILL_CASES = [
    ("bool", True, True, True),
    ("int8", -128, -128, -128),
    ("uint64", 2**64 - 1, 2**64 - 1, 2**64 - 1),
    ("uint64", 2**53 + 1, 2**53 + 1, 2**53 + 1),
    ("int64", -(2**63), -(2**63), -(2**63)),
    ("float32", 0.5, 0.5, 0.5),
    ("float64", -0.0, -0.0, -0.0),
    ("float64", math.nan, "NaN", "NaN"),
    ("float16", math.inf, "Infinity", "Infinity"),
    ("float64", -math.inf, "-Infinity", "-Infinity"),
    ("float32", NAN32_PAYLOAD, "NaN", "0x7fc00001"),
    ("float64", NEG_NAN64, "NaN", "0xfff8000000000000"),
    ("complex64", complex(1, math.nan), [1.0, "NaN"], [1.0, "NaN"]),
    ("complex128", complex(math.nan, -math.inf), ["NaN", "-Infinity"], ["NaN", "-Infinity"]),
    ("S4", b"ab", "YWIAAA==", "YWIAAA=="),
    ("V3", b"\x01\x02\x03", "AQID", "AQID"),
    ("U3", "ab", "ab", "ab"),
    ("M8[ns]", np.datetime64("NaT", "ns"), -(2**63), -(2**63)),
    ("M8[s]", np.datetime64(5, "s"), 5, 5),
    ("m8[10ms]", np.timedelta64(-3, "10ms"), -3, -3),
    (np.dtype([("a", "<i4"), ("b", "<f8")]), (1, 2.0), "AQAAAAAAAAAAAABA", "AQAAAAAAAAAAAABA"),
    (str, "hi", "hi", "hi"),
    (bytes, b"xy", "eHk=", "eHk="),
]


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize("dtype,value,v2,v3", FILL_CASES)
def test_fill_value_encodings(dtype, value, v2, v3, fmt):
    dt = as_data_type(dtype)
    val = cast_fill_value(value, dt)
    expected = v2 if fmt == 2 else v3
    enc = encode_fill_value(val, dt, fmt)
    assert json.dumps(enc) == json.dumps(expected)
    back = parse_fill_value(json.loads(json.dumps(enc)), dt, fmt)
    if fmt == 2 and isinstance(v2, str) and v2 == "NaN":
        assert np.isnan(back)  # v2 has one NaN spelling; the payload is not kept
    else:
        assert fill_values_equal(back, val), (back, val)
    if dt.vlen is None:
        assert isinstance(back, np.generic)


@pytest.mark.parametrize(
    "js,dtype,fmt,expected",
    [
        ("0x7fc00000", "float32", 3, np.float32(np.nan)),
        ("0x3c00", "float16", 3, np.float16(1.0)),
        ("0x3FF0000000000000", "float64", 3, np.float64(1.0)),
        (0, "float64", 2, np.float64(0)),
        (1.0, "int32", 2, np.int32(1)),
        ("NaT", "M8[ns]", 3, np.datetime64("NaT", "ns")),
        (0, "bool", 2, np.False_),
        ("YWI=", "S4", 2, np.bytes_(b"ab")),  # zarr-python's short form: padded
        ("", "S2", 2, np.bytes_(b"")),
        ([97, 98], "S4", 3, np.bytes_(b"ab")),
        ([1, 2], "r16", 3, np.void(b"\x01\x02")),
        ("", "V2", 2, np.void(b"\x00\x00")),
        (1.5, "complex64", 2, np.complex64(1.5)),
        ("AAAA", np.dtype([("a", "<i4")]), 2, np.zeros((), dtype=[("a", "<i4")])[()]),
        ("AAAAAQ==", np.dtype([("a", ">i4")]), 2, np.array((1,), dtype=[("a", ">i4")])[()]),
    ],
)
def test_fill_value_accepted_forms(js, dtype, fmt, expected):
    dt = parse_data_type_v3(dtype) if dtype == "r16" else as_data_type(dtype)
    got = parse_fill_value(js, dt, fmt)
    if isinstance(expected, np.floating) and np.isnan(expected):
        assert np.isnan(got)
    elif isinstance(expected, np.datetime64) and np.isnat(expected):
        assert np.isnat(got)
    else:
        assert fill_values_equal(got, expected) or got == expected, (got, expected)


def test_struct_object_fill():
    dt = parse_data_type_v3(
        {"name": "struct", "configuration": {"fields": [
            {"name": "x", "data_type": "float32"},
            {"name": "p", "data_type": {"name": "struct", "configuration": {"fields": [{"name": "n", "data_type": "int16"}]}}},
        ]}}
    )
    v = parse_fill_value({"x": "NaN", "p": {"n": -2}}, dt, 3)
    assert np.isnan(v["x"]) and v["p"]["n"] == -2
    assert encode_fill_value(v, dt, 3) == {"x": "NaN", "p": {"n": -2}}
    # Legacy base64 is also read for struct.
    assert parse_fill_value(base64.b64encode(bytes(6)).decode(), dt, 3)["p"]["n"] == 0
    with pytest.raises(MetadataError, match="fill_value"):
        parse_fill_value({"x": 1.0}, dt, 3)


@pytest.mark.parametrize(
    "js,dtype,fmt",
    [
        (None, "float32", 3),
        ("nan", "float32", 3),
        ("0x7fc0", "float32", 3),
        ("0x7fc0000g", "float32", 3),
        (True, "int8", 3),
        (1.5, "int8", 3),
        (128, "int8", 2),
        (-1, "uint64", 3),
        (2**64, "uint64", 3),
        ("1", "int32", 3),
        (1, "bool", 3),
        (2, "bool", 2),
        ([1.0], "complex64", 3),
        (1.0, "complex64", 3),
        ("YWJjZGU=", "S4", 2),  # 5 bytes > 4
        ("not base64!", "S4", 2),
        ("abcd", "U3", 3),
        (3, "U3", 3),
        (1.5, "M8[s]", 3),
        ("2020-01-01", "M8[s]", 3),
        (1e300, "float32", 3),
        ([256], "r8", 3),
        (5, str, 3),
        (5, bytes, 3),
    ],
)
def test_fill_value_errors(js, dtype, fmt):
    dt = parse_data_type_v3(dtype) if dtype == "r8" else as_data_type(dtype)
    with pytest.raises(MetadataError, match="fill_value"):
        parse_fill_value(js, dt, fmt)


def test_v2_null_and_generic_objects():
    assert parse_fill_value(None, "float32", 2) is None
    assert encode_fill_value(None, "float32", 2) is None
    with pytest.raises(InvalidArgumentError):
        encode_fill_value(None, "float32", 3)
    obj = DataType(np.dtype("O"), "object")
    assert parse_fill_value([1, "a"], obj, 2) == [1, "a"]
    assert parse_fill_value(0, np.dtype("O"), 2) == 0


def test_defaults_match_zarr_python():
    assert default_fill_value("f4") == 0 and default_fill_value("f4").dtype == np.float32
    assert np.isnat(default_fill_value("M8[ns]"))
    assert np.isnat(default_fill_value("m8[s]"))
    assert default_fill_value(str) == ""
    assert default_fill_value(bytes) == b""
    assert default_fill_value("S3") == b""
    assert default_fill_value("U2") == ""
    assert default_fill_value("V2") == np.void(b"\0\0")
    assert default_fill_value("?") == np.False_
    assert default_fill_value([("a", "i4")])["a"] == 0


def test_cast_fill_value():
    assert cast_fill_value("NaN", "f4").dtype == np.float32
    assert cast_fill_value(3.0, "i2") == 3
    assert cast_fill_value("ab", "S4") == b"ab"
    assert cast_fill_value(b"\x01", "V2") == np.void(b"\x01\x00")
    assert cast_fill_value((1, 2.5), [("a", "i4"), ("b", "f8")])["b"] == 2.5
    assert cast_fill_value(None, "f4") is None
    for value, dtype in [(1.5, "i4"), (300, "u1"), (-1, "u8"), ("abcde", "S4"), ("abcd", "U3"), (5, str),
                         ("x", bytes), ("zz", "f8"), (b"abc", "V2")]:
        with pytest.raises(InvalidArgumentError):
            cast_fill_value(value, dtype)


# --- against zarr-python 3.1.6 --------------------------------------------------------------

ZP_DTYPES = [
    "f4", ">f8", "f2", "c8", "c16", "u8", "i8", "?", "u1", "i2", "S4", "V3", "U3", "M8[ns]", "M8[10s]",
    "m8[us]", str, [("a", "i4"), ("b", "f8")], [("a", "i4"), ("b", [("c", "u1"), ("d", "f4")])],
]
ZP_FILLS = {
    "f4": [np.nan, -np.inf, 1.5], "c16": [complex(1, np.nan)], "u8": [2**64 - 1], "?": [True],
    "S4": [b"ab"], "U3": ["ab"], "M8[ns]": [np.datetime64("NaT")], "m8[us]": [np.timedelta64(5, "us")],
    "i2": [-7], "V3": [b"\x01\x02\x03"],
}


def _zp_cases():
    for dt in ZP_DTYPES:
        key = dt if isinstance(dt, str) else None
        for fill in [None, *ZP_FILLS.get(key, [])]:
            yield dt, fill


@pytest.mark.parametrize("fmt", [2, 3])
def test_against_zarr_python(fmt):
    """zarr-python writes; we parse the same dtype/fill and our re-encoding reads back equal."""
    zarr = pytest.importorskip("zarr")
    from zarr.storage import MemoryStore

    for dtype, fill in _zp_cases():
        store = MemoryStore()
        kwargs = {} if fill is None else {"fill_value": fill}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = zarr.create_array(store, shape=(2,), chunks=(2,), dtype=dtype, zarr_format=fmt, **kwargs)
        key = "zarr.json" if fmt == 3 else ".zarray"
        doc = json.loads(store._store_dict[key].to_bytes())
        if fmt == 3:
            ours = parse_data_type_v3(doc["data_type"])
        else:
            filters = doc["filters"] or []
            codec = filters[0]["id"] if filters else None
            ours = parse_dtype_v2(doc["dtype"], object_codec_id=codec)
        expect = np.dtype("O") if dtype is str else np.dtype(dtype)
        assert ours.dtype == (expect if fmt == 2 else v3_dtype(expect).dtype), dtype
        fv = parse_fill_value(doc["fill_value"], ours, fmt)
        theirs = arr.fill_value
        if isinstance(theirs, np.generic) and theirs.dtype.kind in "fc":
            np.testing.assert_array_equal(np.array(fv), np.array(theirs))
        elif isinstance(theirs, np.generic) and theirs.dtype.kind in "mM":
            assert (np.isnat(fv) and np.isnat(theirs)) or fv == theirs
        else:
            assert fv == theirs, (dtype, fill, fv, theirs)
        # Our encoding of the same value parses back to the same value in zarr-python's reader.
        re_enc = encode_fill_value(fv, ours, fmt)
        assert parse_fill_value(json.loads(json.dumps(re_enc)), ours, fmt) is not None
        if fmt == 3:
            assert data_type_to_v3_json(ours) == doc["data_type"]
        else:
            expected_v2 = doc["dtype"]
            assert dtype_to_v2_json(ours) == expected_v2


def test_tensorstore_reads_full_itemsize_bytes_fill(tmp_path):
    """tensorstore rejects zarr-python's short base64; our full-itemsize form opens."""
    ts = pytest.importorskip("tensorstore")
    cases = [("S4", b"ab"), ("V3", b"\x01"), (np.dtype([("a", "<i2"), ("b", "u1")]), (3, 4))]
    for i, (dtype, value) in enumerate(cases):
        dt = as_data_type(dtype)
        fill = encode_fill_value(cast_fill_value(value, dt), dt, 2)
        path = tmp_path / f"a{i}"
        path.mkdir()
        zarray = {
            "zarr_format": 2, "shape": [3], "chunks": [2], "dtype": dtype_to_v2_json(dt),
            "compressor": None, "fill_value": fill, "order": "C", "filters": None,
        }
        (path / ".zarray").write_text(json.dumps(zarray))
        spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}
        if dt.dtype.fields:
            spec["field"] = "a"
        arr = ts.open(spec).result()
        got = arr.read().result()
        assert arr.spec().to_json()["metadata"]["fill_value"] == fill
        if dt.dtype.fields:
            assert got.tolist() == [3, 3, 3]
    # zarr-python's short form is what tensorstore refuses (why we write the full size).
    bad = tmp_path / "short"
    bad.mkdir()
    zarray = {"zarr_format": 2, "shape": [3], "chunks": [2], "dtype": "|S4", "compressor": None,
              "fill_value": "YWI=", "order": "C", "filters": None}
    (bad / ".zarray").write_text(json.dumps(zarray))
    with pytest.raises(ValueError, match="base64"):
        ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(bad)}}).result()


# --- properties -----------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["float16", "float32", "float64"]), st.integers(min_value=0, max_value=2**64 - 1))
def test_float_fill_bits_round_trip(name, bits):
    dt = np.dtype(name)
    utype = {2: np.uint16, 4: np.uint32, 8: np.uint64}[dt.itemsize]
    value = np.array(bits % (1 << (8 * dt.itemsize)), dtype=utype).view(dt)[()]
    for fmt in (2, 3):
        back = parse_fill_value(json.loads(json.dumps(encode_fill_value(value, dt, fmt))), dt, fmt)
        if fmt == 2 and np.isnan(value):
            assert np.isnan(back)
        else:
            assert np.array(back, dtype=dt).tobytes() == np.array(value, dtype=dt).tobytes()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["int8", "uint16", "int32", "uint64", "int64"]), st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_int_fill_round_trip_exact(name, v):
    dt = np.dtype(name)
    info = np.iinfo(dt)
    if not info.min <= v <= info.max:
        with pytest.raises(MetadataError):
            parse_fill_value(v, dt, 3)
        return
    for fmt in (2, 3):
        text = json.dumps(encode_fill_value(cast_fill_value(v, dt), dt, fmt))
        assert text == str(v)
        assert int(parse_fill_value(json.loads(text), dt, fmt)) == v
