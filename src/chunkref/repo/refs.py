"""Refs: the only mutable state of a repository, made of create-only files.

Branches
--------
A branch is an append-only log of ref files, one per move::

    refs/branches/<name>/<seq // 4096 : 8 digits>/<seq : 12 digits>.json

holding ``{"commit", "prev", "seq", "op", "session", "time"}``.  The branch's tip is the entry with
the highest sequence number; it advances by *creating* the next file with
:meth:`Store.set_if_not_exists` (atomic on local disks through a temporary file and a hard link,
``If-None-Match: *`` on S3).  Whoever creates sequence ``n + 1`` first wins; the loser re-reads
the tip and rebases.  Deleting a branch appends an entry whose ``commit`` is null; creating it
again appends a new entry, so the log never loses its history (it is also the reflog GC uses to
find commits that became unreachable).

The tip is found by listing the newest bucket and then *probing* ``seq + 1, seq + 2, ...`` with
``exists`` until a miss: listings may lag on some stores, a read of a key may not.  A
:class:`RefStore` remembers the highest sequence it has seen and probes forward from there.

Tags
----
``refs/tags/<name>/tag.json`` created once (create-only: a tag never moves); deleting writes
``refs/tags/<name>/deleted``, after which the name can never be used again.

Expiry
------
``refs/expiry/...`` is a sequence like a branch's whose entries hold a cut-off time; history
older than the newest cut-off is no longer guaranteed (:meth:`Repository.expire`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chunkref.errors import (
    ConflictError,
    InvalidArgumentError,
    RefNotFoundError,
    StoreError,
)
from chunkref.repo.objects import decode_json, encode_json
from chunkref.storage.base import OffsetRequest, Store

__all__ = ["RefEntry", "RefStore", "format_time", "parse_time", "utcnow", "validate_ref_name"]

BRANCHES = "refs/branches/"
TAGS = "refs/tags/"
EXPIRY = "refs/expiry/"
_BUCKET = 4096
# Ref files are read with an explicit offset range: fsspec's s3fs answers a whole-file read by
# first asking the size from its listing cache, in which a ref file created by another writer
# after our last listing does not exist yet (the read would report it absent forever).
_ALL = OffsetRequest(0)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def validate_ref_name(name: str, kind: str = "branch") -> str:
    """``name`` if it is a valid branch/tag name (letters, digits, ``._-``; no ``/``)."""
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith(".json"):
        raise InvalidArgumentError(
            f"invalid {kind} name {name!r}: use 1-128 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )
    return name


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    """ISO 8601 UTC with microseconds (``2026-01-02T03:04:05.000006Z``)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"invalid time {text!r} in a repository ref or commit") from exc


