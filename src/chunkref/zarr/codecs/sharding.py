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
    order chunks freely (zarr-python: Morton order) and leave gaps.

Writes (:meth:`ShardingCodec.write_partial_many`)
    Shards covered completely are encoded from the new values without reading anything.  Shards
    covered partly are fetched whole in one ``get_many``, their touched inner chunks re-encoded
    (decoding only those not completely overwritten), untouched ones copied as stored bytes, and
    every shard is rewritten once (C-order, compacted).  Inner chunks equal to the fill value are
    left out unless ``write_empty_chunks``; a shard left with none is deleted.

Fast path: for inner chains made of ``transpose`` codecs, ``bytes`` and any bytes->bytes codecs
(the usual ``bytes`` + compressor), inner chunks are decoded by calling the compressor and
viewing its output with ``np.frombuffer``; the only copy is the one into the output array.
Other chains (e.g. nested sharding, vlen strings) go through the inner :class:`CodecPipeline`.
"""

from __future__ import annotations

import itertools
import math
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
from chunkref.storage.base import RangeRequest, SuffixRequest
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
from chunkref.zarr.grid import ChunkGrid, RegularGrid
from chunkref.zarr.indexing.axis import project_slice
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


# --- per-shard-shape layout ------------------------------------------------------------------------


class _Layout:
    """Everything that depends on one shard shape (rectilinear outer grids have several)."""

    def __init__(self, shard_shape: tuple[int, ...], chunk_shape: tuple[int, ...], index_codecs: Sequence[Codec], at_start: bool) -> None:
        if len(shard_shape) != len(chunk_shape):
            raise MetadataError(
                f"codec 'sharding_indexed': inner chunk shape {chunk_shape} does not match the rank of the "
                f"shard shape {shard_shape}"
            )
        if any(s % c for s, c in zip(shard_shape, chunk_shape)):
            raise MetadataError(
                f"codec 'sharding_indexed': shard shape {shard_shape} is not a multiple of the inner chunk "
                f"shape {chunk_shape}"
            )
        self.shard_shape = shard_shape
        self.chunk_shape = chunk_shape
        self.cps = tuple(s // c for s, c in zip(shard_shape, chunk_shape))
        self.n = math.prod(self.cps)
        self.grid = RegularGrid(shard_shape, chunk_shape)
        self.index = IndexFormat(index_codecs, self.cps)
        self.index_nbytes = self.index.nbytes
        self.at_start = at_start
        # C-order strides of the inner grid, to turn inner coordinates into flat positions.
        strides = []
        acc = 1
        for c in reversed(self.cps):
            strides.append(acc)
            acc *= c
        self.strides = tuple(reversed(strides))
        self._full: list[tuple[slice, ...]] | None = None
        # Read plans of basic selections, by selection: a full read hits the same selection for
        # every shard of the call, a chunk-by-chunk reader the same few again and again.
        self._plans: dict[tuple[Any, ...], tuple[list[int], list[Any], list[Any]]] = {}

    def plan(self, sel: tuple[Any, ...]) -> tuple[list[int], list[Any], list[Any]]:
        """``(flat positions, selections in the inner chunks (None: all of it), selections of
        shard[sel]'s result)`` of a basic selection, cached."""
        key = _selection_key(sel)
        hit = self._plans.get(key) if key is not None else None
        if hit is not None:
            return hit
        proj = _project_basic(sel, self)
        flats = [p[0] for p in proj]
        ssels = [None if p[3] and len(p[1]) == len(self.chunk_shape) and all(isinstance(c, slice) for c in p[1]) else p[1] for p in proj]
        osels = [p[2] for p in proj]
        plan = (flats, ssels, osels)
        if key is not None:
            if len(self._plans) >= 256:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def full_slices(self) -> list[tuple[slice, ...]]:
        """Per inner chunk (C order), its region of the shard."""
        if self._full is None:
            axes = [[slice(k * c, (k + 1) * c) for k in range(n)] for n, c in zip(self.cps, self.chunk_shape)]
            self._full = [tuple(p) for p in itertools.product(*axes)]
        return self._full

    def index_request(self) -> Any:
        return RangeRequest(0, self.index_nbytes) if self.at_start else SuffixRequest(self.index_nbytes)

    def split(self, data: Any, key: str) -> tuple[np.ndarray, np.ndarray, memoryview]:
        """Index and stored mask of a whole shard object, validated; plus a view of the bytes."""
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        size = len(view)
        isz = self.index_nbytes
        if size < isz:
            raise ShardError(f"shard {key!r} is truncated: {size} bytes, its index alone takes {isz}")
        if self.at_start:
            index = self.index.decode(view[:isz], key)
            stored = validate_index(index, key, self.cps, data_start=isz, data_stop=size)
        else:
            index = self.index.decode(view[size - isz :], key)
            stored = validate_index(index, key, self.cps, data_start=0, data_stop=size - isz)
        return index, stored, view


# --- selections inside a shard -----------------------------------------------------------------


def _is_basic(sel: Any) -> bool:
    """Whether every entry is an int or a positive-step slice (so indexing gives a view)."""
    for s in sel:
        t = type(s)
        if t is slice:
            if s.step is not None and s.step <= 0:
                return False
        elif t is not int and not isinstance(s, np.integer):
            return False
    return True


def _as_tuple(sel: Any) -> tuple[Any, ...]:
    return sel if isinstance(sel, tuple) else (sel,)


def _view_sel(sel: Any) -> tuple[Any, ...]:
    """A basic selection that always gives an array view (ints alone would give a scalar)."""
    return _as_tuple(sel) + (Ellipsis,)


def _normalize(sel: Any, ndim: int) -> tuple[Any, ...]:
    if not isinstance(sel, tuple):
        sel = (sel,)
    if any(s is Ellipsis for s in sel):
        i = next(i for i, s in enumerate(sel) if s is Ellipsis)
        sel = sel[:i] + (slice(None),) * (ndim - len(sel) + 1) + sel[i + 1 :]
    if len(sel) < ndim:
        sel = sel + (slice(None),) * (ndim - len(sel))
    return sel


def _axis_basic(s: Any, axis: int, layout: _Layout) -> list[tuple[int, Any, Any, bool]]:
    """One axis of a basic selection on the inner grid: ``(flat offset, selection in the inner
    chunk, selection of the result axis or None when dropped, inner chunk fully covered)``."""
    n = layout.shard_shape[axis]
    c = layout.chunk_shape[axis]
    stride = layout.strides[axis]
    if not isinstance(s, slice):
        i = int(s)
        i = i + n if i < 0 else i
        k = i // c
        return [(k * stride, i - k * c, None, c == 1)]
    start, stop, step = s.indices(n)
    if step == 1:
        # The common case in plain Python: a few inner chunks along the axis.
        res = []
        for k in range(start // c, (stop - 1) // c + 1 if stop > start else start // c):
            lo = k * c
            a = start - lo if start > lo else 0
            b = stop - lo if stop < lo + c else c
            res.append((k * stride, slice(a, b), slice(lo + a - start, lo + b - start), a == 0 and b == c))
        return res
    length = len(range(start, stop, step))
    if length == 0:
        return []
    proj = project_slice(start, step, length, axis, layout.grid)
    return [
        (k * stride, cs, os, comp)
        for k, cs, os, comp in zip(proj.chunks, proj.chunk_sels, proj.out_sels, proj.complete)
    ]


def _project_basic(sel: tuple[Any, ...], layout: _Layout) -> list[tuple[int, Any, Any, bool]]:
    """Inner chunks touched by a basic (ints, positive-step slices) shard-local selection.

    Returns ``(flat position, selection in the inner chunk, selection of the result of
    shard[sel], whether the inner chunk is completely covered)`` per inner chunk, in C order.
    """
    per_axis = [_axis_basic(s, a, layout) for a, s in enumerate(sel)]
    if len(per_axis) == 1:
        return [(f, (cs,), () if os is None else (os,), comp) for f, cs, os, comp in per_axis[0]]
    out = []
    for combo in itertools.product(*per_axis):
        flat = 0
        csel = []
        osel = []
        comp = True
        for f, cs, os, c in combo:
            flat += f
            csel.append(cs)
            if os is not None:
                osel.append(os)
            comp = comp and c
        out.append((flat, tuple(csel), tuple(osel), comp))
    return out


def _selection_key(sel: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A hashable form of a basic selection (for the projection cache), or None."""
    key = []
    for s in sel:
        if isinstance(s, slice):
            key.append((s.start, s.stop, s.step))
        elif isinstance(s, (int, np.integer)):
            key.append(int(s))
        else:
            return None
    return tuple(key)


def _expand_bool(sel: tuple[Any, ...]) -> tuple[Any, ...]:
    """Replace boolean arrays by their ``nonzero`` index arrays (numpy's own rule)."""
    out: list[Any] = []
    for s in sel:
        if isinstance(s, np.ndarray) and s.dtype == bool:
            out.extend(np.nonzero(s))
        else:
            out.append(s)
    return tuple(out)


def _touched_fancy(sel: tuple[Any, ...], layout: _Layout) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...], tuple[Any, ...]]:
    """Inner chunks touched by any numpy selection of a shard, and its bounding box.

    Returns ``(flat positions, bbox origin in inner-chunk units, bbox shape in inner chunks,
    the selection shifted into the bounding box)``.  Applying the shifted selection to a buffer
    holding the bounding box gives exactly ``shard[sel]`` (numpy decides the semantics).
    """
    cs = layout.chunk_shape
    ndim = len(cs)
    arrays = {a: np.asarray(s, dtype=np.int64) for a, s in enumerate(sel) if isinstance(s, np.ndarray)}
    per_axis: dict[int, np.ndarray] = {}
    shifted: list[Any] = list(sel)
    lo = [0] * ndim
    hi = [0] * ndim
    # Array entries: independent per axis when each varies along its own single dimension (an
    # outer selection), else jointly (points).
    outer = True
    seen_dims: set[int] = set()
    for arr in arrays.values():
        dims = [d for d, n in enumerate(arr.shape) if n != 1]
        if len(dims) > 1 or (dims and dims[0] in seen_dims):
            outer = False
        seen_dims.update(dims)
    joint_rows: np.ndarray | None = None
    joint_axes = sorted(arrays)
    if arrays and not outer:
        b = np.broadcast_arrays(*(arrays[a] for a in joint_axes))
        k = np.stack([x.reshape(-1) // cs[a] for a, x in zip(joint_axes, b)], axis=-1)
        joint_rows = np.unique(k, axis=0) if len(k) else k
    for a in range(ndim):
        s = sel[a]
        n = layout.shard_shape[a]
        c = cs[a]
        if isinstance(s, slice):
            start, stop, step = s.indices(n)
            pos = np.arange(start, stop, step, dtype=np.int64)
            ks = np.unique(pos // c)
        elif a in arrays:
            x = arrays[a]
            if np.any(x < 0):
                x = np.where(x < 0, x + n, x)
                arrays[a] = x
                shifted[a] = x
            ks = np.unique(x.reshape(-1) // c)
        else:
            i = int(s)
            i = i + n if i < 0 else i
            shifted[a] = i
            ks = np.array([i // c], dtype=np.int64)
        if ks.size == 0:
            return np.zeros(0, dtype=np.int64), (0,) * ndim, (0,) * ndim, tuple(shifted)
        per_axis[a] = ks
        lo[a] = int(ks[0])
        hi[a] = int(ks[-1])
    if joint_rows is not None:
        # Joint axes recomputed after wrapping negative indices.
        b = np.broadcast_arrays(*(arrays[a] for a in joint_axes))
        k = np.stack([x.reshape(-1) // cs[a] for a, x in zip(joint_axes, b)], axis=-1)
        joint_rows = np.unique(k, axis=0) if len(k) else k
    origin = tuple(lo[a] * cs[a] for a in range(ndim))
    for a in range(ndim):
        s = sel[a]
        o = origin[a]
        if isinstance(s, slice):
            start, stop, step = s.indices(layout.shard_shape[a])
            if step > 0:
                shifted[a] = slice(start - o, stop - o, step)
            else:
                shifted[a] = slice(start - o, None if stop - o < 0 else stop - o, step)
        elif a in arrays:
            shifted[a] = arrays[a] - o
        else:
            shifted[a] = int(shifted[a]) - o
    # Flat positions of every touched inner chunk.
    free = [a for a in range(ndim) if a not in arrays or joint_rows is None]
    strides = np.asarray(layout.strides, dtype=np.int64)
    flat = np.zeros(1, dtype=np.int64)
    for a in free:
        flat = (flat[:, None] + per_axis[a][None, :] * strides[a]).reshape(-1)
    if joint_rows is not None:
        jflat = joint_rows @ strides[joint_axes]
        flat = (flat[:, None] + jflat[None, :]).reshape(-1)
    flat = np.sort(flat)
    bshape = tuple(hi[a] - lo[a] + 1 for a in range(ndim))
    return flat, tuple(lo), bshape, tuple(shifted)


# --- the codec -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    """What an evolved codec knows about its array: dtype, inner chain, caches."""

    dtype: np.dtype
    fill_value: Any
    inner: InnerCodec
    cache: ShardIndexCache
    layouts: dict[tuple[int, ...], _Layout]
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

    def _layout(self, shard_shape: tuple[int, ...]) -> _Layout:
        state = self._state
        layout = state.layouts.get(shard_shape) if state is not None else None
        if layout is None:
            layout = _Layout(shard_shape, self.chunk_shape, self.index_codecs, self.index_location == "start")
            if state is not None:
                with state.lock:
                    state.layouts[shard_shape] = layout
        return layout

    def check_grid(self, grid: ChunkGrid) -> None:
        """Check that every shard of ``grid`` (regular or rectilinear) holds whole inner chunks.

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
        for axis, (edges, c) in enumerate(zip(grid.edge_lengths, self.chunk_shape)):
            bad = np.flatnonzero(np.asarray(edges) % c)
            if bad.size:
                k = int(bad[0])
                raise MetadataError(
                    f"codec 'sharding_indexed': shard {k} along axis {axis} has length {int(edges[k])}, not a "
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
        group = _plan_selection(post, layout, key, out, (slice(None),) * len(spec.shape), ())
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
        items = [(0, i, ("full", array[s])) for i, s in enumerate(layout.full_slices())]
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
        groups: list[_Group] = []
        post: list[Any] = []
        wholes: list[tuple[Any, _Layout]] = []
        fetch: list[tuple[str, Any]] = []
        fetch_req: list[tuple[Any, _Layout]] = []
        partial: list[tuple[Any, _Layout, np.ndarray]] = []
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
                def fetch_wave(wave: list[tuple[Any, _Layout]]) -> list[Any]:
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
        wholes: list[tuple[Any, _Layout]],
        blobs: list[Any],
        groups: list[_Group],
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
            group = _plan_selection(post, layout, req.key, out, req.chunk_selection, req.out_selection)
            if group is not None:
                group.attach_whole(index, stored, view, generic)
                groups.append(group)

    def _fetch_inner(
        self,
        store: Any,
        partial: list[Any],
        groups: list[_Group],
        post: list[Any],
        out: np.ndarray,
        options: Any,
        from_cache: bool,
        generic: bool,
    ) -> None:
        """Plan, fetch (one merged batch) and attach the needed inner chunks of partly read shards."""
        # (shard no, start, stop, group, position in group) for every stored inner chunk needed.
        ranges: list[tuple[int, int, int, _Group, int]] = []
        for sno, (req, layout, index) in enumerate(partial):
            group = _plan_selection(post, layout, req.key, out, req.chunk_selection, req.out_selection)
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

    def _run_decode(self, state: _State, groups: list[_Group], fill: Any) -> None:
        """Decode every group's inner chunks in the thread pool, batches cut across groups."""
        total = sum(len(g.flats) for g in groups)
        if not total:
            return
        inner = state.inner

        def work(batches: list[list[tuple[_Group, int, int]]]) -> None:
            for segments in batches:
                for group, lo, hi in segments:
                    inner.decode_segment(group, lo, hi, fill)

        min_batch = _min_batch(inner.nbytes)
        if total < 2 * min_batch:
            work([[(g, 0, len(g.flats)) for g in groups]])  # too little to spread over threads
            return
        nb = max(1, min(2 * max_workers(), total // min_batch))
        bounds = [total * i // nb for i in range(nb + 1)]
        batches: list[list[tuple[_Group, int, int]]] = [[] for _ in range(nb)]
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
        direct = [r.is_complete and _is_basic(_normalize(r.chunk_selection, len(r.spec.shape))) and _is_basic(_as_tuple(r.out_selection)) for r in requests]
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
        layouts: list[_Layout] = []
        post_items: list[Any] = []
        for sno, req in enumerate(requests):
            layout = self._layout(tuple(req.spec.shape))
            layouts.append(layout)
            keep: dict[int, Any] = {}
            carried.append(keep)
            sel = _normalize(req.chunk_selection, len(layout.shard_shape))
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

    def _assembler(self, layout: _Layout) -> Any:
        """``chunks dict -> shard bytes or None`` for a write buffer to call once at the end."""

        def assemble(chunks: Mapping[int, Any]) -> bytes | None:
            ordered: list[Any] = [None] * layout.n
            for i, b in chunks.items():
                ordered[i] = b
            return self._assemble(layout, ordered)

        return assemble

    def _plan_complete_write(
        self, items: list[Any], sno: int, layout: _Layout, sel: tuple[Any, ...], value: np.ndarray, out_sel: Any, key: str
    ) -> None:
        """Items for a shard whose whole data region is written: no read."""
        src = value[_view_sel(out_sel)]
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
        full = tuple(data_shape) == layout.shard_shape
        for i, region in enumerate(layout.full_slices()):
            if full:
                items.append((sno, i, ("full", src[region])))
                continue
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
        layout: _Layout,
        sel: tuple[Any, ...],
        value: np.ndarray,
        out_sel: Any,
        keep: dict[int, Any],
        key: str,
    ) -> None:
        """Items for a shard written in part: touched inner chunks only (``keep`` loses them)."""
        if _is_basic(sel) and _is_basic(_as_tuple(out_sel)):
            src = value[_view_sel(out_sel)]
            for flat, csel, osel, complete in _project_basic(sel, layout):
                part = src[osel + (Ellipsis,)]
                old = keep.pop(flat, None)
                if complete:
                    items.append((sno, flat, ("full", part.reshape(layout.chunk_shape))))
                else:
                    items.append((sno, flat, ("merge", old, csel, part, key, layout)))
            return
        fancy = _fancy_group(layout, key, value.dtype, sel)
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
                    chunk[isel] = part
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
        self, layout: _Layout, chunks: list[Any], new_indexes: list[Any] | None = None, key: str | None = None
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


class _Group:
    """The inner chunks one read call needs from one shard, as parallel lists (no per-chunk
    objects): positions, where each goes (``dst[osels[j]] = chunk[ssels[j]]``), and where its
    bytes are (``ptrs``/``lens``, length 0 for an empty chunk; ``views`` for codecs that need
    a buffer rather than an address)."""

    __slots__ = ("key", "layout", "dst", "flats", "ssels", "osels", "ptrs", "lens", "views", "from_cache", "keep")

    def __init__(self, key: str, layout: _Layout, dst: np.ndarray, flats: list[int], ssels: list[Any], osels: list[Any]) -> None:
        self.key = key
        self.layout = layout
        self.dst = dst
        self.flats = flats
        self.ssels = ssels
        self.osels = osels
        self.ptrs: list[int] = []
        self.lens: list[int] = []
        self.views: list[Any] | None = None
        self.from_cache = False
        self.keep: Any = None  # the fetched buffers the addresses point into

    def attach_whole(self, index: np.ndarray, stored: np.ndarray, view: memoryview, generic: bool) -> None:
        """Point at the inner chunks inside a whole shard's bytes (vectorised)."""
        ent = index[self.flats]
        st = stored[self.flats]
        lens = np.where(st, ent[:, 1], 0).astype(np.int64)
        offs = np.where(st, ent[:, 0], 0).astype(np.int64)
        base = address(view)
        self.ptrs = (offs + base).tolist()
        self.lens = lens.tolist()
        self.keep = view
        if generic:
            o = offs.tolist()
            self.views = [view[a : a + n] if n else None for a, n in zip(o, self.lens)]

    def error(self, j: int, exc: BaseException) -> ShardError:
        err = decode_error(self.key, inner_coords(self.flats[j], self.layout.cps), exc)
        if self.from_cache:
            err._from_cache = True  # type: ignore[attr-defined]
        return err


def _plan_selection(post: list[Any], layout: _Layout, key: str, out: np.ndarray, chunk_sel: Any, out_sel: Any) -> _Group | None:
    """The :class:`_Group` for ``out[out_sel] = shard[chunk_sel]`` (bytes attached later), or None
    when the selection touches nothing.

    Basic selections decode straight into ``out``; others into a bounding-box buffer, with a
    post-step (appended to ``post``) that applies the selection.
    """
    sel = _normalize(chunk_sel, len(layout.shard_shape))
    osel = _as_tuple(out_sel)
    if _is_basic(sel) and _is_basic(osel):
        flats, ssels, osels = layout.plan(sel)
        if not flats:
            return None
        return _Group(key, layout, out[osel + (Ellipsis,)], flats, ssels, osels)
    fancy = _fancy_group(layout, key, out.dtype, sel)
    if fancy is None:
        return None
    group, shifted = fancy

    def finish(_b: np.ndarray = group.dst, _s: tuple = shifted) -> None:
        out[out_sel] = _b[_s]

    post.append(finish)
    return group


def _fancy_group(layout: _Layout, key: str, dtype: np.dtype, sel: tuple[Any, ...]) -> tuple[_Group, tuple[Any, ...]] | None:
    """A group decoding the touched inner chunks of any selection into a bounding-box buffer,
    and the selection shifted into that box (None when nothing is touched)."""
    fl, lo, bshape, shifted = _touched_fancy(sel, layout)
    if len(fl) == 0:
        return None
    cs = layout.chunk_shape
    bbox = np.empty(tuple(b * c for b, c in zip(bshape, cs)), dtype=dtype)
    coords = np.stack(np.unravel_index(fl, layout.cps), axis=-1).tolist() if cs else [[]] * len(fl)
    regions = [tuple(slice((k - k0) * c, (k - k0 + 1) * c) for k, k0, c in zip(kc, lo, cs)) for kc in coords]
    return _Group(key, layout, bbox, fl.tolist(), [None] * len(regions), regions), shifted


# Decoded bytes of whole shards fetched per read wave.
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
    if n > 64:
        sno = np.fromiter((r[0] for r in ranges), dtype=np.int64, count=n)
        st = np.fromiter((r[1] for r in ranges), dtype=np.int64, count=n)
        en = np.fromiter((r[2] for r in ranges), dtype=np.int64, count=n)
        gs, ge, assign = coalesce_ranges(st, en, max_gap, max_bytes, ids=sno)
        gid = np.empty(len(gs), dtype=np.int64)
        gid[assign] = sno
        return list(zip(gid.tolist(), gs.tolist(), ge.tolist())), assign.tolist()
    order = sorted(range(n), key=lambda i: (ranges[i][0], ranges[i][1]))
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
