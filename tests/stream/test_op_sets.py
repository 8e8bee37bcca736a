"""The two op sets of the per-frame flow against each other: the torch ops (:mod:`stream.restore.torch_ops`,
:class:`TorchOps`) against their OpenCV originals (:class:`NumpyOps`), op by op and through the one
:class:`FrameProcessor`.

Everything here runs the torch op set on CPU tensors (``device="cpu"``); the tests marked ``gpu`` repeat
what matters on CUDA and check what only exists there (streams, pinned memory, overlap).
The networks are tiny torch modules exported like the project's exporter does (ONNX + .pt2 + ModelInfo)
and run by the real engines; face detection is a test double returning known FaceDetection lists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from engines.base import ModelInfo, is_torch_tensor  # noqa: E402
from engines.crop import estimate_alignment, template, warp_to_crop  # noqa: E402
from engines.face_detect import FaceDetection  # noqa: E402
from engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from engines.runtime import cuda_available  # noqa: E402
from engines.torch_engine import TorchEngine  # noqa: E402
from stream.errors import StreamError  # noqa: E402
from stream.faces.front_end import inside_mask_from_alpha  # noqa: E402
from stream.pipeline import FunctionStage, Pipeline  # noqa: E402
from stream.restore import torch_ops  # noqa: E402
from stream.restore.build import build_processor, restore_stages  # noqa: E402
from stream.restore.composite import paste_back, paste_roi  # noqa: E402
from stream.restore.config import FrameReport, ProcessorConfig  # noqa: E402
from stream.restore.gate import GateConfig  # noqa: E402
from stream.restore.numpy_ops import NumpyOps  # noqa: E402
from stream.restore.ops import STAT_EXTENT, STAT_HOLE_PX, EngineOutputError  # noqa: E402
from stream.restore.overlap import LocateAhead  # noqa: E402
from stream.restore.processor import FrameProcessor  # noqa: E402
from stream.restore.smoother import MaskSmoother, SmootherConfig  # noqa: E402
from stream.restore.torch_frame_ops import TORCH_TIMING_KEYS, TorchOps  # noqa: E402
from stream.types import Frame, VideoInfo  # noqa: E402

S = 64
H, W = 240, 320
CUDA = cuda_available()  # engines.runtime: the project's one answer
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


# ---------------------------------------------------------------------------- tiny networks


# Restores from the first occluded frame: these tests follow the per-frame flow frame by frame; the
# hysteresis over frames is tested in test_gate.py and in test_bare_faces_are_passed_through below.
IMMEDIATE_GATE = GateConfig(frames_on=1, frames_off=1)


class GreenDetector(torch.nn.Module):
    """mask = sigmoid(20 * (g - r - b) - 4): saturated green is occluded, grey/skin is not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-20.0, 20.0, -20.0]).view(1, 3, 1, 1))
            self.conv.bias.fill_(-4.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(image))


class TextureGenerator(torch.nn.Module):
    """A few fixed random convolutions: spatially varying output, so geometry and colour order show."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.c1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(torch.cat([image * (1 - mask), mask], dim=1)))
        return torch.sigmoid(self.c2(x) + 4.0 * (image - 0.5))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from tests.engines.tiny_models import export

    d = tmp_path_factory.mktemp("gpu_restore_models")
    det = export(
        GreenDetector(),
        d,
        "detector",
        ModelInfo(role="detector", crop_size=S, profile="test"),
        {"image": (3, S, S)},
        "mask",
    )
    gen = export(
        TextureGenerator(),
        d,
        "generator",
        ModelInfo(role="generator", crop_size=S, profile="test"),
        {"image": (3, S, S), "mask": (1, S, S)},
        "restored",
    )
    return {"detector": det, "generator": gen}


class Recording:
    """Wraps a real engine; records (batch, "torch" | "numpy") of every call."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.backend, self.device, self.info = engine.backend, engine.device, engine.info
        self.inputs, self.outputs = engine.inputs, engine.outputs
        self.calls: list[tuple[int, str]] = []
        self.warmups: list[int] = []

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        image = feeds["image"]
        self.calls.append((int(image.shape[0]), "torch" if is_torch_tensor(image) else "numpy"))
        return self.engine.run(feeds)

    def warmup(self, batch: int = 1) -> None:
        self.warmups.append(batch)
        self.engine.warmup(batch)

    def close(self) -> None:
        self.engine.close()


def load(exported: dict[str, Any], backend: str, device: str = "cpu") -> tuple[Recording, Recording]:
    def one(role: str) -> Recording:
        if backend == "onnxruntime":
            return Recording(OnnxRuntimeEngine(exported[role].onnx, device=device, intra_threads=1))
        return Recording(TorchEngine(exported[role].pt2, device=device))

    return one("detector"), one("generator")


