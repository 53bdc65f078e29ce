"""The HDF5 / NetCDF4 scanner: a whole file hierarchy -> a :class:`~chunkref.manifest.Manifest`.

One pass over the link tree.  Groups become Zarr groups, datasets Zarr arrays whose chunks are
byte ranges of the file (or inline bytes).  Every dataset either becomes an array that reads
exactly what h5py reads, or is recorded in ``manifest.refused`` with the reason: a scan never
aborts for one variable, and never maps something it does not understand to fill values.

What is handled, per dataset:

* layouts: chunked (``chunk_iter`` into numpy columns), contiguous (one extent, split into
  contiguous sub-chunks when large), compact (inline bytes), no storage yet (all fill), external
  raw storage, virtual (refs into the source files when each mapping lines up with chunks);
* filters: see :mod:`._filters`; chunks stored with a filter skipped (non-zero filter mask) are
  decoded with the filters actually applied, re-encoded with the full pipeline and inlined;
* types: see :mod:`._types`; variable-length strings and object references are read with h5py
  and stored inline (``vlen-utf8``);
* links: soft links (the target appears at the link path), external links (followed; the
  other file becomes another source), hard links (an object reachable twice appears twice);
  link cycles and dangling links are reported;
* NetCDF-4: dimension scales -> ``dimension_names`` / ``_ARRAY_DIMENSIONS``; axes without one
  get netCDF-C style ``phony_dim_<n>`` names; the bookkeeping attributes are dropped; datasets
  that are "a netCDF dimension but not a netCDF variable" are not variables (netCDF4 and xarray
  show none: their names live on in the variables' dimension names).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import h5py
import numcodecs
import numpy as np
from h5py import h5d, h5s

import chunkref.zarr.codecs.hdf5  # noqa: F401  (registers the chunkref.hdf5.* numcodecs codecs)
from chunkref.errors import ScanError
from chunkref.manifest import Manifest
from chunkref.manifest.table import ChunkTable
from chunkref.reference.trust import record_scanned
from chunkref.scanners.hdf5._chunks import ChunkIndexError, contiguous_refs, list_chunks, split_contiguous
from chunkref.scanners.hdf5._filters import Filter, FilterRefusal, pipeline_codecs, read_pipeline, v3_codec
from chunkref.scanners.hdf5._io import OpenFile, join_relative, open_hdf5
from chunkref.scanners.hdf5._types import TypeInfo, TypeRefusal, analyse_type, attr_json, cf_fill_attr_v3
from chunkref.zarr.dtypes import (
    DataType,
    data_type_to_v3_json,
    dtype_endian,
    dtype_to_v2_json,
    encode_fill_value,
)

#: Attributes that are HDF5 dimension-scale or netCDF-4 machinery, not user metadata.
NETCDF_HIDDEN_ATTRS = frozenset(
    {
        "DIMENSION_LIST",
        "REFERENCE_LIST",
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_NCProperties",
        "_nc3_strict",
        "_SuperblockVersion",
        "_IsNetcdf4",
    }
)
_NC_DIM_ONLY = b"This is a netCDF dimension but not a netCDF variable"
_NC_NON_COORD = "_nc4_non_coord_"
_MAX_EXTERNAL_DEPTH = 8
#: Re-encoded chunks (stored with a filter skipped) inlined per variable at most.
MAX_REENCODED_INLINE_BYTES = 64 << 20
#: Default target size of the pieces a large contiguous dataset is split into.
DEFAULT_CONTIGUOUS_SPLIT_BYTES = 8 << 20


class Refusal(Exception):
    """A variable cannot be represented; the message is the reason recorded in the manifest."""


def _basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _to_bytes(buf: Any) -> bytes:
    """Codec output (bytes, bytearray, memoryview or numpy array) as bytes."""
    if isinstance(buf, bytes):
        return buf
    if isinstance(buf, np.ndarray):
        return np.ascontiguousarray(buf).view(np.uint8).tobytes()
    return bytes(memoryview(buf).cast("B"))


def _as_bytes(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, np.ndarray):
        return v.tobytes()
    if isinstance(v, np.bytes_):
        return bytes(v)
    return str(v).encode()


class _Scanner:
    def __init__(
        self,
        url: str,
        *,
        storage_options: dict | None,
        zarr_format: int,
        inline_threshold: int,
        contiguous_split_bytes: int,
        skip_variables: Iterable[str],
    ) -> None:
        self.url = url
        self.storage_options = storage_options
        self.zarr_format = zarr_format
        self.inline_threshold = int(inline_threshold)
        self.split_bytes = int(contiguous_split_bytes)
        self.skip = {s.strip("/") for s in skip_variables}
        self.manifest = Manifest()
        self.files: dict[str, OpenFile] = {}
        self.sources: dict[str, int] = {}
        # netCDF-C numbers phony dimensions across the file; lengths are reused per group.
        self._phony_counter = 0
        self._phony_by_group: dict[str, dict[int, list[str]]] = {}
        # Per array: the identity of each axis' dimension (scale path or phony name) and
        # whether the axis is unlimited, to give netCDF unlimited dimensions one length.
        self._axes: dict[str, tuple[list[str], tuple]] = {}
        # Per (file, group): its dimension scales, for naming axes that have none attached.
        self._scales_cache: dict[tuple[str, str], list[tuple[str, int, bool, str]]] = {}

    # -- files -----------------------------------------------------------------------------------

    def open(self, url: str) -> OpenFile:
        of = self.files.get(url)
        if of is None:
            try:
                of = open_hdf5(url, self.storage_options)
            except FileNotFoundError as exc:
                raise ScanError(f"{url}: file not found ({exc})") from exc
            except Exception as exc:  # h5py raises OSError, RuntimeError, ValueError... on damage
                raise ScanError(f"{url}: not a readable HDF5 file ({type(exc).__name__}: {exc})") from exc
            self.files[url] = of
        return of

    def source(self, of: OpenFile) -> int:
        idx = self.sources.get(of.url)
        if idx is None:
            idx = self.manifest.add_source(of.url, size=of.size, mtime=of.mtime, etag=of.etag)
            self.sources[of.url] = idx
        return idx

    def close(self) -> None:
        for of in self.files.values():
            try:
                of.close()
            except Exception:  # closing a damaged file must not hide the scan's own result
                pass

    # -- walk ------------------------------------------------------------------------------------

    def run(self) -> Manifest:
        root = self.open(self.url)
        try:
            self.manifest.location = None
            self.walk_group(root, root.h5["/"], "", (self._key(root, root.h5["/"]),), depth=0)
            self.unify_unlimited()
        except ScanError:
            raise
        except Exception as exc:
            raise ScanError(f"{self.url}: scan failed while walking the file ({type(exc).__name__}: {exc})") from exc
        return self.manifest

    @staticmethod
    def _key(of: OpenFile, obj: Any) -> tuple[str, int]:
        return (of.url, hash(obj.id))

    def walk_group(self, of: OpenFile, group: h5py.Group, path: str, ancestors: tuple, depth: int) -> None:
        self.manifest.add_group(path, self.attributes(of, group, path), zarr_format=self.zarr_format)
        try:
            names = list(group)
        except Exception as exc:
            raise ScanError(f"{of.url}: cannot list group {group.name!r} ({type(exc).__name__}: {exc})") from exc
        for name in names:
            child = _join(path, name)
            if child in self.skip:
                continue
            try:
                self.visit_link(of, group, name, child, ancestors, depth)
            except ScanError:
                raise
            except Refusal as exc:
                self.manifest.refuse(child, str(exc))
            except Exception as exc:  # one bad object never aborts the scan
                self.manifest.refuse(child, f"{type(exc).__name__}: {exc}")

    def visit_link(self, of: OpenFile, group: h5py.Group, name: str, path: str, ancestors: tuple, depth: int) -> None:
        link = group.get(name, getlink=True)
        target_of = of
        if isinstance(link, h5py.ExternalLink):
            if depth >= _MAX_EXTERNAL_DEPTH:
                raise Refusal(f"external link chain deeper than {_MAX_EXTERNAL_DEPTH} files")
            ext_url = join_relative(of.url, link.filename)
            try:
                target_of = self.open(ext_url)
            except ScanError as exc:
                raise Refusal(f"external link to {link.filename}:{link.path}: {exc}") from exc
            obj = target_of.h5.get(link.path)
            if obj is None:
                raise Refusal(f"external link to {link.filename}:{link.path}: no such object")
            depth += 1
        else:
            obj = group.get(name)
            if obj is None:
                where = link.path if isinstance(link, h5py.SoftLink) else name
                raise Refusal(f"dangling link to {where}")
        if isinstance(obj, h5py.Group):
            key = self._key(target_of, obj)
            if key in ancestors:
                target = link.path if isinstance(link, h5py.SoftLink) else obj.name
                raise Refusal(f"link cycle: {path} points back to its ancestor {target}")
            self.walk_group(target_of, obj, path, (*ancestors, key), depth)
        elif isinstance(obj, h5py.Dataset):
            self.dataset(target_of, obj, path)
        # Committed datatypes are type definitions, not variables: nothing to represent.

    # -- attributes ------------------------------------------------------------------------------

    def _resolver(self, of: OpenFile):
        def resolve(ref: h5py.Reference) -> str | None:
            try:
                return of.h5[ref].name
            except Exception:  # a dangling reference resolves to nothing
                return None

        return resolve

    def read_attrs(self, of: OpenFile, obj: Any, path: str) -> dict[str, Any]:
        """Raw attribute values; unreadable ones are reported by name."""
        out: dict[str, Any] = {}
        try:
            names = list(obj.attrs)
        except Exception as exc:
            raise Refusal(f"cannot list attributes ({type(exc).__name__}: {exc})") from exc
        bad = []
        for name in names:
            try:
                out[name] = obj.attrs[name]
            except Exception as exc:  # e.g. attribute types h5py cannot convert
                bad.append(f"{name} ({type(exc).__name__}: {exc})")
        if bad:
            raise Refusal(f"unreadable attribute(s): {'; '.join(bad)}")
        return out

    def attributes(self, of: OpenFile, obj: Any, path: str, raw: dict | None = None) -> dict[str, Any]:
        raw = self.read_attrs(of, obj, path) if raw is None else raw
        resolve = self._resolver(of)
        is_scale = _is_dimension_scale(raw)
        out = {}
        types = {}
        for name, value in raw.items():
            if name in NETCDF_HIDDEN_ATTRS or (is_scale and name in ("CLASS", "NAME")):
                continue
            out[name] = attr_json(value, resolve)
            dt = _numeric_attr_dtype(value)
            if dt is not None:
                types[name] = dt
        if types:
            out[ATTRIBUTE_TYPES] = types
        return out

    # -- datasets --------------------------------------------------------------------------------

    def dataset(self, of: OpenFile, ds: h5py.Dataset, path: str) -> None:
        raw_attrs = self.read_attrs(of, ds, path)
        name_attr = raw_attrs.get("NAME")
        if _is_dimension_scale(raw_attrs) and isinstance(name_attr, (bytes, np.bytes_)) and bytes(name_attr).startswith(
            _NC_DIM_ONLY
        ):
            return  # a netCDF dimension, not a variable (see the module docstring)
        if ds.shape is None:
            raise Refusal("null dataspace (h5py.Empty): no shape and no values; Zarr has no equivalent")
        dcpl = ds.id.get_create_plist()
        layout = dcpl.get_layout()
        filters = read_pipeline(dcpl) if layout == h5d.CHUNKED else []
        try:
            tinfo = analyse_type(ds, nbit=any(f.id == 5 for f in filters))
        except TypeRefusal as exc:
            raise Refusal(str(exc)) from exc
        attrs = self.attributes(of, ds, path, raw_attrs)
        attrs.update(tinfo.attributes)
        dims = self.dimension_names(of, ds, path, raw_attrs)
        shape = tuple(int(s) for s in ds.shape) + tinfo.extra_shape
        dims = dims + [f"{_basename(path)}_dim_{i}" for i in range(len(dims), len(shape))]

        if tinfo.kind in ("vlen_str", "objref"):
            self.materialised(of, ds, path, tinfo, shape, attrs, dims)
            return
        if layout == h5d.CHUNKED:
            chunks, table, codecs = self.chunked(of, ds, path, tinfo, filters)
        elif layout == h5d.CONTIGUOUS:
            chunks, table = self.contiguous(of, ds, dcpl, tinfo, shape)
            codecs = []
        elif layout == h5d.COMPACT:
            chunks, table = self.compact(ds, tinfo, shape)
            codecs = []
        elif layout == h5d.VIRTUAL:
            chunks, table, codecs = self.virtual(of, ds, dcpl, tinfo, path)
        else:
            raise Refusal(f"unknown HDF5 storage layout {layout}")
        fill = ds.fillvalue
        self.add_array(path, tinfo, shape, chunks, codecs, fill, attrs, dims, table)

    def chunked(
        self, of: OpenFile, ds: h5py.Dataset, path: str, tinfo: TypeInfo, filters: list[Filter]
    ) -> tuple[tuple[int, ...], ChunkTable, list[dict]]:
        h5chunks = tuple(int(c) for c in ds.chunks)
        # Validate the pipeline before listing chunks (a refusal costs no index walk).
        try:
            codecs = pipeline_codecs(
                filters, tinfo.dtype.itemsize, tinfo.nbit_kinds, _chunk_nbytes(h5chunks + tinfo.extra_shape, tinfo)
            )
        except FilterRefusal as exc:
            raise Refusal(str(exc)) from exc
        self._check_codecs(codecs)
        grid = tuple(math.ceil(s / c) for s, c in zip(ds.shape, h5chunks))
        try:
            cols = list_chunks(ds.id, h5chunks, grid)
        except ChunkIndexError as exc:
            raise Refusal(f"chunk index: {exc}") from exc
        chunks = h5chunks + tinfo.extra_shape
        table = ChunkTable.empty(grid + (1,) * len(tinfo.extra_shape))
        src = self.source(of)
        # chunk_iter and H5Dget_offset report absolute file positions (user block included).
        table.set_refs(cols.flat, src, cols.offset, cols.length)
        masked = np.nonzero(cols.filter_mask)[0]
        if masked.size:
            self._reencode(ds, path, tinfo, filters, codecs, table, cols, masked, h5chunks, grid)
        small = np.nonzero((cols.length <= self.inline_threshold) & (cols.filter_mask == 0))[0]
        for i in small.tolist():
            coords = np.unravel_index(int(cols.flat[i]), grid)
            fmask, data = ds.id.read_direct_chunk(tuple(int(c) * s for c, s in zip(coords, h5chunks)))
            table.set_inline(tuple(int(c) for c in coords) + (0,) * len(tinfo.extra_shape), bytes(data))
        return chunks, table, codecs

    def _check_codecs(self, codecs: list[dict]) -> None:
        for conf in codecs:
            try:
                numcodecs.get_codec(dict(conf))
            except Exception as exc:
                if conf["id"].startswith("imagecodecs_"):
                    try:
                        import imagecodecs.numcodecs as icn

                        icn.register_codecs(verbose=False)
                        numcodecs.get_codec(dict(conf))
                        continue
                    except Exception as exc2:
                        raise Refusal(f"codec {conf['id']} unavailable: {exc2}") from exc2
                raise Refusal(f"codec {conf['id']} cannot be built from {conf}: {exc}") from exc

    def _reencode(
        self,
        ds: h5py.Dataset,
        path: str,
        tinfo: TypeInfo,
        filters: list[Filter],
        codecs: list[dict],
        table: ChunkTable,
        cols: Any,
        masked: np.ndarray,
        h5chunks: tuple[int, ...],
        grid: tuple[int, ...],
    ) -> None:
        """Inline chunks HDF5 stored with some filters skipped, re-encoded with all of them."""
        objs = [numcodecs.get_codec(dict(c)) for c in codecs]
        total = 0
        for i in masked.tolist():
            mask = int(cols.filter_mask[i])
            coords = np.unravel_index(int(cols.flat[i]), grid)
            start = tuple(int(c) * s for c, s in zip(coords, h5chunks))
            _, data = ds.id.read_direct_chunk(start)
            buf: Any = bytes(data)
            for k in reversed(range(len(objs))):
                if not mask & (1 << k):
                    buf = objs[k].decode(buf)
            raw = _to_bytes(buf)
            try:
                for obj in objs:
                    raw = _to_bytes(obj.encode(raw))
            except Exception as exc:
                raise Refusal(
                    f"chunk at {start} was stored with filter(s) skipped (mask {mask:#x}) and the pipeline "
                    f"cannot re-encode it ({type(exc).__name__}: {exc})"
                ) from exc
            total += len(raw)
            if total > MAX_REENCODED_INLINE_BYTES:
                raise Refusal(
                    f"{masked.size} chunks were stored with filters skipped; re-encoding them inline exceeds "
                    f"{MAX_REENCODED_INLINE_BYTES} bytes"
                )
            table.set_inline(tuple(int(c) for c in coords) + (0,) * len(tinfo.extra_shape), raw)

    def contiguous(
        self, of: OpenFile, ds: h5py.Dataset, dcpl: Any, tinfo: TypeInfo, shape: tuple[int, ...]
    ) -> tuple[tuple[int, ...], ChunkTable]:
        itemsize = tinfo.dtype.itemsize
        nbytes = math.prod(shape) * itemsize
        if dcpl.get_external_count() > 0:
            return self.external_storage(of, dcpl, shape, itemsize)
        chunk_shape = tuple(max(1, s) for s in split_contiguous(shape, itemsize, self.split_bytes))
        grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunk_shape))
        table = ChunkTable.empty(grid)
        offset = ds.id.get_offset()
        if offset is None or nbytes == 0:
            return chunk_shape, table  # no storage allocated: every chunk reads as the fill value
        if nbytes <= self.inline_threshold:
            table.set_inline((0,) * len(shape), _element_bytes(ds, tinfo))
            return chunk_shape, table
        storage = ds.id.get_storage_size()
        if storage < nbytes:
            raise Refusal(f"contiguous storage of {storage} bytes is smaller than the {nbytes}-byte dataset")
        flat, offsets, piece = contiguous_refs(int(offset), shape, chunk_shape, itemsize)
        table.set_refs(flat, self.source(of), offsets, np.uint64(piece))
        return chunk_shape, table

    def external_storage(
        self, of: OpenFile, dcpl: Any, shape: tuple[int, ...], itemsize: int
    ) -> tuple[tuple[int, ...], ChunkTable]:
        """Contiguous data kept in external raw files (``H5Pset_external``)."""
        nbytes = math.prod(shape) * itemsize
        segments = [dcpl.get_external(i) for i in range(dcpl.get_external_count())]
        row = itemsize * math.prod(shape[1:]) if shape else itemsize
        if len(segments) == 1:
            chunk_shape = tuple(max(1, s) for s in shape)
            sizes = [nbytes]
        else:
            sizes = [int(s[2]) for s in segments]
            first = sizes[0]
            ok = shape and row and first % row == 0 and all(s == first for s in sizes[:-1])
            ok = ok and sum(sizes) >= nbytes
            if not ok:
                raise Refusal("external raw storage split into segments that do not align with whole rows")
            chunk_shape = (first // row, *shape[1:])
        grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunk_shape))
        table = ChunkTable.empty(grid)
        piece = math.prod(chunk_shape) * itemsize
        for i in range(math.prod(grid)):
            name, offset, size = segments[i]
            fname = name.decode() if isinstance(name, bytes) else str(name)
            url = join_relative(of.url, fname)
            src = self.manifest.add_source(url)
            length = min(piece, nbytes - i * piece)
            if length < piece:
                raise Refusal("the last external raw segment is shorter than a whole chunk")
            table.set_refs(np.array([i]), src, np.uint64(int(offset)), np.uint64(length))
        return chunk_shape, table

    def compact(self, ds: h5py.Dataset, tinfo: TypeInfo, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ChunkTable]:
        chunk_shape = tuple(max(1, s) for s in shape)
        table = ChunkTable.empty((1,) * len(shape) if all(shape) else tuple(0 if s == 0 else 1 for s in shape))
        if table.nchunks:
            table.set_inline((0,) * len(shape), _element_bytes(ds, tinfo))
        return chunk_shape, table

    def materialised(
        self,
        of: OpenFile,
        ds: h5py.Dataset,
        path: str,
        tinfo: TypeInfo,
        shape: tuple[int, ...],
        attrs: dict,
        dims: list[str],
    ) -> None:
        """Variable-length strings / object references: read now, stored inline as vlen-utf8."""
        if tinfo.kind == "vlen_str":
            try:
                values = ds.asstr()[()]
            except UnicodeDecodeError as exc:
                raise Refusal(f"variable-length strings that are not valid UTF-8 ({exc})") from exc
        else:
            refs = ds[()]
            resolve = self._resolver(of)
            flat = np.asarray(refs, dtype=object).reshape(-1)
            values = np.array([resolve(r) if r else "" for r in flat], dtype=object).reshape(np.shape(refs))
        values = np.asarray(values, dtype=object)
        if values.shape != shape:
            values = values.reshape(shape)
        chunks = tuple(int(c) for c in ds.chunks) if ds.chunks else tuple(max(1, s) for s in shape)
        grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks))
        table = ChunkTable.empty(grid)
        codec = numcodecs.VLenUTF8()
        for coords in np.ndindex(*grid) if grid else [()]:
            sel = tuple(slice(c * n, (c + 1) * n) for c, n in zip(coords, chunks))
            block = values[sel]
            full = np.full(chunks, "", dtype=object)
            full[tuple(slice(0, s) for s in block.shape)] = block
            table.set_inline(coords, codec.encode(full.reshape(-1)))
        self.add_array(path, tinfo, shape, chunks, [], "", attrs, dims, table)

    def virtual(
        self, of: OpenFile, ds: h5py.Dataset, dcpl: Any, tinfo: TypeInfo, path: str
    ) -> tuple[tuple[int, ...], ChunkTable, list[dict]]:
        """Virtual datasets: refs into the source datasets when every mapping lines up with chunks."""
        if tinfo.extra_shape:
            raise Refusal("virtual dataset of an HDF5 array type")
        shape = tuple(int(s) for s in ds.shape)
        n = dcpl.get_virtual_count()
        mappings = []
        for i in range(n):
            vspace = dcpl.get_virtual_vspace(i)
            fname = dcpl.get_virtual_filename(i)
            dname = dcpl.get_virtual_dsetname(i)
            srcspace = dcpl.get_virtual_srcspace(i)
            start, block = _single_block(vspace, shape)
            if start is None:
                raise Refusal(f"virtual mapping {i} selects a non-rectangular or strided region of the dataset")
            src_of = of if fname == "." else None
            if src_of is None:
                if "%" in fname or "%" in dname:
                    raise Refusal(f"virtual mapping {i} uses a printf-style source name ({fname}:{dname})")
                try:
                    src_of = self.open(join_relative(of.url, fname))
                except ScanError as exc:
                    raise Refusal(f"virtual mapping {i}: source file {fname}: {exc}") from exc
            src = src_of.h5.get(dname)
            if not isinstance(src, h5py.Dataset):
                raise Refusal(f"virtual mapping {i}: source {fname}:{dname} is not a dataset")
            src_shape = tuple(int(s) for s in src.shape)
            sstart, sblock = _single_block(srcspace, src_shape)
            if sstart is None or any(sstart) or sblock != src_shape or sblock != block:
                raise Refusal(
                    f"virtual mapping {i}: source selection of {fname}:{dname} is not the whole source dataset "
                    "mapped onto an equal-shaped block"
                )
            if src.dtype != ds.dtype:
                raise Refusal(f"virtual mapping {i}: source {fname}:{dname} has dtype {src.dtype}, not {ds.dtype}")
            mappings.append((start, block, src_of, src))
        if not mappings:
            return tuple(max(1, s) for s in shape), ChunkTable.empty((1,) * len(shape)), []
        # Every source must be chunked alike (or all contiguous) with the same filters.
        layouts = set()
        chunk_shapes = set()
        pipelines = set()
        for _start, block, _sof, src in mappings:
            sdcpl = src.id.get_create_plist()
            lay = sdcpl.get_layout()
            if lay == h5d.VIRTUAL:
                raise Refusal("virtual dataset whose source is itself virtual")
            if lay == h5d.COMPACT:
                raise Refusal("virtual dataset with a compact source dataset")
            layouts.add(lay)
            chunk_shapes.add(tuple(src.chunks) if lay == h5d.CHUNKED else tuple(block))
            pipelines.add(tuple((f.id, f.cd_values) for f in read_pipeline(sdcpl)) if lay == h5d.CHUNKED else ())
        if len(layouts) != 1 or len(chunk_shapes) != 1 or len(pipelines) != 1:
            raise Refusal("virtual dataset sources differ in layout, chunk shape or filters")
        chunks = next(iter(chunk_shapes))
        lay = next(iter(layouts))
        for start, block, _sof, _src in mappings:
            for ax, (s0, b, c, total) in enumerate(zip(start, block, chunks, shape)):
                if s0 % c or (b % c and s0 + b != total):
                    raise Refusal(
                        f"virtual mapping at {start} of shape {block} does not line up with {chunks} chunks "
                        f"along axis {ax}"
                    )
        grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks))
        table = ChunkTable.empty(grid)
        covered = np.zeros(math.prod(grid), bool)
        first_src = mappings[0][3]
        filters = read_pipeline(first_src.id.get_create_plist()) if lay == h5d.CHUNKED else []
        try:
            codecs = pipeline_codecs(filters, tinfo.dtype.itemsize, tinfo.nbit_kinds, _chunk_nbytes(chunks, tinfo))
        except FilterRefusal as exc:
            raise Refusal(str(exc)) from exc
        self._check_codecs(codecs)
        for start, _block, sof, src in mappings:
            sgrid = tuple(math.ceil(s / c) for s, c in zip(src.shape, chunks))
            origin = np.asarray([s // c for s, c in zip(start, chunks)], np.int64)
            if lay == h5d.CHUNKED:
                cols = list_chunks(src.id, tuple(chunks), sgrid)
                if cols.filter_mask.any():
                    raise Refusal("a virtual source stores chunks with filters skipped")
                local = np.stack(np.unravel_index(cols.flat, sgrid), axis=1) if cols.flat.size else np.zeros((0, len(grid)), np.int64)
                offsets, lengths = cols.offset, cols.length
            else:
                off = src.id.get_offset()
                if off is None:
                    continue
                local = np.zeros((1, len(grid)), np.int64)
                offsets = np.array([int(off)], np.uint64)
                lengths = np.array([math.prod(src.shape) * tinfo.dtype.itemsize], np.uint64)
            if local.shape[0] == 0:
                continue
            flat = np.ravel_multi_index(tuple((local + origin).T), grid)
            if covered[flat].any():
                raise Refusal("virtual mappings overlap")
            covered[flat] = True
            table.set_refs(flat, self.source(sof), offsets, lengths)
        return chunks, table, codecs

    # -- dimension names -------------------------------------------------------------------------

    def dimension_names(self, of: OpenFile, ds: h5py.Dataset, path: str, raw_attrs: dict) -> list[str]:
        ndim = len(ds.shape)
        names: list[str | None] = [None] * ndim
        ids: list[str | None] = [None] * ndim
        if _is_dimension_scale(raw_attrs) and ndim >= 1:
            names[0] = _dim_name(ds.name)
            ids[0] = f"{of.url}:{ds.name}"
        if "DIMENSION_LIST" in raw_attrs:
            dl = raw_attrs["DIMENSION_LIST"]
            for axis in range(min(ndim, len(dl))):
                refs = dl[axis]
                if names[axis] is None and len(refs):
                    try:
                        # netCDF-C keeps the last scale attached to an axis (it overwrites
                        # while iterating them), so we do too.
                        scale_name = of.h5[refs[-1]].name
                        names[axis] = _dim_name(scale_name)
                        ids[axis] = f"{of.url}:{scale_name}"
                    except Exception:  # a dangling scale reference: fall back to a phony name
                        names[axis] = None
        group = path.rsplit("/", 1)[0] if "/" in path else ""
        used: set[str] = set()
        by_len = self._phony_by_group.setdefault(group, {})
        group_scales = self._group_scales(of, group)
        maxshape = ds.maxshape or ds.shape
        for axis in range(ndim):
            if names[axis] is not None:
                continue
            length = int(ds.shape[axis])
            unlimited = maxshape[axis] is None
            # As netCDF-C does, an axis without a scale takes the group's first dimension of
            # the same length (and unlimitedness) before a phony dimension is made for it.
            match = next(
                (n for n, ln, unl, ident in group_scales if ln == length and unl == unlimited and n not in used), None
            )
            if match is not None:
                scale = next(ident for n, _, _, ident in group_scales if n == match)
                used.add(match)
                names[axis] = match
                ids[axis] = scale
                continue
            candidates = by_len.setdefault(length, [])
            name = next((c for c in candidates if c not in used), None)
            if name is None:
                name = f"phony_dim_{self._phony_counter}"
                self._phony_counter += 1
                candidates.append(name)
            used.add(name)
            names[axis] = name
            ids[axis] = f"phony:{group}:{name}"
        self._axes[path] = ([str(i) for i in ids], tuple(ds.maxshape or ()))
        return [str(n) for n in names]

    def _group_scales(self, of: OpenFile, group: str) -> list[tuple[str, int, bool, str]]:
        """The dimension scales of a group in link order: (dimension name, length, unlimited, id)."""
        cache = self._scales_cache
        key = (of.url, group)
        if key not in cache:
            found = []
            try:
                grp = of.h5[group or "/"]
                for child in grp.values():
                    if isinstance(child, h5py.Dataset) and child.ndim == 1 and _is_dimension_scale(dict(child.attrs)):
                        maxshape = child.maxshape or child.shape
                        found.append((_dim_name(child.name), int(child.shape[0]), maxshape[0] is None, f"{of.url}:{child.name}"))
            except Exception:  # unreadable members are reported where they are scanned
                found = []
            cache[key] = found
        return cache[key]

    def unify_unlimited(self) -> None:
        """Give every array the current length of its netCDF unlimited dimensions.

        netCDF-4 variables along an unlimited dimension read as fill beyond their own HDF5
        extent up to the dimension's length (the longest variable); xarray needs equal sizes.
        An array is extended only when its extent ends on a chunk boundary, so the added
        region is made of whole absent chunks (reading as the fill value); otherwise the bytes
        HDF5 left in the partial chunk past the extent are unspecified, and it keeps its shape.
        """
        lengths: dict[str, int] = {}
        for path, (ids, _maxshape) in self._axes.items():
            if path not in self.manifest.tables:
                continue
            shape = _array_shape(self.manifest.nodes[path])
            for axis, dim in enumerate(ids):
                if axis < len(shape):
                    lengths[dim] = max(lengths.get(dim, 0), shape[axis])
        for path, (ids, maxshape) in self._axes.items():
            if path not in self.manifest.tables:
                continue
            docs = self.manifest.nodes[path]
            shape = list(_array_shape(docs))
            chunks = _array_chunks(docs)
            new = list(shape)
            for axis, dim in enumerate(ids):
                if axis < len(maxshape) and maxshape[axis] is None and lengths.get(dim, 0) > shape[axis]:
                    if shape[axis] % chunks[axis] == 0:
                        new[axis] = lengths[dim]
            if new != shape:
                self._grow(path, tuple(shape), tuple(new), chunks)

    def _grow(self, path: str, old: tuple[int, ...], new: tuple[int, ...], chunks: tuple[int, ...]) -> None:
        old_t = self.manifest.tables[path]
        grid = tuple(math.ceil(s / c) for s, c in zip(new, chunks))
        table = ChunkTable.empty(grid)
        present = np.nonzero(old_t.present())[0]
        if present.size:
            coords = np.unravel_index(present, old_t.grid_shape)
            flat = np.ravel_multi_index(coords, grid)
            inline = present[old_t.source[present] < 0]
            refs = present[old_t.source[present] >= 0]
            ref_flat = flat[old_t.source[present] >= 0]
            table.set_refs(ref_flat, old_t.source[refs], old_t.offset[refs], old_t.length[refs])
            for old_flat, new_flat in zip(inline.tolist(), flat[old_t.source[present] < 0].tolist()):
                table.set_inline(np.unravel_index(new_flat, grid), old_t.inline[old_flat])
        docs = self.manifest.nodes[path]
        if "zarr.json" in docs:
            docs["zarr.json"]["shape"] = list(new)
        else:
            docs[".zarray"]["shape"] = list(new)
            if docs[".zarray"]["fill_value"] is None:
                # The added region must read as the HDF5 fill value, which v2 null cannot say.
                self.manifest.refuse(path, "extended along an unlimited dimension but Zarr v2 has no fill value for it")
                self.manifest.remove(path)
                return
        self.manifest.add_array(path, dict(docs), table)

    # -- metadata --------------------------------------------------------------------------------

    def add_array(
        self,
        path: str,
        tinfo: TypeInfo,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        codecs: list[dict],
        hdf5_fill: Any,
        attrs: dict,
        dims: list[str],
        table: ChunkTable,
    ) -> None:
        vlen = tinfo.kind in ("vlen_str", "objref")
        dt = DataType(np.dtype(object), "string") if vlen else DataType(tinfo.dtype)
        chunks = tuple(max(1, int(c)) for c in chunks)
        attrs = dict(attrs)
        cf_fill = attrs.pop("_FillValue", None)
        raw_cf_fill = cf_fill
        if self.zarr_format == 3:
            if vlen:
                fill_json = ""
                codec_json = [{"name": "vlen-utf8", "configuration": {}}]
            else:
                fill_json = encode_fill_value(_cast_fill(hdf5_fill, tinfo.dtype), dt, 3)
                endian = dtype_endian(tinfo.dtype)
                bytes_codec: dict[str, Any] = {"name": "bytes", "configuration": {}}
                if endian is not None:
                    bytes_codec["configuration"]["endian"] = endian
                codec_json = [bytes_codec] + [v3_codec(c) for c in codecs]
            if raw_cf_fill is not None:
                attrs["_FillValue"] = cf_fill_attr_v3(raw_cf_fill, tinfo.dtype) if not vlen else attr_json(raw_cf_fill)
            doc = {
                "zarr_format": 3,
                "node_type": "array",
                "shape": list(shape),
                "data_type": data_type_to_v3_json(dt),
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": fill_json,
                "codecs": codec_json,
                "attributes": attrs,
                "dimension_names": dims,
            }
            self.manifest.add_array(path, {"zarr.json": doc}, table)
            return
        # Zarr v2: the fill value is what xarray masks, so it must be the CF _FillValue or null.
        if vlen:
            fill_json = None
            filters: list[dict] | None = [{"id": "vlen-utf8"}]
        else:
            filters = [dict(c) for c in codecs] or None
            missing = bool((~table.present()).any())
            h5fill = _cast_fill(hdf5_fill, tinfo.dtype)
            if raw_cf_fill is not None:
                cf = _cast_fill(np.asarray(raw_cf_fill).reshape(-1)[0], tinfo.dtype)
                if missing and not _same_value(cf, h5fill):
                    raise Refusal(
                        "Zarr v2 cannot hold both the HDF5 fill value of the unwritten chunks and a different "
                        "_FillValue attribute; scan with zarr_format=3"
                    )
                fill_json = encode_fill_value(cf, dt, 2)
            elif missing and not _is_zero(h5fill):
                fill_json = encode_fill_value(h5fill, dt, 2)
            else:
                fill_json = None
        zarray = {
            "zarr_format": 2,
            "shape": list(shape),
            "chunks": list(chunks),
            "dtype": dtype_to_v2_json(dt),
            "compressor": None,
            "fill_value": fill_json,
            "order": "C",
            "filters": filters,
            "dimension_separator": ".",
        }
        zattrs = dict(attrs)
        zattrs["_ARRAY_DIMENSIONS"] = dims
        self.manifest.add_array(path, {".zarray": zarray, ".zattrs": zattrs}, table)


def _array_shape(docs: dict) -> tuple[int, ...]:
    doc = docs.get("zarr.json") or docs[".zarray"]
    return tuple(doc["shape"])


def _array_chunks(docs: dict) -> tuple[int, ...]:
    if "zarr.json" in docs:
        return tuple(docs["zarr.json"]["chunk_grid"]["configuration"]["chunk_shape"])
    return tuple(docs[".zarray"]["chunks"])


def _chunk_nbytes(chunks: tuple[int, ...], tinfo: TypeInfo) -> int:
    return math.prod(chunks) * tinfo.dtype.itemsize


def _element_bytes(ds: h5py.Dataset, tinfo: TypeInfo) -> bytes:
    """The dataset's values as stored bytes (read through h5py, whose dtype keeps the layout)."""
    data = np.ascontiguousarray(ds[()])
    if data.dtype.itemsize != tinfo.dtype.itemsize:
        raise Refusal(f"h5py reads {data.dtype} elements, the stored type has {tinfo.dtype.itemsize} bytes")
    if data.dtype.names is None and data.dtype != tinfo.dtype:
        data = data.astype(tinfo.dtype)  # e.g. enum -> base integer in the stored byte order
    return data.tobytes()


