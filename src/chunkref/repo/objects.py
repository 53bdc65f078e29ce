"""Immutable, content-addressed repository objects.

Every object (chunk bytes, manifest page, node, change summary, commit) is stored once under the
string form of its CIDv1 (:mod:`chunkref.manifest.cid`)::

    objects/<two characters of the digest>/<cid>

The fan-out characters are the second-to-last and third-to-last of the base32 string: the last
character of a 36-byte CID carries only 3 bits, and the first ones are the fixed CID header
(``bafkrei``...), so these two give 1024 evenly filled folders.

Codecs (part of the CID): ``raw`` (0x55) for chunk bytes and manifest pages, ``dag-json``
(0x0129) for the JSON objects (nodes, change summaries, commits).  JSON objects use a canonical
encoding (:func:`encode_json`): UTF-8, sorted keys, no whitespace, links as ``{"/": "<cid>"}``,
so equal content always has equal bytes and an equal CID (golden tests pin them).

Writes are plain ``set``: any writer of a CID writes the same bytes, so a racing or repeated
write is harmless, and re-writing an existing object refreshes its store timestamp, which keeps
:func:`chunkref.repo.gc.gc` from collecting an old object a new commit has just re-used.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from chunkref._threads import map_batched
from chunkref.errors import HashMismatchError, InvalidArgumentError, MissingObjectError
from chunkref.manifest.cid import (
    RAW,
    cid_from_string,
    cid_to_string,
    compute_cid,
    parse_cid,
    verify_cid,
)
from chunkref.storage.base import OffsetRequest, RangeLike, Store, slice_value

__all__ = [
    "DAG_JSON",
    "OBJECTS_PREFIX",
    "RAW",
    "ObjectStore",
    "decode_json",
    "encode_json",
    "link",
    "object_key",
    "unlink",
]

#: Multicodec of the JSON objects (nodes, commits, change summaries).
DAG_JSON = 0x0129
OBJECTS_PREFIX = "objects/"
HASH_FUNCTIONS = ("sha2-256", "blake3")

_WHOLE = OffsetRequest(0)
# Hashing releases the GIL for buffers of a few KiB and more: batch it on the thread pool.
_HASH_BATCH_BYTES = 1 << 20


def object_key(cid: str) -> str:
    """Store key of the object named ``cid``."""
    if not isinstance(cid, str) or len(cid) < 8 or not cid.startswith("b"):
        raise InvalidArgumentError(f"not a CID string: {cid!r}")
    return f"{OBJECTS_PREFIX}{cid[-3:-1]}/{cid}"


def cid_of_key(key: str) -> str | None:
    """The CID named by an object key, or None for other keys."""
    if not key.startswith(OBJECTS_PREFIX):
        return None
    name = key.rsplit("/", 1)[-1]
    return name if name.startswith("b") and object_key(name) == key else None


def link(cid: str) -> dict[str, str]:
    """A DAG-JSON link to ``cid``."""
    return {"/": cid}


def unlink(value: Any, what: str) -> str:
    """The CID of a DAG-JSON link (raises naming ``what`` when it is not one)."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("/"), str):
        return value["/"]
    raise InvalidArgumentError(f"{what}: expected a link {{'/': cid}}, got {value!r}")


def encode_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8 (part of the format)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode("utf-8")


def decode_json(data: bytes, what: str) -> Any:
    """Parse a JSON object's bytes (errors name ``what``)."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HashMismatchError(f"repository object {what} is not valid JSON: {exc}") from exc


def _check_hash(hash_function: str) -> str:
    if hash_function not in HASH_FUNCTIONS:
        raise InvalidArgumentError(f"unknown hash_function {hash_function!r}; known: {list(HASH_FUNCTIONS)}")
    return hash_function


class _LRU:
    """A small thread-safe LRU cache bounded by a total cost (bytes or entries)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._cost = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: str, value: Any, cost: int = 1) -> None:
        if cost > self.capacity:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._cost -= old[1]
            self._data[key] = (value, cost)
            self._cost += cost
            while self._cost > self.capacity and self._data:
                _, (_, c) = self._data.popitem(last=False)
                self._cost -= c

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._cost -= old[1]


