"""Chapter 4: the training conditions (a)-(i) of thesis Table 4.2 (plus (j), (k) for Table 4.3) and the CSN
training of each.

Every condition switches five ideas of thesis 4.3 on or off: the norm loss (``norm``, 4.3.4), pseudo musical
pieces (``psd``, 4.3.3), basic triplets (``basic``), additional triplets (``add``) and pre-training (``pre``,
4.3.5). Condition (a) is the chapter-3 baseline (per-part networks on separated stems; nothing is trained here);
(b) is the pre-trained network alone; (c)-(e) train on same-track triplets of dataset pieces (Fig. 4.2); (f)-(i)
on pseudo pieces (Fig. 4.3). Table 4.3's rows need two conditions that are not rows of Table 4.2: (k) = psd +
basic + add ("wo/pre, wo/norm") and (j) = (k) + pre ("w/pre, wo/norm"); (i) is its "w/pre, w/norm" row.

Choices made here, documented because the thesis leaves them open:

* **Created silences** (4.3.4) are part of the training data: every triplet-trained condition, on pseudo pieces
  and on dataset pieces alike (see :mod:`partsim_core.csn.pseudo_pieces`), drops parts to balance each part's
  total sounding time.
* **Loss** (:class:`CSNLoss`): masked triplet loss on the basic triplets, plus (``add``) the masked triplet loss
  on (anchor, negative, positive) under the additional condition, averaged over the rows that have one, plus
  (``norm``) ``lambda x`` the norm loss averaged over anchor, positive and negative.
* **Pre-training** (:func:`pretraining_setup`, thesis 4.3.5 and 4.4.1): dataset segments (3 s, 50 % overlap) of
  the first ``csn.pretrain_tracks`` training tracks (thesis: 200) where at least one part sounds; the targets are
  the outputs of five per-part networks on each part's clean segment, with a zero block where that part is silent
  (mean power below the silence threshold) or missing. As thesis 4.4.1 says, the per-part target networks are
  trained (chapter 3's way, on ideal stems) **on the same pre-training pieces** (``targets="pretraining"``, the
  default); ``targets="chapter3"`` uses chapter 3's ideal networks trained on every training track instead (our
  earlier reading, kept as an option). The pre-trained :class:`CSNModel` (its encoder; the pre-training has no
  norm loss, so a ``pre`` condition with the norm loss starts its bias at zero) is trained once per seed and
  cached; every ``pre`` condition starts from its weights, and its artefact key enters theirs.
* **Number of pre-training epochs**: not in the thesis; a preset setting (``csn.pretrain_epochs``).
* **No early stopping**: the thesis trains a fixed number of epochs (4.4.1: 1,000), so the CSN runs every epoch
  of the preset; the validation loss is recorded per epoch, never used to stop.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from partsim_core import INSTRUMENTS
from partsim_core.baseline.networks import train_part_network
from partsim_core.csn.pseudo_pieces import PseudoTripletConfig, PseudoTripletTask
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.segments import SegmentIndex, segment_length, track_tempo
from partsim_core.embed import embed
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel
from partsim_core.losses import NormLoss, masked_triplet_loss, pretraining_loss
from partsim_core.models import CSNEncoder
from partsim_core.presets import CSNConfig
from partsim_core.training import (
    VALIDATION_SEED_OFFSET,
    TrainConfig,
    TrainResult,
    load_trained,
    task_with_optional_validation,
    train,
)

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


#: Conditions Table 4.3 needs that are not rows of Table 4.2: its first row "wo/pre, wo/norm" is (k) = psd + basic
#: + add (no norm loss, no pre-training); its middle row "w/pre, wo/norm" is (j) = (k) + pre, i.e. (i) without the
#: norm loss. Its last row "w/pre, w/norm" is (i).
EXTRA_CONDITIONS: dict[str, Condition] = {c.letter: c for c in (
    Condition("j", psd=True, basic=True, add=True, pre=True,
              description="Table 4.3 'w/pre, wo/norm': (i) without the norm loss (not a row of Table 4.2)"),
    Condition("k", psd=True, basic=True, add=True,
              description="Table 4.3 'wo/pre, wo/norm': pseudo pieces + basic and additional triplets, no norm "
                          "loss, no pre-training (not a row of Table 4.2)"),
)}

#: Every condition letter: Table 4.2's rows, then the extra ones.
ALL_LETTERS: tuple[str, ...] = (*CONDITIONS, *EXTRA_CONDITIONS)

#: Where the pre-training's per-part target networks come from (see the module docstring).
PRETRAINING_TARGETS: tuple[str, ...] = ("pretraining", "chapter3")


def get_condition(letter: str) -> Condition:
    """The condition of Table 4.2 row ``letter`` (``"i"`` or ``"(i)"``, any case), or an extra one (``j``, ``k``).

    Raises:
        PartsimError: not one of a-k.
    """
    key = str(letter).strip().lower().strip("()")
    known = {**CONDITIONS, **EXTRA_CONDITIONS}
    if key not in known:
        raise PartsimError(f"unknown condition {letter!r}; choose one of: {', '.join(known)}")
    return known[key]


def condition_switches(condition: Condition) -> dict[str, Any]:
    """One condition as plain data: letter, row, the table it belongs to, baseline, the five switches, whether its
    training data has created silences, and the description."""
    return {"letter": condition.letter, "row": condition.row,
            "table": "4.2" if condition.letter in CONDITIONS else "4.3", "baseline": condition.is_baseline,
            **{name: getattr(condition, name) for name in SWITCHES},
            "created_silences": condition.basic and not condition.is_baseline,
            "description": condition.description}


def conditions_table() -> pd.DataFrame:
    """Every condition (Table 4.2's rows and the extra ones) as a table indexed by row label."""
    rows = [condition_switches(c) for c in (*CONDITIONS.values(), *EXTRA_CONDITIONS.values())]
    return pd.DataFrame(rows).drop(columns="letter").set_index("row")


# --------------------------------------------------------------------------------------------------------------
# Model and loss
# --------------------------------------------------------------------------------------------------------------


class CSNModel(nn.Module):
    """:class:`~partsim_core.models.CSNEncoder` plus, when ``norm``, the norm loss's per-instrument bias.

    Keeping :class:`~partsim_core.losses.NormLoss` inside the model puts its bias ``b_j`` (eq. 4.4) into the
    optimizer and the checkpoints. A model trained without the norm loss (the pre-training and conditions (c), (j),
    (k)) has no ``norm_loss`` (None): a parameter that no loss uses would make
    :class:`~torch.nn.parallel.DistributedDataParallel` fail at its second step with more than one process.
    ``forward`` is the encoder's: ``(batch, n_mels, frames) -> (batch, 640)``.

    Loading: a model without the norm loss accepts a state dict that still holds the bias, as checkpoints of those
    runs written before the bias was left out do, when that bias is all zeros (its initial value, which no loss of
    such a run changes); any other bias is reported as an unexpected key.
    """

    def __init__(self, n_mels: int, width: int, norm: bool = True) -> None:
        super().__init__()
        self.encoder = CSNEncoder(n_mels, width=width)
        self.norm_loss: NormLoss | None = NormLoss(self.encoder.n_parts) if norm else None

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(batch, n_parts * subspace_dim)`` of log-mels of mixes."""
        return self.encoder(mel)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "norm_loss.bias"
        if self.norm_loss is None and key in state_dict and not bool(torch.any(state_dict[key] != 0)):
            del state_dict[key]  # an untrained bias of a checkpoint written before it was left out
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def build_csn_model(n_mels: int, width: int, initial_weights: str | None = None, norm: bool = True) -> CSNModel:
    """A fresh :class:`CSNModel` (with the norm loss's bias when ``norm``), its encoder loaded from a finished
    run's folder when ``initial_weights`` is given (the pre-training, which has no norm loss: the bias starts at
    its initial zeros).

    Module-level so that ``functools.partial`` of it is picklable (DataLoader workers).
    """
    model = CSNModel(n_mels, width, norm=norm)
    if initial_weights is not None:
        with torch.random.fork_rng(devices=[]):  # the loading copy's initialisation draws no training randomness
            start = load_trained(Path(initial_weights), CSNModel(n_mels, width, norm=False))
        model.encoder.load_state_dict(start.encoder.state_dict())
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
        """A fresh :class:`CSNModel` without the norm loss (the pre-training does not use it)."""
        return build_csn_model(self.frontend.n_mels, self.width, norm=False)

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
                    with torch.autocast("cpu", enabled=False):
                        mel = self.log_mel(torch.from_numpy(mixes))
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


# --------------------------------------------------------------------------------------------------------------
# Condition training
# --------------------------------------------------------------------------------------------------------------


def _check_epochs(epochs: int | None) -> None:
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise PartsimError(f"epochs must be a positive integer, got {epochs!r}")


def condition_setup(condition: Condition, data: DatasetHandle, csn: CSNConfig, epochs: int | None = None,
                    device: str = "auto", seed: int = 0, pretrained_dir: Path | None = None) -> tuple[Any, Any]:
    """The :class:`~partsim_core.csn.pseudo_pieces.PseudoTripletTask` and TrainConfig of a triplet-trained
    condition ((c)-(k)); ``pretrained_dir`` (the pre-training's artefact folder) is needed for ``pre`` ones."""
    if condition.is_baseline or condition.pretraining_only:
        raise PartsimError(f"condition {condition.row} trains no triplet network")
    if condition.pre and pretrained_dir is None:
        raise PartsimError(f"condition {condition.row} starts from the pre-trained network; pass its folder")
    settings = data.preset
    sampling = PseudoTripletConfig(
        triplets_per_epoch=csn.triplets_per_epoch, batch_size=csn.batch_size, seconds=settings.segment_seconds,
        threshold=settings.silence_threshold, n_tempo_classes=csn.n_tempo_classes, pseudo=condition.psd,
        additional=condition.add, created_silences=True, validation_triplets=csn.validation_triplets)
    tracks = [*data.train_tracks, *data.validation_tracks]
    tempos = {track.track_id: track_tempo(track) for track in tracks}
    loss_fn = CSNLoss(margin=csn.margin, norm_weight=csn.norm_weight, additional=condition.add,
                      norm=condition.norm)
    factory = functools.partial(build_csn_model, settings.frontend.n_mels, csn.width,
                                str(pretrained_dir) if condition.pre else None, condition.norm)

    def make_task(validation: tuple | None) -> PseudoTripletTask:
        return PseudoTripletTask(data.cache, data.train_tracks, tempos, settings.frontend, sampling, seed,
                                 loss_fn, factory, validation=validation)

    validation = (data.cache, data.validation_tracks) if len(data.validation_tracks) >= 4 else None
    task, validation = task_with_optional_validation(make_task, validation)
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


def train_condition(letter: str, data: DatasetHandle, device: str = "auto", epochs: int | None = None,
                    resume: bool = True, progress: bool = True, seed: int = 0, targets: str = "pretraining",
                    ) -> TrainResult:
    """Train (or reuse from the artefact cache) the CSN of condition ``letter``.

    (b) is the pre-training itself; (e), (h), (i), (j) train it first when it is not cached (once per seed for all
    of them). ``epochs`` overrides the preset's triplet-training epochs (not the pre-training's). ``resume=False``
    retrains this condition only (a cached pre-training is reused unless the condition is (b)).

    Args:
        letter: a condition letter (``b``-``k``).
        data: the dataset handle (:func:`partsim_core.data.dataset.load_dataset`).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        epochs: triplet-training epochs (``None`` = the preset's).
        resume: reuse / resume (``False`` = start this condition over).
        progress: progress bars.
        seed: seed of the training (and of the pre-training it starts from).
        targets: the pre-training's target networks (:data:`PRETRAINING_TARGETS`).

    Raises:
        PartsimError: an unknown condition, condition (a) (the chapter-3 baseline: train it with
            ``partsim train part --input separated``), bad epochs or targets.
    """
    condition = get_condition(letter)
    _check_epochs(epochs)
    if condition.is_baseline:
        raise PartsimError("condition (a) is the chapter-3 baseline (per-part networks on separated stems); train "
                           "it with 'partsim train part --input separated' or 'partsim baseline run'")
    csn = data.preset.csn
    if condition.pretraining_only:
        return train_pretraining(data, csn, device=device, resume=resume, progress=progress, seed=seed,
                                 targets=targets)
    pretrained_dir = None
    if condition.pre:
        pretrained_dir = train_pretraining(data, csn, device=device, resume=True, progress=progress, seed=seed,
                                           targets=targets).out_dir
    task, config = condition_setup(condition, data, csn, epochs=epochs, device=device, seed=seed,
                                   pretrained_dir=pretrained_dir)
    return train(task, config, kind=CSN_KIND, resume=resume, progress=progress)
