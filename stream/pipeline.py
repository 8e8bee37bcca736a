"""The threaded pipeline: capture thread -> one thread per stage -> render thread, over bounded queues.

One thread per stage keeps frame order and lets stateful stages (tracker, temporal smoother) keep
their state without locks: a stage is only ever called from its own thread, frames in order.
Queues follow the source (see :mod:`stream.queues`): a file is carried losslessly, a live source
drops the oldest frames in every queue so latency stays bounded.

Shutdown contract (what the lead's ``run_stream.py`` relies on):
  * ``run()`` blocks until the source ends and every frame reached the sink, or until ``stop()``
    (from any thread), the ``stop_event`` being set, Ctrl-C in the thread running ``run()``, or an
    error in the source, a stage, the sink or ``on_progress``.
  * Once ``run()`` starts, the pipeline owns closing the source and the sink, each exactly once:
    the render thread closes the sink in a ``finally`` (the same thread that wrote to it, since
    containers such as PyAV's are not thread-safe), so the file is playable after any ending;
    the capture thread closes the source when iteration ends.
  * Interrupting a blocked source: after a stop, if the capture thread has not returned within
    ``SOURCE_GRACE_S``, the pipeline calls ``source.close()`` from another thread. So a source's
    ``close()`` must be safe to call while its iterator is blocked in a read, and must make that read
    return or raise. Whatever the source raises after stop is treated as the expected result.
  * The first error wins: all threads are stopped and joined, the sink is closed, then ``run()``
    raises ``StageError(stage_name, cause)`` with ``__cause__`` set to the original exception.
    Names: ``"capture"`` (source), each stage's ``name``, ``"render"`` (sink), ``"progress"``.
  * Every thread is joined with a deadline (``join_timeout_s``, which must also cover the sink's
    final flush); one still running then is logged, listed in ``PipelineStats.unjoined`` and noted
    on the raised error, instead of hanging ``run()``.
  * Ctrl-C: ``run()`` waits in short timed waits, so KeyboardInterrupt reaches it; it then stops and
    shuts down as above and re-raises KeyboardInterrupt. The stats stay available as ``.stats``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Protocol

from stream.errors import StageError
from stream.queues import BoundedQueue, EndOfStream, QueueStopped
from stream.stats import PipelineStats, ProgressUpdate, RecentSamples
from stream.types import Frame, VideoInfo

logger = logging.getLogger(__name__)

CAPTURE: Final = "capture"
RENDER: Final = "render"
PROGRESS: Final = "progress"
RESERVED_NAMES: Final = frozenset({CAPTURE, RENDER, PROGRESS})

# How long a stopped capture thread may take to notice the stop on its own before its source is
# closed under it. Short, but long enough that a source between frames is never closed mid-decode.
SOURCE_GRACE_S: Final = 0.25
# Per-frame timings kept for the stats: 10 minutes at 30 fps, in a fixed ring (see RecentSamples).
KEEP_SAMPLES: Final = 18_000


class FrameSource(Protocol):
    """Iterable of :class:`Frame` in order, with ``info`` and a thread-safe, idempotent ``close()``.

    ``close()`` may be called from another thread while ``__iter__``'s generator is blocked in a
    read; it must make that read return (end iteration) or raise, promptly.
    """

    @property
    def info(self) -> VideoInfo: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class FrameSink(Protocol):
    """Consumes frames in order; ``close()`` flushes and leaves a complete, playable output."""

    def write(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


class Stage(Protocol):
    """A named step ``Frame -> Frame``, called from one dedicated thread, frames in order.

    It may mutate and return the same frame, or return a new one (``dataclasses.replace`` keeps
    ``index``, ``pts`` and ``captured_at``, which latency and order rely on). State between calls
    needs no lock. Its time per frame is recorded in ``frame.timings[name]`` (ms).
    """

    @property
    def name(self) -> str: ...

    def __call__(self, frame: Frame) -> Frame: ...


@dataclass(frozen=True)
class FunctionStage:
    """A :class:`Stage` made of a name and a plain callable, e.g. ``FunctionStage("restore", fn)``."""

    name: str
    fn: Callable[[Frame], Frame]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"stage name must be a non-empty str, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"stage {self.name!r}: fn must be callable, got {type(self.fn).__name__}")

    def __call__(self, frame: Frame) -> Frame:
        return self.fn(frame)


class _Worker:
    """A pipeline thread plus an event it sets once its loop has returned (and closed what it owns).

    ``run()`` waits on these events rather than in ``Thread.join``: in CPython 3.11/3.12 a Ctrl-C
    landing inside ``join()`` makes ``Thread._wait_for_tstate_lock`` (its bpo-45274 branch) release
    a still-running thread's lock and mark it stopped, after which ``is_alive()`` is False while the
    thread still runs, and the shutdown would not wait for the sink to close.
    """

    def __init__(self, name: str, target: Callable[..., None], *args: object) -> None:
        self.done = threading.Event()
        # daemon=False: a thread must finish its frame and close what it owns (the sink's flush)
        # even if the main thread is leaving; run() waits for all of them with a deadline.
        self.thread = threading.Thread(target=self._main, args=(target, args), name=name, daemon=False)

    def _main(self, target: Callable[..., None], args: tuple[object, ...]) -> None:
        try:
            target(*args)
        finally:
            self.done.set()

    @property
    def name(self) -> str:
        return self.thread.name

    @property
    def started(self) -> bool:
        return self.thread.ident is not None

    @property
    def running(self) -> bool:
        return self.started and not self.done.is_set()


class Pipeline:
    """Runs ``source -> stages... -> sink`` with one thread each; see the module docstring.

    ``queue_size``: capacity of each queue between threads. ``live``: queue policy; None takes
    ``source.info.is_live`` (live: drop oldest; file: lossless). ``on_progress``: called from the
    render thread after each written frame with a :class:`ProgressUpdate` (e.g. a
    :class:`stream.stats.ProgressReporter`). ``stop_event``: an event the caller may set to stop,
    like :meth:`stop`. ``poll_s``: the longest any wait goes without checking the stop event.
    ``keep_samples``: per-frame timings retained for the stats (the most recent ones; memory is
    fixed). ``reference_every`` > 0: every N-th frame carries a copy of itself as decoded
    (``Frame.reference_bgr_u8``) so a file sink can measure what encoding changed outside the faces.
    A pipeline runs once.
    """

    def __init__(
        self,
        source: FrameSource,
        stages: Sequence[Stage],
        sink: FrameSink,
        *,
        queue_size: int = 4,
        live: bool | None = None,
        on_progress: Callable[[ProgressUpdate], None] | None = None,
        stop_event: threading.Event | None = None,
        join_timeout_s: float = 10.0,
        poll_s: float = 0.05,
        keep_samples: int = KEEP_SAMPLES,
        reference_every: int = 0,
    ) -> None:
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")
        if not join_timeout_s > 0:
            raise ValueError(f"join_timeout_s must be > 0, got {join_timeout_s}")
        if reference_every < 0:
            raise ValueError(f"reference_every must be >= 0 (0: off), got {reference_every}")
        names = [s.name for s in stages]
        for n in names:
            if not isinstance(n, str) or not n:
                raise ValueError(f"stage names must be non-empty str, got {n!r}")
            if n in RESERVED_NAMES:
                raise ValueError(f"stage name {n!r} is reserved; expected none of {sorted(RESERVED_NAMES)}")
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")

        info = source.info
        self.live: bool = info.is_live if live is None else live
        self._total = None if self.live else info.frame_count
        self._source = source
        self._stages = list(stages)
        self._sink = sink
        self._on_progress = on_progress
        self._join_timeout_s = join_timeout_s
        self._poll_s = poll_s
        self._stop = stop_event if stop_event is not None else threading.Event()

        hops = [CAPTURE, *names, RENDER]
        self._queues: list[BoundedQueue[Frame]] = [
            BoundedQueue(queue_size, live=self.live, stop_event=self._stop, name=f"{a}->{b}", poll_s=poll_s)
            for a, b in pairwise(hops)
        ]
        self._stage_ms = {n: RecentSamples(keep_samples) for n in hops}
        self._latency_ms = RecentSamples(keep_samples)
        self._reference_every = reference_every
        self._frames_in = 0
        self._frames_out = 0
        self._t0 = 0.0

        self._error_lock = threading.Lock()
        self._first_error: tuple[str, BaseException] | None = None
        self._close_lock = threading.Lock()
        self._source_closed = False
        self._sink_closed = False
        self._started = False
        self._stats: PipelineStats | None = None

    @property
    def stats(self) -> PipelineStats | None:
        """The stats of the finished run (also after an error or Ctrl-C); None before it ends."""
        return self._stats

    @property
    def queue_names(self) -> list[str]:
        return [q.name for q in self._queues]

    def stop(self) -> None:
        """Ask every thread to end now (frames still queued are abandoned). Any thread; idempotent."""
        self._stop.set()
        for q in self._queues:
            q.wake()

    def run(self) -> PipelineStats:
        """Run to the end of the source or until stopped; see the module docstring for the contract."""
        if self._started:
            raise RuntimeError("a Pipeline runs once; build a new one to run again")
        self._started = True
        self._t0 = time.perf_counter()
        workers = self._make_workers()
        interrupted: KeyboardInterrupt | None = None
        try:
            try:
                for w in workers:
                    w.thread.start()
                render = workers[-1]
                # Short timed waits, not one long one, so KeyboardInterrupt reaches this thread.
                while not self._stop.is_set() and not render.done.wait(self._poll_s):
                    pass
            except KeyboardInterrupt as e:
                interrupted = e
                logger.info("interrupted; stopping the pipeline")
                self.stop()
        finally:
            unjoined = self._shutdown(workers)
            stats = self._stats = self._build_stats(unjoined)

        first = self._first_error
        if interrupted is not None:
            if first is not None:
                logger.error("stage %r had failed before the interrupt: %r", first[0], first[1])
            raise interrupted
        if first is not None:
            name, cause = first
            err = StageError(name, cause)
            err.stats = stats
            if unjoined:
                err.add_note(f"threads still running after {self._join_timeout_s:g} s: {', '.join(unjoined)}")
            raise err from cause
        return stats

    # -- threads ---------------------------------------------------------------------------------

    def _make_workers(self) -> list[_Worker]:
        workers = [_Worker(f"pipeline-{CAPTURE}", self._capture_loop)]
        for i, stage in enumerate(self._stages):
            workers.append(
                _Worker(
                    f"pipeline-{stage.name}", self._stage_loop, stage, self._queues[i], self._queues[i + 1]
                )
            )
        workers.append(_Worker(f"pipeline-{RENDER}", self._render_loop))
        return workers

    def _capture_loop(self) -> None:
        q_out = self._queues[0]
        times = self._stage_ms[CAPTURE]
        try:
            frames = iter(self._source)
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    q_out.put_end()
                    return
                ms = (time.perf_counter() - t0) * 1000.0
                if not isinstance(frame, Frame):
                    raise TypeError(f"source must yield Frame, got {type(frame).__name__}")
                frame.timings[CAPTURE] = ms
                times.append(ms)
                if self._reference_every and frame.index % self._reference_every == 0:
                    frame.reference_bgr_u8 = frame.bgr_u8.copy()  # a copy: a stage may paint in place
                self._frames_in += 1
                q_out.put(frame)
        except QueueStopped:
            pass
        except BaseException as e:
            if self._stop.is_set():
                # Expected when close() interrupted a blocked read after stop.
                logger.debug("source raised after stop: %r", e)
            else:
                self._fail(CAPTURE, e)
        finally:
            self._close_source()

    def _stage_loop(self, stage: Stage, q_in: BoundedQueue[Frame], q_out: BoundedQueue[Frame]) -> None:
        name = stage.name
        times = self._stage_ms[name]
        try:
            while True:
                item = q_in.get()
                if isinstance(item, EndOfStream):
                    q_out.put_end()
                    return
                t0 = time.perf_counter()
                out = stage(item)
                ms = (time.perf_counter() - t0) * 1000.0
                if not isinstance(out, Frame):
                    raise TypeError(f"stage {name!r} must return a Frame, got {type(out).__name__}")
                if out is not item:
                    for k, v in item.timings.items():
                        out.timings.setdefault(k, v)
                out.timings[name] = ms
                times.append(ms)
                q_out.put(out)
        except QueueStopped:
            pass
        except BaseException as e:
            self._fail(name, e)

    def _render_loop(self) -> None:
        q_in = self._queues[-1]
        times = self._stage_ms[RENDER]
        try:
            while True:
                item = q_in.get()
                if isinstance(item, EndOfStream):
                    return
                t0 = time.perf_counter()
                self._sink.write(item)
                t1 = time.perf_counter()
                ms = (t1 - t0) * 1000.0
                item.timings[RENDER] = ms
                times.append(ms)
                latency_ms = (t1 - item.captured_at) * 1000.0
                self._latency_ms.append(latency_ms)
                self._frames_out += 1
                if self._on_progress is not None and not self._report(self._on_progress, latency_ms, t1):
                    return
        except QueueStopped:
            pass
        except BaseException as e:
            self._fail(RENDER, e)
        finally:
            self._close_sink()

    def _report(self, on_progress: Callable[[ProgressUpdate], None], latency_ms: float, now: float) -> bool:
        update = ProgressUpdate(
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            dropped=sum(q.dropped for q in self._queues),
            total=self._total,
            elapsed_s=now - self._t0,
            latency_ms=latency_ms,
            live=self.live,
        )
        try:
            on_progress(update)
        except BaseException as e:
            self._fail(PROGRESS, e)
            return False
        return True

    # -- shutdown --------------------------------------------------------------------------------

    def _fail(self, name: str, exc: BaseException) -> None:
        with self._error_lock:
            first = self._first_error is None
            if first:
                self._first_error = (name, exc)
        if not first:
            logger.warning("%s failed after the first error (ignored): %r", name, exc)
        self.stop()

    def _close_source(self) -> None:
        # The flag is taken under the lock but close() runs outside it, so a close that hangs in
        # one thread never blocks the other caller.
        with self._close_lock:
            if self._source_closed:
                return
            self._source_closed = True
        try:
            self._source.close()
        except BaseException as e:
            if self._stop.is_set():
                logger.warning("source.close() raised while stopping (ignored): %r", e)
            else:
                self._fail(CAPTURE, e)

    def _close_sink(self) -> None:
        with self._close_lock:
            if self._sink_closed:
                return
            self._sink_closed = True
        try:
            self._sink.close()
        except BaseException as e:
            self._fail(RENDER, e)

    def _shutdown(self, workers: list[_Worker]) -> tuple[str, ...]:
        """Stop (unless the source ended normally), unblock the source, wait for all with a deadline."""
        deadline = time.perf_counter() + self._join_timeout_s

        def left() -> float:
            return max(0.0, deadline - time.perf_counter())

        capture, render = workers[0], workers[-1]
        if not render.done.is_set():
            self.stop()  # not a normal end: stop, error, Ctrl-C, or a thread failed to start
        if self._stop.is_set() and capture.running:
            capture.done.wait(min(SOURCE_GRACE_S, left()))
            if capture.running:
                logger.info(
                    "source still reading %.2f s after stop; calling source.close() to unblock it",
                    SOURCE_GRACE_S,
                )
                # A daemon helper: a close() that itself hangs must not keep the process alive.
                threading.Thread(target=self._close_source, name="pipeline-source-close", daemon=True).start()
        for w in reversed(workers):
            if w.started:
                w.done.wait(left())
        for w in workers:
            if w.started and w.done.is_set():
                w.thread.join(left())  # its loop has returned; this only reaps the thread
        # Threads that never started cannot close what they own.
        if not capture.started:
            self._close_source()
        if not render.started:
            self._close_sink()
        unjoined = tuple(w.name for w in workers if w.running)
        if unjoined:
            logger.error(
                "pipeline threads still running after %.1f s, left behind: %s",
                self._join_timeout_s,
                ", ".join(unjoined),
            )
        return unjoined

    def _build_stats(self, unjoined: tuple[str, ...]) -> PipelineStats:
        first = self._first_error
        return PipelineStats(
            live=self.live,
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            dropped={q.name: q.dropped for q in self._queues},
            stage_ms={k: v.values() for k, v in self._stage_ms.items()},
            latency_ms=self._latency_ms.values(),
            wall_s=time.perf_counter() - self._t0,
            stopped=self._stop.is_set(),
            unjoined=unjoined,
            error=None if first is None else f"{first[0]}: {type(first[1]).__name__}: {first[1]}",
        )
