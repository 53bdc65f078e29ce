"""Manifest: a Zarr hierarchy whose chunks are references into other files.

A :class:`Manifest` holds

* ``nodes``: per node path (``""`` is the root) the Zarr metadata documents, by document name:
  ``{"zarr.json": {...}}`` for Zarr v3, ``{".zarray": {...}, ".zattrs": {...}}`` /
  ``{".zgroup": {...}}`` for Zarr v2;
* ``tables``: per array path a :class:`~chunkref.manifest.table.ChunkTable` over the array's chunk
  grid;
* ``sources``: the referenced files (:class:`~chunkref.manifest.sources.Source`), which the chunk
  tables index into;
* ``refused``: variables a scanner could not represent, with the reason (never silently dropped);
* ``location``: where the manifest was loaded from / saved to; relative source URLs resolve
  against it and its folder is the default authorised source prefix.

See "Manifest schema" in ``docs/architecture.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from chunkref.errors import InvalidKeyError, ManifestError, MetadataError, NodeNotFoundError
from chunkref.manifest.sources import Source
from chunkref.manifest.table import ChunkTable
from chunkref.storage.base import validate_key

__all__ = ["Manifest", "Source", "normalize_path"]

V3_DOC = "zarr.json"
V2_ARRAY_DOC = ".zarray"
V2_GROUP_DOC = ".zgroup"
V2_ATTRS_DOC = ".zattrs"
DOCUMENT_NAMES = frozenset({V3_DOC, V2_ARRAY_DOC, V2_GROUP_DOC, V2_ATTRS_DOC})


def normalize_path(path: str) -> str:
    """A node path without leading/trailing ``/`` (``""`` is the root); rejects ``..`` etc."""
    if not isinstance(path, str):
        raise ManifestError(f"node paths are str, got {type(path).__name__}: {path!r}")
    p = path.strip("/")
    if p:
        try:
            validate_key(p)
        except InvalidKeyError as exc:
            raise ManifestError(f"invalid node path {path!r}: {exc}") from exc
    return p


def _parent(path: str) -> str | None:
    if path == "":
        return None
    return path.rsplit("/", 1)[0] if "/" in path else ""


def node_kind(documents: Mapping[str, Any], path: str = "") -> str:
    """``"array"`` or ``"group"`` for a node's documents."""
    if V3_DOC in documents:
        kind = documents[V3_DOC].get("node_type") if isinstance(documents[V3_DOC], dict) else None
        if kind not in ("array", "group"):
            raise ManifestError(f"node {path!r}: zarr.json field 'node_type' must be 'array' or 'group', got {kind!r}")
        return kind
    if V2_ARRAY_DOC in documents:
        return "array"
    if V2_GROUP_DOC in documents:
        return "group"
    raise ManifestError(f"node {path!r} has no zarr.json, .zarray or .zgroup document (has {sorted(documents)})")


def node_format(documents: Mapping[str, Any]) -> int:
    """The Zarr format (2 or 3) of a node's documents."""
    return 3 if V3_DOC in documents else 2


def expected_grid_shape(documents: Mapping[str, Any], path: str = "") -> tuple[int, ...]:
    """Chunk-grid shape an array's metadata implies (what its ChunkTable must have)."""
    if V3_DOC in documents:
        doc = documents[V3_DOC]
        shape = doc.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise ManifestError(f"array {path!r}: zarr.json field 'shape' must be a list of ints, got {shape!r}")
        from chunkref.zarr.grid import parse_chunk_grid

        try:
            return parse_chunk_grid(doc.get("chunk_grid"), shape).grid_shape
        except MetadataError as exc:
            raise ManifestError(f"array {path!r}: zarr.json field 'chunk_grid': {exc}") from exc
    doc = documents.get(V2_ARRAY_DOC)
    if not isinstance(doc, dict):
        raise ManifestError(f"array {path!r} has no .zarray document")
    shape, chunks = doc.get("shape"), doc.get("chunks")
    ok_shape = isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
    ok_chunks = isinstance(chunks, list) and all(isinstance(c, int) and c > 0 for c in chunks)
    if not ok_shape:
        raise ManifestError(f"array {path!r}: .zarray field 'shape' must be a list of ints, got {shape!r}")
    if not ok_chunks or len(chunks) != len(shape):
        raise ManifestError(
            f"array {path!r}: .zarray field 'chunks' must be {len(shape)} positive ints, got {chunks!r}"
        )
    return tuple(math.ceil(s / c) for s, c in zip(shape, chunks))


