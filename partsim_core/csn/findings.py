"""The thesis's chapter-4 findings, each decided by the interval of its estimate (:func:`partsim_core.stats.finding`).

A finding is a difference between conditions measured on the same test items (test tracks; for Table 4.2 the
(part, label track) pairs), resampled *paired* (:func:`partsim_core.stats.paired_difference_cell`): the same items
and seeds are drawn for both sides. Its verdict follows the one rule of :mod:`partsim_core.stats`: the claim
"difference > 0" *holds* when the whole 95 % interval lies above 0, *does not hold* when it lies at or below 0,
and is *inconclusive* otherwise. Accuracies are pooled over segments (items weigh by their segments);
correlations use per-track jackknife pseudo-values of the compared statistic (e.g. the mean |r| over pairs).

1. Pseudo pieces raise part-level label accuracy: Table 4.2, (f)-(i) vs (c)-(e).
2. Pseudo pieces make the subspaces less correlated: Table 4.5, mean |r| of (e) minus that of (i).
3. Pseudo pieces make each subspace follow its own part: Table 4.4, mean r of (i) minus that of (e).
4. Pre-training, then the norm loss, make the sounding part's subspace the largest: Table 4.3, (j) - (k) and
   (i) - (j).
5. The CSN identifies tracks from the piano better than the separation baseline: Table 4.1 at 3, 5 and 10 s.
6. The proposed model (i) is trained past chance (issue 13's target; not a thesis claim): its Table 4.2 accuracy
   above the chance level of every part, at least 3x the chance level over all parts, and its Table 4.1 accuracy at
   3 s above the kNN chance level of every part. Chance = the same scoring of random embeddings
   (:func:`partsim_core.csn.metrics.chance_tables`), paired over the same items.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.csn.correlation import jackknife_pseudo_values
from partsim_core.csn.metrics import ItemScores
from partsim_core.stats import cell, finding, paired_difference_cell

#: Claims of the findings (thesis 4.4.3), in order.
CLAIMS = {
    "psd_labels": "Table 4.2: pseudo pieces raise part-level label accuracy ((f)-(i) minus (c)-(e), points)",
    "psd_between": "Table 4.5: subspaces are less correlated with pseudo pieces (mean |r| of (e) minus (i))",
    "psd_stem_mix": "Table 4.4: each subspace follows its own part more closely with pseudo pieces "
                    "(mean r of (i) minus (e))",
    "pre": "Table 4.3: pre-training makes the sounding part's subspace the largest more often ((j) minus (k), "
           "points)",
    "norm": "Table 4.3: the norm loss, added to pre-training, makes it the largest more often ((i) minus (j), "
            "points)",
    "piano": "Table 4.1: the CSN identifies tracks from the piano better than the separation baseline "
             "(proposed minus baseline at {seconds}, points)",
    "chance_labels": "Table 4.2: condition (i) finds {part} labels above chance ((i) minus random embeddings, "
                     "points)",
    "chance_3x": "Table 4.2: condition (i)'s label accuracy is at least 3x chance (all parts pooled: (i) minus 3 x "
                 "random embeddings, points)",
    "chance_tracks": "Table 4.1: condition (i)'s {part} subspace identifies tracks above kNN chance at {seconds} "
                     "((i) minus random embeddings, points)",
}


def _not_computable(claim: str) -> dict[str, Any]:
    return finding(claim, cell(math.nan, math.nan, math.nan), 0.0, note="not computable with these conditions")


def _pooled(cells: Mapping[str, ItemScores | None], prefix: bool) -> tuple[dict[Any, int], np.ndarray,
                                                                          np.ndarray] | None:
    """Per item (optionally ``(part, item)``) the pooled accuracy ``(seeds, items)`` and its segment weights."""
    found = [(part, scores) for part, scores in cells.items() if scores is not None]
    if not found:
        return None
    keys = sorted({(part, item) if prefix else item for part, scores in found for item in scores.items.tolist()},
                  key=str)
    column = {key: number for number, key in enumerate(keys)}
    seeds = found[0][1].values.shape[0]
    hits = np.zeros((seeds, len(keys)))
    weights = np.zeros(len(keys))
    for part, scores in found:
        codes = np.array([column[(part, item) if prefix else item] for item in scores.items.tolist()])
        w = np.asarray(scores.weights, dtype=np.float64)
        np.add.at(hits.T, codes, (np.nan_to_num(scores.values) * w).T)
        np.add.at(weights, codes, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return column, np.where(weights > 0, hits / weights, np.nan), weights


def _accuracy_difference(first: Sequence[Mapping[str, ItemScores | None]],
                         second: Sequence[Mapping[str, ItemScores | None]], prefix: bool,
                         second_factor: float = 1.0) -> dict[str, float] | None:
    """Paired difference (points) of the pooled accuracies of the rows ``first`` minus ``second_factor`` x those of
    the rows ``second``, each side the mean over its rows, items aligned."""
    sides = []
    for rows in (first, second):
        pooled = [p for p in (_pooled(row, prefix) for row in rows) if p is not None]
        if not pooled:
            return None
        sides.append(pooled)
    keys = sorted({key for side in sides for column, _v, _w in side for key in column}, key=str)
    seeds = max(values.shape[0] for side in sides for _c, values, _w in side)
    weights = np.zeros(len(keys))
    means = []
    for side in sides:
        stacked = np.full((len(side), seeds, len(keys)), np.nan)
        for number, (column, values, w) in enumerate(side):
            codes = np.array([keys.index(key) for key in column])
            stacked[number][:, codes] = values[np.arange(seeds) % values.shape[0]]
            weights[codes] = np.maximum(weights[codes], w)
        with _quiet():
            means.append(np.nanmean(stacked, axis=0))
    return paired_difference_cell(100.0 * means[0], 100.0 * second_factor * means[1], weights=weights)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's "mean of empty slice" warnings (an item absent on one side is NaN by design)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _jackknife_statistic(cells: Sequence[ItemScores | None],
                         reduce: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """Per seed ``reduce`` over the cells of their statistic and leave-one-out values -> (thetas, pseudo-values)."""
    found = [c for c in cells if c is not None and c.thetas is not None]
    if not found:
        return None
    thetas = np.stack([c.thetas for c in found])               # (cells, seeds)
    loo = np.stack([c.leave_one_out for c in found])            # (cells, seeds, items)
    with _quiet():
        theta = reduce(thetas)                                  # (seeds,)
        without = reduce(loo)                                   # (seeds, items)
    pseudo = np.stack([jackknife_pseudo_values(t, row) for t, row in zip(theta, without)])
    return theta, pseudo


def _correlation_difference(first: Sequence[ItemScores | None], second: Sequence[ItemScores | None],
                            reduce: Callable[[np.ndarray], np.ndarray]) -> dict[str, float] | None:
    a, b = _jackknife_statistic(first, reduce), _jackknife_statistic(second, reduce)
    if a is None or b is None or a[1].shape[1] != b[1].shape[1]:
        return None
    out = paired_difference_cell(a[1], b[1])
    # The interval keeps the pseudo-values' spread around the difference of the statistics themselves.
    value = float(np.nanmean(a[0]) - np.nanmean(b[0]))
    shift = value - out["value"]
    return cell(value, out["low"] + shift, out["high"] + shift)


def _mean_abs(values: np.ndarray) -> np.ndarray:
    return np.nanmean(np.abs(values), axis=0)


def _mean(values: np.ndarray) -> np.ndarray:
    return np.nanmean(values, axis=0)


def chapter4_findings(tables: Mapping[str, Any], seconds: Sequence[float] = (3.0, 5.0, 10.0)) -> list[dict]:
    """Every finding of chapter 4 from the per-item tables of :func:`partsim_core.csn.run.run_chapter4`
    (``table_4_1`` .. ``table_4_5``, ``identification`` and ``stem_mix`` keyed by condition row)."""
    out = []
    labels = tables["table_4_2"]

    def rows(table: Mapping[str, Any], letters: str) -> list[Any]:
        return [table[f"({letter})"] for letter in letters if f"({letter})" in table]

    with_psd, without_psd = rows(labels, "fghi"), rows(labels, "cde")
    result = _accuracy_difference(with_psd, without_psd, prefix=True) if with_psd and without_psd else None
    out.append(finding(CLAIMS["psd_labels"], result) if result else _not_computable(CLAIMS["psd_labels"]))

    between = tables["subspace_correlation"]
    if "(e)" in between and "(i)" in between:
        result = _correlation_difference(list(between["(e)"].values()), list(between["(i)"].values()), _mean_abs)
    else:
        result = None
    out.append(finding(CLAIMS["psd_between"], result) if result else _not_computable(CLAIMS["psd_between"]))

    stem_mix = tables["stem_mix"]
    if "(e)" in stem_mix and "(i)" in stem_mix:
        result = _correlation_difference(list(stem_mix["(i)"].values()), list(stem_mix["(e)"].values()), _mean)
    else:
        result = None
    out.append(finding(CLAIMS["psd_stem_mix"], result) if result else _not_computable(CLAIMS["psd_stem_mix"]))

    identification = tables["identification"]
    for name, (better, worse) in (("pre", ("(j)", "(k)")), ("norm", ("(i)", "(j)"))):
        result = _accuracy_difference([identification[better]], [identification[worse]], prefix=False) \
            if better in identification and worse in identification else None
        out.append(finding(CLAIMS[name], result) if result else _not_computable(CLAIMS[name]))

    piano = tables["table_4_1"].get("piano", {})
    for length in seconds:
        claim = CLAIMS["piano"].format(seconds=f"{length:g} s")
        proposed, baseline = piano.get(f"proposed_{length:g}s"), piano.get(f"baseline_{length:g}s")
        result = _accuracy_difference([{"piano": proposed}], [{"piano": baseline}], prefix=False) \
            if proposed is not None and baseline is not None else None
        out.append(finding(claim, result) if result else _not_computable(claim))
    if "chance" in tables:
        out += _past_chance_findings(labels.get("(i)"), tables["table_4_1"], tables["chance"], seconds[0])
    return out


def _past_chance_findings(labels: Mapping[str, ItemScores | None] | None, track_id: Mapping[str, Any],
                          chance: Mapping[str, Any], length: float) -> list[dict]:
    """Finding 6: condition (i) against the chance level of the same cells (paired over the same items)."""
    out = []
    chance_labels = chance["table_4_2"]
    for part in INSTRUMENTS:
        claim = CLAIMS["chance_labels"].format(part=part)
        ours, random = (labels or {}).get(part), chance_labels.get(part)
        result = _accuracy_difference([{part: ours}], [{part: random}], prefix=False) \
            if ours is not None and random is not None else None
        out.append(finding(claim, result) if result else _not_computable(claim))
    result = _accuracy_difference([labels], [chance_labels], prefix=True, second_factor=3.0) if labels else None
    out.append(finding(CLAIMS["chance_3x"], result) if result else _not_computable(CLAIMS["chance_3x"]))
    for part in INSTRUMENTS:
        claim = CLAIMS["chance_tracks"].format(part=part, seconds=f"{length:g} s")
        ours = track_id.get(part, {}).get(f"proposed_{length:g}s")
        random = chance["table_4_1"].get(part, {}).get(f"{length:g}s")
        result = _accuracy_difference([{part: ours}], [{part: random}], prefix=False) \
            if ours is not None and random is not None else None
        out.append(finding(claim, result) if result else _not_computable(claim))
    return out


