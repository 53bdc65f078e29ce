"""``chunkref info PATH``: the hierarchy with shapes, dtypes, chunking and codecs."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="show a store's or manifest's tree: shapes, dtypes, chunking, codecs")
    p.add_argument("path", help="Zarr store (directory, URL, .zip) or manifest")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--allow", action="append", default=[], metavar="PREFIX",
                   help="source prefix a manifest may reference (repeatable)")
    p.set_defaults(func=run)


def describe_array(arr: Any) -> dict[str, Any]:
    """Facts about one array, as plain JSON-able values."""
    grid = arr.chunk_grid
    out: dict[str, Any] = {
        "path": arr.name,
        "shape": list(arr.shape),
        "dtype": str(arr.dtype),
        "zarr_format": arr.zarr_format,
        "fill_value": _jsonable(arr.fill_value),
        "grid": "regular" if grid.is_regular else "rectilinear",
    }
    if grid.is_regular:
        out["chunks"] = list(arr.chunks)
        if arr.shards is not None:
            out["shards"] = list(arr.shards)
    else:
        out["chunk_sizes"] = [_summarise_edges(e) for e in arr.chunk_sizes]
    out["codecs"] = arr.codec_pipeline.to_json() if arr.zarr_format == 3 else _v2_codecs(arr)
    if arr.dimension_names:
        out["dimension_names"] = list(arr.dimension_names)
    return out


def _v2_codecs(arr: Any) -> list[Any]:
    meta = arr.metadata
    return [*(meta.filters or []), *([meta.compressor] if meta.compressor else [])]


def _summarise_edges(edges: tuple[int, ...]) -> Any:
    if len(edges) <= 8:
        return list(edges)
    return f"{len(edges)} chunks, {min(edges)}..{max(edges)}"


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except TypeError:
        return v.item() if hasattr(v, "item") else str(v)


def run(args: argparse.Namespace) -> int:
    import chunkref
    from chunkref.zarr.array import Array

    node = chunkref.open(args.path, mode="r", **({"allow": args.allow} if args.allow else {}))
    if isinstance(node, Array):
        items = [describe_array(node)]
        groups: list[str] = []
    else:
        members = node.members(max_depth=None)
        items = [describe_array(m) for _, m in members if isinstance(m, Array)]
        groups = [m.name for _, m in members if not isinstance(m, Array)]
    if args.json:
        print(json.dumps({"arrays": items, "groups": groups}, indent=2, default=str))
        return 0
    if not isinstance(node, Array):
        print(node.tree())
        print()
    for it in items:
        chunking = it.get("chunks") or it.get("chunk_sizes")
        shards = f" shards={it['shards']}" if "shards" in it else ""
        print(f"{it['path']}: {tuple(it['shape'])} {it['dtype']} {it['grid']} chunks={chunking}{shards}")
        print(f"    codecs: {json.dumps(it['codecs'], default=str)}")
        if "dimension_names" in it:
            print(f"    dims: {it['dimension_names']}")
    return 0
