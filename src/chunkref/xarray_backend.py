"""xarray backend: ``xr.open_dataset(x, engine="chunkref")``.

``x`` is anything :func:`chunkref.open` takes: a Manifest, a kerchunk JSON file, an HDF5/NetCDF
file (scanned on the fly), or a Zarr store.  Variables are lazy (nothing is read until used) and
picklable, so they work with dask; ``preferred_chunks`` is the array's chunking (per-axis
tuples for rectilinear grids).  CF decoding is xarray's own, exactly as for the netcdf4 engine;
attribute types recorded by the scanners (``_chunkref_attribute_types``) are restored first, so a
``float32`` ``scale_factor`` decodes to ``float32`` as it does through netCDF4.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from xarray import Dataset, Variable
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.backends.common import AbstractDataStore
from xarray.backends.store import StoreBackendEntrypoint
from xarray.core import indexing

from chunkref.zarr.array import Array
from chunkref.zarr.group import Group

#: Attribute of an array or group mapping attribute names to numpy dtypes, written by scanners
#: where JSON would lose the type (float32, small ints); removed when the attributes are read.
ATTRIBUTE_TYPES = "_chunkref_attribute_types"


def restore_attribute_types(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes with recorded numpy types re-applied and the bookkeeping key dropped."""
    out = dict(attrs)
    types = out.pop(ATTRIBUTE_TYPES, None)
    if not isinstance(types, dict):
        return out
    for name, dt in types.items():
        if name in out:
            try:
                value = np.asarray(out[name], dtype=np.dtype(dt))
            except (TypeError, ValueError):
                continue  # an attribute edited after scanning keeps its JSON value
            out[name] = value[()] if value.ndim == 0 else value
    return out


def decode_v3_fill_attribute(value: Any, dtype: np.dtype) -> Any:
    """Decode a v3 ``_FillValue`` attribute written in xarray's Zarr v3 convention.

    xarray stores float fill values as the base64 of a little-endian double (complex: a pair
    of those) and byte strings as base64, so that NaN and exact bits survive JSON.
    """
    import base64
    import struct

    def b64_double(v: Any) -> float:
        return struct.unpack("<d", base64.standard_b64decode(v))[0]

    try:
        if dtype.kind == "f" and isinstance(value, str):
            return np.array(b64_double(value), dtype=dtype)[()]
        if dtype.kind == "c" and isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
            return np.array(complex(b64_double(value[0]), b64_double(value[1])), dtype=dtype)[()]
        if dtype.kind == "S" and isinstance(value, str):
            return base64.standard_b64decode(value)
    except (ValueError, struct.error):
        return value
    return value


class ChunkrefBackendArray(BackendArray):
    """A lazily indexed chunkref array for xarray (picklable: holds only the Array handle)."""

    def __init__(self, array: Array) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        # OUTER support: xarray turns vectorised (pointwise) indexers into an outer selection
        # plus an in-memory step, so the raw method never has to guess which kind it got.
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._getitem)

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        if all(isinstance(k, (int, np.integer, slice)) for k in key):
            return np.asarray(self.array.get_basic_selection(key))
        return np.asarray(self.array.get_orthogonal_selection(key))


def _dimension_names(array: Array, attrs: dict[str, Any]) -> tuple[str, ...]:
    names = array.dimension_names
    if names is None:
        dims = attrs.pop("_ARRAY_DIMENSIONS", None)
        if isinstance(dims, list) and len(dims) == array.ndim:
            return tuple(str(d) for d in dims)
        return tuple(f"dim_{i}" for i in range(array.ndim))
    attrs.pop("_ARRAY_DIMENSIONS", None)
    return tuple(n if n is not None else f"dim_{i}" for i, n in enumerate(names))


