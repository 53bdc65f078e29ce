"""The Store protocol: synchronous key/value storage with byte ranges and batched reads.

Every backend (memory, local, fsspec, zip, reference, repository session) implements
:class:`Store`.  The engine does all chunk I/O through :meth:`Store.get_many`, so a backend that
can fetch concurrently (fsspec ``cat_ranges``, a thread pool) overrides that one method.

Byte ranges
-----------
A range is one of

* ``RangeRequest(start, stop)`` (or a plain ``(start, stop)`` tuple): bytes ``[start, stop)``;
* ``OffsetRequest(offset)``: from ``offset`` to the end;
* ``SuffixRequest(length)``: the last ``length`` bytes (the whole value if it is shorter);
* ``None``: the whole value.

A ranged read that returns fewer or more bytes than it asked for (the value is shorter than
``stop``) raises :class:`~chunkref.errors.ShortReadError`: never returned as data.

Keys
----
Keys are ``/``-separated relative paths.  :func:`validate_key` rejects ``..`` and ``.``
segments, absolute paths, backslashes, NUL bytes and empty segments *before any I/O*.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from chunkref.errors import InvalidArgumentError, InvalidKeyError, ReadOnlyError, ShortReadError


@dataclass(frozen=True, slots=True)
class RangeRequest:
    """Bytes ``[start, stop)`` of a value."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.stop < self.start:
            raise InvalidArgumentError(f"invalid byte range [{self.start}, {self.stop})")


@dataclass(frozen=True, slots=True)
class OffsetRequest:
    """Bytes from ``offset`` to the end of a value."""

    offset: int

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise InvalidArgumentError(f"invalid byte offset {self.offset}")


@dataclass(frozen=True, slots=True)
class SuffixRequest:
    """The last ``length`` bytes of a value (all of it when it is shorter)."""

    length: int

    def __post_init__(self) -> None:
        if self.length < 0:
            raise InvalidArgumentError(f"invalid suffix length {self.length}")


ByteRange = RangeRequest | OffsetRequest | SuffixRequest
RangeLike = ByteRange | tuple[int, int] | None
Request = tuple[str, RangeLike]
BytesLike = bytes | bytearray | memoryview


def as_range(r: RangeLike) -> ByteRange | None:
    """Normalise a range given as a request object, a ``(start, stop)`` tuple or None."""
    if r is None or isinstance(r, (RangeRequest, OffsetRequest, SuffixRequest)):
        return r
    if isinstance(r, tuple) and len(r) == 2:
        return RangeRequest(int(r[0]), int(r[1]))
    raise InvalidArgumentError(f"not a byte range: {r!r}")


def range_bounds(key: str, r: RangeLike, size: int) -> tuple[int, int]:
    """``[start, stop)`` of range ``r`` on a value of ``size`` bytes.

    Raises
    ------
    ShortReadError
        When the range asks for bytes past the end of the value.
    """
    r = as_range(r)
    if r is None:
        return 0, size
    if isinstance(r, RangeRequest):
        if r.stop > size:
            raise ShortReadError(f"short read of {key!r}: asked for bytes [{r.start}, {r.stop}) of a {size}-byte value")
        return r.start, r.stop
    if isinstance(r, OffsetRequest):
        if r.offset > size:
            raise ShortReadError(f"short read of {key!r}: offset {r.offset} is past its {size} bytes")
        return r.offset, size
    return max(0, size - r.length), size


def slice_value(key: str, value: bytes, r: RangeLike) -> bytes:
    """Apply a byte range to a whole value, checking that all requested bytes exist."""
    if r is None:
        return value
    start, stop = range_bounds(key, r, len(value))
    return value[start:stop]


