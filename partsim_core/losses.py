"""Loss functions of the metric-learning models.

Chapter 3 (thesis 3.2.2, 3.3.1) trains every per-part network with the triplet loss below; chapter 4 reuses it for
its pre-training targets. Chapter 4 (thesis 4.3) adds, in its own section at the end, the masked triplet loss,
the norm loss and the pre-training loss of the CSN.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from partsim_core.errors import PartsimError


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.2
) -> torch.Tensor:
    """Triplet margin loss with Euclidean distances, averaged over the batch.

    ``mean_i max(0, ||a_i - p_i|| - ||a_i - n_i|| + margin)`` (thesis eq. 2.1; margin 0.2 in 3.3.1). Unlike
    :func:`torch.nn.functional.triplet_margin_loss` no epsilon is added to the differences, so the value equals
    the formula exactly; the gradient of the norm at a zero difference is 0 in torch, so identical anchor and
    positive do not produce NaN. Used by the chapter-3 ``TripletTask`` and chapter 4's pre-training.

    Args:
        anchor: Embeddings ``(batch, dim)``.
        positive: Embeddings of the same shape (same track and part as the anchor).
        negative: Embeddings of the same shape (another track).
        margin: Non-negative margin.

    Returns:
        A scalar tensor.

    Raises:
        PartsimError: shapes differ, are not 2-D, or the margin is negative or not finite.
    """
    if not (anchor.shape == positive.shape == negative.shape) or anchor.dim() != 2:
        raise PartsimError(
            "triplet_loss needs three (batch, dim) tensors of one shape, got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
        )
    if not math.isfinite(margin) or margin < 0:
        raise PartsimError(f"triplet_loss margin must be a finite number >= 0, got {margin!r}")
    positive_distance = torch.linalg.vector_norm(anchor - positive, dim=-1)
    negative_distance = torch.linalg.vector_norm(anchor - negative, dim=-1)
    return torch.relu(positive_distance - negative_distance + margin).mean()


# ==============================================================================================================
# Chapter 4: losses of the CSN (thesis 4.3.2, 4.3.4, 4.3.5)
# ==============================================================================================================

#: Added to a subspace norm before its logarithm (eq. 4.4) so that an all-zero subspace gives a finite loss.
NORM_LOG_EPSILON = 1e-6


def _check_parts_embedding(embedding: torch.Tensor, n_parts: int, caller: str) -> None:
    """Refuse anything but a ``(batch, n_parts * D)`` tensor."""
    if embedding.dim() != 2 or embedding.shape[1] == 0 or embedding.shape[1] % n_parts:
        raise PartsimError(f"{caller} needs (batch, {n_parts} x subspace_dim) embeddings, got "
                           f"{tuple(embedding.shape)}")


def _check_presence(present: torch.Tensor, batch: int, n_parts: int, caller: str) -> None:
    """Refuse a presence matrix of the wrong shape or with values other than 0 and 1."""
    if present.shape != (batch, n_parts):
        raise PartsimError(f"{caller} needs a ({batch}, {n_parts}) presence matrix, got {tuple(present.shape)}")
    if not bool(((present == 0) | (present == 1)).all()):
        raise PartsimError(f"{caller} presence values must be 0 or 1, got {present.unique().tolist()}")


def subspace_norms(embedding: torch.Tensor, n_parts: int = 5) -> torch.Tensor:
    """``||f(x_i) m_j||_2`` for every row and subspace: ``(batch, n_parts * D)`` -> ``(batch, n_parts)``.
    """
    _check_parts_embedding(embedding, n_parts, "subspace_norms")
    return torch.linalg.vector_norm(embedding.reshape(embedding.shape[0], n_parts, -1), dim=-1)


def masked_triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, condition: torch.Tensor,
    margin: float = 0.2, n_parts: int = 5,
) -> torch.Tensor:
    """Triplet loss of a conditional similarity network (thesis eq. 4.1-4.2), averaged over the batch.

    ``mean_i max(0, ||(a_i - p_i) m_{c_i}|| - ||(a_i - n_i) m_{c_i}|| + margin)``: row ``i`` compares the three
    embeddings only inside the subspace of its own condition ``c_i`` (an instrument index, INSTRUMENTS order),
    with Euclidean distance and margin 0.2 (4.4.1). As :func:`triplet_loss`, no epsilon is added, and a zero
    difference has gradient 0 in torch. Used by chapter 4's CSN training (basic and additional triplets).

    Args:
        anchor: Embeddings ``(batch, n_parts * D)`` (e.g. :class:`~partsim_core.models.CSNEncoder` outputs).
        positive: Same shape.
        negative: Same shape.
        condition: Integer tensor ``(batch,)`` of subspace indices in ``[0, n_parts)``.
        margin: Non-negative margin ``delta``.
        n_parts: Number of subspaces.

    Returns:
        A scalar tensor.

    Raises:
        PartsimError: mismatched shapes, a non-integer or out-of-range condition, or a bad margin.
    """
    if not (anchor.shape == positive.shape == negative.shape):
        raise PartsimError("masked_triplet_loss needs three embeddings of one shape, got "
                           f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}")
    _check_parts_embedding(anchor, n_parts, "masked_triplet_loss")
    if condition.shape != (anchor.shape[0],) or condition.dtype.is_floating_point or condition.dtype == torch.bool:
        raise PartsimError(f"masked_triplet_loss condition must be an integer tensor ({anchor.shape[0]},), got "
                           f"{condition.dtype} {tuple(condition.shape)}")
    if condition.numel() and (int(condition.min()) < 0 or int(condition.max()) >= n_parts):
        raise PartsimError(f"masked_triplet_loss condition values must lie in [0, {n_parts}), got "
                           f"{condition.unique().tolist()}")
    if not math.isfinite(margin) or margin < 0:
        raise PartsimError(f"masked_triplet_loss margin must be a finite number >= 0, got {margin!r}")
    batch = anchor.shape[0]
    rows = torch.arange(batch, device=anchor.device)
    chosen = condition.to(anchor.device).long()

    def subspace(embedding: torch.Tensor) -> torch.Tensor:
        # Selecting the subspace equals multiplying by m_c (zeros add nothing to the norm) and is cheaper.
        return embedding.reshape(batch, n_parts, -1)[rows, chosen]

    anchor_part, positive_part, negative_part = subspace(anchor), subspace(positive), subspace(negative)
    positive_distance = torch.linalg.vector_norm(anchor_part - positive_part, dim=-1)
    negative_distance = torch.linalg.vector_norm(anchor_part - negative_part, dim=-1)
    return torch.relu(positive_distance - negative_distance + margin).mean()


def norm_targets(part_powers: torch.Tensor, threshold: float = 1e-4) -> torch.Tensor:
    """Presence targets ``q_ij`` of the norm loss (thesis eq. 4.5): 1 where part ``j``'s clean signal in input
    ``i`` has mean power above ``threshold`` (the silence threshold of chapter 3), else 0.

    Args:
        part_powers: ``(batch, n_parts)`` mean powers ``P_avg(x_ij)`` of the parts' clean signals.
        threshold: Mean power at or below which a part counts as absent.

    Returns:
        A float tensor of 0s and 1s, shape of ``part_powers``.

    Raises:
        PartsimError: not 2-D, NaN/negative powers, or a bad threshold.
    """
    if part_powers.dim() != 2:
        raise PartsimError(f"norm_targets needs (batch, n_parts) powers, got {tuple(part_powers.shape)}")
    if not bool(torch.isfinite(part_powers).all()) or bool((part_powers < 0).any()):
        raise PartsimError("norm_targets part powers must be finite and non-negative")
    if not math.isfinite(threshold) or threshold < 0:
        raise PartsimError(f"norm_targets threshold must be a finite number >= 0, got {threshold!r}")
    return (part_powers > threshold).float()


class NormLoss(nn.Module):
    """Norm loss of thesis 4.3.4 (eq. 4.4-4.6): drives the subspaces of absent parts towards the zero vector.

    ``p_ij = sigmoid(log(||f(x_i) m_j||_2 + eps) + b_j)`` with one learnable bias ``b_j`` per instrument
    (initialised to 0), and the binary cross entropy between ``p_i`` and the presence targets ``q_i``
    (:func:`norm_targets`), averaged over the five parts and the batch. The thesis also averages over anchor,
    positive and negative: the caller does that (call once per role, or on the three concatenated). ``eps``
    (:data:`NORM_LOG_EPSILON`) keeps an all-zero subspace finite: ``log(eps) + b`` is a large negative logit,
    and the BCE is computed from logits (``binary_cross_entropy_with_logits``), which never takes ``log(0)``.
    Total loss of chapter 4: triplet + 0.1 x norm.

    Args:
        n_parts: Number of subspaces / biases.
        eps: Added to the norm before the logarithm.

    Raises:
        PartsimError: a non-positive ``n_parts`` or ``eps``.
    """

    def __init__(self, n_parts: int = 5, eps: float = NORM_LOG_EPSILON) -> None:
        super().__init__()
        if isinstance(n_parts, bool) or not isinstance(n_parts, int) or n_parts <= 0:
            raise PartsimError(f"NormLoss n_parts must be a positive integer, got {n_parts!r}")
        if not math.isfinite(eps) or eps <= 0:
            raise PartsimError(f"NormLoss eps must be a finite number > 0, got {eps!r}")
        self.n_parts = n_parts
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(n_parts))

    def extra_repr(self) -> str:
        return f"n_parts={self.n_parts}, eps={self.eps}"

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """``log(||f(x_i) m_j|| + eps) + b_j``, shape ``(batch, n_parts)``; its sigmoid is ``p_ij`` (eq. 4.4)."""
        return torch.log(subspace_norms(embedding, self.n_parts) + self.eps) + self.bias

    def forward(self, embedding: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """BCE of eq. 4.6 between presence probabilities and targets, averaged over parts and batch.

        Args:
            embedding: ``(batch, n_parts * D)`` un-normalised CSN outputs.
            present: ``(batch, n_parts)`` float targets, 0 or 1 (:func:`norm_targets`).

        Returns:
            A scalar tensor.

        Raises:
            PartsimError: wrong shapes or target values.
        """
        _check_parts_embedding(embedding, self.n_parts, "NormLoss")
        _check_presence(present, embedding.shape[0], self.n_parts, "NormLoss")
        logits = self.logits(embedding)
        return nn.functional.binary_cross_entropy_with_logits(logits, present.to(logits.dtype))


def pretraining_target(target_parts: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Pre-training target ``y_i / ||y_i||`` of thesis eq. 4.7: ``(batch, n_parts, D)`` -> ``(batch, n_parts * D)``.

    ``y_i`` concatenates the per-part networks' outputs ``g_j(x_ij)`` on the ideal stems (INSTRUMENTS order),
    with a zero block where part ``j`` is absent; the concatenation is L2-normalised over all its dimensions. A row
    with no part present stays all zero (nothing to normalise).

    Raises:
        PartsimError: wrong shapes, non-finite values, or presence values other than 0/1.
    """
    if target_parts.dim() != 3:
        raise PartsimError(f"pretraining_target needs (batch, n_parts, dim) part embeddings, got "
                           f"{tuple(target_parts.shape)}")
    batch, n_parts, _ = target_parts.shape
    _check_presence(present, batch, n_parts, "pretraining_target")
    if not bool(torch.isfinite(target_parts).all()):
        raise PartsimError("pretraining_target part embeddings contain NaN or infinite values")
    concatenated = (target_parts * present.to(target_parts.dtype).unsqueeze(-1)).reshape(batch, -1)
    return nn.functional.normalize(concatenated, p=2.0, dim=1, eps=1e-12)


def pretraining_loss(embedding: torch.Tensor, target_parts: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Pre-training loss of thesis 4.3.5: MSE between the CSN output and :func:`pretraining_target`.

    ``torch.nn.MSELoss`` (the thesis names it) with its default mean: the squared error averaged over the
    ``n_parts * D`` dimensions and the mini-batch. The target carries no gradient (the per-part networks are fixed).

    Args:
        embedding: ``(batch, n_parts * D)`` CSN outputs.
        target_parts: ``(batch, n_parts, D)`` per-part network outputs on the ideal stems.
        present: ``(batch, n_parts)`` 0/1 presence of each part (absent -> zero block).

    Returns:
        A scalar tensor.

    Raises:
        PartsimError: shapes that do not match.
    """
    target = pretraining_target(target_parts.detach(), present)
    if embedding.shape != target.shape:
        raise PartsimError(f"pretraining_loss embedding shape {tuple(embedding.shape)} does not match the target "
                           f"{tuple(target.shape)}")
    return nn.functional.mse_loss(embedding, target.to(embedding.dtype))
