"""A directory on the local file system as a store: one file per key.

Safety
------
Keys are validated by :class:`~chunkref.storage.base.Store` (no ``..``, no absolute paths, ...).
On top of that every path is checked to *resolve* inside the root, so a symlink inside the root
that points elsewhere cannot be used to read, overwrite or delete files outside it
(:class:`~chunkref.errors.InvalidKeyError` names the key and where it leads).  Symlinks that stay
inside the root are followed.  Resolving a path costs ~15 µs (more than reading a small file), so
the store remembers directories it has already resolved to a real place inside the root, and
opens the final component with ``O_NOFOLLOW``, resolving it only when it is a symlink.  (A
directory that is swapped for an outward symlink *after* it was checked is not noticed by this
instance; the root is assumed not to be writable by an attacker while the store is in use.)

Writes
------
``set`` writes a temporary file in the target directory and renames it over the key
(``os.replace``), so readers never see a partial value; ``set_if_not_exists`` hard-links the
temporary file to the key, which fails atomically if the key exists.  Temporary files are named
``.chunkref-tmp-*`` and are skipped by listings.  Values are not fsync'ed.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from chunkref._threads import cpu_count, run_dynamic
from chunkref.errors import (
    ChunkDecodeError,
    InvalidArgumentError,
    InvalidKeyError,
    ShortReadError,
    StoreError,
)
from chunkref.storage._threads import io_workers, run_batched
from chunkref.storage.base import (
    ByteRange,
    OffsetRequest,
    RangeLike,
    RangeRequest,
    Store,
    SuffixRequest,
    as_range,
    range_bounds,
    validate_key,
)

__all__ = ["LocalStore"]

_TMP_PREFIX = ".chunkref-tmp-"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_MAX_CACHED_DIRS = 1 << 16
# The trimmed whole-value read needs "/" paths and O_NOFOLLOW (POSIX); elsewhere _get is used.
_FAST_WHOLE_READS = os.sep == "/" and _O_NOFOLLOW != 0
_WHOLE_READ_FLAGS = os.O_RDONLY | _O_BINARY | _O_NONBLOCK | _O_NOFOLLOW


def local_read_workers() -> int:
    """Threads for a batch of local reads.

    Reads from the page cache are CPU work (syscalls and copies), so threads beyond a few per
    core only add scheduling; a handful per core still keeps an SSD's queue busy on cold reads.
    Measured on 2 cores, 4096 reads of 8 KiB: 32 threads 19 µs/read, 8 threads 16.6 µs/read.
    """
    return max(1, min(io_workers(), 4 * cpu_count()))


class LocalStore(Store):
    """Keys as files below a directory.

    Parameters
    ----------
    root
        The directory (created on the first write if missing).
    read_only
        Refuse writes.

    Notes
    -----
    ``get_many`` and ``set_many`` run through a shared thread pool in a few batches (setting
    ``io.concurrency`` caps the threads); small request lists run on the calling thread.
    The store pickles as its root path and mode.
    """

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool = False) -> None:
        root_s = os.fspath(root)
        if root_s.startswith("file://"):
            root_s = root_s[len("file://") :]
        self.root = os.path.abspath(os.path.expanduser(root_s))
        self._root_sep = self.root.rstrip(os.sep) + os.sep
        self.read_only = read_only
        self._real_root_cache: str | None = None
        # Relative directory keys ("" = root) known to resolve inside the root.
        self._dirs_ok: set[str] = set()

    # -- identity ------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        return {"root": self.root, "read_only": self.read_only}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], read_only=state["read_only"])  # type: ignore[misc]

    def __copy__(self) -> LocalStore:
        return LocalStore(self.root, read_only=self.read_only)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalStore) and other.root == self.root

    def __hash__(self) -> int:
        return hash(("LocalStore", self.root))

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r}{', read_only=True' if self.read_only else ''})"

    @property
    def path(self) -> Path:
        """The root directory as a :class:`pathlib.Path`."""
        return Path(self.root)

    # -- path resolution -----------------------------------------------------------------------

    def _real_root(self) -> str:
        if self._real_root_cache is None:
            real = os.path.realpath(self.root)
            # Only cache once the root exists: before that, resolving a non-existent path is
            # provisional (it may still be created as a symlink).
            if os.path.isdir(real):
                self._real_root_cache = real
            return real
        return self._real_root_cache

    def _inside(self, real: str) -> bool:
        root = self._real_root()
        return real == root or real.startswith(root if root.endswith(os.sep) else root + os.sep)

    def _fs_path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _check_dir(self, key: str, dkey: str) -> bool:
        """Whether directory ``dkey`` (relative) exists; raise if it resolves outside the root."""
        if dkey in self._dirs_ok:
            return True
        path = self._fs_path(dkey) if dkey else self.root
        real = os.path.realpath(path)
        if not self._inside(real):
            raise InvalidKeyError(
                f"store key {key!r} resolves outside the store root {self.root!r} (via {real!r})"
            )
        if not os.path.isdir(real):
            return False
        if len(self._dirs_ok) >= _MAX_CACHED_DIRS:
            self._dirs_ok.clear()
        self._dirs_ok.add(dkey)
        return True

    def _leaf_target(self, key: str, path: str) -> str:
        """The final path to open for a key whose leaf is a symlink, checked against the root."""
        real = os.path.realpath(path)
        if not self._inside(real):
            raise InvalidKeyError(
                f"store key {key!r} resolves outside the store root {self.root!r} (via {real!r})"
            )
        return real

    def _open_read(self, key: str) -> int | None:
        """An fd open for reading ``key``, or None if it does not exist (or is a directory)."""
        dkey = key.rpartition("/")[0]
        if not self._check_dir(key, dkey):
            return None
        path = self._fs_path(key)
        # O_NONBLOCK: opening a FIFO planted in the root must not hang (no effect on files).
        flags = os.O_RDONLY | _O_BINARY | _O_NONBLOCK
        try:
            if _O_NOFOLLOW:
                try:
                    fd = os.open(path, flags | _O_NOFOLLOW)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                    fd = os.open(self._leaf_target(key, path), flags)
            else:
                fd = os.open(self._leaf_target(key, path), flags)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return fd

    # -- reads ---------------------------------------------------------------------------------

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        fd = self._open_read(key)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None  # directories, FIFOs, devices hold no value
            return _read_fd(key, fd, range, st.st_size)
        finally:
            os.close(fd)

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        fast = _FAST_WHOLE_READS

        def batch(reqs: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
            get = self._get
            whole = self._get_whole
            return [whole(k) if (r is None and fast) else get(k, r) for k, r in reqs]

        return run_batched(batch, requests, workers=local_read_workers())

    def get_many_apply(
        self, requests: Iterable[tuple[str, RangeLike]], fn: Callable[[list[tuple[int, bytes | None]]], None], *,
        grab: int = 1,
    ) -> None:
        """Read on the shared pool's threads and hand each group to ``fn`` as soon as it is read.

        Local reads are CPU work like decoding, so the same load-balanced workers do both: no
        barrier between "all read" and "start decoding", and each value is decoded while it
        is still in the CPU cache.
        """
        reqs = [(validate_key(k), as_range(r)) for k, r in requests]
        fast = _FAST_WHOLE_READS

        def work(batch: list[tuple[int, tuple[str, ByteRange | None]]]) -> None:
            fn([(i, self._get_whole(k) if (r is None and fast) else self._get(k, r)) for i, (k, r) in batch])

        run_dynamic(work, list(enumerate(reqs)), grab)

    def _get_whole(self, key: str) -> bytes | None:
        """:meth:`_get` of a whole value, trimmed for the engine's hot path (many small chunks).

        Same checks (directory containment cached per folder, no symlink leaf followed
        unchecked, regular files only) with fewer calls: the path is one concatenation and a
        regular file is read with one ``read`` of its size plus one byte (short only at EOF).
        """
        dkey = key.rpartition("/")[0]
        if dkey not in self._dirs_ok and not self._check_dir(key, dkey):
            return None
        try:
            fd = os.open(self._root_sep + key, _WHOLE_READ_FLAGS)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a symlink leaf: the careful path checks its target
                return self._get(key, None)
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None
            data = os.read(fd, st.st_size + 1)
            if len(data) <= st.st_size:
                return data
            return data + _read_fd(key, fd, None, st.st_size)  # it grew while we read
        finally:
            os.close(fd)

    def get_many_into(self, requests: Sequence[tuple[str, RangeLike, Any, int | None]]) -> list[bool]:
        """Read each ``(key, range, buffer, size)`` straight into its writable buffer.

        The engine's direct path for uncompressed chunks (see
        :func:`chunkref.zarr.chunkio.read_chunks`): the file's bytes go into ``buffer`` (which
        must hold exactly the requested byte count) with ``os.preadv``, no intermediate
        ``bytes``.  ``size``, when not None, is the size the whole file must have (a chunk's
        encoded size), checked before reading so a partial read never hides a malformed chunk
        (:class:`~chunkref.errors.ChunkDecodeError`).

        Returns
        -------
        list of bool
            Per request, True when the buffer was filled, False when the key holds no value.
        """
        reqs = [(validate_key(k), as_range(r), writable_bytes(k, b), size) for k, r, b, size in requests]

        def batch(items: Sequence[tuple[str, ByteRange | None, memoryview, int | None]]) -> list[bool]:
            return [self._read_into(*item) for item in items]

        return run_batched(batch, reqs, workers=local_read_workers())

    def _read_into(self, key: str, r: ByteRange | None, buf: memoryview, expected: int | None) -> bool:
        fd = self._open_read(key)
        if fd is None:
            return False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False
            size = st.st_size
            if expected is not None and size != expected:
                raise ChunkDecodeError(f"{key!r} holds {size} bytes, expected {expected}")
            start, stop = range_bounds(key, r, size)
            if stop - start != buf.nbytes:
                raise ShortReadError(
                    f"short read of {key!r}: bytes [{start}, {stop}) of its {size} do not fill a "
                    f"{buf.nbytes}-byte buffer"
                )
            got = 0
            while got < buf.nbytes:
                n = os.preadv(fd, [buf[got:]], start + got)
                if n == 0:
                    raise ShortReadError(f"short read of {key!r}: asked for bytes [{start}, {stop}), got {got}")
                got += n
            return True
        finally:
            os.close(fd)

    def _exists(self, key: str) -> bool:
        return self._getsize(key) is not None

    def _getsize(self, key: str) -> int | None:
        fd = self._open_read(key)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    # -- listing -------------------------------------------------------------------------------

    def _list(self, prefix: str) -> Iterator[str]:
        # Walk only the directory that can hold the prefix, then filter by the partial name.
        dkey, _, _ = prefix.rpartition("/")
        try:
            if not self._check_dir(prefix or "", dkey):
                return iter(())
        except InvalidKeyError:
            return iter(())
        keys = [k for k in self._walk(dkey) if k.startswith(prefix)]
        keys.sort()
        return iter(keys)

    def _walk(self, dkey: str) -> Iterator[str]:
        base = self._fs_path(dkey) if dkey else self.root
        stack = [(base, dkey + "/" if dkey else "")]
        while stack:
            path, rel = stack.pop()
            try:
                it = os.scandir(path)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            with it:
                for entry in it:
                    name = entry.name
                    if name.startswith(_TMP_PREFIX):
                        continue
                    if entry.is_symlink():
                        real = os.path.realpath(entry.path)
                        if not self._inside(real):
                            continue  # never list what lies outside the root
                    if entry.is_dir():
                        stack.append((entry.path, rel + name + "/"))
                    elif entry.is_file():
                        yield rel + name

    def _list_dir(self, prefix: str) -> list[str]:
        dkey = prefix[:-1]
        try:
            if not self._check_dir(prefix or "", dkey):
                return []
        except InvalidKeyError:
            return []
        path = self._fs_path(dkey) if dkey else self.root
        names = []
        try:
            with os.scandir(path) as it:
                for entry in it:
                    if entry.name.startswith(_TMP_PREFIX):
                        continue
                    if entry.is_symlink() and not self._inside(os.path.realpath(entry.path)):
                        continue
                    if entry.is_dir() or entry.is_file():
                        names.append(entry.name)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(names)

    # -- writes --------------------------------------------------------------------------------

    def _prepare_dir(self, key: str) -> str:
        """Create the key's parent directory (checked inside the root); return the key's path."""
        dkey = key.rpartition("/")[0]
        if not self._check_dir(key, dkey):
            os.makedirs(self._fs_path(dkey) if dkey else self.root, exist_ok=True)
            # Re-check: a component that already existed may be a symlink pointing outside.
            self._dirs_ok.discard(dkey)
            if not self._check_dir(key, dkey):
                raise StoreError(f"could not create the directory for store key {key!r} in {self.root!r}")
        return self._fs_path(key)

    def _write_tmp(self, key: str, value: bytes) -> tuple[str, str]:
        """Write ``value`` to a fresh temporary file next to ``key``; return (tmp, target)."""
        for attempt in range(3):
            path = self._prepare_dir(key)
            tmp = os.path.join(os.path.dirname(path), f"{_TMP_PREFIX}{uuid.uuid4().hex}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
            except FileNotFoundError:
                # A concurrent delete removed the (empty) parent between makedirs and open.
                self._dirs_ok.discard(key.rpartition("/")[0])
                if attempt == 2:
                    raise
                continue
            try:
                view = memoryview(value)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except BaseException:
                os.close(fd)
                _unlink_quiet(tmp)
                raise
            os.close(fd)
            return tmp, path
        raise StoreError(f"could not write store key {key!r} in {self.root!r}")  # pragma: no cover

    def _set(self, key: str, value: bytes) -> None:
        tmp, path = self._write_tmp(key, value)
        try:
            os.replace(tmp, path)
        except IsADirectoryError as exc:
            _unlink_quiet(tmp)
            raise StoreError(f"cannot store key {key!r}: {path!r} is a directory") from exc
        except BaseException:
            _unlink_quiet(tmp)
            raise

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        def batch(pairs: Sequence[tuple[str, bytes]]) -> list[None]:
            for k, v in pairs:
                self._set(k, v)
            return [None] * len(pairs)

        run_batched(batch, items, min_batch=4)

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        tmp, path = self._write_tmp(key, value)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            _unlink_quiet(tmp)
        return True

    def _delete(self, key: str) -> None:
        dkey = key.rpartition("/")[0]
        if not self._check_dir(key, dkey):
            return
        try:
            os.unlink(self._fs_path(key))
        except (FileNotFoundError, NotADirectoryError):
            return
        except (IsADirectoryError, PermissionError) as exc:
            if os.path.isdir(self._fs_path(key)):
                return  # a "directory" key holds no value
            raise StoreError(f"cannot delete store key {key!r} in {self.root!r}: {exc}") from exc
        self._prune(dkey)

    def _delete_many(self, keys: Sequence[str]) -> None:
        def batch(ks: Sequence[str]) -> list[None]:
            for k in ks:
                self._delete(k)
            return [None] * len(ks)

        run_batched(batch, keys, min_batch=16)

    def _prune(self, dkey: str) -> None:
        """Remove empty directories from ``dkey`` up to (not including) the root."""
        while dkey:
            try:
                os.rmdir(self._fs_path(dkey))
            except OSError:
                return  # not empty (or already gone, or in use): stop climbing
            self._dirs_ok.discard(dkey)
            dkey = dkey.rpartition("/")[0]


def writable_bytes(key: str, buffer: Any) -> memoryview:
    """A flat writable byte view of ``buffer`` (C-contiguous), or InvalidArgumentError naming
    ``key``."""
    try:
        view = memoryview(buffer)
    except TypeError as exc:
        raise InvalidArgumentError(f"get_many_into: the buffer for {key!r} is not a buffer: {exc}") from exc
    if view.readonly or not view.c_contiguous:
        raise InvalidArgumentError(f"get_many_into: the buffer for {key!r} must be writable and C-contiguous")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _read_fd(key: str, fd: int, r: ByteRange | None, size: int) -> bytes:
    """Read a value or a byte range of it from an open fd, checking the length.

    ``size`` is the file size from ``fstat``; a file that grows while being read whole is read
    to its new end, one that shrinks under a ranged read raises :class:`ShortReadError`.
    """
    if r is None:
        chunks = []
        while True:
            data = os.read(fd, max(size, 1 << 16))
            if not data:
                break
            chunks.append(data)
        if not chunks:
            return b""
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)
    if isinstance(r, RangeRequest):
        start, stop = r.start, r.stop
    elif isinstance(r, OffsetRequest):
        if r.offset > size:
            raise ShortReadError(f"short read of {key!r}: offset {r.offset} is past its {size} bytes")
        start, stop = r.offset, size
    else:
        assert isinstance(r, SuffixRequest)
        start, stop = max(0, size - r.length), size
    want = stop - start
    if want == 0:
        if start > size:
            raise ShortReadError(f"short read of {key!r}: asked for bytes [{start}, {stop}) past its end")
        return b""
    data = pread_all(fd, want, start)
    if len(data) < want:
        raise ShortReadError(
            f"short read of {key!r}: asked for bytes [{start}, {stop}) ({want} bytes), got {len(data)}"
        )
    return data


def pread_all(fd: int, want: int, start: int) -> bytes:
    """Up to ``want`` bytes of ``fd`` from ``start``: fewer only if the file ends first.

    ``pread`` may return less than asked; only an empty read means the end of the file, so
    keep reading until one (callers compare the length with what they asked for).
    """
    data = os.pread(fd, want, start)
    if len(data) >= want:
        return data
    parts = [data]
    got = len(data)
    while got < want:
        more = os.pread(fd, want - got, start + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def create_exclusive(path: str, value: bytes) -> bool:
    """Atomically create the file ``path`` holding ``value``; False if it already exists.

    The value is written to a temporary file in the same directory which is then hard-linked to
    ``path`` (``link`` fails if the name exists), so no reader ever sees a partial file and two
    racing creators cannot both succeed.  The parent directory must exist.
    """
    tmp = os.path.join(os.path.dirname(path), f"{_TMP_PREFIX}{uuid.uuid4().hex}")
    with open(tmp, "xb") as f:
        f.write(value)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        _unlink_quiet(tmp)
    return True


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
