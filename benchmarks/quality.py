"""Restoration quality on an FMOR-layout data set: our detector + generator against OpenCV inpainting.

Usage::

    python -m benchmarks.quality --dataset DIR --json out.json [--models DIR] [--backend auto]
        [--device auto] [--grid out.png] [--limit N] [--batch 8] [--dilate 3]

``DIR`` holds ``A/`` (masked canonical crops), ``B/`` (the same names, unmasked) and optionally
``face-mask/`` (same names, white = mask region). For every image our detector finds the mask
itself (probability >= 0.5); the binary mask, dilated by ``--dilate`` pixels, is what the generator
and the OpenCV Telea / Navier-Stokes baselines (``cv2.inpaint``, radius 3) all get, and every output
is composited ``restored * mask + input * (1 - mask)`` (what the product shows) before scoring
against ``B``. ``masked_input`` scores the unrestored input. Metrics (:mod:`training.metrics`):
PSNR (dB, range 1.0), SSIM, L1 and L2 (fractions, not %) on the full crop, ``psnr_mask`` inside the
ground-truth face-mask (else the detected mask), ``id_cosine`` (SFace, :mod:`training.identity`)
between each output and the clean face, null when the bundled SFace file is missing, and ``lpips``
(ST-LPIPS, :mod:`benchmarks.lpips`, lower is better) of each output to the clean crop, on the full
crop like PSNR, null when torch or the stlpips-pytorch weights are missing.

JSON: ``{"methods": {name: {"psnr", "ssim", "l1", "l2", "psnr_mask", "id_cosine", "lpips"}},
"detector": {"mask_iou"}, "count": n, ...}`` plus provenance and per-image keys. Values are means
over images; per-image PSNR is capped at ``PSNR_CAP_DB`` so one pixel-identical image cannot make the
mean infinite; a metric with no defined value is null.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.lpips import LpipsMetric
from benchmarks.report import json_safe, setup_logging, write_report
from engines.base import Engine
from engines.errors import EngineError
from engines.select import load_engine
from training import metrics
from training.identity import IdentityEmbedder, cosine

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO_ROOT / "models" / "small"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PSNR_CAP_DB = 100.0
INPAINT_RADIUS = 3
METHODS = ("masked_input", "telea", "navier_stokes", "ours")
GRID_COLUMNS = ("masked", "detected mask", "Telea", "NS", "ours", "clean")
GRID_ROWS = 8
GRID_TILE_MAX = 256


class QualityInputError(ValueError):
    """The data set or model directory is missing or not in the expected layout."""


@dataclass(frozen=True)
class QualityConfig:
    dataset: Path
    json_path: Path
    models: Path = DEFAULT_MODELS
    backend: str = "auto"
    device: str = "auto"
    grid_path: Path | None = None
    limit: int | None = None
    batch: int = 8
    dilate_px: int = 3

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.dilate_px < 0:
            raise ValueError(f"dilate_px must be >= 0, got {self.dilate_px}")


@dataclass(frozen=True)
class Sample:
    """One image triple at the model crop size: (S, S, 3) float32 rgb01 images, (S, S) bool mask."""

    name: str
    masked_rgb01: np.ndarray
    clean_rgb01: np.ndarray
    gt_mask: np.ndarray | None
    source_hw: tuple[int, int]


def _find_same_name(folder: Path, name: str) -> Path | None:
    exact = folder / name
    if exact.is_file():
        return exact
    stem = Path(name).stem
    for suffix in IMAGE_SUFFIXES:
        for cand in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


def list_dataset(dataset: Path, limit: int | None = None) -> list[tuple[Path, Path, Path | None]]:
    """(masked, clean, face-mask or None) paths of an FMOR-layout directory, sorted by name."""
    a_dir, b_dir, m_dir = dataset / "A", dataset / "B", dataset / "face-mask"
    if not a_dir.is_dir() or not b_dir.is_dir():
        raise QualityInputError(f"dataset must contain A/ (masked) and B/ (clean) folders: {dataset}")
    names = sorted(p.name for p in a_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise QualityInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {a_dir}")
    if limit is not None:
        names = names[:limit]
    triples = []
    for name in names:
        clean = _find_same_name(b_dir, name)
        if clean is None:
            raise QualityInputError(f"{a_dir / name} has no clean counterpart in {b_dir}")
        gt = _find_same_name(m_dir, name) if m_dir.is_dir() else None
        triples.append((a_dir / name, clean, gt))
    return triples


def _read_rgb_u8(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise QualityInputError(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def _to_size(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    shrink = max(image.shape[:2]) > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def load_sample(masked: Path, clean: Path, gt: Path | None, size: int) -> Sample:
    """Read one triple and resize it to ``size`` (area/linear for images, area + 0.5 cut for masks)."""
    a, b = _read_rgb_u8(masked), _read_rgb_u8(clean)
    if a.shape != b.shape:
        raise QualityInputError(f"{masked} is {a.shape[:2]} but {clean} is {b.shape[:2]}")
    gt_mask = None
    if gt is not None:
        m = cv2.imread(str(gt), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise QualityInputError(f"cannot read face-mask {gt}")
        gt_mask = metrics.binarize(_to_size(m.astype(np.float32) / 255.0, size))
    return Sample(
        name=masked.name,
        masked_rgb01=_to_size(a, size).astype(np.float32) / 255.0,
        clean_rgb01=_to_size(b, size).astype(np.float32) / 255.0,
        gt_mask=gt_mask,
        source_hw=(a.shape[0], a.shape[1]),
    )


def _nchw(images_hwc: Sequence[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(images_hwc).transpose(0, 3, 1, 2), dtype=np.float32)


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """(S, S) bool mask grown by ``px`` pixels with an elliptic kernel."""
    if px == 0:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def opencv_inpaint(image_rgb01: np.ndarray, mask: np.ndarray, method: int) -> np.ndarray:
    """cv2.inpaint (radius 3) of an rgb01 (S, S, 3) image inside an (S, S) bool mask -> float32 rgb01."""
    u8 = np.clip(np.rint(image_rgb01 * 255.0), 0, 255).astype(np.uint8)
    out = cv2.inpaint(u8, mask.astype(np.uint8) * 255, INPAINT_RADIUS, method)
    return out.astype(np.float32) / 255.0


def composite(restored_rgb01: np.ndarray, input_rgb01: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """restored * mask + input * (1 - mask), with an (S, S) bool or [0, 1] mask."""
    m = mask.astype(np.float32)[..., None]
    return restored_rgb01 * m + input_rgb01 * (1.0 - m)


def _cap(psnr_db: float) -> float:
    """Cap +inf (pixel-identical) at PSNR_CAP_DB; NaN (empty region) stays NaN."""
    return PSNR_CAP_DB if psnr_db > PSNR_CAP_DB else psnr_db


def score(output_rgb01: np.ndarray, clean_rgb01: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """Full-crop PSNR (capped), SSIM, L1, L2 and PSNR inside ``region`` (nan if empty) of one output."""
    return {
        "psnr": _cap(metrics.psnr(output_rgb01, clean_rgb01)),
        "ssim": metrics.ssim(output_rgb01, clean_rgb01),
        "l1": metrics.l1(output_rgb01, clean_rgb01),
        "l2": metrics.l2(output_rgb01, clean_rgb01),
        "psnr_mask": _cap(metrics.psnr_masked(output_rgb01, clean_rgb01, region)),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _load_one(path: Path, kwargs: dict[str, Any]) -> Engine:
    try:
        return load_engine(path, **kwargs)
    except EngineError:
        raise
    except ValueError as exc:  # e.g. a backend that cannot run on the requested device
        raise QualityInputError(f"cannot load {path}: {exc}") from exc


def _load_models(config: QualityConfig) -> tuple[Engine, Engine]:
    paths = {role: config.models / f"{role}.onnx" for role in ("detector", "generator")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise QualityInputError(
            f"model files missing: {', '.join(missing)} (expected DIR/detector.onnx, DIR/generator.onnx)"
        )
    kwargs: dict[str, Any] = {"backend": config.backend, "device": config.device, "max_batch": config.batch}
    detector = _load_one(paths["detector"], kwargs)
    try:
        generator = _load_one(paths["generator"], kwargs)
    except BaseException:
        detector.close()
        raise
    if detector.info.crop_size != generator.info.crop_size:
        detector.close()
        generator.close()
        raise QualityInputError(
            f"detector crop {detector.info.crop_size} != generator crop {generator.info.crop_size}"
        )
    return detector, generator


def _evaluate_batch(
    samples: Sequence[Sample], detector: Engine, generator: Engine, dilate_px: int
) -> list[dict[str, Any]]:
    """Per-image masks, outputs of every method (composited) for one batch."""
    images = _nchw([s.masked_rgb01 for s in samples])
    prob = np.asarray(detector.run({"image": images})["mask"], dtype=np.float32)[:, 0]
    detected = prob >= metrics.MASK_THRESHOLD
    used = np.stack([dilate(d, dilate_px) for d in detected])
    restored = np.asarray(
        generator.run({"image": images, "mask": used[:, None].astype(np.float32)})["restored"],
        dtype=np.float32,
    ).transpose(0, 2, 3, 1)
    results = []
    for i, s in enumerate(samples):
        x = s.masked_rgb01
        outputs = {
            "masked_input": x,
            "telea": composite(opencv_inpaint(x, used[i], cv2.INPAINT_TELEA), x, used[i]),
            "navier_stokes": composite(opencv_inpaint(x, used[i], cv2.INPAINT_NS), x, used[i]),
            "ours": composite(np.clip(restored[i], 0.0, 1.0), x, used[i]),
        }
        results.append({"detected": detected[i], "used": used[i], "outputs": outputs})
    return results


def _score_sample(
    s: Sample, r: dict[str, Any], embedder: IdentityEmbedder | None, lpips: LpipsMetric | None = None
) -> dict[str, Any]:
    """Per-image record: detector IoU, and every method's metrics against the clean crop."""
    region = s.gt_mask if s.gt_mask is not None else r["used"]
    record: dict[str, Any] = {
        "name": s.name,
        "mask_iou": None if s.gt_mask is None else metrics.mask_iou(r["detected"], s.gt_mask),
        "mask_fraction": float(r["used"].mean()),
        "psnr_mask_region": "ground_truth" if s.gt_mask is not None else "detected",
        "methods": {m: score(out, s.clean_rgb01, region) for m, out in r["outputs"].items()},
    }
    emb = None if embedder is None else embedder.embed([s.clean_rgb01, *r["outputs"].values()])
    dist = None if lpips is None else lpips.distances(s.clean_rgb01, list(r["outputs"].values()))
    for j, m in enumerate(r["outputs"]):
        record["methods"][m]["id_cosine"] = None if emb is None else cosine(emb[0], emb[j + 1])
        record["methods"][m]["lpips"] = None if dist is None else dist[j]
    return record


