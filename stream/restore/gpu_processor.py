"""The processing stage on a GPU: one upload per frame, crops, masks and compositing as torch ops.

:class:`GpuFrameProcessor` has :class:`stream.restore.FrameProcessor`'s interface and the same face
front end (YuNet on the CPU, tracker, alignment), but keeps the frame on the device:

  locate (host, any thread):  detect -> track -> align; copy the frame's face rectangle (every pixel
                              any crop reads or any paste may write) into a pinned buffer and upload it
                              ONCE (uint8, ``non_blocking``) on the upload stream.
  restore (device stream):    warp all crops in one ``grid_sample`` -> detector engine -> mask smoothing
                              (:class:`stream.gpu_ops.TorchMaskSmoother`, state on the device) -> ONE
                              small sync (hole counts + mask extents, (N, 5) int64) -> generator engine
                              on the faces that need it -> warp back + blend over the union of the paste
                              ROIs -> download ONLY that ROI (pinned) into a copy of the host frame.

Nothing crosses to the host between the two networks; the one mid-frame sync decides which faces the
generator sees (as on the CPU path) and where to paste. Engines run on the caller's current stream, so
every engine call happens under ``torch.cuda.stream(compute)``.

Overlap: ``locate`` uploads on its own stream and hands an event to ``restore``, whose stream waits on it.
Run them in two threads (:class:`LocateAhead` gives the two pipeline stages) and frame N+1's detection
and upload overlap frame N's restoration; ``process`` runs both in the caller's thread.

The same code runs with ``device="cpu"`` on CPU tensors (no streams, no pinned memory, wall-clock
timings); that is how it is tested against :class:`FrameProcessor` on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.base import Engine
from engines.crop import Alignment
from engines.errors import BackendUnavailableError
from stream.errors import StreamError
from stream.faces.front_end import FaceDetector, FaceFrontEnd, LocatedFaces, crop_within_frame
from stream.restore.processor import (
    EngineOutputError,
    FrameProcessor,
    FrameReport,
    ProcessorConfig,
    check_processor_parts,
)
from stream.types import Frame

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# ``detect`` is host wall-clock (face detector + tracker + alignment) on every device. On CUDA the others
# are GPU time between CUDA events on the stream doing the work (``upload`` on the upload stream, the
# rest on the compute stream; ``restore`` = generator engine, ``mask`` = detector engine + smoothing);
# on CPU, wall-clock. The host copy of the output frame (``frame.copy()`` + ROI paste) is in none of them.
# A superset of stream.restore.TIMING_KEYS, so the GPU processor's reports are plain FrameReports.
GPU_TIMING_KEYS = ("upload", "detect", "align", "mask", "restore", "composite", "download")


@dataclass(frozen=True)
class LocatedFrame:
    """A frame after :meth:`GpuFrameProcessor.locate`: its faces, and their part of the frame on the device.

    ``faces``: what :meth:`FaceFrontEnd.locate` found. ``region``: (x0, y0, x1, y1) frame pixels holding
    every pixel a crop reads or a paste may write; ``region_dev``: those pixels, (y1 - y0, x1 - x0, 3)
    uint8 BGR on the device (None without faces: nothing is uploaded); ``crop_to_region``: (N, 2, 3)
    float64 on the device, crop pixel -> region pixel; ``within``: per face, whether the whole crop comes
    from inside the frame. ``uploaded``: CUDA (start, end) events of the upload, None on CPU.
    """

    frame_bgr_u8: np.ndarray
    faces: LocatedFaces
    region_dev: torch.Tensor | None
    crop_to_region: torch.Tensor | None
    region: tuple[int, int, int, int]
    within: tuple[bool, ...]
    upload_ms: float
    uploaded: tuple[Any, Any] | None = None

    @property
    def alignments(self) -> tuple[Alignment, ...]:
        return self.faces.alignments

    @property
    def track_ids(self) -> tuple[int, ...]:
        return self.faces.track_ids

    def __len__(self) -> int:
        return len(self.faces)


@dataclass
class _PinnedSlot:
    buffer: Any = None  # 1-D pinned uint8 tensor, grown to the largest frame seen
    done: Any = None  # CUDA event after the last copy that read ``buffer``


def _resolve_device(torch_mod: Any, device: str) -> Any:
    dev = torch_mod.device(device)
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch_mod.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} requested but torch sees no CUDA device")
    return torch_mod.device("cuda", torch_mod.cuda.current_device() if dev.index is None else dev.index)


class GpuFrameProcessor:
    """:class:`FrameProcessor` with crops, masks and compositing as torch ops on ``device``.

    ``process(frame_bgr_u8) -> (out_bgr_u8, FrameReport)``: ``out_bgr_u8`` IS the input (same object,
    unmodified) when no face was restored, else a new (H, W, 3) uint8 BGR host frame whose pixels outside
    the pasted masks are the input's bytes. Engines get (N, 3, S, S) / (N, 1, S, S) float32 tensors on
    ``device`` and run on the processor's compute stream. ``locate`` and ``restore`` may run in two
    different threads (one each, frames in order); each alone is not thread-safe.
    """

    def __init__(
        self,
        front_end: FaceFrontEnd,
        detector_engine: Engine,
        generator_engine: Engine,
        config: ProcessorConfig | None = None,
        device: str = "cuda",
    ) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(
                "the GPU processor needs torch: pip install deocclude[gpu]"
            ) from exc
        from stream.restore import torch_ops as gpu_ops

        self._torch: Any = torch
        self._ops: Any = gpu_ops
        self.config = cfg = config or ProcessorConfig()
        check_processor_parts(front_end, detector_engine, generator_engine, cfg)
        self.device = _resolve_device(torch, device)
        for engine, role in ((detector_engine, "detector"), (generator_engine, "generator")):
            if torch.device(engine.device) != self.device:
                raise ValueError(f"the {role} engine must run on {self.device}, got {engine.device!r}")
        self.front_end = front_end
        self.detector_engine = detector_engine
        self.generator_engine = generator_engine
        self.smoother = gpu_ops.TorchMaskSmoother(cfg.smoother, self.device)
        s = front_end.crop_size
        self._min_mask_px = max(1, round(cfg.min_mask_fraction * s * s))
        self._paste_gauss = gpu_ops.feather_kernel_u8(cfg.paste_feather_px, self.device)
        self._cuda = self.device.type == "cuda"
        self._compute: Any = None
        self._upload: Any = None
        if self._cuda:
            self._compute = torch.cuda.Stream(self.device)
            self._upload = torch.cuda.Stream(self.device)
            self._frame_done = torch.cuda.Event()
        # Two pinned staging buffers: frame N+1 is copied into one while the other may still feed the
        # upload of frame N; a buffer is rewritten only after its last copy's event has completed.
        self._slots = (_PinnedSlot(), _PinnedSlot())
        self._uploads = 0
        self._download_buf: Any = None
        self._clock = gpu_ops.StageClock(GPU_TIMING_KEYS, self._compute)

    @classmethod
    def build(
        cls,
        face_detector: FaceDetector,
        detector_engine: Engine,
        generator_engine: Engine,
        config: ProcessorConfig | None = None,
        device: str = "cuda",
    ) -> GpuFrameProcessor:
        """A processor whose front end is made from ``config``, at the engines' crop size."""
        cfg = config or ProcessorConfig()
        front_end = cfg.front_end(face_detector, detector_engine.info.crop_size)
        return cls(front_end, detector_engine, generator_engine, cfg, device)

    @property
    def streams(self) -> tuple[Any, Any]:
        """(upload, compute) CUDA streams; (None, None) on CPU."""
        return self._upload, self._compute

    def reset(self) -> None:
        """Start a new video: forget tracks and mask history."""
        self.front_end.reset()
        self.smoother.reset()

    def warmup(self, frame_hw: tuple[int, int] | None = None) -> None:
        """Run both engines once at every batch size 1..max_faces on the compute stream (engines that
        replay CUDA graphs capture them now) and, given ``frame_hw``, allocate the pinned buffers for that
        frame size. Call it before :class:`LocateAhead` runs the two halves in two threads: a graph
        captured lazily in one thread while the other calls the CUDA runtime can fail the capture."""
        torch = self._torch
        with torch.inference_mode(), self._stream():
            for batch in range(1, self.config.max_faces + 1):
                self.detector_engine.warmup(batch)
                self.generator_engine.warmup(batch)
        if self._cuda:
            if frame_hw is not None:
                nbytes = 3 * frame_hw[0] * frame_hw[1]
                for slot in self._slots:
                    if slot.buffer is None or slot.buffer.numel() < nbytes:
                        slot.buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
                if self._download_buf is None or self._download_buf.numel() < nbytes:
                    self._download_buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            self._compute.synchronize()

    def process(self, frame_bgr_u8: np.ndarray) -> tuple[np.ndarray, FrameReport]:
        """``restore(locate(frame_bgr_u8))`` in the calling thread."""
        return self.restore(self.locate(frame_bgr_u8))

    # ------------------------------------------------------------------ locate (host thread)

    def locate(self, frame_bgr_u8: np.ndarray) -> LocatedFrame:
        """Detect, track and align the faces of ``frame_bgr_u8`` (H, W, 3) uint8 BGR on the host, and
        start its upload (on CUDA: the upload stream; returns before the copy is done)."""
        torch = self._torch
        # The front end's detect -> track -> select -> align; the crops are made on the device.
        faces = self.front_end.locate(frame_bgr_u8)
        t1 = time.perf_counter()
        hw = (int(frame_bgr_u8.shape[0]), int(frame_bgr_u8.shape[1]))
        region_dev = mats_dev = None
        uploaded = None
        region = (0, 0, 0, 0)
        if len(faces):
            region = self._ops.face_region(hw, faces.alignments, self.config.paste_feather_px)
            x0, y0, x1, y1 = region
            mats = np.stack([a.inverse for a in faces.alignments])  # crop -> frame, as cv2.warpAffine inverts
            mats[:, :, 2] -= (x0, y0)
            with torch.inference_mode():
                if self._cuda:
                    region_dev, mats_dev, uploaded = self._upload_cuda(
                        frame_bgr_u8[y0:y1, x0:x1], mats, frame_bgr_u8.size
                    )
                else:
                    # Zero copy; nothing writes through it (outputs are made from clones).
                    host = frame_bgr_u8 if frame_bgr_u8.flags.writeable else frame_bgr_u8.copy()
                    region_dev = torch.from_numpy(np.ascontiguousarray(host))[y0:y1, x0:x1]
                    mats_dev = torch.from_numpy(mats)
        t2 = time.perf_counter()
        return LocatedFrame(
            frame_bgr_u8=frame_bgr_u8,
            faces=faces,
            region_dev=region_dev,
            crop_to_region=mats_dev,
            region=region,
            within=tuple(crop_within_frame(hw, a) for a in faces.alignments),
            upload_ms=(t2 - t1) * 1e3,
            uploaded=uploaded,
        )

    def _upload_cuda(
        self, region_bgr_u8: np.ndarray, mats: np.ndarray, frame_nbytes: int
    ) -> tuple[Any, Any, tuple[Any, Any]]:
        torch = self._torch
        slot = self._slots[self._uploads % len(self._slots)]
        self._uploads += 1
        if slot.done is not None:
            slot.done.synchronize()
        nbytes = region_bgr_u8.size
        if slot.buffer is None or slot.buffer.numel() < nbytes:
            # Sized for a whole frame at once: the rectangle changes every frame, reallocations would not.
            full = max(nbytes, frame_nbytes)
            slot.buffer = torch.empty(full, dtype=torch.uint8, pin_memory=True)
        host = slot.buffer[:nbytes].view(region_bgr_u8.shape)
        np.copyto(host.numpy(), region_bgr_u8)
        mats_host = torch.from_numpy(mats).pin_memory()  # tiny; torch's caching host allocator
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self._upload):
            start.record(self._upload)
            region_dev = torch.empty(region_bgr_u8.shape, dtype=torch.uint8, device=self.device)
            region_dev.copy_(host, non_blocking=True)
            mats_dev = mats_host.to(self.device, non_blocking=True)
            end.record(self._upload)
        slot.done = end
        return region_dev, mats_dev, (start, end)

    # ------------------------------------------------------------------ restore (device stream)

    def _stream(self) -> contextlib.AbstractContextManager[Any]:
        return self._torch.cuda.stream(self._compute) if self._cuda else contextlib.nullcontext()

    def _to_device(self, array: np.ndarray) -> Any:
        """A small host array on the device without a sync (pinned + non_blocking on the current stream)."""
        t = self._torch.from_numpy(np.ascontiguousarray(array))
        return t.pin_memory().to(self.device, non_blocking=True) if self._cuda else t

    def _engine_output(
        self, outputs: Mapping[str, Any], name: str, expected: tuple[int, ...], role: str
    ) -> Any:
        torch = self._torch
        if name not in outputs:
            raise EngineOutputError(f"the {role} engine must return {name!r}, got keys {sorted(outputs)}")
        value = torch.as_tensor(outputs[name], device=self.device)
        if tuple(value.shape) != expected:
            raise EngineOutputError(
                f"the {role} engine's {name!r} must be {expected} float32, got {tuple(value.shape)}"
            )
        return value.to(torch.float32)

    def _report(self, located: LocatedFrame, masked: int, timings: dict[str, float]) -> FrameReport:
        return FrameReport(
            faces=len(located),
            skipped_faces=located.faces.skipped,
            masked_faces=masked,
            timings_ms=MappingProxyType(timings),
            track_ids=located.track_ids,
            detected=located.faces.detected,
        )

    def restore(self, located: LocatedFrame) -> tuple[np.ndarray, FrameReport]:
        """Masks, restoration and compositing of a located frame; returns ``(out_bgr_u8, report)``
        (see the class docstring). Blocks until the frame is done on the device."""
        torch = self._torch
        timings = dict.fromkeys(GPU_TIMING_KEYS, 0.0)
        timings["detect"] = located.faces.detect_ms + located.faces.align_ms
        self.smoother.retain(located.faces.alive_ids)
        frame = located.frame_bgr_u8
        if not len(located):
            return frame, self._report(located, 0, timings)
        self._clock.reset()
        with torch.inference_mode(), self._stream():
            out, masked = self._restore_on_device(located)
        if self._cuda and located.uploaded is not None:
            timings["upload"] = float(located.uploaded[0].elapsed_time(located.uploaded[1]))
        else:
            timings["upload"] = located.upload_ms
        timings.update(self._clock.read())
        return out, self._report(located, masked, timings)

    def _restore_on_device(self, located: LocatedFrame) -> tuple[np.ndarray, int]:
        torch, ops, cfg, clock = self._torch, self._ops, self.config, self._clock
        region_dev, mats = located.region_dev, located.crop_to_region
        assert region_dev is not None and mats is not None  # set by locate() whenever there are faces
        if self._cuda and located.uploaded is not None:
            self._compute.wait_event(located.uploaded[1])
            # Allocated on the upload stream, used here: keep the allocator from recycling them early.
            region_dev.record_stream(self._compute)
            mats.record_stream(self._compute)
        n, s = len(located), self.front_end.crop_size
        clock.start("align")
        crops, alpha = ops.warp_crops(region_dev, mats, s)
        inside = None if all(located.within) else ops.inside_from_alpha(alpha)
        clock.stop("align")

        clock.start("mask")
        outputs = self.detector_engine.run({"image": crops})
        probs = self._engine_output(outputs, "mask", (n, 1, s, s), "detector")
        masks = self.smoother.update(located.track_ids, probs[:, 0])
        if inside is not None:
            for i, within in enumerate(located.within):
                if not within:  # never paste what was restored from the crop's black border fill
                    masks[i] *= inside[i]
        holes = masks >= cfg.mask_threshold
        stats = ops.face_stats(masks, holes)
        clock.stop("mask")
        # The one mid-frame sync (40 bytes a face): which faces the generator sees, and where to paste.
        stats_host = stats.cpu().numpy()
        masked = [i for i in range(n) if stats_host[i, 0] >= self._min_mask_px]
        if not masked:
            return located.frame_bgr_u8, 0

        clock.start("restore")
        everyone = len(masked) == n
        images = crops if everyone else torch.stack([crops[i] for i in masked])
        hole_batch = (holes if everyone else torch.stack([holes[i] for i in masked]))[:, None].to(
            torch.float32
        )
        outputs = self.generator_engine.run({"image": images, "mask": hole_batch})
        restored = self._engine_output(outputs, "restored", (len(masked), 3, s, s), "generator")
        clock.stop("restore")

        clock.start("composite")
        frame = located.frame_bgr_u8
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        pastes = []
        for j, i in enumerate(masked):
            roi = ops.paste_roi(hw, stats_host[i, 1:], located.alignments[i], cfg.paste_feather_px)
            if roi is not None:
                pastes.append((j, i, roi))
        region = None
        ux0 = uy0 = ux1 = uy1 = 0
        if pastes:
            ux0, uy0 = min(r[0] for _, _, r in pastes), min(r[1] for _, _, r in pastes)
            ux1, uy1 = max(r[2] for _, _, r in pastes), max(r[3] for _, _, r in pastes)
            fx0, fy0, fx1, fy1 = located.region
            if ux0 < fx0 or uy0 < fy0 or ux1 > fx1 or uy1 > fy1:
                raise StreamError(f"paste ROI {(ux0, uy0, ux1, uy1)} outside the uploaded {located.region}")
            region = region_dev[uy0 - fy0 : uy1 - fy0, ux0 - fx0 : ux1 - fx0].clone(
                memory_format=torch.contiguous_format
            )
            roi_to_crop = np.stack([located.alignments[i].matrix for _, i, _ in pastes])
            # ROI pixel (u, v) is frame pixel (u + x0, v + y0).
            offsets = np.array([r[:2] for _, _, r in pastes], dtype=np.float64)
            roi_to_crop[:, :, 2] += np.einsum("nij,nj->ni", roi_to_crop[:, :, :2], offsets)
            sizes = np.array([(r[3] - r[1], r[2] - r[0]) for _, _, r in pastes], dtype=np.int64)
            bgr, alpha_roi = ops.warp_back(
                torch.stack([restored[j] for j, _, _ in pastes]),
                torch.stack([masks[i] for _, i, _ in pastes]),
                self._to_device(roi_to_crop),
                self._to_device(sizes),
                (int(sizes[:, 0].max()), int(sizes[:, 1].max())),
                self._paste_gauss,
            )
            # In order, over what earlier faces pasted: overlapping faces stack like on the CPU path.
            for k, (_, _, (rx0, ry0, rx1, ry1)) in enumerate(pastes):
                h, w = ry1 - ry0, rx1 - rx0
                base = region[ry0 - uy0 : ry1 - uy0, rx0 - ux0 : rx1 - ux0]
                ops.blend_into(base, bgr[k, :, :h, :w], alpha_roi[k, :h, :w])
        clock.stop("composite")

        clock.start("download")
        host_region = None if region is None else self._download(region)
        clock.stop("download")
        if self._cuda:
            # The frame's last sync: the download (and with it every event above) has completed after it.
            self._frame_done.record(self._compute)
            self._frame_done.synchronize()
        out = frame.copy()
        if host_region is not None:
            out[uy0:uy1, ux0:ux1] = host_region
        return out, len(masked)

    def _download(self, region: Any) -> np.ndarray:
        """Enqueue ``region`` (h, w, 3) uint8 on the device -> host. On CUDA the copy goes into a pinned
        buffer on the compute stream: the array is valid once that stream is synchronised, until the
        next frame."""
        if not self._cuda:
            return np.asarray(region.numpy())
        torch = self._torch
        size = region.numel()
        if self._download_buf is None or self._download_buf.numel() < size:
            self._download_buf = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        host = self._download_buf[:size].view(region.shape)
        host.copy_(region, non_blocking=True)
        return np.asarray(host.numpy())


