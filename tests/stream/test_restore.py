"""End to end through FrameProcessor with real (tiny) ONNX networks run by onnxruntime, on both op sets.

The networks are built here with onnx.helper: a "detector" that calls saturated green pixels occluded
(a 1x1 convolution + sigmoid) and a "generator" that fills the hole with a skin tone. Face detection is
injected (ScriptedDetector, a test double returning known FaceDetection lists) because no real face
image ships with the repository; one test runs real YuNet on assets/demo.mp4 once the lead adds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engines.base import METADATA_KEY, Engine, ModelInfo, TensorSpec, check_feed
from engines.crop import Alignment, estimate_alignment, template
from engines.face_detect import FaceDetection
from stream.faces.front_end import FaceFrontEnd, crop_within_frame
from stream.restore.config import TIMING_KEYS, ProcessorConfig
from stream.restore.gate import GateConfig
from stream.restore.numpy_ops import NumpyOps
from stream.restore.ops import EngineOutputError, FrameOps
from stream.restore.processor import FrameProcessor

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

S = 64
H, W = 240, 320
FILL_RGB = (0.8, 0.6, 0.5)
DEMO_CLIP = Path(__file__).resolve().parents[2] / "assets" / "demo.mp4"


# Restores from the first occluded frame: these tests follow the per-frame flow frame by frame; the
# hysteresis over frames is tested in test_gate.py and in test_bare_faces_are_passed_through below.
IMMEDIATE_GATE = GateConfig(frames_on=1, frames_off=1)


def _save(graph: Any, path: Path, info: ModelInfo) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # readable by every onnxruntime we support
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_detector_onnx(path: Path, crop_size: int) -> Path:
    """mask = sigmoid(20 * (g - r - b) - 4): saturated green is occluded, grey/skin is not."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, crop_size, crop_size])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [-20.0, 20.0, -20.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [-4.0])
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["mask"]),
    ]
    graph = helper.make_graph(nodes, "green_detector", [image], [mask], initializer=[w, b])
    return _save(graph, path, ModelInfo(role="detector", crop_size=crop_size, profile="test"))


def build_generator_onnx(path: Path, crop_size: int) -> Path:
    """restored = image + mask * (fill - image): the hole becomes a flat skin tone."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, crop_size, crop_size])
    restored = helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [1, 3, 1, 1], list(FILL_RGB))
    nodes = [
        helper.make_node("Sub", ["fill", "image"], ["diff"]),
        helper.make_node("Mul", ["mask", "diff"], ["delta"]),
        helper.make_node("Add", ["image", "delta"], ["restored"]),
    ]
    graph = helper.make_graph(nodes, "fill_generator", [image, mask], [restored], initializer=[fill])
    return _save(graph, path, ModelInfo(role="generator", crop_size=crop_size, profile="test"))


def build_identity_generator_onnx(path: Path, crop_size: int) -> Path:
    """restored = image (the mask input is accepted and ignored): a round-trip probe for the geometry."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, crop_size, crop_size])
    restored = helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["N", 3, crop_size, crop_size])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["restored"])],
        "identity_generator",
        [image, mask],
        [restored],
    )
    return _save(graph, path, ModelInfo(role="generator", crop_size=crop_size, profile="test"))


