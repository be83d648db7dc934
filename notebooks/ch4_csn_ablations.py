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
# # Chapter 4: One network, five instrument subspaces
#
# **What this chapter reproduces.** Thesis chapter 4 replaces chapter 3's separate-then-embed pipeline by *one*
# network on the mix: a conditional similarity network (CSN) whose 640-d output is split into five 128-d subspaces,
# one per part (drums, bass, piano, guitar, others; `partsim_core.models.CSNEncoder`, thesis Fig. 4.6). A triplet
# about part *c* is compared only in *c*'s subspace (the mask m_c, eq. 4.1-4.3). Three training ideas make the
# subspaces really part-specific:
#
# * **pseudo musical pieces** (4.3.3): mixes of parts taken from different songs of one tempo class, so that two
#   inputs can share the drums but nothing else (`partsim_core.csn.pseudo_pieces`, Fig. 4.3), with basic and
#   *additional* triplets and created silences;
# * **the norm loss** (4.3.4): a subspace's norm should say whether its part sounds (eq. 4.4-4.6);
# * **pre-training** (4.3.5): the CSN first learns to reproduce chapter 3's per-part networks (eq. 4.7).
#
# Thesis Table 4.2 switches them on and off in nine conditions (a)-(i); (a) is chapter 3's baseline. This page
# trains (or reuses from the artefact cache) every condition for each seed, then evaluates them as thesis 4.4.2
# does: track-ID accuracy per subspace (Table 4.1), part-level labels on test pseudo pieces (4.2), instrument
# identification from subspace norms (4.3), distance-matrix correlations (4.4, 4.5) and agreement with listeners
# (4.6), with the thesis's numbers beside ours. Every number comes from `partsim_core.csn.run.run_chapter4`; this
# page only calls, shows and explains.
#
# **Intervals and verdicts.** Every accuracy, rate and correlation we print carries a 95 % interval: a percentile
# bootstrap over the test tracks (the unit of resampling), with the training seeds drawn as well, so the interval
# includes the seed-to-seed spread (correlations: per-track jackknife pseudo-values, bootstrapped the same way;
# Table 4.6: the exact Clopper-Pearson interval over responses). A finding compares two conditions on the *same*
# test tracks by paired resampling, and its verdict follows one rule: the claim "difference > 0" **holds** when the
# whole interval lies above 0, **does not hold** when it lies at or below 0, and is **inconclusive** otherwise
# (`partsim_core.stats`).

# %% tags=["parameters"]
preset = "smoke"  # smoke | default | paper (partsim_core.presets)
data_root = ""  # a Slakh2100-format folder, or empty for the embedded generated dataset of the preset
conditions = "all"  # "all" (a-k) or comma-separated letters, e.g. "a,e,i"
epochs = 0  # triplet-training epochs of every CSN condition; 0 = the preset's
device = "auto"  # auto | cpu | cuda
seed = 0  # first training seed; also seeds the test pseudo pieces and the simulated listening test
# partsim book build passes the preset's number of seeds (3 for default).
seeds = 1  # training seeds per condition (seed .. seed + seeds - 1); intervals include their spread

# %%
from partsim_core.book.build import setup_notebook

setup_notebook()  # plotly figures as offline HTML divs, pandas display options

# %%
import pandas as pd
import plotly.express as px
from IPython.display import Markdown, display
from plotly.subplots import make_subplots

from partsim_core import INSTRUMENTS
from partsim_core.book.notebook import publish_results
from partsim_core.book.thesis_tables import load_thesis_table, side_by_side
from partsim_core.book.viz import findings_table, heatmap, quality_curve, tsne_scatter, wide_comparison
from partsim_core.csn.conditions import conditions_table
from partsim_core.csn.figures import (
    dataset_tsne,
    distance_matrices,
    embedding_magnitudes,
    loss_curves,
    pseudo_tsne,
)
from partsim_core.csn.listening import paper_beside_ours
from partsim_core.csn.run import PROPOSED, run_chapter4
from partsim_core.data.dataset import load_dataset

data = load_dataset(preset, data_root)
chosen = "all" if conditions.strip().lower() == "all" else [c.strip() for c in conditions.split(",") if c.strip()]
results = run_chapter4(data, conditions=chosen, seeds=seeds, seed=seed, epochs=epochs or None, device=device,
                       progress=False)
