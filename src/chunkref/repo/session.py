"""Sessions: a view of one version plus uncommitted changes, and the commit protocol.

A :class:`Session` reads one commit (its *base*) and, when writable, records changes in a
:class:`~chunkref.repo.changes.ChangeSet`.  ``session.store`` is a chunkref
:class:`~chunkref.storage.base.Store` (:class:`~chunkref.repo.store.SessionStore`), so the Zarr
engine (``chunkref.open_group(session.store, mode="a")``) and, through
:mod:`chunkref.repo.zarr_adapter`, zarr-python and xarray read and write it.

Commit
------
:meth:`Session.commit` builds the new tree from the base tree and the change set — only pages
with written chunks, the arrays holding them and the groups above are new objects — and writes,
in this order: a journal entry naming every new object (so GC finds them if we crash), pages,
nodes, the change summary, the commit object, and finally the branch's next ref file
(create-only).  A crash before the ref leaves only unreachable objects.

If another writer advanced the branch first, the session reads the change summaries of the
commits in between: if one of them carries this session's id, our earlier attempt did land (the
acknowledgement was lost) and its CID is returned; if their changes and ours do not overlap, the
tree is rebuilt on the new tip and the commit retried (with jittered backoff); otherwise
:class:`~chunkref.errors.ConflictError` names the arrays and chunks.
"""

from __future__ import annotations

import getpass
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from chunkref._threads import map_batched
from chunkref.errors import (
    ConflictError,
    InvalidArgumentError,
    ManifestError,
    MetadataError,
    ReadOnlyError,
)
from chunkref.manifest.cid import cid_from_string
from chunkref.manifest.manifest import V2_ARRAY_DOC, V2_ATTRS_DOC, V2_GROUP_DOC, V3_DOC, node_kind
from chunkref.manifest.pages import encode_page, page_grid_shape
from chunkref.manifest.table import ABSENT, CID_WIDTH, INLINE, NATIVE, WHOLE, ChunkTable
from chunkref.repo.changes import ChangeSet, Imported, find_conflicts, merge_changes
from chunkref.repo.commits import ArrayChange, ChangeSummary, Commit
from chunkref.repo.objects import DAG_JSON, RAW, encode_json
from chunkref.repo.refs import utcnow
from chunkref.repo.tree import (
    ArrayLayout,
    ArrayNode,
    GroupNode,
    TreeReader,
    array_layout,
    encode_node,
    page_coords,
    page_region_of,
    region_flat,
    split_flat,
)

if TYPE_CHECKING:
    from chunkref.repo.repository import Repository
    from chunkref.repo.store import SessionStore

__all__ = ["Session", "row_changes"]

MAIN_DOCS = (V3_DOC, V2_ARRAY_DOC, V2_GROUP_DOC)
JOURNAL_PREFIX = "txn/"

Entry = tuple | None


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _has_main(docs: dict[str, Any] | None) -> bool:
    return bool(docs) and any(n in docs for n in MAIN_DOCS)


@dataclass(frozen=True)
class _ArrayView:
    path: str
    layout: ArrayLayout
    base_layout: ArrayLayout | None
    base_pages: tuple[str | None, ...] | None


@dataclass
class _PageRows:
    """A page's references as mutable columns (page-local URL list)."""

    table: ChunkTable
    urls: list[str]


