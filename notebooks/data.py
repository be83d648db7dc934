# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data
#
# **What this chapter reproduces.** Every chapter of the thesis trains and evaluates on Slakh2100 (redux): songs
# rendered from MIDI, with one audio stem per instrument, grouped into the five parts **drums, bass, piano,
# guitar, others** by the official `band.yaml` recipe (thesis 3.3 and 4.4.1). This chapter shows the dataset the
# book was built with: how many tracks each split holds, how much of each part is actually playing (the silence
# rule of thesis 3.3.1: a segment whose mean power is below 0.0001 counts as silent), the test-set filter of
# thesis 4.4.1, the tempo classes that pseudo pieces are drawn from, spectrograms of a mix and its parts through
# the log-mel front end every model uses, a few audio examples, and, for the generated dataset, the ground truth
# of which musical style each part was composed in.
#
# Unless the book is built with `--data-root`, the dataset is the embedded **mini-Slakh**: songs composed
# procedurally and rendered with a General MIDI SoundFont into exactly the Slakh2100 redux layout, so that the same
# reader serves the real dataset and the generated one.

# %% tags=["parameters"]
preset = "smoke"  # smoke | default | paper (partsim_core.presets)
data_root = ""  # a Slakh2100-format folder, or empty for the embedded generated dataset of the preset

# %%
from partsim_core.book.build import setup_notebook

setup_notebook()  # plotly figures as offline HTML divs, pandas display options

# %%
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from IPython.display import HTML, Audio, display
from plotly.subplots import make_subplots

from partsim_core import INSTRUMENTS
from partsim_core.data.dataset import resolve_dataset_root
from partsim_core.data.cache import StemCache
from partsim_core.data.segments import filter_test_tracks, non_silent_seconds, tempo_classes, track_tempo
from partsim_core.data.slakh import open_slakh
from partsim_core.data.synth import read_ground_truth
from partsim_core.frontend import log_mel
from partsim_core.presets import get_preset

settings = get_preset(preset)
root = resolve_dataset_root(preset, data_root)
dataset = open_slakh(root)
cache = StemCache(dataset, sample_rate=settings.frontend.sample_rate)
# Tracks the redux release omits (duplicates) take no part in any chapter.
SPLITS = [split for split in ("train", "validation", "test") if dataset.tracks(split)]
tracks = [track for split in SPLITS for track in dataset.tracks(split)]
print(f"preset {preset!r}: {len(tracks)} tracks ({dataset.variant}) at {root.name}; "
      f"analysed at {cache.sample_rate} Hz")

# %% [markdown]
# ## Tracks, splits and parts
#
# Number of tracks and hours of audio per split, and how many tracks contain each part (a track "contains" a part
# when at least one of its stems with audio belongs to that part's group).

# %%
split_rows = []
for split in SPLITS:
    split_tracks = dataset.tracks(split)
    minutes = sum(len(cache.get(track, "mix")) for track in split_tracks) / cache.sample_rate / 60
    row = {"split": split, "tracks": len(split_tracks), "minutes of audio": minutes}
    for part in INSTRUMENTS:
        row[f"with {part}"] = sum(part in track.stems_by_group() for track in split_tracks)
    split_rows.append(row)
split_table = pd.DataFrame(split_rows).set_index("split")
split_table.loc["total"] = split_table.sum()
split_table["tracks"] = split_table["tracks"].astype(int)
split_table

# %% [markdown]
# Stems per part: how many individual instrument stems feed each part (the "others" part gathers everything
# outside the four named groups, e.g. strings, brass, synth leads and pads).

# %%
stem_counts = pd.DataFrame(
    [{"split": track.split, "part": stem.group, "stems": 1}
     for track in tracks for stem in track.stems if stem.audio_path is not None]
).pivot_table(index="split", columns="part", values="stems", aggfunc="sum", fill_value=0)
stem_counts.reindex(index=SPLITS, columns=[part for part in INSTRUMENTS if part in stem_counts.columns])

# %% [markdown]
# ## How long each part is playing
#
# Non-silent time per part and split: each part is cut into non-overlapping segments of the preset's segment
# length, and a segment counts when its mean power reaches the thesis's silence threshold. This is the quantity
# that decides which segments can serve as triplet anchors and which test tracks survive the filter below.

