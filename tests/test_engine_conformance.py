"""A Zarr v2 conformance matrix in the spirit of zarr-developers/zarr_implementations.

A deterministic synthetic 512x512x3 uint8 "image" is written in (100, 100, 1) chunks (edge
chunks overhang) as arrays ``raw``, ``gzip``, ``zlib`` and ``blosc`` (lz4), with flat (``.``)
and nested (``/``) keys, once by zarr-python (``zarr_format=2``) and once by chunkref.  Every
store is then read by zarr-python, chunkref and tensorstore, and must give the image back.
Uncompressed chunks must be byte-identical between the two writers (the edge padding included).
"""

from __future__ import annotations

import json
from pathlib import Path

import numcodecs
import numpy as np
import pytest

import chunkref

zarr = pytest.importorskip("zarr")
ts = pytest.importorskip("tensorstore")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SHAPE = (512, 512, 3)
CHUNKS = (100, 100, 1)
CODECS = {
    "raw": None,
    "gzip": {"id": "gzip", "level": 1},
    "zlib": {"id": "zlib", "level": 1},
    "blosc": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
}
WRITERS = ("zarr", "chunkref")
LAYOUTS = {"flat": ".", "nested": "/"}


def reference_image() -> np.ndarray:
    """Gradients, a checkerboard and a disc: compressible, and no chunk is all fill (0)."""
    y, x = np.mgrid[0:512, 0:512]
    r = ((x ^ y) & 0xFF).astype(np.uint8)
    g = ((x * 3 + y // 2) % 256).astype(np.uint8)
    b = np.where((x - 256) ** 2 + (y - 200) ** 2 < 150**2, 250, ((x // 32 + y // 32) % 2) * 90 + 5).astype(
        np.uint8
    )
    return np.stack([r, g, b], axis=-1)


IMAGE = reference_image()


def write_zarr_python(root: Path, separator: str) -> None:
    store = zarr.storage.LocalStore(str(root))
    zarr.open_group(store, mode="w", zarr_format=2)
    for name, codec in CODECS.items():
        z = zarr.create_array(
            store, name=name, shape=SHAPE, chunks=CHUNKS, dtype="u1", zarr_format=2, fill_value=0,
            compressors=numcodecs.get_codec(dict(codec)) if codec else None,
            chunk_key_encoding={"name": "v2", "separator": separator},
        )  # fmt: skip
        z[...] = IMAGE


def write_chunkref(root: Path, separator: str) -> None:
    g = chunkref.open_group(str(root), mode="w", zarr_format=2)
    for name, codec in CODECS.items():
        a = g.create_array(
            name, shape=SHAPE, chunks=CHUNKS, dtype="u1", fill_value=0, compressors=codec,
            chunk_key_encoding={"name": "v2", "separator": separator},
        )  # fmt: skip
        a[...] = IMAGE


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """``{(writer, layout): directory}``: e.g. ``zarr_flat.zr``, ``chunkref_nested.zr``."""
    base = tmp_path_factory.mktemp("conformance")
    out = {}
    for writer in WRITERS:
        for layout, sep in LAYOUTS.items():
            root = base / f"{writer}_{layout}.zr"
            (write_zarr_python if writer == "zarr" else write_chunkref)(root, sep)
            out[(writer, layout)] = root
    return out


def read_with(reader: str, root: Path, name: str) -> np.ndarray:
    if reader == "zarr":
        return np.asarray(zarr.open_array(zarr.storage.LocalStore(str(root)), path=name, mode="r")[...])
    if reader == "chunkref":
        return chunkref.open_array(str(root), path=name, mode="r")[...]
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / name)}}
    return ts.open(spec, open=True, read=True).result().read().result()


@pytest.mark.parametrize("reader", ["zarr", "chunkref", "tensorstore"])
@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("writer", WRITERS)
def test_read_matrix(stores, writer, layout, codec, reader) -> None:
    out = read_with(reader, stores[(writer, layout)], codec)
    assert out.dtype == np.uint8 and out.shape == SHAPE
    np.testing.assert_array_equal(out, IMAGE)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_key_layout(stores, layout) -> None:
    sep = LAYOUTS[layout]
    for writer in WRITERS:
        root = stores[(writer, layout)] / "raw"
        doc = json.loads((root / ".zarray").read_text())
        assert doc["dimension_separator"] == sep
        assert (root / sep.join(["5", "5", "2"])).is_file()  # the overhanging corner chunk
        n_chunks = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        assert n_chunks == 6 * 6 * 3


@pytest.mark.parametrize("codec", list(CODECS))
def test_metadata_documents_agree(stores, codec) -> None:
    zdoc = json.loads((stores[("zarr", "flat")] / codec / ".zarray").read_text())
    cdoc = json.loads((stores[("chunkref", "flat")] / codec / ".zarray").read_text())
    assert zdoc == cdoc


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_uncompressed_chunks_are_byte_identical(stores, layout) -> None:
    zroot = stores[("zarr", layout)] / "raw"
    croot = stores[("chunkref", layout)] / "raw"
    zkeys = sorted(
        p.relative_to(zroot) for p in zroot.rglob("*") if p.is_file() and not p.name.startswith(".")
    )
    ckeys = sorted(
        p.relative_to(croot) for p in croot.rglob("*") if p.is_file() and not p.name.startswith(".")
    )
    assert zkeys == ckeys
    for k in zkeys:
        assert (zroot / k).read_bytes() == (croot / k).read_bytes(), k
    # Edge chunks are stored at the full (100, 100, 1) shape, padded with the fill value 0.
    edge = np.frombuffer(
        (croot / Path(*["5", "5", "0"] if layout == "nested" else ["5.5.0"])).read_bytes(), "u1"
    )
    edge = edge.reshape(100, 100)
    np.testing.assert_array_equal(edge[:12, :12], IMAGE[500:, 500:, 0])
    assert not edge[12:, :].any() and not edge[:, 12:].any()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_partial_reads_agree(stores, layout) -> None:
    """Selections crossing edge chunks read the same through chunkref and zarr-python."""
    root = stores[("zarr", layout)]
    a = chunkref.open_array(str(root), path="blosc", mode="r")
    z = zarr.open_array(zarr.storage.LocalStore(str(root)), path="blosc", mode="r")
    for sel in [(slice(450, 512), slice(95, 305), 1), (slice(None, None, 37), 511, slice(None)), (7, 7, 2)]:
        np.testing.assert_array_equal(a[sel], np.asarray(z[sel]))
    np.testing.assert_array_equal(
        a.oindex[[511, 0, 250], [3, 509], :], IMAGE[np.ix_([511, 0, 250], [3, 509], [0, 1, 2])]
    )
