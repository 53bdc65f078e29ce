"""Scanning and reading HDF5 / NetCDF files over HTTP and S3, with the requests it costs.

The servers are local (tests/servers.py): a range-capable HTTP server and a moto S3 server on
127.0.0.1.  Every variable read through the manifest must equal h5py's read of the local file.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import chunkref
from chunkref.entry import scan
from chunkref.errors import SourceNotAllowedError
from servers import HTTP_OPTIONS

pytestmark = pytest.mark.network

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "files"
FILES = ["air.nc", "compressed.hdf5", "95031800_sao.cdf", "S5P_OFFL_L2_CH4_20190311T101655_20190311T115825_07293_01_010202_20190317T121015_subsetted.nc4"]


def _assert_same_as_local(root: chunkref.Group, local: Path) -> None:
    import netCDF4

    n = 0
    if h5py.is_hdf5(local):
        with h5py.File(local, "r") as f:
            for name, arr in root.members(max_depth=None):
                if isinstance(arr, chunkref.Array) and name in f and isinstance(f[name], h5py.Dataset):
                    np.testing.assert_array_equal(arr[...], f[name][...], err_msg=name)
                    n += 1
    else:
        with netCDF4.Dataset(local) as nc:
            nc.set_auto_maskandscale(False)
            for name, arr in root.arrays():
                np.testing.assert_array_equal(arr[...], nc[name][...], err_msg=name)
                n += 1
    assert n > 0


@pytest.mark.parametrize("name", FILES)
def test_scan_and_read_over_http(http_server, name: str) -> None:
    data = (REALDATA / name).read_bytes()
    url = http_server.add_file(f"remote/{name}", data)
    manifest = scan(url, storage_options=HTTP_OPTIONS)
    scan_gets = http_server.count("GET")
    assert not manifest.refused
    # A scan reads the header and chunk index, not the data: far fewer requests than chunks,
    # and for these small files a handful at most.
    assert scan_gets <= 12, f"scan of {name} over HTTP took {scan_gets} GET requests"
    root = chunkref.open(manifest, allow=[http_server.url("remote/")], storage_options=HTTP_OPTIONS)
    _assert_same_as_local(root, REALDATA / name)


def test_scan_and_read_over_s3(s3_server) -> None:
    bucket = s3_server.make_bucket()
    fs = s3_server.filesystem()
    name = "compressed.hdf5"
    fs.pipe(f"{bucket}/archive/{name}", (REALDATA / name).read_bytes())
    url = f"s3://{bucket}/archive/{name}"
    manifest = scan(url, storage_options=s3_server.storage_options)
    assert not manifest.refused
    with pytest.raises(SourceNotAllowedError, match=f"s3://{bucket}/archive/"):
        chunkref.open(_relocated(manifest))
    root = chunkref.open(manifest, allow=[f"s3://{bucket}/archive/"], storage_options=s3_server.storage_options)
    _assert_same_as_local(root, REALDATA / name)


def _relocated(manifest):
    """The same references, as a manifest loaded from elsewhere (no scanning trust)."""
    import tempfile

    path = Path(tempfile.mkdtemp()) / "refs.json"
    manifest.save(str(path))
    return str(path)


def test_reads_are_batched_over_http(http_server) -> None:
    name = "air.nc"
    url = http_server.add_file(f"batch/{name}", (REALDATA / name).read_bytes())
    manifest = scan(url, storage_options=HTTP_OPTIONS)
    root = chunkref.open(manifest, allow=[http_server.url("batch/")], storage_options=HTTP_OPTIONS)
    air = root["air"]
    http_server.reset()
    air[...]
    # Neighbouring chunk ranges of one file are merged into few requests.
    assert http_server.count("GET") <= max(2, air.nchunks // 4)
