"""combine: many manifests -> one, along existing or new dimensions, with variable chunk edges.

How it works
------------
Inputs are taken one at a time (a path is loaded, used and dropped).  Each input array becomes
a *piece* of an output variable, keyed by the input's position along the concatenation
dimensions the variable has:

* the key along an existing dimension is the first value of its coordinate variable, rebased
  to the first input's time units when they differ (or the input's order when there is no
  coordinate); along a new dimension it comes from ``coords`` (a list, a regex on the file
  name, ``"attr:<name>"``, or a callable);
* pieces with the same key (a variable without the dimension, a coordinate repeated by every
  tile of a mosaic row, ``time`` in both a ``tas`` and a ``pr`` file) must be identical: same
  references, or equal values when small enough to compare; otherwise ``conflicts`` decides.

Memory: a piece keeps only what the output needs (:mod:`.blocks`): its chunk-table block,
appended to the variable's growing column buffers, its chunk edges along the concatenation
dims, two integers (input, block start) and, for coordinates, their values.  Its metadata is
checked against the first input's when it arrives, then dropped: per variable only the first
input's document is kept (a kept piece that a later comparison must read is read with that
document and its own edges).  Combining 10,000 monthly files costs ~1.5 KB per input beyond the
output's chunk columns, most of it the output's own source records and time values
(``tests/test_combine_memory.py``, ``benchmarks/combine.py``).

At the end the keys are sorted and every variable's blocks are copied into preallocated output
columns (one slice copy per column when the inputs came in order, else one per piece; never
per-chunk Python).  The output grid's edges are exactly the inputs' chunks: each input's edges
clipped to its extent, so a short last chunk inside the result is a short chunk.  Chunks stored
larger than declared (HDF5 pads partial chunks) get the ``chunkref.padded`` codec.  When every
edge is equal the grid is ``regular``, else ``rectilinear``.

Coordinates along the concatenation dimensions are materialised and stored inline; time values
in different units are rebased exactly (:mod:`.times`).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chunkref.errors import ChunkrefError, CodecError, CombineError, InvalidArgumentError
from chunkref.manifest.combine.blocks import AxisEdges, Columns, Growable, Pieces
from chunkref.manifest.combine.times import (
    RebaseError,
    TimeUnits,
    parse_time_units,
    rebase_parameters,
    rebase_values,
)
from chunkref.manifest.combine.variables import (
    ATTRIBUTE_TYPES,
    CF_FIELDS,
    VarInfo,
    check_agreement,
    same_value,
    var_info,
)
from chunkref.manifest.manifest import V3_DOC, Manifest
from chunkref.manifest.sources import is_local, location_dir, resolve_url
from chunkref.manifest.table import ABSENT, INLINE, ChunkTable
from chunkref.reference.trust import record_scanned, scanned_sources
from chunkref.zarr.codecs.padded import PaddedCodec
from chunkref.zarr.grid import RectilinearGrid, RegularGrid

__all__ = ["CONFLICT_RULES", "combine", "combine_append", "load_input"]

CONFLICT_RULES = ("error", "first", "drop")
ManifestLike = Any  # Manifest | str | os.PathLike
CoordSpec = Any  # Sequence | re.Pattern | str ("attr:<name>") | Callable[[Manifest, int, str], Any]

_DEFAULT_INLINE = 1 << 20
_DEFAULT_COMPARE = 16 << 20


# --- inputs ---------------------------------------------------------------------------------


def load_input(item: ManifestLike, storage_options: Mapping[str, Any] | None = None) -> tuple[Manifest, str]:
    """``(manifest, label)`` for a Manifest or a path/URL (a manifest file, or a file to scan)."""
    if isinstance(item, Manifest):
        label = item.location or (item.sources[0].url if item.sources else "<manifest>")
        return item, label
    if isinstance(item, (str, os.PathLike)):
        url = os.fspath(item)
        from chunkref.entry import scan

        try:
            m = scan(url, storage_options=storage_options)
        except ChunkrefError as exc:
            raise CombineError(f"{url}: cannot be loaded: {exc}", file=url, field="input") from exc
        if m.location is None and url.lower().endswith(".json"):
            m.location = url
        return m, url
    raise InvalidArgumentError(f"combine inputs are Manifests or paths/URLs, got {type(item).__name__}")


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def _auto_value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


# --- what is kept per input -----------------------------------------------------------------


@dataclass(eq=False)
class _Part:
    """An input array in full, for comparing or reading it: the one being added, or a kept
    :class:`_Piece` rebuilt from the first input's metadata and its own edges (transient)."""

    label: str
    shape: tuple[int, ...]
    nbytes: int
    table: ChunkTable
    allow: tuple[str, ...]
    doc: dict[str, Any] | None  # None: rebuilt from the variable's first input when read
    values: np.ndarray | None = None
    units: TimeUnits | None = None
    info: VarInfo | None = None  # the input's own metadata (only for the input being added)
    piece: int | None = None  # index of the kept piece this was rebuilt from (values are cached on it)
    edges: tuple[list[np.ndarray], list[np.ndarray]] | None = None  # declared, stored (rebuilt parts)


@dataclass(eq=False)
class _Var:
    path: str
    ref: VarInfo  # the first input's array: the only full metadata kept per variable
    ref_label: str
    ref_input: int
    concat: tuple[str, ...]  # the concatenation dims this variable has, in output axis order
    identical: bool = False  # copied from the first input unchecked (identical_dims)
    attrs: dict[str, Any] = field(default_factory=dict)
    dropped_attrs: set[str] = field(default_factory=set)
    time_like: bool = False
    coord_of: str | None = None  # the concat dim whose coordinate this variable is
    bounds_of: str | None = None  # the variable whose bounds this is (inherits its time units)
    ref_units: TimeUnits | None = None  # time units of the first input's array
    values_bytes: int = 0  # coordinates: bytes of every piece's values so far
    rebase: bool = False  # coordinates: some piece's time units differ from the target
    pieces: Pieces = field(init=False)  # by key ids along `concat`
    cols: Columns = field(init=False)
    edges: list[AxisEdges] = field(init=False)  # per concat dim
    axes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.pieces = Pieces(len(self.concat))
        self.cols = Columns(self.path)
        self.edges = [AxisEdges() for _ in self.concat]
        self.axes = {d: self.ref.dims.index(d) for d in self.concat}

    def piece_grid(self, kk: tuple[int, ...]) -> tuple[int, ...]:
        """Chunk-grid shape of the piece at key ids ``kk``."""
        g = list(self.ref.grid.grid_shape)
        for j, k in enumerate(self.concat):
            g[self.axes[k]] = self.edges[j].count_of(kk[j])
        return tuple(g)


class _DimKeys:
    """The keys (positions) seen along one concatenation dimension, numbered in order of first
    appearance, with the extent every variable must have there."""

    __slots__ = ("ids", "values", "extent", "extent_input", "extent_path")

    def __init__(self) -> None:
        self.ids: dict[Any, int] = {}
        self.values: list[Any] = []
        self.extent = Growable(np.int64, fill=-1)
        self.extent_input = Growable(np.int64, fill=-1)
        self.extent_path: list[str] = []

    def id_of(self, key: Any) -> int:
        kid = self.ids.get(key)
        if kid is None:
            kid = self.ids[key] = len(self.values)
            self.values.append(key)
            self.extent.resize(kid + 1)
            self.extent_input.resize(kid + 1)
            self.extent_path.append("")
        return kid


