"""The header an engine built on this GPU must carry (:class:`engines.metadata.EngineHeader`): this GPU's
identity, the runtime versions and the source model's hash. What a cached or loaded engine is checked
against, for both TensorRT backends and the builder.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from engines.base import ModelInfo
from engines.metadata import EngineHeader, read_onnx_info, sha256_file
from engines.runtime import cuda_device, import_tensorrt, import_torch, import_torch_tensorrt


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


def tensorrt_header(
    onnx_path: str | Path,
    *,
    precision: str,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    device: str = "cuda",
) -> EngineHeader:
    """The header a native TensorRT engine for ``onnx_path`` must carry to run here (built_at = now)."""
    trt = import_tensorrt()
    return engine_header(
        sha256_file(onnx_path),
        read_onnx_info(onnx_path),
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        device=device,
        tensorrt_version=str(trt.__version__),
    )


def torch_tensorrt_header(
    pt2: Path, info: ModelInfo, *, precision: str, min_batch: int, opt_batch: int, max_batch: int, device: str
) -> EngineHeader:
    """The header a torch-tensorrt module compiled from ``pt2`` must carry to run here (built_at = now)."""
    trt = import_tensorrt()
    torch_tensorrt = import_torch_tensorrt()
    return engine_header(
        sha256_file(pt2),
        info,
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        device=device,
        tensorrt_version=str(trt.__version__),
        backend="torch-tensorrt",
        torch_tensorrt_version=str(torch_tensorrt.__version__),
    )
