"""A store over any fsspec file system (file, memory, s3, gcs, http, ...).

Reads
-----
``get_many`` plans every request of the batch at once: byte ranges of the same key that lie
close together are merged (:func:`~chunkref.storage.ranges.coalesce_ranges`, settings
``array.coalesce_max_gap_bytes`` / ``array.coalesce_max_bytes``; local and memory file systems
only merge overlapping or adjacent ranges), and all fetches go out in one ``fs.cat_ranges`` call,
which async file systems (s3fs, http, gcsfs) run concurrently, at most ``io.concurrency`` at a
time.  Synchronous file systems run in a few thread-pool batches.

fsspec does not check what servers send back, so this store does:

* a ranged read must return exactly its length (fewer bytes: the value ended early; more bytes:
  the server ignored the ``Range`` header) or :class:`~chunkref.errors.ShortReadError` is raised;
* zero-length ranges and ``SuffixRequest(0)`` never reach the server (s3fs would fetch the whole
  object for them); they are answered from the value's size;
* an offset read that comes back empty, and a suffix read that comes back shorter than asked,
  are confirmed against the value's size; over HTTP, where servers may ignore ``Range``
  silently, offset reads are turned into explicit ranges from the size up front.

Errors map to typed errors naming the key: absent (404, ``FileNotFoundError``) -> ``None``;
refused (401/403, ``PermissionError``) -> :class:`~chunkref.errors.AccessDeniedError`; timeouts,
throttling, 5xx and dropped connections -> retried ``io.retries`` times with exponential backoff
from ``io.retry_backoff`` seconds, then :class:`~chunkref.errors.TransientStoreError`; anything
else -> :class:`~chunkref.errors.SourceUnavailableError`.

Conditional create
------------------
``set_if_not_exists`` is atomic on local file systems (temporary file + hard link), in memory
(a process-wide lock: fsspec's memory file system is process-global) and on S3 (s3fs sends
``If-None-Match: *``; AWS S3 and moto enforce it).  Other file systems fall back to fsspec's
``pipe_file(mode="create")``, which for most of them is an existence check followed by a write
and therefore racy between concurrent writers.  A conditional create that fails transiently is
not retried (the write may have happened with its answer lost, and a retry would then report our
own write as a conflict): :class:`~chunkref.errors.TransientStoreError` lets the caller decide.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import fsspec
import numpy as np

from chunkref.config import config
from chunkref.errors import (
    AccessDeniedError,
    InvalidKeyError,
    ShortReadError,
    SourceUnavailableError,
    StoreError,
    TransientStoreError,
)
from chunkref.storage._threads import run_batched
from chunkref.storage.base import (
    ByteRange,
    OffsetRequest,
    RangeRequest,
    Store,
    SuffixRequest,
    validate_key,
)
from chunkref.storage.ranges import coalesce_ranges

__all__ = ["FsspecStore"]

# fsspec's memory file system is one dict per process: a lock makes create-if-absent atomic.
_MEMORY_CREATE_LOCK = threading.Lock()

_LOCAL_PROTOCOLS = frozenset({"file", "local"})
_OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"})
_HTTP_PROTOCOLS = frozenset({"http", "https"})

_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EBUSY", "EREMOTEIO", "ETIMEDOUT", "ECONNRESET", "ECONNABORTED", "EAGAIN", "EPIPE")
    if hasattr(errno, name)
)
# Exception class names (anywhere in the MRO) that signal a failure worth retrying; matched by
# name so that aiohttp / botocore stay optional imports.
_TRANSIENT_NAMES = frozenset(
    {
        "FSTimeoutError",
        "TimeoutError",
        "ClientPayloadError",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "ClientOSError",
        "ConnectionError",
        "HTTPClientError",  # botocore: EndpointConnectionError, ConnectionClosedError, ReadTimeout
        "IncompleteRead",
        "ResponseParserError",
    }
)


def classify_error(exc: BaseException) -> str:
    """Kind of a filesystem failure: ``"absent"``, ``"denied"``, ``"range"``, ``"transient"`` or ``"error"``.

    Shared by every remote reader (this store, the reference store) so that retries and typed
    errors follow one rule.
    """
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return "absent"
    if isinstance(exc, PermissionError):
        return "denied"
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        if status in (404, 410):
            return "absent"
        if status in (401, 403):
            return "denied"
        if status == 416:
            return "range"
        if status in (408, 425, 429) or status >= 500:
            return "transient"
        return "error"
    names = {c.__name__ for c in type(exc).__mro__}
    if names & _TRANSIENT_NAMES or isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return "transient"
    if isinstance(exc, OSError):
        if exc.errno in _TRANSIENT_ERRNOS:
            return "transient"
        if exc.errno == errno.EINVAL and "range" in str(exc).lower():
            return "range"  # s3fs: 416 InvalidRange
    return "error"


class _Absent:
    """Marker for a fetch whose source does not exist."""


_ABSENT = _Absent()


class FsspecStore(Store):
    """Keys as files below a path of an fsspec file system.

    Parameters
    ----------
    url
        Any fsspec URL or local path (``s3://bucket/prefix``, ``memory://root``,
        ``https://host/data.zarr``, ``/tmp/x``).
    storage_options
        Keyword arguments for the file system (credentials, ``client_kwargs``, ...).
    read_only
        Refuse writes.
    max_gap, max_size
        Range merging (bytes); default to ``array.coalesce_max_gap_bytes`` and
        ``array.coalesce_max_bytes`` for remote file systems, and to adjacent-only merging for
        local and memory ones.

    Notes
    -----
    Pickles as its URL and storage options (a store made by :meth:`from_filesystem` pickles its
    file system the way fsspec does, i.e. by its constructor arguments).
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        storage_options: dict[str, Any] | None = None,
        read_only: bool = False,
        max_gap: int | None = None,
        max_size: int | None = None,
    ) -> None:
        url = os.fspath(url)
        options = dict(storage_options or {})
        fs, path = fsspec.core.url_to_fs(url, **options)
        self._setup(fs, path, url=url, storage_options=options, read_only=read_only,
                    max_gap=max_gap, max_size=max_size)

    @classmethod
    def from_filesystem(
        cls,
        fs: fsspec.AbstractFileSystem,
        path: str = "",
        *,
        read_only: bool = False,
        max_gap: int | None = None,
        max_size: int | None = None,
    ) -> FsspecStore:
        """A store over an existing file system instance, rooted at ``path``."""
        self = object.__new__(cls)
        self._setup(fs, path, url=None, storage_options=None, read_only=read_only,
                    max_gap=max_gap, max_size=max_size)
        return self

    def _setup(
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        *,
        url: str | None,
        storage_options: dict[str, Any] | None,
        read_only: bool,
        max_gap: int | None,
        max_size: int | None,
    ) -> None:
        self.fs = fs
        self.url = url
        self.storage_options = storage_options
        self.read_only = read_only
        self.max_gap = max_gap
        self.max_size = max_size
        protocol = fs.protocol
        self.protocol: str = protocol if isinstance(protocol, str) else protocol[0]
        root = fs._strip_protocol(path) if path else ""
        if isinstance(root, list):  # pragma: no cover - defensive; a single path gives a str
            root = root[0]
        root = root.rstrip("/")
        self.root: str = root

    # -- identity ------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        common = {"read_only": self.read_only, "max_gap": self.max_gap, "max_size": self.max_size}
        if self.url is not None:
            return {"url": self.url, "storage_options": self.storage_options, **common}
        return {"fs": self.fs, "root": self.root, **common}

    def __setstate__(self, state: dict) -> None:
        kw = {k: state[k] for k in ("read_only", "max_gap", "max_size")}
        if "url" in state:
            self.__init__(state["url"], storage_options=state["storage_options"], **kw)  # type: ignore[misc]
        else:
            self._setup(state["fs"], state["root"], url=None, storage_options=None, **kw)

    def __copy__(self) -> FsspecStore:
        # Share the file system instance (a pickle round trip would build a new client).
        new = object.__new__(FsspecStore)
        new.__dict__.update(self.__dict__)
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FsspecStore) or other.root != self.root or other.protocol != self.protocol:
            return False
        if self.url is not None and other.url is not None:
            # Same location and options: equal even when fsspec made two instances.
            return self.storage_options == other.storage_options
        return other.fs == self.fs

    def __hash__(self) -> int:
        return hash(("FsspecStore", self.protocol, self.root))

    def __repr__(self) -> str:
        where = self.url if self.url is not None else f"{self.protocol}://{self.root}"
        return f"FsspecStore({where!r}{', read_only=True' if self.read_only else ''})"

    # -- paths ---------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _key_of(self, path: str) -> str | None:
        """The key of a path listed by the file system (None if it is outside the root)."""
        path = path.rstrip("/")
        if self.root:
            if not path.startswith(self.root + "/"):
                return None
            return path[len(self.root) + 1 :]
        return path.lstrip("/") if self.protocol == "memory" else path

    def _merge_limits(self) -> tuple[int, int]:
        local = self.protocol in _LOCAL_PROTOCOLS or self.protocol == "memory"
        gap = self.max_gap if self.max_gap is not None else (
            0 if local else int(config.get("array.coalesce_max_gap_bytes"))
        )
        size = self.max_size if self.max_size is not None else int(config.get("array.coalesce_max_bytes"))
        return gap, size

    # -- error handling ------------------------------------------------------------------------

    def _classify(self, exc: BaseException) -> str:
        return classify_error(exc)

    def _typed_error(self, exc: BaseException, key: str, kind: str, what: str = "read") -> Exception:
        where = f"{key!r} ({self._describe(key)})"
        if kind == "denied":
            return AccessDeniedError(f"access denied to {what} {where}: {exc}")
        if kind == "transient":
            if what == "create":
                return TransientStoreError(
                    f"conditional create of {where} failed and was not retried (it may or may not have "
                    f"been written): {exc!r}"
                )
            retries = int(config.get("io.retries"))
            return TransientStoreError(f"{what} of {where} failed after {retries} retries: {exc!r}")
        if kind == "range":
            return ShortReadError(f"short read of {where}: the requested range is past its end ({exc})")
        return SourceUnavailableError(f"cannot {what} {where}: {exc!r}")

    def _describe(self, key: str) -> str:
        """The URL of a key, for messages."""
        path = self._path(key)
        if "://" in path:  # http(s) paths are full URLs
            return path
        if self.protocol in _LOCAL_PROTOCOLS:
            return "file://" + path
        return f"{self.protocol}://{path.lstrip('/')}"

    def _with_retries(self, func: Any, key: str, what: str) -> Any:
        """Call ``func()`` retrying transient failures; map the final failure to a typed error."""
        retries = int(config.get("io.retries"))
        backoff = float(config.get("io.retry_backoff"))
        attempt = 0
        while True:
            try:
                return func()
            except (FileExistsError, StoreError):
                raise
            except Exception as exc:
                kind = self._classify(exc)
                if kind == "transient" and attempt < retries:
                    time.sleep(backoff * (2**attempt))
                    attempt += 1
                    continue
                if kind == "absent":
                    raise
                raise self._typed_error(exc, key, kind, what) from exc

    # -- fetching ------------------------------------------------------------------------------

    def _cat(self, paths: list[str], starts: list[int | None], ends: list[int | None]) -> list[Any]:
        """``fs.cat_ranges`` with per-item results (bytes or exception), concurrently."""
        fs = self.fs
        if getattr(fs, "async_impl", False):
            workers = max(1, int(config.get("io.concurrency") or 1))
            try:
                return list(fs.cat_ranges(paths, starts, ends, batch_size=workers, on_error="return"))
            except Exception as exc:  # the whole call failed (session, loop): same for every item
                return [exc] * len(paths)

        def batch(items: Sequence[tuple[str, int | None, int | None]]) -> list[Any]:
            p = [i[0] for i in items]
            s = [i[1] for i in items]
            e = [i[2] for i in items]
            try:
                return list(fs.cat_ranges(p, s, e, on_error="return"))
            except Exception as exc:
                return [exc] * len(items)

        items = list(zip(paths, starts, ends))
        if self.protocol == "memory":
            return batch(items)
        return run_batched(batch, items)

    def _fetch(self, keys: list[str], starts: list[int | None], ends: list[int | None]) -> list[Any]:
        """Fetch ranges with retries of transient failures; items are bytes or exceptions."""
        paths = [self._path(k) for k in keys]
        results = self._cat(paths, starts, ends)
        retries = int(config.get("io.retries"))
        backoff = float(config.get("io.retry_backoff"))
        pending = [i for i, r in enumerate(results) if isinstance(r, BaseException) and self._classify(r) == "transient"]
        attempt = 0
        while pending and attempt < retries:
            time.sleep(backoff * (2**attempt))
            attempt += 1
            again = self._cat([paths[i] for i in pending], [starts[i] for i in pending], [ends[i] for i in pending])
            for i, r in zip(pending, again):
                results[i] = r
            pending = [i for i in pending if isinstance(results[i], BaseException) and self._classify(results[i]) == "transient"]
        return results

    def _sizes(self, keys: Sequence[str]) -> list[int | None]:
        """Sizes of values (None = absent), concurrently on async file systems."""
        if not keys:
            return []
        paths = [self._path(k) for k in keys]
        fs = self.fs
        # A store's values change under us (other writers): sizes must not come from a listing
        # cached earlier, where a value created since is missing.
        for p in paths:
            fs.invalidate_cache(p)

        def info_many(ps: Sequence[str]) -> list[Any]:
            if getattr(fs, "async_impl", False):
                async def gather() -> list[Any]:
                    return await asyncio.gather(*(fs._info(p) for p in ps), return_exceptions=True)

                return list(fsspec.asyn.sync(fs.loop, gather))
            out: list[Any] = []
            for p in ps:
                try:
                    out.append(fs.info(p))
                except Exception as exc:
                    out.append(exc)
            return out

        results = info_many(paths)
        retries = int(config.get("io.retries"))
        backoff = float(config.get("io.retry_backoff"))
        for attempt in range(retries):
            pending = [i for i, r in enumerate(results) if isinstance(r, BaseException) and self._classify(r) == "transient"]
            if not pending:
                break
            time.sleep(backoff * (2**attempt))
            for i, r in zip(pending, info_many([paths[i] for i in pending])):
                results[i] = r
        sizes: list[int | None] = []
        for key, r in zip(keys, results):
            if isinstance(r, BaseException):
                kind = self._classify(r)
                if kind == "absent":
                    sizes.append(None)
                    continue
                raise self._typed_error(r, key, kind, "stat") from r
            if r.get("type", "file") == "directory":
                sizes.append(None)
                continue
            size = r.get("size")
            if size is None:
                raise SourceUnavailableError(f"the size of {key!r} ({self._describe(key)}) is unknown")
            sizes.append(int(size))
        return sizes

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        return self._get_many([(key, range)])[0]

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        n = len(requests)
        out: list[Any] = [None] * n
        done = [False] * n
        # 1. Requests answered from sizes alone (zero-length), and offsets over HTTP.
        need_size = []
        for i, (_, r) in enumerate(requests):
            if (
                (isinstance(r, RangeRequest) and r.stop == r.start)
                or (isinstance(r, SuffixRequest) and r.length == 0)
                or (isinstance(r, OffsetRequest) and self.protocol in _HTTP_PROTOCOLS)
            ):
                need_size.append(i)
        reqs: list[tuple[str, ByteRange | None]] = list(requests)
        if need_size:
            size_keys = sorted({requests[i][0] for i in need_size})
            size_of = dict(zip(size_keys, self._sizes(size_keys)))
            for i in need_size:
                k, r = requests[i]
                size = size_of[k]
                if size is None:
                    done[i] = True
                    continue
                if isinstance(r, OffsetRequest):
                    if r.offset > size:
                        raise ShortReadError(
                            f"short read of {k!r} ({self._describe(k)}): offset {r.offset} is past its {size} bytes"
                        )
                    if r.offset == size:
                        out[i] = b""
                        done[i] = True
                    else:
                        reqs[i] = (k, RangeRequest(r.offset, size))
                    continue
                start = r.start if isinstance(r, RangeRequest) else 0
                if start > size:
                    raise ShortReadError(
                        f"short read of {k!r} ({self._describe(k)}): asked for bytes [{start}, {start}) of a "
                        f"{size}-byte value"
                    )
                out[i] = b""
                done[i] = True

        # 2. Plan fetches: merged ranges per key, one fetch per other request.
        fetch_keys: list[str] = []
        fetch_starts: list[int | None] = []
        fetch_ends: list[int | None] = []
        other = []  # (request index, fetch index)
        ranged = []
        for i, (k, r) in enumerate(reqs):
            if done[i]:
                continue
            if isinstance(r, RangeRequest):
                ranged.append(i)
            else:
                other.append((i, len(fetch_keys)))
                fetch_keys.append(k)
                if r is None:
                    # start=0, not None: with None, s3fs sizes the object from its listing
                    # cache, so an object created by another writer after we listed its
                    # folder would read as absent for as long as the cache lives.
                    fetch_starts.append(0)
                    fetch_ends.append(None)
                elif isinstance(r, OffsetRequest):
                    fetch_starts.append(r.offset)
                    fetch_ends.append(None)
                else:
                    fetch_starts.append(-r.length)
                    fetch_ends.append(None)
        group_base = len(fetch_keys)
        if ranged:
            key_ids: dict[str, int] = {}
            ids = np.fromiter((key_ids.setdefault(reqs[i][0], len(key_ids)) for i in ranged), np.int64, len(ranged))
            rs = np.fromiter((reqs[i][1].start for i in ranged), np.int64, len(ranged))  # type: ignore[union-attr]
            re_ = np.fromiter((reqs[i][1].stop for i in ranged), np.int64, len(ranged))  # type: ignore[union-attr]
            gap, size = self._merge_limits()
            gstarts, gstops, assign = coalesce_ranges(rs, re_, gap, size, ids=ids)
            gkey = [""] * len(gstarts)
            for i, g in zip(ranged, assign.tolist()):
                gkey[g] = reqs[i][0]
            fetch_keys.extend(gkey)
            fetch_starts.extend(gstarts.tolist())
            fetch_ends.extend(gstops.tolist())
            assign_l = assign.tolist()
        else:
            gstarts = np.zeros(0, np.int64)
            gstops = gstarts
            assign_l = []

        results = self._fetch(fetch_keys, fetch_starts, fetch_ends) if fetch_keys else []

        def fail(idx: int, exc: BaseException) -> None:
            k = fetch_keys[idx]
            raise self._typed_error(exc, k, self._classify(exc)) from exc

        # 3. Unmerged requests.
        confirm = []  # (request index, data) whose length must be checked against the size
        for i, f in other:
            res = results[f]
            k, r = reqs[i]
            if isinstance(res, BaseException):
                kind = self._classify(res)
                if kind == "absent":
                    continue
                if kind == "range" and (r is None or isinstance(r, OffsetRequest)):
                    confirm.append((i, b""))  # an empty value answers "bytes=0-" with 416
                    continue
                fail(f, res)
            data = bytes(res)
            if isinstance(r, SuffixRequest):
                if len(data) > r.length:
                    raise ShortReadError(
                        f"bad read of {k!r} ({self._describe(k)}): asked for the last {r.length} bytes, got "
                        f"{len(data)} (the server ignored the range)"
                    )
                if len(data) < r.length:
                    confirm.append((i, data))
                    continue
            elif isinstance(r, OffsetRequest) and not data:
                confirm.append((i, data))
                continue
            out[i] = data
        if confirm:
            sizes = self._sizes([reqs[i][0] for i, _ in confirm])
            for (i, data), size in zip(confirm, sizes):
                k, r = reqs[i]
                if size is None:
                    out[i] = None
                    continue
                if isinstance(r, SuffixRequest):
                    if len(data) != min(size, r.length):
                        raise ShortReadError(
                            f"short read of {k!r} ({self._describe(k)}): asked for the last {r.length} bytes "
                            f"of a {size}-byte value, got {len(data)}"
                        )
                else:
                    offset = 0 if r is None else r.offset  # type: ignore[union-attr]
                    if offset != size:
                        raise ShortReadError(
                            f"short read of {k!r} ({self._describe(k)}): offset {offset} of a {size}-byte "
                            f"value returned no bytes"
                        )
                out[i] = data

        # 4. Merged ranges: cut each request out of its group, checking lengths.
        if ranged:
            gs_l = gstarts.tolist()
            ge_l = gstops.tolist()
            for i, g in zip(ranged, assign_l):
                f = group_base + g
                res = results[f]
                k, r = reqs[i]
                assert isinstance(r, RangeRequest)
                if isinstance(res, BaseException):
                    kind = self._classify(res)
                    if kind == "absent":
                        continue
                    fail(f, res)
                want = ge_l[g] - gs_l[g]
                if len(res) > want:
                    raise ShortReadError(
                        f"bad read of {k!r} ({self._describe(k)}): asked for bytes [{gs_l[g]}, {ge_l[g]}) "
                        f"({want} bytes), got {len(res)} (the server ignored the range)"
                    )
                lo, hi = r.start - gs_l[g], r.stop - gs_l[g]
                if hi > len(res):
                    raise ShortReadError(
                        f"short read of {k!r} ({self._describe(k)}): asked for bytes [{r.start}, {r.stop}) "
                        f"({r.stop - r.start} bytes), got {max(0, len(res) - lo)}"
                    )
                out[i] = bytes(res[lo:hi]) if (lo or hi != len(res)) else bytes(res)
        return out

    def _exists(self, key: str) -> bool:
        return self._sizes([key])[0] is not None

    def _getsize(self, key: str) -> int | None:
        return self._sizes([key])[0]

    # -- listing -------------------------------------------------------------------------------

    def _list(self, prefix: str) -> Iterator[str]:
        dkey = prefix.rpartition("/")[0]
        base = self._path(dkey) if dkey else self.root
        fs = self.fs
        try:
            fs.invalidate_cache(base)
        except Exception:  # noqa: BLE001 - a cache miss is harmless
            pass

        def find() -> list[str]:
            try:
                return list(fs.find(base or ("/" if self.protocol == "memory" else ""), withdirs=False))
            except (FileNotFoundError, NotADirectoryError):
                return []

        paths = self._with_retries(find, prefix or "/", "list")
        keys = []
        for p in paths:
            k = self._key_of(p)
            if k is None or not k.startswith(prefix) or not _is_valid_key(k):
                continue
            keys.append(k)
        keys.sort()
        return iter(keys)

    def _list_dir(self, prefix: str) -> list[str]:
        if self.protocol not in _OBJECT_STORE_PROTOCOLS:
            return super()._list_dir(prefix)
        # Object stores: one delimited listing ("directories" exist only while keys are below).
        base = self._path(prefix[:-1]) if prefix else self.root
        fs = self.fs
        try:
            fs.invalidate_cache(base)
        except Exception:  # noqa: BLE001 - a cache miss is harmless
            pass

        def ls() -> list[str]:
            try:
                return list(fs.ls(base, detail=False))
            except (FileNotFoundError, NotADirectoryError):
                return []

        names = set()
        stem = base.rstrip("/") + "/" if base else ""
        for p in self._with_retries(ls, prefix or "/", "list"):
            p = p.rstrip("/")
            if not p.startswith(stem):
                continue
            name = p[len(stem) :]
            if name and "/" not in name and _is_valid_key(name):
                names.add(name)
        return sorted(names)

    # -- writes --------------------------------------------------------------------------------

    def _ensure_parent(self, path: str) -> None:
        if self.protocol in _LOCAL_PROTOCOLS:
            parent = path.rpartition("/")[0]
            if parent:
                os.makedirs(parent, exist_ok=True)

    def _set(self, key: str, value: bytes) -> None:
        path = self._path(key)

        def put() -> None:
            self._ensure_parent(path)
            self.fs.pipe_file(path, value)

        self._with_retries(put, key, "write")

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        fs = self.fs
        if getattr(fs, "async_impl", False) and len(items) > 1:
            mapping = {self._path(k): v for k, v in items}
            workers = max(1, int(config.get("io.concurrency") or 1))
            self._with_retries(lambda: fs.pipe(mapping, batch_size=workers), items[0][0], "write")
            return

        def batch(pairs: Sequence[tuple[str, bytes]]) -> list[None]:
            for k, v in pairs:
                self._set(k, v)
            return [None] * len(pairs)

        if self.protocol == "memory":
            batch(items)
        else:
            run_batched(batch, items, min_batch=4)

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        path = self._path(key)
        if self.protocol in _LOCAL_PROTOCOLS:
            from chunkref.storage.local import create_exclusive

            self._ensure_parent(path)
            return create_exclusive(path, value)
        if self.protocol == "memory":
            with _MEMORY_CREATE_LOCK:
                return self._create(path, value)
        # Never retried: if a create succeeded but its answer was lost, a retry would report
        # "exists" for our own write.  The caller sees TransientStoreError and can read back.
        try:
            return self._create(path, value)
        except StoreError:
            raise
        except Exception as exc:
            kind = self._classify(exc)
            raise self._typed_error(exc, key, "error" if kind == "absent" else kind, "create") from exc

    def _create(self, path: str, value: bytes) -> bool:
        """``pipe_file(mode="create")``; False if the file exists."""
        try:
            self.fs.pipe_file(path, value, mode="create")
        except FileExistsError:
            return False
        except TypeError as exc:
            if "mode" not in str(exc):
                raise
            # An fsspec implementation without create mode: check, then write (racy).
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, value)
        return True

    def _delete(self, key: str) -> None:
        path = self._path(key)

        def rm() -> None:
            try:
                self.fs.rm_file(path)
            except (FileNotFoundError, IsADirectoryError):
                return
            if self.protocol in _LOCAL_PROTOCOLS:
                self._prune_local(path)

        self._with_retries(rm, key, "delete")

    def _prune_local(self, path: str) -> None:
        """Remove empty local directories left by a delete, up to (not including) the root."""
        parent = path.rpartition("/")[0]
        while parent and parent != self.root and parent.startswith(self.root + "/"):
            try:
                os.rmdir(parent)
            except OSError:
                return
            parent = parent.rpartition("/")[0]

    def _delete_many(self, keys: Sequence[str]) -> None:
        fs = self.fs
        if getattr(fs, "async_impl", False) and hasattr(fs, "_rm_file") and len(keys) > 1:
            paths = [self._path(k) for k in keys]
            workers = max(1, int(config.get("io.concurrency") or 1))

            async def rm_all() -> list[Any]:
                out: list[Any] = []
                for i in range(0, len(paths), workers):
                    out.extend(
                        await asyncio.gather(*(fs._rm_file(p) for p in paths[i : i + workers]), return_exceptions=True)
                    )
                return out

            results = fsspec.asyn.sync(fs.loop, rm_all)
            failed = [k for k, r in zip(keys, results)
                      if isinstance(r, BaseException) and self._classify(r) != "absent"]
            for k in failed:  # retry one by one, with the usual error mapping
                self._delete(k)
            try:
                fs.invalidate_cache(self.root)
            except Exception:  # noqa: BLE001
                pass
            return

        def batch(ks: Sequence[str]) -> list[None]:
            for k in ks:
                self._delete(k)
            return [None] * len(ks)

        if self.protocol == "memory":
            batch(keys)
        else:
            run_batched(batch, keys, min_batch=16)


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKeyError:
        return False
    return True
