"""SFace identity embeddings run through onnxruntime on any OpenCV (the graph is rewritten at load)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from engines.assets import demo_clip
from engines.crop import estimate_alignment, warp_to_crop
from engines.errors import ModelLoadError
from engines.face_detect import YuNetDetector
from training.identity import IdentityEmbedder, cosine, find_sface_model, load_sface_graph


def test_sface_model_is_bundled() -> None:
    assert find_sface_model() is not None, "models/sface/ must ship the SFace file"


def _demo_crops(indices: tuple[int, ...], size: int = 128) -> list[np.ndarray]:
    detector = YuNetDetector()
    crops: list[np.ndarray] = []
    with av.open(str(demo_clip())) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                bgr = frame.to_ndarray(format="bgr24")
                face = max(detector.detect(bgr), key=lambda f: f.score)
                crop_bgr = warp_to_crop(bgr, estimate_alignment(face.landmarks, size))
                crops.append(np.ascontiguousarray(crop_bgr[..., ::-1]))
            if i >= max(indices):
                break
    return crops


def test_rewritten_graph_has_one_batched_image_input() -> None:
    import onnx

    model = onnx.load_from_string(load_sface_graph(find_sface_model()))
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "data"
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [3, 112, 112]


def test_same_face_scores_higher_than_a_scrambled_face() -> None:
    a, b = _demo_crops((0, 60))
    scrambled = np.random.default_rng(0).permutation(a.reshape(-1, 3)).reshape(a.shape)
    emb = IdentityEmbedder().embed([a, b, scrambled])
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    same, other = cosine(emb[0], emb[1]), cosine(emb[0], emb[2])
    # OpenCV's own SFace verification threshold is 0.363.
    assert same > 0.6 and same > other + 0.3


def test_batch_matches_one_by_one() -> None:
    crops = _demo_crops((0, 30))
    embedder = IdentityEmbedder()
    together = embedder.embed(crops)
    alone = np.concatenate([embedder.embed([c]) for c in crops])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_corrupt_model_file_is_a_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "sface.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ModelLoadError, match="SFace"):
        IdentityEmbedder(bad)
