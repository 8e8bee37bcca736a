"""ModelInfo in .onnx / .pt2 files and the engine-file header (pure Python, runs on CPU)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from engines.base import ModelInfo, TensorSpec
from engines.errors import EngineMismatchError, ModelLoadError
from engines.metadata import (
    ENGINE_MAGIC,
    EngineHeader,
    check_header,
    read_engine_file,
    read_engine_header,
    read_header_sidecar,
    read_onnx_info,
    read_pt2_info,
    tensor_specs,
    write_engine_file,
    write_header_sidecar,
)

INFO = ModelInfo(role="generator", crop_size=256, profile="small", iterations=1000, extra={"note": "x"})


def make_header(**changes: Any) -> EngineHeader:
    base = EngineHeader(
        onnx_sha256="a" * 64,
        model=INFO,
        precision="fp16",
        min_batch=1,
        opt_batch=4,
        max_batch=8,
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100 80GB HBM3",
        gpu_compute_capability="9.0",
        built_at="2025-01-01T00:00:00+00:00",
    )
    return dataclasses.replace(base, **changes)


def test_onnx_info_round_trip(generator_model: Any) -> None:
    assert read_onnx_info(generator_model.onnx) == generator_model.info


def test_onnx_info_without_the_onnx_package(generator_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # forces the onnxruntime reader
    assert read_onnx_info(generator_model.onnx) == generator_model.info


def test_pt2_info_round_trip(generator_model: Any) -> None:
    assert read_pt2_info(generator_model.pt2) == generator_model.info


def test_onnx_without_metadata_is_refused(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 3, 16, 16])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["mask"])], "g", [x], [y])
    path = tmp_path / "bare.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelLoadError, match="no 'deocclude' metadata"):
        read_onnx_info(path)


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        read_onnx_info(tmp_path / "nope.onnx")
    with pytest.raises(ModelLoadError, match="not found"):
        read_pt2_info(tmp_path / "nope.pt2")
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a .pt2 archive"):
        read_pt2_info(junk)


def test_tensor_specs_follow_the_contract() -> None:
    inputs, outputs = tensor_specs(INFO)
    assert inputs == (TensorSpec("image", (-1, 3, 256, 256)), TensorSpec("mask", (-1, 1, 256, 256)))
    assert outputs == (TensorSpec("restored", (-1, 3, 256, 256)),)
    det_in, det_out = tensor_specs(dataclasses.replace(INFO, role="detector"))
    assert [s.name for s in det_in] == ["image"] and det_out == (TensorSpec("mask", (-1, 1, 256, 256)),)


def test_engine_file_round_trip(tmp_path: Path) -> None:
    header = make_header()
    plan = bytes(range(256)) * 10
    path = tmp_path / "sub" / "model.engine"
    write_engine_file(path, header, plan)
    assert path.read_bytes().startswith(ENGINE_MAGIC)
    got_header, got_plan = read_engine_file(path)
    assert got_header == header
    assert got_plan == plan
    assert read_engine_header(path) == header
    assert [p.name for p in path.parent.iterdir()] == ["model.engine"]  # no temp file left behind


FIELD_CHANGES = {
    "onnx_sha256": "b" * 64,
    "model": dataclasses.replace(INFO, crop_size=128),
    "precision": "fp32",
    "min_batch": 2,
    "opt_batch": 8,
    "max_batch": 16,
    "tensorrt_version": "10.4.0",
    "gpu_name": "NVIDIA GeForce RTX 4090",
    "gpu_compute_capability": "8.9",
    "backend": "torch-tensorrt",
    "torch_tensorrt_version": "2.5.0",
    "format_version": 2,
}


@pytest.mark.parametrize("field", sorted(FIELD_CHANGES))
def test_every_field_mismatch_is_refused(field: str, tmp_path: Path) -> None:
    path = tmp_path / "m.engine"
    write_engine_file(path, make_header(), b"plan")
    header, _ = read_engine_file(path)
    expected = make_header(**{field: FIELD_CHANGES[field]})
    with pytest.raises(EngineMismatchError, match=field):
        check_header(header, expected, path=path)


def test_built_at_is_not_compared() -> None:
    check_header(make_header(), make_header(built_at="2030-01-01T00:00:00+00:00"))


def test_mismatch_message_names_every_difference() -> None:
    with pytest.raises(EngineMismatchError) as info:
        check_header(make_header(), make_header(precision="fp32", gpu_name="Other GPU"))
    assert "precision: engine 'fp16', wanted 'fp32'" in str(info.value)
    assert "gpu_name" in str(info.value)


def test_file_without_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bare.engine"
    path.write_bytes(b"\x00" * 64)  # a bare plan or anything else
    with pytest.raises(EngineMismatchError, match="no deocclude engine header"):
        read_engine_file(path)


@pytest.mark.parametrize(
    "blob",
    [
        ENGINE_MAGIC + b"\x01",  # truncated length
        ENGINE_MAGIC + (100).to_bytes(4, "little") + b"{}",  # truncated JSON
        ENGINE_MAGIC + (1 << 30).to_bytes(4, "little"),  # absurd length
        ENGINE_MAGIC + (2).to_bytes(4, "little") + b"{}" + b"plan",  # JSON without fields
    ],
)
def test_corrupt_headers_are_load_errors(blob: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.engine"
    path.write_bytes(blob)
    with pytest.raises(ModelLoadError):
        read_engine_file(path)


def test_header_without_plan_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.engine"
    write_engine_file(path, make_header(), b"")
    with pytest.raises(ModelLoadError, match="no serialized plan"):
        read_engine_file(path)
    with pytest.raises(ModelLoadError, match="not found"):
        read_engine_file(tmp_path / "missing.engine")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "int8"}, "precision"),
        ({"min_batch": 4, "opt_batch": 2}, "batch profile"),
        ({"onnx_sha256": "abc"}, "onnx_sha256"),
    ],
)
def test_header_validation(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_header(**changes)


def test_sidecar_round_trip(tmp_path: Path) -> None:
    artifact = tmp_path / "m.ep"
    with pytest.raises(EngineMismatchError, match="no header file"):
        read_header_sidecar(artifact)
    header = make_header(backend="torch-tensorrt", torch_tensorrt_version="2.5.0")
    write_header_sidecar(artifact, header)
    assert read_header_sidecar(artifact) == header
