"""scan_hdf5 on generated fixtures (fixtures/make_fixtures.py): one file per feature, every
variable read equal to h5py (netCDF4 for NetCDF semantics), refusals only where designed."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import fsspec
import h5py
import numcodecs
import numpy as np
import pytest

from chunkref.errors import ChunkDecodeError, ScanError
from chunkref.scanners import scan_hdf5
from chunkref.zarr.codecs.hdf5 import HDF5NBit, HDF5ScaleOffset
from test_scan_hdf5_reader import _read_source, assert_same, assert_scan_matches_h5py, read_array

_spec = importlib.util.spec_from_file_location(
    "make_fixtures", Path(__file__).resolve().parent.parent / "fixtures" / "make_fixtures.py"
)
make_fixtures = importlib.util.module_from_spec(_spec)
sys.modules["make_fixtures"] = make_fixtures
_spec.loader.exec_module(make_fixtures)


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    d = tmp_path_factory.mktemp("hdf5fx")
    built = make_fixtures.make_all(str(d))
    cwd = os.getcwd()
    os.chdir(d)  # h5py resolves external links / VDS sources from here (the oracle side)
    yield built
    os.chdir(cwd)


NAMES = sorted(make_fixtures.BUILDERS)


@pytest.mark.parametrize("zarr_format", [3, 2])
@pytest.mark.parametrize("name", [n for n in NAMES if n != "netcdf4.nc"])
def test_fixture_reads_like_h5py(fx, name, zarr_format):
    path, refused = fx[name]
    m = scan_hdf5(path, zarr_format=zarr_format)
    assert set(m.refused) == set(refused), m.refused
    for var, fragment in refused.items():
        assert fragment in m.refused[var]
    assert assert_scan_matches_h5py(m, path) == len(m.arrays()) > 0


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_netcdf4_reads_like_netcdf4(fx, zarr_format):
    import netCDF4

    path, _ = fx["netcdf4.nc"]
    m = scan_hdf5(path, zarr_format=zarr_format)
    assert m.refused == {}
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_maskandscale(False)
        for var in m.arrays():
            group, _, name = var.rpartition("/")
            v = (ds[group] if group else ds).variables[name]
            want = np.asarray(v[...])
            if want.dtype.kind == "U" or v.dtype is str:
                want = np.asarray(v[...], dtype=object)
            assert_same(read_array(m, var), want, var)
            doc = m.nodes[var]
            dims = doc["zarr.json"]["dimension_names"] if zarr_format == 3 else doc[".zattrs"]["_ARRAY_DIMENSIONS"]
            assert tuple(dims) == v.dimensions
    # Dimension-only datasets (lon, nv, sub/x) are dimensions, not variables, as in netCDF4.
    assert {"lon", "nv", "sub/x"}.isdisjoint(m.arrays())


def test_netcdf4_fill_value_semantics(fx):
    path, _ = fx["netcdf4.nc"]
    v3 = scan_hdf5(path, zarr_format=3)
    doc = v3.nodes["temp"]["zarr.json"]
    assert doc["fill_value"] == -999
    assert doc["attributes"]["_FillValue"] == -999
    assert doc["attributes"]["scale_factor"] == float(np.float32(0.01))
    for hidden in ("DIMENSION_LIST", "_Netcdf4Dimid", "_Netcdf4Coordinates", "REFERENCE_LIST", "CLASS", "NAME"):
        assert hidden not in doc["attributes"]
    assert "_NCProperties" not in v3.nodes[""]["zarr.json"]["attributes"]
    v2 = scan_hdf5(path, zarr_format=2)
    assert v2.nodes["temp"][".zarray"]["fill_value"] == -999
    assert "_FillValue" not in v2.nodes["temp"][".zattrs"]
    # No _FillValue and every chunk written: null, so real zeros are never masked.
    assert v2.nodes["nofill"][".zarray"]["fill_value"] is None
    assert v2.nodes["lat"][".zarray"]["fill_value"] is None


def test_netcdf4_float_fill_attribute_is_xarray_v3_encoding(tmp_path):
    import base64
    import struct

    import netCDF4

    p = tmp_path / "f.nc"
    with netCDF4.Dataset(p, "w") as ds:
        ds.createDimension("x", 3)
        v = ds.createVariable("v", "f4", ("x",), fill_value=np.float32(1e37))
        v[:] = [1, 2, 3]
    doc = scan_hdf5(str(p)).nodes["v"]["zarr.json"]
    assert struct.unpack("<d", base64.b64decode(doc["attributes"]["_FillValue"]))[0] == float(np.float32(1e37))
    assert doc["fill_value"] == float(np.float32(1e37))


def test_phony_dims_match_netcdf4(fx):
    import netCDF4

    path, _ = fx["phony.h5"]
    m = scan_hdf5(path)
    with netCDF4.Dataset(path) as ds:
        for var in m.arrays():
            assert tuple(m.nodes[var]["zarr.json"]["dimension_names"]) == ds.variables[var].dimensions


def test_filter_codecs_in_metadata(fx):
    path, _ = fx["filters.h5"]
    m = scan_hdf5(path)

    def names(var):
        return [c["name"] for c in m.nodes[var]["zarr.json"]["codecs"]]

    assert names("gzip_shuffle") == ["bytes", "numcodecs.shuffle", "numcodecs.zlib"]
    assert names("fletcher32_gzip") == ["bytes", "numcodecs.shuffle", "numcodecs.zlib", "numcodecs.fletcher32"]
    assert names("szip")[-1] == "numcodecs.imagecodecs_szip"
    assert names("lz4")[-1] == "numcodecs.imagecodecs_lz4h5"
    assert names("scaleoffset_float")[-1] == "numcodecs.chunkref.hdf5.scaleoffset"
    assert names("nbit_compound")[-1] == "numcodecs.chunkref.hdf5.nbit"
    assert names("bitshuffle_lz4")[-1] == "numcodecs.chunkref.hdf5.bitshuffle"
    assert m.nodes["scaleoffset_double_be"]["zarr.json"]["codecs"][0]["configuration"]["endian"] == "big"
    # The chunk stored with deflate skipped was re-encoded and inlined.
    t = scan_hdf5(path, inline_threshold=0).tables["filter_mask"]
    assert 3 in t.inline and len(t.inline) == 1


def test_types_metadata(fx):
    path, _ = fx["types.h5"]
    m = scan_hdf5(path)
    docs = {p: m.nodes[p]["zarr.json"] for p in m.arrays()}
    assert docs["f8_be"]["data_type"] == "float64"
    assert docs["f8_be"]["codecs"][0]["configuration"]["endian"] == "big"
    assert docs["bool"]["data_type"] == "bool"
    assert docs["enum"]["data_type"] == "int8"
    assert docs["enum"]["attributes"]["_hdf5_enum"] == {"RED": 0, "GREEN": 1, "BLUE": 42}
    assert docs["vlen_str"]["data_type"] == "string"
    assert docs["complex_ri"]["data_type"] == "complex64"
    assert docs["opaque"]["data_type"]["name"] == "raw_bytes"
    assert docs["array_type"]["shape"] == [4, 2, 3]
    assert docs["compound_padded"]["attributes"]["_hdf5_padding_fields"] == ["_padding_1"]
    assert read_array(m, "objref").tolist() == ["/bool", "/enum", ""]


def test_layouts(fx):
    path, _ = fx["layouts.h5"]
    m = scan_hdf5(path, contiguous_split_bytes=64 << 10)
    big = m.nodes["big_contiguous"]["zarr.json"]
    assert big["chunk_grid"]["configuration"]["chunk_shape"] == [32, 512]
    assert m.tables["big_contiguous"].nchunks == 16
    assert m.tables["unallocated_contiguous"].present().sum() == 0
    assert m.nodes["unallocated_contiguous"]["zarr.json"]["fill_value"] == -7
    assert int(m.tables["partial"].present().sum()) == 2
    assert m.nodes["oversized_chunk"]["zarr.json"]["chunk_grid"]["configuration"]["chunk_shape"] == [1024]
    assert len(m.tables["compact"].inline) == 1
    assert m.nodes["scalar"]["zarr.json"]["shape"] == []
    # Tiny chunks are inlined; the threshold is respected.
    assert len(m.tables["tiny_chunks"].inline) == 10
    assert len(scan_hdf5(path, inline_threshold=0).tables["tiny_chunks"].inline) == 0
    assert_scan_matches_h5py(m, path)


def test_userblock_offsets_are_absolute(fx):
    path, _ = fx["userblock.h5"]
    m = scan_hdf5(path, inline_threshold=0)
    with h5py.File(path) as f:
        assert f.userblock_size == 1024
        for var in ("chunked", "contiguous"):
            np.testing.assert_array_equal(read_array(m, var), f[var][()])


def test_links_and_external_sources(fx):
    path, refused = fx["links.h5"]
    m = scan_hdf5(path)
    assert {"g/data", "soft_to_data", "hard_to_data", "external", "external_group/inner", "soft_to_group/data"} <= set(
        m.arrays()
    )
    assert any(s.url.endswith("links_target.h5") for s in m.sources)
    assert m.nodes["g"]["zarr.json"]["attributes"]["title"] == "group attribute"


def test_vds_refs_point_into_sources(fx):
    path, _ = fx["vds.h5"]
    m = scan_hdf5(path)
    assert len(m.sources) == 3  # the three source files (the VDS file holds no chunk bytes)
    assert m.tables["stacked"].grid_shape == (6, 2)


def test_attributes_are_json_safe_and_typed(fx):
    import json

    path, _ = fx["attributes.h5"]
    for zf in (3, 2):
        m = scan_hdf5(path, zarr_format=zf)
        attrs = m.attributes("x")
        json.dumps(attrs, allow_nan=False)
        assert attrs["int"] == -3 and attrs["uint64"] == 2**63 + 5
        assert attrs["float32"] == float(np.float32(1e37))
        assert attrs["nan"] == "NaN" and attrs["inf"] == "-Infinity"
        assert attrs["array"] == [0, 1, 2, 3] and attrs["float_array_nan"] == [1.0, "NaN"]
        assert attrs["string"] == "héllo" and attrs["bytes"] == "raw" and attrs["binary"].startswith("base64:")
        assert attrs["strings"] == ["a", "b"] and attrs["empty"] is None and attrs["bool"] is True
        assert attrs["ref"] == "/x" and attrs["missing_value"] == -2.0


def test_strict_raises_listing_refusals(fx):
    path, _ = fx["types.h5"]
    with pytest.raises(ScanError, match="regionref"):
        scan_hdf5(path, strict=True)
    assert "regionref" not in scan_hdf5(path, skip_variables=["regionref"]).refused


def test_corrupt_and_missing_files_name_the_file(tmp_path, fx):
    path, _ = fx["filters.h5"]
    data = Path(path).read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[:600])
    with pytest.raises(ScanError, match="truncated.h5"):
        scan_hdf5(str(bad))
    with pytest.raises(ScanError, match="nope.h5"):
        scan_hdf5(str(tmp_path / "nope.h5"))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5" * 100)
    with pytest.raises(ScanError, match="junk.h5"):
        scan_hdf5(str(junk))


def test_fsspec_url_with_few_requests(fx):
    path, _ = fx["filters.h5"]
    fs = fsspec.filesystem("memory")
    fs.pipe("/scan/filters.h5", Path(path).read_bytes())
    stats: dict = {}
    m = scan_hdf5("memory://scan/filters.h5", stats=stats)
    local = scan_hdf5(path)
    assert m.sources[0].url == "memory://scan/filters.h5" and m.sources[0].size == os.path.getsize(path)
    for var in local.arrays():
        assert m.tables[var] == local.tables[var]
    assert 0 < stats["requests"] <= 4  # the block cache turns HDF5's small reads into a few fetches


def test_more_than_2_31_elements(tmp_path):
    p = tmp_path / "huge.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("x", shape=(2**16, 2**16), dtype="i1", chunks=(1024, 1024), compression="gzip")
        d[0:1024, 0:1024] = 1
        d[-1024:, -1024:] = 7
    m = scan_hdf5(str(p))
    doc = m.nodes["x"]["zarr.json"]
    assert doc["shape"] == [2**16, 2**16] and math.prod(doc["shape"]) > 2**31
    t = m.tables["x"]
    assert t.grid_shape == (64, 64) and int(t.present().sum()) == 2
    ref = t.lookup((63, 63))
    raw = numcodecs.get_codec({"id": "zlib"}).decode(_read_source(m, ref))
    assert np.all(np.frombuffer(raw, "i1") == 7)


def test_scaleoffset_codec_rejects_truncated_chunk():
    codec = HDF5ScaleOffset([2, 0, 100, 0, 4, 1, 0, 0] + [0] * 12)
    header = (8).to_bytes(4, "little") + bytes([8]) + bytes(16)
    with pytest.raises(ChunkDecodeError):
        codec.decode(header + b"\x00" * 10)  # 100 values of 8 bits need 100 bytes
    assert numcodecs.get_codec(codec.get_config()).get_config() == codec.get_config()


def test_nbit_codec_roundtrips_config_and_refuses_custom_floats():
    # compound {int32 with 20 bits, float64 full}: kinds must describe both atomic fields
    cd = [15, 0, 10, 3, 12, 2, 0, 1, 4, 0, 20, 0, 4, 1, 8, 0, 64, 0]
    c = HDF5NBit(cd, "if")
    assert numcodecs.get_codec(c.get_config()).get_config() == c.get_config()
    with pytest.raises(ValueError):
        HDF5NBit([8, 0, 10, 1, 4, 0, 20, 4], "f")


@pytest.mark.parametrize("zarr_format", [3, 2])
@pytest.mark.parametrize("name", [n for n in NAMES if n != "netcdf4.nc"])
def test_fixture_reads_through_chunkref_engine(fx, name, zarr_format):
    import chunkref
    from test_scan_hdf5_reader import h5py_values

    path, _ = fx[name]
    m = scan_hdf5(path, zarr_format=zarr_format)
    group = chunkref.open(m, allow=[os.path.dirname(path) + "/"])
    with h5py.File(path) as f:
        for var in m.arrays():
            assert_same(np.asarray(group[var][...]), h5py_values(f[var]), var)
