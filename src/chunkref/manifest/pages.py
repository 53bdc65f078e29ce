"""Manifest pages: the canonical binary encoding of a grid-aligned region of a chunk table.

A *page* is the chunk table of one rectangular, grid-aligned region of an array's chunk grid
(default: ~65,536 chunks, :func:`default_page_shape`).  Pages are what the native manifest
format stores as files and what the repository stores as content-addressed objects, so the
encoding is canonical and self-contained:

* **Canonical**: the same references give the same bytes: fixed field order, fixed zstd level,
  no timestamps, inline bytes in grid order, and every field that does not matter for a chunk
  (the offset of an absent or inline chunk, the source of an absent one) written as 0.
* **Self-contained**: a page names its sources by URL in a *page-local* source list (in order of
  first use in the page), not by index into a manifest-wide table.  So a page's bytes depend only
  on its own references: adding an unrelated source to a manifest, or moving a page into another
  manifest, leaves it byte-identical (and its content id unchanged).  Size/mtime/ETag of sources
  are per-manifest facts and live in the manifest header, not in pages.

Byte layout (all integers little-endian) is documented in ``docs/architecture.md``, "Native
manifest format"; in short: a fixed header (magic ``CRPG``, version, ndim, flags, region shape,
content-id hash code and digest width, then compressed and raw size of six sections), followed by
six zstd-compressed sections: page-local URLs, source ids (int32), offset *gaps* (uint64,
byte-shuffled), lengths (uint64, byte-shuffled), content ids (presence bitmap + raw digests) and
inline bytes.  Offsets are stored as the gap to where the previous chunk ended, which is 0 for
the contiguous chunks of a file, so offsets cost almost nothing; byte-shuffled lengths compress to
the entropy of their low bytes (~2-3 bytes per reference).

:class:`PagedChunkTable` is a :class:`~chunkref.manifest.table.ChunkTable` whose pages load on
first use (the native format's lazy tables).
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from chunkref.errors import BoundsCheckError, ChunkDecodeError, InvalidArgumentError, ManifestError
from chunkref.manifest.cid import CIDV1, RAW, encode_varint
from chunkref.manifest.table import ABSENT, INLINE, MAX_BYTE_POSITION, NATIVE, WHOLE, ChunkRef, ChunkTable

__all__ = [
    "DEFAULT_PAGE_CHUNKS",
    "NATIVE",
    "PAGE_VERSION",
    "PageTable",
    "PagedChunkTable",
    "decode_page",
    "default_page_shape",
    "encode_page",
    "page_grid_shape",
    "page_of",
    "page_region",
    "table_from_pages",
]

MAGIC = b"CRPG"
PAGE_VERSION = 1
#: Default number of chunks per page.
DEFAULT_PAGE_CHUNKS = 65536
#: zstd level of every section (part of the canonical encoding: changing it changes page bytes).
ZSTD_LEVEL = 3
#: Hostile-input bounds: chunks per page, dimensions, and bytes of the URL list / inline section.
MAX_PAGE_CHUNKS = 2**24
MAX_NDIM = 32
MAX_SECTION_BYTES = 2**31

_SECTIONS = ("urls", "source", "offset", "length", "cid", "inline")
_HASH_CODES = {"sha2-256": 0x12, "blake3": 0x1E}
_DIGEST_WIDTH = 32
_FLAG_CID = 1


# --- page geometry ---------------------------------------------------------------------------


def _shape(values: Iterable[int], what: str, *, positive: bool = False) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{what} must be a sequence of ints, got {values!r}") from exc
    if any(v < (1 if positive else 0) for v in shape):
        raise InvalidArgumentError(f"{what} must be {'positive' if positive else 'non-negative'}, got {shape}")
    return shape


def default_page_shape(grid_shape: Sequence[int], target: int = DEFAULT_PAGE_CHUNKS) -> tuple[int, ...]:
    """A grid-aligned page shape of at most ~``target`` chunks.

    Trailing axes are taken whole while they fit, the next axis partially, leading axes one chunk
    thick: a page is then one contiguous run of flat (C-order) positions, so loading it is a slice
    copy and a region of neighbouring chunks usually falls in one page.
    """
    grid = _shape(grid_shape, "grid_shape")
    target = int(target)
    if target < 1:
        raise InvalidArgumentError(f"page target must be >= 1 chunk, got {target}")
    page = [1] * len(grid)
    size = 1
    for axis in range(len(grid) - 1, -1, -1):
        n = max(grid[axis], 1)
        if size * n <= target:
            page[axis] = n
            size *= n
        else:
            page[axis] = max(1, target // size)
            break
    return tuple(page)


def page_grid_shape(grid_shape: Sequence[int], page_shape: Sequence[int]) -> tuple[int, ...]:
    """Number of pages along each axis."""
    grid = _shape(grid_shape, "grid_shape")
    page = _shape(page_shape, "page_shape", positive=True)
    if len(grid) != len(page):
        raise InvalidArgumentError(f"page_shape {page} does not match the {len(grid)}-d grid {grid}")
    return tuple(-(-g // p) for g, p in zip(grid, page))


def page_region(grid_shape: Sequence[int], page_shape: Sequence[int], page_coords: Sequence[int]) -> tuple[slice, ...]:
    """The chunk-grid region (slices, clipped to the grid) covered by page ``page_coords``."""
    grid = _shape(grid_shape, "grid_shape")
    pgrid = page_grid_shape(grid, page_shape)
    coords = tuple(int(c) for c in page_coords)
    if len(coords) != len(grid) or any(not 0 <= c < n for c, n in zip(coords, pgrid)):
        raise InvalidArgumentError(f"page coords {coords} out of bounds for page grid {pgrid}")
    return tuple(slice(c * p, min((c + 1) * p, g)) for c, p, g in zip(coords, page_shape, grid))


def page_of(grid_shape: Sequence[int], page_shape: Sequence[int], flat: Any) -> np.ndarray:
    """Flat page index (C order over the page grid) of each flat chunk index in ``flat``."""
    flat = np.asarray(flat, dtype=np.int64).reshape(-1)
    grid = tuple(int(g) for g in grid_shape)
    if not grid:
        return np.zeros(flat.size, np.int64)
    coords = np.unravel_index(flat, grid)
    pcoords = tuple(c // int(p) for c, p in zip(coords, page_shape))
    return np.ravel_multi_index(pcoords, page_grid_shape(grid, page_shape)).astype(np.int64)


def _region_shape(grid_shape: tuple[int, ...], region: Sequence[slice]) -> tuple[int, ...]:
    if len(region) != len(grid_shape):
        raise InvalidArgumentError(f"region {region!r} does not match the {len(grid_shape)}-d grid {grid_shape}")
    shape = []
    for sl, n in zip(region, grid_shape):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise InvalidArgumentError(f"page regions are unit-step slices, got {sl!r}")
        start, stop, _ = sl.indices(n)
        if sl.start is not None and not 0 <= sl.start <= n or sl.stop is not None and not 0 <= sl.stop <= n:
            raise InvalidArgumentError(f"region {region!r} is outside the grid {grid_shape}")
        shape.append(max(0, stop - start))
    return tuple(shape)


def _region_flat(grid_shape: tuple[int, ...], region: Sequence[slice]) -> np.ndarray:
    """Flat grid positions of a region, in the region's own C order."""
    if not grid_shape:
        return np.zeros(1, np.int64)
    nd = len(grid_shape)
    rshape = _region_shape(grid_shape, region)
    out = np.zeros((1,) * nd, np.int64)
    stride = 1
    for axis in range(nd - 1, -1, -1):
        start, stop, _ = region[axis].indices(grid_shape[axis])
        shape = [1] * nd
        shape[axis] = max(0, stop - start)
        out = out + (np.arange(start, max(start, stop), dtype=np.int64) * stride).reshape(shape)
        stride *= grid_shape[axis]
    return np.broadcast_to(out, rshape).reshape(-1)


