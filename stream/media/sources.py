"""Video sources: a file (lossless), a network URL (live, reconnecting) and a camera (live).

Every source is iterated by one capture thread and yields :class:`stream.types.Frame` with ``bgr_u8``
(H, W, 3) uint8 BGR, a monotonically increasing ``index``, ``pts`` in ``time_base`` units and
``captured_at = time.perf_counter()``. ``info`` is known once the constructor returns (open errors are
raised there as :class:`SourceError`, one line, chained to the cause).

Threading contract: ``stop()`` and ``close()`` may be called from any thread. A read in progress is
never torn down under the reader's feet (that would free FFmpeg state in use); it returns within the
source's read timeout, iteration then ends and the source releases itself. ``close()`` is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Protocol, cast

import av
import cv2
import numpy as np
from av.video.reformatter import Colorspace, Interpolation

from stream.errors import SourceError
from stream.redact import redact
from stream.types import Frame, VideoInfo

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "rtmp://", "srt://")
_FALLBACK_FPS = 30.0
_LIVE_TIME_BASE = Fraction(1, 90_000)  # the RTP video clock; fine-grained enough for any frame rate


# swscale's default yuv->bgr path darkens by ~1-2 levels; accurate rounding with full chroma
# interpolation is unbiased (measured: mean error 0.0 vs -1.2 levels) for ~+5 ms per 1080p frame.
_SWS_TO_BGR = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_UNSPECIFIED = 2  # AVCOL_SPC_UNSPECIFIED


def frame_to_bgr_u8(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 BGR from a decoded frame, honouring its colour tags.

    Untagged HD (>= 720 lines) is read as BT.709, as players do; swscale alone would assume BT.601.
    """
    src = Colorspace.ITU709 if frame.colorspace == _UNSPECIFIED and frame.height >= 720 else None
    return frame.to_ndarray(format="bgr24", interpolation=_SWS_TO_BGR, src_colorspace=src)


class _Closed(Exception):
    """Raised inside iteration when close() was requested; ends the generator quietly."""


