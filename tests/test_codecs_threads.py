"""The shared decode/encode thread pool (chunkref._threads)."""

from __future__ import annotations

import os
import threading

import pytest

from chunkref import _threads
from chunkref.config import config
from chunkref.errors import InvalidArgumentError


def test_max_workers_follows_the_setting():
    with config.set({"threading.max_workers": None}):
        assert _threads.max_workers() == (os.cpu_count() or 1)
    with config.set({"threading.max_workers": 3}):
        assert _threads.max_workers() == 3
        assert _threads.get_executor()._max_workers == 3
    with config.set({"threading.max_workers": 0}), pytest.raises(InvalidArgumentError, match="max_workers"):
        _threads.max_workers()


def test_map_batched_splits_into_batches_and_keeps_order():
    seen_threads = set()

    def work(batch):
        seen_threads.add(threading.get_ident())
        return [x * 2 for x in batch]

    with config.set({"threading.max_workers": 2}):
        parts = _threads.map_batched(work, list(range(100)), min_batch=10)
    assert 1 < len(parts) <= 4  # about two batches per worker
    assert [y for p in parts for y in p] == [x * 2 for x in range(100)]
    assert threading.get_ident() in seen_threads  # the caller works too


def test_map_batched_runs_inline_when_small_or_single_worker():
    calls = []

    def work(batch):
        calls.append((threading.get_ident(), len(batch)))
        return len(batch)

    me = threading.get_ident()
    with config.set({"threading.max_workers": 2}):
        assert _threads.map_batched(work, [1, 2, 3], min_batch=10) == [3]
    with config.set({"threading.max_workers": 1}):
        assert _threads.map_batched(work, list(range(50))) == [50]
    assert all(t == me for t, _ in calls)
    assert _threads.map_batched(work, []) == []


def test_nested_calls_run_inline_on_pool_threads():
    def inner(batch):
        return [_threads.in_worker()] * len(batch)

    def outer(batch):
        return _threads.map_batched(inner, list(range(40)), min_batch=1)

    with config.set({"threading.max_workers": 2}):
        parts = _threads.map_batched(outer, list(range(8)), min_batch=1)
    # every nested call saw itself on a worker and did not fan out again
    assert all(len(p) == 1 and all(p[0]) for p in parts)


def test_first_error_propagates_after_all_batches_finish():
    done = []

    def work(batch):
        if 5 in batch:
            raise ValueError("bad batch")
        done.append(batch[0])
        return batch

    with config.set({"threading.max_workers": 2}), pytest.raises(ValueError, match="bad batch"):
        _threads.map_batched(work, list(range(40)), min_batch=5)
    assert len(done) >= 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_pool_is_recreated_after_fork():
    with config.set({"threading.max_workers": 2}):
        parent_pool = _threads.get_executor()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                ok = _threads._pool is None
                parts = _threads.map_batched(lambda b: sum(b), list(range(100)), min_batch=10)
                ok = ok and sum(parts) == 4950 and _threads.get_executor() is not parent_pool
                os.write(w, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.close(w)
        result = os.read(r, 1)
        os.close(r)
        os.waitpid(pid, 0)
    assert result == b"1"
