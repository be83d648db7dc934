"""Chapter 4: the nine training conditions (a)-(i) of thesis Table 4.2 and the CSN training of each.

Every condition switches five ideas of thesis 4.3 on or off: the norm loss (``norm``, 4.3.4), pseudo musical
pieces (``psd``, 4.3.3), basic triplets (``basic``), additional triplets (``add``) and pre-training (``pre``,
4.3.5). Condition (a) is the chapter-3 baseline (per-part networks on separated stems; nothing is trained here);
(b) is the pre-trained network alone; (c)-(e) train on same-track triplets of dataset pieces (Fig. 4.2); (f)-(i)
on pseudo pieces (Fig. 4.3).

Choices made here, documented because the thesis leaves them open:

* **Created silences** (4.3.4) go with the pseudo pieces: they are a way of *making* pseudo pieces, and the
  Fig. 4.2 sampler (dataset pieces) has no parts to drop.
* **Loss** (:class:`CSNLoss`): masked triplet loss on the basic triplets, plus (``add``) the masked triplet loss
  on (anchor, negative, positive) under the additional condition, averaged over the rows that have one, plus
  (``norm``) ``lambda x`` the norm loss averaged over anchor, positive and negative.
* **Pre-training** (:func:`pretraining_setup`): dataset segments (3 s, 50 % overlap) of the first
  ``csn.pretrain_tracks`` training tracks (thesis: 200) where at least one part is audible; the targets are the
  chapter-3 ideal per-part networks' outputs on each part's clean segment, with a zero block where that part is
  silent (mean power <= the silence threshold) or missing. The pre-trained :class:`CSNModel` (encoder *and* norm
  bias) is trained once and cached; every ``pre`` condition starts from its weights, and its artefact key enters
  theirs, so retraining the pre-training retrains them.
* **Number of pre-training epochs**: not in the thesis; a preset setting (``csn.pretrain_epochs``).

Used by: ``partsim train csn`` / ``partsim csn conditions`` and ``notebooks/ch4_csn_ablations``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from partsim_core import INSTRUMENTS
from partsim_core.errors import PartsimError
from partsim_core.losses import NormLoss, masked_triplet_loss, pretraining_loss
from partsim_core.models import CSNEncoder
from partsim_core.presets import CSNConfig, get_preset

if TYPE_CHECKING:
    from partsim_core.data.dataset import DatasetHandle
    from partsim_core.training import TrainConfig, TrainResult

#: Artefact kind (folder under ``cache_root()/models``) of the CSN runs.
CSN_KIND = "csn"

#: The switches of thesis Table 4.2, in its column order.
SWITCHES: tuple[str, ...] = ("norm", "psd", "basic", "add", "pre")


@dataclass(frozen=True)
class Condition:
    """One row of thesis Table 4.2.

    Attributes:
        letter: ``a`` ... ``i``.
        norm: Norm loss (4.3.4).
        psd: Pseudo musical pieces with created silences (4.3.3-4.3.4); without, Fig. 4.2's same-track triplets.
        basic: Basic triplets (every trained condition has them).
        add: Additional triplets (needs ``psd``).
        pre: Start from the pre-trained network (4.3.5); with no other switch the condition *is* that network.
        is_baseline: Condition (a): the chapter-3 networks on separated stems; no CSN is trained.
        description: A short human-readable summary.
    """

    letter: str
    norm: bool = False
    psd: bool = False
    basic: bool = False
    add: bool = False
    pre: bool = False
    is_baseline: bool = False
    description: str = ""

    @property
    def row(self) -> str:
        """The row label of Table 4.2, e.g. ``(i)``."""
        return f"({self.letter})"

    @property
    def pretraining_only(self) -> bool:
        """Condition (b): the pre-trained network, no triplet training."""
        return self.pre and not self.basic

    @property
    def run_name(self) -> str:
        """Run name of the condition's training (``csn-i``)."""
        return f"csn-{self.letter}"


