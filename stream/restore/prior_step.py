"""The face-prior step of the per-frame flow: for each face being restored, the face mesh of its crop,
the prior fitted to what is visible (per track: causal coefficient smoothing and identity memory, see
:class:`engines.prior.track.TrackPrior`), and the guide image the generator takes as its ``prior`` input
(:func:`engines.prior.render.blend_prior`: visible pixels as they are, the prior in the hole).

The mesh is the step's largest cost on a CPU (mediapipe), and it needs only the frame and the face's
alignment, not the mask: so it runs in :meth:`FrameProcessor.locate`, beside face detection
(:meth:`PriorStep.landmarks_ahead`), for the tracks that were being restored when that frame was located.
With ``--locate-ahead`` that is the faces thread, so the mesh of frame N+1 runs while frame N is
restored; in one thread it runs just before the frame's restoration, as before. A face whose restoration
has only just begun has no landmarks ahead on its first frame(s); :meth:`PriorStep.guides` meshes its crop
itself (mediapipe's static mode, one runner owned by the restore thread). Bare faces are never meshed.

The mesh runs on every ``mesh_every``-th frame of a track (``--mesh-every``; 1 by default, 2 in ``--preset
realtime``) and the frames between reuse its landmarks: the crop is already aligned by the tracker's
smoothed landmarks, so the face barely moves in it from one frame to the next, and under the occluder the
mesh only guesses (a closed mouth) anyway. The price, measured on the masked talking clip: the restored
region's flicker rises from 1.29x to 1.35x the real face's.

Threads: the tracking-mode runners (one per track) belong to the thread that calls
:meth:`~PriorStep.landmarks_ahead`, the fitters, priors and the static runner to the one that calls
:meth:`~PriorStep.guides`, so no runner is ever used by two threads. Host work (mediapipe and the fit run on
the CPU): on the torch op set the crops come to the host once and the guides go back as tensors on the
crops' device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.base import is_torch_tensor
from engines.crop import warp_to_crop
from engines.facemesh import FaceMesh, FaceMeshConfig
from engines.prior.fit import PriorFitter
from engines.prior.render import blend_prior
from engines.prior.track import TrackPrior
from stream.faces.front_end import LocatedFaces

logger = logging.getLogger(__name__)


def _host_f32(batch: Any) -> np.ndarray:
    if is_torch_tensor(batch):
        return np.asarray(batch.detach().float().cpu().numpy(), dtype=np.float32)
    return np.asarray(batch, dtype=np.float32)


def _like(array: np.ndarray, reference: Any) -> Any:
    """``array`` as the kind of ``reference``: a torch tensor on its device, or numpy as it is."""
    if is_torch_tensor(reference):
        import torch

        return torch.from_numpy(array).to(reference.device)
    return array


@dataclass
class _Mesh:
    """A track's tracking-mode mesh runner and its latest landmarks (owned by the locate thread)."""

    runner: FaceMesh
    landmarks: np.ndarray | None = None
    frames: int = 0


def _crop_rgb_u8(crop_rgb01_chw: np.ndarray) -> np.ndarray:
    """(3, S, S) float32 rgb01 -> (S, S, 3) uint8 RGB; exact for crops made as u8 / 255."""
    crop = np.ascontiguousarray(crop_rgb01_chw.transpose(1, 2, 0))
    return np.clip(np.rint(crop * 255.0), 0, 255).astype(np.uint8)


