"""File sink round trips (count, size, pts, time base, audio), interruption safety, other sinks."""

from __future__ import annotations

import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stream.errors import SinkError
from stream.media.sinks import (
    DISPLAY_HINT,
    DisplaySink,
    FileSink,
    NullSink,
    StreamSink,
    TeeSink,
    open_sink,
    opencv_has_gui,
)
from stream.media.sources import FileSource
from stream.types import Frame, VideoInfo
from tests.stream.conftest import Clip


def _probe(path: Path) -> dict:
    """Decode a written file independently of our sources: what a player would see."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = [(f.pts, f.width, f.height, f.to_ndarray(format="bgr24")) for f in c.decode(vs)]
        cc = vs.codec_context
        out = {"tb": Fraction(vs.time_base), "frames": frames, "audio": None, "bt709": cc.colorspace == 1}
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            packets = [p for p in c.demux(a) if p.size]
            out["audio"] = (
                a.codec_context.name,
                packets[0].pts * a.time_base,
                (packets[-1].pts + packets[-1].duration) * a.time_base,
                len(packets),
            )
    return out


def _copy(src_path: Path, dst: Path, limit: int | None = None, **kw: object) -> VideoInfo:
    with FileSource(src_path) as src, FileSink(dst, src.info, **kw) as sink:  # type: ignore[arg-type]
        for f in src:
            if limit is not None and f.index >= limit:
                break
            sink.write(f)
        return src.info


def test_round_trip_keeps_count_size_pts_time_base_and_audio(clip_audio: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    _copy(clip_audio.path, out, audio_from=clip_audio.path)
    got = _probe(out)
    assert got["tb"] == Fraction(1, 90000)
    assert got["bt709"]  # tagged, so players decode with the matrix it was encoded with
    assert [p for p, *_ in got["frames"]] == clip_audio.pts
    assert all((w, h) == (160, 120) for _, w, h, _ in got["frames"])
    codec, start, end, n = got["audio"]
    assert codec == "aac" and n > 10
    assert start <= 0 and end >= Fraction(29, 30)  # audio covers the whole video


def test_mkv_keeps_times(clip: Clip, tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    _copy(clip.path, out)
    got = _probe(out)
    times = [p * got["tb"] for p, *_ in got["frames"]]
    want = [p * clip.time_base for p in clip.pts]
    assert len(times) == 20 and all(abs(a - b) <= Fraction(1, 1000) for a, b in zip(times, want, strict=True))


def test_odd_size_padded_for_yuv420p_exact_for_yuv444p(clip_odd: Clip, tmp_path: Path) -> None:
    with FileSource(clip_odd.path) as src:
        originals = [f.bgr_u8 for f in src]
    _copy(clip_odd.path, tmp_path / "o420.mp4")
    _copy(clip_odd.path, tmp_path / "o444.mp4", pix_fmt="yuv444p")
    p420, p444 = _probe(tmp_path / "o420.mp4"), _probe(tmp_path / "o444.mp4")
    assert len(p420["frames"]) == len(p444["frames"]) == 12
    _, w, h, img = p420["frames"][5]
    assert (w, h) == (162, 122)  # padded by one repeated column/row
    assert np.abs(img[:121, :161].astype(int) - originals[5]).mean() < 4
    assert np.abs(img[:, 161].astype(int) - img[:, 160]).mean() < 4
    _, w, h, img = p444["frames"][5]
    assert (w, h) == (161, 121)
    assert np.abs(img.astype(int) - originals[5]).mean() < 4


def test_interrupted_run_leaves_playable_file_with_audio_so_far(clip_audio: Clip, tmp_path: Path) -> None:
    out = tmp_path / "half.mp4"
    with pytest.raises(KeyboardInterrupt):  # noqa: PT012 - the interruption happens mid-loop
        with FileSource(clip_audio.path) as src, FileSink(out, src.info, audio_from=clip_audio.path) as sink:
            for f in src:
                if f.index == 15:
                    raise KeyboardInterrupt
                sink.write(f)
    got = _probe(out)
    assert [p for p, *_ in got["frames"]] == clip_audio.pts[:15]
    _, start, end, _ = got["audio"]
    half = Fraction(15, 30)
    assert start <= 0 and half - Fraction(1, 10) <= end <= half + Fraction(1, 10)


def test_file_sink_errors(tmp_path: Path) -> None:
    info = VideoInfo(32, 24, 25.0, Fraction(1, 25))
    FileSink(tmp_path / "new" / "dir" / "x.mp4", info).close()  # missing folders are made
    (tmp_path / "plain_file").write_text("")
    with pytest.raises(SinkError, match="cannot create the output folder .*plain_file"):
        FileSink(tmp_path / "plain_file" / "dir" / "x.mp4", info)
    with pytest.raises(SinkError, match="is a directory"):
        FileSink(tmp_path, info)
    sink = FileSink(tmp_path / "x.mp4", info)
    with pytest.raises(ValueError, match="frame must be 32x24"):
        sink.write(Frame(0, 0, info.time_base, np.zeros((10, 10, 3), np.uint8), 0.0))
    sink.write(Frame(0, None, info.time_base, np.zeros((24, 32, 3), np.uint8), 0.0))
    sink.write(Frame(1, 0, info.time_base, np.zeros((24, 32, 3), np.uint8), 0.0))  # repeated pts: bumped
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(SinkError, match="write after close"):
        sink.write(Frame(2, 2, info.time_base, np.zeros((24, 32, 3), np.uint8), 0.0))
    got = _probe(tmp_path / "x.mp4")  # mp4 raises a 1/25 time base to 1/12800: compare seconds
    assert [p * got["tb"] for p, *_ in got["frames"]] == [0, Fraction(1, 25)]


def test_audio_from_a_file_without_audio_writes_video_only(clip: Clip, tmp_path: Path) -> None:
    _copy(clip.path, tmp_path / "v.mp4", audio_from=clip.path)
    assert _probe(tmp_path / "v.mp4")["audio"] is None


def test_null_and_tee_sinks(tmp_path: Path) -> None:
    info = VideoInfo(32, 24, 25.0, Fraction(1, 25))
    frame = Frame(0, 0, info.time_base, np.zeros((24, 32, 3), np.uint8), time.perf_counter())
    a, b = NullSink(), NullSink()
    with TeeSink([a, b]) as tee:
        tee.write(frame)
    assert a.frames_written == b.frames_written == 1 and a.closed and b.closed


def test_open_sink_dispatch(tmp_path: Path) -> None:
    info = VideoInfo(32, 24, 25.0, Fraction(1, 25))
    assert isinstance(open_sink(None, info), NullSink)
    sink = open_sink(tmp_path / "a.mkv", info)
    assert isinstance(sink, FileSink)
    sink.close()
    with pytest.raises(SinkError, match="http output is not supported"):
        open_sink("http://127.0.0.1/x", info)
    udp = open_sink("udp://127.0.0.1:9", info)  # UDP needs no peer to open
    assert isinstance(udp, StreamSink)
    udp.close()


def test_display_needs_gui_build(monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.media.sinks as sinks

    assert opencv_has_gui()  # the locked opencv-contrib-python has highgui
    monkeypatch.setattr(sinks, "opencv_has_gui", lambda: False)
    with pytest.raises(SinkError) as e:
        DisplaySink("x")
    assert str(e.value) == DISPLAY_HINT


def test_display_without_a_screen_is_a_one_line_error_not_a_qt_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.media.sinks as sinks

    assert not sinks.screen_available({}) or not sys.platform.startswith("linux")
    assert sinks.screen_available({"DISPLAY": ":0"}) and sinks.screen_available({"WAYLAND_DISPLAY": "w"})
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        with pytest.raises(SinkError, match="needs a screen"):
            DisplaySink("x")


class FakeGui:
    def __init__(self, keys: list[int]) -> None:
        self.keys, self.shown, self.destroyed = keys, 0, False

    def namedWindow(self, title: str, flags: int) -> None:  # noqa: N802
        pass

    def imshow(self, title: str, img: np.ndarray) -> None:
        self.shown += 1

    def waitKey(self, ms: int) -> int:  # noqa: N802
        return self.keys.pop(0) if self.keys else -1

    def getWindowProperty(self, title: str, prop: int) -> float:  # noqa: N802
        return 1.0

    def destroyWindow(self, title: str) -> None:  # noqa: N802
        self.destroyed = True


@pytest.mark.parametrize("key", [ord("q"), 27])
def test_display_quit_key_signals_stop(key: int) -> None:
    gui, quits = FakeGui([-1, key]), []
    sink = DisplaySink("t", on_quit=lambda: quits.append(1), gui=gui)
    frame = Frame(0, 0, Fraction(1, 25), np.zeros((8, 8, 3), np.uint8), 0.0)
    sink.write(frame)
    assert not sink.quit_requested.is_set()
    sink.write(frame)
    assert sink.quit_requested.is_set() and quits == [1]
    sink.close()
    assert gui.destroyed and gui.shown == 2


@pytest.mark.parametrize("size", [(160, 120), (1280, 720)])
def test_colour_round_trip_is_unbiased(tmp_path: Path, size: tuple[int, int]) -> None:
    """Sink then source on a lossless encode: only chroma subsampling error, no brightness shift."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h) + 64], -1).astype(np.uint8)
    info = VideoInfo(w, h, 25.0, Fraction(1, 25))
    with FileSink(tmp_path / "c.mkv", info, crf=0, preset="ultrafast") as sink:
        for i in range(2):
            sink.write(Frame(i, i, info.time_base, img, 0.0))
    with FileSource(tmp_path / "c.mkv") as src:
        back = [f.bgr_u8 for f in src]
    diff = back[1].astype(int) - img
    assert len(back) == 2 and abs(diff.mean()) < 0.5 and np.abs(diff).mean() < 1.5


