"""Torch array ops of the torch op set (:mod:`stream.restore.torch_frame_ops`): crop warping, mask
smoothing and compositing on tensors, plus the host-side geometry they need (which frame rectangle to
upload, where a face is pasted).

Each op reproduces its OpenCV counterpart on the CPU path (:mod:`stream.faces.front_end`, :mod:`stream.restore.smoother`,
:mod:`stream.restore.composite`) closely enough that the two processors agree within a grey level or two, and
runs unchanged on CPU tensors, which is how it is tested without a GPU. Conventions that matter:

- Pixel centres sit at integer coordinates (OpenCV's convention). ``grid_sample`` with
  ``align_corners=False`` puts pixel ``i`` at normalised ``(2 i + 1) / n - 1``; :func:`sample_grid` builds
  the grid in pixel units in float64 and converts once. Why not ``affine_grid``: it runs a float32
  ``bmm``, which TF32 (should anyone enable it process-wide) would round to 10 bits, a pixel of error
  on a 1080p frame.
- OpenCV 5's bilinear byte warp rounds half up (checked against ``cv2.warpAffine``: at most 1 grey
  level apart, in under 0.01% of pixels), so warped values are ``floor(v + 0.5)``.
- OpenCV's byte Gaussian blur is bit-exact fixed point: the kernel is quantised to 1/256 by error
  diffusion and the sum is rounded once. :func:`gaussian_blur_u8` does the same in float64 (every
  partial sum is exact there, whatever algorithm the convolution picks), so feathered masks match
  OpenCV's to the bit.
- Binary morphology is a convolution with the structuring element followed by a half-integer
  threshold, which is exact even when the convolution is computed approximately (TF32, Winograd).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engines.crop import Alignment
from stream.restore.smoother import PerTrackState, SmootherConfig, disk, gaussian_feather

Tensor = torch.Tensor
_INV_255 = 1.0 / 255.0  # the CPU path multiplies by float32(1/255) instead of dividing: same bits here
# Half a unit of the last place of OpenCV's 16.16 fixed-point Gaussian sum: nudges exact ties up (as
# OpenCV's rounding does) while float64 error, orders of magnitude smaller, cannot move a value across.
_GAUSS_NUDGE = 2.0**-17


def sample_grid(dst_to_src: Tensor, out_hw: tuple[int, int], src_hw: tuple[int, int]) -> Tensor:
    """The ``grid_sample`` grid (N, h, w, 2) float32 that reads, for every output pixel (x, y), the
    source pixel ``dst_to_src[n] @ (x, y, 1)``. ``dst_to_src``: (N, 2, 3) float64 in pixel units."""
    if dst_to_src.ndim != 3 or dst_to_src.shape[1:] != (2, 3) or dst_to_src.dtype != torch.float64:
        raise ValueError(
            f"dst_to_src must be (N, 2, 3) float64, got {tuple(dst_to_src.shape)} {dst_to_src.dtype}"
        )
    h, w = out_hw
    src_h, src_w = src_hw
    m = dst_to_src[:, :, :, None, None]  # (N, 2, 3, 1, 1) broadcasts against the (h, w) pixel grid
    xs = torch.arange(w, dtype=torch.float64, device=dst_to_src.device)
    ys = torch.arange(h, dtype=torch.float64, device=dst_to_src.device)[:, None]
    sx = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]
    sy = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    grid = torch.stack(((2.0 * sx + 1.0) / src_w - 1.0, (2.0 * sy + 1.0) / src_h - 1.0), dim=-1)
    return grid.to(torch.float32)


def _round_half_up(x: Tensor) -> Tensor:
    return torch.floor_(x.add_(0.5))


def warp_crops(region_bgr_u8: Tensor, crop_to_region: Tensor, crop_size: int) -> tuple[Tensor, Tensor]:
    """Warp all faces of a frame into their canonical crops in ONE ``grid_sample``.

    ``region_bgr_u8``: (h, w, 3) uint8 BGR, the part of the frame the crops read from (every bilinear
    neighbour of every crop pixel is in it or outside the frame); ``crop_to_region``: (N, 2, 3) float64
    crop pixel -> region pixel. Returns ``crops_rgb01`` (N, 3, S, S) float32 RGB [0, 1] holding the byte
    values :func:`engines.crop.warp_to_crop` would produce (/255), and ``alpha`` (N, S, S) float32 in
    0..255: the warped alpha of an opaque frame, 255 where a crop pixel came from frame pixels only.
    """
    if region_bgr_u8.ndim != 3 or region_bgr_u8.shape[2] != 3 or region_bgr_u8.dtype != torch.uint8:
        raise ValueError(
            f"region must be (h, w, 3) uint8 BGR, got {tuple(region_bgr_u8.shape)} {region_bgr_u8.dtype}"
        )
    n, s = crop_to_region.shape[0], crop_size
    h, w = int(region_bgr_u8.shape[0]), int(region_bgr_u8.shape[1])
    src = torch.empty((1, 4, h, w), dtype=torch.float32, device=region_bgr_u8.device)
    src[0, :3] = region_bgr_u8.permute(2, 0, 1)
    src[0, 3] = 255.0  # BGRA like the CPU front end: the border fill (0) shows in alpha
    # All faces in one call: stack their grids along the height (batch 1), so the frame is not repeated.
    grid = sample_grid(crop_to_region, (s, s), (h, w)).reshape(1, n * s, s, 2)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = _round_half_up(out).view(4, n, s, s)
    crops = (out[:3].flip(0) * _INV_255).transpose(0, 1).contiguous()  # BGR -> RGB, (N, 3, S, S)
    return crops, out[3]


def _kernel_tensor(kernel: np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(kernel, dtype=torch.float32, device=device)[None, None]


def dilate(x: Tensor, kernel: Tensor) -> Tensor:
    """Binary dilation of (N, 1, H, W) {0, 1} float by a (1, 1, k, k) {0, 1} element; outside counts as 0."""
    r = kernel.shape[-1] // 2
    return (F.conv2d(F.pad(x, (r, r, r, r)), kernel) > 0.5).to(x.dtype)


def erode(x: Tensor, kernel: Tensor, border: float = 1.0) -> Tensor:
    """Binary erosion; ``border`` 1 (OpenCV's default: the outside never erodes) or 0."""
    r = kernel.shape[-1] // 2
    count = F.conv2d(F.pad(x, (r, r, r, r), value=border), kernel)
    return (count > float(kernel.sum()) - 0.5).to(x.dtype)


def gaussian_kernel_u8(ksize: int, sigma: float) -> np.ndarray:
    """OpenCV's fixed-point Gaussian kernel for bytes: (ksize,) float64 multiples of 1/256 summing to 1,
    quantised by error diffusion from the outside in (the centre takes the remainder)."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be odd and >= 1, got {ksize}")
    g = cv2.getGaussianKernel(ksize, sigma, cv2.CV_64F)[:, 0]
    out = np.zeros(ksize)
    err, total, half = 0.0, 0, ksize // 2
    for i in range(half):
        adjusted = g[i] * 256.0 + err
        v = int(np.round(adjusted))
        err = adjusted - v
        out[i] = out[ksize - 1 - i] = v
        total += v
    out[half] = 256 - 2 * total
    return out / 256.0


def feather_kernel_u8(feather_px: int, device: torch.device) -> Tensor | None:
    """(k,) float64 on ``device``: :func:`gaussian_kernel_u8` of the feather :func:`cv2.GaussianBlur`
    applies on the CPU path (:func:`stream.smoother.gaussian_feather`); None when ``feather_px`` is 0."""
    if feather_px <= 0:
        return None
    return torch.as_tensor(
        gaussian_kernel_u8(*gaussian_feather(feather_px)), dtype=torch.float64, device=device
    )


def gaussian_blur_u8(x: Tensor, kernel_1d: Tensor) -> Tensor:
    """``cv2.GaussianBlur`` of byte values with a constant-0 border, bit for bit.

    ``x``: (N, 1, H, W) float holding integers 0..255; ``kernel_1d``: (k,) float64 from
    :func:`gaussian_kernel_u8`. Returns (N, 1, H, W) float64 integers. Runs in float64: every product
    and partial sum of the fixed-point computation is exact there.
    """
    k = kernel_1d.numel()
    r = k // 2
    x = x.to(torch.float64)
    x = F.conv2d(F.pad(x, (r, r, 0, 0)), kernel_1d.view(1, 1, 1, k))
    x = F.conv2d(F.pad(x, (0, 0, r, r)), kernel_1d.view(1, 1, k, 1))
    return torch.floor_(x.add_(0.5 + _GAUSS_NUDGE))


def inside_from_alpha(alpha: Tensor) -> Tensor:
    """(N, S, S) float32 {0, 1} from warped alpha (N, S, S) in 0..255: 1 where the crop pixel came from
    frame pixels only, eroded by one pixel with a 0 border (as :func:`stream.faces.inside_mask_from_alpha`)."""
    square = torch.ones((1, 1, 3, 3), dtype=torch.float32, device=alpha.device)
    return erode((alpha == 255.0).to(torch.float32)[:, None], square, border=0.0)[:, 0]


@dataclass
class _TrackMasks:
    ema: Tensor  # (S, S) float32
    change: Tensor  # (S, S) float32
    on: Tensor  # (S, S) bool


class TorchMaskSmoother(PerTrackState[_TrackMasks]):
    """:class:`stream.smoother.MaskSmoother`'s algorithm on torch tensors, all faces of a frame at once.

    Same config, same per-pixel arithmetic in float32 (so the same decisions), the morphology and the
    feather bit-exact with OpenCV's. State stays on the device, one entry per track. Stateful, not
    thread-safe: one per video, called from one thread (on CUDA, under the processor's stream).
    """

    def __init__(self, config: SmootherConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.config = config or SmootherConfig()
        self.device = torch.device(device)
        cfg = self.config
        kernels = (disk(cfg.open_px), disk(cfg.dilate_px))
        self._open, self._dilate = (None if k is None else _kernel_tensor(k, self.device) for k in kernels)
        self._gauss = feather_kernel_u8(cfg.feather_px, self.device)

    def update(self, track_ids: Sequence[int], probs: Tensor) -> Tensor:
        """Feed this frame's occlusion probabilities (N, S, S) float32 in [0, 1], one per track in
        ``track_ids`` (distinct); returns the smoothed, feathered masks (N, S, S) float32 in [0, 1]."""
        n = len(track_ids)
        if probs.ndim != 3 or probs.shape[0] != n or probs.shape[1] != probs.shape[2]:
            raise ValueError(f"probabilities must be ({n}, S, S) for {n} tracks, got {tuple(probs.shape)}")
        if len(set(track_ids)) != n:
            raise ValueError(f"track ids must be distinct, got {list(track_ids)}")
        cfg = self.config
        prob = probs.to(torch.float32)
        if cfg.spatial_px > 0:
            k = 2 * cfg.spatial_px + 1
            r = cfg.spatial_px
            prob = F.avg_pool2d(F.pad(prob[:, None], (r, r, r, r), mode="replicate"), k, stride=1)[:, 0]
        # A new track starts from ema = prob, change = 0, on = False: the update below then leaves ema
        # at prob exactly (delta is 0), which is MaskSmoother's initial state; one code path for both.
        states = [self._states.get(t) for t in track_ids]
        states = [s if s is not None and s.ema.shape == prob.shape[1:] else None for s in states]
        if all(s is None for s in states):
            ema, change = prob, torch.zeros_like(prob)
            on_prev = torch.zeros(prob.shape, dtype=torch.bool, device=prob.device)
        else:
            zero = torch.zeros_like(prob[0])
            ema = torch.stack([prob[i] if s is None else s.ema for i, s in enumerate(states)])
            change = torch.stack([zero if s is None else s.change for s in states])
            on_prev = torch.stack([zero.bool() if s is None else s.on for s in states])
        # Same operations in the same order as MaskSmoother.update, in float32.
        delta = prob - ema
        change = change + (delta - change) * cfg.change_alpha
        gain = (cfg.alpha_max - cfg.alpha_min) / (cfg.change_high - cfg.change_low)
        alpha = ((change.abs() - cfg.change_low) * gain).clamp_(0.0, cfg.alpha_max - cfg.alpha_min)
        alpha += cfg.alpha_min
        ema = ema + alpha * delta
        on = (ema > cfg.on_threshold) | ((ema >= cfg.off_threshold) & on_prev)
        for i, tid in enumerate(track_ids):
            self._states[tid] = _TrackMasks(ema[i], change[i], on[i])
        return self._shape(on)

    def _shape(self, on: Tensor) -> Tensor:
        core = on.to(torch.float32)[:, None]
        if self._open is not None:
            core = dilate(erode(core, self._open), self._open)
        if self._dilate is not None:
            core = dilate(core, self._dilate)
        if self._gauss is None:
            return core[:, 0]
        # Bytes from here on, as the CPU path: ramp = min(2 * blur(core), 255), kept >= the core itself.
        core255 = core.to(torch.float64) * 255.0
        ramp = gaussian_blur_u8(core255, self._gauss).mul_(2.0).clamp_(max=255.0)
        return (torch.maximum(ramp, core255).to(torch.float32) / 255.0)[:, 0]


def face_stats(masks: Tensor, holes: Tensor) -> Tensor:
    """(N, 5) int64 per face: hole pixel count, first and last row, first and last column of the mask's
    support (``masks`` > 0); rows/columns are meaningless for an empty mask. One small tensor so the
    host reads everything it needs about the masks in one transfer."""
    s = masks.shape[-1]
    support = masks > 0
    rows = support.any(dim=2).to(torch.uint8)
    cols = support.any(dim=1).to(torch.uint8)
    # argmax returns the first maximal index: the first nonzero row; on the flipped axis, the last.
    return torch.stack(
        (
            holes.flatten(1).sum(dim=1),
            rows.argmax(dim=1),
            (s - 1) - rows.flip(1).argmax(dim=1),
            cols.argmax(dim=1),
            (s - 1) - cols.flip(1).argmax(dim=1),
        ),
        dim=1,
    ).to(torch.int64)


def warp_back(
    restored_rgb01: Tensor,
    masks: Tensor,
    roi_to_crop: Tensor,
    roi_hw: Tensor,
    out_hw: tuple[int, int],
    gauss_kernel: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Warp M restored crops and their masks into their frame ROIs in ONE ``grid_sample``.

    ``restored_rgb01`` (M, 3, S, S) float RGB, ``masks`` (M, S, S) float [0, 1], ``roi_to_crop``
    (M, 2, 3) float64 ROI pixel -> crop pixel, ``roi_hw`` (M, 2) int64 ROI sizes, ``out_hw`` the largest
    (every ROI sits at the top left of its slot). Like :func:`stream.composite.warp_face`: colour and
    mask are quantised to bytes first, the crop gets a 1-pixel replicated frame with alpha 0, and the
    warped alpha is then feathered with ``gauss_kernel`` (from :func:`gaussian_kernel_u8`) if given.
    Returns ``bgr`` (M, 3, h, w) and ``alpha`` (M, h, w), float32 holding bytes; alpha is 0 outside each ROI.
    """
    s = restored_rgb01.shape[-1]
    colour = (restored_rgb01.to(torch.float32).clamp(min=0.0) * 255.0).round_().clamp_(max=255.0)
    alpha = (masks.to(torch.float32) * 255.0).round_()
    padded = torch.cat(
        (F.pad(colour.flip(1), (1, 1, 1, 1), mode="replicate"), F.pad(alpha[:, None], (1, 1, 1, 1))), dim=1
    )
    # Crop pixel (x, y) is padded pixel (x + 1, y + 1).
    shift = torch.zeros_like(roi_to_crop)
    shift[:, :, 2] = 1.0
    grid = sample_grid(roi_to_crop + shift, out_hw, (s + 2, s + 2))
    warped = _round_half_up(
        F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    )
    h, w = out_hw
    ys = torch.arange(h, device=roi_hw.device)[None, :, None]
    xs = torch.arange(w, device=roi_hw.device)[None, None, :]
    inside = (ys < roi_hw[:, 0, None, None]) & (xs < roi_hw[:, 1, None, None])
    a = warped[:, 3] * inside
    if gauss_kernel is not None:
        a = gaussian_blur_u8(a[:, None], gauss_kernel)[:, 0].to(torch.float32)
    return warped[:, :3], a


def blend_into(base_bgr_u8: Tensor, bgr: Tensor, alpha: Tensor) -> None:
    """Blend in place: ``base`` (h, w, 3) uint8 (a view into the output) <- ``bgr`` (3, h, w) bytes with
    ``alpha`` (h, w) bytes, rounding each product like ``stream.composite.paste_back``; where alpha is
    0 the base bytes are kept exactly."""
    a = alpha[..., None]
    fg = bgr.permute(1, 2, 0)
    base = base_bgr_u8.to(torch.float32)
    mixed = (fg * a / 255.0).round_() + (base * (255.0 - a) / 255.0).round_()
    base_bgr_u8.copy_(torch.where(a > 0, mixed.clamp_(max=255.0), base).to(torch.uint8))


def face_region(
    frame_hw: tuple[int, int], alignments: Sequence[Alignment], feather_px: int
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), clipped to the frame: every pixel a crop reads (bilinear neighbours included)
    and every pixel :func:`stream.restore.composite.paste_roi` can return (its crop window lies in [0, S]^2, mapped, plus
    ``1 + feather_px``). Only this rectangle is uploaded: for a small face in a 4K frame, a few percent."""
    h, w = frame_hw
    s = alignments[0].crop_size
    corners = np.array([[-1, -1], [s + 1, -1], [-1, s + 1], [s + 1, s + 1]], dtype=np.float64)
    pts = np.concatenate([a.to_image(corners) for a in alignments])
    margin = 2 + feather_px
    x0 = min(max(0, math.floor(pts[:, 0].min()) - margin), w - 1)
    y0 = min(max(0, math.floor(pts[:, 1].min()) - margin), h - 1)
    x1 = max(min(w, math.ceil(pts[:, 0].max()) + margin + 1), x0 + 1)
    y1 = max(min(h, math.ceil(pts[:, 1].max()) + margin + 1), y0 + 1)
    return x0, y0, x1, y1
