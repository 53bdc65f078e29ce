"""A chunkref Store (e.g. a repository session's) as a zarr-python 3 store.

``ZarrStoreAdapter(session.store)`` implements :class:`zarr.abc.store.Store`, so zarr-python and
xarray read and write repository sessions::

    ds.to_zarr(session.zarr_store(), zarr_format=3, consolidated=False)
    xr.open_zarr(session.zarr_store(), consolidated=False)

The async methods run the synchronous store calls in a worker thread (``asyncio.to_thread``):
zarr-python issues chunk requests concurrently, and the store's own batched paths do the I/O.
Consolidated metadata is not supported (``supports_consolidated_metadata`` is False): in a
repository it would go stale as soon as another writer's commit is merged in.

This module needs ``zarr`` (>= 3) installed; chunkref itself does not depend on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from chunkref.storage.base import OffsetRequest, RangeRequest, SuffixRequest
from chunkref.storage.base import Store as ChunkrefStore

__all__ = ["ZarrStoreAdapter"]


def _range(byte_range: ByteRequest | None) -> Any:
    if byte_range is None:
        return None
    if isinstance(byte_range, RangeByteRequest):
        return RangeRequest(byte_range.start, byte_range.end)
    if isinstance(byte_range, OffsetByteRequest):
        return OffsetRequest(byte_range.offset)
    if isinstance(byte_range, SuffixByteRequest):
        return SuffixRequest(byte_range.suffix)
    raise TypeError(f"unexpected byte range {byte_range!r}")


class ZarrStoreAdapter(Store):
    """zarr-python's async Store interface over a synchronous chunkref Store."""

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True
    supports_partial_writes: bool = False

    def __init__(self, store: ChunkrefStore, *, read_only: bool | None = None) -> None:
        ro = store.read_only if read_only is None else bool(read_only)
        super().__init__(read_only=ro)
        self.store = store if store.read_only == ro else store.with_read_only(ro)

    @property
    def supports_consolidated_metadata(self) -> bool:
        return False

    def with_read_only(self, read_only: bool = False) -> ZarrStoreAdapter:
        return ZarrStoreAdapter(self.store, read_only=read_only)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZarrStoreAdapter) and other.store == self.store and other.read_only == self.read_only

    def __hash__(self) -> int:
        return hash((id(self.store), self.read_only))

    def __repr__(self) -> str:
        return f"ZarrStoreAdapter({self.store!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "read_only": self.read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], read_only=state["read_only"])  # type: ignore[misc]

    # -- reads -----------------------------------------------------------------------------------

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        data = await asyncio.to_thread(self.store.get, key, _range(byte_range))
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        reqs = [(k, _range(r)) for k, r in key_ranges]
        blobs = await asyncio.to_thread(self.store.get_many, reqs)
        return [None if b is None else prototype.buffer.from_bytes(b) for b in blobs]

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.store.exists, key)

    # -- writes ----------------------------------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()
        await asyncio.to_thread(self.store.set, key, value.to_bytes())

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._check_writable()
        await asyncio.to_thread(self.store.set_if_not_exists, key, value.to_bytes())

    async def delete(self, key: str) -> None:
        self._check_writable()
        await asyncio.to_thread(self.store.delete, key)

    async def delete_dir(self, prefix: str) -> None:
        self._check_writable()
        prefix = prefix.rstrip("/")
        if prefix:
            await asyncio.to_thread(self.store.delete_prefix, prefix)
        else:
            await asyncio.to_thread(self.store.clear)

    async def clear(self) -> None:
        self._check_writable()
        await asyncio.to_thread(self.store.clear)

    # -- listing ---------------------------------------------------------------------------------

    async def list(self) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(lambda: list(self.store.list())):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(lambda: list(self.store.list_prefix(prefix))):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        prefix = prefix.rstrip("/")
        for name in await asyncio.to_thread(self.store.list_dir, prefix):
            yield name
