"""Build an FMOR-layout evaluation (or training) set from face photos, videos or a face manifest.

``python -m training.data.build --faces DIR_OR_MANIFEST --out DIR --crop-size 256 [--split val|train|all]
[--manifest CSV] [--holdout-fraction 0.15] [--split-seed 0] [--seed 0] [--styles photo ...]``

Writes ``DIR/A`` (occluded crops), ``DIR/B`` (clean crops, same names), ``DIR/face-mask`` (8-bit masks,
white = occluded, antialiased edge), all canonical crops aligned with the stream pipeline's alignment;
``DIR/split.json`` (people of each split, and which split this set is) and ``DIR/info.json`` (crop size,
synthesis settings, seed, counts). ``python -m benchmarks.quality --dataset DIR`` reads this layout, and
so does :class:`training.data.datasets.FMORDataset`.

People are split with :func:`training.data.faces.split_by_person`: a manifest names them
(``person_hint``); a folder takes sub-folders (else files, and each video) as people. Choose settings
the training did not use for a fair evaluation (e.g. ``--styles photo``: real mask photographs).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from training.data.faces import (
    FaceDataError,
    list_media,
    load_faces,
    load_manifest_faces,
    read_manifest,
    split_by_person,
)
from training.data.occlusion import FACEMASK_STYLES, KINDS, SynthesisConfig
from training.data.synth_common import FaceGeometry

log = logging.getLogger("training.data.build")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "face"


def build(
    faces_arg: Path,
    out: Path,
    crop_size: int,
    split: str,
    holdout_fraction: float,
    seed: int,
    synthesis: SynthesisConfig,
    *,
    split_seed: int = 0,
    manifest: Path | None = None,
    per_face: int = 1,
    every_n: int = 8,
    aligned: bool = False,
) -> dict[str, object]:
    """Writes the dataset; returns the info dict written to ``info.json``."""
    manifest = manifest or (faces_arg if faces_arg.suffix.lower() == ".csv" else None)
    if manifest is not None:
        rows = read_manifest(manifest)
        person_split = split_by_person(rows, holdout_fraction, split_seed)
        faces = load_manifest_faces(manifest, person_split.select(split), crop_size)
        train_people, val_people = person_split.train_people, person_split.val_people
    else:
        media = list_media(faces_arg)
        records = [{"person_hint": person, "crop_file": str(path)} for path, person in media]
        person_split = split_by_person(records, holdout_fraction, split_seed)
        chosen = {r["crop_file"] for r in person_split.select(split)}
        faces = load_faces(
            [(p, who) for p, who in media if str(p) in chosen], crop_size, aligned=aligned, every_n=every_n
        )
        train_people, val_people = person_split.train_people, person_split.val_people
    if not faces:
        raise FaceDataError(f"no faces found for split {split!r} of {faces_arg}")
    for sub in ("A", "B", "face-mask"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    kinds: dict[str, int] = {}
    count = 0
    for i, face in enumerate(faces):
        for j in range(per_face):
            rng = np.random.default_rng([seed, i, j])
            occ = synthesis.apply(face.rgb_u8, rng, FaceGeometry(crop_size, face.landmarks))
            name = f"{count:05d}_{_slug(face.person)}.png"
            cv2.imwrite(str(out / "A" / name), cv2.cvtColor(occ.image_rgb_u8, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out / "B" / name), cv2.cvtColor(face.rgb_u8, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out / "face-mask" / name), np.rint(occ.mask_f32 * 255).astype(np.uint8))
            kinds[occ.kind] = kinds.get(occ.kind, 0) + 1
            count += 1
    split_info = {"split": split, "holdout_fraction": holdout_fraction, "split_seed": split_seed,
                  "train_people": list(train_people), "val_people": list(val_people),
                  "people_in_this_set": sorted({f.person for f in faces})}  # fmt: skip
    (out / "split.json").write_text(json.dumps(split_info, indent=2))
    info: dict[str, object] = {
        "aligned": True,
        "crop_size": crop_size,
        "alignment": "engines.crop (ArcFace 5-point template enlarged 1.5x), YuNet landmarks",
        "source": str(manifest or faces_arg),
        "split": split,
        "samples": count,
        "faces": len(faces),
        "seed": seed,
        "synthesis": {
            "kinds": list(synthesis.kinds),
            "weights": synthesis.weights,
            "facemask_styles": list(synthesis.facemask_styles),
            "photo_textures": list(synthesis.photo_textures),
            "colour_families": list(synthesis.colour_families),
            "second_prob": synthesis.second_prob,
        },  # fmt: skip
        "kinds_drawn": dict(sorted(kinds.items())),
    }
    (out / "info.json").write_text(json.dumps(info, indent=2))
    return info


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.data.build",
        description="Build an FMOR-layout set (A/ occluded, B/ clean, face-mask/, split.json, info.json) of "
        "aligned face crops with synthesised occlusions, split by person.",
    )
    p.add_argument(
        "--faces", required=True, type=Path, help="folder of face photos/videos, or a face manifest CSV"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--crop-size", type=int, default=256, help="crop side in pixels (64, 128 or 256 for the profiles)"
    )
    p.add_argument(
        "--split", choices=("val", "train", "all"), default="val", help="which person split to write"
    )
    p.add_argument(
        "--manifest", type=Path, default=None, help="manifest CSV (when --faces is not one itself)"
    )
    p.add_argument(
        "--holdout-fraction", type=float, default=0.15, help="share of records held out by person (val)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the occlusion synthesis")
    p.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="seed of the person split (match the training config's split_seed)",
    )
    p.add_argument(
        "--styles", nargs="+", default=list(FACEMASK_STYLES), choices=FACEMASK_STYLES, help="face-mask styles"
    )
    p.add_argument(
        "--kinds", nargs="+", default=["facemask"], choices=KINDS, help="occluder kinds (default: facemask)"
    )
    p.add_argument("--per-face", type=int, default=1, help="occluded variants per face")
    p.add_argument("--every-n", type=int, default=8, help="take every n-th frame of videos")
    p.add_argument(
        "--aligned", action="store_true", help="the folder holds canonical crops already (no detection)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.per_face < 1:
            raise ValueError(f"--per-face must be >= 1, got {args.per_face}")
        synthesis = SynthesisConfig(kinds=tuple(args.kinds), facemask_styles=tuple(args.styles))
        info = build(
            args.faces,
            args.out,
            args.crop_size,
            args.split,
            args.holdout_fraction,
            args.seed,
            synthesis,
            split_seed=args.split_seed,
            manifest=args.manifest,
            per_face=args.per_face,
            every_n=args.every_n,
            aligned=args.aligned,
        )
    except (FaceDataError, OSError, ValueError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {info['samples']} samples ({info['faces']} faces, split {info['split']}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
