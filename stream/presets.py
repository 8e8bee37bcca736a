"""Presets that name what users want (``--preset realtime|quality``) instead of knobs.

A preset fills the options the user did not give; an option given explicitly always wins, and the log
line says which preset values were kept out by it. The values are command-line values (argparse
``dest`` names), applied to the parsed namespace before the run's config is built.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from engines.assets import models_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """``values``: argparse dest -> value; ``why``: one line for ``--help`` and the log."""

    name: str
    why: str
    values: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not self.values:
            raise ValueError(f"a preset needs a name and values, got {self.name!r} with {dict(self.values)}")
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))


PRESETS: Final = {
    p.name: p
    for p in (
        Preset(
            "realtime",
            "lowest latency: the small models, the face detector and the face mesh every 2nd frame "
            "(tracking between), 2 faces, short queues, stream-grade x264",
            {
                "models": models_dir() / "small",
                "detect_every": 2,
                "mesh_every": 2,
                "max_faces": 2,
                "queue_size": 2,
                "crf": 23,
            },
        ),
        Preset(
            "quality",
            "best picture: models by device (full on a GPU), the face detector on every frame, 4 faces, "
            "fp32, visually lossless x264",
            {
                "models": None,
                "detect_every": 1,
                "mesh_every": 1,
                "max_faces": 4,
                "precision": "fp32",
                "crf": 16,
            },
        ),
    )
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given(dest: str, argv: Sequence[str], args: argparse.Namespace, parser: argparse.ArgumentParser) -> bool:
    """An option counts as given when its value is not the parser's default or its flag is on the command
    line (so ``--detect-every 1`` keeps 1 even though 1 is the default)."""
    flag = _flag(dest)
    on_line = any(a == flag or a.startswith(flag + "=") for a in argv)
    return on_line or getattr(args, dest) != parser.get_default(dest)


def apply_preset(
    name: str, args: argparse.Namespace, parser: argparse.ArgumentParser, argv: Sequence[str]
) -> str:
    """Set ``name``'s values on ``args`` where the user gave no option; returns (and logs) the line that
    says what the preset set and what explicit options kept. A value for an option this parser lacks is
    an error: a preset must never be silently partial."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    preset = PRESETS[name]
    missing = [d for d in preset.values if not hasattr(args, d)]
    if missing:
        raise ValueError(
            f"preset {name}: this command has no option for {', '.join(_flag(d) for d in missing)}"
        )
    set_, kept = [], []
    for dest, value in preset.values.items():
        if _given(dest, argv, args, parser):
            kept.append(f"{_flag(dest)} {getattr(args, dest)}")
            continue
        setattr(args, dest, value)
        set_.append(f"{dest}={'auto' if value is None else value}")
    line = f"preset {name}: {' '.join(set_) or 'nothing left to set'}"
    if kept:
        line += f"; explicit options override it: {', '.join(kept)}"
    log.info("%s", line)
    return line
