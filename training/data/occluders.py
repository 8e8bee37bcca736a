"""Occluders other than face-masks, in the canonical crop: scarves, sunglasses, hands and free-form
strokes/blobs. Each returns an :class:`Occlusion` whose mask is exactly the painted pixels.

Shapes are placed in face units (see :mod:`training.data.synth_common`), so a scarf's top edge lands
between the nose and the chin and a lens lands on an eye of any aligned face.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.data.synth_common import (
    FaceGeometry,
    Layer,
    Occlusion,
    box_of,
    canonical_geometry,
    composite,
    fabric_pattern,
    face_lighting,
    fill_polygon_alpha,
    finish,
    grain,
    random_colour,
    soft_inside,
    value_noise,
)

SKIN_TONES_RGB01 = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.92, 0.73, 0.60],
        [0.82, 0.62, 0.48],
        [0.66, 0.46, 0.33],
        [0.47, 0.31, 0.22],
        [0.33, 0.21, 0.15],
    ]
)


def _check(face_rgb_u8: np.ndarray, geometry: FaceGeometry | None) -> FaceGeometry:
    s = face_rgb_u8.shape[0]
    if face_rgb_u8.shape != (s, s, 3) or face_rgb_u8.dtype != np.uint8:
        raise ValueError(f"face must be (S, S, 3) uint8 RGB, got {face_rgb_u8.shape} {face_rgb_u8.dtype}")
    geom = geometry or canonical_geometry(s)
    if geom.crop_size != s:
        raise ValueError(f"geometry is for crop size {geom.crop_size}, face is {s}")
    return geom


def render_scarf(
    face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
) -> Occlusion:
    """A scarf or neck gaiter pulled up over the mouth (or nose), draping to the bottom of the crop."""
    geom = _check(face_rgb_u8, geometry)
    s = geom.crop_size
    a_full, b_full = geom.grid
    top = rng.uniform(0.35, 0.95)
    slope, amp = rng.normal(0, 0.06), rng.uniform(0.0, 0.08)
    freq, phase, rise = rng.uniform(1.5, 5.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.0, 0.3)
    half, spread = rng.uniform(1.05, 1.45), rng.uniform(0.1, 0.7)
    y0 = int(np.clip(geom.to_px(0.0, top - 0.5)[0, 1], 0, s - 1))
    a, b = a_full[y0:], b_full[y0:]
    b_top = top + slope * a + amp * np.sin(freq * a + phase) - rise * a**2
    # The sides hug the jaw and neck, then widen towards the shoulders; a wobble keeps them cloth-like.
    widen = spread * np.maximum(b - top, 0) ** 1.6 + 0.05 * np.sin(
        b * rng.uniform(3, 7) + rng.uniform(0, 6.3)
    )
    d_top = (b - b_top) * geom.eye_mouth_px
    d_left = (a + half + widen) * geom.eye_distance_px
    d_right = (half + widen - a) * geom.eye_distance_px
    alpha = soft_inside(d_top, d_left, d_right)
    h, w = alpha.shape
    ys, xs = np.mgrid[y0:s, 0:w].astype(np.float32)
    if rng.random() < 0.3:  # knit: vertical ribs and horizontal courses
        base = np.broadcast_to(random_colour(rng).astype(np.float32), (h, w, 3))
        period = max(2.0, s * rng.uniform(0.015, 0.03))
        texture = 1 + 0.08 * np.sin(xs * 2 * np.pi / period) + 0.04 * np.sin(ys * 2 * np.pi / (period * 0.7))
    else:
        base, _ = fabric_pattern(xs, ys, rng, s * 0.5)
        texture = grain((h, w), rng, rng.uniform(0.02, 0.06))
    folds = np.ones((h, w), np.float32)
    warp = value_noise((h, w), 4, rng) * s * 0.05
    for _ in range(int(rng.integers(2, 5))):
        theta = np.pi / 2 + rng.normal(0, 0.35)  # mostly horizontal folds of a draped cloth
        lam = s * rng.uniform(0.06, 0.2)
        t = (xs * np.cos(theta) + ys * np.sin(theta) + warp) * 2 * np.pi / lam + rng.uniform(0, 2 * np.pi)
        folds += rng.uniform(0.04, 0.12) * np.sin(t)
    hem = np.clip(d_top / max(1.0, s * 0.035), 0, 1)
    hem_shade = np.where(hem < 1, 1.08 - 0.25 * np.exp(-(((hem - 0.95) / 0.2) ** 2)), 1.0)
    shade = folds * texture * hem_shade
    box = (y0, s, 0, s)
    alpha_full = np.zeros((s, s), np.float32)
    alpha_full[y0:] = alpha
    light = face_lighting(face_rgb_u8, alpha_full, rng)[y0:]
    body = finish(base * shade[..., None] * light, rng, s)
    return composite(face_rgb_u8, [Layer(body, alpha, box)], kind="scarf")


def render_sunglasses(
    face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
) -> Occlusion:
    """Sunglasses: two tinted lenses on the eyes with a frame, bridge and temple arms."""
    geom = _check(face_rgb_u8, geometry)
    s = geom.crop_size
    ed, em = geom.eye_distance_px, geom.eye_mouth_px
    rx = ed * rng.uniform(0.36, 0.5)
    ry_top, ry_bot = em * rng.uniform(0.18, 0.3), em * rng.uniform(0.22, 0.38)
    power = rng.uniform(2.0, 4.5)
    frame = max(1.0, s * rng.uniform(0.006, 0.02))
    drop = rng.uniform(0.0, 0.12)
    eye_line = geom.points[1] - geom.points[0]
    angle = float(np.arctan2(eye_line[1], eye_line[0]))
    cos, sin = np.cos(angle), np.sin(angle)
    centres = [geom.points[i] + np.array([-sin, cos]) * drop * em for i in (0, 1)]
    reach = max(rx, ry_top, ry_bot) + frame + 2
    lo = np.clip(np.floor(np.min(centres, axis=0) - reach).astype(int), 0, s)
    hi = np.clip(np.ceil(np.max(centres, axis=0) + reach).astype(int), 0, s)
    # Lens maths runs inside the box around both lenses; the arms are drawn on the whole crop.
    ys, xs = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32)
    lens_box = np.zeros(ys.shape, np.float32)
    frame_box = np.zeros(ys.shape, np.float32)
    for c in centres:
        dx = (xs - c[0]) * cos + (ys - c[1]) * sin
        dy = -(xs - c[0]) * sin + (ys - c[1]) * cos
        ry = np.where(dy < 0, ry_top, ry_bot)
        level = (np.abs(dx / rx) ** power + np.abs(dy / ry) ** power) ** (1 / power)
        radius = np.minimum(rx, ry)
        lens_box = np.maximum(lens_box, np.clip((1 - level) * radius + 0.5, 0, 1))
        frame_box = np.maximum(frame_box, np.clip((1 - level) * radius + frame + 0.5, 0, 1))
    lens_alpha = np.zeros((s, s), np.float32)
    frame_alpha = np.zeros((s, s), np.float32)
    lens_alpha[lo[1] : hi[1], lo[0] : hi[0]] = lens_box
    frame_alpha[lo[1] : hi[1], lo[0] : hi[0]] = frame_box
    up = np.array([sin, -cos])
    across = np.array([cos, sin])
    bridge = np.array(
        [
            centres[0] + across * rx * 0.9 + up * ry_top * 0.4,
            centres[1] - across * rx * 0.9 + up * ry_top * 0.4,
        ]
    )
    canvas = np.zeros((s, s), np.uint8)
    pts = np.rint(bridge * 16).astype(np.int32)
    cv2.line(canvas, tuple(pts[0]), tuple(pts[1]), 255, max(1, int(round(frame))), cv2.LINE_AA, 4)
    for i, sign in ((0, -1.0), (1, 1.0)):
        start = centres[i] + sign * across * rx * 0.95 + up * ry_top * 0.3
        end = geom.to_px(sign * rng.uniform(1.15, 1.35), rng.uniform(-0.15, 0.05))[0]
        p = np.rint(np.array([start, end]) * 16).astype(np.int32)
        cv2.line(canvas, tuple(p[0]), tuple(p[1]), 255, max(1, int(round(frame * 0.8))), cv2.LINE_AA, 4)
    frame_alpha = np.maximum(frame_alpha, canvas.astype(np.float32) / 255.0)
    light = face_lighting(face_rgb_u8, frame_alpha, rng)
    frame_colour = (
        random_colour(rng, str(rng.choice(["black", "grey"]))) if rng.random() < 0.7 else random_colour(rng)
    )
    face01 = face_rgb_u8[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32) / 255.0
    tint = random_colour(rng, str(rng.choice(["black", "grey", "green", "blue"]))) * rng.uniform(0.15, 0.5)
    top_y = min(c[1] for c in centres) - ry_top
    transmission = rng.uniform(0.04, 0.25) * (0.6 + 0.4 * np.clip((ys - top_y) / (ry_top + ry_bot), 0, 1))
    lens = tint + face01 * transmission[..., None] * (tint / (tint.max() + 1e-3))
    if rng.random() < 0.25:  # mirrored lenses reflect a blurred, flipped environment
        lens += 0.35 * cv2.GaussianBlur(face01[:, ::-1], (0, 0), s / 40) * random_colour(rng)
    streak = np.exp(-(((((xs - ys * rng.uniform(0.5, 1.5)) % (rx * 3)) - rx) / (rx * 0.25)) ** 2))
    lens = np.clip(lens + rng.uniform(0.03, 0.2) * streak[..., None], 0, 1).astype(np.float32)
    box = (int(lo[1]), int(hi[1]), int(lo[0]), int(hi[0]))
    layers = [Layer.lit(frame_alpha, frame_colour, light), Layer(lens, lens_box, box)]
    return composite(face_rgb_u8, layers, kind="sunglasses")


def _skin_colour(face_rgb_u8: np.ndarray, geom: FaceGeometry, rng: np.random.Generator) -> np.ndarray:
    """Median cheek/nose colour of the face, jittered as a hand's skin differs a little from a face's."""
    a, b = geom.grid
    region = (np.abs(a) < 0.6) & (b > 0.3) & (b < 0.9)
    if rng.random() < 0.15 or not np.any(region):
        skin = SKIN_TONES_RGB01[rng.integers(len(SKIN_TONES_RGB01))]
    else:
        skin = np.median(face_rgb_u8[region].reshape(-1, 3), axis=0) / 255.0
    return np.clip(
        skin
        * np.array([rng.uniform(1.0, 1.12), rng.uniform(0.92, 1.02), rng.uniform(0.9, 1.0)])
        * rng.uniform(0.85, 1.1),
        0,
        1,
    )


_HAND_POSES = {
    # pose: (palm centre a, b), finger direction in degrees from "up" (positive = towards image right)
    "cover_mouth": ((0.15, 1.15), 90.0),
    "cheek": ((0.95, 1.15), -15.0),
    "chin": ((0.1, 2.15), 0.0),
    "side": ((1.25, 0.7), -75.0),
    "facepalm": ((0.0, 0.45), 0.0),
}


def render_hand(
    face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
) -> Occlusion:
    """A skin-coloured hand (palm, four fingers, thumb, forearm) over the mouth, cheek, chin or eyes."""
    geom = _check(face_rgb_u8, geometry)
    s = geom.crop_size
    pose = str(rng.choice(list(_HAND_POSES), p=[0.35, 0.25, 0.2, 0.12, 0.08]))
    (pa, pb), direction = _HAND_POSES[pose]
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    centre = geom.to_px(mirror * pa + rng.normal(0, 0.12), pb + rng.normal(0, 0.12))[0]
    theta = np.deg2rad(mirror * direction + rng.normal(0, 15))
    unit = geom.eye_distance_px * rng.uniform(0.95, 1.25)
    up = np.array([np.sin(theta), -np.cos(theta)])  # finger direction in image coordinates
    right = np.array([-up[1], up[0]]) * mirror

    def px(x: float, y: float) -> np.ndarray:  # hand-local units (x across the palm, y to the fingertips)
        return centre + (right * x + up * (y - 0.75)) * unit

    parts: list[np.ndarray] = []
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    palm = np.stack([px(0.55 * np.cos(k), 0.75 + 0.68 * np.sin(k)) for k in t])
    # The forearm hangs towards the bottom of the frame (the elbow is low), whatever the fingers do.
    arm_dir = -up + np.array([0.0, 0.9])
    arm_dir /= np.linalg.norm(arm_dir)
    wrist = px(0.0, 0.2)
    arm_right = np.array([-arm_dir[1], arm_dir[0]]) * 0.45 * unit
    forearm = np.stack([wrist - arm_right, wrist + arm_right, wrist + arm_right * 1.15 + arm_dir * 3.5 * unit,
                        wrist - arm_right * 1.15 + arm_dir * 3.5 * unit])  # fmt: skip
    parts.append(np.maximum(fill_polygon_alpha(s, [palm]), fill_polygon_alpha(s, [forearm])))
    spread, curl = rng.uniform(0.02, 0.12), rng.uniform(0.85, 1.08)
    for k, (bx, by, length, width) in enumerate(
        [
            (-0.43, 1.22, 0.78, 0.23),
            (-0.15, 1.38, 0.98, 0.27),
            (0.15, 1.4, 1.05, 0.28),
            (0.42, 1.3, 0.95, 0.27),
        ]
    ):
        ang = spread * (k - 1.5)
        tip = (bx + np.sin(ang) * length * curl, by + np.cos(ang) * length * curl)
        parts.append(_capsule(s, px(bx, by), px(*tip), width * unit))
    # The thumb sits on the side facing the nose (upwards for a hand across the mouth).
    nose = geom.points[2]
    side = 1.0 if float(right @ (nose - centre)) >= 0 else -1.0
    thumb_ang = np.deg2rad(rng.uniform(35, 75))
    base = (0.5 * side, 0.45)
    tip = (base[0] + side * np.sin(thumb_ang) * 0.85, base[1] + np.cos(thumb_ang) * 0.85)
    parts.append(_capsule(s, px(*base), px(*tip), 0.3 * unit))
    alpha = np.max(np.stack(parts), axis=0)
    # Each part darkens towards its own rim, so finger boundaries read as creases.
    rim = np.zeros((s, s), np.float32)
    for part in parts:
        dist = cv2.distanceTransform((part > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
        rim = np.maximum(rim, np.clip(dist / max(1.0, 0.12 * unit), 0, 1))
    y0, y1, x0, x1 = box = box_of(alpha)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    lit = rng.uniform(-1, 1, 2)
    gradient = 1 + 0.12 * ((xs - centre[0]) * lit[0] + (ys - centre[1]) * lit[1]) / (2 * unit)
    blotch = 1 + 0.04 * value_noise((y1 - y0, x1 - x0), 6, rng)
    shade = (
        (0.7 + 0.3 * np.sqrt(rim[y0:y1, x0:x1])) * gradient * blotch * grain((y1 - y0, x1 - x0), rng, 0.015)
    )
    light = face_lighting(face_rgb_u8, alpha, rng)[y0:y1, x0:x1]
    rgb = finish(_skin_colour(face_rgb_u8, geom, rng) * shade[..., None] * light, rng, s)
    return composite(
        face_rgb_u8, [Layer(rgb.astype(np.float32), alpha[y0:y1, x0:x1], box)], kind=f"hand/{pose}"
    )


def _capsule(size: int, p0: np.ndarray, p1: np.ndarray, width_px: float) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    a, b = np.rint(p0 * 16).astype(np.int32), np.rint(p1 * 16).astype(np.int32)
    cv2.line(
        canvas,
        (int(a[0]), int(a[1])),
        (int(b[0]), int(b[1])),
        255,
        max(1, int(round(width_px))),
        cv2.LINE_AA,
        4,
    )
    return canvas.astype(np.float32) / 255.0


def render_freeform(
    face_rgb_u8: np.ndarray,
    rng: np.random.Generator,
    geometry: FaceGeometry | None = None,
    shape: str | None = None,
) -> Occlusion:
    """Free-form occluders in the style of DeepFill v2's masks: thick random strokes or smooth blobs,
    filled with a colour, a print, smooth noise or displaced image content."""
    geom = _check(face_rgb_u8, geometry)
    s = geom.crop_size
    shape = shape or str(rng.choice(["strokes", "blobs"]))
    if shape not in ("strokes", "blobs"):
        raise ValueError(f"free-form shape must be 'strokes' or 'blobs', got {shape!r}")
    canvas = np.zeros((s, s), np.uint8)
    if shape == "strokes":
        for _ in range(int(rng.integers(1, 5))):
            p = geom.to_px(rng.uniform(-1.0, 1.0), rng.uniform(-0.3, 2.0))[0]
            width = max(2, int(s * rng.uniform(0.03, 0.1)))
            heading = rng.uniform(0, 2 * np.pi)
            for _ in range(int(rng.integers(3, 10))):
                heading += rng.uniform(-1.2, 1.2)
                q = p + s * rng.uniform(0.05, 0.18) * np.array([np.cos(heading), np.sin(heading)])
                a16, b16 = np.rint(p * 16).astype(np.int32), np.rint(q * 16).astype(np.int32)
                cv2.line(
                    canvas, (int(a16[0]), int(a16[1])), (int(b16[0]), int(b16[1])), 255, width, cv2.LINE_AA, 4
                )
                p = q
    else:
        polys = []
        for _ in range(int(rng.integers(1, 4))):
            c = geom.to_px(rng.uniform(-0.9, 0.9), rng.uniform(0.0, 1.9))[0]
            t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
            r = (
                s
                * rng.uniform(0.06, 0.18)
                * (1 + sum(rng.uniform(0, 0.25) * np.cos(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 5)))
            )
            polys.append(np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], axis=1))
        canvas = (fill_polygon_alpha(s, polys) * 255).astype(np.uint8)
    alpha = canvas.astype(np.float32) / 255.0
    fill = str(rng.choice(["solid", "print", "noise", "displaced"]))
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
    if fill == "solid":
        rgb: np.ndarray = (
            np.broadcast_to(random_colour(rng), (s, s, 3))
            * (1 + 0.1 * value_noise((s, s), 3, rng))[..., None]
        )
    elif fill == "print":
        rgb, _ = fabric_pattern(xs, ys, rng, s * 0.4)
    elif fill == "noise":
        rgb = np.stack(
            [0.5 + 0.45 * value_noise((s, s), int(rng.integers(3, 12)), rng) for _ in range(3)], axis=2
        )
    else:  # image content from elsewhere in the crop: the hardest case for a detector
        shift = rng.integers(-s // 3, s // 3 + 1, 2)
        rgb = (
            np.roll(face_rgb_u8[:, ::-1], (int(shift[0]), int(shift[1])), axis=(0, 1)).astype(np.float32)
            / 255.0
        )
    light = face_lighting(face_rgb_u8, alpha, rng) if fill != "displaced" else np.ones((s, s, 3), np.float32)
    rgb = finish(np.clip(rgb * light, 0, 1).astype(np.float32), rng, s)
    return composite(face_rgb_u8, [Layer.from_full(alpha, rgb_full=rgb)], kind=f"freeform/{shape}")
