"""The ``chunkref`` command line: scan and info, exit codes, messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import chunkref
from chunkref.cli.main import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "ocean_temperature.nc"
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "files"


def test_scan_one_file_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, src)
    out = tmp_path / "ocean.json"
    assert main(["scan", str(src), "-o", str(out), "--quiet"]) == 0
    capsys.readouterr()
    refs = json.loads(out.read_text())
    assert refs["version"] == 1 and "sst/.zarray" in refs["refs"]
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    sst = next(a for a in info["arrays"] if a["path"] == "/sst")
    assert sst["shape"] == [31, 36, 72] and sst["chunks"] == [10, 18, 36]


def test_scan_many_files_into_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [REALDATA / "tiny.nc", REALDATA / "air.nc", REALDATA / "compressed.hdf5"]
    out = tmp_path / "manifests"
    assert main(["scan", *map(str, files), "-o", str(out), "--quiet"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f.name + ".json" for f in files)
    assert "3 manifest(s) written" in capsys.readouterr().out
    air = chunkref.open(str(out / "air.nc.json"), allow=[str(REALDATA) + "/"])
    import netCDF4

    with netCDF4.Dataset(REALDATA / "air.nc") as nc:
        nc.set_auto_maskandscale(False)
        np.testing.assert_array_equal(air["air"][...], nc["air"][...])


def test_scan_failure_is_nonzero_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.nc"
    bad.write_bytes(b"this is not a netCDF file at all")
    good = tmp_path / EXAMPLE.name
    shutil.copy(EXAMPLE, good)
    rc = main(["scan", str(bad), str(good), "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "notes.nc" in err and "not an HDF5" in err
    assert (tmp_path / "out" / (EXAMPLE.name + ".json")).exists()  # one bad file does not stop the rest


def test_info_of_zarr_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = chunkref.open_group(str(tmp_path / "s.zarr"), mode="w")
    g.create_array("a", shape=(35, 4), chunks=((10, 20, 5), 4), dtype="i2")
    assert main(["info", str(tmp_path / "s.zarr")]) == 0
    out = capsys.readouterr().out
    assert "/a: (35, 4) int16 rectilinear" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["scan"])
    assert exc.value.code == 2


def test_error_exit_code_for_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nothing-here.json")]) == 2
    assert "error" in capsys.readouterr().err


def test_repo_import_a_netcdf_file_and_verify_its_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(tmp_path / "repo")
    assert main(["repo", "init", repo]) == 0
    assert main(["repo", "import", repo, str(EXAMPLE), "--path", "ocean"]) == 0
    capsys.readouterr()
    # Virtual sources are read only when authorized; the refusal is reported once per source.
    assert main(["repo", "verify", repo, "--virtual"]) == 1
    out = capsys.readouterr().out
    assert out.count("not authorized") == 1 and "19 virtual chunk(s)" in out
    assert main(["repo", "verify", "--allow", str(EXAMPLE.parent) + "/", repo, "--virtual"]) == 0
    assert "19 virtual chunks: OK" in capsys.readouterr().out
