"""Chunk key encodings: grid coordinates <-> store keys (relative to the array's prefix).

Two encodings exist (Zarr v3 core ``chunk-key-encodings``):

* ``default`` (v3): ``"c"`` then, per dimension, separator + decimal index: ``c/1/23/45``
  (separator ``"/"`` by default, or ``"."``). A 0-d array's only chunk is ``"c"``.
* ``v2``: the indices joined by the separator (``"."`` by default, or ``"/"``): ``1.23.45``.
  A 0-d array's only chunk is ``"0"``.

A v2 array's ``dimension_separator`` maps onto the ``v2`` encoding
(:meth:`ChunkKeyEncoding.from_dimension_separator`).

Decoding is strict: only canonical keys (decimal indices without sign or leading zeros, the
right prefix and separator, the expected number of dimensions when known) decode; anything
else raises :class:`~chunkref.errors.InvalidKeyError` naming the key, so that stray objects
under an array's prefix are never mistaken for chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chunkref.errors import InvalidArgumentError, InvalidKeyError, MetadataError

_NAMES = ("default", "v2")
_SEPARATORS = ("/", ".")
_DEFAULT_SEPARATOR = {"default": "/", "v2": "."}


@dataclass(frozen=True)
class ChunkKeyEncoding:
    """How chunk grid coordinates become store keys.

    Parameters
    ----------
    name
        ``"default"`` (v3 ``c/...`` keys) or ``"v2"`` (bare joined indices).
    separator
        ``"/"`` or ``"."``; ``None`` picks the encoding's default (``"/"`` for ``default``,
        ``"."`` for ``v2``).
    """

    name: str = "default"
    separator: str | None = None

    def __post_init__(self) -> None:
        if self.name not in _NAMES:
            raise MetadataError(f"chunk_key_encoding.name must be one of {list(_NAMES)}, got {self.name!r}")
        sep = _DEFAULT_SEPARATOR[self.name] if self.separator is None else self.separator
        if sep not in _SEPARATORS:
            raise MetadataError(
                f"chunk_key_encoding.configuration.separator must be '/' or '.', got {self.separator!r}"
            )
        object.__setattr__(self, "separator", sep)

    # --- constructors ---------------------------------------------------------------------------

    @classmethod
    def from_dimension_separator(cls, dimension_separator: str | None) -> ChunkKeyEncoding:
        """The encoding of a v2 array with this ``dimension_separator`` (absent means ``"."``)."""
        if dimension_separator is None:
            return cls("v2", ".")
        if dimension_separator not in _SEPARATORS:
            raise MetadataError(f"dimension_separator must be '.' or '/', got {dimension_separator!r}")
        return cls("v2", dimension_separator)

    # --- properties -----------------------------------------------------------------------------

    @property
    def dimension_separator(self) -> str:
        """The v2 ``dimension_separator`` value equivalent to this encoding (``v2`` only)."""
        if self.name != "v2":
            raise InvalidArgumentError(f"the {self.name!r} chunk key encoding has no v2 dimension_separator")
        return str(self.separator)

    # --- encoding -------------------------------------------------------------------------------

    def encode(self, coords: Sequence[int]) -> str:
        """Key of the chunk at grid ``coords`` (e.g. ``"c/1/2"``, ``"c"``, ``"1.2"``, ``"0"``)."""
        sep = str(self.separator)
        parts = [str(int(c)) for c in coords]
        if any(p.startswith("-") for p in parts):
            raise InvalidArgumentError(f"chunk coordinates must be non-negative, got {tuple(coords)}")
        if self.name == "default":
            return "c" + "".join(sep + p for p in parts)
        return sep.join(parts) if parts else "0"

    def encode_many(self, coords: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
        """Keys of many chunks at once; ``coords`` has shape ``(n, ndim)``.

        Per axis, the decimal strings of ``0..max`` are made once and gathered with numpy
        fancy indexing, then one ``str.join`` per key glues the columns: about 0.1 s per
        million 3-d keys, several times faster than formatting each key.
        """
        arr = np.asarray(coords)
        if arr.ndim != 2:
            raise InvalidArgumentError(f"coords must have shape (n, ndim), got shape {arr.shape}")
        n, ndim = arr.shape
        if n == 0:
            return []
        if arr.dtype.kind not in "iu":
            raise InvalidArgumentError(f"coords must be integers, got dtype {arr.dtype}")
        sep = str(self.separator)
        if ndim == 0:
            return ["c" if self.name == "default" else "0"] * n
        if n <= 4:
            # A handful of keys (single-chunk reads): formatting each beats the column setup.
            return [self.encode(row) for row in arr.tolist()]
        if arr.dtype.kind == "i" and int(arr.min()) < 0:
            raise InvalidArgumentError("chunk coordinates must be non-negative")
        columns: list[list[str]] = [["c"] * n] if self.name == "default" else []
        for axis in range(ndim):
            col = arr[:, axis]
            top = int(col.max())
            if top < 2 * n + 1024:
                # Dense table of every index up to the largest: one small list, one gather.
                table = np.array(list(map(str, range(top + 1))), dtype=object)
                columns.append(table[col].tolist())
            else:
                # Sparse huge indices: a table over the distinct values only.
                uniq, inverse = np.unique(col, return_inverse=True)
                table = np.array(list(map(str, uniq.tolist())), dtype=object)
                columns.append(table[inverse].tolist())
        return list(map(sep.join, zip(*columns)))

    # --- decoding -------------------------------------------------------------------------------

    def decode(self, key: str, ndim: int | None = None) -> tuple[int, ...]:
        """Grid coordinates of the chunk ``key`` (strict).

        Parameters
        ----------
        key
            A key relative to the array's prefix.
        ndim
            The array's rank, when known. Needed to tell the v2 0-d key ``"0"`` from the 1-d
            key ``"0"``, and checked against the number of indices in the key.

        Raises
        ------
        InvalidKeyError
            ``key`` is not a canonical chunk key of this encoding (the message names the key).
        """
        if not isinstance(key, str):
            raise InvalidKeyError(f"chunk key must be a string, got {key!r}")
        sep = str(self.separator)
        if self.name == "default":
            if key == "c":
                parts: list[str] = []
            elif key.startswith("c" + sep):
                parts = key[2:].split(sep)
            else:
                raise InvalidKeyError(
                    f"{key!r} is not a chunk key of the 'default' encoding (expected 'c' or 'c{sep}<i>{sep}...')"
                )
        else:
            if ndim == 0:
                if key != "0":
                    raise InvalidKeyError(f"{key!r} is not the chunk key of a 0-d array (expected '0')")
                return ()
            parts = key.split(sep)
        for p in parts:
            # Canonical decimal only: no sign, no leading zeros, no whitespace, ASCII digits.
            if not (p.isascii() and p.isdigit()) or (len(p) > 1 and p[0] == "0"):
                raise InvalidKeyError(f"{key!r} is not a chunk key of the {self.name!r} encoding (bad index {p!r})")
        coords = tuple(int(p) for p in parts)
        if ndim is not None and len(coords) != ndim:
            raise InvalidKeyError(f"chunk key {key!r} has {len(coords)} indices, the array has {ndim} dimensions")
        return coords

    def decode_many(self, keys: Iterable[str], ndim: int) -> np.ndarray:
        """Grid coordinates of many keys, shape ``(n, ndim)`` int64 (strict, like :meth:`decode`)."""
        rows = [self.decode(k, ndim) for k in keys]
        if not rows:
            return np.zeros((0, ndim), dtype=np.int64)
        return np.array(rows, dtype=np.int64).reshape(len(rows), ndim)

    def is_chunk_key(self, key: str, ndim: int | None = None) -> bool:
        """Whether ``key`` decodes as a chunk key of this encoding."""
        try:
            self.decode(key, ndim)
        except InvalidKeyError:
            return False
        return True

    # --- JSON -----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The v3 ``chunk_key_encoding`` object (always with its configuration, as zarr-python)."""
        return {"name": self.name, "configuration": {"separator": self.separator}}


