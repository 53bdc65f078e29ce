"""chunkref in one page: scan a NetCDF4 file, open it through its manifest, keep it versioned.

Run from the repository root::

    pip install -e . && python examples/quickstart.py

Steps:

1. scan ``examples/data/ocean_temperature.nc`` into a reference manifest, with a content id
   per chunk (no data copied);
2. save the manifest next to a copy of the file and open it again through a reference store;
3. check every variable against a direct HDF5 read (h5py);
4. commit the file to a content-addressed repository as virtual references, then commit a
   derived array on top of it, and look at the history and the diff;
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

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "data" / "ocean_temperature.nc"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="chunkref-quickstart-"))
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    # 1. Scan (a manifest is Zarr metadata + one reference per chunk).
    archive = work / "archive"
    archive.mkdir()
    nc = archive / SOURCE.name
    shutil.copy(SOURCE, nc)
    t0 = time.perf_counter()
    manifest = chunkref.scan(nc, hash=True)
    t_scan = time.perf_counter() - t0
    nchunks = sum(t.nchunks for t in manifest.tables.values())

    # 2. Save it next to the data (a manifest may read the files in its own folder; anything
    #    else needs allow=[...]) and open it like any Zarr hierarchy.
    refs = archive / "ocean_temperature.chunkref"
    manifest.save(str(refs))
    root = chunkref.open(str(refs), verify=True)

    # 3. Every value equals h5py's.
    checked = 0
    with h5py.File(nc, "r") as f:
        for name, arr in root.arrays():
            assert np.array_equal(arr[...], f[name][...]), name
            checked += arr.size

    # 4. Version it: import as virtual references, then add a derived product.
    repo = chunkref.Repository.create(str(work / "repo"), allow=[str(archive) + "/"])
    first = repo.import_manifest(manifest, path="ocean", message="Import ocean_temperature.nc")
    session = repo.writable_session("main")
    group = chunkref.open_group(session.store, mode="a")
    sst = group["ocean/sst"]
    raw = sst[...]
    fill = sst.attrs["_FillValue"]
    values = np.where(raw == fill, np.nan, raw * sst.attrs["scale_factor"] + sst.attrs["add_offset"])
    counts = np.isfinite(values).sum(axis=0)
    mean = np.where(counts > 0, np.nansum(values, axis=0) / np.maximum(counts, 1), np.nan).astype("f4")
    out = group.create_array("ocean/sst_mean", shape=mean.shape, dtype="f4", chunks=(18, 36),
                             dimension_names=("lat", "lon"), attributes={"units": "degC"})
    out[...] = mean
    second = session.commit("Add the monthly mean")
    diff = repo.diff(first, second)

    print("chunkref quickstart")
    print(f"  scanned   {SOURCE.name}: {len(manifest.arrays())} arrays, {nchunks} chunk references, "
          f"content ids included, in {t_scan * 1000:.0f} ms")
    print(f"  refused   {dict(manifest.refused) or 'nothing'}")
    print(f"  opened    {refs.name} (native manifest) with verify=True: {checked} values equal to h5py")
    print(f"  sst       shape={sst.shape} chunks={sst.chunks} codecs={[c['name'] for c in sst.codec_pipeline.to_json()]}")
    print(f"  derived   sst_mean {np.nanmin(mean):.2f} .. {np.nanmax(mean):.2f} degC")
    print("  history")
    for commit in repo.log("main"):
        print(f"    {commit.cid[:16]}…  {commit.message}")
    print("  diff (import -> mean)")
    for line in str(diff).splitlines():
        print(f"    {line}")
    latest = chunkref.open_group(repo.readonly_session(branch="main").store, mode="r")
    print(latest.tree())


if __name__ == "__main__":
    main()
