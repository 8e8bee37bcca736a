"""Which files a batch restores and where each output goes.

Patterns are expanded with :func:`glob.glob` (``**`` recursive); a plain path names one file. Outputs keep
the inputs' layout below their common folder: ``videos/a/x.mp4`` and ``videos/b/x.mp4`` become
``OUT/a/x.mp4`` and ``OUT/b/x.mp4``. A container the sink writes (.mp4, .mkv, .mov, .m4v) is kept, any
other becomes .mp4.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from stream.batch.resume import sidecar_path

OUTPUT_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v")


@dataclass(frozen=True)
class Plan:
    """``pairs``: (input, output), absolute, in a stable order; ``errors``: one line per pattern or file
    that cannot be part of the batch (the batch still runs the rest, and exits non-zero); ``left_out``:
    matched files that are a batch's finished outputs (they have a sidecar), not inputs."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    left_out: list[Path] = field(default_factory=list)


def output_name(path: Path) -> str:
    suffix = path.suffix.lower()
    return path.name if suffix in OUTPUT_SUFFIXES else path.stem + ".mp4"


def expand(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """The files of ``patterns`` (resolved, each once, sorted per pattern) and an error line for each
    pattern that matches no file."""
    files: dict[Path, None] = {}
    errors = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
            found = [p for p in matches if p.is_file()]
            if not found:
                errors.append(f"--inputs {pattern!r} matches no file")
        else:
            path = Path(pattern).expanduser()
            found = [path] if path.is_file() else []
            if not found:
                why = (
                    "is a folder (give a pattern such as 'videos/*.mp4')" if path.is_dir() else "no such file"
                )
                errors.append(f"{pattern}: {why}")
        files.update(dict.fromkeys(p.resolve() for p in found))
    return list(files), errors


def plan(patterns: list[str], out_dir: Path) -> Plan:
    """Inputs of ``patterns`` paired with their outputs under ``out_dir``. Finished outputs of a batch
    are left out (a recursive pattern over a folder holding ``out_dir`` would pick them up again); two
    inputs that would share an output, or an output that would overwrite its input, are errors."""
    out_dir = out_dir.expanduser().resolve()
    matched, errors = expand(patterns)
    left_out = [p for p in matched if sidecar_path(p).is_file()]
    inputs = [p for p in matched if p not in set(left_out)]
    if not inputs:
        return Plan([], errors, left_out)
    root = Path(os.path.commonpath([p.parent for p in inputs]))
    pairs: list[tuple[Path, Path]] = []
    taken: dict[Path, Path] = {}
    for path in inputs:
        output = out_dir / path.parent.relative_to(root) / output_name(path)
        if output == path:
            errors.append(f"{path}: its output would overwrite it; choose another --out")
        elif output in taken:
            errors.append(f"{path}: its output {output} is also {taken[output].name}'s; rename one of them")
        else:
            taken[output] = path
            pairs.append((path, output))
    return Plan(pairs, errors, left_out)
