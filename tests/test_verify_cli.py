"""``chunkref verify`` command: exit codes 0 clean / 1 problems / 2 errors, JSON output."""

from __future__ import annotations

import json
import os

import numpy as np

from chunkref.cli.main import main
from chunkref.manifest import ChunkTable, Manifest


def build(tmp_path):
    src = tmp_path / "data" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(bytes(range(256)) * 4)
    st = src.stat()
    m = Manifest()
    s = m.add_source(str(src), size=st.st_size, mtime=st.st_mtime)
    t = ChunkTable.empty((8,))
    t.set_refs(np.arange(8), s, np.arange(8) * 128, 128)
    m.add_array("x", {".zarray": {"zarr_format": 2, "shape": [1024], "chunks": [128], "dtype": "|u1",
                                  "compressor": None, "filters": None, "fill_value": 0, "order": "C"}}, t)
    m.compute_hashes(allow=[str(src.parent)])
    out = tmp_path / "manifests" / "refs"  # not next to the data: sources need --allow
    m.save(str(out))
    return src, str(out)


def test_verify_clean_changed_and_errors(tmp_path, capsys):
    src, out = build(tmp_path)
    allow = ["--allow", str(tmp_path / "data")]
    assert main(["verify", out, *allow, "-q"]) == 0
    assert "OK" in capsys.readouterr().out
    # unauthorized source: the check cannot run
    assert main(["verify", out]) == 2
    assert "not authorized" in capsys.readouterr().err
    # flip a byte, keep size and mtime
    st = src.stat()
    raw = bytearray(src.read_bytes())
    raw[300] ^= 1
    src.write_bytes(bytes(raw))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(["verify", out, *allow, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"] and report["bad_chunks"][0]["chunk"] == [2]
    assert report["bad_chunks"][0]["problem"] == "mismatch" and report["stale_sources"] == []
    # stale mtime is reported without reading chunks
    os.utime(src, (st.st_atime, st.st_mtime + 60))
    assert main(["verify", out, *allow, "--sources-only"]) == 1
    text = capsys.readouterr().out
    assert "mtime changed" in text and "a.bin" in text
    # not a manifest at all
    assert main(["verify", str(tmp_path / "nothing")]) == 2
