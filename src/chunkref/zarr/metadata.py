"""Zarr node metadata: ``ArrayMetadataV3``, ``ArrayMetadataV2``, ``GroupMetadata``.

Parsing is strict and every error is a :class:`~chunkref.errors.MetadataError` (or its
subclass :class:`~chunkref.errors.UnsupportedFeatureError`) whose message starts with the node
path and document, then names the field: ``"temp/zarr.json: fill_value: ..."``.

Documents
---------
Each metadata object has

* ``to_json()``: the node's main document as a dict (v3 ``zarr.json``; v2 ``.zarray`` or
  ``.zgroup``, without attributes);
* ``documents()``: every document of the node keyed by its name relative to the node
  (``{"zarr.json": ...}``; v2 ``{".zarray" | ".zgroup": ..., ".zattrs": ...}`` plus
  ``".zmetadata"`` for a consolidated v2 group);
* ``encode_documents()``: the same, serialized with :func:`json_dumps`.

:func:`parse_node` turns such a mapping of documents back into metadata.

v3 strictness: required fields, ``must_understand`` (an unknown field is refused unless it is an
object with ``"must_understand": false``; those are kept and written back), short-hand
extension names, ``storage_transformers`` absent or empty, ``dimension_names`` length. v2
tolerance: unknown ``.zarray`` keys are ignored (kept for round trips), ``filters: []`` means
null, byte order on 1-byte typestrs (NCZarr), a missing ``dimension_separator`` means ``"."``.

Codecs are validated when a document is parsed, by building the codec pipeline
(:mod:`chunkref.zarr.codecs.pipeline`), so an unknown codec or a bad chain fails at open rather
than at the first read. Children of consolidated metadata skip that until they are opened.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from chunkref.config import config
from chunkref.errors import ChunkrefError, InvalidArgumentError, MetadataError, UnsupportedFeatureError
from chunkref.zarr.dtypes import (
    OBJECT_CODEC_IDS,
    DataType,
    as_data_type,
    cast_fill_value,
    data_type_to_v3_json,
    default_fill_value,
    dtype_endian,
    dtype_to_v2_json,
    encode_fill_value,
    needs_endian,
    parse_data_type_v3,
    parse_dtype_v2,
    parse_fill_value,
    v3_dtype,
)
from chunkref.zarr.grid import ChunkGrid, RegularGrid, grid_from_chunks, parse_chunk_grid
from chunkref.zarr.keys import ChunkKeyEncoding, parse_chunk_key_encoding

__all__ = [
    "DEFAULT_FILL",
    "ArrayMetadata",
    "ArrayMetadataV2",
    "ArrayMetadataV3",
    "ConsolidatedMetadata",
    "GroupMetadata",
    "NodeMetadata",
    "json_dumps",
    "json_loads",
    "make_array_metadata",
    "parse_node",
]

#: Default limits of :func:`json_loads` (metadata documents, including large ``.zmetadata``).
MAX_JSON_BYTES = 512 << 20
MAX_JSON_DEPTH = 128


class _DefaultFill:
    """Sentinel: "no fill value given, use the data type's default" (None means v2 null)."""

    def __repr__(self) -> str:
        return "DEFAULT_FILL"


DEFAULT_FILL: Any = _DefaultFill()


# --- JSON -----------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, tuples to lists, non-finite floats to strings.

    Bare ``NaN``/``Infinity`` are not JSON; they become the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"`` (the Zarr fill-value spelling). Python ints stay ints (uint64 exact).
    """
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isnan(obj):
            return "NaN"
        if math.isinf(obj):
            return "Infinity" if obj > 0 else "-Infinity"
        return obj
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    raise InvalidArgumentError(f"{type(obj).__name__} value {obj!r} cannot be written as JSON")


def json_dumps(doc: Any, *, indent: int | None = None) -> bytes:
    """Serialize a metadata document like zarr-python: indented (``json_indent``, default 2),
    ASCII-escaped, keys in insertion order. NaN/Infinity never appear bare (see
    :func:`_jsonable`); numpy scalars are converted; big integers stay exact."""
    if indent is None:
        indent = config.get("json_indent")
    try:
        # Fast path: documents are almost always plain JSON already.
        text = json.dumps(doc, indent=indent, allow_nan=False, default=_json_default)
    except ValueError:
        # A non-finite float somewhere: rewrite it as its string spelling.
        text = json.dumps(_jsonable(doc), indent=indent, allow_nan=False)
    return text.encode("ascii")


