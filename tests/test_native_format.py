"""Native manifest format: round trips, determinism, lazy loading, hostile headers, S3."""

from __future__ import annotations

import json
import os
import pickle

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import chunkref
from chunkref.errors import ManifestError
from chunkref.manifest import ChunkTable, Manifest
from chunkref.manifest.cid import compute_cid
from chunkref.manifest.native import HEADER_NAME, read_native
from chunkref.manifest.pages import PagedChunkTable
from chunkref.reference import ReferenceStore


def v3_doc(shape, chunks, dtype="int32"):
    return {
        "zarr.json": {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(shape),
            "data_type": dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0,
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            "attributes": {"units": "K", "nan": float("nan")},
        }
    }


def big_manifest(nchunks=300_000, nsrc=7, cids=False):
    m = Manifest()
    for i in range(nsrc):
        m.add_source(f"s3://bucket/data/file{i:03d}.nc", size=10**9, mtime=1700000000.5 + i, etag=f"e{i}")
    t = ChunkTable.empty((nchunks,))
    rng = np.random.default_rng(5)
    lengths = rng.integers(1000, 5000, nchunks).astype(np.uint64)
    src = np.arange(nchunks) * nsrc // nchunks
    offsets = np.zeros(nchunks, np.uint64)
    for s in range(nsrc):
        sel = src == s
        offsets[sel] = 100 + np.concatenate(([0], np.cumsum(lengths[sel])[:-1]))
    t.set_refs(np.arange(nchunks), src, offsets, lengths)
    t.set_absent((17,))
    t.set_inline((18,), b"tiny")
    if cids:
        t.cid = np.zeros((nchunks, 36), np.uint8)
        t.cid[:, :4] = [1, 0x55, 0x12, 0x20]
        t.cid[:, 4:] = rng.integers(0, 256, (nchunks, 32), dtype=np.uint8)
        t.cid[17] = 0
    m.add_array("grp/temp", v3_doc((nchunks * 4,), (4,)), t)
    m.add_group("grp", attributes={"title": "x"})
    m.refuse("grp/bad", "vlen strings in compound")
    return m


def tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def test_round_trip_and_determinism(tmp_path):
    m = big_manifest(cids=True)
    a, b = tmp_path / "a", tmp_path / "b"
    m.save(str(a))
    m.save(str(b))
    ta, tb = tree_bytes(a), tree_bytes(b)
    assert ta == tb
    assert HEADER_NAME in ta and len(ta) == 1 + 5  # 300k chunks -> 5 pages of 65536
    back = Manifest.load(str(a))
    assert isinstance(back.tables["grp/temp"], PagedChunkTable)
    assert back.nchunks == m.nchunks  # from the header, no page loaded
    assert back.tables["grp/temp"].pages_loaded == 0
    assert back.sources == m.sources and back.refused == m.refused
    assert back.attributes("grp") == {"title": "x"}
    assert back.tables["grp/temp"] == m.tables["grp/temp"]
    # a loaded manifest saves to the same bytes
    c = tmp_path / "c"
    back.save(str(c))
    assert tree_bytes(c) == ta
    # re-saving a changed manifest over an old one removes stale pages
    m.tables["grp/temp"].set_absent((0,))
    m.save(str(a))
    assert len(tree_bytes(a)) == 6 and tree_bytes(a) != ta
    assert Manifest.load(str(a)).tables["grp/temp"].lookup((0,)) is None


def test_on_disk_size_is_small(tmp_path):
    m = big_manifest()
    m.save(str(tmp_path / "m"))
    total = sum(len(v) for v in tree_bytes(tmp_path / "m").values())
    assert total / 300_000 < 3.0


class CountingMemoryFS(MemoryFileSystem):
    protocol = "countmem"
    calls: list = []  # noqa: RUF012 - shared log, reset per test

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        CountingMemoryFS.calls.append((path, len(data)))
        return data


fsspec.register_implementation("countmem", CountingMemoryFS, clobber=True)


def test_lazy_open_touches_header_and_one_page():
    m = big_manifest()
    url = "countmem://lazy/m"
    m.save(url)
    CountingMemoryFS.calls = []
    back = Manifest.load(url)
    assert [p.rsplit("/", 1)[-1] for p, _ in CountingMemoryFS.calls] == [HEADER_NAME]
    ref = back.tables["grp/temp"].lookup((200_000,))
    assert ref == m.tables["grp/temp"].lookup((200_000,))
    assert len(CountingMemoryFS.calls) == 2 and "/pages/" in CountingMemoryFS.calls[1][0]
    assert CountingMemoryFS.calls[1][1] < 300_000  # one compressed page
    # through chunkref.open + a chunk read: still header + one page (+ the chunk's source)
    CountingMemoryFS.calls = []
    store = ReferenceStore(Manifest.load(url), allow=["s3://bucket/data"])
    assert store.getsize("grp/temp/c/5") == int(m.tables["grp/temp"].length[5])
    assert len(CountingMemoryFS.calls) == 2


