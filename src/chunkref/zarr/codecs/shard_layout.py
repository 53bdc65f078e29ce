"""How a shard is laid out, and how a selection of a shard maps onto its inner chunks.

:class:`ShardLayout` holds everything that depends on one shard shape (rectilinear outer grids
have several): the inner grid, the index format and size, and cached *read plans*.  A plan maps
a basic selection (ints, positive-step slices) onto the inner chunks it touches: per chunk its
flat C-order position, the selection inside the chunk and the selection of the result, computed
per axis and combined with :func:`itertools.product`; a full-shard read hits the same cached
plan for every shard of the call.  Any other selection (orthogonal arrays, points, masks) is
mapped onto a bounding box of the touched inner chunks (:func:`touched_fancy`), and numpy
applies the selection to the box, so its semantics are numpy's own.

:class:`ReadGroup` is what a read decodes from one shard: parallel lists, no object per chunk.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from chunkref.errors import MetadataError, ShardError
from chunkref.storage.base import RangeRequest, SuffixRequest
from chunkref.zarr.codecs.base import Codec
from chunkref.zarr.codecs.shard_index import IndexFormat, decode_error, inner_coords, validate_index
from chunkref.zarr.codecs.shard_kernels import address
from chunkref.zarr.grid import RegularGrid
from chunkref.zarr.indexing.axis import project_slice

__all__ = [
    "ReadGroup",
    "ShardLayout",
    "as_tuple",
    "fancy_group",
    "is_basic",
    "normalize_selection",
    "plan_selection",
    "project_basic",
    "touched_fancy",
    "view_selection",
]


class ShardLayout:
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
        proj = project_basic(sel, self)
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


def is_basic(sel: Any) -> bool:
    """Whether every entry is an int or a positive-step slice (so indexing gives a view)."""
    for s in sel:
        t = type(s)
        if t is slice:
            if s.step is not None and s.step <= 0:
                return False
        elif t is not int and not isinstance(s, np.integer):
            return False
    return True


def as_tuple(sel: Any) -> tuple[Any, ...]:
    return sel if isinstance(sel, tuple) else (sel,)


def view_selection(sel: Any) -> tuple[Any, ...]:
    """A basic selection that always gives an array view (ints alone would give a scalar)."""
    return as_tuple(sel) + (Ellipsis,)


def normalize_selection(sel: Any, ndim: int) -> tuple[Any, ...]:
    """One entry per shard axis: boolean arrays replaced by their ``nonzero`` index arrays (as
    numpy does), ``...`` expanded, missing trailing axes filled with full slices."""
    sel = _expand_bool(sel if isinstance(sel, tuple) else (sel,))
    if any(s is Ellipsis for s in sel):
        i = next(i for i, s in enumerate(sel) if s is Ellipsis)
        sel = sel[:i] + (slice(None),) * (ndim - len(sel) + 1) + sel[i + 1 :]
    if len(sel) < ndim:
        sel = sel + (slice(None),) * (ndim - len(sel))
    return sel


def _axis_basic(s: Any, axis: int, layout: ShardLayout) -> list[tuple[int, Any, Any, bool]]:
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


def project_basic(sel: tuple[Any, ...], layout: ShardLayout) -> list[tuple[int, Any, Any, bool]]:
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
    if not any(isinstance(s, np.ndarray) and s.dtype == bool for s in sel):
        return sel
    out: list[Any] = []
    for s in sel:
        if isinstance(s, np.ndarray) and s.dtype == bool:
            out.extend(np.nonzero(s))
        else:
            out.append(s)
    return tuple(out)


def touched_fancy(sel: tuple[Any, ...], layout: ShardLayout) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...], tuple[Any, ...]]:
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


class ReadGroup:
    """The inner chunks one read call needs from one shard, as parallel lists (no per-chunk
    objects): positions, where each goes (``dst[osels[j]] = chunk[ssels[j]]``), and where its
    bytes are (``ptrs``/``lens``, length 0 for an empty chunk; ``views`` for codecs that need
    a buffer rather than an address)."""

    __slots__ = ("key", "layout", "dst", "flats", "ssels", "osels", "ptrs", "lens", "views", "from_cache", "keep")

    def __init__(self, key: str, layout: ShardLayout, dst: np.ndarray, flats: list[int], ssels: list[Any], osels: list[Any]) -> None:
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


def plan_selection(post: list[Any], layout: ShardLayout, key: str, out: np.ndarray, chunk_sel: Any, out_sel: Any) -> ReadGroup | None:
    """The :class:`ReadGroup` for ``out[out_sel] = shard[chunk_sel]`` (bytes attached later), or None
    when the selection touches nothing.

    Basic selections decode straight into ``out``; others into a bounding-box buffer, with a
    post-step (appended to ``post``) that applies the selection.
    """
    sel = normalize_selection(chunk_sel, len(layout.shard_shape))
    osel = as_tuple(out_sel)
    if is_basic(sel) and is_basic(osel):
        flats, ssels, osels = layout.plan(sel)
        if not flats:
            return None
        return ReadGroup(key, layout, out[osel + (Ellipsis,)], flats, ssels, osels)
    fancy = fancy_group(layout, key, out.dtype, sel)
    if fancy is None:
        return None
    group, shifted = fancy

    def finish(_b: np.ndarray = group.dst, _s: tuple = shifted) -> None:
        out[out_sel] = _b[_s]

    post.append(finish)
    return group


def fancy_group(layout: ShardLayout, key: str, dtype: np.dtype, sel: tuple[Any, ...]) -> tuple[ReadGroup, tuple[Any, ...]] | None:
    """A group decoding the touched inner chunks of any selection into a bounding-box buffer,
    and the selection shifted into that box (None when nothing is touched)."""
    fl, lo, bshape, shifted = touched_fancy(sel, layout)
    if len(fl) == 0:
        return None
    cs = layout.chunk_shape
    bbox = np.empty(tuple(b * c for b, c in zip(bshape, cs)), dtype=dtype)
    coords = np.stack(np.unravel_index(fl, layout.cps), axis=-1).tolist() if cs else [[]] * len(fl)
    regions = [tuple(slice((k - k0) * c, (k - k0 + 1) * c) for k, k0, c in zip(kc, lo, cs)) for kc in coords]
    return ReadGroup(key, layout, bbox, fl.tolist(), [None] * len(regions), regions), shifted


# Decoded bytes of whole shards fetched per read wave.
