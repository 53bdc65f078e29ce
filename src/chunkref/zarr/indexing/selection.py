"""Parsing user selections: numpy's rules for what an index may be, and which indexer it needs.

A selection is first split into *entries* (one per item of the selection tuple), each tagged
with what it is; the ellipsis is then expanded and missing trailing axes are filled with full
slices.  Bounds are checked per axis when the entries are bound to an array shape.  This module
knows nothing about chunks: :mod:`chunkref.zarr.indexing.axis` and ``indexers`` build on it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref.errors import (
    BoundsCheckError,
    InvalidArgumentError,
    InvalidSelectionError,
    SelectionTypeError,
)

# Entry tags.
ELLIPSIS = "ellipsis"
NEWAXIS = "newaxis"
INT = "int"
SLICE = "slice"
ARRAY = "array"  # integer index array (any ndim)
MASK = "mask"  # boolean array (covers mask.ndim axes)

_NUMPY_TYPES_MESSAGE = (
    "only integers, slices (`:`), ellipsis (`...`), numpy.newaxis (`None`) and integer or boolean "
    "arrays are valid indices"
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One item of a selection tuple.

    ``value`` is an ``int`` for INT, a ``slice`` for SLICE, an ``np.ndarray`` (int64 or bool)
    for ARRAY/MASK, and ``None`` otherwise.  ``axis`` is the first array axis the entry
    applies to (-1 until the selection is expanded; NEWAXIS entries keep the axis they precede).
    """

    tag: str
    value: Any = None
    axis: int = -1

    @property
    def span(self) -> int:
        """Number of array axes this entry consumes."""
        if self.tag == MASK:
            return self.value.ndim
        if self.tag in (NEWAXIS, ELLIPSIS):
            return 0
        return 1


def _as_index_array(obj: Any, position: int) -> np.ndarray:
    """Convert an array-like index to an int64 or bool ndarray (numpy's accepted dtypes)."""
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InvalidSelectionError(f"selection item {position} is not a valid index array: {exc}") from exc
    kind = arr.dtype.kind
    if kind == "b":
        return arr
    if kind in "iu":
        if kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise BoundsCheckError(f"selection item {position}: index {int(arr.max())} is out of bounds")
        return arr.astype(np.int64, copy=False)
    if arr.size == 0 and not isinstance(obj, np.ndarray):
        # numpy accepts an empty list as an empty integer index.
        return np.zeros(arr.shape, dtype=np.int64)
    raise InvalidSelectionError(f"selection item {position} has dtype {arr.dtype}: {_NUMPY_TYPES_MESSAGE}")


def parse_entries(selection: Any) -> list[Entry]:
    """Tag every item of ``selection`` (not yet bound to a shape or bounds-checked)."""
    if not isinstance(selection, tuple):
        selection = (selection,)
    out: list[Entry] = []
    seen_ellipsis = False
    for i, s in enumerate(selection):
        if s is Ellipsis:
            if seen_ellipsis:
                raise InvalidSelectionError("an index can only have a single ellipsis ('...')")
            seen_ellipsis = True
            out.append(Entry(ELLIPSIS))
        elif s is None:
            out.append(Entry(NEWAXIS))
        elif isinstance(s, slice):
            out.append(Entry(SLICE, s))
        elif isinstance(s, (bool, np.bool_)):
            # numpy treats a boolean scalar as a 0-d mask that adds an axis; that has no use on a
            # chunked array and is almost always a bug in the caller.
            raise InvalidSelectionError(
                f"selection item {i} is a boolean scalar ({s!r}); use a boolean array with the array's shape"
            )
        elif isinstance(s, (int, np.integer)):
            out.append(Entry(INT, int(s)))
        elif isinstance(s, (np.ndarray, list, tuple)):
            arr = _as_index_array(s, i)
            if arr.ndim == 0:
                if arr.dtype.kind == "b":
                    raise InvalidSelectionError(
                        f"selection item {i} is a 0-d boolean array; use a boolean array with the array's shape"
                    )
                out.append(Entry(INT, int(arr)))
            else:
                out.append(Entry(MASK if arr.dtype.kind == "b" else ARRAY, arr))
        else:
            try:
                out.append(Entry(INT, operator.index(s)))
            except TypeError:
                raise InvalidSelectionError(
                    f"selection item {i} of type {type(s).__name__}: {_NUMPY_TYPES_MESSAGE}"
                ) from None
    return out


def expand_entries(entries: list[Entry], ndim: int) -> list[Entry]:
    """Replace the ellipsis (or pad at the end) with full slices and assign array axes."""
    consumed = sum(e.span for e in entries)
    if consumed > ndim:
        raise InvalidSelectionError(
            f"too many indices for array: array is {ndim}-dimensional, but {consumed} were indexed"
        )
    full = slice(None)
    out: list[Entry] = []
    axis = 0
    padded = False
    for e in entries:
        if e.tag == ELLIPSIS:
            for _ in range(ndim - consumed):
                out.append(Entry(SLICE, full, axis))
                axis += 1
            padded = True
            continue
        out.append(Entry(e.tag, e.value, axis))
        axis += e.span
    if not padded:
        for _ in range(ndim - consumed):
            out.append(Entry(SLICE, full, axis))
            axis += 1
    return out


