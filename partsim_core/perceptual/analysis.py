"""Analyses of the Inst-Sim ABX listening test (thesis chapter 5), each returning a tidy :class:`pandas.DataFrame`.

Input is the ``responses`` table of :func:`partsim_core.perceptual.abx.read_answers_csv` (catch trials already
excluded). Readings chosen where the thesis leaves a choice open (each checked against a published number where one
exists; the chapter notebook shows the comparison):

* Table 5.2 - all valid responses, N/A counted as "not matching" (reproduces every published value to 0.1).
* Table 5.3 / 80 % filter - per unique sample set (the same three files, A/B order ignored because it differs
  between participants) the most frequent choice among {file 1, file 2, N/A} must hold >= 80 % of the responses
  and must not be N/A; "evaluations" are the A/B (non-N/A) responses to the kept sets, i.e. the listener results
  compared with a model (the drum-melody xab count is 4 sets, as the thesis says).
* Table 5.1 - music triplet = evaluation set + sample-set number (xab only); one binary value per (participant =
  subject, triplet, part): the part's overall choice equals the mix's overall choice; only (participant, triplet)
  with all six overall answers. Triplets with 4-9 evaluations give the triplet variances, participants with 4-9
  evaluations the participant variances, each filter applied on its own (this reproduces the published mean of
  5.74 evaluations per triplet; 4.71 per participant against the published 4.68). Variances are sample variances
  (ddof = 1; with ddof = 0 bass would contradict the thesis's "lower for all instruments"); the test is scipy's
  one-sided Mann-Whitney U (``alternative="less"``).
* Table 5.4 - share of xyc responses choosing Y (the segment of X's own track), Clopper-Pearson 95 % intervals;
  "including N/A" divides by all responses, "excluding N/A" by the A/B responses.

Used by ``notebooks/ch5_perceptual_analysis.py``, ``partsim perceptual tables`` and the chapter-4 evaluation
(:mod:`partsim_core.perceptual.agreement`).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.cluster import hierarchy

from partsim_core.errors import PartsimError
from partsim_core.perceptual.abx import (
    CATEGORIES,
    NA,
    NA_PERSPECTIVES,
    PART_CATEGORIES,
    PERSPECTIVES,
    SET_TYPES,
)

#: Agreement threshold of the model evaluation (thesis 4.4.2, 5.3.4).
AGREEMENT_THRESHOLD = 0.8
#: Range of evaluations per triplet / participant kept for Table 5.1.
TABLE_5_1_RANGE = (4, 9)
#: Number of Ward clusters coloured in Fig. 5.9.
FIG_5_9_CLUSTERS = 32


def clopper_pearson(successes: np.ndarray | int, trials: np.ndarray | int,
                    confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) binomial confidence interval, as proportions in [0, 1].

    Used for Table 5.4 and Fig. 5.12. ``trials == 0`` gives NaN bounds.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    low = np.where(n > 0, low, np.nan)
    high = np.where(n > 0, high, np.nan)
    return low, high


def _check_perspective(perspective: str) -> None:
    if perspective not in PERSPECTIVES:
        raise PartsimError(f"unknown perspective {perspective!r}; choose one of {', '.join(PERSPECTIVES)}")


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort a tidy table by thesis order of type, perspective and category where those columns exist."""
    order = {"set_type": list(SET_TYPES), "perspective": list(PERSPECTIVES), "category": list(CATEGORIES)}
    keys = [column for column in ("set_type", "perspective", "category") if column in frame.columns]
    if not keys or frame.empty:
        return frame.reset_index(drop=True)
    frame = frame.copy()
    for column in keys:
        frame[column] = pd.Categorical(frame[column], categories=order[column], ordered=True)
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    for column in keys:
        frame[column] = frame[column].astype(str)
    return frame


def to_thesis_layout(tidy: pd.DataFrame, value: str, rows: str = "perspective",
                     columns: str = "category") -> pd.DataFrame:
    """Pivot a tidy result into the thesis's table layout (rows x categories in thesis order)."""
    table = tidy.pivot_table(index=rows, columns=columns, values=value, aggfunc="first", observed=True)
    row_order = [item for item in (*PERSPECTIVES, *CATEGORIES, *SET_TYPES) if item in table.index]
    column_order = [item for item in CATEGORIES if item in table.columns]
    if row_order:
        table = table.reindex(index=row_order)
    if column_order:
        table = table.reindex(columns=column_order)
    table.columns.name = None
    table.index.name = None
    return table


# --------------------------------------------------------------------------------------------- Fig. 5.4


