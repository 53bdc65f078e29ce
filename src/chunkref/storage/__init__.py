"""Stores: synchronous key/value storage with byte ranges (see :mod:`chunkref.storage.base`)."""

from __future__ import annotations

import os
from typing import Any

from chunkref.errors import InvalidArgumentError
from chunkref.storage.base import (
    ByteRange,
    OffsetRequest,
    RangeRequest,
    Store,
    SuffixRequest,
    validate_key,
)
from chunkref.storage.fsspec import FsspecStore
from chunkref.storage.local import LocalStore
from chunkref.storage.memory import MemoryStore
from chunkref.storage.ranges import coalesce_ranges, slice_groups
from chunkref.storage.wrappers import CountingStore, FaultStore, LatencyStore, WrapperStore
from chunkref.storage.zip import ZipStore

__all__ = [
    "ByteRange",
    "CountingStore",
    "FaultStore",
    "FsspecStore",
    "LatencyStore",
    "LocalStore",
    "MemoryStore",
    "OffsetRequest",
    "RangeRequest",
    "Store",
    "SuffixRequest",
    "WrapperStore",
    "ZipStore",
    "coalesce_ranges",
    "slice_groups",
    "store_from_url",
    "validate_key",
]

_MODES = ("r", "r+", "a", "w", "w-", "x")
_ZIP_MODES = {"r": "r", "r+": "a", "a": "a", "w": "w", "w-": "x", "x": "x"}


def store_from_url(
    url: str | os.PathLike[str] | Store,
    storage_options: dict[str, Any] | None = None,
    mode: str = "r",
) -> Store:
    """Open the store a URL or path names.

    * a :class:`Store` is returned as is (with ``read_only`` matching ``mode``);
    * a local path or ``file://`` URL ending in ``.zip`` -> :class:`ZipStore`;
    * any other local path or ``file://`` URL -> :class:`LocalStore`;
    * a remote URL ending in ``.zip`` (read only) -> :class:`FsspecStore` over fsspec's zip file
      system (``zip::<url>``);
    * any other URL (``s3://``, ``memory://``, ``https://``, chained ``a::b://``) ->
      :class:`FsspecStore`.

    Parameters
    ----------
    url
        Path, URL or store.
    storage_options
        File system options for remote URLs (credentials, endpoints).
    mode
        ``"r"`` read-only; ``"r+"``, ``"a"``, ``"w"``, ``"w-"``/``"x"`` writable.  For zip
        archives they map to zip modes ``r``, ``a``, ``a``, ``w``, ``x``.  (Nothing is deleted
        here: clearing for ``"w"`` is the caller's decision.)
    """
    if mode not in _MODES:
        raise InvalidArgumentError(f"store mode must be one of {_MODES}, got {mode!r}")
    read_only = mode == "r"
    if isinstance(url, Store):
        return url if url.read_only == read_only else url.with_read_only(read_only)
    if not isinstance(url, (str, os.PathLike)):
        raise InvalidArgumentError(f"a store URL is a str or path, got {type(url).__name__}")
    text = os.fspath(url)
    local = "://" not in text and "::" not in text
    if text.startswith("file://"):
        local = True
        text = text[len("file://") :]
    if local:
        if storage_options:
            raise InvalidArgumentError(f"storage_options given for the local path {text!r}")
        if text.rstrip("/").endswith(".zip") and not os.path.isdir(text):
            return ZipStore(text, _ZIP_MODES[mode])
        return LocalStore(text, read_only=read_only)
    if text.rstrip("/").endswith(".zip") and "::" not in text:
        if not read_only:
            raise InvalidArgumentError(f"remote zip archives are read-only; cannot open {text!r} with mode {mode!r}")
        protocol = text.split("://", 1)[0]
        opts = {protocol: storage_options} if storage_options else None
        return FsspecStore(f"zip::{text}", storage_options=opts, read_only=True)
    return FsspecStore(text, storage_options=storage_options, read_only=read_only)
