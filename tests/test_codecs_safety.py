"""Decompression bombs and corrupt input: typed errors, fast, without allocating the claim."""

from __future__ import annotations

import bz2
import gzip
import lzma
import resource
import struct
import time
import zlib

import numcodecs
import numpy as np
import pytest

from chunkref.config import config
from chunkref.errors import ChunkDecodeError, CodecError
from chunkref.zarr.codecs import ChunkSpec, CodecPipeline, bounded

GIB = 1 << 30


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _zstd_rle_frame(nblocks: int, blocksize: int = 1 << 17, fcs: int | None = None) -> bytes:
    """A hand-built zstd frame of RLE blocks (4 bytes per 128 KiB), optionally stating a size."""
    if fcs is None:
        out = bytearray(b"\x28\xb5\x2f\xfd\x00\x58")  # no content size, 2 MiB window
    else:
        out = bytearray(b"\x28\xb5\x2f\xfd\xe0" + struct.pack("<Q", fcs))  # single segment, 8-byte size
    for i in range(nblocks):
        header = (1 if i == nblocks - 1 else 0) | (1 << 1) | (blocksize << 3)
        out += header.to_bytes(3, "little") + b"\x07"
    return bytes(out)


def _assert_fast_and_small(fn) -> None:
    before = _rss_mib()
    t = time.perf_counter()
    with pytest.raises(ChunkDecodeError):
        fn()
    assert time.perf_counter() - t < 2.0
    assert _rss_mib() - before < 64  # never the claimed gigabyte


# --- bombs through the v3 pipeline (expected chunk: 64 KiB) -------------------------------------

SPEC = ChunkSpec((128, 128), np.dtype("<u4"), 0)  # 64 KiB


def _pipe(compressor: dict) -> CodecPipeline:
    return CodecPipeline.from_v3([{"name": "bytes", "configuration": {"endian": "little"}}, compressor], "<u4", (128, 128))


def test_zstd_frame_claiming_1gib_is_refused():
    blob = _zstd_rle_frame(1, blocksize=1, fcs=GIB)[:64]
    assert len(blob) < 1024
    _assert_fast_and_small(lambda: _pipe({"name": "zstd"}).decode(blob, SPEC))


def test_zstd_frame_without_size_inflating_to_1gib_is_refused():
    blob = _zstd_rle_frame(8192)  # 1 GiB of 0x07 in 32 KiB
    assert len(blob) < 40_000
    _assert_fast_and_small(lambda: _pipe({"name": "zstd"}).decode(blob, SPEC))
    # also when only an upper bound is known (crc32c after zstd makes the bound inexact)
    _assert_fast_and_small(lambda: bounded.zstd_decompress(blob, 1 << 20, exact=False))


def test_zstd_second_frame_cannot_smuggle_a_bomb():
    ok = numcodecs.Zstd(1).encode(np.zeros(SPEC.shape, SPEC.dtype).tobytes())
    _assert_fast_and_small(lambda: _pipe({"name": "zstd"}).decode(ok + _zstd_rle_frame(8192), SPEC))


def test_gzip_stream_inflating_to_1gib_is_refused():
    # 1 GiB of zeros gzips to ~1 MB; a 1 KB prefix of it inflates far past the 64 KiB expected.
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    blob = comp.compress(b"\0" * (64 << 20)) + comp.flush()
    _assert_fast_and_small(lambda: _pipe({"name": "gzip", "configuration": {"level": 1}}).decode(blob, SPEC))
    _assert_fast_and_small(lambda: _pipe({"name": "gzip", "configuration": {"level": 1}}).decode(blob[:1024], SPEC))
    _assert_fast_and_small(lambda: bounded.gzip_decompress(blob, 1 << 20, exact=False))


def test_blosc_header_claiming_1gib_is_refused():
    good = numcodecs.Blosc(cname="lz4").encode(np.zeros(1024, "u1"))
    lying = bytearray(good)
    struct.pack_into("<I", lying, 4, GIB)
    _assert_fast_and_small(lambda: _pipe({"name": "blosc", "configuration": {"typesize": 4}}).decode(bytes(lying), SPEC))
    _assert_fast_and_small(lambda: bounded.blosc_decompress(bytes(lying), 1 << 20))


def test_v2_zlib_lz4_bz2_lzma_bombs_are_refused():
    zeros = b"\0" * (16 << 20)
    blobs = {
        "zlib": zlib.compress(zeros, 9),
        "bz2": bz2.compress(zeros),
        "lzma": lzma.compress(zeros),
        "lz4": numcodecs.LZ4().encode(zeros),
    }
    for cid, blob in blobs.items():
        pipe = CodecPipeline.from_v2({"id": cid}, None, "<u4", "C")
        _assert_fast_and_small(lambda p=pipe, b=blob: p.decode(b, SPEC))
    lying_lz4 = struct.pack("<I", 0xFFFFFFF0) + b"\x00" * 32
    _assert_fast_and_small(lambda: CodecPipeline.from_v2({"id": "lz4"}, None, "<u4", "C").decode(lying_lz4, SPEC))


