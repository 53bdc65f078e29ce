"""Differences between two versions, found by walking both Merkle trees.

Any subtree, array node or manifest page whose CID is equal on both sides is skipped without
being read, so the cost follows the size of the change, not of the hierarchy: for an array only
the pages whose CIDs differ are decoded, and their rows are compared with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from chunkref.manifest.table import ABSENT
from chunkref.repo.commits import ChangeSummary
from chunkref.repo.session import Session, _ArrayView, _PageRows, row_changes
from chunkref.repo.tree import (
    ArrayNode,
    GroupNode,
    TreeReader,
    array_layout,
    page_region_of,
    region_flat,
    split_flat,
)

if TYPE_CHECKING:
    from chunkref.repo.repository import Repository

__all__ = ["Diff", "diff_commits"]


@dataclass
class Diff:
    """What changed between two versions.

    Attributes
    ----------
    added, removed
        Paths of nodes (arrays and groups) only in the newer / only in the older version.
    metadata
        Paths of nodes whose metadata documents changed.
    chunks
        Per array path, the ``(n, ndim)`` grid coords of the chunks whose reference changed
        (written, deleted, or pointed elsewhere); coords are in the newer version's grid.
    """

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    metadata: list[str] = field(default_factory=list)
    chunks: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: ChangeSummary) -> Diff:
        return cls(
            sorted(summary.added),
            sorted(summary.removed),
            sorted(summary.metadata),
            {p: c.coords() for p, c in sorted(summary.chunks.items())},
        )

    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.metadata or any(len(c) for c in self.chunks.values()))

    def chunk_count(self) -> int:
        return sum(len(c) for c in self.chunks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "metadata": self.metadata,
            "chunks": {p: c.tolist() for p, c in self.chunks.items()},
        }

    def __str__(self) -> str:
        lines = [f"+ {p or '/'}" for p in self.added]
        lines += [f"- {p or '/'}" for p in self.removed]
        lines += [f"M {p or '/'}" for p in self.metadata]
        for p, c in self.chunks.items():
            shown = ", ".join(str(tuple(x)) for x in c[:8].tolist())
            more = f", ... ({len(c)} chunks)" if len(c) > 8 else ""
            lines.append(f"C {p}: {shown}{more}")
        return "\n".join(lines) if lines else "(no changes)"


#: How far back along ``b``'s first parents the change summaries are used to find ``a``.
_SUMMARY_WALK = 64


def _candidates(repo: Repository, a: str, b: str) -> dict[str, np.ndarray] | None:
    """Chunks the commits from ``a`` (exclusive) to ``b`` wrote, per array, when ``a`` is a
    near first-parent ancestor of ``b`` (None otherwise): only those rows need comparing."""
    out: dict[str, list[np.ndarray]] = {}
    grids: dict[str, set[tuple[int, ...]]] = {}
    layout: set[str] = set()
    cur: str | None = b
    for _ in range(_SUMMARY_WALK):
        if cur == a:
            break
        if cur is None:
            return None
        c = repo.commit_info(cur)
        if c.changes is None:
            return None
        s = repo.change_summary(c.changes)
        for p, ch in s.chunks.items():
            out.setdefault(p, []).append(ch.flat)
            grids.setdefault(p, set()).add(ch.grid_shape)
        layout.update(p for p, lay in s.metadata.items() if lay)
        layout.update(s.added)
        layout.update(s.removed)
        cur = c.parent
    else:
        return None
    return {
        p: np.unique(np.concatenate(v))
        for p, v in out.items()
        if p not in layout and len(grids[p]) == 1
    } | {p: None for p in layout}  # type: ignore[dict-item]


def diff_commits(repo: Repository, a: str, b: str) -> Diff:
    """The :class:`Diff` from commit ``a`` to commit ``b`` (any two commits).

    When ``a`` is a recent first-parent ancestor of ``b``, the change summaries in between say
    which chunks may differ and only those rows of the changed pages are compared; otherwise
    whole changed pages are.  Either way, equal subtrees and pages are skipped by CID.
    """
    ca, cb = repo.commit_info(a), repo.commit_info(b)
    cands = _candidates(repo, a, b)
    if cands is None:
        cands = _candidates(repo, b, a)  # the same set of chunks, seen from the other side
    ta, tb = TreeReader(repo.objects, ca.root), TreeReader(repo.objects, cb.root)
    out = Diff()

    def subtree(t: TreeReader, path: str, into: list[str]) -> None:
        into.extend(p for p, _, _ in t.walk(path))

    def walk(path: str) -> None:
        ha, hb = ta.node(path), tb.node(path)
        if ha is not None and hb is not None and ha[0] == hb[0]:
            return
        if ha is None:
            subtree(tb, path, out.added)
            return
        if hb is None:
            subtree(ta, path, out.removed)
            return
        na, nb = ha[1], hb[1]
        if type(na) is not type(nb):
            subtree(ta, path, out.removed)
            subtree(tb, path, out.added)
            return
        if na.documents != nb.documents:
            out.metadata.append(path)
        if isinstance(na, GroupNode) and isinstance(nb, GroupNode):
            for name in sorted(set(na.children) | set(nb.children)):
                walk(f"{path}/{name}" if path else name)
            return
        assert isinstance(na, ArrayNode) and isinstance(nb, ArrayNode)
        if cands is not None and path not in cands:
            return  # no commit in between wrote chunks of this array (metadata only)
        coords = _array_diff(repo, a, path, na, nb, None if cands is None else cands.get(path))
        if coords.size:
            out.chunks[path] = coords

    walk("")
    return out


def _present_coords(repo: Repository, path: str, node: ArrayNode) -> np.ndarray:
    layout = array_layout(node.documents, path, node.page_shape)
    want = [c for c in node.pages if c is not None]
    tables = dict(zip(want, repo.pages.get_many(want)))
    parts = []
    for p, pc in enumerate(node.pages):
        if pc is None:
            continue
        flat = region_flat(layout.grid_shape, page_region_of(layout, p))
        parts.append(flat[tables[pc].length != ABSENT])
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return _coords(layout.grid_shape, np.sort(flat))


def _coords(grid: tuple[int, ...], flat: np.ndarray) -> np.ndarray:
    if not grid:
        return np.zeros((flat.size, 0), np.int64)
    return np.stack(np.unravel_index(flat, grid), axis=1).astype(np.int64)


def _array_diff(
    repo: Repository, a: str, path: str, na: ArrayNode, nb: ArrayNode, candidates: np.ndarray | None = None
) -> np.ndarray:
    la = array_layout(na.documents, path, na.page_shape)
    lb = array_layout(nb.documents, path, nb.page_shape)
    if la.layout_key != lb.layout_key:
        # Different chunking or codecs: every chunk of either side changed meaning.
        both = np.concatenate([_present_coords(repo, path, na), _present_coords(repo, path, nb)])
        return np.unique(both, axis=0) if both.size else both
    parts = []
    if la.grid_shape == lb.grid_shape and la.page_shape == lb.page_shape:
        pages = [p for p in range(lb.npages) if na.pages[p] != nb.pages[p]]
        want = sorted({c for p in pages for c in (na.pages[p], nb.pages[p]) if c is not None})
        tables = dict(zip(want, repo.pages.get_many(want)))

        def rows(c: str | None) -> _PageRows | None:
            return None if c is None else _PageRows(tables[c], list(tables[c].urls))

        if candidates is not None:
            cpage, clocal = split_flat(lb.grid_shape, lb.page_shape, candidates)
            for p in pages:
                here = cpage == p
                locs = clocal[here]
                n = tables[nb.pages[p] or na.pages[p]].nchunks  # type: ignore[index]
                changed = row_changes(rows(na.pages[p]), rows(nb.pages[p]), n, locs)
                parts.append(candidates[here][changed])
        else:
            for p in pages:
                flat = region_flat(lb.grid_shape, page_region_of(lb, p))
                changed = row_changes(rows(na.pages[p]), rows(nb.pages[p]), flat.size)
                parts.append(flat[changed])
    else:
        # Resized: compare b's pages with a's references gathered by chunk coords.
        s = Session(repo, a, read_only=True)
        view = _ArrayView(path, lb, la, na.pages)
        want = [c for c in nb.pages if c is not None]
        tables = dict(zip(want, repo.pages.get_many(want)))
        for p in range(lb.npages):
            old = s._page_rows(view, p)
            pc = nb.pages[p]
            new = None if pc is None else _PageRows(tables[pc], list(tables[pc].urls))
            flat = region_flat(lb.grid_shape, page_region_of(lb, p))
            changed = row_changes(old, new, flat.size)
            parts.append(flat[changed])
        # Chunks of a outside b's grid were removed by the resize.
        old = _present_coords(repo, path, na)
        if old.size and lb.grid_shape:
            outside = old[(old >= np.asarray(lb.grid_shape)).any(axis=1)]
            if outside.size:
                return np.concatenate([_coords(lb.grid_shape, np.sort(np.concatenate(parts))) if parts else
                                       np.zeros((0, len(lb.grid_shape)), np.int64), outside])
    flat = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return _coords(lb.grid_shape, flat)
