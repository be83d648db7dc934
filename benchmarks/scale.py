"""Memory and time of the evaluation paths at paper shape, for growing test sets (issue 14 items 1-2).

1. Generates a paper-shaped Slakh-format dataset (44.1 kHz; tracks of 3-4 minutes, ``--quick``: 11-13 s) with a
   fast renderer: per track, drums (noise bursts on the beat), bass, piano, guitar and "others" (sines and chords
   at the track's tempo), some parts missing at random, written as FLAC in the Slakh2100 layout (``metadata.yaml``
   with ``program_num``/``is_drum``, ``mix.flac``, ``stems/SXX.flac``, ``all_src.mid`` holding the tempo) into a
   temporary folder; read back with :mod:`partsim_core.data.slakh` and decoded once into a private stem cache
   (a warm-up child, not measured).
2. For each N in ``--tracks`` (default 10, 20, 40 test tracks) a fresh child process runs every chapter's
   evaluation path with the ``paper`` front end and small untrained models on the CPU (:func:`evaluate`, the one
   place that calls the chapters): the test-set filter, chapter 3's segment index + embedding
   (:func:`partsim_core.embed.embed`) + kNN (:func:`partsim_core.knn.knn_accuracy`), chapter 4 as
   :func:`partsim_core.csn.run.run_chapter4` calls it (:mod:`partsim_core.csn.test_set`: the 5-s segment grid,
   :func:`~partsim_core.csn.test_set.embed_index` of its mixes and single stems, the test pseudo pieces;
   :mod:`partsim_core.csn.metrics`: Tables 4.1 (one length), 4.2, 4.3, 4.4, 4.5 with their intervals), and a
   MixQuery index (CSN backend). The parent reads the child's peak RSS from ``os.wait4`` (``ru_maxrss``, which
   counts the pages of the memory-mapped stem cache the child touched); the child samples ``/proc/self/status``
   every 20 ms for its peak *anonymous* RSS, i.e. the memory beyond the stem cache's files on disk
   (``peak_anon_mib``), which is what the bound is about: file pages are the page cache's, dropped under memory
   pressure.

Prints ONE JSON line: ``tracks`` (the N), ``peak_rss_mib`` (``ru_maxrss`` per N), ``peak_anon_mib``,
``seconds_per_track`` (child wall time / N), ``stage_s`` (seconds per stage and N), ``rss_growth`` =
``peak_anon_mib`` at the largest N / at the smallest (target <= 1.10), ``rss_growth_total`` the same on
``peak_rss_mib``, ``projected_full_rss_gib`` (a straight line through (test audio seconds, peak anonymous RSS)
extended to the full redux test split, 151 tracks x ~210 s (``full_test_audio_s``), plus the stem-cache pages
``ru_maxrss`` adds per audio second at that size, so the worst case where nothing is reclaimed; target <= 24),
``projected_full_cpu_s`` (the largest N's child wall time per test audio second x ``full_test_audio_s``: the
evaluation of the full test split on this CPU, fixed costs included, so an upper estimate), ``full_tracks``
(1,289 / 270 / 151: only the test split is evaluated; the train and validation splits enter training, projected
by ``benchmarks/gpu_check.sh``), ``track_seconds``, ``load_average`` and ``streaming`` (per stage: does its peak
grow with N), ``projection_valid`` and ``projection_note``: the projections are only meaningful for tracks of
Slakh's length (at least :data:`PAPER_TRACK_SECONDS` = 180 s, the default 3-4 minutes), so ``projection_valid`` is
``true`` there and ``false`` with ``--quick`` or shorter ``--track-seconds``, where the note says why: on a few
seconds of audio the fixed costs (imports, model set-up, the libraries' mapped pages in ``ru_maxrss``) divided by the
audio dominate the per-second rates, so the two ``projected_full_*`` keys (kept, for the key contract) grossly
over-state the full size (a ``--quick`` run printed 204 GiB). ``--quick`` checks that the paths run and stream, not
the projection.

Measured 2026-12-06 (2 shared cores, load average 4.8 falling to 3.3 during the run, ``python
benchmarks/scale.py --track-seconds 30 40``, 315 s in all; 9 / 18 / 36 test tracks kept of N = 10 / 20 / 40,
298 / 607 / 1,234 s of test audio): peak anonymous RSS 564 / 644 / 597 MiB at N = 10 / 20 / 40, ``rss_growth``
1.06 (target 1.10 met; N = 20 is the highest, so the spread is noise, not growth), ``ru_maxrss`` 719 / 799 /
766 MiB (``rss_growth_total`` 1.07); projected full redux test split 1.17 GiB anonymous, 5.4 GiB with every
stem-cache page counted (target 24 GiB); ``projected_full_cpu_s`` 2,658 s on this CPU. The peak is reached in
the pseudo-piece stage (Table 4.2: a batch of 64 5-s segments of piece mixes, each piece's mix summed from its
parts once per batch), whose segment count the thesis's design caps (10 labels x 4 pieces per part: 668 / 1,150 /
1,128 segments). ``streaming`` marks ``ch4_grid_embed`` as growing (449 -> 555 -> 555 MiB): with N = 10 the grid
has 55 segments, fewer than one batch of 64 (:data:`partsim_core.csn.test_set.EMBED_BATCH`), so its batches are
smaller; from N = 20 to 40 it is flat. Every chapter-4 path streams through
:func:`partsim_core.embed.embed` (batches from the memory-mapped stem cache); the tables' distance matrices are
computed in row chunks. (The earlier chapter-4 code built a Python list of every grid segment's waveform: 403 /
429 / 556 MiB, growth 1.38.)

Measured 2026-12-06 with the default 3-4 minute tracks (``python benchmarks/scale.py``, niced below other work on
the 2 shared cores, load average 2.6-6.3; 7,477 s in all, 4,548 s of it generating): peak anonymous RSS 737 / 716
/ 806 MiB at N = 10 / 20 / 40 (9 / 18 / 36 tracks kept, 1,848 / 3,723 / 7,572 s of test audio), ``rss_growth``
1.094 (target 1.10 met), ``ru_maxrss`` 916 / 888 / 990 MiB (growth 1.08); projected full redux test split 1.1 GiB
anonymous, 1.86 GiB with stem-cache pages, ``projected_full_cpu_s`` 4,312 s. Every stage streams; the peak is
the pseudo-piece stage (5,405 / 7,774 / 7,934 segments: the thesis's 10 labels x 4 pieces per part cap it).

Run: ``python benchmarks/scale.py [--quick] [--tracks 10 20 40] [--track-seconds MIN MAX] [--keep DIR]``. The
default (3-4 min tracks) took 2 hours niced on 2 shared cores (above: 76 minutes generating 70 tracks of ~3.5 min,
the rest evaluating), far over the ~10 minutes issue 14 asks for; ``--keep DIR`` reuses a generated dataset;
``--track-seconds 30 40`` takes about 5 minutes and ``--quick`` about 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Tracks of Slakh2100 redux: train, validation, test.
FULL_TRACKS = {"train": 1289, "validation": 270, "test": 151}
#: Audio of the full redux test split the projections extend to: 151 tracks of about 3.5 minutes.
FULL_TEST_AUDIO_S = 151 * 210.0
#: Shortest generated track (seconds) for which the projections to full size are meaningful (Slakh-length tracks).
PAPER_TRACK_SECONDS = 180.0
SAMPLE_RATE = 44100
#: (part, program_num, is_drum) of the rendered stems.
STEMS = (("drums", 128, True), ("bass", 33, False), ("piano", 0, False), ("guitar", 25, False),
         ("others", 48, False))
#: Untrained model widths (small: this is about memory and data paths, not results).
PART_WIDTH, CSN_WIDTH = 4, 2


# --------------------------------------------------------------------------------------------------------------
# The renderer
# --------------------------------------------------------------------------------------------------------------


def _render_part(part: str, rng: np.random.Generator, samples: int, bpm: float) -> np.ndarray:
    """One part's signal: noise bursts on the beat (drums) or notes of random pitch, one per beat or two."""
    beat = int(SAMPLE_RATE * 60.0 / bpm)
    time_axis = np.arange(beat, dtype=np.float32) / SAMPLE_RATE
    envelope = np.exp(-time_axis * (18.0 if part == "drums" else 3.0)).astype(np.float32)
    out = np.zeros(samples, dtype=np.float32)
    low, high = {"bass": (40, 52), "piano": (55, 80), "guitar": (50, 70), "others": (60, 90)}.get(part, (0, 0))
    for start in range(0, samples, beat):
        stop = min(samples, start + beat)
        if part == "drums":
            note = rng.standard_normal(beat).astype(np.float32) * envelope
        else:
            frequency = 440.0 * 2 ** ((rng.integers(low, high) - 69) / 12)
            note = np.sin(2 * np.pi * frequency * time_axis).astype(np.float32) * envelope
        out[start:stop] = 0.2 * note[:stop - start]
    # Silent stretches, as real parts have (the silence rule must find some).
    for _ in range(rng.integers(0, 3)):
        first = int(rng.integers(0, samples))
        out[first:first + int(rng.integers(1, 12)) * SAMPLE_RATE] = 0.0
    return out


