"""Chapter-4 losses (thesis eq. 4.1-4.7) against hand-worked values on tiny tensors and torch references."""

from __future__ import annotations

import math

import pytest
import torch

from partsim_core.errors import PartsimError
from partsim_core.losses import (
    NORM_LOG_EPSILON,
    NormLoss,
    masked_triplet_loss,
    norm_targets,
    pretraining_loss,
    pretraining_target,
    subspace_norms,
    triplet_loss,
)

# ---- masked triplet loss (eq. 4.1-4.2) ---------------------------------------------------------------------------

def test_masked_triplet_loss_uses_each_rows_own_subspace():
    # 2 parts of 2 dims. Row 0 under condition 0 sees dims 0-1, row 1 under condition 1 sees dims 2-3.
    anchor = torch.tensor([[0.0, 0.0, 9.0, 9.0], [7.0, 7.0, 1.0, 1.0]])
    positive = torch.tensor([[3.0, 4.0, 9.0, 9.0], [0.0, 0.0, 1.0, 1.0]])   # d_ap: 5 (row 0), 0 (row 1)
    negative = torch.tensor([[0.0, 1.0, -5.0, 0.0], [7.0, 7.0, 4.0, 5.0]])  # d_an: 1 (row 0), 5 (row 1)
    condition = torch.tensor([0, 1])
    # row 0: max(0, 5 - 1 + 0.2) = 4.2; row 1: max(0, 0 - 5 + 0.2) = 0 -> mean 2.1 (the other dims are ignored)
    loss = masked_triplet_loss(anchor, positive, negative, condition, margin=0.2, n_parts=2)
    assert loss.item() == pytest.approx(2.1)
    # Swapping the conditions: row 0 in dims 2-3: d_ap 0, d_an sqrt(14^2 + 9^2); row 1 in dims 0-1: d_ap sqrt(98),
    # d_an 0 -> (0 + sqrt(98) + 0.2) / 2
    swapped = masked_triplet_loss(anchor, positive, negative, torch.tensor([1, 0]), margin=0.2, n_parts=2)
    assert swapped.item() == pytest.approx((math.sqrt(98) + 0.2) / 2)


