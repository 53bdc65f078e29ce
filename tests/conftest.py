"""Shared pytest fixtures.

Servers (all on 127.0.0.1, random free ports, one per test session, started on first use)
-------------------------------------------------------------------------------------------
``s3_server``
    A moto S3 server (:class:`tests.servers.S3Server`).  Use ``s3_server.endpoint_url``,
    ``s3_server.storage_options`` (fake credentials + endpoint, for ``s3fs`` and
    ``FsspecStore(url, storage_options=...)``), ``s3_server.make_bucket()`` (a fresh uniquely
    named bucket; returns its name) and ``s3_server.filesystem()`` (a fresh ``s3fs`` instance).
    Buckets are not wiped between tests: make your own bucket per test.  The fixture also sets
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_DEFAULT_REGION`` to fake values for the
    session so no real credentials are ever looked up.  Moto answers ~150 requests/s: keep
    object counts small.

``http_server``
    A range-capable static file server (:class:`tests.servers.RangeHTTPServer`) over a session
    temporary directory.  ``http_server.base_url``, ``http_server.root`` (a ``Path``),
    ``http_server.url(relpath)``, ``http_server.add_file(relpath, data) -> url``,
    ``http_server.new_dir() -> (url, path)``.  It is reset (correct behaviour, empty request
    log) before each test.  Make it misbehave with
    ``with http_server.misbehave(ignore_range=True | short_by=n | shift=n | statuses=[503] |
    delay=s | head_ok=False): ...``; inspect ``http_server.requests`` (method, path, Range),
    ``http_server.count("GET")`` and ``http_server.max_in_flight``.
    Open it with ``FsspecStore(url, storage_options=HTTP_OPTIONS)`` (``from servers import
    HTTP_OPTIONS``: no listing or instance cache).

Helpers are importable from test modules as ``from servers import RangeHTTPServer, S3Server,
HTTP_OPTIONS`` (``tests/`` is on ``sys.path``).

Stores
------
``store_factory`` / conformance tests live in ``tests/test_storage_conformance.py``.

Hermeticity: ``FSSPEC_*`` environment variables are removed for the session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

# Register hdf5plugin's filters with h5py's HDF5 before anything imports netCDF4: netCDF4 points
# HDF5_PLUGIN_PATH at its own plugin builds, and an HDF5 that later loads those (instead of
# hdf5plugin's) fails in the filter's set-local callback, depending on test order.
import hdf5plugin  # noqa: F401, E402  (imported for its side effect)
import pytest

# tests/ is on sys.path (rootdir conftest, no package): helpers import as ``servers``.
from servers import HTTP_OPTIONS, RangeHTTPServer, S3Server  # noqa: F401 - re-exported for tests


@pytest.fixture(scope="session", autouse=True)
def _hermetic_fsspec() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("FSSPEC_")}
    for k in saved:
        del os.environ[k]
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server for the whole session (see the module docstring)."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    env = {
        "AWS_ACCESS_KEY_ID": S3Server.KEY,
        "AWS_SECRET_ACCESS_KEY": S3Server.SECRET,
        "AWS_DEFAULT_REGION": S3Server.REGION,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def _http_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RangeHTTPServer]:
    pytest.importorskip("aiohttp")
    root = tmp_path_factory.mktemp("http-root")
    with RangeHTTPServer(root) as server:
        yield server


@pytest.fixture
def http_server(_http_server_session: RangeHTTPServer) -> Iterator[RangeHTTPServer]:
    """The session's HTTP range server, reset to correct behaviour for this test."""
    _http_server_session.reset()
    yield _http_server_session
    _http_server_session.reset()
