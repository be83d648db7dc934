"""Chapter 4's subspace evaluations on synthetic embeddings whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr

from partsim_core import INSTRUMENTS
from partsim_core.csn import correlation, leakage
from partsim_core.csn import metrics as evaluation
from partsim_core.errors import PartsimError

WIDTH = 4  # subspace width D in these tests (embeddings are 5 x 4 = 20 wide)


def clustered_in_one_subspace(rng: np.random.Generator, labels: np.ndarray, part: int, spread: float = 10.0,
                              noise: float = 0.1) -> np.ndarray:
    """Embeddings whose subspace ``part`` places each label at its own far-apart centre; other subspaces noise."""
    points = rng.normal(size=(labels.size, 5 * WIDTH))
    centres = rng.normal(size=(labels.max() + 1, WIDTH)) * spread
    points[:, part * WIDTH:(part + 1) * WIDTH] = centres[labels] + noise * rng.normal(size=(labels.size, WIDTH))
    return points


def test_table_4_1_is_one_in_the_clustered_subspace_and_near_chance_elsewhere() -> None:
    rng = np.random.default_rng(0)
    tracks = np.repeat(np.arange(10), 10)  # 10 tracks x 10 segments: chance = 0.1
    points = clustered_in_one_subspace(rng, tracks, part=0)
    active = np.ones((tracks.size, 5), dtype=bool)
    active[::2, 1] = False  # bass counts on half the segments only
    table = evaluation.table_4_1({3.0: points}, None, {3.0: tracks}, {3.0: active})
    drums = table["drums"]["proposed_3s"].cell()
    assert drums["value"] == 100.0 and drums["low"] == 100.0 and drums["high"] == 100.0
    for part in INSTRUMENTS[1:]:
        found = table[part]["proposed_3s"].cell()
        assert found["value"] < 30.0 and found["low"] <= found["value"] <= found["high"]
    assert table["bass"]["proposed_3s"].weights.sum() == 50  # only the segments where bass sounds
    assert table["drums"]["baseline_3s"] is None  # no baseline given


def test_track_id_scores_use_only_the_subspace() -> None:
    # Hand-made: the drums subspace groups the tracks, the bass subspace puts point 0 next to track 1. In the full
    # space the large bass values would dominate; the drums subspace alone must give 1.
    points = np.zeros((6, 5 * WIDTH))
    points[:, 0] = [0.0, 0.1, 0.2, 5.0, 5.1, 5.2]  # drums: track 0 = first three
    points[:, WIDTH] = [100.0, 0.0, 0.0, 103.0, 104.0, 105.0]  # bass
    tracks = np.array([0, 0, 0, 1, 1, 1])
    assert evaluation.track_id_scores(evaluation.subspace(points, 0), tracks, k=2).cell()["value"] == 100.0
    # Bass, k = 1: 0 -> 3 (wrong), 1 <-> 2, 3 -> 4, 4 -> 3 (tie with 5, both track 1), 5 -> 4: 5 of 6 right.
    bass = evaluation.track_id_scores(evaluation.subspace(points, "bass"), tracks, k=1)
    assert bass.cell()["value"] == pytest.approx(100 * 5 / 6)
    np.testing.assert_allclose(bass.values, [[2 / 3, 1.0]])  # per track: track 0 has the one miss
    assert evaluation.track_id_scores(points, np.arange(6)) is None  # no track has two segments
    with pytest.raises(PartsimError, match="unknown part"):
        evaluation.subspace(points, "vocals")
    with pytest.raises(PartsimError, match="5 x D"):
        evaluation.subspace(points[:, :7], 0)


def test_scores_from_segments_pool_per_track_and_seed() -> None:
    correct = np.array([[1, 0, 1, 1, 1], [0, 0, 1, 1, 0]], dtype=float)  # 2 seeds x 5 segments
    scores = evaluation.scores_from_segments(correct, ["a", "a", "b", "b", "b"])
    assert scores.items.tolist() == ["a", "b"] and scores.weights.tolist() == [2.0, 3.0]
    np.testing.assert_allclose(scores.values, [[0.5, 1.0], [0.0, 2 / 3]])
    found = scores.cell()
    # The value is the accuracy over all segments and seeds: 6 right of 10.
    assert found["value"] == pytest.approx(60.0) and 0.0 <= found["low"] <= found["value"] <= found["high"] <= 100


def test_table_4_3_identifies_the_largest_subspace() -> None:
    rng = np.random.default_rng(1)
    stems = {}
    for column, part in enumerate(INSTRUMENTS):
        points = rng.normal(scale=0.1, size=(6, 5 * WIDTH))
        points[:, column * WIDTH] = 5.0  # the part's own subspace is the largest ...
        if part == "bass":
            points[:2, 0] = 50.0  # ... except in two bass segments, where drums is larger
        stems[part] = points
    tracks = {part: np.array(["t0", "t0", "t1", "t1", "t2", "t2"]) for part in INSTRUMENTS}
    table = evaluation.table_4_3({"(i)": stems}, tracks)["(i)"]
    assert table["drums"].cell()["value"] == 100.0
    assert table["bass"].cell()["value"] == pytest.approx(100 * 4 / 6)
    np.testing.assert_allclose(table["bass"].values, [[0.0, 1.0, 1.0]])


def test_pseudo_piece_plan_design() -> None:
    tracks = [f"T{i:02d}" for i in range(14)]
    having = {part: tracks[:12] for part in INSTRUMENTS}
    plan = evaluation.test_pseudo_piece_plan(having, n_labels=10, pieces_per_label=4, seed=3)
    assert len(plan) == 5 * 10 * 4 and plan["piece"].is_unique
    for part, rows in plan.groupby("part"):
        assert rows["label"].nunique() == 10 and set(rows["label"]) <= set(having[part])
        for label, pieces in rows.groupby("label"):
            assert len(pieces) == 4
            assert pieces["other"].nunique() == 4  # each label combined with different other tracks
            assert (pieces["other"] != label).all()
            assert (pieces[part] == label).all()
            for other_part in INSTRUMENTS:
                if other_part != part:
                    assert (pieces[other_part] == pieces["other"]).all()
        # 40 other slots over 13 candidates each: least-used first keeps every track used 3 or 4 times at most.
        assert rows["other"].value_counts().max() <= 4
    again = evaluation.test_pseudo_piece_plan(dict(reversed(list(having.items()))), seed=3)
    pd.testing.assert_frame_equal(plan, again)
    assert not plan.equals(evaluation.test_pseudo_piece_plan(having, seed=4))


def test_pseudo_piece_plan_prefers_the_tempo_class_and_rejects_too_few_tracks() -> None:
    tracks = [f"T{i}" for i in range(10)]
    classes = {track: i % 2 for i, track in enumerate(tracks)}  # 5 tracks per class: 4 others each
    plan = evaluation.test_pseudo_piece_plan({"bass": tracks}, n_labels=3, pieces_per_label=4, seed=1,
                                             tempo_class_of=classes)
    assert set(plan["part"]) == {"bass"}
    assert all(classes[row.label] == classes[row.other] for row in plan.itertuples())
    with pytest.raises(PartsimError, match="only 3 test tracks have piano"):
        evaluation.test_pseudo_piece_plan({"piano": tracks[:3]}, n_labels=10)
    with pytest.raises(PartsimError, match="unknown part"):
        evaluation.test_pseudo_piece_plan({"vocals": tracks})


def pseudo_piece_segments(plan: pd.DataFrame, part: str, segments: int = 3) -> pd.DataFrame:
    """Segment rows of the plan's pieces for ``part``: piece, label track, other track."""
    rows = plan[plan["part"] == part]
    return rows.loc[rows.index.repeat(segments), ["piece", "label", "other"]].reset_index(drop=True)


