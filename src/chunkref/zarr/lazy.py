"""Lazy views of arrays: slicing composes selections; data is read only when asked for.

``a.lazy[10:20, ::2]`` returns a :class:`LazyArray` without any I/O; slicing it again gives
another view (selections compose exactly, as Python ``range`` objects do), and
``np.asarray(view)`` or ``view.read()`` reads just the elements it covers, in one batched call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from chunkref.errors import BoundsCheckError, InvalidArgumentError

# Each axis of a view is either a ``range`` (kept axis) or an ``int`` (dropped axis), in the
# coordinates of the underlying array.
Axis = range | int


class LazyArray:
    """A view of an :class:`~chunkref.zarr.array.Array` selected by ints and slices."""

    __slots__ = ("_array", "_axes")

    def __init__(self, array: Any, axes: tuple[Axis, ...] | None = None) -> None:
        self._array = array
        self._axes = axes if axes is not None else tuple(range(n) for n in array.shape)

    @property
    def array(self) -> Any:
        """The underlying array."""
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self._axes if isinstance(a, range))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d view")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<chunkref.LazyArray of {self._array.name!r} shape={self.shape} dtype={self.dtype}>"

    def __getitem__(self, selection: Any) -> LazyArray:
        if not isinstance(selection, tuple):
            selection = (selection,)
        kept = [i for i, a in enumerate(self._axes) if isinstance(a, range)]
        if sum(1 for s in selection if s is Ellipsis) > 1:
            raise InvalidArgumentError("an index can only have a single ellipsis ('...')")
        if Ellipsis in selection:
            i = selection.index(Ellipsis)
            fill = len(kept) - (len(selection) - 1)
            selection = selection[:i] + (slice(None),) * fill + selection[i + 1 :]
        if len(selection) > len(kept):
            raise BoundsCheckError(f"too many indices for a view with {len(kept)} dimensions")
        selection = selection + (slice(None),) * (len(kept) - len(selection))
        axes = list(self._axes)
        for pos, sel in zip(kept, selection):
            current = axes[pos]
            assert isinstance(current, range)
            if isinstance(sel, slice):
                axes[pos] = current[sel]
            elif isinstance(sel, (int, np.integer)) and not isinstance(sel, bool):
                n = len(current)
                k = int(sel)
                if not -n <= k < n:
                    raise BoundsCheckError(f"index {k} is out of bounds for axis of size {n}")
                axes[pos] = current[k]
            else:
                raise InvalidArgumentError(
                    f"lazy views take ints, slices and '...'; got {type(sel).__name__} (read first, then index)"
                )
        return LazyArray(self._array, tuple(axes))

    def _selection(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """A positive-step basic selection of the array, plus the flips that restore the order."""
        sel: list[Any] = []
        flips: list[Any] = []
        for a in self._axes:
            if isinstance(a, int):
                sel.append(a)
                continue
            if a.step < 0 and len(a):
                first = a[-1]
                sel.append(slice(first, a.start + 1, -a.step))
                flips.append(slice(None, None, -1))
            else:
                sel.append(slice(a.start, a.stop, a.step) if len(a) else slice(0, 0))
                flips.append(slice(None))
        return tuple(sel), tuple(flips)

    def read(self) -> np.ndarray:
        """Read the elements this view covers."""
        sel, flips = self._selection()
        out = self._array.get_basic_selection(sel)
        return out[flips] if flips else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype, copy=False)

    def write(self, value: Any) -> None:
        """Write ``value`` (broadcast to the view's shape) into the elements the view covers."""
        sel, flips = self._selection()
        value = np.broadcast_to(np.asarray(value, dtype=self.dtype), self.shape)
        self._array.set_basic_selection(sel, value[flips] if flips else value)
