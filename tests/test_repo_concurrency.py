"""Repository under concurrency and failure: processes racing to commit (local disk and S3),
conditional-create enforcement of the S3 server, crashes after every commit step."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import chunkref
from chunkref.repo import Repository

_CTX = mp.get_context("spawn")
GRID = 8  # the shared array has GRID x GRID chunks of 2 x 2


def _setup(url: str, options: dict | None) -> None:
    repo = Repository.create(url, storage_options=options, inline_threshold=0)
    s = repo.writable_session()
    g = chunkref.open_group(s.store, mode="a")
    g.create_array("x", shape=(2 * GRID, 2 * GRID), chunks=(2, 2), dtype="i4", fill_value=-1)
    s.commit("setup")


def _committer(args: tuple[str, dict | None, int, int]) -> list[str]:
    """Worker: ``n`` commits, each writing one chunk of its own row of the grid."""
    url, options, wid, n = args
    repo = Repository.open(url, storage_options=options)
    out = []
    for i in range(n):
        s = repo.writable_session()
        a = chunkref.open_array(s.store, path="x", mode="r+")
        a[2 * wid : 2 * wid + 2, 2 * i : 2 * i + 2] = wid * 100 + i
        out.append(s.commit(f"w{wid}-{i}"))
    return out


def _check_history(url: str, options: dict | None, workers: int, n: int, results: list[list[str]]) -> None:
    repo = Repository.open(url, storage_options=options)
    log = repo.log()
    messages = [c.message for c in log]
    expected = {f"w{w}-{i}" for w in range(workers) for i in range(n)}
    # Every commit landed exactly once, in a linear history.
    assert sorted(m for m in messages if m.startswith("w")) == sorted(expected)
    assert messages[-2:] == ["setup", "Repository created"]
    for c, parent in zip(log, log[1:]):
        assert c.parents == (parent.cid,)
    landed = {c.cid for c in log}
    assert all(cid in landed for r in results for cid in r)
    # No data lost: every worker's chunks hold its values.
    v = chunkref.open_array(repo.readonly_session().store, path="x", mode="r")[...]
    for w in range(workers):
        for i in range(n):
            assert (v[2 * w : 2 * w + 2, 2 * i : 2 * i + 2] == w * 100 + i).all()
    assert repo.verify().ok
    # GC (store timestamps, journals of the losing attempts) keeps every reachable object.
    # S3 timestamps have one-second resolution: wait past it so "older than 0" covers the
    # journals written just now (else one written in the same second as gc's clock is kept).
    time.sleep(1.1 if url.startswith("s3://") else 0.05)
    repo.gc(timedelta(0))
    assert repo.verify().ok
    assert not list(repo.store.list_prefix("txn/"))
    v2 = chunkref.open_array(Repository.open(url, storage_options=options).readonly_session().store, path="x",
                             mode="r")[...]
    np.testing.assert_array_equal(v, v2)


def test_processes_commit_to_main_local(tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    _setup(url, None)
    workers, n = 4, 4
    with _CTX.Pool(workers) as pool:
        results = pool.map(_committer, [(url, None, w, n) for w in range(workers)])
    _check_history(url, None, workers, n, results)


# -- S3 (moto) --------------------------------------------------------------------------------


def _racer(args: tuple[str, dict, int, int]) -> list[bool]:
    from chunkref.storage import FsspecStore

    url, options, wid, nkeys = args
    store = FsspecStore(url, storage_options=options)
    return [store.set_if_not_exists(f"race/{k}", f"{wid}".encode()) for k in range(nkeys)]


def test_s3_server_enforces_conditional_create_under_concurrency(s3_server: Any) -> None:
    """Before trusting it for refs: racing If-None-Match creates have exactly one winner."""
    bucket = s3_server.make_bucket()
    url = f"s3://{bucket}/c"
    workers, nkeys = 4, 12
    with _CTX.Pool(workers) as pool:
        results = pool.map(_racer, [(url, s3_server.storage_options, w, nkeys) for w in range(workers)])
    wins = np.array(results).sum(axis=0)
    assert (wins == 1).all(), wins
    from chunkref.storage import FsspecStore

    store = FsspecStore(url, storage_options=s3_server.storage_options)
    for k in range(nkeys):
        winner = [w for w in range(workers) if results[w][k]][0]
        assert store.get(f"race/{k}") == str(winner).encode()


def test_processes_commit_to_main_s3(s3_server: Any) -> None:
    bucket = s3_server.make_bucket()
    url = f"s3://{bucket}/repo"
    options = s3_server.storage_options
    _setup(url, options)
    workers, n = 3, 2
    with _CTX.Pool(workers) as pool:
        results = pool.map(_committer, [(url, options, w, n) for w in range(workers)])
    _check_history(url, options, workers, n, results)


# -- crash consistency ------------------------------------------------------------------------

STEPS = ("chunks", "journal", "pages", "nodes", "commit", "ref")


def _crash_at(args: tuple[str, str]) -> None:
    url, step = args
    repo = Repository.open(url)
    s = repo.writable_session()
    a = chunkref.open_array(s.store, path="x", mode="r+")
    a[0:4, 0:4] = 7
    chunkref.open_group(s.store, mode="a").create_array("new", shape=(4,), chunks=(2,), dtype="i1")[:] = 1
    if step == "chunks":
        os._exit(3)

    def hook(name: str) -> None:
        if name == step:
            os._exit(3)

    s._commit_hook = hook
    s.commit("crashing")
    os._exit(0)


@pytest.mark.parametrize("step", STEPS)
def test_crash_after_each_commit_step(tmp_path: Path, step: str) -> None:
    url = str(tmp_path / "repo")
    _setup(url, None)
    repo = Repository.open(url)
    old = repo.resolve("main")
    p = _CTX.Process(target=_crash_at, args=((url, step),))
    p.start()
    p.join(60)
    assert p.exitcode == 3
    repo = Repository.open(url)
    tip = repo.resolve("main")
    if step == "ref":
        assert tip != old and repo.log()[0].message == "crashing"
        assert (chunkref.open_array(repo.readonly_session().store, path="x", mode="r")[0:4, 0:4] == 7).all()
    else:
        assert tip == old
        assert (chunkref.open_array(repo.readonly_session().store, path="x", mode="r")[...] == -1).all()
    assert repo.verify().ok
    before = set(repo.objects.list())
    time.sleep(0.05)  # file timestamps tick every few ms: let "older than 0 s" include everything
    report = repo.gc(timedelta(0))
    after = set(repo.objects.list())
    if step != "ref":
        assert report.deleted, "the crashed commit's objects are garbage"
    # Incremental GC (journals + change summaries) left nothing a full listing would find.
    assert repo.gc(timedelta(0), full=True).deleted == []
    assert after == before - set(report.deleted)
    assert not list(repo.store.list_prefix("txn/"))
    assert repo.verify().ok
