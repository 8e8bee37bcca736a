"""One file of a batch as a task: :func:`restore_file` runs the app's file pipeline
(:func:`stream.app.run`) on a :class:`Job` and returns a :class:`FileOutcome`; it never raises for a
failed file. The same function runs in a Ray worker or a local process-pool worker.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import cv2

from stream.app import StreamConfig, run
from stream.batch.resume import InputStamp, mark_done, partial_path, remove_partials, sidecar_path
from stream.redact import redact

log = logging.getLogger(__name__)

DONE, SKIPPED, FAILED = "done", "skipped (done)", "failed"
STATUSES = (DONE, SKIPPED, FAILED)


@dataclass(frozen=True)
class Job:
    """``config``: the run's options with this file as input and ``output`` (the final name; the task
    writes a temporary name beside it). ``options``: the output-shaping options as canonical JSON
    (:func:`stream.batch.resume.output_options`). ``retries``: further attempts after an exception.
    ``threads``: the CPU threads the task may use (OpenCV's pool; the networks get
    ``config.intra_threads``). ``log_level``: the worker's logging level."""

    input: Path
    output: Path
    config: StreamConfig
    options: str
    retries: int = 1
    threads: int = 1
    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file. ``status``: one of :data:`STATUSES`. ``frames``: frames written (for a
    skipped file: recorded when it was done). ``seconds``: the pipeline's wall time of the attempt that
    succeeded. ``attempts``: runs of this file in this batch, counting those that died (seen by the
    partial output they left; a worker that dies before opening its output leaves none). ``error``: the
    last failure, one line. ``host``: where it ran."""

    input: str
    output: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    host: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def fps(self) -> float | None:
        return self.frames / self.seconds if self.status == DONE and self.seconds > 0 else None

    @classmethod
    def failed(cls, job: Job, error: str, attempts: int) -> FileOutcome:
        return cls(str(job.input), str(job.output), FAILED, attempts=attempts, error=error)


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``, at most 300 characters, secrets redacted."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    line = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return redact(line if len(line) <= 300 else line[:297] + "...")


def _bound_threads(job: Job) -> None:
    # OpenCV's pool (YuNet, resizes) is process-wide and as wide as the machine by default: N tasks on
    # one node would each start one thread per core.
    cv2.setNumThreads(job.threads)


def _task_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:  # a fresh worker; a caller that configured logging keeps its handlers
        logging.basicConfig(level=level, format="%(levelname).1s %(name)s: %(message)s")
    root.setLevel(level)


def restore_file(job: Job) -> FileOutcome:
    """Restore ``job.input`` to ``job.output``: up to ``1 + job.retries`` attempts, each to a temporary
    name renamed into place on success, then the sidecar that marks it finished. A partial output of an
    attempt that died (a killed worker, retried by Ray) is removed first and counted."""
    _bound_threads(job)
    _task_logging(job.log_level)
    died = remove_partials(job.output)
    if died:
        log.warning("%s: removed the partial output of %d attempt(s) that died", job.output.name, died)
    # The old record must not vouch for what this run writes if it dies between rename and sidecar.
    sidecar_path(job.output).unlink(missing_ok=True)
    host = socket.gethostname()
    error = ""
    for attempt in range(1, job.retries + 2):
        partial = partial_path(job.output)
        try:
            # Stamped before decoding: an input that changes during the run is redone next time.
            stamp = InputStamp.of(job.input)
            result = run(dataclasses.replace(job.config, output=str(partial)))
            stats = result.stats
            if stats.stopped:
                raise RuntimeError(f"the run stopped after {stats.frames_out} frames: {stats.error}")
            os.replace(partial, job.output)
            ran_with = {"models": str(result.models), "device": result.device, "backend": result.backend}
            mark_done(
                job.output,
                input=job.input,
                stamp=stamp,
                options=job.options,
                frames=stats.frames_out,
                ran_with={**ran_with, "host": host},
            )
            return FileOutcome(
                str(job.input),
                str(job.output),
                DONE,
                frames=stats.frames_out,
                seconds=stats.wall_s,
                attempts=died + attempt,
                host=host,
            )
        except Exception as e:  # one file's failure is reported, never the batch's
            error = one_line(e)
            log.warning("%s: attempt %d of %d failed: %s", job.input.name, attempt, job.retries + 1, error)
        finally:
            partial.unlink(missing_ok=True)
    return dataclasses.replace(FileOutcome.failed(job, error, died + job.retries + 1), host=host)
