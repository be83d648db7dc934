"""The separator crossover on Table 4.2's measure (partsim_core.csn.crossover) and the opt-in style mix it trains a
separator on (partsim_core.data.compose / synth)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest

from partsim_core import INSTRUMENTS
from partsim_core.csn.crossover import (
    DEFAULT_SWEEPS,
    CrossoverResult,
    crossing_sdr,
    difference_cell,
    part_sdr_cells,
    sweep_for,
)
from partsim_core.csn.metrics import ItemScores
from partsim_core.data import compose, synth
from partsim_core.data.slakh import group_for_program
from partsim_core.errors import PartsimError
from partsim_core.presets import SynthConfig
from partsim_core.stats import VERDICTS

# ------------------------------------------------------------------------------------------------ sweep choice


def test_sweep_for_presets_strings_and_unknown_names():
    assert sweep_for("smoke") == ("mixture", "chapter", "style-mix")
    assert len([name for name in sweep_for("smoke") if name != "mixture"]) <= 2  # smoke stays cheap
    assert sweep_for("default") == ("mixture", "earlier", "chapter", "style-mix")
    assert sweep_for("elsewhere") == DEFAULT_SWEEPS["default"]
    assert sweep_for("smoke", "chapter, mixture,chapter") == ("chapter", "mixture")
    assert sweep_for("default", "none") == ()
    assert sweep_for("default", []) == ()
    with pytest.raises(PartsimError, match="unknown crossover separator.*'spleeter'"):
        sweep_for("smoke", "mixture,spleeter")


# ----------------------------------------------------------------------------------------------- crossing point


def test_crossing_is_interpolated_between_the_points_around_the_reference():
    # (0 dB, 10 %) -> (10 dB, 30 %): the 20 % line is met half-way, at 5 dB; input order does not matter.
    assert crossing_sdr([10.0, 0.0], [30.0, 10.0], 20.0) == {"status": "crosses", "sdr": 5.0}
    # Three points, the second exactly on the line: "above" is strict, so the crossing is where it rises past it.
    assert crossing_sdr([-4.0, 2.0, 6.0], [5.0, 20.0, 40.0], 20.0) == {"status": "crosses", "sdr": 2.0}
    # (-2, 12) -> (4, 36), reference 30: -2 + 18 * 6 / 24 = 2.5.
    assert crossing_sdr([-2.0, 4.0, math.nan], [12.0, 36.0, 99.0], 30.0)["sdr"] == pytest.approx(2.5)


def test_crossing_statuses_without_a_crossing():
    assert crossing_sdr([1.0, 2.0], [50.0, 60.0], 40.0) == {"status": "baseline above", "sdr": None}
    assert crossing_sdr([1.0, 2.0], [30.0, 40.0], 40.0) == {"status": "baseline below", "sdr": None}
    assert crossing_sdr([math.nan], [50.0], 40.0) == {"status": "not computable", "sdr": None}
    assert crossing_sdr([1.0], [50.0], math.nan) == {"status": "not computable", "sdr": None}


# ------------------------------------------------------------------------------------------------- SDR, diffs


def test_part_sdr_cells_average_the_test_tracks_only():
    quality = pd.DataFrame({"split": ["test", "test", "train", "test"], "track": ["A", "B", "C", "A"],
                            "part": ["drums", "drums", "drums", "bass"], "sdr": [1.0, 3.0, 50.0, -2.0],
                            "sir": 0.0, "sar": 0.0})
    cells = part_sdr_cells(quality)
    assert cells["drums"]["value"] == pytest.approx(2.0)
    assert 1.0 <= cells["drums"]["low"] <= cells["drums"]["high"] <= 3.0
    assert cells["bass"]["value"] == pytest.approx(-2.0)
    assert all(math.isnan(cells[part]["value"]) for part in ("piano", "guitar", "others"))


def scores(values, weights, items=("A", "B")):
    """Per-item accuracies (fractions) of one seed, as Table 4.2's cells hold them."""
    return ItemScores(items=np.asarray(items), values=np.asarray([values], dtype=float),
                      weights=np.asarray(weights, dtype=float), scale=100.0)


