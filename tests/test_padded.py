"""The chunkref.padded codec: configuration, round trips through a pipeline, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from chunkref.errors import CodecError
from chunkref.zarr.codecs import CodecPipeline, get_codec_class
from chunkref.zarr.codecs.base import ChunkSpec
from chunkref.zarr.codecs.padded import PaddedCodec, decode_edges, encode_edges


def test_registered_and_json_round_trip():
    codec = PaddedCodec.from_edges([[10, 10, 1, 10, 8], [4]], [[10, 10, 10, 10, 10], [4]])
    js = codec.to_json()
    assert js["name"] == "chunkref.padded"
    assert js["configuration"]["stored_shapes"] == [10, [4]]
    assert get_codec_class("chunkref.padded").from_json(js["configuration"]) == codec
    assert codec.stored_shape((1, 4)) == (10, 4) and codec.stored_shape((8, 4)) == (10, 4)


def test_edges_rle():
    edges = [10, 10, 10, 1, 10, 10, 10, 8]
    assert decode_edges(encode_edges(edges), "x") == tuple(edges)
    assert encode_edges([5, 5, 5]) == 5


def test_pipeline_decodes_padded_chunk_and_crops():
    codec = PaddedCodec.from_edges([[10, 1]], [[10, 10]])
    pipe = CodecPipeline.from_v3([codec.to_json(), {"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip"}], "f4", (10,))
    full = np.arange(10, dtype="f4")
    stored = CodecPipeline.from_v3([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "gzip"}], "f4", (10,)).encode(full, ChunkSpec((10,), np.dtype("f4"), np.float32(0)))
    spec = ChunkSpec((1,), np.dtype("f4"), np.float32(-1))
    np.testing.assert_array_equal(pipe.decode(stored, spec), full[:1])
    # Encoding pads with the fill value and decodes back.
    enc = pipe.encode(np.array([7.0], "f4"), spec)
    np.testing.assert_array_equal(pipe.decode(enc, spec), [7.0])


def test_refusals():
    with pytest.raises(CodecError, match="two stored edges"):
        PaddedCodec.from_edges([[10, 10]], [[10, 12]])
    with pytest.raises(CodecError, match="at least the declared"):
        PaddedCodec.from_edges([[10]], [[5]])
    with pytest.raises(CodecError, match="axes"):
        PaddedCodec.from_json({"chunk_shapes": [1, 2], "stored_shapes": [1]})
    with pytest.raises(CodecError, match="unknown configuration"):
        PaddedCodec.from_json({"chunk_shapes": [1], "stored_shapes": [1], "x": 1})
