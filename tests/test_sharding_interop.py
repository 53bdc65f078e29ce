"""Sharded arrays written by zarr-python 3.1.6, tensorstore and zarrs read by chunkref, and back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from chunkref.storage import LocalStore
from chunkref.zarr import api

zarr = pytest.importorskip("zarr")
ts = pytest.importorskip("tensorstore")

REALDATA = Path("/work/shared/realdata/zarr")

BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
ZSTD = {"name": "zstd", "configuration": {"level": 1, "checksum": False}}
CRC = {"name": "crc32c"}
TRANSPOSE = {"name": "transpose", "configuration": {"order": [2, 0, 1]}}

SHAPE = (20, 18, 9)
SHARDS = (8, 6, 9)
INNER = (4, 3, 3)

CONFIGS = {
    "end-crc-zstd": dict(codecs=[BYTES, ZSTD], index_codecs=[BYTES, CRC], location="end"),
    "start-crc-zstd": dict(codecs=[BYTES, ZSTD], index_codecs=[BYTES, CRC], location="start"),
    "end-nocrc-raw": dict(codecs=[BYTES], index_codecs=[BYTES], location="end"),
    "start-nocrc-raw": dict(codecs=[BYTES], index_codecs=[BYTES], location="start"),
    "end-crc-transpose": dict(codecs=[TRANSPOSE, BYTES, ZSTD], index_codecs=[BYTES, CRC], location="end"),
}


def metadata(codecs, index_codecs, location) -> dict:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(SHAPE),
        "data_type": "int32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(SHARDS)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": -1,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(INNER),
                    "codecs": codecs,
                    "index_codecs": index_codecs,
                    "index_location": location,
                },
            }
        ],
        "attributes": {},
    }


def values() -> np.ndarray:
    v = np.arange(np.prod(SHAPE), dtype="int32").reshape(SHAPE)
    v[:4, :3, :3] = -1  # an inner chunk equal to the fill value: left out by every writer
    v[8:16, 6:12] = -1  # a whole shard of fill: not stored at all
    return v


def prepare(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "arr"
    path.mkdir()
    (path / "zarr.json").write_text(json.dumps(metadata(**CONFIGS[name])))
    return path


def ts_open(path: Path):
    try:
        return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}, open=True).result()
    except ValueError as exc:  # pragma: no cover - older tensorstore without index_location
        pytest.skip(f"tensorstore cannot open this layout: {exc}")


def write_with(engine: str, path: Path, v: np.ndarray) -> None:
    if engine == "zarr":
        zarr.open_array(str(path), mode="r+")[...] = v
    elif engine == "tensorstore":
        ts_open(path).write(v).result()
    else:
        api.open_array(LocalStore(path))[...] = v


def read_with(engine: str, path: Path, sel=...) -> np.ndarray:
    if engine == "zarr":
        return zarr.open_array(str(path), mode="r")[sel]
    if engine == "tensorstore":
        return ts_open(path)[sel].read().result()
    return api.open_array(LocalStore(path))[sel]


REGION = (slice(3, 17), slice(2, 16), slice(1, 8))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("writer", ["zarr", "tensorstore"])
def test_peer_writes_chunkref_reads(tmp_path, name, writer):
    path = prepare(tmp_path, name)
    v = values()
    write_with(writer, path, v)
    assert not (path / "c" / "1" / "1" / "0").exists()
    np.testing.assert_array_equal(read_with("chunkref", path), v)
    np.testing.assert_array_equal(read_with("chunkref", path, REGION), v[REGION])
    # A partial write by chunkref into the peer's shards, read back by the peer.
    a = api.open_array(LocalStore(path))
    a[5:11, 4:7, 2] = 77
    v[5:11, 4:7, 2] = 77
    np.testing.assert_array_equal(read_with(writer, path), v)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("reader", ["zarr", "tensorstore"])
def test_chunkref_writes_peer_reads(tmp_path, name, reader):
    path = prepare(tmp_path, name)
    v = values()
    write_with("chunkref", path, v)
    assert not (path / "c" / "1" / "1" / "0").exists()
    np.testing.assert_array_equal(read_with(reader, path), v)
    np.testing.assert_array_equal(read_with(reader, path, REGION), v[REGION])


def test_same_bytes_as_tensorstore(tmp_path):
    """tensorstore writes C-order compacted shards, as we do: the objects are identical."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = prepare(tmp_path / "a", "end-crc-zstd")
    b = prepare(tmp_path / "b", "end-crc-zstd")
    v = values()
    write_with("chunkref", a, v)
    write_with("tensorstore", b, v)
    for f in sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "zarr.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_zarr_python_created_array(tmp_path):
    """zarr-python's own defaults for shards= (zstd + bytes/crc32c index, Morton order)."""
    v = np.random.default_rng(1).normal(size=(33, 40)).astype("float64")
    z = zarr.create_array(str(tmp_path / "z"), shape=v.shape, chunks=(5, 8), shards=(10, 16), dtype="float64")
    z[...] = v
    a = api.open_array(LocalStore(tmp_path / "z"))
    np.testing.assert_array_equal(a[...], v)
    np.testing.assert_array_equal(a[7:29, 3:37:2], v[7:29, 3:37:2])
    a[1:30, 1] = 0.5
    v[1:30, 1] = 0.5
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "z"), mode="r")[...], v)


