"""Repository benchmark: chunkref's content-addressed repository vs Icechunk (and a plain Zarr
directory for reads), side by side on the same local disk.

Lines (best of ``--repeat`` where it makes sense):

* ``populate``: write N distinct chunks (1-D int32 array, 64 elements = 256 B per chunk, zstd) and
  commit;
* ``commit k``: write k whole chunks spread evenly over the N-chunk array (one orthogonal write)
  and commit, k in 1, 100, 10,000 (cost must follow k, not N);
* ``diff 10``: diff two commits that differ in 10 chunks;
* ``open old``: open the first version and read one chunk;
* ``dedup``: bytes stored after writing the same data a second time (into a second array);
* ``read``: read throughput of a 64 MiB array in 256 KiB chunks: chunkref engine on a plain Zarr
  directory (the baseline), on a repository session, on a session with ``verify=True``, and
  zarr-python on Icechunk;
* ``commit 10 of 10^6``: chunkref only: 10 native chunks written into an array of 10^6 virtual
  references (imported manifest: no bytes copied), to show commit cost does not follow array size.

Usage: ``python benchmarks/repository.py [--chunks 100000] [--repeat 3] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable

import numpy as np

import chunkref
from chunkref.repo import Repository

ELEMS = 64


def du(path: str) -> int:
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(d, f)).st_size
            except FileNotFoundError:
                pass
    return total


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def spread(n: int, k: int) -> np.ndarray:
    """Element indices of k whole chunks spread evenly over n chunks."""
    chunks = np.linspace(0, n - 1, k).astype(np.int64)
    return (chunks[:, None] * ELEMS + np.arange(ELEMS)).reshape(-1)


# -- chunkref ---------------------------------------------------------------------------------


class ChunkrefSide:
    name = "chunkref"

    def __init__(self, root: str, n: int) -> None:
        self.root = root
        self.n = n
        self.repo = Repository.create(root)
        self.commits: list[str] = []

    def populate(self) -> None:
        s = self.repo.writable_session()
        a = chunkref.open_group(s.store, mode="a").create_array(
            "x", shape=(self.n * ELEMS,), chunks=(ELEMS,), dtype="i4", compressors=[{"name": "zstd"}]
        )
        a[:] = np.arange(self.n * ELEMS, dtype="i4")
        self.commits.append(s.commit("populate"))

    def commit_k(self, k: int, value: int) -> None:
        s = self.repo.writable_session()
        a = chunkref.open_array(s.store, path="x", mode="r+")
        idx = spread(self.n, k)
        a.oindex[idx] = np.full(idx.size, value, "i4")
        self.commits.append(s.commit(f"{k} chunks"))

    def diff(self, a: str, b: str) -> int:
        return self.repo.diff(a, b).chunk_count()

    def open_old(self) -> None:
        repo = Repository.open(self.root)  # a fresh handle: nothing cached
        s = repo.readonly_session(commit=self.commits[0])
        chunkref.open_array(s.store, path="x", mode="r")[0]

    def write_again(self) -> None:
        s = self.repo.writable_session()
        a = chunkref.open_group(s.store, mode="a").create_array(
            "y", shape=(self.n * ELEMS,), chunks=(ELEMS,), dtype="i4", compressors=[{"name": "zstd"}]
        )
        a[:] = np.arange(self.n * ELEMS, dtype="i4")
        s.commit("same data again")


# -- icechunk ---------------------------------------------------------------------------------


class IcechunkSide:
    name = "icechunk"

    def __init__(self, root: str, n: int) -> None:
        import icechunk as ic
        import zarr

        self.ic, self.zarr = ic, zarr
        self.root = root
        self.n = n
        self.repo = ic.Repository.create(ic.local_filesystem_storage(root))
        self.commits: list[str] = []

    def populate(self) -> None:
        s = self.repo.writable_session("main")
        a = self.zarr.create_array(s.store, name="x", shape=(self.n * ELEMS,), chunks=(ELEMS,), dtype="i4",
                                   compressors=self.zarr.codecs.ZstdCodec())
        a[:] = np.arange(self.n * ELEMS, dtype="i4")
        self.commits.append(s.commit("populate"))

    def commit_k(self, k: int, value: int) -> None:
        s = self.repo.writable_session("main")
        a = self.zarr.open_array(s.store, path="x", mode="r+")
        idx = spread(self.n, k)
        a.oindex[idx] = np.full(idx.size, value, "i4")
        self.commits.append(s.commit(f"{k} chunks"))

    def diff(self, a: str, b: str) -> int:
        d = self.repo.diff(from_snapshot_id=a, to_snapshot_id=b)
        return sum(len(v) for v in d.updated_chunks.values())

    def open_old(self) -> None:
        repo = self.ic.Repository.open(self.ic.local_filesystem_storage(self.root))
        s = repo.readonly_session(snapshot_id=self.commits[0])
        self.zarr.open_array(s.store, path="x", mode="r")[0]

    def write_again(self) -> None:
        s = self.repo.writable_session("main")
        a = self.zarr.create_array(s.store, name="y", shape=(self.n * ELEMS,), chunks=(ELEMS,), dtype="i4",
                                   compressors=self.zarr.codecs.ZstdCodec())
        a[:] = np.arange(self.n * ELEMS, dtype="i4")
        s.commit("same data again")


# -- reads ------------------------------------------------------------------------------------


def read_lines(tmp: str, repeat: int, size_mib: int) -> list[tuple[str, float]]:
    """MB/s of whole-array reads; the variants are interleaved, best of ``repeat`` rounds each,
    so load from other work on the machine hits all of them alike."""
    n = size_mib * (1 << 20) // 4
    chunk = (256 << 10) // 4
    data = np.random.default_rng(0).integers(0, 1000, n).astype("i4")
    readers: list[tuple[str, Callable[[], object]]] = []
    plain = os.path.join(tmp, "plain.zarr")
    chunkref.create_array(plain, shape=(n,), chunks=(chunk,), dtype="i4", compressors=[{"name": "zstd"}])[:] = data
    arr = chunkref.open_array(plain, mode="r")
    readers.append(("plain Zarr dir (chunkref engine)", lambda: arr[:]))
    repo = Repository.create(os.path.join(tmp, "rrepo"))
    s = repo.writable_session()
    chunkref.open_group(s.store, mode="a").create_array(
        "x", shape=(n,), chunks=(chunk,), dtype="i4", compressors=[{"name": "zstd"}]
    )[:] = data
    s.commit("data")
    ra = chunkref.open_array(repo.readonly_session().store, path="x", mode="r")
    readers.append(("chunkref repository", lambda: ra[:]))
    rv = chunkref.open_array(repo.readonly_session(verify=True).store, path="x", mode="r")
    readers.append(("chunkref repository, verify=True", lambda: rv[:]))
    try:
        import icechunk as ic
        import zarr

        irepo = ic.Repository.create(ic.local_filesystem_storage(os.path.join(tmp, "irepo")))
        s = irepo.writable_session("main")
        zarr.create_array(s.store, name="x", shape=(n,), chunks=(chunk,), dtype="i4",
                          compressors=zarr.codecs.ZstdCodec())[:] = data
        s.commit("data")
        ia = zarr.open_array(irepo.readonly_session("main").store, path="x", mode="r")
        readers.append(("icechunk (zarr-python)", lambda: ia[:]))
    except ImportError:
        pass
    times: dict[str, float] = {}
    for _ in range(max(repeat, 3)):
        for name, fn in readers:
            times[name] = min(times.get(name, float("inf")), best(fn, 1))
    return [(name, size_mib / times[name]) for name, _ in readers]


def dedup_lines(tmp: str) -> list[tuple[str, int]]:
    """Bytes a repository grows by when the same 16 MiB are written a second time."""
    data = np.random.default_rng(1).integers(0, 1 << 30, 4 << 20).astype("i4")
    out = []
    root = os.path.join(tmp, "dedup-chunkref")
    repo = Repository.create(root)
    sizes = []
    for name in ("a", "b"):
        s = repo.writable_session()
        chunkref.open_group(s.store, mode="a").create_array(name, shape=data.shape, chunks=(16384,), dtype="i4",
                                                            compressors=[{"name": "zstd"}])[:] = data
        s.commit(name)
        sizes.append(du(root))
    out.append(("chunkref", sizes[1] - sizes[0]))
    try:
        import icechunk as ic
        import zarr
    except ImportError:
        return out
    root = os.path.join(tmp, "dedup-icechunk")
    irepo = ic.Repository.create(ic.local_filesystem_storage(root))
    sizes = []
    for name in ("a", "b"):
        s = irepo.writable_session("main")
        zarr.create_array(s.store, name=name, shape=data.shape, chunks=(16384,), dtype="i4",
                          compressors=zarr.codecs.ZstdCodec())[:] = data
        s.commit(name)
        sizes.append(du(root))
    out.append(("icechunk", sizes[1] - sizes[0]))
    return out


def big_virtual_commit(tmp: str, nchunks: int, repeat: int) -> float:
    """Commit 10 native chunks into an array of ``nchunks`` virtual references."""
    from chunkref.manifest import ChunkTable, Manifest

    src = os.path.join(tmp, "source.bin")
    with open(src, "wb") as f:
        f.write(np.arange(nchunks * 4, dtype="u1").tobytes())
    m = Manifest(location=os.path.join(tmp, "m.json"))
    i = m.add_source(src)
    table = ChunkTable((nchunks,), np.full(nchunks, i), np.arange(nchunks) * 4, np.full(nchunks, 4))
    doc = {"zarr_format": 3, "node_type": "array", "shape": [nchunks * 4], "data_type": "uint8",
           "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4]}},
           "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
           "fill_value": 0, "codecs": [{"name": "bytes"}], "attributes": {}}
    m.add_array("v", {"zarr.json": doc}, table)
    repo = Repository.create(os.path.join(tmp, "vrepo"), allow=[tmp])
    repo.import_manifest(m)
    idx = (np.linspace(0, nchunks - 1, 10).astype(np.int64)[:, None] * 4 + np.arange(4)).reshape(-1)

    def once() -> None:
        s = repo.writable_session()
        chunkref.open_array(s.store, path="v", mode="r+").oindex[idx] = 7
        s.commit("10 chunks")

    return best(once, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--read-mib", type=int, default=64)
    ap.add_argument("--big", type=int, default=1_000_000, help="virtual chunks for the big-array commit")
    ap.add_argument("--quick", action="store_true", help="10k chunks, 16 MiB reads, 10^5 virtual")
    args = ap.parse_args()
    if args.quick:
        args.chunks, args.read_mib, args.big, args.repeat = 10_000, 16, 100_000, 2
    n = args.chunks
    tmp = tempfile.mkdtemp(prefix="repo-bench-")
    sides: list = [ChunkrefSide(os.path.join(tmp, "chunkref"), n)]
    try:
        sides.append(IcechunkSide(os.path.join(tmp, "icechunk"), n))
    except ImportError:
        print("icechunk not installed: comparing with chunkref only")
    rows: dict[str, dict[str, str]] = {}

    def put(line: str, side: str, value: str) -> None:
        rows.setdefault(line, {})[side] = value

    try:
        for side in sides:
            t = best(side.populate, 1)
            put(f"populate {n} chunks + commit", side.name, f"{t:.2f} s")
            for k in (1, 100, 10_000):
                if k > n:
                    continue
                t = best(lambda k=k, side=side: side.commit_k(k, k), args.repeat)
                put(f"commit {k} changed chunks (of {n})", side.name, f"{t * 1e3:.1f} ms")
            side.commit_k(10, 11)
            a, b = side.commits[-2], side.commits[-1]
            cnt = side.diff(a, b)
            t = best(lambda side=side, a=a, b=b: side.diff(a, b), args.repeat)
            put("diff, 10 chunks differ", side.name, f"{t * 1e3:.2f} ms ({cnt} found)")
            t = best(side.open_old, args.repeat)
            put("open first version + read a chunk", side.name, f"{t * 1e3:.1f} ms")
            before = du(side.root)
            side.write_again()
            put(f"bytes added writing the same {n} chunks again", side.name,
                f"{(du(side.root) - before) / 1e6:.2f} MB")
        for label, added in dedup_lines(tmp):
            put("bytes added writing 16 MiB (64 KiB chunks) again", label, f"{added / 1e6:.2f} MB")
        for label, mbps in read_lines(tmp, args.repeat, args.read_mib):
            put(f"read {args.read_mib} MiB (256 KiB chunks)", label, f"{mbps:.0f} MB/s")
        t = big_virtual_commit(tmp, args.big, args.repeat)
        put(f"commit 10 chunks into a {args.big}-chunk array", "chunkref", f"{t * 1e3:.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for line, vals in rows.items():
        print(f"{line:48s} " + "  ".join(f"{k}: {v}" for k, v in vals.items()))


if __name__ == "__main__":
    main()
