"""Checkpoint -> ONNX / torch.export round trip for the tiny profile, compared with eager torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engines.base import METADATA_KEY, ModelInfo
from training.export import (
    PT2_EXTRA_FILE,
    CheckpointError,
    ExportError,
    ExportReport,
    _verify,
    export_models,
    load_checkpoint,
    load_models,
    main,
    read_onnx_info,
    read_program_info,
    sample_inputs,
    save_checkpoint,
)
from training.models import build_detector, build_discriminator, build_generator, get_profile

TINY = get_profile("tiny")


@dataclass(frozen=True)
class _Config:
    lr: float = 1.5e-5
    data: Path = Path("/data/faces")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportReport]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("export")
    generator = build_generator(TINY)
    # Move the weights off their initial values so the check is not on a trivial network.
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    detector, discriminator = build_detector(TINY), build_discriminator(TINY)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3)
    ckpt = save_checkpoint(
        root / "ckpt" / "step_42.pt",
        profile="tiny",
        detector=detector,
        generator=generator,
        discriminator=discriminator,
        optimizers={"generator": optimizer},
        step=42,
        stage="refine_joint",
        config=_Config(),
        perceptual_backbone="random-vgg16 (untrained, tests only)",
        training_data="synthetic test faces x2",
    )
    report = export_models(ckpt, root / "out", opset=17)
    return ckpt, report


def test_checkpoint_round_trip(exported: tuple[Path, ExportReport]) -> None:
    ckpt_path, _ = exported
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["profile"] == "tiny" and ckpt["step"] == 42 and ckpt["stage"] == "refine_joint"
    assert ckpt["config"] == {"lr": 1.5e-5, "data": "/data/faces"}
    assert "generator" in ckpt["optimizers"] and "discriminator" in ckpt
    models = load_models(ckpt_path)
    assert models.discriminator is not None and not models.generator.training
    with pytest.raises(CheckpointError, match="does not match"):
        load_models(ckpt_path, profile="small")


def test_bad_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")
    torch.save({"profile": "tiny", "detector": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="generator"):
        load_checkpoint(tmp_path / "partial.pt")
    torch.save({"profile": "enormous", "detector": {}, "generator": {}}, tmp_path / "profile.pt")
    with pytest.raises(ValueError, match="valid profiles"):
        load_checkpoint(tmp_path / "profile.pt")


def test_report_lists_files_and_small_differences(exported: tuple[Path, ExportReport]) -> None:
    _, report = exported
    names = sorted(p.name for p in report.files)
    assert names == ["detector.onnx", "detector.pt2", "generator.onnx", "generator.pt2"]
    assert all(p.is_file() for p in report.files)
    assert len(report.max_abs_diff) == 8 and max(report.max_abs_diff.values()) <= 1e-3
    assert "tiny" in report.summary()


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(exported: tuple[Path, ExportReport], batch: int) -> None:
    ckpt_path, report = exported
    models = load_models(ckpt_path)
    image, mask, _ = sample_inputs(TINY, batch, seed=100 + batch)
    with torch.no_grad():
        expected_restored = models.generator(image, mask).refined.numpy()
        expected_mask = torch.sigmoid(models.detector(image)).numpy()
    gen = ort.InferenceSession(str(report.out_dir / "generator.onnx"), providers=["CPUExecutionProvider"])
    det = ort.InferenceSession(str(report.out_dir / "detector.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in gen.get_inputs()] == ["image", "mask"]
    assert [o.name for o in gen.get_outputs()] == ["restored"]
    assert gen.get_inputs()[0].shape == ["batch", 3, TINY.crop_size, TINY.crop_size]
    assert [o.name for o in det.get_outputs()] == ["mask"]
    (restored,) = gen.run(None, {"image": image.numpy(), "mask": mask.numpy()})
    (probability,) = det.run(None, {"image": image.numpy()})
    assert restored.shape == (batch, 3, TINY.crop_size, TINY.crop_size)
    assert np.abs(restored - expected_restored).max() <= 1e-3
    assert np.abs(probability - expected_mask).max() <= 1e-3


def test_metadata_round_trip(exported: tuple[Path, ExportReport]) -> None:
    _, report = exported
    for role in ("detector", "generator"):
        model = onnx.load(str(report.out_dir / f"{role}.onnx"))
        raw = {p.key: p.value for p in model.metadata_props}[METADATA_KEY]
        info = ModelInfo.from_json(raw)
        assert info == read_onnx_info(report.out_dir / f"{role}.onnx")
        assert info == read_program_info(report.out_dir / f"{role}.pt2")
        assert (info.role, info.crop_size, info.profile, info.value_range) == (role, 64, "tiny", "rgb01")
        assert info.iterations == 42 and info.training_data == "synthetic test faces x2"
        assert info.perceptual_backbone.startswith("random-vgg16")
        assert info.extra["opset"] == 17 and info.extra["stage"] == "refine_joint"
        assert isinstance(info.git_revision, str)


def test_program_loads_and_matches_with_dynamic_batch(exported: tuple[Path, ExportReport]) -> None:
    ckpt_path, report = exported
    models = load_models(ckpt_path)
    extra = {PT2_EXTRA_FILE: ""}
    program = torch.export.load(str(report.out_dir / "generator.pt2"), extra_files=extra).module()
    assert ModelInfo.from_json(extra[PT2_EXTRA_FILE]).role == "generator"
    for batch in (1, 3):
        image, mask, _ = sample_inputs(TINY, batch, seed=7)
        with torch.no_grad():
            assert torch.allclose(program(image, mask), models.generator(image, mask).refined, atol=1e-5)


def test_disagreeing_model_fails_loudly(exported: tuple[Path, ExportReport]) -> None:
    _, report = exported
    other = build_detector(TINY).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    from training.export import DetectorForExport

    with pytest.raises(ExportError, match="disagrees"):
        _verify(
            DetectorForExport(other),
            report.out_dir / "detector.onnx",
            report.out_dir / "detector.pt2",
            TINY,
            ("image",),
        )


def test_cli_help_and_readable_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "--checkpoint" in capsys.readouterr().out
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
