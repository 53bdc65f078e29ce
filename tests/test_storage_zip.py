"""ZipStore: real zarrita.js archives, direct range reads, deflated members, write-once rules."""

from __future__ import annotations

import os
import pickle
import threading
import zipfile
from pathlib import Path

import pytest

from chunkref.errors import InvalidArgumentError, ShortReadError, StoreError
from chunkref.storage import LocalStore, OffsetRequest, RangeRequest, SuffixRequest, ZipStore

REAL = Path("/work/shared/realdata/zarr/zarrita.js-v2")
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="shared realdata not available")


@needs_real
@pytest.mark.parametrize("name, root", [("data.zipped_from_parent.zarr.zip", "data.zarr"),
                                        ("data.zipped_from_within.zarr.zip", "")])
def test_zarrita_archives_match_the_directory(name, root) -> None:
    directory = LocalStore(REAL / "data.zarr", read_only=True)
    with ZipStore(REAL / name) as z:
        assert z.root == root
        keys = sorted(directory.list())
        assert sorted(z.list()) == keys
        assert z.get_many([(k, None) for k in keys]) == directory.get_many([(k, None) for k in keys])
        for k in keys[:30]:
            v = directory.get(k)
            for r in (RangeRequest(0, len(v) // 2), SuffixRequest(3), OffsetRequest(len(v) // 3)):
                assert z.get(k, r) == directory.get(k, r)
        assert z.list_dir("") == directory.list_dir("")
        assert z.list_dir("my group with spaces") == [".zattrs", ".zgroup"]
    # Explicit roots.
    with ZipStore(REAL / "data.zipped_from_parent.zarr.zip", root="") as z:
        assert z.get(".zgroup") is None and z.get("data.zarr/.zgroup") is not None


def _write_mixed(path: Path) -> dict[str, bytes]:
    data = {
        "stored": bytes(range(256)) * 64,
        "deflated": b"abcdefgh" * 5000,
        "empty": b"",
        "d/e/f": b"nested",
    }
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("stored", data["stored"], compress_type=zipfile.ZIP_STORED)
        zf.writestr("deflated", data["deflated"], compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("empty", data["empty"])
        zf.writestr("d/", b"")
        zf.writestr("d/e/f", data["d/e/f"], compress_type=zipfile.ZIP_BZIP2)
        zf.writestr("../evil", b"x")  # a hostile name: never listed, never addressable
    return data


def test_member_kinds_and_ranges(tmp_path) -> None:
    data = _write_mixed(tmp_path / "m.zip")
    z = ZipStore(tmp_path / "m.zip")
    assert sorted(z.list()) == sorted(data)
    for k, v in data.items():
        assert z.get(k) == v and z.getsize(k) == len(v)
        assert z.get(k, SuffixRequest(7)) == v[-7:]
        if v:
            assert z.get(k, RangeRequest(1, len(v) - 1)) == v[1:-1]
            assert z.get(k, OffsetRequest(len(v) // 2)) == v[len(v) // 2 :]
        with pytest.raises(ShortReadError, match=repr(k)):
            z.get(k, RangeRequest(0, len(v) + 1))
    assert z.get("d") is None  # a directory entry holds no value


def test_stored_range_reads_touch_only_the_range(tmp_path, monkeypatch) -> None:
    _write_mixed(tmp_path / "m.zip")
    z = ZipStore(tmp_path / "m.zip")
    z.get("stored", RangeRequest(0, 1))  # learn the data offset
    sizes = []
    real_pread = os.pread

    def spy(fd, n, off):
        sizes.append(n)
        return real_pread(fd, n, off)

    monkeypatch.setattr(os, "pread", spy)
    assert z.get("stored", RangeRequest(1000, 1010)) == (bytes(range(256)) * 64)[1000:1010]
    assert sizes == [10]


def test_corrupt_members_are_detected(tmp_path) -> None:
    path = tmp_path / "c.zip"
    payload = b"0123456789" * 100
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("s", payload, compress_type=zipfile.ZIP_STORED)
        zf.writestr("z", payload, compress_type=zipfile.ZIP_DEFLATED)
    with ZipStore(path) as z:
        s_off = z._data_offset(z._info("s"))
    raw = bytearray(path.read_bytes())
    raw[s_off + 500] ^= 0xFF
    path.write_bytes(bytes(raw))
    with ZipStore(path) as z:
        with pytest.raises(StoreError, match="CRC"):
            z.get("s")
        # A range read cannot check the CRC but still reads exactly its bytes.
        assert z.get("s", RangeRequest(0, 10)) == payload[:10]
        z_off = z._data_offset(z._info("z"))
    raw[z_off + 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with ZipStore(path) as z, pytest.raises(StoreError, match="'z'"):
        z.get("z")


def test_write_once_rules_and_reopen(tmp_path) -> None:
    path = tmp_path / "w.zip"
    with ZipStore(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.set_many([("zarr.json", b"{}"), ("c/0", b"\x00" * 1000)])
        assert z.get("c/0", RangeRequest(10, 20)) == b"\x00" * 10
        with pytest.raises(StoreError, match="'c/0'"):
            z.set("c/0", b"again")
        with pytest.raises(StoreError, match="'c/0'"):
            z.delete("c/0")
        assert z.set_if_not_exists("c/1", b"1") and not z.set_if_not_exists("c/1", b"2")
        with pytest.raises(StoreError, match="cannot be pickled"):
            pickle.dumps(z)
    with pytest.raises(StoreError, match="closed"):
        z.get("zarr.json")
    with ZipStore(path, "a") as z:
        z.set("c/2", b"2")
        with pytest.raises(StoreError):
            z.set("c/0", b"x")
    with ZipStore(path) as z:
        assert sorted(z.list()) == ["c/0", "c/1", "c/2", "zarr.json"]
        assert z.get("c/0") == b"\x00" * 1000 and z.get("c/1") == b"1"
        assert z.read_only
        with pytest.raises(InvalidArgumentError, match="mode 'a'"):
            z.with_read_only(False)
    with pytest.raises(StoreError, match="already exists"):
        ZipStore(path, "x")


def test_bad_archives(tmp_path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        ZipStore(tmp_path / "missing.zip")
    (tmp_path / "not.zip").write_bytes(b"this is not a zip file")
    with pytest.raises(StoreError, match="not a readable zip"):
        ZipStore(tmp_path / "not.zip")
    with pytest.raises(InvalidArgumentError):
        ZipStore(tmp_path / "x.zip", "rw")
    with pytest.raises(InvalidArgumentError):
        ZipStore(tmp_path / "x.zip", "w", compression=zipfile.ZIP_LZMA)


def test_concurrent_readers(tmp_path) -> None:
    data = _write_mixed(tmp_path / "m.zip")
    z = ZipStore(tmp_path / "m.zip")
    errors = []

    def worker() -> None:
        try:
            for _ in range(50):
                assert z.get_many([(k, None) for k in data]) == list(data.values())
                assert z.get("stored", RangeRequest(100, 200)) == data["stored"][100:200]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_pickle_and_copies_share_the_archive(tmp_path) -> None:
    _write_mixed(tmp_path / "m.zip")
    z = ZipStore(tmp_path / "m.zip")
    clone = pickle.loads(pickle.dumps(z))
    assert clone == z and clone.get("empty") == b""
    view = z.with_read_only()
    del z
    assert view.get("stored", RangeRequest(0, 2)) == b"\x00\x01"  # the shared handle stays open
