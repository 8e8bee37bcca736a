"""Reading and writing the evaluation clips: H.264 video through PyAV and per-frame ground truth (npz).

Clips are written losslessly (libx264 ``qp 0``, yuv420p) so that the ground truth is exactly what a
decoder gives back: the only loss is the 4:2:0 colour subsampling, which the clean clip, the masked
clip and the product's input all share. Colour conversion copies the product's sink and source (BT.709
tags, accurate rounding, full chroma interpolation on the way back), so a frame read here is the frame
the product reads, and the product's output is read back the way it was meant. The product's own output is re-encoded by its sink (lossy);
that is part of what a user gets and is measured as such (see :mod:`benchmarks.bare_faces`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

LOSSLESS_OPTIONS = {"qp": "0", "preset": "veryfast"}
# The same conversions as stream/media (sinks: BGR -> BT.709 limited-range yuv420p; sources: back with
# accurate rounding and full chroma interpolation, honouring tags), so round trips are unbiased.
_TO_YUV = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
_TO_BGR = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_BT709 = 1  # AVCOL_SPC_BT709 == AVCOL_PRI_BT709 == AVCOL_TRC_BT709
_UNSPECIFIED = 2  # AVCOL_SPC_UNSPECIFIED


def frame_to_bgr_u8(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8 BGR of a decoded frame, as the product's source reads it (untagged HD = BT.709)."""
    src = Colorspace.ITU709 if frame.colorspace == _UNSPECIFIED and frame.height >= 720 else None
    return frame.to_ndarray(format="bgr24", interpolation=_TO_BGR, src_colorspace=src)


class ClipError(ValueError):
    """A clip or its ground-truth file is missing, unreadable or inconsistent."""


class VideoWriter:
    """Writes (H, W, 3) uint8 BGR frames to an H.264 mp4 at a constant frame rate; a context manager.

    ``lossless`` (default) uses ``qp 0``; otherwise ``crf`` is passed to libx264. Frame k gets pts k in a
    1/fps time base, so the file plays at ``fps`` and every frame survives (no frame-rate conversion).
    """

    def __init__(
        self, path: Path, width: int, height: int, fps: int, *, lossless: bool = True, crf: int = 18
    ) -> None:
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ClipError(f"yuv420p needs a positive even frame size, got {width}x{height}")
        if fps <= 0:
            raise ClipError(f"fps must be > 0, got {fps}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.size = path, (height, width)
        self._container = av.open(str(path), "w")
        options = LOSSLESS_OPTIONS if lossless else {"crf": str(crf), "preset": "veryfast"}
        self._stream = self._container.add_stream("libx264", rate=fps, options=dict(options))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        cc = self._stream.codec_context
        cc.colorspace = cc.color_primaries = cc.color_trc = _BT709
        cc.color_range = int(ColorRange.MPEG)
        self._stream.time_base = cc.time_base = Fraction(1, fps)
        # Header now, as the product's sink does: packets then mux in the stream's final time base.
        self._container.start_encoding()
        # The muxer may pick its own time base (mp4: 1/15360) at the header: stamp frames in that one.
        self._time_base = self._stream.time_base or Fraction(1, fps)
        self._fps = fps
        self.frames = 0

    def write(self, bgr_u8: np.ndarray) -> None:
        if bgr_u8.shape != (*self.size, 3) or bgr_u8.dtype != np.uint8:
            raise ClipError(
                f"frame must be {(*self.size, 3)} uint8 BGR for {self.path}, got {bgr_u8.shape} {bgr_u8.dtype}"
            )
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr_u8), format="bgr24").reformat(
            format="yuv420p",
            interpolation=_TO_YUV,
            dst_colorspace=Colorspace.ITU709,
            dst_color_range=ColorRange.MPEG,
        )
        vf.pts = round(Fraction(self.frames, self._fps) / self._time_base)
        vf.time_base = self._time_base
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and write the trailer (always: a closed writer leaves a playable file)."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None  # type: ignore[assignment]

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """Every decoded frame of a video file as (H, W, 3) uint8 BGR, in order."""
    if not path.is_file():
        raise ClipError(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame_to_bgr_u8(frame)
    except av.error.FFmpegError as exc:
        raise ClipError(f"cannot decode {path}: {exc}") from exc


def read_frames(path: Path) -> np.ndarray:
    """All frames of a (short) video as (T, H, W, 3) uint8 BGR."""
    frames = list(iter_frames(path))
    if not frames:
        raise ClipError(f"no video frames in {path}")
    return np.stack(frames)


@dataclass(frozen=True)
class GroundTruth:
    """Per-frame truth of one clip, in frame coordinates.

    ``masks``: (T, H, W) bool, True where the synthetic occluder covers the face (alpha >= 0.5; all
    False on a bare clip). ``segments``: (T,) int32, the still (or shot) each frame shows; frame-to-frame
    change is only measured inside one segment. ``face_matrices``: (T, 2, 3) float64 similarity maps from
    frame pixels to the 256 px canonical face crop (:mod:`engines.crop`) of the clean face.
    """

    masks: np.ndarray
    segments: np.ndarray
    face_matrices: np.ndarray

    def __post_init__(self) -> None:
        m, s, f = self.masks, self.segments, self.face_matrices
        if m.ndim != 3 or m.dtype != np.bool_:
            raise ClipError(f"masks must be (T, H, W) bool, got {m.shape} {m.dtype}")
        t = m.shape[0]
        if s.shape != (t,) or not np.issubdtype(s.dtype, np.integer):
            raise ClipError(f"segments must be ({t},) integers, got {s.shape} {s.dtype}")
        if f.shape != (t, 2, 3) or f.dtype != np.float64:
            raise ClipError(f"face_matrices must be ({t}, 2, 3) float64, got {f.shape} {f.dtype}")

    @property
    def frames(self) -> int:
        return int(self.masks.shape[0])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, masks=self.masks, segments=self.segments, face_matrices=self.face_matrices)

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        if not path.is_file():
            raise ClipError(f"ground-truth file not found: {path}")
        with np.load(path) as data:
            missing = {"masks", "segments", "face_matrices"} - set(data.files)
            if missing:
                raise ClipError(f"{path} lacks {sorted(missing)} (has {sorted(data.files)})")
            return cls(
                masks=data["masks"].astype(bool),
                segments=data["segments"].astype(np.int32),
                face_matrices=data["face_matrices"].astype(np.float64),
            )
