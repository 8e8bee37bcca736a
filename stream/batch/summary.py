"""The end of a batch: a table of its files (status, frames, fps, attempts, error) and the same as JSON."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from stream.batch.task import DONE, FAILED, SKIPPED, STATUSES, FileOutcome


def totals(outcomes: list[FileOutcome], errors: list[str], wall_s: float) -> dict[str, Any]:
    """Counts per status, frames restored in this batch (skipped files not counted) and their rate over
    the batch's wall time (engine loading, Ray start and every file included)."""
    counts = Counter(o.status for o in outcomes)
    frames = sum(o.frames for o in outcomes if o.status == DONE)
    return {
        "files": len(outcomes),
        **{status: counts.get(status, 0) for status in STATUSES},
        "bad_inputs": len(errors),
        "frames": frames,
        "wall_s": round(wall_s, 3),
        "fps": round(frames / wall_s, 2) if wall_s > 0 and frames else None,
    }


def format_summary(
    outcomes: list[FileOutcome], errors: list[str], wall_s: float, where: str, out_dir: Path
) -> str:
    rows = [("file", "status", "frames", "fps", "attempts", "error")]
    for o in outcomes:
        fps = f"{o.fps:.1f}" if o.fps is not None else "-"
        attempts = str(o.attempts) if o.status != SKIPPED else "-"
        name = (
            str(Path(o.output).relative_to(out_dir)) if Path(o.output).is_relative_to(out_dir) else o.output
        )
        rows.append((name, o.status, str(o.frames), fps, attempts, o.error or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "  ".join(
            [r[0].ljust(widths[0]), r[1].ljust(widths[1]), *(r[i].rjust(widths[i]) for i in (2, 3, 4)), r[5]]
        ).rstrip()
        for r in rows
    ]
    t = totals(outcomes, errors, wall_s)
    rate = f" ({t['fps']:.1f} fps over the batch)" if t["fps"] is not None else ""
    lines.append(
        f"{t['files']} files: {t[DONE]} {DONE}, {t[SKIPPED]} {SKIPPED}, {t[FAILED]} {FAILED}"
        + (f", {len(errors)} bad input(s)" if errors else "")
        + f"; {t['frames']} frames in {wall_s:.1f} s{rate}; {where}"
    )
    lines.extend(f"bad input: {e}" for e in errors)
    return "\n".join(lines)


def summary_record(
    outcomes: list[FileOutcome], errors: list[str], wall_s: float, where: str
) -> dict[str, Any]:
    """What ``--summary-json`` writes: totals, where it ran, bad inputs and one record per file."""
    return {
        "runner": where,
        "totals": totals(outcomes, errors, wall_s),
        "bad_inputs": errors,
        "files": [{**dataclasses.asdict(o), "fps": o.fps} for o in outcomes],
    }
