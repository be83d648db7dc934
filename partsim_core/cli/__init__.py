"""The ``partsim`` command: one entry point, one sub-command group per book chapter.

Each group is a module of this package (``data``, ``train``, ``baseline``, ``perceptual``, ``book``) that exposes
``register_commands(subparsers)``, which adds a parser for the group with its own sub-commands; every leaf parser
sets ``func`` to a callable taking the parsed arguments and returning an exit code. Errors a user can fix are
raised as :class:`~partsim_core.errors.PartsimError` and printed here as one line (exit code 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from partsim_core import __version__
from partsim_core.errors import PartsimError

#: Modules that contribute a command group, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "partsim_core.cli.data",
    "partsim_core.cli.train",
    "partsim_core.cli.baseline",
    "partsim_core.cli.csn",
    "partsim_core.cli.mixquery",
    "partsim_core.cli.perceptual",
    "partsim_core.cli.book",
)


def build_parser() -> argparse.ArgumentParser:
    """Create the full argument parser (all groups registered)."""
    parser = argparse.ArgumentParser(
        prog="partsim",
        description="partsim: reproduce the thesis on part-level music similarity, chapter by chapter.",
        epilog="Run 'partsim GROUP --help' or 'partsim GROUP COMMAND --help' for details.",
    )
    parser.add_argument("--version", action="version", version=f"partsim {__version__}")
    subparsers = parser.add_subparsers(title="command groups", dest="group", metavar="GROUP")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``partsim`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A group without a command: show that group's help (or the top-level help).
        getattr(args, "group_parser", parser).print_help()
        return 2
    try:
        return int(func(args) or 0)
    except PartsimError as error:
        print(f"partsim: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("partsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
