"""User attributes of an array or group: a mapping whose changes are written at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from chunkref.errors import ReadOnlyError


class Attributes(MutableMapping[str, Any]):
    """A dict-like view of a node's attributes.

    Every change (``attrs["units"] = "K"``, ``del attrs[k]``, ``attrs.update(...)``) writes the
    node's metadata document once through ``save``; use :meth:`put` to replace them all.
    """

    def __init__(
        self,
        data: dict[str, Any],
        save: Callable[[dict[str, Any]], None],
        *,
        read_only: bool = False,
        name: str = "",
    ) -> None:
        self._data = dict(data)
        self._save = save
        self._read_only = read_only
        self._name = name

    def _commit(self, new: dict[str, Any]) -> None:
        if self._read_only:
            raise ReadOnlyError(f"attributes of the read-only node {self._name or '?'!r} cannot be changed")
        self._save(new)
        self._data = new

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._commit({**self._data, key: value})

    def __delitem__(self, key: str) -> None:
        if key not in self._data:
            raise KeyError(key)
        new = dict(self._data)
        del new[key]
        self._commit(new)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Merge several attributes with a single metadata write."""
        self._commit({**self._data, **dict(*args, **kwargs)})

    def put(self, mapping: dict[str, Any]) -> None:
        """Replace all attributes with ``mapping``."""
        self._commit(dict(mapping))

    def asdict(self) -> dict[str, Any]:
        return dict(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Attributes({self._data!r})"
