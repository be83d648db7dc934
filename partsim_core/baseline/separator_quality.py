"""The thesis's central argument, measured: how chapter 3's accuracy depends on the separator, and what leakage
carries.

The thesis prefers chapter 4's CSN because separation errors hurt this chapter's networks (3.3.3, 3.4). Our
separator is trained on the renderings it is tested on, which flatters the baseline, and track-ID rewards leakage:
a separated "drums" stem still holds traces of the track's bass and piano, which identify the track too. Two
measures make both effects visible:

* **Separator-quality curve** (:func:`separator_quality_curve`): the same part networks (trained on the chapter's
  separator) are fed the test stems of several separators of different quality - the chapter's U-Net, earlier
  U-Nets trained for fewer epochs (each its own cached run), and "no separation" (every part estimate is the mix
  itself, the worst case of leakage) - and each point pairs the part's test SDR with its track-ID accuracy. The
  networks are not retrained per separator (that would cost five networks per point); the curve therefore shows
  how the deployed networks degrade with the separator, which is the thesis's argument, at the price of a
  train/test mismatch for the non-default points.
* **Leakage track-ID** (:func:`leakage_track_id`): the separated part minus the ideal part (what the separator let
  through from the other parts, plus its artefacts) is fed to the network trained on separated input, on the same
  test segments as Table 3.2. Accuracy well above chance means the network identifies tracks from the other
  parts' leakage alone, so separated input can beat ideal input on track-ID without representing the part better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from partsim_core import INSTRUMENTS
from partsim_core.baseline.bss import separation_quality
from partsim_core.baseline.networks import evaluate_network, per_track_accuracy
from partsim_core.baseline.separated_stems import SeparatedSource, separated_source
from partsim_core.baseline.tables import mean_cell
from partsim_core.data.cache import MIX_PART, StemCache
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.slakh import Track
from partsim_core.errors import PartsimError


class MixtureSeparator:
    """"No separation": every part estimate is the mix itself (the floor of the separator-quality curve)."""

    name = "mixture"
    key = "mixture"

    def separate(self, mix: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """The mix, once per part."""
        audio = np.asarray(mix, dtype=np.float32)
        return {part: audio.copy() for part in INSTRUMENTS}


class LeakageSource:
    """A signal source whose part is the separated part minus the ideal part: what leaked in (and artefacts).

    Args:
        separated: the separated source.
        ideal: the stem cache of the ideal parts (same sample rate).
    """

    def __init__(self, separated: SeparatedSource, ideal: StemCache) -> None:
        if separated.sample_rate != ideal.sample_rate:
            raise PartsimError(f"separated ({separated.sample_rate} Hz) and ideal ({ideal.sample_rate} Hz) sources "
                               "differ in sample rate")
        self.separated = separated
        self.ideal = ideal
        self.sample_rate = ideal.sample_rate
        self.key = f"leakage-{separated.key}"

    def get(self, track: Track, part: str) -> np.ndarray:
        """``separated - ideal`` for a part (float32), the mix for ``"mix"``."""
        if part == MIX_PART:
            return self.ideal.get(track, MIX_PART)
        return (np.asarray(self.separated.get(track, part), dtype=np.float32)
                - np.asarray(self.ideal.get(track, part), dtype=np.float32))


def default_curve_epochs(separator_epochs: int) -> list[int]:
    """Epochs of the earlier U-Nets on the curve: a third of the preset's (none when that is the preset's)."""
    earlier = max(1, separator_epochs // 3)
    return [earlier] if earlier < separator_epochs else []


def _per_track_matrix(networks: Sequence[torch.nn.Module], data: DatasetHandle, part: str, signal: Any,
                      track_ids: list[str], device: str) -> tuple[np.ndarray, np.ndarray]:
    rows, weights = [], np.zeros(len(track_ids))
    for model in networks:
        evaluation = evaluate_network(model, data, part, signal, "separated", device=device)
        accuracy, weights = per_track_accuracy(evaluation, track_ids)
        rows.append(accuracy)
    return np.vstack(rows), weights


def separator_quality_curve(data: DatasetHandle, chapter_source: SeparatedSource,
                            separated_networks: dict[str, Sequence[torch.nn.Module]], epochs: Sequence[int] = (),
                            device: str = "cpu", seed: int = 0, progress: bool = False,
                            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Track-ID accuracy of the separated-input networks against the test SDR of several separators.

    Args:
        data: the chapter's dataset.
        chapter_source: the chapter's separated source (the curve's top point).
        separated_networks: part -> the separated-input network of every seed.
        epochs: epochs of earlier U-Nets to add (only with the U-Net backend; see :func:`default_curve_epochs`).
        device: torch device.
        seed: seed of the separators' training and of the resampling.
        progress: progress bars.
        log: one-line progress messages.

    Returns:
        ``{"points": [{"separator", "part", "sdr_test": cell, "accuracy": cell}], "per_track": ...}``: one point per
        separator and part (separators from worst to the chapter's), and ``per_track`` (separator -> part ->
        ``(seeds, tracks)`` accuracies and ``(tracks,)`` segment counts) for paired findings.
    """
    say = log or (lambda message: None)
    sources: list[tuple[str, SeparatedSource]] = [("mixture (no separation)",
                                                   SeparatedSource(MixtureSeparator(), data.cache))]
    if getattr(chapter_source.separator, "name", "") == "unet":
        for count in epochs:
            sources.append((f"U-Net, {count} epoch(s)", separated_source(data, "unet", device=device, epochs=count,
                                                                          seed=seed, progress=progress)))
    sources.append((f"{chapter_source.separator.name} (chapter)", chapter_source))
    track_ids = [track.track_id for track in data.test_tracks]
    points, per_track = [], {}
    for name, source in sources:
        source.separate_tracks(data.test_tracks, progress=progress)
        quality = separation_quality(data, source, train_tracks=0, progress=progress)
        per_track[name] = {}
        for part in INSTRUMENTS:
            if part not in separated_networks:
                continue
            sdr = quality[quality["part"] == part]["sdr"].to_numpy(dtype=float)
            accuracies, weights = _per_track_matrix(separated_networks[part], data, part, source, track_ids, device)
            per_track[name][part] = (accuracies, weights)
            points.append({"separator": name, "part": part, "sdr_test": mean_cell(sdr, seed=seed),
                           "accuracy": mean_cell(accuracies, weights, seed=seed)})
        say(f"chapter 3: separator-quality curve: {name} measured")
    return {"points": points, "per_track": per_track}


