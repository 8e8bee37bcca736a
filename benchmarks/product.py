"""The product as a user gets it, on clips of held-out people: restoration, temporal stability, bare faces.

    python -m benchmarks.product --clips data/eval_clips --models models/small \\
        --json benchmarks/results/product_<name>.json [--grid out.png] [--work data/product_runs]

For every clip of ``--clips`` (made by :mod:`benchmarks.eval_clips`) it runs ``run_stream.py`` in a
subprocess (:mod:`benchmarks.product_run`), then scores the output beside baselines made in the same
process and written through the product's own source and sink (:mod:`benchmarks.baselines`): the
masked input, OpenCV Telea and Navier-Stokes GIVEN THE TRUE MASK.

- masked clips: PSNR inside the true mask per frame (mean, p10, worst) and flicker against the clean
  clip's (:mod:`benchmarks.temporal`), whole-frame PSNR, face PSNR / SSIM / identity cosine / LPIPS in
  the 256 px canonical crop (:mod:`benchmarks.face_metrics`; LPIPS on every ``--lpips-every``-th frame,
  default 5x ``--face-every``, ~1/5 of its cost on every frame; 5, prime to the stills' 8-frame hold,
  samples every position in a hold);
- bare clips: share of pixels altered, frames with no face pixel altered, face restorations reported
  (:mod:`benchmarks.bare_faces`).

``checks`` compares the numbers with the "Done when" targets of issues 11 and 12 (our data; the lead
also checks on data we never see). A grid PNG shows face crops: masked | product | Telea | clean.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.bare_faces import evaluate_bare
from benchmarks.baselines import BASELINES, TRUE_MASK_DILATE_PX, baseline_functions, write_through_product_io
from benchmarks.clip_io import ClipError, GroundTruth, read_frames
from benchmarks.environment import device_info, git, models_info, versions
from benchmarks.eval_clips import EvalClipsError, iter_clips, load_index
from benchmarks.face_metrics import evaluate_frames, face_crop_rgb01, load_identity
from benchmarks.lpips import LpipsMetric
from benchmarks.product_run import ProductRunError, run_product
from benchmarks.report import json_safe, setup_logging, write_report
from benchmarks.temporal import evaluate_series, plot_series

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = REPO_ROOT / "models" / "small"
METHODS = ("product", *BASELINES)
GRID_COLUMNS = ("masked", "product", "Telea (true mask)", "clean")
GRID_TILE = 192
GRID_CLIPS = ("stills_facemask_photo", "talking_", "stills_hand", "stills_sunglasses", "bare_")
# Default --lpips-every = this x --face-every: ST-LPIPS costs ~0.15 s per 256 px crop on a 2-core CPU.
LPIPS_EVERY_FACTOR = 5


def _clip_masked(
    clip: Mapping[str, Any],
    files: Mapping[str, Path],
    product: Path,
    work: Path,
    embedder: Any,
    face_every: int,
    lpips: LpipsMetric | None = None,
    lpips_every: int | None = None,
) -> dict[str, Any]:
    truth = GroundTruth.load(files["truth"])
    outs = {name: work / f"{name}.mp4" for name in BASELINES}
    write_through_product_io(files["input"], outs, baseline_functions(), truth)
    videos = {"product": product, **outs}
    series = evaluate_series(videos, files["clean"], truth)
    frames = evaluate_frames(
        videos, files["clean"], truth, embedder, every=face_every, lpips=lpips, lpips_every=lpips_every
    )
    methods = {
        name: {**frames[name], **{k: v for k, v in series["methods"][name].items()}} for name in videos
    }
    return {"methods": methods, "clean_flicker": series["clean_flicker"], "series": series["series"]}


def _grid_rows(
    files: Mapping[str, Path], product: Path, work: Path, picks: int, frames: Sequence[int] | None = None
) -> list[tuple[int, list[np.ndarray]]]:
    """(frame index, face crops (rgb01)) of ``frames`` (default: ``picks`` frames, the middle frame of evenly spaced
    segments for stills, spread over time for a video): masked | product | Telea | clean. A bare clip has
    no clean file and nothing to inpaint: its columns are input | product | pass-through | input."""
    truth = GroundTruth.load(files["truth"])
    if frames is None:
        segs = truth.segments
        uniq = np.unique(segs)
        chosen = []
        for s in uniq[np.linspace(0, len(uniq) - 1, min(picks, len(uniq))).astype(int)]:
            idx = np.nonzero(segs == s)[0]
            chosen.append(int(idx[len(idx) // 2]))
        if len(chosen) < picks:  # one segment (a video): frames spread over time
            chosen = [int(i) for i in np.linspace(truth.frames * 0.15, truth.frames * 0.85, picks)]
    else:
        chosen = list(frames)
    bare = "clean" not in files
    third = work / ("passthrough.mp4" if bare else "telea.mp4")
    videos = [files["input"], product, third, files["input" if bare else "clean"]]
    decoded = [read_frames(v) for v in videos]
    return [(i, [face_crop_rgb01(d[i], truth.face_matrices[i]) for d in decoded]) for i in chosen]


def write_grid(path: Path, rows: Sequence[tuple[str, list[np.ndarray]]]) -> None:
    """PNG: one labelled row per (label, tiles) entry, one column per :data:`GRID_COLUMNS` (rgb01 tiles)."""
    t, header, side = GRID_TILE, 22, 150
    canvas = np.full((header + t * len(rows), side + t * len(GRID_COLUMNS), 3), 255, np.uint8)
    for c, label in enumerate(GRID_COLUMNS):
        cv2.putText(
            canvas, label, (side + c * t + 3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    for r, (label, tiles) in enumerate(rows):
        y = header + r * t
        for k, line in enumerate(label.split("\n")):
            cv2.putText(
                canvas, line, (3, y + 20 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA
            )
        for c, tile in enumerate(tiles):
            u8 = cv2.resize(
                np.clip(np.rint(tile * 255), 0, 255).astype(np.uint8), (t, t), interpolation=cv2.INTER_AREA
            )
            canvas[y : y + t, side + c * t : side + (c + 1) * t] = u8[..., ::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"cannot write grid image {path}")


def _get(
    report: Mapping[str, Any], clip: str, method: str, key: str, stat: str | None = None
) -> float | None:
    c = report["clips"].get(clip)
    if c is None or "methods" not in c:
        return None
    v = c["methods"][method].get(key)
    if stat is not None and isinstance(v, dict):
        v = v.get(stat)
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _check(name: str, value: float | None, target: float | None, op: str) -> dict[str, Any]:
    ok = None if value is None or target is None else (value >= target if op == ">=" else value <= target)
    return {"check": name, "value": value, "target": f"{op} {target}", "passed": ok}


def checks(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The measurable "Done when" items of issues 11 and 12 on our clips (None where a clip is missing)."""
    out = []
    s = "stills_facemask_photo"
    telea_mask = _get(report, s, "telea", "psnr_mask", "mean")
    out.append(_check(f"11: {s} psnr_mask >= Telea + 2 dB", _get(report, s, "product", "psnr_mask", "mean"),
                      None if telea_mask is None else telea_mask + 2, ">="))  # fmt: skip
    telea_face = _get(report, s, "telea", "psnr_face")
    out.append(_check(f"11: {s} face PSNR >= Telea + 0.5 dB", _get(report, s, "product", "psnr_face"),
                      None if telea_face is None else telea_face + 0.5, ">="))  # fmt: skip
    out.append(_check(f"11: {s} face SSIM >= Telea's", _get(report, s, "product", "ssim_face"),
                      _get(report, s, "telea", "ssim_face"), ">="))  # fmt: skip
    out.append(_check(f"11: {s} face LPIPS < Telea's", _get(report, s, "product", "lpips"),
                      _get(report, s, "telea", "lpips"), "<="))  # fmt: skip
    out.append(_check(f"11: {s} identity > masked input's", _get(report, s, "product", "id_cosine"),
                      _get(report, s, "masked_input", "id_cosine"), ">="))  # fmt: skip
    talking = next((c for c in report["clips"] if c.startswith("talking_")), None)
    if talking is not None:
        masked = _get(report, talking, "masked_input", "psnr_mask", "mean")
        out.append(_check(f"11: {talking} psnr_mask >= masked input + 9.5 dB",
                          _get(report, talking, "product", "psnr_mask", "mean"),
                          None if masked is None else masked + 9.5, ">="))  # fmt: skip
        out.append(_check(f"11: {talking} flicker <= 1.3x clean", _get(report, talking, "product", "flicker_ratio"),
                          1.3, "<="))  # fmt: skip
    for name, c in report["clips"].items():
        if c.get("kind") == "bare" and "product" in c:
            p = c["product"]
            out.append(
                _check(
                    f"12: {name} frames with no face pixel altered",
                    p["frames_face_untouched_share"],
                    0.99,
                    ">=",
                )
            )
            out.append(_check(f"12: {name} worst-frame altered share", p["altered_share_worst"], 0.003, "<="))
        elif c.get("occluder") not in (None, "facemask_photo") and "methods" in c:
            telea = _get(report, name, "telea", "psnr_mask", "mean")
            out.append(_check(f"12: {name} psnr_mask >= Telea + 1 dB", _get(report, name, "product", "psnr_mask", "mean"),
                              None if telea is None else telea + 1, ">="))  # fmt: skip
    return out


