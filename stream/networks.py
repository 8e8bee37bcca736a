"""The networks of a run: the option vocabulary, the default model directory for a device, and loading
the engines of a model directory: ``detector.onnx`` and ``generator.onnx`` always, ``segmenter.onnx``
(visible-face segmentation, paper 003) and ``prior.npz`` (the face prior) where the directory has them."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.assets import models_dir
from engines.base import Engine
from engines.runtime import DEVICE_CHOICES, PRECISION_CHOICES, parse_device, resolve_precision
from engines.select import BACKENDS, load_engine

if TYPE_CHECKING:
    from engines.triton_engine import TritonOptions
    from stream.restore.prior_step import PriorStep

logger = logging.getLogger(__name__)

MODELS_DIR = models_dir()
ROLES = ("detector", "generator")


def check_engine_choices(backend: str, device: str, precision: str) -> None:
    """ValueError naming the valid values when a backend / device / precision option is unknown."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {device!r}")
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")


def default_models_dir(device: str) -> Path:
    """The profile made for a resolved ``device``: ``full`` (256 px, the paper's) on a GPU, ``small`` on
    a CPU; a GPU without ``models/full`` gets ``small`` (logged)."""
    full, small = MODELS_DIR / "full", MODELS_DIR / "small"
    if parse_device(device)[0] == "cuda":
        if (full / "generator.onnx").is_file():
            return full
        logger.warning("models: no models/full for the GPU; using models/small")
    return small


@dataclass
class Engines:
    detector: Engine
    generator: Engine
    segmenter: Engine | None = None

    def close(self) -> None:
        self.detector.close()
        self.generator.close()
        if self.segmenter is not None:
            self.segmenter.close()

    @property
    def generator_takes_prior(self) -> bool:
        return "prior" in {spec.name for spec in self.generator.inputs}


def load_engines(
    models: Path,
    *,
    backend: str,
    device: str,
    precision: str,
    max_batch: int,
    intra_threads: int | None,
    triton: TritonOptions | None = None,
) -> Engines:
    """Load ``detector.onnx`` and ``generator.onnx`` of ``models`` on one backend and a resolved device
    ("cpu", "cuda:N"); ``precision`` "auto" is fp16 on CUDA, fp32 on CPU. Backend "triton" runs them on
    the server of ``triton`` (the local files still say which networks, see :mod:`engines.triton_engine`)."""
    prec = resolve_precision(precision, device)
    paths = {role: models / f"{role}.onnx" for role in ROLES}
    for role, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"{role} model not found: {path} (expected detector.onnx and generator.onnx in {models})"
            )
    roles = list(ROLES)
    if (models / "segmenter.onnx").is_file():
        paths["segmenter"] = models / "segmenter.onnx"
        roles.append("segmenter")
    loaded: list[Engine] = []
    try:
        for role in roles:
            loaded.append(
                load_engine(
                    paths[role],
                    backend=backend,
                    device=device,
                    precision=prec,
                    max_batch=max_batch,
                    intra_threads=intra_threads,
                    triton=triton,
                )
            )
    except BaseException:
        for engine in loaded:
            engine.close()
        raise
    engines = Engines(*loaded)
    if engines.segmenter is not None:
        logger.info("occlusion: visible-face segmenter %s", paths["segmenter"])
    return engines


def load_prior_step(
    models: Path,
    *,
    generator_takes_prior: bool,
    restorer: str,
    reference_rgb_u8: np.ndarray | None = None,
    mesh_every: int = 1,
) -> PriorStep | None:
    """The face-prior step of ``models/prior.npz`` when the run uses it (a generator that takes the prior,
    restorer "prior", or restorer "auto" with the file present), else None; a needed but missing file is
    a FileNotFoundError naming it."""
    path = models / "prior.npz"
    needed = generator_takes_prior or restorer == "prior" or (restorer == "auto" and path.is_file())
    if not needed:
        if reference_rgb_u8 is not None:
            raise ValueError("--reference needs the face prior (models with prior.npz, or --restorer prior)")
        return None
    if not path.is_file():
        raise FileNotFoundError(f"face prior model not found: {path} (this generator takes the prior)")
    if restorer == "auto" and not generator_takes_prior and importlib.util.find_spec("mediapipe") is None:
        # The prior needs mediapipe's face mesh, an extra: without it the plain generator still works.
        logger.warning(
            "face prior off: mediapipe is not installed (pip install 'deocclude[mediapipe]'); "
            "the generator restores without it"
        )
        return None
    from engines.prior.fit import PriorFitter  # mediapipe and the prior load only when used
    from engines.prior.model import load_prior
    from stream.restore.prior_step import PriorStep

    step = PriorStep(PriorFitter(load_prior(path)), reference_rgb_u8, mesh_every=mesh_every)
    logger.info("face prior: %s%s", path, " with a reference photo" if reference_rgb_u8 is not None else "")
    return step
