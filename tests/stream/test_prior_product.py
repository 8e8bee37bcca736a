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
    # --mesh-every 2 (as --preset realtime runs it): the mesh on every other frame of the track.
    argv = ["--restorer", "prior", "--mesh-every", "2", "--output", str(out), "-q"]
    assert run_stream.main(argv) == run_stream.EXIT_OK
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
    code = run_stream.main(["--mesh-every", "0", "--output", str(tmp_path / "y.mp4"), "-q"])
    err = capsys.readouterr().err
    assert code != run_stream.EXIT_OK and "mesh_every must be >= 1" in err and "Traceback" not in err


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


class _CountingMesh:
    """Stands in for engines.facemesh.FaceMesh: fixed landmarks, counted calls."""

    calls = 0

    def __init__(self, *_: object, **__: object) -> None:
        pass

    def landmarks(self, rgb_u8: np.ndarray) -> np.ndarray:
        type(self).calls += 1
        return _mean_mesh(rgb_u8.shape[0])

    def close(self) -> None:
        pass


def _mean_mesh(s: int) -> np.ndarray:
    """468 points on a grid over the crop's centre: enough for the fit to run."""
    g = np.stack(np.meshgrid(np.linspace(0.3, 0.7, 22), np.linspace(0.25, 0.8, 22)), -1).reshape(-1, 2)
    return (g[:468] * s).astype(np.float32)


@pytest.mark.parametrize(("mesh_every", "expected"), [(1, 6), (2, 3), (3, 2)])
def test_the_mesh_runs_on_every_nth_frame_of_a_track(
    monkeypatch: pytest.MonkeyPatch, mesh_every: int, expected: int
) -> None:
    import stream.restore.prior_step as prior_step
    from engines.prior.fit import PriorFitter
    from engines.prior.model import load_prior

    _CountingMesh.calls = 0
    monkeypatch.setattr(prior_step, "FaceMesh", _CountingMesh)
    step = prior_step.PriorStep(PriorFitter(load_prior(SMALL / "prior.npz")), mesh_every=mesh_every)
    rng = np.random.default_rng(0)
    crops = rng.uniform(0.2, 0.8, (1, 3, 128, 128)).astype(np.float32)
    holes = np.zeros((1, 128, 128), np.float32)
    holes[:, 70:110, 30:100] = 1.0
    for _ in range(6):
        guide = step.guides([7], crops, holes)
        assert guide.shape == crops.shape and np.isfinite(guide).all()
    assert _CountingMesh.calls == step.mesh_runs == expected
    with pytest.raises(ValueError, match="mesh_every"):
        prior_step.PriorStep(step.fitter, mesh_every=0)
