"""Reading through references: chunkref vs h5py vs kerchunk + zarr-python (and netCDF4, xarray).

Two cases, each written into a fresh temporary directory:

* ``netcdf``: a NetCDF4 file (netCDF4 library) with ``tas`` (200, 360, 720) float32 in 800
  chunks of (10, 90, 72) = 259 kB, zlib level 4 + shuffle, ~207 MB decoded (peer-baselines
  5.1).  It is scanned with ``chunkref.scan`` and the manifest is also saved as kerchunk JSON,
  so every reference reader reads exactly the same byte ranges.
* ``contiguous``: an HDF5 file (h5py) with one contiguous (125, 1000, 1000) float32 dataset,
  500 MB (peer-baselines 5.2).  chunkref's scanner splits it into contiguous pieces; the
  kerchunk rows read both our saved refs and kerchunk's own (one 500 MB chunk).

Measured with a warm page cache (one untimed read first; ``--cold`` evicts the data file
before each full read), engines interleaved within each
repeat: the full read of the variable (best and median of ``--repeat``, MB/s of decoded bytes,
process CPU time over wall time), and, on freshly opened handles, the median latency of
``--chunks`` random distinct single-chunk reads (random 4 MB planes for the contiguous case)
after 5 warm-up reads.  Ratios compare throughput (full read) and latency with h5py.  Every
engine's full read is checked against h5py's before timing.

Engines: ``chunkref`` (``chunkref.open(manifest)[name][...]``; also opened from the saved
kerchunk JSON), ``h5py``, ``netcdf4``
(auto mask/scale off), ``zarr+kerchunk`` (fsspec ReferenceFileSystem, asynchronous, ->
``zarr.storage.FsspecStore`` -> ``zarr.open_array``), ``xarray chunkref`` /
``xarray netcdf4`` (``xr.open_dataset(..., engine=...)[name].values``, open included).

Run::

    python benchmarks/read_refs.py            # full size (about 1 GB of temp files)
    python benchmarks/read_refs.py --quick    # small arrays, a smoke run
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Engine:
    name: str
    open: Callable[[], Any]  # -> handle
    read_all: Callable[[Any], np.ndarray]
    read_sel: Callable[[Any, tuple[slice, ...]], np.ndarray]
    close: Callable[[Any], None] = lambda h: None
    latency: bool = True


@dataclass
class Result:
    full: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)


# --- data ------------------------------------------------------------------------------------


def tas_field(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A temperature-like field: smooth in space and time plus small noise (compresses ~2x)."""
    rng = np.random.default_rng(seed)
    nt, ny, nx = shape
    lat = np.linspace(-np.pi / 2, np.pi / 2, ny, dtype="f4")[None, :, None]
    lon = np.linspace(0, 2 * np.pi, nx, dtype="f4")[None, None, :]
    t = np.arange(nt, dtype="f4")[:, None, None]
    out = np.empty(shape, "f4")
    for i in range(0, nt, 10):  # by slabs, to bound temporaries
        s = slice(i, min(nt, i + 10))
        base = 250 + 40 * np.cos(lat) + 5 * np.sin(lon + t[s] / 30) * np.cos(2 * lat) + 3 * np.sin(2 * np.pi * t[s] / 365)
        out[s] = np.round(base + rng.normal(0, 0.5, (s.stop - s.start, ny, nx)), 2)
    return out


def make_netcdf(root: Path, quick: bool) -> tuple[Path, str, tuple[int, ...]]:
    import netCDF4

    shape = (20, 180, 360) if quick else (200, 360, 720)
    chunks = (10, 90, 72)
    path = root / "tas.nc"
    data = tas_field(shape)
    with netCDF4.Dataset(path, "w") as ds:
        for name, n in zip(("time", "lat", "lon"), shape):
            ds.createDimension(name, n)
            v = ds.createVariable(name, "f8", (name,))
            v[:] = np.arange(n, dtype="f8")
        ds["time"].units = "days since 2000-01-01"
        v = ds.createVariable("tas", "f4", ("time", "lat", "lon"), zlib=True, complevel=4, shuffle=True, chunksizes=chunks)
        v.units = "K"
        v[:] = data
    return path, "tas", chunks


def make_contiguous(root: Path, quick: bool) -> tuple[Path, str, tuple[int, ...]]:
    import h5py

    shape = (25, 200, 200) if quick else (125, 1000, 1000)
    path = root / "contiguous.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("data", shape=shape, dtype="f4")
        for i in range(shape[0]):
            ds[i] = np.full(shape[1:], i, "f4") + np.arange(shape[2], dtype="f4")
    return path, "data", (1, *shape[1:])


