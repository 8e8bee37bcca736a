"""Network I/O on loopback: RTSP client reads and reconnects, RTSP push, UDP round trip, bounded failures.

Every wait is bounded: sources get short open/read timeouts, threads are joined with a timeout, and
loops carry a deadline.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from fractions import Fraction
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
import pytest

from stream.errors import SourceError
from stream.media.sinks import StreamSink
from stream.media.sources import UrlSource
from stream.types import Frame, VideoInfo
from tests.stream.conftest import Clip, free_port
from tests.stream.rtsp_server import RtspTestServer

FAST = {"open_timeout_s": 3.0, "read_timeout_s": 2.0}


def _take(source: UrlSource, n: int, deadline_s: float = 15.0) -> list[Frame]:
    out, end = [], time.monotonic() + deadline_s
    for f in source:
        out.append(f)
        if len(out) >= n or time.monotonic() > end:
            break
    return out


def test_unreachable_url_fails_fast(port: int) -> None:
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="cannot open stream") as e:
        UrlSource(f"rtsp://127.0.0.1:{port}/x")
    assert time.monotonic() - t0 < 10 and "\n" not in str(e.value)


def test_silent_server_times_out_at_open() -> None:
    """A peer that accepts TCP but never answers must not hang the open."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        t0 = time.monotonic()
        with pytest.raises(SourceError):
            UrlSource(f"rtsp://127.0.0.1:{mute.getsockname()[1]}/x", open_timeout_s=1.0, read_timeout_s=1.0)
        assert time.monotonic() - t0 < 8


def test_rtsp_source_reads_live_frames() -> None:
    with RtspTestServer(width=160, height=120, fps=25) as server, UrlSource(server.url, **FAST) as src:
        assert src.info.is_live and (src.info.width, src.info.height) == (160, 120)
        assert src.info.fps == pytest.approx(25.0)
        frames = _take(src, 8)
    assert [f.index for f in frames] == list(range(8))
    assert all(f.bgr_u8.shape == (120, 160, 3) for f in frames)
    pts = [f.pts for f in frames]
    assert all(b - a == 3600 for a, b in zip(pts, pts[1:], strict=False))  # 1/25 s at 90 kHz, from RTP


def test_rtsp_source_survives_server_restart() -> None:
    server = RtspTestServer(fps=25).start()
    src = UrlSource(server.url, backoff=(0.3, 2.0), **FAST)
    restart = threading.Timer(1.0, server.start)
    try:
        frames, end = [], time.monotonic() + 20
        for f in src:
            frames.append(f)
            if len(frames) == 5:
                server.stop()  # like a camera reboot: every client is dropped
                restart.start()
            if src.reconnects == 1 and len(frames) >= 15 or time.monotonic() > end:
                break
    finally:
        restart.cancel()
        src.close()
        server.stop()
    assert src.reconnects == 1 and server.sessions_started == 2
    assert [f.index for f in frames] == list(range(len(frames)))  # indices continue
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))  # and time never goes back
    gap = max(b - a for a, b in zip(pts, pts[1:], strict=False)) * Fraction(1, 90000)
    assert gap >= 0.5  # the outage shows up as a gap, not as a timestamp reset


