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
# # Chapter 3: Part-level similarity from source-separated stems
#
# **What this chapter reproduces.** Thesis chapter 3 (and the "baseline model" of 4.4.1) learns one embedding space
# per instrumental part. A music track is split into its parts by a source-separation model; each part's signal is
# turned into a log-mel spectrogram and fed to that part's own CNN (thesis Fig. 3.1, here
# `partsim_core.models.PartCNN`), trained with the triplet loss (margin 0.2) on *unsupervised* triplets: two 3-s
# segments of the same track's part are "similar", a segment of another track is "dissimilar" (3.2.2, 3.3.1). The
# learned space is evaluated by **track-ID prediction**: every non-silent 3-s test segment is assigned the majority
# track ID of its 5 nearest other test segments (3.3.2).
#
# Three kinds of network are trained, each through the book's one training engine (`partsim_core.training`):
#
# * **proposed (ideal)** - each part's network on the *ideal* stems (the parts before mixing);
# * **proposed** - each part's network on the stems *estimated* by the separator from the mix;
# * **baseline** - the same network on the mix itself (track-level similarity, Table 3.2's "music track").
#
# This notebook shows the separation quality (Table 3.1), the accuracies (Table 3.2) with the thesis's numbers
# beside ours, the training curves of every model, the t-SNE maps of Fig. 3.2, audio of a mix and its separated
# stems, how accuracy depends on the separator and on leakage, and whether the thesis's findings hold on our data.
# Every number carries a 95 % interval (bootstrap over test tracks, with `seeds > 1` over seeds too) and every
# finding a verdict decided by its interval. Every number comes from `partsim_core.baseline.run.run_chapter3`;
# this notebook only calls, shows and explains. Trained models are cached, so a second run only evaluates.

# %% tags=["parameters"]
preset = "smoke"  # smoke | default | paper (partsim_core.presets)
data_root = ""  # a Slakh2100-format folder, or empty for the embedded generated dataset of the preset
backend = "unet"  # separator: unet (ours, trained on the train split) | oracle | spleeter | demucs
epochs = 0  # epochs of every part network; 0 = the preset's
device = "auto"  # auto | cpu | cuda
seed = 0  # first training seed (the separator is trained with it)
# partsim book build passes the preset's number of seeds (3 for default).
seeds = 1  # training seeds of the networks; intervals include the seed-to-seed spread

# %%
from partsim_core.book.build import setup_notebook

setup_notebook()  # plotly figures as offline HTML divs, pandas display options

# %%
import pandas as pd
import plotly.express as px
from IPython.display import Markdown, display

from partsim_core import INSTRUMENTS
from partsim_core.baseline.findings import accuracy_gap, findings_frame, summary_lines
from partsim_core.baseline.run import run_chapter3, tsne_points
from partsim_core.baseline.tables import (
    TABLE_3_1_COLUMNS,
    intervals_frame,
    table_3_2_columns,
    values_frame,
)
from partsim_core.book.audio import audio_table
from partsim_core.book.notebook import publish_results
from partsim_core.book.thesis_tables import load_thesis_table, side_by_side
from partsim_core.book.viz import comparison_table, tsne_scatter
from partsim_core.data.dataset import load_dataset

data = load_dataset(preset, data_root)
results = run_chapter3(data, backend=backend, device=device, epochs=epochs or None,
                       seeds=range(seed, seed + seeds), progress=False)
summary = results.to_json()
settings = results.data.preset
print(f"preset {preset!r}, separator {backend!r}: {results.n_tracks['train']} training tracks, "
      f"{results.n_tracks['validation']} validation tracks, {results.n_tracks['test']} test tracks "
      f"({results.n_tracks['test_before_filter']} before chapter 3's 10 % filter); {results.epochs} epoch(s) per "
      f"network, seeds {results.seeds}, batch {settings.part_network.batch_size}, "
      f"{settings.part_network.anchors_per_track} anchors per track")
