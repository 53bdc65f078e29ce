"""``chunkref repo ...``: create and care for content-addressed repositories.

Subcommands: ``init``, ``log``, ``diff``, ``branch``, ``tag``, ``import``, ``verify``, ``gc``,
``export``.  ``verify`` exits 1 when it finds problems.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from typing import Any

from chunkref.errors import InvalidArgumentError


def _duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d`` -> timedelta."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 3600, 30m, 12h, 7d)")
    n = float(m.group(1))
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return timedelta(seconds=n * unit)


def register(sub: Any) -> None:
    p = sub.add_parser("repo", help="content-addressed repositories: init, log, diff, branch, tag, import, verify, gc, export")
    rs = p.add_subparsers(dest="repo_command", metavar="ACTION")

    def add(name: str, help: str) -> argparse.ArgumentParser:
        q = rs.add_parser(name, help=help)
        q.add_argument("repo", help="repository directory or URL")
        q.add_argument("--allow", action="append", default=[], metavar="PREFIX",
                       help="URL prefix virtual chunks may be read from (repeatable)")
        return q

    q = add("init", "create a repository (branch main with an empty first commit)")
    q.add_argument("--hash", default="sha2-256", choices=["sha2-256", "blake3"], help="content-id hash function")
    q = add("log", "commits of a branch, tag or commit, newest first")
    q.add_argument("version", nargs="?", default="main")
    q.add_argument("-n", "--limit", type=int, default=None)
    q.add_argument("--json", action="store_true")
    q = add("diff", "what changed between two versions")
    q.add_argument("a")
    q.add_argument("b")
    q.add_argument("--json", action="store_true")
    q = add("branch", "list, create, delete or reset branches")
    q.add_argument("action", nargs="?", default="list", choices=["list", "create", "delete", "reset"])
    q.add_argument("name", nargs="?")
    q.add_argument("at", nargs="?", help="version to create at / reset to")
    q.add_argument("--expected", help="reset only if the branch still points here")
    q = add("tag", "list, create or delete tags")
    q.add_argument("action", nargs="?", default="list", choices=["list", "create", "delete"])
    q.add_argument("name", nargs="?")
    q.add_argument("at", nargs="?", default="main")
    q = add("import", "commit a manifest, or an HDF5/NetCDF file (scanned), as virtual references")
    q.add_argument("manifest", help="manifest (kerchunk JSON, parquet, native) or a file to scan")
    q.add_argument("--path", default="", help="group path to import under")
    q.add_argument("--branch", default="main")
    q.add_argument("-m", "--message")
    q = add("verify", "re-hash every reachable object")
    q.add_argument("--virtual", action="store_true", help="also read and check virtual sources")
    q = add("gc", "delete unreachable objects older than a grace period")
    q.add_argument("--older-than", type=_duration, default=timedelta(days=1), help="grace period (default 1d)")
    q.add_argument("--dry-run", action="store_true")
    q.add_argument("--full", action="store_true", help="list every object instead of using change summaries")
    q = add("export", "write a version as a plain Zarr store")
    q.add_argument("version")
    q.add_argument("target")
    p.set_defaults(func=run)


def _open(args: argparse.Namespace) -> Any:
    from chunkref.repo import Repository

    return Repository.open(args.repo, allow=args.allow or None)


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "repo_command", None)
    if cmd is None:
        raise InvalidArgumentError("give an action: init, log, diff, branch, tag, import, verify, gc, export")
    from chunkref.repo import Repository

    if cmd == "init":
        repo = Repository.create(args.repo, hash_function=args.hash)
        print(f"created repository {args.repo} (hash {repo.hash_function}); main at {repo.resolve('main')}")
        return 0
    repo = _open(args)
    if cmd == "log":
        commits = repo.log(args.version, limit=args.limit)
        if args.json:
            print(json.dumps([{"commit": c.cid, "parents": list(c.parents), "author": c.author,
                               "time": c.time.isoformat(), "message": c.message} for c in commits], indent=2))
        else:
            for c in commits:
                print(f"commit {c.cid}\nAuthor: {c.author}\nDate:   {c.time.isoformat()}\n\n    {c.message}\n")
        return 0
    if cmd == "diff":
        d = repo.diff(args.a, args.b)
        print(json.dumps(d.to_json(), indent=2) if args.json else d)
        return 0
    if cmd == "branch":
        if args.action == "list":
            for name, c in repo.list_branches().items():
                print(f"{name}\t{c}")
        elif args.action == "create":
            _need(args.name, "branch name")
            print(repo.create_branch(args.name, args.at or "main"))
        elif args.action == "delete":
            _need(args.name, "branch name")
            repo.delete_branch(args.name)
        else:
            _need(args.name, "branch name")
            _need(args.at, "version to reset to")
            repo.reset_branch(args.name, args.at, expected=args.expected)
        return 0
    if cmd == "tag":
        if args.action == "list":
            for name, c in repo.list_tags().items():
                print(f"{name}\t{c}")
        elif args.action == "create":
            _need(args.name, "tag name")
            print(repo.create_tag(args.name, args.at))
        else:
            _need(args.name, "tag name")
            repo.delete_tag(args.name)
        return 0
    if cmd == "import":
        from chunkref.entry import scan

        # scan() loads manifests as they are and scans HDF5 / NetCDF / Zarr sources.
        manifest = scan(args.manifest)
        if manifest.refused:
            listed = "; ".join(f"{k}: {v}" for k, v in sorted(manifest.refused.items()))
            raise InvalidArgumentError(f"{args.manifest}: variables that cannot be represented: {listed}")
        message = args.message or f"Import {args.manifest}"
        print(repo.import_manifest(manifest, args.path, branch=args.branch, message=message))
        return 0
    if cmd == "verify":
        report = repo.verify(virtual=args.virtual)
        print(report)
        return 0 if report.ok else 1
    if cmd == "gc":
        print(repo.gc(args.older_than, dry_run=args.dry_run, full=args.full))
        return 0
    if cmd == "export":
        print(repo.export(args.version, args.target))
        return 0
    raise InvalidArgumentError(f"unknown repo action {cmd!r}")


def _need(value: Any, what: str) -> None:
    if not value:
        raise InvalidArgumentError(f"missing {what}")
