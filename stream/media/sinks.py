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

import logging
import os
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from stream.errors import SinkError
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
        log.info(
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


class FileSink(Sink):
    """H.264 mp4/mkv/mov at the input's size, frame rate and timestamps; audio remuxed from ``audio_from``.

    Audio packets are copied (no re-encode) and interleaved as video advances: after each video frame,
    audio up to that frame's end is muxed, so an interrupted run keeps audio up to where video got.
    """

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo,
        *,
        audio_from: str | Path | None = None,
        codec: str = "libx264",
        crf: int = 20,
        preset: str = "veryfast",
        pix_fmt: str = "yuv420p",
    ) -> None:
        super().__init__(info)
        self.path = Path(path)
        what = str(self.path)
        self._size = _even_size(info, pix_fmt, what)
        self._pix_fmt = pix_fmt
        self._audio_in: av.container.InputContainer | None = None
        self._audio_packets: Iterator[av.Packet] | None = None
        self._pending: av.Packet | None = None
        self._audio_out: av.audio.stream.AudioStream | None = None
        if self.path.is_dir() or not self.path.parent.is_dir():
            problem = "is a directory" if self.path.is_dir() else f"folder {self.path.parent} does not exist"
            raise SinkError(f"{what}: cannot create output file: {problem}")
        try:
            self._container = av.open(what, "w")
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SinkError(f"{what}: cannot create output file: {getattr(e, 'strerror', None) or e}") from e
        try:
            opts = {"crf": str(crf), "preset": preset} if codec.startswith("libx26") else {}
            self._vs = _add_h264_stream(self._container, info, self._size, codec, pix_fmt, opts)
            if audio_from is not None:
                self._open_audio(Path(audio_from))
            self._container.start_encoding()  # header now: a bad codec/format fails here, not mid-run
        except (av.FFmpegError, OSError, ValueError) as e:
            self._abort()
            raise SinkError(f"{what}: cannot start encoding ({codec}, {pix_fmt}): {e}") from e

    def _open_audio(self, src: Path) -> None:
        try:
            self._audio_in = av.open(str(src))
        except (av.FFmpegError, OSError) as e:
            log.warning("%s: cannot read audio from %s (%s); writing video only", self.path, src, e)
            return
        if not self._audio_in.streams.audio:
            self._audio_in.close()
            self._audio_in = None
            return
        in_audio = self._audio_in.streams.audio[0]
        try:
            self._audio_out = self._container.add_stream_from_template(in_audio)
        except ValueError as e:  # the container cannot hold this codec (e.g. pcm in mp4)
            log.warning("%s: %s; writing video only (an .mkv output keeps this audio)", self.path, e)
            self._audio_in.close()
            self._audio_in = None
            return
        self._audio_packets = self._audio_in.demux(in_audio)

    def write(self, frame: Frame) -> None:
        self._check(frame)
        info = self.info
        assert info is not None
        vf = _to_video_frame(frame.bgr_u8, self._size, self._pix_fmt)
        vf.pts = self._pts(frame, info.time_base, info.fps)
        vf.time_base = info.time_base
        try:
            for packet in self._vs.encode(vf):
                self._container.mux(packet)
            self._mux_audio_until((vf.pts * info.time_base) + Fraction(1) / Fraction(info.fps))
        except (av.FFmpegError, OSError) as e:
            raise SinkError(f"{self.path}: writing frame {frame.index} failed: {e}") from e
        self.frames_written += 1

    def _mux_audio_until(self, t_s: Fraction) -> None:
        if self._audio_packets is None or self._audio_out is None:
            return
        while True:
            if self._pending is None:
                self._pending = next(self._audio_packets, None)
                if self._pending is None:
                    self._audio_packets = None
                    return
            p = self._pending
            if p.size == 0 or p.dts is None:  # demux's end-of-stream marker
                self._pending = None
                continue
            ts = p.pts if p.pts is not None else p.dts
            if ts * p.time_base >= t_s:
                return
            p.stream = self._audio_out
            self._container.mux(p)
            self._pending = None

    def close(self) -> None:
        """Flush the encoder, copy audio up to the end of the last frame, write the trailer."""
        if self._closed:
            return
        self._closed = True
        error: BaseException | None = None
        try:
            for packet in self._vs.encode(None):
                self._container.mux(packet)
            if self._last_pts is not None and self.info is not None:
                end = self._last_pts * self.info.time_base + Fraction(1) / Fraction(self.info.fps)
                self._mux_audio_until(end)
        except (av.FFmpegError, OSError) as e:
            error = e
        finally:
            error = self._abort() or error
        if error is not None:
            raise SinkError(f"{self.path}: closing failed: {error}") from error

    def _abort(self) -> BaseException | None:
        self._closed = True
        err = None
        try:
            self._container.close()
        except (av.FFmpegError, OSError) as e:
            err = e
        if self._audio_in is not None:
            self._audio_in.close()
            self._audio_in = None
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
    """

    def __init__(
        self, url: str, info: VideoInfo, *, crf: int = 23, preset: str = "veryfast", timeout_s: float = 5.0
    ) -> None:
        super().__init__(info)
        self.url = url
        out_url, fmt, fmt_opts = _stream_format(url)
        self._size = _even_size(info, "yuv420p", url)
        if fmt == "rtsp":
            fmt_opts["timeout"] = str(int(timeout_s * 1_000_000))  # socket I/O timeout, microseconds
        try:
            self._container = av.open(out_url, "w", format=fmt, options=fmt_opts, timeout=timeout_s)
            gop = str(max(1, round(info.fps)))
            opts = {"crf": str(crf), "preset": preset, "tune": "zerolatency", "g": gop}
            self._vs = _add_h264_stream(self._container, info, self._size, "libx264", "yuv420p", opts)
            self._container.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as e:
            if hasattr(self, "_container"):
                _close_quietly(self._container)
            raise SinkError(f"{url}: cannot open {fmt} output: {getattr(e, 'strerror', None) or e}") from e

    def write(self, frame: Frame) -> None:
        self._check(frame)
        info = self.info
        assert info is not None
        vf = _to_video_frame(frame.bgr_u8, self._size, "yuv420p")
        vf.pts = self._pts(frame, info.time_base, info.fps)
        vf.time_base = info.time_base
        try:
            for packet in self._vs.encode(vf):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            raise SinkError(f"{self.url}: sending frame {frame.index} failed: {e}") from e
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._vs.encode(None):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            log.warning("%s: flushing the stream failed: %s", self.url, e)
        finally:
            _close_quietly(self._container)


def _close_quietly(container: Any) -> None:
    try:
        container.close()
    except (av.FFmpegError, OSError) as e:
        log.warning("closing %s failed: %s", getattr(container, "name", "output"), e)


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


NETWORK_OUTPUTS = ("rtsp://", "rtsps://", "udp://", "srt://", "rtmp://")


def open_sink(
    spec: str | Path | None,
    info: VideoInfo,
    *,
    audio_from: str | Path | None = None,
    display: bool = False,
    on_quit: Callable[[], None] | None = None,
) -> Sink:
    """A file path / rtsp:// / udp:// / srt:// / rtmp:// URL / None, plus an optional window.

    ``None`` without display gives a :class:`NullSink`; two outputs give a :class:`TeeSink`.
    ``on_quit`` is called (from the render thread) when the window's user presses q/Esc or closes it;
    pass the pipeline's stop (e.g. ``stop_event.set``).
    """
    sinks: list[Sink] = []
    try:
        if spec is not None:
            text = str(spec)
            if text.lower().startswith(NETWORK_OUTPUTS):
                sinks.append(StreamSink(text, info))
            elif text.lower().startswith(("http://", "https://")):
                raise SinkError(
                    f"{text}: http output is not supported; use rtsp://, udp://, srt://, rtmp:// or a file"
                )
            else:
                sinks.append(FileSink(text, info, audio_from=audio_from))
        if display:
            sinks.append(DisplaySink(on_quit=on_quit))
    except BaseException:
        for s in sinks:
            s.close()
        raise
    if not sinks:
        return NullSink()
    return sinks[0] if len(sinks) == 1 else TeeSink(sinks)
