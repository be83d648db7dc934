"""The flags every ``partsim`` command shares: each means the same everywhere and is defined only here.

Grammar: ``partsim <chapter-group> run`` runs a chapter and writes its JSON; ``--out`` is always a file and
``--out-dir`` always a folder; ``--fresh`` is the only "start over"; the default preset is ``default``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from partsim_core.presets import PRESETS

#: The preset a command uses when none is given.
DEFAULT_PRESET = "default"


def add_command_group(subparsers: argparse._SubParsersAction, name: str, help: str,
                      description: str) -> argparse._SubParsersAction:
    """Add the command group ``partsim <name>`` and return the subparsers its commands are added to.

    The group's parser is recorded as ``group_parser``, so ``partsim <name>`` without a command prints its help.
    """
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(group_parser=parser)
    return parser.add_subparsers(title="commands", metavar="COMMAND")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer_at_least(text, 1, "positive")


#: Most training seeds one command accepts: each seed trains every model again (~1.5 hours per seed of the default
#: book on 2 cores), so a larger count is a typo, refused before any work.
MAX_SEEDS = 100


def seed_count(text: str) -> int:
    """argparse type of ``--seeds``: an integer in ``[1, MAX_SEEDS]``."""
    value = _integer_at_least(text, 1, "positive")
    if value > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS} seeds (each trains every model again), got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer_at_least(text, 0, "non-negative")


def _integer_at_least(text: str, minimum: int, kind: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}")
    return value


def add_preset(parser: argparse.ArgumentParser) -> None:
    """``--preset``: data size, front end, model width and epochs (``partsim_core.presets``)."""
    parser.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                        help=f"settings preset (default: {DEFAULT_PRESET})")


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """``--data-root``: a Slakh-format folder instead of the preset's embedded dataset."""
    parser.add_argument("--data-root", default="", metavar="DIR",
                        help="Slakh2100-format dataset folder (default: the preset's embedded mini-Slakh, generated "
                             "on first use)")


def add_device(parser: argparse.ArgumentParser) -> None:
    """``--device``: where tensors live."""
    parser.add_argument("--device", default="auto", help="torch device: auto (CUDA when visible), cpu, cuda[:N]")


def add_seed(parser: argparse.ArgumentParser) -> None:
    """``--seed``: the seed of one run."""
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")


def add_seeds(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """``--seeds N``: train and evaluate seeds ``seed .. seed+N-1``; intervals include the seed spread."""
    parser.add_argument("--seeds", type=seed_count, default=default, metavar="N",
                        help=f"number of training seeds, starting at --seed (default: {default}); intervals "
                             "include the seed-to-seed spread")


def add_jobs(parser: argparse.ArgumentParser, what: str = "worker processes") -> None:
    """``--jobs N``: parallel worker processes (default: the usable CPU cores)."""
    parser.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                        help=f"{what} (default: the CPU cores this process may use)")


def add_epochs(parser: argparse.ArgumentParser) -> None:
    """``--epochs``: overrides the preset's epochs."""
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the preset's)")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (for logs)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")


def add_fresh(parser: argparse.ArgumentParser, what: str = "partsim's own earlier output") -> None:
    """``--fresh``: the only "start over" (never replaces what partsim did not create)."""
    parser.add_argument("--fresh", action="store_true",
                        help=f"start over: replace {what} instead of reusing it or refusing (what partsim did not "
                             "write is never replaced)")


def add_out(parser: argparse.ArgumentParser, what: str = "the results as JSON", required: bool = False,
            default_text: str = "") -> None:
    """``--out FILE``: always a file (checked and written with :mod:`partsim_core.data.outputs`)."""
    default = f" (default: {default_text})" if default_text else ""
    parser.add_argument("--out", type=Path, default=None, required=required, metavar="FILE",
                        help=f"write {what} to the file FILE{default}; an existing file is replaced only with "
                             "--fresh and only when partsim wrote it")


def add_out_dir(parser: argparse.ArgumentParser, what: str = "the output", required: bool = False,
                default_text: str = "") -> None:
    """``--out-dir DIR``: always a folder (built with :func:`partsim_core.data.outputs.output_directory`)."""
    default = f" (default: {default_text})" if default_text else ""
    parser.add_argument("--out-dir", type=Path, default=None, required=required, metavar="DIR",
                        help=f"write {what} into the folder DIR{default}; it must be new, empty, or an earlier "
                             "partsim output (replaced only with --fresh)")


def add_training_options(parser: argparse.ArgumentParser, fresh_what: str) -> None:
    """The options of every command that trains: preset, data root, device, seed, epochs, progress, fresh
    (``fresh_what``: what ``--fresh`` replaces)."""
    add_preset(parser)
    add_data_root(parser)
    add_device(parser)
    add_seed(parser)
    add_epochs(parser)
    add_no_progress(parser)
    add_fresh(parser, fresh_what)


def add_run_options(parser: argparse.ArgumentParser, seeds_default: int = 1) -> None:
    """The options of every ``<chapter-group> run``: those of :func:`add_training_options`, seeds and out."""
    add_training_options(parser, "trained models and cached results of this run")
    add_seeds(parser, seeds_default)
    add_out(parser)
