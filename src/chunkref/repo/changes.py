"""A session's uncommitted changes, and how two sets of changes conflict.

:class:`ChangeSet` is small, plain and picklable: per node path the new metadata documents, the
paths whose committed subtree was removed, per array the chunks written (flat index in the
array's current grid -> entry), and arrays whose whole chunk table was replaced by an import.
Chunk *bytes* are never in it: they are written to the object store as soon as they are set, so
the change set of a dask task is a few bytes per chunk.

Chunk entries are tuples: ``("native", cid, nbytes)`` for a repository object,
``("virtual", url, offset, length, cid bytes or None)`` for a range of an outside file, or None
for a deleted chunk.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chunkref.errors import ConflictError
from chunkref.repo.commits import ChangeSummary

__all__ = ["ChangeSet", "Imported", "find_conflicts", "merge_changes"]

Entry = tuple | None


@dataclass(frozen=True)
class Imported:
    """An array whose chunk table was replaced wholesale (import of a manifest)."""

    grid_shape: tuple[int, ...]
    page_shape: tuple[int, ...]
    pages: tuple[str | None, ...]
    layout_key: str


@dataclass
class ChangeSet:
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    chunks: dict[str, dict[int, Entry]] = field(default_factory=dict)
    imported: dict[str, Imported] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (self.docs or self.removed or any(self.chunks.values()) or self.imported)

    def copy(self) -> ChangeSet:
        return ChangeSet(
            copy.deepcopy(self.docs),
            set(self.removed),
            {p: dict(c) for p, c in self.chunks.items()},
            dict(self.imported),
        )

    def touched_paths(self) -> set[str]:
        out = set(self.docs) | set(self.removed) | set(self.imported)
        out.update(p for p, c in self.chunks.items() if c)
        return out

    def drop_below(self, path: str) -> None:
        """Forget every change at or below ``path`` (its node is being removed)."""

        def below(p: str) -> bool:
            return path == "" or p == path or p.startswith(path + "/")

        for d in (self.docs, self.chunks, self.imported):
            for p in [p for p in d if below(p)]:
                del d[p]
        self.removed = {p for p in self.removed if not (below(p) and p != path)}


def _under(path: str, top: str) -> bool:
    return top == "" or path == top or path.startswith(top + "/")


def find_conflicts(ours: ChangeSummary, theirs: ChangeSummary) -> list[str]:
    """Why ``ours`` cannot be replayed on top of ``theirs`` (empty when it can).

    Disjoint chunk writes to one array never conflict; writing the same chunk, changing the same
    node's metadata, writing chunks of an array whose layout (shape, chunking, codecs) the other
    side changed, or touching anything below a node the other side removed, do.
    """
    problems: list[str] = []
    our_meta = set(ours.metadata) | set(ours.added) | set(ours.removed)
    their_meta = set(theirs.metadata) | set(theirs.added) | set(theirs.removed)
    for p in sorted(our_meta & their_meta):
        problems.append(f"node {p or '/'!r}: metadata changed (or node added/removed) on both sides")
    for mine, other, who in ((ours, theirs, "they"), (theirs, ours, "we")):
        for path in mine.chunks:
            if other.metadata.get(path):
                problems.append(f"array {path!r}: chunks written while {who} changed its shape or layout")
            for r in other.removed:
                if _under(path, r) and path not in other.added:
                    problems.append(f"array {path!r}: chunks written while {who} removed {r or '/'!r}")
        for added in mine.added:
            for r in other.removed:
                if r != added and _under(added, r):
                    problems.append(f"node {added!r}: added below {r!r}, which {who} removed")
    for path, mc in ours.chunks.items():
        tc = theirs.chunks.get(path)
        if tc is None:
            continue
        if tc.grid_shape != mc.grid_shape:
            problems.append(f"array {path!r}: written under different chunk grids {mc.grid_shape} / {tc.grid_shape}")
            continue
        both = np.intersect1d(mc.flat, tc.flat)
        if both.size:
            coords = np.stack(np.unravel_index(both[:10], mc.grid_shape), axis=1).tolist() if mc.grid_shape else [[]]
            more = f" and {both.size - 10} more" if both.size > 10 else ""
            problems.append(
                f"array {path!r}: chunks {[tuple(c) for c in coords]}{more} written by both sides"
            )
    return problems


def merge_changes(target: ChangeSet, delta: ChangeSet, base: ChangeSet, who: str) -> None:
    """Add ``delta`` (a fork's changes minus what it inherited in ``base``) into ``target``.

    Raises
    ------
    ConflictError
        A chunk or node changed differently on both sides since the fork.
    """
    problems = []
    for path, docs in delta.docs.items():
        if base.docs.get(path) == docs:
            continue
        cur = target.docs.get(path)
        if cur is not None and cur != base.docs.get(path) and cur != docs:
            problems.append(f"node {path!r}: metadata set differently by {who} and another writer")
        target.docs[path] = docs
    for path in delta.removed - base.removed:
        target.drop_below(path)
        target.removed.add(path)
    for path, imp in delta.imported.items():
        if base.imported.get(path) != imp:
            target.imported[path] = imp
    for path, entries in delta.chunks.items():
        inherited = base.chunks.get(path, {})
        tgt = target.chunks.setdefault(path, {})
        clash = []
        for flat, entry in entries.items():
            if flat in inherited and inherited[flat] == entry:
                continue
            if flat in tgt and tgt[flat] != entry and (flat not in inherited or tgt[flat] != inherited[flat]):
                clash.append(flat)
            tgt[flat] = entry
        if clash:
            problems.append(f"array {path!r}: flat chunks {sorted(clash)[:10]} written differently by {who} and another writer")
    if problems:
        raise ConflictError("; ".join(problems))
