"""PartCNN (chapter 3's per-part feature extractor): sizes worked out by hand, shapes, normalisation, learning."""

from __future__ import annotations

import pytest
import torch

from partsim_core.errors import PartsimError
from partsim_core.models import PartCNN, pooled_size


def _frames(seconds: float, sample_rate: int = 22050, hop: int = 512) -> int:
    return 1 + int(round(seconds * sample_rate)) // hop


def test_parameter_count_matches_the_documented_layer_sizes():
    # width 16, 96 mels: convs 1->16 (stride 2), 16->32, 32->64, 64->128, all 3x3 without bias; a batch norm
    # (weight + bias) after each; 96 mels halve 4 times to 6 rows, so the projection is (128 * 6) -> 128 + bias.
    convolutions = 1 * 16 * 9 + 16 * 32 * 9 + 32 * 64 * 9 + 64 * 128 * 9
    batch_norms = 2 * (16 + 32 + 64 + 128)
    projection = 128 * 6 * 128 + 128
    model = PartCNN(n_mels=96, width=16)
    assert model.projection.in_features == 768
    assert sum(p.numel() for p in model.parameters()) == convolutions + batch_norms + projection == 195824


@pytest.mark.parametrize("n_mels, rows", [(128, 8), (96, 6), (64, 4), (100, 7), (5, 1)])
def test_frequency_rows_after_four_halvings(n_mels, rows):
    # ceil(n / 2) four times: 100 -> 50 -> 25 -> 13 -> 7; 5 -> 3 -> 2 -> 1 -> 1.
    assert pooled_size(n_mels) == rows
    assert PartCNN(n_mels, width=4).frequency_rows == rows


@pytest.mark.parametrize("seconds", [3.0, 5.0, 10.0])
def test_any_segment_length_gives_unit_length_128_d_embeddings(seconds):
    torch.manual_seed(0)
    model = PartCNN(n_mels=96, width=4).eval()
    with torch.no_grad():
        embedding = model(torch.rand(3, 96, _frames(seconds)))
    assert embedding.shape == (3, 128)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(3))


def test_four_dimensional_input_and_unnormalised_option():
    torch.manual_seed(0)
    model = PartCNN(n_mels=32, width=4, embedding_dim=16, normalize=False).eval()
    mel = torch.rand(2, 32, 40)
    with torch.no_grad():
        three_d, four_d = model(mel), model(mel.unsqueeze(1))
    torch.testing.assert_close(three_d, four_d)
    assert three_d.shape == (2, 16)
    assert not torch.allclose(three_d.norm(dim=1), torch.ones(2))


def test_eval_mode_embeds_each_example_independently_of_its_batch():
    torch.manual_seed(1)
    model = PartCNN(n_mels=64, width=4).eval()
    mel = torch.rand(4, 64, 50)
    with torch.no_grad():
        together = model(mel)
        alone = torch.cat([model(mel[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_wrong_input_shape_and_bad_sizes_are_refused():
    model = PartCNN(n_mels=64, width=4)
    with pytest.raises(PartsimError, match="64"):
        model(torch.rand(2, 32, 50))
    with pytest.raises(PartsimError, match="n_mels"):
        PartCNN(n_mels=0)
    with pytest.raises(PartsimError, match="width"):
        PartCNN(n_mels=64, width=2.5)


def test_same_seed_same_initial_weights():
    torch.manual_seed(7)
    first = PartCNN(n_mels=32, width=4).state_dict()
    torch.manual_seed(7)
    second = PartCNN(n_mels=32, width=4).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_triplet_training_separates_two_kinds_of_spectrogram():
    # Two "tracks": energy in the low vs the high mel bands, plus noise. After a few Adam steps on triplets
    # (anchor/positive from one, negative from the other) every example is closer to its own kind's mean.
    generator = torch.Generator().manual_seed(0)

    def examples(low: bool, n: int) -> torch.Tensor:
        mel = 0.3 * torch.rand(n, 32, 24, generator=generator)
        band = slice(0, 12) if low else slice(20, 32)
        mel[:, band] += 0.7
        return mel

    torch.manual_seed(0)
    model = PartCNN(n_mels=32, width=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(30):
        low_first = step % 2 == 0
        anchor, positive, negative = examples(low_first, 8), examples(low_first, 8), examples(not low_first, 8)
        a, p, n = model(torch.cat([anchor, positive, negative])).chunk(3)
        loss = torch.relu((a - p).norm(dim=1) - (a - n).norm(dim=1) + 0.2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        low, high = model(examples(True, 16)), model(examples(False, 16))
    low_centre, high_centre = low.mean(0), high.mean(0)
    assert bool(((low - low_centre).norm(dim=1) < (low - high_centre).norm(dim=1)).all())
    assert bool(((high - high_centre).norm(dim=1) < (high - low_centre).norm(dim=1)).all())
