"""Assembles the restore part of a run: the op set for the device, the processor, its pipeline stages."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np

from engines.base import Engine
from engines.runtime import parse_device
from stream.faces.front_end import FaceDetector
from stream.pipeline import FunctionStage, Stage
from stream.restore.config import LOCATE_AHEAD, FrameReport, ProcessorConfig, TrackChoice
from stream.restore.numpy_ops import NumpyOps
from stream.restore.ops import FrameOps
from stream.restore.overlap import LocateAhead
from stream.restore.prior_step import PriorStep
from stream.restore.processor import FrameProcessor
from stream.restore.smoother import SmootherConfig
from stream.types import Frame

logger = logging.getLogger(__name__)


def smoother_for_crop(crop_size: int) -> SmootherConfig:
    """Mask grow and feather in crop pixels, scaled from the defaults (sized for 256 px crops).

    Why: on a 128 px crop the 256 px defaults (3 px grow + 6 px feather) reach ~7 % of the face beyond the
    detected mask, which carried the blend up to the eyes of the demo face.
    """
    base = SmootherConfig()
    scale = crop_size / 256
    return dataclasses.replace(
        base,
        dilate_px=max(1, round(base.dilate_px * scale)),
        feather_px=max(1, round(base.feather_px * scale)),
    )


def ops_for_device(config: ProcessorConfig, device: str) -> FrameOps:
    """:class:`NumpyOps` for "cpu" (OpenCV on host arrays: faster than torch ops on a CPU),
    :class:`~stream.restore.torch_frame_ops.TorchOps` for "cuda" / "cuda:N". The choice is logged."""
    kind, _ = parse_device(device)
    if kind == "cpu":
        logger.info("processor: numpy ops on cpu (OpenCV crops and compositing, host arrays)")
        return NumpyOps(config)
    from stream.restore.torch_frame_ops import TorchOps  # torch is needed only here

    ops = TorchOps(config, device)
    logger.info(
        "processor: torch ops on %s (one upload per frame, crops, masks and compositing on the GPU, "
        "ROI download)",
        ops.device,
    )
    return ops


def build_processor(
    face_detector: FaceDetector,
    det_engine: Engine,
    gen_engine: Engine,
    config: ProcessorConfig | None,
    device: str,
    *,
    segmenter_engine: Engine | None = None,
    prior: PriorStep | None = None,
    choice: TrackChoice | None = None,
) -> FrameProcessor:
    """The frame processor for ``device`` ("cpu", "cuda", "cuda:N") on the op set :func:`ops_for_device`
    picks; the occlusion source and the restorer it resolved are logged. ``choice``: which track to
    restore, read each frame (the preview's controls; None: every face)."""
    cfg = config or ProcessorConfig()
    processor = FrameProcessor.build(
        face_detector,
        det_engine,
        gen_engine,
        ops_for_device(cfg, device),
        cfg,
        segmenter_engine=segmenter_engine,
        prior=prior,
        choice=choice,
    )
    restorer = processor.restorer + (" with the face prior" if processor.generator_takes_prior else "")
    first = processor.gate.config.first_frame_factor
    logger.info(
        "processor: occlusion from the %s, restored by the %s; a face is restored after %d occluded "
        "frames%s and released after %d bare ones",
        processor.occlusion,
        restorer,
        cfg.gate.frames_on,
        f" (a new face at once when >= {first * cfg.gate.on_fraction:.0%} of its crop is surely covered)"
        if first
        else "",
        cfg.gate.frames_off,
    )
    return processor


class RestoreStage:
    """The pipeline stage that restores faces in a frame; keeps the per-frame reports."""

    name = "restore"

    def __init__(
        self, processor: Callable[[np.ndarray], tuple[np.ndarray, FrameReport]], keep_reports: bool
    ) -> None:
        self._process = processor
        self.keep_reports = keep_reports
        self.reports: list[FrameReport] = []

    def __call__(self, frame: Frame) -> Frame:
        out, report = self._process(frame.bgr_u8)
        if self.keep_reports:
            self.reports.append(report)
        for key, ms in report.timings_ms.items():
            frame.timings[f"restore.{key}"] = ms
        return dataclasses.replace(frame, bgr_u8=out) if out is not frame.bgr_u8 else frame


def restore_stages(
    processor: FrameProcessor,
    frame_hw: tuple[int, int],
    *,
    keep_reports: bool,
    queue_size: int,
    locate_ahead: str = "auto",
) -> tuple[RestoreStage, list[Stage]]:
    """The pipeline stages that run ``processor``: two threads (stage "faces": detection + upload of frame
    N+1 while stage "restore" restores frame N, after a warm-up at ``frame_hw``) when ``locate_ahead`` is
    "on", or "auto" and the op set ``overlaps``; else one. Returns the restore stage (it keeps the
    reports) and the stage list."""
    if locate_ahead not in LOCATE_AHEAD:
        raise ValueError(f"locate_ahead must be one of {LOCATE_AHEAD}, got {locate_ahead!r}")
    if locate_ahead == "on" or (locate_ahead == "auto" and processor.ops.overlaps):
        processor.warmup(frame_hw)
        ahead = LocateAhead(processor, max_pending=queue_size + 4)
        restore = RestoreStage(ahead.process, keep_reports=keep_reports)
        logger.info(
            "stages: faces -> restore in two threads (frame N+1 is located while frame N is restored)"
        )
        return restore, [FunctionStage("faces", ahead.locate_stage), FunctionStage(restore.name, restore)]
    restore = RestoreStage(processor.process, keep_reports=keep_reports)
    logger.info("stages: one restore thread (faces located and restored in turn)")
    return restore, [FunctionStage(restore.name, restore)]
