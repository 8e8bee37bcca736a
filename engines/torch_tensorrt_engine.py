"""torch-tensorrt backend: the exported program (.pt2) compiled with ``torch_tensorrt.compile(ir="dynamo")``.

Compiled modules are cached as ExportedPrograms (``torch_tensorrt.save``) in the per-GPU engine cache
with a JSON header beside them (:func:`engines.metadata.write_header_sidecar`); for this backend the
header's ``onnx_sha256`` holds the sha256 of the .pt2 that was compiled. fp16 is done by compiling a
half-precision module with half inputs, which every torch-tensorrt 2.x honours (older releases through
``enabled_precisions``, newer ones through explicit typing); I/O stays float32 for callers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engines.base import ModelInfo, check_feeds, feeds_as_torch
from engines.cache import EngineCache, load_or_build
from engines.errors import EngineError
from engines.headers import torch_tensorrt_header
from engines.metadata import EngineHeader, read_header_sidecar, tensor_specs, write_header_sidecar
from engines.runtime import PRECISIONS, cuda_device, import_torch, import_torch_tensorrt
from engines.torch_engine import (
    load_exported,
    named_outputs,
    outputs_by_name,
    pin_softmax_fp32,
    resolve_pt2,
    to_device,
    to_half,
)

log = logging.getLogger(__name__)


def supported_options(fn: Callable[..., Any], options: dict[str, Any], *, release: str) -> dict[str, Any]:
    """The ``options`` that ``fn`` takes (torch-tensorrt renames build options between releases).

    A dropped option is never silent: each one is named in a warning line, so a build without the
    timing cache or the workspace limit the caller asked for is visible in the log.
    """
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    dropped = sorted(k for k in options if k not in params)
    if dropped:
        log.warning(
            "engine: torch-tensorrt %s does not take build option(s) %s; compiling without them",
            release,
            ", ".join(dropped),
        )
    return {k: v for k, v in options.items() if k in params}


def _compile(
    pt2: Path, info: ModelInfo, header: EngineHeader, device: str, workspace_gb: float, timing_cache: Path
) -> tuple[Any, list[str], list[Any]]:
    """(compiled module, input names in call order, torch_tensorrt.Input specs)."""
    torch_tensorrt = import_torch_tensorrt()
    torch = import_torch()
    module, names = load_exported(pt2, info)
    dtype = torch.float16 if header.precision == "fp16" else torch.float32
    module = module.to(device)
    if dtype == torch.float16:
        module = to_half(module)
        # The casts are in the graph TensorRT gets; whether it keeps them depends on the release's typing.
        log.info("engine: fp16 with %d softmax op(s) cast to fp32 in the graph", pin_softmax_fp32(module))
    specs = {s.name: s for s in tensor_specs(info)[0]}
    inputs = [
        torch_tensorrt.Input(
            min_shape=(header.min_batch, *specs[n].shape[1:]),
            opt_shape=(header.opt_batch, *specs[n].shape[1:]),
            max_shape=(header.max_batch, *specs[n].shape[1:]),
            dtype=dtype,
        )
        for n in names
    ]
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    options = supported_options(
        torch_tensorrt.dynamo.compile,
        {
            "workspace_size": int(workspace_gb * (1 << 30)),
            "min_block_size": 1,
            "timing_cache_path": str(timing_cache),
        },
        release=str(torch_tensorrt.__version__),
    )
    log.info(
        "engine: compiling %s with torch-tensorrt (%s, batch %d/%d/%d)",
        pt2,
        header.precision,
        header.min_batch,
        header.opt_batch,
        header.max_batch,
    )
    with torch.cuda.device(device):
        compiled = torch_tensorrt.compile(
            module, ir="dynamo", inputs=inputs, enabled_precisions={dtype}, **options
        )
    return compiled, names, inputs


def compile_and_save(
    model_path: str | Path,
    *,
    out: Path | None = None,
    precision: str = "fp16",
    min_batch: int = 1,
    opt_batch: int | None = None,
    max_batch: int = 8,
    workspace_gb: float = 4.0,
    device: str = "cuda",
    cache_dir: str | Path | None = None,
) -> Path:
    """Compile the .pt2 for ``model_path`` and save it (default: into the engine cache); returns the path."""
    import_torch_tensorrt()
    pt2, info = resolve_pt2(model_path)
    dev = cuda_device(device, "torch-tensorrt")
    header = torch_tensorrt_header(
        pt2,
        info,
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch or max_batch,
        max_batch=max_batch,
        device=dev,
    )
    cache = EngineCache.at(cache_dir)
    out = out or cache.engine_path(header, name=pt2.stem)
    compiled, _, inputs = _compile(pt2, info, header, dev, workspace_gb, cache.timing_cache_for(header))
    _save(compiled, inputs, out, header)
    return out


def _save(compiled: Any, inputs: list[Any], out: Path, header: EngineHeader) -> None:
    """Save a compiled module as an ExportedProgram at ``out`` with its JSON header beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    import_torch_tensorrt().save(compiled, str(out), output_format="exported_program", inputs=inputs)
    write_header_sidecar(out, header)


