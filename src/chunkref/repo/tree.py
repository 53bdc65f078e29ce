"""The hierarchy of one version as a Merkle tree of nodes, and the pages of its arrays.

Nodes are canonical JSON objects:

* group: ``{"kind": "group", "documents": {...}, "children": {name: {"/": cid}}}``
* array: ``{"kind": "array", "documents": {...}, "page_shape": [...], "pages": [{"/": cid} | null]}``

``documents`` are the node's Zarr metadata documents by name (``zarr.json``; or ``.zarray`` /
``.zgroup`` / ``.zattrs`` for Zarr v2), as JSON.  ``pages`` lists, in C order over the page grid,
the CID of each manifest page of the array's chunk table (:mod:`chunkref.manifest.pages`; null =
a page without chunks).  A page covers a grid-aligned region of ``page_shape`` chunks; for a
sharded array the table is over the shard grid, a shard being the unit of storage.

Because children and pages are named by content, a commit rewrites only the pages it touched, the
arrays holding them and the groups above: every other node and page is shared with the parent
version, and a diff skips any subtree or page whose CID is equal on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chunkref.errors import InvalidArgumentError, ManifestError, MetadataError
from chunkref.manifest.manifest import DOCUMENT_NAMES, expected_grid_shape, node_kind
from chunkref.manifest.pages import PageTable, decode_page, default_page_shape, page_grid_shape, page_region
from chunkref.manifest.table import ABSENT, INLINE, NATIVE
from chunkref.repo.objects import _LRU, ObjectStore, link, unlink
from chunkref.zarr.keys import ChunkKeyEncoding, parse_chunk_key_encoding

__all__ = [
    "ArrayNode",
    "GroupNode",
    "PageCache",
    "TreeReader",
    "array_layout",
    "decode_node",
    "encode_node",
    "split_flat",
]

#: Chunks per manifest page in repositories (a repository setting; a quarter of it for arrays
#: whose chunks are small enough to be inlined; see docs/architecture.md).
DEFAULT_REPO_PAGE_CHUNKS = 4096


@dataclass(frozen=True)
class GroupNode:
    documents: dict[str, Any]
    children: dict[str, str] = field(default_factory=dict)

    kind = "group"


@dataclass(frozen=True)
class ArrayNode:
    documents: dict[str, Any]
    page_shape: tuple[int, ...]
    pages: tuple[str | None, ...]

    kind = "array"


Node = GroupNode | ArrayNode


def encode_node(node: Node) -> dict[str, Any]:
    """The canonical JSON document of a node."""
    if isinstance(node, GroupNode):
        return {
            "kind": "group",
            "documents": node.documents,
            "children": {k: link(v) for k, v in sorted(node.children.items())},
        }
    return {
        "kind": "array",
        "documents": node.documents,
        "page_shape": list(node.page_shape),
        "pages": [None if p is None else link(p) for p in node.pages],
    }


def decode_node(doc: Any, where: str) -> Node:
    """A node from its JSON document (errors name the object)."""
    if not isinstance(doc, dict) or doc.get("kind") not in ("group", "array"):
        raise InvalidArgumentError(f"object {where} is not a node")
    docs = doc.get("documents")
    if not isinstance(docs, dict) or set(docs) - DOCUMENT_NAMES:
        raise InvalidArgumentError(f"node {where}: bad 'documents' field")
    if doc["kind"] == "group":
        children = doc.get("children", {})
        if not isinstance(children, dict):
            raise InvalidArgumentError(f"node {where}: bad 'children' field")
        return GroupNode(docs, {str(k): unlink(v, f"node {where} child {k!r}") for k, v in children.items()})
    try:
        page_shape = tuple(int(p) for p in doc["page_shape"])
        pages = tuple(None if p is None else unlink(p, f"node {where} pages") for p in doc["pages"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"node {where}: bad 'page_shape' or 'pages' field ({exc!r})") from exc
    return ArrayNode(docs, page_shape, pages)


def is_array_documents(documents: Mapping[str, Any], path: str) -> bool:
    return node_kind(documents, path) == "array"


@dataclass(frozen=True)
class ArrayLayout:
    """What locating a chunk of an array needs: grid, page shape, key encoding."""

    grid_shape: tuple[int, ...]
    page_shape: tuple[int, ...]
    encoding: ChunkKeyEncoding
    layout_key: str  # metadata other than shape/attributes (chunks survive only when equal)

    @property
    def page_grid(self) -> tuple[int, ...]:
        return page_grid_shape(self.grid_shape, self.page_shape)

    @property
    def npages(self) -> int:
        return math.prod(self.page_grid)


def _layout_key(documents: Mapping[str, Any]) -> str:
    import json

    if "zarr.json" in documents:
        doc = {k: v for k, v in documents["zarr.json"].items() if k not in ("shape", "attributes")}
        grid = doc.get("chunk_grid")
        if isinstance(grid, dict) and grid.get("name") == "rectilinear":
            # Edges depend on the shape; compare everything but them.
            doc["chunk_grid"] = {"name": "rectilinear"}
    else:
        doc = {k: v for k, v in (documents.get(".zarray") or {}).items() if k != "shape"}
    return json.dumps(doc, sort_keys=True, default=str)


_LAYOUTS = _LRU(1 << 12)


def array_layout(
    documents: Mapping[str, Any], path: str, page_shape: Sequence[int] | None = None, page_chunks: int = DEFAULT_REPO_PAGE_CHUNKS
) -> ArrayLayout:
    """The :class:`ArrayLayout` of an array's metadata documents (cached by content)."""
    import json

    key = json.dumps([documents, None if page_shape is None else list(page_shape), page_chunks], sort_keys=True,
                     default=str)
    hit = _LAYOUTS.get(key)
    if hit is None:
        hit = _array_layout(documents, path, page_shape, page_chunks)
        _LAYOUTS.put(key, hit)
    return hit


