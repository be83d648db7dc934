"""GPU readiness check of the ``paper`` preset (issue 14 item 3), run by ``benchmarks/gpu_check.sh``.

Every GPU code path the ``paper`` book needs, executed once and timed, in under 8 minutes on one H100-class GPU:

1. ``frontend_*``: the log-mel front end (:class:`partsim_core.frontend.LogMel`, ``paper`` settings: 44.1 kHz,
   window 2048, hop 512, 128 mels) on 3-s segments on CUDA against the CPU, each side timed as the best of
   :data:`FRONTEND_ROUNDS` rounds (alternating between the sides, after a warm-up call each; with ``--dry-run`` both
   sides are the CPU, so ``frontend_speedup`` is about 1); ``frontend_max_abs_diff`` is the largest difference of
   the two outputs (both float32, values in [0, 1]).
2. ``csn_*``: chapter 4's training step (:class:`~partsim_core.csn.network.CSNModel` of the ``paper`` width,
   :class:`~partsim_core.csn.network.CSNLoss` of condition (i): basic + additional triplets + norm loss) with
   bf16 autocast on random log-mels of the ``paper`` shape: triplets/s and peak GPU memory.
3. ``part_*``: chapter 3's step (:class:`~partsim_core.models.PartCNN`, ``paper`` width and batch) likewise;
   ``separator_*``: the separator U-Net's step (``paper`` width, batch and excerpt length).
4. ``condition_*``: a few hundred steps of condition (g) (the task and loss of (i), fresh weights) with the
   ``paper`` front end and network width, trained by the engine (:func:`partsim_core.training.train`, bf16
   autocast, DataLoader workers) on the embedded ``smoke`` mini-Slakh read at 44.1 kHz; ``condition_loss_falls``:
   the last epoch's mean training loss is below the first's.
5. ``torchrun_*``: ``torchrun --standalone --nproc_per_node 1`` of this file's ``--ddp-probe``: NCCL process group,
   an all-reduce and three DDP steps of the CSN.
6. ``projected_paper_book_gpu_s``: the training time of the whole ``paper`` book on this one GPU from the measured
   step rates (the formula per component is in ``projection``; evaluation and data preparation excluded, they
   run on the CPU and are measured by ``benchmarks/scale.py``).

Without a CUDA device it refuses (exit 1, "no CUDA device was found"); a ``--data-root`` that is not a
Slakh-format folder is refused at once (exit 2, ``gpu_check: error: ...``); ``--dry-run`` runs the same steps
tiny on the CPU (the torchrun probe with the gloo backend) and prints the same keys, GPU-memory keys ``null``.

Prints ONE JSON line. Run: ``bash benchmarks/gpu_check.sh [--dry-run]`` (or this file directly).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from partsim_core.data.dataset import resolve_dataset_root
from partsim_core.data.slakh import open_slakh
from partsim_core.errors import PartsimError
from partsim_core.presets import get_preset

#: Part networks of chapter 3 (5 ideal, 5 separated, 1 mix) and trained CSN conditions of chapter 4 ((c)-(j)).
PART_NETWORKS, CSN_CONDITIONS = 11, 8
#: Pre-training segments of the ``paper`` preset: 200 tracks x ~60 non-silent 3-s segments (an estimate).
PRETRAIN_SEGMENTS = 200 * 60
#: Training triplets per epoch of one ``paper`` part network: 1,200 tracks x 40 anchors.
PART_EPOCH_TRIPLETS = 1200 * 40


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What the check runs: the ``paper`` sizes on a GPU, tiny ones in a dry run."""

    frontend_batch: int
    csn_width: int
    csn_batch: int
    part_width: int
    part_batch: int
    separator_width: int
    separator_batch: int
    separator_seconds: float
    timed_steps: int
    condition_epochs: int
    condition_steps_per_epoch: int
    n_mels: int
    sample_rate: int
    n_fft: int


def sizes_for(dry_run: bool) -> Sizes:
    """The ``paper`` preset's sizes, or tiny ones for ``--dry-run``."""
    paper = get_preset("paper")
    if dry_run:
        return Sizes(frontend_batch=4, csn_width=2, csn_batch=4, part_width=2, part_batch=4, separator_width=2,
                     separator_batch=2, separator_seconds=1.6, timed_steps=2, condition_epochs=2,
                     condition_steps_per_epoch=3, n_mels=32, sample_rate=16000, n_fft=512)
    return Sizes(frontend_batch=64, csn_width=paper.csn.width, csn_batch=paper.csn.batch_size,
                 part_width=paper.part_network.width, part_batch=paper.part_network.batch_size,
                 separator_width=paper.separator.width, separator_batch=paper.separator.batch_size,
                 separator_seconds=paper.separator.segment_seconds, timed_steps=20, condition_epochs=6,
                 condition_steps_per_epoch=50, n_mels=paper.frontend.n_mels, sample_rate=paper.frontend.sample_rate,
                 n_fft=paper.frontend.n_fft)


