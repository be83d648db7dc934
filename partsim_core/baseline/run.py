"""Chapter 3: part-level similarity from source-separated stems (the baseline of thesis chapter 3 and 4.4.1).

One :class:`~partsim_core.models.PartCNN` per instrument is trained with the triplet loss on that instrument's
signal (:class:`~partsim_core.baseline.triplets.TripletTask`, thesis 3.2.2 / 3.3.1) and evaluated by kNN track-ID
prediction on the test set (:mod:`partsim_core.knn`, thesis 3.3.2). Three kinds of input:

* ``ideal`` - the stems before mixing ("proposed (ideal)" row of Table 3.2);
* ``separated`` - the stems a separator estimates from the mix ("proposed" row), by default our U-Net
  (:mod:`partsim_core.baseline.separation`), trained on the train split when not cached;
* the mix itself for the track-level network ("baseline" row, Table 3.2's "music track" column).

Choices made here, documented because the thesis leaves them open:

* **Silence of test segments** is judged on the *ideal* stem for both ideal and separated input, so that both rows
  of Table 3.2 are measured on exactly the same segments (a separator leaks other instruments into a silent part,
  which would otherwise add segments to the separated test set only). The track-level network's segments are the
  non-silent segments of the mix.
* **Training triplets** of separated input are sampled with the same rule, silence judged on the ideal stem too:
  anchors are the first non-silent segments of the part (which the separated signal may not know in practice; the
  thesis does not say, and this keeps ideal and separated training sets aligned segment for segment).
* **Test set**: the test split after the 10 % filter (:func:`~partsim_core.data.segments.filter_test_tracks`),
  3-s segments without overlap; every segment is predicted from all other test segments of the same part.
* **Training tracks**: the first ``n_train_tracks`` of the train split (thesis: 1,200 of 1,289); the validation
  split gives the validation loss for early stopping.
* **Separation quality** (Table 3.1): SDR/SIR/SAR per part and track with ``fast_bss_eval``, averaged over the
  tracks where the reference part is not silent, on the first :data:`METRIC_TRAIN_TRACKS` training tracks and
  on the filtered test tracks.

Every trained artefact goes through :func:`partsim_core.training.train` and is reused from the cache when its
config key is unchanged, so a second run trains nothing.

Used by: ``notebooks/ch3_separation_baseline.py`` and the ``partsim train`` / ``partsim baseline`` commands.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import MIX_PART, stable_hash
from partsim_core.data.dataset import DatasetHandle, load_dataset
from partsim_core.errors import PartsimError
from partsim_core.presets import get_preset

if TYPE_CHECKING:
    from partsim_core.training import TrainConfig, TrainResult

#: Inputs of a part network: ideal stems or separated stems.
INPUTS: tuple[str, ...] = ("ideal", "separated")

#: Parts a network can be trained on: the five instruments and the mix (track-level baseline).
NETWORK_PARTS: tuple[str, ...] = (*INSTRUMENTS, MIX_PART)

#: Row labels of thesis Table 3.2 (``load_thesis_table("3.2")``).
TABLE_3_2_ROWS: dict[str, str] = {"mix": "baseline", "separated": "proposed", "ideal": "proposed (ideal)"}

#: Columns of thesis Table 3.1 (``load_thesis_table("3.1")``).
TABLE_3_1_COLUMNS: tuple[str, ...] = ("sdr_train", "sdr_test", "sir_train", "sir_test", "sar_train", "sar_test")

#: Artefact kind (folder under ``cache_root()/models``) of the part networks.
PART_NETWORK_KIND = "part_network"

#: Epochs without a validation improvement before a part network stops early (the thesis trains 200 epochs and
#: does not mention early stopping; this only cuts runs whose validation loss has clearly stopped improving).
EARLY_STOPPING_PATIENCE = 10

#: Training tracks whose separation quality is measured for Table 3.1's "train" columns (the first ones of the
#: split; the thesis measured every training track). BSS Eval costs about as much as training a part network per
#: 30 tracks on 2 CPU cores, and 30 tracks already give a stable mean; ``run_chapter3(metric_train_tracks=None)``
#: measures all of them.
METRIC_TRAIN_TRACKS = 30


def check_backend(backend: str) -> str:
    """Validate a separator backend name before any work.

    Raises:
        PartsimError: ``backend`` is not one of ``separation.BACKENDS``.
    """
    from partsim_core.baseline.separation import BACKENDS

    if backend not in BACKENDS:
        raise PartsimError(f"unknown separator backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return backend


def separated_source(data: DatasetHandle, backend: str = "unet", data_root: str | os.PathLike = "",
                     device: str = "auto", **options: Any) -> Any:
    """The stems estimated by ``backend`` for every track, as a signal source (separated once, then cached).

    With ``backend="unet"`` our separator is trained on the train split first when it is not cached. The source's
    ``key`` (the separator's) names its cached outputs and enters the artefact key of every network trained on it.

    Used by: :func:`run_chapter3` and :func:`train_part_network`.
    """
    from partsim_core.baseline.separation import SeparatedSource, get_separator

    check_backend(backend)
    separator = get_separator(backend, data.preset.name, data_root=data_root, device=device, **options)
    return SeparatedSource(separator, data.cache)


# --------------------------------------------------------------------------------------------------------------
# Training one network
# --------------------------------------------------------------------------------------------------------------


def run_name(part: str, input_kind: str) -> str:
    """Name of a chapter-3 network: ``part-drums-ideal``, ``part-bass-separated``, ``track-mix``."""
    return "track-mix" if part == MIX_PART else f"part-{part}-{input_kind}"


def _check_network(part: str, input_kind: str) -> None:
    if part not in NETWORK_PARTS:
        raise PartsimError(f"unknown part {part!r}; choose one of: {', '.join(NETWORK_PARTS)}")
    if input_kind not in INPUTS:
        raise PartsimError(f"unknown input {input_kind!r}; choose one of: {', '.join(INPUTS)}")
    if part == MIX_PART and input_kind != "ideal":
        raise PartsimError("part 'mix' (the track-level baseline) is trained on the mix itself; input "
                           f"{input_kind!r} applies only to the instrument parts ({', '.join(INSTRUMENTS)})")


def part_network_setup(data: DatasetHandle, part: str, input_kind: str = "ideal", source: Any = None,
                       epochs: int | None = None, device: str = "auto", seed: int = 0,
                       num_workers: int = 0) -> tuple[Any, TrainConfig]:
    """The :class:`~partsim_core.baseline.triplets.TripletTask` and :class:`~partsim_core.training.TrainConfig` of one network.

    Used by: :func:`train_part_network`; tests.

    Args:
        data: the chapter's dataset.
        part: one of :data:`NETWORK_PARTS`.
        input_kind: ``"ideal"`` or ``"separated"`` (then ``source`` is the separated signal source).
        source: signal source of ``separated`` input; ignored for ideal input (the stem cache).
        epochs: epochs (``None`` = the preset's ``part_network.epochs``).
        device: torch device of the run.
        seed: seed of the run (sampling and initialisation).
        num_workers: DataLoader workers of the engine.
    """
    from partsim_core.baseline.triplets import TripletTask
    from partsim_core.training import TrainConfig

    _check_network(part, input_kind)
    settings = data.preset
    network = settings.part_network
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise PartsimError(f"epochs must be a positive integer, got {epochs!r}")
    if input_kind == "separated":
        if source is None:
            raise PartsimError("separated input needs the separated signal source (see separated_source)")
        train_source, key_of_source = source, getattr(source, "key", None)
    else:
        train_source, key_of_source = data.cache, "ideal"
    validation = (train_source, data.validation_tracks) if data.validation_tracks else None

    def make_task(validation_split: tuple | None) -> Any:
        # Silence is judged on the ideal stems for separated input too (see the module docstring).
        return TripletTask(train_source, data.train_tracks, part, settings.frontend, network, seed,
                           validation=validation_split, seconds=settings.segment_seconds,
                           threshold=settings.silence_threshold, silence_source=data.cache,
                           validation_silence_source=data.cache)

    try:
        task = make_task(validation)
    except PartsimError:
        if validation is None:
            raise
        # The validation split may be too small to form triplets of this part (fewer than two tracks playing
        # it): train without validation (and without early stopping) rather than fail. Training-data problems
        # raise again here.
        task, validation = make_task(None), None
    steps = task.steps_per_epoch
    config = TrainConfig(
        run_name=run_name(part, input_kind),
        seed=seed,
        epochs=epochs or network.epochs,
        steps_per_epoch=steps,
        batch_size=network.batch_size,
        lr=network.lr,
        early_stopping_patience=EARLY_STOPPING_PATIENCE if validation is not None else None,
        device=device,
        num_workers=num_workers,
        model={"architecture": "PartCNN", "n_mels": settings.frontend.n_mels, "width": network.width,
               "embedding_dim": network.embedding_dim},
        data={
            "part": part,
            "input": input_kind,
            "source": str(key_of_source),
            "train": data.fingerprint(data.train_tracks),
            "validation": data.fingerprint(data.validation_tracks) if validation is not None else None,
            "frontend": dataclasses.asdict(settings.frontend),
            "segment_seconds": settings.segment_seconds,
            "silence_threshold": settings.silence_threshold,
            "anchors_per_track": network.anchors_per_track,
            "margin": network.margin,
        },
    )
    return task, config


def train_part_network(
    preset: str,
    part: str,
    input_kind: str = "ideal",
    backend: str = "unet",
    data_root: str | os.PathLike = "",
    epochs: int | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    data: DatasetHandle | None = None,
    source: Any = None,
) -> TrainResult:
    """Train (or reuse) one chapter-3 network: ``part`` on ideal or separated input, or the mix network.

    Used by: ``partsim train part`` and :func:`run_chapter3`.

    Args:
        preset: ``smoke``, ``default`` or ``paper``.
        part: one of :data:`NETWORK_PARTS` (``mix`` = the track-level baseline).
        input_kind: ``"ideal"`` or ``"separated"``.
        backend: separator backend for separated input (default: our U-Net).
        data_root: a Slakh-format folder, or ``""`` for the preset's embedded dataset.
        epochs: ``None`` = the preset's.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        resume: continue from the last checkpoint (default); ``False`` discards checkpoint and model first.
        progress: progress bars.
        out_dir: artefact folder (default: ``cache_root()/models/part_network/<run>-<key>``).
        seed: seed of the run.
        data: an already loaded :class:`DatasetHandle` (saves re-reading the dataset).
        source: an already built separated source (for ``separated`` input).

    Raises:
        PartsimError: unknown part/input/backend/preset, a data root without the needed splits, or a checkpoint in
            ``out_dir`` from another config (with ``resume``).
    """
    from partsim_core.training import train

    _check_network(part, input_kind)
    if input_kind == "separated":
        check_backend(backend)
    data = data or load_dataset(preset, data_root, progress=progress)
    if input_kind == "separated" and source is None:
        source = separated_source(data, backend, data_root=data_root, device=device)
    task, config = part_network_setup(data, part, input_kind, source=source, epochs=epochs, device=device,
                                      seed=seed)
    return train(task, config, Path(out_dir) if out_dir is not None else None, kind=PART_NETWORK_KIND,
                 resume=resume, progress=progress)


# --------------------------------------------------------------------------------------------------------------
# Evaluation and the whole chapter
# --------------------------------------------------------------------------------------------------------------


@dataclass
class NetworkEvaluation:
    """kNN track-ID accuracy of one network on the test set, with the embeddings behind it (for t-SNE)."""

    part: str
    input: str
    #: Percentage of test segments whose track ID the 5 nearest other segments predict (NaN: < 2 segments).
    accuracy: float
    #: Track ID of every test segment (same order as ``embeddings``).
    track_ids: np.ndarray
    #: Start sample of every test segment.
    starts: np.ndarray
    embeddings: np.ndarray
    reused: bool
    train_seconds: float
    history: list[dict] = field(default_factory=list)

    @property
    def n_segments(self) -> int:
        """Test segments evaluated."""
        return int(len(self.track_ids))

    @property
    def n_tracks(self) -> int:
        """Test tracks with at least one evaluated segment."""
        return int(len(set(self.track_ids.tolist())))


def evaluate_network(model: Any, data: DatasetHandle, part: str, input_kind: str, source: Any = None,
                     device: str = "cpu") -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """kNN track-ID accuracy (%) of ``model`` on the filtered test set's non-overlapping non-silent segments.

    Silence is judged on the ideal stem for ideal and separated input alike (on the mix for the mix network), so
    both rows of Table 3.2 use the same segments.

    Used by: :func:`run_chapter3`.

    Returns:
        ``(accuracy %, track id per segment, start per segment, embeddings)``.
    """
    from partsim_core.embed import embed
    from partsim_core.knn import knn_accuracy
    from partsim_core.data.segments import SegmentIndex

    settings = data.preset
    signal = source if input_kind == "separated" else data.cache
    if part != MIX_PART and not any(part in track.stems_by_group() for track in data.test_tracks):
        # No test track has this part at all: nothing to predict.
        return math.nan, np.zeros(0, dtype=str), np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    index = SegmentIndex(signal, data.test_tracks, part, settings.segment_seconds, overlap=False,
                         threshold=settings.silence_threshold, silence_source=data.cache)
    refs = index.refs()
    track_ids = np.asarray(index.track_ids, dtype=object)[refs[:, 0]].astype(str) if len(refs) else np.zeros(
        0, dtype=str)
    starts = refs[:, 1].copy() if len(refs) else np.zeros(0, dtype=np.int64)
    tracks_by_id = {track.track_id: track for track in data.test_tracks}
    vectors = embed(model, signal, tracks_by_id, index, settings.frontend, device=device)
    accuracy = 100.0 * knn_accuracy(vectors, track_ids) if len(track_ids) >= 2 else math.nan
    return accuracy, track_ids, starts, vectors


@dataclass
class Chapter3Results:
    """Everything chapter 3 computes: Tables 3.1 and 3.2 (thesis layout, all five parts + mix), embeddings,
    separation metrics per track, timings, and which artefacts were reused."""

    preset: str
    backend: str
    data_root: str
    epochs: int
    #: Rows drums..others, columns :data:`TABLE_3_1_COLUMNS` (dB, mean over tracks with a non-silent reference).
    table_3_1: pd.DataFrame
    #: Rows baseline / proposed / proposed (ideal), columns mix + the five parts (%).
    table_3_2: pd.DataFrame
    #: One row per (split, track, part): sdr, sir, sar.
    separation: pd.DataFrame
    #: ``(input, part) -> NetworkEvaluation`` with input ``ideal`` / ``separated`` / ``mix`` (part ``mix``).
    evaluations: dict[tuple[str, str], NetworkEvaluation]
    #: Wall-clock seconds per step (``data``, ``separator``, ``separate``, ``networks``, ``metrics``, ``total``).
    timings: dict[str, float]
    #: Run name -> whether its trained artefact was reused from the cache (no training).
    reused: dict[str, bool]
    n_tracks: dict[str, int]
    #: Objects for the notebook (not serialised): the dataset and the separated source.
    data: DatasetHandle | None = field(default=None, repr=False)
    separated: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (tables, accuracies, segment counts, timings, reuse; no embeddings; NaN -> null)."""
        return {
            "chapter": 3,
            "preset": self.preset,
            "backend": self.backend,
            "data_root": self.data_root,
            "epochs": self.epochs,
            "n_tracks": self.n_tracks,
            "table_3_1": _frame_json(self.table_3_1),
            "table_3_2": _frame_json(self.table_3_2),
            "networks": [
                {"run": run_name(part, "ideal" if kind == "mix" else kind), "part": part, "input": kind,
                 "accuracy": _number(result.accuracy), "test_segments": result.n_segments,
                 "test_tracks": result.n_tracks, "reused": result.reused,
                 "train_seconds": round(result.train_seconds, 2),
                 "epochs_trained": len(result.history),
                 "final_train_loss": _number(result.history[-1]["train_loss"]) if result.history else None,
                 "final_val_loss": _number(result.history[-1].get("val_loss")) if result.history else None}
                for (kind, part), result in self.evaluations.items()
            ],
            "timings": {name: round(value, 2) for name, value in self.timings.items()},
            "reused": self.reused,
        }

    def accuracy_gap(self) -> pd.DataFrame:
        """Per part: ideal and separated accuracy, their gap (ideal - separated) and the test SDR/SIR/SAR.

        The thesis's finding is that the gap grows as separation quality drops; the notebook states from this
        frame whether our data show it. Used by: ``notebooks/ch3_separation_baseline.py``.
        """
        rows = []
        for part in INSTRUMENTS:
            ideal = self.table_3_2.at[TABLE_3_2_ROWS["ideal"], part]
            separated = self.table_3_2.at[TABLE_3_2_ROWS["separated"], part]
            rows.append({"part": part, "ideal": ideal, "separated": separated, "gap": ideal - separated,
                         "sdr_test": self.table_3_1.at[part, "sdr_test"],
                         "sir_test": self.table_3_1.at[part, "sir_test"],
                         "sar_test": self.table_3_1.at[part, "sar_test"]})
        return pd.DataFrame(rows).set_index("part")


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _frame_json(frame: pd.DataFrame) -> dict[str, Any]:
    """``{"columns": [...], "rows": {label: {column: value}}}`` with NaN as null."""
    return {"columns": [str(column) for column in frame.columns],
            "rows": {str(label): {str(column): _number(frame.at[label, column]) for column in frame.columns}
                     for label in frame.index}}


def separation_quality(data: DatasetHandle, source: Any, train_tracks: int | None = METRIC_TRAIN_TRACKS,
                       progress: bool = True) -> pd.DataFrame:
    """SDR/SIR/SAR (fast_bss_eval) of the separated stems of training tracks and of every kept test track.

    The per-track table of each split is cached as JSON under ``cache_root()/results/ch3_separation/``, keyed by
    the separator's key, the tracks' audio and the silence threshold, so a second run does not recompute it.

    Used by: :func:`run_chapter3` (Table 3.1).

    Args:
        data: the chapter's dataset.
        source: the separated signal source (with a ``key``).
        train_tracks: how many training tracks (the first ones) are measured; ``None`` = all of them.
        progress: progress bars.

    Returns:
        One row per (split, track, part) with columns ``split, track, part, sdr, sir, sar``; parts whose reference
        is silent throughout a track are left out (see :func:`~partsim_core.baseline.separation.separation_metrics`).
    """
    from partsim_core.data.cache import atomic_write_json, cache_root
    from partsim_core.baseline.separation import evaluate_separation

    columns = ["split", "track", "part", "sdr", "sir", "sar"]
    measured = data.train_tracks if train_tracks is None else data.train_tracks[:train_tracks]
    frames = []
    for split, tracks in (("train", measured), ("test", data.test_tracks)):
        key = stable_hash({"source": str(getattr(source, "key", type(source).__name__)),
                           "tracks": [data.cache.key(track, MIX_PART) for track in tracks],
                           "threshold": data.preset.silence_threshold, "format": 1})
        path = cache_root() / "results" / "ch3_separation" / f"{split}-{key}.json"
        if path.is_file():
            frame = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")), columns=columns)
        else:
            per_track = evaluate_separation(source, data.cache, tracks,
                                            silence_threshold=data.preset.silence_threshold, progress=progress)
            frame = per_track.rename(columns={"track_id": "track"}).assign(split=split)[columns]
            records = [{name: (_number(value) if name in ("sdr", "sir", "sar") else value)
                        for name, value in row.items()} for row in frame.to_dict(orient="records")]
            atomic_write_json(path, records)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    return table.astype({"sdr": float, "sir": float, "sar": float})


def table_3_1(separation: pd.DataFrame) -> pd.DataFrame:
    """Mean SDR/SIR/SAR per part and split in the thesis's Table 3.1 layout (rows: the five parts).

    Used by: :func:`run_chapter3`.
    """
    table = pd.DataFrame(index=pd.Index(list(INSTRUMENTS), name="row"), columns=list(TABLE_3_1_COLUMNS),
                         dtype=float)
    if len(separation):
        means = separation.groupby(["part", "split"])[["sdr", "sir", "sar"]].mean()
        for (part, split), values in means.iterrows():
            for metric in ("sdr", "sir", "sar"):
                table.at[part, f"{metric}_{split}"] = values[metric]
    return table


def table_3_2(evaluations: dict[tuple[str, str], NetworkEvaluation]) -> pd.DataFrame:
    """Accuracies (%) in the thesis's Table 3.2 layout: rows baseline / proposed / proposed (ideal), columns mix
    and the five parts; cells the thesis leaves empty are NaN.

    Used by: :func:`run_chapter3`.
    """
    table = pd.DataFrame(index=pd.Index(list(TABLE_3_2_ROWS.values()), name="row"),
                         columns=[MIX_PART, *INSTRUMENTS], dtype=float)
    for (kind, part), result in evaluations.items():
        table.at[TABLE_3_2_ROWS[kind], part] = result.accuracy
    return table


def run_chapter3(
    preset: str,
    data_root: str | os.PathLike = "",
    backend: str = "unet",
    device: str = "auto",
    epochs: int | None = None,
    progress: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    metric_train_tracks: int | None = METRIC_TRAIN_TRACKS,
    **separator_options: Any,
) -> Chapter3Results:
    """Run chapter 3: separator, 11 networks (5 parts x ideal/separated + mix), kNN accuracy, separation quality.

    Every network is trained through :func:`partsim_core.training.train` and reused from the cache when its key is
    unchanged (a second call trains nothing).

    Used by: ``notebooks/ch3_separation_baseline.py`` and ``partsim baseline run``.

    Args:
        preset: ``smoke``, ``default`` or ``paper``.
        data_root: a Slakh-format folder, or ``""`` for the preset's embedded dataset.
        backend: separator backend (``oracle``, ``unet``, ``spleeter``, ``demucs``).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` for training, separation and embedding.
        epochs: epochs of every part network (``None`` or 0 = the preset's).
        progress: progress bars.
        seed: seed of every network.
        log: where one-line progress messages go (default: nowhere).
        metric_train_tracks: training tracks measured for Table 3.1's train columns (``None`` = all).
        separator_options: passed to ``separation.get_separator`` (e.g. ``spleeter_python``, ``demucs_model``).

    Raises:
        PartsimError: unknown preset or backend, a data root without train/test tracks, a missing backend.
    """
    import torch

    from partsim_core.device import resolve_device

    say = log or (lambda message: None)
    get_preset(preset)
    check_backend(backend)
    epochs = epochs or None
    started = time.perf_counter()
    timings: dict[str, float] = {}

    tick = time.perf_counter()
    data = load_dataset(preset, data_root, progress=progress)
    timings["data"] = time.perf_counter() - tick
    say(f"chapter 3: {len(data.train_tracks)} train, {len(data.validation_tracks)} validation, "
        f"{len(data.test_tracks)} test tracks (after the 10 % filter) at {data.root}")

    tick = time.perf_counter()
    if backend == "unet":
        separator_options.setdefault("progress", progress)
    source = separated_source(data, backend, data_root=data_root, device=device, **separator_options)
    timings["separator"] = time.perf_counter() - tick

    tick = time.perf_counter()
    # Separate every track once up front (cached as .npy by SeparatedSource), so network timings exclude it.
    source.separate_tracks([*data.train_tracks, *data.validation_tracks, *data.test_tracks], progress=progress)
    timings["separate"] = time.perf_counter() - tick

    evaluation_device = str(resolve_device(device))
    evaluations: dict[tuple[str, str], NetworkEvaluation] = {}
    reused: dict[str, bool] = {}
    networks = [(part, kind) for part in INSTRUMENTS for kind in INPUTS] + [(MIX_PART, "ideal")]
    tick = time.perf_counter()
    for part, kind in networks:
        name = run_name(part, kind)
        network_started = time.perf_counter()
        result = train_part_network(preset, part, kind, backend=backend, data_root=data_root, epochs=epochs,
                                    device=device, progress=progress, seed=seed, data=data,
                                    source=source if kind == "separated" else None)
        train_seconds = time.perf_counter() - network_started
        with torch.no_grad():
            accuracy, track_ids, starts, vectors = evaluate_network(result.model, data, part, kind, source=source,
                                                                    device=evaluation_device)
        label = MIX_PART if part == MIX_PART else kind
        evaluations[(label, part)] = NetworkEvaluation(part=part, input=label, accuracy=accuracy,
                                                       track_ids=track_ids, starts=starts, embeddings=vectors,
                                                       reused=result.reused, train_seconds=train_seconds,
                                                       history=list(result.history))
        reused[name] = result.reused
        say(f"chapter 3: {name}: accuracy {accuracy:.2f} % on {len(track_ids)} test segments"
            + (" (reused)" if result.reused else f" (trained in {train_seconds:.1f} s)"))
    timings["networks"] = time.perf_counter() - tick

    tick = time.perf_counter()
    separation = separation_quality(data, source, train_tracks=metric_train_tracks, progress=progress)
    timings["metrics"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    return Chapter3Results(
        preset=preset,
        backend=backend,
        data_root=str(data_root),
        epochs=int(epochs or data.preset.part_network.epochs),
        table_3_1=table_3_1(separation),
        table_3_2=table_3_2(evaluations),
        separation=separation,
        evaluations=evaluations,
        timings=timings,
        reused=reused,
        n_tracks={"train": len(data.train_tracks), "validation": len(data.validation_tracks),
                  "test": len(data.test_tracks), "test_before_filter": int(len(data.filter_table)),
                  "train_separation_metrics": len(data.train_tracks) if metric_train_tracks is None
                  else min(metric_train_tracks, len(data.train_tracks))},
        data=data,
        separated=source,
    )


def tsne_points(results: Chapter3Results, parts: tuple[str, ...] = INSTRUMENTS, max_tracks: int = 10,
                seed: int = 0) -> pd.DataFrame:
    """Two-dimensional t-SNE of the test embeddings, per part and input (thesis Fig. 3.2).

    The first ``max_tracks`` test tracks (in id order) that have segments in every panel are shown, so that the
    colours (track IDs) match across panels. Each (part, input) panel gets its own t-SNE (scikit-learn, PCA
    initialisation, ``random_state=seed``; perplexity ``min(30, (n - 1) / 3)``).

    Used by: ``notebooks/ch3_separation_baseline.py``.

    Returns:
        Columns ``x, y, part, input, track, start_s``.
    """
    from sklearn.manifold import TSNE

    panels = [(kind, part) for part in parts for kind in ("separated", "ideal")
              if (kind, part) in results.evaluations]
    common = None
    for key in panels:
        ids = set(results.evaluations[key].track_ids.tolist())
        common = ids if common is None else common & ids
    chosen = sorted(common or [])[:max_tracks]
    sample_rate = results.data.preset.frontend.sample_rate if results.data is not None else 1
    frames = []
    for kind, part in panels:
        evaluation = results.evaluations[(kind, part)]
        keep = np.isin(evaluation.track_ids, chosen)
        if keep.sum() < 3:
            continue
        vectors = evaluation.embeddings[keep]
        perplexity = float(min(30.0, (len(vectors) - 1) / 3))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(vectors)
        frames.append(pd.DataFrame({"x": points[:, 0], "y": points[:, 1], "part": part, "input": kind,
                                    "track": evaluation.track_ids[keep],
                                    "start_s": evaluation.starts[keep] / sample_rate}))
    if not frames:
        return pd.DataFrame(columns=["x", "y", "part", "input", "track", "start_s"])
    return pd.concat(frames, ignore_index=True)
