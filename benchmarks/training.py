"""Speed of chapter 3's training: the data pipeline alone against the full training step of a part network.

On the preset's embedded dataset (``partsim_core.book.resolve_dataset_root(preset, "")``, generated when absent)
a :class:`partsim_core.baseline.triplets.TripletTask` is built for one part of the training split, then

* ``pipeline_triplets_per_s``: ``task.batch(epoch, step)`` alone (gather segments from the memory-mapped stem
  cache + one batched log-mel call), ``--steps`` batches in a row;
* ``step_triplets_per_s``: the full training step as the engine (``partsim_core.training.train``) runs it with
  ``num_workers=0``: batch, copy to the device, forward (bf16 autocast on CUDA), triplet loss, backward, Adam
  step on a :class:`partsim_core.models.PartCNN` of the preset's width;
* ``pipeline_to_step_ratio`` = pipeline / step rate (target: >= 5, the pipeline never starves the model);
* ``estimated_epochs_s``: the preset's epochs x (epoch size / step rate), the training time of one part network;
  with ``--full-run`` also ``full_run_s``, a real ``train()`` of those epochs into a temporary folder.

Chapter 4's CSN (keys ``csn_*``, skipped with ``--no-csn``): the :class:`partsim_core.csn.pseudo_triplet_task.PseudoTripletTask`
and :class:`partsim_core.csn.network.CSNLoss` of condition (i)'s switches (pseudo pieces with created silences,
basic + additional triplets, norm loss), built by :func:`partsim_core.csn.conditions.condition_setup` for the
preset; timed with condition (g), whose task and loss are (i)'s, so that a freshly initialised
:class:`~partsim_core.csn.network.CSNModel` needs no pre-trained network (the step costs the same);

* ``csn_batch_triplets_per_s``: ``task.batch(epoch, step)`` alone (pseudo-piece mixing of anchor, positive and
  negative in the waveform domain + one batched log-mel call);
* ``csn_triplets_per_s``: the full training step (batch, copy, forward of the 3B pieces, CSN loss, backward,
  Adam step) on the CPU; ``csn_cuda_triplets_per_s`` the same on CUDA with bf16 autocast when
  ``torch.cuda.is_available()``;
* ``csn_pipeline_to_step_ratio`` = batch rate / step rate (as ``pipeline_to_step_ratio``) and
  ``csn_batch_time_share`` = batch-assembly time / step time (its inverse: the share of a CPU step spent making
  the batch); ``csn_estimated_epochs_s``: the preset's ``csn.epochs`` x ``csn.triplets_per_epoch`` / step rate;
* ``csn_peak_rss_mib``: this process's peak resident memory after the CSN runs (``ru_maxrss``; ``peak_rss_mib``
  is read before them), ``csn_peak_cuda_mib``: ``torch.cuda.max_memory_allocated`` during the CUDA CSN run.

After one warm-up batch/step each, the best of ``--rounds`` timed rounds of the same steps is kept (2 shared CPU
cores are noisy). The steps run as the engine runs them: batch ``s + 1`` made by its prefetch thread while step
``s`` trains, the model's ops on :func:`partsim_core.training.cpu_step_threads` threads (``--no-prefetch``: batch
then step inline on torch's default threads, the engine before issue 14). ``--peer-json FILE`` adds
``<key>_ratio`` = this run / that run for ``csn_triplets_per_s``, ``step_triplets_per_s``, ``csn_batch_*`` and
``pipeline_*``; ``--peer-root DIR --repeats R`` runs DIR's copy of this benchmark and this one alternately (R
pairs, fresh processes, each with its own ``PYTHONPATH``) and prints the medians, ratios, every run and the load
average around each run.
Prints ONE JSON line.

Profile (issue 14 item 4; ``torch.profiler``, default preset, 2 shared cores, torch 2.13 CPU, oneDNN):

* Before (commit cd346e8), CSN step of condition (i)'s task (32 triplets = 96 pieces of 96 mels x 130 frames,
  width 8), CPU time on one thread: batch 0.10 s (mixing 0.07 s, log-mel 0.035 s: STFT 27 %, reflect pad 19 %,
  filterbank matmul 16 %), model step 0.69 s: convolution backward 34 %, convolution forward 20 %, batch-norm
  backward 14 %, ReLU backward 11 %, batch-norm forward 8 %, zero fills 3 %, max pooling 3 %, Adam < 1 %. Half of
  the model step is the first block (8 channels at the full 96 x 130 resolution: 38 MB per activation, every op
  bound by memory bandwidth, e.g. batch norm at 8 channels ~3x slower per element than at 16). The 2 OpenMP
  threads bring ~1.2x over one on idle cores (the ops are memory-bound) and are *slower* than one thread when
  other processes share the cores: idle OpenMP threads spin (measured at load ~12: one model step 2.5-3.8 s of
  wall and 0.8 s of CPU on 1 thread, 5.6-8.7 s of wall and 1.9 s of CPU on 2). Part network (chapter 3; 64
  triplets, width 16): batch 0.13 s, model step 0.84 s: convolution backward 43 %, forward 28 %, the zero fill of
  max-pool backward 11 %, batch norm 6 %, ReLU backward 3 %.
* Not taken: ``torch.compile`` (inductor, C++) of the CSN: 156 s to compile and 1.6x *slower* per step on this
  CPU; NCHW instead of channels-last: 1.6x slower; bf16: changes the numbers beyond float tolerance.
* After: the same ops on the same tensors (``tests/test_training.py::test_new_cpu_step_equals_the_old_inline_step``:
  loss and gradients equal to float tolerance), scheduled differently: the model's ops on one thread (no spinning,
  no barriers between the two cores), the batch (mixing + log-mel, ~13 % of a step) on the other core at the
  same time. CPU time per CSN step 0.8 s instead of 1.9 s under load. Measured with
  ``--peer-root <cd346e8 checkout> --repeats 3 --steps 5 --rounds 1`` (3 alternating pairs of fresh processes,
  same machine, same time; 2 cores shared with other sessions, load average 9-15 during the runs), medians:
  CSN step 7.1 vs 2.2 triplets/s (3.2x; pairs 2.7x, 4.0x, 3.2x), part-network step 12.9 vs 3.3 triplets/s
  (3.9x; pairs 2.5x, 12.7x, 2.3x). On idle cores the gain is bounded by the overlap (~1.15x for the CSN, the
  batch being ~13 % of a step); most of it comes from not spinning when the cores are shared, which they are in
  this project. Not measured on idle cores (there were none). That prefetch thread is opt-in
  (``TrainConfig(prefetch=True)``, ``--prefetch`` here): by default the engine, and this benchmark, make the batch
  inline.
* After, host memory (``partsim_core.host_memory``): profile of the CSN's forward + backward alone (width 8, 96
  pieces, one thread, idle cores), per call at the full-resolution 96 x 130 x 8 activations: ``fill_`` 15 ms,
  ReLU backward 21 ms, batch norm forward 24 ms / backward 29 ms (of ~38 MB each: page faults of freshly mapped
  memory, not arithmetic); whole forward + backward 0.60-0.78 s. With glibc's ``glibc.malloc.hugetlb=1`` (what
  the ``partsim`` command and this script now run with; ``--system-allocator`` without): 0.46 s, the same values.
  End to end under load (process clock, one thread, 3 alternating pairs): 1.05x (CSN step) and 1.03x (part
  network) over the same code with glibc's defaults; against cd346e8 with glibc's defaults on both sides 0.96x
  (CSN) and 1.06x (part network): the same step per CPU second. The 2x of issue 14 is not reached.

* Idle cores, 2026-12-06 (load below 1.5), float32 both sides, ``--peer-root <cd346e8> --repeats 2 --steps 5
  --rounds 2``: CSN step 58.6 vs 64.3 triplets/s (0.91x), part network 120.7 vs 112.7 (1.07x). Per layer (CSN
  encoder forward + backward, 96 pieces of 96 x 130, 2 threads): block 1 (8 channels, full resolution) 245 ms of
  ~470 ms (its two batch norms ~115 ms, ReLU backward ~35 ms, convolutions ~80 ms, pooling ~14 ms); blocks 2-5
  ~225 ms, mostly convolution; all convolutions ~200 ms (~80 GFLOP/s). Channels-last batch norm at 8 channels costs
  3.5x more per element than at 16 (19.7 vs 5.7 ms for the same 9.6 M values). A fused batch norm + ReLU of block 1
  would save at most ~100 ms (~1.3x of the model step): the 2x of issue 14 is not reachable in float32 on these
  cores. bf16 autocast (``--amp bf16``/``native``): model step 2.2x, whole step ~1.5x, but another computation.

Run: ``python benchmarks/training.py [--preset smoke|default] [--device cpu|cuda] [--steps N] [--rounds R]
[--part drums] [--width W] [--batch-size B] [--mel-in-loss] [--full-run] [--torch-threads N]
[--clock wall|process] [--no-csn] [--prefetch] [--system-allocator] [--amp MODE] [--frontend N_FFT,HOP,N_MELS]
[--peer-root DIR --repeats R [--own-args "..."]]``.

Mixed precision: the steps are timed as the engine trains the preset (``Preset.amp``; ``default``: bf16 autocast
on CPUs with native bf16 since 2026-12-06), reported as ``autocast`` / ``csn_autocast``. That is another
computation than float32, so it never counts towards issue 14's "same computation" speed-up: a peer comparison
refuses runs whose ``autocast``, front end, width or batch differ (a peer that predates the key timed float32);
time this version as the peer does with ``--own-args "--amp off"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from partsim_core import INSTRUMENTS
from partsim_core.baseline.triplets import TripletTask
from partsim_core.data.cache import MIX_PART, StemCache
from partsim_core.data.dataset import resolve_dataset_root
from partsim_core.data.slakh import open_slakh
from partsim_core.host_memory import (
    HUGE_PAGE_TUNABLE,
    TUNABLES_VARIABLE,
    huge_page_environment,
    relaunch_with_huge_pages,
)
from partsim_core.presets import Preset, get_preset
from partsim_core.training import (
    AMP_MODES,
    autocast_dtype,
    autocast_name,
    cpu_step_threads,
    intra_op_threads,
    prefetched,
    usable_cores,
)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_rate(function, steps: int, rounds: int, triplets_per_step: int, device: torch.device,
               clock=time.perf_counter) -> float:
    """Best triplets/s over ``rounds`` rounds of ``steps`` calls ``function(step)``, after one warm-up call.

    Every round runs the same steps, so later rounds find the stems' pages mapped, as every epoch after the
    first does in training.
    """
    function(0)
    best = float("inf")
    for _ in range(rounds):
        _synchronise(device)
        started = clock()
        for step in range(steps):
            function(1 + step)
        _synchronise(device)
        best = min(best, clock() - started)
    return steps * triplets_per_step / best


def _step_rate(make_batch, train_on, steps: int, rounds: int, triplets_per_step: int, device: torch.device,
               clock=time.perf_counter, prefetch: bool = True, threads: int | None = None) -> float:
    """Best triplets/s of the training step as :func:`partsim_core.training.train` runs it (``num_workers=0``).

    With ``prefetch`` batch ``s + 1`` is made by the engine's background thread (:func:`prefetched`) while step
    ``s`` trains, and the model's CPU ops get the engine's intra-op threads (:func:`cpu_step_threads`, or
    ``threads``); without it, batch then step inline on torch's default threads (the engine before the change).
    One warm-up step, then the best of ``rounds`` rounds of ``steps`` steps.
    """
    chosen = cpu_step_threads(device, threads, prefetch)
    with intra_op_threads(chosen):
        train_on(make_batch(0))
        best = float("inf")
        for _ in range(rounds):
            indices = list(range(1, steps + 1))
            batches = prefetched(make_batch, indices) if prefetch else (make_batch(i) for i in indices)
            _synchronise(device)
            started = clock()
            for batch in batches:
                train_on(batch)
            _synchronise(device)
            best = min(best, clock() - started)
    return steps * triplets_per_step / best


def csn_step_rates(data: Any, device: torch.device, steps: int, rounds: int, seed: int = 0,
                   clock=time.perf_counter, batch_rate: bool = True, prefetch: bool = True,
                   threads: int | None = None, amp: str = "auto") -> dict[str, Any]:
    """Batch-assembly and training-step rates of chapter 4's CSN (condition (i)'s task and loss) on ``device``.

    ``data`` is :func:`partsim_core.baseline.load_dataset`'s result for the preset (the ``csn_*`` keys); ``amp``
    the engine's mixed-precision mode (:func:`partsim_core.training.autocast_dtype`).

    Returns:
        ``setup_s`` (task construction), ``step_triplets_per_s``, ``batch_triplets_per_s`` (when ``batch_rate``),
        ``autocast`` (:func:`partsim_core.training.autocast_name` of the steps' dtype),
        ``batch_size``, ``width``, ``triplets_per_epoch``, ``epochs`` and, on CUDA, ``peak_cuda_mib``.
    """
    from partsim_core.csn.conditions import condition_setup, get_condition

    # (g) = (i) without pre-training: the same sampler switches and loss terms, and a fresh model (no cached
    # pre-trained network is needed to time a step).
    timed, proposed = get_condition("g"), get_condition("i")
    assert all(getattr(timed, name) == getattr(proposed, name) for name in ("norm", "psd", "basic", "add"))
    csn = data.preset.csn
    started = time.perf_counter()
    task, config = condition_setup(timed, data, csn, device=str(device), seed=seed)
    out: dict[str, Any] = {"setup_s": time.perf_counter() - started, "batch_size": csn.batch_size,
                             "width": csn.width, "triplets_per_epoch": csn.triplets_per_epoch, "epochs": csn.epochs}
    if batch_rate:
        out["batch_triplets_per_s"] = _best_rate(lambda step: task.batch(0, step), steps, rounds, csn.batch_size,
                                                 torch.device("cpu"), clock)
    torch.manual_seed(seed)
    model = task.build_model().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    amp_dtype = autocast_dtype(amp, device)
    out["autocast"] = autocast_name(amp_dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def training_step(batch: dict[str, torch.Tensor]) -> None:
        batch = {name: value.to(device, non_blocking=True) for name, value in batch.items()}
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()

    out["step_triplets_per_s"] = _step_rate(lambda step: task.batch(0, step), training_step, steps, rounds,
                                            csn.batch_size, device, clock, prefetch, threads)
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


#: Rates compared with a peer version (``--peer-json`` / ``--peer-root``): this run / the peer's.
RATIO_KEYS = ("csn_triplets_per_s", "step_triplets_per_s", "csn_batch_triplets_per_s", "pipeline_triplets_per_s")


def with_frontend(preset: Preset, frontend: str | None) -> Preset:
    """``preset`` with its log-mel front end replaced by ``frontend`` = ``"N_FFT,HOP,N_MELS"`` (None: unchanged).

    Raises:
        ValueError: not three positive integers.
    """
    if frontend is None:
        return preset
    try:
        n_fft, hop_length, n_mels = (int(value) for value in frontend.split(","))
    except ValueError:
        raise ValueError(f"--frontend must be N_FFT,HOP,N_MELS (three integers), got {frontend!r}") from None
    if min(n_fft, hop_length, n_mels) < 1:
        raise ValueError(f"--frontend values must be positive, got {frontend!r}")
    return dataclasses.replace(preset, frontend=dataclasses.replace(preset.frontend, n_fft=n_fft,
                                                                    hop_length=hop_length, n_mels=n_mels))


#: Settings both runs of a peer comparison must report alike (else the two time different computations).
COMPARED_SETTINGS = ("preset", "n_mels", "n_fft", "hop_length", "segment_seconds", "batch_size", "width",
                     "autocast", "csn_autocast")
#: What a run that predates a setting's key used (checkouts before mixed precision on the CPU: float32 there).
_SETTING_BEFORE_ITS_KEY = {"autocast": "off", "csn_autocast": "off"}


def _read_json_line(path: Path) -> dict:
    """The last JSON line of ``path`` (a benchmark's output)."""
    lines = [line for line in path.read_text().splitlines() if line.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"training benchmark: no JSON line in {path}")
    return json.loads(lines[-1])


def peer_ratios(own: dict, peer: dict) -> dict[str, float]:
    """``<key>_ratio`` = own / peer for each of :data:`RATIO_KEYS` both runs have."""
    return {f"{key}_ratio": round(own[key] / peer[key], 2) for key in RATIO_KEYS
            if key in own and key in peer and peer[key]}


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _without_huge_page_tunable(environment: dict[str, str]) -> dict[str, str]:
    """``environment`` without :data:`~partsim_core.host_memory.HUGE_PAGE_TUNABLE` in ``GLIBC_TUNABLES``."""
    kept = [entry for entry in environment.get(TUNABLES_VARIABLE, "").split(":")
            if entry and entry != HUGE_PAGE_TUNABLE]
    result = {name: value for name, value in environment.items() if name != TUNABLES_VARIABLE}
    return {**result, TUNABLES_VARIABLE: ":".join(kept)} if kept else result


def check_comparable(own: dict, peer: dict) -> None:
    """Refuse a comparison of runs that time different computations.

    Compares each of :data:`COMPARED_SETTINGS` that both runs report (an older checkout may not report
    ``n_fft``/``hop_length``; its ``n_mels`` still tells its front end apart; one without ``autocast`` timed
    float32 on the CPU).

    Raises:
        SystemExit: with exit code 2 and the differing settings.
    """
    own = {**_SETTING_BEFORE_ITS_KEY, **own}
    peer = {**_SETTING_BEFORE_ITS_KEY, **peer}
    differing = {key: (own[key], peer[key]) for key in COMPARED_SETTINGS
                 if key in own and key in peer and own[key] != peer[key]}
    if differing:
        detail = ", ".join(f"{key} {mine} here vs {theirs} in the peer" for key, (mine, theirs) in differing.items())
        print(f"training benchmark: the two versions time different computations ({detail}); pin this "
              f"version's settings with --own-args (e.g. \"--amp off\") to match the peer's", file=sys.stderr)
        raise SystemExit(2)


def compare_with_peer(peer_root: Path, passed: list[str], repeats: int, own_extra: Sequence[str] = ()) -> dict:
    """Run the peer checkout's benchmark and this one alternately, each in a fresh process with its own
    ``PYTHONPATH`` (peer first in every pair), and summarise: medians of each version's rates, their ratios
    (own median / peer median), every run's figures and the load average before and after each run.

    ``own_extra`` are arguments for this version's runs only (e.g. ``--frontend`` to match the peer's preset);
    runs whose settings differ (:func:`check_comparable`) are refused.
    """
    own_root = Path(__file__).resolve().parents[1]
    runs: dict[str, list[dict]] = {"own": [], "peer": []}
    loads = []
    for _ in range(repeats):
        for name, root in (("peer", peer_root), ("own", own_root)):
            # Each version with the allocator policy its own command runs with: the peer with glibc's defaults.
            environment = {**os.environ, "PYTHONPATH": str(root)}
            environment = (huge_page_environment(environment) if name == "own"
                           else _without_huge_page_tunable(environment))
            before = _load_average()
            arguments = [*passed, *own_extra] if name == "own" else passed
            done = subprocess.run([sys.executable, str(root / "benchmarks" / "training.py"), *arguments],
                                  env=environment, cwd=root, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"training benchmark of {root} failed:\n{done.stderr[-2000:]}")
            runs[name].append(json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1]))
            if runs["own"] and runs["peer"]:
                check_comparable(runs["own"][-1], runs["peer"][-1])
            loads.append({"version": name, "before": before, "after": _load_average()})
    keys = [key for key in RATIO_KEYS if all(key in run for run in runs["own"] + runs["peer"])]
    own = {key: round(statistics.median(run[key] for run in runs["own"]), 1) for key in keys}
    peer = {key: round(statistics.median(run[key] for run in runs["peer"]), 1) for key in keys}
    return {"preset": runs["own"][0]["preset"], "repeats": repeats, "peer_root": peer_root.name, **own,
            **{f"peer_{key}": value for key, value in peer.items()}, **peer_ratios(own, peer),
            "runs": {name: [{key: run[key] for key in keys} for run in found] for name, found in runs.items()},
            "load_average": loads, "cores": usable_cores()}


