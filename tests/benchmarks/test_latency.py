"""benchmarks.latency end to end on CPU: a tiny clip cut from the demo (YuNet needs a real face) and a
tiny ONNX detector/generator pair built with onnx.helper, through the real stream pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from benchmarks import latency, latency_inputs
from engines.base import METADATA_KEY, ModelInfo
from engines.metadata import read_onnx_info

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

S = 64
DEMO_CLIP = Path(__file__).resolve().parents[2] / "assets" / "demo.mp4"
STAT_KEYS = {"n", "mean", "p50", "p95", "p99", "max"}
REPORT_KEYS = {
    "command", "schema", "date", "git", "device", "load_average", "versions", "backend", "precision",
    "models", "models_note", "force_restore", "locate_ahead", "threads", "input", "resolution", "frames", "fps", "stage_ms",
    "restore_steps_ms", "latency_ms", "service_ms", "faces", "memory", "network_only_ms",
    "decode_alone_ms", "bound_by", "notes", "pipeline_summary_all_frames",
}  # fmt: skip


def _save(graph: Any, path: Path, role: str) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    helper.set_model_props(model, {METADATA_KEY: ModelInfo(role=role, crop_size=S, profile="test").to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _tensor(name: str, channels: int) -> Any:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", channels, S, S])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """detector: sigmoid(20 (g - r - b) - 4) (pure green is occluded: nothing in the demo is);
    generator: image + mask * (0.5 - image) (the hole turns grey)."""
    d = tmp_path_factory.mktemp("models")
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [-20.0, 20.0, -20.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [-4.0])
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["mask"]),
    ]
    _save(
        helper.make_graph(nodes, "det", [_tensor("image", 3)], [_tensor("mask", 1)], [w, b]),
        d / "detector.onnx",
        "detector",
    )
    grey = helper.make_tensor("grey", TensorProto.FLOAT, [1], [0.5])
    nodes = [
        helper.make_node("Sub", ["grey", "image"], ["diff"]),
        helper.make_node("Mul", ["mask", "diff"], ["delta"]),
        helper.make_node("Add", ["image", "delta"], ["restored"]),
    ]
    graph = helper.make_graph(
        nodes, "gen", [_tensor("image", 3), _tensor("mask", 1)], [_tensor("restored", 3)], [grey]
    )
    _save(graph, d / "generator.onnx", "generator")
    return d


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 frames of the demo at 160x90 (16:9, like the demo), H.264."""
    assert DEMO_CLIP.is_file(), f"the bundled demo clip is missing: {DEMO_CLIP}"
    path = tmp_path_factory.mktemp("clip") / "tiny.mp4"
    with av.open(str(DEMO_CLIP)) as src, av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = 160, 90, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == 20:
                break
            small = cv2.resize(frame.to_ndarray(format="bgr24"), (160, 90), interpolation=cv2.INTER_AREA)
            out.mux(vs.encode(av.VideoFrame.from_ndarray(small, format="bgr24")))
        out.mux(vs.encode(None))
    return path


