"""Combining manifests: many files -> one dataset, variable chunk sizes where the files differ.

* :func:`combine` — concatenate along existing dimensions (files of 28/30/31 days, leap years,
  short last chunks: a ``rectilinear`` grid whose edges are the files' chunks), along several
  (tile mosaics), along a new dimension (ensemble members), or merge files holding different
  variables; checks that everything that changes decoded values agrees.
* :func:`combine_append` — extend an already combined manifest with more files.

See :mod:`.core` for the algorithm, :mod:`.variables` for the agreement rules and
:mod:`.times` for the exact rebasing of CF time units.
"""

from chunkref.manifest.combine.core import CONFLICT_RULES, combine, combine_append, load_input

__all__ = ["CONFLICT_RULES", "combine", "combine_append", "load_input"]
