"""``partsim book ...``: build the Jupyter Book (every chapter executed once) or run one chapter notebook."""

from __future__ import annotations

import argparse
import sys

from partsim_core.book.build import build_book, main_summary
from partsim_core.book.run import run_chapter
from partsim_core.cli.options import (
    add_command_group,
    add_data_root,
    add_device,
    add_fresh,
    add_jobs,
    add_no_progress,
    add_out_dir,
    add_preset,
    add_seed,
    seed_count,
)


def _build(args: argparse.Namespace) -> int:
    """``partsim book build``: data step, papermill execution of each chapter, jupyter-book HTML, results JSON."""

    result = build_book(
        preset=args.preset,
        data_root=args.data_root or None,
        abx_dir=args.abx,
        out_dir=args.out_dir,
        device=args.device,
        seed=args.seed,
        seeds=args.seeds,
        fresh=args.fresh,
        progress=not args.no_progress,
        jobs=args.jobs,
    )
    print(main_summary(result))
    return 0


def _run(args: argparse.Namespace) -> int:
    """``partsim book run CHAPTER``: one notebook executed into an .ipynb, its HTML page and its results."""

    parameters = {"preset": args.preset, "data_root": args.data_root, "device": args.device, "seed": args.seed,
                  "fresh": args.fresh}
    run = run_chapter(args.chapter, parameters, overrides=[tuple(pair) for pair in args.parameter or []],
                      out_dir=args.out_dir, fresh=args.fresh)
    print(f"partsim book run: {run.chapter} executed -> {run.notebook}, {run.page}", file=sys.stderr)
    for path in run.results:
        print(f"partsim book run: results -> {path}", file=sys.stderr)
    print(run.page)
    return 0


def _add_shared(parser: argparse.ArgumentParser) -> None:
    """Options every chapter notebook may take (passed only to notebooks whose parameters cell declares them)."""
    add_preset(parser)
    add_data_root(parser)
    add_device(parser)
    add_seed(parser)


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``book`` group and its ``build`` and ``run`` commands."""
    commands = add_command_group(
        subparsers, "book",
        help="build the Jupyter Book, or run one chapter notebook",
        description="Build the partsim Jupyter Book, or execute one chapter notebook with other parameters.",
    )

    build = commands.add_parser(
        "build",
        help="run the data step, execute every chapter notebook, render the HTML book, collect the results",
        description=(
            "Build the book in five steps: (1) the data step - generate the preset's embedded mini-Slakh dataset "
            "into the cache unless --data-root is given (reused when already there); (2) the training step - train "
            "every model the chapters use (or find it in the artefact cache) in --jobs worker processes with one "
            "thread each, so the notebooks reuse them (--jobs 1 skips it: each notebook trains its models one "
            "after another, as 'partsim train all' would with --jobs 1); (3) execute every chapter "
            "notebook listed in _toc.yml exactly once with papermill, passing preset, data_root, device, seed, "
            "seeds and fresh (and abx_dir) to the notebooks whose parameters cell declares them; a failing cell stops the "
            "build with an error naming the notebook and the cell; (4) render the HTML with jupyter-book without "
            "executing again, code cells collapsed behind a toggle; (5) publish OUT-DIR/html (audio files beside "
            "the pages) and OUT-DIR/results/<chapter>.json, the results each chapter published; without --out-dir, OUT-DIR "
            "is _build in the repository, whose html/ and results/ every build replaces. Plotly figures "
            "work offline: plotly.js is shipped once with the book, nothing is loaded from the internet."
        ),
        epilog="Example: partsim book build --preset smoke --out-dir /tmp/partsim-book",
    )
    _add_shared(build)
    build.add_argument("--seeds", type=seed_count, default=None, metavar="N",
                       help="training seeds of every model (default: the preset's: 1 for smoke, 3 for default and "
                            "paper); every interval includes the seed-to-seed spread")
    build.add_argument(
        "--abx", default=None, metavar="DIR",
        help="folder of the Inst-Sim-ABX listening-test dataset (with csvs/ and sample_configs/) for chapter 5; "
             "default: the chapter's own default location",
    )
    add_out_dir(build, "the book (html/) and the chapters' results (results/<chapter>.json)")
    add_fresh(build, "an existing --out-dir partsim wrote (also passed to chapters that take 'fresh')")
    add_jobs(build, "worker processes of the training step; 1 = no training step (the notebooks train)")
    add_no_progress(build)
    build.set_defaults(func=_build)

    run = commands.add_parser(
        "run",
        help="execute one chapter notebook into an executed .ipynb and its HTML page",
        description=(
            "Execute one chapter notebook (its jupytext source is converted in memory) with papermill and write "
            "OUT-DIR/<chapter>.ipynb, OUT-DIR/<chapter>.html (works offline), the audio files of its players "
            "(OUT-DIR/<chapter>_media/) and the results it publishes (OUT-DIR/<name>.json); without --out-dir, OUT-DIR is "
            "_build/run/<chapter> in the repository, replaced by each run. --preset, --data-root, "
            "--device and --seed reach the notebook when its parameters cell declares them; -p sets any declared "
            "parameter."
        ),
        epilog="Example: partsim book run ch3 --preset smoke -p backend oracle --out-dir /tmp/ch3",
    )
    run.add_argument("chapter", metavar="CHAPTER",
                     help="chapter notebook: its name (ch3_separation_baseline), a unique prefix (ch3, data) or "
                          "its source path")
    _add_shared(run)
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="set a parameter of the notebook's parameters cell (repeatable); VALUE is read as an "
                          "int, float, True/False/None or else a string, as papermill does")
    add_out_dir(run, "the executed notebook, its page, audio and results")
    add_fresh(run, "an existing --out-dir partsim wrote (also passed to chapters that take 'fresh')")
    add_no_progress(run)
    run.set_defaults(func=_run)