def test_difference_is_baseline_minus_reference_pooled_over_parts():
    baseline = {"drums": scores([1.0, 0.5], [2, 2]), "bass": scores([0.0, 0.0], [1, 3])}
    reference = {"drums": scores([0.5, 0.5], [2, 2]), "bass": scores([0.25, 0.75], [1, 3])}
    # drums: items A +50, B 0 points (weights 2, 2); bass: A -25, B -75 points (weights 1, 3).
    # Pooled over the four (part, label) items: (2*50 + 2*0 + 1*(-25) + 3*(-75)) / 8 = -18.75.
    cell = difference_cell(baseline, reference)
    assert cell["value"] == pytest.approx(-18.75)
    assert cell["low"] <= cell["value"] <= cell["high"]
    only_drums = difference_cell(baseline, {"drums": reference["drums"]})
    assert only_drums["value"] == pytest.approx(25.0)  # (2*50 + 2*0) / 4
    assert difference_cell({"drums": None}, reference) is None


def test_result_json_crossings_and_frame():
    def cell(value):
        return {"value": value, "low": value - 1.0, "high": value + 1.0}

    parts = {name: {part: {"sdr": cell(sdr), "accuracy": cell(acc)} for part in INSTRUMENTS}
             for name, sdr, acc in (("mixture", -6.0, 10.0), ("chapter", 4.0, 60.0))}
    reference = {part: scores([0.5, 0.5], [1, 1]) for part in INSTRUMENTS}  # 50 % everywhere
    result = CrossoverResult(
        separators={name: {"label": name, "parts": parts[name]} for name in parts},
        scores={"mixture": {part: scores([0.1, 0.1], [1, 1]) for part in INSTRUMENTS},
                "chapter": {part: scores([0.6, 0.6], [1, 1]) for part in INSTRUMENTS}},
        reference=reference)
    # 10 % at -6 dB, 60 % at 4 dB; the 50 % line at -6 + 40 * 10 / 50 = 2 dB.
    assert result.crossings()["drums"] == {"status": "crosses", "sdr": pytest.approx(2.0)}
    payload = json.loads(json.dumps(result.to_json()))
    assert set(payload) == {"separators", "reference", "crossing", "note"}
    assert payload["reference"]["condition"] == "(i)"
    assert payload["reference"]["accuracy"]["bass"]["value"] == pytest.approx(50.0)
    chapter = payload["separators"]["chapter"]["parts"]["piano"]
    assert chapter["sdr"]["value"] == 4.0 and chapter["accuracy"]["value"] == 60.0
    assert chapter["difference"]["value"] == pytest.approx(10.0)  # 60 - 50 points on both items, no spread
    assert chapter["verdict"] == "holds"
    assert payload["separators"]["mixture"]["parts"]["piano"]["verdict"] == "does not hold"
    frame = result.frame()
    assert len(frame) == 2 * len(INSTRUMENTS) and set(frame["key"]) == {"mixture", "chapter"}
    assert VERDICTS  # the verdict names come from partsim_core.stats


# ------------------------------------------------------------------------------------------------- style mix


#: SHA-256 over the MIDI bytes and (part, style, program, kit, variant) of the default composer's first 60 songs of
#: seed 0, computed with the code before the style-mix option existed (commit 30ae4ba): the default is unchanged.
DEFAULT_COMPOSER_DIGEST = "bd9feb5f715e811b42b69181861538cce5c179f00c248ef7d7c57cd640138301"


def composer_digest(style_mix: str = "default") -> str:
    digest = hashlib.sha256()
    for index in range(60):
        song = compose.compose_song(synth.track_rng(0, index), 12.0, 16.0, style_mix=style_mix) \
            if style_mix != "default" else compose.compose_song(synth.track_rng(0, index), 12.0, 16.0)
        digest.update(compose.song_to_midi_bytes(song, list(range(len(song.layers))),
                                                 [layer.part for layer in song.layers]))
        digest.update(repr([(layer.part, layer.style, layer.program, layer.kit, layer.variant)
                            for layer in song.layers]).encode())
    return digest.hexdigest()


