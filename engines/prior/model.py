"""The face prior's model file: a linear (morphable) face model in one small versioned ``.npz``.

Loaded with ``np.load(allow_pickle=False)``: nothing in the file can run code. Contents (format 1):

- ``format_version`` () int32; ``metadata`` () unicode JSON (what built it, from which data, when).
- ``shape_mean`` (468, 2) float32 and ``shape_basis`` (Ks, 468, 2) float32 (orthonormal rows) with
  ``shape_std`` (Ks,) float32: PCA of the mesh in normalised crop units (see :mod:`engines.prior.frame`).
- ``triangles`` (F, 3) int32 over the 504 extended vertices; ``oval`` (36,) int32; ``mirror`` (468,)
  int32, the mesh point that mirrors each point (left/right), an involution.
- ``tex_size`` () int32 T; ``tex_mean`` (P, 3) float32 and ``tex_basis`` (Kt, P, 3) float16 (orthonormal
  rows) with ``tex_std`` (Kt,) float32: PCA of rgb01 texture over the P domain pixels of the T x T frame
  rasterised from the mean shape's extended vertices (recomputed at load; deterministic).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import ModelLoadError
from engines.prior.frame import NUM_MESH, NUM_VERTICES, RasterFrame, extend_vertices, rasterize

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_KEYS = (
    "format_version",
    "metadata",
    "shape_mean",
    "shape_basis",
    "shape_std",
    "triangles",
    "oval",
    "mirror",
    "tex_size",
    "tex_mean",
    "tex_basis",
    "tex_std",
)


@dataclass(frozen=True)
class PriorModel:
    """A loaded face prior; arrays as in the module docstring (float32 in memory). Immutable, thread-safe."""

    shape_mean: np.ndarray
    shape_basis: np.ndarray
    shape_std: np.ndarray
    triangles: np.ndarray
    oval: np.ndarray
    mirror: np.ndarray
    tex_size: int
    tex_mean: np.ndarray
    tex_basis: np.ndarray
    tex_std: np.ndarray
    metadata: dict[str, Any]

    def __post_init__(self) -> None:
        ks = self.shape_basis.shape[0] if self.shape_basis.ndim == 3 else -1
        if self.shape_mean.shape != (NUM_MESH, 2):
            raise ValueError(f"shape_mean must be ({NUM_MESH}, 2), got {self.shape_mean.shape}")
        if self.shape_basis.shape != (ks, NUM_MESH, 2) or self.shape_std.shape != (ks,) or ks < 1:
            raise ValueError(
                f"shape_basis must be (Ks, {NUM_MESH}, 2) with shape_std (Ks,), got "
                f"{self.shape_basis.shape} and {self.shape_std.shape}"
            )
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            raise ValueError(f"triangles must be (F, 3), got {self.triangles.shape}")
        if int(self.triangles.min()) < 0 or int(self.triangles.max()) >= NUM_VERTICES:
            raise ValueError(f"triangle indices must be in [0, {NUM_VERTICES})")
        if self.oval.shape != (36,) or self.mirror.shape != (NUM_MESH,):
            raise ValueError(
                f"oval must be (36,) and mirror ({NUM_MESH},), got {self.oval.shape}, {self.mirror.shape}"
            )
        if not np.array_equal(self.mirror[self.mirror], np.arange(NUM_MESH)):
            raise ValueError("mirror must be an involution (mirroring twice gives each point back)")
        if not 16 <= self.tex_size <= 512:
            raise ValueError(f"tex_size must be in [16, 512], got {self.tex_size}")
        p = self.tex_mean.shape[0]
        kt = self.tex_basis.shape[0] if self.tex_basis.ndim == 3 else -1
        if self.tex_mean.shape != (p, 3) or self.tex_basis.shape != (kt, p, 3) or self.tex_std.shape != (kt,):
            raise ValueError(
                f"tex_mean must be (P, 3), tex_basis (Kt, P, 3), tex_std (Kt,); got {self.tex_mean.shape}, "
                f"{self.tex_basis.shape}, {self.tex_std.shape}"
            )
        if self.raster.pixels.shape[0] != p:
            raise ValueError(
                f"the texture has {p} pixels but the mean shape rasterises to {self.raster.pixels.shape[0]} "
                f"at tex_size {self.tex_size}: the file's arrays do not belong together"
            )
        for name in ("shape_mean", "shape_basis", "shape_std", "tex_mean", "tex_basis", "tex_std"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{name} has non-finite values")

    @property
    def num_shape(self) -> int:
        return int(self.shape_basis.shape[0])

    @property
    def num_texture(self) -> int:
        return int(self.tex_basis.shape[0])

    @cached_property
    def mean_vertices(self) -> np.ndarray:
        """(504, 2) float64 extended vertices of the mean shape (normalised crop units)."""
        return extend_vertices(self.shape_mean, self.oval)

    @cached_property
    def raster(self) -> RasterFrame:
        """The texture frame: which T x T pixels the model covers and where they sit in the mean shape."""
        return rasterize(self.mean_vertices, self.triangles, self.tex_size)

    @cached_property
    def tex_basis_flat(self) -> np.ndarray:
        """(P * 3, Kt) float32 texture basis as columns (pixel-major, RGB interleaved), for the fit."""
        return np.ascontiguousarray(self.tex_basis.reshape(self.num_texture, -1).T, dtype=np.float32)

    @cached_property
    def shape_basis_flat(self) -> np.ndarray:
        """(468 * 2, Ks) float64 shape basis as columns."""
        return self.shape_basis.reshape(self.num_shape, -1).T.astype(np.float64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the file (float16 texture basis), for :func:`save_prior`."""
        return {
            "format_version": np.array(FORMAT_VERSION, dtype=np.int32),
            "metadata": np.array(json.dumps(self.metadata, sort_keys=True)),
            "shape_mean": self.shape_mean.astype(np.float32),
            "shape_basis": self.shape_basis.astype(np.float32),
            "shape_std": self.shape_std.astype(np.float32),
            "triangles": self.triangles.astype(np.int32),
            "oval": self.oval.astype(np.int32),
            "mirror": self.mirror.astype(np.int32),
            "tex_size": np.array(self.tex_size, dtype=np.int32),
            "tex_mean": self.tex_mean.astype(np.float32),
            "tex_basis": self.tex_basis.astype(np.float16),
            "tex_std": self.tex_std.astype(np.float32),
        }


