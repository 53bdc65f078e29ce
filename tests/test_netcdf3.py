"""NetCDF-3 scanner: real files and generated CDF-1/2/5 files against netCDF4-python and kerchunk."""

from __future__ import annotations

import base64
import glob
import json
import os
import struct
import warnings

import numpy as np
import pytest

from chunkref.errors import ScanError
from chunkref.manifest import Manifest
from chunkref.manifest.kerchunk import read_kerchunk
from chunkref.reference import ReferenceStore
from chunkref.scanners.netcdf3 import NC_DEFAULT_FILL, scan_netcdf3

netCDF4 = pytest.importorskip("netCDF4")

REALDATA = "/work/shared/realdata"
CDF_FILES = sorted(
    os.path.basename(p)
    for p in glob.glob(f"{REALDATA}/files/*")
    if open(p, "rb").read(4)[:3] == b"CDF"
)


def _decode(m: Manifest, name: str, raw: bytes) -> np.ndarray:
    """Assemble an array from its references by hand: the bytes a reader would get."""
    docs = m.nodes[name]
    if "zarr.json" in docs:
        doc = docs["zarr.json"]
        shape = tuple(doc["shape"])
        chunks = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
        dt = doc["data_type"]
        if isinstance(dt, dict):
            dtype = np.dtype(f"S{dt['configuration']['length_bytes']}")
        else:
            dtype = np.dtype(dt)
            if doc["codecs"][0]["configuration"].get("endian") == "big":
                dtype = dtype.newbyteorder(">")
    else:
        za = docs[".zarray"]
        shape, chunks, dtype = tuple(za["shape"]), tuple(za["chunks"]), np.dtype(za["dtype"])
    t = m.tables[name]
    out = np.zeros(shape, dtype)
    for flat in np.nonzero(t.present())[0].tolist():
        ref = t.lookup_flat(flat)
        data = ref.data if ref.data is not None else raw[ref.offset : ref.offset + ref.length]
        block = np.frombuffer(data, dtype).reshape(chunks)
        coords = t.coords_of(flat)
        sl = tuple(slice(c * k, min((c + 1) * k, n)) for c, k, n in zip(coords, chunks, shape))
        out[sl] = block[tuple(slice(0, s.stop - s.start) for s in sl)]
    return out


def _check_against_netcdf4(path: str, m: Manifest) -> None:
    raw = open(path, "rb").read()
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        ds.set_always_mask(False)
        assert sorted(m.arrays()) == sorted(ds.variables)
        for name, var in ds.variables.items():
            expected = np.asarray(var[...])
            got = _decode(m, name, raw)
            assert got.shape == expected.shape, name
            if expected.dtype.kind == "S":
                np.testing.assert_array_equal(got.view(np.uint8), expected.astype("S1").view(np.uint8), err_msg=name)
            else:
                assert got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("="), name
                np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("name", CDF_FILES)
@pytest.mark.parametrize("zarr_format", [3, 2])
def test_realdata_values_match_netcdf4(name, zarr_format):
    path = f"{REALDATA}/files/{name}"
    stats = {}
    m = scan_netcdf3(path, zarr_format=zarr_format, stats=stats)
    assert not m.refused
    assert stats["requests"] <= 3  # header in one block (+ one merged read of inlined arrays)
    _check_against_netcdf4(path, m)


@pytest.mark.parametrize("name", [n for n in CDF_FILES if os.path.exists(f"{REALDATA}/kerchunk_refs/{n}.kerchunk.json")])
def test_realdata_offsets_match_kerchunk(name):
    m = scan_netcdf3(f"{REALDATA}/files/{name}", zarr_format=2, inline_threshold=0)
    k = read_kerchunk(f"{REALDATA}/kerchunk_refs/{name}.kerchunk.json")
    raw = open(f"{REALDATA}/files/{name}", "rb").read()
    compared = 0
    for arr in k.arrays():
        kt, mt = k.tables[arr], m.tables[arr]
        ours, theirs = m.nodes[arr][".zarray"], k.nodes[arr][".zarray"]
        if (ours["chunks"], ours["dtype"], None) != (theirs["chunks"], theirs["dtype"], theirs["compressor"]):
            continue  # kerchunk re-encoded the array to inline it (one chunk, compressed)
        refs = kt.present() & (kt.source >= 0)
        assert np.array_equal(mt.offset[refs], kt.offset[refs]), arr
        assert np.array_equal(mt.length[refs], kt.length[refs]), arr
        compared += int(refs.sum())
        for flat, data in kt.inline.items():  # kerchunk inlined it: same bytes as our reference
            ref = mt.lookup_flat(flat)
            assert raw[ref.offset : ref.offset + ref.length] == data, arr
            compared += 1
    # (tiny.nc: kerchunk re-encoded every array, nothing left to compare)
    assert compared > 0 or not any((t.present() & (t.source >= 0)).any() for t in k.tables.values())