def response_counts(responses: pd.DataFrame, complete_only: bool = True) -> pd.DataFrame:
    """Strong (A+/B+), weak (A-/B-) and N/A responses per sample-set type, category and perspective (Fig. 5.4).

    Args:
        responses: valid responses.
        complete_only: keep only sessions that answered complete evaluation sets (with mix), as the thesis does.

    Returns:
        Columns ``set_type, category, perspective, strength`` (strong/weak/N/A) and ``count``.
    """
    data = responses[responses["complete"]] if complete_only else responses
    frames = []
    for perspective in PERSPECTIVES:
        counts = (data.groupby(["set_type", "category", f"strength_{perspective}"]).size()
                  .rename("count").reset_index().rename(columns={f"strength_{perspective}": "strength"}))
        counts.insert(2, "perspective", perspective)
        frames.append(counts)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    # Every cell present (zero where nobody answered so) so heatmaps have fixed shape.
    full = pd.MultiIndex.from_product(
        [SET_TYPES, [c for c in CATEGORIES if c in set(data["category"])], PERSPECTIVES, ["strong", "weak", NA]],
        names=["set_type", "category", "perspective", "strength"])
    table = table.set_index(["set_type", "category", "perspective", "strength"])["count"].reindex(full, fill_value=0)
    return _ordered(table.reset_index())


# --------------------------------------------------------------------------------------------- Fig. 5.6


def category_agreement(responses: pd.DataFrame, perspective: str = "overall") -> pd.DataFrame:
    """Agreement between two categories of one music triplet for one participant (thesis 5.3.1, Fig. 5.6).

    For every participant session and music triplet, two categories agree (1) when the participant chose the same
    role (the same track: A/B in xab, Y/C in xyc) in both, else 0; the rate is the mean over all such pairs where
    both answers are not N/A.

    Returns:
        Columns ``set_type, category_1, category_2, agreement, pairs``; both orders of each pair and the diagonal
        (1.0) are included so the frame pivots straight into a symmetric heatmap.
    """
    _check_perspective(perspective)
    column = f"chosen_role_{perspective}"
    rows = []
    for set_type in SET_TYPES:
        subset = responses[responses["set_type"] == set_type]
        wide = subset.pivot_table(index=["session", "triplet"], columns="category", values=column,
                                  aggfunc="first")
        present = [c for c in CATEGORIES if c in wide.columns]
        for first in present:
            rows.append((set_type, first, first, 1.0, int((wide[first] != NA).sum())))
        for first, second in combinations(present, 2):
            both = wide[[first, second]].dropna()
            both = both[(both[first] != NA) & (both[second] != NA)]
            rate = float((both[first] == both[second]).mean()) if len(both) else np.nan
            rows.append((set_type, first, second, rate, len(both)))
            rows.append((set_type, second, first, rate, len(both)))
    table = pd.DataFrame(rows, columns=["set_type", "category_1", "category_2", "agreement", "pairs"])
    return table


# --------------------------------------------------------------------------------------------- 5.3.2


def part_track_matches(responses: pd.DataFrame, perspective: str = "overall") -> pd.DataFrame:
    """Binary part-vs-track agreement per (participant, music triplet) on xab sample sets (thesis 5.3.2).

    Returns:
        Index ``(subject_id, triplet)``, one column per part (drums ... others): 1.0 when the participant chose
        the same track for the part as for the mix, else 0.0. Only (participant, triplet) pairs with a non-N/A
        answer for the mix and all five parts are kept.
    """
    _check_perspective(perspective)
    column = f"chosen_role_{perspective}"
    xab = responses[responses["set_type"] == "xab"]
    wide = xab.pivot_table(index=["subject_id", "triplet"], columns="category", values=column, aggfunc="first")
    needed = [*PART_CATEGORIES, "mix"]
    if any(category not in wide.columns for category in needed):
        return pd.DataFrame(columns=list(PART_CATEGORIES),
                            index=pd.MultiIndex.from_tuples([], names=["subject_id", "triplet"]), dtype=float)
    wide = wide[needed].dropna()
    wide = wide[(wide != NA).all(axis=1)]
    matches = pd.DataFrame({part: (wide[part] == wide["mix"]).astype(float) for part in PART_CATEGORIES},
                           index=wide.index)
    return matches


def matching_vectors(matches: pd.DataFrame, by: str = "triplet") -> pd.DataFrame:
    """5-d vectors of matching rates with the mix per music triplet or per participant (Fig. 5.8).

    Args:
        matches: output of :func:`part_track_matches`.
        by: ``"triplet"`` (mean over participants) or ``"participant"`` (mean over triplets).

    Returns:
        Index = triplet or subject id, columns = five parts, plus ``evaluations`` (rows averaged).
    """
    level = {"triplet": "triplet", "participant": "subject_id"}.get(by)
    if level is None:
        raise PartsimError(f"unknown grouping {by!r}; choose triplet or participant")
    grouped = matches.groupby(level=level)
    vectors = grouped.mean()
    vectors["evaluations"] = grouped.size()
    return vectors


