"""kerchunk parquet references: our writer vs fsspec/kerchunk readers and back."""

from __future__ import annotations

import numpy as np
import pytest

from chunkref.manifest import ChunkTable, Manifest
from chunkref.manifest.table import WHOLE

pytest.importorskip("pyarrow")


def zarray(shape, chunks):
    return {
        ".zarray": {"zarr_format": 2, "shape": list(shape), "chunks": list(chunks), "dtype": "<i4",
                    "compressor": None, "filters": None, "fill_value": 0, "order": "C"},
        ".zattrs": {"_ARRAY_DIMENSIONS": [f"d{i}" for i in range(len(shape))]},
    }


def build(tmp_path):
    data = np.arange(12 * 10, dtype="<i4").reshape(12, 10)
    src = tmp_path / "raw.bin"
    src.write_bytes(data.tobytes())
    whole = tmp_path / "whole.bin"
    whole.write_bytes(np.full((2, 5), 9, "<i4").tobytes())
    m = Manifest()
    s = m.add_source(str(src))
    w = m.add_source(str(whole))
    t = ChunkTable.empty((6, 2))
    # chunks of (2, 5): build from C-contiguous blocks of a re-laid-out file
    blocks = []
    for i in range(6):
        for j in range(2):
            blocks.append(np.ascontiguousarray(data[2 * i : 2 * i + 2, 5 * j : 5 * j + 5]).tobytes())
    src.write_bytes(b"".join(blocks))
    t.set_refs(np.arange(12), s, np.arange(12) * 40, 40)
    t.set_absent((5, 1))
    t.set_inline((0, 1), blocks[1])
    t.set_ref((4, 0), w, 0, int(WHOLE))
    expected = data.copy()
    expected[10:12, 5:10] = 0
    expected[8:10, 0:5] = 9
    m.add_group("g", attributes={"title": "t"}, zarr_format=2)
    m.add_array("g/v", zarray((12, 10), (2, 5)), t)
    return m, expected


def test_round_trip_and_fsspec_reads_ours(tmp_path):
    m, expected = build(tmp_path)
    out = tmp_path / "refs.parquet"
    m.save(str(out), record_size=5)
    assert sorted(p.name for p in (out / "g" / "v").iterdir()) == ["refs.0.parq", "refs.1.parq", "refs.2.parq"]
    back = Manifest.load(str(out))
    assert back.tables["g/v"] == m.tables["g/v"]
    assert back.attributes("g") == {"title": "t"}
    # fsspec's ReferenceFileSystem (LazyReferenceMapper) reads our directory chunk by chunk
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.reference import LazyReferenceMapper

    mapper = LazyReferenceMapper(str(out), fsspec.filesystem("file"), engine="pyarrow")
    fs = fsspec.filesystem("reference", fo=mapper, remote_protocol="file")
    assert fs.cat_file("g/.zattrs") and '"title"' in fs.cat_file("g/.zattrs").decode()
    for i in range(6):
        for j in range(2):
            key = f"g/v/{i}.{j}"
            if (i, j) == (5, 1):
                # a null path is a missing chunk; fsspec reads it as KeyError with fastparquet,
                # and trips over pandas' NaN for nulls with the pyarrow engine (TypeError)
                with pytest.raises((KeyError, FileNotFoundError, TypeError)):
                    fs.cat_file(key)
                continue
            got = np.frombuffer(fs.cat_file(key), "<i4").reshape(2, 5)
            np.testing.assert_array_equal(got, expected[2 * i : 2 * i + 2, 5 * j : 5 * j + 5])


def test_kerchunk_written_parquet_reads(tmp_path):
    m, expected = build(tmp_path)
    refs = m.tables["g/v"]
    kjson = tmp_path / "refs.json"
    m.save(str(kjson))
    out = tmp_path / "k.parq"
    import json

    # what kerchunk.df.refs_to_dataframe does, with the pyarrow engine (fastparquet is absent)
    import fsspec
    from fsspec.implementations.reference import LazyReferenceMapper

    mapper = LazyReferenceMapper.create(str(out), fs=fsspec.filesystem("file"), record_size=4, engine="pyarrow")
    refs_json = json.loads(kjson.read_text())
    for k in sorted(refs_json["refs"]):
        value = refs_json["refs"][k]
        if isinstance(value, list) and "templates" in refs_json:
            value = [refs_json["templates"].get(value[0][2:-2], value[0]), *value[1:]]
        mapper[k] = value
    mapper.flush()
    back = Manifest.load(str(out))
    assert back.tables["g/v"] == refs
    # kerchunk JSON -> native -> parquet -> native: same tables
    native = tmp_path / "native"
    Manifest.load(str(kjson)).save(str(native))
    Manifest.load(str(native)).save(str(tmp_path / "again.parquet"))
    assert Manifest.load(str(tmp_path / "again.parquet")).tables["g/v"] == refs
    import chunkref

    arr = chunkref.open(str(tmp_path / "again.parquet"), path="g/v", allow=[str(tmp_path)])
    np.testing.assert_array_equal(arr[:], expected)


def test_missing_pyarrow_is_a_clear_error(monkeypatch, tmp_path):
    import builtins

    from chunkref.errors import ManifestError

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    m, _ = build(tmp_path)
    with pytest.raises(ManifestError, match="pyarrow"):
        m.save(str(tmp_path / "x.parquet"))
