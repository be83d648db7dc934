"""The process entry of the installed ``partsim`` command (and of ``python -m partsim_core.cli``).

It first makes sure the process runs with glibc's huge-page tunable (:func:`partsim_core.host_memory.
relaunch_with_huge_pages`: the same computation, fewer page faults in training), *before* importing the command
line itself, whose imports (numpy, scipy, torch) take seconds that a relaunch would pay twice; then it runs
:func:`partsim_core.cli.main` on ``sys.argv``.
"""

from __future__ import annotations

from partsim_core.host_memory import relaunch_with_huge_pages


def main() -> int:
    """Run the ``partsim`` command line in a process started with the huge-page tunable; its exit status."""
    relaunch_with_huge_pages()
    from partsim_core.cli import (
        main as command_line,  # imported after the relaunch, see the module docstring
    )

    return command_line()
