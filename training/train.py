"""Train the FMODR detector and generator: ``python -m training.train --config X.yaml [--resume [CKPT]] [--out runs/NAME]``.

A run directory holds ``config.yaml`` (as resolved), ``losses.jsonl`` (one JSON object per logged step),
``samples/step_NNNNNNN.png`` (rows: occluded | mask | coarse | refined | target, coarse and refined
composited inside the hole), ``checkpoints/step_NNNNNNN.pt`` + ``checkpoints/latest.pt`` (+ ``.rng.pt``
with torch's RNG state), and at the end ``export/`` (ONNX + .pt2 via :func:`training.export.export_models`).

Resume restores networks, optimisers, the step (hence the phase of the schedule) and RNG state. The data
stream needs no saved state: sample ``k`` is a pure function of ``(seed, k)`` and a resumed run starts at
``k = step * batch_size``. Ctrl-C saves a checkpoint and exits cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.config import ConfigError, DataSource, TrainConfig, load_config
from training.data.datasets import (
    FaceFolderDataset,
    FMORDataset,
    ManifestFaceDataset,
    MixedTrainingSet,
    StepSampler,
    SyntheticOcclusionDataset,
    VideoFramesDataset,
)
from training.data.faces import FaceDataError, read_manifest, split_by_person
from training.data.prior_guided import PriorGuide, PriorGuidedDataset
from training.export import export_models, load_checkpoint, save_checkpoint
from training.models import composite
from training.trainer import StepResult, Trainer, pick_device

log = logging.getLogger("training.train")
SAMPLE_ROWS = 6


def build_source(
    src: DataSource, config: TrainConfig, *, augment: bool = True
) -> SyntheticOcclusionDataset | FMORDataset:
    """The dataset of one configured source (faces aligned once, here)."""
    size = config_crop(config)
    path = src.resolved
    if not path.exists():
        raise FaceDataError(f"data source {src.kind} path not found: {src.path} (resolved to {path})")
    aug = config.data.augment if augment else None
    synth, seed = config.data.synthesis, config.seed
    if src.kind in ("faces", "aligned"):
        return FaceFolderDataset(path, size, seed, synth, aug, aligned=src.kind == "aligned", every_n=src.every_n,
                                 max_frames_per_video=src.max_frames_per_video)  # fmt: skip
    if src.kind == "manifest":
        return ManifestFaceDataset(path, size, src.split, src.holdout_fraction, src.split_seed, seed, synth, aug,
                                   use_sources=src.use_sources)  # fmt: skip
    if src.kind == "video":
        return VideoFramesDataset(
            [path], src.every_n, size, seed, synth, aug, max_frames_per_video=src.max_frames_per_video
        )
    return FMORDataset(path, size, augment=aug, seed=seed)


def config_crop(config: TrainConfig) -> int:
    from training.models import get_profile

    return get_profile(config.profile).crop_size


def held_out_people(config: TrainConfig) -> set[str]:
    """People of every manifest's validation split (train and val sources alike): never trained on."""
    people: set[str] = set()
    for src in (*config.data.sources, *config.data.val_sources):
        if src.kind == "manifest":
            people |= set(
                split_by_person(read_manifest(src.resolved), src.holdout_fraction, src.split_seed).val_people
            )
    return people


def prior_guide(config: TrainConfig) -> PriorGuide | None:
    """The per-sample prior maker for profiles whose generator takes the face prior, else None."""
    if not config.prior_model:
        return None
    path = Path(config.prior_model).expanduser().resolve()
    if not path.is_file():
        raise FaceDataError(f"prior_model not found: {config.prior_model} (resolved to {path})")
    return PriorGuide(path, config.hole_threshold)


def warm_start(trainer: Trainer, path: str) -> None:
    """Load detector and generator weights from ``path`` (a checkpoint or a weights.pt) into ``trainer``.

    Tensors of the same shape are copied; a generator input layer that gained channels (the prior's) keeps
    the old input channels and starts the new ones at zero; a layer only the new profile has keeps its
    initial value. Anything else that differs is an error.
    """
    source = load_checkpoint(Path(path).expanduser(), map_location="cpu")
    for name in ("detector", "generator"):
        module = getattr(trainer, name)
        own = module.state_dict()
        theirs = source[name]
        unknown = sorted(set(theirs) - set(own))
        if unknown:
            raise ConfigError(f"init_from {path}: {name} has layers this profile lacks ({unknown[:4]} ...)")
        merged = {}
        for key, value in own.items():
            if key not in theirs:  # a layer the new profile adds (the prior's gate): keep its initial value
                merged[key] = value
                log.info("init_from: %s.%s is new, kept at its initial value", name, key)
                continue
            old = theirs[key]
            if old.shape == value.shape:
                merged[key] = old
            elif old.ndim == 4 and old.shape[0] == value.shape[0] and old.shape[1] < value.shape[1]:
                grown = torch.zeros_like(value)
                grown[:, : old.shape[1]] = old
                merged[key] = grown
                log.info("init_from: %s.%s grows from %d to %d input channels (new ones at zero)",
                         name, key, old.shape[1], value.shape[1])  # fmt: skip
            else:
                raise ConfigError(
                    f"init_from {path}: {name}.{key} is {tuple(old.shape)}, need {tuple(value.shape)}"
                )
        module.load_state_dict(merged)
    log.info(
        "warm start: detector and generator from %s (profile %s, step %s)",
        path,
        source.get("profile"),
        source.get("step"),
    )


