"""The Triton model repository writer: config.pbtxt contents, layout, bad inputs, and that a real
tritonserver loads what it writes (the Python-backend repository) or parses it (onnxruntime_onnx and
tensorrt_plan configs, whose backends the bundled server lacks)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engines.errors import ModelLoadError, ServerError
from engines.metadata import EngineHeader, read_onnx_info, sha256_file, write_engine_file
from engines.triton_repo import RepoConfig, config_pbtxt, main, write_repository
from engines.triton_server import PYTHONPATH_ENV
from tests.engines.triton_fixtures import MODELS, install_or_skip, python_repository, serving


def _param(text: str, key: str) -> str:
    match = re.search(rf'key: "{key}" value: {{ string_value: "((?:[^"\\]|\\.)*)" }}', text)
    assert match, f"no parameter {key!r} in\n{text}"
    return match.group(1).encode().decode("unicode_escape")


def _fake_engine(path: Path, onnx: Path, max_batch: int = 4) -> Path:
    header = EngineHeader(
        onnx_sha256=sha256_file(onnx),
        model=read_onnx_info(onnx),
        precision="fp16",
        min_batch=1,
        opt_batch=max_batch,
        max_batch=max_batch,
        tensorrt_version="10.9.0",
        gpu_name="Test GPU",
        gpu_compute_capability="9.0",
    )
    write_engine_file(path, header, b"not a real plan")
    return path


def test_onnx_repository_layout_and_config(tmp_path: Path) -> None:
    entries = write_repository(MODELS, tmp_path / "repo", config=RepoConfig(max_batch=6, instances=2))
    assert [m.name for m in entries] == ["detector", "generator", "segmenter"]
    gen = (tmp_path / "repo" / "generator" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in gen and "max_batch_size: 6" in gen
    assert '{ name: "image" data_type: TYPE_FP32 dims: [ 3, 128, 128 ] }' in gen
    assert '{ name: "mask" data_type: TYPE_FP32 dims: [ 1, 128, 128 ] }' in gen
    assert '{ name: "restored" data_type: TYPE_FP32 dims: [ 3, 128, 128 ] }' in gen
    assert "dynamic_batching { max_queue_delay_microseconds: 500 }" in gen
    assert "instance_group [ { count: 2 kind: KIND_GPU } ]" in gen
    assert json.loads(_param(gen, "deocclude")) == json.loads(
        read_onnx_info(MODELS / "generator.onnx").to_json()
    )
    assert _param(gen, "onnx_sha256") == sha256_file(MODELS / "generator.onnx")
    model = tmp_path / "repo" / "generator" / "1" / "model.onnx"
    assert model.read_bytes() == (MODELS / "generator.onnx").read_bytes()
    seg = (tmp_path / "repo" / "segmenter" / "config.pbtxt").read_text()
    assert '"face"' in seg and '"region"' in seg


def test_python_backend_repository(tmp_path: Path) -> None:
    write_repository(MODELS, tmp_path, config=RepoConfig(python_backend=True, intra_threads=2))
    det = (tmp_path / "detector" / "config.pbtxt").read_text()
    assert 'backend: "python"' in det and "KIND_CPU" in det and _param(det, "intra_threads") == "2"
    model_py = (tmp_path / "detector" / "1" / "model.py").read_text()
    assert model_py.startswith('"""The Triton Python-backend')
    assert f'PYTHONPATH_ENV = "{PYTHONPATH_ENV}"' in model_py  # the variable the server helper sets
    assert (tmp_path / "detector" / "1" / "model.onnx").is_file()


