"""Manifests read through the chunkref engine (chunkref.open / xarray engine='chunkref')."""

from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pytest

import chunkref
from chunkref.errors import HashMismatchError, SourceNotAllowedError
from chunkref.manifest import Manifest
from chunkref.manifest.cid import compute_cid
from chunkref.manifest.kerchunk import read_kerchunk
from chunkref.scanners.netcdf3 import scan_netcdf3

netCDF4 = pytest.importorskip("netCDF4")

REALDATA = "/work/shared/realdata"
FILES = f"{REALDATA}/files"
CDF_FILES = sorted(os.path.basename(p) for p in glob.glob(f"{FILES}/*") if open(p, "rb").read(3) == b"CDF")


def _expected(path):
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        ds.set_always_mask(False)
        return {name: np.asarray(v[...]) for name, v in ds.variables.items()}


@pytest.mark.parametrize("name", CDF_FILES)
@pytest.mark.parametrize("zarr_format", [3, 2])
def test_netcdf3_scan_read_through_engine(name, zarr_format):
    path = f"{FILES}/{name}"
    g = chunkref.open(scan_netcdf3(path, zarr_format=zarr_format))
    for var, expected in _expected(path).items():
        got = g[var][...]
        np.testing.assert_array_equal(got, expected, err_msg=var)
        assert got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("="), var


def test_netcdf3_split_chunks_and_saved_kerchunk_through_engine(tmp_path):
    path = str(tmp_path / "g.nc")
    rng = np.random.default_rng(1)
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_DATA") as ds:
        ds.createDimension("t", None)
        ds.createDimension("a", 40)
        ds.createDimension("b", 30)
        ds.createVariable("u8", "u8", ("t", "a"))[:] = rng.integers(0, 2**63, (3, 40), dtype="u8")
        ds.createVariable("f", "f4", ("t", "a", "b"))[:] = rng.random((3, 40, 30), "f4")
        ds.createVariable("fixed", "i2", ("a", "b"))[:] = rng.integers(-9, 9, (40, 30))
    m = scan_netcdf3(path, max_chunk_bytes=1000)
    assert m.tables["f"].grid_shape == (3, 5, 1)
    g = chunkref.open(m)
    exp = _expected(path)
    for var in exp:
        np.testing.assert_array_equal(g[var][...], exp[var])
    np.testing.assert_array_equal(g["f"][1, 7:23, 3], exp["f"][1, 7:23, 3])
    out = str(tmp_path / "refs.json")
    m.save(out)
    g2 = chunkref.open(out)
    for var in exp:
        np.testing.assert_array_equal(g2[var][...], exp[var])


@pytest.mark.parametrize("name", ["air.nc", "compressed.hdf5", "tas_Amon_HadGEM2-ES_rcp85_r1i1p1_200512-203011.nc",
                                  "95031800_sao.cdf"])
def test_realdata_kerchunk_refs_through_engine(name):
    m = read_kerchunk(f"{REALDATA}/kerchunk_refs/{name}.kerchunk.json")
    # The refs hold bare basenames relative to ../files/: relocate them, and authorize that folder.
    with pytest.raises(SourceNotAllowedError):
        chunkref.open(m, rename={name: f"{FILES}/{name}"})
    g = chunkref.open(m, rename={name: f"{FILES}/{name}"}, allow=[FILES])
    import h5py

    if open(f"{FILES}/{name}", "rb").read(3) == b"CDF":
        exp = _expected(f"{FILES}/{name}")
    else:
        with h5py.File(f"{FILES}/{name}") as f:
            exp = {a: f[a][()] for a in m.arrays() if isinstance(f.get(a), h5py.Dataset)}
    checked = 0
    for arr in m.arrays():
        if arr not in exp or exp[arr].dtype.kind not in "iufS":
            continue
        got = g[arr][...]
        if exp[arr].dtype.kind == "S":
            assert got.tobytes() == np.asarray(exp[arr]).astype(got.dtype).tobytes(), arr
        else:
            np.testing.assert_array_equal(got, exp[arr], err_msg=arr)
        checked += 1
    assert checked


def test_verify_through_engine(tmp_path):
    path = str(tmp_path / "v.nc")
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("n", 50)
        ds.createVariable("x", "f8", ("n",))[:] = np.arange(50.0)
    m = scan_netcdf3(path, inline_threshold=0)
    t = m.tables["x"]
    raw = open(path, "rb").read()
    ref = t.lookup((0,))
    t.set_cid((0,), compute_cid(raw[ref.offset : ref.offset + ref.length]))
    g = chunkref.open(m, verify=True)
    np.testing.assert_array_equal(g["x"][...], np.arange(50.0))
    changed = bytearray(raw)
    changed[ref.offset + 8] ^= 1
    open(path, "wb").write(bytes(changed))
    with pytest.raises(HashMismatchError, match="x"):
        chunkref.open(m, verify=True)["x"][...]


def test_xarray_engine_on_netcdf3_manifest(tmp_path):
    xr = pytest.importorskip("xarray")
    path = f"{FILES}/95031800_sao.cdf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = xr.open_dataset(scan_netcdf3(path), engine="chunkref")
        theirs = xr.open_dataset(path, engine="netcdf4")
        for var in ["T", "TD", "lat", "lon", "CC", "id"]:
            xr.testing.assert_equal(ours[var].load(), theirs[var].load())


def test_manifest_without_location_reads_in_memory(tmp_path):
    m = Manifest()
    assert m.location is None
