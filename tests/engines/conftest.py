"""Session fixtures: tiny exported networks shared by the engine tests (made once, in tmp dirs)."""

from __future__ import annotations

from typing import Any

import pytest

from engines.base import ModelInfo
from engines.runtime import cuda_available  # the project's one answer, shared by the tests' skips

CROP = 16


def _tiny() -> Any:
    pytest.importorskip("torch", reason="torch is needed to export the test networks")
    pytest.importorskip("onnx", reason="onnx is needed to write the test networks' metadata")
    from tests.engines import tiny_models

    return tiny_models


@pytest.fixture(scope="session")
def generator_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tiny = _tiny()
    tiny.torch.manual_seed(0)
    info = ModelInfo(role="generator", crop_size=CROP, profile="test", git_revision="test")
    shapes = {"image": (3, CROP, CROP), "mask": (1, CROP, CROP)}
    return tiny.export(
        tiny.TinyGenerator(), tmp_path_factory.mktemp("gen"), "generator", info, shapes, "restored"
    )


@pytest.fixture(scope="session")
def detector_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tiny = _tiny()
    tiny.torch.manual_seed(1)
    info = ModelInfo(role="detector", crop_size=CROP, profile="test")
    shapes = {"image": (3, CROP, CROP)}
    return tiny.export(tiny.TinyDetector(), tmp_path_factory.mktemp("det"), "detector", info, shapes, "mask")


@pytest.fixture(scope="session")
def attention_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tiny = _tiny()
    tiny.torch.manual_seed(2)
    info = ModelInfo(role="detector", crop_size=CROP, profile="test")
    shapes = {"image": (3, CROP, CROP)}
    return tiny.export(
        tiny.TinyAttention(), tmp_path_factory.mktemp("attn"), "detector", info, shapes, "mask"
    )


def tensorrt_missing() -> str | None:
    """Why ``import tensorrt`` fails here, or None when it works."""
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


requires_cuda = pytest.mark.skipif(
    not cuda_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)
