"""Chunk key encodings: exact keys, strict decoding, vectorised encoding, JSON forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chunkref.errors import InvalidArgumentError, InvalidKeyError, MetadataError
from chunkref.zarr.keys import ChunkKeyEncoding, parse_chunk_key_encoding

DEFAULT = ChunkKeyEncoding()
DEFAULT_DOT = ChunkKeyEncoding("default", ".")
V2 = ChunkKeyEncoding("v2")
V2_SLASH = ChunkKeyEncoding("v2", "/")
ALL = [DEFAULT, DEFAULT_DOT, V2, V2_SLASH]


def test_defaults():
    assert DEFAULT.separator == "/"
    assert V2.separator == "."
    assert ChunkKeyEncoding.from_dimension_separator(None) == V2
    assert ChunkKeyEncoding.from_dimension_separator("/") == V2_SLASH
    assert V2_SLASH.dimension_separator == "/"
    with pytest.raises(InvalidArgumentError):
        _ = DEFAULT.dimension_separator


@pytest.mark.parametrize(
    "enc,coords,key",
    [
        (DEFAULT, (1, 2), "c/1/2"),
        (DEFAULT, (1, 23, 45), "c/1/23/45"),
        (DEFAULT, (), "c"),
        (DEFAULT_DOT, (1, 2), "c.1.2"),
        (DEFAULT_DOT, (), "c"),
        (V2, (1, 2), "1.2"),
        (V2, (), "0"),
        (V2, (7,), "7"),
        (V2_SLASH, (1, 2, 3), "1/2/3"),
        (V2_SLASH, (), "0"),
    ],
)
def test_encode_decode(enc, coords, key):
    assert enc.encode(coords) == key
    assert enc.decode(key, len(coords)) == coords
    assert enc.encode(np.array(coords, dtype=np.int64)) == key


@pytest.mark.parametrize("enc", ALL)
def test_matches_zarr_python(enc):
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding, V2ChunkKeyEncoding

    cls = DefaultChunkKeyEncoding if enc.name == "default" else V2ChunkKeyEncoding
    theirs = cls(separator=enc.separator)
    for coords in [(), (0,), (3, 11), (0, 0, 12345)]:
        assert enc.encode(coords) == theirs.encode_chunk_key(coords)


@pytest.mark.parametrize(
    "enc,key",
    [
        (DEFAULT, "1/2"),  # no c prefix
        (DEFAULT, "c/"),
        (DEFAULT, "c//1"),
        (DEFAULT, "c.1"),  # wrong separator
        (DEFAULT, "c/01"),  # not canonical
        (DEFAULT, "c/-1"),
        (DEFAULT, "c/+1"),
        (DEFAULT, "c/1 "),
        (DEFAULT, "c/١"),  # non-ASCII digit
        (DEFAULT, "zarr.json"),
        (V2, "1/2"),
        (V2, ""),
        (V2, ".zarray"),
        (V2, "1..2"),
        (V2_SLASH, "1.2"),
    ],
)
def test_decode_strict(enc, key):
    with pytest.raises(InvalidKeyError) as e:
        enc.decode(key)
    assert repr(key) in str(e.value)
    assert not enc.is_chunk_key(key)


def test_decode_ndim_checks():
    with pytest.raises(InvalidKeyError, match="'c/1'"):
        DEFAULT.decode("c/1", ndim=2)
    assert V2.decode("0", ndim=0) == ()
    assert V2.decode("0", ndim=1) == (0,)
    with pytest.raises(InvalidKeyError):
        V2.decode("1", ndim=0)
    with pytest.raises(InvalidKeyError):
        DEFAULT.decode(b"c/1")  # type: ignore[arg-type]


def test_encode_rejects_negative():
    with pytest.raises(InvalidArgumentError):
        DEFAULT.encode((-1,))
    with pytest.raises(InvalidArgumentError):
        DEFAULT.encode_many(np.array([[0], [-1]]))


@pytest.mark.parametrize("enc", ALL)
@pytest.mark.parametrize("shape", [(3,), (2, 5), (3, 1, 4), (1, 1, 1, 2)])
def test_encode_many_matches_encode(enc, shape):
    coords = np.array(list(itertools.product(*(range(n) for n in shape))), dtype=np.int64)
    keys = enc.encode_many(coords)
    assert keys == [enc.encode(c) for c in coords.tolist()]
    np.testing.assert_array_equal(enc.decode_many(keys, len(shape)), coords)


def test_encode_many_edge_cases():
    assert DEFAULT.encode_many(np.zeros((0, 2), dtype=np.int64)) == []
    assert DEFAULT.encode_many(np.zeros((2, 0), dtype=np.int64)) == ["c", "c"]
    assert V2.encode_many(np.zeros((1, 0), dtype=np.int64)) == ["0"]
    # Sparse, huge indices take the distinct-value path.
    coords = np.array([[10**12, 3], [5, 10**15]], dtype=np.uint64)
    assert DEFAULT.encode_many(coords) == ["c/1000000000000/3", "c/5/1000000000000000"]
    with pytest.raises(InvalidArgumentError):
        DEFAULT.encode_many(np.zeros(3, dtype=np.int64))
    with pytest.raises(InvalidArgumentError):
        DEFAULT.encode_many(np.zeros((3, 1), dtype=np.float64))
    assert V2.decode_many([], 2).shape == (0, 2)


def test_encode_many_large_is_fast():
    import time

    coords = np.stack(np.unravel_index(np.arange(200_000), (50, 40, 100)), axis=-1)
    t = time.perf_counter()
    keys = DEFAULT.encode_many(coords)
    elapsed = time.perf_counter() - t
    assert keys[12345] == "c/" + "/".join(map(str, coords[12345].tolist()))
    assert elapsed < 1.0


@pytest.mark.parametrize(
    "meta,expected",
    [
        ({"name": "default", "configuration": {"separator": "/"}}, DEFAULT),
        ({"name": "default", "configuration": {"separator": "."}}, DEFAULT_DOT),
        ({"name": "default"}, DEFAULT),  # tensorstore form
        ({"name": "v2"}, V2),
        ({"name": "v2", "configuration": {"separator": "/"}}, V2_SLASH),
        ({"name": "v2", "configuration": {}}, V2),
        ("default", DEFAULT),  # 3.1 short-hand
        ("v2", V2),
        ({"name": "default", "must_understand": True}, DEFAULT),
    ],
)
def test_parse(meta, expected):
    assert parse_chunk_key_encoding(meta) == expected


@pytest.mark.parametrize(
    "meta",
    [
        "nested",
        {"name": "weird"},
        {"configuration": {"separator": "/"}},
        {"name": "default", "configuration": {"separator": "-"}},
        {"name": "default", "configuration": {"separator": "/", "x": 1}},
        {"name": "default", "configuration": "/"},
        {"name": "default", "extra": 1},
        {"name": "default", "must_understand": False},
        42,
        None,
    ],
)
def test_parse_errors(meta):
    with pytest.raises(MetadataError, match="chunk_key_encoding"):
        parse_chunk_key_encoding(meta)


@pytest.mark.parametrize("enc", ALL)
def test_json_round_trip(enc):
    doc = enc.to_json()
    assert doc == {"name": enc.name, "configuration": {"separator": enc.separator}}
    assert parse_chunk_key_encoding(doc) == enc


def test_bad_construction():
    with pytest.raises(MetadataError):
        ChunkKeyEncoding("nested")
    with pytest.raises(MetadataError):
        ChunkKeyEncoding("default", ",")
    with pytest.raises(MetadataError):
        ChunkKeyEncoding.from_dimension_separator("-")
