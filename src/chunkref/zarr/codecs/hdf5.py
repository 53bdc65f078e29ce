"""HDF5-specific codecs: the filters no Python package decodes, as numcodecs codecs.

Each codec reproduces the decoding side of an HDF5 filter byte for byte, so a chunk's stored bytes
can be read without libhdf5:

============================  =====================================================================
codec id                      HDF5 filter
============================  =====================================================================
``chunkref.hdf5.scaleoffset``  H5Z scale-offset (id 6): integers (minimum bits) and floats
                              (decimal D-scaling), with the dataset fill value
``chunkref.hdf5.nbit``         H5Z n-bit (id 5): atomic, array and compound types (bit fields
                              repacked; integers of reduced precision sign-extended as h5py does)
``chunkref.hdf5.bitshuffle``   bitshuffle plugin (id 32008): its HDF5 framing, with LZ4 or zstd
                              per block or uncompressed
``chunkref.hdf5.lzf``          LZF (id 32000) with the decoded size from the filter parameters
                              (``imagecodecs_lzf`` without a header has to guess the output size
                              and fails on chunks that compress well)
============================  =====================================================================

All of them are bytes -> bytes: the output is the chunk in the dataset's own byte order, exactly
as HDF5 hands it to its type conversion.  They are registered with numcodecs when this module is
imported (entry points for other readers: see ``ENTRY_POINTS``).

Decoding is vectorised with numpy: the packed bit stream of a chunk is unpacked once
(``np.unpackbits``) and every field is gathered with fancy indexing, never a per-element loop.
Output sizes come from the filter parameters, never from the stored bytes, so a hostile chunk
cannot make a decoder allocate more than the chunk it claims to be.

These codecs only decode: HDF5 writes the data, chunkref references it.  ``encode`` raises
:class:`~chunkref.errors.CodecError` saying so.
"""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
from numcodecs.abc import Codec

from chunkref.errors import ChunkDecodeError, CodecError

__all__ = ["ENTRY_POINTS", "HDF5LZF", "HDF5Bitshuffle", "HDF5NBit", "HDF5ScaleOffset"]

#: ``[project.entry-points."numcodecs.codecs"]`` lines for pyproject (codec id -> object).
ENTRY_POINTS = {
    "chunkref.hdf5.scaleoffset": "chunkref.zarr.codecs.hdf5:HDF5ScaleOffset",
    "chunkref.hdf5.nbit": "chunkref.zarr.codecs.hdf5:HDF5NBit",
    "chunkref.hdf5.bitshuffle": "chunkref.zarr.codecs.hdf5:HDF5Bitshuffle",
    "chunkref.hdf5.lzf": "chunkref.zarr.codecs.hdf5:HDF5LZF",
}

# A chunk this large (decoded) is not something HDF5 can write (chunks are < 4 GiB).
_MAX_CHUNK_BYTES = 1 << 32


def _as_bytes(buf: Any) -> memoryview:
    """A flat byte view of ``buf`` (bytes, bytearray, memoryview or numpy array)."""
    if isinstance(buf, np.ndarray):
        return memoryview(np.ascontiguousarray(buf).reshape(-1).view(np.uint8))
    return memoryview(buf).cast("B")


def _finish(result: bytes | np.ndarray, out: Any) -> Any:
    """Return ``result``, or copy it into ``out`` (numcodecs ``decode(buf, out)`` contract)."""
    if out is None:
        return result
    target = _as_bytes(out)
    data = _as_bytes(result)
    if target.nbytes != data.nbytes:
        raise ChunkDecodeError(f"decoded {data.nbytes} bytes, the output buffer holds {target.nbytes}")
    target[:] = data
    return out


def _unpack_fields(stream: np.ndarray, nbits: int, start: int, count: int, width: int) -> np.ndarray:
    """Read ``count`` unsigned ``nbits``-bit fields, MSB first, from bit ``start`` of ``stream``.

    ``stream`` is a uint8 array of 0/1 bits.  Fields are ``width``-byte unsigned integers
    (``width`` in 1, 2, 4, 8): the bits are left-padded to the width, repacked with
    ``np.packbits`` and viewed big-endian, which assembles every field at once.
    """
    bits = stream[start : start + count * nbits].reshape(count, nbits)
    padded = np.zeros((count, width * 8), np.uint8)
    padded[:, width * 8 - nbits :] = bits
    return np.packbits(padded, axis=1).view(f">u{width}").reshape(count).astype(f"=u{width}")


