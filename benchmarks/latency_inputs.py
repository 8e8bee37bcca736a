"""Inputs of the latency benchmark: the prepared clip (letterboxed, repeated) and the forced-hole models.

See :mod:`benchmarks.latency` for why the clip is letterboxed and what ``--force-restore`` measures.
"""

from __future__ import annotations

import logging
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from engines.base import ModelInfo
from engines.crop import template
from engines.metadata import pt2_extra_files, pt2_sibling, read_onnx_info
from stream.errors import StreamError

logger = logging.getLogger(__name__)

CLIP_CRF = "18"


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480); anything else is a ValueError naming the expected form."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit():
        raise ValueError(f"size must be WIDTHxHEIGHT like 640x480, got {text!r}")
    return int(w), int(h)


# ------------------------------------------------------------------------------------------ clip
def letterbox_bgr_u8(bgr_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale (H, W, 3) uint8 to fit ``size`` (width, height) keeping the aspect, pad black, centred."""
    w, h = size
    sh, sw = bgr_u8.shape[:2]
    scale = min(w / sw, h / sh)
    nw, nh = min(w, round(sw * scale)), min(h, round(sh * scale))
    if (nw, nh) != (sw, sh):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        bgr_u8 = cv2.resize(bgr_u8, (nw, nh), interpolation=interp)
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    out[y : y + nh, x : x + nw] = bgr_u8
    return out


def probe(path: Path) -> dict[str, Any]:
    """Width, height, fps, frame count (decoded, exact) and codec of the first video stream."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        info = {
            "width": s.codec_context.width,
            "height": s.codec_context.height,
            "fps": float(s.average_rate or s.guessed_rate or 0),
            "codec": s.codec_context.name,
        }
        info["frames"] = sum(1 for _ in c.decode(s))
    return info


def prepare_clip(
    src: Path, dst: Path, *, size: tuple[int, int] | None, repeat_to: int | None, max_frames: int | None
) -> dict[str, Any]:
    """Write the clip the pipeline will read (see the module docstring); returns what was done.

    Streams frame by frame (the source is reopened for each repeat) so the copy adds nothing to the
    peak RSS the report measures.
    """
    src_frames = probe(src)["frames"]
    if src_frames == 0:
        raise StreamError(f"{src}: no video frames decoded")
    repeats = 1 if repeat_to is None else -(-repeat_to // src_frames)
    total = src_frames * repeats if max_frames is None else min(max_frames, src_frames * repeats)
    written, w, h = 0, 0, 0
    with av.open(str(dst), "w") as out:
        vs = None
        while written < total:
            with av.open(str(src)) as c:
                s = c.streams.video[0]
                for frame in c.decode(s):
                    bgr_u8 = frame.to_ndarray(format="bgr24")
                    if size is not None:
                        bgr_u8 = letterbox_bgr_u8(bgr_u8, size)
                    if vs is None:
                        rate = Fraction(s.average_rate or s.guessed_rate or 25)
                        vs = out.add_stream("libx264", rate=rate, options={"crf": CLIP_CRF})
                        h, w = bgr_u8.shape[:2]
                        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
                        vs.codec_context.time_base = 1 / rate
                    vf = av.VideoFrame.from_ndarray(bgr_u8, format="bgr24")
                    vf.pts, vf.time_base = written, 1 / rate
                    out.mux(vs.encode(vf))
                    written += 1
                    if written == total:
                        break
        if vs is not None:
            out.mux(vs.encode(None))
    return {
        "path": str(dst),
        "width": w,
        "height": h,
        "frames": total,
        "repeats": repeats,
        "letterboxed_to": None if size is None else f"{size[0]}x{size[1]}",
        "crf": int(CLIP_CRF),
    }


# ------------------------------------------------------------------------------------------ forced hole
def forced_hole(crop_size: int) -> np.ndarray:
    """(S, S) float32 {0, 1}: a surgical-mask region of the canonical crop, placed from its landmarks.

    Rows from halfway between the eyes and the nose tip down to the bottom edge; columns one eye
    distance beyond each eye centre.
    """
    lm = template(crop_size)
    eye_y, nose_y = (lm[0, 1] + lm[1, 1]) / 2, lm[2, 1]
    eye_dist = lm[1, 0] - lm[0, 0]
    top = round(nose_y - 0.5 * (nose_y - eye_y))
    left, right = round(lm[0, 0] - eye_dist), round(lm[1, 0] + eye_dist)
    hole = np.zeros((crop_size, crop_size), np.float32)
    hole[max(0, top) :, max(0, left) : min(crop_size, right)] = 1.0
    return hole


def _force_onnx(src: Path, dst: Path, hole: np.ndarray) -> None:
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    if [o.name for o in graph.output] != ["mask"]:
        raise ValueError(
            f"{src}: a detector must have the single output 'mask', got {[o.name for o in graph.output]}"
        )
    for node in graph.node:  # the network's mask gets a new name; "mask" becomes max(it, hole)
        node.output[:] = ["mask_network" if n == "mask" else n for n in node.output]
        node.input[:] = ["mask_network" if n == "mask" else n for n in node.input]
    graph.initializer.append(numpy_helper.from_array(hole[None, None], "benchmark_forced_hole"))
    graph.node.append(helper.make_node("Max", ["mask_network", "benchmark_forced_hole"], ["mask"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def _force_pt2(src: Path, dst: Path, hole: np.ndarray, info: ModelInfo) -> None:
    import torch

    inner = torch.export.load(str(src)).module()

    class Forced(torch.nn.Module):
        hole: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.register_buffer("hole", torch.from_numpy(hole)[None, None])

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.maximum(self.inner(image), self.hole)

    s = hole.shape[0]
    batch = torch.export.Dim("batch", min=1, max=64)
    # Batch 2 as the example: torch.export specialises sizes 0 and 1.
    program = torch.export.export(Forced(), (torch.rand(2, 3, s, s),), dynamic_shapes={"image": {0: batch}})
    torch.export.save(program, str(dst), extra_files=pt2_extra_files(info))


def write_forced_models(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` with the detector's output forced to include :func:`forced_hole`.

    The .pt2 (torch backends) is rewritten the same way when ``src`` has one; a failure there only
    removes it (logged), so the ONNX backends still run.
    """
    det_onnx = src / "detector.onnx"
    info = read_onnx_info(det_onnx)
    hole = forced_hole(info.crop_size)
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("detector."):
            shutil.copy2(f, dst / f.name)
    _force_onnx(det_onnx, dst / "detector.onnx", hole)
    if pt2_sibling(det_onnx).is_file():
        try:
            _force_pt2(pt2_sibling(det_onnx), dst / "detector.pt2", hole, info)
        except Exception as exc:  # noqa: BLE001 - torch.export failures have many types; ONNX still runs
            logger.warning("force-restore: no forced detector.pt2 (%s); torch backends cannot run", exc)


# ------------------------------------------------------------------------------------------ networks alone
