"""The pseudo-piece catalog on disk: a Slakh-format folder of a split's songs plus the planned pseudo pieces.

:func:`build_pseudo_catalog` writes (or reuses) ``<cache>/mixquery-pseudo-catalog/<key>/`` through the one artefact
cache (:func:`partsim_core.data.artefacts.cached_artefact`; the key covers the plan's sizes, seed, source split and
format, and the fingerprint of the source songs' audio; every file is checksummed before reuse):

* ``test/``: the source split's songs themselves (hard links to their files, copies where links fail) and the
  pieces planned by :func:`~partsim_core.mixquery.pseudo_plan.plan_pseudo_catalog`;
* :data:`MANIFEST_FILE`: every piece's source track per part, the queries, and the source songs' ground truth.

A piece's parts are aligned from the start of each source (sample 0), its length is that of its shortest source
(capped at ``max_piece_seconds``), and it is written like a generated track (:mod:`partsim_core.data.synth`): every
stem of every used part is the source stem's 16-bit excerpt, copied sample for sample (``stems/SXX.flac``, its
``metadata.yaml`` entry copied with the excerpt's loudness), and ``mix.flac`` is the waveform-domain sum of the parts
(:func:`~partsim_core.csn.pseudo_pieces.mix_piece`) scaled to a -1 dBFS peak (``overall_gain``), like the
generator's mixes. No MIDI is copied. **Relevance**: a catalog song is relevant to a query when its ``p`` comes from
A and its ``q`` from B (by the plan's rule, exactly the planted relevant pieces).

Real Slakh2100 has no ground truth, so the catalog needs the embedded generator's dataset; another root is refused
with a :class:`~partsim_core.errors.PartsimError` saying so.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile
import yaml
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.csn.pseudo_pieces import PseudoPiece, mix_piece
from partsim_core.data.artefacts import artefact_dir, cached_artefact, verify_manifest
from partsim_core.data.cache import stable_hash
from partsim_core.data.dataset import DatasetHandle
from partsim_core.data.slakh import Track, audio_info, track_sample_rate
from partsim_core.data.synth import (
    STEM_TARGET_DBFS,
    TARGET_PEAK_DBFS,
    gated_rms_dbfs,
    load_ground_truth_tracks,
    to_pcm16,
)
from partsim_core.errors import PartsimError
from partsim_core.mixquery.catalog import Catalog, display_location
from partsim_core.mixquery.ground_truth import query_segments
from partsim_core.mixquery.pseudo_plan import EvaluationQuery, EvaluationSizes, evaluation_sizes, plan_pseudo_catalog

#: Bump when the catalog's layout or planning rules change (part of the catalog key).
CATALOG_FORMAT_VERSION = 3

#: The manifest of a pseudo-piece catalog (beside its ``test/`` folder).
MANIFEST_FILE = "mixquery_pseudo_catalog.json"

#: Artefact kind (folder under the cache root) of the catalogs.
ARTEFACT_KIND = "mixquery-pseudo-catalog"

#: Source splits a catalog can be built from: ``validation`` (choices such as the CSN's distance) and ``test``.
SOURCE_SPLITS: tuple[str, ...] = ("validation", "test", "train")


class _PieceStems:
    """The signal source of one piece: each source track's parts as exact sums of the first ``frames`` samples of
    its 16-bit stems (decoded once per piece, nothing kept afterwards, no disk cache).

    ``mix_piece`` reads parts through it, so a piece's mix is the sum of exactly the samples written as its stems.
    """

    def __init__(self, sample_rate: int, frames: int) -> None:
        self.sample_rate = int(sample_rate)
        self.frames = int(frames)
        self._stems: dict[Path, np.ndarray] = {}

    def stem(self, path: Path) -> np.ndarray:
        """The first ``frames`` int16 samples of one stem file (zero-padded when it is shorter)."""
        if path not in self._stems:
            try:
                with soundfile.SoundFile(str(path)) as handle:
                    rate = handle.samplerate
                    audio = handle.read(self.frames, dtype="int16", always_2d=True)
            except (RuntimeError, OSError) as error:
                raise PartsimError(f"{path}: unreadable stem ({' '.join(str(error).split())})") from None
            if rate != self.sample_rate:
                raise PartsimError(f"{path}: sample rate {rate} Hz, but the catalog's songs are {self.sample_rate} Hz")
            mono = audio[:, 0] if audio.shape[1] == 1 else audio.mean(axis=1).astype(np.int16)
            excerpt = np.zeros(self.frames, dtype=np.int16)
            excerpt[:mono.shape[0]] = mono
            self._stems[path] = excerpt
        return self._stems[path]

    def get(self, track: Track, part: str) -> np.ndarray:
        """Float32 sum of the part's stem excerpts (full scale 1.0; zeros when the track lacks the part)."""
        total = np.zeros(self.frames, dtype=np.float32)
        for stem in track.stems_by_group().get(part, []):
            total += self.stem(stem.audio_path).astype(np.float32) / 32768.0
        return total


