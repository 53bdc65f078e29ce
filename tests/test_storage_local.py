"""LocalStore specifics: path traversal, symlink escapes, atomic writes, directory pruning."""

from __future__ import annotations

import os
import pickle
import threading

import pytest

from chunkref.errors import InvalidKeyError, ShortReadError, StoreError
from chunkref.storage import LocalStore, RangeRequest, SuffixRequest, store_from_url
from chunkref.storage import local as local_mod

TRAVERSAL_KEYS = ["..", "../escape.txt", "a/../../escape2.txt", "/abs.txt", "\\..\\x", "..\\x", "C:/x", "c:x",
                  "a\x00b", "a/./b", "a//b", "a/"]


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.mark.parametrize("key", TRAVERSAL_KEYS)
def test_traversal_keys_refused_without_io(root, tmp_path, key, monkeypatch) -> None:
    store = LocalStore(root)
    before = sorted(p.name for p in tmp_path.iterdir())

    def no_io(*a, **k):
        raise AssertionError("file system touched for an invalid key")

    for name in ("open", "makedirs", "unlink", "replace", "link", "scandir", "stat", "rmdir"):
        monkeypatch.setattr(local_mod.os, name, no_io)
    for op in (
        lambda: store.set(key, b"x"),
        lambda: store.get(key),
        lambda: store.delete(key),
        lambda: store.set_if_not_exists(key, b"x"),
        lambda: store.getsize(key),
        lambda: store.get_many([(key, None)]),
    ):
        with pytest.raises(InvalidKeyError):
            op()
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not os.path.exists("/abs.txt")


def test_percent_encoded_dots_stay_literal(root) -> None:
    store = LocalStore(root)
    store.set("%2e%2e/x", b"literal")
    assert (root / "%2e%2e" / "x").read_bytes() == b"literal"
    assert store.get("%2e%2e/x") == b"literal"


def test_symlink_escape_refused(root, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"top secret")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "filelink").symlink_to(outside / "secret")
    store = LocalStore(root)
    for op in (
        lambda: store.get("link/secret"),
        lambda: store.get("filelink"),
        lambda: store.get("filelink", RangeRequest(0, 3)),
        lambda: store.getsize("link/secret"),
        lambda: store.set("link/new", b"x"),
        lambda: store.set("link/deeper/new", b"x"),
        lambda: store.set_if_not_exists("link/new", b"x"),
        lambda: store.delete("link/secret"),
    ):
        with pytest.raises(InvalidKeyError, match="outside the store root"):
            op()
    assert (outside / "secret").read_bytes() == b"top secret"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    # Listings never reveal what lies outside the root.
    assert "link/secret" not in list(store.list())
    assert "filelink" not in list(store.list())
    assert store.list_dir("") == []


def test_symlinks_inside_root_are_followed(root) -> None:
    store = LocalStore(root)
    store.set("real/a", b"A")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    (root / "fa").symlink_to(root / "real" / "a")
    assert store.get("alias/a") == b"A"
    assert store.get("fa", SuffixRequest(1)) == b"A"
    assert sorted(store.list()) == ["alias/a", "fa", "real/a"]


def test_root_itself_may_be_a_symlink(tmp_path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real, target_is_directory=True)
    store = LocalStore(tmp_path / "via")
    store.set("k", b"v")
    assert (real / "k").read_bytes() == b"v"
    assert store.get("k") == b"v"


def test_dir_swapped_for_symlink_before_first_use(root, tmp_path) -> None:
    outside = tmp_path / "outside2"
    outside.mkdir()
    store = LocalStore(root)
    store.set("sub/a", b"1")
    store.delete("sub/a")  # prunes sub/ and forgets it was checked
    assert not (root / "sub").exists()
    (root / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKeyError):
        store.set("sub/a", b"2")
    assert list(outside.iterdir()) == []