def save_prior(model: PriorModel, path: str | Path) -> Path:
    """Write ``model`` as a compressed ``.npz`` (the suffix is added if missing); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as fh:
        np.savez_compressed(fh, **model.to_arrays())  # type: ignore[arg-type]
    return out


def load_prior(path: str | Path) -> PriorModel:
    """Load and validate a prior file; :class:`engines.errors.ModelLoadError` if missing, corrupt or foreign."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"face prior file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as data:
            missing = [k for k in _KEYS if k not in data.files]
            if missing:
                raise ModelLoadError(f"{p} is not a face prior file (missing {missing})")
            arrays = {k: data[k] for k in _KEYS}
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ModelLoadError):
            raise
        raise ModelLoadError(f"cannot read face prior {p}: {exc}") from exc
    version = int(arrays["format_version"])
    if version != FORMAT_VERSION:
        raise ModelLoadError(f"{p} has face-prior format {version}; this code reads format {FORMAT_VERSION}")
    try:
        metadata = json.loads(str(arrays["metadata"]))
        model = PriorModel(
            shape_mean=arrays["shape_mean"].astype(np.float32),
            shape_basis=arrays["shape_basis"].astype(np.float32),
            shape_std=arrays["shape_std"].astype(np.float32),
            triangles=arrays["triangles"].astype(np.int32),
            oval=arrays["oval"].astype(np.int32),
            mirror=arrays["mirror"].astype(np.int32),
            tex_size=int(arrays["tex_size"]),
            tex_mean=arrays["tex_mean"].astype(np.float32),
            tex_basis=arrays["tex_basis"].astype(np.float32),
            tex_std=arrays["tex_std"].astype(np.float32),
            metadata=metadata,
        )
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"invalid face prior {p}: {exc}") from exc
    log.debug("face prior %s: %d shape / %d texture components", p, model.num_shape, model.num_texture)
    return model
