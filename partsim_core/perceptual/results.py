"""The chapter-5 results as one JSON-ready dict (``partsim perceptual run``).

Unlike :func:`~partsim_core.perceptual.analysis.thesis_tables` (the schema of ``partsim perceptual tables``, plain
numbers), every rate computed from single responses (Table 5.2, Table 5.4, Fig. 5.6) is a cell
``{"value", "low", "high"}``: the rate in percent with its exact binomial (Clopper-Pearson) 95 % interval, so that a
reader can tell a difference from noise. Counts stay integers; Table 5.1's mean variances and p-values are not
binomial rates and stay plain numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from partsim_core.perceptual.abx import PART_CATEGORIES, ABXData, participant_summary
from partsim_core.perceptual.analysis import (
    TABLE_5_3_AGREEMENT,
    agreement_filter,
    category_agreement,
    clopper_pearson,
    filter_summary,
    part_track_matches,
    perspective_matching_rates,
    response_counts,
    variance_comparison,
    within_between,
)

#: Version of the ``run`` JSON layout.
RESULTS_SCHEMA = 1


def _number(value) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    return float(value) if value is not None and np.isfinite(value) else None


def rate_cell(successes: int, trials: int, confidence: float = 0.95) -> dict:
    """``{"value", "low", "high"}``: ``successes / trials`` in percent with its Clopper-Pearson interval.

    ``value``, ``low`` and ``high`` are None when ``trials`` is 0.
    """
    low, high = clopper_pearson(int(successes), int(trials), confidence)
    value = 100.0 * successes / trials if trials else None
    return {"value": _number(value) if value is not None else None, "low": _number(100.0 * float(low)),
            "high": _number(100.0 * float(high))}


def chapter_results(data: ABXData) -> dict:
    """Every chapter-5 result of ``data`` as one JSON-ready dict.

    Keys: ``schema``, ``data`` (published by checksum, valid responses, catch trials, dropped rows and their
    reasons), ``participants`` (thesis 5.2.4 counts), ``fig_5_4`` (set type -> category -> perspective ->
    strong/weak/N/A counts, complete evaluation sets), ``fig_5_6`` (set type -> category -> category -> rate cell of
    agreeing pairs), ``table_5_1`` (part -> mean variances, p-value, counts), ``table_5_2`` (perspective ->
    category -> rate cell), ``table_5_3`` (``agreement``: the reading per type, then xab|xyc -> sets|evaluations
    -> perspective -> part -> int), ``table_5_4`` (including_na|excluding_na -> perspective -> category -> rate
    cell).
    """
    responses = data.responses
    reasons = data.dropped["reason"].str.replace(r"line \d+", "line N", regex=True) if len(data.dropped) else []
    result: dict = {
        "schema": RESULTS_SCHEMA,
        "data": {
            "published": bool(data.published),
            "valid_responses": len(responses),
            "catch_trials": len(data.catch_trials),
            "dropped_rows": len(data.dropped),
            "dropped_reasons": {str(k): int(v) for k, v in pd.Series(reasons, dtype=object).value_counts().items()},
        },
        "participants": {row.quantity: int(row.ours) for row in
                         participant_summary(responses, data.catch_trials).itertuples(index=False)},
    }

    fig_5_4: dict = {}
    for row in response_counts(responses).itertuples(index=False):
        (fig_5_4.setdefault(row.set_type, {}).setdefault(row.category, {})
         .setdefault(row.perspective, {}))[row.strength] = int(row.count)
    result["fig_5_4"] = fig_5_4

    fig_5_6: dict = {}
    for row in category_agreement(responses).itertuples(index=False):
        if row.category_1 == row.category_2:
            continue
        agreeing = int(round(row.agreement * row.pairs)) if row.pairs else 0  # noqa: RUF046 (numpy float)
        fig_5_6.setdefault(row.set_type, {}).setdefault(row.category_1, {})[row.category_2] = rate_cell(
            agreeing, int(row.pairs))
    result["fig_5_6"] = fig_5_6

    table_5_1: dict = {}
    matches = part_track_matches(responses)
    if len(matches):
        for category, row in variance_comparison(matches).iterrows():
            table_5_1[category] = {key: _number(row[key]) for key in
                                   ("var_triplet", "var_participant", "p_value", "mean_evaluations_triplet",
                                    "mean_evaluations_participant")}
            table_5_1[category]["n_triplets"] = int(row["n_triplets"])
            table_5_1[category]["n_participants"] = int(row["n_participants"])
    result["table_5_1"] = table_5_1

    table_5_2: dict = {}
    for row in perspective_matching_rates(responses).itertuples(index=False):
        table_5_2.setdefault(row.perspective, {})[row.category] = rate_cell(row.matches, row.responses)
    result["table_5_2"] = table_5_2

    parts = responses[responses["category"].isin(PART_CATEGORIES)]
    summary = filter_summary(agreement_filter(parts), categories=PART_CATEGORIES)
    table_5_3: dict = {"agreement": dict(TABLE_5_3_AGREEMENT)}
    for row in summary.itertuples(index=False):
        block = table_5_3.setdefault(row.set_type, {"sets": {}, "evaluations": {}})
        block["sets"].setdefault(row.perspective, {})[row.category] = int(row.sets)
        block["evaluations"].setdefault(row.perspective, {})[row.category] = int(row.evaluations)
    result["table_5_3"] = table_5_3

    table_5_4: dict = {"including_na": {}, "excluding_na": {}}
    for row in within_between(responses).itertuples(index=False):
        table_5_4[row.na].setdefault(row.perspective, {})[row.category] = rate_cell(row.same_track, row.responses)
    result["table_5_4"] = table_5_4
    return result
