"""Training configuration: frozen dataclasses loaded from YAML, validated on construction.

Unknown keys are errors (a typo must not silently fall back to a default). Relative paths in the data
section are resolved against the working directory (run from the repository root).

The staged schedule (paper sections 4.4 and 5.1) is data: two lists of phases, ``coarse`` and
``refine``, that run in parallel, step for step, as the paper trains them "at the same time". At step
``t`` each list is in the phase whose iteration range holds ``t``; a list that has run out holds its last
phase. Coarse phases set lambda1 (reconstruction, Eq. 2) and lambda2 (adversarial, Eq. 5) of Eq. 6;
refine phases set lambda3 (perceptual, Eq. 3), lambda4 (adversarial) and lambda5 (reconstruction) of
Eq. 7. ``update_generator: false`` marks a discriminator warm-up: that network is held while the
discriminator learns on its output (our reading of "the global-masked region discriminators are
performed 1,000 iterations"; set it true for the literal lambda1 = 0, lambda2 = 1 reading). The detector
trains alongside with the pixel L2 of Eq. 1 at every step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.data.augment import AugmentConfig
from training.data.occlusion import SynthesisConfig
from training.models.profiles import get_profile


class ConfigError(ValueError):
    """A training config file is missing, malformed or holds an invalid value."""


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` with unknown or missing keys reported by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid keys: {sorted(names)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class Phase:
    """One stage of the coarse or refine schedule: ``iterations`` steps with fixed loss weights."""

    name: str
    iterations: int
    lambda1: float = 0.0
    lambda2: float = 0.0
    lambda3: float = 0.0
    lambda4: float = 0.0
    lambda5: float = 0.0
    update_generator: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("phase name must be non-empty")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(
                f"phase {self.name!r}: iterations must be an integer >= 1, got {self.iterations!r}"
            )
        for k in ("lambda1", "lambda2", "lambda3", "lambda4", "lambda5"):
            value = getattr(self, k)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"phase {self.name!r}: {k} must be a number >= 0, got {value!r}")
            object.__setattr__(self, k, float(value))


def paper_coarse() -> tuple[Phase, ...]:
    return (
        Phase("coarse_rec", 10_000, lambda1=1.0, lambda2=0.0),
        Phase("coarse_disc", 1_000, lambda1=0.0, lambda2=1.0, update_generator=False),
        Phase("coarse_joint", 24_000, lambda1=1.0, lambda2=0.05),
    )


def paper_refine() -> tuple[Phase, ...]:
    return (
        Phase("refine_rec", 10_000, lambda5=1.0),
        Phase("refine_disc", 1_000, lambda4=1.0, update_generator=False),
        Phase("refine_joint", 20_000, lambda4=0.1, lambda5=0.5),
        Phase("refine_final", 80_000, lambda3=1.0, lambda4=0.1, lambda5=0.0),
    )


@dataclass(frozen=True)
class Lambdas:
    """Loss weights in force at one step, and which generator halves are updated."""

    lambda1: float
    lambda2: float
    lambda3: float
    lambda4: float
    lambda5: float
    update_coarse: bool
    update_refine: bool
    coarse_phase: str
    refine_phase: str

    @property
    def train_discriminator(self) -> bool:
        return self.lambda2 > 0 or self.lambda4 > 0

    @property
    def stage(self) -> str:
        return f"{self.coarse_phase}|{self.refine_phase}"


@dataclass(frozen=True)
class Schedule:
    """Coarse and refine phase lists run in parallel (see module docstring).

    ``skip_refine_below``: the paper's "if the coarse loss is below 0.1, skip the refine optimisation",
    as an option (None = off). We compare the coarse L1 *inside the mask* with it: over the whole crop the
    L1 is dominated by the visible pixels and would sit below 0.1 from the first steps.
    """

    coarse: tuple[Phase, ...] = field(default_factory=paper_coarse)
    refine: tuple[Phase, ...] = field(default_factory=paper_refine)
    skip_refine_below: float | None = None

    def __post_init__(self) -> None:
        for side, phases, allowed in (
            ("coarse", self.coarse, {"lambda1", "lambda2"}),
            ("refine", self.refine, {"lambda3", "lambda4", "lambda5"}),
        ):
            if not phases:
                raise ValueError(f"schedule.{side} needs at least one phase")
            parsed = tuple(
                p if isinstance(p, Phase) else _build(Phase, p, f"schedule.{side}[{i}]")
                for i, p in enumerate(phases)
            )
            for p in parsed:
                foreign = [
                    k
                    for k in ("lambda1", "lambda2", "lambda3", "lambda4", "lambda5")
                    if k not in allowed and getattr(p, k)
                ]
                if foreign:
                    raise ValueError(
                        f"{side} phase {p.name!r} sets {foreign}; {side} phases use only {sorted(allowed)}"
                    )
            object.__setattr__(self, side, parsed)
        if self.skip_refine_below is not None and self.skip_refine_below <= 0:
            raise ValueError(f"skip_refine_below must be > 0 or null, got {self.skip_refine_below}")

    @property
    def total_steps(self) -> int:
        return max(sum(p.iterations for p in self.coarse), sum(p.iterations for p in self.refine))

    @staticmethod
    def _phase_at(phases: tuple[Phase, ...], step: int) -> Phase:
        end = 0
        for p in phases:
            end += p.iterations
            if step < end:
                return p
        return phases[-1]

    def at(self, step: int) -> Lambdas:
        """The weights of (0-based) ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        c, r = self._phase_at(self.coarse, step), self._phase_at(self.refine, step)
        return Lambdas(
            c.lambda1,
            c.lambda2,
            r.lambda3,
            r.lambda4,
            r.lambda5,
            c.update_generator,
            r.update_generator,
            c.name,
            r.name,
        )


