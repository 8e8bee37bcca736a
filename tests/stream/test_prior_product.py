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
    """Stands in for engines.facemesh.FaceMesh: fixed landmarks, counted calls and modes."""

    calls = 0
    static_calls = 0
    closed = 0

    def __init__(self, config: object = None, *_: object, **__: object) -> None:
        self.static = bool(getattr(config, "static_image_mode", False))

    def landmarks(self, rgb_u8: np.ndarray) -> np.ndarray:
        type(self).calls += 1
        type(self).static_calls += self.static
        return _mean_mesh(rgb_u8.shape[0])

    def close(self) -> None:
        type(self).closed += 1


def _mean_mesh(s: int) -> np.ndarray:
    """468 points on a grid over the crop's centre: enough for the fit to run."""
    g = np.stack(np.meshgrid(np.linspace(0.3, 0.7, 22), np.linspace(0.25, 0.8, 22)), -1).reshape(-1, 2)
    return (g[:468] * s).astype(np.float32)


def _located(track_ids: tuple[int, ...], alive: frozenset[int] | None = None, s: int = 128):
    """LocatedFaces of faces that fill a (s, s) frame exactly (identity alignment)."""
    from engines.crop import estimate_alignment, template
    from stream.faces.front_end import LocatedFaces

    a = estimate_alignment(template(s), s)
    n = len(track_ids)
    return LocatedFaces(
        alignments=(a,) * n,
        track_ids=track_ids,
        boxes=np.tile(np.array([[0, 0, s, s]], np.float32), (n, 1)),
        alive_ids=frozenset(track_ids) if alive is None else alive,
        skipped=0,
        detected=True,
        detect_ms=0.0,
        align_ms=0.0,
    )


@pytest.fixture
def counting_step(monkeypatch: pytest.MonkeyPatch):
    import stream.restore.prior_step as prior_step
    from engines.prior.fit import PriorFitter
    from engines.prior.model import load_prior

    _CountingMesh.calls = _CountingMesh.static_calls = _CountingMesh.closed = 0
    monkeypatch.setattr(prior_step, "FaceMesh", _CountingMesh)
    fitter = PriorFitter(load_prior(SMALL / "prior.npz"))
    return lambda mesh_every=1: prior_step.PriorStep(fitter, mesh_every=mesh_every)


def _crops_and_holes(n: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = rng.integers(40, 220, (128, 128, 3), dtype=np.uint8)
    crops = np.repeat((frame[:, :, ::-1].transpose(2, 0, 1)[None] / np.float32(255.0)), n, 0)
    holes = np.zeros((n, 128, 128), np.float32)
    holes[:, 70:110, 30:100] = 1.0
    return frame, crops.astype(np.float32), holes


@pytest.mark.parametrize(("mesh_every", "expected"), [(1, 6), (2, 3), (3, 2)])
def test_the_mesh_runs_ahead_on_every_nth_frame_of_a_track(
    counting_step, mesh_every: int, expected: int
) -> None:
    step = counting_step(mesh_every)
    frame, crops, holes = _crops_and_holes()
    for _ in range(6):
        ahead = step.landmarks_ahead(frame, _located((7,)), frozenset({7}))
        assert set(ahead) == {7}
        guide = step.guides([7], crops, holes, ahead)
        assert guide.shape == crops.shape and np.isfinite(guide).all()
    assert _CountingMesh.calls == step.mesh_runs == expected
    assert step.fallback_runs == 0 and _CountingMesh.static_calls == 0
    with pytest.raises(ValueError, match="mesh_every"):
        type(step)(step.fitter, mesh_every=0)


def test_only_wanted_tracks_are_meshed_ahead_others_fall_back_and_ended_runners_close(counting_step) -> None:
    step = counting_step()
    frame, crops, holes = _crops_and_holes(2)
    ahead = step.landmarks_ahead(frame, _located((3, 4)), frozenset({4}))
    assert set(ahead) == {4} and step.mesh_runs == 1, "a bare face (3) is never meshed ahead"
    # Face 3 is restored on this frame without landmarks ahead: the restore thread meshes it (static mode).
    step.guides([3, 4], crops, holes, ahead)
    assert step.fallback_runs == 1 and _CountingMesh.static_calls == 1
    # Track 4 ends: its runner is closed on the next located frame; the static runner stays until close().
    step.landmarks_ahead(frame, _located((3,)), frozenset({3}))
    assert _CountingMesh.closed == 1
    step.close()
    assert _CountingMesh.closed == 3, "track 3's runner and the static one"


def test_the_mesh_ahead_sees_the_bytes_of_the_crop_the_restore_sees() -> None:
    # landmarks_ahead warps the crop itself (3-channel); the numpy op set warps BGRA into float: the mesh
    # must see the same pixels, or its landmarks would not fit the crop the prior is drawn into.
    from engines.crop import estimate_alignment, warp_to_crop
    from engines.face_detect import YuNetDetector
    from stream.faces.front_end import LocatedFaces
    from stream.restore.config import ProcessorConfig
    from stream.restore.numpy_ops import NumpyOps
    from stream.restore.ops import StagedFrame
    from stream.restore.prior_step import _crop_rgb_u8

    with av.open(str(REPO / "assets" / "demo.mp4")) as container:
        frame = next(iter(container.decode(video=0))).to_ndarray(format="bgr24")
    det = YuNetDetector().detect(frame)[0]
    # An off-grid alignment (sub-pixel shift and a small rotation), as a tracker gives.
    a = estimate_alignment(det.landmarks + np.array([[0.37, -0.21]]), 128)
    located = LocatedFaces((a,), (1,), np.array([det.box], np.float32), frozenset({1}), 0, True, 0.0, 0.0)
    crops, _ = NumpyOps(ProcessorConfig()).warp_crops(StagedFrame.of(frame, located, 0.0))
    np.testing.assert_array_equal(_crop_rgb_u8(crops[0]), warp_to_crop(frame, a)[:, :, ::-1])
