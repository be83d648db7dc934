"""Where validation loss stops improving: the one rule that sets a preset's training length (issue 13, item 3).

A preset's epochs are not tuned on the test split: each model is trained once well past the point of interest with
validation loss recorded per epoch (the engine's ``history``, :func:`partsim_core.training.train`), and
:func:`plateau_epoch` reads off the first epoch after which validation loss stops improving. The curves and the
chosen epochs are committed in ``data/presets/<preset>_epochs.json`` (:func:`load_epoch_selection`), and a test
checks that :data:`partsim_core.presets.PRESETS` uses them.

Validation losses of a few hundred triplets are noisy, so the rule compares *best-so-far* values over a window
rather than consecutive epochs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from partsim_core.errors import PartsimError

#: Epochs after a candidate in which validation loss must not improve by more than :data:`RELATIVE_TOLERANCE`.
#: Five, not three: the default CSN's validation loss (128 fixed triplets) jumps by up to 15 % from one epoch to
#: the next, and with three epochs the rule stopped at epoch 12 of a curve that improved by another 11 % by 17.
WINDOW = 5
#: Relative improvement of the best validation loss that counts as "still improving" (1 %).
RELATIVE_TOLERANCE = 0.01


def plateau_epoch(val_losses: Sequence[float], window: int = WINDOW, rel_tol: float = RELATIVE_TOLERANCE
                  ) -> int | None:
    """The first epoch (1-based) after which validation loss stops improving, or ``None`` while it still improves.

    Epoch ``e`` is chosen when the best loss of the next ``window`` epochs is not below ``(1 - rel_tol)`` times the
    best loss of epochs ``1..e``. A curve must extend ``window`` epochs past a candidate for it to count, so a
    curve that improves up to its end gives ``None`` (train longer).

    Args:
        val_losses: validation loss of epochs 1, 2, ... (finite).
        window: epochs that must bring no real improvement.
        rel_tol: relative improvement below which the loss counts as flat.

    Raises:
        PartsimError: a non-finite loss, ``window < 1`` or ``rel_tol`` outside [0, 1).
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise PartsimError(f"window must be an integer >= 1, got {window!r}")
    if not 0.0 <= rel_tol < 1.0:
        raise PartsimError(f"rel_tol must be in [0, 1), got {rel_tol!r}")
    losses = [float(value) for value in val_losses]
    for epoch, value in enumerate(losses, start=1):
        if not math.isfinite(value):
            raise PartsimError(f"validation loss of epoch {epoch} is {value!r}; the curve must be finite")
    best = math.inf
    for epoch in range(1, len(losses) - window + 1):
        best = min(best, losses[epoch - 1])
        if min(losses[epoch: epoch + window]) >= (1.0 - rel_tol) * best:
            return epoch
    return None


def val_curve(history: Sequence[dict[str, Any]]) -> list[float]:
    """The ``val_loss`` column of an engine history (``[{"epoch", "train_loss", "val_loss", ...}]``).

    Raises:
        PartsimError: a history without validation losses.
    """
    curve = [entry.get("val_loss") for entry in history]
    if not curve or any(value is None for value in curve):
        raise PartsimError("the history has no validation loss for every epoch (train with a validation split)")
    return [float(value) for value in curve]


def load_epoch_selection(path: str | Path) -> dict[str, Any]:
    """Read a committed epoch selection (``data/presets/<preset>_epochs.json``).

    The file holds ``{"rule": {...}, "models": {name: {"val_loss": [...], "chosen": int, "preset_field": str}}}``.

    Raises:
        PartsimError: a missing or malformed file, naming it.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise PartsimError(f"epoch selection {path} not found") from None
    except (OSError, json.JSONDecodeError) as error:
        raise PartsimError(f"cannot read epoch selection {path}: {error}") from None
    models = record.get("models") if isinstance(record, dict) else None
    if not isinstance(models, dict) or not models:
        raise PartsimError(f"epoch selection {path} has no 'models' table")
    for name, entry in models.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("val_loss"), list) \
                or not isinstance(entry.get("chosen"), int):
            raise PartsimError(f"epoch selection {path}: model {name!r} needs a 'val_loss' list and a 'chosen' epoch")
    return record