def _bitstream(data: memoryview, needed_bits: int, what: str) -> np.ndarray:
    """The bits of ``data`` MSB first, checking that at least ``needed_bits`` are present."""
    if data.nbytes * 8 < needed_bits:
        raise ChunkDecodeError(
            f"{what}: chunk has {data.nbytes} bytes, the packed data needs {(needed_bits + 7) // 8}"
        )
    nbytes = (needed_bits + 7) // 8
    return np.unpackbits(np.frombuffer(data[:nbytes], np.uint8))


# --- scale-offset ------------------------------------------------------------------------------

_SO_PARM_SCALETYPE = 0
_SO_PARM_SCALEFACTOR = 1
_SO_PARM_NELMTS = 2
_SO_PARM_CLASS = 3
_SO_PARM_SIZE = 4
_SO_PARM_SIGN = 5
_SO_PARM_ORDER = 6
_SO_PARM_FILAVAIL = 7
_SO_PARM_FILVAL = 8
_SO_HEADER = 21  # 4 bytes minbits, 1 byte sizeof(minval), 16 bytes reserved for minval
_SO_FLOAT_DSCALE = 0
_SO_FLOAT_ESCALE = 1
_SO_INT = 2


class HDF5ScaleOffset(Codec):
    """Decoder of HDF5's scale-offset filter (filter id 6).

    Parameters
    ----------
    cd_values
        The filter's 20 client-data values as stored in the dataset's filter pipeline message
        (scale type, scale factor, elements per chunk, class, size, sign, byte order, whether a
        fill value is defined, the fill value's bytes).

    Notes
    -----
    Stored chunk: 21 header bytes (``minbits`` little-endian uint32, the byte count of
    ``minval``, ``minval`` little-endian), then every element as ``minbits`` bits MSB first.
    Integers decode to ``value + minval`` (``2**minbits - 1`` marks the fill value when one is
    defined); floats (D-scaling) to ``value / 10**D + min`` computed in the element's own
    precision, as the C filter does.  ``minbits`` equal to the full width means the raw values
    follow the header.  The filter writes in the writing machine's order and converts to the
    dataset's byte order; the writer is assumed little-endian (HDF5 records no flag for it).
    """

    codec_id = "chunkref.hdf5.scaleoffset"

    def __init__(self, cd_values: list[int] | tuple[int, ...]) -> None:
        cd = [int(v) for v in cd_values]
        if len(cd) < _SO_PARM_FILVAL:
            raise CodecError(f"{self.codec_id}: needs at least 8 cd_values, got {len(cd)}")
        self.cd_values = tuple(cd)
        self.scale_type = cd[_SO_PARM_SCALETYPE]
        # Client data are unsigned ints; the scale factor is a C int stored in one.
        sf = cd[_SO_PARM_SCALEFACTOR]
        self.scale_factor = sf - (1 << 32) if sf >= 1 << 31 else sf
        self.nelmts = cd[_SO_PARM_NELMTS]
        self.is_float = cd[_SO_PARM_CLASS] == 1
        if cd[_SO_PARM_CLASS] not in (0, 1):
            raise CodecError(f"{self.codec_id}: datatype class {cd[_SO_PARM_CLASS]} is not integer (0) or float (1)")
        self.size = cd[_SO_PARM_SIZE]
        self.signed = cd[_SO_PARM_SIGN] == 1
        self.big_endian = cd[_SO_PARM_ORDER] == 1
        self.fill_defined = cd[_SO_PARM_FILAVAIL] == 1
        if self.is_float:
            if self.size not in (4, 8):
                raise CodecError(f"{self.codec_id}: float size {self.size} (only 4 and 8 are defined)")
            if self.scale_type == _SO_FLOAT_ESCALE:
                raise CodecError(f"{self.codec_id}: E-scaling is not defined by HDF5 (it refuses to write it)")
            if self.scale_type != _SO_FLOAT_DSCALE:
                raise CodecError(f"{self.codec_id}: invalid scale type {self.scale_type} for a float dataset")
        else:
            if self.size not in (1, 2, 4, 8):
                raise CodecError(f"{self.codec_id}: integer size {self.size} is not 1, 2, 4 or 8")
            if self.scale_type != _SO_INT:
                raise CodecError(f"{self.codec_id}: invalid scale type {self.scale_type} for an integer dataset")
            if self.scale_factor > self.size * 8:
                raise CodecError(f"{self.codec_id}: minimum bits {self.scale_factor} exceed the type's width")
        if self.nelmts * self.size > _MAX_CHUNK_BYTES:
            raise CodecError(f"{self.codec_id}: {self.nelmts} elements of {self.size} bytes is not a valid chunk")
        fill_words = np.asarray(cd[_SO_PARM_FILVAL:], dtype=np.uint64).astype("<u4")
        self._fill_bytes = (fill_words.tobytes() + bytes(8))[: self.size]

    def get_config(self) -> dict:
        return {"id": self.codec_id, "cd_values": list(self.cd_values)}

    @classmethod
    def from_config(cls, config: dict) -> HDF5ScaleOffset:
        return cls(config["cd_values"])

    def __repr__(self) -> str:
        return f"HDF5ScaleOffset(cd_values={list(self.cd_values)})"

    def encode(self, buf: Any) -> bytes:
        raise CodecError(f"{self.codec_id} decodes data HDF5 wrote; it does not encode")

    def decode(self, buf: Any, out: Any = None) -> Any:
        data = _as_bytes(buf)
        size, n = self.size, self.nelmts
        out_dtype = np.dtype(("f" if self.is_float else "i" if self.signed else "u") + str(size)).newbyteorder(
            ">" if self.big_endian else "<"
        )
        # Integer data stored at full precision: the filter passes the bytes through untouched.
        if not self.is_float and self.scale_factor == size * 8:
            if data.nbytes != n * size:
                raise ChunkDecodeError(f"{self.codec_id}: chunk has {data.nbytes} bytes, expected {n * size}")
            return _finish(bytes(data), out)
        if data.nbytes < _SO_HEADER:
            raise ChunkDecodeError(f"{self.codec_id}: chunk of {data.nbytes} bytes is shorter than its header")
        header = bytes(data[:_SO_HEADER])
        minbits = int.from_bytes(header[0:4], "little")
        minval_size = min(header[4], 8)
        minval = int.from_bytes(header[5 : 5 + minval_size], "little")
        if minbits > size * 8:
            raise ChunkDecodeError(f"{self.codec_id}: minbits {minbits} exceeds the {size * 8}-bit type")
        payload = data[_SO_HEADER:]
        native = np.dtype(out_dtype.kind + str(size))  # writer's (little-endian) order
        if minbits == size * 8:
            if payload.nbytes < n * size:
                raise ChunkDecodeError(f"{self.codec_id}: chunk has {payload.nbytes} data bytes, expected {n * size}")
            values = np.frombuffer(payload[: n * size], dtype=native.newbyteorder("<"))
            return _finish(values.astype(out_dtype).tobytes(), out)
        udt = np.dtype(f"u{size}")
        if minbits == 0:
            raw = np.zeros(n, udt)
        else:
            stream = _bitstream(payload, n * minbits, self.codec_id)
            raw = _unpack_fields(stream, minbits, 0, n, size)
        mask = (1 << minbits) - 1
        is_fill = raw == udt.type(mask) if self.fill_defined else None
        if self.is_float:
            ival_dtype = np.dtype(f"i{size}")
            fdtype = np.dtype(f"f{size}")
            # ``min`` is the float's bytes in the low bytes of the little-endian minval.
            fmin = np.frombuffer(minval.to_bytes(8, "little")[:size], fdtype.newbyteorder("<"))[0]
            ten = fdtype.type(10)
            scale = np.power(ten, fdtype.type(self.scale_factor), dtype=fdtype)
            with np.errstate(over="ignore", invalid="ignore"):
                values = (raw.view(ival_dtype).astype(fdtype) / scale + fdtype.type(fmin)).astype(fdtype)
            if is_fill is not None:
                fill = np.frombuffer(self._fill_bytes, fdtype.newbyteorder("<"))[0]
                values[is_fill] = fill
        else:
            # Modular addition in the type's width matches the C cast for both signednesses.
            values = (raw + udt.type(minval & ((1 << (8 * size)) - 1))).view(native)
            if is_fill is not None:
                fill = np.frombuffer(self._fill_bytes, native.newbyteorder("<"))[0]
                values[is_fill] = fill
        return _finish(values.astype(out_dtype).tobytes(), out)


