"""Stores that wrap another store: delegation, request counting, latency, fault injection.

These are test and diagnosis tools that compose over any :class:`~chunkref.storage.base.Store`:

* :class:`WrapperStore` delegates everything to an inner store (base class for the others);
* :class:`CountingStore` counts requests and bytes per method and records every ``get_many``
  batch, so tests can assert "one batched request per read call" or "no I/O at all";
* :class:`LatencyStore` adds a per-request-batch delay modelling a remote store and records how
  many requests were in flight at once;
* :class:`FaultStore` injects failures: transient errors that heal after a number of attempts,
  permanent errors, short reads and corrupted bytes.

All of them pickle (their inner store, settings and counters; locks are recreated).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from chunkref.errors import InvalidArgumentError, TransientStoreError
from chunkref.storage.base import ByteRange, Store

__all__ = ["CountingStore", "FaultStore", "LatencyStore", "WrapperStore"]


class WrapperStore(Store):
    """A store that forwards every operation to ``inner``.

    Subclasses override the backend hooks (``_get``, ``_get_many``, ...) they want to observe or
    alter.  Hooks receive keys already validated by this store; they call the inner store's
    public methods, so the inner store's own checks (read-only mode, key validation) still apply.
    The wrapper is read-only when the inner store is.
    """

    def __init__(self, inner: Store) -> None:
        if not isinstance(inner, Store):
            raise InvalidArgumentError(f"{type(self).__name__} wraps a Store, got {type(inner).__name__}")
        self.inner = inner
        self.read_only = inner.read_only

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.inner == self.inner  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.inner))

    def with_read_only(self, read_only: bool = True) -> Store:
        """A copy of this wrapper (sharing nothing mutable) over ``inner.with_read_only(...)``."""
        new = copy.copy(self)
        new.inner = self.inner.with_read_only(read_only)
        new.read_only = read_only
        return new

    def close(self) -> None:
        """Close the inner store."""
        self.inner.close()

    # -- hooks: forward to the inner store -------------------------------------------------------

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        return self.inner.get(key, range)

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        return self.inner.get_many(requests)

    def _set(self, key: str, value: bytes) -> None:
        self.inner.set(key, value)

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.inner.set_many(items)

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        return self.inner.set_if_not_exists(key, value)

    def _delete(self, key: str) -> None:
        self.inner.delete(key)

    def _delete_many(self, keys: Sequence[str]) -> None:
        self.inner.delete_many(keys)

    def _exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def _getsize(self, key: str) -> int | None:
        return self.inner.getsize(key)

    def _list(self, prefix: str) -> Iterator[str]:
        return self.inner.list_prefix(prefix) if prefix else self.inner.list()

    def _list_dir(self, prefix: str) -> list[str]:
        return self.inner.list_dir(prefix)


class _CountingWrapper(WrapperStore):
    """A wrapper that keeps statistics: copies (``with_read_only``) share them with the
    original, since they observe the same traffic; a pickled copy gets a fresh lock."""

    _lock: threading.Lock

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __copy__(self) -> _CountingWrapper:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new


class CountingStore(_CountingWrapper):
    """Counts requests and bytes per method, and records every ``get_many`` batch.

    Counters (in :attr:`counts`, a :class:`collections.Counter`):

    ``get``, ``get_many`` (calls), ``keys_read`` (requests in get and get_many),
    ``bytes_read``, ``absent`` (requests answered None), ``set``, ``set_many``,
    ``set_if_not_exists``, ``keys_written``, ``bytes_written``, ``delete``, ``delete_many``,
    ``keys_deleted``, ``exists``, ``getsize``, ``list`` (list/list_prefix), ``list_dir``.

    :attr:`batches` holds, per ``get_many`` call, the list of ``(key, range)`` requests, so a
    test can assert that one array read issued exactly one batched request list.
    """

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.counts: Counter[str] = Counter()
        self.batches: list[list[tuple[str, ByteRange | None]]] = []
        self._lock = threading.Lock()


    def reset(self) -> None:
        """Zero every counter and forget the recorded batches."""
        with self._lock:
            self.counts.clear()
            self.batches.clear()

    @property
    def total_requests(self) -> int:
        """Number of calls of any kind made to the inner store."""
        keys = ("get", "get_many", "set", "set_many", "set_if_not_exists", "delete", "delete_many",
                "exists", "getsize", "list", "list_dir")
        return sum(self.counts[k] for k in keys)

    def _add(self, **kw: int) -> None:
        with self._lock:
            self.counts.update(kw)

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        value = super()._get(key, range)
        self._add(get=1, keys_read=1, bytes_read=len(value or b""), absent=int(value is None))
        return value

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        with self._lock:
            self.batches.append(list(requests))
        values = super()._get_many(requests)
        self._add(
            get_many=1,
            keys_read=len(requests),
            bytes_read=sum(len(v) for v in values if v is not None),
            absent=sum(v is None for v in values),
        )
        return values

    def _set(self, key: str, value: bytes) -> None:
        super()._set(key, value)
        self._add(set=1, keys_written=1, bytes_written=len(value))

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        super()._set_many(items)
        self._add(set_many=1, keys_written=len(items), bytes_written=sum(len(v) for _, v in items))

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        written = super()._set_if_not_exists(key, value)
        self._add(set_if_not_exists=1, keys_written=int(written), bytes_written=len(value) * written)
        return written

    def _delete(self, key: str) -> None:
        super()._delete(key)
        self._add(delete=1, keys_deleted=1)

    def _delete_many(self, keys: Sequence[str]) -> None:
        super()._delete_many(keys)
        self._add(delete_many=1, keys_deleted=len(keys))

    def _exists(self, key: str) -> bool:
        self._add(exists=1)
        return super()._exists(key)

    def _getsize(self, key: str) -> int | None:
        self._add(getsize=1)
        return super()._getsize(key)

    def _list(self, prefix: str) -> Iterator[str]:
        self._add(list=1)
        return super()._list(prefix)

    def _list_dir(self, prefix: str) -> list[str]:
        self._add(list_dir=1)
        return super()._list_dir(prefix)


class LatencyStore(_CountingWrapper):
    """Adds a delay per request batch, modelling a remote store with round-trip latency.

    Model: every call to the inner store costs ``latency`` seconds of waiting (a ``time.sleep``,
    which releases the GIL, so concurrent callers wait concurrently), except that a
    ``get_many`` / ``set_many`` / ``delete_many`` of ``n`` requests is issued as
    ``ceil(n / concurrency)`` sequential rounds of concurrent requests, i.e. it costs
    ``ceil(n / concurrency) * latency`` (one latency when ``concurrency`` is None, the inner store
    being fully concurrent).  During the wait the requests count as in flight;
    :attr:`max_in_flight` records the peak over all threads, :attr:`in_flight` the current value.

    Parameters
    ----------
    inner
        The store to delay.
    latency
        Seconds per round trip.
    concurrency
        Requests one batch keeps in flight at once (None: all of them).
    """

    def __init__(self, inner: Store, latency: float = 0.01, *, concurrency: int | None = None) -> None:
        super().__init__(inner)
        if latency < 0:
            raise InvalidArgumentError(f"LatencyStore latency must be >= 0, got {latency}")
        if concurrency is not None and concurrency < 1:
            raise InvalidArgumentError(f"LatencyStore concurrency must be >= 1, got {concurrency}")
        self.latency = float(latency)
        self.concurrency = concurrency
        # [current, peak] in one list so that copies (with_read_only) share it.
        self._flight = [0, 0]
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_flight"] = [0, self._flight[1]]
        return state

    @property
    def in_flight(self) -> int:
        """Requests in flight now."""
        return self._flight[0]

    @property
    def max_in_flight(self) -> int:
        """The most requests in flight at once since creation or :meth:`reset`."""
        return self._flight[1]

    def reset(self) -> None:
        """Forget the recorded peak."""
        with self._lock:
            self._flight[1] = self._flight[0]

    def _wait(self, n: int) -> None:
        width = n if self.concurrency is None else min(n, self.concurrency)
        rounds = 1 if self.concurrency is None else math.ceil(n / self.concurrency)
        with self._lock:
            self._flight[0] += width
            self._flight[1] = max(self._flight[1], self._flight[0])
        try:
            if self.latency:
                time.sleep(self.latency * rounds)
        finally:
            with self._lock:
                self._flight[0] -= width

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        self._wait(1)
        return super()._get(key, range)

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        self._wait(len(requests))
        return super()._get_many(requests)

    def _set(self, key: str, value: bytes) -> None:
        self._wait(1)
        super()._set(key, value)

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self._wait(len(items))
        super()._set_many(items)

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        self._wait(1)
        return super()._set_if_not_exists(key, value)

    def _delete(self, key: str) -> None:
        self._wait(1)
        super()._delete(key)

    def _delete_many(self, keys: Sequence[str]) -> None:
        self._wait(len(keys))
        super()._delete_many(keys)

    def _exists(self, key: str) -> bool:
        self._wait(1)
        return super()._exists(key)

    def _getsize(self, key: str) -> int | None:
        self._wait(1)
        return super()._getsize(key)

    def _list(self, prefix: str) -> Iterator[str]:
        self._wait(1)
        return super()._list(prefix)

    def _list_dir(self, prefix: str) -> list[str]:
        self._wait(1)
        return super()._list_dir(prefix)


_FAULT_MODES = ("raise", "short", "corrupt", "absent")
_FAULT_OPS = ("get", "set", "delete", "list")


class FaultStore(_CountingWrapper):
    """Injects failures into the requests of selected keys.

    Parameters
    ----------
    inner
        The store to disturb.
    fail_keys
        Which keys fail: a collection of keys, a callable ``key -> bool``, or None for every key.
        (Listing faults ignore it.)
    fail_after
        Matching requests that succeed before faults start (0: the first one fails).
    times
        How many faults to inject before healing (None: permanent).  ``times=2`` with the
        default mode models a transient failure that succeeds on the third attempt.
    mode
        ``"raise"`` raises ``exc``; ``"short"`` returns the value (or range) truncated to half its
        length; ``"corrupt"`` returns it with its first byte flipped; ``"absent"`` answers None.
        Only ``"raise"`` applies to writes, deletes and listings.
    exc
        The exception class (or instance) raised in ``"raise"`` mode; it is called with a
        message naming the key.  Default :class:`~chunkref.errors.TransientStoreError`.
    ops
        Which operations are disturbed: any of ``"get"`` (get, get_many, exists, getsize),
        ``"set"`` (set, set_many, set_if_not_exists), ``"delete"``, ``"list"``.

    Counters: :attr:`attempts` (matching requests seen), :attr:`faults` (faults injected),
    :attr:`fault_keys` (the key of each fault).  A fault in one request of a ``get_many`` fails
    the whole call in ``"raise"`` mode, like a backend whose batch raised.
    """

    def __init__(
        self,
        inner: Store,
        fail_keys: Collection[str] | Callable[[str], bool] | None = None,
        fail_after: int = 0,
        exc: type[BaseException] | BaseException = TransientStoreError,
        *,
        times: int | None = None,
        mode: str = "raise",
        ops: Collection[str] = ("get",),
    ) -> None:
        super().__init__(inner)
        if mode not in _FAULT_MODES:
            raise InvalidArgumentError(f"FaultStore mode must be one of {_FAULT_MODES}, got {mode!r}")
        bad_ops = [o for o in ops if o not in _FAULT_OPS]
        if bad_ops:
            raise InvalidArgumentError(f"FaultStore ops must be among {_FAULT_OPS}, got {bad_ops}")
        if fail_after < 0 or (times is not None and times < 0):
            raise InvalidArgumentError("FaultStore fail_after and times must be >= 0")
        if fail_keys is None or callable(fail_keys):
            self.fail_keys = fail_keys
        else:
            self.fail_keys = frozenset(fail_keys)
        self.fail_after = fail_after
        self.times = times
        self.mode = mode
        self.exc = exc
        self.ops = frozenset(ops)
        self.attempts = 0
        self.faults = 0
        self.fault_keys: list[str] = []
        self._lock = threading.Lock()


    def reset(self, *, times: int | None | Any = ...) -> None:
        """Restart counting (``fail_after`` applies again); optionally change ``times``."""
        with self._lock:
            self.attempts = 0
            self.faults = 0
            self.fault_keys = []
            if times is not ...:
                self.times = times

    # -- decision ------------------------------------------------------------------------------

    def _matches(self, key: str) -> bool:
        fk = self.fail_keys
        if fk is None:
            return True
        if callable(fk):
            return bool(fk(key))
        return key in fk

    def _should_fail(self, op: str, key: str) -> bool:
        if op not in self.ops or (op != "list" and not self._matches(key)):
            return False
        with self._lock:
            self.attempts += 1
            if self.attempts <= self.fail_after:
                return False
            if self.times is not None and self.faults >= self.times:
                return False
            self.faults += 1
            self.fault_keys.append(key)
            return True

    def _raise(self, op: str, key: str) -> None:
        exc = self.exc
        if isinstance(exc, BaseException):
            raise exc
        raise exc(f"injected fault #{self.faults} on {op} of {key!r}")

    def _disturb(self, key: str, value: bytes | None) -> bytes | None:
        if self.mode == "raise":
            self._raise("get", key)
        if self.mode == "absent" or value is None:
            return None
        if self.mode == "short":
            return value[: len(value) // 2]
        # corrupt
        if not value:
            return b"\x00"  # an empty value corrupted gains a byte
        return bytes([value[0] ^ 0xFF]) + value[1:]

    def _check_write(self, op: str, keys: Sequence[str]) -> None:
        for k in keys:
            if self._should_fail(op, k):
                self._raise(op, k)

    # -- hooks ---------------------------------------------------------------------------------

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        fail = self._should_fail("get", key)
        if fail and self.mode == "raise":
            self._raise("get", key)
        value = super()._get(key, range)
        return self._disturb(key, value) if fail else value

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        fails = [self._should_fail("get", k) for k, _ in requests]
        if self.mode == "raise":
            for (k, _), f in zip(requests, fails):
                if f:
                    self._raise("get", k)
        values = super()._get_many(requests)
        return [self._disturb(k, v) if f else v for (k, _), v, f in zip(requests, values, fails)]

    def _exists(self, key: str) -> bool:
        if self._should_fail("get", key):
            if self.mode == "raise":
                self._raise("get", key)
            return False if self.mode == "absent" else super()._exists(key)
        return super()._exists(key)

    def _getsize(self, key: str) -> int | None:
        if self._should_fail("get", key):
            if self.mode == "raise":
                self._raise("get", key)
            if self.mode == "absent":
                return None
        return super()._getsize(key)

    def _set(self, key: str, value: bytes) -> None:
        self._check_write("set", [key])
        super()._set(key, value)

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self._check_write("set", [k for k, _ in items])
        super()._set_many(items)

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        self._check_write("set", [key])
        return super()._set_if_not_exists(key, value)

    def _delete(self, key: str) -> None:
        self._check_write("delete", [key])
        super()._delete(key)

    def _delete_many(self, keys: Sequence[str]) -> None:
        self._check_write("delete", keys)
        super()._delete_many(keys)

    def _list(self, prefix: str) -> Iterator[str]:
        self._check_write("list", [prefix])
        return super()._list(prefix)

    def _list_dir(self, prefix: str) -> list[str]:
        self._check_write("list", [prefix])
        return super()._list_dir(prefix)

