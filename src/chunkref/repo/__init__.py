"""Content-addressed repository with git-like history of Zarr hierarchies.

``Repository.create(url)`` / ``Repository.open(url, allow=[...])``; sessions give a chunkref Store
(``session.store``) that the Zarr engine, zarr-python (``session.zarr_store()``) and xarray read
and write; ``session.commit(message)`` makes a new version.  See ``docs/architecture.md``
("Repository format") and :mod:`chunkref.repo.repository`.
"""

from chunkref.repo.diff import Diff
from chunkref.repo.repository import Repository
from chunkref.repo.session import Session
from chunkref.repo.store import SessionStore

__all__ = ["Diff", "Repository", "Session", "SessionStore"]