class Source(ABC):
    """Base class: iteration, stop/close from any thread, context manager. Subclasses set ``info``."""

    info: VideoInfo

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._reading = False
        self._close_requested = False
        self._released = False
        self._frames_iter: Iterator[Frame] | None = None

    def __iter__(self) -> Iterator[Frame]:
        # One generator per source: iterating twice continues where the first loop stopped.
        if self._frames_iter is None:
            self._frames_iter = self._frames()
        return self._frames_iter

    def stop(self) -> None:
        """Ask iteration to end; a blocked read returns within the source's read timeout."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop and release the device/container (now, or when the read in progress returns)."""
        self._stop.set()
        with self._lock:
            self._close_requested = True
            if self._reading or self._released:
                return
            self._released = True
        self._release()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _busy(self) -> Iterator[None]:
        """Mark a region that touches the backend; close() waits for it to end (never yield inside)."""
        with self._lock:
            if self._close_requested:
                raise _Closed
            self._reading = True
        try:
            yield
        finally:
            with self._lock:
                self._reading = False
                release = self._close_requested and not self._released
                self._released = self._released or release
            if release:
                self._release()

    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yield decoded frames until the input ends (each kind of source reads its own way)."""

    @abstractmethod
    def _release(self) -> None:
        """Free the underlying container or capture device."""


def _stream_fps(stream: av.video.stream.VideoStream, what: str) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    log.warning("%s: frame rate unknown, assuming %g fps", what, _FALLBACK_FPS)
    return _FALLBACK_FPS


def _video_stream(container: av.container.InputContainer, what: str) -> av.video.stream.VideoStream:
    if not container.streams.video:
        container.close()
        raise SourceError(f"{what}: has no video stream")
    vs = container.streams.video[0]
    vs.thread_type = "AUTO"  # frame+slice threads: decoding is the capture thread's main cost
    return vs


_Packets = Generator[av.Packet, None, None]


def _demux(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _Packets:
    # PyAV's demux is a generator (its stubs say Iterator); it must be closed, not only dropped.
    return cast("_Packets", container.demux(stream))


def _close_container(container: av.container.InputContainer, packets: _Packets | None) -> None:
    """Close the demuxer, then its container: a demuxer left alive past its container's close leaks 4-7 KB
    (measured), once per open of a file or per reconnect of a stream, which adds up over days."""
    if packets is not None:
        packets.close()
    container.close()


def _first_rotation(packets: Iterator[av.Packet]) -> float:
    for packet in packets:
        for f in packet.decode():
            return float(f.rotation)
    return 0.0


def _file_rotation(path: str) -> int:
    """The display rotation of a file's first video frame, counter-clockwise degrees in {0, 90, 180, 270}.

    Phones record sideways and put the rotation in the track header's display matrix; FFmpeg exposes
    it on each decoded frame (``frame.rotation``), so it is read from the first frame of a separate
    open (the main container must not be consumed before iteration starts).
    """
    try:
        with av.open(path) as c:
            if not c.streams.video:
                return 0
            packets = _demux(c, c.streams.video[0])
            try:
                rotation = _first_rotation(packets)
            finally:
                packets.close()  # before the container's close (see _close_container)
    except (av.FFmpegError, OSError) as e:
        log.warning("%s: cannot read the rotation (%s); assuming upright", path, e)
        return 0
    return round(rotation / 90) * 90 % 360


class FileSource(Source):
    """Decode every frame of a video file, in order, with the file's own pts and time base.

    Rotation metadata is applied: frames come out upright (``info`` has the upright size), so faces
    are detected the right way up and the output needs no rotation tag. ``realtime=True`` paces
    frames to their timestamps (a file sent to a stream output must not play fast-forward).
    """

    def __init__(self, path: str | Path, *, realtime: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.realtime = realtime
        self._packets: _Packets | None = None
        what = str(self.path)
        if self.path.is_dir():
            raise SourceError(f"{what}: is a directory, not a video file")
        if not self.path.exists():
            raise SourceError(f"{what}: no such file")
        try:
            self._container = av.open(what)
        except av.InvalidDataError as e:
            raise SourceError(f"{what}: not a readable video (unknown format or corrupt header)") from e
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"{what}: cannot open: {getattr(e, 'strerror', None) or e}") from e
        fmt = self._container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):
            self._container.close()
            raise SourceError(f"{what}: is a still image ({fmt}), not a video")
        self._vs = _video_stream(self._container, what)
        cc = self._vs.codec_context
        fps = _stream_fps(self._vs, what)
        tb = self._vs.time_base
        if tb is None:
            tb = Fraction(1, 90_000)
            log.warning("%s: stream has no time base, using %s", what, tb)
        self.rotation = _file_rotation(what)
        width, height = (cc.height, cc.width) if self.rotation in (90, 270) else (cc.width, cc.height)
        if self.rotation:
            log.info("%s: rotated %d degrees in its metadata; frames are turned upright", what, self.rotation)
        self.info = VideoInfo(
            width=width,
            height=height,
            fps=fps,
            time_base=Fraction(tb),
            frame_count=self._vs.frames or None,
            has_audio=bool(self._container.streams.audio),
            is_live=False,
        )

    def _frames(self) -> Iterator[Frame]:
        what, info = str(self.path), self.info
        # Index-based pts for frames without one: one frame duration in time_base units.
        step = max(1, round(1 / (info.fps * info.time_base)))
        packets = self._packets = _demux(self._container, self._vs)
        index = 0
        missing_pts_logged = False
        turns = self.rotation // 90  # np.rot90 turns counter-clockwise, as the display matrix does
        pace: tuple[float, int] | None = None  # (wall clock, pts) of the first frame when realtime
        try:
            while not self._stop.is_set():
                with self._busy():
                    try:
                        packet = next(packets, None)
                    except av.FFmpegError as e:
                        log.warning("%s: unreadable data after %d frames, stopping: %s", what, index, e)
                        break
                    if packet is None:
                        break
                    try:
                        decoded = packet.decode()
                    except av.FFmpegError as e:
                        log.warning("%s: skipping a corrupt packet after frame %d: %s", what, index, e)
                        continue
                for f in decoded:
                    pts = f.pts
                    if pts is None:
                        if not missing_pts_logged:
                            log.warning("%s: frames without pts, using index * %d", what, step)
                            missing_pts_logged = True
                        pts = index * step
                    if self.realtime:
                        pace = pace or (time.perf_counter(), pts)
                        due = pace[0] + float((pts - pace[1]) * info.time_base)
                        if self._stop.wait(max(0.0, due - time.perf_counter())):
                            return
                    bgr = frame_to_bgr_u8(f)
                    if turns:
                        bgr = np.ascontiguousarray(np.rot90(bgr, turns))
                    yield Frame(
                        index=index,
                        pts=pts,
                        time_base=info.time_base,
                        bgr_u8=bgr,
                        captured_at=time.perf_counter(),
                    )
                    index += 1
            if self._stop.is_set():
                return  # stopped early on purpose: no completeness check
            if info.frame_count is not None and index < info.frame_count:
                log.warning(
                    "%s: ended after %d of %d frames (file truncated or corrupt?)",
                    what,
                    index,
                    info.frame_count,
                )
        except _Closed:
            return

    def _release(self) -> None:
        _close_container(self._container, self._packets)


class _LiveClock:
    """Monotonic pts for live input across reconnects (a new session restarts its timestamps).

    Within a session the stream's own pts spacing is kept; across a gap the wall-clock gap is inserted,
    so a recording of a flaky camera keeps real timing and a muxer never sees pts go backwards.
    """

    def __init__(self, time_base: Fraction) -> None:
        self.time_base = time_base
        self._last: int | None = None
        self._last_wall = 0.0
        self._origin: tuple[int, int] | None = None  # (first raw pts of the session, its output pts)

    def new_session(self) -> None:
        self._origin = None

    def pts(self, raw: int | None, raw_tb: Fraction | None, wall: float) -> int:
        tb = self.time_base
        if self._last is None:
            out = 0
            if raw is not None and raw_tb is not None:
                self._origin = (raw, 0)
        elif raw is None or raw_tb is None:
            out = self._last + max(1, round((wall - self._last_wall) / tb))
        else:
            if self._origin is None:
                self._origin = (raw, self._last + max(1, round((wall - self._last_wall) / tb)))
            out = self._origin[1] + round((raw - self._origin[0]) * raw_tb / tb)
        if self._last is not None and out <= self._last:
            out = self._last + 1
        self._last, self._last_wall = out, wall
        return out


def _url_options(url: str, read_timeout_s: float) -> dict[str, str]:
    """Low-latency demuxer options; socket timeouts are in microseconds (FFmpeg 8 names)."""
    timeout_us = str(int(read_timeout_s * 1_000_000))
    opts = {
        "flags": "low_delay",
        "probesize": "262144",
        "analyzeduration": "500000",
        "max_delay": "500000",
    }
    if not url.lower().startswith(("http://", "https://")):
        # Live protocols: probed packets are dropped instead of replayed as a stale burst; the cost
        # is waiting for the next keyframe after open/reconnect (one GOP), the gain honest latency
        # from frame one. Not over HTTP, which often serves a file whose first GOP would be lost.
        opts["fflags"] = "nobuffer"
    if url.lower().startswith(("rtsp://", "rtsps://")):
        # TCP: no packet loss on Wi-Fi; "timeout" is the RTSP socket I/O timeout (was "stimeout").
        opts |= {"rtsp_transport": "tcp", "timeout": timeout_us}
    else:
        opts["rw_timeout"] = timeout_us  # generic AVIO read/write timeout for http/udp/rtmp/srt
    return opts


def _open_error(url: str, e: BaseException, open_timeout_s: float) -> str:
    """One line for a failed open; FFmpeg's "Immediate exit requested" means our open timeout fired."""
    if isinstance(e, av.ExitError):
        if url.lower().startswith("udp://"):
            return (
                f"{redact(url)}: no data received within {open_timeout_s:g} s "
                "(UDP has no connection: is a sender streaming to this address and port?)"
            )
        return f"{redact(url)}: no answer within {open_timeout_s:g} s"
    return f"{redact(url)}: cannot open stream: {redact(str(getattr(e, 'strerror', None) or e))}"


