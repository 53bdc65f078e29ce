"""Codec registry: v3 names -> codec classes; parsing of codec JSON objects.

Lookup order for a name:

1. codecs registered with :func:`register_codec` (the built-ins register on import);
2. the entry point group ``chunkref.codecs`` (read once, on the first miss; an entry point
   named like the codec loads a :class:`~chunkref.zarr.codecs.base.Codec` subclass);
3. ``numcodecs.<id>`` for any codec numcodecs knows (its registry, which also loads
   numcodecs' own ``numcodecs.codecs`` entry points), through
   :class:`~chunkref.zarr.codecs.numcodecs_adapter.NumcodecsCodec`.

Anything else raises :class:`~chunkref.errors.UnknownCodecError` naming the codec.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from chunkref.errors import CodecError, UnknownCodecError
from chunkref.zarr.codecs.base import Codec

__all__ = [
    "ENTRY_POINT_GROUP",
    "codec_from_json",
    "get_codec_class",
    "register_codec",
    "registered_codecs",
]

ENTRY_POINT_GROUP = "chunkref.codecs"

_registry: dict[str, type[Codec]] = {}
_entry_points: dict[str, EntryPoint] | None = None
_lock = threading.Lock()


def register_codec(cls: type[Codec], name: str | None = None) -> type[Codec]:
    """Register a codec class under ``name`` (default: ``cls.name``) and its ``aliases``.

    Usable as a class decorator.  A later registration of the same name replaces the earlier.
    """
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise CodecError(f"register_codec expects a Codec subclass, got {cls!r}")
    key = name or cls.name
    if not key:
        raise CodecError(f"codec class {cls.__name__} has no name")
    with _lock:
        _registry[key] = cls
        if name is None:
            for alias in cls.aliases:
                _registry[alias] = cls
    return cls


def registered_codecs() -> dict[str, type[Codec]]:
    """A snapshot of the explicitly registered names (entry points loaded so far included)."""
    with _lock:
        return dict(_registry)


def _discover() -> dict[str, EntryPoint]:
    global _entry_points
    if _entry_points is None:
        found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        with _lock:
            if _entry_points is None:
                _entry_points = found
    return _entry_points


def _reset_entry_points() -> None:
    """Forget discovered entry points (tests; after installing a plugin at run time)."""
    global _entry_points
    with _lock:
        _entry_points = None


def get_codec_class(name: str) -> type[Codec]:
    """The codec class for a v3 codec ``name``.

    Raises
    ------
    UnknownCodecError
        If no codec of that name is registered, provided by an entry point or by numcodecs.
    """
    cls = _registry.get(name)
    if cls is not None:
        return cls
    ep = _discover().get(name)
    if ep is not None:
        try:
            loaded = ep.load()
        except Exception as exc:
            raise UnknownCodecError(
                f"codec {name!r}: entry point {ep.value!r} in group {ENTRY_POINT_GROUP!r} failed to load: {exc}"
            ) from exc
        if not (isinstance(loaded, type) and issubclass(loaded, Codec)):
            raise UnknownCodecError(
                f"codec {name!r}: entry point {ep.value!r} is not a chunkref Codec subclass"
            )
        register_codec(loaded, name)
        return loaded
    if name.startswith("numcodecs."):
        from chunkref.zarr.codecs.numcodecs_adapter import numcodecs_codec_class

        return numcodecs_codec_class(name)
    raise UnknownCodecError(f"unknown codec {name!r}")


def codec_from_json(obj: Any) -> Codec:
    """Build a codec from a v3 codec JSON value.

    Accepts ``{"name": ..., "configuration": {...}}`` (configuration optional), the 3.1
    short-hand bare string ``"name"``, and ``"must_understand"`` inside the object (a codec that
    is not understood is an error either way: skipping it would return wrong data).
    """
    if isinstance(obj, str):
        return get_codec_class(obj).from_json(None)
    if not isinstance(obj, Mapping):
        raise CodecError(f"a codec must be a JSON object or a name string, got {obj!r}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise CodecError(f"codec object without a valid 'name': {obj!r}")
    extra = sorted(set(obj) - {"name", "configuration", "must_understand"})
    if extra:
        raise CodecError(f"codec {name!r}: unknown field(s) {extra}")
    mu = obj.get("must_understand", True)
    if not isinstance(mu, bool):
        raise CodecError(f"codec {name!r}: must_understand must be a boolean, got {mu!r}")
    try:
        cls = get_codec_class(name)
    except UnknownCodecError as exc:
        if mu is False:
            raise UnknownCodecError(
                f"{exc} (marked must_understand: false, but decoding without it would return wrong data)"
            ) from exc
        raise
    return cls.from_json(obj.get("configuration"))