def _write_tempo_midi(path: Path, bpm: float) -> None:
    import mido

    midi = mido.MidiFile()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0))
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi.tracks.append(track)
    midi.save(str(path))


def generate_dataset(root: Path, n_test: int, seconds: tuple[float, float], seed: int = 0) -> Path:
    """A Slakh-format root with ``n_test`` test tracks, 2 train and 0 validation tracks (see the module doc)."""
    import soundfile
    import yaml

    rng = np.random.default_rng(seed)
    number = 0
    for split, count in (("train", 2), ("test", n_test)):
        for _ in range(count):
            number += 1
            folder = root / split / f"Track{number:05d}"
            (folder / "stems").mkdir(parents=True)
            samples = int(rng.uniform(*seconds) * SAMPLE_RATE)
            bpm = float(rng.uniform(70, 170))
            present = [stem for stem in STEMS if stem[0] in ("drums", "bass") or rng.random() < 0.75]
            mix = np.zeros(samples, dtype=np.float32)
            stems = {}
            for position, (part, program, is_drum) in enumerate(present):
                audio = _render_part(part, rng, samples, bpm)
                mix += audio
                soundfile.write(folder / "stems" / f"S{position:02d}.flac", audio, SAMPLE_RATE, subtype="PCM_16")
                stems[f"S{position:02d}"] = {"audio_rendered": True, "inst_class": part.title(), "is_drum": is_drum,
                                             "midi_program_name": part, "plugin_name": "scale.py",
                                             "program_num": program}
            soundfile.write(folder / "mix.flac", np.clip(mix, -1, 1), SAMPLE_RATE, subtype="PCM_16")
            _write_tempo_midi(folder / "all_src.mid", bpm)
            metadata = {"UUID": f"scale{number:05d}", "audio_dir": f"Track{number:05d}/stems", "stems": stems}
            (folder / "metadata.yaml").write_text(yaml.safe_dump(metadata))
    return root


