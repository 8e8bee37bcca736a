"""Typed errors of the stream package; each is also a builtin so callers can catch what they know."""

from __future__ import annotations

from typing import Any


class StreamError(Exception):
    """Base class for errors of the video pipeline."""


class SourceError(StreamError, OSError):
    """An input cannot be opened or read (missing file, not a video, unreachable URL, no camera)."""


class SinkError(StreamError, OSError):
    """An output cannot be opened or written."""


class StageError(StreamError, RuntimeError):
    """A pipeline stage failed; ``__cause__`` holds the original exception.

    ``stats``: the failed run's :class:`stream.stats.PipelineStats` when the pipeline raised it (the CLI
    still writes them), else None.
    """

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"stage {stage!r} failed: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.stats: Any = None
