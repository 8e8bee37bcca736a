"""Tiny media made on the fly: H.264 clips with and without AAC audio, odd sizes, unusual time bases."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest


def frame_level(index: int) -> int:
    """The grey level drawn into frame ``index``: decoded frames prove their order by it."""
    return (20 + index * 9) % 236


def clip_bgr_u8(index: int, width: int, height: int) -> np.ndarray:
    img = np.full((height, width, 3), frame_level(index), np.uint8)
    img[:, : width // 4, 1] = 255 - frame_level(index)  # some colour and an edge for the encoder
    return img


@dataclass(frozen=True)
class Clip:
    path: Path
    width: int
    height: int
    frames: int
    fps: int
    time_base: Fraction
    pts: list[int]
    has_audio: bool


def write_clip(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 20,
    fps: int = 24,
    time_base: Fraction | None = None,
    audio: bool = False,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
) -> Clip:
    """Encode a clip with libx264 (+ AAC mono 16 kHz covering the same duration when ``audio``)."""
    tb = time_base or Fraction(1, fps)
    container = av.open(str(path), "w", options=options or {})
    vs = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
    vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
    vs.time_base = tb
    vs.codec_context.time_base = tb
    astream = None
    if audio:
        astream = container.add_stream("aac", rate=16000)
        astream.layout = "mono"
    step = round(1 / (fps * tb))
    for i in range(frames):
        vf = av.VideoFrame.from_ndarray(clip_bgr_u8(i, width, height), format="bgr24")
        vf.pts, vf.time_base = i * step, tb
        for p in vs.encode(vf):
            container.mux(p)
    for p in vs.encode(None):
        container.mux(p)
    if astream is not None:
        rate = astream.rate
        t = np.arange(int(rate * frames / fps)) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        af.sample_rate, af.pts = rate, 0
        for p in [*astream.encode(af), *astream.encode(None)]:
            container.mux(p)
    container.close()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = [f.pts for f in c.decode(s)]
        real_tb = Fraction(s.time_base)
    return Clip(path, width, height, frames, fps, real_tb, pts, audio)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def clip(media_dir: Path) -> Clip:
    """64x48, 20 frames at 24 fps, default time base, no audio."""
    return write_clip(media_dir / "plain.mp4")


@pytest.fixture(scope="session")
def clip_audio(media_dir: Path) -> Clip:
    """160x120, 30 frames at 30 fps, time base 1/90000 (not the muxer's default), AAC audio."""
    return write_clip(
        media_dir / "audio.mp4",
        width=160,
        height=120,
        frames=30,
        fps=30,
        time_base=Fraction(1, 90000),
        audio=True,
    )


@pytest.fixture(scope="session")
def clip_odd(media_dir: Path) -> Clip:
    """161x121 (odd: needs 4:4:4 to be H.264 at all), 12 frames."""
    return write_clip(media_dir / "odd.mkv", width=161, height=121, frames=12, fps=25, pix_fmt="yuv444p")


@pytest.fixture
def make_clip(tmp_path: Path) -> Callable[..., Clip]:
    def make(name: str, **kw: object) -> Clip:
        return write_clip(tmp_path / name, **kw)  # type: ignore[arg-type]

    return make


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


def export_tiny_models(root: Path) -> Path:
    """Untrained tiny-profile networks exported by the training package (real ONNX, real interfaces)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from training.export import export_models, save_checkpoint
    from training.models import build_detector, build_generator
    from training.models.profiles import get_profile

    torch.manual_seed(0)
    profile = get_profile("tiny")
    ckpt = save_checkpoint(
        root / "tiny.pt", profile="tiny", detector=build_detector(profile), generator=build_generator(profile)
    )
    export_models(ckpt, root / "export")
    return root / "export"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_models(tmp_path_factory.mktemp("tiny_models"))
