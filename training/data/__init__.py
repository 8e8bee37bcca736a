"""Training and evaluation data: occlusion synthesis, augmentation, face alignment, datasets.

- :mod:`training.data.occlusion`: ``synthesize`` / ``render_facemask`` / ``SynthesisConfig`` (numpy + OpenCV
  only; renderers live in :mod:`~training.data.facemask` and :mod:`~training.data.occluders`).
- :mod:`training.data.augment`: ``augment_pair`` / ``AugmentConfig``.
- :mod:`training.data.faces`: YuNet + :mod:`engines.crop` alignment, manifests, ``split_by_person``.
- :mod:`training.data.datasets`: torch datasets (``FaceFolderDataset``, ``ManifestFaceDataset``,
  ``VideoFramesDataset``, ``FMORDataset``, ``MixedTrainingSet``).
- ``python -m training.data.build``: FMOR-layout evaluation sets.

Nothing here imports torch at package import time.
"""

from __future__ import annotations

from training.data.occlusion import Occlusion, SynthesisConfig, render_facemask, synthesize

__all__ = ["Occlusion", "SynthesisConfig", "render_facemask", "synthesize"]
