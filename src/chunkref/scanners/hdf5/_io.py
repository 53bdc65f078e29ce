"""Opening HDF5 files for scanning: local paths directly, anything else through fsspec.

Remote files are read through :class:`CachedRangeReader` (fsspec ranged reads behind an LRU block
cache), so HDF5's many small metadata reads (object headers, B-tree nodes, heaps) become a few
large range requests; :class:`OpenFile` reports how many requests and bytes that took.
"""

from __future__ import annotations

import io
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec
import h5py

from chunkref.manifest.sources import is_local, local_path, split_protocol

#: Block size of the read cache for remote files (HDF5 metadata tends to cluster).
REMOTE_BLOCK_SIZE = 1 << 20
#: Blocks kept by the cache.
REMOTE_MAX_BLOCKS = 64


@dataclass
class OpenFile:
    """An open HDF5 file and what the manifest needs to know about it."""

    url: str
    h5: h5py.File
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None
    _fileobj: Any = None
    userblock: int = 0
    extra: dict = field(default_factory=dict)

    def stats(self) -> dict[str, int]:
        """Requests and bytes fetched so far (remote files; local files report zeros)."""
        if not isinstance(self._fileobj, CachedRangeReader):
            return {"requests": 0, "bytes_read": 0}
        return {"requests": self._fileobj.requests, "bytes_read": self._fileobj.bytes_read}

    def close(self) -> None:
        try:
            self.h5.close()
        finally:
            if self._fileobj is not None:
                self._fileobj.close()


class CachedRangeReader(io.RawIOBase):
    """A read-only file over ``fs.cat_file`` ranges with an LRU block cache (any fsspec backend).

    HDF5 reads metadata in many small pieces; fetching whole blocks turns them into a few range
    requests.  ``requests`` and ``bytes_read`` count what was actually fetched.
    """

    def __init__(self, fs: Any, path: str, size: int, block_size: int = REMOTE_BLOCK_SIZE) -> None:
        super().__init__()
        self.fs, self.path, self.size = fs, path, size
        self.requests = 0
        self.bytes_read = 0
        self._pos = 0
        self._cache = fsspec.caching.BlockCache(block_size, self._fetch, size, maxblocks=REMOTE_MAX_BLOCKS)

    def _fetch(self, start: int, end: int) -> bytes:
        data = self.fs.cat_file(self.path, start=start, end=end)
        self.requests += 1
        self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self.size, self._pos + view.nbytes)
        if end <= self._pos:
            return 0
        data = self._cache._fetch(self._pos, end)
        n = len(data)
        view[:n] = data
        self._pos += n
        return n


def source_url(url: str) -> str:
    """The URL recorded for a source: local paths made absolute, URLs as given."""
    if split_protocol(url)[0] is None:
        return os.path.abspath(os.path.expanduser(url))
    return url


def open_hdf5(url: str, storage_options: dict | None = None) -> OpenFile:
    """Open ``url`` read-only with h5py (raises whatever h5py/fsspec raise; the caller names it)."""
    if is_local(url):
        path = os.path.abspath(os.path.expanduser(local_path(url)))
        st = os.stat(path)
        h5 = h5py.File(path, "r")
        of = OpenFile(source_url(url if split_protocol(url)[0] else path), h5, st.st_size, st.st_mtime)
    else:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        info = fs.info(path)
        fobj = CachedRangeReader(fs, path, int(info["size"]))
        try:
            h5 = h5py.File(fobj, "r")
        except BaseException:
            fobj.close()
            raise
        etag = info.get("ETag") or info.get("etag")
        mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        try:
            mtime = float(mtime.timestamp()) if hasattr(mtime, "timestamp") else (float(mtime) if mtime else None)
        except (TypeError, ValueError):
            mtime = None
        of = OpenFile(url, h5, info.get("size"), mtime, str(etag).strip('"') if etag else None, fobj)
    of.userblock = int(of.h5.userblock_size or 0)
    return of


def join_relative(base_url: str, name: str) -> str:
    """Resolve a file name stored in an HDF5 file (external link, VDS source) against its file."""
    if split_protocol(name)[0] is not None or os.path.isabs(name):
        return name
    proto, rest = split_protocol(base_url)
    if proto is None or proto in ("file", "local"):
        return os.path.normpath(os.path.join(os.path.dirname(local_path(base_url)), name))
    return f"{proto}://{posixpath.normpath(posixpath.join(posixpath.dirname(rest), name))}"
