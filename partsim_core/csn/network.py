"""Chapter 4's network and loss: :class:`CSNModel` (the encoder of :mod:`partsim_core.models` plus the norm
loss's bias), :func:`build_csn_model` (optionally started from a finished run, e.g. the pre-training) and
:class:`CSNLoss` (masked triplet loss on basic and additional triplets plus the norm loss, thesis 4.3).

Used by :mod:`partsim_core.csn.pretraining` and :mod:`partsim_core.csn.conditions`; the conditions' choices are
documented there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from partsim_core.errors import PartsimError
from partsim_core.losses import NormLoss, masked_triplet_loss
from partsim_core.models import CSNEncoder
from partsim_core.training_artefacts import load_trained

#: Artefact kind (folder under ``cache_root()/models``) of the CSN runs.
CSN_KIND = "csn"


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
    """The CSN's training loss for a batch of a :class:`~partsim_core.csn.pseudo_triplet_task.PseudoTripletTask`
    (picklable).

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
