"""The face prior: a linear morphable face model fitted to the visible face and rendered into the crop.

Per face, on the canonical crop (``rgb_u8`` (S, S, 3), occlusion ``(S, S)`` float32, 1 = occluded):

1. landmarks: :meth:`engines.facemesh.FaceMesh.landmarks` (tracking mode, one runner per stream);
2. one call per frame and track: :meth:`engines.prior.track.TrackPrior.process` (fit to the visible
   pixels -> identity memory -> causal smoothing -> render), or the steps themselves:
   :meth:`engines.prior.fit.PriorFitter.fit`, :class:`engines.prior.smoother.CoefficientSmoother`,
   :class:`engines.prior.memory.IdentityMemory`, :func:`engines.prior.render.render_prior`;
3. :func:`engines.prior.render.blend_prior` pastes it into the occluded region (or a generator takes
   the rendered prior as an input).

The model file is loaded once with :func:`engines.prior.model.load_prior`; a :class:`PriorFitter` is
read-only and can be shared, the per-track objects cannot.
"""