def ward_linkage(vectors: pd.DataFrame) -> np.ndarray:
    """Ward hierarchical clustering (scipy linkage matrix) of the rows of ``vectors``' five part columns."""
    values = vectors[list(PART_CATEGORIES)].to_numpy(dtype=float)
    if len(values) < 2:
        raise PartsimError("Ward clustering needs at least two vectors")
    return hierarchy.linkage(values, method="ward")


def dendrogram_order(vectors: pd.DataFrame) -> list:
    """Row labels of ``vectors`` in the leaf order of their Ward dendrogram (Fig. 5.8 heatmap rows)."""
    leaves = hierarchy.dendrogram(ward_linkage(vectors), no_plot=True)["leaves"]
    return [vectors.index[i] for i in leaves]


def ward_clusters(vectors: pd.DataFrame, n_clusters: int = FIG_5_9_CLUSTERS) -> pd.Series:
    """Cluster label (1..k) of each row from cutting the Ward dendrogram into ``k = min(n_clusters, rows)``."""
    k = max(1, min(n_clusters, len(vectors)))
    labels = hierarchy.fcluster(ward_linkage(vectors), t=k, criterion="maxclust")
    return pd.Series(labels, index=vectors.index, name="cluster")


def tsne_embedding(vectors: pd.DataFrame, seed: int = 0, perplexity: float = 30.0) -> pd.DataFrame:
    """Two-dimensional t-SNE of the five part columns (Fig. 5.9); perplexity shrinks on small sets."""
    from sklearn.manifold import TSNE

    values = vectors[list(PART_CATEGORIES)].to_numpy(dtype=float)
    if len(values) < 3:
        raise PartsimError("t-SNE needs at least three vectors")
    perplexity = float(min(perplexity, max(1.0, (len(values) - 1) / 3)))
    points = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(values)
    return pd.DataFrame(points, index=vectors.index, columns=["x", "y"])


def variance_comparison(matches: pd.DataFrame, evaluation_range: tuple[int, int] = TABLE_5_1_RANGE) -> pd.DataFrame:
    """Within-triplet vs within-participant variance of the part-vs-track matches (Table 5.1).

    Triplets with ``evaluation_range`` evaluations (inclusive) give one sample variance each, participants likewise
    (filters applied independently, see the module docstring); the one-sided Mann-Whitney U test asks whether the
    triplet variances are smaller.

    Returns:
        Index = part; columns ``var_triplet, var_participant, p_value, n_triplets, n_participants,
        mean_evaluations_triplet, mean_evaluations_participant``.
    """
    low, high = evaluation_range
    triplet_sizes = matches.groupby(level="triplet").size()
    participant_sizes = matches.groupby(level="subject_id").size()
    kept_triplets = triplet_sizes[(triplet_sizes >= low) & (triplet_sizes <= high)].index
    kept_participants = participant_sizes[(participant_sizes >= low) & (participant_sizes <= high)].index
    by_triplet = matches[matches.index.get_level_values("triplet").isin(kept_triplets)]
    by_participant = matches[matches.index.get_level_values("subject_id").isin(kept_participants)]
    rows = []
    for part in PART_CATEGORIES:
        triplet_variance = by_triplet.groupby(level="triplet")[part].var(ddof=1)
        participant_variance = by_participant.groupby(level="subject_id")[part].var(ddof=1)
        if len(triplet_variance) and len(participant_variance):
            p_value = float(stats.mannwhitneyu(triplet_variance, participant_variance, alternative="less").pvalue)
        else:
            p_value = np.nan
        rows.append({
            "category": part,
            "var_triplet": float(triplet_variance.mean()) if len(triplet_variance) else np.nan,
            "var_participant": float(participant_variance.mean()) if len(participant_variance) else np.nan,
            "p_value": p_value,
            "n_triplets": len(kept_triplets),
            "n_participants": len(kept_participants),
            "mean_evaluations_triplet": float(triplet_sizes[kept_triplets].mean()) if len(kept_triplets) else np.nan,
            "mean_evaluations_participant": (float(participant_sizes[kept_participants].mean())
                                             if len(kept_participants) else np.nan),
        })
    return pd.DataFrame(rows).set_index("category")


# --------------------------------------------------------------------------------------------- Table 5.2


