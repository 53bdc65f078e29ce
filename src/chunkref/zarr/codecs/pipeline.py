"""CodecPipeline: the chain of codecs between a chunk array and its stored bytes.

A pipeline is built once per array (``from_v3`` / ``from_v2``) and then turns chunks into bytes
and back.  What depends on the chunk (the spec each codec sees, the byte size each
bytes->bytes stage may decode to, the fast path) is computed once per chunk shape and dtype and
cached in a :class:`_Plan`, so the per-chunk cost of a plain ``bytes`` (+ compressor) chain is
one dict lookup, the decompressor call and an ``np.frombuffer``.

Decoding is bounded: each bytes->bytes stage learns the most bytes it may produce (exact when
every codec after it is fixed-size, e.g. ``bytes`` + ``zstd``), so a decompression bomb fails
before it allocates; inflating stages are also capped by ``codec.max_decoded_bytes``.

``decode_many`` / ``encode_many`` run on the shared thread pool (:mod:`chunkref._threads`), one
task per batch of chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref._threads import map_batched
from chunkref.config import config
from chunkref.errors import ChunkDecodeError, ChunkrefError, CodecError, MetadataError
from chunkref.zarr.codecs.base import BytesLike, ChunkSpec, Codec, byte_view
from chunkref.zarr.codecs.bytes_codec import BytesCodec, RawBytesCodec
from chunkref.zarr.codecs.numcodecs_adapter import (
    OBJECT_CODEC_IDS,
    NumcodecsBytesBytesCodec,
    from_numcodecs_config,
)
from chunkref.zarr.codecs.registry import codec_from_json
from chunkref.zarr.codecs.transpose import TransposeCodec

__all__ = ["CodecPipeline"]

# A batch of chunks per thread-pool task should cost well above the ~14 µs a task costs.
_BATCH_BYTES = 512 * 1024
_PLAN_CACHE_SIZE = 256

_KIND_LABEL = {"array_array": "array->array", "array_bytes": "array->bytes", "bytes_bytes": "bytes->bytes"}


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything about decoding/encoding one chunk shape + dtype that can be computed ahead."""

    aa: tuple[Codec, ...]
    aa_specs: tuple[ChunkSpec, ...]  # input spec of each array->array codec (encode direction)
    ab: Codec
    ab_spec: ChunkSpec
    bb: tuple[Codec, ...]
    bb_bounds: tuple[tuple[int, bool], ...]  # per bb codec: (max decoded size, exact)
    fast_dtype: np.dtype | None  # bytes-only array->bytes step: decode with np.frombuffer
    convert: bool  # fast path: stored dtype differs from the spec dtype (byte order)
    too_big: str | None  # why decoding must be refused (codec.max_decoded_bytes)
    unshuffle: int  # > 1: bb[0] is a byte shuffle of this element size over the fast path


def _describe(codec: Codec, index: int) -> str:
    return f"codec {codec.name!r} (position {index}, {_KIND_LABEL[codec.kind]})"


def _validate_order(codecs: Sequence[Codec]) -> None:
    """AA* AB BB*, exactly one AB; errors name the offending codec."""
    if not codecs:
        raise MetadataError("the codec chain is empty; it needs exactly one array->bytes codec")
    ab_index = None
    for i, c in enumerate(codecs):
        if not isinstance(c, Codec) or c.kind not in _KIND_LABEL:
            raise MetadataError(f"codec chain entry {i} is not a codec: {c!r}")
        if c.kind == "array_bytes":
            if ab_index is not None:
                raise MetadataError(
                    f"{_describe(c, i)}: a chain has exactly one array->bytes codec, and "
                    f"{codecs[ab_index].name!r} (position {ab_index}) is one already"
                )
            ab_index = i
        elif c.kind == "array_array" and ab_index is not None:
            raise MetadataError(f"{_describe(c, i)} must come before the array->bytes codec {codecs[ab_index].name!r}")
        elif c.kind == "bytes_bytes" and ab_index is None:
            prev = f" after {codecs[i - 1].name!r}" if i else " at the start"
            raise MetadataError(
                f"{_describe(c, i)} cannot come{prev}: bytes->bytes codecs follow the array->bytes codec"
            )
    if ab_index is None:
        raise MetadataError(
            f"the codec chain {[c.name for c in codecs]} has no array->bytes codec (e.g. 'bytes')"
        )