# --- shuffling ---------------------------------------------------------------------------------


def _shuffle(col: np.ndarray) -> bytes:
    """Byte planes of a little-endian uint64 column (plane 0 = lowest bytes of every value)."""
    a = np.ascontiguousarray(col, dtype="<u8")
    return a.view(np.uint8).reshape(-1, 8).T.tobytes()


def _unshuffle(raw: Any, n: int) -> np.ndarray:
    planes = np.frombuffer(raw, np.uint8).reshape(8, n)
    return np.ascontiguousarray(planes.T).view("<u8").reshape(n).astype(np.uint64, copy=False)


# --- encoding ----------------------------------------------------------------------------------


def _cid_prefix(code: int) -> bytes:
    return encode_varint(CIDV1) + encode_varint(RAW) + encode_varint(code) + encode_varint(_DIGEST_WIDTH)


def _compress(raw: bytes) -> bytes:
    if not raw:
        return b""
    import numcodecs.zstd

    return bytes(numcodecs.zstd.compress(raw, ZSTD_LEVEL))


def _source_urls(sources: Sequence[Any] | None) -> list[str] | None:
    if sources is None:
        return None
    return [s if isinstance(s, str) else s.url for s in sources]


def encode_page(
    table: ChunkTable,
    region: Sequence[slice],
    *,
    sources: Sequence[Any] | None = None,
    hash_function: str = "sha2-256",
) -> bytes:
    """Canonical bytes of the references of ``table`` inside ``region``.

    Parameters
    ----------
    table
        The array's chunk table (any :class:`ChunkTable`; a :class:`PageTable` uses its own
        ``urls`` when ``sources`` is omitted).
    region
        Unit-step slices of the chunk grid (e.g. :func:`page_region`).
    sources
        The URLs (or :class:`~chunkref.manifest.sources.Source` objects) that ``table.source``
        indexes into (``Manifest.sources``); needed when the region references any source.
    hash_function
        Multihash of the content ids (``"sha2-256"`` or ``"blake3"``): every recorded content
        id in the region must be a raw CIDv1 of this hash with a 32-byte digest.  Ignored when the
        region has no content ids (the bytes are then the same for either).

    Raises
    ------
    InvalidArgumentError
        For a bad region, a source index without a URL, content ids of another hash, a
        repository (``NATIVE``) chunk without a content id, or out-of-range values.
    """
    code = _HASH_CODES.get(hash_function)
    if code is None:
        raise InvalidArgumentError(f"unknown hash_function {hash_function!r}; known: {sorted(_HASH_CODES)}")
    grid = table.grid_shape
    rshape = _region_shape(grid, region)
    n = math.prod(rshape)
    if n > MAX_PAGE_CHUNKS:
        raise InvalidArgumentError(f"a page holds at most {MAX_PAGE_CHUNKS} chunks, region {rshape} has {n}")
    if len(rshape) > MAX_NDIM:
        raise InvalidArgumentError(f"a page has at most {MAX_NDIM} dimensions, got {len(rshape)}")
    urls = _source_urls(sources)
    if urls is None and isinstance(table, PageTable):
        urls = list(table.urls)
    flat = _region_flat(grid, region)
    src_g, off, length = table.take(flat)
    src_g = src_g.astype(np.int64)
    present = length != ABSENT
    inline = present & (src_g == INLINE)
    carry = present & ~inline  # chunks with a meaningful offset: ranges, whole sources, native
    bad = present & (src_g < NATIVE)
    if bad.any():
        raise InvalidArgumentError(f"invalid source index {int(src_g[bad][0])} in the chunk table")
    native = present & (src_g == NATIVE)
    ranged = present & (src_g >= 0)

    # Page-local source list, in order of first use in the page.
    local = np.zeros(n, np.int32)
    page_urls: list[str] = []
    if ranged.any():
        used = src_g[ranged]
        uniq, first = np.unique(used, return_index=True)
        order = np.argsort(first, kind="stable")
        if urls is None:
            raise InvalidArgumentError("encode_page needs sources= (the URLs chunk sources index into)")
        if int(uniq[-1]) >= len(urls):
            raise InvalidArgumentError(f"chunk table refers to source {int(uniq[-1])}, only {len(urls)} sources given")
        rank_to_local = np.empty(uniq.size, np.int32)
        rank_to_local[order] = np.arange(uniq.size, dtype=np.int32)
        local[ranged] = rank_to_local[np.searchsorted(uniq, used)]
        page_urls = [urls[int(uniq[i])] for i in order]
    local[inline] = INLINE
    local[native] = NATIVE

    # Lengths: ABSENT for absent chunks, the byte count of inline ones.
    sized = carry & (length != WHOLE)
    if (length[sized] > MAX_BYTE_POSITION).any() or (off[carry] > MAX_BYTE_POSITION).any():
        raise InvalidArgumentError("chunk offset or length out of range")
    inline_flat = flat[inline]
    inline_data = [table.inline.get(int(f)) for f in inline_flat.tolist()] if inline_flat.size else []
    for f, d in zip(inline_flat.tolist(), inline_data):
        if d is None:
            raise InvalidArgumentError(f"chunk {table.coords_of(f)} is marked inline but has no inline bytes")
    lengths = np.where(present, length, ABSENT).astype(np.uint64)
    if inline_flat.size:
        lengths[inline] = np.fromiter((len(d) for d in inline_data), np.uint64, len(inline_data))

    # Offsets as gaps to the end of the previous carrying chunk (0 for contiguous chunks).
    offs = np.where(carry, off, 0).astype(np.uint64)
    ends = offs + np.where(sized, lengths, 0).astype(np.uint64)
    idx = np.where(carry, np.arange(n, dtype=np.int64), -1)
    last = np.maximum.accumulate(idx) if n else idx
    prev_last = np.concatenate(([-1], last[:-1])) if n else last
    prev_end = np.where(prev_last >= 0, ends[np.maximum(prev_last, 0)], 0).astype(np.uint64)
    with np.errstate(over="ignore"):
        gaps = np.where(carry, offs - prev_end, 0).astype(np.uint64)

    # Content ids: presence bitmap + raw digests of the chunks that have one.
    flags = 0
    cid_raw = b""
    hash_code = width = 0
    cid_rows = None
    if table.cid is not None:
        rows = table.cid[flat]
        has = rows.any(axis=1) & present
        if has.any():
            cid_rows = rows[has]
            prefix = np.frombuffer(_cid_prefix(code), np.uint8)
            if rows.shape[1] != prefix.size + _DIGEST_WIDTH or not (cid_rows[:, : prefix.size] == prefix).all():
                raise InvalidArgumentError(
                    f"content ids in the page are not raw CIDv1 {hash_function} with {_DIGEST_WIDTH}-byte digests"
                )
            flags |= _FLAG_CID
            hash_code, width = code, _DIGEST_WIDTH
            cid_raw = np.packbits(has, bitorder="little").tobytes() + cid_rows[:, prefix.size :].tobytes()
        missing = native & ~has
    else:
        missing = native
    if missing.any():
        f = int(flat[missing][0])
        raise InvalidArgumentError(f"repository chunk {table.coords_of(f)} has no content id")

    url_raw = bytearray(struct.pack("<I", len(page_urls)))
    for u in page_urls:
        b = u.encode("utf-8")
        url_raw += struct.pack("<I", len(b)) + b
    raws = [
        bytes(url_raw),
        local.astype("<i4").tobytes(),
        _shuffle(gaps),
        _shuffle(lengths),
        cid_raw,
        b"".join(inline_data),
    ]
    comp = [_compress(r) for r in raws]
    head = bytearray(MAGIC)
    head += struct.pack("<BBBB", PAGE_VERSION, len(rshape), flags, 0)
    head += struct.pack(f"<{len(rshape)}Q", *rshape)
    head += struct.pack("<II", hash_code, width)
    for c, r in zip(comp, raws):
        head += struct.pack("<QQ", len(c), len(r))
    return bytes(head) + b"".join(comp)