class PriorStep:
    """Per-track face mesh runners and priors around one shared :class:`PriorFitter` (threads: see the
    module docstring). ``reference``: an optional (S, S, 3) uint8 RGB canonical crop of the user's bare face
    (``--reference``), remembered by every new track before its first frame. ``mesh_every``: the mesh runs on
    every n-th frame of a track (see the module docstring).

    Counters: ``mesh_runs`` / ``mesh_misses`` (ahead, tracking mode), ``fallback_runs`` (in
    :meth:`guides`, static mode, for faces without landmarks ahead)."""

    def __init__(
        self, fitter: PriorFitter, reference_rgb_u8: np.ndarray | None = None, *, mesh_every: int = 1
    ) -> None:
        if mesh_every < 1:
            raise ValueError(f"mesh_every must be >= 1, got {mesh_every}")
        self.fitter = fitter
        self.mesh_every = mesh_every
        self.mesh_runs = 0
        self.mesh_misses = 0
        self.fallback_runs = 0
        self._meshes: dict[int, _Mesh] = {}  # the locate thread's
        self._priors: dict[int, TrackPrior] = {}  # the restore thread's
        self._static: FaceMesh | None = None  # the restore thread's
        self._reference: tuple[np.ndarray, np.ndarray] | None = None
        if reference_rgb_u8 is not None:
            with FaceMesh(FaceMeshConfig(static_image_mode=True)) as mesh:
                landmarks = mesh.landmarks(np.ascontiguousarray(reference_rgb_u8))
            if landmarks is None:
                raise ValueError("no face found in the reference photo")
            self._reference = (np.ascontiguousarray(reference_rgb_u8), landmarks)

    def landmarks_ahead(
        self, frame_bgr_u8: np.ndarray, faces: LocatedFaces, wanted: frozenset[int]
    ) -> dict[int, np.ndarray | None]:
        """Mesh landmarks (crop pixels; None where the mesh found no face) of the located faces whose track
        is in ``wanted``, from their canonical crops of ``frame_bgr_u8``; the runners of tracks no longer
        alive are closed. Call it from one thread, frames in order."""
        for tid in [t for t in self._meshes if t not in faces.alive_ids]:
            self._meshes.pop(tid).runner.close()
        out: dict[int, np.ndarray | None] = {}
        for alignment, tid in zip(faces.alignments, faces.track_ids, strict=True):
            if tid not in wanted:
                continue
            mesh = self._meshes.get(tid)
            if mesh is None:
                # Tracking mode: mediapipe follows the face from this track's previous frame (faster and
                # steadier than a fresh detection in every frame), so one runner per track.
                mesh = self._meshes[tid] = _Mesh(FaceMesh(FaceMeshConfig(static_image_mode=False)))
            if mesh.landmarks is None or mesh.frames % self.mesh_every == 0:
                # The same bytes the op set's crop has (the same warp of the same frame).
                crop = np.ascontiguousarray(warp_to_crop(frame_bgr_u8, alignment)[:, :, ::-1])
                mesh.landmarks = mesh.runner.landmarks(crop)
                self.mesh_runs += 1
                if mesh.landmarks is None:
                    self.mesh_misses += 1
            mesh.frames += 1
            out[tid] = mesh.landmarks
        return out

    def _prior(self, track_id: int) -> TrackPrior:
        if track_id not in self._priors:
            track = TrackPrior(self.fitter)
            if self._reference is not None:
                track.load_reference(*self._reference)
            self._priors[track_id] = track
        return self._priors[track_id]

    def _fallback_landmarks(self, crop_rgb_u8: np.ndarray) -> np.ndarray | None:
        if self._static is None:
            self._static = FaceMesh(FaceMeshConfig(static_image_mode=True))
        self.fallback_runs += 1
        return self._static.landmarks(crop_rgb_u8)

    def guides(
        self,
        track_ids: Sequence[int],
        crops_rgb01: Any,
        holes: Any,
        landmarks: Mapping[int, np.ndarray | None] | None = None,
    ) -> Any:
        """Guide images (M, 3, S, S) float32 rgb01 for M faces, of the crops' kind and device.

        ``crops_rgb01``: (M, 3, S, S) float32 RGB [0, 1] canonical crops; ``holes``: (M, S, S) or
        (M, 1, S, S) {0, 1} (bool or float) pixels to restore; ``landmarks``: what
        :meth:`landmarks_ahead` returned for this frame (a face missing from it is meshed here).
        """
        ahead = landmarks or {}
        crops = _host_f32(crops_rgb01)
        hole_batch = _host_f32(holes).reshape(len(crops), crops.shape[2], crops.shape[3])
        out = np.empty_like(crops)
        for i, tid in enumerate(track_ids):
            crop_rgb_u8 = _crop_rgb_u8(crops[i])
            points = ahead[tid] if tid in ahead else self._fallback_landmarks(crop_rgb_u8)
            hole = hole_batch[i]
            rendered = self._prior(tid).process(crop_rgb_u8, hole, points)
            out[i] = blend_prior(crops[i].transpose(1, 2, 0), rendered, hole).transpose(2, 0, 1)
        return _like(out, crops_rgb01)

    def retain(self, alive_ids: Iterable[int]) -> None:
        """Forget the priors of tracks that ended (a new face under a new id starts afresh); the restore
        thread's call (the locate thread's runners follow the tracks in :meth:`landmarks_ahead`)."""
        alive = set(alive_ids)
        for tid in [t for t in self._priors if t not in alive]:
            del self._priors[tid]

    def reset(self) -> None:
        """Start a new video: no priors, no runners (call it while no frame is in flight)."""
        self._priors.clear()
        for mesh in self._meshes.values():
            mesh.runner.close()
        self._meshes.clear()

    def close(self) -> None:
        self.reset()
        if self._static is not None:
            self._static.close()
            self._static = None
