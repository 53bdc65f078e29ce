"""Sharded Zarr v3 arrays: chunkref vs zarr-python vs tensorstore, side by side in one process.

Array: uint16 ``N^3`` (default 512^3 = 256 MiB) of smooth data plus a little noise, zstd level 1
(``checksum: false``), shards 256^3 with inner chunks 32^3 and 16^3, index ``bytes`` + ``crc32c``
at the end (identical metadata on all sides), in a local temporary directory (warm page cache, no
fsync).  Metrics, each the median of ``--repeat`` runs (min-max shown):

* ``write``    create the array and write all of it from memory;
* ``read_full`` read all of it into a new array (the array opened beforehand);
* ``chunk``    read one random inner chunk (aligned), ``--chunk-reads`` times, after warm-up;
* ``region64`` read one random unaligned 64^3 region, ``--region-reads`` times;
* ``stored``   bytes on disk.

Every engine's result is checked against the source volume.  Ratios are chunkref's time divided
by the other engine's (below 1: chunkref is faster).

Usage::

    python benchmarks/sharding.py            # the full run (a few minutes; needs a quiet machine)
    python benchmarks/sharding.py --quick    # 256^3, shards 128^3: a smoke run in seconds
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

ZSTD = {"name": "zstd", "configuration": {"level": 1, "checksum": False}}


def make_volume(n: int, seed: int = 0) -> np.ndarray:
    """Smooth uint16 volume (one slow period per axis) plus 6 bits of noise: zstd-1 compresses
    it about 1.38x, like the volume of the peer baselines."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 2 * np.pi, 512, dtype=np.float32)[:n] if n <= 512 else np.linspace(0, 2 * np.pi * n / 512, n, dtype=np.float32)
    amp = 1500
    vol = np.sin(x)[:, None, None] * amp + np.cos(0.7 * x)[None, :, None] * amp + np.sin(1.3 * x)[None, None, :] * amp
    out = (vol + 32768).astype(np.uint16)
    out += rng.integers(0, 64, size=out.shape, dtype=np.uint16)
    return out


def dir_size(path: str) -> tuple[int, int]:
    total = 0
    files = 0
    for root, _, names in os.walk(path):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += 1
    return total, files


def timed(fn: Callable[[], Any], repeat: int, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of ``repeat`` runs; process CPU seconds (all threads) appended to ``cpu``."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        c = time.process_time()
        fn()
        out.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.process_time() - c)
    return out


# --- engines -----------------------------------------------------------------------------------


class Engine:
    name = ""

    def create_and_write(self, path: str, vol: np.ndarray, shard: int, inner: int) -> None: ...

    def open(self, path: str) -> Any: ...

    def read(self, arr: Any, sel: tuple[slice, ...]) -> np.ndarray: ...


class Chunkref(Engine):
    name = "chunkref"

    def __init__(self) -> None:
        from chunkref.storage import LocalStore
        from chunkref.zarr import api

        self.api = api
        self.LocalStore = LocalStore

    def create_and_write(self, path: str, vol: np.ndarray, shard: int, inner: int) -> None:
        a = self.api.create_array(
            self.LocalStore(path),
            shape=vol.shape,
            chunks=(inner,) * vol.ndim,
            shards=(shard,) * vol.ndim,
            dtype=vol.dtype,
            fill_value=0,
            compressors=[ZSTD],
            overwrite=True,
        )
        a[...] = vol

    def open(self, path: str) -> Any:
        return self.api.open_array(self.LocalStore(path, read_only=True))

    def read(self, arr: Any, sel: tuple[slice, ...]) -> np.ndarray:
        return arr[sel]


