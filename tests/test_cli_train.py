"""``partsim train ...`` and ``partsim baseline run``, in-process through ``partsim_core.cli.main``, on a tiny
synthetic Slakh-format root (a few seconds of sines and noise per track)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_data_slakh import write_track

from partsim_core.cli import build_parser, main

RATE = 16000  # the smoke preset's front-end rate: no resampling


def _track_audio(number: int, seconds: float = 8.0) -> dict[str, dict]:
    """Five parts (noise-burst drums, sines for the others) whose pitch/rhythm depend on the track number."""
    rng = np.random.default_rng(number)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = (np.sin(2 * np.pi * (1.0 + 0.5 * number) * t) > 0).astype(np.float32)
    drums = 0.3 * rng.standard_normal(t.size).astype(np.float32) * envelope
    bass = 0.3 * np.sin(2 * np.pi * (55.0 + 12.0 * number) * t).astype(np.float32)
    tone = [0.2 * np.sin(2 * np.pi * (220.0 * (k + 1) + 20.0 * number) * t).astype(np.float32) for k in range(3)]
    return {"S00": {"program": 0, "is_drum": True, "audio": drums},
            "S01": {"program": 33, "audio": bass},
            "S02": {"program": 0, "audio": tone[0]},  # piano
            "S03": {"program": 25, "audio": tone[1]},  # guitar
            "S04": {"program": 48, "audio": tone[2]}}  # strings: others


def make_root(root: Path, splits: dict[str, int]) -> Path:
    """A Slakh redux-layout root with ``splits[name]`` tracks in each split folder."""
    number = 1
    for split, count in splits.items():
        for _ in range(count):
            write_track(root / split / f"Track{number:05d}", _track_audio(number), sample_rate=RATE)
            number += 1
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache root, so that nothing is reused from (or written to) the repository's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PARTSIM_CACHE", str(folder))
    return folder


@pytest.fixture()
def root(tmp_path) -> Path:
    return make_root(tmp_path / "slakh", {"train": 3, "validation": 1, "test": 2})


def run_json(capsys, *args: str) -> tuple[int, dict | None, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (json.loads(lines[-1]) if code == 0 and lines else None), captured.err


def test_train_part_trains_reuses_and_fresh_retrains(capsys, cache, root):
    base = ["train", "part", "--part", "bass", "--input", "ideal", "--preset", "smoke", "--data-root", str(root),
            "--device", "cpu", "--no-progress"]
    code, first, _ = run_json(capsys, *base)
    assert code == 0 and first["reused"] is False and first["epochs_trained"] == 1
    out_dir = Path(first["out_dir"])
    assert out_dir.parent == cache / "models" / "part_network" and out_dir.name.startswith("part-bass-ideal-")
    assert {"model.pt", "config.json", "history.json"} <= {path.name for path in out_dir.iterdir()}
    config = json.loads((out_dir / "config.json").read_text())
    assert config["seed"] == 0 and config["config"]["data"]["part"] == "bass"
    assert config["config"]["data"]["input"] == "ideal"
    code, second, _ = run_json(capsys, *base)
    assert code == 0 and second["reused"] is True and second["out_dir"] == first["out_dir"]
    assert first["history"] and set(first["history"][0]) == {"epoch", "train_loss", "val_loss"}
    code, fresh, _ = run_json(capsys, *base, "--fresh")
    assert code == 0 and fresh["reused"] is False and fresh["out_dir"] == first["out_dir"]


def test_checkpoint_of_another_config_is_refused(capsys, cache, root, tmp_path):
    out = tmp_path / "run"
    base = ["train", "part", "--part", "drums", "--preset", "smoke", "--data-root", str(root), "--device", "cpu",
            "--no-progress", "--out-dir", str(out)]
    code, first, _ = run_json(capsys, *base)
    assert code == 0 and first["out_dir"] == str(out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    # Another config (2 epochs) into the same folder: refused, naming both keys; nothing changes.
    code, _, err = run_json(capsys, *base, "--epochs", "2")
    assert code == 2
    assert "another model or config" in err and err.count("key") >= 2
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    # --fresh starts over in that folder with the new config.
    code, fresh, _ = run_json(capsys, *base, "--epochs", "2", "--fresh")
    assert code == 0 and fresh["reused"] is False and fresh["epochs_trained"] == 2


def test_data_root_without_test_split_is_refused(capsys, cache, tmp_path):
    partial = make_root(tmp_path / "partial", {"train": 2, "validation": 1})
    code, _, err = run_json(capsys, "train", "part", "--part", "bass", "--preset", "smoke", "--data-root",
                            str(partial), "--no-progress")
    assert code == 2 and "'test'" in err and str(partial) in err
    assert not (cache / "models").exists()


def test_bad_backend_part_and_preset(capsys, cache, root):
    code, _, err = run_json(capsys, "train", "part", "--part", "bass", "--input", "separated", "--backend",
                            "magic", "--preset", "smoke", "--data-root", str(root))
    assert code == 2 and "magic" in err and "unet" in err
    code, _, err = run_json(capsys, "train", "part", "--part", "mix", "--input", "separated", "--preset", "smoke",
                            "--data-root", str(root))
    assert code == 2 and "mix" in err
    code, _, err = run_json(capsys, "baseline", "run", "--backend", "magic", "--preset", "smoke", "--data-root",
                            str(root))
    assert code == 2 and "magic" in err
    assert not (cache / "models").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "part", "--part", "bass", "--preset", "huge"])
    assert exit_info.value.code == 2
    assert "huge" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "part", "--part", "vocals", "--preset", "smoke"])
    assert exit_info.value.code == 2


def test_baseline_out_must_be_a_file_and_is_not_overwritten(capsys, cache, root, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    code, _, err = run_json(capsys, "baseline", "run", "--preset", "smoke", "--data-root", str(root), "--out",
                            str(folder))
    assert code == 2 and "folder" in err
    foreign = folder / "notes.json"
    foreign.write_text("{}")
    code, _, err = run_json(capsys, "baseline", "run", "--preset", "smoke", "--data-root", str(root), "--out",
                            str(foreign), "--fresh")
    assert code == 2 and "not written by partsim" in err and foreign.read_text() == "{}"
    assert not (cache / "models").exists()


def test_train_part_seeds_and_separator_seed_epochs(capsys, cache, root, tmp_path):
    code = main(["train", "part", "--part", "bass", "--preset", "smoke", "--data-root", str(root), "--device", "cpu",
                 "--no-progress", "--seeds", "2", "--seed", "3", "--out-dir", str(tmp_path / "runs")])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == 0 and [line["seed"] for line in lines] == [3, 4]
    assert [Path(line["out_dir"]).name for line in lines] == ["seed-3", "seed-4"]
    assert json.loads((tmp_path / "runs" / "seed-4" / "config.json").read_text())["seed"] == 4
    code, first, _ = run_json(capsys, "train", "separator", "--preset", "smoke", "--data-root", str(root),
                              "--device", "cpu", "--no-progress", "--seed", "2", "--epochs", "2")
    assert code == 0 and first["epochs_trained"] == 2 and first["seed"] == 2 and len(first["history"]) == 2
    assert json.loads((Path(first["out_dir"]) / "config.json").read_text())["seed"] == 2


def test_data_root_that_is_not_a_folder(capsys, cache, tmp_path):
    code, _, err = run_json(capsys, "train", "separator", "--preset", "smoke", "--data-root",
                            str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err


def _help(parser, *names):
    """Help text of the sub-parser reached by ``names``."""
    for name in names:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("path", [("train", "separator"), ("train", "part"), ("baseline", "run")])
def test_help_explains_every_option(path):
    parser = _help(build_parser(), *path)
    for action in parser._actions:
        if action.option_strings:
            assert action.help and len(action.help) > 10, f"{path}: {action.option_strings} has no help"
    text = parser.format_help()
    assert "--preset" in text and "--device" in text


def test_baseline_run_writes_the_result_json(capsys, cache, root, tmp_path):
    out = tmp_path / "results" / "ch3.json"
    code = main(["baseline", "run", "--preset", "smoke", "--data-root", str(root), "--backend", "oracle",
                 "--device", "cpu", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "Table 3.2" in printed and "Table 3.1" in printed
    result = json.loads(out.read_text())
    assert result["preset"] == "smoke" and result["backend"] == "oracle" and result["seeds"] == [0]
    assert result["n_tracks"] == {"train": 3, "validation": 1, "test": 2, "test_before_filter": 2,
                                  "train_separation_metrics": 3}
    rows = result["table_3_2"]
    assert set(rows) == {"baseline", "proposed", "proposed (ideal)"}
    for part in ("drums", "bass", "piano", "guitar", "others"):
        # Oracle separation: the separated networks see the ideal stems, with the same seed.
        assert rows["proposed"][part] == rows["proposed (ideal)"][part]
        assert 0 <= rows["proposed"][part]["low"] <= rows["proposed"][part]["value"] <= 100
    assert set(result["table_3_1"]["drums"]) == {"sdr_train", "sdr_test", "sir_train", "sir_test", "sar_train",
                                                 "sar_test"}
    assert isinstance(result["findings"], list) and "separator_quality_curve" in result
    assert len(result["networks"]) == 11 and not any(network["reused"] for network in result["networks"])
    assert [name for name in result["reused"]][-1] == "track-mix"
    # The same --out again is refused without --fresh, replaced with it.
    assert main(["baseline", "run", "--preset", "smoke", "--data-root", str(root), "--backend", "oracle",
                 "--device", "cpu", "--no-progress", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_train_separator_trains_one_run_per_seed(capsys, cache, root):
    code = main(["train", "separator", "--preset", "smoke", "--data-root", str(root), "--device", "cpu",
                 "--no-progress", "--seed", "1", "--seeds", "2", "--epochs", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == 0 and [line["seed"] for line in lines] == [1, 2]
    assert len({line["out_dir"] for line in lines}) == 2 and not any(line["reused"] for line in lines)
    assert [json.loads((Path(line["out_dir"]) / "config.json").read_text())["seed"] for line in lines] == [1, 2]


@pytest.mark.parametrize("command", [["separator"], ["part", "--part", "bass"], ["csn", "--condition", "i"],
                                     ["mixquery-head", "--out-dir", "heads"], ["all"]])
def test_every_training_command_takes_seeds_and_refuses_zero(capsys, cache, command):
    assert build_parser().parse_args(["train", *command, "--seeds", "3"]).seeds == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *command, "--preset", "smoke", "--seeds", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and "'0'" in err
    assert not cache.exists()
