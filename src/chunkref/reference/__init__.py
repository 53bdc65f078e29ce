"""Reference stores: serve a Manifest's chunks from the files it points into.

:class:`ReferenceStore` (read-only Store, batched and coalesced reads) and source authorization
(:mod:`chunkref.reference.auth`).
"""

from chunkref.reference.auth import SourcePolicy
from chunkref.reference.store import ReferenceStore

__all__ = ["ReferenceStore", "SourcePolicy"]
