"""The book's training step: every model the chapters need, trained before the notebooks in a pool of processes.

Each chapter notebook trains its models one after another inside its own process (chapter 3's
:func:`~partsim_core.baseline.run.run_chapter3`, chapter 4's :func:`~partsim_core.csn.run.run_chapter4`, chapter 6's
:func:`~partsim_core.mixquery.run.run_evaluation`), with torch's default intra-op threads. The models' ops are
memory-bound and scale poorly over threads (~1.2x from 1 to 2 threads on 2 cores, ``benchmarks/training.py``), so
two independent trainings in two single-threaded processes finish sooner (``benchmarks/parallel_training.py``).

:func:`book_training_jobs` lists every model the chapter runners would train for a dataset and seeds, by calling
the same functions with the same arguments (so their artefact keys are the runners' keys and each notebook reuses
them: :func:`partsim_core.training.train` loads a finished model of an identical key); models that two chapters
share (chapter 3's ideal networks and chapter 4's reference block, condition (i) and chapter 6's CSN...) are one
job. :func:`run_training_jobs` runs the jobs in dependency order in ``workers`` spawned processes, each started with
one OpenMP / MKL / OpenBLAS thread in its environment (set before torch is imported there; this process's torch
threads are never changed), each ending with its parent.

What each chapter trains (``s`` = every seed, ``s0`` = the first seed of the book):

* chapter 3: the U-Net separator (seed ``s0``) and the separation of the training and validation tracks; per seed
  the ten part networks (five parts x ideal / separated input) and the track network on the mix; the earlier
  U-Nets of the separator-quality curve (seed ``s0``, :func:`~partsim_core.baseline.separator_quality.
  default_curve_epochs`);
* chapter 4: per seed the five pre-training target networks (on the pre-training tracks), the pre-training (= (b))
  and conditions (c)-(k); condition (a)'s part networks, on the U-Net of seed 0 (as the runner passes no seed);
* chapter 6 (only on a dataset with the generator's ground truth, which its evaluation needs): per seed condition
  (i), the track network and the five separated-input part networks on the U-Net *of that seed*.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.baseline.networks import INPUTS, network_name, train_part_network
from partsim_core.baseline.separated_stems import separated_source, style_mix_source
from partsim_core.baseline.separator_quality import default_curve_epochs
from partsim_core.baseline.separator_training import train_separator
from partsim_core.baseline.separators import check_backend
from partsim_core.csn.conditions import ALL_LETTERS, get_condition, train_condition
from partsim_core.csn.crossover import CROSSOVER_STYLE_MIX, sweep_for
from partsim_core.csn.pretraining import pretraining_tracks, train_pretraining
from partsim_core.data.cache import MIX_PART, stable_hash
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.synth import GROUND_TRUTH_FILE
from partsim_core.errors import PartsimError
from partsim_core.host_memory import TUNABLES_VARIABLE, huge_page_environment
from partsim_core.mixquery.backends import SEPARATOR_SEED
from partsim_core.processes import die_with_parent
from partsim_core.training import usable_cores

#: Environment variables set to 1 in every worker process (BLAS / OpenMP thread pools), before torch is imported.
THREAD_VARIABLES: tuple[str, ...] = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: The chapters whose notebooks train models, by notebook name (``_toc.yml``'s ``notebooks/<name>``).
NOTEBOOK_CHAPTERS: dict[str, int] = {"ch3_separation_baseline": 3, "ch4_csn_ablations": 4, "ch6_mixquery": 6}

#: Seconds to wait for a worker to leave after it was told to stop, before it is terminated.
_JOIN_SECONDS = 10.0


@dataclass(frozen=True)
class Job:
    """One unit of the training step.

    Attributes:
        name: Unique name, e.g. ``csn-i/seed0``.
        run: Picklable callable without arguments (it runs in a worker process); returns a small picklable value
            (the jobs of :func:`book_training_jobs` return ``{"reused": bool}``).
        after: Names of the jobs that must finish first.
    """

    name: str
    run: Callable[[], Any]
    after: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------------------
# The jobs (module-level functions: picklable through functools.partial)
# --------------------------------------------------------------------------------------------------------------


def _outcome(result: Any) -> dict[str, Any]:
    return {"reused": bool(result.reused), "epochs": len(result.history or [])}


def _separator_job(data: DatasetHandle, seed: int, epochs: int | None, device: str) -> dict[str, Any]:
    """Train (or reuse) the U-Net separator, as :func:`~partsim_core.baseline.separators.get_separator` does."""
    return _outcome(train_separator(data, device=device, seed=seed, epochs=epochs, progress=False))


def _separation_job(data: DatasetHandle, backend: str, options: dict[str, Any], device: str) -> dict[str, Any]:
    """Separate (or verify) the training and validation tracks once, before the networks that read them."""
    source = separated_source(data, backend, device=device, **options)
    source.separate_tracks([*data.train_tracks, *data.validation_tracks], progress=False)
    return {"reused": None}


def _part_job(data: DatasetHandle, part: str, kind: str, seed: int, epochs: int | None, device: str,
              backend: str, options: dict[str, Any], skip_missing: bool = False) -> dict[str, Any]:
    """Train (or reuse) one chapter-3 network; ``skip_missing`` mirrors
    :func:`~partsim_core.csn.pretraining.target_networks` (a part without triplets gets no network)."""
    source = separated_source(data, backend, device=device, **options) if kind == "separated" else None
    try:
        result = train_part_network(data, part, kind, source=source, epochs=epochs, device=device, progress=False,
                                    seed=seed)
    except PartsimError as error:
        if not skip_missing:
            raise
        return {"reused": None, "skipped": str(error)}
    return _outcome(result)


def _style_mix_separator_job(data: DatasetHandle, seed: int, device: str) -> dict[str, Any]:
    """Chapter 4's crossover: the U-Net trained on the shifted style mix (rendered first when absent)."""
    style_mix_source(data, CROSSOVER_STYLE_MIX, device=device, seed=seed, progress=False)
    return {"trained": True}


