"""The normal chest: per-image anatomy and the background layers every demo image is drawn on.

`sample_anatomy` draws the shape of one patient's chest; some findings change it before anything is
drawn (a bigger heart, a low flat diaphragm). The `draw_*` functions then paint the layers in order
onto a `canvas.Canvas`: body and abdomen, lung texture and vessels, lungs, ribs, clavicles,
mediastinum with heart and spine, gastric bubble. Geometry helpers (`diaphragm`, `lung_field`,
`heart`, `random_lung_point`) are shared with the findings' painters.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from demo_data import shapes
from demo_data.canvas import Canvas

# Intensities (0 black .. 1 white) of the anatomy before exposure and noise.
AIR = 0.04
SOFT_TISSUE = 0.60
LUNG = 0.27
HILUM = (0.10, 0.44)  # (t, y) of the lung hilum, t = distance from the midline.
SIDES = (-1, 1)


@dataclasses.dataclass
class Anatomy:
    """Per-image anatomy; findings of the anatomy stage change it before drawing (e.g. a bigger heart)."""

    top: float  # Lung apex height.
    bottom: list[float]  # Costophrenic angle height, per side (image left, image right).
    dome: list[float]  # Diaphragm dome height above the angle, per side.
    lateral: float  # Lung half-width from the midline.
    lung_value: float  # Lung brightness.
    markings: float  # Strength of the vascular markings.
    heart_scale: tuple[float, float]  # (width, height) factors of the heart silhouette.
    heart_shift: float
    rib_phase: float
    rib_period: float
    gastric_bubble: bool


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draws one patient's chest shape from `rng`."""
    bottom = rng.uniform(0.72, 0.76)
    return Anatomy(
        top=rng.uniform(0.12, 0.15),
        bottom=[bottom, bottom + rng.uniform(0.0, 0.025)],
        dome=[rng.uniform(0.045, 0.07), rng.uniform(0.04, 0.065)],
        lateral=rng.uniform(0.37, 0.40),
        lung_value=LUNG + rng.uniform(-0.03, 0.03),
        markings=rng.uniform(0.75, 1.0),
        heart_scale=(rng.uniform(0.92, 1.06), rng.uniform(0.95, 1.05)),
        heart_shift=rng.uniform(-0.015, 0.015),
        rib_phase=rng.uniform(0.0, 1.0),
        rib_period=rng.uniform(0.064, 0.074),
        gastric_bubble=bool(rng.random() < 0.6),
    )


# ---------------------------------------------------------------------------------------------
# Geometry.


def diaphragm(t, anatomy: Anatomy, side: int):
    """Height of one hemidiaphragm at distance t from the midline: a dome, lowest at the angle."""
    k = 0 if side < 0 else 1
    across = np.clip((t - 0.22) / 0.2, -1.0, 1.0)
    return anatomy.bottom[k] - anatomy.dome[k] * (1.0 - across * across)


def lung_field(t, y, anatomy: Anatomy, side: int, *, inset: float = 0.0, edge: float = 0.008):
    """Soft mask of one lung in side coordinates (t from the midline); `inset` shrinks it."""
    apex = anatomy.top + inset + 2.4 * (t - 0.2) ** 2
    lateral_wall = anatomy.lateral - inset - 0.45 * (y - 0.6) ** 2
    mask = shapes.ramp(y - apex, edge)
    mask = np.minimum(mask, shapes.ramp(lateral_wall - t, edge))
    mask = np.minimum(mask, shapes.ramp(t - 0.065 - 0.3 * inset, edge))
    return np.minimum(mask, shapes.ramp(diaphragm(t, anatomy, side) - inset - y, edge))


def heart(x, y, anatomy: Anatomy):
    """The cardiac silhouette: left ventricle (image right) and right atrium, scaled from its top."""
    sx, sy = anatomy.heart_scale
    hx = 0.5 + (x - 0.5 - anatomy.heart_shift) / sx
    hy = 0.46 + (y - 0.46) / sy
    ventricle = shapes.ellipse(hx, hy, 0.545, 0.6, 0.15, 0.115, angle=-0.35, edge=0.012)
    atrium = shapes.ellipse(hx, hy, 0.455, 0.585, 0.065, 0.09, edge=0.012)
    return np.maximum(ventricle, atrium)


