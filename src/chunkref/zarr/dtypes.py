"""Zarr data types: numpy dtype <-> v2 / v3 JSON, and fill values in every encoding.

A :class:`DataType` is a numpy dtype plus what numpy cannot tell apart:

* ``vlen``: the element kind of an object (``"O"``) array. ``"string"`` (vlen UTF-8) and
  ``"bytes"`` (vlen bytes) exist in both formats; ``"object"`` is any other v2 object codec
  (``json2``, ``msgpack2``, ``pickle``, ``vlen-array``) and has no v3 form.
  **Variable-length strings are numpy object arrays holding ``str``** (not numpy
  ``StringDType``): that is what xarray, netCDF4 and h5py hand around. ``StringDType`` and the
  h5py/xarray ``dtype("O", metadata={"vlen": str})`` spellings are accepted on input.
* ``v3_name``: the spelling read from a v3 document when several exist for one numpy dtype
  (``"bytes"`` / ``"variable_length_bytes"``, ``"structured"`` / ``"struct"``, ``"r16"`` /
  ``raw_bytes``, ``numpy.datetime64`` / ``datetime64``), so a rewritten document keeps it.

v3 data types carry no byte order: a parsed v3 :class:`DataType` has the native byte order and
the ``bytes`` codec's ``endian`` says how chunks are stored (:func:`dtype_endian` tells which
``endian`` a numpy dtype asks for). v2 typestrs keep their byte order.

What we write, and why:

* vlen bytes in v3: ``"bytes"`` (the zarr-extensions registered name; zarr-python 3.1.6
  writes ``"variable_length_bytes"`` but reads both).
* structured in v3: the ``structured`` form with a base64 fill (what zarr-python 3.1.6 reads;
  the 3.2+ ``struct`` form is read too, and kept when read). Fields are packed, no padding.
* ``S``/``V``/structured fill values as base64 of the **full item size** (tensorstore rejects
  zarr-python's shorter NUL-stripped form; shorter values are accepted and padded on read).
* datetime/timedelta fills as int64 (NaT = ``-9223372036854775808``), as zarr-python does.
* floats: ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; in v3 a NaN whose bits differ from the
  canonical quiet NaN is written as a hex bit pattern so it round-trips exactly.

Every parse error is a :class:`~chunkref.errors.MetadataError` whose message names the field.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref.errors import InvalidArgumentError, MetadataError, UnsupportedFeatureError

# --- tables ---------------------------------------------------------------------------------

#: v3 core data type names and their (native byte order) numpy dtypes.
V3_CORE_DTYPES: dict[str, np.dtype] = {
    "bool": np.dtype("bool"),
    "int8": np.dtype("int8"),
    "int16": np.dtype("int16"),
    "int32": np.dtype("int32"),
    "int64": np.dtype("int64"),
    "uint8": np.dtype("uint8"),
    "uint16": np.dtype("uint16"),
    "uint32": np.dtype("uint32"),
    "uint64": np.dtype("uint64"),
    "float16": np.dtype("float16"),
    "float32": np.dtype("float32"),
    "float64": np.dtype("float64"),
    "complex64": np.dtype("complex64"),
    "complex128": np.dtype("complex128"),
}
_CORE_NAME_BY_CHAR = {dt.char: name for name, dt in V3_CORE_DTYPES.items()}
_CORE_NAME_BY_KEY = {(dt.kind, dt.itemsize): name for name, dt in V3_CORE_DTYPES.items()}

#: Item sizes each numeric kind may have (v2 typestrs); others are non-portable (longdouble).
_V2_SIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8), "c": (8, 16), "m": (8,), "M": (8,)}
_V2_TYPESTR = re.compile(r"^([<>|])([biufcmMSUVO])(\d*)(?:\[(\d*)([A-Za-zμ]+)\])?$")
_TIME_UNITS = ("Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as", "generic")
_V3_TIME_NAMES = {
    "numpy.datetime64": "M",
    "datetime64": "M",
    "numpy.timedelta64": "m",
    "timedelta64": "m",
}
_VLEN_NAMES = {"string": "string", "bytes": "bytes", "variable_length_bytes": "bytes"}
#: v2 object codec ids and the vlen kind they imply.
OBJECT_CODEC_VLEN = {"vlen-utf8": "string", "vlen-bytes": "bytes"}
OBJECT_CODEC_IDS = ("vlen-utf8", "vlen-bytes", "vlen-array", "json2", "msgpack2", "pickle")
_VLEN_KINDS = ("string", "bytes", "object")
_INT64_MIN = -(2**63)


# --- DataType -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataType:
    """A Zarr data type: numpy ``dtype`` plus the vlen element kind and the v3 spelling.

    Parameters
    ----------
    dtype
        The in-memory numpy dtype (object ``"O"`` for variable-length types).
    vlen
        For object dtypes: ``"string"``, ``"bytes"`` or ``"object"`` (other v2 object codecs).
        Must be None for every other dtype.
    v3_name
        The v3 ``data_type`` name read from a document, when numpy cannot distinguish it from
        another spelling; None writes the default spelling.
    """

    dtype: np.dtype
    vlen: str | None = None
    v3_name: str | None = None

    def __post_init__(self) -> None:
        dt = np.dtype(self.dtype)
        object.__setattr__(self, "dtype", dt)
        if dt.kind == "O":
            vlen = self.vlen or "object"
            if vlen not in _VLEN_KINDS:
                raise InvalidArgumentError(f"vlen must be one of {_VLEN_KINDS}, got {self.vlen!r}")
            object.__setattr__(self, "vlen", vlen)
        elif self.vlen is not None:
            raise InvalidArgumentError(f"vlen={self.vlen!r} only applies to object dtypes, not {dt}")

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def is_vlen(self) -> bool:
        return self.vlen is not None

    def __str__(self) -> str:
        return self.vlen if self.vlen in ("string", "bytes") else str(self.dtype)


def _object_vlen_from_metadata(dt: np.dtype) -> str | None:
    """The vlen kind h5py / xarray attach to object dtypes (``metadata={"vlen": str}``)."""
    meta = dt.metadata or {}
    elem = meta.get("vlen", meta.get("element_type"))
    if elem is str:
        return "string"
    if elem is bytes:
        return "bytes"
    return None


def as_data_type(spec: Any) -> DataType:
    """Resolve a user dtype specification to a :class:`DataType`.

    Accepts a :class:`DataType`, anything :func:`numpy.dtype` accepts, ``str`` / ``"str"`` /
    ``"string"`` and numpy ``StringDType`` (vlen UTF-8 strings), ``bytes`` / ``"bytes"`` (vlen
    bytes), and object dtypes tagged by h5py or xarray (``metadata={"vlen": str}``). A plain
    object dtype is ambiguous and refused.
    """
    if isinstance(spec, DataType):
        return spec
    if spec is str or (isinstance(spec, str) and spec in ("str", "string")):
        return DataType(np.dtype("O"), "string")
    if spec is bytes or (isinstance(spec, str) and spec == "bytes"):
        return DataType(np.dtype("O"), "bytes")
    if isinstance(spec, np.dtypes.StringDType):
        return DataType(np.dtype("O"), "string")
    try:
        dt = np.dtype(spec)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"not a data type: {spec!r} ({e})") from e
    if isinstance(dt, np.dtypes.StringDType):
        return DataType(np.dtype("O"), "string")
    if dt.kind == "O":
        vlen = _object_vlen_from_metadata(dt)
        if vlen is None:
            raise InvalidArgumentError(
                "an object dtype is ambiguous: pass dtype=str for variable-length strings or "
                "dtype=bytes for variable-length bytes"
            )
        return DataType(np.dtype("O"), vlen)
    if dt.kind in "SUV" and dt.itemsize == 0:
        raise InvalidArgumentError(f"dtype {dt} needs a length (e.g. 'S8', 'U4', 'V2')")
    _check_numpy_dtype(dt, "dtype")
    return DataType(dt)


def _coerce(dtype: Any) -> DataType:
    """A DataType from a DataType or numpy dtype; a plain object dtype means generic objects."""
    if isinstance(dtype, DataType):
        return dtype
    try:
        return as_data_type(dtype)
    except InvalidArgumentError:
        dt = np.dtype(dtype)
        if dt.kind == "O":
            return DataType(dt, "object")
        raise


def _check_numpy_dtype(dt: np.dtype, field: str) -> None:
    """Refuse numpy dtypes no Zarr format can describe."""
    if dt.fields is not None:
        _check_packed(dt, field)
        for name, (sub, _off, *_rest) in dt.fields.items():
            base = sub.subdtype[0] if sub.subdtype else sub
            if base.kind == "O":
                raise InvalidArgumentError(f"{field}: structured field {name!r} has an object dtype")
            _check_numpy_dtype(base, f"{field}.{name}")
        return
    if dt.subdtype is not None:
        raise InvalidArgumentError(f"{field}: a subarray dtype {dt} cannot be an array's dtype")
    if dt.kind in _V2_SIZES and dt.itemsize not in _V2_SIZES[dt.kind]:
        raise UnsupportedFeatureError(f"{field}: dtype {dt} is not portable (no Zarr equivalent)")
    if dt.kind in "mM":
        unit, _count = np.datetime_data(dt)
        if unit == "generic":
            raise InvalidArgumentError(f"{field}: dtype {dt} needs a time unit (e.g. 'M8[ns]')")


def _check_packed(dt: np.dtype, field: str) -> None:
    offset = 0
    for name in dt.names or ():
        sub, off = dt.fields[name][:2]
        if off != offset:
            raise InvalidArgumentError(
                f"{field}: structured dtype {dt} is not packed (field {name!r} at offset {off}, "
                f"expected {offset}); Zarr structured types have no padding"
            )
        offset += sub.itemsize
    if offset != dt.itemsize:
        raise InvalidArgumentError(f"{field}: structured dtype {dt} has trailing padding")


# --- endianness -----------------------------------------------------------------------------


def _leaf_byteorders(dt: np.dtype) -> set[str]:
    if dt.fields is not None:
        out: set[str] = set()
        for name in dt.names or ():
            out |= _leaf_byteorders(dt.fields[name][0])
        return out
    if dt.subdtype is not None:
        return _leaf_byteorders(dt.subdtype[0])
    if dt.kind in "SVbO" or dt.itemsize <= 1:
        return set()
    bo = dt.byteorder
    if bo == "|":
        return set()
    if bo == "=":
        bo = "<" if np.little_endian else ">"
    return {bo}


def dtype_endian(dtype: Any) -> str | None:
    """The ``bytes`` codec ``endian`` a numpy dtype asks for: ``"little"``, ``"big"`` or None.

    None means byte order does not matter (1-byte types, ``S``, ``V``, bool, vlen). Structured
    dtypes take the common order of their fields; mixed orders raise, since one ``bytes``
    codec cannot express them.
    """
    dt = dtype.dtype if isinstance(dtype, DataType) else np.dtype(dtype)
    orders = _leaf_byteorders(dt)
    if not orders:
        return None
    if len(orders) > 1:
        raise InvalidArgumentError(f"dtype {dt} mixes byte orders; one bytes codec cannot store it")
    return "little" if orders.pop() == "<" else "big"


def native_dtype(dtype: Any) -> np.dtype:
    """``dtype`` with native byte order everywhere (recursively for structured dtypes)."""
    return np.dtype(dtype).newbyteorder("=")


def needs_endian(dtype: Any) -> bool:
    """Whether a v3 ``bytes`` codec needs an ``endian`` for this data type (multi-byte items)."""
    dt = dtype.dtype if isinstance(dtype, DataType) else np.dtype(dtype)
    if dt.kind == "O":
        return False
    return bool(_leaf_byteorders(dt.newbyteorder("<")))


# --- v2 dtype JSON --------------------------------------------------------------------------


def _v2_typestr_to_dtype(s: str, field: str) -> np.dtype:
    m = _V2_TYPESTR.match(s)
    if not m:
        raise MetadataError(f"{field}: {s!r} is not a v2 typestr (byte order, kind, size, e.g. '<f8')")
    order, kind, size_s, scale_s, unit = m.groups()
    if kind == "O":
        if size_s not in ("", "8") or order != "|":
            raise MetadataError(f"{field}: the object typestr must be '|O', got {s!r}")
        return np.dtype("O")
    if not size_s:
        raise MetadataError(f"{field}: typestr {s!r} has no size")
    size = int(size_s)
    if kind in "mM":
        if unit is None:
            raise MetadataError(f"{field}: {s!r} needs a time unit (e.g. '<M8[ns]')")
        unit = "us" if unit == "μs" else unit
        if unit not in _TIME_UNITS or unit == "generic":
            raise MetadataError(f"{field}: {s!r} has an unknown time unit {unit!r}")
        if scale_s is not None and scale_s != "" and int(scale_s) < 1:
            raise MetadataError(f"{field}: {s!r} has a non-positive time scale")
    elif unit is not None:
        raise MetadataError(f"{field}: {s!r}: only M and m typestrs take a unit")
    if kind in _V2_SIZES and size not in _V2_SIZES[kind]:
        raise UnsupportedFeatureError(f"{field}: typestr {s!r} has an unsupported size")
    if kind in "SUV" and size == 0:
        raise MetadataError(f"{field}: typestr {s!r} has length 0")
    # Byte order is mandatory where it matters; '|' is only for order-free types (guessing
    # native order for a multi-byte type could silently swap every value).
    order_free = kind in "bSV" or (kind in "iu" and size == 1)
    if order == "|" and not order_free:
        raise MetadataError(f"{field}: typestr {s!r} needs an explicit byte order ('<' or '>')")
    try:
        return np.dtype(s)
    except (TypeError, ValueError) as e:
        raise MetadataError(f"{field}: typestr {s!r} is not valid ({e})") from e


def _v2_json_to_numpy(js: Any, field: str) -> np.dtype:
    if isinstance(js, str):
        return _v2_typestr_to_dtype(js, field)
    if isinstance(js, list):
        if not js:
            raise MetadataError(f"{field}: a structured dtype needs at least one field")
        items = []
        seen = set()
        for i, item in enumerate(js):
            where = f"{field}[{i}]"
            if not isinstance(item, list) or len(item) not in (2, 3) or not isinstance(item[0], str):
                raise MetadataError(f"{where}: expected [name, dtype] or [name, dtype, shape], got {item!r}")
            name = item[0]
            if not name or name in seen:
                raise MetadataError(f"{where}: field name {name!r} is empty or repeated")
            seen.add(name)
            sub = _v2_json_to_numpy(item[1], f"{where}[1]")
            if sub.kind == "O":
                raise MetadataError(f"{where}: structured fields cannot be objects")
            if len(item) == 3:
                shape = item[2]
                if not isinstance(shape, list) or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
                ):
                    raise MetadataError(f"{where}[2]: field shape must be a list of ints, got {shape!r}")
                items.append((name, sub, tuple(shape)))
            else:
                items.append((name, sub))
        try:
            return np.dtype(items)
        except (TypeError, ValueError) as e:
            raise MetadataError(f"{field}: invalid structured dtype ({e})") from e
    raise MetadataError(f"{field}: expected a typestr or a list of fields, got {js!r}")


def parse_dtype_v2(js: Any, *, object_codec_id: str | None = None, field: str = "dtype") -> DataType:
    """Parse a v2 ``.zarray`` ``dtype`` value.

    Parameters
    ----------
    js
        A typestr (``"<f8"``, ``"|S4"``, ``"<M8[ns]"``, ``"|O"``) or a structured field list.
    object_codec_id
        For ``"|O"``: the id of the object codec found in filters/compressor (``vlen-utf8``
        gives strings, ``vlen-bytes`` bytes, anything else generic objects).
    """
    dt = _v2_json_to_numpy(js, field)
    if dt.kind == "O":
        return DataType(dt, OBJECT_CODEC_VLEN.get(object_codec_id or "", "object"))
    return DataType(dt)


def _numpy_to_v2_json(dt: np.dtype, field: str) -> str | list:
    if dt.fields is not None:
        _check_packed(dt, field)
        out: list = []
        for name in dt.names or ():
            sub = dt.fields[name][0]
            if sub.subdtype is not None:
                base, shape = sub.subdtype
                out.append([name, _numpy_to_v2_json(base, f"{field}.{name}"), list(shape)])
            else:
                out.append([name, _numpy_to_v2_json(sub, f"{field}.{name}")])
        return out
    if dt.kind == "O":
        return "|O"
    _check_numpy_dtype(dt, field)
    return dt.str


def dtype_to_v2_json(dtype: Any) -> str | list:
    """The v2 ``dtype`` value of a data type (typestr with byte order, or a field list)."""
    return _numpy_to_v2_json(_coerce(dtype).dtype, "dtype")


# --- v3 data_type JSON ----------------------------------------------------------------------


def _ext_parts(js: Any, field: str) -> tuple[str, dict[str, Any] | None]:
    """(name, configuration) of an extension object or a short-hand name."""
    if isinstance(js, str):
        return js, None
    if not isinstance(js, dict) or not isinstance(js.get("name"), str):
        raise MetadataError(f"{field}: expected a data type name or {{'name', 'configuration'}}, got {js!r}")
    extra = set(js) - {"name", "configuration", "must_understand"}
    if extra:
        raise MetadataError(f"{field}: unknown fields {sorted(extra)} in data type {js['name']!r}")
    if js.get("must_understand", True) is not True:
        raise MetadataError(f"{field}: must_understand may not be false for a data type")
    conf = js.get("configuration")
    if conf is not None and not isinstance(conf, dict):
        raise MetadataError(f"{field}.configuration must be an object, got {conf!r}")
    return js["name"], conf


def _conf_keys(conf: dict[str, Any] | None, required: tuple[str, ...], name: str, field: str) -> dict[str, Any]:
    if conf is None:
        raise MetadataError(f"{field}: data type {name!r} needs a configuration with {list(required)}")
    missing = [k for k in required if k not in conf]
    extra = set(conf) - set(required)
    if missing or extra:
        raise MetadataError(
            f"{field}.configuration of {name!r} must have exactly {list(required)} "
            f"(missing {missing}, unknown {sorted(extra)})"
        )
    return conf


def _positive_int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise MetadataError(f"{what} must be a positive integer, got {v!r}")
    return v


def _parse_v3_numpy(js: Any, field: str) -> DataType:
    name, conf = _ext_parts(js, field)
    if name in V3_CORE_DTYPES:
        if conf:
            raise MetadataError(f"{field}: core data type {name!r} takes no configuration")
        return DataType(V3_CORE_DTYPES[name])
    m = re.fullmatch(r"r(\d+)", name)
    if m:
        if conf:
            raise MetadataError(f"{field}: raw data type {name!r} takes no configuration")
        bits = int(m.group(1))
        if bits < 8 or bits % 8:
            raise MetadataError(f"{field}: raw data type {name!r} needs a positive multiple of 8 bits")
        return DataType(np.dtype(f"V{bits // 8}"), v3_name=name)
    if name in _VLEN_NAMES:
        if conf:
            raise MetadataError(f"{field}: data type {name!r} takes no configuration")
        return DataType(np.dtype("O"), _VLEN_NAMES[name], v3_name=name if name != "string" else None)
    if name in ("fixed_length_utf32", "null_terminated_bytes", "raw_bytes"):
        c = _conf_keys(conf, ("length_bytes",), name, field)
        n = _positive_int(c["length_bytes"], f"{field}.configuration.length_bytes")
        if name == "fixed_length_utf32":
            if n % 4:
                raise MetadataError(f"{field}.configuration.length_bytes of {name!r} must be a multiple of 4, got {n}")
            return DataType(np.dtype(f"U{n // 4}"))
        return DataType(np.dtype(f"{'S' if name == 'null_terminated_bytes' else 'V'}{n}"))
    if name in _V3_TIME_NAMES:
        c = _conf_keys(conf, ("unit", "scale_factor"), name, field)
        unit = c["unit"]
        unit = "us" if unit == "μs" else unit
        if unit not in _TIME_UNITS:
            raise MetadataError(f"{field}.configuration.unit: unknown time unit {c['unit']!r}")
        scale = _positive_int(c["scale_factor"], f"{field}.configuration.scale_factor")
        if scale > 2**31 - 1:
            raise MetadataError(f"{field}.configuration.scale_factor {scale} exceeds 2**31-1")
        kind = _V3_TIME_NAMES[name]
        unit_s = "" if unit == "generic" else f"[{scale if scale != 1 else ''}{unit}]"
        v3n = None if name.startswith("numpy.") else name
        return DataType(np.dtype(f"{kind}8{unit_s}"), v3_name=v3n)
    if name in ("structured", "struct"):
        c = _conf_keys(conf, ("fields",), name, field)
        fields = c["fields"]
        if not isinstance(fields, list) or not fields:
            raise MetadataError(f"{field}.configuration.fields must be a non-empty list, got {fields!r}")
        items = []
        seen: set[str] = set()
        for i, f in enumerate(fields):
            where = f"{field}.configuration.fields[{i}]"
            # The struct form uses objects; structured (and struct's legacy reading) uses pairs.
            if isinstance(f, dict):
                if set(f) != {"name", "data_type"}:
                    raise MetadataError(f"{where}: expected {{'name', 'data_type'}}, got {sorted(f)}")
                fname, ftype = f["name"], f["data_type"]
            elif isinstance(f, list) and len(f) == 2:
                fname, ftype = f
            else:
                raise MetadataError(f"{where}: expected [name, data_type] or {{name, data_type}}, got {f!r}")
            if not isinstance(fname, str) or not fname or fname in seen:
                raise MetadataError(f"{where}: field name {fname!r} is not a unique non-empty string")
            seen.add(fname)
            sub = _parse_v3_numpy(ftype, f"{where}.data_type")
            if sub.vlen is not None:
                raise MetadataError(f"{where}: variable-length data types cannot be struct fields")
            items.append((fname, sub.dtype))
        return DataType(np.dtype(items), v3_name="struct" if name == "struct" else None)
    raise UnsupportedFeatureError(f"{field}: unsupported data type {name!r}")


def parse_data_type_v3(js: Any, *, field: str = "data_type") -> DataType:
    """Parse a v3 ``data_type`` value (core names, ``r<bits>``, and the extension types)."""
    return _parse_v3_numpy(js, field)


def _numpy_to_v3_json(dt: np.dtype, v3_name: str | None, field: str) -> str | dict[str, Any]:
    if dt.fields is not None:
        _check_packed(dt, field)
        struct = v3_name == "struct"
        fields: list = []
        for name in dt.names or ():
            sub = dt.fields[name][0]
            if sub.subdtype is not None:
                raise UnsupportedFeatureError(
                    f"{field}: structured field {name!r} has a subarray shape, which Zarr v3 cannot describe"
                )
            sub_js = _numpy_to_v3_json(sub, v3_name if sub.fields is not None else None, f"{field}.{name}")
            fields.append({"name": name, "data_type": sub_js} if struct else [name, sub_js])
        return {"name": "struct" if struct else "structured", "configuration": {"fields": fields}}
    if dt.subdtype is not None:
        raise InvalidArgumentError(f"{field}: a subarray dtype {dt} cannot be an array's dtype")
    key = (dt.kind, dt.itemsize)
    if dt.kind in "biufc":
        if key not in _CORE_NAME_BY_KEY:
            raise UnsupportedFeatureError(f"{field}: dtype {dt} has no Zarr v3 equivalent")
        return _CORE_NAME_BY_KEY[key]
    if dt.kind == "V":
        if v3_name and v3_name.startswith("r"):
            return f"r{dt.itemsize * 8}"
        return {"name": "raw_bytes", "configuration": {"length_bytes": dt.itemsize}}
    if dt.kind == "S":
        return {"name": "null_terminated_bytes", "configuration": {"length_bytes": dt.itemsize}}
    if dt.kind == "U":
        return {"name": "fixed_length_utf32", "configuration": {"length_bytes": dt.itemsize}}
    if dt.kind in "mM":
        unit, count = np.datetime_data(dt)
        if unit == "generic":
            raise InvalidArgumentError(f"{field}: dtype {dt} needs a time unit")
        default = "numpy.datetime64" if dt.kind == "M" else "numpy.timedelta64"
        name = v3_name if v3_name in _V3_TIME_NAMES else default
        return {"name": name, "configuration": {"unit": unit, "scale_factor": int(count)}}
    raise UnsupportedFeatureError(f"{field}: dtype {dt} has no Zarr v3 equivalent")


def data_type_to_v3_json(dtype: Any) -> str | dict[str, Any]:
    """The v3 ``data_type`` value of a data type (byte order is the ``bytes`` codec's job)."""
    dt = as_data_type(dtype)
    if dt.vlen == "string":
        return "string"
    if dt.vlen == "bytes":
        return dt.v3_name or "bytes"
    if dt.vlen == "object":
        raise UnsupportedFeatureError(
            "generic object arrays (v2 json2/msgpack2/pickle/vlen-array) have no Zarr v3 data type"
        )
    return _numpy_to_v3_json(dt.dtype, dt.v3_name, "data_type")


def v3_dtype(dtype: Any) -> DataType:
    """The :class:`DataType` a v3 array of this data type has in memory (native byte order)."""
    dt = _coerce(dtype)
    if dt.vlen is not None:
        return dt
    return DataType(native_dtype(dt.dtype), v3_name=dt.v3_name)


# --- fill values ----------------------------------------------------------------------------

_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_UINT_FOR_SIZE = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_CANONICAL_NAN_BITS = {2: 0x7E00, 4: 0x7FC00000, 8: 0x7FF8000000000000}


def _bad(field: str, js: Any, dt: Any, why: str) -> MetadataError:
    return MetadataError(f"{field}: {js!r} is not a valid fill value for {dt} ({why})")


def _parse_float(js: Any, dt: np.dtype, field: str) -> np.floating:
    ftype = dt.type
    if isinstance(js, bool):
        raise _bad(field, js, dt, "a boolean is not a number")
    if isinstance(js, (int, float)):
        with np.errstate(over="ignore"):
            val = ftype(js)
        if math.isinf(float(val)) and not math.isinf(float(js)):
            raise _bad(field, js, dt, "out of range")
        return val
    if isinstance(js, str):
        if js in _SPECIAL_FLOATS:
            return ftype(_SPECIAL_FLOATS[js])
        if js.startswith("0x"):
            width = 2 * dt.itemsize
            digits = js[2:]
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise _bad(field, js, dt, f"a hex bit pattern needs exactly {width} hex digits")
            bits = np.array(int(digits, 16), dtype=_UINT_FOR_SIZE[dt.itemsize])
            return bits.view(np.dtype(ftype))[()]
    raise _bad(field, js, dt, "expected a number, 'NaN', 'Infinity', '-Infinity' or a hex bit pattern")


def _encode_float(v: Any, dt: np.dtype, zarr_format: int) -> float | str:
    ftype = np.dtype(dt.type)
    val = ftype.type(v)
    f = float(val)
    if math.isnan(f):
        bits = int(np.array(val, dtype=ftype).view(_UINT_FOR_SIZE[ftype.itemsize])[()])
        if zarr_format == 3 and bits != _CANONICAL_NAN_BITS[ftype.itemsize]:
            # Keep sign and payload bits: only the canonical quiet NaN may be written "NaN".
            return "0x" + format(bits, f"0{2 * ftype.itemsize}x")
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    return f


def _parse_int(js: Any, dt: np.dtype, field: str) -> np.integer:
    if isinstance(js, bool):
        raise _bad(field, js, dt, "a boolean is not an integer")
    if isinstance(js, float):
        if not js.is_integer():
            raise _bad(field, js, dt, "not an integer")
        js = int(js)
    if not isinstance(js, int):
        raise _bad(field, js, dt, "expected an integer")
    info = np.iinfo(dt)
    if not (info.min <= js <= info.max):
        raise _bad(field, js, dt, f"out of range [{info.min}, {info.max}]")
    return dt.type(js)


def _b64decode(js: Any, field: str, dt: Any) -> bytes:
    if not isinstance(js, str):
        raise _bad(field, js, dt, "expected a base64 string")
    try:
        return base64.b64decode(js.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise _bad(field, js, dt, f"invalid base64: {e}") from e


def _byte_values(js: Any, field: str, dt: Any) -> bytes:
    """Bytes from base64 or from a list of byte values 0..255 (v3 raw form)."""
    if isinstance(js, list):
        if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in js):
            raise _bad(field, js, dt, "byte values must be ints in 0..255")
        return bytes(js)
    return _b64decode(js, field, dt)


def _fixed_bytes(raw: bytes, n: int, field: str, js: Any, dt: Any) -> bytes:
    if len(raw) > n:
        raise _bad(field, js, dt, f"{len(raw)} bytes, more than the item size {n}")
    return raw + b"\x00" * (n - len(raw))


def _parse_fixed(js: Any, dt: np.dtype, zarr_format: int, v3_name: str | None, field: str) -> Any:
    """Fill values of S, U, V, M, m and structured dtypes."""
    kind = dt.kind
    if kind == "U":
        if not isinstance(js, str):
            raise _bad(field, js, dt, "expected a string")
        if len(js) > dt.itemsize // 4:
            raise _bad(field, js, dt, f"longer than {dt.itemsize // 4} characters")
        return np.str_(js)
    if kind in "mM":
        if js == "NaT":
            return np.array(_INT64_MIN, dtype=np.int64).view(dt)[()]
        if isinstance(js, bool) or not isinstance(js, (int, float)):
            raise _bad(field, js, dt, "expected an int64 or 'NaT'")
        iv = _parse_int(js, np.dtype(np.int64), field)
        return np.array(iv, dtype=np.int64).view(dt.newbyteorder("="))[()]
    if kind == "S":
        raw = _byte_values(js, field, dt) if zarr_format == 3 else _b64decode(js, field, dt)
        return np.frombuffer(_fixed_bytes(raw, dt.itemsize, field, js, dt), dtype=dt)[0]
    if dt.fields is not None:
        if isinstance(js, dict):
            return _parse_struct_object(js, dt, field)
        raw = _byte_values(js, field, dt) if zarr_format == 3 else _b64decode(js, field, dt)
        raw = _fixed_bytes(raw, dt.itemsize, field, js, dt)
        # v3 structured bytes are little-endian packed fields; v2 bytes follow the typestrs.
        stored = dt.newbyteorder("<") if zarr_format == 3 else dt
        return np.frombuffer(raw, dtype=stored).astype(dt)[0]
    if kind == "V":
        raw = _byte_values(js, field, dt) if zarr_format == 3 else _b64decode(js, field, dt)
        return np.void(_fixed_bytes(raw, dt.itemsize, field, js, dt))
    raise _bad(field, js, dt, "unsupported dtype")


def _parse_struct_object(js: dict, dt: np.dtype, field: str) -> np.void:
    names = list(dt.names or ())
    if set(js) != set(names):
        raise _bad(field, js, dt, f"a struct fill value needs exactly the fields {names}")
    out = np.zeros((), dtype=dt)
    for name in names:
        sub = dt.fields[name][0]
        out[name] = parse_fill_value(js[name], sub, 3, field=f"{field}.{name}")
    return out[()]


def parse_fill_value(js: Any, dtype: Any, zarr_format: int, *, field: str = "fill_value") -> Any:
    """Decode a metadata ``fill_value`` to a numpy scalar of ``dtype``.

    Returns None only for a v2 ``null``. Object dtypes give Python ``str`` / ``bytes`` (or the
    JSON value itself for generic v2 objects).

    Raises
    ------
    MetadataError
        Naming ``field``, the value and the data type.
    """
    dt = _coerce(dtype)
    npdt = dt.dtype
    if js is None:
        if zarr_format == 2:
            return None
        raise MetadataError(f"{field} is required in v3 metadata and may not be null")
    kind = npdt.kind
    if (
        zarr_format == 2
        and (kind in "SU" or dt.vlen in ("string", "bytes"))
        and isinstance(js, (int, float))
        and not isinstance(js, bool)
    ):
        # zarr-python 2 wrote numeric fills (usually 0) for string dtypes and read them through
        # numpy's conversion, i.e. as the text "0"; zarr-python 3 reads them the same way.
        text = np.array(js, dtype=npdt if kind in "SU" else "U")[()]
        if dt.vlen == "string":
            return str(text)
        if dt.vlen == "bytes":
            return str(text).encode("ascii")
        return text
    if dt.vlen == "string":
        if not isinstance(js, str):
            raise _bad(field, js, dt, "expected a string")
        return js
    if dt.vlen == "bytes":
        return _byte_values(js, field, dt)
    if dt.vlen == "object":
        return js
    if kind == "b":
        if isinstance(js, bool):
            return np.bool_(js)
        if zarr_format == 2 and isinstance(js, int) and js in (0, 1):
            # Old v2 writers stored bool fills as 0/1.
            return np.bool_(js)
        raise _bad(field, js, dt, "expected true or false")
    if kind in "iu":
        return _parse_int(js, npdt, field)
    if kind == "f":
        return _parse_float(js, npdt, field)
    if kind == "c":
        if isinstance(js, list) and len(js) == 2:
            part = np.dtype(f"f{npdt.itemsize // 2}")
            re_ = _parse_float(js[0], part, f"{field}[0]")
            im_ = _parse_float(js[1], part, f"{field}[1]")
            out = np.zeros((), dtype=npdt.newbyteorder("="))
            out.real = re_
            out.imag = im_
            return out[()]
        if zarr_format == 2 and not isinstance(js, list):
            # v2 writers have stored a real number for a complex fill.
            return npdt.newbyteorder("=").type(_parse_float(js, np.dtype("f8"), field))
        raise _bad(field, js, dt, "expected [real, imag]")
    return _parse_fixed(js, npdt, zarr_format, dt.v3_name, field)


def encode_fill_value(value: Any, dtype: Any, zarr_format: int) -> Any:
    """Encode a fill value (numpy scalar or Python value of ``dtype``) as metadata JSON.

    Integers stay Python ints (uint64 above 2**53 exact); ``S``/``V``/structured values are
    base64 of the full item size (v3 ``r<N>``: a list of byte values; v3 ``struct``: an
    object); datetimes are int64 with NaT as ``-2**63``.
    """
    dt = _coerce(dtype)
    npdt = dt.dtype
    if value is None:
        if zarr_format == 2:
            return None
        raise InvalidArgumentError("a v3 fill_value may not be None")
    if dt.vlen == "string":
        if not isinstance(value, str):
            raise InvalidArgumentError(f"fill value {value!r} for a string array must be a str")
        return str(value)
    if dt.vlen == "bytes":
        if not isinstance(value, (bytes, bytearray, np.bytes_)):
            raise InvalidArgumentError(f"fill value {value!r} for a bytes array must be bytes")
        return base64.b64encode(bytes(value)).decode("ascii")
    if dt.vlen == "object":
        return value
    kind = npdt.kind
    if kind == "b":
        return bool(value)
    if kind in "iu":
        return int(value)
    if kind == "f":
        return _encode_float(value, npdt, zarr_format)
    if kind == "c":
        c = np.array(value, dtype=npdt.newbyteorder("="))[()]
        part = np.dtype(f"f{npdt.itemsize // 2}")
        return [_encode_float(c.real, part, zarr_format), _encode_float(c.imag, part, zarr_format)]
    if kind == "U":
        return str(np.array(value, dtype=npdt)[()])
    if kind in "mM":
        return int(np.array(value, dtype=npdt).view(npdt.newbyteorder("=")).astype(np.int64)[()])
    if npdt.fields is not None:
        if zarr_format == 3 and dt.v3_name == "struct":
            return _encode_struct_object(np.array(value, dtype=npdt)[()], npdt)
        stored = npdt.newbyteorder("<") if zarr_format == 3 else npdt
        raw = np.array(value, dtype=npdt).astype(stored).tobytes()
        return base64.b64encode(raw).decode("ascii")
    if kind in "SV":
        raw = np.array(value, dtype=npdt).tobytes()  # full item size, NUL padded
        if zarr_format == 3 and kind == "V" and dt.v3_name and dt.v3_name.startswith("r"):
            return list(raw)
        return base64.b64encode(raw).decode("ascii")
    raise InvalidArgumentError(f"cannot encode a fill value for {npdt}")


def _encode_struct_object(value: Any, dt: np.dtype) -> dict[str, Any]:
    out = {}
    for name in dt.names or ():
        sub = dt.fields[name][0]
        v = value[name]
        out[name] = _encode_struct_object(v, sub) if sub.fields is not None else encode_fill_value(v, DataType(sub), 3)
    return out


def default_fill_value(dtype: Any) -> Any:
    """zarr-python's default fill value for a data type.

    Zero / ``False`` / empty for most types, NaT for datetimes and timedeltas, ``""`` for vlen
    strings and ``b""`` for vlen bytes.
    """
    dt = as_data_type(dtype)
    if dt.vlen == "string":
        return ""
    if dt.vlen == "bytes":
        return b""
    if dt.vlen == "object":
        return None
    npdt = dt.dtype
    if npdt.kind in "mM":
        return np.array(_INT64_MIN, dtype=np.int64).view(npdt.newbyteorder("="))[()]
    return np.zeros((), dtype=npdt)[()]


def cast_fill_value(value: Any, dtype: Any) -> Any:
    """Convert a user-supplied fill value to a scalar of ``dtype``, refusing lossy conversions.

    ``None`` stays None. Strings ``"NaN"``/``"Infinity"`` work for floats; tuples for
    structured types; ``str`` for ``U``; ``bytes`` (or ASCII ``str``) for ``S``.
    """
    dt = as_data_type(dtype)
    if value is None:
        return None
    npdt = dt.dtype
    if dt.vlen == "string":
        if not isinstance(value, str):
            raise InvalidArgumentError(f"fill_value {value!r} for a string array must be a str")
        return str(value)
    if dt.vlen == "bytes":
        if not isinstance(value, (bytes, bytearray, np.bytes_)):
            raise InvalidArgumentError(f"fill_value {value!r} for a bytes array must be bytes")
        return bytes(value)
    if dt.vlen == "object":
        return value
    kind = npdt.kind
    try:
        if kind in "iu":
            if isinstance(value, (float, np.floating)) and not float(value).is_integer():
                raise InvalidArgumentError(f"fill_value {value!r} is not an integer for dtype {npdt}")
            if isinstance(value, (float, np.floating)):
                value = int(value)
            info = np.iinfo(npdt)
            if not info.min <= int(value) <= info.max:
                raise InvalidArgumentError(f"fill_value {value!r} is out of range for dtype {npdt}")
            return npdt.type(int(value))
        if kind == "S":
            if isinstance(value, str):
                value = value.encode("ascii")
            if len(bytes(value)) > npdt.itemsize:
                raise InvalidArgumentError(f"fill_value {value!r} is longer than dtype {npdt}")
        if kind == "U" and len(str(value)) > npdt.itemsize // 4:
            raise InvalidArgumentError(f"fill_value {value!r} is longer than dtype {npdt}")
        if kind == "V" and not npdt.fields and isinstance(value, (bytes, bytearray)):
            if len(value) > npdt.itemsize:
                raise InvalidArgumentError(f"fill_value {value!r} is longer than dtype {npdt}")
            return np.void(bytes(value) + b"\x00" * (npdt.itemsize - len(value)))
        if npdt.fields is not None and isinstance(value, (bytes, bytearray)):
            raw = _fixed_bytes(bytes(value), npdt.itemsize, "fill_value", value, npdt)
            return np.frombuffer(raw, dtype=npdt)[0]
        return np.array(value, dtype=npdt)[()]
    except InvalidArgumentError:
        raise
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidArgumentError(f"fill_value {value!r} cannot be converted to dtype {npdt} ({e})") from e


def fill_values_equal(a: Any, b: Any) -> bool:
    """Whether two fill values are the same, bit for bit for numbers (NaN == NaN, -0.0 != 0.0)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, np.generic) and isinstance(b, np.generic):
        return a.dtype == b.dtype and np.array(a).tobytes() == np.array(b).tobytes()
    if isinstance(a, (str, bytes)) or isinstance(b, (str, bytes)):
        return type(a) is type(b) and a == b
    return bool(a == b)


__all__ = [
    "OBJECT_CODEC_IDS",
    "OBJECT_CODEC_VLEN",
    "V3_CORE_DTYPES",
    "DataType",
    "as_data_type",
    "cast_fill_value",
    "data_type_to_v3_json",
    "default_fill_value",
    "dtype_endian",
    "dtype_to_v2_json",
    "encode_fill_value",
    "fill_values_equal",
    "native_dtype",
    "needs_endian",
    "parse_data_type_v3",
    "parse_dtype_v2",
    "parse_fill_value",
    "v3_dtype",
]
