"""Chunk locations of HDF5 datasets, straight into numpy columns.

Chunked datasets are listed with one pass of ``DatasetID.chunk_iter`` (HDF5's own index walk,
O(n)); the callback only stores four values into preallocated numpy arrays, and grid positions
are computed afterwards in one vectorised step.  ``get_chunk_info(i)`` is never used: each call
walks the index from the start, which makes a loop over it O(n^2).

Contiguous datasets are one extent in the file; when large they are split into sub-chunks along
the leading axes (each still one contiguous byte range) so a reader can fetch a plane without the
whole dataset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from h5py import h5d


@dataclass(frozen=True)
class ChunkColumns:
    """Stored chunks of one dataset: flat grid positions and their byte ranges."""

    flat: np.ndarray  # int64
    offset: np.ndarray  # uint64
    length: np.ndarray  # uint64
    filter_mask: np.ndarray  # uint32


class ChunkIndexError(Exception):
    """The chunk index is inconsistent with the dataset (the message says how)."""


def list_chunks(dsid: h5d.DatasetID, chunks: tuple[int, ...], grid_shape: tuple[int, ...]) -> ChunkColumns:
    """Every stored chunk of a chunked dataset, in index order.

    Parameters
    ----------
    dsid
        The dataset's low-level id.
    chunks
        HDF5 chunk shape (dataset axes only).
    grid_shape
        Chunks per axis.
    """
    n = dsid.get_num_chunks()
    ndim = len(chunks)
    coords = np.empty((n, ndim), np.int64)
    offset = np.empty(n, np.uint64)
    length = np.empty(n, np.uint64)
    mask = np.empty(n, np.uint32)
    state = [0]

    def store(info, coords=coords, offset=offset, length=length, mask=mask, state=state):
        # Hot path (once per chunk): plain stores only; everything else is vectorised later.
        k = state[0]
        coords[k] = info.chunk_offset
        offset[k] = info.byte_offset
        length[k] = info.size
        mask[k] = info.filter_mask
        state[0] = k + 1

    try:
        dsid.chunk_iter(store)
    except IndexError as exc:
        raise ChunkIndexError(f"the chunk index lists more than the {n} chunks HDF5 counted") from exc
    if state[0] != n:
        raise ChunkIndexError(f"the chunk index listed {state[0]} chunks, HDF5 counted {n}")
    if n == 0:
        return ChunkColumns(np.zeros(0, np.int64), offset, length, mask)
    step = np.asarray(chunks, np.int64)
    grid_coords = coords // step
    if (coords % step).any():
        raise ChunkIndexError("a chunk starts off the chunk grid")
    if ((grid_coords < 0) | (grid_coords >= np.asarray(grid_shape, np.int64))).any():
        raise ChunkIndexError(f"a chunk lies outside the {grid_shape} chunk grid")
    flat = np.ravel_multi_index(tuple(grid_coords.T), grid_shape) if ndim else np.zeros(n, np.int64)
    return ChunkColumns(np.asarray(flat, np.int64), offset, length, mask)


def split_contiguous(shape: tuple[int, ...], itemsize: int, target_bytes: int) -> tuple[int, ...]:
    """Chunk shape splitting a C-contiguous extent into contiguous pieces of at most ``target_bytes``.

    The trailing axes stay whole; the split axis gets the largest divisor of its length that
    keeps a piece under the target (a divisor, so no piece is partial: a partial last piece
    would have to reference bytes beyond the dataset).  Returns ``shape`` itself when the
    dataset is small, or when no divisor gives pieces of a useful size (>= target/16).
    """
    if not shape or target_bytes <= 0:
        return shape
    total = math.prod(shape) * itemsize
    if total <= target_bytes:
        return shape
    # Find the first axis k whose trailing block (axes k+1..) fits the target.
    trailing = itemsize
    k = len(shape) - 1
    while k > 0 and trailing * shape[k] <= target_bytes:
        trailing *= shape[k]
        k -= 1
    # Axis k is split; axes < k get length 1, axes > k stay whole.
    limit = max(1, target_bytes // trailing)
    n = shape[k]
    best = 1
    for d in range(min(limit, n), 0, -1):
        if n % d == 0:
            best = d
            break
    if best * trailing * 16 < target_bytes:
        return shape
    return (1,) * k + (best,) + tuple(shape[k + 1 :])


def contiguous_refs(
    base_offset: int, shape: tuple[int, ...], chunk_shape: tuple[int, ...], itemsize: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Offsets (flat grid order) of the pieces of a contiguous extent, and the piece length."""
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunk_shape))
    piece = math.prod(chunk_shape) * itemsize
    n = math.prod(grid)
    # Pieces are consecutive in the extent: only leading axes of length-1 chunks and the split
    # axis are divided, so flat grid order is byte order.
    offsets = np.uint64(base_offset) + np.arange(n, dtype=np.uint64) * np.uint64(piece)
    return np.arange(n, dtype=np.int64), offsets, piece
