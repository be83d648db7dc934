"""The rule that sets a preset's epochs from validation loss (partsim_core.convergence)."""

import json

import pytest

from partsim_core.convergence import load_epoch_selection, plateau_epoch, val_curve
from partsim_core.errors import PartsimError


def test_plateau_epoch_finds_the_first_flat_window():
    # Best so far after epoch 3 is 0.5; epochs 4-6 never go below 0.495 (1 % under 0.5): epoch 3 is chosen.
    assert plateau_epoch([1.0, 0.7, 0.5, 0.499, 0.52, 0.51, 0.2], window=3, rel_tol=0.01) == 3


def test_plateau_epoch_ignores_one_noisy_bump():
    # Epoch 3 is worse than 2, but epoch 4 improves on epoch 2 by 20 %: epoch 2 is not a plateau.
    assert plateau_epoch([1.0, 0.5, 0.6, 0.4, 0.41, 0.405, 0.402], window=3, rel_tol=0.01) == 4


def test_plateau_epoch_is_none_while_still_improving():
    assert plateau_epoch([1.0, 0.9, 0.8, 0.7, 0.6], window=2) is None
    # A candidate needs `window` epochs after it.
    assert plateau_epoch([1.0, 0.5, 0.5], window=3) is None


@pytest.mark.parametrize("losses, window, rel_tol", [([1.0, float("nan")], 1, 0.01), ([1.0], 0, 0.01),
                                                     ([1.0], 1, 1.0)])
def test_plateau_epoch_rejects_bad_input(losses, window, rel_tol):
    with pytest.raises(PartsimError):
        plateau_epoch(losses, window=window, rel_tol=rel_tol)


def test_val_curve_needs_every_validation_loss():
    assert val_curve([{"epoch": 1, "val_loss": 0.5}, {"epoch": 2, "val_loss": 0.25}]) == [0.5, 0.25]
    with pytest.raises(PartsimError, match="validation loss"):
        val_curve([{"epoch": 1, "val_loss": None}])


def test_load_epoch_selection_names_a_bad_file(tmp_path):
    bad = tmp_path / "sel.json"
    bad.write_text("{not json")
    with pytest.raises(PartsimError, match="sel.json"):
        load_epoch_selection(bad)
    bad.write_text(json.dumps({"models": {"csn": {"val_loss": [1.0]}}}))
    with pytest.raises(PartsimError, match="chosen"):
        load_epoch_selection(bad)


def test_default_preset_uses_the_epochs_its_validation_curves_chose():
    from pathlib import Path

    from partsim_core.convergence import RELATIVE_TOLERANCE, WINDOW
    from partsim_core.presets import get_preset

    record = load_epoch_selection(Path(__file__).resolve().parents[1] / "data" / "presets" / "default_epochs.json")
    assert record["rule"] == {"window": WINDOW, "rel_tol": RELATIVE_TOLERANCE}
    default = get_preset("default")
    fields = {"csn.epochs": default.csn.epochs, "part_network.epochs": default.part_network.epochs}
    assert {entry["preset_field"] for entry in record["models"].values()} == set(fields)
    for name, entry in record["models"].items():
        assert plateau_epoch(entry["val_loss"]) == entry["chosen"], name
        assert fields[entry["preset_field"]] == entry["chosen"], name
    # The curves hold only for the front end and precision they were measured with: changing either in the preset
    # without measuring again fails here.
    measured = record["measured_with"]
    assert measured["amp"] == default.amp
    assert measured["frontend"] == {name: getattr(default.frontend, name)
                                    for name in ("sample_rate", "n_fft", "hop_length", "n_mels")}