def _link_or_copy(source: str, target: str) -> str:
    # Hard links cost no space; across file systems (or where links are refused) fall back to a copy.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return target


def _write_piece(folder: Path, piece_id: str, entry: Mapping, tracks: Mapping[str, Track], sample_rate: int) -> None:
    """Write one pseudo piece as a Slakh track folder (stems, mix, metadata.yaml; see the module docstring)."""
    length = int(entry["samples"])
    stems = _PieceStems(sample_rate, length)
    (folder / "stems").mkdir(parents=True)
    stems_metadata: dict[str, dict] = {}
    for part in INSTRUMENTS:
        source = entry["sources"][part]
        if source is None:
            continue
        track = tracks[source]
        for stem in track.stems_by_group().get(part, []):
            excerpt = stems.stem(stem.audio_path)
            stem_id = f"S{len(stems_metadata):02d}"
            soundfile.write(folder / "stems" / f"{stem_id}.flac", excerpt, sample_rate, format="FLAC",
                            subtype="PCM_16")
            info = dict(track.metadata["stems"][stem.stem_id])
            info["integrated_loudness"] = gated_rms_dbfs(excerpt / 32768.0, sample_rate)
            info["partsim_source"] = f"{source}/{stem.stem_id}"
            stems_metadata[stem_id] = info
    piece = PseudoPiece.from_parts(entry["sources"])
    mix, _ = mix_piece(stems, tracks, piece, 0, length)
    gain = float(10 ** (TARGET_PEAK_DBFS / 20) / max(float(np.abs(mix).max()), 1e-9))
    soundfile.write(folder / "mix.flac", to_pcm16(mix * gain), sample_rate, format="FLAC", subtype="PCM_16")
    metadata = {
        "UUID": stable_hash({"piece": piece_id, "sources": entry["sources"], "samples": length}, length=32),
        "audio_dir": f"{piece_id}/stems",
        "midi_dir": f"{piece_id}/MIDI",
        "normalization_factor": STEM_TARGET_DBFS,
        "normalized": True,
        "overall_gain": gain,
        "partsim_pseudo_piece": {part: entry["sources"][part] for part in INSTRUMENTS},
        "stems": stems_metadata,
        "target_peak": TARGET_PEAK_DBFS,
    }
    (folder / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=True, default_flow_style=False))


