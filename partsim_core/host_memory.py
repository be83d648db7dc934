"""Host (CPU) memory of partsim's processes: glibc's ``malloc`` backs large tensors with transparent huge pages.

Why: PyTorch's CPU tensors come from glibc's ``malloc``, which serves every block above its mmap threshold
(128 KiB, raised dynamically up to 32 MiB) with a fresh ``mmap`` and unmaps it when the tensor is freed. Every
large activation of every training step is therefore new memory that the kernel maps and zero-fills one 4 KiB page
at a time on first write. At the ``default`` preset one full-resolution activation of the CSN's first block is
96 pieces x 8 channels x 96 mels x 130 frames = 38 MB, and a step allocates about ten of them. Measured with
``torch.profiler`` (2 idle cores, forward + backward of :class:`~partsim_core.models.CSNEncoder` at width 8 on 96
pieces, one thread): ``fill_`` of a fresh 38 MB buffer 15 ms (a memset of mapped memory takes ~3 ms), the ReLU
backward 21 ms, the batch norm forward 24 ms; the whole forward + backward 0.60-0.78 s.

glibc's tunable ``glibc.malloc.hugetlb=1`` (glibc >= 2.35) makes ``malloc`` ask the kernel for transparent huge
pages (``madvise(MADV_HUGEPAGE)``) on the memory it maps: one fault per 2 MiB instead of per 4 KiB (a 64 MiB
buffer: ~540 page faults instead of 16,384). The same forward + backward then takes 0.46 s on one thread; the
operations and values are the same, only where the buffers' pages come from changes. Memory is still returned to
the system when freed. (Keeping freed blocks in the heap instead, ``mallopt(M_MMAP_MAX, 0)``, was as fast but
fragments: a loop of freed 64 MiB tensors grew to ~800 MiB resident.)

A tunable is read when a process starts, so it travels in the environment (``GLIBC_TUNABLES``): the ``partsim``
command starts itself again once with it (:func:`relaunch_with_huge_pages`), and every process it starts (the
book's notebook kernels and training workers) inherits it. Where the kernel has transparent huge pages off, or the
C library is not glibc, it does nothing. ``PARTSIM_HOST_ALLOCATOR=system`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping, Sequence

#: glibc's tunable that backs ``malloc``'s mapped memory with transparent huge pages.
HUGE_PAGE_TUNABLE = "glibc.malloc.hugetlb=1"

#: Environment variable holding glibc's tunables (``name=value`` pairs separated by ``:``).
TUNABLES_VARIABLE = "GLIBC_TUNABLES"

#: ``PARTSIM_HOST_ALLOCATOR=system`` keeps glibc's default allocation policy.
HOST_ALLOCATOR_VARIABLE = "PARTSIM_HOST_ALLOCATOR"


def is_glibc() -> bool:
    """Whether this process's C library is glibc (the tunable means nothing elsewhere)."""
    try:
        process = ctypes.CDLL(None)  # the symbols this process has loaded, its C library's among them
    except OSError:
        return False
    return hasattr(process, "gnu_get_libc_version")


def _opted_out(environment: Mapping[str, str]) -> bool:
    return environment.get(HOST_ALLOCATOR_VARIABLE, "").strip().lower() == "system"


def huge_page_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """``environment`` with :data:`HUGE_PAGE_TUNABLE` added to ``GLIBC_TUNABLES`` (other tunables kept).

    Unchanged when it already sets ``glibc.malloc.hugetlb`` (the user's value wins) or when
    ``PARTSIM_HOST_ALLOCATOR=system``.
    """
    result = dict(environment)
    tunables = [entry for entry in result.get(TUNABLES_VARIABLE, "").split(":") if entry]
    if _opted_out(result) or any(entry.split("=", 1)[0] == "glibc.malloc.hugetlb" for entry in tunables):
        return result
    result[TUNABLES_VARIABLE] = ":".join([*tunables, HUGE_PAGE_TUNABLE])
    return result


def relaunch_with_huge_pages(command: Sequence[str] | None = None) -> None:
    """Replace this process by ``command`` (``[executable, args...]``; default: this process's own command line,
    interpreter options included, ``sys.orig_argv``) started with :func:`huge_page_environment`, unless that
    environment is already this one's (then return, so a relaunch happens at most once), the C library is not
    glibc, or ``PARTSIM_HOST_ALLOCATOR=system``. Call it first thing, before any work or output."""
    environment = huge_page_environment(os.environ)
    if environment == dict(os.environ) or not is_glibc() or not sys.executable:
        return
    if command is None:
        command = [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], list(command), environment)
