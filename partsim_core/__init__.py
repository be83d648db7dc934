"""partsim: a reproducible companion to the thesis on part-level music similarity.

The package mirrors the book's chapters:

* :mod:`partsim_core.data` - Slakh-format reader, stem cache, segments, the mini-Slakh generator (Data chapter).
* :mod:`partsim_core.frontend` - batched log-mel front end in torch (every model chapter).
* :mod:`partsim_core.perceptual` - the Inst-Sim ABX listening-test analyses (chapter 5).
* :mod:`partsim_core.book.build` - executes the chapter notebooks with papermill and builds the Jupyter Book.
"""

__version__ = "0.1.0"

#: Instrument order used everywhere: the subspace order of the thesis (drums, bass, piano, guitar, others).
INSTRUMENTS: tuple[str, ...] = ("drums", "bass", "piano", "guitar", "others")
