"""A value another writer creates after we listed its folder must be readable at once (S3)."""

from __future__ import annotations

import pytest

from chunkref.storage import FsspecStore

pytestmark = pytest.mark.network


def test_object_created_after_listing_is_read(s3_server) -> None:
    bucket = s3_server.make_bucket()
    url = f"s3://{bucket}/repo"
    reader = FsspecStore(url, storage_options=s3_server.storage_options)
    writer = FsspecStore(url, storage_options={**s3_server.storage_options, "skip_instance_cache": True})
    writer.set("refs/a", b"first")
    assert list(reader.list_prefix("refs/")) == ["refs/a"]  # fills the reader's listing cache
    writer.set("refs/b", b"second")
    assert reader.get("refs/b") == b"second"
    assert reader.get_many([("refs/b", None), ("refs/a", None)]) == [b"second", b"first"]
    writer.set("refs/empty", b"")
    assert reader.get("refs/empty") == b""
