"""TorchEngine: parity with ONNX Runtime on CPU; fp16, channels_last and CUDA graphs on a GPU."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.base import Engine
from engines.errors import BackendUnavailableError, EngineMismatchError, ModelLoadError, ShapeError
from engines.metadata import write_onnx_info
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.torch_engine import TorchEngine
from tests.engines.conftest import cuda_available, requires_cuda
from tests.engines.test_onnxruntime_engine import feeds

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def engines(generator_model: Any) -> tuple[OnnxRuntimeEngine, TorchEngine]:
    return OnnxRuntimeEngine(generator_model.onnx, max_batch=4), TorchEngine(
        generator_model.onnx, max_batch=4
    )


@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_parity_with_onnxruntime(engines: tuple[OnnxRuntimeEngine, TorchEngine], batch: int) -> None:
    ort_engine, torch_engine = engines
    f = feeds(batch, seed=10 + batch)
    expected = ort_engine.run(f)["restored"]
    got = torch_engine.run(f)["restored"]
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_detector_parity(detector_model: Any) -> None:
    image = feeds(3)["image"]
    expected = OnnxRuntimeEngine(detector_model.onnx).run({"image": image})["mask"]
    got = TorchEngine(detector_model.pt2).run({"image": image})["mask"]  # the .pt2 path works as well
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_channels_last_on_cpu_is_the_same_network(generator_model: Any) -> None:
    f = feeds(2)
    plain = TorchEngine(generator_model.onnx).run(f)["restored"]
    nhwc = TorchEngine(generator_model.onnx, channels_last=True).run(f)["restored"]
    np.testing.assert_allclose(nhwc, plain, atol=1e-5)


def test_protocol_and_torch_io(engines: tuple[OnnxRuntimeEngine, TorchEngine]) -> None:
    _, engine = engines
    assert isinstance(engine, Engine) and engine.backend == "torch" and engine.device == "cpu"
    out = engine.run({k: torch.from_numpy(v) for k, v in feeds(2).items()})
    assert isinstance(out["restored"], torch.Tensor) and out["restored"].dtype == torch.float32


def test_validation(engines: tuple[OnnxRuntimeEngine, TorchEngine]) -> None:
    _, engine = engines
    f = feeds(5)
    with pytest.raises(ShapeError, match="profile"):
        engine.run(f)
    with pytest.raises(ShapeError, match=r"\['image', 'mask'\]"):
        engine.run({"img": f["image"], "mask": f["mask"]})
    with pytest.raises(ShapeError, match="float32"):
        engine.run({"image": f["image"][:1].astype(np.float64), "mask": f["mask"][:1]})


def test_missing_pt2(generator_model: Any, tmp_path: Path) -> None:
    onnx = tmp_path / "generator.onnx"
    shutil.copy(generator_model.onnx, onnx)
    with pytest.raises(ModelLoadError, match="generator.pt2 not found"):
        TorchEngine(onnx)


def test_pt2_and_onnx_must_describe_the_same_model(generator_model: Any, tmp_path: Path) -> None:
    onnx, pt2 = tmp_path / "generator.onnx", tmp_path / "generator.pt2"
    shutil.copy(generator_model.onnx, onnx)
    shutil.copy(generator_model.pt2, pt2)
    write_onnx_info(onnx, generator_model.info.__class__(role="generator", crop_size=16, profile="other"))
    with pytest.raises(EngineMismatchError, match="different models"):
        TorchEngine(onnx)


def test_cpu_refuses_gpu_options(generator_model: Any) -> None:
    with pytest.raises(ValueError, match="fp16"):
        TorchEngine(generator_model.onnx, precision="fp16")
    with pytest.raises(ValueError, match="cuda_graphs"):
        TorchEngine(generator_model.onnx, cuda_graphs=True)


@pytest.mark.skipif(cuda_available(), reason="a CUDA device exists here")
def test_cuda_without_cuda(generator_model: Any) -> None:
    with pytest.raises(BackendUnavailableError, match="no CUDA"):
        TorchEngine(generator_model.onnx, device="cuda")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_cuda_graphs_match_cpu(generator_model: Any, precision: str, atol: float) -> None:
    cpu = TorchEngine(generator_model.onnx, max_batch=4)
    gpu = TorchEngine(generator_model.onnx, device="cuda", precision=precision, cuda_graphs=True, max_batch=4)
    for batch in (1, 3, 1, 4):
        f = feeds(batch, seed=batch)
        np.testing.assert_allclose(gpu.run(f)["restored"], cpu.run(f)["restored"], atol=atol)
    assert sorted(shapes[0][0] for shapes in gpu._graphs.captured_shapes) == [
        1,
        3,
        4,
    ]  # one graph per batch size


@pytest.mark.gpu
@requires_cuda
def test_cuda_tensors_stay_on_device_and_survive_the_next_run(generator_model: Any) -> None:
    engine = TorchEngine(generator_model.onnx, device="cuda", cuda_graphs=True)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # engines enqueue on the caller's current stream
        a = {k: torch.from_numpy(v).cuda() for k, v in feeds(2, seed=1).items()}
        b = {k: torch.from_numpy(v).cuda() for k, v in feeds(2, seed=2).items()}
        first = engine.run(a)["restored"]
        first_copy = first.clone()
        second = engine.run(b)["restored"]
    stream.synchronize()
    assert first.device.type == "cuda" and second.device.type == "cuda"
    torch.testing.assert_close(first, first_copy)  # the replay for b did not overwrite a's result
    assert not torch.equal(first, second)


def test_to_half_converts_weights_and_constants() -> None:
    from engines.torch_engine import to_half

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            self.scale = torch.tensor([0.5, 0.2, 0.1]).view(1, 3, 1, 1)  # becomes a plain-attribute constant

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.conv(image * self.scale)

    module = to_half(torch.export.export(Scaled(), (torch.rand(1, 3, 8, 8),)).module())
    tensors = [p for p in module.parameters()]
    tensors += [v for sub in module.modules() for v in vars(sub).values() if isinstance(v, torch.Tensor)]
    assert len(tensors) == 3 and all(t.dtype == torch.float16 for t in tensors)


def test_fp16_keeps_the_attention_softmax_in_fp32(attention_model: Any) -> None:
    """What the fp16 torch (and torch-tensorrt) paths do to the graph, checked on CPU: every softmax
    reads a float32 copy and its result goes back to half; the half module still computes the same."""
    from engines.torch_engine import load_exported, pin_softmax_fp32, resolve_pt2, to_half

    pt2, info = resolve_pt2(attention_model.onnx)
    reference, names = load_exported(pt2, info)
    module, _ = load_exported(pt2, info)
    module = to_half(module)
    assert pin_softmax_fp32(module) >= 1
    aten = torch.ops.aten
    softmaxes = [n for n in module.graph.nodes if n.target in (aten._softmax.default, aten.softmax.int)]
    assert softmaxes
    for node in softmaxes:
        up = node.args[0]
        assert up.target == aten._to_copy.default and up.kwargs["dtype"] == torch.float32
        assert [u.target for u in node.users] == [aten._to_copy.default]
        assert next(iter(node.users)).kwargs["dtype"] == torch.float16
    gen = torch.Generator().manual_seed(0)
    specs = {s.name: s for s in info_inputs(info)}
    feeds = [torch.rand((2, *specs[n].shape[1:]), generator=gen) for n in names]
    want = reference(*feeds)
    got = module(*[f.half() for f in feeds])
    want, got = (w[0] if isinstance(w, tuple | list) else w for w in (want, got))
    assert got.dtype == torch.float16
    assert torch.allclose(got.float(), want, atol=2e-2), float((got.float() - want).abs().max())


def info_inputs(info: Any) -> Any:
    from engines.metadata import tensor_specs

    return tensor_specs(info)[0]
