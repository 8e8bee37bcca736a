"""Training samples for generators that take the face prior: each sample gains ``prior`` (3, S, S) rgb01,
made from the occluded crop exactly as the product makes it at run time (:func:`engines.prior.guide.guide_image`:
face mesh of the occluded crop -> fit to the visible pixels -> render -> seam-corrected blend into the hole).

The mesh runs on the occluded crop, not the clean one, because that is all the product ever sees: a
generator trained on meshes of clean faces would learn to trust lips and chin points that, under a real
mask, are mediapipe's guess.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from engines.facemesh import FaceMesh, FaceMeshConfig
from engines.prior.fit import PriorFitter
from engines.prior.guide import guide_image
from engines.prior.model import load_prior

log = logging.getLogger(__name__)
Sample = dict[str, torch.Tensor]


class PriorGuide:
    """Computes the ``prior`` tensor of one sample; builds its mediapipe graph lazily, once per process
    (DataLoader workers each get their own: the graph cannot be pickled)."""

    def __init__(self, prior_path: str | Path, hole_threshold: float) -> None:
        self.prior_path = Path(prior_path)
        self.hole_threshold = hole_threshold
        self.fitter = PriorFitter(load_prior(self.prior_path))
        self._mesh: FaceMesh | None = None
        self.mesh_misses = 0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_mesh"] = None
        return state

    def __call__(self, sample: Sample) -> Sample:
        image, mask = sample["image"], sample["mask"]
        crop_rgb_u8 = np.ascontiguousarray(
            np.clip(np.rint(image.permute(1, 2, 0).numpy() * 255.0), 0, 255).astype(np.uint8)
        )
        # The trainer binarises the mask the same way before it reaches the generator.
        hole = (mask[0].numpy() > self.hole_threshold).astype(np.float32)
        if self._mesh is None:
            self._mesh = FaceMesh(FaceMeshConfig(static_image_mode=True))
        landmarks = self._mesh.landmarks(crop_rgb_u8)
        if landmarks is None:
            self.mesh_misses += 1
            if self.mesh_misses in (1, 10, 100, 1000):
                log.info(
                    "face mesh found no face in %d training crops so far (smooth fill used)", self.mesh_misses
                )
        guide = guide_image(self.fitter, crop_rgb_u8, hole, landmarks)
        out = dict(sample)
        out["prior"] = torch.from_numpy(np.ascontiguousarray(guide.transpose(2, 0, 1)))
        return out


class PriorGuidedDataset(Dataset[Sample]):
    """``base[k]`` with a ``prior`` tensor added (see the module docstring); same length and order."""

    def __init__(self, base: Dataset[Sample], guide: PriorGuide) -> None:
        self.base, self.guide = base, guide

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        return self.guide(self.base[index])
