"""Selections over chunk grids: basic, orthogonal, vindex (coordinates, masks) and blocks.

``make_indexer(selection, grid, kind)`` turns a selection into per-chunk projections; see
:mod:`chunkref.zarr.indexing.indexers` for the semantics and ``docs/architecture.md``
("Indexing") for the contract with the array layer.
"""

from chunkref.zarr.indexing.axis import AxisProjection
from chunkref.zarr.indexing.indexers import (
    KINDS,
    ChunkProjection,
    Indexer,
    ProductIndexer,
    VindexIndexer,
    block_selection,
    make_indexer,
)
from chunkref.zarr.indexing.regions import (
    chunks_for_region,
    chunks_outside,
    normalize_resize,
    selection_is_empty,
)
from chunkref.zarr.indexing.selection import is_basic_selection, selection_kind

__all__ = [
    "KINDS",
    "AxisProjection",
    "ChunkProjection",
    "Indexer",
    "ProductIndexer",
    "VindexIndexer",
    "block_selection",
    "chunks_for_region",
    "chunks_outside",
    "is_basic_selection",
    "make_indexer",
    "normalize_resize",
    "selection_is_empty",
    "selection_kind",
]
