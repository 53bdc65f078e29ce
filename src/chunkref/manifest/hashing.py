"""Content ids for every reference of a manifest, and verification against them.

:func:`compute_hashes` reads every referenced byte range and fills the tables' ``cid`` columns
(CIDv1, raw codec, the manifest's ``hash_function``: sha2-256 by default, blake3 only when the
manifest asks for it).  :func:`verify_manifest` re-reads them and compares, and checks every
source's size / mtime / ETag against what the scan recorded (stale-source detection), returning
a :class:`VerifyReport`.

I/O plan: all references are gathered with numpy, grouped per source and merged into large
contiguous reads (:func:`chunkref.storage.ranges.coalesce_ranges`, adjacent ranges only, up to
``_GROUP_BYTES``); each read is one task on a thread pool (``concurrency`` workers) that fetches
its bytes (``os.pread`` for local files, fsspec ``cat_file`` otherwise) and hashes its chunks
from memoryviews without copying.  hashlib and blake3 release the GIL, so reads and hashes of
different groups overlap and local throughput is bounded by the hash function, not Python.

Sources are authorized as for opening (:class:`chunkref.reference.auth.SourcePolicy`): the
manifest's own folder, ``allow``, and the sources this process scanned to make it
(:mod:`chunkref.reference.trust`).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chunkref.config import config
from chunkref.errors import (
    ChunkrefError,
    InvalidArgumentError,
    ManifestError,
    ShortReadError,
    SourceUnavailableError,
)
from chunkref.manifest.cid import BLAKE3, CIDV1, RAW, SHA2_256, cid_to_string, encode_varint
from chunkref.manifest.manifest import Manifest
from chunkref.manifest.sources import Source, apply_rename, is_local, resolve_url
from chunkref.manifest.table import CID_WIDTH, WHOLE, ChunkTable
from chunkref.storage.ranges import coalesce_ranges

__all__ = [
    "ChunkProblem",
    "SourceProblem",
    "VerifyReport",
    "compute_hashes",
    "digest_function",
    "source_state",
    "verify_manifest",
]

#: Largest merged read (bytes): big enough that per-task overhead vanishes, small enough that
#: ``concurrency`` reads in flight stay modest in memory.
_GROUP_BYTES = 16 << 20
_DIGEST = 32


def digest_function(hash_function: str) -> tuple[int, Any]:
    """``(multihash code, digest(bytes-like) -> bytes)`` for a manifest ``hash_function``.

    Raises
    ------
    InvalidArgumentError
        For an unknown name, or ``"blake3"`` when the optional ``blake3`` package is missing.
    """
    if hash_function == "sha2-256":
        return SHA2_256, lambda data: hashlib.sha256(data).digest()
    if hash_function == "blake3":
        try:
            import blake3
        except ImportError:
            raise InvalidArgumentError(
                "the manifest's hash_function is 'blake3', which needs the optional package 'blake3' "
                "(pip install blake3)"
            ) from None
        return BLAKE3, lambda data: blake3.blake3(data).digest()
    raise InvalidArgumentError(f"unknown hash_function {hash_function!r}; known: 'sha2-256', 'blake3'")


def _prefix(code: int) -> bytes:
    return encode_varint(CIDV1) + encode_varint(RAW) + encode_varint(code) + encode_varint(_DIGEST)


# --- reading plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """Every present reference of one array, as columns (flat index, source, start, stop)."""

    path: str
    flat: np.ndarray
    source: np.ndarray
    start: np.ndarray
    stop: np.ndarray  # -1: the whole source


class _Reader:
    """Authorised, resolved sources and the filesystems to read them."""

    def __init__(
        self,
        manifest: Manifest,
        allow: Iterable[str] | str | None,
        rename: Mapping[str, str] | None,
        storage_options: Mapping[str, Any],
    ) -> None:
        from chunkref.reference.auth import SourcePolicy
        from chunkref.reference.trust import scanned_sources

        allowed = [allow] if isinstance(allow, str) else list(allow or [])
        allowed += scanned_sources(manifest)
        self.policy = SourcePolicy(allowed, manifest.location)
        self.manifest = manifest
        self.rename = dict(rename or {})
        self.options = dict(storage_options)
        self._fs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.urls: dict[int, str] = {}
        self.paths: dict[int, tuple[str, str]] = {}  # idx -> (kind "local"/protocol, path)

    def resolve(self, idx: int) -> tuple[str, str]:
        got = self.paths.get(idx)
        if got is not None:
            return got
        url = resolve_url(apply_rename(self.manifest.sources[idx].url, self.rename), self.manifest.location)
        target = self.policy.check(url, what=f"source #{idx}")
        if is_local(url):
            # Read the symlink-resolved path that was authorized, not the name in the manifest.
            got = ("local", str(target)[:-1] if str(target).endswith("/") else str(target))
        else:
            got = (url.split("://", 1)[0].lower(), url)
        self.urls[idx] = url
        self.paths[idx] = got
        return got

    def filesystem(self, protocol: str) -> Any:
        with self._lock:
            fs = self._fs.get(protocol)
            if fs is None:
                import fsspec

                fs = fsspec.filesystem(protocol if protocol != "local" else "file",
                                       **(self.options if protocol != "local" else {}))
                self._fs[protocol] = fs
            return fs

    def read(self, idx: int, start: int, stop: int | None) -> bytes | memoryview:
        """Bytes ``[start, stop)`` of source ``idx`` (``stop`` None: to the end), length-checked.

        Local ranges are read into a per-thread buffer that the next read on the same thread
        overwrites (fresh allocations would page-fault every byte once more): use the result
        before reading again.
        """
        kind, path = self.resolve(idx)
        url = self.urls[idx]
        try:
            if kind == "local":
                with open(path, "rb", buffering=0) as f:
                    if stop is None:
                        f.seek(start)
                        data = f.read()
                    else:
                        data = self._pread(f.fileno(), start, stop - start)
            else:
                fs = self.filesystem(kind)
                data = fs.cat_file(path, start=start, end=stop)
        except FileNotFoundError as exc:
            raise SourceUnavailableError(f"source {url!r} does not exist ({exc})") from exc
        except OSError as exc:
            raise SourceUnavailableError(f"cannot read source {url!r}: {exc}") from exc
        if stop is not None and len(data) != stop - start:
            raise ShortReadError(f"short read of source {url!r}: asked for bytes [{start}, {stop}), got {len(data)}")
        return data

    def _pread(self, fd: int, start: int, n: int) -> memoryview:
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            buf = self._local.buf = bytearray(max(n, _GROUP_BYTES))
        view = memoryview(buf)[:n]
        got = 0
        while got < n:
            k = os.preadv(fd, [view[got:]], start + got)
            if k == 0:
                break
            got += k
        return view[:got]

    def stat(self, idx: int) -> Source | None:
        """The source's current size/mtime/ETag (None when it does not exist)."""
        kind, path = self.resolve(idx)
        fs = self.filesystem(kind)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceUnavailableError(f"cannot stat source {self.urls[idx]!r}: {exc}") from exc
        return source_state(self.manifest.sources[idx].url, info)


