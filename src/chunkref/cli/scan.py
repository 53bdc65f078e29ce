"""``chunkref scan FILE... -o OUT``: scan HDF5 / NetCDF files into manifests.

One file: ``OUT`` is the manifest (``.json``: kerchunk JSON; otherwise chunkref's format).
Several files: ``OUT`` is a folder that receives one manifest per file.  Strict by default: a
variable that cannot be represented makes the run fail (exit 1) after a summary naming each
variable and the reason; ``--no-strict`` keeps the manifest without them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("scan", help="scan HDF5 / NetCDF files into reference manifests")
    p.add_argument("files", nargs="+", help="files or URLs to scan")
    p.add_argument("-o", "--output", required=True, help="manifest path (one file) or output folder (several)")
    p.add_argument("--format", choices=("json", "native"), default=None,
                   help="manifest format (default: from the output suffix; .json is kerchunk JSON)")
    p.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    p.add_argument("--inline-threshold", type=int, default=100, help="inline chunks smaller than this many bytes")
    p.add_argument("--skip", action="append", default=[], metavar="VAR", help="variable to leave out (repeatable)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="keep going when variables cannot be represented (they are listed, not included)")
    p.add_argument("--hash", action="store_true", help="compute a content id for every chunk (reads all bytes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _targets(files: list[str], output: str, fmt: str | None) -> list[str]:
    if len(files) == 1 and not output.endswith(("/", os.sep)) and not os.path.isdir(output):
        return [output]
    os.makedirs(output, exist_ok=True)
    suffix = ".chunkref" if fmt == "native" else ".json"
    names = [Path(f.rstrip("/")).name + suffix for f in files]
    if len(set(names)) != len(names):
        names = [f"{i:05d}-{n}" for i, n in enumerate(names)]
    return [os.path.join(output, n) for n in names]


def _progress(total: int, quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="file", desc="scanning", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from chunkref.entry import scan
    from chunkref.errors import ChunkrefError

    targets = _targets(args.files, args.output, args.format)
    bar = _progress(len(args.files), args.quiet)
    failures: list[tuple[str, str]] = []
    refused: list[tuple[str, str, str]] = []
    written = 0
    for src, dst in zip(args.files, targets):
        try:
            manifest = scan(
                src,
                zarr_format=args.zarr_format,
                inline_threshold=args.inline_threshold,
                skip_variables=tuple(args.skip),
            )
            for var, reason in sorted(manifest.refused.items()):
                refused.append((src, var, reason))
            if args.hash:
                manifest.compute_hashes()
            if not (args.strict and manifest.refused):
                manifest.save(dst)
                written += 1
        except ChunkrefError as exc:
            failures.append((src, str(exc)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    for src, var, reason in refused:
        print(f"refused: {src}: {var}: {reason}", file=sys.stderr)
    for src, why in failures:
        print(f"failed: {why if src in why else f'{src}: {why}'}", file=sys.stderr)
    print(f"{written} manifest(s) written, {len(refused)} variable(s) refused, {len(failures)} file(s) failed")
    if failures or (args.strict and refused):
        return 1
    return 0
