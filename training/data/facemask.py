"""Face-mask rendering in the canonical crop: surgical, KN95, N95 cup, cloth and real mask photographs.

Every mask is a region in face units (see :mod:`training.data.synth_common`) with texture coordinates
``u`` (0 = image-left edge, 0.5 = nose line, 1 = image-right edge) and ``v`` (0 = top edge on the nose
bridge, 1 = bottom edge under the chin). Pleats, seams, prints and the real photographs are painted in
(u, v), so they follow the mask's outline; the face's own illumination is multiplied on top.

Styles are selectable so an evaluation set can use settings the training never saw: by default the
training configs use the procedural styles and evaluation sets use ``photo`` (real mask photographs,
``training/assets/masks``, from the insightface package, MIT).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from training.data.synth_common import (
    Box,
    FaceGeometry,
    Layer,
    Occlusion,
    bezier,
    canonical_geometry,
    composite,
    draw_polyline_alpha,
    fabric_pattern,
    face_lighting,
    finish,
    grain,
    random_colour,
    value_noise,
)

log = logging.getLogger(__name__)

FACEMASK_STYLES: tuple[str, ...] = ("surgical", "kn95", "n95", "cloth", "photo")
PHOTO_TEXTURES: tuple[str, ...] = ("white", "blue", "black", "green")
COLOUR_FAMILIES: tuple[str, ...] = ("blue", "white", "black", "green", "pink", "grey")
MASK_ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "masks"


@dataclass(frozen=True)
class MaskShape:
    """Outline of a worn mask in face units (a across in eye distances, b down in eye-to-mouth distances).

    Top edge: ``top_centre`` on the nose line rising/falling to ``top_side`` at the cheeks with exponent
    ``top_power`` (1 = peaked like a KN95, 2+ = round). Bottom edge: ``bottom_centre`` under the chin
    to ``bottom_side`` at the jaw. Half-widths at the top and bottom; ``yaw_k`` narrows the far side.
    """

    centre: float
    top_centre: float
    top_side: float
    bottom_centre: float
    bottom_side: float
    half_width_top: float
    half_width_bottom: float
    top_power: float
    bottom_power: float
    yaw_k: float

    def __post_init__(self) -> None:
        if not (self.top_centre < self.bottom_centre and self.top_side < self.bottom_side):
            raise ValueError(f"mask top must lie above its bottom, got {self}")
        if min(self.half_width_top, self.half_width_bottom) <= 0.1:
            raise ValueError(f"mask half widths must be > 0.1 eye distances, got {self}")


def sample_shape(style: str, geom: FaceGeometry, rng: np.random.Generator) -> MaskShape:
    u = rng.uniform
    yaw_k = float(np.clip(1.6 * geom.yaw, -0.45, 0.45))
    centre = float(np.clip(geom.yaw * 0.8, -0.3, 0.3))
    if style == "kn95":
        p = dict(top_centre=u(0.12, 0.32), rise=u(0.22, 0.38), bottom_centre=u(1.85, 2.05), bottom_side=u(1.15, 1.4),
                 hw_top=u(0.98, 1.12), hw_bottom=u(0.8, 0.95), tp=u(0.9, 1.2), bp=u(1.0, 1.5))  # fmt: skip
    elif style == "n95":
        p = dict(top_centre=u(0.15, 0.3), rise=u(0.35, 0.5), bottom_centre=u(1.8, 1.98), bottom_side=u(1.05, 1.3),
                 hw_top=u(0.92, 1.05), hw_bottom=u(0.85, 0.98), tp=u(1.8, 2.4), bp=u(1.8, 2.4))  # fmt: skip
    else:  # surgical, cloth, photo: soft rectangle bent over the nose and under the chin
        p = dict(top_centre=u(0.22, 0.42), rise=u(0.08, 0.25), bottom_centre=u(1.75, 2.0), bottom_side=u(1.2, 1.5),
                 hw_top=u(1.0, 1.18), hw_bottom=u(0.85, 1.05), tp=u(1.3, 2.5), bp=u(1.8, 3.2))  # fmt: skip
        if style == "cloth":
            p["rise"] = u(0.15, 0.3)
    if rng.random() < 0.12:  # worn below the nose, as people do
        p["top_centre"] = u(0.6, 0.75)
        p["rise"] = u(0.05, 0.15)
    return MaskShape(
        centre=centre,
        top_centre=p["top_centre"],
        top_side=p["top_centre"] + p["rise"],
        bottom_centre=p["bottom_centre"],
        bottom_side=p["bottom_side"],
        half_width_top=p["hw_top"],
        half_width_bottom=p["hw_bottom"],
        top_power=p["tp"],
        bottom_power=p["bp"],
        yaw_k=yaw_k,
    )


@dataclass(frozen=True)
class MaskUV:
    """Texture coordinates of a mask inside its ``box`` of the crop: u, v, alpha and the distance to
    the outline in pixels (each (h, w) float32), plus the mask's width and height in pixels."""

    u: np.ndarray
    v: np.ndarray
    alpha: np.ndarray
    edge_px: np.ndarray
    width_px: float
    height_px: float
    box: Box

    def full(self, values: np.ndarray, size: int) -> np.ndarray:
        """Pastes a box-sized (h, w) array into a zero (size, size) array."""
        y0, y1, x0, x1 = self.box
        out = np.zeros((size, size), np.float32)
        out[y0:y1, x0:x1] = values
        return out