def check_int(index: int, axis: int, extent: int) -> int:
    """Wrap a negative index; raise :class:`BoundsCheckError` naming the axis when out of range."""
    if index < -extent or index >= extent:
        raise BoundsCheckError(f"index {index} is out of bounds for axis {axis} with size {extent}")
    return index + extent if index < 0 else index


def check_array(values: np.ndarray, axis: int, extent: int) -> np.ndarray:
    """Vectorised :func:`check_int` for an int64 index array (returns a wrapped copy if needed)."""
    if values.size == 0:
        return values
    lo = int(values.min())
    hi = int(values.max())
    if lo < -extent:
        raise BoundsCheckError(f"index {lo} is out of bounds for axis {axis} with size {extent}")
    if hi >= extent:
        raise BoundsCheckError(f"index {hi} is out of bounds for axis {axis} with size {extent}")
    if lo < 0:
        values = np.where(values < 0, values + extent, values)
    return values


def check_mask(mask: np.ndarray, axis: int, shape: Sequence[int]) -> None:
    """A boolean array must match the extents of the axes it covers exactly (as in numpy)."""
    for k, m in enumerate(mask.shape):
        n = shape[axis + k]
        if m != n:
            raise InvalidSelectionError(
                f"boolean index did not match indexed array along axis {axis + k}; size of axis is {n} "
                f"but size of corresponding boolean axis is {m}"
            )


def slice_indices(s: slice, extent: int, axis: int) -> tuple[int, int, int, int]:
    """``(start, stop, step, length)`` of a slice over ``extent`` (numpy clipping rules)."""
    try:
        start, stop, step = s.indices(extent)
    except ValueError:
        raise InvalidArgumentError(f"slice step cannot be zero (axis {axis})") from None
    except TypeError:
        raise SelectionTypeError(
            f"slice indices must be integers or None or have an __index__ method (axis {axis}: {s!r})"
        ) from None
    return start, stop, step, len(range(start, stop, step))


# --- which indexer a ``__getitem__`` selection needs -------------------------------------------


def is_basic_selection(selection: Any) -> bool:
    """True when ``selection`` uses only ints, slices, ``...``, ``None`` and 0-d integer arrays."""
    items = selection if isinstance(selection, tuple) else (selection,)
    for s in items:
        if s is None or s is Ellipsis or isinstance(s, slice):
            continue
        if isinstance(s, (bool, np.bool_)):
            return False
        if isinstance(s, (int, np.integer)):
            continue
        if isinstance(s, np.ndarray):
            if s.ndim == 0 and s.dtype.kind in "iu":
                continue
            return False
        if isinstance(s, (list, tuple)):
            return False
        if hasattr(s, "__index__"):
            continue
        return False
    return True


def kind_of_entries(entries: list[Entry]) -> str:
    """The indexer numpy's ``a[selection]`` semantics need for expanded ``entries``.

    * no arrays -> ``"basic"``;
    * exactly one 1-d integer or boolean array, placed where an outer (orthogonal) index would
      put its axis -> ``"orthogonal"``; numpy moves the array's axis to the front when the
      advanced indices (the array and any ints) are not adjacent, which only agrees with
      orthogonal indexing when no slice comes before the array;
    * everything else (several arrays, multi-dimensional arrays, full masks) -> ``"vindex"``,
      which implements numpy's advanced indexing rules in general.
    """
    arrays = [i for i, e in enumerate(entries) if e.tag in (ARRAY, MASK)]
    if not arrays:
        return "basic"
    if len(arrays) == 1 and entries[arrays[0]].value.ndim == 1:
        if any(e.tag == NEWAXIS for e in entries):
            return "vindex"
        j = arrays[0]
        advanced = [i for i, e in enumerate(entries) if e.tag in (INT, ARRAY, MASK)]
        adjacent = advanced[-1] - advanced[0] + 1 == len(advanced)
        if adjacent or not any(e.tag == SLICE for e in entries[:j]):
            return "orthogonal"
    return "vindex"


def selection_kind(selection: Any, shape: Sequence[int] | int) -> str:
    """Which indexer ``a[selection]`` needs under numpy semantics: basic, orthogonal or vindex.

    ``shape`` is the array shape (or its number of dimensions).  Malformed selections raise the
    same errors :func:`make_indexer` would.
    """
    if is_basic_selection(selection):
        return "basic"
    ndim = shape if isinstance(shape, int) else len(shape)
    return kind_of_entries(expand_entries(parse_entries(selection), ndim))
