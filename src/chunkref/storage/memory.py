"""An in-memory store (a dict of bytes), for tests, scratch work and small hierarchies."""

from __future__ import annotations

import threading
from collections.abc import Iterator, MutableMapping

from chunkref.storage.base import ByteRange, Store, slice_value


class MemoryStore(Store):
    """Keys and values in a dict.

    Parameters
    ----------
    data
        An existing mapping to use as the backing dict (shared, not copied).
    read_only
        Refuse writes.
    """

    def __init__(self, data: MutableMapping[str, bytes] | None = None, *, read_only: bool = False) -> None:
        self._data: MutableMapping[str, bytes] = {} if data is None else data
        self._lock = threading.Lock()
        self.read_only = read_only

    def __getstate__(self) -> dict:
        return {"data": dict(self._data), "read_only": self.read_only}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["data"], read_only=state["read_only"])  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MemoryStore) and other._data is self._data

    def __hash__(self) -> int:
        return id(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(<{len(self._data)} keys>{', read_only' if self.read_only else ''})"

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        value = self._data.get(key)
        if value is None:
            return None
        return slice_value(key, value, range)

    def _set(self, key: str, value: bytes) -> None:
        self._data[key] = value

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._data[key] = value
            return True

    def _delete(self, key: str) -> None:
        self._data.pop(key, None)

    def _exists(self, key: str) -> bool:
        return key in self._data

    def _getsize(self, key: str) -> int | None:
        value = self._data.get(key)
        return None if value is None else len(value)

    def _list(self, prefix: str) -> Iterator[str]:
        keys = list(self._data)
        return iter(sorted(k for k in keys if k.startswith(prefix)))
