"""Throughput of the book's training step: K trainings one after another vs. in a pool of single-threaded workers.

K identical-size jobs - the CSN of one chapter-4 condition (default (g): pseudo pieces, basic + additional
triplets, norm loss; no pre-trained network needed) with seeds 0 .. K-1, ``--steps`` optimizer steps each, built by
:func:`partsim_core.csn.conditions.condition_setup` for the preset and trained by
:func:`partsim_core.training.train` into a private temporary cache - run

* ``sequential_s``: through :func:`partsim_core.book.training_plan.run_training_jobs` with ``workers=1``, i.e. one
  after another in this process on torch's default intra-op threads (the notebooks' way before the training step);
* ``parallel_s``: through the same function with ``--workers`` (default 2) spawned worker processes, each with one
  OpenMP thread (the training step of ``partsim book build``); worker start-up (spawn, importing torch) included.

``speedup`` = sequential_s / parallel_s. Before the timed runs every stem of the training and validation tracks is
decoded into the private cache, so neither run pays for it. The two runs train into different folders (nothing is
reused). Prints ONE JSON line, with the load average before and after (the cores are shared).

Measured 2026-12-06 on this project's machine (2 CPU cores **shared with other sessions, load average about 10
throughout both runs**, so the figures are noisy and not those of idle cores), default preset's embedded dataset,
condition (g), 2 workers, the sequential run on torch's default 2 threads:

* ``python benchmarks/parallel_training.py --preset default --data-root DIR --jobs 4 --steps 10 --cache DIR2``:
  sequential 262.0 s, parallel 87.8 s, **speedup 2.98** (nothing else of this session running);
* the same with ``--steps 20`` (a first run, partly overlapping a short test run of this session, which slowed
  the sequential side): sequential 482.4 s, parallel 180.7 s, speedup 2.67.

More than the ~1.6-1.8x expected on idle cores (two 1-thread trainings vs. ~1.2x for 2 threads over 1): on shared
cores torch's 2 OpenMP threads are slower than one (idle threads spin and wait for each other,
``benchmarks/training.py``), which the single-threaded workers avoid. Not measured on idle cores (there were none).

Run: ``python benchmarks/parallel_training.py [--preset smoke|default] [--data-root DIR] [--jobs K] [--steps N]
[--workers W] [--condition g] [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from partsim_core.book.training_plan import Job, run_training_jobs  # noqa: E402
from partsim_core.csn.conditions import condition_setup, get_condition
from partsim_core.csn.network import CSN_KIND  # noqa: E402
from partsim_core.data.dataset import DatasetHandle, load_dataset  # noqa: E402
from partsim_core.training import train  # noqa: E402


def train_steps(data: DatasetHandle, letter: str, seed: int, steps: int, out_dir: str) -> dict:
    """One job: ``steps`` optimizer steps (one epoch) of condition ``letter``'s CSN with ``seed`` into ``out_dir``."""
    task, config = condition_setup(get_condition(letter), data, data.preset.csn, seed=seed, device="cpu")
    config = dataclasses.replace(config, epochs=1, steps_per_epoch=steps)
    result = train(task, config, Path(out_dir), kind=CSN_KIND, progress=False)
    return {"reused": result.reused}


def jobs_for(data: DatasetHandle, letter: str, count: int, steps: int, folder: Path) -> list[Job]:
    """``count`` independent jobs of the same size (seeds 0 .. count-1)."""
    return [Job(f"csn-{letter}/seed{seed}", functools.partial(train_steps, data, letter, seed, steps,
                                                              str(folder / f"seed{seed}")))
            for seed in range(count)]


def main(argv: list[str] | None = None) -> int:
    """Run both ways and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=("smoke", "default", "paper"))
    parser.add_argument("--data-root", default="", help="a Slakh-format folder (default: the preset's embedded one)")
    parser.add_argument("--jobs", type=int, default=4, help="K, the number of identical jobs")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per job")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the parallel run")
    parser.add_argument("--condition", default="g", help="a chapter-4 condition without pre-training (c d f g k)")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="private cache folder kept between runs (decoded stems); default: a temporary one")
    args = parser.parse_args(argv)
    if get_condition(args.condition).pre or get_condition(args.condition).is_baseline:
        parser.error("choose a condition without pre-training: c, d, f, g or k")

    with tempfile.TemporaryDirectory(prefix="partsim-parallel-") as temporary:
        folder = Path(temporary)
        # The stem cache and anything else: private (a given --cache keeps the decoded stems for the next run).
        os.environ["PARTSIM_CACHE"] = str(Path(args.cache).resolve() if args.cache else folder / "cache")
        data = load_dataset(args.preset, args.data_root)
        for track in [*data.train_tracks, *data.validation_tracks]:
            data.cache.get_all(track)
        load_before = list(os.getloadavg())
        started = time.perf_counter()
        run_training_jobs(jobs_for(data, args.condition, args.jobs, args.steps, folder / "sequential"), workers=1,
                          progress=False)
        sequential = time.perf_counter() - started
        started = time.perf_counter()
        run_training_jobs(jobs_for(data, args.condition, args.jobs, args.steps, folder / "parallel"),
                          workers=args.workers, progress=False)
        parallel = time.perf_counter() - started
        load_after = list(os.getloadavg())
    print(json.dumps({
        "preset": args.preset, "condition": args.condition, "jobs": args.jobs, "steps": args.steps,
        "workers": args.workers, "sequential_s": round(sequential, 2), "parallel_s": round(parallel, 2),
        "speedup": round(sequential / parallel, 3), "cpu_count": os.cpu_count(),
        "load_average_before": [round(value, 2) for value in load_before],
        "load_average_after": [round(value, 2) for value in load_after],
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
