"""What the thesis publishes about chapter 5, and how our numbers compare (thesis 5.2.4, 5.3.2, 5.3.4).

The thesis withholds Tables 5.1, 5.3 and 5.4 (every cell reads ``[withheld]``). What it does print, and what these
functions compare with (the printed numbers are passed in; they live in ``data/thesis_tables``):

* counts in the text (``table_5_text.csv``): participants and responses (5.2.4), the Table 5.1 caption's 5.74 and
  4.68 evaluations per triplet / participant and its p < 0.01, "only four" xab drum-melody sample sets passing the
  80 % filter and 39 participants who never answered drum melody (5.3.4);
* two statements on Table 5.3 (5.3.4): "more agreement among participants in xyc than in xab", and "fewer sample
  sets for timbre, rhythm and melody compared with overall";
* the matching rates with their "±" half-widths of Table 4.6 (xab; the thesis says these evaluations are the ones
  counted in Table 5.3) and of the companion paper's Table 6 test 2 (xyc; ``table_5_3_paper_xyc_rates.csv``):
  a half-width printed to 0.1 points pins down the number of evaluations behind it within a range
  (:func:`consistent_trials`), the only published trace of Table 5.3's evaluation counts.

:func:`filter_rule_evidence` scores each reading of the 80 % filter against all of these; :func:`p_value_jackknife`
shows how far one participant moves a Table 5.1 p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

import numpy as np
import pandas as pd
from scipy import stats

from partsim_core.errors import PartsimError
from partsim_core.perceptual.abx import NA_PERSPECTIVES, PART_CATEGORIES, SET_TYPES
from partsim_core.perceptual.analysis import (
    AGREEMENT_RULES,
    SAMPLE_SET_UNITS,
    agreement_filter,
    clopper_pearson,
    filter_summary,
    variance_comparison,
)

#: Interval kinds :func:`consistent_trials` can invert.
INTERVALS: tuple[str, ...] = ("clopper-pearson", "wald")


def consistent_trials(percent: float, half_width: float, decimals: int = 1, interval: str = "clopper-pearson",
                      max_trials: int = 10000, confidence: float = 0.95) -> np.ndarray:
    """Every number of trials n that reproduces a printed "percent ± half_width" (both in %, rounded).

    A count n is consistent when some k in 0..n gives ``100 k / n`` within half a printed unit of ``percent`` and
    a 95 % interval whose half-width (``(high - low) / 2`` for Clopper-Pearson, ``z sqrt(p (1 - p) / n)`` for
    Wald) lies within half a printed unit of ``half_width``.

    Args:
        percent: the printed rate (e.g. 95.7).
        half_width: the printed "±" (e.g. 1.0).
        decimals: digits printed after the point.
        interval: ``"clopper-pearson"`` or ``"wald"``.
        max_trials: largest n tried.
        confidence: interval level.

    Returns:
        Sorted array of consistent n (empty when none up to ``max_trials``).
    """
    if interval not in INTERVALS:
        raise PartsimError(f"unknown interval {interval!r}; choose one of {', '.join(INTERVALS)}")
    tolerance = 0.5 * 10.0 ** (-decimals) + 1e-9
    # Search near the Wald solution n = z^2 p (1 - p) / h^2 (a factor 2 either way; exact intervals differ less).
    z = stats.norm.ppf(0.5 + confidence / 2)
    p_mid = min(max(percent / 100.0, 1e-3), 1 - 1e-3)
    widest = max(half_width - tolerance, 1e-3) / 100.0
    narrowest = (half_width + tolerance) / 100.0
    first = max(1, int(z * z * p_mid * (1 - p_mid) / narrowest ** 2 / 2))
    last = min(max_trials, int(2 * z * z * 0.25 / widest ** 2) + 1)
    n = np.arange(first, max(first, last) + 1)
    found = []
    for offset in (-1, 0, 1):  # the k nearest to percent * n, and its neighbours
        k = np.clip(np.round(percent / 100.0 * n) + offset, 0, n)
        rate = 100.0 * k / n
        if interval == "wald":
            p = k / n
            half = 100.0 * stats.norm.ppf(0.5 + confidence / 2) * np.sqrt(p * (1 - p) / n)
        else:
            low, high = clopper_pearson(k, n, confidence)
            half = 100.0 * (high - low) / 2
        ok = (np.abs(rate - percent) <= tolerance) & (np.abs(half - half_width) <= tolerance)
        found.append(n[ok])
    return np.unique(np.concatenate(found))


def rates_from_table(table: pd.DataFrame, set_type: str, perspective: str) -> pd.DataFrame:
    """Tidy "rate ± half-width" cells of a Table-4.6-shaped frame (columns ``drums, drums_pm, ...``).

    Args:
        table: rows = models (``baseline``, ``proposed``, or ``"<perspective> <model>"``), columns ``<part>`` and
            ``<part>_pm``; empty cells are skipped.
        set_type: ``xab`` or ``xyc`` (written to the output).
        perspective: ``overall`` or ``timbre``; rows named ``"<perspective> <model>"`` are kept for it, plain
            model rows are taken as they are.

    Returns:
        Columns ``set_type, perspective, model, category, percent, half_width``.
    """
    rows = []
    for label in table.index:
        words = str(label).split()
        if len(words) == 2 and words[0] != perspective:
            continue
        model = words[-1]
        for category in PART_CATEGORIES:
            if category not in table.columns or f"{category}_pm" not in table.columns:
                continue
            percent, half = table.at[label, category], table.at[label, f"{category}_pm"]
            if pd.notna(percent) and pd.notna(half):
                rows.append((set_type, perspective, model, category, float(percent), float(half)))
    return pd.DataFrame(rows, columns=["set_type", "perspective", "model", "category", "percent", "half_width"])


def implied_evaluations(rates: pd.DataFrame, interval: str = "clopper-pearson") -> pd.DataFrame:
    """Range of evaluation counts consistent with each printed "rate ± half-width" cell.

    Args:
        rates: :func:`rates_from_table` rows.
        interval: see :func:`consistent_trials` (Clopper-Pearson is the interval the thesis names for the same
            evaluation in Fig. 5.12).

    Returns:
        ``rates`` with ``n_low, n_high`` added (smallest and largest consistent n; NaN when none).
    """
    lows, highs = [], []
    for row in rates.itertuples(index=False):
        values = consistent_trials(row.percent, row.half_width, interval=interval)
        lows.append(float(values.min()) if len(values) else np.nan)
        highs.append(float(values.max()) if len(values) else np.nan)
    return rates.assign(n_low=lows, n_high=highs)


def filter_rule_counts(responses: pd.DataFrame, agreement: str, sample_set: str) -> pd.DataFrame:
    """Table 5.3 (sets and evaluations per type, perspective and part) under one reading of the 80 % filter."""
    parts = responses[responses["category"].isin(PART_CATEGORIES)]
    filtered = agreement_filter(parts, agreement=agreement, sample_set=sample_set)
    return filter_summary(filtered, categories=PART_CATEGORIES)


def filter_rule_evidence(responses: pd.DataFrame, implied: pd.DataFrame, drum_melody_sets: int,
                         rules: Sequence[tuple[str, str]] | None = None,
                         model: str = "proposed") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score readings of the 80 % filter against everything the thesis prints about Table 5.3.

    Args:
        responses: valid responses (the published data).
        implied: :func:`implied_evaluations` of Table 4.6 (xab) and the paper's Table 6 test 2 (xyc).
        model: whose printed cells are used (``proposed``: the thesis's model, printed for all five parts; the
            baseline's cells do not always share the proposed model's evaluation count).
        drum_melody_sets: the printed number of xab drum-melody sets passing the filter (4).
        rules: ``(agreement, sample_set)`` pairs (default: every combination of :data:`AGREEMENT_RULES` and
            :data:`SAMPLE_SET_UNITS`).

    Returns:
        ``(summary, cells)``. ``summary`` has one row per rule and sample-set type: ``agreement, sample_set,
        set_type``, ``drum_melody_sets`` (ours) and ``drum_melody_matches`` (xab: equals the printed count),
        ``fewer_than_overall`` / ``of_cells`` (part x {timbre, rhythm, melody} cells of the type with fewer sets
        than overall; the thesis says all), ``xyc_more`` /
        ``of_xyc_cells`` (perspective x part cells with more xyc than xab sets; the thesis says more agreement in
        xyc), ``ratio_within`` / ``of_ratio_cells`` (cells whose timbre / overall evaluation ratio lies in the range
        the printed half-widths allow; a ratio cancels a different number of participants behind the paper),
        ``ratio_log_error`` (mean |log(ours / nearest allowed ratio)|, 0 inside the range) and ``counts_within`` /
        ``of_count_cells`` (cells whose evaluation count itself lies in the allowed range). ``cells`` has one row
        per rule, type, perspective and part: ``agreement, sample_set, set_type, perspective, category,
        evaluations, n_low, n_high, within, ratio, ratio_low, ratio_high, ratio_within`` (ratio columns on the
        timbre rows).
    """
    if rules is None:
        rules = list(product(AGREEMENT_RULES, SAMPLE_SET_UNITS))
    chosen = implied[implied["model"] == model]
    bounds = chosen.set_index(["set_type", "perspective", "category"])[["n_low", "n_high"]]
    summary_rows, cell_rows = [], []
    for agreement, sample_set in rules:
        counts = filter_rule_counts(responses, agreement, sample_set).set_index(
            ["set_type", "perspective", "category"])
        more = [counts.at[("xyc", p, c), "sets"] > counts.at[("xab", p, c), "sets"]
                for p in ("overall", *NA_PERSPECTIVES) for c in PART_CATEGORIES]
        for set_type in SET_TYPES:
            fewer = [counts.at[(set_type, p, c), "sets"] < counts.at[(set_type, "overall", c), "sets"]
                     for p in NA_PERSPECTIVES for c in PART_CATEGORIES]
            errors, within_counts = [], []
            for (cell_type, perspective, category), bound in bounds.iterrows():
                if cell_type != set_type or not np.isfinite(bound["n_low"]):
                    continue
                evaluations = int(counts.at[(set_type, perspective, category), "evaluations"])
                within = bool(bound["n_low"] <= evaluations <= bound["n_high"])
                within_counts.append(within)
                ratio = ratio_low = ratio_high = np.nan
                ratio_within = None
                overall_key = (set_type, "overall", category)
                if (perspective == "timbre" and overall_key in bounds.index
                        and np.isfinite(bounds.at[overall_key, "n_low"])):
                    ratio = evaluations / max(1, int(counts.at[overall_key, "evaluations"]))
                    ratio_low = bound["n_low"] / bounds.at[overall_key, "n_high"]
                    ratio_high = bound["n_high"] / bounds.at[overall_key, "n_low"]
                    ratio_within = bool(ratio_low <= ratio <= ratio_high)
                    errors.append(0.0 if ratio_within else
                                  float(min(abs(np.log(ratio / ratio_low)), abs(np.log(ratio / ratio_high)))))
                cell_rows.append((agreement, sample_set, set_type, perspective, category, evaluations,
                                  bound["n_low"], bound["n_high"], within, ratio, ratio_low, ratio_high,
                                  ratio_within))
            drum_melody = int(counts.at[(set_type, "melody", "drums"), "sets"])
            summary_rows.append({
                "agreement": agreement, "sample_set": sample_set, "set_type": set_type,
                "drum_melody_sets": drum_melody,
                "drum_melody_matches": (drum_melody == int(drum_melody_sets)) if set_type == "xab" else None,
                "fewer_than_overall": int(sum(fewer)), "of_cells": len(fewer),
                "xyc_more": int(sum(more)), "of_xyc_cells": len(more),
                "ratio_within": int(sum(1 for e in errors if e == 0.0)), "of_ratio_cells": len(errors),
                "ratio_log_error": float(np.mean(errors)) if errors else np.nan,
                "counts_within": int(sum(within_counts)), "of_count_cells": len(within_counts),
            })
    cells = pd.DataFrame(cell_rows, columns=["agreement", "sample_set", "set_type", "perspective", "category",
                                             "evaluations", "n_low", "n_high", "within", "ratio", "ratio_low",
                                             "ratio_high", "ratio_within"])
    return pd.DataFrame(summary_rows), cells


