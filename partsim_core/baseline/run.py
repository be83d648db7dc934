"""Chapter 3 from one dataset handle: separator, networks, Tables 3.1 / 3.2, the separator-quality curve, the
leakage measure and the findings (thesis chapter 3 and 4.4.1's "baseline model").

:func:`run_chapter3` receives a :class:`~partsim_core.data.dataset.DatasetHandle` built once at the entry point
(CLI or notebook), replaces its test set by chapter 3's filter (:mod:`partsim_core.baseline.filtering`), and

1. gets the separated stems (:func:`~partsim_core.baseline.separated_stems.separated_source`; our U-Net is trained
   on the train split when not cached);
2. trains or reuses, per seed, 11 networks (5 parts x ideal/separated + the track network on the mix;
   :mod:`partsim_core.baseline.networks`) and evaluates each by kNN track-ID on the test segments;
3. measures separation quality (Table 3.1; :mod:`partsim_core.baseline.bss`) on the first
   ``separator.metric_train_tracks`` training tracks (``paper``: all of them) and on every test track;
4. builds the tables with intervals (:mod:`partsim_core.baseline.tables`), the separator-quality curve and the
   leakage track-ID (:mod:`partsim_core.baseline.separator_quality`) and the findings
   (:mod:`partsim_core.baseline.findings`).

Every trained artefact goes through :func:`partsim_core.training.train` and is reused from the cache when its key
is unchanged, so a second run trains nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.manifold import TSNE

from partsim_core import INSTRUMENTS
from partsim_core.baseline.bss import separation_quality
from partsim_core.baseline.filtering import chapter3_dataset
from partsim_core.baseline.findings import chapter_findings
from partsim_core.baseline.networks import (
    INPUTS,
    NetworkEvaluation,
    evaluate_network,
    network_name,
    per_track_accuracy,
    train_part_network,
)
from partsim_core.baseline.separated_stems import SeparatedSource, separated_source
from partsim_core.baseline.separator_quality import (
    default_curve_epochs,
    leakage_track_id,
    separator_quality_curve,
)
from partsim_core.baseline.separators import check_backend
from partsim_core.baseline.tables import PerTrack, table_3_1, table_3_2
from partsim_core.data.cache import MIX_PART
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.outputs import finite_json
from partsim_core.device import resolve_device
from partsim_core.errors import PartsimError


@dataclass
class Chapter3Results:
    """Everything chapter 3 computes. Tables are ``{row: {column: cell}}`` with 95 % intervals."""

    preset: str
    backend: str
    seeds: list[int]
    epochs: int
    table_3_1: dict[str, dict[str, dict[str, float]]]
    table_3_2: dict[str, dict[str, dict[str, float]]]
    #: One row per (split, track, part): sdr, sir, sar (Table 3.1's items).
    quality: pd.DataFrame
    #: ``(input, part) -> [NetworkEvaluation per seed]`` with input ``ideal`` / ``separated`` / ``mix``.
    evaluations: dict[tuple[str, str], list[NetworkEvaluation]]
    #: ``(input, part) -> ((seeds, tracks) accuracies %, (tracks,) segments)``: Table 3.2's items.
    per_track: dict[tuple[str, str], PerTrack]
    findings: list[dict[str, Any]]
    #: Separator-quality curve points (:func:`~partsim_core.baseline.separator_quality.separator_quality_curve`).
    curve: dict[str, Any]
    #: Leakage track-ID (:func:`~partsim_core.baseline.separator_quality.leakage_track_id`).
    leakage: dict[str, Any]
    #: The separator's training history (per epoch; empty for backends not trained here).
    separator_history: list[dict]
    timings: dict[str, float]
    #: Run name (with seed) -> whether its trained artefact was reused from the cache.
    reused: dict[str, bool]
    n_tracks: dict[str, int]
    #: Objects for the notebook (not serialised): chapter 3's dataset and the separated source.
    data: DatasetHandle | None = field(default=None, repr=False)
    separated: SeparatedSource | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The chapter's JSON: tables keyed by thesis number, findings, curve, leakage, per-epoch losses of every
        model, segment counts, timings, reuse (no embeddings)."""
        networks = []
        for (kind, part), evaluations in self.evaluations.items():
            for seed, result in zip(self.seeds, evaluations):
                networks.append({
                    "run": network_name(part, "ideal" if kind == MIX_PART else kind), "part": part, "input": kind,
                    "seed": seed, "accuracy": _number(result.accuracy), "test_segments": result.n_segments,
                    "test_tracks": result.n_tracks, "reused": result.reused,
                    "train_seconds": round(result.train_seconds, 2), "epochs_trained": len(result.history),
                    "history": _history(result.history)})
        return finite_json({
            "chapter": 3,
            "preset": self.preset,
            "backend": self.backend,
            "seeds": self.seeds,
            "epochs": self.epochs,
            "n_tracks": self.n_tracks,
            "table_3_1": self.table_3_1,
            "table_3_2": self.table_3_2,
            "findings": self.findings,
            "separator_quality_curve": self.curve.get("points", []),
            "leakage_track_id": {"accuracy": self.leakage.get("accuracy", {}),
                                 "chance": self.leakage.get("chance")},
            "separator": {"backend": self.backend, "key": getattr(self.separated, "key", None),
                          "history": _history(self.separator_history)},
            "networks": networks,
            "timings": {name: round(value, 2) for name, value in self.timings.items()},
            "reused": self.reused,
        })


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _history(history: Sequence[dict]) -> list[dict]:
    """Per-epoch train and validation loss (JSON-ready)."""
    return [{"epoch": int(entry.get("epoch", position + 1)), "train_loss": _number(entry.get("train_loss")),
             "val_loss": _number(entry.get("val_loss"))} for position, entry in enumerate(history)]