def _array_layout(
    documents: Mapping[str, Any], path: str, page_shape: Sequence[int] | None, page_chunks: int
) -> ArrayLayout:
    try:
        grid = expected_grid_shape(documents, path)
        if "zarr.json" in documents:
            enc = parse_chunk_key_encoding(documents["zarr.json"].get("chunk_key_encoding", "default"))
        else:
            enc = ChunkKeyEncoding.from_dimension_separator((documents.get(".zarray") or {}).get("dimension_separator"))
    except (ManifestError, MetadataError) as exc:
        raise MetadataError(f"array {path!r}: {exc}") from exc
    ps = tuple(int(p) for p in page_shape) if page_shape is not None else default_page_shape(grid, page_chunks)
    if len(ps) != len(grid):
        ps = default_page_shape(grid, page_chunks)
    return ArrayLayout(grid, ps, enc, _layout_key(documents))


def split_flat(grid_shape: Sequence[int], page_shape: Sequence[int], flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(page index, index inside the page)`` of flat chunk indices (vectorised)."""
    flat = np.asarray(flat, dtype=np.int64).reshape(-1)
    grid = tuple(int(g) for g in grid_shape)
    if not grid:
        z = np.zeros(flat.size, np.int64)
        return z, z.copy()
    ps = np.asarray(page_shape, np.int64)
    coords = np.stack(np.unravel_index(flat, grid), axis=1)
    pcoords = coords // ps
    inner = coords - pcoords * ps
    pgrid = page_grid_shape(grid, page_shape)
    page = np.ravel_multi_index(tuple(pcoords.T), pgrid).astype(np.int64)
    # Region shape of each page (edge pages are clipped).
    rshape = np.minimum(ps, np.asarray(grid, np.int64) - pcoords * ps)
    local = np.zeros(flat.size, np.int64)
    for axis in range(len(grid)):
        local = local * rshape[:, axis] + inner[:, axis]
    return page, local


def page_coords(page_grid: Sequence[int], page: int) -> tuple[int, ...]:
    return tuple(int(c) for c in np.unravel_index(page, tuple(page_grid))) if page_grid else ()


def region_flat(grid_shape: Sequence[int], region: Sequence[slice]) -> np.ndarray:
    """Flat grid indices of a region, in the region's C order."""
    grid = tuple(int(g) for g in grid_shape)
    if not grid:
        return np.zeros(1, np.int64)
    axes = [np.arange(s.start, s.stop, dtype=np.int64) for s in region]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.ravel_multi_index(tuple(m.reshape(-1) for m in mesh), grid).astype(np.int64)


class PageCache:
    """Decoded pages by CID (verified against the CID when read; bounded by bytes)."""

    def __init__(self, objects: ObjectStore, capacity_bytes: int = 256 << 20) -> None:
        self.objects = objects
        self._cache = _LRU(capacity_bytes)
        self._cid_strings = _LRU(1 << 12)

    def get(self, cid: str) -> PageTable:
        return self.get_many([cid])[0]

    def get_many(self, cids: Sequence[str]) -> list[PageTable]:
        out: list[Any] = [self._cache.get(c) for c in cids]
        todo = sorted({c for c, p in zip(cids, out) if p is None})
        if todo:
            blobs = self.objects.get_many(todo, verify=True, what=["manifest page"] * len(todo))
            fresh: dict[str, PageTable] = {}
            for c, blob in zip(todo, blobs):
                try:
                    page = decode_page(blob)
                except ManifestError as exc:
                    raise ManifestError(f"repository page {c}: {exc}") from exc
                self._cache.put(c, page, _page_cost(page))
                fresh[c] = page
            out = [fresh[c] if p is None else p for c, p in zip(cids, out)]
        return out

    def cid_string(self, cid: str, page: PageTable, loc: int) -> str:
        """CID string of the native chunk at local index ``loc`` of a page."""
        full = self._cid_strings.get(cid)
        if full is not None:
            return full[loc]
        return cid_strings_of(page.cid[loc : loc + 1])[0]  # type: ignore[index]

    def cid_strings(self, cid: str, page: PageTable) -> list[str | None]:
        """CID strings of a page's native chunks (by local index; None elsewhere), cached."""
        hit = self._cid_strings.get(cid)
        if hit is not None:
            return hit
        out: list[str | None] = [None] * page.nchunks
        if page.cid is not None:
            native = np.nonzero((page.source == NATIVE) & (page.length != ABSENT))[0]
            if native.size:
                for k, text in zip(native.tolist(), cid_strings_of(page.cid[native])):
                    out[k] = text
        self._cid_strings.put(cid, out)
        return out


_B32 = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz234567", np.uint8)


def cid_strings_of(rows: np.ndarray) -> list[str]:
    """Multibase ``b`` strings of binary CIDs given as ``(n, width)`` uint8 rows (vectorised).

    Same result as :func:`chunkref.manifest.cid.cid_to_string` per row, without a Python-level
    base32 call per CID (``base64.b32encode`` is pure Python: ~3 us per CID).
    """
    n, width = rows.shape
    if n == 0:
        return []
    groups = -(-width // 5)
    padded = np.zeros((n, groups * 5), np.uint64)
    padded[:, :width] = rows
    g = padded.reshape(n, groups, 5)
    value = (g[..., 0] << 32) | (g[..., 1] << 24) | (g[..., 2] << 16) | (g[..., 3] << 8) | g[..., 4]
    shifts = np.arange(35, -1, -5, dtype=np.uint64)
    idx = (value[..., None] >> shifts) & np.uint64(31)
    chars = _B32[idx.reshape(n, groups * 8)]
    nchars = (width * 8 + 4) // 5
    text = np.ascontiguousarray(chars[:, :nchars]).tobytes().decode("ascii")
    return ["b" + text[i * nchars : (i + 1) * nchars] for i in range(n)]


def _page_cost(page: PageTable) -> int:
    n = page.nchunks
    cost = 24 * n + sum(len(v) for v in page.inline.values())
    if page.cid is not None:
        cost += page.cid.nbytes
    return cost + 256


class TreeReader:
    """Read-only access to the nodes of one version (cached by path and CID)."""

    def __init__(self, objects: ObjectStore, root: str) -> None:
        self.objects = objects
        self.root = root
        self._by_path: dict[str, tuple[str, Node] | None] = {}

    def node_cid(self, path: str) -> str | None:
        hit = self.node(path)
        return None if hit is None else hit[0]

    def node(self, path: str) -> tuple[str, Node] | None:
        """``(cid, node)`` at ``path`` (``""`` is the root), or None."""
        if path in self._by_path:
            return self._by_path[path]
        if path == "":
            found: tuple[str, Node] | None = (self.root, self.load(self.root))
        else:
            parent, _, name = path.rpartition("/")
            up = self.node(parent)
            if up is None or not isinstance(up[1], GroupNode) or name not in up[1].children:
                found = None
            else:
                cid = up[1].children[name]
                found = (cid, self.load(cid, path))
        self._by_path[path] = found
        return found

    def load(self, cid: str, path: str = "") -> Node:
        hit = self.objects.decoded.get(cid)
        if hit is None:
            hit = decode_node(self.objects.get_json(cid, f"node {path or '/'!r}"), cid)
            self.objects.decoded.put(cid, hit)
        return hit

    def walk(self, path: str = "") -> Iterator[tuple[str, str, Node]]:
        """Every ``(path, cid, node)`` at and below ``path``, parents first."""
        top = self.node(path)
        if top is None:
            return
        stack = [(path, top[0], top[1])]
        while stack:
            p, cid, node = stack.pop()
            yield p, cid, node
            if isinstance(node, GroupNode):
                names = sorted(node.children)
                cids = [node.children[n] for n in names]
                docs = self.objects.get_json_many(cids)
                for n, c, d in zip(reversed(names), reversed(cids), reversed(docs)):
                    child = f"{p}/{n}" if p else n
                    nd = decode_node(d, c)
                    self._by_path[child] = (c, nd)
                    stack.append((child, c, nd))


def page_region_of(layout: ArrayLayout, page: int) -> tuple[slice, ...]:
    return page_region(layout.grid_shape, layout.page_shape, page_coords(layout.page_grid, page))


__all__ += ["ArrayLayout", "DEFAULT_REPO_PAGE_CHUNKS", "INLINE", "page_coords", "page_region_of", "region_flat"]