def _pretraining_job(data: DatasetHandle, seed: int, device: str) -> dict[str, Any]:
    return _outcome(train_pretraining(data, data.preset.csn, device=device, progress=False, seed=seed))


def _condition_job(data: DatasetHandle, letter: str, seed: int, epochs: int | None, device: str) -> dict[str, Any]:
    return _outcome(train_condition(letter, data, device=device, epochs=epochs, progress=False, seed=seed))


# --------------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------------


class _Plan:
    """Jobs keyed by what decides their artefact: a second request of the same model returns the first job."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self._names: dict[tuple, str] = {}

    def add(self, identity: tuple, name: str, run: Callable[[], Any], after: Sequence[str] = ()) -> str:
        if identity in self._names:
            return self._names[identity]
        if any(job.name == name for job in self.jobs):
            raise PartsimError(f"training plan: two different jobs named {name!r}")
        self.jobs.append(Job(name, run, tuple(after)))
        self._names[identity] = name
        return name


def _tracks_identity(data: DatasetHandle, tracks: Sequence[Any]) -> str:
    return stable_hash([str(data.root), [track.track_id for track in tracks]])


class _BookPlanner:
    """Builds the jobs chapter by chapter (see the module docstring)."""

    def __init__(self, data: DatasetHandle, device: str, backend: str, first_seed: int) -> None:
        self.data, self.device, self.backend, self.first_seed = data, device, backend, first_seed
        self.plan = _Plan()
        settings = data.preset
        self.part_epochs = settings.part_network.epochs
        self.separator_epochs = settings.separator.epochs
        self.csn_epochs = settings.csn.epochs

    def separator(self, seed: int, epochs: int | None = None, separate: bool = True,
                  ) -> tuple[dict[str, Any], tuple[str, ...], tuple]:
        """Jobs of a separator and (``separate``) of its separation of the training and validation tracks:
        (separated_source options, the jobs to wait for, the identity of the separated stems)."""
        if self.backend != "unet":
            identity = ("separation", self.backend)
            name = self.plan.add(identity, f"separated-stems/{self.backend}",
                                 functools.partial(_separation_job, self.data, self.backend, {}, self.device))
            return {}, (name,), identity
        resolved = epochs or self.separator_epochs
        label = "separator" if resolved == self.separator_epochs else f"separator-{resolved}ep"
        trained = self.plan.add(("separator", seed, resolved), f"{label}/seed{seed}",
                                functools.partial(_separator_job, self.data, seed, epochs, self.device))
        options = {"seed": seed, "progress": False, **({"epochs": epochs} if epochs is not None else {})}
        identity = ("separation", "unet", seed, resolved)
        if not separate:
            return options, (trained,), identity
        separated = self.plan.add(identity, f"separated-stems/{label}-seed{seed}",
                                  functools.partial(_separation_job, self.data, "unet", options, self.device),
                                  after=[trained])
        return options, (separated,), identity

    def part_network(self, part: str, kind: str, seed: int, separator: int | None = None,
                     tracks: Sequence[Any] | None = None, name: str | None = None,
                     skip_missing: bool = False) -> str:
        """A chapter-3 network (``separator``: the seed of the U-Net of separated input; ``tracks``: other
        training tracks, as the pre-training's targets have)."""
        data = self.data if tracks is None else dataclasses.replace(self.data, train_tracks=list(tracks))
        options: dict[str, Any] = {}
        after: tuple[str, ...] = ()
        source_identity: tuple | None = None
        label = network_name(part, kind)
        if kind == "separated":
            options, after, source_identity = self.separator(int(separator or 0))
            if self.backend == "unet" and separator != self.first_seed:
                label = f"{label}-separator{separator}"
        identity = ("part", part, kind, seed, self.part_epochs, _tracks_identity(data, data.train_tracks),
                    _tracks_identity(data, data.validation_tracks), source_identity)
        return self.plan.add(identity, name or f"{label}/seed{seed}",
                             functools.partial(_part_job, data, part, kind, seed, None, self.device, self.backend,
                                               options, skip_missing), after=after)

    def pretraining(self, seed: int) -> str:
        csn = self.data.preset.csn
        tracks = pretraining_tracks(self.data, csn)
        targets = [self.part_network(part, "ideal", seed, tracks=tracks, name=f"pretraining-target-{part}/seed{seed}",
                                     skip_missing=True) for part in INSTRUMENTS]
        return self.plan.add(("pretraining", seed), f"csn-pretrain/seed{seed}",
                             functools.partial(_pretraining_job, self.data, seed, self.device), after=targets)

    def condition(self, letter: str, seed: int) -> str:
        condition = get_condition(letter)
        if condition.pretraining_only:
            return self.pretraining(seed)
        after = [self.pretraining(seed)] if condition.pre else []
        return self.plan.add(("condition", letter, seed, self.csn_epochs), f"csn-{letter}/seed{seed}",
                             functools.partial(_condition_job, self.data, letter, seed, None, self.device),
                             after=after)


def has_ground_truth(data: DatasetHandle) -> bool:
    """Whether the dataset is the generator's (with ``partsim_ground_truth.json``): chapter 6 evaluates only there."""
    return (data.root / GROUND_TRUTH_FILE).is_file()


def book_training_jobs(data: DatasetHandle, seeds: Sequence[int], device: str = "auto", backend: str = "unet",
                       chapters: Collection[int] = (3, 4, 6)) -> list[Job]:
    """Every model the book's chapter runners train on ``data`` for ``seeds``, as jobs in dependency order.

    Mirrors the notebooks' calls with their defaults (no epochs override, every chapter-4 condition, chapter 6's
    ``csn`` and ``separated`` backends and its track-level peer).

    Args:
        data: The dataset handle the notebooks load (:func:`~partsim_core.data.dataset.load_dataset`).
        seeds: The training seeds (``seed .. seed + seeds - 1`` of the book); the first also seeds chapter 3's
            separator.
        device: The notebooks' device.
        backend: Chapter 3's and condition (a)'s separator backend.
        chapters: The chapters whose models to list (3, 4, 6); chapter 6's only on a dataset with the generator's
            ground truth (its evaluation refuses others before training anything but condition (i)).

    Raises:
        PartsimError: no seeds, a negative seed, an unknown backend or chapter.
    """
    check_backend(backend)
    seeds = [int(seed) for seed in seeds]
    if not seeds or any(seed < 0 for seed in seeds):
        raise PartsimError(f"seeds must be one or more non-negative integers, got {seeds!r}")
    unknown = sorted(set(chapters) - set(NOTEBOOK_CHAPTERS.values()))
    if unknown:
        raise PartsimError(f"no training plan for chapter(s) {unknown}; chapters that train: 3, 4, 6")
    planner = _BookPlanner(data, device, backend, seeds[0])
    if 3 in chapters:
        # run_chapter3: the separator of the first seed, the networks per seed, the quality curve's U-Nets.
        planner.separator(seeds[0])
        for seed in seeds:
            for part in INSTRUMENTS:
                for kind in INPUTS:
                    planner.part_network(part, kind, seed, separator=seeds[0])
            planner.part_network(MIX_PART, "ideal", seed)
        if backend == "unet":
            for epochs in default_curve_epochs(planner.separator_epochs):
                planner.separator(seeds[0], epochs, separate=False)
    if 4 in chapters:
        # run_chapter4: conditions (b)-(k) per seed; condition (a)'s networks on the seed-0 separator.
        for letter in ALL_LETTERS:
            if not get_condition(letter).is_baseline:
                for seed in seeds:
                    planner.condition(letter, seed)
        for seed in seeds:
            for part in INSTRUMENTS:
                for kind in ("separated", "ideal"):
                    planner.part_network(part, kind, seed, separator=0)
        if backend == "unet" and "style-mix" in sweep_for(data.preset.name):
            # The crossover's separator trained on another style mix (its earlier U-Nets are chapter 3's).
            planner.plan.add(("style-mix-separator", seeds[0]), f"separator-style-mix/seed{seeds[0]}",
                             functools.partial(_style_mix_separator_job, data, seeds[0], device))
    if 6 in chapters:
        # get_backend("csn") of the first seed; run_evaluation: per seed condition (i), the separated backend on
        # the one U-Net (mixquery.backends.SEPARATOR_SEED), the track network (only where the evaluation can run).
        planner.condition("i", seeds[0])
        if has_ground_truth(data):
            planner.backend = "unet"
            for seed in seeds:
                planner.condition("i", seed)
                for part in INSTRUMENTS:
                    planner.part_network(part, "separated", seed, separator=SEPARATOR_SEED)
                planner.part_network(MIX_PART, "ideal", seed)
            planner.backend = backend
    return planner.plan.jobs


# --------------------------------------------------------------------------------------------------------------
# Running the jobs
# --------------------------------------------------------------------------------------------------------------


def _check_jobs(jobs: Sequence[Job]) -> dict[str, int]:
    """Position of every job by name; refuses duplicate names, unknown dependencies and cycles."""
    positions: dict[str, int] = {}
    for position, job in enumerate(jobs):
        if not isinstance(job, Job):
            raise PartsimError(f"training jobs must be Job objects, got {type(job).__name__}")
        if job.name in positions:
            raise PartsimError(f"two training jobs are named {job.name!r}")
        positions[job.name] = position
    for job in jobs:
        unknown = [name for name in job.after if name not in positions]
        if unknown:
            raise PartsimError(f"training job {job.name!r} waits for unknown job(s) {', '.join(unknown)}")
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise PartsimError(f"training jobs wait for each other in a cycle: {' -> '.join([*path, name])}")
        state[name] = 1
        for before in jobs[positions[name]].after:
            visit(before, [*path, name])
        state[name] = 2

    for job in jobs:
        visit(job.name, [])
    return positions


def _priorities(jobs: Sequence[Job]) -> dict[str, int]:
    """Number of jobs that wait for each job, directly or not: those go first, so the pool rarely idles."""
    waiting: dict[str, set[str]] = {job.name: set() for job in jobs}
    by_name = {job.name: job for job in jobs}

    def ancestors(name: str) -> set[str]:
        found: set[str] = set()
        stack = list(by_name[name].after)
        while stack:
            current = stack.pop()
            if current not in found:
                found.add(current)
                stack.extend(by_name[current].after)
        return found

    for job in jobs:
        for before in ancestors(job.name):
            waiting[before].add(job.name)
    return {name: len(names) for name, names in waiting.items()}


def _describe(error: BaseException) -> str:
    """An error as the user reads it: a PartsimError's message, else its type, message and last frame."""
    if isinstance(error, PartsimError):
        return str(error)
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _failure(name: str, message: str) -> PartsimError:
    return PartsimError(f"training job {name!r} failed: {message}")


def _worker_main(parent_pid: int, connection: multiprocessing.connection.Connection) -> None:
    """A worker: run the jobs it is sent, one at a time, and send back ``(name, ok, value or message)``."""
    die_with_parent(parent_pid)
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            connection.send((job.name, True, job.run()))
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent, named
            connection.send((job.name, False, _describe(error)))
            if isinstance(error, KeyboardInterrupt):
                return


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """``os.environ`` for the workers started inside the block, restored after it: :data:`THREAD_VARIABLES` set to
    1, and glibc's huge-page tunable (:func:`partsim_core.host_memory.huge_page_environment`; already there when
    this process was started by the ``partsim`` command). This process's own thread pools are unaffected."""
    names = (*THREAD_VARIABLES, TUNABLES_VARIABLE)
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(huge_page_environment({**os.environ, **{name: "1" for name in THREAD_VARIABLES}}))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_sequentially(jobs: Sequence[Job], order: list[Job], bar: Any, say: Callable[[str], None],
                      ) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for job in order:
        bar.set_postfix_str(job.name)
        started = time.perf_counter()
        try:
            results[job.name] = job.run()
        except PartsimError as error:
            raise _failure(job.name, str(error)) from None
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as error:  # noqa: BLE001 - named and re-raised as the user's error message
            raise _failure(job.name, _describe(error)) from error
        bar.update()
        say(_finished_line(job.name, results[job.name], started))
    return results


def _finished_line(name: str, value: Any, started: float) -> str:
    """The log line of a finished job: its name, trained or reused, and its seconds."""
    reused = value.get("reused") if isinstance(value, dict) else None
    return f"training: {name} " + ("reused" if reused else "done") + f" in {time.perf_counter() - started:.1f} s"


def _topological(jobs: Sequence[Job], priority: dict[str, int]) -> list[Job]:
    """Jobs in an order that respects ``after``; among ready jobs the one most others wait for, then list order."""
    done: set[str] = set()
    remaining = list(jobs)
    order = []
    while remaining:
        ready = [job for job in remaining if all(name in done for name in job.after)]
        chosen = max(ready, key=lambda job: priority[job.name])
        order.append(chosen)
        done.add(chosen.name)
        remaining.remove(chosen)
    return order


def run_training_jobs(jobs: Sequence[Job], workers: int | None = None, progress: bool = True,
                      log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``jobs`` in dependency order in ``workers`` processes; returns each job's value by name.

    Every worker is a spawned process whose environment holds ``OMP_NUM_THREADS=1`` (and MKL / OpenBLAS) from its
    start, so torch there runs its ops on one thread; it ends when this process ends, even by SIGKILL. A ready job
    goes to the next idle worker, those most other jobs wait for first. ``workers=1`` runs the jobs here, one after
    another, with this process's threads (no pool).

    Args:
        jobs: The jobs (names unique; ``after`` names jobs of the list).
        workers: Processes; ``None`` = :func:`~partsim_core.training.usable_cores`.
        progress: A progress bar over the jobs (on stderr).
        log: One line per finished job (default: nowhere).

    Raises:
        PartsimError: bad jobs (duplicate names, unknown dependencies, a cycle), ``workers < 1``, or a failing job
            (its name and error; the other running jobs are stopped first).
    """
    say = log or (lambda message: None)
    _check_jobs(jobs)
    workers = usable_cores() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PartsimError(f"workers must be a positive integer, got {workers!r}")
    priority = _priorities(jobs)
    bar = tqdm(total=len(jobs), desc="training jobs", unit="job", disable=not progress, file=sys.stderr)
    try:
        if workers == 1 or len(jobs) <= 1:
            return _run_sequentially(jobs, _topological(jobs, priority), bar, say)
        return _run_pool(jobs, min(workers, len(jobs)), priority, bar, say)
    finally:
        bar.close()


def _run_pool(jobs: Sequence[Job], workers: int, priority: dict[str, int], bar: Any,
              say: Callable[[str], None]) -> dict[str, Any]:
    """:func:`run_training_jobs` with a pool of ``workers`` processes."""
    context = multiprocessing.get_context("spawn")
    processes, connections = [], []
    with worker_environment():
        for number in range(workers):
            parent_end, child_end = context.Pipe()
            # Not daemonic: a job may start processes of its own (the crossover's style-mix rendering uses the
            # generator's process pool). Workers still die with this process (die_with_parent) and are joined or
            # terminated below.
            process = context.Process(target=_worker_main, args=(os.getpid(), child_end),
                                      name=f"partsim-training-{number}", daemon=False)
            process.start()
            child_end.close()
            processes.append(process)
            connections.append(parent_end)
    pending = list(jobs)
    done: set[str] = set()
    running: dict[int, tuple[str, float]] = {}  # worker -> (job, start time)
    results: dict[str, Any] = {}
    try:
        while pending or running:
            for worker in range(workers):
                if worker in running:
                    continue
                ready = [job for job in pending if all(name in done for name in job.after)]
                if not ready:
                    break
                job = max(ready, key=lambda candidate: priority[candidate.name])
                pending.remove(job)
                connections[worker].send(job)
                running[worker] = (job.name, time.perf_counter())
            if not running:
                raise PartsimError("training jobs left that can never start: " + ", ".join(j.name for j in pending))
            bar.set_postfix_str(", ".join(name for name, _ in running.values()))
            busy = list(running)
            ready_objects = multiprocessing.connection.wait(
                [connections[worker] for worker in busy] + [processes[worker].sentinel for worker in busy])
            for worker in busy:
                name, started = running[worker]
                if connections[worker] in ready_objects:
                    try:
                        finished, ok, value = connections[worker].recv()
                    except (EOFError, OSError):
                        finished, ok, value = name, False, _died(processes[worker])
                elif processes[worker].sentinel in ready_objects:
                    finished, ok, value = name, False, _died(processes[worker])
                else:
                    continue
                if not ok:
                    raise _failure(finished, value)
                del running[worker]
                done.add(finished)
                results[finished] = value
                bar.update()
                say(_finished_line(finished, value, started))
    except BaseException:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(_JOIN_SECONDS)
        raise
    for connection in connections:
        with contextlib.suppress(OSError):
            connection.send(None)
    for process in processes:
        process.join(_JOIN_SECONDS)
        if process.is_alive():
            process.terminate()
            process.join(_JOIN_SECONDS)
    return results


def _died(process: Any) -> str:
    process.join(1.0)
    return f"its worker process ended unexpectedly (exit code {process.exitcode}; out of memory?)"