def random_lung_point(rng: np.random.Generator, side: int, *, margin: float = 0.0) -> tuple[float, float]:
    """A point well inside one lung (clear of the heart), in image coordinates."""
    t = rng.uniform(0.15 + margin * 0.5, 0.31 - margin)
    y = rng.uniform(0.26 + margin, 0.6 - margin * 0.5)
    return 0.5 + side * t, y


def pick_side(rng: np.random.Generator) -> int:
    """-1 or 1 with equal chance."""
    return -1 if rng.random() < 0.5 else 1


def sides(rng: np.random.Generator, bilateral: float) -> tuple[int, ...]:
    """Both sides with probability `bilateral`, else one side at random."""
    return SIDES if rng.random() < bilateral else (pick_side(rng),)


# ---------------------------------------------------------------------------------------------
# Background layers, in drawing order.


def outline_lungs(canvas: Canvas, anatomy: Anatomy) -> None:
    """Sets the canvas' side coordinates and lung masks from the (final) anatomy."""
    x, y = canvas.x, canvas.y
    canvas.t_of = {-1: (0.5 - x), 1: (x - 0.5)}
    canvas.lungs = {side: lung_field(canvas.t_of[side], y, anatomy, side) for side in SIDES}
    canvas.lung = np.maximum(canvas.lungs[-1], canvas.lungs[1])
    canvas.t_abs = np.abs(x - 0.5)
    canvas.air = np.zeros_like(x)


def draw_body(canvas: Canvas, anatomy: Anatomy) -> None:
    """Starts the image: neck and shoulders at the top, soft tissue thicker towards the sides."""
    x, y, t_of, t_abs = canvas.x, canvas.y, canvas.t_of, canvas.t_abs
    half_width = 0.47 - 0.3 * np.clip((0.16 - y) / 0.16, 0.0, 1.0) ** 2
    body = shapes.ramp(half_width - t_abs, 0.04)
    image = AIR + (SOFT_TISSUE - AIR) * body
    image += 0.07 * body * np.clip((t_abs - 0.32) / 0.12, 0.0, 1.0)
    # Abdomen below the diaphragm is brighter than the chest.
    floor = np.where(x < 0.5, diaphragm(t_of[-1], anatomy, -1), diaphragm(t_of[1], anatomy, 1))
    canvas.image = shapes.lerp(image, 0.74, 0.85 * body * shapes.ramp(y - floor, 0.015))


