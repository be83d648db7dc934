"""Chapter 6's evaluation as one run: ground-truth retrieval metrics, the CSN's distance choice, and the simulated
C0-C3 test, with an interval on every number and findings with verdicts.

Steps of :func:`run_evaluation` (the dataset handle comes from the entry point):

1. The pseudo-piece catalogs (:mod:`.pseudo_catalog`) of the **test** split (reported numbers) and of the
   **validation** split (choices; the train split when validation has fewer than 3 songs) - never the test split.
2. Every method's raw embeddings of each catalog (:func:`~partsim_core.mixquery.ranking.catalog_embeddings`) and
   its rankings by eq. 6.1 (mean of the raw query embeddings) and eq. 6.2 (:mod:`.ranking`). The thesis's cosine
   distance for every backend except the CSN, whose distance (cosine or Euclidean) is the one with the higher
   mean MRR on the validation catalog (ties: cosine), reported with the paired difference.
3. recall@10, recall@100 and MRR per method and part combination (:mod:`.metrics`): bootstrap 95 % intervals over
   queries and training seeds; differences between methods paired over the same queries; the random peer exact.
4. The simulated C0-C3 test (:mod:`.simulated_listening`), exact binomial intervals.
5. Findings (:func:`partsim_core.stats.finding`): holds / does not hold / inconclusive by the interval.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.outputs import finite_json
from partsim_core.errors import PartsimError
from partsim_core.mixquery.backends import EmbeddingBackend, get_backend
from partsim_core.mixquery.metrics import (
    RANDOM_METHOD,
    difference_cell,
    metric_cells,
    per_query_table,
    random_expectation_table,
    random_rankings,
    summary_table,
)
from partsim_core.mixquery.pseudo_catalog import PseudoCatalog, build_pseudo_catalog
from partsim_core.mixquery.pseudo_plan import EvaluationSizes, evaluation_sizes
from partsim_core.mixquery.ranking import DISTANCES, catalog_embeddings, rank_songs
from partsim_core.mixquery.search import SongHit
from partsim_core.mixquery.simulated_listening import SimulatedABX, simulate_abx
from partsim_core.stats import bootstrap_cell, finding

#: Method name of the track-level peer.
TRACK_METHOD = "track"

#: The backend whose search distance is chosen by measured recall (the others use the thesis's cosine).
CSN_METHOD = "csn"

#: The distance rule, as the chapter states it.
DISTANCE_RULE = ("cosine (the thesis's) for every backend except the CSN; for the CSN the distance with the higher "
                 "mean MRR on the validation pseudo pieces (never the test split), cosine on a tie")


@dataclass
class DistanceSelection:
    """The CSN's search distance chosen on validation pseudo pieces.

    Attributes:
        chosen: ``cosine`` or ``euclidean``.
        split: The source split of the pieces it was measured on.
        cells: ``{distance: {metric: cell}}`` over the validation queries (and seeds).
        difference: Paired ``MRR(euclidean) - MRR(cosine)`` cell.
    """

    chosen: str
    split: str
    cells: dict[str, dict[str, dict[str, float]]]
    difference: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"chosen": self.chosen, "split": self.split, "rule": DISTANCE_RULE, "cells": self.cells,
                "euclidean_minus_cosine_MRR": self.difference}


@dataclass
class MixQueryEvaluation:
    """Result of :func:`run_evaluation`.

    Attributes:
        preset: Preset of the models and sizes.
        seeds: Training seeds of the models.
        catalog: The test pseudo-piece catalog.
        per_query: One row per (seed, method, query) (see :func:`~partsim_core.mixquery.metrics.per_query_table`).
        table: Mean recall@10, recall@100, MRR per method and combination.
        cells: The same with 95 % intervals (``{method: {combination: {metric: cell}}}``).
        differences: Paired MRR differences between methods (``"a - b": cell``).
        abx: The simulated C0-C3 test (SIMULATED), answers of every seed pooled.
        rankings: ``{method: {query id: ranked SongHits}}`` of the first seed (random: one seeded shuffle).
        distances: Search distance of every method.
        selection: The CSN's distance choice (``None`` without a CSN).
        findings: Claims with verdicts.
        seconds: Wall time per step.
    """

    preset: str
    seeds: list[int]
    catalog: PseudoCatalog
    per_query: pd.DataFrame
    table: pd.DataFrame
    cells: dict[str, Any]
    differences: dict[str, dict[str, float]]
    abx: SimulatedABX
    rankings: dict[str, dict[str, list[SongHit]]]
    distances: dict[str, str]
    selection: DistanceSelection | None
    findings: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """Methods in table order."""
        return list(dict.fromkeys(self.per_query["method"]))

    def to_json(self) -> dict[str, Any]:
        """The chapter's JSON (what ``partsim mixquery run --out`` writes): cells ``{"value", "low", "high"}``;
        undefined numbers (e.g. a simulated strategy without answers) are ``null``, never NaN."""
        abx = self.abx.to_json()
        return finite_json({"chapter": 6, "preset": self.preset, "seeds": self.seeds,
                "catalog": self.catalog.summary(),
                "random_ranking": "exact expectation over uniformly random rankings",
                "intervals": "95 %: bootstrap over queries (and seeds) for recall and MRR, paired for differences; "
                             "exact binomial (Clopper-Pearson) for simulated answers",
                "distances": self.distances,
                "csn_distance_selection": self.selection.to_json() if self.selection else None,
                "retrieval": self.cells, "retrieval_differences": self.differences,
                "figure_6_8_simulated": abx.pop("accuracy"),
                "figure_6_8_simulated_by_part": abx.pop("accuracy_by_part"),
                "simulated_abx": abx, "findings": self.findings,
                "ground_truth": _records(self.catalog.ground_truth()),
                "seconds": {name: round(value, 2) for name, value in self.seconds.items()}})


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe records of a frame (index as columns)."""
    flat = frame.reset_index()
    return [{key: (value.item() if isinstance(value, np.generic) else value) for key, value in row.items()}
            for row in flat.to_dict(orient="records")]