def _cast_fill(value: Any, dtype: np.dtype) -> Any:
    """The HDF5 fill value as a scalar of ``dtype`` (h5py hands back numpy scalars or bytes)."""
    if dtype.kind in "SV" or dtype.names is not None:
        raw = _as_bytes(np.asarray(value).tobytes() if not isinstance(value, (bytes, np.bytes_)) else value)
        raw = raw.ljust(dtype.itemsize, b"\0")[: dtype.itemsize]
        return np.frombuffer(raw, dtype=dtype)[0]
    if dtype.kind == "b":
        return np.bool_(bool(np.asarray(value).reshape(-1)[0]))
    return np.asarray(value).astype(dtype).reshape(-1)[0]


def _same_value(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fc" and np.isnan(a).all() and np.isnan(b).all():
        return True
    return a.tobytes() == b.astype(a.dtype).tobytes()


def _is_zero(v: Any) -> bool:
    return not np.asarray(v).tobytes().strip(b"\0")


#: Where JSON loses an attribute's numpy type (float32, int16, ...), it is recorded under this
#: attribute so that readers that care (our xarray backend) can restore it, as NCZarr does with
#: its ``_nczarr_attr`` types.  Default JSON types (float64, int64, bool) are not recorded.
ATTRIBUTE_TYPES = "_chunkref_attribute_types"


def _numeric_attr_dtype(value: Any) -> str | None:
    if not isinstance(value, (np.generic, np.ndarray)):
        return None
    dt = np.dtype(value.dtype)
    if dt.kind not in "iuf" or dt in (np.dtype("float64"), np.dtype("int64")):
        return None
    return dt.newbyteorder("<").str if dt.byteorder not in ("=", "|") else dt.str


def _is_dimension_scale(attrs: dict) -> bool:
    cls = attrs.get("CLASS")
    return isinstance(cls, (bytes, np.bytes_, str)) and _as_bytes(cls).rstrip(b"\0") == b"DIMENSION_SCALE"


def _dim_name(h5name: str) -> str:
    base = _basename(h5name)
    return base[len(_NC_NON_COORD) :] if base.startswith(_NC_NON_COORD) else base


def _single_block(space: h5s.SpaceID, shape: tuple[int, ...]) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """(start, shape) of a selection that is one rectangular block, else (None, None)."""
    sel = space.get_select_type()
    if sel == h5s.SEL_ALL:
        # A stored "all" selection may carry no extent: it covers the whole dataset.
        return (0,) * len(shape), tuple(int(s) for s in shape)
    if sel != h5s.SEL_HYPERSLABS:
        return None, None
    if space.get_select_hyper_nblocks() != 1:
        return None, None
    start, end = space.get_select_bounds()
    return tuple(int(s) for s in start), tuple(int(e) - int(s) + 1 for s, e in zip(start, end))


def scan_hdf5(
    url: str,
    *,
    storage_options: dict | None = None,
    zarr_format: int = 3,
    inline_threshold: int = 100,
    contiguous_split_bytes: int = DEFAULT_CONTIGUOUS_SPLIT_BYTES,
    skip_variables: Iterable[str] = (),
    strict: bool = False,
    stats: dict | None = None,
) -> Manifest:
    """Scan an HDF5 or NetCDF-4 file into a reference :class:`~chunkref.manifest.Manifest`.

    Parameters
    ----------
    url
        Local path or fsspec URL (``s3://``, ``https://``, ``memory://``...).
    storage_options
        fsspec options for remote URLs (and for external links / VDS sources they lead to).
    zarr_format
        3 (default): ``zarr.json`` documents, the HDF5 fill value as ``fill_value`` and the CF
        attributes kept (``_FillValue`` encoded as xarray's Zarr v3 reader expects); 2:
        ``.zarray``/``.zattrs`` with ``fill_value`` equal to ``_FillValue`` (or null), so xarray
        never masks real values, and ``_ARRAY_DIMENSIONS``.
    inline_threshold
        Chunks of at most this many stored bytes are copied into the manifest.
    contiguous_split_bytes
        Contiguous datasets larger than this are split into contiguous pieces of about this
        size along their leading axes (0: never split).
    skip_variables
        Paths (``group/var``) not to scan.
    strict
        Raise :class:`~chunkref.errors.ScanError` listing every refused variable instead of
        returning them in ``manifest.refused``.
    stats
        If given, filled with ``requests`` and ``bytes_read`` of remote reads.

    Returns
    -------
    Manifest
        Groups and arrays of the file; ``refused`` maps each variable that could not be
        represented to the reason.

    Raises
    ------
    ScanError
        The file cannot be opened or walked (names the file), or ``strict`` and variables were
        refused.
    """
    if zarr_format not in (2, 3):
        raise ScanError(f"{url}: zarr_format must be 2 or 3, got {zarr_format!r}")
    scanner = _Scanner(
        url,
        storage_options=storage_options,
        zarr_format=zarr_format,
        inline_threshold=inline_threshold,
        contiguous_split_bytes=contiguous_split_bytes,
        skip_variables=skip_variables,
    )
    try:
        manifest = scanner.run()
        if stats is not None:
            total = {"requests": 0, "bytes_read": 0}
            for of in scanner.files.values():
                for k, v in of.stats().items():
                    total[k] += v
            stats.update(total)
    finally:
        scanner.close()
    if strict and manifest.refused:
        listing = "; ".join(f"{p}: {r}" for p, r in sorted(manifest.refused.items()))
        raise ScanError(f"{url}: {len(manifest.refused)} variable(s) could not be represented: {listing}")
    record_scanned(manifest)
    return manifest