@pytest.fixture(scope="module")
def ort_engines(exported: dict[str, Any]) -> tuple[Recording, Recording]:
    return load(exported, "onnxruntime")


# ---------------------------------------------------------------------------- faces and frames


class ScriptedDetector:
    """Test double for face detection: frame i gets ``script[i]``; the last entry repeats."""

    def __init__(self, script: Sequence[list[FaceDetection]]) -> None:
        self._script = script
        self.calls = 0

    def detect(self, bgr_u8: np.ndarray) -> list[FaceDetection]:
        self.calls += 1
        return list(self._script[min(self.calls - 1, len(self._script) - 1)])


def face(cx: float, cy: float, size: float, angle: float = 0.0) -> FaceDetection:
    c, s = np.cos(angle), np.sin(angle)
    lms = ((template(112) / 112.0 - 0.5) * size) @ np.array([[c, s], [-s, c]]) + [cx, cy]
    box = np.array([cx - size / 2, cy - size / 2, size, size], dtype=np.float32)
    return FaceDetection(box=box, landmarks=lms.astype(np.float32), score=0.95)


FACES = (
    face(90, 110, 100, 0.2),  # occluded, rotated
    face(235, 120, 80),  # not occluded
    face(W - 12, 200, 90, -0.3),  # occluded, partly outside the frame (crop reads the border fill)
)
GREEN = ((60, 120, 125, 160), (285, 170, W, 240))  # x0, y0, x1, y1 over faces 0 and 2


def make_frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    yy, xx = np.mgrid[:H, :W]
    # The texture drifts slowly (0.2 rad a frame): a jump of a whole period would be a scene cut,
    # which ends every track (stream.faces.cuts).
    grey = 120 + 50 * np.sin(xx / 17.0 + 0.2 * i) * np.cos(yy / 23.0)
    bgr = np.clip(grey[..., None] + rng.integers(-12, 13, (H, W, 3)), 0, 255).astype(np.uint8)
    for x0, y0, x1, y1 in GREEN:
        bgr[y0 + i % 2 : y1, x0 + i : x1] = (40, 200, 40)  # the occluder moves a little
    return bgr


def pair(
    engines: tuple[Recording, Recording], script: Sequence[list[FaceDetection]], **cfg: Any
) -> tuple[Any, Any]:
    det, gen = engines
    config = ProcessorConfig(**{"min_face_px": 0, "gate": IMMEDIATE_GATE, **cfg})
    cpu = FrameProcessor.build(ScriptedDetector(script), det, gen, NumpyOps(config), config)
    dev = torch_processor(ScriptedDetector(script), det, gen, config)
    return cpu, dev


def torch_processor(
    detector: Any, det: Any, gen: Any, config: ProcessorConfig | None = None, device: str = "cpu"
) -> FrameProcessor:
    cfg = config or ProcessorConfig(gate=IMMEDIATE_GATE)
    return FrameProcessor.build(detector, det, gen, TorchOps(cfg, device), cfg)


def assert_close_frames(out_gpu: np.ndarray, out_cpu: np.ndarray, frame: np.ndarray) -> None:
    diff = np.abs(out_gpu.astype(int) - out_cpu.astype(int))
    changed = np.any(out_gpu != frame, axis=2) | np.any(out_cpu != frame, axis=2)
    assert diff.max() <= 3, f"max difference {diff.max()} grey levels"
    assert diff[changed].mean() < 0.5, f"mean difference {diff[changed].mean():.3f} over the restored pixels"
    # Outside the pasted masks (the CPU result's changed pixels, grown by one pixel for alpha rounding),
    # the GPU output holds the input's bytes exactly.
    cpu_changed = np.any(out_cpu != frame, axis=2).astype(np.uint8)
    near = cv2.dilate(cpu_changed, np.ones((3, 3), np.uint8)).astype(bool)
    assert np.array_equal(out_gpu[~near], frame[~near])


# ---------------------------------------------------------------------------- ops vs OpenCV