CONDITIONS: dict[str, Condition] = {c.letter: c for c in (
    Condition("a", is_baseline=True, description="baseline: chapter-3 per-part networks on separated stems"),
    Condition("b", pre=True, description="pre-training only"),
    Condition("c", basic=True, description="basic triplets of dataset pieces (Fig. 4.2)"),
    Condition("d", norm=True, basic=True, description="norm loss + basic triplets of dataset pieces"),
    Condition("e", norm=True, basic=True, pre=True,
              description="norm loss + basic triplets of dataset pieces, from the pre-trained network"),
    Condition("f", norm=True, psd=True, basic=True, description="norm loss + pseudo pieces + basic triplets"),
    Condition("g", norm=True, psd=True, basic=True, add=True,
              description="norm loss + pseudo pieces + basic and additional triplets"),
    Condition("h", norm=True, psd=True, basic=True, pre=True,
              description="norm loss + pseudo pieces + basic triplets, from the pre-trained network"),
    Condition("i", norm=True, psd=True, basic=True, add=True, pre=True,
              description="everything: norm + pseudo pieces + basic + additional triplets + pre-training"),
)}


#: Conditions some table needs that are not rows of Table 4.2: ``j`` is Table 4.3's middle row "w/pre, wo/norm"
#: (psd + basic + add + pre, i.e. (i) without the norm loss).
EXTRA_CONDITIONS: dict[str, Condition] = {c.letter: c for c in (
    Condition("j", psd=True, basic=True, add=True, pre=True,
              description="Table 4.3 'w/pre, wo/norm': (i) without the norm loss (not a row of Table 4.2)"),
)}


def get_condition(letter: str) -> Condition:
    """The condition of Table 4.2 row ``letter`` (``"i"`` or ``"(i)"``, any case), or an extra one (``j``).

    Raises:
        PartsimError: not one of a-j.
    """
    key = str(letter).strip().lower().strip("()")
    known = {**CONDITIONS, **EXTRA_CONDITIONS}
    if key not in known:
        raise PartsimError(f"unknown condition {letter!r}; choose one of: {', '.join(known)}")
    return known[key]


def conditions_table() -> pd.DataFrame:
    """The registry as a table (index: Table 4.2 row; columns baseline + the switches as bools, description).

    Used by ``partsim csn conditions`` and the chapter-4 notebook.
    """
    rows = [{"row": c.row, "baseline": c.is_baseline, **{name: getattr(c, name) for name in SWITCHES},
             "description": c.description} for c in CONDITIONS.values()]
    return pd.DataFrame(rows).set_index("row")


# --------------------------------------------------------------------------------------------------------------
# Model and loss
# --------------------------------------------------------------------------------------------------------------


