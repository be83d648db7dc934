"""``partsim data ...``: check a Slakh-format root, generate the embedded mini-Slakh dataset.

* ``partsim data check ROOT [--redux-json FILE] [--json-out FILE]`` prints one JSON summary line on stdout (a
  human summary on stderr); exit 0 when no problem is found, 1 when some are, 2 for unusable input.
* ``partsim data synth [--preset smoke] [--out DIR] [--seed 0] [--jobs N] [--force] [--soundfont SF2]`` writes the mini-Slakh
  dataset the book's chapters run on (Data chapter, ``notebooks/data.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from partsim_core.presets import PRESETS


def run_check(args: argparse.Namespace) -> int:
    """``partsim data check``: validate a root, print the JSON summary, exit 1 when problems were found."""
    from partsim_core.data.cache import atomic_write_json
    from partsim_core.data.slakh import check_slakh

    summary = check_slakh(args.root, redux_json=args.redux_json, progress=sys.stderr.isatty())
    print(json.dumps(summary, allow_nan=False))
    if args.json_out is not None:
        atomic_write_json(args.json_out, summary)
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
    from partsim_core.data.slakh import open_slakh
    from partsim_core.data.synth import default_dataset_root, synthesize_dataset

    out = Path(args.out) if args.out is not None else default_dataset_root(args.preset)
    root = synthesize_dataset(out, args.preset, args.seed, args.jobs, args.force, soundfont=args.soundfont)
    counts = open_slakh(root).split_counts()
    splits = ", ".join(f"{count} {split}" for split, count in counts.items() if count)
    print(f"partsim data synth: mini-Slakh preset {args.preset}, seed {args.seed} at {root} ({splits})")
    return 0


def _duration_text(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` group with ``check`` and ``synth``."""
    parser = subparsers.add_parser(
        "data",
        help="check a Slakh-format dataset, generate the embedded mini-Slakh",
        description="Data commands: validate any Slakh-format root, generate the embedded mini-Slakh dataset.",
    )
    parser.set_defaults(group_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="validate a Slakh-format root and print a JSON summary",
        description=(
            "Validate a Slakh-format root (Slakh2100 redux flac, original 2100, babyslakh, or 'partsim data synth' "
            "output) without decoding whole files. Prints one JSON line on stdout: root, variant, tracks per "
            "split, stems (with audio) per group, total mix duration in seconds (from file headers) and the "
            "problems found (missing mix, stem marked rendered without a file, unreadable/truncated audio, "
            "sample rate or length differing from the mix, missing or malformed metadata.yaml). "
            "Exit status: 0 no problem, 1 problems found, 2 unusable input (e.g. missing root)."
        ),
    )
    check.add_argument("root", metavar="ROOT",
                       help="dataset folder: the one holding train/ validation/ test/ (omitted/) or TrackXXXXX folders")
    check.add_argument("--redux-json", metavar="FILE", default=None,
                       help="slakh-utils redux.json to apply to a root without split folders: tracks it omits get "
                            "split 'omitted' (default: none)")
    check.add_argument("--json-out", metavar="FILE", default=None,
                       help="also write the JSON summary (indented) to FILE, atomically (default: stdout only)")
    check.set_defaults(func=run_check)

    synth = commands.add_parser(
        "synth",
        help="generate the embedded mini-Slakh dataset",
        description=(
            "Generate the mini-Slakh dataset (procedural MIDI rendered with a SoundFont) in the Slakh2100 redux "
            "flac layout, plus partsim_ground_truth.json. Returns at once when the folder already holds a "
            "complete dataset of the same preset, seed and generator version."
        ),
    )
    synth.add_argument("--preset", choices=sorted(PRESETS), default="smoke",
                       help="dataset size and sample rate (default: smoke)")
    synth.add_argument("--out", metavar="DIR", default=None,
                       help="output folder (default: <cache>/datasets/mini-slakh-<preset>)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default: 0)")
    synth.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                       help="parallel rendering processes (default: the generator picks one from the CPU count)")
    synth.add_argument("--force", action="store_true",
                       help="regenerate even when a complete dataset of the same preset and seed is present")
    synth.add_argument("--soundfont", metavar="SF2", default=None,
                       help="General-MIDI SoundFont to render with (default: $PARTSIM_SOUNDFONT, else the TimGM6mb.sf2 "
                            "shipped inside pretty_midi); e.g. FluidR3_GM.sf2 for fuller sounds")
    synth.set_defaults(func=run_synth)