settings = data.preset
label = f"ours ({preset})"
print(f"preset {preset!r}: {len(data.train_tracks)} training tracks, {results.n_segments['test_tracks']} test tracks "
      f"after chapter 4's 10 % filter; CSN width {settings.csn.width}, {settings.csn.triplets_per_epoch} triplets x "
      f"{epochs or settings.csn.epochs} epochs per condition, {settings.csn.pretrain_epochs} pre-training epochs, "
      f"seeds {results.seeds}")
trained = [name for name, was_reused in results.reused.items() if not was_reused]
print(f"models trained in this run: {len(trained)}, reused from the cache: {len(results.reused) - len(trained)}; "
      "seconds per step: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in results.timings.items()))


def with_intervals(name: str, digits: int, block: str | None = None, caption: str = ""):
    """Our cells (value and 95 % interval) beside the thesis's numbers."""
    thesis = load_thesis_table(name.replace("table_", "").replace("_", ".") + (block or ""))
    return results.compare(name, thesis, block).style.format(
        {"thesis": f"{{:.{digits}f}}", "ours": f"{{:.{digits}f}}", "low": f"{{:.{digits}f}}",
         "high": f"{{:.{digits}f}}"}, na_rep="–").set_caption(caption).hide(axis="index")


# %% [markdown]
# ## The conditions
#
# The switches of thesis Table 4.2 ("w/" = on). (a) is chapter 3's networks on separated stems (nothing is trained
# here that chapter 3 has not trained); (b) is the pre-trained network alone; (c)-(e) train on same-track triplets
# of dataset pieces (Fig. 4.2); (f)-(i) on pseudo pieces. Rows (j) and (k) are not in Table 4.2: they are Table
# 4.3's "w/pre, wo/norm" and "wo/pre, wo/norm" rows, which the thesis reports without a letter. Created silences
# (4.3.4) are part of every triplet-trained condition's data, dataset pieces included; the pre-training's target
# networks are trained on the pre-training pieces themselves (4.4.1).

# %%
conditions_table().replace({True: "w/", False: ""})

# %% [markdown]
# ## Training: loss per epoch
#
# Train and validation loss of every model this page uses (CSN conditions, pre-training and its target networks,
# chapter 3's networks for (a)), one line per seed. No model stops early: the thesis trains a fixed number of
# epochs. A validation loss that still falls at the last epoch means the preset trains too little.

# %%
curves = loss_curves(results)
if curves.empty:
    print("no training history")
else:
    figure = px.line(curves, x="epoch", y="loss", color="split", line_dash="seed", facet_col="model",
                     facet_col_wrap=6, markers=True, title="Train and validation loss per epoch")
    figure.update_yaxes(matches=None)
    figure.update_layout(height=300 + 180 * ((curves["model"].nunique() - 1) // 6))
    figure.show()

# %% [markdown]
# ## Table 4.1: track-ID accuracy per subspace, 3, 5 and 10 s of input
#
# The proposed CSN (condition (i)) embeds the test mixes; each part is evaluated in its own subspace by leave-one-out
# kNN (k = 5) on the non-overlapping segments where that part's stem sounds. The baseline embeds the same segments'
# separated stems with chapter 3's per-part networks. The thesis's baseline has no guitar/others networks; ours
# does. "low"/"high" bound our 95 % interval.

# %%
with_intervals("table_4_1", 1, caption=f"Table 4.1 (%): thesis vs {label}")

# %% [markdown]
# ## Table 4.2: part-level label prediction on test pseudo pieces
#
# For each part, test pseudo pieces share that part's source track in groups of four and nothing else (thesis
# 4.4.2: (A, B), (A, C), (A, D), (A, E), ...); a 5-s segment's label is predicted by kNN (k = 5) in the part's
# subspace, never from segments of its own piece. A subspace that leaked other parts' features would find the
# wrong neighbours. Chance is not simply one in as many labels as there are: the kNN votes among the segments of
# the *other* pieces, so the chance level depends on how many segments each label has there. The last table of
# this section scores random embeddings exactly as the cells are scored (the chance level of each cell); the
# findings at the end test condition (i) against it.

# %%
display(wide_comparison(side_by_side(load_thesis_table("4.2")[[*results.frame("table_4_2").columns]],
                                     results.frame("table_4_2"), label_ours=label),
                        caption=f"Table 4.2 (%): thesis vs {label} ({results.n_segments['pseudo_segments']} "
                                f"segments of {results.n_segments['pseudo_pieces']} test pseudo pieces)"))
with_intervals("table_4_2", 1, caption="Table 4.2 with our 95 % intervals")
display(results.chance_frame().style.format("{:.1f}").set_caption(
    "Chance level (%) of Tables 4.2 and 4.1: the same cells scored on random embeddings"))

# %% [markdown]
# ## Where the curves cross: the baseline against separator quality (our addition)
#
# The thesis prefers the CSN because separation errors hurt the separate-then-embed baseline (3.4, 4.4.3). Row (a)
# above uses our U-Net, which is trained on renderings like the ones it is tested on, so it flatters the baseline.
# Here the baseline row of Table 4.2 is measured again with separators of different quality
# (`partsim_core.csn.crossover`): no separation at all (every part estimate is the piece's mix: the floor), an
# earlier U-Net checkpoint (not in `smoke`, whose separator trains one epoch), chapter 3's separator, and a U-Net
# trained on the same generator rendered with **another style mix** (other GM programs of each style's families,
# other drum kits, other style frequencies), i.e. tested on renderings it has not seen. A different SoundFont
# would be a stronger shift; only one ships with this environment, and `PARTSIM_SOUNDFONT=/path/to/font.sf2
# partsim data synth` renders the data with another for users who have one. Each marker is a separator: its mean
# test SDR for the part (x) and the baseline's part-label accuracy on the test pseudo pieces with its 95 % interval
# (y). The dashed line and band are the CSN's (condition (i)) accuracy and interval. The part networks are not
# retrained per separator (they were trained on chapter 3's separated stems): the curve shows how the deployed
# baseline degrades with the separator it is given.
#
# **Why part-level and not track-ID.** Chapter 3 draws the same curve on track-ID accuracy and finds separated
# stems beating ideal ones for most parts: a separated "drums" stem still carries traces of the track's bass and
# piano, and those traces identify the *track* (chapter 3's leakage-only track-ID shows how well a part's network
# names the track from the leakage alone). Track-ID therefore rewards leakage. In a test pseudo piece the other
# parts come from *another* track, so leakage can only mislead the part-label kNN: this is the measure on which the
# thesis's argument can be tested.

# %%
crossover = results.separator_crossover
if crossover is None:
    print("no crossover: it needs condition (a) (chapter 3's networks) and test pseudo pieces")
else:
    quality_curve(crossover.frame(), crossover.reference_cells(), reference_label="CSN (i)",
                  title="Table 4.2 accuracy of the baseline against its separator's test SDR").show()
    crossings = pd.DataFrame(crossover.crossings()).T
    crossings.index.name = "part"
    display(crossings.style.format({"sdr": "{:.1f}"}, na_rep="–").set_caption(
        "Where the baseline's curve meets the CSN's accuracy (linear interpolation between separators; "
        "'baseline below' / 'baseline above': at every measured SDR)"))
    display(findings_table([f for f in results.findings if f["claim"].startswith("Table 4.2 crossover")], digits=1,
                           caption="Baseline minus CSN (i), pooled over parts, per separator (paired over label "
                                   "tracks)"))

# %% [markdown]
# ## Table 4.3: which instrument is this? (subspace norms, single stems)
#
# Each part's clean stem alone is embedded (5-s segments where it sounds), and the predicted instrument is the
# subspace with the largest norm. The rows are the thesis's: (k) = psd+basic+add ("wo/pre, wo/norm"), (j) = the
# same with pre-training, (i) = with pre-training and the norm loss. Every trained condition's rate follows.

# %%
display(with_intervals("table_4_3", 1, caption=f"Table 4.3 (%): thesis vs {label}"))
results.all_conditions("identification").style.format("{:.1f}", na_rep="–").set_caption(
    "Identification rate (%) of every trained condition")

# %% [markdown]
# ## Fig. 4.10: |embedding| of single-stem inputs
#
# Absolute values of the (unmasked) output of condition (i) for single-stem inputs, 20 segments per instrument
# stacked vertically. Where pre-training and the norm loss work, only the input instrument's block of dimensions
# (its subspace) lights up.

# %%
magnitudes = embedding_magnitudes(results, PROPOSED, per_part=20)
if magnitudes.empty:
    print("condition (i) was not run")
else:
    figure = px.imshow(magnitudes.to_numpy(), aspect="auto", color_continuous_scale="Viridis",
                       labels={"x": "dimension (drums | bass | piano | guitar | others)", "y": "input segment",
                               "color": "|f(x)|"},
                       title="Fig. 4.10: |embedding| of single-stem inputs, condition (i)")
    figure.update_yaxes(tickmode="array", tickvals=list(range(0, len(magnitudes), 20)),
                        ticktext=[name.split()[0] for name in magnitudes.index[::20]])
    figure.show()

# %% [markdown]
# ## Table 4.4 and Fig. 4.11: stem input vs mix input, same subspace
#
# Per part, the Pearson correlation between two distance matrices over the same 5-s test segments: one from the
# part's stem alone, one from the mix (masked to the part's subspace). High means the subspace sees the part inside
# the mix as it sees it alone. Rows: wo/psd = (e), w/psd = (i).

# %%
display(with_intervals("table_4_4", 3, caption=f"Table 4.4 (Pearson r): thesis vs {label}"))
results.all_conditions("stem_mix").style.format("{:.3f}", na_rep="–").set_caption("Every trained condition")

# %%
if PROPOSED in results.embeddings:
    stem_matrix, mix_matrix = distance_matrices(results, "drums", PROPOSED, n_tracks=10)
    figure = make_subplots(rows=1, cols=2, subplot_titles=("drums stem as input", "mix as input (drums subspace)"))
    for column, matrix in enumerate((stem_matrix, mix_matrix), start=1):
        figure.add_trace(heatmap(matrix, text_fmt=None).data[0].update(coloraxis="coloraxis"), row=1, col=column)
    figure.update_layout(title="Fig. 4.11: distances between segments of 10 test tracks, condition (i)",
                         coloraxis={"colorscale": "Viridis"}, height=450)
    figure.update_yaxes(autorange="reversed")
    figure.show()

# %% [markdown]
# ## Table 4.5: correlation between subspaces (mix input)
#
# Pearson correlation between the distance matrices of every pair of subspaces over all 5-s test segments. Low
# means each subspace measures something else. The reference block uses chapter 3's per-part networks, each on its
# own ideal stem (over the segments where both parts sound).

# %%
blocks = {"a": "reference: chapter-3 networks on ideal stems", "b": "wo/psd = (e)", "c": "w/psd = (i)"}
for block, title in blocks.items():
    if block in results.frame("table_4_5"):
        display(with_intervals("table_4_5", 3, block, caption=f"Table 4.5{block} ({title}): thesis vs {label}"))
    else:
        print(f"Table 4.5{block} ({title}): not computed (condition not run)")

# %% [markdown]
# ## Fig. 4.7: the subspaces on dataset pieces
#
# t-SNE of each subspace of condition (i) for 5-s segments of 10 test tracks, coloured by track. In real mixes all
# parts share the track label, so every subspace may cluster by track.

# %%
if PROPOSED in results.embeddings:
    points = dataset_tsne(results, PROPOSED, max_tracks=10, seed=seed)
    figure = tsne_scatter(points, color="track", hover=["start_s"], facet="subspace",
                          title="Fig. 4.7: subspaces of (i), dataset pieces (colour = track)")
    figure.update_layout(height=380)
    figure.show()

# %% [markdown]
# ## Figs. 4.8-4.9: the subspaces on test pseudo pieces
#
# The pieces made for each part, in that part's subspace of condition (i). Fig. 4.8 colours by the part-level label
# (the part's source track): good subspaces form one cluster per label. Fig. 4.9 colours by the whole piece
# (A-1, A-2, ...): pieces with the same label should mix within a cluster, not form sub-clusters of their own.

# %%
points = pseudo_tsne(results, PROPOSED, seed=seed)
if points.empty:
    print("too few test pseudo pieces for a map (or condition (i) was not run)")
else:
    for colour, title in (("label", "Fig. 4.8: colour = part-level label"),
                          ("piece", "Fig. 4.9: colour = whole pseudo piece")):
        figure = tsne_scatter(points, color=colour, hover=["other"], facet="subspace", title=title)
        figure.update_layout(height=380, showlegend=colour == "label")
        figure.show()

# %% [markdown]
# ## Table 4.6: agreement with listeners
#
# For each xab sample set kept by chapter 5's 80 % filter, the model says which of A/B is nearer to X (the CSN in
# the category's subspace of the mix excerpt; the baseline with its per-part network on the excerpt separated by
# chapter 3's separator); the rate counts the listener evaluations that chose the same file. Our cells are
# `value [low, high]`: with one seed the exact Clopper-Pearson 95 % interval (the unit is one response), with several
# a bootstrap drawing a seed and resampling responses (`partsim_core.csn.listening`); every seed's models answer.
# The thesis's cells stay as it prints them (`paper`: rate ± half-width, its interval unnamed). Unless real ABX audio
# is given, the listeners are **simulated** from the generator's ground truth (`partsim_core.perceptual.simulate`):
# these numbers test the procedure, not perception. The thesis's finding (the piano better than the baseline) is
# among the findings at the end of the page.

# %%
print(f"listening test: {results.listening_test}")
for block, perspective in (("a", "overall"), ("b", "timbre")):
    ours = results.table_4_6.get(perspective)
    if ours is None:
        continue
    comparison = paper_beside_ours(load_thesis_table(f"4.6{block}"), ours, label=label)
    display(comparison.style.set_caption(f"Table 4.6 ({perspective}, %): paper vs {label} "
                                         f"({results.listening_test}), value [95 % interval]"))

# %% [markdown]
# ## Beyond the thesis: style retrieval and leakage (our addition)
#
# The generator of the embedded dataset records every part's style, so we can ask each subspace directly what it
# encodes: among a segment's 10 nearest neighbours in subspace *c* (segments of its own track excluded), how much more
# often than chance does part *q* share the segment's style? For *q = c* that excess is what the subspace should
# capture ("own"); for the other parts it is leakage (0 = none). Not in the thesis; first seed only.

# %%
summary = results.leakage_summary()
if summary.empty:
    print("no generator ground truth for this dataset: the leakage measure needs the embedded dataset")
else:
    display(summary.style.format("{:+.3f}", na_rep="–").set_caption("Mean excess precision over the five subspaces"))
    detail = results.style_leakage
    figure = px.bar(detail[detail["condition"].isin(["(e)", "(i)"])], x="subspace", y="excess", color="part",
                    barmode="group", facet_col="condition", category_orders={"subspace": list(INSTRUMENTS),
                                                                             "part": list(INSTRUMENTS)},
                    title="Excess style precision per subspace (bars: which part's style), (e) vs (i)")
    figure.show()

# %% [markdown]
# ## Do the thesis's findings hold here?
#
# Each line states a finding of thesis 4.4.3, our estimate of the difference it claims and its 95 % interval
# (paired over the same test tracks and seeds; Table 4.6's over the same listener responses and seeds), and the
# verdict by the rule stated at the top of this page (`partsim_core.csn.findings`, `partsim_core.csn.listening`).

# %%
verdicts = pd.DataFrame(results.findings)[["claim", "estimate", "interval", "verdict"]]
display(verdicts.style.format({"estimate": "{:.3f}",
                               "interval": lambda pair: f"[{pair[0]:.3f}, {pair[1]:.3f}]"}).hide(axis="index"))
if preset == "smoke":
    display(Markdown("*This is the `smoke` preset: a few short tracks and one epoch, meant to prove that the code "
                     "runs. Its numbers are noise and say nothing about the findings; read the `default` build.*"))
publish_results("ch4", results.to_json())  # the book build collects it into _build/results/ch4.json

# %% [markdown]
# ## What differs from the thesis and why
#
# * **Data and sizes.** Unless built with `--data-root`, the chapter runs on the embedded generated mini-Slakh
#   (short procedurally composed songs rendered with one SoundFont) instead of Slakh2100, with a narrower encoder,
#   fewer triplets and far fewer epochs than the thesis's 1,000 (see `partsim_core/presets.py`; the `paper` preset
#   holds the thesis's settings). Absolute numbers are therefore not comparable with the thesis's; only the pattern
#   between conditions is, and only where its interval says so.
# * **Baseline (a).** Chapter 3's networks on stems from our Spleeter-style U-Net trained on the same data, not the
#   pretrained Spleeter; we also have guitar and others networks, so row (a) has five columns.
# * **Test pseudo pieces.** On small test splits the design shrinks (fewer labels or pieces per label) and the
#   "other" tracks repeat across labels; `partsim_core.csn.test_set` documents the choices.
# * **Table 4.3's first two rows** need conditions the thesis does not letter: our (k) and (j).
# * **Table 4.6** runs on a simulated listening test unless the published ABX data and a local Slakh2100 are given.