def _json_default(obj: Any) -> Any:
    """``json.dumps`` hook for values it does not know (numpy scalars and arrays)."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return _jsonable(obj)
    raise InvalidArgumentError(f"{type(obj).__name__} value {obj!r} cannot be written as JSON")


def _max_depth(data: bytes) -> int:
    """Deepest ``[``/``{`` nesting outside strings, computed with numpy (no per-byte loop)."""
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size == 0:
        return 0
    is_bs = b == ord("\\")
    idx = np.arange(b.size)
    # Index of the last non-backslash byte at or before each position.
    last_non_bs = np.maximum.accumulate(np.where(is_bs, -1, idx))
    quotes = np.flatnonzero(b == ord('"'))
    if quotes.size:
        prev = quotes - 1
        run = np.where(prev >= 0, prev - last_non_bs[np.maximum(prev, 0)], 0)
        real_quotes = quotes[run % 2 == 0]
    else:
        real_quotes = quotes
    toggles = np.zeros(b.size, dtype=np.int8)
    toggles[real_quotes] = 1
    in_string = (np.cumsum(toggles) % 2).astype(bool)
    opens = ((b == ord("[")) | (b == ord("{"))) & ~in_string
    closes = ((b == ord("]")) | (b == ord("}"))) & ~in_string
    steps = opens.astype(np.int32) - closes.astype(np.int32)
    if not opens.any():
        return 0
    return int(np.cumsum(steps).max())


def json_loads(
    data: bytes | bytearray | memoryview | str,
    *,
    max_size: int | None = MAX_JSON_BYTES,
    max_depth: int | None = MAX_JSON_DEPTH,
    what: str = "metadata",
) -> Any:
    """Parse a JSON document with size and nesting limits.

    Bare ``NaN``/``Infinity`` are accepted (zarr-python writes them in attributes). Integers
    are parsed exactly (never through float).

    Raises
    ------
    MetadataError
        Naming ``what`` (e.g. the store key) when the document is too large, too deep, not
        UTF-8 or not JSON.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if max_size is not None and len(raw) > max_size:
        raise MetadataError(f"{what}: document of {len(raw)} bytes exceeds the limit of {max_size} bytes")
    if max_depth is not None:
        depth = _max_depth(raw)
        if depth > max_depth:
            raise MetadataError(f"{what}: JSON nesting depth {depth} exceeds the limit of {max_depth}")
    try:
        text = raw.decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as e:
        raise MetadataError(f"{what}: not UTF-8 ({e})") from e
    except RecursionError as e:
        raise MetadataError(f"{what}: JSON nested too deeply") from e
    except ValueError as e:
        raise MetadataError(f"{what}: invalid JSON ({e})") from e


# --- helpers --------------------------------------------------------------------------------


def _where(path: str, doc: str) -> str:
    return f"{path}/{doc}" if path else doc


def _located(err: ChunkrefError, where: str) -> ChunkrefError:
    """The same error class with the node location prefixed to the message."""
    cls = type(err) if isinstance(err, MetadataError) else MetadataError
    return cls(f"{where}: {err}")


def _int_list(value: Any, name: str, *, minimum: int = 0) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    ):
        raise MetadataError(f"{name} must be a list of integers >= {minimum}, got {value!r}")
    return tuple(value)


def _is_ignorable(value: Any) -> bool:
    return isinstance(value, dict) and value.get("must_understand") is False


def _ext_json(value: Any, name: str) -> dict[str, Any]:
    """A codec / extension as an object (short-hand strings become ``{"name": ...}``)."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        conf = value.get("configuration")
        if conf is not None and not isinstance(conf, Mapping):
            raise MetadataError(f"{name}: configuration of {value['name']!r} must be an object, got {conf!r}")
        return dict(value)
    if hasattr(value, "to_json"):
        return _ext_json(value.to_json(), name)
    raise MetadataError(f"{name}: expected a name or {{'name', 'configuration'}}, got {value!r}")


def _v2_codec_json(value: Any, name: str) -> dict[str, Any]:
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return dict(value)
    if hasattr(value, "get_config"):  # a numcodecs codec instance
        return _v2_codec_json(value.get_config(), name)
    raise MetadataError(f"{name}: expected a numcodecs config with an 'id', got {value!r}")


def _dimension_names(value: Any, ndim: int, name: str) -> tuple[str | None, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(v is None or isinstance(v, str) for v in value):
        raise MetadataError(f"{name} must be a list of strings or nulls, got {value!r}")
    if len(value) != ndim:
        raise MetadataError(f"{name} has {len(value)} entries, the array has {ndim} dimensions")
    return tuple(value)


def _attributes(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MetadataError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def _pipeline_error(err: Exception, where: str, what: str) -> MetadataError:
    """A codec-pipeline failure as a MetadataError naming the node (typed subclasses kept)."""
    msg = str(err)
    if msg.startswith(where):
        text = msg
    else:
        text = f"{where}: {what}: {msg}"
    cls = type(err) if isinstance(err, MetadataError) else MetadataError
    try:
        return cls(text)
    except TypeError:  # a subclass with a different constructor
        return MetadataError(text)


def _validate_codecs(meta: ArrayMetadataV3 | ArrayMetadataV2) -> None:
    """Build the codec pipeline now so a bad chain fails at open (see ``codec_pipeline``)."""
    try:
        import chunkref.zarr.codecs.pipeline  # noqa: F401
    except ModuleNotFoundError as e:
        # Builds without the pipeline module (it is developed separately) validate lazily.
        if e.name == "chunkref.zarr.codecs.pipeline":
            return
        raise
    _ = meta.codec_pipeline


# --- array metadata: shared -----------------------------------------------------------------


class _ArrayBase:
    """What both array metadata classes provide on top of their fields."""

    node_type: ClassVar[str] = "array"
    data_type: DataType
    chunk_grid: ChunkGrid
    path: str

    @property
    def dtype(self) -> np.dtype:
        """The in-memory numpy dtype (object for vlen strings / bytes)."""
        return self.data_type.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.chunk_grid.shape

    @property
    def ndim(self) -> int:
        return len(self.chunk_grid.shape)

    chunk_key_encoding: ChunkKeyEncoding  # a field in v3, derived from dimension_separator in v2

    def chunk_key(self, coords: Sequence[int]) -> str:
        """Store key of chunk ``coords`` relative to the array's prefix (``c/0/1``, ``0.1``)."""
        return self.chunk_key_encoding.encode(coords)

    def chunk_keys(self, coords: Any) -> list[str]:
        """Keys of many chunks, ``coords`` of shape ``(n, ndim)`` (vectorised ``chunk_key``)."""
        return self.chunk_key_encoding.encode_many(coords)

    def encode_documents(self) -> dict[str, bytes]:
        """Every document of the node, serialized (see :func:`json_dumps`)."""
        return {name: json_dumps(doc) for name, doc in self.documents().items()}  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        # Equal when they serialize to the same documents (same class: v2 never equals v3).
        if type(other) is not type(self):
            return NotImplemented
        return self.documents() == other.documents()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def evolve(self, **changes: Any) -> Any:
        """A copy with fields changed; ``shape=`` resizes (``chunk_grid.with_shape``: regular
        grids keep their chunk shape, rectilinear ones extend their last edge), ``dtype=``
        replaces the data type."""
        shape = changes.pop("shape", None)
        if shape is not None:
            changes["chunk_grid"] = (changes.get("chunk_grid") or self.chunk_grid).with_shape(tuple(int(s) for s in shape))
        if "dtype" in changes:
            changes["data_type"] = as_data_type(changes.pop("dtype"))
        return replace(self, **changes)  # type: ignore[type-var]


# --- v3 -------------------------------------------------------------------------------------

_V3_ARRAY_KNOWN = (
    "zarr_format",
    "node_type",
    "shape",
    "data_type",
    "chunk_grid",
    "chunk_key_encoding",
    "fill_value",
    "codecs",
    "attributes",
    "dimension_names",
    "storage_transformers",
)


@dataclass(frozen=True, eq=False)
class ArrayMetadataV3(_ArrayBase):
    """A v3 array's ``zarr.json``.

    Attributes
    ----------
    data_type
        The :class:`~chunkref.zarr.dtypes.DataType` (``dtype`` gives the numpy dtype, native
        byte order; the ``bytes`` codec's ``endian`` says how chunks are stored).
    chunk_grid
        Regular or rectilinear; its ``shape`` is the array shape.
    chunk_key_encoding
        ``default`` or ``v2`` keys.
    fill_value
        A numpy scalar of ``dtype`` (``str`` / ``bytes`` for vlen types).
    codecs
        The codec chain as JSON objects (short-hand names expanded to ``{"name": ...}``).
    attributes, dimension_names
        As in the document (``dimension_names`` None when absent).
    extra_fields
        Unknown fields marked ``"must_understand": false``, written back unchanged.
    path
        The node path, used in error messages only.
    """

    data_type: DataType
    chunk_grid: ChunkGrid
    chunk_key_encoding: ChunkKeyEncoding  # type: ignore[assignment]
    fill_value: Any
    codecs: tuple[dict[str, Any], ...]
    attributes: dict[str, Any] = field(default_factory=dict)
    dimension_names: tuple[str | None, ...] | None = None
    extra_fields: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    zarr_format: ClassVar[int] = 3

    def __post_init__(self) -> None:
        if not isinstance(self.data_type, DataType):
            object.__setattr__(self, "data_type", as_data_type(self.data_type))
        object.__setattr__(self, "codecs", tuple(_ext_json(c, "codecs") for c in self.codecs))
        if not self.codecs:
            raise MetadataError(f"{_where(self.path, 'zarr.json')}: codecs must not be empty")
        object.__setattr__(self, "dimension_names", _dimension_names(self.dimension_names, self.ndim, "dimension_names"))
        if self.fill_value is None:
            raise MetadataError(f"{_where(self.path, 'zarr.json')}: fill_value may not be null in v3")

    # --- derived ---------------------------------------------------------------------------------

    @property
    def chunks(self) -> tuple[int, ...]:
        """The regular chunk shape (for a rectilinear grid: raises, use ``chunk_grid``)."""
        if not isinstance(self.chunk_grid, RegularGrid):
            raise InvalidArgumentError(
                f"array {self.path or '/'!r} has a rectilinear chunk grid; use chunk_grid.chunk_sizes"
            )
        return self.chunk_grid.chunk_shape

    @property
    def storage_transformers(self) -> tuple[()]:
        return ()

    @cached_property
    def codec_pipeline(self) -> Any:
        """The :class:`~chunkref.zarr.codecs.pipeline.CodecPipeline` of ``codecs``.

        For a rectilinear grid the pipeline gets the first chunk's declared shape (codecs check
        rank and dtype; each chunk's shape arrives with its
        :class:`~chunkref.zarr.codecs.base.ChunkSpec`).
        """
        from chunkref.zarr.codecs.pipeline import CodecPipeline

        grid = self.chunk_grid
        if isinstance(grid, RegularGrid):
            chunk_shape = grid.chunk_shape
        else:
            chunk_shape = tuple(axis[0] for axis in grid.edges)  # type: ignore[attr-defined]
        try:
            pipeline = CodecPipeline.from_v3(list(self.codecs), self.dtype, chunk_shape)
            # Codecs that constrain the whole grid (sharding: every shard edge a multiple of
            # the inner chunk) check it here, so a bad rectilinear grid fails at open.
            check_grid = getattr(pipeline.array_bytes_codec, "check_grid", None)
            if check_grid is not None:
                check_grid(grid, pipeline.array_array_codecs)
            return pipeline
        except (ChunkrefError, ValueError, TypeError) as e:
            raise _pipeline_error(e, _where(self.path, "zarr.json"), "codecs") from e

    # --- JSON ------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The ``zarr.json`` document (field order as zarr-python writes it)."""
        doc: dict[str, Any] = {
            "shape": list(self.shape),
            "data_type": data_type_to_v3_json(self.data_type),
            "chunk_grid": self.chunk_grid.to_json(),
            "chunk_key_encoding": self.chunk_key_encoding.to_json(),
            "fill_value": encode_fill_value(self.fill_value, self.data_type, 3),
            "codecs": [dict(c) for c in self.codecs],
            "attributes": self.attributes,
        }
        if self.dimension_names is not None:
            doc["dimension_names"] = list(self.dimension_names)
        doc["zarr_format"] = 3
        doc["node_type"] = "array"
        doc["storage_transformers"] = []
        doc.update(self.extra_fields)
        return doc

    def documents(self) -> dict[str, Any]:
        return {"zarr.json": self.to_json()}

    @classmethod
    def from_json(cls, doc: Any, path: str = "", *, validate_codecs: bool = True) -> ArrayMetadataV3:
        """Parse a v3 array ``zarr.json`` document (strict; errors name ``path`` and the field)."""
        where = _where(path, "zarr.json")
        try:
            meta = cls._parse(doc, path)
        except ChunkrefError as e:
            raise _located(e, where) from e
        if validate_codecs:
            _validate_codecs(meta)
        return meta

    @classmethod
    def _parse(cls, doc: Any, path: str) -> ArrayMetadataV3:
        if not isinstance(doc, dict):
            raise MetadataError(f"expected a JSON object, got {type(doc).__name__}")
        if doc.get("zarr_format") != 3 or isinstance(doc.get("zarr_format"), bool):
            raise MetadataError(f"zarr_format must be 3, got {doc.get('zarr_format')!r}")
        if doc.get("node_type") != "array":
            raise MetadataError(f"node_type must be 'array', got {doc.get('node_type')!r}")
        missing = [k for k in ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "fill_value", "codecs") if k not in doc]
        if missing:
            raise MetadataError(f"missing required fields {missing}")
        extra = {k: v for k, v in doc.items() if k not in _V3_ARRAY_KNOWN}
        refused = [k for k, v in extra.items() if not _is_ignorable(v)]
        if refused:
            raise MetadataError(f"unknown fields {refused} (not marked must_understand: false)")
        shape = _int_list(doc["shape"], "shape")
        data_type = parse_data_type_v3(doc["data_type"])
        grid = parse_chunk_grid(doc["chunk_grid"], shape)
        cke = parse_chunk_key_encoding(doc["chunk_key_encoding"])
        fill = parse_fill_value(doc["fill_value"], data_type, 3)
        codecs = doc["codecs"]
        if not isinstance(codecs, list) or not codecs:
            raise MetadataError(f"codecs must be a non-empty list, got {codecs!r}")
        codecs_t = tuple(_ext_json(c, f"codecs[{i}]") for i, c in enumerate(codecs))
        st = doc.get("storage_transformers", [])
        if st is None:
            st = []
        if not isinstance(st, list):
            raise MetadataError(f"storage_transformers must be a list, got {st!r}")
        if st:
            names = [t.get("name") if isinstance(t, dict) else t for t in st]
            raise UnsupportedFeatureError(f"storage_transformers {names} are not supported")
        return cls(
            data_type=data_type,
            chunk_grid=grid,
            chunk_key_encoding=cke,
            fill_value=fill,
            codecs=codecs_t,
            attributes=_attributes(doc.get("attributes"), "attributes"),
            dimension_names=_dimension_names(doc.get("dimension_names"), len(shape), "dimension_names"),
            extra_fields=extra,
            path=path,
        )



