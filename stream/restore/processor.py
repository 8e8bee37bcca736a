"""The processing stage: faces -> occlusion masks -> temporal smoothing -> restoration -> paste back.

Both networks run once per frame on the batch of all faces (a batch of N costs far less than N calls).
A face whose smoothed mask is empty is passed through untouched, and when no face needs restoring the
generator is not called and the input frame itself is returned.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from engines.base import Engine
from stream.errors import StreamError
from stream.faces.front_end import FaceDetector, FaceFrontEnd
from stream.faces.tracker import TrackerConfig
from stream.restore.composite import paste_back
from stream.restore.smoother import MaskSmoother, SmootherConfig

TIMING_KEYS = ("detect", "align", "mask", "restore", "composite")


class EngineOutputError(StreamError, ValueError):
    """A network returned something other than the tensor contract of :mod:`engines.base` promises."""


@dataclass(frozen=True)
class ProcessorConfig:
    """What the processing stage does per frame. Mask pixel sizes live in ``smoother`` (crop pixels).

    ``mask_threshold``: smoothed mask value at or above which a pixel is a hole the generator fills
    (the feathered rim below it is blended, not regenerated). ``min_mask_fraction``: a face whose hole
    covers less of its crop is passed through untouched. ``paste_feather_px``: extra feathering in
    frame pixels at paste time (0: the smoother's feather in crop pixels is enough).
    """

    max_faces: int = 4
    detect_every: int = 1
    min_face_px: int = 40
    mask_threshold: float = 0.5
    min_mask_fraction: float = 0.002
    paste_feather_px: int = 0
    smoother: SmootherConfig = field(default_factory=SmootherConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)

    def __post_init__(self) -> None:
        if self.max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {self.max_faces}")
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.min_face_px < 0:
            raise ValueError(f"min_face_px must be >= 0, got {self.min_face_px}")
        if not 0.0 < self.mask_threshold <= 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1], got {self.mask_threshold}")
        if not 0.0 <= self.min_mask_fraction < 1.0:
            raise ValueError(f"min_mask_fraction must be in [0, 1), got {self.min_mask_fraction}")
        if self.paste_feather_px < 0:
            raise ValueError(f"paste_feather_px must be >= 0, got {self.paste_feather_px}")

    def front_end(self, face_detector: FaceDetector, crop_size: int) -> FaceFrontEnd:
        """A new front end with this config's face limits and tracker, making ``crop_size`` crops."""
        return FaceFrontEnd(
            face_detector,
            crop_size,
            self.max_faces,
            self.detect_every,
            min_face_px=self.min_face_px,
            tracker_config=self.tracker,
        )


@dataclass(frozen=True)
class FrameReport:
    """What happened to one frame. ``faces``: faces sent to the networks; ``skipped_faces``: tracked but
    not processed (over ``max_faces``, too small); ``masked_faces``: faces restored and pasted.
    ``timings_ms`` has every key of :data:`TIMING_KEYS` (0.0 for a step that did not run): ``detect`` =
    face detector + tracker, ``align`` = alignment and crops, ``mask`` = detector network + smoothing,
    ``restore`` = generator network, ``composite`` = frame copy + paste back; a processor may add keys of
    its own (the GPU one adds ``upload`` and ``download``). ``detected``: whether the face detector ran
    on this frame (see ``detect_every``)."""

    faces: int
    skipped_faces: int
    masked_faces: int
    timings_ms: Mapping[str, float]
    track_ids: tuple[int, ...] = ()
    detected: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.masked_faces <= self.faces or self.skipped_faces < 0:
            raise ValueError(
                f"need 0 <= masked_faces <= faces and skipped_faces >= 0, got masked={self.masked_faces} "
                f"faces={self.faces} skipped={self.skipped_faces}"
            )
        if not set(TIMING_KEYS) <= set(self.timings_ms):
            raise ValueError(
                f"timings_ms must have (at least) keys {TIMING_KEYS}, got {tuple(self.timings_ms)}"
            )


def check_engine(engine: Engine, role: str, crop_size: int) -> None:
    """Raise ValueError unless ``engine`` carries ``role`` ("detector" or "generator") and ``crop_size``."""
    info = engine.info
    if info.role != role:
        raise ValueError(f"the {role} engine must carry role {role!r}, got {info.role!r}")
    if info.crop_size != crop_size:
        raise ValueError(
            f"the {role} engine's crop_size must equal the front end's {crop_size}, got {info.crop_size}"
        )


def check_processor_parts(
    front_end: FaceFrontEnd, detector_engine: Engine, generator_engine: Engine, config: ProcessorConfig
) -> None:
    """Raise ValueError unless ``front_end`` has ``config``'s face limits and both engines carry their
    role and the front end's crop size (what every frame processor checks on construction)."""
    got = (front_end.max_faces, front_end.detect_every, front_end.min_face_px)
    want = (config.max_faces, config.detect_every, config.min_face_px)
    if got != want:
        raise ValueError(
            f"front end (max_faces, detect_every, min_face_px) must match the config {want}, got {got}"
        )
    check_engine(detector_engine, "detector", front_end.crop_size)
    check_engine(generator_engine, "generator", front_end.crop_size)


def _output(outputs: Mapping[str, object], name: str, expected: tuple[int, ...], role: str) -> np.ndarray:
    if name not in outputs:
        raise EngineOutputError(f"the {role} engine must return {name!r}, got keys {sorted(outputs)}")
    array = np.asarray(outputs[name], dtype=np.float32)
    if array.shape != expected:
        raise EngineOutputError(f"the {role} engine's {name!r} must be {expected} float32, got {array.shape}")
    return array


class FrameProcessor:
    """Runs one frame through front end, detector engine, smoother, generator engine and compositing.

    Stateful (tracks, mask history), not thread-safe: one instance per video, called from one thread.
    Engines are fed host numpy float32 NCHW RGB [0, 1] batches.
    """

    def __init__(
        self,
        front_end: FaceFrontEnd,
        detector_engine: Engine,
        generator_engine: Engine,
        config: ProcessorConfig | None = None,
    ) -> None:
        self.config = cfg = config or ProcessorConfig()
        check_processor_parts(front_end, detector_engine, generator_engine, cfg)
        self.front_end = front_end
        self.detector_engine = detector_engine
        self.generator_engine = generator_engine
        self.smoother = MaskSmoother(cfg.smoother)
        s = front_end.crop_size
        self._min_mask_px = max(1, round(cfg.min_mask_fraction * s * s))

    @classmethod
    def build(
        cls,
        face_detector: FaceDetector,
        detector_engine: Engine,
        generator_engine: Engine,
        config: ProcessorConfig | None = None,
    ) -> FrameProcessor:
        """A processor whose front end is made from ``config``, at the engines' crop size."""
        cfg = config or ProcessorConfig()
        front_end = cfg.front_end(face_detector, detector_engine.info.crop_size)
        return cls(front_end, detector_engine, generator_engine, cfg)

    def reset(self) -> None:
        """Start a new video: forget tracks and mask history."""
        self.front_end.reset()
        self.smoother.reset()

    def process(self, frame_bgr_u8: np.ndarray) -> tuple[np.ndarray, FrameReport]:
        """Returns ``(out_bgr_u8, report)``. ``out_bgr_u8`` IS ``frame_bgr_u8`` (same object, unmodified)
        when no face was restored, else a new (H, W, 3) uint8 BGR frame; the input is never modified."""
        cfg = self.config
        timings = dict.fromkeys(TIMING_KEYS, 0.0)
        batch = self.front_end.process(frame_bgr_u8)
        timings["detect"], timings["align"] = batch.detect_ms, batch.align_ms
        self.smoother.retain(batch.alive_ids)
        n = len(batch)
        masked: list[int] = []
        out = frame_bgr_u8
        if n:
            s = self.front_end.crop_size
            t0 = time.perf_counter()
            probs = _output(
                self.detector_engine.run({"image": batch.crops_rgb01}), "mask", (n, 1, s, s), "detector"
            )
            masks = [self.smoother.update(tid, probs[i, 0]) for i, tid in enumerate(batch.track_ids)]
            for i, inside in enumerate(batch.inside_masks):
                if inside is not None:  # never paste what was restored from the crop's black border fill
                    masks[i] = masks[i] * inside
            holes = [m >= cfg.mask_threshold for m in masks]
            masked = [i for i in range(n) if np.count_nonzero(holes[i]) >= self._min_mask_px]
            t1 = time.perf_counter()
            timings["mask"] = (t1 - t0) * 1e3
            if masked:
                hole_batch = np.stack([holes[i] for i in masked])[:, None].astype(np.float32)
                images = batch.crops_rgb01 if len(masked) == n else batch.crops_rgb01[masked]
                feeds = {"image": images, "mask": hole_batch}
                restored = _output(
                    self.generator_engine.run(feeds), "restored", (len(masked), 3, s, s), "generator"
                )
                t2 = time.perf_counter()
                out = frame_bgr_u8.copy()
                for j, i in enumerate(masked):
                    paste_back(
                        frame_bgr_u8,
                        restored[j],
                        masks[i],
                        batch.alignments[i],
                        cfg.paste_feather_px,
                        out=out,
                    )
                t3 = time.perf_counter()
                timings["restore"], timings["composite"] = (t2 - t1) * 1e3, (t3 - t2) * 1e3
        report = FrameReport(
            faces=n,
            skipped_faces=batch.skipped,
            masked_faces=len(masked),
            timings_ms=MappingProxyType(timings),
            track_ids=batch.track_ids,
            detected=batch.detected,
        )
        return out, report
