"""kNN track-ID prediction (thesis 3.3.2): compared with scikit-learn and with hand-worked tie cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from partsim_core.embed import embed
from partsim_core.errors import PartsimError
from partsim_core.knn import knn_accuracy, knn_predict


def sklearn_leave_one_out(points: np.ndarray, labels: np.ndarray, k: int,
                          groups: np.ndarray | None = None) -> np.ndarray:
    """Reference: for each target, fit scikit-learn on every other point (outside its group) and predict it."""
    predicted = []
    for target in range(len(points)):
        keep = np.arange(len(points)) != target
        if groups is not None:
            keep &= groups != groups[target]
        classifier = KNeighborsClassifier(n_neighbors=min(k, int(keep.sum())), algorithm="brute")
        classifier.fit(points[keep], labels[keep])
        predicted.append(classifier.predict(points[target:target + 1])[0])
    return np.asarray(predicted)


@pytest.mark.parametrize("k", [4, 5])
def test_lowest_label_equals_sklearn_leave_one_out(k):
    rng = np.random.default_rng(k)
    points = rng.normal(size=(90, 3))
    # Few classes and random points: many vote ties (2-2 with k=4, 2-2-1 with k=5), which is what the rule decides.
    labels = rng.choice(np.array(["Track00007", "Track00003", "Track00011", "Track00001"]), size=90)
    ours = knn_predict(points, labels, k=k, tie_break="lowest_label", batch_size=17)
    expected = sklearn_leave_one_out(points, labels, k)
    np.testing.assert_array_equal(ours, expected)
    # knn_accuracy is the share of correct predictions.
    assert knn_accuracy(points, labels, k=k, tie_break="lowest_label") == pytest.approx(np.mean(expected == labels))


def test_rules_differ_only_on_vote_ties():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(120, 2))
    labels = rng.integers(0, 4, size=120)
    lowest = knn_predict(points, labels, k=4, tie_break="lowest_label")
    nearest = knn_predict(points, labels, k=4, tie_break="nearest")
    # Count the vote ties ourselves with the sklearn neighbour lists, and check the two rules agree elsewhere.
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    neighbours = np.argsort(distances, axis=1, kind="stable")[:, :4]
    tie_rows = []
    for row, members in enumerate(neighbours):
        counts = np.bincount(labels[members], minlength=4)
        tied = np.flatnonzero(counts == counts.max())
        if len(tied) > 1:
            tie_rows.append(row)
            winner = next(labels[m] for m in members if labels[m] in tied)  # the label of the nearest tied point
            assert nearest[row] == winner
            assert lowest[row] == tied.min()
    assert len(tie_rows) > 10  # the data must exercise the rule
    others = np.setdiff1d(np.arange(120), tie_rows)
    np.testing.assert_array_equal(lowest[others], nearest[others])


def test_nearest_tie_break_hand_made():
    # Target at 0 on a line; its 5 neighbours at 1..5 carry labels b, a, b, a, c: a 2-2-1 vote.
    points = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    labels = np.array(["x", "b", "a", "b", "a", "c"])
    assert knn_predict(points, labels, k=5, tie_break="nearest")[0] == "b"  # b owns the nearest neighbour (at 1)
    assert knn_predict(points, labels, k=5, tie_break="lowest_label")[0] == "a"
    # A clear majority needs no tie rule.
    labels = np.array(["x", "a", "b", "a", "a", "c"])
    assert knn_predict(points, labels, k=5, tie_break="nearest")[0] == "a"


def test_equal_distances_are_ordered_by_index():
    # Target 0 at the origin; four points at distance 1 (indices 1-4), k = 3: the three lowest indices vote.
    points = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1], [5, 5]], dtype=float)
    labels = np.array([9, 2, 3, 1, 1, 7])
    # Neighbours 1, 2, 3 -> labels 2, 3, 1: a three-way tie; "nearest" takes index 1's label.
    assert knn_predict(points, labels, k=3, tie_break="nearest")[0] == 2
    assert knn_predict(points, labels, k=3, tie_break="lowest_label")[0] == 1
    # The same with the faiss backend.
    assert knn_predict(points, labels, k=3, tie_break="nearest", backend="faiss")[0] == 2


def test_exclude_groups_equals_sklearn_without_the_group():
    rng = np.random.default_rng(7)
    points = rng.normal(size=(80, 4))
    labels = rng.integers(0, 5, size=80)
    groups = rng.integers(0, 10, size=80)
    ours = knn_predict(points, labels, k=5, exclude_groups=groups, tie_break="lowest_label", batch_size=13)
    np.testing.assert_array_equal(ours, sklearn_leave_one_out(points, labels, 5, groups))


def test_exclude_groups_hand_made():
    # Two copies of each point in the same group: without exclusion each point's twin (distance 0) dominates.
    points = np.array([[0.0], [0.0], [10.0], [10.0], [11.0]])
    labels = np.array(["a", "a", "b", "b", "c"])
    groups = np.array([0, 0, 1, 1, 2])
    assert list(knn_predict(points, labels, k=1)) == ["a", "a", "b", "b", "b"]
    assert list(knn_predict(points, labels, k=1, exclude_groups=groups)) == ["b", "b", "c", "c", "b"]


def test_faiss_backend_matches_torch():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(200, 8)).astype(np.float32)
    labels = rng.integers(0, 20, size=200)
    groups = rng.integers(0, 30, size=200)
    for exclude in (None, groups):
        np.testing.assert_array_equal(knn_predict(points, labels, exclude_groups=exclude),
                                      knn_predict(points, labels, exclude_groups=exclude, backend="faiss"))


def test_fewer_candidates_than_k_all_vote():
    points = np.array([[0.0], [1.0], [3.0]])
    labels = np.array([1, 2, 2])
    # Each point has only 2 candidates; with k=5 both vote. Point 0: labels 2, 2 -> 2. Point 1: 1 (at distance 1)
    # against 2 (at 2), a tie won by the nearer -> 1. Point 2: 2 (at 2) against 1 (at 3) -> 2.
    assert list(knn_predict(points, labels, k=5)) == [2, 1, 2]
    assert list(knn_predict(points, labels, k=5, tie_break="lowest_label")) == [2, 1, 1]


def test_perfect_clusters_give_full_accuracy():
    centres = np.arange(6)[:, None] * 100.0
    points = np.repeat(centres, 8, axis=0) + np.random.default_rng(0).normal(size=(48, 1))
    labels = np.repeat(np.arange(6), 8)
    assert knn_accuracy(torch.as_tensor(points), labels) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be"),
        ({"tie_break": "random"}, "tie_break"),
        ({"backend": "annoy"}, "kNN backend"),
        ({"exclude_groups": np.zeros(4)}, "no candidate"),
        ({"exclude_groups": np.zeros(3)}, "exclude_groups"),
    ],
)
def test_bad_arguments(kwargs, message):
    points = np.arange(8, dtype=float).reshape(4, 2)
    with pytest.raises(PartsimError, match=message):
        knn_predict(points, np.array([0, 0, 1, 1]), **kwargs)


def test_bad_embeddings():
    with pytest.raises(PartsimError, match="NaN"):
        knn_predict(np.array([[0.0], [np.nan], [1.0]]), [0, 1, 1])
    with pytest.raises(PartsimError, match="one entry per embedding"):
        knn_predict(np.zeros((3, 2)), [0, 1])
    with pytest.raises(PartsimError, match="2-d"):
        knn_predict(np.zeros(3), [0, 1, 1])


class _SineSource:
    """A SignalSource whose track ``n`` is a steady sine of ``n`` kHz (``tracks_by_id`` maps ids to ``n``)."""

    sample_rate = 8000

    def get(self, track, part):
        t = np.arange(8000) / self.sample_rate
        return (0.5 * np.sin(2 * np.pi * 1000.0 * track * t)).astype(np.float32)


class _Index:
    """Minimal SegmentIndex: two 0.25-s segments in each of two tracks."""

    part = "drums"
    track_ids = ["1", "2"]
    length = 2000

    def refs(self):
        return np.array([[0, 0], [0, 4000], [1, 0], [1, 6000]], dtype=np.int64)


class _CentroidModel(torch.nn.Module):
    """Embeds a log-mel batch as its spectral centroid in mel bins (plus a parameter, so it can be trained)."""

    embedding_dim = 1

    def __init__(self):
        super().__init__()
        self.offset = torch.nn.Parameter(torch.zeros(1))

    def forward(self, mel):
        weights = mel.mean(dim=2)
        bins = torch.arange(mel.shape[1], dtype=mel.dtype)
        return ((weights * bins).sum(dim=1) / weights.sum(dim=1))[:, None] + self.offset


def test_embed_runs_gather_frontend_and_model_in_order():
    from partsim_core.presets import FrontendConfig

    model = _CentroidModel().train()
    config = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=32)
    vectors = embed(model, _SineSource(), {"1": 1, "2": 2}, _Index(), config, batch_size=3)
    assert vectors.shape == (4, 1) and vectors.dtype == np.float32
    assert model.training  # the caller's mode is restored
    # Segments of the same steady sine embed identically; the 2-kHz track has the higher centroid.
    assert vectors[0, 0] == pytest.approx(vectors[1, 0], abs=1e-4)
    assert vectors[2, 0] == pytest.approx(vectors[3, 0], abs=1e-4)
    assert vectors[2, 0] > vectors[0, 0] + 1
