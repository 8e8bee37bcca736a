"""More occluders for visible-face segmentation: microphones, cups, phones, hair (bangs and strands).

Like :mod:`training.data.occluders`, each renderer takes an (S, S, 3) uint8 RGB canonical crop, a
``numpy.random.Generator`` and the face's :class:`FaceGeometry`, and returns an :class:`Occlusion` whose
mask is exactly the painted pixels (pixels with mask 0 stay bit-identical). Shapes are placed in face
units (eye distance across, eye-to-mouth distance down), so they land on the mouth, ear or forehead of
any aligned face. The point of these kinds is variety the segmenter must generalise over; "cup" is held
out of the default training kinds so the evaluation has an occluder shape the network never saw.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.data.occluders import SKIN_TONES_RGB01
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
    value_noise,
)

EXTRA_KINDS: tuple[str, ...] = ("microphone", "cup", "phone", "hair")
HAIR_COLOURS_RGB01 = np.array(
    [[0.06, 0.05, 0.05], [0.18, 0.11, 0.07], [0.35, 0.22, 0.12], [0.62, 0.45, 0.25], [0.85, 0.72, 0.48],
     [0.45, 0.16, 0.08], [0.55, 0.55, 0.55]]
)  # fmt: skip


def _check(face_rgb_u8: np.ndarray, geometry: FaceGeometry | None) -> FaceGeometry:
    s = face_rgb_u8.shape[0]
    if face_rgb_u8.shape != (s, s, 3) or face_rgb_u8.dtype != np.uint8:
        raise ValueError(f"face must be (S, S, 3) uint8 RGB, got {face_rgb_u8.shape} {face_rgb_u8.dtype}")
    geom = geometry or canonical_geometry(s)
    if geom.crop_size != s:
        raise ValueError(f"geometry is for crop size {geom.crop_size}, face is {s}")
    return geom


def _line_alpha(size: int, p0: np.ndarray, p1: np.ndarray, width_px: float) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    a, b = np.rint(np.asarray(p0) * 16).astype(np.int32), np.rint(np.asarray(p1) * 16).astype(np.int32)
    cv2.line(
        canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 255, max(1, round(width_px)), cv2.LINE_AA, 4
    )
    return canvas.astype(np.float32) / 255.0


def _disc_alpha(size: int, centre: np.ndarray, radius_px: float) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.clip(radius_px - np.hypot(xs - centre[0], ys - centre[1]) + 0.5, 0, 1).astype(np.float32)


def _shaded(alpha: np.ndarray, colour: np.ndarray, face_rgb_u8: np.ndarray, rng: np.random.Generator,
            texture: np.ndarray | None = None) -> Layer:  # fmt: skip
    """A layer of one colour (times an optional (S, S) texture) lit like the face, cropped to its box."""
    s = alpha.shape[0]
    y0, y1, x0, x1 = box = box_of(alpha)
    light = face_lighting(face_rgb_u8, alpha, rng)[y0:y1, x0:x1]
    tex = np.ones((y1 - y0, x1 - x0), np.float32) if texture is None else texture[y0:y1, x0:x1]
    rgb = np.asarray(colour, np.float32) * tex[..., None] * light
    return Layer(finish(np.clip(rgb, 0, 1).astype(np.float32), rng, s), alpha[y0:y1, x0:x1], box)


def _cylinder_shade(alpha_shape: tuple[int, int], axis_p: np.ndarray, axis_dir: np.ndarray, half_width: float,
                    rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(S, S) float32 multiplier of a lit cylinder: bright stripe off-centre, dark rims."""
    ys, xs = np.mgrid[0 : alpha_shape[0], 0 : alpha_shape[1]].astype(np.float32)
    normal = np.array([-axis_dir[1], axis_dir[0]])
    t = ((xs - axis_p[0]) * normal[0] + (ys - axis_p[1]) * normal[1]) / max(half_width, 1.0)
    hi = rng.uniform(-0.5, 0.5)
    return (0.6 + 0.4 * np.cos(np.clip(t, -1.4, 1.4)) + 0.35 * np.exp(-(((t - hi) / 0.18) ** 2))).astype(
        np.float32
    )


