"""The prior's geometry: mesh vertices extended past the face oval, triangles, and a rasterised frame.

Coordinates are *normalised crop units*: ``u = (x_px + 0.5) / S`` for a pixel coordinate ``x_px`` of an
S-pixel canonical crop (OpenCV convention: pixel i is centred on i), so one model serves every crop size.

Vertices (``NUM_VERTICES`` = 504): mediapipe's 468 mesh points, then 36 "ring" points pushed outward from
the face oval, so the texture model also covers the neck under the chin and the cheeks' edge, where a
face-mask reaches beyond the face oval. Triangles: the mesh's tessellation, its three holes (eyes,
mouth) filled by ear clipping in the mean shape, and two triangles per oval/ring quad.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_MESH = 468
RING_SCALE = 1.3  # the ring sits at 1.3x the oval's distance from its centroid
NUM_RING = 36
NUM_VERTICES = NUM_MESH + NUM_RING


def extend_vertices(mesh_uv: np.ndarray, oval: np.ndarray) -> np.ndarray:
    """(N >= 468, 2) mesh points -> (504, 2) float64 vertices: the 468 mesh points + the 36 ring points.

    ``oval``: (36,) indices of the ordered face-oval polygon (:func:`engines.facemesh.face_oval`).
    """
    pts = np.asarray(mesh_uv, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < NUM_MESH or pts.shape[1] < 2:
        raise ValueError(f"mesh points must be (>= 468, 2), got {pts.shape}")
    if oval.shape != (NUM_RING,):
        raise ValueError(f"oval must be ({NUM_RING},) indices, got {oval.shape}")
    mesh = pts[:NUM_MESH, :2]
    ring_base = mesh[oval]
    centre = ring_base.mean(0)
    return np.concatenate([mesh, centre + RING_SCALE * (ring_base - centre)])


def _ear_clip(poly_xy: np.ndarray) -> list[tuple[int, int, int]]:
    """Triangulate a simple polygon (M, 2), either orientation; returns index triples into ``poly_xy``."""
    idx = list(range(len(poly_xy)))
    x, y = poly_xy[:, 0], poly_xy[:, 1]
    area2 = float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    sign = 1.0 if area2 > 0 else -1.0
    tris: list[tuple[int, int, int]] = []

    def cross(a: int, b: int, c: int) -> float:
        return float((x[b] - x[a]) * (y[c] - y[a]) - (y[b] - y[a]) * (x[c] - x[a]))

    while len(idx) > 3:
        best, best_score = None, -np.inf
        for k in range(len(idx)):
            a, b, c = idx[k - 1], idx[k], idx[(k + 1) % len(idx)]
            turn = sign * cross(a, b, c)
            if turn <= 1e-12:
                continue
            others = [p for p in idx if p not in (a, b, c)]
            inside = any(
                sign * cross(a, b, p) > 0 and sign * cross(b, c, p) > 0 and sign * cross(c, a, p) > 0
                for p in others
            )
            if inside:
                continue
            # Of the valid ears, clip the fattest first: slivers make the warp of the hole unstable.
            lens = [np.hypot(x[i] - x[j], y[i] - y[j]) for i, j in ((a, b), (b, c), (c, a))]
            score = turn / (max(lens) ** 2 + 1e-12)
            if score > best_score:
                best, best_score = k, score
        if best is None:  # a degenerate (e.g. closed-mouth, zero-area) polygon: fan the rest
            tris += [(idx[0], idx[i], idx[i + 1]) for i in range(1, len(idx) - 1)]
            return tris
        k = best
        tris.append((idx[k - 1], idx[k], idx[(k + 1) % len(idx)]))
        del idx[k]
    tris.append((idx[0], idx[1], idx[2]))
    return tris


def build_triangles(
    mean_vertices_uv: np.ndarray,
    tessellation: np.ndarray,
    holes: list[np.ndarray],
    oval: np.ndarray,
) -> np.ndarray:
    """(F, 3) int32 triangles over the 504 vertices: tessellation + filled holes + the oval/ring band."""
    tris = [np.asarray(tessellation, dtype=np.int64)]
    for loop in holes:
        local = _ear_clip(mean_vertices_uv[loop])
        tris.append(np.asarray([[loop[a], loop[b], loop[c]] for a, b, c in local], dtype=np.int64))
    ring = np.arange(NUM_MESH, NUM_VERTICES)
    band = []
    for i in range(NUM_RING):
        j = (i + 1) % NUM_RING
        band += [(oval[i], oval[j], ring[i]), (oval[j], ring[j], ring[i])]
    tris.append(np.asarray(band, dtype=np.int64))
    return np.concatenate(tris).astype(np.int32)


@dataclass(frozen=True)
class RasterFrame:
    """Domain pixels of the texture frame and their barycentric coordinates in the mean shape.

    ``size``: the frame's side T (pixels). ``pixels``: (P,) int32 flat indices (row * T + col) of the pixels
    covered by a triangle; ``vertex_ids``: (P, 3) int32 vertices of each pixel's triangle; ``bary``:
    (P, 3) float32 barycentric weights (sum 1). The frame position of pixel p in any face with vertices V
    (504, 2) is ``sum_k bary[p, k] * V[vertex_ids[p, k]]``: a piecewise-affine warp.
    """

    size: int
    pixels: np.ndarray
    vertex_ids: np.ndarray
    bary: np.ndarray

    def __post_init__(self) -> None:
        p = self.pixels.shape[0]
        if self.pixels.shape != (p,) or self.vertex_ids.shape != (p, 3) or self.bary.shape != (p, 3):
            raise ValueError(
                f"raster frame needs pixels (P,), vertex_ids (P, 3), bary (P, 3); got {self.pixels.shape}, "
                f"{self.vertex_ids.shape}, {self.bary.shape}"
            )
        if p == 0 or int(self.pixels.max()) >= self.size * self.size or int(self.pixels.min()) < 0:
            raise ValueError(f"raster pixels must be non-empty flat indices into a {self.size}^2 frame")
        if int(self.vertex_ids.max()) >= NUM_VERTICES or int(self.vertex_ids.min()) < 0:
            raise ValueError(f"vertex ids must be in [0, {NUM_VERTICES})")

    def positions(self, vertices_uv: np.ndarray) -> np.ndarray:
        """(P, 2) float32 normalised crop positions of the domain pixels for a face's (504, 2) vertices."""
        v = np.asarray(vertices_uv, dtype=np.float32)
        if v.shape != (NUM_VERTICES, 2):
            raise ValueError(f"vertices must be ({NUM_VERTICES}, 2), got {v.shape}")
        return np.einsum("pk,pkd->pd", self.bary, v[self.vertex_ids])

    def domain(self) -> np.ndarray:
        """(T, T) bool: which frame pixels the model covers."""
        m = np.zeros(self.size * self.size, dtype=bool)
        m[self.pixels] = True
        return m.reshape(self.size, self.size)