@dataclass(frozen=True)
class DataSource:
    """One source of training faces.

    kind ``faces``: a folder of face photos/videos (detected + aligned); ``aligned``: a folder of canonical
    crops; ``manifest``: a face manifest CSV, split by person (``split``, ``holdout_fraction``,
    ``split_seed``; held-out people never reach training); ``video``: one video file; ``fmor``: an FMOR
    layout folder of real pairs. ``weight`` (default: the source's size) sets how often it is drawn.
    """

    kind: str
    path: str
    weight: float | None = None
    split: str = "train"
    holdout_fraction: float = 0.15
    split_seed: int = 0
    use_sources: bool = True
    every_n: int = 8
    max_frames_per_video: int | None = 60

    KINDS = ("faces", "aligned", "manifest", "video", "fmor")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"data source kind must be one of {self.KINDS}, got {self.kind!r}")
        if not self.path:
            raise ValueError("data source path must be non-empty")
        if self.weight is not None and self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        if self.split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {self.split!r}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {self.every_n}")

    @property
    def resolved(self) -> Path:
        return Path(self.path).expanduser().resolve()


@dataclass(frozen=True)
class DataConfig:
    sources: tuple[DataSource, ...]
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    # Evaluation sources (e.g. the held-out people of a manifest) for the sample grid and val metrics.
    val_sources: tuple[DataSource, ...] = ()

    def __post_init__(self) -> None:
        for name in ("sources", "val_sources"):
            raw = getattr(self, name)
            if not isinstance(raw, list | tuple):
                raise ValueError(f"data.{name} must be a list, got {type(raw).__name__}")
            parsed = tuple(
                s if isinstance(s, DataSource) else _build(DataSource, s, f"data.{name}[{i}]")
                for i, s in enumerate(raw)
            )
            object.__setattr__(self, name, parsed)
        if not self.sources:
            raise ValueError("data.sources needs at least one source")
        if isinstance(self.synthesis, dict):
            object.__setattr__(self, "synthesis", _build(SynthesisConfig, self.synthesis, "data.synthesis"))
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", _build(AugmentConfig, self.augment, "data.augment"))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. ``lr`` defaults to the paper's 1.5e-5 (Adam); with a few hundred
    faces instead of tens of thousands, 1e-4 to 2e-4 converges in a budget one can afford."""

    profile: str
    data: DataConfig
    schedule: Schedule = field(default_factory=Schedule)
    batch_size: int = 4
    lr: float = 1.5e-5
    disc_lr: float | None = None
    det_lr: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    detector_bce_weight: float = 0.0
    detector_dice_weight: float = 0.0
    hole_threshold: float = 0.05
    # Eq. 2 over the whole crop ("image", the paper) or only inside the hole ("hole": the visible pixels
    # are pasted back anyway, so a small network can spend all its capacity on the fill).
    reconstruction_region: str = "image"
    amp: str = "bf16"
    max_steps: int | None = None
    checkpoint_every: int = 1000
    sample_every: int = 500
    log_every: int = 10
    seed: int = 0
    perceptual_backbone: str = "mobilenet_v2"
    num_workers: int = 2
    export: bool = True
    # Face prior model (.npz of engines.prior) for profiles whose generator takes the prior as input.
    prior_model: str = ""
    # Warm start: detector and generator weights from a checkpoint or a shipped weights.pt. A generator
    # whose first layer gained the prior's channels keeps the old weights and starts them at zero, so it
    # begins exactly as the model it came from and learns to use the prior.
    init_from: str = ""

    def __post_init__(self) -> None:
        try:
            get_profile(self.profile)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if isinstance(self.data, dict):
            object.__setattr__(self, "data", _build(DataConfig, self.data, "data"))
        if isinstance(self.schedule, dict):
            object.__setattr__(self, "schedule", _build(Schedule, self.schedule, "schedule"))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("batch_size", "checkpoint_every", "sample_every", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "disc_lr", "det_lr"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if self.reconstruction_region not in ("image", "hole"):
            raise ValueError(
                f"reconstruction_region must be 'image' or 'hole', got {self.reconstruction_region!r}"
            )
        if self.amp not in ("bf16", "fp16", "off"):
            raise ValueError(f"amp must be 'bf16', 'fp16' or 'off', got {self.amp!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if not 0.0 <= self.hole_threshold < 1.0:
            raise ValueError(f"hole_threshold must be in [0, 1), got {self.hole_threshold}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.detector_bce_weight < 0 or self.detector_dice_weight < 0:
            raise ValueError("detector_bce_weight and detector_dice_weight must be >= 0")
        if get_profile(self.profile).prior_input and not self.prior_model:
            raise ValueError(f"profile {self.profile!r} takes the face prior: set prior_model (a prior .npz)")
        if self.prior_model and not get_profile(self.profile).prior_input:
            raise ValueError(f"prior_model is set but profile {self.profile!r} takes no prior")

    @property
    def total_steps(self) -> int:
        return self.max_steps if self.max_steps is not None else self.schedule.total_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML training config; ConfigError names the file and the offending key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    return _build(TrainConfig, raw, str(p))


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """The same validation for a config held in memory (tests, checkpoints)."""
    return _build(TrainConfig, raw, "config")