def test_default_style_mix_leaves_the_composer_unchanged():
    assert composer_digest() == DEFAULT_COMPOSER_DIGEST
    assert composer_digest("default") == DEFAULT_COMPOSER_DIGEST  # naming the default changes nothing either
    assert composer_digest("shifted") != DEFAULT_COMPOSER_DIGEST


def test_shifted_mix_plays_the_other_programs_of_each_family():
    shifted = compose.get_style_mix("shifted")
    # bass "walking" plays 32, 33, 35 by default: the rest of the bass family 32-39.
    assert compose.style_programs("bass", "walking", shifted) == (34, 36, 37, 38, 39)
    assert compose.style_programs("bass", "walking") == (32, 33, 35)
    # guitar "power_chords" (29, 30): the rest of 24-31.
    assert compose.style_programs("guitar", "power_chords", shifted) == (24, 25, 26, 27, 28, 31)
    # drums "rock" uses Standard, Room, Power: the other kits.
    assert compose.style_kits("rock", shifted) == ("Electronic", "TR 808", "Jazz", "Brush")
    with pytest.raises(PartsimError, match="unknown style mix 'loud'"):
        compose.get_style_mix("loud")
    layers = [layer for index in range(40)
              for layer in compose.compose_song(synth.track_rng(3, index), 8.0, 8.0, style_mix="shifted").layers]
    for layer in layers:
        if layer.is_drum:
            assert layer.kit in compose.style_kits(layer.style, shifted)
        else:
            assert layer.program in compose.style_programs(layer.part, layer.style, shifted)
            assert layer.program not in compose.style_programs(layer.part, layer.style)
            assert group_for_program(layer.program, False) == layer.part  # still read as the same part


def test_style_mix_draws_early_styles_more_often():
    rng = np.random.default_rng(0)
    names = ("a", "b", "c", "d", "e")
    draws = [compose.choose_style(names, rng, compose.get_style_mix("shifted")) for _ in range(4000)]
    # weights 0.6 ** i: P(a) = 1 / (1 + .6 + .36 + .216 + .1296) = 0.4337, P(e) = 0.0562
    assert draws.count("a") / 4000 == pytest.approx(0.4337, abs=0.03)
    assert draws.count("e") / 4000 == pytest.approx(0.0562, abs=0.015)


def test_style_mix_dataset_root_and_rendering(tmp_path, monkeypatch):
    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    assert synth.default_dataset_root("smoke", "shifted").name == "mini-slakh-smoke-shifted"
    assert synth.default_dataset_root("smoke").name == "mini-slakh-smoke"
    tiny = SynthConfig(n_train=2, n_validation=0, n_test=0, min_seconds=4.0, max_seconds=4.0, sample_rate=16000)
    default = synth.synthesize_dataset(tmp_path / "default", "smoke", jobs=1, progress=False, config=tiny)
    shifted = synth.synthesize_dataset(tmp_path / "shifted", "smoke", jobs=1, progress=False, config=tiny,
                                       style_mix="shifted")
    truth = {name: json.loads((root / synth.GROUND_TRUTH_FILE).read_text())
             for name, root in (("default", default), ("shifted", shifted))}
    assert "style_mix" not in truth["default"]["generator"]
    assert truth["shifted"]["generator"]["style_mix"] == "shifted"
    for entry in truth["shifted"]["tracks"].values():
        for part, summary in entry["parts"].items():
            if part != "drums":
                assert summary["program"] in compose.style_programs(part, summary["style"],
                                                                    compose.get_style_mix("shifted"))
    with pytest.raises(PartsimError, match="unknown style mix"):
        synth.synthesize_dataset(tmp_path / "bad", "smoke", jobs=1, progress=False, config=tiny, style_mix="x")