# %%
segment_seconds = settings.segment_seconds
duration_rows = []
for track in tracks:
    present = track.stems_by_group()
    for part in INSTRUMENTS:
        if part in present:
            audio = cache.get(track, part)
            duration_rows.append({
                "split": track.split, "track": track.track_id, "part": part,
                "non-silent seconds": non_silent_seconds(audio, cache.sample_rate, segment_seconds,
                                                         settings.silence_threshold),
                "track seconds": len(audio) / cache.sample_rate,
            })
durations = pd.DataFrame(duration_rows)
per_split = durations.pivot_table(index="split", columns="part", values="non-silent seconds", aggfunc="sum")
per_split = (per_split / 60).reindex(index=SPLITS, columns=[p for p in INSTRUMENTS if p in per_split.columns])
fig = px.bar(
    per_split.reset_index().melt(id_vars="split", var_name="part", value_name="minutes"),
    x="part", y="minutes", color="split", barmode="group",
    title=f"Non-silent minutes per part ({segment_seconds:g}-s segments, threshold {settings.silence_threshold:g})",
)
fig.show()
per_split.round(2).rename_axis(columns="non-silent minutes")

# %% [markdown]
# Share of each track that a part is playing (non-silent time over track length), over all tracks that contain
# the part. Drums and bass tend to play throughout; the other parts come and go with the song's sections.

# %%
durations["share playing"] = durations["non-silent seconds"] / durations["track seconds"]
fig = px.box(durations, x="part", y="share playing", color="split", points="all",
             category_orders={"part": list(INSTRUMENTS), "split": SPLITS},
             title="Share of the track during which each part is non-silent")
fig.update_yaxes(range=[0, 1.05])
fig.show()

# %% [markdown]
# ## The test-set filter (thesis 4.4.1)
#
# The thesis removes the 10 % of test tracks whose shortest part is non-silent for the least time (151 -> 136
# tracks on Slakh2100 redux), so that every evaluated part has enough audio. On this dataset:

# %%
test_tracks = dataset.tracks("test")
kept_tracks, filter_table = filter_test_tracks(cache, test_tracks, fraction=0.1, seconds=segment_seconds,
                                               progress=False)
print(f"test tracks: {len(test_tracks)} -> {len(kept_tracks)} after removing "
      f"{len(test_tracks) - len(kept_tracks)} (floor of 10 %)")
filter_table.sort_values("shortest_non_silent_s")

# %% [markdown]
# ## Tempo classes (thesis 4.4.1)
#
# Pseudo pieces (chapter 4) mix parts of different tracks that share a tempo class, so that the sum sounds
# plausible. The thesis uses 36 equal-population classes over the training tracks; small sets use fewer classes
# (at least four tracks per class).

# %%
train_tracks = dataset.tracks("train")
tempos = {track.track_id: track_tempo(track) for track in train_tracks}
classes = tempo_classes(tempos)
tempo_table = pd.DataFrame({"tempo (BPM)": tempos, "tempo class": classes}).sort_values("tempo (BPM)")
fig = px.scatter(tempo_table.reset_index(names="track"), x="tempo (BPM)", y="tempo class", hover_name="track",
                 title=f"Tempo of the {len(tempos)} training tracks and their "
                       f"{len(set(classes.values()))} tempo classes")
fig.show()

# %% [markdown]
# ## A mix and its parts through the front end
#
# Log-mel spectrograms, as every model in the book sees them (the preset's front end: sample rate, window, hop and
# mel bins; each spectrogram normalised to [0, 1] on its own), of the first seconds of one test track: the mix on
# top, then each part. A part the track does not have is shown as silence.

# %%
example = (kept_tracks or test_tracks or tracks)[0]
excerpt_seconds = 8.0
parts_audio = cache.get_all(example)
n_samples = min(len(parts_audio["mix"]), int(excerpt_seconds * cache.sample_rate))
rows = ["mix", *INSTRUMENTS]
batch = np.stack([np.asarray(parts_audio[name][:n_samples], dtype=np.float32) for name in rows])
spectrograms = log_mel(batch, settings.frontend).numpy()
frame_seconds = settings.frontend.hop_length / settings.frontend.sample_rate
times = np.arange(spectrograms.shape[-1]) * frame_seconds
fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.02, subplot_titles=rows)
for index, name in enumerate(rows):
    fig.add_trace(
        go.Heatmap(z=np.round(spectrograms[index], 2), x=np.round(times, 3), coloraxis="coloraxis",
                   hovertemplate="t=%{x:.2f} s, mel bin %{y}: %{z:.2f}<extra>" + name + "</extra>"),
        row=index + 1, col=1,
    )
