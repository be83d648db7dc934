"""Chapter 4's CSN training task: pseudo triplets mixed into batches of log-mels, norm targets and conditions.

Thesis 4.4.1. :class:`PseudoTripletTask` is the :class:`~partsim_core.training.TrainingTask` the CSN conditions
train with: each epoch it draws its triplets with :class:`~partsim_core.csn.pseudo_pieces.PseudoTripletSampler`
(the sampling rules live in :mod:`partsim_core.csn.pseudo_pieces`), mixes their pieces with
:func:`~partsim_core.csn.pseudo_pieces.mix_piece` and turns the mixes into log-mels; :class:`PseudoTripletConfig`
holds its sampling settings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from partsim_core import INSTRUMENTS
from partsim_core.csn.pseudo_pieces import (
    PartActivity,
    PseudoTriplet,
    PseudoTripletSampler,
    TempoGroups,
    mix_piece,
)
from partsim_core.data.segments import SILENCE_THRESHOLD, THESIS_TEMPO_CLASSES, SignalSource
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel, check_source_rate
from partsim_core.presets import FrontendConfig
from partsim_core.training import VALIDATION_SEED_OFFSET, ReopensCachesWhenPickled


@dataclass(frozen=True)
class PseudoTripletConfig:
    """Sampling settings of the CSN task (thesis 4.4.1; paper: 5,000 triplets, batch 32, 3-s segments)."""

    triplets_per_epoch: int = 5000
    batch_size: int = 32
    seconds: float = 3.0
    threshold: float = SILENCE_THRESHOLD
    n_tempo_classes: int = THESIS_TEMPO_CLASSES
    pseudo: bool = True
    additional: bool = True
    created_silences: bool = True
    #: Fixed validation triplets (drawn once from the validation tracks).
    validation_triplets: int = 256


class PseudoTripletTask(ReopensCachesWhenPickled):
    """The CSN's :class:`~partsim_core.training.TrainingTask` (thesis 4.3.3-4.3.4, 4.4.1).

    ``batch(epoch, step)`` is a dict of CPU tensors, a pure function of (seed, epoch, step):

    * ``anchor``, ``positive``, ``negative``: log-mels ``(B, n_mels, frames)`` of the mixed pieces (one batched
      :class:`~partsim_core.frontend.LogMel` call; waveforms ``(B, samples)`` with ``mel_in_loss``, turned into
      log-mels by :meth:`loss` on the model's device);
    * ``condition``: int64 ``(B,)``, the basic triplet's part index;
    * ``additional_condition``: int64 ``(B,)``, the additional triplet's (anchor, **negative**, **positive**)
      condition, ``-1`` where there is none (``additional`` off);
    * ``powers``: float32 ``(B, 3, 5)``, mean power of each clean part in anchor/positive/negative (norm loss
      targets ``q = powers > threshold``, eq. 4.5); ``present``: that comparison as float32.

    ``B = config.batch_size`` basic triplets: positions ``[step * B, (step + 1) * B)`` modulo the epoch's
    ``config.triplets_per_epoch`` triplets (so every step number is valid, as DDP ranks need).

    Args:
        source: Ideal part signals of the training tracks.
        tracks: Training tracks.
        tempos: BPM per track id (training and validation tracks).
        frontend: Log-mel settings (``sample_rate`` must equal the source's).
        config: Sampling settings.
        seed: Seeds the triplets.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` (the CSN losses live in ``partsim_core.losses``).
        model_factory: Builds a fresh model (:meth:`build_model`). Both callables must be picklable for
            DataLoader workers (module-level functions or ``functools.partial``).
        validation: ``(source, tracks)`` of the validation split, or ``None``.
        mel_in_loss: Compute log-mels in :meth:`loss` instead of :meth:`batch`.

    Raises:
        PartsimError: differing sample rates, too few tracks, see
            :class:`~partsim_core.csn.pseudo_pieces.PseudoTripletSampler`.
    """

    def __init__(self, source: SignalSource, tracks: Sequence[Any], tempos: Mapping[str, float],
                 frontend: FrontendConfig, config: PseudoTripletConfig, seed: int,
                 loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
                 model_factory: Callable[[], torch.nn.Module],
                 validation: tuple[SignalSource, Sequence[Any]] | None = None, *, mel_in_loss: bool = False) -> None:
        for name, value in (("triplets_per_epoch", config.triplets_per_epoch), ("batch_size", config.batch_size),
                            ("validation_triplets", config.validation_triplets)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PartsimError(f"{name} must be a positive integer, got {value!r}")
        check_source_rate("signal source", source.sample_rate, frontend)
        self.source, self.frontend, self.config, self.seed = source, frontend, config, int(seed)
        self.loss_fn, self.model_factory, self.mel_in_loss = loss_fn, model_factory, bool(mel_in_loss)
        self.sampler = self._sampler(source, tracks, tempos, self.seed)
        self.length = self.sampler.activity.length
        self.tracks_by_id = {track.track_id: track for track in tracks}
        self.log_mel = LogMel(frontend)
        self.validation_source = self.validation_tracks_by_id = None
        self.validation_triplets: list[PseudoTriplet] | None = None
        if validation is not None:
            validation_source, validation_tracks = validation
            check_source_rate("validation source", validation_source.sample_rate, frontend)
            sampler = self._sampler(validation_source, validation_tracks, tempos, self.seed + VALIDATION_SEED_OFFSET)
            self.validation_source = validation_source
            self.validation_tracks_by_id = {track.track_id: track for track in validation_tracks}
            self.validation_triplets = sampler.triplets(0, config.validation_triplets)
        self._init_caches()

    def _sampler(self, source: SignalSource, tracks: Sequence[Any], tempos: Mapping[str, float],
                 seed: int) -> PseudoTripletSampler:
        config = self.config
        activity = PartActivity(source, tracks, config.seconds, config.threshold)
        groups = TempoGroups(tracks, tempos, config.n_tempo_classes) if config.pseudo else None
        return PseudoTripletSampler(activity, groups, pseudo=config.pseudo, additional=config.additional,
                                    created_silences=config.created_silences, seed=seed)

    def _init_caches(self) -> None:
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        self._validation_arrays: dict[tuple[str, str], np.ndarray] = {}
        self._epoch_triplets: tuple[int, list[PseudoTriplet]] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """``ceil(triplets_per_epoch / batch_size)``."""
        return math.ceil(self.config.triplets_per_epoch / self.config.batch_size)

    def build_model(self) -> torch.nn.Module:
        """A fresh model from ``model_factory``."""
        return self.model_factory()

    def triplets(self, epoch: int) -> list[PseudoTriplet]:
        """The epoch's ``triplets_per_epoch`` basic triplets (cached for the last epoch asked)."""
        if self._epoch_triplets is None or self._epoch_triplets[0] != epoch:
            self._epoch_triplets = (epoch, self.sampler.triplets(epoch, self.config.triplets_per_epoch))
        return self._epoch_triplets[1]

    def assemble(self, triplets: Sequence[PseudoTriplet], source: SignalSource | None = None,
                 tracks_by_id: Mapping[str, Any] | None = None, arrays: dict | None = None,
                 mel: bool = True) -> dict[str, torch.Tensor]:
        """The batch dict (see the class docstring) of ``triplets``; training source unless given."""
        source = self.source if source is None else source
        tracks_by_id = self.tracks_by_id if tracks_by_id is None else tracks_by_id
        arrays = self._arrays if arrays is None else arrays
        n = len(triplets)
        waveforms = np.empty((3, n, self.length), dtype=np.float32)
        powers = np.empty((n, 3, len(INSTRUMENTS)), dtype=np.float32)
        for row, triplet in enumerate(triplets):
            for role, (piece, start) in enumerate(zip(triplet.pieces, triplet.starts)):
                mix, parts = mix_piece(source, tracks_by_id, piece, start, self.length, arrays=arrays)
                waveforms[role, row] = mix
                powers[row, role] = np.mean(np.square(parts, dtype=np.float64), axis=1)
        signals = torch.from_numpy(waveforms.reshape(3 * n, self.length))
        if mel:
            signals = self.log_mel.full_precision(signals)
        anchor, positive, negative = signals.chunk(3)
        return {
            "anchor": anchor, "positive": positive, "negative": negative,
            "condition": torch.tensor([t.condition for t in triplets], dtype=torch.int64),
            "additional_condition": torch.tensor(
                [-1 if t.additional_condition is None else t.additional_condition for t in triplets],
                dtype=torch.int64),
            "powers": torch.from_numpy(powers),
            "present": torch.from_numpy((powers > self.config.threshold).astype(np.float32)),
        }

    def batch(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        """Batch ``step`` of epoch ``epoch`` (see the class docstring)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise PartsimError(f"step must be a non-negative integer, got {step!r}")
        triplets = self.triplets(epoch)
        size = self.config.batch_size
        chosen = [triplets[(int(step) * size + i) % len(triplets)] for i in range(size)]
        return self.assemble(chosen, mel=not self.mel_in_loss)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``loss_fn(model, batch)``, the log-mels computed here first with ``mel_in_loss``."""
        if self.mel_in_loss:
            batch = {**batch, **{role: self.log_mel.full_precision(batch[role])
                                 for role in ("anchor", "positive", "negative")}}
        return self.loss_fn(model, batch)

    def validation_loss(self, model: torch.nn.Module) -> float | None:
        """Mean ``loss_fn`` over the fixed validation triplets (batches of ``batch_size``), or ``None``."""
        if self.validation_triplets is None:
            return None
        device = next(model.parameters()).device
        total, count = 0.0, 0
        with torch.no_grad():
            for first in range(0, len(self.validation_triplets), self.config.batch_size):
                chunk = self.validation_triplets[first:first + self.config.batch_size]
                batch = self.assemble(chunk, self.validation_source, self.validation_tracks_by_id,
                                      self._validation_arrays, mel=True)
                batch = {name: value.to(device) for name, value in batch.items()}
                total += float(self.loss_fn(model, batch)) * len(chunk)
                count += len(chunk)
        return total / count
