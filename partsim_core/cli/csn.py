"""``partsim csn ...``: chapter 4's conditional similarity network (CSN) and its conditions (a)-(k).

* ``partsim csn conditions [--json]``: every condition (Table 4.2's (a)-(i), Table 4.3's (j), (k)) and its switches.
* ``partsim csn run --preset P [--seeds N] [--conditions a,e,i] --out FILE.json``: train what is missing, then
  compute Tables 4.1-4.6 (every accuracy and rate with a 95 % interval), the findings with their verdicts and the
  style-leakage measure; prints the tables and writes the chapter's JSON to ``--out``.
* ``partsim train csn --condition i|all --preset P [--seeds N]``: train (or reuse) one condition's CSN, or every
  trained condition (b)-(k) in turn, for each seed.

Runs go through the shared training engine: a finished model with the same config is reused, a checkpoint is
resumed; conditions with pre-training share one cached pre-trained network per seed.
"""

from __future__ import annotations

import argparse
import json
import math

from partsim_core.cli.options import (
    add_command_group,
    add_run_options,
    add_seeds,
    add_training_options,
)
from partsim_core.csn.crossover import SWEEP_ENTRIES, sweep_for
from partsim_core.csn.listening import interval_table
from partsim_core.csn.run import run_chapter4
from partsim_core.data.dataset import load_dataset
from partsim_core.data.outputs import check_output_file, write_json_output
from partsim_core.errors import PartsimError

#: Accepted ``--condition`` values (listed here so that ``--help`` needs no torch import).
CONDITION_LETTERS = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k")

#: Accepted ``--pretraining-targets`` values (``partsim_core.csn.pretraining.PRETRAINING_TARGETS``).
TARGET_CHOICES = ("pretraining", "chapter3")


