"""chunkref.manifest.combine: uneven files, padded chunks, mosaics, new dims, merges, checks.

Oracles: netCDF4 (values of every file), xarray.open_mfdataset (the combined dataset), zarr-python
(must refuse a padded array).
"""

from __future__ import annotations

import glob
import json
import re

import netCDF4
import numpy as np
import pytest
import xarray as xr

import chunkref.entry as entry
from chunkref.errors import CombineError
from chunkref.manifest import Manifest
from chunkref.manifest.combine import combine, combine_append

REALDATA = "/work/shared/realdata/files"


def make_nc(
    path,
    n,
    start,
    *,
    fmt="NETCDF4",
    chunk=10,
    units="days since 2000-01-01",
    calendar="standard",
    unlimited=False,
    compression="zlib",
    complevel=4,
    dtype="f4",
    scale_factor=None,
    seed=0,
):
    """A (time, lat, lon) file with a time coordinate; values identify the file and position."""
    rng = np.random.default_rng(seed)
    ds = netCDF4.Dataset(path, "w", format=fmt)
    ds.createDimension("time", None if unlimited else n)
    ds.createDimension("lat", 3)
    ds.createDimension("lon", 4)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = units
    t.calendar = calendar
    t[:] = np.arange(n, dtype="f8") + start
    lat = ds.createVariable("lat", "f4", ("lat",))
    lat[:] = [10.0, 20.0, 30.0]
    kw = {}
    if fmt == "NETCDF4":
        kw = {"chunksizes": (chunk, 3, 4)}
        if compression:
            kw.update(compression=compression, complevel=complevel, shuffle=True)
    v = ds.createVariable("tas", dtype, ("time", "lat", "lon"), fill_value=-999.0 if dtype == "f4" else None, **kw)
    v.units = "K"
    if scale_factor is not None:
        v.scale_factor = np.float32(scale_factor)
    v.set_auto_maskandscale(False)
    data = (rng.random((n, 3, 4)) * 100).astype(dtype)
    v[:] = data
    ds.close()
    return str(path)


def nc_values(files, var="tas"):
    out = []
    for f in files:
        with netCDF4.Dataset(f) as ds:
            ds.set_auto_maskandscale(False)
            out.append(np.asarray(ds.variables[var][:]))
    return np.concatenate(out)


def read(m, path):
    return np.asarray(entry.open(m)[path][...])


def grid_of(m, path):
    return m.nodes[path]["zarr.json"]["chunk_grid"]


def codecs_of(m, path):
    return [c["name"] for c in m.nodes[path]["zarr.json"]["codecs"]]


def open_mf(files, **kw):
    return xr.open_mfdataset(files, combine="by_coords", data_vars="minimal", coords="minimal", compat="override", **kw)


# --- uneven lengths, padded partial chunks ---------------------------------------------------


@pytest.mark.parametrize("fmt", ["NETCDF4", "NETCDF3_CLASSIC"])
def test_monthly_28_30_31(tmp_path, fmt):
    lengths = [31, 28, 31, 30]
    files, start = [], 0
    for i, n in enumerate(lengths):
        files.append(make_nc(tmp_path / f"m{i}.nc", n, start, fmt=fmt, seed=i, unlimited=(i == 2)))
        start += n
    m = combine(files, "time")
    got = read(m, "tas")
    assert got.shape == (120, 3, 4)
    np.testing.assert_array_equal(got, nc_values(files))
    np.testing.assert_array_equal(read(m, "time"), np.arange(120.0))
    if fmt == "NETCDF4":
        g = grid_of(m, "tas")
        assert g["name"] == "rectilinear"
        assert codecs_of(m, "tas")[0] == "chunkref.padded"
        # Edges are exactly the files' chunks, the last one of each file clipped.
        edges = entry.open(m)["tas"].chunk_sizes[0]
        assert edges == (10, 10, 10, 1, 10, 10, 8, 10, 10, 10, 1, 10, 10, 10)
    ds = xr.open_dataset(m, engine="chunkref")
    xr.testing.assert_equal(ds.load(), open_mf(files).load())


