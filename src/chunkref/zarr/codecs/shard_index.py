"""The binary index of a ``sharding_indexed`` shard: encoding, validation, caching.

A shard's index is a uint64 array of shape ``chunks_per_shard + (2,)`` in C order over the
inner grid; entry ``i`` holds the *absolute* byte offset and the length of inner chunk ``i``
inside the shard object, or ``(2^64-1, 2^64-1)`` for an inner chunk that is not stored (it reads
as the fill value).  The index is encoded through the fixed-size ``index_codecs`` chain
(normally ``bytes`` little-endian + ``crc32c``) and sits at the start or the end of the shard.

Everything here works on the whole index at once with numpy: an index is decoded with one
``np.frombuffer`` (plus one CRC-32C over its bytes) into an ``(n, 2)`` array, and validated
with a handful of vectorised comparisons and one sort (for overlaps); no Python runs per inner
chunk.  :class:`ShardIndexCache` keeps decoded indexes of one open codec, so a warm partial read
needs no index request.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import crc32c as _crc32c
import numpy as np

from chunkref.config import config
from chunkref.errors import ChunkDecodeError, ChunkrefError, CodecError, ShardError
from chunkref.zarr.codecs.base import ChunkSpec, Codec

__all__ = [
    "EMPTY",
    "IndexFormat",
    "ShardIndexCache",
    "empty_index",
    "inner_coords",
    "validate_index",
]

#: Offset and length of an inner chunk that is not stored.
EMPTY = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_EMPTY_INT = (1 << 64) - 1
# Offsets and lengths beyond this are absurd for any real object (8 EiB); bounding them keeps
# every later sum inside int64.
_MAX_SANE = np.uint64(1 << 62)


def empty_index(n: int) -> np.ndarray:
    """An ``(n, 2)`` uint64 index with every inner chunk empty."""
    return np.full((n, 2), EMPTY, dtype=np.uint64)


def inner_coords(flat: int, chunks_per_shard: Sequence[int]) -> tuple[int, ...]:
    """Inner-grid coordinates of the inner chunk at C-order position ``flat``."""
    if not chunks_per_shard:
        return ()
    return tuple(int(c) for c in np.unravel_index(int(flat), tuple(chunks_per_shard)))


class IndexFormat:
    """How the index of a shard with ``chunks_per_shard`` inner chunks is encoded.

    Parameters
    ----------
    codecs
        The parsed ``index_codecs`` chain (not yet evolved).
    chunks_per_shard
        Inner chunks per shard along each axis.

    Attributes
    ----------
    nbytes
        Encoded size of the index in bytes (through the chain's ``encoded_size``).

    Raises
    ------
    CodecError
        If the chain is not fixed-size (a compressor) or not a valid chain.
    """

    def __init__(self, codecs: Sequence[Codec], chunks_per_shard: Sequence[int]) -> None:
        self.chunks_per_shard = tuple(int(c) for c in chunks_per_shard)
        self.n = math.prod(self.chunks_per_shard)
        spec = ChunkSpec(self.chunks_per_shard + (2,), np.dtype(np.uint64), EMPTY)
        self.spec = spec
        evolved: list[Codec] = []
        size = 16 * self.n
        cur = spec
        for codec in codecs:
            codec = codec.evolve(cur)
            evolved.append(codec)
            nxt = codec.encoded_size(size, cur)
            if nxt is None:
                raise CodecError(
                    f"codec 'sharding_indexed': index codec {codec.name!r} has no fixed encoded size "
                    "(index_codecs must not compress)"
                )
            size = int(nxt)
            if codec.kind == "array_array":
                cur = codec.resolve(cur)
        kinds = [c.kind for c in evolved]
        if kinds.count("array_bytes") != 1:
            raise CodecError(
                f"codec 'sharding_indexed': index_codecs need exactly one array->bytes codec, got {[c.name for c in evolved]}"
            )
        self.codecs = tuple(evolved)
        self.nbytes = size
        # Fast path: ``bytes`` (either endian) optionally followed by ``crc32c`` -- the layouts
        # every known writer uses.  Decoding is then one frombuffer (+ one CRC), no pipeline.
        names = [c.name for c in evolved]
        self._fast_dtype: np.dtype | None = None
        self._fast_crc = False
        if names in (["bytes"], ["bytes", "crc32c"]):
            endian = (evolved[0].configuration() or {}).get("endian", "little")
            self._fast_dtype = np.dtype("<u8" if endian == "little" else ">u8")
            self._fast_crc = len(names) == 2
        self._pipeline: Any = None

    def _generic(self) -> Any:
        if self._pipeline is None:
            from chunkref.zarr.codecs.pipeline import CodecPipeline

            self._pipeline = CodecPipeline.from_v3(
                [c.to_json() for c in self.codecs], np.dtype(np.uint64), self.spec.shape
            )
        return self._pipeline

    def decode(self, data: Any, key: str) -> np.ndarray:
        """Decode index bytes into a read-only ``(n, 2)`` uint64 array.

        Raises
        ------
        ShardError
            If the bytes have the wrong size or fail the checksum (names ``key``).
        """
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        if len(view) != self.nbytes:
            raise ShardError(
                f"shard {key!r}: index is {len(view)} bytes, expected {self.nbytes} "
                f"(shard truncated or not a shard of {self.chunks_per_shard} inner chunks)"
            )
        if self._fast_dtype is not None:
            body = view
            if self._fast_crc:
                body = view[: self.nbytes - 4]
                stored = int.from_bytes(view[self.nbytes - 4 :], "little")
                actual = _crc32c.crc32c(body)
                if stored != actual:
                    raise ShardError(
                        f"shard {key!r}: index checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
                    )
            arr = np.frombuffer(body, dtype=self._fast_dtype).reshape(self.n, 2)
            if self._fast_dtype != _NATIVE_U8:
                arr = arr.astype(np.uint64)
            return arr
        try:
            arr = np.asarray(self._generic().decode(bytes(view), self.spec))
        except ChunkrefError as exc:
            raise ShardError(f"shard {key!r}: index could not be decoded: {exc}") from exc
        except Exception as exc:  # codec libraries raise anything
            raise ShardError(f"shard {key!r}: index could not be decoded: {type(exc).__name__}: {exc}") from exc
        return np.ascontiguousarray(arr, dtype=np.uint64).reshape(self.n, 2)

    def encode(self, index: np.ndarray) -> bytes:
        """Encode an ``(n, 2)`` uint64 index."""
        if self._fast_dtype is not None:
            body = np.ascontiguousarray(index, dtype=self._fast_dtype).tobytes()
            if self._fast_crc:
                body += _crc32c.crc32c(body).to_bytes(4, "little")
            return body
        out = self._generic().encode(np.asarray(index, dtype=np.uint64).reshape(self.spec.shape), self.spec)
        return bytes(memoryview(out).cast("B"))


_NATIVE_U8 = np.dtype(np.uint64)


def validate_index(
    index: np.ndarray,
    key: str,
    chunks_per_shard: Sequence[int],
    *,
    data_start: int,
    data_stop: int | None,
) -> np.ndarray:
    """Check a decoded index; return the boolean mask of stored (non-empty) inner chunks.

    Parameters
    ----------
    index
        ``(n, 2)`` uint64 offsets and lengths.
    key
        The shard key (for messages).
    chunks_per_shard
        Inner grid shape (to name inner chunks by coordinates).
    data_start, data_stop
        Where inner-chunk bytes may lie inside the shard object: after an index at the start,
        before an index at the end.  ``data_stop`` is None when the object's size is unknown
        (a partial read); reading past the end is then caught by the store's length check.

    Raises
    ------
    ShardError
        Naming the shard key and the inner chunk, for half-empty entries, zero or absurd
        lengths, chunks overlapping the index or running past the data area, and partially
        overlapping chunks (two entries that describe exactly the same bytes are allowed: a
        writer may store identical chunks once).
    """
    off = index[:, 0]
    nb = index[:, 1]
    e_off = off == EMPTY
    e_nb = nb == EMPTY
    stored = ~(e_off & e_nb)
    bad = (e_off != e_nb) | (stored & ((nb == 0) | (nb > _MAX_SANE) | (off > _MAX_SANE)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ShardError(
            f"shard {key!r}: inner chunk {inner_coords(i, chunks_per_shard)} has an invalid index entry "
            f"(offset {int(off[i])}, length {int(nb[i])})"
        )
    if not stored.any():
        return stored
    so = off[stored].astype(np.int64)
    sn = nb[stored].astype(np.int64)
    end = so + sn
    low = so < data_start
    high = end > data_stop if data_stop is not None else np.zeros(len(so), dtype=bool)
    if low.any() or high.any():
        j = int(np.flatnonzero(low | high)[0])
        i = int(np.flatnonzero(stored)[j])
        where = f"before byte {data_start} (the index)" if low[j] else f"past byte {data_stop}, the end of the shard's data"
        raise ShardError(
            f"shard {key!r}: inner chunk {inner_coords(i, chunks_per_shard)} (offset {int(so[j])}, "
            f"length {int(sn[j])}) lies {where}"
        )
    if len(so) > 1:
        order = np.lexsort((sn, so))
        a, b = so[order], end[order]
        # Neighbours in offset order overlap when the next starts before the previous ends,
        # unless both are the very same range.
        same = (a[1:] == a[:-1]) & (b[1:] == b[:-1])
        reach = np.maximum.accumulate(b)
        overlap = (a[1:] < reach[:-1]) & ~same
        if overlap.any():
            j = int(np.flatnonzero(overlap)[0])
            idx = np.flatnonzero(stored)
            first = int(idx[order[j]])
            second = int(idx[order[j + 1]])
            raise ShardError(
                f"shard {key!r}: inner chunks {inner_coords(first, chunks_per_shard)} and "
                f"{inner_coords(second, chunks_per_shard)} overlap (bytes [{int(a[j])}, {int(b[j])}) and "
                f"[{int(a[j + 1])}, {int(b[j + 1])}))"
            )
    return stored


class ShardIndexCache:
    """A bounded, thread-safe LRU of decoded shard indexes, keyed by store and shard key.

    Bounded by entry count (setting ``array.shard_index_cache_size``) and by the bytes the
    cached arrays hold (setting ``array.shard_index_cache_bytes``), both read on every insert so
    changes apply at once.  A size of 0 disables caching.  Entries keep a reference to their
    store, so a store's ``id`` cannot be reused by another store while its entries live.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: OrderedDict[tuple[int, str], tuple[Any, np.ndarray]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        """Bytes held by cached index arrays."""
        return self._bytes

    def get(self, store: Any, key: str) -> np.ndarray | None:
        """The cached index of ``key`` in ``store``, or None."""
        k = (id(store), key)
        with self._lock:
            hit = self._data.get(k)
            if hit is None or hit[0] is not store:
                return None
            self._data.move_to_end(k)
            return hit[1]

    def put(self, store: Any, key: str, index: np.ndarray) -> None:
        """Remember ``index`` (made read-only) for ``key`` in ``store``."""
        max_entries = int(config.get("array.shard_index_cache_size"))
        max_bytes = int(config.get("array.shard_index_cache_bytes"))
        if max_entries <= 0 or index.nbytes > max_bytes:
            return
        index = index if not index.flags.writeable else index.copy()
        index.flags.writeable = False
        k = (id(store), key)
        with self._lock:
            old = self._data.pop(k, None)
            if old is not None:
                self._bytes -= old[1].nbytes
            self._data[k] = (store, index)
            self._bytes += index.nbytes
            while self._data and (len(self._data) > max_entries or self._bytes > max_bytes):
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped.nbytes

    def discard(self, store: Any, keys: Sequence[str]) -> None:
        """Forget the indexes of ``keys`` in ``store``."""
        sid = id(store)
        with self._lock:
            for key in keys:
                old = self._data.pop((sid, key), None)
                if old is not None:
                    self._bytes -= old[1].nbytes

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()
            self._bytes = 0


def decode_error(key: str, inner: tuple[int, ...], exc: BaseException) -> ShardError:
    """A :class:`ShardError` naming the shard and inner chunk for a failed inner decode."""
    if isinstance(exc, ShardError) and key in str(exc):
        return exc
    what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (ChunkDecodeError, CodecError)) else str(exc)
    return ShardError(f"shard {key!r}: inner chunk {inner} could not be decoded: {what}")
