"""Configuration of visible-face segmenter training: frozen dataclasses loaded from YAML.

Unknown keys are errors (a typo must not fall back to a default silently). Relative paths are resolved
against the working directory (run from the repository root). See training/configs/segmenter_*.yaml.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.data.augment import AugmentConfig
from training.data.segmentation import SegmentationSynthesis
from training.models.segmenter import SegmenterConfig
from training.segmentation_losses import SegmentationLossConfig

SOURCE_KINDS = ("manifest", "faceset")


class SegmenterConfigError(ValueError):
    """A segmenter config file is missing, malformed or holds an invalid value."""


def _build(cls: type, data: Any, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SegmenterConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SegmenterConfigError(f"{where}: unknown keys {unknown}; valid keys: {sorted(names)}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except (TypeError, ValueError) as exc:
        raise SegmenterConfigError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class FaceSource:
    """Faces to train on. ``kind`` "manifest": a face manifest CSV (``split`` of a person-level split
    with ``holdout_fraction`` / ``split_seed``), aligned and meshed once and cached; "faceset": an ``.npz``
    written by :meth:`training.data.segmentation_faces.FaceSet.save`. ``weight``: share of the stream
    (None: by number of faces)."""

    kind: str
    path: str
    split: str = "train"
    holdout_fraction: float = 0.15
    split_seed: int = 0
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if self.split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {self.split!r}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.weight is not None and self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")

    @property
    def resolved(self) -> Path:
        return Path(self.path).expanduser().resolve()


@dataclass(frozen=True)
class SegmenterTrainConfig:
    """Everything a segmenter run needs. ``lr`` is AdamW's peak rate (linear warm-up over
    ``warmup_steps``, then cosine to 5% at ``steps``). ``init_from``: a segmenter checkpoint whose
    weights start a new run (a warm start; ``--resume`` continues a run instead)."""

    crop_size: int
    sources: tuple[FaceSource, ...]
    val_sources: tuple[FaceSource, ...] = ()
    synthesis: SegmentationSynthesis = field(default_factory=SegmentationSynthesis)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: SegmenterConfig = field(default_factory=SegmenterConfig)
    loss: SegmentationLossConfig = field(default_factory=SegmentationLossConfig)
    imagenet: bool = True
    init_from: str | None = None
    steps: int = 20000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    checkpoint_every: int = 250
    val_every: int = 500
    log_every: int = 20
    val_per_face: int = 1
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.crop_size < 32 or self.crop_size % 16:
            raise ValueError(f"crop_size must be a multiple of 16 and >= 32, got {self.crop_size}")
        if not self.sources:
            raise ValueError("at least one training source is needed")
        for name in (
            "steps",
            "batch_size",
            "checkpoint_every",
            "val_every",
            "log_every",
            "val_per_face",
            "threads",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(f"need lr > 0, weight_decay >= 0, warmup_steps >= 0; got {self.lr}, "
                             f"{self.weight_decay}, {self.warmup_steps}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(data: Any, where: str = "config") -> SegmenterTrainConfig:
    if not isinstance(data, dict):
        raise SegmenterConfigError(f"{where}: expected a mapping at the top level")
    data = dict(data)
    for key in ("sources", "val_sources"):
        items = data.get(key, [])
        if not isinstance(items, list):
            raise SegmenterConfigError(f"{where}: {key} must be a list of sources")
        data[key] = tuple(_build(FaceSource, s, f"{where}.{key}[{i}]") for i, s in enumerate(items))
    for key, cls in (("synthesis", SegmentationSynthesis), ("augment", AugmentConfig),
                     ("model", SegmenterConfig), ("loss", SegmentationLossConfig)):  # fmt: skip
        if key in data:
            data[key] = _build(cls, data[key], f"{where}.{key}")
    return _build(SegmenterTrainConfig, data, where)  # type: ignore[no-any-return]


def load_config(path: str | Path) -> SegmenterTrainConfig:
    """Read and validate a YAML config; SegmenterConfigError names the file and the bad key."""
    p = Path(path)
    if not p.is_file():
        raise SegmenterConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SegmenterConfigError(f"{p}: not valid YAML: {exc}") from exc
    return config_from_dict(data, str(p))