def test_part_label_accuracy_separated_leaking_and_piece_exclusion() -> None:
    rng = np.random.default_rng(1)
    tracks = [f"T{i:02d}" for i in range(20)]
    plan = evaluation.test_pseudo_piece_plan({"drums": tracks}, seed=0)
    segments = pseudo_piece_segments(plan, "drums")
    label_codes = pd.factorize(segments["label"])[0]
    other_codes = pd.factorize(segments["other"])[0]
    piece_codes = pd.factorize(segments["piece"])[0]
    # Separated: the drums subspace encodes only the drum label track.
    separated = clustered_in_one_subspace(rng, label_codes, part=0)
    assert evaluation.part_label_accuracy(separated, segments["label"], segments["piece"], "drums") == 1.0
    # Leaking: the drums subspace encodes the other parts' source track -> neighbours carry other drum labels.
    leaking = clustered_in_one_subspace(rng, other_codes, part=0)
    assert evaluation.part_label_accuracy(leaking, segments["label"], segments["piece"], "drums") < 0.3
    # Piece-specific clusters: perfect if own-piece segments could vote, near chance (0.1) once they are excluded.
    per_piece = clustered_in_one_subspace(rng, piece_codes, part=0)
    from partsim_core.knn import knn_accuracy
    assert knn_accuracy(per_piece[:, :WIDTH], segments["label"].to_numpy(), k=2) == 1.0
    assert evaluation.part_label_accuracy(per_piece, segments["label"], segments["piece"], 0) < 0.3


