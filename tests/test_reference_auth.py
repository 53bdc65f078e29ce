"""Source authorization: refusals happen before any I/O and name the prefix to allow."""

from __future__ import annotations

import os

import fsspec
import numpy as np
import pytest

from chunkref.errors import ManifestError, SourceNotAllowedError
from chunkref.manifest import ChunkTable, Manifest
from chunkref.manifest.kerchunk import from_kerchunk
from chunkref.reference import ReferenceStore, SourcePolicy
from chunkref.reference.auth import parse_prefix
from servers import HTTP_OPTIONS

DOC = {
    "zarr.json": {
        "zarr_format": 3, "node_type": "array", "shape": [4], "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4]}},
        "chunk_key_encoding": {"name": "default"}, "fill_value": 0,
        "codecs": [{"name": "bytes"}], "attributes": {},
    }
}


def _one_ref(url, location=None):
    m = Manifest(location=location)
    t = ChunkTable.empty((1,))
    t.set_ref((0,), m.add_source(url), 0, 4)
    m.add_array("a", DOC, t)
    return m


@pytest.fixture
def no_io(monkeypatch):
    """Fail the test if any filesystem is created or any file opened through fsspec."""

    def boom(*a, **k):
        raise AssertionError(f"I/O attempted: fsspec.filesystem{a}")

    monkeypatch.setattr(fsspec, "filesystem", boom)
    monkeypatch.setattr(fsspec, "open", boom)


@pytest.mark.parametrize(
    "url",
    [
        "/etc/passwd",
        "file:///etc/hostname",
        "file://evilhost/share/x",
        "~/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/latest",
        "http://0xa9fea9fe/latest",
        "http://[fe80::1]/x",
        "http://[fd00:ec2::254]/x",
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://other.example.com/data.nc",
        "s3://bucket/prefix2/x.nc",
        "s3://bucket/prefix/../secret/x.nc",
        "https://data.example.com/pub/%2e%2e/private/x",
        "http://data.example.com@evil.example.com/pub/x",
    ],
)
def test_hostile_sources_refused_before_io(tmp_path, no_io, url):
    m = _one_ref(url, location=str(tmp_path / "refs.json"))
    with pytest.raises(SourceNotAllowedError) as info:
        ReferenceStore(m, allow=["s3://bucket/prefix", "https://data.example.com/pub"])
    assert url.split("://")[-1].split("/")[0].split("@")[-1] in str(info.value) or "refused" in str(info.value)


def test_refusal_names_prefix_to_allow(tmp_path, no_io):
    with pytest.raises(SourceNotAllowedError, match=r"allow=\['s3://bucket/prefix2/'\]"):
        ReferenceStore(_one_ref("s3://bucket/prefix2/x.nc"), allow=["s3://bucket/prefix"])
    with pytest.raises(SourceNotAllowedError, match=r"array 'a' chunk \(0,\)"):
        ReferenceStore(_one_ref("/etc/passwd"))


def test_segment_matching():
    pol = SourcePolicy(["s3://bucket/prefix", "https://h.example/a/b/", "gs://b2"])
    pol.check("s3://bucket/prefix/x")
    pol.check("s3://bucket/prefix/deeper/x")
    pol.check("https://h.example:443/a/b/c")
    pol.check("gs://b2/anything")
    for bad in ["s3://bucket/prefix2/x", "s3://bucket/pre", "s3://bucket2/prefix/x", "http://h.example/a/b/c",
                "https://h.example/a/bc", "https://h.example:8443/a/b/c", "gs://b22/x", "s3a://bucket/prefix/x"]:
        with pytest.raises(SourceNotAllowedError):
            pol.check(bad)


