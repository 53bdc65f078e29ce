"""Decompression bounded by the size the caller expects (the decompression-bomb guard).

Chunk bytes are untrusted: a 1 KB zstd frame can claim, and a 1 KB gzip stream can inflate to,
a gigabyte.  numcodecs' own ``decode`` allocates whatever the stream says (zlib, bz2 and lzma
even ignore ``out=``), so every decompressor here takes ``max_size``, the most bytes the
caller can accept, and ``exact``, whether ``max_size`` is the one correct size.  Each format
is bounded the cheapest way it allows:

* deflate (gzip, zlib): libdeflate (the ``deflate`` package, ~2x zlib's speed) into a buffer of
  the expected size, never larger than deflate's maximal ratio allows for the input; a
  streaming ``zlib.decompressobj`` with ``max_length`` as the fallback;
* zstd, blosc, lz4: the header states the decoded size; it is checked before anything is
  allocated, then the library decodes into a buffer of that size (zstd frames without a
  content size are bounded by walking their block headers);
* bz2, lzma: streaming decompressors with ``max_length``.

Every function returns a bytes-like object (``bytes``, ``bytearray`` or a ``uint8`` array),
raises :class:`~chunkref.errors.ChunkDecodeError` naming the codec on corrupt or oversized
input, and never returns more than ``max_size`` bytes (exactly ``max_size`` when ``exact``).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from typing import Any

import deflate
import numcodecs.blosc
import numcodecs.lz4
import numcodecs.zstd
import numpy as np

from chunkref.errors import ChunkDecodeError
from chunkref.zarr.codecs.base import byte_view
from chunkref.zarr.codecs.zstd_native import address, zstd_library

__all__ = [
    "DEFLATE_MAX_RATIO",
    "blosc_decompress",
    "bz2_decompress",
    "check_size",
    "gzip_decompress",
    "lz4_decompress",
    "lzma_decompress",
    "zlib_decompress",
    "zstd_decompress",
    "zstd_frames_size",
]

BytesLike = Any  # bytes, bytearray, memoryview or a contiguous numpy array

# Deflate cannot expand its input by more than 1032:1 (a 258-byte match per 2 bits); the slack
# covers headers and tiny inputs.  A buffer of min(expected, ratio * input) therefore always
# suffices for valid data and caps what a hostile stream can make us allocate.
DEFLATE_MAX_RATIO = 1032
_DEFLATE_SLACK = 1024


def check_size(out: BytesLike, max_size: int, exact: bool, codec: str) -> BytesLike:
    """Raise unless ``out`` has ``max_size`` bytes (``exact``) or at most ``max_size``."""
    n = memoryview(out).nbytes if not isinstance(out, (bytes, bytearray)) else len(out)
    if exact and n != max_size:
        raise ChunkDecodeError(f"{codec}: decoded {n} bytes, expected exactly {max_size}")
    if n > max_size:
        raise ChunkDecodeError(f"{codec}: decoded {n} bytes, more than the expected at most {max_size}")
    return out


def _nbytes(data: BytesLike) -> int:
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    return memoryview(data).nbytes


# --- deflate (gzip, zlib) --------------------------------------------------------------------


def _inflate_stream(data: BytesLike, wbits: int, max_size: int, codec: str) -> bytes:
    """Streaming inflate with a hard output bound; gzip members are decoded one after another."""
    out = bytearray()
    view = byte_view(data) if not isinstance(data, bytes) else data
    remaining = view
    while True:
        d = zlib.decompressobj(wbits)
        try:
            # max_length + 1 lets us tell "exactly max_size" from "more than max_size".
            piece = d.decompress(remaining, max_size - len(out) + 1)
        except zlib.error as exc:
            raise ChunkDecodeError(f"{codec}: corrupt stream ({exc})") from exc
        out += piece
        if len(out) > max_size:
            raise ChunkDecodeError(f"{codec}: stream inflates past the expected {max_size} bytes")
        if not d.eof:
            raise ChunkDecodeError(f"{codec}: truncated stream")
        rest = d.unused_data
        # Only gzip may hold several members; trailing zero padding is tolerated (gzip(1) does).
        if wbits < 16 or not rest or not rest.strip(b"\x00"):
            return bytes(out)
        remaining = rest


def _libdeflate(
    func: Any, data: BytesLike, max_size: int, exact: bool, wbits: int, codec: str
) -> BytesLike:
    size = _nbytes(data)
    alloc = min(max_size, size * DEFLATE_MAX_RATIO + _DEFLATE_SLACK)
    if exact and alloc < max_size:
        raise ChunkDecodeError(
            f"{codec}: {size} compressed bytes cannot inflate to the expected {max_size} bytes"
        )
    try:
        out = func(data, alloc)
    except deflate.DeflateError:
        # Corrupt, or (only possible when not exact) larger than the capped buffer: the
        # streaming decoder tells which, bounded by max_size, and names the problem.
        return _inflate_stream(data, wbits, max_size, codec)
    if exact and len(out) != max_size:
        # libdeflate decodes one gzip member only; let the streaming decoder handle
        # multi-member streams (and report a genuinely wrong size).
        return check_size(_inflate_stream(data, wbits, max_size, codec), max_size, True, codec)
    return out


def gzip_decompress(data: BytesLike, max_size: int, exact: bool = False, codec: str = "gzip") -> BytesLike:
    """Decode a gzip (RFC 1952) stream of at most (``exact``: exactly) ``max_size`` bytes."""
    out = _libdeflate(deflate.gzip_decompress, data, max_size, exact, 31, codec)
    if not exact and isinstance(out, bytearray):
        # libdeflate stops after the first member; the ISIZE field closing the stream belongs
        # to the last member, so a mismatch reveals further members: decode them all.
        tail = bytes(byte_view(data)[-4:])
        if len(tail) == 4 and struct.unpack("<I", tail)[0] != len(out) & 0xFFFFFFFF:
            return _inflate_stream(data, 31, max_size, codec)
    return out


def zlib_decompress(data: BytesLike, max_size: int, exact: bool = False, codec: str = "zlib") -> BytesLike:
    """Decode a zlib (RFC 1950) stream of at most (``exact``: exactly) ``max_size`` bytes."""
    return _libdeflate(deflate.zlib_decompress, data, max_size, exact, 15, codec)


# --- zstd ------------------------------------------------------------------------------------

_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_BLOCK_MAX = 128 * 1024


def _zstd_frame_header(buf: memoryview, pos: int, codec: str) -> tuple[int | None, int, bool]:
    """Parse the frame header at ``pos``: (content size or None, header end, has checksum)."""
    n = len(buf)
    if pos + 5 > n:
        raise ChunkDecodeError(f"{codec}: truncated frame header at byte {pos}")
    fhd = buf[pos + 4]
    if fhd & 0x08:
        raise ChunkDecodeError(f"{codec}: reserved bit set in frame header at byte {pos}")
    fcs_flag = fhd >> 6
    single_segment = (fhd >> 5) & 1
    checksum = bool((fhd >> 2) & 1)
    did_size = (0, 1, 2, 4)[fhd & 3]
    fcs_size = (single_segment, 2, 4, 8)[fcs_flag]
    p = pos + 5 + (0 if single_segment else 1) + did_size
    if p + fcs_size > n:
        raise ChunkDecodeError(f"{codec}: truncated frame header at byte {pos}")
    if fcs_size == 0:
        return None, p, checksum
    raw = bytes(buf[p : p + fcs_size])
    value = int.from_bytes(raw, "little")
    if fcs_size == 2:
        value += 256
    return value, p + fcs_size, checksum


def zstd_frames_size(data: BytesLike, codec: str = "zstd") -> tuple[int, bool]:
    """Walk every frame of ``data``: (total decoded size, whether it is exact).

    Frames that state their content size contribute it exactly; frames that do not contribute an
    upper bound from their block headers (raw and RLE blocks state their size; a compressed
    block decodes to at most 128 KiB).  Skippable frames contribute nothing.
    """
    buf = byte_view(data)
    n = len(buf)
    pos = 0
    total = 0
    exact = True
    if n == 0:
        raise ChunkDecodeError(f"{codec}: empty input")
    while pos < n:
        if pos + 4 > n:
            raise ChunkDecodeError(f"{codec}: trailing garbage at byte {pos}")
        magic = int.from_bytes(bytes(buf[pos : pos + 4]), "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            if pos + 8 > n:
                raise ChunkDecodeError(f"{codec}: truncated skippable frame at byte {pos}")
            pos += 8 + int.from_bytes(bytes(buf[pos + 4 : pos + 8]), "little")
            continue
        if magic != _ZSTD_MAGIC:
            raise ChunkDecodeError(f"{codec}: not a zstd frame at byte {pos} (magic {magic:#010x})")
        fcs, pos, checksum = _zstd_frame_header(buf, pos, codec)
        bound = 0
        while True:
            if pos + 3 > n:
                raise ChunkDecodeError(f"{codec}: truncated block header at byte {pos}")
            bh = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
            pos += 3
            if btype == 0:  # raw
                bound += bsize
                pos += bsize
            elif btype == 1:  # RLE: one byte repeated bsize times
                bound += bsize
                pos += 1
            elif btype == 2:  # compressed
                bound += _ZSTD_BLOCK_MAX
                pos += bsize
            else:
                raise ChunkDecodeError(f"{codec}: reserved block type at byte {pos - 3}")
            if pos > n:
                raise ChunkDecodeError(f"{codec}: truncated block at byte {pos - bsize}")
            if last:
                break
        if checksum:
            pos += 4
            if pos > n:
                raise ChunkDecodeError(f"{codec}: truncated frame checksum")
        if fcs is None:
            exact = False
            total += bound
        else:
            total += fcs
    return total, exact


def _zstd_first_content_size(buf: memoryview) -> int | None:
    """Content size of a leading zstd frame, or None (absent, skippable or not zstd)."""
    if len(buf) < 5 or int.from_bytes(bytes(buf[:4]), "little") != _ZSTD_MAGIC:
        return None
    try:
        return _zstd_frame_header(buf, 0, "zstd")[0]
    except ChunkDecodeError:
        return None


def _zstd_into(data: BytesLike, size: int, codec: str) -> np.ndarray:
    dest = np.empty(size, dtype=np.uint8)
    if size == 0:
        # numcodecs reads a declared size of 0 as an error; an empty chunk is valid.
        total, known = zstd_frames_size(data, codec)
        if not known or total:
            raise ChunkDecodeError(f"{codec}: frames do not decode to the expected 0 bytes")
        return dest
    lib = zstd_library()
    if lib is not None:
        # A per-thread context: numcodecs makes (and frees) one per call, ~9 µs.
        src = np.frombuffer(data, dtype=np.uint8)
        n = lib.decompress(lib.contexts().dctx, address(dest), size, address(src) if src.size else None, src.size)
        if lib.lib.ZSTD_isError(n) or n != size:
            raise ChunkDecodeError(f"{codec}: {lib.error_name(n)} (expected {size} bytes)")
        return dest
    try:
        numcodecs.zstd.decompress(data, dest)
    except (RuntimeError, ValueError) as exc:
        raise ChunkDecodeError(f"{codec}: {exc}") from exc
    return dest


def zstd_decompress(data: BytesLike, max_size: int, exact: bool = False, codec: str = "zstd") -> BytesLike:
    """Decode zstd frames to at most (``exact``: exactly) ``max_size`` bytes."""
    buf = byte_view(data)
    if exact:
        # Hot path: one frame stating exactly the size we expect.  (Further frames would make
        # the total exceed the buffer, which the library refuses.)
        if _zstd_first_content_size(buf) == max_size:
            return _zstd_into(buf, max_size, codec)
        total, known = zstd_frames_size(buf, codec)
        if known and total != max_size:
            raise ChunkDecodeError(f"{codec}: frames declare {total} decoded bytes, expected {max_size}")
        if not known and total < max_size:
            raise ChunkDecodeError(f"{codec}: frames hold at most {total} bytes, expected {max_size}")
        # Unknown content size: the library requires the buffer to be filled exactly.
        return _zstd_into(buf, max_size, codec)
    total, known = zstd_frames_size(buf, codec)
    if known:
        if total > max_size:
            raise ChunkDecodeError(f"{codec}: frames declare {total} decoded bytes, more than {max_size}")
        return _zstd_into(buf, total, codec)
    if total > max_size + _ZSTD_BLOCK_MAX:
        raise ChunkDecodeError(f"{codec}: frames may decode to {total} bytes, more than {max_size}")
    # The walk bounds what the streaming decoder can produce (within one block of max_size).
    try:
        out = numcodecs.zstd.decompress(buf)
    except (RuntimeError, ValueError) as exc:
        raise ChunkDecodeError(f"{codec}: {exc}") from exc
    return check_size(out, max_size, False, codec)


# --- blosc -----------------------------------------------------------------------------------

BLOSC_HEADER = 16


def blosc_sizes(data: BytesLike, codec: str = "blosc") -> tuple[int, int, int]:
    """(nbytes, cbytes, typesize) from a blosc header, validated against the buffer."""
    buf = byte_view(data)
    if len(buf) < BLOSC_HEADER:
        raise ChunkDecodeError(f"{codec}: {len(buf)} bytes is shorter than a blosc header")
    _version, _versionlz, _flags, typesize, nbytes, _blocksize, cbytes = struct.unpack_from("<BBBBIII", buf, 0)
    if cbytes > len(buf) or cbytes < BLOSC_HEADER:
        raise ChunkDecodeError(f"{codec}: header states {cbytes} compressed bytes, buffer holds {len(buf)}")
    return nbytes, cbytes, typesize


def blosc_decompress(data: BytesLike, max_size: int, exact: bool = False, codec: str = "blosc") -> BytesLike:
    """Decode a blosc buffer of at most (``exact``: exactly) ``max_size`` bytes."""
    nbytes, _cbytes, _typesize = blosc_sizes(data, codec)
    if exact and nbytes != max_size:
        raise ChunkDecodeError(f"{codec}: header states {nbytes} decoded bytes, expected {max_size}")
    if nbytes > max_size:
        raise ChunkDecodeError(f"{codec}: header states {nbytes} decoded bytes, more than {max_size}")
    dest = np.empty(nbytes, dtype=np.uint8)
    if nbytes == 0:  # c-blosc reports an empty buffer as an error
        return dest
    try:
        numcodecs.blosc.decompress(data, dest)
    except (RuntimeError, ValueError) as exc:
        raise ChunkDecodeError(f"{codec}: {exc}") from exc
    return dest


# --- lz4 (numcodecs framing: u32le decoded size, then one lz4 block) ---------------------------


def lz4_decompress(data: BytesLike, max_size: int, exact: bool = False, codec: str = "lz4") -> BytesLike:
    """Decode numcodecs' LZ4 format (size-prefixed block) of at most ``max_size`` bytes."""
    buf = byte_view(data)
    if len(buf) < 4:
        raise ChunkDecodeError(f"{codec}: {len(buf)} bytes is shorter than the size header")
    nbytes = struct.unpack_from("<I", buf, 0)[0]
    if exact and nbytes != max_size:
        raise ChunkDecodeError(f"{codec}: header states {nbytes} decoded bytes, expected {max_size}")
    if nbytes > max_size:
        raise ChunkDecodeError(f"{codec}: header states {nbytes} decoded bytes, more than {max_size}")
    dest = np.empty(nbytes, dtype=np.uint8)
    try:
        numcodecs.lz4.decompress(buf, dest)
    except (RuntimeError, ValueError) as exc:
        raise ChunkDecodeError(f"{codec}: {exc}") from exc
    return dest