def rank_queries(catalog: PseudoCatalog, backend: EmbeddingBackend, distance: str, progress: bool = False,
                 fresh: bool = False) -> dict[str, list[SongHit]]:
    """Every query's ranking of the catalog (query songs left out) by eq. 6.1-6.2 with ``distance`` (``fresh``:
    recompute the catalog's embeddings)."""
    embeddings = catalog_embeddings(catalog.catalog(backend.sample_rate), backend, progress=progress, fresh=fresh)
    return {query.query_id: rank_songs(embeddings, query.stem_queries(embeddings.parts), distance)
            for query in catalog.queries}


def select_csn_distance(validation: PseudoCatalog, backends: Sequence[EmbeddingBackend], seed: int = 0,
                        progress: bool = False, fresh: bool = False) -> DistanceSelection:
    """Choose the CSN's search distance on validation pseudo pieces (one backend per training seed).

    The distance with the higher mean MRR over the validation queries and seeds wins; a tie keeps cosine.
    """
    frames = []
    for number, backend in enumerate(backends):
        for distance in DISTANCES:
            ranked = rank_queries(validation, backend, distance, progress, fresh=fresh and distance == DISTANCES[0])
            frames.append(per_query_table(distance, ranked, validation).assign(seed=number))
    per_query = pd.concat(frames, ignore_index=True)
    cells = metric_cells(per_query, seed=seed)
    means = {distance: cells[distance]["all"]["MRR"]["value"] for distance in DISTANCES}
    chosen = "euclidean" if means["euclidean"] > means["cosine"] else "cosine"
    return DistanceSelection(chosen, validation.manifest.get("source_split", "validation"),
                             {distance: cells[distance]["all"] for distance in DISTANCES},
                             difference_cell(per_query, "euclidean", "cosine", seed=seed))


def _validation_catalog(data: DatasetHandle, sizes: EvaluationSizes, seed: int, progress: bool, fresh: bool
                        ) -> PseudoCatalog:
    """Pseudo pieces of the validation split, or of the train split when validation is too small."""
    try:
        return build_pseudo_catalog(data, split="validation", sizes=sizes, seed=seed, fresh=fresh, progress=progress)
    except PartsimError as error:
        if "at least 3" not in str(error):
            raise
        return build_pseudo_catalog(data, split="train", sizes=sizes, seed=seed, fresh=fresh, progress=progress)