def test_warp_crops_matches_warp_to_crop_and_inside_masks() -> None:
    frame = make_frame(0)
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    alignments = [estimate_alignment(f.landmarks, S) for f in FACES]
    mats = torch.from_numpy(np.stack([a.inverse for a in alignments]))
    crops, alpha = torch_ops.warp_crops(torch.from_numpy(frame), mats, S)
    assert crops.shape == (3, 3, S, S) and crops.dtype == torch.float32 and crops.is_contiguous()
    inside = torch_ops.inside_from_alpha(alpha)
    for i, a in enumerate(alignments):
        ref = warp_to_crop(bgra, a)
        ref_rgb01 = ref[:, :, 2::-1].transpose(2, 0, 1) * np.float32(1 / 255)
        levels = np.abs(crops[i].numpy() - ref_rgb01) * 255
        assert levels.max() <= 1.0 + 1e-4, f"face {i}: {levels.max()} levels from cv2.warpAffine"
        # Exact ties (weights of exactly 0.5, e.g. an axis-aligned face at scale 1/2) go either way in
        # OpenCV's float32 coordinates; elsewhere the two agree to the byte.
        assert levels.mean() < 0.1, f"face {i}: mean {levels.mean():.3f} levels"
        assert np.array_equal(alpha[i].numpy(), ref[:, :, 3].astype(np.float32))
        assert np.array_equal(inside[i].numpy(), inside_mask_from_alpha(ref[:, :, 3]))
    assert inside[2].min() == 0.0, "the third face really reads the border fill"


def test_warp_crops_reads_a_region_of_the_frame_like_the_whole_frame() -> None:
    frame = make_frame(1)
    a = estimate_alignment(FACES[0].landmarks, S)
    whole, _ = torch_ops.warp_crops(torch.from_numpy(frame), torch.from_numpy(a.inverse[None].copy()), S)
    x0, y0 = 20, 30
    mats = a.inverse[None].copy()
    mats[:, :, 2] -= (x0, y0)
    part, _ = torch_ops.warp_crops(torch.from_numpy(frame[y0:, x0:].copy()), torch.from_numpy(mats), S)
    levels = (whole - part).abs() * 255
    assert levels.max() <= 1.0 + 1e-4 and (levels > 0.5).float().mean() < 0.01, "float noise only"


def test_gaussian_blur_u8_is_bit_exact_with_opencv() -> None:
    rng = np.random.default_rng(0)
    for f in (1, 2, 3, 6):
        k = 2 * f + 1
        core = cv2.dilate(((rng.random((40, 50)) > 0.8) * 255).astype(np.uint8), np.ones((3, 3), np.uint8))
        ref = cv2.GaussianBlur(core, (k, k), f / 2.0, borderType=cv2.BORDER_CONSTANT)
        kernel = torch.from_numpy(torch_ops.gaussian_kernel_u8(k, f / 2.0))
        got = torch_ops.gaussian_blur_u8(torch.from_numpy(core).float()[None, None], kernel)[0, 0]
        assert np.array_equal(got.numpy(), ref.astype(np.float64)), f"feather {f}"


@pytest.mark.parametrize(
    "config",
    [SmootherConfig(), SmootherConfig(spatial_px=0, open_px=0, dilate_px=2, feather_px=0)],
    ids=["default", "no-open-no-feather"],
)
def test_torch_smoother_matches_mask_smoother_bit_for_bit(config: SmootherConfig) -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:S, :S]
    ref, dev = MaskSmoother(config), torch_ops.TorchMaskSmoother(config)
    schedule = [[1, 2, 3]] * 5 + [[2, 3, 4]] * 5 + [[4, 2]] * 4  # tracks start, end and come back in
    for t, ids in enumerate(schedule):
        probs = []
        for tid in ids:
            disc = ((xx - 20 - 4 * tid - t) ** 2 + (yy - 30) ** 2 < (9 + tid) ** 2).astype(np.float32)
            probs.append(np.clip(disc + rng.normal(0, 0.3, disc.shape), 0, 1).astype(np.float32))
        ref.retain(ids)
        dev.retain(ids)
        want = np.stack([ref.update(tid, p) for tid, p in zip(ids, probs, strict=True)])
        got = dev.update(ids, torch.from_numpy(np.stack(probs))).numpy()
        assert np.array_equal(got, want), f"frame {t}: {np.abs(got - want).max()}"
        assert dev.track_ids == ref.track_ids
    assert want.max() == 1.0 and 0 < want.mean() < 0.5, "the masks are neither empty nor full"


