"""Bounded hand-off queues between pipeline threads, with a policy chosen by source liveness.

A file is read losslessly: when the queue is full, ``put`` waits, which slows the reader to the
speed of the slowest stage and keeps every frame. A live source must not fall behind the camera, so
its queues drop the OLDEST item when full: ``put`` never waits, and the newest frames always get
through (added latency stays bounded by the queue size, not by how long the stream has run).

Every wait is a short timed wait in a loop that checks the pipeline's stop event, so no thread can
sleep forever on a queue: once the stop event is set, ``put``/``get`` raise :class:`QueueStopped`
within ``poll_s`` (at once if :meth:`BoundedQueue.wake` is called).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Final, Generic, TypeVar

T = TypeVar("T")


class QueueStopped(Exception):
    """Raised by ``put``/``get`` once the stop event is set: the calling thread should return.

    Control flow, not a failure: the pipeline's threads catch it and end quietly.
    """


class EndOfStream:
    """Type of the end-of-stream marker :data:`END_OF_STREAM`; compare with ``isinstance``."""

    def __repr__(self) -> str:
        return "END_OF_STREAM"


END_OF_STREAM: Final = EndOfStream()


class BoundedQueue(Generic[T]):
    """A FIFO of at most ``maxsize`` items between exactly one producer and one consumer thread.

    (More producers or consumers are safe too; the counters are kept under the queue's lock.)

    Policy, chosen by whether the SOURCE is live (never by the type of anything):
      * ``live=False`` (lossless): ``put`` blocks while the queue is full, in timed waits of
        ``poll_s`` that check ``stop_event``; nothing is ever dropped and order is kept.
      * ``live=True`` (drop-oldest): ``put`` never blocks; when full, the oldest item is discarded
        and counted in :attr:`dropped`.
    ``get`` waits (timed, checking ``stop_event``) until an item arrives and returns it, or
    :data:`END_OF_STREAM` once the producer called :meth:`put_end`.
    """

    def __init__(
        self,
        maxsize: int,
        *,
        live: bool,
        stop_event: threading.Event,
        name: str = "queue",
        poll_s: float = 0.05,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"queue {name!r}: maxsize must be >= 1, got {maxsize}")
        if not poll_s > 0:
            raise ValueError(f"queue {name!r}: poll_s must be > 0, got {poll_s}")
        self.maxsize = maxsize
        self.live = live
        self.name = name
        self._stop = stop_event
        self._poll_s = poll_s
        self._items: deque[T | EndOfStream] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._dropped = 0
        self._put_count = 0
        self._high_water = 0

    @property
    def drop_oldest(self) -> bool:
        return self.live

    @property
    def dropped(self) -> int:
        """How many items were discarded because the queue was full (always 0 when lossless)."""
        with self._cond:
            return self._dropped

    @property
    def put_count(self) -> int:
        """How many items were accepted by ``put`` (the end marker not counted)."""
        with self._cond:
            return self._put_count

    @property
    def high_water(self) -> int:
        """The largest number of items ever waiting at once (end marker not counted)."""
        with self._cond:
            return self._high_water

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T) -> None:
        """Add ``item``; lossless: wait while full; live: drop the oldest when full.

        Raises :class:`QueueStopped` if the stop event is (or becomes, while waiting) set.
        """
        with self._cond:
            if self.live:
                self._check_stop()
                while len(self._items) >= self.maxsize:
                    self._items.popleft()
                    self._dropped += 1
            else:
                while True:
                    self._check_stop()
                    if len(self._items) < self.maxsize:
                        break
                    self._cond.wait(self._poll_s)
            self._items.append(item)
            self._put_count += 1
            self._high_water = max(self._high_water, len(self._items))
            self._cond.notify_all()

    def put_end(self) -> None:
        """Mark the end of the stream; the consumer's ``get`` returns :data:`END_OF_STREAM` after the items.

        The marker is appended even when the queue is full, never waiting and never evicting a
        frame: it holds no data, and evicting the newest frame for it would lose the last frame of
        a live stream. Raises :class:`QueueStopped` if the stop event is set.
        """
        with self._cond:
            self._check_stop()
            self._items.append(END_OF_STREAM)
            self._cond.notify_all()

    def get(self) -> T | EndOfStream:
        """Take the oldest item, waiting for one; raises :class:`QueueStopped` once stop is set.

        Items still queued when stop is set are abandoned: stop means "end now", not "drain".
        """
        with self._cond:
            while True:
                self._check_stop()
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify_all()
                    return item
                self._cond.wait(self._poll_s)

    def wake(self) -> None:
        """Wake every waiter now so a just-set stop event is seen without waiting out ``poll_s``."""
        with self._cond:
            self._cond.notify_all()

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise QueueStopped(f"queue {self.name!r} stopped")
