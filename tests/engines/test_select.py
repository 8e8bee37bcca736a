"""Backend selection: auto on CPU, explicit unavailable backends, logged fallbacks."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from engines import runtime, select
from engines.errors import BackendUnavailableError, EngineError
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.select import BACKENDS, available_backends, load_engine
from engines.torch_engine import TorchEngine
from tests.engines.conftest import cuda_available
from tests.engines.test_onnxruntime_engine import feeds

no_cuda = pytest.mark.skipif(
    cuda_available(), reason="a CUDA device exists here; auto would not pick the CPU"
)


def test_backend_names() -> None:
    assert BACKENDS == ("auto", "onnxruntime", "torch", "tensorrt", "torch-tensorrt", "triton")


def test_available_backends_on_cpu() -> None:
    backends = available_backends("cpu")
    assert backends[0] == "onnxruntime" and "torch" in backends
    assert "tensorrt" not in backends and "torch-tensorrt" not in backends  # they need CUDA
    assert "triton" not in backends  # a server is never picked by auto


def test_available_backends_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cuda_available", lambda: False)
    assert available_backends("cuda") == []
    assert available_backends("auto") == available_backends("cpu")


@no_cuda
def test_auto_on_cpu_picks_onnxruntime_and_says_why(
    generator_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="engines.select")
    engine = load_engine(generator_model.onnx, intra_threads=1)
    assert isinstance(engine, OnnxRuntimeEngine) and engine.device == "cpu"
    lines = [r.getMessage() for r in caplog.records if r.name == "engines.select"]
    assert len(lines) == 1
    assert lines[0].startswith(
        "engine: auto -> onnxruntime on cpu, the first of onnxruntime > torch that runs ("
    )
    assert "tensorrt: " in lines[0] and "torch-tensorrt: " in lines[0] and "torch: no CUDA" in lines[0]
    assert engine.run(feeds(2))["restored"].shape == (2, 3, 16, 16)


def test_explicit_backends_on_cpu(generator_model: Any) -> None:
    assert isinstance(load_engine(generator_model.onnx, "onnxruntime", "cpu"), OnnxRuntimeEngine)
    assert isinstance(load_engine(generator_model.onnx, "torch", "cpu", max_batch=2), TorchEngine)


@pytest.mark.parametrize(
    ("backend", "module"), [("tensorrt", "tensorrt"), ("torch-tensorrt", "torch_tensorrt")]
)
def test_explicit_backend_not_installed(
    generator_model: Any, monkeypatch: pytest.MonkeyPatch, backend: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail whatever is installed
    with pytest.raises(
        BackendUnavailableError, match=r"not installed: pip install deocclude\[tensorrt\]"
    ) as info:
        load_engine(generator_model.onnx, backend=backend)
    assert isinstance(info.value, ImportError)


def test_cuda_device_without_cuda(generator_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "cuda_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="sees no CUDA device"):
        load_engine(generator_model.onnx, backend="onnxruntime", device="cuda")
    with pytest.raises(BackendUnavailableError):
        load_engine(generator_model.onnx, device="cuda:1")


@pytest.mark.skipif(sys.modules.get("tensorrt") is not None, reason="tensorrt is imported here")
def test_tensorrt_on_cpu_needs_cuda(generator_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(select, "importable", lambda module: True)  # pretend it is installed
    with pytest.raises(BackendUnavailableError, match="needs a CUDA device"):
        load_engine(generator_model.onnx, backend="tensorrt", device="cpu")


def test_failed_backend_falls_back_with_one_line(
    generator_model: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: select.EngineRequest) -> Any:
        raise EngineError("simulated load failure")

    monkeypatch.setitem(select.FACTORIES, "onnxruntime", broken)
    caplog.set_level("INFO", logger="engines.select")
    engine = load_engine(generator_model.onnx, device="cpu", max_batch=2)
    assert isinstance(engine, TorchEngine)
    messages = [r.getMessage() for r in caplog.records if r.name == "engines.select"]
    assert messages[0] == "engine: onnxruntime failed on cpu (simulated load failure); falling back"
    assert (
        messages[1]
        == "engine: auto -> torch on cpu, the first of onnxruntime > torch that runs (onnxruntime: failed)"
    )
    np.testing.assert_equal(engine.run(feeds(1))["restored"].shape, (1, 3, 16, 16))


def test_bad_arguments(generator_model: Any) -> None:
    with pytest.raises(ValueError, match="backend"):
        load_engine(generator_model.onnx, backend="openvino")
    with pytest.raises(ValueError, match="precision"):
        load_engine(generator_model.onnx, precision="int8", device="cpu")
    with pytest.raises(ValueError, match="device"):
        load_engine(generator_model.onnx, device="tpu")


def test_auto_walks_the_fixed_order_on_cuda(
    generator_model: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``auto`` is "the first that runs" in CUDA_PREFERENCE, not a timing race (what the README says)."""
    monkeypatch.setattr(select, "resolve_device", lambda device: "cuda:0")
    monkeypatch.setattr(
        select, "unavailable_reason", lambda b, kind: "not installed" if b == "tensorrt" else None
    )
    made: list[str] = []
    for name in select.FACTORIES:
        monkeypatch.setitem(select.FACTORIES, name, lambda r, name=name: made.append(name) or name)
    caplog.set_level("INFO", logger="engines.select")
    assert load_engine(generator_model.onnx, device="cuda") == "torch-tensorrt"
    assert made == ["torch-tensorrt"]
    assert [r.getMessage() for r in caplog.records if r.name == "engines.select"] == [
        "engine: auto -> torch-tensorrt on cuda:0, the first of tensorrt > torch-tensorrt > torch > onnxruntime "
        "that runs (tensorrt: not installed)"
    ]
