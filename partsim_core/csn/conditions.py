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
* **Loss** (:class:`~partsim_core.csn.network.CSNLoss`): masked triplet loss on the basic triplets, plus (``add``) the masked triplet loss
  on (anchor, negative, positive) under the additional condition, averaged over the rows that have one, plus
  (``norm``) ``lambda x`` the norm loss averaged over anchor, positive and negative.
* **Pre-training** (:func:`~partsim_core.csn.pretraining.pretraining_setup`, thesis 4.3.5 and 4.4.1): dataset segments (3 s, 50 % overlap) of
  the first ``csn.pretrain_tracks`` training tracks (thesis: 200) where at least one part sounds; the targets are
  the outputs of five per-part networks on each part's clean segment, with a zero block where that part is silent
  (mean power below the silence threshold) or missing. As thesis 4.4.1 says, the per-part target networks are
  trained (chapter 3's way, on ideal stems) **on the same pre-training pieces** (``targets="pretraining"``, the
  default); ``targets="chapter3"`` uses chapter 3's ideal networks trained on every training track instead (our
  earlier reading, kept as an option). The pre-trained :class:`~partsim_core.csn.network.CSNModel` (its encoder; the pre-training has no
  norm loss, so a ``pre`` condition with the norm loss starts its bias at zero) is trained once per seed and
  cached; every ``pre`` condition starts from its weights, and its artefact key enters theirs.
* **Number of pre-training epochs**: not in the thesis; a preset setting (``csn.pretrain_epochs``).
* **No early stopping**: the thesis trains a fixed number of epochs (4.4.1: 1,000), so the CSN runs every epoch
  of the preset; the validation loss is recorded per epoch, never used to stop.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from partsim_core.csn.network import CSN_KIND, CSNLoss, build_csn_model
from partsim_core.csn.pretraining import train_pretraining
from partsim_core.csn.pseudo_triplet_task import PseudoTripletConfig, PseudoTripletTask
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.segments import track_tempo
from partsim_core.errors import PartsimError
from partsim_core.presets import CSNConfig
from partsim_core.training import (
    TrainConfig,
    TrainResult,
    task_with_optional_validation,
    train,
)

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
# Condition training
# --------------------------------------------------------------------------------------------------------------


def _check_epochs(epochs: int | None) -> None:
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise PartsimError(f"epochs must be a positive integer, got {epochs!r}")


def condition_setup(condition: Condition, data: DatasetHandle, csn: CSNConfig, epochs: int | None = None,
                    device: str = "auto", seed: int = 0, pretrained_dir: Path | None = None) -> tuple[Any, Any]:
    """The :class:`~partsim_core.csn.pseudo_triplet_task.PseudoTripletTask` and TrainConfig of a triplet-trained
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
        batch_size=csn.batch_size, lr=csn.lr, device=device, amp=settings.amp,
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
