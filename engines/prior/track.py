"""The prior for one tracked face: fit -> identity memory -> causal smoothing -> render, in one call."""

from __future__ import annotations

import numpy as np

from engines.prior.fit import PriorFit, PriorFitter
from engines.prior.memory import IdentityMemory, MemoryConfig
from engines.prior.render import RenderedPrior, render_prior
from engines.prior.smoother import CoefficientSmoother, SmootherConfig


class TrackPrior:
    """Per-track state (smoother, identity memory) around a shared :class:`PriorFitter`; not thread-safe.

    Call :meth:`process` once per frame with the track's canonical crop, its occlusion mask and the mesh
    landmarks of that crop; :meth:`reset` when the track ends or the scene cuts.
    """

    def __init__(
        self,
        fitter: PriorFitter,
        smoother: SmootherConfig | None = None,
        memory: MemoryConfig | None = None,
        *,
        remember: bool = True,
    ) -> None:
        self.fitter = fitter
        self.smoother = CoefficientSmoother(fitter.model, smoother, fitter.config)
        self.memory = IdentityMemory(fitter, memory) if remember else None
        self.last_fit: PriorFit | None = None

    def process(
        self, crop_rgb_u8: np.ndarray, occlusion_f32: np.ndarray, landmarks_px: np.ndarray | None
    ) -> RenderedPrior:
        """(S, S, 3) uint8 RGB crop, (S, S) float32 occlusion in [0, 1], (468|478, 2|3) crop-pixel landmarks
        (None where the mesh found no face: the mean shape is used, see :meth:`PriorFitter.fit`)
        -> the prior rendered into the crop (rgb01 + alpha; alpha 0 away from the occluded region)."""
        prior = self.memory.texture_prior() if self.memory is not None else None
        fit = self.fitter.fit(crop_rgb_u8, occlusion_f32, landmarks_px, texture_prior=prior)
        resets = self.smoother.resets
        fit = self.smoother.update(fit)
        if self.memory is not None:
            if self.smoother.resets != resets:
                self.memory.reset()  # a new identity: the remembered face is someone else's
            self.memory.observe(crop_rgb_u8, occlusion_f32, fit)
        self.last_fit = fit
        texture = self.memory.texture_for(fit) if self.memory is not None else None
        # Only the occluded part is ever shown: draw just the triangles that reach it.
        return render_prior(
            self.fitter, fit, crop_rgb_u8.shape[0], texture_rgb01=texture, region=occlusion_f32 > 0.05
        )

    def load_reference(self, crop_rgb_u8: np.ndarray, landmarks_px: np.ndarray) -> None:
        """Remember an unoccluded reference crop of this person up front (``--reference photo.jpg``)."""
        if self.memory is None:
            raise RuntimeError("this TrackPrior was made with remember=False")
        self.memory.load_reference(crop_rgb_u8, landmarks_px)

    def reset(self) -> None:
        self.smoother.reset()
        if self.memory is not None:
            self.memory.reset()
        self.last_fit = None
