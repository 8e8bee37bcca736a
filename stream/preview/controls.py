"""Settings a user changes while a run goes on (the preview page's controls), read by the restore thread.

Only what is wired end to end lives here: ``paused`` (the output is the input as captured, while the
processor keeps running so tracks and mask history are current when restoration resumes) and
``overlay`` (the preview shows, over the restored picture, which pixels the restoration replaced).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ControlState:
    """One consistent reading of the controls."""

    paused: bool = False
    overlay: bool = False

    def __post_init__(self) -> None:
        for name in ("paused", "overlay"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, got {value!r}")


class LiveControls:
    """Thread-safe holder of a :class:`ControlState`: the HTTP threads write, the restore thread reads."""

    FIELDS = ("paused", "overlay")

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

    def update(self, changes: dict[str, object]) -> ControlState:
        """Apply ``changes`` (a subset of :attr:`FIELDS`, bool values) at once; ValueError names a bad key."""
        unknown = sorted(set(changes) - set(self.FIELDS))
        if unknown:
            raise ValueError(f"unknown control(s) {unknown}; expected some of {list(self.FIELDS)}")
        with self._lock:
            current = self._state
            merged = {name: changes.get(name, getattr(current, name)) for name in self.FIELDS}
            self._state = ControlState(**merged)  # type: ignore[arg-type]  # validated in __post_init__
            return self._state
