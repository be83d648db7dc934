"""Chapter 3's part networks: one :class:`~partsim_core.models.PartCNN` per part and input, trained and evaluated.

Names used throughout chapter 3 (the word "baseline" alone is kept for what the thesis calls so):

* **input** ``ideal`` - a part's stem before mixing; ``separated`` - the part a separator estimates from the mix;
* **track network** (part ``mix``) - the same network on the mix itself: Table 3.2's "baseline" row, the thesis's
  track-level similarity;
* **part network** - one of the five instrument networks (Table 3.2's "proposed" rows).

Each network is trained with the triplet loss on unsupervised triplets of its signal
(:class:`~partsim_core.baseline.triplets.TripletTask`, thesis 3.2.2 / 3.3.1) through the shared training engine,
and evaluated by leave-one-out kNN track-ID prediction on the chapter's test segments (thesis 3.3.2).

Silence of training anchors and of test segments is judged on the *ideal* stem for separated input too, so that
both "proposed" rows of Table 3.2 use exactly the same segments (a separator leaks other instruments into a silent
part, which would otherwise add segments to the separated sets only; the thesis does not say).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partsim_core import INSTRUMENTS
from partsim_core.baseline.triplets import TripletTask
from partsim_core.data.cache import MIX_PART
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.segments import SegmentIndex, SignalSource
from partsim_core.embed import embed
from partsim_core.errors import PartsimError
from partsim_core.knn import knn_predict
from partsim_core.training import TrainConfig, TrainResult, task_with_optional_validation, train

#: Inputs of a part network: ideal stems or separated stems.
INPUTS: tuple[str, ...] = ("ideal", "separated")

#: Parts a network can be trained on: the five instruments and the mix (the track network).
NETWORK_PARTS: tuple[str, ...] = (*INSTRUMENTS, MIX_PART)

#: Artefact kind (folder under ``cache_root()/models``) of the chapter's networks.
PART_NETWORK_KIND = "part_network"


def network_name(part: str, input_kind: str) -> str:
    """Name of a chapter-3 network: ``part-drums-ideal``, ``part-bass-separated``, ``track-mix``."""
    return "track-mix" if part == MIX_PART else f"part-{part}-{input_kind}"


def check_network(part: str, input_kind: str) -> None:
    """Validate a (part, input) pair before any work.

    Raises:
        PartsimError: unknown part or input, or ``mix`` with separated input.
    """
    if part not in NETWORK_PARTS:
        raise PartsimError(f"unknown part {part!r}; choose one of: {', '.join(NETWORK_PARTS)}")
    if input_kind not in INPUTS:
        raise PartsimError(f"unknown input {input_kind!r}; choose one of: {', '.join(INPUTS)}")
    if part == MIX_PART and input_kind != "ideal":
        raise PartsimError("part 'mix' (the track network) is trained on the mix itself; input "
                           f"{input_kind!r} applies only to the instrument parts ({', '.join(INSTRUMENTS)})")


def part_network_setup(data: DatasetHandle, part: str, input_kind: str = "ideal", source: Any = None,
                       epochs: int | None = None, device: str = "auto", seed: int = 0,
                       num_workers: int = 0) -> tuple[TripletTask, TrainConfig]:
    """The :class:`~partsim_core.baseline.triplets.TripletTask` and :class:`~partsim_core.training.TrainConfig` of
    one network.

    Args:
        data: the chapter's dataset.
        part: one of :data:`NETWORK_PARTS`.
        input_kind: ``"ideal"`` or ``"separated"`` (then ``source`` is the separated signal source).
        source: signal source of ``separated`` input; ignored for ideal input (the stem cache).
        epochs: epochs (``None`` = the preset's ``part_network.epochs``).
        device: torch device of the run.
        seed: seed of the run (sampling and initialisation).
        num_workers: DataLoader workers of the engine.

    Raises:
        PartsimError: bad part/input/epochs, separated input without a source, or no triplets of this part.
    """
    check_network(part, input_kind)
    settings = data.preset
    network = settings.part_network
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise PartsimError(f"epochs must be a positive integer, got {epochs!r}")
    if input_kind == "separated":
        if source is None:
            raise PartsimError("separated input needs the separated signal source (see run.separated_source)")
        train_source, key_of_source = source, getattr(source, "key", None)
    else:
        train_source, key_of_source = data.cache, "ideal"
    validation = (train_source, data.validation_tracks) if data.validation_tracks else None

    def make_task(validation_split: tuple | None) -> TripletTask:
        return TripletTask(train_source, data.train_tracks, part, settings.frontend, network, seed,
                           validation=validation_split, seconds=settings.segment_seconds,
                           threshold=settings.silence_threshold, silence_source=data.cache,
                           validation_silence_source=data.cache)

    # The validation split may be too small to form triplets of this part (fewer than two tracks playing it):
    # then the network trains without validation (and without early stopping).
    task, validation = task_with_optional_validation(make_task, validation)
    config = TrainConfig(
        run_name=network_name(part, input_kind),
        seed=seed,
        epochs=epochs or network.epochs,
        steps_per_epoch=task.steps_per_epoch,
        batch_size=network.batch_size,
        lr=network.lr,
        early_stopping_patience=network.early_stopping_patience if validation is not None else None,
        device=device, amp=settings.amp,
        num_workers=num_workers,
        model={"architecture": "PartCNN", "n_mels": settings.frontend.n_mels, "width": network.width,
               "embedding_dim": network.embedding_dim},
        data={
            "part": part,
            "input": input_kind,
            "source": str(key_of_source),
            "train": data.fingerprint(data.train_tracks),
            "validation": data.fingerprint(data.validation_tracks) if validation is not None else None,
            "frontend": dataclasses.asdict(settings.frontend),
            "segment_seconds": settings.segment_seconds,
            "silence_threshold": settings.silence_threshold,
            "anchors_per_track": network.anchors_per_track,
            "margin": network.margin,
        },
    )
    return task, config


def train_part_network(data: DatasetHandle, part: str, input_kind: str = "ideal", source: Any = None,
                       epochs: int | None = None, device: str = "auto", resume: bool = True, progress: bool = True,
                       out_dir: str | Path | None = None, seed: int = 0) -> TrainResult:
    """Train (or reuse) one chapter-3 network: ``part`` on ideal or separated input, or the track network.

    Args:
        data: the chapter's dataset.
        part: one of :data:`NETWORK_PARTS` (``mix`` = the track network).
        input_kind: ``"ideal"`` or ``"separated"``.
        source: the separated signal source for ``separated`` input (see
            :func:`~partsim_core.baseline.separated_stems.separated_source`).
        epochs: ``None`` = the preset's.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        resume: continue from the last checkpoint (default); ``False`` discards checkpoint and model first.
        progress: progress bars.
        out_dir: artefact folder (default: ``cache_root()/models/part_network/<name>-<key>``).
        seed: seed of the run.

    Raises:
        PartsimError: unknown part/input, no separated source, or a checkpoint in ``out_dir`` from another config
            (with ``resume``).
    """
    task, config = part_network_setup(data, part, input_kind, source=source, epochs=epochs, device=device,
                                      seed=seed)
    return train(task, config, Path(out_dir) if out_dir is not None else None, kind=PART_NETWORK_KIND,
                 resume=resume, progress=progress)


@dataclass
class NetworkEvaluation:
    """kNN track-ID prediction of one network on the test segments, with the embeddings behind it (for t-SNE)."""

    part: str
    input: str
    #: Track ID of every test segment (same order as ``embeddings``).
    track_ids: np.ndarray
    #: Start sample of every test segment.
    starts: np.ndarray
    embeddings: np.ndarray
    #: Whether the 5 nearest other segments predict each segment's track ID.
    correct: np.ndarray
    reused: bool = False
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        """Percentage of test segments predicted correctly (NaN with fewer than two segments)."""
        return 100.0 * float(np.mean(self.correct)) if len(self.correct) else math.nan

    @property
    def n_segments(self) -> int:
        """Test segments evaluated."""
        return int(len(self.track_ids))

    @property
    def n_tracks(self) -> int:
        """Test tracks with at least one evaluated segment."""
        return int(len(set(self.track_ids.tolist())))


def chapter_test_segments(data: DatasetHandle, part: str, signal: SignalSource) -> SegmentIndex:
    """The chapter's test segments of ``part`` read from ``signal``: 3-s, no overlap, non-silent on the ideal stem
    (on the mix for the track network)."""
    settings = data.preset
    return SegmentIndex(signal, data.test_tracks, part, settings.segment_seconds, overlap=False,
                        threshold=settings.silence_threshold, silence_source=data.cache)


@torch.no_grad()
def evaluate_network(model: torch.nn.Module, data: DatasetHandle, part: str, signal: SignalSource,
                     input_kind: str, device: str = "cpu") -> NetworkEvaluation:
    """kNN track-ID prediction (k = 5, leave-one-out) of ``model`` on the test segments of ``part`` read from
    ``signal`` (the stem cache, a separated source, or any signal source such as the leakage)."""
    empty = NetworkEvaluation(part=part, input=input_kind, track_ids=np.zeros(0, dtype=str),
                              starts=np.zeros(0, dtype=np.int64), embeddings=np.zeros((0, 0), dtype=np.float32),
                              correct=np.zeros(0, dtype=bool))
    if part != MIX_PART and not any(part in track.stems_by_group() for track in data.test_tracks):
        return empty  # no test track has this part at all: nothing to predict
    index = chapter_test_segments(data, part, signal)
    refs = index.refs()
    if len(refs) < 2:
        return empty
    track_ids = np.asarray(index.track_ids, dtype=object)[refs[:, 0]].astype(str)
    tracks_by_id = {track.track_id: track for track in data.test_tracks}
    vectors = embed(model, signal, tracks_by_id, index, data.preset.frontend, device=device)
    correct = knn_predict(vectors, track_ids) == track_ids
    return NetworkEvaluation(part=part, input=input_kind, track_ids=track_ids, starts=refs[:, 1].copy(),
                             embeddings=vectors, correct=np.asarray(correct, dtype=bool))


def per_track_accuracy(evaluation: NetworkEvaluation, track_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy (%) and segment count per test track (in ``track_ids`` order; NaN / 0 for a track without
    segments): the items the intervals resample, weighted by segments so their mean is the pooled accuracy."""
    accuracy = np.full(len(track_ids), math.nan)
    counts = np.zeros(len(track_ids))
    for position, track_id in enumerate(track_ids):
        mask = evaluation.track_ids == track_id
        if mask.any():
            accuracy[position] = 100.0 * float(np.mean(evaluation.correct[mask]))
            counts[position] = float(mask.sum())
    return accuracy, counts