def main(argv: list[str] | None = None) -> int:
    """Time the pipeline and the training step; print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=("smoke", "default", "paper"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=10, help="timed batches/steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; the best is kept")
    parser.add_argument("--part", default="drums", help="part whose network is timed (drums ... others, mix)")
    parser.add_argument("--mel-in-loss", action="store_true",
                        help="compute the log-mel in the loss on the device (the batch carries waveforms)")
    parser.add_argument("--full-run", action="store_true",
                        help="also train one part network for the preset's epochs with the engine (timed)")
    parser.add_argument("--width", type=int, default=None, help="override the preset's part_network.width")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--frontend", default=None, metavar="N_FFT,HOP,N_MELS",
                        help="override the preset's log-mel front end, e.g. 1024,512,96 (the default preset's "
                             "front end before 2026-12-06, to time the same computation as an older checkout)")
    parser.add_argument("--amp", default=None, choices=AMP_MODES,
                        help="mixed precision of the timed steps (default: the preset's, as the engine trains it; "
                             "'off' for float32)")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--clock", default="wall", choices=("wall", "process"),
                        help="wall time, or this process's CPU time (robust on a busy machine; use with "
                             "--torch-threads 1, where it equals the wall time of an idle core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-csn", action="store_true", help="skip chapter 4's CSN step (the csn_* keys)")
    parser.add_argument("--prefetch", action="store_true",
                        help="time the steps with the engine's prefetch thread and CPU thread setting "
                             "(TrainConfig(prefetch=True)); default: as the engine trains by default (batch then "
                             "step inline on torch's default threads)")
    parser.add_argument("--system-allocator", action="store_true",
                        help="keep glibc's default malloc policy (default: relaunch with glibc's huge-page tunable, "
                             "as the partsim command runs; partsim_core.host_memory)")
    parser.add_argument("--step-threads", type=int, default=None,
                        help="intra-op threads of the timed steps (default: the engine's choice)")
    parser.add_argument("--peer-json", default=None,
                        help="a JSON line of another version's run of this benchmark: adds *_ratio keys "
                             "(this run / peer)")
    parser.add_argument("--peer-root", default=None,
                        help="another checkout of the project: run its benchmark and this one alternately "
                             "(--repeats pairs, each in a fresh process), print medians and ratios")
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs with --peer-root")
    parser.add_argument("--own-args", default="", metavar="ARGS",
                        help="with --peer-root: extra arguments for this version's runs only, e.g. "
                             "\"--frontend 1024,512,96\" to time the front end of the peer's default preset")
    args = parser.parse_args(argv)
    for flag, value, minimum in (("--steps", args.steps, 1), ("--rounds", args.rounds, 1),
                                 ("--repeats", args.repeats, 1), ("--torch-threads", args.torch_threads, 1),
                                 ("--width", args.width, 1), ("--batch-size", args.batch_size, 1)):
        if value is not None and value < minimum:
            parser.error(f"{flag} must be at least {minimum}, got {value}")
    if args.part not in (*INSTRUMENTS, MIX_PART):
        parser.error(f"--part must be one of {', '.join((*INSTRUMENTS, MIX_PART))}, got {args.part!r}")
    try:
        preset = with_frontend(get_preset(args.preset), args.frontend)
    except ValueError as error:
        parser.error(str(error))
    if argv is None and not args.system_allocator:
        # As the partsim command runs (partsim_core.launch); only from the command line, never when a
        # caller passes argv (the caller's process would be replaced).
        relaunch_with_huge_pages()
    if args.peer_root:
        passed = list(sys.argv[1:] if argv is None else argv)
        for flag in ("--peer-root", "--repeats", "--own-args"):
            while flag in passed:
                position = passed.index(flag)
                del passed[position:position + 2]
        own_extra = args.own_args.split()
        if "--frontend" in passed:
            parser.error("--frontend applies to both versions and an older peer may not know it; with --peer-root "
                         "pass it in --own-args")
        print(json.dumps(compare_with_peer(Path(args.peer_root).resolve(), passed, args.repeats, own_extra)))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)

    config = preset.part_network
    overrides = {name: value for name, value in (("width", args.width), ("batch_size", args.batch_size))
                 if value is not None}
    config = dataclasses.replace(config, **overrides)
    dataset = open_slakh(resolve_dataset_root(args.preset, ""))
    cache = StemCache(dataset, preset.frontend.sample_rate)
    started = time.perf_counter()
    task = TripletTask(cache, dataset.tracks("train"), args.part, preset.frontend, config, seed=args.seed,
                       seconds=preset.segment_seconds, threshold=preset.silence_threshold,
                       mel_in_loss=args.mel_in_loss)
    index_seconds = time.perf_counter() - started
    device = torch.device(args.device)
    batch_size = config.batch_size

    clock = time.perf_counter if args.clock == "wall" else time.process_time
    pipeline_rate = _best_rate(lambda step: task.batch(0, step), args.steps, args.rounds, batch_size,
                               torch.device("cpu"), clock)

    torch.manual_seed(args.seed)
    model = task.build_model().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    amp = args.amp or preset.amp
    amp_dtype = autocast_dtype(amp, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def training_step(batch: tuple[torch.Tensor, ...]) -> None:
        batch = tuple(part.to(device, non_blocking=True) for part in batch)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()

    prefetch = args.prefetch
    step_rate = _step_rate(lambda step: task.batch(0, step), training_step, args.steps, args.rounds, batch_size,
                           device, clock, prefetch, args.step_threads)
    epoch_size = task.sampler.epoch_size()
    result = {
        "preset": args.preset,
        "part": args.part,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "mel_in_loss": args.mel_in_loss,
        "amp": amp,
        "autocast": autocast_name(amp_dtype),
        "batch_size": batch_size,
        "width": config.width,
        "n_mels": preset.frontend.n_mels,
        "n_fft": preset.frontend.n_fft,
        "hop_length": preset.frontend.hop_length,
        "segment_seconds": preset.segment_seconds,
        "torch_threads": torch.get_num_threads(),
        "prefetch": prefetch,
        # The tunable this process started with (the relaunch above puts it there unless --system-allocator).
        "host_allocator": HUGE_PAGE_TUNABLE if HUGE_PAGE_TUNABLE in os.environ.get(TUNABLES_VARIABLE, "").split(":")
        else "glibc default",
        "step_threads": cpu_step_threads(device, args.step_threads, prefetch) or torch.get_num_threads(),
        "clock": args.clock,
        "train_tracks": len(task.index.track_ids),
        "epoch_triplets": epoch_size,
        "epochs": config.epochs,
        "index_s": round(index_seconds, 2),
        "pipeline_triplets_per_s": round(pipeline_rate, 1),
        "step_triplets_per_s": round(step_rate, 1),
        "pipeline_to_step_ratio": round(pipeline_rate / step_rate, 2),
        "estimated_epochs_s": round(config.epochs * epoch_size / step_rate, 1),
    }
    if args.full_run:
        from partsim_core.training import TrainConfig, train

        run = TrainConfig(run_name=f"benchmark-{args.part}", seed=args.seed, epochs=config.epochs,
                          steps_per_epoch=task.steps_per_epoch, batch_size=batch_size, lr=config.lr,
                          device=args.device, model={"width": config.width}, data={"preset": args.preset})
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            trained = train(task, run, out_dir=Path(folder) / "run", progress=False)
            result["full_run_s"] = round(time.perf_counter() - started, 1)
            result["full_run_final_loss"] = round(trained.history[-1]["train_loss"], 4)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if device.type == "cuda":
        result["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    if not args.no_csn:
        from partsim_core.data.dataset import load_dataset

        data = load_dataset(args.preset)
        data = dataclasses.replace(data, preset=preset)
        cpu = csn_step_rates(data, torch.device("cpu"), args.steps, args.rounds, args.seed, clock,
                             prefetch=prefetch, threads=args.step_threads, amp=amp)
        result.update({
            "csn_autocast": cpu["autocast"],
            "csn_condition": "i (task and loss; timed as g: fresh weights)",
            "csn_batch_size": cpu["batch_size"],
            "csn_width": cpu["width"],
            "csn_setup_s": round(cpu["setup_s"], 2),
            "csn_batch_triplets_per_s": round(cpu["batch_triplets_per_s"], 1),
            "csn_triplets_per_s": round(cpu["step_triplets_per_s"], 1),
            "csn_pipeline_to_step_ratio": round(cpu["batch_triplets_per_s"] / cpu["step_triplets_per_s"], 2),
            "csn_batch_time_share": round(cpu["step_triplets_per_s"] / cpu["batch_triplets_per_s"], 3),
            "csn_estimated_epochs_s": round(cpu["epochs"] * cpu["triplets_per_epoch"] / cpu["step_triplets_per_s"],
                                            1),
        })
        if torch.cuda.is_available():
            # Always timed on the GPU when there is one (the rest of this script follows --device).
            cuda = csn_step_rates(data, torch.device("cuda"), args.steps, args.rounds, args.seed,
                                  time.perf_counter, batch_rate=False, prefetch=prefetch, amp=amp)
            result["csn_cuda_name"] = torch.cuda.get_device_name(torch.device("cuda"))
            result["csn_cuda_triplets_per_s"] = round(cuda["step_triplets_per_s"], 1)
            result["csn_cuda_batch_time_share"] = round(cuda["step_triplets_per_s"] / cpu["batch_triplets_per_s"],
                                                        3)
            result["csn_peak_cuda_mib"] = round(cuda["peak_cuda_mib"], 1)
        result["csn_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.peer_json:
        result.update(peer_ratios(result, _read_json_line(Path(args.peer_json))))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