def test_variable_size_chunks_are_capped_by_the_setting():
    # vlen-utf8 + gzip: the decoded size is unknown; codec.max_decoded_bytes bounds it.
    pipe = CodecPipeline.from_v3([{"name": "vlen-utf8"}, {"name": "gzip", "configuration": {"level": 1}}], object, (4,))
    blob = gzip.compress(b"\0" * (8 << 20))
    with config.set({"codec.max_decoded_bytes": 1 << 20}):
        _assert_fast_and_small(lambda: pipe.decode(blob, ChunkSpec((4,), np.dtype(object), "")))


def test_cap_refuses_huge_declared_chunks_before_decoding():
    spec = ChunkSpec((1 << 20, 1 << 10), np.dtype("<f8"), 0)  # 8 GiB declared by metadata
    pipe = CodecPipeline.from_v3([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd"}], "<f8", spec.shape)
    with pytest.raises(ChunkDecodeError, match="codec.max_decoded_bytes"):
        pipe.decode(b"\x28\xb5\x2f\xfd" + b"\0" * 16, spec)


# --- corrupt input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compressor",
    [
        {"name": "zstd"},
        {"name": "gzip", "configuration": {"level": 5}},
        {"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "typesize": 4}},
        {"name": "crc32c"},
    ],
)
def test_corrupt_truncated_and_garbage_chunks_raise_chunk_decode_error(compressor):
    pipe = _pipe(compressor)
    data = np.arange(SPEC.size, dtype="<u4").reshape(SPEC.shape)
    good = pipe.encode(data, SPEC)
    np.testing.assert_array_equal(pipe.decode(good, SPEC), data)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    flipped[-1] ^= 0xFF
    for bad in (good[: len(good) // 2], good[:3], b"", b"garbage" * 10, bytes(flipped)):
        with pytest.raises(ChunkDecodeError):
            pipe.decode(bad, SPEC)


def test_crc32c_mismatch_names_the_codec():
    pipe = CodecPipeline.from_v3([{"name": "bytes", "configuration": {"endian": "little"}}, "crc32c"], "<u2", (4,))
    spec = ChunkSpec((4,), np.dtype("<u2"), 0)
    good = pipe.encode(np.arange(4, dtype="<u2"), spec)
    bad = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(ChunkDecodeError, match="crc32c"):
        pipe.decode(bad, spec)


def test_wrong_size_uncompressed_chunk():
    pipe = CodecPipeline.from_v3([{"name": "bytes", "configuration": {"endian": "little"}}], "<u2", (4,))
    spec = ChunkSpec((4,), np.dtype("<u2"), 0)
    for bad in (b"\0" * 7, b"\0" * 6, b"\0" * 10):
        with pytest.raises(ChunkDecodeError, match="expected 8"):
            pipe.decode(bad, spec)


def test_short_compressed_chunk_is_an_error_not_garbage():
    # A valid zstd frame of the wrong size: never padded with uninitialised memory.
    pipe = _pipe({"name": "zstd"})
    short = numcodecs.Zstd(1).encode(b"\1" * 100)
    with pytest.raises(ChunkDecodeError):
        pipe.decode(short, SPEC)
    no_size = _zstd_rle_frame(1, blocksize=100)
    with pytest.raises(ChunkDecodeError):
        pipe.decode(no_size, SPEC)
    gz = gzip.compress(b"\1" * 100)
    with pytest.raises(ChunkDecodeError):
        _pipe({"name": "gzip"}).decode(gz, SPEC)


@pytest.mark.parametrize("codec", ["vlen-utf8", "vlen-bytes"])
def test_vlen_hostile_headers(codec):
    pipe = CodecPipeline.from_v3([{"name": codec}], object, (2,))
    spec = ChunkSpec((2,), np.dtype(object), None)
    cases = [
        b"",  # no count
        struct.pack("<I", 3) + b"\0" * 32,  # wrong count
        struct.pack("<I", 0xFFFFFFFF),  # absurd count: refused before allocating
        struct.pack("<II", 2, 1) + b"a" + struct.pack("<I", 1000) + b"bb",  # length past the end
        struct.pack("<II", 2, 1),  # truncated
    ]
    for bad in cases:
        with pytest.raises(ChunkDecodeError):
            pipe.decode(bad, spec)
    if codec == "vlen-utf8":
        with pytest.raises(ChunkDecodeError):
            pipe.decode(struct.pack("<II", 2, 1) + b"\xff" + struct.pack("<I", 0), spec)


def test_pickle_is_refused_unless_enabled():
    with pytest.raises(CodecError, match="codec.allow_pickle"):
        CodecPipeline.from_v2(None, [{"id": "pickle"}], "|O", "C")
    with config.set({"codec.allow_pickle": True}):
        pipe = CodecPipeline.from_v2(None, [{"id": "pickle"}], "|O", "C", (2,))
        spec = ChunkSpec((2,), np.dtype(object), None)
        data = np.array([{"a": 1}, [2]], dtype=object)
        out = pipe.decode(pipe.encode(data, spec), spec)
        assert list(out) == [{"a": 1}, [2]]


def test_gzip_multi_member_stream_decodes_all_members():
    a = np.arange(SPEC.size, dtype="<u4").reshape(SPEC.shape)
    raw = a.tobytes()
    blob = gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])
    np.testing.assert_array_equal(_pipe({"name": "gzip"}).decode(blob, SPEC), a)
    out = bounded.gzip_decompress(blob, 1 << 20, exact=False)
    assert bytes(out) == raw
