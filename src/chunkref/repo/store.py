"""SessionStore: a repository session as a chunkref Store.

Keys are those of a plain Zarr store: ``<node>/zarr.json`` (or ``.zarray`` / ``.zgroup`` /
``.zattrs``) and ``<array>/<chunk key>`` in the array's chunk key encoding.  Behind them:

* metadata documents live in the session's nodes;
* a chunk key is decoded into grid coords, looked up in the session's change set, else in the
  committed manifest pages of the array (one page load serves thousands of chunks), giving a
  repository object (read from ``objects/``; verified against its CID with ``verify=True``), a
  virtual range of an outside file (read through the reference store under the repository's
  allow-list, verified when its content id is recorded) or inline bytes;
* writing a chunk hashes the bytes, stores the object (identical bytes are stored once) and
  records its CID in the change set; for a sharded array the shard is the chunk, so partial
  shard reads become byte-range reads of the shard object.

Absent chunks read as None (the fill value); a chunk whose object or source cannot be read raises
a typed error naming the key: never a fill value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from chunkref.errors import InvalidKeyError, MetadataError, ReadOnlyError
from chunkref.manifest.manifest import V2_ARRAY_DOC, V2_ATTRS_DOC, V2_GROUP_DOC, V3_DOC
from chunkref.repo.objects import RAW
from chunkref.repo.virtual import read_virtual
from chunkref.storage.base import ByteRange, Store, slice_value

if TYPE_CHECKING:
    from chunkref.repo.session import Session

__all__ = ["SessionStore"]

DOC_NAMES = frozenset({V3_DOC, V2_ARRAY_DOC, V2_GROUP_DOC, V2_ATTRS_DOC})
CONSOLIDATED = ".zmetadata"


def _doc_bytes(doc: Any) -> bytes:
    return json.dumps(doc, indent=2, allow_nan=True).encode("utf-8")


class SessionStore(Store):
    """A :class:`~chunkref.repo.session.Session` as a chunkref Store (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.read_only = session.read_only
        self._dirs: dict[str, str | None] = {}
        self._dirs_version = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"session": self.session, "read_only": self.read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["session"])  # type: ignore[misc]
        self.read_only = state["read_only"] or self.session.read_only

    def __repr__(self) -> str:
        return f"SessionStore({self.session!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionStore) and other.session is self.session

    def __hash__(self) -> int:
        return id(self.session)

    def with_read_only(self, read_only: bool = True) -> Store:
        if not read_only and self.session.read_only:
            raise ReadOnlyError("a read-only session's store cannot be made writable")
        new = SessionStore(self.session)
        new.read_only = read_only
        return new

    # -- key resolution --------------------------------------------------------------------------

    def _array_of_dir(self, d: str) -> str | None:
        """The array whose chunk keys live in directory ``d`` (None: not inside an array)."""
        s = self.session
        if self._dirs_version != s._version:
            self._dirs = {}
            self._dirs_version = s._version
        if d in self._dirs:
            return self._dirs[d]
        found = None
        if s.node_kind("") == "array":
            found = ""
        elif d:
            parts = d.split("/")
            path = ""
            for part in parts:
                path = f"{path}/{part}" if path else part
                kind = s.node_kind(path)
                if kind == "array":
                    found = path
                    break
                if kind is None:
                    break
        self._dirs[d] = found
        return found

    def locate(self, key: str) -> tuple[str, int] | None:
        """``(array path, flat chunk index)`` of a chunk key, or None when it names no chunk."""
        d = key.rpartition("/")[0]
        path = self._array_of_dir(d)
        if path is None:
            return None
        view = self.session.array_view(path)
        if view is None:
            return None
        rel = key[len(path) + 1 :] if path else key
        layout = view.layout
        try:
            coords = layout.encoding.decode(rel, len(layout.grid_shape))
        except InvalidKeyError:
            return None
        grid = layout.grid_shape
        if any(c >= g for c, g in zip(coords, grid)):
            return None
        flat = int(np.ravel_multi_index(coords, grid)) if grid else 0
        return path, flat

    # -- reads -----------------------------------------------------------------------------------

    def _get(self, key: str, range: ByteRange | None) -> bytes | None:
        return self._get_many([(key, range)])[0]

    def _get_many(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        s = self.session
        out: list[bytes | None] = [None] * len(requests)
        by_array: dict[str, list[tuple[int, int]]] = {}
        for i, (key, rng) in enumerate(requests):
            head, _, name = key.rpartition("/")
            if name in DOC_NAMES:
                docs = s.raw_documents(head)
                if docs is not None and name in docs:
                    out[i] = slice_value(key, _doc_bytes(docs[name]), rng)
                continue
            loc = self.locate(key)
            if loc is not None:
                by_array.setdefault(loc[0], []).append((i, loc[1]))
        native: list[tuple[int, str]] = []
        virtual = []
        for path, items in by_array.items():
            entries = s.resolve(path, np.fromiter((f for _, f in items), np.int64, len(items)))
            for (i, _), e in zip(items, entries):
                if e is None:
                    continue
                key, rng = requests[i]
                kind = e[0]
                if kind == "native":
                    native.append((i, e[1]))
                elif kind == "inline":
                    out[i] = slice_value(key, e[1], rng)
                else:
                    _, url, off, ln, cid = e
                    virtual.append((i, (key, url, off, ln, cid, rng)))
        if native:
            blobs = s.repo.objects.get_many(
                [c for _, c in native],
                verify=s.verify,
                ranges=[requests[i][1] for i, _ in native],
                what=[f"chunk {requests[i][0]!r}" for i, _ in native],
            )
            for (i, _), b in zip(native, blobs):
                out[i] = b
        if virtual:
            repo = s.repo
            got = read_virtual(
                [r for _, r in virtual],
                allow=repo.allow,
                storage_options=repo.storage_options,
                verify=repo.verify_virtual or s.verify,
            )
            for (i, _), b in zip(virtual, got):
                out[i] = b
        return out

    def _entry(self, key: str) -> tuple | None:
        loc = self.locate(key)
        if loc is None:
            return None
        return self.session.resolve(loc[0], np.array([loc[1]]))[0]

    def _exists(self, key: str) -> bool:
        head, _, name = key.rpartition("/")
        if name in DOC_NAMES:
            docs = self.session.raw_documents(head)
            return docs is not None and name in docs
        return self._entry(key) is not None

    def _getsize(self, key: str) -> int | None:
        head, _, name = key.rpartition("/")
        if name in DOC_NAMES:
            docs = self.session.raw_documents(head)
            return len(_doc_bytes(docs[name])) if docs is not None and name in docs else None
        e = self._entry(key)
        if e is None:
            return None
        if e[0] == "inline":
            return len(e[1])
        if e[0] == "native":
            return int(e[2])
        return super()._getsize(key)

    # -- listing ---------------------------------------------------------------------------------

    def _chunk_keys(self, path: str) -> list[str]:
        view = self.session.array_view(path)
        if view is None:
            return []
        flat = self.session.present_flat(path)
        if flat.size == 0:
            return []
        grid = view.layout.grid_shape
        coords = np.stack(np.unravel_index(flat, grid), axis=1) if grid else np.zeros((flat.size, 0), np.int64)
        prefix = f"{path}/" if path else ""
        return [prefix + k for k in view.layout.encoding.encode_many(coords)]

    def _list(self, prefix: str) -> Iterator[str]:
        s = self.session
        keys: list[str] = []
        for path, kind in s.iter_nodes(""):
            base = f"{path}/" if path else ""
            docs = s.raw_documents(path) or {}
            keys.extend(base + n for n in docs if (base + n).startswith(prefix))
            if kind == "array" and (base.startswith(prefix) or prefix.startswith(base)):
                keys.extend(k for k in self._chunk_keys(path) if k.startswith(prefix))
        return iter(sorted(keys))

    def _list_dir(self, prefix: str) -> list[str]:
        s = self.session
        path = prefix[:-1] if prefix.endswith("/") else prefix
        kind = s.node_kind(path)
        if kind is None:
            # Inside an array's chunk key space ("a/c/"): list from its keys.
            return super()._list_dir(prefix)
        names = set((s.raw_documents(path) or {}).keys())
        if kind == "group":
            names.update(s.children(path))
        else:
            n = len(prefix)
            names.update(k[n:].split("/", 1)[0] for k in self._chunk_keys(path))
        return sorted(names)

    # -- writes ----------------------------------------------------------------------------------

    def _set(self, key: str, value: bytes) -> None:
        self._set_many([(key, value)])

    def _set_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        s = self.session
        chunks: list[tuple[str, bytes]] = []
        for key, value in items:
            head, _, name = key.rpartition("/")
            if name == CONSOLIDATED:
                raise InvalidKeyError(
                    f"{key!r}: consolidated metadata is not stored in a repository (it would go stale "
                    "when other commits are merged in); write with consolidated=False"
                )
            if name in DOC_NAMES:
                try:
                    doc = json.loads(value)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise MetadataError(f"{key!r} is not valid JSON: {exc}") from exc
                s.set_document(head, name, doc)
            else:
                chunks.append((key, value))
        if not chunks:
            return
        located = []
        for key, _ in chunks:
            loc = self.locate(key)
            if loc is None:
                raise InvalidKeyError(
                    f"cannot write {key!r}: it is neither a metadata document nor a chunk key of an array "
                    "in this session"
                )
            located.append(loc)
        # Chunks up to the repository's inline threshold live in the manifest page itself
        # (no object, no request per chunk); the page's CID covers them.
        limit = s.repo.inline_threshold
        big = [i for i, (_, v) in enumerate(chunks) if len(v) > limit]
        blobs = [chunks[i][1] for i in big]
        objects = s.repo.objects
        cids = objects.cids(blobs, RAW)
        if blobs:
            s.write_journal(cids)
            objects.put_many(blobs, RAW, cids=cids)
        entry: list[tuple] = [("inline", v) for _, v in chunks]
        for i, cid, blob in zip(big, cids, blobs):
            entry[i] = ("native", cid, len(blob))
        by_array: dict[str, tuple[list[int], list[tuple]]] = {}
        for (path, flat), e in zip(located, entry):
            flats, entries = by_array.setdefault(path, ([], []))
            flats.append(flat)
            entries.append(e)
        for path, (flats, entries) in by_array.items():
            s.set_chunks(path, flats, entries)

    def _set_if_not_exists(self, key: str, value: bytes) -> bool:
        if self._exists(key):
            return False
        self._set(key, value)
        return True

    def _delete(self, key: str) -> None:
        s = self.session
        head, _, name = key.rpartition("/")
        if name in DOC_NAMES:
            s.delete_document(head, name)
            return
        loc = self.locate(key)
        if loc is not None and self._entry(key) is not None:
            s.set_chunks(loc[0], [loc[1]], [None])

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything below ``prefix``; a node's whole subtree goes in one step."""
        path = prefix.rstrip("/")
        if path and self.session.node_kind(path) is not None:
            self._check_writable(prefix)
            self.session.remove_node(path)
            return
        super().delete_prefix(prefix)

    def clear(self) -> None:
        self._check_writable("")
        self.session.remove_node("")