def evaluate(config: QualityConfig) -> dict[str, Any]:
    """Run the whole evaluation and return the report (JSON-ready; NaN/inf already turned into None)."""
    if not config.dataset.is_dir():
        raise QualityInputError(f"dataset directory not found: {config.dataset}")
    triples = list_dataset(config.dataset, config.limit)
    detector, generator = _load_models(config)
    embedder = IdentityEmbedder.create_or_none()
    lpips = LpipsMetric.create_or_none()
    size = detector.info.crop_size
    per_image: list[dict[str, Any]] = []
    grid_rows: list[list[np.ndarray]] = []
    resized: dict[str, int] = {}
    try:
        for start in range(0, len(triples), config.batch):
            samples = [load_sample(a, b, m, size) for a, b, m in triples[start : start + config.batch]]
            for s in samples:
                if s.source_hw != (size, size):
                    key = f"{s.source_hw[1]}x{s.source_hw[0]}"
                    resized[key] = resized.get(key, 0) + 1
            for s, r in zip(
                samples, _evaluate_batch(samples, detector, generator, config.dilate_px), strict=True
            ):
                per_image.append(_score_sample(s, r, embedder, lpips))
                if len(grid_rows) < GRID_ROWS:
                    o = r["outputs"]
                    masks = _mask_tile(r["detected"], r["used"])
                    grid_rows.append(
                        [s.masked_rgb01, masks, o["telea"], o["navier_stokes"], o["ours"], s.clean_rgb01]
                    )
            logger.info("evaluated %d/%d images", len(per_image), len(triples))
        backend, device = detector.backend, detector.device
    finally:
        detector.close()
        generator.close()
    if resized:
        logger.warning(
            "resized %d images to the model crop %dx%d: %s", sum(resized.values()), size, size, resized
        )
    grid_path = config.grid_path or config.json_path.with_name(config.json_path.stem + "_grid.png")
    write_grid(grid_path, grid_rows)
    keys = ("psnr", "ssim", "l1", "l2", "psnr_mask", "id_cosine", "lpips")
    report = {
        "methods": {m: {k: _mean([r["methods"][m][k] for r in per_image]) for k in keys} for m in METHODS},
        "detector": {"mask_iou": _mean([r["mask_iou"] for r in per_image])},
        "count": len(per_image),
        "dataset": str(config.dataset),
        "models": str(config.models),
        "backend": backend,
        "device": device,
        "crop_size": size,
        "resized": {"count": sum(resized.values()), "from_sizes": resized},
        "mask": {
            "threshold": metrics.MASK_THRESHOLD,
            "dilate_px": config.dilate_px,
            "inpaint_radius": INPAINT_RADIUS,
        },
        "mask_iou_count": sum(r["mask_iou"] is not None for r in per_image),
        "psnr_mask_region": sorted({r["psnr_mask_region"] for r in per_image}),
        "identity_model": None if embedder is None else embedder.model_path.name,
        "lpips_model": None if lpips is None else lpips.info(),
        "notes": {
            "psnr": f"dB, data range 1.0, per-image values capped at {PSNR_CAP_DB} dB, then averaged",
            "l1_l2": "mean absolute / squared error on [0, 1] data, as fractions (x100 for %)",
            "psnr_mask": "inside face-mask/ when present, else inside the dilated detected mask",
            "composite": "restored * mask + input * (1 - mask) with the dilated detected mask",
            "lpips": "distance to the clean crop on the full crop, lower is better: "
            + ("left out (see the log)" if lpips is None else lpips.note),
        },
        "grid": str(grid_path),
        "per_image": per_image,
    }
    return json_safe(report)