# --------------------------------------------------------------------------------------------------------------
# The evaluation paths (the one place that calls the chapters; adapt here when their API changes)
# --------------------------------------------------------------------------------------------------------------


def _handle(root: Path, n_tracks: int) -> Any:
    """The ``paper`` preset's :class:`~partsim_core.data.dataset.DatasetHandle` of the first ``n_tracks`` test
    tracks (the 10 % filter applied to those)."""
    from partsim_core.data.cache import StemCache
    from partsim_core.data.dataset import TEST_FILTER_FRACTION, DatasetHandle
    from partsim_core.data.segments import filter_test_tracks
    from partsim_core.data.slakh import open_slakh
    from partsim_core.presets import get_preset

    preset = get_preset("paper")
    dataset = open_slakh(root)
    cache = StemCache(dataset, sample_rate=preset.frontend.sample_rate)
    tests = dataset.tracks("test")[:n_tracks]
    kept, table = filter_test_tracks(cache, tests, fraction=TEST_FILTER_FRACTION, seconds=preset.segment_seconds,
                                     threshold=preset.silence_threshold)
    return DatasetHandle(preset=preset, root=root, dataset=dataset, cache=cache, train_tracks=dataset.tracks("train"),
                         validation_tracks=[], test_tracks=kept, filter_table=table)