def texture_lungs(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """Sets the lung texture: darker in the middle and lower zones, vessels radiating from the hila."""
    y, size = canvas.y, canvas.size
    texture = anatomy.lung_value + 0.05 * np.clip(0.35 - y, 0.0, None) / 0.2
    texture = texture + 0.03 * shapes.smooth_noise(rng, size, 6)
    markings = np.zeros_like(canvas.x)
    for side in SIDES:
        t = canvas.t_of[side]
        theta = np.arctan2(y - HILUM[1], t - HILUM[0])
        radius = np.sqrt((t - HILUM[0]) ** 2 + (y - HILUM[1]) ** 2)
        angles = np.linspace(-math.pi, math.pi, 121)
        profile = np.interp(theta, angles, rng.uniform(0.0, 1.0, 121)).astype(np.float32)
        vessels = np.clip((profile - 0.6) * 4.0, 0.0, 1.0) * np.exp(-radius / 0.16)
        markings += vessels * (t > 0) + 0.6 * np.exp(-((radius / 0.035) ** 2))
    markings *= 0.6 + 0.4 * shapes.smooth_noise(rng, size, 16)
    canvas.lung_texture = texture + 0.13 * anatomy.markings * markings


def draw_lungs(canvas: Canvas) -> None:
    """Composites the lung texture into the image."""
    canvas.image = shapes.lerp(canvas.image, canvas.lung_texture, canvas.lung)


def draw_ribs(canvas: Canvas, anatomy: Anatomy) -> None:
    """Ribs over each hemithorax: posterior arcs (convex upwards, falling laterally) and fainter
    anterior ribs sloping the other way; spacing grows downwards."""
    y, image = canvas.y, canvas.image
    warped_y = y - 0.25 * (y - 0.1) ** 2
    for side in SIDES:
        t = canvas.t_of[side]
        cage = shapes.ramp(t - 0.045, 0.02) * shapes.ramp(anatomy.lateral + 0.045 - t, 0.03)
        cage *= shapes.ramp(y - 0.1, 0.03) * shapes.ramp(diaphragm(t, anatomy, side) + 0.04 - y, 0.04)
        # Ribs show less over a pneumothorax's air, which is otherwise featureless.
        weight = cage * (0.45 + 0.55 * canvas.lung) * (1.0 - 0.6 * canvas.air)
        posterior = (warped_y - 1.5 * np.clip(t - 0.12, 0.0, None) ** 2 + 0.1 * t) / anatomy.rib_period
        frac = posterior + anatomy.rib_phase - np.floor(posterior + anatomy.rib_phase)
        image += 0.085 * weight * np.clip(1.0 - np.abs(frac - 0.5) / 0.23, 0.0, 1.0) ** 0.5
        anterior = (warped_y + 0.4 * t) / (anatomy.rib_period * 1.2)
        frac = anterior - np.floor(anterior)
        image += 0.035 * weight * np.clip(1.0 - np.abs(frac - 0.5) / 0.2, 0.0, 1.0)


def draw_clavicles(canvas: Canvas) -> None:
    """Both clavicles, from the sternum up and out to the shoulders."""
    for side in SIDES:
        clavicle = shapes.segment(
            canvas.x, canvas.y, (0.5 + side * 0.06, 0.175), (0.5 + side * 0.32, 0.105), 0.015, edge=0.012
        )
        canvas.image = shapes.lerp(canvas.image, 0.8, 0.75 * clavicle)


def draw_mediastinum(canvas: Canvas, anatomy: Anatomy) -> None:
    """The mediastinum with the trachea, aortic knob, heart and spine."""
    x, y, t_abs = canvas.x, canvas.y, canvas.t_abs
    mediastinum = shapes.ramp(0.065 + 0.03 * np.clip((y - 0.3) / 0.2, 0.0, 1.0) - t_abs, 0.025) * shapes.ramp(
        0.72 - y, 0.05
    )
    image = shapes.lerp(canvas.image, 0.72, mediastinum)
    trachea = shapes.ramp(0.014 - np.abs(x - 0.5 + 0.004 * (y - 0.2) / 0.1), 0.01) * shapes.ramp(
        0.36 - y, 0.04
    )
    image -= 0.1 * trachea
    image = shapes.lerp(image, 0.74, shapes.ellipse(x, y, 0.555, 0.31, 0.038, 0.034, edge=0.012))
    image = shapes.lerp(image, 0.75, heart(x, y, anatomy))
    vertebrae = 0.8 + 0.2 * np.cos(2 * math.pi * y / 0.045)
    image += 0.06 * shapes.ramp(0.033 - t_abs, 0.012) * vertebrae
    canvas.image = image


def draw_gastric_bubble(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> None:
    """The stomach's air under the image-right hemidiaphragm, in some patients."""
    if not anatomy.gastric_bubble:
        return
    gx = 0.5 + rng.uniform(0.12, 0.2)
    gy = float(diaphragm(np.float32(gx - 0.5), anatomy, 1)) + rng.uniform(0.035, 0.05)
    # Fainter and flatter than a hiatal hernia's air, which it would otherwise resemble.
    bubble = shapes.ellipse(canvas.x, canvas.y, gx, gy, rng.uniform(0.03, 0.045), 0.017)
    canvas.image = shapes.lerp(canvas.image, 0.5, 0.5 * bubble)