class OrtTestEngine:
    """The Engine protocol over a bare onnxruntime session (engines.select is another module's job).

    Records the batch size of every call so tests can check batching and skipped calls.
    """

    backend = "onnxruntime"
    device = "cpu"

    def __init__(self, path: Path) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.info = ModelInfo.from_json(self._session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        dims = lambda shape: tuple(d if isinstance(d, int) else -1 for d in shape)  # noqa: E731
        self.inputs = tuple(TensorSpec(i.name, dims(i.shape)) for i in self._session.get_inputs())
        self.outputs = tuple(TensorSpec(o.name, dims(o.shape)) for o in self._session.get_outputs())
        self.batches: list[int] = []

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        for spec in self.inputs:
            check_feed(spec, feeds[spec.name])
        self.batches.append(int(feeds[self.inputs[0].name].shape[0]))
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        return dict(zip([o.name for o in self.outputs], self._session.run(None, arrays), strict=True))

    def warmup(self, batch: int = 1) -> None:
        s = self.info.crop_size
        self.run({spec.name: np.zeros((batch, spec.shape[1], s, s), np.float32) for spec in self.inputs})
        self.batches.clear()

    def close(self) -> None:
        self._session = None


class ScriptedDetector:
    """Test double for face detection: frame i gets ``faces_per_frame[i]``; the last entry repeats."""

    def __init__(self, faces_per_frame: Sequence[list[FaceDetection]]) -> None:
        if not faces_per_frame:
            raise ValueError("script needs at least one frame")
        self._script = faces_per_frame
        self.calls = 0

    @classmethod
    def same(cls, *faces: FaceDetection) -> ScriptedDetector:
        return cls([list(faces)])

    def detect(self, bgr_u8: np.ndarray) -> list[FaceDetection]:
        self.calls += 1
        return list(self._script[min(self.calls - 1, len(self._script) - 1)])


def face(cx: float, cy: float, size: float) -> FaceDetection:
    lms = (template(112) / 112.0 - 0.5) * size + [cx, cy]
    box = np.array([cx - size / 2, cy - size / 2, size, size], dtype=np.float32)
    return FaceDetection(box=box, landmarks=lms.astype(np.float32), score=0.95)


def estimate_alignment_for(det: FaceDetection) -> Alignment:
    return estimate_alignment(det.landmarks, S)


FACE_A = (90.0, 110.0, 100.0)  # cx, cy, size: wears a green "face mask"
FACE_B = (235.0, 120.0, 80.0)  # not occluded
GREEN_RECT = (60, 130, 121, 156)  # x0, y0, x1, y1 over face A's mouth and chin


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> tuple[OrtTestEngine, OrtTestEngine]:
    d = tmp_path_factory.mktemp("onnx")
    det = OrtTestEngine(build_detector_onnx(d / "det.onnx", S))
    gen = OrtTestEngine(build_generator_onnx(d / "gen.onnx", S))
    return det, gen


@pytest.fixture()
def fresh(engines) -> tuple[OrtTestEngine, OrtTestEngine]:
    det, gen = engines
    det.batches.clear()
    gen.batches.clear()
    return det, gen


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    grey = rng.integers(60, 200, (H, W, 1))
    bgr = np.clip(grey + rng.integers(-10, 11, (H, W, 3)), 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = GREEN_RECT
    bgr[y0:y1, x0:x1] = (40, 200, 40)
    return bgr


@pytest.fixture(params=["numpy", "torch"])
def make_ops(request) -> Callable[[ProcessorConfig], FrameOps]:
    """Every processor test runs on both op sets (the torch one on CPU tensors): one flow, two op sets."""
    if request.param == "numpy":
        return NumpyOps
    pytest.importorskip("torch")
    from stream.restore.torch_frame_ops import TorchOps

    return lambda config: TorchOps(config, "cpu")


def processor(detector, engines, make_ops, **config) -> FrameProcessor:
    det, gen = engines
    cfg = ProcessorConfig(**{"gate": IMMEDIATE_GATE, **config})
    return FrameProcessor.build(detector, det, gen, make_ops(cfg), cfg)


def test_test_engines_satisfy_the_protocol(engines) -> None:
    assert all(isinstance(e, Engine) for e in engines)


def test_occluded_face_is_restored_and_everything_else_is_untouched(frame, fresh, make_ops) -> None:
    proc = processor(ScriptedDetector.same(face(*FACE_A), face(*FACE_B)), fresh, make_ops)
    before = frame.copy()
    for _ in range(3):
        out, report = proc.process(frame)
    assert np.array_equal(frame, before), "the input frame must never be modified"
    assert (report.faces, report.masked_faces, report.skipped_faces) == (2, 1, 0)
    assert set(TIMING_KEYS) <= set(report.timings_ms) == set(proc.ops.timing_keys) and all(
        v >= 0 for v in report.timings_ms.values()
    )
    det, gen = fresh
    assert det.batches == [2, 2, 2], "both faces go through the detector in one call per frame"
    assert gen.batches == [1, 1, 1], "only the occluded face goes through the generator"
    x0, y0, x1, y1 = GREEN_RECT
    centre = out[y0 + 5 : y1 - 5, x0 + 5 : x1 - 5].reshape(-1, 3).astype(int)
    fill_bgr = np.array(FILL_RGB[::-1]) * 255
    assert np.abs(centre - fill_bgr).max() <= 3, "the green occluder is replaced by the generator's output"
    # Nothing changed beyond the occluder grown by the mask's dilation + feather (in frame pixels).
    cfg = proc.config.smoother
    grow = int(np.ceil((cfg.dilate_px + cfg.feather_px + cfg.spatial_px + 2) * FACE_A[2] / S)) + 2
    allowed = np.zeros((H, W), bool)
    allowed[max(0, y0 - grow) : y1 + grow, max(0, x0 - grow) : x1 + grow] = True
    changed = np.any(out != frame, axis=2)
    assert changed.any() and not np.any(changed & ~allowed)


def test_identity_restoration_reproduces_the_frame(engines, make_ops, tmp_path) -> None:
    """Geometry and colour order end to end: crop -> networks -> paste back with an identity generator
    must give the input back (a smooth, all-"occluded" frame so resampling loses nothing visible)."""
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    smooth = np.stack(
        [40 + 20 * np.sin(xx / 23), 200 + 30 * np.cos(yy / 31), 40 + 25 * np.sin((xx + yy) / 41)], axis=2
    ).astype(np.uint8)  # BGR: strongly green everywhere, channels all different
    det, _ = engines
    identity = OrtTestEngine(build_identity_generator_onnx(tmp_path / "id.onnx", S))
    cfg = ProcessorConfig(min_face_px=0, gate=IMMEDIATE_GATE)
    proc = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A), face(W - 20, 60, 90)), det, identity, make_ops(cfg), cfg
    )
    out, report = proc.process(smooth)
    assert report.masked_faces == 2
    assert out is not smooth and identity.batches == [2], "both faces were restored and pasted"
    diff = np.abs(out.astype(int) - smooth.astype(int))
    assert diff.max() <= 3, f"round trip error {diff.max()} levels"


