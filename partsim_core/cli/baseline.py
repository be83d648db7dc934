"""``partsim baseline run``: the whole of chapter 3 from the command line.

Builds the dataset handle once, runs :func:`partsim_core.baseline.run.run_chapter3` (separator, 11 networks per
seed, Tables 3.1 and 3.2 with 95 % intervals, the separator-quality curve, track-ID from leakage, findings), prints
both tables beside the thesis's numbers and writes the chapter's JSON (``--out FILE``) under the output rule.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from partsim_core.baseline.run import run_chapter3
from partsim_core.baseline.separators import check_backend
from partsim_core.baseline.tables import intervals_frame, table_3_2_columns
from partsim_core.book.thesis_tables import load_thesis_table
from partsim_core.cli.options import add_command_group, add_run_options
from partsim_core.data.dataset import load_dataset
from partsim_core.data.outputs import check_output_file, write_json_output

#: Separator backends (``partsim_core.baseline.separators.BACKENDS``; listed here so that ``--help`` needs no torch).
BACKEND_NAMES = ("oracle", "unet", "spleeter", "demucs")


def run_baseline(args: argparse.Namespace) -> int:
    """``partsim baseline run``: run chapter 3, print its tables and write its JSON."""
    check_backend(args.backend)
    inputs = [args.data_root or None]
    if args.out is not None:
        check_output_file(args.out, inputs, fresh=args.fresh)
    options = {}
    if args.spleeter_python:
        options["spleeter_python"] = str(args.spleeter_python)
    if args.demucs_model:
        options["demucs_model"] = args.demucs_model
    say = (lambda message: print(message, file=sys.stderr, flush=True))
    data = load_dataset(args.preset, args.data_root, progress=not args.no_progress)
    results = run_chapter3(data, backend=args.backend, device=args.device, epochs=args.epochs,
                           seeds=range(args.seed, args.seed + args.seeds), progress=not args.no_progress, log=say,
                           quality_curve=not args.no_quality_curve, fresh=args.fresh, **options)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for number, ours, columns in (("3.2", results.table_3_2, table_3_2_columns()),
                                      ("3.1", results.table_3_1, None)):
            print(f"Table {number} (ours, preset {args.preset}, backend {args.backend}, value [95 % interval]):")
            print(intervals_frame(ours, columns, digits=2).to_string())
            print(f"Table {number} (thesis):")
            print(load_thesis_table(number).to_string(float_format=lambda value: f"{value:.2f}"))
            print()
        for item in results.findings:
            low, high = item["interval"]
            print(f"[{item['verdict']}] {item['claim']}: {item['estimate']:.2f} [{low:.2f}, {high:.2f}]")
    if args.out is not None:
        write_json_output(args.out, results.to_json(), inputs, fresh=args.fresh, command="partsim baseline run")
        print(f"partsim baseline run: results written to {args.out}", file=sys.stderr)
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``baseline`` group and its ``run`` command."""
    commands = add_command_group(
        subparsers, "baseline",
        help="chapter 3: part networks on ideal vs separated stems, kNN track-ID accuracy (Tables 3.1, 3.2)",
        description="Chapter 3 of the thesis: part-level similarity from source-separated stems.",
    )
    run = commands.add_parser(
        "run",
        help="train/reuse every chapter-3 model, evaluate, print Tables 3.1 and 3.2, write the chapter's JSON",
        description=(
            "Run chapter 3: separate every track with --backend (our U-Net is trained on the train split when not "
            "cached), train or reuse 11 networks per seed (drums, bass, piano, guitar, others on ideal and on "
            "separated stems, and the track network on the mix), predict the track ID of every non-silent 3-s test "
            "segment from its 5 nearest neighbours (leave-one-out), measure the separation quality (SDR, SIR, SAR "
            "with fast_bss_eval), the accuracy against separator quality and the track-ID from leakage alone. "
            "Prints Tables 3.1 and 3.2 (95 % intervals, bootstrap over test tracks and seeds) with the thesis's "
            "numbers, and the findings with their verdicts."
        ),
        epilog="Example: partsim baseline run --preset smoke --seeds 3 --out ch3.json",
    )
    add_run_options(run)
    run.add_argument(
        "--backend", default="unet", metavar="NAME",
        help=f"source separator: one of {', '.join(BACKEND_NAMES)} (oracle = the ideal stems; spleeter and "
             "demucs need local installations, see --spleeter-python / --demucs-model); default: %(default)s",
    )
    run.add_argument(
        "--spleeter-python", default=None, metavar="PYTHON",
        help="python executable of a separate environment with spleeter and its 5-stem model (backend spleeter)",
    )
    run.add_argument(
        "--demucs-model", default=None, metavar="NAME",
        help="demucs model name whose weights are available locally (backend demucs)",
    )
    run.add_argument(
        "--no-quality-curve", action="store_true",
        help="skip the separator-quality curve (an earlier U-Net and the test separations of each separator)",
    )
    run.set_defaults(func=run_baseline)