def evaluation_findings(per_query: pd.DataFrame, abx: SimulatedABX, part_level: Sequence[str], seed: int = 0
                        ) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Paired differences and findings: each part-level method against random and the track-level network, the
    part-level methods against each other (MRR), and the simulated C2/C3 accuracies against chance."""
    methods = list(dict.fromkeys(per_query["method"]))
    differences: dict[str, dict[str, float]] = {}
    findings: list[dict[str, Any]] = []
    for method in part_level:
        for peer, words in ((RANDOM_METHOD, "random ranking"), (TRACK_METHOD, "the track-level network")):
            if peer not in methods:
                continue
            cell = differences[f"{method} - {peer}"] = difference_cell(per_query, method, peer, seed=seed)
            findings.append(finding(f"MixQuery with {method} embeddings finds the pieces holding both query parts "
                                    f"earlier than {words} (MRR difference > 0)", cell))
    for first, second in itertools.pairwise(part_level):
        cell = differences[f"{first} - {second}"] = difference_cell(per_query, first, second, seed=seed)
        findings.append(finding(f"{first} embeddings retrieve better than {second} embeddings (MRR difference > 0)",
                                cell))
    for method in part_level:
        for strategy in ("C2", "C3"):
            cell = bootstrap_cell(abx.query_accuracy(method, strategy), seed=seed)
            findings.append(finding(f"SIMULATED listeners prefer {method}'s top song over a {strategy} comparison "
                                    "more often than chance (accuracy > 0.5; thesis Fig. 6.8; interval over query "
                                    "sets)", cell, 0.5, simulated=True))
    return differences, findings


def run_evaluation(data: DatasetHandle, backends: Sequence[str | EmbeddingBackend] = ("csn", "separated"), *,
                   track_level: bool | EmbeddingBackend = True, seed: int = 0, seeds: int = 1, device: str = "auto",
                   sizes: EvaluationSizes | None = None, catalog: PseudoCatalog | None = None,
                   validation: PseudoCatalog | None = None, csn_distance: str | None = None,
                   epochs: int | None = None, fresh: bool = False, progress: bool = True) -> MixQueryEvaluation:
    """Run chapter 6's evaluation (module docstring).

    Args:
        data: The dataset handle the entry point resolved (a generated dataset: it needs ground truth).
        backends: Backend names (``csn``, ``separated``, ``mert``) or ready backends (tests pass tiny or oracle
            ones; a ready backend serves every seed); each becomes a method named after its ``name``.
        track_level: Add the track-level peer (``True``: backend ``track``; or a ready backend; ``False``: none).
        seed: First training seed; also seeds the catalogs, the random ranking and the listeners.
        seeds: Training seeds ``seed .. seed + seeds - 1`` of the named backends; intervals include their spread.
        device: Torch device for training and embedding.
        sizes: Override of the preset's evaluation sizes.
        catalog: An already built test catalog.
        validation: An already built validation catalog (for the CSN's distance).
        csn_distance: Force the CSN's distance (skips the validation measurement).
        epochs: Training epochs of the named backends' models (``None``: the preset's).
        fresh: Retrain the models and rebuild the catalogs and embeddings instead of reusing cached ones.
        progress: Progress bars.

    Raises:
        PartsimError: a dataset without ground truth, an unknown backend or distance, two methods of one name.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise PartsimError(f"seeds must be a positive integer, got {seeds!r}")
    if csn_distance is not None and csn_distance not in DISTANCES:
        raise PartsimError(f"unknown distance {csn_distance!r}; choose one of: {', '.join(DISTANCES)}")
    sizes = sizes or evaluation_sizes(data.preset.name)
    seed_list = list(range(seed, seed + seeds))
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    if catalog is None:
        catalog = build_pseudo_catalog(data, split="test", sizes=sizes, seed=seed, fresh=fresh, progress=progress)
    seconds["catalog"] = time.perf_counter() - started
    methods: list[str | EmbeddingBackend] = list(backends)
    if track_level is True:
        methods.append(TRACK_METHOD)
    elif track_level is not False:
        methods.append(track_level)
    # One backend per (method, seed); a ready backend serves every seed.
    per_seed: dict[str, list[EmbeddingBackend]] = {}
    for method in methods:
        started = time.perf_counter()
        built = [get_backend(method, data, device=device, progress=progress, seed=number, epochs=epochs, fresh=fresh)
                 for number in seed_list] if isinstance(method, str) else [method] * seeds
        name = built[0].name
        if name in per_seed or name == RANDOM_METHOD:
            raise PartsimError(f"two methods named {name!r}: give each backend its own name")
        per_seed[name] = built
        seconds[f"models {name}"] = time.perf_counter() - started
    selection = None
    distances = {name: "cosine" for name in per_seed}
    if CSN_METHOD in per_seed:
        if csn_distance is None:
            started = time.perf_counter()
            validation = validation or _validation_catalog(data, sizes, seed, progress, fresh)
            selection = select_csn_distance(validation, per_seed[CSN_METHOD], seed=seed, progress=progress,
                                            fresh=fresh)
            distances[CSN_METHOD] = selection.chosen
            seconds["csn distance selection"] = time.perf_counter() - started
        else:
            distances[CSN_METHOD] = csn_distance
    frames = []
    rankings: dict[str, dict[str, list[SongHit]]] = {}
    trials = []
    abx = None
    for number, seed_value in enumerate(seed_list):
        ranked_seed: dict[str, dict[str, list[SongHit]]] = {}
        for name, built in tqdm(per_seed.items(), desc=f"rankings (seed {seed_value})", unit="method",
                                disable=not progress):
            started = time.perf_counter()
            ranked_seed[name] = rank_queries(catalog, built[number], distances[name], progress, fresh=fresh)
            frames.append(per_query_table(name, ranked_seed[name], catalog).assign(seed=seed_value))
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        ranked_seed[RANDOM_METHOD] = random_rankings(catalog, seed=seed_value)
        if number == 0:
            rankings = ranked_seed
        abx = simulate_abx(ranked_seed, catalog, listeners=sizes.listeners, listener_noise=sizes.listener_noise,
                           seed=seed_value)
        trials.append(abx.trials.assign(seed=seed_value))
    frames.append(random_expectation_table(catalog))
    per_query = pd.concat(frames, ignore_index=True)
    abx = SimulatedABX(abx.ranges, abx.n_ranked, abx.listeners, abx.noise, pd.concat(trials, ignore_index=True))
    part_level = [name for name in per_seed if name != TRACK_METHOD]
    differences, findings = evaluation_findings(per_query, abx, part_level, seed=seed)
    return MixQueryEvaluation(data.preset.name, seed_list, catalog, per_query, summary_table(per_query),
                              metric_cells(per_query, seed=seed), differences, abx, rankings, distances, selection,
                              findings, seconds)

