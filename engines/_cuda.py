"""What the CUDA-only backends (TensorRT, torch-tensorrt) share: importing their runtime lazily, the
CUDA device check, this GPU's identity and the engine header a plan built here must carry.

Nothing here imports ``tensorrt`` or ``torch_tensorrt`` at module level: the callers pass in the
versions those modules report, so this module imports on machines without them.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

from engines.base import ModelInfo
from engines.errors import BackendUnavailableError
from engines.metadata import EngineHeader
from engines.torch_engine import import_torch, torch_device


def import_runtime(module: str, missing_hint: str) -> Any:
    """``import module``, or BackendUnavailableError(``missing_hint``) when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but libnvinfer is not
        raise BackendUnavailableError(missing_hint) from exc


def cuda_device(device: str, backend: str) -> str:
    """:func:`engines.torch_engine.torch_device` for a ``backend`` that runs on CUDA only ("cuda:N");
    a CPU device raises BackendUnavailableError."""
    dev = torch_device(device)
    if dev == "cpu":
        raise BackendUnavailableError(f"{backend} runs on CUDA devices only, got device {device!r}")
    return dev


def current_gpu(device: str = "cuda") -> tuple[str, str]:
    """(name, compute capability "8.9") of ``device`` as torch sees it."""
    torch = import_torch()
    dev = cuda_device(device, "TensorRT")
    major, minor = torch.cuda.get_device_capability(dev)
    return torch.cuda.get_device_name(dev), f"{major}.{minor}"


def engine_header(
    source_sha256: str,
    model: ModelInfo,
    *,
    precision: str,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    device: str,
    tensorrt_version: str,
    backend: str = "tensorrt",
    torch_tensorrt_version: str = "",
) -> EngineHeader:
    """The header of an engine built now on ``device`` from the model file with ``source_sha256``
    (the .onnx for TensorRT, the .pt2 for torch-tensorrt): what a cached or loaded engine must match."""
    gpu_name, capability = current_gpu(device)
    return EngineHeader(
        onnx_sha256=source_sha256,
        model=model,
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        tensorrt_version=tensorrt_version,
        gpu_name=gpu_name,
        gpu_compute_capability=capability,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        backend=backend,
        torch_tensorrt_version=torch_tensorrt_version,
    )
