"""chunkref in one page: scan a NetCDF4 file, open it through its manifest, keep it versioned.

Run from the repository root::

    pip install -e . && python examples/quickstart.py

Steps:

1. scan ``examples/data/ocean_temperature.nc`` into a reference manifest (no data copied);
2. save the manifest as kerchunk JSON and open it again through a reference store;
3. check every variable against a direct HDF5 read (h5py);
4. write a small derived Zarr array with the same engine;
5. print a short report.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

import chunkref
from chunkref.entry import scan

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "data" / "ocean_temperature.nc"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="chunkref-quickstart-"))
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    t0 = time.perf_counter()
    manifest = scan(SOURCE)
    t_scan = time.perf_counter() - t0
    nchunks = sum(t.nchunks for t in manifest.tables.values())

    # A manifest next to its source file may read it; anything else needs allow=[...].
    refs = work / "ocean_temperature.json"
    shutil.copy(SOURCE, work / SOURCE.name)
    manifest_local = scan(work / SOURCE.name)
    manifest_local.save(str(refs))
    root = chunkref.open(str(refs))

    checked = 0
    with h5py.File(SOURCE, "r") as f:
        for name, arr in root.arrays():
            assert np.array_equal(arr[...], f[name][...]), name
            checked += arr.size

    sst = root["sst"]
    # A derived product written with the same engine: monthly mean, as a v3 Zarr array.
    out = chunkref.open_group(str(work / "derived.zarr"), mode="w")
    mean = out.create_array("sst_mean", shape=sst.shape[1:], dtype="f4", chunks=(18, 36),
                            dimension_names=("lat", "lon"), attributes={"units": "degC"})
    raw = sst[...]
    # kerchunk JSON carries Zarr v2 metadata, where the CF _FillValue is the array's fill value.
    masked = np.where(raw == sst.fill_value, np.nan, raw * sst.attrs["scale_factor"] + sst.attrs["add_offset"])
    counts = np.isfinite(masked).sum(axis=0)
    mean[...] = np.where(counts > 0, np.nansum(masked, axis=0) / np.maximum(counts, 1), np.nan).astype("f4")
    chunkref.consolidate_metadata(str(work / "derived.zarr"))

    print("chunkref quickstart")
    print(f"  scanned    {SOURCE.name}: {len(manifest.arrays())} arrays, {nchunks} chunk references in {t_scan * 1000:.1f} ms")
    print(f"  refused    {dict(manifest.refused) or 'nothing'}")
    print(f"  manifest   {refs.name} ({refs.stat().st_size} bytes, kerchunk JSON v1)")
    print(f"  verified   {checked} values equal to h5py")
    print(f"  sst        shape={sst.shape} chunks={sst.chunks} codecs={[c['name'] for c in sst.codec_pipeline.to_json()]}")
    print(f"  derived    sst_mean: {np.nanmin(mean[...]):.2f} .. {np.nanmax(mean[...]):.2f} degC")
    print(chunkref.open_group(str(work / "derived.zarr"), mode="r").tree())


if __name__ == "__main__":
    main()