@dataclass
class PseudoCatalog:
    """A pseudo-piece catalog on disk (see the module docstring) and its manifest.

    Attributes:
        root: The Slakh-format folder (its split ``test`` is the catalog).
        manifest: The parsed :data:`MANIFEST_FILE`.
        reused: True when :func:`build_pseudo_catalog` found it already built.
    """

    root: Path
    manifest: dict
    reused: bool = False

    @classmethod
    def load(cls, root: str | os.PathLike) -> PseudoCatalog:
        """Open a built catalog folder.

        Raises:
            PartsimError: no (readable) manifest there.
        """
        root = Path(root)
        path = root / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PartsimError(f"{root}: not a pseudo-piece catalog (no {MANIFEST_FILE}); build one with "
                               "partsim_core.mixquery.pseudo_catalog.build_pseudo_catalog") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PartsimError(f"{path}: unreadable manifest ({error})") from None
        if manifest.get("format_version") != CATALOG_FORMAT_VERSION:
            raise PartsimError(f"{path}: catalog format {manifest.get('format_version')}, this partsim writes "
                               f"{CATALOG_FORMAT_VERSION}; rebuild it")
        return cls(root, manifest)

    @property
    def queries(self) -> list[EvaluationQuery]:
        """The evaluation queries, in plan order."""
        return [EvaluationQuery(**query) for query in self.manifest["queries"]]

    @property
    def songs(self) -> list[str]:
        """The test songs (sources of the pieces)."""
        return sorted(self.manifest["songs"])

    @property
    def pieces(self) -> dict[str, dict]:
        """Piece id -> ``{"kind", "query", "sources", "seconds", "samples"}``."""
        return self.manifest["pieces"]

    @property
    def catalog_ids(self) -> list[str]:
        """Every song of the catalog: the test songs, then the pieces."""
        return self.songs + sorted(self.pieces)

    def sources(self, song: str) -> dict[str, str | None]:
        """Source track of every part of a catalog song (a test song: itself for the parts it has).

        Raises:
            PartsimError: not a song of this catalog.
        """
        if song in self.pieces:
            return dict(self.pieces[song]["sources"])
        if song in self.manifest["songs"]:
            parts = self.manifest["songs"][song]["truth"]["parts"]
            return {part: (song if part in parts else None) for part in INSTRUMENTS}
        raise PartsimError(f"{song!r} is not a song of the pseudo-piece catalog {self.root}")

    def seconds(self, song: str) -> float:
        """Length of a catalog song in seconds."""
        entry = self.pieces.get(song) or self.manifest["songs"].get(song)
        if entry is None:
            raise PartsimError(f"{song!r} is not a song of the pseudo-piece catalog {self.root}")
        return float(entry["seconds"])

    def part_truth(self, track: str, part: str) -> dict | None:
        """Ground truth (``style``, ``program``, ``active``) of a *source* song's part, ``None`` when it lacks it."""
        return self.manifest["songs"][track]["truth"]["parts"].get(part)

    def relevant(self, query: EvaluationQuery) -> list[str]:
        """Catalog songs whose ``part_a`` comes from A and ``part_b`` from B (sorted)."""
        return sorted(piece for piece, entry in self.pieces.items()
                      if entry["sources"][query.part_a] == query.song_a
                      and entry["sources"][query.part_b] == query.song_b)

    def ground_truth(self) -> pd.DataFrame:
        """One row per query: its id, combination, stems and the relevant pieces (the evaluation's ground truth)."""
        rows = []
        for query in self.queries:
            relevant = self.relevant(query)
            rows.append({"query": query.query_id, "combination": query.combination,
                         "stem A": f"{query.song_a}:{query.part_a}:{query.segment_a}",
                         "stem B": f"{query.song_b}:{query.part_b}:{query.segment_b}",
                         "relevant": len(relevant), "relevant pieces": ", ".join(relevant)})
        return pd.DataFrame(rows).set_index("query")

    def summary(self) -> dict[str, Any]:
        """Counts: songs, pieces per kind, queries, skipped combinations."""
        kinds = pd.Series([entry["kind"] for entry in self.pieces.values()]).value_counts()
        return {"location": display_location(self.root), "source_split": self.manifest.get("source_split", "test"),
                "songs": len(self.manifest["songs"]), "pieces": len(self.pieces),
                "pieces_per_kind": {str(kind): int(count) for kind, count in kinds.items()},
                "queries": len(self.manifest["queries"]), "catalog_songs": len(self.catalog_ids),
                "skipped_combinations": list(self.manifest.get("skipped_combinations", [])),
                "reused": bool(self.reused)}

    def catalog(self, sample_rate: int) -> Catalog:
        """The catalog (split ``test`` of :attr:`root`) served at ``sample_rate``."""
        return Catalog(self.root, split="test", sample_rate=sample_rate)



