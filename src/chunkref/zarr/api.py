"""Top-level functions with zarr-python 3's shape and defaults.

``import chunkref as zarr`` works for the calls both libraries share: :func:`open`,
:func:`open_array`, :func:`open_group`, :func:`create_array`, :func:`create_group`,
:func:`consolidate_metadata`, :func:`copy_store`, :func:`from_array`.

``store`` may be a chunkref :class:`~chunkref.storage.base.Store`, a local path or fsspec URL
(``"data.zarr"``, ``"s3://bucket/x.zarr"``, a ``.zip`` file), a dict (kept in memory), or None
(a new in-memory store).

Modes, as in zarr-python: ``"r"`` read only, must exist; ``"r+"`` read/write, must exist;
``"a"`` read/write, created if missing; ``"w"`` create, replacing what is there; ``"w-"``
create, failing if something exists.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from chunkref.config import config as global_config
from chunkref.errors import (
    ContainsArrayError,
    ContainsGroupError,
    InvalidArgumentError,
    NodeNotFoundError,
    ReadOnlyError,
)
from chunkref.storage.base import Store
from chunkref.storage.memory import MemoryStore
from chunkref.zarr import nodes
from chunkref.zarr.array import Array
from chunkref.zarr.group import Group
from chunkref.zarr.metadata import DEFAULT_FILL, GroupMetadata, make_array_metadata
from chunkref.zarr.node import resolve_array_config

_MODES = ("r", "r+", "a", "w", "w-")
StoreLike = Store | str | os.PathLike | MutableMapping | None


def as_store(store: StoreLike, *, mode: str = "a", storage_options: Mapping[str, Any] | None = None) -> Store:
    """Turn a store-like value into a :class:`Store` (read-only for mode ``"r"``)."""
    if mode not in _MODES:
        raise InvalidArgumentError(f"mode must be one of {_MODES}, got {mode!r}")
    read_only = mode == "r"
    if isinstance(store, Store):
        if read_only and not store.read_only:
            return store.with_read_only(True)
        return store
    if store is None:
        return MemoryStore(read_only=read_only)
    if isinstance(store, MutableMapping):
        return MemoryStore(store, read_only=read_only)
    if isinstance(store, (str, os.PathLike)):
        from chunkref.storage import store_from_url

        return store_from_url(os.fspath(store), storage_options=storage_options, mode=mode)
    raise InvalidArgumentError(f"cannot use {type(store).__name__} as a store")


def _node_or_none(store: Store, path: str, zarr_format: int | None) -> Any:
    try:
        return nodes.read_node(store, path, zarr_format=zarr_format)
    except NodeNotFoundError:
        return None


# -- opening ---------------------------------------------------------------------------------


def open(  # noqa: A001 - the zarr-python name
    store: StoreLike = None,
    *,
    mode: str = "a",
    path: str | None = None,
    zarr_format: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Array | Group:
    """Open the array or group at ``path`` (v2 or v3, found at run time).

    With a write mode and nothing there, creates an array when ``shape`` is given, else a group.
    """
    path = (path or "").strip("/")
    st = as_store(store, mode=mode, storage_options=storage_options)
    if mode in ("w", "w-") or (mode == "a" and _node_or_none(st, path, zarr_format) is None):
        if "shape" in kwargs:
            return create_array(st, name=path, zarr_format=zarr_format, overwrite=mode == "w", config=config, **kwargs)
        return open_group(st, mode=mode, path=path, zarr_format=zarr_format, config=config, **kwargs)
    meta = nodes.read_node(st, path, zarr_format=zarr_format)
    if meta.node_type == "array":
        return Array(st, path, meta, config=config)
    return Group(st, path, meta, config=config)


def open_array(
    store: StoreLike = None,
    *,
    mode: str = "a",
    path: str = "",
    zarr_format: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Array:
    """Open an existing array; with mode ``"a"``/``"w"``/``"w-"`` and ``shape``, create it."""
    path = (path or "").strip("/")
    st = as_store(store, mode=mode, storage_options=storage_options)
    meta = None if mode in ("w", "w-") else _node_or_none(st, path, zarr_format)
    if meta is None:
        if mode in ("r", "r+") or "shape" not in kwargs:
            raise NodeNotFoundError(f"no array at {path or '/'!r} in {st!r}")
        return create_array(st, name=path, zarr_format=zarr_format, overwrite=mode == "w", config=config, **kwargs)
    if meta.node_type != "array":
        raise ContainsGroupError(f"{path or '/'!r} in {st!r} is a group, not an array")
    return Array(st, path, meta, config=config)


def open_group(
    store: StoreLike = None,
    *,
    mode: str = "a",
    path: str | None = None,
    zarr_format: int | None = None,
    use_consolidated: bool | None = None,
    attributes: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Group:
    """Open (or, with a write mode, create) a group.

    ``config`` holds array settings (``write_empty_chunks``, ``read_missing_chunks``, ``order``)
    that every array opened or created through the group inherits.  ``use_consolidated``:
    None uses consolidated metadata when present, True requires it, False ignores it.
    """
    path = (path or "").strip("/")
    st = as_store(store, mode=mode, storage_options=storage_options)
    if mode in ("w", "w-"):
        return create_group(st, path=path, zarr_format=zarr_format, overwrite=mode == "w", attributes=attributes, config=config)
    meta = _node_or_none(st, path, zarr_format)
    if meta is None:
        if mode in ("r", "r+"):
            raise NodeNotFoundError(f"no group at {path or '/'!r} in {st!r}")
        return create_group(st, path=path, zarr_format=zarr_format, attributes=attributes, config=config)
    if meta.node_type != "group":
        raise ContainsArrayError(f"{path or '/'!r} in {st!r} is an array, not a group")
    if use_consolidated is False and getattr(meta, "consolidated", None) is not None:
        meta = meta.evolve(consolidated=None)
    elif use_consolidated is True and getattr(meta, "consolidated", None) is None:
        raise NodeNotFoundError(f"group {path or '/'!r} in {st!r} has no consolidated metadata")
    return Group(st, path, meta, config=config)


# -- creating --------------------------------------------------------------------------------


def _prepare_target(store: Store, path: str, *, overwrite: bool, zarr_format: int) -> None:
    """Refuse to clobber an existing node unless ``overwrite``; create missing parent groups."""
    if store.read_only:
        raise ReadOnlyError(f"cannot create a node at {path or '/'!r}: {store!r} is read-only")
    existing = _node_or_none(store, path, None)
    if existing is not None:
        if not overwrite:
            cls = ContainsArrayError if existing.node_type == "array" else ContainsGroupError
            article = "an" if existing.node_type == "array" else "a"
            raise cls(
                f"{article} {existing.node_type} already exists at {path or '/'!r} in {store!r} "
                "(pass overwrite=True, or open with mode 'w' to replace it or 'a' to update it)"
            )
        nodes.delete_node(store, path)
    nodes.ensure_parent_groups(store, path, zarr_format)


def create_group(
    store: StoreLike = None,
    *,
    path: str | None = None,
    zarr_format: int | None = None,
    overwrite: bool = False,
    attributes: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Group:
    """Create a group (and missing parent groups)."""
    path = (path or "").strip("/")
    st = as_store(store, mode="a", storage_options=storage_options)
    fmt = int(zarr_format or global_config.get("default_zarr_format"))
    _prepare_target(st, path, overwrite=overwrite, zarr_format=fmt)
    meta = GroupMetadata(zarr_format=fmt, attributes=dict(attributes or {}))
    nodes.write_group_metadata(st, path, meta)
    return Group(st, path, meta, config=config)


def guess_chunks(shape: tuple[int, ...], itemsize: int, target_bytes: int = 1 << 20) -> tuple[int, ...]:
    """A chunk shape of roughly ``target_bytes`` (between a quarter and the whole of it).

    Halves the largest axis until the chunk fits, which keeps chunks compact (close to cubic)
    and aligned to powers of two of the array's extent.
    """
    chunks = [max(1, int(n)) for n in shape]
    itemsize = max(1, itemsize)
    while math.prod(chunks) * itemsize > target_bytes and any(c > 1 for c in chunks):
        i = int(np.argmax(chunks))
        chunks[i] = -(-chunks[i] // 2)
    return tuple(chunks)


def create_array(
    store: StoreLike = None,
    *,
    name: str | None = None,
    shape: Any,
    dtype: Any = "float64",
    chunks: Any = "auto",
    shards: Any = None,
    fill_value: Any = None,
    compressors: Any = "auto",
    filters: Any = "auto",
    serializer: Any = "auto",
    order: str | None = None,
    zarr_format: int | None = None,
    attributes: Mapping[str, Any] | None = None,
    chunk_key_encoding: Any = None,
    dimension_names: Any = None,
    overwrite: bool = False,
    config: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    data: Any = None,
) -> Array:
    """Create an array, with zarr-python 3.1.6's defaults (v3, zstd level 0 compression).

    Parameters
    ----------
    chunks
        ``"auto"``, an int, a tuple of ints (regular grid), or per-axis tuples of edge lengths
        such as ``((10, 20, 5), (8, 8))`` for a rectilinear grid (variable chunk sizes, v3).
        With ``shards``, the inner chunk shape.
    shards
        Shard shape: stores ``sharding_indexed`` shards of ``chunks``-shaped inner chunks.
    compressors
        ``"auto"`` (zstd level 0), None or ``()`` for none, or codecs / codec JSON.
    config
        Runtime settings (``write_empty_chunks``, ``read_missing_chunks``, ``order``); never
        written to the store.
    data
        Optional initial content (written after creation).
    """
    path = (name or "").strip("/")
    st = as_store(store, mode="a", storage_options=storage_options)
    fmt = int(zarr_format or global_config.get("default_zarr_format"))
    shape_t = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    itemsize = _itemsize_hint(dtype)
    settings = resolve_array_config(config)
    if order is not None:
        settings["order"] = order
    if isinstance(chunks, str):
        if chunks != "auto":
            raise InvalidArgumentError(f"chunks must be 'auto', an int or a tuple, got {chunks!r}")
        chunks = guess_chunks(shape_t, itemsize)
        if shards is not None:
            shards_t = tuple(int(s) for s in shards)
            chunks = tuple(math.gcd(c, s) if s % c else c for c, s in zip(chunks, shards_t))
    meta = make_array_metadata(
        shape=shape_t,
        dtype=dtype,
        chunks=chunks,
        shards=shards,
        # None means "the default for the dtype" as in zarr-python (never v2's null).
        fill_value=DEFAULT_FILL if fill_value is None else fill_value,
        zarr_format=fmt,
        compressors=compressors,
        filters=filters,
        serializer=serializer,
        dimension_names=dimension_names,
        attributes=dict(attributes or {}),
        chunk_key_encoding=chunk_key_encoding,
        order=order or "C",
    )
    _prepare_target(st, path, overwrite=overwrite, zarr_format=fmt)
    nodes.write_array_metadata(st, path, meta)
    arr = Array(st, path, meta, config=settings)
    if data is not None:
        arr[...] = data
    return arr


def _itemsize_hint(dtype: Any) -> int:
    """Bytes per element for sizing automatic chunks (variable-length types count as 16)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return 16
    return 16 if dt.hasobject or dt.itemsize == 0 else dt.itemsize