def run_conditions(args: argparse.Namespace) -> int:
    """``partsim csn conditions``: print the registry (a table, or JSON with ``--json``)."""
    from partsim_core.csn.conditions import (
        CONDITIONS,
        EXTRA_CONDITIONS,
        condition_switches,
        conditions_table,
    )

    if args.json:
        print(json.dumps([condition_switches(c) for c in (*CONDITIONS.values(), *EXTRA_CONDITIONS.values())],
                         indent=2))
        return 0
    table = conditions_table()
    flags = table.drop(columns=["description"]).replace({True: "w/", False: ""})
    flags["description"] = table["description"]
    print(flags.to_string())
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``partsim train csn``: train one condition (or all) for each seed, printing one JSON line per run."""
    from partsim_core.csn.conditions import (
        CONDITIONS,
        EXTRA_CONDITIONS,
        get_condition,
        train_condition,
    )

    if args.condition == "all":
        letters = [c.letter for c in (*CONDITIONS.values(), *EXTRA_CONDITIONS.values()) if not c.is_baseline]
    else:
        letters = [get_condition(args.condition).letter]
    progress = not args.no_progress
    data = load_dataset(args.preset, args.data_root, progress=progress)
    for letter in letters:
        for seed in range(args.seed, args.seed + args.seeds):
            result = train_condition(letter, data, device=args.device, epochs=args.epochs, resume=not args.fresh,
                                     progress=progress, seed=seed, targets=args.pretraining_targets)
            history = result.history or []
            print(json.dumps({"model": "csn", "condition": letter, "seed": seed, "preset": args.preset,
                              "out_dir": str(result.out_dir), "reused": bool(result.reused),
                              "epochs_trained": len(history),
                              "final_train_loss": history[-1].get("train_loss") if history else None,
                              "final_val_loss": history[-1].get("val_loss") if history else None},
                             default=str), flush=True)
    return 0


def parse_conditions(text: str) -> list[str] | str:
    """``all`` or a comma-separated list of condition letters (``a,e,i``); argparse type of ``--conditions``."""
    if text.strip().lower() == "all":
        return "all"
    letters = [item.strip().lower().strip("()") for item in text.split(",") if item.strip()]
    unknown = [letter for letter in letters if letter not in CONDITION_LETTERS]
    if not letters or unknown:
        raise argparse.ArgumentTypeError(f"expected 'all' or letters from {', '.join(CONDITION_LETTERS)} separated "
                                         f"by commas, got {text!r}")
    return letters


def parse_crossover(text: str) -> tuple[str, ...]:
    """Comma-separated separators of the Table 4.2 crossover, or ``none``; argparse type of ``--crossover``."""
    try:
        return sweep_for("", text)
    except PartsimError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _interval_table(frame, low, high, digits: int) -> str:
    """``value [low, high]`` per cell, as text."""
    cells = frame.copy().astype(object)
    for row in frame.index:
        for column in frame.columns:
            value = frame.at[row, column]
            cells.at[row, column] = "–" if math.isnan(value) else (
                f"{value:.{digits}f} [{low.at[row, column]:.{digits}f}, {high.at[row, column]:.{digits}f}]")
    return cells.to_string()


def run_chapter(args: argparse.Namespace) -> int:
    """``partsim csn run``: run chapter 4, print its tables and write its JSON."""

    inputs = [args.data_root or None]
    if args.out is not None:
        check_output_file(args.out, inputs, fresh=args.fresh)
    progress = not args.no_progress
    data = load_dataset(args.preset, args.data_root, progress=progress)
    results = run_chapter4(data, conditions=args.conditions, seeds=args.seeds, seed=args.seed, epochs=args.epochs,
                           device=args.device, backend=args.backend, progress=progress, fresh=args.fresh,
                           log=lambda message: print(message, flush=True), crossover=args.crossover)
    for name, digits in (("table_4_1", 1), ("table_4_2", 1), ("table_4_3", 1), ("table_4_4", 3)):
        frame = results.frame(name)
        if len(frame):
            print(f"\n{name} (value [95 % interval])\n"
                  + _interval_table(frame, results.frame(name, "low"), results.frame(name, "high"), digits))
    lows, highs = results.frame("table_4_5", "low"), results.frame("table_4_5", "high")
    for block, frame in results.frame("table_4_5").items():
        print(f"\ntable_4_5{block} (value [95 % interval])\n"
              + _interval_table(frame, lows[block], highs[block], 3))
    for perspective, table in results.table_4_6.items():
        print(f"\nTable 4.6 ({perspective}, {results.listening_test}; value [95 % interval], %)\n"
              f"{interval_table(table).to_string()}")
    print("\nfindings (a claim holds when its whole 95 % interval lies above 0)")
    for found in results.findings:
        low, high = found["interval"]
        print(f"  {found['verdict']:>13}: {found['claim']}: {found['estimate']:.3f} [{low:.3f}, {high:.3f}]")
    if args.out is not None:
        write_json_output(args.out, results.to_json(), inputs, fresh=args.fresh, command="csn run")
        print(f"wrote {args.out}")
    return 0


def register_train_command(train_commands: argparse._SubParsersAction) -> None:
    """Add ``partsim train csn`` (to the ``train`` group, beside ``separator`` and ``part``)."""
    train = train_commands.add_parser(
        "csn",
        help="train (or reuse) the CSN of one condition, or of all trained conditions",
        description=(
            "Train the CSN of one condition (thesis Table 4.2's (b)-(i), Table 4.3's (j), (k)) through the shared "
            "training engine, or reuse it from the artefact cache, for each seed. (b) is the pre-trained network "
            "itself; (e), (h), (i), (j) start from it (trained once per seed, shared). (a) is the chapter-3 "
            "baseline and is trained with 'partsim train part --input separated'. Prints one JSON line per run."
        ),
        epilog="Example: partsim train csn --condition i --preset smoke --seeds 2",
    )
    train.add_argument(
        "--condition", required=True, choices=[*CONDITION_LETTERS, "all"],
        help="a Table 4.2 row (a-i), j or k (Table 4.3's extra rows), or all = every trained condition (b)-(k)",
    )
    train.add_argument(
        "--pretraining-targets", choices=TARGET_CHOICES, default="pretraining",
        help="target networks of the pre-training: 'pretraining' = trained on the pre-training pieces (thesis "
             "4.4.1), 'chapter3' = chapter 3's ideal networks (all training tracks); default: %(default)s",
    )
    add_training_options(train, "this condition's checkpoint and finished model (a cached pre-training is still "
                                "reused, except for condition b)")
    add_seeds(train)
    train.set_defaults(func=run_train)


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``csn`` group and its ``conditions`` and ``run`` commands."""
    commands = add_command_group(
        subparsers, "csn",
        help="chapter 4: the CSN's ablation conditions (a)-(k) and their evaluation",
        description=(
            "Chapter 4: one network with five instrument subspaces (a conditional similarity network), trained "
            "with pseudo musical pieces, the norm loss and pre-training; the conditions of thesis Tables 4.2 and "
            "4.3 switch these on and off. Train one condition with 'partsim train csn'."
        ),
    )

    conditions = commands.add_parser(
        "conditions", help="print the conditions (a)-(k) and their switches",
        description="Print every condition: thesis Table 4.2's (a)-(i) and Table 4.3's (j), (k), with baseline, "
                    "norm, psd, basic, add, pre and created_silences ('w/' = on).")
    conditions.add_argument("--json", action="store_true", help="print the conditions as a JSON list")
    conditions.set_defaults(func=run_conditions)

    run = commands.add_parser(
        "run",
        help="run chapter 4: train what is missing, then compute Tables 4.1-4.6 with intervals and the findings",
        description=(
            "Run chapter 4 as the book does: train or reuse the chosen conditions for each seed (and the chapter-3 "
            "networks condition (a) needs), embed the filtered test split, and compute Tables 4.1-4.6 (4.6 on a "
            "simulated listening test over the embedded dataset) with 95 % intervals (bootstrap over test tracks, "
            "seeds included), the thesis's findings with their verdicts, and our style-leakage measure."
        ),
        epilog="Example: partsim csn run --preset smoke --seeds 2 --out /tmp/ch4.json",
    )
    add_run_options(run)
    run.add_argument("--conditions", type=parse_conditions, default="all", metavar="LIST",
                     help="'all' (a-k) or comma-separated letters, e.g. a,e,i (default: all)")
    run.add_argument("--backend", default="unet",
                     help="separator of condition (a): unet, oracle, spleeter, demucs (default: unet)")
    run.add_argument("--crossover", type=parse_crossover, default=None, metavar="LIST",
                     help="separators of the Table 4.2 crossover (needs condition a): comma-separated from "
                          f"{', '.join(SWEEP_ENTRIES)}, or 'none' (default: the preset's)")
    run.set_defaults(func=run_chapter)