@pytest.mark.parametrize("paste_feather_px", [0, 2])
def test_the_two_op_sets_agree_op_by_op(paste_feather_px: int) -> None:
    """Each op of FrameOps on the same inputs: crops and pasted frames within the documented grey level,
    smoothing, border masks and face statistics bit for bit."""
    config = ProcessorConfig(min_face_px=0, paste_feather_px=paste_feather_px, gate=IMMEDIATE_GATE)
    frame = make_frame(1)
    faces = config.front_end(ScriptedDetector([list(FACES)]), S).locate(frame)
    host, dev = NumpyOps(config), TorchOps(config, "cpu")
    staged_h, staged_d = host.stage(frame, faces), dev.stage(frame, faces)
    assert staged_h.within == staged_d.within == (True, False, True)  # largest first: the edge face is 2nd
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:S, :S]
    probs = np.stack([((xx - 30) ** 2 + (yy - 36 - 4 * i) ** 2 < 150 + 60 * i) for i in range(3)])
    probs = (probs * 0.8 + rng.random((3, S, S)) * 0.2).astype(np.float32)[:, None]
    restored = rng.random((2, 3, S, S)).astype(np.float32)
    ids = faces.track_ids
    with host.session(staged_h), dev.session(staged_d):
        crops_h, inside_h = host.warp_crops(staged_h)
        crops_d, inside_d = dev.warp_crops(staged_d)
        diff = np.abs(crops_d.numpy() - crops_h) * 255.0
        assert diff.max() <= 1.0 + 1e-4 and diff.mean() < 0.1  # bounds of the warp_crops test above
        assert inside_h is not None and inside_d is not None
        assert np.array_equal(inside_d.numpy()[1], inside_h[1]) and inside_h[1].min() == 0.0
        for _ in range(3):  # the smoothers' history, frame after frame
            masks_h = host.keep_inside(host.smooth(ids, probs), inside_h, staged_h.within)
            masks_d = dev.keep_inside(dev.smooth(ids, torch.from_numpy(probs)), inside_d, staged_d.within)
            assert np.array_equal(masks_d.numpy(), masks_h)
        holes_h, holes_d = masks_h >= 0.5, masks_d >= 0.5
        stats_h, stats_d = host.face_stats(masks_h, holes_h), dev.face_stats(masks_d, holes_d)
        assert stats_h.dtype == stats_d.dtype == np.int64 and np.array_equal(stats_d, stats_h)
        assert np.array_equal(stats_h[:, STAT_HOLE_PX], np.count_nonzero(holes_h.reshape(3, -1), axis=1))
        rows = np.flatnonzero((masks_h[0] > 0).any(axis=1))
        assert tuple(stats_h[0, STAT_EXTENT][:2]) == (rows[0], rows[-1])
        chosen = [0, 1]
        assert np.array_equal(dev.take(crops_d, chosen).numpy(), crops_d.numpy()[chosen])
        assert host.take(crops_h, [0, 1, 2]) is crops_h and dev.take(crops_d, [0, 1, 2]) is crops_d
        hb_h, hb_d = (
            host.as_hole_batch(host.take(holes_h, chosen)),
            dev.as_hole_batch(dev.take(holes_d, chosen)),
        )
        assert hb_h.shape == (2, 1, S, S) and hb_h.dtype == np.float32 and np.array_equal(hb_d.numpy(), hb_h)
        out_h = host.paste(staged_h, chosen, restored, host.take(masks_h, chosen), stats_h[chosen])
        out_d = dev.paste(
            staged_d, chosen, torch.from_numpy(restored), dev.take(masks_d, chosen), stats_d[chosen]
        )
    assert np.count_nonzero(np.any(out_h != frame, axis=2)) > 300, "something was pasted"
    assert_close_frames(out_d, out_h, frame)


@pytest.mark.parametrize("feather", [0, 3])
def test_warp_back_and_blend_match_paste_back(feather: int) -> None:
    rng = np.random.default_rng(2)
    frame = make_frame(2)
    smoother = MaskSmoother()
    yy, xx = np.mgrid[:S, :S]
    faces = FACES[:1] + FACES[2:]
    aligns = [estimate_alignment(f.landmarks, S) for f in faces]
    restored = rng.random((len(faces), 3, S, S)).astype(np.float32) * 1.1 - 0.05  # a little out of range
    masks = [
        smoother.update(i, ((xx - 30) ** 2 + (yy - 40 + 8 * i) ** 2 < 200).astype(np.float32))
        for i in range(2)
    ]
    want = frame.copy()
    for i, a in enumerate(aligns):
        paste_back(frame, restored[i], masks[i], a, feather, out=want)
    got = frame.copy()
    rois = []
    for i, a in enumerate(aligns):
        m = masks[i] > 0
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        rois.append(paste_roi((H, W), np.array([rows[0], rows[-1], cols[0], cols[-1]]), a, feather))
    mats = np.stack([a.matrix for a in aligns])
    mats[:, :, 2] += np.einsum(
        "nij,nj->ni", mats[:, :, :2], np.array([r[:2] for r in rois], dtype=np.float64)
    )
    sizes = np.array([(r[3] - r[1], r[2] - r[0]) for r in rois])
    kernel = (
        torch.from_numpy(torch_ops.gaussian_kernel_u8(2 * feather + 1, feather / 2.0)) if feather else None
    )
    bgr, alpha = torch_ops.warp_back(
        torch.from_numpy(restored),
        torch.from_numpy(np.stack(masks)),
        torch.from_numpy(mats),
        torch.from_numpy(sizes),
        (int(sizes[:, 0].max()), int(sizes[:, 1].max())),
        kernel,
    )
    out = torch.from_numpy(got)
    for k, (x0, y0, x1, y1) in enumerate(rois):
        torch_ops.blend_into(
            out[y0:y1, x0:x1], bgr[k, :, : y1 - y0, : x1 - x0], alpha[k, : y1 - y0, : x1 - x0]
        )
    diff = np.abs(got.astype(int) - want.astype(int))
    assert np.any(want != frame), "paste_back changed something"
    assert diff.max() <= 2 and diff.mean() < 0.01, (diff.max(), diff.mean())


