"""Combining thousands of manifests: time and peak memory of chunkref's combine vs kerchunk's
MultiZarrToZarr on the same inputs.

Inputs: a daily series of monthly "files", each a manifest as a scan of a NetCDF file gives it:
``time`` (an inline coordinate), ``lat``/``lon`` (identical in every file) and
``tas(time, 3, 4)`` in chunks of 10 days, referencing the file's own source.  Built in memory,
no files.  Two series:

* ``uneven``: months of 31/28/31/30 days (a rectilinear, padded result; kerchunk cannot combine
  these correctly, so it is not run on them);
* ``even``: months of 30 days (a regular result), on which both tools run.

chunkref receives the inputs from a generator (one alive at a time), as ``combine`` is meant to
be used; kerchunk receives the list of reference dicts it needs (made with
``chunkref.manifest.kerchunk.to_kerchunk``), and is timed on ``translate()`` alone.

Each measurement runs in a fresh process: wall time and RSS growth (high-water mark over the
baseline after imports and, for kerchunk, after building its input dicts) in one run; for
chunkref also the tracemalloc peak (Python + numpy allocations) in another, because tracemalloc
slows allocation-heavy code ~3x.

    python benchmarks/combine.py                       # 1,000 and 10,000 inputs
    python benchmarks/combine.py --n 1000 --no-trace   # quick
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

LE = [{"name": "bytes", "configuration": {"endian": "little"}}]
CHUNK = 10


def _doc(shape, chunks, dtype, fill, codecs, attrs, dims):
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attrs,
        "dimension_names": list(dims),
    }


def synthetic(i: int, start: int, n: int):
    from chunkref.manifest import ChunkTable, Manifest

    m = Manifest()
    src = m.add_source(f"/data/cmip6/day/tas/tas_day_model_ssp585_r1i1p1f1_gn_{i:05d}.nc", 100_000 + i, 1.7e9 + i)
    m.add_group("", {"Conventions": "CF-1.6", "history": f"created file {i}", "title": "synthetic"})
    t = ChunkTable((1,))
    t.set_inline((0,), (np.arange(n, dtype="<f8") + start).tobytes())
    time_attrs = {"units": "days since 2000-01-01", "calendar": "standard", "standard_name": "time", "axis": "T"}
    m.add_array("time", {"zarr.json": _doc((n,), (n,), "float64", "NaN", LE, time_attrs, ("time",))}, t)
    for name, values in (("lat", [10, 20, 30]), ("lon", [0, 90, 180, 270])):
        c = ChunkTable((1,))
        c.set_inline((0,), np.asarray(values, "<f4").tobytes())
        doc = _doc((len(values),), (len(values),), "float32", "NaN", LE, {"standard_name": name}, (name,))
        m.add_array(name, {"zarr.json": doc}, c)
    nb = -(-n // CHUNK)
    codecs = LE + [
        {"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}},
        {"name": "numcodecs.zlib", "configuration": {"level": 4}},
    ]
    tas = ChunkTable((nb, 1, 1))
    tas.set_refs(np.arange(nb), src, 4096 + 20_000 * np.arange(nb), 19_000 + np.arange(nb))
    attrs = {"units": "K", "_FillValue": -999.0, "long_name": "Near-Surface Air Temperature"}
    doc = _doc((n, 3, 4), (CHUNK, 3, 4), "float32", -999.0, codecs, attrs, ("time", "lat", "lon"))
    m.add_array("tas", {"zarr.json": doc}, tas)
    return m


def series(count: int, kind: str):
    lengths = (31, 28, 31, 30) if kind == "uneven" else (30,)
    start = 0
    for i in range(count):
        n = lengths[i % len(lengths)]
        yield synthetic(i, start, n)
        start += n


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(tool: str, n: int, kind: str, trace: bool) -> dict:
    """One measurement (in a fresh process)."""
    from chunkref.manifest.combine import combine

    combine(series(3, kind), "time")  # imports and first-call caches out of the figures
    if tool == "kerchunk":
        from kerchunk.combine import MultiZarrToZarr

        from chunkref.manifest.kerchunk import to_kerchunk

        refs = [to_kerchunk(m) for m in series(n, kind)]
        gc.collect()
        base_rss, base_max = _rss(), _maxrss()
        if trace:
            tracemalloc.start()
        t0 = time.perf_counter()
        mzz = MultiZarrToZarr(refs, concat_dims=["time"], identical_dims=["lat", "lon"], inline_threshold=0)
        out = mzz.translate()
        seconds = time.perf_counter() - t0
        nrefs = len(out["refs"])
    else:
        gc.collect()
        base_rss, base_max = _rss(), _maxrss()
        if trace:
            tracemalloc.start()
        t0 = time.perf_counter()
        out = combine(series(n, kind), "time")
        seconds = time.perf_counter() - t0
        nrefs = out.nchunks
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    # ru_maxrss is a high-water mark: growth over the baseline (which never exceeds it).
    rss_growth = max(0, _maxrss() - max(base_max, base_rss))
    return {"tool": tool, "n": n, "kind": kind, "seconds": seconds, "peak": peak, "rss": rss_growth, "refs": nrefs}


def run(tool: str, n: int, kind: str, trace: bool, timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--child", tool, str(n), kind, "1" if trace else "0"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"{tool} {n} {kind} failed:\n{exc.stderr}") from exc
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="input counts (default: 1000 and 10000)")
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    ap.add_argument("--no-kerchunk", action="store_true")
    ap.add_argument("--kerchunk-timeout", type=float, default=60.0,
                    help="seconds allowed per kerchunk run (it is skipped beyond, and reported so)")
    ap.add_argument("--child", nargs=4, metavar=("TOOL", "N", "KIND", "TRACE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        tool, n, kind, trace = args.child
        print(json.dumps(child(tool, int(n), kind, trace == "1")))
        return
    counts = args.n or [1000, 10_000]
    rows = []
    for n in counts:
        for tool, kind in (("chunkref", "uneven"), ("chunkref", "even"), ("kerchunk", "even")):
            if tool == "kerchunk" and args.no_kerchunk:
                continue
            timeout = args.kerchunk_timeout if tool == "kerchunk" else 3600.0
            r = run(tool, n, kind, False, timeout)
            if r is None:
                print(f"{tool} {kind} n={n}: did not finish within {timeout:.0f} s (skipped)", flush=True)
                rows.append({"tool": tool, "n": n, "kind": kind, "seconds": None})
                continue
            if not args.no_trace and tool == "chunkref":  # kerchunk: RSS (its cost is Python objects)
                t = run(tool, n, kind, True, 4 * timeout)
                r["peak"] = None if t is None else t["peak"]
            rows.append(r)
            peak = "" if r.get("peak") is None else f"{r['peak'] / 1e6:8.1f} MB ({r['peak'] / n:6.0f} B/input)"
            print(f"{tool:9} {kind:7} n={n:6}: {r['seconds']:7.2f} s ({1e3 * r['seconds'] / n:5.2f} ms/input)  "
                  f"RSS +{r['rss'] / 1e6:7.1f} MB  tracemalloc peak {peak}  refs {r['refs']}", flush=True)
    print("\n| tool | inputs | months | s | ms/input | RSS growth MB | tracemalloc peak MB | B/input |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("seconds") is None:
            print(f"| {r['tool']} | {r['n']:,} | {r['kind']} | > {args.kerchunk_timeout:.0f} (not run to the end) | | | | |")
            continue
        peak = r.get("peak")
        peak_mb = "" if peak is None else f"{peak / 1e6:.1f}"
        per_input = "" if peak is None else f"{peak / r['n']:.0f}"
        print(f"| {r['tool']} | {r['n']:,} | {r['kind']} | {r['seconds']:.2f} | {1e3 * r['seconds'] / r['n']:.2f} | "
              f"{r['rss'] / 1e6:.1f} | {peak_mb} | {per_input} |")


if __name__ == "__main__":
    main()
