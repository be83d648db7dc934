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
# # Chapter 5: Part-level perceptual similarity (the Inst-Sim ABX listening test)
#
# **What this chapter reproduces.** Thesis chapter 5 analyses an ABX listening test in which listeners heard a
# reference X and two candidates A and B, all from the same category (drums, bass, piano, guitar, others, or the
# whole track = *mix*), and said which candidate is more similar to X from four perspectives (timbre, rhythm,
# melody, *overall*; `A+`/`B+` strong, `A-`/`B-` weak, N/A allowed for up to two perspectives except overall).
# Two sample-set types: chi-alpha-beta (**xab**: three different tracks) and chi-chi'-gamma (**xyc**: Y is another
# segment of X's own track, C another track). Catch trials (A or B identical to X) are excluded everywhere.
#
# This chapter recomputes from the raw answers: the response counts (Fig. 5.4), the agreement between categories
# (Fig. 5.6), which parts agree with the track-level judgement per music triplet and per participant with Ward
# clustering and t-SNE (Fig. 5.8, 5.9, Table 5.1), the matching rate of each perspective with overall (Table 5.2),
# the 80 %-agreement filter used to evaluate models (Table 5.3), the within- vs between-piece similarity
# (Table 5.4) and the model-vs-listener agreement procedure (Fig. 5.12). Every number comes from
# `partsim_core.perceptual`; this notebook only displays it.

# %% tags=["parameters"]
preset = "smoke"  # smoke | default | paper (partsim_core.presets)
data_root = ""  # Slakh-format folder for the simulated test, or empty for the preset's embedded dataset
abx_dir = ""  # Inst-Sim ABX folder; empty = ../shared/abx beside the repository if present, else a simulated test
slakh_root = ""  # real Slakh2100 root for model agreement on the published test (optional)
seed = 0  # seed of the simulated listening test and of t-SNE

# %%
from partsim_core.book.build import setup_notebook

setup_notebook()  # plotly figures as offline HTML divs, pandas display options

# %%
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.figure_factory as ff
import plotly.graph_objects as go
from IPython.display import Markdown, display
from plotly.subplots import make_subplots
from scipy.cluster import hierarchy

from partsim_core import perceptual as pc
from partsim_core.book.thesis_tables import load_thesis_table, side_by_side, thesis_tables_dir

simulated = False
if abx_dir:
    abx_root = Path(abx_dir)
elif pc.default_abx_dir() is not None:
    abx_root = pc.default_abx_dir()
else:
    from partsim_core.data.dataset import resolve_dataset_root

    abx_root = pc.ensure_simulated_test(resolve_dataset_root(preset, data_root), seed=seed)
    simulated = True

abx = pc.load_abx(abx_root)
pc.check_published_counts(abx)  # the published file must leave 26,898 valid responses
published = pc.is_published_dataset(abx)  # by SHA-256 of the files read
responses = abx.responses
# Numbers the thesis prints in chapter 5's text (data/thesis_tables/table_5_text.csv).
printed = pd.read_csv(thesis_tables_dir() / "table_5_text.csv", index_col="row")["value"]
display(Markdown(pc.data_description(published, simulated, abx_root.name, len(responses), len(abx.catch_trials),
                                     len(abx.dropped))))

# %% [markdown]
# ## Participants and responses (thesis 5.2.4)
#
# A participant in the thesis's count is one subject answering one evaluation set. The published CSV identifies a
# session only by subject and evaluation set, which gives slightly fewer sessions than the thesis reports (it
# probably counted sessions before merging duplicates); the unique-subject counts agree once the one subject seen
# only in catch trials is counted, as the thesis does.

# %%
pc.with_printed(pc.participant_summary(responses, abx.catch_trials), printed)

# %% [markdown]
# ## Fig. 5.4: strong, weak and N/A responses
#
# Complete evaluation sets only (sessions that also rated mixes), as in the thesis, split by sample-set type.

# %%
counts = pc.response_counts(responses, complete_only=True)
strengths = ["strong", "weak", "N/A"]
fig = make_subplots(rows=2, cols=3, subplot_titles=[f"{t}: {s}" for t in pc.SET_TYPES for s in strengths],
                    horizontal_spacing=0.06, vertical_spacing=0.14)