class CSNModel(nn.Module):
    """:class:`~partsim_core.models.CSNEncoder` plus the norm loss's per-instrument bias, in one module.

    Keeping :class:`~partsim_core.losses.NormLoss` inside the model puts its bias ``b_j`` (eq. 4.4) into the
    optimizer and the checkpoints. ``forward`` is the encoder's: ``(batch, n_mels, frames) -> (batch, 640)``.
    """

    def __init__(self, n_mels: int, width: int) -> None:
        super().__init__()
        self.encoder = CSNEncoder(n_mels, width=width)
        self.norm_loss = NormLoss(self.encoder.n_parts)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(batch, n_parts * subspace_dim)`` of log-mels of mixes."""
        return self.encoder(mel)


def build_csn_model(n_mels: int, width: int, initial_weights: str | None = None) -> CSNModel:
    """A fresh :class:`CSNModel`, loaded from a finished run's folder when ``initial_weights`` is given.

    Module-level so that ``functools.partial`` of it is picklable (DataLoader workers).
    """
    model = CSNModel(n_mels, width)
    if initial_weights is not None:
        from partsim_core.training import load_trained

        model = load_trained(Path(initial_weights), model)
        model.train()
    return model


@dataclass(frozen=True)
class CSNLoss:
    """The CSN's training loss for a batch of :class:`~partsim_core.csn.pseudo_pieces.PseudoTripletTask` (picklable).

    ``masked_triplet(a, p, n | c)`` on every row, plus, when ``additional``, ``masked_triplet(a, n, p | c')`` on
    the rows whose ``additional_condition`` ``c' >= 0`` (their mean; 0 when there is none), plus, when ``norm``,
    ``norm_weight x`` the mean of the norm loss of anchor, positive and negative (thesis eq. 4.6, lambda = 0.1).
    The model must be a :class:`CSNModel` (possibly DDP-wrapped) when ``norm``.
    """

    margin: float = 0.2
    norm_weight: float = 0.1
    additional: bool = False
    norm: bool = False

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mels = torch.cat([batch["anchor"], batch["positive"], batch["negative"]])
        anchor, positive, negative = model(mels).float().chunk(3)
        return self.from_embeddings(anchor, positive, negative, batch, getattr(model, "module", model))

    def from_embeddings(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                        batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> torch.Tensor:
        """The loss of already computed embeddings (``model`` only provides the norm loss's bias)."""
        loss = masked_triplet_loss(anchor, positive, negative, batch["condition"], margin=self.margin)
        if self.additional:
            rows = batch["additional_condition"] >= 0
            if bool(rows.any()):
                loss = loss + masked_triplet_loss(anchor[rows], negative[rows], positive[rows],
                                                  batch["additional_condition"][rows], margin=self.margin)
        if self.norm:
            norm_loss = getattr(model, "norm_loss", None)
            if norm_loss is None:
                raise PartsimError("the norm loss needs a CSNModel (encoder + NormLoss bias)")
            present = batch["present"]
            norm = sum(norm_loss(embedding, present[:, role]) for role, embedding in
                       enumerate((anchor, positive, negative))) / 3
            loss = loss + self.norm_weight * norm
        return loss


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
        width: Channel width of the :class:`CSNModel`.
        batch_size: Rows per step.
        seed: Seeds the permutation.
        length: Segment length in samples.
    """

    def __init__(self, source: Any, tracks_by_id: dict[str, Any], refs: list[tuple[str, int]],
                 target_parts: torch.Tensor, present: torch.Tensor, frontend: Any, width: int, batch_size: int,
                 seed: int, length: int) -> None:
        from partsim_core.frontend import LogMel

        if not refs:
            raise PartsimError("pre-training found no segment with an audible part in its training tracks")
        self.source, self.tracks_by_id, self.refs = source, tracks_by_id, list(refs)
        # A callable defers the (costly) per-part network passes until a batch is needed, so reusing a cached
        # pre-trained network computes no targets.
        self._target_parts, self.present = target_parts, present
        self.frontend, self.width, self.batch_size, self.seed, self.length = frontend, width, batch_size, seed, length
        self.log_mel = LogMel(frontend)
        self._arrays: dict = {}

    def __getstate__(self) -> dict:
        # Memory maps would be pickled as full copies of the audio: each worker re-opens its own. Targets are
        # computed once here, not in every worker.
        return {**self.__dict__, "_target_parts": self.target_parts, "_arrays": {}}

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
        """A fresh :class:`CSNModel`."""
        return build_csn_model(self.frontend.n_mels, self.width)

    def batch(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mel, target_parts, present)`` of one step."""
        order = np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.refs))
        rows = order[(int(step) * self.batch_size + np.arange(self.batch_size)) % order.size]
        mixes = np.stack([segment_parts(self.source, self.tracks_by_id[self.refs[row][0]], self.refs[row][1],
                                        self.length, self._arrays).sum(axis=0) for row in rows])
        with torch.autocast("cpu", enabled=False):
            mel = self.log_mel(torch.from_numpy(mixes))
        index = torch.from_numpy(rows)
        return mel, self.target_parts[index], self.present[index]

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """:func:`~partsim_core.losses.pretraining_loss` of the batch."""
        mel, target_parts, present = batch
        return pretraining_loss(model(mel).float(), target_parts.float(), present)

    def validation_loss(self, model: nn.Module) -> float | None:
        """None: the pre-training runs its fixed number of epochs."""
        return None


