"""Turn the signals a deployment sends (SIGTERM, SIGINT, SIGHUP) into one orderly stop of the pipeline.

systemd, Docker and Kubernetes stop a program with SIGTERM and kill it 10-30 s later; a terminal
closing sends SIGHUP; Ctrl-C is SIGINT. Python's defaults (die at once for SIGTERM/SIGHUP, a
KeyboardInterrupt at a random line for SIGINT) leave an MP4 without its index. Here each of them
sets the pipeline's stop event instead, so the render thread flushes the encoder and writes the
trailer, and the CLI still writes its stats and summary. The first signal's name is kept as
``stopped_by``. A second SIGINT raises KeyboardInterrupt (the pipeline still closes its sink on it);
repeated SIGTERM/SIGHUP are logged and change nothing, the first shutdown is already under way.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Final

log = logging.getLogger(__name__)

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class ShutdownSignals:
    """Context manager: while active, the signals in ``signals`` set ``event`` (main thread only).

    ``stopped_by`` is the first signal's name (``"SIGTERM"``...) or None; ``signum`` its number.
    Outside the main thread Python cannot install handlers; then nothing is installed and that is
    logged once (the caller's own handling stays in force).
    """

    def __init__(self, event: threading.Event, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        if not signals:
            raise ValueError("signals must name at least one signal, got ()")
        self.event = event
        self.signals = signals
        self.stopped_by: str | None = None
        self.signum: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stopped_by is None:
            self.stopped_by, self.signum = name, signum
            # Logged from the handler on purpose: the line says when the stop began, not when it ended.
            log.warning("%s received: stopping, closing the outputs (send SIGINT again to interrupt)", name)
            self.event.set()
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s received again: shutdown already under way", name)

    def __enter__(self) -> ShutdownSignals:
        if threading.current_thread() is not threading.main_thread():
            log.info("signals: not the main thread, SIGTERM/SIGINT/SIGHUP handlers not installed")
            return self
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()

    @property
    def exit_code(self) -> int | None:
        """128 + the signal number (the shell's convention: 130 for SIGINT, 143 for SIGTERM), or None."""
        return None if self.signum is None else 128 + self.signum
