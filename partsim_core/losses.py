"""Loss functions of the metric-learning models.

Chapter 3 (thesis 3.2.2, 3.3.1) trains every per-part network with the triplet loss below; chapter 4 reuses it for
its pre-training targets.
"""

from __future__ import annotations

import math

import torch

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