class Manifest:
    """A Zarr hierarchy (metadata documents) plus chunk references (columnar tables).

    Parameters
    ----------
    location
        URL or path of the manifest file, if it has one (relative sources resolve against it).
    """

    def __init__(self, *, location: str | None = None) -> None:
        self.location: str | None = location
        self.nodes: dict[str, dict[str, dict]] = {}
        self.tables: dict[str, ChunkTable] = {}
        self.sources: list[Source] = []
        self.refused: dict[str, str] = {}
        self._source_index: dict[str, int] = {}
        #: Multihash of the content ids this manifest records (``"sha2-256"`` or ``"blake3"``):
        #: a setting of the manifest, never chosen by what happens to be installed.
        self.hash_function: str = "sha2-256"

    # -- sources ---------------------------------------------------------------------------------

    def add_source(
        self, url: str, size: int | None = None, mtime: float | None = None, etag: str | None = None
    ) -> int:
        """Index of the source ``url`` (added if new; known size/mtime/etag fill missing fields)."""
        if not isinstance(url, str) or not url:
            raise ManifestError(f"source URLs are non-empty str, got {url!r}")
        idx = self._source_index.get(url)
        if idx is None:
            idx = len(self.sources)
            self.sources.append(Source(url, size, mtime, etag))
            self._source_index[url] = idx
            return idx
        old = self.sources[idx]
        if (size, mtime, etag) != (None, None, None):
            self.sources[idx] = Source(
                url,
                old.size if size is None else size,
                old.mtime if mtime is None else mtime,
                old.etag if etag is None else etag,
            )
        return idx

    def source_index(self, url: str) -> int | None:
        """Index of a known source URL, or None."""
        return self._source_index.get(url)

    def set_sources(self, sources: list[Source]) -> None:
        """Replace the source list (tables keep their indices: the caller keeps them consistent)."""
        self.sources = list(sources)
        self._source_index = {s.url: i for i, s in enumerate(self.sources)}

    # -- nodes -----------------------------------------------------------------------------------

    def add_group(self, path: str, attributes: Mapping[str, Any] | None = None, zarr_format: int = 3) -> None:
        """Add (or update the attributes of) a group at ``path``, creating missing ancestors."""
        path = normalize_path(path)
        if zarr_format not in (2, 3):
            raise ManifestError(f"group {path!r}: zarr_format must be 2 or 3, got {zarr_format!r}")
        self._ensure_ancestors(path, zarr_format)
        existing = self.nodes.get(path)
        if existing is not None and node_kind(existing, path) == "array":
            raise ManifestError(f"cannot add group {path!r}: an array exists there")
        attrs = dict(attributes or {})
        if zarr_format == 3:
            if existing is not None and V3_DOC in existing and not attrs:
                return
            self.nodes[path] = {V3_DOC: {"zarr_format": 3, "node_type": "group", "attributes": attrs}}
        else:
            if existing is not None and V2_GROUP_DOC in existing and not attrs:
                return
            docs: dict[str, dict] = {V2_GROUP_DOC: {"zarr_format": 2}}
            if attrs:
                docs[V2_ATTRS_DOC] = attrs
            self.nodes[path] = docs

    def add_array(self, path: str, documents: Mapping[str, dict], table: ChunkTable) -> None:
        """Add an array: its metadata documents and chunk table (grid shapes must agree)."""
        path = normalize_path(path)
        if path == "":
            raise ManifestError("an array cannot be the root node of a manifest (give it a name)")
        docs = {str(k): v for k, v in documents.items()}
        unknown = set(docs) - DOCUMENT_NAMES
        if unknown:
            raise ManifestError(f"array {path!r}: unknown metadata documents {sorted(unknown)}")
        if node_kind(docs, path) != "array":
            raise ManifestError(f"array {path!r}: its documents describe a group")
        if not isinstance(table, ChunkTable):
            raise ManifestError(f"array {path!r}: table must be a ChunkTable, got {type(table).__name__}")
        grid = expected_grid_shape(docs, path)
        if grid != table.grid_shape:
            raise ManifestError(
                f"array {path!r}: chunk table grid {table.grid_shape} does not match the metadata's grid {grid}"
            )
        known = getattr(table, "sources_used", None)  # paged tables: no page loads here
        if known is not None:
            if known and int(max(known)) >= len(self.sources):
                raise ManifestError(
                    f"array {path!r}: chunk table refers to source {int(max(known))}, "
                    f"the manifest has {len(self.sources)}"
                )
        elif table.nchunks and table.present().any():
            used = table.source[(table.source >= 0) & table.present()]
            if used.size and int(used.max()) >= len(self.sources):
                raise ManifestError(
                    f"array {path!r}: chunk table refers to source {int(used.max())}, "
                    f"the manifest has {len(self.sources)}"
                )
        existing = self.nodes.get(path)
        if existing is not None and node_kind(existing, path) == "group":
            if any(k.startswith(path + "/") for k in self.nodes):
                raise ManifestError(f"cannot add array {path!r}: a group with members exists there")
        self._ensure_ancestors(path, node_format(docs))
        self.nodes[path] = docs
        self.tables[path] = table
        self.refused.pop(path, None)

    def refuse(self, path: str, reason: str) -> None:
        """Record that the variable at ``path`` could not be represented, and why."""
        self.refused[normalize_path(path)] = str(reason)

    def remove(self, path: str) -> None:
        """Remove a node and everything below it."""
        path = normalize_path(path)
        for p in [p for p in self.nodes if p == path or path == "" or p.startswith(path + "/")]:
            self.nodes.pop(p, None)
            self.tables.pop(p, None)

    def _ensure_ancestors(self, path: str, zarr_format: int) -> None:
        parent = _parent(path)
        chain = []
        while parent is not None:
            chain.append(parent)
            parent = _parent(parent)
        for p in reversed(chain):
            docs = self.nodes.get(p)
            if docs is None:
                self.add_group(p, zarr_format=zarr_format)
            elif node_kind(docs, p) == "array":
                raise ManifestError(f"cannot add {path!r}: its ancestor {p!r} is an array")

    # -- queries ---------------------------------------------------------------------------------

    def arrays(self) -> list[str]:
        """Paths of every array (sorted)."""
        return sorted(p for p, d in self.nodes.items() if node_kind(d, p) == "array")

    def groups(self) -> list[str]:
        """Paths of every group (sorted; ``""`` is the root)."""
        return sorted(p for p, d in self.nodes.items() if node_kind(d, p) == "group")

    def zarr_format(self, path: str) -> int:
        """Zarr format of the node at ``path``."""
        return node_format(self.documents(path))

    def documents(self, path: str) -> dict[str, dict]:
        """The metadata documents of the node at ``path``."""
        path = normalize_path(path)
        try:
            return self.nodes[path]
        except KeyError:
            raise NodeNotFoundError(f"no node at {path!r} in the manifest") from None

    def attributes(self, path: str) -> dict:
        """User attributes of a node (either format)."""
        docs = self.documents(path)
        if V3_DOC in docs:
            return dict(docs[V3_DOC].get("attributes") or {})
        return dict(docs.get(V2_ATTRS_DOC) or {})

    def used_sources(self) -> list[int]:
        """Indices of sources some present, non-inline chunk refers to."""
        used: set[int] = set()
        for t in self.tables.values():
            known = getattr(t, "sources_used", None)
            if known is not None:  # paged tables know their sources without loading pages
                used.update(int(s) for s in known)
                continue
            m = t.present() & (t.source >= 0)
            if m.any():
                used.update(int(s) for s in np.unique(t.source[m]))
        return sorted(used)

    @property
    def nchunks(self) -> int:
        """Number of present chunk references over all arrays."""
        total = 0
        for t in self.tables.values():
            known = getattr(t, "present_count", None)  # paged tables: known without loading
            total += int(known) if known is not None else int(t.present().sum())
        return total

    def __repr__(self) -> str:
        return (
            f"Manifest(location={self.location!r}, arrays={len(self.tables)}, groups={len(self.groups())}, "
            f"sources={len(self.sources)}, refused={len(self.refused)})"
        )

    # -- persistence -----------------------------------------------------------------------------

    def save(self, url: str, *, format: str | None = None, **storage_options: Any) -> None:
        """Write the manifest to ``url`` (fsspec URL or local path).

        Parameters
        ----------
        url
            Destination.
        format
            ``"kerchunk"``: kerchunk JSON version 1 with Zarr v2 metadata (v3 documents are
            converted; what v2 cannot express raises :class:`~chunkref.errors.ManifestError`);
            ``"parquet"``: a kerchunk parquet reference directory (needs pyarrow);
            ``"native"``: chunkref's native format, a directory with a JSON header and
            content-addressed page files (see :mod:`chunkref.manifest.native`).  Default: from
            the name: ``*.json`` (also ``.json.gz`` etc.) kerchunk, ``*.parquet`` / ``*.parq``
            parquet, anything else native.
        **storage_options
            Passed to fsspec for the destination.
        """
        fmt = format or manifest_format(url)
        if fmt == "kerchunk":
            from chunkref.manifest.kerchunk import write_kerchunk

            write_kerchunk(self, url, **storage_options)
        elif fmt == "native":
            from chunkref.manifest.native import write_native

            write_native(self, url, **storage_options)
        elif fmt == "parquet":
            from chunkref.manifest.parquet import write_parquet

            write_parquet(self, url, **storage_options)
        else:
            raise ManifestError(f"unknown manifest format {format!r}; known: 'kerchunk', 'native', 'parquet'")
        self.location = url

    @classmethod
    def load(cls, url: str, *, format: str | None = None, **storage_options: Any) -> Manifest:
        """Read a manifest from ``url``: kerchunk JSON (version 0 or 1), a kerchunk parquet
        directory, or a native manifest (only its header: chunk tables load page by page on
        first use).  ``format`` as in :meth:`save`; by default from the name, and a directory
        holding a native header is native."""
        fmt = format or manifest_format(url, storage_options, reading=True)
        if fmt == "native":
            from chunkref.manifest.native import read_native

            return read_native(url, **storage_options)
        if fmt == "parquet":
            from chunkref.manifest.parquet import read_parquet

            return read_parquet(url, **storage_options)
        if fmt != "kerchunk":
            raise ManifestError(f"unknown manifest format {format!r}; known: 'kerchunk', 'native', 'parquet'")
        from chunkref.manifest.kerchunk import read_kerchunk

        return read_kerchunk(url, **storage_options)

    # -- content ids -----------------------------------------------------------------------------

    def compute_hashes(
        self, *, progress: bool | None = None, concurrency: int | None = None, **storage_options: Any
    ) -> None:
        """Read every referenced byte range and record its content id (``hash_function``).

        See :func:`chunkref.manifest.hashing.compute_hashes` (batched, coalesced, concurrent
        reads; a progress bar on a terminal).
        """
        from chunkref.manifest.hashing import compute_hashes

        compute_hashes(self, progress=progress, concurrency=concurrency, **storage_options)

    def verify(
        self,
        *,
        allow: Any = None,
        check_content: bool = True,
        check_sources: bool = True,
        progress: bool | None = None,
        concurrency: int | None = None,
        **storage_options: Any,
    ) -> Any:
        """Check every reference against its content id and every source against its recorded
        size/mtime/ETag; returns a :class:`chunkref.manifest.hashing.VerifyReport`."""
        from chunkref.manifest.hashing import verify_manifest

        return verify_manifest(
            self,
            allow=allow,
            check_content=check_content,
            check_sources=check_sources,
            progress=progress,
            concurrency=concurrency,
            **storage_options,
        )


_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")


def manifest_format(url: str, storage_options: Mapping[str, Any] | None = None, *, reading: bool = False) -> str:
    """``"kerchunk"``, ``"parquet"`` or ``"native"`` for a manifest URL (by name; when reading, a
    directory holding a native header is native whatever its name)."""
    name = str(url).rstrip("/").lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(".json" + suffix):
            return "kerchunk"
    if name.endswith(".json"):
        return "kerchunk"
    if name.endswith((".parquet", ".parq")):
        return "parquet"
    if reading:
        from chunkref.manifest.native import is_native

        return "native" if is_native(url, **dict(storage_options or {})) else "kerchunk"
    return "native"
