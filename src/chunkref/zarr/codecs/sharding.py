"""The ``sharding_indexed`` codec (ZEP 2): many inner chunks in one stored object.

A shard is the outer chunk of a sharded array; its bytes are the encoded inner chunks (through
the inner ``codecs`` chain) plus an index of absolute ``(offset, length)`` pairs, at the start or
the end of the object (see :mod:`.shard_index`).  The codec is the array->bytes codec of the
outer chain, and besides whole-shard :meth:`ShardingCodec.encode` / :meth:`~ShardingCodec.decode`
it does batched partial I/O for the engine (:mod:`chunkref.zarr.chunkio` hands it every shard a
read or write call touches):

Reads (:meth:`ShardingCodec.read_partial_many`)
    1. one ``get_many`` with the whole object of every shard the call covers completely and the
       index (a suffix or ``[0, size)`` range) of every shard it touches partly and whose index
       is not cached;
    2. one ``get_many`` with every needed inner chunk of every partial shard, neighbouring byte
       ranges merged (``coalesce_max_gap`` / ``coalesce_max_bytes``);
    3. decoding in the shared thread pool, a batch of inner chunks per task, each copied
       straight into the output.
    Indexes are cached per codec instance (:class:`.shard_index.ShardIndexCache`), so a warm
    read of one inner chunk is one request.  Only the index says where a chunk is: writers may
    order chunks freely (zarr-python: Morton order) and leave gaps.  On local stores, large
    whole-shard reads are fetched in waves by a helper thread while the pool decodes, and holes
    of more than 64 KiB are not read to merge ranges.

Writes (:meth:`ShardingCodec.write_partial_many`)
    Shards covered completely are encoded from the new values without reading anything.  Shards
    covered partly are fetched whole in one ``get_many``, their touched inner chunks re-encoded
    (decoding only those not completely overwritten), untouched ones copied as stored bytes, and
    every shard is rewritten once (C-order, compacted).  Inner chunks equal to the fill value are
    left out unless ``write_empty_chunks``; a shard left with none is deleted.  Large writes go
    out in waves: a helper thread writes one while the pool encodes the next.  Inside
    ``Array.batch()`` shards stay in the write buffer as inner-chunk dicts until the block ends.

Selections are mapped onto inner chunks by :mod:`.shard_layout`; inner chunks are coded by
:mod:`.shard_kernels` (a zstd kernel with reusable contexts for the usual ``bytes`` + ``zstd``
chain, ``np.frombuffer`` views for other ``bytes`` + compressor chains, the inner
:class:`CodecPipeline` for the rest: nested sharding, vlen strings).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from chunkref._threads import map_batched, max_workers
from chunkref.config import config
from chunkref.errors import (
    ChunkDecodeError,
    ChunkNotFoundError,
    ChunkrefError,
    CodecError,
    MetadataError,
    ShardError,
    ShortReadError,
)
from chunkref.storage.base import RangeRequest
from chunkref.storage.fsspec import FsspecStore
from chunkref.storage.local import LocalStore
from chunkref.storage.memory import MemoryStore
from chunkref.storage.ranges import coalesce_ranges
from chunkref.storage.wrappers import CountingStore
from chunkref.zarr.codecs.base import (
    ArrayBytesCodec,
    ChunkSpec,
    Codec,
    check_configuration,
)
from chunkref.zarr.codecs.registry import codec_from_json, register_codec
from chunkref.zarr.codecs.shard_index import (
    IndexFormat,
    ShardIndexCache,
    decode_error,
    inner_coords,
    validate_index,
)
from chunkref.zarr.codecs.shard_kernels import InnerCodec, address, take_arena
from chunkref.zarr.codecs.shard_layout import (
    ReadGroup,
    ShardLayout,
    as_tuple,
    fancy_group,
    is_basic,
    normalize_selection,
    plan_selection,
    project_basic,
    view_selection,
)
from chunkref.zarr.grid import ChunkGrid
from chunkref.zarr.write_buffer import BufferedStore

__all__ = ["ShardingCodec"]

_LOCATIONS = ("start", "end")
_DEFAULT_INDEX_CODECS = ({"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"})
# Decoded bytes per thread-pool task at least: a task costs ~14 µs, about what decoding
# 128 KiB costs (2 chunks of 64 KiB, 16 of 8 KiB).
_TASK_BYTES = 128 << 10


def _min_batch(chunk_nbytes: int) -> int:
    return max(1, _TASK_BYTES // max(1, chunk_nbytes))


def _positive_ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in value
    ):
        raise CodecError(f"codec 'sharding_indexed': {what} must be a list of positive integers, got {value!r}")
    return tuple(int(v) for v in value)


def _parse_chain(value: Any, what: str) -> tuple[Codec, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise CodecError(f"codec 'sharding_indexed': {what} must be a non-empty list of codecs, got {value!r}")
    codecs = tuple(codec_from_json(c) for c in value)
    kinds = [c.kind for c in codecs]
    n_ab = kinds.count("array_bytes")
    if n_ab != 1:
        raise CodecError(
            f"codec 'sharding_indexed': {what} need exactly one array->bytes codec, got {[c.name for c in codecs]}"
        )
    i = kinds.index("array_bytes")
    if any(k != "array_array" for k in kinds[:i]) or any(k != "bytes_bytes" for k in kinds[i + 1 :]):
        raise CodecError(
            f"codec 'sharding_indexed': {what} must be array->array*, array->bytes, bytes->bytes*; "
            f"got {[c.name for c in codecs]}"
        )
    return codecs


def _blen(x: Any) -> int:
    """Byte length of a buffer (an ndarray's ``len`` would be its first dimension)."""
    return x.nbytes if isinstance(x, (np.ndarray, memoryview)) else len(x)


# --- the codec -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    """What an evolved codec knows about its array: dtype, inner chain, caches."""

    dtype: np.dtype
    fill_value: Any
    inner: InnerCodec
    cache: ShardIndexCache
    layouts: dict[tuple[int, ...], ShardLayout]
    lock: threading.Lock


@dataclass(frozen=True, eq=True, repr=False)
class ShardingCodec(ArrayBytesCodec):
    """``{"name": "sharding_indexed", "configuration": {"chunk_shape", "codecs", "index_codecs",
    "index_location"}}``.

    Parameters
    ----------
    chunk_shape
        Inner chunk shape; must divide every shard's shape.
    codecs
        Inner codec chain (parsed).
    index_codecs
        Index codec chain (parsed); must be fixed-size.
    index_location
        ``"start"`` or ``"end"`` (default when absent in JSON).
    """

    name: ClassVar[str] = "sharding_indexed"
    chunk_shape: tuple[int, ...]
    codecs: tuple[Codec, ...]
    index_codecs: tuple[Codec, ...]
    index_location: str = "end"
    _state: Any = field(default=None, init=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.index_location not in _LOCATIONS:
            raise CodecError(
                f"codec 'sharding_indexed': index_location must be 'start' or 'end', got {self.index_location!r}"
            )
        object.__setattr__(self, "chunk_shape", _positive_ints(self.chunk_shape, "chunk_shape"))

    # -- JSON ----------------------------------------------------------------------------------

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> ShardingCodec:
        conf = check_configuration(
            cls.name, configuration, ("chunk_shape", "codecs", "index_codecs", "index_location"), ("chunk_shape", "codecs")
        )
        index_codecs = conf.get("index_codecs", list(_DEFAULT_INDEX_CODECS))
        codec = cls(
            chunk_shape=_positive_ints(conf["chunk_shape"], "chunk_shape"),
            codecs=_parse_chain(conf["codecs"], "codecs"),
            index_codecs=_parse_chain(index_codecs, "index_codecs"),
            index_location=conf.get("index_location", "end"),
        )
        # The index must be fixed-size; find out now rather than on the first read.
        IndexFormat(codec.index_codecs, (1,) * len(codec.chunk_shape))
        return codec

    def configuration(self) -> dict[str, Any]:
        return {
            "chunk_shape": list(self.chunk_shape),
            "codecs": [c.to_json() for c in self.codecs],
            "index_codecs": [c.to_json() for c in self.index_codecs],
            "index_location": self.index_location,
        }

    def __repr__(self) -> str:
        return (
            f"ShardingCodec(chunk_shape={self.chunk_shape}, codecs={list(self.codecs)}, "
            f"index_codecs={list(self.index_codecs)}, index_location={self.index_location!r})"
        )

    # -- evolution -----------------------------------------------------------------------------

    def evolve(self, spec: ChunkSpec) -> ShardingCodec:
        """A codec bound to the array's dtype, with its own inner pipeline and index cache."""
        if len(spec.shape) != len(self.chunk_shape):
            raise MetadataError(
                f"codec 'sharding_indexed': inner chunk shape {self.chunk_shape} does not match the rank of "
                f"the shard shape {tuple(spec.shape)}"
            )
        state = self._state
        if state is not None and state.dtype == spec.dtype and _same_fill(state.fill_value, spec.fill_value):
            self._layout(tuple(spec.shape))
            return self
        codec = ShardingCodec(self.chunk_shape, self.codecs, self.index_codecs, self.index_location)
        codec._bind(spec.dtype, spec.fill_value)
        codec._layout(tuple(spec.shape))
        return codec

    def _bind(self, dtype: np.dtype, fill_value: Any) -> _State:
        old = self._state
        inner_spec = ChunkSpec(self.chunk_shape, dtype, fill_value)
        # A re-bind (the pipeline evolved us without a fill value; the first I/O call brings it)
        # keeps the index cache and the layouts: neither depends on the fill value.
        state = _State(
            dtype,
            fill_value,
            InnerCodec(self.codecs, inner_spec),
            old.cache if old is not None else ShardIndexCache(),
            old.layouts if old is not None and old.dtype == dtype else {},
            threading.Lock(),
        )
        object.__setattr__(self, "_state", state)
        return state

    def _state_for(self, spec: ChunkSpec) -> _State:
        state = self._state
        if state is None or state.dtype != spec.dtype or not _same_fill(state.fill_value, spec.fill_value):
            state = self._bind(spec.dtype, spec.fill_value)
        return state

    def _layout(self, shard_shape: tuple[int, ...]) -> ShardLayout:
        state = self._state
        layout = state.layouts.get(shard_shape) if state is not None else None
        if layout is None:
            layout = ShardLayout(shard_shape, self.chunk_shape, self.index_codecs, self.index_location == "start")
            if state is not None:
                with state.lock:
                    state.layouts[shard_shape] = layout
        return layout

    def check_grid(self, grid: ChunkGrid, array_array_codecs: Sequence[Codec] = ()) -> None:
        """Check that every shard of ``grid`` (regular or rectilinear) holds whole inner chunks.

        ``array_array_codecs`` are the codecs before this one in the chain: a ``transpose``
        there permutes the axes the inner chunk shape refers to.

        Raises
        ------
        MetadataError
            Naming the axis and the offending shard edge.
        """
        if grid.ndim != len(self.chunk_shape):
            raise MetadataError(
                f"codec 'sharding_indexed': inner chunk shape {self.chunk_shape} does not match the rank of "
                f"the array ({grid.ndim})"
            )
        # Which array axis each axis of the shard (as this codec sees it) comes from: resolve a
        # probe whose extents name the axes.
        probe = ChunkSpec(tuple(1000 + a for a in range(grid.ndim)), np.dtype("u1"), 0)
        for c in array_array_codecs:
            probe = c.resolve(probe)
        source = [n - 1000 if 1000 <= n < 1000 + grid.ndim else a for a, n in enumerate(probe.shape)]
        edges_by_axis = grid.edge_lengths
        for axis, c in enumerate(self.chunk_shape):
            src = source[axis]
            edges = np.asarray(edges_by_axis[src])
            bad = np.flatnonzero(edges % c)
            if bad.size:
                k = int(bad[0])
                raise MetadataError(
                    f"codec 'sharding_indexed': shard {k} along axis {src} has length {int(edges[k])}, not a "
                    f"multiple of the inner chunk length {c}"
                )

    @property
    def index_cache(self) -> ShardIndexCache | None:
        """The index cache of this (evolved) codec instance, or None before it is bound."""
        return self._state.cache if self._state is not None else None

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        return None

    # -- whole shards ----------------------------------------------------------------------------

    def decode(self, data: Any, spec: ChunkSpec) -> np.ndarray:
        """Decode a whole shard into an array of ``spec.shape``."""
        state = self._state_for(spec)
        layout = self._layout(tuple(spec.shape))
        out = np.empty(spec.shape, dtype=spec.dtype)
        key = "<shard>"
        index, stored, view = layout.split(data, key)
        post: list[Any] = []
        group = plan_selection(post, layout, key, out, (slice(None),) * len(spec.shape), ())
        if group is not None:
            group.attach_whole(index, stored, view, state.inner.zstd is None)
            self._run_decode(state, [group], _fill_of(spec, state))
        return out

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> bytes | None:
        """Encode a whole shard (C-order compacted; inner chunks equal to the fill value are left
        out unless ``array.write_empty_chunks``).  Returns the index alone when every inner
        chunk is empty."""
        state = self._state_for(spec)
        layout = self._layout(tuple(spec.shape))
        array = np.asarray(array)
        if array.shape != tuple(spec.shape):
            raise CodecError(f"codec 'sharding_indexed': array of shape {array.shape} is not the shard shape {spec.shape}")
        write_empty = bool(config.get("array.write_empty_chunks"))
        items = [(0, i, ("region", array, s)) for i, s in enumerate(layout.full_slices())]
        encoded, arenas = self._run_encode(state, items, write_empty, ["<shard>"])
        chunks: list[Any] = [None] * layout.n
        for i, b in encoded.get(0, {}).items():
            chunks[i] = b
        try:
            shard = self._assemble(layout, chunks)
        finally:
            for a in arenas:
                a.give_back()
        if shard is None:
            # An empty shard still has a valid encoding: the index of empty chunks.
            from chunkref.zarr.codecs.shard_index import empty_index

            return layout.index.encode(empty_index(layout.n))
        return shard

    # -- planning helpers ------------------------------------------------------------------------

    # -- reads ------------------------------------------------------------------------------------

    def read_partial_many(self, store: Any, requests: Sequence[Any], out: np.ndarray, options: Any) -> None:
        """Fill ``out`` for every shard request of one read call (see the module docstring)."""
        if not requests:
            return
        try:
            self._read(store, requests, out, options, use_cache=True)
        except _StaleIndex:
            self._read(store, requests, out, options, use_cache=False)
        except (ShardError, ChunkDecodeError, ShortReadError) as exc:
            if not getattr(exc, "_from_cache", False):
                raise
            # A cached index may be stale (the shard was rewritten elsewhere): try once afresh.
            self._read(store, requests, out, options, use_cache=False)

    def _read(self, store: Any, requests: Sequence[Any], out: np.ndarray, options: Any, use_cache: bool) -> None:
        state = self._state_for(requests[0].spec)
        cache = state.cache
        layouts = state.layouts
        generic = state.inner.zstd is None
        fill = _fill_of(requests[0].spec, state)
        groups: list[ReadGroup] = []
        post: list[Any] = []
        wholes: list[tuple[Any, ShardLayout]] = []
        fetch: list[tuple[str, Any]] = []
        fetch_req: list[tuple[Any, ShardLayout]] = []
        partial: list[tuple[Any, ShardLayout, np.ndarray]] = []
        from_cache = False
        for req in requests:
            shape = req.spec.shape
            layout = layouts.get(shape) or self._layout(tuple(shape))
            if req.is_complete:
                wholes.append((req, layout))  # the whole object in one request, index included
                continue
            index = cache.get(store, req.key) if use_cache else None
            if index is not None:
                partial.append((req, layout, index))
                from_cache = True
            else:
                fetch.append((req.key, layout.index_request()))
                fetch_req.append((req, layout))
        # Many whole shards from a local store: fetch them a wave at a time on a helper thread
        # while the pool decodes the previous wave.  Remote stores get every request in one
        # batch (their latency, not the copying, is what costs).
        waves = _read_waves(wholes) if len(wholes) > 1 and _is_local(store) else [wholes]
        first = waves[0]
        blobs = self._get(store, fetch + [(req.key, None) for req, _ in first], options) if fetch or first else []
        for (req, layout), blob in zip(fetch_req, blobs):
            if blob is None:
                self._missing(req, out, options, fill)
                cache.discard(store, [req.key])
                continue
            index = layout.index.decode(blob, req.key)
            validate_index(index, req.key, layout.cps, data_start=layout.index_nbytes if layout.at_start else 0, data_stop=None)
            cache.put(store, req.key, index)
            partial.append((req, layout, index))
        self._plan_whole(store, first, blobs[len(fetch_req) :], groups, post, out, options, fill, generic)
        if partial:
            self._fetch_inner(store, partial, groups, post, out, options, from_cache, generic)
        if len(waves) == 1:
            self._run_decode(state, groups, fill)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1, thread_name_prefix="chunkref-shard-read") as reader:
                def fetch_wave(wave: list[tuple[Any, ShardLayout]]) -> list[Any]:
                    return self._get(store, [(req.key, None) for req, _ in wave], options)

                pending = reader.submit(fetch_wave, waves[1])
                self._run_decode(state, groups, fill)
                for k in range(1, len(waves)):
                    blobs = pending.result()
                    if k + 1 < len(waves):
                        pending = reader.submit(fetch_wave, waves[k + 1])
                    groups = []
                    self._plan_whole(store, waves[k], blobs, groups, post, out, options, fill, generic)
                    del blobs
                    self._run_decode(state, groups, fill)
        for fn in post:
            fn()

    @staticmethod
    def _get(store: Any, fetch: list[tuple[str, Any]], options: Any) -> list[Any]:
        if not fetch:
            return []
        try:
            return store.get_many(fetch)
        except ShortReadError as exc:
            raise ShardError(f"array {options.array_path!r}: a shard is shorter than its index: {exc}") from exc

    @staticmethod
    def _missing(req: Any, out: np.ndarray, options: Any, fill: Any) -> None:
        """A shard that does not exist reads as the fill value (unless that is forbidden)."""
        if not options.read_missing_chunks:
            raise ChunkNotFoundError(
                f"chunk {req.key!r} of array {options.array_path!r} is missing (array.read_missing_chunks is False)"
            )
        out[req.out_selection] = fill

    def _plan_whole(
        self,
        store: Any,
        wholes: list[tuple[Any, ShardLayout]],
        blobs: list[Any],
        groups: list[ReadGroup],
        post: list[Any],
        out: np.ndarray,
        options: Any,
        fill: Any,
        generic: bool,
    ) -> None:
        """Groups for shards fetched whole: the index comes from the object itself."""
        cache = self._state.cache
        for (req, layout), blob in zip(wholes, blobs):
            if blob is None:
                self._missing(req, out, options, fill)
                continue
            index, stored, view = layout.split(blob, req.key)
            cache.put(store, req.key, index)
            group = plan_selection(post, layout, req.key, out, req.chunk_selection, req.out_selection)
            if group is not None:
                group.attach_whole(index, stored, view, generic)
                groups.append(group)

    def _fetch_inner(
        self,
        store: Any,
        partial: list[Any],
        groups: list[ReadGroup],
        post: list[Any],
        out: np.ndarray,
        options: Any,
        from_cache: bool,
        generic: bool,
    ) -> None:
        """Plan, fetch (one merged batch) and attach the needed inner chunks of partly read shards."""
        # (shard no, start, stop, group, position in group) for every stored inner chunk needed.
        ranges: list[tuple[int, int, int, ReadGroup, int]] = []
        for sno, (req, layout, index) in enumerate(partial):
            group = plan_selection(post, layout, req.key, out, req.chunk_selection, req.out_selection)
            if group is None:
                continue
            groups.append(group)
            group.from_cache = from_cache
            n = len(group.flats)
            group.ptrs = [0] * n
            group.lens = [0] * n
            if generic:
                group.views = [None] * n
            ent = index[group.flats].tolist()
            for j, (o, nb) in enumerate(ent):
                if o == _EMPTY_INT and nb == _EMPTY_INT:
                    continue  # not stored: length 0 reads as the fill value
                ranges.append((sno, o, o + nb, group, j))
        if not ranges:
            return
        merged, assign = _coalesce(ranges, _max_gap(store, options.coalesce_max_gap), options.coalesce_max_bytes)
        keys = [partial[g[0]][0].key for g in merged]
        try:
            blobs = store.get_many([(k, RangeRequest(g[1], g[2])) for k, g in zip(keys, merged)])
        except ShortReadError as exc:
            err = _past_end_error(store, partial, ranges, exc)
            err._from_cache = from_cache  # type: ignore[attr-defined]
            raise err from exc
        if any(b is None for b in blobs):
            missing = sorted({k for k, b in zip(keys, blobs) if b is None})
            if from_cache:
                self._state.cache.discard(store, missing)
                raise _StaleIndex()
            raise ShardError(f"array {options.array_path!r}: shards {missing} vanished during the read")
        views = [b if isinstance(b, memoryview) else memoryview(b) for b in blobs]
        bases = [address(v) for v in views]
        keep = []
        for (_, a, b, group, j), g in zip(ranges, assign):
            rel = a - merged[g][1]
            group.ptrs[j] = bases[g] + rel
            group.lens[j] = b - a
            if generic:
                group.views[j] = views[g][rel : rel + b - a]
        keep.extend(views)
        for group in groups:
            if group.keep is None:
                group.keep = keep

    def _run_decode(self, state: _State, groups: list[ReadGroup], fill: Any) -> None:
        """Decode every group's inner chunks in the thread pool, batches cut across groups."""
        total = sum(len(g.flats) for g in groups)
        if not total:
            return
        inner = state.inner

        def work(batches: list[list[tuple[ReadGroup, int, int]]]) -> None:
            for segments in batches:
                for group, lo, hi in segments:
                    inner.decode_segment(group, lo, hi, fill)

        min_batch = _min_batch(inner.nbytes)
        if total < 2 * min_batch:
            work([[(g, 0, len(g.flats)) for g in groups]])  # too little to spread over threads
            return
        nb = max(1, min(2 * max_workers(), total // min_batch))
        bounds = [total * i // nb for i in range(nb + 1)]
        batches: list[list[tuple[ReadGroup, int, int]]] = [[] for _ in range(nb)]
        pos = 0
        b = 0
        for group in groups:
            n = len(group.flats)
            lo = 0
            while lo < n:
                while bounds[b + 1] <= pos + lo:
                    b += 1
                hi = min(n, bounds[b + 1] - pos)
                batches[b].append((group, lo, hi))
                lo = hi
            pos += n
        map_batched(work, batches, min_batch=1, max_batches=nb)

    # -- writes -----------------------------------------------------------------------------------

    def write_partial_many(self, store: Any, requests: Sequence[Any], value: np.ndarray, options: Any) -> None:
        """Write ``value[out_selection]`` into every requested shard, each shard once."""
        if not requests:
            return
        state = self._state_for(requests[0].spec)
        cache = state.cache
        keys = [r.key for r in requests]
        cache.discard(store, keys)
        # Shards written completely through a basic selection are built from the new values
        # alone; every other shard is read first (fancy selections that happen to be complete
        # are rare enough not to deserve their own path).
        direct = [r.is_complete and is_basic(normalize_selection(r.chunk_selection, len(r.spec.shape))) and is_basic(as_tuple(r.out_selection)) for r in requests]
        partial = [i for i, d in enumerate(direct) if not d]
        # Inside ``Array.batch()`` the store is a write buffer that keeps shards as inner-chunk
        # dicts: read them from there and hand the new dicts back (assembled once, at the end).
        buffer = getattr(store, "shard_buffer", None)
        fetch = [i for i in partial if buffer is None or not buffer.has_shard(requests[i].key)]
        old: dict[int, Any] = {}
        if fetch:
            try:
                blobs = store.get_many([(requests[i].key, None) for i in fetch])
            except ShortReadError as exc:  # pragma: no cover - whole-object reads cannot be short
                raise ShardError(f"array {options.array_path!r}: {exc}") from exc
            old = dict(zip(fetch, blobs))
        items: list[Any] = []
        carried: list[dict[int, Any]] = []
        layouts: list[ShardLayout] = []
        post_items: list[Any] = []
        for sno, req in enumerate(requests):
            layout = self._layout(tuple(req.spec.shape))
            layouts.append(layout)
            keep: dict[int, Any] = {}
            carried.append(keep)
            sel = normalize_selection(req.chunk_selection, len(layout.shard_shape))
            if direct[sno]:
                self._plan_complete_write(items, sno, layout, sel, value, req.out_selection, req.key)
                continue
            if sno in old:
                blob = old[sno]
                if blob is not None:
                    index, stored, view = layout.split(blob, req.key)
                    offs = index[:, 0].tolist()
                    lens = index[:, 1].tolist()
                    for i in np.flatnonzero(stored).tolist():
                        keep[i] = view[offs[i] : offs[i] + lens[i]]
            elif buffer is not None:
                keep.update(buffer.shard_chunks(req.key))
            self._plan_partial_write(items, post_items, sno, layout, sel, value, req.out_selection, keep, req.key)
        if post_items:
            # Fancy selections: decode the touched chunks into bounding boxes, assign, then the
            # boxes' regions are encoded like any other item.
            self._run_decode(state, [g for g, _ in post_items], _fill_of(requests[0].spec, state))
            for _, assign in post_items:
                assign()
        write_empty = options.write_empty_chunks
        if buffer is not None:
            parts, arenas = self._run_encode(state, items, write_empty, keys)
            try:
                for sno, req in enumerate(requests):
                    merged = _merge_parts(carried[sno], parts.get(sno, {}))
                    # The buffer outlives this call: its chunks must not point into arenas.
                    owned = {i: b if isinstance(b, bytes) else bytes(b) for i, b in merged.items()}
                    buffer.put_shard(req.key, owned, self._assembler(layouts[sno]))
            finally:
                for a in arenas:
                    a.give_back()
            return

        def flush(wave: list[int], parts: dict[int, dict[int, Any]], arenas: list[Any]) -> list[tuple[str, np.ndarray]]:
            """Assemble the wave's shards, write them, delete the empty ones."""
            to_set: list[tuple[str, bytes]] = []
            to_delete: list[str] = []
            new_indexes: list[tuple[str, np.ndarray]] = []
            try:
                for sno in wave:
                    layout = layouts[sno]
                    chunks: list[Any] = [None] * layout.n
                    for i, b in _merge_parts(carried[sno], parts.get(sno, {})).items():
                        chunks[i] = b
                    shard = self._assemble(layout, chunks, new_indexes, keys[sno])
                    if shard is None:
                        to_delete.append(keys[sno])
                    else:
                        to_set.append((keys[sno], shard))
            finally:
                for a in arenas:
                    a.give_back()
            if to_set:
                store.set_many(to_set)
            if to_delete:
                store.delete_many(to_delete)
            return new_indexes

        waves = _waves(items, len(requests), max(1, state.inner.nbytes))
        if len(waves) == 1:
            parts, arenas = self._run_encode(state, items, write_empty, keys)
            written = flush(waves[0][0], parts, arenas)
        else:
            # Large writes: while one wave of shards is assembled and written by a helper
            # thread, the pool encodes the next (the file writes release the GIL).  An encode
            # error stops the call; shards of earlier waves are written by then.
            from concurrent.futures import ThreadPoolExecutor

            written = []
            with ThreadPoolExecutor(1, thread_name_prefix="chunkref-shard-write") as writer:
                pending = None
                try:
                    for wave, lo, hi in waves:
                        parts, arenas = self._run_encode(state, items[lo:hi], write_empty, keys)
                        if pending is not None:
                            written.extend(pending.result())
                        pending = writer.submit(flush, wave, parts, arenas)
                finally:
                    if pending is not None:
                        written.extend(pending.result())
        for key, index in written:
            cache.put(store, key, index)

    def _assembler(self, layout: ShardLayout) -> Any:
        """``chunks dict -> shard bytes or None`` for a write buffer to call once at the end."""

        def assemble(chunks: Mapping[int, Any]) -> bytes | None:
            ordered: list[Any] = [None] * layout.n
            for i, b in chunks.items():
                ordered[i] = b
            return self._assemble(layout, ordered)

        return assemble

    def _plan_complete_write(
        self, items: list[Any], sno: int, layout: ShardLayout, sel: tuple[Any, ...], value: np.ndarray, out_sel: Any, key: str
    ) -> None:
        """Items for a shard whose whole data region is written: no read."""
        src = value[view_selection(out_sel)]
        # The data region of the shard (it ends early at the array's edge): the stops of the
        # step-1 slices a complete selection consists of.
        data_shape = []
        for s, n in zip(sel, layout.shard_shape):
            if isinstance(s, slice):
                start, stop, _ = s.indices(n)
                data_shape.append(stop)
            else:
                data_shape.append(1)
        if src.ndim != len(data_shape):
            src = src.reshape(tuple(data_shape))
        if tuple(data_shape) == layout.shard_shape:
            # The common case: the views are cut by the workers (a view costs a microsecond).
            items.extend([(sno, i, ("region", src, region)) for i, region in enumerate(layout.full_slices())])
            return
        for i, region in enumerate(layout.full_slices()):
            clipped = tuple(slice(r.start, min(r.stop, d)) for r, d in zip(region, data_shape))
            if any(c.stop <= c.start for c in clipped):
                items.append((sno, i, ("fill",)))
                continue
            inner = tuple(slice(0, c.stop - c.start) for c in clipped)
            if all(c.stop - c.start == r.stop - r.start for c, r in zip(clipped, region)):
                items.append((sno, i, ("full", src[region])))
            else:
                items.append((sno, i, ("merge", None, inner, src[clipped], key, layout)))

    def _plan_partial_write(
        self,
        items: list[Any],
        post_items: list[Any],
        sno: int,
        layout: ShardLayout,
        sel: tuple[Any, ...],
        value: np.ndarray,
        out_sel: Any,
        keep: dict[int, Any],
        key: str,
    ) -> None:
        """Items for a shard written in part: touched inner chunks only (``keep`` loses them)."""
        if is_basic(sel) and is_basic(as_tuple(out_sel)):
            src = value[view_selection(out_sel)]
            for flat, csel, osel, complete in project_basic(sel, layout):
                part = src[osel + (Ellipsis,)]
                old = keep.pop(flat, None)
                if complete:
                    items.append((sno, flat, ("full", part.reshape(layout.chunk_shape))))
                else:
                    items.append((sno, flat, ("merge", old, csel, part, key, layout)))
            return
        fancy = fancy_group(layout, key, value.dtype, sel)
        if fancy is None:
            return
        group, shifted = fancy
        bbox = group.dst
        n = len(group.flats)
        group.ptrs = [0] * n
        group.lens = [0] * n
        group.views = [None] * n
        for j, (flat, region) in enumerate(zip(group.flats, group.osels)):
            old = keep.pop(flat, None)
            if old is not None:
                group.views[j] = old
                group.ptrs[j] = address(old)
                group.lens[j] = len(old)
            items.append((sno, flat, ("full", bbox[region])))

        def assign(_b: np.ndarray = bbox, _s: tuple = shifted, _v: np.ndarray = value, _o: Any = out_sel) -> None:
            _b[_s] = _v[_o]

        post_items.append((group, assign))

    def _run_encode(
        self, state: _State, items: list[Any], write_empty: bool, keys: Sequence[str]
    ) -> tuple[dict[int, dict[int, Any]], list[Any]]:
        """Encode write items: ``({shard no: {flat: bytes-like or None}}, arenas)``.  The
        bytes may be views into the arenas, which the caller gives back once it has assembled
        the shards."""
        if not items:
            return {}, []
        inner = state.inner
        fill = _fill(state)
        from chunkref.zarr.chunkio import is_fill

        # Most chunks differ from the fill value in their first element: check that bit
        # pattern first, the whole chunk only when it matches.
        probe_dtype = state.dtype if inner.fast else None
        first_bits: Any = None
        if probe_dtype is not None and not probe_dtype.fields and probe_dtype.itemsize in (1, 2, 4, 8):
            uint = np.dtype(f"u{probe_dtype.itemsize}")
            stored = inner.stored_dtype
            first_bits = (uint, np.asarray(fill, dtype=stored).reshape(1).view(uint)[0])

        arenas: list[Any] = []
        arena_lock = threading.Lock()

        def work(batch: list[Any]) -> list[tuple[int, int, Any]]:
            res = []
            arena = None
            if inner.uses_arena:
                arena = take_arena(len(batch) * inner.bound)
                with arena_lock:
                    arenas.append(arena)
            for sno, flat, src in batch:
                kind = src[0]
                if kind == "fill":
                    chunk = np.full(inner.spec.shape, fill, dtype=state.dtype)
                elif kind == "region":
                    chunk = src[1][src[2]]
                elif kind == "full":
                    chunk = src[1]
                else:
                    old, isel, part = src[1], src[2], src[3]
                    if old is not None:
                        try:
                            chunk = np.array(inner.decode(old), copy=True)
                        except Exception as exc:
                            layout = src[5]
                            raise decode_error(keys[sno], inner_coords(flat, layout.cps), exc) from exc
                    else:
                        chunk = np.full(inner.spec.shape, fill, dtype=state.dtype)
                    # part[()] for a 0-d part: an object array would otherwise store the 0-d
                    # array itself as the element (a single vlen string written into a shard).
                    chunk[isel] = part[()] if part.ndim == 0 else part
                # Laid out as stored (the fill check compares bits, so byte order and axis
                # order do not matter).
                prepared = inner.prepare(chunk)
                if (
                    not write_empty
                    and (first_bits is None or prepared.reshape(-1)[:1].view(first_bits[0])[0] == first_bits[1])
                    and is_fill(prepared, fill)
                ):
                    res.append((sno, flat, None))
                    continue
                try:
                    encoded = inner.encode(prepared, arena)
                except ChunkrefError:
                    raise
                except Exception as exc:
                    raise CodecError(
                        f"shard {keys[sno]!r}: inner chunk {flat} (C-order position) could not be encoded: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                res.append((sno, flat, encoded))
            return res

        out: dict[int, dict[int, Any]] = {}
        # Batches of at most ~8 MiB of output each: arenas stay small enough to pool.
        nb = max(1, -(-len(items) * max(1, inner.nbytes) // (8 << 20)))
        try:
            parts = map_batched(work, items, min_batch=_min_batch(inner.nbytes), max_batches=max(nb, 2 * max_workers()))
        except BaseException:
            for a in arenas:
                a.give_back()
            raise
        for part in parts:
            for sno, flat, enc in part:
                out.setdefault(sno, {})[flat] = enc
        return out, arenas

    def _assemble(
        self, layout: ShardLayout, chunks: list[Any], new_indexes: list[Any] | None = None, key: str | None = None
    ) -> bytes | None:
        """Lay out a shard: chunks in C order, compacted, index at start or end; None if empty."""
        from chunkref.zarr.codecs.shard_index import empty_index

        n = layout.n
        lens = np.fromiter((0 if c is None else _blen(c) for c in chunks), dtype=np.int64, count=n)
        present = lens > 0
        if not present.any():
            return None
        base = layout.index_nbytes if layout.at_start else 0
        ends = np.cumsum(lens)
        index = empty_index(n)
        index[present, 0] = (base + ends - lens)[present]
        index[present, 1] = lens[present]
        idx = layout.index.encode(index)
        body = [c for c in chunks if c is not None and _blen(c)]
        if layout.at_start:
            shard = b"".join([idx, *body])
        else:
            shard = b"".join([*body, idx])
        if new_indexes is not None and key is not None:
            new_indexes.append((key, index))
        return shard


class _StaleIndex(Exception):
    """A cached index pointed at a shard that no longer exists (internal; triggers a re-read)."""


_EMPTY_INT = (1 << 64) - 1


def _past_end_error(store: Any, partial: list[Any], ranges: list[tuple[int, int, int, int, int]], exc: Exception) -> ShardError:
    """Name the shard and inner chunk that a short ranged read ran past (error path only)."""
    sizes: dict[int, int | None] = {}
    for sno, a, b, group, j in ranges:
        req, layout = partial[sno][0], partial[sno][1]
        flat = group.flats[j]
        if sno not in sizes:
            sizes[sno] = store.getsize(req.key)
        size = sizes[sno]
        if size is not None and b > size - (0 if layout.at_start else layout.index_nbytes):
            return ShardError(
                f"shard {req.key!r}: inner chunk {inner_coords(flat, layout.cps)} (offset {a}, length {b - a}) "
                f"lies past the end of the shard's data ({size} bytes in all)"
            )
    return ShardError(f"an inner chunk lies past the end of its shard: {exc}")


def _fill_of(spec: ChunkSpec, state: _State) -> Any:
    return spec.fill_value if spec.fill_value is not None else _fill(state)


def _same_fill(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if a is None or b is None:
        return False
    try:
        return bool(np.asarray(a).tobytes() == np.asarray(b, dtype=np.asarray(a).dtype).tobytes())
    except (TypeError, ValueError):
        return bool(a == b)


def _fill(state: _State) -> Any:
    if state.fill_value is None:
        return np.zeros((), dtype=state.dtype)[()] if not state.dtype.hasobject else ""
    return state.fill_value


_READ_WAVE_BYTES = 16 << 20


def _read_waves(wholes: list[tuple[Any, Any]]) -> list[list[tuple[Any, Any]]]:
    """Cut whole-shard reads into waves of about :data:`_READ_WAVE_BYTES` decoded bytes."""
    waves: list[list[tuple[Any, Any]]] = [[]]
    size = 0
    for item in wholes:
        if waves[-1] and size >= _READ_WAVE_BYTES:
            waves.append([])
            size = 0
        waves[-1].append(item)
        size += item[0].spec.nbytes or 0
    return waves


def _merge_parts(carried: dict[int, Any], parts: Mapping[int, Any]) -> dict[int, Any]:
    """The inner chunks of a shard after a write: the kept ones, updated by the encoded ones
    (None: now empty)."""
    for i, b in parts.items():
        if b is None:
            carried.pop(i, None)
        else:
            carried[i] = b
    return carried


# Encoded bytes per write wave: enough to keep the pool busy, small enough that the writing of
# one wave overlaps the encoding of the next.
_WAVE_BYTES = 32 << 20


def _waves(items: list[Any], nshards: int, chunk_nbytes: int) -> list[tuple[list[int], int, int]]:
    """Cut the write items (grouped by shard, in shard order) into waves of whole shards:
    ``(shard numbers, first item, end item)``."""
    if not items:
        return [(list(range(nshards)), 0, 0)]
    per_wave = max(1, _WAVE_BYTES // chunk_nbytes)
    waves: list[tuple[list[int], int, int]] = []
    shards: list[int] = []
    lo = 0
    i = 0
    n = len(items)
    while i < n:
        sno = items[i][0]
        j = i
        while j < n and items[j][0] == sno:
            j += 1
        shards.append(sno)
        i = j
        if i - lo >= per_wave and i < n:
            waves.append((shards, lo, i))
            shards, lo = [], i
    # Shards without items (nothing to encode: all their chunks are kept) join the last wave.
    covered = {s for w in waves for s in w[0]} | set(shards)
    shards.extend(s for s in range(nshards) if s not in covered)
    waves.append((shards, lo, n))
    return waves


# A request to a local file or memory costs ~10 µs, about what copying 64 KiB costs: merging
# ranges across larger holes would read more than it saves there.
_LOCAL_MAX_GAP = 64 << 10


def _is_local(store: Any) -> bool:
    """Whether ``store`` reads local files or memory (seen through the transparent counting and
    write-buffer wrappers; a latency wrapper models a remote store and counts as one)."""
    for _ in range(8):
        if not isinstance(store, (CountingStore, BufferedStore)):
            break
        store = store.inner
    return isinstance(store, (LocalStore, MemoryStore)) or (
        isinstance(store, FsspecStore) and getattr(store, "protocol", None) in ("file", "local", "memory")
    )


def _max_gap(store: Any, gap: int) -> int:
    """The hole worth reading to merge two ranges: ``gap`` for remote stores, at most
    :data:`_LOCAL_MAX_GAP` for local ones."""
    return min(gap, _LOCAL_MAX_GAP) if _is_local(store) else gap


def _coalesce(ranges: list[tuple[int, int, int, int, int]], max_gap: int, max_bytes: int) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Merge ``(shard no, start, stop, ...)`` ranges of the same shard: ``(groups as (shard no,
    start, stop), group of each range)``.  Plain Python for a few ranges, numpy beyond."""
    n = len(ranges)
    if n == 1:
        return [(ranges[0][0], ranges[0][1], ranges[0][2])], [0]
    if n > 256:
        sno = np.fromiter((r[0] for r in ranges), dtype=np.int64, count=n)
        st = np.fromiter((r[1] for r in ranges), dtype=np.int64, count=n)
        en = np.fromiter((r[2] for r in ranges), dtype=np.int64, count=n)
        gs, ge, assign = coalesce_ranges(st, en, max_gap, max_bytes, ids=sno)
        gid = np.empty(len(gs), dtype=np.int64)
        gid[assign] = sno
        return list(zip(gid.tolist(), gs.tolist(), ge.tolist())), assign.tolist()
    order = sorted(range(n), key=[(r[0], r[1]) for r in ranges].__getitem__)
    groups: list[list[int]] = []
    assign = [0] * n
    for i in order:
        s_, a, b = ranges[i][0], ranges[i][1], ranges[i][2]
        if groups:
            g = groups[-1]
            if g[0] == s_ and a - g[2] <= max_gap and max(b, g[2]) - g[1] <= max_bytes:
                if b > g[2]:
                    g[2] = b
                assign[i] = len(groups) - 1
                continue
        groups.append([s_, a, b])
        assign[i] = len(groups) - 1
    return [tuple(g) for g in groups], assign  # type: ignore[misc]


register_codec(ShardingCodec)