class UrlSource(Source):
    """RTSP/HTTP/UDP/RTMP/SRT input through PyAV; reconnects with exponential backoff when it drops.

    Frame indices keep increasing and pts stay monotonic across reconnects. Opening fails fast (no
    retry) within ``open_timeout_s``. A stall is noticed by wall time: no frame for ``read_timeout_s``
    is a drop (FFmpeg's own read timeout fires every ``read_timeout_s / 2`` so the check runs on time
    even when a timed-out RTSP read first hands over what it had queued). ``backoff`` is (first, max)
    seconds, doubling per failed attempt. Reconnecting goes on for ``reconnect_timeout_s`` of outage
    (None: forever, the default for a live input) and at most ``max_retries`` attempts (None: no
    limit); then iteration raises :class:`SourceError`. Every attempt is logged with its count.
    """

    def __init__(
        self,
        url: str,
        *,
        reconnect: bool = True,
        max_retries: int | None = None,
        reconnect_timeout_s: float | None = None,
        backoff: tuple[float, float] = (0.5, 8.0),
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
    ) -> None:
        super().__init__()
        self._packets: _Packets | None = None
        if not (0 < backoff[0] <= backoff[1]):
            raise ValueError(f"backoff must be (first, max) with 0 < first <= max, got {backoff}")
        if (max_retries is not None and max_retries < 0) or open_timeout_s <= 0 or read_timeout_s <= 0:
            raise ValueError(
                f"need max_retries >= 0 (or None) and positive timeouts, got {max_retries}, "
                f"{open_timeout_s}, {read_timeout_s}"
            )
        if reconnect_timeout_s is not None and reconnect_timeout_s < 0:
            raise ValueError(f"reconnect_timeout_s must be >= 0 or None (forever), got {reconnect_timeout_s}")
        self.url, self.reconnect, self.max_retries, self.backoff = url, reconnect, max_retries, backoff
        self.reconnect_timeout_s = reconnect_timeout_s
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self.reconnects = 0  # successful reconnects, for monitoring
        self.reconnect_attempts = 0  # all attempts, over the whole run
        self._container, self._vs = self._open()
        finite = self._container.duration is not None and url.lower().startswith(("http://", "https://"))
        self.info = VideoInfo(
            width=self._vs.codec_context.width,
            height=self._vs.codec_context.height,
            fps=_stream_fps(self._vs, redact(url)),
            time_base=_LIVE_TIME_BASE,
            has_audio=bool(self._container.streams.audio),
            # A file served over HTTP has a duration: read it losslessly like a file.
            is_live=not finite,
        )
        self._clock = _LiveClock(_LIVE_TIME_BASE)

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden: the only form that goes into logs and errors."""
        return redact(self.url)

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        poll_s = max(0.2, self.read_timeout_s / 2)
        try:
            container = av.open(
                self.url,
                options=_url_options(self.url, poll_s),
                timeout=(self.open_timeout_s, poll_s),
            )
        except (av.FFmpegError, OSError) as e:
            raise SourceError(_open_error(self.url, e, self.open_timeout_s)) from e
        return container, _video_stream(container, self.safe_url)

    def _frames(self) -> Iterator[Frame]:
        index = 0
        resize_logged = False
        w, h = self.info.width, self.info.height
        try:
            while not self._stop.is_set():
                packets = self._restart_demux()
                reason = "end of stream"
                last_frame = time.monotonic()
                while not self._stop.is_set():
                    with self._busy():
                        try:
                            packet = next(packets, None)
                        except av.ExitError:  # our read-timeout interrupt fired
                            stalled = time.monotonic() - last_frame
                            if stalled < self.read_timeout_s:
                                packets = self._restart_demux()
                                continue
                            reason = f"no data for {stalled:.1f} s"
                            packet = None
                        except av.FFmpegError as e:
                            reason = f"read error: {redact(str(e.strerror or e))}"
                            packet = None
                        if packet is None:
                            break
                        try:
                            decoded = packet.decode()
                        except av.FFmpegError:
                            continue  # a damaged packet (common right after a reconnect)
                    for f in decoded:
                        now = time.perf_counter()
                        last_frame = time.monotonic()
                        bgr = frame_to_bgr_u8(f)
                        if bgr.shape[:2] != (h, w):
                            if not resize_logged:
                                log.warning(
                                    "%s: size changed to %dx%d, resizing to %dx%d",
                                    self.safe_url,
                                    f.width,
                                    f.height,
                                    w,
                                    h,
                                )
                                resize_logged = True
                            bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)
                        pts = self._clock.pts(f.pts, f.time_base, now)
                        yield Frame(index, pts, self.info.time_base, bgr, captured_at=now)
                        index += 1
                if self._stop.is_set():
                    return
                if not self.info.is_live and reason == "end of stream":
                    return
                if not self.reconnect:
                    if reason == "end of stream":
                        log.info("%s: stream ended", self.safe_url)
                        return
                    raise SourceError(f"{self.safe_url}: {reason}")
                self._reconnect(reason)
        except _Closed:
            return

    def _restart_demux(self) -> _Packets:
        """A demuxer of the current container; the previous one is closed first (see _close_container)."""
        if self._packets is not None:
            self._packets.close()
        self._packets = _demux(self._container, self._vs)
        return self._packets

    def _reconnect(self, reason: str) -> None:
        # Said before closing: closing an RTSP session sends TEARDOWN, which may itself wait.
        log.warning("%s: %s; reconnecting", self.safe_url, reason)
        with self._busy():
            _close_container(self._container, self._packets)
            self._packets = None
        first, most = self.backoff
        last_error = reason
        began = time.monotonic()
        attempt = 0
        limit = "forever" if self.reconnect_timeout_s is None else f"for {self.reconnect_timeout_s:g} s"
        while True:
            outage = time.monotonic() - began
            if self.max_retries is not None and attempt >= self.max_retries:
                raise SourceError(
                    f"{self.safe_url}: gave up after {attempt} reconnect attempts ({outage:.0f} s): {last_error}"
                )
            if self.reconnect_timeout_s is not None and outage >= self.reconnect_timeout_s:
                raise SourceError(
                    f"{self.safe_url}: gave up after {outage:.0f} s of outage "
                    f"(--reconnect-timeout {self.reconnect_timeout_s:g}), {attempt} attempts: {last_error}"
                )
            attempt += 1
            self.reconnect_attempts += 1
            delay = min(most, first * 2 ** min(attempt - 1, 30))
            if self.reconnect_timeout_s is not None:
                delay = max(0.0, min(delay, self.reconnect_timeout_s - outage))
            log.warning(
                "%s: reconnect attempt %d in %.1f s (down %.0f s, retrying %s)",
                self.safe_url,
                attempt,
                delay,
                outage,
                limit,
            )
            if self._stop.wait(delay):
                raise _Closed
            try:
                with self._busy():
                    self._container, self._vs = self._open()
            except SourceError as e:
                last_error = str(e)
                continue
            self._clock.new_session()
            self.reconnects += 1
            log.info(
                "%s: reconnected after %d attempt(s), %.1f s down",
                self.safe_url,
                attempt,
                time.monotonic() - began,
            )
            return

    def _release(self) -> None:
        _close_container(self._container, self._packets)


class CaptureLike(Protocol):
    """The subset of ``cv2.VideoCapture`` a camera source uses (tests pass a fake)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - cv2's spelling
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop_id: int) -> float: ...
    def set(self, prop_id: int, value: float) -> bool: ...
    def release(self) -> None: ...


