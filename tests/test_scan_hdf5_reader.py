"""Test-only reader of scanned manifests, independent of chunkref's Zarr engine.

It reads each chunk's bytes straight from the source file (or the inline bytes), runs the codec
chain written in the metadata through numcodecs, and assembles the array, so the scanner's
metadata and chunk tables can be checked against h5py without any other chunkref component.
The tests at the bottom check the reader itself.
"""

from __future__ import annotations

import math

import h5py
import hdf5plugin  # noqa: F401  (lets h5py read plugin-filtered oracle data)
import numcodecs
import numpy as np

import chunkref.zarr.codecs.hdf5  # noqa: F401  (registers chunkref.hdf5.* codecs)
from chunkref.manifest import Manifest
from chunkref.manifest.sources import local_path
from chunkref.zarr.dtypes import parse_data_type_v3, parse_dtype_v2, parse_fill_value

try:
    import imagecodecs.numcodecs as _icn

    _icn.register_codecs(verbose=False)
except ImportError:  # pragma: no cover - imagecodecs is a test dependency
    pass


def _read_source(manifest: Manifest, ref) -> bytes:
    if ref.data is not None:
        return ref.data
    url = manifest.sources[ref.source].url
    with open(local_path(url), "rb") as f:
        f.seek(ref.offset)
        data = f.read(ref.length)
    assert len(data) == ref.length, f"short read from {url}"
    return data


def read_array(manifest: Manifest, path: str) -> np.ndarray:
    """Decode the whole array ``path`` of ``manifest`` with numcodecs."""
    docs = manifest.nodes[path]
    table = manifest.tables[path]
    if "zarr.json" in docs:
        doc = docs["zarr.json"]
        shape = tuple(doc["shape"])
        chunks = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
        dt = parse_data_type_v3(doc["data_type"])
        fill = parse_fill_value(doc["fill_value"], dt, 3)
        codecs = doc["codecs"]
        first = codecs[0]
        vlen = first["name"] == "vlen-utf8"
        dtype = dt.dtype
        if first["name"] == "bytes":
            endian = (first.get("configuration") or {}).get("endian")
            if endian:
                dtype = dtype.newbyteorder(">" if endian == "big" else "<")
        else:
            assert vlen, first
        bb = [numcodecs.get_codec({"id": c["name"][len("numcodecs.") :], **c.get("configuration", {})}) for c in codecs[1:]]
    else:
        doc = docs[".zarray"]
        shape = tuple(doc["shape"])
        chunks = tuple(doc["chunks"])
        filters = doc["filters"] or []
        vlen = bool(filters) and filters[0]["id"] == "vlen-utf8"
        dt = parse_dtype_v2(doc["dtype"], object_codec_id="vlen-utf8" if vlen else None)
        dtype = dt.dtype
        fill = parse_fill_value(doc["fill_value"], dt, 2) if doc["fill_value"] is not None else None
        bb = [numcodecs.get_codec(dict(c)) for c in (filters[1:] if vlen else filters)]
        if fill is None:
            fill = "" if vlen else np.zeros((), dtype)[()]
    out = np.empty(shape, dtype=object if vlen else dtype)
    out[...] = fill
    grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks))
    assert table.grid_shape == grid
    for flat in range(table.nchunks):
        ref = table.lookup_flat(flat)
        if ref is None:
            continue
        data = _read_source(manifest, ref)
        for codec in reversed(bb):
            data = codec.decode(data)
        if vlen:
            block = np.asarray(numcodecs.VLenUTF8().decode(bytes(data)), dtype=object).reshape(chunks)
        else:
            raw = data if isinstance(data, bytes) else np.ascontiguousarray(data).view(np.uint8).tobytes()
            block = np.frombuffer(raw, dtype=dtype).reshape(chunks)
        coords = np.unravel_index(flat, grid) if grid else ()
        sel = tuple(slice(c * n, min((c + 1) * n, s)) for c, n, s in zip(coords, chunks, shape))
        out[sel] = block[tuple(slice(0, s.stop - s.start) for s in sel)]
    return out


def h5py_values(ds: h5py.Dataset) -> np.ndarray:
    """What h5py reads (vlen strings as str, references as target paths)."""
    if h5py.check_string_dtype(ds.dtype) is not None and h5py.check_string_dtype(ds.dtype).length is None:
        return np.asarray(ds.asstr()[()], dtype=object)
    if h5py.check_ref_dtype(ds.dtype) is h5py.Reference:
        refs = np.asarray(ds[()], dtype=object)
        flat = [ds.file[r].name if r else "" for r in refs.reshape(-1)]
        return np.array(flat, dtype=object).reshape(refs.shape)
    return np.asarray(ds[()])


def assert_same(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    """Element-for-element equality (NaN equal to NaN; structured compared per h5py field)."""
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != {theirs.shape}"
    if theirs.dtype.names:
        for name in theirs.dtype.names:
            assert_same(ours[name], theirs[name], f"{what}.{name}")
        return
    if theirs.dtype.kind == "O":
        assert ours.tolist() == theirs.tolist(), what
        return
    if theirs.dtype.kind in "fc":
        assert np.array_equal(ours.astype(theirs.dtype), theirs, equal_nan=True), what
        return
    assert ours.dtype.kind == theirs.dtype.kind or theirs.dtype.kind in "SV", f"{what}: {ours.dtype} vs {theirs.dtype}"
    assert ours.tobytes() == np.ascontiguousarray(theirs, dtype=ours.dtype).tobytes() or np.array_equal(ours, theirs), what


def assert_scan_matches_h5py(manifest: Manifest, h5file: str, skip: tuple[str, ...] = ()) -> int:
    """Every array of the manifest reads equal to the h5py dataset at the same path; returns the count."""
    n = 0
    with h5py.File(h5file, "r") as f:
        for path in manifest.arrays():
            if path in skip:
                continue
            ours = read_array(manifest, path)
            theirs = h5py_values(f[path])
            if ours.shape != theirs.shape and ours.size == theirs.size:
                theirs = theirs.reshape(ours.shape)
            assert_same(ours, theirs, path)
            n += 1
    return n


# --- tests of the reader itself ---------------------------------------------------------------


def test_reader_decodes_a_plain_chunked_dataset(tmp_path):
    from chunkref.scanners import scan_hdf5

    p = tmp_path / "plain.h5"
    data = np.arange(100, dtype="<i4").reshape(10, 10)
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=data, chunks=(3, 4), compression="gzip", shuffle=True)
    m = scan_hdf5(str(p))
    np.testing.assert_array_equal(read_array(m, "x"), data)


def test_reader_detects_corruption(tmp_path):
    """The reader is a real oracle: a damaged chunk reference must not read as the data."""
    from chunkref.scanners import scan_hdf5

    p = tmp_path / "plain.h5"
    data = np.arange(100, dtype="<i4").reshape(10, 10)
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=data, chunks=(5, 5))
    m = scan_hdf5(str(p), inline_threshold=0)
    t = m.tables["x"]
    t.offset[0] += np.uint64(4)
    assert not np.array_equal(read_array(m, "x"), data)
