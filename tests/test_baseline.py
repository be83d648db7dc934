"""Chapter 3 (``partsim_core.baseline``): tables with intervals, chapter 3's test filter, findings, the leakage
source, and a smoke-sized run of the whole chapter."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from partsim_core import INSTRUMENTS
from partsim_core.baseline.filtering import chapter3_dataset, filter_by_segment_count
from partsim_core.baseline.findings import (
    accuracy_gap,
    chapter_findings,
    difference_cell,
    gap_follows_quality,
)
from partsim_core.baseline.networks import (
    NetworkEvaluation,
    check_network,
    network_name,
    per_track_accuracy,
    train_part_network,
)
from partsim_core.baseline.run import run_chapter3
from partsim_core.baseline.separator_quality import (
    LeakageSource,
    MixtureSeparator,
    chance_accuracy,
    default_curve_epochs,
)
from partsim_core.baseline.separators import check_backend
from partsim_core.baseline.tables import (
    TABLE_3_1_COLUMNS,
    intervals_frame,
    table_3_1,
    table_3_2,
    values_frame,
)
from partsim_core.book.thesis_tables import load_thesis_table
from partsim_core.data.dataset import load_dataset
from partsim_core.errors import PartsimError
from partsim_core.presets import get_preset


def _per_track(values, weights=None):
    values = np.atleast_2d(np.asarray(values, dtype=float))
    return values, np.ones(values.shape[1]) if weights is None else np.asarray(weights, dtype=float)


def test_table_3_2_has_the_thesis_layout_and_pooled_values():
    per_track = {("mix", "mix"): _per_track([90.0, 100.0])}
    for offset, part in enumerate(INSTRUMENTS):
        per_track[("ideal", part)] = _per_track([80.0 + offset, 80.0 + offset])
        # Weighted by segments: (50 * 3 + 20 * 1) / 4 = 42.5.
        per_track[("separated", part)] = _per_track([50.0, 20.0], weights=[3, 1])
    table = table_3_2(per_track)
    thesis = load_thesis_table("3.2")
    assert list(table) == list(thesis.index)
    frame = values_frame(table, ["mix", *INSTRUMENTS])
    assert set(thesis.columns) <= set(frame.columns)
    assert frame.at["baseline", "mix"] == 95.0
    assert frame.at["proposed", "piano"] == 42.5 and frame.at["proposed (ideal)", "others"] == 84.0
    # Cells the thesis leaves empty stay empty.
    assert frame.loc["baseline", list(INSTRUMENTS)].isna().all()
    assert frame.loc[["proposed", "proposed (ideal)"], "mix"].isna().all()
    # Every cell has an interval around its value, inside the range of the items.
    item = table["proposed"]["drums"]
    assert 20.0 <= item["low"] <= item["value"] <= item["high"] <= 50.0
    assert intervals_frame(table, ["mix"]).at["baseline", "mix"].startswith("95.0 [")


def test_table_3_2_interval_includes_the_seed_spread():
    one_seed = table_3_2({("ideal", "bass"): _per_track([[60.0, 62.0, 61.0, 59.0]])})["proposed (ideal)"]["bass"]
    seeds = table_3_2({("ideal", "bass"): _per_track([[60.0, 62.0, 61.0, 59.0],
                                                       [80.0, 82.0, 81.0, 79.0]])})["proposed (ideal)"]["bass"]
    assert seeds["value"] == pytest.approx(70.5)
    assert seeds["high"] - seeds["low"] > 3 * (one_seed["high"] - one_seed["low"])


def test_table_3_1_means_per_part_and_split_with_intervals():
    rows = [("train", "t1", "drums", 1.0, 10.0, 2.0), ("train", "t2", "drums", 3.0, 12.0, 4.0),
            ("test", "t3", "drums", -1.0, 5.0, 0.5), ("test", "t3", "bass", -4.0, math.nan, -2.0)]
    quality = pd.DataFrame(rows, columns=["split", "track", "part", "sdr", "sir", "sar"])
    table = table_3_1(quality)
    assert list(values_frame(table, list(TABLE_3_1_COLUMNS)).columns) == list(load_thesis_table("3.1").columns)
    assert list(table) == list(INSTRUMENTS)
    assert table["drums"]["sdr_train"]["value"] == 2.0 and table["drums"]["sir_train"]["value"] == 11.0
    assert 1.0 <= table["drums"]["sdr_train"]["low"] <= 2.0 <= table["drums"]["sdr_train"]["high"] <= 3.0
    assert table["drums"]["sar_test"]["value"] == 0.5 and table["bass"]["sdr_test"]["value"] == -4.0
    assert math.isnan(table["bass"]["sir_test"]["value"])  # undefined SIR only
    assert math.isnan(table["bass"]["sdr_train"]["value"])
    assert all(math.isnan(item["value"]) for item in table["piano"].values())


def test_network_names_and_checks():
    assert network_name("drums", "ideal") == "part-drums-ideal"
    assert network_name("bass", "separated") == "part-bass-separated"
    assert network_name("mix", "ideal") == "track-mix"
    with pytest.raises(PartsimError, match="unknown part"):
        check_network("vocals", "ideal")
    with pytest.raises(PartsimError, match="trained on the mix itself"):
        check_network("mix", "separated")
    with pytest.raises(PartsimError, match="unknown separator backend 'magic'"):
        check_backend("magic")


def test_per_track_accuracy_weights_by_segments():
    evaluation = NetworkEvaluation(part="bass", input="ideal", track_ids=np.array(["a", "a", "a", "b"]),
                                   starts=np.zeros(4, dtype=int), embeddings=np.zeros((4, 2)),
                                   correct=np.array([True, True, False, False]))
    accuracy, counts = per_track_accuracy(evaluation, ["a", "b", "c"])
    np.testing.assert_allclose(accuracy[:2], [200 / 3, 0.0])
    assert math.isnan(accuracy[2]) and counts.tolist() == [3.0, 1.0, 0.0]
    assert evaluation.accuracy == 50.0  # pooled over segments


def test_findings_use_paired_intervals_and_verdicts():
    # Ideal beats separated on every track by 20 points: holds. Equal up to noise: inconclusive.
    ideal = _per_track([90.0, 80.0, 85.0, 95.0, 70.0])
    separated = _per_track([70.0, 60.0, 65.0, 75.0, 50.0])
    noisy = _per_track([92.0, 78.0, 86.0, 93.0, 71.0])
    per_track = {("ideal", "drums"): ideal, ("separated", "drums"): separated,
                 ("ideal", "bass"): ideal, ("separated", "bass"): noisy}
    leakage = {"accuracy": {"drums": {"value": 60.0, "low": 40.0, "high": 80.0},
                            "bass": {"value": 12.0, "low": 5.0, "high": 30.0}}, "chance": 20.0}
    found = chapter_findings(per_track, leakage, {})
    by_claim = {(item["kind"], item["part"]): item for item in found}
    assert by_claim[("ideal_vs_separated", "drums")]["verdict"] == "holds"
    assert by_claim[("ideal_vs_separated", "drums")]["estimate"] == pytest.approx(20.0)
    assert by_claim[("ideal_vs_separated", "bass")]["verdict"] == "inconclusive"
    assert by_claim[("leakage_above_chance", "drums")]["verdict"] == "holds"
    assert by_claim[("leakage_above_chance", "bass")]["verdict"] == "inconclusive"
    for item in found:
        assert set(item) >= {"claim", "verdict", "estimate", "interval"}
        json.dumps(item, allow_nan=False)
    assert math.isnan(difference_cell(_per_track([math.nan]), _per_track([1.0]))["value"])


def test_gap_and_its_rank_correlation_with_quality():
    table_3_2_cells = {"baseline": {}, "proposed": {}, "proposed (ideal)": {}}
    table_3_1_cells = {}
    for offset, part in enumerate(INSTRUMENTS):
        table_3_2_cells["proposed (ideal)"][part] = {"value": 90.0, "low": 0.0, "high": 0.0}
        table_3_2_cells["proposed"][part] = {"value": 90.0 - 10 * offset, "low": 0.0, "high": 0.0}
        table_3_1_cells[part] = {column: {"value": -float(offset), "low": 0.0, "high": 0.0}
                                 for column in TABLE_3_1_COLUMNS}
    gap = accuracy_gap(table_3_2_cells, table_3_1_cells)
    assert gap.at["piano", "gap"] == 20.0 and gap.at["piano", "sdr_test"] == -2.0
    rank = gap_follows_quality(gap)
    assert rank["rho"] == pytest.approx(-1.0) and rank["best"] == "drums" and rank["worst"] == "others"


def test_leakage_source_is_separated_minus_ideal():
    class Fake:
        sample_rate = 100
        key = "fake"

        def __init__(self, value):
            self.value = value

        def get(self, track, part):
            return np.full(10, self.value if part != "mix" else 9.0, dtype=np.float32)

    leakage = LeakageSource(Fake(0.75), Fake(0.5))
    np.testing.assert_allclose(leakage.get(None, "bass"), 0.25)
    np.testing.assert_allclose(leakage.get(None, "mix"), 9.0)
    assert leakage.key == "leakage-fake"
    parts = MixtureSeparator().separate(np.arange(4, dtype=np.float32), 100)
    assert sorted(parts) == sorted(INSTRUMENTS) and all(np.array_equal(p, np.arange(4)) for p in parts.values())
    assert chance_accuracy(4) == 25.0
    assert default_curve_epochs(3) == [1] and default_curve_epochs(1) == [] and default_curve_epochs(100) == [33]


def test_chapter3_filter_drops_the_tracks_with_fewest_non_silent_mix_segments(tmp_path, monkeypatch):
    from test_cli_train import make_root

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))

    class Cache:
        sample_rate = 10

        def get(self, track, part):
            assert part == "mix"
            return {"t1": np.ones(60), "t2": np.r_[np.ones(30), np.zeros(30)], "t3": np.ones(90),
                    "t4": np.zeros(30)}[track.track_id]

    class Track:
        def __init__(self, track_id):
            self.track_id = track_id

    # 4 tracks, 25 % -> 1 removed: the one with the fewest non-silent 3-s segments of the mix (t4: none).
    simple = [Track(name) for name in ("t1", "t2", "t3", "t4")]
    kept, table = filter_by_segment_count(Cache(), simple, fraction=0.25, seconds=3.0, threshold=1e-4)
    assert [track.track_id for track in kept] == ["t1", "t2", "t3"]
    assert table["non_silent_segments"].to_dict() == {"t1": 2, "t2": 1, "t3": 3, "t4": 0}
    assert table.at["t4", "drop_order"] == 1 and not table.at["t4", "kept"]
    kept, _ = filter_by_segment_count(Cache(), simple, fraction=0.5, seconds=3.0, threshold=1e-4)
    assert [track.track_id for track in kept] == ["t1", "t3"]
    with pytest.raises(PartsimError, match="fraction"):
        filter_by_segment_count(Cache(), simple, fraction=1.0)
    # On a real root: chapter 3's handle keeps the splits and replaces the test set and its table.
    root = make_root(tmp_path / "slakh", {"train": 2, "validation": 1, "test": 2})
    data = load_dataset("smoke", root)
    chapter = chapter3_dataset(data)
    assert chapter.train_tracks == data.train_tracks and "non_silent_segments" in chapter.filter_table
    assert len(chapter.test_tracks) == 2  # floor(0.2) = 0 removed


def test_paper_preset_restores_the_thesis_settings():
    paper = get_preset("paper")
    assert paper.part_network.early_stopping_patience is None  # the thesis trains 200 epochs, no early stopping
    assert paper.separator.metric_train_tracks is None          # Table 3.1 over every training track
    assert paper.part_network.epochs == 200


def test_early_stopping_follows_the_preset(tmp_path, monkeypatch):
    import dataclasses

    from test_cli_train import make_root

    from partsim_core.baseline.networks import part_network_setup

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    data = load_dataset("smoke", make_root(tmp_path / "slakh", {"train": 3, "validation": 2, "test": 2}))
    _, config = part_network_setup(data, "bass")
    assert config.early_stopping_patience == 10
    # The paper preset's rule (no early stopping, as the thesis) on the same data.
    network = dataclasses.replace(data.preset.part_network, early_stopping_patience=None)
    paper_like = dataclasses.replace(data, preset=dataclasses.replace(data.preset, part_network=network))
    _, config = part_network_setup(paper_like, "bass")
    assert config.early_stopping_patience is None


def test_notebook_describes_table_3_1_as_computed():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "notebooks" / "ch3_separation_baseline.py").read_text(encoding="utf-8")
    assert "on whole tracks" not in text  # the code scores 10-s chunks, then averages per track and over tracks
    assert "10-s chunks" in text and "metric_train_tracks" in text


def test_bad_arguments_fail_before_any_work(tmp_path, monkeypatch):
    from test_cli_train import make_root

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    root = make_root(tmp_path / "slakh", {"train": 2, "validation": 1, "test": 2})
    data = load_dataset("smoke", root)
    with pytest.raises(PartsimError, match="unknown separator backend"):
        run_chapter3(data, backend="magic")
    with pytest.raises(PartsimError, match="seeds"):
        run_chapter3(data, seeds=[])
    with pytest.raises(PartsimError, match="unknown part"):
        train_part_network(data, "vocals")
    with pytest.raises(PartsimError, match="separated signal source"):
        train_part_network(data, "bass", "separated")
    assert not (tmp_path / "cache" / "models").exists()


def test_data_root_without_needed_split(tmp_path, monkeypatch):
    from test_cli_train import make_root

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    root = make_root(tmp_path / "only-test", {"test": 2})
    with pytest.raises(PartsimError, match="no 'train' tracks"):
        load_dataset("smoke", root)
    with pytest.raises(PartsimError, match="not a folder"):
        load_dataset("smoke", tmp_path / "missing")
    assert not (tmp_path / "cache" / "models").exists()


# --------------------------------------------------------------------------------------------------------------
# The whole chapter on the embedded smoke dataset
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """A fresh cache for data, models, stems and separated audio, so that the first run really trains."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("ch3-cache")
        patch.setenv("PARTSIM_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def smoke_data(private_cache):
    return load_dataset("smoke", "")


@pytest.fixture(scope="module")
def first_run(smoke_data):
    return run_chapter3(smoke_data, backend="unet", device="cpu", progress=False)


@pytest.mark.slow
def test_smoke_chapter_tables_curve_leakage_and_reuse(first_run, smoke_data):
    results = first_run
    assert not any(results.reused.values())  # a fresh cache: every network was trained
    assert len(results.reused) == 11
    frame = values_frame(results.table_3_2, ["mix", *INSTRUMENTS])
    assert list(frame.index) == ["baseline", "proposed", "proposed (ideal)"]
    present = frame.to_numpy(dtype=float)[~np.isnan(frame.to_numpy(dtype=float))]
    assert present.size == 11 and np.all((present >= 0) & (present <= 100))
    for row in results.table_3_2.values():
        for item in row.values():
            assert item["low"] <= item["value"] <= item["high"]
    assert list(results.table_3_1) == list(INSTRUMENTS)
    # Ideal and separated input are evaluated on exactly the same test segments (silence judged on the ideal stem).
    for part in INSTRUMENTS:
        ideal, separated = results.evaluations[("ideal", part)][0], results.evaluations[("separated", part)][0]
        assert ideal.n_segments > 0
        np.testing.assert_array_equal(ideal.track_ids, separated.track_ids)
        np.testing.assert_array_equal(ideal.starts, separated.starts)
        assert ideal.embeddings.shape == (ideal.n_segments, 128)
    # The curve: no separation and the chapter's U-Net (smoke trains one separator epoch: no earlier one).
    separators = {point["separator"] for point in results.curve["points"]}
    assert separators == {"mixture (no separation)", "unet (chapter)"}
    chapter_points = [p for p in results.curve["points"] if p["separator"] == "unet (chapter)"]
    for point in chapter_points:  # the chapter's separator on the curve is Table 3.2's "proposed" row
        assert point["accuracy"]["value"] == pytest.approx(results.table_3_2["proposed"][point["part"]]["value"])
    assert set(results.leakage["accuracy"]) == set(INSTRUMENTS) and results.leakage["chance"] == 25.0
    payload = results.to_json()
    text = json.dumps(payload, allow_nan=False)
    assert "/work/" not in text and "/home/" not in text
    assert set(payload) >= {"table_3_1", "table_3_2", "findings", "separator_quality_curve", "leakage_track_id"}
    assert "drums" not in payload["table_3_2"]["baseline"]
    assert all(network["history"] and "val_loss" in network["history"][0] for network in payload["networks"])
    assert payload["separator"]["history"] and payload["separator"]["history"][0]["train_loss"] > 0
    assert {item["verdict"] for item in payload["findings"]} <= {"holds", "does not hold", "inconclusive"}

    # A second run trains nothing and gives the same numbers.
    again = run_chapter3(smoke_data, backend="unet", device="cpu", progress=False)
    assert all(again.reused.values())
    assert again.table_3_2 == results.table_3_2 and again.to_json()["table_3_1"] == payload["table_3_1"]


@pytest.mark.slow
def test_smoke_oracle_separation_equals_ideal(first_run, smoke_data):
    # With the oracle "separator" the separated stems are the ideal ones: the separated networks see the same data
    # with the same seed, so on CPU they must reach exactly the ideal networks' accuracy.
    oracle = run_chapter3(smoke_data, backend="oracle", device="cpu", progress=False, quality_curve=False)
    # Only the five separated networks are new (their artefact key names the oracle source).
    assert [name for name, was_reused in oracle.reused.items() if not was_reused] == [
        network_name(part, "separated") for part in INSTRUMENTS]
    for part in INSTRUMENTS:
        assert oracle.table_3_2["proposed"][part] == oracle.table_3_2["proposed (ideal)"][part]
        np.testing.assert_allclose(oracle.evaluations[("separated", part)][0].embeddings,
                                   oracle.evaluations[("ideal", part)][0].embeddings, atol=1e-6)
    assert oracle.table_3_2["proposed (ideal)"] == first_run.table_3_2["proposed (ideal)"]
    # A perfect estimate: every evaluated SDR is at the +100 dB clamp of separation_metrics; no leakage to test.
    assert (oracle.quality["sdr"] > 50).all() and oracle.leakage["accuracy"] == {}
    assert all(item["verdict"] != "holds" for item in oracle.findings)  # ideal == separated: never "holds"


@pytest.mark.slow
def test_smoke_two_seeds_widen_nothing_they_should_not(smoke_data, first_run):
    twice = run_chapter3(smoke_data, backend="unet", device="cpu", progress=False, seeds=[0, 1],
                         quality_curve=False)
    # Seed 0's networks are reused (same keys) and give the same per-track accuracies.
    assert all(twice.reused[f"{network_name(part, 'ideal')}-seed0"] for part in INSTRUMENTS)
    for key, (accuracies, weights) in first_run.per_track.items():
        np.testing.assert_array_equal(twice.per_track[key][0][0], accuracies[0])
        np.testing.assert_array_equal(twice.per_track[key][1], weights)
        assert twice.per_track[key][0].shape[0] == 2
