"""Latency, fps and memory of the real stream pipeline (:mod:`stream.app`, the code users run) on a clip.

Usage::

    python -m benchmarks.latency --input CLIP --json out.json [--backend auto] [--device auto]
        [--precision auto] [--models DIR] [--resize WxH] [--frames N] [--warmup N] [--repeat-to N]
        [--plot out.png] [--force-restore] [--micro-runs 50]

The run is ``stream.app.run(StreamConfig(null_sink=True, progress=False))``: file source -> restore
stage -> NullSink, so encoding is not measured (``render`` is the null sink's write).

Clip preparation (only when ``--resize``, ``--repeat-to`` or ``--frames`` is given): the clip is
decoded once and re-encoded (H.264, CRF 18) into a temporary file, which is what the pipeline then
decodes. ``--resize WxH`` LETTERBOXES: the picture is scaled to fit WxH with its aspect ratio kept and
padded with black bars (640x360 -> 640x480 keeps 640x360 and adds 60 px top and bottom), because a
stretched face would change what the face detector and the networks see. ``--repeat-to N`` appends
the clip to itself until it has at least N frames; ``--frames N`` then keeps the first N.

Warm-up: the first ``--warmup`` written frames (lazy initialisation, first network calls, caches) are
left out of every distribution and of the steady fps, which is (frames written after the warm-up) /
(time from the warm-up's last write to the last write), from the render thread's per-frame timestamps.

``--force-restore`` runs the networks on a copy of the model directory whose detector's output is
``max(network mask, fixed hole)``: the detector network still runs in full, and every face then has a
surgical-mask-shaped hole (from below the eyes to the chin, see :func:`forced_hole`), so the generator
and compositing run on every face of every frame. Use it with untrained weights (whose detector finds
no mask) to measure the generator path; it changes no product code.

Besides the pipeline, each network is timed alone (``engine.run`` at batch 1 on random input, median of
``--micro-runs`` calls after warm-up calls), and ``bound_by`` compares the stages to say whether the
frame rate is bound by the networks, face detection, decoding or Python/OpenCV glue.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.environment import device_info, git, models_info, versions
from benchmarks.latency_inputs import parse_size, prepare_clip, probe, write_forced_models
from benchmarks.report import setup_logging, write_report
from engines.errors import EngineError
from engines.runtime import DEVICE_CHOICES, PRECISION_CHOICES, resolve_device
from engines.select import BACKENDS
from stream.app import DEMO_CLIP, StreamConfig, run
from stream.errors import StreamError
from stream.media.sources import open_source
from stream.networks import check_engine_choices, default_models_dir, load_engines
from stream.restore.config import LOCATE_AHEAD
from stream.restore.processor import FrameReport
from stream.stats import ProgressUpdate, distribution

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "deocclude.latency/1"
# "faces" exists with --locate-ahead (auto: where the op set overlaps): detection, upload and face mesh of
# frame N+1 in their own thread.
PIPELINE_STAGES = ("capture", "faces", "restore", "render")
CLIP_CRF = "18"


@dataclass(frozen=True)
class LatencyConfig:
    """One benchmark run; the fields are the command-line options (see the module docstring)."""

    input: Path
    json_path: Path
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    models: Path | None = None
    resize: tuple[int, int] | None = None
    frames: int | None = None
    warmup: int = 10
    repeat_to: int | None = None
    plot: Path | None = None
    force_restore: bool = False
    micro_runs: int = 50
    locate_ahead: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        check_engine_choices(self.backend, self.device, self.precision)
        if self.resize is not None and (min(self.resize) < 16 or any(v % 2 for v in self.resize)):
            raise ValueError(f"resize must be even sizes >= 16 (H.264 4:2:0), got {self.resize}")
        if self.frames is not None and self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")
        if self.repeat_to is not None and self.repeat_to < 1:
            raise ValueError(f"repeat_to must be >= 1, got {self.repeat_to}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.micro_runs < 1:
            raise ValueError(f"micro_runs must be >= 1, got {self.micro_runs}")
        if self.frames is not None and self.frames <= self.warmup + 1:
            raise ValueError(f"frames must exceed warmup + 1 = {self.warmup + 1}, got {self.frames}")


def measure_networks(models: Path, *, backend: str, device: str, precision: str, runs: int) -> dict[str, Any]:
    """Median (and p90) ms of ``engine.run`` at batch 1 on random input, per network, after 5 warm-up calls."""
    engines = load_engines(
        models, backend=backend, device=device, precision=precision, max_batch=1, intra_threads=None
    )
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {}
    try:
        for role, engine in (("detector", engines.detector), ("generator", engines.generator)):
            s = engine.info.crop_size
            feeds: dict[str, Any] = {"image": rng.random((1, 3, s, s), dtype=np.float32)}
            if role == "generator":
                feeds["mask"] = (rng.random((1, 1, s, s)) > 0.5).astype(np.float32)
            sync = _cuda_sync(engine.device)
            if sync is not None:  # device tensors: time the network, not host<->device copies
                import torch

                feeds = {k: torch.from_numpy(v).to(engine.device) for k, v in feeds.items()}
            times = []
            for i in range(5 + runs):
                t0 = time.perf_counter()
                engine.run(feeds)
                if sync is not None:
                    sync()
                if i >= 5:
                    times.append((time.perf_counter() - t0) * 1e3)
            results[role] = {
                "batch": 1,
                "runs": runs,
                "median_ms": float(np.median(times)),
                "p90_ms": float(np.percentile(times, 90)),
                "backend": engine.backend,
                "crop_size": s,
            }
    finally:
        engines.close()
    return results


def _cuda_sync(device: str) -> Any:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.synchronize


# ------------------------------------------------------------------------------------------ analysis
def steady_fps(write_times_s: Sequence[float], warmup: int) -> float | None:
    """Frames written after the first ``warmup`` / time from the warm-up's last write to the last write."""
    n = len(write_times_s)
    if n - warmup < 2:
        return None
    t0 = write_times_s[warmup - 1] if warmup > 0 else 0.0
    span = write_times_s[-1] - t0
    return (n - warmup) / span if span > 0 else None


