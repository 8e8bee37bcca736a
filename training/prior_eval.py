"""How much the face prior alone restores: held-out faces, true masks, against OpenCV and the generator.

``python -m training.prior_eval --dataset data/prior_eval128 --dataset data/prior_eval256
--json benchmarks/results/prior_quality.json --grid benchmarks/results/prior_grid.png``

Each ``--dataset`` is an FMOR-layout set (``A/`` masked, ``B/`` clean, ``face-mask/``) built by
``python -m training.data.build ... --split val --styles photo`` (held-out people, a mask style no
training used). Every method is given the same region: the TRUE face-mask (>= 0.5), grown by 3 px per
128 px of crop, and is composited ``out * region + input * (1 - region)``. Methods: ``masked_input``;
``telea`` and ``navier_stokes`` (``cv2.inpaint``, radius 3); ``prior`` (mesh on the masked crop -> fit to
the visible pixels -> render -> Poisson-like blend, :mod:`engines.prior`); ``prior_no_seam`` (the same
without the seam correction); ``generator`` (the shipped network of ``--models``, run at its own crop
size: a 256 px crop is resized down and its output up); and ``*_detected_mask``: Telea, the generator and
the prior given the shipped detector's mask instead (the product's path; scored inside the true mask). Metrics (:mod:`training.metrics`): PSNR inside
the true mask, whole-crop PSNR and SSIM, and SFace identity cosine to the clean crop. Timing: per-face
median ms: the mesh in wall time (mediapipe's own threads), fit / render / blend in this thread's CPU
time (what they cost; wall time on a shared 2-core machine says more about the neighbours).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines import facemesh
from engines.errors import EngineError
from engines.prior.fit import PriorFitter
from engines.prior.memory import IdentityMemory
from engines.prior.model import load_prior
from engines.prior.render import blend_prior, render_prior
from training import metrics
from training.identity import IdentityEmbedder, cosine

log = logging.getLogger("training.prior_eval")

REPO = Path(__file__).resolve().parent.parent
METHODS = (
    "masked_input",
    "telea",
    "navier_stokes",
    "generator",
    "prior_no_seam",
    "prior",
    "prior_reference",
    "telea_detected_mask",
    "generator_detected_mask",
    "prior_detected_mask",
)
GRID_COLUMNS = ("masked", "Telea", "generator", "prior", "clean")
PSNR_CAP_DB = 100.0


@dataclass(frozen=True)
class PriorEvalConfig:
    datasets: tuple[Path, ...]
    json_path: Path
    grid_path: Path | None = None
    prior_path: Path = REPO / "models" / "small" / "prior.npz"
    models: Path = REPO / "models" / "small"
    grid_rows: int = 8
    limit: int | None = None

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ValueError("at least one dataset is needed")
        if self.grid_rows < 1:
            raise ValueError(f"grid_rows must be >= 1, got {self.grid_rows}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")


def _read_rgb_u8(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[..., ::-1])


def _triples(dataset: Path, limit: int | None) -> list[tuple[Path, Path, Path]]:
    a_dir, b_dir, m_dir = dataset / "A", dataset / "B", dataset / "face-mask"
    if not (a_dir.is_dir() and b_dir.is_dir() and m_dir.is_dir()):
        raise OSError(
            f"{dataset} must hold A/, B/ and face-mask/ (build it with python -m training.data.build)"
        )
    names = sorted(p.name for p in a_dir.iterdir() if p.suffix.lower() == ".png")
    out = [
        (a_dir / n, b_dir / n, m_dir / n) for n in names if (b_dir / n).is_file() and (m_dir / n).is_file()
    ]
    if not out:
        raise OSError(f"no complete A/B/face-mask triples in {dataset}")
    return out[:limit] if limit else out


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask.astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(np.float32)


def _composite(out_rgb01: np.ndarray, input_rgb01: np.ndarray, region: np.ndarray) -> np.ndarray:
    r = region[..., None]
    return np.clip(out_rgb01 * r + input_rgb01 * (1.0 - r), 0.0, 1.0).astype(np.float32)


def _inpaint(masked_u8: np.ndarray, region: np.ndarray, method: int) -> np.ndarray:
    return cv2.inpaint(masked_u8, (region > 0.5).astype(np.uint8) * 255, 3, method).astype(np.float32) / 255.0


class _Detector:
    """The shipped mask detector at its own crop size: the product's mask, binarised at 0.5 and grown
    like the true one (what ``benchmarks.quality`` gives every method)."""

    def __init__(self, models: Path) -> None:
        from engines.select import load_engine

        self.engine = load_engine(models / "detector.onnx", backend="onnxruntime", device="cpu", max_batch=1)
        self.size = int(self.engine.info.crop_size)

    def region(self, masked_rgb01: np.ndarray) -> np.ndarray:
        s = masked_rgb01.shape[0]
        img = masked_rgb01
        if s != self.size:
            img = cv2.resize(masked_rgb01, (self.size, self.size), interpolation=cv2.INTER_AREA)
        prob = np.asarray(self.engine.run({"image": img.transpose(2, 0, 1)[None].astype(np.float32)})["mask"])
        prob = prob.reshape(self.size, self.size).astype(np.float32)
        if s != self.size:
            prob = cv2.resize(prob, (s, s), interpolation=cv2.INTER_LINEAR)
        return _grow(prob >= metrics.MASK_THRESHOLD, round(3 * s / 128))

    def close(self) -> None:
        self.engine.close()


class _Generator:
    """The shipped generator at its own crop size (onnxruntime, CPU). A generator that takes the face
    prior (input ``prior``) is given the prior's blended guide of the same face and mask."""

    def __init__(self, models: Path) -> None:
        from engines.select import load_engine

        self.engine = load_engine(models / "generator.onnx", backend="onnxruntime", device="cpu", max_batch=1)
        self.size = int(self.engine.info.crop_size)
        self.takes_prior = "prior" in {spec.name for spec in self.engine.inputs}

    def restore(
        self, masked_rgb01: np.ndarray, region: np.ndarray, guide_rgb01: np.ndarray | None = None
    ) -> np.ndarray:
        s = masked_rgb01.shape[0]
        img, reg, guide = masked_rgb01, region, guide_rgb01
        if s != self.size:
            img = cv2.resize(masked_rgb01, (self.size, self.size), interpolation=cv2.INTER_AREA)
            reg = (cv2.resize(region, (self.size, self.size), interpolation=cv2.INTER_AREA) > 0.0).astype(
                np.float32
            )
            if guide is not None:
                guide = cv2.resize(guide, (self.size, self.size), interpolation=cv2.INTER_AREA)
        feeds = {
            "image": img.transpose(2, 0, 1)[None].astype(np.float32),
            "mask": reg[None, None].astype(np.float32),
        }
        if self.takes_prior:
            if guide is None:
                raise ValueError("this generator takes the face prior: pass its guide image")
            feeds["prior"] = guide.transpose(2, 0, 1)[None].astype(np.float32)
        out = self.engine.run(feeds)["restored"]
        restored = np.clip(np.asarray(out, dtype=np.float32)[0].transpose(1, 2, 0), 0.0, 1.0)
        if s != self.size:
            restored = cv2.resize(restored, (s, s), interpolation=cv2.INTER_CUBIC)
        return np.clip(restored, 0.0, 1.0)

    def close(self) -> None:
        self.engine.close()


