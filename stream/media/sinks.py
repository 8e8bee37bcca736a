"""Video sinks: an H.264 file (with the input's audio copied through), a network stream, a window, a counter.

A sink is written by one render thread: ``write(frame)`` takes a :class:`stream.types.Frame` whose
``bgr_u8`` is (H, W, 3) uint8 BGR of the size in ``info``; ``close()`` is idempotent. Encoders are
flushed explicitly in ``close()``, so closing in a ``finally`` (Ctrl-C, a failing stage) leaves a
playable file holding every frame written so far.

Odd frame sizes: H.264 in yuv420p (the format every player and browser decodes) stores chroma at half
resolution and its cropping fields count in 2-pixel units, so a 161x121 picture cannot be signalled.
With ``pix_fmt="yuv420p"`` (default) odd sizes are padded to even by repeating the last column/row
(no input pixel is lost; logged once). ``pix_fmt="yuv444p"`` keeps the exact size (High 4:4:4
profile: fine for ffmpeg/VLC/mpv, not for browsers or most hardware decoders).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, cast

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from stream.errors import SinkError
from stream.media.audio import AudioTrack
from stream.media.fidelity import Fidelity, FidelityMeter
from stream.redact import redact
from stream.types import Frame, VideoInfo

log = logging.getLogger(__name__)

_SUBSAMPLED = ("yuv420p", "yuvj420p", "nv12", "yuv422p")  # need even width (and height for 4:2:0)
DISPLAY_HINT = "display needs a GUI build of OpenCV (opencv-contrib-python, not -headless)"
NO_SCREEN_HINT = (
    "display needs a screen: neither DISPLAY nor WAYLAND_DISPLAY is set (write to --output instead)"
)


def screen_available(environ: Mapping[str, str] | None = None) -> bool:
    """False on Linux without an X11 or Wayland session, where Qt's highgui aborts the whole process
    ("could not connect to display") instead of raising a cv2.error we could catch."""
    env = os.environ if environ is None else environ
    return not sys.platform.startswith("linux") or bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


class Sink(ABC):
    """Base class: context manager, frame counter, monotonic-pts helper."""

    def __init__(self, info: VideoInfo | None = None) -> None:
        self.info = info
        self.frames_written = 0
        self._closed = False
        self._last_pts: int | None = None
        self._pts_fixes = 0

    @abstractmethod
    def write(self, frame: Frame) -> None:
        """Write one frame (each kind of sink encodes or shows it its own way)."""

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, frame: Frame) -> None:
        if self._closed:
            raise SinkError(f"{type(self).__name__}: write after close")
        info = self.info
        if info is not None and frame.bgr_u8.shape[:2] != (info.height, info.width):
            raise ValueError(
                f"frame must be {info.width}x{info.height} (the sink's info), "
                f"got {frame.bgr_u8.shape[1]}x{frame.bgr_u8.shape[0]}"
            )

    def _pts(self, frame: Frame, time_base: Fraction, fps: float) -> int:
        """The frame's pts in ``time_base``, forced strictly increasing (encoders reject repeats)."""
        if frame.pts is None:
            pts = round(frame.index / (fps * time_base))
        elif frame.time_base == time_base:
            pts = frame.pts
        else:
            pts = round(frame.pts * frame.time_base / time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            if self._pts_fixes == 0:
                log.warning(
                    "%s: non-increasing pts %d after %d, bumping", type(self).__name__, pts, self._last_pts
                )
            self._pts_fixes += 1
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts


def _even_size(info: VideoInfo, pix_fmt: str, what: str) -> tuple[int, int]:
    w, h = info.width, info.height
    if pix_fmt in _SUBSAMPLED and (w % 2 or h % 2):
        w2, h2 = w + w % 2, h + h % 2
        log.warning(
            "%s: %dx%d is odd; %s needs even sizes, encoding %dx%d with the last column/row repeated "
            "(pix_fmt='yuv444p' keeps the exact size)",
            what,
            w,
            h,
            pix_fmt,
            w2,
            h2,
        )
        return w2, h2
    return w, h


# Accurate rounding removes swscale's ~1-level darkening of bgr->yuv; output is BT.709 limited range,
# and the stream is tagged so, so every player decodes it with the matrix it was encoded with.
_SWS_TO_YUV = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
_BT709 = 1  # AVCOL_SPC_BT709 == AVCOL_PRI_BT709 == AVCOL_TRC_BT709


def _to_video_frame(bgr_u8: np.ndarray, size: tuple[int, int], pix_fmt: str) -> av.VideoFrame:
    h, w = bgr_u8.shape[:2]
    if (w, h) != size:
        bgr_u8 = np.pad(bgr_u8, ((0, size[1] - h), (0, size[0] - w), (0, 0)), mode="edge")
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr_u8), format="bgr24")
    return vf.reformat(
        format=pix_fmt,
        interpolation=_SWS_TO_YUV,
        dst_colorspace=Colorspace.ITU709,
        dst_color_range=ColorRange.MPEG,
    )


