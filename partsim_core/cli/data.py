"""``partsim data ...``: check a Slakh-format root, generate the embedded mini-Slakh dataset.

* ``partsim data check ROOT [--redux-json FILE] [--segment-seconds S] [--out FILE [--fresh]]`` prints one JSON
  summary line on stdout (a human summary on stderr); exit 0 when no problem is found, 1 when some are, 2 for
  unusable input.
* ``partsim data synth [--preset smoke] [--out-dir DIR] [--seed 0] [--jobs N] [--fresh] [--soundfont SF2]`` writes
  the mini-Slakh dataset the book's chapters run on (Data chapter, ``notebooks/data.py``).

Both follow the output rule (:mod:`partsim_core.data.outputs`): nothing partsim did not write is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from partsim_core.cli.options import (
    add_command_group,
    add_fresh,
    add_no_progress,
    add_out,
    add_out_dir,
    add_preset,
    add_seed,
    positive_int,
)
from partsim_core.data.outputs import check_output_file, write_json_output
from partsim_core.data.slakh import check_slakh, open_slakh
from partsim_core.data.synth import default_dataset_root, synthesize_dataset


def run_check(args: argparse.Namespace) -> int:
    """``partsim data check``: validate a root, print the JSON summary, exit 1 when problems were found."""
    inputs = [args.root, args.redux_json]
    if args.out is not None:
        check_output_file(args.out, inputs, args.fresh)  # before the (long) check, not after it
    summary = check_slakh(args.root, redux_json=args.redux_json, progress=sys.stderr.isatty(),
                          segment_seconds=args.segment_seconds)
    print(json.dumps(summary, allow_nan=False))
    if args.out is not None:
        write_json_output(args.out, summary, inputs, args.fresh, command="data check")
    n_tracks = sum(summary["tracks"].values())
    n_problems = len(summary["problems"])
    print(
        f"partsim data check: {n_tracks} tracks ({summary['variant']}), "
        f"{_duration_text(summary['total_duration_s'])} of mixes, {n_problems} problem(s)",
        file=sys.stderr,
    )
    return 1 if n_problems else 0


def run_synth(args: argparse.Namespace) -> int:
    """``partsim data synth``: generate (or reuse) the mini-Slakh dataset and print a one-line summary."""
    named = args.out_dir is not None
    out = Path(args.out_dir) if named else default_dataset_root(args.preset)
    # A folder the user names is replaced only with --fresh; the cache's default folder follows the settings.
    root = synthesize_dataset(out, args.preset, args.seed, args.jobs, args.fresh, progress=not args.no_progress,
                              soundfont=args.soundfont, replace_other=not named)
    counts = open_slakh(root).split_counts()
    splits = ", ".join(f"{count} {split}" for split, count in counts.items() if count)
    print(f"partsim data synth: mini-Slakh preset {args.preset}, seed {args.seed} at {root} ({splits})")
    return 0


def _duration_text(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` group with ``check`` and ``synth``."""
    commands = add_command_group(
        subparsers, "data",
        help="check a Slakh-format dataset, generate the embedded mini-Slakh",
        description="Data commands: validate any Slakh-format root, generate the embedded mini-Slakh dataset.",
    )

    check = commands.add_parser(
        "check",
        help="validate a Slakh-format root and print a JSON summary",
        description=(
            "Validate a Slakh-format root (Slakh2100 redux flac, original 2100, babyslakh, or 'partsim data synth' "
            "output) without decoding whole flac files. Prints one JSON line on stdout: root, variant, tracks per "
            "split, stems (with audio) per group, total mix duration in seconds (from file headers) and the "
            "problems found, each naming its file (missing mix, stem marked rendered without a file, "
            "unreadable/truncated audio, NaN or infinite samples, sample rate or length differing from the mix, "
            "missing or malformed metadata.yaml, with --segment-seconds a track shorter than one segment). "
            "Exit status: 0 no problem, 1 problems found, 2 unusable input (e.g. missing root)."
        ),
    )
    check.add_argument("root", metavar="ROOT",
                       help="dataset folder: the one holding train/ validation/ test/ (omitted/) or TrackXXXXX folders")
    check.add_argument("--redux-json", metavar="FILE", default=None,
                       help="slakh-utils redux.json to apply to a root without split folders: tracks it omits get "
                            "split 'omitted' (default: none)")
    check.add_argument("--segment-seconds", type=_positive_seconds, default=None, metavar="S",
                       help="also report tracks shorter than one S-second segment (the chapters use 3; default: no "
                            "length check)")
    add_out(check, "the JSON summary (indented, with a provenance block)")
    add_fresh(check, "a summary file partsim wrote earlier")
    check.set_defaults(func=run_check)

    synth = commands.add_parser(
        "synth",
        help="generate the embedded mini-Slakh dataset",
        description=(
            "Generate the mini-Slakh dataset (procedural MIDI rendered with a SoundFont) in the Slakh2100 redux "
            "flac layout, plus partsim_ground_truth.json. Returns at once when the folder already holds a "
            "complete dataset of the same preset, seed, SoundFont and generator version. A folder named with "
            "--out-dir must be new, empty, or a dataset partsim generated (replaced only with --fresh); the "
            "default folder in the cache is regenerated when the settings change."
        ),
    )
    add_preset(synth)
    add_out_dir(synth, "the dataset", default_text="<cache>/datasets/mini-slakh-<preset>")
    add_seed(synth)
    synth.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                       help="parallel rendering processes (default: the CPU count); the output does not depend on it")
    add_fresh(synth, "a dataset partsim generated there (even a complete one)")
    synth.add_argument("--soundfont", metavar="SF2", default=None,
                       help="General-MIDI SoundFont to render with (default: $PARTSIM_SOUNDFONT, else the TimGM6mb.sf2 "
                            "shipped inside pretty_midi); e.g. FluidR3_GM.sf2 for fuller sounds")
    add_no_progress(synth)
    synth.set_defaults(func=run_synth)
