"""The process-wide thread pool for CPU work (decoding and encoding chunks).

numcodecs, libdeflate and numpy release the GIL, so decoding on a few threads scales with the
cores.  A thread-pool task costs ~14 µs here, more than decoding a small chunk, so work is
never submitted one item per task: :func:`map_batched` cuts a list into a few contiguous
batches (about two per worker, so that one slow batch does not leave a core idle) and submits
one task per batch.  Work that fits in one batch runs inline on the calling thread.

The pool is created on first use with ``threading.max_workers`` threads (``None``: the number
of CPUs), re-created when that setting changes, and forgotten in a forked child (threads do not
survive ``fork``; the child builds its own pool on first use).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from chunkref.config import config
from chunkref.errors import InvalidArgumentError

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["cpu_count", "get_executor", "in_worker", "map_batched", "max_workers", "run_dynamic", "shutdown"]

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
# Set on pool threads while they run a batch: nested map_batched calls (a sharding codec
# decoding inner chunks inside a batch) run inline instead of queueing on a pool whose threads
# may all be waiting for them (a deadlock).
_local = threading.local()


_cpu_count: int | None = None


def cpu_count() -> int:
    """CPUs of this process, looked up once (``os.cpu_count`` reads /proc: ~5 µs a call here)."""
    global _cpu_count
    if _cpu_count is None:
        _cpu_count = max(1, os.cpu_count() or 1)
    return _cpu_count


def max_workers() -> int:
    """Threads the pool uses: setting ``threading.max_workers``, or the CPU count when None."""
    value = config.get("threading.max_workers")
    if value is None:
        return cpu_count()
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"setting threading.max_workers must be a positive integer or None, got {value!r}")
    return value


def get_executor() -> ThreadPoolExecutor:
    """The shared pool, created lazily (and re-created when ``threading.max_workers`` changes)."""
    global _pool, _pool_workers
    workers = max_workers()
    pool = _pool
    if pool is not None and _pool_workers == workers:
        return pool
    with _lock:
        if _pool is None or _pool_workers != workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkref-codec")
            _pool_workers = workers
            if old is not None:
                # Tasks already queued on the old pool still finish; callers hold their futures.
                old.shutdown(wait=False)
        return _pool


def shutdown(wait: bool = True) -> None:
    """Stop the pool (a new one is created on next use)."""
    global _pool, _pool_workers
    with _lock:
        pool, _pool, _pool_workers = _pool, None, 0
    if pool is not None:
        pool.shutdown(wait=wait)


def _after_fork_in_child() -> None:
    # The parent's worker threads do not exist in the child and its lock may be held by a thread
    # that vanished with the fork: start from scratch.
    global _pool, _pool_workers, _lock
    _pool = None
    _pool_workers = 0
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_worker() -> bool:
    """Whether the calling thread is running a batch of :func:`map_batched`."""
    return getattr(_local, "active", False)


def _run_marked(fn: Callable[[list[T]], R], batch: list[T]) -> R:
    previous = getattr(_local, "active", False)
    _local.active = True
    try:
        return fn(batch)
    finally:
        _local.active = previous


def map_batched(
    fn: Callable[[list[T]], R],
    items: Sequence[T],
    *,
    min_batch: int = 1,
    max_batches: int | None = None,
) -> list[R]:
    """Run ``fn`` over contiguous batches of ``items`` on the shared pool.

    Parameters
    ----------
    fn
        Called once per batch with a list of items; its return value is collected.
    items
        The work, in order.
    min_batch
        Fewest items per batch: pick it so that one batch costs well over the ~14 µs a task
        costs (e.g. dozens of 8 KiB chunks, one 1 MiB chunk).
    max_batches
        Most batches to cut (default: twice the worker count).

    Returns
    -------
    list
        ``fn``'s results, one per batch, in the order of the batches (so concatenating list
        results restores the order of ``items``).  Empty when ``items`` is empty.

    Notes
    -----
    Runs inline (one batch, no thread hop) when the work fits in one batch, when the pool has
    one worker, or when called from a pool thread.  The first exception raised by a batch (in
    batch order) propagates after every batch has finished, so no work is left running.
    """
    n = len(items)
    if n == 0:
        return []
    items = list(items)
    workers = max_workers()
    if max_batches is None:
        max_batches = 2 * workers
    nbatches = min(max(1, max_batches), -(-n // max(1, min_batch)))
    if nbatches <= 1 or workers <= 1 or in_worker():
        return [fn(items)]
    bounds = [n * i // nbatches for i in range(nbatches + 1)]
    batches = [items[bounds[i] : bounds[i + 1]] for i in range(nbatches)]
    pool = get_executor()
    # The calling thread works on the first batch itself instead of idling on a future.
    futures: list[Future[R]] = [pool.submit(_run_marked, fn, b) for b in batches[1:]]
    results: list[R] = []
    first_error: BaseException | None = None
    try:
        results.append(_run_marked(fn, batches[0]))
    except BaseException as exc:  # re-raised below, once the other batches have ended
        first_error = exc
    for fut in futures:
        try:
            results.append(fut.result())
        except BaseException as exc:
            if first_error is None:
                first_error = exc
    if first_error is not None:
        raise first_error
    return results


def run_dynamic(work: Callable[[list[T]], None], items: list[T], grab: int) -> None:
    """Run ``work`` over ``items`` on the shared pool, ``grab`` items at a time, load-balanced.

    Each of the pool's workers (the calling thread being one of them) takes the next ``grab``
    items from a shared counter until none are left, so a thread that was descheduled or got
    slower chunks simply takes fewer.  Fixed batches (two per worker, the caller taking the
    first) left one batch running alone at the end: a quarter of a full read's wall time on
    two cores.  Inline when the work fits in one grab, with one worker, or on a pool thread.
    The first error (in worker order) propagates once every worker has stopped; the others stop
    taking items as soon as one has failed.
    """
    n = len(items)
    # One grab (a single-chunk read) never needs the pool: skip even asking its size.
    workers = 1 if n <= grab else min(max_workers(), -(-n // max(1, grab)))
    if workers <= 1 or in_worker():
        work(items)
        return
    counter = itertools.count()
    failed = threading.Event()

    def drain(_: list[int]) -> None:
        while not failed.is_set():
            # next() on an itertools.count is atomic under the GIL: each grab is taken once.
            i = next(counter) * grab
            if i >= n:
                return
            try:
                work(items[i : i + grab])
            except BaseException:
                failed.set()
                raise

    map_batched(drain, list(range(workers)), max_batches=workers)