class _FirstTests:
    """The handle's dataset with its test split cut to the handle's kept test tracks (the MixQuery catalog)."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def tracks(self, split: str | None = None) -> list:
        return list(self.data.test_tracks) if split == "test" else self.data.dataset.tracks(split)

    def split_counts(self) -> dict[str, int]:
        return {**self.data.dataset.split_counts(), "test": len(self.data.test_tracks)}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.data.dataset, name)


def evaluate(root: Path, n_tracks: int, workdir: Path, mark: Any) -> dict[str, Any]:
    """Every chapter's evaluation path on the first ``n_tracks`` test tracks; ``mark(stage)`` after each stage.

    Chapter 4 is called as :func:`partsim_core.csn.run.run_chapter4` calls it (one untrained CSN, one seed): the
    5-s :func:`~partsim_core.csn.test_set.segment_grid`, :func:`~partsim_core.csn.test_set.embed_index` of its
    mixes and single stems, :func:`~partsim_core.csn.test_set.test_pseudo_pieces` and the table functions of
    :mod:`partsim_core.csn.metrics` (each cell with its bootstrap interval).

    Returns small summaries (segment counts, a metric per stage) so that nothing is optimised away.
    """
    import torch

    from partsim_core import INSTRUMENTS
    from partsim_core.csn.metrics import (
        csn_spaces,
        table_4_1,
        table_4_2,
        table_4_3,
        table_4_4,
        table_4_5,
    )
    from partsim_core.csn.network import CSNModel
    from partsim_core.csn.test_set import (
        EVALUATION_SECONDS,
        embed_index,
        segment_grid,
        test_pseudo_pieces,
    )
    from partsim_core.data.segments import SegmentIndex
    from partsim_core.embed import embed
    from partsim_core.knn import knn_accuracy
    from partsim_core.mixquery.backends import CSNBackend
    from partsim_core.mixquery.catalog import Catalog
    from partsim_core.mixquery.index_build import build_index
    from partsim_core.models import PartCNN

    def value(scores: Any) -> float:
        return float("nan") if scores is None else float(scores.cell()["value"])

    torch.manual_seed(0)
    data = _handle(root, n_tracks)
    frontend = data.preset.frontend
    tracks = list(data.test_tracks)
    track_list = [track.track_id for track in tracks]
    by_id = data.tracks_by_id
    out: dict[str, Any] = {"kept_tracks": len(tracks),
                           "audio_s": round(sum(data.cache.track_length(track) for track in tracks)
                                            / data.cache.sample_rate, 1)}
    mark("load_and_filter")

    # Chapter 3: test-set segment index of one part, embedding, kNN track ID (Table 3.2's path).
    index = SegmentIndex(data.cache, tracks, "drums", data.preset.segment_seconds, overlap=False,
                         threshold=data.preset.silence_threshold)
    vectors = embed(PartCNN(frontend.n_mels, width=PART_WIDTH), data.cache, by_id, index, frontend,
                    batch_size=32, device="cpu")
    out["ch3_segments"] = len(vectors)
    out["ch3_knn"] = float(knn_accuracy(vectors, index.labels()))
    mark("ch3_embed_knn")

    # Chapter 4: the 5-s segment grid, its mix and single-stem embeddings (streamed batches).
    model = CSNModel(frontend.n_mels, CSN_WIDTH).eval()
    grid = segment_grid(data, EVALUATION_SECONDS, tracks)
    mix = embed_index(model, data.cache, by_id, grid.all_segments, frontend)
    stems = {part: embed_index(model, data.cache, by_id, grid.parts[part], frontend) for part in INSTRUMENTS}
    out["ch4_grid_segments"] = len(grid)
    out["ch4_stem_segments"] = {part: 0 if v is None else len(v) for part, v in stems.items()}
    mark("ch4_grid_embed")

    # Tables 4.1 (one length), 4.3, 4.4 and 4.5 (one seed: a leading axis of 1).
    seconds = EVALUATION_SECONDS
    table = table_4_1({seconds: mix[None]}, None, {seconds: grid.track_ids}, {seconds: grid.part_active})
    out["table_4_1_drums"] = value(table["drums"][f"proposed_{seconds:g}s"])
    stem_tracks = grid.stem_track_ids()
    stacked = {"(i)": {part: None if v is None else v[None] for part, v in stems.items()}}
    mix_at_stems = {"(i)": grid.at_stems(mix[None])}
    out["table_4_3_bass"] = value(table_4_3(stacked, stem_tracks)["(i)"]["bass"])
    out["table_4_4_drums"] = value(table_4_4(stacked, mix_at_stems, stem_tracks, track_list)["(i)"]["drums"])
    rows = grid.mix_active
    if rows.sum() >= 3:
        pairs = table_4_5(csn_spaces(mix[None][:, rows]), grid.track_ids[rows], track_list)
        out["table_4_5_drums_bass"] = value(pairs["drums", "bass"])
    mark("ch4_tables_4_1_4_3_4_4_4_5")

    # Chapter 4: test pseudo pieces and Table 4.2.
    pseudo = test_pseudo_pieces(data, tracks, EVALUATION_SECONDS, seed=0)
    out["pseudo_segments"] = len(pseudo.segments)
    if len(pseudo.segments):
        pieces = [embed_index(model, pseudo.source, pseudo.pieces, pseudo.indices.get(part), frontend)
                  for part in INSTRUMENTS]
        rows_42 = np.concatenate([p for p in pieces if p is not None], axis=0)
        out["table_4_2_drums"] = value(table_4_2({"(i)": rows_42[None]}, pseudo.segments)["(i)"]["drums"])
    mark("ch4_pseudo_pieces_table_4_2")

    # Chapter 6: MixQuery index of the test split (CSN backend, untrained).
    catalog = Catalog(root, split="test", sample_rate=frontend.sample_rate, dataset=_FirstTests(data))
    backend = CSNBackend(model, frontend, model_hash="scale-untrained", preset="paper", device="cpu")
    built = build_index(catalog, backend, out=workdir / "mixquery", rebuild=True, progress=False)
    out["mixquery_segments"] = int(built.vectors.shape[0])
    mark("ch6_mixquery_index")
    return out


# --------------------------------------------------------------------------------------------------------------
# Child and parent
# --------------------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _AnonSampler(threading.Thread):
    """Peak anonymous RSS (``RssAnon``) of this process, sampled every 20 ms, overall and per stage."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = self.stage_peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            value = _status_kib("RssAnon")
            self.peak, self.stage_peak = max(self.peak, value), max(self.stage_peak, value)
            time.sleep(0.02)