def test_atomic_write_leaves_no_temp_files(root, monkeypatch) -> None:
    store = LocalStore(root)
    store.set("a/b", b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(local_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.set("a/b", b"new")
    monkeypatch.undo()
    assert store.get("a/b") == b"old"
    assert sorted(os.listdir(root / "a")) == ["b"]


def test_temp_files_are_not_listed(root) -> None:
    store = LocalStore(root)
    store.set("x", b"1")
    (root / ".chunkref-tmp-deadbeef").write_bytes(b"partial")
    assert list(store.list()) == ["x"]
    assert store.list_dir("") == ["x"]


def test_concurrent_overwrites_never_tear(root) -> None:
    store = LocalStore(root)
    a, b = b"a" * 200_000, b"b" * 200_000
    store.set("v", a)
    stop = threading.Event()
    seen = set()

    def writer() -> None:
        while not stop.is_set():
            store.set("v", b)
            store.set("v", a)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(200):
            v = store.get("v")
            seen.add(v[:1] + v[-1:])
            assert v in (a, b)
    finally:
        stop.set()
        t.join()


def test_delete_prunes_empty_directories(root) -> None:
    store = LocalStore(root)
    store.set("g/a/c/0/0", b"x")
    store.set("g/a/zarr.json", b"{}")
    store.delete("g/a/c/0/0")
    assert not (root / "g" / "a" / "c").exists()
    assert (root / "g" / "a").is_dir()
    store.delete("g/a/zarr.json")
    assert list(root.iterdir()) == []
    assert root.is_dir()  # the root itself stays


def test_directory_key_cannot_be_overwritten(root) -> None:
    store = LocalStore(root)
    store.set("d/x", b"1")
    with pytest.raises(StoreError, match="'d'"):
        store.set("d", b"2")
    store.delete("d")  # a directory is no value: nothing to delete
    assert store.get("d/x") == b"1"


def test_key_below_a_file_is_absent(root) -> None:
    store = LocalStore(root)
    store.set("f", b"1")
    assert store.get("f/x") is None
    assert store.getsize("f/x") is None
    store.delete("f/x")


def test_missing_root_reads_empty(tmp_path) -> None:
    store = LocalStore(tmp_path / "nope", read_only=True)
    assert store.get("a") is None
    assert list(store.list()) == []
    assert store.list_dir("") == []
    assert not (tmp_path / "nope").exists()


def test_short_read_when_file_truncated_behind_our_back(root) -> None:
    store = LocalStore(root)
    store.set("v", b"0123456789")
    (root / "v").write_bytes(b"01234")
    with pytest.raises(ShortReadError, match="'v'"):
        store.get("v", RangeRequest(2, 8))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
def test_fifo_in_root_does_not_hang(root) -> None:
    os.mkfifo(root / "pipe")
    store = LocalStore(root)
    assert store.get("pipe") is None
    assert store.get("pipe", RangeRequest(0, 1)) is None
    assert store.getsize("pipe") is None


def test_get_many_batches_through_pool(root) -> None:
    store = LocalStore(root)
    data = {f"c/{i // 100}/{i % 100}": i.to_bytes(4, "little") * (i % 7) for i in range(1000)}
    store.set_many(data.items())
    keys = list(data)
    assert store.get_many([(k, None) for k in keys]) == [data[k] for k in keys]
    assert store.get_many([(k, SuffixRequest(4)) for k in keys]) == [data[k][-4:] for k in keys]
    store.delete_many(keys[:500])
    assert sorted(store.list()) == sorted(keys[500:])


def test_identity_and_pickle(root) -> None:
    a = LocalStore(root)
    b = LocalStore(str(root) + "/")
    assert a == b and hash(a) == hash(b)
    assert LocalStore(f"file://{root}") == a
    clone = pickle.loads(pickle.dumps(a.with_read_only()))
    assert clone == a and clone.read_only
    assert "_dirs_ok" not in pickle.loads(pickle.dumps(a)).__getstate__()


def test_store_from_url_local(tmp_path) -> None:
    s = store_from_url(str(tmp_path / "d"), mode="w")
    assert isinstance(s, LocalStore) and not s.read_only
    s2 = store_from_url(f"file://{tmp_path}/d")
    assert isinstance(s2, LocalStore) and s2.read_only and s2 == s
