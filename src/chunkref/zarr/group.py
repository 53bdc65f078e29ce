"""Zarr groups: hierarchy navigation, creation of members, consolidated metadata.

A :class:`Group` carries runtime array settings (``config={...}``) that every array opened
through it inherits, so ``group["temp"]`` behaves like the array it was created as instead of
silently reverting to the global defaults.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from chunkref.errors import (
    ContainsArrayError,
    ContainsGroupError,
    InvalidArgumentError,
    NodeNotFoundError,
)
from chunkref.zarr import nodes
from chunkref.zarr.array import Array
from chunkref.zarr.attributes import Attributes
from chunkref.zarr.node import Node


def _join(parent: str, name: str) -> str:
    name = name.strip("/")
    return f"{parent}/{name}" if parent else name


class Group(Node):
    """A Zarr group (v2 or v3) in a store."""

    _kind = "group"

    @property
    def config(self) -> dict[str, Any]:
        """Array settings inherited by arrays opened through this group."""
        return dict(self._config)

    @property
    def attrs(self) -> Attributes:
        return Attributes(self._metadata.attributes, self._set_attributes, read_only=self._read_only, name=self.name)

    def _set_attributes(self, attributes: dict[str, Any]) -> None:
        self._check_writable()
        meta = self._metadata.evolve(attributes=attributes)
        nodes.write_group_metadata(self._store, self._path, meta)
        self._metadata = meta

    def update_attributes(self, new: Mapping[str, Any]) -> Attributes:
        """Merge ``new`` into the attributes and write them once."""
        self._set_attributes({**self._metadata.attributes, **dict(new)})
        return self.attrs

    def __repr__(self) -> str:
        return f"<chunkref.Group {self.name!r}{' read-only' if self._read_only else ''}>"

    # -- navigation ----------------------------------------------------------------------------

    def _wrap(self, path: str, meta: Any) -> Array | Group:
        if meta.node_type == "array":
            return Array(self._store, path, meta, read_only=self._read_only, config=self._config)
        return Group(self._store, path, meta, read_only=self._read_only, config=self._config)

    def _consolidated(self) -> Mapping[str, Any] | None:
        """Metadata of every node below this group by relative path, when consolidated."""
        cons = getattr(self._metadata, "consolidated", None)
        return None if cons is None else cons.metadata

    def __getitem__(self, name: str) -> Array | Group:
        """The member at ``name`` (a nested path like ``"a/b"`` works too)."""
        if not isinstance(name, str) or not name.strip("/"):
            raise InvalidArgumentError(f"group members are named by non-empty strings, got {name!r}")
        rel = name.strip("/")
        cons = self._consolidated()
        if cons is not None and rel in cons:
            return self._wrap(_join(self._path, rel), cons[rel])
        path = _join(self._path, rel)
        try:
            meta = nodes.read_node(self._store, path, zarr_format=self.zarr_format)
        except NodeNotFoundError:
            raise NodeNotFoundError(f"no array or group named {rel!r} in group {self.name!r}") from None
        return self._wrap(path, meta)

    def get(self, name: str, default: Any = None) -> Array | Group | Any:
        try:
            return self[name]
        except NodeNotFoundError:
            return default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        for name, _ in self.members():
            yield name

    def __len__(self) -> int:
        return len(self.members())

    def members(self, max_depth: int | None = 0) -> tuple[tuple[str, Array | Group], ...]:
        """``(name, node)`` pairs of the children, sorted by name.

        ``max_depth=None`` walks the whole subtree (names are then relative paths); consolidated
        metadata answers without any store reads, otherwise each level costs one listing and one
        batched metadata read.
        """
        cons = self._consolidated()
        if cons is not None:
            out = []
            for rel in sorted(cons):
                depth = rel.count("/")
                if max_depth is None or depth <= max_depth:
                    out.append((rel, self._wrap(_join(self._path, rel), cons[rel])))
            return tuple(out)
        found = nodes.read_children(self._store, self._path, zarr_format=self.zarr_format)
        out = []
        for child_name, meta in sorted(found.items()):
            node = self._wrap(_join(self._path, child_name), meta)
            out.append((child_name, node))
            if isinstance(node, Group) and (max_depth is None or max_depth > 0):
                sub_depth = None if max_depth is None else max_depth - 1
                out.extend((f"{child_name}/{n}", m) for n, m in node.members(max_depth=sub_depth))
        out.sort(key=lambda item: item[0])
        return tuple(out)

    def keys(self) -> list[str]:
        return [n for n, _ in self.members()]

    def arrays(self) -> list[tuple[str, Array]]:
        return [(n, m) for n, m in self.members() if isinstance(m, Array)]

    def groups(self) -> list[tuple[str, Group]]:
        return [(n, m) for n, m in self.members() if isinstance(m, Group)]

    def array_keys(self) -> list[str]:
        return [n for n, _ in self.arrays()]

    def group_keys(self) -> list[str]:
        return [n for n, _ in self.groups()]

    def tree(self) -> str:
        """A text tree of the hierarchy with shapes and dtypes."""
        everything = dict(self.members(max_depth=None))
        lines = [self.name]

        def walk(prefix: str, indent: str) -> None:
            children = sorted(n for n in everything if n.rsplit("/", 1)[0] == prefix and n != prefix) if prefix else sorted(
                n for n in everything if "/" not in n
            )
            for i, name in enumerate(children):
                last = i == len(children) - 1
                node = everything[name]
                label = name.rsplit("/", 1)[-1]
                if isinstance(node, Array):
                    label += f" {node.shape} {node.dtype}"
                lines.append(f"{indent}{'└── ' if last else '├── '}{label}")
                if isinstance(node, Group):
                    walk(name, indent + ("    " if last else "│   "))

        walk("", "")
        return "\n".join(lines)

    @property
    def info(self) -> str:
        cons = self._consolidated() is not None
        rows = [
            ("Name", self.name),
            ("Type", "Group"),
            ("Zarr format", self.zarr_format),
            ("Read-only", self.read_only),
            ("Store type", type(self._store).__name__),
            ("Consolidated", cons),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}} : {v}" for k, v in rows)

    # -- creation ------------------------------------------------------------------------------

    def create_group(
        self, name: str, *, overwrite: bool = False, attributes: Mapping[str, Any] | None = None
    ) -> Group:
        """Create a child group (and any missing groups on the way)."""
        self._check_writable()
        from chunkref.zarr.api import create_group

        return create_group(
            self._store,
            path=_join(self._path, name),
            zarr_format=self.zarr_format,
            overwrite=overwrite,
            attributes=attributes,
            config=self._config,
        )

    def require_group(self, name: str, *, overwrite: bool = False) -> Group:
        """The child group ``name``, created if it does not exist."""
        try:
            node = self[name]
        except NodeNotFoundError:
            return self.create_group(name)
        if isinstance(node, Array):
            if overwrite:
                return self.create_group(name, overwrite=True)
            raise ContainsArrayError(f"{node.name!r} is an array, not a group")
        return node

    def create_array(self, name: str, **kwargs: Any) -> Array:
        """Create an array in this group; takes the arguments of :func:`chunkref.create_array`."""
        self._check_writable()
        from chunkref.zarr.api import create_array

        kwargs.setdefault("zarr_format", self.zarr_format)
        config = {**self._config, **dict(kwargs.pop("config", None) or {})}
        return create_array(self._store, name=_join(self._path, name), config=config, **kwargs)

    def require_array(self, name: str, *, shape: Any, dtype: Any = None, **kwargs: Any) -> Array:
        """The child array ``name``, created if missing; an existing one must match shape/dtype."""
        try:
            node = self[name]
        except NodeNotFoundError:
            return self.create_array(name, shape=shape, dtype=dtype, **kwargs)
        if isinstance(node, Group):
            raise ContainsGroupError(f"{node.name!r} is a group, not an array")
        shape_t = (shape,) if isinstance(shape, int) else tuple(shape)
        if node.shape != shape_t or (dtype is not None and node.dtype != _np_dtype(dtype)):
            raise InvalidArgumentError(
                f"array {node.name!r} exists with shape {node.shape} and dtype {node.dtype}, "
                f"not shape {shape_t} and dtype {dtype}"
            )
        return node

    def from_array(self, name: str, data: Any, **kwargs: Any) -> Array:
        """Create an array in this group from array-like ``data``."""
        from chunkref.zarr.api import from_array

        kwargs.setdefault("zarr_format", self.zarr_format)
        return from_array(self._store, data=data, name=_join(self._path, name), **kwargs)

    def __delitem__(self, name: str) -> None:
        """Delete a member and everything below it."""
        self._check_writable()
        node = self[name]
        nodes.delete_node(self._store, node.path)

    def consolidate_metadata(self) -> Group:
        """Write consolidated metadata for this group's subtree and return the refreshed group."""
        from chunkref.zarr.api import consolidate_metadata

        return consolidate_metadata(self._store, path=self._path, zarr_format=self.zarr_format)


def _np_dtype(dtype: Any) -> np.dtype:
    return np.dtype(dtype)
