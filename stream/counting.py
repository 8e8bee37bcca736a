"""Run-wide counts of what the restore stage did, in constant memory.

The restore stage keeps one :class:`~stream.restore.config.FrameReport` per frame when asked (the
latency benchmark reads them); a command-line run of days must not, so it counts instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from stream.pipeline import FunctionStage, Stage
from stream.restore.build import RestoreStage
from stream.restore.config import FrameReport
from stream.types import Frame


class RestoreCounter:
    """Wraps a :class:`RestoreStage`: sums faces restored and frames seen, keeps the reports only if
    ``keep_reports``, and the newest report in :attr:`last_report` (what the preview shows of the
    frame). Called from the restore thread only (no lock)."""

    def __init__(self, restore: RestoreStage, keep_reports: bool) -> None:
        restore.keep_reports = True  # the last report is read after each frame, then dropped if not kept
        self._restore = restore
        self.keep_reports = keep_reports
        self.frames = 0
        self.masked_faces = 0
        self.frames_restored = 0
        self.last_report: FrameReport | None = None

    @property
    def name(self) -> str:
        return self._restore.name

    def __call__(self, frame: Frame) -> Frame:
        out = self._restore(frame)
        reports = self._restore.reports
        report = reports[-1] if self.keep_reports else reports.pop()
        self.last_report = report
        self.frames += 1
        self.masked_faces += report.masked_faces
        self.frames_restored += report.masked_faces > 0
        return out

    def wrap(self, stages: Sequence[Stage]) -> list[Stage]:
        """``stages`` with the restore stage replaced by this counter (the others unchanged)."""
        out: list[Stage] = [FunctionStage(self.name, self) if s.name == self.name else s for s in stages]
        if sum(s.name == self.name for s in stages) != 1:
            raise ValueError(f"expected one stage named {self.name!r}, got {[s.name for s in stages]}")
        return out
