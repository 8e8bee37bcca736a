"""Engine build: fp32 pinning rules (CPU) and the CLI without TensorRT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engines.build import main
from engines.errors import BackendUnavailableError
from engines.runtime import TENSORRT_MISSING, TORCH_TENSORRT_MISSING
from engines.tensorrt_engine import TensorRTEngine
from engines.trt_build import (
    BuildConfig,
    OnnxNode,
    attention_fp32_names,
    build_engine,
    onnx_nodes,
    should_pin_fp32,
)

REPO = Path(__file__).resolve().parents[2]


def test_attention_nodes_are_pinned_and_convs_are_not(attention_model: Any) -> None:
    names = attention_fp32_names(onnx_nodes(attention_model.onnx))
    for pinned in ("/Softmax", "/MatMul", "/MatMul_1", "/Mul", "/MatMul_output_0"):
        assert pinned in names
    for free in ("/conv/Conv", "/out/Conv", "/Sigmoid", "mask"):
        assert free not in names


def test_manual_softmax_chain() -> None:
    nodes = [
        OnnxNode("q_k", "MatMul", ("q", "k"), ("logits",)),
        OnnxNode("rmax", "ReduceMax", ("logits",), ("m",)),
        OnnxNode("sub", "Sub", ("logits", "m"), ("shifted",)),
        OnnxNode("exp", "Exp", ("shifted",), ("e",)),
        OnnxNode("sum", "ReduceSum", ("e",), ("s",)),
        OnnxNode("div", "Div", ("e", "s"), ("p",)),
        OnnxNode("p_v", "MatMul", ("p", "v"), ("out",)),
        OnnxNode("proj", "Conv", ("out", "w"), ("y",)),
        OnnxNode("head_attn_matmul", "MatMul", ("a", "b"), ("c",)),
        OnnxNode("mlp_matmul", "MatMul", ("y", "w2"), ("z",)),
    ]
    names = attention_fp32_names(nodes)
    assert {"q_k", "rmax", "sub", "exp", "sum", "div", "p_v", "head_attn_matmul"} <= names
    assert "proj" not in names and "mlp_matmul" not in names


@pytest.mark.parametrize(
    ("name", "kind", "outputs", "expected"),
    [
        ("/blk/Softmax", "Softmax", ["x"], True),
        ("/blk/ReduceMax", "ReduceMax", ["x"], True),
        ("/blk/Exp", "Exp", ["x"], True),
        ("/blk/attn/MatMul", "MatMul", ["x"], True),
        ("/blk/mlp/MatMul", "MatMul", ["x"], False),
        ("/blk/Mul", "ELEMENTWISE", ["/MatMul_output_0"], True),  # matched by its ONNX output name
        ("/conv/Conv", "CONVOLUTION", ["y"], False),
        ("/attn/Constant", "Constant", ["c"], False),
        ("/attn/Shape", "Shape", ["s"], False),
    ],
)
def test_should_pin_fp32(name: str, kind: str, outputs: list[str], expected: bool) -> None:
    assert should_pin_fp32(name, kind, outputs, {"/MatMul_output_0"}) is expected


def test_build_config_validation(tmp_path: Path) -> None:
    cfg = BuildConfig(onnx=tmp_path / "m.onnx", out=tmp_path / "m.engine", max_batch=8)
    assert cfg.opt == 8
    with pytest.raises(ValueError, match="precision"):
        BuildConfig(onnx=tmp_path, out=tmp_path, precision="int8")
    with pytest.raises(ValueError, match="min <= opt <= max"):
        BuildConfig(onnx=tmp_path, out=tmp_path, min_batch=4, max_batch=2)
    with pytest.raises(ValueError, match="workspace"):
        BuildConfig(onnx=tmp_path, out=tmp_path, workspace_gb=0)


def test_cli_without_tensorrt_prints_one_line(
    generator_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    code = main(
        [
            "--onnx",
            str(generator_model.onnx),
            "--precision",
            "fp16",
            "--max-batch",
            "4",
            "--out",
            str(tmp_path / "g.engine"),
        ]
    )
    captured = capsys.readouterr()
    assert code != 0
    assert captured.err.strip().splitlines() == [TENSORRT_MISSING]
    assert not (tmp_path / "g.engine").exists()


def test_cli_torch_tensorrt_without_it(
    generator_model: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)
    assert main(["--onnx", str(generator_model.onnx), "--backend", "torch-tensorrt"]) != 0
    assert capsys.readouterr().err.strip().splitlines() == [TORCH_TENSORRT_MISSING]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # sys.modules["tensorrt"] = None makes the import fail even on a machine that has TensorRT.
    code = f"import sys; sys.modules['tensorrt'] = None; from engines.build import main; raise SystemExit(main({list(args)!r}))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )


def test_cli_process_without_tensorrt(generator_model: Any) -> None:
    done = _run_cli("--onnx", str(generator_model.onnx), "--max-batch", "4")
    assert done.returncode == 2
    assert done.stderr.strip() == TENSORRT_MISSING  # one line, no traceback
    assert "Traceback" not in done.stdout + done.stderr


def test_cli_help_works_without_tensorrt() -> None:
    done = _run_cli("--help")
    assert done.returncode == 0
    for option in (
        "--onnx",
        "--precision",
        "--max-batch",
        "--out",
        "--min-batch",
        "--opt-batch",
        "--workspace-gb",
        "--timing-cache",
        "--backend",
    ):
        assert option in done.stdout


def test_engine_without_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install deocclude\[tensorrt\]") as info:
        TensorRTEngine(tmp_path / "missing.engine")
    assert str(info.value) == TENSORRT_MISSING


def test_build_without_tensorrt(
    generator_model: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError):
        build_engine(BuildConfig(onnx=generator_model.onnx, out=tmp_path / "g.engine"))
