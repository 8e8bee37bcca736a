"""Frame N+1's face detection and staging (upload) overlapping frame N's restoration: a
:class:`~stream.restore.processor.FrameProcessor` as two pipeline stages."""

from __future__ import annotations

import logging
import threading
from collections import deque

import numpy as np

from stream.errors import StreamError
from stream.restore.config import FrameReport
from stream.restore.ops import StagedFrame
from stream.restore.processor import FrameProcessor
from stream.types import Frame

logger = logging.getLogger(__name__)


class LocateAhead:
    """A :class:`stream.restore.processor.FrameProcessor` split into two pipeline stages so that frame N+1's face detection
    and upload (stage "faces", :meth:`locate_stage`) overlap frame N's restoration (:meth:`process`, the
    restore stage's ``process`` callable, e.g. ``app.RestoreStage(ahead.process, ...)``).

    The stages hand located frames over through a small locked queue matched by frame identity (the
    ``bgr_u8`` array a Frame carries from stage to stage): frames dropped between the stages (live
    sources) are discarded when a later frame is restored. ``max_pending`` must exceed the queue size
    between the two stages plus 2; a located frame evicted beyond it cannot be restored (StreamError).
    Call ``processor.warmup(frame_hw)`` before the pipeline starts (see :meth:`stream.restore.processor.FrameProcessor.warmup`).
    """

    def __init__(self, processor: FrameProcessor, max_pending: int = 8) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.processor = processor
        self.max_pending = max_pending
        self._pending: deque[StagedFrame] = deque()
        self._lock = threading.Lock()
        self.evicted = 0
        self.discarded = 0

    def locate_stage(self, frame: Frame) -> Frame:
        """Stage function for ``FunctionStage("faces", ahead.locate_stage)``, before the restore stage."""
        located = self.processor.locate(frame.bgr_u8)
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.evicted += 1
                if self.evicted == 1:
                    logger.warning("located frames pile up beyond max_pending=%d; evicting", self.max_pending)
            self._pending.append(located)
        return frame

    def process(self, frame_bgr_u8: np.ndarray) -> tuple[np.ndarray, FrameReport]:
        """Restore the located frame whose array is ``frame_bgr_u8``; older located frames are dropped."""
        with self._lock:
            index = next((k for k, lf in enumerate(self._pending) if lf.frame_bgr_u8 is frame_bgr_u8), None)
            if index is None:
                raise StreamError(
                    f"frame was not located (or was evicted; max_pending={self.max_pending}): "
                    "run locate_stage on every frame before the restore stage"
                )
            for _ in range(index):
                self._pending.popleft()
            self.discarded += index
            located = self._pending.popleft()
        return self.processor.restore(located)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
        self.processor.reset()