def test_identification_accuracy_and_confusion() -> None:
    norms_wanted = np.array([
        [3.0, 1.0, 0.0, 0.0, 0.0],  # true drums -> drums
        [0.0, 2.0, 1.0, 0.0, 0.0],  # true bass -> bass
        [0.0, 2.0, 1.0, 0.0, 0.0],  # true piano -> bass (wrong)
        [0.0, 0.0, 0.0, 0.5, 0.4],  # true guitar -> guitar
        [1.0, 0.0, 0.0, 0.0, 0.0],  # true guitar -> drums (wrong)
    ])
    # Spread each wanted norm over a subspace: the vector (a, 0, 0, 0) has norm |a|; flip signs to be sure.
    points = np.zeros((5, 5 * WIDTH))
    points[:, ::WIDTH] = -norms_wanted
    result = evaluation.identification_accuracy(points, ["drums", "bass", 2, "guitar", 3])
    assert result.accuracy == pytest.approx(3 / 5)
    assert result.per_part["drums"] == 1.0 and result.per_part["bass"] == 1.0
    assert result.per_part["piano"] == 0.0 and result.per_part["guitar"] == 0.5
    assert math.isnan(result.per_part["others"])
    assert result.confusion.loc["piano", "bass"] == 1 and result.confusion.loc["guitar", "drums"] == 1
    assert result.confusion.to_numpy().sum() == 5
    with pytest.raises(PartsimError, match="unknown part"):
        evaluation.identification_accuracy(points, ["drums", "bass", "vocals", "guitar", "others"])


def test_distance_matrix_correlation_hand_example() -> None:
    # Points on a line at 0,1,2,3 and at 0,1,3,6: upper triangles (1,2,3,1,2,1) and (1,3,6,2,5,3); by hand the
    # Pearson correlation is (20/3) / sqrt((10/3)(52/3)) = 20 / sqrt(520).
    a = np.array([[0.0], [1.0], [2.0], [3.0]])
    b = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [6.0, 0.0]])
    assert evaluation.distance_matrix_correlation(a, b) == pytest.approx(20 / math.sqrt(520), abs=1e-12)