# ---------------------------------------------------------------------------- the processor


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
@pytest.mark.parametrize("paste_feather_px", [0, 2])
def test_matches_the_cpu_processor(exported, backend: str, paste_feather_px: int) -> None:
    engines = load(exported, backend)
    cpu, dev = pair(engines, [list(FACES)], paste_feather_px=paste_feather_px)
    for i in range(4):
        frame = make_frame(i)
        before = frame.copy()
        out_cpu, rep_cpu = cpu.process(frame)
        out_gpu, rep_gpu = dev.process(frame)
        assert np.array_equal(frame, before), "the input frame is never modified"
        assert out_gpu is not frame and out_gpu.dtype == np.uint8 and out_gpu.shape == frame.shape
        assert (
            (rep_gpu.faces, rep_gpu.masked_faces, rep_gpu.skipped_faces)
            == (
                rep_cpu.faces,
                rep_cpu.masked_faces,
                rep_cpu.skipped_faces,
            )
            == (3, 2, 0)
        )
        assert rep_gpu.track_ids == rep_cpu.track_ids and rep_gpu.detected
        assert np.count_nonzero(np.any(out_cpu != frame, axis=2)) > 500, "something was restored"
        assert_close_frames(out_gpu, out_cpu, frame)
    det, gen = engines
    assert det.calls[1::2] == [(3, "torch")] * 4, "all faces in one detector call, fed torch tensors"
    assert gen.calls[1::2] == [(2, "torch")] * 4, "the two occluded faces in one generator call"


def test_overlapping_faces_stack_like_on_the_cpu_path(ort_engines) -> None:
    overlapping = [FACES[0], face(120, 150, 90, -0.1)]  # both crops see the same occluder
    cpu, dev = pair(ort_engines, [overlapping])
    for i in range(2):
        frame = make_frame(i)
        out_cpu, rep_cpu = cpu.process(frame)
        out_gpu, rep_gpu = dev.process(frame)
        assert rep_gpu.masked_faces == rep_cpu.masked_faces == 2
        assert_close_frames(out_gpu, out_cpu, frame)


def test_report_has_the_gpu_timing_keys(ort_engines) -> None:
    _, dev = pair(ort_engines, [list(FACES)])
    _, report = dev.process(make_frame(0))
    assert isinstance(report, FrameReport)
    assert set(report.timings_ms) == set(TORCH_TIMING_KEYS)
    assert all(v >= 0 for v in report.timings_ms.values())
    assert all(report.timings_ms[k] > 0 for k in ("detect", "align", "mask", "restore", "composite"))


def test_only_the_faces_rectangle_goes_to_the_device(ort_engines) -> None:
    _, dev = pair(ort_engines, [[FACES[1]]], paste_feather_px=3)
    located = dev.locate(make_frame(0))
    x0, y0, x1, y1 = located.prepared.region
    assert tuple(located.prepared.region_dev.shape) == (y1 - y0, x1 - x0, 3)
    assert (x1 - x0) * (y1 - y0) < 0.5 * H * W
    corners = located.alignments[0].to_image(np.array([[0.0, 0.0], [S, S]]))
    assert x0 < corners[:, 0].min() and x1 > corners[:, 0].max() and y0 < corners[:, 1].min()


def test_warmup_runs_both_engines_at_every_batch_size(exported) -> None:
    det, gen = load(exported, "onnxruntime")
    proc = torch_processor(ScriptedDetector([[]]), det, gen, ProcessorConfig(max_faces=3))
    proc.warmup((H, W))
    assert det.warmups == [1, 2, 3] and gen.warmups == [1, 2, 3]


