"""Where the tasks of a batch run: on Ray (a cluster or a local one) or in a local process pool. Each
runner calls ``on_done`` as files finish and returns the outcomes in the jobs' order; a task that raises
or whose process dies becomes a failed :class:`FileOutcome`, never an error of the batch.

Retries: :func:`restore_file` retries exceptions itself (``Job.retries``); a process that dies (killed,
out of memory, a crash in native code) is rerun by the runner, up to ``crash_retries`` times: Ray's
``max_retries`` on Ray, a fresh worker process in the local pool.

Tasks run in worker processes even one at a time, so that the thread pools a process sizes once, from
its environment, when numpy loads (OpenBLAS, OpenMP) are bounded too: OpenBLAS spins its idle threads,
and on this 2-core CPU two files with one BLAS thread per core each ran at about half the speed of two
with one (Ray sets ``OMP_NUM_THREADS`` to a task's CPUs itself).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager

from stream.batch.task import FileOutcome, Job, one_line

log = logging.getLogger(__name__)

Task = Callable[[Job], FileOutcome]
OnDone = Callable[[FileOutcome], None]


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextmanager
def _bounded_thread_env(threads: int) -> Iterator[None]:
    """The environment spawned workers inherit, with ``threads`` for the pools in :data:`THREAD_ENV`
    (a value the user set is kept); restored after."""
    added = [name for name in THREAD_ENV if name not in os.environ]
    for name in added:
        os.environ[name] = str(threads)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def run_process_pool(
    jobs: Sequence[Job], task: Task, on_done: OnDone, *, workers: int, crash_retries: int, threads: int = 1
) -> list[FileOutcome]:
    """``workers`` processes (spawned: the parent has threads), one file at a time each, ``threads``
    threads for their BLAS/OpenMP pools. Each worker thread of this process owns one worker process, so
    a process that dies is charged to the one file it was running."""
    context = multiprocessing.get_context("spawn")
    local = threading.local()
    pools: list[ProcessPoolExecutor] = []
    lock = threading.Lock()

    def attempt(job: Job) -> FileOutcome:
        error = ""
        for tries_left in range(crash_retries, -1, -1):
            pool = getattr(local, "pool", None)
            if pool is None:
                pool = local.pool = ProcessPoolExecutor(1, mp_context=context)
                with lock:
                    pools.append(pool)
            try:
                return pool.submit(task, job).result()
            except BrokenProcessPool as e:
                error = f"worker process died: {one_line(e)}"
                log.warning("%s: %s%s", job.input.name, error, "; retrying" if tries_left else "")
                pool.shutdown(wait=False)
                local.pool = None
            except Exception as e:
                return FileOutcome.failed(job, one_line(e), attempts=1)
        return FileOutcome.failed(job, error, attempts=crash_retries + 1)

    outcomes: list[FileOutcome | None] = [None] * len(jobs)
    try:
        with _bounded_thread_env(threads), ThreadPoolExecutor(workers, thread_name_prefix="batch") as files:
            futures = {files.submit(attempt, job): i for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                outcome = outcomes[futures[future]] = future.result()
                on_done(outcome)
    finally:
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
    return [o for o in outcomes if o is not None]


def run_ray(
    jobs: Sequence[Job], task: Task, on_done: OnDone, *, cpus_per_task: int, crash_retries: int
) -> list[FileOutcome]:
    """One Ray task per file on the connected cluster, each reserving ``cpus_per_task`` CPUs; Ray reruns
    a task whose worker died up to ``crash_retries`` times (exceptions are the task's own business)."""
    import ray

    remote = ray.remote(task).options(
        num_cpus=cpus_per_task, max_retries=crash_retries, retry_exceptions=False, name="restore_file"
    )
    pending = {remote.remote(job): i for i, job in enumerate(jobs)}
    outcomes: list[FileOutcome | None] = [None] * len(jobs)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the task raised: a bug around restore_file's own
                    cause = e.cause if isinstance(e.cause, BaseException) else e
                    outcome = FileOutcome.failed(jobs[i], one_line(cause), attempts=1)
                except ray.exceptions.RayError as e:  # the worker died on every attempt, or Ray failed it
                    outcome = FileOutcome.failed(jobs[i], one_line(e), attempts=crash_retries + 1)
                outcomes[i] = outcome
                on_done(outcome)
    finally:
        for ref in pending:  # Ctrl-C: what was not finished stops; a rerun resumes
            ray.cancel(ref, force=True)
    return [o for o in outcomes if o is not None]
