"""Any numcodecs codec as a chunkref codec: ``numcodecs.<id>`` in v3, every entry of a v2 chain.

The codec's kind is decided per id the way zarr-python 3.1.6 does (``zarr.codecs.numcodecs``):

* array->array: ``delta``, ``bitround``, ``fixedscaleoffset``, ``quantize``, ``packbits``,
  ``astype`` and ``categorize`` (the last only appears in v2 chains);
* array->bytes: ``pcodec``, ``zfpy`` and the v2 object codecs ``vlen-utf8``, ``vlen-bytes``,
  ``vlen-array``, ``json2``, ``msgpack2``, ``pickle`` (refused unless ``codec.allow_pickle``:
  unpickling runs arbitrary code);
* bytes->bytes: everything else (compressors, ``shuffle``, checksums, ``base64``, and the
  third-party ``imagecodecs_*`` filters HDF5 manifests use).

Ids are resolved by numcodecs' own registry (which also loads its ``numcodecs.codecs`` entry
points); ``imagecodecs_*`` ids register imagecodecs' numcodecs codecs on first use.

Decoding is bounded: zlib, gzip, zstd, blosc, lz4, bz2 and lzma go through :mod:`.bounded`
(libdeflate for zlib/gzip); other bytes->bytes codecs are size-checked after decoding.
"""

from __future__ import annotations

import lzma
import math
import pickle
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import numcodecs
import numcodecs.registry
import numpy as np

from chunkref.config import config
from chunkref.errors import ChunkDecodeError, CodecError, UnknownCodecError
from chunkref.zarr.codecs import bounded
from chunkref.zarr.codecs.base import (
    ArrayArrayCodec,
    ArrayBytesCodec,
    BytesBytesCodec,
    BytesLike,
    ChunkSpec,
    Codec,
    CodecKind,
    byte_view,
    is_variable_dtype,
)
from chunkref.zarr.codecs.compression import compressed_bound
from chunkref.zarr.codecs.vlen import check_vlen_header

__all__ = [
    "ARRAY_ARRAY_IDS",
    "ARRAY_BYTES_IDS",
    "OBJECT_CODEC_IDS",
    "NumcodecsArrayArrayCodec",
    "NumcodecsArrayBytesCodec",
    "NumcodecsBytesBytesCodec",
    "NumcodecsCodec",
    "codec_kind",
    "from_numcodecs_config",
    "numcodecs_codec_class",
]

PREFIX = "numcodecs."
ARRAY_ARRAY_IDS = frozenset({"delta", "bitround", "fixedscaleoffset", "quantize", "packbits", "astype", "categorize"})
OBJECT_CODEC_IDS = frozenset({"vlen-utf8", "vlen-bytes", "vlen-array", "json2", "msgpack2", "pickle"})
ARRAY_BYTES_IDS = frozenset({"pcodec", "zfpy"}) | OBJECT_CODEC_IDS
_CHECKSUM_IDS = frozenset({"crc32", "crc32c", "adler32", "fletcher32", "jenkins_lookup3"})
_SAME_SIZE_IDS = frozenset({"shuffle"})
# Configuration keys evolve() fills in from the array when absent.
_EVOLVED_KEYS = {"fixedscaleoffset": "dtype", "quantize": "dtype", "astype": "decode_dtype", "shuffle": "elementsize"}


def codec_kind(codec_id: str) -> CodecKind:
    """The kind of the numcodecs codec ``codec_id``."""
    if codec_id in ARRAY_ARRAY_IDS:
        return "array_array"
    if codec_id in ARRAY_BYTES_IDS:
        return "array_bytes"
    return "bytes_bytes"


_imagecodecs_lock = threading.Lock()
_imagecodecs_registered = False


def _numcodecs_instance(codec_id: str, conf: Mapping[str, Any], where: str) -> Any:
    """A numcodecs codec object, with errors naming the codec."""
    global _imagecodecs_registered
    if codec_id == "pickle" and not config.get("codec.allow_pickle"):
        raise CodecError(
            f"codec {where!r} is refused: unpickling chunk data can run arbitrary code "
            "(enable it with chunkref.config.set({'codec.allow_pickle': True}) for trusted data only)"
        )
    full = {"id": codec_id, **conf}
    try:
        return numcodecs.get_codec(full)
    except numcodecs.registry.UnknownCodecError:
        pass
    except (TypeError, ValueError, KeyError) as exc:
        raise CodecError(f"codec {where!r}: invalid configuration {dict(conf)!r}: {exc}") from exc
    if codec_id.startswith("imagecodecs_") and not _imagecodecs_registered:
        with _imagecodecs_lock:
            try:
                import imagecodecs.numcodecs as icn
            except ImportError as exc:
                raise UnknownCodecError(
                    f"codec {where!r} needs the optional package imagecodecs (pip install 'chunkref[hdf5]')"
                ) from exc
            icn.register_codecs(verbose=False)
            _imagecodecs_registered = True
        return _numcodecs_instance(codec_id, conf, where)
    raise UnknownCodecError(f"unknown codec {where!r}: numcodecs has no codec with id {codec_id!r}")


