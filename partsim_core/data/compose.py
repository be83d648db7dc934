"""Procedural composition of multitrack songs for the embedded mini-Slakh (Data chapter, ``notebooks/data.py``).

Slakh2100 cannot be redistributed with the book, so ``partsim data synth`` composes songs as MIDI and renders them
with a General-MIDI SoundFont (:mod:`partsim_core.data.synth`). This module is the composer: it decides, from one
seeded random generator per track, a song's tempo, key, mode, chord progressions, A/B sections and, per part
(drums, bass, piano, guitar, others), a *style* and a GM program, then writes the notes.

A style is a family of patterns shared across songs (for example the bass style ``walking`` or the drum style
``shuffle``): two songs with the same bass style have alike bass parts while differing elsewhere, which is what makes
part-level similarity learnable and part-specific. Within a style each song draws a pattern variant and a program
from the style's program family, so that a style is not one fixed sound.

Everything here is pure (no I/O): :func:`compose_song` returns a :class:`Song`; :func:`song_to_midi_bytes` turns
one or all of its layers into Standard MIDI File bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mido
import numpy as np

from partsim_core import INSTRUMENTS

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
    """Slakh ``midi_program_name`` of a GM program ("Drums" for drum parts)."""
    return "Drums" if is_drum else GM_PROGRAM_NAMES[program]


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


# --------------------------------------------------------------------------------------------------------------
# Drums: several style families; each with pattern variants and the kits that suit it.
# --------------------------------------------------------------------------------------------------------------

#: Drum style -> (variants: list of {key: step pattern}, suitable kits). 16 steps = straight sixteenths,
#: 12 steps = eighth-note triplets (swing).
DRUM_STYLES: dict[str, tuple[list[dict[int, str]], tuple[str, ...]]] = {
    "rock": ([
        {KICK: "x.......x.x.....", SNARE: "....X.......X...", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
        {KICK: "x......xx.x.....", SNARE: "....X.......X...", CLOSED_HAT: "x.o.x.o.x.o.x.o."},
        {KICK: "x.x.....x.......", SNARE: "....X.......X..g", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    ], ("Standard", "Room", "Power")),
    "funk": ([
        {KICK: "x..x..x...x..x..", SNARE: "....X..g.g..X..g", CLOSED_HAT: "xgxgxgxgxgxgxg.g",
         OPEN_HAT: "..............o."},
        {KICK: "x.x...x..x...x..", SNARE: "....X.g..g..X.g.", CLOSED_HAT: "xoxoxoxoxoxoxoxo"},
    ], ("Standard", "Room")),
    "disco": ([
        {KICK: "x...x...x...x...", CLAP: "....x.......x...", CLOSED_HAT: "x...x...x...x...",
         OPEN_HAT: "..x...x...x...x."},
        {KICK: "x...x...x...x...", SNARE: "....x.......x...", CLOSED_HAT: "xoxoxoxoxoxoxoxo",
         TAMBOURINE: "..x...x...x...x."},
    ], ("Electronic", "TR 808", "Standard")),
    "halftime": ([
        {KICK: "x......x..x.....", SNARE: "........X.......", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        {KICK: "x.....x...x..x..", CLAP: "........X.......", CLOSED_HAT: "x.xxx.x.x.xxx.x."},
    ], ("TR 808", "Electronic", "Room")),
    "jazz": ([
        {RIDE: "x..x.xx..x.x", PEDAL_HAT: "...x.....x..", KICK: "g.....g....."},
        {RIDE: "x..x.xx..x.x", PEDAL_HAT: "...x.....x..", SNARE: "........g..g"},
    ], ("Jazz", "Brush")),
    "shuffle": ([
        {KICK: "x.....x.....", SNARE: "...X.....X..", CLOSED_HAT: "x.ox.ox.ox.o"},
        {KICK: "x.....x.x...", SNARE: "...X.....X..", RIDE: "x.ox.ox.ox.o"},
    ], ("Standard", "Room", "Brush")),
    "bossa": ([
        {RIMSHOT: "x..x..x...x..x..", KICK: "x..xx..xx..xx..x", CLOSED_HAT: "x.x.x.x.x.x.x.x."},
        {RIMSHOT: "..x..x...x..x...", KICK: "x..xx..xx..xx..x", MARACAS: "xoxoxoxoxoxoxoxo"},
    ], ("Standard", "Jazz")),
}


def drum_bar(style: str, ctx: BarContext) -> list[Note]:
    """One bar of a drum style: the song's variant, a ride/open-hat colour in B sections, crashes and fills."""
    variants, _ = DRUM_STYLES[style]
    pattern = dict(variants[ctx.variant % len(variants)])
    if ctx.in_b:
        # B sections move the time-keeping voice (hats <-> ride) so that sections differ audibly.
        if CLOSED_HAT in pattern:
            pattern[RIDE] = pattern.pop(CLOSED_HAT)
        elif RIDE in pattern and style == "shuffle":
            pattern[CLOSED_HAT] = pattern.pop(RIDE)
    steps = len(next(iter(pattern.values())))
    fill_from = steps * 3 // 4 if ctx.last_bar_of_section and ctx.section_bars > 1 else steps
    notes: list[Note] = []
    for key, line in sorted(pattern.items()):
        for beat, char in grid_hits(line[:fill_from] + "." * (steps - fill_from), ctx.bar_start):
            notes.append(make_note(beat, 0.25, key, humanise(ctx, STEP_VELOCITY[char], 5)))
    if fill_from < steps:
        toms = (HIGH_TOM, MID_TOM, LOW_TOM) if style in ("rock", "halftime", "shuffle") else (SNARE,)
        fill_steps = range(fill_from, steps)
        for index, step in enumerate(fill_steps):
            key = toms[min(len(toms) - 1, index * len(toms) // max(1, len(fill_steps)))]
            notes.append(make_note(ctx.bar_start + step * BEATS_PER_BAR / steps, 0.25, key,
                                   humanise(ctx, 85 + 3 * index, 5)))
        notes.append(make_note(ctx.bar_start + 3.0, 0.25, KICK, humanise(ctx, 100, 4)))
    if ctx.bar_in_section == 0 and style not in ("jazz", "bossa"):
        notes.append(make_note(ctx.bar_start, 1.0, CRASH, humanise(ctx, 100, 5)))
    return notes


# --------------------------------------------------------------------------------------------------------------
# Bass
# --------------------------------------------------------------------------------------------------------------

BASS_CENTER = 40  # E2


def bass_root(ctx: BarContext, chord: Chord | None = None) -> int:
    chord = chord or ctx.chord
    return nearest_pitch(chord.root, BASS_CENTER + (2 if ctx.in_b else 0))


def bass_root_eighths(ctx: BarContext) -> list[Note]:
    root = bass_root(ctx)
    accents = ("X.x.x.x.", "X.x.X.x.", "X.xxX.x.")[ctx.variant % 3]
    notes = []
    for index in range(8):
        pitch = root
        if index == 7 and ctx.variant % 2 == 1:
            pitch = root + 7  # the fifth leads into the next bar
        velocity = 100 if accents[index] == "X" else 82
        notes.append(make_note(ctx.bar_start + index * 0.5, 0.45, pitch, humanise(ctx, velocity)))
    return notes


def bass_walking(ctx: BarContext) -> list[Note]:
    root = bass_root(ctx)
    tones = ctx.chord.tones()
    target = bass_root(ctx, ctx.next_chord)
    approach = target - 1 if ctx.rng.random() < 0.5 else target + 1
    if ctx.variant % 2 == 0:
        line = [root, root + tones[1], root + tones[2], approach]
    else:
        line = [root, root + tones[2], root + 12 if root < 45 else root - 5, approach]
    return [make_note(ctx.bar_start + beat, 0.9, pitch, humanise(ctx, 92 if beat % 2 == 0 else 84))
            for beat, pitch in enumerate(line)]


def bass_octave(ctx: BarContext) -> list[Note]:
    root = bass_root(ctx)
    if root > 43:
        root -= 12
    pattern = ("lhlhlhlh", "llhllhlh")[ctx.variant % 2]
    return [make_note(ctx.bar_start + index * 0.5, 0.4, root + (12 if step == "h" else 0),
                      humanise(ctx, 96 if step == "l" else 86)) for index, step in enumerate(pattern)]


FUNK_BASS_LINES = ("r..o..r.f.r..7r.", "r.r..7.rr..o.r..", "r..r.o..r.7.r.o.")


def bass_funk(ctx: BarContext) -> list[Note]:
    root = bass_root(ctx)
    if root > 43:
        root -= 12
    offsets = {"r": 0, "o": 12, "f": 7, "7": 10 if ctx.chord.minor else 7}
    notes = []
    for beat, char in grid_hits(FUNK_BASS_LINES[ctx.variant % len(FUNK_BASS_LINES)], ctx.bar_start):
        notes.append(make_note(beat, 0.2, root + offsets[char], humanise(ctx, 104 if char == "r" else 88)))
    return notes


def bass_root_fifth(ctx: BarContext) -> list[Note]:
    root = bass_root(ctx)
    fifth = root + 7 if root + 7 <= 52 else root - 5
    if ctx.variant % 2 == 0:
        return [make_note(ctx.bar_start, 1.9, root, humanise(ctx, 96)),
                make_note(ctx.bar_start + 2, 1.9, fifth, humanise(ctx, 88))]
    return [make_note(ctx.bar_start, 1.4, root, humanise(ctx, 96)),
            make_note(ctx.bar_start + 1.5, 0.45, root, humanise(ctx, 80)),
            make_note(ctx.bar_start + 2, 1.9, fifth, humanise(ctx, 88))]


# --------------------------------------------------------------------------------------------------------------
# Piano
# --------------------------------------------------------------------------------------------------------------

PIANO_CENTER = 64


def piano_block_chords(ctx: BarContext) -> list[Note]:
    voicing = close_voicing(ctx.chord, PIANO_CENTER + (3 if ctx.in_b else 0), seventh=ctx.variant % 2 == 1)
    left = nearest_pitch(ctx.chord.root, 43)
    hits = [(0.0, 3.9)] if ctx.variant % 3 != 2 else [(0.0, 1.9), (2.0, 1.9)]
    notes = []
    for offset, length in hits:
        notes += [make_note(ctx.bar_start + offset, length, pitch, humanise(ctx, 74)) for pitch in voicing]
        notes += [make_note(ctx.bar_start + offset, length, left, humanise(ctx, 70)),
                  make_note(ctx.bar_start + offset, length, left - 12, humanise(ctx, 64))]
    return notes


def piano_offbeat_stabs(ctx: BarContext) -> list[Note]:
    voicing = close_voicing(ctx.chord, PIANO_CENTER + 2)
    pattern = ("..x...x...x...x.", "..x...x.x.x...x.", "..x..x....x..x..")[ctx.variant % 3]
    notes = []
    for beat, _ in grid_hits(pattern, ctx.bar_start):
        notes += [make_note(beat, 0.2, pitch, humanise(ctx, 84)) for pitch in voicing]
    return notes


def piano_arpeggio(ctx: BarContext) -> list[Note]:
    low = close_voicing(ctx.chord, 57)
    up = low + [pitch + 12 for pitch in low]
    sequence = up + up[-2:0:-1]
    per_bar = 8 if ctx.variant % 2 == 0 else 16
    step = BEATS_PER_BAR / per_bar
    return [make_note(ctx.bar_start + index * step, step * 1.6, sequence[index % len(sequence)],
                      humanise(ctx, 80 if index % 4 == 0 else 68)) for index in range(per_bar)]


def piano_ballad(ctx: BarContext) -> list[Note]:
    root = nearest_pitch(ctx.chord.root, 43)
    voicing = close_voicing(ctx.chord, PIANO_CENTER, seventh=ctx.variant % 2 == 1)
    notes = [make_note(ctx.bar_start, 1.9, root, humanise(ctx, 72)),
             make_note(ctx.bar_start + 2, 1.9, root + 7, humanise(ctx, 66))]
    for beat in range(4):
        notes += [make_note(ctx.bar_start + beat, 0.9, pitch, humanise(ctx, 62 if beat % 2 else 70))
                  for pitch in voicing]
    return notes


def piano_charleston(ctx: BarContext) -> list[Note]:
    root = ctx.chord.root
    third = (root + ctx.chord.tones()[1]) % 12
    seventh = (root + ctx.chord.tones(seventh=True)[3]) % 12
    shell = sorted({nearest_pitch(third, 62), nearest_pitch(seventh, 62), nearest_pitch((root + 2) % 12, 67)})
    left = nearest_pitch(root, 48)
    hits = ((0.0, 1.4), (1.5, 0.4)) if ctx.variant % 2 == 0 else ((0.0, 0.9), (2.5, 0.9))
    notes = []
    for offset, length in hits:
        notes += [make_note(ctx.bar_start + offset, length, pitch, humanise(ctx, 76)) for pitch in shell + [left]]
    return notes


# --------------------------------------------------------------------------------------------------------------
# Guitar
# --------------------------------------------------------------------------------------------------------------


def guitar_voicing(chord: Chord, low_root_around: int = 45) -> list[int]:
    """A six-string-like open voicing: root low, then fifth, root, third, fifth, root going up."""
    root = nearest_pitch(chord.root, low_root_around)
    third = chord.tones()[1]
    return [root, root + 7, root + 12, root + 12 + third, root + 19, root + 24]


def guitar_strum(ctx: BarContext) -> list[Note]:
    voicing = guitar_voicing(ctx.chord)
    pattern = ("D.DU.UDU", "D.D.DUDU", "D..UD.DU")[ctx.variant % 3]
    notes = []
    for index, stroke in enumerate(pattern):
        if stroke == ".":
            continue
        strings = voicing if stroke == "D" else voicing[::-1][:4]
        start = ctx.bar_start + index * 0.5
        for order, pitch in enumerate(strings):
            # A strum sounds the strings one after another (about 10 ms apart at 120 BPM).
            notes.append(make_note(start + order * 0.02, 0.5, pitch, humanise(ctx, 84 if stroke == "D" else 68)))
    return notes


def guitar_power_chords(ctx: BarContext) -> list[Note]:
    root = nearest_pitch(ctx.chord.root, 42)
    shape = [root, root + 7, root + 12]
    pattern = ("XxxxXxxx", "X.xxX.xx", "XxxXxxXx")[ctx.variant % 3]
    notes = []
    for index, char in enumerate(pattern):
        if char == ".":
            continue
        length = 0.45 if char == "X" else 0.25  # accents ring, the rest is palm-muted
        notes += [make_note(ctx.bar_start + index * 0.5, length, pitch, humanise(ctx, 104 if char == "X" else 86))
                  for pitch in shape]
    return notes


def guitar_fingerpick(ctx: BarContext) -> list[Note]:
    voicing = guitar_voicing(ctx.chord)
    bass_line = [voicing[0], voicing[1], voicing[0] + 12 if ctx.variant % 2 else voicing[0], voicing[1]]
    trebles = voicing[3:]
    notes = []
    for beat in range(4):
        notes.append(make_note(ctx.bar_start + beat, 0.9, bass_line[beat], humanise(ctx, 80)))
        notes.append(make_note(ctx.bar_start + beat + 0.5, 0.9, trebles[(beat + ctx.variant) % len(trebles)],
                               humanise(ctx, 70)))
    return notes


def guitar_funk_chops(ctx: BarContext) -> list[Note]:
    voicing = close_voicing(ctx.chord, 69, seventh=True)[-3:]
    pattern = ("x.xx.x.x..x.x.xx", ".x.x.xx..x.x.xx.", "x..x.x.xx.x..x.x")[ctx.variant % 3]
    notes = []
    for beat, _ in grid_hits(pattern, ctx.bar_start):
        notes += [make_note(beat, 0.12, pitch, humanise(ctx, 90)) for pitch in voicing]
    return notes


def guitar_jazz_comp(ctx: BarContext) -> list[Note]:
    root = nearest_pitch(ctx.chord.root, 45)
    tones = ctx.chord.tones(seventh=True)
    shell = [root, root + tones[3], root + 12 + tones[1]]
    notes = []
    for beat in range(4):
        accent = beat % 2 == 1 if ctx.variant % 2 == 0 else beat % 2 == 0
        notes += [make_note(ctx.bar_start + beat, 0.6, pitch, humanise(ctx, 80 if accent else 66)) for pitch in shell]
    return notes


GUITAR_RIFFS = ((0, 3, 5, 3, 0, -2, 0, 7), (0, 0, 12, 0, 10, 0, 7, 5), (0, 7, 10, 7, 12, 10, 7, 5))


def guitar_riff(ctx: BarContext) -> list[Note]:
    root = nearest_pitch(ctx.chord.root, 52)
    riff = GUITAR_RIFFS[ctx.variant % len(GUITAR_RIFFS)]
    pentatonic = (0, 3, 5, 7, 10, 12) if ctx.chord.minor else (0, 2, 4, 7, 9, 12)

    def snap(interval: int) -> int:
        # Keep the riff's contour but land on the chord's pentatonic scale.
        octave, within = divmod(interval, 12)
        return 12 * octave + min(pentatonic, key=lambda step: abs(step - within))

    return [make_note(ctx.bar_start + index * 0.5, 0.4, root + snap(interval),
                      humanise(ctx, 96 if index % 2 == 0 else 84)) for index, interval in enumerate(riff)]


# --------------------------------------------------------------------------------------------------------------
# Others: strings, brass, organ, synths and reeds
# --------------------------------------------------------------------------------------------------------------


def others_pad(ctx: BarContext) -> list[Note]:
    voicing = close_voicing(ctx.chord, 67 + (5 if ctx.in_b else 0), seventh=ctx.variant % 2 == 1)
    return [make_note(ctx.bar_start, 3.95, pitch, humanise(ctx, 72, 3)) for pitch in voicing]


def others_organ_comp(ctx: BarContext) -> list[Note]:
    voicing = close_voicing(ctx.chord, 64, seventh=ctx.variant % 2 == 0)
    hits = ((0.0, 1.9), (2.0, 1.4), (3.5, 0.45)) if ctx.variant % 3 != 1 else ((0.0, 0.9), (1.0, 0.9), (2.5, 1.4))
    notes = []
    for offset, length in hits:
        notes += [make_note(ctx.bar_start + offset, length, pitch, humanise(ctx, 78, 3)) for pitch in voicing]
    return notes


def others_brass_stabs(ctx: BarContext) -> list[Note]:
    voicing = close_voicing(ctx.chord, 70)
    pattern = ("x..x..x...x.....", "x.....x..x..x...", "...x..x.....x.x.")[ctx.variant % 3]
    notes = []
    for beat, _ in grid_hits(pattern, ctx.bar_start):
        notes += [make_note(beat, 0.3, pitch, humanise(ctx, 100)) for pitch in voicing]
    return notes


def others_arpeggiator(ctx: BarContext) -> list[Note]:
    tones = close_voicing(ctx.chord, 72, seventh=ctx.variant % 2 == 1)
    run = tones + [pitch + 12 for pitch in tones]
    order = (run, run[::-1], run[::2] + run[1::2])[ctx.variant % 3]
    return [make_note(ctx.bar_start + index * 0.25, 0.22, order[index % len(order)],
                      humanise(ctx, 92 if index % 4 == 0 else 74, 3)) for index in range(16)]


MELODY_RHYTHMS = (
    ((0.0, 1.0), (1.0, 0.5), (1.5, 0.5), (2.0, 1.5)),
    ((0.0, 0.5), (0.5, 0.5), (1.0, 1.0), (2.5, 0.5), (3.0, 1.0)),
    ((0.0, 1.5), (1.5, 0.5), (2.0, 0.5), (2.5, 0.5), (3.0, 0.75)),
    ((0.5, 0.5), (1.0, 0.5), (1.5, 1.5), (3.0, 1.0)),
)


def others_lead_melody(ctx: BarContext) -> list[Note]:
    pitches = scale_pitches(ctx.tonic, ctx.scale, 65, 86)
    chord_pcs = set(chord_pitch_classes(ctx.chord))
    rhythm = MELODY_RHYTHMS[(ctx.variant + (1 if ctx.in_b else 0)) % len(MELODY_RHYTHMS)]
    # A motif-like walk over the scale: steps of at most a third, starting each bar on a chord tone.
    index = ctx.state.get("melody_index", len(pitches) // 2)
    chord_indices = [i for i, pitch in enumerate(pitches) if pitch % 12 in chord_pcs]
    index = min(chord_indices, key=lambda i: abs(i - index))
    notes = []
    for position, (offset, length) in enumerate(rhythm):
        if position:
            index = int(np.clip(index + ctx.rng.choice((-2, -1, -1, 1, 1, 2)), 0, len(pitches) - 1))
        notes.append(make_note(ctx.bar_start + offset, length * 0.95, pitches[index],
                               humanise(ctx, 92 if offset == int(offset) else 80)))
    ctx.state["melody_index"] = index
    return notes


def others_countermelody(ctx: BarContext) -> list[Note]:
    pitches = scale_pitches(ctx.tonic, ctx.scale, 55, 76)
    chord_pcs = set(chord_pitch_classes(ctx.chord))
    index = ctx.state.get("counter_index", len(pitches) // 2)
    chord_indices = [i for i, pitch in enumerate(pitches) if pitch % 12 in chord_pcs]
    index = min(chord_indices, key=lambda i: abs(i - index))
    first = make_note(ctx.bar_start, 1.9, pitches[index], humanise(ctx, 78, 3))
    index = int(np.clip(index + ctx.rng.choice((-1, 1)), 0, len(pitches) - 1))
    ctx.state["counter_index"] = index
    return [first, make_note(ctx.bar_start + 2, 1.9, pitches[index], humanise(ctx, 74, 3))]


#: Part -> style -> (bar pattern, GM program family of the style). Drum styles take kits instead (DRUM_STYLES).
PatternFunction = Callable[[BarContext], list[Note]]
STYLES: dict[str, dict[str, tuple[PatternFunction, tuple[int, ...]]]] = {
    "bass": {
        "root_eighths": (bass_root_eighths, (33, 34, 38)),
        "walking": (bass_walking, (32, 33, 35)),
        "octave": (bass_octave, (33, 36, 38, 39)),
        "funk": (bass_funk, (36, 37, 33)),
        "root_fifth": (bass_root_fifth, (32, 33, 34, 35)),
    },
    "piano": {
        "block_chords": (piano_block_chords, (0, 1, 2, 4)),
        "offbeat_stabs": (piano_offbeat_stabs, (4, 5, 7, 3)),
        "arpeggio": (piano_arpeggio, (0, 1, 6, 4)),
        "ballad": (piano_ballad, (0, 1, 2)),
        "charleston": (piano_charleston, (0, 4, 5)),
    },
    "guitar": {
        "strum": (guitar_strum, (24, 25, 27)),
        "power_chords": (guitar_power_chords, (29, 30)),
        "fingerpick": (guitar_fingerpick, (24, 25, 26, 27)),
        "funk_chops": (guitar_funk_chops, (27, 28)),
        "jazz_comp": (guitar_jazz_comp, (26, 27)),
        "riff": (guitar_riff, (29, 30, 27)),
    },
    "others": {
        "pad": (others_pad, (48, 49, 50, 52, 89, 91)),
        "organ_comp": (others_organ_comp, (16, 17, 18)),
        "brass_stabs": (others_brass_stabs, (61, 62, 63)),
        "arpeggiator": (others_arpeggiator, (80, 81, 84, 11)),
        "lead_melody": (others_lead_melody, (56, 65, 66, 71, 73, 22)),
        "countermelody": (others_countermelody, (40, 41, 42, 68, 70, 57)),
    },
}

#: Probability that a song has each part (Slakh-like: drums and bass nearly always, piano/guitar often missing).
PART_PROBABILITY = {"drums": 0.95, "bass": 0.95, "piano": 0.72, "guitar": 0.72, "others": 0.9}
#: Probability that an "others" part has a second stem of another style; that a present part sits out one section;
#: that a song lists one unrendered sound-effects stem.
SECOND_OTHERS_PROBABILITY = 0.3
DROPOUT_PROBABILITY = 0.25
UNRENDERED_STEM_PROBABILITY = 0.1


def style_names(part: str) -> tuple[str, ...]:
    """The style families of a part (drum styles included), in a fixed order."""
    return tuple(DRUM_STYLES) if part == "drums" else tuple(STYLES[part])


# --------------------------------------------------------------------------------------------------------------
# The composer
# --------------------------------------------------------------------------------------------------------------


def parse_numeral(numeral: str, tonic: int, mode: str) -> Chord:
    """Chord of a roman numeral in a key: degree from the mode's scale, case gives the quality."""
    degree = ROMAN_DEGREES[numeral.lower()]
    return Chord(numeral, (tonic + SCALE_STEPS[mode][degree]) % 12, numeral.islower())


def plan_sections(n_bars: int, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """``(label, start_bar, n_bars)`` of each section: 4-bar sections (2 in very short songs), A/B form."""
    section_bars = 4 if n_bars >= 8 else max(1, n_bars // 2)
    n_sections = max(1, n_bars // section_bars)
    template = FORM_TEMPLATES[rng.integers(len(FORM_TEMPLATES))]
    labels = [(template * n_sections)[index] for index in range(n_sections)]
    if n_sections >= 2 and "B" not in labels:
        labels[-1] = "B"  # every song of two or more sections has a contrasting B
    plan = []
    for index, label in enumerate(labels):
        start = index * section_bars
        length = section_bars if index < n_sections - 1 else n_bars - start  # the last one takes the remainder
        plan.append((label, start, length))
    return plan


def choose_parts(rng: np.random.Generator) -> list[str]:
    """Which parts a song has (at least two, and at least one of drums/bass)."""
    while True:
        parts = [part for part in INSTRUMENTS if rng.random() < PART_PROBABILITY[part]]
        if len(parts) >= 2 and ("drums" in parts or "bass" in parts):
            return parts


def choose_active_sections(n_sections: int, rng: np.random.Generator) -> list[int]:
    """Sections where a part plays: all, or all but one (so that silence filtering has something to do)."""
    active = list(range(n_sections))
    if n_sections >= 2 and rng.random() < DROPOUT_PROBABILITY:
        active.remove(int(rng.integers(n_sections)))
    return active


def trim_overlaps(notes: list[Note], end_tick: int) -> list[Note]:
    """Sort notes, cut them at the song end and before the next onset of the same pitch (MIDI cannot overlap them)."""
    kept = sorted((note for note in notes if note.start < end_tick), key=lambda n: (n.start, n.pitch, n.end))
    next_onset: dict[int, int] = {}
    result: list[Note] = []
    for note in reversed(kept):
        limit = min(end_tick, next_onset.get(note.pitch, end_tick))
        if note.start >= limit:  # a duplicate onset of the same pitch: keep one
            continue
        result.append(Note(note.start, min(note.end, limit), note.pitch, note.velocity))
        next_onset[note.pitch] = note.start
    return result[::-1]


def compose_song(rng: np.random.Generator, min_seconds: float, max_seconds: float) -> Song:
    """Compose one song from a seeded generator.

    Args:
        rng: the track's random generator.
        min_seconds: shortest song length.
        max_seconds: longest song length (equal to ``min_seconds`` for fixed-length songs).
    """
    tempo = int(rng.integers(70, 171))
    mode = "major" if rng.random() < 0.55 else "minor"
    tonic = int(rng.integers(12))
    duration = round(float(rng.uniform(min_seconds, max_seconds)), 2)
    bar_seconds = BEATS_PER_BAR * 60.0 / tempo
    n_bars = max(1, int(np.ceil(duration / bar_seconds - 1e-9)))

    progressions = PROGRESSIONS[mode]
    first, second = rng.choice(len(progressions), size=2, replace=False)
    progression, progression_b = progressions[first], progressions[second]
    sections = []
    for label, start_bar, length in plan_sections(n_bars, rng):
        numerals = progression if label == "A" else progression_b
        chords = tuple(parse_numeral(numerals[bar % len(numerals)], tonic, mode) for bar in range(length))
        sections.append(Section(label, start_bar, length, chords))

    parts = choose_parts(rng)
    layer_specs: list[tuple[str, str]] = []
    for part in parts:
        names = style_names(part)
        style = names[rng.integers(len(names))]
        layer_specs.append((part, style))
        if part == "others" and rng.random() < SECOND_OTHERS_PROBABILITY:
            others = [name for name in names if name != style]
            layer_specs.append((part, others[rng.integers(len(others))]))

    # Choose every layer's program, variant and sections first, then write the notes.
    plans = []
    for part, style in layer_specs:
        if part == "drums":
            kits = DRUM_STYLES[style][1]
            kit: str | None = kits[rng.integers(len(kits))]
            program = DRUM_KITS[kit]
        else:
            programs = STYLES[part][style][1]
            program, kit = int(programs[rng.integers(len(programs))]), None
        plans.append([part, style, program, kit, int(rng.integers(6)), choose_active_sections(len(sections), rng)])
    # Every section keeps at least two sounding layers (a near-empty mix section helps nobody).
    for section_index in range(len(sections)):
        resting = [plan for plan in plans if section_index not in plan[5]]
        while len(plans) - len(resting) < min(2, len(plans)):
            resting.pop()[5].append(section_index)
    song = Song(tempo=tempo, key=NOTE_NAMES[tonic], mode=mode, progression=tuple(progression),
                progression_b=tuple(progression_b), sections=sections, duration_seconds=duration, layers=[])
    for part, style, program, kit, variant, active in plans:
        notes: list[Note] = []
        state: dict = {}
        for section_index, section in enumerate(sections):
            if section_index not in active:
                continue
            for bar in range(section.n_bars):
                following = section.chords[bar + 1] if bar + 1 < section.n_bars else (
                    sections[section_index + 1].chords[0] if section_index + 1 < len(sections) else section.chords[0])
                ctx = BarContext(bar_start=float((section.start_bar + bar) * BEATS_PER_BAR), chord=section.chords[bar],
                                 next_chord=following, tonic=tonic, scale=SCALE_STEPS[mode],
                                 section_label=section.label, bar_in_section=bar, section_bars=section.n_bars,
                                 variant=variant, rng=rng, state=state)
                notes += drum_bar(style, ctx) if part == "drums" else STYLES[part][style][0](ctx)
        song.layers.append(Layer(part=part, style=style, program=program, is_drum=part == "drums",
                                 notes=trim_overlaps(notes, song.end_tick), active_sections=sorted(active), kit=kit,
                                 variant=variant))
    if rng.random() < UNRENDERED_STEM_PROBABILITY:
        song.unrendered_programs.append(int(rng.integers(120, 128)))
    return song


# --------------------------------------------------------------------------------------------------------------
# MIDI writing
# --------------------------------------------------------------------------------------------------------------


def _conductor_track(song: Song) -> mido.MidiTrack:
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=song.microseconds_per_beat, time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, clocks_per_click=24,
                                  notated_32nd_notes_per_beat=8, time=0))
    key = song.key + ("m" if song.mode == "minor" else "")
    track.append(mido.MetaMessage("key_signature", key=key, time=0))
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def _layer_track(layer: Layer, channel: int, name: str) -> mido.MidiTrack:
    events: list[tuple[int, int, int, mido.Message]] = []
    for note in layer.notes:
        # Note-offs sort before note-ons at the same tick so a repeated pitch is released before it is struck again.
        events.append((note.start, 1, note.pitch, mido.Message("note_on", channel=channel, note=note.pitch,
                                                                velocity=note.velocity)))
        events.append((note.end, 0, note.pitch, mido.Message("note_off", channel=channel, note=note.pitch,
                                                              velocity=0)))
    events.sort(key=lambda event: event[:3])
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.Message("program_change", channel=channel, program=layer.program, time=0))
    track.append(mido.Message("control_change", channel=channel, control=7, value=100, time=0))
    previous = 0
    for tick, _, _, message in events:
        track.append(message.copy(time=tick - previous))
        previous = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def midi_channel(layer_index: int, is_drum: bool) -> int:
    """Channel of a layer in ``all_src.mid``: drums on 10, others in order skipping it."""
    if is_drum:
        return DRUM_CHANNEL
    channel = layer_index % 15
    return channel + 1 if channel >= DRUM_CHANNEL else channel


def song_to_midi_bytes(song: Song, layer_indices: Sequence[int], names: Sequence[str]) -> bytes:
    """A type-1 Standard MIDI File holding the tempo track and the given layers (one per track).

    Used for ``MIDI/SXX.mid`` (one layer) and ``all_src.mid`` (all layers) by :mod:`partsim_core.data.synth`.
    """
    midi = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    midi.tracks.append(_conductor_track(song))
    for layer_index, name in zip(layer_indices, names, strict=True):
        layer = song.layers[layer_index]
        midi.tracks.append(_layer_track(layer, midi_channel(layer_index, layer.is_drum), name))
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()
