"""Camera listing and selection (by index, /dev/videoN, name) and size/fps negotiation, through a synthetic
camera behind OpenCV's capture interface and a fake /dev + sysfs tree."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.errors import SourceError
from stream.media.cameras import (
    CameraInfo,
    CameraRequest,
    format_cameras,
    is_camera_spec,
    list_cameras,
    open_camera,
    parse_size,
    resolve_camera,
)


class SyntheticCamera:
    """A USB camera as OpenCV's V4L2 backend shows it: a few modes, MJPG needed above 640x480, the mode
    nearest to what was asked chosen when reading starts, frames at the mode's real rate."""

    MODES = ((640, 480, 30.0), (1280, 720, 30.0), (1920, 1080, 15.0))

    def __init__(self, index: int) -> None:
        self.index = index
        self.asked = {
            cv2.CAP_PROP_FRAME_WIDTH: 640.0,
            cv2.CAP_PROP_FRAME_HEIGHT: 480.0,
            cv2.CAP_PROP_FPS: 30.0,
        }
        self.fourcc = "YUYV"
        self.mode: tuple[int, int, float] | None = None
        self.count = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def set(self, prop: int, value: float) -> bool:
        if prop == cv2.CAP_PROP_FOURCC:
            self.fourcc = int(value).to_bytes(4, "little").decode()
            return True
        if prop in self.asked:
            self.asked[prop] = value
            return True
        return False

    def _pick(self) -> tuple[int, int, float]:
        w, h = self.asked[cv2.CAP_PROP_FRAME_WIDTH], self.asked[cv2.CAP_PROP_FRAME_HEIGHT]
        modes = [m for m in self.MODES if self.fourcc == "MJPG" or m[0] <= 640]
        return min(modes, key=lambda m: abs(m[0] - w) + abs(m[1] - h))

    def get(self, prop: int) -> float:
        mode = self.mode or self._pick()
        if prop == cv2.CAP_PROP_FPS:
            return mode[2]
        if prop == cv2.CAP_PROP_FOURCC:
            return float(int.from_bytes(self.fourcc.encode(), "little"))
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(mode[0])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(mode[1])
        return 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.mode is None:
            self.mode = self._pick()
        time.sleep(1.0 / self.mode[2])
        self.count += 1
        img = np.full((self.mode[1], self.mode[0], 3), self.count % 256, np.uint8)
        return True, img

    def release(self) -> None:
        self.released = True


def _fake_machine(root: Path) -> None:
    (root / "dev").mkdir()
    for n, name, index in (
        (0, "HD Webcam C270", "0"),
        (1, "HD Webcam C270", "1"),
        (2, "OBS Virtual Camera", "0"),
    ):
        (root / "dev" / f"video{n}").touch()
        sysfs = root / "sys/class/video4linux" / f"video{n}"
        sysfs.mkdir(parents=True)
        (sysfs / "name").write_text(name + "\n")
        (sysfs / "index").write_text(index + "\n")
    (root / "dev" / "video-not-a-camera").touch()


def test_list_cameras_reads_dev_and_sysfs_names(tmp_path: Path) -> None:
    _fake_machine(tmp_path)
    cams = list_cameras(tmp_path, platform="linux")
    assert cams == [
        CameraInfo(0, "/dev/video0", "HD Webcam C270", True),
        CameraInfo(1, "/dev/video1", "HD Webcam C270", False),
        CameraInfo(2, "/dev/video2", "OBS Virtual Camera", True),
    ]
    text = format_cameras(cams)
    assert "/dev/video2" in text and "OBS Virtual Camera" in text and "(metadata node)" in text
    assert list_cameras(tmp_path, platform="darwin") == []
    assert "--input 0" in format_cameras([])


def test_camera_selection_by_index_path_and_name(tmp_path: Path) -> None:
    _fake_machine(tmp_path)
    cams = list_cameras(tmp_path, platform="linux")
    assert all(is_camera_spec(s) for s in ("0", "/dev/video3", "camera:webcam"))
    assert not is_camera_spec("clip.mp4") and not is_camera_spec("rtsp://x/1")
    assert resolve_camera("1", cams) == 1
    assert resolve_camera("/dev/video2", cams) == 2
    assert resolve_camera("camera:webcam", cams) == 0  # the metadata node is not a candidate
    assert resolve_camera("camera:OBS", cams) == 2
    assert resolve_camera("camera:2", cams) == 2
    with pytest.raises(SourceError, match="no camera named like 'Logitech'.*0: HD Webcam C270"):
        resolve_camera("camera:Logitech", cams)
    with pytest.raises(ValueError, match="matches 2 cameras"):
        resolve_camera("camera:cam", cams)


def test_request_validation_and_size_parsing() -> None:
    assert parse_size("1280x720") == (1280, 720)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("720p")
    with pytest.raises(ValueError, match="both width and height"):
        CameraRequest(width=640)
    with pytest.raises(ValueError, match="fps"):
        CameraRequest(fps=0)
    assert CameraRequest(1280, 720, 30).describe() == "1280x720 @ 30 fps MJPG"


def test_open_camera_negotiates_and_logs_the_answer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _fake_machine(tmp_path)
    cams = list_cameras(tmp_path, platform="linux")
    made: list[SyntheticCamera] = []

    def factory(i: int) -> SyntheticCamera:
        made.append(SyntheticCamera(i))
        return made[-1]

    caplog.set_level(logging.INFO, logger="stream.media.cameras")
    src = open_camera("camera:webcam", CameraRequest(1280, 720, 30), cameras=cams, capture_factory=factory)
    try:
        assert made[0].index == 0 and made[0].fourcc == "MJPG"
        assert (src.info.width, src.info.height) == (1280, 720) and src.info.is_live
        assert 20 < src.info.fps < 36  # measured, not the reported 30
        frames = [f for _, f in zip(range(3), src, strict=False)]
        assert [f.bgr_u8.shape for f in frames] == [(720, 1280, 3)] * 3
    finally:
        src.close()
    line = next(r.getMessage() for r in caplog.records if "asked" in r.getMessage())
    assert "camera 0: asked 1280x720 @ 30 fps MJPG; answered 1280x720, reports 30 fps" in line
    assert "format MJPG" in line


def test_a_size_the_camera_lacks_is_warned_with_what_it_delivers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stream.media.cameras")
    req = CameraRequest(1920, 1080, 30, fourcc="YUYV")  # without MJPG this camera stops at 640x480
    src = open_camera("0", req, capture_factory=SyntheticCamera, measure_frames=4)
    src.close()
    assert (src.info.width, src.info.height) == (640, 480)
    text = caplog.text
    assert "delivers 640x480, not the 1920x1080 asked for" in text


def test_cli_list_cameras_prints_this_machines_list(capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    assert main(["--list-cameras"]) == 0
    assert capsys.readouterr().out.strip() == format_cameras(list_cameras())
