"""Training and evaluation samples for visible-face segmentation (paper 003, section 3.2 and Eq. 1).

A sample is a clean canonical crop with its whole-face region (face-mesh oval of the CLEAN crop, see
:mod:`training.data.segmentation_faces`), optionally covered by one or two synthetic occluders
(every kind of :mod:`training.data.occlusion` plus :mod:`training.data.occluders_extra`). Labels:

- ``visible_f32`` = region x (1 - occluder alpha): the face pixels the camera still sees (the target);
- ``occluder_f32``: the occluder's alpha over the whole crop (straps and handles included);
- ``region_f32``: the whole-face region (the segmenter's second output learns it from the occluded
  crop); the true occlusion mask of Eq. 1 is region x occluder.

A share ``bare_prob`` of the samples has no occluder at all (label: the whole region visible), because
the product must leave bare faces untouched; a share of those get a synthetic cast shadow instead,
which is face, not occluder. Training augmentation (:func:`training.data.augment.augment_pair`) warps
and blurs both labels with the images.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.augment import AugmentConfig, augment_pair
from training.data.occluders_extra import EXTRA_KINDS, render_extra
from training.data.occlusion import KINDS as BASE_KINDS
from training.data.occlusion import TRAIN_FACEMASK_STYLES, synthesize
from training.data.segmentation_faces import FaceSet
from training.data.synth_common import FaceGeometry, Occlusion, value_noise

ALL_KINDS: tuple[str, ...] = BASE_KINDS + EXTRA_KINDS
# "cup" is never trained on by default: the evaluation keeps one new occluder shape unseen, as it keeps
# the "photo" face-mask style unseen.
TRAIN_KINDS: tuple[str, ...] = tuple(k for k in ALL_KINDS if k != "cup")
DEFAULT_KIND_WEIGHTS: dict[str, float] = {
    "facemask": 0.32,
    "scarf": 0.08,
    "sunglasses": 0.1,
    "hand": 0.12,
    "freeform": 0.1,
    "microphone": 0.1,
    "cup": 0.08,
    "phone": 0.08,
    "hair": 0.1,
}


@dataclass(frozen=True)
class SegmentationSynthesis:
    """What occludes the training faces. ``weights`` align with ``kinds`` (None: defaults).

    ``bare_prob``: share of samples without any occluder; ``shadow_prob``: share of those bare samples
    that get a cast shadow; ``second_prob``: chance of a second, different occluder.
    """

    kinds: tuple[str, ...] = TRAIN_KINDS
    weights: tuple[float, ...] | None = None
    facemask_styles: tuple[str, ...] = TRAIN_FACEMASK_STYLES
    bare_prob: float = 0.35
    shadow_prob: float = 0.3
    second_prob: float = 0.15

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "facemask_styles", tuple(self.facemask_styles))
        bad = [k for k in self.kinds if k not in ALL_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {ALL_KINDS}, got {self.kinds}")
        if self.weights is not None:
            w = tuple(float(x) for x in self.weights)
            if len(w) != len(self.kinds) or min(w) < 0 or sum(w) <= 0:
                raise ValueError(
                    f"weights must be {len(self.kinds)} non-negative numbers with a positive sum, got {w}"
                )
            object.__setattr__(self, "weights", w)
        for name in ("bare_prob", "shadow_prob", "second_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    def probabilities(self) -> np.ndarray:
        w = np.array(
            self.weights if self.weights is not None else [DEFAULT_KIND_WEIGHTS[k] for k in self.kinds]
        )
        return w / w.sum()


@dataclass(frozen=True)
class SegSample:
    """One sample. ``image_rgb_u8`` (S, S, 3) uint8 RGB; ``visible_f32``, ``occluder_f32``, ``region_f32``
    (S, S) float32 in [0, 1]; ``kind`` e.g. "bare", "hair/bangs", "facemask/kn95+hand/cheek"."""

    image_rgb_u8: np.ndarray
    visible_f32: np.ndarray
    occluder_f32: np.ndarray
    region_f32: np.ndarray
    kind: str

    def __post_init__(self) -> None:
        s = self.image_rgb_u8.shape[0]
        if self.image_rgb_u8.shape != (s, s, 3) or self.image_rgb_u8.dtype != np.uint8:
            raise ValueError(f"image_rgb_u8 must be (S, S, 3) uint8, got {self.image_rgb_u8.shape}")
        for name in ("visible_f32", "occluder_f32", "region_f32"):
            m = getattr(self, name)
            if m.shape != (s, s) or m.dtype != np.float32:
                raise ValueError(f"{name} must be ({s}, {s}) float32, got {m.shape} {m.dtype}")

    @property
    def true_occlusion(self) -> np.ndarray:
        """(S, S) bool: occluder pixels inside the face region (what Eq. 1 should recover)."""
        return (self.occluder_f32 > 0.5) & (self.region_f32 > 0.5)


def render_kind(
    kind: str,
    face_rgb_u8: np.ndarray,
    rng: np.random.Generator,
    geometry: FaceGeometry,
    styles: Sequence[str],
) -> Occlusion:
    """One occluder of ``kind`` (any of :data:`ALL_KINDS`) on the face."""
    if kind in EXTRA_KINDS:
        return render_extra(kind, face_rgb_u8, rng, geometry)
    return synthesize(face_rgb_u8, rng, (kind,), (1.0,), facemask_styles=tuple(styles), geometry=geometry)


def cast_shadow(face_rgb_u8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The face darkened by a soft shadow over a random half-plane blob (a hat brim, a side light)."""
    s = face_rgb_u8.shape[0]
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32) / s
    theta = rng.uniform(0, 2 * np.pi)
    edge = (xs - 0.5) * np.cos(theta) + (ys - 0.5) * np.sin(theta) - rng.uniform(-0.25, 0.25)
    edge = edge + 0.08 * value_noise((s, s), 3, rng)
    soft = rng.uniform(0.02, 0.12)
    shade = 1.0 - rng.uniform(0.25, 0.6) * np.clip(0.5 + edge / soft, 0, 1)
    out = face_rgb_u8.astype(np.float32) * shade[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_sample(
    face_rgb_u8: np.ndarray,
    region_f32: np.ndarray,
    landmarks5: np.ndarray,
    rng: np.random.Generator,
    synthesis: SegmentationSynthesis,
    *,
    kind: str | None = None,
) -> SegSample:
    """A sample of one face. ``kind`` forces an occluder kind ("bare" for none); None draws by the
    synthesis settings (bare with ``bare_prob``)."""
    s = face_rgb_u8.shape[0]
    geometry = FaceGeometry(s, landmarks5)
    region = region_f32.astype(np.float32)
    if kind is None:
        kind = (
            "bare"
            if rng.random() < synthesis.bare_prob
            else str(rng.choice(synthesis.kinds, p=synthesis.probabilities()))
        )
    if kind == "bare":
        image = cast_shadow(face_rgb_u8, rng) if rng.random() < synthesis.shadow_prob else face_rgb_u8.copy()
        return SegSample(image, region.copy(), np.zeros((s, s), np.float32), region, "bare")
    occ = render_kind(kind, face_rgb_u8, rng, geometry, synthesis.facemask_styles)
    others = [k for k in synthesis.kinds if k != kind]
    if others and rng.random() < synthesis.second_prob:
        second = str(rng.choice(others))
        top = render_kind(second, occ.image_rgb_u8, rng, geometry, synthesis.facemask_styles)
        mask = 1.0 - (1.0 - occ.mask_f32) * (1.0 - top.mask_f32)
        occ = Occlusion(top.image_rgb_u8, mask.astype(np.float32), f"{occ.kind}+{top.kind}")
    visible = (region * (1.0 - occ.mask_f32)).astype(np.float32)
    return SegSample(occ.image_rgb_u8, visible, occ.mask_f32, region, occ.kind)


def augment_sample(
    clean_rgb_u8: np.ndarray, sample: SegSample, rng: np.random.Generator, config: AugmentConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(occluded image (S, S, 3) uint8 RGB, visible label, region label (S, S) float32) after augmentation.

    Why two calls: :func:`augment_pair` carries one mask; a copy of the generator taken before the first
    call makes the second draw the same parameters, so the region gets exactly the same warp and blur.
    """
    twin = copy.deepcopy(rng)
    _, image, visible = augment_pair(clean_rgb_u8, sample.image_rgb_u8, sample.visible_f32, rng, config)
    _, _, region = augment_pair(clean_rgb_u8, sample.image_rgb_u8, sample.region_f32, twin, config)
    return image, visible, region


def to_tensors(
    image_rgb_u8: np.ndarray, visible_f32: np.ndarray, region_f32: np.ndarray
) -> dict[str, torch.Tensor]:
    """``image`` (3, S, S) float32 rgb01 and ``target`` (2, S, S) float32 in [0, 1]: visible face, region."""
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image_rgb_u8.transpose(2, 0, 1), np.float32) / 255.0),
        "target": torch.from_numpy(np.ascontiguousarray(np.stack([visible_f32, region_f32]), np.float32)),
    }


class SegmentationStream(Dataset[dict[str, torch.Tensor]]):
    """The training stream over one or more face sets: item ``k`` is a pure function of ``(seed, k)``
    (a resumed run at step n continues at ``k = n * batch``). ``weights``: relative share of each set
    (None: by size). Indices are unbounded."""

    def __init__(
        self,
        face_sets: Sequence[FaceSet],
        synthesis: SegmentationSynthesis,
        augment: AugmentConfig | None,
        seed: int = 0,
        weights: Sequence[float] | None = None,
    ) -> None:
        if not face_sets or any(len(f) == 0 for f in face_sets):
            raise ValueError("SegmentationStream needs one or more non-empty face sets")
        sizes = {f.crop_size for f in face_sets}
        if len(sizes) != 1:
            raise ValueError(f"face sets must share one crop size, got {sorted(sizes)}")
        w = np.array([len(f) for f in face_sets] if weights is None else list(weights), float)
        if len(w) != len(face_sets) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be {len(face_sets)} non-negative numbers with a positive sum")
        self.face_sets = list(face_sets)
        self.p = w / w.sum()
        self.synthesis = synthesis
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(k)])
        fs = self.face_sets[int(rng.choice(len(self.face_sets), p=self.p))]
        i = int(rng.integers(len(fs)))
        sample = make_sample(fs.rgb_u8[i], fs.regions[i], fs.landmarks5[i], rng, self.synthesis)
        if self.augment is None:
            return to_tensors(sample.image_rgb_u8, sample.visible_f32, sample.region_f32)
        return to_tensors(*augment_sample(fs.rgb_u8[i], sample, rng, self.augment))


def evaluation_samples(
    faces: FaceSet, kinds: Sequence[str], per_face: int, seed: int, facemask_styles: Sequence[str]
) -> list[tuple[int, SegSample]]:
    """(face index, sample) for every face x kind x ``per_face`` draw, no augmentation, deterministic.

    ``kinds`` may include "bare"; "facemask" uses ``facemask_styles`` (e.g. ("photo",), held out).
    """
    synthesis = SegmentationSynthesis(
        facemask_styles=tuple(facemask_styles), second_prob=0.0, shadow_prob=0.0
    )
    out = []
    for ki, kind in enumerate(kinds):
        for i in range(len(faces)):
            for j in range(per_face):
                rng = np.random.default_rng([seed, ki, i, j])
                out.append(
                    (
                        i,
                        make_sample(
                            faces.rgb_u8[i], faces.regions[i], faces.landmarks5[i], rng, synthesis, kind=kind
                        ),
                    )
                )
    return out


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    """Binary erosion of an (S, S) mask by a (2 px + 1) disc; ``px`` 0 returns the mask as bool."""
    m = np.asarray(mask) > 0.5
    if px <= 0:
        return m
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.erode(m.astype(np.uint8), k).astype(bool)
