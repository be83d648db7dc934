"""Chapter 4: one network on the mix, five instrument subspaces (``notebooks/ch4_csn_ablations.py``).

* :mod:`.pseudo_pieces` - pseudo musical pieces, basic and additional triplets, created silences.
* :mod:`.conditions` - the ablation conditions (a)-(j) and their training (CSN, norm loss, pre-training).
* :mod:`.metrics` - the evaluations of Tables 4.1-4.5 (pure functions of embeddings).
* :mod:`.run` - test pseudo pieces, :func:`~.run.run_chapter4`, findings.
"""
