"""Frames from an occluder's appearance to its restoration, and from its removal to an untouched face.

    python -m benchmarks.onset --clips data/eval_clips --json benchmarks/results/onset.json

From the masked talking clip of :mod:`benchmarks.eval_clips` (a held-out person; its clean clip is the
same video without the face-mask) it splices, for each ``--at`` frame k, two clips in one shot (no scene
cut): ``on_k`` = clean frames before k, masked from k (the mask is put on), and ``off_k`` = masked before
k, clean from k (taken off). Each runs through the product (``run_stream.py`` in a subprocess,
:mod:`benchmarks.product_run`, default options).

- ``frames_to_mask`` (on): frames from k to the first frame whose output differs from its input on at
  least ``--cover`` of the true mask's pixels by more than the pass-through tolerance (0: restored on
  the frame it appeared);
- ``frames_to_untouched`` (off): frames from k to the first frame from which the output's face stays
  unaltered to the clip's end (altered = :func:`benchmarks.bare_faces.opened_diff` above the tolerance
  on any pixel of the face square), i.e. how long a face that has just become bare is still changed.

The tolerance is the largest opened difference the product's own re-encoding leaves on the clip
without restoration (:func:`benchmarks.bare_faces.measure_encode_noise` of an encode-only pass).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bare_faces import face_region, measure_encode_noise, opened_diff
from benchmarks.baselines import write_through_product_io
from benchmarks.clip_io import GroundTruth, VideoWriter, read_frames
from benchmarks.environment import device_info, git, versions
from benchmarks.product_run import ProductRunError, run_product
from benchmarks.report import setup_logging, write_report

log = logging.getLogger("benchmarks.onset")

CLIP = "talking_facemask_photo"


def _write(path: Path, frames: np.ndarray, fps: int) -> None:
    with VideoWriter(path, frames.shape[2], frames.shape[1], fps) as w:
        for f in frames:
            w.write(f)


def measure(clips: Path, at: Sequence[int], cover: float, work: Path) -> dict[str, Any]:
    clean = read_frames(clips / CLIP / "clean.mp4")
    masked = read_frames(clips / CLIP / "input.mp4")
    truth = GroundTruth.load(clips / CLIP / "truth.npz")
    n, hw = len(clean), clean.shape[1:3]
    if len(masked) != n or truth.frames != n:
        raise ValueError(f"{CLIP}: clean, masked and truth disagree ({n}, {len(masked)}, {truth.frames})")
    faces = [face_region(truth.face_matrices[i], hw) for i in range(n)]
    rows = []
    for k in at:
        if not 0 < k < n - 1:
            raise ValueError(f"--at {k} is outside the clip's 1..{n - 2}")
        for kind, frames in (
            ("on", np.concatenate([clean[:k], masked[k:]])),
            ("off", np.concatenate([masked[:k], clean[k:]])),
        ):
            name = f"{kind}_{k}"
            src, out = work / f"{name}.mp4", work / f"{name}_restored.mp4"
            _write(src, frames, 30)
            decoded = read_frames(src)  # what the product reads
            passthrough = work / f"{name}_pass.mp4"
            write_through_product_io(src, {"pass": passthrough}, {"pass": lambda f, _m: f}, None)
            tol = measure_encode_noise(src, passthrough).tolerance
            run = run_product(src, out, work / f"{name}.json", models=None)
            restored = read_frames(out)
            altered = [opened_diff(r, d) > tol for r, d in zip(restored, decoded, strict=True)]
            row: dict[str, Any] = {"clip": name, "kind": kind, "at": k, "tolerance": tol,
                                   "face_restorations": run.restorations}  # fmt: skip
            if kind == "on":
                shares = [float(altered[i][truth.masks[i]].mean()) for i in range(k, n)]
                hit = next((j for j, s in enumerate(shares) if s >= cover), None)
                row.update(
                    frames_to_mask=hit, mask_share_altered_first_frames=[round(s, 3) for s in shares[:6]]
                )
            else:
                touched = [bool(altered[i][faces[i]].any()) for i in range(k, n)]
                last = max((j for j, t in enumerate(touched) if t), default=-1)
                row.update(frames_to_untouched=last + 1, touched_after_removal=int(sum(touched)))
            log.info("%s: %s", name, {key: v for key, v in row.items() if key != "clip"})
            rows.append(row)
    return {"rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=Path, required=True, help="folder made by python -m benchmarks.eval_clips")
    p.add_argument("--json", type=Path, required=True, dest="json_path")
    p.add_argument("--at", type=int, nargs="+", default=[40, 90], help="frames where the occluder changes")
    p.add_argument("--cover", type=float, default=0.5, help="share of the true mask that counts as restored")
    args = p.parse_args(argv)
    setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = measure(args.clips, args.at, args.cover, Path(tmp))
        except (ProductRunError, ValueError, OSError) as e:
            log.error("%s", e)
            return 1
    report.update(
        benchmark="onset",
        source_clip=CLIP,
        cover=args.cover,
        device=device_info("cpu"),
        versions=versions(),
        git_revision=git("rev-parse", "HEAD"),
        git_dirty=bool(git("status", "--porcelain", "--untracked-files=no")),
        notes="product = run_stream.py with default options (segmenter gate: frames_on 3, frames_off 8, "
        "first-frame shortcut for new tracks); frames counted from the change",
    )
    write_report(report, args.json_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