def test_distance_matrix_correlation_self_random_and_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 16))
    b = rng.normal(size=(300, 16))
    mixed = a + 0.7 * b
    assert evaluation.distance_matrix_correlation(a, a) == pytest.approx(1.0, abs=1e-12)
    assert abs(evaluation.distance_matrix_correlation(a, b)) < 0.1
    reference = pearsonr(pdist(a), pdist(mixed))[0]
    # Small chunks exercise the streaming merge across many row blocks.
    monkeypatch.setattr(correlation, "CORRELATION_CHUNK_ROWS", 7)
    assert correlation._correlations([a, mixed], [(0, 1)], chunk_rows=7)[0] == pytest.approx(reference, abs=1e-10)
    assert evaluation.distance_matrix_correlation(a, mixed) == pytest.approx(reference, abs=1e-10)
    assert math.isnan(evaluation.distance_matrix_correlation(a, np.zeros((300, 3))))  # collapsed space
    with pytest.raises(PartsimError, match="same segments"):
        evaluation.distance_matrix_correlation(a, b[:10])
    with pytest.raises(PartsimError, match="NaN"):
        evaluation.distance_matrix_correlation(np.full((4, 2), np.nan), a[:4])


def test_subspace_correlations_matrix() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(120, WIDTH))
    points = rng.normal(size=(120, 5 * WIDTH))
    points[:, :WIDTH] = base
    points[:, WIDTH:2 * WIDTH] = 2.0 * base  # bass = scaled drums: distances proportional, correlation 1
    matrix = correlation.subspace_correlations(points)
    assert list(matrix.index) == list(INSTRUMENTS) and np.allclose(np.diag(matrix), 1.0)
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T)
    assert matrix.loc["drums", "bass"] == pytest.approx(1.0, abs=1e-12)
    expected = pearsonr(pdist(points[:, 2 * WIDTH:3 * WIDTH]), pdist(points[:, 4 * WIDTH:]))[0]
    assert matrix.loc["piano", "others"] == pytest.approx(expected, abs=1e-10)
    assert abs(matrix.loc["drums", "guitar"]) < 0.15


