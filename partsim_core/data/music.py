"""Musical building blocks of the mini-Slakh composer: MIDI constants, keys and chords, General-MIDI names, the song
data types (:class:`Note`, :class:`Chord`, :class:`Section`, :class:`Layer`, :class:`Song`) and the helpers that
part patterns use to write one bar (:class:`BarContext`, voicings, step grids).

Everything here is pure (no I/O). The part patterns are in :mod:`partsim_core.data.part_patterns`; the composer
itself is :mod:`partsim_core.data.compose`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pretty_midi

#: MIDI resolution of every written file (ticks per quarter note).
TICKS_PER_BEAT = 480
BEATS_PER_BAR = 4
#: MIDI channel of drum parts (channel 10 in 1-based numbering).
DRUM_CHANNEL = 9

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALE_STEPS = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
ROMAN_DEGREES = {"i": 0, "ii": 1, "iii": 2, "iv": 3, "v": 4, "vi": 5, "vii": 6}

#: Chord progressions (one chord per bar), by mode. Upper case = major triad, lower case = minor triad.
PROGRESSIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "major": (
        ("I", "V", "vi", "IV"), ("I", "IV", "V", "IV"), ("ii", "V", "I", "I"), ("I", "vi", "IV", "V"),
        ("I", "iii", "IV", "V"), ("vi", "IV", "I", "V"), ("I", "IV", "I", "V"), ("IV", "I", "V", "vi"),
    ),
    "minor": (
        ("i", "VI", "III", "VII"), ("i", "iv", "v", "i"), ("i", "VII", "VI", "VII"), ("i", "iv", "VII", "III"),
        ("i", "VI", "iv", "v"), ("iv", "i", "v", "VI"), ("i", "III", "VII", "iv"),
    ),
}

#: Section orders; a song's sections repeat its template until the song ends.
FORM_TEMPLATES = ("AB", "AABB", "ABAB", "AABA", "ABBA")

#: GM programs used by the generator, with their General MIDI names (as in Slakh's ``midi_program_name``).
GM_PROGRAM_NAMES: dict[int, str] = {
    0: "Acoustic Grand Piano", 1: "Bright Acoustic Piano", 2: "Electric Grand Piano", 3: "Honky-tonk Piano",
    4: "Electric Piano 1", 5: "Electric Piano 2", 6: "Harpsichord", 7: "Clavinet",
    11: "Vibraphone", 16: "Drawbar Organ", 17: "Percussive Organ", 18: "Rock Organ", 22: "Harmonica",
    24: "Acoustic Guitar (nylon)", 25: "Acoustic Guitar (steel)", 26: "Electric Guitar (jazz)",
    27: "Electric Guitar (clean)", 28: "Electric Guitar (muted)", 29: "Overdriven Guitar",
    30: "Distortion Guitar",
    32: "Acoustic Bass", 33: "Electric Bass (finger)", 34: "Electric Bass (pick)", 35: "Fretless Bass",
    36: "Slap Bass 1", 37: "Slap Bass 2", 38: "Synth Bass 1", 39: "Synth Bass 2",
    40: "Violin", 41: "Viola", 42: "Cello", 48: "String Ensemble 1", 49: "String Ensemble 2",
    50: "Synth Strings 1", 52: "Choir Aahs", 56: "Trumpet", 57: "Trombone", 61: "Brass Section",
    62: "Synth Brass 1", 63: "Synth Brass 2", 65: "Alto Sax", 66: "Tenor Sax", 68: "Oboe", 70: "Bassoon",
    71: "Clarinet", 73: "Flute", 80: "Lead 1 (square)", 81: "Lead 2 (sawtooth)", 84: "Lead 5 (charang)",
    89: "Pad 2 (warm)", 91: "Pad 4 (choir)",
    120: "Guitar Fret Noise", 121: "Breath Noise", 122: "Seashore", 123: "Bird Tweet", 124: "Telephone Ring",
    125: "Helicopter", 126: "Applause", 127: "Gunshot",
}

#: Instrument class names of the 16 GM families, spelled as in Slakh's ``inst_class`` (program // 8). Slakh calls
#: GM's "Ensemble" family "Strings (continued)" and both effect families "Sound Effects" / "Sound effects".
GM_FAMILY_CLASSES = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Strings (continued)", "Brass",
    "Reed", "Pipe", "Synth Lead", "Synth Pad", "Sound Effects", "Ethnic", "Percussive", "Sound effects",
)

#: GM drum kits (bank 128 program numbers) by name.
DRUM_KITS: dict[str, int] = {"Standard": 0, "Room": 8, "Power": 16, "Electronic": 24, "TR 808": 25, "Jazz": 32,
                             "Brush": 40}

# GM percussion keys.
KICK, RIMSHOT, SNARE, CLAP, CLOSED_HAT, PEDAL_HAT, OPEN_HAT = 36, 37, 38, 39, 42, 44, 46
LOW_TOM, MID_TOM, HIGH_TOM, CRASH, RIDE, TAMBOURINE, COWBELL, MARACAS = 45, 47, 50, 49, 51, 54, 56, 70


def instrument_class(program: int, is_drum: bool) -> str:
    """Slakh ``inst_class`` of a GM program ("Drums" for drum parts)."""
    return "Drums" if is_drum else GM_FAMILY_CLASSES[program // 8]


def program_name(program: int, is_drum: bool) -> str:
    """Slakh ``midi_program_name`` of a GM program ("Drums" for drum parts); programs outside
    :data:`GM_PROGRAM_NAMES` (another style mix) get pretty_midi's General MIDI name, which spells the same."""
    if is_drum:
        return "Drums"
    return GM_PROGRAM_NAMES.get(program) or pretty_midi.program_to_instrument_name(program)


