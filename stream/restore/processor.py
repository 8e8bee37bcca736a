"""The per-frame flow, once for every device: faces -> crops -> occlusion masks -> temporal smoothing ->
which faces to restore -> generator -> paste back -> report.

:class:`FrameProcessor` is the only place this flow is written. The array work of each step runs on a
:class:`stream.restore.ops.FrameOps`: :class:`~stream.restore.numpy_ops.NumpyOps` (OpenCV on host
arrays, the CPU path) or :class:`~stream.restore.torch_frame_ops.TorchOps` (torch; on CUDA one upload per
frame and an ROI download). To add a step to the per-frame flow (a face-prior fit, a segmentation
network, a per-face "occluded or not" decision), add it to :meth:`FrameProcessor._restore_faces`; only
an array operation neither op set has yet needs one method in :mod:`stream.restore.ops` and its two
implementations.

Both networks run once per frame on the batch of all faces (a batch of N costs far less than N calls).
A face whose smoothed hole is too small is passed through untouched, and when no face needs restoring
the generator is not called and the input frame itself is returned.

Two halves: :meth:`FrameProcessor.locate` (face detection, tracking, alignment and the op set's staging:
the upload on CUDA) and :meth:`FrameProcessor.restore` (everything else). :meth:`process` runs both in
the calling thread; :class:`stream.restore.overlap.LocateAhead` runs them as two pipeline stages.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from engines.base import Engine
from engines.runtime import parse_device
from stream.faces.front_end import FaceDetector, FaceFrontEnd
from stream.restore.clock import StageClock
from stream.restore.config import TIMING_KEYS, FrameReport, ProcessorConfig, check_processor_parts
from stream.restore.ops import STAT_HOLE_PX, FrameOps, StagedFrame


class FrameProcessor:
    """Runs one frame through front end, detector engine, smoother, generator engine and compositing,
    on the op set ``ops``.

    Stateful (tracks, mask history), not thread-safe: one instance per video; :meth:`locate` and
    :meth:`restore` may run in two threads (one each, frames in order), see
    :class:`stream.restore.overlap.LocateAhead`.
    """

    def __init__(
        self,
        front_end: FaceFrontEnd,
        detector_engine: Engine,
        generator_engine: Engine,
        ops: FrameOps,
        config: ProcessorConfig | None = None,
    ) -> None:
        self.config = cfg = config or ProcessorConfig()
        check_processor_parts(front_end, detector_engine, generator_engine, cfg)
        if not set(TIMING_KEYS) <= set(ops.timing_keys):
            raise ValueError(f"the op set's timing keys must include {TIMING_KEYS}, got {ops.timing_keys}")
        for engine, role in ((detector_engine, "detector"), (generator_engine, "generator")):
            if parse_device(engine.device) != parse_device(ops.device):
                raise ValueError(f"the {role} engine must run on {ops.device}, got {engine.device!r}")
        self.front_end = front_end
        self.detector_engine = detector_engine
        self.generator_engine = generator_engine
        self.ops = ops
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
    ) -> FrameProcessor:
        """A processor whose front end is made from ``config``, at the engines' crop size."""
        cfg = config or ProcessorConfig()
        front_end = cfg.front_end(face_detector, detector_engine.info.crop_size)
        return cls(front_end, detector_engine, generator_engine, ops, cfg)

    @property
    def device(self) -> str:
        return self.ops.device

    def reset(self) -> None:
        """Start a new video: forget tracks and mask history."""
        self.front_end.reset()
        self.ops.reset()

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
        self.ops.reserve(frame_hw)

    def process(self, frame_bgr_u8: np.ndarray) -> tuple[np.ndarray, FrameReport]:
        """Returns ``(out_bgr_u8, report)`` for an (H, W, 3) uint8 BGR frame. ``out_bgr_u8`` IS
        ``frame_bgr_u8`` (same object, unmodified) when no face was restored, else a new frame; the input
        is never modified."""
        return self.restore(self.locate(frame_bgr_u8))

    def locate(self, frame_bgr_u8: np.ndarray) -> StagedFrame:
        """Detect, track and align the faces of ``frame_bgr_u8`` (H, W, 3) uint8 BGR on the host and
        stage them on the op set (on CUDA the upload starts; this returns before it is done)."""
        return self.ops.stage(frame_bgr_u8, self.front_end.locate(frame_bgr_u8))

    def restore(self, staged: StagedFrame) -> tuple[np.ndarray, FrameReport]:
        """Masks, restoration and compositing of a staged frame; returns ``(out_bgr_u8, report)`` as
        :meth:`process` does. Blocks until the frame is done on the device."""
        ops = self.ops
        timings = dict.fromkeys(ops.timing_keys, 0.0)
        ops.retain(staged.faces.alive_ids)
        out, masked = staged.frame_bgr_u8, 0
        if len(staged):
            with ops.session(staged) as clock:
                out, masked = self._restore_faces(staged, clock)
            timings.update(clock.read())
            timings.update(ops.stage_timings(staged))
        timings["detect"] = staged.faces.detect_ms
        timings["align"] += staged.faces.align_ms
        report = FrameReport(
            faces=len(staged),
            skipped_faces=staged.faces.skipped,
            masked_faces=masked,
            timings_ms=MappingProxyType(timings),
            track_ids=staged.track_ids,
            detected=staged.faces.detected,
        )
        return out, report

    def _restore_faces(self, staged: StagedFrame, clock: StageClock) -> tuple[np.ndarray, int]:
        """The per-frame flow on the faces of one frame; returns (output frame, faces restored).

        Every step is written once here and runs on whichever op set the processor holds; arrays stay
        on the op set's device (``*_dev`` in :mod:`stream.restore.ops`) except the face statistics.
        """
        ops, cfg = self.ops, self.config
        n, s = len(staged), self.front_end.crop_size

        # 1. The canonical crops of every face, in one batch.
        clock.start("align")
        crops, inside = ops.warp_crops(staged)
        clock.stop("align")

        # 2. Occlusion masks: detector network, causal smoothing per track, never the crop's border fill
        # (what is restored from the black fill must not be pasted), holes for the generator.
        clock.start("mask")
        outputs = self.detector_engine.run({"image": crops})
        probs = ops.engine_output(outputs, "mask", (n, 1, s, s), "detector")
        masks = ops.smooth(staged.track_ids, probs)
        if inside is not None:
            masks = ops.keep_inside(masks, inside, staged.within)
        holes = masks >= cfg.mask_threshold
        stats = ops.face_stats(masks, holes)
        clock.stop("mask")

        # 3. Which faces to restore: those whose hole covers enough of the crop.
        masked = [i for i in range(n) if stats[i, STAT_HOLE_PX] >= self._min_mask_px]
        if not masked:
            return staged.frame_bgr_u8, 0

        # 4. The generator on those faces only, in one batch.
        clock.start("restore")
        feeds = {"image": ops.take(crops, masked), "mask": ops.as_hole_batch(ops.take(holes, masked))}
        outputs = self.generator_engine.run(feeds)
        restored = ops.engine_output(outputs, "restored", (len(masked), 3, s, s), "generator")
        clock.stop("restore")

        # 5. Paste back, blending only inside the masks (the op set times "composite" itself).
        out = ops.paste(staged, masked, restored, ops.take(masks, masked), stats[masked])
        return out, len(masked)
