"""The command line of deocclude: ``run_stream.py`` and the ``deocclude`` console script both call :func:`main`.

    deocclude                                   # the bundled demo clip -> out/demo_restored.mp4
    deocclude --input clip.mp4 --output out.mp4
    deocclude --input rtsp://host/cam --output rtsp://host:8554/restored
    deocclude --input 0 --display               # webcam 0 in a window

:func:`main` returns the exit status and never exits itself; the callers (``run_stream.py``, the console
script's wrapper) pass it to ``sys.exit``. Everything below raises typed errors that become one line here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.media.sinks import DEFAULT_CRF
from stream.redact import RedactingFilter, redact, redact_any
from stream.shutdown import ShutdownSignals
from stream.stats import PipelineStats

if TYPE_CHECKING:
    from stream.app import StreamConfig

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    from engines.runtime import DEVICE_CHOICES, PRECISION_CHOICES
    from engines.select import BACKENDS
    from stream.app import DEMO_CLIP
    from stream.restore.config import LOCATE_AHEAD, OCCLUSION_SOURCES, RESTORERS

    p = argparse.ArgumentParser(
        description="Restore occluded faces in a video file, an RTSP/HTTP stream or a camera.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--input",
        "-i",
        default=str(DEMO_CLIP),
        help="video file, rtsp:// / http(s):// / udp:// URL, or a camera: index (0, 1, ...), /dev/videoN "
        "or camera:NAME (see --list-cameras)",
    )
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="output file (.mp4/.mkv), rtsp:// / udp:// / srt:// / rtmp:// URL, or vcam[:/dev/videoN] "
        "(a virtual camera for video calls, extra 'vcam'); "
        "default for a file input: out/<name>_restored.mp4",
    )
    p.add_argument("--display", action="store_true", help="show the restored video in a window (q/Esc quits)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where the networks run")
    p.add_argument(
        "--precision", choices=PRECISION_CHOICES, default="auto", help="auto: fp16 on CUDA, fp32 on CPU"
    )
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        help="directory with detector.onnx and generator.onnx (default: models/full on a GPU, "
        "models/small on a CPU)",
    )
    p.add_argument("--max-faces", type=int, default=4, help="faces restored per frame (largest first)")
    p.add_argument(
        "--detect-every",
        type=int,
        default=1,
        help="run the face detector every N frames (tracking in between)",
    )
    p.add_argument(
        "--mesh-every",
        type=int,
        default=1,
        help="run the face prior's face mesh every N frames of a face, reusing its landmarks in between "
        "(faster; 2 raised the restored mouth's flicker from 1.29x to 1.35x the real face's)",
    )
    p.add_argument(
        "--locate-ahead",
        choices=LOCATE_AHEAD,
        default="auto",
        help="detect the faces of frame N+1 in their own thread while frame N is restored; "
        "auto: where the op set overlaps",
    )
    p.add_argument(
        "--occlusion",
        choices=OCCLUSION_SOURCES,
        default="auto",
        help="what finds the occluder: the visible-face segmenter (any occluder), the face-mask detector, "
        "or their union; auto: the segmenter when the models have one",
    )
    p.add_argument(
        "--restorer",
        choices=RESTORERS,
        default="auto",
        help="what fills the hole: the generator (given the face prior when it takes one) or the fitted "
        "face prior alone; auto: the generator",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="a photo of your bare face: the face prior remembers it (identity memory)",
    )
    _add_triton_options(p)
    p.add_argument("--queue-size", type=int, default=4, help="frames buffered between pipeline stages")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per network (default: 1 on a CPU, the runtime's on a GPU)",
    )
    p.add_argument("--no-audio", action="store_true", help="do not copy the input's audio to the output file")
    p.add_argument(
        "--crf",
        type=int,
        default=DEFAULT_CRF,
        help="x264 quality of a file output, 0 (lossless) .. 51; the default is visually lossless",
    )
    p.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pace a file input to its timestamps (default: on when the output is a stream)",
    )
    p.add_argument(
        "--reconnect-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long a live input or a stream output may be down before the run fails "
        "(default: reconnect forever, with backoff)",
    )
    _add_live_options(p)
    p.add_argument("--stats-json", type=Path, default=None, help="write run statistics (latency, fps) here")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar / live line")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _add_triton_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--triton-url",
        default=None,
        metavar="URL",
        help="Triton server of --backend triton: http://HOST[:PORT] (default http://127.0.0.1:8000; "
        "HTTP only, see the README)",
    )
    p.add_argument(
        "--triton-shared-memory",
        action="store_true",
        help="tensors through system shared memory instead of HTTP bodies (server on this host only)",
    )
    p.add_argument(
        "--triton-timeout", type=float, default=10.0, metavar="SECONDS", help="per request to the server"
    )


def _triton_options(args: argparse.Namespace) -> Any:
    """The TritonOptions of --backend triton, or None for any other backend (where a --triton-url is an error)."""
    if args.backend != "triton":
        if args.triton_url is not None or args.triton_shared_memory:
            raise ValueError(
                f"--triton-url / --triton-shared-memory apply to --backend triton, got {args.backend!r}"
            )
        return None
    from engines.triton_engine import DEFAULT_URL, TritonOptions

    return TritonOptions(
        url=args.triton_url or DEFAULT_URL,
        timeout_s=args.triton_timeout,
        shared_memory=args.triton_shared_memory,
    )


def _add_live_options(p: argparse.ArgumentParser) -> None:
    from stream.media.compare import COMPARE_MODES
    from stream.presets import PRESETS

    p.add_argument(
        "--compare",
        choices=COMPARE_MODES,
        default=None,
        help="input and output in one frame: side-by-side (twice as wide) or split (left half input)",
    )
    p.add_argument(
        "--preview",
        default=None,
        metavar="[HOST:]PORT",
        help="serve a live preview page and /stream.mjpg on HOST:PORT (host 127.0.0.1 unless given)",
    )
    p.add_argument(
        "--list-cameras", action="store_true", help="list the cameras (index, device, name) and exit"
    )
    p.add_argument(
        "--camera-size", default=None, metavar="WxH", help="size to ask a camera input for, e.g. 1280x720"
    )
    p.add_argument("--camera-fps", type=float, default=None, help="frame rate to ask a camera input for")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="; ".join(f"{n}: {pr.why}" for n, pr in PRESETS.items()) + " (explicit options override it)",
    )


def _camera_request(args: argparse.Namespace) -> Any:
    """The CameraRequest of --camera-size / --camera-fps, or None when neither is given."""
    from stream.media.cameras import CameraRequest, parse_size

    if args.camera_size is None and args.camera_fps is None:
        return None
    w, h = parse_size(args.camera_size) if args.camera_size else (None, None)
    return CameraRequest(width=w, height=h, fps=args.camera_fps)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(levelname).1s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # a second line of defence; modules redact themselves
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def _stopped_by(signals: ShutdownSignals, stats: PipelineStats | None, error: bool) -> str:
    """Why the run ended: a signal's name, "error", "stop" (q/Esc, stop()), or "end of input"."""
    if signals.stopped_by is not None:
        return signals.stopped_by
    if error:
        return "error"
    return "stop" if stats is not None and stats.stopped else "end of input"