# What must have happened on a frame for a restore step to have run: a FrameReport says 0.0 for a step
# that did not run, and those zeros would drag its percentiles down. upload/download exist on CUDA only.
RAN_WHEN = {
    "detect": "detected",
    "upload": "faces",
    "align": "faces",
    "mask": "faces",
    "restore": "restored",
    "composite": "restored",
    "download": "restored",
}


def _ran(report: FrameReport, when: str) -> bool:
    if when == "detected":
        return report.detected
    return (report.faces if when == "faces" else report.masked_faces) > 0


def restore_steps(reports: Sequence[FrameReport]) -> dict[str, dict[str, Any]]:
    """Distribution of each restore sub-step over the frames where it ran (``n`` says how many)."""
    keys = (
        list(reports[0].timings_ms) if reports else [k for k in RAN_WHEN if k not in ("upload", "download")]
    )
    return {
        key: distribution([r.timings_ms[key] for r in reports if _ran(r, RAN_WHEN.get(key, "restored"))])
        for key in keys
    }


def measure_decode(clip: Path, warmup: int) -> dict[str, Any]:
    """Per-frame ms of the pipeline's own file source decoding ``clip`` with nothing else running.

    Compared with the in-pipeline ``capture`` time it separates decoding cost from waiting for the CPU
    or the GIL while the restore thread runs.
    """
    source = open_source(str(clip))
    times = []
    try:
        frames = iter(source)
        while True:
            t0 = time.perf_counter()
            if next(frames, None) is None:
                break
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        source.close()
    return distribution(times[warmup:])


def _per_frame(d: Mapping[str, Any], n_frames: int) -> float:
    """Mean ms per frame of a step that ran on ``d["n"]`` of ``n_frames`` frames."""
    return float(d["mean"] or 0.0) * d["n"] / max(1, n_frames)


