"""Occlusion-mask quality on held-out people: the visible-face segmenter (paper 003, Eq. 1) vs the FMODR
mask-region detector, per occluder kind, and false positives on bare faces.

For every held-out face (``split_by_person(manifest, 0.15, seed 0)``'s val people, 128 px canonical crops)
and every kind (bare, face-masks of the training styles, "photo" face-masks and cups, both never trained
on, scarves, sunglasses, hands, free-form, microphones, phones, hair), a synthetic occluder is drawn and:

- truth = occluder alpha > 0.5 inside the face region of the CLEAN crop (face-mesh oval);
- ``segmenter`` = :func:`engines.occlusion_mask.occlusion_mask` of the segmenter's two outputs on the
  occluded crop: its learned whole-face region minus its visible face (what the product runs);
- ``segmenter_mesh_region``: the same visible face, but the region from the face mesh of the OCCLUDED
  crop (:mod:`engines.facemesh`, static mode; where the mesh finds no face, the learned region, counted);
- ``segmenter_clean_region``: the same with the clean crop's region (what a perfect region would give);
- ``detector`` = FMODR detector probability > 0.5, restricted to the segmenter's region;
- ``union`` / ``intersection``: per-pixel combinations of ``segmenter`` and ``detector``;
  ``union_gated``: the union only on faces where the segmenter flags something (the segmenter decides
  whether a face is occluded, the detector may widen the mask; a bare face stays untouched).

IoU is reported pooled over the kind's samples (sum of intersections / sum of unions) and as the mean
of per-sample IoUs. On bare faces: the share of face pixels flagged (mean, worst) and the share of bare
faces with any pixel flagged; and on every frame of three clips of a held-out bare face, the share of
the face and of the frame flagged (:mod:`benchmarks.masks_clips`). Speed: the segmenter through ONNX
Runtime on 1 thread, batch 1.

CLI: ``python -m benchmarks.masks --json benchmarks/results/masks.json --grid benchmarks/results/masks_grid.png``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.environment import device_info, git, versions
from benchmarks.masks_clips import bare_clips
from benchmarks.report import setup_logging, write_report
from engines.occlusion_mask import OcclusionMaskConfig, occlusion_mask
from engines.onnxruntime_engine import OnnxRuntimeEngine

log = logging.getLogger("benchmarks.masks")
KINDS = (
    "bare",
    "facemask",
    "facemask_photo",
    "scarf",
    "sunglasses",
    "hand",
    "freeform",
    "microphone",
    "phone",
    "hair",
    "cup",
)
HELD_OUT_KINDS = ("facemask_photo", "cup")
TRAIN_STYLES = ("surgical", "kn95", "n95", "cloth")
METHODS = (
    "segmenter",
    "segmenter_mesh_region",
    "segmenter_clean_region",
    "detector",
    "union",
    "union_gated",
    "intersection",
)
MeshFn = Callable[[np.ndarray], "np.ndarray | None"]


@dataclass
class KindStats:
    """Running sums for one kind and method."""

    inter: float = 0.0
    union: float = 0.0
    ious: list[float] = field(default_factory=list)
    fp: list[float] = field(default_factory=list)

    def add(self, pred: np.ndarray, truth: np.ndarray, face_px: float) -> None:
        if truth.any():
            i, u = float((pred & truth).sum()), float((pred | truth).sum())
            self.inter += i
            self.union += u
            self.ious.append(i / u)
        else:
            self.fp.append(float(pred.sum()) / max(face_px, 1.0))

    def summary(self) -> dict[str, Any]:
        if self.fp and not self.ious:
            fp = np.array(self.fp)
            return {
                "samples": len(fp),
                "fp_share_mean": float(fp.mean()),
                "fp_share_worst": float(fp.max()),
                "faces_with_any_flagged_pixel": float((fp > 0).mean()),
            }
        ious = np.array(self.ious) if self.ious else np.zeros(1)
        return {
            "samples": len(self.ious),
            "iou_pooled": self.inter / max(self.union, 1.0),
            "iou_mean": float(ious.mean()),
            "iou_p10": float(np.percentile(ious, 10)),
        }


def run_batched(
    engine: OnnxRuntimeEngine, names: Sequence[str], images_rgb_u8: np.ndarray, batch: int = 16
) -> list[np.ndarray]:
    """For each output in ``names``: (N, S, S) float32 channel 0, for (N, S, S, 3) uint8 RGB crops."""
    out: list[list[np.ndarray]] = [[] for _ in names]
    for i in range(0, len(images_rgb_u8), batch):
        x = np.ascontiguousarray(images_rgb_u8[i : i + batch].transpose(0, 3, 1, 2), np.float32) / 255.0
        result = engine.run({"image": x})
        for k, name in enumerate(names):
            out[k].append(result[name][:, 0])
    return [np.concatenate(o).astype(np.float32) for o in out]


def time_engine(engine: OnnxRuntimeEngine, size: int, runs: int = 300) -> dict[str, float]:
    """p50/p95 ms of one batch-1 run (after 20 warm-up runs)."""
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    for _ in range(20):
        engine.run({"image": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.run({"image": x})
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": float(np.median(times)), "p95_ms": float(np.percentile(times, 95)), "runs": runs}


def evaluate(
    face_sets: dict[str, Any],
    segmenter: OnnxRuntimeEngine,
    detector: OnnxRuntimeEngine,
    mesh_fn: MeshFn,
    *,
    per_face: int = 2,
    seed: int = 7,
    mask_config: OcclusionMaskConfig | None = None,
    grid_rows: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Metrics per face set, kind and method (see the module docstring)."""
    from engines.facemesh import face_region_mask
    from training.data.segmentation import evaluation_samples

    cfg = mask_config or OcclusionMaskConfig()
    results: dict[str, Any] = {}
    for set_name, faces in face_sets.items():
        size = faces.crop_size
        per_kind: dict[str, Any] = {}
        mesh_missed: dict[str, int] = {}
        for kind in KINDS:
            real = "facemask" if kind.startswith("facemask") else kind
            styles = ("photo",) if kind == "facemask_photo" else TRAIN_STYLES
            samples = [s for _, s in evaluation_samples(faces, (real,), per_face, seed, styles)]
            images = np.stack([s.image_rgb_u8 for s in samples])
            vis, learned = run_batched(segmenter, ("face", "region"), images)
            (det,) = run_batched(detector, ("mask",), images)
            stats = {m: KindStats() for m in METHODS}
            missed = 0
            for n, (smp, v, r, d) in enumerate(zip(samples, vis, learned, det, strict=True)):
                mesh = mesh_fn(smp.image_rgb_u8)
                region = (r > 0.5).astype(np.float32)
                if mesh is None:
                    missed += 1
                    mesh_region = region
                else:
                    mesh_region = face_region_mask(mesh, (size, size))
                truth = smp.true_occlusion
                face_px = float((smp.region_f32 > 0.5).sum())
                seg = occlusion_mask(v, region, cfg) > 0
                det_mask = (d > 0.5) & (region > 0.5)
                preds = {
                    "segmenter": seg,
                    "segmenter_mesh_region": occlusion_mask(v, mesh_region, cfg) > 0,
                    "segmenter_clean_region": occlusion_mask(v, smp.region_f32, cfg) > 0,
                    "detector": det_mask,
                    "union": seg | det_mask,
                    "union_gated": seg | det_mask if seg.any() else seg,
                    "intersection": seg & det_mask,
                }
                for m, p in preds.items():
                    stats[m].add(p, truth, face_px)
                if grid_rows is not None and n == 0 and set_name == "main":
                    grid_rows.append(_grid_row(smp.image_rgb_u8, truth, det_mask, seg, kind))
            per_kind[kind] = {m: s.summary() for m, s in stats.items()}
            mesh_missed[kind] = missed
            if missed:
                log.info("%s/%s: face mesh found no face on %d of %d occluded crops (learned region used)",
                         set_name, kind, missed, len(samples))  # fmt: skip
            seg_s = per_kind[kind]["segmenter"]
            det_s = per_kind[kind]["detector"]
            key = "fp_share_mean" if kind == "bare" else "iou_pooled"
            log.info("%s %-15s segmenter %s=%.3f detector %.3f", set_name, kind, key, seg_s[key], det_s[key])
        results[set_name] = {
            "faces": len(faces),
            "people": len(set(faces.people)),
            "per_kind": per_kind,
            "mesh_missed_on_occluded_crop": mesh_missed,
        }
    return results


