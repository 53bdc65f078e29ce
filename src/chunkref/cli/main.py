"""``chunkref`` command: one entry point, subcommands registered by the modules that own them.

Exit codes: 0 success, 1 the command ran and found problems (refused variables, failed checks),
2 usage errors or errors that stopped the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from chunkref.errors import ChunkrefError

# Each subcommand module exposes ``register(subparsers)``, which adds its parser and sets
# ``func`` (taking the parsed args, returning an exit code).
_SUBCOMMAND_MODULES = ("chunkref.cli.info", "chunkref.cli.scan", "chunkref.cli.combine", "chunkref.cli.verify", "chunkref.cli.repo")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    import importlib

    parser = argparse.ArgumentParser(prog="chunkref", description="Cloud-friendly, versioned access to array data.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from chunkref import __version__

    return f"chunkref {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except ChunkrefError as exc:
        print(f"chunkref {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
