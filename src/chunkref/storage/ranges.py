"""Coalescing byte ranges into fewer, larger reads.

A read that touches many chunks of one source (a shard, an HDF5 file behind a reference, a
blob on S3) should not issue one request per chunk: neighbouring ranges are merged into one
request when the hole between them is small (reading a few wasted bytes is cheaper than another
round trip), as long as the merged request stays below a size cap.

:func:`coalesce_ranges` plans the merged requests with numpy (sort, running maximum of the
stops, gap detection with :func:`numpy.diff`-style comparisons, size splitting with
:func:`numpy.searchsorted`), so planning costs microseconds per thousand ranges; Python only walks
the *output* groups when some merged group is too large and must be split.
:func:`slice_groups` cuts each request's bytes back out of the fetched groups, checking lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from chunkref.errors import InvalidArgumentError, ShortReadError

__all__ = ["coalesce_ranges", "slice_groups"]


def coalesce_ranges(
    starts: Any,
    stops: Any,
    max_gap: int,
    max_size: int,
    ids: Any | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge byte ranges ``[starts[i], stops[i])`` into fewer covering ranges.

    Two ranges (in start order) join the same group when the hole between the group so far and
    the next range is at most ``max_gap`` bytes (overlapping and adjacent ranges have a gap of
    zero or less) and the group would not grow beyond ``max_size`` bytes.  A range that is on its
    own larger than ``max_size`` forms its own group.  Splitting is greedy from the lowest start.

    Parameters
    ----------
    starts, stops
        Integer array-likes of equal length, ``0 <= start <= stop``.
    max_gap
        Largest hole (bytes) read needlessly to merge two ranges.  ``0`` merges only adjacent or
        overlapping ranges, ``-1`` only overlapping ones.
    max_size
        Largest merged request (bytes).  ``0`` disables merging of distinct ranges.
    ids
        Optional integer source id per range (e.g. a key or file index): ranges with different
        ids are never merged.  Groups are ordered by ``(id, start)``.

    Returns
    -------
    group_starts, group_stops : numpy.ndarray
        int64 bounds of the merged requests.
    assignment : numpy.ndarray
        int64, for every input range (in input order) the index of the group that covers it.

    Raises
    ------
    InvalidArgumentError
        If the inputs have different lengths or a range is negative or reversed.
    """
    s = np.asarray(starts, dtype=np.int64).reshape(-1)
    e = np.asarray(stops, dtype=np.int64).reshape(-1)
    n = s.size
    if e.size != n:
        raise InvalidArgumentError(f"coalesce_ranges: {n} starts but {e.size} stops")
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    if (s < 0).any() or (e < s).any():
        bad = int(np.flatnonzero((s < 0) | (e < s))[0])
        raise InvalidArgumentError(f"coalesce_ranges: invalid range [{s[bad]}, {e[bad]}) at position {bad}")
    if ids is not None:
        k = np.asarray(ids, dtype=np.int64).reshape(-1)
        if k.size != n:
            raise InvalidArgumentError(f"coalesce_ranges: {n} ranges but {k.size} ids")
        order = np.lexsort((s, k))
        ks = k[order]
    else:
        order = np.argsort(s, kind="stable")
        ks = None
    ss = s[order]
    es = e[order]

    # How far the group reaches at each position: the running maximum of the stops, restarted
    # at every id change (ranges of different sources never merge).
    if ks is not None:
        new_id = np.empty(n, dtype=bool)
        new_id[0] = True
        np.not_equal(ks[1:], ks[:-1], out=new_id[1:])
        reach = _segmented_cummax(es, new_id)
    else:
        new_id = None
        reach = np.maximum.accumulate(es)

    # A new group starts where the hole after everything before it is larger than max_gap.
    brk = np.empty(n, dtype=bool)
    brk[0] = True
    np.greater(ss[1:] - reach[:-1], max_gap, out=brk[1:])
    if new_id is not None:
        brk |= new_id
    if max_size <= 0:
        # Zero-size cap: every distinct range alone (identical ranges still share a group).
        brk[1:] |= (ss[1:] != ss[:-1]) | (es[1:] != es[:-1])

    first = np.flatnonzero(brk)
    last_end = np.append(first[1:], n)  # exclusive end position of each gap group
    # A group from position p to q spans at most reach[q] - ss[p]; reach may include earlier
    # overlapping ranges of the group, which only makes a split conservative, never oversized.
    extent = reach[last_end - 1] - ss[first]
    if max_size > 0:
        big = np.flatnonzero(extent > max_size)
        if big.size:
            first = _split_oversized(ss, reach, first, last_end, big, max_size)
            brk = np.zeros(n, dtype=bool)
            brk[first] = True
    gid = np.cumsum(brk) - 1

    group_starts = ss[first]
    group_stops = np.maximum.reduceat(es, first)
    assignment = np.empty(n, dtype=np.int64)
    assignment[order] = gid
    return group_starts.astype(np.int64, copy=False), group_stops.astype(np.int64, copy=False), assignment