def p_value_jackknife(matches: pd.DataFrame, part: str) -> pd.DataFrame:
    """Table 5.1's p-value for ``part`` with each participant left out in turn (how fragile a verdict is).

    Args:
        matches: :func:`~partsim_core.perceptual.analysis.part_track_matches`.
        part: one of the five parts.

    Returns:
        One row per left-out participant: ``subject_id, p_value, mean_evaluations_participant``.
    """
    if part not in PART_CATEGORIES:
        raise PartsimError(f"unknown part {part!r}; choose one of {', '.join(PART_CATEGORIES)}")
    subjects = matches.index.get_level_values("subject_id")
    rows = []
    for subject in pd.unique(subjects):
        table = variance_comparison(matches[subjects != subject])
        rows.append((subject, float(table.at[part, "p_value"]),
                     float(table.at[part, "mean_evaluations_participant"])))
    return pd.DataFrame(rows, columns=["subject_id", "p_value", "mean_evaluations_participant"])


def p_value_variants(matches: pd.DataFrame) -> pd.DataFrame:
    """Table 5.1's p-values under other test settings than the chapter's (one-sided Mann-Whitney U, ddof = 1).

    Returns:
        Index = part; one column per variant: ``one-sided`` (the chapter's: asymptotic with continuity
        correction, scipy's choice at these sizes and with ties), ``one-sided, no continuity correction``,
        ``two-sided``, ``population variance (ddof 0)`` and ``one-sided Welch t-test`` (a different test).
    """
    variants = {
        "one-sided": {"alternative": "less", "method": "asymptotic"},
        "one-sided, no continuity correction": {"alternative": "less", "method": "asymptotic",
                                                "use_continuity": False},
        "two-sided": {"alternative": "two-sided", "method": "asymptotic"},
    }
    columns = {name: variance_comparison(matches, test_options=kwargs)["p_value"] for name, kwargs in variants.items()}
    columns["population variance (ddof 0)"] = variance_comparison(matches, ddof=0)["p_value"]
    columns["one-sided Welch t-test"] = variance_comparison(matches, test="welch")["p_value"]
    return pd.DataFrame(columns)