def _run(tmp_path: Path, clip: Path, models: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    out = tmp_path / "latency.json"
    argv = ["--input", str(clip), "--models", str(models), "--json", str(out), "--device", "cpu"]
    rc = latency.main([*argv, "--backend", "onnxruntime", "--micro-runs", "3", *extra])
    return rc, (json.loads(out.read_text()) if out.is_file() else {})


def test_report_counts_and_plot_with_forced_restore(tmp_path: Path, clip: Path, models: Path) -> None:
    plot = tmp_path / "latency.png"
    args = (
        "--resize",
        "160x120",
        "--repeat-to",
        "30",
        "--frames",
        "30",
        "--warmup",
        "5",
        "--plot",
        str(plot),
    )
    rc, r = _run(tmp_path, clip, models, *args, "--force-restore")
    assert rc == 0
    assert set(r) == REPORT_KEYS
    assert r["input"]["width"] == 160 and r["input"]["frames"] == 20
    assert r["input"]["processed"]["repeats"] == 2 and r["input"]["processed"]["frames"] == 30
    assert r["resolution"] == "160x120"
    assert r["frames"] == {"written": 30, "warmup": 5, "measured": 25, "dropped": 0}
    assert set(r["stage_ms"]) == {"capture", "restore", "render"}
    assert set(r["restore_steps_ms"]) == {"detect", "align", "mesh", "mask", "prior", "restore", "composite"}
    for d in [*r["stage_ms"].values(), r["latency_ms"], r["service_ms"], r["decode_alone_ms"]]:
        assert set(d) == STAT_KEYS and d["n"] == 25
        assert 0 <= d["p50"] <= d["p95"] <= d["p99"] <= d["max"]
    # The demo's face is found and, forced, restored on every frame (the green detector alone never fires).
    assert r["faces"]["frames_with_faces"] == r["faces"]["frames_restored"] == 25
    assert r["faces"]["restored_per_frame_mean"] == 1.0
    assert r["restore_steps_ms"]["restore"]["n"] == 25
    assert r["fps"]["steady"] > 0 and r["fps"]["overall"] > 0
    assert set(r["network_only_ms"]) == {"detector", "generator"}
    assert r["network_only_ms"]["generator"]["runs"] == 3
    assert r["bound_by"]["verdict"] in {"networks", "face_detection", "glue", "decode", "contention", "sink"}
    assert r["bound_by"]["slowest_stage"] in r["stage_ms"]
    assert r["models"]["profile"] == "test" and r["models"]["crop_size"] == S
    assert "UNTRAINED" in r["models_note"] and "--force-restore" in r["models_note"]
    assert "ran on 25 of 25 measured frames" in r["models_note"]
    assert r["memory"]["peak_rss_mib"] > 0 and r["device"]["kind"] == "cpu" and r["backend"] == "onnxruntime"
    assert len(r["load_average"]["before"]) == 3 and r["versions"]["onnxruntime"]
    assert plot.stat().st_size > 0 and cv2.imread(str(plot)) is not None


def test_without_force_the_generator_does_not_run(tmp_path: Path, clip: Path, models: Path) -> None:
    rc, r = _run(tmp_path, clip, models, "--warmup", "2")
    assert rc == 0
    assert r["input"]["processed"] is None and r["resolution"] == "160x90"
    assert r["frames"]["measured"] == 18
    assert r["faces"]["frames_with_faces"] > 0 and r["faces"]["frames_restored"] == 0
    assert r["restore_steps_ms"]["restore"]["n"] == 0 and r["restore_steps_ms"]["restore"]["p50"] is None
    assert "ran on 0 of 18 measured frames" in r["models_note"]


def test_forced_detector_is_the_network_plus_a_hole(tmp_path: Path, models: Path) -> None:
    latency_inputs.write_forced_models(models, tmp_path / "forced")
    assert read_onnx_info(tmp_path / "forced" / "detector.onnx") == read_onnx_info(models / "detector.onnx")
    assert (tmp_path / "forced" / "generator.onnx").read_bytes() == (models / "generator.onnx").read_bytes()
    session = ort.InferenceSession(
        str(tmp_path / "forced" / "detector.onnx"), providers=["CPUExecutionProvider"]
    )
    image = np.zeros((2, 3, S, S), np.float32)
    image[1, 1] = 1.0  # pure green: the network itself says occluded everywhere
    (mask,) = session.run(None, {"image": image})
    hole = latency_inputs.forced_hole(S)
    assert np.array_equal(mask[0, 0] > 0.5, hole > 0.5)
    assert (mask[1] > 0.99).all()
    # Below the eyes, over the nose and mouth, to the chin; not the eyes or the forehead.
    assert hole[S - 1, S // 2] == 1 and hole[: S // 2].sum() == 0 and 0.2 < hole.mean() < 0.5


def test_letterbox_keeps_the_aspect_and_centres() -> None:
    img = np.full((360, 640, 3), 200, np.uint8)
    out = latency_inputs.letterbox_bgr_u8(img, (640, 480))
    assert out.shape == (480, 640, 3)
    assert (out[:60] == 0).all() and (out[420:] == 0).all() and (out[60:420] == 200).all()
    tall = latency_inputs.letterbox_bgr_u8(np.full((200, 100, 3), 9, np.uint8), (160, 120))
    assert tall.shape == (120, 160, 3) and (tall[:, :50] == 0).all() and (tall[:, 50:110] == 9).all()


def test_steady_fps_leaves_out_the_warmup() -> None:
    times = [1.0, 1.1, 1.2, 1.3, 1.4]  # 1 s of start-up, then 10 fps
    assert latency.steady_fps(times, 1) == pytest.approx(4 / 0.4)
    assert latency.steady_fps(times, 0) == pytest.approx(5 / 1.4)
    assert latency.steady_fps(times, 4) is None


def test_user_mistakes_are_one_line_errors(
    tmp_path: Path, models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert latency.main(["--input", str(tmp_path / "none.mp4"), "--json", str(tmp_path / "x.json")]) == 2
    assert "input clip not found" in caplog.text
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        latency_inputs.parse_size("640*480")
    with pytest.raises(ValueError, match="warmup"):
        latency.LatencyConfig(input=tmp_path, json_path=tmp_path / "x.json", frames=5, warmup=10)