class CodecPipeline:
    """An ordered codec chain: ``array_array* array_bytes bytes_bytes*``.

    Build with :meth:`from_v3`, :meth:`from_v2` or :meth:`from_codecs`.

    Attributes
    ----------
    codecs
        Every codec in order (evolved for the dtype and chunk shape given at construction).
    array_array_codecs, array_bytes_codec, bytes_bytes_codecs
        The three parts of the chain.
    dtype
        The array dtype.
    zarr_format
        3, or 2 for a pipeline from :meth:`from_v2` (then ``order`` is its memory order).
    """

    def __init__(
        self,
        codecs: Sequence[Codec],
        dtype: Any,
        chunk_shape: Sequence[int] | None = None,
        *,
        zarr_format: int = 3,
        order: str = "C",
    ) -> None:
        codecs = tuple(codecs)
        _validate_order(codecs)
        self.dtype = np.dtype(dtype)
        self.zarr_format = zarr_format
        if order not in ("C", "F"):
            raise MetadataError(f"order must be 'C' or 'F', got {order!r}")
        self.order = order
        self.chunk_shape = None if chunk_shape is None else tuple(int(s) for s in chunk_shape)
        self._raw = codecs
        if self.chunk_shape is not None:
            aa, _, ab, _, bb = self._evolve(ChunkSpec(self.chunk_shape, self.dtype, None))
            codecs = (*aa, ab, *bb)
        self.codecs: tuple[Codec, ...] = codecs
        nab = next(i for i, c in enumerate(codecs) if c.kind == "array_bytes")
        self.array_array_codecs: tuple[Codec, ...] = codecs[:nab]
        self.array_bytes_codec: Codec = codecs[nab]
        self.bytes_bytes_codecs: tuple[Codec, ...] = codecs[nab + 1 :]
        self._plans: dict[tuple[Any, ...], _Plan] = {}

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_v3(cls, codecs_json: Any, dtype: Any, chunk_shape: Sequence[int]) -> CodecPipeline:
        """Parse a v3 ``codecs`` list and evolve it for ``dtype`` and ``chunk_shape``.

        ``chunk_shape`` is the declared chunk shape (for a rectilinear grid, any chunk's: the
        rank and dtype are what the codecs check; plans adapt to each chunk's shape).

        Raises
        ------
        MetadataError
            If the list is malformed or misordered (:class:`~chunkref.errors.UnknownCodecError`
            for unknown codecs); :class:`~chunkref.errors.CodecError` for a bad configuration.
        """
        if isinstance(codecs_json, (str, bytes)) or not isinstance(codecs_json, Sequence):
            raise MetadataError(f"'codecs' must be a list, got {codecs_json!r}")
        if not codecs_json:
            raise MetadataError("'codecs' is empty; it needs exactly one array->bytes codec")
        codecs = [codec_from_json(c) for c in codecs_json]
        return cls(codecs, dtype, chunk_shape)

    @classmethod
    def from_codecs(cls, codecs: Sequence[Codec], dtype: Any, chunk_shape: Sequence[int]) -> CodecPipeline:
        """A v3 pipeline from codec objects (e.g. ``[BytesCodec(), ZstdCodec(level=3)]``)."""
        return cls(codecs, dtype, chunk_shape)

    @classmethod
    def from_v2(
        cls,
        compressor: Mapping[str, Any] | None,
        filters: Sequence[Mapping[str, Any]] | None,
        dtype: Any,
        order: str = "C",
        chunk_shape: Sequence[int] | None = None,
    ) -> CodecPipeline:
        """A v2 chain: ``filters`` applied in order, then ``compressor``; decoded in reverse.

        Leading array->array filters (``delta``, ``fixedscaleoffset``, ...) act on the array;
        an object codec (``vlen-utf8``, ``json2``, ...) serializes ``|O`` arrays (it must come
        first among the rest); any further filters (kerchunk puts ``zlib`` or ``shuffle`` there)
        and the compressor act on the bytes.  ``order="F"`` is the chunk's byte layout:
        modelled as a transpose with the reversed axes before everything else.
        """
        dtype = np.dtype(dtype)
        if filters is not None and (isinstance(filters, (str, bytes, Mapping)) or not isinstance(filters, Sequence)):
            raise MetadataError(f"v2 'filters' must be a list or null, got {filters!r}")
        entries = [from_numcodecs_config(f) for f in (filters or [])]
        comp = None if compressor is None else from_numcodecs_config(compressor)
        if comp is not None and comp.kind != "bytes_bytes":
            if comp.codec_id in OBJECT_CODEC_IDS and not any(e.kind == "array_bytes" for e in entries):
                entries.append(comp)  # object codec given as the compressor: it serializes
                comp = None
            else:
                raise MetadataError(f"v2 compressor {comp.codec_id!r} is not a bytes->bytes codec")
        aa: list[Codec] = []
        i = 0
        while i < len(entries) and entries[i].kind == "array_array":
            aa.append(entries[i])
            i += 1
        if i < len(entries) and entries[i].kind == "array_bytes":
            ab: Codec = entries[i]
            i += 1
        else:
            if dtype.hasobject:
                raise MetadataError(
                    "a v2 array of dtype '|O' needs an object codec (vlen-utf8, vlen-bytes, vlen-array, "
                    "json2, msgpack2) as its first filter"
                )
            ab = RawBytesCodec()
        bb: list[Codec] = []
        for j, e in enumerate(entries[i:], start=i):
            if e.kind != "bytes_bytes":
                raise MetadataError(
                    f"v2 filter {e.codec_id!r} (position {j}) is {_KIND_LABEL[e.kind]} but follows "
                    f"{'the object codec' if ab.kind == 'array_bytes' and not isinstance(ab, RawBytesCodec) else 'a bytes filter'}"
                )
            bb.append(e)
        if comp is not None:
            bb.append(comp)
        pipe = cls([*aa, ab, *bb], dtype, chunk_shape, zarr_format=2, order=order)
        pipe._v2_json = (
            None if comp is None else comp.to_v2_json(),
            None if not filters else [dict(f) for f in filters],
        )
        return pipe

    # --- evolution and plans ----------------------------------------------------------------

    def _evolve(
        self, spec: ChunkSpec
    ) -> tuple[tuple[Codec, ...], tuple[ChunkSpec, ...], Codec, ChunkSpec, tuple[Codec, ...]]:
        raw = self._raw
        if self.order == "F" and spec.ndim > 1:
            raw = (TransposeCodec(order=tuple(range(spec.ndim - 1, -1, -1))), *raw)
        aa: list[Codec] = []
        aa_specs: list[ChunkSpec] = []
        s = spec
        k = 0
        while raw[k].kind == "array_array":
            c = raw[k].evolve(s)
            aa.append(c)
            aa_specs.append(s)
            s = c.resolve(s)
            k += 1
        ab = raw[k].evolve(s)
        bb = tuple(c.evolve(s) for c in raw[k + 1 :])
        return tuple(aa), tuple(aa_specs), ab, s, bb

    def _plan(self, spec: ChunkSpec, cap: int) -> _Plan:
        key = (spec.shape, spec.dtype, cap)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        aa, aa_specs, ab, ab_spec, bb = self._evolve(spec)
        # Sizes of the bytes at each stage, from the array->bytes output outwards.
        nbytes = ab_spec.nbytes
        size: int | None = None if nbytes is None else ab.encoded_size(nbytes, ab_spec)
        if size is None and nbytes is not None and hasattr(ab, "max_encoded_size") and ab.kind == "array_bytes":
            bound = ab.max_encoded_size(nbytes, ab_spec)
            exact = False
        else:
            bound, exact = size, size is not None
        bounds: list[tuple[int, bool]] = []
        too_big = None
        for c in bb:
            if bound is None:
                bounds.append((cap, False))
            else:
                if bound > cap and getattr(c, "inflates", True):
                    too_big = (
                        f"codec {c.name!r} would decode to {bound} bytes, more than the limit "
                        f"codec.max_decoded_bytes = {cap}"
                    )
                bounds.append((bound, exact))
            if bound is not None:
                nxt = c.encoded_size(bound, ab_spec)
                if nxt is None:
                    exact = False
                    nxt = c.max_encoded_size(bound, ab_spec)
                bound = nxt
        fast_dtype = None
        convert = False
        if not aa and isinstance(ab, (BytesCodec, RawBytesCodec)) and nbytes is not None:
            fast_dtype = ab.stored_dtype(spec.dtype) if isinstance(ab, BytesCodec) else spec.dtype
            convert = fast_dtype != spec.dtype
        unshuffle = 0
        if (
            fast_dtype is not None
            and not convert
            and fast_dtype.kind in "biufcmM"
            and fast_dtype.itemsize > 1
            and bb
            and isinstance(bb[0], NumcodecsBytesBytesCodec)
            and bb[0].codec_id == "shuffle"
            and bb[0].config.get("elementsize") == fast_dtype.itemsize
        ):
            unshuffle = fast_dtype.itemsize
        plan = _Plan(tuple(aa), aa_specs, ab, ab_spec, bb, tuple(bounds), fast_dtype, convert, too_big, unshuffle)
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[key] = plan
        return plan

    # --- chunk coding -----------------------------------------------------------------------

    def decode(self, data: BytesLike, spec: ChunkSpec) -> np.ndarray:
        """Decode stored chunk bytes to an array of exactly ``spec.shape`` and ``spec.dtype``.

        The result may be a read-only view of ``data`` (zero copy for uncompressed chunks):
        copy it before modifying it.

        Raises
        ------
        ChunkDecodeError
            Corrupt, truncated, wrongly sized or oversized (decompression bomb) data.
        """
        plan = self._plan(spec, config.get("codec.max_decoded_bytes"))
        if plan.too_big is not None:
            raise ChunkDecodeError(plan.too_big)
        bb = plan.bb
        if bb:
            bounds = plan.bb_bounds
            ab_spec = plan.ab_spec
            for i in range(len(bb) - 1, -1, -1):
                max_size, exact = bounds[i]
                data = bb[i].decode(data, ab_spec, max_size, exact)  # type: ignore[attr-defined]
        fast = plan.fast_dtype
        if fast is not None:
            try:
                arr = np.frombuffer(data, dtype=fast)
            except (ValueError, TypeError):  # not a whole number of items
                arr = None
            if arr is None or arr.size != plan.ab_spec.size:
                raise ChunkDecodeError(
                    f"chunk holds {byte_view(data).nbytes} bytes, expected "
                    f"{plan.ab_spec.size * fast.itemsize} for {spec.shape} {fast}"
                )
            arr = arr.reshape(spec.shape)
            return arr.astype(spec.dtype) if plan.convert else arr
        arr = plan.ab.decode(data, plan.ab_spec)  # type: ignore[attr-defined]
        for i in range(len(plan.aa) - 1, -1, -1):
            arr = plan.aa[i].decode(arr, plan.aa_specs[i])  # type: ignore[attr-defined]
        if arr.shape != spec.shape or arr.dtype != spec.dtype:
            raise ChunkDecodeError(
                f"codec chain decoded an array of {arr.shape} {arr.dtype}, expected {spec.shape} {spec.dtype}"
            )
        return arr

    def raw_dtype(self, spec: ChunkSpec) -> np.dtype | None:
        """The dtype of chunks of ``spec`` when they are stored as their raw C-order bytes
        (a lone ``bytes`` codec in the array's byte order, or a v2 chain without filters and
        compressor), so that a byte range of the chunk is a run of its elements; else None."""
        plan = self._plan(spec, config.get("codec.max_decoded_bytes"))
        if plan.fast_dtype is None or plan.bb or plan.convert or plan.too_big is not None:
            return None
        return plan.fast_dtype

    def decode_into(self, data: BytesLike, spec: ChunkSpec, dest: np.ndarray, selection: Any) -> None:
        """Write ``decode(data, spec)[selection]`` into ``dest`` (an array of that shape).

        For HDF5's usual chain (``bytes``, byte ``shuffle``, a compressor) with a basic
        ``selection`` the unshuffle is fused with the copy: each byte plane of the decompressed
        chunk is copied straight to its place in ``dest`` by numpy (one pass, no intermediate
        chunk, and without the GIL, which numcodecs' unshuffle holds).  Other chains decode
        and copy.  Errors are those of :meth:`decode`.
        """
        plan = self._plan(spec, config.get("codec.max_decoded_bytes"))
        k = plan.unshuffle
        if k and dest.dtype == spec.dtype and _fusable(selection, spec.ndim, dest, k):
            if plan.too_big is not None:
                raise ChunkDecodeError(plan.too_big)
            bb, bounds, ab_spec = plan.bb, plan.bb_bounds, plan.ab_spec
            for i in range(len(bb) - 1, 0, -1):
                max_size, exact = bounds[i]
                data = bb[i].decode(data, ab_spec, max_size, exact)  # type: ignore[attr-defined]
            view = byte_view(data)
            if view.nbytes != ab_spec.size * k:
                raise ChunkDecodeError(
                    f"chunk holds {view.nbytes} bytes, expected {ab_spec.size * k} for {spec.shape} {plan.fast_dtype}"
                )
            planes = np.frombuffer(view, dtype=np.uint8).reshape((k, *spec.shape))
            sel = (slice(None), *selection)
            src = planes[sel]
            if src.shape[1:] == dest.shape:
                d8 = dest.view(np.uint8)
                for b in range(k):
                    d8[..., b::k] = src[b]
                return
        dest[...] = self.decode(data, spec)[selection]

    def encode(self, array: Any, spec: ChunkSpec) -> bytes:
        """Encode one chunk (``spec.shape``; converted to ``spec.dtype`` if needed) to bytes."""
        arr = np.asarray(array)
        if arr.shape != spec.shape:
            raise CodecError(f"cannot encode an array of shape {arr.shape} as a chunk of shape {spec.shape}")
        if arr.dtype != spec.dtype:
            arr = arr.astype(spec.dtype)
        plan = self._plan(spec, config.get("codec.max_decoded_bytes"))
        for c, s in zip(plan.aa, plan.aa_specs):
            arr = c.encode(arr, s)  # type: ignore[attr-defined]
        data = plan.ab.encode(arr, plan.ab_spec)  # type: ignore[attr-defined]
        for c in plan.bb:
            data = c.encode(data, plan.ab_spec)  # type: ignore[attr-defined]
        if type(data) is bytes:
            return data
        if isinstance(data, np.ndarray):
            return data.tobytes()
        return bytes(byte_view(data))

    def decode_many(
        self, items: Sequence[tuple[BytesLike, ChunkSpec]], *, keys: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """Decode many chunks on the shared thread pool, a batch of chunks per task.

        ``keys`` (aligned with ``items``) name the chunks in error messages.
        """
        items = list(items)
        if not items:
            return []
        return _map_named(self.decode, items, keys)

    def encode_many(
        self, items: Sequence[tuple[Any, ChunkSpec]], *, keys: Sequence[str] | None = None
    ) -> list[bytes]:
        """Encode many chunks on the shared thread pool, a batch of chunks per task."""
        items = list(items)
        if not items:
            return []
        return _map_named(self.encode, items, keys)

    # --- introspection ----------------------------------------------------------------------

    @property
    def partial_codec(self) -> Codec | None:
        """The array->bytes codec when it does partial I/O itself (``read_partial_many``), no
        bytes->bytes codec follows it (sharding without an outer checksum) and no array->array
        codec precedes it (selections would have to be mapped through, e.g., a transpose);
        else None."""
        ab = self.array_bytes_codec
        if self.bytes_bytes_codecs or self.array_array_codecs or not hasattr(ab, "read_partial_many"):
            return None
        return ab

    def encoded_size(self, spec: ChunkSpec) -> int | None:
        """The stored size of every chunk of ``spec`` when the whole chain is fixed-size
        (e.g. a sharding index: ``bytes`` + ``crc32c``); else None."""
        aa, _, ab, ab_spec, bb = self._evolve(spec)
        n = ab_spec.nbytes
        if n is None:
            return None
        size = ab.encoded_size(n, ab_spec)
        for c in bb:
            if size is None:
                return None
            size = c.encoded_size(size, ab_spec)
        return size

    def to_json(self) -> list[dict[str, Any]]:
        """The v3 ``codecs`` list (for a v2 pipeline: its v3 equivalent, numcodecs codecs as
        ``numcodecs.<id>`` and the v2 layout as ``transpose`` + ``bytes``)."""
        if self.zarr_format == 3:
            return [c.to_json() for c in self.codecs]
        if self.order == "F" and self.chunk_shape is None:
            raise CodecError("the v3 form of an order='F' v2 chain needs the chunk shape")
        # With a chunk shape, self.codecs already starts with the transpose standing for 'F'.
        out: list[dict[str, Any]] = []
        for c in self.codecs:
            if isinstance(c, RawBytesCodec):
                out.append(c.v3_equivalent(self._ab_dtype()).to_json())
            else:
                out.append(c.to_json())
        return out

    def _ab_dtype(self) -> np.dtype:
        s = ChunkSpec(self.chunk_shape or (), self.dtype, None)
        for c in self.array_array_codecs:
            s = c.resolve(s)
        return s.dtype

    def to_v2_json(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
        """``(compressor, filters)`` as a v2 ``.zarray`` holds them."""
        v2 = getattr(self, "_v2_json", None)
        if v2 is not None:
            return v2
        if self.zarr_format == 2:
            return None, None
        raise CodecError("a v3 codec pipeline has no v2 (compressor, filters) form")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CodecPipeline)
            and self.zarr_format == other.zarr_format
            and self.order == other.order
            and self.dtype == other.dtype
            and self.codecs == other.codecs
        )

    def __hash__(self) -> int:
        return hash((self.zarr_format, self.order, self.dtype, tuple(c.name for c in self.codecs)))

    def __repr__(self) -> str:
        extra = f", zarr_format=2, order={self.order!r}" if self.zarr_format == 2 else ""
        return f"CodecPipeline({list(self.codecs)!r}, dtype={self.dtype}{extra})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_plans"] = {}
        return state


