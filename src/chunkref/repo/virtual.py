"""Reading virtual chunks (byte ranges of outside files) through the reference store.

A repository may point chunks at ranges of HDF5/NetCDF files it does not own (imported
manifests).  Those reads go through :class:`chunkref.reference.ReferenceStore`, so they get the
same source authorization (an explicit allow-list of URL prefixes: a repository is data someone
else may have written), batched and coalesced range reads, retries, length checks and content-id
verification.  Each batch becomes a tiny one-dimensional manifest whose chunk ``i`` is request
``i``; errors are re-raised naming the repository key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from chunkref.errors import ChunkrefError
from chunkref.manifest.manifest import Manifest
from chunkref.manifest.table import CID_WIDTH, ChunkTable
from chunkref.storage.base import ByteRange

__all__ = ["VirtualRequest", "read_virtual"]

# (repository key, url, offset, length, binary cid or None, byte range)
VirtualRequest = tuple[str, str, int, int, "bytes | None", "ByteRange | None"]

_ARRAY = "v"


def _manifest(requests: Sequence[VirtualRequest]) -> Manifest:
    n = len(requests)
    m = Manifest()
    src = np.zeros(n, np.int32)
    off = np.zeros(n, np.uint64)
    length = np.zeros(n, np.uint64)
    cid = None
    for i, (_, url, o, ln, c, _) in enumerate(requests):
        src[i] = m.add_source(url)
        off[i] = o
        length[i] = ln
        if c is not None:
            if cid is None:
                cid = np.zeros((n, max(CID_WIDTH, len(c))), np.uint8)
            cid[i, : len(c)] = np.frombuffer(c, np.uint8)
    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [n],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
    }
    m.add_array(_ARRAY, {"zarr.json": doc}, ChunkTable((n,), src, off, length, cid=cid))
    return m


def read_virtual(
    requests: Sequence[VirtualRequest],
    *,
    allow: Sequence[str],
    storage_options: Mapping[str, Any] | None,
    verify: bool,
) -> list[bytes | None]:
    """Bytes of virtual chunks (aligned with ``requests``).

    Raises
    ------
    SourceNotAllowedError
        A source is outside the allow-list (before any byte is read).
    SourceUnavailableError, ShortReadError, HashMismatchError
        As :class:`~chunkref.reference.ReferenceStore`, naming the repository key.
    """
    if not requests:
        return []
    from chunkref.reference.store import ReferenceStore

    keys = [r[0] for r in requests]
    try:
        rs = ReferenceStore(_manifest(requests), allow=list(allow), storage_options=storage_options, verify=verify)
        return rs.get_many([(f"{_ARRAY}/c/{i}", r[5]) for i, r in enumerate(requests)])
    except ChunkrefError as exc:
        msg = str(exc)
        for i in reversed(range(len(keys))):  # 'v/c/10' before 'v/c/1'
            tag = f"{_ARRAY}/c/{i}"
            if tag in msg:
                msg = msg.replace(f"'{tag}'", repr(keys[i])).replace(tag, keys[i])
        if len(keys) == 1 or msg == str(exc):
            msg = f"virtual chunk {keys[0]!r}{' (and others)' if len(keys) > 1 else ''}: {msg}"
        raise type(exc)(msg) from exc
