"""StageClock on the host (the CUDA-event path is exercised by the gpu tests of test_op_sets.py)."""

from __future__ import annotations

import time

import pytest

from stream.restore.clock import StageClock


def test_wall_clock_times_started_stages_only() -> None:
    clock = StageClock(("mask", "restore"))
    clock.start("mask")
    time.sleep(0.01)
    clock.stop("mask")
    times = clock.read()
    assert set(times) == {"mask"} and 5.0 < times["mask"] < 1000.0
    clock.reset()
    assert clock.read() == {}
    with pytest.raises(ValueError, match=r"stage must be one of \('mask', 'restore'\), got 'upload'"):
        clock.start("upload")