def pretraining_segments(data: DatasetHandle, n_tracks: int | None,
                         ) -> list[tuple[Any, list[int], np.ndarray, np.ndarray]]:
    """Dataset segments of the pre-training, track by track: 3 s, 50 % overlap, first ``n_tracks`` train tracks.

    Returns:
        One ``(track, starts, part_signals, present)`` per track with at least one segment where a part is
        audible: ``part_signals`` float32 ``(n, 5, samples)`` (clean parts, zeros for missing ones), ``present``
        float32 ``(n, 5)`` (mean power > the preset's silence threshold).
    """
    from partsim_core.data.segments import segment_length, segment_starts

    settings = data.preset
    rate = settings.frontend.sample_rate
    length = segment_length(rate, settings.segment_seconds)
    tracks = data.train_tracks if n_tracks is None else data.train_tracks[:n_tracks]
    result = []
    for track in tracks:
        existing = [part for part in INSTRUMENTS if part in track.stems_by_group()]
        if not existing:
            continue
        arrays: dict = {}
        samples = max(data.cache.get(track, part).shape[0] for part in existing)
        starts = segment_starts(samples, rate, settings.segment_seconds, overlap=True)
        if starts.size == 0:
            continue
        signals = np.stack([segment_parts(data.cache, track, int(start), length, arrays) for start in starts])
        present = np.mean(np.square(signals, dtype=np.float64), axis=2) > settings.silence_threshold
        keep = present.any(axis=1)
        if keep.any():
            result.append((track, [int(start) for start in starts[keep]], signals[keep],
                           present[keep].astype(np.float32)))
    return result


def pretraining_targets(part_signals: np.ndarray, present: np.ndarray, networks: dict[str, nn.Module | None],
                        frontend: Any, batch_size: int = 64) -> torch.Tensor:
    """Per-part network outputs ``g_j(x_ij)`` on the clean part segments: ``(n, 5, D)``, zero where absent.

    A part whose network is ``None`` (no training track has it) gets a zero block everywhere.
    """
    from partsim_core.frontend import LogMel

    log_mel = LogMel(frontend)
    dims = {int(getattr(model, "embedding_dim", 128)) for model in networks.values() if model is not None}
    if len(dims) > 1:
        raise PartsimError(f"the per-part networks disagree on the embedding size: {sorted(dims)}")
    dim = dims.pop() if dims else 128
    targets = torch.zeros(part_signals.shape[0], len(INSTRUMENTS), dim)
    with torch.no_grad():
        for column, part in enumerate(INSTRUMENTS):
            model = networks.get(part)
            if model is None:
                continue
            model.eval()
            for first in range(0, part_signals.shape[0], batch_size):
                waveforms = torch.from_numpy(part_signals[first:first + batch_size, column])
                targets[first:first + batch_size, column] = model(log_mel(waveforms)).float()
    return targets * torch.from_numpy(present).unsqueeze(-1)


def _all_pretraining_targets(data: DatasetHandle, n_tracks: int | None,
                             networks: dict[str, nn.Module | None]) -> torch.Tensor:
    """Targets of every pre-training segment, in :func:`pretraining_segments` order (module-level: picklable)."""
    blocks = [pretraining_targets(signals, present, networks, data.preset.frontend)
              for _track, _starts, signals, present in pretraining_segments(data, n_tracks)]
    return torch.cat(blocks)


