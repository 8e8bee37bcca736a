"""OnnxRuntimeEngine on CPU: outputs, batches, input validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engines.base import Engine
from engines.errors import BackendUnavailableError, EngineError, ShapeError
from engines.onnxruntime_engine import OnnxRuntimeEngine, available_providers

S = 16


def feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.random((batch, 3, S, S), dtype=np.float32),
        "mask": (rng.random((batch, 1, S, S)) > 0.5).astype(np.float32),
    }


@pytest.fixture(scope="module")
def engine(generator_model: Any) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(generator_model.onnx, intra_threads=1, max_batch=4)


def test_is_an_engine(engine: OnnxRuntimeEngine, generator_model: Any) -> None:
    assert isinstance(engine, Engine)
    assert engine.backend == "onnxruntime" and engine.device == "cpu" and engine.provider == "cpu"
    assert engine.info == generator_model.info
    assert [s.name for s in engine.inputs] == ["image", "mask"]
    assert [s.name for s in engine.outputs] == ["restored"]


@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_batches_match_the_torch_module(engine: OnnxRuntimeEngine, generator_model: Any, batch: int) -> None:
    import torch

    f = feeds(batch, seed=batch)
    out = engine.run(f)
    assert list(out) == ["restored"]
    restored = out["restored"]
    assert (
        isinstance(restored, np.ndarray)
        and restored.dtype == np.float32
        and restored.shape == (batch, 3, S, S)
    )
    with torch.no_grad():
        reference = generator_model.module(torch.from_numpy(f["image"]), torch.from_numpy(f["mask"])).numpy()
    np.testing.assert_allclose(restored, reference, atol=1e-5)


def test_torch_tensors_in_torch_tensors_out(engine: OnnxRuntimeEngine) -> None:
    import torch

    f = feeds(2)
    out = engine.run({k: torch.from_numpy(v) for k, v in f.items()})
    assert isinstance(out["restored"], torch.Tensor)
    np.testing.assert_array_equal(out["restored"].numpy(), engine.run(f)["restored"])


def test_detector(detector_model: Any) -> None:
    engine = OnnxRuntimeEngine(detector_model.onnx)
    mask = engine.run({"image": feeds(2)["image"]})["mask"]
    assert mask.shape == (2, 1, S, S) and 0.0 <= mask.min() and mask.max() <= 1.0


def test_wrong_names_name_the_expected_ones(engine: OnnxRuntimeEngine) -> None:
    f = feeds(1)
    with pytest.raises(ShapeError, match=r"\['image', 'mask'\]"):
        engine.run({"image": f["image"], "occlusion": f["mask"]})
    with pytest.raises(ShapeError, match="must be named"):
        engine.run({"image": f["image"]})


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.uint8])
def test_wrong_dtype(engine: OnnxRuntimeEngine, dtype: Any) -> None:
    f = feeds(1)
    f["image"] = f["image"].astype(dtype)
    with pytest.raises(ShapeError, match="must be float32"):
        engine.run(f)


def test_batch_outside_profile(engine: OnnxRuntimeEngine) -> None:
    with pytest.raises(ShapeError, match="outside the engine's profile 1..4"):
        engine.run(feeds(5))
    with pytest.raises(ShapeError):
        engine.run({k: v[:0] for k, v in feeds(1).items()})  # empty batch


def test_bad_shapes(engine: OnnxRuntimeEngine) -> None:
    f = feeds(2)
    with pytest.raises(ShapeError, match="one batch size"):
        engine.run({"image": f["image"], "mask": f["mask"][:1]})
    with pytest.raises(ShapeError, match="must have shape"):
        engine.run({"image": np.zeros((2, 3, 32, 32), np.float32), "mask": f["mask"]})
    with pytest.raises(ShapeError, match="must have shape"):
        engine.run({"image": f["image"][0], "mask": f["mask"]})


def test_mixed_numpy_and_torch_is_refused(engine: OnnxRuntimeEngine) -> None:
    import torch

    f = feeds(1)
    with pytest.raises(ShapeError, match="mix"):
        engine.run({"image": f["image"], "mask": torch.from_numpy(f["mask"])})


def test_bad_arguments(generator_model: Any) -> None:
    with pytest.raises(ValueError, match="intra_threads"):
        OnnxRuntimeEngine(generator_model.onnx, intra_threads=0)
    with pytest.raises(ValueError, match="device"):
        OnnxRuntimeEngine(generator_model.onnx, device="gpu")
    with pytest.raises(ValueError, match="does not run on"):
        OnnxRuntimeEngine(generator_model.onnx, device="cpu", provider="cuda")


@pytest.mark.skipif("cuda" in available_providers(), reason="this onnxruntime has the CUDA provider")
def test_cuda_provider_missing(generator_model: Any) -> None:
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        OnnxRuntimeEngine(generator_model.onnx, device="cuda")


def test_fp16_on_cpu_runs_fp32_and_says_so(generator_model: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="engines.onnxruntime_engine")
    engine = OnnxRuntimeEngine(generator_model.onnx, precision="fp16")
    assert engine.precision == "fp32"
    assert any("fp16 ignored" in r.getMessage() for r in caplog.records)


def test_warmup_and_close(generator_model: Any) -> None:
    with OnnxRuntimeEngine(generator_model.onnx) as engine:
        engine.warmup(2)
    with pytest.raises(EngineError, match="closed"):
        engine.run(feeds(1))