def parse_chunk_key_encoding(meta: Any) -> ChunkKeyEncoding:
    """Build an encoding from a v3 ``chunk_key_encoding`` value (strict).

    Accepts the full ``{"name", "configuration": {"separator"}}`` form, the object without
    ``configuration`` (tensorstore writes ``{"name": "default"}``) and the 3.1 short-hand bare
    string (``"default"``, ``"v2"``). ``must_understand: false`` is refused: the spec does not
    allow ignoring a chunk key encoding.

    Raises
    ------
    MetadataError
        Naming the ``chunk_key_encoding`` field and the bad value.
    """
    if isinstance(meta, str):
        if meta not in _NAMES:
            raise MetadataError(f"chunk_key_encoding {meta!r} is not supported (known: {list(_NAMES)})")
        return ChunkKeyEncoding(meta)
    if not isinstance(meta, dict) or "name" not in meta:
        raise MetadataError(f"chunk_key_encoding must be an object with a name or a name string, got {meta!r}")
    extra = set(meta) - {"name", "configuration", "must_understand"}
    if extra:
        raise MetadataError(f"chunk_key_encoding has unknown fields {sorted(extra)}")
    if meta.get("must_understand", True) is not True:
        raise MetadataError("chunk_key_encoding.must_understand may not be false")
    name = meta["name"]
    if name not in _NAMES:
        raise MetadataError(f"chunk_key_encoding {name!r} is not supported (known: {list(_NAMES)})")
    conf = meta.get("configuration")
    if conf is None:
        return ChunkKeyEncoding(name)
    if not isinstance(conf, dict):
        raise MetadataError(f"chunk_key_encoding.configuration must be an object, got {conf!r}")
    extra = set(conf) - {"separator"}
    if extra:
        raise MetadataError(f"chunk_key_encoding.configuration has unknown fields {sorted(extra)}")
    return ChunkKeyEncoding(name, conf.get("separator"))


__all__ = ["ChunkKeyEncoding", "parse_chunk_key_encoding"]
