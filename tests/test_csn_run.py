"""Chapter 4's runner (``partsim_core.csn.run``), its test set (``partsim_core.csn.test_set``), findings, and
``partsim csn run``.

The fast tests check each building block against an independent computation on the embedded smoke dataset or on
hand-made inputs (no training). The one slow test runs the chapter on the smoke preset with conditions (a), (e),
(i) and recomputes Table 4.1's proposed 3- and 5-s columns and Table 4.5c with scikit-learn / scipy.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from partsim_core import INSTRUMENTS
from partsim_core.book.thesis_tables import load_thesis_table, side_by_side
from partsim_core.book.viz import MISSING, wide_comparison
from partsim_core.cli import main
from partsim_core.cli.csn import parse_conditions
from partsim_core.csn.findings import chapter4_findings
from partsim_core.csn.listening import ListeningAgreement
from partsim_core.csn.metrics import ItemScores
from partsim_core.csn.run import Chapter4Results
from partsim_core.csn.test_set import (
    EVALUATION_SECONDS,
    TABLE_4_1_SECONDS,
    SegmentGrid,
    SeparatedPieces,
    chapter4_test_tracks,
    embed_index,
    segment_grid,
    test_pseudo_pieces,
)
from partsim_core.data.segments import SegmentIndex, filter_test_tracks
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel
from partsim_core.presets import FrontendConfig

MIX = "mix"


@pytest.fixture(scope="module")
def smoke_data():
    """The embedded smoke dataset's chapter-3 data (generated into the cache when absent, ~3 s)."""
    from partsim_core.data.dataset import load_dataset

    return load_dataset("smoke")


class _SilencedCache:
    """A stem cache that returns some signals with stretches set to zero (``(track, part) -> [(from_s, to_s)]``).

    The smoke test tracks sound almost everywhere, so without it a silence rule that kept everything would pass.
    """

    def __init__(self, cache, silences: dict[tuple[str, str], list[tuple[float, float]]]) -> None:
        self._cache, self.silences, self.sample_rate = cache, silences, cache.sample_rate

    def get(self, track, part: str) -> np.ndarray:
        audio = self._cache.get(track, part)
        spans = self.silences.get((track.track_id, part))
        if not spans:
            return audio
        audio = np.array(audio, dtype=np.float32)
        for first, last in spans:
            audio[int(first * self.sample_rate):int(last * self.sample_rate)] = 0.0
        return audio

    def __getattr__(self, name: str):
        return getattr(self._cache, name)


#: Silences put into the smoke test tracks: one 5-s drums segment, nearly all of one piano stem, a whole bass
#: stem, and the first 10 s of one mix (the stems of that track are left alone).
SILENCES = {("Track00022", "drums"): [(5.0, 10.0)], ("Track00023", "piano"): [(0.0, 12.0)],
            ("Track00021", "bass"): [(0.0, 100.0)], ("Track00024", MIX): [(0.0, 10.0)]}


@pytest.fixture(scope="module", params=["as generated", "with silences"])
def chapter_data(request, smoke_data):
    """The smoke data as generated, and with :data:`SILENCES` (so that the silence rules have work to do)."""
    import dataclasses

    if request.param == "as generated":
        return smoke_data
    test_ids = {track.track_id for track in smoke_data.test_tracks}
    assert {track_id for track_id, _ in SILENCES} <= test_ids, "the smoke dataset's test split changed"
    return dataclasses.replace(smoke_data, cache=_SilencedCache(smoke_data.cache, SILENCES))


def _power(audio: np.ndarray, start: int, length: int) -> float:
    """Mean power of ``audio[start:start + length]``, written out directly (float64)."""
    piece = np.asarray(audio[start:start + length], dtype=np.float64)
    assert piece.shape[0] == length
    return float(np.sum(piece * piece) / length)


# --------------------------------------------------------------------------------------------------------------
# Segment grid
# --------------------------------------------------------------------------------------------------------------


