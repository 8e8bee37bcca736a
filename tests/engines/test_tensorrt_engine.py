"""TensorRT and torch-tensorrt engines on a GPU. Every test needs ``import tensorrt`` and a CUDA GPU and
is skipped visibly (with the reason) elsewhere; the 'not installed' paths are tested in test_build.py."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.build import main
from engines.errors import EngineMismatchError, ModelLoadError, ShapeError
from engines.metadata import read_engine_file, read_engine_header, write_engine_file
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.tensorrt_engine import TensorRTEngine
from engines.trt_build import BuildConfig, build_engine
from tests.engines.conftest import cuda_available, tensorrt_missing
from tests.engines.test_onnxruntime_engine import feeds

_TRT_REASON = tensorrt_missing()
pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.gpu,
    pytest.mark.skipif(_TRT_REASON is not None, reason=f"TensorRT is not importable ({_TRT_REASON})"),
    pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


@pytest.fixture(scope="module")
def built(generator_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trt") / "generator.engine"
    build_engine(
        BuildConfig(
            onnx=generator_model.onnx,
            out=out,
            precision="fp32",
            max_batch=4,
            opt_batch=2,
            timing_cache=out.with_name("timing.cache"),
            workspace_gb=1,
        )
    )
    return out


def test_build_writes_header_and_timing_cache(built: Path, generator_model: Any) -> None:
    header, plan = read_engine_file(built)
    assert header.model == generator_model.info and header.precision == "fp32"
    assert (header.min_batch, header.opt_batch, header.max_batch) == (1, 2, 4)
    assert len(plan) > 0 and built.with_name("timing.cache").stat().st_size > 0


def test_parity_with_onnxruntime_for_every_batch(built: Path, generator_model: Any) -> None:
    engine = TensorRTEngine(built, onnx_path=generator_model.onnx)
    reference = OnnxRuntimeEngine(generator_model.onnx)
    for batch in (1, 2, 3, 4, 1):
        f = feeds(batch, seed=batch)
        np.testing.assert_allclose(engine.run(f)["restored"], reference.run(f)["restored"], atol=1e-4)
    with pytest.raises(ShapeError, match="profile"):
        engine.run(feeds(5))


def test_torch_cuda_tensors_on_the_current_stream(built: Path, generator_model: Any) -> None:
    import torch

    engine = TensorRTEngine(built, onnx_path=generator_model.onnx)
    f = feeds(3)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = engine.run({k: torch.from_numpy(v).cuda() for k, v in f.items()})["restored"]
    stream.synchronize()
    assert out.device.type == "cuda" and out.dtype == torch.float32
    np.testing.assert_allclose(out.cpu().numpy(), engine.run(f)["restored"], atol=1e-6)


def test_mismatched_requests_are_refused(built: Path, generator_model: Any, tmp_path: Path) -> None:
    with pytest.raises(EngineMismatchError, match="precision"):
        TensorRTEngine(built, onnx_path=generator_model.onnx, precision="fp16")
    with pytest.raises(EngineMismatchError, match="max_batch"):
        TensorRTEngine(built, batch_profile=(1, 2, 8))
    header, plan = read_engine_file(built)
    stale = tmp_path / "stale.engine"
    write_engine_file(stale, dataclasses.replace(header, tensorrt_version="9.0.0"), plan)
    with pytest.raises(EngineMismatchError, match="tensorrt_version"):
        TensorRTEngine(stale)


def test_from_onnx_caches_and_rebuilds_stale_engines(generator_model: Any, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no TensorRT engine"):
        TensorRTEngine.from_onnx(
            generator_model.onnx, precision="fp32", max_batch=2, cache_dir=tmp_path, allow_build=False
        )
    first = TensorRTEngine.from_onnx(generator_model.onnx, precision="fp32", max_batch=2, cache_dir=tmp_path)
    stamp = os.stat(first.path).st_mtime_ns
    again = TensorRTEngine.from_onnx(generator_model.onnx, precision="fp32", max_batch=2, cache_dir=tmp_path)
    assert again.path == first.path and os.stat(again.path).st_mtime_ns == stamp  # reused, not rebuilt
    header, plan = read_engine_file(first.path)
    write_engine_file(first.path, dataclasses.replace(header, gpu_name="Another GPU"), plan)
    with pytest.raises(EngineMismatchError, match="gpu_name"):
        TensorRTEngine.from_onnx(
            generator_model.onnx, precision="fp32", max_batch=2, cache_dir=tmp_path, allow_build=False
        )
    rebuilt = TensorRTEngine.from_onnx(
        generator_model.onnx, precision="fp32", max_batch=2, cache_dir=tmp_path
    )
    assert read_engine_header(rebuilt.path).gpu_name == header.gpu_name


def test_fp16_attention_stays_close_to_fp32(attention_model: Any, tmp_path: Path) -> None:
    out = tmp_path / "attn16.engine"
    build_engine(
        BuildConfig(onnx=attention_model.onnx, out=out, precision="fp16", max_batch=2, workspace_gb=1)
    )
    image = feeds(2)["image"] * 50.0  # large activations: unpinned fp16 attention logits would overflow
    got = TensorRTEngine(out, onnx_path=attention_model.onnx).run({"image": image})["mask"]
    expected = OnnxRuntimeEngine(attention_model.onnx).run({"image": image})["mask"]
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, atol=2e-2)


def test_cli_builds_an_engine(generator_model: Any, tmp_path: Path) -> None:
    out = tmp_path / "cli.engine"
    args = [
        "--onnx",
        str(generator_model.onnx),
        "--precision",
        "fp32",
        "--max-batch",
        "2",
        "--out",
        str(out),
        "--timing-cache",
        str(tmp_path / "t.cache"),
        "--workspace-gb",
        "1",
    ]
    assert main(args) == 0
    assert read_engine_header(out).max_batch == 2


def test_torch_tensorrt_matches_onnxruntime(generator_model: Any, tmp_path: Path) -> None:
    pytest.importorskip("torch_tensorrt", reason="torch-tensorrt is not installed")
    from engines.torch_tensorrt_engine import TorchTensorRTEngine

    engine = TorchTensorRTEngine(generator_model.onnx, precision="fp32", max_batch=4, cache_dir=tmp_path)
    reference = OnnxRuntimeEngine(generator_model.onnx)
    for batch in (1, 3):
        f = feeds(batch, seed=batch)
        np.testing.assert_allclose(engine.run(f)["restored"], reference.run(f)["restored"], atol=1e-3)
    cached = TorchTensorRTEngine(generator_model.onnx, precision="fp32", max_batch=4, cache_dir=tmp_path)
    np.testing.assert_allclose(
        cached.run(feeds(2))["restored"], reference.run(feeds(2))["restored"], atol=1e-3
    )
