"""A zip archive as a store: read any archive, write new ones once.

Reading
-------
The central directory is parsed once.  A member stored without compression (how chunk data is
usually zipped: it is already compressed) is read with ``os.pread`` at its data offset, so a
byte range costs one read of exactly those bytes and concurrent readers need no lock; whole
values are checked against the member's CRC-32.  Deflated members are inflated from their raw
bytes with a bound of the member's declared size (a lying header cannot inflate without limit);
a range ``[start, stop)`` of a deflated member inflates only its first ``stop`` bytes.  Other
compressions (bzip2, lzma) go through :mod:`zipfile`.  Encrypted members are refused.

Archives made by zipping a ``.zarr`` directory from its parent (every member below
``data.zarr/``, as in zarrita.js' fixtures) are detected: when the archive has no Zarr metadata at
its top level but a single top-level directory that has, the store is rooted there.  Pass
``root=""`` to turn this off, or ``root="some/dir"`` to choose.

Writing
-------
Modes ``"w"`` (new archive), ``"x"`` (new, must not exist) and ``"a"`` (append).  A zip member
cannot be replaced or removed, so each key can be written once: writing or deleting an existing
key raises :class:`~chunkref.errors.StoreError`.  :meth:`ZipStore.close` writes the central
directory: an archive that was not closed (or garbage collected) is unreadable.  Use the store
as a context manager.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence

from chunkref.errors import InvalidArgumentError, InvalidKeyError, ShortReadError, StoreError
from chunkref.storage.base import (
    ByteRange,
    OffsetRequest,
    RangeRequest,
    Store,
    SuffixRequest,
    validate_key,
)

__all__ = ["ZipStore"]

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIG = b"PK\x03\x04"
_ZARR_METADATA_NAMES = frozenset({"zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata"})
_MODES = ("r", "w", "x", "a")


class ZipStore(Store):
    """Keys as members of a zip archive on the local file system.

    Parameters
    ----------
    path
        The archive.
    mode
        ``"r"`` read (the store is read-only), ``"w"`` create or truncate, ``"x"`` create (fails
        if the file exists), ``"a"`` append to an existing archive (or create it).
    root
        The directory inside the archive that holds the keys.  None (default): ``""``, except
        that an archive read or appended to whose Zarr hierarchy sits in its single top-level
        directory is rooted there.
    compression
        ``zipfile.ZIP_STORED`` (default: chunk data is already compressed, and stored members
        allow direct range reads) or ``zipfile.ZIP_DEFLATED`` for new members.

    Notes
    -----
    A store open for reading pickles as ``(path, root)``; one open for writing cannot be pickled
    (two processes cannot append to one archive).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "r",
        *,
        root: str | None = None,
        compression: int = zipfile.ZIP_STORED,
    ) -> None:
        if mode not in _MODES:
            raise InvalidArgumentError(f"ZipStore mode must be one of {_MODES}, got {mode!r}")
        if compression not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InvalidArgumentError(
                f"ZipStore writes ZIP_STORED or ZIP_DEFLATED members, got compression={compression!r}"
            )
        self.path = os.path.abspath(os.fspath(path))
        self.mode = mode
        self.compression = compression
        self.read_only = mode == "r"
        self._lock = threading.RLock()
        # Data offsets of members, found from their local headers on first use.
        self._offsets: dict[str, int] = {}
        self._handle = _Handle(self.path, mode, compression)
        zf = self._handle.zf
        assert zf is not None
        self._members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            if not info.is_dir():
                self._members[info.filename] = info  # a later duplicate wins, as in zipfile
        self.root = self._detect_root() if root is None else root.strip("/")
        if self.root:
            validate_key(self.root)
        self._prefix = self.root + "/" if self.root else ""

    # -- identity ------------------------------------------------------------------------------

    def __getstate__(self) -> dict:
        if self.mode != "r":
            raise StoreError(f"ZipStore({self.path!r}) is open for writing (mode {self.mode!r}) and cannot be pickled")
        return {"path": self.path, "root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], "r", root=state["root"])  # type: ignore[misc]

    def __copy__(self) -> ZipStore:
        new = object.__new__(ZipStore)
        new.__dict__.update(self.__dict__)
        return new

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZipStore) and other.path == self.path and other.root == self.root

    def __hash__(self) -> int:
        return hash(("ZipStore", self.path, self.root))

    def __repr__(self) -> str:
        root = f", root={self.root!r}" if self.root else ""
        return f"ZipStore({self.path!r}, mode={self.mode!r}{root})"

    def with_read_only(self, read_only: bool = True) -> Store:
        """A view of this store with the given read-only mode (the archive stays shared)."""
        if not read_only and self.mode == "r":
            raise InvalidArgumentError(f"{self!r} was opened for reading; reopen it with mode 'a' to write")
        return super().with_read_only(read_only)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Finish the archive (writes its central directory) and release the file.

        Copies made by :meth:`with_read_only` share the archive and are closed with it.
        """
        with self._lock:
            self._handle.close()

    @property
    def _fd(self) -> int | None:
        return self._handle.fd

    @property
    def _zf(self) -> zipfile.ZipFile | None:
        return self._handle.zf

    def _check_open(self) -> None:
        if self._handle.closed:
            raise StoreError(f"{self!r} is closed")

    def _detect_root(self) -> str:
        if self.mode in ("w", "x"):
            return ""
        names = list(self._members)
        if any(n in _ZARR_METADATA_NAMES for n in names):
            return ""
        tops = {n.split("/", 1)[0] for n in names}
        if len(tops) == 1:
            (top,) = tops
            if any(n.startswith(top + "/") and n[len(top) + 1 :] in _ZARR_METADATA_NAMES for n in names):
                return top
        return ""

    # -- reads ---------------------------------------------------------------------------------

    def _info(self, key: str) -> zipfile.ZipInfo | None:
        return self._members.get(self._prefix + key)

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        off = self._offsets.get(info.filename)
        if off is None:
            assert self._fd is not None
            hdr = os.pread(self._fd, _LOCAL_HEADER.size, info.header_offset)
            if len(hdr) != _LOCAL_HEADER.size or hdr[:4] != _LOCAL_SIG:
                raise StoreError(f"bad local header for member {info.filename!r} in {self.path!r}")
            fields = _LOCAL_HEADER.unpack(hdr)
            off = info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10]
            self._offsets[info.filename] = off
        return off

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        self._check_open()
        info = self._info(key)
        if info is None:
            return None
        if info.flag_bits & 0x1:
            raise StoreError(f"member {info.filename!r} of {self.path!r} is encrypted")
        size = info.file_size
        if range is None:
            start, stop = 0, size
        elif isinstance(range, RangeRequest):
            start, stop = range.start, range.stop
        elif isinstance(range, OffsetRequest):
            if range.offset > size:
                raise ShortReadError(f"short read of {key!r} in {self.path!r}: offset {range.offset} is past its {size} bytes")
            start, stop = range.offset, size
        else:
            assert isinstance(range, SuffixRequest)
            start, stop = max(0, size - range.length), size
        if stop > size:
            raise ShortReadError(
                f"short read of {key!r} in {self.path!r}: asked for bytes [{start}, {stop}) of a {size}-byte value"
            )
        if self.mode != "r":
            with self._lock:
                assert self._zf is not None
                data = self._zf.read(info)
            return data[start:stop]
        if info.compress_type == zipfile.ZIP_STORED:
            return self._read_stored(key, info, start, stop, whole=range is None)
        if info.compress_type == zipfile.ZIP_DEFLATED:
            return self._read_deflated(key, info, start, stop)
        with self._lock:
            assert self._zf is not None
            data = self._zf.read(info)
        return data[start:stop]

    def _read_stored(self, key: str, info: zipfile.ZipInfo, start: int, stop: int, *, whole: bool) -> bytes:
        if info.compress_size != info.file_size:
            raise StoreError(f"stored member {info.filename!r} of {self.path!r} has inconsistent sizes")
        assert self._fd is not None
        base = self._data_offset(info)
        want = stop - start
        data = os.pread(self._fd, want, base + start) if want else b""
        if len(data) != want:
            raise ShortReadError(
                f"short read of {key!r} in {self.path!r}: the archive ends inside member {info.filename!r}"
            )
        if whole and zlib.crc32(data) != info.CRC:
            raise StoreError(f"CRC mismatch in member {info.filename!r} of {self.path!r}: the archive is corrupt")
        return data

    def _read_deflated(self, key: str, info: zipfile.ZipInfo, start: int, stop: int) -> bytes:
        assert self._fd is not None
        base = self._data_offset(info)
        raw = os.pread(self._fd, info.compress_size, base)
        if len(raw) != info.compress_size:
            raise ShortReadError(f"short read of {key!r} in {self.path!r}: the archive ends inside member {info.filename!r}")
        d = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            # Inflate no more than needed (and never more than the declared size: no bombs).
            data = d.decompress(raw, stop if stop < info.file_size else info.file_size + 1)
        except zlib.error as exc:
            raise StoreError(f"member {info.filename!r} of {self.path!r} does not inflate: {exc}") from exc
        whole = stop == info.file_size
        if whole:
            if len(data) != info.file_size or d.unconsumed_tail or zlib.crc32(data) != info.CRC:
                raise StoreError(
                    f"member {info.filename!r} of {self.path!r} is corrupt (size or CRC does not match its header)"
                )
        elif len(data) < stop:
            raise ShortReadError(f"short read of {key!r} in {self.path!r}: member inflates to fewer bytes than declared")
        return data[start:stop]

    def _exists(self, key: str) -> bool:
        self._check_open()
        return self._info(key) is not None

    def _getsize(self, key: str) -> int | None:
        self._check_open()
        info = self._info(key)
        return None if info is None else info.file_size

    def _list(self, prefix: str) -> Iterator[str]:
        self._check_open()
        full = self._prefix + prefix
        n = len(self._prefix)
        with self._lock:
            names = [name[n:] for name in self._members if name.startswith(full)]
        return iter(sorted(k for k in names if _is_valid_key(k)))

    # -- writes --------------------------------------------------------------------------------

    def _set(self, key: str, value: bytes) -> None:
        with self._lock:
            self._check_open()
            if not self._write_new(key, value):
                raise StoreError(
                    f"cannot overwrite {key!r} in zip archive {self.path!r}: zip members are written once"
                )

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for k, v in items:
            self._set(k, v)

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        with self._lock:
            self._check_open()
            return self._write_new(key, value)

    def _write_new(self, key: str, value: bytes) -> bool:
        name = self._prefix + key
        if name in self._members:
            return False
        assert self._zf is not None
        info = zipfile.ZipInfo(name, date_time=time.localtime(time.time())[:6])
        info.compress_type = self.compression
        info.external_attr = 0o644 << 16
        self._zf.writestr(info, value)
        self._members[name] = self._zf.getinfo(name)
        return True

    def _delete(self, key: str) -> None:
        with self._lock:
            self._check_open()
            if self._prefix + key in self._members:
                raise StoreError(f"cannot delete {key!r} from zip archive {self.path!r}: zip members are written once")


class _Handle:
    """The open archive: a ``ZipFile`` plus, for reading, a raw fd for ``os.pread``.

    Store copies share one handle; it is closed by :meth:`ZipStore.close` or when the last copy
    is garbage collected (as :class:`zipfile.ZipFile` itself does, that also finishes an archive
    being written; an explicit close is the reliable way).
    """

    def __init__(self, path: str, mode: str, compression: int) -> None:
        self.path = path
        self.mode = mode
        self.closed = False
        self.fd: int | None = None
        self.zf: zipfile.ZipFile | None = None
        try:
            if mode == "r":
                self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                self.zf = zipfile.ZipFile(path, "r")
            else:
                self.zf = zipfile.ZipFile(path, mode, compression=compression, allowZip64=True)
        except FileNotFoundError as exc:
            self.close()
            raise StoreError(f"zip archive {path!r} does not exist") from exc
        except FileExistsError as exc:
            self.close()
            raise StoreError(f"zip archive {path!r} already exists (mode 'x')") from exc
        except zipfile.BadZipFile as exc:
            self.close()
            raise StoreError(f"{path!r} is not a readable zip archive: {exc}") from exc

    def close(self) -> None:
        self.closed = True
        if self.zf is not None:
            self.zf.close()
            self.zf = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        if not self.closed:
            try:
                self.close()
            except OSError:
                pass


def _is_valid_key(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKeyError:
        return False
    return True