def source_state(url: str, info: Mapping[str, Any]) -> Source:
    """A :class:`Source` with the size/mtime/ETag of an fsspec ``info`` result (as scanners
    record them)."""
    size = info.get("size")
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    try:
        mtime = float(mtime.timestamp()) if hasattr(mtime, "timestamp") else (float(mtime) if mtime else None)
    except (TypeError, ValueError):
        mtime = None
    etag = info.get("ETag") or info.get("etag")
    return Source(url, int(size) if size is not None else None, mtime, str(etag).strip('"') if etag else None)


def _references(manifest: Manifest, only_with_cid: bool) -> list[_Ref]:
    refs = []
    for path in sorted(manifest.tables):
        table = manifest.tables[path]
        present = table.present()
        mask = present & (table.source >= 0)
        if only_with_cid:
            mask &= _has_cid(table)
        flat = np.nonzero(mask)[0]
        if not flat.size:
            continue
        ln = table.length[flat]
        whole = ln == WHOLE
        start = table.offset[flat].astype(np.int64)
        stop = np.where(whole, -1, start + np.where(whole, 0, ln).astype(np.int64))
        refs.append(_Ref(path, flat, table.source[flat].astype(np.int64), start, stop))
    return refs


def _has_cid(table: ChunkTable) -> np.ndarray:
    if table.cid is None:
        return np.zeros(table.nchunks, bool)
    return table.cid.any(axis=1)


@dataclass(frozen=True)
class _Group:
    source: int
    start: int
    stop: int | None  # None: whole source
    members: list[tuple[int, int, int, int]]  # (array number, flat, start, stop) ; stop -1 whole


