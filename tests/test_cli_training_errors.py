"""``partsim train ...`` resuming a checkpoint that no longer fits the model (written by an older partsim whose model
had other parameters, e.g. the CSN's removed norm-loss bias): one line ``partsim: error: ...`` naming the
checkpoint and ``--fresh``, exit status 2, and every file of the run folder left as it was; ``--fresh`` then trains.

Rows in the style of ``tests/test_cli_errors.py``: the damage done to the checkpoint, the expected exit status and
message fragments. The command runs in-process through ``partsim_core.cli.main`` with the real output-folder checks
and the real training engine; only the dataset and the chapter-3 task are replaced by the engine tests' tiny
regression task (:class:`test_training.LinearTask`), so that no data is generated.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_training import Interrupted, LinearTask, config, damage_checkpoint_weights

from partsim_core.cli import main
from partsim_core.cli import train as cli_train
from partsim_core.training import train

ARGV = ["train", "part", "--part", "drums", "--input", "ideal", "--preset", "smoke", "--device", "cpu",
        "--no-progress", "--out-dir"]

#: (row id, damage to the checkpoint's weights, expected exit status, fragments of stderr).
ROWS = [
    ("extra-parameter", "extra", 2, ["checkpoint.pt", "--fresh", "norm_bias"]),
    ("missing-parameter", "missing", 2, ["checkpoint.pt", "--fresh", "3.bias"]),
    ("other-shape", "reshaped", 2, ["checkpoint.pt", "--fresh", "0.weight"]),
]


@pytest.fixture
def tiny_part_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """``partsim train part`` without a dataset: the engine trains the tiny task into the command's folder."""
    def train_part_network(data, part, kind, *, out_dir, resume, **options):
        return train(LinearTask(), config(), out_dir, resume=resume, progress=False)

    monkeypatch.setattr(cli_train, "load_dataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(cli_train, "train_part_network", train_part_network)


@pytest.mark.parametrize(("damage", "code", "fragments"), [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_resuming_an_incompatible_checkpoint(tmp_path: Path, capsys, tiny_part_training, damage: str, code: int,
                                             fragments: list[str]) -> None:
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(LinearTask(fail_at=(1, 2)), config(), run, progress=False)  # a run killed after one epoch
    checkpoint = run / "checkpoint.pt"
    damage_checkpoint_weights(checkpoint, damage)
    before = {path.name: path.read_bytes() for path in run.iterdir()}

    assert main([*ARGV, str(run)]) == code
    err = capsys.readouterr().err
    assert err.startswith("partsim: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(checkpoint) in err and all(fragment in err for fragment in fragments), err
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before  # nothing deleted or rewritten

    # The advice works.
    assert main([*ARGV, str(run), "--fresh"]) == 0
    assert (run / "model.pt").is_file() and not checkpoint.exists()