def _frontend_config(sizes: Sizes):
    paper = get_preset("paper").frontend
    return dataclasses.replace(paper, sample_rate=sizes.sample_rate, n_fft=sizes.n_fft, n_mels=sizes.n_mels)


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(function: Callable[[], Any], repeats: int, items: int, device: torch.device) -> float:
    """Items/s of ``function`` over ``repeats`` calls after one warm-up call."""
    function()
    _synchronise(device)
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    _synchronise(device)
    return repeats * items / (time.perf_counter() - started)


#: Timed rounds of each side of the front-end comparison (the best round counts) and calls per round.
FRONTEND_ROUNDS = 5
FRONTEND_CALLS = 3


def _best_rates(sides: dict[str, tuple[Callable[[], Any], torch.device]], rounds: int, calls: int,
                items: int) -> dict[str, float]:
    """Items/s of each side: the best of ``rounds`` timed rounds of ``calls`` calls, after one warm-up call each.

    The rounds of the sides alternate, so a change of load on shared cores hits both sides alike, and the best
    round drops the rounds a neighbour slowed down: timing the CPU against itself (``--dry-run``) gives about 1.
    """
    for function, device in sides.values():
        function()
        _synchronise(device)
    best = {name: 0.0 for name in sides}
    for _ in range(rounds):
        for name, (function, device) in sides.items():
            started = time.perf_counter()
            for _ in range(calls):
                function()
            _synchronise(device)
            best[name] = max(best[name], calls * items / (time.perf_counter() - started))
    return best


