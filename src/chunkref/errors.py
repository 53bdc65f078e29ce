"""Typed exceptions for chunkref.

Every error chunkref raises on bad input derives from :class:`ChunkrefError` and also from the
matching builtin, so that xarray, dask and user code can catch them the usual way:

=====================================  ==================
chunkref error                         builtin base
=====================================  ==================
bad argument, metadata, codec config   ``ValueError``
missing node or key                    ``KeyError``
node already there (mode ``"w-"``)     ``ValueError`` and ``FileExistsError``
out-of-bounds selection                ``IndexError``
not allowed (read-only, unauthorized)  ``PermissionError``
I/O failures (short read, unreachable) ``OSError``
=====================================  ==================

Messages name what went wrong and where: the node path and field for metadata, the store key
(e.g. ``temp/c/1/0``) for a chunk, the file and variable for a scan.
"""

from __future__ import annotations


class ChunkrefError(Exception):
    """Base class of every chunkref error."""


class _MessageKeyError(KeyError):
    """A KeyError whose ``str()`` is the plain message (KeyError quotes its argument)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --- arguments, metadata, codecs ------------------------------------------------------------


class InvalidArgumentError(ChunkrefError, ValueError):
    """A function was called with an argument it cannot accept."""


class MetadataError(ChunkrefError, ValueError):
    """Zarr metadata is malformed, inconsistent or unsupported (names the node and field)."""


class UnsupportedFeatureError(MetadataError):
    """Metadata uses a feature (data type, grid, extension) chunkref does not implement."""


class NoChunkShapeError(UnsupportedFeatureError, AttributeError):
    """A rectilinear array has no single chunk (or shard) shape: use ``chunk_sizes``.

    Also an ``AttributeError``, so ``getattr(array, "chunks", None)`` (dask, xarray) sees "no
    chunk shape" instead of failing.
    """


class CodecError(ChunkrefError, ValueError):
    """A codec configuration is invalid or a codec failed."""


class UnknownCodecError(CodecError, MetadataError):
    """A codec named in metadata is not registered."""


class ChunkDecodeError(ChunkrefError, ValueError):
    """Stored chunk bytes could not be decoded (corrupt, truncated, too large when inflated)."""


class ShardError(ChunkDecodeError):
    """A shard or its index is malformed (names the shard key and, where known, the inner chunk)."""


class HashMismatchError(ChunkDecodeError):
    """Bytes read do not match their recorded content id."""


class InvalidKeyError(ChunkrefError, ValueError):
    """A store key is not allowed (``..``, absolute, backslash, NUL, empty segment)."""


class ContainsArrayError(ChunkrefError, ValueError, FileExistsError):
    """An array already exists where a group (or new node) was requested.

    Also a ``FileExistsError``, which is what zarr-python raises for mode ``"w-"``.
    """


class ContainsGroupError(ChunkrefError, ValueError, FileExistsError):
    """A group already exists where an array (or new node) was requested.

    Also a ``FileExistsError``, which is what zarr-python raises for mode ``"w-"``.
    """


class ScanError(ChunkrefError, ValueError):
    """A source file could not be scanned (names the file and what is wrong)."""


class ManifestError(ChunkrefError, ValueError):
    """A reference manifest is malformed or hostile (names the key or field)."""


class CombineError(ManifestError):
    """Manifests cannot be combined: they disagree on something that must agree.

    The message names the file, the variable and the field; they are also attributes
    (``file``, ``variable``, ``field``; None when not applicable).
    """

    def __init__(self, message: str = "", *, file: str | None = None, variable: str | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.variable = variable
        self.field = field


class ConflictError(ChunkrefError, ValueError):
    """Concurrent changes conflict (names the arrays and chunks)."""


# --- missing things --------------------------------------------------------------------------


class NodeNotFoundError(ChunkrefError, _MessageKeyError):
    """No array or group exists at a path."""


class ArrayNotFoundError(NodeNotFoundError):
    """No array exists at a path."""


class GroupNotFoundError(NodeNotFoundError):
    """No group exists at a path."""


class ChunkNotFoundError(ChunkrefError, _MessageKeyError):
    """A chunk is missing and the array was configured to treat that as an error."""


class RefNotFoundError(ChunkrefError, _MessageKeyError):
    """A branch, tag or commit does not exist."""


# --- bounds ----------------------------------------------------------------------------------


class BoundsCheckError(ChunkrefError, IndexError):
    """A selection is out of the array's bounds."""


class InvalidSelectionError(ChunkrefError, IndexError):
    """A selection is malformed (index type, too many indices, array shapes that do not broadcast)."""


class SelectionTypeError(InvalidSelectionError, TypeError):
    """A selection part has a type numpy rejects with ``TypeError`` (e.g. float slice bounds)."""


# --- permissions -----------------------------------------------------------------------------


class ReadOnlyError(ChunkrefError, PermissionError):
    """A write was attempted on a read-only store, array or group."""


class SourceNotAllowedError(ChunkrefError, PermissionError):
    """A reference points at a source the opener did not authorize (names the prefix to allow)."""


# --- I/O -------------------------------------------------------------------------------------


class StoreError(ChunkrefError, OSError):
    """A store operation failed."""


class ShortReadError(StoreError):
    """A ranged read returned fewer (or more) bytes than requested."""


class TransientStoreError(StoreError):
    """A failure that may succeed on retry (timeouts, throttling, 5xx)."""


class SourceUnavailableError(StoreError):
    """A referenced source cannot be read (missing, unauthorized, unreachable)."""


class AccessDeniedError(SourceUnavailableError, PermissionError):
    """The storage backend refused access (HTTP 401/403, S3 AccessDenied, file permissions)."""


class MissingObjectError(StoreError):
    """A repository object named by a content id is not in the store (names the object)."""


__all__ = [name for name in dir() if name.endswith("Error")]