def test_no_faces_returns_the_frame_itself(ort_engines) -> None:
    det, gen = ort_engines
    det.calls.clear()
    gen.calls.clear()
    _, dev = pair(ort_engines, [[]])
    frame = make_frame(0)
    for _ in range(2):
        out, report = dev.process(frame)
        assert out is frame and (report.faces, report.masked_faces) == (0, 0)
    assert det.calls == [] and gen.calls == [], "no network runs without faces"


def test_unoccluded_faces_skip_the_generator(ort_engines) -> None:
    det, gen = ort_engines
    det.calls.clear()
    gen.calls.clear()
    _, dev = pair(ort_engines, [[FACES[1]]])
    frame = make_frame(0)
    out, report = dev.process(frame)
    assert out is frame and (report.faces, report.masked_faces) == (1, 0)
    assert det.calls == [(1, "torch")] and gen.calls == []
    assert report.timings_ms["restore"] == 0.0 and report.timings_ms["download"] == 0.0


def test_detection_dropout_and_detect_every_follow_the_cpu_front_end(ort_engines) -> None:
    script = [[FACES[0]]] * 3 + [[]] * 2 + [[FACES[0], FACES[1]]] * 3
    cpu, dev = pair(ort_engines, script, detect_every=2)
    for i in range(len(script)):
        frame = make_frame(i)
        out_cpu, rep_cpu = cpu.process(frame)
        out_gpu, rep_gpu = dev.process(frame)
        assert (rep_gpu.track_ids, rep_gpu.detected, rep_gpu.masked_faces) == (
            rep_cpu.track_ids,
            rep_cpu.detected,
            rep_cpu.masked_faces,
        )
        assert_close_frames(out_gpu, out_cpu, frame)
    dev.reset()
    assert dev.ops.smoother.track_ids == frozenset()


def test_mismatched_engines_config_or_device_are_rejected(ort_engines) -> None:
    det, gen = ort_engines
    with pytest.raises(ValueError, match="role 'generator'"):
        torch_processor(ScriptedDetector([[]]), det, det)
    dev = torch_processor(ScriptedDetector([[]]), det, gen)
    with pytest.raises(ValueError, match="must match the config"):
        FrameProcessor(dev.front_end, det, gen, dev.ops, ProcessorConfig(max_faces=2))
    with pytest.raises(ValueError, match="device must be"):
        TorchOps(ProcessorConfig(), "mps")
    if not CUDA:
        with pytest.raises(ImportError, match="sees no CUDA device"):
            TorchOps(ProcessorConfig(), "cuda")

    on_cuda = Recording(det.engine)
    on_cuda.device = "cuda:0"
    with pytest.raises(ValueError, match="the detector engine must run on cpu, got 'cuda:0'"):
        FrameProcessor.build(ScriptedDetector([[]]), on_cuda, gen, NumpyOps(ProcessorConfig()))


