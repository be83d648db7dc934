"""``partsim data ...`` commands (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` group."""
    parser = subparsers.add_parser("data", help="data commands")
    parser.set_defaults(group_parser=parser)
    parser.add_subparsers(title="commands", metavar="COMMAND")