def test_masked_triplet_loss_equals_triplet_loss_on_the_multiplied_masks():
    # eq. 4.1 multiplies by m_c; with one condition for the whole batch that is the plain triplet loss of the
    # masked embeddings (the chapter-3 function, which is checked against torch's in test_losses.py).
    generator = torch.Generator().manual_seed(2)
    anchor, positive, negative = (torch.randn(6, 640, generator=generator) for _ in range(3))
    mask = torch.zeros(640)
    mask[384:512] = 1.0   # guitar
    expected = triplet_loss(anchor * mask, positive * mask, negative * mask, margin=0.2)
    got = masked_triplet_loss(anchor, positive, negative, torch.full((6,), 3), margin=0.2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_masked_triplet_loss_gradient_stays_inside_the_conditioned_subspace():
    anchor = torch.randn(2, 640, requires_grad=True)
    loss = masked_triplet_loss(anchor, torch.randn(2, 640), torch.randn(2, 640), torch.tensor([0, 2]), margin=100.0)
    loss.backward()
    assert anchor.grad[0, :128].abs().sum() > 0 and anchor.grad[0, 128:].abs().sum() == 0
    assert anchor.grad[1, 256:384].abs().sum() > 0
    assert anchor.grad[1, :256].abs().sum() == 0 and anchor.grad[1, 384:].abs().sum() == 0


@pytest.mark.parametrize("condition, margin", [
    (torch.tensor([0, 5]), 0.2), (torch.tensor([-1, 0]), 0.2), (torch.tensor([0.0, 1.0]), 0.2),
    (torch.tensor([0]), 0.2), (torch.tensor([0, 1]), -0.5), (torch.tensor([0, 1]), float("nan")),
])
def test_masked_triplet_loss_refuses_bad_conditions_and_margins(condition, margin):
    embeddings = [torch.zeros(2, 640) for _ in range(3)]
    with pytest.raises(PartsimError, match="masked_triplet_loss"):
        masked_triplet_loss(*embeddings, condition=condition, margin=margin)


def test_masked_triplet_loss_refuses_mismatched_embeddings():
    with pytest.raises(PartsimError, match="one shape"):
        masked_triplet_loss(torch.zeros(2, 640), torch.zeros(2, 640), torch.zeros(2, 635), torch.tensor([0, 1]))
    with pytest.raises(PartsimError, match="subspace_dim"):
        masked_triplet_loss(*(torch.zeros(2, 7) for _ in range(3)), condition=torch.tensor([0, 1]))


# ---- norm targets and norm loss (eq. 4.4-4.6) ------------------------------------------------------------------

def test_norm_targets_threshold_the_mean_power():
    powers = torch.tensor([[0.0, 1e-4, 1.1e-4, 0.5, 1e-9]])
    # strictly above 1e-4 counts as present (eq. 4.5: P_avg > threshold)
    assert norm_targets(powers).tolist() == [[0.0, 0.0, 1.0, 1.0, 0.0]]
    assert norm_targets(powers, threshold=0.0).tolist() == [[0.0, 1.0, 1.0, 1.0, 1.0]]
    for bad in (torch.tensor([[float("nan"), 0.0]]), torch.tensor([[-1.0, 0.0]]), torch.zeros(5)):
        with pytest.raises(PartsimError, match="norm_targets"):
            norm_targets(bad)


def test_subspace_norms_by_hand():
    embedding = torch.tensor([[3.0, 4.0, 0.0, 0.0, 1.0, 0.0]])   # 3 parts of 2 dims
    assert subspace_norms(embedding, n_parts=3).tolist() == [[5.0, 0.0, 1.0]]


def test_norm_loss_matches_a_hand_computation():
    # 2 parts of 2 dims, bias (0, 0): norms 5 and 1 -> logits log 5 and log 1 = 0 -> p = 5/6 and 1/2.
    # Targets (1, 0): BCE = -(log(5/6) + log(1/2)) / 2.
    loss_fn = NormLoss(n_parts=2, eps=1e-12)
    embedding = torch.tensor([[3.0, 4.0, 1.0, 0.0]])
    loss = loss_fn(embedding, torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-(math.log(5 / 6) + math.log(1 / 2)) / 2, rel=1e-6)
    # With bias (log 2, -log 3): p = sigmoid(log 10) = 10/11 and sigmoid(-log 3) = 1/4.
    with torch.no_grad():
        loss_fn.bias.copy_(torch.tensor([math.log(2.0), -math.log(3.0)]))
    loss = loss_fn(embedding, torch.tensor([[1.0, 0.0]]))
    assert loss.item() == pytest.approx(-(math.log(10 / 11) + math.log(3 / 4)) / 2, rel=1e-6)


def test_norm_loss_equals_torch_bce_on_the_eq_4_4_probabilities():
    generator = torch.Generator().manual_seed(4)
    embedding = torch.randn(8, 640, generator=generator)
    present = (torch.rand(8, 5, generator=generator) > 0.5).float()
    loss_fn = NormLoss()
    with torch.no_grad():
        loss_fn.bias.copy_(torch.tensor([0.3, -0.2, 1.0, 0.0, -1.5]))
    norms = embedding.reshape(8, 5, 128).norm(dim=-1)
    probabilities = torch.sigmoid(torch.log(norms + NORM_LOG_EPSILON) + loss_fn.bias.detach())
    expected = torch.nn.BCELoss()(probabilities, present)
    assert loss_fn(embedding, present).item() == pytest.approx(expected.item(), rel=1e-5)


def test_norm_loss_gradient_reaches_the_bias_and_the_embedding():
    loss_fn = NormLoss()
    embedding = torch.randn(4, 640, requires_grad=True)
    present = torch.tensor([[1.0, 0, 0, 1, 0]] * 4)
    loss_fn(embedding, present).backward()
    assert loss_fn.bias.grad is not None and loss_fn.bias.grad.shape == (5,)
    assert (loss_fn.bias.grad != 0).all()
    # d BCE / d logit_j = (p_j - q_j) / (B * 5) summed over rows: negative where present, positive where absent
    assert (loss_fn.bias.grad[[0, 3]] < 0).all() and (loss_fn.bias.grad[[1, 2, 4]] > 0).all()
    assert torch.isfinite(embedding.grad).all() and embedding.grad.abs().sum() > 0
    assert list(dict(loss_fn.named_parameters())) == ["bias"]


def test_eps_keeps_all_zero_subspaces_finite():
    loss_fn = NormLoss()
    embedding = torch.zeros(2, 640, requires_grad=True)
    absent = loss_fn(embedding, torch.zeros(2, 5))
    present = loss_fn(embedding, torch.ones(2, 5))
    (absent + present).backward()
    # logit = log(1e-6) ~ -13.8: absent parts cost ~ log(1 + 1e-6) ~ 1e-6, present ones ~ 13.8.
    assert absent.item() == pytest.approx(math.log1p(1e-6), abs=1e-7)  # float32 rounding
    assert present.item() == pytest.approx(-math.log(1e-6 / (1 + 1e-6)), rel=1e-4)
    assert torch.isfinite(embedding.grad).all() and torch.isfinite(loss_fn.bias.grad).all()


def test_norm_loss_refuses_bad_shapes_and_targets():
    loss_fn = NormLoss()
    with pytest.raises(PartsimError, match="presence"):
        loss_fn(torch.zeros(2, 640), torch.zeros(2, 4))
    with pytest.raises(PartsimError, match="0 or 1"):
        loss_fn(torch.zeros(2, 640), torch.full((2, 5), 0.5))
    with pytest.raises(PartsimError, match="NormLoss"):
        loss_fn(torch.zeros(2, 641), torch.zeros(2, 5))
    with pytest.raises(PartsimError):
        NormLoss(eps=0.0)


# ---- pre-training (eq. 4.7) ------------------------------------------------------------------------------------

def test_pretraining_target_zeroes_absent_parts_and_normalises_the_concatenation():
    parts = torch.tensor([[[3.0, 0.0], [5.0, 5.0], [0.0, 4.0]]])   # 3 parts of 2 dims
    present = torch.tensor([[1.0, 0.0, 1.0]])
    # y = (3, 0, 0, 0, 0, 4), ||y|| = 5 -> (0.6, 0, 0, 0, 0, 0.8)
    target = pretraining_target(parts, present)
    assert torch.allclose(target, torch.tensor([[0.6, 0.0, 0.0, 0.0, 0.0, 0.8]]))
    # Nothing present: stays the zero vector (no NaN).
    assert pretraining_target(parts, torch.zeros(1, 3)).tolist() == [[0.0] * 6]


def test_pretraining_loss_is_the_mse_over_dims_and_batch():
    parts = torch.tensor([[[3.0, 0.0], [5.0, 5.0], [0.0, 4.0]],
                          [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    present = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    # targets: row 0 (0.6, 0, 0, 0, 0, 0.8); row 1 (1, 0, 0, 0, 0, 0)
    embedding = torch.tensor([[0.6, 0.0, 1.0, 0.0, 0.0, 0.8], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    # squared errors: row 0 -> 1 (dim 2); row 1 -> 1 (dim 0); mean over 12 values = 2 / 12
    loss = pretraining_loss(embedding, parts, present)
    assert loss.item() == pytest.approx(2 / 12)
    loss.backward()
    assert embedding.grad[0, 2].item() == pytest.approx(2 * 1.0 / 12)
    assert embedding.grad[1, 0].item() == pytest.approx(2 * -1.0 / 12)


def test_pretraining_target_carries_no_gradient_to_the_part_networks():
    parts = torch.randn(2, 5, 128, requires_grad=True)
    embedding = torch.randn(2, 640, requires_grad=True)
    pretraining_loss(embedding, parts, torch.ones(2, 5)).backward()
    assert parts.grad is None and embedding.grad is not None


def test_pretraining_refuses_mismatches_and_nan():
    with pytest.raises(PartsimError, match="does not match"):
        pretraining_loss(torch.zeros(2, 640), torch.zeros(2, 5, 64), torch.ones(2, 5))
    with pytest.raises(PartsimError, match="presence"):
        pretraining_loss(torch.zeros(2, 640), torch.zeros(2, 5, 128), torch.ones(2, 4))
    with pytest.raises(PartsimError, match="NaN"):
        pretraining_target(torch.full((1, 5, 128), float("nan")), torch.ones(1, 5))
