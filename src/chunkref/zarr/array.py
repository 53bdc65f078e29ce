"""Zarr arrays: numpy indexing over chunked storage, v2 and v3, regular and rectilinear grids.

An :class:`Array` is a light, picklable handle: a store, a path, immutable metadata and a few
runtime settings.  Every read or write call plans its chunk requests with
:mod:`chunkref.zarr.indexing` and executes them in one batch through :mod:`chunkref.zarr.chunkio`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref.config import config as global_config
from chunkref.errors import InvalidArgumentError, NoChunkShapeError
from chunkref.zarr import chunkio, indexing
from chunkref.zarr.attributes import Attributes
from chunkref.zarr.codecs.base import ChunkSpec
from chunkref.zarr.grid import ChunkGrid
from chunkref.zarr.node import ARRAY_SETTINGS, Node, resolve_array_config
from chunkref.zarr.nodes import node_prefix, write_array_metadata


class Array(Node):
    """A Zarr array (v2 or v3) in a store.

    Use :func:`chunkref.open_array`, :func:`chunkref.create_array` or a :class:`Group` to get one.
    Indexing follows numpy: ``a[...]`` (basic, and boolean masks), ``a.oindex[...]``
    (orthogonal), ``a.vindex[...]`` (coordinates), ``a.blocks[...]`` (chunk units); ``a.lazy[...]``
    gives a view that reads nothing until converted with ``np.asarray``.
    """

    _kind = "array"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._metadata.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._metadata.dtype

    @property
    def nbytes(self) -> int:
        """Size of the array's data in memory (object dtypes count their pointers)."""
        return self.size * self.dtype.itemsize

    @property
    def fill_value(self) -> Any:
        return self._metadata.fill_value

    @property
    def chunk_grid(self) -> ChunkGrid:
        return self._metadata.chunk_grid

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape (for sharded arrays the inner chunk shape), regular grids only.

        Rectilinear arrays have no single chunk shape: use :attr:`chunk_sizes`.
        """
        inner = self._inner_chunk_shape()
        if inner is not None:
            return inner
        grid = self.chunk_grid
        if not grid.is_regular:
            raise NoChunkShapeError(
                f"array {self.name!r} has a rectilinear chunk grid (variable chunk sizes); "
                "use .chunk_sizes for its per-axis edge lengths"
            )
        return grid.chunk_shape  # type: ignore[attr-defined]

    @property
    def shards(self) -> tuple[int, ...] | None:
        """The shard shape of a sharded array (regular outer grid), else None."""
        if self._inner_chunk_shape() is None:
            return None
        grid = self.chunk_grid
        if not grid.is_regular:
            raise NoChunkShapeError(
                f"array {self.name!r} has a rectilinear shard grid; use .chunk_sizes for its shard edges"
            )
        return grid.chunk_shape  # type: ignore[attr-defined]

    @property
    def chunk_sizes(self) -> tuple[tuple[int, ...], ...]:
        """Per axis, the length of each chunk (shard, when sharded) inside the array.

        Works for regular and rectilinear grids and sums to :attr:`shape`; it is the form dask
        expects: ``dask.array.from_array(a, chunks=a.chunk_sizes)``.
        """
        return self.chunk_grid.chunk_sizes

    @property
    def nchunks(self) -> int:
        """Number of chunks (shards, when sharded) in the grid."""
        return self.chunk_grid.nchunks

    @property
    def nchunks_initialized(self) -> int:
        """Number of chunks (shards) actually stored (lists the array's keys)."""
        prefix = node_prefix(self._path)
        meta_names = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}
        n = 0
        for key in self._store.list_prefix(prefix):
            rest = key[len(prefix) :]
            if rest not in meta_names:
                n += 1
        return n

    @property
    def attrs(self) -> Attributes:
        """User attributes; assignments are written to the store at once."""
        return Attributes(self._metadata.attributes, self._set_attributes, read_only=self.read_only, name=self.name)

    @property
    def dimension_names(self) -> tuple[str | None, ...] | None:
        return self._metadata.dimension_names

    @property
    def config(self) -> dict[str, Any]:
        """Effective runtime settings (explicit ones, then ``chunkref.config`` defaults)."""
        return {k: self._setting(k) for k in ARRAY_SETTINGS}

    @property
    def order(self) -> str:
        return self._setting("order")

    @property
    def write_empty_chunks(self) -> bool:
        return bool(self._setting("write_empty_chunks"))

    @property
    def codec_pipeline(self) -> Any:
        return self._metadata.codec_pipeline

    @property
    def compressors(self) -> tuple[Any, ...]:
        return tuple(self.codec_pipeline.bytes_bytes_codecs)

    @property
    def filters(self) -> tuple[Any, ...]:
        return tuple(self.codec_pipeline.array_array_codecs)

    @property
    def serializer(self) -> Any:
        return self.codec_pipeline.array_bytes_codec

    def with_config(self, config: Mapping[str, Any]) -> Array:
        """The same array with other runtime settings (``write_empty_chunks``, ...)."""
        merged = {**self._config, **resolve_array_config(config)}
        return Array(self._store, self._path, self._metadata, read_only=self._read_only, config=merged)

    def _setting(self, name: str) -> Any:
        if name in self._config:
            return self._config[name]
        return global_config.get(f"array.{name}")

    def _inner_chunk_shape(self) -> tuple[int, ...] | None:
        codec = self.codec_pipeline.array_bytes_codec
        inner = getattr(codec, "chunk_shape", None) if getattr(codec, "name", "") == "sharding_indexed" else None
        return tuple(inner) if inner is not None else None

    # -- representation ------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<chunkref.Array {self.name!r} shape={self.shape} dtype={self.dtype}{' read-only' if self.read_only else ''}>"

    @property
    def info(self) -> ArrayInfo:
        """A summary of the array (type, format, dtype, shape, chunking, codecs)."""
        grid = self.chunk_grid
        inner = self._inner_chunk_shape()
        if grid.is_regular:
            outer = str(grid.chunk_shape)  # type: ignore[attr-defined]
        else:
            outer = "rectilinear " + str(tuple(len(s) for s in grid.chunk_sizes)) + " chunks"
        return ArrayInfo(
            name=self.name,
            zarr_format=self.zarr_format,
            dtype=str(self.dtype),
            fill_value=self.fill_value,
            shape=self.shape,
            chunk_shape=str(inner) if inner is not None else outer,
            shard_shape=outer if inner is not None else None,
            order=self.order,
            read_only=self.read_only,
            store_type=type(self._store).__name__,
            filters=tuple(repr(c) for c in self.filters),
            serializer=repr(self.serializer),
            compressors=tuple(repr(c) for c in self.compressors),
            nbytes=self.nbytes,
        )

    # -- numpy protocol ------------------------------------------------------------------------

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __iter__(self) -> Iterator[Any]:
        if not self.shape:
            raise TypeError("iteration over a 0-d array")
        # Read one chunk-row at a time rather than one element at a time.
        offsets = self.chunk_grid.offsets[0]
        for k in range(len(offsets) - 1):
            block = self[int(offsets[k]) : int(min(offsets[k + 1], self.shape[0]))]
            yield from block

    # -- reading -------------------------------------------------------------------------------

    def __getitem__(self, selection: Any) -> Any:
        kind = indexing.selection_kind(selection, self.shape)
        return self._get(selection, kind)

    def get_basic_selection(self, selection: Any = Ellipsis) -> Any:
        return self._get(selection, "basic")

    def get_orthogonal_selection(self, selection: Any) -> Any:
        return self._get(selection, "orthogonal")

    def get_coordinate_selection(self, selection: Any) -> Any:
        return self._get(selection, "vindex")

    def get_mask_selection(self, mask: Any) -> Any:
        return self._get(mask, "vindex")

    def get_block_selection(self, selection: Any) -> Any:
        return self._get(selection, "blocks")

    @property
    def oindex(self) -> _Indexed:
        """Orthogonal (outer) indexing: per-axis int arrays, masks, slices."""
        return _Indexed(self, "orthogonal")

    @property
    def vindex(self) -> _Indexed:
        """Vectorised (coordinate / point) indexing and full boolean masks."""
        return _Indexed(self, "vindex")

    @property
    def blocks(self) -> _Indexed:
        """Selection in units of chunks (shards, when sharded)."""
        return _Indexed(self, "blocks")

    @property
    def lazy(self) -> _LazyIndexer:
        """``a.lazy[sel]`` gives a :class:`LazyArray` view; nothing is read until it is used."""
        from chunkref.zarr.lazy import LazyArray

        return _LazyIndexer(LazyArray, self)

    def _io_options(self) -> chunkio.IOOptions:
        return chunkio.IOOptions(
            array_path=self.name,
            write_empty_chunks=bool(self._setting("write_empty_chunks")),
            read_missing_chunks=bool(self._setting("read_missing_chunks")),
            coalesce_max_gap=int(global_config.get("array.coalesce_max_gap_bytes")),
            coalesce_max_bytes=int(global_config.get("array.coalesce_max_bytes")),
        )

    def _requests(self, indexer: Any) -> list[chunkio.ChunkRequest]:
        grid = self.chunk_grid
        prefix = node_prefix(self._path)
        fill = self._fill_for_io()
        dtype = self.dtype
        projections = indexer.projections()
        if not projections:
            return []
        if self.zarr_format == 2 and self._metadata.dimension_separator is None and grid.ndim > 1:
            self._detect_legacy_separator()
        # Keys for all chunks at once (vectorised string building), then one request each.
        coords = np.array([p.coords for p in projections], dtype=np.int64).reshape(len(projections), grid.ndim)
        keys = self._metadata.chunk_keys(coords)
        Req = chunkio.ChunkRequest
        if grid.is_regular:
            spec = ChunkSpec(grid.chunk_shape, dtype, fill)  # type: ignore[attr-defined]
            return [
                Req(prefix + k, p.coords, spec, p.chunk_selection, p.out_selection, p.is_complete)
                for k, p in zip(keys, projections)
            ]
        return [
            Req(prefix + k, p.coords, ChunkSpec(grid.chunk_shape_at(p.coords), dtype, fill), p.chunk_selection,
                p.out_selection, p.is_complete)
            for k, p in zip(keys, projections)
        ]

    def _detect_legacy_separator(self) -> None:
        """Settle the key separator of a v2 array whose ``.zarray`` does not state it.

        The spec default is ``"."``, but zarr-python 2's NestedDirectoryStore wrote ``"/"`` keys
        without recording it.  One listing of the array's folder tells them apart: flat keys of
        an n-d array contain dots (``0.0``), nested ones are folders of digits (``0/0``).
        """
        names = self._store.list_dir(node_prefix(self._path))
        chunk_names = [n for n in names if n[:1].isdigit()]
        nested = bool(chunk_names) and not any("." in n for n in chunk_names)
        self._metadata = self._metadata.evolve(dimension_separator="/" if nested else ".")

    def _fill_for_io(self) -> Any:
        fill = self.fill_value
        if fill is None:  # v2 null: undefined content, read as zeros / empty as zarr-python does
            return np.zeros((), dtype=self.dtype)[()] if not self.dtype.hasobject else ""
        return fill

    def _get(self, selection: Any, kind: str) -> Any:
        indexer = indexing.make_indexer(selection, self.chunk_grid, kind)
        out = np.empty(indexer.buffer_shape, dtype=self.dtype, order=self.order)
        if out.size:
            chunkio.read_chunks(self._store, self.codec_pipeline, self._requests(indexer), out, self._io_options())
        if indexer.buffer_shape != indexer.shape:
            # The buffer is the selection's points in C order; ``order`` is only the layout.
            out = out.reshape(indexer.shape)
            if self.order == "F":
                out = np.asfortranarray(out)
        return out

    # -- writing -------------------------------------------------------------------------------

    def __setitem__(self, selection: Any, value: Any) -> None:
        kind = indexing.selection_kind(selection, self.shape)
        self._set(selection, value, kind)

    def set_basic_selection(self, selection: Any, value: Any) -> None:
        self._set(selection, value, "basic")

    def set_orthogonal_selection(self, selection: Any, value: Any) -> None:
        self._set(selection, value, "orthogonal")

    def set_coordinate_selection(self, selection: Any, value: Any) -> None:
        self._set(selection, value, "vindex")

    def set_mask_selection(self, mask: Any, value: Any) -> None:
        self._set(mask, value, "vindex")

    def set_block_selection(self, selection: Any, value: Any) -> None:
        self._set(selection, value, "blocks")

    def batch(self) -> AbstractContextManager[Array]:
        """Buffer writes in memory; each chunk (each shard, when sharded) is written once at
        the end of the block.  Reads inside see the writes; if the block raises, nothing is
        written.  See :mod:`chunkref.zarr.write_buffer`.

        Examples
        --------
        >>> with array.batch():  # doctest: +SKIP
        ...     for i in range(array.shape[0]):
        ...         array[i] = row(i)
        """
        from chunkref.zarr.write_buffer import batch_writes

        return batch_writes(self)

    def _set(self, selection: Any, value: Any, kind: str) -> None:
        self._check_writable()
        indexer = indexing.make_indexer(selection, self.chunk_grid, kind)
        if math.prod(indexer.shape) == 0:
            return
        value = self._prepare_value(value, indexer)
        chunkio.write_chunks(self._store, self.codec_pipeline, self._requests(indexer), value, self._io_options())

    def _prepare_value(self, value: Any, indexer: Any) -> np.ndarray:
        dtype = self.dtype
        if dtype.hasobject:
            arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value.astype(object)
            self._check_vlen_elements(arr)
        else:
            try:
                arr = np.asarray(value, dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"cannot write {type(value).__name__} into array {self.name!r} of dtype {dtype}: {exc}") from exc
        try:
            arr = np.broadcast_to(arr, indexer.shape)
        except ValueError as exc:
            raise InvalidArgumentError(
                f"value of shape {arr.shape} cannot be broadcast to selection shape {indexer.shape} of array {self.name!r}"
            ) from exc
        if indexer.buffer_shape != indexer.shape:
            arr = arr.reshape(indexer.buffer_shape)
        return arr

    def _check_vlen_elements(self, arr: np.ndarray) -> None:
        """Refuse values a vlen codec cannot store before anything is written.

        Encoding happens per chunk (for large sharded writes, in waves while earlier waves are
        stored), so a bad element found there could leave part of the write behind.
        """
        kind = getattr(getattr(self._metadata, "data_type", None), "vlen", None)
        want = {"string": str, "bytes": bytes}.get(kind or "")
        if want is None:
            return
        flat = arr.reshape(-1)
        ok = np.fromiter((type(x) is want or isinstance(x, want) for x in flat), dtype=bool, count=flat.size)
        if not ok.all():
            at = int(np.argmin(ok))
            bad = flat[at]
            where = tuple(int(i) for i in np.unravel_index(at, arr.shape)) if arr.ndim else ()
            raise InvalidArgumentError(
                f"array {self.name!r} holds {'strings' if want is str else 'bytes'}; cannot write "
                f"{type(bad).__name__} {bad!r} (at {where} of the value written); nothing was written"
            )

    # -- resizing ------------------------------------------------------------------------------

    def _set_metadata(self, metadata: Any) -> None:
        write_array_metadata(self._store, self._path, metadata)
        self._metadata = metadata

    def _set_attributes(self, attributes: dict[str, Any]) -> None:
        self._check_writable()
        self._set_metadata(self._metadata.evolve(attributes=attributes))

    def update_attributes(self, new: Mapping[str, Any]) -> Attributes:
        """Merge ``new`` into the attributes and write them once."""
        self._set_attributes({**self._metadata.attributes, **dict(new)})
        return self.attrs

    def resize(self, *shape: Any) -> None:
        """Change the shape; chunks that fall entirely outside the new shape are deleted.

        Stored chunks cut by a shrinking edge are rewritten with the fill value past the new
        edge, so that growing the array again shows the fill value there, not the old data.
        """
        self._check_writable()
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        new_shape = tuple(int(s) for s in shape)
        if len(new_shape) != self.ndim:
            raise InvalidArgumentError(f"resize of {self.name!r}: new shape {new_shape} must have {self.ndim} dimensions")
        if any(s < 0 for s in new_shape):
            raise InvalidArgumentError(f"resize of {self.name!r}: new shape {new_shape} must not be negative")
        old_grid = self.chunk_grid
        new_meta = self._metadata.evolve(shape=new_shape)
        new_grid = new_meta.chunk_grid
        doomed = indexing.chunks_outside(old_grid, new_grid)
        if len(doomed):
            prefix = node_prefix(self._path)
            self._store.delete_many([prefix + self._metadata.chunk_key(tuple(int(c) for c in row)) for row in doomed])
        # Chunks first, metadata last: an interrupted resize leaves the old shape readable.
        Array(self._store, self._path, new_meta, config=self._config)._clear_past_edges(self.shape)
        self._set_metadata(new_meta)

    def _clear_past_edges(self, old_shape: tuple[int, ...]) -> None:
        """Rewrite the stored chunks that straddle an edge that moved inwards from ``old_shape``.

        Reads never look past the shape, but the region between the new and the old edge comes
        back into view if the array grows again and must then hold the fill value.  Only chunks
        that exist are rewritten (missing ones already read as fill).
        """
        grid = self.chunk_grid
        for axis, (old, new) in enumerate(zip(old_shape, self.shape)):
            offsets = grid.offsets[axis]
            if new >= old or new == 0 or int(offsets[-1]) <= new:
                continue  # not shrunk, nothing left, or the edge falls on a chunk boundary
            region = tuple(slice(int(offsets[-2]), new) if b == axis else slice(None) for b in range(self.ndim))
            indexer = indexing.make_indexer(region, grid, "basic")
            requests = self._requests(indexer)
            blobs = self._store.get_many([(r.key, None) for r in requests])
            present = [(r, b) for r, b in zip(requests, blobs) if b is not None]
            if not present:
                continue
            value = np.empty(indexer.buffer_shape, dtype=self.dtype)
            for req, blob in present:
                value[req.out_selection] = chunkio.decode_chunk(self.codec_pipeline, blob, req)[req.chunk_selection]
            # Each request covers its chunk's whole in-bounds part, so write_chunks encodes a
            # fresh chunk padded with the fill value without reading it again.
            chunkio.write_chunks(self._store, self.codec_pipeline, [r for r, _ in present], value, self._io_options())

    def append(self, data: Any, axis: int = 0) -> tuple[int, ...]:
        """Grow the array along ``axis`` and write ``data`` into the new region; returns the new shape."""
        self._check_writable()
        data = np.asarray(data, dtype=self.dtype)
        if data.ndim != self.ndim:
            raise InvalidArgumentError(f"append to {self.name!r}: data has {data.ndim} dimensions, array has {self.ndim}")
        axis = axis % self.ndim
        for a, (n, m) in enumerate(zip(self.shape, data.shape)):
            if a != axis and n != m:
                raise InvalidArgumentError(
                    f"append to {self.name!r}: data shape {data.shape} does not match array shape {self.shape} "
                    f"outside axis {axis}"
                )
        old = self.shape[axis]
        new_shape = list(self.shape)
        new_shape[axis] = old + data.shape[axis]
        self.resize(tuple(new_shape))
        region = tuple(slice(old, None) if a == axis else slice(None) for a in range(self.ndim))
        self[region] = data
        return self.shape


