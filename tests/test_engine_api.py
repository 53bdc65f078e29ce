"""API shape: scripts written for zarr-python 3.1.6 run unchanged with ``import chunkref as zarr``.

Each scenario is a function of the module (``zarr`` or ``chunkref``) and a directory; it runs
with both libraries and must observe the same things (values, metadata documents, attributes,
hierarchy).  Then: defaults, the array and group surface, and the typed errors bad input raises.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import chunkref
from chunkref.errors import (
    BoundsCheckError,
    ChunkDecodeError,
    ChunkrefError,
    ContainsArrayError,
    ContainsGroupError,
    InvalidArgumentError,
    InvalidKeyError,
    MetadataError,
    NodeNotFoundError,
    ReadOnlyError,
)
from chunkref.storage import MemoryStore

zarr_python = pytest.importorskip("zarr")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

BOTH = pytest.mark.parametrize("lib", ["zarr", "chunkref"])


def module(lib: str):
    return zarr_python if lib == "zarr" else chunkref


def np_(x) -> np.ndarray:
    return np.asarray(x)


def read_docs(root: Path) -> dict[str, dict]:
    """Every metadata document below ``root``, parsed."""
    names = {"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"}
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("*") if p.name in names}


# -- scenarios run with both libraries ---------------------------------------------------------------


def scenario_modes(zarr, path: Path) -> dict:
    out = {}
    a = zarr.open_array(str(path), mode="w", shape=(6, 4), chunks=(4, 4), dtype="i4", fill_value=-1)
    a[1:3] = 7
    a.attrs["units"] = "m"
    out["w"] = np_(a[...]).tolist()
    r = zarr.open_array(str(path), mode="r")
    out["r"] = (np_(r[...]).tolist(), dict(r.attrs), r.read_only)
    rp = zarr.open_array(str(path), mode="r+")
    rp[0, 0] = 5
    out["r+"] = int(np_(rp[0, 0]))
    ap = zarr.open_array(str(path), mode="a")
    ap[5, 3] = 9
    out["a"] = np_(ap[...]).tolist()
    for mode in ("w-",):
        try:
            zarr.open_array(str(path), mode=mode, shape=(1,), dtype="u1")
            out[mode] = "created"
        except Exception:  # both refuse (zarr-python: FileExistsError; chunkref: ContainsArrayError)
            out[mode] = "refused"
    w = zarr.open_array(str(path), mode="w", shape=(2,), dtype="u1")
    out["w-replaced"] = (w.shape, np_(w[...]).tolist(), dict(w.attrs))
    return out


def scenario_hierarchy(zarr, path: Path) -> dict:
    root = zarr.open_group(str(path), mode="w", attributes={"title": "demo"})
    grp = root.create_group("obs")
    grp.attrs["station"] = "X1"
    t = grp.create_array(
        "temp", shape=(10, 3), chunks=(5, 3), dtype="f4", fill_value=np.nan, dimension_names=["time", "z"]
    )
    t[:] = np.arange(30, dtype="f4").reshape(10, 3)
    root.create_array("flags", shape=(4,), chunks=(2,), dtype="bool", fill_value=False)
    again = root.require_group("obs")
    sub = root.require_group("new/deeper")
    out = {
        "members": sorted(name for name, _ in root.members(max_depth=None)),
        "keys": sorted(root.keys()),
        "again": again.path,
        "sub": sub.path,
        "temp": np_(root["obs/temp"][2:4]).tolist(),
        "station": dict(root["obs"].attrs),
        "dims": tuple(root["obs/temp"].metadata.dimension_names),
        "in": ("obs" in root, "nope" in root),
    }
    zarr.consolidate_metadata(str(path))
    reopened = zarr.open_group(str(path), mode="r")
    out["consolidated_members"] = sorted(name for name, _ in reopened.members(max_depth=None))
    out["docs"] = read_docs(path)
    return out


def scenario_array_surface(zarr, path: Path) -> dict:
    a = zarr.create_array(
        str(path), name="x", shape=(9, 7), chunks=(4, 3), dtype="u2", attributes={"k": [1, 2]}
    )
    a[:] = np.arange(63, dtype="u2").reshape(9, 7)
    a.attrs["extra"] = {"nested": True}
    del a.attrs["k"]
    a.resize((10, 8))
    a.append(np.ones((2, 8), dtype="u2"))
    b = zarr.open_array(str(path), path="x", mode="r")
    return {
        "shape": b.shape,
        "chunks": b.chunks,
        "shards": b.shards,
        "dtype": str(b.dtype),
        "fill": int(b.fill_value),
        "ndim": b.ndim,
        "size": b.size,
        "nchunks": b.nchunks,
        "nbytes": b.nbytes,
        "attrs": dict(b.attrs),
        "oindex": np_(b.oindex[[0, 9, 11], [1, 7]]).tolist(),
        "vindex": np_(b.vindex[[0, 9, 11], [1, 7, 0]]).tolist(),
        "blocks": np_(b.blocks[2, 2]).tolist(),
        "mask": np_(b[np.asarray(b[...]) % 10 == 3]).tolist(),
        "name": (b.name, b.basename, b.path),
        "docs": read_docs(path),
    }


def scenario_from_array_and_copy(zarr, path: Path) -> dict:
    data = np.arange(24, dtype="i8").reshape(4, 6)
    a = zarr.from_array(str(path / "a"), data=data, chunks=(2, 3))
    b = zarr.from_array(str(path / "b"), data=a)
    return {"a": np_(a[...]).tolist(), "b": (np_(b[...]).tolist(), b.chunks)}


def scenario_defaults(zarr, path: Path) -> dict:
    out = {}
    for fmt in (2, 3):
        for dtype in ("f8", "i2", "M8[s]", str, "U3", "S2", "bool", "c8"):
            name = f"v{fmt}_{dtype if isinstance(dtype, str) else 'str'}".replace("[", "").replace("]", "")
            a = zarr.create_array(str(path), name=name, shape=(5,), chunks=(2,), dtype=dtype, zarr_format=fmt)
            fv = a.fill_value
            out[name] = repr(np.asarray(fv).tolist()) if not isinstance(fv, str) else fv
        out[f"v{fmt}_nocomp"] = zarr.create_array(
            str(path),
            name=f"v{fmt}_nocomp",
            shape=(5,),
            chunks=(2,),
            dtype="f4",
            zarr_format=fmt,
            compressors=None,
        ).nchunks
    out["docs"] = normalize_bytes_fills(read_docs(path))
    return out


def normalize_bytes_fills(docs: dict[str, dict]) -> dict[str, dict]:
    """Decode base64 ``S`` fill values, NUL padding stripped.

    zarr-python writes the stripped bytes (``""`` for ``b""``); chunkref writes exactly
    ``itemsize`` bytes (``"AAA="``), the only form tensorstore accepts.  Both mean the same.
    """
    import base64

    for doc in docs.values():
        dtype = doc.get("dtype", doc.get("data_type"))
        is_bytes = (isinstance(dtype, str) and dtype.startswith("|S")) or (
            isinstance(dtype, dict) and dtype.get("name") == "null_terminated_bytes"
        )
        if is_bytes and isinstance(doc.get("fill_value"), str):
            doc["fill_value"] = base64.b64decode(doc["fill_value"]).rstrip(b"\0").decode("latin1")
    return docs


@BOTH
@pytest.mark.parametrize(
    "scenario",
    [
        scenario_modes,
        scenario_hierarchy,
        scenario_array_surface,
        scenario_from_array_and_copy,
        scenario_defaults,
    ],
    ids=lambda f: f.__name__.removeprefix("scenario_"),
)
def test_scenario_runs(tmp_path, lib, scenario) -> None:
    scenario(module(lib), tmp_path / "s")


@pytest.mark.parametrize(
    "scenario",
    [
        scenario_modes,
        scenario_hierarchy,
        scenario_array_surface,
        scenario_from_array_and_copy,
        scenario_defaults,
    ],
    ids=lambda f: f.__name__.removeprefix("scenario_"),
)
def test_scenario_same_results(tmp_path, scenario) -> None:
    """Same script, same observations, same metadata documents on disk."""
    expected = scenario(zarr_python, tmp_path / "zarr")
    actual = scenario(chunkref, tmp_path / "chunkref")
    if scenario is scenario_hierarchy:
        # Node documents must agree; the consolidated blob is compared as a set of nodes.
        for docs in (expected["docs"], actual["docs"]):
            root = docs.get("zarr.json", {})
            cons = root.pop("consolidated_metadata", None)
            if cons is not None:
                root["consolidated_nodes"] = sorted(cons["metadata"])
                for meta in cons["metadata"].values():
                    meta.pop("consolidated_metadata", None)
            for key, doc in docs.items():
                if key.endswith("zarr.json") and doc.get("node_type") == "group" and key != "zarr.json":
                    doc.pop("consolidated_metadata", None)
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key] == expected[key], key


# -- defaults and surface ----------------------------------------------------------------------------


def test_default_format_and_compressor() -> None:
    a = chunkref.create_array(MemoryStore(), shape=(10,), dtype="f4")
    assert a.zarr_format == 3
    doc = json.loads(a.store.get("zarr.json"))
    assert doc["codecs"][-1] == {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
    b = chunkref.create_array(MemoryStore(), shape=(10,), dtype="f4", compressors=None)
    assert [c["name"] for c in json.loads(b.store.get("zarr.json"))["codecs"]] == ["bytes"]
    assert b.compressors == ()
    c = chunkref.create_array(MemoryStore(), shape=(10,), dtype="f4", zarr_format=2)
    assert json.loads(c.store.get(".zarray"))["compressor"] == {"id": "zstd", "level": 0}
    with chunkref.config.set({"default_zarr_format": 2}):
        assert chunkref.create_array(MemoryStore(), shape=(1,), dtype="u1").zarr_format == 2


def test_info_and_repr() -> None:
    a = chunkref.create_array(
        MemoryStore(), name="g/x", shape=(8, 8), chunks=(2, 4), shards=(4, 8), dtype="i2"
    )
    text = str(a.info)
    for needle in ("/g/x", "int16", "(8, 8)", "Shard shape", "(4, 8)", "(2, 4)", "Zarr format : 3"):
        assert needle in text, needle
    assert a.shards == (4, 8) and a.chunks == (2, 4) and a.nchunks == 2
    r = chunkref.create_array(MemoryStore(), shape=(35,), chunks=((10, 20, 5),), dtype="u1")
    assert "rectilinear" in str(r.info)
    with pytest.raises(ValueError, match="chunk_sizes"):
        _ = r.chunks
    assert r.chunk_sizes == ((10, 20, 5),)
    assert repr(a).startswith("<chunkref.Array '/g/x'")
    g = chunkref.open_group(a.store, mode="r")
    assert "Group" in g.info and "/" in repr(g)


def test_attrs_write_through() -> None:
    store = MemoryStore()
    a = chunkref.create_array(store, name="a", shape=(1,), dtype="u1")
    a.attrs["x"] = 1
    a.attrs.update({"y": [1, 2], "z": None})
    del a.attrs["x"]
    assert json.loads(store.get("a/zarr.json"))["attributes"] == {"y": [1, 2], "z": None}
    g = chunkref.open_group(store, mode="r+")
    g.attrs.put({"only": True})
    assert chunkref.open_group(store, mode="r").attrs.asdict() == {"only": True}
    with pytest.raises(InvalidArgumentError, match="JSON"):
        a.attrs["bad"] = {1, 2}  # not JSON
    assert "bad" not in chunkref.open_array(store, path="a").attrs


def test_tree_and_members() -> None:
    store = MemoryStore()
    root = chunkref.create_group(store)
    root.create_group("b").create_array("arr", shape=(2, 3), dtype="f8")
    root.create_group("a")
    tree = root.tree()
    assert tree.splitlines() == ["/", "├── a", "└── b", "    └── arr (2, 3) float64"]
    assert [n for n, _ in root.members()] == ["a", "b"]
    assert [n for n, _ in root.members(max_depth=None)] == ["a", "b", "b/arr"]
    assert root.group_keys() == ["a", "b"] and root["b"].array_keys() == ["arr"]
    assert len(root) == 2 and list(root) == ["a", "b"]
    del root["b"]
    assert [n for n, _ in root.members(max_depth=None)] == ["a"]
    assert list(store.list_prefix("b/")) == []


def test_require_group_and_array() -> None:
    g = chunkref.create_group(MemoryStore())
    x = g.require_array("x", shape=(3,), dtype="i4")
    assert g.require_array("x", shape=(3,), dtype="i4").path == x.path
    with pytest.raises(InvalidArgumentError, match="exists"):
        g.require_array("x", shape=(4,), dtype="i4")
    with pytest.raises(ContainsArrayError):
        g.require_group("x")
    g.require_group("grp")
    with pytest.raises(ContainsGroupError):
        g.require_array("grp", shape=(1,), dtype="u1")


def test_copy_store_options(tmp_path) -> None:
    src = MemoryStore()
    a = chunkref.create_array(src, name="data/a", shape=(4,), chunks=(2,), dtype="u1")
    a[...] = [1, 2, 3, 4]
    dst = MemoryStore()
    n_keys, n_bytes = chunkref.copy_store(src, dst, source_path="data", dest_path="copy")
    assert n_keys == 4 and n_bytes > 0  # data/zarr.json, data/a/zarr.json, 2 chunks
    np.testing.assert_array_equal(chunkref.open_array(dst, path="copy/a", mode="r")[...], [1, 2, 3, 4])
    with pytest.raises(ContainsArrayError):
        chunkref.copy_store(src, dst, source_path="data", dest_path="copy")
    assert chunkref.copy_store(src, dst, source_path="data", dest_path="copy", if_exists="skip") == (0, 0)
    assert chunkref.copy_store(src, dst, source_path="data", dest_path="c2", excludes=r"/c/")[0] == 2


def test_from_array_keeps_rectilinear_chunks_and_metadata() -> None:
    src = chunkref.create_array(
        MemoryStore(), shape=(35, 4), chunks=((10, 20, 5), (4,)), dtype="f4", fill_value=np.nan,
        attributes={"u": 1}, dimension_names=["t", "x"],
    )  # fmt: skip
    src[...] = np.arange(140, dtype="f4").reshape(35, 4)
    dst = chunkref.from_array(MemoryStore(), data=src)
    assert dst.chunk_sizes == ((10, 20, 5), (4,))
    assert np.isnan(dst.fill_value) and dict(dst.attrs) == {"u": 1} and dst.dimension_names == ("t", "x")
    np.testing.assert_array_equal(dst[...], src[...])
    mem = chunkref.array(np.eye(3))
    np.testing.assert_array_equal(mem[...], np.eye(3))


# -- typed errors ----------------------------------------------------------------------------------


@pytest.fixture
def temp_array():
    store = MemoryStore()
    a = chunkref.create_array(store, name="temp", shape=(4, 4), chunks=(2, 2), dtype="i4")
    a[...] = np.arange(16).reshape(4, 4)
    return store, a


@pytest.mark.parametrize(
    "kind, selection, axis",
    [
        ("basic", (4, 0), 0),
        ("basic", (0, -5), 1),
        ("oindex", (slice(None), [0, 9]), 1),
        ("vindex", ([0, 1], [3, 4]), 1),
        ("blocks", (0, 2), 1),
    ],
)
def test_out_of_bounds_names_the_axis(temp_array, kind, selection, axis) -> None:
    _, a = temp_array
    target = {"basic": a, "oindex": a.oindex, "vindex": a.vindex, "blocks": a.blocks}[kind]
    with pytest.raises(BoundsCheckError, match=f"axis {axis}") as info:
        target[selection]
    assert isinstance(info.value, IndexError) and isinstance(info.value, ChunkrefError)
    with pytest.raises(IndexError):
        target[selection] = 0


def test_read_only_writes(temp_array) -> None:
    store, _ = temp_array
    r = chunkref.open_array(store, path="temp", mode="r")
    for action in (
        lambda: r.__setitem__((0, 0), 1),
        lambda: r.resize(2, 2),
        lambda: r.append(np.zeros((1, 4))),
        lambda: r.attrs.__setitem__("k", 1),
        lambda: chunkref.open_group(store, mode="r").create_group("x"),
        lambda: chunkref.create_array(store.with_read_only(True), name="n", shape=(1,), dtype="u1"),
    ):
        with pytest.raises(ReadOnlyError) as info:
            action()
        assert isinstance(info.value, PermissionError)
    with pytest.raises(ReadOnlyError, match="/temp"):
        r[0, 0] = 1


def test_missing_nodes_are_key_errors(temp_array) -> None:
    store, _ = temp_array
    for action in (
        lambda: chunkref.open_array(store, path="nope", mode="r"),
        lambda: chunkref.open_group(store, path="nope", mode="r"),
        lambda: chunkref.open(store, path="nope", mode="r"),
        lambda: chunkref.open_group(store, mode="r")["nope"],
    ):
        with pytest.raises(NodeNotFoundError, match="nope") as info:
            action()
        assert isinstance(info.value, KeyError)
    assert chunkref.open_group(store, mode="r").get("nope") is None
    with pytest.raises(ContainsGroupError):
        chunkref.open_array(store, path="", mode="r")
    with pytest.raises(ContainsArrayError):
        chunkref.open_group(store, path="temp", mode="r")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("fill_value", "abc", "fill_value"),
        ("shape", [4, -1], "shape"),
        ("data_type", "int33", "data_type"),
        ("chunk_grid", {"name": "hexagonal"}, "chunk_grid"),
        ("codecs", [{"name": "no-such-codec"}], "codecs"),
        (
            "chunk_key_encoding",
            {"name": "default", "configuration": {"separator": "|"}},
            "chunk_key_encoding",
        ),
        ("unknown_field", 1, "unknown_field"),
    ],
)
def test_malformed_metadata_names_node_and_field(temp_array, field, value, message) -> None:
    store, _ = temp_array
    doc = json.loads(store.get("temp/zarr.json"))
    doc[field] = value
    store.set("temp/zarr.json", json.dumps(doc).encode())
    with pytest.raises(MetadataError) as info:
        chunkref.open_array(store, path="temp", mode="r")
    assert isinstance(info.value, ValueError)
    assert "temp/zarr.json" in str(info.value) and message in str(info.value)


def test_malformed_v2_metadata_and_json(tmp_path) -> None:
    store = MemoryStore()
    chunkref.create_array(store, name="v2", shape=(2,), dtype="u1", zarr_format=2)
    store.set("v2/.zarray", b"{not json")
    with pytest.raises(MetadataError, match="v2/.zarray"):
        chunkref.open_array(store, path="v2")
    doc = {"zarr_format": 2, "shape": [2], "chunks": [1], "dtype": "<q9", "compressor": None, "fill_value": 0,
           "order": "C", "filters": None}  # fmt: skip
    store.set("v2/.zarray", json.dumps(doc).encode())
    with pytest.raises(MetadataError, match=r"v2/\.zarray.*dtype|dtype.*v2/\.zarray"):
        chunkref.open_array(store, path="v2")


def test_corrupt_chunk_names_the_key(temp_array) -> None:
    store, a = temp_array
    store.set("temp/c/1/0", b"garbage")
    with pytest.raises(ChunkDecodeError, match="temp/c/1/0") as info:
        a[...]
    assert isinstance(info.value, ValueError)
    np.testing.assert_array_equal(a[0:2, :], np.arange(8).reshape(2, 4))  # other chunks still read
    with pytest.raises(ChunkDecodeError, match="temp/c/1/0"):
        a[3, 0] = 1  # a partial write must decode the chunk first
    # Truncated but valid-looking data: the bytes codec checks the size.
    raw = chunkref.create_array(store, name="raw", shape=(4,), chunks=(4,), dtype="i4", compressors=None)
    raw[...] = 1
    store.set("raw/c/0", store.get("raw/c/0")[:-1])
    with pytest.raises(ChunkDecodeError, match="raw/c/0"):
        raw[...]


@pytest.mark.parametrize("name", ["../evil", "a/../b", "/abs/../x", "bad\\name", "a//b"])
def test_invalid_keys_are_rejected(name) -> None:
    store = MemoryStore()
    g = chunkref.create_group(store)
    with pytest.raises((InvalidKeyError, InvalidArgumentError)) as info:
        g.create_array(name, shape=(1,), dtype="u1")
    assert isinstance(info.value, ValueError)
    with pytest.raises((InvalidKeyError, InvalidArgumentError, NodeNotFoundError)):
        g[name]
    assert all(".." not in k and "\\" not in k for k in store.list())


def test_bad_arguments() -> None:
    store = MemoryStore()
    for kwargs in (
        {"shape": (4,), "dtype": "not-a-dtype"},
        {"shape": (4,), "dtype": "u1", "chunks": (0,)},
        {"shape": (4,), "dtype": "u1", "chunks": ((1, 1),)},  # edges shorter than the extent
        {"shape": (4,), "dtype": "u1", "zarr_format": 4},
        {"shape": (4,), "dtype": "u1", "fill_value": 300},
        {"shape": (4,), "dtype": "u1", "chunks": ((1, 3),), "zarr_format": 2},  # rectilinear needs v3
        {"shape": (4,), "dtype": "u1", "config": {"order": "K"}},
    ):
        with pytest.raises(ValueError):
            chunkref.create_array(store, name="x", overwrite=True, **kwargs)
    with pytest.raises(InvalidArgumentError, match="mode"):
        chunkref.open_group(store, mode="x+")
    a = chunkref.create_array(store, name="ok", shape=(4,), dtype="u1")
    with pytest.raises(ContainsArrayError):
        chunkref.create_array(store, name="ok", shape=(4,), dtype="u1")
    with pytest.raises(InvalidArgumentError, match="/ok"):
        a[...] = "not a number"
