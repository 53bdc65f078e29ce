"""Local servers for tests: an S3 server (moto) and a range-capable HTTP file server.

Both bind to 127.0.0.1 on a free port and run in daemon threads.  The pytest fixtures in
``conftest.py`` (``s3_server``, ``http_server``) start one of each per test session; use these
classes directly only for special set-ups.

:class:`RangeHTTPServer` serves a directory with correct ``Range`` support (206 with
``Content-Range``, suffix and open-ended ranges, 416 past the end, HEAD with ``Content-Length``)
and can be told to misbehave, to test that clients notice: ignore ``Range`` (answer 200 with the
whole file), send short bodies with consistent headers, shift the returned window, answer with
error statuses (e.g. 503 for the next N requests), or delay every response.  It records each
request and the peak number of requests in flight.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["HTTP_OPTIONS", "HTTPBehaviour", "RangeHTTPServer", "S3Server"]

# Options for fsspec's HTTPFileSystem in tests: no instance cache (an instance bound to a closed
# event loop fails), no listings cache (tests change the served tree).
HTTP_OPTIONS: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class HTTPBehaviour:
    """How :class:`RangeHTTPServer` answers (the defaults are a correct server).

    Attributes
    ----------
    ignore_range
        Answer ranged GETs with 200 and the whole file (like Python's ``http.server``).
    short_by
        Drop this many bytes from the end of every 206 body, with headers that agree (the
        server "meant" to send fewer bytes).
    shift
        Serve the window shifted by this many bytes (Content-Range still claims the request).
    statuses
        Status codes for the next requests, consumed one per request (e.g. ``[503, 503]``);
        a 503 carries ``Retry-After: 0``.
    delay
        Seconds to wait before answering each request.
    head_ok
        Answer HEAD requests (False: 405, forcing clients to fall back to GET).
    """

    ignore_range: bool = False
    short_by: int = 0
    shift: int = 0
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    head_ok: bool = True


class RangeHTTPServer:
    """A threaded static file server with byte-range support and switchable faults.

    Parameters
    ----------
    root
        Directory to serve.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.behaviour = HTTPBehaviour()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RangeHTTPServer:
        handler = _make_handler(self)
        httpd = _Server(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> RangeHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, relpath: str = "") -> str:
        """The URL of a path below the served directory."""
        return f"{self.base_url}/{relpath.lstrip('/')}"

    # -- state ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to correct behaviour; forget recorded requests and peaks."""
        with self._lock:
            self.behaviour = HTTPBehaviour()
            self.requests.clear()
            self.max_in_flight = self.in_flight

    @contextlib.contextmanager
    def misbehave(self, **changes: Any) -> Iterator[HTTPBehaviour]:
        """Change :class:`HTTPBehaviour` fields for the duration of a ``with`` block."""
        old = self.behaviour
        new = HTTPBehaviour(**{**old.__dict__, "statuses": list(old.statuses), **changes})
        self.behaviour = new
        try:
            yield new
        finally:
            self.behaviour = old

    def add_file(self, relpath: str, data: bytes) -> str:
        """Write ``data`` below the served directory; return its URL."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self.url(relpath)

    def new_dir(self) -> tuple[str, Path]:
        """A fresh, empty sub-directory: its URL and local path."""
        name = f"d{uuid.uuid4().hex[:12]}"
        path = self.root / name
        path.mkdir(parents=True)
        return self.url(name), path

    def count(self, method: str = "GET") -> int:
        """Requests recorded with the given method."""
        with self._lock:
            return sum(1 for m, _, _ in self.requests if m == method)

    def _next_status(self) -> int | None:
        with self._lock:
            if self.behaviour.statuses:
                return self.behaviour.statuses.pop(0)
        return None


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 drops simultaneous connections (the client then waits
    # ~1 s for a SYN retransmit), which would make concurrency tests flaky.
    request_queue_size = 128
    daemon_threads = True


def _make_handler(server: RangeHTTPServer) -> type[SimpleHTTPRequestHandler]:
    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(server.root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._serve(head=False)

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            self._serve(head=True)

        def _serve(self, head: bool) -> None:
            with server._lock:
                server.requests.append((self.command, self.path, self.headers.get("Range")))
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                b = server.behaviour
                if b.delay:
                    time.sleep(b.delay)
                status = server._next_status()
                if status is not None:
                    self._send_empty(status, {"Retry-After": "0"} if status == 503 else {})
                    return
                if head and not b.head_ok:
                    self._send_empty(HTTPStatus.METHOD_NOT_ALLOWED)
                    return
                path = self.translate_path(self.path)
                if os.path.isdir(path):
                    # Directory listings (used by fsspec's ls/find) from the stdlib handler.
                    if head:
                        super().do_HEAD()
                    else:
                        super().do_GET()
                    return
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    self._send_empty(HTTPStatus.NOT_FOUND)
                    return
                self._send_file(data, head, b)
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send_file(self, data: bytes, head: bool, b: HTTPBehaviour) -> None:
            size = len(data)
            rng = self.headers.get("Range")
            if rng is None or b.ignore_range or head:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Length", str(size))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                return
            m = _RANGE_RE.match(rng.strip())
            if not m or (not m.group(1) and not m.group(2)):
                self._send_empty(HTTPStatus.BAD_REQUEST)
                return
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) + 1 if m.group(2) else size
                end = min(end, size)
            else:
                start, end = max(0, size - int(m.group(2))), size
            if start >= size and not (size == 0 and not m.group(1)):
                self._send_empty(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"})
                return
            body = data[start + b.shift : end + b.shift]
            if b.short_by:
                body = body[: max(0, len(body) - b.short_by)]
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            last = start + len(body) - 1 if not b.shift else end - 1
            self.send_header("Content-Range", f"bytes {start}-{last}/{size}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(body)

    return Handler


class S3Server:
    """A moto S3 server on 127.0.0.1 (``moto.server.ThreadedMotoServer``, random free port).

    Attributes
    ----------
    endpoint_url
        ``http://127.0.0.1:<port>``.
    storage_options
        Options for ``s3fs`` / :class:`chunkref.storage.FsspecStore` (fake credentials, the
        endpoint, no instance cache, no botocore retries so failures surface quickly).
    """

    KEY = "testing"
    SECRET = "testing"
    REGION = "us-east-1"

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        # werkzeug logs every request to stderr otherwise.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> S3Server:
        self._srv.start()
        host, port = self._srv.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._srv.stop()

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "key": self.KEY,
            "secret": self.SECRET,
            "skip_instance_cache": True,
            # No region_name here: s3fs would send it as a LocationConstraint when creating a
            # bucket, which us-east-1 (moto's default) rejects.
            "client_kwargs": {"endpoint_url": self.endpoint_url},
            "config_kwargs": {"retries": {"max_attempts": 1}},
        }

    def filesystem(self) -> Any:
        """A fresh ``s3fs.S3FileSystem`` talking to this server."""
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name by default) and return its name."""
        name = name or f"test-{uuid.uuid4().hex[:16]}"
        self.filesystem().mkdir(name)
        return name

    def reset(self) -> None:
        """Delete every bucket and object."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass


def copy_tree(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy a directory tree (a helper for serving fixtures from a served directory)."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