def _peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def check_frontend(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Log-mel of ``frontend_batch`` 3-s segments on ``device`` against the CPU."""
    from partsim_core.frontend import LogMel

    config = _frontend_config(sizes)
    audio = torch.randn(sizes.frontend_batch, 3 * config.sample_rate, generator=torch.Generator().manual_seed(0))
    log_mel = LogMel(config)
    on_device = audio.to(device)
    rates = _best_rates({"cpu": (lambda: log_mel(audio), torch.device("cpu")),
                         "device": (lambda: log_mel(on_device), device)},
                        rounds=FRONTEND_ROUNDS, calls=FRONTEND_CALLS, items=sizes.frontend_batch)
    cpu_rate, device_rate = rates["cpu"], rates["device"]
    difference = float((log_mel(on_device).cpu() - log_mel(audio)).abs().max())
    return {"frontend_cpu_segments_per_s": round(cpu_rate, 1), "frontend_cuda_segments_per_s": round(device_rate, 1),
            "frontend_speedup": round(device_rate / cpu_rate, 2), "frontend_max_abs_diff": difference}


def _train_rate(model: torch.nn.Module, loss_of: Callable[[torch.nn.Module], torch.Tensor], steps: int,
                items: int, device: torch.device) -> float:
    """Items/s of Adam steps of ``loss_of(model)`` under bf16 autocast on ``device``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_of(model)
        loss.backward()
        optimizer.step()

    return _rate(step, steps, items, device)


def check_steps(sizes: Sizes, device: torch.device) -> dict[str, Any]:
    """Training-step rates and peak memory of the CSN, a part network and the separator at ``sizes``."""
    from partsim_core.csn.network import CSNLoss, CSNModel
    from partsim_core.losses import triplet_loss
    from partsim_core.models import SEPARATOR_DEPTH, PartCNN, SeparatorUNet

    generator = torch.Generator().manual_seed(0)
    frames = 1 + 3 * sizes.sample_rate // get_preset("paper").frontend.hop_length
    out: dict[str, Any] = {"csn_width": sizes.csn_width, "csn_batch_size": sizes.csn_batch}

    batch = sizes.csn_batch
    present = (torch.rand(batch, 3, 5, generator=generator) > 0.4).float()
    csn_batch = {"anchor": torch.rand(batch, sizes.n_mels, frames, generator=generator),
                 "positive": torch.rand(batch, sizes.n_mels, frames, generator=generator),
                 "negative": torch.rand(batch, sizes.n_mels, frames, generator=generator),
                 "condition": torch.randint(0, 5, (batch,), generator=generator),
                 "additional_condition": torch.randint(-1, 5, (batch,), generator=generator),
                 "powers": present * 0.1, "present": present}
    csn_batch = {name: value.to(device) for name, value in csn_batch.items()}
    loss = CSNLoss(additional=True, norm=True)
    torch.manual_seed(0)
    _reset_peak(device)
    model = CSNModel(sizes.n_mels, sizes.csn_width).to(device).train()
    out["csn_triplets_per_s"] = round(_train_rate(model, lambda m: loss(m, csn_batch), sizes.timed_steps, batch,
                                                  device), 1)
    out["csn_peak_gpu_mib"] = _peak_mib(device)
    del model

    batch = sizes.part_batch
    mels = torch.rand(3 * batch, sizes.n_mels, frames, generator=generator).to(device)
    _reset_peak(device)
    part = PartCNN(sizes.n_mels, width=sizes.part_width).to(device).train()

    def part_loss(m: torch.nn.Module) -> torch.Tensor:
        anchor, positive, negative = m(mels).float().chunk(3)
        return triplet_loss(anchor, positive, negative)

    out.update(part_width=sizes.part_width, part_batch_size=batch)
    out["part_triplets_per_s"] = round(_train_rate(part, part_loss, sizes.timed_steps, batch, device), 1)
    out["part_peak_gpu_mib"] = _peak_mib(device)
    del part, mels

    separator = SeparatorUNet(sizes.sample_rate, width=sizes.separator_width)
    chunk = max(2 ** SEPARATOR_DEPTH, separator.stft.frames(int(sizes.separator_seconds * sizes.sample_rate))
                // 2 ** SEPARATOR_DEPTH * 2 ** SEPARATOR_DEPTH)
    magnitude = torch.rand(sizes.separator_batch, separator.stft.n_bins, chunk, generator=generator).to(device)
    target = torch.rand(sizes.separator_batch, separator.n_sources, separator.stft.n_bins, chunk,
                        generator=generator).to(device)
    _reset_peak(device)
    separator = separator.to(device).train()
    out.update(separator_width=sizes.separator_width, separator_batch_size=sizes.separator_batch)
    out["separator_examples_per_s"] = round(_train_rate(
        separator, lambda m: (m(magnitude).float() - target).abs().mean(dim=(0, 2, 3)).sum(),
        max(2, sizes.timed_steps // 2), sizes.separator_batch, device), 2)
    out["separator_peak_gpu_mib"] = _peak_mib(device)
    return out


def check_condition(sizes: Sizes, device: torch.device, dry_run: bool, data_root: str = "") -> dict[str, Any]:
    """A few hundred engine steps of condition (g) at the ``paper`` front end and width on the embedded data
    (``data_root``: a Slakh-format folder instead of the embedded ``smoke`` mini-Slakh)."""
    from partsim_core.csn.conditions import condition_setup, get_condition
    from partsim_core.data.cache import StemCache
    from partsim_core.data.dataset import load_dataset
    from partsim_core.training import train

    data = load_dataset("smoke", data_root)
    paper = get_preset("paper")
    frontend = _frontend_config(sizes)
    steps = sizes.condition_steps_per_epoch
    csn = dataclasses.replace(paper.csn, width=sizes.csn_width, batch_size=sizes.csn_batch,
                              triplets_per_epoch=steps * sizes.csn_batch, validation_triplets=sizes.csn_batch,
                              n_tempo_classes=get_preset("smoke").csn.n_tempo_classes)
    preset = dataclasses.replace(paper, frontend=frontend, csn=csn)
    data = dataclasses.replace(data, preset=preset, cache=StemCache(data.dataset, sample_rate=frontend.sample_rate))
    started = time.perf_counter()
    task, config = condition_setup(get_condition("g"), data, csn, epochs=sizes.condition_epochs,
                                   device=str(device), seed=0)
    workers = 0 if dry_run else min(6, max(1, (os.cpu_count() or 2) - 2))
    config = dataclasses.replace(config, num_workers=workers, checkpoint_every=10_000)
    with tempfile.TemporaryDirectory() as folder:
        result = train(task, config, Path(folder) / "run", progress=False)
    losses = [entry["train_loss"] for entry in result.history]
    return {"condition": "g (task and loss of (i), fresh weights)", "condition_steps": len(losses) * steps,
            "condition_first_loss": round(losses[0], 4), "condition_last_loss": round(losses[-1], 4),
            "condition_loss_falls": bool(losses[-1] < losses[0]),
            "condition_s": round(time.perf_counter() - started, 1)}


def ddp_probe(backend: str) -> int:
    """Body of the torchrun process: process group, one all-reduce, three DDP steps of a small CSN; one JSON line."""
    import torch.distributed as dist

    from partsim_core.csn.network import CSNLoss, CSNModel

    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = time.perf_counter()
    dist.init_process_group(backend=backend)
    value = torch.ones(1, device=device) * (rank + 1)
    dist.all_reduce(value)
    world = dist.get_world_size()
    expected = world * (world + 1) / 2
    model = torch.nn.parallel.DistributedDataParallel(CSNModel(32, 2).to(device),
                                                      device_ids=[device] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # Condition (i)'s loss, as the engine computes it under DDP (the norm loss's bias lives in the model).
    loss = CSNLoss(additional=True, norm=True)
    present = torch.tensor([[1.0, 0, 1, 1, 0]] * 4, device=device).unsqueeze(1).expand(4, 3, 5)
    for _ in range(3):
        batch = {"anchor": torch.rand(4, 32, 20, device=device), "positive": torch.rand(4, 32, 20, device=device),
                 "negative": torch.rand(4, 32, 20, device=device),
                 "condition": torch.tensor([0, 2, 3, 0], device=device),
                 "additional_condition": torch.tensor([-1, 0, 2, -1], device=device), "present": present}
        optimizer.zero_grad(set_to_none=True)
        loss(model, batch).backward()
        optimizer.step()
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        print(json.dumps({"backend": backend, "world_size": world, "all_reduce_ok": float(value) == expected,
                          "ddp_steps": 3, "seconds": round(time.perf_counter() - started, 2)}))
    return 0


def check_torchrun(backend: str) -> dict[str, Any]:
    """``torchrun --standalone --nproc_per_node 1`` of :func:`ddp_probe` with ``backend``."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                           str(Path(__file__).resolve()), "--ddp-probe", backend],
                          capture_output=True, text=True, timeout=180, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    ok = done.returncode == 0 and bool(report.get("all_reduce_ok"))
    out = {"torchrun_backend": backend, "torchrun_ok": ok, "torchrun_s": round(time.perf_counter() - started, 1)}
    if not ok:
        out["torchrun_error"] = (done.stderr or done.stdout)[-600:]
    return out


def projection(measured: dict[str, Any]) -> dict[str, Any]:
    """Training time of the ``paper`` book on one GPU from the measured ``paper``-size step rates.

    Components (seconds): 11 part networks x epochs x 48,000 triplets / part rate; the separator's epochs x
    steps x batch / its rate; 8 CSN conditions x 1,000 epochs x 5,000 triplets / CSN rate; the pre-training's
    100 epochs x ~12,000 segments / (3 x CSN rate) (a segment is a third of a triplet's work). Data loading is
    assumed to keep up (DataLoader workers); a dry run's rates give a meaningless number with the same keys.
    """
    paper = get_preset("paper")
    parts = PART_NETWORKS * paper.part_network.epochs * PART_EPOCH_TRIPLETS / measured["part_triplets_per_s"]
    separator = (paper.separator.epochs * paper.separator.steps_per_epoch * paper.separator.batch_size
                 / measured["separator_examples_per_s"])
    conditions = CSN_CONDITIONS * paper.csn.epochs * paper.csn.triplets_per_epoch / measured["csn_triplets_per_s"]
    pretraining = paper.csn.pretrain_epochs * PRETRAIN_SEGMENTS / (3 * measured["csn_triplets_per_s"])
    components = {"part_networks_s": parts, "separator_s": separator, "csn_conditions_s": conditions,
                  "csn_pretraining_s": pretraining}
    total = sum(components.values())
    return {"projected_paper_book_gpu_s": round(total), "projected_paper_book_gpu_h": round(total / 3600, 1),
            "projection": {name: round(value) for name, value in components.items()}}


def main(argv: list[str] | None = None) -> int:
    """Run the check (or the torchrun probe); print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps, tiny, on the CPU (no GPU needed)")
    parser.add_argument("--data-root", default="",
                        help="Slakh-format folder for the condition's steps (default: the embedded smoke mini-Slakh)")
    parser.add_argument("--ddp-probe", choices=("nccl", "gloo"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_probe:
        return ddp_probe(args.ddp_probe)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device was found (torch.cuda.is_available() is False); run on a machine "
              "with a GPU, or pass --dry-run to run the same steps tiny on the CPU", file=sys.stderr)
        return 1
    started = time.perf_counter()
    device = torch.device("cpu" if args.dry_run else "cuda")
    sizes = sizes_for(args.dry_run)
    result: dict[str, Any] = {
        "mode": "dry-run" if args.dry_run else "gpu",
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    try:
        if args.data_root:  # a wrong folder is reported at once, not after the timed steps
            open_slakh(resolve_dataset_root("smoke", args.data_root))
        result.update(check_frontend(sizes, device))
        result.update(check_steps(sizes, device))
        result.update(check_condition(sizes, device, args.dry_run, args.data_root))
    except PartsimError as error:
        print(f"gpu_check: error: {error}", file=sys.stderr)
        return 2
    result.update(check_torchrun("gloo" if args.dry_run else "nccl"))
    result.update(projection(result))
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
