"""Extra occluders, segmentation samples (labels of Eq. 1), the face-set cache and the occlusion mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.occlusion_mask import OcclusionMaskConfig, occlusion_mask
from tests.training.segmenter_fixtures import synthetic_face_set
from training.data.augment import AugmentConfig
from training.data.occluders_extra import EXTRA_KINDS, render_extra
from training.data.segmentation import (
    ALL_KINDS,
    TRAIN_KINDS,
    SegmentationStream,
    SegmentationSynthesis,
    evaluation_samples,
    make_sample,
)
from training.data.segmentation_faces import FaceSet
from training.data.synth_common import FaceGeometry


@pytest.mark.parametrize("kind", EXTRA_KINDS)
def test_extra_occluders_paint_only_their_mask_and_are_deterministic(kind: str) -> None:
    faces = synthetic_face_set(2, 128)
    face = faces.rgb_u8[0]
    geom = FaceGeometry(128, faces.landmarks5[0])
    a = render_extra(kind, face, np.random.default_rng(3), geom)
    b = render_extra(kind, face, np.random.default_rng(3), geom)
    assert a.kind.startswith(kind)
    assert np.array_equal(a.image_rgb_u8, b.image_rgb_u8) and np.array_equal(a.mask_f32, b.mask_f32)
    covered = a.mask_f32 > 0.5
    assert 0.005 < covered.mean() < 0.6, f"{kind} covers {covered.mean():.3f} of the crop"
    untouched = a.mask_f32 == 0
    assert np.array_equal(a.image_rgb_u8[untouched], face[untouched])
    assert np.abs(a.image_rgb_u8[covered].astype(int) - face[covered].astype(int)).mean() > 3


def test_unknown_extra_kind_is_named() -> None:
    faces = synthetic_face_set(1, 64)
    with pytest.raises(ValueError, match="microphone"):
        render_extra("umbrella", faces.rgb_u8[0], np.random.default_rng(0))


def test_held_out_kinds_are_not_trained_by_default() -> None:
    assert "cup" in ALL_KINDS and "cup" not in TRAIN_KINDS
    assert "photo" not in SegmentationSynthesis().facemask_styles
    with pytest.raises(ValueError, match="kinds"):
        SegmentationSynthesis(kinds=("umbrella",))


def test_labels_follow_eq1() -> None:
    faces = synthetic_face_set(2, 64)
    syn = SegmentationSynthesis()
    bare = make_sample(
        faces.rgb_u8[0], faces.regions[0], faces.landmarks5[0], np.random.default_rng(0), syn, kind="bare"
    )
    assert np.array_equal(bare.visible_f32, faces.regions[0]) and not bare.true_occlusion.any()
    occ = make_sample(
        faces.rgb_u8[0], faces.regions[0], faces.landmarks5[0], np.random.default_rng(0), syn, kind="facemask"
    )
    np.testing.assert_allclose(occ.visible_f32, faces.regions[0] * (1 - occ.occluder_f32))
    assert occ.true_occlusion.sum() > 0.1 * (faces.regions[0] > 0.5).sum()
    assert not (occ.true_occlusion & (faces.regions[0] < 0.5)).any()


def test_stream_is_a_pure_function_of_the_index_and_has_bare_faces() -> None:
    faces = synthetic_face_set(3, 64)
    stream = SegmentationStream([faces], SegmentationSynthesis(bare_prob=0.5), AugmentConfig(), seed=1)
    a, b = stream[17], stream[17]
    assert a["image"].shape == (3, 64, 64) and a["target"].shape == (2, 64, 64)
    assert (a["image"] == b["image"]).all() and (a["target"][0:1] == b["target"][0:1]).all()
    # Visible face lies inside the region, which got the same warp (up to the blur's soft edges).
    assert float((a["target"][0] - a["target"][1]).max()) < 0.05
    assert not (stream[17]["image"] == stream[18]["image"]).all()
    full = [
        bool((stream[k]["target"][0:1] > 0.5).sum() >= 0.97 * (faces.regions > 0.5).sum(axis=(1, 2)).min())
        for k in range(40)
    ]
    assert 5 <= sum(full) <= 35  # bare faces are a large share, but not all


def test_evaluation_samples_are_deterministic() -> None:
    faces = synthetic_face_set(2, 64)
    a = evaluation_samples(faces, ("bare", "hand", "cup"), 1, 5, ("photo",))
    b = evaluation_samples(faces, ("bare", "hand", "cup"), 1, 5, ("photo",))
    assert len(a) == 6
    assert all(np.array_equal(x.image_rgb_u8, y.image_rgb_u8) for (_, x), (_, y) in zip(a, b, strict=True))


def test_face_set_round_trips_and_resizes(tmp_path: Path) -> None:
    faces = synthetic_face_set(2, 64)
    faces.save(tmp_path / "f.npz")
    back = FaceSet.load(tmp_path / "f.npz")
    assert back.people == faces.people and np.array_equal(back.rgb_u8, faces.rgb_u8)
    np.testing.assert_array_equal(back.regions, faces.regions)
    big = faces.at_size(128)
    assert big.rgb_u8.shape == (2, 128, 128, 3)
    ratio = (big.regions > 0.5).sum() / (faces.regions > 0.5).sum()
    assert 3.8 < ratio < 4.2
    with pytest.raises(ValueError, match=r"rgb_u8 must be \(2, S, S, 3\)"):
        FaceSet(faces.rgb_u8[:, :, :10], faces.mesh, faces.landmarks5, faces.people, faces.regions)


def test_occlusion_mask_leaves_a_bare_face_empty_and_finds_an_occluder() -> None:
    s = 128
    region = np.zeros((s, s), np.float32)
    region[20:110, 30:100] = 1
    # A bare face whose predicted outline is off by 1 px from the mesh's: no occlusion.
    visible = np.zeros((s, s), np.float32)
    visible[21:109, 31:99] = 0.9
    assert occlusion_mask(visible, region).sum() == 0
    # An occluder over the lower half, and a 2x2 speck of noise on the cheek.
    visible[70:110, 30:100] = 0.05
    visible[40:42, 50:52] = 0.1
    occ = occlusion_mask(visible, region)
    assert occ.dtype == np.uint8 and occ[80:100, 40:90].all()
    assert occ[40:42, 50:52].sum() == 0
    assert occ[:20].sum() == 0 and occ[:, :30].sum() == 0
    with pytest.raises(ValueError, match=r"\(S, S\)"):
        occlusion_mask(visible[:10], region)
    with pytest.raises(ValueError, match="threshold"):
        OcclusionMaskConfig(threshold=1.5)
