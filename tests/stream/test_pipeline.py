"""Tests of the threaded pipeline, its queues and its stats, with small test doubles (Fake*/Recording*)."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

import numpy as np
import pytest

from stream.errors import StageError
from stream.pipeline import FunctionStage, Pipeline
from stream.queues import END_OF_STREAM, BoundedQueue, EndOfStream, QueueStopped
from stream.stats import PipelineStats, ProgressReporter, ProgressUpdate, distribution
from stream.types import Frame, VideoInfo

TIME_BASE = Fraction(1, 15360)
PTS_STEP = 512  # 30 fps in a 1/15360 time base, like an mp4 track
DEADLINE_S = 5.0  # the most any shutdown may take in these tests; never a speed assertion


# -- test doubles ---------------------------------------------------------------------------------


class FakeSource:
    """Test double of a source: ``n`` tiny frames, optionally live, slow, or failing at one index."""

    def __init__(
        self,
        n: int,
        *,
        live: bool = False,
        period_s: float = 0.0,
        fail_at: int | None = None,
    ) -> None:
        self.n = n
        self.period_s = period_s
        self.fail_at = fail_at
        self.info = VideoInfo(
            width=4, height=4, fps=30.0, time_base=TIME_BASE, frame_count=None if live else n, is_live=live
        )
        self.close_calls = 0
        self.yielded = 0

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError(f"fake read error at frame {i}")
            if self.period_s:
                time.sleep(self.period_s)
            self.yielded += 1
            yield make_frame(i)

    def close(self) -> None:
        self.close_calls += 1


class BlockingSource:
    """Test double of a camera that delivers ``n_before`` frames, then blocks in its read.

    With ``close_unblocks`` its close() releases the read (the documented protocol); without it,
    the read stays blocked until the test calls ``release()``.
    """

    def __init__(self, n_before: int, *, close_unblocks: bool) -> None:
        self.n_before = n_before
        self.close_unblocks = close_unblocks
        self.info = VideoInfo(width=4, height=4, fps=30.0, time_base=TIME_BASE, is_live=True)
        self._unblock = threading.Event()
        self.blocked = threading.Event()
        self.close_calls = 0

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.n_before):
            yield make_frame(i)
        self.blocked.set()
        self._unblock.wait()  # an untimed wait: only close() (or the test) can end it

    def close(self) -> None:
        self.close_calls += 1
        if self.close_unblocks:
            self._unblock.set()

    def release(self) -> None:
        self._unblock.set()


class RecordingSink:
    """Test double of a sink: keeps what was written; can fail on a given write or on close."""

    def __init__(
        self, *, fail_at_write: int | None = None, fail_on_close: bool = False, close_delay_s: float = 0.0
    ) -> None:
        self.frames: list[Frame] = []
        self.close_delay_s = close_delay_s  # like an encoder flushing its last frames
        self.closed_completely = False
        self.fail_at_write = fail_at_write
        self.fail_on_close = fail_on_close
        self.close_calls = 0
        self.write_after_close = False
        self.close_thread: str | None = None
        self.write_threads: set[str] = set()

    def write(self, frame: Frame) -> None:
        if self.close_calls:
            self.write_after_close = True
        if len(self.frames) == self.fail_at_write:
            raise OSError("fake disk full")
        self.write_threads.add(threading.current_thread().name)
        self.frames.append(frame)

    def close(self) -> None:
        self.close_calls += 1
        self.close_thread = threading.current_thread().name
        if self.fail_on_close:
            raise OSError("fake flush failure")
        time.sleep(self.close_delay_s)
        self.closed_completely = True

    @property
    def indices(self) -> list[int]:
        return [f.index for f in self.frames]


@dataclasses.dataclass
class UncheckedStage:
    """Test double of a third-party Stage that does not validate its own name."""

    name: str

    def __call__(self, frame: Frame) -> Frame:
        return frame


def make_frame(i: int) -> Frame:
    return Frame(
        index=i,
        pts=i * PTS_STEP,
        time_base=TIME_BASE,
        bgr_u8=np.full((4, 4, 3), i % 256, np.uint8),
        captured_at=time.perf_counter(),
    )


def sleepy(name: str, rng: random.Random, max_s: float = 0.001) -> FunctionStage:
    def fn(frame: Frame) -> Frame:
        time.sleep(rng.uniform(0.0, max_s))
        return frame

    return FunctionStage(name, fn)


def wait_until(cond: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def call_when(cond: Callable[[], bool], action: Callable[[], None]) -> None:
    """Run ``action`` on a helper thread as soon as ``cond`` holds (e.g. stop after N frames)."""

    def body() -> None:
        wait_until(cond)
        action()

    threading.Thread(target=body).start()


def pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pipeline-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    for t in pipeline_threads():
        t.join(DEADLINE_S)
    assert not pipeline_threads(), "a test left pipeline threads running"


# -- queues ---------------------------------------------------------------------------------------


def test_lossless_queue_blocks_when_full_and_stop_releases_the_writer() -> None:
    stop = threading.Event()
    q: BoundedQueue[int] = BoundedQueue(2, live=False, stop_event=stop, name="q")
    q.put(0)
    q.put(1)
    outcome: list[str] = []

    def writer() -> None:
        try:
            q.put(2)
            outcome.append("put")
        except QueueStopped:
            outcome.append("stopped")

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.15)
    assert outcome == [], "put into a full lossless queue must wait"
    stop.set()
    t.join(DEADLINE_S)
    assert outcome == ["stopped"]
    assert q.dropped == 0 and len(q) == 2


def test_lossless_queue_put_resumes_when_consumer_takes() -> None:
    stop = threading.Event()
    q: BoundedQueue[int] = BoundedQueue(1, live=False, stop_event=stop)
    q.put(0)
    t = threading.Thread(target=q.put, args=(1,))
    t.start()
    assert q.get() == 0
    t.join(DEADLINE_S)
    assert not t.is_alive()
    assert q.get() == 1 and q.dropped == 0


def test_drop_oldest_queue_never_blocks_and_counts_drops() -> None:
    q: BoundedQueue[int] = BoundedQueue(2, live=True, stop_event=threading.Event())
    for i in range(5):
        q.put(i)
    assert q.dropped == 3 and q.put_count == 5 and q.high_water == 2
    assert [q.get(), q.get()] == [3, 4]


def test_end_marker_never_evicts_the_newest_frame() -> None:
    q: BoundedQueue[int] = BoundedQueue(1, live=True, stop_event=threading.Event())
    q.put(7)
    q.put_end()
    assert q.get() == 7
    assert q.get() is END_OF_STREAM and isinstance(END_OF_STREAM, EndOfStream)
    assert q.dropped == 0


def test_get_on_empty_queue_raises_promptly_once_stopped() -> None:
    stop = threading.Event()
    q: BoundedQueue[int] = BoundedQueue(1, live=True, stop_event=stop, poll_s=10.0)

    def stop_and_wake() -> None:
        stop.set()
        q.wake()

    threading.Timer(0.1, stop_and_wake).start()
    t0 = time.monotonic()
    with pytest.raises(QueueStopped):
        q.get()
    assert time.monotonic() - t0 < DEADLINE_S  # wake() ends the wait long before poll_s


def test_drop_counts_are_exact_under_concurrent_producers() -> None:
    q: BoundedQueue[int] = BoundedQueue(3, live=True, stop_event=threading.Event())
    received: list[int] = []

    def consume() -> None:
        while not isinstance(item := q.get(), EndOfStream):
            received.append(item)

    consumer = threading.Thread(target=consume)

    def produce() -> None:
        for i in range(2000):
            q.put(i)

    producers = [threading.Thread(target=produce) for _ in range(4)]
    for t in [consumer, *producers]:
        t.start()
    for t in producers:
        t.join(DEADLINE_S)
    q.put_end()
    consumer.join(DEADLINE_S)
    assert not consumer.is_alive()
    assert q.put_count == 8000
    assert len(received) + q.dropped == 8000


def test_queue_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="maxsize must be >= 1, got 0"):
        BoundedQueue(0, live=False, stop_event=threading.Event())


# -- pipeline: normal runs -------------------------------------------------------------------------


def test_file_source_delivers_every_frame_in_order_through_two_stages() -> None:
    rng = random.Random(0)
    seen_by_stateful: list[int] = []

    def stateful(frame: Frame) -> Frame:
        # A stateful stage: relies on seeing frames one by one, in order, from one thread.
        if seen_by_stateful and frame.index != seen_by_stateful[-1] + 1:
            raise AssertionError(f"stage saw {frame.index} after {seen_by_stateful[-1]}")
        seen_by_stateful.append(frame.index)
        time.sleep(rng.uniform(0, 0.001))
        return frame

    def brighten(frame: Frame) -> Frame:
        time.sleep(rng.uniform(0, 0.001))
        return dataclasses.replace(frame, bgr_u8=frame.bgr_u8 + 1)  # a new Frame object

    source, sink = FakeSource(200), RecordingSink()
    stats = Pipeline(
        source, [FunctionStage("track", stateful), FunctionStage("brighten", brighten)], sink, queue_size=2
    ).run()

    assert sink.indices == list(range(200))
    assert [f.pts for f in sink.frames] == [i * PTS_STEP for i in range(200)]
    assert all(int(f.bgr_u8[0, 0, 0]) == (f.index % 256 + 1) % 256 for f in sink.frames)
    assert set(sink.frames[0].timings) == {"capture", "track", "brighten", "render"}
    assert stats.frames_in == stats.frames_out == 200
    assert stats.dropped == {"capture->track": 0, "track->brighten": 0, "brighten->render": 0}
    assert not stats.live and not stats.stopped and stats.error is None and stats.unjoined == ()
    assert len(stats.latency_ms) == 200 and min(stats.latency_ms) >= 0
    assert {k: len(v) for k, v in stats.stage_ms.items()} == dict.fromkeys(
        ["capture", "track", "brighten", "render"], 200
    )
    assert sink.close_calls == 1 and source.close_calls == 1
    assert sink.close_thread == "pipeline-render" and sink.write_threads == {"pipeline-render"}


def test_pipeline_without_stages_copies_source_to_sink() -> None:
    sink = RecordingSink()
    stats = Pipeline(FakeSource(10), [], sink).run()
    assert sink.indices == list(range(10)) and stats.dropped == {"capture->render": 0}


def test_live_source_faster_than_a_stage_drops_the_oldest_frames() -> None:
    def slow(frame: Frame) -> Frame:
        time.sleep(0.01)
        return frame

    source, sink = FakeSource(150, live=True, period_s=0.0005), RecordingSink()
    pipe = Pipeline(source, [FunctionStage("slow", slow)], sink, queue_size=2)
    assert pipe.live
    stats = pipe.run()

    out = sink.indices
    assert all(a < b for a, b in zip(out, out[1:], strict=False)), "frames must stay in order"
    assert stats.frames_in == 150
    assert stats.dropped_total == stats.frames_in - stats.frames_out
    assert stats.dropped["capture->slow"] > 0
    assert out[-1] == 149, "the newest frame must be delivered"
    assert stats.live and not stats.stopped and sink.close_calls == 1


def test_file_source_behind_a_slow_stage_drops_nothing() -> None:
    def slow(frame: Frame) -> Frame:
        time.sleep(0.002)
        return frame

    sink = RecordingSink()
    stats = Pipeline(FakeSource(40, period_s=0.0), [FunctionStage("slow", slow)], sink, queue_size=1).run()
    assert sink.indices == list(range(40)) and stats.dropped_total == 0


def test_queue_policy_follows_source_liveness_unless_overridden() -> None:
    assert Pipeline(FakeSource(1, live=True), [], RecordingSink()).live is True
    assert Pipeline(FakeSource(1, live=False), [], RecordingSink()).live is False
    assert Pipeline(FakeSource(1, live=False), [], RecordingSink(), live=True).live is True


@pytest.mark.parametrize(
    ("names", "message"),
    [(["a", "a"], "must be unique"), (["render"], "is reserved"), ([""], "non-empty")],
)
def test_bad_stage_names_are_rejected(names: list[str], message: str) -> None:
    stages = [UncheckedStage(n) for n in names]
    with pytest.raises(ValueError, match=message):
        Pipeline(FakeSource(1), stages, RecordingSink())


def test_progress_updates_come_once_per_written_frame() -> None:
    updates: list[ProgressUpdate] = []
    Pipeline(FakeSource(12), [], RecordingSink(), on_progress=updates.append).run()
    assert [u.frames_out for u in updates] == list(range(1, 13))
    assert all(u.total == 12 and not u.live and u.dropped == 0 for u in updates)


# -- pipeline: failures ----------------------------------------------------------------------------


def test_stage_error_stops_everything_and_reraises_with_the_cause() -> None:
    original = ValueError("bad frame 7")

    def boom(frame: Frame) -> Frame:
        if frame.index == 7:
            raise original
        return frame

    source, sink = FakeSource(100_000), RecordingSink(close_delay_s=0.1)
    pipe = Pipeline(
        source, [FunctionStage("detect", boom), sleepy("restore", random.Random(1))], sink, queue_size=2
    )
    t0 = time.monotonic()
    with pytest.raises(StageError) as info:
        pipe.run()
    assert time.monotonic() - t0 < DEADLINE_S
    assert info.value.stage == "detect" and "bad frame 7" in str(info.value)
    assert info.value.__cause__ is original
    assert sink.close_calls == 1 and sink.closed_completely and source.close_calls == 1
    assert sink.indices == list(range(len(sink.frames))) and len(sink.frames) < 7
    assert source.yielded < 100_000
    assert pipe.stats is not None and pipe.stats.stopped and "detect" in (pipe.stats.error or "")
    assert not pipeline_threads()


def test_source_error_is_reported_as_capture() -> None:
    source, sink = FakeSource(50, fail_at=5), RecordingSink()
    with pytest.raises(StageError) as info:
        Pipeline(source, [sleepy("a", random.Random(2))], sink).run()
    assert info.value.stage == "capture" and isinstance(info.value.__cause__, OSError)
    assert sink.close_calls == 1 and sink.indices == list(range(len(sink.frames)))


def test_sink_write_error_is_reported_as_render_and_sink_still_closed() -> None:
    source, sink = FakeSource(100_000), RecordingSink(fail_at_write=3)
    with pytest.raises(StageError) as info:
        Pipeline(source, [sleepy("a", random.Random(3))], sink, queue_size=2).run()
    assert info.value.stage == "render" and str(info.value.__cause__) == "fake disk full"
    assert sink.indices == [0, 1, 2] and sink.close_calls == 1 and source.close_calls == 1


def test_sink_close_error_after_a_complete_run_is_raised() -> None:
    sink = RecordingSink(fail_on_close=True)
    pipe = Pipeline(FakeSource(5), [], sink)
    with pytest.raises(StageError, match="fake flush failure") as info:
        pipe.run()
    assert info.value.stage == "render" and sink.indices == list(range(5))
    assert pipe.stats is not None and pipe.stats.frames_out == 5


def test_stage_returning_a_non_frame_is_a_stage_error() -> None:
    stage = FunctionStage("broken", lambda f: f.bgr_u8)  # type: ignore[arg-type, return-value]
    with pytest.raises(StageError, match="must return a Frame, got ndarray") as info:
        Pipeline(FakeSource(5), [stage], RecordingSink()).run()
    assert isinstance(info.value.__cause__, TypeError)


def test_failing_progress_callback_is_a_stage_error() -> None:
    def bad(update: ProgressUpdate) -> None:
        raise RuntimeError("display gone")

    sink = RecordingSink()
    with pytest.raises(StageError) as info:
        Pipeline(FakeSource(20), [], sink, on_progress=bad).run()
    assert info.value.stage == "progress" and sink.close_calls == 1


# -- pipeline: stopping ----------------------------------------------------------------------------


def test_stop_from_another_thread_ends_run_and_keeps_written_frames() -> None:
    source, sink = FakeSource(10**9), RecordingSink(close_delay_s=0.3)
    pipe = Pipeline(source, [sleepy("a", random.Random(4), 0.002)], sink, queue_size=2)

    def stopper() -> None:
        wait_until(lambda: len(sink.frames) >= 5)
        pipe.stop()

    threading.Thread(target=stopper).start()
    t0 = time.monotonic()
    stats = pipe.run()
    assert time.monotonic() - t0 < DEADLINE_S + 5  # run would never end without the stop
    assert stats.stopped and stats.error is None
    assert sink.close_calls == 1 and sink.closed_completely and not sink.write_after_close
    assert len(sink.frames) == stats.frames_out >= 5
    assert sink.indices == list(range(stats.frames_out))


def test_setting_the_callers_stop_event_ends_run() -> None:
    stop = threading.Event()
    sink = RecordingSink()
    pipe = Pipeline(FakeSource(10**9, period_s=0.001), [], sink, stop_event=stop)
    call_when(lambda: len(sink.frames) >= 3, stop.set)
    stats = pipe.run()
    assert stats.stopped and sink.close_calls == 1 and stats.frames_out >= 3


def test_ctrl_c_in_the_running_thread_shuts_down_cleanly_and_reraises() -> None:
    sink = RecordingSink(close_delay_s=0.3)
    pipe = Pipeline(FakeSource(10**9, period_s=0.001), [sleepy("a", random.Random(5))], sink)
    delivered = threading.Event()
    main_ident = threading.get_ident()

    def interrupt() -> None:
        wait_until(lambda: len(sink.frames) >= 3)
        # A real SIGINT aimed at the main thread, as Ctrl-C in a terminal: it interrupts the wait
        # the main thread is blocked in, which is where a careless wait goes wrong.
        signal.pthread_kill(main_ident, signal.SIGINT)
        if not delivered.wait(DEADLINE_S):
            pipe.stop()  # so a missed interrupt fails the test instead of hanging it

    # A background job of a non-interactive shell starts with SIGINT ignored; install Python's
    # default handler (KeyboardInterrupt) for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt).start()
        with pytest.raises(KeyboardInterrupt):
            try:
                pipe.run()
            except KeyboardInterrupt:
                delivered.set()
                raise
    finally:
        signal.signal(signal.SIGINT, previous)
    # run() returned only after the sink's (slow) close finished: the output file is complete.
    assert sink.close_calls == 1 and sink.closed_completely
    assert pipe.stats is not None and pipe.stats.stopped and pipe.stats.unjoined == ()
    assert pipe.stats.frames_out == len(sink.frames) >= 3


def test_stop_closes_a_blocked_source_to_unblock_its_read() -> None:
    source, sink = BlockingSource(3, close_unblocks=True), RecordingSink()
    pipe = Pipeline(source, [], sink)
    call_when(lambda: len(sink.frames) == 3, pipe.stop)
    t0 = time.monotonic()
    stats = pipe.run()
    assert time.monotonic() - t0 < DEADLINE_S
    assert source.close_calls == 1 and sink.close_calls == 1
    assert stats.stopped and stats.unjoined == () and sink.indices == [0, 1, 2]


def test_a_thread_that_never_returns_is_reported_not_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    source, sink = BlockingSource(2, close_unblocks=False), RecordingSink()
    pipe = Pipeline(source, [], sink, join_timeout_s=0.5)
    call_when(lambda: len(sink.frames) == 2, pipe.stop)
    try:
        with caplog.at_level(logging.ERROR, logger="stream.pipeline"):
            t0 = time.monotonic()
            stats = pipe.run()
            assert time.monotonic() - t0 < DEADLINE_S
        assert stats.unjoined == ("pipeline-capture",)
        assert "pipeline-capture" in caplog.text
        assert source.close_calls == 1 and sink.close_calls == 1 and sink.indices == [0, 1]
    finally:
        source.release()  # let the stuck thread end so it does not outlive the test


def test_a_pipeline_runs_once() -> None:
    pipe = Pipeline(FakeSource(2), [], RecordingSink())
    pipe.run()
    with pytest.raises(RuntimeError, match="runs once"):
        pipe.run()


# -- stats and progress ----------------------------------------------------------------------------


def test_distribution_percentiles_and_empty_input() -> None:
    d = distribution([float(v) for v in range(1, 101)])
    assert d["n"] == 100 and d["p50"] == pytest.approx(50.5) and d["max"] == 100.0
    assert d["p99"] == pytest.approx(99.01)
    assert distribution([]) == {"n": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}


def test_summary_is_json_ready_and_fps_uses_wall_time() -> None:
    stats = PipelineStats(
        live=True,
        frames_in=10,
        frames_out=8,
        dropped={"capture->render": 2},
        stage_ms={"capture": [1.0] * 10, "render": [2.0] * 8},
        latency_ms=[10.0] * 8,
        wall_s=2.0,
    )
    s = json.loads(json.dumps(stats.summary()))
    assert s["fps"] == 4.0 and s["dropped_total"] == 2
    assert s["latency_ms"]["p95"] == 10.0 and s["stage_ms"]["render"]["n"] == 8
    with pytest.raises(ValueError, match="wall_s must be >= 0"):
        dataclasses.replace(stats, wall_s=-1.0)


def _update(frames_out: int, *, live: bool, total: int | None = None) -> ProgressUpdate:
    return ProgressUpdate(
        frames_in=frames_out,
        frames_out=frames_out,
        dropped=2,
        total=total,
        elapsed_s=1.0,
        latency_ms=40.0,
        live=live,
    )


def test_live_progress_writes_one_rewritten_line() -> None:
    out = io.StringIO()
    with ProgressReporter(total=None, live=True, interval_s=0.0, stream=out) as rep:
        for i in range(1, 4):
            rep(_update(i, live=True))
        assert "fps | latency p50 40 ms p95 40 ms | dropped 2 | 3 frames" in rep.last_line
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1


def test_file_progress_is_a_bar_of_frames_over_total() -> None:
    out = io.StringIO()
    with ProgressReporter.for_info(FakeSource(3).info, stream=out) as rep:
        for i in range(1, 4):
            rep(_update(i, live=False, total=3))
    assert "3/3" in out.getvalue()


def test_recent_samples_ring_keeps_the_newest_in_order_and_totals_of_all() -> None:
    from stream.stats import RecentSamples

    r = RecentSamples(4)
    assert r.values() == [] and len(r) == 0
    for v in range(10):
        r.append(float(v))
    assert r.values() == [6.0, 7.0, 8.0, 9.0] and len(r) == 4
    assert (r.count, r.total, r.max) == (10, 45.0, 9.0)
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        RecentSamples(0)


def test_per_frame_stats_are_bounded_and_sampled_frames_carry_a_reference() -> None:
    source, sink = FakeSource(50), RecordingSink()
    stats = Pipeline(source, [], sink, keep_samples=8, reference_every=10).run()
    assert stats.frames_out == 50 and len(stats.latency_ms) == 8
    assert all(len(v) == 8 for v in stats.stage_ms.values())
    assert stats.summary()["frames_sampled"] == 8
    refs = [f.index for f in sink.frames if f.reference_bgr_u8 is not None]
    assert refs == [0, 10, 20, 30, 40]
    assert all(
        np.array_equal(f.reference_bgr_u8, f.bgr_u8) for f in sink.frames if f.reference_bgr_u8 is not None
    )