def _overlay(rgb_u8: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = (rgb_u8.astype(np.float32) * 0.45).astype(np.uint8)
    out[mask] = colour
    return out


def _grid_row(
    rgb_u8: np.ndarray, truth: np.ndarray, det: np.ndarray, seg: np.ndarray, kind: str
) -> np.ndarray:
    tiles = [rgb_u8.copy(), _overlay(rgb_u8, truth, (255, 255, 255)), _overlay(rgb_u8, det, (255, 80, 80)),
             _overlay(rgb_u8, seg, (80, 255, 80))]  # fmt: skip
    cv2.putText(tiles[0], kind, (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (255, 255, 0), 1, cv2.LINE_AA)
    return np.concatenate(tiles, axis=1)


def write_grid(rows: Sequence[np.ndarray], path: Path) -> None:
    """input | true mask | detector mask | segmenter mask, one row per kind (RGB rows -> PNG)."""
    grid = np.concatenate(list(rows), axis=0)
    head = np.zeros((14, grid.shape[1], 3), np.uint8)
    w = grid.shape[1] // 4
    for i, name in enumerate(("input", "true mask", "detector", "segmenter")):
        cv2.putText(
            head, name, (i * w + 2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([head, grid]), cv2.COLOR_RGB2BGR))


def held_out_faces(cache_dir: Path, size: int) -> dict[str, Any]:
    """The val people of both face manifests (the split every training config uses), at ``size`` px."""
    from training.data.faces import read_manifest, split_by_person
    from training.data.segmentation_faces import manifest_face_set

    out = {}
    for name, csv in (("main", "manifest.csv"), ("lowres", "manifest_lowres.csv")):
        path = (Path("..") / "shared" / "data" / "faces" / csv).resolve()
        split = split_by_person(read_manifest(path), 0.15, 0)
        cache = cache_dir / f"{path.stem}_val_0.15_0_256.npz"
        out[name] = manifest_face_set(path, split.select("val"), cache, 256).at_size(size)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.masks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--segmenter", type=Path, default=Path("models/small/segmenter.onnx"))
    parser.add_argument("--detector", type=Path, default=Path("models/small/detector.onnx"))
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("runs/segmenter/cache"),
        help="aligned + meshed face caches (built when missing)",
    )
    parser.add_argument("--per-face", type=int, default=2, help="occluder draws per face and kind")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--grid", type=Path, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    from engines.facemesh import FaceMesh, FaceMeshConfig

    try:
        segmenter = OnnxRuntimeEngine(args.segmenter, intra_threads=1, max_batch=64)
        detector = OnnxRuntimeEngine(args.detector, intra_threads=1, max_batch=64)
        size = segmenter.info.crop_size
        if detector.info.crop_size != size:
            raise ValueError(f"segmenter is {size} px but detector {detector.info.crop_size} px")
        faces = held_out_faces(args.cache, size)
    except (OSError, ValueError) as exc:
        print(f"masks benchmark failed: {exc}", file=sys.stderr)
        return 1
    mesh = FaceMesh(FaceMeshConfig(static_image_mode=True))
    rows: list[np.ndarray] = []
    results = evaluate(faces, segmenter, detector, mesh.landmarks, per_face=args.per_face, grid_rows=rows)
    mesh_times = []
    sample = faces["main"].rgb_u8[0]
    for _ in range(30):
        t = time.perf_counter()
        mesh.landmarks(sample)
        mesh_times.append((time.perf_counter() - t) * 1e3)
    report = {
        "benchmark": "masks",
        "device": device_info("cpu"),
        "load_average_at_start": os.getloadavg()[0],
        "versions": versions(),
        "git_revision": git("rev-parse", "HEAD"),
        "segmenter": {
            "path": str(args.segmenter),
            "iterations": segmenter.info.iterations,
            "training_data": segmenter.info.training_data,
        },  # fmt: skip
        "detector": {"path": str(args.detector), "iterations": detector.info.iterations},
        "crop_size": size,
        "per_face": args.per_face,
        "held_out_kinds": list(HELD_OUT_KINDS),
        "occlusion_mask_config": vars(OcclusionMaskConfig()),
        "results": results,
        "bare_clips_held_out_person": bare_clips(segmenter, detector),
        "speed_1_thread_batch_1": {
            "segmenter": time_engine(segmenter, size),
            "detector": time_engine(detector, size),
            "face_mesh_static_on_crop": {"p50_ms": float(np.median(mesh_times)), "runs": len(mesh_times)},
        },
        "notes": "Synthetic occluders on real held-out faces; truth restricted to the clean crop's face-mesh "
        "region. The machine is shared (2 cores, other jobs running), so the speed numbers are upper bounds.",
    }
    write_report(report, args.json)
    if args.grid is not None and rows:
        write_grid(rows, args.grid)
    log.info("wrote %s%s", args.json, f" and {args.grid}" if args.grid else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