def row_changes(a: _PageRows | None, b: _PageRows | None, n: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Which of ``n`` page positions (or of the positions ``rows``) differ between ``a`` and ``b``."""
    sel = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    m = sel.size

    def cols(p: _PageRows | None) -> tuple[Any, ...]:
        if p is None:
            return (np.full(m, ABSENT, np.uint64), np.zeros(m, np.int64), np.zeros(m, np.uint64), None, {}, [])
        t = p.table
        if rows is None:
            return (t.length, t.source.astype(np.int64), t.offset, t.cid, t.inline, p.urls)
        cid = None if t.cid is None else t.cid[sel]
        return (t.length[sel], t.source[sel].astype(np.int64), t.offset[sel], cid, t.inline, p.urls)

    la, sa, oa, ca, ia, ua = cols(a)
    lb, sb, ob, cb, ib, ub = cols(b)
    diff = la != lb
    both = ~diff & (la != ABSENT)
    union: dict[str, int] = {}
    for u in list(ua) + list(ub):
        union.setdefault(u, len(union))

    def keyed(src: np.ndarray, urls: list[str]) -> np.ndarray:
        if not urls:
            return src
        k = np.fromiter((union[u] for u in urls), np.int64, len(urls))
        return np.where(src >= 0, k[np.clip(src, 0, len(urls) - 1)], src)

    ka, kb = keyed(sa, ua), keyed(sb, ub)
    diff |= both & (ka != kb)
    carry = both & (ka != INLINE)
    diff |= carry & (oa != ob)
    if ca is not None or cb is not None:
        w = (ca if ca is not None else cb).shape[1]
        za = ca if ca is not None else np.zeros((m, w), np.uint8)
        zb = cb if cb is not None else np.zeros((m, w), np.uint8)
        if za.shape[1] != zb.shape[1]:
            diff |= both
        else:
            diff |= both & (za != zb).any(axis=1)
    inl = np.nonzero(both & (ka == INLINE))[0]
    if inl.size:
        # Equal lengths here (a length difference is already a change): compare the inline
        # bytes of all rows at once, segment by segment.
        pos = sel[inl].tolist()
        a_bytes = np.frombuffer(b"".join([ia[i] for i in pos]), np.uint8)
        b_bytes = np.frombuffer(b"".join([ib[i] for i in pos]), np.uint8)
        lens = la[inl].astype(np.int64)
        nonempty = lens > 0
        if a_bytes.size and nonempty.any():
            starts = np.concatenate(([0], np.cumsum(lens)[:-1]))[nonempty]
            differs = np.add.reduceat((a_bytes != b_bytes).astype(np.int64), starts) > 0
            diff[inl[nonempty][differs]] = True
    return diff


class Session:
    """A view of one commit plus uncommitted changes (see the module docstring).

    Get one from :meth:`Repository.readonly_session` or :meth:`Repository.writable_session`.
    Sessions pickle (their change set travels; chunk bytes are already in the object store).
    """

    def __init__(
        self,
        repo: Repository,
        base: str,
        *,
        branch: str | None = None,
        read_only: bool = True,
        verify: bool = False,
        changes: ChangeSet | None = None,
        session_id: str | None = None,
        inherited: ChangeSet | None = None,
    ) -> None:
        self.repo = repo
        self._branch = branch
        self._read_only = read_only
        self.verify = bool(verify)
        self.changes = changes if changes is not None else ChangeSet()
        self.session_id = session_id or uuid.uuid4().hex
        # A fork remembers what it inherited, so merge() takes only what it added.
        self._inherited = inherited
        self._set_base(base)
        self._store: SessionStore | None = None
        #: Test hook: called with the name of each commit step after it completes.
        self._commit_hook: Callable[[str], None] | None = None

    def _set_base(self, base: str) -> None:
        self._base = base
        self._commit = self.repo.commit_info(base)
        self._tree = TreeReader(self.repo.objects, self._commit.root)
        self._invalidate()

    def _invalidate(self) -> None:
        self._views: dict[str, _ArrayView | None] = {}
        self._version = getattr(self, "_version", 0) + 1

    # -- pickling --------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "base": self._base,
            "branch": self._branch,
            "read_only": self._read_only,
            "verify": self.verify,
            "changes": self.changes,
            "session_id": self.session_id,
            "inherited": self._inherited,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["repo"],
            state["base"],
            branch=state["branch"],
            read_only=state["read_only"],
            verify=state["verify"],
            changes=state["changes"],
            session_id=state["session_id"],
            inherited=state["inherited"],
        )

    def __repr__(self) -> str:
        mode = "read-only" if self._read_only else ("fork" if self.is_fork else "writable")
        return f"Session({mode}, branch={self._branch!r}, base={self._base})"

    # -- properties ------------------------------------------------------------------------------

    @property
    def base_commit(self) -> str:
        """The commit this session reads (and, when writable, commits on top of)."""
        return self._base

    @property
    def branch(self) -> str | None:
        return self._branch

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def is_fork(self) -> bool:
        return self._inherited is not None

    @property
    def has_uncommitted_changes(self) -> bool:
        return not self.changes.is_empty()

    @property
    def store(self) -> SessionStore:
        """This session as a chunkref Store (read-only for read-only sessions)."""
        if self._store is None:
            from chunkref.repo.store import SessionStore

            self._store = SessionStore(self)
        return self._store

    def zarr_store(self) -> Any:
        """This session as a zarr-python store (needs the ``zarr`` package)."""
        from chunkref.repo.zarr_adapter import ZarrStoreAdapter

        return ZarrStoreAdapter(self.store)

    def _check_writable(self, what: str) -> None:
        if self._read_only:
            raise ReadOnlyError(f"cannot {what}: the session is read-only")

    # -- the current view --------------------------------------------------------------------------

    def _hidden(self, path: str) -> bool:
        """Whether the base node at ``path`` is hidden by a removal in this session."""
        removed = self.changes.removed
        if not removed:
            return False
        p = path
        while True:
            if p in removed:
                return True
            if p == "":
                return False
            p = _parent(p)

    def raw_documents(self, path: str) -> dict[str, Any] | None:
        """The metadata documents at ``path`` in the current view (None: no such node)."""
        docs = self.changes.docs.get(path)
        if docs is not None:
            return docs
        if self._hidden(path):
            return None
        hit = self._tree.node(path)
        return None if hit is None else hit[1].documents

    def _has_descendants(self, path: str) -> bool:
        for d in (self.changes.docs, self.changes.chunks, self.changes.imported):
            for p in d:
                if p != path and (path == "" or p.startswith(path + "/")):
                    return True
        return False

    def node_kind(self, path: str) -> str | None:
        """``"array"``, ``"group"`` or None in the current view (implicit groups count)."""
        docs = self.raw_documents(path)
        if _has_main(docs):
            return node_kind(docs, path)  # type: ignore[arg-type]
        if path == "":
            return "group"
        if docs is not None and path not in self.changes.docs:
            return "group"  # a committed implicit group
        return "group" if self._has_descendants(path) else None

    def children(self, path: str) -> list[str]:
        """Names of the child nodes of the group at ``path``."""
        names: set[str] = set()
        if not self._hidden(path):
            hit = self._tree.node(path)
            if hit is not None and isinstance(hit[1], GroupNode):
                for n in hit[1].children:
                    if not self._hidden(_join(path, n)):
                        names.add(n)
        plen = len(path) + 1 if path else 0
        for d in (self.changes.docs, self.changes.chunks, self.changes.imported):
            for p in d:
                if p != path and (path == "" or p.startswith(path + "/")):
                    names.add(p[plen:].split("/", 1)[0])
        return sorted(n for n in names if self.node_kind(_join(path, n)) is not None)

    def iter_nodes(self, path: str = "") -> Iterator[tuple[str, str]]:
        """Every ``(path, kind)`` at and below ``path`` in the current view, parents first."""
        kind = self.node_kind(path)
        if kind is None:
            return
        stack = [(path, kind)]
        while stack:
            p, k = stack.pop()
            yield p, k
            if k == "group":
                for n in reversed(self.children(p)):
                    c = _join(p, n)
                    ck = self.node_kind(c)
                    if ck is not None:
                        stack.append((c, ck))

    def array_view(self, path: str) -> _ArrayView | None:
        """Layout and committed pages of the array at ``path`` (None if it is not an array)."""
        if path in self._views:
            return self._views[path]
        docs = self.raw_documents(path)
        view = None
        if _has_main(docs) and node_kind(docs, path) == "array":  # type: ignore[arg-type]
            base_layout = None
            base_pages = None
            imp = self.changes.imported.get(path)
            if imp is not None:
                enc = array_layout(docs, path).encoding  # type: ignore[arg-type]
                base_layout = ArrayLayout(imp.grid_shape, imp.page_shape, enc, imp.layout_key)
                base_pages = imp.pages
            elif not self._hidden(path):
                hit = self._tree.node(path)
                if hit is not None and isinstance(hit[1], ArrayNode):
                    base_layout = array_layout(hit[1].documents, path, hit[1].page_shape)
                    base_pages = hit[1].pages
            cur = array_layout(
                docs,  # type: ignore[arg-type]
                path,
                base_layout.page_shape if base_layout is not None else None,
                self._page_target(docs, path),  # type: ignore[arg-type]
            )
            if base_layout is not None and base_layout.layout_key != cur.layout_key:
                base_layout, base_pages = None, None  # chunk layout changed: old chunks do not apply
            view = _ArrayView(path, cur, base_layout, base_pages)
        self._views[path] = view
        return view

    def _page_target(self, docs: dict[str, Any], path: str) -> int:
        """Chunks per page for a new array: a quarter of the setting when its chunks are small
        enough to be inlined, so that a page (which then carries the chunk bytes) stays small
        and rewriting or comparing one stays cheap."""
        target = self.repo.page_chunks
        limit = self.repo.inline_threshold
        if limit <= 0:
            return target
        try:
            from chunkref.zarr.metadata import parse_node

            meta = parse_node(docs, path, validate_codecs=False)
            shape = meta.chunk_grid.chunk_shape_at((0,) * meta.chunk_grid.ndim)
            nbytes = int(np.prod(shape, dtype=np.int64)) * max(1, meta.dtype.itemsize)
        except Exception:  # noqa: BLE001 - an estimate only; odd metadata keeps the default
            return target
        return max(1, target // 4) if nbytes <= limit else target

    # -- chunk lookups ---------------------------------------------------------------------------

    def _base_rows(self, view: _ArrayView, flat: np.ndarray) -> list[Entry]:
        """Committed entries of current-grid flat indices."""
        n = flat.size
        out: list[Entry] = [None] * n
        if view.base_pages is None or n == 0:
            return out
        bl = view.base_layout
        assert bl is not None
        if bl.grid_shape == view.layout.grid_shape:
            bflat = flat
            idx = np.arange(n)
        else:
            grid = view.layout.grid_shape
            coords = np.stack(np.unravel_index(flat, grid), axis=1) if grid else np.zeros((n, 0), np.int64)
            inside = (coords < np.asarray(bl.grid_shape, np.int64)).all(axis=1) if grid else np.ones(n, bool)
            idx = np.nonzero(inside)[0]
            if idx.size == 0:
                return out
            bflat = (
                np.ravel_multi_index(tuple(coords[idx].T), bl.grid_shape).astype(np.int64)
                if grid
                else np.zeros(idx.size, np.int64)
            )
        page, local = split_flat(bl.grid_shape, bl.page_shape, bflat)
        pcids = [view.base_pages[p] for p in page.tolist()]
        want = sorted({c for c in pcids if c is not None})
        if not want:
            return out
        cache = self.repo.pages
        tables = dict(zip(want, cache.get_many(want)))
        if len(pcids) > 64:
            # Many rows: convert the CIDs of their whole pages at once (vectorised, cached).
            for pc in want:
                cache.cid_strings(pc, tables[pc])
        for i, pc, loc in zip(idx.tolist(), pcids, local.tolist()):
            if pc is None:
                continue
            out[i] = _entry_of(cache, pc, tables[pc], loc)
        return out

    def resolve(self, path: str, flat: np.ndarray) -> list[Entry]:
        """Entries (see :mod:`chunkref.repo.changes`) of chunks of array ``path`` (current grid)."""
        view = self.array_view(path)
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        if view is None:
            return [None] * flat.size
        overlay = self.changes.chunks.get(path)
        if not overlay:
            return self._base_rows(view, flat)
        out: list[Entry] = [None] * flat.size
        todo = []
        for i, f in enumerate(flat.tolist()):
            if f in overlay:
                out[i] = overlay[f]
            else:
                todo.append(i)
        if todo:
            sel = np.asarray(todo, np.int64)
            for i, e in zip(todo, self._base_rows(view, flat[sel])):
                out[i] = e
        return out

    def present_flat(self, path: str) -> np.ndarray:
        """Flat indices of every present chunk of an array (loads all its pages)."""
        view = self.array_view(path)
        if view is None:
            return np.zeros(0, np.int64)
        grid = view.layout.grid_shape
        mask = np.zeros(int(np.prod(grid, dtype=np.int64)) if grid else 1, bool)
        if view.base_pages is not None:
            bl = view.base_layout
            assert bl is not None
            want = [c for c in view.base_pages if c is not None]
            tables = dict(zip(want, self.repo.pages.get_many(want)))
            for p, pc in enumerate(view.base_pages):
                if pc is None:
                    continue
                region = page_region_of(bl, p)
                bflat = region_flat(bl.grid_shape, region)
                present = tables[pc].length != ABSENT
                bflat = bflat[present]
                if bl.grid_shape != grid and grid:
                    coords = np.stack(np.unravel_index(bflat, bl.grid_shape), axis=1)
                    inside = (coords < np.asarray(grid, np.int64)).all(axis=1)
                    bflat = np.ravel_multi_index(tuple(coords[inside].T), grid).astype(np.int64)
                mask[bflat] = True
        for f, e in self.changes.chunks.get(path, {}).items():
            if f < mask.size:
                mask[f] = e is not None
        return np.nonzero(mask)[0]

    # -- mutations (used by the store) -------------------------------------------------------------

    def set_document(self, path: str, name: str, doc: Any) -> None:
        """Set one metadata document of the node at ``path``."""
        self._check_writable(f"write {name!r} of {path or '/'!r}")
        if not isinstance(doc, dict):
            raise MetadataError(f"{_join(path, name)!r}: a metadata document must be a JSON object")
        cur = self.raw_documents(path)
        cur_main = cur if _has_main(cur) else None
        if name == V3_DOC:
            new = {V3_DOC: doc}
        elif name in (V2_ARRAY_DOC, V2_GROUP_DOC):
            new = {k: v for k, v in (cur or {}).items() if k == V2_ATTRS_DOC}
            new[name] = doc
        else:  # .zattrs
            new = {k: v for k, v in (cur or {}).items() if k != V3_DOC}
            new[name] = doc
        try:
            new_kind = node_kind(new, path) if _has_main(new) else None
        except ManifestError as exc:
            raise MetadataError(str(exc)) from exc
        if cur_main is not None and new_kind is not None:
            old_kind = node_kind(cur_main, path)
            if old_kind != new_kind:
                self.remove_node(path)
            elif new_kind == "array":
                self._relayout_overlay(path, cur_main, new)
        self.changes.docs[path] = new
        self._invalidate()

    def _relayout_overlay(self, path: str, old_docs: dict, new_docs: dict) -> None:
        """Keep written chunks across a resize; drop them when the chunk layout changes."""
        overlay = self.changes.chunks.get(path)
        if not overlay:
            return
        old = array_layout(old_docs, path)
        new = array_layout(new_docs, path)
        if old.layout_key != new.layout_key:
            del self.changes.chunks[path]
            return
        if old.grid_shape == new.grid_shape or not new.grid_shape:
            return
        flats = np.fromiter(overlay, np.int64, len(overlay))
        coords = np.stack(np.unravel_index(flats, old.grid_shape), axis=1)
        inside = (coords < np.asarray(new.grid_shape, np.int64)).all(axis=1)
        newflat = np.ravel_multi_index(tuple(coords[inside].T), new.grid_shape).tolist()
        values = list(overlay.values())
        self.changes.chunks[path] = {nf: values[i] for nf, i in zip(newflat, np.nonzero(inside)[0].tolist())}

    def delete_document(self, path: str, name: str) -> None:
        """Delete a metadata document (deleting the main one removes the node)."""
        self._check_writable(f"delete {name!r} of {path or '/'!r}")
        if name in MAIN_DOCS:
            cur = self.raw_documents(path)
            if cur is not None and name in cur:
                self.remove_node(path)
            return
        cur = self.raw_documents(path)
        if cur is not None and name in cur:
            new = dict(cur)
            del new[name]
            self.changes.docs[path] = new
            self._invalidate()

    def remove_node(self, path: str) -> None:
        """Remove the node at ``path`` and everything below it."""
        self._check_writable(f"remove {path or '/'!r}")
        self.changes.drop_below(path)
        self.changes.removed.add(path)
        self._invalidate()

    def set_chunks(self, path: str, flat: Sequence[int], entries: Sequence[Entry]) -> None:
        """Record chunk entries of array ``path`` (flat indices in its current grid)."""
        self._check_writable(f"write chunks of {path!r}")
        overlay = self.changes.chunks.setdefault(path, {})
        for f, e in zip(flat, entries):
            overlay[int(f)] = e

    def write_journal(self, cids: Sequence[str]) -> None:
        """Record objects about to be written (GC finds them if no commit ever names them)."""
        if cids:
            key = f"{JOURNAL_PREFIX}{self.session_id}/{uuid.uuid4().hex}.json"
            self.repo.store.set(key, encode_json({"objects": sorted(set(cids))}))

    # -- import ----------------------------------------------------------------------------------

    def import_manifest(self, manifest: Any, path: str = "") -> list[str]:
        """Add a scanned manifest's nodes under ``path`` as virtual references (no bytes copied).

        Each array's chunk table becomes manifest pages (URL, offset, length and, when recorded,
        the content id of every chunk); later writes to those arrays store native chunks beside
        the virtual ones.  Returns the imported array paths.
        """
        from chunkref.manifest.manifest import Manifest

        self._check_writable("import a manifest")
        if not isinstance(manifest, Manifest):
            raise InvalidArgumentError(f"import_manifest needs a Manifest, got {type(manifest).__name__}")
        base = path.strip("/")
        urls = [s.url for s in manifest.sources]
        if manifest.location is not None:
            from chunkref.manifest.sources import resolve_url

            urls = [resolve_url(u, manifest.location) for u in urls]
        arrays = []
        for node_path in sorted(manifest.nodes, key=lambda p: (p.count("/"), p)):
            docs = manifest.nodes[node_path]
            full = _join(base, node_path) if node_path else base
            for name, doc in sorted(docs.items(), key=lambda kv: kv[0] not in MAIN_DOCS):
                self.set_document(full, name, doc)
            if node_kind(docs, node_path) != "array":
                continue
            table = manifest.tables[node_path]
            layout = array_layout(docs, full, None, self.repo.page_chunks)
            pages = []
            blobs = []
            for p in range(layout.npages):
                region = page_region_of(layout, p)
                flat = region_flat(layout.grid_shape, region)
                if not (table.take(flat)[2] != ABSENT).any():
                    pages.append(None)
                    continue
                try:
                    data = encode_page(table, region, sources=urls, hash_function=self.repo.hash_function)
                except InvalidArgumentError as exc:
                    raise ManifestError(f"array {node_path!r} of the manifest: {exc}") from exc
                blobs.append(data)
                pages.append(len(blobs) - 1)
            cids = self.repo.objects.cids(blobs, RAW)
            self.write_journal(cids)
            self.repo.objects.put_many(blobs, RAW, cids=cids)
            page_cids = tuple(None if p is None else cids[p] for p in pages)
            self.changes.chunks.pop(full, None)
            self.changes.imported[full] = Imported(layout.grid_shape, layout.page_shape, page_cids, layout.layout_key)
            self._invalidate()
            arrays.append(full)
        return arrays

    # -- building a commit -----------------------------------------------------------------------

    def _touched(self) -> set[str]:
        out: set[str] = set()
        for p in self.changes.touched_paths():
            q = p
            while True:
                out.add(q)
                if q == "":
                    break
                q = _parent(q)
            if p in self.changes.removed and p:
                out.add(_parent(p))
        return out

    def _build(self) -> tuple[str, dict[str, bytes], dict[str, bytes], ChangeSummary]:
        """Root CID, new pages and nodes (cid -> bytes) and the change summary."""
        touched = self._touched()
        pages: dict[str, bytes] = {}
        nodes: dict[str, bytes] = {}
        summary = ChangeSummary()

        def build(path: str) -> str | None:
            kind = self.node_kind(path)
            if kind is None:
                return None
            if path not in touched and not self._hidden(path) and path not in self.changes.docs:
                hit = self._tree.node(path)
                if hit is not None:
                    return hit[0]
            docs = self.raw_documents(path) or {}
            if kind == "group":
                children = {}
                for name in self.children(path):
                    c = build(_join(path, name))
                    if c is not None:
                        children[name] = c
                node: Any = GroupNode(dict(docs), children)
            else:
                node = self._build_array(path, pages, summary)
            cid, data = self.repo.objects.json_cid(encode_node(node))
            base = None if self._hidden(path) else self._tree.node(path)
            if base is None or base[0] != cid:
                nodes[cid] = data
            return cid

        root = build("")
        if root is None:  # everything removed: an implicit, empty root
            cid, data = self.repo.objects.json_cid(encode_node(GroupNode({}, {})))
            nodes[cid] = data
            root = cid
        self._summarize_nodes(summary)
        summary.objects.extend(pages)
        summary.objects.extend(nodes)
        for imp in self.changes.imported.values():
            summary.objects.extend(c for c in imp.pages if c is not None)
        for entries in self.changes.chunks.values():
            summary.objects.extend(e[1] for e in entries.values() if e is not None and e[0] == "native")
        return root, pages, nodes, summary

    def _summarize_nodes(self, summary: ChangeSummary) -> None:
        """Fill the node part of the summary: added, removed, metadata changed (layout flag)."""
        base_nodes: dict[str, Any] = {}
        for top in self.changes.removed:
            for p, _, node in self._tree.walk(top):
                base_nodes[p] = node
        candidates = set(self.changes.docs) | set(self.changes.imported)
        for p in candidates:
            hit = self._tree.node(p)
            if hit is not None:
                base_nodes.setdefault(p, hit[1])
        current = {p: k for p in set(base_nodes) | candidates if (k := self.node_kind(p)) is not None}
        summary.removed.extend(p for p in base_nodes if p not in current)
        for p, k in current.items():
            old = base_nodes.get(p)
            if old is None:
                summary.added.append(p)
                continue
            new_docs = self.raw_documents(p) or {}
            replaced = self._hidden(p) or p in self.changes.imported  # committed content dropped
            if old.documents == new_docs and not replaced:
                continue
            layout = replaced or (k == "array") != isinstance(old, ArrayNode)
            if not layout and k == "array":
                a = array_layout(old.documents, p)
                b = array_layout(new_docs, p)
                layout = a.layout_key != b.layout_key or a.grid_shape != b.grid_shape
            summary.metadata[p] = bool(layout)

    def _page_rows(self, view: _ArrayView, page: int) -> _PageRows:
        """The committed references of one page of the *current* layout."""
        layout = view.layout
        region = page_region_of(layout, page)
        rshape = tuple(s.stop - s.start for s in region)
        bl = view.base_layout
        if view.base_pages is not None and bl is not None:
            same = bl.grid_shape == layout.grid_shape and bl.page_shape == layout.page_shape
            pc = None
            if not same and bl.page_shape == layout.page_shape:
                coords = page_coords(layout.page_grid, page)
                if all(c < g for c, g in zip(coords, bl.page_grid)):
                    bp = int(np.ravel_multi_index(coords, bl.page_grid)) if coords else 0
                    if page_region_of(bl, bp) == region:
                        same, page = True, bp
            if same:
                pc = view.base_pages[page]
                if pc is None:
                    return _PageRows(ChunkTable.empty(rshape), [])
                t = self.repo.pages.get(pc)
                table = ChunkTable(rshape, t.source.copy(), t.offset.copy(), t.length.copy(),
                                   cid=None if t.cid is None else t.cid.copy())
                table.inline = dict(t.inline)
                return _PageRows(table, list(t.urls))
            # Different geometry: gather by chunk coords.
            flat = region_flat(layout.grid_shape, region)
            return self._rows_from_entries(rshape, self._base_rows(view, flat))
        return _PageRows(ChunkTable.empty(rshape), [])

    @staticmethod
    def _rows_from_entries(rshape: tuple[int, ...], entries: Sequence[Entry]) -> _PageRows:
        table = ChunkTable.empty(rshape)
        urls: list[str] = []
        for i, e in enumerate(entries):
            _apply(table, urls, i, e)
        return _PageRows(table, urls)

    def _build_array(self, path: str, pages_out: dict[str, bytes], summary: ChangeSummary) -> ArrayNode:
        view = self.array_view(path)
        assert view is not None
        layout = view.layout
        npages = layout.npages
        overlay = self.changes.chunks.get(path, {})
        bl = view.base_layout
        same_geometry = (
            view.base_pages is not None
            and bl is not None
            and bl.grid_shape == layout.grid_shape
            and bl.page_shape == layout.page_shape
        )
        dirty: dict[int, list[tuple[int, int, Entry]]] = {}
        if overlay:
            flats = np.fromiter(overlay, np.int64, len(overlay))
            entries = list(overlay.values())
            page, local = split_flat(layout.grid_shape, layout.page_shape, flats)
            for p, loc, f, e in zip(page.tolist(), local.tolist(), flats.tolist(), entries):
                dirty.setdefault(p, []).append((loc, f, e))
        known = set(view.base_pages or ())
        result: list[str | None] = []
        changed_flat: list[np.ndarray] = []
        todo: list[tuple[int, _PageRows]] = []  # (position in result, page to encode)
        for p in range(npages):
            ups = dirty.get(p)
            if same_geometry and ups is None:
                result.append(view.base_pages[p])  # type: ignore[index]
                continue
            if view.base_pages is None and ups is None:
                result.append(None)
                continue
            old = self._page_rows(view, p)
            if ups is None:
                new = old
            else:
                new = _PageRows(old.table.copy(), list(old.urls))
                for loc, _, e in ups:
                    _apply(new.table, new.urls, loc, e)
                # Only written rows can differ: compare just those.
                locs = np.fromiter((u[0] for u in ups), np.int64, len(ups))
                diff = row_changes(old, new, new.table.nchunks, locs)
                if diff.any():
                    changed_flat.append(np.fromiter((u[1] for u in ups), np.int64, len(ups))[diff])
            if not (new.table.length != ABSENT).any():
                result.append(None)
                continue
            todo.append((len(result), new))
            result.append(None)
        # Encoding (zstd) and hashing release the GIL: do the touched pages in parallel.
        hash_function = self.repo.hash_function

        def encode(batch: list[tuple[int, _PageRows]]) -> list[bytes]:
            out = []
            for _, rows in batch:
                full = tuple(slice(0, n) for n in rows.table.grid_shape)
                try:
                    out.append(encode_page(rows.table, full, sources=rows.urls, hash_function=hash_function))
                except InvalidArgumentError as exc:
                    raise ManifestError(f"array {path!r}: cannot encode a page: {exc}") from exc
            return out

        blobs = [b for part in map_batched(encode, todo) for b in part]
        cids = self.repo.objects.cids(blobs, RAW)
        for (i, _), data, cid in zip(todo, blobs, cids):
            if cid not in known:
                pages_out[cid] = data
            result[i] = cid
        if changed_flat:
            summary.chunks[path] = ArrayChange(layout.grid_shape, np.unique(np.concatenate(changed_flat)))
        docs = self.raw_documents(path) or {}
        return ArrayNode(docs, layout.page_shape, tuple(result))

    # -- commit ----------------------------------------------------------------------------------

    def _step(self, name: str) -> None:
        if self._commit_hook is not None:
            self._commit_hook(name)

    def commit(
        self,
        message: str,
        *,
        author: str | None = None,
        rebase: bool = True,
        max_tries: int = 100,
        allow_empty: bool = False,
    ) -> str:
        """Commit the changes to the session's branch; return the new commit's CID.

        Parameters
        ----------
        message
            Why.
        author
            Who (default: ``$CHUNKREF_AUTHOR`` or the login name).
        rebase
            When the branch moved since the session started, replay these changes on the new tip
            if they do not conflict (else fail at once).
        max_tries
            Attempts before giving up under heavy contention.
        allow_empty
            Commit even without changes.

        Raises
        ------
        ConflictError
            The branch moved and the changes conflict (the message names arrays and chunks), or
            ``rebase`` is False.
        """
        self._check_writable("commit")
        if self.is_fork:
            raise InvalidArgumentError("a fork cannot commit: merge it into its session (session.merge(fork))")
        if self._branch is None:
            raise InvalidArgumentError("this session has no branch to commit to")
        if not allow_empty and self.changes.is_empty():
            raise InvalidArgumentError("nothing to commit (pass allow_empty=True to commit anyway)")
        author = author if author is not None else (os.environ.get("CHUNKREF_AUTHOR") or _login())
        refs = self.repo.refs
        for attempt in range(max_tries):
            tip_entry = refs.branch_entry(self._branch)
            if tip_entry is None or tip_entry.commit is None:
                raise ConflictError(f"branch {self._branch!r} was deleted")
            if tip_entry.commit != self._base:
                landed = self._rebase_onto(tip_entry.commit, rebase)
                if landed is not None:
                    return self._finish(landed)
            root, pages, nodes, summary = self._build()
            summary_cid, summary_bytes = self.repo.objects.json_cid(summary.to_json())
            doc = Commit.document(root, (self._base,), author, utcnow(), message, self.session_id, summary_cid)
            commit_cid, commit_bytes = self.repo.objects.json_cid(doc)
            self.write_journal([*pages, *nodes, summary_cid, commit_cid])
            self._step("journal")
            objects = self.repo.objects
            if pages:
                objects.put_many(list(pages.values()), RAW, cids=list(pages))
            self._step("pages")
            if nodes:
                objects.put_many(list(nodes.values()), DAG_JSON, cids=list(nodes))
            self._step("nodes")
            objects.put_many([summary_bytes], DAG_JSON, cids=[summary_cid])
            objects.put_many([commit_bytes], DAG_JSON, cids=[commit_cid])
            self._step("commit")
            if refs.try_advance(self._branch, tip_entry, commit_cid, op="commit", session=self.session_id) is not None:
                self._step("ref")
                return self._finish(commit_cid)
            # Lost the race: back off a little (jittered) and look at what landed.
            time.sleep(random.uniform(0, min(0.5, 0.005 * (2 ** min(attempt, 7)))))
        raise ConflictError(f"could not commit to branch {self._branch!r} after {max_tries} attempts (contention)")

    def _rebase_onto(self, tip: str, allowed: bool) -> str | None:
        """Move the session's base to ``tip``; return a commit of ours already there, if any."""
        ours_root, _, _, ours = self._build()
        intervening = []
        cur: str | None = tip
        while cur is not None and cur != self._base:
            c = self.repo.commit_info(cur)
            if c.session == self.session_id:
                return cur  # our earlier attempt landed; its acknowledgement was lost
            intervening.append(c)
            cur = c.parent
        if cur is None:
            raise ConflictError(
                f"branch {self._branch!r} was reset to {tip}, which does not descend from this session's base "
                f"{self._base}: start a new session"
            )
        if not allowed:
            raise ConflictError(
                f"branch {self._branch!r} moved from {self._base} to {tip} (rebase=False)"
            )
        problems: list[str] = []
        for c in intervening:
            if c.changes is None:
                continue
            theirs = self.repo.change_summary(c.changes)
            problems.extend(f"{p} (commit {c.cid})" for p in find_conflicts(ours, theirs))
        if problems:
            raise ConflictError(f"cannot rebase onto branch {self._branch!r}: " + "; ".join(problems))
        self._set_base(tip)
        return None

    def _finish(self, commit_cid: str) -> str:
        self.changes = ChangeSet()
        self.session_id = uuid.uuid4().hex
        self._set_base(commit_cid)
        return commit_cid

    # -- status, forks ---------------------------------------------------------------------------

    def status(self) -> Any:
        """What this session changed relative to its base (a :class:`~chunkref.repo.diff.Diff`)."""
        from chunkref.repo.diff import Diff

        _, _, _, summary = self._build()
        return Diff.from_summary(summary)

    def discard_changes(self) -> None:
        """Forget every uncommitted change (written chunk objects become garbage for GC)."""
        self._check_writable("discard changes")
        self.changes = ChangeSet()
        self._invalidate()

    def fork(self) -> Session:
        """A picklable copy for a dask task: it writes chunks, then goes back to :meth:`merge`."""
        self._check_writable("fork")
        inherited = self.changes.copy()
        return Session(
            self.repo,
            self._base,
            branch=None,
            read_only=False,
            verify=self.verify,
            changes=inherited.copy(),
            session_id=self.session_id,
            inherited=inherited,
        )

    def merge(self, *forks: Session) -> None:
        """Take in the changes of forks (chunk writes of different tasks must not overlap).

        Raises
        ------
        ConflictError
            Two forks (or a fork and this session) wrote the same chunk or node differently.
        """
        self._check_writable("merge")
        for i, f in enumerate(forks):
            if not isinstance(f, Session) or f._inherited is None:
                raise InvalidArgumentError(f"merge() takes forks made by session.fork(), got {type(f).__name__}")
            if f._base != self._base:
                raise ConflictError(f"fork {i} is based on commit {f._base}, this session on {self._base}")
            merge_changes(self.changes, f.changes, f._inherited, f"fork {i}")
        self._invalidate()


