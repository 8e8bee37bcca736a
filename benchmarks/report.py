"""What every benchmark CLI does the same way: its log format and how it writes its JSON report."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any


def setup_logging() -> None:
    """INFO logs for a benchmark run, unless the caller (a test, an application) configured logging."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def write_report(report: dict[str, Any], path: Path) -> None:
    """Strict JSON (no NaN/Infinity, which other tools refuse), parents created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, recursively through dicts, lists and tuples, so the report is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