def _add_h264_stream(
    container: av.container.OutputContainer,
    info: VideoInfo,
    size: tuple[int, int],
    codec: str,
    pix_fmt: str,
    options: dict[str, str],
) -> av.video.stream.VideoStream:
    vs = cast(
        av.video.stream.VideoStream,
        container.add_stream(codec, rate=Fraction(info.fps).limit_denominator(1001), options=options),
    )
    vs.width, vs.height = size
    vs.pix_fmt = pix_fmt
    cc = vs.codec_context
    cc.colorspace = cc.color_primaries = cc.color_trc = _BT709
    cc.color_range = int(ColorRange.MPEG)
    # Stream and encoder in the input's time base: written pts are the input's pts, unscaled.
    vs.time_base = info.time_base
    vs.codec_context.time_base = info.time_base
    return vs


# Visually lossless for x264 (crf 23, its default, changed untouched pixels by ~36 dB PSNR).
DEFAULT_CRF = 16
# Fragmented MP4: a moof+mdat pair about every second, flushed as written, so a SIGKILL, a power loss
# or a full disk keeps everything up to the last fragment (a plain MP4's index is written at the end:
# without it the file is unreadable). delay_moov writes the header with the first fragment, once the
# encoder's B-frame delay is known, so the first pts stays 0 as in the input. Matroska (.mkv) is
# crash-safe by design (clusters) and needs no option.
FRAGMENTED_MP4: Final = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof+delay_moov",
    "frag_duration": "1000000",
    "flush_packets": "1",
}
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def _write_error(what: str, action: str, e: BaseException) -> SinkError:
    code = getattr(e, "errno", None)
    if code in _DISK_FULL:
        why = "disk full" if code != errno.EFBIG else "file size limit reached"
        return SinkError(
            f"{what}: {action} failed: {why} ({os.strerror(code)}); the file keeps what was written "
            "before, playable"
        )
    return SinkError(f"{what}: {action} failed: {getattr(e, 'strerror', None) or e}")


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SinkError(f"{path}: cannot create the output folder {path.parent}: {e.strerror or e}") from e


