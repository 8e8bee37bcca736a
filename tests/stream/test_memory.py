"""stream.memory: the malloc arena cap is applied where glibc has it, and says so where it does not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.memory import limit_malloc_arenas


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
