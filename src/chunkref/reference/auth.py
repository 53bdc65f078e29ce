"""Source authorization: which URLs a reference store may read.

A manifest is data someone else may have written; its references must not make the reader open
arbitrary local files or reach arbitrary hosts (fsspec's ReferenceFileSystem reads
``["/etc/passwd", 0, 4096]`` or ``http://169.254.169.254/...`` without question).  The rules:

* Local files in the folder holding the manifest file (and below) are allowed by default.
* Anything else must be under a prefix the opener passes in ``allow=[...]``.
* Matching is per path segment after normalisation: ``s3://bucket/prefix`` allows
  ``s3://bucket/prefix/x`` but not ``s3://bucket/prefix2/x``; protocol and host (with port) must
  be equal.  Local paths are compared after resolving symlinks and ``..`` (``os.path.realpath``),
  so a symlink inside an allowed folder cannot point outside it.
* Remote URLs with ``.`` or ``..`` segments (raw or percent-encoded) are refused outright: how a
  server resolves them is not ours to guess.
* Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, fc00::/7 incl. fd00::/8,
  IPv4 literals in decimal/hex/octal forms of them, ``metadata.google.internal``) are refused
  unless the allow-list names that very host.

Every check happens before any byte of the source is read; a refusal raises
:class:`~chunkref.errors.SourceNotAllowedError` naming the prefix to allow.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from chunkref.errors import InvalidArgumentError, SourceNotAllowedError
from chunkref.manifest.sources import is_local, local_path, location_dir, split_protocol

__all__ = ["Prefix", "SourcePolicy", "parse_prefix"]

_HTTP = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "metadata.azure.internal"})


@dataclass(frozen=True)
class Prefix:
    """A normalised URL prefix: protocol, host (``""`` when none) and path segments."""

    protocol: str
    host: str
    segments: tuple[str, ...]

    def contains(self, other: Prefix) -> bool:
        """Whether ``other`` is this prefix or lies below it (segment-wise)."""
        return (
            self.protocol == other.protocol
            and self.host == other.host
            and other.segments[: len(self.segments)] == self.segments
        )

    def __str__(self) -> str:
        path = "/".join(self.segments)
        if self.protocol == "file":
            return "/" + path + ("/" if path else "")
        host = self.host
        default = _DEFAULT_PORTS.get(self.protocol)
        if default is not None and host.endswith(f":{default}"):
            host = host[: -len(f":{default}")]
        return f"{self.protocol}://{host}/{path}{'/' if path else ''}"


def _ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    # inet_aton accepts the legacy forms resolvers also accept: 2852039166, 0xa9fea9fe, 0251.0376...
    if h and all(c in "0123456789abcdefxABCDEFX." for c in h):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            return None
    return None


def _is_forbidden_host(host: str) -> bool:
    if host.rstrip(".").lower() in _METADATA_HOSTS:
        return True
    ip = _ip_of(host)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return True
    return isinstance(ip, ipaddress.IPv6Address) and ip in ipaddress.IPv6Network("fc00::/7")


def _segments(path: str, url: str, *, allow_dots: bool = False) -> tuple[str, ...]:
    segs = tuple(s for s in path.split("/") if s != "")
    if not allow_dots:
        for s in segs:
            if unquote(s) in (".", "..") or "\\" in s:
                raise SourceNotAllowedError(f"source URL {url!r} has a {s!r} path segment: refused")
    return segs


def parse_prefix(url: str, *, resolve_local: bool = True) -> Prefix:
    """Normalise a source URL or an allow-list entry into a :class:`Prefix`.

    Local paths become absolute and (with ``resolve_local``) symlink-resolved.
    """
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError(f"URL prefixes are non-empty strings, got {url!r}")
    proto, rest = split_protocol(url)
    if is_local(url):
        try:
            path = local_path(url)
        except InvalidArgumentError as exc:
            raise SourceNotAllowedError(f"source URL {url!r} is not a local file URL: {exc}") from exc
        if path.startswith("//"):
            raise SourceNotAllowedError(f"source URL {url!r} names a remote host through file://: refused")
        path = os.path.expanduser(path)
        if not os.path.isabs(path):
            raise SourceNotAllowedError(f"source URL {url!r} is a relative path with no manifest location")
        path = os.path.realpath(path) if resolve_local else os.path.normpath(path)
        return Prefix("file", "", tuple(s for s in path.split(os.sep) if s))
    assert proto is not None
    if proto in _HTTP:
        parts = urlsplit(url)
        if parts.username is not None or parts.password is not None:
            raise SourceNotAllowedError(f"source URL {url!r} carries credentials in its host part: refused")
        host = (parts.hostname or "").lower()
        if not host:
            raise SourceNotAllowedError(f"source URL {url!r} has no host")
        try:
            port = parts.port or _DEFAULT_PORTS[proto]
        except ValueError as exc:
            raise SourceNotAllowedError(f"source URL {url!r} has a bad port: {exc}") from exc
        netloc = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        return Prefix(proto, netloc, _segments(parts.path, url))
    # Object stores and other fsspec protocols: the first segment is the bucket / container.
    segs = _segments(rest, url)
    if not segs:
        raise SourceNotAllowedError(f"source URL {url!r} has no bucket or path")
    return Prefix(proto, segs[0], segs[1:])


class SourcePolicy:
    """The set of source prefixes a reference store may read.

    Parameters
    ----------
    allow
        URL prefixes the opener authorizes (local folders, ``s3://bucket/prefix``, ``https://host/path``).
    location
        The manifest file's location: its folder is allowed by default when it is local.
    """

    def __init__(self, allow: Iterable[str] | None = None, location: str | None = None) -> None:
        if isinstance(allow, str):
            allow = [allow]
        self.prefixes: list[Prefix] = [parse_prefix(a) for a in (allow or ())]
        self.default: Prefix | None = None
        if location is not None and is_local(location):
            self.default = parse_prefix(location_dir(location))
            self.prefixes.append(self.default)

    def check(self, url: str, *, what: str = "") -> Prefix:
        """Return the normalised prefix of ``url`` if authorized, else raise.

        Raises
        ------
        SourceNotAllowedError
            Naming the URL, what referenced it, and the prefix to pass in ``allow=``.
        """
        target = parse_prefix(url)
        ctx = f" (referenced by {what})" if what else ""
        if target.host and _is_forbidden_host(target.host.rsplit(":", 1)[0]):
            if not any(p.host == target.host and p.contains(target) for p in self.prefixes if p is not self.default):
                raise SourceNotAllowedError(
                    f"source {url!r}{ctx} is a link-local / cloud metadata address: refused "
                    f"(allow exactly {str(Prefix(target.protocol, target.host, ()))!r} to read it anyway)"
                )
        for p in self.prefixes:
            if p.contains(target):
                return target
        suggestion = Prefix(target.protocol, target.host, target.segments[:-1])
        raise SourceNotAllowedError(
            f"source {url!r}{ctx} is not authorized; pass allow=[{str(suggestion)!r}] (or a parent "
            "prefix) to read it"
        )
