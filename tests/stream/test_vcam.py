"""--output vcam: the virtual camera sink through a fake camera, through pyvirtualcam's own API when it is
installed (extra ``vcam``), and on a real v4l2loopback device where one exists (skipped visibly)."""

from __future__ import annotations

import logging
import sys
import time
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from stream.errors import SinkError
from stream.media.vcam import VcamSpec, VirtualCameraSink, is_vcam, open_vcam_sink, pyvirtualcam_camera
from stream.types import Frame, VideoInfo

W, H = 64, 48


class FakeCamera:
    """Records what the sink sends, like pyvirtualcam.Camera with fmt=BGR would take it."""

    def __init__(self, width: int, height: int, fps: float, device: str | None) -> None:
        self.size, self.fps = (width, height), fps
        self.device = device or "/dev/video42"
        self.frames: list[np.ndarray] = []
        self.sleeps = 0
        self.closed = False

    def send(self, frame: object) -> None:
        assert isinstance(frame, np.ndarray) and frame.shape == (self.size[1], self.size[0], 3)
        assert frame.dtype == np.uint8
        self.frames.append(frame)

    def sleep_until_next_frame(self) -> None:
        self.sleeps += 1

    def close(self) -> None:
        self.closed = True


def _info(live: bool) -> VideoInfo:
    return VideoInfo(W, H, 30.0, Fraction(1, 90_000), is_live=live)


def _frame(i: int) -> Frame:
    return Frame(i, i * 3000, Fraction(1, 90_000), np.full((H, W, 3), i, np.uint8), time.perf_counter())


def test_spec_parsing() -> None:
    assert is_vcam("vcam") and is_vcam("vcam:/dev/video10") and not is_vcam("vcam.mp4")
    assert VcamSpec.parse("vcam") == VcamSpec(None)
    assert VcamSpec.parse("vcam:/dev/video10").device == "/dev/video10"
    with pytest.raises(ValueError, match="vcam:/dev/videoN"):
        VcamSpec.parse("cam")


@pytest.mark.parametrize("live", [True, False])
def test_sink_sends_every_frame_at_the_input_size_and_paces_files_only(live: bool) -> None:
    made: list[FakeCamera] = []

    def factory(w: int, h: int, fps: float, device: str | None) -> FakeCamera:
        made.append(FakeCamera(w, h, fps, device))
        return made[-1]

    with VirtualCameraSink(_info(live), "/dev/video7", camera_factory=factory) as sink:
        for i in range(5):
            sink.write(_frame(i))
        assert sink.device == "/dev/video7"
    cam = made[0]
    assert cam.size == (W, H) and cam.fps == 30.0 and cam.closed
    assert [int(f[0, 0, 0]) for f in cam.frames] == [0, 1, 2, 3, 4]
    assert cam.sleeps == (0 if live else 5)
    with pytest.raises(SinkError, match="write after close"):
        sink.write(_frame(5))


def test_wrong_size_is_refused() -> None:
    sink = VirtualCameraSink(_info(True), camera_factory=FakeCamera)
    bad = Frame(0, 0, Fraction(1, 90_000), np.zeros((H, W + 2, 3), np.uint8), 0.0)
    with pytest.raises(ValueError, match=f"must be {W}x{H}"):
        sink.write(bad)


def test_missing_pyvirtualcam_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)  # import fails as when not installed
    with pytest.raises(SinkError, match=r"pip install 'deocclude\[vcam\]'") as e:
        pyvirtualcam_camera(W, H, 30.0, None)
    assert "\n" not in str(e.value)


def test_missing_driver_is_one_line_naming_v4l2loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    class Camera:
        def __init__(self, *a: object, **kw: object) -> None:
            # pyvirtualcam 0.15's message on Linux without the module (one line per backend tried)
            raise RuntimeError(
                "'v4l2loopback' backend: No v4l2 loopback device found at /dev/video[0-99]. "
                "Did you run 'modprobe v4l2loopback'? See also pyvirtualcam's documentation.\nsecond line"
            )

    fake = types.SimpleNamespace(Camera=Camera, PixelFormat=types.SimpleNamespace(BGR="BGR"))
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(SinkError, match="sudo modprobe v4l2loopback") as e:
        open_vcam_sink("vcam", _info(True))
    assert "\n" not in str(e.value) and "No v4l2 loopback device" in str(e.value)


