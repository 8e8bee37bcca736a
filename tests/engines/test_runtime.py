"""engines.runtime (the one device resolver and precision vocabulary), the engines import tree, the
cached-or-build helper, and options that do not apply being said, not dropped."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import pytest

from engines import runtime
from engines.cache import load_or_build
from engines.errors import BackendUnavailableError, EngineMismatchError, ModelLoadError
from engines.runtime import PRECISION_CHOICES, PRECISIONS, parse_device, resolve_device, resolve_precision

ENGINES = Path(__file__).resolve().parents[2] / "engines"


def test_one_precision_vocabulary() -> None:
    from engines import metadata, onnxruntime_engine, select, torch_engine, trt_build

    assert PRECISIONS == ("fp32", "fp16") and PRECISION_CHOICES == ("auto", "fp32", "fp16")
    for module in (metadata, onnxruntime_engine, select, torch_engine, trt_build):
        assert module.PRECISIONS is PRECISIONS, module.__name__


def test_resolve_device_and_precision(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runtime, "cuda_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="engines.runtime"):
        assert resolve_device("auto") == "cpu"
    assert [r.getMessage() for r in caplog.records] == ["device: auto -> cpu (no CUDA GPU visible to torch)"]
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(BackendUnavailableError, match="'cuda:1' requested but torch sees no CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("mps")
    assert parse_device("cuda:2") == ("cuda", 2) and parse_device("cuda") == ("cuda", 0)
    assert resolve_precision("auto", "cuda:0") == "fp16" and resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cuda:0") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")


def _engines_imports(path: Path) -> set[str]:
    """Every ``engines.*`` / ``stream`` / ``training`` module a file imports, at module level or in a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "engines":
                found.update(f"engines.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in ("engines", "stream", "training", "benchmarks")}


def test_engines_is_a_tree_and_imports_neither_stream_nor_training() -> None:
    modules = {
        ".".join(("engines", *p.relative_to(ENGINES).with_suffix("").parts)).removesuffix(".__init__"): p
        for p in ENGINES.rglob("*.py")
    }
    graph = {name: _engines_imports(path) for name, path in modules.items()}
    outside = {name: sorted(i for i in deps if not i.startswith("engines")) for name, deps in graph.items()}
    assert all(not v for v in outside.values()), {k: v for k, v in outside.items() if v}
    assert "engines.trt_build" in graph["engines.tensorrt_engine"]  # the edge the old circle went back over

    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph.get(name, ())):
            if dep not in graph:
                continue
            assert state.get(dep) != 1, f"import circle: {' -> '.join([*stack, name, dep])}"
            if dep not in state:
                visit(dep, [*stack, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


class _Header:
    def __init__(self, mismatch: str = "") -> None:
        self.mismatch = mismatch

    def mismatches(self, other: Any) -> list[str]:
        return [self.mismatch] if self.mismatch else []


def test_load_or_build_uses_a_matching_cache_and_rebuilds_a_stale_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "model.engine"
    calls: list[str] = []
    header = {"value": _Header()}

    def load() -> str:
        calls.append("load")
        return "loaded"

    def build() -> str:
        calls.append("build")
        path.write_bytes(b"plan")
        header["value"] = _Header()
        return "built"

    def run(**kw: Any) -> str:
        return load_or_build(
            path,
            _Header(),
            read_header=lambda p: header["value"],
            load=load,
            build=build,
            what="test engine",
            **kw,
        )

    with pytest.raises(ModelLoadError, match="no test engine at"):
        run(allow_build=False)
    with caplog.at_level(logging.INFO, logger="engines.cache"):
        assert run() == "built"
        assert run() == "loaded"
        header["value"] = _Header("gpu_name: A != B")
        with pytest.raises(EngineMismatchError, match="gpu_name"):
            run(allow_build=False)
        assert run() == "built"
    assert calls == ["build", "load", "build"]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"engine: building test engine {path} (none cached)"
    assert "gpu_name: A != B" in lines[1]


def test_renamed_torch_tensorrt_options_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    from engines.torch_tensorrt_engine import supported_options

    def compile_v2(module: Any, *, workspace_size: int = 0, min_block_size: int = 3) -> None: ...

    options = {"workspace_size": 1, "min_block_size": 1, "timing_cache_path": "/tmp/t"}
    with caplog.at_level(logging.WARNING, logger="engines.torch_tensorrt_engine"):
        kept = supported_options(compile_v2, options, release="2.0")
    assert kept == {"workspace_size": 1, "min_block_size": 1}
    assert [r.getMessage() for r in caplog.records] == [
        "engine: torch-tensorrt 2.0 does not take build option(s) timing_cache_path; compiling without them"
    ]
    caplog.clear()
    assert supported_options(lambda module, **kw: None, options, release="2.9") == options
    assert caplog.records == []


def test_threads_reach_torch_on_cpu(generator_model: Any, caplog: pytest.LogCaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    from engines.select import load_engine

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    try:
        with caplog.at_level(logging.INFO, logger="engines.torch_engine"):
            load_engine(generator_model.onnx, backend="torch", device="cpu", max_batch=2, intra_threads=want)
        assert torch.get_num_threads() == want
        assert f"torch: {want} intra-op threads (process-wide)" in [r.getMessage() for r in caplog.records]
    finally:
        torch.set_num_threads(before)


def test_threads_where_they_do_not_apply_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    from engines.select import _note_ignored_threads

    with caplog.at_level(logging.WARNING, logger="engines.select"):
        _note_ignored_threads("tensorrt", "cuda:0", 4)
        _note_ignored_threads("onnxruntime", "cpu", 4)
        _note_ignored_threads("tensorrt", "cuda:0", None)
    assert [r.getMessage() for r in caplog.records] == [
        "engine: --threads 4 does not apply to tensorrt on cuda:0; ignored"
    ]
