"""Scanners: legacy array files -> reference manifests.

* :func:`~chunkref.scanners.hdf5.scan_hdf5`: HDF5 and NetCDF-4 (through h5py);
* :func:`~chunkref.scanners.netcdf3.scan_netcdf3`: NetCDF-3 classic, 64-bit offset and CDF-5
  (native header parser);
* :func:`~chunkref.scanners.zarr_store.scan_zarr`: existing Zarr v2/v3 stores (references to
  their chunk objects).

:func:`chunkref.scan` picks the right one from the file's first bytes.
"""

from chunkref.scanners.hdf5 import scan_hdf5
from chunkref.scanners.netcdf3 import scan_netcdf3
from chunkref.scanners.zarr_store import scan_zarr

__all__ = ["scan_hdf5", "scan_netcdf3", "scan_zarr"]
