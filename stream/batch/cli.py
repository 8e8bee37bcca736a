"""The command line of ``python -m stream.batch``; :func:`main` returns the exit status, never exits.

Which runner: ``--ray-address ADDR`` connects to a running cluster; otherwise, when ray is importable
(the ``scale`` extra), a local Ray with ``--workers x --cpus-per-task`` CPUs; ``--no-ray``, or ray not
installed (said in one line), runs a local process pool of ``--workers`` processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.batch.plan import plan
from stream.batch.resume import finished, output_options
from stream.batch.summary import format_summary, summary_record
from stream.batch.task import FAILED, SKIPPED, FileOutcome, Job, restore_file
from stream.cli import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, _setup_logging, config_from_args
from stream.redact import redact, redact_any

if TYPE_CHECKING:
    from stream.app import StreamConfig

log = logging.getLogger("stream.batch")

PROG = "python -m stream.batch"
RAY_HINT = "pip install 'deocclude[scale]'"
# Options of a file run that a batch sets per file itself, and what to use instead.
_NOT_FOR_BATCH = {"--input": "--inputs", "--output": "--out", "--stats-json": "--summary-json"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Restore a collection of video files: one task per file, on Ray or locally. "
        "Finished files are skipped when rerun; failed ones are retried and reported.",
        epilog="Every option of a file run passes through (--models, --backend, --device, --crf, "
        "--max-faces, --occlusion, --restorer, --threads, ...; see `deocclude --help`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # --input of a file run must not pass for --inputs
    )
    p.add_argument(
        "--inputs",
        nargs="+",
        required=True,
        metavar="PATTERN",
        help="files or quoted glob patterns (** recurses)",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="folder of the restored files (inputs' layout kept below it)"
    )
    p.add_argument(
        "--ray",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="files as Ray tasks (default: when ray is installed); --no-ray: a local process pool",
    )
    p.add_argument(
        "--ray-address", default=None, help="a running Ray cluster: auto, HOST:PORT or ray://HOST:10001"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="files at once on this machine (local Ray or pool; default: usable cores / --cpus-per-task)",
    )
    p.add_argument(
        "--cpus-per-task",
        type=int,
        default=1,
        help="CPUs a file reserves; its networks and OpenCV use as many threads (unless --threads)",
    )
    p.add_argument(
        "--retries", type=int, default=1, help="attempts after the first when a file fails or its worker dies"
    )
    p.add_argument("--force", action="store_true", help="redo files that are finished already")
    p.add_argument("--summary-json", type=Path, default=None, help="write the per-file summary here")
    p.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="of this command and of every file's run (INFO shows each run's lines)",
    )
    return p


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """The batch's own options, validated; ``runner`` is "ray" or "pool" (local worker processes)."""

    runner: str
    ray_address: str | None
    workers: int
    cpus_per_task: int
    retries: int

    def __post_init__(self) -> None:
        if self.runner not in ("ray", "pool"):
            raise ValueError(f"runner must be ray or pool, got {self.runner!r}")
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_task < 1:
            raise ValueError(f"--cpus-per-task must be >= 1, got {self.cpus_per_task}")
        if self.retries < 0:
            raise ValueError(f"--retries must be >= 0, got {self.retries}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BatchOptions:
        if args.cpus_per_task < 1:  # before it divides
            raise ValueError(f"--cpus-per-task must be >= 1, got {args.cpus_per_task}")
        workers = args.workers or max(1, len(os.sched_getaffinity(0)) // args.cpus_per_task)
        if args.ray is False and args.ray_address:
            raise ValueError("--ray-address needs Ray; drop --no-ray")
        asked = bool(args.ray or args.ray_address)
        if args.ray is False:
            runner = "pool"
        elif _ray_importable():
            runner = "ray"
        elif asked:
            raise ValueError(f"ray is not installed ({RAY_HINT}); without it, run with --no-ray")
        else:
            runner = "pool"
            log.warning(
                "ray is not installed (%s): the files run locally in a pool of %d worker process(es)",
                RAY_HINT,
                workers,
            )
        if args.ray_address and args.workers:
            log.warning(
                "--workers applies to a local run; the cluster's CPUs decide how many files run at once"
            )
        return cls(runner, args.ray_address, workers, args.cpus_per_task, args.retries)


def _ray_importable() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_options(argv: Sequence[str], threads: int) -> StreamConfig:
    """The file run of the passed-through options (``deocclude``'s parser), with per-task threads and
    paths made absolute (a worker may run elsewhere); ValueError for an option a batch sets itself."""
    from stream.cli import build_parser as file_parser
    from stream.presets import apply_preset

    parser = file_parser()
    parser.prog = PROG
    args = parser.parse_args(list(argv))
    given = {
        "--input": args.input != parser.get_default("input"),
        "--output": args.output is not None,
        "--stats-json": args.stats_json is not None,
        "--display": args.display,
        "--preview": args.preview is not None,
        "--list-cameras": args.list_cameras,
    }
    wrong = [flag for flag, on in given.items() if on]
    if wrong:
        instead = [f"{_NOT_FOR_BATCH[w]} instead of {w}" for w in wrong if w in _NOT_FOR_BATCH]
        raise ValueError(
            f"{', '.join(wrong)}: not options of a batch"
            + (f" (use {'; '.join(instead)})" if instead else "")
        )
    if args.preset is not None:
        apply_preset(args.preset, args, parser, list(argv))
    config = config_from_args(args)
    return dataclasses.replace(
        config,
        progress=False,
        keep_reports=False,
        intra_threads=config.intra_threads or threads,
        models=config.models.resolve() if config.models is not None else None,
        reference=config.reference.resolve() if config.reference is not None else None,
    )


@contextmanager
def _ray_session(options: BatchOptions) -> Iterator[str]:
    """Connected to the cluster, or a local Ray started for this batch (and shut down after it)."""
    import ray

    if ray.is_initialized():  # a caller (a notebook, a test) connected already
        yield f"ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs, connected before)"
        return
    if options.ray_address:
        try:
            ray.init(address=options.ray_address)
        except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError by cause
            raise ConnectionError(
                f"cannot reach the Ray cluster at {redact(options.ray_address)}: {e}"
            ) from e
        where = f"ray at {redact(options.ray_address)} ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)"
    else:
        cpus = options.workers * options.cpus_per_task
        ray.init(num_cpus=cpus, include_dashboard=False)
        where = f"local ray ({cpus} CPUs)"
    try:
        yield where
    finally:
        ray.shutdown()


def _run(jobs: list[Job], options: BatchOptions, on_done: Callable[[FileOutcome], None]) -> str:
    """Runs ``jobs``; returns where they ran (also said in one line before they start)."""
    from stream.batch import runners

    def starting(where: str) -> str:
        print(f"restoring {len(jobs)} file(s): {where}", file=sys.stderr)
        return where

    if options.runner == "ray":
        with _ray_session(options) as where:
            starting(where)
            runners.run_ray(
                jobs,
                restore_file,
                on_done,
                cpus_per_task=options.cpus_per_task,
                crash_retries=options.retries,
            )
        return where
    where = starting(f"local process pool ({options.workers} workers)")
    runners.run_process_pool(
        jobs,
        restore_file,
        on_done,
        workers=options.workers,
        crash_retries=options.retries,
        threads=options.cpus_per_task,
    )
    return where


def _jobs(
    pairs: list[tuple[Path, Path]],
    config: StreamConfig,
    options: BatchOptions,
    log_level: str,
    *,
    force: bool,
    on_skip: Callable[[FileOutcome], None],
) -> list[Job]:
    """A job per (input, output) pair that is not finished already (``on_skip`` gets the others)."""
    options_json = output_options(config)
    jobs = []
    for path, output in pairs:
        record = None if force else finished(output, input=path, options=options_json)
        if record is not None:
            on_skip(FileOutcome(str(path), str(output), SKIPPED, frames=int(record.get("frames", 0))))
            continue
        per_file = dataclasses.replace(config, input=str(path), output=str(output))
        jobs.append(
            Job(
                path,
                output,
                per_file,
                options_json,
                retries=options.retries,
                threads=options.cpus_per_task,
                log_level=log_level,
            )
        )
    return jobs


def _write_json(path: Path, record: dict[str, Any]) -> str | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(redact_any(record), indent=2, allow_nan=False) + "\n")
    except (OSError, ValueError) as e:
        return f"error: cannot write --summary-json {path}: {getattr(e, 'strerror', None) or e}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else list(argv))
    _setup_logging(args.log_level)
    try:
        options = BatchOptions.from_args(args)
        config = run_options(rest, options.cpus_per_task)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    out_dir = args.out.expanduser().resolve()
    batch = plan(args.inputs, out_dir)
    for line in batch.errors:
        print(f"error: {line}", file=sys.stderr)
    if batch.left_out:
        log.warning(
            "left out %d file(s) that are outputs of a batch (they have a sidecar)", len(batch.left_out)
        )
    outcomes: list[FileOutcome] = []
    total = len(batch.pairs)

    def on_done(outcome: FileOutcome) -> None:
        outcomes.append(outcome)
        name = Path(outcome.output).relative_to(out_dir)
        what = (
            f"{outcome.frames} frames, {outcome.fps:.1f} fps"
            if outcome.fps is not None
            else outcome.error or ""
        )
        if outcome.status != SKIPPED:
            print(f"[{len(outcomes)}/{total}] {outcome.status} {name}: {what}", file=sys.stderr)

    jobs = _jobs(batch.pairs, config, options, args.log_level, force=args.force, on_skip=on_done)
    if total and len(jobs) < total:
        print(f"skipped (done): {total - len(jobs)} of {total} files finished earlier", file=sys.stderr)
    started = time.perf_counter()
    where = "nothing to run"
    code = EXIT_OK
    try:
        if jobs:
            out_dir.mkdir(parents=True, exist_ok=True)
            where = _run(jobs, options, on_done)
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; run again to resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except (ConnectionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    wall_s = time.perf_counter() - started
    order = {str(p): i for i, (p, _) in enumerate(batch.pairs)}
    outcomes.sort(key=lambda o: order[o.input])
    print(format_summary(outcomes, batch.errors, wall_s, where, out_dir))
    if args.summary_json is not None:
        summary = summary_record(outcomes, batch.errors, wall_s, where)
        if problem := _write_json(args.summary_json, summary):
            print(problem, file=sys.stderr)
            code = code or EXIT_ERROR
    if code == EXIT_OK and (batch.errors or any(o.status == FAILED for o in outcomes)):
        code = EXIT_ERROR
    if code == EXIT_OK and not outcomes and not batch.errors:
        print("nothing to restore: every matched file is an output of a batch", file=sys.stderr)
    return code
