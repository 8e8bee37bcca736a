"""Bounded heap growth for runs of days: cap glibc's malloc arenas; look inside the heap (soak).

Why: glibc gives every thread that allocates its own malloc arena (up to 8 x cores). Our pipeline moves
frame-sized buffers between threads (capture -> restore -> encode); a buffer freed by another thread
than the one that allocated it goes back to the allocating thread's arena, and arenas fragment: resident
memory crept up ~217 B per frame over 12k frames of the soak (benchmarks/results/soak_cpu_12k_no_cap.json), while
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
import time
from dataclasses import dataclass
from typing import Any

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


# -- looking inside the heap ---------------------------------------------------------------------
#
# Why: to tell a leak from fragmentation. With the arenas capped, mallinfo2's in-use bytes stay flat
# over 100k soak frames (+16 KB per 10k frames) while resident memory grows ~0.4 MB per 10k, so what
# grows is not memory malloc hands out. malloc_trim(0) returns the pages of freed chunks; measured
# (benchmarks.soak --heap-trim): ~12 MB released per trim and faulted back within 250 frames, the
# slope unchanged, so the CLI does not trim; the trimmer stays for that experiment.

HEAP_TRIM_EVERY = 1000  # frames between trims: ~33 s at 30 fps; one trim costs ~4 ms (soak report)


@dataclass(frozen=True)
class HeapStats:
    """glibc's view of its heap (mallinfo2), bytes: ``in_use`` what the program holds (small and
    mmapped chunks), ``free`` freed chunks still inside the arenas, ``mmapped`` large direct blocks."""

    in_use: int
    free: int
    mmapped: int


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
        )
    ]  # fmt: skip


def _glibc_function(name: str) -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def heap_stats() -> HeapStats | None:
    """The heap's in-use and free bytes now; None where glibc's mallinfo2 (2.33+) is missing."""
    mallinfo2 = _glibc_function("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.argtypes = []
    mallinfo2.restype = _MallInfo2
    m = mallinfo2()
    return HeapStats(in_use=int(m.uordblks + m.hblkhd), free=int(m.fordblks), mmapped=int(m.hblkhd))


class HeapTrimmer:
    """Calls glibc's ``malloc_trim(0)`` every ``every`` frames (:meth:`tick` once per frame, from one
    thread), timing each call; where there is no glibc it says so in one debug line and does nothing."""

    def __init__(self, every: int = HEAP_TRIM_EVERY) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 frame, got {every}")
        self.every = every
        self._frames = 0
        self.trims = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self._trim = _glibc_function("malloc_trim")
        if self._trim is None:
            logger.debug(
                "heap trim: no glibc malloc_trim here (%s), freed pages stay with the allocator", sys.platform
            )
        else:
            self._trim.argtypes = [ctypes.c_size_t]
            self._trim.restype = ctypes.c_int

    @property
    def available(self) -> bool:
        return self._trim is not None

    def tick(self) -> bool:
        """Count one frame; trim on every ``every``-th. Returns whether a trim ran."""
        self._frames += 1
        if self._trim is None or self._frames % self.every:
            return False
        t0 = time.perf_counter()
        self._trim(0)
        ms = (time.perf_counter() - t0) * 1000.0
        self.trims += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)
        logger.debug("heap trim %d after %d frames: %.2f ms", self.trims, self._frames, ms)
        return True