# ------------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_smoke_crossover_end_to_end(tmp_path, monkeypatch):
    from partsim_core.csn.run import run_chapter4
    from partsim_core.data.dataset import load_dataset

    monkeypatch.setenv("PARTSIM_CACHE", str(tmp_path / "cache"))
    data = load_dataset("smoke")
    results = run_chapter4(data, conditions=["a", "i"], seeds=1, progress=False, device="cpu")
    payload = json.loads(json.dumps(results.to_json()))
    crossover = payload["separator_crossover"]
    assert list(crossover["separators"]) == ["mixture", "chapter", "style-mix"]
    # The chapter's point is Table 4.2's row (a) itself; the reference is row (i).
    for part in INSTRUMENTS:
        assert crossover["separators"]["chapter"]["parts"][part]["accuracy"] == payload["table_4_2"]["(a)"][part]
        assert crossover["reference"]["accuracy"][part] == payload["table_4_2"]["(i)"][part]
        for entry in crossover["separators"].values():
            point = entry["parts"][part]
            assert set(point) == {"sdr", "accuracy", "difference", "verdict"}
            if point["accuracy"]["value"] is not None:
                assert 0.0 <= point["accuracy"]["value"] <= 100.0
    # The mixture "separator" returns the mix for every part: its SDR is finite and the same stems for all parts.
    assert all(crossover["separators"]["mixture"]["parts"][part]["sdr"]["value"] is not None
               for part in ("drums", "bass"))
    claims = [f for f in payload["findings"] if f["claim"].startswith("Table 4.2 crossover")]
    assert len(claims) == 3 and all(f["verdict"] in VERDICTS for f in claims)
    assert (tmp_path / "cache" / "datasets" / "mini-slakh-smoke-shifted").is_dir()
    # Without condition (a) there is no baseline and no crossover; "none" switches it off.
    assert results.separator_crossover is not None


def test_quality_curve_draws_points_intervals_and_reference():
    from partsim_core.book.viz import quality_curve

    frame = pd.DataFrame({"separator": ["mix", "chapter", "mix", "chapter"], "part": ["drums", "drums", "bass", "bass"],
                          "sdr": [-5.0, 3.0, -4.0, 2.0], "accuracy": [10.0, 40.0, 20.0, 30.0],
                          "low": [5.0, 36.0, 15.0, 25.0], "high": [15.0, 45.0, 25.0, 35.0]})
    figure = quality_curve(frame, {"drums": {"value": 30.0, "low": 25.0, "high": 35.0},
                                   "bass": {"value": math.nan, "low": math.nan, "high": math.nan}})
    markers = [trace for trace in figure.data if trace.mode == "markers"]
    assert len(markers) == 4  # two separators x two parts
    chapter_drums = next(t for t in markers if t.name == "chapter" and list(t.x) == [3.0])
    assert list(chapter_drums.error_y.array) == [5.0] and list(chapter_drums.error_y.arrayminus) == [4.0]
    assert len(figure.layout.shapes) == 2  # drums: band + line; bass's reference is not finite
    with pytest.raises(PartsimError, match="columns \\['sdr'\\] are missing"):
        quality_curve(frame.drop(columns="sdr"))


def test_cli_crossover_option(capsys):
    from partsim_core.cli import main
    from partsim_core.cli.csn import parse_crossover

    assert parse_crossover("mixture, style-mix") == ("mixture", "style-mix")
    assert parse_crossover("NONE") == ()
    with pytest.raises(SystemExit) as stop:
        main(["csn", "run", "--crossover", "mixture,demucs"])
    assert stop.value.code == 2
    assert "unknown crossover separator(s) 'demucs'" in capsys.readouterr().err


def test_every_shifted_program_has_its_general_midi_name():
    from partsim_core.data.music import program_name
    from partsim_core.data.part_patterns import STYLES

    shifted = compose.get_style_mix("shifted")
    for part, styles in STYLES.items():
        for style in styles:
            for program in compose.style_programs(part, style, shifted):
                assert program_name(program, False)
    assert program_name(93, False) == "Pad 6 (metallic)"  # outside the default generator's table
    assert program_name(33, False) == "Electric Bass (finger)" and program_name(5, True) == "Drums"
