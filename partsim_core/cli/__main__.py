"""``python -m partsim_core.cli``: the ``partsim`` command without the installed script."""

import sys

from partsim_core.launch import main

sys.exit(main())