def bound_by(
    stages: Mapping[str, Any],
    steps: Mapping[str, Any],
    nets: Mapping[str, Any],
    decode_alone: Mapping[str, Any],
    fps: float | None,
) -> dict[str, Any]:
    """Which part limits the frame rate, from per-frame means (throughput follows means, not p50s).

    Stages run in their own threads, so the slowest stage bounds fps. A slow ``capture`` is ``decode``
    when decoding alone is about as slow, else ``contention`` (the capture thread waiting for a core or
    the GIL). From the FrameReports: ``networks`` = mask step (detector network + smoothing) + restore
    step (generator), ``face_detection`` = YuNet + tracker, ``face_prior`` = face mesh + prior fit +
    guide, ``glue`` = alignment, compositing and the restore stage's time outside the steps (Python
    bookkeeping).

    With a ``faces`` stage (``--locate-ahead``: detection, upload and face mesh of frame N+1 in their own
    thread) face detection, the upload and the mesh run outside the restore thread, and ``overlap_ms`` is what the two threads must have
    run at the same time per frame: faces + restore beyond the frame period (0 when they did not overlap).
    """
    per_stage = {k: float(stages[k]["mean"] or 0.0) for k in PIPELINE_STAGES if k in stages}
    slowest = max(per_stage, key=lambda k: per_stage[k])
    n = int(stages["restore"]["n"])
    step = {k: _per_frame(d, n) for k, d in steps.items()}
    restore_ms = per_stage["restore"]
    two_threads = "faces" in per_stage
    ahead = ("detect", "upload", "mesh")  # what the faces thread runs, with two threads
    in_restore_thread = {k: v for k, v in step.items() if not (two_threads and k in ahead)}
    parts = {
        "networks": step.get("mask", 0.0) + step.get("restore", 0.0),
        "face_detection": step.get("detect", 0.0),
        "face_prior": step.get("mesh", 0.0) + step.get("prior", 0.0),
        "glue": step.get("align", 0.0)
        + step.get("composite", 0.0)
        + max(0.0, restore_ms - sum(in_restore_thread.values())),
    }
    for key in ("upload", "download"):  # CUDA only: host<->device copies count as glue here
        if key in in_restore_thread:
            parts["glue"] += step.get(key, 0.0)
    decode_ms = float(decode_alone["mean"] or 0.0)
    if slowest == "capture":
        verdict = "decode" if per_stage["capture"] <= 1.5 * decode_ms + 1.0 else "contention"
    elif slowest == "render":
        verdict = "sink"
    else:
        verdict = max(parts, key=lambda k: parts[k])
    share = {k: (v / restore_ms if restore_ms > 0 else 0.0) for k, v in parts.items()}
    period = f"{1000.0 / fps:.1f} ms frame period ({fps:.1f} fps)" if fps else "no steady fps"
    overlap_ms = None
    faces_text = ""
    if two_threads:
        faces_ms = per_stage["faces"]
        overlap_ms = max(0.0, faces_ms + restore_ms - 1000.0 / fps) if fps else None
        seen = (
            f"{overlap_ms:.1f} ms/frame observed overlapping restore" if overlap_ms is not None else "no fps"
        )
        faces_text = f"faces thread (detection, upload and face mesh of the next frame) {faces_ms:.1f} ms/frame ({seen}). "
    det, gen = nets["detector"]["median_ms"], nets["generator"]["median_ms"]
    text = (
        f"Slowest thread: {slowest} at {per_stage[slowest]:.1f} ms/frame (mean) for a {period}. "
        f"capture {per_stage.get('capture', 0):.1f} ms/frame in the pipeline vs {decode_ms:.1f} ms decoding "
        f"alone; render (null sink) {per_stage.get('render', 0):.2f} ms. restore {restore_ms:.1f} ms/frame: "
        f"networks {parts['networks']:.1f} ms ({share['networks']:.0%}; alone at batch 1 the detector takes "
        f"{det:.1f} ms and the generator {gen:.1f} ms), face detection (YuNet + tracker) "
        f"{parts['face_detection']:.1f} ms ({share['face_detection']:.0%}), face prior (mesh + fit + guide) "
        f"{parts['face_prior']:.1f} ms ({share['face_prior']:.0%}), alignment + compositing + Python "
        f"glue {parts['glue']:.1f} ms ({share['glue']:.0%}). {faces_text}Verdict: bound by {verdict}."
    )
    return {
        "verdict": verdict,
        "slowest_stage": slowest,
        "stage_mean_ms": per_stage,
        "decode_alone_mean_ms": decode_ms,
        "restore_breakdown_ms": parts,
        "restore_breakdown_share": share,
        "overlap_ms": overlap_ms,
        "analysis": text,
    }


# ------------------------------------------------------------------------------------------ environment
def models_note(minfo: Mapping[str, Any], force_restore: bool, restored: int, measured: int) -> str:
    """One readable line on what the weights are and on which frames the generator really ran."""
    notes = []
    if min(minfo["iterations"].values()) == 0:
        notes.append(
            "weights are UNTRAINED (iterations=0 in ModelInfo): timings are valid, restorations are not"
        )
    if force_restore:
        notes.append(
            "--force-restore: detector output = max(network mask, fixed surgical-mask hole), so the "
            "generator and compositing run on every face (the detector network still runs)"
        )
    else:
        notes.append("the generator runs only on faces whose detected mask is non-empty")
    notes.append(f"the generator ran on {restored} of {measured} measured frames")
    return "; ".join(notes)


