"""HDF5 filter pipelines -> numcodecs codec configurations.

Each filter of a dataset's pipeline (in the order HDF5 applies them when writing) maps to one
numcodecs configuration; Zarr metadata lists them in the same order after the ``bytes`` codec, so
decoding runs them in reverse exactly as HDF5 does.  The ids are the ones kerchunk and VirtualiZarr
manifests already use (``zlib``, ``shuffle``, ``fletcher32``, ``imagecodecs_lzf``,
``imagecodecs_szip``, ``imagecodecs_lz4h5``...), so exported kerchunk JSON stays readable by those
tools; filters no package decodes map to chunkref's own codecs (``chunkref.hdf5.*``).

A filter without a decoder raises :class:`FilterRefusal` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import h5py
from h5py import h5z


class FilterRefusal(Exception):
    """A filter pipeline cannot be decoded (the message is the reason)."""


@dataclass(frozen=True)
class Filter:
    """One filter of an HDF5 pipeline as stored in the file."""

    id: int
    flags: int
    cd_values: tuple[int, ...]
    name: str

    @property
    def optional(self) -> bool:
        """HDF5 may skip an optional filter for a chunk it fails on (recorded in the chunk's mask)."""
        return bool(self.flags & h5z.FLAG_OPTIONAL)


def read_pipeline(dcpl: h5py.h5p.PropDCID) -> list[Filter]:
    """The filters of a dataset creation property list, in write order."""
    out = []
    for i in range(dcpl.get_nfilters()):
        fid, flags, cd, name = dcpl.get_filter(i)
        out.append(
            Filter(int(fid), int(flags), tuple(int(v) for v in cd), name.decode("ascii", "replace") if isinstance(name, bytes) else str(name))
        )
    return out


_BLOSC_CNAMES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}

FILTER_DEFLATE = 1
FILTER_SHUFFLE = 2
FILTER_FLETCHER32 = 3
FILTER_SZIP = 4
FILTER_NBIT = 5
FILTER_SCALEOFFSET = 6
FILTER_BZIP2 = 307
FILTER_LZF = 32000
FILTER_BLOSC = 32001
FILTER_LZ4 = 32004
FILTER_BITSHUFFLE = 32008
FILTER_ZSTD = 32015


def _imagecodecs_available() -> bool:
    try:
        import imagecodecs.numcodecs  # noqa: F401
    except ImportError:
        return False
    return True


def filter_codec(flt: Filter, itemsize: int, nbit_kinds: str, chunk_nbytes: int = 0) -> dict[str, Any]:
    """The numcodecs configuration decoding one HDF5 filter.

    Parameters
    ----------
    flt
        The filter.
    itemsize
        Size of one dataset element (what shuffle and bitshuffle transpose).
    nbit_kinds
        The atomic field kinds of the dataset's type (for the n-bit codec).
    chunk_nbytes
        Decoded size of one chunk (LZF streams do not record it).
    """
    cd = flt.cd_values
    fid = flt.id
    if fid == FILTER_DEFLATE:
        return {"id": "zlib", "level": cd[0] if cd else 4}
    if fid == FILTER_SHUFFLE:
        return {"id": "shuffle", "elementsize": cd[0] if cd else itemsize}
    if fid == FILTER_FLETCHER32:
        return {"id": "fletcher32"}
    if fid == FILTER_BZIP2:
        return {"id": "bz2", "level": cd[0] if cd and 1 <= cd[0] <= 9 else 9}
    if fid == FILTER_ZSTD:
        return {"id": "zstd", "level": cd[0] if cd else 3}
    if fid == FILTER_BLOSC:
        # cd: filter rev, blosc version, typesize, chunk bytes, clevel, shuffle, compressor.
        # Blosc frames describe themselves; these only document how the data was written.
        return {
            "id": "blosc",
            "cname": _BLOSC_CNAMES.get(cd[6] if len(cd) > 6 else 0, "blosclz"),
            "clevel": cd[4] if len(cd) > 4 else 5,
            "shuffle": cd[5] if len(cd) > 5 else 1,
            "blocksize": 0,
        }
    if fid == FILTER_SCALEOFFSET:
        if len(cd) < 8:
            raise FilterRefusal(f"scaleoffset filter with {len(cd)} parameters (the file is damaged)")
        if cd[3] == 1 and cd[0] == 1:
            raise FilterRefusal("scaleoffset E-scaling (HDF5 itself cannot decode it)")
        return {"id": "chunkref.hdf5.scaleoffset", "cd_values": list(cd)}
    if fid == FILTER_NBIT:
        return {"id": "chunkref.hdf5.nbit", "cd_values": list(cd), "kinds": nbit_kinds}
    needs_imagecodecs = {
        FILTER_LZF: "lzf",
        FILTER_SZIP: "szip",
        FILTER_LZ4: "lz4",
        FILTER_BITSHUFFLE: "bitshuffle",
    }
    if fid in needs_imagecodecs and not _imagecodecs_available():
        raise FilterRefusal(
            f"{needs_imagecodecs[fid]} filter ({fid}) needs the imagecodecs package (pip install 'chunkref[hdf5]')"
        )
    if fid == FILTER_LZF:
        nbytes = cd[2] if len(cd) > 2 and cd[2] else chunk_nbytes
        if not nbytes:
            raise FilterRefusal("lzf filter without the chunk size parameter")
        return {"id": "chunkref.hdf5.lzf", "nbytes": nbytes}
    if fid == FILTER_SZIP:
        if len(cd) < 4:
            raise FilterRefusal(f"szip filter with {len(cd)} parameters (the file is damaged)")
        return {
            "id": "imagecodecs_szip",
            "options_mask": cd[0],
            "pixels_per_block": cd[1],
            "bits_per_pixel": cd[2],
            "pixels_per_scanline": cd[3],
            "header": True,
        }
    if fid == FILTER_LZ4:
        return {"id": "imagecodecs_lz4h5"}
    if fid == FILTER_BITSHUFFLE:
        if len(cd) < 3:
            raise FilterRefusal(f"bitshuffle filter with {len(cd)} parameters (the file is damaged)")
        compression = cd[4] if len(cd) > 4 else 0
        if compression not in (0, 2, 3):
            raise FilterRefusal(f"bitshuffle with compression code {compression} (known: 0 none, 2 lz4, 3 zstd)")
        return {
            "id": "chunkref.hdf5.bitshuffle",
            "itemsize": cd[2],
            "blocksize": cd[3] if len(cd) > 3 else 0,
            "compression": compression,
        }
    raise FilterRefusal(f"HDF5 filter {fid} ({flt.name or 'unnamed'}) has no decoder in chunkref")


def pipeline_codecs(
    filters: list[Filter], itemsize: int, nbit_kinds: str, chunk_nbytes: int = 0
) -> list[dict[str, Any]]:
    """numcodecs configurations for a whole pipeline, in HDF5 write order."""
    return [filter_codec(f, itemsize, nbit_kinds, chunk_nbytes) for f in filters]


def v3_codec(config: dict[str, Any]) -> dict[str, Any]:
    """A numcodecs configuration as a Zarr v3 codec (``numcodecs.<id>``, as zarr-python names it)."""
    conf = {k: v for k, v in config.items() if k != "id"}
    return {"name": f"numcodecs.{config['id']}", "configuration": conf}
