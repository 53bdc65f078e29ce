"""The two front doors: :func:`scan` (any supported file -> Manifest) and :func:`open`.

``chunkref.open(x)`` opens whatever ``x`` is:

* a :class:`~chunkref.manifest.Manifest` or a kerchunk reference file (``.json``): the
  hierarchy it describes, served by a
  :class:`~chunkref.reference.ReferenceStore`;
* an HDF5, NetCDF4 or NetCDF3 file: scanned first, then opened the same way (the scanned file
  is authorized automatically);
* anything else: a Zarr store, opened as zarr-python would.

``allow=`` is the one spelling of source authorization everywhere in the API.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from chunkref.errors import InvalidArgumentError, NodeNotFoundError, ScanError
from chunkref.reference.trust import scanned_sources

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NETCDF3_MAGICS = (b"CDF\x01", b"CDF\x02", b"CDF\x05")
# An HDF5 superblock may follow a user block of 512, 1024, 2048, ... bytes.
_HDF5_SUPERBLOCK_OFFSETS = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def sniff_format(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """``"hdf5"``, ``"netcdf3"``, ``"zarr"``, ``"kerchunk"`` or ``"manifest"`` (a native or
    kerchunk parquet manifest) for a path or URL.

    Raises
    ------
    ScanError
        When the file cannot be read or is none of these.
    """
    import fsspec

    lower = url.lower().rstrip("/")
    if lower.endswith(".json"):
        return "kerchunk"
    if lower.endswith((".parquet", ".parq")):
        return "manifest"
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    try:
        if fs.isdir(path):
            from chunkref.manifest.native import HEADER_NAME

            if fs.exists(f"{path.rstrip('/')}/{HEADER_NAME}"):
                return "manifest"
            for name in ("zarr.json", ".zarray", ".zgroup", ".zmetadata"):
                if fs.exists(f"{path.rstrip('/')}/{name}"):
                    return "zarr"
            raise ScanError(f"{url}: a directory that is not a Zarr store")
        with fs.open(path, "rb") as f:
            head = f.read(8)
            if head[:4] in NETCDF3_MAGICS:
                return "netcdf3"
            if head == HDF5_MAGIC:
                return "hdf5"
            for off in _HDF5_SUPERBLOCK_OFFSETS[1:]:
                f.seek(off)
                if f.read(8) == HDF5_MAGIC:
                    return "hdf5"
    except FileNotFoundError:
        raise ScanError(f"{url}: no such file") from None
    except OSError as exc:
        raise ScanError(f"{url}: cannot be read: {exc}") from exc
    raise ScanError(f"{url}: not an HDF5, NetCDF3, Zarr or manifest file (first bytes {head!r})")


def scan(
    url: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    hash: bool = False,  # noqa: A002 - the user-facing name of the option
    **kwargs: Any,
) -> Any:
    """Scan a file (HDF5, NetCDF4, NetCDF3) or store (Zarr, kerchunk JSON) into a Manifest.

    Keyword arguments go to the scanner: ``zarr_format``, ``inline_threshold``,
    ``skip_variables``, ``strict`` and the scanner's own options.  ``Manifest.refused`` maps
    every variable that could not be represented to the reason.  ``hash=True`` then reads every
    referenced byte and records its content id (``Manifest.compute_hashes``).
    """
    url = os.fspath(url)
    kind = sniff_format(url, storage_options)
    if kind in ("kerchunk", "manifest"):
        from chunkref.manifest import Manifest

        manifest = Manifest.load(url, **dict(storage_options or {}))
        if hash:
            manifest.compute_hashes()
        return manifest
    if kind == "zarr":
        from chunkref.scanners.zarr_store import scan_zarr

        manifest = scan_zarr(url, storage_options=storage_options, content_ids=hash, **kwargs)
    else:
        if kind == "hdf5":
            from chunkref.scanners.hdf5 import scan_hdf5 as scanner
        else:
            from chunkref.scanners.netcdf3 import scan_netcdf3 as scanner
        manifest = scanner(url, storage_options=storage_options, **kwargs)
        if hash:
            manifest.compute_hashes(**dict(storage_options or {}))
    return manifest


def open(  # noqa: A001 - the one entry point, like zarr.open
    x: Any = None,
    *,
    mode: str | None = None,
    allow: Iterable[str] | str | None = None,
    verify: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    rename: Mapping[str, str] | None = None,
    path: str | None = None,
    **kwargs: Any,
) -> Any:
    """Open a manifest, a scannable file, or a Zarr store; returns a Group or an Array.

    Parameters
    ----------
    x
        A Manifest, a kerchunk reference file (``.json``), an HDF5/NetCDF file, or a Zarr store (path, URL, Store, dict, None).
    mode
        For Zarr stores as in zarr-python (default ``"a"``); references are read-only (``"r"``).
    allow
        Source URL prefixes that references may read, besides the manifest's own folder.
    verify
        Check each referenced chunk against its content id before decoding.
    storage_options
        fsspec options for the store or, for references, for their sources (a dict, or one
        dict per URL prefix).
    rename
        ``{old_prefix: new_prefix}`` to relocate referenced sources.
    path
        A node inside the hierarchy to open.
    """
    from chunkref.manifest import Manifest
    from chunkref.zarr import api

    manifest = None
    extra_allow: list[str] = []
    if isinstance(x, Manifest):
        manifest = x
        extra_allow = list(scanned_sources(x))
    elif isinstance(x, (str, os.PathLike)):
        url = os.fspath(x)
        kind = _kind_or_zarr(url, storage_options)
        if kind in ("kerchunk", "manifest"):
            try:
                manifest = Manifest.load(url)
            except FileNotFoundError:
                raise NodeNotFoundError(f"no reference file at {url!r}") from None
        elif kind in ("hdf5", "netcdf3"):
            manifest = scan(url, storage_options=storage_options, **_scan_kwargs(kwargs))
            extra_allow = list(scanned_sources(manifest))
    if manifest is None:
        return api.open(x, mode=mode or "a", path=path, storage_options=storage_options, **kwargs)
    if mode not in (None, "r"):
        raise InvalidArgumentError(f"references are read-only; open them with mode='r', not {mode!r}")
    from chunkref.reference import ReferenceStore

    allowed = ([allow] if isinstance(allow, str) else list(allow or [])) + extra_allow
    store = ReferenceStore(manifest, allow=allowed, storage_options=storage_options, rename=rename, verify=verify)
    return api.open(store, mode="r", path=path, **kwargs)


_SCAN_OPTIONS = ("zarr_format", "inline_threshold", "skip_variables", "strict", "contiguous_split_bytes", "max_chunk_bytes")


def _scan_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in list(kwargs) if k in _SCAN_OPTIONS}


def _kind_or_zarr(url: str, storage_options: Mapping[str, Any] | None) -> str:
    """Format of an existing path; a path that does not exist yet is a new Zarr store."""
    try:
        return sniff_format(url, storage_options)
    except ScanError:
        return "zarr"
