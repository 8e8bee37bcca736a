"""Make the bundled demo clip: real face footage with a synthetic face-mask worn through the whole clip.

    python -m training.data.demo_clip --video SRC.mp4 --out assets/demo.mp4 --seconds 6

Why synthetic: no real footage of a masked face ships in a package we can reach. The mask is rendered
by the training package's own face-mask renderer in canonical crop coordinates (so it moves with the
face as a worn mask does), with one fixed seed for every frame (the same mask, folds and strings in
every frame) and landmarks smoothed over time (a worn mask does not jitter with detector noise).
Audio of the same span is copied through untouched. The clean frames are kept next to it
(``--clean-out``) so quality can be scored against ground truth.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from engines.crop import estimate_alignment, warp_to_crop
from engines.face_detect import YuNetDetector
from training.data.facemask import FACEMASK_STYLES, render_facemask

logger = logging.getLogger(__name__)
RENDER_CROP = 512  # render at high resolution; the mask is downsampled onto the face


def _paste(frame_bgr: np.ndarray, occ_rgb: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = frame_bgr.shape[:2]
    inv = cv2.invertAffineTransform(matrix)
    occ = cv2.warpAffine(cv2.cvtColor(occ_rgb, cv2.COLOR_RGB2BGR), inv, (w, h), flags=cv2.INTER_AREA)
    alpha = cv2.warpAffine(mask, inv, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    out = frame_bgr.astype(np.float32) * (1 - alpha) + occ.astype(np.float32) * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def make_demo_clip(
    video: Path,
    out: Path,
    *,
    seconds: float,
    start_s: float,
    seed: int,
    style: str,
    clean_out: Path | None = None,
    smoothing: float = 0.6,
) -> int:
    """Writes ``out`` (and ``clean_out``); returns the number of frames written."""
    detector = YuNetDetector()
    src = av.open(str(video))
    vin = src.streams.video[0]
    ain = src.streams.audio[0] if src.streams.audio else None
    dst = av.open(str(out), "w")
    rate = vin.average_rate or Fraction(25)
    vout = dst.add_stream("libx264", rate=rate, options={"crf": "18", "preset": "slow"})
    vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
    vout.time_base = vin.time_base
    aout = dst.add_stream_from_template(ain) if ain is not None else None
    clean = None
    if clean_out is not None:
        clean = av.open(str(clean_out), "w")
        cv = clean.add_stream("libx264", rate=rate, options={"crf": "12"})
        cv.width, cv.height, cv.pix_fmt, cv.time_base = vout.width, vout.height, "yuv420p", vin.time_base
    t0, t1 = start_s, start_s + seconds
    smoothed: np.ndarray | None = None
    written = 0
    streams = [vin] + ([ain] if ain is not None else [])
    for packet in src.demux(*streams):
        if packet.dts is None:
            continue
        t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
        if packet.stream.type == "audio":
            if t0 <= t < t1 and aout is not None:
                assert packet.pts is not None  # a file's audio packets are timestamped
                packet.pts -= round(t0 / packet.time_base)
                packet.dts -= round(t0 / packet.time_base)
                packet.stream = aout
                dst.mux(packet)
            continue
        for frame in vin.decode(packet):
            assert frame.pts is not None and frame.time_base is not None  # decoded from a file
            ft = float(frame.pts * frame.time_base)
            if not t0 <= ft < t1:
                continue
            bgr: np.ndarray = frame.to_ndarray(format="bgr24")
            faces = detector.detect(bgr)
            if faces:
                lm = faces[0].landmarks.astype(np.float64)
                smoothed = lm if smoothed is None else smoothing * smoothed + (1 - smoothing) * lm
            masked = bgr
            if smoothed is not None:
                al = estimate_alignment(smoothed, RENDER_CROP)
                crop = cv2.cvtColor(warp_to_crop(bgr, al), cv2.COLOR_BGR2RGB)
                # The same seed every frame: the same mask, worn through the whole clip.
                occ = render_facemask(crop, np.random.default_rng(seed), style)
                masked = _paste(bgr, occ.image_rgb_u8, occ.mask_f32, al.matrix)
            pts = frame.pts - round(t0 / frame.time_base)
            outputs = [(dst, vout, masked)]
            if clean is not None:
                outputs.append((clean, clean.streams.video[0], bgr))
            for dest, stream, image in outputs:
                vf = av.VideoFrame.from_ndarray(image, format="bgr24")
                vf.pts, vf.time_base = pts, frame.time_base
                for p in stream.encode(vf):
                    dest.mux(p)
            written += 1
    for container in (dst, clean):
        if container is not None:
            for p in container.streams.video[0].encode(None):
                container.mux(p)
            container.close()
    src.close()
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--video", type=Path, required=True, help="source footage with one clearly visible face")
    p.add_argument("--out", type=Path, default=Path("assets/demo.mp4"))
    p.add_argument("--clean-out", type=Path, default=None, help="also write the unmasked frames here")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--start", type=float, default=0.0, help="start time in the source, seconds")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--style", choices=FACEMASK_STYLES, default="surgical")
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO")
    if not args.video.is_file():
        print(f"error: video not found: {args.video}")
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    n = make_demo_clip(
        args.video,
        args.out,
        seconds=args.seconds,
        start_s=args.start,
        seed=args.seed,
        style=args.style,
        clean_out=args.clean_out,
    )
    print(f"wrote {n} frames to {args.out}")
    return 0 if n else 1


if __name__ == "__main__":
    raise SystemExit(main())
