"""CUDA-graph replay for fixed shapes: capture a function once per input-shape signature, then replay.

Small networks are bound by kernel-launch overhead; replaying a captured graph launches them all at
once. Each signature (one per batch size, in practice) gets static input and output buffers allocated
at capture and reused for every replay; all graphs share one memory pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Shape = tuple[int, ...]


@dataclass
class _Captured:
    graph: Any
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]


class CudaGraphRunner:
    """Runs ``fn(*tensors) -> tuple[tensor, ...]`` through captured CUDA graphs on ``device``.

    Inputs are copied into the static buffers and the graph is replayed on the caller's current CUDA
    stream. The returned tensors ARE the static output buffers: the next call with the same shapes
    overwrites them (callers that keep results clone them). Not thread-safe.
    """

    def __init__(self, fn: Callable[..., tuple[Any, ...]], device: str, *, warmup_iters: int = 2) -> None:
        import torch

        self._torch = torch
        self._fn = fn
        self._device = torch.device(device)
        self._warmup_iters = warmup_iters
        self._pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[tuple[Shape, ...], _Captured] = {}

    @property
    def captured_shapes(self) -> list[tuple[Shape, ...]]:
        return list(self._graphs)

    def _capture(self, args: Sequence[Any]) -> _Captured:
        torch = self._torch
        static_in = tuple(torch.empty(a.shape, dtype=a.dtype, device=self._device) for a in args)
        for s, a in zip(static_in, args, strict=True):
            s.copy_(a)
        # Warm up on a side stream first: cuDNN autotuning and lazy allocations must not be captured.
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):
            for _ in range(self._warmup_iters):
                self._fn(*static_in)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = tuple(self._fn(*static_in))
        return _Captured(graph, static_in, static_out)

    def __call__(self, *args: Any) -> tuple[Any, ...]:
        key = tuple(tuple(a.shape) for a in args)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = self._capture(args)
        for static, a in zip(captured.inputs, args, strict=True):
            static.copy_(a, non_blocking=True)
        captured.graph.replay()
        return captured.outputs

    def reset(self) -> None:
        """Drop every captured graph and its buffers."""
        self._graphs.clear()
