"""Existing Zarr stores (v2 or v3) as manifest sources: :func:`scan_zarr`.

Every chunk object of the store becomes a whole-object reference (offset 0, the object's
length), and every node keeps its metadata documents as they are, so the manifest reads exactly
what the store holds and can be combined with scanned HDF5/NetCDF files, verified and imported.
Sharded arrays reference their shard objects; the ``sharding_indexed`` codec stays in the
metadata, so partial reads of inner chunks keep working through the references.

One recursive listing (``fs.find(detail=True)``) gives every key and size: no per-object
request.  Content ids (``content_ids=True``) cost a read of every object.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

import numpy as np

from chunkref.errors import ChunkrefError, InvalidKeyError, ScanError
from chunkref.manifest.manifest import (
    V2_ARRAY_DOC,
    V2_ATTRS_DOC,
    V2_GROUP_DOC,
    V3_DOC,
    Manifest,
    expected_grid_shape,
)
from chunkref.manifest.table import ChunkTable
from chunkref.reference.trust import record_scanned

__all__ = ["scan_zarr"]

_DOC_NAMES = (V3_DOC, V2_ARRAY_DOC, V2_GROUP_DOC, V2_ATTRS_DOC)


def scan_zarr(
    url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    content_ids: bool | str = False,
    inline_threshold: int = 0,
    **_: Any,
) -> Manifest:
    """A manifest of references to the chunk objects of the Zarr store at ``url``.

    Parameters
    ----------
    url
        Local path or fsspec URL of the store's root (a group or an array).
    storage_options
        fsspec options.
    content_ids
        Record the content id of every chunk object (``True`` for sha2-256, or a hash name
        known to :func:`chunkref.manifest.cid.compute_cid`, e.g. ``"blake3"``).
    inline_threshold
        Chunk objects of at most this many bytes are copied into the manifest.

    Raises
    ------
    ScanError
        When the store cannot be listed or a metadata document is invalid (names the key).
    """
    import fsspec

    from chunkref.zarr.metadata import json_loads

    try:
        fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        listing = fs.find(root, detail=True)
    except Exception as exc:  # fsspec backends raise anything on unreachable stores
        raise ScanError(f"{url}: cannot list the Zarr store ({type(exc).__name__}: {exc})") from exc
    root = root.rstrip("/")
    sizes: dict[str, int] = {}
    for full, info in listing.items():
        rel = full[len(root) :].lstrip("/") if full.startswith(root) else full
        if info.get("type", "file") == "file":
            sizes[rel] = int(info.get("size") or 0)
    docs_by_node: dict[str, dict[str, Any]] = {}
    meta_keys = [k for k in sizes if posixpath.basename(k) in _DOC_NAMES]
    blobs = fs.cat([f"{root}/{k}" for k in meta_keys]) if meta_keys else {}
    for k in meta_keys:
        node = posixpath.dirname(k)
        raw = blobs.get(f"{root}/{k}")
        if isinstance(raw, Exception) or raw is None:
            raise ScanError(f"{url}: metadata document {k!r} cannot be read ({raw})")
        try:
            docs_by_node.setdefault(node, {})[posixpath.basename(k)] = json_loads(raw, what=k)
        except ChunkrefError as exc:
            raise ScanError(f"{url}: metadata document {k!r}: {exc}") from exc
    if not docs_by_node:
        raise ScanError(f"{url}: no zarr.json, .zarray or .zgroup: not a Zarr store")
    m = Manifest()
    base = url.rstrip("/")
    arrays = {n: d for n, d in docs_by_node.items() if V3_DOC in d and d[V3_DOC].get("node_type") == "array" or V2_ARRAY_DOC in d}
    if "" in arrays:
        raise ScanError(f"{url}: the store's root is an array; scan the folder above it (a manifest's root is a group)")
    for node in sorted(n for n in docs_by_node if n not in arrays):
        d = docs_by_node[node]
        if V3_DOC in d:
            m.add_group(node, d[V3_DOC].get("attributes") or {}, zarr_format=3)
        else:
            m.add_group(node, d.get(V2_ATTRS_DOC) or {}, zarr_format=2)
    if "" not in m.nodes:
        m.add_group("", {}, zarr_format=3 if any(V3_DOC in d for d in docs_by_node.values()) else 2)
    hash_name = "sha2-256" if content_ids is True else (content_ids or None)
    for node in sorted(arrays):
        docs = {k: v for k, v in arrays[node].items() if k in (V3_DOC, V2_ARRAY_DOC, V2_ATTRS_DOC)}
        try:
            table = _table(m, fs, root, base, node, docs, sizes, hash_name, inline_threshold)
            m.add_array(node, docs, table)
        except ChunkrefError as exc:
            raise ScanError(f"{url}: array {node!r}: {exc}") from exc
    record_scanned(m)
    return m


def _table(
    m: Manifest,
    fs: Any,
    root: str,
    base: str,
    node: str,
    docs: dict[str, Any],
    sizes: Mapping[str, int],
    hash_name: str | None,
    inline_threshold: int,
) -> ChunkTable:
    from chunkref.zarr.keys import ChunkKeyEncoding, parse_chunk_key_encoding

    grid = expected_grid_shape(docs, node)
    if V3_DOC in docs:
        enc = parse_chunk_key_encoding(docs[V3_DOC].get("chunk_key_encoding", {"name": "default"}))
    else:
        enc = ChunkKeyEncoding("v2", docs[V2_ARRAY_DOC].get("dimension_separator") or ".")
    prefix = f"{node}/" if node else ""
    table = ChunkTable.empty(grid)
    keys, coords = [], []
    for k in sizes:
        if not k.startswith(prefix) or posixpath.basename(k) in _DOC_NAMES:
            continue
        rel = k[len(prefix) :]
        try:
            c = enc.decode(rel, len(grid))
        except InvalidKeyError:
            continue  # a child node's object, or a stray file
        if all(0 <= ci < n for ci, n in zip(c, grid)):
            keys.append(k)
            coords.append(c)
    if not keys:
        return table
    flat = table.flat_indices(np.asarray(coords, np.int64).reshape(len(keys), len(grid)))
    srcs = np.asarray([m.add_source(f"{base}/{k}", size=sizes[k]) for k in keys], np.int64)
    lengths = np.asarray([sizes[k] for k in keys], np.uint64)
    table.set_refs(flat, srcs, np.zeros(len(keys), np.uint64), lengths)
    small = [i for i, k in enumerate(keys) if sizes[k] <= inline_threshold]
    need = sorted(set(small) | (set(range(len(keys))) if hash_name else set()))
    if need:
        blobs = fs.cat([f"{root}/{keys[i]}" for i in need])
        from chunkref.manifest.cid import compute_cid

        for i in need:
            data = blobs[f"{root}/{keys[i]}"]
            if isinstance(data, Exception):
                raise ScanError(f"chunk object {keys[i]!r} cannot be read ({data})")
            coords_i = table.coords_of(int(flat[i]))
            if hash_name:
                table.set_cid(coords_i, compute_cid(bytes(data), hash=hash_name))
            if i in small:
                table.set_inline(coords_i, bytes(data))
    return table