class FileSink(Sink):
    """H.264 mp4/mkv/mov at the input's size, frame rate and timestamps; audio from ``audio_from``.

    ``.mp4``/``.mov`` are written fragmented by default (``fragmented=True``, see FRAGMENTED_MP4) so
    an abrupt end keeps what was written. Audio is copied when the container takes its codec, else
    transcoded to AAC, else dropped, said at start (:mod:`stream.media.audio`); it is interleaved as
    video advances. ``fidelity_every`` > 0: the sink decodes its own output and measures PSNR outside
    the faces on the frames that carry a reference (:mod:`stream.media.fidelity`); 0 turns it off.
    """

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo,
        *,
        audio_from: str | Path | None = None,
        codec: str = "libx264",
        crf: int = DEFAULT_CRF,
        preset: str = "veryfast",
        pix_fmt: str = "yuv420p",
        fragmented: bool = True,
        fidelity: bool = True,
    ) -> None:
        super().__init__(info)
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51 (0 lossless, {DEFAULT_CRF} default), got {crf}")
        self.path = Path(path)
        what = str(self.path)
        self._size = _even_size(info, pix_fmt, what)
        self._pix_fmt = pix_fmt
        self._audio: AudioTrack | None = None
        self._meter: FidelityMeter | None = None
        if self.path.is_dir():
            raise SinkError(f"{what}: cannot create output file: is a directory")
        _make_parent(self.path)
        suffix = self.path.suffix.lower()
        self._container_closed = False
        self._fragmented = fragmented and suffix in (".mp4", ".mov", ".m4v")
        self._good_size = 0
        container_opts = dict(FRAGMENTED_MP4) if self._fragmented else {}
        try:
            self._container = av.open(what, "w", options=container_opts)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SinkError(f"{what}: cannot create output file: {getattr(e, 'strerror', None) or e}") from e
        try:
            opts = {"crf": str(crf), "preset": preset} if codec.startswith("libx26") else {}
            self._vs = _add_h264_stream(self._container, info, self._size, codec, pix_fmt, opts)
            if audio_from is not None:
                self._audio = AudioTrack.open(Path(audio_from), self._container, what)
            self._container.start_encoding()  # header now: a bad codec/format fails here, not mid-run
        except (av.FFmpegError, OSError, ValueError) as e:
            self._abort()
            raise SinkError(f"{what}: cannot start encoding ({codec}, {pix_fmt}): {e}") from e
        if fidelity:
            self._meter = FidelityMeter(
                self._vs.codec_context.codec.canonical_name, self._vs.codec_context.extradata
            )

    @property
    def fidelity(self) -> Fidelity | None:
        """PSNR outside the faces so far (None when not measured)."""
        return None if self._meter is None else self._meter.result

    @property
    def audio_mode(self) -> str:
        """``"copy"``, ``"aac"`` or ``"none"``."""
        return "none" if self._audio is None else self._audio.mode

    def write(self, frame: Frame) -> None:
        self._check(frame)
        info = self.info
        assert info is not None
        vf = _to_video_frame(frame.bgr_u8, self._size, self._pix_fmt)
        vf.pts = self._pts(frame, info.time_base, info.fps)
        vf.time_base = info.time_base
        if self._meter is not None and frame.reference_bgr_u8 is not None:
            self._meter.expect(vf.pts, frame.bgr_u8, frame.reference_bgr_u8)
        try:
            self._mux_video(self._vs.encode(vf))
            if self._audio is not None:
                self._audio.mux_until((vf.pts * info.time_base) + Fraction(1) / Fraction(info.fps))
        except (av.FFmpegError, OSError) as e:
            self._keep_complete_fragments(e)
            raise _write_error(str(self.path), f"writing frame {frame.index}", e) from e
        self.frames_written += 1
        self._note_size()

    def _note_size(self) -> None:
        # The muxer writes a fragment (moof + mdat) in one go once it is complete, flushed at once
        # (flush_packets): the size after a successful write always ends on a fragment boundary.
        if self._fragmented:
            try:
                self._good_size = os.stat(self.path).st_size
            except OSError:
                pass

    def _keep_complete_fragments(self, e: BaseException) -> None:
        """After a failed write (disk full), cut the half-written fragment so every player reads the file."""
        if not self._fragmented or getattr(e, "errno", None) not in _DISK_FULL:
            return
        self._abort()
        try:
            os.truncate(self.path, self._good_size)
        except OSError as err:
            log.warning("%s: could not cut the half-written fragment: %s", self.path, err)
            return
        log.warning(
            "%s: cut to %d bytes, the last complete fragment (%d frames)",
            self.path,
            self._good_size,
            self.frames_written,
        )

    def _mux_video(self, packets: Sequence[av.Packet]) -> None:
        for packet in packets:
            if self._meter is not None:
                self._meter.feed(packet)
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoder, copy audio up to the end of the last frame, write the trailer."""
        if self._closed:
            return
        self._closed = True
        error: BaseException | None = None
        try:
            self._mux_video(self._vs.encode(None))
            if self._meter is not None:
                self._meter.flush()
            if self._audio is not None and self._last_pts is not None and self.info is not None:
                end = self._last_pts * self.info.time_base + Fraction(1) / Fraction(self.info.fps)
                self._audio.mux_until(end)
        except (av.FFmpegError, OSError) as e:
            error = e
        finally:
            error = self._abort() or error
        if error is not None:
            self._keep_complete_fragments(error)
            raise _write_error(str(self.path), "closing", error) from error

    def _abort(self) -> BaseException | None:
        self._closed = True
        err = None
        if self._container_closed:
            return None
        self._container_closed = True
        try:
            self._container.close()
        except (av.FFmpegError, OSError) as e:
            err = e
        if self._audio is not None:
            self._audio.close()
        return err


def _stream_format(url: str) -> tuple[str, str, dict[str, str]]:
    """(url, muxer, options) for a network output."""
    low = url.lower()
    if low.startswith(("rtsp://", "rtsps://")):
        return url, "rtsp", {"rtsp_transport": "tcp"}
    if low.startswith(("udp://", "srt://")):
        if low.startswith("udp://") and "pkt_size=" not in low:
            # 7 TS packets per datagram: the MPEG-TS over IP convention, never fragmented.
            url += ("&" if "?" in url else "?") + "pkt_size=1316"
        return url, "mpegts", {}
    if low.startswith("rtmp://"):
        return url, "flv", {}
    raise ValueError(f"stream output must be rtsp://, rtsps://, udp://, srt:// or rtmp://, got {url!r}")


class StreamSink(Sink):
    """Low-latency H.264 (x264 ``tune=zerolatency``, no B-frames, a keyframe every second) to a URL.

    RTSP is pushed with ANNOUNCE/RECORD over TCP to a server (or an FFmpeg listener), UDP/SRT carry
    MPEG-TS, RTMP carries FLV. Connecting happens in the constructor, bounded by ``timeout_s``.
    When sending fails (the server restarted), the sink reconnects: frames written while it is down
    are dropped and counted (``dropped``; live video must not queue up), attempts are spaced by
    ``backoff`` (first, max) seconds, doubling, each one logged; after ``reconnect_timeout_s`` of
    outage (None: forever) ``write`` raises :class:`SinkError`. ``reconnect=False`` raises at once.
    """

    def __init__(
        self,
        url: str,
        info: VideoInfo,
        *,
        crf: int = 23,
        preset: str = "veryfast",
        timeout_s: float = 5.0,
        reconnect: bool = True,
        reconnect_timeout_s: float | None = None,
        backoff: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        super().__init__(info)
        if not (0 < backoff[0] <= backoff[1]):
            raise ValueError(f"backoff must be (first, max) with 0 < first <= max, got {backoff}")
        self.url, self.safe_url = url, redact(url)
        self.reconnect, self.reconnect_timeout_s, self.backoff = reconnect, reconnect_timeout_s, backoff
        self._crf, self._preset, self._timeout_s = crf, preset, timeout_s
        self._size = _even_size(info, "yuv420p", self.safe_url)
        self.dropped = 0
        self.reconnects = 0
        self._down_since: float | None = None
        self._next_attempt = 0.0
        self._attempts = 0
        self._connect()

    def _connect(self) -> None:
        info = self.info
        assert info is not None
        out_url, fmt, fmt_opts = _stream_format(self.url)
        if fmt == "rtsp":
            fmt_opts["timeout"] = str(int(self._timeout_s * 1_000_000))  # socket I/O timeout, microseconds
        container = None
        try:
            container = av.open(out_url, "w", format=fmt, options=fmt_opts, timeout=self._timeout_s)
            gop = str(max(1, round(info.fps)))
            opts = {"crf": str(self._crf), "preset": self._preset, "tune": "zerolatency", "g": gop}
            vs = _add_h264_stream(container, info, self._size, "libx264", "yuv420p", opts)
            container.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as e:
            if container is not None:
                _close_quietly(container)
            why = redact(str(getattr(e, "strerror", None) or e))
            raise SinkError(f"{self.safe_url}: cannot open {fmt} output: {why}") from e
        self._container: Any = container
        self._vs = vs

    def write(self, frame: Frame) -> None:
        self._check(frame)
        info = self.info
        assert info is not None
        pts = self._pts(frame, info.time_base, info.fps)
        if self._down_since is not None and not self._try_reconnect():
            self.dropped += 1
            return
        vf = _to_video_frame(frame.bgr_u8, self._size, "yuv420p")
        vf.pts, vf.time_base = pts, info.time_base
        try:
            for packet in self._vs.encode(vf):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            why = redact(str(getattr(e, "strerror", None) or e))
            if not self.reconnect:
                raise SinkError(f"{self.safe_url}: sending frame {frame.index} failed: {why}") from e
            log.warning("%s: sending frame %d failed (%s); reconnecting", self.safe_url, frame.index, why)
            _close_quietly(self._container)
            self._down_since, self._next_attempt, self._attempts = time.monotonic(), 0.0, 0
            self.dropped += 1
            return
        self.frames_written += 1

    def _try_reconnect(self) -> bool:
        """One attempt when its backoff is due; True once connected. Raises after the outage limit."""
        assert self._down_since is not None
        now = time.monotonic()
        outage = now - self._down_since
        if self.reconnect_timeout_s is not None and outage >= self.reconnect_timeout_s:
            raise SinkError(
                f"{self.safe_url}: gave up after {outage:.0f} s of outage "
                f"(--reconnect-timeout {self.reconnect_timeout_s:g}), {self._attempts} attempts, "
                f"{self.dropped} frames dropped"
            )
        if now < self._next_attempt:
            return False
        self._attempts += 1
        try:
            self._connect()
        except SinkError as e:
            first, most = self.backoff
            delay = min(most, first * 2 ** min(self._attempts - 1, 30))
            self._next_attempt = time.monotonic() + delay
            log.warning(
                "%s: reconnect attempt %d failed (%s); next in %.1f s, down %.0f s, %d frames dropped",
                self.safe_url,
                self._attempts,
                e.__cause__ or e,
                delay,
                outage,
                self.dropped,
            )
            return False
        self.reconnects += 1
        log.info(
            "%s: output reconnected after %d attempt(s), %.1f s down, %d frames dropped",
            self.safe_url,
            self._attempts,
            outage,
            self.dropped,
        )
        self._down_since = None
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._down_since is not None:
            return  # the container was closed when the connection was lost
        try:
            for packet in self._vs.encode(None):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            log.warning("%s: flushing the stream failed: %s", self.safe_url, redact(str(e)))
        finally:
            _close_quietly(self._container)


def _close_quietly(container: Any) -> None:
    try:
        container.close()
    except (av.FFmpegError, OSError) as e:
        log.warning(
            "closing %s failed: %s", redact(str(getattr(container, "name", "output"))), redact(str(e))
        )


def opencv_has_gui() -> bool:
    """False for opencv-python-headless, whose build information lists ``GUI: NONE``."""
    info = cv2.getBuildInformation()
    _, _, rest = info.partition("GUI:")
    return bool(rest) and not rest.split("\n", 1)[0].strip().upper().startswith("NONE")


class DisplaySink(Sink):
    """Show frames in an OpenCV window; 'q', Esc or closing the window sets ``quit_requested``.

    All GUI calls happen in ``write``/``close`` (the render thread): highgui backends misbehave when a
    window is created on one thread and drawn from another. ``gui`` defaults to the cv2 module.
    """

    def __init__(
        self, title: str = "deocclude", *, on_quit: Callable[[], None] | None = None, gui: Any = None
    ) -> None:
        super().__init__(None)
        if gui is None:
            if not opencv_has_gui():
                raise SinkError(DISPLAY_HINT)
            if not screen_available():
                raise SinkError(NO_SCREEN_HINT)
            gui = cv2
        self.title, self._gui, self._on_quit = title, gui, on_quit
        self.quit_requested = threading.Event()
        self._window = False

    def write(self, frame: Frame) -> None:
        self._check(frame)
        if self.quit_requested.is_set():
            return
        g = self._gui
        try:
            if not self._window:
                g.namedWindow(self.title, cv2.WINDOW_NORMAL)
                self._window = True
            g.imshow(self.title, frame.bgr_u8)
            key = g.waitKey(1) & 0xFF
            closed = g.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error as e:
            raise SinkError(f"{DISPLAY_HINT} ({e})") from e
        self.frames_written += 1
        if key in (ord("q"), 27) or closed:
            self.quit_requested.set()
            if self._on_quit is not None:
                self._on_quit()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._window:
            try:
                self._gui.destroyWindow(self.title)
                self._gui.waitKey(1)  # lets the backend process the destroy event
            except cv2.error as e:
                log.warning("closing window %r failed: %s", self.title, e)


class NullSink(Sink):
    """Discard frames, count them (for benchmarks)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.last_index: int | None = None

    def write(self, frame: Frame) -> None:
        self._check(frame)
        self.frames_written += 1
        self.last_index = frame.index