# --- bz2, lzma (streaming with max_length) ----------------------------------------------------


def _stream(make: Any, errors: tuple[type[BaseException], ...], data: BytesLike, max_size: int, codec: str) -> bytes:
    out = bytearray()
    remaining: Any = bytes(byte_view(data))
    while True:
        d = make()
        try:
            out += d.decompress(remaining, max_size - len(out) + 1)
        except errors as exc:
            raise ChunkDecodeError(f"{codec}: corrupt stream ({exc})") from exc
        if len(out) > max_size:
            raise ChunkDecodeError(f"{codec}: stream inflates past the expected {max_size} bytes")
        if not d.eof:
            raise ChunkDecodeError(f"{codec}: truncated stream")
        remaining = d.unused_data
        # Concatenated streams are valid for both formats (bz2 -c a b, xz a b).
        if not remaining:
            return bytes(out)


def bz2_decompress(data: BytesLike, max_size: int, exact: bool = False, codec: str = "bz2") -> BytesLike:
    """Decode bz2 streams of at most (``exact``: exactly) ``max_size`` bytes."""
    out = _stream(bz2.BZ2Decompressor, (OSError, ValueError), data, max_size, codec)
    return check_size(out, max_size, exact, codec)


def lzma_decompress(
    data: BytesLike,
    max_size: int,
    exact: bool = False,
    codec: str = "lzma",
    format: int = lzma.FORMAT_AUTO,
    filters: Any = None,
) -> BytesLike:
    """Decode lzma/xz streams (numcodecs ``LZMA`` semantics) of at most ``max_size`` bytes."""

    def make() -> Any:
        if format == lzma.FORMAT_RAW:
            return lzma.LZMADecompressor(format=format, filters=filters)
        return lzma.LZMADecompressor(format=format)

    out = _stream(make, (lzma.LZMAError, ValueError), data, max_size, codec)
    return check_size(out, max_size, exact, codec)
