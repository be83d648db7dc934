"""Chapter 3: part-level similarity from source-separated stems (``notebooks/ch3_separation_baseline.py``).

* :mod:`.separation` - separators (oracle, our U-Net, Spleeter / Demucs adapters), separated-stem cache, BSS metrics.
* :mod:`.triplets` - the chapter's unsupervised triplets and training task.
* :mod:`.run` - part networks, Tables 3.1 / 3.2, findings, :func:`~.run.run_chapter3`.
"""