def build_pseudo_catalog(data: DatasetHandle, *, split: str = "test", sizes: EvaluationSizes | None = None,
                         seed: int = 0, fresh: bool = False, progress: bool = True) -> PseudoCatalog:
    """Write (or reuse) the pseudo-piece catalog of one split of a dataset (see the module docstring).

    Args:
        data: The dataset handle the entry point resolved (a dataset written by ``partsim data synth``).
        split: Source split of the songs and pieces: ``test`` for the reported numbers, ``validation`` for choices
            made before looking at the test split (e.g. the CSN's search distance).
        sizes: Override of :func:`~partsim_core.mixquery.pseudo_plan.evaluation_sizes` of the handle's preset.
        seed: Seeds the plan.
        fresh: Rebuild even when a verified catalog of the same key exists.
        progress: Progress bar over pieces.

    Raises:
        PartsimError: a dataset without ground truth (e.g. real Slakh2100), an unknown split, fewer than 3 songs
            with ground truth in it, songs of different sample rates.
    """
    if split not in SOURCE_SPLITS:
        raise PartsimError(f"unknown pseudo-catalog split {split!r}; choose one of: {', '.join(SOURCE_SPLITS)}")
    sizes = sizes or evaluation_sizes(data.preset.name)
    sizes.check()
    truth = load_ground_truth_tracks(data.root, "the MixQuery evaluation")
    tracks = [track for track in data.dataset.tracks(split) if track.track_id in truth]
    if len(tracks) < 3:
        raise PartsimError(f"{data.root.name}: {len(tracks)} {split} song(s) with ground truth; the pseudo-piece "
                           "catalog needs at least 3")
    rates = {track.track_id: track_sample_rate(track) for track in tracks}
    if len(set(rates.values())) != 1:
        raise PartsimError(f"{data.root.name}: {split} songs have different sample rates "
                           f"{sorted(set(rates.values()))}")
    rate = next(iter(rates.values()))
    config = {"format": CATALOG_FORMAT_VERSION, "sizes": asdict(sizes), "seed": int(seed), "split": split}
    fingerprint = data.fingerprint(tracks)

    def compute(folder: Path) -> None:
        samples = {track.track_id: _mix_frames(track) for track in tracks}
        seconds = {song: count / rate for song, count in samples.items()}
        songs = {track.track_id: truth[track.track_id] for track in tracks}
        segments = {track.track_id: {part: query_segments(data.cache.get(track, part), data.cache.sample_rate)
                                     for part in INSTRUMENTS if part in track.stems_by_group()}
                    for track in tracks}
        plan = plan_pseudo_catalog(songs, seconds, segments, sizes, seed=seed, sample_rate=rate)
        by_id = {track.track_id: track for track in tracks}
        for track in tracks:
            shutil.copytree(track.folder, folder / "test" / track.track_id, copy_function=_link_or_copy)
        for piece_id, entry in tqdm(plan["pieces"].items(), desc="pseudo pieces", unit="piece",
                                    disable=not progress):
            _write_piece(folder / "test" / piece_id, piece_id, entry, by_id, rate)
        manifest = {
            "format_version": CATALOG_FORMAT_VERSION, "key": stable_hash({"config": config, "audio": fingerprint},
                                                                          length=12),
            "preset": data.preset.name, "seed": int(seed), "source_split": split, "sample_rate": int(rate),
            "sizes": asdict(sizes),
            "songs": {song: {"seconds": seconds[song], "samples": samples[song], "truth": songs[song]}
                      for song in sorted(songs)},
            "pieces": plan["pieces"], "queries": plan["queries"],
            "skipped_combinations": plan["skipped_combinations"],
        }
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")

    existing = artefact_dir(ARTEFACT_KIND, config, fingerprint)
    reused = not fresh and existing.is_dir() and verify_manifest(existing) is None
    folder = Path(cached_artefact(ARTEFACT_KIND, config, fingerprint, compute, fresh=fresh))
    catalog = PseudoCatalog.load(folder)
    catalog.reused = reused
    return catalog


def _mix_frames(track: Track) -> int:
    if track.mix_path is None:
        raise PartsimError(f"{track.track_id}: song has no mix file")
    return int(audio_info(track.mix_path).frames)
