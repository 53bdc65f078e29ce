"""Content ids: compute_hashes, verify (content + stale sources), open(verify=True)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import chunkref
from chunkref.errors import HashMismatchError, InvalidArgumentError, SourceNotAllowedError
from chunkref.manifest import ChunkTable, Manifest
from chunkref.manifest.cid import cid_to_string, compute_cid
from chunkref.reference.trust import record_scanned


def test_golden_cid():
    assert cid_to_string(compute_cid(b"hello")) == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def zarray(n, chunk):
    return {
        ".zarray": {
            "zarr_format": 2,
            "shape": [n],
            "chunks": [chunk],
            "dtype": "<i4",
            "compressor": None,
            "filters": None,
            "fill_value": 0,
            "order": "C",
        }
    }


def make(tmp_path, nfiles=3, per_file=20, chunk=8):
    """A manifest over ``nfiles`` raw int32 files (with a header), plus the expected array."""
    m = Manifest()
    t = ChunkTable.empty((nfiles * per_file + 1,))
    values = np.arange(nfiles * per_file * chunk, dtype="<i4")
    for i in range(nfiles):
        p = tmp_path / f"src{i}.bin"
        block = values[i * per_file * chunk : (i + 1) * per_file * chunk]
        p.write_bytes(b"HDR!" + block.tobytes())
        st = p.stat()
        s = m.add_source(str(p), size=st.st_size, mtime=st.st_mtime)
        flat = np.arange(per_file) + i * per_file
        t.set_refs(flat, s, 4 + np.arange(per_file) * chunk * 4, chunk * 4)
    t.set_inline((nfiles * per_file,), np.full(chunk, 7, "<i4").tobytes())
    m.add_array("a", zarray(len(values) + chunk, chunk), t)
    # The test wrote these files itself: it vouches for them as a scanner would (else allow=).
    record_scanned(m)
    expected = np.concatenate([values, np.full(chunk, 7, "<i4")])
    return m, expected


def test_compute_hashes_fills_cids(tmp_path):
    m, expected = make(tmp_path)
    m.compute_hashes(progress=False, concurrency=3)
    t = m.tables["a"]
    for f in range(t.nchunks):
        assert t.cid_of(f) == compute_cid(expected[8 * f : 8 * f + 8].tobytes())
    again = t.cid.copy()
    m.compute_hashes(concurrency=1)
    assert np.array_equal(again, t.cid)
    report = m.verify()
    assert report.ok and report.chunks_checked == t.nchunks and report.sources_checked == 3


def test_blake3_only_when_asked(tmp_path):
    m, expected = make(tmp_path, nfiles=1, per_file=3)
    m.compute_hashes()
    assert m.tables["a"].cid[0, 2] == 0x12  # sha2-256 even though blake3 is installed
    pytest.importorskip("blake3")
    m.hash_function = "blake3"
    m.compute_hashes()
    assert m.tables["a"].cid_of(1) == compute_cid(expected[8:16].tobytes(), "blake3")
    assert m.verify().ok
    m.hash_function = "md5"
    with pytest.raises(InvalidArgumentError, match="md5"):
        m.compute_hashes()


def test_flipped_byte_caught_by_verify_and_open(tmp_path):
    m, expected = make(tmp_path)
    m.compute_hashes()
    out = tmp_path / "refs"
    m.save(str(out))
    arr = chunkref.open(str(out), path="a", verify=True)
    np.testing.assert_array_equal(arr[:], expected)
    # flip one byte of chunk 25 (file 1, chunk 5); keep size and mtime as recorded
    p = tmp_path / "src1.bin"
    st = p.stat()
    raw = bytearray(p.read_bytes())
    raw[4 + 5 * 32 + 3] ^= 0x40
    p.write_bytes(bytes(raw))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = Manifest.load(str(out)).verify()
    assert not report.ok and not report.stale_sources
    assert [(c.array, c.chunk, c.problem) for c in report.bad_chunks] == [("a", (25,), "mismatch")]
    assert report.bad_chunks[0].source.endswith("src1.bin")
    arr = chunkref.open(str(out), path="a", verify=True)
    with pytest.raises(HashMismatchError, match=r"src1\.bin") as exc:
        arr[:]
    assert "'a'" in str(exc.value) and "25" in str(exc.value)
    np.testing.assert_array_equal(arr[:200], expected[:200])  # other chunks still read
    # without verification the changed bytes are read
    assert chunkref.open(str(out), path="a")[:].tolist() != expected.tolist()


def test_stale_sources_reported(tmp_path):
    m, _ = make(tmp_path)
    m.compute_hashes()
    p0, p2 = tmp_path / "src0.bin", tmp_path / "src2.bin"
    st = p0.stat()
    os.utime(p0, (st.st_atime, st.st_mtime + 100))
    with open(p2, "ab") as f:
        f.write(b"appended")
    (tmp_path / "src1.bin").unlink()
    report = m.verify()
    problems = {(os.path.basename(s.url), s.problem) for s in report.stale_sources}
    assert ("src0.bin", "mtime") in problems and ("src2.bin", "size") in problems
    assert ("src1.bin", "missing") in problems
    assert {c.problem for c in report.bad_chunks} == {"unreadable"}
    assert len(report.bad_chunks) == 20
    assert not report.ok and "src1.bin" in report.summary()
    only_sources = m.verify(check_content=False)
    assert only_sources.chunks_checked == 0
    # (src2's mtime may or may not have moved within the clock's granularity)
    assert {(os.path.basename(s.url), s.problem) for s in only_sources.stale_sources} >= {
        ("src0.bin", "mtime"),
        ("src1.bin", "missing"),
        ("src2.bin", "size"),
    }


def test_verify_needs_authorization(tmp_path):
    m, _ = make(tmp_path)
    m.compute_hashes()
    out = tmp_path / "sub" / "refs"
    out.parent.mkdir()
    m.save(str(out))
    back = Manifest.load(str(out))
    with pytest.raises(SourceNotAllowedError):
        back.verify()
    assert back.verify(allow=[str(tmp_path)]).ok


def test_scan_hash_option(tmp_path):
    h5py = pytest.importorskip("h5py")
    p = tmp_path / "f.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=np.arange(1000, dtype="f8"), chunks=(100,), compression="gzip")
    from chunkref import scan

    m = scan(str(p), hash=True)
    t = m.tables["x"]
    assert t.cid is not None and t.cid[t.present()].any(axis=1).all()
    assert m.verify().ok