def test_through_pyvirtualcams_own_api_with_a_registered_fake_backend() -> None:
    pyvirtualcam = pytest.importorskip("pyvirtualcam", reason="pyvirtualcam not installed (extra 'vcam')")
    got: list[np.ndarray] = []

    class Backend:
        def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None) -> None:
            self._device = device or "fake0"

        def send(self, frame: np.ndarray) -> None:
            # pyvirtualcam hands its backends the frame flattened, in the fourcc they were opened with.
            got.append(frame.copy().reshape(H, W, 3))

        def close(self) -> None:
            pass

        def device(self) -> str:
            return self._device

        def native_fourcc(self) -> int | None:
            return None

    pyvirtualcam.register_backend("deocclude-test", Backend)

    def factory(w: int, h: int, fps: float, device: str | None) -> object:
        return pyvirtualcam.Camera(
            w, h, fps, fmt=pyvirtualcam.PixelFormat.BGR, device=device, backend="deocclude-test"
        )

    with VirtualCameraSink(_info(False), camera_factory=factory) as sink:  # type: ignore[arg-type]
        for i in range(3):
            sink.write(_frame(i))
    assert [int(f[0, 0, 0]) for f in got] == [0, 1, 2]


def _loopback_devices() -> list[str]:
    """v4l2loopback's devices: the module is loaded and the node is virtual (no hardware behind it)."""
    if not Path("/sys/module/v4l2loopback").exists():
        return []
    nodes = sorted(Path("/sys/class/video4linux").glob("video*"))
    return ["/dev/" + n.name for n in nodes if "/virtual/" in str(n.resolve())]


@pytest.mark.skipif(not _loopback_devices(), reason="no v4l2loopback device (sudo modprobe v4l2loopback)")
def test_real_loopback_device_receives_frames() -> None:
    pytest.importorskip("pyvirtualcam", reason="pyvirtualcam not installed (extra 'vcam')")
    import cv2

    device = _loopback_devices()[0]
    with VirtualCameraSink(_info(True), device) as sink:
        cap = cv2.VideoCapture(device)
        for i in range(30):
            sink.write(_frame(100 + i))
        ok, img = cap.read()
        cap.release()
    assert ok and img.shape == (H, W, 3)


def test_cli_output_vcam_with_a_preset_through_a_fake_pyvirtualcam(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The real run (demo clip, default models) into ``--output vcam``; pyvirtualcam is a stand-in module
    with its documented Camera API, so everything of ours runs as with the real one."""
    from stream.app import DEMO_CLIP
    from stream.cli import main

    cams: list[FakeCamera] = []

    class Camera(FakeCamera):
        def __init__(
            self, width: int, height: int, fps: float, *, fmt: str, device: str | None = None
        ) -> None:
            assert fmt == "BGR"
            super().__init__(width, height, fps, device)
            cams.append(self)

    fake = types.SimpleNamespace(Camera=Camera, PixelFormat=types.SimpleNamespace(BGR="BGR"))
    monkeypatch.setitem(sys.modules, "pyvirtualcam", fake)
    caplog.set_level(logging.INFO)
    code = main(
        ["--input", str(DEMO_CLIP), "--output", "vcam:/dev/video9", "--preset", "realtime", "--quiet"]
    )
    assert code == 0
    cam = cams[0]
    assert cam.device == "/dev/video9" and cam.size == (640, 360) and abs(cam.fps - 23.976) < 0.01
    assert len(cam.frames) == 144 and cam.sleeps == 144 and cam.closed  # a file is paced to its rate
    text = caplog.text
    assert "preset realtime: models=" in text and "detect_every=2" in text
    assert "vcam: video only" in text  # the demo's audio is not carried, said once
