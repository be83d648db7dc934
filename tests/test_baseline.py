"""Chapter 3 (``partsim_core.baseline.run``): table layouts, and a smoke-sized run of the whole chapter."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from partsim_core import INSTRUMENTS
from partsim_core.baseline.run import (
    NetworkEvaluation,
    check_backend,
    load_dataset,
    run_chapter3,
    run_name,
    table_3_1,
    table_3_2,
    train_part_network,
)
from partsim_core.errors import PartsimError
from partsim_core.book.thesis_tables import load_thesis_table


def _evaluation(kind: str, part: str, accuracy: float) -> NetworkEvaluation:
    return NetworkEvaluation(part=part, input=kind, accuracy=accuracy, track_ids=np.array(["a", "b"]),
                             starts=np.array([0, 0]), embeddings=np.zeros((2, 3)), reused=False, train_seconds=0.0)


def test_table_3_2_has_the_thesis_layout_plus_guitar_and_others():
    evaluations = {("mix", "mix"): _evaluation("mix", "mix", 90.0)}
    for offset, part in enumerate(INSTRUMENTS):
        evaluations[("ideal", part)] = _evaluation("ideal", part, 80.0 + offset)
        evaluations[("separated", part)] = _evaluation("separated", part, 50.0 + offset)
    table = table_3_2(evaluations)
    thesis = load_thesis_table("3.2")
    assert list(table.index) == list(thesis.index)
    assert list(table.columns) == ["mix", *INSTRUMENTS]
    assert set(thesis.columns) <= set(table.columns)
    assert table.at["baseline", "mix"] == 90.0
    assert table.at["proposed", "piano"] == 52.0 and table.at["proposed (ideal)", "others"] == 84.0
    # Cells the thesis leaves empty stay empty.
    assert table.loc["baseline", list(INSTRUMENTS)].isna().all()
    assert table.loc[["proposed", "proposed (ideal)"], "mix"].isna().all()


def test_table_3_1_means_per_part_and_split():
    rows = [("train", "t1", "drums", 1.0, 10.0, 2.0), ("train", "t2", "drums", 3.0, 12.0, 4.0),
            ("test", "t3", "drums", -1.0, 5.0, 0.5), ("test", "t3", "bass", -4.0, 2.0, -2.0)]
    separation = pd.DataFrame(rows, columns=["split", "track", "part", "sdr", "sir", "sar"])
    table = table_3_1(separation)
    assert list(table.columns) == list(load_thesis_table("3.1").columns)
    assert list(table.index) == list(INSTRUMENTS)
    assert table.at["drums", "sdr_train"] == 2.0 and table.at["drums", "sir_train"] == 11.0
    assert table.at["drums", "sar_test"] == 0.5 and table.at["bass", "sdr_test"] == -4.0
    assert math.isnan(table.at["bass", "sdr_train"]) and table.loc["piano"].isna().all()


def test_run_names():
    assert run_name("drums", "ideal") == "part-drums-ideal"
    assert run_name("bass", "separated") == "part-bass-separated"
    assert run_name("mix", "ideal") == "track-mix"


def test_bad_arguments_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(PartsimError, match="unknown separator backend 'magic'"):
        check_backend("magic")
    with pytest.raises(PartsimError, match="unknown separator backend"):
        run_chapter3("smoke", data_root=str(tmp_path), backend="magic")
    with pytest.raises(PartsimError, match="unknown preset"):
        run_chapter3("huge")
    with pytest.raises(PartsimError, match="unknown part"):
        train_part_network("smoke", "vocals")
    with pytest.raises(PartsimError, match="trained on the mix itself"):
        train_part_network("smoke", "mix", "separated")
    assert not (tmp_path / "cache").exists()


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
def smoke_root():
    """The embedded smoke dataset (generated into the normal cache when absent)."""
    from partsim_core.data.dataset import resolve_dataset_root

    return resolve_dataset_root("smoke", "")


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """A fresh cache for models, stems and separated audio, so that the first run really trains."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("ch3-cache")
        patch.setenv("PARTSIM_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def first_run(smoke_root, private_cache):
    return run_chapter3("smoke", data_root=str(smoke_root), backend="unet", device="cpu", progress=False)


@pytest.mark.slow
def test_smoke_chapter_tables_and_reuse(first_run, smoke_root, private_cache):
    results = first_run
    assert not any(results.reused.values())  # a fresh cache: every network was trained
    assert len(results.reused) == 11
    table = results.table_3_2
    assert list(table.index) == ["baseline", "proposed", "proposed (ideal)"]
    assert list(table.columns) == ["mix", *INSTRUMENTS]
    values = table.to_numpy(dtype=float)
    present = values[~np.isnan(values)]
    assert present.size == 11 and np.all((present >= 0) & (present <= 100))
    assert list(results.table_3_1.columns) == list(load_thesis_table("3.1").columns)
    assert list(results.table_3_1.index) == list(INSTRUMENTS)
    # Ideal and separated input are evaluated on exactly the same test segments (silence judged on the ideal stem).
    for part in INSTRUMENTS:
        ideal, separated = results.evaluations[("ideal", part)], results.evaluations[("separated", part)]
        assert ideal.n_segments > 0
        np.testing.assert_array_equal(ideal.track_ids, separated.track_ids)
        np.testing.assert_array_equal(ideal.starts, separated.starts)
        assert ideal.embeddings.shape == (ideal.n_segments, 128)
        assert set(ideal.track_ids) <= {track.track_id for track in results.data.test_tracks}
    payload = results.to_json()
    json.dumps(payload, allow_nan=False)
    assert payload["table_3_2"]["rows"]["baseline"]["drums"] is None

    # A second run trains nothing and gives the same numbers.
    again = run_chapter3("smoke", data_root=str(smoke_root), backend="unet", device="cpu", progress=False)
    assert all(again.reused.values())
    pd.testing.assert_frame_equal(again.table_3_2, results.table_3_2)
    pd.testing.assert_frame_equal(again.table_3_1, results.table_3_1)


@pytest.mark.slow
def test_smoke_oracle_separation_equals_ideal(first_run, smoke_root, private_cache):
    # With the oracle "separator" the separated stems are the ideal ones: the separated networks see the same data
    # with the same seed, so on CPU they must reach exactly the ideal networks' accuracy.
    oracle = run_chapter3("smoke", data_root=str(smoke_root), backend="oracle", device="cpu", progress=False)
    # Only the five separated networks are new (their artefact key names the oracle source).
    assert [name for name, was_reused in oracle.reused.items() if not was_reused] == [
        run_name(part, "separated") for part in INSTRUMENTS]
    for part in INSTRUMENTS:
        assert oracle.table_3_2.at["proposed", part] == oracle.table_3_2.at["proposed (ideal)", part]
        np.testing.assert_allclose(oracle.evaluations[("separated", part)].embeddings,
                                   oracle.evaluations[("ideal", part)].embeddings, atol=1e-6)
    pd.testing.assert_series_equal(oracle.table_3_2.loc["proposed (ideal)"], first_run.table_3_2.loc[
        "proposed (ideal)"])
    # A perfect estimate: every evaluated SDR is at the +100 dB clamp of separation_metrics.
    assert (oracle.separation["sdr"] > 50).all()
