"""Chapter 4's experiment: train (or reuse) the conditions, embed the test set, compute Tables 4.1-4.6 with intervals.

:func:`run_chapter4` is the one entry point of the chapter-4 notebook and of ``partsim csn run``. It receives the
dataset handle built once by its caller and

1. trains or reuses, for every seed, the CSN of every chosen condition (:mod:`partsim_core.csn.conditions`; the
   artefact cache makes a second run, or a run of one more condition, train nothing else) and the chapter-3
   networks condition (a) needs (per-part networks on separated stems, and on ideal stems for Table 4.5's
   reference block);
2. embeds chapter 4's test set (:mod:`partsim_core.csn.test_set`: filtered test tracks, 3-/5-/10-s grids, test
   pseudo pieces, single clean stems) in streamed batches;
3. computes every table per test track and seed (:mod:`partsim_core.csn.metrics`), so each cell carries a 95 %
   interval (bootstrap over test tracks, seeds included), and the findings from paired differences
   (:mod:`partsim_core.csn.findings`); Table 4.6 (:mod:`partsim_core.csn.listening`) uses every seed's models,
   the style-leakage measure (:mod:`partsim_core.csn.leakage`, our addition) the first seed's;
4. with condition (a), measures Table 4.2's baseline row for a sweep of separators of different quality next to
   condition (i) (:mod:`partsim_core.csn.crossover`: where the curves cross), adding one finding per separator.

Choices made here, documented because the thesis leaves them open:

* **Which segments count for a part.** Table 4.1 and Table 4.4 use, for part ``c``, the grid segments where ``c``'s
  ideal stem is not silent, for the CSN and the baseline alike; Table 4.5 uses every grid segment whose mix is not
  silent; the reference block 4.5a (chapter-3 networks on ideal stems) uses, for each pair of parts, the segments
  where both stems sound.
* **Condition (a) on test pseudo pieces** (Table 4.2): the chapter-3 separator separates each piece's whole mix,
  and the part's network embeds the separated part at the piece's segments.
* **Table 4.3's rows** are (k) = psd+basic+add ("wo/pre, wo/norm"), (j) = (k)+pre ("w/pre, wo/norm") and (i)
  ("w/pre, w/norm"); (j) and (k) are not rows of Table 4.2
  (:data:`partsim_core.csn.conditions.EXTRA_CONDITIONS`).
* **Table 4.6** uses the xab ("test 1") sets, as the thesis's table does; its cells are ``{"value", "low",
  "high"}`` like every other table's (one seed: Clopper-Pearson over responses; several: a bootstrap over seeds and
  responses; :mod:`partsim_core.csn.listening`), and its finding (piano, proposed vs baseline) joins the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from partsim_core import INSTRUMENTS
from partsim_core.baseline.networks import train_part_network
from partsim_core.baseline.separated_stems import separated_source
from partsim_core.baseline.separators import check_backend
from partsim_core.csn.conditions import ALL_LETTERS, get_condition, train_condition
from partsim_core.csn.crossover import (
    CrossoverResult,
    baseline_piece_embeddings,
    separator_crossover,
    sweep_for,
)
from partsim_core.csn.findings import chapter4_findings
from partsim_core.csn.leakage import LEAKAGE_COLUMNS, grid_styles, leakage_table
from partsim_core.csn.listening import ground_truth_styles, table_4_6
from partsim_core.csn.metrics import (
    ItemScores,
    chance_tables,
    csn_spaces,
    missing_cell,
    table_4_1,
    table_4_2,
    table_4_3,
    table_4_4,
    table_4_5,
)
from partsim_core.csn.pretraining import target_networks, train_pretraining
from partsim_core.csn.test_set import (
    EVALUATION_SECONDS,
    TABLE_4_1_SECONDS,
    PseudoPieceSet,
    SegmentGrid,
    chapter4_test_tracks,
    embed_index,
    segment_grid,
    test_pseudo_pieces,
)
from partsim_core.data.dataset import DatasetHandle
from partsim_core.device import resolve_device
from partsim_core.errors import PartsimError
from partsim_core.stats import VERDICTS

#: Conditions of the rows of Tables 4.3, 4.4 and 4.5 (thesis captions).
TABLE_4_3_ROWS: dict[str, str] = {"wo/pre, wo/norm": "k", "w/pre, wo/norm": "j", "w/pre, w/norm": "i"}
TABLE_4_4_ROWS: dict[str, str] = {"wo/psd": "e", "w/psd": "i"}
TABLE_4_5_BLOCKS: dict[str, str] = {"a": "reference", "b": "(e)", "c": "(i)"}

#: The "proposed" model of Tables 4.1 and 4.6.
PROPOSED = "i"

#: Everything :func:`run_chapter4` trains by default: (a)-(i) and the extra conditions of Table 4.3.
ALL_CONDITIONS: tuple[str, ...] = ALL_LETTERS


@dataclass
class Chapter4Results:
    """Everything chapter 4 computes: per-item tables (cells with intervals), findings, training histories, and
    the first seed's embeddings for the figures."""

    preset: str
    conditions: list[str]
    seeds: list[int]
    #: ``table_4_1``: {part: {column: scores}}; ``table_4_2``, ``identification``, ``stem_mix``: {row: {part:
    #: scores}}; ``subspace_correlation``: {row or "reference": {(part, part): scores}}.
    tables: dict[str, Any]
    findings: list[dict]
    #: Train/validation loss per epoch of every model, by model name (``csn-i/seed0``, ``part-drums-separated/
    #: seed0``...).
    histories: dict[str, list[dict]]
    reused: dict[str, bool]
    timings: dict[str, float]
    n_segments: dict[str, int]
    #: ``{perspective: {row: {part: cell}}}`` (%), perspectives ``overall`` (4.6a) and ``timbre`` (4.6b).
    table_4_6: dict[str, dict[str, dict[str, dict[str, float]]]]
    listening_test: str
    style_leakage: pd.DataFrame
    grids: dict[float, SegmentGrid] = field(default_factory=dict, repr=False)
    #: ``condition -> {"mix_5": (n, 640), "stems_5": {part: (n_part, 640)}, "pseudo": (m, 640)}`` (first seed).
    embeddings: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    pseudo: PseudoPieceSet | None = field(default=None, repr=False)
    data: Any = field(default=None, repr=False)
    #: The separator sweep on Table 4.2's measure (None without condition (a) or with an empty sweep).
    separator_crossover: CrossoverResult | None = field(default=None, repr=False)

    # ---- cells -----------------------------------------------------------------------------------------------

    def cells(self, name: str) -> dict[str, Any]:
        """Table ``name`` (``table_4_1`` .. ``table_4_5``) as nested ``{"value", "low", "high"}`` cells in the
        thesis's layout (rows and columns as in the book)."""
        def as_cell(scores: ItemScores | None) -> dict[str, float]:
            return missing_cell() if scores is None else scores.cell()

        tables = self.tables
        if name == "table_4_1":
            return {part: {column: as_cell(scores) for column, scores in row.items()}
                    for part, row in tables["table_4_1"].items()}
        if name == "table_4_2":
            return {row: {part: as_cell(scores) for part, scores in cells.items()}
                    for row, cells in tables["table_4_2"].items()}
        if name == "table_4_3":
            return {label: {part: as_cell(scores) for part, scores in tables["identification"][f"({letter})"].items()}
                    for label, letter in TABLE_4_3_ROWS.items() if f"({letter})" in tables["identification"]}
        if name == "table_4_4":
            return {label: {part: as_cell(scores) for part, scores in tables["stem_mix"][f"({letter})"].items()}
                    for label, letter in TABLE_4_4_ROWS.items() if f"({letter})" in tables["stem_mix"]}
        if name == "table_4_5":
            out = {}
            for block, key in TABLE_4_5_BLOCKS.items():
                pairs = tables["subspace_correlation"].get(key)
                if pairs is None:
                    continue
                out[block] = {first: {second: as_cell(pairs[first, second]) for second in INSTRUMENTS[i + 1:]}
                              for i, first in enumerate(INSTRUMENTS[:-1])}
            return out
        raise PartsimError(f"unknown chapter-4 table {name!r}; choose one of table_4_1 .. table_4_5")

    def frame(self, name: str, what: str = "value") -> pd.DataFrame | dict[str, pd.DataFrame]:
        """Table ``name`` as a DataFrame of ``what`` (``value``, ``low`` or ``high``); Table 4.5 as a dict of blocks
        (upper triangle, 5 x 5)."""
        cells = self.cells(name)
        if name == "table_4_5":
            blocks = {}
            for block, rows in cells.items():
                matrix = pd.DataFrame(np.nan, index=list(INSTRUMENTS), columns=list(INSTRUMENTS))
                for first, row in rows.items():
                    for second, value in row.items():
                        matrix.loc[first, second] = value[what]
                blocks[block] = matrix
            return blocks
        frame = pd.DataFrame({row: {column: value[what] for column, value in columns.items()}
                              for row, columns in cells.items()}).T
        if name == "table_4_1":
            frame.index.name = "part"
        return frame

    def chance_frame(self) -> pd.DataFrame:
        """Chance level (%) of Tables 4.2 and 4.1 per part: the same cells scored on random embeddings
        (:func:`~partsim_core.csn.metrics.chance_tables`); rows ``Table 4.2`` and ``Table 4.1 (3 s)`` ..."""
        chance = self.tables["chance"]
        rows = {"Table 4.2": {part: scores for part, scores in chance["table_4_2"].items()}}
        for part, columns in chance["table_4_1"].items():
            for column, scores in columns.items():
                rows.setdefault(f"Table 4.1 ({column[:-1]} s)", {})[part] = scores
        return pd.DataFrame({row: {part: math.nan if scores is None else scores.cell()["value"]
                                   for part, scores in cells.items()} for row, cells in rows.items()}).T

    def compare(self, name: str, thesis: pd.DataFrame, block: str | None = None) -> pd.DataFrame:
        """Our cells beside the thesis's numbers, one line per cell: ``row, column, thesis, ours, low, high`` and
        ``thesis in interval`` (whether the thesis's number lies inside our 95 % interval).

        Args:
            name: ``table_4_1`` .. ``table_4_5``.
            thesis: the thesis's table in the same layout (rows and columns as in the book).
            block: Table 4.5's block (``a``, ``b`` or ``c``).
        """
        frames = {what: self.frame(name, what) for what in ("value", "low", "high")}
        if name == "table_4_5":
            frames = {what: frame.get(block, pd.DataFrame()) for what, frame in frames.items()}
        ours = frames["value"]

        def get(frame: pd.DataFrame, row: Any, column: Any) -> float:
            value = frame.at[row, column] if row in frame.index and column in frame.columns else np.nan
            return float(value) if pd.notna(value) else math.nan

        records = []
        for row in dict.fromkeys([*thesis.index, *ours.index]):
            for column in dict.fromkeys([*thesis.columns, *ours.columns]):
                if column not in ours.columns and not pd.api.types.is_numeric_dtype(thesis[column]):
                    continue
                value, low, high, published = (get(frame, row, column) for frame in (ours, frames["low"],
                                                                                      frames["high"], thesis))
                if math.isnan(value) and math.isnan(published):
                    continue
                records.append({"row": row, "column": column, "thesis": published, "ours": value, "low": low,
                                "high": high, "thesis in interval": (low <= published <= high)
                                if not any(math.isnan(v) for v in (low, high, published)) else None})
        return pd.DataFrame.from_records(records, columns=["row", "column", "thesis", "ours", "low", "high",
                                                           "thesis in interval"])

    def all_conditions(self, name: str, what: str = "value") -> pd.DataFrame:
        """``identification`` (Table 4.3's measure) or ``stem_mix`` (Table 4.4's) for every trained condition."""
        return pd.DataFrame({row: {part: (missing_cell() if s is None else s.cell())[what] for part, s in cells.items()}
                             for row, cells in self.tables[name].items()}).T

    def leakage_summary(self) -> pd.DataFrame:
        """Per condition: mean excess precision of each subspace for its own part (``own``) and for the other parts
        (``leakage``, near 0 = no leakage). Our addition."""
        if self.style_leakage.empty:
            return pd.DataFrame(columns=["own", "leakage"])
        grouped = self.style_leakage.groupby(["condition", "relation"])["excess"].mean().unstack("relation")
        return grouped.rename(columns={"same": "own", "other": "leakage"}).reindex(columns=["own", "leakage"])

    def to_json(self) -> dict[str, Any]:
        """JSON-ready results: tables 4.1-4.5 as cells, findings, Table 4.6, histories, timings (NaN -> null)."""
        def clean(value: Any) -> Any:
            if isinstance(value, dict):
                return {str(k): clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            if isinstance(value, (float, np.floating)):
                return None if not math.isfinite(float(value)) else float(value)
            if isinstance(value, (np.integer,)):
                return int(value)
            if isinstance(value, np.bool_):
                return bool(value)
            return value

        payload = {
            "chapter": 4, "preset": self.preset, "conditions": self.conditions, "seeds": self.seeds,
            **{name: self.cells(name) for name in ("table_4_1", "table_4_2", "table_4_3", "table_4_4", "table_4_5")},
            "identification": {row: {part: (missing_cell() if s is None else s.cell()) for part, s in cells.items()}
                               for row, cells in self.tables["identification"].items()},
            "stem_mix_correlation": {row: {part: (missing_cell() if s is None else s.cell())
                                           for part, s in cells.items()}
                                     for row, cells in self.tables["stem_mix"].items()},
            "findings": self.findings,
            "verdict_rule": ("a claim 'difference > 0' holds when the whole 95 % interval lies above 0, does not "
                             "hold when it lies at or below 0, and is inconclusive otherwise"),
            "intervals": ("95 % percentile bootstrap over test tracks (seeds included); correlations via per-track "
                          "jackknife pseudo-values; Table 4.6: Clopper-Pearson over responses (one seed) or a "
                          "bootstrap over seeds and responses (several)"),
            "table_4_6": self.table_4_6,
            "listening_test": self.listening_test,
            "style_leakage": clean(self.style_leakage.to_dict(orient="records")),
            "histories": self.histories,
            "timings": {name: round(value, 2) for name, value in self.timings.items()},
            "reused": self.reused, "n_segments": self.n_segments,
        }
        if "chance" in self.tables:
            # The same cells' scoring of random embeddings (finding 6 of partsim_core.csn.findings).
            chance = self.tables["chance"]
            payload["chance"] = {
                "table_4_1": {part: {column: missing_cell() if s is None else s.cell() for column, s in row.items()}
                              for part, row in chance["table_4_1"].items()},
                "table_4_2": {part: missing_cell() if s is None else s.cell()
                              for part, s in chance["table_4_2"].items()}}
        if self.separator_crossover is not None:
            payload["separator_crossover"] = self.separator_crossover.to_json()
        assert all(f["verdict"] in VERDICTS for f in self.findings)
        return clean(payload)


# --------------------------------------------------------------------------------------------------------------
# The whole chapter
# --------------------------------------------------------------------------------------------------------------


def _train_models(data: DatasetHandle, letters: list[str], seeds: list[int], epochs: int | None, device: str,
                  backend: str, progress: bool, fresh: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Train or reuse every model: CSNs per condition and seed, and condition (a)'s chapter-3 networks."""
    models: dict[str, list[torch.nn.Module]] = {}
    histories: dict[str, list[dict]] = {}
    reused: dict[str, bool] = {}
    for letter in letters:
        if letter == "a":
            continue
        models[letter] = []
        for seed in seeds:
            result = train_condition(letter, data, device=device, epochs=epochs, resume=not fresh,
                                     progress=progress, seed=seed)
            models[letter].append(result.model.eval())
            reused[f"csn-{letter}/seed{seed}"] = result.reused
            histories[f"csn-{letter}/seed{seed}"] = list(result.history)
            say(f"chapter 4: condition ({letter}) seed {seed} " + ("reused" if result.reused else "trained"))
    if any(get_condition(letter).pre for letter in letters if letter != "a"):
        csn = data.preset.csn
        for seed in seeds:
            histories[f"csn-pretrain/seed{seed}"] = list(train_pretraining(data, csn, device=device,
                                                                           progress=progress, seed=seed).history)
            for part, result in target_networks(data, csn, device=device, seed=seed, progress=progress).items():
                if result is not None:
                    histories[f"pretraining-target-{part}/seed{seed}"] = list(result.history)
    baseline: list[dict[str, torch.nn.Module]] = []
    ideal: list[dict[str, torch.nn.Module]] = []
    separated = None
    if "a" in letters:
        # Our U-Net trains first when it is not cached: it takes the progress flag too.
        options = {"progress": progress} if backend == "unet" else {}
        separated = separated_source(data, backend, device=device, **options)
        for seed in seeds:
            baseline.append({})
            ideal.append({})
            for part in INSTRUMENTS:
                for kind, store in (("separated", baseline[-1]), ("ideal", ideal[-1])):
                    result = train_part_network(data, part, kind, device=device, progress=progress, seed=seed,
                                                source=separated if kind == "separated" else None)
                    store[part] = result.model.eval()
                    reused[f"part-{part}-{kind}/seed{seed}"] = result.reused
                    histories[f"part-{part}-{kind}/seed{seed}"] = list(result.history)
    return {"models": models, "baseline": baseline, "ideal": ideal, "separated": separated,
            "histories": histories, "reused": reused}


def _stack(arrays: Sequence[np.ndarray | None]) -> np.ndarray | None:
    return None if any(a is None for a in arrays) else np.stack(arrays)


def run_chapter4(
    data: DatasetHandle,
    conditions: str | Sequence[str] = "all",
    seeds: int = 1,
    seed: int = 0,
    epochs: int | None = None,
    device: str = "auto",
    backend: str = "unet",
    abx_dir: str = "",
    slakh_root: str = "",
    progress: bool = True,
    fresh: bool = False,
    log: Callable[[str], None] | None = None,
    crossover: Sequence[str] | str | None = None,
) -> Chapter4Results:
    """Run chapter 4: train or reuse the chosen conditions, embed the test set, compute Tables 4.1-4.6.

    Args:
        data: the dataset handle (:func:`partsim_core.data.dataset.load_dataset`), built once by the caller.
        conditions: ``"all"`` (:data:`ALL_CONDITIONS`) or letters such as ``["a", "e", "i"]``; a table whose
            conditions are missing keeps NaN there.
        seeds: number of training seeds (``seed .. seed + seeds - 1``); the intervals include their spread.
        seed: the first seed; also seeds the test pseudo pieces and the simulated listening test.
        epochs: triplet-training epochs of every CSN condition (``None`` = the preset's).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        backend: separator of condition (a) (chapter 3's backends).
        abx_dir: the published Inst-Sim ABX folder for Table 4.6 (needs ``slakh_root``); empty = a simulated test
            on the embedded dataset.
        slakh_root: a local Slakh2100 copy for the published stimuli.
        progress: progress bars.
        fresh: retrain every condition instead of reusing cached models.
        log: where one-line progress messages go.
        crossover: the separators of the Table 4.2 crossover (names of
            :data:`partsim_core.csn.crossover.SWEEP_ENTRIES` or a comma-separated string; ``None`` = the preset's
            :data:`~partsim_core.csn.crossover.DEFAULT_SWEEPS`, ``"none"`` = skip); needs condition (a).

    Raises:
        PartsimError: an unknown condition, crossover separator or backend, bad epochs or seeds, too short test tracks.
    """
    say = log or (lambda message: None)
    check_backend(backend)
    letters = list(ALL_CONDITIONS) if conditions == "all" else [get_condition(c).letter for c in conditions]
    letters = sorted(dict.fromkeys(letters))
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise PartsimError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise PartsimError(f"seeds must be a positive integer, got {seeds!r}")
    seed_list = [seed + number for number in range(seeds)]
    sweep = sweep_for(data.preset.name, crossover)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    trained = _train_models(data, letters, seed_list, epochs, device, backend, progress, fresh, say)
    models, baseline, ideal, separated = trained["models"], trained["baseline"], trained["ideal"], trained["separated"]
    timings["training"] = time.perf_counter() - tick

    # Test set: chapter 4's filter, the grids, the test pseudo pieces.
    tick = time.perf_counter()
    device_name = str(resolve_device(device))
    frontend = data.preset.frontend
    tracks, _filter_table = chapter4_test_tracks(data)
    track_list = [track.track_id for track in tracks]
    tracks_by_id = {**data.tracks_by_id, **{track.track_id: track for track in tracks}}
    say(f"chapter 4: {len(data.train_tracks)} train, {len(tracks)} test tracks at {data.root}")
    grids = {seconds: segment_grid(data, seconds, tracks) for seconds in (*TABLE_4_1_SECONDS, EVALUATION_SECONDS)}
    grid5 = grids[EVALUATION_SECONDS]
    pseudo = test_pseudo_pieces(data, tracks, EVALUATION_SECONDS, seed=seed)

    def embed(model: torch.nn.Module, source: Any, by_id: Any, index: Any) -> np.ndarray | None:
        return embed_index(model, source, by_id, index, frontend, device=device_name)

    # Embeddings (every seed): mixes on the grids, single stems and test pseudo pieces at 5 s.
    stacked: dict[str, dict[str, Any]] = {}
    for letter, per_seed in models.items():
        entry: dict[str, Any] = {"mix": {}, "stems_5": {}, "pseudo": {}}
        lengths = TABLE_4_1_SECONDS if letter == PROPOSED else (EVALUATION_SECONDS,)
        for seconds in dict.fromkeys((*lengths, EVALUATION_SECONDS)):
            entry["mix"][seconds] = _stack([embed(m, data.cache, tracks_by_id, grids[seconds].all_segments)
                                            for m in per_seed])
        for part in INSTRUMENTS:
            entry["stems_5"][part] = _stack([embed(m, data.cache, tracks_by_id, grid5.parts[part]) for m in per_seed])
            entry["pseudo"][part] = _stack([embed(m, pseudo.source, pseudo.pieces, pseudo.indices.get(part))
                                            for m in per_seed]) if pseudo.indices else None
        stacked[letter] = entry
    baseline_grid: dict[float, dict[str, np.ndarray | None]] = {}
    baseline_pseudo: dict[str, np.ndarray | None] = {}
    reference: dict[str, np.ndarray | None] = {}
    if baseline:
        for seconds in TABLE_4_1_SECONDS:
            baseline_grid[seconds] = {part: _stack([embed(nets[part], separated, tracks_by_id,
                                                          grids[seconds].parts[part]) for nets in baseline])
                                      for part in INSTRUMENTS}
        baseline_pseudo = baseline_piece_embeddings(pseudo, separated, baseline, frontend, data.fingerprint(tracks),
                                                    device=device_name, fresh=fresh)
        for column, part in enumerate(INSTRUMENTS):
            vectors = _stack([embed(nets[part], data.cache, tracks_by_id, grid5.parts[part]) for nets in ideal])
            if vectors is not None:
                full = np.zeros((vectors.shape[0], len(grid5), vectors.shape[2]), dtype=np.float32)
                full[:, grid5.part_active[:, column]] = vectors
                vectors = full
            reference[part] = vectors
    timings["embedding"] = time.perf_counter() - tick

    # Tables 4.1-4.5, per test track and seed.
    tick = time.perf_counter()
    tables: dict[str, Any] = {}
    proposed = stacked.get(PROPOSED, {}).get("mix")
    tables["table_4_1"] = table_4_1(
        proposed, baseline_grid or None, {s: grids[s].track_ids for s in TABLE_4_1_SECONDS},
        {s: grids[s].part_active for s in TABLE_4_1_SECONDS}, device=device_name)
    segments = pseudo.segments
    pseudo_rows = {f"({letter})": np.concatenate([entry["pseudo"][part] for part in INSTRUMENTS
                                                  if entry["pseudo"].get(part) is not None], axis=1)
                   for letter, entry in stacked.items()
                   if any(entry["pseudo"].get(part) is not None for part in INSTRUMENTS)}
    tables["table_4_2"] = table_4_2(pseudo_rows, segments, baseline_pseudo or None) if len(segments) else {}
    tables["table_4_2"] = {row: tables["table_4_2"].get(row, {part: None for part in INSTRUMENTS})
                           for row in (f"({letter})" for letter in letters)}
    tables["chance"] = chance_tables({s: grids[s].track_ids for s in TABLE_4_1_SECONDS},
                                     {s: grids[s].part_active for s in TABLE_4_1_SECONDS}, segments, seed=seed)
    stem_tracks = grid5.stem_track_ids()
    stems = {f"({letter})": entry["stems_5"] for letter, entry in stacked.items()}
    mix_at_stems = {f"({letter})": grid5.at_stems(entry["mix"][EVALUATION_SECONDS])
                    for letter, entry in stacked.items()}
    tables["identification"] = table_4_3(stems, stem_tracks)
    tables["stem_mix"] = table_4_4(stems, mix_at_stems, stem_tracks, track_list)
    mix_rows = grid5.mix_active
    tables["subspace_correlation"] = {
        f"({letter})": table_4_5(csn_spaces(entry["mix"][EVALUATION_SECONDS][:, mix_rows]),
                                 grid5.track_ids[mix_rows], track_list)
        for letter, entry in stacked.items() if mix_rows.sum() >= 3}
    if reference:
        tables["subspace_correlation"]["reference"] = table_4_5(
            reference, grid5.track_ids, track_list,
            active={part: grid5.part_active[:, column] for column, part in enumerate(INSTRUMENTS)})
    timings["tables"] = time.perf_counter() - tick
    findings = chapter4_findings(tables, TABLE_4_1_SECONDS)

    # The separator crossover on Table 4.2's measure (needs the baseline, condition (a)).
    crossover_result = None
    if baseline and pseudo.indices and sweep:
        tick = time.perf_counter()
        crossover_result = separator_crossover(data, pseudo, separated, baseline, tables["table_4_2"],
                                               data.fingerprint(tracks), sweep=sweep, device=device_name, seed=seed,
                                               fresh=fresh, progress=progress, log=say)
        findings = findings + crossover_result.findings
        timings["separator_crossover"] = time.perf_counter() - tick

    # First seed: figures, style leakage; every seed: Table 4.6.
    tick = time.perf_counter()
    first = {letter: {"mix_5": entry["mix"][EVALUATION_SECONDS][0],
                      "stems_5": {part: None if v is None else v[0] for part, v in entry["stems_5"].items()},
                      "pseudo": pseudo_rows[f"({letter})"][0] if f"({letter})" in pseudo_rows else
                      np.zeros((0, 0), dtype=np.float32)}
             for letter, entry in stacked.items()}
    truth = ground_truth_styles(data)
    frames = []
    if truth is not None:
        styles = grid_styles(grid5.track_ids[mix_rows], grid5.part_active[mix_rows], truth)
        frames = [leakage_table(first[letter]["mix_5"][mix_rows], grid5.track_ids[mix_rows], styles,
                                f"({letter})", device=device_name) for letter in first]
    leakage = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LEAKAGE_COLUMNS)
    listening = table_4_6(data, models.get(PROPOSED), baseline, separated, device_name, abx_dir=abx_dir,
                          slakh_root=slakh_root, seed=seed)
    findings += listening.findings()
    timings["table_4_6_and_leakage"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started

    return Chapter4Results(
        preset=data.preset.name, conditions=letters, seeds=seed_list, tables=tables, findings=findings,
        histories=trained["histories"], reused=trained["reused"], timings=timings,
        n_segments={"grid_" + f"{s:g}s": len(g) for s, g in grids.items()} | {
            "pseudo_segments": len(segments), "pseudo_pieces": len(pseudo.plan),
            "test_tracks": len(tracks)},
        table_4_6=listening.cells(), listening_test=listening.source, style_leakage=leakage, grids=grids,
        embeddings=first, pseudo=pseudo, data=data, separator_crossover=crossover_result)