# --- v2 -------------------------------------------------------------------------------------

_V2_ARRAY_KEYS = ("zarr_format", "shape", "chunks", "dtype", "compressor", "fill_value", "order", "filters")


@dataclass(frozen=True, eq=False)
class ArrayMetadataV2(_ArrayBase):
    """A v2 array: ``.zarray`` plus ``.zattrs``.

    Attributes
    ----------
    data_type
        From the typestr (byte order kept); for ``"|O"`` the vlen kind comes from the object
        codec in ``filters`` / ``compressor``.
    chunk_grid
        Always a :class:`~chunkref.zarr.grid.RegularGrid`.
    fill_value
        A numpy scalar, or None for ``null``.
    order
        ``"C"`` or ``"F"``: the element layout inside each chunk.
    compressor, filters
        numcodecs configurations (``filters`` None when absent, null or ``[]``).
    dimension_separator
        As written (None when the key is absent, which means ``"."``).
    attributes
        ``.zattrs`` (``_ARRAY_DIMENSIONS`` is kept there; :attr:`dimension_names` reads it).
    extra_fields
        Unknown ``.zarray`` keys, ignored but written back.
    """

    data_type: DataType
    chunk_grid: ChunkGrid
    fill_value: Any
    order: str = "C"
    compressor: dict[str, Any] | None = None
    filters: tuple[dict[str, Any], ...] | None = None
    dimension_separator: str | None = "."
    attributes: dict[str, Any] = field(default_factory=dict)
    extra_fields: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    zarr_format: ClassVar[int] = 2

    def __post_init__(self) -> None:
        if not isinstance(self.data_type, DataType):
            object.__setattr__(self, "data_type", as_data_type(self.data_type))
        if not isinstance(self.chunk_grid, RegularGrid):
            raise MetadataError(f"{_where(self.path, '.zarray')}: v2 arrays need a regular chunk grid")
        if self.order not in ("C", "F"):
            raise MetadataError(f"{_where(self.path, '.zarray')}: order must be 'C' or 'F', got {self.order!r}")
        if self.filters is not None:
            filters = tuple(_v2_codec_json(f, "filters") for f in self.filters)
            object.__setattr__(self, "filters", filters or None)
        if self.compressor is not None:
            object.__setattr__(self, "compressor", _v2_codec_json(self.compressor, "compressor"))
        # Validates the separator.
        ChunkKeyEncoding.from_dimension_separator(self.dimension_separator)

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.chunk_grid.chunk_shape  # type: ignore[attr-defined]

    @property
    def chunk_key_encoding(self) -> ChunkKeyEncoding:  # type: ignore[override]
        return ChunkKeyEncoding.from_dimension_separator(self.dimension_separator)

    @property
    def dimension_names(self) -> tuple[str | None, ...] | None:
        """The xarray ``_ARRAY_DIMENSIONS`` attribute, when it is a valid list of names."""
        dims = self.attributes.get("_ARRAY_DIMENSIONS")
        if isinstance(dims, list) and len(dims) == self.ndim and all(isinstance(d, str) for d in dims):
            return tuple(dims)
        return None

    @property
    def object_codec_id(self) -> str | None:
        """The id of the object codec (first filter, or the compressor) for ``"|O"`` arrays."""
        for c in (*(self.filters or ()), *([self.compressor] if self.compressor else [])):
            if c.get("id") in OBJECT_CODEC_IDS:
                return str(c["id"])
        return None

    @cached_property
    def codec_pipeline(self) -> Any:
        """The :class:`~chunkref.zarr.codecs.pipeline.CodecPipeline` of filters + compressor."""
        from chunkref.zarr.codecs.pipeline import CodecPipeline

        try:
            return CodecPipeline.from_v2(
                self.compressor,
                list(self.filters) if self.filters is not None else None,
                self.dtype,
                self.order,
                self.chunks,
            )
        except (ChunkrefError, ValueError, TypeError) as e:
            raise _pipeline_error(e, _where(self.path, ".zarray"), "compressor/filters") from e

    # --- JSON ------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The ``.zarray`` document (key order as zarr-python writes it)."""
        doc: dict[str, Any] = {
            "shape": list(self.shape),
            "chunks": list(self.chunks),
            "dtype": dtype_to_v2_json(self.data_type),
            "fill_value": encode_fill_value(self.fill_value, self.data_type, 2),
            "order": self.order,
            "filters": [dict(f) for f in self.filters] if self.filters else None,
        }
        if self.dimension_separator is not None:
            doc["dimension_separator"] = self.dimension_separator
        doc["compressor"] = dict(self.compressor) if self.compressor is not None else None
        doc["zarr_format"] = 2
        doc.update(self.extra_fields)
        return doc

    def documents(self) -> dict[str, Any]:
        return {".zarray": self.to_json(), ".zattrs": self.attributes}

    @classmethod
    def from_json(
        cls, doc: Any, attributes: Any = None, path: str = "", *, validate_codecs: bool = True
    ) -> ArrayMetadataV2:
        """Parse a ``.zarray`` document (and the ``.zattrs`` object, None when absent)."""
        where = _where(path, ".zarray")
        try:
            attrs = _attributes(attributes, "attributes")
        except MetadataError as e:
            raise _located(e, _where(path, ".zattrs")) from e
        try:
            meta = cls._parse(doc, attrs, path)
        except ChunkrefError as e:
            raise _located(e, where) from e
        if validate_codecs:
            _validate_codecs(meta)
        return meta

    @classmethod
    def _parse(cls, doc: Any, attributes: dict[str, Any], path: str) -> ArrayMetadataV2:
        if not isinstance(doc, dict):
            raise MetadataError(f"expected a JSON object, got {type(doc).__name__}")
        if doc.get("zarr_format") != 2 or isinstance(doc.get("zarr_format"), bool):
            raise MetadataError(f"zarr_format must be 2, got {doc.get('zarr_format')!r}")
        missing = [k for k in _V2_ARRAY_KEYS if k not in doc]
        if missing:
            raise MetadataError(f"missing required keys {missing}")
        shape = _int_list(doc["shape"], "shape")
        chunks = _int_list(doc["chunks"], "chunks", minimum=1)
        if len(chunks) != len(shape):
            raise MetadataError(f"chunks {list(chunks)} do not match the rank of shape {list(shape)}")
        compressor = doc["compressor"]
        if compressor is not None:
            compressor = _v2_codec_json(compressor, "compressor")
        filters = doc["filters"]
        if filters is not None:
            if not isinstance(filters, list):
                raise MetadataError(f"filters must be a list or null, got {filters!r}")
            # An empty list is out of spec; zarr-python treats it as null, so do we.
            filters = tuple(_v2_codec_json(f, f"filters[{i}]") for i, f in enumerate(filters)) or None
        object_id = None
        for c in (*(filters or ()), *([compressor] if compressor else [])):
            if c["id"] in OBJECT_CODEC_IDS:
                object_id = c["id"]
                break
        data_type = parse_dtype_v2(doc["dtype"], object_codec_id=object_id)
        if data_type.vlen is not None and object_id is None:
            raise MetadataError("dtype '|O' needs an object codec (e.g. vlen-utf8) in filters")
        fill = parse_fill_value(doc["fill_value"], data_type, 2)
        order = doc["order"]
        if order not in ("C", "F"):
            raise MetadataError(f"order must be 'C' or 'F', got {order!r}")
        sep = doc.get("dimension_separator")
        if "dimension_separator" in doc and sep not in (".", "/"):
            raise MetadataError(f"dimension_separator must be '.' or '/', got {sep!r}")
        # Other keys SHOULD NOT be present and SHOULD be ignored (v2 spec); keep them as is.
        extra = {k: v for k, v in doc.items() if k not in (*_V2_ARRAY_KEYS, "dimension_separator")}
        return cls(
            data_type=data_type,
            chunk_grid=RegularGrid(shape, chunks),
            fill_value=fill,
            order=order,
            compressor=compressor,
            filters=filters,
            dimension_separator=sep,
            attributes=attributes,
            extra_fields=extra,
            path=path,
        )



