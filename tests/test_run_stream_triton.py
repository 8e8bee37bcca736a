"""The command line with ``--backend triton`` end to end: the first second of the demo clip restored
through a real Triton server on loopback gives the frames that ``--backend onnxruntime`` gives, and a
missing server, a missing model or a gRPC URL is one ``error:`` line, no traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

import run_stream
from tests.engines.triton_fixtures import MODELS, install_or_skip, python_repository, serving
from tests.stream.test_batch import cut_demo

FRAMES = 24


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo clip's first ``FRAMES`` frames, video only (stream copy)."""
    return cut_demo(tmp_path_factory.mktemp("media") / "demo_24.mp4", FRAMES)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serving(python_repository(tmp_path_factory.mktemp("repo"))) as running:
        yield running


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _run(clip: Path, out: Path, *backend: str) -> dict[str, Any]:
    stats = out.with_suffix(".json")
    argv = ["--input", str(clip), "--output", str(out), "--models", str(MODELS), "--crf", "0", "-q"]
    code = run_stream.main([*argv, "--stats-json", str(stats), *backend])
    assert code == run_stream.EXIT_OK
    return dict(json.loads(stats.read_text()))


@pytest.mark.triton
def test_triton_backend_gives_the_onnxruntime_frames(short_demo: Path, server: Any, tmp_path: Path) -> None:
    local = _run(short_demo, tmp_path / "onnxruntime.mp4", "--backend", "onnxruntime")
    remote = _run(short_demo, tmp_path / "triton.mp4", "--backend", "triton", "--triton-url", server.url)
    assert remote["backend"] == "triton" and remote["device"] == "cpu"
    assert remote["frames_out"] == local["frames_out"] == FRAMES
    assert remote["masked_faces"] == local["masked_faces"] > 0  # faces were restored, through the server
    a, b = _frames(tmp_path / "onnxruntime.mp4"), _frames(tmp_path / "triton.mp4")
    assert a.shape == b.shape == (FRAMES, 360, 640, 3)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())


def _one_error_line(capfd: pytest.CaptureFixture[str]) -> str:
    err = capfd.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_missing_server_is_one_line(
    short_demo: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed (the scale extra)")
    from engines.triton_server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    argv = ["--input", str(short_demo), "--output", str(tmp_path / "o.mp4"), "--backend", "triton"]
    assert (
        run_stream.main([*argv, "--triton-url", url, "-q", "--log-level", "ERROR"]) == run_stream.EXIT_ERROR
    )
    line = _one_error_line(capfd)
    assert f"no answer from the Triton server at {url}" in line and "is it running?" in line
    assert not (tmp_path / "o.mp4").exists()


def test_grpc_and_stray_triton_options_are_one_line(
    short_demo: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    base = ["--input", str(short_demo), "-q", "--log-level", "ERROR"]
    assert (
        run_stream.main([*base, "--backend", "triton", "--triton-url", "grpc://h:8001"])
        == run_stream.EXIT_ERROR
    )
    assert "protobuf<5" in _one_error_line(capfd)
    assert (
        run_stream.main([*base, "--backend", "onnxruntime", "--triton-url", "http://h"])
        == run_stream.EXIT_USAGE
    )
    assert "apply to --backend triton" in _one_error_line(capfd)


@pytest.mark.triton
def test_missing_model_is_one_line(
    short_demo: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    install_or_skip()
    repo = python_repository(
        tmp_path / "repo", roles=("detector", "generator")
    )  # models/small has a segmenter
    with serving(repo) as partial:
        argv = ["--input", str(short_demo), "--output", str(tmp_path / "o.mp4"), "--models", str(MODELS)]
        argv += ["--backend", "triton", "--triton-url", partial.url, "-q", "--log-level", "ERROR"]
        assert run_stream.main(argv) == run_stream.EXIT_ERROR
    line = _one_error_line(capfd)
    assert "no model 'segmenter'" in line and "(it has: detector, generator)" in line