class TorchTensorRTEngine:
    """The exported program compiled by torch-tensorrt, on CUDA. ``model_path``: the .pt2 or the .onnx next to it.

    A compiled module cached for this GPU / TensorRT / torch-tensorrt / .pt2 / precision / batch profile
    is loaded; otherwise the program is compiled (minutes) and, with ``use_cache``, saved. Runs on the
    caller's current CUDA stream. I/O float32 NCHW.
    """

    backend = "torch-tensorrt"

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "cuda",
        precision: str = "fp16",
        max_batch: int = 8,
        min_batch: int = 1,
        opt_batch: int | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        workspace_gb: float = 4.0,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        import_torch_tensorrt()  # the install hint before any file is read
        torch = import_torch()
        self._torch = torch
        self.device = cuda_device(device, "torch-tensorrt")
        self.path, self.info = resolve_pt2(model_path)
        self.inputs, self.outputs = tensor_specs(self.info)
        self.precision = precision
        self.min_batch, self.max_batch = min_batch, max_batch
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        header = torch_tensorrt_header(
            self.path,
            self.info,
            precision=precision,
            min_batch=min_batch,
            opt_batch=opt_batch or max_batch,
            max_batch=max_batch,
            device=self.device,
        )
        cache = EngineCache.at(cache_dir)
        cached = cache.engine_path(header, name=self.path.stem)

        def load() -> tuple[Any, list[str]]:
            with torch.cuda.device(self.device):
                program = torch.export.load(str(cached))
            log.info("engine: torch-tensorrt module loaded from %s", cached)
            return program.module(), [str(n) for n in program.graph_signature.user_inputs]

        def build() -> tuple[Any, list[str]]:
            module, names, inputs = _compile(
                self.path, self.info, header, self.device, workspace_gb, cache.timing_cache_for(header)
            )
            if use_cache:
                try:
                    _save(module, inputs, cached, header)
                except Exception as exc:  # saving is an optimisation: never fail a working engine over it
                    log.warning(
                        "engine: could not cache the torch-tensorrt module (%s); it recompiles next start",
                        exc,
                    )
            return module, names

        self._module: Any
        if use_cache:
            self._module, self._arg_names = load_or_build(
                cached,
                header,
                read_header=read_header_sidecar,
                load=load,
                build=build,
                what="torch-tensorrt module",
            )
        else:
            self._module, self._arg_names = build()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """numpy in -> numpy out; torch CUDA tensors in -> torch tensors out (float32 NCHW)."""
        if self._module is None:
            raise EngineError(f"torch-tensorrt engine for {self.path} is closed")
        check_feeds(self.inputs, feeds, min_batch=self.min_batch, max_batch=self.max_batch)
        torch = self._torch
        as_torch = feeds_as_torch(feeds, self.device)
        args = [to_device(feeds[n], self.device).to(self._dtype).contiguous() for n in self._arg_names]
        with torch.inference_mode():
            outs = outputs_by_name(self._module(*args), self.outputs)
        return named_outputs(self.outputs, [o.float() for o in outs], as_torch)

    def warmup(self, batch: int = 1) -> None:
        torch = self._torch
        self.run({s.name: torch.zeros((batch, *s.shape[1:]), device=self.device) for s in self.inputs})

    def close(self) -> None:
        self._module = None

    def __enter__(self) -> TorchTensorRTEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
