"""WrapperStore, CountingStore, LatencyStore, FaultStore."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from chunkref.errors import (
    InvalidArgumentError,
    ReadOnlyError,
    SourceUnavailableError,
    TransientStoreError,
)
from chunkref.storage import (
    CountingStore,
    FaultStore,
    LatencyStore,
    LocalStore,
    MemoryStore,
    RangeRequest,
    SuffixRequest,
    WrapperStore,
)


def _filled() -> MemoryStore:
    return MemoryStore({"a": b"0123456789", "b/c": b"xyz", "b/d": b""})


def test_wrapper_delegates_everything() -> None:
    inner = _filled()
    w = WrapperStore(inner)
    assert w.get("a", RangeRequest(2, 4)) == b"23"
    assert w.get_many([("a", SuffixRequest(2)), ("zz", None)]) == [b"89", None]
    w.set("n", b"1")
    w.set_many([("m", b"2")])
    assert w.set_if_not_exists("m", b"3") is False
    assert inner.get("n") == b"1" and inner.get("m") == b"2"
    assert w.exists("a") and w.getsize("a") == 10
    assert sorted(w.list()) == ["a", "b/c", "b/d", "m", "n"]
    assert list(w.list_prefix("b/")) == ["b/c", "b/d"]
    assert w.list_dir("") == ["a", "b", "m", "n"] and w.list_dir("b") == ["c", "d"]
    w.delete("n")
    w.delete_many(["m"])
    w.delete_prefix("b")
    assert sorted(inner.list()) == ["a"]
    w.clear()
    assert list(inner.list()) == []
    with pytest.raises(InvalidArgumentError):
        WrapperStore("not a store")  # type: ignore[arg-type]


def test_wrapper_read_only_follows_inner() -> None:
    inner = _filled().with_read_only()
    w = CountingStore(inner)
    assert w.read_only
    with pytest.raises(ReadOnlyError):
        w.set("a", b"")
    rw = CountingStore(_filled())
    ro = rw.with_read_only()
    assert ro.read_only and ro.inner.read_only and not rw.read_only
    with pytest.raises(ReadOnlyError):
        ro.delete("a")
    rw.delete("a")


def test_counting_store_counts_and_batches() -> None:
    c = CountingStore(_filled())
    c.get("a")
    c.get("missing")
    reqs = [("a", RangeRequest(0, 3)), ("b/c", None), ("nope", None)]
    c.get_many(reqs)
    c.set("k", b"12345")
    c.set_many([("x", b"1"), ("y", b"22")])
    c.set_if_not_exists("k", b"zz")
    c.delete("k")
    c.delete_many(["x", "y"])
    list(c.list())
    c.list_dir("b")
    c.exists("a")
    c.getsize("a")
    n = c.counts
    assert n["get"] == 2 and n["get_many"] == 1 and n["keys_read"] == 5
    assert n["bytes_read"] == 10 + 3 + 3 and n["absent"] == 2
    assert n["set"] == 1 and n["set_many"] == 1 and n["set_if_not_exists"] == 1
    assert n["keys_written"] == 3 and n["bytes_written"] == 5 + 1 + 2
    assert n["delete"] == 1 and n["delete_many"] == 1 and n["keys_deleted"] == 3
    assert n["list"] == 1 and n["list_dir"] == 1 and n["exists"] == 1 and n["getsize"] == 1
    assert c.batches == [reqs]
    assert c.total_requests == 12
    c.reset()
    assert c.total_requests == 0 and c.batches == []


def test_counting_store_pickles_and_copies_share_counters() -> None:
    c = CountingStore(_filled())
    c.get("a")
    clone = pickle.loads(pickle.dumps(c))
    assert clone.counts["get"] == 1 and clone.get("a") == b"0123456789"
    ro = c.with_read_only()
    ro.get("a")
    assert c.counts["get"] == 2  # the read-only view counts into the same counters


def test_latency_store_get_many_costs_one_round_trip() -> None:
    lat = LatencyStore(MemoryStore({f"k{i}": b"v" for i in range(50)}), latency=0.05)
    t0 = time.perf_counter()
    out = lat.get_many([(f"k{i}", None) for i in range(50)])
    elapsed = time.perf_counter() - t0
    assert out == [b"v"] * 50
    assert 0.05 <= elapsed < 0.5
    assert lat.max_in_flight == 50 and lat.in_flight == 0


def test_latency_store_limited_concurrency() -> None:
    lat = LatencyStore(MemoryStore({f"k{i}": b"v" for i in range(10)}), latency=0.02, concurrency=4)
    t0 = time.perf_counter()
    lat.get_many([(f"k{i}", None) for i in range(10)])
    assert time.perf_counter() - t0 >= 0.06  # ceil(10 / 4) = 3 rounds
    assert lat.max_in_flight == 4


def test_latency_store_concurrent_callers_overlap() -> None:
    lat = LatencyStore(_filled(), latency=0.2)
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        lat.get("a")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert lat.max_in_flight == 6
    assert elapsed < 0.2 * 6 / 2, f"6 concurrent gets of 0.2 s took {elapsed:.2f} s"


def test_latency_store_over_local_store_pickles(tmp_path) -> None:
    lat = LatencyStore(LocalStore(tmp_path), latency=0.001)
    lat.set("a/b", b"1")
    clone = pickle.loads(pickle.dumps(lat))
    assert clone.get("a/b") == b"1" and clone.latency == 0.001
    with pytest.raises(InvalidArgumentError):
        LatencyStore(_filled(), latency=-1)
    with pytest.raises(InvalidArgumentError):
        LatencyStore(_filled(), concurrency=0)


def test_fault_transient_then_success() -> None:
    f = FaultStore(_filled(), fail_keys={"a"}, times=2)
    for _ in range(2):
        with pytest.raises(TransientStoreError, match="'a'"):
            f.get("a")
    assert f.get("a") == b"0123456789"
    assert f.faults == 2 and f.attempts == 3 and f.fault_keys == ["a", "a"]
    assert f.get("b/c") == b"xyz"  # other keys never fail


def test_fault_permanent_with_fail_after_and_custom_exc() -> None:
    f = FaultStore(_filled(), fail_after=2, exc=SourceUnavailableError)
    assert f.get("a") and f.get_many([("b/c", None)]) == [b"xyz"]
    for _ in range(3):
        with pytest.raises(SourceUnavailableError):
            f.get("b/c")
    f.reset()
    assert f.get("a") == b"0123456789"  # fail_after applies again after reset
    g = FaultStore(_filled(), exc=ValueError("exact instance"))
    with pytest.raises(ValueError, match="exact instance"):
        g.get("a")


def test_fault_in_get_many_fails_the_batch() -> None:
    f = FaultStore(_filled(), fail_keys=lambda k: k.startswith("b/"), times=1)
    with pytest.raises(TransientStoreError, match="'b/c'"):
        f.get_many([("a", None), ("b/c", None), ("b/d", None)])
    assert f.get_many([("a", None), ("b/c", None)]) == [b"0123456789", b"xyz"]


@pytest.mark.parametrize(
    "mode, expected",
    [("short", b"01234"), ("corrupt", b"\xcf123456789"), ("absent", None)],
)
def test_fault_data_modes(mode, expected) -> None:
    f = FaultStore(_filled(), fail_keys=["a"], mode=mode)
    assert f.get("a") == expected
    assert f.get_many([("b/c", None), ("a", None)]) == [b"xyz", expected]
    if mode == "short":
        assert f.get("a", RangeRequest(0, 4)) == b"01"
    assert f.get("b/d") == b""


def test_fault_write_delete_list_ops() -> None:
    f = FaultStore(_filled(), ops=("set", "delete", "list"), times=3)
    with pytest.raises(TransientStoreError, match="'n'"):
        f.set("n", b"1")
    with pytest.raises(TransientStoreError):
        f.delete("a")
    with pytest.raises(TransientStoreError):
        list(f.list())
    assert f.get("a") == b"0123456789"  # reads were not selected
    f.set("n", b"1")  # healed after 3 faults
    assert f.inner.get("n") == b"1"
    with pytest.raises(InvalidArgumentError):
        FaultStore(_filled(), mode="explode")
    with pytest.raises(InvalidArgumentError):
        FaultStore(_filled(), ops=("read",))


def test_fault_store_pickles() -> None:
    f = FaultStore(_filled(), fail_keys={"a"}, times=1, mode="corrupt")
    clone = pickle.loads(pickle.dumps(f))
    assert clone.get("a") == b"\xcf123456789" and clone.get("a") == b"0123456789"


def test_latency_copies_share_their_peak() -> None:
    from chunkref.storage import MemoryStore
    from chunkref.storage.wrappers import LatencyStore

    lat = LatencyStore(MemoryStore(), latency=0.001)
    lat.set("a", b"1")
    ro = lat.with_read_only(True)
    ro.get_many([("a", None)] * 3)
    assert lat.max_in_flight == ro.max_in_flight == 3