for row, set_type in enumerate(pc.SET_TYPES, start=1):
    for col, strength in enumerate(strengths, start=1):
        cell = counts[(counts["set_type"] == set_type) & (counts["strength"] == strength)]
        grid = pc.to_thesis_layout(cell, "count")
        fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=list(grid.index),
                                 text=grid.to_numpy(), texttemplate="%{text}", coloraxis="coloraxis"),
                      row=row, col=col)
        fig.update_yaxes(autorange="reversed", row=row, col=col)
fig.update_layout(height=620, title="Fig. 5.4: response counts per category and perspective",
                  coloraxis={"colorscale": "Blues"})
fig.show()

# %% [markdown]
# ## Fig. 5.6: agreement between categories (thesis 5.3.1)
#
# For one participant and one music triplet, two categories agree when the participant chose the same track in
# both (overall). The thesis finds off-diagonal values around 0.5 for xab (no part consistently drives another)
# and high values for xyc (listeners mostly pick X's own track whatever the category).

# %%
agreement = pc.category_agreement(responses, perspective="overall")
fig = make_subplots(rows=1, cols=2, subplot_titles=list(pc.SET_TYPES), horizontal_spacing=0.12)
for col, set_type in enumerate(pc.SET_TYPES, start=1):
    grid = pc.agreement_matrix(agreement, set_type)
    fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=list(grid.index),
                             text=np.round(grid.to_numpy(), 2), texttemplate="%{text}", coloraxis="coloraxis"),
                  row=1, col=col)
    fig.update_yaxes(autorange="reversed", row=1, col=col)
fig.update_layout(height=420, title="Fig. 5.6: mean agreement between categories of one triplet",
                  coloraxis={"colorscale": "RdBu_r", "cmin": 0, "cmax": 1})
fig.show()

# %% [markdown]
# ## Fig. 5.8 and 5.9: which parts agree with the track-level judgement (thesis 5.3.2, xab only)
#
# For every participant and music triplet with all six overall answers, a part scores 1 when its choice equals the
# mix's. Averaging over participants gives a 5-d vector per triplet, averaging over triplets one per participant;
# rows are ordered by Ward's hierarchical clustering (scipy), and t-SNE shows the same vectors coloured by the
# Ward clusters (32 in the thesis; fewer on small sets).

# %%
matches = pc.part_track_matches(responses)
vectors = {"triplet": pc.matching_vectors(matches, by="triplet"),
           "participant": pc.matching_vectors(matches, by="participant")}
fig = make_subplots(rows=1, cols=2, subplot_titles=["(a) per music triplet", "(b) per participant"],
                    horizontal_spacing=0.1)
for col, (by, frame) in enumerate(vectors.items(), start=1):
    grid = frame.loc[pc.dendrogram_order(frame), list(pc.PART_CATEGORIES)]
    labels = np.array(grid.index.astype(str))[:, None].repeat(len(pc.PART_CATEGORIES), axis=1)
    fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=list(pc.PART_CATEGORIES), y=[str(i) for i in range(len(grid))],
                             coloraxis="coloraxis", customdata=labels,
                             hovertemplate="%{customdata}<br>%{x}: %{z:.2f}<extra></extra>"),
                  row=1, col=col)
    fig.update_yaxes(showticklabels=False, title=f"{len(grid)} {by}s (Ward leaf order)", row=1, col=col)
fig.update_layout(height=560, title="Fig. 5.8: matching rate of each part with the mix (Ward-ordered rows)",
                  coloraxis={"colorscale": "RdBu_r", "cmin": 0, "cmax": 1})
fig.show()

# %%
# create_dendrogram hands its linkage function the condensed Euclidean distances: Ward on them equals
# pc.ward_linkage on the vectors.
fig = ff.create_dendrogram(vectors["triplet"][list(pc.PART_CATEGORIES)].to_numpy(), orientation="left",
                           linkagefun=hierarchy.ward)
fig.update_layout(height=420, width=700, title="Ward dendrogram of the per-triplet vectors (Fig. 5.8a)",
                  yaxis={"showticklabels": False})
fig.show()

