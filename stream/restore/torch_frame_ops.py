"""The torch op set of the per-frame flow (see :mod:`stream.restore.ops`): one upload per frame, crops,
masks and compositing as torch ops (:mod:`stream.restore.torch_ops`), ROI download.

  stage (host, any thread):  copy the frame's face rectangle (every pixel any crop reads or any paste may
                             write) into a pinned buffer and upload it ONCE (uint8, ``non_blocking``) on
                             the upload stream.
  session (device stream):   the compute stream waits for that upload; warp all crops in one
                             ``grid_sample`` -> detector engine -> mask smoothing
                             (:class:`stream.restore.torch_ops.TorchMaskSmoother`, state on the device) ->
                             ONE small sync (face statistics, (N, 5) int64) -> generator engine on the
                             faces that need it -> warp back + blend over the union of the paste ROIs ->
                             download ONLY that ROI (pinned) into a copy of the host frame.

Nothing crosses to the host between the two networks. Engines run on the caller's current stream, so the
session puts every engine call under ``torch.cuda.stream(compute)``. Staging uploads on its own stream
and hands an event to the session: run :meth:`~stream.restore.processor.FrameProcessor.locate` and
``restore`` in two threads (:class:`stream.restore.overlap.LocateAhead`) and frame N+1's detection and
upload overlap frame N's restoration.

The same code runs with ``device="cpu"`` on CPU tensors (no streams, no pinned memory, wall-clock
timings); that is how it is tested against :class:`stream.restore.numpy_ops.NumpyOps` without a GPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engines.errors import BackendUnavailableError
from engines.runtime import resolve_device
from stream.errors import StreamError
from stream.faces.front_end import LocatedFaces
from stream.restore.clock import StageClock
from stream.restore.composite import paste_roi
from stream.restore.config import ProcessorConfig
from stream.restore.ops import STAT_EXTENT, EngineOutputError, StagedFrame

# ``detect``/``align`` include host wall-clock (face detector + tracker; alignment). On CUDA the rest are
# GPU time between CUDA events on the stream doing the work (``upload`` on the upload stream, the others
# on the compute stream; ``restore`` = generator engine, ``mask`` = detector engine + smoothing); on CPU,
# wall-clock. The host copy of the output frame (``frame.copy()`` + ROI paste) is in none of them.
TORCH_TIMING_KEYS = ("upload", "detect", "align", "mesh", "mask", "prior", "restore", "composite", "download")


@dataclass(frozen=True)
class Uploaded:
    """The part of a frame the torch ops put on the device (:attr:`StagedFrame.prepared`).

    ``region``: (x0, y0, x1, y1) frame pixels holding every pixel a crop reads or a paste may write;
    ``region_dev``: those pixels, (y1 - y0, x1 - x0, 3) uint8 BGR on the device; ``crop_to_region``:
    (N, 2, 3) float64 on the device, crop pixel -> region pixel. ``events``: CUDA (start, end) events of
    the upload, None on CPU.
    """

    region: tuple[int, int, int, int]
    region_dev: Any
    crop_to_region: Any
    events: tuple[Any, Any] | None = None


@dataclass
class _PinnedSlot:
    buffer: Any = None
    done: Any = None  # CUDA event: the last upload from this buffer has completed


class TorchOps:
    """:class:`stream.restore.ops.FrameOps` on torch tensors on ``device`` ("cuda", "cuda:N" or "cpu").

    Mask smoothing and paste feathering as ``config`` says. Raises BackendUnavailableError without torch
    (or for a CUDA device torch does not see).
    """

    timing_keys: tuple[str, ...] = TORCH_TIMING_KEYS

    def __init__(self, config: ProcessorConfig, device: str = "cuda") -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("the torch op set needs torch: pip install deocclude[gpu]") from exc
        from stream.restore import torch_ops

        self._torch: Any = torch
        self._ops: Any = torch_ops
        self.config = config
        self._device = torch.device(resolve_device(device))
        self.device = str(self._device)
        self._cuda = self._device.type == "cuda"
        self.overlaps = self._cuda
        self.smoother = torch_ops.TorchMaskSmoother(config.smoother, self._device)
        self._paste_gauss = torch_ops.feather_kernel_u8(config.paste_feather_px, self._device)
        self._compute: Any = None
        self._upload: Any = None
        if self._cuda:
            self._compute = torch.cuda.Stream(self._device)
            self._upload = torch.cuda.Stream(self._device)
            self._frame_done = torch.cuda.Event()
        # Two pinned staging buffers: frame N+1 is copied into one while the other may still feed the
        # upload of frame N; a buffer is rewritten only after its last copy's event has completed.
        self._slots = (_PinnedSlot(), _PinnedSlot())
        self._uploads = 0
        self._download_buf: Any = None
        self._clock = StageClock(TORCH_TIMING_KEYS, self._compute)

    @property
    def streams(self) -> tuple[Any, Any]:
        """(upload, compute) CUDA streams; (None, None) on CPU."""
        return self._upload, self._compute

    def retain(self, track_ids: frozenset[int]) -> None:
        self.smoother.retain(track_ids)

    def reset(self) -> None:
        self.smoother.reset()

    def reserve(self, frame_hw: tuple[int, int] | None) -> None:
        if not self._cuda:
            return
        torch = self._torch
        if frame_hw is not None:
            nbytes = 3 * frame_hw[0] * frame_hw[1]
            for slot in self._slots:
                if slot.buffer is None or slot.buffer.numel() < nbytes:
                    slot.buffer = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            if self._download_buf is None or self._download_buf.numel() < nbytes:
                self._download_buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        self._compute.synchronize()

    # ------------------------------------------------------------------ stage (host thread)

    def stage(self, frame_bgr_u8: np.ndarray, faces: LocatedFaces) -> StagedFrame:
        """Start the upload of the faces' part of the frame (on CUDA: the upload stream; returns before
        the copy is done)."""
        torch = self._torch
        t0 = time.perf_counter()
        if not len(faces):
            return StagedFrame.of(frame_bgr_u8, faces, 0.0)
        hw = (int(frame_bgr_u8.shape[0]), int(frame_bgr_u8.shape[1]))
        region = self._ops.face_region(hw, faces.alignments, self.config.paste_feather_px)
        x0, y0, x1, y1 = region
        mats = np.stack([a.inverse for a in faces.alignments])  # crop -> frame, as cv2.warpAffine inverts
        mats[:, :, 2] -= (x0, y0)
        with torch.inference_mode():
            if self._cuda:
                uploaded = self._upload_cuda(region, frame_bgr_u8[y0:y1, x0:x1], mats, frame_bgr_u8.size)
            else:
                # Zero copy; nothing writes through it (outputs are made from clones).
                host = frame_bgr_u8 if frame_bgr_u8.flags.writeable else frame_bgr_u8.copy()
                region_dev = torch.from_numpy(np.ascontiguousarray(host))[y0:y1, x0:x1]
                uploaded = Uploaded(region, region_dev, torch.from_numpy(mats))
        return StagedFrame.of(frame_bgr_u8, faces, (time.perf_counter() - t0) * 1e3, uploaded)

    def _upload_cuda(
        self,
        region: tuple[int, int, int, int],
        region_bgr_u8: np.ndarray,
        mats: np.ndarray,
        frame_nbytes: int,
    ) -> Uploaded:
        torch = self._torch
        slot = self._slots[self._uploads % len(self._slots)]
        self._uploads += 1
        if slot.done is not None:
            slot.done.synchronize()
        nbytes = region_bgr_u8.size
        if slot.buffer is None or slot.buffer.numel() < nbytes:
            # Sized for a whole frame at once: the rectangle changes every frame, reallocations would not.
            slot.buffer = torch.empty(max(nbytes, frame_nbytes), dtype=torch.uint8, pin_memory=True)
        host = slot.buffer[:nbytes].view(region_bgr_u8.shape)
        np.copyto(host.numpy(), region_bgr_u8)
        mats_host = torch.from_numpy(mats).pin_memory()  # tiny; torch's caching host allocator
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self._upload):
            start.record(self._upload)
            region_dev = torch.empty(region_bgr_u8.shape, dtype=torch.uint8, device=self._device)
            region_dev.copy_(host, non_blocking=True)
            mats_dev = mats_host.to(self._device, non_blocking=True)
            end.record(self._upload)
        slot.done = end
        return Uploaded(region, region_dev, mats_dev, (start, end))

    def stage_timings(self, staged: StagedFrame) -> dict[str, float]:
        up = staged.prepared
        if up is not None and up.events is not None:
            return {"upload": float(up.events[0].elapsed_time(up.events[1]))}
        return {"upload": staged.stage_ms}

    # ------------------------------------------------------------------ the frame's device work

    @contextlib.contextmanager
    def session(self, staged: StagedFrame | None) -> Iterator[StageClock]:
        torch = self._torch
        stream = torch.cuda.stream(self._compute) if self._cuda else contextlib.nullcontext()
        self._clock.reset()
        with torch.inference_mode(), stream:
            up = None if staged is None else staged.prepared
            if up is not None and up.events is not None:
                self._compute.wait_event(up.events[1])
                # Allocated on the upload stream, used here: keep the allocator from recycling them early.
                up.region_dev.record_stream(self._compute)
                up.crop_to_region.record_stream(self._compute)
            yield self._clock

    def _uploaded(self, staged: StagedFrame) -> Uploaded:
        up = staged.prepared
        if not isinstance(up, Uploaded):
            raise StreamError("the frame was not staged by these torch ops (FrameProcessor.locate stages it)")
        return up

    def warp_crops(self, staged: StagedFrame) -> tuple[Any, Any | None]:
        up = self._uploaded(staged)
        crops, alpha = self._ops.warp_crops(up.region_dev, up.crop_to_region, staged.alignments[0].crop_size)
        inside = None if all(staged.within) else self._ops.inside_from_alpha(alpha)
        return crops, inside

    def engine_output(
        self, outputs: Mapping[str, Any], name: str, expected: tuple[int, ...], role: str
    ) -> Any:
        torch = self._torch
        if name not in outputs:
            raise EngineOutputError(f"the {role} engine must return {name!r}, got keys {sorted(outputs)}")
        value = torch.as_tensor(outputs[name], device=self._device)
        if tuple(value.shape) != expected:
            raise EngineOutputError(
                f"the {role} engine's {name!r} must be {expected} float32, got {tuple(value.shape)}"
            )
        return value.to(torch.float32)

    def smooth(self, track_ids: Sequence[int], probs_dev: Any) -> Any:
        return self.smoother.update(track_ids, probs_dev[:, 0])

    def keep_inside(self, masks_dev: Any, inside_dev: Any, within: Sequence[bool]) -> Any:
        for i, w in enumerate(within):
            if not w:
                masks_dev[i] *= inside_dev[i]
        return masks_dev

    def face_stats(self, masks_dev: Any, holes_dev: Any) -> np.ndarray:
        # The one mid-frame sync (40 bytes a face): which faces the generator sees, and where to paste.
        return np.asarray(self._ops.face_stats(masks_dev, holes_dev).cpu().numpy())

    def take(self, batch_dev: Any, index: Sequence[int]) -> Any:
        if list(index) == list(range(int(batch_dev.shape[0]))):
            return batch_dev
        return self._torch.stack([batch_dev[i] for i in index])

    def as_hole_batch(self, holes_dev: Any) -> Any:
        return holes_dev[:, None].to(self._torch.float32)

    def paste(
        self, staged: StagedFrame, faces: Sequence[int], restored_dev: Any, masks_dev: Any, stats: np.ndarray
    ) -> np.ndarray:
        torch, ops, clock = self._torch, self._ops, self._clock
        up = self._uploaded(staged)
        feather = self.config.paste_feather_px
        clock.start("composite")
        frame = staged.frame_bgr_u8
        hw = (int(frame.shape[0]), int(frame.shape[1]))
        pastes = []
        for j, i in enumerate(faces):
            # The numpy ops' own ROI maths: the torch ops paste exactly where warp_face would.
            roi = paste_roi(hw, stats[j, STAT_EXTENT], staged.alignments[i], feather)
            if roi is not None:
                pastes.append((j, i, roi))
        region = None
        ux0 = uy0 = ux1 = uy1 = 0
        if pastes:
            ux0, uy0 = min(r[0] for _, _, r in pastes), min(r[1] for _, _, r in pastes)
            ux1, uy1 = max(r[2] for _, _, r in pastes), max(r[3] for _, _, r in pastes)
            fx0, fy0, fx1, fy1 = up.region
            if ux0 < fx0 or uy0 < fy0 or ux1 > fx1 or uy1 > fy1:
                raise StreamError(f"paste ROI {(ux0, uy0, ux1, uy1)} outside the uploaded {up.region}")
            region = up.region_dev[uy0 - fy0 : uy1 - fy0, ux0 - fx0 : ux1 - fx0].clone(
                memory_format=torch.contiguous_format
            )
            roi_to_crop = np.stack([staged.alignments[i].matrix for _, i, _ in pastes])
            # ROI pixel (u, v) is frame pixel (u + x0, v + y0).
            offsets = np.array([r[:2] for _, _, r in pastes], dtype=np.float64)
            roi_to_crop[:, :, 2] += np.einsum("nij,nj->ni", roi_to_crop[:, :, :2], offsets)
            sizes = np.array([(r[3] - r[1], r[2] - r[0]) for _, _, r in pastes], dtype=np.int64)
            bgr, alpha_roi = ops.warp_back(
                torch.stack([restored_dev[j] for j, _, _ in pastes]),
                torch.stack([masks_dev[j] for j, _, _ in pastes]),
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
        return out

    def _to_device(self, array: np.ndarray) -> Any:
        """A small host array on the device without a sync (pinned + non_blocking on the current stream)."""
        t = self._torch.from_numpy(np.ascontiguousarray(array))
        return t.pin_memory().to(self._device, non_blocking=True) if self._cuda else t

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
