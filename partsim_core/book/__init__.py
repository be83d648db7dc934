"""The publishing layer: notebook execution (:mod:`.execute`) and the Jupyter Book build (:mod:`.build`), one
chapter run for a student (:mod:`.run`), what a notebook calls (:mod:`.notebook`: page setup, publishing results),
audio tables (:mod:`.audio`), figures and tables (:mod:`.viz`), the thesis's reference tables
(:mod:`.thesis_tables`). Nothing below this layer imports it."""

import warnings

# Inside a notebook kernel tqdm.auto (imported by the data step and training) falls back to text bars without
# ipywidgets and warns about it, naming its installed file; text bars are what the book wants (widget bars would
# need widget JavaScript from a CDN), and the pages must name no folder of the machine that built them. Set here,
# before any submodule imports tqdm.auto.
warnings.filterwarnings("ignore", message="IProgress not found")
