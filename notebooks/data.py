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
import plotly.express as px
import plotly.graph_objects as go
from IPython.display import display
from plotly.subplots import make_subplots

from partsim_core.book.audio import audio_table
from partsim_core.book.notebook import publish_results, setup_notebook
from partsim_core.data import summary
from partsim_core.data.dataset import load_dataset
from partsim_core.data.synth import read_ground_truth

setup_notebook()  # plotly figures as offline HTML divs, pandas display options
data = load_dataset(preset, data_root)
settings = data.preset
SPLITS = summary.present_splits(data)
print(f"preset {preset!r}: {len(summary.all_tracks(data))} tracks ({data.dataset.variant}) at {data.root.name}; "
      f"analysed at {data.cache.sample_rate} Hz")

# %% [markdown]
# ## Tracks, splits and parts
#
# Number of tracks and hours of audio per split, and how many tracks contain each part (a track "contains" a part
# when at least one of its stems with audio belongs to that part's group).

# %%
summary.split_table(data)

# %% [markdown]
# Stems per part: how many individual instrument stems feed each part (the "others" part gathers everything
# outside the four named groups, e.g. strings, brass, synth leads and pads).

# %%
summary.stem_counts(data)

# %% [markdown]
# ## How long each part is playing
#
# Non-silent time per part and split: each part is cut into non-overlapping segments of the preset's segment
# length, and a segment counts when its mean power reaches the thesis's silence threshold. This is the quantity
# that decides which segments can serve as triplet anchors and which test tracks survive the filter below.

# %%
durations = summary.part_durations(data)
per_split = summary.non_silent_minutes(durations, SPLITS)
fig = px.bar(
    per_split.reset_index().melt(id_vars="split", var_name="part", value_name="minutes"),
    x="part", y="minutes", color="split", barmode="group",
    title=f"Non-silent minutes per part ({settings.segment_seconds:g}-s segments, "
          f"threshold {settings.silence_threshold:g})",
)
fig.show()
per_split.round(2).rename_axis(columns="non-silent minutes")

# %% [markdown]
# Share of each track that a part is playing (non-silent time over track length), over all tracks that contain
# the part. Drums and bass tend to play throughout; the other parts come and go with the song's sections.

# %%
fig = px.box(durations, x="part", y="share playing", color="split", points="all",
             category_orders={"part": list(summary.GROUPS), "split": SPLITS},
             title="Share of the track during which each part is non-silent")
fig.update_yaxes(range=[0, 1.05])
fig.show()

# %% [markdown]
# ## The test-set filter (thesis 4.4.1)
#
# The thesis removes the 10 % of test tracks whose shortest part is non-silent for the least time (151 -> 136
# tracks on Slakh2100 redux), so that every evaluated part has enough audio. The table is the filter every chapter
# uses (the dataset handle's), shortest first:

# %%
counts = summary.filtered_test_counts(data)
print(f"test tracks: {counts['before']} -> {counts['kept']} after removing {counts['removed']} (floor of 10 %)")
data.filter_table.sort_values("shortest_non_silent_s")

# %% [markdown]
# ## Tempo classes (thesis 4.4.1)
#
# Pseudo pieces (chapter 4) mix parts of different tracks that share a tempo class, so that the sum sounds
# plausible. The thesis uses 36 equal-population classes over the training tracks; small sets use fewer classes
# (at least four tracks per class).

# %%
tempos = summary.tempo_table(data.dataset.tracks("train"))
fig = px.scatter(tempos.reset_index(), x="tempo (BPM)", y="tempo class", hover_name="track",
                 title=f"Tempo of the {len(tempos)} training tracks and their "
                       f"{tempos['tempo class'].nunique()} tempo classes")
fig.show()

# %% [markdown]
# ## A mix and its parts through the front end
#
# Log-mel spectrograms, as every model in the book sees them (the preset's front end: sample rate, window, hop and
# mel bins; each spectrogram normalised to [0, 1] on its own), of the first seconds of one test track: the mix on
# top, then each part. A part the track does not have is shown as silence.

# %%
example = (data.test_tracks or summary.all_tracks(data))[0]
rows = ["mix", *summary.GROUPS]
spectrograms, times = summary.excerpt_log_mel(data.cache, example, settings.frontend, seconds=8.0, parts=rows)
fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.02, subplot_titles=rows)
for index, name in enumerate(rows):
    fig.add_trace(
        go.Heatmap(z=spectrograms[index].round(2), x=times.round(3), coloraxis="coloraxis",
                   hovertemplate="t=%{x:.2f} s, mel bin %{y}: %{z:.2f}<extra>" + name + "</extra>"),
        row=index + 1, col=1,
    )
fig.update_layout(height=150 * len(rows) + 80, coloraxis={"colorscale": "Magma", "colorbar": {"title": "level"}},
                  title=f"{example.track_id} ({example.split}): log-mel, {settings.frontend.n_mels} bins, "
                        f"first {times[-1]:.1f} s")
fig.update_xaxes(title_text="time (s)", row=len(rows), col=1)
fig.show()

# %% [markdown]
# ## Listen
#
# Five-second excerpts of two test tracks: the mix and each part the track has, at the sample rate the models
# analyse (see the first cell's output).

# %%
listen_tracks = (data.test_tracks or summary.all_tracks(data))[:2]
audio_table(summary.listening_clips(data.cache, listen_tracks), sample_rate=data.cache.sample_rate,
            name="data-listen", seconds=5.0)

# %% [markdown]
# ## Ground truth of the generated dataset
#
# The generator records, for every song, its tempo, key and sections, and for every part the *style*: the pattern
# family it was composed from ("-": the song has no such part). Parts that share a style are
# similar by construction, which is what lets the smaller presets check part-level similarity without listeners.
# Real Slakh2100 has no such file.

# %%
ground_truth = read_ground_truth(data.root)
styles = summary.style_tables(ground_truth)
if styles is not None:
    generator = ground_truth.get("generator", {})
    print("generator: " + ", ".join(f"{key} {generator.get(key)}"
                                    for key in ("name", "version", "preset", "seed", "soundfont")))
    display(*styles)
else:
    print(f"{data.root.name} has no partsim_ground_truth.json: not a generated dataset (e.g. real Slakh2100), "
          "so there is no style ground truth to show.")

# %%
publish_results("data", summary.data_results(data))

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