class ChunkrefDataStore(AbstractDataStore):
    """The variables of one chunkref group, as xarray's decoding machinery expects them."""

    def __init__(self, group: Group, drop_variables: Iterable[str] | None = None) -> None:
        self.group = group
        self.drop = set(drop_variables or ())

    def open_store_variable(self, name: str, array: Array) -> Variable:
        attrs = restore_attribute_types(array.attrs.asdict())
        dims = _dimension_names(array, attrs)
        if array.zarr_format == 3 and "_FillValue" in attrs:
            attrs["_FillValue"] = decode_v3_fill_attribute(attrs["_FillValue"], array.dtype)
        if array.zarr_format == 2 and "_FillValue" not in attrs and array.fill_value is not None:
            # xarray's zarr convention for v2: the Zarr fill value is the CF _FillValue.
            fv = array.fill_value
            attrs["_FillValue"] = fv.item() if hasattr(fv, "item") else fv
        data = indexing.LazilyIndexedArray(ChunkrefBackendArray(array))
        grid = array.chunk_grid
        if grid.is_regular:
            chunks: Any = tuple(int(c) for c in grid.chunk_shape)  # type: ignore[attr-defined]
            preferred = dict(zip(dims, chunks))
        else:
            chunks = array.chunk_sizes
            preferred = dict(zip(dims, chunks))
        encoding = {"chunks": chunks, "preferred_chunks": preferred, "dtype": array.dtype}
        return Variable(dims, data, attrs, encoding)

    def get_variables(self) -> dict[str, Variable]:
        return {
            name: self.open_store_variable(name, arr)
            for name, arr in self.group.arrays()
            if name not in self.drop
        }

    def get_attrs(self) -> dict[str, Any]:
        return restore_attribute_types(self.group.attrs.asdict())

    def get_dimensions(self) -> dict[str, int]:
        dims: dict[str, int] = {}
        for _, arr in self.group.arrays():
            names = _dimension_names(arr, arr.attrs.asdict())
            dims.update(zip(names, arr.shape))
        return dims

    def close(self) -> None:
        self.group.store.close()


def _open_group(filename_or_obj: Any, group: str | None, open_kwargs: dict[str, Any]) -> Group:
    import chunkref

    node = chunkref.open(filename_or_obj, mode="r", **open_kwargs)
    if group:
        node = node[group.strip("/")] if group.strip("/") else node
    if not isinstance(node, Group):
        raise ValueError(f"{filename_or_obj!r} (group {group!r}) is an array; xarray opens groups")
    return node


class ChunkrefBackendEntrypoint(BackendEntrypoint):
    """``engine="chunkref"``: manifests, kerchunk JSON, HDF5/NetCDF files and Zarr stores."""

    description = "Open chunkref manifests, kerchunk references, HDF5/NetCDF files (scanned) and Zarr stores"
    url = "https://github.com/chunkref/chunkref"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "mask_and_scale",
        "decode_times",
        "concat_characters",
        "decode_coords",
        "use_cftime",
        "decode_timedelta",
        "group",
        "allow",
        "storage_options",
        "verify",
        "rename",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        from chunkref.manifest import Manifest

        return isinstance(filename_or_obj, (Manifest, Group))

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: Iterable[str] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        concat_characters: bool = True,
        decode_coords: bool = True,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
        group: str | None = None,
        allow: Iterable[str] | str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        verify: bool = False,
        rename: Mapping[str, str] | None = None,
    ) -> Dataset:
        if isinstance(filename_or_obj, os.PathLike):
            filename_or_obj = os.fspath(filename_or_obj)
        if isinstance(filename_or_obj, Group):
            grp = filename_or_obj[group] if group else filename_or_obj
        else:
            grp = _open_group(
                filename_or_obj, group,
                {"allow": allow, "storage_options": storage_options, "verify": verify, "rename": rename},
            )
        store = ChunkrefDataStore(grp, drop_variables)
        return StoreBackendEntrypoint().open_dataset(
            store,
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
            drop_variables=drop_variables,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
        )

    def open_datatree(self, filename_or_obj: Any, **kwargs: Any) -> Any:
        """Every group of the hierarchy as a node of an ``xarray.DataTree``."""
        from xarray import DataTree

        return DataTree.from_dict(self.open_groups_as_dict(filename_or_obj, **kwargs))

    def open_groups_as_dict(self, filename_or_obj: Any, **kwargs: Any) -> dict[str, Dataset]:
        group = kwargs.pop("group", None)
        open_kwargs = {k: kwargs.pop(k) for k in ("allow", "storage_options", "verify", "rename") if k in kwargs}
        root = _open_group(filename_or_obj, group, open_kwargs)
        out = {"/": self.open_dataset(root, **kwargs)}
        for name, node in root.members(max_depth=None):
            if isinstance(node, Group):
                out["/" + name] = self.open_dataset(node, **kwargs)
        return out
