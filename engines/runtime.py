"""Runtime imports, device resolution and the precision vocabulary: the one place the project asks
"which device?", "which precision?" and "is this runtime installed?".

Nothing here imports torch, tensorrt or torch_tensorrt at module level, so it imports anywhere.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from engines.errors import BackendUnavailableError

log = logging.getLogger(__name__)

# Compute precisions an engine can be built or run in, and what the command line accepts.
PRECISIONS = ("fp32", "fp16")
PRECISION_CHOICES = ("auto", *PRECISIONS)
# Devices the command line accepts; a library call may also name "cuda:N".
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def import_runtime(module: str, missing_hint: str) -> Any:
    """``import module``, or BackendUnavailableError(``missing_hint``) when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but its native library is not
        raise BackendUnavailableError(missing_hint) from exc


def importable(module: str) -> bool:
    """Whether ``import module`` works (a wheel whose native libraries are missing does not)."""
    try:
        importlib.import_module(module)
    except (ImportError, OSError):
        return False
    return True


def import_torch() -> Any:
    return import_runtime("torch", "torch is not installed: pip install deocclude[torch]")


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    if not importable("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"`` / ``"cuda:1"`` -> ("cuda", index). Anything else is a ValueError."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return kind, int(index or 0)


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda:N"`` for ``device`` ("auto", "cpu", "cuda", "cuda:N").

    "auto" is "cuda:0" when torch sees a GPU, else "cpu" (logged in one line). A CUDA device torch does
    not see raises BackendUnavailableError; anything else that is not a device, ValueError.
    """
    if device == "auto":
        if cuda_available():
            return "cuda:0"
        log.info("device: auto -> cpu (no CUDA GPU visible to torch)")
        return "cpu"
    kind, index = parse_device(device)
    if kind == "cpu":
        return "cpu"
    if not cuda_available():
        raise BackendUnavailableError(
            f"device {device!r} requested but torch sees no CUDA device (torch with CUDA is needed: "
            "pip install deocclude[gpu]); use --device cpu"
        )
    torch = import_torch()
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(
            f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return f"cuda:{index}"


def cuda_device(device: str, backend: str) -> str:
    """:func:`resolve_device` for a ``backend`` that runs on CUDA only ("cuda:N"); a CPU device raises
    BackendUnavailableError."""
    dev = resolve_device(device)
    if dev == "cpu":
        raise BackendUnavailableError(f"{backend} runs on CUDA devices only, got device {device!r}")
    return dev


def resolve_precision(precision: str, device: str) -> str:
    """``precision`` ("auto", "fp32", "fp16") for a resolved ``device``: "auto" is fp16 on CUDA, fp32 on CPU."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision must be one of {PRECISION_CHOICES}, got {precision!r}")
    if precision != "auto":
        return precision
    return "fp16" if parse_device(device)[0] == "cuda" else "fp32"


TENSORRT_MISSING = (
    "TensorRT is not installed: pip install deocclude[tensorrt] on a machine with an NVIDIA GPU"
)
TORCH_TENSORRT_MISSING = (
    "torch-tensorrt is not installed: pip install deocclude[tensorrt] on a machine with an NVIDIA GPU"
)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or BackendUnavailableError with the one-line install hint."""
    return import_runtime("tensorrt", TENSORRT_MISSING)


def import_torch_tensorrt() -> Any:
    """The ``torch_tensorrt`` module, or BackendUnavailableError with the one-line install hint."""
    return import_runtime("torch_tensorrt", TORCH_TENSORRT_MISSING)
