"""Chapter 6's run (``partsim_core.mixquery.run``, ``partsim mixquery run``): an end-to-end run on a tiny generated
dataset with tiny models and a perfect oracle (every number checked against the rankings by hand, every cell with
an interval, findings with verdicts), the CSN's distance chosen by measurement on validation pieces, the chapter
JSON through the output rule, and (slow) the same with the smoke preset's real models in a private cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from test_mixquery_pseudo_catalog import TINY_SIZES, OracleBackend, tiny  # noqa: F401 - fixture

from partsim_core import INSTRUMENTS
from partsim_core.cli import main
from partsim_core.data.dataset import load_dataset
from partsim_core.data.synth import GROUND_TRUTH_FILE
from partsim_core.errors import PartsimError
from partsim_core.mixquery import run as chapter
from partsim_core.mixquery.metrics import expected_random_metrics
from partsim_core.presets import get_preset
from partsim_core.stats import VERDICTS


def tiny_backends(seed: int = 0):
    """An untrained CSN of width 2 and an untrained track-level network, on the smoke front end."""
    from partsim_core.csn.network import build_csn_model
    from partsim_core.mixquery import CSNBackend, TrackLevelBackend
    from partsim_core.models import PartCNN

    frontend = get_preset("smoke").frontend
    torch.manual_seed(seed)
    csn = CSNBackend(build_csn_model(frontend.n_mels, width=2), frontend, f"tiny-csn-{seed}", preset="smoke")
    track = TrackLevelBackend(PartCNN(frontend.n_mels, width=2), frontend, f"tiny-track-{seed}", preset="smoke")
    return csn, track


class NormCodedBackend(OracleBackend):
    """Named ``csn``: every part vector points the same way and its *norm* says which song it comes from, so only
    the Euclidean distance can tell the songs apart (cosine sees every vector as equal)."""

    name = "csn"

    def __init__(self, catalogs, sample_rate: int) -> None:
        super().__init__(catalogs[0], sample_rate)
        # Both catalogs number their pieces from Track90001: look sources up per catalogue folder.
        self.sources = {catalog.root.resolve(): {song: catalog.sources(song) for song in catalog.catalog_ids}
                        for catalog in catalogs}
        self.order = sorted({s for by_song in self.sources.values() for sources in by_song.values()
                             for s in sources.values() if s})
        self.dim = 2
        self.model_hash = "norm-coded-" + "-".join(catalog.manifest["key"] for catalog in catalogs)

    def embed_song(self, catalog, song) -> np.ndarray:
        out = np.zeros((len(song.segments), len(INSTRUMENTS), 2), dtype=np.float32)
        for column, part in enumerate(INSTRUMENTS):
            source = self.sources[catalog.root.resolve()][song.song_id][part]
            if source is not None:
                out[:, column, 0] = 1.0 + self.order.index(source)
        return out


def is_cell(cell) -> bool:
    return set(cell) == {"value", "low", "high"} and (
        np.isnan(cell["value"]) or cell["low"] - 1e-12 <= cell["value"] <= cell["high"] + 1e-12)


def check_evaluation(result: chapter.MixQueryEvaluation, methods: list[str]) -> None:
    """Shape and ranges of a finished evaluation; every metric recomputed from the rankings by hand."""
    catalog = result.catalog
    combinations = list(dict.fromkeys(query.combination for query in catalog.queries))
    assert result.methods == methods
    assert list(result.table.index) == [(method, combination) for method in methods
                                        for combination in [*combinations, "all"]]
    values = result.table[["recall@10", "recall@100", "MRR"]].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    n_ranked = len(catalog.catalog_ids) - 2
    per_query = result.per_query[result.per_query["seed"].isin([result.seeds[0], np.nan])
                                 | (result.per_query["method"] == "random")]
    assert (per_query["candidates"] == n_ranked).all()
    for query in catalog.queries:
        relevant = set(catalog.relevant(query))
        row = per_query[(per_query["method"] == "random") & (per_query["query"] == query.query_id)].iloc[0]
        assert row["rr"] == pytest.approx(expected_random_metrics(n_ranked, len(relevant))["rr"])
        for method in methods[:-1]:
            ranking = [hit.song for hit in result.rankings[method][query.query_id]]
            assert len(ranking) == n_ranked and {query.song_a, query.song_b}.isdisjoint(ranking)
            hits = [position for position, song in enumerate(ranking, start=1) if song in relevant]
            mine = per_query[(per_query["method"] == method) & (per_query["query"] == query.query_id)].iloc[0]
            assert mine["rr"] == pytest.approx(1 / hits[0])
            assert mine["recall@10"] == pytest.approx(sum(position <= 10 for position in hits) / len(relevant))
    # Every cell carries an interval that contains its value; the overall value is the table's mean.
    for method, by_combination in result.cells.items():
        for combination, cells in by_combination.items():
            assert set(cells) == {"recall@10", "recall@100", "MRR"} and all(map(is_cell, cells.values()))
            assert cells["MRR"]["value"] == pytest.approx(result.table.loc[(method, combination), "MRR"])
    if "oracle" in methods:
        assert (catalog.ground_truth()["relevant"] <= 10).all()  # so recall@10 = 1 is reachable
        oracle = result.cells["oracle"]["all"]
        assert oracle["recall@10"] == {"value": 1.0, "low": 1.0, "high": 1.0}
        assert oracle["MRR"]["value"] == 1.0
    accuracy = result.abx.accuracy()
    assert set(accuracy.index.get_level_values("method")) == set(methods)
    assert accuracy["accuracy"].between(0, 1).all() and (accuracy["label"] == "SIMULATED").all()
    assert {item["verdict"] for item in result.findings} <= set(VERDICTS)
    for item in result.findings:
        low, high = item["interval"]
        assert set(item) >= {"claim", "verdict", "estimate", "interval"} and low <= item["estimate"] <= high


def test_end_to_end_on_a_tiny_dataset_with_tiny_models_and_an_oracle(tiny, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
    catalog = tiny["catalog"]
    csn, track = tiny_backends()
    oracle = OracleBackend(catalog, csn.sample_rate)
    result = chapter.run_evaluation(tiny["data"], [csn, oracle], track_level=track, sizes=TINY_SIZES,
                                    catalog=catalog, seeds=2, progress=False)
    check_evaluation(result, ["csn", "oracle", "track", "random"])
    assert result.seeds == [0, 1] and set(result.per_query["seed"].dropna()) == {0, 1}
    assert result.abx.trials["seed"].nunique() == 2
    # The CSN's distance was measured on validation pieces (never the test split) and chosen by the stated rule.
    selection = result.selection
    assert selection.split == "validation" and result.distances == {"csn": selection.chosen, "oracle": "cosine",
                                                                       "track": "cosine"}
    mrr = {distance: cells["MRR"]["value"] for distance, cells in selection.cells.items()}
    assert selection.chosen == ("euclidean" if mrr["euclidean"] > mrr["cosine"] else "cosine")
    assert selection.difference["value"] == pytest.approx(mrr["euclidean"] - mrr["cosine"])
    # Findings: the oracle beats random ranking and the track-level network, with a verdict from the interval.
    claims = {item["claim"]: item for item in result.findings}
    oracle_vs_random = next(item for claim, item in claims.items() if "oracle" in claim and "random" in claim)
    assert oracle_vs_random["verdict"] == "holds" and oracle_vs_random["interval"][0] > 0
    assert result.differences["oracle - random"]["value"] == pytest.approx(
        result.cells["oracle"]["all"]["MRR"]["value"] - result.cells["random"]["all"]["MRR"]["value"])
    # The chapter JSON: cells and findings in the shared schema, no absolute path of this machine.
    written = result.to_json()
    text = json.dumps(written)
    assert str(tiny["base"]) not in text and "SIMULATED" in text
    assert all(is_cell(cell) for by_method in written["figure_6_8_simulated"].values() for cell in by_method.values())
    assert written["csn_distance_selection"]["chosen"] == selection.chosen
    # Rerunning reuses the cached embeddings and gives the same numbers; two methods of one name are refused.
    again = chapter.run_evaluation(tiny["data"], [csn, oracle], track_level=track, sizes=TINY_SIZES, catalog=catalog,
                                   seeds=2, progress=False)
    pd.testing.assert_frame_equal(result.table, again.table)
    with pytest.raises(PartsimError, match="two methods named"):
        chapter.run_evaluation(tiny["data"], [oracle, oracle], track_level=False, sizes=TINY_SIZES, catalog=catalog,
                               csn_distance="cosine", progress=False)


def test_csn_distance_is_chosen_by_measured_recall(tiny, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
    from partsim_core.mixquery.pseudo_catalog import build_pseudo_catalog

    validation = build_pseudo_catalog(tiny["data"], split="validation", sizes=TINY_SIZES, seed=0, progress=False)
    rate = get_preset("smoke").frontend.sample_rate
    norm_coded = NormCodedBackend([tiny["catalog"], validation], rate)
    selection = chapter.select_csn_distance(validation, [norm_coded])
    assert selection.chosen == "euclidean"  # only the norms carry the songs
    assert selection.cells["euclidean"]["MRR"]["value"] == 1.0 > selection.cells["cosine"]["MRR"]["value"]
    assert selection.difference["low"] > 0
    # A one-hot oracle (direction carries the song, every norm 1): both distances rank perfectly; a tie keeps cosine.
    oracle = OracleBackend(validation, rate)
    oracle.name = "csn"
    assert chapter.select_csn_distance(validation, [oracle]).chosen == "cosine"
    # The run uses the chosen distance on the test pieces: perfect here; a forced cosine is not.
    chosen = chapter.run_evaluation(tiny["data"], [norm_coded], track_level=False, sizes=TINY_SIZES,
                                    catalog=tiny["catalog"], validation=validation, progress=False)
    assert chosen.distances["csn"] == "euclidean" and chosen.cells["csn"]["all"]["MRR"]["value"] == 1.0
    forced = chapter.run_evaluation(tiny["data"], [norm_coded], track_level=False, sizes=TINY_SIZES,
                                    catalog=tiny["catalog"], csn_distance="cosine", progress=False)
    assert forced.selection is None and forced.cells["csn"]["all"]["MRR"]["value"] < 1.0
    with pytest.raises(PartsimError, match="unknown distance"):
        chapter.run_evaluation(tiny["data"], [norm_coded], csn_distance="manhattan", progress=False)


def test_cli_run_writes_the_chapter_json_under_the_output_rule(tiny, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setenv("PARTSIM_CACHE", str(tiny["base"] / "cache"))
    csn, track = tiny_backends()
    result = chapter.run_evaluation(tiny["data"], [csn, OracleBackend(tiny["catalog"], csn.sample_rate)],
                                    track_level=track, sizes=TINY_SIZES, catalog=tiny["catalog"], progress=False)
    calls = []

    def fake_run_evaluation(data, **options):
        calls.append((data, options))
        return result

    monkeypatch.setattr(chapter, "run_evaluation", fake_run_evaluation)
    monkeypatch.setattr("partsim_core.cli.mixquery.load_dataset", lambda preset, root, progress: tiny["data"])
    out = tmp_path / "ch6.json"
    words = ["mixquery", "run", "--preset", "smoke", "--backends", "separated", "--no-track-level", "--seeds", "3",
             "--out", str(out), "--no-progress"]
    assert main(words) == 0
    assert calls[0][0] is tiny["data"] and calls[0][1]["backends"] == ["separated"]
    assert calls[0][1]["track_level"] is False and calls[0][1]["seeds"] == 3
    printed = capsys.readouterr().out
    assert "SIMULATED C0-C3" in printed and "oracle" in printed and "Findings:" in printed
    assert str(tiny["base"]) not in printed  # the catalogue is named by its place in the cache
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["mrr"]["oracle"] == 1.0 and summary["out"] == str(out)
    written = json.loads(out.read_text())
    assert written["partsim"]["command"] == "partsim mixquery run"
    assert written["retrieval"]["oracle"]["all"]["MRR"]["value"] == 1.0
    assert all(set(item) >= {"claim", "verdict", "estimate", "interval"} for item in written["findings"])
    # An existing result is replaced only with --fresh, and a file partsim did not write never.
    assert main(words) == 2 and "--fresh" in capsys.readouterr().err
    assert main([*words, "--fresh"]) == 0
    capsys.readouterr()
    foreign = tmp_path / "mine.json"
    foreign.write_text("{}")
    assert main([*words[:-3], "--out", str(foreign), "--fresh", "--no-progress"]) == 2
    assert "not written by partsim" in capsys.readouterr().err and foreign.read_text() == "{}"


def test_cli_run_refusals(tiny, tmp_path, monkeypatch, capsys):  # noqa: F811
    from partsim_core.cli.mixquery import parse_backends

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    assert parse_backends("csn, separated,csn") == ["csn", "separated"]
    assert main(["mixquery", "run", "--preset", "smoke", "--backends", "csn,nope"]) == 2
    assert "unknown backend(s) nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # renamed to run
        main(["mixquery", "evaluate", "--preset", "smoke"])
    capsys.readouterr()
    copy = tmp_path / "no-truth"
    shutil.copytree(tiny["root"], copy)
    (copy / GROUND_TRUTH_FILE).unlink()
    assert main(["mixquery", "run", "--preset", "smoke", "--data-root", str(copy), "--no-progress",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "no ground truth" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_smoke_run_with_the_smoke_models(tmp_path, monkeypatch):
    # The smoke preset's real models (trained in a private cache), the oracle beside them, the smoke dataset.
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    data = load_dataset("smoke")
    from partsim_core.mixquery.pseudo_catalog import build_pseudo_catalog

    catalog = build_pseudo_catalog(data, progress=False)
    oracle = OracleBackend(catalog, data.preset.frontend.sample_rate)
    result = chapter.run_evaluation(data, ["csn", oracle], catalog=catalog, device="cpu", progress=False)
    check_evaluation(result, ["csn", "oracle", "track", "random"])
    assert result.selection is not None and result.selection.split in ("validation", "train")
