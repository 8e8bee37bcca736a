"""Running the product as a user does: ``run_stream.py`` in a subprocess, its summary line and stats JSON.

What a user sees is what is measured: the same command line, the same output file (H.264 from the
product's sink), the "done: ... N face restorations ..." line it prints and the ``--stats-json`` it
writes. Nothing of the product is imported here.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_STREAM = REPO_ROOT / "run_stream.py"
_DONE = re.compile(r"done: (\d+) frames .*?(\d+) face restorations")
# Keys a newer --stats-json may carry for the same count (preferred over parsing the printed line).
_STATS_KEYS = ("face_restorations", "faces_restored", "masked_faces")


class ProductRunError(RuntimeError):
    """run_stream.py failed or did not report what a finished run reports."""


@dataclass(frozen=True)
class ProductRun:
    """One finished run: output file, wall seconds of the whole command (start-up included), frames and
    face restorations it reported (``restorations_from`` says where the count came from), its stats."""

    output: Path
    wall_s: float
    frames: int
    restorations: int
    restorations_from: str
    stats: dict[str, Any]
    command: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.frames < 0 or self.restorations < 0:
            raise ValueError(f"frames and restorations must be >= 0, got {self.frames}, {self.restorations}")


def parse_done_line(stderr: str) -> tuple[int, int] | None:
    """(frames, face restorations) from run_stream.py's last "done: ..." line, or None."""
    found = _DONE.findall(stderr)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def run_product(
    input_path: Path,
    output: Path,
    stats_json: Path,
    *,
    models: Path | None,
    root: Path = REPO_ROOT,
    extra: Sequence[str] = (),
) -> ProductRun:
    """``python <root>/run_stream.py --input ... --output ... --stats-json ... --quiet [--models ...]``, run
    in ``root`` (a checkout or ``git archive`` of the revision to measure; its own packages are imported
    first because Python puts the script's folder first on ``sys.path``)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    script = root / RUN_STREAM.name
    if not script.is_file():
        raise ProductRunError(f"no {RUN_STREAM.name} in {root}")
    cmd = [sys.executable, str(script), "--input", str(input_path.resolve()), "--output", str(output.resolve()),
           "--stats-json", str(stats_json.resolve()), "--quiet", "--no-audio", *extra]  # fmt: skip
    if models is not None:
        cmd += ["--models", str(models.resolve())]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ProductRunError(f"run_stream.py exited {done.returncode} on {input_path}:\n{tail}")
    stats: dict[str, Any] = json.loads(stats_json.read_text()) if stats_json.is_file() else {}
    parsed = parse_done_line(done.stderr)
    key = next((k for k in _STATS_KEYS if isinstance(stats.get(k), int)), None)
    if key is not None:
        restorations, source = int(stats[key]), f"stats-json:{key}"
    elif parsed is not None:
        restorations, source = parsed[1], "printed done line"
    else:
        raise ProductRunError(f"run_stream.py on {input_path} reported no face restorations count")
    frames = int(stats.get("frames_out", parsed[0] if parsed else -1))
    if frames < 0:
        raise ProductRunError(f"run_stream.py on {input_path} reported no frame count")
    return ProductRun(output, wall, frames, restorations, source, stats, tuple(cmd))