def _plan(refs: list[_Ref]) -> list[_Group]:
    """Merge adjacent/overlapping ranges of the same source into reads of <= _GROUP_BYTES."""
    if not refs:
        return []
    arr_no = np.concatenate([np.full(r.flat.size, i, np.int64) for i, r in enumerate(refs)])
    flat = np.concatenate([r.flat for r in refs]).astype(np.int64)
    src = np.concatenate([r.source for r in refs])
    start = np.concatenate([r.start for r in refs])
    stop = np.concatenate([r.stop for r in refs])
    groups: list[_Group] = []
    whole = stop < 0
    for j in np.nonzero(whole)[0].tolist():
        groups.append(_Group(int(src[j]), 0, None, [(int(arr_no[j]), int(flat[j]), 0, -1)]))
    sel = ~whole
    if sel.any():
        gs, ge, assign = coalesce_ranges(start[sel], stop[sel], 0, _GROUP_BYTES, ids=src[sel])
        order = np.argsort(assign, kind="stable")
        a_sorted = assign[order]
        bounds = np.searchsorted(a_sorted, np.arange(gs.size + 1))
        s_src, s_arr, s_flat = src[sel], arr_no[sel], flat[sel]
        s_start, s_stop = start[sel], stop[sel]
        gsource = np.empty(gs.size, np.int64)
        gsource[assign] = s_src
        for g in range(gs.size):
            idx = order[bounds[g] : bounds[g + 1]]
            members = list(zip(s_arr[idx].tolist(), s_flat[idx].tolist(), s_start[idx].tolist(), s_stop[idx].tolist()))
            groups.append(_Group(int(gsource[g]), int(gs[g]), int(ge[g]), members))
    return groups


def _workers(concurrency: int | None) -> int:
    if concurrency is not None:
        if int(concurrency) < 1:
            raise InvalidArgumentError(f"concurrency must be >= 1, got {concurrency}")
        return int(concurrency)
    return max(2, min(int(config.get("io.concurrency") or 8), 2 * (os.cpu_count() or 1)))


def _progress_bar(total: int, progress: bool | None, desc: str) -> Any:
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc)


def _run(
    reader: _Reader,
    groups: list[_Group],
    digest: Any,
    concurrency: int | None,
    progress: bool | None,
    desc: str,
    on_error: Any = None,
) -> tuple[list[tuple[int, int, bytes]], int]:
    """Read and hash every group; returns ``([(array number, flat, digest)], bytes read)``.

    ``on_error(group, exc)`` collects read failures instead of raising (verification).
    """
    total = sum((g.stop - g.start) if g.stop is not None else 0 for g in groups)
    bar = _progress_bar(total, progress, desc)
    lock = threading.Lock()

    def task(g: _Group) -> tuple[list[tuple[int, int, bytes]], int]:
        try:
            data = reader.read(g.source, g.start, g.stop)
        except (ChunkrefError, OSError) as exc:
            if on_error is None:
                raise
            on_error(g, exc)
            return [], 0
        view = memoryview(data)
        out = []
        for arr, flat, s, e in g.members:
            piece = view if e < 0 else view[s - g.start : e - g.start]
            out.append((arr, flat, digest(piece)))
        if bar is not None:
            with lock:
                bar.update(len(data))
        return out, len(data)

    results: list[tuple[int, int, bytes]] = []
    nbytes = 0
    try:
        workers = _workers(concurrency)
        if workers == 1 or len(groups) <= 1:
            outs = map(task, groups)
            for out, n in outs:
                results.extend(out)
                nbytes += n
        else:
            with ThreadPoolExecutor(workers) as pool:
                for out, n in pool.map(task, groups):
                    results.extend(out)
                    nbytes += n
    finally:
        if bar is not None:
            bar.close()
    return results, nbytes


# --- computing ---------------------------------------------------------------------------------


def compute_hashes(
    manifest: Manifest,
    *,
    progress: bool | None = None,
    concurrency: int | None = None,
    allow: Iterable[str] | str | None = None,
    rename: Mapping[str, str] | None = None,
    **storage_options: Any,
) -> None:
    """Record the content id of every present chunk (references and inline chunks).

    Parameters
    ----------
    manifest
        Its ``hash_function`` chooses the hash (``"sha2-256"`` default, ``"blake3"``).
    progress
        Show a tqdm progress bar (bytes); default: when stderr is a terminal.
    concurrency
        Reads (and hashes) in flight; default from ``io.concurrency``.
    allow, rename
        Source authorization and relocation, as for :func:`chunkref.open`.
    **storage_options
        fsspec options for remote sources.

    Raises
    ------
    SourceUnavailableError, ShortReadError
        A source is missing or shorter than its references (naming it).
    SourceNotAllowedError
        A source is outside the authorized prefixes.
    """
    code, digest = digest_function(manifest.hash_function)
    prefix = np.frombuffer(_prefix(code), np.uint8)
    reader = _Reader(manifest, allow, rename, storage_options)
    refs = _references(manifest, only_with_cid=False)
    results, _ = _run(reader, _plan(refs), digest, concurrency, progress, "hashing")
    with_refs = {r.path for r in refs}
    for path, table in manifest.tables.items():
        if table.inline or path in with_refs:
            _ensure_cid_column(table)
    if results:
        arr_no = np.fromiter((a for a, _, _ in results), np.int64, len(results))
        flat_all = np.fromiter((f for _, f, _ in results), np.int64, len(results))
        digests = np.frombuffer(b"".join(d for _, _, d in results), np.uint8).reshape(-1, _DIGEST)
        for i, r in enumerate(refs):
            sel = arr_no == i
            table = manifest.tables[r.path]
            table.cid[flat_all[sel], : prefix.size] = prefix
            table.cid[flat_all[sel], prefix.size :] = digests[sel]
    for table in manifest.tables.values():
        for f, data in table.inline.items():
            table.cid[f, : prefix.size] = prefix
            table.cid[f, prefix.size :] = np.frombuffer(digest(data), np.uint8)


