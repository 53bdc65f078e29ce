"""Native manifest format: a directory with a small JSON header and content-addressed page files.

Layout under the manifest URL (any fsspec URL or local path)::

    manifest.json            header (canonical JSON, see below)
    pages/<cid>              one file per non-empty page of an array's chunk table
                             (chunkref.manifest.pages encoding), named by the CIDv1
                             (raw, sha2-256) of its bytes

The header holds everything but the chunk references: format and version, the content-id hash
function, the source table (URL, size, mtime, ETag at scan time), every node's metadata
documents, the refused variables, and per array the grid shape, page shape, page file names in
page-grid C order (``null`` for pages without chunks), the source indices the array uses and its
number of present chunks.  :func:`read_native` reads only the header; each array's table is a
:class:`~chunkref.manifest.pages.PagedChunkTable` that fetches a page file the first time one of
its chunks is looked up (and checks the file's bytes against its name).

Deterministic: the header is JSON with sorted keys and fixed separators, pages are canonical, and
page names are their content ids, so the same manifest always writes the same files; unchanged
pages keep their names (a re-save to S3 skips existing ones).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from chunkref.config import config
from chunkref.errors import InvalidArgumentError, ManifestError, SourceUnavailableError
from chunkref.manifest.cid import cid_from_string, cid_to_string, compute_cid
from chunkref.manifest.manifest import (
    DOCUMENT_NAMES,
    Manifest,
    expected_grid_shape,
    node_kind,
    normalize_path,
)
from chunkref.manifest.pages import (
    MAX_PAGE_CHUNKS,
    PagedChunkTable,
    decode_page,
    default_page_shape,
    encode_page,
    page_grid_shape,
    page_region,
)
from chunkref.manifest.sources import Source
from chunkref.manifest.table import ChunkTable

__all__ = ["HEADER_NAME", "NATIVE_VERSION", "is_native", "read_native", "write_native"]

HEADER_NAME = "manifest.json"
PAGES_DIR = "pages"
FORMAT_NAME = "chunkref-manifest"
NATIVE_VERSION = 1
HASH_FUNCTIONS = ("sha2-256", "blake3")
# Page files are named by the base32 CIDv1 (raw codec, sha2-256) of their bytes: 59 characters
# from a fixed alphabet, so a name can never traverse out of the pages folder.
_PAGE_NAME = re.compile(r"^bafkrei[a-z2-7]{52}$")
_WRITE_THREADS = 4
_HEADER_PROBE = 1 << 22


def _fs(url: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **dict(storage_options))
    return fs, root.rstrip("/")


def is_native(url: str, **storage_options: Any) -> bool:
    """Whether ``url`` is a directory holding a native manifest header."""
    try:
        fs, root = _fs(url, storage_options)
        return bool(fs.isfile(f"{root}/{HEADER_NAME}"))
    except (OSError, ValueError):
        return False


# --- writing -----------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    # Canonical: sorted keys, no whitespace, UTF-8.  NaN/Infinity stay as JSON extensions
    # because metadata in the wild holds them (the stdlib reader accepts them).
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def page_name(data: bytes) -> str:
    """The file name of a page: the base32 CIDv1 (raw, sha2-256) of its bytes."""
    return cid_to_string(compute_cid(data, "sha2-256"))


def _array_pages(
    table: ChunkTable, page_shape: tuple[int, ...], urls: list[str], hash_function: str, path: str
) -> tuple[list[str | None], dict[str, bytes]]:
    grid = table.grid_shape
    pgrid = page_grid_shape(grid, page_shape)
    present = table.present()
    pview = present.reshape(grid) if grid else present.reshape(())
    regions = [page_region(grid, page_shape, pc) for pc in np.ndindex(pgrid)] if math.prod(pgrid) else []

    def encode(region: tuple[slice, ...]) -> bytes | None:
        if not pview[region].any():
            return None
        try:
            return encode_page(table, region, sources=urls, hash_function=hash_function)
        except InvalidArgumentError as exc:
            raise ManifestError(f"array {path!r}: cannot encode chunk table page {region}: {exc}") from exc

    # zstd and hashing release the GIL: a few threads overlap them.
    with ThreadPoolExecutor(min(_WRITE_THREADS, max(1, len(regions)))) as pool:
        blobs = list(pool.map(encode, regions))
    names: list[str | None] = []
    files: dict[str, bytes] = {}
    for blob in blobs:
        if blob is None:
            names.append(None)
            continue
        name = page_name(blob)
        names.append(name)
        files[name] = blob
    return names, files


def native_header(
    manifest: Manifest, page_shapes: Mapping[str, tuple[int, ...]] | None = None
) -> tuple[dict, dict[str, bytes]]:
    """The header document and page files ``{name: bytes}`` of ``manifest``."""
    hash_function = getattr(manifest, "hash_function", "sha2-256")
    if hash_function not in HASH_FUNCTIONS:
        raise ManifestError(f"unknown hash_function {hash_function!r}; known: {list(HASH_FUNCTIONS)}")
    urls = [s.url for s in manifest.sources]
    arrays: dict[str, dict] = {}
    files: dict[str, bytes] = {}
    for path in sorted(manifest.tables):
        table = manifest.tables[path]
        page_shape = tuple((page_shapes or {}).get(path) or default_page_shape(table.grid_shape))
        if len(page_shape) != len(table.grid_shape) or any(int(p) < 1 for p in page_shape):
            raise ManifestError(f"array {path!r}: page shape {page_shape} does not fit grid {table.grid_shape}")
        # Canonical: a page never extends past the grid.
        page_shape = tuple(min(int(p), max(g, 1)) for p, g in zip(page_shape, table.grid_shape))
        names, blobs = _array_pages(table, page_shape, urls, hash_function, path)
        files.update(blobs)
        present = table.present()
        used = np.unique(table.source[present & (table.source >= 0)]).tolist()
        arrays[path] = {
            "grid_shape": list(table.grid_shape),
            "page_shape": list(page_shape),
            "pages": names,
            "sources": [int(u) for u in used],
            "present": int(present.sum()),
        }
    header = {
        "format": FORMAT_NAME,
        "version": NATIVE_VERSION,
        "hash_function": hash_function,
        "sources": [s.to_json() for s in manifest.sources],
        "nodes": {p: manifest.nodes[p] for p in sorted(manifest.nodes)},
        "refused": dict(sorted(manifest.refused.items())),
        "arrays": arrays,
    }
    return header, files


def write_native(
    manifest: Manifest,
    url: str,
    *,
    page_shapes: Mapping[str, tuple[int, ...]] | None = None,
    **storage_options: Any,
) -> None:
    """Write ``manifest`` as a native manifest directory at ``url``.

    Page files are written first (existing files with the same name and size are kept: their
    names are their content ids), then the header, then page files no array refers to any more
    are removed, so a crash never leaves a header pointing at missing pages.

    Parameters
    ----------
    page_shapes
        Optional page shape per array path (default :func:`~chunkref.manifest.pages.default_page_shape`).
    """
    header, files = native_header(manifest, page_shapes)
    fs, root = _fs(url, storage_options)
    pages_dir = f"{root}/{PAGES_DIR}"
    try:
        fs.makedirs(pages_dir, exist_ok=True)
        existing = _list_pages(fs, pages_dir)
        todo = {n: b for n, b in files.items() if existing.get(n) != len(b)}
        if todo:
            fs.pipe({f"{pages_dir}/{n}": b for n, b in todo.items()})
        fs.pipe_file(f"{root}/{HEADER_NAME}", _dumps(header))
        stale = [f"{pages_dir}/{n}" for n in existing if n not in files]
        if stale:
            fs.rm(stale)
    except OSError as exc:
        raise SourceUnavailableError(f"cannot write native manifest {url!r}: {exc}") from exc


def _list_pages(fs: Any, pages_dir: str) -> dict[str, int]:
    try:
        entries = fs.ls(pages_dir, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for e in entries:
        name = posixpath.basename(str(e["name"]).rstrip("/"))
        if _PAGE_NAME.match(name) and e.get("type", "file") == "file":
            out[name] = int(e.get("size") or 0)
    return out


# --- reading -----------------------------------------------------------------------------------


class NativePageLoader:
    """Loads one array's pages from a native manifest directory (picklable: URL + options).

    Every page's bytes are checked against the content id in its name before decoding, so a
    truncated, swapped or tampered page file is a :class:`ManifestError`, never wrong data.
    """

    def __init__(
        self,
        root_url: str,
        storage_options: Mapping[str, Any],
        path: str,
        grid_shape: tuple[int, ...],
        page_shape: tuple[int, ...],
        pages: list[str | None],
        source_index: dict[str, int],
    ) -> None:
        self.root_url = root_url
        self.storage_options = dict(storage_options)
        self.path = path
        self.grid_shape = grid_shape
        self.page_shape = page_shape
        self.pages = pages
        self.source_index = source_index
        self._fs_cache: tuple[Any, str] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fs_cache"] = None
        return state

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs_cache is None:
            self._fs_cache = _fs(self.root_url, self.storage_options)
        return self._fs_cache

    def __call__(self, page_coords: tuple[int, ...]) -> ChunkTable | None:
        pgrid = page_grid_shape(self.grid_shape, self.page_shape)
        flat = int(np.ravel_multi_index(page_coords, pgrid)) if pgrid else 0
        name = self.pages[flat]
        if name is None:
            return None
        fs, root = self._filesystem()
        where = f"native manifest {self.root_url!r}, array {self.path!r}, page {page_coords} ({name})"
        try:
            data = fs.cat_file(f"{root}/{PAGES_DIR}/{name}")
        except FileNotFoundError:
            raise ManifestError(f"{where}: the page file is missing") from None
        except OSError as exc:
            raise SourceUnavailableError(f"{where}: cannot read the page file: {exc}") from exc
        expected = cid_from_string(name)[4:]
        if hashlib.sha256(data).digest() != expected:
            raise ManifestError(f"{where}: the page file does not match its content id (modified or corrupt)")
        try:
            page = decode_page(data).globalize(self.source_index)
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from exc
        region = page_region(self.grid_shape, self.page_shape, page_coords)
        shape = tuple(s.stop - s.start for s in region)
        if page.grid_shape != shape:
            raise ManifestError(f"{where}: page of shape {page.grid_shape}, its region has shape {shape}")
        return page


def _bad(url: str, msg: str) -> ManifestError:
    return ManifestError(f"native manifest {url!r}: {msg}")


def _int_list(value: Any, url: str, field: str, *, positive: bool = False) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _bad(url, f"field {field!r} must be a list of ints, got {value!r:.80}")
    if any(v < (1 if positive else 0) for v in value):
        raise _bad(url, f"field {field!r} must be {'positive' if positive else 'non-negative'}, got {value!r:.80}")
    return tuple(value)


def _check_depth(obj: Any, where: str, limit: int) -> None:
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                raise ManifestError(f"{where}: JSON nested deeper than manifest.max_json_depth={limit}")
            values = item.values() if isinstance(item, dict) else item
            stack.extend((v, depth + 1) for v in values)


def _read_header(url: str, storage_options: Mapping[str, Any]) -> dict:
    fs, root = _fs(url, storage_options)
    limit = int(config.get("manifest.max_json_bytes"))
    path = f"{root}/{HEADER_NAME}"
    try:
        # One request for the usual small header; asking for limit+1 bytes at once would make
        # local reads allocate a buffer of the whole limit.
        data = fs.cat_file(path, start=0, end=_HEADER_PROBE)
        if len(data) == _HEADER_PROBE:
            size = int(fs.size(path))
            if size > limit:
                raise _bad(url, f"header of {size} bytes is larger than manifest.max_json_bytes={limit}")
            data += fs.cat_file(path, start=_HEADER_PROBE, end=size)
    except FileNotFoundError:
        raise ManifestError(f"{url!r} is not a native manifest (no {HEADER_NAME})") from None
    except OSError as exc:
        raise SourceUnavailableError(f"cannot read native manifest {url!r}: {exc}") from exc
    if len(data) > limit:
        raise _bad(url, f"header larger than manifest.max_json_bytes={limit} bytes")
    try:
        header = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _bad(url, f"invalid JSON header: {exc}") from exc
    if not isinstance(header, dict):
        raise _bad(url, "the header must be a JSON object")
    _check_depth(header, f"native manifest {url!r}", int(config.get("manifest.max_json_depth")) + 4)
    return header


def _parse_sources(raw: Any, url: str) -> list[Source]:
    if not isinstance(raw, list):
        raise _bad(url, "field 'sources' must be a list")
    out: list[Source] = []
    seen: set[str] = set()
    for i, s in enumerate(raw):
        if not isinstance(s, dict) or not isinstance(s.get("url"), str) or not s["url"]:
            raise _bad(url, f"sources[{i}] must be an object with a non-empty 'url'")
        if set(s) - {"url", "size", "mtime", "etag"}:
            raise _bad(url, f"sources[{i}] has unknown fields {sorted(set(s) - {'url', 'size', 'mtime', 'etag'})}")
        size, mtime, etag = s.get("size"), s.get("mtime"), s.get("etag")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise _bad(url, f"sources[{i}].size must be a non-negative int, got {size!r}")
        if mtime is not None and (not isinstance(mtime, (int, float)) or isinstance(mtime, bool)):
            raise _bad(url, f"sources[{i}].mtime must be a number, got {mtime!r}")
        if etag is not None and not isinstance(etag, str):
            raise _bad(url, f"sources[{i}].etag must be a string, got {etag!r}")
        if s["url"] in seen:
            raise _bad(url, f"sources[{i}]: duplicate URL {s['url']!r}")
        seen.add(s["url"])
        out.append(Source(s["url"], size, mtime, etag))
    return out


def read_native(url: str, **storage_options: Any) -> Manifest:
    """Open the native manifest at ``url``: reads the header only; pages load on first use.

    Raises
    ------
    ManifestError
        For a malformed or hostile header (unknown format or version, sizes over the limits,
        page names that are not content ids, inconsistent arrays), naming the field.
    """
    header = _read_header(url, storage_options)
    if header.get("format") != FORMAT_NAME:
        raise _bad(url, f"field 'format' must be {FORMAT_NAME!r}, got {header.get('format')!r:.80}")
    version = header.get("version")
    if version != NATIVE_VERSION:
        raise _bad(url, f"unsupported version {version!r:.40} (this chunkref reads version {NATIVE_VERSION})")
    known = {"format", "version", "hash_function", "sources", "nodes", "refused", "arrays"}
    if set(header) - known:
        raise _bad(url, f"unknown header fields {sorted(set(header) - known)}")
    hash_function = header.get("hash_function")
    if hash_function not in HASH_FUNCTIONS:
        raise _bad(url, f"field 'hash_function' must be one of {list(HASH_FUNCTIONS)}, got {hash_function!r:.80}")
    sources = _parse_sources(header.get("sources"), url)
    nodes, refused, arrays = header.get("nodes"), header.get("refused", {}), header.get("arrays")
    if not isinstance(nodes, dict) or not isinstance(arrays, dict) or not isinstance(refused, dict):
        raise _bad(url, "fields 'nodes', 'arrays' and 'refused' must be objects")

    manifest = Manifest(location=url)
    manifest.hash_function = hash_function
    manifest.set_sources(sources)
    source_index = {s.url: i for i, s in enumerate(sources)}
    max_chunks = int(config.get("manifest.max_table_chunks"))
    array_paths: set[str] = set()
    for raw_path in sorted(nodes):
        docs = nodes[raw_path]
        path = normalize_path(raw_path)
        if path != raw_path:
            raise _bad(url, f"node path {raw_path!r} is not normalized")
        if not isinstance(docs, dict) or not docs or set(docs) - DOCUMENT_NAMES:
            raise _bad(url, f"node {path!r}: documents must be an object with names in {sorted(DOCUMENT_NAMES)}")
        if not all(isinstance(d, dict) for d in docs.values()):
            raise _bad(url, f"node {path!r}: every document must be a JSON object")
        if node_kind(docs, path) == "array":
            array_paths.add(path)
        manifest.nodes[path] = docs
    if set(arrays) != array_paths:
        raise _bad(url, f"'arrays' {sorted(arrays)[:5]} do not match the array nodes {sorted(array_paths)[:5]}")
    for path in sorted(array_paths):
        entry = arrays[path]
        where = f"arrays[{path!r}]"
        if not isinstance(entry, dict) or set(entry) != {"grid_shape", "page_shape", "pages", "sources", "present"}:
            raise _bad(url, f"{where} must have exactly grid_shape, page_shape, pages, sources, present")
        grid = _int_list(entry["grid_shape"], url, f"{where}.grid_shape")
        page_shape = _int_list(entry["page_shape"], url, f"{where}.page_shape", positive=True)
        if len(grid) > 32 or len(page_shape) != len(grid):
            raise _bad(url, f"{where}: page_shape {page_shape} does not match grid_shape {grid}")
        nchunks = math.prod(grid)
        if nchunks > max_chunks:
            raise _bad(url, f"{where}: {nchunks} chunks exceed manifest.max_table_chunks={max_chunks}")
        if any(p > max(g, 1) for p, g in zip(page_shape, grid)):
            raise _bad(url, f"{where}: page_shape {page_shape} is larger than grid_shape {grid}")
        if math.prod(page_shape) > MAX_PAGE_CHUNKS:
            raise _bad(url, f"{where}: page_shape {page_shape} holds more than {MAX_PAGE_CHUNKS} chunks")
        try:
            expected = expected_grid_shape(manifest.nodes[path], path)
        except ManifestError as exc:
            raise _bad(url, str(exc)) from exc
        if expected != grid:
            raise _bad(url, f"{where}.grid_shape {grid} does not match the metadata's grid {expected}")
        pages = entry["pages"]
        npages = math.prod(page_grid_shape(grid, page_shape))
        if not isinstance(pages, list) or len(pages) != npages:
            raise _bad(url, f"{where}.pages must list {npages} page names")
        for name in pages:
            if name is not None and (not isinstance(name, str) or not _PAGE_NAME.match(name)):
                raise _bad(url, f"{where}.pages: {name!r:.80} is not a page content id")
        used = _int_list(entry["sources"], url, f"{where}.sources")
        if any(u >= len(sources) for u in used):
            raise _bad(url, f"{where}.sources refers to a source beyond the {len(sources)} listed")
        present = entry["present"]
        if not isinstance(present, int) or isinstance(present, bool) or not 0 <= present <= nchunks:
            raise _bad(url, f"{where}.present must be an int in [0, {nchunks}]")
        loader = NativePageLoader(url, storage_options, path, grid, page_shape, pages, source_index)
        manifest.tables[path] = PagedChunkTable(grid, page_shape, loader, sources_used=used, present_count=present)
    for k, v in refused.items():
        if not isinstance(v, str):
            raise _bad(url, f"refused[{k!r}] must be a string")
        manifest.refused[normalize_path(k)] = v
    return manifest

