"""The embedded mini-Slakh: songs composed as MIDI, rendered with a General-MIDI SoundFont, written in the exact
Slakh2100 *redux flac* layout (Data chapter, ``notebooks/data.py``; ``partsim data synth``; ``partsim book build``).

Slakh2100 cannot be downloaded in CI, so the book generates a small stand-in that the project's one reader
(:func:`partsim_core.data.slakh.open_slakh`) reads like the real thing::

    out/{train,validation,test}/TrackNNNNN/{metadata.yaml, mix.flac, stems/SXX.flac, MIDI/SXX.mid, all_src.mid}
    out/partsim_ground_truth.json

Songs come from :mod:`partsim_core.data.compose`; audio comes from a real SoundFont rendered offline with
``tinysoundfont``: the ``TimGM6mb.sf2`` shipped inside ``pretty_midi`` unless a ``soundfont`` argument or the
``PARTSIM_SOUNDFONT`` environment variable names another ``.sf2`` (e.g. FluidR3_GM). Each track's random generator
is derived from ``(seed, track index)``, so output does not depend on the number of workers, and the same seed gives
byte-identical MIDI and metadata. ``style_mix`` (opt-in, :data:`partsim_core.data.compose.STYLE_MIXES`) renders
another mix of styles and GM programs from the same SoundFont; the default mix leaves every output unchanged. The
dataset folder is built under a temporary name and renamed when complete
(:func:`partsim_core.data.outputs.output_directory`: a folder partsim did not write is never replaced); the
ground-truth file doubles as the completion marker. Worker processes end with their parent, even a killed one.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile
import tinysoundfont
import yaml
from tqdm.auto import tqdm

from partsim_core import INSTRUMENTS
from partsim_core.data.cache import atomic_write_json, cache_root
from partsim_core.data.compose import DEFAULT_STYLE_MIX, compose_song, get_style_mix, song_to_midi_bytes
from partsim_core.data.music import DRUM_CHANNEL, Layer, Song, instrument_class, program_name
from partsim_core.data.outputs import MARKER, check_not_inside_inputs, output_directory
from partsim_core.errors import PartsimError
from partsim_core.presets import SynthConfig, get_preset
from partsim_core.processes import die_with_parent

GENERATOR_NAME = "partsim mini-slakh"
#: Bump when the generator's output changes for the same seed (invalidates existing datasets).
GENERATOR_VERSION = "1"
GROUND_TRUTH_FILE = "partsim_ground_truth.json"
SOUNDFONT_ENV = "PARTSIM_SOUNDFONT"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: Level every stem is normalised to (gated RMS, dBFS); written as ``normalization_factor`` like Slakh's -13 LUFS.
STEM_TARGET_DBFS = -20.0
#: Peak of the mix (dBFS), written as ``target_peak`` as in Slakh.
TARGET_PEAK_DBFS = -1.0
#: A rendered stem quieter than this (gated RMS, dBFS) means the SoundFont produced no sound for its program.
SILENT_STEM_DBFS = -90.0


def default_dataset_root(preset: str, style_mix: str = DEFAULT_STYLE_MIX) -> Path:
    """Where ``partsim data synth`` and the book put the generated dataset of a preset (``mini-slakh-<preset>``;
    another style mix: ``mini-slakh-<preset>-<style mix>``).

    Raises:
        PartsimError: for an unknown preset or style mix.
    """
    get_preset(preset)
    name = get_style_mix(style_mix).name
    suffix = "" if name == DEFAULT_STYLE_MIX else f"-{name}"
    return cache_root() / "datasets" / f"mini-slakh-{preset}{suffix}"


def default_soundfont() -> Path:
    """The ``TimGM6mb.sf2`` General-MIDI SoundFont that ships inside the ``pretty_midi`` package."""
    import pretty_midi

    return Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"


def resolve_soundfont(soundfont: str | os.PathLike | None = None) -> Path:
    """The SoundFont to render with: the argument, else ``$PARTSIM_SOUNDFONT``, else :func:`default_soundfont`.

    Raises:
        PartsimError: when the file is missing or is not a SoundFont tinysoundfont can load.
    """
    chosen = soundfont or os.environ.get(SOUNDFONT_ENV) or default_soundfont()
    path = Path(chosen).expanduser().resolve()
    if not path.is_file():
        raise PartsimError(f"SoundFont not found: {path}")
    try:
        tinysoundfont.Synth(samplerate=22050).sfload(str(path))
    except Exception as error:  # tinysoundfont raises its own exception types for unreadable files
        raise PartsimError(f"cannot load SoundFont {path}: {error}") from None
    return path


def file_digest(path: Path, length: int = 16) -> str:
    """SHA-256 prefix of a file's bytes (identifies the SoundFont in the completion marker)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