def test_pickle_ships_no_pages():
    m = big_manifest()
    m.save("memory://pkl/m")
    back = Manifest.load("memory://pkl/m")
    blob = pickle.dumps(back)
    assert len(blob) < 20_000
    clone = pickle.loads(blob)
    assert clone.tables["grp/temp"].lookup((5,)) == m.tables["grp/temp"].lookup((5,))


def test_open_native_end_to_end(tmp_path):
    data = np.arange(64, dtype="<i4")
    src = tmp_path / "raw.bin"
    src.write_bytes(b"HEAD" + data.tobytes())
    m = Manifest()
    s = m.add_source(str(src), size=src.stat().st_size)
    t = ChunkTable.empty((16,))
    t.set_refs(np.arange(16), s, 4 + 16 * np.arange(16), 16)
    for i in range(16):
        t.set_cid((i,), compute_cid(data[4 * i : 4 * i + 4].tobytes()))
    doc = v3_doc((64,), (4,))
    m.add_array("x", doc, t)
    out = tmp_path / "refs"
    m.save(str(out))
    arr = chunkref.open(str(out), path="x", verify=True)
    np.testing.assert_array_equal(arr[:], data)


def write_header(root, header):
    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"{root}/{HEADER_NAME}", json.dumps(header).encode())


def good_header():
    m = big_manifest(1000)
    m.save("memory://hostile/base")
    fs = fsspec.filesystem("memory")
    return json.loads(fs.cat_file(f"/hostile/base/{HEADER_NAME}"))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda h: h.update(version=2), "version"),
        (lambda h: h.update(format="other"), "format"),
        (lambda h: h.update(hash_function="md5"), "hash_function"),
        (lambda h: h["arrays"]["grp/temp"].update(grid_shape=[10**12]), "max_table_chunks"),
        (lambda h: h["arrays"]["grp/temp"].update(page_shape=[0]), "page_shape"),
        (lambda h: h["arrays"]["grp/temp"].update(page_shape=[2**30]), "page_shape"),
        (lambda h: h["arrays"]["grp/temp"].update(pages=["../../etc/passwd"]), "content id"),
        (lambda h: h["arrays"]["grp/temp"].update(pages=["bafkrei" + "a" * 52, None]), "page names"),
        (lambda h: h["arrays"]["grp/temp"].update(sources=[99]), "source"),
        (lambda h: h["arrays"]["grp/temp"].update(present=-1), "present"),
        (lambda h: h["sources"].append(h["sources"][0]), "duplicate"),
        (lambda h: h["sources"][0].update(size=-5), "size"),
        (lambda h: h["nodes"].update({"../up": {".zgroup": {"zarr_format": 2}}}), "path"),
        (lambda h: h.update(extra=1), "unknown"),
        (lambda h: h["arrays"].pop("grp/temp"), "arrays"),
    ],
)
def test_hostile_headers(mutate, match):
    h = good_header()
    mutate(h)
    write_header("/hostile/bad", h)
    with pytest.raises(ManifestError, match=match):
        read_native("memory://hostile/bad")


def test_tampered_page_and_oversized_header(monkeypatch):
    m = big_manifest(1000)
    m.save("memory://tamper/m")
    fs = fsspec.filesystem("memory")
    page = [p for p in fs.find("/tamper/m/pages")][0]
    data = bytearray(fs.cat_file(page))
    data[-1] ^= 1
    fs.pipe_file(page, bytes(data))
    back = Manifest.load("memory://tamper/m")
    with pytest.raises(ManifestError, match="content id"):
        back.tables["grp/temp"].lookup((0,))
    fs.rm(page)
    with pytest.raises(ManifestError, match="missing"):
        Manifest.load("memory://tamper/m").tables["grp/temp"].lookup((0,))
    from chunkref.config import config

    with config.set({"manifest.max_json_bytes": 100}):
        with pytest.raises(ManifestError, match="max_json_bytes"):
            Manifest.load("memory://tamper/m")
    fs.pipe_file(f"/tamper/m/{HEADER_NAME}", b"[1, 2")
    with pytest.raises(ManifestError, match="JSON"):
        Manifest.load("memory://tamper/m")


def test_s3_round_trip(s3_server):
    bucket = s3_server.make_bucket()
    url = f"s3://{bucket}/refs/m"
    m = big_manifest(70_000)
    m.save(url, **s3_server.storage_options)
    back = Manifest.load(url, **s3_server.storage_options)
    assert back.tables["grp/temp"].lookup((69_999,)) == m.tables["grp/temp"].lookup((69_999,))
    assert back.tables["grp/temp"].pages_loaded == 1
    assert back.tables["grp/temp"] == m.tables["grp/temp"]
