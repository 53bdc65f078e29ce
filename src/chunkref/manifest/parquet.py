"""kerchunk parquet references (fsspec ``LazyReferenceMapper`` layout), read and written with
pyarrow (optional: ``pip install pyarrow``).

Layout (see ``shared/reference/kerchunk-and-virtualizarr.md`` 1.4)::

    <root>/.zmetadata                 {"metadata": {key: Zarr v2 document}, "record_size": N}
    <root>/<array path>/refs.<k>.parq rows k*N .. (k+1)*N-1 of the array's chunks (C order over
                                      ceil(shape/chunks)), columns path (string or null),
                                      offset (int64), size (int64), raw (bytes or null)

A row with ``raw`` is inline data; ``path`` with offset 0 and size 0 is the whole file; both null
is a missing chunk.  Zero-length references are written as empty ``raw`` (a range of 0 bytes
would read as "the whole file").  Like kerchunk JSON the format carries Zarr v2 metadata only
(v3 documents are converted, what v2 cannot express is refused), chunk keys use ``.``, and
content ids and source size/mtime/ETag are not representable.

The files are written the way fsspec expects: every record file present and padded to
``record_size`` rows, zstd compression, no statistics, URLs dictionary-encoded.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from chunkref.config import config
from chunkref.errors import InvalidArgumentError, ManifestError, SourceUnavailableError
from chunkref.manifest.manifest import (
    V2_ARRAY_DOC,
    V2_ATTRS_DOC,
    V2_GROUP_DOC,
    Manifest,
    expected_grid_shape,
    normalize_path,
)
from chunkref.manifest.sources import resolve_url
from chunkref.manifest.table import ABSENT, INLINE, MAX_BYTE_POSITION, WHOLE, ChunkTable

__all__ = ["DEFAULT_RECORD_SIZE", "read_parquet", "write_parquet"]

#: Rows per parquet file (kerchunk.df.refs_to_dataframe's default).
DEFAULT_RECORD_SIZE = 100_000


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ManifestError(
            "kerchunk parquet references need the optional package 'pyarrow' (pip install pyarrow)"
        ) from None
    return pa, pq


def _fs(url: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **dict(storage_options))
    return fs, root.rstrip("/")


# --- writing -----------------------------------------------------------------------------------


def write_parquet(
    manifest: Manifest, url: str, *, record_size: int = DEFAULT_RECORD_SIZE, **storage_options: Any
) -> None:
    """Write ``manifest`` as a kerchunk parquet reference directory at ``url``."""
    pa, pq = _pyarrow()
    from chunkref.manifest.kerchunk import v3_to_v2_documents

    record_size = int(record_size)
    if record_size < 1:
        raise InvalidArgumentError(f"record_size must be >= 1, got {record_size}")
    # Absolute URLs: a relative one means "next to the manifest", which readers would resolve
    # against their working directory.
    urls = [resolve_url(s.url, manifest.location) for s in manifest.sources]
    metadata: dict[str, dict] = {}
    files: dict[str, bytes] = {}
    for path in sorted(manifest.nodes, key=lambda p: (p.count("/"), p)):
        table = manifest.tables.get(path)
        has_missing = table is not None and not bool(table.present().all())
        docs = v3_to_v2_documents(path, manifest.nodes[path], has_missing=has_missing)
        prefix = f"{path}/" if path else ""
        for name in (V2_GROUP_DOC, V2_ARRAY_DOC, V2_ATTRS_DOC):
            if name in docs:
                metadata[prefix + name] = docs[name]
        if table is None:
            continue
        zarray = docs[V2_ARRAY_DOC]
        zarray.pop("dimension_separator", None)  # parquet refs always use "."
        for k, blob in _array_records(pa, pq, table, urls, record_size):
            files[f"{path}/refs.{k}.parq"] = blob
    fs, root = _fs(url, storage_options)
    try:
        if fs.exists(root):
            fs.rm(root, recursive=True)
        fs.makedirs(root, exist_ok=True)
        for name in sorted({n.rsplit("/", 1)[0] for n in files}):
            fs.makedirs(f"{root}/{name}", exist_ok=True)
        if files:
            fs.pipe({f"{root}/{n}": b for n, b in files.items()})
        meta = {"metadata": metadata, "record_size": record_size}
        fs.pipe_file(f"{root}/.zmetadata", json.dumps(meta, sort_keys=True).encode("utf-8"))
    except OSError as exc:
        raise SourceUnavailableError(f"cannot write parquet references {url!r}: {exc}") from exc


def _array_records(pa: Any, pq: Any, table: ChunkTable, urls: list[str], record_size: int) -> list[tuple[int, bytes]]:
    n = max(table.nchunks, 1)
    nrec = math.ceil(n / record_size)
    total = nrec * record_size  # every file padded to record_size rows, as fsspec writes them
    src = np.zeros(total, np.int64)
    offset = np.zeros(total, np.int64)
    size = np.zeros(total, np.int64)
    present = np.zeros(total, bool)
    if table.nchunks:
        src[: table.nchunks] = table.source
        present[: table.nchunks] = table.present()
        ln = table.length
        whole = ln == WHOLE
        offset[: table.nchunks] = np.where(whole, 0, table.offset).astype(np.int64)
        size[: table.nchunks] = np.where(whole | (ln == ABSENT), 0, ln).astype(np.int64)
    ranged = present & (src >= 0)
    if (present & (src < INLINE)).any():
        raise ManifestError("repository (NATIVE) chunks cannot be written as kerchunk references")
    length = np.full(total, ABSENT, np.uint64)
    length[: table.nchunks] = table.length
    raw_mask = present & ((src == INLINE) | (ranged & (length == 0)))
    ranged &= ~raw_mask
    out = []
    dictionary = pa.array(urls, pa.string()) if urls else pa.array([], pa.string())
    for k in range(nrec):
        lo, hi = k * record_size, (k + 1) * record_size
        idx = np.where(ranged[lo:hi], src[lo:hi], -1).astype(np.int32)
        mask = idx < 0
        path = pa.DictionaryArray.from_arrays(pa.array(np.where(mask, 0, idx), pa.int32(), mask=mask), dictionary)
        raws = [None] * record_size
        for j in np.nonzero(raw_mask[lo:hi])[0].tolist():
            f = lo + j
            raws[j] = table.inline[f] if src[f] == INLINE else b""
        batch = pa.table(
            {
                "path": path,
                "offset": pa.array(np.where(ranged[lo:hi], offset[lo:hi], 0), pa.int64()),
                "size": pa.array(np.where(ranged[lo:hi], size[lo:hi], 0), pa.int64()),
                "raw": pa.array(raws, pa.binary()),
            }
        )
        buf = io.BytesIO()
        pq.write_table(batch, buf, compression="zstd", write_statistics=False)
        out.append((k, buf.getvalue()))
    return out


# --- reading -----------------------------------------------------------------------------------


def read_parquet(url: str, **storage_options: Any) -> Manifest:
    """Read a kerchunk parquet reference directory into a Manifest (all tables in memory).

    Raises
    ------
    ManifestError
        Malformed or hostile content (naming the file or key), or pyarrow missing.
    """
    pa, pq = _pyarrow()
    fs, root = _fs(url, storage_options)
    limit = int(config.get("manifest.max_json_bytes"))
    try:
        raw = fs.cat_file(f"{root}/.zmetadata", start=0, end=1 << 22)
        if len(raw) == 1 << 22:
            size = int(fs.size(f"{root}/.zmetadata"))
            if size > limit:
                raise ManifestError(f"parquet references {url!r}: .zmetadata larger than manifest.max_json_bytes={limit}")
            raw += fs.cat_file(f"{root}/.zmetadata", start=1 << 22, end=size)
    except FileNotFoundError:
        raise ManifestError(f"{url!r} is not a kerchunk parquet reference directory (no .zmetadata)") from None
    except OSError as exc:
        raise SourceUnavailableError(f"cannot read parquet references {url!r}: {exc}") from exc
    if len(raw) > limit:
        raise ManifestError(f"parquet references {url!r}: .zmetadata larger than manifest.max_json_bytes={limit}")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"parquet references {url!r}: invalid .zmetadata JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("metadata"), dict):
        raise ManifestError(f"parquet references {url!r}: .zmetadata needs a 'metadata' object")
    record_size = meta.get("record_size")
    if not isinstance(record_size, int) or isinstance(record_size, bool) or record_size < 1:
        raise ManifestError(f"parquet references {url!r}: .zmetadata field 'record_size' must be a positive int")
    nodes: dict[str, dict[str, dict]] = {}
    for key, doc in meta["metadata"].items():
        if not isinstance(key, str) or "/" in key and key.rsplit("/", 1)[1] not in (V2_ARRAY_DOC, V2_GROUP_DOC, V2_ATTRS_DOC):
            raise ManifestError(f"parquet references {url!r}: unexpected metadata key {key!r:.80}")
        head, _, name = key.rpartition("/")
        if name not in (V2_ARRAY_DOC, V2_GROUP_DOC, V2_ATTRS_DOC):
            raise ManifestError(f"parquet references {url!r}: unexpected metadata key {key!r:.80}")
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except ValueError as exc:
                raise ManifestError(f"parquet references {url!r}: key {key!r}: invalid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ManifestError(f"parquet references {url!r}: key {key!r} must be a JSON object")
        nodes.setdefault(normalize_path(head), {})[name] = doc
    m = Manifest(location=url)
    max_chunks = int(config.get("manifest.max_table_chunks"))
    for path in sorted(nodes, key=lambda p: (p.count("/"), p)):
        docs = nodes[path]
        if V2_ARRAY_DOC in docs:
            grid = expected_grid_shape(docs, path)
            n = math.prod(grid)
            if n > max_chunks:
                raise ManifestError(f"parquet references {url!r}: array {path!r} has {n} chunks (limit {max_chunks})")
            table = _read_table(pa, pq, fs, root, url, path, grid, record_size, m)
            m.add_array(path, docs, table)
        elif V2_GROUP_DOC in docs:
            m.add_group(path, docs.get(V2_ATTRS_DOC), zarr_format=2)
        else:
            raise ManifestError(f"parquet references {url!r}: node {path!r} has attributes but no .zarray/.zgroup")
    return m


def _read_table(
    pa: Any, pq: Any, fs: Any, root: str, url: str, path: str, grid: tuple[int, ...], record_size: int, m: Manifest
) -> ChunkTable:
    table = ChunkTable.empty(grid)
    n = max(table.nchunks, 1)  # a 0-d array has one chunk, key "0"
    for k in range(math.ceil(n / record_size) if table.nchunks else 0):
        name = f"{root}/{path}/refs.{k}.parq"
        try:
            data = fs.cat_file(name)
        except FileNotFoundError:
            continue  # fsspec treats a missing record file as missing chunks
        except OSError as exc:
            raise SourceUnavailableError(f"cannot read {name!r}: {exc}") from exc
        try:
            t = pq.read_table(io.BytesIO(data))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ManifestError(f"parquet references {url!r}: {path}/refs.{k}.parq is not a parquet file: {exc}") from exc
        lo = k * record_size
        rows = min(t.num_rows, table.nchunks - lo)
        if rows <= 0:
            continue
        where = f"parquet references {url!r}: {path}/refs.{k}.parq"
        cols = set(t.column_names)
        if not {"path", "offset", "size"} <= cols and "raw" not in cols:
            raise ManifestError(f"{where}: needs columns path, offset, size (and/or raw), has {sorted(cols)}")
        flat = np.arange(lo, lo + rows, dtype=np.int64)
        raw = t.column("raw").slice(0, rows).to_pylist() if "raw" in cols else [None] * rows
        if "path" in cols:
            col = t.column("path").slice(0, rows).combine_chunks()
            if not pa.types.is_dictionary(col.type):
                col = col.dictionary_encode()
            codes = col.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
            valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
            dictionary = col.dictionary.to_pylist()
            offs = t.column("offset").slice(0, rows).to_numpy().astype(np.int64)
            sizes = t.column("size").slice(0, rows).to_numpy().astype(np.int64)
            is_raw = np.fromiter((r is not None for r in raw), bool, rows)
            ref = valid & ~is_raw
            if ref.any():
                if (offs[ref] < 0).any() or (sizes[ref] < 0).any() or (offs[ref] > MAX_BYTE_POSITION - sizes[ref]).any():
                    raise ManifestError(f"{where}: negative or out-of-range offset/size")
                used = np.unique(codes[ref])
                remap = np.zeros(max(len(dictionary), 1), np.int64)
                for c in used.tolist():
                    u = dictionary[c]
                    if not isinstance(u, str) or not u:
                        raise ManifestError(f"{where}: empty source path")
                    remap[c] = m.add_source(u)
                whole = ref & (offs == 0) & (sizes == 0)
                part = ref & ~whole
                table.set_refs(flat[part], remap[codes[part]], offs[part], sizes[part])
                table.set_refs(flat[whole], remap[codes[whole]], 0, int(WHOLE))
        for j, r in enumerate(raw):
            if r is not None:
                table.set_inline(table.coords_of(int(flat[j])), bytes(r))
    return table
