"""Chapter 4's experiment runner (``partsim_core.csn.run``), its wide table and ``partsim csn evaluate``.

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
from partsim_core.cli import main
from partsim_core.cli.csn import parse_conditions
from partsim_core.csn.run import (
    EVALUATION_SECONDS,
    TABLE_4_1_SECONDS,
    Chapter4Results,
    _separate_segments,
    embed_waveforms,
    findings,
    segment_grid,
    test_pseudo_pieces,
)
from partsim_core.errors import PartsimError
from partsim_core.frontend import LogMel
from partsim_core.presets import FrontendConfig
from partsim_core.book.thesis_tables import load_thesis_table, side_by_side
from partsim_core.book.viz import MISSING, wide_comparison

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
            mix_active.append(_power(mix, start, length) > threshold)
            part_active.append([part in having and _power(data.cache.get(track, part), start, length) > threshold
                                for part in INSTRUMENTS])
    return ids, starts, mix_active, part_active, length


@pytest.mark.parametrize("seconds", TABLE_4_1_SECONDS)
def test_segment_grid_matches_direct_power(chapter_data, seconds):
    smoke_data = chapter_data
    grid = segment_grid(smoke_data, seconds)
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
    grid = segment_grid(smoke_data, seconds)
    long_enough = {track_id for track_id, n in lengths.items() if n >= grid.length}
    assert set(grid.track_ids) == long_enough and len(long_enough) < len(lengths)
    assert len(grid) == sum(lengths[track_id] // grid.length for track_id in long_enough)
    with pytest.raises(PartsimError, match="no test track is at least"):
        segment_grid(smoke_data, max(lengths.values()) / rate + 1.0)


# --------------------------------------------------------------------------------------------------------------
# Test pseudo pieces (Table 4.2)
# --------------------------------------------------------------------------------------------------------------


def test_pseudo_pieces_segments_and_waveforms(chapter_data):
    data = chapter_data
    pieces = test_pseudo_pieces(data, EVALUATION_SECONDS, seed=0)
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
        assert _power(data.cache.get(tracks[label], part), start, length) > threshold, (row, part, label)
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
        expected = [start for start in range(0, n - length + 1, length) if _power(stem, start, length) > threshold]
        found = sorted(segments.loc[segments["piece"] == piece_row.piece, "start"])
        assert found == expected, piece_row.piece
        dropped += n // length - len(expected)
    if isinstance(data.cache, _SilencedCache):
        assert dropped > 0  # the silent label stretches removed segments

    # The lazy sequence gives the same waveforms, one by one or sliced.
    lazy = pieces.waveforms(MIX, np.array([2, 0]))
    assert len(lazy) == 2
    np.testing.assert_array_equal(lazy[0], pieces.waveform(2, MIX))
    np.testing.assert_array_equal(lazy[1:][0], pieces.waveform(0, MIX))


# --------------------------------------------------------------------------------------------------------------
# Separating many excerpts at once
# --------------------------------------------------------------------------------------------------------------


class _ScalingSeparator:
    """A fake separator: part ``j`` is ``(j + 1) x`` the mix; records the length of every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        self.calls.append(int(mix.shape[0]))
        return {part: mix * (index + 1) for index, part in enumerate(INSTRUMENTS)}


def test_separate_segments_cuts_the_excerpts_apart_again():
    rng = np.random.default_rng(0)
    mixes = [rng.standard_normal(100).astype(np.float32) for _ in range(7)]
    separator = _ScalingSeparator()
    source = SimpleNamespace(separator=separator)
    # 0.3 s at 1 kHz = 300 samples per call: three excerpts of 100 samples each.
    out = _separate_segments(source, mixes, "piano", sample_rate=1000, max_seconds=0.3)
    assert len(out) == len(mixes)
    for estimate, mix in zip(out, mixes):
        assert estimate.shape == (100,) and estimate.dtype == np.float32
        np.testing.assert_allclose(estimate, mix * 3)  # piano is part 2: factor 3
    assert separator.calls == [300, 300, 100] and len(separator.calls) < len(mixes)

    one_call = _ScalingSeparator()
    drums = _separate_segments(SimpleNamespace(separator=one_call), mixes, "drums", sample_rate=1000)
    assert one_call.calls == [700]
    for estimate, mix in zip(drums, mixes):
        np.testing.assert_allclose(estimate, mix)
    assert _separate_segments(SimpleNamespace(separator=one_call), [], "drums", 1000) == []
    assert one_call.calls == [700]


# --------------------------------------------------------------------------------------------------------------
# Embedding
# --------------------------------------------------------------------------------------------------------------

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


