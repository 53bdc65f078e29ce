"""Content ids: CIDv1 of a chunk's stored bytes (multiformats).

Binary form: ``varint(1) varint(codec) varint(hash code) varint(digest length) digest``; for the
default (``raw`` codec 0x55, ``sha2-256`` 0x12, 32-byte digest) that is ``01 55 12 20`` + digest,
36 bytes (:data:`chunkref.manifest.table.CID_WIDTH`).  String form: multibase ``b`` + RFC 4648
base32, lower case, no padding (``bafkrei...``).

Hash functions: ``sha2-256`` (hashlib) always; ``blake3`` (multihash 0x1e, 32-byte output) when
the optional ``blake3`` package is installed.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from chunkref.errors import InvalidArgumentError

CIDV1 = 0x01
RAW = 0x55
SHA2_256 = 0x12
BLAKE3 = 0x1E

_HASH_CODES = {"sha2-256": SHA2_256, "blake3": BLAKE3}


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _blake3() -> Callable[[bytes], bytes] | None:
    try:
        import blake3
    except ImportError:
        return None
    return lambda data: blake3.blake3(data).digest()


def hash_function(code: int) -> Callable[[bytes], bytes] | None:
    """The digest function of a multihash code, or None when it is unknown/unavailable."""
    if code == SHA2_256:
        return _sha256
    if code == BLAKE3:
        return _blake3()
    return None


def encode_varint(n: int) -> bytes:
    """Unsigned LEB128."""
    if n < 0:
        raise InvalidArgumentError(f"varint must be non-negative, got {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode an unsigned LEB128 at ``pos``; return ``(value, next position)``."""
    value = shift = 0
    for i in range(pos, min(len(data), pos + 9)):
        b = data[i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i + 1
        shift += 7
    raise InvalidArgumentError(f"truncated or overlong varint in CID bytes {data.hex()}")


def compute_cid(data: bytes, hash: str = "sha2-256", codec: int = RAW) -> bytes:
    """Binary CIDv1 of ``data``.

    Raises
    ------
    InvalidArgumentError
        For an unknown hash name, or ``blake3`` without the package installed.
    """
    code = _HASH_CODES.get(hash)
    if code is None:
        raise InvalidArgumentError(f"unknown content-id hash {hash!r}; known: {sorted(_HASH_CODES)}")
    fn = hash_function(code)
    if fn is None:
        raise InvalidArgumentError(f"content-id hash {hash!r} needs the optional package {hash!r}")
    digest = fn(bytes(data))
    return encode_varint(CIDV1) + encode_varint(codec) + encode_varint(code) + encode_varint(len(digest)) + digest


def parse_cid(cid: bytes | str) -> tuple[int, int, int, bytes]:
    """``(version, codec, hash code, digest)`` of a binary or ``b``-base32 string CIDv1."""
    if isinstance(cid, str):
        cid = cid_from_string(cid)
    cid = bytes(cid)
    version, p = decode_varint(cid, 0)
    if version != CIDV1:
        raise InvalidArgumentError(f"not a CIDv1: version {version}")
    codec, p = decode_varint(cid, p)
    code, p = decode_varint(cid, p)
    size, p = decode_varint(cid, p)
    digest = cid[p:]
    if len(digest) != size:
        raise InvalidArgumentError(f"CID digest has {len(digest)} bytes, its header says {size}")
    return version, codec, code, digest


def cid_to_string(cid: bytes) -> str:
    """Multibase ``b`` (base32 lower, no padding) string of a binary CID."""
    return "b" + base64.b32encode(bytes(cid)).decode("ascii").lower().rstrip("=")


def cid_from_string(text: str) -> bytes:
    """Binary CID of a multibase ``b`` string."""
    if not text.startswith("b"):
        raise InvalidArgumentError(f"only base32 ('b') CID strings are supported, got {text[:8]!r}...")
    body = text[1:].upper()
    try:
        return base64.b32decode(body + "=" * (-len(body) % 8))
    except (ValueError, base64.binascii.Error) as exc:
        raise InvalidArgumentError(f"invalid base32 CID {text!r}: {exc}") from exc


def verify_cid(cid: bytes, data: bytes) -> bool | None:
    """Whether ``data`` matches ``cid``; None when the CID's hash function is not available."""
    _, _, code, digest = parse_cid(cid)
    fn = hash_function(code)
    if fn is None:
        return None
    return fn(bytes(data)) == digest


__all__ = [
    "BLAKE3",
    "RAW",
    "SHA2_256",
    "cid_from_string",
    "cid_to_string",
    "compute_cid",
    "parse_cid",
    "verify_cid",
]
