"""Which sources a manifest may read without ``allow=``: those this process scanned itself.

``chunkref.open(chunkref.scan(path))`` should just work, while a manifest that arrives from
anywhere else (a file, a network message, a dict) must be authorized explicitly.  Scanners
record the sources they read here; :func:`~chunkref.manifest.combine.combine` carries the record
over to its output; :func:`chunkref.open` authorizes exactly the recorded URLs.  The record
lives in this process only and is never serialized, so saving and reloading a manifest drops it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

_SCANNED: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def record_scanned(manifest: Any, urls: Iterable[str] | None = None) -> None:
    """Record that this process read ``urls`` (default: all the manifest's sources) to make it."""
    found = frozenset(s.url for s in manifest.sources) if urls is None else frozenset(urls)
    _SCANNED[manifest] = _SCANNED.get(manifest, frozenset()) | found


def scanned_sources(manifest: Any) -> tuple[str, ...]:
    """The recorded source URLs of ``manifest`` that it still references, sorted."""
    recorded = _SCANNED.get(manifest)
    if not recorded:
        return ()
    return tuple(sorted(recorded & {s.url for s in manifest.sources}))
