"""The publishing layer: notebook execution and the Jupyter Book build (:mod:`.build`), figures and tables
(:mod:`.viz`), the thesis's reference tables (:mod:`.thesis_tables`). Nothing below this layer imports it."""