# --- decoding ----------------------------------------------------------------------------------


class PageTable(ChunkTable):
    """A decoded page: a :class:`ChunkTable` of the page's region whose ``source`` column
    indexes the page-local source list :attr:`urls`."""

    __slots__ = ("urls",)

    def __init__(self, *args: Any, urls: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.urls: tuple[str, ...] = tuple(urls)

    def globalize(self, index_of: Callable[[str], int] | Mapping[str, int]) -> ChunkTable:
        """The same page with sources renumbered into a manifest's source table.

        ``index_of`` maps a URL to its manifest-wide index (e.g. ``manifest.add_source``, or a
        dict).  A URL the mapping does not know raises :class:`ManifestError`.
        """
        if isinstance(index_of, Mapping):
            mapping = index_of

            def index_of(url: str) -> int:
                try:
                    return int(mapping[url])
                except KeyError:
                    raise ManifestError(f"page refers to source {url!r}, which the manifest does not list") from None

        out = ChunkTable(
            self.grid_shape, self.source.copy(), self.offset, self.length, cid=self.cid
        )
        out.inline = self.inline
        if self.urls:
            remap = np.fromiter((index_of(u) for u in self.urls), np.int64, len(self.urls))
            ranged = self.present() & (self.source >= 0)
            out.source[ranged] = remap[self.source[ranged]].astype(np.int32)
        return out


def _bad(msg: str) -> ManifestError:
    return ManifestError(f"invalid manifest page: {msg}")


def _decompress(comp: memoryview, raw_size: int, name: str) -> memoryview:
    if raw_size == 0:
        if len(comp):
            raise _bad(f"section {name!r} has {len(comp)} bytes but is declared empty")
        return memoryview(b"")
    from chunkref.zarr.codecs.bounded import zstd_decompress

    try:
        out = zstd_decompress(comp, raw_size, exact=True, codec=f"page section {name!r}")
    except ChunkDecodeError as exc:
        raise _bad(str(exc)) from exc
    return memoryview(out).cast("B")


def decode_page(data: bytes) -> PageTable:
    """The chunk table of one page (``grid_shape`` = the page region's shape).

    The result's sources index its page-local :attr:`PageTable.urls`; use
    :meth:`PageTable.globalize` to renumber them into a manifest.

    Raises
    ------
    ManifestError
        For anything malformed: wrong magic or version, sizes that do not add up or exceed the
        bounds, inconsistent columns.
    """
    buf = memoryview(bytes(data) if not isinstance(data, (bytes, memoryview)) else data).cast("B")
    if len(buf) < 8 or bytes(buf[:4]) != MAGIC:
        raise _bad("not a chunkref manifest page (bad magic)")
    version, ndim, flags, reserved = struct.unpack_from("<BBBB", buf, 4)
    if version != PAGE_VERSION:
        raise _bad(f"unsupported page version {version} (this chunkref reads version {PAGE_VERSION})")
    if ndim > MAX_NDIM or flags & ~_FLAG_CID or reserved:
        raise _bad(f"bad header fields (ndim {ndim}, flags {flags:#x}, reserved {reserved})")
    pos = 8
    need = pos + 8 * ndim + 8 + 16 * len(_SECTIONS)
    if len(buf) < need:
        raise _bad(f"truncated header ({len(buf)} bytes)")
    shape = struct.unpack_from(f"<{ndim}Q", buf, pos)
    pos += 8 * ndim
    if any(s > MAX_PAGE_CHUNKS for s in shape) or math.prod(shape) > MAX_PAGE_CHUNKS:
        raise _bad(f"region shape {shape} exceeds {MAX_PAGE_CHUNKS} chunks")
    n = math.prod(shape)
    hash_code, width = struct.unpack_from("<II", buf, pos)
    pos += 8
    sizes = [struct.unpack_from("<QQ", buf, pos + 16 * i) for i in range(len(_SECTIONS))]
    pos += 16 * len(_SECTIONS)
    total = pos + sum(c for c, _ in sizes)
    if total != len(buf):
        raise _bad(f"sections declare {total} bytes, the page has {len(buf)}")
    has_cid = bool(flags & _FLAG_CID)
    if has_cid and (hash_code not in _HASH_CODES.values() or width != _DIGEST_WIDTH):
        raise _bad(f"unsupported content-id hash 0x{hash_code:x} / digest width {width}")
    if not has_cid and (hash_code or width):
        raise _bad("content-id fields set without content ids")
    expected = {
        "source": 4 * n,
        "offset": 8 * n,
        "length": 8 * n,
    }
    sections: dict[str, memoryview] = {}
    for name, (csize, rsize) in zip(_SECTIONS, sizes):
        if name in expected and rsize != expected[name]:
            raise _bad(f"section {name!r} declares {rsize} bytes, {n} chunks need {expected[name]}")
        if rsize > MAX_SECTION_BYTES:
            raise _bad(f"section {name!r} declares {rsize} bytes (limit {MAX_SECTION_BYTES})")
        if name == "cid" and rsize > (n + 7) // 8 + n * _DIGEST_WIDTH:
            raise _bad(f"content-id section of {rsize} bytes is larger than {n} chunks allow")
        comp = buf[pos : pos + csize]
        pos += csize
        sections[name] = _decompress(comp, rsize, name)

    urls = _parse_urls(sections["urls"])
    local = np.frombuffer(sections["source"], "<i4").astype(np.int32)
    lengths = _unshuffle(sections["length"], n) if n else np.zeros(0, np.uint64)
    gaps = _unshuffle(sections["offset"], n) if n else np.zeros(0, np.uint64)
    present = lengths != ABSENT
    if (local[~present] != 0).any():
        raise _bad("absent chunks must have source 0")
    badv = local[present & ((local < NATIVE) | (local >= len(urls)))]
    if badv.size:
        raise _bad(f"source id {int(badv[0])} is not in the page's {len(urls)} sources")
    inline = present & (local == INLINE)
    carry = present & ~inline
    sized = carry & (lengths != WHOLE)
    if (lengths[sized] > MAX_BYTE_POSITION).any() or (lengths[inline] > MAX_BYTE_POSITION).any():
        raise _bad("chunk length out of range")
    if (gaps[~carry] != 0).any():
        raise _bad("absent and inline chunks must have offset gap 0")
    # offset[i] = end of the previous carrying chunk + gap[i] (modulo 2**64, as encoded).
    step = np.where(sized, lengths, 0).astype(np.uint64)
    with np.errstate(over="ignore"):
        v = np.cumsum(gaps + np.concatenate((np.zeros(1, np.uint64), step[:-1])) if n else gaps, dtype=np.uint64)
    offsets = np.where(carry, v, 0).astype(np.uint64)
    if (offsets[carry] > MAX_BYTE_POSITION).any() or (offsets[sized] + lengths[sized] > MAX_BYTE_POSITION).any():
        raise _bad("chunk offset out of range")
    if urls and not (present & (local >= 0)).any():
        raise _bad("page lists sources no chunk uses")

    # Inline bytes, in page order.
    blob = sections["inline"]
    inline_idx = np.nonzero(inline)[0]
    inline_len = lengths[inline_idx].astype(np.int64)
    if int(inline_len.sum()) != len(blob):
        raise _bad(f"inline section has {len(blob)} bytes, inline chunks need {int(inline_len.sum())}")
    inline_map: dict[int, bytes] = {}
    if inline_idx.size:
        bounds = np.concatenate(([0], np.cumsum(inline_len))).tolist()
        raw = bytes(blob)
        for k, f in enumerate(inline_idx.tolist()):
            inline_map[f] = raw[bounds[k] : bounds[k + 1]]

    cid = None
    if has_cid:
        cbuf = sections["cid"]
        nbits = (n + 7) // 8
        if len(cbuf) < nbits:
            raise _bad("content-id section shorter than its bitmap")
        has = np.unpackbits(np.frombuffer(cbuf[:nbits], np.uint8), count=n, bitorder="little").astype(bool)
        digests = np.frombuffer(cbuf[nbits:], np.uint8)
        if digests.size != int(has.sum()) * _DIGEST_WIDTH or not has.any():
            raise _bad("content-id digests do not match the presence bitmap")
        if (has & ~present).any():
            raise _bad("absent chunks cannot have content ids")
        prefix = np.frombuffer(_cid_prefix(hash_code), np.uint8)
        cid = np.zeros((n, prefix.size + _DIGEST_WIDTH), np.uint8)
        cid[has, : prefix.size] = prefix
        cid[has, prefix.size :] = digests.reshape(-1, _DIGEST_WIDTH)
        missing = present & (local == NATIVE) & ~has
    else:
        missing = present & (local == NATIVE)
    if missing.any():
        raise _bad("repository chunk without a content id")

    table = PageTable(shape, local, offsets, lengths, cid=cid, urls=urls)
    table.inline = inline_map
    return table


def _parse_urls(buf: memoryview) -> list[str]:
    if not len(buf):
        return []
    if len(buf) < 4:
        raise _bad("truncated source list")
    (count,) = struct.unpack_from("<I", buf, 0)
    pos = 4
    urls: list[str] = []
    for _ in range(count):
        if pos + 4 > len(buf):
            raise _bad("truncated source list")
        (k,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        if pos + k > len(buf) or k == 0:
            raise _bad("bad source URL length")
        try:
            urls.append(bytes(buf[pos : pos + k]).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _bad(f"source URL is not UTF-8: {exc}") from exc
        pos += k
    if pos != len(buf):
        raise _bad("trailing bytes after the source list")
    if len(set(urls)) != len(urls):
        raise _bad("duplicate source URLs")
    return urls


# --- assembling ------------------------------------------------------------------------------


def _place(
    target: ChunkTable, region: tuple[slice, ...], page: ChunkTable, index_of: Any, cols: tuple[np.ndarray, ...]
) -> None:
    """Write ``page`` (renumbered through ``index_of`` when it is a PageTable) into ``cols``."""
    if isinstance(page, PageTable) and page.urls:
        if index_of is None:
            raise InvalidArgumentError("pages with their own source lists need index_of= to join a manifest")
        page = page.globalize(index_of)
    rshape = _region_shape(target.grid_shape, region)
    if page.grid_shape != rshape:
        raise ManifestError(f"page of shape {page.grid_shape} does not fit region {rshape}")
    source, offset, length, cid = cols
    grid = target.grid_shape
    view = (lambda col: col.reshape(grid)[region]) if grid else (lambda col: col.reshape(()))
    view(source)[...] = page.source.reshape(rshape)
    view(offset)[...] = page.offset.reshape(rshape)
    view(length)[...] = page.length.reshape(rshape)
    if page.inline:
        flat = _region_flat(grid, region)
        for f, d in page.inline.items():
            target_inline = target.inline if not isinstance(target, PagedChunkTable) else target._slot_inline
            target_inline[int(flat[f])] = d
    if page.cid is not None and page.cid.any():
        if cid is None:
            raise ManifestError("internal: content-id column missing")
        if cid.shape[1] != page.cid.shape[1]:
            raise ManifestError(f"pages disagree on content-id width ({cid.shape[1]} vs {page.cid.shape[1]})")
        cview = cid.reshape(*grid, cid.shape[1])[region] if grid else cid.reshape(cid.shape[1])
        cview[...] = page.cid.reshape(*rshape, cid.shape[1])


def table_from_pages(
    grid_shape: Sequence[int],
    page_shape: Sequence[int],
    pages: Mapping[tuple[int, ...], ChunkTable],
    *,
    index_of: Callable[[str], int] | Mapping[str, int] | None = None,
) -> ChunkTable:
    """Assemble a full chunk table from pages (page coords -> page table; missing = absent).

    ``index_of`` renumbers the page-local sources of :class:`PageTable` pages (from
    :func:`decode_page`) into a manifest's source table (e.g. ``manifest.add_source``).
    """
    grid = _shape(grid_shape, "grid_shape")
    table = ChunkTable.empty(grid)
    width = None
    for page in pages.values():
        if page.cid is not None and page.cid.any():
            width = page.cid.shape[1]
            break
    if width is not None:
        table.cid = np.zeros((table.nchunks, width), np.uint8)
    for coords, page in pages.items():
        region = page_region(grid, page_shape, coords)
        _place(table, region, page, index_of, (table.source, table.offset, table.length, table.cid))
    return table


# --- lazy tables -----------------------------------------------------------------------------

PageLoader = Callable[[tuple[int, ...]], "ChunkTable | None"]


class PagedChunkTable(ChunkTable):
    """A :class:`ChunkTable` whose pages are loaded on first use.

    :meth:`lookup`, :meth:`lookup_flat`, :meth:`cid_of` and :meth:`take` load only the pages they
    touch; reading a column attribute (``source``, ``offset``, ``length``, ``cid``, ``inline``)
    or any whole-table operation (``present()``, equality, writes) loads every page first, after
    which the table is an ordinary in-memory table.

    Parameters
    ----------
    grid_shape, page_shape
        The array's chunk grid and its page shape.
    loader
        ``loader(page_coords)`` returns the page's table with manifest-wide source indices
        (grid shape = the page region's shape), or None for a page without chunks.  It must
        pickle (it travels with the table to dask workers).
    sources_used
        Manifest source indices the table's chunks refer to, when known without loading.
    present_count
        Number of present chunks, when known without loading.
    """

    __slots__ = (
        "page_shape",
        "page_grid",
        "npages",
        "_sources_used",
        "_present_count",
        "_loader",
        "_loaded",
        "_nloaded",
        "_lock",
        "_allocated",
    )

    def __init__(
        self,
        grid_shape: Sequence[int],
        page_shape: Sequence[int],
        loader: PageLoader,
        *,
        sources_used: Sequence[int] | None = None,
        present_count: int | None = None,
    ) -> None:
        grid = _shape(grid_shape, "grid_shape")
        self.grid_shape = grid
        self.nchunks = math.prod(grid)
        self.page_shape = _shape(page_shape, "page_shape", positive=True)
        self.page_grid = page_grid_shape(grid, self.page_shape)
        self.npages = math.prod(self.page_grid)
        self._sources_used = None if sources_used is None else sorted(int(s) for s in sources_used)
        self._present_count = None if present_count is None else int(present_count)
        self._loader = loader
        self._loaded = np.zeros(self.npages, bool)
        self._nloaded = 0
        self._lock = threading.RLock()
        self._allocated = False
        ChunkTable.inline.__set__(self, {})
        ChunkTable.cid.__set__(self, None)

    # Column attributes: whole-table access loads every page.
    def _col(name: str) -> property:  # noqa: N805 - a property factory used in the class body
        slot = getattr(ChunkTable, name)

        def get(self: PagedChunkTable) -> Any:
            self.load_all()
            return slot.__get__(self, ChunkTable)

        def set_(self: PagedChunkTable, value: Any) -> None:
            self.load_all()
            slot.__set__(self, value)

        return property(get, set_, doc=f"The ``{name}`` column (loads every page).")

    source = _col("source")
    offset = _col("offset")
    length = _col("length")
    inline = _col("inline")
    cid = _col("cid")
    del _col

    @property
    def _slot_inline(self) -> dict[int, bytes]:
        return ChunkTable.inline.__get__(self, ChunkTable)

    @property
    def sources_used(self) -> list[int] | None:
        """Source indices the chunks use, known without loading pages (None once fully loaded:
        the table may have been modified, ask the columns)."""
        return None if self.fully_loaded and self._allocated else self._sources_used

    @property
    def present_count(self) -> int | None:
        """Number of present chunks, known without loading pages (None once fully loaded)."""
        return None if self.fully_loaded and self._allocated else self._present_count

    @property
    def pages_loaded(self) -> int:
        """How many pages have been loaded so far."""
        return self._nloaded

    @property
    def fully_loaded(self) -> bool:
        return self._nloaded == self.npages

    def _allocate(self) -> None:
        n = self.nchunks
        # np.zeros maps untouched memory lazily: pages never loaded cost no resident memory.
        ChunkTable.source.__set__(self, np.zeros(n, np.int32))
        ChunkTable.offset.__set__(self, np.zeros(n, np.uint64))
        ChunkTable.length.__set__(self, np.zeros(n, np.uint64))
        self._allocated = True

    def load_pages(self, page_indices: Iterable[int]) -> None:
        """Load the given flat page indices (those not loaded yet)."""
        todo = [int(p) for p in page_indices if not self._loaded[int(p)]]
        if not todo:
            return
        with self._lock:
            if not self._allocated:
                self._allocate()
            for p in sorted(set(todo)):
                if self._loaded[p]:
                    continue
                coords = tuple(int(c) for c in np.unravel_index(p, self.page_grid)) if self.page_grid else ()
                region = page_region(self.grid_shape, self.page_shape, coords)
                page = self._loader(coords)
                source = ChunkTable.source.__get__(self, ChunkTable)
                offset = ChunkTable.offset.__get__(self, ChunkTable)
                length = ChunkTable.length.__get__(self, ChunkTable)
                if page is None:
                    view = length.reshape(self.grid_shape)[region] if self.grid_shape else length.reshape(())
                    view[...] = ABSENT
                else:
                    cid = ChunkTable.cid.__get__(self, ChunkTable)
                    if cid is None and page.cid is not None and page.cid.any():
                        cid = np.zeros((self.nchunks, page.cid.shape[1]), np.uint8)
                        ChunkTable.cid.__set__(self, cid)
                    _place(self, region, page, None, (source, offset, length, cid))
                self._loaded[p] = True
                self._nloaded += 1

    def load_all(self) -> None:
        """Load every page (after this the table behaves as an in-memory table)."""
        if self._nloaded == self.npages and (self._allocated or self.npages == 0):
            if not self._allocated:
                self._allocate()
            return
        if self.npages == 0 and not self._allocated:
            self._allocate()
            return
        self.load_pages(np.nonzero(~self._loaded)[0].tolist())

    def _ensure(self, flat: np.ndarray) -> None:
        if self._nloaded == self.npages:
            return
        pages = np.unique(page_of(self.grid_shape, self.page_shape, flat))
        self.load_pages(pages.tolist())

    # Point reads load only the touched pages.
    def lookup_flat(self, flat: int) -> ChunkRef | None:
        flat = self._check_flat(int(flat))
        self._ensure(np.array([flat]))
        length = ChunkTable.length.__get__(self, ChunkTable)[flat]
        if length == ABSENT:
            return None
        source = int(ChunkTable.source.__get__(self, ChunkTable)[flat])
        if source == INLINE:
            data = self._slot_inline[flat]
            return ChunkRef(INLINE, 0, len(data), data)
        offset = int(ChunkTable.offset.__get__(self, ChunkTable)[flat])
        return ChunkRef(source, offset, None if length == WHOLE else int(length))

    def cid_of(self, flat: int) -> bytes | None:
        flat = self._check_flat(int(flat))
        self._ensure(np.array([flat]))
        cid = ChunkTable.cid.__get__(self, ChunkTable)
        if cid is None:
            return None
        row = cid[flat]
        return None if not row.any() else row.tobytes()

    def take(self, flat: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= self.nchunks):
            raise BoundsCheckError(f"flat chunk indices out of bounds for grid {self.grid_shape}")
        if flat.size:
            self._ensure(flat)
        elif not self._allocated:
            return np.zeros(0, np.int32), np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        return (
            ChunkTable.source.__get__(self, ChunkTable)[flat],
            ChunkTable.offset.__get__(self, ChunkTable)[flat],
            ChunkTable.length.__get__(self, ChunkTable)[flat],
        )

    def take_cid(self, flat: Any) -> np.ndarray | None:
        """Content-id rows at ``flat`` (None when the loaded pages have none)."""
        flat = np.asarray(flat, dtype=np.int64).reshape(-1)
        if flat.size:
            self._ensure(flat)
        cid = ChunkTable.cid.__get__(self, ChunkTable)
        return None if cid is None else cid[flat]

    def __reduce__(self) -> tuple:
        if self._nloaded and self.fully_loaded:
            # Loaded (and possibly modified): ship the data.
            return (_plain_table, (ChunkTable.copy(self),))
        return (
            _paged_table,
            (self.grid_shape, self.page_shape, self._loader, self._sources_used, self._present_count),
        )

    def __repr__(self) -> str:
        return (
            f"PagedChunkTable(grid_shape={self.grid_shape}, page_shape={self.page_shape}, "
            f"pages_loaded={self._nloaded}/{self.npages})"
        )


def _plain_table(table: ChunkTable) -> ChunkTable:
    return table


def _paged_table(
    grid_shape: tuple[int, ...],
    page_shape: tuple[int, ...],
    loader: PageLoader,
    sources_used: list[int] | None,
    present_count: int | None,
) -> PagedChunkTable:
    return PagedChunkTable(grid_shape, page_shape, loader, sources_used=sources_used, present_count=present_count)
