"""Read any Slakh-format root: real Slakh2100 (redux flac, original 2100 + ``redux.json``, babyslakh) or the
embedded mini-Slakh written by ``partsim data synth``.

The reader parses ``metadata.yaml`` of every ``TrackXXXXX`` folder, finds each stem's audio file (the file's
existence decides, whatever ``audio_rendered`` says, because babyslakh marks every stem unrendered), groups stems
into the thesis's five parts with the slakh-utils ``band.yaml`` recipe keyed by ``program_num`` (thesis 3.3.1,
4.4.1: drums, bass, piano, guitar and "others" = the recipe's residuals) and assigns splits.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import yaml
from scipy.signal import resample_poly

from partsim_core import INSTRUMENTS
from partsim_core.errors import PartsimError

#: The five instrumental parts, in the subspace order of the thesis.
GROUPS: tuple[str, ...] = INSTRUMENTS

#: Split names of the redux release (``omitted`` holds the tracks redux removes).
SPLITS: tuple[str, ...] = ("train", "validation", "test", "omitted")

#: Audio extensions Slakh releases use, in the order they are looked for.
AUDIO_EXTENSIONS: tuple[str, ...] = (".flac", ".wav")

#: Original Slakh2100 split boundaries by track number (used when a root has no split folders).
LAST_TRAIN_TRACK = 1500
LAST_VALIDATION_TRACK = 1875

# The C loader parses the 2100 metadata files of Slakh2100 several times faster than the pure-Python one.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

TRACK_FOLDER_PATTERN = re.compile(r"^Track(\d{5})$")

# slakh-utils band.yaml recipe (mixing key program_num); everything else is the recipe's "residuals" = others.
_PROGRAM_RANGES: tuple[tuple[range, str], ...] = (
    (range(0, 8), "piano"),
    (range(24, 32), "guitar"),
    (range(32, 40), "bass"),
    (range(128, 129), "drums"),
)
DRUM_PROGRAM = 128


def group_for_program(program_num: int, is_drum: bool) -> str:
    """The part a stem belongs to, by the slakh-utils ``band.yaml`` recipe.

    Piano 0-7, Guitar 24-31, Bass 32-39, Drums 128; a drum stem (``is_drum``) counts as program 128 whatever its
    program number says. Everything else is "others". Used by the reader and the Data chapter's group table.

    Args:
        program_num: The stem's ``program_num`` from ``metadata.yaml``.
        is_drum: The stem's ``is_drum`` flag.

    Returns:
        One of :data:`GROUPS`.
    """
    program = DRUM_PROGRAM if is_drum else int(program_num)
    for programs, group in _PROGRAM_RANGES:
        if program in programs:
            return group
    return "others"


@dataclass(frozen=True)
class Stem:
    """One stem of a track, as ``metadata.yaml`` describes it plus where its audio is."""

    stem_id: str
    program_num: int
    is_drum: bool
    inst_class: str
    midi_program_name: str
    plugin_name: str
    audio_rendered: bool
    #: ``None`` when no audio file exists, whatever ``audio_rendered`` says.
    audio_path: Path | None
    group: str


@dataclass(frozen=True)
class Track:
    """One ``TrackXXXXX`` folder."""

    track_id: str
    split: str
    folder: Path
    mix_path: Path | None
    stems: tuple[Stem, ...]
    #: The parsed ``metadata.yaml`` (not part of equality or hashing).
    metadata: dict = field(compare=False, hash=False, repr=False)

    def stems_by_group(self) -> dict[str, list[Stem]]:
        """Stems whose audio file exists, by part in :data:`GROUPS` order; parts without such a stem are omitted."""
        grouped: dict[str, list[Stem]] = {}
        for group in GROUPS:
            members = [stem for stem in self.stems if stem.group == group and stem.audio_path is not None]
            if members:
                grouped[group] = members
        return grouped

    @property
    def number(self) -> int:
        """The track number (1 for ``Track00001``)."""
        return int(self.track_id[len("Track"):])

    def audio_files(self) -> list[Path]:
        """The mix (when present) and every stem file that exists."""
        files = [self.mix_path] if self.mix_path is not None else []
        return files + [stem.audio_path for stem in self.stems if stem.audio_path is not None]


@dataclass
class SlakhDataset:
    """A Slakh-format root: its tracks, the release variant, and the problems met while reading it."""

    root: Path
    #: ``redux_flac`` / ``redux_wav`` (split folders), ``original`` (no split folders) or ``babyslakh``.
    variant: str
    _tracks: dict[str, Track] = field(repr=False)
    #: ``{"file": ..., "problem": ...}`` for folders that could not be read (e.g. a track without metadata).
    problems: list[dict[str, str]] = field(default_factory=list, repr=False)

    def tracks(self, split: str | None = None) -> list[Track]:
        """Tracks sorted by ``track_id``, optionally only those of one split.

        Raises:
            PartsimError: ``split`` is not one of :data:`SPLITS`.
        """
        if split is not None and split not in SPLITS:
            raise PartsimError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return [track for _, track in sorted(self._tracks.items()) if split is None or track.split == split]

    def track(self, track_id: str) -> Track:
        """The track with this id (e.g. ``"Track00001"``).

        Raises:
            PartsimError: no such track under the root.
        """
        try:
            return self._tracks[track_id]
        except KeyError:
            raise PartsimError(f"no track {track_id!r} under {self.root}") from None

    def split_counts(self) -> dict[str, int]:
        """Number of tracks per split, every split of :data:`SPLITS` listed."""
        counts = {split: 0 for split in SPLITS}
        for track in self._tracks.values():
            counts[track.split] = counts.get(track.split, 0) + 1
        return counts


def _find_audio(base: Path, stem_name: str) -> Path | None:
    for extension in AUDIO_EXTENSIONS:
        candidate = base / f"{stem_name}{extension}"
        if candidate.is_file():
            return candidate
    return None


def _stem_folders(folder: Path, audio_dir: Any) -> list[Path]:
    # audio_dir is "stems" (babyslakh) or "TrackXXXXX/stems" (redux, relative to the split folder). Only folders
    # inside the track folder count, so a metadata file copied from another track cannot point at its stems.
    candidates: list[Path] = []
    if isinstance(audio_dir, str) and audio_dir:
        relative = Path(audio_dir)
        if relative.parts and relative.parts[0] == folder.name:
            relative = Path(*relative.parts[1:]) if len(relative.parts) > 1 else Path(".")
        if not relative.is_absolute() and ".." not in relative.parts:
            candidates.append(folder / relative)
    candidates.append(folder / "stems")
    unique: list[Path] = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def _as_bool(value: Any, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return bool(value)


def read_metadata(path: Path) -> dict:
    """Parse one ``metadata.yaml`` and check it has a ``stems`` mapping.

    Raises:
        PartsimError: the file is unreadable, not YAML, or lacks ``stems``.
    """
    try:
        metadata = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except (OSError, UnicodeDecodeError) as error:
        raise PartsimError(f"{path}: cannot read metadata ({error})") from None
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise PartsimError(f"{path}: malformed YAML ({detail})") from None
    if not isinstance(metadata, dict):
        raise PartsimError(f"{path}: malformed metadata (expected a mapping, got {type(metadata).__name__})")
    stems = metadata.get("stems")
    if not isinstance(stems, dict) or not stems:
        raise PartsimError(f"{path}: malformed metadata (no 'stems' mapping)")
    return metadata


def read_track(folder: Path, split: str) -> Track:
    """Read one track folder (its ``metadata.yaml`` and which audio files exist).

    Raises:
        PartsimError: the metadata is missing or malformed.
    """
    metadata_path = folder / "metadata.yaml"
    if not metadata_path.is_file():
        raise PartsimError(f"{metadata_path}: track folder has no metadata.yaml")
    metadata = read_metadata(metadata_path)
    stem_folders = _stem_folders(folder, metadata.get("audio_dir"))
    stems: list[Stem] = []
    for stem_id in sorted(metadata["stems"], key=str):
        info = metadata["stems"][stem_id]
        if not isinstance(info, dict):
            raise PartsimError(f"{metadata_path}: malformed metadata (stem {stem_id} is not a mapping)")
        try:
            program_num = int(info["program_num"])
        except (KeyError, TypeError, ValueError):
            raise PartsimError(
                f"{metadata_path}: malformed metadata (stem {stem_id} has no integer program_num)"
            ) from None
        is_drum = _as_bool(info.get("is_drum"))
        audio_path = None
        for stem_folder in stem_folders:
            audio_path = _find_audio(stem_folder, str(stem_id))
            if audio_path is not None:
                break
        stems.append(
            Stem(
                stem_id=str(stem_id),
                program_num=program_num,
                is_drum=is_drum,
                inst_class=str(info.get("inst_class", "")),
                midi_program_name=str(info.get("midi_program_name", "")),
                plugin_name=str(info.get("plugin_name", "None")),
                audio_rendered=_as_bool(info.get("audio_rendered")),
                audio_path=audio_path,
                group=group_for_program(program_num, is_drum),
            )
        )
    return Track(
        track_id=folder.name,
        split=split,
        folder=folder,
        mix_path=_find_audio(folder, "mix"),
        stems=tuple(stems),
        metadata=metadata,
    )


def split_for_number(number: int) -> str:
    """Original Slakh2100 split of a track number: 1-1500 train, 1501-1875 validation, 1876- test."""
    if number <= LAST_TRAIN_TRACK:
        return "train"
    if number <= LAST_VALIDATION_TRACK:
        return "validation"
    return "test"


def read_redux(path: str | Path) -> dict[str, dict]:
    """Parse a slakh-utils ``redux.json`` (``{"TrackXXXXX": {"action": "omit" | null, ...}}``).

    Raises:
        PartsimError: the file is missing or not of that form.
    """
    path = Path(path)
    try:
        redux = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PartsimError(f"{path}: redux file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PartsimError(f"{path}: malformed redux JSON ({error})") from None
    if not isinstance(redux, dict) or not all(
        isinstance(entry, dict) and entry.get("action", None) in (None, "omit") for entry in redux.values()
    ):
        raise PartsimError(f"{path}: malformed redux JSON (expected {{TrackXXXXX: {{'action': 'omit' | null}}}})")
    return redux


def _track_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and TRACK_FOLDER_PATTERN.match(p.name))


def locate_track_folders(root: Path) -> tuple[list[tuple[Path, str | None]], bool]:
    """Track folders under ``root`` with the split their location implies.

    Returns:
        ``([(folder, split or None)], has_split_folders)``; ``split`` is ``None`` when the layout does not say
        (then the numeric rule or ``redux.json`` decides).
    """
    split_folders = [root / split for split in SPLITS if (root / split).is_dir()]
    located: list[tuple[Path, str | None]] = []
    if split_folders:
        for split_folder in split_folders:
            located += [(folder, split_folder.name) for folder in _track_folders(split_folder)]
    # Tracks directly under the root: original / babyslakh layout, or one split folder given as the root.
    implied = root.name if root.name in SPLITS else None
    located += [(folder, implied) for folder in _track_folders(root)]
    return located, bool(split_folders)


def open_slakh(
    root: str | Path, redux_json: str | Path | None = None, strict: bool = True
) -> SlakhDataset:
    """Open a Slakh-format root.

    ``root`` may hold split folders (``train/ validation/ test/ omitted/``, the redux flac release and
    ``partsim data synth`` output) or track folders directly (original release, babyslakh); then splits follow
    the original numbering (1-1500 train, 1501-1875 validation, 1876-2100 test) and ``redux_json``, when given,
    moves the tracks it omits to split ``"omitted"``. Files that are not track folders are ignored. A track folder
    without ``metadata.yaml`` (babyslakh ``Track00007`` has only MIDI) is skipped and listed in
    :attr:`SlakhDataset.problems`.

    Args:
        root: The dataset folder.
        redux_json: Optional slakh-utils ``redux.json`` to apply.
        strict: Raise on malformed metadata (default); ``False`` skips such tracks and lists them in ``problems``.

    Raises:
        PartsimError: the root is missing, holds no readable track, or (``strict``) a metadata file is malformed.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise PartsimError(f"{root}: Slakh root not found (not a folder)")
    redux = read_redux(redux_json) if redux_json is not None else None
    located, has_split_folders = locate_track_folders(root)
    if not located:
        raise PartsimError(f"{root}: no TrackXXXXX folders found (expected a Slakh-format root)")
    tracks: dict[str, Track] = {}
    problems: list[dict[str, str]] = []
    for folder, implied_split in located:
        number = int(TRACK_FOLDER_PATTERN.match(folder.name).group(1))
        split = implied_split or split_for_number(number)
        if redux is not None and (redux.get(folder.name) or {}).get("action") == "omit":
            split = "omitted"
        if not (folder / "metadata.yaml").is_file():
            problems.append({"file": str(folder / "metadata.yaml"), "problem": "track folder has no metadata.yaml"})
            continue
        try:
            track = read_track(folder, split)
        except PartsimError as error:
            if strict:
                raise
            problems.append({"file": str(folder / "metadata.yaml"), "problem": _problem_text(error, folder)})
            continue
        if track.track_id in tracks:
            # The same id in two split folders: which split it belongs to is ambiguous.
            other = tracks[track.track_id].folder
            if strict:
                raise PartsimError(f"{folder}: duplicate track id (also in {other})")
            problems.append({"file": str(folder), "problem": f"duplicate track id (also in {other})"})
            continue
        tracks[track.track_id] = track
    if not tracks and strict:
        details = "; ".join(f"{p['file']}: {p['problem']}" for p in problems[:3])
        raise PartsimError(f"{root}: no readable track ({details})")
    return SlakhDataset(root=root, variant=_detect_variant(tracks.values(), has_split_folders), _tracks=tracks,
                        problems=problems)


