"""Buffered writes for :meth:`chunkref.zarr.array.Array.batch`: each chunk (shard) written once.

Without batching, every write call that touches part of a shard reads, re-lays-out and rewrites
the whole shard: writing a shard one inner chunk at a time costs ``n^2`` bytes of I/O.  Inside
``with array.batch():`` the array's store is replaced by a :class:`BufferedStore`, an in-memory
overlay over the real store:

* plain ``set`` / ``delete`` (unsharded chunks, metadata) are recorded and served back to reads;
* the sharding codec keeps each touched shard as a dict of *encoded inner chunks*
  (``has_shard`` / ``shard_chunks`` / ``put_shard``), so a write re-encodes only the inner
  chunks it touches and never re-assembles the shard; a read of a buffered shard assembles it
  on demand (and remembers the bytes until the next write to it);
* at the end of the block everything is written with one ``set_many`` and one ``delete_many``
  (every shard assembled exactly once).

If the block raises, the buffered writes are dropped (nothing reaches the store), like an aborted
transaction.  The buffer is not meant to be shared between threads writing concurrently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from chunkref.storage.base import ByteRange, Store, slice_value

__all__ = ["BufferedStore", "batch_writes"]

Assemble = Callable[[Mapping[int, Any]], "bytes | None"]


class BufferedStore(Store):
    """A store that keeps writes in memory until :meth:`flush` (see the module docstring)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.read_only = inner.read_only
        self._lock = threading.RLock()
        # key -> bytes (written) or None (deleted)
        self._values: dict[str, bytes | None] = {}
        # key -> (inner chunks, assemble function, assembled bytes or None when stale)
        self._shards: dict[str, tuple[dict[int, Any], Assemble, list[Any]]] = {}

    @property
    def shard_buffer(self) -> BufferedStore:
        """The sharding codec looks for this attribute to keep shards as inner-chunk dicts."""
        return self

    def __repr__(self) -> str:
        return f"BufferedStore({self.inner!r}, {len(self._values) + len(self._shards)} pending)"

    def with_read_only(self, read_only: bool = True) -> Store:
        return self.inner.with_read_only(read_only)

    # -- shard API (used by the sharding codec) ----------------------------------------------------

    def has_shard(self, key: str) -> bool:
        """Whether the buffer knows the current content of shard ``key`` (written or deleted)."""
        with self._lock:
            return key in self._shards or (key in self._values and self._values[key] is None)

    def shard_chunks(self, key: str) -> dict[int, Any]:
        """A copy of the encoded inner chunks of a buffered shard (empty if deleted)."""
        with self._lock:
            entry = self._shards.get(key)
            return dict(entry[0]) if entry is not None else {}

    def put_shard(self, key: str, chunks: Mapping[int, Any], assemble: Assemble) -> None:
        """Record the new inner chunks of shard ``key`` (none: the shard is deleted)."""
        with self._lock:
            if chunks:
                self._shards[key] = (dict(chunks), assemble, [None])
                self._values.pop(key, None)
            else:
                self._shards.pop(key, None)
                self._values[key] = None

    def _assembled(self, key: str) -> bytes | None:
        entry = self._shards[key]
        cached = entry[2]
        if cached[0] is None:
            cached[0] = entry[1](entry[0])
        return cached[0]

    @property
    def pending(self) -> list[str]:
        """Keys with buffered changes."""
        with self._lock:
            return sorted(set(self._values) | set(self._shards))

    # -- Store hooks -----------------------------------------------------------------------------

    def _lookup(self, key: str) -> tuple[bool, bytes | None]:
        with self._lock:
            if key in self._shards:
                return True, self._assembled(key)
            if key in self._values:
                return True, self._values[key]
        return False, None

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        found, value = self._lookup(key)
        if not found:
            return self.inner.get(key, range)
        return None if value is None else slice_value(key, value, range)

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(requests)
        passthrough: list[int] = []
        for i, (key, rng) in enumerate(requests):
            found, value = self._lookup(key)
            if found:
                out[i] = None if value is None else slice_value(key, value, rng)
            else:
                passthrough.append(i)
        if passthrough:
            fetched = self.inner.get_many([requests[i] for i in passthrough])
            for i, v in zip(passthrough, fetched):
                out[i] = v
        return out

    def _set(self, key: str, value: bytes) -> None:
        with self._lock:
            self._shards.pop(key, None)
            self._values[key] = bytes(value)

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for key, value in items:
            self._set(key, value)

    def _delete(self, key: str) -> None:
        with self._lock:
            self._shards.pop(key, None)
            self._values[key] = None

    def _delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._delete(key)

    def _exists(self, key: str) -> bool:
        found, value = self._lookup(key)
        return value is not None if found else self.inner.exists(key)

    def _getsize(self, key: str) -> int | None:
        found, value = self._lookup(key)
        if found:
            return None if value is None else len(value)
        return self.inner.getsize(key)

    def _list(self, prefix: str) -> Iterator[str]:
        with self._lock:
            written = {k for k, v in self._values.items() if v is not None} | set(self._shards)
            deleted = {k for k, v in self._values.items() if v is None}
        base = self.inner.list_prefix(prefix) if prefix else self.inner.list()
        seen = set()
        for key in base:
            if key not in deleted:
                seen.add(key)
                yield key
        for key in sorted(written - seen):
            if key.startswith(prefix):
                yield key

    def _list_dir(self, prefix: str) -> list[str]:
        names = set()
        for key in self._list(prefix):
            names.add(key[len(prefix) :].split("/", 1)[0])
        return sorted(names)

    # -- flushing ----------------------------------------------------------------------------------

    def flush(self) -> list[str]:
        """Write everything buffered to the inner store (one set_many, one delete_many); return
        the keys written or deleted.  The buffer is empty afterwards."""
        with self._lock:
            to_set: list[tuple[str, bytes]] = []
            to_delete: list[str] = []
            for key in self._shards:
                shard = self._assembled(key)
                if shard is None:
                    to_delete.append(key)
                else:
                    to_set.append((key, shard))
            for key, value in self._values.items():
                if value is None:
                    to_delete.append(key)
                else:
                    to_set.append((key, value))
            self._shards.clear()
            self._values.clear()
        if to_set:
            self.inner.set_many(to_set)
        if to_delete:
            # Deleting a key that was never stored is a no-op for every backend.
            self.inner.delete_many(to_delete)
        return [k for k, _ in to_set] + to_delete

    def discard(self) -> list[str]:
        """Drop everything buffered; return the keys that had pending changes."""
        with self._lock:
            keys = sorted(set(self._values) | set(self._shards))
            self._shards.clear()
            self._values.clear()
        return keys


@contextmanager
def batch_writes(array: Any) -> Iterator[Any]:
    """Buffer every write to ``array`` inside the block; write each chunk once at its end.

    Reads inside the block see the buffered writes.  Nested blocks join the outer one.  If the
    block raises, nothing is written.
    """
    current = array._store
    if isinstance(current, BufferedStore):
        yield array
        return
    buffer = BufferedStore(current)
    array._store = buffer
    try:
        yield array
    except BaseException:
        array._store = current
        _forget(array, buffer, buffer.discard())
        raise
    array._store = current
    _forget(array, buffer, buffer.flush())


def _forget(array: Any, buffer: BufferedStore, keys: list[str]) -> None:
    """Drop cached shard indexes the batch made stale (for the real store) or unreachable."""
    codec = getattr(array.codec_pipeline, "partial_codec", None)
    cache = getattr(codec, "index_cache", None)
    if cache is not None and keys:
        cache.discard(buffer.inner, keys)
        cache.discard(buffer, keys)