@dataclass(frozen=True)
class RefEntry:
    """One entry of a branch's log.

    Attributes
    ----------
    seq
        Position in the log (0 = the branch's first entry).
    commit
        The commit the branch points at after this entry (None: the branch was deleted).
    prev
        The commit it pointed at before (None for a new branch).
    op
        ``"create"``, ``"commit"``, ``"reset"`` or ``"delete"``.
    session
        Id of the session that committed (commits only).
    time
        Client time of the move (ISO 8601 UTC).
    """

    seq: int
    commit: str | None
    prev: str | None
    op: str
    session: str | None
    time: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "commit": self.commit,
            "prev": self.prev,
            "op": self.op,
            "session": self.session,
            "time": self.time,
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> RefEntry:
        if not isinstance(doc, dict):
            raise StoreError(f"ref file {where!r} is not a JSON object")
        try:
            return cls(
                int(doc["seq"]),
                doc.get("commit"),
                doc.get("prev"),
                str(doc.get("op", "commit")),
                doc.get("session"),
                str(doc.get("time", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"ref file {where!r} is malformed: {exc!r}") from exc


class RefStore:
    """Branches, tags and expiry records of a repository (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[str, int] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"])  # type: ignore[misc]

    # -- sequences -----------------------------------------------------------------------------

    @staticmethod
    def _seq_key(prefix: str, seq: int) -> str:
        return f"{prefix}{seq // _BUCKET:08d}/{seq:012d}.json"

    def _latest_seq(self, prefix: str) -> int:
        """Highest sequence number under ``prefix`` (-1 when empty): list, then probe forward."""
        seq = self._known.get(prefix, -1)
        if seq < 0:
            buckets = sorted((b for b in self.store.list_dir(prefix) if b.isdigit()), reverse=True)
            for b in buckets:
                names = [n for n in self.store.list_dir(prefix + b) if n.endswith(".json") and n[:-5].isdigit()]
                if names:
                    seq = max(int(n[:-5]) for n in names)
                    break
        # Probe with full reads: object-store listings and metadata caches (s3fs keeps the
        # last listing of a prefix) may lag, a read of the key itself may not.
        while self.store.get(self._seq_key(prefix, seq + 1), _ALL) is not None:
            seq += 1
        if seq >= 0:
            self._known[prefix] = seq
        return seq

    def _read(self, prefix: str, seq: int) -> RefEntry:
        key = self._seq_key(prefix, seq)
        data = self.store.get(key, _ALL)
        if data is None:
            raise StoreError(f"ref file {key!r} disappeared (refs are never deleted)")
        return RefEntry.from_json(decode_json(data, key), key)

    def _append(self, prefix: str, entry: RefEntry) -> bool:
        """Create the entry's file; False when another writer created that sequence first.

        A failure whose outcome is unknown (the request may have landed: a lost acknowledgement)
        is resolved by reading the file back: it is ours when it holds exactly our entry.
        """
        key = self._seq_key(prefix, entry.seq)
        data = encode_json(entry.to_json())
        try:
            created = self.store.set_if_not_exists(key, data)
        except StoreError:
            if self.store.get(key, _ALL) == data:
                created = True
            else:
                raise
        if created:
            self._known[prefix] = max(self._known.get(prefix, -1), entry.seq)
        return created

    def _log(self, prefix: str) -> list[RefEntry]:
        n = self._latest_seq(prefix)
        if n < 0:
            return []
        keys = [self._seq_key(prefix, s) for s in range(n + 1)]
        out = []
        for key, data in zip(keys, self.store.get_many([(k, _ALL) for k in keys])):
            if data is not None:
                out.append(RefEntry.from_json(decode_json(data, key), key))
        return out

    # -- branches ------------------------------------------------------------------------------

    def _branch_prefix(self, name: str) -> str:
        return f"{BRANCHES}{validate_ref_name(name)}/"

    def branch_entry(self, name: str) -> RefEntry | None:
        """The newest log entry of a branch (its commit is None when deleted), None if never made."""
        prefix = self._branch_prefix(name)
        seq = self._latest_seq(prefix)
        return None if seq < 0 else self._read(prefix, seq)

    def branch_tip(self, name: str) -> str:
        """The commit a branch points at.

        Raises
        ------
        RefNotFoundError
            No such branch (or it was deleted).
        """
        entry = self.branch_entry(name)
        if entry is None or entry.commit is None:
            raise RefNotFoundError(f"no branch {name!r} in the repository")
        return entry.commit

    def try_advance(
        self, name: str, expected: RefEntry | None, commit: str | None, *, op: str, session: str | None = None
    ) -> RefEntry | None:
        """Append ``commit`` after ``expected`` (None: the branch's first entry).

        Returns the new entry, or None when another writer appended first.
        """
        prefix = self._branch_prefix(name)
        seq = 0 if expected is None else expected.seq + 1
        entry = RefEntry(
            seq,
            commit,
            None if expected is None else expected.commit,
            op,
            session,
            format_time(utcnow()),
        )
        return entry if self._append(prefix, entry) else None

    def create_branch(self, name: str, commit: str) -> None:
        """Create a branch at ``commit`` (an existing branch is an error)."""
        while True:
            cur = self.branch_entry(name)
            if cur is not None and cur.commit is not None:
                raise InvalidArgumentError(f"branch {name!r} already exists (at {cur.commit})")
            if self.try_advance(name, cur, commit, op="create") is not None:
                return

    def delete_branch(self, name: str) -> None:
        """Delete a branch (its log stays; the name may be created again)."""
        while True:
            cur = self.branch_entry(name)
            if cur is None or cur.commit is None:
                raise RefNotFoundError(f"no branch {name!r} in the repository")
            if self.try_advance(name, cur, None, op="delete") is not None:
                return

    def reset_branch(self, name: str, commit: str, expected: str | None = None) -> RefEntry:
        """Point a branch at ``commit``; with ``expected``, only if it still points there."""
        while True:
            cur = self.branch_entry(name)
            if cur is None or cur.commit is None:
                raise RefNotFoundError(f"no branch {name!r} in the repository")
            if expected is not None and cur.commit != expected:
                raise ConflictError(f"branch {name!r} points at {cur.commit}, not the expected {expected}")
            new = self.try_advance(name, cur, commit, op="reset")
            if new is not None:
                return new

    def list_branches(self) -> dict[str, str]:
        """Live branches: name -> commit."""
        out = {}
        for name in self.store.list_dir(BRANCHES):
            try:
                entry = self.branch_entry(name)
            except InvalidArgumentError:
                continue
            if entry is not None and entry.commit is not None:
                out[name] = entry.commit
        return dict(sorted(out.items()))

    def all_branch_names(self) -> list[str]:
        """Every branch name that ever existed (deleted ones too)."""
        return [n for n in self.store.list_dir(BRANCHES) if _NAME.match(n)]

    def reflog(self, name: str) -> list[RefEntry]:
        """Every move of a branch, oldest first."""
        return self._log(self._branch_prefix(name))

    # -- tags ----------------------------------------------------------------------------------

    def _tag_keys(self, name: str) -> tuple[str, str]:
        base = f"{TAGS}{validate_ref_name(name, 'tag')}/"
        return base + "tag.json", base + "deleted"

    def tag_commit(self, name: str, *, include_deleted: bool = False) -> str | None:
        """The commit of a tag (None if there is none or it was deleted)."""
        key, tomb = self._tag_keys(name)
        data, dead = self.store.get_many([(key, _ALL), (tomb, _ALL)])
        if data is None or (dead is not None and not include_deleted):
            return None
        doc = decode_json(data, key)
        return doc.get("commit") if isinstance(doc, dict) else None

    def create_tag(self, name: str, commit: str) -> None:
        """Create an immutable tag (a used or deleted name is an error)."""
        key, tomb = self._tag_keys(name)
        if self.store.get(tomb, _ALL) is not None:
            raise InvalidArgumentError(f"tag {name!r} was deleted; a deleted tag name cannot be reused")
        data = encode_json({"commit": commit, "time": format_time(utcnow()), "id": uuid.uuid4().hex})
        if not self.store.set_if_not_exists(key, data):
            raise InvalidArgumentError(f"tag {name!r} already exists (tags never move)")
        if self.store.get(tomb, _ALL) is not None:  # deleted concurrently: the tombstone wins
            raise InvalidArgumentError(f"tag {name!r} was deleted while being created")

    def delete_tag(self, name: str) -> None:
        """Delete a tag for good (its name can never be used again)."""
        key, tomb = self._tag_keys(name)
        if self.store.get(key, _ALL) is None or self.store.get(tomb, _ALL) is not None:
            raise RefNotFoundError(f"no tag {name!r} in the repository")
        self.store.set_if_not_exists(tomb, encode_json({"time": format_time(utcnow())}))

    def list_tags(self) -> dict[str, str]:
        """Live tags: name -> commit."""
        out = {}
        for name in self.store.list_dir(TAGS):
            if not _NAME.match(name):
                continue
            commit = self.tag_commit(name)
            if commit is not None:
                out[name] = commit
        return dict(sorted(out.items()))

    def all_tag_commits(self) -> list[str]:
        """Commits of every tag ever made, deleted ones too (GC candidates)."""
        out = []
        for name in self.store.list_dir(TAGS):
            if _NAME.match(name):
                c = self.tag_commit(name, include_deleted=True)
                if c is not None:
                    out.append(c)
        return out

    # -- expiry --------------------------------------------------------------------------------

    def expiry_cutoff(self) -> datetime | None:
        """The newest expiry cut-off, if history was ever expired."""
        seq = self._latest_seq(EXPIRY)
        if seq < 0:
            return None
        key = self._seq_key(EXPIRY, seq)
        doc = decode_json(self.store.get(key, _ALL) or b"{}", key)
        return parse_time(doc["cutoff"]) if isinstance(doc, dict) and "cutoff" in doc else None

    def set_expiry(self, cutoff: datetime) -> None:
        """Record a new cut-off (it only ever moves forward)."""
        while True:
            seq = self._latest_seq(EXPIRY)
            old = self.expiry_cutoff()
            if old is not None and old >= cutoff:
                return
            key = self._seq_key(EXPIRY, seq + 1)
            if self.store.set_if_not_exists(key, encode_json({"cutoff": format_time(cutoff), "seq": seq + 1})):
                self._known[EXPIRY] = seq + 1
                return
