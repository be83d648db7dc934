"""Chapter 6 evaluation (``partsim_core.mixquery.evaluation``): metrics against hand computations and independent
formulas, the C0-C3 rank ranges against the thesis's, the planning rules, the written pseudo pieces against their
source stems, the simulated listener on a hand-made manifest, an end-to-end run on a tiny generated dataset with tiny
models and a perfect oracle backend, and (slow) the same on the smoke preset's real models."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml
from scipy.optimize import brentq

from partsim_core import INSTRUMENTS
from partsim_core.data.slakh import open_slakh
from partsim_core.errors import PartsimError
from partsim_core.presets import SynthConfig, get_preset
from partsim_core.mixquery import evaluation as ev
from partsim_core.mixquery.search import SongHit, StemQuery

#: 7 test songs of 6-8 s at the smoke front end's rate (no resampling): ~2 s to generate.
TINY = SynthConfig(n_train=0, n_validation=0, n_test=7, min_seconds=6.0, max_seconds=8.0, sample_rate=16000)
TINY_SIZES = ev.EvaluationSizes(pairs_per_combination=1, relevant_per_query=3, distractors_per_side=1,
                                random_pieces=4, listeners=5)


# --------------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny generated dataset, its pseudo-piece catalog, with PARTSIM_CACHE in a temporary folder."""
    from partsim_core.data.synth import synthesize_dataset

    base = tmp_path_factory.mktemp("mixquery-eval")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(base / "cache"))
        root = synthesize_dataset(base / "data", "smoke", seed=3, jobs=1, progress=False, config=TINY)
        catalog = ev.build_pseudo_catalog("smoke", root, sizes=TINY_SIZES, seed=0, progress=False)
        yield {"root": Path(root), "catalog": catalog, "base": base}


class OracleBackend:
    """A perfect backend: each part's vector is the one-hot of the track that part comes from (zero if absent)."""

    name = "oracle"
    preset = ""
    parts = INSTRUMENTS
    min_seconds = 1.0

    def __init__(self, catalog: ev.PseudoCatalog, sample_rate: int) -> None:
        self.catalog = catalog
        self.songs = catalog.songs
        self.dim = len(self.songs)
        self.sample_rate = sample_rate
        self.model_hash = f"oracle-{catalog.manifest['key']}"

    def embed_song(self, catalog, song) -> np.ndarray:
        out = np.zeros((len(song.segments), len(INSTRUMENTS), self.dim), dtype=np.float32)
        for column, part in enumerate(INSTRUMENTS):
            source = self.catalog.sources(song.song_id)[part]
            if source is not None:
                out[:, column, self.songs.index(source)] = 1.0
        return out


def tiny_backends(seed: int = 0):
    """An untrained CSN of width 2 and an untrained track-level network, on the smoke front end."""
    from partsim_core.csn.conditions import build_csn_model
    from partsim_core.models import PartCNN
    from partsim_core.mixquery import CSNBackend, TrackLevelBackend

    frontend = get_preset("smoke").frontend
    torch.manual_seed(seed)
    csn = CSNBackend(build_csn_model(frontend.n_mels, width=2), frontend, f"tiny-csn-{seed}", preset="smoke")
    track = TrackLevelBackend(PartCNN(frontend.n_mels, width=2), frontend, f"tiny-track-{seed}", preset="smoke")
    return csn, track


# --------------------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------------------


