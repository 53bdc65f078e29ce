"""Zarr codecs: the registry, the v3 built-ins, any numcodecs codec, and the CodecPipeline.

Importing this package registers the built-in codecs (``bytes``/``endian``, ``transpose``,
``gzip``, ``zstd``, ``blosc``, ``crc32c``, ``vlen-utf8``, ``vlen-bytes``).  ``numcodecs.<id>``
names resolve on demand; third-party codecs join through the ``chunkref.codecs`` entry point
group.  The sharding codec (``sharding_indexed``) lives in :mod:`.sharding`.
"""

from chunkref.zarr.codecs.base import (
    ArrayArrayCodec,
    ArrayBytesCodec,
    BytesBytesCodec,
    ChunkSpec,
    Codec,
    CodecKind,
    check_configuration,
)
from chunkref.zarr.codecs.bytes_codec import BytesCodec, RawBytesCodec
from chunkref.zarr.codecs.checksum import Crc32cCodec
from chunkref.zarr.codecs.compression import BloscCodec, GzipCodec, ZstdCodec
from chunkref.zarr.codecs.numcodecs_adapter import NumcodecsCodec, from_numcodecs_config
from chunkref.zarr.codecs.pipeline import CodecPipeline
from chunkref.zarr.codecs.registry import codec_from_json, get_codec_class, register_codec
from chunkref.zarr.codecs.transpose import TransposeCodec
from chunkref.zarr.codecs.vlen import VLenBytesCodec, VLenUTF8Codec

for _cls in (BytesCodec, TransposeCodec, GzipCodec, ZstdCodec, BloscCodec, Crc32cCodec, VLenUTF8Codec, VLenBytesCodec):
    register_codec(_cls)
del _cls

__all__ = [
    "ArrayArrayCodec",
    "ArrayBytesCodec",
    "BloscCodec",
    "BytesBytesCodec",
    "BytesCodec",
    "ChunkSpec",
    "Codec",
    "CodecKind",
    "CodecPipeline",
    "Crc32cCodec",
    "GzipCodec",
    "NumcodecsCodec",
    "RawBytesCodec",
    "TransposeCodec",
    "VLenBytesCodec",
    "VLenUTF8Codec",
    "ZstdCodec",
    "check_configuration",
    "codec_from_json",
    "from_numcodecs_config",
    "get_codec_class",
    "register_codec",
]

# These register themselves when imported and build on everything above: ``chunkref.padded``
# (chunks stored padded beyond their declared shape; see combine) and ``sharding_indexed``.
from chunkref.zarr.codecs import padded as _padded  # noqa: E402,F401
from chunkref.zarr.codecs import sharding as _sharding  # noqa: E402,F401