trained = [name for name, was_reused in results.reused.items() if not was_reused]
print(f"networks trained in this run: {len(trained)}, reused from the cache: {len(results.reused) - len(trained)}; "
      "seconds per step: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in results.timings.items()))

# %% [markdown]
# **Test set.** Thesis 3.3.1 removes "tracks whose number of segments (after removing silent sections) was in the
# lowest 10 %" (151 -> 136). We read it as: count each test track's non-silent, non-overlapping 3-s segments of the
# mix and drop the `floor(10 %)` tracks with the fewest. Chapter 4 words another rule (the tracks whose shortest
# non-silent *part* is shortest); each chapter uses its own (`partsim_core.baseline.filtering`).

# %% [markdown]
# ## Table 3.1: separation quality
#
# Signal-to-distortion, -interference and -artifacts ratios (dB, higher is better) of the separated parts, computed
# with `fast_bss_eval` (the package the thesis used). How: each track is cut into 10-s chunks; in each chunk the
# parts whose ideal stem is not silent are scored together (the other non-silent parts are the interference); a
# track's value is the mean over its chunks, and the table's value the mean over tracks, for the first
# `separator.metric_train_tracks` training tracks (30 on `smoke` / `default`, every training track on `paper`, as
# the thesis) and every test track; a part silent throughout a track is left out of that track. The thesis reports
# the average over the training tracks and over the test tracks without saying how tracks were cut; it separated
# with the pretrained Spleeter (5 stems) and reports drums, bass and piano only; we report all five parts. The
# interval is a bootstrap over tracks.

# %%
label = f"ours ({preset}, {backend})"
table_3_1_values = values_frame(results.table_3_1, list(TABLE_3_1_COLUMNS))
comparison_3_1 = side_by_side(load_thesis_table("3.1"), table_3_1_values, label_ours=label)
display(comparison_table(comparison_3_1, caption=f"Table 3.1 (dB): thesis (Spleeter on Slakh2100) vs {label}"))
display(intervals_frame(results.table_3_1, list(TABLE_3_1_COLUMNS), digits=2).style.set_caption(
    "Table 3.1, ours: mean [95 % interval over tracks] (dB)"))

# %%
quality = results.quality.melt(id_vars=["split", "track", "part"], value_vars=["sdr", "sir", "sar"],
                               var_name="metric", value_name="dB")
fig = px.box(quality, x="part", y="dB", color="split", facet_col="metric", points="all",
             category_orders={"part": list(INSTRUMENTS), "split": ["train", "test"], "metric": ["sdr", "sir", "sar"]},
             title=f"Separation quality per track ({backend})")
fig.show()

# %% [markdown]
# ## Table 3.2: track-ID prediction accuracy (kNN, k = 5)
#
# Share (%) of non-silent 3-s test segments (no overlap) whose track ID is the majority among their 5 nearest other
# test segments (leave-one-out, Euclidean distance; a vote tie goes to the label of the nearest tied neighbour).
# For a fair comparison of the two "proposed" rows, a segment counts as silent when the *ideal* stem is silent, for
# both ideal and separated input; the "baseline" (the track network) column uses the non-silent segments of the
# mix. The interval: percentile bootstrap over test tracks (each track's accuracy weighted by its segments, so the
# value is the pooled accuracy), and over seeds when several were trained.

# %%
columns_3_2 = table_3_2_columns()
comparison_3_2 = side_by_side(load_thesis_table("3.2"), values_frame(results.table_3_2, columns_3_2),
                              label_ours=label)
comparison_3_2 = comparison_3_2.dropna(subset=["thesis", label], how="all")  # cells neither side has
display(comparison_table(comparison_3_2, caption=f"Table 3.2 (%): thesis vs {label}"))
display(intervals_frame(results.table_3_2, columns_3_2).style.set_caption(
    "Table 3.2, ours: accuracy % [95 % interval over test tracks and seeds]"))

# %% [markdown]
# ## Training: loss per epoch of every model
#
# Train and validation triplet loss of each network (and the separator's L1 loss) per epoch. A validation loss
# still falling at the last epoch means the model stopped before converging (the `smoke` preset trains one epoch).

# %%
curves = pd.DataFrame([{"model": f"{network['run']} (seed {network['seed']})", "epoch": entry["epoch"],
                        "loss": entry[kind], "split": kind.removesuffix("_loss")}
                       for network in summary["networks"] for entry in network["history"]
                       for kind in ("train_loss", "val_loss") if entry[kind] is not None]
                      + [{"model": "separator", "epoch": entry["epoch"], "loss": entry[kind],
                          "split": kind.removesuffix("_loss")} for entry in summary["separator"]["history"]
                         for kind in ("train_loss", "val_loss") if entry[kind] is not None])
if curves.empty:
    print("no training history (every model came from a backend trained elsewhere)")
else:
    fig = px.line(curves, x="epoch", y="loss", color="model", line_dash="split", markers=True,
                  title="Loss per epoch (solid: train, dashed: validation)")
    fig.show()

# %% [markdown]
# ## Fig. 3.2: the embedding spaces, ideal vs estimated input
#
# t-SNE maps of the test embeddings of each part's network (first seed), separated input (left) and ideal input
# (right); each colour is one test track, each point a 3-s segment. Clear, separate clusters mean the part's network
# tells the tracks apart from that part alone. Up to 10 test tracks are shown (the same ones in every panel), and
# each panel has its own t-SNE, so positions are not comparable across panels.

# %%
points = tsne_points(results, max_tracks=10, seed=0)
for part in INSTRUMENTS:
    panel = points[points["part"] == part]
    if panel.empty:
        print(f"{part}: too few non-silent test segments for a map")
        continue
    cells = {row: results.table_3_2[row].get(part, {}).get("value", float("nan"))
             for row in ("proposed", "proposed (ideal)")}
    fig = tsne_scatter(panel, color="track", hover=["start_s"], facet="input",
                       title=f"{part}: separated input ({cells['proposed']:.1f} %) vs ideal input "
                             f"({cells['proposed (ideal)']:.1f} %)")
    fig.update_layout(height=380)
    fig.show()

# %% [markdown]
# ## Listen: a mix and its separated stems
#
# The first seconds of one test track: the mix, then for each part the ideal stem and the stem our separator
# estimated from the mix, at the model's sample rate (compressed files beside this page).

# %%
example = results.data.test_tracks[0]
cache = results.data.cache
clips = {"mix": {"ideal stem": cache.get(example, "mix")}}
clips |= {part: {"ideal stem": cache.get(example, part) if part in example.stems_by_group() else None,
                 "separated stem": results.separated.get(example, part)} for part in INSTRUMENTS}
display(audio_table(clips, sample_rate=cache.sample_rate, name="ch3-listen", caption=f"{example.track_id} ({backend})"))

# %% [markdown]
# ## Accuracy against separator quality
#
# The thesis argues (3.3.3, 3.4) that separation errors hurt this method, which is why chapter 4 avoids
# separation. Here the same separated-input networks are fed the test stems of separators of different quality:
# "no separation" (every part estimate is the mix itself), our U-Net after fewer epochs (on presets that train
# more than one separator epoch), and the chapter's separator. Each point is one part: its test SDR (x) and its
# track-ID accuracy (y), both with 95 % intervals over test tracks. The networks are not retrained per separator
# (that would cost five networks per point), so the curve shows how the deployed networks degrade as the separator
# gets worse. Chapter 4 draws the same comparison against the CSN on part-level measures (test pseudo pieces).

# %%
curve = pd.DataFrame([{"separator": point["separator"], "part": point["part"],
                       "SDR (dB)": point["sdr_test"]["value"],
                       "SDR error": point["sdr_test"]["high"] - point["sdr_test"]["value"],
                       "SDR error minus": point["sdr_test"]["value"] - point["sdr_test"]["low"],
                       "accuracy (%)": point["accuracy"]["value"],
                       "accuracy error": point["accuracy"]["high"] - point["accuracy"]["value"],
                       "accuracy error minus": point["accuracy"]["value"] - point["accuracy"]["low"]}
                      for point in summary["separator_quality_curve"]])
if curve.empty:
    print("no separator-quality curve in this run")
else:
    fig = px.line(curve, x="SDR (dB)", y="accuracy (%)", color="part", symbol="separator", markers=True,
                  error_x="SDR error", error_x_minus="SDR error minus", error_y="accuracy error",
                  error_y_minus="accuracy error minus", hover_data=["separator"],
                  title="Track-ID accuracy of the separated-input networks against the separator's test SDR")
    fig.show()

# %% [markdown]
# ## Track ID from leakage alone
#
# Track-ID rewards leakage: a separated "bass" stem still holds traces of the track's drums and piano, and those
# identify the track too, so separated input can reach ideal input's accuracy (or exceed it) without representing
# the bass better. To show it, each separated-input network is fed only the leakage, the separated part minus the
# ideal part (what the separator let through from the other parts, plus its artefacts), on the same test segments
# as Table 3.2. Chance is one over the number of test tracks.

# %%
leakage = summary["leakage_track_id"]
if not leakage["accuracy"]:
    print("no leakage to measure (the oracle separator returns the ideal stems)")
else:
    display(intervals_frame({"leakage only": leakage["accuracy"],
                             "separated (Table 3.2)": results.table_3_2["proposed"],
                             "ideal (Table 3.2)": results.table_3_2["proposed (ideal)"]}, list(INSTRUMENTS))
            .style.set_caption(f"Track-ID accuracy % [95 % interval]; chance {leakage['chance']:.1f} %"))

# %% [markdown]
# ## Do the thesis's findings hold here?
#
# The thesis finds (3.3.3) that (1) every part is identified less accurately from separated stems than from ideal
# ones, and (2) the loss follows separation quality: drums (best separated) lose almost nothing, piano (worst) loses
# most, while with ideal stems piano is about as accurate as drums. We add (3) a better separator gives higher
# accuracy (the curve above) and (4) the leakage alone identifies tracks above chance. Each claim is decided by the
# 95 % interval of its estimate (paired over the same test tracks and seeds): *holds* when the interval lies above
# the threshold, *does not hold* when it lies at or below it, *inconclusive* otherwise. (2) has only five parts,
# too few for an interval on a rank correlation, so it is described, not decided.

# %%
gap = accuracy_gap(results.table_3_2, results.table_3_1)
display(gap.style.format("{:.2f}", na_rep="–").set_caption("Accuracy (%) with ideal vs separated input, and test "
                                                           "separation quality (dB)"))
fig = px.scatter(gap.reset_index(), x="sdr_test", y="gap", text="part",
                 labels={"sdr_test": "test SDR of the separated part (dB)",
                         "gap": "accuracy lost by separation (percentage points)"},
                 title="Accuracy lost by separation vs separation quality, per part")
fig.update_traces(textposition="top center")
fig.show()

# %%
display(findings_frame(results.findings).style.format({"estimate": "{:.2f}", "low": "{:.2f}", "high": "{:.2f}"})
        .set_caption("Findings: estimate [95 % interval] and verdict").hide(axis="index"))
lines = summary_lines(results.findings, gap)
if preset == "smoke":
    lines.append("\n*This is the `smoke` preset: a handful of short tracks and one epoch, meant to prove that the "
                 "code runs. Its numbers are noise and say nothing about the findings; read the `default` build.*")
display(Markdown("\n".join(lines)))
publish_results("ch3", summary)  # the book build collects it into _build/results/ch3.json

# %% [markdown]
# ## What differs from the thesis and why
#
# * **Separator.** The thesis used the pretrained Spleeter (5 stems). Pretrained weights cannot be downloaded
#   here, so the default separator is our PyTorch re-implementation of Spleeter's spectrogram U-Net, trained on the
#   training split of the dataset the book is built with, for far fewer steps. Its SDR values are not comparable
#   with Table 3.1's: it is trained and tested on the same small synthetic distribution (one SoundFont), which
#   makes separation easier than Spleeter's task on Slakh2100, while its training is far shorter. With Spleeter or
#   Demucs installed locally, `backend="spleeter"` / `"demucs"` runs the same chapter with them; `backend="oracle"`
#   gives separated = ideal (a sanity check: both rows then agree).
# * **Data.** Unless built with `--data-root`, the chapter runs on the embedded generated mini-Slakh (short songs
#   composed procedurally and rendered with one small SoundFont) instead of Slakh2100's 1,289 / 270 / 151 tracks of
#   several minutes; track IDs are therefore easier or harder to tell apart than on real data, and the absolute
#   numbers are not comparable with the thesis's, only the pattern between rows and parts is.
# * **Sizes.** The `smoke` and `default` presets scale everything down so that the book builds on two CPU cores:
#   lower sample rate and fewer mel bands, narrower networks, fewer anchors per track, smaller batches and a few
#   epochs instead of 200 (see `partsim_core/presets.py`; the `paper` preset holds the thesis's settings).
# * **Early stopping and Table 3.1's training tracks.** `smoke` and `default` stop a network after 10 epochs without
#   a validation improvement and measure Table 3.1's "train" columns on the first 30 training tracks (BSS Eval is
#   slow on two cores); `paper` trains every epoch, as the thesis (which does not mention early stopping), and
#   measures every training track.
# * **Five parts instead of three.** The thesis reports drums, bass and piano; we train and evaluate all five
#   parts the later chapters use (drums, bass, piano, guitar, others), so the tables have two more columns.
# * **Network.** Fig. 3.1's layer sizes are not in our copy of the thesis; `PartCNN`'s docstring says which sizes
#   we chose and why.