def perspective_matching_rates(responses: pd.DataFrame) -> pd.DataFrame:
    """Matching rate of timbre, rhythm and melody with overall, per category (Table 5.2).

    A response matches when the perspective's choice (A or B) equals the overall choice; N/A never matches.

    Returns:
        Columns ``perspective, category, matches, responses, percent``.
    """
    rows = []
    overall = responses["choice_overall"]
    for perspective in NA_PERSPECTIVES:
        choice = responses[f"choice_{perspective}"]
        matched = (choice != NA) & (choice == overall)
        grouped = matched.groupby(responses["category"])
        for category, values in grouped:
            rows.append((perspective, category, int(values.sum()), len(values), 100.0 * float(values.mean())))
    table = pd.DataFrame(rows, columns=["perspective", "category", "matches", "responses", "percent"])
    return _ordered(table)


def all_na_participants(responses: pd.DataFrame, subjects: Sequence[str] | None = None,
                        category: str = "drums", perspective: str = "melody") -> int:
    """Number of participants with no non-N/A answer for ``category`` x ``perspective`` (thesis 5.3.4: 39 of 281).

    ``subjects`` lists every participant to count (default: those in ``responses``); one without any answer for the
    category counts as "all N/A", as in the thesis's count.
    """
    _check_perspective(perspective)
    subset = responses[(responses["category"] == category) & (responses[f"choice_{perspective}"] != NA)]
    answered = set(subset["subject_id"])
    everyone = set(responses["subject_id"]) if subjects is None else set(subjects)
    return len(everyone - answered)


# --------------------------------------------------------------------------------------------- 80 % filter


def agreement_filter(responses: pd.DataFrame, threshold: float = AGREEMENT_THRESHOLD,
                     perspectives: Sequence[str] = PERSPECTIVES) -> pd.DataFrame:
    """The 80 %-agreement filter of the model evaluation (thesis 4.4.2, 5.3.4), per unique sample set.

    Choices are compared as chosen FILES (the A/B order of one sample set differs between participants).

    Returns:
        One row per (perspective, unique sample set): ``perspective, set_key, set_type, category, reference,
        responses, top_choice`` (file or N/A), ``top_share``, ``kept`` (share >= threshold and not N/A) and
        ``evaluations`` (A/B responses to the set).
    """
    frames = []
    for perspective in perspectives:
        _check_perspective(perspective)
        column = f"chosen_{perspective}"
        counts = responses.groupby(["set_key", column]).size().rename("n").reset_index()
        totals = counts.groupby("set_key")["n"].transform("sum")
        counts["share"] = counts["n"] / totals
        counts = counts.sort_values(["set_key", "n", column], ascending=[True, False, True], kind="stable")
        top = counts.drop_duplicates("set_key").set_index("set_key")
        info = responses.groupby("set_key").agg(set_type=("set_type", "first"), category=("category", "first"),
                                                reference=("reference", "first"), responses=("row", "size"),
                                                evaluations=(column, lambda s: int((s != NA).sum())))
        frame = info.join(top[[column, "share"]].rename(columns={column: "top_choice", "share": "top_share"}))
        # Tolerance so that e.g. 4 of 5 (0.8 in floating point) passes a 0.8 threshold.
        frame["kept"] = (frame["top_share"] >= threshold - 1e-9) & (frame["top_choice"] != NA)
        frame.insert(0, "perspective", perspective)
        frames.append(frame.reset_index())
    columns = ["perspective", "set_key", "set_type", "category", "reference", "responses", "top_choice",
               "top_share", "kept", "evaluations"]
    return _ordered(pd.concat(frames, ignore_index=True)[columns])


def filter_summary(filtered: pd.DataFrame, categories: Sequence[str] = CATEGORIES) -> pd.DataFrame:
    """Unique sample sets and evaluations kept by :func:`agreement_filter` (Table 5.3).

    Returns:
        Columns ``set_type, perspective, category, sets, evaluations`` (zero where nothing passes).
    """
    kept = filtered[filtered["kept"]]
    summary = kept.groupby(["set_type", "perspective", "category"]).agg(sets=("set_key", "size"),
                                                                        evaluations=("evaluations", "sum"))
    full = pd.MultiIndex.from_product([SET_TYPES, list(dict.fromkeys(filtered["perspective"])), list(categories)],
                                      names=["set_type", "perspective", "category"])
    summary = summary.reindex(full, fill_value=0).astype(int).reset_index()
    return _ordered(summary)


