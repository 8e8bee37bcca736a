"""The CPU op set of the per-frame flow: OpenCV and numpy on host arrays (see :mod:`stream.restore.ops`).

Faster than torch ops on a CPU: OpenCV's byte warps, morphology and blurs are vectorised fixed point.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np

from engines.crop import warp_to_crop
from stream.faces.front_end import LocatedFaces, inside_mask_from_alpha
from stream.restore.clock import StageClock
from stream.restore.composite import paste_back
from stream.restore.config import ProcessorConfig
from stream.restore.ops import EngineOutputError, StagedFrame
from stream.restore.smoother import MaskSmoother

# ``detect``: face detector + tracker; ``align``: alignment + crops; ``mask``: detector network +
# smoothing + hole statistics; ``restore``: generator network; ``composite``: frame copy + paste back.
NUMPY_TIMING_KEYS = ("detect", "align", "mesh", "mask", "prior", "restore", "composite")


class NumpyOps:
    """:class:`stream.restore.ops.FrameOps` on host numpy arrays; engines are fed float32 NCHW RGB [0, 1].

    Mask smoothing and paste feathering as ``config`` says (``config.smoother``, ``config.paste_feather_px``).
    """

    device: str = "cpu"
    timing_keys: tuple[str, ...] = NUMPY_TIMING_KEYS
    overlaps: bool = False

    def __init__(self, config: ProcessorConfig) -> None:
        self.config = config
        self.smoother = MaskSmoother(config.smoother)
        self.paste_feather_px = config.paste_feather_px
        self._clock = StageClock(NUMPY_TIMING_KEYS)

    def stage(self, frame_bgr_u8: np.ndarray, faces: LocatedFaces) -> StagedFrame:
        return StagedFrame.of(frame_bgr_u8, faces, 0.0)

    @contextmanager
    def session(self, staged: StagedFrame | None) -> Iterator[StageClock]:
        self._clock.reset()
        yield self._clock

    def reserve(self, frame_hw: tuple[int, int] | None) -> None:
        return None  # host arrays are allocated per frame by numpy/OpenCV; nothing to reserve

    def warp_crops(self, staged: StagedFrame) -> tuple[np.ndarray, np.ndarray | None]:
        frame = staged.frame_bgr_u8
        s = staged.alignments[0].crop_size
        n = len(staged)
        crops = np.empty((n, 3, s, s), dtype=np.float32)
        inside: np.ndarray | None = None
        # Why BGRA: OpenCV's 4-channel byte warp is vectorised (about twice as fast as the 3-channel one,
        # colour bit-identical), and the alpha channel, 255 in the frame and 0 in the border fill, says
        # for free which crop pixels came from inside the frame.
        frame_bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
        for i, alignment in enumerate(staged.alignments):
            crop_bgra = warp_to_crop(frame_bgra, alignment)
            # (S, S, 4) BGRA uint8 -> (3, S, S) RGB [0, 1] in one pass into the batch buffer.
            np.multiply(crop_bgra.transpose(2, 0, 1)[2::-1], np.float32(1.0 / 255.0), out=crops[i])
            if not staged.within[i]:
                if inside is None:
                    inside = np.ones((n, s, s), dtype=np.float32)
                inside[i] = inside_mask_from_alpha(crop_bgra[:, :, 3])
        return crops, inside

    def engine_output(
        self, outputs: Mapping[str, Any], name: str, expected: tuple[int, ...], role: str
    ) -> np.ndarray:
        if name not in outputs:
            raise EngineOutputError(f"the {role} engine must return {name!r}, got keys {sorted(outputs)}")
        array = np.asarray(outputs[name], dtype=np.float32)
        if array.shape != expected:
            raise EngineOutputError(
                f"the {role} engine's {name!r} must be {expected} float32, got {array.shape}"
            )
        return array

    def smooth(self, track_ids: Sequence[int], probs_dev: np.ndarray) -> np.ndarray:
        return np.stack([self.smoother.update(tid, probs_dev[i, 0]) for i, tid in enumerate(track_ids)])

    def keep_inside(
        self, masks_dev: np.ndarray, inside_dev: np.ndarray, within: Sequence[bool]
    ) -> np.ndarray:
        for i, w in enumerate(within):
            if not w:
                masks_dev[i] *= inside_dev[i]
        return masks_dev

    def face_stats(self, masks_dev: np.ndarray, holes_dev: np.ndarray) -> np.ndarray:
        n, s = masks_dev.shape[0], masks_dev.shape[-1]
        stats = np.zeros((n, 5), dtype=np.int64)
        stats[:, 0] = np.count_nonzero(holes_dev.reshape(n, -1), axis=1)
        support: np.ndarray = np.greater(masks_dev, 0)
        rows = np.asarray(support.any(axis=2))
        cols = np.asarray(support.any(axis=1))
        # argmax finds the first True; on the reversed axis, the last (as the torch ops compute it).
        stats[:, 1] = rows.argmax(axis=1)
        stats[:, 2] = (s - 1) - rows[:, ::-1].argmax(axis=1)
        stats[:, 3] = cols.argmax(axis=1)
        stats[:, 4] = (s - 1) - cols[:, ::-1].argmax(axis=1)
        return stats

    def take(self, batch_dev: np.ndarray, index: Sequence[int]) -> np.ndarray:
        return batch_dev if list(index) == list(range(len(batch_dev))) else batch_dev[list(index)]

    def as_hole_batch(self, holes_dev: np.ndarray) -> np.ndarray:
        return holes_dev[:, None].astype(np.float32)

    def paste(
        self,
        staged: StagedFrame,
        faces: Sequence[int],
        restored_dev: np.ndarray,
        masks_dev: np.ndarray,
        stats: np.ndarray,
    ) -> np.ndarray:
        self._clock.start("composite")
        frame = staged.frame_bgr_u8
        out = frame.copy()
        for j, i in enumerate(faces):
            paste_back(
                frame, restored_dev[j], masks_dev[j], staged.alignments[i], self.paste_feather_px, out=out
            )
        self._clock.stop("composite")
        return out

    def stage_timings(self, staged: StagedFrame) -> dict[str, float]:
        return {}

    def retain(self, track_ids: frozenset[int]) -> None:
        self.smoother.retain(track_ids)

    def reset(self) -> None:
        self.smoother.reset()