def _problem_text(error: PartsimError, folder: Path) -> str:
    # Messages start with the file name; the problem list names the file separately.
    text = str(error)
    for prefix in (str(folder / "metadata.yaml") + ": ", str(folder) + ": "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def _detect_variant(tracks: Any, has_split_folders: bool) -> str:
    tracks = list(tracks)
    extensions = {path.suffix for track in tracks for path in track.audio_files()}
    if has_split_folders:
        return "redux_wav" if extensions == {".wav"} else "redux_flac"
    stems_with_files = [stem for track in tracks for stem in track.stems if stem.audio_path is not None]
    # babyslakh: every stem marked unrendered although its file exists.
    if stems_with_files and not any(stem.audio_rendered for track in tracks for stem in track.stems):
        return "babyslakh"
    return "original"


def audio_info(path: Path) -> soundfile._SoundFileInfo:
    """Header of an audio file (no decoding).

    Raises:
        PartsimError: the file is missing or its header unreadable.
    """
    try:
        return soundfile.info(str(path))
    except (RuntimeError, OSError) as error:  # LibsndfileError is a RuntimeError
        raise PartsimError(f"{path}: unreadable audio ({' '.join(str(error).split())})") from None


def track_sample_rate(track: Track) -> int:
    """Native sample rate shared by a track's mix and stems (read from the file headers).

    Raises:
        PartsimError: the track has no audio, a header is unreadable, or a stem's rate differs from the mix's.
    """
    files = track.audio_files()
    if not files:
        raise PartsimError(f"{track.folder}: track has no audio files")
    reference = files[0]
    reference_rate = audio_info(reference).samplerate
    for path in files[1:]:
        rate = audio_info(path).samplerate
        if rate != reference_rate:
            raise PartsimError(f"{path}: sample rate {rate} Hz differs from {reference.name} ({reference_rate} Hz)")
    return int(reference_rate)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``) of a mono float32 signal; no-op at equal rates."""
    if int(source_rate) == int(target_rate):
        return np.ascontiguousarray(audio, dtype=np.float32)
    divisor = math.gcd(int(source_rate), int(target_rate))
    resampled = resample_poly(audio, int(target_rate) // divisor, int(source_rate) // divisor)
    return np.ascontiguousarray(resampled, dtype=np.float32)


def read_audio_native(path: Path) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32 at its own rate, checking it is complete and finite.

    Raises:
        PartsimError: missing, corrupt or truncated file, or NaN/inf samples.
    """
    path = Path(path)
    if not path.is_file():
        raise PartsimError(f"{path}: audio file not found")
    try:
        with soundfile.SoundFile(str(path)) as handle:
            expected = handle.frames
            rate = handle.samplerate
            audio = handle.read(dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as error:
        raise PartsimError(f"{path}: corrupt audio ({' '.join(str(error).split())})") from None
    if audio.shape[0] < expected:
        raise PartsimError(f"{path}: truncated audio ({audio.shape[0]} of {expected} frames decoded)")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if not np.all(np.isfinite(mono)):
        raise PartsimError(f"{path}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode an audio file to mono float32 at ``sample_rate`` (resampled with ``resample_poly`` when needed).

    Raises:
        PartsimError: missing, corrupt or truncated file, NaN/inf samples, or a non-positive ``sample_rate``.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise PartsimError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    audio, native_rate = read_audio_native(path)
    return resample(audio, native_rate, int(sample_rate))


#: Sample formats that can hold NaN or infinity (integer PCM, e.g. every flac, cannot).
FLOAT_SUBTYPES: frozenset[str] = frozenset({"FLOAT", "DOUBLE"})

#: Frames decoded at a time when scanning a floating-point file for non-finite samples.
_SCAN_BLOCK = 1 << 16


def _check_audio_file(path: Path) -> tuple[Any | None, str | None]:
    """Header plus a read of the last frames (catches truncated flac cheaply); floating-point files are decoded in
    full to find NaN or infinite samples. Returns ``((sample rate, frames), problem)``."""
    try:
        with soundfile.SoundFile(str(path)) as handle:
            info = (handle.samplerate, handle.frames)
            tail = min(handle.frames, 1024)
            if tail:
                handle.seek(handle.frames - tail)
                got = handle.read(tail, dtype="float32", always_2d=True).shape[0]
                if got < tail:
                    return info, f"truncated audio (only {got} of the last {tail} frames readable)"
            if handle.subtype in FLOAT_SUBTYPES:
                handle.seek(0)
                position = 0
                for block in handle.blocks(blocksize=_SCAN_BLOCK, dtype="float64", always_2d=True):
                    finite = np.isfinite(block).all(axis=1)
                    if not finite.all():
                        first = position + int(np.argmin(finite))
                        return info, f"non-finite audio: NaN or infinite samples (the first at {first / info[0]:.3f} s)"
                    position += block.shape[0]
    except (RuntimeError, OSError) as error:
        return None, f"unreadable, corrupt or truncated audio ({' '.join(str(error).split())})"
    return info, None


def check_slakh(root: str | Path, redux_json: str | Path | None = None, progress: bool = False,
                segment_seconds: float | None = None) -> dict:
    """Validate a Slakh-format root without decoding whole files: the summary ``partsim data check`` prints.

    Detects: track folders without or with malformed metadata, missing mix, a stem marked rendered whose file is
    missing, unreadable or truncated audio (header + last frames), NaN or infinite samples (floating-point files are
    decoded in full; integer formats such as flac cannot hold them), a stem whose sample rate or length differs
    from the mix, and (with ``segment_seconds``) a track shorter than one segment. Durations come from the file
    headers. Every problem names its file.

    Returns:
        ``{"root", "variant", "tracks": {split: n}, "stems_per_group": {group: n}, "total_duration_s",
        "problems": [{"file", "problem"}]}``.

    Raises:
        PartsimError: the root is missing or holds no track folder at all (unusable input), or a
            ``segment_seconds`` that is not a positive number.
    """
    from tqdm import tqdm

    if segment_seconds is not None and not (isinstance(segment_seconds, (int, float))
                                            and math.isfinite(segment_seconds) and segment_seconds > 0):
        raise PartsimError(f"segment length must be a positive number of seconds, got {segment_seconds!r}")
    dataset = open_slakh(root, redux_json=redux_json, strict=False)
    problems = list(dataset.problems)
    stems_per_group = {group: 0 for group in GROUPS}
    total_duration = 0.0
    for track in tqdm(dataset.tracks(), desc="checking tracks", unit="track", disable=not progress):
        mix_info = None
        if track.mix_path is None:
            problems.append({"file": str(track.folder / "mix.flac"), "problem": "mix file missing"})
        else:
            mix_info, problem = _check_audio_file(track.mix_path)
            if problem:
                problems.append({"file": str(track.mix_path), "problem": problem})
            elif mix_info is not None:
                total_duration += mix_info[1] / mix_info[0]
            if mix_info is not None:
                seconds = mix_info[1] / mix_info[0]
                if segment_seconds is not None and seconds < segment_seconds:
                    problems.append({"file": str(track.mix_path),
                                     "problem": f"track is {seconds:.3f} s long, shorter than one "
                                                f"{segment_seconds:g}-s segment (it would give no segment)"})
        for stem in track.stems:
            if stem.audio_path is None:
                if stem.audio_rendered:
                    expected = _stem_folders(track.folder, track.metadata.get("audio_dir"))[0] / f"{stem.stem_id}.flac"
                    problems.append({"file": str(expected), "problem": "stem marked audio_rendered but file missing"})
                continue
            stems_per_group[stem.group] += 1
            info, problem = _check_audio_file(stem.audio_path)
            if problem:
                problems.append({"file": str(stem.audio_path), "problem": problem})
            elif mix_info is not None and info is not None:
                if info[0] != mix_info[0]:
                    problems.append({"file": str(stem.audio_path),
                                     "problem": f"sample rate {info[0]} Hz differs from the mix ({mix_info[0]} Hz)"})
                elif info[1] != mix_info[1]:
                    problems.append({"file": str(stem.audio_path),
                                     "problem": f"length {info[1]} frames differs from the mix ({mix_info[1]})"})
    return {
        "root": str(dataset.root),
        "variant": dataset.variant,
        "tracks": dataset.split_counts(),
        "stems_per_group": stems_per_group,
        "total_duration_s": round(total_duration, 3),
        "problems": problems,
    }