def test_no_faces_returns_the_frame_itself(frame, fresh, make_ops, caplog) -> None:
    proc = processor(ScriptedDetector.same(), fresh, make_ops)
    with caplog.at_level(logging.DEBUG, logger="stream.faces.front_end"):
        for _ in range(3):
            out, report = proc.process(frame)
            assert out is frame
            assert (report.faces, report.masked_faces, report.skipped_faces) == (0, 0, 0)
            assert report.track_ids == ()
    assert fresh[0].batches == [] and fresh[1].batches == [], "no network runs without faces"
    assert proc.front_end.frames_without_faces == 3
    assert len([r for r in caplog.records if "no face" in r.getMessage()]) == 1, "logged once per run"


def test_unoccluded_faces_skip_the_generator(frame, fresh, make_ops) -> None:
    proc = processor(ScriptedDetector.same(face(*FACE_B)), fresh, make_ops)
    out, report = proc.process(frame)
    assert out is frame and (report.faces, report.masked_faces) == (1, 0)
    assert fresh[0].batches == [1] and fresh[1].batches == []
    assert report.timings_ms["restore"] == 0.0 and report.timings_ms["composite"] == 0.0


def test_ten_faces_with_max_four_processes_the_four_largest(frame, fresh, make_ops) -> None:
    faces = [face(20 + 30 * (i % 10), 40 + 60 * (i // 5), 20 + 2 * i) for i in range(10)]
    proc = processor(ScriptedDetector.same(*faces), fresh, make_ops, max_faces=4, min_face_px=0)
    _, report = proc.process(frame)
    assert (report.faces, report.skipped_faces) == (4, 6)
    assert fresh[0].batches == [4]
    located = FaceFrontEnd(ScriptedDetector.same(*faces), S, max_faces=4).locate(frame)
    assert sorted(located.boxes[:, 2].tolist()) == [32.0, 34.0, 36.0, 38.0]


def test_small_faces_are_skipped_and_counted(frame, fresh, make_ops) -> None:
    proc = processor(ScriptedDetector.same(face(*FACE_A), face(250, 40, 30)), fresh, make_ops, min_face_px=40)
    _, report = proc.process(frame)
    assert (report.faces, report.skipped_faces) == (1, 1)


def test_short_detection_dropout_keeps_restoring_the_face(frame, fresh, make_ops) -> None:
    script = [[face(*FACE_A)]] * 5 + [[]] * 3 + [[face(*FACE_A)]] * 2
    proc = processor(ScriptedDetector(script), fresh, make_ops)
    reports = [proc.process(frame)[1] for _ in range(len(script))]
    assert all(r.faces == 1 and r.masked_faces == 1 for r in reports), [r.faces for r in reports]
    assert len({r.track_ids for r in reports}) == 1, "the face keeps its id through the dropout"


def test_detect_every_runs_the_detector_on_every_kth_frame(frame, fresh, make_ops) -> None:
    detector = ScriptedDetector.same(face(*FACE_A))
    proc = processor(detector, fresh, make_ops, detect_every=3)
    reports = [proc.process(frame)[1] for _ in range(7)]
    assert detector.calls == 3
    assert [r.detected for r in reports] == [True, False, False, True, False, False, True]
    assert all(r.faces == 1 for r in reports)


def test_crops_are_rgb01_nchw(fresh, make_ops) -> None:
    blue_bgr = np.zeros((H, W, 3), np.uint8)
    blue_bgr[..., 0] = 255
    proc = processor(ScriptedDetector.same(face(160, 120, 100)), fresh, make_ops)
    staged = proc.locate(blue_bgr)
    with proc.ops.session(staged):
        crops, inside = proc.ops.warp_crops(staged)
    crops = np.asarray(crops)
    assert crops.shape == (1, 3, S, S) and crops.dtype == np.float32 and inside is None
    assert np.all(crops[0, 2] == 1.0) and np.all(crops[0, :2] == 0.0)


def test_inside_masks_mark_what_came_from_the_frame(frame, fresh, make_ops) -> None:
    assert crop_within_frame((H, W), estimate_alignment_for(face(160, 120, 100)))
    edge = face(W - 10, 120, 100)
    assert not crop_within_frame((H, W), estimate_alignment_for(edge))
    proc = processor(ScriptedDetector.same(face(160, 120, 100), edge), fresh, make_ops, min_face_px=0)
    staged = proc.locate(frame)
    assert staged.within == (True, False)
    with proc.ops.session(staged):
        _, inside = proc.ops.warp_crops(staged)
    valid = np.asarray(inside)[1]
    assert valid.dtype == np.float32 and set(np.unique(valid)) == {0.0, 1.0}
    # Every valid crop pixel, with its neighbours, lies inside the frame; and most of the inside is kept.
    xy = staged.alignments[1].to_image(np.argwhere(valid > 0)[:, ::-1])
    assert xy[:, 0].max() <= W - 1 - 0.5 and xy[:, 0].min() >= 0
    all_inside = staged.alignments[1].to_image(np.argwhere(np.ones((S, S)))[:, ::-1])[:, 0] <= W - 1
    assert valid.sum() > 0.85 * all_inside.sum()


def test_reset_starts_a_new_video(frame, fresh, make_ops) -> None:
    proc = processor(ScriptedDetector.same(face(*FACE_A)), fresh, make_ops)
    _, first = proc.process(frame)
    proc.reset()
    _, again = proc.process(frame)
    assert again.track_ids[0] > first.track_ids[0], "ids stay unique across videos"
    assert proc.ops.smoother.track_ids == {again.track_ids[0]}


def test_mismatched_engines_or_config_are_rejected(tmp_path, fresh, make_ops) -> None:
    det, gen = fresh
    other = OrtTestEngine(build_detector_onnx(tmp_path / "det32.onnx", 32))
    front = FaceFrontEnd(ScriptedDetector.same(), S, 4, 1, min_face_px=40)
    ops = make_ops(ProcessorConfig())
    with pytest.raises(ValueError, match="crop_size must equal the front end's 64, got 32"):
        FrameProcessor(front, other, gen, ops, ProcessorConfig())
    with pytest.raises(ValueError, match="role 'generator'"):
        FrameProcessor(front, det, det, ops, ProcessorConfig())
    with pytest.raises(ValueError, match="must match the config"):
        FrameProcessor(front, det, gen, ops, ProcessorConfig(max_faces=2))


def test_engine_output_of_the_wrong_shape_is_a_clear_error(frame, fresh, make_ops) -> None:
    det, gen = fresh

    class HalfMask:
        """Test double: a detector engine that breaks the tensor contract."""

        backend, device, info, inputs, outputs = det.backend, det.device, det.info, det.inputs, det.outputs

        def run(self, feeds):
            return {"mask": det.run(feeds)["mask"][..., : S // 2]}

        def warmup(self, batch: int = 1) -> None: ...

        def close(self) -> None: ...

    proc = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A)), HalfMask(), gen, make_ops(ProcessorConfig())
    )
    with pytest.raises(EngineOutputError, match=r"'mask' must be \(1, 1, 64, 64\)"):
        proc.process(frame)


def test_real_yunet_on_demo_clip(engines, make_ops) -> None:
    av = pytest.importorskip("av")
    from engines.face_detect import YuNetDetector

    det, gen = engines
    cfg = ProcessorConfig(min_face_px=0, gate=IMMEDIATE_GATE)
    proc = FrameProcessor.build(YuNetDetector(), det, gen, make_ops(cfg), cfg)
    reports = []
    with av.open(str(DEMO_CLIP)) as container:
        for i, vf in enumerate(container.decode(video=0)):
            if i >= 15:
                break
            bgr = vf.to_ndarray(format="bgr24")
            out, report = proc.process(bgr)
            assert out.shape == bgr.shape and out.dtype == np.uint8
            reports.append(report)
    with_face = [r for r in reports if r.faces > 0]
    assert len(with_face) >= 0.8 * len(reports), "YuNet must find the face in most demo frames"
    first_ids = [r.track_ids[0] for r in with_face]
    assert max(first_ids.count(i) for i in set(first_ids)) >= 0.8 * len(with_face), "one stable track id"


# ------------------------------------------------------------------- occluded-or-not, segmenter, prior
class EngineDouble:
    """Test double of the Engine protocol around a function of the feeds; records its calls."""

    backend, device = "onnxruntime", "cpu"

    def __init__(
        self, role: str, inputs: Sequence[str], outputs: Sequence[str], fn: Callable[..., Any]
    ) -> None:
        self.info = ModelInfo(role=role, crop_size=S, profile="test")
        self.inputs = tuple(TensorSpec(n, (-1, 1 if n == "mask" else 3, S, S)) for n in inputs)
        self.outputs = tuple(TensorSpec(n, (-1, 3 if n == "restored" else 1, S, S)) for n in outputs)
        self.fn, self.calls = fn, []

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(
            {k: v.numpy().copy() if hasattr(v, "numpy") else np.array(v) for k, v in feeds.items()}
        )
        return self.fn(feeds)

    def warmup(self, batch: int = 1) -> None: ...

    def close(self) -> None: ...


def test_an_occluder_is_restored_only_once_it_has_persisted_for_frames_on(frame, fresh, make_ops) -> None:
    proc = processor(
        ScriptedDetector.same(face(*FACE_A)), fresh, make_ops, gate=GateConfig(frames_on=3, frames_off=2)
    )
    outs = [proc.process(frame) for _ in range(4)]
    assert [r.masked_faces for _, r in outs] == [0, 0, 1, 1]
    assert outs[0][0] is frame and outs[1][0] is frame, "a face not yet judged occluded is the input itself"


def test_a_flickering_false_alarm_on_a_bare_face_never_touches_it(frame, fresh, make_ops) -> None:
    det, gen = fresh
    frames = iter(range(1000))

    def every_other(feeds: Mapping[str, Any]) -> dict[str, Any]:
        mask = np.asarray(det.run(feeds)["mask"])
        return {"mask": mask if next(frames) % 2 == 0 else np.zeros_like(mask)}

    flicker = EngineDouble("detector", ["image"], ["mask"], every_other)
    cfg = ProcessorConfig(gate=GateConfig(frames_on=2, frames_off=2))
    proc = FrameProcessor.build(ScriptedDetector.same(face(*FACE_A)), flicker, gen, make_ops(cfg), cfg)
    for _ in range(10):
        out, report = proc.process(frame)
        assert out is frame and report.masked_faces == 0


def test_the_segmenter_mask_is_the_region_minus_the_visible_face(frame, fresh, make_ops) -> None:
    """Paper 003, Eq. 1, with a segmenter that sees the detector's occluder as 'not face'."""
    det, gen = fresh

    def segment(feeds: Mapping[str, Any]) -> dict[str, Any]:
        occluded = np.asarray(det.run(feeds)["mask"])
        return {"face": 1.0 - occluded, "region": np.ones_like(occluded)}

    seg = EngineDouble("segmenter", ["image"], ["face", "region"], segment)
    cfg = ProcessorConfig(gate=IMMEDIATE_GATE, occlusion="segmenter")
    unused = EngineDouble("detector", ["image"], ["mask"], lambda feeds: pytest.fail("detector ran"))
    proc = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A)), unused, gen, make_ops(cfg), cfg, segmenter_engine=seg
    )
    assert proc.occlusion == "segmenter"
    reference = processor(ScriptedDetector.same(face(*FACE_A)), fresh, make_ops)
    out, report = proc.process(frame)
    want, _ = reference.process(frame)
    assert report.masked_faces == 1 and np.array_equal(out, want)
    with pytest.raises(ValueError, match="needs segmenter.onnx"):
        FrameProcessor.build(
            ScriptedDetector.same(), det, gen, make_ops(cfg), ProcessorConfig(occlusion="segmenter")
        )