def _write_stats(path: Path | None, summary: dict[str, Any]) -> str | None:
    """Write the stats JSON; returns an error line instead of raising (the run's own result wins)."""
    if path is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(redact_any(summary), indent=2, allow_nan=False))
    except (OSError, ValueError) as e:
        return f"error: cannot write --stats-json {path}: {getattr(e, 'strerror', None) or e}"
    return None


def _summary_line(stats: PipelineStats, stopped_by: str, faces: int | None, output: str | None) -> str:
    return (
        f"done: {stats.frames_out} frames in {stats.wall_s:.1f} s ({stats.fps:.1f} fps), "
        + (f"{faces} face restorations, " if faces is not None else "")
        + f"dropped {stats.dropped_total}, stopped_by {stopped_by}"
        + (f" -> {redact(output)}" if output else "")
    )


def config_from_args(args: argparse.Namespace) -> StreamConfig:
    """The run of parsed :func:`build_parser` options (``stream.batch`` builds its per-file runs from it
    too); a bad value is a ValueError naming what was expected."""
    from stream.app import StreamConfig

    return StreamConfig(
        input=args.input,
        output=args.output,
        display=args.display,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        models=args.models,
        max_faces=args.max_faces,
        detect_every=args.detect_every,
        mesh_every=args.mesh_every,
        locate_ahead=args.locate_ahead,
        queue_size=args.queue_size,
        keep_audio=not args.no_audio,
        intra_threads=args.threads,
        progress=not args.quiet,
        crf=args.crf,
        realtime=args.realtime,
        reconnect_timeout_s=args.reconnect_timeout,
        keep_reports=False,
        compare=args.compare,
        preview=args.preview,
        camera=_camera_request(args),
        occlusion=args.occlusion,
        restorer=args.restorer,
        reference=args.reference,
        triton=_triton_options(args),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    if args.list_cameras:
        from stream.media.cameras import format_cameras, list_cameras

        print(format_cameras(list_cameras()))
        return EXIT_OK
    if args.preset is not None:
        from stream.presets import apply_preset

        try:
            apply_preset(args.preset, args, parser, sys.argv[1:] if argv is None else argv)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE

    from engines.errors import EngineError
    from stream.app import run
    from stream.errors import StageError, StreamError
    from stream.memory import limit_malloc_arenas

    # Before the pipeline's threads exist: a run of days must not grow from malloc arena fragmentation.
    limit_malloc_arenas()

    stop = threading.Event()
    with ShutdownSignals(stop) as signals:
        try:
            config = config_from_args(args)
            result = run(config, stop_event=stop)
        except KeyboardInterrupt:
            # A second Ctrl-C: the pipeline closed its sink on the way out; no stats are complete.
            print("interrupted: what was processed so far has been written", file=sys.stderr)
            return EXIT_INTERRUPTED
        except StageError as e:
            print(f"error: {redact(str(e))}", file=sys.stderr)
            logging.getLogger("deocclude").debug("stage failure", exc_info=e.__cause__)
            stats = e.stats
            if stats is not None:
                by = _stopped_by(signals, stats, error=True)
                print(_summary_line(stats, by, None, args.output), file=sys.stderr)
                if problem := _write_stats(args.stats_json, {**stats.summary(), "stopped_by": by}):
                    print(problem, file=sys.stderr)
            return EXIT_ERROR
        except (StreamError, EngineError, FileNotFoundError, ValueError, ImportError) as e:
            print(f"error: {redact(str(e))}", file=sys.stderr)
            return EXIT_USAGE if isinstance(e, ValueError) else EXIT_ERROR

    stats = result.stats
    by = _stopped_by(signals, stats, error=False)
    print(_summary_line(stats, by, result.masked_faces, result.output), file=sys.stderr)
    summary = stats.summary()
    summary.update(
        stopped_by=by,
        masked_faces=result.masked_faces,
        device=result.device,
        backend=result.backend,
        models=str(result.models),
        input=args.input,
        output=result.output,
        psnr_outside_faces_db=None if result.fidelity is None else result.fidelity.summary(),
    )
    if problem := _write_stats(args.stats_json, summary):
        print(problem, file=sys.stderr)
        return EXIT_ERROR
    return signals.exit_code or EXIT_OK
