"""The two networks of a run: the option vocabulary, the default model directory for a device, and
loading the detector and generator engines of a model directory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from engines.assets import models_dir
from engines.base import Engine
from engines.runtime import DEVICE_CHOICES, PRECISION_CHOICES, parse_device, resolve_precision
from engines.select import BACKENDS, load_engine

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

    def close(self) -> None:
        self.detector.close()
        self.generator.close()


def load_engines(
    models: Path, *, backend: str, device: str, precision: str, max_batch: int, intra_threads: int | None
) -> Engines:
    """Load ``detector.onnx`` and ``generator.onnx`` of ``models`` on one backend and a resolved device
    ("cpu", "cuda:N"); ``precision`` "auto" is fp16 on CUDA, fp32 on CPU."""
    prec = resolve_precision(precision, device)
    paths = {role: models / f"{role}.onnx" for role in ROLES}
    for role, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"{role} model not found: {path} (expected detector.onnx and generator.onnx in {models})"
            )
    loaded: list[Engine] = []
    try:
        for role in ROLES:
            loaded.append(
                load_engine(
                    paths[role],
                    backend=backend,
                    device=device,
                    precision=prec,
                    max_batch=max_batch,
                    intra_threads=intra_threads,
                )
            )
    except BaseException:
        for engine in loaded:
            engine.close()
        raise
    return Engines(*loaded)