def _demo_frames(n: int) -> tuple[VideoInfo, list[Frame]]:
    from stream.app import DEMO_CLIP

    with FileSource(DEMO_CLIP) as src:
        frames = [f for f, _ in zip(src, range(n), strict=False)]
        return src.info, frames


@pytest.mark.parametrize("painted", [False, True])
def test_default_crf_is_visually_lossless_outside_the_faces(tmp_path: Path, painted: bool) -> None:
    """PSNR outside the faces is measured on the sink's own output; the default beats x264's crf 23."""
    info, frames = _demo_frames(30)
    results = {}
    for crf in (23, None):
        kw = {} if crf is None else {"crf": crf}
        with FileSink(tmp_path / f"c{crf}.mp4", info, **kw) as sink:  # type: ignore[arg-type]
            for f in frames:
                ref = f.bgr_u8.copy() if f.index % 10 == 0 else None
                out = f.bgr_u8.copy()
                if painted:
                    out[100:200, 200:300] = (0, 0, 255)  # a "restored face": not scored
                sink.write(Frame(f.index, f.pts, f.time_base, out, 0.0, reference_bgr_u8=ref))
        results[crf] = sink.fidelity
    default, x264 = results[None], results[23]
    assert default is not None and x264 is not None
    assert default.frames == x264.frames == 3
    assert default.pixels == 3 * (640 * 360 - (100 * 100 if painted else 0))
    assert default.mean_db is not None and x264.mean_db is not None and default.min_db is not None
    assert default.min_db >= 40.0 and default.mean_db >= x264.mean_db + 2.5  # 40 dB: visually lossless


