"""CSNEncoder and subspace masks (chapter 4, thesis Fig. 4.6 and eq. 4.3): sizes worked out by hand, shapes,
masks, learning of two differentiated subspaces."""

from __future__ import annotations

import pytest
import torch

from partsim_core.errors import PartsimError
from partsim_core.losses import masked_triplet_loss
from partsim_core.models import CSNEncoder, masked, subspace_mask


def test_parameter_count_matches_the_documented_layer_sizes():
    # width 16: blocks of 16, 32, 64, 128, 256 channels, two bias-free 3x3 convs per block, batch norm after each
    # conv (weight + bias). 96 mels pooled 5 times (ceil): 48, 24, 12, 6, 3 rows -> FC (256 * 3) -> 640 + bias.
    convolutions = 9 * (1 * 16 + 16 * 16 + 16 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128
                        + 128 * 256 + 256 * 256)
    batch_norms = 2 * 2 * (16 + 32 + 64 + 128 + 256)
    projection = 256 * 3 * 640 + 640
    model = CSNEncoder(n_mels=96, width=16)
    assert model.frequency_rows == 3
    assert model.projection.in_features == 768 and model.projection.out_features == 640
    assert sum(p.numel() for p in model.parameters()) == convolutions + batch_norms + projection == 1671632


def test_ten_convolutions_with_batch_norm_and_relu_and_a_pooling_after_every_two():
    model = CSNEncoder(n_mels=64, width=4)
    kinds = [type(layer).__name__ for layer in model.features.modules()
             if isinstance(layer, (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.MaxPool2d))]
    block = ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert kinds == block * 5
    assert all(layer.kernel_size == (3, 3) for layer in model.features.modules()
               if isinstance(layer, torch.nn.Conv2d))
    assert [layer.out_channels for layer in model.features.modules() if isinstance(layer, torch.nn.Conv2d)] == \
        [4, 4, 8, 8, 16, 16, 32, 32, 64, 64]


@pytest.mark.parametrize("frames", [1, 7, 44, 130])
def test_any_frame_count_gives_unnormalised_640_d_embeddings(frames):
    torch.manual_seed(0)
    model = CSNEncoder(n_mels=32, width=4).eval()
    with torch.no_grad():
        embedding = model(torch.rand(3, 32, frames))
    assert embedding.shape == (3, 640)
    assert torch.isfinite(embedding).all()
    # Not projected onto the unit sphere: the norm loss needs free norms.
    assert not torch.allclose(embedding.norm(dim=1), torch.ones(3), atol=1e-3)
    assert model.subspaces(embedding).shape == (3, 5, 128)
    assert torch.equal(model.subspaces(embedding)[:, 2], embedding[:, 256:384])


def test_four_dimensional_input_equals_three_dimensional_and_eval_is_batch_independent():
    torch.manual_seed(1)
    model = CSNEncoder(n_mels=16, width=2).eval()
    mel = torch.rand(4, 16, 20)
    with torch.no_grad():
        batched = model(mel)
        assert torch.allclose(model(mel.unsqueeze(1)), batched, atol=1e-6)
        assert torch.allclose(model(mel[2:3]), batched[2:3], atol=1e-5)


def test_same_seed_same_initial_weights():
    torch.manual_seed(5)
    first = CSNEncoder(n_mels=16, width=2)
    torch.manual_seed(5)
    second = CSNEncoder(n_mels=16, width=2)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def test_bad_shapes_and_sizes_are_refused():
    model = CSNEncoder(n_mels=16, width=2)
    for bad in (torch.rand(2, 15, 10), torch.rand(2, 2, 16, 10), torch.rand(16, 10), torch.rand(2, 16, 0)):
        with pytest.raises(PartsimError, match="CSNEncoder"):
            model(bad)
    for kwargs in ({"n_mels": 0}, {"n_mels": 16, "width": -1}, {"n_mels": 16, "subspace_dim": 2.5},
                   {"n_mels": 16, "n_parts": True}):
        with pytest.raises(PartsimError):
            CSNEncoder(**kwargs)