def test_engine_replaces_its_roles_onnx_with_a_bare_plan(tmp_path: Path) -> None:
    engine = _fake_engine(tmp_path / "gen.engine", MODELS / "generator.onnx", max_batch=4)
    entries = write_repository(MODELS, tmp_path / "repo", engines=[engine])
    assert {m.name: m.serving for m in entries} == {
        "detector": "onnx",
        "generator": "plan",
        "segmenter": "onnx",
    }
    plan_dir = tmp_path / "repo" / "generator"
    assert (plan_dir / "1" / "model.plan").read_bytes() == b"not a real plan"  # our header stays out
    assert not (plan_dir / "1" / "model.onnx").exists()
    text = (plan_dir / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in text and "max_batch_size: 4" in text and "KIND_GPU" in text
    assert _param(text, "tensorrt_version") == "10.9.0" and _param(text, "precision") == "fp16"


def test_rewriting_replaces_a_model_and_keeps_other_entries(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    write_repository(MODELS, tmp_path, config=RepoConfig(python_backend=True))
    write_repository(MODELS, tmp_path)
    assert (tmp_path / "other").is_dir()
    assert not (tmp_path / "detector" / "1" / "model.py").exists()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model directory not found"):
        write_repository(tmp_path / "nope", tmp_path / "repo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="holds no deocclude network"):
        write_repository(tmp_path / "empty", tmp_path / "repo")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("detector.onnx", "detector_copy.onnx"):
        (two / name).write_bytes((MODELS / "detector.onnx").read_bytes())
    with pytest.raises(ModelLoadError, match="two detector networks"):
        write_repository(two, tmp_path / "repo")
    engine = _fake_engine(tmp_path / "g.engine", MODELS / "generator.onnx")
    with pytest.raises(ValueError, match="do not mix"):
        write_repository(MODELS, tmp_path / "repo", engines=[engine], config=RepoConfig(python_backend=True))
    for bad in ({"max_batch": 0}, {"kind": "tpu"}, {"instances": 0}, {"queue_delay_us": -1}):
        with pytest.raises(ValueError):
            RepoConfig(**bad)  # type: ignore[arg-type]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--models", str(MODELS), "--out", str(tmp_path / "repo"), "--python-backend"]) == 0
    assert "wrote 3 models" in capsys.readouterr().out
    assert main(["--models", str(tmp_path / "missing"), "--out", str(tmp_path / "repo")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model directory not found" in err


def test_escaping_round_trips_quotes_and_backslashes() -> None:
    from engines.base import ModelInfo
    from engines.triton_repo import RepoModel

    info = ModelInfo(role="detector", crop_size=16, profile="t", training_data='a "quoted" \\ path')
    text = config_pbtxt(RepoModel("detector", "onnx", Path("x.onnx"), info, "0" * 64, 2), RepoConfig())
    assert json.loads(_param(text, "deocclude"))["training_data"] == 'a "quoted" \\ path'


@pytest.mark.triton
def test_python_backend_repository_loads_in_the_server(tmp_path: Path) -> None:
    from engines.triton_engine import server_models

    with serving(python_repository(tmp_path)) as server:
        assert server_models(server.url) == {"detector": "READY", "generator": "READY", "segmenter": "READY"}


@pytest.mark.triton
def test_onnx_and_plan_configs_parse_in_the_server(tmp_path: Path) -> None:
    """The bundled server has no onnxruntime / tensorrt backend: it must get as far as looking for them,
    which it does only after parsing and validating each config.pbtxt (a broken one fails earlier)."""
    from engines.triton_server import TritonServer

    install = install_or_skip()
    engine = _fake_engine(tmp_path / "gen.engine", MODELS / "generator.onnx")
    write_repository(MODELS, tmp_path / "repo", engines=[engine])

    def failures(name: str) -> str:
        with pytest.raises(ServerError):
            TritonServer(tmp_path / "repo", install=install, log_path=tmp_path / name).start()
        return (tmp_path / name).read_text()

    log = failures("good.log")
    for model, backend in (
        ("detector", "onnxruntime"),
        ("generator", "tensorrt"),
        ("segmenter", "onnxruntime"),
    ):
        assert (
            f"failed to load '{model}' version 1: Invalid argument: unable to find backend library for backend '{backend}'"
            in log
        )
    assert "text proto" not in log
    broken = tmp_path / "repo" / "detector" / "config.pbtxt"
    broken.write_text(broken.read_text().replace("max_batch_size", "max_batch_sizes"))
    assert f"failed to read text proto from {broken}" in failures("broken.log")
