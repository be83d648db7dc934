"""``partsim train ...``: train one model of the book through the shared training engine.

* ``partsim train separator --preset P [--data-root DIR] [--device D] [--seed S] [--seeds N] [--epochs N]
  [--fresh]``: our U-Net separator (chapter 3), trained on the train split, one run per seed.
* ``partsim train part --part drums|bass|piano|guitar|others|mix --input ideal|separated [--backend unet]
  --preset P [--epochs N] [--seed S] [--seeds N] [--device D] [--fresh] [--out-dir DIR]``: one chapter-3 network
  per seed.
* ``partsim train csn --condition i|all --preset P``: chapter 4's CSN of one ablation condition, or of all
  (defined in :mod:`partsim_core.cli.csn`).
* ``partsim train all --preset P [--seeds N] [--jobs N]``: every model the book's chapters train (the training
  step of ``partsim book build``, :mod:`partsim_core.book.training_plan`), in ``--jobs`` single-threaded worker
  processes.

Runs resume from their last checkpoint by default and reuse a finished model with the same config key (nothing is
trained again); ``--fresh`` discards both and starts over. Artefacts go to ``<cache>/models/<kind>/<run>-<key>/``.
Each run prints one JSON line, with its per-epoch train and validation losses.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from partsim_core import INSTRUMENTS
from partsim_core.baseline.networks import check_network, train_part_network
from partsim_core.baseline.separated_stems import separated_source
from partsim_core.baseline.separator_training import train_separator
from partsim_core.baseline.separators import check_backend
from partsim_core.book.training_plan import book_training_jobs, run_training_jobs
from partsim_core.cli.baseline import BACKEND_NAMES
from partsim_core.cli.csn import register_train_command
from partsim_core.cli.mixquery import register_train_command as register_mixquery_head
from partsim_core.cli.options import (
    add_command_group,
    add_data_root,
    add_device,
    add_jobs,
    add_no_progress,
    add_preset,
    add_seed,
    add_seeds,
    add_training_options,
    seed_count,
)
from partsim_core.data.dataset import load_dataset
from partsim_core.data.outputs import MARKER, check_output_dir
from partsim_core.presets import get_preset
from partsim_core.training import usable_cores
from partsim_core.training_artefacts import RUN_FILES

#: What ``--fresh`` replaces for ``partsim train separator`` and ``part``.
FRESH_WHAT = "the checkpoint and any finished model of this run (train from scratch)"


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
        "history": [{"epoch": entry.get("epoch"), "train_loss": entry.get("train_loss"),
                     "val_loss": entry.get("val_loss")} for entry in history],
        **(extra or {}),
    }
    return json.dumps(payload, allow_nan=False, default=str)


def run_separator(args: argparse.Namespace) -> int:
    """``partsim train separator``: train (or reuse) the U-Net separator of the preset, once per seed."""

    data = load_dataset(args.preset, args.data_root, progress=not args.no_progress)
    for seed in range(args.seed, args.seed + args.seeds):
        result = train_separator(data, device=args.device, resume=not args.fresh, progress=not args.no_progress,
                                 seed=seed, epochs=args.epochs)
        print(_summary("separator", result, {"preset": args.preset, "seed": seed}), flush=True)
    return 0


def _is_training_folder(folder: Path) -> bool:
    """A folder the trainer wrote: it holds one of its files (a run killed early has only the checkpoint)."""
    return (folder / MARKER).is_file() or any((folder / name).is_file() for name in RUN_FILES)


def run_part(args: argparse.Namespace) -> int:
    """``partsim train part``: train (or reuse) one chapter-3 network per seed."""

    check_network(args.part, args.input)
    if args.input == "separated":
        check_backend(args.backend)
    seed_dirs = {seed: None for seed in range(args.seed, args.seed + args.seeds)}
    if args.out_dir is not None:
        for seed in seed_dirs:
            folder = Path(args.out_dir) / f"seed-{seed}" if args.seeds > 1 else Path(args.out_dir)
            # Before any work: a folder partsim did not write (no training files, no marker) is never trained into.
            seed_dirs[seed] = check_output_dir(folder, fresh=True, is_own=_is_training_folder)
    progress = not args.no_progress
    data = load_dataset(args.preset, args.data_root, progress=progress)
    source = None
    if args.input == "separated":
        options = {"progress": progress, "seed": args.seed} if args.backend == "unet" else {}
        source = separated_source(data, args.backend, device=args.device, **options)
    for seed, out_dir in seed_dirs.items():
        result = train_part_network(data, args.part, args.input, source=source, epochs=args.epochs,
                                    device=args.device, resume=not args.fresh, progress=progress, out_dir=out_dir,
                                    seed=seed)
        print(_summary("part_network", result, {"preset": args.preset, "part": args.part, "input": args.input,
                                                "seed": seed}))
    return 0


def run_all(args: argparse.Namespace) -> int:
    """``partsim train all``: every model of the book's chapters, in a pool of worker processes."""

    progress = not args.no_progress
    seeds = args.seeds or get_preset(args.preset).seeds
    data = load_dataset(args.preset, args.data_root, progress=progress)
    jobs = book_training_jobs(data, range(args.seed, args.seed + seeds), device=args.device)
    workers = args.jobs or usable_cores()
    started = time.perf_counter()
    results = run_training_jobs(jobs, workers=workers, progress=progress,
                                log=None if progress else lambda line: print(line, file=sys.stderr))
    print(json.dumps({
        "model": "all", "preset": args.preset, "seeds": list(range(args.seed, args.seed + seeds)),
        "workers": workers, "jobs": len(jobs),
        "trained": [name for name, value in results.items() if value.get("reused") is False],
        "reused": [name for name, value in results.items() if value.get("reused") is True],
        "seconds": round(time.perf_counter() - started, 2)}))
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` group and its ``separator``, ``part`` and ``csn`` commands."""
    commands = add_command_group(
        subparsers, "train",
        help="train one model (separator, chapter-3 part networks, chapter-4 CSN) with the shared engine",
        description=(
            "Train one model of the book with the shared training engine (partsim_core.training): seeded, "
            "checkpointed, resumable. A finished model with the same config is reused, a checkpoint is resumed; "
            "--fresh starts over. Prints one JSON line describing each run (per-epoch losses included)."
        ),
    )

    separator = commands.add_parser(
        "separator",
        help="train our spectrogram U-Net separator (Spleeter's architecture) on the train split",
        description=(
            "Train the chapter-3 source separator: a PyTorch re-implementation of Spleeter's spectrogram U-Net "
            "(one soft mask per part: drums, bass, piano, guitar, others), on the train split of the dataset, with "
            "the preset's separator settings. The 'unet' backend of chapter 3 loads this model. Fewer --epochs "
            "train an earlier, weaker separator (a separate cached run); --seeds N trains one per seed --seed .. "
            "--seed+N-1 (each its own cached run), printing one JSON line each."
        ),
        epilog="Example: partsim train separator --preset smoke --seed 0",
    )
    add_training_options(separator, FRESH_WHAT)
    add_seeds(separator)
    separator.set_defaults(func=run_separator)

    part = commands.add_parser(
        "part",
        help="train one chapter-3 network: one part on ideal or separated stems, or the mix",
        description=(
            "Train one chapter-3 feature extractor (PartCNN: log-mel -> 128-d embedding) with the triplet loss "
            "(margin from the preset, thesis 0.2) on unsupervised triplets: anchors are the first non-silent 3-s "
            "segments (50 % overlap) of each training track's part, positives other segments of the same track's "
            "part, negatives segments of other tracks. --input ideal uses the stems before mixing, --input "
            "separated the stems estimated by --backend (the separator is trained first when needed, with --seed). "
            "--part mix trains the track network (Table 3.2's baseline) on the mixes."
        ),
        epilog="Example: partsim train part --part drums --input separated --preset smoke --seeds 3",
    )
    part.add_argument(
        "--part", required=True, choices=[*INSTRUMENTS, "mix"],
        help="the instrument part to learn, or mix for the track network",
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
    add_seeds(part)
    part.add_argument(
        "--out-dir", type=Path, default=None, metavar="DIR",
        help="folder of the run's artefacts (checkpoint.pt, model.pt, config.json, history.json; one seed-N "
             "subfolder per seed with --seeds > 1); default: <cache>/models/part_network/<run>-<key>. A folder "
             "holding another config's checkpoint is refused unless --fresh",
    )
    add_training_options(part, FRESH_WHAT)
    part.set_defaults(func=run_part)

    every = commands.add_parser(
        "all",
        help="train every model the book's chapters use, in parallel worker processes",
        description=(
            "Train (or reuse) every model the book's chapter notebooks train - chapter 3's separator and networks, "
            "chapter 4's pre-training, its target networks and conditions (b)-(k), chapter 6's models - for the "
            "seeds --seed .. --seed+N-1, with the chapters' own functions and arguments, so the notebooks then "
            "reuse them from the artefact cache. Independent models train at the same time in --jobs worker "
            "processes with one thread each (the models' ops are memory-bound: two single-threaded trainings "
            "finish sooner than one on two threads); --jobs 1 trains one after another in this process. This is "
            "the training step of 'partsim book build'. Prints one JSON line: the trained and the reused models."
        ),
        epilog="Example: partsim train all --preset smoke --seeds 1 --jobs 2",
    )
    add_preset(every)
    add_data_root(every)
    add_device(every)
    add_seed(every)
    every.add_argument("--seeds", type=seed_count, default=None, metavar="N",
                       help="number of training seeds, starting at --seed (default: the preset's, as the book)")
    add_jobs(every, "worker processes, one training each")
    add_no_progress(every)
    every.set_defaults(func=run_all)

    register_train_command(commands)
    register_mixquery_head(commands)