def _fusable(selection: Any, ndim: int, dest: np.ndarray, itemsize: int) -> bool:
    """Whether a fused unshuffle can write ``chunk[selection]`` into ``dest`` byte plane by
    byte plane: a basic selection (ints and slices) and a destination whose last axis is
    contiguous (so its bytes can be viewed as ``uint8`` without copying)."""
    return (
        isinstance(selection, tuple)
        and len(selection) == ndim
        and dest.ndim >= 1
        and dest.dtype.itemsize == itemsize
        and dest.strides[-1] == itemsize
        and all(isinstance(s, (int, np.integer, slice)) for s in selection)
    )


def _map_named(fn: Any, items: list[tuple[Any, ChunkSpec]], keys: Sequence[str] | None) -> list[Any]:
    """``fn(data, spec)`` over ``items`` on the shared pool, errors naming the chunk's key."""

    def work(batch: list[tuple[int, tuple[Any, ChunkSpec]]]) -> list[Any]:
        out = []
        for idx, (data, spec) in batch:
            try:
                out.append(fn(data, spec))
            except ChunkrefError as exc:
                named = _named(exc, keys, idx)
                if named is exc:
                    raise
                raise named from exc
        return out

    parts = map_batched(work, list(enumerate(items)), min_batch=_min_batch(items[0][1]))
    return [x for part in parts for x in part]


def _min_batch(spec: ChunkSpec) -> int:
    nbytes = spec.nbytes or 64 * spec.size
    return max(1, _BATCH_BYTES // max(1, nbytes))


def _named(exc: ChunkrefError, keys: Sequence[str] | None, idx: int) -> ChunkrefError:
    if keys is None:
        return exc
    key = keys[idx]
    if key in str(exc):
        return exc
    try:
        return type(exc)(f"chunk {key!r}: {exc}")
    except TypeError:
        return exc

