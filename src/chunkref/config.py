"""Runtime configuration.

Settings are dotted keys (``array.write_empty_chunks``).  Their defaults can be overridden by
environment variables ``CHUNKREF_<SECTION>__<KEY>`` (read when the module is imported, e.g.
``CHUNKREF_ARRAY__WRITE_EMPTY_CHUNKS=true``) and at run time with :meth:`Config.set`, which also
works as a context manager::

    import chunkref
    with chunkref.config.set({"array.write_empty_chunks": True}):
        ...

None of these settings is ever persisted in metadata.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from chunkref.errors import InvalidArgumentError

DEFAULTS: dict[str, Any] = {
    # Zarr format used by create_array / create_group when none is given.
    "default_zarr_format": 3,
    # Memory layout of arrays returned by reads (runtime only; v3 persists nothing).
    "array.order": "C",
    # Store chunks that are entirely the fill value (False: skip them, delete existing ones).
    "array.write_empty_chunks": False,
    # Read a missing chunk as the fill value (False: raise ChunkNotFoundError).
    "array.read_missing_chunks": True,
    # Byte ranges of one source closer than this are fetched as one request.
    "array.coalesce_max_gap_bytes": 1 << 20,
    # ... as long as the merged request stays below this size.
    "array.coalesce_max_bytes": 16 << 20,
    # Shard indexes kept per open array.
    "array.shard_index_cache_size": 4096,
    # ... and at most this many bytes of them (an index of 32768 inner chunks takes 512 KiB).
    "array.shard_index_cache_bytes": 64 << 20,
    # Threads used to decode / encode chunks (None: os.cpu_count()).
    "threading.max_workers": None,
    # Most bytes one codec may inflate a chunk to (decompression-bomb guard; chunk shapes come
    # from metadata, which may be hostile too).
    "codec.max_decoded_bytes": 1 << 31,
    # Allow the numcodecs "pickle" object codec, which runs arbitrary code on decode.
    "codec.allow_pickle": False,
    # Concurrent requests a store issues for one batch.
    "io.concurrency": 32,
    # Retries of transient remote failures, and the first backoff in seconds.
    "io.retries": 3,
    "io.retry_backoff": 0.2,
    # Seconds one batched remote read may take before it counts as a (transient) timeout.
    "io.timeout": 120.0,
    # Untrusted manifest input limits: JSON size in bytes, nesting depth of metadata documents,
    # references per manifest (incl. kerchunk `gen` expansion), chunks per array table.
    "manifest.max_json_bytes": 2 << 30,
    "manifest.max_json_depth": 64,
    "manifest.max_refs": 100_000_000,
    "manifest.max_table_chunks": 100_000_000,
    # Hash function for content ids.
    "hash.function": "sha2-256",
    # Indentation of JSON metadata documents written by the engine.
    "json_indent": 2,
}

_ENV_PREFIX = "CHUNKREF_"


def _env_key(key: str) -> str:
    return _ENV_PREFIX + key.upper().replace(".", "__")


def _parse_env(raw: str) -> Any:
    text = raw.strip()
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class Config:
    """A thread-safe mapping of dotted setting names to values, with scoped overrides."""

    def __init__(self, defaults: Mapping[str, Any]) -> None:
        self._defaults = dict(defaults)
        self._lock = threading.RLock()
        self._values: dict[str, Any] = {}
        self.refresh()

    def refresh(self) -> None:
        """Reset every setting to its default, then apply ``CHUNKREF_*`` environment variables."""
        with self._lock:
            values = dict(self._defaults)
            for key in self._defaults:
                raw = os.environ.get(_env_key(key))
                if raw is not None:
                    values[key] = _parse_env(raw)
            self._values = values

    def get(self, key: str, default: Any = ...) -> Any:
        """The current value of a setting.

        Raises
        ------
        InvalidArgumentError
            If the key is unknown and no default is given.
        """
        # No lock for reads: updates replace whole entries and a dict lookup is atomic.
        values = self._values
        if key in values:
            return values[key]
        if default is ...:
            raise InvalidArgumentError(f"unknown chunkref setting {key!r}; known: {sorted(self._values)}")
        return default

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def _check(self, updates: Mapping[str, Any]) -> None:
        unknown = [k for k in updates if k not in self._defaults]
        if unknown:
            raise InvalidArgumentError(f"unknown chunkref setting(s) {unknown}; known: {sorted(self._defaults)}")

    def set(self, updates: Mapping[str, Any] | None = None, **kwargs: Any) -> _Scoped:
        """Change settings now; used as a context manager, restore them on exit.

        Keyword form: ``config.set(array__write_empty_chunks=True)`` (``__`` stands for ``.``).
        """
        merged = dict(updates or {})
        merged.update({k.replace("__", "."): v for k, v in kwargs.items()})
        self._check(merged)
        with self._lock:
            previous = {k: self._values[k] for k in merged}
            self._values.update(merged)
        return _Scoped(self, previous)

    def _restore(self, previous: Mapping[str, Any]) -> None:
        with self._lock:
            self._values.update(previous)

    def as_dict(self) -> dict[str, Any]:
        """A snapshot of every setting."""
        with self._lock:
            return dict(self._values)

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __repr__(self) -> str:
        return f"Config({self.as_dict()!r})"


class _Scoped:
    """Returned by :meth:`Config.set`; restores the previous values when used as a context."""

    def __init__(self, config: Config, previous: Mapping[str, Any]) -> None:
        self._config = config
        self._previous = dict(previous)

    def __enter__(self) -> Config:
        return self._config

    def __exit__(self, *exc: object) -> None:
        self._config._restore(self._previous)


config = Config(DEFAULTS)
