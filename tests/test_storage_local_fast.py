"""LocalStore's trimmed whole-value read path (get_many of whole values) keeps every check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chunkref.errors import InvalidKeyError
from chunkref.storage import LocalStore

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlinks and O_NOFOLLOW")


def test_whole_values_absent_and_empty(tmp_path: Path) -> None:
    st = LocalStore(tmp_path)
    st.set("a/b", b"x" * 10_000)
    st.set("a/empty", b"")
    (tmp_path / "a" / "dir").mkdir()
    assert st.get_many([("a/b", None), ("a/empty", None), ("a/missing", None), ("a/dir", None), ("zz/q", None)]) == [
        b"x" * 10_000, b"", None, None, None,
    ]


def test_symlink_leaf_inside_is_followed_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "real").write_bytes(b"inside")
    (root / "link").symlink_to(root / "real")
    (tmp_path / "secret").write_bytes(b"outside")
    (root / "escape").symlink_to(tmp_path / "secret")
    st = LocalStore(root)
    assert st.get_many([("link", None)]) == [b"inside"]
    with pytest.raises(InvalidKeyError, match="outside the store root"):
        st.get_many([("escape", None)])


def test_symlinked_directory_escape_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "k").write_bytes(b"outside")
    (root / "d").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidKeyError, match="outside the store root"):
        LocalStore(root).get_many([("d/k", None)])


def test_fifo_reads_as_absent_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    assert LocalStore(tmp_path).get_many([("pipe", None)]) == [None]
