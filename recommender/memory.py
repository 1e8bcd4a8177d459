"""Keeping the evaluation's freed memory from staying in the process (glibc's allocator).

The evaluation ranks folds in threads (``EvaluationSettings.jobs``), a block of rows at a
time. glibc gives each thread its own arena and, once the first large array is freed, raises
its mmap threshold (up to 32 MiB), so the multi-MB blocks come from those arenas and what
Python frees there stays resident: on the bench 1M log the evaluated run's peak was about
twice what Python held. Fewer arenas, and trimming after each ranking of a fold and between
stages, return it; fixing the mmap threshold low would too, but then every block's pages are
faulted in again (a third more CPU time in the evaluation); these cost a few percent.

On any other C library (or platform) every function here does nothing and says so.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from functools import cache

logger = logging.getLogger(__name__)

# mallopt's parameter for the most arenas threads may use (malloc.h).
M_ARENA_MAX = -8


@cache
def _glibc() -> ctypes.CDLL | None:
    """The running C library when it is glibc (it has ``malloc_trim`` and ``mallopt``)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "malloc_trim", "mallopt")):
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def release_freed_memory() -> bool:
    """Return the free pages of every arena to the system (``malloc_trim(0)``), so that what a
    finished stage freed does not add to a later stage's peak. Costs a walk of the free lists
    (milliseconds) and, later, the page faults of whatever reuses those pages; call it between
    stages, not per block. False where the allocator is not glibc's."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def share_one_arena() -> bool:
    """Let every thread allocate from the main arena (``mallopt(M_ARENA_MAX, 1)``): memory a
    thread freed is then reused by the next thread instead of staying in its own arena.

    For the rest of the process, and for threads that take an arena after this call (the
    evaluation's); call it before they start. The threads here allocate per block of rows,
    not per element, so they do not contend for the one lock. False where the allocator is
    not glibc's or refused the setting."""
    libc = _glibc()
    if libc is None:
        return False
    done = bool(libc.mallopt(M_ARENA_MAX, 1))
    if not done:
        logger.debug("mallopt(M_ARENA_MAX, 1) refused")
    return done