def table_lines(report: Mapping[str, Any]) -> list[str]:
    """A plain-text table of the main numbers (also written into the JSON)."""
    lines = [f"{'clip':<28} {'method':<14} {'mask PSNR mean/p10/worst':>26} {'frame':>6} {'face':>6} {'SSIMf':>6} "
             f"{'LPIPSf':>6} {'id':>6} {'flicker':>8} {'ratio':>6}"]  # fmt: skip

    def f(v: Any, d: int = 2) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    for name, c in report["clips"].items():
        if "methods" in c:
            for m, v in c["methods"].items():
                pm = v["psnr_mask"]
                lines.append(
                    f"{name:<28} {m:<14} {f(pm['mean']):>8}/{f(pm['p10']):>6}/{f(pm['worst']):>6}      "
                    f"{f(v['psnr_frame']):>6} {f(v['psnr_face']):>6} {f(v['ssim_face'], 3):>6} "
                    f"{f(v.get('lpips'), 3):>6} {f(v['id_cosine'], 3):>6} "
                    f"{f(v['flicker']['mean']):>8} {f(v['flicker_ratio']):>6}"
                )
        elif "product" in c:
            p = c["product"]
            lines.append(
                f"{name:<28} bare: tol {c['tolerance_levels']} levels, altered mean {100 * p['altered_share_mean']:.3f} % "
                f"worst {100 * p['altered_share_worst']:.3f} %, face untouched on {100 * p['frames_face_untouched_share']:.1f} % "
                f"of frames, {c['face_restorations_reported']} face restorations / {p['frames']} frames"
            )
    return lines


