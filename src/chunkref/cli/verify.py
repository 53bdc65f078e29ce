"""``chunkref verify MANIFEST``: check every reference against its content id and every source
against the size / mtime / ETag recorded at scan time.

Exit codes: 0 clean, 1 something changed or does not match, 2 the check could not run (bad
manifest, unauthorized source, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify",
        help="check references against their content ids and sources against their recorded size/mtime/etag",
    )
    p.add_argument("manifest", help="manifest: native directory, kerchunk JSON or kerchunk parquet")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PREFIX",
        help="source URL prefix the manifest may read (repeatable; the manifest's folder is allowed)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--sources-only", action="store_true", help="only compare source size/mtime/etag (no reads)")
    p.add_argument("--concurrency", type=int, default=None, help="reads in flight (default: io.concurrency)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chunkref.manifest import Manifest

    try:
        manifest = Manifest.load(args.manifest)
    except FileNotFoundError:
        print(f"chunkref verify: error: no manifest at {args.manifest!r}", file=sys.stderr)
        return 2
    report = manifest.verify(
        allow=args.allow,
        check_content=not args.sources_only,
        progress=False if (args.quiet or args.json) else None,
        concurrency=args.concurrency,
    )
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(report.summary())
    return 0 if report.ok else 1
