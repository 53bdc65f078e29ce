"""HDF5 datatypes -> numpy dtypes -> Zarr data types and fill values.

:func:`analyse_type` looks at a dataset's HDF5 type (through h5py's low-level TypeID) and
decides how its stored bytes map to a Zarr array:

* ``direct``: the stored element bytes *are* the numpy value (numbers of standard layout, bool,
  enum -> base integer, fixed-length strings, opaque, compound without references, complex
  compounds as h5py reads them, HDF5 array types -> extra trailing axes);
* ``vlen_str``: variable-length strings, read through h5py and stored inline as ``vlen-utf8``;
* ``objref``: object references, read through h5py and stored inline as the referenced paths;
* anything else raises :class:`TypeRefusal` with the reason, which the scanner records.

The JSON forms follow zarr-python 3.1 (v3 names such as ``null_terminated_bytes``,
``raw_bytes``, ``structured``, ``string``; v2 typestrings and structured ``descr`` lists).
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
from h5py import h5t

from chunkref.errors import InvalidArgumentError
from chunkref.zarr.dtypes import dtype_endian


class TypeRefusal(Exception):
    """A dataset's datatype cannot be represented (the message is the reason)."""


@dataclass(frozen=True)
class TypeInfo:
    """How a dataset's elements are represented in Zarr.

    Attributes
    ----------
    kind
        ``"direct"``, ``"vlen_str"`` or ``"objref"``.
    dtype
        numpy dtype of one Zarr element (byte order as stored, for ``direct``).
    extra_shape
        Trailing axes contributed by an HDF5 array datatype (``()`` otherwise).
    attributes
        Attributes describing the type that Zarr cannot hold (enum labels, opaque tag).
    nbit_kinds
        One of ``i``/``u``/``f`` per atomic field in HDF5 order (for the n-bit filter).
    """

    kind: str
    dtype: np.dtype
    extra_shape: tuple[int, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    nbit_kinds: str = ""


_IEEE_FIELDS = {
    # size: (sign pos, exp pos, exp size, mantissa pos, mantissa size)
    2: (15, 10, 5, 0, 10),
    4: (31, 23, 8, 0, 23),
    8: (63, 52, 11, 0, 52),
}


def _order_char(tid: h5t.TypeID) -> str:
    return ">" if tid.get_order() == h5t.ORDER_BE else "<"


def _check_atomic(tid: h5t.TypeID, what: str) -> str:
    """Check an integer/float type has a standard layout; return its n-bit kind letter."""
    cls = tid.get_class()
    size = tid.get_size()
    if cls == h5t.INTEGER:
        if size not in (1, 2, 4, 8):
            raise TypeRefusal(f"{what}: {size}-byte integers have no numpy equivalent")
        return "i" if tid.get_sign() == h5t.SGN_2 else "u"
    if cls == h5t.FLOAT:
        if size not in _IEEE_FIELDS:
            raise TypeRefusal(f"{what}: {size}-byte floats (e.g. x87 long double) have no Zarr data type")
        fields = tid.get_fields()
        if tuple(fields) != _IEEE_FIELDS[size] or tid.get_ebias() != (1 << (_IEEE_FIELDS[size][2] - 1)) - 1:
            raise TypeRefusal(f"{what}: non-IEEE {size}-byte floating-point layout {tuple(fields)}")
        return "f"
    raise TypeRefusal(f"{what}: HDF5 type class {cls} is not atomic numeric")


def _precision_ok(tid: h5t.TypeID) -> bool:
    return tid.get_precision() == tid.get_size() * 8 and tid.get_offset() == 0


def _nbit_kinds(tid: h5t.TypeID) -> str:
    """n-bit kinds of every atomic field of ``tid`` in the filter's stream order."""
    cls = tid.get_class()
    if cls in (h5t.INTEGER, h5t.FLOAT):
        return _check_atomic(tid, "n-bit field")
    if cls == h5t.ARRAY:
        base = tid.get_super()
        n = math.prod(tid.get_array_dims())
        return _nbit_kinds(base) * n
    if cls == h5t.COMPOUND:
        return "".join(_nbit_kinds(tid.get_member_type(i)) for i in range(tid.get_nmembers()))
    return ""  # no-op types (strings, opaque, enums, references) carry no atomic fields


def analyse_type(dset: h5py.Dataset, *, nbit: bool = False) -> TypeInfo:
    """Decide how the elements of ``dset`` are represented (see the module docstring).

    Parameters
    ----------
    dset
        The dataset.
    nbit
        The dataset uses the n-bit filter, which itself restores reduced-precision integers; a
        reduced precision is then not a reason to refuse.
    """
    tid = dset.id.get_type()
    dtype = dset.dtype
    cls = tid.get_class()
    attrs: dict[str, Any] = {}

    if cls == h5t.STRING:
        if tid.is_variable_str():
            return TypeInfo("vlen_str", np.dtype(object))
        return TypeInfo("direct", np.dtype(f"S{tid.get_size()}"))
    if cls == h5t.VLEN:
        raise TypeRefusal(
            f"variable-length sequences of {tid.get_super().get_size()}-byte elements have no Zarr data type"
        )
    if cls == h5t.REFERENCE:
        if tid.equal(h5t.STD_REF_OBJ) or h5py.check_ref_dtype(dtype) is h5py.Reference:
            return TypeInfo("objref", np.dtype(object), attributes={"_hdf5_reference": "object"})
        raise TypeRefusal("dataset region references point into selections of other datasets; Zarr cannot hold them")
    if cls == h5t.OPAQUE:
        tag = tid.get_tag()
        if tag:
            attrs["_hdf5_opaque_tag"] = tag.decode("utf-8", "replace") if isinstance(tag, bytes) else str(tag)
        return TypeInfo("direct", np.dtype(f"V{tid.get_size()}"), attributes=attrs)
    if cls == h5t.ENUM:
        base = tid.get_super()
        kind = _check_atomic(base, "enum base type")
        if dtype.kind == "b":
            return TypeInfo("direct", np.dtype(bool), nbit_kinds="")
        mapping = h5py.check_enum_dtype(dtype) or {}
        attrs["_hdf5_enum"] = {str(k): int(v) for k, v in mapping.items()}
        return TypeInfo("direct", np.dtype(f"{_order_char(base)}{kind}{base.get_size()}"), attributes=attrs)
    if cls in (h5t.INTEGER, h5t.FLOAT):
        kind = _check_atomic(tid, "datatype")
        if not _precision_ok(tid) and not nbit:
            raise TypeRefusal(
                f"{tid.get_size()}-byte {'integer' if kind != 'f' else 'float'} with {tid.get_precision()} bits of "
                f"precision at bit offset {tid.get_offset()}: its stored bytes are not numpy values"
            )
        if kind == "f" and not _precision_ok(tid):
            raise TypeRefusal("a float of reduced precision is a custom floating-point format")
        return TypeInfo("direct", np.dtype(f"{_order_char(tid)}{kind}{tid.get_size()}"), nbit_kinds=kind)
    if cls == h5t.BITFIELD:
        return TypeInfo("direct", np.dtype(f"{_order_char(tid)}u{tid.get_size()}"), nbit_kinds="")
    if cls == h5t.ARRAY:
        base_dt = dtype.base if dtype.subdtype is not None else dtype
        sub_shape = dtype.shape if dtype.subdtype is not None else tuple(tid.get_array_dims())
        if base_dt.hasobject:
            raise TypeRefusal("HDF5 array datatype of variable-length or reference elements")
        _compound_ok(base_dt)
        base_dt, pads = explicit_padding(base_dt)
        if pads:
            attrs["_hdf5_padding_fields"] = pads
        return TypeInfo("direct", base_dt, attributes=attrs, extra_shape=tuple(int(s) for s in sub_shape), nbit_kinds=_nbit_kinds(tid))
    if cls == h5t.COMPOUND:
        if dtype.kind == "c":
            # h5py reads {r, i} compounds as complex; accept only when the layout is identical.
            n = tid.get_nmembers()
            sizes = [tid.get_member_type(i).get_size() for i in range(n)]
            offsets = [tid.get_member_offset(i) for i in range(n)]
            if n != 2 or sizes[0] != sizes[1] or offsets != [0, sizes[0]] or tid.get_size() != 2 * sizes[0]:
                raise TypeRefusal("complex compound with padding or reordered members")
            for i in range(2):
                _check_atomic(tid.get_member_type(i), "complex part")
            return TypeInfo(
                "direct",
                np.dtype(f"{_order_char(tid.get_member_type(0))}c{tid.get_size()}"),
                nbit_kinds="ff",
            )
        if dtype.hasobject:
            raise TypeRefusal("compound with variable-length or reference members (read them with h5py)")
        _compound_ok(dtype)
        if dtype.itemsize != tid.get_size():
            raise TypeRefusal(f"compound of {tid.get_size()} bytes read by h5py as {dtype.itemsize} bytes")
        packed, pads = explicit_padding(dtype)
        if pads:
            attrs["_hdf5_padding_fields"] = pads
        return TypeInfo("direct", packed, attributes=attrs, nbit_kinds=_nbit_kinds(tid))
    if cls == h5t.TIME:
        raise TypeRefusal("HDF5 time datatype (deprecated; no library reads it)")
    raise TypeRefusal(f"HDF5 type class {cls} is not supported")


def _compound_ok(dtype: np.dtype) -> None:
    """Refuse structured dtypes whose fields mix byte orders (one ``bytes`` codec endian)."""
    try:
        dtype_endian(dtype)
    except InvalidArgumentError as exc:
        raise TypeRefusal("compound members of mixed byte order cannot share one Zarr bytes codec") from exc


def explicit_padding(dtype: np.dtype) -> tuple[np.dtype, list[str]]:
    """A packed structured dtype with the same bytes: gaps become ``V`` fields ``_padding_<offset>``.

    Zarr structured types have no padding, HDF5 compounds often do (C struct alignment); naming
    the gaps keeps every stored byte where it is.  Returns the dtype and the padding names.
    """
    if dtype.names is None:
        return dtype, []
    if any(dtype.fields[n][0].subdtype is not None for n in dtype.names):
        raise TypeRefusal("compound member that is itself an HDF5 array type (Zarr structured fields are scalars)")
    names, formats, pads = [], [], []
    pos = 0
    for off, name, dt in sorted((dtype.fields[n][1], n, dtype.fields[n][0]) for n in dtype.names):
        if off > pos:
            pad = f"_padding_{pos}"
            names.append(pad)
            formats.append(np.dtype(f"V{off - pos}"))
            pads.append(pad)
        inner, inner_pads = explicit_padding(dt) if dt.names else (dt, [])
        if inner_pads:
            raise TypeRefusal(f"nested compound member {name!r} has padding")
        names.append(name)
        formats.append(inner)
        pos = off + dt.itemsize
    if dtype.itemsize > pos:
        pad = f"_padding_{pos}"
        names.append(pad)
        formats.append(np.dtype(f"V{dtype.itemsize - pos}"))
        pads.append(pad)
    return np.dtype({"names": names, "formats": formats}), pads


def _float_json(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def cf_fill_attr_v3(value: Any, dtype: np.dtype) -> Any:
    """A ``_FillValue`` attribute as xarray's Zarr v3 reader decodes it (``FillValueCoder``).

    xarray decodes float fill values from the base64 of a little-endian double, complex ones
    from a pair of those, byte strings from base64; integers and bools stay plain.
    """
    arr = np.asarray(value)
    if arr.size != 1:
        return attr_json(value)
    scalar = arr.reshape(()).item()
    if dtype.kind == "f":
        return base64.standard_b64encode(struct.pack("<d", float(scalar))).decode()
    if dtype.kind == "c":
        c = complex(scalar)
        return [base64.standard_b64encode(struct.pack("<d", part)).decode() for part in (c.real, c.imag)]
    if dtype.kind == "S":
        raw = scalar if isinstance(scalar, bytes) else str(scalar).encode()
        return base64.standard_b64encode(raw).decode()
    if dtype.kind == "b":
        return bool(scalar)
    if dtype.kind in "iu":
        return int(scalar)
    return attr_json(value)


def attr_json(value: Any, resolve: Any = None) -> Any:
    """Encode an attribute value as JSON, losslessly where JSON allows.

    Numbers stay numbers (floats as the exact double of the stored value, so a float32
    ``1e37`` round-trips), non-finite floats become ``"NaN"``/``"Infinity"``/``"-Infinity"``,
    bytes that are UTF-8 become str (else ``"base64:<b64>"``), arrays become (nested) lists, a
    one-element 1-D array its element (the netCDF convention for scalar attributes), compounds
    dicts, references the referenced object's path.
    """
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, h5py.Reference):
        return resolve(value) if resolve is not None and value else None
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.standard_b64encode(bytes(value)).decode()
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _float_json(float(value))
    if isinstance(value, (complex, np.complexfloating)):
        return [_float_json(value.real), _float_json(value.imag)]
    if isinstance(value, np.void):
        if value.dtype.names:
            return {name: attr_json(value[name], resolve) for name in value.dtype.names}
        return "base64:" + base64.standard_b64encode(value.tobytes()).decode()
    if isinstance(value, np.ndarray):
        if value.ndim == 1 and value.size == 1:
            return attr_json(value[0], resolve)
        if value.dtype.kind in "iub":
            return value.tolist()
        if value.dtype.kind == "f":
            if np.isfinite(value).all():
                return value.astype(np.float64).tolist()
        return [attr_json(v, resolve) for v in value] if value.ndim else attr_json(value[()], resolve)
    if isinstance(value, (list, tuple)):
        return [attr_json(v, resolve) for v in value]
    return str(value)
