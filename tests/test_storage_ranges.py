"""coalesce_ranges / slice_groups: properties (hypothesis), examples, and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chunkref.errors import InvalidArgumentError, ShortReadError
from chunkref.storage.ranges import coalesce_ranges, slice_groups


@st.composite
def range_sets(draw):
    n = draw(st.integers(0, 60))
    starts = draw(st.lists(st.integers(0, 5000), min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(0, 400), min_size=n, max_size=n))
    stops = [s + length for s, length in zip(starts, lengths)]
    ids = draw(st.one_of(st.none(), st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    max_gap = draw(st.integers(-1, 600))
    max_size = draw(st.integers(0, 3000))
    return starts, stops, ids, max_gap, max_size


@settings(max_examples=300, deadline=None)
@given(range_sets())
def test_coalesce_properties(args) -> None:
    starts, stops, ids, max_gap, max_size = args
    gs, ge, assign = coalesce_ranges(starts, stops, max_gap, max_size, ids=ids)
    n = len(starts)
    assert assign.shape == (n,) and gs.dtype == np.int64 and ge.dtype == np.int64
    assert len(gs) == len(ge)
    if n == 0:
        assert len(gs) == 0
        return
    # Every group is used, and covers each of its members.
    assert set(assign.tolist()) == set(range(len(gs)))
    s = np.asarray(starts)
    e = np.asarray(stops)
    assert (gs[assign] <= s).all() and (e <= ge[assign]).all()
    # Groups are tight: each bound is attained by a member.
    for g in range(len(gs)):
        members = np.flatnonzero(assign == g)
        assert gs[g] == s[members].min() and ge[g] == e[members].max()
        if ids is not None:
            assert len({ids[i] for i in members}) == 1, "ranges of different ids merged"
        # Never larger than max_size, unless the group is one range (or copies of one range).
        if ge[g] - gs[g] > max_size:
            assert len({(starts[i], stops[i]) for i in members}) == 1
    # Groups come out ordered by (id, start).
    key = np.asarray(ids) if ids is not None else np.zeros(n, dtype=np.int64)
    gid_key = np.empty(len(gs), dtype=np.int64)
    gid_key[assign] = key
    assert (np.diff(gid_key) >= 0).all()
    same = np.diff(gid_key) == 0
    assert (np.diff(gs)[same] >= 0).all()
    # Slicing back reproduces every request from data that is a function of the position.
    blob = (np.arange(6000, dtype=np.int64) % 251).astype(np.uint8).tobytes()
    data = [blob[a:b] for a, b in zip(gs.tolist(), ge.tolist())]
    out = slice_groups(data, gs, starts, stops, assign)
    assert out == [blob[a:b] for a, b in zip(starts, stops)]


@settings(max_examples=200, deadline=None)
@given(range_sets())
def test_gaps_are_merged_when_small(args) -> None:
    starts, stops, _, max_gap, _ = args
    # Without a size cap, two consecutive groups are separated by more than max_gap.
    gs, ge, _ = coalesce_ranges(starts, stops, max_gap, 1 << 40)
    if len(gs) > 1:
        assert (gs[1:] - ge[:-1] > max_gap).all()
        # Empty ranges at one position do not overlap, so with max_gap=-1 they may stay apart.
        assert (gs[1:] > gs[:-1]).all() if max_gap >= 0 else (gs[1:] >= gs[:-1]).all()


def test_examples() -> None:
    gs, ge, a = coalesce_ranges([0, 10, 100, 105], [5, 20, 104, 110], 10, 1000)
    assert gs.tolist() == [0, 100] and ge.tolist() == [20, 110] and a.tolist() == [0, 0, 1, 1]
    # Input order does not matter; assignment follows the input order.
    gs, ge, a = coalesce_ranges([100, 0, 105, 10], [104, 5, 110, 20], 10, 1000)
    assert gs.tolist() == [0, 100] and a.tolist() == [1, 0, 1, 0]
    # max_gap=0: adjacent merges, a one-byte hole does not.
    gs, _, _ = coalesce_ranges([0, 10, 21], [10, 20, 30], 0, 1000)
    assert gs.tolist() == [0, 21]
    # max_gap=-1: only overlaps merge.
    gs, _, _ = coalesce_ranges([0, 10, 15], [10, 20, 30], -1, 1000)
    assert gs.tolist() == [0, 10]
    # Size split is greedy from the left.
    gs, ge, a = coalesce_ranges(list(range(0, 100, 10)), list(range(10, 110, 10)), 0, 30)
    assert gs.tolist() == [0, 30, 60, 90] and ge.tolist() == [30, 60, 90, 100]
    assert a.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    # A single range larger than max_size stands alone.
    gs, ge, _ = coalesce_ranges([0, 100], [100, 110], 5, 50)
    assert gs.tolist() == [0, 100] and ge.tolist() == [100, 110]
    # ids keep sources apart even when their ranges coincide.
    gs, ge, a = coalesce_ranges([0, 0, 5], [5, 5, 9], 10, 100, ids=[1, 0, 1])
    assert gs.tolist() == [0, 0] and ge.tolist() == [5, 9] and a.tolist() == [1, 0, 1]
    # max_size=0: identical ranges share a request, nothing else merges.
    gs, _, a = coalesce_ranges([0, 0, 5], [5, 5, 9], 100, 0)
    assert gs.tolist() == [0, 5] and a.tolist() == [0, 0, 1]
    # Empty input.
    gs, ge, a = coalesce_ranges([], [], 0, 0)
    assert gs.size == ge.size == a.size == 0


def test_huge_offsets_with_many_ids() -> None:
    # Offsets near 2**60 with several ids: the per-id running maximum must not overflow.
    base = 1 << 60
    starts = [base, base + 10, 5, 7]
    stops = [base + 5, base + 20, 6, 9]
    gs, ge, a = coalesce_ranges(starts, stops, 100, 1000, ids=[0, 0, 1, 1])
    assert sorted(zip(gs.tolist(), ge.tolist())) == [(5, 9), (base, base + 20)]
    assert a[0] == a[1] and a[2] == a[3] and a[0] != a[2]


def test_invalid_input() -> None:
    with pytest.raises(InvalidArgumentError, match="stops"):
        coalesce_ranges([0, 1], [1], 0, 10)
    with pytest.raises(InvalidArgumentError, match=r"\[5, 3\)"):
        coalesce_ranges([0, 5], [1, 3], 0, 10)
    with pytest.raises(InvalidArgumentError):
        coalesce_ranges([-1], [3], 0, 10)
    with pytest.raises(InvalidArgumentError, match="ids"):
        coalesce_ranges([0], [3], 0, 10, ids=[1, 2])


def test_slice_groups_short_and_absent() -> None:
    gs, ge, a = coalesce_ranges([0, 10, 50], [5, 20, 60], 10, 100)
    assert gs.tolist() == [0, 50]
    # The first group's source ended at byte 12: [0, 5) is fine, [10, 20) is short.
    with pytest.raises(ShortReadError, match=r"'src'.*\[10, 20\)"):
        slice_groups([b"x" * 12, b"y" * 10], gs, [0, 10, 50], [5, 20, 60], a, names="src")
    out = slice_groups([None, b"y" * 10], gs, [0, 10, 50], [5, 20, 60], a, names=["a", "b", "c"])
    assert out == [None, None, b"y" * 10]


def test_speed() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    starts = np.sort(rng.integers(0, 1 << 40, n))
    stops = starts + rng.integers(1, 1 << 16, n)
    ids = rng.integers(0, 1000, n)
    coalesce_ranges(starts[:10], stops[:10], 1 << 20, 16 << 20)  # warm up
    t0 = time.perf_counter()
    coalesce_ranges(starts, stops, 1 << 20, 16 << 20, ids=ids)
    coalesce_ranges(starts, stops, 1 << 20, 16 << 20)
    # Dense chunks of one file: many size splits.
    dense = np.arange(n, dtype=np.int64) * 65536
    gs, _, _ = coalesce_ranges(dense, dense + 65536, 0, 16 << 20)
    elapsed = time.perf_counter() - t0
    assert len(gs) == -(-n // 256)
    assert elapsed < 1.0, f"coalescing 3 x {n} ranges took {elapsed:.2f} s"
