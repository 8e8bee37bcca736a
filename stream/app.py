"""Assembles a run: source -> restore stage -> sink, from one validated :class:`StreamConfig`.

``run_stream.py`` (the CLI) and ``benchmarks.latency`` both build their runs here, so what is measured
is what users run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engines.assets import demo_clip
from engines.face_detect import FaceDetectorConfig, YuNetDetector
from engines.runtime import resolve_device
from stream.counting import RestoreCounter
from stream.faces.reference import reference_crop
from stream.faces.tracker import TrackerConfig
from stream.media.cameras import CameraRequest, is_camera_spec, open_camera
from stream.media.fidelity import Fidelity
from stream.media.sinks import DEFAULT_CRF, NETWORK_OUTPUTS, Sink, open_sink, sink_fidelity
from stream.media.sources import Source, open_source
from stream.media.vcam import is_vcam, open_vcam_sink
from stream.networks import Engines, check_engine_choices, default_models_dir, load_engines, load_prior_step
from stream.pipeline import FrameSink, Pipeline, Stage
from stream.preview.controls import LiveControls
from stream.redact import redact
from stream.restore.build import RestoreStage, build_processor, restore_stages, smoother_for_crop
from stream.restore.config import LOCATE_AHEAD, OCCLUSION_SOURCES, RESTORERS, FrameReport, ProcessorConfig
from stream.stats import PipelineStats, ProgressReporter, ProgressUpdate
from stream.view import OpenViews, ViewConfig, open_views

if TYPE_CHECKING:
    from engines.triton_engine import TritonOptions

logger = logging.getLogger(__name__)

DEMO_CLIP = demo_clip()
DEFAULT_OUTPUT_DIR = Path("out")


def default_output(input_spec: str) -> Path:
    """``out/<input stem>_restored.mp4`` for a file input."""
    stem = Path(input_spec).stem or "output"
    return DEFAULT_OUTPUT_DIR / f"{stem}_restored.mp4"


@dataclass(frozen=True)
class StreamConfig:
    """One run of the stream processor. ``input``: file path, URL or camera index as text.

    ``output``: file path, rtsp://, udp://, srt://, rtmp:// URL, or None (display / benchmark only).
    ``models``: directory holding ``detector.onnx`` and ``generator.onnx`` (None: by device).
    ``crf``: x264 quality of a file output (default visually lossless). ``realtime``: pace a file input
    to its timestamps (None: on when the output is a stream). ``reconnect_timeout_s``: outage a URL
    input or a stream output may last before the run fails (None: forever). ``keep_reports``: keep
    one FrameReport per frame (None: for a file input; the CLI only counts, in constant memory).
    ``output`` may also be ``vcam`` / ``vcam:/dev/videoN`` (a virtual camera). ``compare``: input and
    output in one frame (``side-by-side``, ``split``). ``preview``: ``[HOST:]PORT`` of the live web
    preview. ``camera``: size / fps / fourcc asked of a camera input (None: the camera's choice).
    ``occlusion`` / ``restorer``: see :data:`stream.restore.config.OCCLUSION_SOURCES` and ``RESTORERS``.
    ``reference``: a photo of the user's bare face for the face prior's identity memory.
    ``triton``: the server of ``backend="triton"`` (None: its default URL); the networks run there and
    this process's frame work on the CPU.
    """

    input: str = str(DEMO_CLIP)
    output: str | None = None
    display: bool = False
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    models: Path | None = None
    max_faces: int = 4
    detect_every: int = 1
    mesh_every: int = 1
    locate_ahead: str = "auto"
    queue_size: int = 4
    keep_audio: bool = True
    intra_threads: int | None = None
    null_sink: bool = False
    progress: bool = True
    crf: int = DEFAULT_CRF
    realtime: bool | None = None
    reconnect_timeout_s: float | None = None
    keep_reports: bool | None = None
    compare: str | None = None
    preview: str | None = None
    camera: CameraRequest | None = None
    occlusion: str = "auto"
    restorer: str = "auto"
    reference: Path | None = None
    triton: TritonOptions | None = None

    def __post_init__(self) -> None:
        check_engine_choices(self.backend, self.device, self.precision)
        if self.backend == "triton" and self.device == "cuda":
            raise ValueError(
                "--backend triton runs the networks on the server; use --device cpu or auto here"
            )
        if self.triton is not None and self.backend != "triton":
            raise ValueError(
                f"Triton options (--triton-url ...) apply to --backend triton, got {self.backend!r}"
            )
        if not 1 <= self.max_faces <= 64:
            raise ValueError(f"max_faces must be in 1..64, got {self.max_faces}")
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.mesh_every < 1:
            raise ValueError(f"mesh_every must be >= 1, got {self.mesh_every}")
        if self.locate_ahead not in LOCATE_AHEAD:
            raise ValueError(f"locate_ahead must be one of {LOCATE_AHEAD}, got {self.locate_ahead!r}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.intra_threads is not None and self.intra_threads < 1:
            raise ValueError(f"intra_threads must be >= 1, got {self.intra_threads}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51 (0 lossless, {DEFAULT_CRF} default), got {self.crf}")
        if self.reconnect_timeout_s is not None and self.reconnect_timeout_s < 0:
            raise ValueError(
                f"reconnect_timeout_s must be >= 0 or None (forever), got {self.reconnect_timeout_s}"
            )
        ViewConfig(self.compare, self.preview)  # validates both
        if self.occlusion not in OCCLUSION_SOURCES:
            raise ValueError(f"occlusion must be one of {OCCLUSION_SOURCES}, got {self.occlusion!r}")
        if self.restorer not in RESTORERS:
            raise ValueError(f"restorer must be one of {RESTORERS}, got {self.restorer!r}")
        if self.camera is not None and not is_camera_spec(self.input):
            raise ValueError(
                f"camera size/fps apply to a camera input (0, /dev/videoN, camera:NAME), got {self.input!r}"
            )
        if self.output is not None and not _is_url(self.output) and not _is_url(self.input):
            if Path(self.output).resolve() == Path(self.input).resolve():
                raise ValueError(f"output must differ from the input, got {self.output} for both")


def _is_url(text: str) -> bool:
    return "://" in text


@dataclass
class RunResult:
    """What a finished run did: pipeline stats, where the output went, and per-frame reports."""

    stats: PipelineStats
    output: str | None
    device: str
    backend: str
    models: Path
    reports: list[FrameReport] = field(default_factory=list)
    source_dropped: int = 0
    masked_faces: int = 0
    fidelity: Fidelity | None = None


@dataclass
class OpenRun:
    source: Source
    engines: Engines
    restore: RestoreStage
    stages: list[Stage]
    device: str
    models: Path
    counter: RestoreCounter
    views: OpenViews
    controls: LiveControls  # what the preview page sets and the restore thread reads (the face pick)


# Why one thread per network on a CPU: the networks are small (128 px crops, a few ms each) and share the
# cores with the decoder, YuNet and mediapipe; onnxruntime's default pool (one spinning thread per core)
# fought them. 640x480 demo, one face, 2-core CPU (benchmarks/results/latency_cpu.json): 15 fps with the
# runtime's default threads, 26.6 fps with 1.
CPU_NETWORK_THREADS = 1


def network_threads(config: StreamConfig, device: str) -> int | None:
    """Intra-op threads per network for a run: ``--threads`` when given, else
    :data:`CPU_NETWORK_THREADS` on a CPU (logged), else the runtime's (None)."""
    if config.intra_threads is not None or device != "cpu" or config.backend == "triton":
        return config.intra_threads
    logger.info("engine: %d thread per network on the CPU (--threads N to change)", CPU_NETWORK_THREADS)
    return CPU_NETWORK_THREADS


@contextmanager
def open_run(config: StreamConfig) -> Iterator[OpenRun]:
    """Opens the source and the engines and builds the processing stages (closed on exit)."""
    device = "cpu" if config.backend == "triton" else resolve_device(config.device)
    models = config.models or default_models_dir(device)
    with ExitStack() as stack:
        to_stream = config.output is not None and config.output.lower().startswith(NETWORK_OUTPUTS)
        realtime = to_stream if config.realtime is None else config.realtime
        if is_camera_spec(config.input):
            source: Source = open_camera(config.input, config.camera)
        else:
            source = open_source(
                config.input, realtime=realtime, reconnect_timeout_s=config.reconnect_timeout_s
            )
        if realtime and not source.info.is_live:
            logger.info(
                "input: paced to real time (%s)",
                "file -> stream" if config.realtime is None else "--realtime",
            )
        stack.callback(source.close)
        info = source.info
        engines = load_engines(
            models,
            backend=config.backend,
            device=device,
            precision=config.precision,
            max_batch=config.max_faces,
            intra_threads=network_threads(config, device),
            triton=config.triton,
        )
        stack.callback(engines.close)
        crop = engines.detector.info.crop_size
        pconf = ProcessorConfig(
            max_faces=config.max_faces,
            detect_every=config.detect_every,
            tracker=TrackerConfig(fps=info.fps),
            smoother=smoother_for_crop(crop),
            occlusion=config.occlusion,
            restorer=config.restorer,
        )
        reference = reference_crop(config.reference, crop) if config.reference is not None else None
        prior = load_prior_step(
            models,
            generator_takes_prior=engines.generator_takes_prior,
            restorer=config.restorer,
            reference_rgb_u8=reference,
            mesh_every=config.mesh_every,
        )
        if prior is not None:
            stack.callback(prior.close)
        face_detector = YuNetDetector(FaceDetectorConfig(max_faces=max(config.max_faces * 2, 8)))
        controls = LiveControls()
        processor = build_processor(
            face_detector,
            engines.detector,
            engines.generator,
            pconf,
            device,
            segmenter_engine=engines.segmenter,
            prior=prior,
            choice=controls,
        )
        keep = not info.is_live if config.keep_reports is None else config.keep_reports
        restore, stages = restore_stages(
            processor,
            (info.height, info.width),
            keep_reports=keep,
            queue_size=config.queue_size,
            locate_ahead=config.locate_ahead,
        )
        counter = RestoreCounter(restore, keep_reports=keep)
        views = open_views(
            ViewConfig(config.compare, config.preview),
            counter.wrap(stages),
            info,
            counts=counter,
            controls=controls,
        )
        stack.callback(views.close)
        yield OpenRun(source, engines, restore, views.stages, device, models, counter, views, controls)


def run(
    config: StreamConfig,
    *,
    stop_event: threading.Event | None = None,
    on_progress: Callable[[ProgressUpdate], None] | None = None,
) -> RunResult:
    """Process ``config.input`` to its outputs until the source ends, ``stop_event`` is set or Ctrl-C.

    Ctrl-C propagates as KeyboardInterrupt after the pipeline has closed the sink (playable file).
    """
    with open_run(config) as opened:
        source, engines, device, models = opened.source, opened.engines, opened.device, opened.models
        info = source.info
        output = config.output
        if output is None and not config.display and not config.null_sink:
            if info.is_live and config.preview is None:
                raise ValueError(
                    "a live input needs --output (file, stream URL or vcam), --display or --preview"
                )
            output = None if info.is_live else str(default_output(config.input))
        audio_from = config.input if (config.keep_audio and info.has_audio and not info.is_live) else None
        stop = stop_event if stop_event is not None else threading.Event()
        # q / Esc in the window stops the whole run, not only the window.
        sink_info = opened.views.sink_info  # twice as wide with --compare side-by-side
        sink: FrameSink
        if output is not None and is_vcam(output):
            sink = open_vcam_sink(
                output, sink_info, audio_from=audio_from, display=config.display, on_quit=stop.set
            )
        else:
            sink = open_sink(
                output,
                sink_info,
                audio_from=audio_from,
                display=config.display,
                on_quit=stop.set,
                crf=config.crf,
                reconnect_timeout_s=config.reconnect_timeout_s,
            )
        reporter = ProgressReporter.for_info(info) if (config.progress and on_progress is None) else None
        logger.info(
            "run: %s (%dx%d @ %.2f fps, %s) -> %s | models %s | %s on %s",
            redact(config.input),
            info.width,
            info.height,
            info.fps,
            "live" if info.is_live else "file",
            redact(output) if output else ("display" if config.display else "null"),
            models,
            engines.generator.backend,
            device,
        )
        pipeline = Pipeline(
            source,
            opened.stages,
            sink,
            queue_size=config.queue_size,
            on_progress=opened.views.on_progress(on_progress or reporter),
            stop_event=stop,
            reference_every=10 if output is not None and not _is_url(output) and not is_vcam(output) else 0,
        )
        try:
            stats = pipeline.run()
        finally:
            if reporter is not None:
                reporter.close()
        return RunResult(
            stats=stats,
            output=output,
            device=device,
            backend=engines.generator.backend,
            models=models,
            reports=opened.restore.reports,
            masked_faces=opened.counter.masked_faces,
            fidelity=sink_fidelity(sink) if isinstance(sink, Sink) else None,
        )
