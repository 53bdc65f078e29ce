"""Regenerate ``examples/data/ocean_temperature.nc``, the NetCDF4 file the quickstart scans.

Needs netCDF4 (a test dependency): ``pip install -e ".[test]" && python examples/make_example_data.py``.
The file is committed, so the quickstart itself needs only chunkref's runtime dependencies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def main(path: Path = Path(__file__).parent / "data" / "ocean_temperature.nc") -> Path:
    import netCDF4

    rng = np.random.default_rng(20261121)
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.title = "chunkref example: synthetic sea surface temperature"
        ds.Conventions = "CF-1.8"
        ds.createDimension("time", None)
        ds.createDimension("lat", 36)
        ds.createDimension("lon", 72)
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "days since 2020-01-01"
        t.calendar = "standard"
        t.standard_name = "time"
        lat = ds.createVariable("lat", "f4", ("lat",))
        lat.units = "degrees_north"
        lon = ds.createVariable("lon", "f4", ("lon",))
        lon.units = "degrees_east"
        sst = ds.createVariable(
            "sst", "i2", ("time", "lat", "lon"), zlib=True, shuffle=True, complevel=4,
            chunksizes=(10, 18, 36), fill_value=np.int16(-32767),
        )
        sst.units = "degC"
        sst.scale_factor = np.float32(0.01)
        sst.add_offset = np.float32(15.0)
        sst.long_name = "sea surface temperature"
        n_time = 31
        t[:] = np.arange(n_time)
        lat[:] = np.linspace(-87.5, 87.5, 36, dtype="f4")
        lon[:] = np.linspace(2.5, 357.5, 72, dtype="f4")
        la = np.deg2rad(lat[:])[None, :, None]
        lo = np.deg2rad(lon[:])[None, None, :]
        days = np.arange(n_time)[:, None, None]
        field = 14 * np.cos(la) ** 2 + 2 * np.sin(lo + days / 10) + rng.normal(0, 0.3, (n_time, 36, 72))
        packed = np.round((field - 15.0) / 0.01).astype("i2")
        packed[:, :3, :] = -32767  # polar cap: missing
        sst.set_auto_maskandscale(False)
        sst[:] = packed
    return path


if __name__ == "__main__":
    print(main())