class _Indexed:
    """``a.oindex`` / ``a.vindex`` / ``a.blocks``: the same array with another indexing kind."""

    __slots__ = ("_array", "_kind")

    def __init__(self, array: Array, kind: str) -> None:
        self._array = array
        self._kind = kind

    def __getitem__(self, selection: Any) -> Any:
        return self._array._get(selection, self._kind)

    def __setitem__(self, selection: Any, value: Any) -> None:
        self._array._set(selection, value, self._kind)


class _LazyIndexer:
    __slots__ = ("_cls", "_array")

    def __init__(self, cls: Any, array: Array) -> None:
        self._cls = cls
        self._array = array

    def __getitem__(self, selection: Any) -> Any:
        return self._cls(self._array)[selection]


@dataclass(frozen=True)
class ArrayInfo:
    """What :attr:`Array.info` reports."""

    name: str
    zarr_format: int
    dtype: str
    fill_value: Any
    shape: tuple[int, ...]
    chunk_shape: str
    shard_shape: str | None
    order: str
    read_only: bool
    store_type: str
    filters: tuple[str, ...]
    serializer: str
    compressors: tuple[str, ...]
    nbytes: int

    def __str__(self) -> str:
        rows = [
            ("Type", "Array"),
            ("Name", self.name),
            ("Zarr format", self.zarr_format),
            ("Data type", self.dtype),
            ("Fill value", self.fill_value),
            ("Shape", self.shape),
        ]
        if self.shard_shape is not None:
            rows.append(("Shard shape", self.shard_shape))
        rows += [
            ("Chunk shape", self.chunk_shape),
            ("Order", self.order),
            ("Read-only", self.read_only),
            ("Store type", self.store_type),
            ("Filters", self.filters),
            ("Serializer", self.serializer),
            ("Compressors", self.compressors),
            ("No. bytes", self.nbytes),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}} : {v}" for k, v in rows)

    __repr__ = __str__