def test_yearly_365_366(tmp_path):
    files = [
        make_nc(tmp_path / "y2003.nc", 365, 0, chunk=100, units="days since 2003-01-01", seed=1),
        make_nc(tmp_path / "y2004.nc", 366, 0, chunk=100, units="days since 2004-01-01", seed=2),
        make_nc(tmp_path / "y2005.nc", 365, 0, chunk=100, units="days since 2005-01-01", seed=3),
    ]
    m = combine(files, "time")
    np.testing.assert_array_equal(read(m, "tas"), nc_values(files))
    # Rebased exactly onto the first file's units.
    assert m.nodes["time"]["zarr.json"]["attributes"]["units"] == "days since 2003-01-01"
    np.testing.assert_array_equal(read(m, "time"), np.arange(365 + 366 + 365, dtype="f8"))
    assert entry.open(m)["tas"].chunk_sizes[0] == (100, 100, 100, 65, 100, 100, 100, 66, 100, 100, 100, 65)
    xr.testing.assert_equal(xr.open_dataset(m, engine="chunkref").load(), open_mf(files).load())


def test_equal_edges_give_regular_grid_and_order_by_time(tmp_path):
    files = [make_nc(tmp_path / f"r{i}.nc", 20, 20 * i, seed=i) for i in range(3)]
    m = combine(list(reversed(files)), "time")  # sorted by the time coordinate
    assert grid_of(m, "tas") == {"name": "regular", "configuration": {"chunk_shape": [10, 3, 4]}}
    assert codecs_of(m, "tas")[0] != "chunkref.padded"
    np.testing.assert_array_equal(read(m, "tas"), nc_values(files))


def test_short_last_chunk_and_padded_regular(tmp_path):
    # Files of 5 steps in chunks of 10 (unlimited dims allocate whole chunks): every chunk is
    # declared 5 but stored 10 -> a regular grid with the padded codec.
    files = [make_nc(tmp_path / f"s{i}.nc", 5, 5 * i, chunk=10, unlimited=True, seed=i) for i in range(3)]
    m = combine(files, "time")
    assert grid_of(m, "tas")["name"] == "regular"
    assert codecs_of(m, "tas")[0] == "chunkref.padded"
    np.testing.assert_array_equal(read(m, "tas"), nc_values(files))


def test_zarr_python_refuses_padded_array(tmp_path):
    import zarr
    from zarr.core.buffer import cpu
    from zarr.storage import MemoryStore

    files = [make_nc(tmp_path / f"z{i}.nc", 5, 5 * i, chunk=10, unlimited=True, seed=i) for i in range(2)]
    m = combine(files, "time")
    doc = m.nodes["tas"]["zarr.json"]
    assert doc["chunk_grid"]["name"] == "regular"  # zarr-python would accept the grid...
    store = MemoryStore({"zarr.json": cpu.Buffer.from_bytes(json.dumps(doc).encode())})
    with pytest.raises(Exception, match="chunkref.padded"):  # ...and refuses the codec
        zarr.open_array(store, mode="r")


def test_padded_cannot_go_to_kerchunk_json(tmp_path):
    files = [make_nc(tmp_path / f"k{i}.nc", 31 if i == 0 else 28, 31 * i, seed=i) for i in range(2)]
    m = combine(files, "time")
    with pytest.raises(Exception, match="rectilinear|chunkref.padded"):
        m.save(str(tmp_path / "out.json"))


# --- time units ------------------------------------------------------------------------------


def test_time_units_rebased_and_calendar_aliases(tmp_path):
    a = make_nc(tmp_path / "jan.nc", 31, 0, units="days since 2001-01-01", calendar="noleap", seed=1)
    b = make_nc(tmp_path / "feb.nc", 28, 0, units="days since 2001-02-01", calendar="365_day", seed=2)
    c = make_nc(tmp_path / "mar.nc", 31 * 24, 0, units="hours since 2001-03-01", calendar="noleap", seed=3)
    m = combine([a, b], "time")
    np.testing.assert_array_equal(read(m, "time"), np.arange(59.0))
    xr.testing.assert_equal(xr.open_dataset(m, engine="chunkref").load(), open_mf([a, b]).load())
    # Hours cannot be expressed in days exactly: refused, naming file, variable and field.
    with pytest.raises(CombineError) as ei:
        combine([a, b, c], "time")
    assert ei.value.file == c and ei.value.variable == "time" and ei.value.field == "units"


