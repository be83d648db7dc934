"""Chapter 4's pre-training (thesis 4.3.5 and 4.4.1): dataset segments, the five per-part target networks, the
targets, the task (with a validation loss on the validation split) and its training, shared by condition (b) and
every ``pre`` condition ((e), (h), (i), (j)); the choices are documented in :mod:`partsim_core.csn.conditions`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from partsim_core import INSTRUMENTS
from partsim_core.baseline.networks import train_part_network

#: Artefact kind (folder under ``cache_root()/models``) of the CSN runs.
from partsim_core.csn.network import CSN_KIND, build_csn_model
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.segments import SegmentIndex, segment_length
from partsim_core.embed import embed
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel
from partsim_core.losses import pretraining_loss
from partsim_core.presets import CSNConfig
from partsim_core.training import (
    VALIDATION_SEED_OFFSET,
    TrainConfig,
    TrainResult,
    train,
)

#: Where the pre-training's per-part target networks come from (see :mod:`partsim_core.csn.conditions`).
PRETRAINING_TARGETS: tuple[str, ...] = ("pretraining", "chapter3")


# --------------------------------------------------------------------------------------------------------------
# Pre-training (thesis 4.3.5)
# --------------------------------------------------------------------------------------------------------------


def segment_parts(source: Any, track: Any, start: int, length: int, arrays: dict | None = None) -> np.ndarray:
    """Clean part signals of one segment: float32 ``(5, length)``, zeros for missing parts and past the end."""
    existing = track.stems_by_group() if hasattr(track, "stems_by_group") else INSTRUMENTS
    parts = np.zeros((len(INSTRUMENTS), length), dtype=np.float32)
    cache = {} if arrays is None else arrays
    for row, part in enumerate(INSTRUMENTS):
        if part not in existing:
            continue
        audio = cache.get((track.track_id, part))
        if audio is None:
            audio = cache[track.track_id, part] = source.get(track, part)
        excerpt = audio[start:start + length]
        parts[row, :excerpt.shape[0]] = excerpt
    return parts


class PretrainingTask:
    """:class:`~partsim_core.training.TrainingTask` of the pre-training: mix segment -> normalised target (eq. 4.7).

    The targets are computed once (the per-part networks are fixed); the mixes are summed from the clean parts
    when a batch is made, so memory holds only the targets. ``batch(epoch, step)`` takes rows
    ``[step * B, (step + 1) * B)`` of a permutation seeded by ``(seed, epoch)``: ``(mel, target_parts, present)``
    with ``mel`` ``(B, n_mels, frames)``, ``target_parts`` ``(B, 5, D)`` and ``present`` ``(B, 5)``.

    Args:
        source: Clean part signals (the stem cache).
        tracks_by_id: Track objects of the segments.
        refs: ``(track id, start sample)`` of every segment.
        target_parts: ``(n, 5, D)`` per-part network outputs (zeros where absent).
        present: ``(n, 5)`` 0/1.
        frontend: Log-mel settings.
        width: Channel width of the :class:`~partsim_core.csn.network.CSNModel`.
        batch_size: Rows per step.
        seed: Seeds the permutation.
        length: Segment length in samples.
    """

    def __init__(self, source: Any, tracks_by_id: dict[str, Any], refs: list[tuple[str, int]],
                 target_parts: torch.Tensor, present: torch.Tensor, frontend: Any, width: int, batch_size: int,
                 seed: int, length: int, validation: tuple | None = None) -> None:
        if not refs:
            raise PartsimError("pre-training found no segment with an audible part in its training tracks")
        self.source, self.tracks_by_id, self.refs = source, tracks_by_id, list(refs)
        # A callable defers the (costly) per-part network passes until a batch is needed, so reusing a cached
        # pre-trained network computes no targets.
        self._target_parts, self.present = target_parts, present
        #: ``(refs, target_parts or a callable giving them, present)`` of fixed validation segments, or None.
        self._validation = validation
        self.frontend, self.width, self.batch_size, self.seed, self.length = frontend, width, batch_size, seed, length
        self.log_mel = LogMel(frontend)
        self._arrays: dict = {}

    def __getstate__(self) -> dict:
        # Memory maps would be pickled as full copies of the audio: each worker re-opens its own. Targets are
        # computed once here, not in every worker.
        return {**self.__dict__, "_target_parts": self.target_parts, "_arrays": {},
                "_validation": self._resolved_validation()}

    def _resolved_validation(self) -> tuple | None:
        if self._validation is not None and callable(self._validation[1]):
            refs, targets, present = self._validation
            self._validation = (refs, targets(), present)
        return self._validation

    @property
    def target_parts(self) -> torch.Tensor:
        """``(n, 5, D)`` targets (computed on first use when a callable was given)."""
        if callable(self._target_parts):
            self._target_parts = self._target_parts()
        return self._target_parts

    @property
    def steps_per_epoch(self) -> int:
        """``ceil(segments / batch_size)``."""
        return math.ceil(len(self.refs) / self.batch_size)

    def build_model(self) -> nn.Module:
        """A fresh :class:`~partsim_core.csn.network.CSNModel` without the norm loss (the pre-training does not use it)."""
        return build_csn_model(self.frontend.n_mels, self.width, norm=False)

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mel, target_parts, present)`` of one step."""
        order = np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.refs))
        rows = order[(int(step) * self.batch_size + np.arange(self.batch_size)) % order.size]
        mixes = np.stack([segment_parts(self.source, self.tracks_by_id[self.refs[row][0]], self.refs[row][1],
                                        self.length, self._arrays).sum(axis=0) for row in rows])
        mel = self.log_mel.full_precision(torch.from_numpy(mixes))
        index = torch.from_numpy(rows)
        return mel, self.target_parts[index], self.present[index]

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """:func:`~partsim_core.losses.pretraining_loss` of the batch."""
        mel, target_parts, present = batch
        return pretraining_loss(model(mel).float(), target_parts.float(), present)

    def validation_loss(self, model: nn.Module) -> float | None:
        """Mean pre-training loss on the fixed validation segments (mixes of the validation split, targets by the
        same per-part networks), or ``None`` without them. Shown per epoch; the pre-training still runs its
        fixed number of epochs (no early stopping), and nothing random is drawn, so training is unchanged."""
        validation = self._resolved_validation()
        if validation is None:
            return None
        refs, target_parts, present = validation
        was_training = model.training
        model.eval()
        total = 0.0
        try:
            with torch.no_grad():
                for start in range(0, len(refs), self.batch_size):
                    rows = range(start, min(start + self.batch_size, len(refs)))
                    mixes = np.stack([segment_parts(self.source, self.tracks_by_id[refs[row][0]], refs[row][1],
                                                    self.length, self._arrays).sum(axis=0) for row in rows])
                    mel = self.log_mel.full_precision(torch.from_numpy(mixes))
                    device = next(model.parameters()).device
                    index = torch.as_tensor(list(rows))
                    loss = pretraining_loss(model(mel.to(device)).float(), target_parts[index].float().to(device),
                                            present[index].to(device))
                    total += float(loss) * len(rows)
        finally:
            model.train(was_training)
        return total / len(refs)


