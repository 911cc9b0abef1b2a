"""The ``crossentropy`` command's parser, error handling and dispatch.

Each subcommand's module (:mod:`.fit`, :mod:`.predict`, :mod:`.check`,
:mod:`.bench`) has ``add_parser(sub)``, which adds the subcommand and its
options, and ``run(args, out, err)``, which runs it on two rich consoles and
returns the exit status. Those modules import scikit-learn, rich and
matplotlib only inside ``run``, so that a missing extra is reported by
:func:`main` as one line rather than a traceback.
"""

from __future__ import annotations

import argparse
import sys

import crossentropy as ce

from . import bench, check, fit, predict
from .common import PROG, Parser, UsageError
from .data import DataError

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = {"fit": fit, "predict": predict, "check": check, "bench": bench}  # in --help's order


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Maximum-likelihood classifiers with the cross-entropy family of losses.",
        epilog="User guide: docs/cli.md",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {ce.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return p


def main(argv=None) -> int:
    """Entry point of the ``crossentropy`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(f"{PROG}: error: choose a command: {', '.join(COMMANDS)} "
                             f"(see {PROG} --help)")
        from rich.console import Console

        # rich falls back to 80 columns off a terminal, which wraps the tables: use 120 there.
        out = Console(width=None if sys.stdout.isatty() else 120)
        err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
        return COMMANDS[args.command].run(args, out, err)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except DataError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"{PROG}: error: {e.name or e} is not installed; "
              f"install the command's extras with: pip install 'crossentropy[cli]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
