"""chunkref.open / chunkref.scan: format sniffing and who may read what."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import chunkref
from chunkref.errors import NodeNotFoundError, ScanError, SourceNotAllowedError
from chunkref.manifest.kerchunk import from_kerchunk, to_kerchunk

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "ocean_temperature.nc"
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "files"


def test_scan_is_the_function_even_after_importing_scanners() -> None:
    import chunkref.scanners.hdf5  # noqa: F401

    assert callable(chunkref.scan)
    assert chunkref.scan(EXAMPLE).arrays()


@pytest.mark.parametrize(
    ("name", "kind"),
    [("air.nc", "hdf5"), ("95031800_sao.cdf", "netcdf3"), ("tiny.nc", "netcdf3"), ("compressed.hdf5", "hdf5")],
)
def test_sniff(name: str, kind: str) -> None:
    from chunkref.entry import sniff_format

    assert sniff_format(str(REALDATA / name)) == kind


def test_sniff_userblock(tmp_path: Path) -> None:
    import h5py

    from chunkref.entry import sniff_format

    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f["x"] = np.arange(5)
    assert sniff_format(str(path)) == "hdf5"
    np.testing.assert_array_equal(chunkref.open(str(path))["x"][...], np.arange(5))


def test_open_scanned_file_reads_without_allow() -> None:
    g = chunkref.open(str(EXAMPLE))
    assert g["sst"].shape == (31, 36, 72)


def test_only_sources_read_by_the_scan_are_trusted(tmp_path: Path) -> None:
    scanned = chunkref.scan(EXAMPLE)
    chunkref.open(scanned)["lat"][...]  # the scan read this file: allowed
    # The same references arriving from elsewhere (here: rebuilt from kerchunk JSON) are not.
    foreign = from_kerchunk(to_kerchunk(scanned))
    with pytest.raises(SourceNotAllowedError, match="allow="):
        chunkref.open(foreign)["lat"][...]
    np.testing.assert_array_equal(
        chunkref.open(foreign, allow=[str(EXAMPLE.parent) + "/"])["lat"][...], chunkref.open(scanned)["lat"][...]
    )


def test_manifest_next_to_its_sources_is_allowed(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / EXAMPLE.name)
    chunkref.scan(tmp_path / EXAMPLE.name).save(str(tmp_path / "refs.json"))
    assert chunkref.open(str(tmp_path / "refs.json"))["sst"][0, 0, 0] == -32767


def test_open_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(NodeNotFoundError):
        chunkref.open(str(tmp_path / "missing.json"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ScanError, match="junk.bin"):
        chunkref.scan(junk)
    with pytest.raises(chunkref.errors.InvalidArgumentError):
        chunkref.open(str(EXAMPLE), mode="w")


def test_open_zarr_store_like_zarr_python(tmp_path: Path) -> None:
    g = chunkref.open(str(tmp_path / "new.zarr"), mode="w")
    g.create_array("a", shape=(4,), dtype="i4")[...] = [1, 2, 3, 4]
    np.testing.assert_array_equal(chunkref.open(str(tmp_path / "new.zarr"), mode="r")["a"][...], [1, 2, 3, 4])
