"""chunkref.many: scan_many (local pools, dask schedulers, distributed) and combine_many."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import chunkref.entry as entry
from chunkref.errors import CombineError
from chunkref.many import ScanRecord, combine_many, scan_many
from test_combine import make_nc, nc_values


@pytest.fixture
def files(tmp_path):
    out, start = [], 0
    for i, n in enumerate([31, 28, 31, 30, 31, 30]):
        out.append(make_nc(tmp_path / f"f{i}.nc", n, start, seed=i))
        start += n
    bad = tmp_path / "corrupt.nc"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"not really hdf5" * 50)
    return out, str(bad)


def _check(records, good, bad):
    assert [r.url for r in records] == good[:3] + [bad] + good[3:]
    failed = [r for r in records if not r.ok]
    assert len(failed) == 1 and failed[0].url == bad
    assert failed[0].error_type == "ScanError" and bad in failed[0].error
    assert all(r.manifest.arrays() == ["lat", "tas", "time"] for r in records if r.ok)


@pytest.mark.parametrize("how", [{}, {"max_workers": 2}, {"scheduler": "threads"}, {"scheduler": "synchronous"}])
def test_scan_many_local(files, how):
    good, bad = files
    urls = good[:3] + [bad] + good[3:]
    records = scan_many(urls * (2 if how.get("max_workers") else 1), **how)
    _check(records[: len(urls)], good, bad)


def test_records_pickle(files):
    good, bad = files
    for r in scan_many([good[0], bad]):
        back = pickle.loads(pickle.dumps(r))
        assert isinstance(back, ScanRecord) and back.url == r.url and back.ok == r.ok


def test_scan_many_distributed(files):
    distributed = pytest.importorskip("distributed")
    good, bad = files
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            records = scan_many(good[:3] + [bad] + good[3:], client=client)
            _check(records, good, bad)
            m = combine_many(records, "time", batch_size=2, client=client, on_error="skip")
    np.testing.assert_array_equal(np.asarray(entry.open(m)["tas"][...]), nc_values(good))


def test_combine_many_tree(files):
    good, bad = files
    m = combine_many(good, "time", batch_size=2)
    np.testing.assert_array_equal(np.asarray(entry.open(m)["tas"][...]), nc_values(good))
    flat = combine_many(good, "time", batch_size=64)
    assert m.nodes["tas"] == flat.nodes["tas"] and m.tables["tas"] == flat.tables["tas"]
    with pytest.raises(CombineError) as ei:
        combine_many(good[:2] + [bad], "time")
    assert ei.value.file == bad
    m = combine_many(good[:2] + [bad], "time", on_error="skip", scheduler="threads")
    np.testing.assert_array_equal(np.asarray(entry.open(m)["tas"][...]), nc_values(good[:2]))
