"""One behavioural suite run against every store backend.

Backends: MemoryStore, LocalStore, FsspecStore over memory://, over a local directory and over
S3 (moto), and ZipStore where the zip format allows (no overwrite, no delete).  Each test gets a
fresh, empty, writable store from ``case.make()``; ``case.reader(store)`` gives the store to read
back from (the same one, except that a zip archive is closed and reopened for reading so the
direct ``pread`` path is exercised).
"""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from chunkref.errors import InvalidKeyError, ReadOnlyError, ShortReadError, StoreError
from chunkref.storage import (
    CountingStore,
    FaultStore,
    FsspecStore,
    LocalStore,
    MemoryStore,
    OffsetRequest,
    RangeRequest,
    Store,
    SuffixRequest,
    ZipStore,
)

BAD_KEYS = ["", "..", "a/../b", "../x", "a/..", "/abs", "a//b", "a/", "./a", "a\\b", "C:/x", "a\x00b", "a/./b"]


@dataclass
class Case:
    name: str
    make: Callable[[], Store]
    overwrite: bool = True  # values can be replaced and deleted
    reopen: Callable[[Store], Store] | None = None

    def reader(self, store: Store) -> Store:
        return self.reopen(store) if self.reopen else store


def _zip_reopen(store: Store) -> Store:
    assert isinstance(store, ZipStore)
    store.close()
    return ZipStore(store.path, "r")


CASES = ["memory", "local", "fsspec-memory", "fsspec-local", pytest.param("fsspec-s3", marks=pytest.mark.network), "zip"]


@pytest.fixture(scope="module")
def s3_bucket(s3_server) -> str:
    """One bucket for the module; every test works below its own random prefix."""
    return s3_server.make_bucket()


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path) -> Iterator[Case]:
    name = request.param
    if name == "memory":
        yield Case(name, MemoryStore)
    elif name == "local":
        yield Case(name, lambda: LocalStore(tmp_path / "local"))
    elif name == "fsspec-memory":
        root = f"memory://conformance-{uuid.uuid4().hex}"
        yield Case(name, lambda: FsspecStore(root))
        import fsspec

        fsspec.filesystem("memory").rm(root, recursive=True) if fsspec.filesystem("memory").exists(root) else None
    elif name == "fsspec-local":
        yield Case(name, lambda: FsspecStore(f"file://{tmp_path}/fs"))
    elif name == "fsspec-s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        root = f"s3://{bucket}/{uuid.uuid4().hex}"
        yield Case(name, lambda: FsspecStore(root, storage_options=s3.storage_options))
    elif name == "zip":
        yield Case(name, lambda: ZipStore(tmp_path / "store.zip", "w"), overwrite=False, reopen=_zip_reopen)
    else:  # pragma: no cover
        raise AssertionError(name)


@pytest.fixture
def store(case: Case) -> Iterator[Store]:
    s = case.make()
    yield s
    s.close()


VALUE = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable


# -- basic reads and writes --------------------------------------------------------------------


def test_roundtrip_and_absent(case: Case, store: Store) -> None:
    values = {"a": b"hello", "b/c": b"", "b/d/e": VALUE, "f.json": b'{"x": 1}'}
    store.set_many(values.items())
    store.set("big", VALUE * 256)
    r = case.reader(store)
    for k, v in values.items():
        assert r.get(k) == v
        assert r.exists(k)
        assert r.getsize(k) == len(v)
    assert r.get("big") == VALUE * 256
    assert r.get("missing") is None
    assert r.get("b") is None  # a "directory" holds no value
    assert not r.exists("missing") and not r.exists("b")
    assert r.getsize("missing") is None and r.getsize("b") is None
    assert r.get("missing", RangeRequest(0, 1)) is None
    assert r.get("missing", SuffixRequest(3)) is None
    assert r.get("missing", OffsetRequest(0)) is None


def test_accepts_bytes_like(case: Case, store: Store) -> None:
    import numpy as np

    store.set("ba", bytearray(b"xy"))
    store.set("mv", memoryview(b"zw"))
    store.set("np", np.arange(3, dtype="<u2"))
    r = case.reader(store)
    assert r.get("ba") == b"xy" and r.get("mv") == b"zw" and r.get("np") == b"\x00\x00\x01\x00\x02\x00"


def test_overwrite_and_delete(case: Case, store: Store) -> None:
    store.set("k", b"one")
    if not case.overwrite:
        with pytest.raises(StoreError, match="'k'"):
            store.set("k", b"two")
        with pytest.raises(StoreError, match="'k'"):
            store.delete("k")
        store.delete("never-written")  # deleting an absent key is fine even here
        assert case.reader(store).get("k") == b"one"
        return
    store.set("k", b"two")
    assert store.get("k") == b"two"
    store.delete("k")
    assert store.get("k") is None
    store.delete("k")  # absent: not an error
    store.delete("no/such/key")