def test_stop_during_reconnect_backoff_returns_promptly() -> None:
    server = RtspTestServer().start()
    src = UrlSource(server.url, backoff=(5.0, 8.0), max_retries=5, **FAST)
    got: list[Frame] = []
    reader = threading.Thread(target=lambda: got.extend(src), daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop()  # the reader is now waiting 5 s before its first reconnect attempt
    time.sleep(0.5)
    t0 = time.monotonic()
    src.stop()
    reader.join(timeout=4)
    assert not reader.is_alive() and time.monotonic() - t0 < 4
    src.close()
    assert got


def test_stop_during_a_stalled_read_returns_within_read_timeout() -> None:
    """The server keeps the connection but sends nothing: the read blocks until the read timeout."""
    server = RtspTestServer().start()
    src = UrlSource(server.url, open_timeout_s=3.0, read_timeout_s=1.0)
    first = threading.Event()

    def consume() -> None:
        for _ in src:
            first.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        assert first.wait(timeout=10)
        server.pause()
        time.sleep(0.3)  # the reader is now inside a blocking read
        t0 = time.monotonic()
        src.stop()
        reader.join(timeout=5)
        assert not reader.is_alive() and time.monotonic() - t0 < 3
    finally:
        src.close()
        server.stop()


def test_stalled_stream_counts_as_a_drop_and_reconnects() -> None:
    server = RtspTestServer().start()
    src = UrlSource(server.url, backoff=(0.2, 0.4), open_timeout_s=3.0, read_timeout_s=1.0)
    # RTSP hands over what it has queued at the first timeout; a stall > 2 timeouts is a drop.
    resume = threading.Timer(3.0, server.resume)
    try:
        frames, end = [], time.monotonic() + 20
        for f in src:
            frames.append(f)
            if len(frames) == 3:
                server.pause()
                resume.start()
            if src.reconnects >= 1 and len(frames) >= 8 or time.monotonic() > end:
                break
    finally:
        resume.cancel()
        src.close()
        server.stop()
    assert src.reconnects >= 1 and [f.index for f in frames] == list(range(len(frames)))


def test_gives_up_after_max_retries() -> None:
    server = RtspTestServer().start()
    src = UrlSource(server.url, backoff=(0.1, 0.2), max_retries=2, **FAST)
    it = iter(src)
    next(it)
    server.stop()
    with pytest.raises(SourceError, match="gave up after 2 reconnect attempts"):
        for _ in it:
            pass
    src.close()


def _frame(i: int, w: int, h: int) -> Frame:
    return Frame(
        i, i * 3600, Fraction(1, 90000), np.full((h, w, 3), (i * 8) % 256, np.uint8), time.perf_counter()
    )


def test_stream_sink_pushes_to_rtsp_listener() -> None:
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    received: list[tuple[int, int]] = []

    def listen() -> None:
        # FFmpeg's RTSP listen mode (ANNOUNCE/RECORD receiver). listen_timeout bounds the wait
        # (FFmpeg 8 overflows without it); a PyAV timeout here would break the handshake.
        with av.open(url, options={"rtsp_flags": "listen", "listen_timeout": "10"}) as c:
            received.extend((f.width, f.height) for f in c.decode(video=0))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    info = VideoInfo(161, 121, 25.0, Fraction(1, 90000), is_live=True)
    sink, deadline = None, time.monotonic() + 8
    while sink is None:  # the listener binds asynchronously: retry until it accepts
        try:
            sink = StreamSink(url, info)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sink:
        for i in range(30):
            sink.write(_frame(i, 161, 121))
    listener.join(timeout=15)
    assert not listener.is_alive()
    assert len(received) == 30 and set(received) == {(162, 122)}  # odd size padded to even


def test_stream_sink_udp_to_url_source() -> None:
    url = f"udp://127.0.0.1:{free_port()}"
    got: list[Frame] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with UrlSource(url, reconnect=False, open_timeout_s=8, read_timeout_s=2) as src:
                got.extend(_take(src, 10))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    info = VideoInfo(160, 120, 25.0, Fraction(1, 90000), is_live=True)
    end = time.monotonic() + 10
    with StreamSink(url, info) as sink:
        i = 0
        while len(got) < 10 and reader.is_alive() and time.monotonic() < end:
            sink.write(_frame(i, 160, 120))
            i += 1
            time.sleep(0.02)  # about real time: UDP has no flow control
    reader.join(timeout=5)
    assert not errors and len(got) == 10
    assert [f.index for f in got] == list(range(10)) and got[0].bgr_u8.shape == (120, 160, 3)


def test_http_file_is_read_losslessly_like_a_file(clip: Clip) -> None:
    """A file served over HTTP has a duration: not live, every frame, then a normal end."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(clip.path.parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}/{clip.path.name}"
            with UrlSource(url, **FAST) as src:
                assert not src.info.is_live
                frames = _take(src, 100)
        finally:
            httpd.shutdown()
    assert [f.index for f in frames] == list(range(clip.frames)) and src.reconnects == 0


def test_reconnects_forever_by_default_past_the_old_limit() -> None:
    """The default has no attempt limit: a camera down through 12+ attempts is picked up again."""
    server = RtspTestServer().start()
    src = UrlSource(server.url, backoff=(0.05, 0.1), **FAST)
    assert src.max_retries is None and src.reconnect_timeout_s is None
    restarted = threading.Event()

    def restart_after_attempts() -> None:
        end = time.monotonic() + 20
        while src.reconnect_attempts < 12 and time.monotonic() < end:
            time.sleep(0.02)
        server.start()
        restarted.set()

    frames: list[Frame] = []
    try:
        it = iter(src)
        frames.append(next(it))
        server.stop()
        threading.Thread(target=restart_after_attempts, daemon=True).start()
        end = time.monotonic() + 30
        for f in it:
            frames.append(f)
            if src.reconnects == 1 or time.monotonic() > end:
                break
    finally:
        src.close()
        server.stop()
    assert restarted.is_set() and src.reconnects == 1 and src.reconnect_attempts >= 12


def test_reconnect_timeout_bounds_the_outage(caplog: pytest.LogCaptureFixture) -> None:
    server = RtspTestServer().start()
    src = UrlSource(server.url, backoff=(0.2, 0.5), reconnect_timeout_s=1.5, **FAST)
    it = iter(src)
    next(it)
    server.stop()
    t0 = time.monotonic()
    with caplog.at_level("WARNING"), pytest.raises(SourceError, match=r"gave up after \d s of outage"):
        for _ in it:
            pass
    assert 1.4 <= time.monotonic() - t0 <= 6.0
    src.close()
    attempts = [r.getMessage() for r in caplog.records if "reconnect attempt" in r.getMessage()]
    assert attempts and all("retrying for 1.5 s" in m for m in attempts)
    assert any("reconnect attempt 2 " in m for m in attempts)  # counted


def test_a_stall_is_noticed_on_time(caplog: pytest.LogCaptureFixture) -> None:
    """No frame for read_timeout_s is a drop within about that time (it used to take twice as long)."""
    server = RtspTestServer().start()
    src = UrlSource(server.url, backoff=(0.2, 0.4), open_timeout_s=3.0, read_timeout_s=2.0)
    paused_at: list[float] = []
    noticed: list[float] = []

    class Spot(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "no data for" in record.getMessage() and not noticed:
                noticed.append(time.monotonic())
                server.resume()  # so the loop gets its next frame and ends

    handler = Spot()
    logging.getLogger("stream.media.sources").addHandler(handler)
    try:
        end = time.monotonic() + 20
        for n, _ in enumerate(src):
            if n == 3:
                server.pause()
                paused_at.append(time.monotonic())
            if noticed or time.monotonic() > end:
                break
    finally:
        logging.getLogger("stream.media.sources").removeHandler(handler)
        src.close()
        server.stop()
    assert noticed and paused_at
    assert noticed[0] - paused_at[0] <= 2.0 * 1.6


def test_udp_input_without_a_sender_says_so(port: int) -> None:
    with pytest.raises(SourceError) as e:
        UrlSource(f"udp://127.0.0.1:{port}", open_timeout_s=1.0)
    msg = str(e.value)
    assert "no data received within 1 s" in msg and "sender" in msg and "Immediate exit" not in msg


def test_stream_sink_reconnects_when_the_server_restarts() -> None:
    """An RTSP output whose receiver goes away: frames are dropped (counted) until a new one listens."""
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    sessions: list[int] = []

    def listen(max_frames: int) -> None:
        n = 0
        with av.open(url, options={"rtsp_flags": "listen", "listen_timeout": "15"}) as c:
            for _ in c.decode(video=0):
                n += 1
                if n >= max_frames:
                    break
        sessions.append(n)

    first = threading.Thread(target=listen, args=(10,), daemon=True)
    first.start()
    info = VideoInfo(160, 120, 25.0, Fraction(1, 90000), is_live=True)
    sink, deadline = None, time.monotonic() + 8
    while sink is None:
        try:
            sink = StreamSink(url, info, backoff=(0.2, 0.5), reconnect_timeout_s=20)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    second: threading.Thread | None = None
    with sink:
        i, end = 0, time.monotonic() + 30
        while time.monotonic() < end and len(sessions) < 2:
            sink.write(_frame(i, 160, 120))
            i += 1
            time.sleep(0.04)
            if sessions and second is None:  # the first receiver is gone: start the "restarted server"
                second = threading.Thread(target=listen, args=(10,), daemon=True)
                second.start()
    assert sessions == [10, 10], sessions
    assert sink.reconnects >= 1 and sink.dropped >= 1
