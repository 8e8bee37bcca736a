"""Per-GPU engine cache paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engines.cache import CACHE_ENV, EngineCache, cache_root
from tests.engines.test_metadata import FIELD_CHANGES, make_header


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "deocclude"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_engine_path_layout(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    header = make_header()
    path = cache.engine_path(header, name="generator")
    assert path == (
        tmp_path
        / "engines"
        / "nvidia-h100-80gb-hbm3-sm90"
        / "trt-10.3.0"
        / f"generator-{'a' * 16}-fp16-b1_4_8.engine"
    )
    assert not path.parent.exists()  # computing a path creates nothing
    timing = cache.timing_cache_path(header.gpu_name, header.gpu_compute_capability, header.tensorrt_version)
    assert timing.parent == path.parent and timing.name == "timing.cache"


@pytest.mark.parametrize(
    "field",
    [
        "onnx_sha256",
        "precision",
        "min_batch",
        "opt_batch",
        "max_batch",
        "tensorrt_version",
        "gpu_name",
        "gpu_compute_capability",
        "backend",
    ],
)
def test_every_key_field_changes_the_path(field: str, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert cache.engine_path(make_header()) != cache.engine_path(make_header(**{field: FIELD_CHANGES[field]}))


def test_build_time_does_not_change_the_path(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert cache.engine_path(make_header()) == cache.engine_path(make_header(built_at="2031-01-01"))


def test_torch_tensorrt_artifacts_carry_their_version(tmp_path: Path) -> None:
    header = make_header(backend="torch-tensorrt", torch_tensorrt_version="2.5.0")
    path = EngineCache(tmp_path).engine_path(header)
    assert path.name.endswith(".torchtrt-2.5.0.ep")
    other = dataclasses.replace(header, torch_tensorrt_version="2.6.0")
    assert EngineCache(tmp_path).engine_path(other) != path
