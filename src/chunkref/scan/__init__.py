"""Scanners: legacy array files -> reference manifests.

``scan_hdf5`` reads HDF5 and NetCDF-4 files (see :mod:`chunkref.scan.hdf5`).
"""

from chunkref.scan.hdf5 import scan_hdf5

__all__ = ["scan_hdf5"]
