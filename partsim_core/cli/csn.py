"""``partsim csn ...``: chapter 4's conditional similarity network (CSN) and its ablation conditions (a)-(i).

* ``partsim csn conditions``: the nine conditions of thesis Table 4.2 and their switches, as a table.
* ``partsim train csn --condition i|all --preset P [--epochs N] [--device D] [--fresh]``: train (or reuse) one
  condition's CSN, or every trained condition (b)-(j) in turn (``j``: Table 4.3's "w/pre, wo/norm" row).
* ``partsim csn evaluate --preset P [--conditions a,e,i]``: train what is missing, then compute Tables 4.1-4.6
  and the style-leakage measure; prints the tables and writes them as JSON with ``--out``.

Runs go through the shared training engine: a finished model with the same config is reused, a checkpoint is
resumed; conditions with pre-training share one cached pre-trained network.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from partsim_core.cli.train import non_negative_int
from partsim_core.presets import PRESETS

#: Accepted ``--condition`` values (listed here so that ``--help`` needs no torch import).
CONDITION_LETTERS = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")


def run_conditions(args: argparse.Namespace) -> int:
    """``partsim csn conditions``: print the registry."""
    from partsim_core.csn.conditions import conditions_table

    table = conditions_table()
    flags = table.drop(columns="description").replace({True: "w/", False: ""})
    flags["description"] = table["description"]
    print(flags.to_string())
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``partsim train csn``: train one condition (or all), printing one JSON line per run."""
    from partsim_core.data.dataset import load_dataset
    from partsim_core.csn.conditions import CONDITIONS, EXTRA_CONDITIONS, get_condition, train_condition
    from partsim_core.presets import get_preset

    get_preset(args.preset)
    if args.condition == "all":
        letters = [c.letter for c in (*CONDITIONS.values(), *EXTRA_CONDITIONS.values()) if not c.is_baseline]
    else:
        letters = [get_condition(args.condition).letter]
    data_root = str(args.data_root or "")
    progress = not args.no_progress
    data = None
    for letter in letters:
        if not get_condition(letter).is_baseline and data is None:
            data = load_dataset(args.preset, data_root, progress=progress)
        result = train_condition(letter, args.preset, data_root=data_root, device=args.device,
                                 epochs=args.epochs or None, resume=not args.fresh, progress=progress,
                                 seed=args.seed, data=data)
        history = result.history or []
        print(json.dumps({"model": "csn", "condition": letter, "preset": args.preset,
                          "out_dir": str(result.out_dir), "reused": bool(result.reused),
                          "epochs_trained": len(history),
                          "final_train_loss": history[-1].get("train_loss") if history else None,
                          "final_val_loss": history[-1].get("val_loss") if history else None},
                         default=str))
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


def run_evaluate(args: argparse.Namespace) -> int:
    """``partsim csn evaluate``: run chapter 4 and print (and optionally write) its tables."""
    from partsim_core.csn.run import run_chapter4
    from partsim_core.data.cache import atomic_write_json

    progress = not args.no_progress
    results = run_chapter4(args.preset, data_root=str(args.data_root or ""), conditions=args.conditions,
                           epochs=args.epochs or None, device=args.device, seed=args.seed, backend=args.backend,
                           progress=progress, log=lambda message: print(message, flush=True))
    summary = results.to_json()
    if args.out is not None:
        atomic_write_json(args.out, summary)
        print(f"wrote {args.out}")
    for name, table in (("Table 4.1", results.table_4_1), ("Table 4.2", results.table_4_2),
                        ("Table 4.3", results.table_4_3()), ("Table 4.4", results.table_4_4())):
        print(f"\n{name}\n{table.round(2).to_string()}")
    for block in "abc":
        table = results.table_4_5(block)
        if table is not None:
            print(f"\nTable 4.5{block}\n{table.round(3).to_string()}")
    for perspective, table in results.table_4_6.items():
        print(f"\nTable 4.6 ({perspective}, {results.listening_test})\n{table.round(1).to_string()}")
    print(f"\nstyle leakage (our addition)\n{results.leakage_summary().round(3).to_string()}")
    print(json.dumps({"timings": summary["timings"], "reused": summary["reused"]}))
    return 0


