"""Triplet loss (thesis eq. 2.1) against hand-worked values and torch's own implementation."""

from __future__ import annotations

import pytest
import torch

from partsim_core.errors import PartsimError
from partsim_core.losses import triplet_loss


def test_triplet_loss_matches_hand_computation() -> None:
    anchor = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    positive = torch.tensor([[3.0, 4.0], [1.0, 1.0]])  # distances 5 and 0
    negative = torch.tensor([[0.0, 1.0], [4.0, 5.0]])  # distances 1 and 5
    # row 0: max(0, 5 - 1 + 0.2) = 4.2; row 1: max(0, 0 - 5 + 0.2) = 0; mean = 2.1
    assert triplet_loss(anchor, positive, negative, margin=0.2).item() == pytest.approx(2.1)
    # margin 1.0: rows 5.0 and 0 -> 2.5
    assert triplet_loss(anchor, positive, negative, margin=1.0).item() == pytest.approx(2.5)


def test_triplet_loss_equals_torch_reference_without_epsilon() -> None:
    generator = torch.Generator().manual_seed(3)
    anchor, positive, negative = (torch.randn(16, 8, generator=generator) for _ in range(3))
    expected = torch.nn.functional.triplet_margin_loss(anchor, positive, negative, margin=0.2, p=2, eps=0.0)
    assert torch.allclose(triplet_loss(anchor, positive, negative), expected, atol=1e-6)


def test_identical_anchor_and_positive_give_finite_gradient() -> None:
    anchor = torch.ones(3, 4, requires_grad=True)
    loss = triplet_loss(anchor, anchor.detach().clone(), torch.ones(3, 4) * 1.05)
    loss.backward()
    # d_ap = 0, d_an = 0.1 -> 0 - 0.1 + 0.2 = 0.1 per row
    assert loss.item() == pytest.approx(0.1, abs=1e-6)
    assert torch.isfinite(anchor.grad).all()


@pytest.mark.parametrize(
    ("shapes", "margin"),
    [(((2, 3), (2, 3), (2, 4)), 0.2), (((6,), (6,), (6,)), 0.2), (((2, 3), (2, 3), (2, 3)), -0.1)],
)
def test_bad_input_is_refused(shapes: tuple, margin: float) -> None:
    tensors = [torch.zeros(shape) for shape in shapes]
    with pytest.raises(PartsimError):
        triplet_loss(*tensors, margin=margin)
