"""``partsim perceptual ...``: the Inst-Sim ABX listening-test tables (chapter 5) and the simulated test.

* ``partsim perceptual tables --abx DIR --out FILE.json`` computes Tables 5.1-5.4 from an ABX dataset folder (the
  published one or a simulated one) and writes ONE JSON object atomically (see
  :func:`partsim_core.perceptual.analysis.thesis_tables`); a one-line summary goes to stderr.
* ``partsim perceptual run --abx DIR --out FILE.json`` writes every chapter-5 result as one JSON object (see
  :func:`partsim_core.perceptual.results.chapter_results`), rates from single responses with Clopper-Pearson 95 %
  intervals as ``{"value", "low", "high"}`` cells.
* Both refuse rows that break the published format (``--drop-invalid`` drops them and says how many) and call the
  data "published" only when the files have the published SHA-256.
* ``partsim perceptual simulate [--data-root DIR] --out-dir DIR [--seed 0]`` writes a simulated listening test in the
  published format over an embedded mini-Slakh dataset (default: the preset's generated dataset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from partsim_core.cli.options import (
    add_command_group,
    add_fresh,
    add_out,
    add_out_dir,
    add_preset,
    add_seed,
)
from partsim_core.data.outputs import check_output_file, write_json_output
from partsim_core.data.synth import default_dataset_root
from partsim_core.perceptual.abx import (
    check_published_counts,
    is_published_dataset,
    load_abx,
)
from partsim_core.perceptual.analysis import thesis_tables
from partsim_core.perceptual.results import chapter_results
from partsim_core.perceptual.simulate import SimulationConfig, simulate_listening_test


def _load(args: argparse.Namespace):
    """Load ``--abx`` (refusing or dropping invalid rows) and describe where the data came from (one line)."""

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


def _check_out_file(args: argparse.Namespace) -> None:
    """``--out`` names a JSON file to write, never a folder, outside the ABX input; checked before any work."""
    check_output_file(args.out, inputs=[args.abx], fresh=args.fresh)


def run_tables(args: argparse.Namespace) -> int:
    """``partsim perceptual tables``: load, check the published count, compute and write the JSON."""

    _check_out_file(args)
    data, which = _load(args)
    tables = thesis_tables(data.responses)
    write_json_output(args.out, tables, inputs=[args.abx], fresh=args.fresh, command="perceptual tables")
    print(f"partsim perceptual tables: {tables['valid_responses']} valid responses ({which}) -> {args.out}",
          file=sys.stderr)
    return 0


def run_chapter(args: argparse.Namespace) -> int:
    """``partsim perceptual run``: every chapter-5 result, rates with Clopper-Pearson intervals, as one JSON."""

    _check_out_file(args)
    data, which = _load(args)
    results = chapter_results(data)
    write_json_output(args.out, results, inputs=[args.abx], fresh=args.fresh, command="perceptual run")
    print(f"partsim perceptual run: {results['data']['valid_responses']} valid responses ({which}) -> {args.out}",
          file=sys.stderr)
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    """``partsim perceptual simulate``: write a simulated listening test over an embedded dataset."""

    if args.data_root:
        data_root = Path(args.data_root)
    else:

        data_root = default_dataset_root(args.preset)
    config = SimulationConfig(splits=tuple(args.splits.split(",")))
    out = simulate_listening_test(data_root, args.out_dir, seed=args.seed, config=config, fresh=args.fresh)
    print(f"partsim perceptual simulate: simulated listening test (seed {args.seed}) over {data_root} -> {out}",
          file=sys.stderr)
    return 0


def _add_abx_options(parser: argparse.ArgumentParser, what: str) -> None:
    """The options of the commands that read a published ABX dataset: ``--abx``, ``--out`` (``what`` is written
    there), ``--fresh`` and ``--drop-invalid``."""
    parser.add_argument("--abx", required=True, help="ABX dataset folder (e.g. ../shared/abx)")
    add_out(parser, what, required=True)
    add_fresh(parser)
    parser.add_argument("--drop-invalid", action="store_true",
                        help="drop rows that break the published format (duplicates, N/A overall, ...) and say how "
                             "many, instead of refusing the file")


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``perceptual`` group with ``tables``, ``run`` and ``simulate``."""
    commands = add_command_group(
        subparsers, "perceptual",
        help="Inst-Sim ABX listening test: chapter-5 tables, simulated test",
        description="Listening-test commands (thesis chapter 5).",
    )

    tables = commands.add_parser(
        "tables",
        help="compute Tables 5.1-5.4 and write them as one JSON object",
        description=(
            "Load an Inst-Sim ABX dataset folder (csvs/ and sample_configs/), exclude catch trials, and write "
            "valid_responses, table_5_1 (variance comparison), table_5_2 (matching rate with overall, %), "
            "table_5_3 (sample sets and evaluations passing the 80 % filter) and table_5_4 (Clopper-Pearson "
            "95 % intervals of choosing the same-track segment, %) as one JSON object."
        ),
    )
    _add_abx_options(tables, "the tables as one JSON object")
    tables.set_defaults(func=run_tables)

    run = commands.add_parser(
        "run",
        help="compute every chapter-5 result and write it as one JSON file",
        description=(
            "Load an Inst-Sim ABX dataset folder and write the chapter's results as one JSON object: data "
            "provenance (published by SHA-256 or not, dropped rows), participant counts, Fig. 5.4 counts, Fig. 5.6 "
            "agreement, Tables 5.1-5.4. Rates computed from single responses are {value, low, high} cells (percent "
            "with exact Clopper-Pearson 95 % intervals)."
        ),
    )
    _add_abx_options(run, "the chapter's results as one JSON object")
    run.set_defaults(func=run_chapter)

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
    add_preset(simulate)
    add_out_dir(simulate, "the simulated test (csvs/, sample_configs/)", required=True)
    add_fresh(simulate, "a simulated test partsim wrote earlier")
    add_seed(simulate)
    simulate.add_argument("--splits", default="test",
                          help="comma-separated splits whose tracks are used (default: test)")
    simulate.set_defaults(func=run_simulate)