# --- n-bit -------------------------------------------------------------------------------------

_NBIT_ATOMIC = 1
_NBIT_ARRAY = 2
_NBIT_COMPOUND = 3
_NBIT_NOOPTYPE = 4


class _Leaf:
    """One field of the n-bit bit stream: where it goes and how many bits it has."""

    __slots__ = ("byte_offset", "size", "big_endian", "precision", "offset", "noop")

    def __init__(self, byte_offset: int, size: int, big_endian: bool, precision: int, offset: int, noop: bool):
        self.byte_offset = byte_offset
        self.size = size
        self.big_endian = big_endian
        self.precision = precision
        self.offset = offset
        self.noop = noop

    @property
    def nbits(self) -> int:
        return self.size * 8 if self.noop else self.precision


def _nbit_leaves(parms: tuple[int, ...], codec_id: str) -> tuple[int, list[_Leaf]]:
    """Parse the n-bit parameter tree into (element size, leaves in bit-stream order)."""

    def need(i: int) -> int:
        if i >= len(parms):
            raise CodecError(f"{codec_id}: parameter list ends early (index {i} of {len(parms)})")
        return parms[i]

    def atomic(i: int, base: int, leaves: list[_Leaf]) -> int:
        size, order, precision, offset = need(i), need(i + 1), need(i + 2), need(i + 3)
        if size <= 0 or precision > size * 8 or precision + offset > size * 8:
            raise CodecError(f"{codec_id}: invalid atomic field size={size} precision={precision} offset={offset}")
        leaves.append(_Leaf(base, size, order == 1, precision, offset, False))
        return i + 4

    def array(i: int, base: int, leaves: list[_Leaf]) -> int:
        total = need(i)
        cls = need(i + 1)
        j = i + 2
        if cls == _NBIT_ATOMIC:
            size = need(j)
            if size <= 0 or total % size:
                raise CodecError(f"{codec_id}: array of {total} bytes is not a multiple of its {size}-byte base")
            end = j
            for k in range(total // size):
                end = atomic(j, base + k * size, leaves)
            return end
        if cls in (_NBIT_ARRAY, _NBIT_COMPOUND):
            size = need(j)
            if size <= 0 or total % size:
                raise CodecError(f"{codec_id}: array of {total} bytes is not a multiple of its {size}-byte base")
            end = j
            sub = array if cls == _NBIT_ARRAY else compound
            for k in range(total // size):
                end = sub(j, base + k * size, leaves)
            return end
        if cls == _NBIT_NOOPTYPE:
            leaves.append(_Leaf(base, total, False, total * 8, 0, True))
            return j + 1
        raise CodecError(f"{codec_id}: unknown n-bit class {cls}")

    def compound(i: int, base: int, leaves: list[_Leaf]) -> int:
        size, nmembers = need(i), need(i + 1)
        j = i + 2
        for _ in range(nmembers):
            moff, cls = need(j), need(j + 1)
            j += 2
            if moff >= size:
                raise CodecError(f"{codec_id}: compound member offset {moff} outside its {size} bytes")
            if cls == _NBIT_ATOMIC:
                j = atomic(j, base + moff, leaves)
            elif cls == _NBIT_ARRAY:
                j = array(j, base + moff, leaves)
            elif cls == _NBIT_COMPOUND:
                j = compound(j, base + moff, leaves)
            elif cls == _NBIT_NOOPTYPE:
                msize = need(j)
                leaves.append(_Leaf(base + moff, msize, False, msize * 8, 0, True))
                j += 1
            else:
                raise CodecError(f"{codec_id}: unknown n-bit member class {cls}")
        return j

    leaves: list[_Leaf] = []
    cls, size = need(3), need(4)
    if cls == _NBIT_ATOMIC:
        atomic(4, 0, leaves)
    elif cls == _NBIT_ARRAY:
        array(4, 0, leaves)
    elif cls == _NBIT_COMPOUND:
        compound(4, 0, leaves)
    else:
        raise CodecError(f"{codec_id}: unknown top-level n-bit class {cls}")
    for leaf in leaves:
        if leaf.byte_offset + leaf.size > size:
            raise CodecError(f"{codec_id}: a field ends past the {size}-byte element")
    return size, leaves


class HDF5NBit(Codec):
    """Decoder of HDF5's n-bit filter (filter id 5).

    Parameters
    ----------
    cd_values
        The filter's client data as stored in the file: parameter count, "nothing to do" flag,
        elements per chunk, then the datatype tree (atomic: size, order, precision, offset;
        array; compound with member offsets; no-op types copied whole).
    kinds
        One letter per atomic field of the tree in stream order: ``"i"`` signed integer, ``"u"``
        unsigned integer, ``"f"`` float.  The filter restores each field's ``precision`` bits at
        bit ``offset``; HDF5's type conversion then shifts them down and sign-extends signed
        integers. This codec does both, so its output are the values h5py returns.  A float of
        reduced precision is a custom floating-point format with no numpy equivalent: refused.
    """

    codec_id = "chunkref.hdf5.nbit"

    def __init__(self, cd_values: list[int] | tuple[int, ...], kinds: str) -> None:
        cd = tuple(int(v) for v in cd_values)
        if len(cd) < 3:
            raise CodecError(f"{self.codec_id}: needs at least 3 cd_values, got {len(cd)}")
        self.cd_values = cd
        self.kinds = str(kinds)
        self.passthrough = bool(cd[1])
        self.nelmts = cd[2]
        if self.passthrough:
            self.size, self.leaves = 0, []
            return
        self.size, self.leaves = _nbit_leaves(cd, self.codec_id)
        atomics = [leaf for leaf in self.leaves if not leaf.noop]
        if len(self.kinds) != len(atomics) or set(self.kinds) - set("iuf"):
            raise CodecError(
                f"{self.codec_id}: kinds {self.kinds!r} must give one of i/u/f for each of {len(atomics)} atomic fields"
            )
        for leaf, kind in zip(atomics, self.kinds):
            if kind == "f" and (leaf.precision != leaf.size * 8 or leaf.offset):
                raise CodecError(
                    f"{self.codec_id}: a {leaf.size}-byte float with {leaf.precision} bits of precision at bit "
                    f"{leaf.offset} is a custom floating-point format numpy cannot represent"
                )
            if leaf.size not in (1, 2, 4, 8):
                raise CodecError(f"{self.codec_id}: atomic field of {leaf.size} bytes is not supported")
        if self.nelmts * self.size > _MAX_CHUNK_BYTES:
            raise CodecError(f"{self.codec_id}: {self.nelmts} elements of {self.size} bytes is not a valid chunk")

    def get_config(self) -> dict:
        return {"id": self.codec_id, "cd_values": list(self.cd_values), "kinds": self.kinds}

    @classmethod
    def from_config(cls, config: dict) -> HDF5NBit:
        return cls(config["cd_values"], config.get("kinds", ""))

    def __repr__(self) -> str:
        return f"HDF5NBit(cd_values={list(self.cd_values)}, kinds={self.kinds!r})"

    def encode(self, buf: Any) -> bytes:
        raise CodecError(f"{self.codec_id} decodes data HDF5 wrote; it does not encode")

    def decode(self, buf: Any, out: Any = None) -> Any:
        data = _as_bytes(buf)
        if self.passthrough:
            return _finish(bytes(data), out)
        n = self.nelmts
        per_element = sum(leaf.nbits for leaf in self.leaves)
        stream = _bitstream(data, n * per_element, self.codec_id)
        # Bit position of every element's stream start: the element layout is fixed, so the
        # stream is an (n, per_element) matrix and each field a column range of it.
        matrix = stream[: n * per_element].reshape(n, per_element)
        result = np.zeros((n, self.size), np.uint8)
        col = 0
        kinds = iter(self.kinds)
        for leaf in self.leaves:
            bits = matrix[:, col : col + leaf.nbits]
            col += leaf.nbits
            if leaf.noop:
                result[:, leaf.byte_offset : leaf.byte_offset + leaf.size] = np.packbits(bits, axis=1)
                continue
            kind = next(kinds)
            values = _unpack_fields(np.ascontiguousarray(bits).reshape(-1), leaf.precision, 0, n, leaf.size)
            if kind == "i" and 0 < leaf.precision < leaf.size * 8:
                # Two's complement sign extension from the field's own precision.
                sign = np.uint64(1) << np.uint64(leaf.precision - 1)
                v64 = values.astype(np.uint64)
                v64 = (v64 ^ sign) - sign
                values = v64.astype(values.dtype)
            order = ">" if leaf.big_endian else "<"
            as_bytes = values.astype(f"{order}u{leaf.size}").view(np.uint8).reshape(n, leaf.size)
            result[:, leaf.byte_offset : leaf.byte_offset + leaf.size] = as_bytes
        return _finish(result.tobytes(), out)


# --- bitshuffle --------------------------------------------------------------------------------

_BSHUF_NONE = 0
_BSHUF_LZ4 = 2
_BSHUF_ZSTD = 3
_BSHUF_BLOCKED_MULT = 8


class HDF5Bitshuffle(Codec):
    """Decoder of the bitshuffle HDF5 filter (id 32008) with its chunk framing.

    Parameters
    ----------
    itemsize
        Element size in bytes (cd_values[2]).
    blocksize
        Block size in elements (cd_values[3]; 0: the library default).
    compression
        0 none, 2 LZ4, 3 zstd (cd_values[4]).

    Notes
    -----
    Compressed chunks start with the decoded size (big-endian uint64) and the block size in
    bytes (big-endian uint32); each block follows as a big-endian uint32 byte count and its LZ4
    block or zstd frame; trailing elements that do not fill a group of 8 are stored raw.  The
    bit transposition itself is imagecodecs' ``bitshuffle_decode`` (the same C library); the
    HDF5 framing, which imagecodecs does not parse, is done here.
    """

    codec_id = "chunkref.hdf5.bitshuffle"

    def __init__(self, itemsize: int, blocksize: int = 0, compression: int = 0) -> None:
        self.itemsize = int(itemsize)
        self.blocksize = int(blocksize)
        self.compression = int(compression)
        if self.itemsize <= 0:
            raise CodecError(f"{self.codec_id}: itemsize must be positive, got {itemsize}")
        if self.compression not in (_BSHUF_NONE, _BSHUF_LZ4, _BSHUF_ZSTD):
            raise CodecError(f"{self.codec_id}: unknown compression {compression} (0 none, 2 lz4, 3 zstd)")
        try:
            import imagecodecs  # noqa: F401
        except ImportError as exc:
            raise CodecError(f"{self.codec_id} needs the imagecodecs package (pip install imagecodecs)") from exc

    def get_config(self) -> dict:
        return {
            "id": self.codec_id,
            "itemsize": self.itemsize,
            "blocksize": self.blocksize,
            "compression": self.compression,
        }

    def __repr__(self) -> str:
        return f"HDF5Bitshuffle(itemsize={self.itemsize}, blocksize={self.blocksize}, compression={self.compression})"

    def encode(self, buf: Any) -> bytes:
        raise CodecError(f"{self.codec_id} decodes data HDF5 wrote; it does not encode")

    def decode(self, buf: Any, out: Any = None) -> Any:
        import imagecodecs

        data = _as_bytes(buf)
        if self.compression == _BSHUF_NONE:
            if data.nbytes % self.itemsize:
                raise ChunkDecodeError(f"{self.codec_id}: {data.nbytes} bytes is not a multiple of {self.itemsize}")
            shuffled = bytes(data)
            block_elems = self.blocksize
        else:
            if data.nbytes < 12:
                raise ChunkDecodeError(f"{self.codec_id}: chunk of {data.nbytes} bytes is shorter than its header")
            header = bytes(data[:12])
            total = int.from_bytes(header[:8], "big")
            block_bytes = int.from_bytes(header[8:12], "big")
            if total > _MAX_CHUNK_BYTES or total % self.itemsize:
                raise ChunkDecodeError(f"{self.codec_id}: header declares {total} bytes, invalid for this chunk")
            if block_bytes == 0 or block_bytes % (self.itemsize * _BSHUF_BLOCKED_MULT):
                raise ChunkDecodeError(f"{self.codec_id}: header declares an invalid block of {block_bytes} bytes")
            if out is not None and _as_bytes(out).nbytes != total:
                raise ChunkDecodeError(
                    f"{self.codec_id}: chunk declares {total} bytes, the output holds {_as_bytes(out).nbytes}"
                )
            block_elems = block_bytes // self.itemsize
            nelems = total // self.itemsize
            shuffled_arr = bytearray(total)
            pos, dst = 12, 0
            sizes = [block_elems] * (nelems // block_elems)
            last = nelems % block_elems
            last -= last % _BSHUF_BLOCKED_MULT
            if last:
                sizes.append(last)
            for elems in sizes:
                nbytes = elems * self.itemsize
                if pos + 4 > data.nbytes:
                    raise ChunkDecodeError(f"{self.codec_id}: chunk truncated in block header at byte {pos}")
                clen = int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
                if pos + clen > data.nbytes:
                    raise ChunkDecodeError(f"{self.codec_id}: block of {clen} bytes runs past the chunk end")
                block = bytes(data[pos : pos + clen])
                pos += clen
                try:
                    if self.compression == _BSHUF_LZ4:
                        raw = imagecodecs.lz4_decode(block, header=False, out=nbytes)
                    else:
                        raw = imagecodecs.zstd_decode(block, out=nbytes)
                except Exception as exc:  # the C decoders raise their own error types
                    raise ChunkDecodeError(f"{self.codec_id}: block at byte {pos - clen} is corrupt: {exc}") from exc
                if len(raw) != nbytes:
                    raise ChunkDecodeError(f"{self.codec_id}: block decoded to {len(raw)} bytes, expected {nbytes}")
                shuffled_arr[dst : dst + nbytes] = raw
                dst += nbytes
            leftover = total - dst
            if pos + leftover > data.nbytes:
                raise ChunkDecodeError(f"{self.codec_id}: chunk truncated in its {leftover} trailing raw bytes")
            shuffled_arr[dst:] = data[pos : pos + leftover]
            shuffled = bytes(shuffled_arr)
        result = imagecodecs.bitshuffle_decode(shuffled, itemsize=self.itemsize, blocksize=block_elems)
        return _finish(bytes(result), out)


class HDF5LZF(Codec):
    """Decoder of the LZF HDF5 filter (id 32000): raw LZF of a chunk of known size.

    Parameters
    ----------
    nbytes
        Decoded chunk size (the filter's cd_values[2]); LZF streams do not record it.
    """

    codec_id = "chunkref.hdf5.lzf"

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        if not 0 < self.nbytes <= _MAX_CHUNK_BYTES:
            raise CodecError(f"{self.codec_id}: invalid decoded size {nbytes}")
        try:
            import imagecodecs  # noqa: F401
        except ImportError as exc:
            raise CodecError(f"{self.codec_id} needs the imagecodecs package (pip install imagecodecs)") from exc

    def get_config(self) -> dict:
        return {"id": self.codec_id, "nbytes": self.nbytes}

    def __repr__(self) -> str:
        return f"HDF5LZF(nbytes={self.nbytes})"

    def encode(self, buf: Any) -> bytes:
        import imagecodecs

        data = bytes(_as_bytes(buf))
        if len(data) != self.nbytes:
            raise CodecError(f"{self.codec_id}: chunk of {len(data)} bytes, the codec is for {self.nbytes}")
        return imagecodecs.lzf_encode(data)

    def decode(self, buf: Any, out: Any = None) -> Any:
        import imagecodecs

        try:
            result = imagecodecs.lzf_decode(bytes(_as_bytes(buf)), out=self.nbytes)
        except Exception as exc:  # imagecodecs raises its own LzfError
            raise ChunkDecodeError(f"{self.codec_id}: corrupt LZF chunk ({exc})") from exc
        if len(result) != self.nbytes:
            raise ChunkDecodeError(f"{self.codec_id}: chunk decoded to {len(result)} bytes, expected {self.nbytes}")
        return _finish(bytes(result), out)


def _register() -> None:
    for cls in (HDF5ScaleOffset, HDF5NBit, HDF5Bitshuffle, HDF5LZF):
        numcodecs.register_codec(cls)


_register()