def check_length(key: str, data: bytes, r: RangeLike) -> bytes:
    """Check that bytes returned for a ranged request have the expected length."""
    r = as_range(r)
    if isinstance(r, RangeRequest) and len(data) != r.stop - r.start:
        raise ShortReadError(
            f"short read of {key!r}: asked for bytes [{r.start}, {r.stop}) ({r.stop - r.start} bytes), "
            f"got {len(data)}"
        )
    return data


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative store key, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"store keys are str, got {type(key).__name__}: {key!r}")
    if key == "":
        raise InvalidKeyError("empty store key")
    if "\x00" in key:
        raise InvalidKeyError(f"NUL byte in store key {key!r}")
    if "\\" in key:
        raise InvalidKeyError(f"backslash in store key {key!r}")
    if key.startswith("/"):
        raise InvalidKeyError(f"absolute store key {key!r}")
    if len(key) > 1 and key[1] == ":":
        raise InvalidKeyError(f"drive-letter store key {key!r}")
    for seg in key.split("/"):
        if seg == "":
            raise InvalidKeyError(f"empty segment in store key {key!r}")
        if seg in (".", ".."):
            raise InvalidKeyError(f"{seg!r} segment in store key {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: ``""`` (everything) or a key, optionally ending in ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class Store(ABC):
    """Synchronous key/value storage with byte ranges.

    Subclasses implement :meth:`_get`, :meth:`_set`, :meth:`_delete` and :meth:`_list`; the public
    methods validate keys and read-only mode first.  Backends with concurrent I/O override
    :meth:`_get_many` (and :meth:`_set_many`).  Stores must pickle (no open handles in their
    state) so dask tasks can carry them.
    """

    read_only: bool = False

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: str, range: RangeLike = None) -> bytes | None:
        """The value of ``key`` (or a byte range of it), or None if the key is absent."""
        return self._get(validate_key(key), as_range(range))

    def get_many(self, requests: Iterable[Request]) -> list[bytes | None]:
        """Fetch many ``(key, range)`` requests; the result is aligned with them (None = absent).

        This is the only read path the engine uses for chunk I/O, so backends make it concurrent.
        """
        reqs = [(validate_key(k), as_range(r)) for k, r in requests]
        if not reqs:
            return []
        return self._get_many(reqs)

    def get_many_apply(
        self, requests: Iterable[Request], fn: Callable[[list[tuple[int, bytes | None]]], None], *, grab: int = 1
    ) -> None:
        """Fetch many requests and hand them to ``fn`` as ``(index, value)`` lists (None = absent).

        For the engine's reads: ``fn`` decodes what it is given, possibly on several threads at
        once, and is called once per group of about ``grab`` values.  This default fetches
        everything with one :meth:`get_many` and then runs ``fn`` on the shared thread pool;
        stores that read on worker threads themselves (local files) override it to hand each
        group over as soon as it is read, so reading and decoding overlap.  Either way it is one
        call, one batch of requests, to any wrapper that counts them.
        """
        from chunkref._threads import run_dynamic

        values = self.get_many(requests)
        run_dynamic(fn, list(enumerate(values)), grab)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value."""
        return self._exists(validate_key(key))

    def getsize(self, key: str) -> int | None:
        """Size in bytes of the value at ``key``, or None if absent."""
        return self._getsize(validate_key(key))

    def list(self) -> Iterator[str]:
        """Every key in the store."""
        return self._list("")

    def list_prefix(self, prefix: str) -> Iterator[str]:
        """Every key starting with ``prefix`` (full keys)."""
        return self._list(validate_prefix(prefix))

    def list_dir(self, prefix: str) -> list[str]:
        """Names of keys and "directories" directly below ``prefix`` (sorted, no duplicates)."""
        prefix = validate_prefix(prefix)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return self._list_dir(prefix)

    # -- writes --------------------------------------------------------------------------------

    def set(self, key: str, value: BytesLike) -> None:
        """Store ``value`` at ``key`` (replacing any previous value)."""
        self._check_writable(key)
        self._set(validate_key(key), _to_bytes(value))

    def set_many(self, items: Iterable[tuple[str, BytesLike]]) -> None:
        """Store many values; backends may write them concurrently."""
        pairs = [(validate_key(k), _to_bytes(v)) for k, v in items]
        if pairs:
            self._check_writable(pairs[0][0])
            self._set_many(pairs)

    def set_if_not_exists(self, key: str, value: BytesLike) -> bool:
        """Store ``value`` only if ``key`` is absent; return whether it was written."""
        self._check_writable(key)
        return self._set_if_not_exists(validate_key(key), _to_bytes(value))

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        self._check_writable(key)
        self._delete(validate_key(key))

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove many keys."""
        ks = [validate_key(k) for k in keys]
        if ks:
            self._check_writable(ks[0])
            self._delete_many(ks)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key below ``prefix`` (which must not be empty: use :meth:`clear`)."""
        if not prefix:
            raise InvalidArgumentError("delete_prefix needs a non-empty prefix; use clear()")
        self._check_writable(prefix)
        if not prefix.endswith("/"):
            prefix += "/"
        self._delete_many(list(self._list(validate_prefix(prefix))))

    def clear(self) -> None:
        """Remove every key."""
        self._check_writable("")
        self._delete_many(list(self._list("")))

    def with_read_only(self, read_only: bool = True) -> Store:
        """A copy of this store with the given read-only mode."""
        import copy

        new = copy.copy(self)
        new.read_only = read_only
        return new

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release resources (files, sessions); the store may not be used afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------------

    def _check_writable(self, key: str) -> None:
        if self.read_only:
            raise ReadOnlyError(f"cannot modify {key!r}: {self!r} is read-only")

    # -- backend hooks -------------------------------------------------------------------------

    @abstractmethod
    def _get(self, key: str, range: ByteRange | None) -> bytes | None: ...

    @abstractmethod
    def _set(self, key: str, value: bytes) -> None: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> Iterator[str]:
        """Keys starting with ``prefix`` (already validated; ``""`` lists everything)."""

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        return [self._get(k, r) for k, r in requests]

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for k, v in items:
            self._set(k, v)

    def _delete_many(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._delete(k)

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        # Racy default; backends with an atomic primitive override it.
        if self._exists(key):
            return False
        self._set(key, value)
        return True

    def _exists(self, key: str) -> bool:
        return self._get(key, SuffixRequest(0)) is not None

    def _getsize(self, key: str) -> int | None:
        value = self._get(key, None)
        return None if value is None else len(value)

    def _list_dir(self, prefix: str) -> list[str]:
        names = set()
        n = len(prefix)
        for key in self._list(prefix):
            names.add(key[n:].split("/", 1)[0])
        return sorted(names)


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if hasattr(value, "tobytes"):  # numpy arrays and scalars
        return value.tobytes()
    raise InvalidArgumentError(f"store values are bytes-like, got {type(value).__name__}")