# ------------------------------------------------------------------------------------------- microphone
def render_microphone(
    face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
) -> Occlusion:
    """A handheld microphone (grille ball on a handle, often with a hand) before the mouth or chin, or a
    headset's thin boom arm from the ear to the mouth corner."""
    geom = _check(face_rgb_u8, geometry)
    s, ed = geom.crop_size, geom.eye_distance_px
    if rng.random() < 0.25:
        side = -1.0 if rng.random() < 0.5 else 1.0
        ear = geom.to_px(side * rng.uniform(1.1, 1.4), rng.uniform(0.2, 0.6))[0]
        tip = geom.to_px(side * rng.uniform(0.15, 0.45), rng.uniform(0.95, 1.2))[0]
        arm = _line_alpha(s, ear, tip, max(1.5, ed * rng.uniform(0.04, 0.09)))
        foam = _disc_alpha(s, tip, ed * rng.uniform(0.1, 0.18))
        dark = random_colour(rng, str(rng.choice(["black", "grey"])))
        layers = [_shaded(arm, dark, face_rgb_u8, rng),
                  _shaded(foam, dark * 0.7, face_rgb_u8, rng, grain((s, s), rng, 0.15))]  # fmt: skip
        return composite(face_rgb_u8, layers, kind="microphone/headset")
    centre = geom.to_px(rng.uniform(-0.5, 0.5), rng.uniform(0.95, 1.6))[0]
    radius = ed * rng.uniform(0.3, 0.5)
    tilt = np.deg2rad(rng.normal(0, 20))
    down = np.array([np.sin(tilt), np.cos(tilt)])
    handle_end = centre + down * s  # the handle leaves the crop at the bottom
    handle = _line_alpha(s, centre + down * radius * 0.6, handle_end, radius * rng.uniform(0.7, 1.0))
    ball = _disc_alpha(s, centre, radius)
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
    pitch = max(1.5, radius * rng.uniform(0.18, 0.3))
    mesh = 0.75 + 0.25 * ((np.sin(xs * 2 * np.pi / pitch) * np.sin(ys * 2 * np.pi / pitch)) > 0)
    d = np.hypot(xs - centre[0], ys - centre[1]) / max(radius, 1.0)
    sphere = np.clip(1.15 - 0.6 * d**2, 0.3, 1.2)
    grille = random_colour(rng, str(rng.choice(["grey", "black", "white"])))
    body = (
        random_colour(rng, str(rng.choice(["black", "grey"]))) if rng.random() < 0.8 else random_colour(rng)
    )
    layers = [
        _shaded(handle, body, face_rgb_u8, rng, _cylinder_shade((s, s), centre, down, radius * 0.45, rng)),
        _shaded(ball, grille, face_rgb_u8, rng, (mesh * sphere).astype(np.float32)),
    ]
    kind = "microphone/handheld"
    if rng.random() < 0.5:  # a fist around the handle, below the ball
        grip = centre + down * radius * rng.uniform(1.8, 2.6)
        fist = np.zeros((s, s), np.float32)
        for k in range(4):
            p = grip + down * (k - 1.5) * radius * 0.42
            fist = np.maximum(fist, _line_alpha(s, p - np.array([down[1], -down[0]]) * radius * 0.9,
                                                p + np.array([down[1], -down[0]]) * radius * 0.9,
                                                radius * 0.5))  # fmt: skip
        skin = SKIN_TONES_RGB01[rng.integers(len(SKIN_TONES_RGB01))] * rng.uniform(0.9, 1.1)
        layers.append(_shaded(fist, np.clip(skin, 0, 1), face_rgb_u8, rng, grain((s, s), rng, 0.02)))
        kind += "+hand"
    return composite(face_rgb_u8, layers, kind=kind)