def _segmented_cummax(values: np.ndarray, seg_start: np.ndarray) -> np.ndarray:
    """Running maximum of non-negative ``values`` that restarts where ``seg_start`` is True."""
    seg = np.cumsum(seg_start) - 1
    nseg = int(seg[-1]) + 1
    band = int(values.max()) + 1
    if nseg * band < (1 << 62):
        # Lift each segment into its own disjoint band so one accumulate serves all segments.
        lift = seg.astype(np.int64) * np.int64(band)
        return np.maximum.accumulate(values + lift) - lift
    # Offsets too large to lift safely in int64: one accumulate per segment.
    out = np.empty_like(values)
    bounds = np.append(np.flatnonzero(seg_start), values.size)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        out[a:b] = np.maximum.accumulate(values[a:b])
    return out


def _split_oversized(
    ss: np.ndarray,
    reach: np.ndarray,
    first: np.ndarray,
    last_end: np.ndarray,
    big: np.ndarray,
    max_size: int,
) -> np.ndarray:
    """Greedily split the gap groups listed in ``big`` so none spans more than ``max_size``."""
    out: list[int] = []
    prev = 0
    first_l = first.tolist()
    for g in big.tolist():
        out.extend(first_l[prev:g])
        prev = g + 1
        g0, g1 = first_l[g], int(last_end[g])
        # Within one gap group reach is non-decreasing, so the end of a sub-group starting at
        # position p is the first position whose reach passes ss[p] + max_size (at least p + 1).
        nxt = np.searchsorted(reach[g0:g1], ss[g0:g1] + max_size, side="right") + g0
        nxt = np.maximum(nxt, np.arange(g0 + 1, g1 + 1)).tolist()
        p = g0
        while p < g1:
            out.append(p)
            p = nxt[p - g0]
    out.extend(first_l[prev:])
    return np.asarray(out, dtype=np.int64)


def slice_groups(
    group_data: Sequence[bytes | bytearray | memoryview | None],
    group_starts: Any,
    starts: Any,
    stops: Any,
    assignment: Any,
    *,
    names: Sequence[str] | str | None = None,
) -> list[bytes | None]:
    """Cut every request's bytes out of the merged groups that were fetched.

    Parameters
    ----------
    group_data
        The bytes fetched for each group (``None`` when its source is absent: every request in
        that group is then ``None``).  A group may be shorter than planned (the source ended
        early): requests inside the bytes that arrived are still served.
    group_starts
        The group bounds returned by :func:`coalesce_ranges`.
    starts, stops, assignment
        The original requests and their group.
    names
        The key (one for all, or one per request) for error messages.

    Returns
    -------
    list
        One ``bytes`` (or ``None``) per request, in request order.

    Raises
    ------
    ShortReadError
        If a group's bytes end before a request's stop.
    """
    gs = np.asarray(group_starts, dtype=np.int64).tolist()
    s_l = np.asarray(starts, dtype=np.int64).tolist()
    e_l = np.asarray(stops, dtype=np.int64).tolist()
    a_l = np.asarray(assignment, dtype=np.int64).tolist()
    out: list[bytes | None] = []
    for i, (s, e, g) in enumerate(zip(s_l, e_l, a_l)):
        data = group_data[g]
        if data is None:
            out.append(None)
            continue
        lo = s - gs[g]
        hi = e - gs[g]
        if hi > len(data):
            name = names if isinstance(names, str) or names is None else names[i]
            raise ShortReadError(
                f"short read of {name!r}: asked for bytes [{s}, {e}) but the source ended at byte "
                f"{gs[g] + len(data)}"
            )
        out.append(bytes(data[lo:hi]))
    return out