def test_recall_and_reciprocal_rank_by_hand():
    ranking = ["x1", "r1", "x2", "x3", "r2", "x4", "r3", "x5"]
    relevant = {"r1", "r2", "r3"}
    assert ev.recall_at_k(ranking, relevant, 1) == 0.0
    assert ev.recall_at_k(ranking, relevant, 2) == pytest.approx(1 / 3)
    assert ev.recall_at_k(ranking, relevant, 5) == pytest.approx(2 / 3)
    assert ev.recall_at_k(ranking, relevant, 7) == 1.0
    assert ev.recall_at_k(ranking, relevant, 100) == 1.0
    assert ev.reciprocal_rank(ranking, relevant) == 0.5
    assert ev.reciprocal_rank(["x", "y", "z", "r"], {"r"}) == 0.25
    assert ev.reciprocal_rank(["x", "y"], {"r"}) == 0.0
    metrics = ev.query_metrics(ranking, relevant, ks=(2, 7))
    assert metrics == {"recall@2": pytest.approx(1 / 3), "recall@7": 1.0, "rr": 0.5, "first_relevant_rank": 2}
    # A relevant item missing from the ranking counts against recall.
    assert ev.recall_at_k(["r1", "x"], {"r1", "gone"}, 10) == 0.5
    with pytest.raises(PartsimError):
        ev.recall_at_k(ranking, set(), 10)


def test_summary_table_means_per_method_and_combination():
    per_query = pd.DataFrame([
        {"method": "m", "query": "q0", "combination": "drums+bass", "recall@10": 1.0, "recall@100": 1.0, "rr": 1.0},
        {"method": "m", "query": "q1", "combination": "drums+bass", "recall@10": 0.0, "recall@100": 1.0, "rr": 0.1},
        {"method": "m", "query": "q2", "combination": "bass+piano", "recall@10": 0.5, "recall@100": 0.5, "rr": 0.5},
    ])
    table = ev.summary_table(per_query)
    assert list(table.index) == [("m", "drums+bass"), ("m", "bass+piano"), ("m", "all")]
    assert table.loc[("m", "drums+bass"), "recall@10"] == 0.5
    assert table.loc[("m", "drums+bass"), "MRR"] == pytest.approx(0.55)
    assert table.loc[("m", "all"), "recall@100"] == pytest.approx(2.5 / 3)
    assert table.loc[("m", "all"), "queries"] == 3


@pytest.mark.parametrize("n, r", [(1, 1), (5, 1), (6, 2), (7, 3), (6, 6)])
def test_random_expectation_equals_the_mean_over_all_rankings(n, r):
    items = [f"i{number}" for number in range(n)]
    relevant = set(items[:r])
    rankings = list(itertools.permutations(items))
    expected = ev.expected_random_metrics(n, r, ks=(1, 3, 10))
    for k in (1, 3, 10):
        brute = np.mean([ev.recall_at_k(ranking, relevant, k) for ranking in rankings])
        assert expected[f"recall@{k}"] == pytest.approx(brute, abs=1e-12)
    brute_rr = np.mean([ev.reciprocal_rank(ranking, relevant) for ranking in rankings])
    assert expected["rr"] == pytest.approx(brute_rr, abs=1e-12)


def test_random_expectation_of_a_large_catalog_from_the_survival_function():
    # E[1/X] from P(X > r) = C(N - r, R) / C(N, R) (first relevant beyond rank r), summed exactly with fractions.
    n, r = 250, 4
    survival = [Fraction(math.comb(n - rank, r), math.comb(n, r)) for rank in range(0, n + 1)]
    exact = sum(Fraction(1, rank) * (survival[rank - 1] - survival[rank]) for rank in range(1, n + 1))
    expected = ev.expected_random_metrics(n, r)
    assert expected["rr"] == pytest.approx(float(exact), rel=1e-12)
    assert expected["recall@10"] == pytest.approx(10 / 250)
    assert expected["recall@100"] == pytest.approx(100 / 250)
    with pytest.raises(PartsimError):
        ev.expected_random_metrics(3, 4)


