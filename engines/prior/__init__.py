"""The face prior: a linear morphable face model fitted to the visible face and rendered into the crop.

mesh (:class:`engines.facemesh.FaceMesh`) -> :meth:`engines.prior.fit.PriorFitter.fit` ->
:func:`engines.prior.render.render_prior` -> per track :class:`engines.prior.smoother.CoefficientSmoother`.
"""
