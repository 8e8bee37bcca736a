"""The end of the restore thread for what users watch live: the controls, the preview's tap, ``--compare``.

:class:`ViewStage` wraps the pipeline's last (restore) stage and keeps its name, so the stage layout and
its timings stay as they were. It sees each frame's input as captured (the processor never modifies its
input) and the restored output, so it can pause restoration, hand both to the preview and compose them
for ``--compare``, without a second copy of the frame travelling through the queues.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from stream.media.compare import check_mode, compare_info, compose_frame
from stream.pipeline import Stage
from stream.preview.controls import LiveControls
from stream.preview.hub import PreviewHub
from stream.preview.server import PreviewServer, parse_bind
from stream.restore.config import FrameReport
from stream.stats import ProgressUpdate
from stream.types import Frame, VideoInfo

log = logging.getLogger(__name__)

RESTORE: Final = "restore"  # the name of the stage that restores (stream.restore.build.RestoreStage)


class RestoreCounts(Protocol):
    """A run-wide count of faces restored that the inner stage increases (``stream.counting``'s
    ``RestoreCounter``), and the report of the frame it restored last; read before and after each
    frame, in this same thread."""

    @property
    def masked_faces(self) -> int: ...

    @property
    def last_report(self) -> FrameReport | None: ...


class ViewStage:
    """``inner`` (the restore stage) followed by the live controls, the preview and the comparison.

    ``counts``: what ``inner`` counts; its increase over a frame is that frame's restored faces, shown
    by the preview (None: not shown), and its last report has the faces the preview lists.
    ``controls.paused``: the output is the input as captured. ``hub``: receives input and output of
    every frame. ``compare``: a :data:`stream.media.compare.COMPARE_MODES` mode, or None; the sink then
    needs :func:`stream.media.compare.compare_info`'s size.
    """

    def __init__(
        self,
        inner: Stage,
        *,
        counts: RestoreCounts | None = None,
        controls: LiveControls | None = None,
        hub: PreviewHub | None = None,
        compare: str | None = None,
    ) -> None:
        self._inner = inner
        self._counts = counts
        self.controls = controls if controls is not None else (hub.controls if hub is not None else None)
        self._hub = hub
        self._compare = None if compare is None else check_mode(compare)
        self._was_paused = False

    @property
    def name(self) -> str:
        return self._inner.name

    def __call__(self, frame: Frame) -> Frame:
        input_bgr_u8 = frame.bgr_u8
        before = None if self._counts is None else self._counts.masked_faces
        out = self._inner(frame)
        faces = None if self._counts is None or before is None else self._counts.masked_faces - before
        paused = self.controls is not None and self.controls.paused
        if paused != self._was_paused:
            log.info("restoration %s at frame %d", "paused" if paused else "resumed", frame.index)
            self._was_paused = paused
        if paused and out.bgr_u8 is not input_bgr_u8:
            out = dataclasses.replace(out, bgr_u8=input_bgr_u8)
        if self._hub is not None:
            report = None if self._counts is None else self._counts.last_report
            if report is None:
                self._hub.publish(input_bgr_u8, out.bgr_u8, faces)
            else:
                lost = report.only_track if report.only_track_lost else None
                self._hub.publish(input_bgr_u8, out.bgr_u8, faces, tracks=report.tracked, lost_track=lost)
        if self._compare is not None:
            out = compose_frame(out, input_bgr_u8, self._compare)
        return out


@dataclass(frozen=True)
class ViewConfig:
    """``compare``: a :data:`stream.media.compare.COMPARE_MODES` mode or None. ``preview``: ``[HOST:]PORT``
    to serve the preview on (host 127.0.0.1 unless given), or None."""

    compare: str | None = None
    preview: str | None = None

    def __post_init__(self) -> None:
        if self.compare is not None:
            check_mode(self.compare)
        if self.preview is not None:
            parse_bind(self.preview)

    @property
    def active(self) -> bool:
        return self.compare is not None or self.preview is not None


class OpenViews:
    """What :func:`open_views` set up: the stages to run, the size the sink gets, the progress callback
    to pass the pipeline, and the preview server (closed by :meth:`close`)."""

    def __init__(
        self,
        stages: list[Stage],
        sink_info: VideoInfo,
        server: PreviewServer | None,
        on_progress: Callable[[ProgressUpdate], None] | None,
    ) -> None:
        self.stages, self.sink_info, self.server = stages, sink_info, server
        self._on_progress = on_progress

    def on_progress(
        self, inner: Callable[[ProgressUpdate], None] | None
    ) -> Callable[[ProgressUpdate], None] | None:
        """``inner`` (the progress bar, or None) and the preview's live numbers, both fed."""
        mine = self._on_progress
        if mine is None or inner is None:
            return mine or inner

        def both(update: ProgressUpdate) -> None:
            mine(update)
            inner(update)

        return both

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def open_views(
    config: ViewConfig,
    stages: Sequence[Stage],
    info: VideoInfo,
    *,
    counts: RestoreCounts | None = None,
    controls: LiveControls | None = None,
) -> OpenViews:
    """``stages`` with the stage named "restore" wrapped in a :class:`ViewStage` for ``config`` (unchanged
    when nothing is asked), and the preview server listening (a port in use raises SinkError here).
    ``controls``: the ones the processor reads its face pick from (``stream.app.OpenRun.controls``);
    without them the preview makes its own, and its face pick reaches no processor."""
    if not config.active:
        return OpenViews(list(stages), info, None, None)
    names = [s.name for s in stages]
    if names.count(RESTORE) != 1:
        raise ValueError(f"expected one stage named {RESTORE!r} to show, got {names}")
    server = None
    hub = None
    if config.preview is not None:
        hub = PreviewHub(controls)
        server = PreviewServer(hub, *parse_bind(config.preview))
    wrapped: list[Stage] = [
        ViewStage(s, counts=counts, hub=hub, compare=config.compare) if s.name == RESTORE else s
        for s in stages
    ]
    sink_info = info if config.compare is None else compare_info(info, config.compare)
    if config.compare is not None:
        log.info("compare: %s, the output is %dx%d", config.compare, sink_info.width, sink_info.height)
    return OpenViews(wrapped, sink_info, server, None if hub is None else hub.on_progress)
