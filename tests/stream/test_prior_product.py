"""The face prior through the whole product: run_stream.py with a generator that takes the prior, and
with the prior alone as the restorer, on the bundled real-face clip."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

import run_stream
from tests.training.test_prior_generator import export_untrained_prior_models

REPO = Path(__file__).resolve().parents[2]
SMALL = REPO / "models" / "small"


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def prior_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An (untrained) tiny_prior export beside the shipped prior: the plumbing, not the quality."""
    root = tmp_path_factory.mktemp("prior_models")
    out = export_untrained_prior_models(root, seed=0).out_dir
    shutil.copyfile(SMALL / "prior.npz", out / "prior.npz")
    return out


def test_a_generator_that_takes_the_prior_runs_end_to_end(
    prior_models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "o.mp4"
    with caplog.at_level(logging.INFO):
        code = run_stream.main(
            ["--models", str(prior_models), "--output", str(out), "-q", "--occlusion", "detector"]
        )
    assert code == run_stream.EXIT_OK
    assert any("with the face prior" in r.getMessage() for r in caplog.records)
    assert len(_frames(out)) == 144


def test_the_prior_alone_restores_the_demo_and_a_missing_prior_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "prior.mp4"
    assert run_stream.main(["--restorer", "prior", "--output", str(out), "-q"]) == run_stream.EXIT_OK
    restored, original = _frames(out), _frames(REPO / "assets" / "demo.mp4")
    assert len(restored) == len(original) == 144
    # The lower face changes (the mask is replaced), the top rows of the frame do not (beyond the codec).
    diff = np.abs(restored[100].astype(int) - original[100].astype(int))
    assert diff.max() > 40 and diff[:40].mean() < 3
    no_prior = tmp_path / "models"
    no_prior.mkdir()
    for name in ("detector.onnx", "generator.onnx"):
        shutil.copyfile(SMALL / name, no_prior / name)
    capsys.readouterr()
    code = run_stream.main(
        ["--models", str(no_prior), "--restorer", "prior", "--output", str(tmp_path / "x.mp4"), "-q"]
    )
    err = capsys.readouterr().err
    assert code == run_stream.EXIT_ERROR and "face prior model not found" in err and "Traceback" not in err


def test_without_mediapipe_auto_falls_back_to_the_generator_with_one_logged_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib.util

    import stream.networks as networks

    real = importlib.util.find_spec
    monkeypatch.setattr(
        networks.importlib.util, "find_spec", lambda name, *a: None if name == "mediapipe" else real(name, *a)
    )
    with caplog.at_level(logging.WARNING, logger="stream.networks"):
        step = networks.load_prior_step(SMALL, generator_takes_prior=False, restorer="auto")
    assert step is None
    assert [r.getMessage() for r in caplog.records if "mediapipe is not installed" in r.getMessage()]