ArrayMetadata = ArrayMetadataV3 | ArrayMetadataV2


# --- groups and consolidated metadata -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ConsolidatedMetadata:
    """Metadata of every node below a group, keyed by path relative to it (``"sub/arr"``)."""

    metadata: dict[str, Any] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConsolidatedMetadata):
            return NotImplemented
        return _consolidated_v3_json(self) == _consolidated_v3_json(other)

    __hash__ = None  # type: ignore[assignment]


def _sort_key(path: str) -> tuple[int, str]:
    # zarr-python's order: by depth, then by NFKC-casefolded name.
    return (path.count("/"), unicodedata.normalize("NFKC", path).casefold())


def _consolidated_v3_json(cm: ConsolidatedMetadata) -> dict[str, Any]:
    out = {}
    for key in sorted(cm.metadata, key=_sort_key):
        node = cm.metadata[key]
        if node.zarr_format != 3:
            raise InvalidArgumentError(f"consolidated metadata of a v3 group holds a v{node.zarr_format} node {key!r}")
        out[key] = node.to_json()
    return {"kind": "inline", "must_understand": False, "metadata": out}


def _parse_consolidated_v3(value: Any, path: str) -> ConsolidatedMetadata:
    if not isinstance(value, dict):
        raise MetadataError(f"consolidated_metadata must be an object, got {value!r}")
    if value.get("kind") != "inline":
        raise UnsupportedFeatureError(f"consolidated_metadata kind {value.get('kind')!r} (only 'inline')")
    extra = set(value) - {"kind", "must_understand", "metadata"}
    if extra:
        raise MetadataError(f"consolidated_metadata has unknown fields {sorted(extra)}")
    md = value.get("metadata")
    if not isinstance(md, dict):
        raise MetadataError(f"consolidated_metadata.metadata must be an object, got {md!r}")
    out: dict[str, Any] = {}
    for key, doc in md.items():
        child = _join(path, key)
        if not key or key.startswith("/") or key.endswith("/") or "//" in key:
            raise MetadataError(f"consolidated_metadata.metadata key {key!r} is not a relative path")
        if not isinstance(doc, dict):
            raise MetadataError(f"consolidated_metadata.metadata[{key!r}] must be an object")
        if doc.get("node_type") == "array":
            out[key] = ArrayMetadataV3.from_json(doc, child, validate_codecs=False)
        else:
            out[key] = GroupMetadata.from_json(doc, child)
    return ConsolidatedMetadata(out)