def _outline_box(shape: MaskShape, geom: FaceGeometry) -> Box:
    """Pixel box around the mask's face-unit bounding rectangle, clipped to the crop."""
    half = max(shape.half_width_top, shape.half_width_bottom) * (1 + abs(shape.yaw_k))
    a = [shape.centre - half, shape.centre + half]
    b = [min(shape.top_centre, shape.top_side), max(shape.bottom_centre, shape.bottom_side)]
    pts = geom.to_px(np.array([a[0], a[1], a[0], a[1]]), np.array([b[0], b[0], b[1], b[1]]))
    n = geom.crop_size
    x0, y0 = np.floor(pts.min(0)).astype(int) - 2
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 3
    return (int(np.clip(y0, 0, n)), int(np.clip(y1, 0, n)), int(np.clip(x0, 0, n)), int(np.clip(x1, 0, n)))


def mask_uv(shape: MaskShape, geom: FaceGeometry) -> MaskUV:
    box = y0, y1, x0, x1 = _outline_box(shape, geom)
    a_full, b_full = geom.grid
    a, b = a_full[y0:y1, x0:x1], b_full[y0:y1, x0:x1]
    ed, em = geom.eye_distance_px, geom.eye_mouth_px
    span = max(shape.bottom_side - shape.top_side, 1e-3)
    hw = shape.half_width_top + (shape.half_width_bottom - shape.half_width_top) * np.clip(
        (b - shape.top_side) / span, 0, 1
    )
    w_left, w_right = hw * (1 + shape.yaw_k), hw * (1 - shape.yaw_k)
    left_edge, right_edge = shape.centre - w_left, shape.centre + w_right
    # Piecewise-linear u puts the nose line (seam of a KN95) at u = 0.5 even on a turned head.
    u = np.where(a < shape.centre, 0.5 * (a - left_edge) / w_left, 0.5 + 0.5 * (a - shape.centre) / w_right)
    s = np.abs(2 * np.clip(u, 0, 1) - 1)
    b_top = shape.top_centre + (shape.top_side - shape.top_centre) * s**shape.top_power
    b_bot = shape.bottom_centre - (shape.bottom_centre - shape.bottom_side) * s**shape.bottom_power
    v = (b - b_top) / np.maximum(b_bot - b_top, 1e-3)
    d = [(a - left_edge) * ed, (right_edge - a) * ed, (b - b_top) * em, (b_bot - b) * em]
    edge = np.minimum.reduce([x.astype(np.float32) for x in d])
    alpha = np.clip(edge + 0.5, 0.0, 1.0)
    width_px = float((shape.half_width_top + shape.half_width_bottom) * ed)
    height_px = float((shape.bottom_centre - shape.top_centre) * em)
    return MaskUV(u.astype(np.float32), v.astype(np.float32), alpha, edge, width_px, height_px, box)


