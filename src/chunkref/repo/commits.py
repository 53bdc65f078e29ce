"""Commits and change summaries (canonical JSON objects).

A **commit** names the root node of a hierarchy version, its parents, who made it, when, why, the
session that made it (so a retried commit whose acknowledgement was lost is recognised instead of
being made twice) and the CID of its **change summary**.

The change summary says what the commit changed relative to its first parent, without anyone
having to compare trees: node paths added, removed and whose metadata changed (and whether the
change touched the chunk layout or only attributes), per array the grid shape and the flat chunk
indices written (as ``[start, stop)`` runs), and every object the commit introduced (chunks,
pages, nodes).  Rebase checks conflicts against it, ``diff`` of adjacent commits and ``status``
read it, and GC finds what an unreachable commit made without listing the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from chunkref.errors import InvalidArgumentError
from chunkref.repo.objects import link, unlink
from chunkref.repo.refs import format_time, parse_time

__all__ = ["ArrayChange", "ChangeSummary", "Commit", "ranges_of", "indices_of"]

COMMIT_VERSION = 1


def ranges_of(flat: np.ndarray) -> list[list[int]]:
    """Sorted unique flat indices as ``[start, stop)`` runs."""
    flat = np.unique(np.asarray(flat, dtype=np.int64))
    if flat.size == 0:
        return []
    breaks = np.nonzero(np.diff(flat) != 1)[0]
    starts = np.concatenate(([flat[0]], flat[breaks + 1]))
    stops = np.concatenate((flat[breaks] + 1, [flat[-1] + 1]))
    return np.stack([starts, stops], axis=1).tolist()


def indices_of(ranges: Any) -> np.ndarray:
    """Flat indices of ``[start, stop)`` runs."""
    if not ranges:
        return np.zeros(0, np.int64)
    r = np.asarray(ranges, dtype=np.int64).reshape(-1, 2)
    lengths = r[:, 1] - r[:, 0]
    if (lengths <= 0).any():
        raise InvalidArgumentError(f"invalid chunk ranges in a change summary: {ranges!r}")
    return np.repeat(r[:, 0] - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths) + np.arange(
        int(lengths.sum()), dtype=np.int64
    )


@dataclass(frozen=True)
class ArrayChange:
    """Chunks written in one array: its grid shape and the flat indices (sorted)."""

    grid_shape: tuple[int, ...]
    flat: np.ndarray

    def coords(self) -> np.ndarray:
        """``(n, ndim)`` chunk coords."""
        if not self.grid_shape:
            return np.zeros((self.flat.size, 0), np.int64)
        return np.stack(np.unravel_index(self.flat, self.grid_shape), axis=1)


@dataclass
class ChangeSummary:
    """What a commit changed relative to its first parent (see the module docstring)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    metadata: dict[str, bool] = field(default_factory=dict)  # path -> layout changed
    chunks: dict[str, ArrayChange] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "changes",
            "added": sorted(self.added),
            "removed": sorted(self.removed),
            "metadata": {p: bool(v) for p, v in sorted(self.metadata.items())},
            "chunks": {
                p: {"grid": list(c.grid_shape), "ranges": ranges_of(c.flat)} for p, c in sorted(self.chunks.items())
            },
            "objects": sorted(set(self.objects)),
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> ChangeSummary:
        if not isinstance(doc, dict) or doc.get("kind") != "changes":
            raise InvalidArgumentError(f"object {where} is not a change summary")
        try:
            chunks = {
                str(p): ArrayChange(tuple(int(g) for g in c["grid"]), indices_of(c["ranges"]))
                for p, c in doc.get("chunks", {}).items()
            }
            return cls(
                [str(p) for p in doc.get("added", [])],
                [str(p) for p in doc.get("removed", [])],
                {str(p): bool(v) for p, v in doc.get("metadata", {}).items()},
                chunks,
                [str(c) for c in doc.get("objects", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"change summary {where} is malformed: {exc!r}") from exc


@dataclass(frozen=True)
class Commit:
    """One version of the hierarchy.

    Attributes
    ----------
    cid
        The commit's own content id.
    root
        CID of the root group node.
    parents
        Parent commit CIDs (empty for a repository's first commit).
    author, message
        Who and why.
    time
        Client time of the commit (UTC).
    session
        Id of the session that made it (lost-acknowledgement detection).
    changes
        CID of the :class:`ChangeSummary` (None for the first commit).
    """

    cid: str
    root: str
    parents: tuple[str, ...]
    author: str
    time: datetime
    message: str
    session: str | None
    changes: str | None

    @staticmethod
    def document(
        root: str,
        parents: tuple[str, ...],
        author: str,
        time: datetime,
        message: str,
        session: str | None,
        changes: str | None,
    ) -> dict[str, Any]:
        """The canonical JSON document of a commit."""
        return {
            "kind": "commit",
            "version": COMMIT_VERSION,
            "root": link(root),
            "parents": [link(p) for p in parents],
            "author": author,
            "time": format_time(time),
            "message": message,
            "session": session,
            "changes": None if changes is None else link(changes),
        }

    @classmethod
    def from_json(cls, cid: str, doc: Any) -> Commit:
        if not isinstance(doc, dict) or doc.get("kind") != "commit":
            raise InvalidArgumentError(f"object {cid} is not a commit")
        if doc.get("version") != COMMIT_VERSION:
            raise InvalidArgumentError(f"commit {cid} has unsupported version {doc.get('version')!r}")
        try:
            return cls(
                cid,
                unlink(doc["root"], f"commit {cid} field 'root'"),
                tuple(unlink(p, f"commit {cid} field 'parents'") for p in doc.get("parents", [])),
                str(doc.get("author", "")),
                parse_time(doc["time"]),
                str(doc.get("message", "")),
                doc.get("session"),
                None if doc.get("changes") is None else unlink(doc["changes"], f"commit {cid} field 'changes'"),
            )
        except KeyError as exc:
            raise InvalidArgumentError(f"commit {cid} lacks field {exc.args[0]!r}") from exc

    @property
    def parent(self) -> str | None:
        """The first parent (None for the first commit)."""
        return self.parents[0] if self.parents else None
