"""``partsim perceptual ...``: the Inst-Sim ABX listening-test tables (chapter 5) and the simulated test.

* ``partsim perceptual tables --abx DIR --out FILE.json`` computes Tables 5.1-5.4 from an ABX dataset folder (the
  published one or a simulated one) and writes ONE JSON object atomically (see
  :func:`partsim_core.perceptual.analysis.thesis_tables`); a one-line summary goes to stderr.
* ``partsim perceptual simulate [--data-root DIR] --out DIR [--seed 0]`` writes a simulated listening test in the
  published format over an embedded mini-Slakh dataset (default: the preset's generated dataset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from partsim_core.presets import PRESETS


def _load(args: argparse.Namespace):
    """Load ``--abx`` (refusing or dropping invalid rows) and describe where the data came from (one line)."""
    from partsim_core.perceptual.abx import check_published_counts, is_published_dataset, load_abx

    data = load_abx(args.abx, drop_invalid=args.drop_invalid)
    check_published_counts(data)
    if is_published_dataset(data):
        which = "published Inst-Sim ABX data (SHA-256 verified)"
    else:
        which = "modified or non-published data: files differ from the published Inst-Sim ABX checksums"
    if len(data.dropped):
        reasons = data.dropped["reason"].str.replace(r"line \d+", "line N", regex=True)
        reasons = reasons.str.replace(r"'[^']*'", "'...'", regex=True).value_counts()
        detail = "; ".join(f"{count} x {reason}" for reason, count in reasons.items())
        which += f"; dropped {len(data.dropped)} invalid row(s): {detail}"
    return data, which


def run_tables(args: argparse.Namespace) -> int:
    """``partsim perceptual tables``: load, check the published count, compute and write the JSON."""
    from partsim_core.data.cache import atomic_write_json
    from partsim_core.perceptual.analysis import thesis_tables

    data, which = _load(args)
    tables = thesis_tables(data.responses)
    atomic_write_json(args.out, tables)
    print(f"partsim perceptual tables: {tables['valid_responses']} valid responses ({which}) -> {args.out}",
          file=sys.stderr)
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """``partsim perceptual simulate``: write a simulated listening test over an embedded dataset."""
    from partsim_core.perceptual.simulate import SimulationConfig, simulate_listening_test

    if args.data_root:
        data_root = Path(args.data_root)
    else:
        from partsim_core.data.synth import default_dataset_root

        data_root = default_dataset_root(args.preset)
    config = SimulationConfig(splits=tuple(args.splits.split(",")))
    out = simulate_listening_test(data_root, args.out, seed=args.seed, config=config)
    print(f"partsim perceptual simulate: simulated listening test (seed {args.seed}) over {data_root} -> {out}",
          file=sys.stderr)
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``perceptual`` group with ``tables`` and ``simulate``."""
    parser = subparsers.add_parser(
        "perceptual",
        help="Inst-Sim ABX listening test: chapter-5 tables, simulated test",
        description="Listening-test commands (thesis chapter 5).",
    )
    parser.set_defaults(group_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    tables = commands.add_parser(
        "tables",
        help="compute Tables 5.1-5.4 and write them as one JSON object",
        description=(
            "Load an Inst-Sim ABX dataset folder (csvs/ and sample_configs/), exclude catch trials, and write "
            "valid_responses, table_5_1 (variance comparison), table_5_2 (matching rate with overall, %%), "
            "table_5_3 (sample sets and evaluations passing the 80 %% filter) and table_5_4 (Clopper-Pearson "
            "95 %% intervals of choosing the same-track segment, %%) as one JSON object."
        ),
    )
    tables.add_argument("--abx", required=True, help="ABX dataset folder (e.g. ../shared/abx)")
    tables.add_argument("--out", required=True, help="JSON file to write (atomically)")
    tables.add_argument("--drop-invalid", action="store_true",
                        help="drop rows that break the published format (duplicates, N/A overall, ...) and say how "
                             "many, instead of refusing the file")
    tables.set_defaults(func=run_tables)

    simulate = commands.add_parser(
        "simulate",
        help="write a simulated listening test over the embedded dataset",
        description=(
            "Write a simulated listening test (NOT real listeners) in the published Inst-Sim ABX format, whose "
            "listeners follow the generator's part-level ground truth plus noise."
        ),
    )
    simulate.add_argument("--data-root", default="",
                          help="embedded dataset from 'partsim data synth' (default: the preset's dataset)")
    simulate.add_argument("--preset", default="smoke", choices=sorted(PRESETS),
                          help="preset whose generated dataset is used when --data-root is not given")
    simulate.add_argument("--out", required=True, help="folder to write (atomically)")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    simulate.add_argument("--splits", default="test",
                          help="comma-separated splits whose tracks are used (default: test)")
    simulate.set_defaults(func=run_simulate)