def test_embed_waveforms_dict_equals_each_model_alone():
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(1600).astype(np.float32) * scale for scale in (0.1, 1.0, 0.5, 2.0, 0.01)]
    first, second = _TinyModel(0), _TinyModel(1, dim=4)
    first.train()
    second.eval()
    both = embed_waveforms({"first": first, "second": second}, waves, FRONTEND, device="cpu", batch_size=2)
    assert set(both) == {"first", "second"}
    assert both["first"].shape == (5, 3) and both["second"].shape == (5, 4)
    assert both["first"].dtype == np.float32
    for name, model in (("first", first), ("second", second)):
        alone = embed_waveforms(model, waves, FRONTEND, device="cpu", batch_size=32)
        np.testing.assert_allclose(both[name], alone, rtol=1e-5, atol=1e-6)
        # Independently: the log-mel of the whole batch, then the model.
        with torch.no_grad():
            direct = model(LogMel(FRONTEND)(torch.from_numpy(np.stack(waves)))).numpy()
        np.testing.assert_allclose(alone, direct, rtol=1e-5, atol=1e-6)
    assert first.training and not second.training  # each model's mode is restored


def test_embed_waveforms_names_a_model_returning_nan():
    waves = [np.full(1600, 0.1, dtype=np.float32)] * 3
    with pytest.raises(PartsimError, match="'broken'.*input 1"):
        embed_waveforms({"fine": _TinyModel(0), "broken": _TinyModel(1, broken=True)}, waves, FRONTEND,
                        device="cpu", batch_size=2)
    with pytest.raises(PartsimError, match="NaN"):
        embed_waveforms(_TinyModel(1, broken=True), waves, FRONTEND, device="cpu")


# --------------------------------------------------------------------------------------------------------------
# Results tables and findings on hand-made numbers
# --------------------------------------------------------------------------------------------------------------


def _symmetric(off_diagonal: np.ndarray) -> pd.DataFrame:
    """A 5 x 5 correlation matrix with the given 10 upper-triangle values (row-major), mirrored, diagonal 1."""
    matrix = np.eye(5)
    matrix[np.triu_indices(5, k=1)] = off_diagonal
    matrix = np.triu(matrix) + np.triu(matrix, k=1).T
    return pd.DataFrame(matrix, index=pd.Index(INSTRUMENTS, name="subspace"),
                        columns=pd.Index(INSTRUMENTS, name="subspace"))


def _rows(values: dict[str, float | list[float]]) -> pd.DataFrame:
    """Rows ``(x)`` x parts; a scalar fills the row."""
    data = {row: (list(value) if isinstance(value, (list, tuple)) else [value] * 5) for row, value in values.items()}
    frame = pd.DataFrame.from_dict(data, orient="index", columns=list(INSTRUMENTS), dtype=float)
    frame.index.name = "row"
    return frame


def _results(**changes) -> Chapter4Results:
    """Hand-made results in which every finding holds; ``changes`` replace fields."""
    table_4_1 = pd.DataFrame({"proposed_3s": [80.0, 50.0, 70.0], "baseline_3s": [90.0, 50.0, 40.0],
                              "proposed_5s": [82.0, 55.0, 75.0], "baseline_5s": [92.0, 60.0, 45.0],
                              "proposed_10s": [85.0, 60.0, 80.0], "baseline_10s": [93.0, 70.0, 50.0]},
                             index=pd.Index(["drums", "bass", "piano"], name="part"))
    # Decoys: (a) and (b) belong to neither group of the Table 4.2 finding; counting them would flip it.
    table_4_2 = _rows({"(a)": 100.0, "(b)": 0.0, "(c)": 40.0, "(d)": 40.0, "(e)": [40, 40, 40, 40, np.nan],
                       "(f)": [50, 50, 50, np.nan, 50], "(g)": 50.0, "(h)": 50.0, "(i)": 50.0})
    identification = _rows({"(e)": 10.0, "(g)": [20, 30, 10, 20, 20], "(i)": 80.0, "(j)": 50.0})
    stem_mix = _rows({"(e)": 0.3, "(g)": 0.9, "(i)": [0.6, 0.7, 0.8, 0.7, 0.7], "(j)": 0.5})
    correlations = {"reference": _symmetric(np.linspace(0.0, 0.09, 10)), "(e)": _symmetric(np.full(10, 0.5)),
                    "(i)": _symmetric(np.array([0.1, -0.2, 0.0, 0.1, 0.2, -0.1, 0.1, 0.0, 0.1, 0.2]))}
    leakage = pd.DataFrame({
        "subspace": ["drums", "drums", "drums", "bass", "bass", "drums"],
        "part": ["drums", "bass", "piano", "bass", "drums", "drums"],
        "relation": ["same", "other", "other", "same", "other", "same"],
        "excess": [0.4, 0.1, 0.0, 0.2, np.nan, 0.1],
        "condition": ["(i)", "(i)", "(i)", "(i)", "(i)", "(e)"]})
    fields = dict(preset="smoke", data_root="", conditions=["e", "g", "i", "j"], table_4_1=table_4_1,
                  table_4_2=table_4_2, identification=identification, stem_mix_correlation=stem_mix,
                  subspace_correlation=correlations, table_4_6={}, style_leakage=leakage,
                  timings={"total": 1.234}, reused={"csn-i": True}, histories={}, n_segments={"grid_5s": 8})
    fields.update(changes)
    return Chapter4Results(**fields)


