"""The array operations the per-frame flow (:mod:`stream.restore.processor`) runs, behind one protocol.

Two implementations: :class:`stream.restore.numpy_ops.NumpyOps` (OpenCV / numpy on host arrays, the CPU
path) and :class:`stream.restore.torch_frame_ops.TorchOps` (torch tensors: one upload per frame, crops,
masks and compositing on the device, ROI download; also runs on CPU tensors, which is how its parity with
the numpy ops is tested without a GPU). The processor never branches on which one it holds.

Arrays named ``*_dev`` below are the op set's own kind (numpy arrays or torch tensors on ``ops.device``);
the engines of :mod:`engines.base` accept both. Everything the processor reads on the host (the face
statistics) comes back as numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engines.crop import Alignment
from stream.errors import StreamError
from stream.faces.front_end import LocatedFaces, crop_within_frame
from stream.restore.clock import StageClock

# Columns of the (N, 5) int64 face statistics every op set computes in one go (one device -> host
# transfer on a GPU): hole pixel count, then the first/last row and first/last column of the mask's
# support (meaningless for an empty mask).
STAT_HOLE_PX, STAT_EXTENT = 0, slice(1, 5)


class EngineOutputError(StreamError, ValueError):
    """A network returned something other than the tensor contract of :mod:`engines.base` promises."""


@dataclass(frozen=True)
class StagedFrame:
    """A frame after ``ops.stage``: its located faces, and whatever the op set prepared for them.

    ``frame_bgr_u8``: the (H, W, 3) uint8 BGR host frame (never modified). ``faces``: what
    :meth:`stream.faces.front_end.FaceFrontEnd.locate` found. ``within``: per face, whether the whole
    crop comes from inside the frame (else the crop holds border fill that must never be pasted).
    ``prepared``: the op set's own data (the torch ops: the uploaded face region); ``stage_ms``: host
    wall-clock of ``ops.stage``. ``landmarks``: face-mesh landmarks per track found ahead for the face
    prior (:meth:`stream.restore.prior_step.PriorStep.landmarks_ahead`), ``mesh_ms`` their wall-clock.
    """

    frame_bgr_u8: np.ndarray
    faces: LocatedFaces
    within: tuple[bool, ...]
    stage_ms: float
    prepared: Any = None
    landmarks: Mapping[int, np.ndarray | None] = field(default_factory=dict)
    mesh_ms: float = 0.0

    def __post_init__(self) -> None:
        f = self.frame_bgr_u8
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 BGR, got {f.shape} {f.dtype}")
        if len(self.within) != len(self.faces):
            raise ValueError(f"need one 'within' flag per face ({len(self.faces)}), got {len(self.within)}")

    @classmethod
    def of(
        cls, frame_bgr_u8: np.ndarray, faces: LocatedFaces, stage_ms: float, prepared: Any = None
    ) -> StagedFrame:
        hw = (int(frame_bgr_u8.shape[0]), int(frame_bgr_u8.shape[1]))
        within = tuple(crop_within_frame(hw, a) for a in faces.alignments)
        return cls(frame_bgr_u8, faces, within, stage_ms, prepared)

    @property
    def alignments(self) -> tuple[Alignment, ...]:
        return self.faces.alignments

    @property
    def track_ids(self) -> tuple[int, ...]:
        return self.faces.track_ids

    def __len__(self) -> int:
        return len(self.faces)


class FrameOps(Protocol):
    """What the per-frame flow needs from a device. One instance per video (it holds the mask history),
    called from one thread, except :meth:`stage`, which may run in the thread before (see
    :class:`stream.restore.overlap.LocateAhead`).

    ``device``: "cpu" or "cuda:N". ``timing_keys``: the keys of the reports' ``timings_ms``.
    ``overlaps``: whether staging frame N+1 in its own thread pays while frame N is restored.
    """

    device: str
    timing_keys: tuple[str, ...]
    overlaps: bool

    def stage(self, frame_bgr_u8: np.ndarray, faces: LocatedFaces) -> StagedFrame:
        """Prepare the located faces of a host frame (the torch ops start the upload here)."""
        ...

    def session(self, staged: StagedFrame | None) -> AbstractContextManager[StageClock]:
        """Context for one frame's device work (inference mode, the compute stream, waiting for the
        upload of ``staged``); yields the frame's clock, reset. None: device work without a frame
        (engine warm-up)."""
        ...

    def reserve(self, frame_hw: tuple[int, int] | None) -> None:
        """Allocate what frames of ``frame_hw`` need (the torch ops' pinned buffers) before they come,
        and wait for the device work issued so far."""
        ...

    def warp_crops(self, staged: StagedFrame) -> tuple[Any, Any | None]:
        """``(crops_rgb01_dev, inside_dev)``: (N, 3, S, S) float32 RGB [0, 1] canonical crops of every
        face, and (N, S, S) float32 {0, 1} 'crop pixel came from the frame' masks, None when every crop
        lies within the frame."""
        ...

    def engine_output(
        self, outputs: Mapping[str, Any], name: str, expected: tuple[int, ...], role: str
    ) -> Any:
        """``outputs[name]`` as float32 of the op set's kind; EngineOutputError unless it has ``expected`` shape."""
        ...

    def smooth(self, track_ids: Sequence[int], probs_dev: Any) -> Any:
        """Per-track causal smoothing of this frame's occlusion probabilities (N, 1, S, S) float32 [0, 1];
        returns the feathered masks (N, S, S) float32 [0, 1]."""
        ...

    def keep_inside(self, masks_dev: Any, inside_dev: Any, within: Sequence[bool]) -> Any:
        """``masks_dev`` with the faces not ``within`` the frame multiplied by their inside mask."""
        ...

    def face_stats(self, masks_dev: Any, holes_dev: Any) -> np.ndarray:
        """(N, 5) int64 on the host, columns as :data:`STAT_HOLE_PX` / :data:`STAT_EXTENT`; on a GPU the
        frame's one mid-frame sync."""
        ...

    def take(self, batch_dev: Any, index: Sequence[int]) -> Any:
        """The faces ``index`` of a batch (the batch itself when ``index`` is every face, in order)."""
        ...

    def as_hole_batch(self, holes_dev: Any) -> Any:
        """(M, S, S) bool holes -> the generator's (M, 1, S, S) float32 {0, 1} ``mask`` input."""
        ...

    def paste(
        self, staged: StagedFrame, faces: Sequence[int], restored_dev: Any, masks_dev: Any, stats: np.ndarray
    ) -> np.ndarray:
        """A new (H, W, 3) uint8 BGR host frame: the staged frame with the restored crops (M, 3, S, S)
        float32 RGB of faces ``faces`` blended in, alpha = their masks (M, S, S); ``stats``: their rows
        of :meth:`face_stats`. Pixels under alpha 0 keep their bytes; faces stack in order. Times its own
        ``composite`` (and ``download``) stages on the session's clock."""
        ...

    def stage_timings(self, staged: StagedFrame) -> dict[str, float]:
        """Timings of :meth:`stage` (the torch ops' ``upload``), read once the frame is done."""
        ...

    def retain(self, track_ids: frozenset[int]) -> None:
        """Drop the mask history of every track not in ``track_ids``."""
        ...

    def reset(self) -> None:
        """Forget all mask history (a new video)."""
        ...