# %%
points = pd.concat([pc.tsne_embedding(frame, seed=seed).assign(cluster=pc.ward_clusters(frame).astype(str),
                                                               panel=f"per {by}")
                    for by, frame in vectors.items()])
fig = px.scatter(points, x="x", y="y", color="cluster", facet_col="panel", height=430,
                 title="Fig. 5.9: t-SNE of the 5-d vectors, coloured by Ward cluster")
fig.update_xaxes(matches=None)
fig.update_yaxes(matches=None)
fig.update_layout(showlegend=False)
fig.show()

# %% [markdown]
# ## Table 5.1: within-triplet vs within-participant variance
#
# Sample variance of the 0/1 matches within each music triplet and within each participant, keeping triplets and
# participants with 4-9 evaluations (filters applied separately: this reading reproduces the thesis's 5.74
# evaluations per triplet on average; it gives 4.71 per participant where the thesis says 4.68). One-sided
# Mann-Whitney U test that triplet variances are smaller. The thesis withholds the values; it states that the
# triplet variance is lower for every part and significant at p < 0.01 except for piano.

# %%
table_5_1 = pc.variance_comparison(matches)
table_5_1

# %% [markdown]
# **Bass sits on the threshold.** On the published data bass gives p = 0.0101, just above the thesis's p < 0.01.
# The table below recomputes the p-values under the other settings the thesis leaves open. No setting brings bass
# below 0.01: the one-sided Mann-Whitney U test with or without continuity correction gives 0.0101 (scipy's
# exact method gives 0.0103), a two-sided test doubles it, population variances (ddof 0) or a Welch t-test give
# about 0.13. Nor is it rounding: 0.0101 printed to two decimals would read "0.01", not "< 0.01". The data
# differ slightly: the CSV merges sessions (615 participant-sessions against the thesis's 632) and our
# participants average 4.71 evaluations against the printed 4.68, so the thesis's test ran on a slightly
# different set of participants. How much one participant matters is shown by leaving each one out in turn:

# %%
display(pc.p_value_variants(matches))
jackknife = pc.p_value_jackknife(matches, "bass") if len(matches) else pd.DataFrame(columns=["p_value"])
alpha = float(printed["significance level (table 5.1)"])
pd.DataFrame({"leave-one-participant-out bass p": {
    "participants left out in turn": len(jackknife),
    "lowest p": jackknife["p_value"].min(), "median p": jackknife["p_value"].median(),
    "highest p": jackknife["p_value"].max(), f"share below {alpha}": (jackknife["p_value"] < alpha).mean()}})

# %% [markdown]
# On the published data, leaving out one participant moves the bass p-value between about 0.005 and 0.037, and
# 45 % of these drop-one p-values fall below 0.01. **Verdict for bass: inconclusive at the thesis's 0.01 level**
# (the difference between our 0.0101 and the thesis's "< 0.01" is within what one participant changes); the
# lower triplet variance **holds at 0.05** whichever participant is left out.

# %% [markdown]
# ## Table 5.2: matching rate of each perspective with overall (%)
#
# All valid responses; N/A counts as not matching.

# %%
table_5_2 = pc.to_thesis_layout(pc.perspective_matching_rates(responses), "percent")
display(table_5_2.round(2))
side_by_side(load_thesis_table("5.2"), table_5_2).round(2)

# %% [markdown]
# ## Table 5.3: sample sets and evaluations passing the 80 % filter
#
# Per unique sample set (the same three files; the A/B order of xyc sets differs between participants, so chosen
# *files* are compared) the most frequent answer must reach 80 % and must not be N/A. "Evaluations" are the A/B
# responses to the kept sets (the listener results a model is compared with). The thesis withholds Table 5.3, and
# leaves open whether N/A answers count in the 80 %: agreement among **all** answers (N/A dilutes it) or among the
# **non-N/A** answers. The reading used here, `pc.TABLE_5_3_AGREEMENT`, is the one closest to everything the thesis
# does print (evidence below): all answers for xab, non-N/A answers for xyc.