class FakePrior:
    """Stands in for stream.restore.prior_step.PriorStep: a flat guide, and the calls it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], tuple[int, ...]]] = []
        self.wanted: list[frozenset[int]] = []  # landmarks_ahead's hint, per located frame
        self.given: list[set[int]] = []  # the tracks guides() got landmarks ahead for

    def landmarks_ahead(self, frame: Any, faces: Any, wanted: frozenset[int]) -> dict[int, Any]:
        self.wanted.append(wanted)
        return {tid: np.zeros((468, 2), np.float32) for tid in faces.track_ids if tid in wanted}

    def guides(self, track_ids: Sequence[int], crops: Any, holes: Any, landmarks: Any = None) -> Any:
        self.calls.append((list(track_ids), tuple(crops.shape)))
        self.given.append(set(landmarks or {}))
        out = np.zeros(tuple(crops.shape), np.float32)
        out[:, 2] = 1.0  # pure blue in RGB
        return out if isinstance(crops, np.ndarray) else __import__("torch").from_numpy(out)

    def retain(self, alive: Any) -> None: ...

    def reset(self) -> None: ...


def test_a_generator_that_takes_the_prior_gets_the_guides_and_prior_alone_skips_it(
    frame, fresh, make_ops
) -> None:
    det, _ = fresh
    gen = EngineDouble(
        "generator", ["image", "mask", "prior"], ["restored"], lambda f: {"restored": f["prior"]}
    )
    cfg = ProcessorConfig(gate=IMMEDIATE_GATE)
    prior = FakePrior()
    proc = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A)), det, gen, make_ops(cfg), cfg, prior=prior
    )
    out, report = proc.process(frame)
    assert report.masked_faces == 1 and [shape for _, shape in prior.calls] == [(1, 3, S, S)]
    assert prior.calls[0][0] == list(report.track_ids)
    assert np.allclose(gen.calls[0]["prior"][:, 2], 1.0)
    x0, y0, x1, y1 = GREEN_RECT
    centre = out[y0 + 5 : y1 - 5, x0 + 5 : x1 - 5].reshape(-1, 3).astype(int)
    assert np.abs(centre - [255, 0, 0]).max() <= 3, "the hole shows the guide (BGR blue)"
    # The face mesh runs ahead (in locate) only for the faces restored on the frame before.
    proc.process(frame)
    tid = report.track_ids[0]
    assert prior.wanted == [frozenset(), frozenset({tid})] and prior.given == [set(), {tid}]
    with pytest.raises(ValueError, match="takes the face prior"):
        FrameProcessor.build(ScriptedDetector.same(), det, gen, make_ops(cfg), cfg)
    only_prior = ProcessorConfig(gate=IMMEDIATE_GATE, restorer="prior")
    plain = fresh[1]
    plain.batches.clear()
    proc = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A)), det, plain, make_ops(only_prior), only_prior, prior=FakePrior()
    )
    out2, report2 = proc.process(frame)
    assert report2.masked_faces == 1 and plain.batches == [] and np.array_equal(out2, out)


def test_reference_photo_errors_are_one_line(tmp_path: Path) -> None:
    from stream.faces.reference import reference_crop

    with pytest.raises(FileNotFoundError, match="reference photo not found"):
        reference_crop(tmp_path / "none.jpg", S)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        reference_crop(tmp_path / "bad.jpg", S)
    import cv2

    cv2.imwrite(str(tmp_path / "blank.png"), np.full((200, 200, 3), 127, np.uint8))
    with pytest.raises(ValueError, match="no face found"):
        reference_crop(tmp_path / "blank.png", S)


def test_reference_photo_of_a_real_face_is_a_canonical_crop(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    import cv2

    from stream.faces.reference import reference_crop

    with av.open(str(DEMO_CLIP)) as container:
        bgr = next(container.decode(video=0)).to_ndarray(format="bgr24")
    cv2.imwrite(str(tmp_path / "me.png"), bgr)
    crop = reference_crop(tmp_path / "me.png", 128)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8 and crop.std() > 10


def test_gated_union_lets_only_the_segmenter_decide_and_restores_the_union(frame, fresh, make_ops) -> None:
    """auto with a segmenter: a detector firing on a face the segmenter sees bare changes nothing; on a
    face the segmenter sees covered, the detector's extra pixels are restored too."""
    det, gen = fresh
    bare = EngineDouble(
        "segmenter", ["image"], ["face", "region"], lambda f: {"face": np.ones((len(f["image"]), 1, S, S), np.float32),
                                                                "region": np.ones((len(f["image"]), 1, S, S), np.float32)}
    )  # fmt: skip
    cfg = ProcessorConfig(gate=IMMEDIATE_GATE)
    proc = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A)), det, gen, make_ops(cfg), cfg, segmenter_engine=bare
    )
    assert proc.occlusion == "gated-union"
    for _ in range(3):
        out, report = proc.process(frame)
        assert out is frame and report.masked_faces == 0

    def top_half(feeds: Mapping[str, Any]) -> dict[str, Any]:
        n = len(feeds["image"])
        visible = np.ones((n, 1, S, S), np.float32)
        visible[:, :, : S // 4] = 0.0  # the segmenter sees an occluder over the top quarter only
        return {"face": visible, "region": np.ones((n, 1, S, S), np.float32)}

    partial = EngineDouble("segmenter", ["image"], ["face", "region"], top_half)
    union = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A)), det, gen, make_ops(cfg), cfg, segmenter_engine=partial
    )
    only_seg_cfg = ProcessorConfig(gate=IMMEDIATE_GATE, occlusion="segmenter")
    only_seg = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A)),
        det,
        gen,
        make_ops(only_seg_cfg),
        only_seg_cfg,
        segmenter_engine=partial,
    )
    out_union, r1 = union.process(frame)
    out_seg, r2 = only_seg.process(frame)
    assert r1.masked_faces == r2.masked_faces == 1
    x0, y0, x1, y1 = GREEN_RECT  # the detector's occluder, outside the segmenter's top quarter
    green_union = out_union[y0 + 5 : y1 - 5, x0 + 5 : x1 - 5]
    green_seg = out_seg[y0 + 5 : y1 - 5, x0 + 5 : x1 - 5]
    assert not np.array_equal(green_union, frame[y0 + 5 : y1 - 5, x0 + 5 : x1 - 5])
    assert np.array_equal(green_seg, frame[y0 + 5 : y1 - 5, x0 + 5 : x1 - 5])


