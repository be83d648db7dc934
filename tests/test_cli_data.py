"""Tests of ``partsim data check`` and ``partsim data synth``, run in-process through ``partsim_core.cli.main``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from test_data_slakh import BABY_SAMPLE, REDUX_SAMPLE, band_recipe, need, write_track

from partsim_core.cli import data as cli_data
from partsim_core.cli import main


def run_check(capsys, *args: str) -> tuple[int, dict]:
    code = main(["data", "check", *args])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # exactly one JSON line on stdout
    return code, json.loads(out[0])


def test_check_good_redux_sample(capsys, tmp_path):
    root = need(REDUX_SAMPLE)
    code, summary = run_check(capsys, str(root), "--out", str(tmp_path / "summary.json"))
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
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written.pop("partsim")["command"] == "data check"
    assert written == summary


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


def nan_track(folder: Path, bad: str = "nan", where: str = "stem") -> Path:
    """A track whose stem (or mix) is a float WAV holding a NaN or inf sample."""
    audio = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 0.1
    broken = audio.copy()
    broken[4000] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[bad]
    write_track(folder, {"S00": {"program": 0, "audio": broken if where == "stem" else audio}}, extension=".wav")
    if where == "mix":
        sf.write(folder / "mix.wav", broken, 8000, subtype="FLOAT")
    else:
        sf.write(folder / "stems" / "S00.wav", broken, 8000, subtype="FLOAT")
    return folder


@pytest.mark.parametrize("bad, where", [("nan", "stem"), ("inf", "stem"), ("-inf", "mix")])
def test_check_reports_non_finite_audio(capsys, tmp_path, bad, where):
    root = tmp_path / "root"
    folder = nan_track(root / "train" / "Track00001", bad, where)
    write_track(root / "test" / "Track00002", {"S00": {"program": 33, "audio": np.full(8000, 0.1, np.float32)}})
    code, summary = run_check(capsys, str(root))
    assert code == 1
    expected = folder / ("stems/S00.wav" if where == "stem" else "mix.wav")
    assert [p["file"] for p in summary["problems"]] == [str(expected)]
    assert "non-finite" in summary["problems"][0]["problem"] and "0.500 s" in summary["problems"][0]["problem"]


def test_check_reports_tracks_shorter_than_a_segment(capsys, tmp_path):
    root = tmp_path / "root"
    write_track(root / "train" / "Track00001", {"S00": {"program": 0, "audio": np.full(8000, 0.1, np.float32)}})
    write_track(root / "train" / "Track00002", {"S00": {"program": 0, "audio": np.full(40000, 0.1, np.float32)}})
    code, summary = run_check(capsys, str(root))
    assert code == 0  # no length check unless asked
    code, summary = run_check(capsys, str(root), "--segment-seconds", "3")
    assert code == 1
    assert summary["problems"] == [{"file": str(root / "train" / "Track00001" / "mix.flac"),
                                    "problem": "track is 1.000 s long, shorter than one 3-s segment (it would give "
                                               "no segment)"}]
    for bad in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(SystemExit) as exited:
            main(["data", "check", str(root), "--segment-seconds", bad])
        assert exited.value.code == 2
    capsys.readouterr()


def test_check_out_follows_the_output_rule(capsys, tmp_path):
    root = tmp_path / "root"
    write_track(root / "train" / "Track00001", {"S00": {"program": 0, "audio": np.full(8000, 0.1, np.float32)}})
    out = tmp_path / "summary.json"
    assert run_check(capsys, str(root), "--out", str(out))[0] == 0
    first = out.read_text()
    assert main(["data", "check", str(root), "--out", str(out)]) == 2
    assert "--fresh" in capsys.readouterr().err and out.read_text() == first
    assert run_check(capsys, str(root), "--out", str(out), "--fresh")[0] == 0
    assert main(["data", "check", str(root), "--out", str(root / "summary.json")]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert not (root / "summary.json").exists()


def test_synth_calls_the_generator(capsys, tmp_path, monkeypatch):
    calls = []

    def fake_synthesize(out, preset="smoke", seed=0, jobs=None, fresh=False, progress=True, *, soundfont=None,
                        replace_other=True):
        calls.append((Path(out), preset, seed, jobs, fresh, progress, soundfont, replace_other))
        write_track(Path(out) / "train" / "Track00001", {"S00": {"program": 0, "audio": np.zeros(800, np.float32)}})
        return Path(out)

    monkeypatch.setattr(cli_data, "synthesize_dataset", fake_synthesize)
    monkeypatch.setattr(cli_data, "default_dataset_root", lambda preset: tmp_path / f"default-{preset}")

    assert main(["data", "synth", "--preset", "smoke", "--out-dir", str(tmp_path / "mini"), "--seed", "3",
                 "--jobs", "2", "--fresh", "--soundfont", "kit.sf2", "--no-progress"]) == 0
    assert calls[-1] == (tmp_path / "mini", "smoke", 3, 2, True, False, "kit.sf2", False)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "1 train" in out[0] and "seed 3" in out[0]

    assert main(["data", "synth"]) == 0  # the default preset is 'default' everywhere; the cache folder follows it
    assert calls[-1] == (tmp_path / "default-default", "default", 0, None, False, True, None, True)


def test_synth_old_flags_are_gone(capsys):
    for old in (["--out", "x"], ["--force"], ["--out-d", "x"]):
        with pytest.raises(SystemExit) as exited:
            main(["data", "synth", *old])
        assert exited.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    "command, options",
    [("check", ["ROOT", "--redux-json", "--segment-seconds", "--out", "--fresh"]),
     ("synth", ["--preset", "--out-dir", "--seed", "--jobs", "--fresh", "--soundfont", "--no-progress"])],
)
def test_help_explains_every_option(capsys, command, options):
    with pytest.raises(SystemExit) as exited:
        main(["data", command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text
    assert text.count("default") >= 2