def pretraining_setup(data: DatasetHandle, csn: CSNConfig, epochs: int | None = None, device: str = "auto",
                      seed: int = 0, progress: bool = False) -> tuple[PretrainingTask, TrainConfig]:
    """Train (or reuse) the five chapter-3 ideal networks and build the pre-training task and config.

    Used by: :func:`train_pretraining`; tests.
    """
    from partsim_core.baseline.networks import train_part_network
    from partsim_core.data.segments import segment_length
    from partsim_core.training import TrainConfig

    networks: dict[str, nn.Module | None] = {}
    network_keys: dict[str, str | None] = {}
    for part in INSTRUMENTS:
        try:
            result = train_part_network(data, part, "ideal", device=device, progress=progress, seed=seed)
        except PartsimError:
            # No training track plays this part: its block of every target is zero.
            networks[part], network_keys[part] = None, None
            continue
        networks[part], network_keys[part] = result.model, result.out_dir.name
    # The segment list is the same for every pre-training condition of one dataset load: found once.
    memo = data.__dict__.setdefault("_pretraining_refs", {})
    if csn.pretrain_tracks not in memo:
        found_refs, found_presence = [], []
        for track, starts, _signals, present in pretraining_segments(data, csn.pretrain_tracks):
            found_refs += [(track.track_id, start) for start in starts]
            found_presence.append(torch.from_numpy(present))
        memo[csn.pretrain_tracks] = (found_refs, found_presence)
    refs, presence = memo[csn.pretrain_tracks]
    if not refs:
        raise PartsimError("pre-training found no segment with an audible part in its training tracks")
    length = segment_length(data.preset.frontend.sample_rate, data.preset.segment_seconds)
    targets = functools.partial(_all_pretraining_targets, data, csn.pretrain_tracks, networks)
    task = PretrainingTask(data.cache, data.tracks_by_id, refs, targets, torch.cat(presence),
                           data.preset.frontend, csn.width, csn.batch_size, seed, length)
    tracks = data.train_tracks if csn.pretrain_tracks is None else data.train_tracks[:csn.pretrain_tracks]
    config = TrainConfig(
        run_name="csn-pretrain", seed=seed, epochs=epochs or csn.pretrain_epochs,
        steps_per_epoch=task.steps_per_epoch, batch_size=csn.batch_size, lr=csn.lr, device=device,
        model={"architecture": "CSNModel", "n_mels": data.preset.frontend.n_mels, "width": csn.width},
        data={"train": data.fingerprint(tracks), "part_networks": network_keys,
              "frontend": dataclasses.asdict(data.preset.frontend), "segment_seconds": data.preset.segment_seconds,
              "silence_threshold": data.preset.silence_threshold, "segments": len(refs)},
    )
    return task, config


def train_pretraining(data: DatasetHandle, csn: CSNConfig, epochs: int | None = None, device: str = "auto",
                      resume: bool = True, progress: bool = True, seed: int = 0) -> TrainResult:
    """Pre-train (or reuse) the CSN (thesis 4.3.5); condition (b), and the start of (e), (h), (i)."""
    from partsim_core.training import train

    task, config = pretraining_setup(data, csn, epochs=epochs, device=device, seed=seed, progress=progress)
    return train(task, config, kind=CSN_KIND, resume=resume, progress=progress)


# --------------------------------------------------------------------------------------------------------------
# Condition training
# --------------------------------------------------------------------------------------------------------------


def _check_epochs(epochs: int | None) -> None:
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise PartsimError(f"epochs must be a positive integer, got {epochs!r}")


def condition_setup(condition: Condition, data: DatasetHandle, csn: CSNConfig, epochs: int | None = None,
                    device: str = "auto", seed: int = 0, pretrained_dir: Path | None = None) -> tuple[Any, Any]:
    """The :class:`~partsim_core.csn.pseudo_pieces.PseudoTripletTask` and TrainConfig of a trained condition (c)-(i).

    ``pretrained_dir`` (the pre-training's artefact folder) is needed for ``pre`` conditions.
    """
    from partsim_core.data.segments import track_tempo
    from partsim_core.csn.pseudo_pieces import PseudoTripletConfig, PseudoTripletTask
    from partsim_core.training import TrainConfig

    if condition.is_baseline or condition.pretraining_only:
        raise PartsimError(f"condition {condition.row} trains no triplet network")
    if condition.pre and pretrained_dir is None:
        raise PartsimError(f"condition {condition.row} starts from the pre-trained network; pass its folder")
    settings = data.preset
    sampling = PseudoTripletConfig(
        triplets_per_epoch=csn.triplets_per_epoch, batch_size=csn.batch_size, seconds=settings.segment_seconds,
        threshold=settings.silence_threshold, n_tempo_classes=csn.n_tempo_classes, pseudo=condition.psd,
        additional=condition.add, created_silences=condition.psd, validation_triplets=csn.validation_triplets)
    tracks = [*data.train_tracks, *data.validation_tracks]
    tempos = {track.track_id: track_tempo(track) for track in tracks}
    loss_fn = CSNLoss(margin=csn.margin, norm_weight=csn.norm_weight, additional=condition.add,
                      norm=condition.norm)
    factory = functools.partial(build_csn_model, settings.frontend.n_mels, csn.width,
                                str(pretrained_dir) if condition.pre else None)

    def make_task(validation: tuple | None) -> PseudoTripletTask:
        return PseudoTripletTask(data.cache, data.train_tracks, tempos, settings.frontend, sampling, seed,
                                 loss_fn, factory, validation=validation)

    validation = (data.cache, data.validation_tracks) if len(data.validation_tracks) >= 4 else None
    try:
        task = make_task(validation)
    except PartsimError:
        if validation is None:
            raise
        # Too few validation tracks to draw triplets from: train without a validation loss.
        task, validation = make_task(None), None
    config = TrainConfig(
        run_name=condition.run_name, seed=seed, epochs=epochs or csn.epochs, steps_per_epoch=task.steps_per_epoch,
        batch_size=csn.batch_size, lr=csn.lr, device=device,
        model={"architecture": "CSNModel", "n_mels": settings.frontend.n_mels, "width": csn.width,
               "initial": pretrained_dir.name if condition.pre and pretrained_dir is not None else None},
        data={"condition": dataclasses.asdict(condition), "sampling": dataclasses.asdict(sampling),
              "train": data.fingerprint(data.train_tracks),
              "validation": data.fingerprint(data.validation_tracks) if validation is not None else None,
              "frontend": dataclasses.asdict(settings.frontend), "margin": csn.margin,
              "norm_weight": csn.norm_weight},
    )
    return task, config