fig.update_layout(height=150 * len(rows) + 80, coloraxis={"colorscale": "Magma", "colorbar": {"title": "level"}},
                  title=f"{example.track_id} ({example.split}): log-mel, {settings.frontend.n_mels} bins, "
                        f"first {n_samples / cache.sample_rate:.1f} s")
fig.update_xaxes(title_text="time (s)", row=len(rows), col=1)
fig.show()

# %% [markdown]
# ## Listen
#
# Five-second excerpts of two test tracks: the mix and each part the track has. They are resampled to 8 kHz to
# keep this page small, so they sound duller than the data the models use.

# %%
listen_rate = 8000
listen_seconds = 5.0
listen_cache = StemCache(dataset, sample_rate=listen_rate)
listen_tracks = (kept_tracks or test_tracks or tracks)[:2]
header = "".join(f"<th>{track.track_id}</th>" for track in listen_tracks)
html_rows = []
for name in ["mix", *INSTRUMENTS]:
    cells = []
    for track in listen_tracks:
        if name != "mix" and name not in track.stems_by_group():
            cells.append("<td>(no such part)</td>")
            continue
        clip = np.asarray(listen_cache.get(track, name)[: int(listen_seconds * listen_rate)], dtype=np.float32)
        cells.append(f"<td>{Audio(clip, rate=listen_rate)._repr_html_() if np.any(clip) else '(silent)'}</td>")
    html_rows.append(f"<tr><th>{name}</th>{''.join(cells)}</tr>")
display(HTML(f"<table class='partsim-audio-table'><tr><th></th>{header}</tr>{''.join(html_rows)}</table>"))

# %% [markdown]
# ## Ground truth of the generated dataset
#
# The generator records, for every song, its tempo, key and sections, and for every part the *style*: the pattern
# family it was composed from ("-": the song has no such part). Parts that share a style are
# similar by construction, which is what lets the smaller presets check part-level similarity without listeners.
# Real Slakh2100 has no such file.

# %%
ground_truth = read_ground_truth(root)
if ground_truth is not None:
    generator = ground_truth.get("generator", {})
    print("generator: " + ", ".join(f"{key} {generator.get(key)}"
                                    for key in ("name", "version", "preset", "seed", "soundfont")))
    song_rows = []
    for track_id, song in sorted(ground_truth["tracks"].items()):
        row = {"track": track_id, "split": song.get("split"), "tempo": song.get("tempo"),
               "key": f"{song.get('key', '')} {song.get('mode', '')}".strip()}
        for part in INSTRUMENTS:
            row[part] = song.get("parts", {}).get(part, {}).get("style", "-")
        song_rows.append(row)
    style_table = pd.DataFrame(song_rows).set_index("track")
    display(style_table)
    style_counts = pd.DataFrame(
        [{"part": part, "style": info.get("style"), "tracks": 1}
         for song in ground_truth["tracks"].values() for part, info in song.get("parts", {}).items()]
    ).pivot_table(index="style", columns="part", values="tracks", aggfunc="sum", fill_value=0)
    style_counts = style_counts.reindex(columns=[part for part in INSTRUMENTS if part in style_counts.columns])
    display(style_counts.rename_axis(columns="tracks per style"))
else:
    print(f"{root.name} has no partsim_ground_truth.json: not a generated dataset (e.g. real Slakh2100), "
          "so there is no style ground truth to show.")

# %% [markdown]
# ## What differs from the thesis and why
#
# * **Size and length.** Slakh2100 redux has 1289 / 270 / 151 train / validation / test tracks of several minutes
#   each; the generated presets have far fewer and shorter songs, so that the whole book runs on two CPU cores.
#   Built with `--data-root` pointing at the real dataset and `--preset paper`, this chapter shows the thesis's data.
# * **Sample rate.** The thesis works at 44.1 kHz; the `smoke` and `default` presets analyse audio at a lower rate
#   (see the first cell's output), which shrinks every spectrogram and speeds up every model.
# * **Rendering.** Slakh2100 was rendered with professional sample-based instruments; the generator uses one
#   small General MIDI SoundFont, so timbres within a part vary less than in the real data.
# * **Ground truth.** Only the generated dataset knows which parts are "the same style"; on real data, part-level
#   similarity comes only from the triplets and the listening test, as in the thesis.
