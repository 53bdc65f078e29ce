"""One array of one input, normalised for combining: :class:`VarInfo` and the agreement checks.

Inputs may be Zarr v2 (kerchunk JSON) or v3 documents, may already be combined (rectilinear grid,
``chunkref.padded`` codec) and may compress alike with different settings.  :func:`var_info`
turns each into the same v3 view: native dtype, the v3 codec chain without the padded codec,
per-axis declared edges (clipped to the extent) and stored edges (what the bytes hold).

:func:`codecs_key` is the codec chain up to *decode equivalence*: settings that only matter when
encoding (compression levels, blosc's shuffle/typesize/cname, which its header records) are
dropped and aliases (``numcodecs.zstd`` / ``zstd``) unified, so zlib level 4 and level 5 combine
while zlib and zstd do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref.errors import ChunkrefError, CombineError
from chunkref.manifest.manifest import V2_ARRAY_DOC, V2_ATTRS_DOC, V3_DOC, Manifest
from chunkref.zarr.codecs.padded import PADDED_CODEC_NAME, PaddedCodec
from chunkref.zarr.dtypes import (
    DataType,
    data_type_to_v3_json,
    default_fill_value,
    encode_fill_value,
    fill_values_equal,
    v3_dtype,
)
from chunkref.zarr.grid import ChunkGrid, RegularGrid
from chunkref.zarr.metadata import ArrayMetadataV2, ArrayMetadataV3

__all__ = ["CF_FIELDS", "VarInfo", "codecs_key", "var_info"]

#: Attributes that change decoded values: they must agree along a concatenation.
CF_FIELDS = (
    "scale_factor",
    "add_offset",
    "_FillValue",
    "missing_value",
    "_Unsigned",
    "valid_min",
    "valid_max",
    "valid_range",
    "units",
    "calendar",
    "dtype",  # xarray's encoding of bool / timedelta variables
)
ATTRIBUTE_TYPES = "_chunkref_attribute_types"

# Per codec name: configuration keys that do not change how stored bytes decode.
_ENCODE_ONLY: dict[str, frozenset[str] | None] = {
    "gzip": frozenset({"level"}),
    "zstd": frozenset({"level", "checksum"}),
    "numcodecs.zlib": frozenset({"level"}),
    "numcodecs.bz2": frozenset({"level"}),
    "numcodecs.lz4": frozenset({"acceleration"}),
    "numcodecs.lzma": frozenset({"preset", "check"}),
    "numcodecs.deflate": frozenset({"level"}),
    "numcodecs.imagecodecs_deflate": frozenset({"level"}),
    "numcodecs.imagecodecs_zlib": frozenset({"level"}),
    "numcodecs.imagecodecs_zstd": frozenset({"level"}),
    # A blosc header records shuffle, typesize and the compressor: any blosc frame decodes alike.
    "blosc": None,
}
_ALIASES = {"numcodecs.gzip": "gzip", "numcodecs.zstd": "zstd", "numcodecs.blosc": "blosc"}


def _canon(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canon(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canon(v) for v in value)
    return value


def codecs_key(codecs: list[dict[str, Any]]) -> tuple:
    """The codec chain up to decode equivalence (``bytes`` endian excluded: see :func:`byte_order`)."""
    out = []
    for c in codecs:
        name = _ALIASES.get(c.get("name"), c.get("name"))
        conf = dict(c.get("configuration") or {})
        if name == "bytes":
            conf.pop("endian", None)
        elif name == "sharding_indexed":
            conf["codecs"] = codecs_key(conf.get("codecs") or [])
            conf["index_codecs"] = codecs_key(conf.get("index_codecs") or [])
        elif name == "numcodecs.lzma" and conf.get("format") == 3:
            conf.pop("check", None)  # raw lzma streams need their filters; the preset is in them
        elif name in _ENCODE_ONLY:
            drop = _ENCODE_ONLY[name]
            conf = {} if drop is None else {k: v for k, v in conf.items() if k not in drop}
        out.append((name, _canon(conf)))
    return tuple(out)


def byte_order(codecs: list[dict[str, Any]]) -> str | None:
    """The ``bytes`` codec's endian (None for 1-byte types or other array->bytes codecs)."""
    for c in codecs:
        if c.get("name") == "bytes":
            return (c.get("configuration") or {}).get("endian")
    return None


@dataclass
class VarInfo:
    """One input array in the normalised v3 form (see the module docstring)."""

    path: str
    shape: tuple[int, ...]
    data_type: DataType
    fill_value: Any
    codecs: list[dict[str, Any]]  # v3 JSON, without chunkref.padded
    attributes: dict[str, Any]
    dims: tuple[str, ...]
    declared: list[np.ndarray]  # per axis: edges of the chunks inside the array, clipped
    stored: list[np.ndarray]  # per axis: edges as the chunks are stored (padded)
    nominal: tuple[int, ...]  # per axis: a chunk length for axes without chunks (extent 0)
    grid: ChunkGrid
    doc: dict[str, Any]  # the v3 zarr.json of the input array (padded codec included)

    @property
    def dtype(self) -> np.dtype:
        return self.data_type.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * max(1, self.dtype.itemsize)