def kept_evaluations(responses: pd.DataFrame, filtered: pd.DataFrame, perspective: str) -> pd.DataFrame:
    """The listener results used for model evaluation: A/B responses to the sample sets kept for ``perspective``.

    Returns:
        Columns ``set_key, set_type, category, reference, sample_a, sample_b, subject_id, chosen`` (the chosen
        file).
    """
    _check_perspective(perspective)
    kept_keys = filtered.loc[(filtered["perspective"] == perspective) & filtered["kept"], "set_key"]
    subset = responses[responses["set_key"].isin(set(kept_keys)) & (responses[f"chosen_{perspective}"] != NA)]
    out = subset[["set_key", "set_type", "category", "reference", "sample_a", "sample_b", "subject_id"]].copy()
    out["chosen"] = subset[f"chosen_{perspective}"].to_numpy()
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------- Table 5.4


def within_between(responses: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Share of xyc responses choosing Y, the other segment of X's own track (Table 5.4).

    Returns:
        Columns ``na, perspective, category, same_track, responses, percent, ci_low, ci_high`` (percent);
        ``na`` is ``"including_na"`` (all responses in the denominator) or ``"excluding_na"`` (A/B responses only;
        overall has no N/A and is listed only under ``including_na``, as in the thesis).
    """
    xyc = responses[responses["set_type"] == "xyc"]
    rows = []
    for na_mode in ("including_na", "excluding_na"):
        for perspective in PERSPECTIVES:
            if na_mode == "excluding_na" and perspective == "overall":
                continue
            role = xyc[f"chosen_role_{perspective}"]
            usable = role.notna() if na_mode == "including_na" else role != NA
            for category, values in role[usable].groupby(xyc.loc[usable, "category"]):
                same = int((values == "Y").sum())
                rows.append((na_mode, perspective, category, same, len(values)))
    table = pd.DataFrame(rows, columns=["na", "perspective", "category", "same_track", "responses"])
    low, high = clopper_pearson(table["same_track"].to_numpy(), table["responses"].to_numpy(), confidence)
    table["percent"] = 100.0 * table["same_track"] / table["responses"]
    table["ci_low"] = 100.0 * low
    table["ci_high"] = 100.0 * high
    if table.empty:  # no xyc response at all
        return table
    table["na"] = pd.Categorical(table["na"], ["including_na", "excluding_na"], ordered=True)
    ordered = pd.concat([_ordered(part) for _, part in table.groupby("na", observed=True)], ignore_index=True)
    ordered["na"] = ordered["na"].astype(str)
    return ordered


# --------------------------------------------------------------------------------------------- the CLI's JSON


def thesis_tables(responses: pd.DataFrame) -> dict:
    """Every computed thesis table of chapter 5 as one JSON-ready dict (``partsim perceptual tables``).

    Keys: ``valid_responses``, ``table_5_1`` (part -> var_triplet, var_participant, p_value), ``table_5_2``
    (perspective -> category -> percent), ``table_5_3`` (xab|xyc -> sets|evaluations -> perspective -> part ->
    int), ``table_5_4`` (including_na|excluding_na -> perspective -> category -> [low %, high %]). Categories follow
    the thesis's columns (mix only where the thesis has it); values are unrounded.
    """
    def finite(value: float) -> float | None:
        return None if value is None or not np.isfinite(value) else float(value)

    rates = perspective_matching_rates(responses)
    table_5_2: dict = {}
    for row in rates.itertuples(index=False):
        table_5_2.setdefault(row.perspective, {})[row.category] = finite(row.percent)

    summary = filter_summary(agreement_filter(responses), categories=PART_CATEGORIES)
    table_5_3: dict = {set_type: {"sets": {}, "evaluations": {}} for set_type in SET_TYPES}
    for row in summary.itertuples(index=False):
        table_5_3[row.set_type]["sets"].setdefault(row.perspective, {})[row.category] = int(row.sets)
        table_5_3[row.set_type]["evaluations"].setdefault(row.perspective, {})[row.category] = int(row.evaluations)

    table_5_4: dict = {"including_na": {}, "excluding_na": {}}
    for row in within_between(responses).itertuples(index=False):
        table_5_4[row.na].setdefault(row.perspective, {})[row.category] = [finite(row.ci_low), finite(row.ci_high)]

    table_5_1: dict = {}
    matches = part_track_matches(responses)
    if len(matches):
        for category, row in variance_comparison(matches).iterrows():
            table_5_1[category] = {"var_triplet": finite(row["var_triplet"]),
                                   "var_participant": finite(row["var_participant"]),
                                   "p_value": finite(row["p_value"])}
    return {"valid_responses": int(len(responses)), "table_5_2": table_5_2, "table_5_3": table_5_3,
            "table_5_4": table_5_4, "table_5_1": table_5_1}
