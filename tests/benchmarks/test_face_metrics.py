"""benchmarks.face_metrics.evaluate_frames: which frames each face metric samples (a stand-in LPIPS)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from benchmarks.clip_io import GroundTruth, VideoWriter
from benchmarks.face_metrics import evaluate_frames

FRAMES = 12


class _CountingLpips:
    """Duck-typed LpipsMetric: mean |reference - candidate|, and the number of calls."""

    def __init__(self) -> None:
        self.calls = 0

    def distances(self, reference: np.ndarray, candidates: Sequence[np.ndarray]) -> list[float]:
        self.calls += 1
        return [float(np.mean(np.abs(reference - c))) for c in candidates]


def _clip(tmp_path: Path) -> tuple[dict[str, Path], Path, GroundTruth]:
    rng = np.random.default_rng(0)
    clean = [np.full((64, 64, 3), 40 + 10 * i, np.uint8) for i in range(FRAMES)]
    noisy = [np.clip(f + rng.integers(-30, 30, f.shape), 0, 255).astype(np.uint8) for f in clean]
    for name, frames in (("clean", clean), ("same", clean), ("noisy", noisy)):
        with VideoWriter(tmp_path / f"{name}.mp4", 64, 64, 30) as w:
            for f in frames:
                w.write(f)
    # The whole 64 px frame mapped onto the 256 px crop (x4).
    matrices = np.tile(np.array([[4.0, 0, 0], [0, 4.0, 0]]), (FRAMES, 1, 1))
    truth = GroundTruth(np.zeros((FRAMES, 64, 64), bool), np.zeros(FRAMES, np.int32), matrices)
    return {"same": tmp_path / "same.mp4", "noisy": tmp_path / "noisy.mp4"}, tmp_path / "clean.mp4", truth


def test_lpips_on_every_lpips_every_th_frame(tmp_path: Path) -> None:
    outputs, clean, truth = _clip(tmp_path)
    fake = _CountingLpips()
    got = evaluate_frames(outputs, clean, truth, None, every=2, lpips=fake, lpips_every=4)  # type: ignore[arg-type]
    assert fake.calls == len(range(0, FRAMES, 4))
    assert got["same"]["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert got["noisy"]["lpips"] > 0.01
    assert got["same"]["id_cosine"] is None  # no embedder
    fake = _CountingLpips()
    evaluate_frames(outputs, clean, truth, None, every=3, lpips=fake)  # type: ignore[arg-type]
    assert fake.calls == len(range(0, FRAMES, 3))  # default: the face-metric frames


def test_without_lpips_the_key_is_null(tmp_path: Path) -> None:
    outputs, clean, truth = _clip(tmp_path)
    got = evaluate_frames(outputs, clean, truth, None, every=4)
    assert set(got["noisy"]) == {"psnr_frame", "psnr_face", "ssim_face", "id_cosine", "lpips"}
    assert got["noisy"]["lpips"] is None and got["noisy"]["ssim_face"] < 1.0


def test_lpips_every_must_be_a_multiple_of_every(tmp_path: Path) -> None:
    outputs, clean, truth = _clip(tmp_path)
    with pytest.raises(ValueError, match="multiple"):
        evaluate_frames(outputs, clean, truth, None, every=2, lpips=_CountingLpips(), lpips_every=3)  # type: ignore[arg-type]