def test_delete_many_prefix_clear(case: Case, store: Store) -> None:
    if not case.overwrite:
        pytest.skip("zip members cannot be deleted")
    store.set_many([("g/a", b"1"), ("g/b/c", b"2"), ("gx", b"3"), ("h", b"4")])
    store.delete_many(["g/a", "nope"])
    assert sorted(store.list()) == ["g/b/c", "gx", "h"]
    store.delete_prefix("g")  # means "g/": must not touch "gx"
    assert sorted(store.list()) == ["gx", "h"]
    assert store.list_dir("") == ["gx", "h"]  # no empty directory left behind
    store.clear()
    assert list(store.list()) == []


# -- listing -----------------------------------------------------------------------------------


def test_listing(case: Case, store: Store) -> None:
    keys = ["zarr.json", "a/zarr.json", "a/c/0/0", "a/c/0/1", "a/c/1/0", "ab/x", "b", "a b/sp ace"]
    store.set_many((k, b"v") for k in keys)
    r = case.reader(store)
    assert sorted(r.list()) == sorted(keys)
    assert list(r.list_prefix("a/")) == sorted(["a/zarr.json", "a/c/0/0", "a/c/0/1", "a/c/1/0"])
    assert list(r.list_prefix("a")) == sorted(["a/zarr.json", "a/c/0/0", "a/c/0/1", "a/c/1/0", "ab/x", "a b/sp ace"])
    assert list(r.list_prefix("a/c/0/")) == ["a/c/0/0", "a/c/0/1"]
    assert list(r.list_prefix("nothing/")) == []
    assert list(r.list_prefix("")) == sorted(keys)
    assert r.list_dir("") == ["a", "a b", "ab", "b", "zarr.json"]
    assert r.list_dir("a") == ["c", "zarr.json"]
    assert r.list_dir("a/") == ["c", "zarr.json"]
    assert r.list_dir("a/c") == ["0", "1"]
    assert r.list_dir("a/c/0") == ["0", "1"]
    assert r.list_dir("missing") == []
    assert r.list_dir("b") == []  # a key, not a directory


# -- byte ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rng, expected",
    [
        (RangeRequest(0, 10), VALUE[0:10]),
        ((100, 356), VALUE[100:356]),
        (RangeRequest(1000, 1024), VALUE[1000:]),
        (RangeRequest(1024, 1024), b""),
        (RangeRequest(5, 5), b""),
        (OffsetRequest(0), VALUE),
        (OffsetRequest(1000), VALUE[1000:]),
        (OffsetRequest(1024), b""),
        (SuffixRequest(10), VALUE[-10:]),
        (SuffixRequest(1024), VALUE),
        (SuffixRequest(5000), VALUE),
        (SuffixRequest(0), b""),
        (None, VALUE),
    ],
    ids=lambda v: repr(v) if not isinstance(v, bytes) else f"{len(v)}B",
)
def test_ranges(case: Case, store: Store, rng, expected: bytes) -> None:
    store.set("v", VALUE)
    assert case.reader(store).get("v", rng) == expected


@pytest.mark.parametrize(
    "rng", [RangeRequest(1000, 1025), RangeRequest(1024, 1030), RangeRequest(2000, 2001), RangeRequest(1025, 1025),
            OffsetRequest(1025)],
    ids=repr,
)
def test_short_reads_raise(case: Case, store: Store, rng) -> None:
    store.set("v", VALUE)
    r = case.reader(store)
    with pytest.raises(ShortReadError, match="'v'"):
        r.get("v", rng)
    with pytest.raises(ShortReadError, match="'v'"):
        r.get_many([("v", RangeRequest(0, 1)), ("v", rng)])


def test_ranges_of_empty_value(case: Case, store: Store) -> None:
    store.set("e", b"")
    r = case.reader(store)
    assert r.get("e") == b""
    assert r.get("e", SuffixRequest(4)) == b""
    assert r.get("e", OffsetRequest(0)) == b""
    assert r.get("e", RangeRequest(0, 0)) == b""
    with pytest.raises(ShortReadError):
        r.get("e", RangeRequest(0, 1))


