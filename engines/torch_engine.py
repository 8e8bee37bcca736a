"""PyTorch backend: runs the ``torch.export`` program (.pt2) saved next to the .onnx.

CPU or CUDA; on CUDA optionally fp16 weights, channels_last memory format and CUDA-graph replay (one
graph per batch size, captured on first use). I/O is always float32 NCHW: the fp16 casts happen inside
(and inside the captured graph), so callers never see the compute precision.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import ModelInfo, TensorSpec, check_feeds, feeds_as_torch, is_torch_tensor
from engines.errors import EngineError, EngineMismatchError, ModelLoadError
from engines.metadata import pt2_sibling, read_onnx_info, read_pt2_info, tensor_specs
from engines.model_digest import check_listed
from engines.runtime import PRECISIONS, import_torch, resolve_device

log = logging.getLogger(__name__)


def resolve_pt2(model_path: str | Path) -> tuple[Path, ModelInfo]:
    """The .pt2 for ``model_path`` (a .pt2, or a .onnx whose sibling .pt2 is used) and its ModelInfo.

    When both files exist their ModelInfo must agree: a .pt2 left over from another export is refused.
    """
    path = Path(model_path)
    pt2 = pt2_sibling(path) if path.suffix == ".onnx" else path
    if not pt2.is_file():
        raise ModelLoadError(f"{pt2} not found: the torch backends run the .pt2 exported next to {path.name}")
    info = read_pt2_info(pt2)
    onnx = pt2.with_suffix(".onnx")
    if onnx.is_file():
        onnx_info = read_onnx_info(onnx)
        if onnx_info != info:
            raise EngineMismatchError(
                f"{pt2.name} and {onnx.name} describe different models: {info} vs {onnx_info}"
            )
    return pt2, info


def load_exported(pt2: Path, info: ModelInfo) -> tuple[Any, list[str]]:
    """(callable module, input names in call order) of an exported program; names checked against the contract.

    Refused before torch touches it unless its sha256 is listed in the SHA256SUMS beside it
    (:mod:`engines.model_digest`): torch unpickles parts of a .pt2, which can run code.
    """
    check_listed(pt2)
    torch = import_torch()
    try:
        program = torch.export.load(str(pt2))
    except Exception as exc:  # torch raises many types for a bad archive
        raise ModelLoadError(f"torch cannot load {pt2}: {exc}") from exc
    names = [str(n) for n in program.graph_signature.user_inputs]
    wanted = [s.name for s in tensor_specs(info)[0]]
    if sorted(names) != sorted(wanted):
        raise ModelLoadError(f"{pt2} takes inputs {names}, a {info.role} must take {wanted}")
    return program.module(), names


def outputs_by_name(result: Any, outputs: tuple[TensorSpec, ...]) -> tuple[Any, ...]:
    """A module's result (tensor, tuple or dict) as a tuple ordered like ``outputs``."""
    if isinstance(result, Mapping):
        return tuple(result[s.name] for s in outputs)
    items = tuple(result) if isinstance(result, list | tuple) else (result,)
    if len(items) != len(outputs):
        raise ModelLoadError(f"module returned {len(items)} outputs, expected {[s.name for s in outputs]}")
    return items


def to_device(value: Any, device: str) -> Any:
    """A torch tensor as it is (see :func:`engines.base.feeds_as_torch`); a numpy array copied to ``device``."""
    if is_torch_tensor(value):
        return value
    return import_torch().from_numpy(np.ascontiguousarray(value)).to(device)


def named_outputs(outputs: tuple[TensorSpec, ...], tensors: Sequence[Any], as_torch: bool) -> dict[str, Any]:
    """``{name: tensor}`` in the order of ``outputs``; numpy arrays copied to the host unless ``as_torch``
    (``.cpu()`` waits for the current stream)."""
    if as_torch:
        return {s.name: t for s, t in zip(outputs, tensors, strict=True)}
    return {s.name: t.cpu().numpy() for s, t in zip(outputs, tensors, strict=True)}