def var_info(manifest: Manifest, path: str, label: str) -> VarInfo:
    """The :class:`VarInfo` of array ``path`` of ``manifest`` (``label`` names the input in errors)."""
    docs = manifest.nodes[path]
    try:
        if V3_DOC in docs:
            doc = dict(docs[V3_DOC])
            meta = ArrayMetadataV3.from_json(doc, path, validate_codecs=False)
            codecs = [dict(c) for c in doc["codecs"]]
            data_type = meta.data_type
            fill = meta.fill_value
            attrs = dict(doc.get("attributes") or {})
            names = meta.dimension_names
        else:
            meta2 = ArrayMetadataV2.from_json(docs[V2_ARRAY_DOC], docs.get(V2_ATTRS_DOC), path)
            pipe = meta2.codec_pipeline
            codecs = pipe.to_json()
            data_type = v3_dtype(meta2.data_type)
            attrs = dict(meta2.attributes)
            names = meta2.dimension_names
            attrs.pop("_ARRAY_DIMENSIONS", None)
            fill = meta2.fill_value
            if fill is None:
                fill = default_fill_value(data_type)
            elif "_FillValue" not in attrs:
                # xarray reads a v2 fill_value as the CF _FillValue; keep that meaning in v3.
                from chunkref.scanners.hdf5._types import cf_fill_attr_v3

                attrs["_FillValue"] = cf_fill_attr_v3(fill, data_type.dtype)
            meta = ArrayMetadataV3(
                data_type=data_type,
                chunk_grid=meta2.chunk_grid,
                chunk_key_encoding=_default_keys(),
                fill_value=fill if not isinstance(fill, np.generic) else fill.astype(data_type.dtype),
                codecs=tuple(codecs),
                attributes=attrs,
                dimension_names=names,
                path=path,
            )
            doc = meta.to_json()
    except ChunkrefError as exc:
        raise CombineError(f"{label}: array {path!r}: {exc}", file=label, variable=path, field="metadata") from exc
    padded = None
    if codecs and codecs[0].get("name") == PADDED_CODEC_NAME:
        try:
            padded = PaddedCodec.from_json(codecs[0].get("configuration"))
        except ChunkrefError as exc:
            raise CombineError(f"{label}: array {path!r}: {exc}", file=label, variable=path, field="codecs") from exc
        codecs = codecs[1:]
    grid = meta.chunk_grid
    shape = tuple(int(s) for s in grid.shape)
    declared, stored = [], []
    for a, (o, n) in enumerate(zip(grid.offsets, shape)):
        full = np.diff(o)
        declared.append(np.diff(np.minimum(o, n)))
        if padded is not None:
            m = padded._maps[a]
            stored.append(np.asarray([m.get(int(e), int(e)) for e in full.tolist()], np.int64))
        else:
            stored.append(full.astype(np.int64))
    if isinstance(grid, RegularGrid):
        nominal = tuple(grid.chunk_shape)
    else:
        nominal = tuple(int(e[0]) if len(e) else 1 for e in grid.edges)  # type: ignore[attr-defined]
    dims = tuple(str(d) if d is not None else f"{path.rsplit('/', 1)[-1]}_dim_{i}" for i, d in enumerate(names or (None,) * len(shape)))
    return VarInfo(path, shape, data_type, fill, codecs, attrs, dims, declared, stored, nominal, grid, doc)


def _default_keys() -> Any:
    from chunkref.zarr.keys import parse_chunk_key_encoding

    return parse_chunk_key_encoding({"name": "default", "configuration": {"separator": "/"}})


def same_value(a: Any, b: Any) -> bool:
    """Attribute equality that treats NaN as equal and lists like arrays."""
    if a is b:
        return True
    try:
        x, y = np.asarray(a), np.asarray(b)
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            return x.shape == y.shape and bool(np.array_equal(x, y, equal_nan=True))
    except (TypeError, ValueError):
        pass
    return bool(a == b) if not isinstance(a == b, np.ndarray) else bool(np.all(a == b))


def check_agreement(ref: VarInfo, info: VarInfo, label: str, ref_label: str, skip_fields: frozenset[str]) -> None:
    """Raise :class:`CombineError` naming the file, variable and field where ``info`` and ``ref``
    disagree on something that changes decoded values (shape and grid are checked by the caller)."""

    def fail(field: str, mine: Any, theirs: Any) -> None:
        raise CombineError(
            f"{label}: variable {info.path!r}: field {field!r} is {mine!r}, but {theirs!r} in {ref_label}",
            file=label,
            variable=info.path,
            field=field,
        )

    if info.dims != ref.dims:
        fail("dimension_names", list(info.dims), list(ref.dims))
    if data_type_to_v3_json(info.data_type) != data_type_to_v3_json(ref.data_type):
        fail("data_type", data_type_to_v3_json(info.data_type), data_type_to_v3_json(ref.data_type))
    if not fill_values_equal(info.fill_value, ref.fill_value):
        fail(
            "fill_value",
            encode_fill_value(info.fill_value, info.data_type, 3),
            encode_fill_value(ref.fill_value, ref.data_type, 3),
        )
    if byte_order(info.codecs) != byte_order(ref.codecs):
        fail("byte order", byte_order(info.codecs), byte_order(ref.codecs))
    if codecs_key(info.codecs) != codecs_key(ref.codecs):
        fail("codecs", info.codecs, ref.codecs)
    types_a = info.attributes.get(ATTRIBUTE_TYPES) or {}
    types_b = ref.attributes.get(ATTRIBUTE_TYPES) or {}
    for name in CF_FIELDS:
        if name in skip_fields:
            continue
        a, b = info.attributes.get(name), ref.attributes.get(name)
        if name == "calendar":
            from chunkref.manifest.combine.times import canonical_calendar

            if canonical_calendar(a) != canonical_calendar(b):
                fail(name, a, b)
            continue
        if (a is None) != (b is None) or (a is not None and not same_value(a, b)):
            fail(name, a, b)
        if isinstance(types_a, dict) and isinstance(types_b, dict) and types_a.get(name) != types_b.get(name):
            fail(f"{name} (type)", types_a.get(name), types_b.get(name))
