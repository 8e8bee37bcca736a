"""The input's audio in an output file: copied when the container takes the codec, else AAC, else dropped.

The decision is made when the sink opens, and said in one line at start: an MP4 cannot hold PCM (what
cameras, screen recorders and many .mov/.mkv files carry), and FFmpeg only notices when the trailer
is written, which used to leave a file that nothing could read. Packets (copied or encoded) are muxed
as video advances: ``mux_until(t)`` writes audio up to ``t`` seconds, so an interrupted run keeps the
audio up to where the video got.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Final

import av

log = logging.getLogger(__name__)

# Audio codecs each output format can hold (FFmpeg's mov/mp4 muxer tags); matroska takes any codec.
_MP4_AUDIO: Final = frozenset({"aac", "mp3", "mp2", "ac3", "eac3", "alac", "opus", "flac"})
_MOV_AUDIO: Final = _MP4_AUDIO | frozenset(
    {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_f32le", "pcm_u8", "pcm_alaw"}
)
_WEBM_AUDIO: Final = frozenset({"opus", "vorbis"})
AAC_BITRATE: Final = 160_000


def container_takes(format_name: str, codec: str) -> bool:
    """Whether the muxer ``format_name`` (``container.format.name``) can store audio ``codec``."""
    names = set(format_name.split(","))
    if "matroska" in names:
        return True
    if "webm" in names:
        return codec in _WEBM_AUDIO
    if "mov" in names:
        return codec in _MOV_AUDIO
    return codec in _MP4_AUDIO


class AudioTrack:
    """Audio of ``src`` into ``out``: ``mode`` is ``"copy"``, ``"aac"`` (transcoded) or ``"none"``.

    Build with :meth:`open`, which logs what it chose; the output stream is added before the container
    starts encoding.
    """

    def __init__(
        self,
        mode: str,
        src: av.container.InputContainer | None,
        out: av.container.OutputContainer,
        in_stream: av.audio.stream.AudioStream | None,
        out_stream: av.audio.stream.AudioStream | None,
    ) -> None:
        if mode not in ("copy", "aac", "none"):
            raise ValueError(f"mode must be 'copy', 'aac' or 'none', got {mode!r}")
        self.mode = mode
        self._src, self._out, self._in, self._stream = src, out, in_stream, out_stream
        self._packets: Iterator[av.Packet] | None = self._produce() if mode != "none" else None
        self._pending: av.Packet | None = None

    @classmethod
    def open(cls, src_path: Path, out: av.container.OutputContainer, what: str) -> AudioTrack:
        try:
            src = av.open(str(src_path))
        except (av.FFmpegError, OSError) as e:
            log.warning("%s: cannot read audio from %s (%s); writing video only", what, src_path, e)
            return cls("none", None, out, None, None)
        if not src.streams.audio:
            src.close()
            return cls("none", None, out, None, None)
        ain = src.streams.audio[0]
        codec, fmt = ain.codec_context.name, out.format.name
        try:
            if container_takes(fmt, codec):
                log.info("%s: audio %s copied", what, codec)
                return cls("copy", src, out, ain, out.add_stream_from_template(ain))
            aout = out.add_stream("aac", rate=ain.rate or 48_000)
            aout.layout = ain.layout.name if ain.layout.nb_channels <= 2 else "stereo"
            aout.bit_rate = AAC_BITRATE
            log.warning("%s: %s audio cannot go into %s; transcoding it to AAC", what, codec, fmt)
            return cls("aac", src, out, ain, aout)
        except (av.FFmpegError, ValueError) as e:
            log.warning("%s: audio %s cannot be written (%s); writing video only", what, codec, e)
            src.close()
            return cls("none", None, out, None, None)

    def _produce(self) -> Iterator[av.Packet]:
        assert self._src is not None and self._in is not None and self._stream is not None
        for packet in self._src.demux(self._in):
            if packet.size == 0 or packet.dts is None:  # demux's end-of-stream marker
                continue
            if self.mode == "copy":
                packet.stream = self._stream
                yield packet
                continue
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                log.warning("audio: skipping an undecodable packet: %s", e)
                continue
            for f in frames:
                f.pts = None  # the encoder numbers samples itself; the source's gaps are not kept
                yield from self._stream.encode(f)
        if self.mode == "aac":
            yield from self._stream.encode(None)

    def mux_until(self, t_s: Fraction) -> None:
        """Mux every audio packet that starts before ``t_s`` seconds."""
        while self._packets is not None:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    self._packets = None
                    return
            p = self._pending
            ts = p.pts if p.pts is not None else p.dts
            if ts is not None and p.time_base is not None and ts * p.time_base >= t_s:
                return
            self._out.mux(p)
            self._pending = None

    def close(self) -> None:
        self._packets = None
        if self._src is not None:
            self._src.close()
            self._src = None