def build_training_set(config: TrainConfig) -> tuple[Dataset[dict[str, torch.Tensor]], str]:
    sources = [build_source(s, config) for s in config.data.sources]
    held = held_out_people(config)
    for src, ds in zip(config.data.sources, sources, strict=True):
        if (
            held
            and isinstance(ds, SyntheticOcclusionDataset)
            and (src.kind != "manifest" or src.split == "train")
        ):
            dropped = ds.exclude_people(held)
            if dropped:
                log.info("excluded %d faces of held-out people from %s", dropped, src.path)
    weights = None
    if any(s.weight is not None for s in config.data.sources):
        weights = [
            s.weight if s.weight is not None else float(len(d))
            for s, d in zip(config.data.sources, sources, strict=True)
        ]
    description = "; ".join(
        f"{s.kind}:{s.path} ({len(d)} items)" for s, d in zip(config.data.sources, sources, strict=True)
    )
    for s, d in zip(config.data.sources, sources, strict=True):
        people = getattr(d, "people", None)
        log.info(
            "data source %s %s: %d items%s",
            s.kind,
            s.path,
            len(d),
            f", {len(people)} people" if people else "",
        )
    mixed = MixedTrainingSet(sources, weights, seed=config.seed)
    guide = prior_guide(config)
    if guide is None:
        return mixed, description
    return PriorGuidedDataset(mixed, guide), f"{description}; face prior {config.prior_model}"


def fixed_batch(
    config: TrainConfig, train_set: Dataset[dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], str]:
    """A fixed batch for sample grids: from the validation sources if any, else the first training items."""
    items: list[dict[str, torch.Tensor]] = []
    origin = "train"
    if config.data.val_sources:
        guide = prior_guide(config)
        for src in config.data.val_sources:
            ds = build_source(src, config, augment=False)
            for i in range(min(len(ds), SAMPLE_ROWS - len(items))):
                items.append(ds[i] if guide is None else guide(ds[i]))
        origin = "val"
    if not items:
        items = [train_set[k] for k in range(SAMPLE_ROWS)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}, origin


def sample_grid(batch: dict[str, torch.Tensor], result: StepResult) -> np.ndarray:
    """(rows*S, 5*S, 3) uint8 RGB: occluded | mask | coarse | refined | target per row; with a face prior,
    the prior's guide image stands between mask and coarse (6 columns)."""
    image, target, mask = batch["image"], batch["target"], batch["mask"]
    hole = (mask > 0.05).float()
    coarse = composite(image, hole, result.coarse.cpu())
    refined = composite(image, hole, result.refined.cpu())
    guide = [batch["prior"]] if "prior" in batch else []
    cols = [image, mask.expand_as(image), *guide, coarse, refined, target]
    rows = [torch.cat([c[i] for c in cols], dim=2) for i in range(image.shape[0])]
    grid = torch.cat(rows, dim=1).clamp(0, 1).permute(1, 2, 0).numpy()
    return (grid * 255 + 0.5).astype(np.uint8)


