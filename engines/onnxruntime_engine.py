"""ONNX Runtime backend: CPU by default; CUDA or TensorRT execution providers where installed.

On CUDA, torch tensors are bound with IO binding (no host round trip). ONNX Runtime runs on a stream
this engine owns (passed as ``user_compute_stream``); each run makes that stream wait for the caller's
current torch stream and the caller's stream wait for it, so ordering matches the other CUDA backends
without a host synchronisation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import ModelInfo, TensorSpec, check_feeds, feeds_as_torch
from engines.cache import cache_root
from engines.errors import BackendUnavailableError, EngineError, ModelLoadError
from engines.metadata import read_onnx_info, tensor_specs
from engines.runtime import PRECISIONS, parse_device, resolve_device

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def available_providers() -> list[str]:
    """Short names ("cpu", "cuda", "tensorrt") of the execution providers this onnxruntime build has."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [short for short, full in PROVIDERS.items() if full in have]


class OnnxRuntimeEngine:
    """One ONNX network on ONNX Runtime.

    ``device``: "cpu" or "cuda[:N]". ``provider``: "cpu", "cuda" or "tensorrt" (default: "cpu" on CPU,
    "cuda" on CUDA). ``intra_threads``: intra-op threads of the CPU provider (None = onnxruntime's
    default, all cores). ``precision`` "fp16" only changes the TensorRT provider; other providers run
    the fp32 graph and say so in one log line. ``max_batch`` bounds the batch like an engine profile.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        device: str = "cpu",
        provider: str | None = None,
        intra_threads: int | None = None,
        precision: str = "fp32",
        max_batch: int | None = 8,
        cache_dir: str | Path | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime") from exc
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if intra_threads is not None and intra_threads < 1:
            raise ValueError(f"intra_threads must be >= 1 or None, got {intra_threads}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
        kind, index = parse_device(device)
        provider = provider or kind
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {tuple(PROVIDERS)}, got {provider!r}")
        if (kind == "cpu") != (provider == "cpu"):
            raise ValueError(f"provider {provider!r} does not run on device {device!r}")
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"onnxruntime has no {PROVIDERS[provider]} (has {ort.get_available_providers()}): "
                "pip uninstall onnxruntime && pip install onnxruntime-gpu on a machine with CUDA"
            )

        self.path = Path(onnx_path)
        self.info: ModelInfo = read_onnx_info(self.path)
        self.inputs: tuple[TensorSpec, ...]
        self.outputs: tuple[TensorSpec, ...]
        self.inputs, self.outputs = tensor_specs(self.info)
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        self.provider = provider
        self.max_batch = max_batch
        self.precision = precision
        if precision == "fp16" and provider != "tensorrt":
            log.info("engine: onnxruntime %s provider runs the fp32 graph; fp16 ignored", provider)
            self.precision = "fp32"

        self._torch: Any = None
        self._stream: Any = None
        options = ort.SessionOptions()
        if intra_threads is not None:
            options.intra_op_num_threads = intra_threads
        providers: list[Any] = ["CPUExecutionProvider"]
        if kind == "cuda":
            resolve_device(device)  # torch must see it: a torch stream is the session's compute stream
            import torch

            self._torch = torch
            # An engine-owned stream: onnxruntime binds one stream per session at creation time.
            self._stream = torch.cuda.Stream(device=self.device)
            cuda_options = {"device_id": index, "user_compute_stream": str(self._stream.cuda_stream)}
            providers = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
            if provider == "tensorrt":
                providers.insert(0, ("TensorrtExecutionProvider", self._trt_options(index, cache_dir)))
        try:
            self._session: Any = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelLoadError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        active = self._session.get_providers()
        if active[0] != PROVIDERS[provider]:
            # onnxruntime drops a provider whose libraries fail to load and carries on; never accept that silently.
            raise BackendUnavailableError(
                f"onnxruntime could not start {PROVIDERS[provider]} (active: {active}); check the CUDA/cuDNN/TensorRT libraries"
            )
        names = ([i.name for i in self._session.get_inputs()], [o.name for o in self._session.get_outputs()])
        wanted = ([s.name for s in self.inputs], [s.name for s in self.outputs])
        if sorted(names[0]) != sorted(wanted[0]) or sorted(names[1]) != sorted(wanted[1]):
            raise ModelLoadError(
                f"{self.path} has inputs/outputs {names}, a {self.info.role} must have {wanted}"
            )

    def _trt_options(self, index: int, cache_dir: str | Path | None) -> dict[str, Any]:
        s = self.info.crop_size
        max_batch = self.max_batch or 8

        def shapes(batch: int) -> str:
            return ",".join(f"{spec.name}:{batch}x{spec.shape[1]}x{s}x{s}" for spec in self.inputs)

        directory = cache_root(cache_dir) / "engines" / "onnxruntime-tensorrt"
        directory.mkdir(parents=True, exist_ok=True)
        return {
            "device_id": index,
            "user_compute_stream": str(self._stream.cuda_stream),
            "trt_fp16_enable": self.precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(directory),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(directory),
            "trt_profile_min_shapes": shapes(1),
            "trt_profile_opt_shapes": shapes(max_batch),
            "trt_profile_max_shapes": shapes(max_batch),
        }

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """numpy in -> numpy out; torch tensors on ``self.device`` in -> torch tensors out (float32, NCHW)."""
        if self._session is None:
            raise EngineError(f"{self.backend} engine for {self.path} is closed")
        batch = check_feeds(self.inputs, feeds, max_batch=self.max_batch)
        if not feeds_as_torch(feeds, self.device):
            arrays = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
            values = self._session.run([s.name for s in self.outputs], arrays)
            return dict(zip([s.name for s in self.outputs], values, strict=True))
        if self.device == "cpu":
            import torch

            arrays = {k: v.detach().contiguous().numpy() for k, v in feeds.items()}
            values = self._session.run([s.name for s in self.outputs], arrays)
            return {s.name: torch.from_numpy(v) for s, v in zip(self.outputs, values, strict=True)}
        return self._run_cuda(feeds, batch)

    def _run_cuda(self, feeds: Mapping[str, Any], batch: int) -> dict[str, Any]:
        torch = self._torch
        index = int(self.device.partition(":")[2])
        caller = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(caller)
        binding = self._session.io_binding()
        keep = []
        for spec in self.inputs:
            tensor = feeds[spec.name].contiguous()
            keep.append(tensor)
            binding.bind_input(spec.name, "cuda", index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        outputs = {}
        for spec in self.outputs:
            shape = (batch, *spec.shape[1:])
            out = torch.empty(shape, dtype=torch.float32, device=self.device)
            outputs[spec.name] = out
            binding.bind_output(spec.name, "cuda", index, np.float32, shape, out.data_ptr())
        self._session.run_with_iobinding(binding)
        caller.wait_stream(self._stream)
        return outputs

    def warmup(self, batch: int = 1) -> None:
        """One run at ``batch`` so lazy allocations and kernel selection happen before timing starts."""
        if self.device == "cpu":
            self.run({s.name: np.zeros((batch, *s.shape[1:]), np.float32) for s in self.inputs})
        else:
            torch = self._torch
            self.run({s.name: torch.zeros((batch, *s.shape[1:]), device=self.device) for s in self.inputs})

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> OnnxRuntimeEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
