"""The chapter-JSON check (``tests/chapter_schema.py``) itself: it accepts the contract and names each breach."""

from __future__ import annotations

import copy

import pytest
from chapter_schema import schema_problems

GOOD = {
    "chapter": 4,
    "table_4_2": {"(i)": {"drums": {"value": 40.0, "low": 30.0, "high": 50.0},
                          "bass": {"value": None, "low": None, "high": None}}},
    "findings": [
        {"claim": "a beats b", "verdict": "holds", "estimate": 2.0, "interval": [0.5, 3.0], "threshold": 0.0},
        {"claim": "c beats d", "verdict": "does not hold", "estimate": -1.0, "interval": [-2.0, 0.0]},
        {"claim": "e beats f", "verdict": "inconclusive", "estimate": 0.1, "interval": [-1.0, 1.0]},
        {"claim": "above chance", "verdict": "inconclusive", "estimate": 0.6, "interval": [0.4, 0.8],
         "threshold": 0.5},
        {"claim": "g beats h", "verdict": "inconclusive", "estimate": None, "interval": [None, None],
         "note": "not computable with these conditions"},
    ],
    "timings": {"table_4_6_and_leakage": 15.4},  # not a table: only top-level table_* keys are
}


def _broken(change) -> dict:
    payload = copy.deepcopy(GOOD)
    change(payload)
    return payload


def test_the_contract_passes() -> None:
    assert schema_problems(GOOD) == []


@pytest.mark.parametrize("change, fragment", [
    (lambda p: p["table_4_2"]["(i)"].update(drums=41.0), "table_4_2.(i).drums: bare number 41.0"),
    (lambda p: p["table_4_2"]["(i)"]["drums"].update(low=45.0), "value 40.0 outside [45.0, 50.0]"),
    (lambda p: p["table_4_2"]["(i)"]["drums"].update(high=None), "three numbers or three nulls"),
    (lambda p: p["table_4_2"]["(i)"]["drums"].update(value=float("nan")), "write null"),
    (lambda p: p["findings"][0].pop("interval"), "findings[0]: missing interval"),
    (lambda p: p["findings"][0].update(verdict="supported"), "verdict 'supported' is none of"),
    (lambda p: p["findings"][0].update(verdict="inconclusive"), "reads 'holds'"),
    (lambda p: p["findings"][1].update(verdict="inconclusive"), "reads 'does not hold'"),
    (lambda p: p["findings"][3].update(verdict="holds"), "reads 'inconclusive'"),
    (lambda p: p["findings"][2].update(estimate=5.0), "estimate 5.0 outside its interval"),
    (lambda p: p["findings"][4].pop("note"), "an undefined estimate needs"),
    (lambda p: p["findings"][4].update(interval=[None, 1.0]), "an undefined estimate needs"),
    (lambda p: p.update(findings=[]), "findings: missing or empty"),
])
def test_each_breach_is_named(change, fragment: str) -> None:
    problems = schema_problems(_broken(change))
    assert any(fragment in problem for problem in problems), problems