def test_time_rebased_after_large_coordinate_values_were_dropped(tmp_path):
    # With a tiny inline_threshold the first file's time values are not kept (the coordinate
    # would keep its references), until a later file's units need rebasing: then the dropped
    # values are read back from the first file.
    a = make_nc(tmp_path / "jan.nc", 31, 0, units="days since 2001-01-01", seed=1)
    b = make_nc(tmp_path / "jan2.nc", 28, 31, units="days since 2001-01-01", seed=2)
    c = make_nc(tmp_path / "mar.nc", 31, 0, units="days since 2001-03-01", seed=3)
    m = combine([a, b, c], "time", inline_threshold=8)
    np.testing.assert_array_equal(read(m, "time"), np.arange(90.0))
    assert m.nodes["time"]["zarr.json"]["attributes"]["units"] == "days since 2001-01-01"
    np.testing.assert_array_equal(read(m, "tas"), nc_values([a, b, c]))
    # Without a rebase the large coordinate keeps its references (not materialised).
    m = combine([a, b], "time", inline_threshold=8)
    assert m.tables["time"].source.max() >= 0
    np.testing.assert_array_equal(read(m, "time"), np.arange(59.0))


def test_time_calendar_mismatch_refused(tmp_path):
    a = make_nc(tmp_path / "a.nc", 10, 0, calendar="360_day")
    b = make_nc(tmp_path / "b.nc", 10, 10, calendar="noleap")
    with pytest.raises(CombineError) as ei:
        combine([a, b], "time")
    assert ei.value.file == b and ei.value.field == "calendar"


def test_overlapping_inputs_refused(tmp_path):
    a = make_nc(tmp_path / "a.nc", 10, 0, seed=1)
    b = make_nc(tmp_path / "b.nc", 10, 5, seed=2)
    with pytest.raises(CombineError, match="overlap"):
        combine([a, b], "time")


# --- agreement checks ------------------------------------------------------------------------


def test_zlib_levels_combine_but_zlib_vs_zstd_refused(tmp_path):
    a = make_nc(tmp_path / "l4.nc", 31, 0, complevel=4, seed=1)
    b = make_nc(tmp_path / "l5.nc", 28, 31, complevel=5, seed=2)
    m = combine([a, b], "time")
    np.testing.assert_array_equal(read(m, "tas"), nc_values([a, b]))
    c = make_nc(tmp_path / "zstd.nc", 28, 59, compression="zstd", seed=3)
    with pytest.raises(CombineError) as ei:
        combine([a, b, c], "time")
    assert (ei.value.file, ei.value.variable, ei.value.field) == (c, "tas", "codecs")
    assert c in str(ei.value) and "'tas'" in str(ei.value)


def test_dtype_mismatch_refused(tmp_path):
    a = make_nc(tmp_path / "f4.nc", 10, 0)
    b = make_nc(tmp_path / "f8.nc", 10, 10, dtype="f8")
    with pytest.raises(CombineError) as ei:
        combine([a, b], "time")
    assert (ei.value.file, ei.value.variable, ei.value.field) == (b, "tas", "data_type")


def test_scale_factor_mismatch_refused(tmp_path):
    a = make_nc(tmp_path / "s1.nc", 10, 0, scale_factor=0.5)
    b = make_nc(tmp_path / "s2.nc", 10, 10, scale_factor=0.25)
    with pytest.raises(CombineError) as ei:
        combine([a, b], "time")
    assert ei.value.field == "scale_factor" and ei.value.variable == "tas"


def test_byte_order_mismatch_refused(tmp_path):
    a = make_nc(tmp_path / "le.nc", 10, 0, compression=None)
    b = make_nc(tmp_path / "be.nc", 10, 10, fmt="NETCDF3_CLASSIC")
    with pytest.raises(CombineError) as ei:
        combine([a, b], "time")
    assert ei.value.field == "byte order" and ei.value.file == b


def test_static_variable_conflicts(tmp_path):
    a = make_nc(tmp_path / "a.nc", 10, 0)
    b = make_nc(tmp_path / "b.nc", 10, 10)
    with netCDF4.Dataset(b, "a") as ds:
        ds.variables["lat"][:] = [11.0, 21.0, 31.0]
    with pytest.raises(CombineError) as ei:
        combine([a, b], "time")
    assert (ei.value.file, ei.value.variable, ei.value.field) == (b, "lat", "values")
    m = combine([a, b], "time", conflicts="first")
    np.testing.assert_array_equal(read(m, "lat"), [10.0, 20.0, 30.0])
    assert "lat" not in combine([a, b], "time", conflicts="drop").nodes
    m = combine([a, b], "time", identical_dims=["lat"])
    np.testing.assert_array_equal(read(m, "lat"), [10.0, 20.0, 30.0])