def run_chapter3(
    data: DatasetHandle,
    backend: str = "unet",
    device: str = "auto",
    epochs: int | None = None,
    seeds: Sequence[int] = (0,),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    quality_curve: bool = True,
    curve_epochs: Sequence[int] | None = None,
    fresh: bool = False,
    **separator_options: Any,
) -> Chapter3Results:
    """Run chapter 3 on ``data`` (see the module docstring).

    Args:
        data: the dataset handle (chapter 3's test filter is applied here).
        backend: separator backend (``oracle``, ``unet``, ``spleeter``, ``demucs``).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` for training, separation and embedding.
        epochs: epochs of every part network (``None`` = the preset's).
        seeds: training seeds of the networks (the separator is trained once, with the first seed); intervals
            include the seed-to-seed spread.
        progress: progress bars.
        log: where one-line progress messages go (default: nowhere).
        quality_curve: measure the separator-quality curve (costs an earlier U-Net and the test separations).
        curve_epochs: epochs of the earlier U-Nets on the curve (``None`` = a third of the preset's).
        fresh: train the U-Net separator and every network anew instead of reusing cached ones.
        separator_options: passed to :func:`~partsim_core.baseline.separators.get_separator` (e.g.
            ``spleeter_python``, ``demucs_model``).

    Raises:
        PartsimError: unknown backend, no seeds, a missing backend installation.
    """
    say = log or (lambda message: None)
    check_backend(backend)
    seeds = [int(seed) for seed in seeds]
    if not seeds or any(seed < 0 for seed in seeds):
        raise PartsimError(f"seeds must be one or more non-negative integers, got {seeds!r}")
    started = time.perf_counter()
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    data = chapter3_dataset(data, progress=progress)
    timings["test_filter"] = time.perf_counter() - tick
    say(f"chapter 3: {len(data.train_tracks)} train, {len(data.validation_tracks)} validation, "
        f"{len(data.test_tracks)} test tracks (after chapter 3's 10 % filter)")

    tick = time.perf_counter()
    if backend == "unet":
        separator_options.setdefault("progress", progress)
        separator_options.setdefault("seed", seeds[0])
        separator_options.setdefault("resume", not fresh)
    source = separated_source(data, backend, device=device, **separator_options)
    timings["separator"] = time.perf_counter() - tick

    tick = time.perf_counter()
    # Separate every track once up front (cached), so network timings exclude it.
    source.separate_tracks([*data.train_tracks, *data.validation_tracks, *data.test_tracks], progress=progress)
    timings["separate"] = time.perf_counter() - tick

    evaluation_device = str(resolve_device(device))
    evaluations: dict[tuple[str, str], list[NetworkEvaluation]] = {}
    models: dict[tuple[str, str], list[torch.nn.Module]] = {}
    reused: dict[str, bool] = {}
    networks = [(part, kind) for part in INSTRUMENTS for kind in INPUTS] + [(MIX_PART, "ideal")]
    tick = time.perf_counter()
    for seed in seeds:
        for part, kind in networks:
            name = network_name(part, kind) + (f"-seed{seed}" if len(seeds) > 1 else "")
            network_started = time.perf_counter()
            result = train_part_network(data, part, kind, source=source if kind == "separated" else None,
                                        epochs=epochs, device=device, resume=not fresh, progress=progress,
                                        seed=seed)
            train_seconds = time.perf_counter() - network_started
            label = MIX_PART if part == MIX_PART else kind
            signal = source if kind == "separated" else data.cache
            evaluation = evaluate_network(result.model, data, part, signal, label, device=evaluation_device)
            evaluation.reused, evaluation.train_seconds = result.reused, train_seconds
            evaluation.history = list(result.history)
            evaluations.setdefault((label, part), []).append(evaluation)
            models.setdefault((label, part), []).append(result.model)
            reused[name] = result.reused
            say(f"chapter 3: {name}: accuracy {evaluation.accuracy:.2f} % on {evaluation.n_segments} test segments"
                + (" (reused)" if result.reused else f" (trained in {train_seconds:.1f} s)"))
    timings["networks"] = time.perf_counter() - tick

    track_ids = [track.track_id for track in data.test_tracks]
    per_track: dict[tuple[str, str], PerTrack] = {}
    for key, results in evaluations.items():
        rows = [per_track_accuracy(result, track_ids) for result in results]
        per_track[key] = (np.vstack([accuracy for accuracy, _ in rows]), rows[0][1])

    tick = time.perf_counter()
    metric_tracks = data.preset.separator.metric_train_tracks
    quality = separation_quality(data, source, train_tracks=metric_tracks, progress=progress)
    timings["metrics"] = time.perf_counter() - tick

    separated_networks = {part: models[("separated", part)] for part in INSTRUMENTS}
    tick = time.perf_counter()
    curve: dict[str, Any] = {"points": [], "per_track": {}}
    if quality_curve:
        chosen = default_curve_epochs(data.preset.separator.epochs) if curve_epochs is None else list(curve_epochs)
        curve = separator_quality_curve(data, source, separated_networks, epochs=chosen, device=evaluation_device,
                                        seed=seeds[0], progress=progress, log=say)
    timings["quality_curve"] = time.perf_counter() - tick
    tick = time.perf_counter()
    leakage = leakage_track_id(data, source, separated_networks, device=evaluation_device)
    timings["leakage"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    return Chapter3Results(
        preset=data.preset.name,
        backend=backend,
        seeds=seeds,
        epochs=int(epochs or data.preset.part_network.epochs),
        table_3_1=table_3_1(quality),
        table_3_2=table_3_2(per_track),
        quality=quality,
        evaluations=evaluations,
        per_track=per_track,
        findings=chapter_findings(per_track, leakage, curve.get("per_track", {})),
        curve=curve,
        leakage=leakage,
        separator_history=list(getattr(source.separator, "history", [])),
        timings=timings,
        reused=reused,
        n_tracks={"train": len(data.train_tracks), "validation": len(data.validation_tracks),
                  "test": len(data.test_tracks), "test_before_filter": int(len(data.filter_table)),
                  "train_separation_metrics": len(data.train_tracks) if metric_tracks is None
                  else min(metric_tracks, len(data.train_tracks))},
        data=data,
        separated=source,
    )


def tsne_points(results: Chapter3Results, parts: tuple[str, ...] = INSTRUMENTS, max_tracks: int = 10,
                seed: int = 0) -> pd.DataFrame:
    """Two-dimensional t-SNE of the first seed's test embeddings, per part and input (thesis Fig. 3.2).

    The first ``max_tracks`` test tracks (in id order) that have segments in every panel are shown, so that the
    colours (track IDs) match across panels. Each (part, input) panel gets its own t-SNE (scikit-learn, PCA
    initialisation, ``random_state=seed``; perplexity ``min(30, (n - 1) / 3)``).

    Returns:
        Columns ``x, y, part, input, track, start_s``.
    """
    panels = [(kind, part) for part in parts for kind in ("separated", "ideal") if (kind, part) in results.evaluations]
    common = None
    for key in panels:
        ids = set(results.evaluations[key][0].track_ids.tolist())
        common = ids if common is None else common & ids
    chosen = sorted(common or [])[:max_tracks]
    sample_rate = results.data.preset.frontend.sample_rate if results.data is not None else 1
    frames = []
    for kind, part in panels:
        evaluation = results.evaluations[(kind, part)][0]
        keep = np.isin(evaluation.track_ids, chosen)
        if keep.sum() < 3:
            continue
        vectors = evaluation.embeddings[keep]
        perplexity = float(min(30.0, (len(vectors) - 1) / 3))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)
        frames.append(pd.DataFrame({"x": points[:, 0], "y": points[:, 1], "part": part, "input": kind,
                                    "track": evaluation.track_ids[keep],
                                    "start_s": evaluation.starts[keep] / sample_rate}))
    if not frames:
        return pd.DataFrame(columns=["x", "y", "part", "input", "track", "start_s"])
    return pd.concat(frames, ignore_index=True)