def leakage_track_id(data: DatasetHandle, source: SeparatedSource,
                     separated_networks: dict[str, Sequence[torch.nn.Module]], device: str = "cpu",
                     seed: int = 0) -> dict[str, Any]:
    """Track-ID accuracy of each separated-input network fed only the leakage (separated minus ideal part).

    Returns:
        ``{"accuracy": {part: cell}, "chance": %, "per_track": {part: (accuracies, weights)}}``; empty for the
        oracle separator (no leakage).
    """
    if source.is_oracle:
        return {"accuracy": {}, "chance": None, "per_track": {}}
    leakage = LeakageSource(source, data.cache)
    track_ids = [track.track_id for track in data.test_tracks]
    accuracy, per_track = {}, {}
    for part, networks in separated_networks.items():
        accuracies, weights = _per_track_matrix(networks, data, part, leakage, track_ids, device)
        per_track[part] = (accuracies, weights)
        accuracy[part] = mean_cell(accuracies, weights, seed=seed)
    return {"accuracy": accuracy, "chance": chance_accuracy(len(track_ids)), "per_track": per_track}


def chance_accuracy(n_tracks: int) -> float:
    """Track-ID accuracy (%) of guessing one of ``n_tracks`` test tracks at random."""
    return 100.0 / n_tracks if n_tracks else float("nan")