def open_cv2_capture(index: int) -> CaptureLike:
    """The real backend: OpenCV's default camera API for this OS (V4L2 on Linux)."""
    return cv2.VideoCapture(index)


class CameraSource(Source):
    """A local camera through OpenCV; negotiates ``fourcc`` (MJPG for high frame rates on USB).

    Cameras often report a frame rate they do not deliver, so the constructor reads ``measure_frames``
    frames (discarded: stale by the time the pipeline starts) and reports the measured rate in
    ``info.fps``. pts are capture times in 1/90000 s since the first delivered frame.
    """

    def __init__(
        self,
        index: int,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = "MJPG",
        *,
        measure_frames: int = 15,
        read_timeout_s: float = 5.0,
        capture_factory: Callable[[int], CaptureLike] = open_cv2_capture,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__()
        if measure_frames < 2:
            raise ValueError(f"measure_frames must be >= 2, got {measure_frames}")
        self.index, self._now = index, clock
        cap = capture_factory(index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {index} could not be opened")
        self._cap = cap
        if fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*fourcc))
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, width),
            (cv2.CAP_PROP_FRAME_HEIGHT, height),
            (cv2.CAP_PROP_FPS, fps),
        ):
            if value is not None:
                cap.set(prop, float(value))
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_timeout_s * 1000)  # V4L2 honours it; others ignore
        if fourcc:
            got = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
            if got != fourcc:
                log.info("camera %d: %s not negotiated, camera delivers %r", index, fourcc, got)
        stamps, shape = [], None
        for _ in range(measure_frames):
            ok, img = cap.read()
            if not ok or img is None:
                break
            stamps.append(self._now())
            shape = img.shape
        if shape is None:
            self._cap.release()
            raise SourceError(f"camera {index} opened but delivered no frame")
        reported = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # The first read includes the camera's start-up; time only the steady state after it.
        if len(stamps) >= 3 and stamps[-1] > stamps[1]:
            measured = (len(stamps) - 2) / (stamps[-1] - stamps[1])
            if reported > 0 and abs(measured - reported) > 0.1 * reported:
                log.info(
                    "camera %d: reports %.3g fps, measured %.3g fps; using measured",
                    index,
                    reported,
                    measured,
                )
        else:
            measured = reported if reported > 0 else _FALLBACK_FPS
            log.warning("camera %d: could not measure the frame rate, using %.3g fps", index, measured)
        self.measured_fps = measured
        self.info = VideoInfo(
            width=shape[1], height=shape[0], fps=measured, time_base=_LIVE_TIME_BASE, is_live=True
        )
        self._clock = _LiveClock(_LIVE_TIME_BASE)

    def _frames(self) -> Iterator[Frame]:
        index, failures = 0, 0
        try:
            while not self._stop.is_set():
                with self._busy():
                    ok, img = self._cap.read()
                now = self._now()
                if not ok or img is None:
                    failures += 1
                    if failures >= 3:
                        raise SourceError(f"camera {self.index} stopped delivering frames")
                    continue
                failures = 0
                if img.ndim == 2:
                    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
                pts = self._clock.pts(None, None, now)
                yield Frame(index, pts, self.info.time_base, np.ascontiguousarray(img), captured_at=now)
                index += 1
        except _Closed:
            return

    def _release(self) -> None:
        self._cap.release()


def open_source(
    spec: str | int, *, realtime: bool = False, reconnect_timeout_s: float | None = None
) -> Source:
    """``0`` / ``"0"`` -> camera, a URL (rtsp, rtsps, http(s), udp, rtmp, srt) -> stream, else a file.

    Liveness comes from the source kind (``source.info.is_live``), never from the argument's type.
    ``realtime`` paces a file to its timestamps; ``reconnect_timeout_s`` bounds a URL's outage
    (None: reconnect forever).
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return CameraSource(int(spec))
    if spec.lower().startswith(URL_SCHEMES):
        return UrlSource(spec, reconnect_timeout_s=reconnect_timeout_s)
    return FileSource(spec, realtime=realtime)