def _score(out: np.ndarray, clean: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    p = metrics.psnr(out, clean)
    pm = metrics.psnr_masked(out, clean, gt)
    return {
        "psnr_mask": min(pm, PSNR_CAP_DB),
        "psnr": min(p, PSNR_CAP_DB),
        "ssim": metrics.ssim(out, clean),
    }


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def evaluate_dataset(
    dataset: Path,
    fitter: PriorFitter,
    generator: _Generator | None,
    embedder: IdentityEmbedder | None,
    limit: int | None,
    detector: _Detector | None = None,
) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Scores of every method on one FMOR-layout set, timings, and grid rows."""
    per_image: list[dict[str, Any]] = []
    grid: list[list[np.ndarray]] = []
    times: dict[str, list[float]] = {"mesh_wall": [], "fit_cpu": [], "render_cpu": [], "blend_cpu": []}
    no_mesh = 0
    size = 0
    triples = _triples(dataset, limit)
    people = [_person(a.name) for a, _, _ in triples]
    with facemesh.FaceMesh(facemesh.FaceMeshConfig(static_image_mode=True)) as mesh:
        for i, (a_path, b_path, m_path) in enumerate(triples):
            masked_u8, clean_u8 = _read_rgb_u8(a_path), _read_rgb_u8(b_path)
            size = masked_u8.shape[0]
            mask_u8 = cv2.imread(str(m_path), cv2.IMREAD_GRAYSCALE)
            if mask_u8 is None:
                raise OSError(f"cannot read mask {m_path}")
            gt_soft = mask_u8.astype(np.float32) / 255.0
            gt = gt_soft >= metrics.MASK_THRESHOLD
            region = _grow(gt, round(3 * size / 128))
            x = masked_u8.astype(np.float32) / 255.0
            clean = clean_u8.astype(np.float32) / 255.0
            telea = _composite(_inpaint(masked_u8, region, cv2.INPAINT_TELEA), x, region)
            outputs = {
                "masked_input": x,
                "telea": telea,
                "navier_stokes": _composite(_inpaint(masked_u8, region, cv2.INPAINT_NS), x, region),
            }
            if generator is not None and not generator.takes_prior:
                outputs["generator"] = _composite(generator.restore(x, region), x, region)
            if detector is not None:
                # The product's path: the detector's mask instead of the true one.
                found = detector.region(x)
                outputs["telea_detected_mask"] = _composite(
                    _inpaint(masked_u8, found, cv2.INPAINT_TELEA), x, found
                )
                if generator is not None and not generator.takes_prior:
                    outputs["generator_detected_mask"] = _composite(generator.restore(x, found), x, found)
            w0 = time.perf_counter()  # mediapipe runs its own threads: wall time
            lms = mesh.landmarks(masked_u8)
            w1 = time.perf_counter()
            t1 = time.thread_time()  # numpy/OpenCV here run on this thread: its CPU time, steady under load
            if lms is None:
                no_mesh += 1
                log.info("no face mesh on %s: the prior is fitted in the mean shape", a_path.name)
            fit = fitter.fit(masked_u8, region, lms)
            t2 = time.thread_time()
            rendered = render_prior(fitter, fit, size, region=region)
            t3 = time.thread_time()
            outputs["prior"] = blend_prior(x, rendered, region)
            t4 = time.thread_time()
            outputs["prior_no_seam"] = blend_prior(x, rendered, region, seam_correction=False)
            if generator is not None and generator.takes_prior:
                outputs["generator"] = _composite(generator.restore(x, region, outputs["prior"]), x, region)
            if detector is not None:
                found = detector.region(x)
                fit_d = fitter.fit(masked_u8, found, lms)
                outputs["prior_detected_mask"] = blend_prior(
                    x, render_prior(fitter, fit_d, size, region=found), found
                )
                if generator is not None and generator.takes_prior:
                    outputs["generator_detected_mask"] = _composite(
                        generator.restore(x, found, outputs["prior_detected_mask"]), x, found
                    )
            if lms is not None:
                for k, v in zip(times, (w1 - w0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    times[k].append(1e3 * v)
                ref = _reference_output(i, triples, people, mesh, fitter, x, masked_u8, region, lms)
                if ref is not None:
                    outputs["prior_reference"] = ref
            record: dict[str, Any] = {"name": a_path.name, "mesh": lms is not None}
            record["methods"] = {k: _score(v, clean, gt) for k, v in outputs.items()}
            if embedder is not None:
                emb = embedder.embed([clean, *outputs.values()])
                for j, k in enumerate(outputs):
                    record["methods"][k]["id_cosine"] = cosine(emb[0], emb[j + 1])
            per_image.append(record)
            if len(grid) < 8:
                grid.append([x, telea, outputs.get("generator", telea), outputs["prior"], clean])
    methods = [m for m in METHODS if m in per_image[0]["methods"] and m != "prior_reference"]
    keys = ("psnr_mask", "psnr", "ssim", "id_cosine")
    summary = {m: {k: _mean([r["methods"][m].get(k) for r in per_image]) for k in keys} for m in methods}
    with_ref = [r for r in per_image if "prior_reference" in r["methods"]]
    reference = {
        "what": "faces whose person has another image in the set: that clean image is the reference photo",
        "count": len(with_ref),
        "methods": {
            m: {k: _mean([r["methods"][m].get(k) for r in with_ref]) for k in keys}
            for m in ("masked_input", "telea", "prior", "prior_reference")
        }
        if with_ref
        else {},
    }
    report = {
        "dataset": str(dataset),
        "crop_size": size,
        "count": len(per_image),
        "no_mesh": no_mesh,
        "methods": summary,
        "identity_memory": reference,
        "ms_per_face_median": {k: float(np.median(v)) if v else None for k, v in times.items()},
        "per_image": per_image,
    }
    return report, grid


def _shown(path: Path) -> str:
    """A path relative to the repository where it lies inside it (reports do not carry home folders)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _person(name: str) -> str:
    """The person slug of a ``training.data.build`` file name (``00012_<person>.png``)."""
    stem = Path(name).stem
    return stem.split("_", 1)[1] if "_" in stem else stem


def _reference_output(
    i: int,
    triples: Sequence[tuple[Path, Path, Path]],
    people: Sequence[str],
    mesh: facemesh.FaceMesh,
    fitter: PriorFitter,
    x: np.ndarray,
    masked_u8: np.ndarray,
    region: np.ndarray,
    lms: np.ndarray,
) -> np.ndarray | None:
    """The prior with identity memory loaded from another clean image of the same person, or None."""
    others = [j for j in range(len(triples)) if j != i and people[j] == people[i]]
    if not others:
        return None
    ref_u8 = _read_rgb_u8(triples[others[0]][1])
    ref_lms = mesh.landmarks(ref_u8)
    if ref_lms is None:
        return None
    memory = IdentityMemory(fitter)
    memory.load_reference(ref_u8, ref_lms)
    fit = fitter.fit(masked_u8, region, lms, texture_prior=memory.texture_prior())
    rendered = render_prior(fitter, fit, x.shape[0], texture_rgb01=memory.texture_for(fit))
    return blend_prior(x, rendered, region)


def time_clip(clip: Path, fitter: PriorFitter, crop_size: int, frames: int = 120) -> dict[str, Any]:
    """Per-face cost of the run-time path on a video, one face per frame: YuNet alignment (not timed),
    mesh in tracking mode, :class:`TrackPrior` (fit + memory + smoother + render) and the blend.

    The occlusion mask is the mesh's face oval below the nose (the clip's face-mask). Medians in ms:
    ``*_wall`` wall clock, ``*_cpu`` this thread's CPU time (mediapipe's own threads are not in it).
    Flicker: mean |frame t - frame t-1| (rgb01) inside the mask of the blended output, with the track's
    smoothing and with independent per-frame fits, and of the bare upper face (face oval above the nose)
    of the input crops for reference (the crop's own alignment jitter and the person's motion).
    """
    import av

    from engines.crop import estimate_alignment, warp_to_crop
    from engines.face_detect import YuNetDetector
    from engines.prior.track import TrackPrior

    detector = YuNetDetector()
    track = TrackPrior(fitter)
    rows: dict[str, list[float]] = {"mesh_wall": [], "prior_wall": [], "prior_cpu": [], "blend_cpu": []}
    flicker: dict[str, list[float]] = {"smoothed": [], "per_frame_fit": [], "bare_upper_face": []}
    prev: tuple[np.ndarray, ...] | None = None
    with (
        av.open(str(clip)) as container,
        facemesh.FaceMesh(facemesh.FaceMeshConfig(static_image_mode=False)) as mesh,
    ):
        for i, frame in enumerate(container.decode(video=0)):
            if i >= frames:
                break
            rgb = frame.to_ndarray(format="rgb24")
            found = detector.detect(np.ascontiguousarray(rgb[..., ::-1]))
            if not found:
                continue
            crop = warp_to_crop(rgb, estimate_alignment(found[0].landmarks, crop_size))
            w0 = time.perf_counter()
            lms = mesh.landmarks(crop)
            w1 = time.perf_counter()
            if lms is None:
                continue
            occ = facemesh.face_region_mask(lms, (crop_size, crop_size))
            occ[: int(lms[2, 1])] = 0.0
            c0 = time.thread_time()
            rendered = track.process(crop, occ, lms)
            c1, w2 = time.thread_time(), time.perf_counter()
            x = crop.astype(np.float32) / 255.0
            smoothed = blend_prior(x, rendered, occ)
            c2 = time.thread_time()
            for k, v in zip(rows, (w1 - w0, w2 - w1, c1 - c0, c2 - c1), strict=True):
                rows[k].append(1e3 * v)
            raw = blend_prior(
                x, render_prior(fitter, fitter.fit(crop, occ, lms), crop_size, region=occ > 0), occ
            )
            upper = facemesh.face_region_mask(lms, (crop_size, crop_size)) * (1.0 - occ)
            if prev is not None:
                inside = (occ > 0.5) & (prev[3] > 0.5)
                bare = (upper > 0.5) & (prev[4] > 0.5)
                flicker["smoothed"].append(float(np.abs(smoothed - prev[0])[inside].mean()))
                flicker["per_frame_fit"].append(float(np.abs(raw - prev[1])[inside].mean()))
                flicker["bare_upper_face"].append(float(np.abs(x - prev[2])[bare].mean()))
            prev = (smoothed, raw, x, occ, upper)
    return {
        "clip": _shown(clip),
        "crop_size": crop_size,
        "faces": len(rows["mesh_wall"]),
        "ms_median": {k: float(np.median(v)) if v else None for k, v in rows.items()},
        "ms_p90": {k: float(np.percentile(v, 90)) if v else None for k, v in rows.items()},
        "flicker_mean_abs_rgb01": {k: float(np.mean(v)) if v else None for k, v in flicker.items()},
    }


def write_grid(path: Path, rows: Sequence[Sequence[np.ndarray]], tile: int = 192) -> None:
    """PNG: one labelled column per :data:`GRID_COLUMNS` entry, one row per face (rgb01 tiles)."""
    header = 22
    canvas = np.full((header + tile * len(rows), tile * len(GRID_COLUMNS), 3), 255, dtype=np.uint8)
    for c, label in enumerate(GRID_COLUMNS):
        cv2.putText(
            canvas, label, (c * tile + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
            interp = cv2.INTER_AREA if u8.shape[0] > tile else cv2.INTER_CUBIC
            resized = cv2.resize(u8, (tile, tile), interpolation=interp)
            canvas[header + r * tile : header + (r + 1) * tile, c * tile : (c + 1) * tile] = resized[
                ..., ::-1
            ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"cannot write {path}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def evaluate(config: PriorEvalConfig) -> dict[str, Any]:
    """Evaluate every dataset; writes the grid (rows of the first dataset) and returns the report."""
    model = load_prior(config.prior_path)
    fitter = PriorFitter(model)
    try:
        generator: _Generator | None = _Generator(config.models)
    except (EngineError, OSError, ValueError) as exc:
        log.warning("generator rows skipped: cannot load %s: %s", config.models / "generator.onnx", exc)
        generator = None
    try:
        detector: _Detector | None = _Detector(config.models)
    except (EngineError, OSError, ValueError) as exc:
        log.warning("detected-mask rows skipped: cannot load %s: %s", config.models / "detector.onnx", exc)
        detector = None
    embedder = IdentityEmbedder.create_or_none()
    reports, grids = [], []
    try:
        for ds in config.datasets:
            rep, grid = evaluate_dataset(ds, fitter, generator, embedder, config.limit, detector)
            reports.append(rep)
            grids.append(grid)
            log.info(
                "%s: %s",
                ds,
                json.dumps({m: round(v["psnr_mask"] or 0, 2) for m, v in rep["methods"].items()}),
            )
    finally:
        if generator is not None:
            generator.close()
        if detector is not None:
            detector.close()
    grid_path = config.grid_path or config.json_path.with_name(config.json_path.stem + "_grid.png")
    # The largest crop shows the prior's detail best.
    best = max(range(len(reports)), key=lambda i: reports[i]["crop_size"])
    write_grid(grid_path, grids[best][: config.grid_rows])
    return _json_safe(
        {
            "what": "face prior alone vs OpenCV inpainting and the shipped generator, all given the true mask",
            "prior": {"path": _shown(config.prior_path), "metadata": model.metadata},
            "generator": None if generator is None else _shown(config.models / "generator.onnx"),
            "identity_model": None if embedder is None else embedder.model_path.name,
            "region": "true face-mask >= 0.5 grown by round(3 * S / 128) px; out * region + input * (1 - region)",
            "metrics": "psnr_mask: dB inside the true mask; psnr, ssim: whole crop; id_cosine: SFace to the clean crop",
            "device": f"CPU (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
            "grid": {
                "path": str(grid_path),
                "columns": list(GRID_COLUMNS),
                "dataset": reports[best]["dataset"],
            },
            "datasets": reports,
        }
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.prior_eval",
        description="Quality of the face prior alone (PSNR inside the mask, PSNR, SSIM, identity) against "
        "Telea / Navier-Stokes and the shipped generator, on FMOR-layout sets with true masks.",
    )
    p.add_argument(
        "--dataset", type=Path, action="append", required=True, help="FMOR-layout set (repeatable)"
    )
    p.add_argument("--json", type=Path, required=True, dest="json_path", help="report path")
    p.add_argument("--grid", type=Path, default=None, help="side-by-side PNG (default: beside the JSON)")
    p.add_argument("--prior", type=Path, default=REPO / "models" / "small" / "prior.npz", help="prior file")
    p.add_argument("--models", type=Path, default=REPO / "models" / "small", help="dir with generator.onnx")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per set")
    p.add_argument("--timing-clip", type=Path, default=None, help="also time the run-time path on this video")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = PriorEvalConfig(
            datasets=tuple(args.dataset),
            json_path=args.json_path,
            grid_path=args.grid,
            prior_path=args.prior,
            models=args.models,
            limit=args.limit,
        )
        report = evaluate(config)
        if args.timing_clip is not None:
            fitter = PriorFitter(load_prior(config.prior_path))
            report["clip_timing"] = [time_clip(args.timing_clip, fitter, s) for s in (128, 256)]
    except (OSError, ValueError, EngineError) as exc:
        print(f"prior evaluation failed: {exc}", file=sys.stderr)
        return 2
    config.json_path.parent.mkdir(parents=True, exist_ok=True)
    config.json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    for rep in report["datasets"]:
        print(f"{rep['dataset']} ({rep['crop_size']} px, {rep['count']} faces):")
        for m, v in rep["methods"].items():
            idc = "-" if v["id_cosine"] is None else f"{v['id_cosine']:.3f}"
            print(
                f"  {m:14s} mask {v['psnr_mask']:.2f} dB  psnr {v['psnr']:.2f}  ssim {v['ssim']:.4f}  id {idc}"
            )
        print(f"  ms per face (median): {rep['ms_per_face_median']}")
    for t in report.get("clip_timing", []):
        print(
            f"run-time path on {t['clip']} at {t['crop_size']} px ({t['faces']} faces): median {t['ms_median']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