# %%
filtered = pc.agreement_filter(responses[responses["category"].isin(pc.PART_CATEGORIES)])
table_5_3 = pc.filter_summary(filtered, categories=pc.PART_CATEGORIES)
for table_id, block in pc.filter_layouts(table_5_3).items():
    display(Markdown(f"**Table {table_id}** (thesis values withheld)"))
    display(block)
pc.text_checks(responses, filtered, pc.all_subjects(abx), printed)

# %% [markdown]
# **Which reading?** What the thesis prints about these counts: "only four" xab drum-melody sets pass; "more
# agreement in xyc than in xab"; "fewer sample sets for timbre, rhythm and melody than for overall"; and the
# "±" half-widths of the model-vs-listener matching rates, which pin down how many evaluations lie behind each
# rate: Table 4.6 for xab (the thesis says these evaluations are the ones of Table 5.3) and the companion paper's
# Table 6 test 2 for xyc (`table_5_3_paper_xyc_rates.csv`), each printed to 0.1 points and inverted here for
# Clopper-Pearson intervals (the interval the thesis names for the same evaluation in Fig. 5.12). The table scores
# each reading per sample-set type: the agreement rule (all / non-N/A answers) and the unit (`files`: A/B order
# ignored; `presented`: X, A, B in the order shown). Ratios of timbre to overall evaluations are compared as well
# as the counts themselves, because a ratio does not depend on how many participants the paper had at the time.

# %%
if published:
    implied = pc.implied_evaluations(pc.printed_rates(load_thesis_table("4.6a"), load_thesis_table("4.6b"),
                                                      pd.read_csv(thesis_tables_dir()
                                                                  / "table_5_3_paper_xyc_rates.csv",
                                                                  index_col="row")))
    evidence, evidence_cells = pc.filter_rule_evidence(
        responses, implied, int(printed["xab drum-melody sample sets passing the filter"]))
    display(evidence)
    display(evidence_cells[(evidence_cells["sample_set"] == "files")].round(3))
else:
    display(Markdown("The evidence compares the published data with the printed numbers; skipped on other data."))

# %% [markdown]
# On the published data:
#
# * **xab: agreement among all answers.** It is the only reading that gives the printed four drum-melody sets
#   (non-N/A agreement keeps 53) and fewer sets for timbre, rhythm and melody than for overall in all 15 cells
#   (non-N/A agreement: 3 of 15). Per cell, the overall evaluation counts fall inside the range Table 4.6 allows
#   for drums, piano, guitar and others (bass: 949 against at most 924), timbre counts lie 2-6 % above theirs,
#   and every timbre/overall ratio is within 2 % of its allowed range; non-N/A agreement more than doubles every
#   ratio.
# * **xyc: agreement among non-N/A answers.** All five timbre/overall ratios fall inside the ranges the paper's
#   xyc half-widths allow (all answers: three of five; drums and bass fall 8-10 % short), and drum melody keeps
#   162 sets instead of 29. The price: in 3 of the 15 xyc cells (timbre for bass, piano and others) a
#   perspective keeps a few more sets than overall, against the thesis's "fewer". Counting xyc sets as
#   presented (both A/B orders separately) brings that to 1 of 15 with the same five ratios in range, but one
#   count cell fewer in range.
# * **No reading reproduces the xyc counts themselves.** The paper's xyc overall half-widths allow at most 1,870
#   evaluations for drums, 1,792 for others and 1,988 for guitar, where the data give 2,141, 1,918 and 2,093
#   whatever the reading (overall has no N/A, so the N/A rule cannot change it): the paper counted fewer xyc
#   evaluations than the published file holds. The chosen xyc reading is therefore the closest, not a
#   reproduction; `pc.agreement_filter(..., agreement="all")` gives the other one.

# %% [markdown]
# ## Table 5.4: choosing the segment of X's own track (xyc, %)
#
# Share of responses choosing Y (chi'), with Clopper-Pearson 95 % intervals; (a) N/A in the denominator, (b) N/A
# left out. The thesis withholds the values; it states > 70 % for all but drum melody in (a) and > 80 % for all in
# (b).

# %%
table_5_4 = pc.within_between(responses)
for na_mode, label in [("including_na", "(a) including N/A"), ("excluding_na", "(b) excluding N/A")]:
    display(Markdown(f"**Table 5.4{label[1]}** {label}"))
    display(pc.interval_layout(table_5_4[table_5_4["na"] == na_mode]))

