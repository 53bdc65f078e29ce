"""Garbage collection: delete unreachable objects older than a grace period.

Mark: every commit reachable from a live branch or tag (history older than the expiry cut-off
excluded, tips and tagged commits always kept), their change summaries, and every node, page and
chunk of their trees (each distinct node and page read once).

Candidates, *without listing the object store*:

* objects named by the change summaries of commits no ref reaches any more: the branch ref logs
  name every commit a branch ever pointed at (deleted branches, resets) and tag files every
  tagged commit (deleted tags); their ancestors are walked until a reachable or already collected
  commit;
* objects named by session journals (``txn/``): chunks written by sessions that never committed,
  and the objects of commit attempts that lost a race or crashed before their ref.

``full=True`` instead lists all of ``objects/`` (for repositories damaged by hand, or written by
tools that do not journal).

Sweep: a candidate that is not marked is deleted only when the **store's** timestamp of the
object is older than the grace period, measured against the store's own clock (a probe file is
written to read "now" from the store), so a session writing chunks right now, whose objects no
commit names yet, is safe as long as it commits within the grace period.  Deletion order is
chunks and pages, then nodes and summaries, then commits, then journals: a crash mid-way leaves a
state the next run finishes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from chunkref.errors import InvalidArgumentError, MissingObjectError, RefNotFoundError, StoreError
from chunkref.manifest.cid import parse_cid
from chunkref.repo.objects import DAG_JSON, decode_json, object_key
from chunkref.repo.session import JOURNAL_PREFIX
from chunkref.repo.tree import ArrayNode, GroupNode, decode_node
from chunkref.storage.base import Store

if TYPE_CHECKING:
    from chunkref.repo.repository import Repository

__all__ = ["GCReport", "collect_garbage", "mark_reachable", "store_now", "store_times"]


@dataclass
class GCReport:
    """What a GC run found and did."""

    reachable_commits: int = 0
    reachable_objects: int = 0
    candidates: int = 0
    deleted: list[str] = field(default_factory=list)
    kept_young: int = 0
    journals_deleted: int = 0
    dry_run: bool = False
    full: bool = False

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"{self.reachable_commits} reachable commits, {self.reachable_objects} reachable objects; "
            f"{self.candidates} candidates, {verb} {len(self.deleted)} objects, kept {self.kept_young} younger "
            f"than the grace period, {self.journals_deleted} journals"
        )


# -- store timestamps -------------------------------------------------------------------------


def _fs_and_path(store: Store) -> tuple[Any, str] | None:
    from chunkref.storage.fsspec import FsspecStore
    from chunkref.storage.local import LocalStore

    if isinstance(store, LocalStore):
        return None
    if isinstance(store, FsspecStore):
        return store.fs, store.root
    raise InvalidArgumentError(f"gc needs a store with object timestamps (local or fsspec), got {store!r}")


def _info_time(info: dict[str, Any]) -> float | None:
    for k in ("LastModified", "mtime", "last_modified", "created", "updated"):
        v = info.get(k)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        try:
            return float(v)
        except (TypeError, ValueError):
            continue
    return None


def store_times(store: Store, keys: Sequence[str]) -> list[float | None]:
    """The store's modification time (POSIX seconds) of each key (None: absent)."""
    from chunkref.storage.local import LocalStore

    if isinstance(store, LocalStore):
        out: list[float | None] = []
        for k in keys:
            try:
                out.append(os.stat(os.path.join(store.root, *k.split("/"))).st_mtime)
            except (FileNotFoundError, NotADirectoryError):
                out.append(None)
        return out
    fs, root = _fs_and_path(store)  # type: ignore[misc]
    out = []
    for k in keys:
        path = f"{root.rstrip('/')}/{k}" if root else k
        try:
            out.append(_info_time(fs.info(path)))
        except (FileNotFoundError, OSError):
            out.append(None)
    return out


def store_now(store: Store) -> float:
    """The store's clock: the timestamp it gives a file written now."""
    key = f"gc/clock-{uuid.uuid4().hex}"
    store.set(key, b"")
    try:
        t = store_times(store, [key])[0]
    finally:
        store.delete(key)
    if t is None:
        raise StoreError(f"{store!r} reports no timestamp for a file just written; gc cannot tell object ages")
    return t


# -- mark -------------------------------------------------------------------------------------


def _walk_commits(repo: Repository, roots: Iterable[str], cutoff: Any) -> tuple[set[str], set[str]]:
    """Reachable commits and their trees' root nodes."""
    commits: set[str] = set()
    trees: set[str] = set()
    for root in roots:
        cid: str | None = root
        first = True
        while cid is not None and cid not in commits:
            try:
                c = repo.commit_info(cid)
            except RefNotFoundError:
                if first:
                    raise
                break
            if cutoff is not None and not first and c.time < cutoff:
                break
            commits.add(cid)
            trees.add(c.root)
            first = False
            cid = c.parent
    return commits, trees


