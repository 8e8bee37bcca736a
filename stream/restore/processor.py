"""The per-frame flow, once for every device: faces -> crops -> occlusion masks -> temporal smoothing ->
which faces to restore -> face prior -> generator -> paste back -> report.

:class:`FrameProcessor` is the only place this flow is written. The array work of each step runs on a
:class:`stream.restore.ops.FrameOps`: :class:`~stream.restore.numpy_ops.NumpyOps` (OpenCV on host
arrays, the CPU path) or :class:`~stream.restore.torch_frame_ops.TorchOps` (torch; on CUDA one upload per
frame and an ROI download). To add a step to the per-frame flow (a face-prior fit, a segmentation
network, a per-face "occluded or not" decision), add it to :meth:`FrameProcessor._restore_faces`; only
an array operation neither op set has yet needs one method in :mod:`stream.restore.ops` and its two
implementations.

The networks run once per frame on the batch of all faces (a batch of N costs far less than N calls).
Whether a face is restored at all is decided per track with hysteresis (:mod:`stream.restore.gate`): a
face judged bare is passed through untouched, and when no face needs restoring the generator is not
called and the input frame itself is returned, bit-identical.

A :class:`~stream.restore.config.TrackChoice` (the preview's "pick the face") narrows that to one track,
read once per frame. Masks, smoothing and the gate still run for every face, so that going back to all
faces restores at once from current mask history (as pausing does); only the face prior and the generator
are limited to the picked face, and every other face is passed through bit-identical. When the picked
track ends, no face is restored until the user picks again (another face or all faces): the same person
re-detected gets a new id, and restoring faces nobody picked is what the pick was there to prevent.

Two halves: :meth:`FrameProcessor.locate` (face detection, tracking, alignment, the op set's staging
(the upload on CUDA) and the face prior's mesh of the faces being restored, which needs no mask) and
:meth:`FrameProcessor.restore` (everything else). :meth:`process` runs both in
the calling thread; :class:`stream.restore.overlap.LocateAhead` runs them as two pipeline stages.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from types import MappingProxyType
from typing import Any

import numpy as np

from engines.base import Engine
from engines.runtime import parse_device
from stream.faces.front_end import FaceDetector, FaceFrontEnd
from stream.restore.clock import StageClock
from stream.restore.config import (
    TIMING_KEYS,
    FrameReport,
    ProcessorConfig,
    TrackChoice,
    TrackedFace,
    check_engine,
    check_processor_parts,
)
from stream.restore.gate import OcclusionGate
from stream.restore.ops import STAT_HOLE_PX, FrameOps, StagedFrame
from stream.restore.prior_step import PriorStep

logger = logging.getLogger(__name__)


class FrameProcessor:
    """Runs one frame through front end, detector engine, smoother, generator engine and compositing,
    on the op set ``ops``.

    Stateful (tracks, mask history), not thread-safe: one instance per video; :meth:`locate` and
    :meth:`restore` may run in two threads (one each, frames in order), see
    :class:`stream.restore.overlap.LocateAhead`. ``choice``: which track to restore, read by
    :meth:`restore` once per frame (None: every face).
    """

    def __init__(
        self,
        front_end: FaceFrontEnd,
        detector_engine: Engine,
        generator_engine: Engine,
        ops: FrameOps,
        config: ProcessorConfig | None = None,
        *,
        segmenter_engine: Engine | None = None,
        prior: PriorStep | None = None,
        choice: TrackChoice | None = None,
    ) -> None:
        self.config = cfg = config or ProcessorConfig()
        check_processor_parts(front_end, detector_engine, generator_engine, cfg)
        if not set(TIMING_KEYS) <= set(ops.timing_keys):
            raise ValueError(f"the op set's timing keys must include {TIMING_KEYS}, got {ops.timing_keys}")
        engines = [(detector_engine, "detector"), (generator_engine, "generator")]
        if segmenter_engine is not None:
            check_engine(segmenter_engine, "segmenter", front_end.crop_size)
            engines.append((segmenter_engine, "segmenter"))
        for engine, role in engines:
            if parse_device(engine.device) != parse_device(ops.device):
                raise ValueError(f"the {role} engine must run on {ops.device}, got {engine.device!r}")
        self.occlusion = resolve_occlusion(cfg.occlusion, segmenter_engine is not None)
        self.generator_takes_prior = "prior" in {spec.name for spec in generator_engine.inputs}
        self.restorer = resolve_restorer(cfg.restorer, self.generator_takes_prior, prior is not None)
        if prior is None and (self.generator_takes_prior or self.restorer == "prior"):
            raise ValueError(
                "this generator takes the face prior (input 'prior') but no prior model was given"
                if self.generator_takes_prior
                else "restorer 'prior' needs a face prior model (prior.npz)"
            )
        self.front_end = front_end
        self.detector_engine = detector_engine
        self.generator_engine = generator_engine
        self.segmenter_engine = segmenter_engine
        self.prior = prior
        self.ops = ops
        self.choice = choice
        gate = cfg.gate
        if self.occlusion not in ("segmenter", "gated-union"):
            # The first-frame shortcut trusts confident Eq. 1 evidence; the detector fires on 30-47 % of
            # bare held-out frames (benchmarks/results/masks.json), so its faces always wait frames_on.
            gate = dataclasses.replace(gate, first_frame_factor=0.0)
        self.gate = OcclusionGate(gate)
        self.uses_prior = prior is not None and (self.generator_takes_prior or self.restorer == "prior")
        # The tracks restored on the last restored frame: whose face mesh locate() runs ahead. Written by
        # the restore thread, read by the locate thread (one reference swap; a frame-old hint is fine).
        self._restoring: frozenset[int] = frozenset()
        self._lost_logged: int | None = None  # the picked track whose loss was logged (one line each)
        s = front_end.crop_size
        self._min_mask_px = max(1, round(cfg.min_mask_fraction * s * s))

    @classmethod
    def build(
        cls,
        face_detector: FaceDetector,
        detector_engine: Engine,
        generator_engine: Engine,
        ops: FrameOps,
        config: ProcessorConfig | None = None,
        *,
        segmenter_engine: Engine | None = None,
        prior: PriorStep | None = None,
        choice: TrackChoice | None = None,
    ) -> FrameProcessor:
        """A processor whose front end is made from ``config``, at the engines' crop size."""
        cfg = config or ProcessorConfig()
        front_end = cfg.front_end(face_detector, detector_engine.info.crop_size)
        return cls(
            front_end,
            detector_engine,
            generator_engine,
            ops,
            cfg,
            segmenter_engine=segmenter_engine,
            prior=prior,
            choice=choice,
        )

    @property
    def device(self) -> str:
        return self.ops.device

    def reset(self) -> None:
        """Start a new video: forget tracks, mask history, occlusion decisions and priors."""
        self.front_end.reset()
        self.ops.reset()
        self.gate.reset()
        self._restoring = frozenset()
        self._lost_logged = None
        if self.prior is not None:
            self.prior.reset()

    def warmup(self, frame_hw: tuple[int, int] | None = None) -> None:
        """Run both engines once at every batch size 1..max_faces inside the op set's session (on CUDA
        its compute stream: engines that replay CUDA graphs capture them now) and reserve the op set's
        buffers for ``frame_hw`` frames. Call it before two threads run :meth:`locate` and
        :meth:`restore`: a graph captured lazily in one thread while the other calls the CUDA runtime
        can fail the capture."""
        with self.ops.session(None):
            for batch in range(1, self.config.max_faces + 1):
                self.detector_engine.warmup(batch)
                self.generator_engine.warmup(batch)
                if self.segmenter_engine is not None:
                    self.segmenter_engine.warmup(batch)
        self.ops.reserve(frame_hw)

    def process(self, frame_bgr_u8: np.ndarray) -> tuple[np.ndarray, FrameReport]:
        """Returns ``(out_bgr_u8, report)`` for an (H, W, 3) uint8 BGR frame. ``out_bgr_u8`` IS
        ``frame_bgr_u8`` (same object, unmodified) when no face was restored, else a new frame; the input
        is never modified."""
        return self.restore(self.locate(frame_bgr_u8))

    def locate(self, frame_bgr_u8: np.ndarray) -> StagedFrame:
        """Detect, track and align the faces of ``frame_bgr_u8`` (H, W, 3) uint8 BGR on the host and
        stage them on the op set (on CUDA the upload starts; this returns before it is done); with a face
        prior, also the face mesh of the faces being restored (see :mod:`stream.restore.prior_step`)."""
        faces = self.front_end.locate(frame_bgr_u8)
        staged = self.ops.stage(frame_bgr_u8, faces)
        if not self.uses_prior:
            return staged
        assert self.prior is not None
        t0 = time.perf_counter()
        landmarks = self.prior.landmarks_ahead(frame_bgr_u8, faces, self._restoring)
        mesh_ms = (time.perf_counter() - t0) * 1e3
        return dataclasses.replace(staged, landmarks=landmarks, mesh_ms=mesh_ms)

    def restore(self, staged: StagedFrame) -> tuple[np.ndarray, FrameReport]:
        """Masks, restoration and compositing of a staged frame; returns ``(out_bgr_u8, report)`` as
        :meth:`process` does. Blocks until the frame is done on the device."""
        ops = self.ops
        timings = dict.fromkeys(ops.timing_keys, 0.0)
        ops.retain(staged.faces.alive_ids)
        self.gate.retain(staged.faces.alive_ids)
        if self.prior is not None:
            self.prior.retain(staged.faces.alive_ids)
        only = None if self.choice is None else self.choice.only_track
        lost = only is not None and only not in staged.faces.alive_ids
        if lost and self._lost_logged != only:
            logger.info(
                "the picked face #%s is lost (its track ended): no face is restored until another face "
                "or all faces are picked",
                only,
            )
            self._lost_logged = only
        out = staged.frame_bgr_u8
        masked: list[int] = []  # indices of the faces restored
        if len(staged):
            with ops.session(staged) as clock:
                out, masked = self._restore_faces(staged, clock, only)
            timings.update(clock.read())
            timings.update(ops.stage_timings(staged))
        self._restoring = frozenset(staged.track_ids[i] for i in masked)
        timings["detect"] = staged.faces.detect_ms
        timings["align"] += staged.faces.align_ms
        timings["mesh"] = staged.mesh_ms
        ids = staged.track_ids
        boxes = [(float(x), float(y), float(w), float(h)) for x, y, w, h in staged.faces.boxes.tolist()]
        report = FrameReport(
            faces=len(staged),
            skipped_faces=staged.faces.skipped,
            masked_faces=len(masked),
            timings_ms=MappingProxyType(timings),
            track_ids=ids,
            detected=staged.faces.detected,
            tracked=tuple(TrackedFace(tid, boxes[i], i in masked) for i, tid in enumerate(ids)),
            only_track=only,
            unpicked_faces=0 if only is None else sum(tid != only for tid in ids),
            only_track_lost=lost,
        )
        return out, report

    def _restore_faces(
        self, staged: StagedFrame, clock: StageClock, only_track: int | None
    ) -> tuple[np.ndarray, list[int]]:
        """The per-frame flow on the faces of one frame; returns (output frame, indices of the faces
        restored). ``only_track``: restore no face of another track (None: any face).

        Every step is written once here and runs on whichever op set the processor holds; arrays stay
        on the op set's device (``*_dev`` in :mod:`stream.restore.ops`) except the face statistics.
        """
        ops, cfg = self.ops, self.config
        n, s = len(staged), self.front_end.crop_size

        # 1. The canonical crops of every face, in one batch.
        clock.start("align")
        crops, inside = ops.warp_crops(staged)
        clock.stop("align")

        # 2. Occlusion masks: the detector network and/or the segmenter's Eq. 1, causal smoothing per
        # track, never the crop's border fill (what is restored from the black fill must not be pasted),
        # holes for the generator.
        clock.start("mask")
        probs, deciding = self._occlusion_probabilities(crops, n, s)
        masks = ops.smooth(staged.track_ids, probs)
        if inside is not None:
            masks = ops.keep_inside(masks, inside, staged.within)
        holes = masks >= cfg.mask_threshold
        stats = ops.face_stats(masks, holes)
        covered = stats[:, STAT_HOLE_PX]
        if deciding is not None:  # gated-union: the segmenter's own Eq. 1 mask decides, unsmoothed
            flat = deciding[:, 0]
            covered = ops.face_stats(flat, flat >= cfg.gate.evidence_probability)[:, STAT_HOLE_PX]
        clock.stop("mask")

        # 3. Which faces to restore: per track, something has covered the face for a few frames running
        # (hysteresis), its hole is not a speck and it is the picked track (if one is picked). Every other
        # face stays bit-identical. The gate is fed for every face first, so its state stays current.
        area = float(s * s)
        masked = [
            i
            for i, tid in enumerate(staged.track_ids)
            if self.gate.update(tid, min(1.0, float(covered[i]) / area))
            and stats[i, STAT_HOLE_PX] >= self._min_mask_px
            and (only_track is None or tid == only_track)
        ]
        if not masked:
            return staged.frame_bgr_u8, []
        images, hole_batch = ops.take(crops, masked), ops.as_hole_batch(ops.take(holes, masked))

        # 4. The face prior of those faces (mesh, fit to the visible part, guide image), on the host.
        guides = None
        if self.uses_prior:
            assert self.prior is not None
            clock.start("prior")
            tids = [staged.track_ids[i] for i in masked]
            guides = self.prior.guides(tids, images, hole_batch, staged.landmarks)
            clock.stop("prior")

        # 5. The generator on those faces only, in one batch (or the prior alone).
        if self.restorer == "prior":
            restored = guides
        else:
            clock.start("restore")
            feeds = {"image": images, "mask": hole_batch}
            if self.generator_takes_prior:
                feeds["prior"] = guides
            outputs = self.generator_engine.run(feeds)
            restored = ops.engine_output(outputs, "restored", (len(masked), 3, s, s), "generator")
            clock.stop("restore")

        # 6. Paste back, blending only inside the masks (the op set times "composite" itself).
        out = ops.paste(staged, masked, restored, ops.take(masks, masked), stats[masked])
        return out, masked

    def _occlusion_probabilities(self, crops: Any, n: int, s: int) -> tuple[Any, Any | None]:
        """``(probs, deciding)``: (N, 1, S, S) float32 occlusion probabilities in [0, 1] of the op set's
        kind from the source :attr:`occlusion` names, and for "gated-union" the segmenter's own ones,
        which decide whether a face is covered at all (else None: ``probs`` decide)."""
        ops = self.ops
        det = None
        if self.occlusion in ("detector", "union", "gated-union"):
            det = ops.engine_output(
                self.detector_engine.run({"image": crops}), "mask", (n, 1, s, s), "detector"
            )
            if self.occlusion == "detector":
                return det, None
        assert self.segmenter_engine is not None  # resolve_occlusion guarantees it
        out = self.segmenter_engine.run({"image": crops})
        face = ops.engine_output(out, "face", (n, 1, s, s), "segmenter")
        region = ops.engine_output(out, "region", (n, 1, s, s), "segmenter")
        # Paper 003, Eq. 1: inside the whole-face region, what is not visible face is occluded.
        occluded = region * (1.0 - face)
        if det is None:
            return occluded, None
        # A pixel is occluded when either says so (probabilistic OR, the same on both op sets).
        union = occluded + det - occluded * det
        return union, occluded if self.occlusion == "gated-union" else None


def resolve_occlusion(requested: str, have_segmenter: bool) -> str:
    """The occlusion source a run uses: "auto" is "gated-union" when the models have a segmenter, else the
    detector; asking for a segmenter source without one is a ValueError."""
    if requested == "auto":
        return "gated-union" if have_segmenter else "detector"
    if requested in ("segmenter", "union", "gated-union") and not have_segmenter:
        raise ValueError(f"occlusion {requested!r} needs segmenter.onnx in the models directory")
    return requested


def resolve_restorer(requested: str, generator_takes_prior: bool, have_prior: bool) -> str:
    """What fills the hole (see :data:`stream.restore.config.RESTORERS`): "auto" is the generator when it
    takes the prior (with it) or when there is no prior, else the prior alone."""
    if requested != "auto":
        return requested
    return "generator" if generator_takes_prior or not have_prior else "prior"