class ZarrPython(Engine):
    name = "zarr-python"

    def __init__(self) -> None:
        import zarr
        from zarr.codecs import ZstdCodec

        self.zarr = zarr
        self.codec = ZstdCodec(level=1, checksum=False)

    def create_and_write(self, path: str, vol: np.ndarray, shard: int, inner: int) -> None:
        a = self.zarr.create_array(
            store=path,
            shape=vol.shape,
            chunks=(inner,) * vol.ndim,
            shards=(shard,) * vol.ndim,
            dtype=vol.dtype,
            fill_value=0,
            compressors=[self.codec],
            overwrite=True,
        )
        a[...] = vol

    def open(self, path: str) -> Any:
        return self.zarr.open_array(path, mode="r")

    def read(self, arr: Any, sel: tuple[slice, ...]) -> np.ndarray:
        return arr[sel]


class Tensorstore(Engine):
    name = "tensorstore"

    def __init__(self) -> None:
        import tensorstore as ts

        self.ts = ts
        # A fresh context per open: no cross-run caching of data (as in the peer baselines).
        self.context = None

    def spec(self, path: str) -> dict[str, Any]:
        return {"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}

    def create_and_write(self, path: str, vol: np.ndarray, shard: int, inner: int) -> None:
        meta = {
            "shape": list(vol.shape),
            "data_type": "uint16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [shard] * vol.ndim}},
            "chunk_key_encoding": {"name": "default"},
            "fill_value": 0,
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [inner] * vol.ndim,
                        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, ZSTD],
                        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                        "index_location": "end",
                    },
                }
            ],
        }
        spec = {**self.spec(path), "metadata": meta}
        arr = self.ts.open(spec, create=True, delete_existing=True).result()
        arr.write(vol).result()

    def open(self, path: str) -> Any:
        return self.ts.open(self.spec(path), open=True).result()

    def read(self, arr: Any, sel: tuple[slice, ...]) -> np.ndarray:
        return arr[sel].read().result()


# --- the run ------------------------------------------------------------------------------------