def test_zarrs_fixture():
    root = REALDATA / "zarrs-testdata" / "sharded_array_write_read.zarr"
    expected = json.loads((REALDATA / "expected_zarr_fixtures.json").read_text())
    exp = expected["zarrs-testdata/sharded_array_write_read.zarr"]["/group/array"]
    a = api.open_array(LocalStore(root, read_only=True), path="group/array")
    assert a.shards == tuple(exp["shards"]) and a.chunks == tuple(exp["chunks"])
    got = a[...]
    np.testing.assert_array_equal(got, np.array(exp["values"], dtype=exp["dtype"]))
    digest = hashlib.sha256(np.ascontiguousarray(got).astype(got.dtype.newbyteorder("<")).tobytes()).hexdigest()
    assert digest == exp["sha256_le_c_order"]
    np.testing.assert_array_equal(a[2:7, 3:6], got[2:7, 3:6])


@pytest.mark.parametrize(
    "writer, inner, readers",
    [
        # zarr-python checks the inner chunk against the untransposed shard shape, so it is given
        # a cube; the spec (and tensorstore) apply it to the transposed (9, 6, 6) shard.
        ("zarr", [3, 3, 3], ("zarr", "tensorstore", "chunkref")),
        ("tensorstore", [3, 3, 2], ("tensorstore", "chunkref")),
        ("chunkref", [3, 3, 2], ("tensorstore", "chunkref")),
        ("chunkref", [3, 3, 3], ("zarr", "tensorstore", "chunkref")),
    ],
)
@pytest.mark.filterwarnings("ignore:Combining a `sharding_indexed` codec")
def test_transpose_before_sharding(tmp_path, writer, inner, readers):
    """An array->array codec before the sharding codec: whole-shard I/O through the pipeline."""
    meta = metadata([BYTES, ZSTD], [BYTES, CRC], "end")
    meta["shape"] = [12, 12, 9]
    meta["chunk_grid"]["configuration"]["chunk_shape"] = [6, 6, 9]
    meta["codecs"] = [{"name": "transpose", "configuration": {"order": [2, 1, 0]}}, *meta["codecs"]]
    meta["codecs"][1]["configuration"]["chunk_shape"] = inner
    path = tmp_path / "arr"
    path.mkdir()
    (path / "zarr.json").write_text(json.dumps(meta))
    v = np.arange(12 * 12 * 9, dtype="int32").reshape(12, 12, 9)
    write_with(writer, path, v)
    for reader in readers:
        np.testing.assert_array_equal(read_with(reader, path), v)
        np.testing.assert_array_equal(read_with(reader, path, (slice(2, 11), slice(5, 7), slice(1, 8))), v[2:11, 5:7, 1:8])
    a = api.open_array(LocalStore(path))
    a[3:8, 1, :] = -4
    v[3:8, 1, :] = -4
    np.testing.assert_array_equal(read_with(readers[0], path), v)
