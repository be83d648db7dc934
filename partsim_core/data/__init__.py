"""Data layer (the book's "Data" chapter, ``notebooks/data.py``).

* :mod:`partsim_core.data.slakh` - read any Slakh-format root (redux flac, original 2100 + ``redux.json``,
  babyslakh), group stems by the slakh-utils ``band.yaml`` recipe.
* :mod:`partsim_core.data.cache` - cache locations, atomic writes, the decoded-stem cache.
* :mod:`partsim_core.data.segments` - segmenting, the silence rule, the 10 % test filter, tempo classes.
* :mod:`partsim_core.data.compose` (with :mod:`partsim_core.data.music` and :mod:`partsim_core.data.part_patterns`) /
  :mod:`partsim_core.data.synth` - the embedded mini-Slakh generator.
* ``partsim data ...`` lives in :mod:`partsim_core.cli.data`.
"""
