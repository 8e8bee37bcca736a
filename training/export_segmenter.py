"""Export a visible-face segmenter checkpoint to ONNX and torch.export, checked against eager torch.

Writes ``segmenter.onnx`` and ``segmenter.pt2``: ``image`` (batch, 3, S, S) RGB in [0, 1] -> ``face``
(batch, 1, S, S) visible-face probability and ``region`` (batch, 1, S, S) whole-face probability
(sigmoid applied), each carrying :class:`engines.base.ModelInfo`
(role "segmenter") like the other networks (:mod:`training.export`). ONNX Runtime and the reloaded
program must match eager torch within 1e-3 at batch 1 and 3, else :class:`training.export.ExportError`;
both files' sha256 then go into the folder's ``SHA256SUMS`` (:mod:`engines.model_digest`).

CLI: ``python -m training.export_segmenter --checkpoint CKPT --out models/small [--opset 17]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.base import ModelInfo
from engines.model_digest import write_digests
from training.export import (
    CHECK_BATCHES,
    TOLERANCE,
    ExportError,
    _attach_metadata,
    _export_program,
    _max_diff,
    git_revision,
)
from training.models.segmenter import SegmenterConfig, VisibleFaceSegmenter, load_weights
from training.train_segmenter import load_checkpoint

log = logging.getLogger(__name__)
PROFILE_BY_SIZE = {64: "tiny", 128: "small", 256: "full"}
OUTPUTS = ("face", "region")


class SegmenterForExport(nn.Module):
    """``image`` -> (``face``, ``region``) probabilities."""

    def __init__(self, model: VisibleFaceSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob = self.model.probabilities(image)
        return prob[:, 0:1], prob[:, 1:2]


@dataclass(frozen=True)
class SegmenterExport:
    """What :func:`export_segmenter` wrote and how closely each file matched eager torch."""

    onnx_path: Path
    pt2_path: Path
    info: ModelInfo
    max_abs_diff: dict[str, float]


def load_segmenter(checkpoint: str | Path) -> tuple[VisibleFaceSegmenter, dict[str, object]]:
    """The network of a checkpoint (eval mode, CPU) and the checkpoint dict."""
    ckpt = load_checkpoint(Path(checkpoint))
    config = ckpt["config"]
    model = VisibleFaceSegmenter(SegmenterConfig(tuple(config["model"]["decoder_channels"])))
    load_weights(model, ckpt["model"])
    return model.eval(), ckpt


def export_segmenter(checkpoint: str | Path, out_dir: str | Path, opset: int = 17) -> SegmenterExport:
    """Export and verify; returns paths and max |diff| per file and batch."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    model, ckpt = load_segmenter(checkpoint)
    config = ckpt["config"]
    assert isinstance(config, dict)
    size = int(config["crop_size"])
    extra = ckpt.get("extra", {})
    info = ModelInfo(
        role="segmenter",
        crop_size=size,
        profile=PROFILE_BY_SIZE.get(size, f"{size}px"),
        perceptual_backbone="",
        training_data="; ".join(f"{s['kind']}:{s['path']} ({s['split']})" for s in config["sources"]),
        iterations=int(ckpt["step"]),  # type: ignore[call-overload]
        git_revision=git_revision(),
        extra={
            "opset": opset,
            "encoder": "mobilenet_v2 features[:14] (ImageNet init)"
            if config.get("imagenet")
            else "random init",
            "decoder_channels": list(config["model"]["decoder_channels"]),
            "held_out": "people of split_by_person(0.15, seed 0); facemask style 'photo'; occluder 'cup'",
            "validation": extra if isinstance(extra, dict) else {},
        },
    )
    wrapper = SegmenterForExport(model).eval()
    destination = Path(out_dir)
    destination.mkdir(parents=True, exist_ok=True)
    onnx_path, pt2_path = destination / "segmenter.onnx", destination / "segmenter.pt2"
    # Batch 2 as the example: torch.export specialises sizes 0 and 1, which would pin the batch.
    example = (torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)),)
    with torch.no_grad():
        _export_onnx(wrapper, example, onnx_path, opset)
    _attach_metadata(onnx_path, info)
    _export_program(wrapper, example, pt2_path, ("image",), info)
    diffs = _verify(wrapper, onnx_path, pt2_path, size)
    # The torch backends load only .pt2 archives listed in the folder's SHA256SUMS (engines.model_digest).
    write_digests([onnx_path, pt2_path])
    log.info("exported segmenter to %s and %s (max |diff| %.2e)", onnx_path, pt2_path, max(diffs.values()))
    return SegmenterExport(onnx_path, pt2_path, info, diffs)


def _export_onnx(wrapper: nn.Module, example: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    """TorchScript-based exporter (as :mod:`training.export`), dynamic batch, two named outputs."""
    dynamic = {name: {0: "batch"} for name in ("image", *OUTPUTS)}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated and that shapes are traced; both are expected.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(wrapper, example, str(path), dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=list(OUTPUTS), dynamic_axes=dynamic, do_constant_folding=True)  # fmt: skip


def _verify(wrapper: nn.Module, onnx_path: Path, pt2_path: Path, size: int) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    program = torch.export.load(str(pt2_path)).module()
    diffs: dict[str, float] = {}
    for batch in CHECK_BATCHES:
        image = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = wrapper(image)
            from_program = program(image)
        from_onnx = session.run(list(OUTPUTS), {"image": image.numpy()})
        for k, name in enumerate(OUTPUTS):
            diffs[f"{onnx_path.name}:{name}[batch={batch}]"] = _max_diff(
                expected[k], np.asarray(from_onnx[k])
            )
            diffs[f"{pt2_path.name}:{name}[batch={batch}]"] = _max_diff(expected[k], from_program[k])
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise ExportError(f"exported segmenter disagrees with torch beyond {TOLERANCE}: {bad}")
    return diffs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.export_segmenter",
        description="Export a segmenter checkpoint to ONNX + .pt2 with deocclude metadata, checked against torch.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output directory (e.g. models/small)")
    parser.add_argument("--opset", type=int, default=17)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = export_segmenter(args.checkpoint, args.out, args.opset)
    except (OSError, ValueError, ExportError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in result.max_abs_diff.items())
    print(
        f"exported segmenter ({result.info.iterations} steps) to {result.onnx_path}; max |diff| vs torch: {diffs}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