def mark_reachable(repo: Repository) -> tuple[set[str], set[str]]:
    """``(reachable commits, every reachable object CID)``."""
    roots = list(repo.refs.list_branches().values()) + list(repo.refs.list_tags().values())
    commits, trees = _walk_commits(repo, roots, repo.refs.expiry_cutoff())
    marked: set[str] = set(commits)
    for c in commits:
        info = repo.commit_info(c)
        if info.changes is not None:
            marked.add(info.changes)
    stack = [t for t in trees]
    seen_nodes: set[str] = set()
    while stack:
        batch = [c for c in dict.fromkeys(stack) if c not in seen_nodes]
        stack = []
        if not batch:
            break
        seen_nodes.update(batch)
        docs = repo.objects.get_json_many(batch, ["node"] * len(batch))
        pages: list[str] = []
        for cid, doc in zip(batch, docs):
            marked.add(cid)
            node = decode_node(doc, cid)
            if isinstance(node, GroupNode):
                stack.extend(node.children.values())
            elif isinstance(node, ArrayNode):
                pages.extend(p for p in node.pages if p is not None and p not in marked)
        pages = list(dict.fromkeys(pages))
        for i in range(0, len(pages), 256):
            part = pages[i : i + 256]
            for pc, table in zip(part, repo.pages.get_many(part)):
                marked.add(pc)
                marked.update(c for c in repo.pages.cid_strings(pc, table) if c is not None)
    return commits, marked


# -- sweep ------------------------------------------------------------------------------------


def _unreachable_commit_objects(repo: Repository, reachable: set[str]) -> tuple[list[str], list[str]]:
    """``(objects, commits)`` made by commits that no ref reaches any more."""
    starts: list[str] = []
    for name in repo.refs.all_branch_names():
        for e in repo.refs.reflog(name):
            starts.extend(c for c in (e.commit, e.prev) if c is not None)
    starts.extend(repo.refs.all_tag_commits())
    objects: list[str] = []
    commits: list[str] = []
    seen: set[str] = set()
    for start in starts:
        cid: str | None = start
        while cid is not None and cid not in reachable and cid not in seen:
            seen.add(cid)
            try:
                c = repo.commit_info(cid)
            except RefNotFoundError:
                break  # already collected
            commits.append(cid)
            objects.append(c.root)
            if c.changes is not None:
                objects.append(c.changes)
                try:
                    objects.extend(repo.change_summary(c.changes).objects)
                except (MissingObjectError, InvalidArgumentError):
                    pass
            cid = c.parent
    return objects, commits


def _journals(store: Store) -> list[tuple[str, list[str]]]:
    out = []
    for key in store.list_prefix(JOURNAL_PREFIX):
        data = store.get(key)
        if data is None:
            continue
        try:
            doc = decode_json(data, key)
            out.append((key, [str(c) for c in doc.get("objects", [])]))
        except Exception:  # noqa: BLE001 - a torn journal names nothing we can trust
            out.append((key, []))
    return out


def collect_garbage(repo: Repository, older_than: timedelta, *, dry_run: bool = False, full: bool = False) -> GCReport:
    """See the module docstring."""
    if not isinstance(older_than, timedelta) or older_than < timedelta(0):
        raise InvalidArgumentError(f"older_than must be a non-negative timedelta, got {older_than!r}")
    store = repo.store
    now = store_now(store)
    limit = now - older_than.total_seconds()
    report = GCReport(dry_run=dry_run, full=full)
    reachable_commits, marked = mark_reachable(repo)
    report.reachable_commits = len(reachable_commits)
    report.reachable_objects = len(marked)

    commit_objs, dead_commits = _unreachable_commit_objects(repo, reachable_commits)
    journals = _journals(store)
    candidates: dict[str, None] = dict.fromkeys(commit_objs)
    for _, cids in journals:
        candidates.update(dict.fromkeys(cids))
    candidates.update(dict.fromkeys(dead_commits))
    if full:
        candidates.update(dict.fromkeys(repo.objects.list()))
    garbage = [c for c in candidates if c not in marked]
    report.candidates = len(candidates)

    times = store_times(store, [object_key(c) for c in garbage])
    old = [c for c, t in zip(garbage, times) if t is not None and t < limit]
    report.kept_young = sum(1 for t in times if t is not None and t >= limit)
    dead = set(dead_commits)

    def rank(c: str) -> int:
        if c in dead:
            return 2
        try:
            return 1 if parse_cid(c)[1] == DAG_JSON else 0
        except InvalidArgumentError:
            return 0

    old.sort(key=rank)
    report.deleted = old
    young = {c for c, t in zip(garbage, times) if t is not None and t >= limit}
    if not dry_run:
        for r in (0, 1, 2):
            part = [c for c in old if rank(c) == r]
            if part:
                repo.objects.delete_many(part)
        jkeys = [k for k, _ in journals]
        jtimes = store_times(store, jkeys)
        done = [k for (k, cids), t in zip(journals, jtimes)
                if t is not None and t < limit and not any(c in young for c in cids)]
        if done:
            store.delete_many(done)
        report.journals_deleted = len(done)
    return report
