"""Native TensorRT 10 backend: a deserialized engine file run with name-based I/O tensors.

Buffers are torch CUDA tensors allocated once at the optimization profile's max shape. A run sets the
input shapes, points the context at the buffers (or straight at the caller's CUDA tensors when they
already have the engine's dtype and layout), and enqueues ``execute_async_v3`` on the caller's
current torch CUDA stream, so the pipeline owns stream scheduling. ``tensorrt`` is imported lazily:
this module imports on machines without it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import TensorSpec, check_feeds, feeds_as_torch
from engines.cache import EngineCache, load_or_build
from engines.errors import EngineError, ModelLoadError, ShapeError
from engines.headers import engine_header, tensorrt_header
from engines.metadata import (
    check_header,
    read_engine_file,
    read_engine_header,
    read_onnx_info,
    sha256_file,
    tensor_specs,
)
from engines.runtime import cuda_device, import_tensorrt, import_torch
from engines.torch_engine import named_outputs
from engines.trt_build import BuildConfig, build_engine

log = logging.getLogger(__name__)


def _torch_dtype(trt: Any, torch: Any, dtype: Any) -> Any:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
    if dtype not in table:
        raise ModelLoadError(f"engine tensor dtype {dtype} is not supported (float32, float16, int32)")
    return table[dtype]


class TensorRTEngine:
    """A deserialized TensorRT engine file (header + plan, see :mod:`engines.metadata`).

    The header is checked before the plan is touched: against ``onnx_path`` (sha256 and ModelInfo)
    when given, against this GPU and TensorRT version always, and against ``precision`` /
    ``batch_profile`` (min, opt, max) when given. Any difference raises EngineMismatchError.
    A batch outside the profile raises ShapeError. ``copy_outputs`` (default) clones the static output
    buffers so results survive the next run; False returns views valid until the next ``run``.
    """

    backend = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        onnx_path: str | Path | None = None,
        device: str = "cuda",
        precision: str | None = None,
        batch_profile: tuple[int, int, int] | None = None,
        copy_outputs: bool = True,
    ) -> None:
        trt = import_tensorrt()
        torch = import_torch()
        self._trt, self._torch = trt, torch
        self.device = cuda_device(device, "TensorRT")
        self.path = Path(engine_path)
        header, plan = read_engine_file(self.path)
        lo, opt, hi = batch_profile or (header.min_batch, header.opt_batch, header.max_batch)
        wanted = engine_header(
            sha256_file(onnx_path) if onnx_path else header.onnx_sha256,
            read_onnx_info(onnx_path) if onnx_path else header.model,
            precision=precision or header.precision,
            min_batch=lo,
            opt_batch=opt,
            max_batch=hi,
            device=self.device,
            tensorrt_version=str(trt.__version__),
        )
        check_header(header, wanted, path=self.path)
        self.header = header
        self.info = header.model
        self.precision = header.precision
        self.copy_outputs = copy_outputs
        self.inputs: tuple[TensorSpec, ...]
        self.outputs: tuple[TensorSpec, ...]
        self.inputs, self.outputs = tensor_specs(self.info)

        with torch.cuda.device(self.device):
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise ModelLoadError(
                    f"TensorRT could not deserialize {self.path} (see the TensorRT log above)"
                )
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise ModelLoadError(f"TensorRT could not create an execution context for {self.path}")
        self._bind_tensors()

    def _bind_tensors(self) -> None:
        trt, torch, engine = self._trt, self._torch, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        in_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        out_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        wanted = ([s.name for s in self.inputs], [s.name for s in self.outputs])
        if sorted(in_names) != sorted(wanted[0]) or sorted(out_names) != sorted(wanted[1]):
            raise ModelLoadError(
                f"{self.path} has tensors {in_names} -> {out_names}, a {self.info.role} needs {wanted}"
            )
        # The usable batch range is where every input's profile agrees (profile 0, the only one we build).
        mins, maxs = [], []
        for name in in_names:
            lo, _, hi = engine.get_tensor_profile_shape(name, 0)
            mins.append(int(lo[0]))
            maxs.append(int(hi[0]))
        self.min_batch, self.max_batch = max(mins), min(maxs)
        self._dtypes = {n: _torch_dtype(trt, torch, engine.get_tensor_dtype(n)) for n in names}
        self._buffers: dict[str, Any] = {}
        for spec in self.inputs:
            shape = (self.max_batch, *spec.shape[1:])
            if not self._context.set_input_shape(spec.name, shape):
                raise ModelLoadError(f"{self.path} refuses input {spec.name!r} at its own max shape {shape}")
            self._buffers[spec.name] = torch.empty(shape, dtype=self._dtypes[spec.name], device=self.device)
        for name in out_names:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            self._buffers[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self._context.set_tensor_address(name, self._buffers[name].data_ptr())
        self._shapes: dict[str, tuple[int, ...]] = {
            s.name: (self.max_batch, *s.shape[1:]) for s in self.inputs
        }

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """numpy in -> numpy out; torch CUDA tensors in -> torch tensors out. Enqueued on the current stream."""
        if self._context is None:
            raise EngineError(f"TensorRT engine {self.path} is closed")
        batch = check_feeds(self.inputs, feeds, min_batch=self.min_batch, max_batch=self.max_batch)
        torch = self._torch
        as_torch = feeds_as_torch(feeds, self.device)
        stream = torch.cuda.current_stream(self.device)
        keep = []
        for spec in self.inputs:
            value = feeds[spec.name]
            shape = (batch, *spec.shape[1:])
            if as_torch and value.dtype == self._dtypes[spec.name] and value.is_contiguous():
                source = value  # bind the caller's memory directly: no copy
            else:
                source = self._buffers[spec.name][:batch]
                host = torch.from_numpy(np.ascontiguousarray(value)) if not as_torch else value
                source.copy_(host, non_blocking=as_torch)
            keep.append(source)
            if self._shapes[spec.name] != shape:
                if not self._context.set_input_shape(spec.name, shape):
                    raise ShapeError(
                        f"input {spec.name!r} shape {shape} is outside the engine's optimization profile"
                    )
                self._shapes[spec.name] = shape
            self._context.set_tensor_address(spec.name, source.data_ptr())
        # A refused enqueue records nothing: returning the buffers would hand out stale outputs.
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"TensorRT refused to enqueue {self.path} (see the TensorRT log above)")
        outs = []
        for spec in self.outputs:
            view = self._buffers[spec.name][:batch]
            if view.dtype != torch.float32:
                outs.append(view.float())  # a new tensor already
            elif as_torch and self.copy_outputs:
                outs.append(view.clone())
            else:
                outs.append(view)  # for numpy, named_outputs copies it to the host
        return named_outputs(self.outputs, outs, as_torch)

    def warmup(self, batch: int = 1) -> None:
        torch = self._torch
        self.run({s.name: torch.zeros((batch, *s.shape[1:]), device=self.device) for s in self.inputs})
        torch.cuda.current_stream(self.device).synchronize()

    def close(self) -> None:
        # Context before engine before runtime: TensorRT objects must die in reverse creation order.
        self._context = None
        self._engine = None
        self._runtime = None
        self._buffers = {}

    def __enter__(self) -> TensorRTEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_onnx(
        cls,
        onnx_path: str | Path,
        *,
        precision: str = "fp16",
        max_batch: int = 8,
        min_batch: int = 1,
        opt_batch: int | None = None,
        device: str = "cuda",
        cache_dir: str | Path | None = None,
        allow_build: bool = True,
        workspace_gb: float = 4.0,
    ) -> TensorRTEngine:
        """The cached engine for ``onnx_path`` on this GPU, built (with progress output) when missing or stale.

        With ``allow_build=False`` a missing engine raises ModelLoadError and a stale one EngineMismatchError.
        """
        want = tensorrt_header(
            onnx_path,
            precision=precision,
            min_batch=min_batch,
            opt_batch=opt_batch or max_batch,
            max_batch=max_batch,
            device=device,
        )
        cache = EngineCache.at(cache_dir)
        path = cache.engine_path(want, name=Path(onnx_path).stem)
        load = functools.partial(
            cls,
            path,
            onnx_path=onnx_path,
            device=device,
            precision=precision,
            batch_profile=(want.min_batch, want.opt_batch, want.max_batch),
        )

        def build() -> TensorRTEngine:
            build_engine(
                BuildConfig(
                    onnx=Path(onnx_path),
                    out=path,
                    precision=precision,
                    min_batch=want.min_batch,
                    opt_batch=want.opt_batch,
                    max_batch=want.max_batch,
                    workspace_gb=workspace_gb,
                    timing_cache=cache.timing_cache_for(want),
                    device=device,
                )
            )
            return load()

        return load_or_build(
            path,
            want,
            read_header=read_engine_header,
            load=load,
            build=build,
            allow_build=allow_build,
            what="TensorRT engine",
        )