# ------------------------------------------------------------------------------------------------- cup
def render_cup(
    face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
) -> Occlusion:
    """A mug or a paper cup raised to the mouth: a tapered body with an elliptic rim, maybe a handle."""
    geom = _check(face_rgb_u8, geometry)
    s, ed, em = geom.crop_size, geom.eye_distance_px, geom.eye_mouth_px
    mug = rng.random() < 0.5
    top_c = geom.to_px(rng.uniform(-0.4, 0.4), rng.uniform(0.55, 1.05))[0]
    half_top = ed * rng.uniform(0.45, 0.7)
    half_bot = half_top * (rng.uniform(0.95, 1.05) if mug else rng.uniform(0.65, 0.8))
    height = em * rng.uniform(1.0, 1.6)
    tilt = np.deg2rad(rng.normal(0, 12))
    down = np.array([np.sin(tilt), np.cos(tilt)])
    across = np.array([down[1], -down[0]])
    bot_c = top_c + down * height
    body_poly = np.stack([top_c - across * half_top, top_c + across * half_top,
                          bot_c + across * half_bot, bot_c - across * half_bot])  # fmt: skip
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    rim_ry = half_top * rng.uniform(0.12, 0.25)
    rim = top_c + np.outer(np.cos(t), across * half_top) + np.outer(np.sin(t), down * rim_ry)
    bottom = bot_c + np.outer(np.cos(t), across * half_bot) + np.outer(np.sin(t), down * rim_ry * 0.8)
    body = np.maximum(fill_polygon_alpha(s, [body_poly, bottom]), fill_polygon_alpha(s, [rim]))
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
    printed = rng.random() < 0.4
    pattern, _ = fabric_pattern(xs, ys, rng, s * 0.4) if printed else (None, "")
    colour = random_colour(rng, str(rng.choice(["white", "black", "grey", "pink", "blue", "green"])))
    shade = _cylinder_shade((s, s), top_c, down, half_top, rng)
    layers = []
    if mug:
        side = 1.0 if rng.random() < 0.5 else -1.0
        hc = top_c + down * height * 0.45 + across * side * half_top * 1.1
        ring = np.zeros((s, s), np.uint8)
        axes = (int(round(half_top * 0.45 * 16)), int(round(height * 0.28 * 16)))
        cv2.ellipse(ring, (int(round(hc[0] * 16)), int(round(hc[1] * 16))), axes, float(np.rad2deg(tilt)), 0, 360,
                    255, max(1, round(half_top * 0.18)), cv2.LINE_AA, 4)  # fmt: skip
        layers.append(_shaded(ring.astype(np.float32) / 255.0, colour, face_rgb_u8, rng))
    if pattern is not None:
        y0, y1, x0, x1 = box = box_of(body)
        light = face_lighting(face_rgb_u8, body, rng)[y0:y1, x0:x1]
        rgb = pattern[y0:y1, x0:x1] * shade[y0:y1, x0:x1, None] * light
        layers.append(Layer(finish(np.clip(rgb, 0, 1).astype(np.float32), rng, s), body[y0:y1, x0:x1], box))
    else:
        layers.append(_shaded(body, colour, face_rgb_u8, rng, shade))
    # The rim's inner ellipse: the dark inside of the cup or its lid.
    inner = top_c + np.outer(np.cos(t), across * half_top * 0.9) + np.outer(np.sin(t), down * rim_ry * 0.75)
    inner_alpha = fill_polygon_alpha(s, [inner]) * body
    layers.append(_shaded(inner_alpha, random_colour(rng, "black") * rng.uniform(1.0, 3.0), face_rgb_u8, rng))
    return composite(face_rgb_u8, layers, kind="cup/mug" if mug else "cup/paper")


# ----------------------------------------------------------------------------------------------- phone
def render_phone(
    face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
) -> Occlusion:
    """A phone held to the ear (covering the cheek and jaw) or held up in front of part of the face."""
    geom = _check(face_rgb_u8, geometry)
    s, ed, em = geom.crop_size, geom.eye_distance_px, geom.eye_mouth_px
    at_ear = rng.random() < 0.5
    side = -1.0 if rng.random() < 0.5 else 1.0
    if at_ear:
        centre = geom.to_px(side * rng.uniform(0.75, 1.1), rng.uniform(0.5, 1.1))[0]
        angle = np.deg2rad(side * rng.uniform(10, 40))
    else:
        centre = geom.to_px(rng.uniform(-0.7, 0.7), rng.uniform(0.0, 1.4))[0]
        angle = np.deg2rad(rng.normal(0, 15) + (90 if rng.random() < 0.3 else 0))
    half_w, half_h = ed * rng.uniform(0.45, 0.6), em * rng.uniform(1.0, 1.3)
    up = np.array([np.sin(angle), -np.cos(angle)])
    across = np.array([-up[1], up[0]])
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
    u = (xs - centre[0]) * across[0] + (ys - centre[1]) * across[1]
    v = (xs - centre[0]) * up[0] + (ys - centre[1]) * up[1]
    r = min(half_w, half_h) * rng.uniform(0.15, 0.35)
    # Rounded-rectangle signed distance (positive inside), Inigo Quilez's box SDF.
    qx, qy = np.abs(u) - (half_w - r), np.abs(v) - (half_h - r)
    dist = r - np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) - np.minimum(np.maximum(qx, qy), 0)
    alpha = np.clip(dist + 0.5, 0, 1).astype(np.float32)
    case = (
        random_colour(rng)
        if rng.random() < 0.5
        else random_colour(rng, str(rng.choice(["black", "grey", "white"])))
    )
    gloss = (1.0 + 0.25 * np.exp(-(((u + v * rng.uniform(-1, 1)) / (half_w * 0.4)) ** 2))).astype(np.float32)
    layers = [_shaded(alpha, case, face_rgb_u8, rng, gloss * (1 + 0.05 * value_noise((s, s), 4, rng)))]
    if not at_ear and rng.random() < 0.5:  # the lit screen faces the camera
        inset = r * 0.4 + 1.0
        screen = (
            np.clip(np.minimum(half_w - inset - np.abs(u), half_h - inset - np.abs(v)) + 0.5, 0, 1) * alpha
        )
        glow = random_colour(rng) * 0.4 + 0.5
        y0, y1, x0, x1 = box = box_of(screen.astype(np.float32))
        rgb = (
            np.broadcast_to(glow, (y1 - y0, x1 - x0, 3))
            * (1 + 0.3 * value_noise((y1 - y0, x1 - x0), 5, rng))[..., None]
        )
        layers.append(
            Layer(
                finish(np.clip(rgb, 0, 1).astype(np.float32), rng, s),
                screen[y0:y1, x0:x1].astype(np.float32),
                box,
            )
        )
    elif rng.random() < 0.5:  # camera bump on the back
        bump = _disc_alpha(s, centre + up * half_h * 0.65 - across * half_w * 0.45, half_w * 0.22) * alpha
        layers.append(_shaded(bump, random_colour(rng, "black"), face_rgb_u8, rng))
    return composite(face_rgb_u8, layers, kind="phone/ear" if at_ear else "phone/front")


