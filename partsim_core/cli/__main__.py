"""``python -m partsim_core.cli``: the ``partsim`` command without the installed script."""

import sys

from partsim_core.cli import console_main

sys.exit(console_main())