# %% [markdown]
# ## Fig. 5.12: model-vs-listener agreement
#
# For each sample set kept by the 80 % filter, an embedding decides which of A/B is nearer to X; the matching rate
# counts the kept listener evaluations that chose that file. The chapter-4 model is trained in its own chapter
# (its notebook runs this same `pc.model_listener_agreement` with the trained CSN); here the procedure runs with
# a transparent baseline embedding, `pc.mean_log_mel_embedding`: the time-averaged log-mel spectrum of each
# stimulus (temporal average pooling, the property the thesis blames for the models' weak rhythm scores), on the
# category stems cut exactly as the sample-config JSON says.

# %%
model_table = None
if published and not slakh_root:
    display(Markdown("The published stimuli are Slakh2100 test-set excerpts: pass `slakh_root` (a local Slakh2100 "
                     "copy) to run this section on the real test. Skipped."))
else:
    from partsim_core.data.dataset import resolve_dataset_root
    from partsim_core.presets import get_preset

    frontend = get_preset(preset).frontend
    source_root = slakh_root if published else resolve_dataset_root(preset, data_root)
    stimuli = pc.extract_from_slakh(abx.configs, source_root, sample_rate=frontend.sample_rate,
                                    paths=pc.kept_stimulus_paths(responses), progress=False)
    model_table = pc.model_listener_agreement(responses, stimuli, pc.mean_log_mel_embedding(frontend),
                                              progress=False)
    shown = model_table.dropna(subset=["percent"])
    fig = px.scatter(shown, x="category", y="percent", color="perspective", symbol="perspective",
                     facet_col="set_type", error_y=shown["ci_high"] - shown["percent"],
                     error_y_minus=shown["percent"] - shown["ci_low"], hover_data=["sets", "evaluations"],
                     height=420,
                     title="Fig. 5.12 procedure: baseline (mean log-mel) vs listeners, Clopper-Pearson 95 %")
    fig.add_hline(y=50, line_dash="dot")
    fig.show()
model_table

# %%
from partsim_core.book.notebook import publish_results
from partsim_core.perceptual.results import chapter_results

publish_results("ch5", chapter_results(abx))  # the book build collects it into _build/results/ch5.json

# %% [markdown]
# ## What differs from the thesis and why
#
# * **Which data.** The first output cell above says whether this page shows the published answers (checked by
#   SHA-256) or a simulated test. On simulated data every number reflects the simulation's own model of listeners
#   (ground-truth styles plus noise), not human perception; only the code path is the same.
# * **Table 5.2** reproduces every published value to 0.1 points on the published data (all valid responses, N/A
#   = not matching).
# * **Counts of participants.** Unique participants (281, with the subject seen only in catch trials; 167 in
#   complete sets) match; sessions (615 vs 632) and complete-set responses (16,269 vs 16,317, 342 vs 346 sessions)
#   are slightly lower, because the CSV has no session identifier beyond subject and evaluation set.
# * **Table 5.1.** The reading (separate 4-9 filters for triplets and participants, complete six-answer rows,
#   sample variance) gives the published 5.74 evaluations per triplet but 4.71 instead of 4.68 per participant; the
#   triplet variance is lower for every part as stated, p < 0.01 for drums, guitar, others, p = 0.0101 for bass
#   (the thesis says < 0.01: inconclusive at 0.01, see above; it holds at 0.05) and p = 0.12 for piano (not
#   significant, as stated).
# * **Table 5.3** is withheld in the thesis; the reading here is the closest to what it prints (all answers for
#   xab, which gives the printed four drum-melody sets; non-N/A answers for xyc, which fits the paper's xyc
#   half-widths), with the evidence per cell above. The same reading selects the evaluations of Fig. 5.12.
# * **Fig. 5.12** uses a simple baseline embedding here, not the trained CSN or MERT, and on the published test it
#   needs a local Slakh2100 copy; the chapter-4 notebook runs the same function with the trained model.
# * The dataset's Readme calls test 1 "XAB", but its JSON holds the X/Y/C roles under `test1`; the loader decides
#   the type from the roles.