def _join(base: str, rel: str) -> str:
    return f"{base}/{rel}" if base else rel


@dataclass(frozen=True, eq=False)
class GroupMetadata:
    """A group: ``zarr.json`` (v3) or ``.zgroup`` + ``.zattrs`` (v2).

    ``consolidated`` holds the inline ``consolidated_metadata`` of a v3 group or the
    ``.zmetadata`` of a v2 group (None when absent).
    """

    zarr_format: int = 3
    attributes: dict[str, Any] = field(default_factory=dict)
    consolidated: ConsolidatedMetadata | None = None
    extra_fields: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    node_type: ClassVar[str] = "group"

    def __post_init__(self) -> None:
        if self.zarr_format not in (2, 3):
            raise MetadataError(f"zarr_format must be 2 or 3, got {self.zarr_format!r}")
        if not isinstance(self.attributes, dict):
            raise MetadataError(f"group attributes must be a dict, got {type(self.attributes).__name__}")
        if self.consolidated is not None and not isinstance(self.consolidated, ConsolidatedMetadata):
            object.__setattr__(self, "consolidated", ConsolidatedMetadata(dict(self.consolidated)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GroupMetadata):
            return NotImplemented
        return self.documents() == other.documents()

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict[str, Any]:
        """v3: the ``zarr.json`` document; v2: the ``.zgroup`` document (exactly ``{"zarr_format": 2}``)."""
        if self.zarr_format == 2:
            return {"zarr_format": 2}
        doc: dict[str, Any] = {"attributes": self.attributes, "zarr_format": 3}
        if self.consolidated is not None:
            doc["consolidated_metadata"] = _consolidated_v3_json(self.consolidated)
        doc["node_type"] = "group"
        doc.update(self.extra_fields)
        return doc

    def documents(self) -> dict[str, Any]:
        """Documents of the node; a consolidated v2 group also has ``.zmetadata``."""
        if self.zarr_format == 3:
            return {"zarr.json": self.to_json()}
        docs: dict[str, Any] = {".zgroup": {"zarr_format": 2}, ".zattrs": self.attributes}
        if self.consolidated is not None:
            docs[".zmetadata"] = self.zmetadata_json()
        return docs

    def encode_documents(self) -> dict[str, bytes]:
        return {name: json_dumps(doc) for name, doc in self.documents().items()}

    def zmetadata_json(self) -> dict[str, Any]:
        """The v2 ``.zmetadata`` document: this group's and every consolidated node's documents."""
        md: dict[str, Any] = {".zgroup": {"zarr_format": 2}, ".zattrs": self.attributes}
        cm = self.consolidated or ConsolidatedMetadata()
        for key in sorted(cm.metadata, key=_sort_key):
            node = cm.metadata[key]
            if node.zarr_format != 2:
                raise InvalidArgumentError(f"consolidated metadata of a v2 group holds a v3 node {key!r}")
            for name, doc in node.documents().items():
                if name != ".zmetadata":
                    md[f"{key}/{name}"] = doc
        return {"zarr_consolidated_format": 1, "metadata": md}

    @classmethod
    def from_json(cls, doc: Any, path: str = "") -> GroupMetadata:
        """Parse a v3 group ``zarr.json`` (strict, with inline consolidated metadata)."""
        where = _where(path, "zarr.json")
        try:
            if not isinstance(doc, dict):
                raise MetadataError(f"expected a JSON object, got {type(doc).__name__}")
            if doc.get("zarr_format") != 3 or isinstance(doc.get("zarr_format"), bool):
                raise MetadataError(f"zarr_format must be 3, got {doc.get('zarr_format')!r}")
            if doc.get("node_type") != "group":
                raise MetadataError(f"node_type must be 'group', got {doc.get('node_type')!r}")
            known = ("zarr_format", "node_type", "attributes", "consolidated_metadata")
            extra = {k: v for k, v in doc.items() if k not in known}
            refused = [k for k, v in extra.items() if not _is_ignorable(v)]
            if refused:
                raise MetadataError(f"unknown fields {refused} (not marked must_understand: false)")
            cm = doc.get("consolidated_metadata")
            consolidated = _parse_consolidated_v3(cm, path) if cm is not None else None
            return cls(3, _attributes(doc.get("attributes"), "attributes"), consolidated, extra, path)
        except ChunkrefError as e:
            if str(e).startswith(where):
                raise
            raise _located(e, where) from e

    @classmethod
    def from_v2(cls, zgroup: Any, attributes: Any = None, zmetadata: Any = None, path: str = "") -> GroupMetadata:
        """Parse a v2 group from ``.zgroup``, ``.zattrs`` and optionally ``.zmetadata``.

        Unknown ``.zgroup`` keys are ignored (zarr-python 3 writes ``consolidated_metadata``
        into sub-group entries of ``.zmetadata``).
        """
        where = _where(path, ".zgroup")
        if not isinstance(zgroup, dict) or zgroup.get("zarr_format") != 2:
            raise MetadataError(f"{where}: expected {{'zarr_format': 2}}, got {zgroup!r}")
        try:
            attrs = _attributes(attributes, "attributes")
        except MetadataError as e:
            raise _located(e, _where(path, ".zattrs")) from e
        consolidated = _parse_zmetadata(zmetadata, path) if zmetadata is not None else None
        return cls(2, attrs, consolidated, {}, path)

    def evolve(self, **changes: Any) -> GroupMetadata:
        return replace(self, **changes)


def _parse_zmetadata(doc: Any, path: str) -> ConsolidatedMetadata:
    where = _where(path, ".zmetadata")
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
        raise MetadataError(f"{where}: expected an object with a 'metadata' object")
    if doc.get("zarr_consolidated_format") != 1:
        raise UnsupportedFeatureError(
            f"{where}: zarr_consolidated_format must be 1, got {doc.get('zarr_consolidated_format')!r}"
        )
    by_node: dict[str, dict[str, Any]] = {}
    for key, value in doc["metadata"].items():
        if not isinstance(key, str):
            raise MetadataError(f"{where}: metadata key {key!r} is not a string")
        node, _, name = key.rpartition("/")
        if name not in (".zarray", ".zgroup", ".zattrs"):
            # Other files (e.g. ".zarr_metadata" of old writers) are not ours to interpret.
            continue
        if node.startswith("/") or node.endswith("/") or "//" in node:
            raise MetadataError(f"{where}: metadata key {key!r} is not a relative path")
        by_node.setdefault(node, {})[name] = value
    out: dict[str, Any] = {}
    for node, docs in by_node.items():
        if node == "":
            continue  # the group's own documents
        child = _join(path, node)
        try:
            if ".zarray" in docs:
                out[node] = ArrayMetadataV2.from_json(docs[".zarray"], docs.get(".zattrs"), child, validate_codecs=False)
            elif ".zgroup" in docs:
                out[node] = GroupMetadata.from_v2(docs[".zgroup"], docs.get(".zattrs"), None, child)
            else:
                raise MetadataError(f"{node}/.zattrs has no .zarray or .zgroup")
        except ChunkrefError as e:
            raise _located(e, where) from e
    return ConsolidatedMetadata(out)


NodeMetadata = ArrayMetadataV3 | ArrayMetadataV2 | GroupMetadata


def parse_node(documents: Mapping[str, Any], path: str = "", *, validate_codecs: bool = True) -> NodeMetadata:
    """Metadata of a node from its documents (parsed JSON keyed by name, as ``documents()``).

    ``zarr.json`` wins when present (as in zarr-python); else ``.zarray`` / ``.zgroup`` with
    ``.zattrs`` (and ``.zmetadata`` for groups).

    Raises
    ------
    MetadataError
        When the documents are malformed, or none of them is there.
    """
    if "zarr.json" in documents and documents["zarr.json"] is not None:
        doc = documents["zarr.json"]
        kind = doc.get("node_type") if isinstance(doc, dict) else None
        if kind == "array":
            return ArrayMetadataV3.from_json(doc, path, validate_codecs=validate_codecs)
        if kind == "group":
            return GroupMetadata.from_json(doc, path)
        raise MetadataError(f"{_where(path, 'zarr.json')}: node_type must be 'array' or 'group', got {kind!r}")
    attrs = documents.get(".zattrs")
    if documents.get(".zarray") is not None:
        return ArrayMetadataV2.from_json(documents[".zarray"], attrs, path, validate_codecs=validate_codecs)
    if documents.get(".zgroup") is not None:
        return GroupMetadata.from_v2(documents[".zgroup"], attrs, documents.get(".zmetadata"), path)
    raise MetadataError(f"{path or '/'}: no zarr.json, .zarray or .zgroup document")


# --- creation defaults ----------------------------------------------------------------------

_ZSTD_V3 = {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
_ZSTD_V2 = {"id": "zstd", "level": 0}
_INDEX_CODECS = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]


def _codec_list(value: Any, what: str, default: list[Any]) -> list[Any]:
    if isinstance(value, str) and value == "auto":
        return list(default)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _bytes_codec(dt: DataType, requested: np.dtype | None) -> dict[str, Any]:
    if dt.vlen == "string":
        return {"name": "vlen-utf8", "configuration": {}}
    if dt.vlen == "bytes":
        return {"name": "vlen-bytes", "configuration": {}}
    if not needs_endian(dt):
        return {"name": "bytes"}
    endian = (dtype_endian(requested) if requested is not None else None) or "little"
    return {"name": "bytes", "configuration": {"endian": endian}}


def _chunk_key_encoding_arg(value: Any, zarr_format: int) -> ChunkKeyEncoding:
    if value is None:
        return ChunkKeyEncoding("default") if zarr_format == 3 else ChunkKeyEncoding("v2", ".")
    if isinstance(value, ChunkKeyEncoding):
        return value
    if isinstance(value, str) and value in (".", "/"):
        return ChunkKeyEncoding("default" if zarr_format == 3 else "v2", value)
    if isinstance(value, Mapping) and "separator" in value and "configuration" not in value:
        # zarr-python's flat form {"name": "v2", "separator": "/"}.
        return ChunkKeyEncoding(value.get("name", "default"), value["separator"])
    return parse_chunk_key_encoding(value)


def make_array_metadata(
    shape: Any,
    dtype: Any,
    chunks: Any,
    fill_value: Any = DEFAULT_FILL,
    zarr_format: int = 3,
    compressors: Any = "auto",
    filters: Any = "auto",
    serializer: Any = "auto",
    dimension_names: Any = None,
    attributes: Mapping[str, Any] | None = None,
    chunk_key_encoding: Any = None,
    order: str = "C",
    shards: Any = None,
    path: str = "",
) -> ArrayMetadataV3 | ArrayMetadataV2:
    """Metadata of a new array, with zarr-python 3.1.6's defaults.

    Parameters
    ----------
    shape, chunks
        ``chunks`` as for :func:`~chunkref.zarr.grid.grid_from_chunks`: an int, a tuple, or
        per-axis edge tuples (an irregular one gives a v3 rectilinear grid; refused for v2).
        With ``shards`` it is the inner chunk shape.
    dtype
        Anything :func:`~chunkref.zarr.dtypes.as_data_type` accepts; ``str`` for vlen strings,
        ``bytes`` for vlen bytes. A plain object dtype means vlen strings (the xarray/netCDF4
        convention). A big-endian numeric dtype gives a v3 ``bytes`` codec with ``endian:
        "big"`` (v3 metadata itself has no byte order); in v2 the typestr keeps it.
    fill_value
        :data:`DEFAULT_FILL` (the default): the data type's default (0, NaT, ``""``...).
        ``None``: v2 ``null``; v3 the default (v3 has no null).
    compressors
        ``"auto"``: zstd level 0 (v3 ``checksum: false``; v2 ``{"id": "zstd", "level": 0}``).
        None or ``()``: none. v3: codec JSON objects / names / objects with ``to_json()``;
        v2: at most one numcodecs config or codec.
    filters
        ``"auto"``: none (v2 vlen arrays get their object codec). v3 array->array codecs;
        v2 numcodecs configs.
    serializer
        ``"auto"``: ``bytes`` (endian from the dtype), ``vlen-utf8`` or ``vlen-bytes``. v3 only.
    dimension_names
        v3 field; for v2 written as the xarray ``_ARRAY_DIMENSIONS`` attribute.
    chunk_key_encoding
        None (v3 ``default`` with ``/``; v2 ``.``), a separator, a :class:`ChunkKeyEncoding`
        or its JSON (also zarr-python's ``{"name", "separator"}`` form).
    order
        v2: the chunk layout. v3: memory order is a runtime setting and is not persisted.
    shards
        v3 shard shape: the outer grid, with a ``sharding_indexed`` codec holding
        ``[*filters, serializer, *compressors]`` for inner chunks of ``chunks``, and the index
        codecs ``bytes`` (little) + ``crc32c`` at the end.

    Raises
    ------
    InvalidArgumentError
        For combinations a format cannot hold (rectilinear or shards in v2, shards that the
        inner chunks do not divide...).
    """
    if zarr_format not in (2, 3):
        raise InvalidArgumentError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    shape_t = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    requested = None
    if isinstance(dtype, np.dtype) and dtype.kind == "O" and not dtype.metadata:
        dt = DataType(np.dtype("O"), "string")
    else:
        dt = as_data_type(dtype)
        requested = dt.dtype if dt.vlen is None else None
    attrs = dict(attributes or {})
    if zarr_format == 2:
        return _make_v2(shape_t, dt, chunks, fill_value, compressors, filters, serializer, dimension_names,
                        attrs, chunk_key_encoding, order, shards, path)
    dt3 = v3_dtype(dt)
    if fill_value is DEFAULT_FILL or fill_value is None:
        fill = default_fill_value(dt3)
    else:
        fill = cast_fill_value(fill_value, dt3)
    if order not in ("C", "F"):
        raise InvalidArgumentError(f"order must be 'C' or 'F', got {order!r}")
    serializer_js = _bytes_codec(dt, requested) if (isinstance(serializer, str) and serializer == "auto") else serializer
    filt = [_ext_json(c, "filters") for c in _codec_list(filters, "filters", [])]
    comp = [_ext_json(c, "compressors") for c in _codec_list(compressors, "compressors", [_ZSTD_V3])]
    inner = [*filt, _ext_json(serializer_js, "serializer"), *comp]
    if shards is None:
        grid = grid_from_chunks(shape_t, chunks)
        codecs = inner
    else:
        # Shards may be regular (a shape) or rectilinear (per-axis edge lengths); the inner
        # chunks are always regular and must divide every shard edge.
        grid = grid_from_chunks(shape_t, shards)
        per_axis_edges = [tuple(int(e) for e in np.unique(edges)) for edges in grid.edge_lengths]
        if isinstance(chunks, (int, np.integer)):
            chunks = (int(chunks),) * len(shape_t)
        if not isinstance(chunks, (tuple, list)) or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in chunks
        ):
            raise InvalidArgumentError(f"inner chunks of a sharded array must be a regular shape, got {chunks!r}")
        inner_shape = tuple(int(c) for c in chunks)
        if len(inner_shape) != len(shape_t) or any(c < 1 for c in inner_shape):
            raise InvalidArgumentError(f"chunk shape {inner_shape} must have the array's rank and be positive")
        bad = [(a, e) for a, edges in enumerate(per_axis_edges) for e in edges if e % inner_shape[a]]
        if bad:
            a, e = bad[0]
            raise InvalidArgumentError(
                f"shard edge {e} along axis {a} is not divisible by the chunk length {inner_shape[a]}"
            )
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(inner_shape),
                    "codecs": inner,
                    "index_codecs": [dict(c) for c in _INDEX_CODECS],
                    "index_location": "end",
                },
            }
        ]
    try:
        return ArrayMetadataV3(
            data_type=dt3,
            chunk_grid=grid,
            chunk_key_encoding=_chunk_key_encoding_arg(chunk_key_encoding, 3),
            fill_value=fill,
            codecs=tuple(codecs),
            attributes=attrs,
            dimension_names=tuple(dimension_names) if dimension_names is not None else None,
            path=path,
        )
    except MetadataError as e:
        raise InvalidArgumentError(str(e)) from e


