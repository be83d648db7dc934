"""``partsim baseline run``: the whole of chapter 3 (Tables 3.1 and 3.2) from the command line.

Trains (or reuses) the separator and the 11 chapter-3 networks, evaluates them by kNN track-ID prediction, prints
both tables beside the thesis's numbers and writes the result JSON atomically (``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from partsim_core.cli.train import BACKEND_NAMES, non_negative_int
from partsim_core.presets import PRESETS


def run_baseline(args: argparse.Namespace) -> int:
    """``partsim baseline run``: run chapter 3 and print/write its tables."""
    import pandas as pd

    from partsim_core.baseline.run import check_backend, run_chapter3
    from partsim_core.data.cache import atomic_write_json
    from partsim_core.errors import PartsimError
    from partsim_core.book.thesis_tables import load_thesis_table

    check_backend(args.backend)
    if args.out is not None and args.out.exists() and args.out.is_dir():
        raise PartsimError(f"--out {args.out} is a folder; give a file name such as results.json")
    options = {}
    if args.spleeter_python:
        options["spleeter_python"] = str(args.spleeter_python)
    if args.demucs_model:
        options["demucs_model"] = args.demucs_model
    say = (lambda message: print(message, file=sys.stderr, flush=True))
    results = run_chapter3(args.preset, data_root=args.data_root or "", backend=args.backend, device=args.device,
                           epochs=args.epochs or None, progress=not args.no_progress, seed=args.seed, log=say,
                           **options)
    with pd.option_context("display.precision", 2, "display.width", 160):
        for number, ours in (("3.2", results.table_3_2), ("3.1", results.table_3_1)):
            thesis = load_thesis_table(number)
            print(f"Table {number} (ours, preset {args.preset}, backend {args.backend}):")
            print(ours.to_string(float_format=lambda value: f"{value:.2f}"))
            print(f"Table {number} (thesis):")
            print(thesis.to_string(float_format=lambda value: f"{value:.2f}"))
            print()
    if args.out is not None:
        atomic_write_json(args.out, results.to_json())
        print(f"partsim baseline run: results written to {args.out}", file=sys.stderr)
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``baseline`` group and its ``run`` command."""
    parser = subparsers.add_parser(
        "baseline",
        help="chapter 3: part networks on ideal vs separated stems, kNN track-ID accuracy (Tables 3.1, 3.2)",
        description="Chapter 3 of the thesis: the source-separation baseline.",
    )
    parser.set_defaults(group_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="train/reuse every chapter-3 model, evaluate, print Tables 3.1 and 3.2, write the result JSON",
        description=(
            "Run chapter 3: separate every track with --backend (our U-Net is trained on the train split when not "
            "cached), train or reuse 11 networks (drums, bass, piano, guitar, others on ideal and on separated "
            "stems, and the track-level network on the mix), predict the track ID of every non-silent 3-s test "
            "segment from its 5 nearest neighbours (leave-one-out), and measure the separation quality (SDR, SIR, "
            "SAR with fast_bss_eval) on train and test. Prints Tables 3.1 and 3.2 with the thesis's numbers."
        ),
        epilog="Example: partsim baseline run --preset smoke --out /tmp/ch3.json",
    )
    run.add_argument(
        "--preset", choices=sorted(PRESETS), default="default",
        help="sizes and settings (partsim_core/presets.py): smoke, default or paper; default: %(default)s",
    )
    run.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="a Slakh2100-format dataset folder; default: the preset's embedded generated dataset",
    )
    run.add_argument(
        "--backend", default="unet", metavar="NAME",
        help=f"source separator: one of {', '.join(BACKEND_NAMES)} (oracle = the ideal stems; spleeter and "
             "demucs need local installations, see --spleeter-python / --demucs-model); default: %(default)s",
    )
    run.add_argument(
        "--spleeter-python", type=Path, default=None, metavar="PYTHON",
        help="python executable of a separate environment with spleeter and its 5-stem model (backend spleeter)",
    )
    run.add_argument(
        "--demucs-model", default=None, metavar="NAME_OR_PATH",
        help="demucs model name or local weights path (backend demucs)",
    )
    run.add_argument(
        "--epochs", type=non_negative_int, default=0, metavar="N",
        help="epochs of every part network; 0 = the preset's; default: %(default)s",
    )
    run.add_argument("--seed", type=non_negative_int, default=0, help="seed of every network; default: %(default)s")
    run.add_argument(
        "--device", default="auto",
        help="torch device: auto (CUDA when visible, else CPU), cpu, cuda or cuda:N; default: %(default)s",
    )
    run.add_argument(
        "--out", type=Path, default=None, metavar="FILE",
        help="write the result JSON here (atomically: complete or not at all)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    run.set_defaults(func=run_baseline)
