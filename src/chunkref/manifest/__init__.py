"""Reference manifests: Zarr metadata plus columnar chunk tables pointing into other files.

See :mod:`chunkref.manifest.table` (ChunkTable), :mod:`chunkref.manifest.manifest` (Manifest),
:mod:`chunkref.manifest.sources` (Source, URL handling) and :mod:`chunkref.manifest.kerchunk`
(kerchunk JSON interchange).
"""

from chunkref.manifest.manifest import Manifest, normalize_path
from chunkref.manifest.sources import Source
from chunkref.manifest.table import ABSENT, CID_WIDTH, INLINE, WHOLE, ChunkRef, ChunkTable

__all__ = [
    "ABSENT",
    "CID_WIDTH",
    "INLINE",
    "WHOLE",
    "ChunkRef",
    "ChunkTable",
    "Manifest",
    "Source",
    "normalize_path",
]
