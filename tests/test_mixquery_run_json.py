"""Chapter 6's JSON is strict JSON like chapters 3-5's: an undefined number (a simulated strategy without answers,
a finding that cannot be computed) is ``null``, never ``NaN`` (README, *How findings are decided*)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from chapter_schema import schema_problems

from partsim_core.data.outputs import finite_json
from partsim_core.mixquery import run as chapter
from partsim_core.stats import binomial_cell, cell, finding


class StubCatalog:
    def summary(self) -> dict:
        return {"songs": 2, "pieces": 3}

    def ground_truth(self) -> pd.DataFrame:
        return pd.DataFrame({"query": ["q000", "q001"], "first_relevant_rank": [3.0, math.nan]})


class StubABX:
    def to_json(self) -> dict:
        no_answers = binomial_cell(0, 0)  # what a strategy without answers gets: NaN value and interval
        return {"label": "SIMULATED", "accuracy": {"csn": {"C0": no_answers, "C1": binomial_cell(3, 4)}},
                "accuracy_by_part": {"csn": {"drums": {"C0": no_answers}}}}


def _evaluation() -> chapter.MixQueryEvaluation:
    undefined = cell(math.nan, math.nan, math.nan)
    return chapter.MixQueryEvaluation(
        preset="smoke", seeds=[0], catalog=StubCatalog(), per_query=pd.DataFrame(), table=pd.DataFrame(),
        cells={"csn": {"all": {"MRR": {"value": np.float64(0.5), "low": np.float32(0.25), "high": 0.75},
                               "recall@10": undefined}}},
        differences={"csn - random": {"value": np.float64(np.nan), "low": -np.inf, "high": np.inf}},
        abx=StubABX(), rankings={}, distances={"csn": "cosine"}, selection=None,
        findings=[finding("csn beats random", undefined, note="not computable")], seconds={"catalog": 1.0})


def test_chapter_json_writes_null_for_undefined_numbers() -> None:
    payload = _evaluation().to_json()
    json.dumps(payload, allow_nan=False)  # strict JSON: raises on any NaN or infinity left
    empty = {"value": None, "low": None, "high": None}
    assert payload["figure_6_8_simulated"]["csn"]["C0"] == empty
    assert payload["figure_6_8_simulated_by_part"]["csn"]["drums"]["C0"] == empty
    assert payload["figure_6_8_simulated"]["csn"]["C1"]["value"] == 0.75
    assert payload["retrieval"]["csn"]["all"]["recall@10"] == empty
    assert payload["retrieval"]["csn"]["all"]["MRR"] == {"value": 0.5, "low": 0.25, "high": 0.75}
    assert payload["retrieval_differences"]["csn - random"] == empty
    found = payload["findings"][0]
    assert found["verdict"] == "inconclusive" and found["estimate"] is None and found["interval"] == [None, None]
    assert [row["first_relevant_rank"] for row in payload["ground_truth"]] == [3.0, None]
    assert schema_problems(payload) == []


def test_finite_json_keeps_everything_but_non_finite_floats() -> None:
    value = {"a": (1, np.float32(np.inf), "x"), "b": [True, None, -0.5, np.int64(7)], "c": {"d": float("-inf")}}
    assert finite_json(value) == {"a": [1, None, "x"], "b": [True, None, -0.5, 7], "c": {"d": None}}
    assert type(finite_json(np.float32(2.5))) is float


def test_chapter_json_names_its_chapter_like_chapters_3_and_4() -> None:
    payload = _evaluation().to_json()
    assert payload["chapter"] == 6 and next(iter(payload)) == "chapter"
