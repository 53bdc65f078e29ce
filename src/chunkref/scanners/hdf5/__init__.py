"""HDF5 / NetCDF-4 scanner: files -> reference manifests (see :mod:`._scanner`)."""

from chunkref.scanners.hdf5._scanner import (
    DEFAULT_CONTIGUOUS_SPLIT_BYTES,
    NETCDF_HIDDEN_ATTRS,
    scan_hdf5,
)

__all__ = ["DEFAULT_CONTIGUOUS_SPLIT_BYTES", "NETCDF_HIDDEN_ATTRS", "scan_hdf5"]