def from_array(
    store: StoreLike = None,
    *,
    data: Any,
    name: str | None = None,
    chunks: Any = "keep",
    shards: Any = "keep",
    zarr_format: int | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> Array:
    """Create an array holding a copy of ``data`` (numpy, array-like, or another Array).

    ``chunks="keep"`` / ``shards="keep"`` reuse the source array's chunking when it has one.
    """
    if isinstance(data, Array):
        if chunks == "keep":
            chunks = data.chunks if data.chunk_grid.is_regular or data.shards else data.chunk_sizes
        if shards == "keep":
            shards = data.shards
        kwargs.setdefault("fill_value", data.fill_value)
        kwargs.setdefault("attributes", dict(data.attrs))
        kwargs.setdefault("dimension_names", data.dimension_names)
        arr_data: Any = data
        dtype = data.dtype
        shape = data.shape
    else:
        arr_data = np.asarray(data)
        dtype = arr_data.dtype
        shape = arr_data.shape
        if chunks == "keep":
            chunks = getattr(data, "chunks", None) if _is_chunk_tuple(getattr(data, "chunks", None)) else "auto"
        if shards == "keep":
            shards = None
    arr = create_array(
        store, name=name, shape=shape, dtype=kwargs.pop("dtype", dtype), chunks=chunks, shards=shards,
        zarr_format=zarr_format, overwrite=overwrite, **kwargs,
    )
    if isinstance(arr_data, Array):
        # Copy region by region along the source's chunk rows to bound memory.
        offsets = arr_data.chunk_grid.offsets[0] if arr_data.ndim else None
        if offsets is None or len(offsets) < 2:
            arr[...] = arr_data[...]
        else:
            for k in range(len(offsets) - 1):
                sl = slice(int(offsets[k]), int(min(offsets[k + 1], arr_data.shape[0])))
                arr[sl] = arr_data[sl]
    else:
        arr[...] = arr_data
    return arr


def _is_chunk_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(c, (int, tuple)) for c in value)


