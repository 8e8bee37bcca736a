"""A virtual camera output (``--output vcam`` or ``vcam:/dev/videoN``): the restored video appears as a
webcam that Zoom, Meet, Teams and OBS can pick.

Through ``pyvirtualcam`` (the ``vcam`` extra): v4l2loopback on Linux, OBS's virtual camera on Windows
and macOS. The camera runs at the input's size and frame rate. A live input paces itself; a file is
paced to its frame rate here (``sleep_until_next_frame``), or it would play back as fast as we decode.
This module imports neither OpenCV nor PyAV, so it also runs beside pyvirtualcam in a bare venv.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from stream.errors import SinkError
from stream.types import Frame, VideoInfo

if TYPE_CHECKING:
    from stream.pipeline import FrameSink

log = logging.getLogger(__name__)

VCAM: Final = "vcam"
INSTALL_HINT: Final = "pip install 'deocclude[vcam]' (pyvirtualcam)"
LINUX_DRIVER_HINT: Final = (
    "load the v4l2loopback driver: sudo apt install v4l2loopback-dkms && "
    "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=deocclude"
)
OTHER_DRIVER_HINT: Final = "install OBS Studio (28+) and start its Virtual Camera once"


def is_vcam(spec: str | None) -> bool:
    """True for ``vcam`` and ``vcam:<device>`` outputs."""
    return spec is not None and (spec == VCAM or spec.startswith(VCAM + ":"))


@dataclass(frozen=True)
class VcamSpec:
    """A parsed ``vcam[:DEVICE]`` output; ``device`` None takes the first free virtual camera."""

    device: str | None = None

    def __post_init__(self) -> None:
        if self.device is not None and not self.device.strip():
            raise ValueError("vcam device must be a name like /dev/video10, got an empty string")

    @classmethod
    def parse(cls, spec: str) -> VcamSpec:
        if not is_vcam(spec):
            raise ValueError(f"a virtual camera output is 'vcam' or 'vcam:/dev/videoN', got {spec!r}")
        _, _, device = spec.partition(":")
        return cls(device or None)


def driver_hint(platform: str | None = None) -> str:
    """How to get a virtual camera device on this OS (one clause, no newline)."""
    return LINUX_DRIVER_HINT if (platform or sys.platform).startswith("linux") else OTHER_DRIVER_HINT


class VirtualCamera(Protocol):
    """What the sink uses of ``pyvirtualcam.Camera`` (tests pass a fake)."""

    @property
    def device(self) -> str: ...

    def send(self, frame: object) -> None: ...

    def sleep_until_next_frame(self) -> None: ...

    def close(self) -> None: ...


CameraFactory = Callable[[int, int, float, "str | None"], VirtualCamera]


def pyvirtualcam_camera(width: int, height: int, fps: float, device: str | None) -> VirtualCamera:
    """The real backend: ``pyvirtualcam.Camera`` taking (H, W, 3) uint8 BGR frames."""
    try:
        import pyvirtualcam
    except ImportError as e:
        raise SinkError(f"--output vcam needs pyvirtualcam: {INSTALL_HINT}, then {driver_hint()}") from e
    try:
        cam: VirtualCamera = pyvirtualcam.Camera(
            width, height, fps, fmt=pyvirtualcam.PixelFormat.BGR, device=device
        )
    except (RuntimeError, ValueError) as e:
        # pyvirtualcam lists one line per backend tried; keep our error one line.
        why = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        where = device or "any device"
        raise SinkError(f"vcam: no virtual camera ({where}): {why}; {driver_hint()}") from e
    return cam


class VirtualCameraSink:
    """Sends each frame's ``bgr_u8`` ((H, W, 3) uint8 BGR, the size of ``info``) to a virtual camera.

    ``pace``: sleep until each frame is due at ``info.fps`` (default: for files, not for live input).
    ``camera_factory(width, height, fps, device)``: :func:`pyvirtualcam_camera` unless a test fakes it.
    """

    def __init__(
        self,
        info: VideoInfo,
        device: str | None = None,
        *,
        pace: bool | None = None,
        camera_factory: CameraFactory = pyvirtualcam_camera,
    ) -> None:
        self.info = info
        self.pace = (not info.is_live) if pace is None else pace
        self.frames_written = 0
        self._closed = False
        self._camera = camera_factory(info.width, info.height, info.fps, device)
        self.device = self._camera.device
        log.info(
            "vcam: %s at %dx%d @ %.3g fps%s",
            self.device,
            info.width,
            info.height,
            info.fps,
            " (paced to the file's frame rate)" if self.pace else "",
        )

    def write(self, frame: Frame) -> None:
        if self._closed:
            raise SinkError("vcam: write after close")
        h, w = frame.bgr_u8.shape[:2]
        if (w, h) != (self.info.width, self.info.height):
            raise ValueError(
                f"frame must be {self.info.width}x{self.info.height} (the camera's size), got {w}x{h}"
            )
        try:
            self._camera.send(frame.bgr_u8)
        except (RuntimeError, ValueError, OSError) as e:
            raise SinkError(f"vcam: sending frame {frame.index} to {self.device} failed: {e}") from e
        if self.pace:
            self._camera.sleep_until_next_frame()
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._camera.close()

    def __enter__(self) -> VirtualCameraSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _WithWindow:
    """The virtual camera and a window, written in turn, both closed (the first error raised after)."""

    def __init__(self, camera: VirtualCameraSink, window: FrameSink) -> None:
        self.camera, self.window = camera, window

    def write(self, frame: Frame) -> None:
        self.camera.write(frame)
        self.window.write(frame)

    def close(self) -> None:
        try:
            self.camera.close()
        finally:
            self.window.close()


def open_vcam_sink(
    spec: str,
    info: VideoInfo,
    *,
    audio_from: object = None,
    display: bool = False,
    on_quit: Callable[[], None] | None = None,
    camera_factory: CameraFactory = pyvirtualcam_camera,
) -> FrameSink:
    """The sink for a ``vcam[:DEVICE]`` output (plus a window with ``display``). A virtual camera carries
    no sound: an input's audio is left out, said in one line."""
    camera = VirtualCameraSink(info, VcamSpec.parse(spec).device, camera_factory=camera_factory)
    if audio_from is not None:
        log.info("vcam: video only; the input's audio is not carried (a camera has no sound track)")
    if not display:
        return camera
    from stream.media.sinks import open_sink  # PyAV and OpenCV only when a window is asked for

    try:
        window = open_sink(None, info, display=True, on_quit=on_quit)
    except BaseException:
        camera.close()
        raise
    return _WithWindow(camera, window)