# --- engines ---------------------------------------------------------------------------------


def engines(path: Path, name: str, refs: Path, manifest: Any, own_refs: Path | None, netcdf: bool) -> list[Engine]:
    import fsspec
    import h5py
    import zarr
    from zarr.storage import FsspecStore

    import chunkref

    out = [
        Engine("chunkref", lambda: chunkref.open(manifest)[name], lambda a: a[...], lambda a, s: a[s]),
        Engine("chunkref on the kerchunk JSON", lambda: chunkref.open(str(refs))[name], lambda a: a[...], lambda a, s: a[s]),
        Engine("h5py", lambda: h5py.File(path, "r"), lambda f: f[name][...], lambda f, s: f[name][s], lambda f: f.close()),
    ]
    if netcdf:
        import netCDF4

        def nc_open() -> Any:
            ds = netCDF4.Dataset(path)
            ds.set_auto_maskandscale(False)
            return ds

        out.append(Engine("netcdf4", nc_open, lambda d: d[name][...], lambda d, s: d[name][s], lambda d: d.close()))

    def zarr_open(fo: Path) -> Callable[[], Any]:
        def op() -> Any:
            fs = fsspec.filesystem("reference", fo=str(fo), asynchronous=True)
            store = FsspecStore(fs, read_only=True, path="")
            return zarr.open_array(store, path=name, mode="r", zarr_format=2)

        return op

    out.append(Engine("zarr+kerchunk", zarr_open(refs), lambda a: a[...], lambda a, s: a[s]))
    if own_refs is not None:
        out.append(Engine("zarr+kerchunk own refs", zarr_open(own_refs), lambda a: a[...], lambda a, s: a[s]))
    if netcdf:
        import xarray as xr

        out.append(Engine("xarray chunkref", lambda: None,
                          lambda _: xr.open_dataset(manifest, engine="chunkref")[name].values, lambda *_: None, latency=False))
        out.append(Engine("xarray netcdf4", lambda: None,
                          lambda _: xr.open_dataset(path, engine="netcdf4")[name].values, lambda *_: None, latency=False))
    return out


# --- measurement -----------------------------------------------------------------------------


