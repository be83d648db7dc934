"""Chapter 3: part-level similarity from source-separated stems (``notebooks/ch3_separation_baseline.py``).

* :mod:`.separators` - the separators (oracle, our U-Net, Spleeter subprocess, Demucs) behind one interface.
* :mod:`.separator_training` - training our U-Net separator on the train split.
* :mod:`.separated_stems` - the verified cache of separated stems, a signal source like the stem cache.
* :mod:`.bss` - separation quality (SDR/SIR/SAR, Table 3.1's items).
* :mod:`.triplets` - the chapter's unsupervised triplets and training task.
* :mod:`.networks` - part networks and the track network: training and kNN track-ID evaluation.
* :mod:`.filtering` - chapter 3's test-set filter (thesis 3.3.1's wording).
* :mod:`.tables` - Tables 3.1 and 3.2 with intervals, pure functions of per-track results.
* :mod:`.separator_quality` - accuracy against separator quality, and track-ID from leakage alone.
* :mod:`.findings` - the chapter's claims with verdicts.
* :mod:`.run` - :func:`~.run.run_chapter3`, the whole chapter from one dataset handle.

"Baseline" keeps the thesis's meanings only: this chapter's method is chapter 4's baseline model, and Table
3.2's "baseline" row is the track network (the same network on the mix).
"""