# Input allowance modes (see _Combiner._allow_of): the input's own sources / only ``allow=``.
_OWN_SOURCES = None
_ONLY_ALLOW = ""


class _Combiner:
    def __init__(
        self,
        concat_dims: tuple[str, ...],
        *,
        coords: Mapping[str, CoordSpec],
        positions: Sequence[Sequence[int]] | None,
        identical: frozenset[str],
        conflicts: str,
        attrs: str,
        sort: bool,
        missing: str,
        inline_threshold: int,
        compare_bytes: int,
        allow: tuple[str, ...],
        storage_options: Mapping[str, Any] | None,
    ) -> None:
        self.concat_dims = concat_dims
        self.coords = dict(coords)
        self.positions = positions
        self.identical = identical
        self.conflicts = conflicts
        self.attr_rule = attrs
        self.sort = sort
        self.missing = missing
        self.inline_threshold = inline_threshold
        self.compare_bytes = compare_bytes
        self.allow = allow
        self.storage_options = storage_options
        self.out = Manifest()
        self.vars: dict[str, _Var] = {}
        self.dropped: set[str] = set()
        self.dim_new: dict[str, bool] = {}
        self.dims: dict[str, _DimKeys] = {k: _DimKeys() for k in concat_dims}
        self.descending: dict[str, bool] = {}
        self.coord_units: dict[str, TimeUnits | None] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.group_dropped: dict[str, set[str]] = {}
        self.refused: dict[str, str] = {}
        # Per input: its label (for messages) and which sources it may read (see _allow_of).
        self.labels: list[str] = []
        self.allow_modes: list[str | None] = []
        self.units_seen: dict[TimeUnits, TimeUnits] = {}  # interned: files mostly share units

    @property
    def ninputs(self) -> int:
        return len(self.labels)

    # -- per input -------------------------------------------------------------------------------

    def add(self, m: Manifest, label: str, index: int) -> None:
        inp = len(self.labels)
        self.labels.append(label)
        self.allow_modes.append(self._allow_mode(m))
        remap = np.asarray(
            [self.out.add_source(resolve_url(s.url, m.location), s.size, s.mtime, s.etag) for s in m.sources] or [0],
            np.int64,
        )
        allow = self._allow_for(m)
        for p, reason in m.refused.items():
            self.refused.setdefault(p, f"{label}: {reason}")
        for g in m.groups():
            self._merge_attrs(self.groups, self.group_dropped, g, m.attributes(g), label, f"group {g or '/'!r}")
        infos = {p: var_info(m, p, label) for p in m.arrays()}
        dims_here = {d for i in infos.values() for d in i.dims}
        for k in self.concat_dims:
            new = k not in dims_here
            if self.dim_new.setdefault(k, new) != new:
                raise CombineError(
                    f"{label}: dimension {k!r} {'is missing' if new else 'exists'} here but "
                    f"{'exists' if new else 'is missing'} in the first input",
                    file=label,
                    field="dimension",
                )
        bounds_parent = {}
        aux_coords: set[str] = set()
        for p, i in infos.items():
            for attr in ("bounds", "climatology"):
                target = i.attributes.get(attr)
                if isinstance(target, str):
                    tp = _sibling(p, target)
                    if tp in infos:
                        bounds_parent[tp] = p
            c = i.attributes.get("coordinates")
            if isinstance(c, str):
                aux_coords.update(_sibling(p, n) for n in c.split())
        coord_like = {
            p for p, i in infos.items() if _basename(p) in dims_here or p in bounds_parent or p in aux_coords
        }
        keys, coord_parts = self._keys(m, label, index, infos, allow, remap)
        for p, info in infos.items():
            if p in self.dropped:
                continue
            if p in self.identical or _basename(p) in self.identical:
                if p not in self.vars:
                    v = _Var(p, info, label, inp, (), identical=True, attrs=dict(info.attributes))
                    self.vars[p] = v
                    v.pieces.add((), inp, v.cols.append(self._table(m, p, remap), label), None)
                continue
            new_dims = tuple(k for k in self.concat_dims if self.dim_new[k] and p not in coord_like)
            if new_dims:
                info = _prepend(info, new_dims, label)
            concat = tuple(k for k in self.concat_dims if k in info.dims)
            if any(keys[k] is _EMPTY for k in concat):
                continue  # this input has no elements along a concat dim: nothing to add
            part = coord_parts.get(p)
            table = part.table if part is not None else self._table(m, p, remap, len(new_dims))
            parent = bounds_parent.get(p)
            units_src = infos[parent].attributes if parent and "units" not in info.attributes else info.attributes
            units = None
            try:
                units = parse_time_units(units_src.get("units"), units_src.get("calendar"))
            except RebaseError as exc:
                if concat:
                    raise CombineError(f"{label}: variable {p!r}: {exc}", file=label, variable=p, field="units") from exc
            if units is not None:
                units = self.units_seen.setdefault(units, units)
            v = self.vars.get(p)
            if v is None:
                v = _Var(p, info, label, inp, concat, attrs=dict(info.attributes), ref_units=units)
                v.time_like = units is not None and bool(concat)
                coord_dim = _basename(p)
                v.coord_of = coord_dim if coord_dim in concat and info.dims == (coord_dim,) else None
                v.bounds_of = parent
                self.vars[p] = v
            else:
                self._check(v, info, label, units)
                self._merge_attrs_var(v, info, label)
            for k in concat:
                self._check_extent(k, keys[k], info.shape[v.axes[k]], inp, p, label)
            kk = tuple(keys[k] for k in concat)
            values = part.values if part is not None else None
            old = v.pieces.find(kk)
            if old < 0:
                self._put_edges(v, kk, info, inp, label)
                i = v.pieces.add(kk, inp, v.cols.append(table, label), units)
                if values is not None and v.coord_of is not None:
                    self._keep_values(v, i, values, units)
                continue
            new = _Part(label, info.shape, _nbytes(info.shape, info), table, allow, info.doc, values, units, info)
            old_part = self._part(v, kk, old)
            if not self._same(v, old_part, new):
                self._conflict(v, old_part, new)

    def _keep_values(self, v: _Var, i: int, values: np.ndarray, units: TimeUnits | None) -> None:
        """Keep a coordinate piece's values while the coordinate may be materialised at the end
        (it is when small enough to inline or when some input's time units differ, see
        :meth:`_materialise`); a large one that needs no rebasing keeps its references instead,
        and its values go (were a later input to need rebasing, the rest are read back then)."""
        target = self.coord_units.get(v.coord_of) if v.coord_of else None
        if units is not None and target is not None and (
            units.text.strip() != target.text.strip() or units.calendar != target.calendar
        ):
            v.rebase = True
        v.values_bytes += values.nbytes
        if v.rebase or v.values_bytes <= self.inline_threshold:
            v.pieces.set_values(i, values)
        else:
            v.pieces.drop_values()

    def _allow_mode(self, m: Manifest) -> str | None:
        """What an input may read, compactly: its own sources (no location), the folder holding it
        (local file), or only ``allow=`` (remote file); see :meth:`_allow_for`."""
        if m.location is None:
            return _OWN_SOURCES
        if is_local(m.location):
            return location_dir(m.location)
        return _ONLY_ALLOW

    def _allow_for(self, m: Manifest) -> tuple[str, ...]:
        if m.location is None:
            return tuple(resolve_url(s.url, None) for s in m.sources) + self.allow
        if is_local(m.location):
            return (location_dir(m.location),) + self.allow
        return self.allow

    def _allow_of(self, input_index: int, table: ChunkTable) -> tuple[str, ...]:
        """The allowance of a kept piece (its input is gone): as :meth:`_allow_for` gave it."""
        mode = self.allow_modes[input_index]
        if mode is _OWN_SOURCES:
            # Only the sources this piece uses matter for reading it; they are the input's own.
            used = table.source[table.present() & (table.source >= 0)]
            return tuple(self.out.sources[int(i)].url for i in np.unique(used)) + self.allow
        if mode == _ONLY_ALLOW:
            return self.allow
        return (mode,) + self.allow

    def _table(self, m: Manifest, path: str, remap: np.ndarray, prepend: int = 0) -> ChunkTable:
        t = m.tables[path]
        src = t.source.astype(np.int64)
        mask = (t.length != ABSENT) & (src >= 0)
        src[mask] = remap[src[mask]]
        return ChunkTable(
            (1,) * prepend + t.grid_shape,
            src.astype(np.int32),
            t.offset,
            t.length,
            inline=t.inline,
            cid=t.cid,
        )

    def _check_extent(self, k: str, kid: int, ext: int, inp: int, path: str, label: str) -> None:
        dk = self.dims[k]
        prev = dk.extent[kid]
        if prev < 0:
            dk.extent[kid] = ext
            dk.extent_input[kid] = inp
            dk.extent_path[kid] = path
        elif prev != ext:
            raise CombineError(
                f"{label}: variable {path!r} has {ext} elements along {k!r}, but {prev} in "
                f"{self.labels[dk.extent_input[kid]]} ({dk.extent_path[kid]}), which starts at the same {k} "
                "(the inputs overlap)",
                file=label,
                variable=path,
                field="shape",
            )

    def _put_edges(self, v: _Var, kk: tuple[int, ...], info: VarInfo, inp: int, label: str) -> None:
        """Record the piece's chunk edges under its keys; pieces sharing a key along a dim (tiles
        of one row of a mosaic) must be chunked alike along it."""
        for j, k in enumerate(v.concat):
            a = v.axes[k]
            edges = v.edges[j]
            if not edges.has(kk[j]):
                continue
            if not edges.matches(kk[j], info.declared[a], info.stored[a]):
                _, stored, _, first = edges.get(kk[j])
                raise CombineError(
                    f"{label}: variable {v.path!r}: chunk edges along {k!r} {info.stored[a].tolist()} differ from "
                    f"{self.labels[first]} {stored.tolist()} at the same position (tiles of one row/column must be "
                    "chunked alike)",
                    file=label,
                    variable=v.path,
                    field="chunk_grid",
                )
        for j, k in enumerate(v.concat):
            if not v.edges[j].has(kk[j]):
                a = v.axes[k]
                v.edges[j].put(kk[j], info.declared[a], info.stored[a], info.shape[a], inp)

    def _part(self, v: _Var, kk: tuple[int, ...], piece: int) -> _Part:
        """A kept piece in full again: its table (views into the buffers), shape and allowance;
        its metadata is the first input's with this piece's edges (they agreed when it came)."""
        ref = v.ref
        table = v.cols.table(v.pieces.start[piece], v.piece_grid(kk))
        inp = v.pieces.input[piece]
        shape = list(ref.shape)
        edges = None
        if v.concat:
            declared, stored = list(ref.declared), list(ref.stored)
            for j, k in enumerate(v.concat):
                a = v.axes[k]
                declared[a], stored[a], shape[a], _ = v.edges[j].get(kk[j])
            edges = (declared, stored)
        values = v.pieces.values_of(piece)
        doc = ref.doc if not v.concat else None
        return _Part(self.labels[inp], tuple(shape), _nbytes(shape, ref), table, self._allow_of(inp, table), doc,
                     None if values is None else values.copy(), v.pieces.units[piece], piece=piece, edges=edges)

    def _keys(
        self, m: Manifest, label: str, index: int, infos: dict[str, VarInfo], allow: tuple[str, ...], remap: np.ndarray
    ) -> tuple[dict[str, Any], dict[str, _Part]]:
        """Per concat dim the key id of this input (or ``_EMPTY``), and the coordinate variables
        read to find them (as parts, values included)."""
        keys: dict[str, Any] = {}
        parts: dict[str, _Part] = {}
        for j, k in enumerate(self.concat_dims):
            cpath = _coord_path(k, infos)
            values = None
            if cpath is not None:
                info = infos[cpath]
                part = _Part(label, info.shape, _nbytes(info.shape, info), self._table(m, cpath, remap), allow, info.doc,
                             info=info)
                values = part.values = self._read(self.vars.get(cpath), cpath, part)
                parts[cpath] = part
                if values.size == 0:
                    keys[k] = _EMPTY
                    continue
                if k not in self.descending:
                    self.descending[k] = bool(values.size > 1 and values[1] < values[0])
            if self.positions is not None:
                try:
                    key = int(self.positions[index][j])
                except (IndexError, TypeError, ValueError) as exc:
                    raise InvalidArgumentError(
                        f"positions[{index}] must give an integer position for each of {list(self.concat_dims)}"
                    ) from exc
            elif k in self.coords:
                key = _spec_value(self.coords[k], m, index, label, k)
            elif values is not None:
                info = infos[cpath]
                try:
                    units = parse_time_units(info.attributes.get("units"), info.attributes.get("calendar"))
                except RebaseError as exc:
                    raise CombineError(f"{label}: variable {cpath!r}: {exc}", file=label, variable=cpath, field="units") from exc
                key = _scalar(self._rebased(k, cpath, values, units, info, label)[0])
            elif len(self.concat_dims) == 1:
                key = ("#", index)
            else:
                raise CombineError(
                    f"{label}: no coordinate variable for {k!r}: give the tile layout (positions=) or coords=",
                    file=label,
                    field="coordinates",
                )
            keys[k] = self.dims[k].id_of(key)
        return keys, parts

    def _rebased(
        self, k: str, path: str, values: np.ndarray, units: TimeUnits | None, info: VarInfo, label: str
    ) -> np.ndarray:
        """The coordinate values of dim ``k`` in the first input's units (for keys and checks)."""
        if k not in self.coord_units:
            self.coord_units[k] = units
        target = self.coord_units[k]
        if units is None or target is None:
            return values
        return self._apply_rebase(values, units, target, info, label, path)

    def _apply_rebase(
        self, values: np.ndarray, units: TimeUnits, target: TimeUnits, info: VarInfo, label: str, path: str
    ) -> np.ndarray:
        try:
            scale, delta = rebase_parameters(units, target)
            return rebase_values(values, scale, delta, _fill_mask(values, info))
        except RebaseError as exc:
            field_name = "calendar" if units.calendar != target.calendar else "units"
            raise CombineError(
                f"{label}: variable {path!r}: time {field_name} {units.text!r} ({units.calendar}) cannot be rebased "
                f"exactly to {target.text!r} ({target.calendar}): {exc}",
                file=label,
                variable=path,
                field=field_name,
            ) from exc

    # -- reading ---------------------------------------------------------------------------------

    def _read(self, v: _Var | None, path: str, part: _Part) -> np.ndarray:
        """The stored (raw, undecoded CF) values of a part, read through the engine."""
        if part.values is not None:
            return part.values
        from chunkref.zarr.array import Array
        from chunkref.zarr.metadata import ArrayMetadataV3

        t = part.table
        try:
            doc = part.doc
            if doc is None:
                assert v is not None and part.edges is not None  # rebuilt parts belong to a variable
                declared, stored = part.edges
                declared = [_last_edge(d, s) if len(d) else d for d, s in zip(declared, stored)]
                doc = _array_doc(v.ref, part.shape, declared, stored, v.ref.codecs, v.ref.attributes, v.ref.dims)
            meta = ArrayMetadataV3.from_json(doc, path)
            array = Array(self._store_for(path, meta, t, part.allow), path, meta, read_only=True)
            values = np.asarray(array[...])
        except ChunkrefError as exc:
            raise CombineError(
                f"{part.label}: variable {path!r}: values cannot be read for comparison: {exc}",
                file=part.label,
                variable=path,
                field="values",
            ) from exc
        part.values = values
        if part.piece is not None and v is not None:
            v.pieces.set_values(part.piece, values)  # kept pieces are compared again by later inputs
        return values

    def _store_for(self, path: str, meta: Any, t: ChunkTable, allow: tuple[str, ...]) -> Any:
        """A read-only store serving ``t``'s chunks under ``path`` (``meta``'s chunk keys)."""
        from chunkref.reference import ReferenceStore
        from chunkref.storage.memory import MemoryStore

        present = t.present() & (t.source >= 0)
        if not present.any():
            # Inline chunks only (coordinates in kerchunk JSON): no source to authorize or read.
            flat = np.fromiter(t.inline, np.int64, len(t.inline))
            coords = np.stack(np.unravel_index(flat, t.grid_shape), axis=1) if flat.size else np.zeros((0, len(t.grid_shape)), np.int64)
            keys = meta.chunk_keys(coords) if flat.size else []
            return MemoryStore({f"{path}/{k}": t.inline[int(f)] for k, f in zip(keys, flat.tolist())}, read_only=True)
        # A manifest of just the sources this table uses (copying all of the output's would
        # make every read O(inputs so far)).
        used = np.unique(t.source[present])
        tmp = Manifest()
        tmp.set_sources([self.out.sources[int(i)] for i in used])
        source = t.source.copy()
        source[present] = np.searchsorted(used, t.source[present]).astype(np.int32)
        tmp.add_array(path, {V3_DOC: meta.to_json()}, ChunkTable(t.grid_shape, source, t.offset, t.length, inline=t.inline))
        return ReferenceStore(tmp, allow=allow, storage_options=self.storage_options)

    # -- checks ----------------------------------------------------------------------------------

    def _check(self, v: _Var, info: VarInfo, label: str, units: TimeUnits | None) -> None:
        ref = v.ref
        skip = frozenset({"units"}) if v.time_like and units is not None else frozenset()
        check_agreement(ref, info, label, v.ref_label, skip)
        axes = set(v.axes.values())
        if info.ndim != ref.ndim or any(
            info.shape[a] != ref.shape[a] for a in range(ref.ndim) if a not in axes
        ):
            raise CombineError(
                f"{label}: variable {v.path!r}: field 'shape' is {list(info.shape)}, but {list(ref.shape)} in "
                f"{v.ref_label} (only {list(v.concat)} may differ)",
                file=label,
                variable=v.path,
                field="shape",
            )
        for a in range(ref.ndim):
            if a in axes:
                continue
            if not (np.array_equal(info.declared[a], ref.declared[a]) and np.array_equal(info.stored[a], ref.stored[a])):
                raise CombineError(
                    f"{label}: variable {v.path!r}: field 'chunk_grid' differs from {v.ref_label} along "
                    f"{ref.dims[a]!r} (chunk edges {info.stored[a][:8].tolist()} vs {ref.stored[a][:8].tolist()}): "
                    "only the concatenation dimensions may be chunked differently",
                    file=label,
                    variable=v.path,
                    field="chunk_grid",
                )

    def _same(self, v: _Var, old: _Part, new: _Part) -> bool:
        if v.coord_of is not None and old.values is not None and new.values is not None:
            a = self._rebased(v.coord_of, v.path, old.values, old.units, v.ref, old.label)
            b = self._rebased(v.coord_of, v.path, new.values, new.units, v.ref, new.label)
            return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        if old.shape == new.shape and old.table == new.table:
            return True  # the very same references
        if max(old.nbytes, new.nbytes) > self.compare_bytes:
            return False
        a, b = self._read(v, v.path, old), self._read(v, v.path, new)
        if v.time_like and old.units is not None and new.units is not None and old.units != new.units:
            b = self._apply_rebase(b, new.units, old.units, v.ref, new.label, v.path)
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))

    def _conflict(self, v: _Var, old: _Part, new: _Part) -> None:
        if self.conflicts == "first":
            return
        if self.conflicts == "drop":
            self.dropped.add(v.path)
            self.vars.pop(v.path, None)
            return
        big = max(old.nbytes, new.nbytes) > self.compare_bytes
        why = (
            f"differs from {old.label} and is too large to compare ({max(old.nbytes, new.nbytes)} bytes "
            f"> compare_bytes)"
            if big
            else f"has values different from {old.label}"
        )
        raise CombineError(
            f"{new.label}: variable {v.path!r} {why}; it is not along {list(self.concat_dims)}, so it must be "
            "identical in every input (list it in identical_dims, or pass conflicts='first' or 'drop')",
            file=new.label,
            variable=v.path,
            field="values",
        )

    def _merge_attrs_var(self, v: _Var, info: VarInfo, label: str) -> None:
        incoming = {k: val for k, val in info.attributes.items() if k not in CF_FIELDS}
        holder = {v.path: v.attrs}
        dropped = {v.path: v.dropped_attrs}
        self._merge_attrs(holder, dropped, v.path, incoming, label, f"variable {v.path!r}", skip=CF_FIELDS)

    def _merge_attrs(
        self,
        store: dict[str, dict[str, Any]],
        dropped: dict[str, set[str]],
        key: str,
        incoming: Mapping[str, Any],
        label: str,
        what: str,
        skip: Iterable[str] = (),
    ) -> None:
        if key not in store:
            store[key] = dict(incoming)
            dropped[key] = set()
            return
        cur, gone = store[key], dropped.setdefault(key, set())
        skip = set(skip) | {ATTRIBUTE_TYPES}
        for name in set(cur) | set(incoming):
            if name in skip or name in gone:
                continue
            a, b = cur.get(name, _MISSING), incoming.get(name, _MISSING)
            if a is not _MISSING and b is not _MISSING and same_value(a, b):
                continue
            if self.attr_rule == "first":
                continue
            if self.attr_rule == "drop":
                if a is _MISSING:
                    cur[name] = b  # xarray's drop_conflicts: keys missing somewhere are kept
                elif b is not _MISSING:
                    cur.pop(name, None)
                    gone.add(name)
                continue
            raise CombineError(
                f"{label}: {what}: attribute {name!r} is {None if b is _MISSING else b!r}, but "
                f"{None if a is _MISSING else a!r} in an earlier input (attrs='error')",
                file=label,
                variable=key,
                field=f"attribute {name}",
            )
        types = cur.get(ATTRIBUTE_TYPES)
        if isinstance(types, dict):
            cur[ATTRIBUTE_TYPES] = {k: t for k, t in types.items() if k in cur}

    # -- output ----------------------------------------------------------------------------------

    def finish(self) -> Manifest:
        if self.ninputs == 0:
            raise InvalidArgumentError("combine needs at least one input manifest")
        order = {k: self._sorted_keys(k) for k in self.concat_dims}
        order_ids = {k: [self.dims[k].ids[key] for key in order[k]] for k in self.concat_dims}
        out = self.out
        for g in sorted(self.groups, key=lambda s: (s.count("/"), s)):
            out.add_group(g, self.groups[g])
        for path in sorted(self.vars):
            v = self.vars[path]
            try:
                if v.identical or not v.concat:
                    table = v.cols.table(v.pieces.start[0], v.ref.grid.grid_shape).copy()
                    out.add_array(path, {V3_DOC: _with_attrs(v.ref.doc, v.attrs)}, table)
                else:
                    self._emit(v, order_ids)
            except CodecError as exc:
                raise CombineError(f"variable {path!r}: {exc}", variable=path, field="codecs") from exc
            # Done with this variable: its buffers go before the next one's output is built.
            v.pieces = Pieces(len(v.concat))
            v.cols = Columns(path)
            v.edges = []
        for k in self.concat_dims:
            if self.dim_new.get(k) and k not in out.nodes and order[k] and not isinstance(order[k][0], tuple):
                self._emit_values(k, np.asarray(order[k]), (k,), {}, None)
        for p, reason in self.refused.items():
            if p not in out.nodes:
                out.refuse(p, reason)
        _prune_sources(out)
        return out

    def _sorted_keys(self, k: str) -> list[Any]:
        keys = list(self.dims[k].values)
        if not self.sort or self.positions is not None:
            return sorted(keys) if self.positions is not None else keys
        if all(isinstance(x, tuple) for x in keys):
            return keys  # input order
        if any(isinstance(x, tuple) for x in keys):
            raise CombineError(
                f"some inputs have a coordinate for {k!r} and some do not; cannot order them", field="coordinates"
            )
        try:
            return sorted(keys, reverse=self.descending.get(k, False))
        except TypeError as exc:
            raise CombineError(f"coordinate values of {k!r} have mixed types: {exc}", field="coordinates") from exc

    def _emit(self, v: _Var, order: dict[str, list[int]]) -> None:
        ref = v.ref
        axes = v.axes
        key_lists = [order[k] for k in v.concat]
        npos = math.prod(len(x) for x in key_lists)
        if len(v.pieces) < npos and self.missing == "error":
            first = next(kk for kk in itertools.product(*key_lists) if v.pieces.find(kk) < 0)
            at = {k: self.dims[k].values[kid] for k, kid in zip(v.concat, first)}
            raise CombineError(
                f"variable {v.path!r} has no input at {at} (present in {len(v.pieces)} of {npos} positions); pass "
                "missing='fill' to read those as the fill value, or conflicts='drop'",
                variable=v.path,
                field="missing",
            )
        for j, k in enumerate(v.concat):
            absent = [kid for kid in key_lists[j] if not v.edges[j].has(kid)]
            if absent:
                raise CombineError(
                    f"variable {v.path!r}: no input gives its chunking at {k}={self.dims[k].values[absent[0]]!r}",
                    variable=v.path,
                    field="missing",
                )
        if v.coord_of is not None or v.time_like:
            if self._materialise(v, key_lists):
                return
        declared: list[np.ndarray] = []
        stored: list[np.ndarray] = []
        shape: list[int] = []
        for a in range(ref.ndim):
            if a in axes.values():
                j = v.concat.index(ref.dims[a])
                d_all, s_all = v.edges[j].concatenated(key_lists[j])
                shape.append(v.edges[j].total_extent(key_lists[j]))
            else:
                shape.append(ref.shape[a])
                d_all, s_all = ref.declared[a].copy(), ref.stored[a].copy()
            if len(d_all):
                d_all = _last_edge(d_all, s_all)
            declared.append(d_all.astype(np.int64))
            stored.append(s_all.astype(np.int64))
        grid_shape = tuple(len(d) for d in declared)
        table = self._assemble(v, grid_shape, key_lists)
        # The blocks and edges are in `table`, `declared` and `stored` now: free them before the
        # metadata (its edge lists are output-sized too) is built.
        v.cols = Columns(v.path)
        v.edges = []
        try:
            doc = _array_doc(ref, shape, declared, stored, ref.codecs, v.attrs, ref.dims)
        except CodecError as exc:
            some = sorted({self.labels[v.pieces.input[i]] for _, i in v.pieces.items()})[:4]
            raise CombineError(
                f"variable {v.path!r}: {exc} (inputs chunk it differently: {some})",
                variable=v.path,
                field="chunk_grid",
            ) from exc
        self.out.add_array(v.path, {V3_DOC: doc}, table)

    def _assemble(self, v: _Var, grid_shape: tuple[int, ...], key_lists: list[list[int]]) -> ChunkTable:
        """The output chunk table: every piece's block copied to its place in preallocated columns.

        When the blocks already lie in output order (one concatenation dim with only one chunk
        across the axes before it, pieces added in order, none missing: inputs given in time
        order) the buffers are the output and one slice copy per column does."""
        cols = v.cols
        n = math.prod(grid_shape)
        if len(v.concat) == 1 and math.prod(grid_shape[: v.axes[v.concat[0]]]) == 1 and len(v.pieces) == len(key_lists[0]):
            kids = key_lists[0]
            starts = v.pieces.starts_of(kids)
            inner = math.prod(grid_shape) // max(1, grid_shape[v.axes[v.concat[0]]]) if n else 0
            sizes = v.edges[0].count.data[np.asarray(kids, np.int64)] * inner if kids else np.zeros(0, np.int64)
            if starts is not None and cols.size == n and np.array_equal(starts, np.cumsum(sizes) - sizes):
                cid = None if cols.cid is None else cols.cid.view(0, n).copy()
                return ChunkTable(
                    grid_shape,
                    cols.source.view(0, n).copy(),
                    cols.offset.view(0, n).copy(),
                    cols.length.view(0, n).copy(),
                    inline=cols.inline,
                    cid=cid,
                )
        source = np.zeros(n, np.int32)
        offset = np.zeros(n, np.uint64)
        length = np.full(n, ABSENT, np.uint64)
        width = None if cols.cid is None else cols.cid.data.shape[1]
        cid = np.zeros((n, width), np.uint8) if width else None
        inline: dict[int, bytes] = {}
        sv, ov, lv = (c.reshape(grid_shape) for c in (source, offset, length))
        cv = cid.reshape(grid_shape + (width,)) if cid is not None else None
        # Per concat dim: the first output chunk of each key id along its axis.
        firsts: list[dict[int, int]] = []
        for j, kids in enumerate(key_lists):
            counts = v.edges[j].count.data[np.asarray(kids, np.int64)] if kids else np.zeros(0, np.int64)
            firsts.append(dict(zip(kids, (np.cumsum(counts) - counts).tolist())))
        concat_axes = [v.axes[k] for k in v.concat]
        for kk, piece in v.pieces.items():
            start = v.pieces.start[piece]
            pg = v.piece_grid(kk)
            origin = [0] * len(grid_shape)
            for j, a in enumerate(concat_axes):
                origin[a] = firsts[j][kk[j]]
            sl = tuple(slice(o, o + g) for o, g in zip(origin, pg))
            m = math.prod(pg)
            block_source = cols.source.view(start, m)
            sv[sl] = block_source.reshape(pg)
            ov[sl] = cols.offset.view(start, m).reshape(pg)
            lv[sl] = cols.length.view(start, m).reshape(pg)
            if cv is not None:
                cv[sl] = cols.cid.view(start, m).reshape(pg + (width,))
            rows = np.flatnonzero(block_source == INLINE)
            if rows.size:
                coords = np.stack(np.unravel_index(rows, pg), axis=1) + np.asarray(origin, np.int64)
                flat = np.ravel_multi_index(tuple(coords.T), grid_shape)
                for r, f in zip(rows.tolist(), flat.tolist()):
                    inline[f] = cols.inline[start + r]
        return ChunkTable(grid_shape, source, offset, length, inline=inline, cid=cid)

    def _materialise(self, v: _Var, key_lists: list[list[int]]) -> bool:
        """Concatenate the values of a coordinate / time variable (rebased); False to keep refs."""
        ref = v.ref
        if len(v.concat) != 1:
            return False
        target = self.coord_units.get(v.coord_of) if v.coord_of else None
        if target is None and v.time_like:
            # Bounds share their parent's units; otherwise the first input's units are the target.
            parent = self.vars.get(v.bounds_of) if v.bounds_of else None
            if parent is not None and parent.coord_of is not None:
                target = self.coord_units.get(parent.coord_of)
            elif parent is not None:
                target = parent.ref_units
            if target is None:
                target = v.ref_units
        needs_rebase = target is not None and any(
            u is not None and (u.text.strip() != target.text.strip() or u.calendar != target.calendar)
            for u in set(v.pieces.units)
        )
        axis = v.axes[v.concat[0]]
        kids = key_lists[0]
        extents = v.edges[0].extent.data[np.asarray(kids, np.int64)] if kids else np.zeros(0, np.int64)
        rest = math.prod(s for a, s in enumerate(ref.shape) if a != axis)
        total = int(extents.sum()) * rest * max(1, ref.dtype.itemsize)
        if not needs_rebase and (v.coord_of is None or total > self.inline_threshold):
            return False
        idx = [v.pieces.find((kid,)) for kid in kids]
        values = v.pieces.gather_values(idx) if ref.ndim == 1 else None
        if values is None:
            arrays = []
            for kid, i in zip(kids, idx):
                vals = v.pieces.values_of(i)
                if vals is None:
                    part = self._part(v, (kid,), i)
                    part.piece = None  # read once for the output: not worth keeping
                    vals = self._read(v, v.path, part)
                arrays.append(np.array(vals))
            values = np.concatenate(arrays, axis=axis) if arrays else np.zeros(ref.shape, ref.dtype)
            del arrays
        # The values are the output now: the references and kept values can go.
        v.cols = Columns(v.path)
        v.pieces.drop_values()
        ends = np.cumsum(extents)
        if needs_rebase:
            for j, i in enumerate(idx):
                u = v.pieces.units[i]
                if u is None or (u.text.strip() == target.text.strip() and u.calendar == target.calendar):
                    continue
                where = (slice(None),) * axis + (slice(int(ends[j] - extents[j]), int(ends[j])),)
                label = self.labels[v.pieces.input[i]]
                values[where] = self._apply_rebase(values[where], u, target, ref, label, v.path)
        if v.coord_of is not None:
            _check_monotonic(v, values, ends, [self.labels[v.pieces.input[i]] for i in idx],
                             self.descending.get(v.concat[0], False))
        attrs = dict(v.attrs)
        if needs_rebase and "units" in attrs:
            attrs["units"] = target.text
        self._emit_values(v.path, values, ref.dims, attrs, ref)
        return True

    def _emit_values(self, path: str, values: np.ndarray, dims: tuple[str, ...], attrs: dict, ref: VarInfo | None) -> None:
        """Store ``values`` as inline chunks of a new v3 array."""
        from chunkref.zarr.codecs.base import ChunkSpec
        from chunkref.zarr.dtypes import data_type_to_v3_json, default_fill_value, encode_fill_value, v3_dtype
        from chunkref.zarr.metadata import ArrayMetadataV3

        if values.dtype.kind == "U":
            values = values.astype(object)
        if values.dtype.hasobject:
            dt_json: Any = "string"
            codecs: list[dict] = [{"name": "vlen-utf8"}]
            fill_json: Any = ""
        else:
            dt = v3_dtype(values.dtype)
            values = values.astype(dt.dtype)
            dt_json = data_type_to_v3_json(dt)
            codecs = [{"name": "bytes", "configuration": {"endian": "little"}}] if dt.dtype.itemsize > 1 else [{"name": "bytes"}]
            fill = ref.fill_value if ref is not None else default_fill_value(dt)
            fill_json = encode_fill_value(fill, dt, 3)
        row = max(1, values.dtype.itemsize if not values.dtype.hasobject else 16) * max(1, math.prod(values.shape[1:]))
        n0 = values.shape[0] if values.ndim else 1
        rows = max(1, min(n0, self.inline_threshold // row)) if values.ndim else 1
        chunk = (rows, *values.shape[1:]) if values.ndim else ()
        chunk = tuple(max(1, c) for c in chunk)
        doc = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(values.shape),
            "data_type": dt_json,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": fill_json,
            "codecs": codecs,
            "attributes": attrs,
            "dimension_names": list(dims),
        }
        meta = ArrayMetadataV3.from_json(doc, path)
        grid = meta.chunk_grid
        table = ChunkTable.empty(grid.grid_shape)
        pipe = meta.codec_pipeline
        for coords in grid.iter_coords():
            block = values[grid.chunk_slices(coords)]
            spec = ChunkSpec(grid.chunk_shape_at(coords), meta.dtype, meta.fill_value)
            if block.shape != spec.shape:
                full = np.full(spec.shape, meta.fill_value, dtype=meta.dtype)
                full[tuple(slice(0, s) for s in block.shape)] = block
                block = full
            table.set_inline(coords, pipe.encode(block, spec))
        self.out.add_array(path, {V3_DOC: doc}, table)


_MISSING = object()
_EMPTY = ("#empty",)


def _sibling(path: str, name: str) -> str:
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    return f"{parent}/{name}" if parent else name


def _coord_path(k: str, infos: Mapping[str, VarInfo]) -> str | None:
    if k in infos and infos[k].dims == (k,):
        return k
    for p, i in infos.items():
        if _basename(p) == k and i.dims == (k,):
            return p
    return None


def _fill_mask(values: np.ndarray, info: VarInfo) -> np.ndarray:
    mask = np.zeros(values.shape, bool)
    if values.dtype.kind == "f":
        mask |= np.isnan(values)
    for name in ("missing_value",):
        mv = info.attributes.get(name)
        if isinstance(mv, (int, float)) and not isinstance(mv, bool):
            mask |= values == mv
    fv = info.attributes.get("_FillValue")
    if fv is not None:
        from chunkref.xarray_backend import decode_v3_fill_attribute

        dec = decode_v3_fill_attribute(fv, values.dtype)
        try:
            mask |= values == np.asarray(dec, values.dtype)
        except (TypeError, ValueError):
            pass
    return mask


def _spec_value(spec: CoordSpec, m: Manifest, index: int, label: str, k: str) -> Any:
    if callable(spec):
        return _scalar(spec(m, index, label))
    if isinstance(spec, re.Pattern):
        name = os.path.basename(label.rstrip("/"))
        hit = spec.search(name)
        if hit is None:
            raise CombineError(f"{label}: the pattern {spec.pattern!r} for {k!r} does not match {name!r}", file=label, field=k)
        text = hit.group("value") if "value" in spec.groupindex else (hit.group(1) if spec.groups else hit.group(0))
        return _auto_value(text)
    if isinstance(spec, str):
        if spec.startswith("attr:"):
            name = spec[5:]
            attrs = m.attributes("") if "" in m.nodes else {}
            if name not in attrs:
                raise CombineError(f"{label}: no global attribute {name!r} for {k!r}", file=label, field=k)
            return _scalar(attrs[name])
        raise InvalidArgumentError(f"coords[{k!r}]: a string spec must be 'attr:<name>', got {spec!r} (use re.compile for a regex)")
    try:
        return _scalar(spec[index])
    except (IndexError, TypeError) as exc:
        raise InvalidArgumentError(f"coords[{k!r}] has no value for input {index} ({label})") from exc


def _prepend(info: VarInfo, dims: tuple[str, ...], label: str) -> VarInfo:
    """The input array seen with new leading length-1 dimensions ``dims``."""
    n = len(dims)
    codecs = _prepend_codecs(info.codecs, n, label, info.path)
    shape = (1,) * n + info.shape
    declared = [np.ones(1, np.int64)] * n + list(info.declared)
    stored = [np.ones(1, np.int64)] * n + list(info.stored)
    unclipped = [np.ones(1, np.int64)] * n + [np.diff(o) for o in info.grid.offsets]
    doc = _array_doc(info, list(shape), unclipped, stored, codecs, info.attributes, dims + info.dims, clip=False)
    from chunkref.zarr.metadata import ArrayMetadataV3

    grid = ArrayMetadataV3.from_json(doc, info.path, validate_codecs=False).chunk_grid
    return VarInfo(
        info.path, shape, info.data_type, info.fill_value, codecs, dict(info.attributes), dims + info.dims,
        declared, stored, (1,) * n + info.nominal, grid, doc,
    )


def _prepend_codecs(codecs: list[dict], n: int, label: str, path: str) -> list[dict]:
    from chunkref.zarr.codecs.registry import get_codec_class

    out = []
    for c in codecs:
        name = c.get("name")
        conf = dict(c.get("configuration") or {})
        if name == "transpose":
            conf["order"] = list(range(n)) + [int(o) + n for o in conf["order"]]
        elif name == "sharding_indexed":
            conf["chunk_shape"] = [1] * n + list(conf["chunk_shape"])
            conf["codecs"] = _prepend_codecs(conf.get("codecs") or [], n, label, path)
            conf["index_codecs"] = _prepend_codecs(conf.get("index_codecs") or [], n, label, path)
        else:
            try:
                kind = get_codec_class(str(name)).kind
            except ChunkrefError:
                kind = "bytes_bytes" if str(name).startswith("numcodecs.") else "array_array"
            # numcodecs array codecs work on the flattened chunk: a leading length-1 axis is harmless.
            if kind == "array_array" and not str(name).startswith("numcodecs."):
                raise CombineError(
                    f"{label}: variable {path!r}: codec {name!r} depends on the chunk's dimensions; it cannot be "
                    "given a new dimension",
                    file=label,
                    variable=path,
                    field="codecs",
                )
        out.append({"name": name, "configuration": conf} if "configuration" in c or conf else {"name": name})
    return out


def _array_doc(
    template: VarInfo,
    shape: Sequence[int],
    declared: Sequence[np.ndarray],
    stored: Sequence[np.ndarray],
    codecs: list[dict],
    attrs: Mapping[str, Any],
    dims: Sequence[str],
    clip: bool = True,
) -> dict[str, Any]:
    """A v3 ``zarr.json`` for the given edges: regular when every edge is equal, else rectilinear;
    ``chunkref.padded`` first in the chain when some chunk is stored larger than declared."""
    shape = [int(s) for s in shape]
    regular = all(len(d) == 0 or bool((d == d[0]).all()) for d in declared)
    if regular:
        chunk = [int(d[0]) if len(d) else int(max(1, s.max()) if len(s) else 1) for d, s in zip(declared, stored)]
        grid_json = RegularGrid(tuple(shape), tuple(chunk)).to_json()
    else:
        grid_json = RectilinearGrid(tuple(shape), tuple(tuple(int(e) for e in d) for d in declared)).to_json()
    chain = [dict(c) for c in codecs]
    if any(not np.array_equal(d, s) for d, s in zip(declared, stored)):
        chain = [PaddedCodec.from_edges([d.tolist() for d in declared], [s.tolist() for s in stored]).to_json(), *chain]
    doc = dict(template.doc)
    doc.update(
        shape=shape,
        chunk_grid=grid_json,
        codecs=chain,
        attributes=dict(attrs),
        dimension_names=list(dims),
        chunk_key_encoding={"name": "default", "configuration": {"separator": "/"}},
    )
    return doc


def _last_edge(declared: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Declared edges with the array's last chunk allowed to overhang the extent.

    When every other edge is ``c``, is stored like them and the last is no longer, the last is
    declared ``c`` too (the grid stays regular); otherwise it is declared as stored (no padding).
    """
    out = declared.astype(np.int64).copy()
    c = int(out[0])
    if (
        len(out) > 1
        and bool((out[:-1] == c).all())
        and out[-1] <= c
        and bool((stored[:-1] == stored[0]).all())
        and int(stored[-1]) == int(stored[0])
    ):
        out[-1] = c
    else:
        out[-1] = stored[-1]
    return out


def _nbytes(shape: Sequence[int], info: VarInfo) -> int:
    return math.prod(int(s) for s in shape) * max(1, info.dtype.itemsize)


def _with_attrs(doc: dict, attrs: Mapping[str, Any]) -> dict:
    out = dict(doc)
    out["attributes"] = dict(attrs)
    return out


def _check_monotonic(v: _Var, values: np.ndarray, ends: np.ndarray, labels: list[str], descending: bool) -> None:
    """A concatenated coordinate must be strictly monotonic, inside each input and across them
    (``ends``: the end of each input's values; ``labels``: the inputs, in the same order)."""
    if values.ndim != 1 or values.size < 2 or values.dtype.kind not in "iuf":
        return
    d = np.diff(values)
    bad = (d >= 0) if descending else (d <= 0)
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0])  # values[i] -> values[i + 1] is wrong
    j = int(np.searchsorted(ends, i + 1, side="right"))  # the input holding values[i + 1]
    if j > 0 and int(ends[j - 1]) == i + 1:
        raise CombineError(
            f"{labels[j]}: coordinate {v.path!r} starts at {values[i + 1]!r}, which overlaps {labels[j - 1]} (ends at "
            f"{values[i]!r}): the inputs overlap along {v.concat[0]!r}",
            file=labels[j],
            variable=v.path,
            field="values",
        )
    raise CombineError(
        f"{labels[j]}: coordinate {v.path!r} is not strictly {'de' if descending else 'in'}creasing inside the "
        f"file ({values[i]!r} then {values[i + 1]!r})",
        file=labels[j],
        variable=v.path,
        field="values",
    )


def _prune_sources(m: Manifest) -> None:
    """Drop sources no chunk refers to (inputs whose variables were all duplicates)."""
    used = m.used_sources()
    if len(used) == len(m.sources):
        return
    remap = np.full(len(m.sources) + 1, -1, np.int64)
    remap[used] = np.arange(len(used))
    for t in m.tables.values():
        mask = (t.length != ABSENT) & (t.source >= 0)
        t.source[mask] = remap[t.source[mask]].astype(np.int32)
        t.source[~mask & (t.source >= 0)] = 0
    m.set_sources([m.sources[i] for i in used])


# --- public API -----------------------------------------------------------------------------


def combine(
    manifests: Iterable[ManifestLike],
    concat_dim: str | Sequence[str] | None = "time",
    *,
    coords: Mapping[str, CoordSpec] | None = None,
    positions: Sequence[Sequence[int]] | None = None,
    identical_dims: Iterable[str] = (),
    preprocess: Callable[[Manifest], Manifest] | None = None,
    conflicts: str = "error",
    attrs: str = "first",
    sort: bool = True,
    missing: str = "error",
    inline_threshold: int = _DEFAULT_INLINE,
    compare_bytes: int = _DEFAULT_COMPARE,
    allow: Iterable[str] | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Manifest:
    """Combine manifests into one along existing or new dimensions (variable chunk sizes allowed).

    Parameters
    ----------
    manifests
        Manifests, or paths/URLs of manifest files or of files to scan; taken one at a time
        (a path is loaded when reached and dropped after use), so memory stays bounded.
    concat_dim
        The dimension(s) to concatenate along: ``"time"``; ``["y", "x"]`` for a mosaic of tiles;
        a name no input has, for a new dimension (e.g. ``"member"``); None to only merge inputs
        holding different variables.
    coords
        Per concat dim, where each input's position comes from (needed for new dimensions,
        optional otherwise): a sequence (one value per input), a compiled regex searched in the
        input's file name (group ``value``, else group 1, else the match; numbers are parsed),
        ``"attr:<name>"`` (a global attribute) or ``callable(manifest, index, label)``.  For a
        new dimension the values become its coordinate variable.
    positions
        Explicit tile layout: per input, its integer position along each concat dim (overrides
        coordinate-based ordering).
    identical_dims
        Variables (paths or names) copied from the first input without any check.
    preprocess
        ``preprocess(manifest) -> manifest`` applied to every input after loading.
    conflicts
        What to do with a variable that is not along the concat dims but differs between inputs:
        ``"error"`` (default; :class:`~chunkref.errors.CombineError` naming the file, variable and
        field ``values``), ``"first"`` (keep the first input's), ``"drop"`` (leave it out).
        Variables missing from some positions are treated alike with ``missing``.
    attrs
        Attributes that differ (other than the CF ones that change values, which must always
        agree): ``"first"`` (default, as ``xr.open_mfdataset``), ``"drop"`` (drop conflicting
        keys, like xarray's ``drop_conflicts``), ``"error"``.
    sort
        Order inputs by their coordinate values (default); False keeps the given order.
    missing
        ``"error"`` (default) when a variable lacks a position (e.g. a missing tile), or
        ``"fill"`` to leave those chunks absent (they read as the fill value).
    inline_threshold
        Materialised coordinate variables up to this many bytes are stored inline.
    compare_bytes
        Variables that must be identical are compared by value up to this size (larger ones
        must share references, or be listed in ``identical_dims``).
    allow, storage_options
        Source authorization and fsspec options for reading coordinate values (as
        :func:`chunkref.open`).

    Returns
    -------
    Manifest
        Zarr v3 metadata; ``regular`` grids where every chunk edge is equal, ``rectilinear``
        elsewhere, ``chunkref.padded`` where chunks are stored padded.

    Raises
    ------
    CombineError
        When inputs disagree on dtype, byte order, fill value, codecs (up to decode
        equivalence), CF attributes, shapes or chunking outside the concat dims, or when time
        units cannot be rebased exactly; the message and attributes name file, variable, field.
    """
    if conflicts not in CONFLICT_RULES:
        raise InvalidArgumentError(f"conflicts must be one of {CONFLICT_RULES}, got {conflicts!r}")
    if attrs not in CONFLICT_RULES:
        raise InvalidArgumentError(f"attrs must be one of {CONFLICT_RULES}, got {attrs!r}")
    if missing not in ("error", "fill"):
        raise InvalidArgumentError(f"missing must be 'error' or 'fill', got {missing!r}")
    dims: tuple[str, ...] = () if concat_dim is None else ((concat_dim,) if isinstance(concat_dim, str) else tuple(concat_dim))
    if len(set(dims)) != len(dims):
        raise InvalidArgumentError(f"concat_dim lists a dimension twice: {list(dims)}")
    combiner = _Combiner(
        dims,
        coords=coords or {},
        positions=positions,
        identical=frozenset(identical_dims),
        conflicts=conflicts,
        attrs=attrs,
        sort=sort,
        missing=missing,
        inline_threshold=int(inline_threshold),
        compare_bytes=int(compare_bytes),
        allow=((allow,) if isinstance(allow, str) else tuple(allow or ())),
        storage_options=storage_options,
    )
    scanned: set[str] = set()
    for index, item in enumerate(manifests):
        m, label = load_input(item, storage_options)
        scanned.update(scanned_sources(m))
        if preprocess is not None:
            m = preprocess(m)
            if not isinstance(m, Manifest):
                raise InvalidArgumentError(f"preprocess must return a Manifest, got {type(m).__name__} for {label}")
        combiner.add(m, label, index)
        del m  # bounded memory: the input is not kept (its pieces are)
    out = combiner.finish()
    # Sources this process scanned stay trusted in the result (see chunkref.reference.trust).
    record_scanned(out, scanned)
    return out


def combine_append(
    existing: ManifestLike,
    new_manifests: Iterable[ManifestLike],
    concat_dim: str = "time",
    **kwargs: Any,
) -> Manifest:
    """Append inputs to an already combined manifest along ``concat_dim``.

    The existing manifest's chunk tables and grid edges are extended (nothing is re-scanned and
    its references are kept as they are); the new inputs must come after it along
    ``concat_dim`` (their coordinates continue its coordinate), else
    :class:`~chunkref.errors.CombineError`.  Options are those of :func:`combine`.
    """
    kwargs.setdefault("sort", False)
    return combine(_chain(existing, new_manifests), concat_dim, **kwargs)


def _chain(first: ManifestLike, rest: Iterable[ManifestLike]) -> Iterable[ManifestLike]:
    yield first
    yield from rest

