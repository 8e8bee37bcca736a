"""How a batch knows a file is finished: a sidecar ``<output>.done.json`` beside the output.

The task writes the output under a temporary name, renames it into place when the run succeeded, and
only then writes the sidecar (itself by a rename): the input's size, mtime and SHA-256, the options that
shape the output, the output's size and the frame count. A file is finished when the sidecar exists, its
options equal this run's, the output has the recorded size and the input the recorded size and mtime; an
input whose mtime changed but whose content did not (copied, touched) is still finished, by its hash.
Anything else (no sidecar, a crash between rename and sidecar, a changed input, other options) redoes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.app import StreamConfig

SIDECAR_SUFFIX = ".done.json"
SIDECAR_VERSION = 1
PARTIAL_MARK = ".partial"
# Options that change how a run goes, not what it writes: a rerun with other values is still finished.
# ``triton`` is where the server is and how to reach it; its models are checked against the local files'
# digests at connect, and --backend itself stays in the options.
NOT_IN_OUTPUT = frozenset(
    {"input", "output", "progress", "keep_reports", "intra_threads", "queue_size", "realtime"}
    | {"reconnect_timeout_s", "null_sink", "triton"}
)


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + SIDECAR_SUFFIX)


def partial_path(output: Path) -> Path:
    """A hidden temporary name beside ``output`` with its container suffix (the muxer goes by it); the
    pid says which process writes it."""
    return output.with_name(
        f".{output.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_MARK}{output.suffix}"
    )


def remove_partials(output: Path) -> int:
    """Delete the temporary outputs an earlier attempt at ``output`` left (it died); returns how many."""
    head, tail = f".{output.name}.", f"{PARTIAL_MARK}{output.suffix}"
    removed = 0
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.name.startswith(head) and entry.name.endswith(tail):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def output_options(config: StreamConfig) -> str:
    """The options of ``config`` that shape its output, as canonical JSON (what the sidecar compares)."""
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in NOT_IN_OUTPUT}
    return json.dumps(values, sort_keys=True, default=str)  # Path -> str


@dataclass(frozen=True)
class InputStamp:
    """What identifies an input's content: size and mtime (cheap), SHA-256 (decides when mtime moved)."""

    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> InputStamp:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, file_sha256(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def mark_done(
    output: Path, *, input: Path, stamp: InputStamp, options: str, frames: int, ran_with: dict[str, str]
) -> None:
    """Record ``output`` (already renamed into place) as the finished restoration of ``input``.
    ``ran_with``: what the run resolved (models, device, backend), for the reader; not compared."""
    record = {
        "version": SIDECAR_VERSION,
        "input": str(input),
        "size": stamp.size,
        "mtime_ns": stamp.mtime_ns,
        "sha256": stamp.sha256,
        "options": json.loads(options),
        "output": output.name,
        "output_size": output.stat().st_size,
        "frames": frames,
        "ran_with": ran_with,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_json(sidecar_path(output), record)


def finished(output: Path, *, input: Path, options: str) -> dict[str, Any] | None:
    """The sidecar record when ``output`` is the finished restoration of ``input`` with ``options``
    (see the module docstring), else None. A matching hash after an mtime change refreshes the record,
    so the next check is cheap again."""
    side = sidecar_path(output)
    try:
        record = json.loads(side.read_text())
        out_size, st = output.stat().st_size, input.stat()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != SIDECAR_VERSION:
        return None
    if json.dumps(record.get("options"), sort_keys=True) != options:
        return None
    if out_size != record.get("output_size") or st.st_size != record.get("size"):
        return None
    if st.st_mtime_ns == record.get("mtime_ns"):
        return record
    try:
        same = file_sha256(input) == record.get("sha256")
    except OSError:
        return None
    if not same:
        return None
    record["mtime_ns"] = st.st_mtime_ns
    try:
        _write_json(side, record)
    except OSError:
        pass  # still finished; the next check hashes again
    return record
