"""What encoding did to the pixels the product never meant to touch: PSNR outside the restored faces.

Outside a restored face the output should equal the input up to what the codec must do. A file sink
decodes its own packets again and, on sampled frames (those that carry ``Frame.reference_bgr_u8``,
the frame as decoded before restoration), compares the decoded output with what it was given over
the pixels the restore left bit-identical. The result is the codec's own loss outside the faces
(x264's default crf 23 gave ~36 dB; the default here is visually lossless).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import cast

import av
import numpy as np

from stream.media.sources import frame_to_bgr_u8  # the sources' unbiased colour conversion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fidelity:
    """PSNR (dB, 8-bit peak) over the pixels outside the restored faces, on ``frames`` sampled frames.

    ``mean_db`` is from the mean squared error over all sampled pixels; ``min_db`` the worst frame.
    ``inf`` means bit-identical. None values: nothing was sampled.
    """

    frames: int
    pixels: int
    mean_db: float | None
    min_db: float | None

    def __post_init__(self) -> None:
        if self.frames < 0 or self.pixels < 0:
            raise ValueError(f"frames and pixels must be >= 0, got {self.frames}, {self.pixels}")

    def summary(self) -> dict[str, float | int | None]:
        def finite(v: float | None) -> float | None:  # JSON has no inf: 99 dB stands for identical
            return None if v is None else min(v, 99.0)

        return {
            "frames": self.frames,
            "pixels": self.pixels,
            "mean_db": finite(self.mean_db),
            "min_db": finite(self.min_db),
        }


def psnr_db(mse: float) -> float:
    return math.inf if mse <= 0 else 10.0 * math.log10(255.0**2 / mse)


class FidelityMeter:
    """Decodes an encoder's packets (``feed``) and scores the sampled frames (``expect``) by pts."""

    def __init__(self, codec: str, extradata: bytes | None, max_pending: int = 64) -> None:
        self._dec = cast(av.VideoCodecContext, av.CodecContext.create(codec, "r"))
        if extradata:
            self._dec.extradata = extradata
        self._expected: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._max_pending = max_pending
        self._sq_sum = 0.0
        self._pixels = 0
        self._frames = 0
        self._min_db: float | None = None
        self._failed = False

    def expect(self, pts: int, written_bgr_u8: np.ndarray, reference_bgr_u8: np.ndarray) -> None:
        """Score the frame encoded with ``pts`` once decoded, over pixels where written == reference."""
        if self._failed or written_bgr_u8.shape != reference_bgr_u8.shape:
            return
        untouched = np.all(written_bgr_u8 == reference_bgr_u8, axis=2)
        if len(self._expected) >= self._max_pending:  # the decoder lost a frame; do not grow forever
            self._expected.pop(next(iter(self._expected)))
        self._expected[pts] = (written_bgr_u8, untouched)

    def feed(self, packet: av.Packet) -> None:
        """Decode one encoded packet (before it is muxed: muxing takes the packet's data)."""
        if self._failed:
            return
        try:
            for f in self._dec.decode(packet):
                self._score(f)
        except av.FFmpegError as e:
            self._failed = True
            self._expected.clear()
            log.warning("fidelity: decoding the output failed, PSNR outside the faces not measured: %s", e)

    def flush(self) -> None:
        if self._failed:
            return
        try:
            for f in self._dec.decode(None):
                self._score(f)
        except av.FFmpegError as e:
            log.warning("fidelity: flushing the decoder failed: %s", e)
        self._expected.clear()

    def _score(self, f: av.VideoFrame) -> None:
        want = self._expected.pop(f.pts, None) if f.pts is not None else None
        if want is None:
            return
        written, untouched = want
        h, w = written.shape[:2]

        got = frame_to_bgr_u8(f)[:h, :w]
        n = int(untouched.sum())
        if n == 0:
            return
        diff = got[untouched].astype(np.int32) - written[untouched].astype(np.int32)
        sq = float(np.square(diff).sum())
        self._sq_sum += sq
        self._pixels += n
        self._frames += 1
        db = psnr_db(sq / (n * 3))
        self._min_db = db if self._min_db is None else min(self._min_db, db)

    @property
    def result(self) -> Fidelity:
        mean = psnr_db(self._sq_sum / (self._pixels * 3)) if self._pixels else None
        return Fidelity(self._frames, self._pixels, mean, self._min_db)
