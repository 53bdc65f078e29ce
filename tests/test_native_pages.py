"""Manifest pages: canonical encoding, geometry, assembling, lazy paged tables."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from chunkref.errors import InvalidArgumentError, ManifestError
from chunkref.manifest.cid import compute_cid
from chunkref.manifest.pages import (
    NATIVE,
    PagedChunkTable,
    PageTable,
    decode_page,
    default_page_shape,
    encode_page,
    page_grid_shape,
    page_of,
    page_region,
    table_from_pages,
)
from chunkref.manifest.table import ABSENT, INLINE, WHOLE, ChunkTable


def make_table(grid=(5, 7), nsrc=3, with_cid=True):
    t = ChunkTable.empty(grid)
    n = t.nchunks
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 1000, n).astype(np.uint64)
    src = (np.arange(n) * nsrc // n).astype(np.int64)
    offsets = np.zeros(n, np.uint64)
    for s in range(nsrc):
        m = src == s
        offsets[m] = 512 + np.concatenate(([0], np.cumsum(lengths[m])[:-1]))
    t.set_refs(np.arange(n), src, offsets, lengths)
    flat_absent = [3, n - 1]
    for f in flat_absent:
        t.set_absent(t.coords_of(f))
    t.set_inline(t.coords_of(5), b"inline!")
    t.set_inline(t.coords_of(6), b"")
    t.set_ref(t.coords_of(7), 1, 0, int(WHOLE))
    if with_cid:
        t.set_cid(t.coords_of(0), compute_cid(b"zero"))
        t.set_cid(t.coords_of(5), compute_cid(b"inline!"))
    return t


SOURCES = ["s3://b/a.h5", "s3://b/b.h5", "https://host/c.nc"]


def test_default_page_shape():
    assert default_page_shape((10_000_000,)) == (65536,)
    assert default_page_shape((1000, 100, 100)) == (6, 100, 100)
    assert default_page_shape((3, 4), 100) == (3, 4)
    assert default_page_shape((10, 10**6), 65536) == (1, 65536)
    assert default_page_shape(()) == ()
    assert default_page_shape((0, 5)) == (1, 5)
    assert page_grid_shape((10, 7), (3, 7)) == (4, 1)
    assert page_region((10, 7), (3, 7), (3, 0)) == (slice(9, 10), slice(0, 7))
    assert page_of((10, 7), (3, 7), [0, 20, 69]).tolist() == [0, 0, 3]
    with pytest.raises(InvalidArgumentError):
        page_region((10, 7), (3, 7), (4, 0))
    with pytest.raises(InvalidArgumentError):
        page_grid_shape((10, 7), (0, 7))


@pytest.mark.parametrize("page_shape", [(2, 4), (1, 7), (5, 7), (3, 3)])
def test_round_trip_pages(page_shape):
    t = make_table()
    grid = t.grid_shape
    pages = {}
    for pc in np.ndindex(page_grid_shape(grid, page_shape)):
        data = encode_page(t, page_region(grid, page_shape, pc), sources=SOURCES)
        page = decode_page(data)
        assert isinstance(page, PageTable)
        # canonical: re-encoding the decoded page gives the same bytes
        assert encode_page(page, (slice(None),) * len(grid)) == data
        pages[pc] = page
    back = table_from_pages(grid, page_shape, pages, index_of={u: i for i, u in enumerate(SOURCES)})
    assert back == t
    assert back.inline == t.inline
    assert back.lookup_flat(7).length is None


def test_page_bytes_independent_of_unrelated_sources():
    t = make_table(with_cid=False)
    region = (slice(0, 1), slice(0, 7))
    a = encode_page(t, region, sources=SOURCES)
    # Renumber sources: put two unrelated ones first; same page bytes.
    t2 = t.copy()
    m = t2.present() & (t2.source >= 0)
    t2.source[m] += 2
    b = encode_page(t2, region, sources=["file:///x", "file:///y", *SOURCES])
    assert a == b
    # absent/inline garbage in ignored columns does not matter
    t3 = t.copy()
    t3.offset[3] = 99
    t3.source[3] = 2
    assert encode_page(t3, region, sources=SOURCES) == a
    # the hash function is irrelevant without content ids
    assert encode_page(t, region, sources=SOURCES, hash_function="blake3") == a


def test_page_content_ids_and_native():
    t = ChunkTable.empty((4,))
    t.source[:] = NATIVE
    t.length[:] = [10, 20, 30, 40]
    for i in range(4):
        t.set_cid((i,), compute_cid(bytes([i])))
    data = encode_page(t, (slice(0, 4),))
    page = decode_page(data)
    assert page == t and page.urls == ()
    assert page.cid_of(2) == compute_cid(bytes([2]))
    t.set_absent((1,))
    t.source[1] = 0
    t.length[1] = 5  # not absent any more: a native chunk without cid -> refused
    t.source[1] = NATIVE
    with pytest.raises(InvalidArgumentError, match="content id"):
        encode_page(t, (slice(0, 4),))
    # CIDs of another hash than declared are refused
    u = ChunkTable.empty((2,))
    u.set_ref((0,), 0, 0, 3)
    u.set_cid((0,), compute_cid(b"abc", "blake3"))
    with pytest.raises(InvalidArgumentError, match="sha2-256"):
        encode_page(u, (slice(0, 2),), sources=["a"])
    page = decode_page(encode_page(u, (slice(0, 2),), sources=["a"], hash_function="blake3"))
    assert page.cid_of(0) == compute_cid(b"abc", "blake3")


def test_offsets_compress():
    n = 65536
    t = ChunkTable.empty((n,))
    lengths = np.random.default_rng(1).integers(50_000, 150_000, n).astype(np.uint64)
    offsets = 4096 + np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.uint64)
    t.set_refs(np.arange(n), 0, offsets, lengths)
    data = encode_page(t, (slice(0, n),), sources=["s3://bucket/file.nc"])
    assert len(data) / n < 3.5
    assert decode_page(data).globalize(lambda u: 0) == t


def test_scalar_and_empty():
    t = ChunkTable.empty(())
    t.set_ref((), 0, 8, 16)
    page = decode_page(encode_page(t, (), sources=["a"]))
    assert page.grid_shape == () and page.lookup(()).offset == 8
    e = ChunkTable.empty((0, 3))
    assert decode_page(encode_page(e, (slice(0, 0), slice(0, 3)))).nchunks == 0


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:4] + bytes([9]) + b[5:],
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b[:8] + (2**40).to_bytes(8, "little") + b[16:],
        lambda b: b[:6] + bytes([4]) + b[7:],
        lambda b: b[:20],
    ],
)
def test_hostile_pages(mutate):
    data = encode_page(make_table(), (slice(0, 2), slice(0, 7)), sources=SOURCES)
    with pytest.raises(ManifestError):
        decode_page(mutate(data))


def test_flipped_section_byte_is_an_error_or_different_table():
    t = make_table()
    data = bytearray(encode_page(t, (slice(0, 5), slice(0, 7)), sources=SOURCES))
    data[-5] ^= 0xFF
    try:
        page = decode_page(bytes(data))
    except ManifestError:
        return
    assert page.globalize({u: i for i, u in enumerate(SOURCES)}) != t


def test_paged_table_loads_lazily():
    t = make_table((9, 7))
    page_shape = (2, 7)
    blobs = {
        pc: encode_page(t, page_region(t.grid_shape, page_shape, pc), sources=SOURCES)
        for pc in np.ndindex(page_grid_shape(t.grid_shape, page_shape))
    }
    index = {u: i for i, u in enumerate(SOURCES)}
    loader = Loader(blobs, index)
    lazy = PagedChunkTable(t.grid_shape, page_shape, loader, sources_used=[0, 1, 2])
    assert lazy.pages_loaded == 0
    assert lazy.lookup((5, 3)) == t.lookup((5, 3))
    assert lazy.pages_loaded == 1 and loader.calls == [(2, 0)]
    assert lazy.cid_of(0) == t.cid_of(0) and lazy.pages_loaded == 2
    src, off, ln = lazy.take([0, 1, 14])
    assert src.tolist() == t.source[[0, 1, 14]].tolist() and lazy.pages_loaded == 3
    # pickles without data while partially loaded
    clone = pickle.loads(pickle.dumps(lazy))
    assert isinstance(clone, PagedChunkTable) and clone.pages_loaded == 0
    assert clone.lookup_flat(8) == t.lookup_flat(8)
    # whole-table access loads the rest
    assert lazy == t
    assert lazy.fully_loaded and lazy.inline == t.inline
    lazy.set_absent((0, 0))
    again = pickle.loads(pickle.dumps(lazy))
    assert type(again) is ChunkTable and again.lookup((0, 0)) is None


def test_paged_table_missing_pages_are_absent():
    lazy = PagedChunkTable((4, 4), (2, 4), lambda pc: None)
    assert lazy.lookup((3, 3)) is None
    assert not lazy.present().any() and (lazy.length == ABSENT).all()
    assert lazy.source.dtype == np.int32 and INLINE == -1


class Loader:
    def __init__(self, blobs, index):
        self.blobs, self.index, self.calls = blobs, index, []

    def __call__(self, coords):
        self.calls.append(coords)
        return decode_page(self.blobs[coords]).globalize(self.index)