def drop_cache(path: Path) -> None:
    """Evict ``path`` from the page cache (clean pages; only this file, nobody else's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(
    engs: list[Engine], expected: np.ndarray, sels: list[tuple[slice, ...]], repeat: int, cold: Path | None = None
) -> dict[str, Result]:
    res = {e.name: Result() for e in engs}
    handles = {e.name: e.open() for e in engs}
    for e in engs:  # warm-up + correctness
        got = e.read_all(handles[e.name])
        if e.name.startswith("xarray"):
            ok = np.allclose(got, expected, equal_nan=True)
        else:
            ok = np.array_equal(got, expected)
        if not ok:
            raise SystemExit(f"{e.name}: full read differs from h5py")
        del got
    for _ in range(repeat):
        for e in engs:
            gc.collect()
            if cold is not None:
                drop_cache(cold)
            c0, t0 = time.process_time(), time.perf_counter()
            got = e.read_all(handles[e.name])
            t1, c1 = time.perf_counter(), time.process_time()
            del got
            res[e.name].full.append(t1 - t0)
            res[e.name].cpu.append((c1 - c0) / (t1 - t0))
    for e in engs:
        e.close(handles[e.name])
    # Latency: fresh handles (no chunk cache carried over), distinct random chunks.
    for e in engs:
        if not e.latency:
            continue
        h = e.open()
        for s in sels[:5]:
            e.read_sel(h, s)
        lat = []
        for s in sels[5:]:
            t0 = time.perf_counter()
            e.read_sel(h, s)
            lat.append(time.perf_counter() - t0)
        res[e.name].lat = lat
        e.close(h)
    return res


def random_chunks(shape: tuple[int, ...], chunks: tuple[int, ...], n: int, seed: int = 1) -> list[tuple[slice, ...]]:
    grid = [-(-s // c) for s, c in zip(shape, chunks)]
    total = int(np.prod(grid))
    rng = np.random.default_rng(seed)
    flat = rng.choice(total, size=min(n, total), replace=False)
    out = []
    for coords in zip(*np.unravel_index(flat, grid)):
        out.append(tuple(slice(int(i) * c, min(s, (int(i) + 1) * c)) for i, c, s in zip(coords, chunks, shape)))
    return out


def report(title: str, res: dict[str, Result], nbytes: int, unit: str) -> None:
    print(f"\n### {title}\n")
    print("| engine | full read s (best / median) | MB/s (best) | cpu/wall | throughput vs h5py | "
          f"random {unit} ms (median / p90) | latency vs h5py |")
    print("|---|---|---:|---:|---:|---|---:|")
    h_best = min(res["h5py"].full)
    h_lat = statistics.median(res["h5py"].lat)
    for name, r in res.items():
        best = min(r.full)
        med = statistics.median(r.full)
        cpu = statistics.median(r.cpu)
        if r.lat:
            lm = statistics.median(r.lat) * 1e3
            p90 = float(np.percentile(r.lat, 90)) * 1e3
            lat = f"{lm:.3f} / {p90:.3f}"
            lat_ratio = f"{lm / (h_lat * 1e3):.2f}x"
        else:
            lat, lat_ratio = "", ""
        print(f"| {name} | {best:.3f} / {med:.3f} | {nbytes / best / 1e6:,.0f} | {cpu:.2f} | "
              f"{h_best / best:.2f}x | {lat} | {lat_ratio} |")


def run(case: str, root: Path, quick: bool, repeat: int, nchunks: int, cold: bool = False, only: set[str] | None = None) -> None:
    import h5py

    import chunkref

    if case == "netcdf":
        path, name, chunks = make_netcdf(root, quick)
    else:
        path, name, chunks = make_contiguous(root, quick)
    manifest = chunkref.scan(str(path))
    refs = root / f"{path.stem}.json"
    manifest.save(str(refs))
    own = None
    if case == "contiguous":
        import ujson
        from kerchunk.hdf import SingleHdf5ToZarr

        own = root / f"{path.stem}.kerchunk.json"
        own.write_text(ujson.dumps(SingleHdf5ToZarr(str(path), inline_threshold=0).translate()))
    with h5py.File(path, "r") as f:
        expected = f[name][...]
        shape = f[name].shape
    sels = random_chunks(shape, chunks, nchunks + 5)
    engs = engines(path, name, refs, manifest, own, case == "netcdf")
    if only:
        engs = [e for e in engs if e.name in only or e.name == "h5py"]
    res = measure(engs, expected, sels, repeat, path if cold else None)
    table = manifest.tables[name]
    if case == "netcdf":
        stored = int(table.length[table.present()].sum())
        title = (f"{path.name} `{name}` {shape} float32, chunks {chunks} ({np.prod(chunks) * 4 / 1e3:.0f} kB), "
                 f"zlib 4 + shuffle, {expected.nbytes / 1e6:.0f} MB decoded, {stored / 1e6:.0f} MB stored")
        report(title, res, expected.nbytes, "chunk")
    else:
        title = (f"{path.name} `{name}` {shape} float32 contiguous, {expected.nbytes / 1e6:.0f} MB; chunkref scan: "
                 f"{table.present().sum()} pieces of {tuple(manifest.nodes[name]['zarr.json']['chunk_grid']['configuration']['chunk_shape'])}")
        report(title, res, expected.nbytes, "plane")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small arrays, few repeats")
    parser.add_argument("--repeat", type=int, default=None, help="full reads per engine (default 5, quick 2)")
    parser.add_argument("--chunks", type=int, default=None, help="random chunks for latency (default 200, quick 20)")
    parser.add_argument("--case", choices=("netcdf", "contiguous", "all"), default="all")
    parser.add_argument("--tmp", default=None, help="directory for the temporary files")
    parser.add_argument("--only", default=None, help="comma-separated engine names to run (h5py always runs)")
    parser.add_argument("--cold", action="store_true", help="evict the data file from the page cache before each full read")
    args = parser.parse_args()
    repeat = args.repeat or (2 if args.quick else 5)
    nchunks = args.chunks or (20 if args.quick else 200)
    import chunkref

    cache = "cold page cache for full reads (fadvise DONTNEED), warm for latency" if args.cold else "warm page cache"
    print(f"chunkref threads: {chunkref._threads.max_workers()}; {cache}; best of {repeat}")
    cases = ("netcdf", "contiguous") if args.case == "all" else (args.case,)
    for case in cases:
        root = Path(tempfile.mkdtemp(prefix="chunkref-readrefs-", dir=args.tmp))
        try:
            run(case, root, args.quick, repeat, nchunks if case == "netcdf" else min(nchunks, 20), args.cold,
                set(args.only.split(",")) if args.only else None)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