@pytest.mark.parametrize("successes, n", [(0, 10), (3, 10), (7, 15), (60, 120), (120, 120), (1, 1)])
def test_wilson_interval_solves_the_score_test(successes, n):
    # The Wilson bounds are the proportions p0 at which the score statistic |p - p0| / sqrt(p0 (1 - p0) / n) = z.
    p = successes / n
    z = 1.959963984540054
    low, high = ev.wilson_interval(successes, n)

    def excess(p0):
        return (p - p0) ** 2 - z * z * p0 * (1 - p0) / n

    # excess < 0 strictly inside the interval; step off p where p itself is a root (p = 0 or 1).
    inside_low, inside_high = max(p - 1e-12, 1e-12), min(p + 1e-12, 1 - 1e-12)
    if successes == 0:
        assert low == pytest.approx(0.0, abs=1e-12)
    else:
        assert low == pytest.approx(brentq(excess, 1e-12, inside_low), abs=1e-9)
    if successes == n:
        assert high == pytest.approx(1.0, abs=1e-12)
    else:
        assert high == pytest.approx(brentq(excess, inside_high, 1 - 1e-12), abs=1e-9)
    assert low <= p <= high
    assert all(math.isnan(value) for value in ev.wilson_interval(0, 0))


# --------------------------------------------------------------------------------------------------------------
# C0-C3 ranges
# --------------------------------------------------------------------------------------------------------------


def test_comparison_ranges_at_the_thesis_size_are_the_thesis_ranges():
    assert ev.comparison_rank_ranges(3108) == {"C0": (2, 100), "C1": (101, 1103), "C2": (1104, 2106),
                                               "C3": (2107, 3108)}


@pytest.mark.parametrize("n", [5, 6, 7, 58, 100, 218, 1000, 5000])
def test_comparison_ranges_cover_ranks_2_to_n_in_order(n):
    ranges = ev.comparison_rank_ranges(n)
    assert list(ranges) == ["C0", "C1", "C2", "C3"]
    assert ranges["C0"] == (2, max(2, round(100 / 3108 * n)))
    covered = [rank for low, high in ranges.values() for rank in range(low, high + 1)]
    assert covered == list(range(2, n + 1))
    sizes = [high - low + 1 for strategy, (low, high) in ranges.items() if strategy != "C0"]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert sizes == sorted(sizes, reverse=True)


def test_comparison_ranges_refuse_a_too_short_ranking():
    with pytest.raises(PartsimError, match="too short"):
        ev.comparison_rank_ranges(4)


def test_thesis_design_table_lists_table_6_1():
    table = ev.thesis_design_table(58)
    assert list(table.index) == ["C0", "C1", "C2", "C3"]
    assert table.loc["C0", "thesis ranks"] == "2-100 of 3108"
    assert "vocals+drums: 6" in table.loc["C0", "thesis query sets (stems: rank)"]
    assert "2616" in table.loc["C3", "thesis query sets (stems: rank)"]
    assert table.loc["C3", "ours ranks"].endswith("of 58")


# --------------------------------------------------------------------------------------------------------------
# planning (pure)
# --------------------------------------------------------------------------------------------------------------


def hand_songs(count: int = 8) -> tuple[dict, dict]:
    """Ground-truth entries of ``count`` songs of 25 s; song k lacks part k % 5 for odd k, every guitar plays only
    in 8-25 s, and the first song's piano only in 15-25 s."""
    songs, seconds = {}, {}
    for number in range(count):
        parts = {}
        for column, part in enumerate(INSTRUMENTS):
            if number % 2 and column == number % 5:
                continue
            active = [[8.0, 25.0]] if part == "guitar" else [[0.0, 25.0]]
            if number == 0 and part == "piano":
                active = [[15.0, 25.0]]
            parts[part] = {"style": f"style{(number + column) % 3}", "program": column, "active": active}
        songs[f"Track{number + 1:05d}"] = {"parts": parts, "duration": 25.0}
        seconds[f"Track{number + 1:05d}"] = 25.0
    return songs, seconds


