"""Export a version as a plain Zarr store any reader can open.

Metadata documents are written as they are; chunk bytes are copied as they are stored
(repository objects, ranges of virtual sources — read under the repository's allow-list and
verified when their content id is recorded — and inline chunks), except for arrays using the
``chunkref.padded`` codec, which other readers do not know: those are decoded and re-encoded
without it.  Arrays with a ``rectilinear`` chunk grid are copied as they are and listed in the
report: readers without the rectilinear extension (zarr-python 3.1, tensorstore) cannot open
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from chunkref.errors import InvalidArgumentError
from chunkref.storage.base import Store

if TYPE_CHECKING:
    from chunkref.repo.repository import Repository

__all__ = ["ExportReport", "export_version"]

PADDED = "chunkref.padded"
_BATCH = 256


@dataclass
class ExportReport:
    """What an export wrote."""

    commit: str = ""
    arrays: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    chunks: int = 0
    bytes: int = 0
    reencoded: list[str] = field(default_factory=list)
    rectilinear: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        out = (
            f"exported commit {self.commit}: {len(self.groups)} groups, {len(self.arrays)} arrays, "
            f"{self.chunks} chunks ({self.bytes} bytes)"
        )
        if self.reencoded:
            out += f"\nre-encoded without {PADDED}: {', '.join(self.reencoded)}"
        if self.rectilinear:
            out += (
                "\nrectilinear chunk grids (readers without the rectilinear extension cannot open these): "
                + ", ".join(self.rectilinear)
            )
        return out


def _target_store(target: Any, storage_options: Mapping[str, Any] | None) -> Store:
    if isinstance(target, Store):
        return target
    from chunkref.storage import store_from_url

    return store_from_url(target, storage_options=dict(storage_options or {}), mode="a")


def export_version(
    repo: Repository, version: str, target: Any, *, storage_options: Mapping[str, Any] | None = None
) -> ExportReport:
    """Write version ``version`` (branch, tag or commit) into ``target`` (an empty store or path).

    Raises
    ------
    InvalidArgumentError
        The target is not empty.
    """
    from chunkref.zarr.array import Array
    from chunkref.zarr.metadata import json_dumps, parse_node

    commit = repo.resolve(version)
    session = repo.readonly_session(commit=commit)
    src = session.store
    dst = _target_store(target, storage_options)
    if next(iter(dst.list_prefix("")), None) is not None:
        raise InvalidArgumentError(f"export target {dst!r} is not empty")
    report = ExportReport(commit=commit)
    for path, kind in session.iter_nodes(""):
        docs = session.raw_documents(path) or {}
        prefix = f"{path}/" if path else ""
        if kind == "group":
            report.groups.append(path)
            dst.set_many([(prefix + n, json_dumps(d)) for n, d in docs.items()])
            continue
        report.arrays.append(path)
        zj = docs.get("zarr.json") or {}
        if (zj.get("chunk_grid") or {}).get("name") == "rectilinear":
            report.rectilinear.append(path)
        codecs = zj.get("codecs") or []
        if any(isinstance(c, dict) and c.get("name") == PADDED for c in codecs):
            new_doc = dict(zj)
            new_doc["codecs"] = [c for c in codecs if not (isinstance(c, dict) and c.get("name") == PADDED)]
            new_docs = {**docs, "zarr.json": new_doc}
            dst.set_many([(prefix + n, json_dumps(d)) for n, d in new_docs.items()])
            a = Array(src, path, parse_node(docs, path))
            b = Array(dst, path, parse_node(new_docs, path))
            grid = a.chunk_grid
            flat = session.present_flat(path)
            for f in flat.tolist():
                coords = tuple(int(c) for c in np.unravel_index(f, grid.grid_shape)) if grid.grid_shape else ()
                sl = grid.chunk_slices(coords)
                b[sl] = a[sl]
                report.chunks += 1
            report.reencoded.append(path)
            continue
        dst.set_many([(prefix + n, json_dumps(d)) for n, d in docs.items()])
        keys = src._chunk_keys(path)
        for i in range(0, len(keys), _BATCH):
            part = keys[i : i + _BATCH]
            blobs = src.get_many([(k, None) for k in part])
            items = [(k, b) for k, b in zip(part, blobs) if b is not None]
            dst.set_many(items)
            report.chunks += len(items)
            report.bytes += sum(len(b) for _, b in items)
    return report