def _write_pcm_clip(path: Path, frames: int = 24, fps: int = 24) -> None:
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("pcm_s16le", rate=16000)
        a.layout = "mono"
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 5, np.uint8), format="bgr24")
            vf.pts = i
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        t = np.arange(16000 * frames // fps) / 16000
        af = av.AudioFrame.from_ndarray(
            (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)[None], format="s16", layout="mono"
        )
        af.sample_rate, af.pts = 16000, 0
        for p in [*a.encode(af), *a.encode(None)]:
            c.mux(p)


@pytest.mark.parametrize(("suffix", "codec", "mode"), [(".mp4", "aac", "aac"), (".mkv", "pcm_s16le", "copy")])
def test_pcm_audio_is_transcoded_for_mp4_and_copied_into_mkv(
    tmp_path: Path, suffix: str, codec: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "cam.mov"
    _write_pcm_clip(src)
    out = tmp_path / f"out{suffix}"
    with caplog.at_level("INFO"), FileSource(src) as source:
        with FileSink(out, source.info, audio_from=src) as sink:
            assert sink.audio_mode == mode
            for f in source:
                sink.write(f)
    if mode == "aac":
        assert any("pcm_s16le audio cannot go into" in r.getMessage() for r in caplog.records)
    got = _probe(out)
    assert len(got["frames"]) == 24
    name, start, end, _ = got["audio"]
    assert name == codec and start <= Fraction(1, 20) and end >= Fraction(9, 10)
    with av.open(str(out)) as c:  # every audio packet decodes: not a broken file
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples >= 16000 * 0.9


def test_odd_size_is_said_in_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    info = VideoInfo(161, 121, 25.0, Fraction(1, 25))
    with caplog.at_level("INFO"):
        FileSink(tmp_path / "odd.mp4", info).close()
    lines = [r for r in caplog.records if "is odd" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "WARNING" and "162x122" in lines[0].getMessage()


def test_fragmented_mp4_is_the_default_and_can_be_turned_off(clip: Clip, tmp_path: Path) -> None:
    _copy(clip.path, tmp_path / "frag.mp4")
    _copy(clip.path, tmp_path / "plain.mp4", fragmented=False)
    assert b"moof" in (tmp_path / "frag.mp4").read_bytes()
    assert b"moof" not in (tmp_path / "plain.mp4").read_bytes()
    assert [p for p, *_ in _probe(tmp_path / "frag.mp4")["frames"]] == [
        p for p, *_ in _probe(tmp_path / "plain.mp4")["frames"]
    ]