def test_engine_output_of_the_wrong_shape_is_a_clear_error(ort_engines) -> None:
    det, gen = ort_engines

    class HalfMask(Recording):
        def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
            return {"mask": self.engine.run(feeds)["mask"][..., : S // 2]}

    proc = torch_processor(ScriptedDetector([[FACES[0]]]), HalfMask(det.engine), gen)
    with pytest.raises(EngineOutputError, match=r"'mask' must be \(1, 1, 64, 64\)"):
        proc.process(make_frame(0))


def test_build_processor_picks_by_device_and_logs_it(ort_engines, caplog) -> None:
    det, gen = ort_engines
    with caplog.at_level(logging.INFO, logger="stream.restore.build"):
        proc = build_processor(ScriptedDetector([[]]), det, gen, ProcessorConfig(), "cpu")
    assert type(proc.ops) is NumpyOps and not proc.ops.overlaps
    assert [r.getMessage() for r in caplog.records] == [
        "processor: numpy ops on cpu (OpenCV crops and compositing, host arrays)",
        "processor: occlusion from the detector, restored by the generator; a face is restored after 3 "
        "occluded frames and released after 8 bare ones",
    ]
    with pytest.raises(ValueError, match="device must be"):
        build_processor(ScriptedDetector([[]]), det, gen, None, "tpu")


def test_restore_stages_locate_ahead_on_off_and_auto_by_the_op_set(ort_engines, caplog) -> None:
    det, gen = ort_engines
    proc = build_processor(ScriptedDetector([[]]), det, gen, ProcessorConfig(), "cpu")
    auto = ["faces", "restore"] if proc.ops.overlaps else ["restore"]
    for choice, names in (("on", ["faces", "restore"]), ("off", ["restore"]), ("auto", auto)):
        with caplog.at_level(logging.INFO, logger="stream.restore.build"):
            caplog.clear()
            _, stages = restore_stages(proc, (H, W), keep_reports=False, queue_size=2, locate_ahead=choice)
        assert [s.name for s in stages] == names, choice
        line = "in two threads" if len(names) == 2 else "one restore thread"
        assert any(line in r.getMessage() for r in caplog.records), choice
    with pytest.raises(ValueError, match="locate_ahead must be one of"):
        restore_stages(proc, (H, W), keep_reports=False, queue_size=2, locate_ahead="yes")


# ---------------------------------------------------------------------------- two threads


class ListSource:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.info = VideoInfo(W, H, 30.0, Fraction(1, 30), frame_count=len(frames))

    def __iter__(self) -> Iterator[Frame]:
        for i, f in enumerate(self.frames):
            yield Frame(i, i, Fraction(1, 30), f, 0.0)

    def close(self) -> None:
        pass


class ListSink:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def write(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        pass


def test_locate_ahead_in_a_real_pipeline_gives_the_sequential_result(ort_engines) -> None:
    frames = [make_frame(i) for i in range(6)]
    _, sequential = pair(ort_engines, [list(FACES)])
    want = [sequential.process(f)[0] for f in frames]
    _, dev = pair(ort_engines, [list(FACES)])
    ahead = LocateAhead(dev, max_pending=4)
    threads: set[str] = set()

    def restore(frame: Frame) -> Frame:
        threads.add(threading.current_thread().name)
        out, _ = ahead.process(frame.bgr_u8)
        return Frame(frame.index, frame.pts, frame.time_base, out, frame.captured_at)

    def locate(frame: Frame) -> Frame:
        threads.add(threading.current_thread().name)
        return ahead.locate_stage(frame)

    sink = ListSink()
    stages = [FunctionStage("faces", locate), FunctionStage("restore", restore)]
    Pipeline(ListSource(frames), stages, sink, queue_size=2, live=False).run()
    assert len(threads) == 2, "locate and restore ran in two threads"
    assert [f.index for f in sink.frames] == list(range(6))
    for got, exp in zip(sink.frames, want, strict=True):
        assert np.array_equal(got.bgr_u8, exp)
    assert ahead.pending() == 0 and ahead.discarded == 0


def test_locate_ahead_discards_dropped_frames_and_refuses_unlocated_ones(ort_engines) -> None:
    _, dev = pair(ort_engines, [list(FACES)])
    ahead = LocateAhead(dev, max_pending=3)
    frames = [Frame(i, i, Fraction(1, 30), make_frame(i), 0.0) for i in range(4)]
    for f in frames[:3]:
        ahead.locate_stage(f)
    out, report = ahead.process(frames[2].bgr_u8)  # frames 0 and 1 were dropped between the stages
    assert report.faces == 3 and ahead.discarded == 2 and ahead.pending() == 0
    with pytest.raises(StreamError, match="not located"):
        ahead.process(frames[3].bgr_u8)
    for f in frames:
        ahead.locate_stage(f)  # one more than max_pending: frame 0 is evicted
    assert ahead.evicted == 1
    with pytest.raises(StreamError, match="evicted"):
        ahead.process(frames[0].bgr_u8)
    assert ahead.pending() == 3, "a refused frame leaves the queue as it was"


# ---------------------------------------------------------------------------- CUDA only


@pytest.fixture(scope="module")
def cuda_engines(exported) -> tuple[Recording, Recording]:
    if not CUDA:
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    return load(exported, "torch", "cuda:0")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("paste_feather_px", [0, 2])
def test_cuda_matches_the_cpu_processor(exported, cuda_engines, monkeypatch, paste_feather_px: int) -> None:
    # TF32 convolutions would make the networks' outputs (not the pipeline) differ from the CPU's.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cpu_det, cpu_gen = load(exported, "onnxruntime")
    config = ProcessorConfig(min_face_px=0, paste_feather_px=paste_feather_px, gate=IMMEDIATE_GATE)
    cpu = FrameProcessor.build(ScriptedDetector([list(FACES)]), cpu_det, cpu_gen, NumpyOps(config), config)
    dev = torch_processor(ScriptedDetector([list(FACES)]), *cuda_engines, config, device="cuda")
    for i in range(4):
        frame = make_frame(i)
        out_cpu, rep_cpu = cpu.process(frame)
        out_gpu, rep_gpu = dev.process(frame)
        assert (rep_gpu.faces, rep_gpu.masked_faces, rep_gpu.track_ids) == (
            rep_cpu.faces,
            rep_cpu.masked_faces,
            rep_cpu.track_ids,
        )
        assert_close_frames(out_gpu, out_cpu, frame)
    assert cuda_engines[0].calls[-1] == (3, "torch") and cuda_engines[1].calls[-1] == (2, "torch")


@pytest.mark.gpu
@requires_cuda
def test_cuda_uses_pinned_buffers_two_streams_and_gpu_timings(cuda_engines) -> None:
    dev = torch_processor(
        ScriptedDetector([list(FACES)]),
        *cuda_engines,
        ProcessorConfig(min_face_px=0, gate=IMMEDIATE_GATE),
        device="cuda",
    )
    ops = dev.ops
    assert isinstance(ops, TorchOps) and ops.overlaps
    upload, compute = ops.streams
    assert upload is not None and compute is not None and upload != compute
    located = dev.locate(make_frame(0))
    up = located.prepared
    assert up.region_dev.is_cuda and up.events is not None
    x0, y0, x1, y1 = up.region
    assert tuple(up.region_dev.shape) == (y1 - y0, x1 - x0, 3), "only the faces' rectangle is uploaded"
    assert ops._slots[0].buffer.is_pinned()
    out, report = dev.restore(located)
    assert ops._download_buf is not None and ops._download_buf.is_pinned()
    assert report.masked_faces == 2 and all(report.timings_ms[k] > 0 for k in TORCH_TIMING_KEYS)
    assert torch.cuda.current_stream() == torch.cuda.default_stream(), "streams are restored after use"


@pytest.mark.gpu
@requires_cuda
def test_cuda_upload_of_the_next_frame_overlaps_restoration(cuda_engines) -> None:
    det, gen = cuda_engines
    sleeping = threading.Event()
    slept = torch.cuda.Event(enable_timing=True)

    class SlowGenerator(Recording):
        """Keeps the compute stream busy ~30 ms (enqueued on the caller's current stream)."""

        def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
            torch.cuda._sleep(int(5e7))
            slept.record()
            sleeping.set()
            return self.engine.run(feeds)

    dev = torch_processor(
        ScriptedDetector([list(FACES)]),
        det,
        SlowGenerator(gen.engine),
        ProcessorConfig(min_face_px=0, gate=IMMEDIATE_GATE),
        "cuda",
    )
    dev.process(make_frame(0))  # warm up allocations
    sleeping.clear()
    first = dev.locate(make_frame(1))
    worker = threading.Thread(target=dev.restore, args=(first,))
    worker.start()
    assert sleeping.wait(10.0)
    second = dev.locate(make_frame(2))  # while the compute stream sleeps inside frame 1's restoration
    worker.join()
    torch.cuda.synchronize()
    assert second.prepared.events is not None
    assert second.prepared.events[1].elapsed_time(slept) > 0, (
        "frame 2's upload waited for frame 1's restoration"
    )
    _, report = dev.restore(second)
    assert report.masked_faces == 2


@pytest.mark.gpu
@requires_cuda
def test_cuda_locate_ahead_pipeline_gives_the_sequential_result(cuda_engines) -> None:
    frames = [make_frame(i) for i in range(6)]
    config = ProcessorConfig(min_face_px=0, gate=IMMEDIATE_GATE)
    sequential = torch_processor(ScriptedDetector([list(FACES)]), *cuda_engines, config, "cuda")
    want = [sequential.process(f)[0] for f in frames]
    ahead = LocateAhead(torch_processor(ScriptedDetector([list(FACES)]), *cuda_engines, config, "cuda"))
    ahead.processor.warmup((H, W))

    def restore(frame: Frame) -> Frame:
        return Frame(
            frame.index, frame.pts, frame.time_base, ahead.process(frame.bgr_u8)[0], frame.captured_at
        )

    sink = ListSink()
    stages = [FunctionStage("faces", ahead.locate_stage), FunctionStage("restore", restore)]
    Pipeline(ListSource(frames), stages, sink, queue_size=2, live=False).run()
    for got, exp in zip(sink.frames, want, strict=True):
        assert np.array_equal(got.bgr_u8, exp)


@pytest.mark.gpu
@requires_cuda
def test_build_processor_on_cuda(cuda_engines, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="stream.restore.build"):
        proc = build_processor(ScriptedDetector([[]]), *cuda_engines, ProcessorConfig(), "cuda")
    assert isinstance(proc.ops, TorchOps) and proc.device == "cuda:0"
    assert any("torch ops on cuda:0" in r.getMessage() for r in caplog.records)