#: Pre-training segments per (tracks' fingerprint, seconds, threshold): found once per process.
_SEGMENTS_MEMO: dict[tuple, tuple[list[tuple[str, int]], np.ndarray, dict[str, SegmentIndex | None]]] = {}


def pretraining_tracks(data: DatasetHandle, csn: CSNConfig) -> list[Any]:
    """The training tracks of the pre-training: the first ``csn.pretrain_tracks`` (thesis: 200), or all."""
    return list(data.train_tracks if csn.pretrain_tracks is None else data.train_tracks[:csn.pretrain_tracks])


def pretraining_segments(data: DatasetHandle, tracks: list[Any],
                         ) -> tuple[list[tuple[str, int]], np.ndarray, dict[str, SegmentIndex | None]]:
    """Dataset segments of the pre-training: 3 s, 50 % overlap, where at least one part sounds.

    Built from one :class:`~partsim_core.data.segments.SegmentIndex` per part (the project's segment grid and
    silence rule). Returns ``(refs, present, indices)``: ``refs`` the ``(track id, start)`` of every segment (track
    by track, ascending starts), ``present`` float32 ``(n, 5)`` (1 where the part's clean segment is not silent),
    and the per-part index (``None`` for a part no track plays).
    """
    settings = data.preset
    key = (data.fingerprint(tracks), settings.segment_seconds, settings.silence_threshold,
           data.cache.sample_rate)
    if key in _SEGMENTS_MEMO:
        return _SEGMENTS_MEMO[key]
    indices: dict[str, SegmentIndex | None] = {}
    for part in INSTRUMENTS:
        try:
            indices[part] = SegmentIndex(data.cache, tracks, part, settings.segment_seconds, overlap=True,
                                         threshold=settings.silence_threshold)
        except PartsimError as error:
            if "no non-silent" not in str(error):
                raise
            indices[part] = None
    refs: list[tuple[str, int]] = []
    rows: list[np.ndarray] = []
    for track in tracks:
        by_part = [set() if index is None else set(index.starts.get(track.track_id, np.zeros(0)).tolist())
                   for index in indices.values()]
        for start in sorted(set().union(*by_part)):
            refs.append((track.track_id, int(start)))
            rows.append(np.array([start in starts for starts in by_part], dtype=np.float32))
    present = np.stack(rows) if rows else np.zeros((0, len(INSTRUMENTS)), dtype=np.float32)
    _SEGMENTS_MEMO[key] = (refs, present, indices)
    return refs, present, indices


