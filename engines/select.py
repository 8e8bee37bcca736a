"""Pick and load an engine: ``load_engine(onnx_path, backend="auto", device="auto", ...)``.

``BACKENDS`` are the names the command line and benchmarks use. "auto" takes the first backend that
can run in a fixed order of preference (nothing is timed): on CUDA tensorrt > torch-tensorrt > torch
(CUDA graphs) > onnxruntime (CUDA provider); on CPU onnxruntime > torch. The choice, and why the
backends before it were skipped, is logged in one line; a backend that is available but fails to load
is skipped with one more line. An explicitly requested backend that cannot run raises
BackendUnavailableError saying what to install. ``intra_threads`` (``--threads``) sets onnxruntime's
intra-op threads and torch's on CPU (process-wide); where it does not apply (the CUDA-only backends,
torch on CUDA) it is ignored with a logged line, never silently.

"triton" (:mod:`engines.triton_engine`) runs the network on a Triton server named by ``triton`` (a
:class:`~engines.triton_engine.TritonOptions`); "auto" never picks it, and its engines' arrays are on the
CPU ("auto" and "cpu" resolve to "cpu"; "cuda" is a ValueError), whatever device the server uses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engines import runtime
from engines.base import Engine
from engines.errors import BackendUnavailableError, EngineError
from engines.runtime import PRECISIONS, importable, resolve_device

if TYPE_CHECKING:
    from engines.triton_engine import TritonOptions

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt", "torch-tensorrt", "triton")
CUDA_PREFERENCE = ("tensorrt", "torch-tensorrt", "torch", "onnxruntime")
CPU_PREFERENCE = ("onnxruntime", "torch")

_INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime (onnxruntime-gpu for CUDA)",
    "torch": "pip install deocclude[torch]",
    "tensorrt": "pip install deocclude[tensorrt] on a machine with an NVIDIA GPU",
    "torch-tensorrt": "pip install deocclude[tensorrt] on a machine with an NVIDIA GPU",
    "triton": "pip install 'deocclude[scale]' (tritonclient[http])",
}


def unavailable_reason(backend: str, device_kind: str) -> str | None:
    """Why ``backend`` cannot run on ``device_kind`` ("cpu" / "cuda"), or None when it can."""
    module = {
        "onnxruntime": "onnxruntime",
        "torch": "torch",
        "tensorrt": "tensorrt",
        "torch-tensorrt": "torch_tensorrt",
        "triton": "tritonclient.http",
    }
    if backend not in module:
        raise ValueError(f"backend must be one of {BACKENDS[1:]}, got {backend!r}")
    if not importable(module[backend]):
        return "not installed"
    if backend == "triton":
        return None if device_kind == "cpu" else "its arrays are on the CPU (the server picks its own device)"
    if device_kind == "cpu":
        return "needs CUDA" if backend in ("tensorrt", "torch-tensorrt") else None
    if not runtime.cuda_available():
        return "no CUDA"
    if backend == "onnxruntime":
        from engines.onnxruntime_engine import available_providers

        if "cuda" not in available_providers():
            return "no CUDA provider (pip install onnxruntime-gpu)"
    return None


def available_backends(device: str = "auto") -> list[str]:
    """Concrete backends that can run on ``device`` ("auto", "cpu", "cuda[:N]"), best first."""
    try:
        kind = resolve_device(device).partition(":")[0]
    except BackendUnavailableError:
        return []  # "cuda" asked for on a machine without one: nothing can run there
    order = CUDA_PREFERENCE if kind == "cuda" else CPU_PREFERENCE
    return [b for b in order if unavailable_reason(b, kind) is None]


@dataclass(frozen=True)
class EngineRequest:
    """Everything a factory needs; built and validated by :func:`load_engine`."""

    onnx_path: Path
    device: str
    precision: str = "fp32"
    max_batch: int = 8
    intra_threads: int | None = None
    cache_dir: Path | None = None
    triton: TritonOptions | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


def _onnxruntime(r: EngineRequest) -> Engine:
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(
        r.onnx_path,
        device=r.device,
        intra_threads=r.intra_threads,
        precision=r.precision,
        max_batch=r.max_batch,
        cache_dir=r.cache_dir,
    )


def _torch(r: EngineRequest) -> Engine:
    from engines.torch_engine import TorchEngine

    on_cuda = r.device.startswith("cuda")
    return TorchEngine(
        r.onnx_path,
        device=r.device,
        precision=r.precision,
        cuda_graphs=on_cuda,
        max_batch=r.max_batch,
        intra_threads=r.intra_threads,
    )


def _tensorrt(r: EngineRequest) -> Engine:
    from engines.tensorrt_engine import TensorRTEngine

    return TensorRTEngine.from_onnx(
        r.onnx_path, precision=r.precision, max_batch=r.max_batch, device=r.device, cache_dir=r.cache_dir
    )


def _torch_tensorrt(r: EngineRequest) -> Engine:
    from engines.torch_tensorrt_engine import TorchTensorRTEngine

    return TorchTensorRTEngine(
        r.onnx_path, device=r.device, precision=r.precision, max_batch=r.max_batch, cache_dir=r.cache_dir
    )


def _triton(r: EngineRequest) -> Engine:
    from engines.triton_engine import TritonEngine

    return TritonEngine(r.onnx_path, r.triton, max_batch=r.max_batch)


FACTORIES: dict[str, Callable[[EngineRequest], Engine]] = {
    "onnxruntime": _onnxruntime,
    "torch": _torch,
    "tensorrt": _tensorrt,
    "torch-tensorrt": _torch_tensorrt,
    "triton": _triton,
}


def load_engine(
    onnx_path: str | Path,
    backend: str = "auto",
    device: str = "auto",
    precision: str = "fp32",
    max_batch: int = 8,
    intra_threads: int | None = None,
    cache_dir: str | Path | None = None,
    triton: TritonOptions | None = None,
) -> Engine:
    """Load ``onnx_path`` (torch backends use the .pt2 next to it) on the chosen backend and device.

    ``precision`` applies where the backend supports it on that device (see each engine); ``intra_threads``
    applies to onnxruntime on CPU; ``cache_dir`` is the cache root for built engines; ``triton`` is the
    server of backend "triton" (None: :class:`~engines.triton_engine.TritonOptions`' default URL).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        if device not in ("auto", "cpu"):
            raise ValueError(
                f"backend 'triton' takes and returns CPU arrays (the server picks its own device), got device {device!r}; use --device cpu or auto"
            )
        device = "cpu"
    elif triton is not None:
        raise ValueError(f"Triton options apply to backend 'triton', got backend {backend!r}")
    resolved = resolve_device(device)
    kind = resolved.partition(":")[0]
    request = EngineRequest(
        Path(onnx_path),
        resolved,
        precision,
        max_batch,
        intra_threads,
        Path(cache_dir) if cache_dir else None,
        triton,
    )
    if backend != "auto":
        reason = unavailable_reason(backend, kind)
        if reason is not None:
            raise BackendUnavailableError(_explain(backend, resolved, reason))
        log.info("engine: %s on %s", backend, resolved)
        _note_ignored_threads(backend, resolved, intra_threads)
        return FACTORIES[backend](request)

    order = CUDA_PREFERENCE if kind == "cuda" else CPU_PREFERENCE
    skipped = []
    for candidate in order:
        reason = unavailable_reason(candidate, kind)
        if reason is not None:
            skipped.append(f"{candidate}: {reason}")
            continue
        try:
            engine = FACTORIES[candidate](request)
        except (BackendUnavailableError, EngineError) as exc:
            log.warning("engine: %s failed on %s (%s); falling back", candidate, resolved, exc)
            skipped.append(f"{candidate}: failed")
            continue
        if kind == "cpu" and device == "auto":
            # Say why the CUDA backends were not candidates at all.
            skipped = [
                f"{b}: {unavailable_reason(b, 'cuda')}" for b in CUDA_PREFERENCE if b != candidate
            ] + skipped
        why = f" ({'; '.join(dict.fromkeys(skipped))})" if skipped else ""
        log.info(
            "engine: auto -> %s on %s, the first of %s that runs%s",
            candidate,
            resolved,
            " > ".join(order),
            why,
        )
        _note_ignored_threads(candidate, resolved, intra_threads)
        return engine
    raise BackendUnavailableError(
        f"no backend can run on {resolved} ({'; '.join(skipped)}); {_INSTALL_HINTS['onnxruntime']}"
    )


def _note_ignored_threads(backend: str, device: str, intra_threads: int | None) -> None:
    """One line when ``intra_threads`` was asked for where it has no effect (see the module docstring)."""
    if intra_threads is None:
        return
    if backend in ("tensorrt", "torch-tensorrt", "triton"):  # torch says so itself (engines.torch_engine)
        log.warning(
            "engine: --threads %d does not apply to %s on %s; ignored", intra_threads, backend, device
        )


def _explain(backend: str, device: str, reason: str) -> str:
    if reason == "not installed":
        return f"backend {backend!r} is not installed: {_INSTALL_HINTS[backend]}"
    if reason == "needs CUDA":
        return f"backend {backend!r} needs a CUDA device, got {device!r}; use --device cuda on an NVIDIA GPU or --backend onnxruntime"
    return f"backend {backend!r} cannot run on {device}: {reason}"
