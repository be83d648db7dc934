"""Chapter 3's findings, each decided by the interval of its estimate (:func:`partsim_core.stats.finding`).

The rule (stated once, in :mod:`partsim_core.stats`): a claim "estimate > threshold" *holds* when the whole 95 %
interval lies above the threshold, *does not hold* when it lies at or below it, and is *inconclusive* otherwise.
Differences between two inputs or two separators are paired: the same test tracks (and seeds) are resampled for
both (:func:`partsim_core.stats.paired_difference_cell`), per-track accuracies weighted by the track's segments.

The thesis's claims checked here (3.3.3): (1) every part is identified less accurately from separated stems than
from ideal ones; (2) the loss follows separation quality. (2) is shown descriptively (five parts give no usable
interval for a rank correlation); the separator-quality curve measures it per part instead: (3) a better separator
gives higher accuracy. (4) The leakage of the other parts alone identifies the track (above chance), which is why
track-ID can reward separation errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from partsim_core import INSTRUMENTS
from partsim_core.baseline.tables import TABLE_3_2_ROWS, Cell, PerTrack, empty_cell
from partsim_core.stats import finding, paired_difference_cell


def difference_cell(first: PerTrack, second: PerTrack, seed: int = 0) -> Cell:
    """Paired difference ``first - second`` (percentage points) over the same tracks and seeds, weighted by the
    first's segment counts; empty when no track has both values."""
    a, weights = first
    b, _ = second
    both = np.isfinite(a).any(axis=0) & np.isfinite(b).any(axis=0) & (weights > 0)
    if not both.any():
        return empty_cell()
    return paired_difference_cell(a, b, weights=weights, seed=seed)


def ideal_vs_separated(per_track: Mapping[tuple[str, str], PerTrack], seed: int = 0) -> list[dict[str, Any]]:
    """Claim (1) per part: ideal input is identified more accurately than separated input."""
    found = []
    for part in INSTRUMENTS:
        if ("ideal", part) not in per_track or ("separated", part) not in per_track:
            continue
        estimate = difference_cell(per_track[("ideal", part)], per_track[("separated", part)], seed=seed)
        found.append(finding(f"{part}: track-ID accuracy with ideal stems exceeds that with separated stems "
                             "(percentage points, ideal - separated)", estimate, 0.0, part=part,
                             kind="ideal_vs_separated"))
    return found


def leakage_findings(leakage: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Claim (4) per part: the separated-input network identifies tracks from the leakage alone above chance."""
    chance = leakage.get("chance")
    if chance is None:
        return []
    return [finding(f"{part}: the separated-input network predicts the track ID from the leakage alone (separated "
                    f"minus ideal part) above chance ({chance:.1f} %)", estimate, chance, part=part,
                    kind="leakage_above_chance")
            for part, estimate in leakage["accuracy"].items()]


def curve_findings(per_track: Mapping[str, Mapping[str, PerTrack]], seed: int = 0) -> list[dict[str, Any]]:
    """Claim (3) per part: the chapter's separator gives higher accuracy than each worse separator of the curve."""
    names = list(per_track)
    if len(names) < 2:
        return []
    best = names[-1]
    found = []
    for worse in names[:-1]:
        for part in per_track[best]:
            estimate = difference_cell(per_track[best][part], per_track[worse][part], seed=seed)
            found.append(finding(f"{part}: separated-input accuracy is higher with {best} than with {worse} "
                                 "(percentage points)", estimate, 0.0, part=part, kind="better_separator"))
    return found


def accuracy_gap(table_3_2: Mapping[str, Mapping[str, Cell]],
                 table_3_1: Mapping[str, Mapping[str, Cell]]) -> pd.DataFrame:
    """Per part: ideal and separated accuracy, their gap (ideal - separated) and the test SDR/SIR/SAR (values)."""
    rows = []
    for part in INSTRUMENTS:
        ideal = table_3_2[TABLE_3_2_ROWS["ideal"]].get(part, empty_cell())["value"]
        separated = table_3_2[TABLE_3_2_ROWS["separated"]].get(part, empty_cell())["value"]
        rows.append({"part": part, "ideal": ideal, "separated": separated, "gap": ideal - separated,
                     **{f"{metric}_test": table_3_1[part][f"{metric}_test"]["value"]
                        for metric in ("sdr", "sir", "sar")}})
    return pd.DataFrame(rows).set_index("part")


def gap_follows_quality(gap: pd.DataFrame) -> dict[str, Any]:
    """Claim (2), descriptively: Spearman rank correlation between the test SDR and the accuracy gap over parts
    (the thesis's finding predicts a negative one). ``rho`` is NaN with fewer than three usable parts."""
    valid = gap.dropna(subset=["ideal", "separated", "sdr_test"])
    if len(valid) < 3 or valid["gap"].nunique() < 2 or valid["sdr_test"].nunique() < 2:
        return {"rho": math.nan, "parts": int(len(valid)), "best": None, "worst": None}
    rho = float(spearmanr(valid["sdr_test"], valid["gap"]).statistic)
    return {"rho": rho, "parts": int(len(valid)), "best": str(valid["sdr_test"].idxmax()),
            "worst": str(valid["sdr_test"].idxmin())}


def chapter_findings(per_track: Mapping[tuple[str, str], PerTrack], leakage: Mapping[str, Any],
                     curve_per_track: Mapping[str, Mapping[str, PerTrack]], seed: int = 0) -> list[dict[str, Any]]:
    """Every finding of the chapter, in the order the notebook discusses them."""
    return [*ideal_vs_separated(per_track, seed=seed), *curve_findings(curve_per_track, seed=seed),
            *leakage_findings(leakage)]


def findings_frame(findings: list[dict[str, Any]]) -> pd.DataFrame:
    """The findings as a table: claim, verdict, estimate and 95 % interval."""
    return pd.DataFrame([{"claim": item["claim"], "verdict": item["verdict"], "estimate": item["estimate"],
                          "low": item["interval"][0], "high": item["interval"][1]} for item in findings],
                        columns=["claim", "verdict", "estimate", "low", "high"])


def summary_lines(findings: list[dict[str, Any]], gap: pd.DataFrame) -> list[str]:
    """Markdown bullets the notebook prints: how many parts each claim holds for, and the descriptive rank
    correlation of claim (2)."""
    lines = []
    for kind, label in (("ideal_vs_separated", "(1) Ideal above separated"),
                        ("better_separator", "(3) A better separator gives higher accuracy"),
                        ("leakage_above_chance", "(4) Leakage alone identifies the track")):
        chosen = [item for item in findings if item.get("kind") == kind]
        if not chosen:
            continue
        counts = {verdict: [item["part"] for item in chosen if item["verdict"] == verdict]
                  for verdict in ("holds", "does not hold", "inconclusive")}
        text = "; ".join(f"{verdict} for {len(parts)} ({', '.join(dict.fromkeys(parts))})"
                         for verdict, parts in counts.items() if parts)
        lines.append(f"* **{label}:** {text} of {len(chosen)} comparisons.")
    rank = gap_follows_quality(gap)
    if math.isnan(rank["rho"]):
        lines.append("* **(2) Gap follows separation quality:** too few parts (or no variation) to rank.")
    else:
        lines.append(f"* **(2) Gap follows separation quality** (descriptive, {rank['parts']} parts, no interval): "
                     f"Spearman rho between test SDR and the gap is {rank['rho']:+.2f} (the thesis predicts a "
                     f"negative value); best separated part {rank['best']}, worst {rank['worst']}.")
    return lines