def _pleats(uv: MaskUV, rng: np.random.Generator, crop_size: int) -> np.ndarray:
    """(h, w) shading of 2-4 horizontal pleats: a dark crease with a highlight above and shade below."""
    n = int(rng.integers(2, 5))
    centres = np.linspace(0.3, 0.75, n) + rng.normal(0, 0.015, n)
    squeeze = rng.uniform(0.15, 0.5)
    s = np.abs(2 * np.clip(uv.u, 0, 1) - 1)
    w = max(0.7, crop_size / 200.0)
    shade = np.ones_like(uv.u)
    depth = rng.uniform(0.12, 0.3)
    for c in centres:
        vk = 0.5 + (c - 0.5) * (1 - squeeze * s**2)  # pleats converge towards the ear-loop corners
        dv = (uv.v - vk) * uv.height_px
        shade += -depth * np.exp(-((dv / w) ** 2))
        shade += 0.5 * depth * np.exp(-(((dv + 3 * w) / (3 * w)) ** 2))
        shade += -0.4 * depth * np.exp(-(((dv - 3 * w) / (3 * w)) ** 2))
    return shade


def _edge_band(uv: MaskUV, crop_size: int, width_frac: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w) shading of a heat-sealed / bound edge band with an embossed dot texture."""
    bw = max(1.5, width_frac * crop_size)
    band = np.clip((bw - uv.edge_px) / 1.0, 0, 1)
    period = max(2.0, crop_size / 70.0)
    y0, y1, x0, x1 = uv.box
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dots = (np.sin(xs * 2 * np.pi / period) * np.sin(ys * 2 * np.pi / period) > 0).astype(np.float32)
    seam = np.exp(-(((uv.edge_px - bw) / max(0.7, crop_size / 256.0)) ** 2))
    level = rng.uniform(0.9, 1.0)
    return 1.0 + band * (level - 1.0 - 0.06 * dots) - 0.12 * seam


def _ear_strings(
    shape: MaskShape, geom: FaceGeometry, rng: np.random.Generator, straps: bool
) -> list[tuple[np.ndarray, float]]:
    """Polylines (crop px) of ear loops (or N95 head straps) with their thickness in px."""
    s = geom.crop_size
    out: list[tuple[np.ndarray, float]] = []
    thick = max(1.0, s * rng.uniform(0.005, 0.009) * (1.6 if straps else 1.0))
    for side in (-1.0, 1.0):
        grow = 1 + shape.yaw_k if side < 0 else 1 - shape.yaw_k  # same foreshortening as mask_uv
        top = np.array([shape.centre + side * shape.half_width_top * grow * 0.98, shape.top_side + 0.04])
        bot = np.array(
            [shape.centre + side * shape.half_width_bottom * grow * 0.98, shape.bottom_side - 0.04]
        )
        if straps:
            # Head straps cross the cheek and vanish behind the head at the face contour.
            for start, b_end in (
                (top + [0, 0.12], rng.uniform(-0.2, 0.1)),
                (bot - [0, 0.12], rng.uniform(0.55, 0.85)),
            ):
                end = np.array([shape.centre + side * rng.uniform(1.2, 1.35) * grow, b_end])
                out.append((geom.to_px(*bezier(start, (start + end) / 2 + [0, 0.04], end).T), thick))
            continue
        # The loop runs back to the ear, which sits just outside the cheek contour in a frontal view.
        ear_x = shape.centre + side * rng.uniform(1.15, 1.3) * grow
        ear_top = np.array([ear_x, rng.uniform(0.0, 0.2)])
        ear_low = np.array([ear_x - side * 0.03, rng.uniform(0.45, 0.65)])
        c_top = (top + ear_top) / 2 + [side * 0.04, -0.03]
        c_low = (bot + ear_low) / 2 + [side * rng.uniform(0.05, 0.15), 0.08]
        out.append((geom.to_px(*bezier(top, c_top, ear_top).T), thick))
        out.append((geom.to_px(*bezier(bot, c_low, ear_low).T), thick))
    return out


@dataclass(frozen=True)
class PhotoTexture:
    """A mask photograph rectified to a rectangle: rgb01 (H, W, 3) float32 and alpha (H, W) float32."""

    rgb01: np.ndarray
    alpha: np.ndarray
    name: str


@lru_cache(maxsize=16)
def load_photo_texture(path: str) -> PhotoTexture:
    """Segments the mask from its plain background and rectifies its outline quad to a rectangle.

    Cached because every face-mask sample would otherwise decode and segment the same JPEG again.
    """
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"mask photo not found or unreadable: {path}")
    h, w = bgr.shape[:2]
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    mean = cv2.blur(grey, (5, 5))
    std = np.sqrt(np.maximum(cv2.blur(grey * grey, (5, 5)) - mean * mean, 0))
    # Background: flat, near-white pixels connected to the border (the fabric has texture and tone).
    flat = ((bgr.min(axis=2) >= 236) & (std < 4)).astype(np.uint8)
    _, labels = cv2.connectedComponents(flat)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, border[border > 0])
    fg = cv2.morphologyEx((~background).astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError(f"no mask found in photo {path}")
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    quad = cv2.approxPolyDP(hull, 0.03 * cv2.arcLength(hull, True), True).reshape(-1, 2).astype(np.float32)
    if len(quad) != 4:
        log.info("mask photo %s outline is not a quad (%d corners); using its bounding box", path, len(quad))
        x, y, bw, bh = cv2.boundingRect(hull)
        quad = np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]], np.float32)
    order = np.argsort(np.arctan2(quad[:, 1] - quad[:, 1].mean(), quad[:, 0] - quad[:, 0].mean()))
    quad = quad[order]  # tl, tr, br, bl after the rotation below
    quad = np.roll(quad, -int(np.argmin(quad.sum(1))), axis=0)
    inset = (quad.mean(0) - quad) * 0.015  # trims photo borders (the black mask has a white 1 px frame)
    quad = quad + inset
    tw, th = 384, int(round(384 * h / w))
    dst = np.array([[0, 0], [tw - 1, 0], [tw - 1, th - 1], [0, th - 1]], np.float32)
    m = cv2.getPerspectiveTransform(quad, dst)
    rgb = cv2.warpPerspective(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), m, (tw, th), flags=cv2.INTER_AREA)
    alpha = cv2.warpPerspective(fg.astype(np.float32), m, (tw, th), flags=cv2.INTER_LINEAR)
    rgb01 = rgb.astype(np.float32) / 255.0
    rgb01.flags.writeable = False  # shared by every caller through the cache
    alpha.flags.writeable = False
    return PhotoTexture(rgb01, alpha, Path(path).stem)


def _photo_layer(
    uv: MaskUV, rng: np.random.Generator, photos: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, str]:
    name = str(rng.choice(photos))
    tex = load_photo_texture(str(MASK_ASSET_DIR / f"mask_{name}.jpg"))
    # Pre-shrink to about the on-screen size so remap's bilinear lookup does not alias the weave.
    tw = int(np.clip(uv.width_px * 1.3, 8, tex.rgb01.shape[1]))
    th = int(np.clip(uv.height_px * 1.3, 4, tex.rgb01.shape[0]))
    rgb = cv2.resize(tex.rgb01, (tw, th), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(tex.alpha, (tw, th), interpolation=cv2.INTER_AREA)
    u = uv.u if rng.random() < 0.5 else 1 - uv.u
    mx, my = np.clip(u, 0, 1) * (tw - 1), np.clip(uv.v, 0, 1) * (th - 1)
    rgb = cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.remap(alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return rgb * rng.uniform(0.92, 1.06), alpha, name


def render_facemask(
    face_rgb_u8: np.ndarray,
    rng: np.random.Generator,
    style: str | None = None,
    *,
    styles: tuple[str, ...] = FACEMASK_STYLES,
    geometry: FaceGeometry | None = None,
    photo_textures: tuple[str, ...] = PHOTO_TEXTURES,
    colour_families: tuple[str, ...] = COLOUR_FAMILIES,
) -> Occlusion:
    """Paints a worn face-mask on an (S, S, 3) uint8 RGB canonical crop.

    ``style`` forces one style; otherwise one of ``styles`` is drawn from ``rng``. ``geometry`` carries
    the face's landmarks in crop pixels (default: the template, i.e. a perfectly aligned face).
    ``colour_families`` restricts the plain colours of surgical/KN95 masks (hold one out for evaluation).
    Returns an :class:`Occlusion` with kind ``"facemask/<style>"``; deterministic given ``rng``'s state.
    """
    s = face_rgb_u8.shape[0]
    if face_rgb_u8.shape != (s, s, 3) or face_rgb_u8.dtype != np.uint8:
        raise ValueError(f"face must be (S, S, 3) uint8 RGB, got {face_rgb_u8.shape} {face_rgb_u8.dtype}")
    for name, chosen, allowed in (
        ("style", styles, FACEMASK_STYLES),
        ("photo texture", photo_textures, PHOTO_TEXTURES),
        ("colour family", colour_families, COLOUR_FAMILIES),
    ):
        bad = [x for x in chosen if x not in allowed]
        if bad or not chosen:
            raise ValueError(f"{name}s must be a non-empty subset of {allowed}, got {chosen}")
    style = style if style is not None else str(rng.choice(styles))
    if style not in FACEMASK_STYLES:
        raise ValueError(f"style must be one of {FACEMASK_STYLES}, got {style!r}")
    geom = geometry or canonical_geometry(s)
    if geom.crop_size != s:
        raise ValueError(f"geometry is for crop size {geom.crop_size}, face is {s}")
    shape = sample_shape(style, geom, rng)
    uv = mask_uv(shape, geom)
    hw = uv.u.shape
    alpha = uv.alpha
    across = 2 * np.clip(uv.u, 0, 1) - 1
    shade = (1 - rng.uniform(0.08, 0.25) * across**2) * (1 + 0.08 * rng.uniform(-1, 1) * across)
    string_colour = np.array([0.93, 0.93, 0.94], np.float32)
    straps = want_valve = False
    if style == "photo":
        base, photo_alpha, photo_name = _photo_layer(uv, rng, photo_textures)
        alpha = alpha * np.clip(photo_alpha * 1.2, 0, 1)
        if photo_name == "black":
            string_colour = np.array([0.12, 0.12, 0.13], np.float32)
    elif style == "cloth":
        base, _ = fabric_pattern(uv.u * uv.width_px, uv.v * uv.height_px, rng, uv.height_px)
        folds = 1 + rng.uniform(0.04, 0.1) * value_noise(hw, 5, rng)
        seam = np.exp(-(((uv.u - 0.5) * uv.width_px / max(0.7, s / 220)) ** 2)) * (rng.random() < 0.6)
        shade = (
            shade
            * folds
            * (1 - 0.25 * seam)
            * _edge_band(uv, s, 0.02, rng)
            * grain(hw, rng, rng.uniform(0.03, 0.07))
        )
        string_colour = base[hw[0] // 2, hw[1] // 2] if rng.random() < 0.5 else random_colour(rng)
    else:
        family = str(rng.choice(colour_families, p=_family_weights(style, colour_families)))
        base = np.broadcast_to(random_colour(rng, family).astype(np.float32), hw + (3,))
        if style == "surgical":
            shade = shade * _pleats(uv, rng, s) * _edge_band(uv, s, 0.035, rng)
            wire = np.clip((0.025 * s - uv.edge_px) / 1.5, 0, 1) * (np.abs(uv.u - 0.5) < 0.2) * (uv.v < 0.2)
            shade = shade * (1 + 0.06 * wire)
            if rng.random() < 0.3:
                string_colour = random_colour(rng, family)
        elif style == "kn95":
            seam_d = (uv.u - 0.5) * uv.width_px
            seam = np.exp(-((seam_d / max(0.7, s / 220)) ** 2))
            panel = np.where(uv.u < 0.5, 1 + rng.uniform(-0.08, 0.08), 1 + rng.uniform(-0.08, 0.08))
            fold = 1 - rng.uniform(0.0, 0.1) * np.clip(np.abs(seam_d) / (0.5 * uv.width_px), 0, 1)
            shade = shade * panel * fold * (1 - 0.3 * seam) * _edge_band(uv, s, 0.03, rng)
        else:  # n95 cup: dome shading, head straps, optional valve
            r2 = across**2 + (2 * np.clip(uv.v, 0, 1) - 1) ** 2
            shade = shade * (1 + 0.12 * (1 - r2) - 0.1 * r2**2) * _edge_band(uv, s, 0.025, rng)
            straps = True
            string_colour = random_colour(rng, str(rng.choice(["white", "blue", "grey", "pink"])))
            want_valve = rng.random() < 0.45
        shade = shade * grain(hw, rng, rng.uniform(0.015, 0.04))
    alpha_full = uv.full(alpha, s)
    light = face_lighting(face_rgb_u8, alpha_full, rng)
    y0, y1, x0, x1 = uv.box
    body = finish(base * shade[..., None] * light[y0:y1, x0:x1], rng, s)
    layers = [Layer(body, alpha, uv.box)]
    if want_valve:
        layers.append(_valve(shape, geom, rng, light))
    if rng.random() < 0.8 or straps:
        for pts, thick in _ear_strings(shape, geom, rng, straps):
            # Strings pass behind the mask body: clear them where the body is opaque.
            string_alpha = draw_polyline_alpha(s, pts, thick) * (1 - np.clip(alpha_full * 2, 0, 1))
            layers.append(Layer.lit(string_alpha, string_colour * rng.uniform(0.85, 1.0), light))
    return composite(face_rgb_u8, layers, kind=f"facemask/{style}")


def _family_weights(style: str, families: tuple[str, ...]) -> np.ndarray:
    prefs = {"blue": 0.45, "white": 0.2, "black": 0.12, "green": 0.08, "pink": 0.08, "grey": 0.07}
    if style == "kn95":
        prefs = {"blue": 0.08, "white": 0.55, "black": 0.15, "green": 0.04, "pink": 0.08, "grey": 0.1}
    w = np.array([prefs.get(f, 0.05) for f in families])
    return w / w.sum()


def _valve(shape: MaskShape, geom: FaceGeometry, rng: np.random.Generator, light: np.ndarray) -> Layer:
    """An exhalation valve: a disc with a rim and slots, below one side of the mouth."""
    s = geom.crop_size
    side = rng.choice([-1.0, 1.0])
    # Inside the body: part-way to one side (foreshortened like the mask) and below the mouth line.
    grow = 1 + shape.yaw_k if side < 0 else 1 - shape.yaw_k
    a = shape.centre + side * rng.uniform(0.3, 0.42) * shape.half_width_bottom * grow
    b = shape.top_centre + (shape.bottom_centre - shape.top_centre) * rng.uniform(0.55, 0.68)
    centre = geom.to_px(a, b)[0]
    radius = geom.eye_distance_px * rng.uniform(0.2, 0.28)
    x0, y0 = np.clip(np.floor(centre - radius - 2).astype(int), 0, s)
    x1, y1 = np.clip(np.ceil(centre + radius + 3).astype(int), 0, s)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dist = np.hypot(xs - centre[0], ys - centre[1])
    alpha = np.clip(radius - dist + 0.5, 0, 1)
    colour = random_colour(rng, str(rng.choice(["white", "grey", "black", "blue"])))
    rim = np.exp(-(((dist - 0.8 * radius) / max(0.8, radius * 0.08)) ** 2))
    slots = (np.sin((ys - centre[1]) * 2 * np.pi / max(2.5, radius / 3)) > 0.6) * (dist < 0.6 * radius)
    shade = (1 - 0.35 * rim - 0.25 * slots) * (1 + 0.15 * (centre[1] - ys) / max(radius, 1))
    rgb = np.clip(colour * shade[..., None] * light[y0:y1, x0:x1], 0, 1).astype(np.float32)
    return Layer(rgb, alpha.astype(np.float32), (int(y0), int(y1), int(x0), int(x1)))
