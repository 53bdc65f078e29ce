"""Manifests at scale: chunkref native format vs kerchunk JSON (ujson) vs kerchunk parquet.

Synthetic references: one array of N chunks from ~100 source files, monotone offsets within a
file, chunk lengths uniform in [50 kB, 150 kB), URLs ~50 characters.

Measures per format: bytes on disk per reference; open + look up one chunk (fresh process
state: the manifest is re-opened each repeat); full load; resident memory added by a full load
(tracemalloc peak for ours, RSS growth for kerchunk JSON which allocates Python objects); and for
the native format the hashing throughput against bare hashlib on a local file.

    python benchmarks/manifest.py                 # N = 10**7 (kerchunk JSON at 10**6)
    python benchmarks/manifest.py --n 1000000 --json-n 100000 --repeat 3

kerchunk JSON is measured at ``--json-n`` (default 10**6: at 10**7 it needs several GB and
minutes on this 2-core machine) and reported per reference.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import shutil
import tempfile
import time
import tracemalloc

import numpy as np

from chunkref.manifest import ChunkTable, Manifest
from chunkref.manifest.pages import PagedChunkTable


def synthetic(n: int, nfiles: int = 100, seed: int = 0) -> Manifest:
    rng = np.random.default_rng(seed)
    m = Manifest()
    for i in range(nfiles):
        m.add_source(f"s3://example-bucket/model-output/run42/file_{i:05d}.nc", size=2**40, mtime=1.7e9 + i)
    t = ChunkTable.empty((n,))
    lengths = rng.integers(50_000, 150_000, n).astype(np.uint64)
    src = (np.arange(n) * nfiles // n).astype(np.int64)
    starts = np.searchsorted(src, np.arange(nfiles))
    csum = np.cumsum(lengths) - lengths
    offsets = (csum - csum[starts[src]] + 4096).astype(np.uint64)
    t.set_refs(np.arange(n), src, offsets, lengths)
    doc = {
        ".zarray": {
            "zarr_format": 2,
            "shape": [n * 1000],
            "chunks": [1000],
            "dtype": "<f4",
            "compressor": {"id": "zlib", "level": 1},
            "filters": None,
            "fill_value": 0.0,
            "order": "C",
        }
    }
    m.add_array("var", doc, t)
    return m


def du(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_native(m: Manifest, root: str, repeat: int) -> dict:
    path = os.path.join(root, "native")
    t0 = time.perf_counter()
    m.save(path)
    save = time.perf_counter() - t0
    n = m.tables["var"].nchunks
    probe = n // 2 + 17

    def open_lookup():
        ref = Manifest.load(path).tables["var"].lookup((probe,))
        assert ref is not None

    def full():
        t = Manifest.load(path).tables["var"]
        t.load_all()
        return t

    tracemalloc.start()
    t = full()
    mem = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert isinstance(t, PagedChunkTable) and t == m.tables["var"]
    # with content ids (synthetic digests: the on-disk cost of 32 random bytes per chunk)
    mc = synthetic(n)
    tc = mc.tables["var"]
    tc.cid = np.zeros((n, 36), np.uint8)
    tc.cid[:, :4] = [1, 0x55, 0x12, 0x20]
    tc.cid[:, 4:] = np.random.default_rng(1).integers(0, 256, (n, 32), dtype=np.uint8)
    pathc = os.path.join(root, "native_cid")
    mc.save(pathc)
    tracemalloc.start()
    tcl = Manifest.load(pathc).tables["var"]
    tcl.load_all()
    memc = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del tcl, mc, tc
    return {
        "n": n,
        "disk": du(path),
        "disk_cid": du(pathc),
        "open_lookup": best(open_lookup, repeat),
        "full": best(full, repeat),
        "mem": mem,
        "mem_cid": memc,
        "save": save,
    }


def bench_json(n: int, root: str, repeat: int) -> dict:
    import ujson

    m = synthetic(n)
    path = os.path.join(root, "refs.json")
    m.save(path)
    probe = f"var/{n // 2 + 17}"

    def open_lookup():
        with open(path, "rb") as f:
            refs = ujson.loads(f.read())
        assert refs["refs"][probe]

    gc.collect()
    before = rss()
    with open(path, "rb") as f:
        refs = ujson.loads(f.read())
    mem = rss() - before
    del refs
    t = best(open_lookup, repeat)
    return {"n": n, "disk": du(path), "open_lookup": t, "full": t, "mem": mem}


def bench_parquet(m: Manifest, root: str, repeat: int) -> dict:
    import fsspec
    import pandas as pd
    from fsspec.implementations.reference import LazyReferenceMapper

    path = os.path.join(root, "refs.parq")
    m.save(path, record_size=100_000)  # the LazyReferenceMapper layout (kerchunk.df default record size)
    n = m.tables["var"].nchunks
    probe = f"var/{n // 2 + 17}"
    fs = fsspec.filesystem("file")

    def open_lookup():
        mapper = LazyReferenceMapper(path, fs, engine="pyarrow")
        assert mapper[probe]

    files = sorted(os.listdir(os.path.join(path, "var")), key=lambda s: int(s.split(".")[1]))

    def full():
        # What LazyReferenceMapper does per record file, for every file: a pandas DataFrame.
        return [pd.read_parquet(os.path.join(path, "var", f), engine="pyarrow") for f in files]

    gc.collect()
    before = rss()
    frames = full()
    mem = rss() - before
    del frames
    return {"n": n, "disk": du(path), "open_lookup": best(open_lookup, repeat), "full": best(full, repeat), "mem": mem}


def bench_hash(root: str, size: int = 256 << 20) -> dict:
    data = np.random.default_rng(2).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = os.path.join(root, "blob.bin")
    with open(path, "wb") as f:
        f.write(data)
    chunk = 1 << 18
    n = size // chunk
    m = Manifest()
    s = m.add_source(path, size=size)
    t = ChunkTable.empty((n,))
    t.set_refs(np.arange(n), s, np.arange(n) * chunk, chunk)
    m.add_array("b", {".zarray": {"zarr_format": 2, "shape": [size], "chunks": [chunk], "dtype": "|u1",
                                  "compressor": None, "filters": None, "fill_value": 0, "order": "C"}}, t)
    m.compute_hashes(progress=False)  # warm the page cache
    base = best(lambda: hashlib.sha256(data).digest(), 3)
    ours = best(lambda: m.compute_hashes(progress=False), 3)
    return {"bytes": size, "hashlib": size / base, "ours": size / ours}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--json-n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-hash", action="store_true")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="chunkref-bench-")
    try:
        m = synthetic(args.n)
        nat = bench_native(m, root, args.repeat)
        par = bench_parquet(m, root, args.repeat)
        del m
        gc.collect()
        js = bench_json(args.json_n, root, args.repeat)
        rows = [("chunkref native", nat), ("kerchunk parquet", par), ("kerchunk JSON (ujson)", js)]
        print(f"references: native/parquet {args.n:,}, JSON {args.json_n:,} (per-ref numbers scale)\n")
        print("| format | refs | disk B/ref | open + 1 lookup s | full load s | memory B/ref |")
        print("|---|---|---|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['n']:,} | {r['disk'] / r['n']:.2f} | {r['open_lookup']:.3f} | "
                  f"{r['full']:.2f} | {r['mem'] / r['n']:.1f} |")
        print(f"| chunkref native + content ids | {nat['n']:,} | {nat['disk_cid'] / nat['n']:.2f} | | | "
              f"{nat['mem_cid'] / nat['n']:.1f} |")
        print()
        scale = args.n / js["n"]
        print("ratios (kerchunk / chunkref native; JSON times scaled linearly to the same N):")
        print(f"  disk: parquet {par['disk'] / nat['disk']:.1f}x, JSON {js['disk'] * scale / nat['disk']:.0f}x")
        print(f"  open+lookup: parquet {par['open_lookup'] / nat['open_lookup']:.1f}x, "
              f"JSON {js['open_lookup'] * scale / nat['open_lookup']:.0f}x")
        print(f"  full load: parquet {par['full'] / nat['full']:.1f}x, JSON {js['full'] * scale / nat['full']:.1f}x")
        print(f"  memory/ref: parquet {par['mem'] / par['n'] / (nat['mem'] / nat['n']):.1f}x, "
              f"JSON {js['mem'] / js['n'] / (nat['mem'] / nat['n']):.0f}x")
        print(f"  native save: {nat['save']:.2f} s")
        if not args.no_hash:
            h = bench_hash(root)
            print(f"\nhashing {h['bytes'] >> 20} MiB local file in 256 KiB chunks: compute_hashes "
                  f"{h['ours'] / 1e9:.2f} GB/s vs hashlib.sha256 over the bytes in memory {h['hashlib'] / 1e9:.2f} GB/s "
                  f"({100 * h['ours'] / h['hashlib']:.0f}%)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
