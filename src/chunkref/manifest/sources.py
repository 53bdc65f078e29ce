"""Sources: the files a manifest's chunk references point into, and URL handling for them.

A :class:`Source` records the URL of a referenced file and, when the scanner knew them, its size,
modification time and ETag at scan time (so a reader can detect that a file changed under its
references).  URLs are stored as written by the scanner; relative ones resolve against the
manifest's own location (:func:`resolve_url`), and ``rename`` maps relocate whole prefixes at
open time (:func:`apply_rename`).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from chunkref.errors import InvalidArgumentError


@dataclass(frozen=True, slots=True)
class Source:
    """One referenced file.

    Attributes
    ----------
    url
        Where the file is: ``s3://bucket/key``, ``https://host/path``, ``file:///abs/path``, an
        absolute local path, or a path relative to the manifest's location.
    size, mtime, etag
        The file's size in bytes, modification time (POSIX seconds) and ETag when scanned, if known.
    """

    url: str
    size: int | None = None
    mtime: float | None = None
    etag: str | None = None

    def to_json(self) -> dict:
        out: dict = {"url": self.url}
        if self.size is not None:
            out["size"] = self.size
        if self.mtime is not None:
            out["mtime"] = self.mtime
        if self.etag is not None:
            out["etag"] = self.etag
        return out


def split_protocol(url: str) -> tuple[str | None, str]:
    """``("s3", "bucket/key")`` for ``s3://bucket/key``; ``(None, path)`` when there is no protocol.

    Windows drive letters (``C:\\x``) are not protocols.
    """
    head, sep, rest = url.partition("://")
    if sep and head and len(head) > 1 and all(c.isalnum() or c in "+-." for c in head):
        return head.lower(), rest
    return None, url


def is_local(url: str) -> bool:
    """Whether ``url`` names a local file (no protocol, or ``file://`` / ``local://``)."""
    proto, _ = split_protocol(url)
    return proto in (None, "file", "local")


def local_path(url: str) -> str:
    """The filesystem path of a local URL (``file:///x`` -> ``/x``)."""
    proto, rest = split_protocol(url)
    if proto is None:
        return url
    if proto in ("file", "local"):
        # file://host/path is not a local file; only the empty host (file:///path) is.
        if rest.startswith("/"):
            return rest
        if rest.startswith("localhost/"):
            return rest[len("localhost") :]
        return "/" + rest if not rest.partition("/")[0] else "//" + rest
    raise InvalidArgumentError(f"{url!r} is not a local path")


def is_relative(url: str) -> bool:
    """Whether ``url`` is a relative path (no protocol, not absolute)."""
    proto, rest = split_protocol(url)
    return proto is None and not os.path.isabs(rest) and not rest.startswith("~")


def location_dir(location: str) -> str:
    """The folder (URL prefix) holding a manifest at ``location``, with a trailing ``/``."""
    proto, rest = split_protocol(location)
    if proto is None or proto in ("file", "local"):
        path = os.path.abspath(local_path(location))
        return os.path.dirname(path).rstrip("/") + "/"
    base = rest.rsplit("/", 1)[0] if "/" in rest else rest
    return f"{proto}://{base}/"


def resolve_url(url: str, location: str | None) -> str:
    """Resolve a relative source URL against the manifest's location; others pass through."""
    if not is_relative(url):
        return url
    if location is None:
        # Relative to the working directory: still a local path, authorised like any other.
        return os.path.abspath(url)
    base = location_dir(location)
    proto, rest = split_protocol(base)
    if proto is None:
        return os.path.normpath(os.path.join(base, url))
    joined = posixpath.normpath(posixpath.join(rest, url))
    return f"{proto}://{joined}"


def apply_rename(url: str, rename: Mapping[str, str] | None) -> str:
    """Replace the longest matching prefix of ``url`` from ``rename`` (segment-aware)."""
    if not rename:
        return url
    best = None
    for old in rename:
        if url == old or url.startswith(old if old.endswith("/") else old + "/"):
            if best is None or len(old) > len(best):
                best = old
    if best is None:
        return url
    return rename[best] + url[len(best) :]


def url_host(url: str) -> str | None:
    """Host part of a remote URL (lower case), or None."""
    proto, _ = split_protocol(url)
    if proto is None or proto in ("file", "local"):
        return None
    return urlsplit(url).hostname