class Run:
    """A training run in ``out``: checkpoints, logs and samples."""

    def __init__(self, config: TrainConfig, out: Path, device: torch.device) -> None:
        self.config = config
        self.out = out
        self.device = device
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
        torch.manual_seed(config.seed)  # network initialisation; the data has its own seeded stream
        self.trainer = Trainer(config, device)
        if config.init_from:
            warm_start(self.trainer, config.init_from)
        self.step = 0
        self.training_data = ""

    def save(self, tag: str) -> Path:
        lam = self.config.schedule.at(max(self.step - 1, 0))
        path = save_checkpoint(
            self.out / "checkpoints" / f"{tag}.pt",
            profile=self.config.profile,
            detector=self.trainer.detector,
            generator=self.trainer.generator,
            discriminator=self.trainer.discriminator,
            optimizers=self.trainer.state(),
            step=self.step,
            stage=lam.stage,
            config=self.config.to_dict(),
            perceptual_backbone=self.trainer.perceptual.backbone_name,
            training_data=self.training_data,
        )
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = (
                torch.stack(torch.cuda.get_rng_state_all()) if torch.cuda.device_count() else torch.empty(0)
            )
        torch.save(rng, path.with_suffix(".rng.pt"))
        latest = self.out / "checkpoints" / "latest.pt"
        if path != latest:
            shutil.copyfile(path, latest)
            shutil.copyfile(path.with_suffix(".rng.pt"), latest.with_suffix(".rng.pt"))
        return path

    def resume(self, checkpoint: Path) -> None:
        ckpt = load_checkpoint(checkpoint, map_location=self.device)
        if ckpt["profile"] != self.config.profile:
            raise ConfigError(
                f"checkpoint {checkpoint} is profile {ckpt['profile']!r}, config says {self.config.profile!r}"
            )
        self.trainer.load_state(ckpt)
        self.step = int(ckpt.get("step", 0))
        rng_file = checkpoint.with_suffix(".rng.pt")
        if rng_file.is_file():
            rng = torch.load(rng_file, weights_only=True)
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]):
                torch.cuda.set_rng_state_all(list(rng["cuda"]))
        log.info("resumed from %s at step %d (%s)", checkpoint, self.step, ckpt.get("stage", ""))

    def train(self) -> Path:
        """Runs to the config's total step count; returns the final checkpoint."""
        cfg = self.config
        total = cfg.total_steps
        train_set, self.training_data = build_training_set(cfg)
        samples, origin = fixed_batch(cfg, train_set)
        log.info("sample grid rows come from the %s set", origin)
        loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            sampler=StepSampler(self.step * cfg.batch_size, total * cfg.batch_size),
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # mediapipe's graph (the face prior's mesh) does not survive a fork of a process that has
            # used it (heap corruption in the worker): workers start fresh when the prior is on.
            multiprocessing_context="spawn" if cfg.prior_model and cfg.num_workers > 0 else None,
        )
        log_path = self.out / "losses.jsonl"
        progress = tqdm(total=total, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        tick = time.perf_counter()
        try:
            with log_path.open("a", encoding="utf-8") as log_file:
                for batch in loader:
                    lambdas = cfg.schedule.at(self.step)
                    result = self.trainer.step(batch, lambdas)
                    self.step += 1
                    progress.update(1)
                    if self.step % cfg.log_every == 0 or self.step == total:
                        now = time.perf_counter()
                        record: dict[str, Any] = {"step": self.step, "stage": lambdas.stage, **result.losses}
                        record["sec_per_step"] = (now - tick) / cfg.log_every
                        tick = now
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                        progress.set_postfix(
                            {k: f"{v:.3g}" for k, v in result.losses.items() if k in ("det", "gen", "disc")}
                        )
                    if self.step % cfg.sample_every == 0 or self.step == total:
                        self.write_samples(samples, log_file)
                    if self.step % cfg.checkpoint_every == 0 and self.step != total:
                        self.save(f"step_{self.step:07d}")
        except KeyboardInterrupt:
            progress.close()
            path = self.save(f"step_{self.step:07d}")
            log.warning(
                "interrupted at step %d; checkpoint saved to %s (resume with --resume)", self.step, path
            )
            raise
        progress.close()
        final = self.save("final")
        log.info("finished %d steps; final checkpoint %s", self.step, final)
        return final

    def write_samples(self, samples: dict[str, torch.Tensor], log_file: Any) -> None:
        result = self.trainer.predict(samples)
        grid = sample_grid(samples, result)
        cv2.imwrite(
            str(self.out / "samples" / f"step_{self.step:07d}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)
        )
        log_file.write(json.dumps({"step": self.step, "eval": True, **result.losses}) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train the FMODR face-mask region detector and coarse-to-refine generator with the paper's "
        "staged schedule; writes checkpoints, losses.jsonl, sample grids and an ONNX export.",
    )
    parser.add_argument(
        "--config", required=True, type=Path, help="YAML training config (see training/configs/)"
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<config name>)")
    parser.add_argument(
        "--resume", nargs="?", const="latest", default=None, metavar="CKPT",
        help="resume from CKPT, or from OUT/checkpoints/latest.pt when given without a value",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1"
    )
    parser.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps (overrides the config)"
    )
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX/.pt2 export at the end")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if args.max_steps is not None or args.no_export:
            from dataclasses import replace

            config = replace(
                config,
                max_steps=args.max_steps or config.max_steps,
                export=config.export and not args.no_export,
            )
        out = args.out or Path("runs") / args.config.stem
        device = pick_device(args.device)
        log.info(
            "device: %s%s",
            device,
            f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "",
        )
        run = Run(config, out, device)
        (out / "config.yaml").write_text(
            yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False)
        )
        if args.resume is not None:
            ckpt = out / "checkpoints" / "latest.pt" if args.resume == "latest" else Path(args.resume)
            run.resume(ckpt)
        if run.step >= config.total_steps:
            log.info("checkpoint is already at step %d of %d: nothing to train", run.step, config.total_steps)
            final = run.save("final")
        else:
            final = run.train()
        if config.export:
            report = export_models(final, out / "export")
            log.info("%s", report.summary())
    except KeyboardInterrupt:
        return 130
    except (ConfigError, FaceDataError, FileNotFoundError, ValueError) as exc:
        print(f"training failed: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