# --------------------------------------------------------------------------------------------------------------
# Rendering and levels
# --------------------------------------------------------------------------------------------------------------

_SOUNDFONT_BYTES: dict[Path, bytes] = {}


def _soundfont_bytes(path: Path) -> bytes:
    # Read once per process; every layer then gets a fresh synthesizer so no state leaks between stems.
    if path not in _SOUNDFONT_BYTES:
        _SOUNDFONT_BYTES[path] = path.read_bytes()
    return _SOUNDFONT_BYTES[path]


def render_layer(song: Song, layer: Layer, sample_rate: int, soundfont: Path) -> tuple[np.ndarray, str]:
    """Render one layer offline with tinysoundfont.

    Returns:
        ``(audio, preset_name)``: mono float32 audio of the song's length (left and right averaged) and the name
        of the SoundFont preset that played it (drums fall back to the Standard kit when the SoundFont lacks one).

    Raises:
        PartsimError: when the SoundFont has no preset for a melodic program.
    """
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    font = synth.sfload(_soundfont_bytes(soundfont))
    channel = DRUM_CHANNEL if layer.is_drum else 0
    bank = 128 if layer.is_drum else 0
    program = layer.program
    if synth.sfpreset_name(font, bank, program) is None:
        if not layer.is_drum or synth.sfpreset_name(font, 128, 0) is None:
            raise PartsimError(f"SoundFont {soundfont} has no preset for bank {bank} program {program}")
        program = 0
    synth.program_select(channel, font, bank, program, is_drums=layer.is_drum)
    preset_name = synth.sfpreset_name(font, bank, program) or f"bank {bank} program {program}"

    n_samples = int(round(song.duration_seconds * sample_rate))
    events = []
    for note in layer.notes:
        start = int(round(float(song.tick_to_seconds(note.start)) * sample_rate))
        end = int(round(float(song.tick_to_seconds(note.end)) * sample_rate))
        events.append((start, 1, note.pitch, note.velocity))
        events.append((max(end, start + 1), 0, note.pitch, 0))
    events.sort()
    stereo = np.zeros((n_samples, 2), dtype=np.float32)
    position = 0
    for sample, is_on, pitch, velocity in events:
        sample = min(sample, n_samples)
        if sample > position:
            stereo[position:sample] = np.frombuffer(synth.generate_simple(sample - position),
                                                    dtype=np.float32).reshape(-1, 2)
            position = sample
        if is_on:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    if position < n_samples:
        stereo[position:] = np.frombuffer(synth.generate_simple(n_samples - position), dtype=np.float32).reshape(-1, 2)
    return stereo.mean(axis=1, dtype=np.float32), preset_name


