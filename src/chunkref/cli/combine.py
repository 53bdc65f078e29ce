"""``chunkref combine A B C -o OUT --concat-dim time``: combine manifests or files into one."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "combine",
        help="combine manifests (or HDF5/NetCDF files) along a dimension; uneven lengths give a rectilinear grid",
    )
    p.add_argument("inputs", nargs="+", help="manifest files, or HDF5/NetCDF files to scan")
    p.add_argument("-o", "--output", required=True, help="where to write the combined manifest")
    p.add_argument("--concat-dim", action="append", default=None, metavar="DIM",
                   help="dimension to concatenate along (repeat for a mosaic; default: time)")
    p.add_argument("--merge", action="store_true", help="only merge variables (no concatenation)")
    p.add_argument("--coord-regex", action="append", default=[], metavar="DIM=REGEX",
                   help="values of a (new) dimension from the file names, e.g. member=_r(\\d+)i")
    p.add_argument("--identical", action="append", default=[], metavar="VAR",
                   help="variable copied from the first input without checks (repeatable)")
    p.add_argument("--conflicts", choices=("error", "first", "drop"), default="error",
                   help="variables that differ between inputs (default: error)")
    p.add_argument("--attrs", choices=("error", "first", "drop"), default="first",
                   help="attributes that differ (default: first)")
    p.add_argument("--no-sort", action="store_true", help="keep the given order instead of sorting by coordinate")
    p.add_argument("--batch-size", type=int, default=0, metavar="N",
                   help="tree-reduce in batches of N inputs (default: one pass)")
    p.add_argument("--format", choices=("native", "kerchunk", "parquet"), default=None,
                   help="output format (default: from the name: kerchunk JSON for .json, parquet for .parquet, "
                        "else chunkref's native directory, which can hold any combined result)")
    p.add_argument("--allow", action="append", default=[], metavar="PREFIX",
                   help="source prefix the inputs may reference (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chunkref.errors import InvalidArgumentError
    from chunkref.manifest.combine import combine
    from chunkref.manifest.manifest import manifest_format
    from chunkref.many import combine_many

    coords = {}
    for spec in args.coord_regex:
        dim, sep, rx = spec.partition("=")
        if not sep or not dim:
            raise InvalidArgumentError(f"--coord-regex expects DIM=REGEX, got {spec!r}")
        try:
            coords[dim] = re.compile(rx)
        except re.error as exc:
            raise InvalidArgumentError(f"--coord-regex {spec!r}: {exc}") from exc
    concat = None if args.merge else (args.concat_dim or ["time"])
    if concat is not None and len(concat) == 1:
        concat = concat[0]
    kwargs = dict(
        coords=coords,
        identical_dims=args.identical,
        conflicts=args.conflicts,
        attrs=args.attrs,
        sort=not args.no_sort,
        allow=args.allow,
    )
    if args.batch_size:
        m = combine_many(args.inputs, concat, batch_size=args.batch_size, **kwargs)
    else:
        m = combine(args.inputs, concat, **kwargs)
    fmt = args.format or manifest_format(args.output)
    if fmt == "kerchunk":
        _check_kerchunk(m, args.output)
    m.save(args.output, format=fmt)
    shapes = {p: m.nodes[p]["zarr.json"]["shape"] for p in m.arrays() if "zarr.json" in m.nodes[p]}
    print(f"combined {len(args.inputs)} inputs into {args.output}: "
          + ", ".join(f"{p} {tuple(s)}" for p, s in sorted(shapes.items())), file=sys.stderr)
    if m.refused:
        for p, why in sorted(m.refused.items()):
            print(f"refused {p}: {why}", file=sys.stderr)
        return 1
    return 0


def _check_kerchunk(m: Any, output: str) -> None:
    """Refuse, before writing anything, a result kerchunk JSON cannot express (files of different
    lengths give rectilinear grids, partial chunks stored padded give ``chunkref.padded``), naming
    the array and pointing to the native format, which holds any combined result."""
    from chunkref.errors import ManifestError
    from chunkref.manifest.kerchunk import v3_to_v2_documents

    for path in m.arrays():
        docs = m.nodes[path]
        if "zarr.json" not in docs:
            continue
        try:
            v3_to_v2_documents(path, docs)
        except ManifestError as exc:
            stem = re.sub(r"\.json$", "", output, flags=re.IGNORECASE) or output
            raise ManifestError(
                f"{output}: kerchunk JSON cannot express the combined array {path!r} ({exc}); write chunkref's "
                f"native format instead: an output name not ending in .json (e.g. -o {stem}) or --format native"
            ) from exc
