"""libzstd through ctypes, with one compression and one decompression context per thread.

numcodecs' zstd functions create and free a context on every call (~9 µs, more than decoding
an 8 KiB chunk).  The libzstd that numcodecs bundles exports the context API, so we bind
``ZSTD_decompressDCtx`` / ``ZSTD_compressCCtx`` directly (ctypes releases the GIL) and keep one
context per thread.  Output is identical to numcodecs'.  When the extension does not export
libzstd, :func:`zstd_library` returns None and callers use numcodecs.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np


def address(buf: Any) -> int:
    """Memory address of the first byte of a contiguous buffer (kept alive by the caller)."""
    return np.frombuffer(buf, dtype=np.uint8).__array_interface__["data"][0]


class ZstdLibrary:
    """``ctypes`` binding of the libzstd inside numcodecs, with per-thread contexts."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, sz = ctypes.c_void_p, ctypes.c_size_t
        lib.ZSTD_createDCtx.restype = vp
        lib.ZSTD_createCCtx.restype = vp
        lib.ZSTD_freeDCtx.argtypes = [vp]
        lib.ZSTD_freeCCtx.argtypes = [vp]
        lib.ZSTD_decompressDCtx.argtypes = [vp, vp, sz, vp, sz]
        lib.ZSTD_decompressDCtx.restype = sz
        lib.ZSTD_compressCCtx.argtypes = [vp, vp, sz, vp, sz, ctypes.c_int]
        lib.ZSTD_compressCCtx.restype = sz
        lib.ZSTD_compressBound.argtypes = [sz]
        lib.ZSTD_compressBound.restype = sz
        lib.ZSTD_isError.argtypes = [sz]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_getErrorName.argtypes = [sz]
        lib.ZSTD_getErrorName.restype = ctypes.c_char_p
        self.lib = lib
        self.decompress = lib.ZSTD_decompressDCtx
        self.compress = lib.ZSTD_compressCCtx
        self._local = threading.local()

    def error_name(self, code: int) -> str:
        if self.lib.ZSTD_isError(code):
            return (self.lib.ZSTD_getErrorName(code) or b"unknown error").decode("ascii", "replace")
        return f"decoded {code} bytes"

    def contexts(self) -> _ThreadContexts:
        """This thread's contexts and buffers (created on first use, freed with the thread)."""
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = _ThreadContexts(self)
            self._local.ctx = ctx
        return ctx


class _ThreadContexts:
    """One decompression and one compression context, and scratch buffers, for one thread."""

    def __init__(self, zstd: ZstdLibrary) -> None:
        self._lib = zstd.lib
        self.dctx = zstd.lib.ZSTD_createDCtx()
        self.cctx = zstd.lib.ZSTD_createCCtx()
        if not self.dctx or not self.cctx:
            raise MemoryError("libzstd could not allocate a context")
        self._buffers: dict[tuple[str, int], tuple[np.ndarray, int]] = {}

    def buffer(self, kind: str, nbytes: int) -> tuple[np.ndarray, int]:
        """A reusable uint8 buffer of ``nbytes`` and its address."""
        hit = self._buffers.get((kind, nbytes))
        if hit is None:
            buf = np.empty(max(1, nbytes), dtype=np.uint8)
            hit = (buf, buf.__array_interface__["data"][0])
            self._buffers[(kind, nbytes)] = hit
        return hit

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        if lib is not None:
            if getattr(self, "dctx", None):
                lib.ZSTD_freeDCtx(self.dctx)
            if getattr(self, "cctx", None):
                lib.ZSTD_freeCCtx(self.cctx)


def _load_zstd() -> ZstdLibrary | None:
    try:
        import numcodecs.zstd

        return ZstdLibrary(ctypes.CDLL(numcodecs.zstd.__file__))
    except (OSError, AttributeError, ImportError):
        return None


_ZSTD = _load_zstd()


def zstd_library() -> ZstdLibrary | None:
    """The ctypes zstd binding, or None when numcodecs' extension does not export libzstd."""
    return _ZSTD
