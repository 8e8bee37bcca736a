"""Settings a user changes while a run goes on (the preview page's controls), read by the restore thread.

Only what is wired end to end lives here: ``paused`` (the output is the input as captured, while the
processor keeps running so tracks and mask history are current when restoration resumes), ``overlay``
(the preview shows, over the restored picture, which pixels the restoration replaced) and
``only_track`` (the face picked on the page: the processor restores that track only and passes the
others through untouched; None restores every face. See :mod:`stream.restore.processor` for what
happens when the picked track ends).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ControlState:
    """One consistent reading of the controls."""

    paused: bool = False
    overlay: bool = False
    only_track: int | None = None

    def __post_init__(self) -> None:
        for name in ("paused", "overlay"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        tid = self.only_track
        # bool is an int in Python; a checkbox's true must not pick face #1.
        if tid is not None and (not isinstance(tid, int) or isinstance(tid, bool) or tid < 1):
            raise ValueError(
                f"only_track must be a track id (an int >= 1) or null for all faces, got {tid!r}"
            )


class LiveControls:
    """Thread-safe holder of a :class:`ControlState`: the HTTP threads write, the restore thread reads.

    It is a :class:`stream.restore.config.TrackChoice`: the processor reads :attr:`only_track`."""

    FIELDS = ("paused", "overlay", "only_track")

    def __init__(self, state: ControlState | None = None) -> None:
        self._lock = threading.Lock()
        self._state = state or ControlState()

    @property
    def state(self) -> ControlState:
        with self._lock:
            return self._state

    @property
    def paused(self) -> bool:
        return self.state.paused

    @property
    def overlay(self) -> bool:
        return self.state.overlay

    @property
    def only_track(self) -> int | None:
        return self.state.only_track

    def update(self, changes: dict[str, object]) -> ControlState:
        """Apply ``changes`` (a subset of :attr:`FIELDS`: bools, and an int or None for ``only_track``) at
        once; ValueError names a bad key or value."""
        unknown = sorted(set(changes) - set(self.FIELDS))
        if unknown:
            raise ValueError(f"unknown control(s) {unknown}; expected some of {list(self.FIELDS)}")
        with self._lock:
            current = self._state
            merged = {name: changes.get(name, getattr(current, name)) for name in self.FIELDS}
            self._state = ControlState(**merged)  # type: ignore[arg-type]  # validated in __post_init__
            return self._state
