"""Reading and writing node metadata documents in a store.

Every function here batches its reads: opening a node fetches all candidate documents
(``zarr.json``, ``.zarray``, ``.zgroup``, ``.zattrs``, ``.zmetadata``) in one ``get_many``, and
listing a group reads all its children's documents in one more, so a hierarchy level costs two
round trips whatever its size (and a consolidated hierarchy costs one in total).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chunkref.errors import ContainsArrayError, NodeNotFoundError
from chunkref.storage.base import Store
from chunkref.zarr.metadata import ConsolidatedMetadata, GroupMetadata, json_loads, parse_node

V3_DOCS = ("zarr.json",)
V2_DOCS = (".zarray", ".zgroup", ".zattrs", ".zmetadata")
METADATA_NAMES = frozenset(V3_DOCS + V2_DOCS)


def node_prefix(path: str) -> str:
    """Key prefix of a node's documents and chunks (``""`` for the root)."""
    path = path.strip("/")
    return path + "/" if path else ""


def _doc_names(zarr_format: int | None) -> tuple[str, ...]:
    if zarr_format == 3:
        return V3_DOCS
    if zarr_format == 2:
        return V2_DOCS
    return V3_DOCS + V2_DOCS


def _parse_documents(path: str, names: Sequence[str], blobs: Sequence[bytes | None]) -> Any | None:
    prefix = node_prefix(path)
    docs = {}
    for name, blob in zip(names, blobs):
        if blob is not None:
            docs[name] = json_loads(blob, what=prefix + name)
    if not any(n in docs for n in ("zarr.json", ".zarray", ".zgroup")):
        return None
    return parse_node(docs, path)


def read_node(store: Store, path: str, zarr_format: int | None = None) -> Any:
    """Metadata of the node at ``path`` (v3 preferred when both formats are present).

    Raises
    ------
    NodeNotFoundError
        When no metadata document exists there.
    """
    path = path.strip("/")
    names = _doc_names(zarr_format)
    prefix = node_prefix(path)
    blobs = store.get_many([(prefix + n, None) for n in names])
    meta = _parse_documents(path, names, blobs)
    if meta is None:
        raise NodeNotFoundError(f"no array or group at {path or '/'!r} in {store!r}")
    return meta


def read_children(store: Store, path: str, zarr_format: int | None = None) -> dict[str, Any]:
    """Metadata of every child node of the group at ``path``, by name (one listing, one batch)."""
    prefix = node_prefix(path)
    names = [n for n in store.list_dir(prefix) if n not in METADATA_NAMES]
    if not names:
        return {}
    docs = _doc_names(zarr_format)
    requests = [(f"{prefix}{child}/{d}", None) for child in names for d in docs]
    blobs = store.get_many(requests)
    out = {}
    for i, child in enumerate(names):
        part = blobs[i * len(docs) : (i + 1) * len(docs)]
        meta = _parse_documents(prefix + child, docs, part)
        if meta is not None:
            out[child] = meta
    return out


def _write(store: Store, path: str, meta: Any) -> None:
    prefix = node_prefix(path)
    store.set_many([(prefix + name, blob) for name, blob in meta.encode_documents().items()])


def write_array_metadata(store: Store, path: str, meta: Any) -> None:
    """Write an array's metadata documents."""
    _write(store, path, meta)


def write_group_metadata(store: Store, path: str, meta: GroupMetadata) -> None:
    """Write a group's metadata documents (and ``.zmetadata`` for consolidated v2 groups)."""
    _write(store, path, meta)


def ensure_parent_groups(store: Store, path: str, zarr_format: int) -> None:
    """Create the missing groups above ``path``; an array in the way is an error."""
    parts = path.strip("/").split("/") if path.strip("/") else []
    ancestors = ["/".join(parts[:i]) for i in range(len(parts))]
    if not ancestors:
        return
    names = _doc_names(None)
    blobs = store.get_many([(node_prefix(a) + n, None) for a in ancestors for n in names])
    for i, anc in enumerate(ancestors):
        part = blobs[i * len(names) : (i + 1) * len(names)]
        meta = _parse_documents(anc, names, part)
        if meta is not None and meta.node_type == "array":
            raise ContainsArrayError(f"cannot create {path!r}: {anc or '/'!r} is an array")
        # A group of the other format does not make the node reachable by readers of this
        # format (a v3 reader finds no zarr.json): add this format's document, as zarr-python does.
        has_own = any(b is not None for n, b in zip(names, part) if n in _doc_names(zarr_format) and n != ".zattrs")
        if meta is None or not has_own:
            write_group_metadata(store, anc, GroupMetadata(zarr_format=zarr_format))


def delete_node(store: Store, path: str) -> None:
    """Delete a node's documents and everything below it."""
    path = path.strip("/")
    if not path:
        store.clear()
        return
    store.delete_prefix(path)
    store.delete_many([f"{path}/{n}" for n in METADATA_NAMES])


def walk(store: Store, path: str, zarr_format: int | None = None) -> dict[str, Any]:
    """Metadata of every node below the group at ``path``, by relative path (one batch per level)."""
    out: dict[str, Any] = {}
    level = [""]
    while level:
        nxt = []
        for rel in level:
            base = f"{path}/{rel}".strip("/") if rel else path
            for name, meta in read_children(store, base, zarr_format).items():
                child_rel = f"{rel}/{name}" if rel else name
                out[child_rel] = meta
                if meta.node_type == "group":
                    nxt.append(child_rel)
        level = nxt
    return out


def consolidate(store: Store, path: str, meta: GroupMetadata) -> GroupMetadata:
    """Write consolidated metadata for the subtree of the group at ``path``; return the new metadata."""
    found = walk(store, path, meta.zarr_format)
    clean = {}
    for rel, m in found.items():
        if m.node_type == "group" and getattr(m, "consolidated", None) is not None:
            m = m.evolve(consolidated=None)
        if m.zarr_format == meta.zarr_format:
            clean[rel] = m
    new = meta.evolve(consolidated=ConsolidatedMetadata(clean))
    write_group_metadata(store, path, new)
    return new
