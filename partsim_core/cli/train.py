"""``partsim train ...``: train one model of the book through the shared training engine.

* ``partsim train separator --preset P [--data-root DIR] [--device D] [--fresh]``: our U-Net separator (chapter 3),
  trained on the train split.
* ``partsim train part --part drums|bass|piano|guitar|others|mix --input ideal|separated [--backend unet]
  --preset P [--epochs N] [--device D] [--fresh] [--out DIR]``: one chapter-3 network.
* ``partsim train csn --condition i|all --preset P``: chapter 4's CSN of one ablation condition, or of all
  (defined in :mod:`partsim_core.cli.csn`).

Runs resume from their last checkpoint by default and reuse a finished model with the same config key (nothing is
trained again); ``--fresh`` discards both and starts over. Artefacts go to ``<cache>/models/<kind>/<run>-<key>/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from partsim_core import INSTRUMENTS
from partsim_core.presets import PRESETS

#: Separator backends (``partsim_core.baseline.separation.BACKENDS``; listed here so that ``--help`` needs no torch import).
BACKEND_NAMES = ("oracle", "unet", "spleeter", "demucs")


def _summary(kind: str, result, extra: dict | None = None) -> str:
    """One JSON line describing a finished (or reused) run."""
    history = result.history or []
    payload = {
        "model": kind,
        "out_dir": str(result.out_dir),
        "reused": bool(result.reused),
        "epochs_trained": len(history),
        "final_train_loss": history[-1].get("train_loss") if history else None,
        "final_val_loss": history[-1].get("val_loss") if history else None,
        **(extra or {}),
    }
    return json.dumps(payload, allow_nan=False, default=str)


def run_separator(args: argparse.Namespace) -> int:
    """``partsim train separator``: train (or reuse) the U-Net separator of the preset."""
    from partsim_core.presets import get_preset
    from partsim_core.baseline.separation import train_separator

    get_preset(args.preset)
    result = train_separator(args.preset, data_root=args.data_root or "", device=args.device,
                             resume=not args.fresh, progress=not args.no_progress)
    print(_summary("separator", result, {"preset": args.preset}))
    return 0


def run_part(args: argparse.Namespace) -> int:
    """``partsim train part``: train (or reuse) one chapter-3 network."""
    from partsim_core.baseline.run import check_backend, train_part_network

    check_backend(args.backend)
    result = train_part_network(args.preset, args.part, args.input, backend=args.backend,
                                data_root=args.data_root or "", epochs=args.epochs or None, device=args.device,
                                resume=not args.fresh, progress=not args.no_progress, out_dir=args.out,
                                seed=args.seed)
    print(_summary("part_network", result, {"preset": args.preset, "part": args.part, "input": args.input}))
    return 0


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (also used by ``partsim baseline run``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options every ``train`` command has: preset, data root, device, resume/fresh, progress."""
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="default",
        help="sizes and settings (partsim_core/presets.py): smoke (minutes), default (2 CPU cores), paper (the "
             "thesis's settings); default: %(default)s",
    )
    parser.add_argument(
        "--data-root", type=Path, default=None, metavar="DIR",
        help="a Slakh2100-format dataset folder; default: the preset's embedded generated dataset (generated "
             "into the cache when absent)",
    )
    parser.add_argument(
        "--device", default="auto",
        help="torch device: auto (CUDA when visible, else CPU), cpu, cuda or cuda:N; default: %(default)s",
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", dest="fresh", action="store_false",
        help="continue from the last checkpoint, and reuse a finished model with the same config (the default)",
    )
    resume.add_argument(
        "--fresh", dest="fresh", action="store_true",
        help="discard the checkpoint and any finished model of this run and train from scratch",
    )
    parser.set_defaults(fresh=False)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` group and its ``separator``, ``part`` and ``csn`` commands."""
    parser = subparsers.add_parser(
        "train",
        help="train one model (separator, chapter-3 part networks, chapter-4 CSN) with the shared engine",
        description=(
            "Train one model of the book with the shared training engine (partsim_core.training): seeded, "
            "checkpointed, resumable. A finished model with the same config is reused, a checkpoint is resumed; "
            "--fresh starts over. Prints one JSON line describing the run."
        ),
    )
    parser.set_defaults(group_parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    separator = commands.add_parser(
        "separator",
        help="train our spectrogram U-Net separator (Spleeter's architecture) on the train split",
        description=(
            "Train the chapter-3 source separator: a PyTorch re-implementation of Spleeter's spectrogram U-Net "
            "(one soft mask per part: drums, bass, piano, guitar, others), on the train split of the dataset, with "
            "the preset's separator settings. The 'unet' backend of chapter 3 loads this model."
        ),
        epilog="Example: partsim train separator --preset smoke",
    )
    _add_common(separator)
    separator.set_defaults(func=run_separator)

    part = commands.add_parser(
        "part",
        help="train one chapter-3 network: one part on ideal or separated stems, or the mix",
        description=(
            "Train one chapter-3 feature extractor (PartCNN: log-mel -> 128-d embedding) with the triplet loss "
            "(margin from the preset, thesis 0.2) on unsupervised triplets: anchors are the first non-silent 3-s "
            "segments (50 % overlap) of each training track's part, positives other segments of the same track's "
            "part, negatives segments of other tracks. --input ideal uses the stems before mixing, --input "
            "separated the stems estimated by --backend (the separator is trained first when needed). --part mix "
            "trains the track-level baseline on the mixes."
        ),
        epilog="Example: partsim train part --part drums --input separated --preset smoke",
    )
    part.add_argument(
        "--part", required=True, choices=[*INSTRUMENTS, "mix"],
        help="the instrument part to learn, or mix for the track-level baseline network",
    )
    part.add_argument(
        "--input", default="ideal", choices=["ideal", "separated"],
        help="ideal: the part's stems before mixing; separated: the part estimated from the mix by --backend "
             "(not for --part mix); default: %(default)s",
    )
    part.add_argument(
        "--backend", default="unet", metavar="NAME",
        help=f"separator for --input separated: one of {', '.join(BACKEND_NAMES)}; default: %(default)s (our "
             "U-Net, trained on the train split when not cached)",
    )
    part.add_argument(
        "--epochs", type=non_negative_int, default=0, metavar="N",
        help="training epochs; 0 = the preset's part_network.epochs; default: %(default)s",
    )
    part.add_argument(
        "--seed", type=non_negative_int, default=0,
        help="seed of triplet sampling and initialisation; default: %(default)s",
    )
    part.add_argument(
        "--out", type=Path, default=None, metavar="DIR",
        help="artefact folder of the run (checkpoint.pt, model.pt, config.json, history.json); default: "
             "<cache>/models/part_network/<run>-<config key>. A folder holding another config's checkpoint is "
             "refused unless --fresh",
    )
    _add_common(part)
    part.set_defaults(func=run_part)

    from partsim_core.cli.csn import register_train_command
    from partsim_core.cli.mixquery import register_train_command as register_mixquery_head

    register_train_command(commands)
    register_mixquery_head(commands)
