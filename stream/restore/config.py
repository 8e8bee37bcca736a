"""What the per-frame flow is configured with, what it reports, and the checks of its parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from engines.base import Engine
from stream.faces.cuts import SceneCutConfig
from stream.faces.front_end import FaceDetector, FaceFrontEnd
from stream.faces.tracker import TrackerConfig
from stream.restore.gate import GateConfig
from stream.restore.smoother import SmootherConfig

# The keys every report's ``timings_ms`` has; an op set may add its own (the torch ops: upload, download).
TIMING_KEYS = ("detect", "align", "mesh", "mask", "prior", "restore", "composite")
# Where the occlusion mask comes from: "segmenter" (paper 003's Eq. 1: the whole-face region minus the
# visible face, any occluder), "detector" (FMODR's face-mask region network), "union" (a pixel is
# occluded when either says so), "gated-union" (the segmenter alone decides whether a face is covered;
# the union is the mask of a face it judged covered), or "auto" (gated-union when the models have a
# segmenter, else the detector). Why gated-union: on bare held-out faces the segmenter flags nothing
# where the detector fires on 30-47 % of frames (benchmarks/results/masks.json), but Eq. 1 stops at the
# face outline, and a face-mask reaching below the chin keeps its rim; the detector covers it.
OCCLUSION_SOURCES = ("auto", "segmenter", "detector", "union", "gated-union")
# What fills the hole: "generator" (the network, given the face prior when it takes one), "prior" (the
# fitted face prior alone, blended at the seam), or "auto": a generator trained with the prior, with it;
# else the prior alone when the models have one (measured on held-out faces: 17.5 dB inside the mask
# for the prior vs 15.9 for the plain small generator and 14.4 for Telea; benchmarks/results/
# prior_quality.json), else the plain generator.
RESTORERS = ("auto", "generator", "prior")
# Whether faces are located in their own thread ahead of restoration (stream.restore.build.restore_stages):
# "on", "off", or "auto" (where the op set overlaps).
LOCATE_AHEAD = ("auto", "on", "off")


@dataclass(frozen=True)
class ProcessorConfig:
    """What the processing stage does per frame. Mask pixel sizes live in ``smoother`` (crop pixels).

    ``mask_threshold``: smoothed mask value at or above which a pixel is a hole the generator fills
    (the feathered rim below it is blended, not regenerated). ``min_mask_fraction``: a face whose hole
    covers less of its crop is passed through untouched. ``paste_feather_px``: extra feathering in
    frame pixels at paste time (0: the smoother's feather in crop pixels is enough). ``gate``: the
    per-track decision, with hysteresis over frames, whether something covers the face at all (a face
    judged bare is passed through bit-identical). ``scene_cut``: when consecutive frames stop
    correlating, every track ends (:mod:`stream.faces.cuts`). ``occlusion`` and ``restorer``: see
    :data:`OCCLUSION_SOURCES` and :data:`RESTORERS`.
    """

    max_faces: int = 4
    detect_every: int = 1
    min_face_px: int = 40
    mask_threshold: float = 0.5
    min_mask_fraction: float = 0.002
    paste_feather_px: int = 0
    smoother: SmootherConfig = field(default_factory=SmootherConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    scene_cut: SceneCutConfig = field(default_factory=SceneCutConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    occlusion: str = "auto"
    restorer: str = "auto"

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
        if self.occlusion not in OCCLUSION_SOURCES:
            raise ValueError(f"occlusion must be one of {OCCLUSION_SOURCES}, got {self.occlusion!r}")
        if self.restorer not in RESTORERS:
            raise ValueError(f"restorer must be one of {RESTORERS}, got {self.restorer!r}")

    def front_end(self, face_detector: FaceDetector, crop_size: int) -> FaceFrontEnd:
        """A new front end with this config's face limits and tracker, making ``crop_size`` crops."""
        return FaceFrontEnd(
            face_detector,
            crop_size,
            self.max_faces,
            self.detect_every,
            min_face_px=self.min_face_px,
            tracker_config=self.tracker,
            cut_config=self.scene_cut,
        )


class TrackChoice(Protocol):
    """Which tracked face to restore, read once per frame by the processor (the preview's
    :class:`stream.preview.controls.LiveControls` is one). ``only_track``: a track id, or None for every
    face."""

    @property
    def only_track(self) -> int | None: ...


@dataclass(frozen=True)
class TrackedFace:
    """One face sent to the networks on a frame: its ``track_id``, ``box_xywh`` (x, y, w, h in frame
    pixels, the tracker's box) and whether it was ``restored`` (pasted back) on this frame."""

    track_id: int
    box_xywh: tuple[float, float, float, float]
    restored: bool


@dataclass(frozen=True)
class FrameReport:
    """What happened to one frame. ``faces``: faces sent to the networks; ``skipped_faces``: tracked but
    not processed (over ``max_faces``, too small); ``masked_faces``: faces restored and pasted.
    ``timings_ms`` has every key of :data:`TIMING_KEYS` (0.0 for a step that did not run): ``detect`` =
    face detector + tracker, ``align`` = alignment and crops, ``mesh`` = the face prior's face mesh run
    ahead in :meth:`~stream.restore.processor.FrameProcessor.locate` (faces restored on the last frame),
    ``mask`` = detector network + smoothing, ``prior`` = prior fit + guide (and the mesh of a face
    restored for the first time), ``restore`` = generator network, ``composite`` = frame
    copy + paste back; a processor may add keys of
    its own (the torch ops add ``upload`` and ``download``). ``detected``: whether the face detector ran
    on this frame (see ``detect_every``).

    ``tracked``: one :class:`TrackedFace` per face sent to the networks, in ``track_ids`` order.
    ``only_track``: the picked track this frame was processed with (None: every face may be restored);
    ``unpicked_faces``: faces passed through untouched because another track was picked (among
    ``faces``, never among ``masked_faces``, as faces the gate judged bare); ``only_track_lost``: the
    picked track has ended (ids are never reused, so it will not come back)."""

    faces: int
    skipped_faces: int
    masked_faces: int
    timings_ms: Mapping[str, float]
    track_ids: tuple[int, ...] = ()
    detected: bool = True
    tracked: tuple[TrackedFace, ...] = ()
    only_track: int | None = None
    unpicked_faces: int = 0
    only_track_lost: bool = False

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
        if not 0 <= self.unpicked_faces <= self.faces - self.masked_faces:
            raise ValueError(
                f"need 0 <= unpicked_faces <= faces - masked_faces, got unpicked={self.unpicked_faces} "
                f"faces={self.faces} masked={self.masked_faces}"
            )
        if self.tracked and len(self.tracked) != self.faces:
            raise ValueError(f"tracked must list the {self.faces} faces (or none), got {len(self.tracked)}")
        if self.only_track is None and (self.unpicked_faces or self.only_track_lost):
            raise ValueError("unpicked_faces and only_track_lost need a picked track (only_track)")


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
