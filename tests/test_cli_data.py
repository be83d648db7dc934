"""Tests of ``partsim data check`` and ``partsim data synth``, run in-process through ``partsim_core.cli.main``."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import soundfile as sf
import yaml
from test_data_slakh import BABY_SAMPLE, REDUX_SAMPLE, band_recipe, need

from partsim_core.cli import main


def run_check(capsys, *args: str) -> tuple[int, dict]:
    code = main(["data", "check", *args])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # exactly one JSON line on stdout
    return code, json.loads(out[0])


def test_check_good_redux_sample(capsys, tmp_path):
    root = need(REDUX_SAMPLE)
    code, summary = run_check(capsys, str(root), "--json-out", str(tmp_path / "summary.json"))
    assert code == 0 and summary["problems"] == []
    assert summary["variant"] == "redux_flac"
    assert summary["tracks"] == {"train": 1, "validation": 0, "test": 0, "omitted": 0}
    # Count stems with files ourselves: stem files on disk, grouped by band.yaml's recipe.
    folder = root / "train" / "Track00001"
    metadata = yaml.safe_load((folder / "metadata.yaml").read_text())
    recipe = band_recipe()
    expected = dict.fromkeys(["drums", "bass", "piano", "guitar", "others"], 0)
    for stem_file in (folder / "stems").glob("S*.flac"):
        info = metadata["stems"][stem_file.stem]
        expected[recipe.get(128 if info["is_drum"] else info["program_num"], "others")] += 1
    assert summary["stems_per_group"] == expected
    info = sf.info(str(folder / "mix.flac"))
    assert summary["total_duration_s"] == pytest.approx(info.frames / info.samplerate, abs=1e-3)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_check_corrupted_copy_names_each_file(capsys, tmp_path):
    root = tmp_path / "redux"
    shutil.copytree(need(REDUX_SAMPLE), root)
    first = root / "train" / "Track00001"
    second = root / "train" / "Track00002"
    third = root / "test" / "Track00003"
    other_rate = root / "test" / "Track00004"
    for copy in (second, third, other_rate):
        shutil.copytree(first, copy)
    # 1. truncated flac
    truncated = first / "stems" / "S02.flac"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    # 2. rendered stem whose file is gone
    deleted = first / "stems" / "S03.flac"
    deleted.unlink()
    # 3. broken YAML
    (second / "metadata.yaml").write_text("stems: {S00: [broken\n")
    # 4. missing mix; 5. a stem at another sample rate
    (third / "mix.flac").unlink()
    sf.write(other_rate / "stems" / "S00.flac", [0.0] * 32000, 16000)
    # 6. a track folder without metadata
    (root / "test" / "Track00005" / "MIDI").mkdir(parents=True)

    code, summary = run_check(capsys, str(root))
    assert code == 1
    problems = {problem["file"]: problem["problem"] for problem in summary["problems"]}
    assert len(problems) == len(summary["problems"]) == 6, summary["problems"]
    assert "truncated" in problems[str(truncated)] or "corrupt" in problems[str(truncated)]
    assert "missing" in problems[str(deleted)]
    assert "YAML" in problems[str(second / "metadata.yaml")]
    assert "mix" in problems[str(third / "mix.flac")]
    assert "16000" in problems[str(other_rate / "stems" / "S00.flac")]
    assert "no metadata" in problems[str(root / "test" / "Track00005" / "metadata.yaml")]
    # Track00002 is unreadable; the others are counted.
    assert summary["tracks"] == {"train": 1, "validation": 0, "test": 2, "omitted": 0}


def test_check_babyslakh_reports_midi_only_track(capsys):
    code, summary = run_check(capsys, str(need(BABY_SAMPLE)))
    assert code == 1 and summary["variant"] == "babyslakh"
    assert [p["file"] for p in summary["problems"]] == [str(BABY_SAMPLE / "Track00007" / "metadata.yaml")]
    assert sum(summary["stems_per_group"].values()) == len(list((BABY_SAMPLE / "Track00001" / "stems").glob("*.wav")))


def test_check_unusable_root_exits_2(capsys, tmp_path):
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path)]) == 2  # a folder without any track
    assert main(["data", "check", str(tmp_path), "--redux-json", str(tmp_path / "no.json")]) == 2


def test_synth_calls_the_generator(capsys, tmp_path, monkeypatch):
    calls = []

    def fake_synthesize(out, preset="smoke", seed=0, jobs=None, force=False, progress=True, *, soundfont=None):
        calls.append((Path(out), preset, seed, jobs, force, soundfont))
        shutil.copytree(need(REDUX_SAMPLE), out, dirs_exist_ok=True)
        return Path(out)

    fake = types.ModuleType("partsim_core.data.synth")
    fake.synthesize_dataset = fake_synthesize
    fake.default_dataset_root = lambda preset: tmp_path / f"default-{preset}"
    monkeypatch.setitem(sys.modules, "partsim_core.data.synth", fake)

    assert main(["data", "synth", "--out", str(tmp_path / "mini"), "--seed", "3", "--jobs", "2", "--force",
                 "--soundfont", "kit.sf2"]) == 0
    assert calls[-1] == (tmp_path / "mini", "smoke", 3, 2, True, "kit.sf2")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "1 train" in out[0] and "seed 3" in out[0]

    assert main(["data", "synth", "--preset", "default"]) == 0
    assert calls[-1] == (tmp_path / "default-default", "default", 0, None, False, None)


@pytest.mark.parametrize(
    "command, options",
    [("check", ["ROOT", "--redux-json", "--json-out"]),
     ("synth", ["--preset", "--out", "--seed", "--jobs", "--force", "--soundfont"])],
)
def test_help_explains_every_option(capsys, command, options):
    with pytest.raises(SystemExit) as exited:
        main(["data", command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text
    assert text.count("default") >= 2