# --------------------------------------------------------------------------------------------------------------
# Song structure
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """One MIDI note, in ticks (:data:`TICKS_PER_BEAT` per quarter note)."""

    start: int
    end: int
    pitch: int
    velocity: int


@dataclass(frozen=True)
class Chord:
    """A diatonic triad of the song's key."""

    numeral: str
    root: int  # pitch class 0-11
    minor: bool

    def tones(self, seventh: bool = False) -> tuple[int, ...]:
        """Intervals above the root: triad, plus the minor seventh (minor chords) or major seventh when asked."""
        triad = (0, 3, 7) if self.minor else (0, 4, 7)
        return triad + ((10 if self.minor else 11),) if seventh else triad


@dataclass(frozen=True)
class Section:
    """A run of bars with one label ("A" or "B") and one chord per bar."""

    label: str
    start_bar: int
    n_bars: int
    chords: tuple[Chord, ...]


@dataclass
class Layer:
    """One stem of a song: a part (group), its style, GM program and notes."""

    part: str
    style: str
    program: int
    is_drum: bool
    notes: list[Note]
    active_sections: list[int]
    kit: str | None = None
    variant: int = 0


@dataclass
class Song:
    """A composed song: everything :mod:`partsim_core.data.synth` needs to write and render one track."""

    tempo: int
    key: str
    mode: str
    progression: tuple[str, ...]
    progression_b: tuple[str, ...]
    sections: list[Section]
    duration_seconds: float
    layers: list[Layer]
    #: GM programs of extra stems listed in the metadata but never rendered (like Slakh's ``audio_rendered: false``).
    unrendered_programs: list[int] = field(default_factory=list)

    @property
    def microseconds_per_beat(self) -> int:
        """MIDI tempo of the song."""
        return int(round(60_000_000 / self.tempo))

    def tick_to_seconds(self, tick: int | np.ndarray) -> float | np.ndarray:
        """Seconds at a tick, with exactly the MIDI file's tempo (what any MIDI reader computes)."""
        return tick * self.microseconds_per_beat / TICKS_PER_BEAT / 1e6

    @property
    def end_tick(self) -> int:
        """Tick at :attr:`duration_seconds` (notes are cut there)."""
        return int(self.duration_seconds * 1e6 * TICKS_PER_BEAT / self.microseconds_per_beat)

    def section_times(self) -> list[tuple[str, float, float]]:
        """``(label, start_s, end_s)`` per section, cut at the song's end."""
        times = []
        for section in self.sections:
            start = float(self.tick_to_seconds(section.start_bar * BEATS_PER_BAR * TICKS_PER_BEAT))
            end = float(self.tick_to_seconds((section.start_bar + section.n_bars) * BEATS_PER_BAR * TICKS_PER_BEAT))
            times.append((section.label, round(start, 4), round(min(end, self.duration_seconds), 4)))
        return times


# --------------------------------------------------------------------------------------------------------------
# Pattern helpers
# --------------------------------------------------------------------------------------------------------------


@dataclass
class BarContext:
    """What a pattern needs to write one bar."""

    bar_start: float  # in beats
    chord: Chord
    next_chord: Chord
    tonic: int  # pitch class
    scale: tuple[int, ...]
    section_label: str
    bar_in_section: int
    section_bars: int
    variant: int
    rng: np.random.Generator
    state: dict

    @property
    def last_bar_of_section(self) -> bool:
        return self.bar_in_section == self.section_bars - 1

    @property
    def in_b(self) -> bool:
        return self.section_label != "A"


def beats_to_ticks(beats: float) -> int:
    """Quantise a position in beats to ticks."""
    return int(round(beats * TICKS_PER_BEAT))


def make_note(start_beat: float, length_beats: float, pitch: int, velocity: float) -> Note:
    """A :class:`Note` from beat positions, with pitch and velocity clipped to MIDI range."""
    start = beats_to_ticks(start_beat)
    end = max(start + 1, beats_to_ticks(start_beat + length_beats))
    return Note(start, end, int(np.clip(pitch, 0, 127)), int(np.clip(round(velocity), 1, 127)))


def nearest_pitch(pitch_class: int, around: int) -> int:
    """The MIDI pitch of ``pitch_class`` closest to ``around``."""
    base = around - ((around - pitch_class) % 12)
    return base if around - base <= 6 else base + 12


def chord_pitch_classes(chord: Chord, seventh: bool = False) -> list[int]:
    return [(chord.root + interval) % 12 for interval in chord.tones(seventh)]


def close_voicing(chord: Chord, center: int, seventh: bool = False) -> list[int]:
    """Chord tones each placed nearest ``center`` (a close, voice-led voicing), sorted low to high."""
    return sorted({nearest_pitch(pc, center) for pc in chord_pitch_classes(chord, seventh)})


def scale_pitches(tonic: int, scale: Sequence[int], low: int, high: int) -> list[int]:
    """Every pitch of the key's scale in ``[low, high]``."""
    pcs = {(tonic + step) % 12 for step in scale}
    return [pitch for pitch in range(low, high + 1) if pitch % 12 in pcs]


def grid_hits(pattern: str, bar_start: float) -> list[tuple[float, str]]:
    """Positions (beats) of the non-rest steps of a one-bar step pattern; ``len(pattern)`` steps per bar."""
    step = BEATS_PER_BAR / len(pattern)
    return [(bar_start + index * step, char) for index, char in enumerate(pattern) if char != "."]


STEP_VELOCITY = {"X": 118, "x": 96, "o": 78, "g": 44}


def humanise(ctx: BarContext, velocity: float, spread: float = 6.0) -> float:
    return velocity + ctx.rng.normal(0.0, spread)
