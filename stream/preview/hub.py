"""The meeting point of the pipeline and the preview's HTTP threads: the newest frames, their JPEGs, the
live numbers.

The restore thread :meth:`PreviewHub.publish`-es references to each frame's input and output (no copy,
no encoding: the pipeline never waits for the preview). A JPEG is encoded only when a client asks for a
frame newer than the last one encoded, once per frame and kind however many clients watch, in the
asking client's thread. What the preview adds is measured per served frame of the restored stream: from
publish (the frame leaving the restore stage) to its JPEG written to a client's socket.

The hub also knows the faces of the newest frame (track ids and boxes), which the page lists for
"pick the face"; :meth:`PreviewHub.update_controls` accepts a pick only of a face it lists.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

from stream.preview.controls import ControlState, LiveControls
from stream.restore.config import TrackedFace
from stream.stats import ProgressUpdate, distribution

OUTPUT: Final = "output"
INPUT: Final = "input"
KINDS: Final = (OUTPUT, INPUT)
_OVERLAY_BGR: Final = np.array([0, 0, 255], np.float32)  # red: what the restoration replaced


@dataclass(frozen=True)
class Jpeg:
    """One encoded frame: ``seq`` (publish order), the JPEG bytes, when the frame was published
    (``time.perf_counter()``) and how long encoding took (ms)."""

    seq: int
    data: bytes
    published_at: float
    encode_ms: float

    def __post_init__(self) -> None:
        if self.seq < 1 or not self.data.startswith(b"\xff\xd8"):
            raise ValueError(f"a Jpeg needs seq >= 1 and JPEG data (FF D8 ...), got seq={self.seq}")


def overlay_bgr_u8(input_bgr_u8: np.ndarray, output_bgr_u8: np.ndarray) -> np.ndarray:
    """``output_bgr_u8`` with the pixels that differ from ``input_bgr_u8`` tinted red and outlined
    (both (H, W, 3) uint8 BGR). Those pixels are where the restored face was blended in: the occlusion
    mask as it was applied, feathered rim included."""
    changed = np.any(input_bgr_u8 != output_bgr_u8, axis=2)
    out = output_bgr_u8.copy()
    if changed.any():
        tinted = out[changed].astype(np.float32) * 0.55 + _OVERLAY_BGR * 0.45
        out[changed] = tinted.astype(np.uint8)
        contours, _ = cv2.findContours(changed.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (0, 0, 255), 1, cv2.LINE_AA)
    return out


class PreviewHub:
    """Newest frames and live numbers for the preview server. Thread-safe.

    ``jpeg_quality``: 1..100. ``window_s``: the span the live fps and latency are computed over.
    """

    def __init__(
        self, controls: LiveControls | None = None, *, jpeg_quality: int = 80, window_s: float = 1.0
    ) -> None:
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.controls = controls or LiveControls()
        self._quality = jpeg_quality
        self._window_s = window_s
        self._cond = threading.Condition()
        self._seq = 0
        self._input: np.ndarray | None = None
        self._output: np.ndarray | None = None
        self._published_at = 0.0
        self._faces: int | None = None
        self._tracks: tuple[TrackedFace, ...] = ()
        self._lost_track: int | None = None
        self._closed = False
        self._encode_locks = {k: threading.Lock() for k in KINDS}
        self._jpegs: dict[str, Jpeg | None] = dict.fromkeys(KINDS)
        self._served_ms: deque[float] = deque(maxlen=600)
        self._encode_ms: deque[float] = deque(maxlen=600)
        self._progress: deque[tuple[float, int, float]] = deque()  # (time, frames_out, latency_ms)
        self._last_update: ProgressUpdate | None = None

    # -- the pipeline's side ------------------------------------------------------------------

    def publish(
        self,
        input_bgr_u8: np.ndarray,
        output_bgr_u8: np.ndarray,
        faces: int | None,
        *,
        tracks: Sequence[TrackedFace] = (),
        lost_track: int | None = None,
    ) -> None:
        """Called by the restore thread for every frame: references to the (H, W, 3) uint8 BGR input as
        captured and the output as sent on (neither may be modified afterwards), how many faces were
        restored in it (None: not known), the faces sent to the networks (``tracks``) and, when the
        picked track has ended, its id (``lost_track``)."""
        with self._cond:
            self._seq += 1
            self._input, self._output = input_bgr_u8, output_bgr_u8
            self._published_at = time.perf_counter()
            self._faces = faces
            self._tracks = tuple(tracks)
            self._lost_track = lost_track
            self._cond.notify_all()

    def on_progress(self, update: ProgressUpdate) -> None:
        """A pipeline ``on_progress`` callback (render thread): feeds the live fps, latency and drops."""
        now = time.perf_counter()
        with self._cond:
            self._last_update = update
            self._progress.append((now, update.frames_out, update.latency_ms))
            while self._progress and now - self._progress[0][0] > self._window_s:
                self._progress.popleft()

    def close(self) -> None:
        """The run ended: wake every waiting client so its stream ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    # -- the server's side --------------------------------------------------------------------

    def track_ids(self) -> list[int]:
        """The track ids of the faces in the newest frame (what the page lists), in the frame's order."""
        with self._cond:
            return [t.track_id for t in self._tracks]

    def update_controls(self, changes: dict[str, object]) -> ControlState:
        """:meth:`LiveControls.update`, and a picked ``only_track`` must be a face of the newest frame
        (or the current pick): a ValueError names the faces there are."""
        tid = changes.get("only_track")
        if isinstance(tid, int) and not isinstance(tid, bool):
            ids = self.track_ids()
            if tid not in ids and tid != self.controls.only_track:
                raise ValueError(f"no face #{tid} in the current frame; its faces are {ids}")
        return self.controls.update(changes)

    def wait_jpeg(self, kind: str, after_seq: int, timeout_s: float) -> Jpeg | None:
        """The newest frame of ``kind`` ("output" or "input") with seq > ``after_seq`` as a JPEG, waiting
        up to ``timeout_s`` for one; None on timeout or once the hub is closed."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        deadline = time.perf_counter() + timeout_s
        with self._cond:
            while self._seq <= after_seq and not self._closed:
                left = deadline - time.perf_counter()
                if left <= 0 or not self._cond.wait(left):
                    if self._seq <= after_seq:
                        return None
            if self._seq <= after_seq:
                return None
        return self._encoded(kind)

    def _encoded(self, kind: str) -> Jpeg:
        with self._encode_locks[kind]:
            with self._cond:
                seq, inp, out, at = self._seq, self._input, self._output, self._published_at
                cached = self._jpegs[kind]
            if cached is not None and cached.seq == seq:
                return cached  # another client encoded this frame while we waited for the lock
            assert inp is not None and out is not None
            t0 = time.perf_counter()
            if kind == INPUT:
                img = inp
            elif self.controls.overlay:
                img = overlay_bgr_u8(inp, out)
            else:
                img = out
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
            if not ok:
                raise RuntimeError(f"JPEG encoding of a {img.shape} frame failed")
            ms = (time.perf_counter() - t0) * 1000.0
            jpeg = Jpeg(seq, buf.tobytes(), at, ms)
            with self._cond:
                self._jpegs[kind] = jpeg
                if kind == OUTPUT:
                    self._encode_ms.append(ms)
            return jpeg

    def served(self, jpeg: Jpeg, kind: str) -> None:
        """A client received ``jpeg`` (its bytes left our socket): records the preview's added latency."""
        if kind == OUTPUT:
            ms = (time.perf_counter() - jpeg.published_at) * 1000.0
            with self._cond:
                self._served_ms.append(ms)

    def served_ms(self) -> list[float]:
        """Per served restored frame: ms from publish to the JPEG written to a client (recent ones)."""
        with self._cond:
            return list(self._served_ms)

    def stats(self) -> dict[str, object]:
        """The page's live numbers, JSON-ready: fps and latency over the last ``window_s``, drops, faces in
        the newest frame (restored count, and ``tracks``: id, box x/y/w/h in frame pixels, restored), the
        controls (``only_track_lost``: the picked track has ended), and the preview's own cost."""
        now = time.perf_counter()
        with self._cond:
            window = [p for p in self._progress if now - p[0] <= self._window_s]
            update, faces, seq = self._last_update, self._faces, self._seq
            tracks, lost_track = self._tracks, self._lost_track
            served, encode = list(self._served_ms)[-60:], list(self._encode_ms)[-60:]
            size = None if self._output is None else self._output.shape[1::-1]
            ended = self._closed
        fps = 0.0
        if len(window) >= 2 and window[-1][0] > window[0][0]:
            fps = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
        lat = distribution([p[2] for p in window])
        state = self.controls.state
        return {
            "seq": seq,
            "frames": 0 if update is None else update.frames_out,
            "fps": round(fps, 2),
            "latency_ms_p50": lat["p50"],
            "latency_ms_p95": lat["p95"],
            "dropped": 0 if update is None else update.dropped,
            "faces": faces,
            "size": None if size is None else list(size),
            "paused": state.paused,
            "overlay": state.overlay,
            "only_track": state.only_track,
            # Only about the pick in force: right after a new pick, the frame shown was processed before it.
            "only_track_lost": state.only_track is not None and lost_track == state.only_track,
            "tracks": [
                {"id": t.track_id, "box": [round(v) for v in t.box_xywh], "restored": t.restored}
                for t in tracks
            ],
            "preview_ms_p50": distribution(served)["p50"],
            "jpeg_encode_ms_p50": distribution(encode)["p50"],
            "live": None if update is None else update.live,
            "ended": ended,
        }
