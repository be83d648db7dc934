"""Chapter 4's experiment: train (or reuse) the conditions of Table 4.2 and run every evaluation of thesis 4.4.

:func:`run_chapter4` is the one entry point of the chapter-4 notebook and of ``partsim csn evaluate``. It

1. trains or reuses the CSN of every chosen condition through :mod:`partsim_core.csn.conditions` (the artefact cache
   makes a second run, or a run of one more condition, train nothing else);
2. trains or reuses the chapter-3 networks condition (a) needs (per-part networks on separated stems, and on ideal
   stems for Table 4.5's reference row) through :mod:`partsim_core.baseline.run`;
3. embeds the filtered test split in four ways and evaluates with :mod:`partsim_core.csn.metrics`:

   * **dataset pieces** (non-overlapping 3-, 5- and 10-s segments of the test mixes): Table 4.1, Table 4.5, the
     style-leakage measure (our addition) and Fig. 4.7;
   * **test pseudo pieces** (5-s segments): Table 4.2 and Figs. 4.8-4.9;
   * **single clean stems** (the same 5-s grid, each part alone): Table 4.3, Table 4.4 and Fig. 4.10-4.11;
   * **the listening test's stimuli** (the simulated test on the embedded dataset, or the published one with a
     local Slakh2100): Table 4.6 through :func:`partsim_core.perceptual.model_listener_agreement`.

Choices made here, documented because the thesis leaves them open:

* **Which segments count for a part.** Table 4.1 and Table 4.4 use, for part ``c``, the grid segments where ``c``'s
  ideal stem is not silent (mean power above the threshold), for the CSN and the baseline alike; Table 4.5 uses
  every grid segment whose mix is not silent; the reference row 4.5a (chapter-3 networks on ideal stems) uses, for
  each pair of parts, the segments where both stems sound.
* **Test pseudo pieces** (Table 4.2): the plan of :func:`~partsim_core.csn.metrics.test_pseudo_piece_plan`
  (10 labels x 4 pieces per part; fewer when the test split has fewer tracks, e.g. in the ``smoke`` preset); a
  piece runs as long as the shorter of its two source tracks, and its 5-s segments count when the label part
  sounds in them. Condition (a) separates each pseudo-piece mix with the chapter-3 separator and embeds the
  separated part with that part's network.
* **Table 4.3's middle row** ("w/pre, wo/norm" = psd+basic+add+pre) is not a row of Table 4.2; it is our extra
  condition ``j`` (:data:`partsim_core.csn.conditions.EXTRA_CONDITIONS`).
* **Table 4.6** uses the xab ("test 1") sets, as the thesis's table does, and prints the half-width of the
  Clopper-Pearson 95 % interval as "±".

Used by: ``notebooks/ch4_csn_ablations.py`` and ``partsim csn evaluate``.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART
from partsim_core.errors import PartsimError
from partsim_core.presets import get_preset

if TYPE_CHECKING:
    from partsim_core.data.dataset import DatasetHandle

#: Input lengths of Table 4.1 (seconds).
TABLE_4_1_SECONDS: tuple[float, ...] = (3.0, 5.0, 10.0)

#: Segment length of Tables 4.2-4.5 and Figs. 4.8-4.11 (thesis 4.4.2: 5-s segments).
EVALUATION_SECONDS = 5.0

#: Conditions of the rows of Tables 4.3, 4.4 and 4.5 (thesis captions; ``j`` = psd+basic+add+pre, our extra).
TABLE_4_3_ROWS: dict[str, str] = {"wo/pre, wo/norm": "g", "w/pre, wo/norm": "j", "w/pre, w/norm": "i"}
TABLE_4_4_ROWS: dict[str, str] = {"wo/psd": "e", "w/psd": "i"}

#: The "proposed" model of Tables 4.1 and 4.6.
PROPOSED = "i"

#: Everything :func:`run_chapter4` trains by default: (a)-(i) and the extra condition of Table 4.3.
ALL_CONDITIONS: tuple[str, ...] = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")

#: Test pseudo pieces per part (thesis 4.4.2: 10 labels x 4 pieces).
PSEUDO_LABELS = 10
PSEUDO_PIECES_PER_LABEL = 4


# --------------------------------------------------------------------------------------------------------------
# Segment grids and embedding
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SegmentGrid:
    """Non-overlapping segments of the filtered test tracks at one length (every track from its start).

    Attributes:
        seconds: segment length.
        length: segment length in samples.
        track_ids: (n,) track of each segment.
        starts: (n,) first sample.
        mix_active: (n,) the mix is not silent.
        part_active: (n, 5) each part's ideal stem is not silent (False where the track lacks the part).
    """

    seconds: float
    length: int
    track_ids: np.ndarray
    starts: np.ndarray
    mix_active: np.ndarray
    part_active: np.ndarray

    def __len__(self) -> int:
        return int(len(self.track_ids))


def segment_grid(data: DatasetHandle, seconds: float) -> SegmentGrid:
    """The :class:`SegmentGrid` of ``data.test_tracks`` at ``seconds`` (silence judged on the ideal stems).

    Used by :func:`run_chapter4` (chapter 4).
    """
    from partsim_core.data.segments import segment_length, segment_power, segment_starts

    rate = data.cache.sample_rate
    length = segment_length(rate, seconds)
    threshold = data.preset.silence_threshold
    ids, starts, mix_active, part_active = [], [], [], []
    for track in data.test_tracks:
        mix = data.cache.get(track, MIX_PART)
        track_starts = segment_starts(len(mix), rate, seconds, overlap=False)
        if track_starts.size == 0:
            continue
        ids.extend([track.track_id] * track_starts.size)
        starts.append(track_starts)
        mix_active.append(segment_power(mix, track_starts, length) > threshold)
        having = track.stems_by_group()
        active = np.zeros((track_starts.size, len(INSTRUMENTS)), dtype=bool)
        for column, part in enumerate(INSTRUMENTS):
            if part in having:
                active[:, column] = segment_power(data.cache.get(track, part), track_starts, length) > threshold
        part_active.append(active)
    if not ids:
        raise PartsimError(f"no test track is at least {seconds} s long; chapter 4 needs longer test tracks")
    return SegmentGrid(seconds=float(seconds), length=length, track_ids=np.asarray(ids, dtype=str),
                       starts=np.concatenate(starts), mix_active=np.concatenate(mix_active),
                       part_active=np.concatenate(part_active))


def _excerpt(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.float32)
    piece = np.asarray(audio[start:start + length], dtype=np.float32)
    out[:piece.shape[0]] = piece
    return out


@torch.no_grad()
def embed_waveforms(models: torch.nn.Module | dict[str, torch.nn.Module], waveforms: Sequence[np.ndarray],
                    frontend: Any, device: str = "cpu", batch_size: int = 32) -> np.ndarray | dict[str, np.ndarray]:
    """Embeddings of equal-length waveforms: log-mel (:class:`~partsim_core.frontend.LogMel`) then each model.

    With a dict of models every batch is read (or mixed) and turned into log-mels once, then passed to every
    model; the result is a dict with the same keys. Used by :func:`run_chapter4` (chapter 4).

    Returns:
        float32 ``(n, dim)`` (or a dict of them).

    Raises:
        PartsimError: a model returns NaN or infinite values (names the model and the first bad row).
    """
    from partsim_core.frontend import LogMel
    from partsim_core.device import resolve_device

    single = isinstance(models, torch.nn.Module)
    named = {"model": models} if single else dict(models)
    target = resolve_device(device)
    states = {name: model.training for name, model in named.items()}
    for model in named.values():
        model.eval().to(target)
    front = LogMel(frontend).to(target)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in named}
    try:
        for first in range(0, len(waveforms), batch_size):
            batch = torch.from_numpy(np.stack([np.asarray(w, dtype=np.float32)
                                               for w in waveforms[first:first + batch_size]])).to(target)
            mel = front(batch)
            for name, model in named.items():
                chunks[name].append(model(mel).float().cpu().numpy())
    finally:
        for name, model in named.items():
            model.train(states[name])
    out = {}
    for name, parts in chunks.items():
        vectors = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        bad = ~np.all(np.isfinite(vectors), axis=1)
        if bad.any():
            raise PartsimError(f"model {name!r} returned NaN or infinite values for input {int(np.flatnonzero(bad)[0])}")
        out[name] = vectors
    return out["model"] if single else out


def grid_waveforms(data: DatasetHandle, grid: SegmentGrid, part: str, rows: np.ndarray | None = None,
                   source: Any = None) -> list[np.ndarray]:
    """The waveforms of the grid's segments (``rows``, default all) of ``part`` (``"mix"`` or an instrument).

    ``source`` defaults to the ideal stems (``data.cache``); pass a separated source for separated stems.
    """
    source = data.cache if source is None else source
    tracks = data.tracks_by_id
    rows = np.arange(len(grid)) if rows is None else np.asarray(rows)
    signals: dict[str, np.ndarray] = {}
    out = []
    for row in rows:
        track = tracks[grid.track_ids[row]]
        key = track.track_id
        if key not in signals:
            signals.clear()
            signals[key] = (source.get(track, part) if part == MIX_PART or part in track.stems_by_group()
                            or source is not data.cache else None)
        audio = signals[key]
        out.append(np.zeros(grid.length, dtype=np.float32) if audio is None
                   else _excerpt(audio, int(grid.starts[row]), grid.length))
    return out


# --------------------------------------------------------------------------------------------------------------
# Test pseudo pieces (Table 4.2)
# --------------------------------------------------------------------------------------------------------------


class PieceWaveforms(Sequence):
    """A lazy sequence of segment waveforms of test pseudo pieces (mixed when indexed, so memory holds a batch).

    ``signal`` is ``"mix"`` (the piece's mix) or a part name (that part's clean signal in the piece).
    """

    def __init__(self, pieces: PseudoPieceSet, signal: str, rows: np.ndarray | None = None) -> None:
        self.pieces, self.signal = pieces, signal
        self.rows = np.arange(len(pieces.segments)) if rows is None else np.asarray(rows)

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, item: Any) -> Any:
        if isinstance(item, slice):
            return [self.pieces.waveform(int(row), self.signal) for row in self.rows[item]]
        return self.pieces.waveform(int(self.rows[item]), self.signal)


@dataclass
class PseudoPieceSet:
    """Segments of the test pseudo pieces of Table 4.2; waveforms are mixed on demand.

    Attributes:
        plan: :func:`~partsim_core.csn.metrics.test_pseudo_piece_plan`'s table (one row per piece).
        segments: one row per segment: ``part`` (the piece's condition part), ``label`` (its source track),
            ``other``, ``piece``, ``start`` (sample), and per instrument the track it comes from (None: absent).
        length: segment length in samples.
    """

    plan: pd.DataFrame
    segments: pd.DataFrame
    length: int
    data: Any = field(default=None, repr=False)
    _arrays: dict = field(default_factory=dict, repr=False)

    def waveform(self, row: int, signal: str = MIX_PART) -> np.ndarray:
        """The mix (``signal="mix"``) or one clean part of segment ``row``: float32 ``(length,)``."""
        from partsim_core.csn.pseudo_pieces import PseudoPiece, mix_piece

        segment = self.segments.iloc[row]
        piece = PseudoPiece.from_parts({name: (None if pd.isna(segment[name]) else str(segment[name]))
                                        for name in INSTRUMENTS})
        if "_tracks" not in self._arrays:
            self._arrays["_tracks"] = self.data.tracks_by_id
        tracks = self._arrays["_tracks"]
        mix, parts = mix_piece(self.data.cache, tracks, piece, int(segment["start"]), self.length,
                               arrays=self._arrays)
        if len(self._arrays) > 64:  # keep the per-track signal cache small
            self._arrays = {"_tracks": tracks}
        return mix if signal == MIX_PART else parts[INSTRUMENTS.index(signal)]

    def waveforms(self, signal: str = MIX_PART, rows: np.ndarray | None = None) -> PieceWaveforms:
        """A lazy sequence of segment waveforms (see :class:`PieceWaveforms`)."""
        return PieceWaveforms(self, signal, rows)


def test_pseudo_pieces(data: DatasetHandle, seconds: float = EVALUATION_SECONDS, seed: int = 0,
                       n_labels: int = PSEUDO_LABELS, pieces_per_label: int = PSEUDO_PIECES_PER_LABEL,
                       ) -> PseudoPieceSet:
    """The test pseudo pieces of Table 4.2, cut into ``seconds`` segments where the label part sounds.

    With fewer test tracks than the thesis's design needs, ``n_labels`` and ``pieces_per_label`` shrink to what
    the split allows (a part with fewer than two tracks, or fewer than 3 tracks in all, gets no pieces).

    Used by :func:`run_chapter4` (chapter 4).
    """
    from partsim_core.data.segments import segment_length, segment_power, segment_starts, tempo_classes, track_tempo
    from partsim_core.csn.metrics import test_pseudo_piece_plan

    tracks = {track.track_id: track for track in data.test_tracks}
    having = {part: [tid for tid, track in tracks.items() if part in track.stems_by_group()] for part in INSTRUMENTS}
    pool = len(tracks)
    pieces = min(pieces_per_label, pool - 1)
    usable = {part: ids for part, ids in having.items() if len(ids) >= 2}
    columns = ["part", "label", "other", "piece", "start", *INSTRUMENTS]
    rate = data.cache.sample_rate
    length = segment_length(rate, seconds)
    if pieces < 2 or not usable:
        return PseudoPieceSet(plan=pd.DataFrame(), segments=pd.DataFrame(columns=columns), length=length, data=data)
    tempo = tempo_classes({tid: track_tempo(track) for tid, track in tracks.items()},
                          n_classes=min(data.preset.csn.n_tempo_classes, max(1, pool // 4)))
    # One plan for all parts, so that every test track is in the pool of "other" tracks.
    pieces = min(pieces, len({tid for ids in usable.values() for tid in ids}) - 1)
    if pieces < 2:
        return PseudoPieceSet(plan=pd.DataFrame(), segments=pd.DataFrame(columns=columns), length=length, data=data)
    plan = test_pseudo_piece_plan(usable, n_labels=min(n_labels, *(len(ids) for ids in usable.values())),
                                  pieces_per_label=pieces, seed=seed, tempo_class_of=tempo)
    threshold = data.preset.silence_threshold
    rows = []
    for piece_row in plan.itertuples(index=False):
        label_track = tracks[piece_row.label]
        n_samples = min(len(data.cache.get(label_track, MIX_PART)),
                        len(data.cache.get(tracks[piece_row.other], MIX_PART)))
        starts = segment_starts(n_samples, rate, seconds, overlap=False)
        if starts.size == 0:
            continue
        sounding = segment_power(data.cache.get(label_track, piece_row.part), starts, length) > threshold
        sources = {name: (tid if name in tracks[tid].stems_by_group() else None)
                   for name, tid in ((name, getattr(piece_row, name)) for name in INSTRUMENTS)}
        for start in starts[sounding]:
            rows.append({"part": piece_row.part, "label": piece_row.label, "other": piece_row.other,
                         "piece": piece_row.piece, "start": int(start), **sources})
    return PseudoPieceSet(plan=plan, segments=pd.DataFrame(rows, columns=columns), length=length, data=data)


# Not a pytest test despite its name.
test_pseudo_pieces.__test__ = False  # type: ignore[attr-defined]


def _label_accuracy(embeddings: np.ndarray, segments: pd.DataFrame, part: str) -> float:
    """Table 4.2 cell (%) for ``part``: kNN over the segments of the pieces made for ``part``, or NaN."""
    from partsim_core.csn.metrics import part_label_accuracy

    rows = np.flatnonzero(segments["part"].to_numpy() == part)
    if rows.size < 2 or segments.iloc[rows]["piece"].nunique() < 2:
        return math.nan
    try:
        return 100.0 * part_label_accuracy(embeddings[rows], segments["label"].to_numpy()[rows],
                                           segments["piece"].to_numpy()[rows], part)
    except PartsimError:
        # A target with no segment of another piece (tiny data): the cell cannot be computed.
        return math.nan


def _track_accuracy(points: np.ndarray, track_ids: np.ndarray) -> float:
    from partsim_core.knn import knn_accuracy

    # NaN, not 0, when no track has two segments: leave-one-out kNN then has nothing to find (short test tracks).
    if len(track_ids) < 2 or np.unique(track_ids, return_counts=True)[1].max() < 2:
        return math.nan
    return 100.0 * knn_accuracy(points, track_ids)


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Chapter4Results:
    """Everything chapter 4 computes (tables in the thesis's layouts, percent / Pearson r) and the embeddings the
    notebook's figures need."""

    preset: str
    data_root: str
    conditions: list[str]
    #: Rows = parts, columns ``proposed_3s, baseline_3s, ...`` (Table 4.1 layout, %).
    table_4_1: pd.DataFrame
    #: Rows ``(a)``..``(i)`` (+ ``(j)``), columns = parts (%).
    table_4_2: pd.DataFrame
    #: Rows ``(b)``..``(j)`` (every trained condition), columns = parts (%).
    identification: pd.DataFrame
    #: Rows = trained conditions, columns = parts (Pearson r, stem vs masked mix input).
    stem_mix_correlation: pd.DataFrame
    #: ``row label -> 5 x 5`` subspace correlation matrix: ``reference`` (chapter-3 ideal networks) and each
    #: trained condition.
    subspace_correlation: dict[str, pd.DataFrame]
    #: Table 4.6 per perspective (``overall``, ``timbre``): rows baseline/proposed, columns part and part_pm (%).
    table_4_6: dict[str, pd.DataFrame]
    #: Tidy style-leakage table (our addition): one row per condition, subspace and part.
    style_leakage: pd.DataFrame
    timings: dict[str, float]
    reused: dict[str, bool]
    #: Training history per condition (epoch rows).
    histories: dict[str, list[dict]]
    n_segments: dict[str, int]
    #: What the listening-test section ran on (``simulated``, ``published`` or ``skipped: ...``).
    listening_test: str = ""
    #: Objects for the figures (not serialised).
    grids: dict[float, SegmentGrid] = field(default_factory=dict, repr=False)
    #: ``condition -> {"mix_5": (n, 640) on the 5-s grid, "stems_5": {part: (n, 640)}, "pseudo": (m, 640)}``.
    embeddings: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    pseudo: PseudoPieceSet | None = field(default=None, repr=False)
    data: Any = field(default=None, repr=False)

    def table_4_3(self) -> pd.DataFrame:
        """Table 4.3's three rows (thesis labels) from :attr:`identification`."""
        rows = {label: self.identification.loc[f"({letter})"] for label, letter in TABLE_4_3_ROWS.items()
                if f"({letter})" in self.identification.index}
        return pd.DataFrame(rows).T.reindex(columns=list(INSTRUMENTS))

    def table_4_4(self) -> pd.DataFrame:
        """Table 4.4's rows ``wo/psd`` = (e), ``w/psd`` = (i)."""
        rows = {label: self.stem_mix_correlation.loc[f"({letter})"] for label, letter in TABLE_4_4_ROWS.items()
                if f"({letter})" in self.stem_mix_correlation.index}
        return pd.DataFrame(rows).T.reindex(columns=list(INSTRUMENTS))

    def table_4_5(self, block: str) -> pd.DataFrame | None:
        """Table 4.5's block ``a`` (reference), ``b`` (wo/psd = (e)) or ``c`` (w/psd = (i)), upper triangle only."""
        key = {"a": "reference", "b": "(e)", "c": "(i)"}[block]
        matrix = self.subspace_correlation.get(key)
        if matrix is None:
            return None
        upper = matrix.where(np.triu(np.ones(matrix.shape, dtype=bool), k=1))
        upper.index.name, upper.columns.name = None, None
        return upper

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (tables, timings, reuse; no embeddings; NaN -> null)."""
        def frame(table: pd.DataFrame | None) -> Any:
            if table is None:
                return None
            return json.loads(table.to_json(orient="split"))

        return {
            "chapter": 4, "preset": self.preset, "data_root": self.data_root, "conditions": self.conditions,
            "table_4_1": frame(self.table_4_1), "table_4_2": frame(self.table_4_2),
            "table_4_3": frame(self.table_4_3()), "table_4_4": frame(self.table_4_4()),
            "table_4_5": {block: frame(self.table_4_5(block)) for block in "abc"},
            "table_4_6": {name: frame(table) for name, table in self.table_4_6.items()},
            "identification": frame(self.identification),
            "stem_mix_correlation": frame(self.stem_mix_correlation),
            "style_leakage": frame(self.style_leakage),
            "listening_test": self.listening_test,
            "timings": {name: round(value, 2) for name, value in self.timings.items()},
            "reused": self.reused, "n_segments": self.n_segments,
        }

    def leakage_summary(self) -> pd.DataFrame:
        """Per condition: mean excess precision of each subspace for its own part (``own``, higher = the subspace
        retrieves its part's style) and for the other parts (``leakage``, near 0 = no leakage). Our addition."""
        if self.style_leakage.empty:
            return pd.DataFrame(columns=["own", "leakage"])
        grouped = self.style_leakage.groupby(["condition", "relation"])["excess"].mean().unstack("relation")
        return grouped.rename(columns={"same": "own", "other": "leakage"}).reindex(columns=["own", "leakage"])


# --------------------------------------------------------------------------------------------------------------
# The whole chapter
# --------------------------------------------------------------------------------------------------------------


def _ground_truth_styles(data: DatasetHandle) -> dict | None:
    from partsim_core.data.synth import GROUND_TRUTH_FILE

    path = data.root / GROUND_TRUTH_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["tracks"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PartsimError(f"unreadable ground truth {path}: {error!r}") from None


def _grid_styles(grid: SegmentGrid, truth: dict) -> pd.DataFrame:
    """Per grid segment and part: the generator's style of that part where it sounds, else None."""
    columns = {}
    for column, part in enumerate(INSTRUMENTS):
        values = []
        for row in range(len(grid)):
            entry = truth.get(str(grid.track_ids[row]), {}).get("parts", {}).get(part)
            values.append(entry.get("style") if entry is not None and grid.part_active[row, column] else None)
        columns[part] = values
    return pd.DataFrame(columns)


def _listening_agreement(data: DatasetHandle,
                         embedders: dict[str, tuple[Callable[[np.ndarray, str], np.ndarray], Any]],
                         abx_dir: str, slakh_root: str, seed: int) -> tuple[dict[str, pd.DataFrame], str]:
    """Table 4.6 per perspective for each embedder: ``{"baseline": (fn, stimulus source), ...}`` where the
    source is ``"mix"`` or ``"category"`` (see :func:`partsim_core.perceptual.extract_from_slakh`) or a callable
    ``root -> signal_for`` (see :func:`partsim_core.perceptual.extract_stimuli`)."""
    import partsim_core.perceptual as perceptual

    if abx_dir:
        abx_root, published = abx_dir, True
        if not slakh_root:
            return {}, ("skipped: the published stimuli are Slakh2100 test excerpts; pass slakh_root (a local "
                        "Slakh2100 copy) to compute Table 4.6 on the published test")
        source_root = slakh_root
    else:
        if _ground_truth_styles(data) is None:
            return {}, "skipped: this dataset has no generator ground truth to simulate a listening test from"
        abx_root, published, source_root = str(perceptual.ensure_simulated_test(data.root, seed=seed)), False, \
            str(data.root)
    abx = perceptual.load_abx(abx_root)
    responses = abx.responses
    parts = responses[responses["category"].isin(perceptual.PART_CATEGORIES)]
    kept_keys = set(perceptual.agreement_filter(parts).query("kept")["set_key"])
    kept = parts[parts["set_key"].isin(kept_keys)]
    needed = sorted(set(kept["reference"]) | set(kept["sample_a"]) | set(kept["sample_b"]))
    rate = data.preset.frontend.sample_rate
    tables: dict[str, list[pd.DataFrame]] = {}
    for name, (embed_fn, source) in embedders.items():
        if callable(source):
            # A signal source over another dataset view (the separated stems): built for this root.
            stimuli = perceptual.extract_stimuli(abx.configs, source(source_root), rate, paths=needed,
                                                 progress=False)
        else:
            stimuli = perceptual.extract_from_slakh(abx.configs, source_root, sample_rate=rate, paths=needed,
                                                    source=source, progress=False)
        agreement = perceptual.model_listener_agreement(responses, stimuli, embed_fn,
                                                        perspectives=("overall", "timbre"), progress=False)
        agreement = agreement[agreement["set_type"] == "xab"].assign(row=name)
        tables.setdefault("all", []).append(agreement)
    tidy = pd.concat(tables["all"], ignore_index=True)
    out = {}
    for perspective in ("overall", "timbre"):
        part = tidy[tidy["perspective"] == perspective]
        table = pd.DataFrame(index=pd.Index(list(embedders), name="row"))
        for category in INSTRUMENTS:
            cell = part[part["category"] == category].set_index("row")
            table[category] = cell["percent"].reindex(table.index)
            table[f"{category}_pm"] = ((cell["ci_high"] - cell["ci_low"]) / 2).reindex(table.index)
        out[perspective] = table
    return out, "published" if published else "simulated"


def run_chapter4(
    preset: str,
    data_root: str | os.PathLike = "",
    conditions: str | Sequence[str] = "all",
    epochs: int | None = None,
    device: str = "auto",
    seed: int = 0,
    backend: str = "unet",
    abx_dir: str = "",
    slakh_root: str = "",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Chapter4Results:
    """Run chapter 4: train or reuse the chosen conditions, embed the test split, compute Tables 4.1-4.6.

    Used by: ``notebooks/ch4_csn_ablations.py`` and ``partsim csn evaluate``.

    Args:
        preset: ``smoke``, ``default`` or ``paper``.
        data_root: a Slakh-format folder, or ``""`` for the preset's embedded dataset.
        conditions: ``"all"`` (:data:`ALL_CONDITIONS`) or letters such as ``["a", "e", "i"]``; a table whose
            conditions are missing keeps NaN there.
        epochs: triplet-training epochs of every CSN condition (``None`` = the preset's).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        seed: seed of every training, the test pseudo pieces and the simulated listening test.
        backend: separator of condition (a) (chapter 3's backends).
        abx_dir: the published Inst-Sim ABX folder for Table 4.6 (needs ``slakh_root``); empty = a simulated test
            on the embedded dataset.
        slakh_root: a local Slakh2100 copy for the published stimuli.
        progress: progress bars.
        log: where one-line progress messages go.

    Raises:
        PartsimError: unknown preset, condition or backend; bad epochs; a data root without the needed splits.
    """
    from partsim_core.baseline.networks import train_part_network
    from partsim_core.baseline.separated_stems import separated_source
    from partsim_core.baseline.separators import check_backend
    from partsim_core.data.dataset import load_dataset
    from partsim_core.csn.conditions import get_condition, train_condition
    from partsim_core.csn.metrics import (
        distance_matrix_correlation,
        identification_accuracy,
        style_leakage,
        subspace,
        subspace_correlations,
    )

    say = log or (lambda message: None)
    settings = get_preset(preset)
    check_backend(backend)
    letters = list(ALL_CONDITIONS) if conditions == "all" else [get_condition(c).letter for c in conditions]
    letters = sorted(dict.fromkeys(letters))
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise PartsimError(f"epochs must be a positive integer, got {epochs!r}")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    reused: dict[str, bool] = {}
    histories: dict[str, list[dict]] = {}

    tick = time.perf_counter()
    data = load_dataset(preset, data_root, progress=progress)
    timings["data"] = time.perf_counter() - tick
    say(f"chapter 4: {len(data.train_tracks)} train, {len(data.test_tracks)} test tracks at {data.root}")

    # 1. Models.
    tick = time.perf_counter()
    models: dict[str, torch.nn.Module] = {}
    for letter in letters:
        if letter == "a":
            continue
        result = train_condition(letter, preset, data_root=data_root, device=device, epochs=epochs,
                                 progress=progress, seed=seed, data=data)
        models[letter] = result.model.eval()
        reused[f"csn-{letter}"] = result.reused
        histories[letter] = list(result.history)
        say(f"chapter 4: condition ({letter}) " + ("reused" if result.reused else "trained"))
    baseline_networks: dict[str, torch.nn.Module] = {}
    ideal_networks: dict[str, torch.nn.Module] = {}
    separated = None
    if "a" in letters:
        if backend == "unet":
            separated = separated_source(data, backend, device=device, progress=progress)
        else:
            separated = separated_source(data, backend, device=device)
        for part in INSTRUMENTS:
            for kind, store in (("separated", baseline_networks), ("ideal", ideal_networks)):
                result = train_part_network(data, part, kind, device=device, progress=progress, seed=seed,
                                            source=separated if kind == "separated" else None)
                store[part] = result.model.eval()
                reused[f"part-{part}-{kind}"] = result.reused
    timings["training"] = time.perf_counter() - tick

    # 2. Embeddings and evaluations.
    from partsim_core.device import resolve_device

    evaluation_device = str(resolve_device(device))
    frontend = settings.frontend

    def embed(model: Any, waves: Any) -> Any:
        return embed_waveforms(model, waves, frontend, device=evaluation_device)

    tick = time.perf_counter()
    grids = {seconds: segment_grid(data, seconds) for seconds in TABLE_4_1_SECONDS}
    if EVALUATION_SECONDS not in grids:
        grids[EVALUATION_SECONDS] = segment_grid(data, EVALUATION_SECONDS)
    grid5 = grids[EVALUATION_SECONDS]
    embeddings: dict[str, dict[str, Any]] = {letter: {} for letter in models}

    # Table 4.1: track ID per subspace at 3, 5, 10 s (proposed = (i)); baseline = separated networks.
    table_4_1 = pd.DataFrame(np.nan, index=pd.Index(list(INSTRUMENTS), name="part"),
                             columns=[f"{kind}_{s:g}s" for s in TABLE_4_1_SECONDS for kind in ("proposed", "baseline")])
    for seconds, grid in grids.items():
        if seconds not in TABLE_4_1_SECONDS:
            continue
        label = f"{seconds:g}s"
        mix_vectors = embed(models[PROPOSED], grid_waveforms(data, grid, MIX_PART)) if PROPOSED in models else None
        for column, part in enumerate(INSTRUMENTS):
            rows = np.flatnonzero(grid.part_active[:, column])
            ids = grid.track_ids[rows]
            if mix_vectors is not None:
                table_4_1.at[part, f"proposed_{label}"] = _track_accuracy(subspace(mix_vectors[rows], part), ids) \
                    if rows.size >= 2 else math.nan
            if part in baseline_networks and rows.size >= 2:
                vectors = embed(baseline_networks[part], grid_waveforms(data, grid, part, rows, source=separated))
                table_4_1.at[part, f"baseline_{label}"] = _track_accuracy(vectors, ids)
    timings["table_4_1"] = time.perf_counter() - tick

    # Mix and single-stem embeddings on the 5-s grid for every trained condition.
    tick = time.perf_counter()
    mix_waves = grid_waveforms(data, grid5, MIX_PART)
    stem_rows = {part: np.flatnonzero(grid5.part_active[:, column]) for column, part in enumerate(INSTRUMENTS)}
    stem_waves = {part: grid_waveforms(data, grid5, part, rows) for part, rows in stem_rows.items()}
    if models:
        for letter, vectors in embed(models, mix_waves).items():
            embeddings[letter]["mix_5"] = vectors
        per_part = {part: embed(models, waves) if len(waves) else None for part, waves in stem_waves.items()}
        for letter in models:
            embeddings[letter]["stems_5"] = {part: None if per_part[part] is None else per_part[part][letter]
                                             for part in INSTRUMENTS}
    timings["embedding"] = time.perf_counter() - tick

    # Table 4.2: part labels on test pseudo pieces.
    tick = time.perf_counter()
    pseudo = test_pseudo_pieces(data, EVALUATION_SECONDS, seed=seed)
    table_4_2 = pd.DataFrame(index=pd.Index([f"({letter})" for letter in letters], name="row"),
                             columns=list(INSTRUMENTS), dtype=float)
    pseudo_vectors = embed(models, pseudo.waveforms(MIX_PART)) if models and len(pseudo.segments) else {}
    for letter in models:
        vectors = pseudo_vectors.get(letter, np.zeros((0, 5)))
        embeddings[letter]["pseudo"] = vectors
        for part in INSTRUMENTS:
            table_4_2.at[f"({letter})", part] = _label_accuracy(vectors, pseudo.segments, part) \
                if len(vectors) else math.nan
    if "a" in letters and len(pseudo.segments):
        for part in INSTRUMENTS:
            rows = np.flatnonzero(pseudo.segments["part"].to_numpy() == part)
            if rows.size < 2:
                continue
            if _is_oracle(separated):
                waves = pseudo.waveforms(part, rows)
            else:
                waves = _cached_separated_segments(separated, pseudo, rows, part, data.cache.sample_rate)
            vectors = embed(baseline_networks[part], waves)
            # One "subspace": the part network's whole embedding, placed in the part's block of a 5-block array.
            blocks = np.zeros((vectors.shape[0], vectors.shape[1] * len(INSTRUMENTS)), dtype=np.float32)
            column = INSTRUMENTS.index(part)
            blocks[:, column * vectors.shape[1]:(column + 1) * vectors.shape[1]] = vectors
            table_4_2.at["(a)", part] = _label_accuracy(blocks, pseudo.segments.iloc[rows].reset_index(drop=True),
                                                        part)
    timings["table_4_2"] = time.perf_counter() - tick

    # Table 4.3 (identification from norms), 4.4 (stem vs masked mix), 4.5 (between subspaces), style leakage.
    tick = time.perf_counter()
    trained = [f"({letter})" for letter in models]
    identification = pd.DataFrame(index=pd.Index(trained, name="row"), columns=list(INSTRUMENTS), dtype=float)
    stem_mix = pd.DataFrame(index=pd.Index(trained, name="row"), columns=list(INSTRUMENTS), dtype=float)
    correlations: dict[str, pd.DataFrame] = {}
    truth = _ground_truth_styles(data)
    styles = _grid_styles(grid5, truth) if truth is not None else None
    mix_rows = np.flatnonzero(grid5.mix_active)
    leakage_frames = []
    for letter in models:
        row = f"({letter})"
        stems = embeddings[letter]["stems_5"]
        present = [part for part in INSTRUMENTS if stems[part] is not None]
        if present:
            vectors = np.concatenate([stems[part] for part in present])
            truth_parts = np.concatenate([[part] * len(stems[part]) for part in present])
            result = identification_accuracy(vectors, truth_parts)
            identification.loc[row] = 100.0 * result.per_part.reindex(list(INSTRUMENTS)).to_numpy()
        mix_vectors = embeddings[letter]["mix_5"]
        for part in present:
            rows = stem_rows[part]
            if rows.size >= 3:
                stem_mix.at[row, part] = distance_matrix_correlation(subspace(stems[part], part),
                                                                     subspace(mix_vectors[rows], part))
        if mix_rows.size >= 3:
            correlations[row] = subspace_correlations(mix_vectors[mix_rows])
        if styles is not None and mix_rows.size >= 2:
            for part in INSTRUMENTS:
                frame = style_leakage(mix_vectors[mix_rows], styles.iloc[mix_rows].reset_index(drop=True), part,
                                      k=min(10, mix_rows.size - 1), exclude_groups=grid5.track_ids[mix_rows],
                                      device=evaluation_device) \
                    if len(set(grid5.track_ids[mix_rows])) > 1 else None
                if frame is not None:
                    leakage_frames.append(frame.assign(condition=row))
    if ideal_networks:
        correlations["reference"] = _reference_correlations(data, grid5, ideal_networks, embed)
    timings["tables_4_3_to_4_5"] = time.perf_counter() - tick

    # Table 4.6: model vs (simulated or published) listeners.
    tick = time.perf_counter()
    embedders: dict[str, tuple[Callable[[np.ndarray, str], np.ndarray], Any]] = {}
    if "a" in letters:
        def baseline_embed(audio: np.ndarray, category: str) -> np.ndarray:
            return embed(baseline_networks[category], [audio])[0]

        def separated_stimuli(root: str) -> Callable[[int, str], np.ndarray]:
            # The baseline hears the stimulus's part as the chapter-3 separator estimates it from the whole track
            # (as the thesis's Spleeter baseline did); on the book's dataset those stems are already cached.
            source = separated if str(root) == str(data.root) else _separated_view(separated, root,
                                                                                     data.cache.sample_rate)
            dataset = data.dataset if str(root) == str(data.root) else source.cache.dataset

            def signal_for(track_number: int, category: str) -> np.ndarray:
                return source.get(dataset.track(f"Track{int(track_number):05d}"), category)
            return signal_for
        embedders["baseline"] = (baseline_embed, separated_stimuli)
    if PROPOSED in models:
        def proposed_embed(audio: np.ndarray, category: str) -> np.ndarray:
            return subspace(embed(models[PROPOSED], [audio]), category)[0]
        embedders["proposed"] = (proposed_embed, "mix")
    table_4_6: dict[str, pd.DataFrame] = {}
    listening = "skipped: needs condition (i) or (a)"
    if embedders:
        table_4_6, listening = _listening_agreement(data, embedders, abx_dir, slakh_root, seed)
    timings["table_4_6"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started

    return Chapter4Results(
        preset=preset, data_root=str(data_root), conditions=letters, table_4_1=table_4_1, table_4_2=table_4_2,
        identification=identification, stem_mix_correlation=stem_mix, subspace_correlation=correlations,
        table_4_6=table_4_6,
        style_leakage=pd.concat(leakage_frames, ignore_index=True) if leakage_frames else pd.DataFrame(
            columns=["subspace", "part", "relation", "k", "precision", "chance", "excess", "n_targets",
                     "condition"]),
        timings=timings, reused=reused, histories=histories,
        n_segments={"grid_" + f"{s:g}s": len(g) for s, g in grids.items()} | {
            "pseudo_segments": int(len(pseudo.segments)), "pseudo_pieces": int(len(pseudo.plan))},
        listening_test=listening, grids=grids, embeddings=embeddings, pseudo=pseudo, data=data,
    )


def _separated_view(separated: Any, root: str, sample_rate: int) -> Any:
    """The same separator over another Slakh-format root (e.g. a local Slakh2100 for the published stimuli)."""
    from partsim_core.data.cache import StemCache
    from partsim_core.data.slakh import open_slakh
    from partsim_core.baseline.separated_stems import SeparatedSource

    return SeparatedSource(separated.separator, StemCache(open_slakh(root), sample_rate))


def _is_oracle(separated: Any) -> bool:
    from partsim_core.baseline.separators import OracleSeparator

    return isinstance(getattr(separated, "separator", None), OracleSeparator)


def _cached_separated_segments(separated: Any, pseudo: PseudoPieceSet, rows: np.ndarray, part: str,
                               sample_rate: int) -> np.ndarray:
    """:func:`_separate_segments` of the pseudo-piece mixes ``rows``, cached on disk by separator and pieces
    (rebuilding the book separates nothing again)."""
    from partsim_core.data.cache import atomic_write_bytes, cache_root, stable_hash

    chosen = pseudo.segments.iloc[np.asarray(rows)]
    key = stable_hash([separated.key, part, pseudo.length, sample_rate,
                       chosen.astype(str).to_numpy().tolist(), pseudo.data.fingerprint(pseudo.data.test_tracks)])
    path = cache_root() / "chapter4" / f"pseudo-separated-{part}-{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    waves = np.stack(_separate_segments(separated, pseudo.waveforms(MIX_PART, rows), part, sample_rate))
    buffer = io.BytesIO()
    np.save(buffer, waves.astype(np.float32), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return waves


def _separate_segments(separated: Any, mixes: Sequence[np.ndarray], part: str, sample_rate: int,
                       max_seconds: float = 600.0) -> list[np.ndarray]:
    """``part`` of many equal-length mix excerpts as the chapter-3 separator estimates it.

    The excerpts are separated as one long signal (up to ``max_seconds`` at a time) and cut apart again: one
    separator call instead of one per excerpt. Only the STFT frames at an excerpt's edges see its neighbour (one
    window, ~50 ms), as they would see the rest of the track when separating whole tracks.
    """
    if len(mixes) == 0:
        return []
    length = len(mixes[0])
    per_call = max(1, int(max_seconds * sample_rate) // length)
    out: list[np.ndarray] = []
    for first in range(0, len(mixes), per_call):
        chunk = [np.asarray(mix, dtype=np.float32) for mix in mixes[first:first + per_call]]
        estimate = separated.separator.separate(np.concatenate(chunk), sample_rate)[part]
        out += [np.asarray(estimate[i * length:(i + 1) * length], dtype=np.float32) for i in range(len(chunk))]
    return out


def _reference_correlations(data: DatasetHandle, grid: SegmentGrid, networks: dict[str, torch.nn.Module],
                            embed: Callable[[torch.nn.Module, Any], np.ndarray]) -> pd.DataFrame:
    """Table 4.5a: correlation between the distance matrices of the chapter-3 ideal networks, each on its own
    stem, over the grid segments where both parts sound."""
    from partsim_core.csn.metrics import distance_matrix_correlation

    vectors = {}
    for column, part in enumerate(INSTRUMENTS):
        rows = np.flatnonzero(grid.part_active[:, column])
        full = np.full((len(grid), 1), np.nan, dtype=np.float64)
        if rows.size:
            out = embed(networks[part], grid_waveforms(data, grid, part, rows))
            full = np.full((len(grid), out.shape[1]), np.nan)
            full[rows] = out
        vectors[part] = full
    matrix = pd.DataFrame(np.eye(len(INSTRUMENTS)), index=pd.Index(INSTRUMENTS, name="subspace"),
                          columns=pd.Index(INSTRUMENTS, name="subspace"))
    for i, first in enumerate(INSTRUMENTS):
        for j in range(i + 1, len(INSTRUMENTS)):
            second = INSTRUMENTS[j]
            both = grid.part_active[:, i] & grid.part_active[:, j]
            value = distance_matrix_correlation(vectors[first][both], vectors[second][both]) \
                if both.sum() >= 3 else math.nan
            matrix.iloc[i, j] = matrix.iloc[j, i] = value
    return matrix


# --------------------------------------------------------------------------------------------------------------
# Figures and findings (notebooks/ch4_csn_ablations.py)
# --------------------------------------------------------------------------------------------------------------


def _tsne(vectors: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(1.0, (len(vectors) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)


def dataset_tsne(results: Chapter4Results, condition: str = PROPOSED, max_tracks: int = 10,
                 seed: int = 0) -> pd.DataFrame:
    """Fig. 4.7: t-SNE of every subspace for 5-s segments of dataset pieces (the first ``max_tracks`` test tracks).

    Returns:
        Columns ``x, y, subspace, track, start_s`` (one t-SNE per subspace, on the segments where the part sounds).
    """
    from partsim_core.csn.metrics import subspace

    grid = results.grids[EVALUATION_SECONDS]
    vectors = results.embeddings[condition]["mix_5"]
    chosen = sorted(set(grid.track_ids.tolist()))[:max_tracks]
    frames = []
    for column, part in enumerate(INSTRUMENTS):
        rows = np.flatnonzero(np.isin(grid.track_ids, chosen) & grid.part_active[:, column])
        if rows.size < 4:
            continue
        points = _tsne(subspace(vectors[rows], part), seed)
        frames.append(pd.DataFrame({"x": points[:, 0], "y": points[:, 1], "subspace": part,
                                    "track": grid.track_ids[rows],
                                    "start_s": grid.starts[rows] / results.data.cache.sample_rate}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["x", "y", "subspace", "track", "start_s"])


def pseudo_tsne(results: Chapter4Results, condition: str = PROPOSED, seed: int = 0) -> pd.DataFrame:
    """Figs. 4.8-4.9: t-SNE of each subspace for the test pseudo pieces made for that part.

    Returns:
        Columns ``x, y, subspace, label`` (the part-level label: Fig. 4.8's colours), ``piece`` (the whole
        piece, e.g. ``A-1``: Fig. 4.9's colours), ``other``.
    """
    from partsim_core.csn.metrics import subspace

    segments = results.pseudo.segments if results.pseudo is not None else pd.DataFrame()
    vectors = results.embeddings.get(condition, {}).get("pseudo")
    frames = []
    for part in INSTRUMENTS:
        if vectors is None or segments.empty:
            break
        rows = np.flatnonzero(segments["part"].to_numpy() == part)
        if rows.size < 4:
            continue
        points = _tsne(subspace(vectors[rows], part), seed)
        chosen = segments.iloc[rows]
        piece_number = chosen.groupby("label")["piece"].transform(lambda s: pd.factorize(s)[0] + 1)
        frames.append(pd.DataFrame({"x": points[:, 0], "y": points[:, 1], "subspace": part,
                                    "label": chosen["label"].to_numpy(),
                                    "piece": (chosen["label"] + "-" + piece_number.astype(str)).to_numpy(),
                                    "other": chosen["other"].to_numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["x", "y", "subspace", "label", "piece", "other"])


def embedding_magnitudes(results: Chapter4Results, condition: str = PROPOSED, per_part: int = 20) -> pd.DataFrame:
    """Fig. 4.10: |embedding| of single-stem inputs, ``per_part`` segments per instrument stacked vertically.

    Returns:
        Rows ``"<part> <n>"`` (the input's instrument), columns = embedding dimensions.
    """
    stems = results.embeddings[condition]["stems_5"]
    blocks, labels = [], []
    for part in INSTRUMENTS:
        if stems.get(part) is None:
            continue
        chosen = np.abs(stems[part][:per_part])
        blocks.append(chosen)
        labels += [f"{part} {number}" for number in range(len(chosen))]
    if not blocks:
        return pd.DataFrame()
    return pd.DataFrame(np.concatenate(blocks), index=labels)


def distance_matrices(results: Chapter4Results, part: str = "drums", condition: str = PROPOSED,
                      n_tracks: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 4.11: distances between one 5-s segment of each of ``n_tracks`` test tracks in ``part``'s subspace,
    with the part's stem as input and with the mix as input (masked).

    Returns:
        ``(stem input, mix input)`` distance matrices labelled by track.
    """
    from scipy.spatial.distance import cdist

    from partsim_core.csn.metrics import subspace

    grid = results.grids[EVALUATION_SECONDS]
    column = INSTRUMENTS.index(part)
    active = np.flatnonzero(grid.part_active[:, column])
    _, first = np.unique(grid.track_ids[active], return_index=True)
    chosen = np.sort(first)[:n_tracks]          # positions within ``active``: first segment of each track
    stem_vectors = subspace(results.embeddings[condition]["stems_5"][part][chosen], part)
    mix_vectors = subspace(results.embeddings[condition]["mix_5"][active[chosen]], part)
    labels = grid.track_ids[active[chosen]]
    return (pd.DataFrame(cdist(stem_vectors, stem_vectors), index=labels, columns=labels),
            pd.DataFrame(cdist(mix_vectors, mix_vectors), index=labels, columns=labels))


def findings(results: Chapter4Results) -> pd.DataFrame:
    """The thesis's main chapter-4 findings checked on our numbers (one row each; ``holds`` None = not computable).

    1. Pseudo pieces separate the subspaces: Table 4.2's mean over parts is higher with pseudo pieces ((f)-(i))
       than without ((c)-(e)); Table 4.5's mean |r| between subspaces is lower for (i) than for (e); Table 4.4's
       mean r is higher for (i) than for (e).
    2. Pre-training and the norm loss drive absent parts' subspaces to zero: Table 4.3's mean identification rate
       rises from (g) (neither) to (j) (pre-training) to (i) (both).
    3. The CSN beats the separation baseline on piano (Table 4.1: the thesis's largest gain).
    """
    rows = []

    def mean_row(table: pd.DataFrame, labels: Sequence[str]) -> float:
        present = [label for label in labels if label in table.index]
        values = table.loc[present].to_numpy(dtype=float) if present else np.zeros((0,))
        return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan

    def add(claim: str, ours: str, holds: bool | None) -> None:
        rows.append({"finding (thesis)": claim, "ours": ours, "holds": holds})

    with_psd = mean_row(results.table_4_2, ["(f)", "(g)", "(h)", "(i)"])
    without_psd = mean_row(results.table_4_2, ["(c)", "(d)", "(e)"])
    add("Table 4.2: pseudo pieces raise part-level label accuracy ((f)-(i) vs (c)-(e))",
        f"mean {with_psd:.1f} % vs {without_psd:.1f} %",
        None if math.isnan(with_psd) or math.isnan(without_psd) else with_psd > without_psd)

    def off_diagonal(key: str) -> float:
        matrix = results.subspace_correlation.get(key)
        if matrix is None:
            return math.nan
        values = matrix.to_numpy(dtype=float)[np.triu_indices(len(INSTRUMENTS), k=1)]
        return float(np.nanmean(np.abs(values))) if np.isfinite(values).any() else math.nan

    e_r, i_r = off_diagonal("(e)"), off_diagonal("(i)")
    add("Table 4.5: subspaces are less correlated with pseudo pieces ((i) vs (e))",
        f"mean |r| {i_r:.3f} vs {e_r:.3f}", None if math.isnan(e_r) or math.isnan(i_r) else i_r < e_r)
    e_s, i_s = mean_row(results.stem_mix_correlation, ["(e)"]), mean_row(results.stem_mix_correlation, ["(i)"])
    add("Table 4.4: each subspace follows its own part more closely with pseudo pieces ((i) vs (e))",
        f"mean r {i_s:.3f} vs {e_s:.3f}", None if math.isnan(e_s) or math.isnan(i_s) else i_s > e_s)
    g, j, i = (mean_row(results.identification, [f"({letter})"]) for letter in "gji")
    add("Table 4.3: pre-training, then the norm loss, make the sounding part's subspace the largest "
        "((g) < (j) < (i))", f"mean {g:.1f} % < {j:.1f} % < {i:.1f} %",
        None if any(math.isnan(v) for v in (g, j, i)) else bool(g < j < i))
    piano = results.table_4_1.loc["piano"] if "piano" in results.table_4_1.index else None
    if piano is not None:
        pairs = [(piano.get(f"proposed_{s:g}s"), piano.get(f"baseline_{s:g}s")) for s in TABLE_4_1_SECONDS]
        pairs = [(p, b) for p, b in pairs if p is not None and b is not None and np.isfinite(p) and np.isfinite(b)]
        add("Table 4.1: the CSN identifies tracks from the piano far better than the separation baseline",
            ", ".join(f"{p:.1f} vs {b:.1f} %" for p, b in pairs) or "not computed",
            None if not pairs else all(p > b for p, b in pairs))
    return pd.DataFrame(rows)