def test_local_default_is_manifest_folder(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f.bin").write_bytes(b"abcd")
    (tmp_path / "in-other").mkdir()
    (tmp_path / "in-other" / "f.bin").write_bytes(b"abcd")
    loc = str(tmp_path / "in" / "refs.json")
    assert ReferenceStore(_one_ref(str(tmp_path / "in" / "f.bin"), loc)).get("a/c/0") == b"abcd"
    assert ReferenceStore(_one_ref("f.bin", loc)).get("a/c/0") == b"abcd"
    # a sibling folder sharing the name prefix is not inside
    with pytest.raises(SourceNotAllowedError):
        ReferenceStore(_one_ref(str(tmp_path / "in-other" / "f.bin"), loc))
    with pytest.raises(SourceNotAllowedError):
        ReferenceStore(_one_ref("../in-other/f.bin", loc))
    # ... unless allowed
    s = ReferenceStore(_one_ref(str(tmp_path / "in-other" / "f.bin"), loc), allow=[str(tmp_path / "in-other")])
    assert s.get("a/c/0") == b"abcd"
    # without a location nothing local is allowed by default
    with pytest.raises(SourceNotAllowedError):
        ReferenceStore(_one_ref(str(tmp_path / "in" / "f.bin")))


def test_symlink_escape_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"SECRET")
    (tmp_path / "pub").mkdir()
    os.symlink(tmp_path / "secret.bin", tmp_path / "pub" / "link.bin")
    os.symlink(tmp_path, tmp_path / "pub" / "up")
    loc = str(tmp_path / "pub" / "refs.json")
    for url in (str(tmp_path / "pub" / "link.bin"), "link.bin", "up/secret.bin", f"file://{tmp_path}/pub/link.bin"):
        with pytest.raises(SourceNotAllowedError, match="not authorized"):
            ReferenceStore(_one_ref(url, loc))
    # allowed symlinked folder: the resolved target must be allowed, not the link name
    with pytest.raises(SourceNotAllowedError):
        ReferenceStore(_one_ref(str(tmp_path / "pub" / "link.bin")), allow=[str(tmp_path / "pub")])
    s = ReferenceStore(_one_ref(str(tmp_path / "pub" / "link.bin")), allow=[str(tmp_path)])
    assert s.get("a/c/0") == b"SECR"


def test_metadata_host_needs_exact_allow():
    pol = SourcePolicy(["http://169.254.169.254/latest"])
    pol.check("http://169.254.169.254/latest/x")
    with pytest.raises(SourceNotAllowedError):
        pol.check("http://169.254.169.254/other")


@pytest.mark.network
def test_http_refusal_makes_no_request(http_server):
    url = http_server.add_file("private/x.bin", b"abcd")
    http_server.requests.clear()
    with pytest.raises(SourceNotAllowedError):
        ReferenceStore(_one_ref(url), allow=[http_server.url("public")], storage_options=HTTP_OPTIONS)
    with pytest.raises(SourceNotAllowedError):
        ReferenceStore(_one_ref(url), allow=[http_server.url("priv")], storage_options=HTTP_OPTIONS)
    assert http_server.requests == []
    s = ReferenceStore(_one_ref(url), allow=[http_server.url("private")], storage_options=HTTP_OPTIONS)
    assert s.get("a/c/0") == b"abcd"


def test_hostile_kerchunk_keys_refused_without_io(no_io):
    # keys with '..' never reach a store: the manifest itself is refused
    with pytest.raises(ManifestError, match=r"\.\./\.\./etc"):
        from_kerchunk({"a/.zarray": '{"shape":[1],"chunks":[1],"dtype":"|u1","zarr_format":2,'
                       '"compressor":null,"filters":null,"fill_value":0,"order":"C"}',
                       "a/../../etc/0": ["s3://b/x", 0, 1]})


def test_parse_prefix_normalises_local(tmp_path):
    p = parse_prefix(str(tmp_path / "a" / ".." / "b"))
    assert p == parse_prefix(str(tmp_path / "b"))
    assert str(parse_prefix("https://H.example:443/x/")) == "https://h.example/x/"


def test_unused_sources_need_no_authorization(tmp_path):
    m = _one_ref(str(tmp_path / "x.bin"), str(tmp_path / "refs.json"))
    m.add_source("/etc/passwd")  # listed but referenced by no chunk
    assert ReferenceStore(m) is not None
    assert np.array_equal(m.used_sources(), [0])