def fmt(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    med = statistics.median(values) * scale
    return f"{med:.{digits}f} ({min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f})"


def run_layout(
    engines: list[Engine], vol: np.ndarray, shard: int, inner: int, args: argparse.Namespace, root: str
) -> dict[str, dict[str, Any]]:
    n = vol.shape[0]
    rng = random.Random(1)
    chunk_sels = []
    for _ in range(args.chunk_reads):
        o = [rng.randrange(0, n // inner) * inner for _ in range(3)]
        chunk_sels.append(tuple(slice(a, a + inner) for a in o))
    region = min(64, n)
    region_sels = []
    for _ in range(args.region_reads):
        o = [rng.randrange(0, n - region + 1) for _ in range(3)]
        region_sels.append(tuple(slice(a, a + region) for a in o))
    results: dict[str, dict[str, Any]] = {}
    for eng in engines:
        path = os.path.join(root, f"{eng.name}-s{shard}i{inner}")
        res: dict[str, Any] = {}

        def write(_eng: Engine = eng, _path: str = path) -> None:
            if os.path.exists(_path):
                shutil.rmtree(_path)
            _eng.create_and_write(_path, vol, shard, inner)

        res["write_cpu"] = []
        res["write"] = timed(write, args.repeat, res["write_cpu"])
        res["stored"] = dir_size(path)
        arr = eng.open(path)
        got = eng.read(arr, (slice(None),) * 3)
        if not np.array_equal(got, vol):
            raise SystemExit(f"{eng.name}: full read differs from the source volume")
        del got
        res["read_full_cpu"] = []
        res["read_full"] = timed(lambda _e=eng, _a=arr: _e.read(_a, (slice(None),) * 3), args.repeat, res["read_full_cpu"])
        for sel in chunk_sels[:5]:
            eng.read(arr, sel)
        times = []
        for sel in chunk_sels:
            t = time.perf_counter()
            out = eng.read(arr, sel)
            times.append(time.perf_counter() - t)
        if not np.array_equal(out, vol[sel]):
            raise SystemExit(f"{eng.name}: chunk read differs")
        res["chunk"] = times
        times = []
        for sel in region_sels:
            t = time.perf_counter()
            out = eng.read(arr, sel)
            times.append(time.perf_counter() - t)
        if not np.array_equal(out, vol[sel]):
            raise SystemExit(f"{eng.name}: region read differs")
        res["region64"] = times
        results[eng.name] = res
        shutil.rmtree(path, ignore_errors=True)
        print(f"  {eng.name}: done", file=sys.stderr, flush=True)
    return results


def report(layout: str, results: dict[str, dict[str, Any]], nbytes: int) -> None:
    names = list(results)
    print(f"\n### {layout}\n")
    print("| metric | " + " | ".join(names) + " | " + " | ".join(f"chunkref / {n}" for n in names[1:]) + " |")
    print("|---|" + "---|" * len(names) + "---:|" * (len(names) - 1))
    rows = [
        ("write s", "write", 1.0, 3),
        ("write cpu s", "write_cpu", 1.0, 3),
        ("read_full s", "read_full", 1.0, 3),
        ("read_full cpu s", "read_full_cpu", 1.0, 3),
        ("chunk ms", "chunk", 1e3, 3),
        ("region64 ms", "region64", 1e3, 2),
    ]
    base = results.get("chunkref")
    for label, key, scale, digits in rows:
        cells = [fmt(results[n][key], scale, digits) for n in names]
        ratios = []
        for n in names[1:]:
            if base is None:
                ratios.append("")
                continue
            r = statistics.median(base[key]) / statistics.median(results[n][key])
            ratios.append(f"{r:.2f}")
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    mbs = [f"{nbytes / statistics.median(results[n]['read_full']) / 1e6:.0f} MB/s" for n in names]
    print("| read_full MB/s | " + " | ".join(mbs) + " |" + " |" * (len(names) - 1))
    stored = [f"{results[n]['stored'][0] / 1e6:.1f} MB, {results[n]['stored'][1]} files" for n in names]
    print("| stored | " + " | ".join(stored) + " |" + " |" * (len(names) - 1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="256^3 array, 128^3 shards, fewer repeats")
    p.add_argument("--size", type=int, default=None, help="array edge (default 512; --quick 256)")
    p.add_argument("--shard", type=int, default=None, help="shard edge (default 256; --quick 128)")
    p.add_argument("--inner", type=int, nargs="+", default=[32, 16], help="inner chunk edges")
    p.add_argument("--repeat", type=int, default=None, help="runs of write / read_full (default 3)")
    p.add_argument("--chunk-reads", type=int, default=None)
    p.add_argument("--region-reads", type=int, default=None)
    p.add_argument("--engines", nargs="+", default=["chunkref", "zarr-python", "tensorstore"])
    args = p.parse_args(argv)
    n = args.size or (256 if args.quick else 512)
    shard = args.shard or (128 if args.quick else 256)
    args.repeat = args.repeat or (2 if args.quick else 3)
    args.chunk_reads = args.chunk_reads or (50 if args.quick else 200)
    args.region_reads = args.region_reads or (20 if args.quick else 100)
    classes = {"chunkref": Chunkref, "zarr-python": ZarrPython, "tensorstore": Tensorstore}
    engines = [classes[e]() for e in args.engines]
    vol = make_volume(n)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# sharding benchmark: uint16 {n}^3 ({vol.nbytes / 2**20:.0f} MiB), shards {shard}^3, zstd 1; "
          f"{os.cpu_count()} CPUs, load {load:.2f} at start")
    root = tempfile.mkdtemp(prefix="bench-shard-")
    try:
        for inner in args.inner:
            print(f"layout s{shard}i{inner} ...", file=sys.stderr, flush=True)
            results = run_layout(engines, vol, shard, inner, args, root)
            report(f"shards {shard}^3, inner {inner}^3", results, vol.nbytes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload at end {load:.2f}")


if __name__ == "__main__":
    main()