def evaluate(
    clips_dir: Path,
    models: Path,
    work: Path,
    face_every: int,
    grid_picks: int,
    plot_stem: Path | None = None,
    product_root: Path = REPO_ROOT,
    lpips_every: int | None = None,
) -> tuple[dict[str, Any], list[tuple[str, list[np.ndarray]]]]:
    """Run and score every clip; ``lpips_every`` defaults to ``LPIPS_EVERY_FACTOR * face_every``."""
    lpips_every = LPIPS_EVERY_FACTOR * face_every if lpips_every is None else lpips_every
    if lpips_every < 1 or lpips_every % face_every:
        raise ValueError(f"--lpips-every must be a positive multiple of --face-every ({face_every})")
    index = load_index(clips_dir)
    embedder = load_identity()
    lpips = LpipsMetric.create_or_none()
    report: dict[str, Any] = {"clips": {}}
    grid: list[tuple[str, list[np.ndarray]]] = []
    for clip, files in iter_clips(index, clips_dir):
        name = clip["name"]
        cwork = work / name
        cwork.mkdir(parents=True, exist_ok=True)
        run = run_product(
            files["input"], cwork / "product.mp4", cwork / "stats.json", models=models, root=product_root
        )
        logger.info("%s: product ran %d frames in %.1f s (%s fps in the pipeline), %d face restorations",
                    name, run.frames, run.wall_s, run.stats.get("fps"), run.restorations)  # fmt: skip
        entry: dict[str, Any] = {
            k: clip[k] for k in ("kind", "source", "occluder", "frames", "people") if k in clip
        }
        entry["run"] = {
            "wall_s": run.wall_s, "pipeline_fps": run.stats.get("fps"), "frames": run.frames,
            "face_restorations": run.restorations, "restorations_from": run.restorations_from,
            "device": run.stats.get("device"), "backend": run.stats.get("backend"),
        }  # fmt: skip
        if run.frames != clip["frames"]:
            raise ClipError(f"{name}: the product wrote {run.frames} frames of {clip['frames']}")
        grid_frames: list[int] | None = None
        if clip["kind"] == "bare":
            truth = GroundTruth.load(files["truth"])
            entry.update(evaluate_bare(files["input"], run.output, truth, cwork, run.restorations))
            grid_frames = [int(np.argmax(entry["series"]["product_altered_share"]))]  # the worst frame
        else:
            entry.update(
                _clip_masked(clip, files, run.output, cwork, embedder, face_every, lpips, lpips_every)
            )
            if plot_stem is not None and name.startswith("talking_"):
                plot = plot_stem.with_name(f"{plot_stem.name}_{name}.png")
                plot_series(entry, plot, f"{name}: product vs baselines given the true mask")
                entry["plot"] = str(plot)
        entry.pop("series", None)
        report["clips"][name] = entry
        if name.startswith(GRID_CLIPS):
            picks = grid_picks if name.startswith("stills_facemask") else 2
            for i, tiles in _grid_rows(files, run.output, cwork, picks, grid_frames):
                label = f"{name}\nframe {i}" + (" (worst)" if grid_frames else "")
                grid.append((label, tiles))
    report["identity_model"] = None if embedder is None else embedder.model_path.name
    report["lpips_model"] = None if lpips is None else {**lpips.info(), "every": lpips_every}
    return report, grid