def rasterize(vertices_uv: np.ndarray, triangles: np.ndarray, size: int) -> RasterFrame:
    """Rasterise the triangles of ``vertices_uv`` (504, 2), normalised units, into a ``size``^2 frame.

    A pixel belongs to the first triangle containing its centre (overlaps, e.g. where the ring band folds
    at the crop border, are resolved in triangle order: the face before the band).
    """
    v = np.asarray(vertices_uv, dtype=np.float64) * size - 0.5  # pixel coordinates, centres at integers
    owner = np.full(size * size, -1, dtype=np.int64)
    bary = np.zeros((size * size, 3), dtype=np.float64)
    for t, (a, b, c) in enumerate(np.asarray(triangles)):
        pa, pb, pc = v[a], v[b], v[c]
        lo = np.floor(np.minimum(np.minimum(pa, pb), pc)).astype(int)
        hi = np.ceil(np.maximum(np.maximum(pa, pb), pc)).astype(int)
        lo, hi = np.clip(lo, 0, size - 1), np.clip(hi, 0, size - 1)
        if np.any(hi < lo):
            continue
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        det = (pb[1] - pc[1]) * (pa[0] - pc[0]) + (pc[0] - pb[0]) * (pa[1] - pc[1])
        if abs(det) < 1e-12:
            continue
        wa = ((pb[1] - pc[1]) * (xs - pc[0]) + (pc[0] - pb[0]) * (ys - pc[1])) / det
        wb = ((pc[1] - pa[1]) * (xs - pc[0]) + (pa[0] - pc[0]) * (ys - pc[1])) / det
        wc = 1.0 - wa - wb
        inside = (wa >= -1e-9) & (wb >= -1e-9) & (wc >= -1e-9)
        flat = (ys * size + xs)[inside]
        free = owner[flat] < 0
        flat = flat[free]
        owner[flat] = t
        bary[flat] = np.stack([wa[inside][free], wb[inside][free], wc[inside][free]], axis=1)
    pixels = np.flatnonzero(owner >= 0).astype(np.int32)
    tri = np.asarray(triangles)[owner[pixels]]
    return RasterFrame(size, pixels, tri.astype(np.int32), bary[pixels].astype(np.float32))
