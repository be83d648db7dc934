"""``partsim perceptual ...`` commands (placeholder until its issue lands)."""

from __future__ import annotations

import argparse


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``perceptual`` group."""
    parser = subparsers.add_parser("perceptual", help="perceptual commands")
    parser.set_defaults(group_parser=parser)
    parser.add_subparsers(title="commands", metavar="COMMAND")
