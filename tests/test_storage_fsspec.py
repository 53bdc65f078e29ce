"""FsspecStore specifics: HTTP behaviour and faults, merged range reads, concurrency, retries,
error mapping, S3 (moto) specifics, pickling, store_from_url."""

from __future__ import annotations

import errno
import pickle
import time
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import chunkref
from chunkref.errors import (
    AccessDeniedError,
    ShortReadError,
    SourceUnavailableError,
    TransientStoreError,
)
from chunkref.storage import (
    FsspecStore,
    OffsetRequest,
    RangeRequest,
    SuffixRequest,
    ZipStore,
    store_from_url,
)
from servers import HTTP_OPTIONS, S3Server

VALUE = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture(autouse=True)
def _fast_retries():
    with chunkref.config.set({"io.retry_backoff": 0.001}):
        yield


# -- a scriptable in-memory file system --------------------------------------------------------


class ScriptedFS(MemoryFileSystem):
    """Memory file system whose reads raise queued exceptions first, and that records calls."""

    protocol = "scriptedmem"
    cachable = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cat_errors: list[BaseException] = []
        self.info_errors: list[BaseException] = []
        self.cat_calls: list[tuple[str, int | None, int | None]] = []
        self.cat_ranges_calls = 0

    def cat_file(self, path, start=None, end=None, **kwargs):
        self.cat_calls.append((path, start, end))
        if self.cat_errors:
            raise self.cat_errors.pop(0)
        return super().cat_file(path, start, end, **kwargs)

    def cat_ranges(self, *args, **kwargs):
        self.cat_ranges_calls += 1
        return super().cat_ranges(*args, **kwargs)

    def info(self, path, **kwargs):
        if self.info_errors:
            raise self.info_errors.pop(0)
        return super().info(path, **kwargs)


