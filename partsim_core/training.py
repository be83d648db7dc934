"""The one training loop of the project: seeded, checkpointed, resumable, mixed precision, DDP through torchrun.

Every model (chapter 3's per-part networks and separator U-Net, chapter 4's networks) is trained by :func:`train`
from a :class:`TrainConfig` and a :class:`TrainingTask` that knows how to build the model, produce batch
``(epoch, step)`` and compute the loss. The engine owns everything else:

* **Determinism.** Python, numpy and torch are seeded from ``config.seed`` before the model is built; batches are a
  pure function of ``(seed, epoch, step)`` (the task's promise), so a run is reproducible bit for bit on CPU. GPU
  runs are seeded the same way but not bitwise reproducible (cuDNN/cuBLAS kernels).
* **Checkpoints and resume.** ``checkpoint.pt`` is written atomically every ``checkpoint_every`` optimizer steps
  and at every epoch end. It holds model, optimizer, grad-scaler, position, RNG states, early-stopping state and
  history, so a resumed run continues exactly: its final weights equal those of an uninterrupted run.
* **Artefacts.** ``model.pt`` (key + weights), ``config.json`` (config, key, seed, git commit, package versions,
  device) and ``history.json`` are written at the end, ``model.pt`` last: its presence marks a finished run,
  which a later call with the same key reuses without training (the files: :mod:`partsim_core.training_artefacts`).
* **Early stopping** on the task's validation loss; the best epoch's weights are the result.
* **Mixed precision.** ``amp="auto"`` is bf16 autocast on CUDA and off on CPU. ``"native"`` is bf16 autocast
  wherever the device computes bf16 natively (CUDA with bf16, a CPU with bf16 instructions: AVX512-BF16 or
  AMX; :func:`cpu_has_native_bf16`), full precision elsewhere (emulated bf16 is slower than float32); the
  ``default`` preset trains with it (``Preset.amp``). ``"bf16"`` also works on CPU (torch CPU autocast);
  ``"fp16"`` needs CUDA (it uses a gradient scaler) and is refused on CPU with a PartsimError. The autocast dtype a
  run used is recorded in its ``config.json`` (``autocast``).
* **Multi-GPU** through :class:`~torch.nn.parallel.DistributedDataParallel` when launched by ``torchrun``
  (``WORLD_SIZE > 1``): gloo on CPU, nccl on CUDA; rank ``r`` trains on ``task.batch(epoch, step * world + r)``;
  only rank 0 writes files.
* **Data pipeline.** With ``num_workers > 0`` a :class:`~torch.utils.data.DataLoader` over step indices prefetches
  ``task.batch`` in worker processes; with 0 (``prefetch=True``, the default) one background thread makes batch
  ``s + 1`` while the model trains on batch ``s`` (:func:`prefetched`), and on the CPU the model's ops get
  ``cpu_threads`` intra-op threads (default: the usable cores minus the one that thread needs,
  :func:`cpu_step_threads`). Why: on 2 cores the CSN's and part network's steps spend most of their time in
  memory-bound full-resolution ops (batch norm, ReLU, pooling and 8-16 channel convolutions) that scale poorly
  over OpenMP threads (~1.2x from 1 to 2 threads, far worse when other processes share the cores, since idle
  OpenMP threads spin), while the batch (mixing + log-mel) is independent work for the second core
  (``benchmarks/training.py``). Batches are pure functions of ``(seed, epoch, step)``, so neither changes what
  is computed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from partsim_core.data.cache import cache_root, stable_hash
from partsim_core.device import resolve_device
from partsim_core.errors import PartsimError
from partsim_core.training_artefacts import (
    CHECKPOINT_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    RUN_FILES,
    load_trained,
    load_training_file,
    save_training_file,
    write_finished_run,
)

#: Offset added to a task's seed for its fixed validation triplets, so they never coincide with training ones.
VALIDATION_SEED_OFFSET = 1_000_003

AMP_MODES = ("auto", "off", "bf16", "fp16", "native")
#: Fields that change how fast a run goes, not what it produces; left out of :meth:`TrainConfig.key`.
_KEY_EXCLUDED = ("device", "num_workers", "checkpoint_every", "prefetch", "cpu_threads")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json`` beside the weights)."""

    run_name: str
    seed: int = 0
    epochs: int = 1
    #: Optimizer steps per epoch (per process under DDP).
    steps_per_epoch: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: Optimizer steps between checkpoints (a checkpoint is also written at every epoch end).
    checkpoint_every: int = 50
    #: Epochs without a validation improvement before stopping; ``None`` = never stop early.
    early_stopping_patience: int | None = None
    device: str = "auto"
    amp: str = "auto"
    num_workers: int = 0
    #: With ``num_workers == 0``: make the next batch in a background thread while the model trains. Off by
    #: default: with this machine's BLAS, batch-making and training torch ops in two threads at once corrupted
    #: later LAPACK calls (``lu_solve`` pivots, found by the test suite) and changed trained weights beyond float
    #: tolerance; use it only where a test on that machine shows it safe.
    prefetch: bool = False
    #: Intra-op threads of the model's ops on the CPU; ``None`` = :func:`cpu_step_threads`' choice.
    cpu_threads: int | None = None
    #: Model hyper-parameters (recorded and part of the key).
    model: dict = field(default_factory=dict)
    #: Data parameters (recorded and part of the key).
    data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.run_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.run_name):
            raise PartsimError(f"run_name must be letters, digits, '.', '_' or '-', got {self.run_name!r}")
        for name in ("epochs", "steps_per_epoch", "batch_size", "checkpoint_every"):
            _require_int(name, getattr(self, name), minimum=1)
        _require_int("seed", self.seed, minimum=0)
        _require_int("num_workers", self.num_workers, minimum=0)
        if self.cpu_threads is not None:
            _require_int("cpu_threads", self.cpu_threads, minimum=1)
        if not isinstance(self.prefetch, bool):
            raise PartsimError(f"prefetch must be True or False, got {self.prefetch!r}")
        if self.early_stopping_patience is not None:
            _require_int("early_stopping_patience", self.early_stopping_patience, minimum=1)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise PartsimError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.weight_decay, int | float) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise PartsimError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.amp not in AMP_MODES:
            raise PartsimError(f"unknown amp mode {self.amp!r}; expected one of {', '.join(AMP_MODES)}")
        try:
            json.dumps({"model": self.model, "data": self.data}, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise PartsimError(f"config.model/data of run {self.run_name!r} must be plain JSON: {error}") from None

    def key(self) -> str:
        """Stable hash of every field except those that only change the speed (:data:`_KEY_EXCLUDED`)."""
        payload = {k: v for k, v in dataclasses.asdict(self).items() if k not in _KEY_EXCLUDED}
        return stable_hash(payload)


class ReopensCachesWhenPickled:
    """Mixin of training tasks whose per-process caches (memory-mapped audio, the epoch's triplets) must not travel
    to DataLoader workers: memory maps would be pickled as full copies of the audio, so each worker re-opens its own.
    The class calls ``_init_caches()`` to (re)create the attributes named in ``_PROCESS_CACHES``."""

    _PROCESS_CACHES: tuple[str, ...] = ("_arrays", "_validation_arrays", "_epoch_triplets")

    def _init_caches(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._PROCESS_CACHES:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_caches()


def task_with_optional_validation(make_task: Any, validation: Any) -> tuple[Any, Any]:
    """``(make_task(validation), validation)``, or ``(make_task(None), None)`` when the validation data are too few
    to draw triplets from (a :class:`PartsimError` that only validation causes): train without a validation loss
    rather than fail. Problems of the training data raise again."""
    try:
        return make_task(validation), validation
    except PartsimError:
        if validation is None:
            raise
        return make_task(None), None


class TrainingTask(Protocol):
    """What a model brings to :func:`train`; must be picklable when ``num_workers > 0``."""

    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model (the engine seeds the RNGs first)."""

    def batch(self, epoch: int, step: int) -> Any:
        """CPU tensors (in a tuple/list/dict) of one batch: a pure function of (seed, epoch, step)."""

    def loss(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Scalar loss of ``batch`` (already on the model's device)."""

    def validation_loss(self, model: torch.nn.Module) -> float | None:
        """Validation loss of ``model`` (eval mode, no grad, on the training device), or ``None`` for none."""


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    model: torch.nn.Module  #: final (or best, with early stopping) weights, eval mode, on CPU
    out_dir: Path
    history: list[dict]  #: per epoch: epoch, train_loss, val_loss, seconds
    reused: bool  #: True when a finished artefact with the same key was loaded and nothing was trained


def artefact_dir(kind: str, config: TrainConfig) -> Path:
    """Default folder of a run: ``cache_root()/models/<kind>/<run_name>-<key>``."""
    return cache_root() / "models" / kind / f"{config.run_name}-{config.key()}"


def train(task: TrainingTask, config: TrainConfig, out_dir: Path | None = None, *, kind: str = "model",
          resume: bool = True, progress: bool = True) -> TrainResult:
    """Train ``task``'s model under ``config``, or reuse the finished artefact of an identical run.

    Args:
        task: The model, data and loss (see :class:`TrainingTask`).
        config: The run's settings.
        out_dir: Artefact folder; default :func:`artefact_dir` ``(kind, config)``.
        kind: Sub-folder of the default location (e.g. ``"part"``, ``"separator"``).
        resume: Continue from ``checkpoint.pt`` (and reuse a finished ``model.pt``); ``False`` deletes both first.
        progress: Show a tqdm bar with the loss (rank 0 only).

    Raises:
        PartsimError: a checkpoint or model of another config (both keys named) while ``resume``; a device or amp
            mode this machine cannot run; a non-finite loss.
    """
    out_dir = Path(out_dir) if out_dir is not None else artefact_dir(kind, config)
    key = config.key()
    world_size, rank = _init_distributed(config)
    device = resolve_device(config.device)
    amp_dtype = autocast_dtype(config.amp, device)
    checkpoint_path, model_path = out_dir / CHECKPOINT_FILE, out_dir / MODEL_FILE
    if not resume:
        if rank == 0:
            for name in RUN_FILES:
                (out_dir / name).unlink(missing_ok=True)
        _barrier(world_size)
    for path in (model_path, checkpoint_path):
        if path.is_file() and (found := load_training_file(path)["key"]) != key:
            raise PartsimError(f"{path} belongs to another model or config (key {found}); this run's key is {key}. "
                               "Train with resume=False (CLI: --fresh) to start over.")

    _seed_everything(config.seed)
    model = task.build_model()
    if model_path.is_file():
        model = load_trained(out_dir, model, expected_key=key)
        history = json.loads((out_dir / HISTORY_FILE).read_text()) if (out_dir / HISTORY_FILE).is_file() else []
        return TrainResult(model=model, out_dir=out_dir, history=history, reused=True)

    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    state = {"epoch": 0, "step": 0, "global_step": 0, "history": [], "best_val": None, "best_model": None,
             "epochs_since_best": 0, "stopped": False, "epoch_loss_sum": 0.0, "epoch_seconds": 0.0}
    if checkpoint_path.is_file():
        _resume(checkpoint_path, model, optimizer, scaler, state, device)
    wrapped = model
    if world_size > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                                            else None)

    def save_checkpoint() -> None:
        if rank == 0:
            save_training_file(checkpoint_path, {
                "key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "rng": _get_rng_state(device), "state": state})

    threads = cpu_step_threads(device, config.cpu_threads, config.prefetch and config.num_workers == 0)
    with intra_op_threads(threads):
        _train_epochs(task, config, model, wrapped, optimizer, scaler, amp_dtype, state, save_checkpoint,
                      world_size, rank, device, progress)

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    if rank == 0:
        write_finished_run(out_dir, model, run_name=config.run_name, key=key, seed=config.seed,
                           config=dataclasses.asdict(config), history=state["history"], device=device,
                           world_size=world_size, autocast=autocast_name(amp_dtype))
        checkpoint_path.unlink(missing_ok=True)
    _barrier(world_size)
    return TrainResult(model=model.cpu().eval(), out_dir=out_dir, history=state["history"], reused=False)


def _train_epochs(task: TrainingTask, config: TrainConfig, model: torch.nn.Module, wrapped: torch.nn.Module,
                  optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None,
                  state: dict, save_checkpoint: Any, world_size: int, rank: int, device: torch.device,
                  progress: bool) -> None:
    """The epochs of :func:`train` from ``state`` on (updates ``state``, writes checkpoints)."""
    while state["epoch"] < config.epochs and not state["stopped"]:
        epoch, started = state["epoch"], time.perf_counter()
        wrapped.train()
        steps = range(state["step"], config.steps_per_epoch)
        bar = tqdm(total=config.steps_per_epoch, initial=state["step"], leave=False,
                   desc=f"{config.run_name} epoch {epoch + 1}/{config.epochs}", disable=not progress or rank != 0)
        running = torch.zeros((), dtype=torch.float64, device=device)
        batches = _batches(task, epoch, steps, world_size, rank, config.num_workers, device, config.prefetch)
        for step, batch in zip(steps, batches):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = task.loss(wrapped, batch)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            running += loss.detach().double()
            state["step"], state["global_step"] = step + 1, state["global_step"] + 1
            bar.update(1)
            last_step = step + 1 == config.steps_per_epoch
            if last_step or state["global_step"] % config.checkpoint_every == 0 or (progress and step % 10 == 0):
                # One host sync per checkpoint/refresh, not per step; folds the device sum into the state.
                state["epoch_loss_sum"] += running.item()
                running.zero_()
                if not math.isfinite(state["epoch_loss_sum"]):
                    raise PartsimError(f"run {config.run_name}: loss is not finite at epoch {epoch + 1}, "
                                       f"step {step + 1}; lower the learning rate or check the input data")
                bar.set_postfix(loss=f"{loss.item():.4f}")
            if not last_step and state["global_step"] % config.checkpoint_every == 0:
                state["epoch_seconds"] += time.perf_counter() - started
                started = time.perf_counter()
                save_checkpoint()
        bar.close()
        train_loss = _mean_over_ranks(state["epoch_loss_sum"] / config.steps_per_epoch, world_size, device)
        val_loss = _validation(task, model, world_size, rank, device)
        wrapped.train()
        state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                                 "seconds": state["epoch_seconds"] + time.perf_counter() - started})
        if val_loss is not None and config.early_stopping_patience is not None:
            if state["best_val"] is None or val_loss < state["best_val"]:
                state["best_val"], state["epochs_since_best"] = val_loss, 0
                state["best_model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                state["epochs_since_best"] += 1
                state["stopped"] = state["epochs_since_best"] >= config.early_stopping_patience
        state.update(epoch=epoch + 1, step=0, epoch_loss_sum=0.0, epoch_seconds=0.0)
        save_checkpoint()


def _resume(checkpoint_path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, state: dict, device: torch.device) -> None:
    """Restore model, optimizer, scaler, RNG and loop state from ``checkpoint_path`` (key already checked).

    Raises:
        PartsimError: the checkpoint does not fit (e.g. written by an older partsim whose model had other
            parameters); names the file and says to rerun with ``--fresh``. Nothing is deleted.
    """
    checkpoint = load_training_file(checkpoint_path)
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"], device)
        state.update(checkpoint["state"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as error:
        detail = " ".join(str(error).split()).rstrip(".")
        raise PartsimError(f"{checkpoint_path} cannot be resumed: it does not fit this partsim's model or engine "
                           f"(written by an older version?): {type(error).__name__}: {detail[:300]}. Rerun with "
                           "--fresh (resume=False) to start this run over; nothing was deleted.") from None


# ---------------------------------------------------------------------------------------------------------------
# Devices, precision and processes
# ---------------------------------------------------------------------------------------------------------------


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PartsimError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _init_distributed(config: TrainConfig) -> tuple[int, int]:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; returns (world size, rank)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_world_size(), dist.get_rank()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); elsewhere oneDNN emulates bf16, slower than
    float32. (Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported``: it is true on any AVX512-BW CPU, e.g. Skylake.)"""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, name)()) for name in checks if hasattr(torch.cpu, name))
    except RuntimeError:  # a build without the CPU feature queries
        return False


def autocast_name(dtype: torch.dtype | None) -> str:
    """How a run's autocast dtype is reported (``config.json``, benchmarks): ``"bfloat16"``, ``"float16"`` or
    ``"off"`` (full precision)."""
    return str(dtype).removeprefix("torch.") if dtype is not None else "off"


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of the amp ``mode`` (:data:`AMP_MODES`) on ``device`` (``None`` = full precision).

    Raises:
        PartsimError: fp16 off CUDA, or bf16 on a GPU without it.
    """
    if mode == "native":
        native = (torch.cuda.is_bf16_supported() if device.type == "cuda"
                  else device.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if native else None
    if mode == "off" or (mode == "auto" and device.type == "cpu"):
        return None
    if mode == "fp16" and device.type != "cuda":
        raise PartsimError("amp='fp16' needs a CUDA device (gradient scaling); use amp='bf16' or 'off' on CPU")
    if mode == "fp16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise PartsimError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bf16; use amp='fp16' or 'off'")
    return torch.bfloat16


def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


def _mean_over_ranks(value: float, world_size: int, device: torch.device) -> float:
    if world_size == 1:
        return float(value)
    total = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return float(total.item()) / world_size


def _validation(task: TrainingTask, model: torch.nn.Module, world_size: int, rank: int,
                device: torch.device) -> float | None:
    """Rank 0 computes the validation loss (eval mode, no grad) and shares it, so every rank stops together."""
    value = None
    if rank == 0:
        model.eval()
        with torch.no_grad():
            value = task.validation_loss(model)
        if value is not None and not math.isfinite(value):
            raise PartsimError(f"validation loss is not finite ({value}); check the validation data")
    if world_size > 1:
        shared = torch.tensor([math.nan if value is None else float(value)], dtype=torch.float64, device=device)
        torch.distributed.broadcast(shared, src=0)
        value = None if math.isnan(shared.item()) else shared.item()
    return None if value is None else float(value)


# ---------------------------------------------------------------------------------------------------------------
# Data pipeline
# ---------------------------------------------------------------------------------------------------------------


class _StepDataset(torch.utils.data.Dataset):
    """Batches of one epoch indexed by position, so DataLoader workers can build them ahead of the model."""

    def __init__(self, task: TrainingTask, epoch: int, batch_indices: list[int]) -> None:
        self.task, self.epoch, self.batch_indices = task, epoch, batch_indices

    def __len__(self) -> int:
        return len(self.batch_indices)

    def __getitem__(self, position: int) -> Any:
        return self.task.batch(self.epoch, self.batch_indices[position])


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_step_threads(device: torch.device, requested: int | None = None, prefetch: bool = True) -> int | None:
    """Intra-op threads for the model's ops during training, or ``None`` to leave torch's setting alone.

    On the CPU: ``requested`` when given, else the usable cores minus one when a prefetch thread makes the
    batches (at least 1). On other devices the model's ops do not run on CPU threads: ``None``.
    """
    if device.type != "cpu":
        return None
    if requested is not None:
        _require_int("cpu_threads", requested, minimum=1)
        return requested
    return max(1, usable_cores() - 1) if prefetch else None


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the previous setting restored after it."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def prefetched(make: Any, indices: list[int]) -> Iterator[Any]:
    """``make(index)`` for each of ``indices`` in order, the next one computed in a background thread meanwhile.

    One batch ahead only (bounded memory). The background thread is shut down when the iteration ends or is
    abandoned; an exception raised by ``make`` surfaces at the batch that raised it.
    """
    if not indices:
        return
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="partsim-batch")
    try:
        pending = executor.submit(make, indices[0])
        for position in range(len(indices)):
            current = pending.result()
            pending = executor.submit(make, indices[position + 1]) if position + 1 < len(indices) else None
            yield current
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _batches(task: TrainingTask, epoch: int, steps: range, world_size: int, rank: int, num_workers: int,
             device: torch.device, prefetch: bool = True) -> Iterator[Any]:
    """Batches of ``steps`` on ``device``; rank ``r`` of ``world_size`` gets ``task.batch(epoch, step*world+r)``.

    ``num_workers > 0``: DataLoader worker processes; else one prefetch thread (``prefetch``) or inline.
    """
    indices = [step * world_size + rank for step in steps]
    if num_workers == 0:
        source: Any = (prefetched(lambda index: task.batch(epoch, index), indices) if prefetch
                       else (task.batch(epoch, index) for index in indices))
    else:
        # A private generator: creating the loader must not draw from the global RNG (exact resume).
        source = torch.utils.data.DataLoader(
            _StepDataset(task, epoch, indices), batch_size=None, shuffle=False, num_workers=num_workers,
            pin_memory=device.type == "cuda", prefetch_factor=4, generator=torch.Generator().manual_seed(0))
    for batch in source:
        yield _to_device(batch, device)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {name: _to_device(value, device) for name, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


# ---------------------------------------------------------------------------------------------------------------
# RNG states
# ---------------------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _get_rng_state(device: torch.device) -> dict:
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