def array(data: Any, **kwargs: Any) -> Array:
    """An array holding ``data``, in memory unless ``store=`` is given (like ``zarr.array``)."""
    return from_array(kwargs.pop("store", None), data=data, **kwargs)


# -- hierarchy-wide operations ----------------------------------------------------------------


def consolidate_metadata(store: StoreLike, path: str | None = None, zarr_format: int | None = None) -> Group:
    """Gather the metadata of every node below ``path`` into its group document.

    v3: inline ``consolidated_metadata`` in the group's ``zarr.json``; v2: a ``.zmetadata`` key
    (zarr-python's convention).  Opening the group afterwards costs O(1) reads.
    """
    path = (path or "").strip("/")
    st = as_store(store, mode="r+")
    meta = nodes.read_node(st, path, zarr_format=zarr_format)
    if meta.node_type != "group":
        raise ContainsArrayError(f"{path or '/'!r} is an array; consolidate a group")
    new_meta = nodes.consolidate(st, path, meta)
    return Group(st, path, new_meta)


def copy_store(
    source: StoreLike,
    dest: StoreLike,
    source_path: str = "",
    dest_path: str = "",
    *,
    excludes: Any = None,
    if_exists: str = "raise",
) -> tuple[int, int]:
    """Copy every key below ``source_path`` to ``dest_path``, bytes unchanged.

    Returns ``(keys copied, bytes copied)``.  ``if_exists`` is ``"raise"``, ``"replace"`` or
    ``"skip"``; ``excludes`` is a regex (or list of them) of keys to leave out.
    """
    import re

    if if_exists not in ("raise", "replace", "skip"):
        raise InvalidArgumentError(f"if_exists must be 'raise', 'replace' or 'skip', got {if_exists!r}")
    src = as_store(source, mode="r")
    dst = as_store(dest, mode="a")
    patterns = [re.compile(p) for p in ([excludes] if isinstance(excludes, str) else list(excludes or []))]
    sp = source_path.strip("/")
    dp = dest_path.strip("/")
    keys = [k for k in (src.list_prefix(sp + "/") if sp else src.list()) if not any(p.search(k) for p in patterns)]
    n_keys = n_bytes = 0
    batch = 256
    for i in range(0, len(keys), batch):
        part = keys[i : i + batch]
        targets = [(dp + "/" if dp else "") + (k[len(sp) + 1 :] if sp else k) for k in part]
        if if_exists != "replace":
            present = [dst.exists(t) for t in targets]
            if if_exists == "raise" and any(present):
                clash = targets[present.index(True)]
                raise ContainsArrayError(f"copy_store: key {clash!r} already exists in the destination")
            keep = [j for j, p in enumerate(present) if not p]
            part = [part[j] for j in keep]
            targets = [targets[j] for j in keep]
        values = src.get_many([(k, None) for k in part])
        items = [(t, v) for t, v in zip(targets, values) if v is not None]
        dst.set_many(items)
        n_keys += len(items)
        n_bytes += sum(len(v) for _, v in items)
    return n_keys, n_bytes
