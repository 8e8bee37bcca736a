"""Synthetic faces with a synthetic face mesh for the segmenter tests (no shared data, no mediapipe run)."""

from __future__ import annotations

import cv2
import numpy as np

from engines.crop import template
from engines.facemesh import face_oval
from training.data.segmentation_faces import FaceSet, region_from_landmarks


def synthetic_face_set(n: int = 4, size: int = 64, seed: int = 0) -> FaceSet:
    """``n`` drawn faces (skin ellipse, eyes, mouth on a textured background) at ``size`` px, with a
    478-point "mesh" whose face-oval points lie on the skin ellipse's outline."""
    rng = np.random.default_rng(seed)
    lm5 = template(size)
    crops, meshes = [], []
    for _ in range(n):
        bg = rng.integers(0, 255, (size // 8, size // 8, 3)).astype(np.uint8)
        img = cv2.resize(bg, (size, size), interpolation=cv2.INTER_LINEAR)
        centre = np.array([size / 2, size * 0.55]) + rng.normal(0, size * 0.01, 2)
        axes = np.array([size * 0.3, size * 0.38]) * rng.uniform(0.95, 1.05, 2)
        skin = tuple(int(v) for v in rng.integers(120, 230, 3))
        cv2.ellipse(img, (int(centre[0]), int(centre[1])), (int(axes[0]), int(axes[1])), 0, 0, 360, skin, -1)
        for x, y in lm5[:2]:
            cv2.circle(img, (int(x), int(y)), max(1, size // 32), (30, 30, 30), -1)
        cv2.line(img, tuple(int(v) for v in lm5[3]), tuple(int(v) for v in lm5[4]), (150, 40, 40), 2)
        mesh = np.tile(np.array([[centre[0], centre[1], 0.0]], np.float32), (478, 1))
        oval = face_oval()
        t = np.linspace(-np.pi / 2, 1.5 * np.pi, len(oval), endpoint=False)
        mesh[oval, 0] = centre[0] + axes[0] * np.cos(t)
        mesh[oval, 1] = centre[1] + axes[1] * np.sin(t)
        crops.append(img)
        meshes.append(mesh)
    mesh_arr = np.stack(meshes)
    regions = np.stack([region_from_landmarks(m, size) for m in mesh_arr])
    people = tuple(f"person{i}" for i in range(n))
    return FaceSet(np.stack(crops), mesh_arr, np.stack([lm5] * n), people, regions)