def _known_to_numcodecs(codec_id: str) -> bool:
    return (
        codec_id in numcodecs.registry.codec_registry
        or codec_id in numcodecs.registry.entries
        or codec_id.startswith("imagecodecs_")
    )


class NumcodecsCodec(Codec):
    """A numcodecs codec; ``codec_id`` is its numcodecs id, ``config`` its configuration (no id).

    Instances are built by :func:`from_numcodecs_config` (v2 ``{"id": ...}`` objects) or by the
    class :func:`numcodecs_codec_class` returns for a v3 ``numcodecs.<id>`` name.
    """

    codec_id: str
    config: dict[str, Any]

    def __init__(self, codec_id: str, config: Mapping[str, Any] | None = None) -> None:
        self.codec_id = codec_id
        self.config = {k: v for k, v in (config or {}).items() if k != "id"}
        self._instance: Any = None
        deferred = _EVOLVED_KEYS.get(codec_id)
        if deferred is not None and self.config.get(deferred) is None:
            # Filled in from the array by evolve (as zarr-python does); build it then.
            if not _known_to_numcodecs(codec_id):
                raise UnknownCodecError(f"unknown codec {PREFIX + codec_id!r}")
        else:
            self._instance = _numcodecs_instance(codec_id, self.config, PREFIX + codec_id)

    @property
    def _codec(self) -> Any:
        if self._instance is None:
            self._instance = _numcodecs_instance(self.codec_id, self.config, PREFIX + self.codec_id)
        return self._instance

    # v3 name of the instance (the class attribute is set on the per-id subclasses)
    @property
    def name(self) -> str:  # type: ignore[override]
        return PREFIX + self.codec_id

    @classmethod
    def from_json(cls, configuration: Mapping[str, Any] | None) -> Codec:
        codec_id = getattr(cls, "_id", None)
        if codec_id is None:
            raise CodecError(f"{cls.__name__}.from_json needs a per-id class (see numcodecs_codec_class)")
        if configuration is not None and not isinstance(configuration, Mapping):
            raise CodecError(f"codec {PREFIX + codec_id!r}: configuration must be a JSON object")
        if configuration and "id" in configuration and configuration["id"] != codec_id:
            raise CodecError(f"codec {PREFIX + codec_id!r}: configuration id {configuration['id']!r} does not match")
        return from_numcodecs_config({"id": codec_id, **(configuration or {})})

    def configuration(self) -> dict[str, Any]:
        return dict(self.config)

    def to_v2_json(self) -> dict[str, Any]:
        """The v2 form ``{"id": ..., **config}``."""
        return {"id": self.codec_id, **self.config}

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NumcodecsCodec)
            and other.codec_id == self.codec_id
            and other.config == self.config
            and other.kind == self.kind
        )

    def __hash__(self) -> int:
        return hash((self.codec_id, repr(sorted(self.config.items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.codec_id!r}, {self.config!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Per-id classes are created at run time; rebuild through the factory.
        return (from_numcodecs_config, ({"id": self.codec_id, **self.config},))

    def _with(self, **updates: Any) -> NumcodecsCodec:
        return from_numcodecs_config({"id": self.codec_id, **self.config, **updates})


class NumcodecsArrayArrayCodec(NumcodecsCodec, ArrayArrayCodec):
    """An array->array numcodecs filter (``delta``, ``fixedscaleoffset``, ...)."""

    kind: ClassVar[CodecKind] = "array_array"

    def evolve(self, spec: ChunkSpec) -> NumcodecsCodec:
        native = str(spec.dtype)
        cid = self.codec_id
        # Defaults zarr-python fills in from the array (FixedScaleOffset, Quantize, AsType).
        if cid in ("fixedscaleoffset", "quantize") and self.config.get("dtype") is None:
            return self._with(dtype=native)
        if cid == "astype" and self.config.get("decode_dtype") is None:
            return self._with(decode_dtype=native)
        if cid == "packbits" and spec.dtype != np.bool_:
            raise CodecError(f"codec {self.name!r} requires a bool array, got {spec.dtype}")
        return self

    def resolve(self, spec: ChunkSpec) -> ChunkSpec:
        cid, conf = self.codec_id, self.config
        if cid == "packbits":
            return ChunkSpec((1 + math.ceil(spec.size / 8),), np.dtype(np.uint8), None)
        if cid == "astype":
            return ChunkSpec(spec.shape, np.dtype(conf["encode_dtype"]), None)
        if cid == "categorize":
            return ChunkSpec(spec.shape, np.dtype(conf.get("astype", "u1")), None)
        astype = conf.get("astype")
        if cid in ("delta", "fixedscaleoffset", "quantize") and astype:
            return ChunkSpec(spec.shape, np.dtype(astype), None)
        return spec

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        out_spec = self.resolve(spec)
        out = np.asarray(self._codec.encode(np.ascontiguousarray(array)))
        return _as_spec(out, out_spec, self.name, CodecError)

    def decode(self, array: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        try:
            out = np.asarray(self._codec.decode(np.ascontiguousarray(array)))
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ChunkDecodeError(f"codec {self.name!r}: {exc}") from exc
        return _as_spec(out, spec, self.name, ChunkDecodeError)


def _as_spec(out: np.ndarray, spec: ChunkSpec, name: str, error: type[Exception]) -> np.ndarray:
    """``out`` reshaped to ``spec`` (numcodecs filters return flat arrays)."""
    if out.size != spec.size:
        raise error(f"codec {name!r}: produced {out.size} elements, expected {spec.size}")
    if out.dtype != spec.dtype:
        if out.dtype.itemsize == spec.dtype.itemsize and not out.dtype.hasobject and not spec.dtype.hasobject:
            # Same width: the codec's output is defined by its bytes (another byte-order spelling,
            # or bitround's integer view of rounded floats), so reinterpret, never convert values.
            out = out.view(spec.dtype)
        else:
            out = out.astype(spec.dtype)
    return out.reshape(spec.shape)


class NumcodecsArrayBytesCodec(NumcodecsCodec, ArrayBytesCodec):
    """An array->bytes numcodecs codec (``pcodec``, ``zfpy``, v2 object codecs)."""

    kind: ClassVar[CodecKind] = "array_bytes"

    def evolve(self, spec: ChunkSpec) -> NumcodecsCodec:
        if self.codec_id in OBJECT_CODEC_IDS and not is_variable_dtype(spec.dtype) and spec.dtype.kind not in "USV":
            raise CodecError(f"object codec {self.name!r} cannot encode dtype {spec.dtype}")
        return self

    def encode(self, array: np.ndarray, spec: ChunkSpec) -> BytesLike:
        array = np.asarray(array)
        if self.codec_id in OBJECT_CODEC_IDS and array.dtype != object:
            array = array.astype(object)
        try:
            return self._codec.encode(np.ascontiguousarray(array))
        except (TypeError, ValueError, UnicodeError) as exc:
            raise CodecError(f"codec {self.name!r}: cannot encode: {exc}") from exc

    def decode(self, data: BytesLike, spec: ChunkSpec) -> np.ndarray:
        view = byte_view(data)
        if self.codec_id in ("vlen-utf8", "vlen-bytes", "vlen-array"):
            check_vlen_header(view, spec.size, self.name)
        try:
            out = _unpickle(view, self.name) if self.codec_id == "pickle" else self._codec.decode(view)
        except (ValueError, TypeError, RuntimeError, UnicodeError) as exc:
            raise ChunkDecodeError(f"codec {self.name!r}: {exc}") from exc
        out = np.asarray(out) if not isinstance(out, np.ndarray) else out
        if self.codec_id in OBJECT_CODEC_IDS and out.dtype != object:
            # json2/msgpack2 may return typed arrays for uniform content.
            out = out.astype(object)
        return _as_spec(out, spec, self.name, ChunkDecodeError)


def _unpickle(view: memoryview, name: str) -> Any:
    # numcodecs >= 0.16 has its own process-wide switch; ours is the chunkref setting, checked
    # again here because it may have been turned off since the pipeline was built.
    if not config.get("codec.allow_pickle"):
        raise CodecError(f"codec {name!r} is refused: set codec.allow_pickle for trusted data only")
    try:
        return pickle.loads(view)
    except Exception as exc:  # unpickling raises anything
        raise ChunkDecodeError(f"codec {name!r}: {type(exc).__name__}: {exc}") from exc


class NumcodecsBytesBytesCodec(NumcodecsCodec, BytesBytesCodec):
    """A bytes->bytes numcodecs codec (compressors, shuffle, checksums, imagecodecs filters)."""

    kind: ClassVar[CodecKind] = "bytes_bytes"

    @property
    def inflates(self) -> bool:  # type: ignore[override]
        return self.codec_id not in _CHECKSUM_IDS and self.codec_id not in _SAME_SIZE_IDS

    def evolve(self, spec: ChunkSpec) -> NumcodecsCodec:
        # netCDF-C's NCZarr writes {"id": "shuffle", "elementsize": 0} meaning "the type size"
        # (HDF5's shuffle semantics); numcodecs would take 0 as "do nothing".
        if self.codec_id == "shuffle" and self.config.get("elementsize") in (None, 0) and spec.nbytes is not None:
            return self._with(elementsize=spec.dtype.itemsize)
        return self

    def encoded_size(self, nbytes: int, spec: ChunkSpec) -> int | None:
        if self.codec_id in _CHECKSUM_IDS:
            return nbytes + 4
        if self.codec_id in _SAME_SIZE_IDS:
            return nbytes
        return None

    def max_encoded_size(self, nbytes: int, spec: ChunkSpec) -> int:
        exact = self.encoded_size(nbytes, spec)
        if exact is not None:
            return exact
        if self.codec_id in _BOUNDED:
            return compressed_bound(nbytes)
        return super().max_encoded_size(nbytes, spec)

    def encode(self, data: BytesLike, spec: ChunkSpec) -> BytesLike:
        # Typed arrays pass through as they are: v2 blosc takes its typesize from the itemsize.
        return self._codec.encode(data)

    def decode(self, data: BytesLike, spec: ChunkSpec, max_size: int, exact: bool = False) -> BytesLike:
        fn = _BOUNDED.get(self.codec_id)
        if fn is not None:
            return fn(self, data, max_size, exact)
        try:
            out = self._codec.decode(data)
        except Exception as exc:  # third-party codecs raise anything
            raise ChunkDecodeError(f"codec {self.name!r}: {type(exc).__name__}: {exc}") from exc
        return bounded.check_size(out, max_size, exact, self.name)


def _lzma(codec: NumcodecsCodec, data: BytesLike, max_size: int, exact: bool) -> BytesLike:
    fmt = codec.config.get("format", lzma.FORMAT_XZ)
    filters = codec.config.get("filters")
    # numcodecs decodes with the configured format (FORMAT_XZ reads only xz); AUTO accepts the
    # formats lzma.decompress accepts for it.
    return bounded.lzma_decompress(data, max_size, exact, codec.name, fmt if fmt == lzma.FORMAT_RAW else lzma.FORMAT_AUTO, filters)


_BOUNDED: dict[str, Any] = {
    "zlib": lambda c, d, m, e: bounded.zlib_decompress(d, m, e, c.name),
    "gzip": lambda c, d, m, e: bounded.gzip_decompress(d, m, e, c.name),
    "zstd": lambda c, d, m, e: bounded.zstd_decompress(d, m, e, c.name),
    "blosc": lambda c, d, m, e: bounded.blosc_decompress(d, m, e, c.name),
    "lz4": lambda c, d, m, e: bounded.lz4_decompress(d, m, e, c.name),
    "bz2": lambda c, d, m, e: bounded.bz2_decompress(d, m, e, c.name),
    "lzma": _lzma,
}

_KIND_CLASSES: dict[str, type[NumcodecsCodec]] = {
    "array_array": NumcodecsArrayArrayCodec,
    "array_bytes": NumcodecsArrayBytesCodec,
    "bytes_bytes": NumcodecsBytesBytesCodec,
}
_per_id: dict[str, type[NumcodecsCodec]] = {}


def numcodecs_codec_class(name: str) -> type[Codec]:
    """The codec class for the v3 name ``numcodecs.<id>``.

    Raises
    ------
    UnknownCodecError
        If numcodecs knows no codec ``<id>``.
    """
    if not name.startswith(PREFIX):
        raise UnknownCodecError(f"unknown codec {name!r}")
    codec_id = name[len(PREFIX) :]
    cls = _per_id.get(codec_id)
    if cls is not None:
        return cls
    if not _known_to_numcodecs(codec_id):
        raise UnknownCodecError(f"unknown codec {name!r}: numcodecs has no codec with id {codec_id!r}")
    base = _KIND_CLASSES[codec_kind(codec_id)]
    cls = type(f"Numcodecs_{codec_id.replace('-', '_')}", (base,), {"_id": codec_id, "name": name})
    _per_id[codec_id] = cls
    return cls


def from_numcodecs_config(conf: Mapping[str, Any]) -> NumcodecsCodec:
    """A codec from a numcodecs / v2 configuration object ``{"id": ..., ...}``.

    Raises
    ------
    UnknownCodecError
        If numcodecs knows no such id.
    CodecError
        If the configuration is invalid or names a refused codec (``pickle``).
    """
    if not isinstance(conf, Mapping) or not isinstance(conf.get("id"), str):
        raise CodecError(f"a numcodecs codec must be an object with a string 'id', got {conf!r}")
    codec_id = conf["id"]
    base = _KIND_CLASSES[codec_kind(codec_id)]
    return base(codec_id, conf)
