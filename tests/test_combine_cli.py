"""``chunkref combine`` command line."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import chunkref.entry as entry
from chunkref.cli.main import main
from chunkref.manifest import Manifest
from test_combine import make_nc, nc_values, open_mf


def test_cli_combine_to_kerchunk_json(tmp_path, capsys):
    files = [make_nc(tmp_path / f"c{i}.nc", 20, 20 * i, seed=i) for i in range(3)]
    out = str(tmp_path / "out.json")
    assert main(["combine", *files[::-1], "-o", out, "--concat-dim", "time"]) == 0
    m = Manifest.load(out)
    np.testing.assert_array_equal(np.asarray(entry.open(m)["tas"][...]), nc_values(files))


def test_cli_combine_refuses_what_kerchunk_cannot_express(tmp_path, capsys):
    files = [make_nc(tmp_path / f"u{i}.nc", n, s, seed=i) for i, (n, s) in enumerate([(31, 0), (28, 31)])]
    out = tmp_path / "o.json"
    assert main(["combine", *files, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'tas'" in err and "rectilinear" in err and "native" in err and f"-o {tmp_path / 'o'}" in err
    assert not out.exists()  # refused before writing anything
    # Padded chunks on a regular grid (short files in whole chunks): refused alike, by name.
    short = [make_nc(tmp_path / f"s{i}.nc", 5, 5 * i, chunk=10, unlimited=True, seed=i) for i in range(2)]
    assert main(["combine", *short, "-o", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert "'tas'" in err and "chunkref.padded" in err and "--format native" in err


@pytest.mark.parametrize("extra", [[], ["--batch-size", "2"], ["--format", "native"]])
def test_cli_combine_native_default_end_to_end(tmp_path, capsys, extra):
    lengths = [(31, 0), (28, 31), (31, 59)]
    files = [make_nc(tmp_path / f"n{i}.nc", n, s, seed=i) for i, (n, s) in enumerate(lengths)]
    out = tmp_path / "combined"
    assert main(["combine", *files[::-1], "-o", str(out), *extra]) == 0
    assert "tas (90, 3, 4)" in capsys.readouterr().err
    assert (out / "manifest.json").exists() and (out / "pages").is_dir()
    m = Manifest.load(str(out))
    arr = entry.open(m, allow=[str(tmp_path)])["tas"]
    assert m.nodes["tas"]["zarr.json"]["chunk_grid"]["name"] == "rectilinear"
    assert arr.chunk_sizes[0] == (10, 10, 10, 1, 10, 10, 8, 10, 10, 10, 1)
    np.testing.assert_array_equal(np.asarray(arr[...]), nc_values(files))
    # xarray through the saved native manifest equals open_mfdataset of the files.
    ds = xr.open_dataset(m, engine="chunkref", backend_kwargs={"allow": [str(tmp_path)]})
    xr.testing.assert_equal(ds.load(), open_mf(files).load())


def test_cli_combine_mismatch_names_file(tmp_path, capsys):
    a = make_nc(tmp_path / "a.nc", 10, 0)
    b = make_nc(tmp_path / "b.nc", 10, 10, compression="zstd")
    assert main(["combine", a, b, "-o", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert b in err and "'tas'" in err and "codecs" in err