def test_subspace_mask_is_eq_4_3():
    mask = subspace_mask(1)
    assert mask.shape == (640,)
    assert mask[:128].sum() == 0 and mask[128:256].sum() == 128 and mask[256:].sum() == 0
    # Tiny case written out: 3 parts of 2 dims, part 2 -> [0, 0, 0, 0, 1, 1].
    assert subspace_mask(2, n_parts=3, dim=2).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    # The five masks tile the embedding exactly once.
    assert torch.equal(sum(subspace_mask(c) for c in range(5)), torch.ones(640))
    for bad in (-1, 5, 1.0, True):
        with pytest.raises(PartsimError, match="part_index"):
            subspace_mask(bad)


def test_masked_keeps_only_the_chosen_subspace():
    embedding = torch.arange(1.0, 7.0).reshape(1, 6)   # 3 parts of 2 dims
    assert masked(embedding, 1, n_parts=3).tolist() == [[0.0, 0.0, 3.0, 4.0, 0.0, 0.0]]
    full = torch.randn(2, 640)
    assert torch.equal(masked(full, 4)[:, 512:], full[:, 512:]) and masked(full, 4)[:, :512].abs().sum() == 0
    with pytest.raises(PartsimError, match="multiple of 5"):
        masked(torch.zeros(2, 641), 0)


def _two_factor_batch(low: torch.Tensor, high: torch.Tensor, frames: int = 8) -> torch.Tensor:
    """Spectrograms whose lower 8 bands are lit in pattern ``low`` and upper 8 in pattern ``high`` (0/1 each)."""
    mel = torch.zeros(len(low), 16, frames)
    for row, (lo, hi) in enumerate(zip(low.tolist(), high.tolist())):
        mel[row, 0 + 4 * lo: 4 + 4 * lo] = 1.0     # "bass": bands 0-3 or 4-7
        mel[row, 8 + 4 * hi: 12 + 4 * hi] = 1.0    # "drums": bands 8-11 or 12-15
    return mel + 0.05 * torch.rand(mel.shape)


def test_masked_triplets_teach_two_subspaces_two_different_criteria():
    # Condition 0 (drums subspace) must follow the upper-band pattern, condition 1 (bass) the lower-band one.
    # After training, within each subspace same-factor pairs must be closer than different-factor pairs.
    torch.manual_seed(0)
    model = CSNEncoder(n_mels=16, width=4, n_parts=5, subspace_dim=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        condition = torch.randint(0, 2, (32,))
        low, high = torch.randint(0, 2, (32,)), torch.randint(0, 2, (32,))
        # Positive shares the conditioned factor and differs in the other; negative the opposite.
        same_high = torch.where(condition == 0, high, 1 - high)
        same_low = torch.where(condition == 1, low, 1 - low)
        positive = _two_factor_batch(same_low, same_high)
        negative = _two_factor_batch(torch.where(condition == 1, 1 - low, low),
                                     torch.where(condition == 0, 1 - high, high))
        embeddings = model(torch.cat([_two_factor_batch(low, high), positive, negative]))
        loss = masked_triplet_loss(*embeddings.split(32), condition=condition, margin=0.2)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        grid = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])  # (low, high)
        embedding = model(_two_factor_batch(grid[:, 0], grid[:, 1]))
    drums, bass = embedding[:, :8], embedding[:, 8:16]
    distance = torch.cdist
    # drums subspace: (0,0)-(1,0) share "high" -> closer than (0,0)-(0,1) which differ in it; bass the reverse.
    assert distance(drums[0:1], drums[2:3]) < distance(drums[0:1], drums[1:2])
    assert distance(drums[1:2], drums[3:4]) < distance(drums[1:2], drums[0:1])
    assert distance(bass[0:1], bass[1:2]) < distance(bass[0:1], bass[2:3])
    assert distance(bass[2:3], bass[3:4]) < distance(bass[2:3], bass[0:1])