def test_attribute_rules(tmp_path):
    a = make_nc(tmp_path / "a.nc", 10, 0)
    b = make_nc(tmp_path / "b.nc", 10, 10)
    with netCDF4.Dataset(b, "a") as ds:
        ds.variables["tas"].long_name = "other"
        ds.history = "b"
    with netCDF4.Dataset(a, "a") as ds:
        ds.variables["tas"].long_name = "first"
        ds.history = "a"
    assert combine([a, b], "time").attributes("tas")["long_name"] == "first"
    assert "long_name" not in combine([a, b], "time", attrs="drop").attributes("tas")
    with pytest.raises(CombineError) as ei:
        combine([a, b], "time", attrs="error")
    assert ei.value.file == b


# --- mosaics, new dims, merges, appends, preprocess ------------------------------------------


def make_tile(path, ys, xs, chunk=(4, 4)):
    ds = netCDF4.Dataset(path, "w")
    ds.createDimension("y", len(ys))
    ds.createDimension("x", len(xs))
    ds.createVariable("y", "f8", ("y",))[:] = ys
    ds.createVariable("x", "f8", ("x",))[:] = xs
    chunk = tuple(min(c, n) for c, n in zip(chunk, (len(ys), len(xs))))
    v = ds.createVariable("z", "i4", ("y", "x"), chunksizes=chunk, compression="zlib")
    v[:] = (np.asarray(ys)[:, None] * 1000 + np.asarray(xs)[None, :]).astype("i4")
    ds.close()
    return str(path)


def test_mosaic_uneven_tiles(tmp_path):
    ys_rows = [np.arange(0, 10), np.arange(10, 17)]  # 10 and 7 rows (descending order not needed)
    xs_cols = [np.arange(0, 6), np.arange(6, 15), np.arange(15, 18)]
    files = {}
    for i, ys in enumerate(ys_rows):
        for j, xs in enumerate(xs_cols):
            files[(i, j)] = make_tile(tmp_path / f"t{i}{j}.nc", ys, xs)
    shuffled = [files[k] for k in [(1, 2), (0, 0), (1, 0), (0, 2), (0, 1), (1, 1)]]
    m = combine(shuffled, ["y", "x"])
    z = read(m, "z")
    ys, xs = np.arange(17), np.arange(18)
    np.testing.assert_array_equal(z, ys[:, None] * 1000 + xs[None, :])
    np.testing.assert_array_equal(read(m, "y"), ys)
    np.testing.assert_array_equal(read(m, "x"), xs)
    assert grid_of(m, "z")["name"] == "rectilinear"
    # Given layout instead of coordinates.
    order = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    m2 = combine([files[k] for k in order], ["y", "x"], positions=order)
    np.testing.assert_array_equal(read(m2, "z"), z)
    ref = xr.combine_by_coords([xr.open_dataset(f) for f in files.values()])
    xr.testing.assert_equal(xr.open_dataset(m, engine="chunkref").load(), ref.load())