def test_tables_4_3_to_4_5_pick_the_thesis_rows():
    results = _results()
    table_4_3 = results.table_4_3()
    assert list(table_4_3.index) == ["wo/pre, wo/norm", "w/pre, wo/norm", "w/pre, w/norm"]
    assert list(table_4_3.columns) == list(INSTRUMENTS)
    for label, letter in (("wo/pre, wo/norm", "g"), ("w/pre, wo/norm", "j"), ("w/pre, w/norm", "i")):
        np.testing.assert_array_equal(table_4_3.loc[label].to_numpy(dtype=float),
                                      results.identification.loc[f"({letter})"].to_numpy(dtype=float))
    table_4_4 = results.table_4_4()
    assert list(table_4_4.index) == ["wo/psd", "w/psd"]
    np.testing.assert_array_equal(table_4_4.loc["wo/psd"].to_numpy(dtype=float), np.full(5, 0.3))
    np.testing.assert_array_equal(table_4_4.loc["w/psd"].to_numpy(dtype=float), [0.6, 0.7, 0.8, 0.7, 0.7])
    # A missing condition drops its row only.
    partial = _results(identification=results.identification.drop(index="(j)"))
    assert list(partial.table_4_3().index) == ["wo/pre, wo/norm", "w/pre, w/norm"]

    for block, key in (("a", "reference"), ("b", "(e)"), ("c", "(i)")):
        upper = results.table_4_5(block)
        full = results.subspace_correlation[key].to_numpy()
        values = upper.to_numpy(dtype=float)
        assert list(upper.index) == list(INSTRUMENTS) and list(upper.columns) == list(INSTRUMENTS)
        above = np.triu(np.ones((5, 5), dtype=bool), k=1)
        np.testing.assert_array_equal(values[above], full[above])
        assert np.isnan(values[~above]).all()  # diagonal and lower triangle left empty, as printed in the thesis
    assert _results(subspace_correlation={}).table_4_5("c") is None


def test_leakage_summary_means_per_condition_and_relation():
    summary = _results().leakage_summary()
    assert list(summary.columns) == ["own", "leakage"]
    # By hand: (i) own = mean(0.4, 0.2), leakage = mean(0.1, 0.0) (NaN skipped); (e) own 0.1, no leakage rows.
    assert summary.at["(i)", "own"] == pytest.approx(0.3)
    assert summary.at["(i)", "leakage"] == pytest.approx(0.05)
    assert summary.at["(e)", "own"] == pytest.approx(0.1) and math.isnan(summary.at["(e)", "leakage"])
    empty = _results(style_leakage=pd.DataFrame(columns=["condition", "relation", "excess"])).leakage_summary()
    assert empty.empty and list(empty.columns) == ["own", "leakage"]


def _holds(results: Chapter4Results) -> dict[str, object]:
    """``finding's table -> holds`` (key: ``Table 4.x`` at the start of the claim)."""
    table = findings(results)
    assert list(table.columns) == ["finding (thesis)", "ours", "holds"]
    out = {}
    for claim, holds in zip(table["finding (thesis)"], table["holds"]):
        key = claim.split(":")[0]
        assert holds is None or isinstance(holds, (bool, np.bool_)), (claim, holds)
        out[key] = None if holds is None else bool(holds)
    return out


