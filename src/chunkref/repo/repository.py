"""Repository: content-addressed, versioned array data on any fsspec filesystem.

Layout of a repository (a directory or object-store prefix)::

    chunkref-repo.json          format, version, hash function, page size (created once)
    objects/<xx>/<cid>          immutable objects: chunks, manifest pages, nodes, commits
    refs/branches/<name>/...    create-only ref log per branch (see chunkref.repo.refs)
    refs/tags/<name>/tag.json   immutable tags (+ ``deleted`` tombstones)
    refs/expiry/...             history expiry cut-offs
    txn/<session>/<id>.json     journal of objects written by sessions (for GC)

See ``docs/architecture.md`` ("Repository format") for the object encodings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from chunkref.errors import InvalidArgumentError, MissingObjectError, RefNotFoundError
from chunkref.repo.commits import ChangeSummary, Commit
from chunkref.repo.objects import DAG_JSON, ObjectStore, decode_json, encode_json
from chunkref.repo.refs import RefStore, format_time, utcnow, validate_ref_name
from chunkref.repo.session import Session
from chunkref.repo.tree import DEFAULT_REPO_PAGE_CHUNKS, GroupNode, PageCache, encode_node
from chunkref.storage.base import Store

__all__ = ["Repository"]

CONFIG_KEY = "chunkref-repo.json"
#: Chunks of at most this many bytes are stored inside manifest pages (as Icechunk does).
DEFAULT_INLINE_THRESHOLD = 512
FORMAT_NAME = "chunkref-repository"
FORMAT_VERSION = 1


def _open_store(url: str | os.PathLike[str] | Store, storage_options: Mapping[str, Any] | None) -> Store:
    if isinstance(url, Store):
        return url
    from chunkref.storage import store_from_url

    return store_from_url(os.fspath(url), storage_options=dict(storage_options or {}), mode="a")


class Repository:
    """A content-addressed repository with git-like history of Zarr hierarchies.

    Use :meth:`create` or :meth:`open`.

    Parameters
    ----------
    store
        Where the repository lives.
    config
        The parsed ``chunkref-repo.json``.
    allow
        URL prefixes virtual chunks may be read from (nothing else is read).
    source_options
        fsspec options for virtual sources (as :class:`~chunkref.reference.ReferenceStore`).
    verify_virtual
        Check virtual chunks against their recorded content ids on every read (sources are
        files outside the repository that may change).
    """

    def __init__(
        self,
        store: Store,
        config: Mapping[str, Any],
        *,
        allow: Iterable[str] | None = None,
        source_options: Mapping[str, Any] | None = None,
        verify_virtual: bool = True,
    ) -> None:
        self.store = store
        self.config = dict(config)
        self.hash_function: str = str(self.config.get("hash_function", "sha2-256"))
        self.page_chunks: int = int(self.config.get("page_chunks", DEFAULT_REPO_PAGE_CHUNKS))
        self.inline_threshold: int = int(self.config.get("inline_threshold", 0))
        self.allow = [allow] if isinstance(allow, str) else list(allow or [])
        self.storage_options = dict(source_options or {})
        self.verify_virtual = bool(verify_virtual)
        self.objects = ObjectStore(store, self.hash_function)
        self.refs = RefStore(store)
        self.pages = PageCache(self.objects)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "config": self.config,
            "allow": self.allow,
            "source_options": self.storage_options,
            "verify_virtual": self.verify_virtual,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["store"],
            state["config"],
            allow=state["allow"],
            source_options=state["source_options"],
            verify_virtual=state["verify_virtual"],
        )

    def __repr__(self) -> str:
        return f"Repository({self.store!r}, hash_function={self.hash_function!r})"

    # -- creation ----------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        url: str | os.PathLike[str] | Store,
        hash_function: str = "sha2-256",
        *,
        storage_options: Mapping[str, Any] | None = None,
        page_chunks: int = DEFAULT_REPO_PAGE_CHUNKS,
        inline_threshold: int = DEFAULT_INLINE_THRESHOLD,
        allow: Iterable[str] | None = None,
        source_options: Mapping[str, Any] | None = None,
        verify_virtual: bool = True,
    ) -> Repository:
        """Create a repository with a ``main`` branch holding an empty first commit.

        Parameters
        ----------
        url
            Directory, fsspec URL (``s3://bucket/repo``) or Store.
        hash_function
            ``"sha2-256"`` (default) or ``"blake3"`` (needs the ``blake3`` package); fixed for
            the repository's life.
        page_chunks
            Chunks per manifest page (a diff or commit touches whole pages).
        inline_threshold
            Chunks of at most this many stored bytes live inside their manifest page instead of
            being objects of their own (no file or request per tiny chunk; 0 disables).

        Raises
        ------
        InvalidArgumentError
            A repository (or anything) already exists there, or a bad setting.
        """
        from chunkref.repo.objects import HASH_FUNCTIONS

        if hash_function not in HASH_FUNCTIONS:
            raise InvalidArgumentError(f"unknown hash_function {hash_function!r}; known: {list(HASH_FUNCTIONS)}")
        if hash_function == "blake3":
            from chunkref.manifest.cid import compute_cid

            compute_cid(b"", "blake3")  # raises naming the missing package
        if not isinstance(page_chunks, int) or page_chunks < 1:
            raise InvalidArgumentError(f"page_chunks must be a positive int, got {page_chunks!r}")
        if not isinstance(inline_threshold, int) or not 0 <= inline_threshold <= 1 << 16:
            raise InvalidArgumentError(f"inline_threshold must be an int in [0, 65536], got {inline_threshold!r}")
        store = _open_store(url, storage_options)
        if any(True for _ in store.list_prefix("objects/")) or store.exists(CONFIG_KEY):
            raise InvalidArgumentError(f"{store!r} already holds a repository")
        config = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "hash_function": hash_function,
            "page_chunks": page_chunks,
            "inline_threshold": inline_threshold,
            "created": format_time(utcnow()),
        }
        repo = cls(store, config, allow=allow, source_options=source_options, verify_virtual=verify_virtual)
        root = repo.objects.put_json(encode_node(GroupNode({}, {})))
        first = repo.objects.put_json(Commit.document(root, (), "chunkref", utcnow(), "Repository created", None, None))
        if not store.set_if_not_exists(CONFIG_KEY, encode_json(config)):
            raise InvalidArgumentError(f"{store!r} already holds a repository (created concurrently)")
        repo.refs.create_branch("main", first)
        return repo

    @classmethod
    def open(
        cls,
        url: str | os.PathLike[str] | Store,
        *,
        allow: Iterable[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        source_options: Mapping[str, Any] | None = None,
        verify_virtual: bool = True,
    ) -> Repository:
        """Open an existing repository.

        Parameters
        ----------
        allow
            URL prefixes virtual chunks may be read from (a repository is data someone else may
            have written: its references must not read arbitrary files or hosts).
        storage_options
            fsspec options for the repository's own store.
        source_options
            fsspec options for virtual sources.
        """
        store = _open_store(url, storage_options)
        data = store.get(CONFIG_KEY)
        if data is None:
            raise RefNotFoundError(f"{store!r} is not a chunkref repository (no {CONFIG_KEY})")
        config = decode_json(data, CONFIG_KEY)
        if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
            raise InvalidArgumentError(f"{CONFIG_KEY} in {store!r} is not a chunkref repository config")
        if config.get("version") != FORMAT_VERSION:
            raise InvalidArgumentError(
                f"repository format version {config.get('version')!r} is not supported (this chunkref reads {FORMAT_VERSION})"
            )
        return cls(store, config, allow=allow, source_options=source_options, verify_virtual=verify_virtual)

    @staticmethod
    def exists(url: str | os.PathLike[str] | Store, storage_options: Mapping[str, Any] | None = None) -> bool:
        return _open_store(url, storage_options).exists(CONFIG_KEY)

    # -- objects -----------------------------------------------------------------------------------

    def commit_info(self, cid: str) -> Commit:
        """The commit ``cid`` (verified against its CID)."""
        if not isinstance(cid, str) or not cid.startswith("b"):
            raise RefNotFoundError(f"{cid!r} is not a commit id")
        hit = self.objects.decoded.get("commit:" + cid)
        if hit is not None:
            return hit
        try:
            doc = self.objects.get_json(cid, "commit")
        except MissingObjectError as exc:
            raise RefNotFoundError(f"no commit {cid} in the repository") from exc
        except InvalidArgumentError as exc:
            raise RefNotFoundError(f"{cid!r} is not a commit id: {exc}") from exc
        commit = Commit.from_json(cid, doc)
        self.objects.decoded.put("commit:" + cid, commit)
        return commit

    def change_summary(self, cid: str) -> ChangeSummary:
        """The change summary ``cid`` (verified; parsed once)."""
        hit = self.objects.decoded.get("changes:" + cid)
        if hit is None:
            hit = ChangeSummary.from_json(self.objects.get_json(cid, "change summary"), cid)
            self.objects.decoded.put("changes:" + cid, hit)
        return hit

    # -- versions ----------------------------------------------------------------------------------

    def resolve(
        self,
        version: str | None = None,
        *,
        branch: str | None = None,
        tag: str | None = None,
        commit: str | None = None,
    ) -> str:
        """The commit CID a version names: a branch, a tag or a commit (in that order for ``version``)."""
        given = [x for x in (version, branch, tag, commit) if x is not None]
        if len(given) > 1:
            raise InvalidArgumentError("give one of version, branch, tag or commit")
        if branch is not None:
            return self.refs.branch_tip(branch)
        if tag is not None:
            c = self.refs.tag_commit(tag)
            if c is None:
                raise RefNotFoundError(f"no tag {tag!r} in the repository")
            return c
        if commit is not None:
            return self.commit_info(commit).cid
        if version is None:
            return self.refs.branch_tip("main")
        if version.startswith("bagu") and len(version) > 50:
            # A CID (commits are dag-json objects): no ref lookups needed.
            try:
                return self.commit_info(version).cid
            except RefNotFoundError:
                pass
        try:
            validate_ref_name(version)
            entry = self.refs.branch_entry(version)
            if entry is not None and entry.commit is not None:
                return entry.commit
            c = self.refs.tag_commit(version)
            if c is not None:
                return c
        except InvalidArgumentError:
            pass
        if version.startswith("b") and len(version) > 40:
            return self.commit_info(version).cid
        raise RefNotFoundError(f"{version!r} is not a branch, tag or commit of the repository")

    def ancestry(self, version: str | None = None, *, respect_expiry: bool = True) -> Iterator[Commit]:
        """Commits from ``version`` back along first parents (stopping at expired history)."""
        cid: str | None = self.resolve(version)
        cutoff = self.refs.expiry_cutoff() if respect_expiry else None
        first = True
        while cid is not None:
            try:
                c = self.commit_info(cid)
            except RefNotFoundError:
                if first:
                    raise
                return  # expired and collected
            if cutoff is not None and not first and c.time < cutoff:
                return
            yield c
            first = False
            cid = c.parent

    def log(self, version: str | None = "main", *, limit: int | None = None) -> list[Commit]:
        """Commits of a branch (or tag / commit), newest first."""
        out = []
        for c in self.ancestry(version):
            out.append(c)
            if limit is not None and len(out) >= limit:
                break
        return out

    # -- sessions ----------------------------------------------------------------------------------

    def readonly_session(
        self,
        branch: str | None = None,
        *,
        tag: str | None = None,
        commit: str | None = None,
        as_of: datetime | None = None,
        verify: bool = False,
    ) -> Session:
        """A read-only view of a version.

        Parameters
        ----------
        branch, tag, commit
            Which version (default: ``main``).
        as_of
            With a branch (default ``main``): the newest commit of its history made at or before
            this time.
        verify
            Check every chunk read against its content id.
        """
        if as_of is not None:
            if tag is not None or commit is not None:
                raise InvalidArgumentError("as_of goes with a branch, not a tag or commit")
            if as_of.tzinfo is None:
                as_of = as_of.replace(tzinfo=UTC)
            for c in self.ancestry(branch or "main"):
                if c.time <= as_of:
                    return Session(self, c.cid, read_only=True, verify=verify)
            raise RefNotFoundError(f"branch {branch or 'main'!r} has no commit at or before {as_of.isoformat()}")
        if branch is None and tag is None and commit is None:
            branch = "main"
        base = self.resolve(branch=branch, tag=tag, commit=commit)
        return Session(self, base, branch=branch, read_only=True, verify=verify)

    def writable_session(self, branch: str = "main", *, verify: bool = False) -> Session:
        """A session that commits to ``branch``."""
        return Session(self, self.refs.branch_tip(branch), branch=branch, read_only=False, verify=verify)

    # -- refs --------------------------------------------------------------------------------------

    def create_branch(self, name: str, at: str | None = "main") -> str:
        """Create branch ``name`` at a version (branch, tag or commit); return its commit."""
        cid = self.resolve(at)
        self.refs.create_branch(name, cid)
        return cid

    def delete_branch(self, name: str) -> None:
        if name == "main":
            raise InvalidArgumentError("the main branch cannot be deleted")
        self.refs.delete_branch(name)

    def reset_branch(self, name: str, to: str, *, expected: str | None = None) -> None:
        """Point a branch at another version; with ``expected``, only if it still points there."""
        self.refs.reset_branch(name, self.resolve(to), None if expected is None else self.resolve(expected))

    def list_branches(self) -> dict[str, str]:
        return self.refs.list_branches()

    def create_tag(self, name: str, at: str | None = "main") -> str:
        """Create an immutable tag at a version; return its commit."""
        cid = self.resolve(at)
        self.refs.create_tag(name, cid)
        return cid

    def delete_tag(self, name: str) -> None:
        self.refs.delete_tag(name)

    def list_tags(self) -> dict[str, str]:
        return self.refs.list_tags()

    # -- history and care --------------------------------------------------------------------------

    def diff(self, a: str, b: str) -> Any:
        """What changed from version ``a`` to version ``b`` (a :class:`~chunkref.repo.diff.Diff`)."""
        from chunkref.repo.diff import diff_commits

        return diff_commits(self, self.resolve(a), self.resolve(b))

    def expire(self, older_than: datetime | timedelta) -> datetime:
        """Stop guaranteeing history older than a time (branch tips and tags are kept).

        Commits are not rewritten (their CIDs cover their parents); the cut-off is recorded and
        :meth:`log`, :meth:`gc` and :meth:`verify` stop there.  Returns the cut-off.
        """
        cutoff = utcnow() - older_than if isinstance(older_than, timedelta) else older_than
        if cutoff.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=UTC)
        self.refs.set_expiry(cutoff)
        return cutoff

    def verify(self, *, virtual: bool = False) -> Any:
        """Re-hash every object reachable from a ref (and virtual sources with ``virtual``)."""
        from chunkref.repo.verify import verify_repository

        return verify_repository(self, virtual=virtual)

    def gc(self, older_than: timedelta = timedelta(days=1), *, dry_run: bool = False, full: bool = False) -> Any:
        """Delete unreachable objects older than a grace period (store timestamps)."""
        from chunkref.repo.gc import collect_garbage

        return collect_garbage(self, older_than, dry_run=dry_run, full=full)

    def import_manifest(
        self, manifest: Any, path: str = "", *, branch: str = "main", message: str | None = None
    ) -> str:
        """Commit a scanned manifest's nodes under ``path`` as virtual references (no bytes copied)."""
        from chunkref.manifest.manifest import Manifest

        if isinstance(manifest, str):
            manifest = Manifest.load(manifest)
        s = self.writable_session(branch)
        arrays = s.import_manifest(manifest, path)
        return s.commit(message or f"Import {len(arrays)} arrays from {manifest.location or 'a manifest'}")

    def export(self, version: str, target: Any, *, storage_options: Mapping[str, Any] | None = None) -> Any:
        """Write a version as a plain Zarr store (see :func:`chunkref.repo.export.export_version`)."""
        from chunkref.repo.export import export_version

        return export_version(self, version, target, storage_options=storage_options)

    def _json_cid(self, obj: Any) -> str:
        return self.objects.json_cid(obj)[0]


__all__ += ["DAG_JSON"]