def _mask_tile(detected: np.ndarray, used: np.ndarray) -> np.ndarray:
    """White = detected, grey = the dilation ring added to it, as an rgb01 (S, S, 3) tile."""
    tile = np.where(detected, 1.0, np.where(used, 0.5, 0.0)).astype(np.float32)
    return np.repeat(tile[..., None], 3, axis=2)


def write_grid(path: Path, rows: Sequence[Sequence[np.ndarray]]) -> None:
    """PNG with one labelled column per entry of ``GRID_COLUMNS`` and one row per image (rgb01 tiles)."""
    if not rows:
        return
    size = rows[0][0].shape[0]
    tile = min(size, GRID_TILE_MAX)
    header = 22
    canvas = np.full((header + tile * len(rows), tile * len(GRID_COLUMNS), 3), 255, dtype=np.uint8)
    for c, label in enumerate(GRID_COLUMNS):
        # Shrink the label until it fits its column (64 px tiles in tests, 256 px in real runs).
        scale = 0.5
        while scale > 0.25 and cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > tile - 4:
            scale -= 0.05
        cv2.putText(
            canvas, label, (c * tile + 2, 15), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA
        )
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
            if u8.shape[0] != tile:
                u8 = cv2.resize(u8, (tile, tile), interpolation=cv2.INTER_AREA)
            canvas[header + r * tile : header + (r + 1) * tile, c * tile : (c + 1) * tile] = u8[..., ::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"cannot write grid image {path}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Restoration quality (PSNR, SSIM, L1, L2, masked PSNR, SFace identity, LPIPS) of our detector + "
        "generator against OpenCV Telea / Navier-Stokes inpainting on an FMOR-layout data set.",
    )
    p.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="directory with A/ (masked), B/ (clean), optional face-mask/",
    )
    p.add_argument(
        "--json", type=Path, required=True, dest="json_path", help="where to write the JSON report"
    )
    p.add_argument(
        "--models",
        type=Path,
        default=DEFAULT_MODELS,
        help="directory with detector.onnx and generator.onnx (default: %(default)s)",
    )
    p.add_argument(
        "--backend", default="auto", choices=("auto", "onnxruntime", "torch", "tensorrt", "torch-tensorrt")
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--grid",
        type=Path,
        default=None,
        dest="grid_path",
        help="before/after grid PNG (default: next to the JSON, *_grid.png)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="evaluate only the first N images (sorted by name)"
    )
    p.add_argument("--batch", type=int, default=8, help="images per network call (default: %(default)s)")
    p.add_argument(
        "--dilate",
        type=int,
        default=3,
        dest="dilate_px",
        help="pixels the detected mask grows by before restoring (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input, with one readable error line)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        config = QualityConfig(**vars(args))
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    try:
        report = evaluate(config)
    except (QualityInputError, EngineError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    write_report(report, config.json_path)
    for name, values in report["methods"].items():
        shown = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in values.items())
        logger.info("%-14s %s", name, shown)
    logger.info(
        "detector mask IoU: %s; %d images -> %s",
        report["detector"]["mask_iou"],
        report["count"],
        config.json_path,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
