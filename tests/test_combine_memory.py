"""combine at scale: thousands of manifests stream through with bounded memory per input.

Inputs are built in memory (Manifest objects with ChunkTables, no files), one at a time by a
generator, as a monthly series: ``time`` (inline coordinate), ``lat``/``lon`` (identical in every
input), ``tas`` (refs into the input's own file, chunks of 10 along time, months of 28-31 days:
a rectilinear, padded result).  Peak memory is measured with tracemalloc; the growth per input
between two sizes must stay below a bound beyond the output's own chunk-table columns.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

import chunkref.entry as entry
from chunkref.manifest import Manifest
from chunkref.manifest.combine import combine
from chunkref.manifest.table import ChunkTable

LENGTHS = (31, 28, 31, 30)
CHUNK = 10
LE = [{"name": "bytes", "configuration": {"endian": "little"}}]


def _doc(shape, chunks, dtype, fill, codecs, attrs, dims):
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": dtype,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attrs,
        "dimension_names": list(dims),
    }


def synthetic(i: int, start: int, n: int) -> Manifest:
    """Input ``i``: ``n`` days from day ``start``, as a scan of a monthly NetCDF file would give."""
    m = Manifest()
    src = m.add_source(f"/data/cmip/tas_day_model_{i:05d}.nc", 100_000 + i, 1.7e9 + i)
    m.add_group("", {"Conventions": "CF-1.6", "history": f"created file {i}", "title": "synthetic"})
    t = ChunkTable((1,))
    t.set_inline((0,), (np.arange(n, dtype="<f8") + start).tobytes())
    time_attrs = {"units": "days since 2000-01-01", "calendar": "standard", "standard_name": "time", "axis": "T"}
    m.add_array("time", {"zarr.json": _doc((n,), (n,), "float64", "NaN", LE, time_attrs, ("time",))}, t)
    for name, values in (("lat", [10, 20, 30]), ("lon", [0, 90, 180, 270])):
        c = ChunkTable((1,))
        c.set_inline((0,), np.asarray(values, "<f4").tobytes())
        doc = _doc((len(values),), (len(values),), "float32", "NaN", LE, {"standard_name": name}, (name,))
        m.add_array(name, {"zarr.json": doc}, c)
    nb = -(-n // CHUNK)
    codecs = LE + [
        {"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}},
        {"name": "numcodecs.zlib", "configuration": {"level": 4}},
    ]
    tas = ChunkTable((nb, 1, 1))
    tas.set_refs(np.arange(nb), src, 4096 + 500 * np.arange(nb), 480 + np.arange(nb))
    attrs = {"units": "K", "_FillValue": -999.0, "long_name": "Near-Surface Air Temperature", "cell_methods": "time: mean"}
    m.add_array("tas", {"zarr.json": _doc((n, 3, 4), (CHUNK, 3, 4), "float32", -999.0, codecs, attrs, ("time", "lat", "lon"))}, tas)
    return m


def series(count: int):
    """The inputs, built one at a time (the caller never holds them all)."""
    start = 0
    for i in range(count):
        n = LENGTHS[i % len(LENGTHS)]
        yield synthetic(i, start, n)
        start += n


def _columns_nbytes(m: Manifest) -> int:
    """The output's chunk tables: columns and inline chunk bytes (the materialised time values)."""
    return sum(
        t.source.nbytes + t.offset.nbytes + t.length.nbytes + sum(len(b) for b in t.inline.values())
        for t in m.tables.values()
    )


def measure(count: int) -> tuple[int, int, Manifest]:
    """(tracemalloc peak during the combine, output column bytes, result)."""
    gc.collect()
    tracemalloc.start()
    try:
        out = combine(series(count), "time")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, _columns_nbytes(out), out


