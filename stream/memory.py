"""Bounded heap growth for runs of days: cap glibc's malloc arenas.

Why: glibc gives every thread that allocates its own malloc arena (up to 8 x cores). Our pipeline moves
frame-sized buffers between threads (capture -> restore -> encode); a buffer freed by another thread
than the one that allocated it goes back to the allocating thread's arena, and arenas fragment: resident
memory crept up ~217 B per frame over 12k frames of the soak (benchmarks/results/soak_cpu.json), while
the same run with MALLOC_ARENA_MAX=2 stayed flat (soak_cpu_malloc_arena2.json). Environment variables
are read before Python starts, so a user would have to know; ``mallopt(M_ARENA_MAX, n)`` does the same
from inside the process, provided it runs before the worker threads make their first allocation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
DEFAULT_ARENAS = 2


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (unless MALLOC_ARENA_MAX is already set, which wins).
    Returns whether the cap is in force; elsewhere (macOS, Windows, musl) a no-op that says so in one
    debug line. Call it once, early, before the pipeline's threads start."""
    if arenas < 1:
        raise ValueError(f"arenas must be >= 1, got {arenas}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        logger.debug(
            "malloc arenas: MALLOC_ARENA_MAX=%s from the environment", os.environ["MALLOC_ARENA_MAX"]
        )
        return True
    if not sys.platform.startswith("linux"):
        logger.debug("malloc arenas: not glibc (%s), left as they are", sys.platform)
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("malloc arenas: no glibc mallopt here, left as they are")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_ARENA_MAX, arenas))
    logger.debug("malloc arenas: capped at %d (%s)", arenas, "ok" if ok else "refused")
    return ok
