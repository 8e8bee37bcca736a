"""The Triton backend: URL and option checks, a missing server, and, against a real tritonserver on
loopback (Python-backend models running our .onnx with onnxruntime), outputs equal to onnxruntime's,
shared memory, chunking above the server's batch, retries, and the connect-time checks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.errors import (
    BackendUnavailableError,
    EngineError,
    EngineMismatchError,
    ModelLoadError,
    ServerError,
    ShapeError,
)
from engines.triton_engine import TritonOptions, parse_url
from tests.engines.triton_fixtures import MODELS, python_repository, serving

ROLES = ("detector", "generator", "segmenter")


def test_parse_url() -> None:
    assert parse_url("http://example.org:8010") == ("example.org:8010", False)
    assert parse_url("https://example.org") == ("example.org:8000", True)
    assert parse_url("127.0.0.1") == ("127.0.0.1:8000", False)
    assert parse_url("http://[::1]:9000/") == ("[::1]:9000", False)
    for bad in ("ftp://host", "http://", "http://host:notaport", "http://host:8000/v2"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_grpc_url_is_refused_with_the_reason() -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        TritonOptions(url="grpc://host:8001")
    message = str(caught.value)
    assert "protobuf>=6.30" in message and "protobuf<5" in message and "http://HOST:8000" in message
    assert "\n" not in message


def test_options_are_validated() -> None:
    for bad in ({"timeout_s": 0}, {"retries": -1}, {"backoff_s": -0.1}, {"url": "ftp://x"}):
        with pytest.raises(ValueError):
            TritonOptions(**bad)  # type: ignore[arg-type]


def test_no_server_is_one_line_after_the_retries() -> None:
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (the scale extra)")
    from engines.triton_engine import TritonEngine
    from engines.triton_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(ServerError) as caught:
        TritonEngine(MODELS / "detector.onnx", TritonOptions(url=url, retries=2, backoff_s=0.05))
    message = str(caught.value)
    assert url in message and "3 times" in message and "Connection refused" in message and "\n" not in message
    assert isinstance(caught.value, ConnectionError)  # a builtin the caller may already catch
    assert time.monotonic() - start < 5


def test_mediapipe_and_tritonclient_import_in_one_process() -> None:
    """The lock's protobuf settlement: mediapipe needs protobuf<5, tritonclient[http] none (gRPC would need >=6.30)."""
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (the scale extra)")
    pytest.importorskip("mediapipe", reason="mediapipe is not installed (the mediapipe extra)")
    code = (
        "import mediapipe, tritonclient.http, tritonclient.utils.shared_memory, google.protobuf as pb; "
        "from mediapipe.python.solutions import face_mesh; print(pb.__version__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip().split(".")[0]) < 5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serving(python_repository(tmp_path_factory.mktemp("triton_repo"))) as running:
        yield running


def _feeds(engine: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {s.name: rng.random((batch, *s.shape[1:]), dtype=np.float32) for s in engine.inputs}


@pytest.mark.triton
@pytest.mark.parametrize("shared_memory", [False, True], ids=["http", "shm"])
def test_outputs_equal_onnxruntime(server: Any, shared_memory: bool) -> None:
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from engines.triton_engine import TritonEngine

    for role in ROLES:
        reference = OnnxRuntimeEngine(MODELS / f"{role}.onnx", intra_threads=1)
        with TritonEngine(
            MODELS / f"{role}.onnx", TritonOptions(url=server.url, shared_memory=shared_memory)
        ) as engine:
            assert (engine.backend, engine.device, engine.info) == ("triton", "cpu", reference.info)
            assert (engine.inputs, engine.outputs) == (reference.inputs, reference.outputs)
            for batch in (1, 3):
                feeds = _feeds(engine, batch, seed=batch)
                got, want = engine.run(feeds), reference.run(feeds)
                assert sorted(got) == sorted(want)
                for name in want:
                    assert got[name].shape == want[name].shape and got[name].dtype == np.float32
                    np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=f"{role}.{name}")


@pytest.mark.triton
def test_runs_from_another_thread_and_closes(server: Any) -> None:
    """The pipeline loads engines in one thread and runs them in a stage thread."""
    from tritonclient.utils import shared_memory as shm

    from engines.triton_engine import TritonEngine

    engine = TritonEngine(MODELS / "detector.onnx", TritonOptions(url=server.url, shared_memory=True))
    feeds = _feeds(engine, 2)
    here = engine.run(feeds)["mask"]
    there: dict[str, np.ndarray] = {}
    worker = threading.Thread(target=lambda: there.update(engine.run(feeds)))
    worker.start()
    worker.join(30)
    np.testing.assert_array_equal(there["mask"], here)
    engine.warmup(1)
    engine.close()
    engine.close()
    assert not [k for k in shm.mapped_shared_memory_regions() if "detector" in k]
    with pytest.raises(EngineError, match="closed"):
        engine.run(feeds)


@pytest.mark.triton
def test_transient_failures_are_retried(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from engines.triton_engine import TritonEngine

    engine = TritonEngine(MODELS / "detector.onnx", TritonOptions(url=server.url, retries=2, backoff_s=0.01))
    real = engine._client()
    calls = {"n": 0}

    class Flaky:
        def infer(self, *args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] <= 2:
                raise ConnectionResetError(104, "Connection reset by peer")
            return real.infer(*args, **kwargs)

    monkeypatch.setattr(engine, "_client", lambda: Flaky())
    assert engine.run(_feeds(engine, 1))["mask"].shape == (1, 1, 128, 128)
    assert calls["n"] == 3
    calls["n"] = -10  # more failures than retries: one ServerError line
    with pytest.raises(ServerError, match="an inference failed 3 times"):
        engine.run(_feeds(engine, 1))
    engine.close()


@pytest.mark.triton
def test_connect_checks_tensors_and_provenance(server: Any, detector_model: Any, tmp_path: Path) -> None:
    from engines.metadata import read_onnx_info, write_onnx_info
    from engines.triton_engine import TritonEngine

    options = TritonOptions(url=server.url)
    with pytest.raises(EngineMismatchError, match="16 px detector") as caught:
        TritonEngine(detector_model.onnx, options)  # another crop size: other tensors
    assert "\n" not in str(caught.value)
    stale = tmp_path / "detector.onnx"
    stale.write_bytes((MODELS / "detector.onnx").read_bytes())
    info = read_onnx_info(stale)
    write_onnx_info(stale, dataclasses.replace(info, iterations=info.iterations + 1))
    with pytest.raises(EngineMismatchError, match="iterations: server 2300, local 2301; onnx sha256"):
        TritonEngine(stale, options)


@pytest.mark.triton
def test_small_server_batches_and_missing_models(tmp_path: Path) -> None:
    """A server with max_batch_size 2 and only the detector: larger batches go as several requests, a
    batch above the engine's own max is a ShapeError, and the generator is a one-line ModelLoadError."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from engines.select import load_engine

    with serving(python_repository(tmp_path, max_batch=2, roles=("detector",))) as small:
        options = TritonOptions(url=small.url)
        engine = load_engine(MODELS / "detector.onnx", backend="triton", max_batch=5, triton=options)
        assert (engine.backend, engine.device) == ("triton", "cpu")
        feeds = _feeds(engine, 5)
        want = OnnxRuntimeEngine(MODELS / "detector.onnx", intra_threads=1).run(feeds)["mask"]
        np.testing.assert_allclose(engine.run(feeds)["mask"], want, atol=1e-5)
        with pytest.raises(ShapeError, match="outside the engine's profile 1..5"):
            engine.run(_feeds(engine, 6))
        engine.close()
        with pytest.raises(ModelLoadError) as caught:
            load_engine(MODELS / "generator.onnx", backend="triton", triton=options)
        message = str(caught.value)
        assert (
            "no model 'generator'" in message
            and "(it has: detector)" in message
            and "engines.triton_repo" in message
        )
        assert "\n" not in message


def test_select_refuses_cuda_and_stray_options() -> None:
    from engines.select import load_engine

    with pytest.raises(ValueError, match="CPU arrays"):
        load_engine(MODELS / "detector.onnx", backend="triton", device="cuda")
    with pytest.raises(ValueError, match="apply to backend 'triton'"):
        load_engine(MODELS / "detector.onnx", backend="onnxruntime", triton=TritonOptions())