def gated_rms_dbfs(audio: np.ndarray, sample_rate: int) -> float:
    """Loudness as a gated RMS level in dBFS (written as Slakh's ``integrated_loudness``).

    Slakh reports ITU-R BS.1770 LUFS; this is the same block gating (400 ms blocks, 75 % overlap, -70 dB absolute
    and -10 dB relative gates) on plain RMS power, without the K-weighting filter. A full-scale sine reads -3 dBFS.
    Returns ``-inf`` for silence.
    """
    power = np.asarray(audio, dtype=np.float64) ** 2
    block = max(1, int(0.4 * sample_rate))
    if power.size <= block:
        blocks = np.array([power.mean()]) if power.size else np.zeros(1)
    else:
        cumulative = np.concatenate(([0.0], np.cumsum(power)))
        starts = np.arange(0, power.size - block + 1, max(1, block // 4))
        blocks = (cumulative[starts + block] - cumulative[starts]) / block
    gated = blocks[blocks > 10 ** (-70 / 10)]
    if gated.size == 0:
        return float("-inf")
    gated = gated[gated > gated.mean() * 10 ** (-10 / 10)]
    return float(10 * np.log10(gated.mean()))


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio (full scale 1.0) to the 16-bit integers a flac file stores (what soundfile reads back / 32768)."""
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def normalise_stem(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Scale a stem to :data:`STEM_TARGET_DBFS` gated RMS, lowering it further if its peak would pass -1 dBFS."""
    level = gated_rms_dbfs(audio, sample_rate)
    scaled = audio * 10 ** ((STEM_TARGET_DBFS - level) / 20)
    peak = float(np.abs(scaled).max())
    ceiling = 10 ** (TARGET_PEAK_DBFS / 20)
    return scaled * (ceiling / peak) if peak > ceiling else scaled


# --------------------------------------------------------------------------------------------------------------
# One track
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackJob:
    """Everything a worker needs to build one track folder."""

    folder: Path
    index: int
    track_id: str
    split: str
    seed: int
    preset: str
    config: SynthConfig
    soundfont: Path
    style_mix: str = DEFAULT_STYLE_MIX


def track_uuid(preset: str, seed: int, track_id: str, style_mix: str = DEFAULT_STYLE_MIX) -> str:
    """A 32-hex-digit id like Slakh's ``UUID``, derived from the generator version, preset, seed and track (and
    the style mix, when it is not the default)."""
    text = f"{GENERATOR_NAME}|{GENERATOR_VERSION}|{preset}|{seed}|{track_id}"
    if style_mix != DEFAULT_STYLE_MIX:
        text += f"|{style_mix}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def track_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of track ``index`` (0-based), independent of worker order."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def build_track(job: TrackJob) -> dict:
    """Compose, render and write one track folder; return its ground-truth entry and sizes.
    """
    rng = track_rng(job.seed, job.index)
    song = compose_song(rng, job.config.min_seconds, job.config.max_seconds, style_mix=job.style_mix)
    sample_rate = job.config.sample_rate
    uuid = track_uuid(job.preset, job.seed, job.track_id, job.style_mix)

    # Stem numbering follows a per-song shuffle of the layers, as Slakh's numbering follows the source MIDI's
    # track order (so S00 is not always drums); unrendered sound-effect stems are listed without files.
    entries: list[tuple[str, int | None]] = [("layer", i) for i in range(len(song.layers))]
    entries += [("unrendered", program) for program in song.unrendered_programs]
    order = rng.permutation(len(entries))
    stem_ids = {int(position): f"S{rank:02d}" for rank, position in enumerate(order)}

    (job.folder / "stems").mkdir(parents=True, exist_ok=True)
    (job.folder / "MIDI").mkdir(exist_ok=True)
    stems_metadata: dict[str, dict] = {}
    pcm_sum = np.zeros(int(round(song.duration_seconds * sample_rate)), dtype=np.int64)
    layer_stems: dict[int, str] = {}
    for position, (kind, value) in enumerate(entries):
        stem_id = stem_ids[position]
        if kind == "unrendered":
            stems_metadata[stem_id] = {
                "audio_rendered": False, "inst_class": instrument_class(value, False), "is_drum": False,
                "midi_program_name": program_name(value, False), "midi_saved": False, "plugin_name": "None",
                "program_num": value,
            }
            continue
        layer = song.layers[value]
        audio, preset_name = render_layer(song, layer, sample_rate, job.soundfont)
        if gated_rms_dbfs(audio, sample_rate) < SILENT_STEM_DBFS:
            raise PartsimError(f"SoundFont {job.soundfont} rendered silence for program {layer.program} "
                               f"({layer.part}, {job.track_id})")
        pcm = to_pcm16(normalise_stem(audio, sample_rate))
        soundfile.write(job.folder / "stems" / f"{stem_id}.flac", pcm, sample_rate, format="FLAC", subtype="PCM_16")
        midi = song_to_midi_bytes(song, [value], [layer.part])
        (job.folder / "MIDI" / f"{stem_id}.mid").write_bytes(midi)
        pcm_sum += pcm
        layer_stems[value] = stem_id
        stems_metadata[stem_id] = {
            "audio_rendered": True,
            "inst_class": instrument_class(layer.program, layer.is_drum),
            "integrated_loudness": gated_rms_dbfs(pcm / 32768.0, sample_rate),
            "is_drum": layer.is_drum,
            "midi_program_name": program_name(layer.program, layer.is_drum),
            "midi_saved": True,
            "plugin_name": f"{job.soundfont.name}: {preset_name}",
            "program_num": 128 if layer.is_drum else layer.program,
        }

    # The mix is the sum of the written stems times one gain that puts its peak at TARGET_PEAK_DBFS.
    mix_float = pcm_sum / 32768.0
    overall_gain = float(10 ** (TARGET_PEAK_DBFS / 20) / max(np.abs(mix_float).max(), 1e-9))
    soundfile.write(job.folder / "mix.flac", to_pcm16(mix_float * overall_gain), sample_rate, format="FLAC",
                    subtype="PCM_16")
    layer_order = sorted(layer_stems, key=lambda index: layer_stems[index])
    (job.folder / "all_src.mid").write_bytes(
        song_to_midi_bytes(song, layer_order, [song.layers[index].part for index in layer_order]))

    metadata = {
        "UUID": uuid,
        "audio_dir": f"{job.track_id}/stems",
        "lmd_midi_dir": f"partsim_mini_slakh/{uuid}.mid",
        "midi_dir": f"{job.track_id}/MIDI",
        "normalization_factor": STEM_TARGET_DBFS,
        "normalized": True,
        "overall_gain": overall_gain,
        "stems": {stem_id: stems_metadata[stem_id] for stem_id in sorted(stems_metadata)},
        "target_peak": TARGET_PEAK_DBFS,
    }
    (job.folder / "metadata.yaml").write_text(yaml.safe_dump(metadata, sort_keys=True, default_flow_style=False))
    written_bytes = sum(path.stat().st_size for path in job.folder.rglob("*") if path.is_file())
    return {"track_id": job.track_id, "truth": ground_truth_entry(song, job.split, layer_stems),
            "bytes": written_bytes, "seconds": song.duration_seconds}


def ground_truth_entry(song: Song, split: str, layer_stems: dict[int, str]) -> dict:
    """The ``tracks`` entry of ``partsim_ground_truth.json`` for one song.

    ``parts`` lists only the parts the song has; ``style``/``program``/``kit`` are those of the part's first stem,
    ``layers`` gives every stem of the part, and ``active`` the time spans (seconds) where the part plays.
    """
    section_times = song.section_times()
    parts: dict[str, dict] = {}
    for part in INSTRUMENTS:
        indices = [index for index, layer in enumerate(song.layers) if layer.part == part]
        if not indices:
            continue
        first = song.layers[indices[0]]
        layers = []
        for index in indices:
            layer = song.layers[index]
            entry = {"stem": layer_stems[index], "style": layer.style, "program": layer.program,
                     "variant": layer.variant,
                     "active": [[section_times[i][1], section_times[i][2]] for i in layer.active_sections]}
            if layer.is_drum:
                entry["kit"] = layer.kit
            layers.append(entry)
        active_sections = sorted({i for index in indices for i in song.layers[index].active_sections})
        summary = {"style": first.style, "program": first.program}
        if first.is_drum:
            summary["kit"] = first.kit
        summary.update({"stems": [layer_stems[index] for index in indices],
                        "active": [[section_times[i][1], section_times[i][2]] for i in active_sections],
                        "layers": layers})
        parts[part] = summary
    return {
        "split": split, "tempo": float(song.tempo), "key": song.key, "mode": song.mode,
        "progression": list(song.progression), "progression_b": list(song.progression_b),
        "duration": song.duration_seconds,
        "sections": [[label, start, end] for label, start, end in section_times],
        "parts": parts,
    }


# --------------------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------------------


def validate_config(config: SynthConfig) -> None:
    """Raise :class:`PartsimError` naming the first impossible value of a synth configuration."""
    for name in ("n_train", "n_validation", "n_test"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 0:
            raise PartsimError(f"synth {name} must be a non-negative integer, got {value!r}")
    if config.n_train + config.n_validation + config.n_test < 1:
        raise PartsimError("synth config asks for no tracks at all")
    if not (np.isfinite(config.min_seconds) and config.min_seconds >= 1.0):
        raise PartsimError(f"synth min_seconds must be at least 1.0, got {config.min_seconds!r}")
    if not (np.isfinite(config.max_seconds) and config.max_seconds >= config.min_seconds):
        raise PartsimError(f"synth max_seconds must be >= min_seconds, got {config.max_seconds!r}")
    if not (isinstance(config.sample_rate, int) and 8000 <= config.sample_rate <= 96000):
        raise PartsimError(f"synth sample_rate must be an integer in 8000..96000, got {config.sample_rate!r}")


def plan_tracks(config: SynthConfig) -> list[tuple[int, str, str]]:
    """``(index, track_id, split)`` of every track: numbered from Track00001, train first, then validation, test."""
    counts = {"train": config.n_train, "validation": config.n_validation, "test": config.n_test}
    plan = []
    for split in SPLITS:
        for _ in range(counts[split]):
            plan.append((len(plan), f"Track{len(plan) + 1:05d}", split))
    return plan


def read_ground_truth(out: str | os.PathLike) -> dict | None:
    """The parsed ``partsim_ground_truth.json`` of a generated dataset, or ``None`` when absent or unreadable."""
    import json

    path = Path(out) / GROUND_TRUTH_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_ground_truth_tracks(root: str | os.PathLike, needed_for: str = "this step") -> dict:
    """The ``tracks`` mapping of a generated dataset's ``partsim_ground_truth.json`` (the one strict reader).

    Args:
        root: The dataset folder.
        needed_for: What needs the ground truth, for the error message (e.g. ``"the MixQuery evaluation"``).

    Raises:
        PartsimError: no ground truth there (real Slakh2100 has none: it needs the embedded generator's dataset),
            or a file that is unreadable or has no ``tracks`` mapping.
    """
    import json

    path = Path(root) / GROUND_TRUTH_FILE
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PartsimError(
            f"{Path(root).name}: no {GROUND_TRUTH_FILE}, so {needed_for} has no ground truth here. It needs the "
            "embedded generator's dataset (partsim data synth, or no data root), which records the source track "
            "and style of every part; real Slakh2100 has no such ground truth") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise PartsimError(f"{path}: unreadable ground truth ({error})") from None
    tracks = truth.get("tracks") if isinstance(truth, dict) else None
    if not isinstance(tracks, dict):
        raise PartsimError(f"{path}: malformed ground truth (no 'tracks' mapping)")
    return tracks


def is_complete(out: Path, generator: dict) -> bool:
    """Whether ``out`` holds a finished dataset made by exactly this generator description."""
    truth = read_ground_truth(out)
    if not truth or truth.get("generator") != generator:
        return False
    return all((out / entry["split"] / track_id / "metadata.yaml").is_file()
               and (out / entry["split"] / track_id / "mix.flac").is_file()
               for track_id, entry in truth.get("tracks", {}).items())


def is_generated_dataset(out: str | os.PathLike) -> bool:
    """Whether ``out`` is a folder this generator wrote (the output marker, or a ground truth naming the generator,
    as datasets written before the marker have); only such a folder may ever be replaced."""
    out = Path(out)
    if (out / MARKER).is_file():
        return True
    truth = read_ground_truth(out)
    return isinstance(truth, dict) and isinstance(truth.get("generator"), dict) \
        and truth["generator"].get("name") == GENERATOR_NAME


def _describe(generator: dict | None) -> str:
    if not isinstance(generator, dict):
        return "an unfinished one"
    return (f"preset {generator.get('preset')}, seed {generator.get('seed')}, SoundFont {generator.get('soundfont')}, "
            f"generator version {generator.get('version')}")


def synthesize_dataset(out: str | os.PathLike, preset: str = "smoke", seed: int = 0, jobs: int | None = None,
                       fresh: bool = False, progress: bool = True, *, soundfont: str | os.PathLike | None = None,
                       config: SynthConfig | None = None, replace_other: bool = True,
                       style_mix: str = DEFAULT_STYLE_MIX) -> Path:
    """Generate the mini-Slakh of a preset into ``out`` (Slakh2100 redux flac layout), atomically.

    Args:
        out: dataset folder to create (or replace, see ``fresh`` and ``replace_other``).
        preset: preset name; its ``synth`` section sets the number of tracks, their length and the sample rate.
        seed: the dataset seed; track ``i`` uses a generator derived from ``(seed, i)``.
        jobs: worker processes (default ``os.cpu_count()``); the output does not depend on it.
        fresh: regenerate even when ``out`` already holds this dataset.
        progress: show a progress bar over tracks.
        soundfont: ``.sf2`` to render with (default ``$PARTSIM_SOUNDFONT``, else pretty_midi's TimGM6mb.sf2).
        config: overrides the preset's synth section (tests use tiny ones); recorded in the ground truth.
        replace_other: replace a dataset this generator wrote with other settings (another seed, preset,
            SoundFont or generator version) without ``fresh``: right for the cache's default folder; a folder the
            user names (``--out-dir``) is replaced only with ``fresh``.
        style_mix: a name of :data:`partsim_core.data.compose.STYLE_MIXES`; ``"default"`` (every preset's data)
            writes exactly what the generator wrote before the option existed; another mix is recorded in the
            ground truth's ``generator`` entry.

    Returns:
        ``out``, as a :class:`~pathlib.Path`.

    Raises:
        PartsimError: unknown preset or style mix, bad seed/jobs/config, unusable SoundFont, an ``out`` that is a file, overlaps
        the SoundFont, or exists but was not made by this generator (never replaced, even with ``fresh``), or
        holds a dataset of other settings while ``replace_other`` and ``fresh`` are both false.
    """
    out = Path(out).expanduser().resolve()
    preset_config = get_preset(preset).synth  # an unknown preset raises even with a config override
    config = config or preset_config
    validate_config(config)
    if not isinstance(style_mix, str):
        raise PartsimError(f"style_mix must be the name of a style mix, got {style_mix!r}")
    style_mix = get_style_mix(style_mix).name
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PartsimError(f"seed must be a non-negative integer, got {seed!r}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise PartsimError(f"jobs must be a positive integer, got {jobs!r}")
    soundfont_path = resolve_soundfont(soundfont)
    check_not_inside_inputs(out, [soundfont_path], "--out-dir")
    generator = {"name": GENERATOR_NAME, "version": GENERATOR_VERSION, "preset": preset, "seed": int(seed),
                 "soundfont": soundfont_path.name, "soundfont_sha256": file_digest(soundfont_path),
                 "config": asdict(config)}
    if style_mix != DEFAULT_STYLE_MIX:
        generator["style_mix"] = style_mix
    if out.is_dir() and not out.is_symlink():
        if not fresh and is_complete(out, generator):
            return out
        if any(out.iterdir()):
            if not is_generated_dataset(out):
                raise PartsimError(f"{out} exists and is not a partsim-generated dataset (it holds files partsim "
                                   "did not write); refusing to replace it: choose a new or empty folder")
            if not (fresh or replace_other):
                truth = read_ground_truth(out) or {}
                raise PartsimError(f"{out} holds another partsim dataset ({_describe(truth.get('generator'))}); "
                                   "pass --fresh to replace it, or choose another folder")

    plan = plan_tracks(config)
    with output_directory(out, inputs=[soundfont_path], fresh=True, is_own=is_generated_dataset) as tmp:
        work = [TrackJob(folder=tmp / split / track_id, index=index, track_id=track_id, split=split, seed=int(seed),
                         preset=preset, config=config, soundfont=soundfont_path, style_mix=style_mix)
                for index, track_id, split in plan]
        results: dict[str, dict] = {}
        bar = tqdm(total=len(work), desc=f"mini-slakh {preset}", unit="track", disable=not progress)
        try:
            if jobs == 1 or len(work) == 1:
                for job in work:
                    results[job.track_id] = build_track(job)
                    bar.update()
            else:
                # spawn, not fork: the caller may hold torch threads, which fork does not survive reliably.
                with ProcessPoolExecutor(max_workers=min(jobs, len(work)), mp_context=get_context("spawn"),
                                         initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                    for result in pool.map(build_track, work, chunksize=1):
                        results[result["track_id"]] = result
                        bar.update()
        finally:
            bar.close()
        truth = {"generator": generator,
                 "tracks": {track_id: results[track_id]["truth"] for _, track_id, _ in plan}}
        atomic_write_json(tmp / GROUND_TRUTH_FILE, truth)
    return out


def dataset_summary(out: str | os.PathLike) -> dict:
    """Tracks, bytes on disk and audio seconds of a generated dataset (for ``benchmarks/synth.py`` and the CLI)."""
    out = Path(out)
    truth = read_ground_truth(out)
    if truth is None:
        raise PartsimError(f"{out} holds no {GROUND_TRUTH_FILE}; not a generated dataset")
    files = [path for path in out.rglob("*") if path.is_file()]
    audio_seconds = 0.0
    for path in files:
        if path.suffix == ".flac":
            info = soundfile.info(str(path))
            audio_seconds += info.frames / info.samplerate
    return {"tracks": len(truth["tracks"]), "bytes": sum(path.stat().st_size for path in files),
            "track_seconds": round(sum(entry["duration"] for entry in truth["tracks"].values()), 3),
            "audio_seconds_written": round(audio_seconds, 3)}


def with_overrides(config: SynthConfig, **changes: object) -> SynthConfig:
    """A copy of a synth config with some fields changed (tests, benchmarks)."""
    return replace(config, **changes)
