"""Chapter 4: one network on the mix, five instrument subspaces (``notebooks/ch4_csn_ablations.py``).

* :mod:`.pseudo_pieces` - pseudo musical pieces, basic and additional triplets, created silences.
* :mod:`.pseudo_triplet_task` - the CSN's training task: those triplets mixed into log-mel batches.
* :mod:`.network` - the CSN model (encoder + the norm loss's bias) and its loss.
* :mod:`.pretraining` - the pre-training: segments, target networks, targets, task (with validation loss).
* :mod:`.conditions` - the conditions (a)-(k) and their training.
* :mod:`.test_set` - the filtered test tracks, segment grids, test pseudo pieces, streamed embeddings.
* :mod:`.metrics` - one function per thesis table (4.1-4.5), pure given embeddings, per test track and seed.
* :mod:`.correlation` - distance-matrix correlations and their leave-one-track-out values.
* :mod:`.findings` - the thesis's findings, verdicts from paired intervals.
* :mod:`.listening` - Table 4.6 (model vs listeners); :mod:`.leakage` - style leakage (our addition).
* :mod:`.crossover` - the baseline's Table 4.2 accuracy against separator quality, next to (i) (our addition).
* :mod:`.figures` - data of Figs. 4.7-4.11 and the loss curves.
* :mod:`.run` - :func:`~.run.run_chapter4`, the chapter's orchestration and its JSON.
"""
