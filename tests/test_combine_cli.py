"""``chunkref combine`` command line."""

from __future__ import annotations

import numpy as np

import chunkref.entry as entry
from chunkref.cli.main import main
from chunkref.manifest import Manifest
from test_combine import make_nc, nc_values


def test_cli_combine_to_kerchunk_json(tmp_path, capsys):
    files = [make_nc(tmp_path / f"c{i}.nc", 20, 20 * i, seed=i) for i in range(3)]
    out = str(tmp_path / "out.json")
    assert main(["combine", *files[::-1], "-o", out, "--concat-dim", "time"]) == 0
    m = Manifest.load(out)
    np.testing.assert_array_equal(np.asarray(entry.open(m)["tas"][...]), nc_values(files))


def test_cli_combine_refuses_what_kerchunk_cannot_express(tmp_path, capsys):
    files = [make_nc(tmp_path / f"u{i}.nc", n, s, seed=i) for i, (n, s) in enumerate([(31, 0), (28, 31)])]
    assert main(["combine", *files, "-o", str(tmp_path / "o.json")]) == 2
    assert "rectilinear" in capsys.readouterr().err


def test_cli_combine_mismatch_names_file(tmp_path, capsys):
    a = make_nc(tmp_path / "a.nc", 10, 0)
    b = make_nc(tmp_path / "b.nc", 10, 10, compression="zstd")
    assert main(["combine", a, b, "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert b in err and "'tas'" in err and "codecs" in err