def test_mosaic_missing_tile_reads_as_fill(tmp_path):
    # A 2x3 mosaic of uneven tiles with tile (1, 2) absent: refused by default, fill with missing="fill".
    ys_rows = [np.arange(0, 10), np.arange(10, 17)]
    xs_cols = [np.arange(0, 6), np.arange(6, 15), np.arange(15, 18)]
    files = {
        (i, j): make_tile(tmp_path / f"t{i}{j}.nc", ys, xs)
        for i, ys in enumerate(ys_rows)
        for j, xs in enumerate(xs_cols)
        if (i, j) != (1, 2)
    }
    with pytest.raises(CombineError) as ei:
        combine(list(files.values()), ["y", "x"])
    assert ei.value.variable == "z" and ei.value.field == "missing" and "missing='fill'" in str(ei.value)
    m = combine(list(files.values())[::-1], ["y", "x"], missing="fill")
    arr = entry.open(m)["z"]
    assert arr.shape == (17, 18) and arr.chunk_sizes == ((4, 4, 2, 4, 3), (4, 2, 4, 4, 1, 3))
    z = arr[...]
    ys, xs = np.arange(17), np.arange(18)
    expect = (ys[:, None] * 1000 + xs[None, :]).astype("i4")
    expect[10:, 15:] = arr.fill_value  # the absent tile: its chunks are absent, read as the fill value
    np.testing.assert_array_equal(z, expect)
    t = m.tables["z"]
    absent = ~t.present().reshape(t.grid_shape)
    assert absent[3:, 5:].all() and absent.sum() == 2  # exactly the missing tile's chunks (2 x 1)
    np.testing.assert_array_equal(read(m, "y"), ys)
    np.testing.assert_array_equal(read(m, "x"), xs)
    # netCDF4 as the oracle for each present tile, read back out of the mosaic.
    for (i, j), f in files.items():
        y0, x0 = (0, 10)[i], (0, 6, 15)[j]
        tile = nc_values([f], "z")
        np.testing.assert_array_equal(z[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]], tile)
    # xarray's outer join of the five tiles: NaN where ours holds the fill value.
    ref = xr.combine_by_coords([xr.open_dataset(f) for f in files.values()], join="outer")
    ours = np.where(z == arr.fill_value, np.nan, z.astype("f8"))
    np.testing.assert_array_equal(ours, ref["z"].values)


def test_mosaic_tiles_of_one_row_must_be_chunked_alike(tmp_path):
    a = make_tile(tmp_path / "a.nc", np.arange(0, 10), np.arange(0, 6), chunk=(4, 4))
    b = make_tile(tmp_path / "b.nc", np.arange(0, 10), np.arange(6, 12), chunk=(5, 4))
    with pytest.raises(CombineError) as ei:
        combine([a, b], ["y", "x"])
    assert (ei.value.file, ei.value.variable, ei.value.field) == (b, "z", "chunk_grid")
    assert a in str(ei.value) and "'y'" in str(ei.value)


def test_mosaic_descending_y(tmp_path):
    a = make_tile(tmp_path / "north.nc", np.arange(20, 10, -1), np.arange(5))
    b = make_tile(tmp_path / "south.nc", np.arange(10, 3, -1), np.arange(5))
    m = combine([b, a], ["y"])
    np.testing.assert_array_equal(read(m, "y"), np.arange(20, 3, -1))


def test_new_dimension_from_file_names(tmp_path):
    files = [make_nc(tmp_path / f"member_r{i}.nc", 12, 0, seed=i) for i in (3, 1, 2)]
    m = combine(files, "member", coords={"member": re.compile(r"_r(\d+)")})
    np.testing.assert_array_equal(read(m, "member"), [1, 2, 3])
    got = read(m, "tas")
    assert got.shape == (3, 12, 3, 4)
    by_member = {int(re.search(r"_r(\d+)", f).group(1)): f for f in files}
    for k, mem in enumerate([1, 2, 3]):
        np.testing.assert_array_equal(got[k], nc_values([by_member[mem]]))
    assert entry.open(m)["time"].shape == (12,)  # coordinates are kept once
    ref = xr.open_mfdataset(
        [by_member[k] for k in (1, 2, 3)], combine="nested", concat_dim="member", data_vars="all",
        coords="minimal", compat="override",
    ).assign_coords(member=[1, 2, 3])
    xr.testing.assert_equal(xr.open_dataset(m, engine="chunkref").load(), ref.load())


def test_new_dimension_from_attribute_and_callable(tmp_path):
    files = []
    for i in range(2):
        f = make_nc(tmp_path / f"e{i}.nc", 5, 0, chunk=5, seed=i)
        with netCDF4.Dataset(f, "a") as ds:
            ds.realization = 10 + i
        files.append(f)
    m = combine(files, "ens", coords={"ens": "attr:realization"})
    np.testing.assert_array_equal(read(m, "ens"), [10, 11])
    m = combine(files, "ens", coords={"ens": lambda man, i, label: 100 - i})
    np.testing.assert_array_equal(read(m, "ens"), [99, 100])
    np.testing.assert_array_equal(read(m, "tas")[1], nc_values([files[0]]))