class LocateAhead:
    """A :class:`GpuFrameProcessor` split into two pipeline stages so that frame N+1's face detection
    and upload (stage "faces", :meth:`locate_stage`) overlap frame N's restoration (:meth:`process`, the
    restore stage's ``process`` callable, e.g. ``app.RestoreStage(ahead.process, ...)``).

    The stages hand located frames over through a small locked queue matched by frame identity (the
    ``bgr_u8`` array a Frame carries from stage to stage): frames dropped between the stages (live
    sources) are discarded when a later frame is restored. ``max_pending`` must exceed the queue size
    between the two stages plus 2; a located frame evicted beyond it cannot be restored (StreamError).
    Call ``processor.warmup(frame_hw)`` before the pipeline starts (see :meth:`GpuFrameProcessor.warmup`).
    """

    def __init__(self, processor: GpuFrameProcessor, max_pending: int = 8) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.processor = processor
        self.max_pending = max_pending
        self._pending: deque[LocatedFrame] = deque()
        self._lock = threading.Lock()
        self.evicted = 0
        self.discarded = 0

    def locate_stage(self, frame: Frame) -> Frame:
        """Stage function for ``FunctionStage("faces", ahead.locate_stage)``, before the restore stage."""
        located = self.processor.locate(frame.bgr_u8)
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.evicted += 1
                if self.evicted == 1:
                    logger.warning("located frames pile up beyond max_pending=%d; evicting", self.max_pending)
            self._pending.append(located)
        return frame

    def process(self, frame_bgr_u8: np.ndarray) -> tuple[np.ndarray, FrameReport]:
        """Restore the located frame whose array is ``frame_bgr_u8``; older located frames are dropped."""
        with self._lock:
            index = next((k for k, lf in enumerate(self._pending) if lf.frame_bgr_u8 is frame_bgr_u8), None)
            if index is None:
                raise StreamError(
                    f"frame was not located (or was evicted; max_pending={self.max_pending}): "
                    "run locate_stage on every frame before the restore stage"
                )
            for _ in range(index):
                self._pending.popleft()
            self.discarded += index
            located = self._pending.popleft()
        return self.processor.restore(located)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def reset(self) -> None:
        with self._lock:
            self._pending.clear()
        self.processor.reset()


def build_processor(
    face_detector: FaceDetector,
    det_engine: Engine,
    gen_engine: Engine,
    config: ProcessorConfig | None,
    device: str,
) -> FrameProcessor | GpuFrameProcessor:
    """:class:`FrameProcessor` for ``device`` "cpu" (OpenCV on host arrays: faster than torch ops on a
    CPU), :class:`GpuFrameProcessor` for "cuda" / "cuda:N". The choice is logged in one line."""
    kind = device.partition(":")[0]
    if kind == "cpu":
        logger.info("processor: FrameProcessor on cpu (OpenCV crops and compositing, host arrays)")
        return FrameProcessor.build(face_detector, det_engine, gen_engine, config)
    if kind == "cuda":
        proc = GpuFrameProcessor.build(face_detector, det_engine, gen_engine, config, device)
        logger.info(
            "processor: GpuFrameProcessor on %s (one upload per frame, crops, masks and compositing on "
            "the GPU, ROI download)",
            proc.device,
        )
        return proc
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
