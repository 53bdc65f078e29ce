"""combine: many manifests -> one, along existing or new dimensions, with variable chunk edges.

How it works
------------
Inputs are taken one at a time (a path is loaded, used and dropped), so memory holds the output
being built plus one input.  Each input array becomes a *piece* of an output variable, keyed by
the input's position along the concatenation dimensions the variable has:

* the key along an existing dimension is the first value of its coordinate variable, rebased
  to the first input's time units when they differ (or the input's order when there is no
  coordinate); along a new dimension it comes from ``coords`` (a list, a regex on the file
  name, ``"attr:<name>"``, or a callable);
* pieces with the same key (a variable without the dimension, a coordinate repeated by every
  tile of a mosaic row, ``time`` in both a ``tas`` and a ``pr`` file) must be identical: same
  references, or equal values when small enough to compare; otherwise ``conflicts`` decides.

At the end the keys are sorted, and every variable's chunk tables are placed block by block
into one table (numpy slices, no per-chunk Python).  The output grid's edges are exactly the
inputs' chunks: each input's edges clipped to its extent, so a short last chunk inside the
result is a short chunk.  Chunks stored larger than declared (HDF5 pads partial chunks) get the
``chunkref.padded`` codec.  When every edge is equal the grid is ``regular``, else
``rectilinear``.

Coordinates along the concatenation dimensions are materialised and stored inline; time values
in different units are rebased exactly (:mod:`.times`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chunkref.errors import ChunkrefError, CodecError, CombineError, InvalidArgumentError
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
from chunkref.manifest.table import ABSENT, ChunkTable
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


# --- pieces and variables -------------------------------------------------------------------


@dataclass
class _Piece:
    label: str
    info: VarInfo
    table: ChunkTable
    allow: tuple[str, ...]
    values: np.ndarray | None = None  # raw values (own units), when read
    units: TimeUnits | None = None  # effective CF time units, for time-like variables


@dataclass
class _Var:
    path: str
    ref: VarInfo
    ref_label: str
    concat: tuple[str, ...]  # the concatenation dims this variable has, in output axis order
    identical: bool = False  # copied from the first input unchecked (identical_dims)
    pieces: dict[tuple, _Piece] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    dropped_attrs: set[str] = field(default_factory=set)
    time_like: bool = False
    coord_of: str | None = None  # the concat dim whose coordinate this variable is
    bounds_of: str | None = None  # the variable whose bounds this is (inherits its time units)

    @property
    def axes(self) -> dict[str, int]:
        return {d: self.ref.dims.index(d) for d in self.concat}


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
        self.keys: dict[str, dict[Any, str]] = {k: {} for k in concat_dims}  # key -> first label
        self.key_order: dict[str, list[Any]] = {k: [] for k in concat_dims}
        self.descending: dict[str, bool] = {}
        self.coord_units: dict[str, TimeUnits | None] = {}
        self.extent: dict[tuple[str, Any], tuple[int, str]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.group_dropped: dict[str, set[str]] = {}
        self.refused: dict[str, str] = {}
        self.ninputs = 0

    # -- per input -------------------------------------------------------------------------------

    def add(self, m: Manifest, label: str, index: int) -> None:
        self.ninputs += 1
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
        keys, coord_values = self._keys(m, label, index, infos, allow, remap)
        for p, info in infos.items():
            if p in self.dropped:
                continue
            if p in self.identical or _basename(p) in self.identical:
                if p not in self.vars:
                    self.vars[p] = _Var(p, info, label, (), identical=True, attrs=dict(info.attributes))
                    self.vars[p].pieces[()] = _Piece(label, info, self._table(m, p, remap), allow)
                continue
            new_dims = tuple(k for k in self.concat_dims if self.dim_new[k] and p not in coord_like)
            if new_dims:
                info = _prepend(info, new_dims, label)
            concat = tuple(k for k in self.concat_dims if k in info.dims)
            if any(keys[k] is _EMPTY for k in concat):
                continue  # this input has no elements along a concat dim: nothing to add
            table = self._table(m, p, remap, len(new_dims))
            parent = bounds_parent.get(p)
            units_src = infos[parent].attributes if parent and "units" not in info.attributes else info.attributes
            units = None
            try:
                units = parse_time_units(units_src.get("units"), units_src.get("calendar"))
            except RebaseError as exc:
                if concat:
                    raise CombineError(f"{label}: variable {p!r}: {exc}", file=label, variable=p, field="units") from exc
            piece = _Piece(label, info, table, allow, units=units)
            if p in coord_values:
                piece.values = coord_values[p]
            v = self.vars.get(p)
            if v is None:
                v = _Var(p, info, label, concat, attrs=dict(info.attributes))
                v.time_like = units is not None and bool(concat)
                coord_dim = _basename(p)
                v.coord_of = coord_dim if coord_dim in concat and info.dims == (coord_dim,) else None
                v.bounds_of = parent
                self.vars[p] = v
            else:
                self._check(v, info, label, units)
                self._merge_attrs_var(v, info, label)
            for k in concat:
                ext = info.shape[v.axes[k]]
                prev = self.extent.setdefault((k, keys[k]), (ext, f"{label} ({p})"))
                if prev[0] != ext:
                    raise CombineError(
                        f"{label}: variable {p!r} has {ext} elements along {k!r}, but {prev[0]} in {prev[1]}, "
                        f"which starts at the same {k} (the inputs overlap)",
                        file=label,
                        variable=p,
                        field="shape",
                    )
            key = tuple(keys[k] for k in concat)
            old = v.pieces.get(key)
            if old is None:
                v.pieces[key] = piece
            elif not self._same(v, old, piece):
                self._conflict(v, old, piece)

    def _allow_for(self, m: Manifest) -> tuple[str, ...]:
        if m.location is None:
            return tuple(resolve_url(s.url, None) for s in m.sources) + self.allow
        if is_local(m.location):
            return (location_dir(m.location),) + self.allow
        return self.allow

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

    def _keys(
        self, m: Manifest, label: str, index: int, infos: dict[str, VarInfo], allow: tuple[str, ...], remap: np.ndarray
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        keys: dict[str, Any] = {}
        values_out: dict[str, np.ndarray] = {}
        for j, k in enumerate(self.concat_dims):
            cpath = _coord_path(k, infos)
            values = None
            if cpath is not None:
                values = self._coord_values(m, label, cpath, infos, allow, remap)
                values_out[cpath] = values
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
                key = _scalar(self._rebased(k, cpath, values, infos[cpath], label)[0])
            elif len(self.concat_dims) == 1:
                key = ("#", index)
            else:
                raise CombineError(
                    f"{label}: no coordinate variable for {k!r}: give the tile layout (positions=) or coords=",
                    file=label,
                    field="coordinates",
                )
            if key not in self.keys[k]:
                self.keys[k][key] = label
                self.key_order[k].append(key)
            keys[k] = key
        return keys, values_out

    def _coord_values(
        self, m: Manifest, label: str, path: str, infos: dict[str, VarInfo], allow: tuple[str, ...], remap: np.ndarray
    ) -> np.ndarray:
        piece = _Piece(label, infos[path], self._table(m, path, remap), allow)
        return self._read(path, piece)

    def _rebased(self, k: str, path: str, values: np.ndarray, info: VarInfo, label: str) -> np.ndarray:
        """The coordinate values of dim ``k`` in the first input's units (for keys and checks)."""
        try:
            units = parse_time_units(info.attributes.get("units"), info.attributes.get("calendar"))
        except RebaseError as exc:
            raise CombineError(f"{label}: variable {path!r}: {exc}", file=label, variable=path, field="units") from exc
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

    def _read(self, path: str, piece: _Piece) -> np.ndarray:
        """The stored (raw, undecoded CF) values of a piece, read through the engine."""
        if piece.values is not None:
            return piece.values
        from chunkref.reference import ReferenceStore
        from chunkref.zarr import api

        tmp = Manifest()
        tmp.set_sources(self.out.sources)
        try:
            tmp.add_array(path, {V3_DOC: piece.info.doc}, piece.table)
            store = ReferenceStore(tmp, allow=piece.allow, storage_options=self.storage_options)
            values = np.asarray(api.open(store, mode="r", path=path)[...])
        except ChunkrefError as exc:
            raise CombineError(
                f"{piece.label}: variable {path!r}: values cannot be read for comparison: {exc}",
                file=piece.label,
                variable=path,
                field="values",
            ) from exc
        piece.values = values
        return values

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

    def _same(self, v: _Var, old: _Piece, new: _Piece) -> bool:
        if v.coord_of is not None and old.values is not None and new.values is not None:
            a = self._rebased(v.coord_of, v.path, old.values, old.info, old.label)
            b = self._rebased(v.coord_of, v.path, new.values, new.info, new.label)
            return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        if old.info.shape == new.info.shape and old.table == new.table:
            return True  # the very same references
        if max(old.info.nbytes, new.info.nbytes) > self.compare_bytes:
            return False
        a, b = self._read(v.path, old), self._read(v.path, new)
        if v.time_like and old.units is not None and new.units is not None and old.units != new.units:
            b = self._apply_rebase(b, new.units, old.units, new.info, new.label, v.path)
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))

    def _conflict(self, v: _Var, old: _Piece, new: _Piece) -> None:
        if self.conflicts == "first":
            return
        if self.conflicts == "drop":
            self.dropped.add(v.path)
            self.vars.pop(v.path, None)
            return
        big = max(old.info.nbytes, new.info.nbytes) > self.compare_bytes
        why = (
            f"differs from {old.label} and is too large to compare ({max(old.info.nbytes, new.info.nbytes)} bytes "
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
        out = self.out
        for g in sorted(self.groups, key=lambda s: (s.count("/"), s)):
            out.add_group(g, self.groups[g])
        for path in sorted(self.vars):
            v = self.vars[path]
            try:
                if v.identical or not v.concat:
                    piece = next(iter(v.pieces.values()))
                    out.add_array(path, {V3_DOC: _with_attrs(piece.info.doc, v.attrs)}, piece.table)
                else:
                    self._emit(v, order)
            except CodecError as exc:
                raise CombineError(f"variable {path!r}: {exc}", variable=path, field="codecs") from exc
        for k in self.concat_dims:
            if self.dim_new.get(k) and k not in out.nodes and order[k] and not isinstance(order[k][0], tuple):
                self._emit_values(k, np.asarray(order[k]), (k,), {}, None)
        for p, reason in self.refused.items():
            if p not in out.nodes:
                out.refuse(p, reason)
        _prune_sources(out)
        return out

    def _sorted_keys(self, k: str) -> list[Any]:
        keys = list(self.key_order[k])
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

    def _emit(self, v: _Var, order: dict[str, list[Any]]) -> None:
        ref = v.ref
        axes = v.axes
        key_lists = [order[k] for k in v.concat]
        missing = [kk for kk in _product(key_lists) if kk not in v.pieces]
        if missing and self.missing == "error":
            first = dict(zip(v.concat, missing[0]))
            raise CombineError(
                f"variable {v.path!r} has no input at {first} (present in {len(v.pieces)} of "
                f"{math.prod(len(x) for x in key_lists)} positions); pass missing='fill' to read those as the fill "
                "value, or conflicts='drop'",
                variable=v.path,
                field="missing",
            )
        # Per concat axis and key: the edges (checked equal between pieces sharing the key).
        per_key: list[dict[Any, tuple[np.ndarray, np.ndarray, int, str]]] = [{} for _ in v.concat]
        for kk, piece in v.pieces.items():
            for j, k in enumerate(v.concat):
                a = axes[k]
                entry = (piece.info.declared[a], piece.info.stored[a], piece.info.shape[a], piece.label)
                prev = per_key[j].setdefault(kk[j], entry)
                if prev is not entry and not (
                    np.array_equal(prev[0], entry[0]) and np.array_equal(prev[1], entry[1])
                ):
                    raise CombineError(
                        f"{piece.label}: variable {v.path!r}: chunk edges along {k!r} {entry[1].tolist()} differ from "
                        f"{prev[3]} {prev[1].tolist()} at the same position (tiles of one row/column must be chunked alike)",
                        file=piece.label,
                        variable=v.path,
                        field="chunk_grid",
                    )
        for j, k in enumerate(v.concat):
            absent = [key for key in key_lists[j] if key not in per_key[j]]
            if absent:
                raise CombineError(
                    f"variable {v.path!r}: no input gives its chunking at {k}={absent[0]!r}",
                    variable=v.path,
                    field="missing",
                )
        if v.coord_of is not None or v.time_like:
            if self._materialise(v, order, key_lists):
                return
        declared: list[np.ndarray] = []
        stored: list[np.ndarray] = []
        shape: list[int] = []
        starts: list[dict[Any, int]] = []
        for a in range(ref.ndim):
            if a in axes.values():
                j = v.concat.index(ref.dims[a])
                dec = [per_key[j][key][0] for key in key_lists[j]]
                sto = [per_key[j][key][1] for key in key_lists[j]]
                shape.append(sum(per_key[j][key][2] for key in key_lists[j]))
                counts = np.cumsum([0] + [len(d) for d in dec])
                starts.append({key: int(c) for key, c in zip(key_lists[j], counts[:-1])})
                d_all = np.concatenate(dec) if dec else np.zeros(0, np.int64)
                s_all = np.concatenate(sto) if sto else np.zeros(0, np.int64)
            else:
                shape.append(ref.shape[a])
                starts.append({})
                d_all, s_all = ref.declared[a].copy(), ref.stored[a].copy()
            if len(d_all):
                d_all = _last_edge(d_all, s_all)
            declared.append(d_all.astype(np.int64))
            stored.append(s_all.astype(np.int64))
        grid_shape = tuple(len(d) for d in declared)
        table = _assemble(v, grid_shape, starts, axes)
        try:
            doc = _array_doc(ref, shape, declared, stored, ref.codecs, v.attrs, ref.dims)
        except CodecError as exc:
            raise CombineError(
                f"variable {v.path!r}: {exc} (inputs chunk it differently: "
                f"{sorted({p.label for p in v.pieces.values()})[:4]})",
                variable=v.path,
                field="chunk_grid",
            ) from exc
        self.out.add_array(v.path, {V3_DOC: doc}, table)

    def _materialise(self, v: _Var, order: dict[str, list[Any]], key_lists: list[list[Any]]) -> bool:
        """Concatenate the values of a coordinate / time variable (rebased); False to keep refs."""
        ref = v.ref
        if len(v.concat) != 1:
            if v.coord_of is None:
                return False
        k = v.concat[0] if len(v.concat) == 1 else v.coord_of
        target = self.coord_units.get(v.coord_of) if v.coord_of else None
        if target is None and v.time_like:
            # Bounds share their parent's units; otherwise the first input's units are the target.
            parent = self.vars.get(v.bounds_of) if v.bounds_of else None
            if parent is not None and parent.coord_of is not None:
                target = self.coord_units.get(parent.coord_of)
            elif parent is not None and parent.pieces:
                target = _first_piece(parent).units
            if target is None:
                target = _first_piece(v).units
        units = [p.units for p in v.pieces.values()]
        needs_rebase = target is not None and any(
            u is not None and (u.text.strip() != target.text.strip() or u.calendar != target.calendar) for u in units
        )
        total = sum(p.info.nbytes for p in v.pieces.values())
        if not needs_rebase and (v.coord_of is None or total > self.inline_threshold):
            return False
        axis = v.axes[k]
        parts = []
        for key in key_lists[0] if len(v.concat) == 1 else order[k]:
            piece = v.pieces[(key,)] if len(v.concat) == 1 else v.pieces[(key,)]
            vals = self._read(v.path, piece)
            if needs_rebase and piece.units is not None:
                vals = self._apply_rebase(vals, piece.units, target, piece.info, piece.label, v.path)
            parts.append((vals, piece.label))
        values = np.concatenate([p[0] for p in parts], axis=axis) if parts else np.zeros(ref.shape, ref.dtype)
        if v.coord_of is not None:
            _check_monotonic(v, parts, self.descending.get(k, False))
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


def _first_piece(v: _Var) -> _Piece:
    """The piece of the first input that had the variable (the reference for its units)."""
    return next(p for p in v.pieces.values() if p.label == v.ref_label) if any(
        p.label == v.ref_label for p in v.pieces.values()
    ) else next(iter(v.pieces.values()))


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


def _with_attrs(doc: dict, attrs: Mapping[str, Any]) -> dict:
    out = dict(doc)
    out["attributes"] = dict(attrs)
    return out


def _product(lists: list[list[Any]]) -> list[tuple]:
    import itertools

    return list(itertools.product(*lists))


def _assemble(v: _Var, grid_shape: tuple[int, ...], starts: list[dict[Any, int]], axes: Mapping[str, int]) -> ChunkTable:
    """Place every piece's chunk table into the output grid (one numpy block copy per piece)."""
    n = math.prod(grid_shape)
    source = np.zeros(n, np.int32)
    offset = np.zeros(n, np.uint64)
    length = np.full(n, ABSENT, np.uint64)
    widths = {p.table.cid.shape[1] for p in v.pieces.values() if p.table.cid is not None}
    if len(widths) > 1:
        raise CombineError(f"variable {v.path!r}: inputs record content ids of different widths {sorted(widths)}", variable=v.path, field="cid")
    cid = np.zeros((n, widths.pop()), np.uint8) if widths else None
    inline: dict[int, bytes] = {}
    sv, ov, lv = (c.reshape(grid_shape) for c in (source, offset, length))
    cv = cid.reshape(grid_shape + (cid.shape[1],)) if cid is not None else None
    concat_axes = [axes[k] for k in v.concat]
    for kk, piece in v.pieces.items():
        pg = piece.table.grid_shape
        origin = [0] * len(grid_shape)
        for j, a in enumerate(concat_axes):
            origin[a] = starts[a][kk[j]]
        sl = tuple(slice(o, o + g) for o, g in zip(origin, pg))
        sv[sl] = piece.table.source.reshape(pg)
        ov[sl] = piece.table.offset.reshape(pg)
        lv[sl] = piece.table.length.reshape(pg)
        if cv is not None and piece.table.cid is not None:
            cv[sl] = piece.table.cid.reshape(pg + (cid.shape[1],))
        if piece.table.inline:
            local = np.fromiter(piece.table.inline.keys(), np.int64, len(piece.table.inline))
            coords = np.stack(np.unravel_index(local, pg), axis=1) + np.asarray(origin, np.int64)
            flat = np.ravel_multi_index(tuple(coords.T), grid_shape)
            for lf, of in zip(local.tolist(), flat.tolist()):
                inline[of] = piece.table.inline[lf]
    table = ChunkTable(grid_shape, source, offset, length, cid=cid)
    for f, data in inline.items():
        table._set_inline_flat(f, data)
    return table


def _check_monotonic(v: _Var, parts: list[tuple[np.ndarray, str]], descending: bool) -> None:
    prev_last, prev_label = None, None
    for vals, label in parts:
        if vals.size == 0 or vals.dtype.kind not in "iuf":
            continue
        d = np.diff(vals)
        bad = (d >= 0) if descending else (d <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CombineError(
                f"{label}: coordinate {v.path!r} is not strictly {'de' if descending else 'in'}creasing inside the "
                f"file ({vals[i]!r} then {vals[i + 1]!r})",
                file=label,
                variable=v.path,
                field="values",
            )
        first = vals.reshape(-1)[0]
        if prev_last is not None and ((first >= prev_last) if descending else (first <= prev_last)):
            raise CombineError(
                f"{label}: coordinate {v.path!r} starts at {first!r}, which overlaps {prev_label} (ends at "
                f"{prev_last!r}): the inputs overlap along {v.concat[0]!r}",
                file=label,
                variable=v.path,
                field="values",
            )
        prev_last, prev_label = vals.reshape(-1)[-1], label


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