def _make_v2(
    shape: tuple[int, ...],
    dt: DataType,
    chunks: Any,
    fill_value: Any,
    compressors: Any,
    filters: Any,
    serializer: Any,
    dimension_names: Any,
    attrs: dict[str, Any],
    chunk_key_encoding: Any,
    order: str,
    shards: Any,
    path: str,
) -> ArrayMetadataV2:
    if shards is not None:
        raise InvalidArgumentError("sharding needs zarr_format=3")
    if not (isinstance(serializer, str) and serializer == "auto"):
        raise InvalidArgumentError("serializer is a v3 setting; v2 arrays take filters and one compressor")
    grid = grid_from_chunks(shape, chunks)
    if not isinstance(grid, RegularGrid):
        raise InvalidArgumentError(
            f"chunks {chunks!r} are irregular: variable chunk sizes (rectilinear grids) need zarr_format=3"
        )
    comp = [_v2_codec_json(c, "compressor") for c in _codec_list(compressors, "compressors", [_ZSTD_V2])]
    if len(comp) > 1:
        raise InvalidArgumentError(f"v2 arrays take at most one compressor, got {len(comp)}")
    compressor = comp[0] if comp else None
    if compressor is not None and compressor.get("id") == "zstd" and compressor.get("checksum") is False:
        # zarr-python drops a false checksum from v2 zstd (zarr-python #2647); so do we.
        compressor = {k: v for k, v in compressor.items() if k != "checksum"}
    filt = [_v2_codec_json(c, "filters") for c in _codec_list(filters, "filters", [])]
    if dt.vlen is not None:
        want = {"string": "vlen-utf8", "bytes": "vlen-bytes"}.get(dt.vlen)
        has = [f["id"] for f in filt if f["id"] in OBJECT_CODEC_IDS]
        if not has:
            if want is None:
                raise InvalidArgumentError("a generic object array needs an object codec in filters")
            filt.insert(0, {"id": want})
    if fill_value is DEFAULT_FILL:
        fill = default_fill_value(dt)
    else:
        fill = cast_fill_value(fill_value, dt)
    cke = _chunk_key_encoding_arg(chunk_key_encoding, 2)
    if cke.name != "v2":
        raise InvalidArgumentError(f"v2 arrays use v2 chunk keys; got the {cke.name!r} encoding")
    if dimension_names is not None:
        names = list(dimension_names)
        if len(names) != len(shape) or not all(isinstance(n, str) for n in names):
            raise InvalidArgumentError(f"dimension_names {names!r} must be {len(shape)} strings for a v2 array")
        attrs = {**attrs, "_ARRAY_DIMENSIONS": names}
    try:
        return ArrayMetadataV2(
            data_type=dt,
            chunk_grid=grid,
            fill_value=fill,
            order=order,
            compressor=compressor,
            filters=tuple(filt) or None,
            dimension_separator=cke.separator,
            attributes=attrs,
            path=path,
        )
    except MetadataError as e:
        raise InvalidArgumentError(str(e)) from e