def _login() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def _entry_of(cache: Any, page_cid: str, t: Any, loc: int) -> Entry:
    ln = t.length[loc]
    if ln == ABSENT:
        return None
    src = int(t.source[loc])
    if src == NATIVE:
        return ("native", cache.cid_string(page_cid, t, loc), int(ln))
    if src == INLINE:
        return ("inline", t.inline[loc])
    cid = None
    if t.cid is not None and t.cid[loc].any():
        cid = t.cid[loc].tobytes()
    return ("virtual", t.urls[src], int(t.offset[loc]), int(ln), cid)


def _apply(table: ChunkTable, urls: list[str], i: int, e: Entry) -> None:
    """Set position ``i`` of a page table to entry ``e``."""
    table.inline.pop(i, None)
    if e is None:
        table.source[i] = 0
        table.offset[i] = 0
        table.length[i] = ABSENT
        if table.cid is not None:
            table.cid[i] = 0
        return
    kind = e[0]
    if kind == "inline":
        table.inline[i] = e[1]
        table.source[i] = INLINE
        table.offset[i] = 0
        table.length[i] = len(e[1])
        if table.cid is not None:
            table.cid[i] = 0
        return
    if kind == "native":
        cid = cid_from_string(e[1])
        table.source[i] = NATIVE
        table.offset[i] = 0
        table.length[i] = int(e[2])
    else:
        _, url, off, ln, cid = e
        try:
            s = urls.index(url)
        except ValueError:
            urls.append(url)
            s = len(urls) - 1
        table.source[i] = s
        table.offset[i] = int(off)
        table.length[i] = np.uint64(ln) if ln is not None else WHOLE
    if cid is None:
        if table.cid is not None:
            table.cid[i] = 0
        return
    if table.cid is None:
        table.cid = np.zeros((table.nchunks, max(CID_WIDTH, len(cid))), np.uint8)
    table.cid[i] = 0
    table.cid[i, : len(cid)] = np.frombuffer(cid, np.uint8)


__all__ += ["page_grid_shape"]