def style_fixture(rng: np.random.Generator, n_tracks: int = 60, segments: int = 4) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-track random styles (3 per part, independent across parts; piano absent on every 4th track)."""
    track_styles = pd.DataFrame({part: rng.choice(["s0", "s1", "s2"], size=n_tracks) for part in INSTRUMENTS},
                                dtype=object)
    track_styles.loc[::4, "piano"] = np.nan
    tracks = np.repeat(np.arange(n_tracks), segments)
    return track_styles.iloc[tracks].reset_index(drop=True), tracks


def style_embeddings(rng: np.random.Generator, styles: pd.DataFrame, leak_piano: float) -> np.ndarray:
    """Drums subspace = drums-style centre (+ ``leak_piano`` x piano-style centre) + noise; rest noise."""
    centres = {style: rng.normal(size=WIDTH) * 10 for style in ["s0", "s1", "s2"]}
    piano_centres = {style: rng.normal(size=WIDTH) * 10 for style in ["s0", "s1", "s2"]}
    points = rng.normal(size=(len(styles), 5 * WIDTH))
    drums = np.stack([centres[style] for style in styles["drums"]])
    piano = np.stack([piano_centres.get(style, np.zeros(WIDTH)) for style in styles["piano"]])
    points[:, :WIDTH] = drums + leak_piano * piano + 0.1 * rng.normal(size=(len(styles), WIDTH))
    return points


def test_style_leakage_separated_subspace() -> None:
    rng = np.random.default_rng(4)
    styles, tracks = style_fixture(rng)
    points = style_embeddings(rng, styles, leak_piano=0.0)
    frame = leakage.style_leakage(points, styles, "drums", k=10, exclude_groups=tracks)
    assert list(frame["part"]) == list(INSTRUMENTS) and set(frame["subspace"]) == {"drums"}
    same = frame.set_index("part").loc["drums"]
    assert same["relation"] == "same" and same["precision"] == 1.0 and same["excess"] > 0.5
    others = frame[frame["relation"] == "other"]
    assert (others["excess"].abs() < 0.08).all()
    assert frame.set_index("part").loc["piano", "n_targets"] == 4 * 45  # 15 of 60 tracks lack piano


def test_style_leakage_detects_a_leaking_subspace() -> None:
    rng = np.random.default_rng(5)
    styles, tracks = style_fixture(rng)
    points = style_embeddings(rng, styles, leak_piano=0.5)
    frame = leakage.style_leakage(points, styles, 0, k=10, exclude_groups=tracks).set_index("part")
    assert frame.loc["piano", "excess"] > 0.3
    assert abs(frame.loc["bass", "excess"]) < 0.08


def test_style_leakage_chance_by_hand() -> None:
    # 4 segments, two tracks; drums styles a, a, b, a. Excluding own track, target 0 (a) sees segments 2 (b) and
    # 3 (a): chance 1/2; target 2 (b) sees 0, 1: chance 0; target 3 sees 0, 1: chance 1 -> mean (1/2+1/2+0+1)/4.
    styles = pd.DataFrame({part: ["a", "a", "b", "a"] for part in INSTRUMENTS})
    tracks = np.array([0, 0, 1, 1])
    points = np.zeros((4, 5 * WIDTH))
    points[:, 0] = [0.0, 19.0, 1.0, 20.0]
    frame = leakage.style_leakage(points, styles, "drums", k=1, exclude_groups=tracks).set_index("part")
    assert frame.loc["drums", "chance"] == pytest.approx(0.5)
    # Nearest eligible: 0 -> 2 (b, miss), 1 -> 3 (a, hit), 2 -> 0 (a, miss), 3 -> 1 (a, hit): precision 1/2.
    assert frame.loc["drums", "precision"] == pytest.approx(0.5)
    with pytest.raises(PartsimError, match="no column"):
        leakage.style_leakage(points, styles.drop(columns="bass"), "drums")


def test_leave_one_track_out_correlations_match_scipy() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(30, 6))
    b = a[:, :3] + 0.5 * rng.normal(size=(30, 3))
    groups = np.repeat([f"t{i}" for i in range(6)], 5)
    ids = [f"t{i}" for i in range(7)]  # t6 has no segment: leaving it out changes nothing
    found = correlation.leave_one_group_out_correlations([a, b], [(0, 1)], groups, ids, chunk_rows=4)
    for number, track in enumerate(ids):
        keep = groups != track
        assert found[0, number] == pytest.approx(pearsonr(pdist(a[keep]), pdist(b[keep]))[0], abs=1e-9)


def test_table_4_5_cells_carry_jackknife_intervals() -> None:
    rng = np.random.default_rng(4)
    points = rng.normal(size=(2, 24, 5 * WIDTH))  # two seeds
    points[:, :, WIDTH:2 * WIDTH] = points[:, :, :WIDTH] + 0.1 * rng.normal(size=(2, 24, WIDTH))  # bass ~ drums
    tracks = np.repeat([f"t{i}" for i in range(8)], 3)
    table = evaluation.table_4_5(evaluation.csn_spaces(points), tracks, [f"t{i}" for i in range(8)])
    pair = table["drums", "bass"]
    expected = np.mean([pearsonr(pdist(p[:, :WIDTH]), pdist(p[:, WIDTH:2 * WIDTH]))[0] for p in points])
    found = pair.cell()
    assert found["value"] == pytest.approx(expected, abs=1e-9) and found["value"] > 0.9
    assert -1.0 <= found["low"] <= found["value"] <= found["high"] <= 1.0 and pair.values.shape == (2, 8)
    unrelated = table["drums", "piano"].cell()
    assert abs(unrelated["value"]) < 0.5 and unrelated["low"] < unrelated["value"] < unrelated["high"]


def balanced_label_segments(labels: int = 10, pieces_per_label: int = 2, segments_per_piece: int = 5,
                            part: str = "drums") -> pd.DataFrame:
    """Test pseudo-piece segments of one part: every label in the same number of pieces of the same length."""
    rows = [{"part": part, "label": f"L{label}", "piece": f"L{label}-P{piece}"}
            for label in range(labels) for piece in range(pieces_per_label) for _ in range(segments_per_piece)]
    return pd.DataFrame(rows)


def test_chance_tables_match_the_share_of_right_neighbours() -> None:
    # With one neighbour, a random embedding is right as often as a random other segment has the target's label.
    # Table 4.2: 10 labels x 2 pieces x 5 segments, the target's own piece excluded: 5 right among 95 -> 5.3 %
    # (not 1 in 10: excluding the own piece thins out the right label).
    segments = balanced_label_segments()
    # Table 4.1: ten tracks of ten segments, leave-one-out: 9 same-track segments among 99 -> 9.1 %.
    tracks = np.repeat(np.arange(10), 10)
    active = np.ones((tracks.size, 5), dtype=bool)
    active[:, 1] = False  # bass never sounds: no cell
    chance = evaluation.chance_tables({3.0: tracks}, {3.0: active}, segments, draws=40, k=1)
    drums = chance["table_4_2"]["drums"].cell()
    assert drums["value"] == pytest.approx(100 * 5 / 95, abs=1.5)
    assert chance["table_4_2"]["bass"] is None  # no segment of bass pieces
    track_cell = chance["table_4_1"]["drums"]["3s"].cell()
    assert track_cell["value"] == pytest.approx(100 * 9 / 99, abs=3.0)
    assert chance["table_4_1"]["bass"]["3s"] is None
    assert chance["table_4_1"]["drums"]["3s"].values.shape == (1, 10)  # the draws' mean per track: one row
    # Seeded: the same draws give the same chance level.
    again = evaluation.chance_tables({3.0: tracks}, {3.0: active}, segments, draws=40, k=1)
    np.testing.assert_array_equal(again["table_4_2"]["drums"].values, chance["table_4_2"]["drums"].values)


def past_chance_tables(accuracy_model: str) -> dict:
    """The tables chapter4_findings reads, with condition (i) perfect ("clustered") or random ("random")."""
    rng = np.random.default_rng(3)
    segments = balanced_label_segments()
    tracks = np.repeat(np.arange(10), 10)
    active = np.ones((tracks.size, 5), dtype=bool)
    label_codes = pd.factorize(segments["label"])[0]
    if accuracy_model == "clustered":
        pseudo = clustered_in_one_subspace(rng, label_codes, part=0)
        grid = np.concatenate([clustered_in_one_subspace(rng, tracks, part=p)[:, p * WIDTH:(p + 1) * WIDTH]
                               for p in range(5)], axis=1)
    else:
        pseudo, grid = rng.normal(size=(len(segments), 5 * WIDTH)), rng.normal(size=(tracks.size, 5 * WIDTH))
    return {"table_4_2": evaluation.table_4_2({"(i)": pseudo}, segments),
            "table_4_1": evaluation.table_4_1({3.0: grid}, None, {3.0: tracks}, {3.0: active}),
            "chance": evaluation.chance_tables({3.0: tracks}, {3.0: active}, segments),
            "subspace_correlation": {}, "stem_mix": {}, "identification": {}}


def test_past_chance_findings_follow_the_intervals() -> None:
    from partsim_core.csn.findings import chapter4_findings

    def by_claim(findings: list[dict], words: str) -> list[dict]:
        return [found for found in findings if words in found["claim"]]

    trained = chapter4_findings(past_chance_tables("clustered"), seconds=(3.0,))
    drums_labels = by_claim(trained, "finds drums labels above chance")
    assert len(drums_labels) == 1 and drums_labels[0]["verdict"] == "holds"
    assert drums_labels[0]["estimate"] > 85.0   # 100 % minus a chance of a few per cent
    assert by_claim(trained, "at least 3x chance")[0]["verdict"] == "holds"
    # Only drums pieces exist: the other parts' label findings cannot be computed.
    assert by_claim(trained, "finds bass labels")[0]["verdict"] == "inconclusive"
    for part in INSTRUMENTS:  # every subspace groups its tracks in the clustered grid
        assert by_claim(trained, f"{part} subspace identifies tracks above kNN chance")[0]["verdict"] == "holds"
    untrained = chapter4_findings(past_chance_tables("random"), seconds=(3.0,))
    # Random embeddings are at chance: nowhere near 3x chance.
    assert by_claim(untrained, "at least 3x chance")[0]["verdict"] == "does not hold"
    assert by_claim(untrained, "finds drums labels above chance")[0]["verdict"] != "holds"