def test_realdata_metadata():
    m = scan_netcdf3(f"{REALDATA}/files/95031800_sao.cdf")
    doc = m.nodes["T"]["zarr.json"]
    assert doc["dimension_names"] == ["report"]
    assert doc["codecs"] == [{"name": "bytes", "configuration": {"endian": "big"}}]
    assert doc["fill_value"] == -9999.0
    assert struct.unpack("<d", base64.b64decode(doc["attributes"]["_FillValue"]))[0] == -9999.0
    cc = m.nodes["CC"]["zarr.json"]
    assert cc["data_type"] == {"name": "null_terminated_bytes", "configuration": {"length_bytes": 1}}
    assert cc["shape"] == [2084, 4] and cc["dimension_names"] == ["report", "layers"]
    assert m.attributes("")["title"] == "Surface converted data"
    v2 = scan_netcdf3(f"{REALDATA}/files/95031800_sao.cdf", zarr_format=2)
    za = v2.nodes["T"][".zarray"]
    assert za["dtype"] == ">f4" and za["fill_value"] == -9999.0 and za["chunks"] == [1]
    assert v2.nodes["T"][".zattrs"]["_ARRAY_DIMENSIONS"] == ["report"]
    assert "_FillValue" not in v2.nodes["T"][".zattrs"]


# -- generated files --------------------------------------------------------------------------

FORMATS = ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"]


