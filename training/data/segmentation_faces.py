"""Clean aligned faces with their whole-face region, the raw material of visible-face segmentation.

A face's region is the filled face-oval polygon of mediapipe's face mesh (478 points) run
on the CLEAN canonical crop (paper 003, Eq. 1: the occlusion is this region minus the visible face).
Faces are aligned with the stream pipeline's alignment (:func:`training.data.faces.load_manifest_faces`)
at ``mesh_size`` px (256: the mesh is more precise on a larger crop), meshed once, and cached in one
``.npz``; :meth:`FaceSet.at_size` then resizes crops and rasterises regions for the model's crop size
(the canonical template scales linearly with the crop, so the same landmarks serve every size).

The mesh and the region come from :mod:`engines.facemesh` (the same code the product runs on the
occluded crop).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.facemesh import FaceMesh, FaceMeshConfig, face_region_mask

log = logging.getLogger(__name__)

CACHE_VERSION = 1

MeshFn = Callable[[np.ndarray], "np.ndarray | None"]


def region_from_landmarks(landmarks_xy: np.ndarray, size: int) -> np.ndarray:
    """(size, size) float32 in {0, 1}: the filled face-oval polygon of (478, 2+) pixel landmarks of a
    ``size`` crop (:func:`engines.facemesh.face_region_mask`, the same function the product runs)."""
    return face_region_mask(np.asarray(landmarks_xy, np.float32), (size, size))


def mesh_function() -> MeshFn:
    """``rgb_u8 (H, W, 3) -> (478, 3) float32 pixel landmarks | None``: :class:`engines.facemesh.FaceMesh`
    in static-image mode (every crop is a new image)."""
    return FaceMesh(FaceMeshConfig(static_image_mode=True, refine_landmarks=True)).landmarks


@dataclass(frozen=True)
class FaceSet:
    """Clean canonical crops with mesh landmarks.

    ``rgb_u8``: (N, S, S, 3) uint8 RGB crops. ``mesh``: (N, 478, 3) float32 landmarks in pixels of the
    S crop. ``landmarks5``: (N, 5, 2) float64 YuNet landmarks in crop pixels. ``people``: N person
    names. ``regions``: (N, S, S) float32 {0, 1} face regions (filled by :meth:`at_size`).
    """

    rgb_u8: np.ndarray
    mesh: np.ndarray
    landmarks5: np.ndarray
    people: tuple[str, ...]
    regions: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.people)
        s = self.rgb_u8.shape[1] if self.rgb_u8.ndim == 4 else -1
        if self.rgb_u8.shape != (n, s, s, 3) or self.rgb_u8.dtype != np.uint8:
            raise ValueError(
                f"rgb_u8 must be ({n}, S, S, 3) uint8, got {self.rgb_u8.shape} {self.rgb_u8.dtype}"
            )
        if self.mesh.shape[:1] != (n,) or self.mesh.ndim != 3 or self.mesh.shape[2] != 3:
            raise ValueError(f"mesh must be ({n}, 478, 3), got {self.mesh.shape}")
        if self.landmarks5.shape != (n, 5, 2):
            raise ValueError(f"landmarks5 must be ({n}, 5, 2), got {self.landmarks5.shape}")
        if self.regions.shape != (n, s, s):
            raise ValueError(f"regions must be ({n}, {s}, {s}), got {self.regions.shape}")

    @property
    def crop_size(self) -> int:
        return int(self.rgb_u8.shape[1])

    def __len__(self) -> int:
        return len(self.people)

    def at_size(self, size: int) -> FaceSet:
        """The same faces at ``size`` px: crops area-resized, landmarks scaled, regions re-rasterised."""
        k = size / self.crop_size
        interp = cv2.INTER_AREA if size < self.crop_size else cv2.INTER_CUBIC
        crops = np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in self.rgb_u8])
        mesh = (self.mesh * np.float32(k)).astype(np.float32)
        regions = np.stack([region_from_landmarks(m, size) for m in mesh])
        return FaceSet(crops, mesh, self.landmarks5 * k, self.people, regions)

    def select(self, keep: Sequence[bool]) -> FaceSet:
        idx = np.flatnonzero(np.asarray(keep, bool))
        return FaceSet(
            self.rgb_u8[idx],
            self.mesh[idx],
            self.landmarks5[idx],
            tuple(self.people[i] for i in idx),
            self.regions[idx],
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            version=np.int64(CACHE_VERSION),
            rgb_u8=self.rgb_u8,
            mesh=self.mesh,
            landmarks5=self.landmarks5,
            people=np.array(self.people),
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FaceSet:
        with np.load(path) as data:
            if int(data["version"]) != CACHE_VERSION:
                raise ValueError(
                    f"{path}: face cache version {int(data['version'])}, expected {CACHE_VERSION}"
                )
            rgb, mesh = data["rgb_u8"], data["mesh"]
            people = tuple(str(p) for p in data["people"])
            lm5 = data["landmarks5"]
        regions = (
            np.stack([region_from_landmarks(m, rgb.shape[1]) for m in mesh])
            if len(people)
            else (np.zeros((0, rgb.shape[1], rgb.shape[1]), np.float32))
        )
        return cls(rgb, mesh, lm5, people, regions)


def mesh_faces(
    crops_rgb_u8: Sequence[np.ndarray],
    landmarks5: Sequence[np.ndarray],
    people: Sequence[str],
    mesh_fn: MeshFn | None = None,
) -> FaceSet:
    """Meshes clean crops (all the same size S) and keeps those where the mesh finds the face (logged)."""
    fn = mesh_fn or mesh_function()
    kept_rgb, kept_mesh, kept_lm, kept_people = [], [], [], []
    for rgb, lm5, person in zip(crops_rgb_u8, landmarks5, people, strict=True):
        mesh = fn(rgb)
        if mesh is None:
            continue
        kept_rgb.append(rgb)
        kept_mesh.append(np.asarray(mesh, np.float32)[:, :3])
        kept_lm.append(np.asarray(lm5, np.float64))
        kept_people.append(person)
    missed = len(people) - len(kept_people)
    if missed:
        log.info("face mesh found no face on %d of %d clean crops; they are left out", missed, len(people))
    if not kept_rgb:
        raise ValueError("the face mesh found no face on any crop")
    rgb = np.stack(kept_rgb)
    s = rgb.shape[1]
    regions = np.stack([region_from_landmarks(m, s) for m in kept_mesh])
    return FaceSet(rgb, np.stack(kept_mesh), np.stack(kept_lm), tuple(kept_people), regions)


def manifest_face_set(
    manifest_csv: str | Path,
    records: Sequence[Mapping[str, str]],
    cache: Path | None,
    mesh_size: int = 256,
) -> FaceSet:
    """Aligned + meshed faces of manifest ``records`` at ``mesh_size``; cached in ``cache`` when given."""
    if cache is not None and cache.is_file():
        return FaceSet.load(cache)
    from training.data.faces import load_manifest_faces

    faces = load_manifest_faces(manifest_csv, records, mesh_size)
    result = mesh_faces([f.rgb_u8 for f in faces], [f.landmarks for f in faces], [f.person for f in faces])
    if cache is not None:
        result.save(cache)
        log.info("cached %d meshed faces of %s in %s", len(result), manifest_csv, cache)
    return result