def _revision_of(root: Path) -> str | None:
    """``git rev-parse HEAD`` of ``root`` (+ "-dirty" with uncommitted changes), None if not a checkout."""
    import subprocess

    def run(*args: str) -> str | None:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    head = run("rev-parse", "HEAD")
    if head is None or Path(run("rev-parse", "--show-toplevel") or "") != root.resolve():
        return None
    return head + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.product", description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=Path, required=True, help="folder made by python -m benchmarks.eval_clips")
    p.add_argument(
        "--models", type=Path, default=DEFAULT_MODELS, help="models for run_stream.py (default: %(default)s)"
    )
    p.add_argument("--json", type=Path, required=True, dest="json_path")
    p.add_argument("--grid", type=Path, default=None, help="grid PNG (default: beside the JSON, *_grid.png)")
    p.add_argument(
        "--work",
        type=Path,
        default=Path("data/product_runs"),
        help="outputs of every run (default: %(default)s)",
    )
    p.add_argument(
        "--product-root",
        type=Path,
        default=REPO_ROOT,
        help="checkout (or git archive) whose run_stream.py is measured (default: this one)",
    )
    p.add_argument(
        "--product-revision",
        default=None,
        help="what --product-root is, for the report (default: its git HEAD, if it is a checkout)",
    )
    p.add_argument(
        "--face-every", type=int, default=1, help="face metrics on every N-th frame (default: %(default)s)"
    )
    p.add_argument(
        "--lpips-every",
        type=int,
        default=None,
        help=f"face LPIPS on every N-th frame, a multiple of --face-every (default: {LPIPS_EVERY_FACTOR}x it)",
    )
    p.add_argument("--grid-picks", type=int, default=4, help="frames of the photo-mask stills in the grid")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        stem = args.json_path.with_name(args.json_path.stem + "_temporal")
        report, grid = evaluate(
            args.clips,
            args.models,
            args.work,
            args.face_every,
            args.grid_picks,
            stem,
            args.product_root,
            args.lpips_every,
        )
    except (EvalClipsError, ClipError, ProductRunError, ValueError, OSError) as exc:
        logger.error("%s", exc)
        return 2
    grid_path = args.grid or args.json_path.with_name(args.json_path.stem + "_grid.png")
    write_grid(grid_path, grid)
    index = load_index(args.clips)
    report.update(
        checks=checks(report),
        device=device_info("cpu"),
        models=models_info(args.models),
        clips_dir=str(args.clips),
        clips_index={k: index[k] for k in ("seed", "held_out", "framing", "encoding", "git_revision")},
        true_mask_dilate_px=TRUE_MASK_DILATE_PX,
        grid=str(grid_path),
        versions=versions(),
        product={
            "root": str(args.product_root),
            "revision": args.product_revision or _revision_of(args.product_root),
        },
        git_revision=git("rev-parse", "HEAD"),
        git_dirty=bool(git("status", "--porcelain", "--untracked-files=no")),
        notes={
            "psnr": "dB, data range 1.0, per-frame values capped at 100 dB; psnr_mask inside the true mask (alpha >= 0.5)",
            "baselines": "Telea / Navier-Stokes given the true mask grown by true_mask_dilate_px, composited inside it; "
            "every method is written through the product's file sink, so all pay the same H.264 encoding",
            "face": "face metrics in the 256 px canonical crop of the clean face (engines.crop)",
            "lpips": "face-crop distance to the clean crop, lower is better: "
            + (
                "left out (see the log)"
                if report["lpips_model"] is None
                else f"{report['lpips_model']['note']}, every {report['lpips_model']['every']}-th frame"
            ),
            "flicker": "mean |frame t - frame t-1| inside the true mask (0-255 levels), within one still/shot; ratio "
            "to the clean clip's, null where the clean clip is still",
            "product": "run_stream.py in a subprocess, default options plus --models, --quiet, --no-audio",
        },
        table=table_lines(report),
    )
    write_report(json_safe(report), args.json_path)
    for line in report["table"]:
        logger.info("%s", line)
    for c in report["checks"]:
        logger.info("%s: %s (target %s) -> %s", c["check"], c["value"], c["target"], c["passed"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