def to_half(module: Any) -> Any:
    """``module.half()`` plus the floating tensor constants an exported module keeps as plain attributes
    (``.half()`` only converts parameters and buffers; a float32 constant would upcast the activations)."""
    torch = import_torch()
    module = module.half()
    for sub in module.modules():
        for name, value in list(vars(sub).items()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                setattr(sub, name, value.half())
    return module


def pin_softmax_fp32(module: Any) -> int:
    """Run every softmax of an exported (unlifted ``torch.fx``) module in float32, in place: a cast to
    float32 before it and back to float16 after it. Returns how many softmaxes it wrapped.

    Why: contextual attention's softmax overflows in half precision (what native TensorRT builds pin
    with precision constraints, :mod:`engines.trt_build`); a half module keeps this one op in float32.
    For modules made half by :func:`to_half` (traced in float32, so ``half_to_float`` is False).
    """
    torch = import_torch()
    aten = torch.ops.aten
    targets = {aten._softmax.default, aten.softmax.int, aten._log_softmax.default, aten.log_softmax.int}
    graph = module.graph
    wrapped = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in targets:
            continue
        source = node.args[0]
        with graph.inserting_before(node):
            up = graph.call_function(aten._to_copy.default, (source,), {"dtype": torch.float32})
        node.replace_input_with(source, up)
        with graph.inserting_after(node):
            down = graph.call_function(aten._to_copy.default, (node,), {"dtype": torch.float16})
        node.replace_all_uses_with(down, delete_user_cb=lambda user, cast=down: user is not cast)
        wrapped += 1
    if wrapped:
        graph.lint()
        module.recompile()
    return wrapped


class TorchEngine:
    """The exported program on torch. ``model_path``: the .pt2, or the .onnx next to it.

    ``precision`` "fp16" and ``cuda_graphs`` need CUDA. ``channels_last`` defaults to True on CUDA
    (Tensor Core convolutions want NHWC). With ``cuda_graphs`` every batch size is captured on first
    use; ``copy_outputs`` (default) clones the graph's static outputs so results survive the next run.
    Runs on the caller's current CUDA stream.
    """

    backend = "torch"

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        channels_last: bool | None = None,
        cuda_graphs: bool = False,
        max_batch: int | None = 8,
        copy_outputs: bool = True,
        intra_threads: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
        torch = import_torch()
        self._torch = torch
        self.device = resolve_device(device)
        on_cuda = self.device.startswith("cuda")
        if precision == "fp16" and not on_cuda:
            raise ValueError("precision 'fp16' needs CUDA for the torch backend; use 'fp32' on cpu")
        if cuda_graphs and not on_cuda:
            raise ValueError("cuda_graphs needs a CUDA device")
        if intra_threads is not None:
            if intra_threads < 1:
                raise ValueError(f"intra_threads must be >= 1 or None, got {intra_threads}")
            if on_cuda:
                log.warning("torch: --threads %d does not apply on %s; ignored", intra_threads, self.device)
            elif torch.get_num_threads() != intra_threads:
                # torch has one intra-op pool per process: this sets it for every torch engine here.
                torch.set_num_threads(intra_threads)
                log.info("torch: %d intra-op threads (process-wide)", intra_threads)
        self.path, self.info = resolve_pt2(model_path)
        self.inputs, self.outputs = tensor_specs(self.info)
        self.precision = precision
        self.max_batch = max_batch
        self.channels_last = on_cuda if channels_last is None else channels_last
        self.copy_outputs = copy_outputs
        module, self._arg_names = load_exported(self.path, self.info)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        module = module.to(self.device)
        if precision == "fp16":
            module = to_half(module)
            log.info("torch: fp16 with %d softmax op(s) kept in fp32", pin_softmax_fp32(module))
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self._module: Any = module
        self._graphs: Any = None
        if cuda_graphs:
            from engines.cuda_graph import CudaGraphRunner

            self._graphs = CudaGraphRunner(self._forward, self.device)

    @property
    def cuda_graphs(self) -> bool:
        return self._graphs is not None

    def _forward(self, *args: Any) -> tuple[Any, ...]:
        torch = self._torch
        if self.channels_last:
            args = tuple(a.to(dtype=self._dtype, memory_format=torch.channels_last) for a in args)
        else:
            args = tuple(a.to(dtype=self._dtype) for a in args)
        result = outputs_by_name(self._module(*args), self.outputs)
        # Back to float32 NCHW-contiguous so every backend hands out the same layout.
        return tuple(r.to(dtype=torch.float32, memory_format=torch.contiguous_format) for r in result)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """numpy in -> numpy out; torch tensors on ``self.device`` in -> torch tensors out (float32, NCHW)."""
        if self._module is None:
            raise EngineError(f"torch engine for {self.path} is closed")
        check_feeds(self.inputs, feeds, max_batch=self.max_batch)
        torch = self._torch
        as_torch = feeds_as_torch(feeds, self.device)
        args = [to_device(feeds[name], self.device) for name in self._arg_names]
        with torch.inference_mode():
            if self._graphs is not None:
                outs = self._graphs(*args)
                if self.copy_outputs:
                    outs = tuple(o.clone() for o in outs)
            else:
                outs = self._forward(*args)
        return named_outputs(self.outputs, outs, as_torch)

    def warmup(self, batch: int = 1) -> None:
        """One run at ``batch`` (captures its CUDA graph when enabled)."""
        torch = self._torch
        self.run({s.name: torch.zeros((batch, *s.shape[1:]), device=self.device) for s in self.inputs})

    def close(self) -> None:
        if self._graphs is not None:
            self._graphs.reset()
        self._graphs = None
        self._module = None

    def __enter__(self) -> TorchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