def register_train_command(train_commands: argparse._SubParsersAction) -> None:
    """Add ``partsim train csn`` (to the ``train`` group, beside ``separator`` and ``part``)."""
    train = train_commands.add_parser(
        "csn",
        help="train (or reuse) the CSN of one condition, or of all trained conditions",
        description=(
            "Train the CSN of one condition of thesis Table 4.2 through the shared training engine, or reuse it "
            "from the artefact cache. (b) is the pre-trained network itself; (e), (h), (i) start from it (trained "
            "once, shared). (a) is the chapter-3 baseline and is trained with 'partsim train part --input "
            "separated'. Prints one JSON line per run."
        ),
        epilog="Example: partsim train csn --condition i --preset smoke",
    )
    train.add_argument(
        "--condition", required=True, choices=[*CONDITION_LETTERS, "all"],
        help="a Table 4.2 row (a-i), j (Table 4.3's 'w/pre, wo/norm' row), or all = every trained condition "
             "(b)-(j) in turn",
    )
    train.add_argument(
        "--preset", choices=sorted(PRESETS), default="default",
        help="sizes and settings (partsim_core/presets.py, section csn): smoke, default, paper; default: "
             "%(default)s",
    )
    train.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="a Slakh2100-format dataset folder; default: the preset's embedded generated dataset",
    )
    train.add_argument(
        "--epochs", type=non_negative_int, default=0, metavar="N",
        help="triplet-training epochs; 0 = the preset's csn.epochs (pre-training keeps csn.pretrain_epochs); "
             "default: %(default)s",
    )
    train.add_argument(
        "--device", default="auto",
        help="torch device: auto (CUDA when visible, else CPU), cpu, cuda or cuda:N; default: %(default)s",
    )
    train.add_argument("--seed", type=non_negative_int, default=0,
                       help="seed of sampling and initialisation; default: %(default)s")
    train.add_argument(
        "--fresh", action="store_true",
        help="discard this condition's checkpoint and finished model and train it from scratch (a cached "
             "pre-trained network is still reused, except for condition b)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    train.set_defaults(func=run_train)


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``csn`` group and its ``conditions`` and ``evaluate`` commands."""
    parser = subparsers.add_parser(
        "csn",
        help="chapter 4: the CSN's ablation conditions (a)-(i) of thesis Table 4.2 and their evaluation",
        description=(
            "Chapter 4: one network with five instrument subspaces (a conditional similarity network), trained "
            "with pseudo musical pieces, the norm loss and pre-training; the nine conditions of thesis Table 4.2 "
            "switch these on and off. Train one condition with 'partsim train csn'."
        ),
    )
    parser.set_defaults(group_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    conditions = commands.add_parser(
        "conditions", help="print the nine conditions (a)-(i) and their switches",
        description="Print thesis Table 4.2's conditions: baseline, norm, psd, basic, add, pre ('w/' = on).")
    conditions.set_defaults(func=run_conditions)

    evaluate = commands.add_parser(
        "evaluate",
        help="run chapter 4: train what is missing, then compute Tables 4.1-4.6 and the style leakage",
        description=(
            "Run chapter 4 as the book does: train or reuse the chosen conditions (and the chapter-3 networks "
            "condition (a) needs), embed the filtered test split, and compute Tables 4.1-4.6 (4.6 on a simulated "
            "listening test over the embedded dataset) and our style-leakage measure. Prints the tables."
        ),
        epilog="Example: partsim csn evaluate --preset smoke --conditions a,e,i --out /tmp/ch4.json",
    )
    evaluate.add_argument("--preset", choices=sorted(PRESETS), default="default",
                          help="sizes and settings; default: %(default)s")
    evaluate.add_argument("--data-root", type=Path, default=None, metavar="DIR",
                          help="a Slakh2100-format dataset folder; default: the preset's embedded generated dataset")
    evaluate.add_argument("--conditions", type=parse_conditions, default="all", metavar="LIST",
                          help="'all' (a-j) or comma-separated letters, e.g. a,e,i; default: all")
    evaluate.add_argument("--epochs", type=non_negative_int, default=0, metavar="N",
                          help="triplet-training epochs of every condition; 0 = the preset's; default: %(default)s")
    evaluate.add_argument("--backend", default="unet",
                          help="separator of condition (a): unet, oracle, spleeter, demucs; default: %(default)s")
    evaluate.add_argument("--device", default="auto",
                          help="torch device: auto, cpu, cuda or cuda:N; default: %(default)s")
    evaluate.add_argument("--seed", type=non_negative_int, default=0, help="seed; default: %(default)s")
    evaluate.add_argument("--out", type=Path, default=None, metavar="FILE",
                          help="also write the tables as JSON to FILE (atomically)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    evaluate.set_defaults(func=run_evaluate)