@pytest.mark.parametrize(("occluded", "restored"), [(0.75, 0), (0.95, 1)])
def test_gated_union_counts_only_confident_segmenter_pixels(
    frame, fresh, make_ops, occluded, restored
) -> None:
    """A diffuse 'occlusion' (a shadow, hair at the edge: Eq. 1 probability 0.75 over a third of the crop)
    is not evidence; the same area at 0.95 is (GateConfig.evidence_probability, 0.9)."""
    det, gen = fresh

    def diffuse(feeds: Mapping[str, Any]) -> dict[str, Any]:
        n = len(feeds["image"])
        visible = np.ones((n, 1, S, S), np.float32)
        visible[:, :, : S // 3] = 1.0 - occluded
        return {"face": visible, "region": np.ones((n, 1, S, S), np.float32)}

    seg = EngineDouble("segmenter", ["image"], ["face", "region"], diffuse)
    cfg = ProcessorConfig(gate=IMMEDIATE_GATE)
    proc = FrameProcessor.build(
        ScriptedDetector.same(face(*FACE_A)), det, gen, make_ops(cfg), cfg, segmenter_engine=seg
    )
    for _ in range(2):
        out, report = proc.process(frame)
        assert report.masked_faces == restored
        assert (out is frame) == (restored == 0)