def pretraining_targets(data: DatasetHandle, refs: list[tuple[str, int]], indices: dict[str, SegmentIndex | None],
                        networks: dict[str, nn.Module | None], device: str = "cpu",
                        batch_size: int = 64) -> torch.Tensor:
    """Per-part network outputs ``g_j(x_ij)`` on the clean part segments: ``(n, 5, D)``, zero where absent.

    Each part's sounding segments are embedded through :func:`partsim_core.embed.embed` (streamed in batches from
    the stem cache); a part whose network is ``None`` (no training track has it) gets a zero block everywhere.
    """
    dims = {int(getattr(model, "embedding_dim", 128)) for model in networks.values() if model is not None}
    if len(dims) > 1:
        raise PartsimError(f"the per-part networks disagree on the embedding size: {sorted(dims)}")
    dim = dims.pop() if dims else 128
    row_of = {ref: row for row, ref in enumerate(refs)}
    targets = torch.zeros(len(refs), len(INSTRUMENTS), dim)
    for column, part in enumerate(INSTRUMENTS):
        model, index = networks.get(part), indices.get(part)
        if model is None or index is None:
            continue
        vectors = embed(model, data.cache, data.tracks_by_id, index, data.preset.frontend, batch_size=batch_size,
                        device=device)
        rows = [row_of[(index.track_ids[position], int(start))] for position, start in index.refs()]
        targets[rows, column] = torch.from_numpy(vectors)
    return targets


def _all_pretraining_targets(data: DatasetHandle, tracks: list[Any], networks: dict[str, nn.Module | None],
                             device: str) -> torch.Tensor:
    """Targets of every pre-training segment, in :func:`pretraining_segments` order (module-level: picklable)."""
    refs, _present, indices = pretraining_segments(data, tracks)
    return pretraining_targets(data, refs, indices, networks, device=device)


def target_networks(data: DatasetHandle, csn: CSNConfig, targets: str = "pretraining", device: str = "auto",
                    seed: int = 0, progress: bool = False) -> dict[str, TrainResult | None]:
    """Train (or reuse) the five per-part target networks of the pre-training (chapter 3's way, ideal stems).

    ``targets="pretraining"`` trains them on the pre-training tracks (thesis 4.4.1); ``"chapter3"`` uses chapter
    3's ideal networks trained on every training track. A part no training track plays gets ``None``.

    Raises:
        PartsimError: an unknown ``targets``.
    """
    if targets not in PRETRAINING_TARGETS:
        raise PartsimError(f"unknown pre-training targets {targets!r}; choose one of: {', '.join(PRETRAINING_TARGETS)}")
    source = dataclasses.replace(data, train_tracks=pretraining_tracks(data, csn)) if targets == "pretraining" \
        else data
    out: dict[str, TrainResult | None] = {}
    for part in INSTRUMENTS:
        try:
            out[part] = train_part_network(source, part, "ideal", device=device, progress=progress, seed=seed)
        except PartsimError:
            # No training track plays this part (too few to form triplets): its block of every target is zero.
            out[part] = None
    return out