def child(root: Path, n_tracks: int) -> int:
    """Run :func:`evaluate` and print its JSON (with stage times and peaks) on the last line."""
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    sampler = _AnonSampler()
    sampler.start()
    stages: dict[str, float] = {}
    stage_peaks: dict[str, float] = {}
    clock = [time.perf_counter()]

    def mark(stage: str) -> None:
        now = time.perf_counter()
        stages[stage] = round(now - clock[0], 2)
        stage_peaks[stage] = round(max(sampler.stage_peak, _status_kib("RssAnon")) / 1024, 1)
        sampler.stage_peak = 0
        clock[0] = now

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        summary = evaluate(root, n_tracks, Path(workdir), mark)
    sampler.stop.set()
    sampler.join()
    print(json.dumps({"n": n_tracks, "wall_s": round(time.perf_counter() - started, 2),
                      "peak_anon_mib": round(max(sampler.peak, _status_kib("RssAnon")) / 1024, 1),
                      "stage_s": stages, "stage_peak_anon_mib": stage_peaks, "summary": summary}))
    return 0


def _run_child(arguments: list[str], environment: dict[str, str]) -> tuple[dict, float]:
    """Run this file with ``arguments`` in a fresh process; its JSON line and its peak RSS (MiB, ``wait4``)."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *arguments], env=environment,
                                   stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        text = stdout.read()
        if process.returncode:
            raise SystemExit(f"scale benchmark: child {arguments} failed:\n{stderr.read()[-3000:]}")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), usage.ru_maxrss / 1024


def _line(xs: list[float], ys: list[float], at: float) -> float:
    slope, intercept = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(intercept + slope * at)


def projection_validity(quick: bool, seconds: tuple[float, float]) -> tuple[bool, str]:
    """Whether the projection to the full test split means anything for tracks of ``seconds`` (MIN, MAX), and a
    short note saying so (module docstring)."""
    if not quick and seconds[0] >= PAPER_TRACK_SECONDS:
        return True, (f"tracks of {seconds[0]:g}-{seconds[1]:g} s (Slakh length): projected along the test audio "
                      "seconds to the full redux test split")
    mode = "--quick" if quick else "--track-seconds"
    return False, (f"{mode}: tracks of {seconds[0]:g}-{seconds[1]:g} s, shorter than Slakh's ~3.5 min; fixed costs "
                   "dominate the per-second rates, so projected_full_* over-state the full size and are not a "
                   f"measurement (run with tracks of at least {PAPER_TRACK_SECONDS:g} s, the default, for one)")


def main(argv: list[str] | None = None) -> int:
    """Generate, evaluate each N in a fresh child, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[10, 20, 40], help="test-set sizes N")
    parser.add_argument("--quick", action="store_true",
                        help="tracks of 11-13 s instead of 3-4 minutes (projection_valid: false)")
    parser.add_argument("--track-seconds", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                        help="length range of the generated tracks (default 180 240; --quick 11 13)")
    parser.add_argument("--keep", default=None, help="generate into (or reuse) this folder instead of a temporary one")
    parser.add_argument("--child", nargs=2, metavar=("ROOT", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--warm", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.child[0]), int(args.child[1]))
    if args.warm:
        _handle(Path(args.warm), 10**9)  # decodes every test track's parts into the stem cache
        return 0
    tracks = sorted(set(args.tracks))
    if tracks[0] < 2:
        parser.error(f"--tracks: every N must be at least 2 test tracks, got {tracks[0]}")
    seconds = tuple(args.track_seconds) if args.track_seconds else (11.0, 13.0) if args.quick else (180.0, 240.0)
    if not 0 < seconds[0] <= seconds[1]:
        parser.error(f"--track-seconds: need 0 < MIN <= MAX, got {seconds[0]:g} {seconds[1]:g}")
    projection_valid, projection_note = projection_validity(args.quick, seconds)
    if args.keep and (Path(args.keep) / "test").is_dir():
        kept = sum(1 for folder in (Path(args.keep) / "test").iterdir() if (folder / "metadata.yaml").is_file())
        if kept < tracks[-1]:
            parser.error(f"--keep {args.keep}: holds {kept} test track(s), fewer than N = {tracks[-1]}; name a new "
                         "folder (it is generated there) or ask for fewer tracks")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep) if args.keep else Path(scratch) / "slakh"
        if not (root / "test").is_dir():
            generate_dataset(root, max(tracks), seconds)
        generate_s = time.perf_counter() - started
        environment = {**os.environ, "PARTSIM_CACHE": str(Path(scratch) / "cache"),
                       "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                      os.environ.get("PYTHONPATH", "")])}
        _run_child(["--warm", str(root)], environment)
        warm_s = time.perf_counter() - started - generate_s
        results, peaks, loads = [], [], []
        for n in tracks:
            before = [round(value, 2) for value in os.getloadavg()]
            result, peak = _run_child(["--child", str(root), str(n)], environment)
            results.append(result)
            peaks.append(round(peak, 1))
            loads.append({"n": n, "before": before, "after": [round(value, 2) for value in os.getloadavg()]})
    anon = [result["peak_anon_mib"] for result in results]
    walls = [result["wall_s"] for result in results]
    audio = [result["summary"]["audio_s"] for result in results]
    # Projections along the test split's audio seconds (so that shorter generated tracks project correctly).
    file_pages_per_audio_s = max(0.0, (peaks[-1] - anon[-1]) / audio[-1])
    projected_anon = max(anon[-1], _line(audio, anon, FULL_TEST_AUDIO_S)) if len(tracks) > 1 else anon[-1]
    stage_names = list(results[-1]["stage_peak_anon_mib"])
    streaming = {stage: bool(results[-1]["stage_peak_anon_mib"][stage]
                             <= 1.10 * results[0]["stage_peak_anon_mib"].get(stage, float("inf")))
                 for stage in stage_names}
    print(json.dumps({
        "tracks": tracks,
        "peak_rss_mib": peaks,
        "peak_anon_mib": anon,
        "seconds_per_track": [round(wall / n, 2) for wall, n in zip(walls, tracks)],
        "stage_s": {str(result["n"]): result["stage_s"] for result in results},
        "stage_peak_anon_mib": {str(result["n"]): result["stage_peak_anon_mib"] for result in results},
        "streaming": streaming,
        "rss_growth": round(anon[-1] / anon[0], 3),
        "rss_growth_total": round(peaks[-1] / peaks[0], 3),
        "projected_full_rss_gib": round((projected_anon + file_pages_per_audio_s * FULL_TEST_AUDIO_S) / 1024, 2),
        "projected_full_anon_gib": round(projected_anon / 1024, 2),
        "projected_full_cpu_s": round(walls[-1] / audio[-1] * FULL_TEST_AUDIO_S),
        "projection_valid": projection_valid,
        "projection_note": projection_note,
        "test_audio_s": audio,
        "full_test_audio_s": FULL_TEST_AUDIO_S,
        "full_tracks": FULL_TRACKS,
        "track_seconds": list(seconds),
        "summaries": {str(result["n"]): result["summary"] for result in results},
        "generate_s": round(generate_s, 1),
        "warm_cache_s": round(warm_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
        "cores": len(os.sched_getaffinity(0)),
        "load_average": loads,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
