"""Local cameras: listing them (``--list-cameras``), picking one by index, device path or name, and
asking it for a size and frame rate (``--camera-size 1280x720 --camera-fps 30``) with its answer logged.

On Linux the list comes from ``/dev/video*`` and the names the kernel gives them in
``/sys/class/video4linux/videoN/name`` (a USB camera often has a second node for metadata, same name,
sysfs ``index`` 1; it cannot deliver frames). Elsewhere OpenCV has no way to list or name cameras, so
only indices work there. Opening goes through :class:`stream.media.sources.CameraSource` and its
injectable capture factory, so a synthetic camera stands in for a real one in tests.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import cv2

from stream.errors import SourceError
from stream.media.sources import CameraSource, CaptureLike, open_cv2_capture

log = logging.getLogger(__name__)

CAMERA_PREFIX: Final = "camera:"
_DEV_VIDEO = re.compile(r"^/dev/video(\d+)$")
_SIZE = re.compile(r"^(\d+)[xX](\d+)$")


@dataclass(frozen=True)
class CameraInfo:
    """One video device: OpenCV's ``index``, its ``path`` (/dev/videoN on Linux) and the driver's
    ``name``; ``capture`` is False for a metadata node (sysfs index > 0), which delivers no frames."""

    index: int
    path: str
    name: str
    capture: bool = True

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"camera index must be >= 0, got {self.index}")


@dataclass(frozen=True)
class CameraRequest:
    """What to ask a camera for; None leaves the camera's own choice. ``fourcc``: MJPG by default, which
    USB cameras need for high frame rates at large sizes (raw YUYV is bandwidth-bound)."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = "MJPG"

    def __post_init__(self) -> None:
        if (self.width is None) != (self.height is None):
            raise ValueError(f"camera size needs both width and height, got {self.width}x{self.height}")
        if self.width is not None and self.height is not None and (self.width <= 0 or self.height <= 0):
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if self.fps is not None and not 0 < self.fps <= 1000:
            raise ValueError(f"camera fps must be in (0, 1000], got {self.fps}")
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ValueError(f"fourcc must be 4 characters (e.g. MJPG, YUYV), got {self.fourcc!r}")

    @property
    def asks(self) -> bool:
        """True when a size or a frame rate is asked for."""
        return self.width is not None or self.fps is not None

    def describe(self) -> str:
        size = "any size" if self.width is None else f"{self.width}x{self.height}"
        fps = "any fps" if self.fps is None else f"{self.fps:g} fps"
        return f"{size} @ {fps}" + (f" {self.fourcc}" if self.fourcc else "")


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720)."""
    m = _SIZE.match(text.strip())
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise ValueError(f"camera size must be WIDTHxHEIGHT (e.g. 1280x720), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def list_cameras(root: Path = Path("/"), platform: str | None = None) -> list[CameraInfo]:
    """The video devices of this machine, by index (Linux: /dev/video* named from sysfs; other systems:
    an empty list, they have no device list OpenCV can read). ``root`` is for tests."""
    if not (platform or sys.platform).startswith("linux"):
        return []
    found = []
    for dev in (root / "dev").glob("video*"):
        m = _DEV_VIDEO.match("/dev/" + dev.name)
        if not m:
            continue
        sysfs = root / "sys/class/video4linux" / dev.name
        name = _read(sysfs / "name") or "(no name)"
        node = _read(sysfs / "index")
        found.append(CameraInfo(int(m.group(1)), "/dev/" + dev.name, name, capture=node in (None, "0")))
    return sorted(found, key=lambda c: c.index)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def format_cameras(cameras: Sequence[CameraInfo]) -> str:
    """The ``--list-cameras`` text: one camera a line."""
    if not cameras:
        where = (
            "no /dev/video* devices" if sys.platform.startswith("linux") else "cameras cannot be listed here"
        )
        return f"no cameras found ({where}); a camera can still be opened by index: --input 0"
    lines = [
        f"{c.index:3d}  {c.path:14s}  {c.name}" + ("" if c.capture else "  (metadata node)") for c in cameras
    ]
    return "\n".join(lines)


def is_camera_spec(spec: str) -> bool:
    """A camera input: an index (``0``), ``/dev/videoN`` or ``camera:NAME`` / ``camera:INDEX``."""
    text = spec.strip()
    return text.isdigit() or bool(_DEV_VIDEO.match(text)) or text.startswith(CAMERA_PREFIX)


def resolve_camera(spec: str, cameras: Sequence[CameraInfo] | None = None) -> int:
    """OpenCV's index for a camera input (see :func:`is_camera_spec`). A name matches a camera whose name
    contains it (case-insensitive); it must match exactly one capture device."""
    text = spec.strip()
    if text.isdigit():
        return int(text)
    m = _DEV_VIDEO.match(text)
    if m:
        return int(m.group(1))
    if not text.startswith(CAMERA_PREFIX):
        raise ValueError(f"a camera is an index, /dev/videoN or camera:NAME, got {spec!r}")
    wanted = text[len(CAMERA_PREFIX) :].strip()
    if wanted.isdigit() or _DEV_VIDEO.match(wanted):
        return resolve_camera(wanted)
    known = list_cameras() if cameras is None else list(cameras)
    hits = [c for c in known if c.capture and wanted.lower() in c.name.lower()]
    if len(hits) == 1:
        return hits[0].index
    listing = "; ".join(f"{c.index}: {c.name}" for c in known if c.capture) or "none found"
    if not hits:
        raise SourceError(f"no camera named like {wanted!r} (cameras: {listing})")
    raise ValueError(f"camera name {wanted!r} matches {len(hits)} cameras ({listing}); use its index")


def open_camera(
    spec: str,
    request: CameraRequest | None = None,
    *,
    cameras: Sequence[CameraInfo] | None = None,
    capture_factory: Callable[[int], CaptureLike] = open_cv2_capture,
    measure_frames: int = 15,
) -> CameraSource:
    """Open the camera ``spec`` names, ask it for ``request`` and log what it answered: the size it
    delivers, the rate it reports, the rate measured over the first frames and the negotiated fourcc."""
    req = request or CameraRequest()
    index = resolve_camera(spec, cameras)
    opened: list[CaptureLike] = []

    def factory(i: int) -> CaptureLike:
        cap = capture_factory(i)
        opened.append(cap)  # kept to read back what the camera agreed to
        return cap

    source = CameraSource(
        index,
        req.width,
        req.height,
        req.fps,
        req.fourcc,
        measure_frames=measure_frames,
        capture_factory=factory,
    )
    cap = opened[0]
    info = source.info
    reported = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace").strip("\x00")
    log.info(
        "camera %d: asked %s; answered %dx%d, reports %.3g fps, measured %.3g fps, format %s",
        index,
        req.describe(),
        info.width,
        info.height,
        reported,
        source.measured_fps,
        fourcc or "unknown",
    )
    if req.width is not None and (info.width, info.height) != (req.width, req.height):
        log.warning(
            "camera %d: delivers %dx%d, not the %dx%d asked for (a size it does not offer)",
            index,
            info.width,
            info.height,
            req.width,
            req.height,
        )
    if req.fps is not None and source.measured_fps < 0.9 * req.fps:
        log.warning(
            "camera %d: delivers %.3g fps, below the %g asked for (light, exposure or USB bandwidth)",
            index,
            source.measured_fps,
            req.fps,
        )
    return source
