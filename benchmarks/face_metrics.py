"""Whole-frame and face metrics of restored clips against their clean clip, with identity (SFace).

Face metrics are taken in the 256 px canonical crop of the clean face (:mod:`engines.crop`, matrices
from the clip's truth), the resolution issue 11 asks for. PSNR: dB, data range 1.0, capped at
``PSNR_CAP_DB``; SSIM: :func:`training.metrics.ssim`; identity: cosine of SFace embeddings of the method's
face crop and the clean one (:mod:`training.identity`), or absent when SFace cannot load (logged once);
``lpips``: ST-LPIPS distance of the method's face crop to the clean one (:mod:`benchmarks.lpips`, lower is
better), on every ``lpips_every``-th frame (a subset of the face-metric frames: it costs ~0.15 s per
crop on a 2-core CPU), or absent (null) when the weights cannot load (logged once).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.clip_io import ClipError, GroundTruth, iter_frames
from benchmarks.eval_compose import FACE_CROP
from benchmarks.lpips import LpipsMetric
from benchmarks.temporal import PSNR_CAP_DB
from training import metrics
from training.identity import IdentityEmbedder, cosine

logger = logging.getLogger(__name__)


def face_crop_rgb01(frame_bgr_u8: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(256, 256, 3) float32 rgb01 canonical crop of a (H, W, 3) uint8 BGR frame (frame -> crop ``matrix``)."""
    crop = cv2.warpAffine(frame_bgr_u8, matrix, (FACE_CROP, FACE_CROP), flags=cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop[..., ::-1], dtype=np.float32) / 255.0


def capped_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return min(PSNR_CAP_DB, metrics.psnr(a, b))


def load_identity() -> IdentityEmbedder | None:
    """SFace, or None with one logged line when it cannot load (the identity column is then left out)."""
    try:
        return IdentityEmbedder.create_or_none()
    except Exception as exc:  # a broken model file / runtime must not stop the other metrics
        logger.warning("identity metric left out: SFace did not load (%s)", exc)
        return None


@dataclass
class _Scores:
    psnr_frame: list[float] = field(default_factory=list)
    psnr_face: list[float] = field(default_factory=list)
    ssim_face: list[float] = field(default_factory=list)
    id_cosine: list[float] = field(default_factory=list)
    lpips: list[float] = field(default_factory=list)

    def means(self) -> dict[str, float | None]:
        def mean(v: list[float]) -> float | None:
            f = [x for x in v if math.isfinite(x)]
            return float(np.mean(f)) if f else None

        keys = ("psnr_frame", "psnr_face", "ssim_face", "id_cosine", "lpips")
        return {k: mean(getattr(self, k)) for k in keys}


def evaluate_frames(
    outputs: Mapping[str, Path],
    clean: Path,
    truth: GroundTruth,
    embedder: IdentityEmbedder | None,
    every: int = 1,
    lpips: LpipsMetric | None = None,
    lpips_every: int | None = None,
) -> dict[str, Any]:
    """Means over frames (every ``every``-th for the face metrics) of whole-frame PSNR and face-crop PSNR,
    SSIM and identity cosine per method, and face-crop LPIPS on every ``lpips_every``-th frame (a multiple
    of ``every``; default ``every``). Metrics whose model is None are null."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    lpips_every = every if lpips_every is None else lpips_every
    if lpips_every < 1 or lpips_every % every:
        raise ValueError(f"lpips_every must be a positive multiple of every ({every}), got {lpips_every}")
    scores = {name: _Scores() for name in outputs}
    streams = [iter_frames(p) for p in outputs.values()]
    n = -1
    for n, (clean_frame, *frames) in enumerate(zip(iter_frames(clean), *streams, strict=True)):
        if n >= truth.frames:
            raise ClipError(f"{clean} has more frames than its truth ({truth.frames})")
        clean01 = clean_frame.astype(np.float32) / 255.0
        for name, frame in zip(outputs, frames, strict=True):
            scores[name].psnr_frame.append(capped_psnr(frame.astype(np.float32) / 255.0, clean01))
        if n % every:
            continue
        m = truth.face_matrices[n]
        clean_crop = face_crop_rgb01(clean_frame, m)
        crops = [face_crop_rgb01(f, m) for f in frames]
        for name, crop in zip(outputs, crops, strict=True):
            scores[name].psnr_face.append(capped_psnr(crop, clean_crop))
            scores[name].ssim_face.append(metrics.ssim(crop, clean_crop))
        if embedder is not None:
            emb = embedder.embed([clean_crop, *crops])
            for j, name in enumerate(outputs):
                scores[name].id_cosine.append(cosine(emb[0], emb[j + 1]))
        if lpips is not None and n % lpips_every == 0:
            for name, d in zip(outputs, lpips.distances(clean_crop, crops), strict=True):
                scores[name].lpips.append(d)
    if n + 1 != truth.frames:
        raise ClipError(f"clips have {n + 1} frames, the truth {truth.frames}")
    return {name: s.means() for name, s in scores.items()}