class StatusError(Exception):
    """Looks like aiohttp's ClientResponseError: carries an HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


@pytest.fixture
def scripted():
    fs = ScriptedFS()
    root = f"/scripted-{uuid.uuid4().hex}"
    store = FsspecStore.from_filesystem(fs, root)
    store.set("v", VALUE)
    fs.cat_calls.clear()
    fs.cat_ranges_calls = 0
    yield fs, store
    fs.rm(root, recursive=True)


@pytest.mark.parametrize(
    "exc", [TimeoutError("slow"), OSError(errno.EBUSY, "SlowDown"), OSError(errno.EREMOTEIO, "InternalError"),
            StatusError(503), StatusError(429), ConnectionResetError("reset")],
    ids=repr,
)
def test_transient_errors_are_retried(scripted, exc) -> None:
    fs, store = scripted
    fs.cat_errors = [exc, exc]
    assert store.get("v", RangeRequest(0, 4)) == VALUE[:4]
    assert len(fs.cat_calls) == 3


def test_retries_exhausted_raise_transient(scripted) -> None:
    fs, store = scripted
    fs.cat_errors = [TimeoutError("slow")] * 10
    with chunkref.config.set({"io.retries": 2}):
        with pytest.raises(TransientStoreError, match=r"'v'.*2 retries"):
            store.get("v")
    assert len(fs.cat_calls) == 3


def test_retry_only_failed_requests(scripted) -> None:
    fs, store = scripted
    store.set("w", b"other")
    fs.cat_calls.clear()
    fs.cat_errors = [TimeoutError("slow")]  # the first fetch of the batch fails once
    assert store.get_many([("v", None), ("w", None)]) == [VALUE, b"other"]
    assert len(fs.cat_calls) == 3  # two fetches + one retry


@pytest.mark.parametrize(
    "exc, expected",
    [
        (PermissionError("no"), AccessDeniedError),
        (StatusError(403), AccessDeniedError),
        (StatusError(401), AccessDeniedError),
        (OSError(errno.EIO, "broken"), SourceUnavailableError),
        (StatusError(400), SourceUnavailableError),
        (RuntimeError("weird"), SourceUnavailableError),
        (StatusError(416), ShortReadError),
    ],
    ids=repr,
)
def test_permanent_errors_are_typed_and_not_retried(scripted, exc, expected) -> None:
    fs, store = scripted
    fs.cat_errors = [exc] * 5
    with pytest.raises(expected, match="'v'") as info:
        store.get("v", RangeRequest(1, 2))
    assert len(fs.cat_calls) == 1
    if expected is AccessDeniedError:
        assert isinstance(info.value, PermissionError)


@pytest.mark.parametrize("exc", [FileNotFoundError("gone"), StatusError(404), StatusError(410)], ids=repr)
def test_not_found_is_absent(scripted, exc) -> None:
    fs, store = scripted
    fs.cat_errors = [exc]
    assert store.get("v") is None


def test_info_errors_are_mapped(scripted) -> None:
    fs, store = scripted
    fs.info_errors = [PermissionError("no")]
    with pytest.raises(AccessDeniedError, match="'v'"):
        store.getsize("v")
    fs.info_errors = [TimeoutError("slow")]
    assert store.getsize("v") == len(VALUE)


def test_ranges_of_one_key_are_merged(scripted) -> None:
    fs, store = scripted
    store.max_gap = 100
    reqs = [("v", RangeRequest(i * 150, i * 150 + 50)) for i in range(20)]
    assert store.get_many(reqs) == [VALUE[i * 150 : i * 150 + 50] for i in range(20)]
    assert fs.cat_ranges_calls == 1
    assert fs.cat_calls == [(store._path("v"), 0, 19 * 150 + 50)]


def test_merging_respects_gap_size_and_keys(scripted) -> None:
    fs, store = scripted
    store.set("w", VALUE)
    fs.cat_calls.clear()
    store.max_gap, store.max_size = 100, 1000
    reqs = [("v", RangeRequest(0, 10)), ("w", RangeRequest(10, 20)), ("v", RangeRequest(500, 510)),
            ("v", RangeRequest(20, 30)), ("v", RangeRequest(5000, 6200))]
    assert store.get_many(reqs) == [VALUE[0:10], VALUE[10:20], VALUE[500:510], VALUE[20:30], VALUE[5000:6200]]
    fetched = sorted((p.rsplit("/", 1)[1], s, e) for p, s, e in fs.cat_calls)
    assert fetched == [("v", 0, 30), ("v", 500, 510), ("v", 5000, 6200), ("w", 10, 20)]


def test_local_filesystems_merge_only_adjacent(tmp_path) -> None:
    store = FsspecStore(str(tmp_path))
    assert store._merge_limits()[0] == 0
    with chunkref.config.set({"array.coalesce_max_gap_bytes": 12345}):
        assert FsspecStore("memory://x")._merge_limits()[0] == 0
        assert FsspecStore("s3://bucket/x", storage_options={"anon": True})._merge_limits()[0] == 12345


def test_zero_length_and_suffix_zero_never_fetch(scripted) -> None:
    fs, store = scripted
    assert store.get_many([("v", RangeRequest(7, 7)), ("v", SuffixRequest(0)), ("missing", RangeRequest(0, 0))]) == [
        b"", b"", None]
    assert fs.cat_calls == []


def test_from_filesystem_pickles(scripted) -> None:
    fs, store = scripted
    clone = pickle.loads(pickle.dumps(store))
    assert clone.root == store.root and clone.get("v", RangeRequest(0, 3)) == VALUE[:3]


# -- HTTP ----------------------------------------------------------------------------------------


@pytest.fixture
def http_store(http_server):
    url, path = http_server.new_dir()
    (path / "v").write_bytes(VALUE)
    (path / "sub").mkdir()
    for i in range(8):
        (path / "sub" / f"f{i}").write_bytes(bytes([i]) * 1000)
    store = FsspecStore(url, storage_options=HTTP_OPTIONS, read_only=True)
    http_server.reset()
    return http_server, store




@pytest.mark.network
def test_http_reads(http_store) -> None:
    server, store = http_store
    assert store.get("v") == VALUE
    assert store.get("missing") is None
    assert store.get("v", RangeRequest(10, 20)) == VALUE[10:20]
    assert store.get("v", SuffixRequest(5)) == VALUE[-5:]
    assert store.get("v", SuffixRequest(50_000)) == VALUE
    assert store.get("v", OffsetRequest(10_000)) == VALUE[10_000:]
    assert store.get("v", OffsetRequest(len(VALUE))) == b""
    assert store.get("v", RangeRequest(len(VALUE), len(VALUE))) == b""
    assert store.getsize("v") == len(VALUE) and store.exists("v") and not store.exists("nope")
    with pytest.raises(ShortReadError):
        store.get("v", RangeRequest(10_000, 10_300))
    with pytest.raises(ShortReadError):
        store.get("v", RangeRequest(20_000, 20_001))
    with pytest.raises(ShortReadError):
        store.get("v", OffsetRequest(20_000))
    assert store.list_dir("sub") == [f"f{i}" for i in range(8)]


@pytest.mark.network
def test_http_offset_is_made_explicit(http_store) -> None:
    server, store = http_store
    assert store.get("v", OffsetRequest(10_000)) == VALUE[10_000:]
    gets = [r for m, _, r in server.requests if m == "GET"]
    assert gets == [f"bytes=10000-{len(VALUE) - 1}"]


@pytest.mark.network
def test_http_nearby_ranges_merge_into_one_request(http_store) -> None:
    server, store = http_store
    reqs = [("v", RangeRequest(i * 100, i * 100 + 20)) for i in range(100)]
    assert store.get_many(reqs) == [VALUE[i * 100 : i * 100 + 20] for i in range(100)]
    assert server.count("GET") == 1
    server.reset()
    with chunkref.config.set({"array.coalesce_max_bytes": 2500}):
        store.get_many(reqs)
    assert server.count("GET") == 4


@pytest.mark.network
def test_http_get_many_is_concurrent(http_store) -> None:
    server, store = http_store
    reqs = [(f"sub/f{i}", RangeRequest(0, 10)) for i in range(8)]
    with server.misbehave(delay=0.25):
        t0 = time.perf_counter()
        out = store.get_many(reqs)
        elapsed = time.perf_counter() - t0
    assert out == [bytes([i]) * 10 for i in range(8)]
    assert server.max_in_flight >= 4, server.max_in_flight
    assert elapsed < 1.0, f"8 requests of 0.25 s took {elapsed:.2f} s: not concurrent"


@pytest.mark.network
def test_http_concurrency_cap(http_store) -> None:
    server, store = http_store
    reqs = [(f"sub/f{i}", None) for i in range(8)]
    with server.misbehave(delay=0.05), chunkref.config.set({"io.concurrency": 2}):
        assert store.get_many(reqs) == [bytes([i]) * 1000 for i in range(8)]
    assert 1 <= server.max_in_flight <= 2


@pytest.mark.network
@pytest.mark.parametrize("rng", [RangeRequest(10, 20), SuffixRequest(10), OffsetRequest(100)], ids=repr)
def test_http_server_ignoring_ranges_is_detected(http_store, rng) -> None:
    server, store = http_store
    with server.misbehave(ignore_range=True):
        with pytest.raises(ShortReadError, match="'v'"):
            store.get("v", rng)


@pytest.mark.network
@pytest.mark.parametrize("rng", [RangeRequest(10, 20), SuffixRequest(10), OffsetRequest(100)], ids=repr)
def test_http_short_body_is_detected(http_store, rng) -> None:
    server, store = http_store
    with server.misbehave(short_by=3):
        with pytest.raises(ShortReadError, match="'v'"):
            store.get("v", rng)


@pytest.mark.network
def test_http_merged_group_short_body_fails_only_when_needed(http_store) -> None:
    server, store = http_store
    reqs = [("v", RangeRequest(0, 10)), ("v", RangeRequest(20, 30))]
    with server.misbehave(short_by=5):  # group [0, 30) arrives as [0, 25)
        with pytest.raises(ShortReadError, match=r"\[20, 30\)"):
            store.get_many(reqs)


@pytest.mark.network
def test_http_503_then_success(http_store) -> None:
    server, store = http_store
    with server.misbehave(statuses=[503, 503]):
        assert store.get("v", RangeRequest(0, 5)) == VALUE[:5]
    assert server.count("GET") == 3


@pytest.mark.network
def test_http_persistent_503(http_store) -> None:
    server, store = http_store
    with server.misbehave(statuses=[503] * 10), chunkref.config.set({"io.retries": 1}):
        with pytest.raises(TransientStoreError, match="'v'"):
            store.get("v")
    assert server.count("GET") == 2


@pytest.mark.network
@pytest.mark.parametrize("status, expected", [(403, AccessDeniedError), (401, AccessDeniedError),
                                              (500, TransientStoreError), (400, SourceUnavailableError)])
def test_http_error_statuses(http_store, status, expected) -> None:
    server, store = http_store
    with server.misbehave(statuses=[status] * 5), chunkref.config.set({"io.retries": 1}):
        with pytest.raises(expected, match="'v'"):
            store.get("v", RangeRequest(0, 1))


@pytest.mark.network
def test_http_without_head(http_store) -> None:
    server, store = http_store
    with server.misbehave(head_ok=False):
        assert store.getsize("v") == len(VALUE)
        assert store.get("v", OffsetRequest(10_200)) == VALUE[10_200:]


@pytest.mark.network
def test_store_from_url_http(http_store) -> None:
    server, store = http_store
    s = store_from_url(store.url, storage_options=HTTP_OPTIONS)
    assert isinstance(s, FsspecStore) and s.read_only
    assert s.get("v", RangeRequest(0, 2)) == VALUE[:2]
    clone = pickle.loads(pickle.dumps(s))
    assert clone == s and clone.get("sub/f1", RangeRequest(0, 1)) == b"\x01"


# -- S3 (moto) -----------------------------------------------------------------------------------


@pytest.mark.network
def test_s3_missing_bucket_reads_absent(s3_server) -> None:
    store = FsspecStore(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x", storage_options=s3_server.storage_options)
    assert store.get("k") is None
    assert store.get_many([("k", RangeRequest(0, 1)), ("j", None)]) == [None, None]
    assert list(store.list()) == []


@pytest.mark.network
def test_s3_conditional_create_uses_if_none_match(s3_server) -> None:
    bucket = s3_server.make_bucket()
    store = FsspecStore(f"s3://{bucket}/refs", storage_options=s3_server.storage_options)
    assert store.set_if_not_exists("branch/main/0001", b"a")
    # A second writer with its own client (another process, in effect) loses.
    other = FsspecStore(f"s3://{bucket}/refs", storage_options=s3_server.storage_options)
    assert not other.set_if_not_exists("branch/main/0001", b"b")
    assert store.get("branch/main/0001") == b"a"


@pytest.mark.network
def test_s3_unreachable_is_transient() -> None:
    server = S3Server().start()
    fs = server.filesystem()
    fs.retries = 1  # s3fs' own retry loop (5 attempts with sleeps by default)
    server.stop()
    store = FsspecStore.from_filesystem(fs, "bucket/x")
    with chunkref.config.set({"io.retries": 0}):
        t0 = time.perf_counter()
        with pytest.raises(TransientStoreError, match="'k'"):
            store.get("k", RangeRequest(0, 1))
    assert time.perf_counter() - t0 < 10


# -- store_from_url ------------------------------------------------------------------------------


def test_store_from_url_dispatch(tmp_path) -> None:
    s = store_from_url(f"memory://from-url-{uuid.uuid4().hex}", mode="a")
    assert isinstance(s, FsspecStore) and not s.read_only
    z = store_from_url(str(tmp_path / "a.zip"), mode="w")
    assert isinstance(z, ZipStore) and z.mode == "w"
    z.set("k", b"v")
    z.close()
    r = store_from_url(f"file://{tmp_path}/a.zip")
    assert isinstance(r, ZipStore) and r.read_only and r.get("k") == b"v"
    assert store_from_url(r) is r
    assert store_from_url(r, mode="r").read_only
    # A remote zip is read through fsspec's zip file system.
    mem = f"memory://zips-{uuid.uuid4().hex}/a.zip"
    fsspec.filesystem("memory").pipe_file(mem, (tmp_path / "a.zip").read_bytes())
    rz = store_from_url(mem)
    assert isinstance(rz, FsspecStore) and rz.get("k") == b"v" and list(rz.list()) == ["k"]


def test_store_from_url_rejects_bad_input(tmp_path) -> None:
    from chunkref.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="mode"):
        store_from_url(str(tmp_path), mode="rw")
    with pytest.raises(InvalidArgumentError, match="storage_options"):
        store_from_url(str(tmp_path), storage_options={"anon": True})
    with pytest.raises(InvalidArgumentError, match="read-only"):
        store_from_url("memory://x/a.zip", mode="w")
    with pytest.raises(InvalidArgumentError):
        store_from_url(42)  # type: ignore[arg-type]


def test_conditional_create_is_not_retried() -> None:
    class FlakyCreate(ScriptedFS):
        protocol = "flakycreate"

        def pipe_file(self, path, value, mode="overwrite", **kwargs):
            if mode == "create":
                raise TimeoutError("answer lost")
            return super().pipe_file(path, value, mode=mode, **kwargs)

    fs = FlakyCreate()
    store = FsspecStore.from_filesystem(fs, f"/flaky-{uuid.uuid4().hex}")
    # Not the memory protocol: goes through the generic conditional-create path.
    assert store.protocol == "flakycreate"
    with pytest.raises(TransientStoreError, match="not retried"):
        store.set_if_not_exists("ref", b"x")
    fs.rm(store.root, recursive=True) if fs.exists(store.root) else None