class TeeSink(Sink):
    """Write every frame to several sinks; close them all, raising the first error afterwards."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        super().__init__(None)
        self.sinks = list(sinks)

    def write(self, frame: Frame) -> None:
        self._check(frame)
        for s in self.sinks:
            s.write(frame)
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        first: BaseException | None = None
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:  # noqa: BLE001 - keep closing the others; re-raised below
                first = first or e
        if first is not None:
            raise first


def sink_fidelity(sink: Sink) -> Fidelity | None:
    """The PSNR outside the faces measured by the file sink in ``sink`` (a TeeSink is searched)."""
    for s in sink.sinks if isinstance(sink, TeeSink) else [sink]:
        if isinstance(s, FileSink):
            return s.fidelity
    return None


NETWORK_OUTPUTS = ("rtsp://", "rtsps://", "udp://", "srt://", "rtmp://")


def open_sink(
    spec: str | Path | None,
    info: VideoInfo,
    *,
    audio_from: str | Path | None = None,
    display: bool = False,
    on_quit: Callable[[], None] | None = None,
    crf: int = DEFAULT_CRF,
    reconnect_timeout_s: float | None = None,
) -> Sink:
    """A file path / rtsp:// / udp:// / srt:// / rtmp:// URL / None, plus an optional window.

    ``None`` without display gives a :class:`NullSink`; two outputs give a :class:`TeeSink`.
    ``on_quit`` is called (from the render thread) when the window's user presses q/Esc or closes it;
    pass the pipeline's stop (e.g. ``stop_event.set``). ``crf`` is the file's x264 quality (a stream
    keeps its low-latency crf 23); ``reconnect_timeout_s`` bounds a stream output's outage (None:
    reconnect forever).
    """
    sinks: list[Sink] = []
    try:
        if spec is not None:
            text = str(spec)
            if text.lower().startswith(NETWORK_OUTPUTS):
                sinks.append(StreamSink(text, info, reconnect_timeout_s=reconnect_timeout_s))
            elif text.lower().startswith(("http://", "https://")):
                raise SinkError(
                    f"{redact(text)}: http output is not supported; use rtsp://, udp://, srt://, rtmp:// "
                    "or a file"
                )
            else:
                sinks.append(FileSink(text, info, audio_from=audio_from, crf=crf))
        if display:
            sinks.append(DisplaySink(on_quit=on_quit))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    if not sinks:
        return NullSink()
    return sinks[0] if len(sinks) == 1 else TeeSink(sinks)
