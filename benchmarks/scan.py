"""Scan benchmark: chunkref.scan_hdf5 vs kerchunk SingleHdf5ToZarr vs bare chunk_iter into numpy.

Generates HDF5 files with N chunks (gzip+shuffle float32, 16x16 chunks of ~0.5 kB stored, so
none is small enough to be inlined) in a temporary folder,
then times, best of ``--repeat`` runs each:

* ``bare``: h5py ``chunk_iter`` filling preallocated numpy columns (the floor for any scanner
  built on h5py),
* ``chunkref``: ``scan_hdf5`` (full manifest: metadata, chunk table),
* ``kerchunk``: ``SingleHdf5ToZarr(...).translate()`` (if installed),
* ``virtualizarr``: ``HDFParser`` (if installed).

Prints µs/chunk, the ratios, and the per-chunk cost at two file sizes (it must not grow).

Usage: ``python benchmarks/scan.py [--chunks 10000 100000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import h5py
import numpy as np

from chunkref.scanners import scan_hdf5


def make_file(path: str, nchunks: int) -> None:
    cols = 1600
    rows = nchunks // (cols // 16) * 16
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        d = f.create_dataset("x", shape=(rows, cols), chunks=(16, 16), dtype="<f4", compression="gzip", shuffle=True)
        for r in range(0, rows, 1600):
            block = rng.integers(0, 64, size=(min(1600, rows - r), cols)).astype("<f4")
            d[r : r + block.shape[0]] = block


def run_bare(path: str) -> int:
    with h5py.File(path, "r") as f:
        dsid = f["x"].id
        n = dsid.get_num_chunks()
        coords = np.empty((n, 2), np.int64)
        offset = np.empty(n, np.uint64)
        length = np.empty(n, np.uint64)
        state = [0]

        def store(info):
            k = state[0]
            coords[k] = info.chunk_offset
            offset[k] = info.byte_offset
            length[k] = info.size
            state[0] = k + 1

        dsid.chunk_iter(store)
        return n


def run_chunkref(path: str) -> int:
    m = scan_hdf5(path)
    return int(m.tables["x"].present().sum())


def run_kerchunk(path: str) -> int:
    from kerchunk.hdf import SingleHdf5ToZarr

    refs = SingleHdf5ToZarr(path, inline_threshold=100).translate()
    return sum(1 for k in refs["refs"] if k.startswith("x/") and not k.endswith((".zarray", ".zattrs")))


def run_virtualizarr(path: str) -> int:
    from obstore.store import LocalStore
    from virtualizarr.parsers import HDFParser
    from virtualizarr.registry import ObjectStoreRegistry

    url = f"file://{os.path.abspath(path)}"
    registry = ObjectStoreRegistry({"file://": LocalStore()})
    ms = HDFParser()(url, registry)
    manifest = ms._group.arrays["x"].manifest
    return int((manifest._paths != "").sum())


def best(fn, path: str, repeat: int) -> tuple[float, int]:
    times = []
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn(path)
        times.append(time.perf_counter() - t)
    return min(times), n


def main() -> None:
    warnings.simplefilter("ignore")  # peers' deprecation/unstable-spec warnings
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    engines = {"bare": run_bare, "chunkref": run_chunkref}
    try:
        import kerchunk.hdf  # noqa: F401

        engines["kerchunk"] = run_kerchunk
    except ImportError:
        print("kerchunk not installed: skipped")
    try:
        import virtualizarr  # noqa: F401

        engines["virtualizarr"] = run_virtualizarr
    except ImportError:
        print("virtualizarr not installed: skipped")
    per_chunk: dict[str, dict[int, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        for n in args.chunks:
            path = os.path.join(d, f"many_{n}.h5")
            make_file(path, n)
            print(f"\n{n} chunks ({os.path.getsize(path) / 1e6:.1f} MB)")
            results = {}
            for name, fn in engines.items():
                try:
                    t, count = best(fn, path, args.repeat)
                except Exception as exc:  # a peer failing is a result, not a crash
                    print(f"  {name:12s} failed: {type(exc).__name__}: {exc}")
                    continue
                results[name] = t
                per_chunk.setdefault(name, {})[n] = t / n * 1e6
                print(f"  {name:12s} {t * 1e3:9.1f} ms  {t / n * 1e6:6.2f} µs/chunk  ({count} refs)")
            base = results.get("bare")
            ours = results.get("chunkref")
            if base and ours:
                print(f"  chunkref / bare chunk_iter = {ours / base:.2f}x")
            for peer in ("kerchunk", "virtualizarr"):
                if ours and peer in results:
                    print(f"  {peer} / chunkref = {results[peer] / ours:.2f}x")
    if len(args.chunks) > 1:
        lo, hi = min(args.chunks), max(args.chunks)
        print(f"\nper-chunk cost growth {lo} -> {hi} chunks:")
        for name, d in per_chunk.items():
            if lo in d and hi in d:
                print(f"  {name:12s} {d[lo]:.2f} -> {d[hi]:.2f} µs/chunk ({d[hi] / d[lo]:.2f}x)")


if __name__ == "__main__":
    main()