# ------------------------------------------------------------------------------------------------ hair
def render_hair(
    face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
) -> Occlusion:
    """Bangs (a fringe from the hairline down to the brows or over the eyes) or loose strands falling
    across the face from one side."""
    geom = _check(face_rgb_u8, geometry)
    s, ed = geom.crop_size, geom.eye_distance_px
    colour = np.clip(
        HAIR_COLOURS_RGB01[rng.integers(len(HAIR_COLOURS_RGB01))] * rng.uniform(0.85, 1.15), 0, 1
    )
    canvas = np.zeros((s, s), np.uint8)
    bangs = rng.random() < 0.6
    if bangs:
        length = rng.uniform(0.0, 0.45)  # how far below the eye line (in eye-mouth units) the fringe ends
        width = rng.uniform(1.0, 1.5)
        part = rng.uniform(-0.4, 0.4)
        n = int(rng.integers(25, 45))
        for a in np.linspace(-width, width, n) + rng.normal(0, 0.03, n):
            root = geom.to_px(part + (a - part) * 0.4, -rng.uniform(1.0, 1.3))[0]
            tip_b = -0.25 + length * (1 - (abs(a) / width) ** 2 * rng.uniform(0.0, 0.8)) + rng.normal(0, 0.06)
            tip = geom.to_px(a + rng.normal(0, 0.08), tip_b)[0]
            mid = (root + tip) / 2 + rng.normal(0, 0.08, 2) * ed
            pts = _bezier(root, mid, tip)
            _polyline(canvas, pts, max(1.5, ed * rng.uniform(0.08, 0.16)))
    else:
        side = -1.0 if rng.random() < 0.5 else 1.0
        for _ in range(int(rng.integers(2, 6))):
            root = geom.to_px(side * rng.uniform(0.2, 1.0), -rng.uniform(0.9, 1.2))[0]
            tip = geom.to_px(side * rng.uniform(-0.4, 1.1), rng.uniform(0.3, 1.9))[0]
            mid = (root + tip) / 2 + np.array([side * ed * rng.uniform(-0.3, 0.5), 0])
            _polyline(canvas, _bezier(root, mid, tip), max(1.0, ed * rng.uniform(0.04, 0.12)))
    alpha = canvas.astype(np.float32) / 255.0
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
    sheen = 1.0 + 0.25 * np.sin(xs * 2 * np.pi / max(2.0, ed * 0.12) + 2 * value_noise((s, s), 6, rng))
    tex = (sheen * grain((s, s), rng, 0.08)).astype(np.float32)
    return composite(face_rgb_u8, [_shaded(alpha, colour, face_rgb_u8, rng, tex)],
                     kind="hair/bangs" if bangs else "hair/strands")  # fmt: skip


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int = 16) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _polyline(canvas: np.ndarray, pts: np.ndarray, width_px: float) -> None:
    p = np.rint(pts * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [p], False, 255, max(1, round(width_px)), cv2.LINE_AA, 4)


RENDERERS = {
    "microphone": render_microphone,
    "cup": render_cup,
    "phone": render_phone,
    "hair": render_hair,
}


def render_extra(
    kind: str, face_rgb_u8: np.ndarray, rng: np.random.Generator, geometry: FaceGeometry | None = None
) -> Occlusion:
    """One occluder of ``kind`` (one of :data:`EXTRA_KINDS`)."""
    if kind not in RENDERERS:
        raise ValueError(f"extra occluder kind must be one of {EXTRA_KINDS}, got {kind!r}")
    return RENDERERS[kind](face_rgb_u8, rng, geometry)