def test_findings_hold_exactly_as_the_numbers_say():
    base = _results()
    assert _holds(base) == {"Table 4.2": True, "Table 4.5": True, "Table 4.4": True, "Table 4.3": True,
                            "Table 4.1": True}
    ours = dict(zip(findings(base)["finding (thesis)"].str.split(":").str[0], findings(base)["ours"]))
    assert "50.0" in ours["Table 4.2"] and "40.0" in ours["Table 4.2"]
    # (i)'s mean |r| = mean(|upper triangle|) = 1.1 / 10.
    assert "0.110" in ours["Table 4.5"] and "0.500" in ours["Table 4.5"]

    # Flip each finding on its own.
    table_4_2 = base.table_4_2.copy()
    table_4_2.loc[["(f)", "(g)", "(h)", "(i)"]] = 39.0
    assert _holds(_results(table_4_2=table_4_2))["Table 4.2"] is False
    # |r| counts, not r: strongly negative correlations between (i)'s subspaces are not "less correlated".
    negative = {**base.subspace_correlation, "(i)": _symmetric(np.full(10, -0.6))}
    assert _holds(_results(subspace_correlation=negative))["Table 4.5"] is False
    stem_mix = base.stem_mix_correlation.copy()
    stem_mix.loc["(i)"] = 0.2
    assert _holds(_results(stem_mix_correlation=stem_mix))["Table 4.4"] is False
    identification = base.identification.copy()
    identification.loc["(j)"] = 90.0  # (g) < (j) but (j) > (i)
    assert _holds(_results(identification=identification))["Table 4.3"] is False
    table_4_1 = base.table_4_1.copy()
    table_4_1.at["piano", "proposed_10s"] = 49.0  # one length where the baseline wins
    flipped = _holds(_results(table_4_1=table_4_1))
    assert flipped["Table 4.1"] is False
    assert {key: value for key, value in flipped.items() if key != "Table 4.1"} == {
        "Table 4.2": True, "Table 4.5": True, "Table 4.4": True, "Table 4.3": True}

    # Not computable -> None.
    assert _holds(_results(table_4_2=base.table_4_2.drop(index=["(c)", "(d)", "(e)"])))["Table 4.2"] is None
    assert _holds(_results(subspace_correlation={"(i)": base.subspace_correlation["(i)"]}))["Table 4.5"] is None
    assert _holds(_results(stem_mix_correlation=base.stem_mix_correlation.drop(index="(e)")))["Table 4.4"] is None
    assert _holds(_results(identification=base.identification.drop(index="(j)")))["Table 4.3"] is None
    no_baseline = base.table_4_1.copy()
    no_baseline[["baseline_3s", "baseline_5s", "baseline_10s"]] = np.nan
    assert _holds(_results(table_4_1=no_baseline))["Table 4.1"] is None
    assert "Table 4.1" not in _holds(_results(table_4_1=base.table_4_1.drop(index="piano")))


def test_to_json_is_strict_json_with_null_for_nan():
    results = _results()
    payload = results.to_json()
    text = json.dumps(payload, allow_nan=False)
    again = json.loads(text)
    # Table 4.2's NaN cell ((e), others) is null; the numbers are the frame's.
    table = again["table_4_2"]
    row, column = table["index"].index("(e)"), table["columns"].index("others")
    assert table["data"][row][column] is None
    assert table["data"][table["index"].index("(i)")] == [50.0] * 5
    assert again["table_4_5"]["c"]["data"][0][0] is None and again["table_4_5"]["c"]["data"][0][1] == 0.1
    assert again["timings"] == {"total": 1.23} and again["chapter"] == 4
    assert again["table_4_6"] == {}


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
# partsim csn evaluate
# --------------------------------------------------------------------------------------------------------------


