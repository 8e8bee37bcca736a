"""Checkpoints and export of the FMODR detector and generator to ONNX and torch.export programs.

Writes, for a checkpoint of profile P (crop S):

- ``detector.onnx`` / ``detector.pt2``: ``image`` (batch, 3, S, S) RGB in [0, 1] -> ``mask`` (batch, 1, S, S)
  occlusion probability (sigmoid applied);
- ``generator.onnx`` / ``generator.pt2``: ``image``, ``mask`` -> ``restored`` (batch, 3, S, S) RGB in [0, 1]
  (the refine network's output for the whole crop, not composited).

Every file carries :class:`engines.base.ModelInfo` JSON: ONNX in ``metadata_props[METADATA_KEY]``, torch
programs in the extra file ``deocclude.json``. After writing, ONNX Runtime and the reloaded programs are
compared with eager torch at batch 1 and 3; a difference above 1e-3 raises :class:`ExportError`.

ONNX goes through the TorchScript-based exporter (``dynamo=False``): it supports opset 17 directly and
needs no onnxscript, while the torch.export-based one targets opset 18+.

CLI: ``python -m training.export --checkpoint CKPT --out DIR [--profile NAME] [--opset 17]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.base import METADATA_KEY, ModelInfo
from engines.model_digest import write_digests
from training.models.detector import MaskRegionDetector, build_detector
from training.models.discriminator import GlobalMaskedDiscriminator, build_discriminator
from training.models.generator import FMODRGenerator, build_generator
from training.models.profiles import ModelProfile, get_profile

logger = logging.getLogger(__name__)

PT2_EXTRA_FILE = "deocclude.json"
TOLERANCE = 1e-3
CHECK_BATCHES = (1, 3)
MAX_EXPORT_BATCH = 64
_REPO_ROOT = Path(__file__).resolve().parents[1]


class ExportError(RuntimeError):
    """Export produced a model that disagrees with torch, or could not be written."""


class CheckpointError(ValueError):
    """A checkpoint file lacks a required key or holds the wrong kind of value."""


# ----------------------------------------------------------------------------------------------- checkpoints
def _state(obj: nn.Module | Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.state_dict()) if isinstance(obj, nn.Module) else dict(obj)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    profile: str | ModelProfile,
    detector: nn.Module | Mapping[str, Any],
    generator: nn.Module | Mapping[str, Any],
    discriminator: nn.Module | Mapping[str, Any] | None = None,
    optimizers: Mapping[str, Any] | None = None,
    step: int = 0,
    stage: str = "",
    config: Mapping[str, Any] | Any = None,
    perceptual_backbone: str = "",
    training_data: str = "",
) -> Path:
    """Write a checkpoint atomically (temp file + rename) with ``torch.save``; returns its path.

    Modules are stored as state dicts; ``optimizers`` maps names to optimizers or their state dicts;
    ``config`` (a mapping or dataclass) is stored as JSON-safe primitives so that the file loads with
    ``torch.load(weights_only=True)``.
    """
    profile_name = profile.name if isinstance(profile, ModelProfile) else get_profile(profile).name
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    payload: dict[str, Any] = {
        "profile": profile_name,
        "detector": _state(detector),
        "generator": _state(generator),
        "step": int(step),
        "stage": str(stage),
        "config": json.loads(json.dumps(config or {}, default=str)),
        "perceptual_backbone": str(perceptual_backbone),
        "training_data": str(training_data),
    }
    if discriminator is not None:
        payload["discriminator"] = _state(discriminator)
    if optimizers:
        payload["optimizers"] = {
            name: opt.state_dict() if hasattr(opt, "state_dict") else dict(opt)
            for name, opt in optimizers.items()
        }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint not found: {source}")
    ckpt = torch.load(source, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{source}: expected a dict checkpoint, got {type(ckpt).__name__}")
    missing = [k for k in ("profile", "detector", "generator") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{source}: checkpoint lacks keys {missing} (has {sorted(ckpt)})")
    for key in ("detector", "generator"):
        if not isinstance(ckpt[key], Mapping):
            raise CheckpointError(f"{source}: {key!r} must be a state dict, got {type(ckpt[key]).__name__}")
    get_profile(ckpt["profile"])
    return ckpt


@dataclass(frozen=True)
class LoadedModels:
    """Networks rebuilt from a checkpoint, in eval mode on CPU."""

    profile: ModelProfile
    detector: MaskRegionDetector
    generator: FMODRGenerator
    discriminator: GlobalMaskedDiscriminator | None
    checkpoint: dict[str, Any]


def load_models(path: str | os.PathLike[str], profile: str | None = None) -> LoadedModels:
    """Rebuild the networks of a checkpoint; ``profile`` (optional) must agree with the stored one."""
    ckpt = load_checkpoint(path)
    if profile is not None and profile != ckpt["profile"]:
        raise CheckpointError(
            f"--profile {profile!r} does not match the checkpoint's profile {ckpt['profile']!r}"
        )
    prof = get_profile(ckpt["profile"])
    detector, generator = build_detector(prof), build_generator(prof)
    detector.load_state_dict(ckpt["detector"])
    generator.load_state_dict(ckpt["generator"])
    discriminator = None
    if "discriminator" in ckpt:
        discriminator = build_discriminator(prof)
        discriminator.load_state_dict(ckpt["discriminator"])
        discriminator.eval()
    return LoadedModels(prof, detector.eval(), generator.eval(), discriminator, ckpt)


# ----------------------------------------------------------------------------------------------- export
class DetectorForExport(nn.Module):
    """``image`` -> ``mask`` probability."""

    def __init__(self, detector: MaskRegionDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.detector.probabilities(image)


class GeneratorForExport(nn.Module):
    """(``image``, ``mask``) -> ``restored`` (the refined output)."""

    def __init__(self, generator: FMODRGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.generator(image, mask).refined


class PriorGeneratorForExport(GeneratorForExport):
    """(``image``, ``mask``, ``prior``) -> ``restored``, for profiles whose generator takes the face prior.

    A class of its own rather than an optional argument: ONNX and torch.export trace one signature."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.generator(image, mask, prior).refined


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_models` wrote and how closely each file matched eager torch."""

    out_dir: Path
    files: tuple[Path, ...]
    profile: str
    opset: int
    max_abs_diff: dict[str, float]

    def summary(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        return f"exported profile {self.profile!r} (opset {self.opset}) to {self.out_dir}; max |diff| vs torch: {diffs}"


def git_revision() -> str:
    """``git rev-parse HEAD`` of this checkout, or "" where git or the repository is unavailable."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def sample_inputs(
    profile: ModelProfile, batch: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random image (batch, 3, S, S) in [0, 1], a random rectangular 0/1 hole per sample, and a random
    prior image (batch, 3, S, S) in [0, 1]; callers take the first ``len(inputs)``."""
    gen = torch.Generator().manual_seed(seed)
    size = profile.crop_size
    image = torch.rand(batch, 3, size, size, generator=gen)
    mask = torch.zeros(batch, 1, size, size)
    for i in range(batch):
        top, left = (int(v) for v in torch.randint(0, size // 2, (2,), generator=gen))
        height, width = (int(v) for v in torch.randint(size // 8, size // 2, (2,), generator=gen))
        mask[i, :, top : top + height, left : left + width] = 1.0
    prior = torch.rand(batch, 3, size, size, generator=gen)
    return image, mask, prior


def _export_onnx(
    model: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: Sequence[str],
    output: str,
    opset: int,
) -> None:
    dynamic = {name: {0: "batch"} for name in (*inputs, output)}
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated and that shapes are traced; both are expected.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(inputs),
            output_names=[output],
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )


def _attach_metadata(path: Path, info: ModelInfo) -> None:
    import onnx

    model = onnx.load(str(path))
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _export_program(
    model: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: Sequence[str], info: ModelInfo
) -> None:
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    program = torch.export.export(model, args, dynamic_shapes={name: {0: batch} for name in inputs})
    torch.export.save(program, str(path), extra_files={PT2_EXTRA_FILE: info.to_json()})
    # The torch backends load only a .pt2 whose sha256 is listed beside it (engines.model_digest).
    write_digests([path])


def _max_diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a_np = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    b_np = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    if a_np.shape != b_np.shape:
        raise ExportError(f"exported output shape {b_np.shape} differs from torch's {a_np.shape}")
    return float(np.abs(a_np.astype(np.float64) - b_np.astype(np.float64)).max())


def _verify(
    model: nn.Module, onnx_path: Path, pt2_path: Path, profile: ModelProfile, inputs: Sequence[str]
) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    program = torch.export.load(str(pt2_path)).module()
    diffs: dict[str, float] = {}
    for batch in CHECK_BATCHES:
        args = sample_inputs(profile, batch, seed=batch)[: len(inputs)]
        with torch.no_grad():
            expected = model(*args)
            from_program = program(*args)
        (from_onnx,) = session.run(None, {name: t.numpy() for name, t in zip(inputs, args, strict=True)})
        diffs[f"{onnx_path.name}[batch={batch}]"] = _max_diff(expected, from_onnx)
        diffs[f"{pt2_path.name}[batch={batch}]"] = _max_diff(expected, from_program)
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise ExportError(f"exported model disagrees with torch beyond {TOLERANCE}: {bad}")
    return diffs


def export_models(
    checkpoint_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    opset: int = 17,
    *,
    profile: str | None = None,
) -> ExportReport:
    """Export detector and generator of a checkpoint to ``out_dir`` (ONNX + .pt2) and verify them."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    models = load_models(checkpoint_path, profile)
    ckpt, prof = models.checkpoint, models.profile
    destination = Path(out_dir)
    destination.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {
        "crop_size": prof.crop_size,
        "profile": prof.name,
        "perceptual_backbone": str(ckpt.get("perceptual_backbone", "")),
        "training_data": str(ckpt.get("training_data", "")),
        "iterations": int(ckpt.get("step", 0)),
        "git_revision": git_revision(),
    }
    extra = {
        "opset": opset,
        "stage": str(ckpt.get("stage", "")),
        "attention": prof.attention,
        "prior_input": prof.prior_input,
    }
    generator_job = (
        (
            "generator",
            PriorGeneratorForExport(models.generator).eval(),
            ("image", "mask", "prior"),
            "restored",
        )
        if prof.prior_input
        else ("generator", GeneratorForExport(models.generator).eval(), ("image", "mask"), "restored")
    )
    jobs: list[tuple[str, nn.Module, tuple[str, ...], str]] = [
        ("detector", DetectorForExport(models.detector).eval(), ("image",), "mask"),
        generator_job,
    ]
    files: list[Path] = []
    diffs: dict[str, float] = {}
    for role, wrapper, inputs, output in jobs:
        info = ModelInfo(role=role, extra=extra, **common)
        # Batch 2 as the example: torch.export specialises sizes 0 and 1, which would pin the batch.
        example = sample_inputs(prof, 2)[: len(inputs)]
        onnx_path, pt2_path = destination / f"{role}.onnx", destination / f"{role}.pt2"
        with torch.no_grad():
            _export_onnx(wrapper, example, onnx_path, inputs, output, opset)
        _attach_metadata(onnx_path, info)
        _export_program(wrapper, example, pt2_path, inputs, info)
        diffs.update(_verify(wrapper, onnx_path, pt2_path, prof, inputs))
        files += [onnx_path, pt2_path]
        logger.info("exported %s to %s and %s", role, onnx_path, pt2_path)
    return ExportReport(destination, tuple(files), prof.name, opset, diffs)


def read_onnx_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The :class:`ModelInfo` stored in an exported ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelInfo.from_json(prop.value)
    raise ExportError(f"{path}: no {METADATA_KEY!r} metadata")


def read_program_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The :class:`ModelInfo` stored in an exported ``.pt2`` program."""
    extra = {PT2_EXTRA_FILE: ""}
    torch.export.load(str(path), extra_files=extra)
    if not extra[PT2_EXTRA_FILE]:
        raise ExportError(f"{path}: no {PT2_EXTRA_FILE} extra file")
    return ModelInfo.from_json(extra[PT2_EXTRA_FILE])


# ----------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export a FMODR checkpoint's detector and generator to ONNX and torch.export (.pt2), "
        "with deocclude metadata, and check them against torch.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint written by training")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--profile", default=None, help="expected model profile (must match the checkpoint)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17, default 17)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = export_models(args.checkpoint, args.out, args.opset, profile=args.profile)
    except (OSError, ValueError, ExportError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