def pretraining_setup(data: DatasetHandle, csn: CSNConfig, epochs: int | None = None, device: str = "auto",
                      seed: int = 0, progress: bool = False, targets: str = "pretraining",
                      ) -> tuple[PretrainingTask, TrainConfig]:
    """Train (or reuse) the five target networks and build the pre-training task and config."""
    trained = target_networks(data, csn, targets, device=device, seed=seed, progress=progress)
    networks = {part: None if result is None else result.model for part, result in trained.items()}
    network_keys = {part: None if result is None else result.out_dir.name for part, result in trained.items()}
    tracks = pretraining_tracks(data, csn)
    refs, present, _indices = pretraining_segments(data, tracks)
    if not refs:
        raise PartsimError("pre-training found no segment with an audible part in its training tracks")
    length = segment_length(data.preset.frontend.sample_rate, data.preset.segment_seconds)
    # The targets are computed only when a batch needs them: reusing a cached pre-trained network embeds nothing.
    target_fn = functools.partial(_all_pretraining_targets, data, tracks, networks, "cpu")
    task = PretrainingTask(data.cache, data.tracks_by_id, refs, target_fn, torch.from_numpy(present),
                           data.preset.frontend, csn.width, csn.batch_size, seed, length,
                           validation=pretraining_validation(data, csn, networks, seed))
    config = TrainConfig(
        run_name="csn-pretrain", seed=seed, epochs=epochs or csn.pretrain_epochs,
        steps_per_epoch=task.steps_per_epoch, batch_size=csn.batch_size, lr=csn.lr, device=device,
        amp=data.preset.amp,
        model={"architecture": "CSNModel", "n_mels": data.preset.frontend.n_mels, "width": csn.width},
        data={"train": data.fingerprint(tracks), "targets": targets, "part_networks": network_keys,
              "frontend": dataclasses.asdict(data.preset.frontend), "segment_seconds": data.preset.segment_seconds,
              "silence_threshold": data.preset.silence_threshold, "segments": len(refs)},
    )
    return task, config


def pretraining_validation(data: DatasetHandle, csn: CSNConfig, networks: dict[str, nn.Module | None], seed: int,
                           ) -> tuple | None:
    """Fixed validation segments of the pre-training: up to ``csn.validation_triplets`` segments of the validation
    split (drawn once with the validation seed), their targets computed lazily by the same per-part networks.
    ``None`` without validation tracks."""
    tracks = list(data.validation_tracks)
    if not tracks:
        return None
    refs, present, _indices = pretraining_segments(data, tracks)
    if not refs:
        return None
    rng = np.random.default_rng(seed + VALIDATION_SEED_OFFSET)
    chosen = np.sort(rng.choice(len(refs), size=min(csn.validation_triplets, len(refs)), replace=False))
    chosen_refs = [refs[row] for row in chosen]

    def targets() -> torch.Tensor:
        _refs, _present, indices = pretraining_segments(data, tracks)
        return pretraining_targets(data, refs, indices, networks)[torch.from_numpy(chosen)]

    return chosen_refs, targets, torch.from_numpy(present[chosen])


def train_pretraining(data: DatasetHandle, csn: CSNConfig, epochs: int | None = None, device: str = "auto",
                      resume: bool = True, progress: bool = True, seed: int = 0,
                      targets: str = "pretraining") -> TrainResult:
    """Pre-train (or reuse) the CSN (thesis 4.3.5); condition (b), and the start of (e), (h), (i), (j)."""
    task, config = pretraining_setup(data, csn, epochs=epochs, device=device, seed=seed, progress=progress,
                                     targets=targets)
    return train(task, config, kind=CSN_KIND, resume=resume, progress=progress)
