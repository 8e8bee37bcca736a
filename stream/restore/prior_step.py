"""The face-prior step of the per-frame flow: for each face being restored, the face mesh of its crop,
the prior fitted to what is visible (per track: causal coefficient smoothing and identity memory, see
:class:`engines.prior.track.TrackPrior`), and the guide image the generator takes as its ``prior`` input
(:func:`engines.prior.render.blend_prior`: visible pixels as they are, the prior in the hole).

The mesh is the step's largest cost on a CPU (mediapipe, ~60 % of it), so it runs on every
``mesh_every``-th frame of a track (``--mesh-every``; 1 by default, 2 in ``--preset realtime``) and the frames between reuse its landmarks: the crop is
already aligned by the tracker's smoothed landmarks, so the face barely moves in it from one frame to the
next, and under the occluder the mesh only guesses (a closed mouth) anyway. The price, measured on the
masked talking clip: the restored region's flicker rises from 1.29x to 1.35x the real face's.

Host work (mediapipe and the fit run on the CPU): on the torch op set the crops come to the host once
and the guides go back as tensors on the crops' device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.base import is_torch_tensor
from engines.facemesh import FaceMesh, FaceMeshConfig
from engines.prior.fit import PriorFitter
from engines.prior.render import blend_prior
from engines.prior.track import TrackPrior

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
class _Track:
    mesh: FaceMesh
    prior: TrackPrior
    landmarks: np.ndarray | None = None
    frames: int = 0


class PriorStep:
    """Per-track face mesh runners and priors around one shared :class:`PriorFitter`; not thread-safe
    (it runs in the restore thread). ``reference``: an optional (S, S, 3) uint8 RGB canonical crop of the
    user's bare face (``--reference``), remembered by every new track before its first frame.
    ``mesh_every``: the mesh runs on every n-th frame of a track (see the module docstring)."""

    def __init__(
        self, fitter: PriorFitter, reference_rgb_u8: np.ndarray | None = None, *, mesh_every: int = 1
    ) -> None:
        if mesh_every < 1:
            raise ValueError(f"mesh_every must be >= 1, got {mesh_every}")
        self.fitter = fitter
        self.mesh_every = mesh_every
        self.mesh_runs = 0
        self._tracks: dict[int, _Track] = {}
        self._reference: tuple[np.ndarray, np.ndarray] | None = None
        self.mesh_misses = 0
        if reference_rgb_u8 is not None:
            with FaceMesh(FaceMeshConfig(static_image_mode=True)) as mesh:
                landmarks = mesh.landmarks(np.ascontiguousarray(reference_rgb_u8))
            if landmarks is None:
                raise ValueError("no face found in the reference photo")
            self._reference = (np.ascontiguousarray(reference_rgb_u8), landmarks)

    def _track(self, track_id: int) -> _Track:
        if track_id not in self._tracks:
            # Tracking mode: mediapipe follows the face from the previous frame of this track (faster and
            # steadier than a fresh detection in every frame), so one runner per track.
            track = TrackPrior(self.fitter)
            if self._reference is not None:
                track.load_reference(*self._reference)
            self._tracks[track_id] = _Track(FaceMesh(FaceMeshConfig(static_image_mode=False)), track)
        return self._tracks[track_id]

    def guides(self, track_ids: Sequence[int], crops_rgb01: Any, holes: Any) -> Any:
        """Guide images (M, 3, S, S) float32 rgb01 for M faces, of the crops' kind and device.

        ``crops_rgb01``: (M, 3, S, S) float32 RGB [0, 1] canonical crops; ``holes``: (M, S, S) or
        (M, 1, S, S) {0, 1} (bool or float) pixels to restore.
        """
        crops = _host_f32(crops_rgb01)
        hole_batch = _host_f32(holes).reshape(len(crops), crops.shape[2], crops.shape[3])
        out = np.empty_like(crops)
        for i, tid in enumerate(track_ids):
            t = self._track(tid)
            crop_rgb01 = np.ascontiguousarray(crops[i].transpose(1, 2, 0))
            crop_rgb_u8 = np.clip(np.rint(crop_rgb01 * 255.0), 0, 255).astype(np.uint8)
            hole = hole_batch[i]
            if t.landmarks is None or t.frames % self.mesh_every == 0:
                t.landmarks = t.mesh.landmarks(crop_rgb_u8)
                self.mesh_runs += 1
                if t.landmarks is None:
                    self.mesh_misses += 1
            t.frames += 1
            rendered = t.prior.process(crop_rgb_u8, hole, t.landmarks)
            out[i] = blend_prior(crop_rgb01, rendered, hole).transpose(2, 0, 1)
        return _like(out, crops_rgb01)

    def retain(self, alive_ids: Iterable[int]) -> None:
        """Close the runners of tracks that ended (a new face under a reused id starts afresh)."""
        alive = set(alive_ids)
        for tid in [t for t in self._tracks if t not in alive]:
            self._tracks.pop(tid).mesh.close()

    def reset(self) -> None:
        self.retain(())

    def close(self) -> None:
        self.reset()
