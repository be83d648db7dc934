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
one or all of its layers into Standard MIDI File bytes. The song data types, keys, chords and General-MIDI tables
are in :mod:`partsim_core.data.music`; the per-part bar patterns and the style table in
:mod:`partsim_core.data.part_patterns`.

**Style mixes** (opt-in, :data:`STYLE_MIXES`): ``"default"`` is the generator every preset's dataset uses (its
output is unchanged by the option). ``"shifted"`` renders another *style mix* from the same SoundFont: each
melodic style plays the *other* GM programs of its programs' GM families (e.g. the bass style ``walking``, family
32/33/35, plays 34/36/37/38/39; a part's programs stay in the GM range that maps it to its Slakh group), drum styles
use the kits the default leaves out, and styles are drawn with geometrically decaying weights instead of uniformly.
Chapter 4's separator crossover trains one separator on such a rendering, so that it is tested on renderings it
was not trained on (:mod:`partsim_core.csn.crossover`). Rendering with another SoundFont (``$PARTSIM_SOUNDFONT``)
is the stronger test for users who have one; this machine ships only ``TimGM6mb.sf2``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import mido
import numpy as np

from partsim_core import INSTRUMENTS
from partsim_core.data.music import (
    BEATS_PER_BAR,
    DRUM_CHANNEL,
    DRUM_KITS,
    FORM_TEMPLATES,
    NOTE_NAMES,
    PROGRESSIONS,
    ROMAN_DEGREES,
    SCALE_STEPS,
    TICKS_PER_BEAT,
    BarContext,
    Chord,
    Layer,
    Note,
    Section,
    Song,
)
from partsim_core.data.part_patterns import DRUM_STYLES, STYLES, drum_bar, style_names
from partsim_core.errors import PartsimError

#: Probability that a song has each part (Slakh-like: drums and bass nearly always, piano/guitar often missing).
PART_PROBABILITY = {"drums": 0.95, "bass": 0.95, "piano": 0.72, "guitar": 0.72, "others": 0.9}
#: Probability that an "others" part has a second stem of another style; that a present part sits out one section;
#: that a song lists one unrendered sound-effects stem.
SECOND_OTHERS_PROBABILITY = 0.3
DROPOUT_PROBABILITY = 0.25
UNRENDERED_STEM_PROBABILITY = 0.1


@dataclass(frozen=True)
class StyleMix:
    """How a generated dataset draws styles and programs.

    Attributes:
        name: the mix's name (``"default"`` for every preset's dataset).
        other_programs: play each style's GM-family complement instead of its own programs (drums: the other kits).
        style_decay: style ``i`` of a part (in :func:`~partsim_core.data.part_patterns.style_names` order) is drawn
            with weight ``style_decay ** i``; 1.0 = uniform (the default draw).
    """

    name: str
    other_programs: bool = False
    style_decay: float = 1.0


#: The style mixes :func:`compose_song` knows; ``"default"`` is the generator's, the others are opt-in.
STYLE_MIXES: dict[str, StyleMix] = {
    "default": StyleMix("default"),
    "shifted": StyleMix("shifted", other_programs=True, style_decay=0.6),
}
DEFAULT_STYLE_MIX = "default"


def get_style_mix(style_mix: str | StyleMix) -> StyleMix:
    """A :class:`StyleMix` by name (or itself).

    Raises:
        PartsimError: an unknown name.
    """
    if isinstance(style_mix, StyleMix):
        return style_mix
    try:
        return STYLE_MIXES[style_mix]
    except (KeyError, TypeError):
        raise PartsimError(f"unknown style mix {style_mix!r}; choose one of: {', '.join(STYLE_MIXES)}") from None


def style_programs(part: str, style: str, style_mix: StyleMix = STYLE_MIXES["default"]) -> tuple[int, ...]:
    """The GM programs a melodic style plays under a style mix.

    With ``other_programs`` the programs of the same GM families (``program // 8``) that the style does not use,
    in ascending order (the style's own programs when its families hold no others).
    """
    programs = STYLES[part][style][1]
    if not style_mix.other_programs:
        return programs
    families = {program // 8 for program in programs}
    others = tuple(program for family in sorted(families) for program in range(8 * family, 8 * family + 8)
                   if program not in programs)
    return others or programs


def style_kits(style: str, style_mix: StyleMix = STYLE_MIXES["default"]) -> tuple[str, ...]:
    """The drum kits of a drum style under a style mix (with ``other_programs``: the kits it does not use)."""
    kits = DRUM_STYLES[style][1]
    if not style_mix.other_programs:
        return kits
    return tuple(kit for kit in DRUM_KITS if kit not in kits) or kits


def choose_style(names: Sequence[str], rng: np.random.Generator, style_mix: StyleMix = STYLE_MIXES["default"]) -> str:
    """One of ``names``: uniform (one ``rng.integers`` draw, the default generator's) or by decaying weights."""
    if style_mix.style_decay == 1.0:
        return names[rng.integers(len(names))]
    weights = style_mix.style_decay ** np.arange(len(names), dtype=np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]



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


def compose_song(rng: np.random.Generator, min_seconds: float, max_seconds: float,
                 style_mix: str | StyleMix = DEFAULT_STYLE_MIX) -> Song:
    """Compose one song from a seeded generator.

    Args:
        rng: the track's random generator.
        min_seconds: shortest song length.
        max_seconds: longest song length (equal to ``min_seconds`` for fixed-length songs).
        style_mix: a name of :data:`STYLE_MIXES` (``"default"``: the generator's draws, unchanged).

    Raises:
        PartsimError: an unknown style mix.
    """
    mix = get_style_mix(style_mix)
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
        style = choose_style(names, rng, mix)
        layer_specs.append((part, style))
        if part == "others" and rng.random() < SECOND_OTHERS_PROBABILITY:
            others = [name for name in names if name != style]
            layer_specs.append((part, choose_style(others, rng, mix)))

    # Choose every layer's program, variant and sections first, then write the notes.
    plans = []
    for part, style in layer_specs:
        if part == "drums":
            kits = style_kits(style, mix)
            kit: str | None = kits[rng.integers(len(kits))]
            program = DRUM_KITS[kit]
        else:
            programs = style_programs(part, style, mix)
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