def test_get_many_alignment(case: Case, store: Store) -> None:
    data = {f"c/{i}": bytes([i]) * (50 + i) for i in range(40)}
    store.set_many(data.items())
    r = case.reader(store)
    reqs: list = []
    expected: list = []
    for i in range(40):
        k = f"c/{i}"
        v = data[k]
        reqs += [(k, None), (k, (1, 9)), (f"missing/{i}", None), (k, SuffixRequest(7)), (k, OffsetRequest(45)),
                 (k, (0, 3)), (k, (2, 6))]
        expected += [v, v[1:9], None, v[-7:], v[45:], v[0:3], v[2:6]]
    reqs.append(("c/0", (0, 3)))  # duplicate request
    expected.append(data["c/0"][0:3])
    assert r.get_many(reqs) == expected
    assert r.get_many([]) == []
    assert r.get_many(iter([("c/1", None)])) == [data["c/1"]]


# -- modes, keys, pickling ---------------------------------------------------------------------


def test_read_only(case: Case, store: Store) -> None:
    store.set("k", b"v")
    ro = case.reader(store).with_read_only()
    assert ro.read_only
    assert ro.get("k") == b"v"
    for op in (
        lambda: ro.set("k", b"x"),
        lambda: ro.set("new", b"x"),
        lambda: ro.set_many([("new", b"x")]),
        lambda: ro.set_if_not_exists("new", b"x"),
        lambda: ro.delete("k"),
        lambda: ro.delete_many(["k"]),
        lambda: ro.delete_prefix("k"),
        lambda: ro.clear(),
    ):
        with pytest.raises(ReadOnlyError):
            op()
    assert ro.get("k") == b"v" and ro.get("new") is None
    if case.reopen is None:
        assert not store.read_only
        store.set("other", b"w")  # the original stays writable


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_rejected_before_io(case: Case, store: Store, key: str) -> None:
    # The backend's own hooks must never run for an invalid key: make every hook explode.
    boom = AssertionError(f"backend I/O for invalid key {key!r}")

    def explode(*a, **k):
        raise boom

    for hook in ("_get", "_get_many", "_set", "_set_many", "_set_if_not_exists", "_delete", "_delete_many",
                 "_exists", "_getsize", "_list", "_list_dir"):
        setattr(store, hook, explode)
    counting = CountingStore(FaultStore(store, exc=AssertionError, ops=("get", "set", "delete", "list")))
    for s in (store, counting):
        for op in (
            lambda s=s: s.get(key),
            lambda s=s: s.get(key, RangeRequest(0, 1)),
            lambda s=s: s.get_many([("ok", None), (key, None)]),
            lambda s=s: s.set(key, b"x"),
            lambda s=s: s.set_many([("ok", b"x"), (key, b"x")]),
            lambda s=s: s.set_if_not_exists(key, b"x"),
            lambda s=s: s.delete(key),
            lambda s=s: s.delete_many(["ok", key]),
            lambda s=s: s.exists(key),
            lambda s=s: s.getsize(key),
        ):
            with pytest.raises(InvalidKeyError):
                op()
        if key not in ("", "a/"):  # "" lists everything, "a/" is a valid prefix
            with pytest.raises(InvalidKeyError):
                s.list_prefix(key)
            with pytest.raises(InvalidKeyError):
                s.list_dir(key)
    assert counting.total_requests == 0


def test_pickle(case: Case, store: Store) -> None:
    store.set("p/q", b"payload")
    r = case.reader(store)
    clone = pickle.loads(pickle.dumps(r))
    if case.name != "memory":  # MemoryStore compares by identity of its dict (a copy is another store)
        assert clone == r
    assert clone.get("p/q") == b"payload"
    assert clone.read_only == r.read_only
    ro = pickle.loads(pickle.dumps(r.with_read_only()))
    assert ro.read_only and ro.get("p/q") == b"payload"


def test_set_if_not_exists(case: Case, store: Store) -> None:
    assert store.set_if_not_exists("once", b"first") is True
    assert store.set_if_not_exists("once", b"second") is False
    assert store.get("once") == b"first"
    assert store.set_if_not_exists("dir/once", b"") is True
    assert case.reader(store).get("dir/once") == b""


def test_set_if_not_exists_race(case: Case, store: Store) -> None:
    n = 8
    results: list[bool] = [False] * n
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = store.set_if_not_exists("ref/head", b"writer-%d" % i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 1, results
    winner = results.index(True)
    assert case.reader(store).get("ref/head") == b"writer-%d" % winner


def test_concurrent_get_many_from_threads(case: Case, store: Store) -> None:
    data = {f"t/{i}": bytes([i % 256]) * (i + 1) for i in range(64)}
    store.set_many(data.items())
    r = case.reader(store)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            keys = [f"t/{(i + offset) % 64}" for i in range(64)]
            assert r.get_many([(k, None) for k in keys]) == [data[k] for k in keys]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
