"""``partsim book ...``: build the Jupyter Book (all chapters executed once, HTML rendered offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from partsim_core.presets import PRESETS


def _build(args: argparse.Namespace) -> int:
    """``partsim book build``: data step, papermill execution of each chapter, jupyter-book HTML."""
    from partsim_core.book.build import build_book, main_summary

    result = build_book(
        preset=args.preset,
        data_root=args.data_root,
        abx_dir=args.abx,
        out=args.out,
        progress=not args.no_progress,
    )
    print(main_summary(result))
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``book`` group and its ``build`` command."""
    parser = subparsers.add_parser(
        "book",
        help="build the Jupyter Book (every chapter executed once)",
        description="Build the partsim Jupyter Book.",
    )
    parser.set_defaults(group_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    build = commands.add_parser(
        "build",
        help="run the data step, execute every chapter notebook, render the HTML book",
        description=(
            "Build the book in three steps: (1) the data step - generate the preset's embedded mini-Slakh dataset "
            "into the cache unless --data-root is given (reused when already there); (2) execute every chapter "
            "notebook listed in _toc.yml exactly once with papermill, passing the parameters preset and data_root "
            "(and abx_dir to chapters that declare it); a failing cell stops the build with an error naming the "
            "notebook and the cell; (3) render the HTML with jupyter-book without executing again. Plotly figures "
            "work offline: plotly.js is shipped once with the book, nothing is loaded from the internet."
        ),
        epilog="Example: partsim book build --preset smoke --out /tmp/partsim-book",
    )
    build.add_argument(
        "--preset", choices=sorted(PRESETS), default="default",
        help="size of data, front end and models for every chapter: smoke (minutes, what CI builds), default "
             "(smallest meaningful setting on 2 CPU cores), paper (the thesis's settings, for real Slakh2100); "
             "default: %(default)s",
    )
    build.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="a Slakh2100-format dataset folder (e.g. the real slakh2100_flac_redux) to use instead of the "
             "preset's embedded generated dataset; passed to every chapter as data_root",
    )
    build.add_argument(
        "--abx", type=Path, default=None, metavar="DIR",
        help="folder of the Inst-Sim-ABX listening-test dataset (with csvs/ and sample_configs/) for chapter 5; "
             "default: the chapter's own default location",
    )
    build.add_argument(
        "--out", type=Path, default=None, metavar="DIR",
        help="where to write the HTML book (replaced atomically; must be empty, new, or a previous book build); "
             "default: _build/html in the repository",
    )
    build.add_argument(
        "--no-progress", action="store_true",
        help="print one line per step instead of progress bars (for logs)",
    )
    build.set_defaults(func=_build)
