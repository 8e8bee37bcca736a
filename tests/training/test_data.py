"""Occlusion synthesis, augmentation, alignment, datasets, person split and the dataset builder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.crop import template
from training.data.augment import AugmentConfig, augment_pair
from training.data.build import main as build_main
from training.data.datasets import FaceFolderDataset, FMORDataset, MixedTrainingSet, StepSampler
from training.data.faces import FaceAligner, split_by_person
from training.data.occlusion import FACEMASK_STYLES, KINDS, SynthesisConfig, render_facemask, synthesize
from training.data.synth_common import FaceGeometry


def synthetic_face(size: int, rng: np.random.Generator) -> np.ndarray:
    """A face-like canonical crop (uint8 RGB): skin ellipse, eyes and mouth on the template landmarks."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = rng.integers(40, 200, 3)
    t = template(size)
    skin = [float(rng.uniform(120, 230)), float(rng.uniform(90, 190)), float(rng.uniform(70, 160))]
    c = (t[0] + t[1] + t[3] + t[4]) / 4
    cv2.ellipse(img, (int(c[0]), int(c[1])), (int(size * 0.24), int(size * 0.33)), 0, 0, 360, skin, -1)
    for p in t[:2]:
        cv2.circle(img, (int(p[0]), int(p[1])), max(1, size // 40), (30, 30, 30), -1)
    cv2.line(img, tuple(int(v) for v in t[3]), tuple(int(v) for v in t[4]), (120, 40, 40), max(1, size // 64))
    return img


def write_faces(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"person{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(synthetic_face(size, rng), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def face64() -> np.ndarray:
    return synthetic_face(64, np.random.default_rng(1))


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_renders_an_exact_mask(face64: np.ndarray, kind: str) -> None:
    for seed in range(4):
        occ = synthesize(face64, np.random.default_rng(seed), kinds=(kind,))
        assert occ.kind.split("/")[0] == kind
        assert occ.image_rgb_u8.shape == face64.shape and occ.image_rgb_u8.dtype == np.uint8
        mask = occ.mask_f32
        assert mask.shape == (64, 64) and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        occluded = mask > 0.5
        assert 0.01 < occluded.mean() < 0.6, f"{kind} covers {occluded.mean():.3f} of the crop"
        # Outside the mask nothing changed; inside, (nearly) everything did.
        untouched = mask == 0
        assert np.array_equal(occ.image_rgb_u8[untouched], face64[untouched])
        changed = (occ.image_rgb_u8 != face64).any(axis=2)
        assert changed[occluded].mean() > 0.85


@pytest.mark.parametrize("kind", KINDS)
def test_synthesis_is_deterministic_under_a_seed(face64: np.ndarray, kind: str) -> None:
    a = synthesize(face64, np.random.default_rng(7), kinds=(kind,))
    b = synthesize(face64, np.random.default_rng(7), kinds=(kind,))
    c = synthesize(face64, np.random.default_rng(8), kinds=(kind,))
    assert np.array_equal(a.image_rgb_u8, b.image_rgb_u8) and np.array_equal(a.mask_f32, b.mask_f32)
    assert a.kind == b.kind
    assert not np.array_equal(a.mask_f32, c.mask_f32)


@pytest.mark.parametrize("style", FACEMASK_STYLES)
def test_facemask_covers_mouth_and_chin_in_canonical_coordinates(style: str) -> None:
    size = 128
    face = synthetic_face(size, np.random.default_rng(3))
    t = template(size)
    for seed in range(3):
        occ = render_facemask(face, np.random.default_rng(seed), style)
        assert occ.kind == f"facemask/{style}"
        m = occ.mask_f32
        for x, y in t[3:]:  # mouth corners are always covered
            assert m[int(round(y)), int(round(x))] > 0.5
        assert m[int(t[0, 1]) - 3, int(t[0, 0])] == 0.0  # above the left eye stays free
        assert m[int(size * 0.85), size // 2] > 0.5  # chin
        rows = np.flatnonzero(m[:, int(t[2, 0])] > 0.5)
        assert rows.min() > t[0, 1]  # on the nose line the mask starts below the eyes


def _run_around(row: np.ndarray, x: int) -> tuple[int, int]:
    """Extent (left, right) in pixels of the contiguous True run of ``row`` that contains ``x``."""
    left = right = x
    while left > 0 and row[left - 1]:
        left -= 1
    while right < len(row) - 1 and row[right + 1]:
        right += 1
    return x - left, right - x


def test_facemask_follows_the_landmarks_of_a_turned_face() -> None:
    size = 128
    face = synthetic_face(size, np.random.default_rng(0))
    lm = template(size).copy()
    lm[2, 0] += 12  # nose shifted right, as on a head turned to the image right
    lm[3:, 0] += 6
    straight = render_facemask(face, np.random.default_rng(5), "kn95")
    turned = render_facemask(face, np.random.default_rng(5), "kn95", geometry=FaceGeometry(size, lm))
    row = int(round(lm[3, 1]))
    s_left, s_right = _run_around(straight.mask_f32[row] > 0.5, int(round(template(size)[2, 0])))
    t_left, t_right = _run_around(turned.mask_f32[row] > 0.5, int(round(lm[2, 0])))
    # Seen from the side it turned to, the far cheek is foreshortened and the near one widens.
    assert t_right / t_left < 0.8 * (s_right / s_left)


def test_style_selection_and_validation(face64: np.ndarray) -> None:
    cfg = SynthesisConfig(kinds=("facemask",), facemask_styles=("photo",), photo_textures=("green",))
    for seed in range(3):
        assert cfg.apply(face64, np.random.default_rng(seed)).kind == "facemask/photo"
    with pytest.raises(ValueError, match="facemask_styles"):
        SynthesisConfig(facemask_styles=("origami",))
    with pytest.raises(ValueError, match="weights"):
        SynthesisConfig(kinds=("facemask", "hand"), weights=(1.0,))
    with pytest.raises(ValueError, match="uint8"):
        synthesize(face64.astype(np.float32), np.random.default_rng(0))


def test_second_occluder_unions_the_masks(face64: np.ndarray) -> None:
    occ = synthesize(face64, np.random.default_rng(2), kinds=("facemask", "sunglasses"), second_prob=1.0)
    assert "+" in occ.kind
    assert np.array_equal(occ.image_rgb_u8[occ.mask_f32 == 0], face64[occ.mask_f32 == 0])


def test_augmentation_keeps_image_and_mask_aligned(face64: np.ndarray) -> None:
    occ = synthesize(face64, np.random.default_rng(0), kinds=("facemask",))
    no_jpeg = AugmentConfig(jpeg_prob=0.0, blur_prob=0.5, noise_prob=0.5, flip_prob=0.5)
    for seed in range(6):
        clean, occluded, mask = augment_pair(
            face64, occ.image_rgb_u8, occ.mask_f32, np.random.default_rng(seed), no_jpeg
        )
        assert clean.shape == occluded.shape == (64, 64, 3) and mask.shape == (64, 64)
        differs = (clean != occluded).any(axis=2)
        assert not differs[mask == 0].any(), "a pixel outside the augmented mask differs"
        assert differs[mask > 0.5].mean() > 0.8, "the mask moved away from the occluder"
    again = augment_pair(face64, occ.image_rgb_u8, occ.mask_f32, np.random.default_rng(5), no_jpeg)
    assert all(np.array_equal(x, y) for x, y in zip(again, (clean, occluded, mask), strict=True))


def test_augmentation_flip_mirrors_the_mask(face64: np.ndarray) -> None:
    mask = np.zeros((64, 64), np.float32)
    mask[10:20, 5:15] = 1.0
    occluded = face64.copy()
    occluded[mask > 0] = 255
    only_flip = AugmentConfig(**{**AugmentConfig.none().__dict__, "flip_prob": 1.0})
    _, out, m = augment_pair(face64, occluded, mask, np.random.default_rng(0), only_flip)
    assert m[10:20, 49:59].min() == 1.0 and m[:, :32].max() == 0.0
    assert (out[m > 0.5] == 255).all()


def test_aligner_maps_landmarks_onto_the_template() -> None:
    size = 64
    big = np.zeros((300, 400, 3), np.uint8)
    lm = template(size) * 2.5 + np.array([90.0, 20.0])  # a face 2.5x larger, shifted
    aligner = FaceAligner.__new__(FaceAligner)  # no detector needed for align_with
    aligner.crop_size = size
    face = aligner.align_with(big, lm.astype(np.float32), "p", "src")
    assert face.rgb_u8.shape == (size, size, 3)
    np.testing.assert_allclose(face.landmarks, template(size), atol=1e-6)


def test_split_by_person_never_shares_a_person() -> None:
    records = []
    for person, n in [("video", 40), *[(f"p{i}", 1 + i % 4) for i in range(30)]]:
        records += [{"person_hint": person, "crop_file": f"{person}_{j}.png"} for j in range(n)]
    for seed in range(5):
        split = split_by_person(records, 0.2, seed)
        train_people = {r["person_hint"] for r in split.train}
        val_people = {r["person_hint"] for r in split.val}
        assert not train_people & val_people
        assert len(split.train) + len(split.val) == len(records)
        assert "video" in train_people  # too large to hold out without overshooting
        assert 0.1 < len(split.val) / len(records) < 0.3
        assert set(split.val_people) == val_people
    assert split_by_person(records, 0.2, 3) == split_by_person(records, 0.2, 3)
    assert split_by_person(records, 0.0, 0).val == ()


def _write_fmor(root: Path, n: int, size: int, with_masks: bool) -> None:
    rng = np.random.default_rng(0)
    for sub in ("A", "B", "face-mask"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        clean = synthetic_face(size, rng)
        occ = synthesize(clean, np.random.default_rng(i), kinds=("facemask",))
        cv2.imwrite(str(root / "A" / f"{i}.png"), cv2.cvtColor(occ.image_rgb_u8, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "B" / f"{i}.png"), cv2.cvtColor(clean, cv2.COLOR_RGB2BGR))
        if with_masks:
            cv2.imwrite(str(root / "face-mask" / f"{i}.png"), (occ.mask_f32 * 255).astype(np.uint8))


@pytest.mark.parametrize("with_masks", [True, False])
def test_fmor_dataset_reads_the_layout(tmp_path: Path, with_masks: bool) -> None:
    _write_fmor(tmp_path, 3, 96, with_masks)
    if not with_masks:
        (tmp_path / "face-mask").rmdir()
    ds = FMORDataset(tmp_path, 64, aligned=True)
    assert len(ds) == 3
    sample = ds[1]
    assert sample["image"].shape == (3, 64, 64) and sample["target"].shape == (3, 64, 64)
    assert sample["mask"].shape == (1, 64, 64) and sample["mask"].dtype == torch.float32
    for key in ("image", "target", "mask"):
        assert 0.0 <= float(sample[key].min()) and float(sample[key].max()) <= 1.0
    mask = sample["mask"][0] > 0.5
    differs = (sample["image"] - sample["target"]).abs().amax(dim=0) > 0.1
    assert mask.float().mean() > 0.05
    assert (differs & mask).sum() / mask.sum() > 0.7  # mask sits where the images differ
    assert (differs & ~mask).float().mean() < 0.02


def test_face_folder_dataset_and_mixed_stream_are_deterministic(tmp_path: Path) -> None:
    write_faces(tmp_path / "faces", 4, 80)
    ds = FaceFolderDataset(tmp_path / "faces", 64, seed=3, augment=AugmentConfig(), aligned=True)
    assert len(ds) == 4 and len(ds.people) == 4
    a, b = ds[2], ds[2]
    assert all(torch.equal(a[k], b[k]) for k in a)
    mixed = MixedTrainingSet([ds], seed=11)
    x, y, z = mixed[1000], mixed[1000], mixed[1001]
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(x["mask"], z["mask"])
    assert list(StepSampler(6, 9)) == [6, 7, 8]


def test_build_writes_an_fmor_layout_that_reads_back(tmp_path: Path) -> None:
    write_faces(tmp_path / "faces", 6, 64)
    out = tmp_path / "eval"
    rc = build_main(["--faces", str(tmp_path / "faces"), "--out", str(out), "--crop-size", "64", "--split", "val",
                     "--holdout-fraction", "0.34", "--aligned", "--styles", "photo", "--seed", "1", "--split-seed", "2"])  # fmt: skip
    assert rc == 0
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train_people"]) & set(split["val_people"])
    assert set(split["people_in_this_set"]) <= set(split["val_people"])
    names = sorted(p.name for p in (out / "A").iterdir())
    assert names and names == sorted(p.name for p in (out / "B").iterdir()) == sorted(
        p.name for p in (out / "face-mask").iterdir()
    )
    info = json.loads((out / "info.json").read_text())
    assert info["aligned"] and info["crop_size"] == 64 and set(info["kinds_drawn"]) == {"facemask/photo"}
    ds = FMORDataset(out, 64)  # aligned read from info.json: no detection
    assert len(ds) == len(names)


def test_build_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = build_main(["--faces", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err
