"""stream.memory: the malloc arena cap and the heap trim are applied where glibc has them, and say so where
they are not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stream.memory import HeapTrimmer, limit_malloc_arenas

_ROOT = Path(__file__).resolve().parents[2]


def test_cap_in_a_fresh_process() -> None:
    # A fresh interpreter: the cap must be set before threads allocate, as the CLI does it.
    code = "from stream.memory import limit_malloc_arenas; print(limit_malloc_arenas(2))"
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    expected = "True" if sys.platform.startswith("linux") else "False"
    assert out.stdout.strip() == expected


def test_environment_wins_and_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is True
    with pytest.raises(ValueError, match="arenas"):
        limit_malloc_arenas(0)


# Freed blocks in the middle of the heap (the last one kept, so glibc cannot shrink the top) stay
# resident until malloc_trim hands their pages back; in a fresh process so nothing else muddies RSS.
_FRAGMENTED_HEAP = """
import ctypes, json
from stream.memory import HeapTrimmer, heap_stats

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(4000) for _ in range(40_000)]  # 160 MB below the mmap threshold: in the heap
for b in blocks:
    ctypes.memset(b, 1, 4000)
for b in blocks[:-1]:
    libc.free(b)
held = rss()
trimmer = HeapTrimmer(every=1)
trimmer.tick()
print(json.dumps({"held": held, "after": rss(), "trims": trimmer.trims, "free": heap_stats().free}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim is Linux-only")
def test_trim_returns_freed_heap_pages_to_the_os() -> None:
    env = {"PATH": "/usr/bin:/bin", "MALLOC_ARENA_MAX": "2"}
    out = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED_HEAP],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=_ROOT,
    )
    r = json.loads(out.stdout)
    assert r["trims"] == 1 and r["free"] > 100e6  # the allocator still counts the chunks as free...
    assert r["held"] - r["after"] > 100e6  # ...but their pages are no longer resident


def test_trimmer_counts_frames_and_rejects_bad_intervals() -> None:
    trimmer = HeapTrimmer(every=3)
    ran = [trimmer.tick() for _ in range(7)]
    assert ran == ([False, False, True, False, False, True, False] if trimmer.available else [False] * 7)
    assert trimmer.trims == sum(ran) and trimmer.max_ms >= 0.0
    with pytest.raises(ValueError, match="every"):
        HeapTrimmer(every=0)
