"""Coding of inner chunks for the sharding codec: the generic pipeline and the fast kernels.

A shard holds thousands of small chunks, so what a chunk costs besides the codec itself decides
the speed: numcodecs' zstd functions create and free a compression context on every call (~9 µs
even for 16 bytes, more than decoding an 8 KiB chunk), and every intermediate ndarray costs a
microsecond of Python.  :class:`InnerCodec` therefore has three levels:

``zstd`` kernel (``transpose``\\* ``bytes`` ``zstd``, the usual chain)
    Calls ``ZSTD_decompressDCtx`` / ``ZSTD_compressCCtx`` of the libzstd that numcodecs bundles
    (its extension module exports the symbols; reached with :mod:`ctypes`, which releases the GIL
    during the call), with one reusable context and buffer per thread.  Chunk bytes are addressed
    by pointer (the planner computes ``base + offset`` for a whole shard or merged range at once),
    decoded into the thread's buffer and copied from a fixed typed view of it straight into the
    output: no allocation per chunk.  The decoded size must equal the chunk size exactly (the
    buffer bounds what a hostile frame can produce).  Without those symbols the ``fast`` path
    below is used.
``fast`` (``transpose``\\* ``bytes`` ``bb``\\*)
    The bytes->bytes codecs' own (bounded) decoders, ``np.frombuffer`` and a transposed view.
generic
    The inner :class:`~chunkref.zarr.codecs.pipeline.CodecPipeline` (nested sharding, vlen
    strings, numcodecs filters).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from chunkref.errors import ChunkDecodeError, CodecError
from chunkref.zarr.codecs.base import ChunkSpec, Codec, is_variable_dtype
from chunkref.zarr.codecs.zstd_native import ZstdLibrary, address, zstd_library

__all__ = ["Arena", "InnerCodec", "address", "take_arena", "zstd_library"]


class Arena:
    """A byte buffer that a batch of chunks is compressed into, back to back.

    Fresh memory costs a page fault per 4 KiB on first touch (~20 µs for a 64 KiB chunk kept
    as its own ``bytes``), so batches borrow arenas from a small process-wide pool and give
    them back once the shards made of them are assembled.
    """

    __slots__ = ("buf", "ptr", "pos")

    def __init__(self, size: int) -> None:
        self.buf = np.empty(max(1, size), dtype=np.uint8)
        self.ptr = self.buf.__array_interface__["data"][0]
        self.pos = 0

    def give_back(self) -> None:
        """Return the arena to the pool (its contents must not be used any more)."""
        _return_arena(self)


_POOL_LOCK = threading.Lock()
_POOL: list[Arena] = []
_POOL_MAX_BYTES = 64 << 20


def take_arena(size: int) -> Arena:
    """An arena of at least ``size`` bytes, reused from the pool when one is large enough."""
    with _POOL_LOCK:
        for i, a in enumerate(_POOL):
            if a.buf.nbytes >= size:
                arena = _POOL.pop(i)
                arena.pos = 0
                return arena
    return Arena(size)


def _return_arena(arena: Arena) -> None:
    with _POOL_LOCK:
        if arena.buf.nbytes <= _POOL_MAX_BYTES // 4:
            _POOL.append(arena)
            _POOL.sort(key=lambda a: a.buf.nbytes)
            while sum(a.buf.nbytes for a in _POOL) > _POOL_MAX_BYTES:
                _POOL.pop(0)


class InnerCodec:
    """Decodes and encodes the inner chunks of one sharded array (see the module docstring).

    Parameters
    ----------
    codecs
        The inner codec chain (parsed, not evolved).
    spec
        Inner chunk shape, array dtype and fill value.
    """

    def __init__(self, codecs: Sequence[Codec], spec: ChunkSpec) -> None:
        from chunkref.zarr.codecs.bytes_codec import BytesCodec
        from chunkref.zarr.codecs.compression import ZstdCodec
        from chunkref.zarr.codecs.pipeline import CodecPipeline

        self.spec = spec
        self.pipeline = CodecPipeline.from_v3([c.to_json() for c in codecs], spec.dtype, spec.shape)
        aa = list(self.pipeline.array_array_codecs)
        ab = self.pipeline.array_bytes_codec
        bb = list(self.pipeline.bytes_bytes_codecs)
        self.fast = isinstance(ab, BytesCodec) and all(c.name == "transpose" for c in aa) and not is_variable_dtype(spec.dtype)
        self.nbytes = spec.nbytes or 0
        self.zstd: ZstdLibrary | None = None
        if not self.fast:
            return
        shape = tuple(spec.shape)
        perm = list(range(len(shape)))
        for t in aa:
            order = t.order  # type: ignore[attr-defined]
            shape = tuple(shape[i] for i in order)
            perm = [perm[i] for i in order]
        self.stored_shape = shape
        self.perm = tuple(perm) if perm != sorted(perm) else None
        self.inverse = tuple(int(i) for i in np.argsort(perm)) if self.perm is not None else None
        self.stored_dtype = ab.stored_dtype(spec.dtype)  # type: ignore[attr-defined]
        self.bb = bb
        bspec = ChunkSpec(shape, spec.dtype, spec.fill_value)
        self.bspec = bspec
        # Bounds for each bytes->bytes decode: the size its input had on encode (exact while
        # every codec before it has a fixed encoded size).
        sizes = [self.nbytes]
        exact = [True]
        for c in bb[:-1]:
            e = c.encoded_size(sizes[-1], bspec)
            sizes.append(e if e is not None else c.max_encoded_size(sizes[-1], bspec))
            exact.append(exact[-1] and e is not None)
        self.bounds = list(zip(sizes, exact))
        if len(bb) == 1 and isinstance(bb[0], ZstdCodec) and self.nbytes > 0 and zstd_library() is not None:
            self.zstd = zstd_library()
            self.level = bb[0].level
            # The plain compress call writes no checksum; keep numcodecs for checksummed frames.
            self.zstd_encode = not bb[0].checksum
            self.bound = int(self.zstd.lib.ZSTD_compressBound(self.nbytes))

    # -- decoding ----------------------------------------------------------------------------------

    def typed_view(self, buf: np.ndarray) -> np.ndarray:
        """``buf`` (the decoded bytes) as the inner chunk: stored dtype and shape, transposed back."""
        arr = buf[: self.nbytes].view(self.stored_dtype).reshape(self.stored_shape)
        return arr if self.inverse is None else arr.transpose(self.inverse)

    def decode(self, data: Any) -> np.ndarray:
        """The inner chunk (shape ``spec.shape``); may be a read-only view of ``data``."""
        if not self.fast:
            return self.pipeline.decode(data, self.spec)
        for c, (size, exact) in zip(reversed(self.bb), reversed(self.bounds)):
            data = c.decode(data, self.bspec, size, exact)
        arr = np.frombuffer(data, dtype=self.stored_dtype)
        if arr.size * arr.itemsize != self.nbytes:
            raise ChunkDecodeError(f"{arr.nbytes} bytes, expected {self.nbytes} for {self.spec.shape} {self.spec.dtype}")
        arr = arr.reshape(self.stored_shape)
        return arr if self.inverse is None else arr.transpose(self.inverse)

    def decode_segment(self, group: Any, lo: int, hi: int, fill: Any) -> None:
        """Decode inner chunks ``lo:hi`` of a read group into their destinations.

        The group (see ``sharding._Group``) lists per chunk the destination selection
        (``osels``), the selection inside the chunk (``ssels``, None for all of it), the bytes'
        address and length (``ptrs``/``lens``, length 0: fill value) and, for the non-kernel
        paths, the bytes themselves (``views``).
        """
        dst = group.dst
        osels = group.osels
        ssels = group.ssels
        lens = group.lens
        zstd = self.zstd
        if zstd is None:
            views = group.views
            decode = self.decode
            for j in range(lo, hi):
                if not lens[j]:
                    dst[osels[j]] = fill
                    continue
                try:
                    chunk = decode(views[j])
                except Exception as exc:
                    raise group.error(j, exc) from exc
                ssel = ssels[j]
                dst[osels[j]] = chunk if ssel is None else chunk[ssel]
            return
        ctx = zstd.contexts()
        buf, bptr = ctx.buffer("d", self.nbytes)
        view = self.typed_view(buf)
        nbytes = self.nbytes
        dctx = ctx.dctx
        decompress = zstd.decompress
        ptrs = group.ptrs
        for j in range(lo, hi):
            n = lens[j]
            if not n:
                dst[osels[j]] = fill
                continue
            got = decompress(dctx, bptr, nbytes, ptrs[j], n)
            if got != nbytes:
                raise group.error(j, ChunkDecodeError(f"zstd: {zstd.error_name(got)}, expected {nbytes} bytes"))
            ssel = ssels[j]
            dst[osels[j]] = view if ssel is None else view[ssel]

    # -- encoding ----------------------------------------------------------------------------------

    def prepare(self, chunk: np.ndarray) -> np.ndarray:
        """The chunk laid out as stored (C order, stored dtype, transposed): what gets compressed,
        and what the fill-value check looks at.  With the zstd kernel this is the thread's
        staging buffer, valid until the next call on the same thread."""
        if not self.fast:
            return np.ascontiguousarray(chunk)
        if self.perm is not None:
            chunk = chunk.transpose(self.perm)
        if self.zstd is not None and self.zstd_encode:
            buf, _ = self.zstd.contexts().buffer("s", self.nbytes)
            stage = buf[: self.nbytes].view(self.stored_dtype).reshape(self.stored_shape)
            np.copyto(stage, chunk)
            return stage
        return np.ascontiguousarray(chunk, dtype=self.stored_dtype)

    @property
    def uses_arena(self) -> bool:
        """Whether :meth:`encode` writes into an :class:`Arena` (else it returns new bytes)."""
        return self.zstd is not None and self.zstd_encode

    def encode(self, prepared: np.ndarray, arena: Arena | None = None) -> Any:
        """Encode what :meth:`prepare` returned: a view into ``arena`` (which must have
        ``self.bound`` bytes left) with the zstd kernel, else a bytes-like object."""
        if not self.fast:
            return self.pipeline.encode(prepared, self.spec)
        if self.zstd is not None and self.zstd_encode:
            ctx = self.zstd.contexts()
            if arena is None:
                out, optr = ctx.buffer("c", self.bound)
            else:
                optr = arena.ptr + arena.pos
            n = self.zstd.compress(ctx.cctx, optr, self.bound, prepared.__array_interface__["data"][0], self.nbytes, self.level)
            if self.zstd.lib.ZSTD_isError(n):
                raise CodecError(f"zstd: {self.zstd.error_name(n)}")
            if arena is None:
                return ctypes.string_at(optr, n)
            view = memoryview(arena.buf)[arena.pos : arena.pos + n]
            arena.pos += n
            return view
        data: Any = prepared
        for c in self.bb:
            data = c.encode(data, self.bspec)
        return data
