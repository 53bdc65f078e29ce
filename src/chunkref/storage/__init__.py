"""Stores: synchronous key/value storage with byte ranges (see :mod:`chunkref.storage.base`)."""

from chunkref.storage.base import (
    ByteRange,
    OffsetRequest,
    RangeRequest,
    Store,
    SuffixRequest,
    validate_key,
)
from chunkref.storage.memory import MemoryStore

__all__ = [
    "ByteRange",
    "MemoryStore",
    "OffsetRequest",
    "RangeRequest",
    "Store",
    "SuffixRequest",
    "validate_key",
]
