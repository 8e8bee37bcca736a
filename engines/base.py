"""The Engine protocol every backend implements, and the model metadata every exported network carries.

Tensor contract of the exported networks (all NCHW float32 unless an engine was built in fp16):
- detector:  input ``image`` (N, 3, S, S) RGB in [0, 1]  ->  output ``mask`` (N, 1, S, S) occlusion
  probability in [0, 1] (1 = occluded).
- generator: inputs ``image`` (N, 3, S, S) RGB in [0, 1] and ``mask`` (N, 1, S, S) in [0, 1]
  (1 = pixel to restore), and for a generator exported with ``extra["prior_input"]`` also ``prior``
  (N, 3, S, S) RGB in [0, 1] (the face prior's guide: the crop with the fitted prior blended into the
  hole, :mod:`engines.prior.guide`)  ->  output ``restored`` (N, 3, S, S) RGB in [0, 1] for the whole
  crop; the caller blends it inside the mask.
- segmenter: input ``image`` (N, 3, S, S) RGB in [0, 1]  ->  outputs ``face`` (N, 1, S, S) visible-face
  probability in [0, 1] (1 = the face itself, not an occluder or background; paper 003) and ``region``
  (N, 1, S, S) whole-face probability (occluded or not); occlusion = region minus face.
S is ``ModelInfo.crop_size``: the canonical crop of :mod:`engines.crop`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

METADATA_KEY = "deocclude"
ROLES = ("detector", "generator", "segmenter")


@dataclass(frozen=True)
class TensorSpec:
    """A named input or output. ``shape`` uses -1 for dynamic dimensions (the batch, usually)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelInfo:
    """What an exported network is; stored as JSON under ONNX metadata key ``deocclude``."""

    role: str
    crop_size: int
    profile: str
    value_range: str = "rgb01"
    perceptual_backbone: str = ""
    training_data: str = ""
    iterations: int = 0
    git_revision: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.crop_size < 16 or self.crop_size % 8:
            raise ValueError(f"crop_size must be a multiple of 8 and >= 16, got {self.crop_size}")
        if self.value_range != "rgb01":
            raise ValueError(f"only value_range 'rgb01' is supported, got {self.value_range!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@runtime_checkable
class Engine(Protocol):
    """One loaded network on one backend and device.

    ``run`` takes host numpy arrays (or, on CUDA backends, torch tensors already on the engine's
    device) keyed by input name and returns outputs of the same kind keyed by output name. CUDA
    backends enqueue on the caller's current CUDA stream and allocate their buffers once.
    """

    backend: str
    device: str
    info: ModelInfo
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]: ...

    def warmup(self, batch: int = 1) -> None: ...

    def close(self) -> None: ...


def check_feed(spec: TensorSpec, array: np.ndarray | Any, *, max_batch: int | None = None) -> None:
    """Raise :class:`engines.errors.ShapeError` if ``array`` does not fit ``spec`` (and the batch profile)."""
    from engines.errors import ShapeError

    shape = tuple(array.shape)
    if len(shape) != len(spec.shape) or any(e not in (-1, g) for e, g in zip(spec.shape, shape, strict=True)):
        raise ShapeError(f"input {spec.name!r} must have shape {spec.shape} (-1 = any), got {shape}")
    if max_batch is not None and not 1 <= shape[0] <= max_batch:
        raise ShapeError(
            f"input {spec.name!r} batch {shape[0]} is outside the engine's profile 1..{max_batch}"
        )


def is_torch_tensor(value: Any) -> bool:
    """True for a torch.Tensor, without importing torch (engines on numpy must not pay for it)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "data_ptr")


def dtype_name(array: Any) -> str:
    """``"float32"`` for a numpy array or a torch tensor of that dtype (torch's ``torch.float32`` spelling too)."""
    return str(array.dtype).removeprefix("torch.")


def check_feeds(
    specs: tuple[TensorSpec, ...],
    feeds: Mapping[str, Any],
    *,
    min_batch: int = 1,
    max_batch: int | None = None,
) -> int:
    """Validate a whole feed dict against an engine's inputs; return the common batch size.

    Raises :class:`engines.errors.ShapeError` when the names differ from the engine's input names
    (the message names both), when a dtype differs from ``spec.dtype``, when a shape does not fit,
    when inputs disagree on the batch, or when the batch is outside ``min_batch..max_batch``.
    """
    from engines.errors import ShapeError

    expected = [s.name for s in specs]
    if sorted(feeds) != sorted(expected):
        raise ShapeError(f"inputs must be named {expected}, got {sorted(feeds)}")
    batches = set()
    for spec in specs:
        array = feeds[spec.name]
        if not hasattr(array, "shape") or not hasattr(array, "dtype"):
            raise ShapeError(
                f"input {spec.name!r} must be a numpy array or torch tensor, got {type(array).__name__}"
            )
        if dtype_name(array) != spec.dtype:
            raise ShapeError(f"input {spec.name!r} must be {spec.dtype}, got {dtype_name(array)}")
        check_feed(spec, array, max_batch=max_batch)
        batches.add(int(array.shape[0]))
    if len(batches) > 1:
        raise ShapeError(f"all inputs must share one batch size, got {sorted(batches)}")
    batch = batches.pop()
    if batch < min_batch:
        raise ShapeError(f"batch {batch} is outside the engine's profile {min_batch}..{max_batch}")
    return batch


def feeds_as_torch(feeds: Mapping[str, Any], device: str) -> bool:
    """Whether ``feeds`` (already checked by :func:`check_feeds`) are torch tensors, all on ``device``
    ("cpu", "cuda:N"), rather than numpy arrays. A mix of the two, or a tensor on another device,
    raises :class:`engines.errors.ShapeError`."""
    from engines.errors import ShapeError

    torch_inputs = [is_torch_tensor(v) for v in feeds.values()]
    if any(torch_inputs) and not all(torch_inputs):
        raise ShapeError("inputs must be all numpy arrays or all torch tensors, got a mix")
    if not any(torch_inputs):
        return False
    for name, tensor in feeds.items():
        if str(tensor.device) != device:
            raise ShapeError(f"input {name!r} is on {tensor.device}, this engine runs on {device}")
    return True