def train_condition(letter: str, preset: str, data_root: str | os.PathLike = "", device: str = "auto",
                    epochs: int | None = None, resume: bool = True, progress: bool = True, seed: int = 0,
                    data: DatasetHandle | None = None) -> TrainResult:
    """Train (or reuse from the artefact cache) the CSN of condition ``letter`` of Table 4.2.

    (b) is the pre-training itself; (e), (h), (i) train it first when it is not cached (once for all of them).
    ``epochs`` overrides the preset's triplet-training epochs (not the pre-training's). ``resume=False`` retrains
    this condition only (a cached pre-training is reused unless the condition is (b)).

    Used by: ``partsim train csn`` and ``notebooks/ch4_csn_ablations``.

    Raises:
        PartsimError: an unknown condition or preset, condition (a) (the chapter-3 baseline: train it with
            ``partsim train part --input separated``), bad epochs, or a data root without the needed splits.
    """
    from partsim_core.data.dataset import load_dataset
    from partsim_core.training import train

    condition = get_condition(letter)
    settings = get_preset(preset)
    _check_epochs(epochs)
    if condition.is_baseline:
        raise PartsimError("condition (a) is the chapter-3 baseline (per-part networks on separated stems); train "
                           "it with 'partsim train part --input separated' or 'partsim baseline run'")
    data = data or load_dataset(preset, data_root, progress=progress)
    csn = settings.csn
    if condition.pretraining_only:
        return train_pretraining(data, csn, device=device, resume=resume, progress=progress, seed=seed)
    pretrained_dir = None
    if condition.pre:
        pretrained_dir = train_pretraining(data, csn, device=device, resume=True, progress=progress,
                                           seed=seed).out_dir
    task, config = condition_setup(condition, data, csn, epochs=epochs, device=device, seed=seed,
                                   pretrained_dir=pretrained_dir)
    return train(task, config, kind=CSN_KIND, resume=resume, progress=progress)


def train_conditions(letters: str | list[str] = "all", preset: str = "default", **options: Any,
                     ) -> dict[str, TrainResult]:
    """Train every trained condition of ``letters`` (``"all"`` = (b)-(i); (a) needs no CSN) on one dataset load.

    Used by ``partsim train csn --condition all`` and the notebook.
    """
    from partsim_core.data.dataset import load_dataset

    chosen = [c for c in CONDITIONS.values() if not c.is_baseline] if letters == "all" else [
        get_condition(letter) for letter in letters]
    if "data" not in options:
        options["data"] = load_dataset(preset, options.get("data_root", ""),
                                             progress=options.get("progress", True))
    return {c.letter: train_condition(c.letter, preset, **options) for c in chosen if not c.is_baseline}
