"""LPIPS distance for the quality benchmarks: ST-LPIPS (alex, shift-tolerant), lower = more alike.

What it is: the learned perceptual distance of Zhang et al. 2018 (LPIPS v0.1 head) on the shift-tolerant
AlexNet trunk of Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric", ECCV 2022 (stride-1
convolutions, reflection-padded blur-pool downsampling), so that a misalignment of a pixel or two (a
re-warped face crop) counts for little. 0 for identical images; at 256 px a 1-2 px shift gives ~0.04,
a blur (sigma 2) ~0.13, another picture ~0.5-0.7. Reported as ``lpips``; :data:`NOTE` names the
variant in the reports.

Where the weights come from: the PyPI wheel ``stlpips-pytorch`` 0.0.2 (the ``bench`` extra), file
``stlpips_pytorch/weights/vST0.0/alex_shift_tolerant.pth``. We read only that file, found with
``importlib.util.find_spec`` (which does not execute the package): the package's own code imports
torchvision (not installed here), IPython and torchsummary at import time.
The network is our definition (:mod:`benchmarks.lpips_net`), loaded with ``strict=True`` and
``weights_only=True``; ``tests/benchmarks/test_lpips.py`` checks it against the package's own
``stlpips.LPIPS`` (with stub modules for those imports).

Licence: the wheel's LICENSE is BSD-2-Clause (Copyright (c) 2022 Abhijay Ghildyal, Feng Liu; its PyPI
classifier says MIT), and the weights ship in that wheel; but its ``models_lpf/*.py`` files (the
anti-aliased network definitions, from Adobe's antialiased-cnns) carry "Copyright (c) 2019, Adobe Inc.
... Creative Commons Attribution-NonCommercial-ShareAlike 4.0", and the package does not say whether the
weights, trained on that architecture, fall under it too. We copy none of that code (our definition
reproduces the architecture and the layer names the weights need), read the weights for evaluation
only, and ship nothing of it in the product (``bench`` is not a run-time extra). Do not redistribute the
weights or the package's code for commercial use without clearing that. Also in
``benchmarks/results/README.md``.

Cost: ~0.27 s per 256 px pair on an idle 2-core CPU (~1.1-1.3 s with both cores busy elsewhere); one
forward per image, and :meth:`LpipsMetric.distances` computes the reference's once for all candidates.
Uses torch's current thread setting; never changes it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.metrics import as_rgb01

logger = logging.getLogger(__name__)

PACKAGE = "stlpips_pytorch"
DISTRIBUTION = "stlpips-pytorch"
WEIGHTS = Path("weights") / "vST0.0" / "alex_shift_tolerant.pth"
# Below ~22 px a side a blur's reflection padding fails; at 32 the deepest feature maps are 4x4.
MIN_SIDE = 32
INSTALL_HINT = f"pip install --no-deps {DISTRIBUTION}==0.0.2 (the bench extra)"


def package_version() -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def note(version: str | None = None) -> str:
    """What the reports say ``lpips`` is, e.g. "ST-LPIPS (alex, shift-tolerant; stlpips-pytorch 0.0.2)"."""
    return f"ST-LPIPS (alex, shift-tolerant; {DISTRIBUTION} {version or package_version() or '?'})"


NOTE = note("0.0.2")


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def find_weights() -> Path | None:
    """``alex_shift_tolerant.pth`` of the installed ``stlpips_pytorch`` package (not imported), or None."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / WEIGHTS
        if path.is_file():
            return path
    return None


class LpipsLoadError(RuntimeError):
    """The weight file is missing, unreadable, or does not match our network's keys and shapes."""


class LpipsMetric:
    """ST-LPIPS distances of (H, W, 3) RGB images (uint8 or float rgb01); CPU, eval mode, no grad."""

    def __init__(self, weights: Path) -> None:
        import torch

        from benchmarks.lpips_net import STLpipsAlex, binomial_filter

        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle / zip / OS errors share no base below Exception
            raise LpipsLoadError(f"cannot read LPIPS weights {weights}: {exc}") from exc
        net = STLpipsAlex()
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise LpipsLoadError(f"LPIPS weights {weights} do not fit our network: {exc}") from exc
        for name, buf in net.named_buffers():  # the file's blur filters must be the binomial we compute
            if name.endswith(".filt") and not torch.equal(buf, binomial_filter(buf.shape[0])):
                raise LpipsLoadError(f"LPIPS weights {weights}: {name} is not the 3x3 binomial blur")
        self._torch = torch
        self._net = net.eval().requires_grad_(False)
        self.weights = Path(weights)
        self.version = package_version()
        self.note = note(self.version)

    @classmethod
    def create_or_none(cls) -> LpipsMetric | None:
        """The metric, or None with one logged warning when torch or the weights (package) are missing or
        the weights do not load; the caller then leaves ``lpips`` out (null)."""
        if not torch_available():
            logger.warning("lpips metric left out: torch is not installed")
            return None
        path = find_weights()
        if path is None:
            logger.warning("lpips metric left out: %s is not installed (%s)", DISTRIBUTION, INSTALL_HINT)
            return None
        try:
            return cls(path)
        except LpipsLoadError as exc:
            logger.warning("lpips metric left out: %s", exc)
            return None

    def info(self) -> dict[str, Any]:
        """Provenance for a report: the note, the package version, the weight file's name and SHA-256."""
        digest = hashlib.sha256(self.weights.read_bytes()).hexdigest()
        return {"note": self.note, "version": self.version, "weights": self.weights.name, "sha256": digest}

    def _tensor(self, images: Sequence[np.ndarray]) -> Any:
        arrs = [as_rgb01(im, name="image") for im in images]
        shape = arrs[0].shape
        for a in arrs:
            if a.shape != shape:
                raise ValueError(f"images must have the same shape, got {shape} and {a.shape}")
        if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < MIN_SIDE:
            raise ValueError(f"images must be (H, W, 3) RGB with H, W >= {MIN_SIDE}, got {shape}")
        batch = np.stack(arrs).transpose(0, 3, 1, 2).astype(np.float32) * 2.0 - 1.0
        return self._torch.from_numpy(np.ascontiguousarray(batch))

    def distances(self, reference: np.ndarray, candidates: Sequence[np.ndarray]) -> list[float]:
        """LPIPS of each candidate against ``reference`` (one forward per image, the reference's shared)."""
        if len(candidates) == 0:
            return []
        x = self._tensor([reference, *candidates])
        with self._torch.inference_mode():
            feats = self._net.features(x)
            d = self._net.compare([f[:1] for f in feats], [f[1:] for f in feats])
        return [float(v) for v in d.tolist()]

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS between two (H, W, 3) RGB images of the same shape (uint8, or float rgb01); symmetric."""
        return self.distances(a, [b])[0]