def test_plan_follows_the_rules():
    songs, seconds = hand_songs()
    sizes = ev.EvaluationSizes(pairs_per_combination=2, relevant_per_query=3, distractors_per_side=2,
                               random_pieces=5, max_piece_seconds=20.0)
    plan = ev.plan_pseudo_catalog(songs, seconds, sizes, seed=4, sample_rate=100)
    assert plan == ev.plan_pseudo_catalog(songs, seconds, sizes, seed=4, sample_rate=100)  # seeded
    assert plan != ev.plan_pseudo_catalog(songs, seconds, sizes, seed=5, sample_rate=100)
    queries = [ev.EvaluationQuery(**query) for query in plan["queries"]]
    assert len(queries) == 2 * len(ev.PART_COMBINATIONS) and not plan["skipped_combinations"]
    for query in queries:
        assert query.song_a != query.song_b
        assert (query.part_a, query.part_b) in ev.PART_COMBINATIONS
        # Both query parts play at least half of the pieces' first 20 s (every piece is 20 s long here).
        for song, part in ((query.song_a, query.part_a), (query.song_b, query.part_b)):
            (start, end), = songs[song]["parts"][part]["active"]
            assert min(end, 20.0) - start >= 10.0
        assert ("piano", "Track00001") not in {(query.part_a, query.song_a), (query.part_b, query.song_b)}
        for song, part, segment in ((query.song_a, query.part_a, query.segment_a),
                                    (query.song_b, query.part_b, query.segment_b)):
            spans = songs[song]["parts"][part]["active"]
            start, end = 10.0 * segment, min(10.0 * segment + 10.0, 25.0)
            played = sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans)
            assert played >= 0.5 * (end - start) and end - start >= ev.QUERY_MIN_SECONDS
        own = {piece: entry for piece, entry in plan["pieces"].items() if entry["query"] == query.query_id}
        kinds = pd.Series([entry["kind"] for entry in own.values()]).value_counts().to_dict()
        assert kinds == {"relevant": 3, "distractor_a": 2, "distractor_b": 2}
        # Relevance by the definition (p from A and q from B) over all pieces: exactly the planted ones.
        relevant = {piece for piece, entry in plan["pieces"].items()
                    if (entry["sources"][query.part_a], entry["sources"][query.part_b]) == (query.song_a, query.song_b)}
        assert relevant == {piece for piece, entry in own.items() if entry["kind"] == "relevant"}
        for entry in own.values():
            sources = entry["sources"]
            others = [sources[part] for part in INSTRUMENTS if part not in (query.part_a, query.part_b)]
            assert not {query.song_a, query.song_b} & set(others)
            if entry["kind"] == "relevant":
                assert (sources[query.part_a], sources[query.part_b]) == (query.song_a, query.song_b)
            elif entry["kind"] == "distractor_a":
                assert sources[query.part_a] == query.song_a and sources[query.part_b] != query.song_b
            else:
                assert sources[query.part_b] == query.song_b and sources[query.part_a] != query.song_a
            for part, source in sources.items():
                assert source is None or part in songs[source]["parts"]
    pieces = plan["pieces"]
    assert sum(entry["kind"] == "random" for entry in pieces.values()) == 5
    assert all(entry["seconds"] == 20.0 and entry["samples"] == 2000 for entry in pieces.values())
    assert sorted(pieces) == [f"Track{ev.PIECE_NUMBER_BASE + number:05d}" for number in range(len(pieces))]


def test_plan_skips_combinations_without_a_pair_and_refuses_too_few_songs():
    songs, seconds = hand_songs(4)
    for entry in songs.values():
        entry["parts"].pop("guitar", None)
    plan = ev.plan_pseudo_catalog(songs, seconds, ev.EvaluationSizes(pairs_per_combination=1), seed=0)
    assert set(plan["skipped_combinations"]) == {f"{a}+{b}" for a, b in ev.PART_COMBINATIONS if "guitar" in (a, b)}
    assert all(entry["sources"]["guitar"] is None for entry in plan["pieces"].values())
    with pytest.raises(PartsimError, match="at least 3"):
        ev.plan_pseudo_catalog(dict(list(songs.items())[:2]), seconds, ev.EvaluationSizes(pairs_per_combination=1))
    with pytest.raises(PartsimError, match="pairs_per_combination"):
        ev.plan_pseudo_catalog(songs, seconds, ev.EvaluationSizes(pairs_per_combination=0))


