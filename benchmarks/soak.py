"""Soak test: N frames through the real pipeline as the CLI runs it; resident memory slope, frame
accounting and fps drift.

    python -m benchmarks.soak --frames 20000 --json benchmarks/results/soak_cpu.json

The input is the bundled demo clip, decoded again and again (indices and timestamps keep increasing,
as from a long recording); the output is a real H.264 file (fragmented MP4, deleted afterwards unless
``--keep-output``). Restoration runs as the CLI runs it: default models, face counts without per-frame
reports. Resident memory (``/proc/self/statm``) is sampled every ``--sample-every`` frames; the
slope is a least-squares fit over the samples after ``--warmup`` frames, reported in bytes per frame
and KB per 10k frames (the issue's bar: < 50 KB per 10k frames).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.environment import device_info, git, versions
from benchmarks.report import setup_logging, write_report
from stream.app import DEMO_CLIP, StreamConfig, open_run
from stream.media.sinks import FileSink
from stream.media.sources import FileSource
from stream.memory import DEFAULT_ARENAS, HeapTrimmer, heap_stats, limit_malloc_arenas
from stream.pipeline import Pipeline
from stream.stats import ProgressUpdate
from stream.types import Frame, VideoInfo

log = logging.getLogger("benchmarks.soak")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


# Resident memory by the kind of mapping it sits in (/proc/self/smaps), to find what grows when
# malloc's in-use bytes do not: glibc's main heap ([heap]), its other arenas (anonymous maps that
# start on a 64 MiB boundary: glibc aligns each arena heap to HEAP_MAX_SIZE), every other anonymous
# map (large malloc blocks, CPython's object arenas, thread stacks, library pools: the kernel merges
# neighbours, so sizes cannot tell them apart) and file-backed pages (code, model files).
_ARENA_ALIGN = 64 << 20
RSS_KINDS = ("heap", "malloc_arenas", "anon_other", "file")


def rss_by_kind() -> dict[str, int] | None:
    """Resident bytes per :data:`RSS_KINDS` now; None where /proc/self/smaps cannot be read."""
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return None
    out = dict.fromkeys(RSS_KINDS, 0)
    kind = "anon_other"
    for line in text.splitlines():
        head = line.split(maxsplit=6)
        if (
            head and "-" in head[0] and len(head) >= 5
        ):  # a mapping's first line: range perms offset dev inode [path]
            lo = int(head[0].split("-")[0], 16)
            path = head[5] if len(head) > 5 else ""
            if path == "[heap]":
                kind = "heap"
            elif path.startswith("/"):
                kind = "file"
            elif path:
                kind = "anon_other"  # [stack], [vvar], ...
            elif lo % _ARENA_ALIGN == 0:
                kind = "malloc_arenas"
            else:
                kind = "anon_other"
        elif head and head[0] == "Rss:":
            out[kind] += int(head[1]) * 1024
    return out


class LoopingFileSource:
    """A file decoded from the start each time it ends, until ``frames`` frames; a real FileSource
    underneath (its decode, colour conversion and rotation), indices and pts continued across loops."""

    def __init__(self, path: Path, frames: int) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.path, self.frames = path, frames
        self._current = FileSource(path)
        self._info = dataclasses.replace(self._current.info, frame_count=frames)
        self._stop = threading.Event()
        self.loops = 0

    @property
    def info(self) -> VideoInfo:
        return self._info

    def __iter__(self) -> Iterator[Frame]:
        index, offset = 0, 0
        step = max(1, round(1 / (self._info.fps * self._info.time_base)))
        while not self._stop.is_set():
            last = offset
            for f in self._current:
                if index >= self.frames or self._stop.is_set():
                    return
                assert f.pts is not None
                last = offset + f.pts
                yield Frame(index, last, f.time_base, f.bgr_u8, f.captured_at)
                index += 1
            self._current.close()
            self.loops += 1
            offset = last + step
            self._current = FileSource(self.path)

    def close(self) -> None:
        self._stop.set()
        self._current.close()


@dataclass
class Sample:
    frames: int
    rss: int
    t: float
    heap_in_use: int | None = None  # mallinfo2: what the program holds; flat where RSS grows = fragmentation
    heap_free: int | None = None
    by_kind: dict[str, int] | None = None  # rss_by_kind()


def slope_fit(samples: list[Sample]) -> tuple[float | None, float | None]:
    """Least-squares bytes per frame of RSS over ``samples`` (None for fewer than 3) and its standard
    error (None for fewer than 4: polyfit's covariance needs a residual degree of freedom)."""
    if len(samples) < 3:
        return None, None
    x = np.array([s.frames for s in samples], np.float64)
    y = np.array([s.rss for s in samples], np.float64)
    if len(samples) < 4:
        return float(np.polyfit(x, y, 1)[0]), None
    coeffs, cov = np.polyfit(x, y, 1, cov=True)
    return float(coeffs[0]), float(np.sqrt(cov[0, 0]))


def slope_per_frame(samples: list[Sample]) -> float | None:
    """Least-squares bytes per frame of RSS over ``samples`` (None for fewer than 3)."""
    return slope_fit(samples)[0]


def growth_between_fifths(samples: list[Sample]) -> dict[str, float] | None:
    """RSS growth as the difference of the medians of the first and last fifth of ``samples``, per 10k
    frames between the fifths' middles: robust to the +-MB noise of single samples (None for < 10)."""
    if len(samples) < 10:
        return None
    k = len(samples) // 5
    first, last = samples[:k], samples[-k:]
    m0 = float(np.median([s.rss for s in first]))
    m1 = float(np.median([s.rss for s in last]))
    span = float(np.median([s.frames for s in last]) - np.median([s.frames for s in first]))
    return {
        "median_first_fifth_mb": m0 / 1e6,
        "median_last_fifth_mb": m1 / 1e6,
        "kb_per_10k_frames": (m1 - m0) / span * 10_000 / 1e3 if span > 0 else 0.0,
    }


def rss_fit(after: list[Sample]) -> dict[str, Any]:
    """Slope (with its standard error) and fifth-to-fifth growth of the samples after the warm-up."""
    slope, err = slope_fit(after)
    return {
        "slope_bytes_per_frame": slope,
        "slope_kb_per_10k_frames": None if slope is None else slope * 10_000 / 1e3,
        "slope_stderr_kb_per_10k_frames": None if err is None else err * 10_000 / 1e3,
        "growth_between_fifths": growth_between_fifths(after),
    }


def by_kind_fit(after: list[Sample]) -> dict[str, Any] | None:
    """Per :data:`RSS_KINDS`: resident MB at the first and last sample and the fitted slope (KB per
    10k frames) over the samples after the warm-up; the samples themselves (frames, bytes per kind)."""
    rows = [s for s in after if s.by_kind is not None]
    if len(rows) < 3:
        return None
    fits: dict[str, Any] = {}
    for k in RSS_KINDS:
        slope = slope_fit([Sample(s.frames, (s.by_kind or {})[k], s.t) for s in rows])[0]
        fits[k] = {
            "first_mb": (rows[0].by_kind or {})[k] / 1e6,
            "last_mb": (rows[-1].by_kind or {})[k] / 1e6,
            "slope_kb_per_10k_frames": None if slope is None else slope * 10_000 / 1e3,
        }
    fits["samples"] = [[s.frames, *((s.by_kind or {})[k] for k in RSS_KINDS)] for s in rows]
    return fits


def fps_between(a: Sample, b: Sample) -> float:
    return (b.frames - a.frames) / (b.t - a.t) if b.t > a.t else 0.0


def between_trims(samples: list[Sample], trim_every: int | None) -> list[Sample]:
    """The samples not taken on a heap-trim frame (``--heap-trim``). Why: the trim runs just before the
    sample of every ``trim_every``-th frame, so those samples see resident memory for an instant
    ~12 MB below the level the process runs at (the pages come back within a few frames); one sample
    in four of that saw-tooth adds ~100 KB per 10k frames of noise to a 100k-frame fit and no trend."""
    if not trim_every:
        return samples
    return [s for s in samples if s.frames % trim_every]


def memory_and_fps(
    samples: list[Sample], warmup: int, trim_every: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's ``rss`` and ``fps`` sections from the samples so far (``rss.before_mb`` is the
    caller's); with ``trim_every``, also the fit over the samples between heap trims."""
    after = [s for s in samples if s.frames >= warmup]
    windows = max(2, len(after) // 5)
    first, last = after[:windows], after[-windows:]
    fps_first = fps_between(first[0], first[-1]) if len(first) >= 2 else None
    fps_last = fps_between(last[0], last[-1]) if len(last) >= 2 else None
    with_heap = [s for s in after if s.heap_in_use is not None]
    heap_slope = slope_fit([Sample(s.frames, s.heap_in_use or 0, s.t) for s in with_heap])[0]
    rss = {
        "at_warmup_mb": after[0].rss / 1e6 if after else None,
        "end_mb": samples[-1].rss / 1e6 if samples else None,
        "warmup_frames": warmup,
        **rss_fit(after),
        "between_trims": None
        if not trim_every
        else {"trim_every": trim_every, **rss_fit(between_trims(after, trim_every))},
        "heap_in_use_slope_kb_per_10k_frames": None if heap_slope is None else heap_slope * 10_000 / 1e3,
        "samples": [[s.frames, s.rss] for s in samples],
        "by_kind": by_kind_fit(after),
        "heap_samples": [
            [s.frames, s.heap_in_use, s.heap_free] for s in samples if s.heap_in_use is not None
        ],
    }
    fps = {
        "after_warmup_first_fifth": fps_first,
        "last_fifth": fps_last,
        "drift_pct": None if not (fps_first and fps_last) else 100.0 * (fps_last - fps_first) / fps_first,
    }
    return rss, fps


def soak(
    frames: int,
    *,
    warmup: int,
    sample_every: int,
    output: Path,
    models: Path | None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 10_000,
    heap_trim: bool = False,
) -> dict[str, Any]:
    """Run the soak; with ``checkpoint``, also write a partial report (``complete: false``) there every
    ``checkpoint_every`` frames, so a run longer than a session still leaves what it measured."""
    if not 0 <= warmup < frames:
        raise ValueError(f"warmup must be in 0..frames-1, got {warmup} for {frames} frames")
    config = StreamConfig(
        input=str(DEMO_CLIP), output=str(output), progress=False, keep_reports=False, models=models
    )
    samples: list[Sample] = []
    # An experiment, not the product: the 100k soak with a trim every 1,000 frames grew as fast as
    # without (benchmarks/results/README.md), so the CLI does not trim.
    trimmer = HeapTrimmer() if heap_trim else None
    trim_every = trimmer.every if trimmer is not None and trimmer.available else None
    rss0 = rss_bytes()
    header: dict[str, Any] = {
        "benchmark": "soak",
        "git": git("rev-parse", "--short", "HEAD"),
        "input": str(DEMO_CLIP.name),
        "frames_requested": frames,
    }

    def on_progress(u: ProgressUpdate) -> None:
        if trimmer is not None:
            trimmer.tick()  # the render thread, after the frame was written
        if u.frames_out % sample_every == 0:
            heap = heap_stats()
            samples.append(
                Sample(
                    u.frames_out,
                    rss_bytes(),
                    time.perf_counter(),
                    None if heap is None else heap.in_use,
                    None if heap is None else heap.free,
                    rss_by_kind(),
                )
            )
        if checkpoint is not None and u.frames_out % checkpoint_every == 0 and u.frames_out < frames:
            rss, fps = memory_and_fps(samples, warmup, trim_every)
            partial = {
                **header,
                "complete": False,
                "frames_done": u.frames_out,
                "frames_in": u.frames_in,
                "dropped": u.dropped,
                "elapsed_s": u.elapsed_s,
                "rss": {"before_mb": rss0 / 1e6, **rss},
                "fps": {"mean": u.frames_out / u.elapsed_s if u.elapsed_s > 0 else None, **fps},
            }
            write_report(partial, checkpoint)
            log.info("soak: checkpoint at %d frames -> %s", u.frames_out, checkpoint)

    with open_run(config) as opened:
        opened.source.close()  # the soak reads its own looping source of the same clip
        source = LoopingFileSource(DEMO_CLIP, frames)
        sink = FileSink(output, source.info)
        pipeline = Pipeline(source, opened.stages, sink, on_progress=on_progress, reference_every=10)
        stats = pipeline.run()
        counter = opened.counter
        device, backend = opened.device, opened.engines.generator.backend
    rss, fps = memory_and_fps(samples, warmup, trim_every)
    fidelity = sink.fidelity
    return {
        **header,
        "complete": True,
        "device": device_info(device),
        "backend": backend,
        "versions": versions(),
        "resolution": [source.info.width, source.info.height],
        "accounting": {
            "frames_in": stats.frames_in,
            "frames_out": stats.frames_out,
            "restore_calls": counter.frames,
            "dropped": stats.dropped_total,
            "exact": stats.frames_in == stats.frames_out == counter.frames == frames
            and stats.dropped_total == 0,
            "source_loops": source.loops,
            "error": stats.error,
        },
        "faces_restored": counter.masked_faces,
        "rss": {"before_mb": rss0 / 1e6, **rss},
        "fps": {"mean": stats.fps, **fps},
        "psnr_outside_faces_db": None if fidelity is None else fidelity.summary(),
        "heap_trim": None
        if trimmer is None
        else {
            "every_frames": trimmer.every,
            "available": trimmer.available,
            "trims": trimmer.trims,
            "mean_ms": trimmer.total_ms / trimmer.trims if trimmer.trims else None,
            "max_ms": trimmer.max_ms if trimmer.trims else None,
        },
        "wall_s": stats.wall_s,
    }


def summarise(path: Path) -> int:
    """Rewrite the RSS fit of the report at ``path`` from its own samples (reports made before the fit
    had its standard error and fifth-to-fifth growth)."""
    import json

    report = json.loads(path.read_text())
    rss = report["rss"]
    samples = [Sample(int(f), int(r), 0.0) for f, r in rss["samples"]]
    warmup = int(rss["warmup_frames"])
    after = [s for s in samples if s.frames >= warmup]
    rss.update(rss_fit(after))
    trim = report.get("heap_trim") or {}
    if trim.get("available"):
        rss["between_trims"] = {
            "trim_every": trim["every_frames"],
            **rss_fit(between_trims(after, trim["every_frames"])),
        }
    write_report(report, path)
    log.info("soak: %s refitted: slope %.1f +- %.1f KB / 10k frames, fifth to fifth %.1f KB / 10k frames", path,
             rss["slope_kb_per_10k_frames"] or 0.0, rss["slope_stderr_kb_per_10k_frames"] or 0.0,
             (rss["growth_between_fifths"] or {}).get("kb_per_10k_frames", 0.0))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--warmup", type=int, default=None, help="frames before the slope fit (default: 10%%)")
    p.add_argument("--sample-every", type=int, default=250)
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=10_000,
        help="with --json, write a partial report (complete: false) there every N frames",
    )
    p.add_argument("--keep-output", type=Path, default=None, help="write the restored video here and keep it")
    p.add_argument(
        "--no-arena-cap", action="store_true", help="leave glibc's malloc arenas uncapped (the CLI caps them)"
    )
    p.add_argument(
        "--heap-trim",
        action="store_true",
        help="malloc_trim every 1,000 frames (an experiment: the CLI does not; stream.memory)",
    )
    p.add_argument(
        "--summarise",
        type=Path,
        default=None,
        metavar="JSON",
        help="recompute the RSS fit of an existing report from its samples (in place) and exit",
    )
    args = p.parse_args(argv)
    setup_logging()
    if args.summarise is not None:
        return summarise(args.summarise)
    # As stream.cli.main does, before any pipeline thread exists (stream.memory).
    arenas_capped = False if args.no_arena_cap else limit_malloc_arenas()
    warmup = args.warmup if args.warmup is not None else args.frames // 10
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep_output or Path(tmp) / "soak.mp4"
        report = soak(
            args.frames,
            warmup=warmup,
            sample_every=args.sample_every,
            output=out,
            models=args.models,
            checkpoint=args.json,
            checkpoint_every=args.checkpoint_every,
            heap_trim=args.heap_trim,
        )
    report["malloc_arenas"] = {
        "capped": arenas_capped,
        "max": int(os.environ.get("MALLOC_ARENA_MAX") or DEFAULT_ARENAS) if arenas_capped else None,
    }
    r = report["rss"]
    if r["between_trims"] is not None:
        log.info(
            "soak: between heap trims, slope %.1f +- %.1f KB / 10k frames",
            r["between_trims"]["slope_kb_per_10k_frames"] or 0.0,
            r["between_trims"]["slope_stderr_kb_per_10k_frames"] or 0.0,
        )
    log.info(
        "soak: %d frames, accounting exact: %s, RSS %.1f -> %.1f MB, slope %.1f KB / 10k frames, fps drift %s %%",
        report["frames_requested"],
        report["accounting"]["exact"],
        r["at_warmup_mb"] or 0.0,
        r["end_mb"] or 0.0,
        r["slope_kb_per_10k_frames"] or 0.0,
        report["fps"]["drift_pct"],
    )
    if args.json:
        write_report(report, args.json)
    return 0 if report["accounting"]["exact"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
