"""chunkref: cloud-friendly, versioned, verifiable access to array data.

The Zarr engine's functions have zarr-python 3's names and defaults, so ``import chunkref as zarr``
works for the calls both libraries share.
"""

from chunkref import errors
from chunkref.config import config
from chunkref.entry import open, scan
from chunkref.manifest import Manifest
from chunkref.manifest.combine import combine, combine_append
from chunkref.many import ScanRecord, combine_many, scan_many
from chunkref.repo import Repository
from chunkref.zarr.api import (
    array,
    as_store,
    consolidate_metadata,
    copy_store,
    create_array,
    create_group,
    from_array,
    open_array,
    open_group,
)
from chunkref.zarr.array import Array
from chunkref.zarr.group import Group
from chunkref.zarr.lazy import LazyArray

__version__ = "0.1.0"

__all__ = [
    "Array",
    "Group",
    "LazyArray",
    "Manifest",
    "Repository",
    "ScanRecord",
    "__version__",
    "array",
    "as_store",
    "combine",
    "combine_append",
    "combine_many",
    "config",
    "consolidate_metadata",
    "copy_store",
    "create_array",
    "create_group",
    "errors",
    "from_array",
    "open",
    "open_array",
    "open_group",
    "scan",
    "scan_many",
]