# ------------------------------------------------------------------------------------------ the run
def measure(config: LatencyConfig) -> dict[str, Any]:
    """Prepare the clip, run the pipeline, time the networks alone; returns the JSON-ready report."""
    if not config.input.is_file():
        raise FileNotFoundError(f"input clip not found: {config.input}")
    device = resolve_device(config.device)
    models = config.models or default_models_dir(device)
    for role in ("detector", "generator"):
        if not (models / f"{role}.onnx").is_file():
            raise FileNotFoundError(f"{role} model not found: {models / f'{role}.onnx'}")
    original = probe(config.input)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deocclude-latency-")))
        clip, prepared = config.input, None
        if config.resize or config.repeat_to or config.frames:
            prepared = prepare_clip(
                config.input,
                tmp / "clip.mp4",
                size=config.resize,
                repeat_to=config.repeat_to,
                max_frames=config.frames,
            )
            clip = tmp / "clip.mp4"
        run_models = models
        if config.force_restore:
            run_models = tmp / "forced_models"
            write_forced_models(models, run_models)
        n_frames = prepared["frames"] if prepared else original["frames"]
        if n_frames <= config.warmup + 1:
            raise ValueError(
                f"the clip has {n_frames} frames; need more than warmup + 1 = {config.warmup + 1}"
            )

        write_times: list[float] = []

        def on_progress(update: ProgressUpdate) -> None:
            write_times.append(update.elapsed_s)

        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        load_before = os.getloadavg()
        stream_config = StreamConfig(
            input=str(clip),
            backend=config.backend,
            device=device,
            precision=config.precision,
            models=run_models,
            null_sink=True,
            progress=False,
            locate_ahead=config.locate_ahead,
            intra_threads=config.threads,
        )
        result = run(stream_config, on_progress=on_progress)
        load_after = os.getloadavg()
        memory: dict[str, Any] = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if device.startswith("cuda"):
            memory["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        nets = measure_networks(
            run_models,
            backend=config.backend,
            device=device,
            precision=config.precision,
            runs=config.micro_runs,
        )
        decode_alone = measure_decode(clip, config.warmup)

    stats, w = result.stats, config.warmup
    if stats.dropped_total or stats.stopped or stats.frames_out != n_frames:
        raise StreamError(
            f"the run must write all {n_frames} frames without drops, got "
            f"{stats.frames_out} written, {stats.dropped_total} dropped, stopped={stats.stopped}"
        )
    stages = {k: distribution(v[w:]) for k, v in stats.stage_ms.items()}
    # From decoded to written, as latency_ms, but without the time spent waiting in queues.
    service = [stats.stage_ms["restore"][i] + stats.stage_ms["render"][i] for i in range(w, stats.frames_out)]
    reports = result.reports[w:]
    steps = restore_steps(reports)
    fps = steady_fps(write_times, w)
    minfo = models_info(models)
    shown = prepared or original
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": {"revision": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))},
        "device": device_info(result.device),
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "versions": versions(),
        "backend": result.backend,
        "precision": config.precision,
        "models": minfo,
        "models_note": models_note(
            minfo, config.force_restore, sum(r.masked_faces > 0 for r in reports), len(reports)
        ),
        "force_restore": config.force_restore,
        "locate_ahead": config.locate_ahead,
        "threads": config.threads,
        "input": {"path": str(config.input), **original, "processed": prepared},
        "resolution": f"{shown['width']}x{shown['height']}",
        "frames": {
            "written": stats.frames_out,
            "warmup": w,
            "measured": stats.frames_out - w,
            "dropped": stats.dropped_total,
        },
        "fps": {"steady": fps, "overall": stats.fps, "wall_s": stats.wall_s},
        "stage_ms": stages,
        "restore_steps_ms": steps,
        "latency_ms": distribution(stats.latency_ms[w:]),
        "service_ms": distribution(service),
        "faces": {
            "per_frame_mean": float(np.mean([r.faces for r in reports])) if reports else 0.0,
            "restored_per_frame_mean": float(np.mean([r.masked_faces for r in reports])) if reports else 0.0,
            "frames_with_faces": sum(r.faces > 0 for r in reports),
            "frames_restored": sum(r.masked_faces > 0 for r in reports),
        },
        "memory": memory,
        "network_only_ms": nets,
        "decode_alone_ms": decode_alone,
        "bound_by": bound_by(stages, steps, nets, decode_alone, fps),
        "notes": {
            "fps": "steady = frames written after the warm-up / time from the warm-up's last write to the "
            "last write (render-thread timestamps); overall = all frames / pipeline wall time",
            "warmup": f"the first {w} frames are left out of every distribution and of steady fps",
            "stage_ms": "per frame, per pipeline thread: capture = decode, faces (CUDA only) = face detection + "
            "upload of the next frame, restore = the whole restore stage, "
            "render = NullSink.write (no encoding is measured)",
            "restore_steps_ms": "FrameReport.timings_ms over the frames where the step ran (n): detect = YuNet "
            "+ tracker when it ran, align/mask with faces, restore (generator) / composite "
            "with restored faces; on CUDA GPU event times except detect",
            "latency_ms": "sink write done - frame decoded; a file is read as fast as the bounded queues "
            "accept, so this includes waiting in the full queue before the slowest stage (about "
            "queue_size + 1 frame periods)",
            "service_ms": "restore + render of each frame: latency_ms without the queueing, i.e. what a live "
            "source slower than the pipeline adds after decoding",
            "decode_alone_ms": "the same file source decoding the same clip with nothing else running; "
            "capture much slower than this in the pipeline means waiting for a core or the GIL",
            "memory": "peak_rss_mib: process peak RSS (ru_maxrss), including model loading and, with "
            "--device auto, the torch import stream.app does to look for a GPU; cuda_max_allocated_mib: "
            "torch's allocator only (not TensorRT / ONNX Runtime arenas)",
            "network_only_ms": "engine.run at batch 1 on random input, after 5 warm-up calls, on the models "
            "the pipeline ran; device tensors and a synchronize on CUDA",
        },
        "pipeline_summary_all_frames": stats.summary(),
    }
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.latency",
        description="Latency, fps and memory of the real stream pipeline on a clip.",
    )
    p.add_argument("--input", type=Path, default=DEMO_CLIP, help="video file (default: %(default)s)")
    p.add_argument("--json", type=Path, required=True, dest="json_path", help="where to write the report")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--precision", default="auto", choices=PRECISION_CHOICES)
    p.add_argument(
        "--models", type=Path, default=None, help="detector.onnx + generator.onnx (default: by device)"
    )
    p.add_argument(
        "--resize",
        type=parse_size,
        default=None,
        metavar="WxH",
        help="letterbox the clip to WxH (aspect kept, black bars)",
    )
    p.add_argument("--frames", type=int, default=None, help="process only the first N frames")
    p.add_argument("--warmup", type=int, default=10, help="frames left out of the statistics (default: 10)")
    p.add_argument(
        "--repeat-to",
        type=int,
        default=None,
        dest="repeat_to",
        metavar="N",
        help="loop the clip to at least N frames",
    )
    p.add_argument("--plot", type=Path, default=None, help="bar chart of per-stage p50/p95 (PNG)")
    p.add_argument(
        "--force-restore",
        action="store_true",
        dest="force_restore",
        help="force a mask-shaped hole on every face so the generator always runs",
    )
    p.add_argument(
        "--locate-ahead",
        default="auto",
        choices=LOCATE_AHEAD,
        dest="locate_ahead",
        help="faces of frame N+1 located in their own thread (run_stream.py --locate-ahead)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per network in the pipeline run (run_stream.py --threads; default: the runtime's)",
    )
    p.add_argument(
        "--micro-runs",
        type=int,
        default=50,
        dest="micro_runs",
        help="calls per network for the network-only timing (default: 50)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for bad input or a failed run, with one error line)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        config = LatencyConfig(**vars(args))
        report = measure(config)
    except (ValueError, OSError, EngineError, StreamError) as exc:
        logger.error("%s", exc)
        return 2
    shown_argv = sys.argv[1:] if argv is None else list(argv)
    report = {"command": " ".join(["python -m benchmarks.latency", *shown_argv]), **report}
    write_report(report, config.json_path)
    if config.plot is not None:
        from benchmarks.plots import plot_latency

        plot_latency(report, config.plot)
    fps, st = report["fps"]["steady"], report["stage_ms"]
    logger.info(
        "%s on %s: %s fps steady; restore p50 %.1f ms p95 %.1f ms; %s",
        report["backend"],
        report["device"]["name"],
        f"{fps:.1f}" if fps else "n/a",
        st["restore"]["p50"],
        st["restore"]["p95"],
        report["bound_by"]["analysis"],
    )
    logger.info("report -> %s", config.json_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
