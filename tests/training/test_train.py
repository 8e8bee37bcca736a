"""Training config, the staged schedule, one training step, and the training CLI end to end (tiny profile)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from tests.training.test_data import write_faces
from training.config import (
    ConfigError,
    DataConfig,
    DataSource,
    Phase,
    Schedule,
    config_from_dict,
    load_config,
)
from training.data.augment import AugmentConfig
from training.data.datasets import FaceFolderDataset
from training.export import load_checkpoint
from training.train import main
from training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "training" / "configs" / "tiny.yaml"


def tiny_config_file(tmp_path: Path, **overrides: object) -> Path:
    """tiny.yaml with its data pointed at synthetic aligned faces written under ``tmp_path``."""
    faces = tmp_path / "faces"
    if not faces.exists():
        write_faces(faces, 6, 64)
    raw = yaml.safe_load(TINY.read_text())
    raw["data"]["sources"] = [{"kind": "aligned", "path": str(faces)}]
    raw.update(overrides)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_configs_load() -> None:
    for name in ("tiny", "small", "full"):
        cfg = load_config(REPO / "training" / "configs" / f"{name}.yaml")
        assert cfg.profile == name
    full = load_config(REPO / "training" / "configs" / "full.yaml")
    assert full.lr == 1.5e-5 and full.total_steps == 111_000  # the paper's numbers


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY.read_text())
    raw["learning_rate"] = 0.1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(bad)
    raw = yaml.safe_load(TINY.read_text())
    raw["data"]["synthesis"]["colour"] = "blue"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="data.synthesis: unknown keys \\['colour'\\]"):
        load_config(bad)
    with pytest.raises(ConfigError, match="sets \\['lambda3'\\]"):
        config_from_dict({"profile": "tiny", "data": {"sources": [{"kind": "aligned", "path": "x"}]},
                          "schedule": {"coarse": [{"name": "c", "iterations": 1, "lambda3": 1.0}]}})  # fmt: skip


def test_paper_schedule_runs_coarse_and_refine_in_parallel() -> None:
    sched = Schedule()
    assert sched.total_steps == 111_000
    first = sched.at(0)
    assert (first.lambda1, first.lambda2, first.lambda5, first.lambda3, first.lambda4) == (1, 0, 1, 0, 0)
    warm = sched.at(10_500)
    assert warm.coarse_phase == "coarse_disc" and warm.refine_phase == "refine_disc"
    assert not warm.update_coarse and not warm.update_refine and warm.train_discriminator
    joint = sched.at(20_000)
    assert (joint.lambda1, joint.lambda2, joint.lambda4, joint.lambda5) == (1, 0.05, 0.1, 0.5)
    late = sched.at(50_000)  # the coarse list has run out and holds its last phase
    assert late.coarse_phase == "coarse_joint" and late.refine_phase == "refine_final"
    assert (late.lambda3, late.lambda4, late.lambda5) == (1, 0.1, 0)
    with pytest.raises(ValueError):
        Phase("x", 0)


def _fixed_batch(tmp_path: Path) -> dict[str, torch.Tensor]:
    write_faces(tmp_path / "faces", 4, 64)
    ds = FaceFolderDataset(tmp_path / "faces", 64, seed=0, augment=AugmentConfig.none(), aligned=True)
    items = [ds[i] for i in range(4)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_loss_goes_down_on_a_fixed_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = load_config(tiny_config_file(tmp_path))
    cfg = replace(cfg, lr=1e-2, data=DataConfig(sources=(DataSource("aligned", str(tmp_path / "faces")),)))
    trainer = Trainer(cfg, torch.device("cpu"))
    batch = _fixed_batch(tmp_path)
    lambdas = cfg.schedule.at(0)  # reconstruction phases of both halves
    history = [trainer.step(batch, lambdas).losses for _ in range(15)]
    for key, factor in (("det", 0.8), ("rec_coarse", 0.8), ("gen", 0.9)):
        start = sum(h[key] for h in history[:2]) / 2
        end = sum(h[key] for h in history[-2:]) / 2
        assert end < factor * start, f"{key}: {start:.4f} -> {end:.4f}"


def test_tiny_config_trains_end_to_end_and_exports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["--config", str(tiny_config_file(tmp_path)), "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "losses.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if not r.get("eval")]
    assert steps == list(range(1, 9))  # tiny schedule: 8 steps in both lists, logged every step
    stages = {r["stage"] for r in records if "stage" in r}
    assert "coarse_disc|refine_disc" in stages and "coarse_joint|refine_final" in stages
    assert any("perceptual" in r for r in records) and any("disc" in r for r in records)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000005.png", "step_0000008.png"]
    ckpt = load_checkpoint(out / "checkpoints" / "final.pt")
    assert ckpt["step"] == 8 and ckpt["profile"] == "tiny" and "random-vgg16" in ckpt["perceptual_backbone"]
    for name in ("detector.onnx", "generator.onnx"):
        assert (out / "export" / name).stat().st_size > 1000


def test_resume_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    cfg = tiny_config_file(tmp_path, export=False, checkpoint_every=3)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["--config", str(cfg), "--out", str(straight), "--max-steps", "6"]) == 0
    assert main(["--config", str(cfg), "--out", str(split), "--max-steps", "3"]) == 0
    assert load_checkpoint(split / "checkpoints" / "latest.pt")["step"] == 3
    assert main(["--config", str(cfg), "--out", str(split), "--max-steps", "6", "--resume"]) == 0
    assert load_checkpoint(split / "checkpoints" / "final.pt")["step"] == 6

    def losses(run: Path) -> dict[int, dict[str, float]]:
        rows = [json.loads(line) for line in (run / "losses.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in rows if not r.get("eval")}

    a, b = losses(straight), losses(split)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):  # same data, same weights and optimiser state after resuming
        for key in ("det", "rec_coarse", "rec_refined"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-4, abs=1e-6)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = Trainer.step

    def interrupted(self: Trainer, batch: dict[str, torch.Tensor], lambdas: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, batch, lambdas)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "step", interrupted)
    out = tmp_path / "run"
    assert main(["--config", str(tiny_config_file(tmp_path, export=False)), "--out", str(out)]) == 130
    assert load_checkpoint(out / "checkpoints" / "latest.pt")["step"] == 2


def test_cli_turns_bad_config_into_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