def test_query_segments_prefer_where_the_part_plays():
    truth = {"active": [[12.0, 25.0]]}
    assert ev.query_segments(truth, 25.0) == [1, 2]  # 20-25 s: 5 s, all playing
    assert ev.query_segments(truth, 22.0) == [1]  # 20-22 s is shorter than QUERY_MIN_SECONDS
    assert ev.query_segments({"active": [[8.0, 11.0]]}, 30.0) == [0, 1]  # plays a little in both: 2 s, then 1 s
    assert ev.query_segments({"active": []}, 30.0) == []
    assert ev.query_segments(None, 30.0) == []


# --------------------------------------------------------------------------------------------------------------
# the written catalog
# --------------------------------------------------------------------------------------------------------------


def int16(path: Path) -> np.ndarray:
    audio, _ = sf.read(str(path), dtype="int16")
    return audio


def test_written_pieces_hold_their_sources_excerpts(tiny):
    catalog: ev.PseudoCatalog = tiny["catalog"]
    source = open_slakh(tiny["root"])
    written = open_slakh(catalog.root)
    assert {track.track_id for track in written.tracks("test")} == set(catalog.catalog_ids)
    source_frames = {track.track_id: sf.info(str(track.mix_path)).frames for track in source.tracks("test")}
    assert catalog.songs == sorted(source_frames)
    for query in catalog.queries:
        planted = [piece for piece, entry in catalog.pieces.items()
                   if entry["query"] == query.query_id and entry["kind"] == "relevant"]
        assert len(planted) == TINY_SIZES.relevant_per_query
        assert sorted(planted) == catalog.relevant(query)  # no piece is relevant by accident
    for piece_id, entry in catalog.pieces.items():
        piece = written.track(piece_id)
        used = [song for song in entry["sources"].values() if song is not None]
        length = min(source_frames[song] for song in used)
        mix = int16(piece.mix_path)
        assert mix.shape == (length,)
        groups = piece.stems_by_group()
        assert set(groups) == {part for part, song in entry["sources"].items() if song is not None}
        total = np.zeros(length, dtype=np.float64)
        for part, stems in groups.items():
            originals = source.track(entry["sources"][part]).stems_by_group()[part]
            assert len(stems) == len(originals)
            for stem, original in zip(stems, originals):
                excerpt = int16(stem.audio_path)
                np.testing.assert_array_equal(excerpt, int16(original.audio_path)[:length])
                assert stem.program_num == original.program_num and stem.is_drum == original.is_drum
                total += excerpt
        # The mix is the stems' sum at one gain (peak -1 dBFS), rounded to 16 bits.
        gain = float(piece.metadata["overall_gain"])
        np.testing.assert_allclose(mix, total * gain, atol=1.0)
        assert np.abs(mix).max() == pytest.approx(32768 * 10 ** (-1 / 20), abs=2)
        assert piece.metadata["partsim_pseudo_piece"] == entry["sources"]
    # The test songs are the dataset's own files.
    for song in catalog.songs:
        np.testing.assert_array_equal(int16(written.track(song).mix_path), int16(source.track(song).mix_path))


