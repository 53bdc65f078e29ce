"""ReferenceStore: a read-only Store serving a Manifest's metadata and referenced chunks.

Keys
----
* ``<node path>/<document>`` (``zarr.json``, ``.zarray``, ``.zattrs``, ``.zgroup``): the JSON
  documents of the manifest.
* ``<array path>/<chunk key>``: the chunk's bytes, where the chunk key is decoded with the
  array's chunk key encoding (v3 ``c/0/1``, v2 ``0.1``) into grid coords and looked up in the
  array's :class:`~chunkref.manifest.table.ChunkTable` (an index computation, no per-key objects).

Reads
-----
:meth:`get_many` collects every request, serves documents, inline chunks and absent chunks
(``None``: read as fill value) from memory, and for referenced chunks groups the byte ranges per
source filesystem.  Remote sources: neighbouring ranges of the same source are merged
(:func:`chunkref.storage.ranges.coalesce_ranges`), fetched concurrently with fsspec
``cat_ranges`` (one call per filesystem, under ``io.timeout``), transient failures retried with
exponential backoff (``io.retries``, ``io.retry_backoff``) and the results sliced back.  Local
files: one ``os.pread`` per request, each source opened once per batch (large calls are read
in batches on the I/O pool), so no merged buffer is sliced and copied again;
:meth:`get_many_into` reads straight into the caller's buffers (``os.preadv``).  Every length is
checked.  A zero-length reference makes no request.

Failures are never fill values: a missing or unreadable source raises
:class:`~chunkref.errors.SourceUnavailableError`, transient failures that outlive the retries
:class:`~chunkref.errors.TransientStoreError`, a short (or over-long) read
:class:`~chunkref.errors.ShortReadError`, a content-id mismatch (``verify=True``)
:class:`~chunkref.errors.HashMismatchError`; each message names the array, chunk key and source.

Sources are authorized at construction, before any I/O (see :mod:`chunkref.reference.auth`).
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref.config import config
from chunkref.errors import (
    BoundsCheckError,
    ChunkDecodeError,
    HashMismatchError,
    InvalidArgumentError,
    InvalidKeyError,
    MetadataError,
    ReadOnlyError,
    ShortReadError,
    SourceUnavailableError,
    StoreError,
    TransientStoreError,
)
from chunkref.manifest.cid import parse_cid, verify_cid
from chunkref.manifest.manifest import V2_ARRAY_DOC, V3_DOC, Manifest
from chunkref.manifest.sources import apply_rename, is_local, resolve_url, split_protocol
from chunkref.manifest.table import ABSENT, INLINE, WHOLE, ChunkTable
from chunkref.reference.auth import Prefix, SourcePolicy, parse_prefix
from chunkref.storage._threads import run_batched
from chunkref.storage.base import (
    ByteRange,
    OffsetRequest,
    RangeRequest,
    Store,
    SuffixRequest,
    as_range,
    range_bounds,
    slice_value,
    validate_key,
)
from chunkref.storage.fsspec import classify_error
from chunkref.storage.local import local_read_workers, pread_all, writable_bytes
from chunkref.storage.ranges import coalesce_ranges, slice_groups
from chunkref.zarr.keys import ChunkKeyEncoding, parse_chunk_key_encoding

__all__ = ["ReferenceStore"]

# Local reads: below this many bytes per call one thread reads everything (a pool hop costs
# more than it saves); above it, batches of at least _LOCAL_BATCH_BYTES go to the I/O pool.
_LOCAL_PARALLEL_BYTES = 4 << 20
_LOCAL_BATCH_BYTES = 1 << 20


@dataclass(frozen=True)
class _ArrayInfo:
    path: str
    table: ChunkTable
    encoding: ChunkKeyEncoding
    ndim: int


@dataclass(frozen=True)
class _ResolvedSource:
    url: str  # after rename and resolution, as fetched
    fs_key: tuple[str, int]  # (protocol, storage-options entry)
    fs_path: str


@dataclass
class _Fetch:
    """One byte range to fetch for request ``index``."""

    index: int
    source: int
    start: int | None  # None/None: whole source; negative start: suffix
    stop: int | None
    key: str
    array: str
    coords: tuple[int, ...]
    post: ByteRange | None = None  # range applied after verification (verify reads whole chunks)
    verify: bool = False


class ReferenceStore(Store):
    """A read-only Store over a :class:`~chunkref.manifest.Manifest`.

    Parameters
    ----------
    manifest
        The manifest to serve (or a URL/path of a kerchunk JSON file, loaded with
        ``Manifest.load``).
    allow
        Source URL prefixes the opener authorizes, in addition to the folder holding a local
        manifest file.
    storage_options
        fsspec options for remote sources: one dict for every remote filesystem, or a dict
        ``{url prefix: options}`` (the longest matching prefix wins), e.g. an anonymous and an
        authenticated bucket side by side.
    rename
        ``{old prefix: new prefix}`` applied to source URLs first (relocated data).
    verify
        Check every chunk read against its recorded content id (when the table has one).
    """

    read_only = True

    def __init__(
        self,
        manifest: Manifest | str,
        *,
        allow: Iterable[str] | str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        rename: Mapping[str, str] | None = None,
        verify: bool = False,
    ) -> None:
        if isinstance(manifest, str):
            manifest = Manifest.load(manifest)
        if not isinstance(manifest, Manifest):
            raise InvalidArgumentError(f"ReferenceStore needs a Manifest, got {type(manifest).__name__}")
        self.manifest = manifest
        self.allow = [allow] if isinstance(allow, str) else list(allow or [])
        self.storage_options = dict(storage_options or {})
        self.rename = dict(rename or {})
        self.verify = bool(verify)
        self._setup()

    # -- construction --------------------------------------------------------------------------

    def _setup(self) -> None:
        m = self.manifest
        self._policy = SourcePolicy(self.allow, m.location)
        self._options_by_prefix, self._default_options = _split_options(self.storage_options)
        self._docs: dict[str, bytes] = {}
        for path, docs in m.nodes.items():
            for name, doc in docs.items():
                self._docs[f"{path}/{name}" if path else name] = json.dumps(doc).encode("utf-8")
        self._arrays: dict[str, _ArrayInfo] = {}
        for path, table in m.tables.items():
            self._arrays[path] = _ArrayInfo(path, table, _key_encoding(m.nodes[path], path), len(table.grid_shape))
        self._sources: dict[int, _ResolvedSource] = {}
        self._fs: dict[tuple[str, int], Any] = {}
        # Authorize every source some present chunk uses, before any I/O.
        for idx in m.used_sources():
            if idx >= len(m.sources):
                raise InvalidArgumentError(f"a chunk table refers to source {idx}; the manifest has {len(m.sources)}")
            self._sources[idx] = self._resolve(idx)

    def _resolve(self, idx: int) -> _ResolvedSource:
        raw = self.manifest.sources[idx].url
        url = resolve_url(apply_rename(raw, self.rename), self.manifest.location)
        what = self._users_of(idx)
        target = self._policy.check(url, what=what)
        proto, _ = split_protocol(url)
        if is_local(url):
            # Read the symlink-resolved path that was authorized, not the name in the manifest.
            return _ResolvedSource(url, ("file", -1), str(target)[:-1] if str(target).endswith("/") else str(target))
        assert proto is not None
        entry = self._options_entry(target)
        return _ResolvedSource(url, (proto, entry), url)

    def _users_of(self, idx: int) -> str:
        for path, table in self.manifest.tables.items():
            known = getattr(table, "sources_used", None)
            if known is not None:  # a paged table: name the array without loading its pages
                if idx in known:
                    return f"array {path!r}"
                continue
            hit = np.nonzero((table.source == idx) & table.present())[0]
            if hit.size:
                coords = table.coords_of(int(hit[0]))
                return f"array {path!r} chunk {coords}"
        return f"source #{idx}"

    def _options_entry(self, target: Prefix) -> int:
        best, best_len = -1, -1
        for i, (prefix, _) in enumerate(self._options_by_prefix):
            if prefix.contains(target) and len(prefix.segments) > best_len:
                best, best_len = i, len(prefix.segments)
        return best

    def _filesystem(self, fs_key: tuple[str, int]) -> Any:
        fs = self._fs.get(fs_key)
        if fs is None:
            import fsspec

            proto, entry = fs_key
            if proto == "file":
                options: dict = {}
            elif entry >= 0:
                options = dict(self._options_by_prefix[entry][1])
            else:
                options = dict(self._default_options)
            fs = fsspec.filesystem(proto, **options)
            self._fs[fs_key] = fs
        return fs

    @classmethod
    def from_url(cls, url: str, *, manifest_options: Mapping[str, Any] | None = None, **kwargs: Any) -> ReferenceStore:
        """Load the manifest at ``url`` (kerchunk JSON) and serve it."""
        return cls(Manifest.load(url, **dict(manifest_options or {})), **kwargs)

    def __getstate__(self) -> dict:
        return {
            "manifest": self.manifest,
            "allow": self.allow,
            "storage_options": self.storage_options,
            "rename": self.rename,
            "verify": self.verify,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(  # type: ignore[misc]
            state["manifest"],
            allow=state["allow"],
            storage_options=state["storage_options"],
            rename=state["rename"],
            verify=state["verify"],
        )

    def __repr__(self) -> str:
        return f"ReferenceStore({self.manifest!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReferenceStore) and other.manifest is self.manifest

    def __hash__(self) -> int:
        return id(self.manifest)

    def with_read_only(self, read_only: bool = True) -> Store:
        if not read_only:
            raise ReadOnlyError("a ReferenceStore is always read-only")
        return self

    # -- key resolution ------------------------------------------------------------------------

    def _locate(self, key: str) -> tuple[_ArrayInfo, tuple[int, ...], int] | None:
        head = key
        while True:
            head, sep, _ = head.rpartition("/")
            if not sep:
                return None
            info = self._arrays.get(head)
            if info is not None:
                break
        try:
            coords = info.encoding.decode(key[len(head) + 1 :], info.ndim)
            flat = info.table.flat_index(coords)
        except (InvalidKeyError, BoundsCheckError):
            return None
        return info, coords, flat

    # -- reads ---------------------------------------------------------------------------------

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        return self._get_many([(key, range)])[0]

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        out, fetches = self._plan_all(requests)
        if fetches:
            self._fetch_all(fetches, out)
        return out

    def get_many_into(self, requests: Sequence[tuple[str, ByteRange | None, Any, int | None]]) -> list[bool]:
        """Read each ``(key, range, buffer, size)`` straight into its writable buffer.

        ``buffer`` (anything exposing a writable C-contiguous buffer, e.g. a numpy view of the
        output array) must hold exactly as many bytes as the request delivers.  ``size``, when
        not None, is the size the whole value must have (a chunk's encoded size): a reference
        of any other length raises :class:`~chunkref.errors.ChunkDecodeError` before any I/O,
        so a partial read never hides a malformed chunk.  Ranges of local sources are read with
        ``os.preadv`` (no intermediate ``bytes``); everything else (documents, inline chunks,
        remote sources, chunks checked with ``verify``) is fetched as by :meth:`get_many` and
        copied.

        Returns
        -------
        list of bool
            Per request, True when the buffer was filled, False when the key holds no value
            (an absent chunk: the caller fills it).
        """
        reqs = [(validate_key(k), as_range(r)) for k, r, _, _ in requests]
        views = [writable_bytes(key, b) for (key, _), (_, _, b, _) in zip(reqs, requests)]
        sizes: list[int | None] = [None] * len(reqs)
        out, fetches = self._plan_all(reqs, sizes)
        by_index = {f.index: f for f in fetches}
        for i, (_, _, _, expected) in enumerate(requests):
            if expected is None or sizes[i] is None:
                continue  # no check asked, or absent
            actual = sizes[i]
            if actual == -1:  # a whole-source reference: its size is the source's
                f = by_index[i]
                src = self._sources[f.source]
                actual = int(self._filesystem(src.fs_key).size(src.fs_path))
            if actual != expected:
                f = by_index.get(i)
                where = f" ({self._where(f)})" if f is not None else ""
                raise ChunkDecodeError(f"{reqs[i][0]!r}{where} holds {actual} bytes, expected {expected}")
        direct: list[_Fetch] = []
        rest: list[_Fetch] = []
        for f in fetches:
            local = self._sources[f.source].fs_key[0] == "file"
            if local and not f.verify and f.start is not None and f.start >= 0 and f.stop is not None:
                if f.stop - f.start != views[f.index].nbytes:
                    raise ShortReadError(
                        f"{f.key!r} ({self._where(f)}): the request covers {f.stop - f.start} bytes, "
                        f"its buffer {views[f.index].nbytes}"
                    )
                direct.append(f)
            else:
                rest.append(f)
        if rest:
            self._fetch_all(rest, out)
        if direct:
            self._fetch_local(direct, out, views)
        filled = [False] * len(reqs)
        is_direct = {f.index for f in direct}
        for i, data in enumerate(out):
            if i in is_direct:
                filled[i] = True
            elif data is not None:
                if len(data) != views[i].nbytes:
                    raise ShortReadError(f"{reqs[i][0]!r}: {len(data)} bytes for a buffer of {views[i].nbytes}")
                views[i][:] = data
                filled[i] = True
        return filled

    def _plan_all(
        self, requests: Sequence[tuple[str, ByteRange | None]], sizes: list[int | None] | None = None
    ) -> tuple[list[bytes | None], list[_Fetch]]:
        """Serve what memory holds into ``out``; return it and the byte ranges to fetch.

        ``sizes``, when given, receives each present value's full size (-1: a whole source,
        size unknown without I/O; None: absent).
        """
        out: list[bytes | None] = [None] * len(requests)
        # Pass 1: documents from memory; chunk keys decoded and grouped per array, so each
        # table is read with one batched ``take`` (paged tables load only the pages touched).
        per_array: dict[str, list[tuple[int, tuple[int, ...], int]]] = {}
        for i, (key, rng) in enumerate(requests):
            doc = self._docs.get(key)
            if doc is not None:
                out[i] = slice_value(key, doc, rng)
                if sizes is not None:
                    sizes[i] = len(doc)
                continue
            loc = self._locate(key)
            if loc is not None:
                per_array.setdefault(loc[0].path, []).append((i, loc[1], loc[2]))
        fetches: list[_Fetch] = []
        for path, items in per_array.items():
            table = self._arrays[path].table
            sources, offsets, lengths = table.take([flat for _, _, flat in items])
            for (i, coords, flat), src, off, length in zip(items, sources.tolist(), offsets.tolist(), lengths.tolist()):
                if length == int(ABSENT):
                    continue
                if sizes is not None:
                    sizes[i] = -1 if length == int(WHOLE) else length
                f = self._plan(i, requests[i][0], requests[i][1], path, coords, flat, src, off, length, out)
                if f is not None:
                    fetches.append(f)
        return out, fetches

    def _plan(
        self,
        i: int,
        key: str,
        rng: ByteRange | None,
        path: str,
        coords: tuple[int, ...],
        flat: int,
        src: int,
        offset: int,
        length: int,
        out: list[bytes | None],
    ) -> _Fetch | None:
        """Serve request ``i`` from memory, or return the byte range to fetch for it."""
        table = self._arrays[path].table
        if src == INLINE:
            ref = table.lookup_flat(flat)
            assert ref is not None and ref.data is not None
            if self.verify:
                self._check_content(path, coords, ref.data, key=key)
            out[i] = slice_value(key, ref.data, rng)
            return None
        if src < 0:
            raise SourceUnavailableError(
                f"chunk {key!r} of array {path!r} is a repository object (source {src}), not a reference: "
                "open it through its repository"
            )
        verify = self.verify and table.cid_of(flat) is not None
        if length == int(WHOLE):
            if isinstance(rng, SuffixRequest) and rng.length == 0 and not verify:
                out[i] = b""
                return None
            if verify:
                return _Fetch(i, src, None, None, key, path, coords, rng, True)
            start, stop = _whole_range(rng)
            return _Fetch(i, src, start, stop, key, path, coords, None, False)
        if length == 0:
            # Zero-length reference: no request (s3fs would answer bytes=x-(x-1) with the whole
            # object).
            if verify:
                self._check_content(path, coords, b"", key=key)
            out[i] = slice_value(key, b"", rng)
            return None
        if verify:
            return _Fetch(i, src, offset, offset + length, key, path, coords, rng, True)
        lo, hi = range_bounds(key, rng, length)
        if lo == hi:
            out[i] = b""  # empty range of a chunk: no request
            return None
        return _Fetch(i, src, offset + lo, offset + hi, key, path, coords, None, False)

    def _fetch_all(self, fetches: list[_Fetch], out: list[bytes | None]) -> None:
        by_fs: dict[tuple[str, int], list[_Fetch]] = {}
        for f in fetches:
            by_fs.setdefault(self._sources[f.source].fs_key, []).append(f)
        for fs_key, items in by_fs.items():
            if fs_key[0] == "file":
                self._fetch_local(items, out)
                continue
            fs = self._filesystem(fs_key)
            ranged = [f for f in items if f.start is not None and f.start >= 0 and f.stop is not None]
            other = [f for f in items if not (f.start is not None and f.start >= 0 and f.stop is not None)]
            if ranged:
                self._fetch_ranged(fs, fs_key[0], ranged, out)
            if other:
                results = self._cat(fs, [self._sources[f.source].fs_path for f in other],
                                    [f.start for f in other], [f.stop for f in other], other)
                for f, data in zip(other, results):
                    if f.start is not None and f.stop is not None and len(data) != f.stop - f.start:
                        raise ShortReadError(
                            f"short read of {f.key!r} ({self._where(f)}): asked for bytes "
                            f"[{f.start}, {f.stop}), got {len(data)}"
                        )
                    self._finish(f, data, out)

    def _fetch_ranged(self, fs: Any, protocol: str, items: list[_Fetch], out: list[bytes | None]) -> None:
        starts = np.fromiter((f.start for f in items), np.int64, len(items))
        stops = np.fromiter((f.stop for f in items), np.int64, len(items))
        ids = np.fromiter((f.source for f in items), np.int64, len(items))
        local = protocol == "file"
        max_gap = 0 if local else int(config.get("array.coalesce_max_gap_bytes"))
        max_size = int(config.get("array.coalesce_max_bytes"))
        gstarts, gstops, assign = coalesce_ranges(starts, stops, max_gap, max_size, ids=ids)
        # The source of each group: any member's source (groups never mix sources).
        gsource = np.empty(gstarts.size, np.int64)
        gsource[assign] = ids
        first_member = np.full(gstarts.size, -1, np.int64)
        first_member[assign[::-1]] = np.arange(len(items))[::-1]
        paths = [self._sources[int(s)].fs_path for s in gsource.tolist()]
        group_fetches = [items[int(j)] for j in first_member.tolist()]
        data = self._cat(fs, paths, gstarts.tolist(), gstops.tolist(), group_fetches)
        for g, d in enumerate(data):
            planned = int(gstops[g] - gstarts[g])
            if len(d) > planned:
                # More bytes than asked: the server ignored the Range header; the offsets of
                # what came back cannot be trusted.
                f = group_fetches[g]
                raise ShortReadError(
                    f"read of {f.key!r} ({self._where(f)}): asked for {planned} bytes "
                    f"[{int(gstarts[g])}, {int(gstops[g])}), got {len(d)} (range request ignored?)"
                )
        names = [f"{f.key} ({self._where(f)})" for f in items]
        pieces = slice_groups(data, gstarts, starts, stops, assign, names=names)
        for f, piece in zip(items, pieces):
            self._finish(f, piece, out)

    def _fetch_local(self, items: list[_Fetch], out: list[bytes | None], into: list[memoryview] | None = None) -> None:
        """Local sources: one ``os.pread`` per request, sources opened one at a time.

        Each request's bytes arrive as their own ``bytes`` (no merged buffer to slice and copy
        again), or, with ``into`` (buffers by request index), straight into the caller's buffer
        with ``os.preadv``.  Requests are sorted by source and offset; each batch opens a
        source once for all its requests and closes it before the next, so a call touching
        thousands of files holds at most one descriptor per batch.  Large batches are read on
        the I/O pool (``pread`` releases the GIL; from the page cache it is a memcpy, so a few
        threads per core suffice).
        """
        items = sorted(items, key=lambda f: (f.source, f.start if f.start is not None else -1))
        total = sum((f.stop or 0) - (f.start or 0) for f in items if f.start is not None and f.start >= 0)
        workers = local_read_workers() if total >= _LOCAL_PARALLEL_BYTES else 1
        min_batch = max(1, -(-len(items) * _LOCAL_BATCH_BYTES // max(1, total)))

        def batch(fetches: Sequence[_Fetch]) -> list[bytes | None]:
            results: list[bytes | None] = []
            source, fd, size = -1, -1, 0
            try:
                for f in fetches:
                    if f.source != source:
                        if fd >= 0:
                            os.close(fd)
                            fd = -1
                        fd, size = self._open_local(f)
                        source = f.source
                    if into is not None:
                        self._preadv(f, fd, into[f.index])
                        results.append(None)
                    else:
                        results.append(self._pread(f, fd, size))
            finally:
                if fd >= 0:
                    os.close(fd)
            return results

        results = run_batched(batch, items, min_batch=min_batch, workers=workers)
        if into is None:
            for f, data in zip(items, results):
                self._finish(f, data, out)

    def _open_local(self, f: _Fetch) -> tuple[int, int]:
        path = self._sources[f.source].fs_path
        try:
            # O_NONBLOCK: a FIFO put in place of a source must not hang the open.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise self._typed_error(exc, f, 0) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SourceUnavailableError(f"cannot read {f.key!r} ({self._where(f)}): the source is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        return fd, st.st_size

    def _pread(self, f: _Fetch, fd: int, size: int) -> bytes:
        """The bytes of ``f`` (checked to be complete) read from ``fd`` (a file of ``size`` bytes
        when it was opened)."""
        start, stop = f.start, f.stop
        if start is None:  # whole source
            start, stop = 0, size
        elif start < 0:  # suffix
            start, stop = max(0, size + start), size
        elif stop is None:  # from an offset to the end
            if start > size:
                raise ShortReadError(f"short read of {f.key!r} ({self._where(f)}): offset {start} is past the end ({size} bytes)")
            stop = size
        want = stop - start
        try:
            data = pread_all(fd, want, start)
        except OSError as exc:
            raise self._typed_error(exc, f, 0) from exc
        if len(data) != want:
            raise ShortReadError(
                f"short read of {f.key!r} ({self._where(f)}): asked for bytes [{start}, {stop}), got {len(data)}"
            )
        return data

    def _preadv(self, f: _Fetch, fd: int, buf: memoryview) -> None:
        """Fill ``buf`` with the bytes ``[f.start, f.stop)`` of ``fd`` (checked complete)."""
        assert f.start is not None and f.stop is not None
        want = f.stop - f.start
        got = 0
        try:
            while got < want:
                n = os.preadv(fd, [buf[got:]], f.start + got)
                if n == 0:
                    break
                got += n
        except OSError as exc:
            raise self._typed_error(exc, f, 0) from exc
        if got != want:
            raise ShortReadError(
                f"short read of {f.key!r} ({self._where(f)}): asked for bytes [{f.start}, {f.stop}), got {got}"
            )

    def _finish(self, f: _Fetch, data: bytes | None, out: list[bytes | None]) -> None:
        assert data is not None
        if f.verify:
            self._check_content(f.array, f.coords, data, key=f.key)
            if f.post is not None:
                data = slice_value(f.key, data, f.post)
        out[f.index] = data

    def _where(self, f: _Fetch) -> str:
        return f"array {f.array!r}, chunk {f.coords}, source {self._sources[f.source].url!r}"

    def _cat(
        self,
        fs: Any,
        paths: list[str],
        starts: list[int | None],
        stops: list[int | None],
        fetches: list[_Fetch],
    ) -> list[bytes]:
        """Fetch ranges concurrently, retrying transient failures; raise typed errors."""
        results = self._cat_once(fs, paths, starts, stops)
        retries = int(config.get("io.retries"))
        backoff = float(config.get("io.retry_backoff"))
        attempt = 0
        while True:
            pending = [i for i, r in enumerate(results) if isinstance(r, BaseException) and classify_error(r) == "transient"]
            if not pending or attempt >= retries:
                break
            time.sleep(backoff * (2**attempt))
            attempt += 1
            again = self._cat_once(fs, [paths[i] for i in pending], [starts[i] for i in pending], [stops[i] for i in pending])
            for i, r in zip(pending, again):
                results[i] = r
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                raise self._typed_error(r, fetches[i], retries) from r
            if not isinstance(r, (bytes, bytearray, memoryview)):
                raise SourceUnavailableError(f"reading {fetches[i].key!r} ({self._where(fetches[i])}) returned {type(r).__name__}")
        return results  # type: ignore[return-value]

    def _cat_once(self, fs: Any, paths: list[str], starts: list[int | None], stops: list[int | None]) -> list[Any]:
        timeout = config.get("io.timeout")
        try:
            if getattr(fs, "async_impl", False):
                import fsspec.asyn

                batch = max(1, int(config.get("io.concurrency") or 1))
                return list(
                    fsspec.asyn.sync(
                        fs.loop, fs._cat_ranges, paths, starts, stops,
                        batch_size=batch, on_error="return", timeout=timeout,
                    )
                )
            return list(fs.cat_ranges(paths, starts, stops, on_error="return"))
        except Exception as exc:  # the whole call failed (timeout, session): same for every item
            return [exc] * len(paths)

    def _typed_error(self, exc: BaseException, f: _Fetch, retries: int) -> StoreError:
        kind = classify_error(exc)
        where = f"{f.key!r} ({self._where(f)})"
        if kind == "transient":
            return TransientStoreError(f"reading {where} failed after {retries} retries: {exc!r}")
        if kind == "range":
            return ShortReadError(f"short read of {where}: the referenced range is past the end of the source ({exc})")
        if kind == "absent":
            return SourceUnavailableError(f"cannot read {where}: the source does not exist ({exc})")
        if kind == "denied":
            return SourceUnavailableError(f"cannot read {where}: access denied ({exc})")
        return SourceUnavailableError(f"cannot read {where}: {exc!r}")

    def _check_content(self, array: str, coords: tuple[int, ...], data: bytes, *, key: str = "") -> None:
        """Verify ``data`` against the chunk's recorded content id, if any.

        Verification happens only when the array's table has a content-id column with an entry
        for this chunk and the CID's hash function is available (sha2-256 always, blake3 with
        the optional package).  A mismatch raises :class:`~chunkref.errors.HashMismatchError`.
        """
        table = self.manifest.tables[array]
        cid = table.cid_of(table.flat_index(coords))
        if cid is None:
            return
        try:
            ok = verify_cid(cid, data)
        except InvalidArgumentError as exc:
            raise HashMismatchError(f"chunk {key or coords!r} of array {array!r}: unreadable content id: {exc}") from exc
        if ok is False:
            flat = table.flat_index(coords)
            src = int(table.source[flat])
            origin = "inline data" if src == INLINE else f"source {self._sources[src].url!r}"
            raise HashMismatchError(
                f"chunk {key or coords!r} of array {array!r} ({origin}) does not match its content id "
                f"(hash 0x{parse_cid(cid)[2]:x}): the source changed or the read was wrong"
            )

    # -- metadata-only queries (no I/O) --------------------------------------------------------

    def _exists(self, key: str) -> bool:
        if key in self._docs:
            return True
        loc = self._locate(key)
        return loc is not None and loc[0].table.lookup_flat(loc[2]) is not None

    def _getsize(self, key: str) -> int | None:
        doc = self._docs.get(key)
        if doc is not None:
            return len(doc)
        loc = self._locate(key)
        if loc is None:
            return None
        ref = loc[0].table.lookup_flat(loc[2])
        if ref is None:
            return None
        if ref.length is not None:
            return int(ref.length)
        src = self._sources[ref.source]
        return int(self._filesystem(src.fs_key).size(src.fs_path))

    def _chunk_keys(self, info: _ArrayInfo) -> list[str]:
        flat = np.nonzero(info.table.present())[0]
        if flat.size == 0:
            return []
        if info.ndim == 0:
            coords = np.zeros((flat.size, 0), np.int64)
        else:
            coords = np.stack(np.unravel_index(flat, info.table.grid_shape), axis=1)
        prefix = info.path + "/"
        return [prefix + k for k in info.encoding.encode_many(coords)]

    def _list(self, prefix: str) -> Iterator[str]:
        keys = [k for k in self._docs if k.startswith(prefix)]
        for path, info in self._arrays.items():
            ap = path + "/"
            if ap.startswith(prefix) or prefix.startswith(ap):
                keys.extend(k for k in self._chunk_keys(info) if k.startswith(prefix))
        return iter(sorted(keys))

    def _list_dir(self, prefix: str) -> list[str]:
        names: set[str] = set()
        n = len(prefix)
        for k in self._docs:
            if k.startswith(prefix):
                names.add(k[n:].split("/", 1)[0])
        for path, info in self._arrays.items():
            ap = path + "/"
            if prefix.startswith(ap) or ap == prefix:
                names.update(k[n:].split("/", 1)[0] for k in self._chunk_keys(info) if k.startswith(prefix))
        return sorted(names)

    # -- writes are refused ----------------------------------------------------------------------

    def _set(self, key: str, value: bytes) -> None:
        raise ReadOnlyError(f"cannot write {key!r}: a ReferenceStore is read-only")

    def _delete(self, key: str) -> None:
        raise ReadOnlyError(f"cannot delete {key!r}: a ReferenceStore is read-only")


def _key_encoding(docs: Mapping[str, dict], path: str) -> ChunkKeyEncoding:
    try:
        if V3_DOC in docs:
            return parse_chunk_key_encoding(docs[V3_DOC].get("chunk_key_encoding", "default"))
        return ChunkKeyEncoding.from_dimension_separator(docs[V2_ARRAY_DOC].get("dimension_separator"))
    except MetadataError as exc:
        raise MetadataError(f"array {path!r}: {exc}") from exc


def _split_options(options: Mapping[str, Any]) -> tuple[list[tuple[Prefix, dict]], dict]:
    """Per-prefix options when every key is a URL prefix with a dict value, else one global dict."""
    if options and all(isinstance(k, str) and "://" in k and isinstance(v, Mapping) for k, v in options.items()):
        return [(parse_prefix(k), dict(v)) for k, v in options.items()], {}
    return [], dict(options)


def _whole_range(rng: ByteRange | None) -> tuple[int | None, int | None]:
    """fsspec ``cat_file`` start/end for a range of a whole-source reference."""
    if rng is None:
        return None, None
    if isinstance(rng, RangeRequest):
        return rng.start, rng.stop
    if isinstance(rng, OffsetRequest):
        return rng.offset, None
    assert isinstance(rng, SuffixRequest)
    return -rng.length, None
