"""Occlusion synthesis for training and evaluation: one entry point over every occluder kind.

Everything happens in the canonical crop of :mod:`engines.crop`; each result carries its exact pixel
mask (:class:`Occlusion`), and a result is a pure function of the face, the settings and the state of the
``numpy.random.Generator`` passed in (same seed, same pixels).

Kinds: ``facemask`` (styles surgical, kn95, n95, cloth, photo), ``scarf``, ``sunglasses``, ``hand``,
``freeform`` (strokes or blobs). :class:`SynthesisConfig` selects kinds, weights and face-mask styles so an
evaluation set can use settings the training did not (e.g. train on procedural masks, evaluate on
``photo``: real mask photographs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.data.facemask import COLOUR_FAMILIES, FACEMASK_STYLES, PHOTO_TEXTURES, render_facemask
from training.data.occluders import render_freeform, render_hand, render_scarf, render_sunglasses
from training.data.synth_common import FaceGeometry, Occlusion, canonical_geometry

__all__ = [
    "COLOUR_FAMILIES",
    "DEFAULT_WEIGHTS",
    "FACEMASK_STYLES",
    "KINDS",
    "PHOTO_TEXTURES",
    "FaceGeometry",
    "Occlusion",
    "SynthesisConfig",
    "render_facemask",
    "synthesize",
]

KINDS: tuple[str, ...] = ("facemask", "scarf", "sunglasses", "hand", "freeform")
# Face-masks are the task; the other kinds teach the detector that "occluder" is not "blue fabric".
DEFAULT_WEIGHTS: dict[str, float] = {
    "facemask": 0.6,
    "scarf": 0.1,
    "sunglasses": 0.08,
    "hand": 0.12,
    "freeform": 0.1,
}
# Face-mask styles for training by default; "photo" (real mask photographs) is held out for evaluation.
TRAIN_FACEMASK_STYLES: tuple[str, ...] = ("surgical", "kn95", "n95", "cloth")
EVAL_FACEMASK_STYLES: tuple[str, ...] = ("photo",)


@dataclass(frozen=True)
class SynthesisConfig:
    """Which occluders to synthesise and how often.

    ``weights`` align with ``kinds`` (None: :data:`DEFAULT_WEIGHTS`). ``second_prob`` is the chance of a
    second, different occluder on top (sunglasses over a face-mask, a hand over a scarf).
    """

    kinds: tuple[str, ...] = KINDS
    weights: tuple[float, ...] | None = None
    facemask_styles: tuple[str, ...] = FACEMASK_STYLES
    photo_textures: tuple[str, ...] = PHOTO_TEXTURES
    colour_families: tuple[str, ...] = COLOUR_FAMILIES
    second_prob: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kinds", tuple(self.kinds))
        for name, chosen, allowed in (
            ("kinds", self.kinds, KINDS),
            ("facemask_styles", self.facemask_styles, FACEMASK_STYLES),
            ("photo_textures", self.photo_textures, PHOTO_TEXTURES),
            ("colour_families", self.colour_families, COLOUR_FAMILIES),
        ):
            object.__setattr__(self, name, tuple(chosen))
            bad = [x for x in chosen if x not in allowed]
            if bad or not chosen:
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {tuple(chosen)}")
        if self.weights is not None:
            w = tuple(float(x) for x in self.weights)
            if len(w) != len(self.kinds) or any(x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(
                    f"weights must be {len(self.kinds)} non-negative numbers with a positive sum, got {w}"
                )
            object.__setattr__(self, "weights", w)
        if not 0.0 <= self.second_prob <= 1.0:
            raise ValueError(f"second_prob must be in [0, 1], got {self.second_prob}")

    def probabilities(self) -> np.ndarray:
        w = np.array(
            self.weights if self.weights is not None else [DEFAULT_WEIGHTS[k] for k in self.kinds], float
        )
        return w / w.sum()

    def apply(
        self, face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
    ) -> Occlusion:
        """:func:`synthesize` with these settings."""
        return synthesize(
            face_rgb_u8,
            rng,
            self.kinds,
            self.weights,
            facemask_styles=self.facemask_styles,
            photo_textures=self.photo_textures,
            colour_families=self.colour_families,
            second_prob=self.second_prob,
            geometry=geometry,
        )


def _render(
    kind: str, face: np.ndarray, rng: np.random.Generator, geom: FaceGeometry, cfg: SynthesisConfig
) -> Occlusion:
    if kind == "facemask":
        return render_facemask(
            face,
            rng,
            styles=cfg.facemask_styles,
            geometry=geom,
            photo_textures=cfg.photo_textures,
            colour_families=cfg.colour_families,
        )
    if kind == "scarf":
        return render_scarf(face, rng, geom)
    if kind == "sunglasses":
        return render_sunglasses(face, rng, geom)
    if kind == "hand":
        return render_hand(face, rng, geom)
    return render_freeform(face, rng, geom)


def synthesize(
    face_rgb_u8: np.ndarray,
    rng: np.random.Generator,
    kinds: Sequence[str] = KINDS,
    weights: Sequence[float] | None = None,
    *,
    facemask_styles: Sequence[str] = FACEMASK_STYLES,
    photo_textures: Sequence[str] = PHOTO_TEXTURES,
    colour_families: Sequence[str] = COLOUR_FAMILIES,
    second_prob: float = 0.0,
    geometry: FaceGeometry | None = None,
) -> Occlusion:
    """Occludes an (S, S, 3) uint8 RGB canonical crop with one occluder drawn from ``kinds``.

    ``weights`` (aligned with ``kinds``) default to :data:`DEFAULT_WEIGHTS`. ``geometry`` gives the face's
    landmarks in crop pixels (default: the template). The result's ``kind`` names the occluder, e.g.
    "facemask/kn95" or "hand/cheek" ("+"-joined when a second occluder was added).
    """
    cfg = SynthesisConfig(
        kinds=tuple(kinds),
        weights=None if weights is None else tuple(weights),
        facemask_styles=tuple(facemask_styles),
        photo_textures=tuple(photo_textures),
        colour_families=tuple(colour_families),
        second_prob=second_prob,
    )
    s = face_rgb_u8.shape[0]
    if face_rgb_u8.shape != (s, s, 3) or face_rgb_u8.dtype != np.uint8:
        raise ValueError(f"face must be (S, S, 3) uint8 RGB, got {face_rgb_u8.shape} {face_rgb_u8.dtype}")
    geom = geometry or canonical_geometry(s)
    p = cfg.probabilities()
    first = str(rng.choice(cfg.kinds, p=p))
    occ = _render(first, face_rgb_u8, rng, geom, cfg)
    others = [k for k in cfg.kinds if k != first]
    if others and rng.random() < cfg.second_prob:
        q = np.array([p[cfg.kinds.index(k)] for k in others])
        second = str(rng.choice(others, p=q / q.sum() if q.sum() > 0 else None))
        top = _render(second, occ.image_rgb_u8, rng, geom, cfg)
        mask = 1.0 - (1.0 - occ.mask_f32) * (1.0 - top.mask_f32)
        occ = Occlusion(top.image_rgb_u8, mask.astype(np.float32), f"{occ.kind}+{top.kind}")
    return occ