def _ensure_cid_column(table: ChunkTable) -> None:
    old = table.cid
    if old is None or old.shape[1] != CID_WIDTH:
        if old is not None and old.any():
            raise ManifestError(f"content-id column of width {old.shape[1]} cannot hold {CID_WIDTH}-byte CIDs")
        table.cid = np.zeros((table.nchunks, CID_WIDTH), np.uint8)


# --- verifying ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceProblem:
    """A source that changed since the scan (or cannot be checked)."""

    url: str
    problem: str  # "missing", "size", "mtime", "etag", "unreadable"
    recorded: Any = None
    current: Any = None

    def to_json(self) -> dict:
        return {"url": self.url, "problem": self.problem, "recorded": self.recorded, "current": self.current}


@dataclass(frozen=True)
class ChunkProblem:
    """A chunk whose bytes do not match its content id, or could not be read."""

    array: str
    chunk: tuple[int, ...]
    source: str
    problem: str  # "mismatch", "unreadable"
    expected: str | None = None
    actual: str | None = None
    detail: str = ""

    def to_json(self) -> dict:
        return {
            "array": self.array,
            "chunk": list(self.chunk),
            "source": self.source,
            "problem": self.problem,
            "expected": self.expected,
            "actual": self.actual,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :func:`verify_manifest`.

    ``ok`` is True when no source changed and every chunk with a content id matched.  Chunks
    without a content id cannot be checked and are counted in ``chunks_unhashed``.
    """

    sources_checked: int = 0
    chunks_checked: int = 0
    chunks_unhashed: int = 0
    bytes_read: int = 0
    stale_sources: list[SourceProblem] = field(default_factory=list)
    bad_chunks: list[ChunkProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.stale_sources and not self.bad_chunks

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "sources_checked": self.sources_checked,
            "chunks_checked": self.chunks_checked,
            "chunks_unhashed": self.chunks_unhashed,
            "bytes_read": self.bytes_read,
            "stale_sources": [p.to_json() for p in self.stale_sources],
            "bad_chunks": [p.to_json() for p in self.bad_chunks],
        }

    def summary(self) -> str:
        lines = [
            f"{'OK' if self.ok else 'PROBLEMS'}: {self.sources_checked} sources, {self.chunks_checked} chunks "
            f"checked ({self.bytes_read} bytes), {self.chunks_unhashed} chunks without content id"
        ]
        for p in self.stale_sources:
            lines.append(f"source {p.url}: {p.problem} changed (recorded {p.recorded!r}, now {p.current!r})"
                         if p.problem in ("size", "mtime", "etag") else f"source {p.url}: {p.problem}")
        for c in self.bad_chunks:
            what = (f"content id mismatch (expected {c.expected}, got {c.actual})"
                    if c.problem == "mismatch" else f"unreadable: {c.detail}")
            lines.append(f"array {c.array!r} chunk {c.chunk} (source {c.source}): {what}")
        return "\n".join(lines)


def verify_manifest(
    manifest: Manifest,
    *,
    allow: Iterable[str] | str | None = None,
    rename: Mapping[str, str] | None = None,
    check_content: bool = True,
    check_sources: bool = True,
    progress: bool | None = None,
    concurrency: int | None = None,
    **storage_options: Any,
) -> VerifyReport:
    """Check every chunk against its content id and every used source against its recorded
    size/mtime/ETag.  Problems are collected (not raised) into the returned report; only
    unauthorized sources and invalid arguments raise."""
    reader = _Reader(manifest, allow, rename, storage_options)
    used = manifest.used_sources()
    for idx in used:
        reader.resolve(idx)  # authorize every source before any I/O
    stale: list[SourceProblem] = []
    if check_sources:
        for idx in used:
            stale.extend(_source_problems(reader, idx))
    bad: list[ChunkProblem] = []
    checked = unhashed = nbytes = 0
    if check_content:
        tables = manifest.tables
        for table in tables.values():
            p = table.present()
            unhashed += int((p & ~_has_cid(table)).sum())
        refs = _references(manifest, only_with_cid=True)
        by_hash: dict[int, Any] = {}

        def digest_for(cid_row: np.ndarray) -> Any:
            code = int(cid_row[2])
            fn = by_hash.get(code)
            if fn is None:
                name = {SHA2_256: "sha2-256", BLAKE3: "blake3"}.get(code)
                if name is None or bytes(cid_row[:2]) != bytes([CIDV1, RAW]) or int(cid_row[3]) != _DIGEST:
                    raise ManifestError(f"unsupported content id {cid_to_string(cid_row.tobytes())}")
                fn = by_hash[code] = digest_function(name)[1]
            return fn

        # Hash with the manifest's function; rows recorded with another one are re-hashed below.
        code, digest = digest_function(manifest.hash_function)
        errors: list[tuple[_Group, BaseException]] = []
        results, nbytes = _run(reader, _plan(refs), digest, concurrency, progress, "verifying",
                               on_error=lambda g, e: errors.append((g, e)))
        for g, exc in errors:
            for a, f, _, _ in g.members:
                r = refs[a]
                bad.append(ChunkProblem(r.path, tables[r.path].coords_of(f), reader.urls.get(g.source, str(g.source)),
                                        "unreadable", detail=str(exc)))
        for a, f, d in results:
            path = refs[a].path
            table = tables[path]
            row = table.cid[f]
            if int(row[2]) != code:
                continue  # recorded with another hash: handled by the slow path below
            checked += 1
            if bytes(row[4:]) != d:
                src = int(table.source[f])
                bad.append(ChunkProblem(path, table.coords_of(f), reader.urls.get(src, manifest.sources[src].url),
                                        "mismatch", cid_to_string(row.tobytes()),
                                        cid_to_string(_prefix(code) + d)))
        # Rows whose content id uses another hash than the manifest's (rare): per chunk.
        for r in refs:
            table = tables[r.path]
            other = r.flat[table.cid[r.flat, 2] != code]
            for f in other.tolist():
                row = table.cid[f]
                fn = digest_for(row)
                ref = table.lookup_flat(f)
                assert ref is not None
                try:
                    data = reader.read(ref.source, ref.offset, None if ref.length is None else ref.offset + ref.length)
                except (ChunkrefError, OSError) as exc:
                    bad.append(ChunkProblem(r.path, table.coords_of(f), reader.urls.get(ref.source, ""), "unreadable",
                                            detail=str(exc)))
                    continue
                nbytes += len(data)
                checked += 1
                d = fn(data)
                if bytes(row[4:]) != d:
                    bad.append(ChunkProblem(r.path, table.coords_of(f), reader.urls[ref.source], "mismatch",
                                            cid_to_string(row.tobytes()), cid_to_string(bytes(row[:4]) + d)))
        for path in sorted(tables):
            table = tables[path]
            for f, data in sorted(table.inline.items()):
                row = table.cid[f] if table.cid is not None else None
                if row is None or not row.any():
                    continue
                checked += 1
                d = digest_for(row)(data)
                if bytes(row[4:]) != d:
                    bad.append(ChunkProblem(path, table.coords_of(f), "inline", "mismatch",
                                            cid_to_string(row.tobytes()), cid_to_string(bytes(row[:4]) + d)))
    bad.sort(key=lambda c: (c.array, c.chunk))
    return VerifyReport(len(used) if check_sources else 0, checked, unhashed, nbytes, stale, bad)


def _source_problems(reader: _Reader, idx: int) -> list[SourceProblem]:
    recorded = reader.manifest.sources[idx]
    url = reader.urls[idx]
    try:
        now = reader.stat(idx)
    except (ChunkrefError, OSError) as exc:
        return [SourceProblem(url, "unreadable", None, str(exc))]
    if now is None:
        return [SourceProblem(url, "missing")]
    out = []
    if recorded.size is not None and now.size is not None and recorded.size != now.size:
        out.append(SourceProblem(url, "size", recorded.size, now.size))
    if recorded.mtime is not None and now.mtime is not None and abs(recorded.mtime - now.mtime) > 1e-3:
        out.append(SourceProblem(url, "mtime", recorded.mtime, now.mtime))
    if recorded.etag is not None and now.etag is not None and recorded.etag != now.etag:
        out.append(SourceProblem(url, "etag", recorded.etag, now.etag))
    return out