def _expected_grid(data, seconds: float) -> tuple[list[str], list[int], list[bool], list[list[bool]], int]:
    """Track ids, starts, mix and part activity of the non-overlapping grid, computed by hand."""
    rate = data.cache.sample_rate
    length = int(round(seconds * rate))
    threshold = data.preset.silence_threshold
    ids, starts, mix_active, part_active = [], [], [], []
    for track in data.test_tracks:
        mix = np.asarray(data.cache.get(track, MIX))
        having = track.stems_by_group()
        for number in range(mix.shape[0] // length):
            start = number * length
            ids.append(track.track_id)
            starts.append(start)
            mix_active.append(_power(mix, start, length) >= threshold)
            part_active.append([part in having and _power(data.cache.get(track, part), start, length) >= threshold
                                for part in INSTRUMENTS])
    return ids, starts, mix_active, part_active, length


@pytest.mark.parametrize("seconds", TABLE_4_1_SECONDS)
def test_segment_grid_matches_direct_power(chapter_data, seconds):
    smoke_data = chapter_data
    grid = segment_grid(smoke_data, seconds, smoke_data.test_tracks)
    ids, starts, mix_active, part_active, length = _expected_grid(smoke_data, seconds)
    assert grid.length == length and grid.seconds == seconds and len(grid) == len(ids) > 0
    np.testing.assert_array_equal(grid.track_ids, ids)
    np.testing.assert_array_equal(grid.starts, starts)
    np.testing.assert_array_equal(grid.mix_active, mix_active)
    np.testing.assert_array_equal(grid.part_active, np.array(part_active, dtype=bool).reshape(-1, 5))
    # Non-overlapping multiples of the segment length, every track from its start.
    assert np.all(grid.starts % length == 0)
    for track_id in set(ids):
        own = np.sort(grid.starts[grid.track_ids == track_id])
        np.testing.assert_array_equal(own, np.arange(own.size) * length)
    # A part the track lacks is never active (smoke's Track00021 has no guitar).
    for track in smoke_data.test_tracks:
        for column, part in enumerate(INSTRUMENTS):
            if part not in track.stems_by_group():
                assert not grid.part_active[grid.track_ids == track.track_id, column].any()
    if isinstance(smoke_data.cache, _SilencedCache):
        # The silences are seen: the whole silent bass stem, and (every grid) the start of Track00024's mix.
        assert not grid.part_active[grid.track_ids == "Track00021", INSTRUMENTS.index("bass")].any()
        assert not grid.mix_active[np.flatnonzero(grid.track_ids == "Track00024")[0]]
        assert grid.mix_active.any() and grid.part_active.any()


def test_segment_grid_skips_tracks_shorter_than_a_segment(smoke_data):
    rate = smoke_data.cache.sample_rate
    lengths = {track.track_id: len(smoke_data.cache.get(track, MIX)) for track in smoke_data.test_tracks}
    assert min(lengths.values()) < max(lengths.values())
    # A segment longer than the shortest test track but shorter than the longest.
    seconds = (min(lengths.values()) + max(lengths.values())) / 2 / rate
    grid = segment_grid(smoke_data, seconds, smoke_data.test_tracks)
    long_enough = {track_id for track_id, n in lengths.items() if n >= grid.length}
    assert set(grid.track_ids) == long_enough and len(long_enough) < len(lengths)
    assert len(grid) == sum(lengths[track_id] // grid.length for track_id in long_enough)
    with pytest.raises(PartsimError, match="no test track is at least"):
        segment_grid(smoke_data, max(lengths.values()) / rate + 1.0, smoke_data.test_tracks)


# --------------------------------------------------------------------------------------------------------------
# Test pseudo pieces (Table 4.2)
# --------------------------------------------------------------------------------------------------------------


def test_segment_grid_rows_of_each_part_stems():
    # Four segments of tracks a, a, b, b; drums sound in rows 0 and 2, bass in row 3, the other parts nowhere.
    active = np.zeros((4, len(INSTRUMENTS)), dtype=bool)
    active[[0, 2], INSTRUMENTS.index("drums")] = True
    active[3, INSTRUMENTS.index("bass")] = True
    grid = SegmentGrid(seconds=5.0, length=10, track_ids=np.array(["a", "a", "b", "b"]),
                       starts=np.array([0, 10, 0, 10]), mix_active=np.ones(4, dtype=bool), part_active=active, all_segments=None, parts={})
    tracks = grid.stem_track_ids()
    assert tracks["drums"].tolist() == ["a", "b"]
    assert tracks["bass"].tolist() == ["b"]
    assert tracks["piano"].tolist() == []
    vectors = np.arange(2 * 4 * 3).reshape(2, 4, 3)  # (seeds, rows, dim): row r of seed s starts at 12 s + 3 r
    at = grid.at_stems(vectors)
    assert at["drums"][:, :, 0].tolist() == [[0, 6], [12, 18]]
    assert at["bass"][:, :, 0].tolist() == [[9], [21]]
    assert at["guitar"].shape == (2, 0, 3)
    assert grid.at_stems(None) == {part: None for part in INSTRUMENTS}


def test_pseudo_pieces_segments_and_waveforms(chapter_data):
    data = chapter_data
    pieces = test_pseudo_pieces(data, data.test_tracks, EVALUATION_SECONDS, seed=0)
    segments, plan = pieces.segments, pieces.plan
    rate, threshold = data.cache.sample_rate, data.preset.silence_threshold
    length = int(round(EVALUATION_SECONDS * rate))
    assert pieces.length == length and len(segments) > 0 and len(plan) > 0
    tracks = {track.track_id: track for track in data.test_tracks}

    # No piece uses its label track as "other"; a piece's own part comes from the label, the rest from "other".
    assert (plan["label"] != plan["other"]).all() and (segments["label"] != segments["other"]).all()
    # Segments of one piece share part, label and other, and agree with the plan's row.
    by_piece = plan.set_index("piece")
    for piece, group in segments.groupby("piece"):
        assert group[["part", "label", "other"]].nunique().max() == 1, piece
        first = group.iloc[0]
        assert (first["part"], first["label"], first["other"]) == tuple(by_piece.loc[piece, ["part", "label",
                                                                                          "other"]])
        starts = np.sort(group["start"].to_numpy())
        assert np.all(starts % length == 0) and np.all(np.diff(starts) >= length)  # non-overlapping grid

    for row, segment in segments.iterrows():
        part, label, other, start = segment["part"], segment["label"], segment["other"], int(segment["start"])
        # The label part sounds in every kept segment (its stem's mean power above the threshold).
        assert part in tracks[label].stems_by_group()
        assert _power(data.cache.get(tracks[label], part), start, length) >= threshold, (row, part, label)
        # The segment lies inside both source tracks.
        assert start + length <= min(len(data.cache.get(tracks[label], MIX)), len(data.cache.get(tracks[other], MIX)))
        # Every part comes from the label (its own part) or the other track, None where that track lacks it.
        expected_parts = np.zeros((5, length), dtype=np.float32)
        for column, name in enumerate(INSTRUMENTS):
            source = label if name == part else other
            if name in tracks[source].stems_by_group():
                assert segment[name] == source, (row, name)
                expected_parts[column] = np.asarray(data.cache.get(tracks[source], name)[start:start + length])
            else:
                assert pd.isna(segment[name]), (row, name)
        mix = pieces.waveform(row, MIX)
        assert mix.shape == (length,) and mix.dtype == np.float32
        for column, name in enumerate(INSTRUMENTS):
            np.testing.assert_array_equal(pieces.waveform(row, name), expected_parts[column])
        # The mix is the sum of the clean parts (waveform domain).
        np.testing.assert_allclose(mix, expected_parts.astype(np.float64).sum(axis=0), rtol=0, atol=1e-5)

    # Completeness: every grid segment of a piece where the label part sounds is there, and nothing else.
    dropped = 0
    for piece_row in plan.itertuples(index=False):
        label_track, other_track = tracks[piece_row.label], tracks[piece_row.other]
        n = min(len(data.cache.get(label_track, MIX)), len(data.cache.get(other_track, MIX)))
        stem = data.cache.get(label_track, piece_row.part)
        expected = [start for start in range(0, n - length + 1, length) if _power(stem, start, length) >= threshold]
        found = sorted(segments.loc[segments["piece"] == piece_row.piece, "start"])
        assert found == expected, piece_row.piece
        dropped += n // length - len(expected)
    if isinstance(data.cache, _SilencedCache):
        assert dropped > 0  # the silent label stretches removed segments


def test_chapter4_filter_is_the_thesis_4_4_1_rule(smoke_data):
    # Chapter 4's own test set, from the raw split: the rule of 4.4.1 (shortest non-silent part first).
    kept, table = chapter4_test_tracks(smoke_data)
    expected, _ = filter_test_tracks(smoke_data.cache, smoke_data.dataset.tracks("test"), fraction=0.1,
                                     seconds=smoke_data.preset.segment_seconds,
                                     threshold=smoke_data.preset.silence_threshold, progress=False)
    assert [t.track_id for t in kept] == [t.track_id for t in expected]
    # Every dropped track has a shorter shortest part than every kept one.
    dropped = table[~table["kept"]]["shortest_non_silent_s"]
    if len(dropped):
        assert dropped.max() <= table[table["kept"]]["shortest_non_silent_s"].min()


# --------------------------------------------------------------------------------------------------------------
# Separated test pieces and streamed embeddings
# --------------------------------------------------------------------------------------------------------------


class _ScalingSeparator:
    """A fake separator: part ``j`` is ``(j + 1) x`` the mix; records the length of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        self.calls.append(int(mix.shape[0]))
        return {part: mix * (index + 1) for index, part in enumerate(INSTRUMENTS)}


def test_separated_pieces_separate_whole_pieces_once(smoke_data, tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    pieces = test_pseudo_pieces(smoke_data, smoke_data.test_tracks, EVALUATION_SECONDS, seed=0)
    separator = _ScalingSeparator()
    separated = SimpleNamespace(separator=separator, key="scaling")
    source = SeparatedPieces(pieces, separated, smoke_data.fingerprint(smoke_data.test_tracks))
    # One call per piece, on its whole mix.
    assert sorted(separator.calls) == sorted(piece.n_samples for piece in pieces.pieces.values())
    for piece in list(pieces.pieces.values())[:3]:
        factor = INSTRUMENTS.index(piece.part) + 1
        np.testing.assert_allclose(source.get(piece, "mix"), factor * pieces.source.get(piece, "mix"), rtol=1e-6)
    again = SeparatedPieces(pieces, separated, smoke_data.fingerprint(smoke_data.test_tracks))
    assert again.folder == source.folder and len(separator.calls) == len(pieces.pieces)  # reused, not redone


FRONTEND = FrontendConfig(sample_rate=8000, n_fft=256, hop_length=128, n_mels=16)


class _TinyModel(torch.nn.Module):
    """Mean over frames, then a linear map: ``(batch, n_mels, frames) -> (batch, dim)``."""

    def __init__(self, seed: int, dim: int = 3, broken: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.linear = torch.nn.Linear(FRONTEND.n_mels, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(dim, FRONTEND.n_mels, generator=generator))
        self.broken = broken

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        out = self.linear(mel.mean(dim=-1))
        if self.broken:
            out = out.clone()
            out[-1, 0] = float("nan")  # only the last row of each batch is bad
        return out


class _NoiseSource:
    sample_rate = 8000

    def get(self, track, part: str) -> np.ndarray:
        rng = np.random.default_rng(int(track.track_id[1:]))
        return rng.standard_normal(8000).astype(np.float32)


def test_embed_index_streams_batches_and_names_nan():
    tracks = [SimpleNamespace(track_id=f"T{number}") for number in range(3)]
    by_id = {track.track_id: track for track in tracks}
    index = SegmentIndex(_NoiseSource(), tracks, "mix", 0.25, overlap=False, threshold=0.0)
    model = _TinyModel(0)
    streamed = embed_index(model, _NoiseSource(), by_id, index, FRONTEND, batch_size=5)
    waves = np.stack([_NoiseSource().get(track, "mix")[start:start + 2000] for track in tracks
                      for start in range(0, 8000, 2000)])
    with torch.no_grad():
        direct = model(LogMel(FRONTEND)(torch.from_numpy(waves))).numpy()
    np.testing.assert_allclose(streamed, direct, rtol=1e-5, atol=1e-6)
    assert embed_index(model, _NoiseSource(), by_id, None, FRONTEND) is None
    with pytest.raises(PartsimError, match="NaN"):
        embed_index(_TinyModel(1, broken=True), _NoiseSource(), by_id, index, FRONTEND, batch_size=4)


# --------------------------------------------------------------------------------------------------------------
# Results, cells and findings on hand-made per-track scores
# --------------------------------------------------------------------------------------------------------------

TRACKS = np.array([f"t{number}" for number in range(8)])


def _accuracy(level: float, spread: float = 0.0, seed: int = 0) -> ItemScores:
    """Per-track accuracies around ``level`` (one seed, 4 segments per track)."""
    noise = np.random.default_rng(seed).uniform(-spread, spread, TRACKS.size)
    return ItemScores(items=TRACKS, values=np.clip(level + noise, 0, 1)[None], weights=np.full(TRACKS.size, 4.0),
                      scale=100.0)


def _correlation(level: float, spread: float = 0.0, seed: int = 0) -> ItemScores:
    """A jackknife cell whose statistic is ``level`` and whose leave-one-out values scatter by ``spread``."""
    noise = np.random.default_rng(seed).uniform(-spread, spread, TRACKS.size)
    loo = level + noise - noise.mean()
    pseudo = TRACKS.size * level - (TRACKS.size - 1) * loo
    return ItemScores(items=TRACKS, values=pseudo[None], estimate=level, thetas=np.array([level]),
                      leave_one_out=loo[None])


def _tables(**changes) -> dict:
    """Per-track tables in which every finding holds clearly; ``changes`` replace entries."""
    rows_4_2 = {"(a)": 1.0, "(b)": 0.0, "(c)": 0.4, "(d)": 0.4, "(e)": 0.4, "(f)": 0.5, "(g)": 0.5, "(h)": 0.5,
                "(i)": 0.5}
    tables = {
        "table_4_1": {part: {f"{kind}_{s:g}s": _accuracy(0.8 if kind == "proposed" else 0.4)
                             for s in TABLE_4_1_SECONDS for kind in ("proposed", "baseline")}
                      for part in INSTRUMENTS},
        "table_4_2": {row: {part: _accuracy(level) for part in INSTRUMENTS} for row, level in rows_4_2.items()},
        "identification": {row: {part: _accuracy(level) for part in INSTRUMENTS}
                           for row, level in {"(e)": 0.1, "(i)": 0.8, "(j)": 0.5, "(k)": 0.2}.items()},
        "stem_mix": {row: {part: _correlation(level) for part in INSTRUMENTS}
                     for row, level in {"(e)": 0.3, "(i)": 0.7, "(j)": 0.5, "(k)": 0.5}.items()},
        "subspace_correlation": {
            row: {(first, second): _correlation(level) for i, first in enumerate(INSTRUMENTS)
                  for second in INSTRUMENTS[i + 1:]}
            for row, level in {"(e)": 0.5, "(i)": 0.1, "reference": 0.05}.items()},
    }
    tables.update(changes)
    return tables


def _verdicts(tables: dict) -> list[str]:
    return [found["verdict"] for found in chapter4_findings(tables)]


def test_findings_verdicts_follow_the_intervals():
    base = _tables()
    found = chapter4_findings(base)
    assert [f["verdict"] for f in found] == ["holds"] * 8
    assert found[0]["estimate"] == pytest.approx(10.0)  # 50 % - 40 %, in points
    assert found[1]["estimate"] == pytest.approx(0.4)  # mean |r| 0.5 - 0.1
    for entry in found:
        assert set(entry) >= {"claim", "verdict", "estimate", "interval"} and len(entry["interval"]) == 2
    # Does not hold: pseudo pieces lower the accuracy, by the same margin on every track.
    lower = {**base["table_4_2"], **{row: {p: _accuracy(0.3) for p in INSTRUMENTS} for row in ("(f)", "(g)", "(h)",
                                                                                                  "(i)")}}
    assert _verdicts(_tables(table_4_2=lower))[0] == "does not hold"
    # Inconclusive: a 1-point difference drowned by per-track noise of +-30 points.
    noisy = {**base["table_4_2"],
             **{row: {p: _accuracy(0.41, 0.3, seed=n) for n, p in enumerate(INSTRUMENTS)} for row in
                ("(f)", "(g)", "(h)", "(i)")},
             **{row: {p: _accuracy(0.40, 0.3, seed=10 + n) for n, p in enumerate(INSTRUMENTS)} for row in
                ("(c)", "(d)", "(e)")}}
    assert _verdicts(_tables(table_4_2=noisy))[0] == "inconclusive"
    # |r| counts, not r: strongly negative correlations between (i)'s subspaces are not "less correlated".
    negative = {**base["subspace_correlation"],
                "(i)": {pair: _correlation(-0.6) for pair in base["subspace_correlation"]["(i)"]}}
    assert _verdicts(_tables(subspace_correlation=negative))[1] == "does not hold"
    # Table 4.3: (j) above (i) flips the norm finding only.
    identification = {**base["identification"], "(j)": {p: _accuracy(0.9) for p in INSTRUMENTS}}
    assert _verdicts(_tables(identification=identification))[3:5] == ["holds", "does not hold"]
    # Not computable -> inconclusive with a note.
    without = {row: cells for row, cells in base["identification"].items() if row != "(k)"}
    missing = chapter4_findings(_tables(identification=without))[3]
    assert missing["verdict"] == "inconclusive" and "not computable" in missing["note"]


def _results(**changes) -> Chapter4Results:
    fields = dict(preset="smoke", conditions=["e", "i", "j", "k"], seeds=[0], tables=_tables(),
                  findings=chapter4_findings(_tables()), histories={"csn-i/seed0": [
                      {"epoch": 1, "train_loss": 0.5, "val_loss": float("nan"), "seconds": 1.0}]},
                  reused={"csn-i/seed0": True}, timings={"total": 1.234}, n_segments={"grid_5s": 32},
                  table_4_6={}, listening_test="skipped", style_leakage=pd.DataFrame({
                      "subspace": ["drums", "drums", "drums", "bass", "bass", "drums"],
                      "part": ["drums", "bass", "piano", "bass", "drums", "drums"],
                      "relation": ["same", "other", "other", "same", "other", "same"],
                      "excess": [0.4, 0.1, 0.0, 0.2, np.nan, 0.1],
                      "condition": ["(i)", "(i)", "(i)", "(i)", "(i)", "(e)"]}))
    fields.update(changes)
    return Chapter4Results(**fields)


def test_cells_follow_the_thesis_layout_and_json_is_strict():
    results = _results()
    table_4_3 = results.frame("table_4_3")
    assert list(table_4_3.index) == ["wo/pre, wo/norm", "w/pre, wo/norm", "w/pre, w/norm"]
    # Rows from (k), (j), (i): the true Table 4.3 rows.
    assert table_4_3.loc["wo/pre, wo/norm"].tolist() == [20.0] * 5
    assert table_4_3.loc["w/pre, w/norm"].tolist() == [80.0] * 5
    assert list(results.frame("table_4_4").index) == ["wo/psd", "w/psd"]
    blocks = results.frame("table_4_5")
    assert set(blocks) == {"a", "b", "c"} and blocks["c"].at["drums", "bass"] == pytest.approx(0.1)
    assert math.isnan(blocks["c"].at["bass", "drums"])  # upper triangle only, as printed in the thesis
    payload = json.loads(json.dumps(results.to_json(), allow_nan=False))
    cell = payload["table_4_2"]["(i)"]["drums"]
    assert set(cell) == {"value", "low", "high"} and cell["value"] == pytest.approx(50.0)
    assert payload["table_4_1"]["piano"]["proposed_3s"]["value"] == pytest.approx(80.0)
    assert payload["table_4_5"]["b"]["drums"]["bass"]["value"] == pytest.approx(0.5)
    assert payload["histories"]["csn-i/seed0"][0]["val_loss"] is None
    assert [f["verdict"] for f in payload["findings"]] == ["holds"] * 8
    # Table 4.6: cells like every other table's; a cell without responses is null.
    listening = ListeningAgreement(matches={"overall": {"proposed": {"drums": np.array([[1.0, 1.0, 0.0, 1.0]]),
                                                                     "bass": np.zeros((1, 0))}}}, source="simulated")
    payload = json.loads(json.dumps(_results(table_4_6=listening.cells()).to_json(), allow_nan=False))
    assert payload["table_4_6"]["overall"]["proposed"]["bass"] == {"value": None, "low": None, "high": None}
    drums = payload["table_4_6"]["overall"]["proposed"]["drums"]
    assert drums["value"] == pytest.approx(75.0) and drums["low"] < 75.0 < drums["high"] == pytest.approx(
        100 * 0.975 ** 0.25)
    partial = _results(tables=_tables(identification={"(i)": _tables()["identification"]["(i)"]}))
    assert list(partial.frame("table_4_3").index) == ["w/pre, w/norm"]


def test_chance_levels_are_published_beside_the_tables():
    from partsim_core.csn.metrics import chance_tables

    tracks = np.repeat(np.arange(6), 4)
    segments = pd.DataFrame({"part": ["bass"] * 12, "label": np.repeat(["A", "B", "C"], 4),
                             "piece": np.repeat(["A1", "A2", "B1", "B2", "C1", "C2"], 2)})
    chance = chance_tables({3.0: tracks}, {3.0: np.ones((tracks.size, 5), dtype=bool)}, segments)
    results = _results(tables={**_tables(), "chance": chance})
    frame = results.chance_frame()
    assert list(frame.index) == ["Table 4.2", "Table 4.1 (3 s)"] and list(frame.columns) == list(INSTRUMENTS)
    assert math.isnan(frame.at["Table 4.2", "drums"]) and 0.0 <= frame.at["Table 4.2", "bass"] <= 100.0
    payload = json.loads(json.dumps(results.to_json(), allow_nan=False))
    assert payload["chance"]["table_4_2"]["bass"]["value"] == pytest.approx(frame.at["Table 4.2", "bass"])
    assert set(payload["chance"]["table_4_1"]["piano"]["3s"]) == {"value", "low", "high"}
    assert "chance" not in _results().to_json()  # tables without chance levels (older runs): no key


def test_leakage_summary_means_per_condition_and_relation():
    summary = _results().leakage_summary()
    assert list(summary.columns) == ["own", "leakage"]
    # By hand: (i) own = mean(0.4, 0.2), leakage = mean(0.1, 0.0) (NaN skipped); (e) own 0.1, no leakage rows.
    assert summary.at["(i)", "own"] == pytest.approx(0.3)
    assert summary.at["(i)", "leakage"] == pytest.approx(0.05)
    assert summary.at["(e)", "own"] == pytest.approx(0.1) and math.isnan(summary.at["(e)", "leakage"])


# --------------------------------------------------------------------------------------------------------------
# viz.wide_comparison
# --------------------------------------------------------------------------------------------------------------


def test_wide_comparison_layout_and_values():
    thesis = load_thesis_table("4.2")
    ours = pd.DataFrame({"drums": [91.0, np.nan], "bass": [30.0, 61.0], "piano": [20.0, 70.5]},
                        index=pd.Index(["(c)", "(i)"], name="row"))
    comparison = side_by_side(thesis, ours, label_ours="ours (smoke)")
    styler = wide_comparison(comparison, digits=1, caption="Table 4.2")
    wide = styler.data
    rows = list(dict.fromkeys(comparison["row"]))
    columns = list(dict.fromkeys(comparison["column"]))
    assert list(wide.index) == rows == [f"({letter})" for letter in "abcdefghi"]  # one line per row
    assert list(wide.columns) == [(column, kind) for column in columns for kind in ("thesis", "ours (smoke)")]
    for record in comparison.itertuples(index=False):
        for kind, value in (("thesis", record.thesis), ("ours (smoke)", record[3])):
            cell = wide.at[record.row, (record.column, kind)]
            assert (np.isnan(cell) and np.isnan(value)) or cell == value, (record.row, record.column, kind)
    assert wide.at["(i)", ("piano", "thesis")] == 67.37 and wide.at["(i)", ("piano", "ours (smoke)")] == 70.5
    html = styler.to_html()
    assert "67.4" in html and "70.5" in html and MISSING in html and "Table 4.2" in html
    with pytest.raises(PartsimError, match="side_by_side"):
        wide_comparison(ours)


# --------------------------------------------------------------------------------------------------------------
# partsim csn run
# --------------------------------------------------------------------------------------------------------------


def test_cli_run_help_options_and_conditions(capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["csn", "run", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: partsim csn run") and "--seeds" in out and "--out" in out and "%%" not in out
    with pytest.raises(SystemExit) as stop:
        main(["csn", "run", "--conditions", "x,y"])
    assert stop.value.code == 2
    assert "--conditions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["csn", "evaluate", "--help"])  # renamed to 'run'
    assert parse_conditions("a, e ,I") == ["a", "e", "i"]
    assert parse_conditions(" ALL ") == "all"
    assert parse_conditions("(a),(k)") == ["a", "k"]
    # --out is checked before any work: a folder is refused at once.
    assert main(["csn", "run", "--preset", "smoke", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["train", "csn", "--help"])
    assert "--seeds" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------------------
# The whole chapter on the smoke preset (trains what is not cached)
# --------------------------------------------------------------------------------------------------------------


def _knn_nearest_rule(points: np.ndarray, labels: np.ndarray, k: int = 5) -> np.ndarray:
    """Leave-one-out kNN predictions with scikit-learn's neighbour search (Euclidean, the point itself excluded)
    and evaluation.py's vote rule: most votes, ties to the label owning the nearest neighbour; equal distances
    ordered by index."""
    from sklearn.neighbors import NearestNeighbors

    n = len(points)
    search = NearestNeighbors(n_neighbors=n, metric="euclidean", algorithm="brute").fit(points)
    distances, indices = search.kneighbors(points)
    predicted = []
    for row in range(n):
        keep = indices[row] != row
        order = np.lexsort((indices[row][keep], np.round(distances[row][keep], 9)))[:k]
        neighbours = labels[indices[row][keep][order]]
        values, counts = np.unique(neighbours, return_counts=True)
        tied = set(values[counts == counts.max()])
        predicted.append(next(label for label in neighbours if label in tied))
    return np.asarray(predicted)


@pytest.fixture(scope="module")
def chapter4_smoke(tmp_path_factory):
    from partsim_core.csn.run import run_chapter4
    from partsim_core.data.dataset import load_dataset

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARTSIM_CACHE", str(tmp_path_factory.mktemp("cache")))
        data = load_dataset("smoke")
        yield run_chapter4(data, conditions=["a", "e", "i"], seeds=2, progress=False, device="cpu")


@pytest.mark.slow
def test_smoke_chapter4_end_to_end(chapter4_smoke):
    from scipy.spatial.distance import pdist
    from scipy.stats import pearsonr
    from sklearn.neighbors import KNeighborsClassifier

    from partsim_core.csn.conditions import train_condition
    from partsim_core.csn.metrics import subspace

    results = chapter4_smoke
    assert results.conditions == ["a", "e", "i"] and results.seeds == [0, 1]
    data = results.data
    grid = results.grids[EVALUATION_SECONDS]
    vectors = results.embeddings["i"]["mix_5"]
    assert vectors.shape == (len(grid), 640) and np.isfinite(vectors).all()

    # (i)'s networks from the artefact cache (reused: the run above trained them), run directly on the grid
    # excerpts of the mixes; at 5 s seed 0 must reproduce the stored embeddings.
    networks = []
    for seed in (0, 1):
        trained = train_condition("i", data, device="cpu", progress=False, seed=seed)
        assert trained.reused
        networks.append(trained.model.eval())
    tracks = data.tracks_by_id

    def direct_embeddings(seconds: float, network) -> np.ndarray:
        one = results.grids[seconds]
        waves = np.stack([np.asarray(data.cache.get(tracks[track_id], MIX)[start:start + one.length], np.float32)
                          for track_id, start in zip(one.track_ids, one.starts)])
        with torch.no_grad():
            return network(LogMel(data.preset.frontend)(torch.from_numpy(waves))).numpy()

    np.testing.assert_allclose(direct_embeddings(EVALUATION_SECONDS, networks[0]), vectors, rtol=1e-4, atol=1e-5)

    # Table 4.1, proposed: leave-one-out 5-NN track ID on subspace `part` of (i)'s mix embeddings, over the
    # segments where the part sounds, averaged over the two seeds. At 5 s the smoke tracks give only two segments
    # each, so the true track never wins a vote; 3 s (four per track) is where the comparison has teeth.
    table_4_1 = results.frame("table_4_1")
    compared = 0
    for seconds in (EVALUATION_SECONDS, 3.0):
        one = results.grids[seconds]
        points_by_seed = [direct_embeddings(seconds, network) for network in networks]
        for column, part in enumerate(INSTRUMENTS):
            rows = np.flatnonzero(one.part_active[:, column])
            ours = table_4_1.at[part, f"proposed_{seconds:g}s"]
            if rows.size < 2:
                assert math.isnan(ours)
                continue
            labels = one.track_ids[rows]
            per_seed = []
            for points_all in points_by_seed:
                points = subspace(points_all[rows], part)
                per_seed.append(100.0 * np.mean(_knn_nearest_rule(points, labels) == labels))
                # Where no vote is tied, scikit-learn's own classifier (fit on all other points) agrees.
                sklearn_predictions, tied = [], False
                for target in range(rows.size):
                    others = np.delete(np.arange(rows.size), target)
                    model = KNeighborsClassifier(n_neighbors=min(5, others.size), algorithm="brute")
                    model.fit(points[others], labels[others])
                    probabilities = model.predict_proba(points[target:target + 1])[0]
                    tied |= int(np.sum(probabilities == probabilities.max())) > 1
                    sklearn_predictions.append(model.predict(points[target:target + 1])[0])
                if not tied:
                    assert per_seed[-1] == pytest.approx(100.0 * np.mean(np.asarray(sklearn_predictions) == labels))
            assert ours == pytest.approx(np.mean(per_seed), abs=1e-6), (seconds, part)
            low = results.frame("table_4_1", "low").at[part, f"proposed_{seconds:g}s"]
            high = results.frame("table_4_1", "high").at[part, f"proposed_{seconds:g}s"]
            assert low <= ours <= high
            compared += 1
    assert compared >= 8

    # Table 4.2: rows (a), (e), (i); percentages or NaN.
    table_4_2 = results.frame("table_4_2")
    assert list(table_4_2.index) == ["(a)", "(e)", "(i)"] and list(table_4_2.columns) == list(INSTRUMENTS)
    values = table_4_2.to_numpy(dtype=float)
    assert np.all(np.isnan(values) | ((values >= 0) & (values <= 100)))
    assert np.isfinite(values[1:]).any()  # the CSN rows are computed somewhere

    # Table 4.5c: upper triangle of the correlations between (i)'s subspaces on the mix-active rows, averaged over
    # the seeds.
    mix_rows = np.flatnonzero(grid.mix_active)
    per_seed = [direct_embeddings(EVALUATION_SECONDS, network)[mix_rows] for network in networks]
    table_4_5c = results.frame("table_4_5")["c"]
    for i in range(5):
        for j in range(5):
            value = table_4_5c.iat[i, j]
            if j <= i:
                assert math.isnan(value)
                continue
            expected = []
            for points in per_seed:
                first, second = pdist(subspace(points, INSTRUMENTS[i])), pdist(subspace(points, INSTRUMENTS[j]))
                expected.append(math.nan if np.ptp(first) == 0 or np.ptp(second) == 0 else
                                pearsonr(first, second)[0])
            assert value == pytest.approx(np.mean(expected), abs=1e-4, nan_ok=True), (i, j)
    assert set(results.frame("table_4_5")) == {"a", "b", "c"}

    # JSON: strict, every table cell {"value", "low", "high"}, findings with verdicts, a history per model.
    payload = json.loads(json.dumps(results.to_json(), allow_nan=False))
    assert payload["conditions"] == ["a", "e", "i"] and payload["seeds"] == [0, 1]
    for name in ("table_4_1", "table_4_2", "table_4_3", "table_4_4"):
        for row in payload[name].values():
            for cell in row.values():
                assert set(cell) == {"value", "low", "high"}
    assert all(f["verdict"] in ("holds", "does not hold", "inconclusive") for f in payload["findings"])

    # Table 4.6 (simulated listeners): every cell {"value", "low", "high"}; with two seeds the value is the rate
    # pooled over both, i.e. the mean of each seed's rate over the same responses as chapter 5's
    # model_listener_agreement computes it for that seed's (i) alone.
    from partsim_core import perceptual
    from partsim_core.csn.listening import CLAIM, embed_one

    assert results.listening_test == "simulated"
    assert set(payload["table_4_6"]) == {"overall", "timbre"}
    abx = perceptual.load_abx(perceptual.ensure_simulated_test(data.root, seed=0))
    stimuli = perceptual.extract_from_slakh(abx.configs, data.root, sample_rate=data.preset.frontend.sample_rate,
                                            source="mix", progress=False)
    per_seed = []
    for network in networks:
        def embed(audio, category, network=network):
            return subspace(embed_one(network, audio, data.preset.frontend, "cpu")[None], category)[0]
        rates = perceptual.model_listener_agreement(abx.responses, stimuli, embed, perspectives=("overall", "timbre"),
                                                    progress=False)
        per_seed.append(rates[rates["set_type"] == "xab"].set_index(["perspective", "category"])["percent"])
    for perspective in ("overall", "timbre"):
        assert set(payload["table_4_6"][perspective]) == {"baseline", "proposed"}
        for part in INSTRUMENTS:
            for row in ("baseline", "proposed"):
                cell = payload["table_4_6"][perspective][row][part]
                assert set(cell) == {"value", "low", "high"}
                if cell["value"] is not None:
                    assert cell["low"] <= cell["value"] <= cell["high"]
            expected = np.mean([rates[perspective, part] for rates in per_seed])
            found = payload["table_4_6"][perspective]["proposed"][part]["value"]
            assert (found is None and math.isnan(expected)) or found == pytest.approx(expected, abs=1e-9)
    claims = {f["claim"]: f for f in payload["findings"]}
    assert {CLAIM.format(perspective=p) for p in ("overall", "timbre")} <= set(claims)
    assert {"csn-i/seed0", "csn-i/seed1", "csn-e/seed1", "csn-pretrain/seed0",
            "part-drums-separated/seed1"} <= set(payload["histories"])
