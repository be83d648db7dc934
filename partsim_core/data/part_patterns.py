"""Per-part bar patterns of the mini-Slakh composer: drum styles (step patterns and kits), bass, piano, guitar and
"others" patterns, and the style table :data:`STYLES` mapping each part's style to its pattern and GM program family.

A pattern takes a :class:`~partsim_core.data.music.BarContext` and returns the notes of one bar; everything here is
pure (no I/O). The composer that picks styles and calls the patterns is :mod:`partsim_core.data.compose`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from partsim_core.data.music import (
    BEATS_PER_BAR,
    CLAP,
    CLOSED_HAT,
    CRASH,
    HIGH_TOM,
    KICK,
    LOW_TOM,
    MARACAS,
    MID_TOM,
    OPEN_HAT,
    PEDAL_HAT,
    RIDE,
    RIMSHOT,
    SNARE,
    STEP_VELOCITY,
    TAMBOURINE,
    BarContext,
    Chord,
    Note,
    chord_pitch_classes,
    close_voicing,
    grid_hits,
    humanise,
    make_note,
    nearest_pitch,
    scale_pitches,
)

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


def style_names(part: str) -> tuple[str, ...]:
    """The style families of a part (drum styles included), in a fixed order."""
    return tuple(DRUM_STYLES) if part == "drums" else tuple(STYLES[part])