def test_cli_evaluate_help_and_conditions(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["csn", "evaluate", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: partsim csn evaluate") and "4.6" in out and "--conditions" in out
    with pytest.raises(SystemExit) as stop:
        main(["csn", "evaluate", "--conditions", "x,y"])
    assert stop.value.code == 2
    assert "--conditions" in capsys.readouterr().err
    assert parse_conditions("a, e ,I") == ["a", "e", "i"]
    assert parse_conditions(" ALL ") == "all"
    assert parse_conditions("(a),(j)") == ["a", "j"]


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
def chapter4_smoke():
    from partsim_core.csn.run import run_chapter4

    return run_chapter4("smoke", conditions=["a", "e", "i"], progress=False, device="cpu")


@pytest.mark.slow
def test_smoke_chapter4_end_to_end(chapter4_smoke):
    from scipy.spatial.distance import pdist
    from scipy.stats import pearsonr
    from sklearn.neighbors import KNeighborsClassifier

    from partsim_core.csn.metrics import subspace

    from partsim_core.csn.conditions import train_condition

    results = chapter4_smoke
    assert results.conditions == ["a", "e", "i"]
    data = results.data
    grid = results.grids[EVALUATION_SECONDS]
    vectors = results.embeddings["i"]["mix_5"]
    assert vectors.shape == (len(grid), 640) and np.isfinite(vectors).all()

    # (i)'s network from the artefact cache (reused: the run above trained or reused it), run directly on the
    # grid excerpts of the mixes; at 5 s it must reproduce the stored embeddings.
    trained = train_condition("i", "smoke", device="cpu", progress=False, data=data)
    assert trained.reused
    network = trained.model.eval()
    tracks = data.tracks_by_id

    def direct_embeddings(seconds: float) -> np.ndarray:
        one = results.grids[seconds]
        waves = np.stack([np.asarray(data.cache.get(tracks[track_id], MIX)[start:start + one.length], np.float32)
                          for track_id, start in zip(one.track_ids, one.starts)])
        with torch.no_grad():
            return network(LogMel(data.preset.frontend)(torch.from_numpy(waves))).numpy()

    np.testing.assert_allclose(direct_embeddings(EVALUATION_SECONDS), vectors, rtol=1e-4, atol=1e-5)

    # Table 4.1, proposed: leave-one-out 5-NN track ID on subspace `part` of (i)'s mix embeddings, over the
    # segments where the part sounds. At 5 s (the brief's check) the smoke tracks give only two segments each,
    # so the true track never wins a vote; 3 s (four per track) is where the comparison has teeth.
    compared = 0
    for seconds, points_all in ((EVALUATION_SECONDS, vectors), (3.0, direct_embeddings(3.0))):
        one = results.grids[seconds]
        for column, part in enumerate(INSTRUMENTS):
            rows = np.flatnonzero(one.part_active[:, column])
            ours = results.table_4_1.at[part, f"proposed_{seconds:g}s"]
            if rows.size < 2:
                assert math.isnan(ours)
                continue
            points, labels = subspace(points_all[rows], part), one.track_ids[rows]
            expected = 100.0 * np.mean(_knn_nearest_rule(points, labels) == labels)
            assert ours == pytest.approx(expected, abs=1e-9), (seconds, part)
            # Where no vote is tied, scikit-learn's own classifier (fit on all other points) agrees.
            sklearn_predictions = []
            tied = False
            for target in range(rows.size):
                others = np.delete(np.arange(rows.size), target)
                model = KNeighborsClassifier(n_neighbors=min(5, others.size), algorithm="brute")
                model.fit(points[others], labels[others])
                probabilities = model.predict_proba(points[target:target + 1])[0]
                tied |= int(np.sum(probabilities == probabilities.max())) > 1
                sklearn_predictions.append(model.predict(points[target:target + 1])[0])
            if not tied:
                assert ours == pytest.approx(100.0 * np.mean(np.asarray(sklearn_predictions) == labels), abs=1e-9)
            compared += 1
    assert compared >= 8
    assert np.nanmax(results.table_4_1["proposed_3s"].to_numpy(dtype=float)) > 0  # a non-trivial column

    # Table 4.2: rows (a), (e), (i); percentages or NaN.
    table_4_2 = results.table_4_2
    assert list(table_4_2.index) == ["(a)", "(e)", "(i)"] and list(table_4_2.columns) == list(INSTRUMENTS)
    values = table_4_2.to_numpy(dtype=float)
    assert np.all(np.isnan(values) | ((values >= 0) & (values <= 100)))
    assert np.isfinite(values[1:]).any()  # the CSN rows are computed somewhere

    # Table 4.5c: upper triangle of the symmetric matrix of distance-matrix correlations between (i)'s subspaces
    # on the mix-active rows.
    mix_rows = np.flatnonzero(grid.mix_active)
    distances = [pdist(subspace(vectors[mix_rows], part)) for part in INSTRUMENTS]
    table_4_5c = results.table_4_5("c")
    full = results.subspace_correlation["(i)"].to_numpy(dtype=float)
    np.testing.assert_allclose(full, full.T, equal_nan=True)
    for i in range(5):
        for j in range(5):
            cell = table_4_5c.iat[i, j]
            if j <= i:
                assert math.isnan(cell)
            elif np.ptp(distances[i]) == 0 or np.ptp(distances[j]) == 0:
                assert math.isnan(cell)
            else:
                assert cell == pytest.approx(pearsonr(distances[i], distances[j])[0], abs=1e-6), (i, j)
    assert table_4_5c is not None and results.table_4_5("b") is not None and results.table_4_5("a") is not None

    # JSON: strict (NaN written as null).
    payload = results.to_json()
    json.dumps(payload, allow_nan=False)
    assert payload["conditions"] == ["a", "e", "i"]
    assert set(payload["table_4_5"]) == {"a", "b", "c"}
