"""Batched chunk I/O: the one place the engine reads and writes chunks.

A read or write call on an :class:`~chunkref.zarr.array.Array` turns its selection into a list of
per-chunk requests and hands the whole list here.  We then

1. fetch every stored chunk the call needs with **one** ``Store.get_many`` (the store merges and
   parallelises the requests),
2. decode and copy into the output in the shared thread pool, a batch of chunks per task
   (numcodecs and numpy copies release the GIL),
3. for writes, encode everything *before* touching the store, then issue one ``set_many`` and one
   ``delete_many``, so a failing encode leaves nothing half-written.

Codecs that can do partial I/O themselves (sharding) receive the whole request list through
``read_partial_many`` / ``write_partial_many`` so that they can batch their index and inner-chunk
reads across all chunks of the call as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from chunkref._threads import map_batched
from chunkref.errors import ChunkDecodeError, ChunkNotFoundError, ChunkrefError, CodecError
from chunkref.storage.base import RangeRequest, Store
from chunkref.zarr.codecs.base import ChunkSpec

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """One chunk touched by a read or write call.

    ``chunk[chunk_selection]`` corresponds to ``buffer[out_selection]``, where ``buffer`` is the
    output of a read or the (broadcast) value of a write.
    """

    key: str
    coords: tuple[int, ...]
    spec: ChunkSpec
    chunk_selection: Any
    out_selection: Any
    is_complete: bool


@dataclass(frozen=True, slots=True)
class IOOptions:
    """Runtime settings of one call (never persisted)."""

    array_path: str
    write_empty_chunks: bool
    read_missing_chunks: bool
    coalesce_max_gap: int
    coalesce_max_bytes: int


def read_chunks(
    store: Store,
    pipeline: Any,
    requests: Sequence[ChunkRequest],
    out: np.ndarray,
    options: IOOptions,
) -> None:
    """Fill ``out`` with the values of every request (missing chunks give the fill value)."""
    if not requests:
        return
    partial = getattr(pipeline, "partial_codec", None)
    if partial is not None:
        partial.read_partial_many(store, requests, out, options)
        return
    if hasattr(store, "get_many_into") and hasattr(pipeline, "raw_dtype"):
        requests = _read_direct(store, pipeline, requests, out, options)
        if not requests:
            return
    into = hasattr(pipeline, "decode_into")

    def work(batch: list[tuple[int, bytes | None]]) -> None:
        for i, data in batch:
            req = requests[i]
            if data is None:
                if not options.read_missing_chunks:
                    raise ChunkNotFoundError(
                        f"chunk {req.key!r} of array {options.array_path!r} is missing "
                        "(array.read_missing_chunks is False)"
                    )
                out[req.out_selection] = req.spec.fill_value
                continue
            dest = _view(out, req.out_selection) if into else None
            if dest is None:
                out[req.out_selection] = decode_chunk(pipeline, data, req)[req.chunk_selection]
            else:
                decode_chunk_into(pipeline, data, req, dest)

    # One batch of requests; local stores hand values over as they read them (see
    # Store.get_many_apply), so reading and decoding overlap.
    store.get_many_apply([(r.key, None) for r in requests], work, grab=_min_batch(requests))


def _read_direct(
    store: Store, pipeline: Any, requests: Sequence[ChunkRequest], out: np.ndarray, options: IOOptions
) -> Sequence[ChunkRequest]:
    """Read uncompressed chunks straight into ``out``; return the requests left to decode.

    A chunk qualifies when it is stored as raw C-order bytes of the output's dtype
    (``pipeline.raw_dtype``), its selection is one contiguous run of those bytes and the
    output region is one C-contiguous block: then the store reads exactly that byte range into
    the output's memory (``store.get_many_into``; ``os.preadv`` for local sources), the way
    h5py reads contiguous datasets, with no intermediate buffer.  The chunk's stored size is
    still checked against its shape.
    """
    direct: list[tuple[ChunkRequest, RangeRequest | None, np.ndarray, int]] = []
    rest: list[ChunkRequest] = []
    dtypes: dict[tuple[int, ...], np.dtype | None] = {}  # raw dtype per chunk shape
    for req in requests:
        shape = req.spec.shape
        if shape in dtypes:
            dtype = dtypes[shape]
        else:
            dtype = dtypes[shape] = pipeline.raw_dtype(req.spec)
        if dtype is None or dtype != out.dtype:
            rest.append(req)
            continue
        # Cheapest test first: most chunks of an n-d array land in strided output regions.
        dest = _view(out, req.out_selection)
        if dest is None or not dest.flags.c_contiguous:
            rest.append(req)
            continue
        span = contiguous_span(req.chunk_selection, shape)
        if span is None or span[1] == 0 or dest.size != span[1]:
            rest.append(req)
            continue
        nbytes = req.spec.size * dtype.itemsize
        lo = span[0] * dtype.itemsize
        hi = lo + span[1] * dtype.itemsize
        rng = None if (lo, hi) == (0, nbytes) else RangeRequest(lo, hi)
        direct.append((req, rng, dest, nbytes))
    if not direct:
        return requests
    # The store's errors name the chunk key (and, for references, array and source).
    filled = store.get_many_into([(r.key, rng, dest, nbytes) for r, rng, dest, nbytes in direct])
    for (req, _, dest, _), ok in zip(direct, filled):
        if not ok:
            if not options.read_missing_chunks:
                raise ChunkNotFoundError(
                    f"chunk {req.key!r} of array {options.array_path!r} is missing "
                    "(array.read_missing_chunks is False)"
                )
            dest[...] = req.spec.fill_value
    return rest


def contiguous_span(selection: Any, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """``(first element, count)`` when ``selection`` (ints and step-1 slices over an array
    of ``shape``) picks one contiguous run of its C-order elements; else None."""
    sel = selection if isinstance(selection, tuple) else (selection,)
    if len(sel) != len(shape):
        return None
    starts: list[int] = []
    counts: list[int] = []
    for s, n in zip(sel, shape):
        if isinstance(s, (int, np.integer)):
            i = int(s)
            if not 0 <= i < n:
                return None
            starts.append(i)
            counts.append(1)
        elif isinstance(s, slice):
            a, b, step = s.indices(n)
            if step != 1:
                return None
            starts.append(a)
            counts.append(max(0, b - a))
        else:
            return None
    # Contiguous iff every axis after the first one selecting more than one element is whole.
    j = next((k for k, c in enumerate(counts) if c != 1), len(shape))
    if any(counts[k] != shape[k] for k in range(j + 1, len(shape))):
        return None
    first = 0
    for i, n in zip(starts, shape):
        first = first * n + i
    count = 1
    for c in counts:
        count *= c
    return first, count


# A thread-pool task costs ~14 µs: give each task at least this many bytes of chunk data.
_BATCH_BYTES = 256 << 10


def _min_batch(requests: Sequence[ChunkRequest]) -> int:
    nbytes = requests[0].spec.nbytes or 1 << 16
    return max(1, _BATCH_BYTES // max(1, nbytes))


def decode_chunk(pipeline: Any, data: bytes, req: ChunkRequest) -> np.ndarray:
    """Decode one stored chunk, naming its key in any error."""
    try:
        return pipeline.decode(data, req.spec)
    except ChunkrefError as exc:
        if req.key in str(exc):
            raise
        raise type(exc)(f"chunk {req.key!r}: {exc}") from exc
    except Exception as exc:  # codec libraries raise anything (RuntimeError, zlib.error, ...)
        raise ChunkDecodeError(f"chunk {req.key!r} could not be decoded: {type(exc).__name__}: {exc}") from exc


def decode_chunk_into(pipeline: Any, data: bytes, req: ChunkRequest, dest: np.ndarray) -> None:
    """Decode one stored chunk and write its ``chunk_selection`` into ``dest`` (fused where
    the pipeline can), naming its key in any error."""
    try:
        pipeline.decode_into(data, req.spec, dest, req.chunk_selection)
    except ChunkrefError as exc:
        if req.key in str(exc):
            raise
        raise type(exc)(f"chunk {req.key!r}: {exc}") from exc
    except Exception as exc:
        raise ChunkDecodeError(f"chunk {req.key!r} could not be decoded: {type(exc).__name__}: {exc}") from exc


def _view(out: np.ndarray, selection: Any) -> np.ndarray | None:
    """``out[selection]`` as a view when the selection is basic (ints and slices), else None.

    The trailing ``...`` keeps an all-int selection a 0-d view instead of a scalar copy.
    """
    sel = selection if isinstance(selection, tuple) else (selection,)
    for s in sel:
        if not isinstance(s, (int, np.integer, slice)):
            return None
    return out[(*sel, Ellipsis)]


def is_fill(chunk: np.ndarray, fill_value: Any) -> bool:
    """Whether every element of ``chunk`` equals the fill value, bit for bit.

    Comparing raw bits treats NaN == NaN and tells -0.0 from 0.0 (as zarr-python does); for
    fixed-size dtypes it runs as an unsigned-integer comparison, numpy's fastest path.
    """
    if chunk.dtype.hasobject:
        flat = chunk.ravel()
        return all(x == fill_value for x in flat)
    fill = np.asarray(fill_value, dtype=chunk.dtype)
    itemsize = chunk.dtype.itemsize
    uint = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}.get(itemsize)
    c = np.ascontiguousarray(chunk)
    if uint is not None and not chunk.dtype.fields:
        return bool((c.view(uint) == fill.view(uint)).all())
    return c.tobytes() == fill.tobytes() * c.size


def write_chunks(
    store: Store,
    pipeline: Any,
    requests: Sequence[ChunkRequest],
    value: np.ndarray,
    options: IOOptions,
) -> None:
    """Write ``value[out_selection]`` into every requested chunk."""
    if not requests:
        return
    partial = getattr(pipeline, "partial_codec", None)
    if partial is not None:
        partial.write_partial_many(store, requests, value, options)
        return
    # Chunks only partly covered need their current content: fetch all of them in one batch.
    incomplete = [r for r in requests if not r.is_complete]
    existing: dict[str, bytes | None] = {}
    if incomplete:
        blobs = store.get_many([(r.key, None) for r in incomplete])
        existing = {r.key: b for r, b in zip(incomplete, blobs)}

    def work(batch: list[ChunkRequest]) -> list[tuple[str, bytes | None]]:
        results: list[tuple[str, bytes | None]] = []
        for req in batch:
            chunk = new_chunk_content(pipeline, req, value, existing.get(req.key))
            if not options.write_empty_chunks and is_fill(chunk, req.spec.fill_value):
                results.append((req.key, None))
                continue
            try:
                encoded = pipeline.encode(chunk, req.spec)
            except ChunkrefError as exc:
                if req.key in str(exc):
                    raise
                raise type(exc)(f"chunk {req.key!r}: {exc}") from exc
            except Exception as exc:
                raise CodecError(f"chunk {req.key!r} could not be encoded: {type(exc).__name__}: {exc}") from exc
            results.append((req.key, encoded))
        return results

    results = [item for part in map_batched(work, list(requests), min_batch=_min_batch(requests)) for item in part]
    to_set = [(k, v) for k, v in results if v is not None]
    to_delete = [k for k, v in results if v is None]
    if to_set:
        store.set_many(to_set)
    if to_delete:
        store.delete_many(to_delete)


def new_chunk_content(pipeline: Any, req: ChunkRequest, value: np.ndarray, old: bytes | None) -> np.ndarray:
    """The full (declared-shape) content of a chunk after writing ``value`` into it."""
    spec = req.spec
    if req.is_complete or old is None:
        chunk = np.empty(spec.shape, dtype=spec.dtype)
        if not req.is_complete or _overhangs(req):
            chunk[...] = spec.fill_value
    else:
        chunk = np.array(decode_chunk(pipeline, old, req), copy=True)
        if not chunk.flags.writeable:
            chunk = chunk.copy()
    chunk[req.chunk_selection] = value[req.out_selection]
    return chunk


def _overhangs(req: ChunkRequest) -> bool:
    """Whether a complete write leaves part of the declared chunk (past the array edge) unset."""
    sel = req.chunk_selection
    if not isinstance(sel, tuple):
        return True
    for s, n in zip(sel, req.spec.shape):
        if not (isinstance(s, slice) and (s.start or 0) == 0 and (s.stop is None or s.stop >= n) and (s.step in (None, 1))):
            return True
    return False
