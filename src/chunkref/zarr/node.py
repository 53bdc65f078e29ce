"""What arrays and groups share: a store, a path, immutable metadata and runtime settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chunkref.errors import InvalidArgumentError, ReadOnlyError
from chunkref.storage.base import Store

#: Runtime settings an array accepts in ``config=``; unset ones follow ``chunkref.config``.
#: Groups carry them too, for the arrays opened through them.
ARRAY_SETTINGS = ("order", "write_empty_chunks", "read_missing_chunks")


def resolve_array_config(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate user ``config=`` settings for an array (unknown names are an error)."""
    settings = dict(settings or {})
    unknown = set(settings) - set(ARRAY_SETTINGS)
    if unknown:
        raise InvalidArgumentError(f"unknown array config setting(s) {sorted(unknown)}; known: {ARRAY_SETTINGS}")
    if "order" in settings and settings["order"] not in ("C", "F"):
        raise InvalidArgumentError(f"array order must be 'C' or 'F', got {settings['order']!r}")
    return settings


class Node:
    """Base of :class:`~chunkref.zarr.array.Array` and :class:`~chunkref.zarr.group.Group`.

    A light, picklable handle: its state is the store, the path, the metadata, the read-only
    flag and the runtime settings, never an open file or a lock.
    """

    _kind = "node"

    def __init__(
        self,
        store: Store,
        path: str,
        metadata: Any,
        *,
        read_only: bool | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._store = store
        self._path = path.strip("/")
        self._metadata = metadata
        self._read_only = store.read_only if read_only is None else (read_only or store.read_only)
        self._config = resolve_array_config(config)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "store": self._store,
            "path": self._path,
            "metadata": self._metadata,
            "read_only": self._read_only,
            "config": self._config,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        Node.__init__(
            self, state["store"], state["path"], state["metadata"], read_only=state["read_only"], config=state["config"]
        )

    @property
    def store(self) -> Store:
        return self._store

    @property
    def path(self) -> str:
        """Path of the node inside its store (``""`` for the root)."""
        return self._path

    @property
    def name(self) -> str:
        """Absolute name in the hierarchy, e.g. ``/group/array``."""
        return "/" + self._path

    @property
    def basename(self) -> str:
        return self._path.rsplit("/", 1)[-1]

    @property
    def metadata(self) -> Any:
        return self._metadata

    @property
    def zarr_format(self) -> int:
        return self._metadata.zarr_format

    @property
    def read_only(self) -> bool:
        return self._read_only

    def _check_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyError(f"{self._kind} {self.name!r} is read-only")