class ObjectStore:
    """Content-addressed objects in a :class:`~chunkref.storage.base.Store`.

    Parameters
    ----------
    store
        Where the repository lives.
    hash_function
        Multihash of new CIDs (``"sha2-256"`` or ``"blake3"``); objects of either are readable.

    Notes
    -----
    Decoded JSON objects are cached by CID (they never change); pickles as its store and hash.
    """

    def __init__(self, store: Store, hash_function: str = "sha2-256") -> None:
        self.store = store
        self.hash_function = _check_hash(hash_function)
        self._json_cache = _LRU(1 << 16)
        #: Decoded forms of JSON objects (nodes) by CID, for readers that parse them further.
        self.decoded = _LRU(1 << 16)

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "hash_function": self.hash_function}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["hash_function"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ObjectStore({self.store!r}, hash_function={self.hash_function!r})"

    # -- naming --------------------------------------------------------------------------------

    def cid(self, data: bytes, codec: int = RAW) -> str:
        """The CID string ``data`` gets in this repository."""
        return cid_to_string(compute_cid(data, self.hash_function, codec))

    def cids(self, blobs: Sequence[bytes], codec: int = RAW) -> list[str]:
        """CIDs of many values, hashed in parallel batches (hashlib releases the GIL)."""
        if not blobs:
            return []
        avg = max(1, sum(len(b) for b in blobs) // len(blobs))
        per_batch = max(1, _HASH_BATCH_BYTES // avg)

        def work(batch: list[bytes]) -> list[str]:
            return [self.cid(b, codec) for b in batch]

        return [c for part in map_batched(work, list(blobs), min_batch=per_batch) for c in part]

    # -- writes --------------------------------------------------------------------------------

    def put(self, data: bytes, codec: int = RAW) -> str:
        """Store ``data``; return its CID."""
        cid = self.cid(data, codec)
        self.store.set(object_key(cid), data)
        return cid

    def put_many(self, blobs: Sequence[bytes], codec: int = RAW, cids: Sequence[str] | None = None) -> list[str]:
        """Store many values (concurrently where the backend can); return their CIDs."""
        if cids is None:
            cids = self.cids(blobs, codec)
        seen: dict[str, bytes] = {}
        for c, b in zip(cids, blobs):
            seen.setdefault(c, b)
        if seen:
            self.store.set_many([(object_key(c), b) for c, b in seen.items()])
        return list(cids)

    def put_json(self, obj: Any) -> str:
        """Store a JSON object canonically; return its CID."""
        data = encode_json(obj)
        cid = self.put(data, DAG_JSON)
        self._json_cache.put(cid, obj)
        return cid

    def json_cid(self, obj: Any) -> tuple[str, bytes]:
        """``(cid, bytes)`` of a JSON object without storing it."""
        data = encode_json(obj)
        return self.cid(data, DAG_JSON), data

    # -- reads ---------------------------------------------------------------------------------

    def get(self, cid: str, *, verify: bool = False, range: RangeLike = None, what: str = "") -> bytes:
        """The bytes of object ``cid`` (or a byte range of them).

        Raises
        ------
        MissingObjectError
            The object is not in the store.
        HashMismatchError
            ``verify`` and the bytes do not hash to ``cid`` (the object is corrupt).
        """
        return self.get_many([cid], verify=verify, ranges=[range], what=[what])[0]

    def get_many(
        self,
        cids: Sequence[str],
        *,
        verify: bool = False,
        ranges: Sequence[RangeLike] | None = None,
        what: Sequence[str] | None = None,
    ) -> list[bytes]:
        """Bytes of many objects in one batched store read (see :meth:`get`).

        With ``verify`` whole objects are read and hashed before any range is cut from them.
        """
        if not cids:
            return []
        ranges = list(ranges) if ranges is not None else [None] * len(cids)
        # Whole objects are read as ``OffsetRequest(0)``: s3fs answers a plain whole-file read
        # by asking the size from its listing cache first, which misses objects written by other
        # writers after this process listed their folder.
        reqs = [(object_key(c), _WHOLE if (verify or r is None) else r) for c, r in zip(cids, ranges)]
        blobs = self.store.get_many(reqs)
        out: list[bytes] = []
        for i, (c, blob) in enumerate(zip(cids, blobs)):
            if blob is None:
                ctx = f" ({what[i]})" if what and what[i] else ""
                raise MissingObjectError(f"repository object {c}{ctx} is missing from {self.store!r}")
            out.append(blob)
        if verify:
            self.check_many(cids, out, what)
            out = [slice_value(object_key(c), b, r) if r is not None else b for c, b, r in zip(cids, out, ranges)]
        return out

    def check(self, cid: str, data: bytes, what: str = "") -> None:
        """Raise :class:`HashMismatchError` naming the object when ``data`` does not match ``cid``."""
        try:
            ok = verify_cid(cid_from_string(cid), data)
        except InvalidArgumentError as exc:
            raise HashMismatchError(f"repository object {cid!r}: unreadable content id: {exc}") from exc
        if ok is None:
            code = parse_cid(cid)[2]
            raise HashMismatchError(
                f"repository object {cid} uses hash 0x{code:x}, which this installation cannot compute"
            )
        if not ok:
            ctx = f" ({what})" if what else ""
            raise HashMismatchError(
                f"repository object {cid}{ctx} at {object_key(cid)!r} does not match its content id: "
                "the stored bytes are corrupt"
            )

    def check_many(self, cids: Sequence[str], blobs: Sequence[bytes], what: Sequence[str] | None = None) -> None:
        """:meth:`check` for many objects, hashed in parallel batches."""
        items = list(zip(cids, blobs, what or [""] * len(cids)))
        if not items:
            return
        avg = max(1, sum(len(b) for b in blobs) // len(blobs))

        def work(batch: list[tuple[str, bytes, str]]) -> list[None]:
            for c, b, w in batch:
                self.check(c, b, w)
            return [None] * len(batch)

        map_batched(work, items, min_batch=max(1, _HASH_BATCH_BYTES // avg))

    def get_json(self, cid: str, what: str = "") -> Any:
        """A JSON object, verified against its CID on every store read (cached by CID)."""
        hit = self._json_cache.get(cid)
        if hit is not None:
            return hit
        return self.get_json_many([cid], [what])[0]

    def get_json_many(self, cids: Sequence[str], what: Sequence[str] | None = None) -> list[Any]:
        """Many JSON objects (one batched read for those not cached)."""
        out: list[Any] = [self._json_cache.get(c) for c in cids]
        todo = [i for i, o in enumerate(out) if o is None]
        if todo:
            blobs = self.get_many([cids[i] for i in todo], verify=True, what=[(what[i] if what else "") for i in todo])
            for i, blob in zip(todo, blobs):
                obj = decode_json(blob, cids[i])
                self._json_cache.put(cids[i], obj)
                out[i] = obj
        return out

    def exists(self, cid: str) -> bool:
        return self.store.exists(object_key(cid))

    # -- maintenance -----------------------------------------------------------------------------

    def delete_many(self, cids: Iterable[str]) -> None:
        cids = list(cids)
        keys = [object_key(c) for c in cids]
        for c in cids:
            self._json_cache.discard(c)
            for prefix in ("", "commit:", "changes:"):
                self.decoded.discard(prefix + c)
        if keys:
            self.store.delete_many(keys)

    def list(self) -> Iterator[str]:
        """Every object CID in the store (lists the whole ``objects/`` prefix: full GC only)."""
        for key in self.store.list_prefix(OBJECTS_PREFIX):
            cid = cid_of_key(key)
            if cid is not None:
                yield cid