def _single_var(src, dst, keep):
    with netCDF4.Dataset(src) as s, netCDF4.Dataset(dst, "w") as d:
        for name, dim in s.dimensions.items():
            d.createDimension(name, None if dim.isunlimited() else len(dim))
        for name in ("time", "lat", keep):
            v = s.variables[name]
            fill = getattr(v, "_FillValue", None)
            nv = d.createVariable(name, v.dtype, v.dimensions, fill_value=fill, **({} if name != keep else {"zlib": True, "chunksizes": (10, 3, 4)}))
            nv.setncatts({k: v.getncattr(k) for k in v.ncattrs() if k != "_FillValue"})
            nv.set_auto_maskandscale(False)
            v.set_auto_maskandscale(False)
            nv[:] = v[:]
    return str(dst)


def test_merge_one_variable_per_file(tmp_path):
    parts = []
    for i, (n, start) in enumerate([(31, 0), (28, 31)]):
        base = make_nc(tmp_path / f"base{i}.nc", n, start, seed=i)
        parts.append(base)
    # pr files: same layout, different variable name.
    prs = []
    for i, f in enumerate(parts):
        dst = tmp_path / f"pr{i}.nc"
        _single_var(f, dst, "tas")
        with netCDF4.Dataset(dst, "a") as ds:
            ds.renameVariable("tas", "pr")
        prs.append(str(dst))
    m = combine(parts + prs, "time")
    np.testing.assert_array_equal(read(m, "tas"), nc_values(parts))
    np.testing.assert_array_equal(read(m, "pr"), nc_values(prs, "pr"))
    np.testing.assert_array_equal(read(m, "time"), np.arange(59.0))
    # Pure merge (no concatenation) of the two January files.
    merged = combine([parts[0], prs[0]], None)
    assert {"tas", "pr", "time", "lat"} <= set(merged.arrays())


def test_append_extends_grid(tmp_path):
    files = [make_nc(tmp_path / f"a{i}.nc", n, s, seed=i) for i, (n, s) in enumerate([(31, 0), (28, 31), (31, 59)])]
    base = combine(files[:2], "time")
    before = base.tables["tas"].copy()
    m = combine_append(base, [files[2]], "time")
    np.testing.assert_array_equal(read(m, "tas"), nc_values(files))
    assert base.tables["tas"] == before  # the existing manifest is not modified
    assert entry.open(m)["tas"].chunk_sizes[0] == (10, 10, 10, 1, 10, 10, 8, 10, 10, 10, 1)
    with pytest.raises(CombineError, match="overlap"):
        combine_append(m, [files[0]], "time")


def test_preprocess_and_manifest_inputs(tmp_path):
    files = [make_nc(tmp_path / f"p{i}.nc", 10, 10 * i, seed=i) for i in range(2)]
    seen = []

    def pre(m: Manifest) -> Manifest:
        seen.append(m.sources[0].url)
        m.refuse("ignored", "test")
        return m

    m = combine([entry.scan(files[0]), files[1]], "time", preprocess=pre)
    assert seen == files
    np.testing.assert_array_equal(read(m, "tas"), nc_values(files))


def test_tree_of_combines_equals_flat(tmp_path):
    files = [make_nc(tmp_path / f"t{i}.nc", n, int(sum([31, 28, 31, 30, 31][:i])), seed=i)
             for i, n in enumerate([31, 28, 31, 30, 31])]
    flat = combine(files, "time")
    tree = combine([combine(files[:2], "time"), combine(files[2:4], "time"), files[4]], "time")
    np.testing.assert_array_equal(read(tree, "tas"), read(flat, "tas"))
    assert tree.nodes["tas"] == flat.nodes["tas"]
    assert tree.tables["tas"] == flat.tables["tas"]


def test_cmip5_three_files_equal_open_mfdataset():
    files = sorted(glob.glob(f"{REALDATA}/tas_Amon_HadGEM2-ES_rcp85_r1i1p1_*.nc"))
    assert len(files) == 3
    m = combine(files, "time")
    assert entry.open(m)["tas"].shape == (900, 2, 2)
    ds = xr.open_dataset(m, engine="chunkref")
    ref = open_mf(files)
    xr.testing.assert_equal(ds.load(), ref.load())
    # The first file's attributes win for attributes that differ (as open_mfdataset's override).
    assert ds.attrs["history"] == ref.attrs["history"]