def test_catalog_is_reused_and_keyed(tiny):
    first = tiny["catalog"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
        again = ev.build_pseudo_catalog("smoke", tiny["root"], sizes=TINY_SIZES, seed=0, progress=False)
        other = ev.build_pseudo_catalog("smoke", tiny["root"], sizes=TINY_SIZES, seed=1, progress=False,
                                        out=tiny["base"] / "seed1")
    assert again.reused and again.root == first.root and again.manifest == first.manifest
    assert not other.reused and other.manifest["key"] != first.manifest["key"]
    ground_truth = first.ground_truth()
    assert list(ground_truth.index) == [query.query_id for query in first.queries]
    assert (ground_truth["relevant"] == TINY_SIZES.relevant_per_query).all()


def test_a_dataset_without_ground_truth_is_refused(tiny, tmp_path):
    copy = tmp_path / "no-truth"
    shutil.copytree(tiny["root"], copy)
    (copy / ev.GROUND_TRUTH_FILE).unlink()
    with pytest.raises(PartsimError, match="no partsim_ground_truth.json.*generator.*Slakh2100 has no"):
        ev.build_pseudo_catalog("smoke", copy, sizes=TINY_SIZES, progress=False, out=tmp_path / "cat")
    assert not (tmp_path / "cat").exists()


def test_cli_refuses_unknown_backends_and_data_without_ground_truth(tiny, tmp_path, capsys):
    from partsim_core.cli import main
    from partsim_core.cli.mixquery import parse_backends

    assert parse_backends("csn, separated,csn") == ["csn", "separated"]
    assert main(["mixquery", "evaluate", "--preset", "smoke", "--backends", "csn,nope"]) == 2
    assert "unknown backend(s) nope" in capsys.readouterr().err
    copy = tmp_path / "no-truth"
    shutil.copytree(tiny["root"], copy)
    (copy / ev.GROUND_TRUTH_FILE).unlink()
    assert main(["mixquery", "evaluate", "--preset", "smoke", "--data-root", str(copy), "--no-progress"]) == 2
    assert "no ground truth" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# simulated listeners
# --------------------------------------------------------------------------------------------------------------


def hand_catalog(tmp_path: Path) -> tuple[ev.PseudoCatalog, ev.EvaluationQuery]:
    """A manifest-only catalog: A (drums rock 0-20 s, bass funk 0-5 s), B (bass funk), C (drums rock, bass octave),
    D (drums jazz, bass funk); pieces from them; the query is A's drums + B's bass."""
    def song(drums, bass, bass_active=((0.0, 20.0),)):
        return {"seconds": 20.0, "samples": 2000, "truth": {"parts": {
            "drums": {"style": drums, "active": [[0.0, 20.0]]},
            "bass": {"style": bass, "active": [list(span) for span in bass_active]}}}}

    def piece(drums, bass):
        return {"kind": "random", "query": None, "seconds": 20.0, "samples": 2000,
                "sources": {"drums": drums, "bass": bass, "piano": None, "guitar": None, "others": None}}

    query = ev.EvaluationQuery("q000", "A", "drums", 0, "B", "bass", 0)
    manifest = {"format_version": ev.CATALOG_FORMAT_VERSION, "key": "hand",
                "songs": {"A": song("rock", "funk", ((0.0, 5.0),)), "B": song("jazz", "funk"),
                          "C": song("rock", "octave"), "D": song("jazz", "funk")},
                "pieces": {"P1": piece("A", "B"), "P2": piece("C", "B"), "P3": piece("A", "A"), "P4": piece("D", "C"),
                           "P5": piece(None, "D"), "P6": piece("C", "C")},
                "queries": [query.to_dict()]}
    return ev.PseudoCatalog(tmp_path, manifest), query


def test_listener_score_by_hand(tmp_path):
    catalog, query = hand_catalog(tmp_path)
    score = ev.listener_score
    assert score(catalog, "P1", 0, query) == 2.0  # A's drums + B's bass
    assert score(catalog, "P2", 0, query) == 1.5  # drums of the same style (rock) + B's bass
    assert score(catalog, "P3", 0, query) == 1.5  # A's drums + a funk bass that plays 5 of 10 s
    assert score(catalog, "P3", 1, query) == 1.0  # 10-20 s: A's bass is silent
    assert score(catalog, "P4", 0, query) == 0.0  # jazz drums, octave bass
    assert score(catalog, "P5", 0, query) == 0.5  # no drums, a funk bass
    assert score(catalog, "C", 0, query) == 0.5  # a test song: rock drums, octave bass
    assert catalog.relevant(query) == ["P1"]


def test_simulated_listeners_follow_scores_and_share_draws(tmp_path):
    catalog, query = hand_catalog(tmp_path)
    order = ["P1", "P2", "P3", "P5", "C", "P6", "D", "P4"]  # ranked by score, best first (ties in any order)
    good = {query.query_id: [SongHit(song, 0.0, 0) for song in order]}
    bad = {query.query_id: [SongHit(song, 0.0, 0) for song in reversed(order)]}
    result = ev.simulate_abx({"good": good, "same": good, "bad": bad}, catalog, listeners=40,
                             listener_noise=(0.0, 0.0), seed=3)
    trials = result.trials
    assert result.n_ranked == 8 and result.label == "SIMULATED"
    assert len(trials) == 3 * 4 * 40
    for strategy, (low, high) in result.ranges.items():
        ranks = trials.loc[trials["strategy"] == strategy, "rank"]
        assert ranks.between(low, high).all()
    # Without noise the answer is the sign of the score difference; an exact tie is a coin flip.
    decided = trials[trials["target_score"] != trials["comparison_score"]]
    assert (decided["correct"] == (decided["target_score"] > decided["comparison_score"])).all()
    # Identical rankings get identical answers (common random numbers).
    columns = ["strategy", "rank", "listener", "correct"]
    np.testing.assert_array_equal(trials.loc[trials["method"] == "good", columns].to_numpy(),
                                  trials.loc[trials["method"] == "same", columns].to_numpy())
    accuracy = result.accuracy()
    assert accuracy.loc[("good", "C3"), "accuracy"] == 1.0 and accuracy.loc[("bad", "C3"), "accuracy"] == 0.0
    row = accuracy.loc[("good", "C0")]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(ev.wilson_interval(int(row["correct"]), 40))
    by_part = result.accuracy(by_part=True)
    assert set(by_part.index.get_level_values("part")) == {"drums", "bass"}
    assert by_part["answers"].sum() == 2 * len(trials)
    again = ev.simulate_abx({"good": good, "same": good, "bad": bad}, catalog, listeners=40,
                            listener_noise=(0.0, 0.0), seed=3)
    pd.testing.assert_frame_equal(trials, again.trials)
    json.dumps(result.to_json())
    with pytest.raises(PartsimError, match="different lengths"):
        ev.simulate_abx({"good": good, "short": {query.query_id: good[query.query_id][:-1]}}, catalog)


def test_query_maps_to_mix_for_a_track_level_index():
    query = ev.EvaluationQuery("q", "A", "drums", 1, "B", "bass", 0)
    assert query.stem_queries() == [StemQuery("A", "drums", 1), StemQuery("B", "bass", 0)]
    assert query.stem_queries(("mix",)) == [StemQuery("A", "mix", 1), StemQuery("B", "mix", 0)]
    with pytest.raises(PartsimError):
        query.stem_queries(("piano",))


# --------------------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------------------


def check_evaluation(result: ev.MixQueryEvaluation, methods: list[str]) -> None:
    """Shape and ranges of a finished evaluation; the oracle (when present) must be perfect."""
    catalog = result.catalog
    combinations = list(dict.fromkeys(query.combination for query in catalog.queries))
    assert result.methods == methods
    assert list(result.table.index) == [(method, combination) for method in methods
                                        for combination in [*combinations, "all"]]
    assert list(result.table.columns) == ["recall@10", "recall@100", "MRR", "queries"]
    values = result.table[["recall@10", "recall@100", "MRR"]].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    n_ranked = len(catalog.catalog_ids) - 2
    per_query = result.per_query
    assert (per_query["candidates"] == n_ranked).all()
    for query in catalog.queries:
        relevant = set(catalog.relevant(query))
        row = per_query[(per_query["method"] == "random") & (per_query["query"] == query.query_id)].iloc[0]
        assert row["rr"] == pytest.approx(ev.expected_random_metrics(n_ranked, len(relevant))["rr"])
        for method in methods[:-1]:
            ranking = [hit.song for hit in result.rankings[method][query.query_id]]
            assert len(ranking) == n_ranked and {query.song_a, query.song_b}.isdisjoint(ranking)
            # recomputed from the ranking by hand
            hits = [position for position, song in enumerate(ranking, start=1) if song in relevant]
            mine = per_query[(per_query["method"] == method) & (per_query["query"] == query.query_id)].iloc[0]
            assert mine["rr"] == pytest.approx(1 / hits[0])
            assert mine["recall@10"] == pytest.approx(sum(position <= 10 for position in hits) / len(relevant))
    if "oracle" in methods:
        oracle = result.table.loc["oracle"]
        assert (catalog.ground_truth()["relevant"] <= 10).all()  # so recall@10 = 1 is reachable
        assert (oracle["recall@10"] == 1.0).all() and (oracle["MRR"] == 1.0).all()
        assert (oracle["MRR"] > result.table.loc["random", "MRR"]).all()
    accuracy = result.abx.accuracy()
    assert set(accuracy.index.get_level_values("method")) == set(methods)
    assert accuracy["accuracy"].between(0, 1).all() and (accuracy["label"] == "SIMULATED").all()
    text = json.dumps(result.to_json())
    assert "SIMULATED" in text


def test_end_to_end_on_a_tiny_dataset_with_tiny_models_and_an_oracle(tiny, tmp_path, capsys):
    catalog = tiny["catalog"]
    csn, track = tiny_backends()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
        oracle = OracleBackend(catalog, csn.sample_rate)
        result = ev.run_evaluation("smoke", tiny["root"], [csn, oracle], track_level=track, sizes=TINY_SIZES,
                                   catalog=catalog, progress=False)
        # Rerunning reuses the indices and gives the same numbers.
        again = ev.run_evaluation("smoke", tiny["root"], [csn, oracle], track_level=track, sizes=TINY_SIZES,
                                  catalog=catalog, progress=False)
    check_evaluation(result, ["csn", "oracle", "track", "random"])
    pd.testing.assert_frame_equal(result.table, again.table)
    # The track-level index has the one part "mix".
    assert json.loads((Path(result.indices["track"]) / "index.json").read_text())["parts"] == ["mix"]
    with pytest.raises(PartsimError, match="two methods named"):
        ev.run_evaluation("smoke", tiny["root"], [oracle, oracle], track_level=False, sizes=TINY_SIZES,
                          catalog=catalog, progress=False)

    # The CLI prints the tables and a summary line and writes the JSON (the evaluation itself replaced by this one).
    from partsim_core.cli import main

    calls = []

    def fake_run_evaluation(preset, **options):
        calls.append((preset, options))
        return result

    out = tmp_path / "eval.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ev, "run_evaluation", fake_run_evaluation)
        assert main(["mixquery", "evaluate", "--preset", "smoke", "--backends", "separated", "--no-track-level",
                     "--out", str(out), "--no-progress"]) == 0
    assert calls[0][0] == "smoke" and calls[0][1]["backends"] == ["separated"]
    assert calls[0][1]["track_level"] is False
    printed = capsys.readouterr().out
    assert "SIMULATED C0-C3" in printed and "oracle" in printed and catalog.queries[0].combination in printed
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["mrr"]["oracle"] == 1.0 and summary["out"] == str(out)
    written = json.loads(out.read_text())
    assert written["simulated_abx"]["label"] == "SIMULATED"
    assert len(written["table"]) == len(result.table)


@pytest.mark.slow
def test_smoke_evaluation_with_the_smoke_models():
    # The smoke preset's real (cached or trained) CSN and track-level network, beside the oracle, on the smoke
    # dataset's pseudo-piece catalog (the repository cache, as the other slow tests use).
    catalog = ev.build_pseudo_catalog("smoke", progress=False)
    assert catalog.summary()["songs"] >= 3
    oracle = OracleBackend(catalog, get_preset("smoke").frontend.sample_rate)
    result = ev.run_evaluation("smoke", backends=["csn", oracle], catalog=catalog, device="cpu", progress=False)
    check_evaluation(result, ["csn", "oracle", "track", "random"])
    assert os.path.isdir(result.indices["csn"])
    yaml.safe_load((catalog.root / "test" / catalog.catalog_ids[-1] / "metadata.yaml").read_text())
