"""Unsharded Zarr v3 read/write: chunkref vs zarr-python vs tensorstore, side by side.

Each library writes its own copy of the same data into a local temporary directory and reads
it back; the table gives the best of ``--repeat`` runs and the ratio of each peer's time to
chunkref's (a ratio > 1 means chunkref is faster).

Cases:

* ``whole``: a 256^3 uint16 array of smooth data in 64^3 chunks, zstd level 1 (throughput).
* ``chunks16`` / ``chunks32``: the same array in 16^3 / 32^3 chunks without compression, so
  the time is the engines' own per-chunk overhead (reported in µs per chunk).

Run::

    python benchmarks/engine.py            # full size
    python benchmarks/engine.py --quick    # 128^3, for a smoke run
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def smooth_data(n: int) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.linspace(0, 4 * np.pi, n, dtype="f4"),) * 3, indexing="ij")
    return (1000 * (np.sin(x) * np.cos(y) + np.sin(z)) + 3000).astype("u2")


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _zstd_json(level: int) -> list[dict]:
    return [{"name": "zstd", "configuration": {"level": level, "checksum": False}}]


def run_case(root: Path, data: np.ndarray, chunks: tuple[int, ...], compress: bool, repeat: int) -> dict[str, dict[str, float]]:
    import tensorstore as ts
    import zarr

    import chunkref

    results: dict[str, dict[str, float]] = {}

    # chunkref
    cr_path = root / "chunkref.zarr"

    def cr_write() -> None:
        a = chunkref.create_array(
            str(cr_path), shape=data.shape, dtype=data.dtype, chunks=chunks,
            compressors=({"name": "zstd", "configuration": {"level": 1}},) if compress else None,
            overwrite=True, config={"write_empty_chunks": True},
        )
        a[...] = data

    t_w = best(cr_write, repeat)
    arr = chunkref.open_array(str(cr_path), mode="r")
    t_r = best(lambda: arr[...], repeat)
    assert np.array_equal(arr[...], data)
    results["chunkref"] = {"write": t_w, "read": t_r}

    # zarr-python
    zp_path = root / "zarr.zarr"

    def zp_write() -> None:
        a = zarr.create_array(
            str(zp_path), shape=data.shape, dtype=data.dtype, chunks=chunks,
            compressors=zarr.codecs.ZstdCodec(level=1) if compress else None,
            overwrite=True, config={"write_empty_chunks": True},
        )
        a[...] = data

    t_w = best(zp_write, repeat)
    zarr_arr = zarr.open_array(str(zp_path), mode="r")
    t_r = best(lambda: zarr_arr[...], repeat)
    assert np.array_equal(zarr_arr[...], data)
    results["zarr-python"] = {"write": t_w, "read": t_r}

    # tensorstore
    ts_path = root / "ts.zarr"
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}] + (_zstd_json(1) if compress else [])
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(ts_path)},
        "metadata": {
            "shape": list(data.shape),
            "data_type": str(data.dtype),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "codecs": codecs,
        },
    }

    def ts_write() -> None:
        t = ts.open(spec, create=True, delete_existing=True).result()
        t.write(data).result()

    t_w = best(ts_write, repeat)
    t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(ts_path)}}).result()
    t_r = best(lambda: t.read().result(), repeat)
    assert np.array_equal(t.read().result(), data)
    results["tensorstore"] = {"write": t_w, "read": t_r}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128^3 instead of 256^3")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = 128 if args.quick else 256
    data = smooth_data(n)
    cases = [
        (f"whole {n}^3 u2, 64^3 chunks, zstd 1", (64, 64, 64), True),
        (f"chunks16 {n}^3 u2, 16^3 chunks, raw", (16, 16, 16), False),
        (f"chunks32 {n}^3 u2, 32^3 chunks, raw", (32, 32, 32), False),
    ]
    print(f"data: {data.shape} {data.dtype}, {data.nbytes / 1e6:.1f} MB; best of {args.repeat}")
    header = f"{'case':<38} {'op':<6} {'chunkref':>10} {'zarr-py':>10} {'tstore':>10} {'zp/cr':>7} {'ts/cr':>7} {'cr µs/chunk':>12} {'ts µs/chunk':>12}"
    print(header)
    print("-" * len(header))
    for label, chunks, compress in cases:
        root = Path(tempfile.mkdtemp(prefix="chunkref-bench-"))
        try:
            res = run_case(root, data, chunks, compress, args.repeat)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        nchunks = int(np.prod([-(-s // c) for s, c in zip(data.shape, chunks)]))
        for op in ("write", "read"):
            cr, zp, tst = (res[k][op] for k in ("chunkref", "zarr-python", "tensorstore"))
            print(
                f"{label:<38} {op:<6} {cr:>9.3f}s {zp:>9.3f}s {tst:>9.3f}s {zp / cr:>7.2f} {tst / cr:>7.2f}"
                f" {cr / nchunks * 1e6:>12.1f} {tst / nchunks * 1e6:>12.1f}"
            )


if __name__ == "__main__":
    main()
