"""The TensorRT engine builder (the library; its command line is :mod:`engines.build`).

Written against the TensorRT 10 Python API: network from ``OnnxParser``, one optimization profile with
a dynamic batch for every input, a workspace pool limit, a timing cache reused across builds, progress
through an ``IProgressMonitor``, and, in fp16, the attention layers that overflow in half precision
(softmax, the MatMuls around it, ReduceMax, exp) pinned to fp32 under OBEY_PRECISION_CONSTRAINTS.
The output is an engine file with the deocclude header (:mod:`engines.metadata`).
``tensorrt`` is imported inside functions, so ``--help`` and the "not installed" message work anywhere.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.errors import EngineError, ModelLoadError
from engines.headers import tensorrt_header
from engines.metadata import EngineHeader, write_engine_file
from engines.runtime import PRECISIONS, cuda_device, import_tensorrt, import_torch

log = logging.getLogger(__name__)

# Layer kinds whose fp16 range (max 65504) is exceeded by attention logits / exponentials.
ALWAYS_FP32_KINDS = frozenset({"Softmax", "LogSoftmax", "ReduceMax", "Exp"})
ATTENTION_NAME = re.compile(r"attn|attention", re.IGNORECASE)
_MATMUL_OPS = frozenset({"MatMul", "Gemm", "Einsum"})
# Ops between a QK^T MatMul and its softmax (scale, mask, reshape) or between softmax and attn@V.
_PASS_THROUGH_OPS = frozenset(
    {
        "Mul",
        "Div",
        "Add",
        "Sub",
        "Cast",
        "Reshape",
        "Transpose",
        "Where",
        "Unsqueeze",
        "Squeeze",
        "ReduceMax",
        "ReduceSum",
    }
)


@dataclass(frozen=True)
class OnnxNode:
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def onnx_nodes(onnx_path: str | Path) -> list[OnnxNode]:
    """The graph's nodes (needs ``onnx``; returns [] without it, and the build pins by layer kind only)."""
    try:
        import onnx
    except ImportError:
        log.info("build: onnx not installed; pinning fp32 layers by TensorRT layer kind only")
        return []
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [OnnxNode(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in graph.node]


def attention_fp32_names(nodes: Sequence[OnnxNode]) -> set[str]:
    """Names (node names and output tensor names) of the ONNX nodes an fp16 build keeps in fp32.

    Softmax/LogSoftmax/ReduceMax/Exp always; every MatMul/Gemm/Einsum that feeds a softmax or exp
    (through scale, mask and reshape ops) or consumes one; the ops on those paths; and MatMuls whose
    name says attention.
    """
    producer = {out: n for n in nodes for out in n.outputs}
    consumers: dict[str, list[OnnxNode]] = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    pinned: set[int] = set()
    index = {id(n): n for n in nodes}

    def walk(start: OnnxNode, upstream: bool, depth: int = 6) -> None:
        frontier = [start]
        for _ in range(depth):
            nxt = []
            for node in frontier:
                neighbours = (
                    [producer[i] for i in node.inputs if i in producer]
                    if upstream
                    else [c for o in node.outputs for c in consumers.get(o, [])]
                )
                for nb in neighbours:
                    if nb.op_type in _MATMUL_OPS:
                        pinned.add(id(nb))
                    elif nb.op_type in _PASS_THROUGH_OPS or nb.op_type in ALWAYS_FP32_KINDS:
                        pinned.add(id(nb))
                        nxt.append(nb)
            frontier = nxt

    for node in nodes:
        if node.op_type in ALWAYS_FP32_KINDS:
            pinned.add(id(node))
            walk(node, upstream=True)
            walk(node, upstream=False)
        elif node.op_type in _MATMUL_OPS and ATTENTION_NAME.search(node.name):
            pinned.add(id(node))
    names: set[str] = set()
    for key in pinned:
        node = index[key]
        if node.name:
            names.add(node.name)
        names.update(node.outputs)
    return names


def should_pin_fp32(layer_name: str, kind: str, output_names: Iterable[str], onnx_names: set[str]) -> bool:
    """Whether a TensorRT layer is pinned to fp32 in an fp16 build (``kind``: "Softmax", "MatMul", ...)."""
    if kind in ("Constant", "Shape"):
        return False
    if kind in ALWAYS_FP32_KINDS:
        return True
    if layer_name in onnx_names or any(o in onnx_names for o in output_names):
        return True
    return kind == "MatMul" and bool(ATTENTION_NAME.search(layer_name))


def _layer_kind(trt: Any, layer: Any) -> str:
    kind = layer.type
    if kind == trt.LayerType.SOFTMAX:
        return "Softmax"
    if kind == trt.LayerType.MATRIX_MULTIPLY:
        return "MatMul"
    if kind == trt.LayerType.CONSTANT:
        return "Constant"
    if kind == trt.LayerType.SHAPE:
        return "Shape"
    if kind == trt.LayerType.REDUCE:
        layer.__class__ = trt.IReduceLayer  # the Python API's documented downcast to read .op
        return "ReduceMax" if layer.op == trt.ReduceOperation.MAX else "Reduce"
    if kind == trt.LayerType.UNARY:
        layer.__class__ = trt.IUnaryLayer
        return "Exp" if layer.op == trt.UnaryOperation.EXP else "Unary"
    return str(kind)


def pin_fp32_layers(trt: Any, network: Any, onnx_names: set[str]) -> list[str]:
    """Set ``precision`` and output types to fp32 on the layers :func:`should_pin_fp32` selects."""
    floats = (trt.float32, trt.float16)
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not should_pin_fp32(layer.name, _layer_kind(trt, layer), [o.name for o in outputs], onnx_names):
            continue
        if any(o.dtype not in floats for o in outputs):
            continue  # shape arithmetic and indices stay as they are
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned


def _progress_monitor(trt: Any) -> Any:
    """An IProgressMonitor that logs phases and, at most every 5 s, step counts (TensorRT calls it from several threads)."""

    class Progress(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._steps: dict[str, int] = {}
            self._last = 0.0

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._steps[phase_name] = num_steps
                if parent_phase is None:
                    log.info("build: %s (%d steps)", phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                now = time.monotonic()
                if now - self._last > 5.0:
                    self._last = now
                    log.info("build:   %s %d/%d", phase_name, step + 1, self._steps.get(phase_name, 0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                self._steps.pop(phase_name, None)

    return Progress()


@dataclass(frozen=True)
class BuildConfig:
    """One engine build. ``opt_batch`` None means ``max_batch`` (the pipeline batches all faces of a frame)."""

    onnx: Path
    out: Path
    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int | None = None
    max_batch: int = 8
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    device: str = "cuda"
    pin_attention_fp32: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt <= self.max_batch:
            raise ValueError(
                f"batches must satisfy 1 <= min <= opt <= max, got {self.min_batch}/{self.opt}/{self.max_batch}"
            )
        if self.workspace_gb <= 0:
            raise ValueError(f"workspace_gb must be > 0, got {self.workspace_gb}")

    @property
    def opt(self) -> int:
        return self.opt_batch or self.max_batch


def _load_timing_cache(trt: Any, config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
    except Exception:  # the bindings raise on a corrupt blob; treated like None below
        cache = None
    if cache is None:
        log.info("build: timing cache %s is unusable (other TensorRT version?); starting an empty one", path)
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def _save_timing_cache(config: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    os.replace(tmp, path)


def build_engine(cfg: BuildConfig) -> EngineHeader:
    """Build ``cfg.onnx`` into ``cfg.out`` (header + plan); returns the header written."""
    trt = import_tensorrt()
    if not cfg.onnx.is_file():
        raise ModelLoadError(f"ONNX model not found: {cfg.onnx}")
    header = tensorrt_header(
        cfg.onnx,
        precision=cfg.precision,
        min_batch=cfg.min_batch,
        opt_batch=cfg.opt,
        max_batch=cfg.max_batch,
        device=cfg.device,
    )
    torch = import_torch()
    started = time.monotonic()
    with torch.cuda.device(
        cuda_device(cfg.device, "TensorRT")
    ):  # the builder targets the current CUDA device
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # implicit in TensorRT 10
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(cfg.onnx)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelLoadError(f"TensorRT cannot parse {cfg.onnx}: {errors}")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gb * (1 << 30)))
        if cfg.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
            if cfg.pin_attention_fp32:
                pinned = pin_fp32_layers(trt, network, attention_fp32_names(onnx_nodes(cfg.onnx)))
                if pinned:
                    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
                    log.info("build: %d layer(s) pinned to fp32: %s", len(pinned), ", ".join(pinned[:8]))

        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = tuple(int(d) for d in tensor.shape)
            if any(d < 0 for d in dims[1:]):
                raise ModelLoadError(
                    f"input {tensor.name!r} has dynamic non-batch dims {dims}; only the batch may be dynamic"
                )
            profile.set_shape(
                tensor.name, (cfg.min_batch, *dims[1:]), (cfg.opt, *dims[1:]), (cfg.max_batch, *dims[1:])
            )
        config.add_optimization_profile(profile)
        _load_timing_cache(trt, config, cfg.timing_cache)
        if hasattr(trt, "IProgressMonitor"):
            config.progress_monitor = _progress_monitor(trt)

        log.info(
            "build: %s -> %s (%s, batch %d/%d/%d)",
            cfg.onnx,
            cfg.out,
            cfg.precision,
            cfg.min_batch,
            cfg.opt,
            cfg.max_batch,
        )
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"TensorRT failed to build {cfg.onnx} (see the TensorRT log above)")
        if cfg.timing_cache is not None:
            _save_timing_cache(config, cfg.timing_cache)
    write_engine_file(cfg.out, header, memoryview(plan))
    log.info("build: wrote %s in %.0f s", cfg.out, time.monotonic() - started)
    return header
