"""Verify a repository: re-hash every object reachable from a ref.

Walks from every live branch and tag through the history kept by expiry: each commit, change
summary, node, manifest page and chunk object is read and re-hashed against its CID (each
distinct object once), pages are decoded (which checks their invariants), and with
``virtual=True`` every virtual range is read from its source (under the repository's allow-list)
and checked against its recorded content id.  Problems are collected, not raised: each names the
object, where it was reached from, and what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from chunkref.errors import ChunkrefError, HashMismatchError, SourceNotAllowedError
from chunkref.manifest.cid import cid_to_string
from chunkref.manifest.pages import decode_page
from chunkref.manifest.table import ABSENT, INLINE, NATIVE
from chunkref.repo.commits import ChangeSummary, Commit
from chunkref.repo.objects import decode_json, object_key
from chunkref.repo.tree import ArrayNode, GroupNode, array_layout, decode_node, page_region_of, region_flat

if TYPE_CHECKING:
    from chunkref.repo.repository import Repository

__all__ = ["VerifyReport", "verify_repository"]

_BATCH = 256


@dataclass
class VerifyReport:
    """Result of :meth:`Repository.verify`."""

    commits: int = 0
    objects: int = 0
    bytes: int = 0
    virtual_chunks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (
            f"{self.commits} commits, {self.objects} objects ({self.bytes} bytes) verified"
            + (f", {self.virtual_chunks} virtual chunks" if self.virtual_chunks else "")
        )
        if self.ok:
            return head + ": OK"
        return head + f": {len(self.problems)} problems\n" + "\n".join(f"  {p}" for p in self.problems)


class _Verifier:
    def __init__(self, repo: Repository, virtual: bool) -> None:
        self.repo = repo
        self.virtual = virtual
        self.report = VerifyReport()
        self.seen: set[str] = set()
        # Sources refused by the allow-list: url -> (virtual chunks not checked, how to allow it).
        self.unauthorized: dict[str, tuple[int, str]] = {}

    def fetch(self, cids: list[str], where: list[str]) -> list[bytes | None]:
        """Read and re-hash objects; None (and a problem) for missing or corrupt ones."""
        store = self.repo.store
        blobs = store.get_many([(object_key(c), None) for c in cids])
        out: list[bytes | None] = []
        for c, w, b in zip(cids, where, blobs):
            self.seen.add(c)
            if b is None:
                self.report.problems.append(f"object {c} ({w}) is missing: {object_key(c)!r}")
                out.append(None)
                continue
            try:
                self.repo.objects.check(c, b, w)
            except HashMismatchError as exc:
                self.report.problems.append(str(exc))
                out.append(None)
                continue
            self.report.objects += 1
            self.report.bytes += len(b)
            out.append(b)
        return out

    def run(self) -> VerifyReport:
        repo = self.repo
        roots = [(f"branch {n!r}", c) for n, c in repo.refs.list_branches().items()]
        roots += [(f"tag {n!r}", c) for n, c in repo.refs.list_tags().items()]
        cutoff = repo.refs.expiry_cutoff()
        trees: list[tuple[str, str]] = []
        for label, cid in roots:
            first = True
            cur: str | None = cid
            while cur is not None and cur not in self.seen:
                if cutoff is not None and not first and not repo.store.exists(object_key(cur)):
                    break  # history beyond the expiry cut-off may have been collected
                blob = self.fetch([cur], [f"commit reached from {label}"])[0]
                if blob is None:
                    break
                try:
                    c = Commit.from_json(cur, decode_json(blob, cur))
                except ChunkrefError as exc:
                    self.report.problems.append(f"commit {cur} ({label}): {exc}")
                    break
                if cutoff is not None and not first and c.time < cutoff:
                    break
                self.report.commits += 1
                if c.changes is not None and c.changes not in self.seen:
                    sb = self.fetch([c.changes], [f"change summary of commit {cur}"])[0]
                    if sb is not None:
                        try:
                            ChangeSummary.from_json(decode_json(sb, c.changes), c.changes)
                        except ChunkrefError as exc:
                            self.report.problems.append(f"change summary {c.changes} of commit {cur}: {exc}")
                trees.append((c.root, f"commit {cur}"))
                first = False
                cur = c.parent
        self.walk_trees(trees)
        for url, (count, hint) in self.unauthorized.items():
            self.report.problems.append(
                f"{count} virtual chunk(s) read from {url!r} were not checked: the source is not authorized "
                f"({hint}; on the command line --allow PREFIX)"
            )
        return self.report

    def walk_trees(self, roots: list[tuple[str, str]]) -> None:
        stack = [(cid, "", ctx) for cid, ctx in roots]
        while stack:
            cid, path, ctx = stack.pop()
            if cid in self.seen:
                continue
            blob = self.fetch([cid], [f"node {path or '/'!r} of {ctx}"])[0]
            if blob is None:
                continue
            try:
                node = decode_node(decode_json(blob, cid), cid)
            except ChunkrefError as exc:
                self.report.problems.append(f"node {cid} ({path or '/'!r} of {ctx}): {exc}")
                continue
            if isinstance(node, GroupNode):
                for name, c in node.children.items():
                    stack.append((c, f"{path}/{name}" if path else name, ctx))
            elif isinstance(node, ArrayNode):
                self.check_array(path, node, ctx)

    def check_array(self, path: str, node: ArrayNode, ctx: str) -> None:
        try:
            layout = array_layout(node.documents, path, node.page_shape)
        except ChunkrefError as exc:
            self.report.problems.append(f"array {path!r} of {ctx}: bad metadata: {exc}")
            return
        chunks: list[tuple[str, str]] = []
        virtual: list[tuple[str, tuple]] = []
        for p, pc in enumerate(node.pages):
            if pc is None or pc in self.seen:
                continue
            blob = self.fetch([pc], [f"page {p} of array {path!r}, {ctx}"])[0]
            if blob is None:
                continue
            try:
                t = decode_page(blob)
            except ChunkrefError as exc:
                self.report.problems.append(f"page {pc} (page {p} of array {path!r}, {ctx}): {exc}")
                continue
            if p >= layout.npages or t.grid_shape != tuple(s.stop - s.start for s in page_region_of(layout, p)):
                self.report.problems.append(f"page {pc} of array {path!r} ({ctx}) does not fit its region")
                continue
            flat = region_flat(layout.grid_shape, page_region_of(layout, p))
            present = np.nonzero(t.length != ABSENT)[0]
            for loc in present.tolist():
                src = int(t.source[loc])
                coords = tuple(int(x) for x in np.unravel_index(flat[loc], layout.grid_shape)) if layout.grid_shape else ()
                where = f"chunk {coords} of array {path!r}, {ctx}"
                if src == NATIVE:
                    chunks.append((cid_to_string(t.cid[loc].tobytes()), where))
                elif src != INLINE and self.virtual:
                    cid = t.cid[loc].tobytes() if t.cid is not None and t.cid[loc].any() else None
                    virtual.append((where, (where, t.urls[src], int(t.offset[loc]), int(t.length[loc]), cid, None)))
        todo = [(c, w) for c, w in dict(chunks).items() if c not in self.seen]
        for i in range(0, len(todo), _BATCH):
            part = todo[i : i + _BATCH]
            self.fetch([c for c, _ in part], [w for _, w in part])
        for i in range(0, len(virtual), _BATCH):
            self.check_virtual([r for _, r in virtual[i : i + _BATCH]])

    def check_virtual(self, reqs: list[tuple]) -> None:
        from chunkref.repo.virtual import read_virtual

        repo = self.repo

        def read(rs: list[tuple]) -> None:
            read_virtual(rs, allow=repo.allow, storage_options=repo.storage_options, verify=True)

        try:
            read(reqs)
            self.report.virtual_chunks += len(reqs)
            return
        except ChunkrefError:
            pass
        by_source: dict[str, list[tuple]] = {}
        for r in reqs:
            by_source.setdefault(r[1], []).append(r)
        for url, rs in by_source.items():
            try:
                read(rs)
                self.report.virtual_chunks += len(rs)
                continue
            except SourceNotAllowedError as exc:
                # One problem per source (reported at the end), not one per chunk.
                hint = re.search(r"pass allow=\[[^\]]*\]", str(exc))
                count, _ = self.unauthorized.get(url, (0, ""))
                self.unauthorized[url] = (count + len(rs), hint.group(0) if hint else "allow its prefix")
                continue
            except ChunkrefError:
                pass
            for r in rs:  # find exactly which ones fail
                try:
                    read([r])
                    self.report.virtual_chunks += 1
                except ChunkrefError as exc:
                    self.report.problems.append(f"virtual {r[0]} ({r[1]} bytes {r[2]}+{r[3]}): {exc}")


def verify_repository(repo: Repository, *, virtual: bool = False) -> VerifyReport:
    """See the module docstring."""
    return _Verifier(repo, virtual).run()