def check_result(m: Manifest, count: int) -> None:
    lengths = [LENGTHS[i % len(LENGTHS)] for i in range(count)]
    total = sum(lengths)
    assert m.nodes["tas"]["zarr.json"]["shape"] == [total, 3, 4]
    assert len(m.sources) == count
    g = entry.open(m, allow=["/data/cmip/"])  # nothing under it is read: tas is never indexed
    np.testing.assert_array_equal(g["time"][...], np.arange(total, dtype="f8"))
    # Edges are each file's chunks clipped to its length; the table is the files' refs in order.
    expect_edges = [e for n in lengths for e in [CHUNK] * (n // CHUNK) + ([n % CHUNK] if n % CHUNK else [])]
    assert g["tas"].chunk_sizes[0] == tuple(expect_edges)
    t = m.tables["tas"]
    per_file = [-(-n // CHUNK) for n in lengths]
    np.testing.assert_array_equal(t.source, np.repeat(np.arange(count), per_file))
    np.testing.assert_array_equal(t.length, np.concatenate([480 + np.arange(k) for k in per_file]).astype(np.uint64))
    assert [s.url for s in m.sources[:2]] == ["/data/cmip/tas_day_model_00000.nc", "/data/cmip/tas_day_model_00001.nc"]


def _per_input(small: int, large: int) -> tuple[float, float, float]:
    """Peak bytes per input (at ``large``), growth per input beyond the columns, column bytes per input."""
    # Warm up first: caches filled on first use (codec registry, parsed metadata) are not per input.
    check_result(combine(series(8), "time"), 8)
    p1, c1, _ = measure(small)
    p2, c2, m = measure(large)
    check_result(m, large)
    growth = (p2 - p1) / (large - small)
    cols = (c2 - c1) / (large - small)
    print(f"\ncombine of {large} manifests: peak {p2 / 1e6:.2f} MB = {p2 / large:.0f} B/input; growth "
          f"{growth:.0f} B/input of which output tables (columns, inline bytes) {cols:.0f} B/input")
    return p2 / large, growth - cols, cols


def test_memory_per_input_is_bounded():
    # Before streaming (a normalised zarr.json, VarInfo and ChunkTable per input and variable
    # kept to the end): ~13 KB/input.  Now a few integers per piece plus the column blocks and
    # edges; beyond the output's tables what grows per input is mostly other output content
    # (source records ~260 B) and the time coordinate held as values and as input bytes until
    # the end decides which the output keeps (~500 B).
    total, beyond, cols = _per_input(200, 2000)
    assert beyond < 2048, f"{beyond:.0f} B/input beyond the output columns"
    assert total < 3072


@pytest.mark.slow
def test_memory_per_input_is_bounded_10000():
    total, beyond, cols = _per_input(2000, 10_000)
    assert beyond < 2048, f"{beyond:.0f} B/input beyond the output columns"
    assert total < 3072


def refs(m: Manifest, path: str) -> list[tuple]:
    """Every chunk as (url, offset, length): tables compared independently of source numbering."""
    t = m.tables[path]
    urls = [m.sources[int(s)].url if s >= 0 else None for s in t.source]
    return list(zip(urls, t.offset.tolist(), t.length.tolist()))


def test_generator_list_and_reverse_agree():
    inputs = list(series(40))
    streamed = combine(series(40), "time")
    check_result(streamed, 40)
    listed = combine(inputs, "time")
    # Reversed: sorted back by time (blocks not in output order: the general placement path).
    reverse = combine(inputs[::-1], "time")
    assert listed.tables["tas"] == streamed.tables["tas"]
    for other in (listed, reverse):
        assert other.nodes["tas"] == streamed.nodes["tas"]
        assert refs(other, "tas") == refs(streamed, "tas")
        assert other.tables["time"] == streamed.tables["time"]
    # A tree of combines gives the same result.
    tree = combine([combine(inputs[:13], "time"), combine(inputs[13:30], "time"), *inputs[30:]], "time")
    assert tree.nodes["tas"] == streamed.nodes["tas"]
    assert refs(tree, "tas") == refs(streamed, "tas")


def test_content_ids_and_inline_chunks_are_carried():
    inputs = list(series(6))
    for k, m in enumerate(inputs):
        t = m.tables["tas"]
        for c in range(t.nchunks):
            if (k + c) % 2 == 0:  # some inputs record content ids for some chunks
                t.set_cid((c, 0, 0), bytes([1, 0x55, 0x12, 0x20]) + bytes([k, c]) * 16)
        t.set_inline((0, 0, 0), b"inline-%d" % k)
    out = combine(inputs[::-1], "time")
    t = out.tables["tas"]
    row = 0
    for k, m in enumerate(inputs):
        src = m.tables["tas"]
        for c in range(src.nchunks):
            assert t.cid_of(row + c) == src.cid_of(c)
        assert t.inline[row] == b"inline-%d" % k
        row += src.nchunks


def test_content_id_width_mismatch_names_input():
    from chunkref.errors import CombineError

    a, b = list(series(2))
    a.tables["tas"].set_cid((0, 0, 0), bytes(36))
    b.tables["tas"].set_cid((0, 0, 0), bytes(40))
    with pytest.raises(CombineError) as ei:
        combine([a, b], "time")
    assert ei.value.variable == "tas" and ei.value.field == "cid"


def test_combine_many_scans_urls_in_waves(tmp_path, monkeypatch):
    # URLs are scanned as the first level of the tree runs, a wave at a time, never all first.
    import chunkref.many as many
    from test_combine import make_nc, nc_values

    files, start = [], 0
    for i, n in enumerate([31, 28, 31, 30, 31, 30, 31]):
        files.append(make_nc(tmp_path / f"w{i}.nc", n, start, seed=i))
        start += n
    waves = []
    real = many.scan_many

    def spy(urls, **kw):
        waves.append(len(urls))
        return real(urls, **kw)

    monkeypatch.setattr(many, "scan_many", spy)
    monkeypatch.setattr(many, "WAVE", 4)
    m = many.combine_many(files, "time", batch_size=2)
    assert waves == [4, 3]
    arr = entry.open(m)["tas"]  # scanned by this run: readable without allow=
    np.testing.assert_array_equal(np.asarray(arr[...]), nc_values(files))
    assert arr.chunk_sizes[0][:7] == (10, 10, 10, 1, 10, 10, 8)
    assert m.nodes["tas"] == combine(files, "time").nodes["tas"]