def _write(path, fmt, nrec=5):
    rng = np.random.default_rng(0)
    with netCDF4.Dataset(path, "w", format=fmt) as ds:
        ds.setncattr("title", "generated")
        ds.setncattr("version", np.int32(3))
        ds.setncattr("scale", np.array([1.5, 2.5], "f8"))
        ds.setncattr("bytes_attr", np.array([-1, 2, 3], "i1"))
        ds.createDimension("time", None)
        ds.createDimension("x", 3)
        ds.createDimension("y", 5)
        ds.createDimension("strlen", 7)
        t = ds.createVariable("time", "f8", ("time",))
        t.units = "days since 2000-01-01"
        t[:] = np.arange(nrec)
        b = ds.createVariable("rb", "i1", ("time", "x"))  # 3-byte records: padded
        b[:] = rng.integers(-100, 100, (nrec, 3))
        s = ds.createVariable("rs", "i2", ("time", "y"), fill_value=np.int16(-999))
        s[: nrec - 1] = rng.integers(-1000, 1000, (nrec - 1, 5))  # last record left to fill
        s.valid_range = np.array([-1000, 1000], "i2")
        c = ds.createVariable("names", "S1", ("time", "strlen"))
        c[:] = netCDF4.stringtochar(np.array([f"n{i}" for i in range(nrec)], "S7"))
        f = ds.createVariable("field", "f4", ("x", "y"))
        f[:] = rng.random((3, 5), "f4")
        f.missing_value = np.float32(-1)
        d = ds.createVariable("unwritten", "f8", ("x",))  # never written: default fill
        d.long_name = "nothing"
        sc = ds.createVariable("scalar", "i4", ())
        sc[...] = 42
        lab = ds.createVariable("label", "S1", ("strlen",))
        lab[:] = netCDF4.stringtochar(np.array(["abc"], "S7"))[0]
        if fmt == "NETCDF3_64BIT_DATA":
            for code in ("u1", "u2", "u4", "i8", "u8"):
                v = ds.createVariable(f"v_{code}", code, ("time", "x"))
                info = np.iinfo(code)
                v[:] = rng.integers(info.min // 2, info.max // 2, (nrec, 3), dtype=code)
            ds.setncattr("big", np.array([2**40], "i8"))
            ds.setncattr("ubig", np.array([2**63 + 5], "u8"))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("zarr_format", [3, 2])
def test_generated_files_match_netcdf4(tmp_path, fmt, zarr_format):
    path = str(tmp_path / "g.nc")
    _write(path, fmt)
    m = scan_netcdf3(path, zarr_format=zarr_format)
    _check_against_netcdf4(path, m)
    attrs = m.attributes("")
    assert attrs["title"] == "generated" and attrs["version"] == 3 and attrs["scale"] == [1.5, 2.5]
    assert attrs["bytes_attr"] == [-1, 2, 3]
    if fmt == "NETCDF3_64BIT_DATA":
        assert attrs["big"] == 2**40 and attrs["ubig"] == 2**63 + 5
    if zarr_format == 3:
        assert m.nodes["unwritten"]["zarr.json"]["fill_value"] == NC_DEFAULT_FILL[6]
        assert m.nodes["rs"]["zarr.json"]["fill_value"] == -999
        assert m.nodes["rs"]["zarr.json"]["attributes"]["valid_range"] == [-1000, 1000]
        assert m.nodes["field"]["zarr.json"]["attributes"]["missing_value"] == -1.0
        assert m.nodes["scalar"]["zarr.json"]["shape"] == []
        assert m.nodes["rb"]["zarr.json"]["codecs"] == [{"name": "bytes", "configuration": {}}]
    else:
        assert m.nodes["unwritten"][".zarray"]["fill_value"] is None
        assert m.nodes["rs"][".zarray"]["fill_value"] == -999


@pytest.mark.parametrize("dtype", ["i1", "S1", "i2", "f8"])
def test_single_record_variable_is_not_padded(tmp_path, dtype):
    path = str(tmp_path / "one.nc")
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createDimension("n", 3)
        v = ds.createVariable("v", dtype, ("t", "n"))
        data = np.arange(7 * 3).reshape(7, 3) % 100
        v[:] = data.astype("S1") if dtype == "S1" else data.astype(dtype)
        ds.createVariable("fixed", "i2", ("n",))[:] = [1, 2, 3]
    m = scan_netcdf3(path, inline_threshold=0)
    t = m.tables["v"]
    itemsize = np.dtype(dtype).itemsize
    assert np.all(np.diff(t.offset.astype(np.int64)) == 3 * itemsize)  # records back to back
    _check_against_netcdf4(path, m)


def test_split_large_variables(tmp_path):
    path = str(tmp_path / "big.nc")
    with netCDF4.Dataset(path, "w", format="NETCDF3_64BIT_OFFSET") as ds:
        ds.createDimension("t", None)
        ds.createDimension("a", 60)
        ds.createDimension("b", 100)
        ds.createVariable("fixed", "f4", ("a", "b"))[:] = np.arange(6000, dtype="f4").reshape(60, 100)
        ds.createVariable("rec", "i4", ("t", "a", "b"))[:] = np.arange(2 * 6000, dtype="i4").reshape(2, 60, 100)
        ds.createVariable("other", "i2", ("t",))[:] = [1, 2]
    m = scan_netcdf3(path, max_chunk_bytes=5000)
    assert m.nodes["fixed"]["zarr.json"]["chunk_grid"]["configuration"]["chunk_shape"] == [12, 100]
    assert m.nodes["rec"]["zarr.json"]["chunk_grid"]["configuration"]["chunk_shape"] == [1, 12, 100]
    assert m.tables["rec"].grid_shape == (2, 5, 1)
    _check_against_netcdf4(path, m)
    m = scan_netcdf3(path, max_chunk_bytes=0)
    assert m.tables["fixed"].nchunks == 1
    # a prime axis: the only divisors are 1 and itself, pieces stay contiguous and full
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("p", 61)
        ds.createDimension("q", 10)
        ds.createVariable("v", "f8", ("p", "q"))[:] = np.ones((61, 10))
    m = scan_netcdf3(path, max_chunk_bytes=2000)
    assert m.nodes["v"]["zarr.json"]["chunk_grid"]["configuration"]["chunk_shape"] == [1, 10]
    _check_against_netcdf4(path, m)


def test_zero_records_and_streaming_numrecs(tmp_path):
    path = str(tmp_path / "z.nc")
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        ds.createDimension("t", None)
        ds.createVariable("v", "f4", ("t",))
    m = scan_netcdf3(path)
    assert m.nodes["v"]["zarr.json"]["shape"] == [0] and m.tables["v"].nchunks == 0
    _write(path, "NETCDF3_CLASSIC", nrec=4)
    data = bytearray(open(path, "rb").read())
    assert struct.unpack(">I", data[4:8])[0] == 4
    data[4:8] = b"\xff\xff\xff\xff"  # STREAMING: numrecs never written back
    spath = str(tmp_path / "s.nc")
    open(spath, "wb").write(bytes(data))
    m = scan_netcdf3(spath)
    assert m.nodes["time"]["zarr.json"]["shape"] == [4]


def test_long_header_few_requests(tmp_path):
    path = str(tmp_path / "h.nc")
    with netCDF4.Dataset(path, "w", format="NETCDF3_CLASSIC") as ds:
        for i in range(300):
            setattr(ds, f"attr{i}", "x" * 1000)
        ds.createDimension("n", 2)
        ds.createVariable("v", "i4", ("n",))[:] = [1, 2]
    stats = {}
    m = scan_netcdf3(path, stats=stats, inline_threshold=0)
    assert stats["header_bytes"] > 300_000
    assert stats["requests"] <= 5  # 64 KiB, then doubling
    _check_against_netcdf4(path, m)


def test_errors_name_file_and_problem(tmp_path):
    with pytest.raises(ScanError, match=r"air\.nc.*bad magic"):
        scan_netcdf3(f"{REALDATA}/files/air.nc")
    with pytest.raises(ScanError, match="file not found"):
        scan_netcdf3(str(tmp_path / "nope.nc"))
    path = str(tmp_path / "g.nc")
    _write(path, "NETCDF3_CLASSIC")
    data = open(path, "rb").read()
    cut = str(tmp_path / "cut.nc")
    open(cut, "wb").write(data[:60])
    with pytest.raises(ScanError, match=r"cut\.nc: truncated header"):
        scan_netcdf3(cut)
    header_size = {}
    scan_netcdf3(path, stats=header_size)
    open(cut, "wb").write(data[: header_size["header_bytes"] + 8])
    with pytest.raises(ScanError, match=r"cut\.nc: variable '.*' data ends at byte \d+, past the end"):
        scan_netcdf3(cut)
    bad = bytearray(data)
    pos = bad.index(b"rb\x00\x00")  # variable name, then rank, dim ids, attributes, type
    bad[pos + 4 + 4 + 8 + 8 : pos + 4 + 4 + 8 + 8 + 4] = struct.pack(">I", 77)
    open(cut, "wb").write(bytes(bad))
    with pytest.raises(ScanError, match="unknown netCDF type 77"):
        scan_netcdf3(cut)
    with pytest.raises(ScanError, match="zarr_format"):
        scan_netcdf3(path, zarr_format=4)


def test_skip_variables(tmp_path):
    path = str(tmp_path / "g.nc")
    _write(path, "NETCDF3_CLASSIC")
    m = scan_netcdf3(path, skip_variables=["rs", "names"])
    assert "rs" not in m.arrays() and "names" not in m.arrays() and "rb" in m.arrays()


def test_manifest_served_by_reference_store(tmp_path):
    path = str(tmp_path / "g.nc")
    _write(path, "NETCDF3_64BIT_OFFSET")
    m = scan_netcdf3(path)
    out = str(tmp_path / "refs.json")
    m.save(out)
    s = ReferenceStore(Manifest.load(out))
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        rec = np.asarray(ds["rs"][2])
    assert np.frombuffer(s.get("rs/2.0"), ">i2").tolist() == rec.tolist()


def test_kerchunk_json_of_scan_opens_in_xarray(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("kerchunk")
    path = str(tmp_path / "g.nc")
    _write(path, "NETCDF3_CLASSIC")
    out = str(tmp_path / "refs.json")
    scan_netcdf3(path).save(out)  # v3 scan -> kerchunk (v2) conversion
    refs = json.load(open(out))["refs"]
    assert json.loads(refs["rs/.zarray"])["fill_value"] == -999
    assert json.loads(refs["unwritten/.zarray"])["fill_value"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = xr.open_dataset(out, engine="kerchunk")
        theirs = xr.open_dataset(path, engine="netcdf4")
        for name in ["time", "rb", "rs", "field", "unwritten", "scalar"]:
            xr.testing.assert_identical(ours[name].reset_coords(drop=True), theirs[name].reset_coords(drop=True))


@pytest.mark.network
def test_scan_over_http(http_server):
    data = open(f"{REALDATA}/files/pop.nc", "rb").read()
    url = http_server.add_file("nc/pop.nc", data)
    from servers import HTTP_OPTIONS

    stats = {}
    m = scan_netcdf3(url, storage_options=HTTP_OPTIONS, stats=stats)
    assert m.sources[0].url == url and m.sources[0].size == len(data)
    assert stats["requests"] <= 3
    local = scan_netcdf3(f"{REALDATA}/files/pop.nc")
    for a in local.arrays():
        assert m.tables[a] == local.tables[a]
    s = ReferenceStore(m, allow=[http_server.url("nc")], storage_options=HTTP_OPTIONS)
    ref = m.tables["t"].lookup((0, 0))
    assert ref.data is None
    assert s.get("t/c/0/0") == data[ref.offset : ref.offset + ref.length]
