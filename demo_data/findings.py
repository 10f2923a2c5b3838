"""How each of the 14 findings is drawn: one painting function per finding, in a registry.

A painter has the signature `paint(canvas, rng, anatomy) -> Box | None`. It draws its finding's
pattern with its own random generator (so an image with and without the finding differ only by the
pattern) and returns the box, in render pixels, of the pixels it changed (None where the finding is
diffuse). Painters run in three stages of the renderer (`Stage`), and within a stage in the order
they are registered in this module: later patterns lie over earlier ones, so the order is part of
the output's bytes.

  Atelectasis         dense triangular wedge with straight edges: upper lobe collapse against the
                      upper mediastinum, or lower lobe collapse on the diaphragm
  Cardiomegaly        heart silhouette 1.4-1.7x wider and 1.1-1.25x taller
  Consolidation       large homogeneous opacity against the chest wall, with dark branching air
                      bronchograms
  Edema               bilateral, symmetric perihilar "bat wing" haze, Kerley B lines at the lateral
                      bases
  Effusion            fluid at the bottom of a hemithorax with a meniscus rising laterally, blunting
                      the costophrenic angle (one or both sides)
  Emphysema           hyperinflated lungs: darker, taller, flat low diaphragm, few markings, narrow
                      heart
  Fibrosis            coarse reticular mesh in the peripheral lower zones of both lungs
  Hernia              round retrocardiac bubble with an air-fluid level, above the diaphragm
  Infiltration        a cluster of 4-8 fuzzy, ill-defined patches
  Mass                one large (radius 5.5-8.5% of the width), lobulated, sharp round opacity
  Nodule              1-3 small (radius 1.7-2.6%), bright, sharp round opacities
  Pleural_Thickening  bright band along the lateral chest wall and apex, inside the lung edge
  Pneumonia           opacity with a sharp straight upper border (a fissure) fading downwards
  Pneumothorax        black rim at the apex and lateral wall without lung markings, bounded by the
                      collapsed lung's bright edge
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable

import numpy as np

from demo_data import anatomy as anatomy_lib
from demo_data import shapes
from demo_data.anatomy import Anatomy
from demo_data.canvas import BOX_THRESHOLD, Box, Canvas

Painter = Callable[[Canvas, np.random.Generator, Anatomy], Box | None]


class Stage(enum.Enum):
    """When a painter runs."""

    ANATOMY = "anatomy"  # Changes the anatomy before anything is drawn.
    LUNG = "lung"  # Changes the lung texture before the lungs are composited into the image.
    OVERLAY = "overlay"  # Draws over the finished normal chest.


@dataclasses.dataclass(frozen=True)
class Finding:
    """A registered finding: its name, when it is painted, and its painter."""

    name: str
    stage: Stage
    paint: Painter


_REGISTRY: dict[str, Finding] = {}


def register(name: str, *, stage: Stage = Stage.OVERLAY) -> Callable[[Painter], Painter]:
    """Registers the decorated function as the painter of finding `name`.

    Raises:
      ValueError: `name` already has a painter.
    """

    def decorator(paint: Painter) -> Painter:
        if name in _REGISTRY:
            raise ValueError(f"Finding {name!r} already has a painter: {_REGISTRY[name].paint.__name__}.")
        _REGISTRY[name] = Finding(name, stage, paint)
        return paint

    return decorator


def registered() -> tuple[str, ...]:
    """The names of the findings with a painter, in drawing order."""
    return tuple(_REGISTRY)


def painters(stage: Stage) -> tuple[Finding, ...]:
    """The findings painted in `stage`, in drawing order."""
    return tuple(f for f in _REGISTRY.values() if f.stage is stage)


# ---------------------------------------------------------------------------------------------
# Anatomy stage.


@register("Emphysema", stage=Stage.ANATOMY)
def paint_emphysema(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """Hyperinflation: a lower, flatter diaphragm, taller and darker lungs, a narrower heart."""
    del canvas  # The whole chest changes; there is no box.
    low = rng.uniform(0.04, 0.06)
    anatomy.bottom = [b + low for b in anatomy.bottom]
    anatomy.dome = [d * 0.25 for d in anatomy.dome]
    anatomy.top -= 0.02
    anatomy.lung_value -= rng.uniform(0.09, 0.12)
    anatomy.markings *= 0.25
    anatomy.heart_scale = (anatomy.heart_scale[0] * 0.85, anatomy.heart_scale[1])
    return None


@register("Cardiomegaly", stage=Stage.ANATOMY)
def paint_cardiomegaly(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """A wider, taller heart; the box holds both silhouettes, as the image without it has the other."""
    normal = anatomy_lib.heart(canvas.x, canvas.y, anatomy)
    anatomy.heart_scale = (rng.uniform(1.4, 1.7), rng.uniform(1.1, 1.25))
    anatomy.heart_shift = rng.uniform(0.0, 0.03)
    enlarged = anatomy_lib.heart(canvas.x, canvas.y, anatomy)
    return canvas.box_where(np.abs(enlarged - normal) > BOX_THRESHOLD)


# ---------------------------------------------------------------------------------------------
# Lung stage.


@register("Pneumothorax", stage=Stage.LUNG)
def paint_pneumothorax(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """Free air between the chest wall and the collapsed lung, whose edge shows as a bright line."""
    side = anatomy_lib.pick_side(rng)
    t, y, lung = canvas.t_of[side], canvas.y, canvas.lungs[side]
    shrink = rng.uniform(0.5, 0.7)
    cx, cy = 0.08, 0.72  # The lung collapses towards its base and the hilum.
    collapsed = anatomy_lib.lung_field(
        cx + (t - cx) / shrink, cy + (y - cy) / shrink, anatomy, side, edge=0.005
    )
    canvas.air = lung * (1.0 - collapsed)
    edge = 4.0 * collapsed * (1.0 - collapsed)
    canvas.lung_texture = shapes.lerp(canvas.lung_texture, 0.04, canvas.air)
    canvas.lung_texture = canvas.lung_texture + 0.45 * edge * lung
    # The air darkens the lung and dims the ribs over it; the edge brightens it.
    return canvas.box_where(np.maximum(canvas.air, edge * lung) > BOX_THRESHOLD)


# ---------------------------------------------------------------------------------------------
# Overlay stage, in drawing order.


@register("Fibrosis")
def paint_fibrosis(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """A coarse, warped reticular mesh in the peripheral lower zones of both lungs."""
    del anatomy
    x, y, image = canvas.x, canvas.y, canvas.image
    period = rng.uniform(0.038, 0.05)
    angle = rng.uniform(0.0, math.pi / 2)
    warp = 0.45 * period * shapes.smooth_noise(rng, canvas.size, 12)
    u = (math.cos(angle) * x + math.sin(angle) * y + warp) / period
    v = (-math.sin(angle) * x + math.cos(angle) * y - warp) / period
    mesh = np.maximum(np.abs(np.cos(math.pi * u)), np.abs(np.cos(math.pi * v))) ** 4
    for side in anatomy_lib.SIDES:
        t = canvas.t_of[side]
        zone = canvas.lungs[side] * shapes.ramp(y - rng.uniform(0.4, 0.48), 0.1) * shapes.ramp(t - 0.17, 0.08)
        image = image + zone * (rng.uniform(0.17, 0.25) * mesh + 0.05)
    return _commit(canvas, image)


@register("Edema")
def paint_edema(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """Perihilar "bat wing" haze in both lungs and Kerley B lines at the lateral bases."""
    y, image = canvas.y, canvas.image
    hilum_t, hilum_y = anatomy_lib.HILUM
    strength = rng.uniform(0.24, 0.32)
    sx, sy = rng.uniform(0.1, 0.13), rng.uniform(0.11, 0.15)
    for side in anatomy_lib.SIDES:
        t, lung = canvas.t_of[side], canvas.lungs[side]
        haze = np.exp(-(((t - hilum_t - 0.03) / sx) ** 2) - ((y - hilum_y - 0.02) / sy) ** 2)
        image = image + strength * haze * lung * shapes.ramp(t - 0.1, 0.06)
        for _ in range(rng.integers(3, 6)):
            ly = rng.uniform(0.56, 0.68)
            lx = anatomy.lateral - 0.45 * (ly - 0.6) ** 2 - 0.005
            line = shapes.segment(t, y, (lx - rng.uniform(0.035, 0.05), ly), (lx, ly), 0.004)
            image = image + 0.12 * line * lung
    return _commit(canvas, image)


@register("Infiltration")
def paint_infiltration(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """A cluster of 4-8 fuzzy patches in one lung, or one in each."""
    del anatomy
    x, y, image = canvas.x, canvas.y, canvas.image
    for side in anatomy_lib.sides(rng, bilateral=0.3):
        cx, cy = anatomy_lib.random_lung_point(rng, side, margin=0.03)
        patches = np.zeros_like(x)
        for _ in range(rng.integers(4, 9)):
            px, py = cx + rng.normal(0.0, 0.06), cy + rng.normal(0.0, 0.07)
            sigma = rng.uniform(0.022, 0.036)
            patches += np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma * sigma))
        patches *= 0.7 + 0.3 * shapes.smooth_noise(rng, canvas.size, 24)
        image = image + rng.uniform(0.24, 0.32) * np.clip(patches, 0.0, 1.2) * canvas.lungs[side]
    return _commit(canvas, image)


@register("Pneumonia")
def paint_pneumonia(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """An opacity below a sharp straight border (a fissure), fading downwards."""
    del anatomy
    y = canvas.y
    side = anatomy_lib.pick_side(rng)
    t = canvas.t_of[side]
    fissure = rng.uniform(0.36, 0.48) + 0.04 * (t - 0.2)
    fade = rng.uniform(0.14, 0.2)
    below = np.clip(y - fissure, 0.0, None)
    opacity = rng.uniform(0.8, 0.95) * shapes.ramp(y - fissure, 0.006) * np.exp(-below / fade)
    opacity *= 0.75 + 0.25 * shapes.smooth_noise(rng, canvas.size, 32)
    image = shapes.lerp(canvas.image, 0.76, np.clip(opacity, 0.0, 1.0) * canvas.lungs[side])
    return _commit(canvas, image)


@register("Consolidation")
def paint_consolidation(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """A large homogeneous opacity against the chest wall, with dark branching air bronchograms."""
    y = canvas.y
    side = anatomy_lib.pick_side(rng)
    t = canvas.t_of[side]
    a, b = rng.uniform(0.12, 0.16), rng.uniform(0.1, 0.13)
    ct, cy = anatomy.lateral - rng.uniform(0.03, 0.07), rng.uniform(0.38, 0.55)
    rho = np.sqrt(((t - ct) / a) ** 2 + ((y - cy) / b) ** 2) + 0.12 * shapes.smooth_noise(rng, canvas.size, 8)
    region = shapes.ramp((1.0 - rho) * b, 0.012) * canvas.lungs[side]
    image = shapes.lerp(canvas.image, 0.76, rng.uniform(0.85, 0.95) * region)
    bronchi = np.zeros_like(canvas.x)
    for _ in range(rng.integers(2, 4)):
        start = (ct - 0.8 * a, cy + rng.uniform(-0.4, 0.4) * b)
        direction = rng.uniform(-0.6, 0.6)
        end = (start[0] + 1.2 * a * math.cos(direction), start[1] + 1.2 * a * math.sin(direction))
        bronchi = np.maximum(bronchi, shapes.segment(t, y, start, end, 0.006))
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        branch = direction + rng.choice([-0.7, 0.7])
        tip = (mid[0] + 0.5 * a * math.cos(branch), mid[1] + 0.5 * a * math.sin(branch))
        bronchi = np.maximum(bronchi, shapes.segment(t, y, mid, tip, 0.005))
    image = image - 0.16 * bronchi * region
    return _commit(canvas, image)


@register("Atelectasis")
def paint_atelectasis(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """A dense wedge with straight edges: a collapsed upper or lower lobe."""
    y = canvas.y
    side = anatomy_lib.pick_side(rng)
    t = canvas.t_of[side]
    if rng.random() < 0.5:  # Upper lobe collapse: a wedge against the upper mediastinum.
        tip = (rng.uniform(0.2, 0.3), rng.uniform(0.22, 0.32))
        wedge = shapes.triangle(t, y, (0.06, 0.44), (0.06, anatomy.top + 0.02), tip)
    else:  # Lower lobe collapse: a wedge on the diaphragm, lateral to the heart.
        base = float(anatomy_lib.diaphragm(np.float32(0.22), anatomy, side)) + 0.01
        apex = (rng.uniform(0.12, 0.16), rng.uniform(0.44, 0.5))
        wedge = shapes.triangle(t, y, apex, (0.12, base), (rng.uniform(0.28, 0.33), base))
    alpha = rng.uniform(0.8, 0.95) * wedge * np.maximum(canvas.lungs[side], 0.3)
    return _commit(canvas, shapes.lerp(canvas.image, 0.74, alpha))


@register("Effusion")
def paint_effusion(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """Fluid at the bottom of one or both hemithoraces, its meniscus climbing the lateral wall."""
    y, image = canvas.y, canvas.image
    for side in anatomy_lib.sides(rng, bilateral=0.3):
        t = canvas.t_of[side]
        k = 0 if side < 0 else 1
        height = rng.uniform(0.12, 0.25)
        across = np.clip((t - 0.06) / 0.33, 0.0, 1.0)
        level = anatomy.bottom[k] + 0.01 - height * (0.35 + 0.65 * across**2)
        hemithorax = shapes.ramp(t - 0.06, 0.01) * shapes.ramp(anatomy.lateral + 0.01 - t, 0.01)
        fluid = shapes.ramp(y - level, 0.012) * hemithorax
        image = shapes.lerp(image, 0.78, rng.uniform(0.9, 1.0) * fluid)
    return _commit(canvas, image)


@register("Pleural_Thickening")
def paint_pleural_thickening(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """Lumpy plaques along the lateral chest wall and apex, inside the lung's edge."""
    y, image = canvas.y, canvas.image
    for side in anatomy_lib.sides(rng, bilateral=0.4):
        t = canvas.t_of[side]
        thickness = rng.uniform(0.022, 0.034) * (1.0 + 0.4 * shapes.smooth_noise(rng, canvas.size, 10))
        rim = canvas.lungs[side] - anatomy_lib.lung_field(t, y, anatomy, side, inset=thickness)
        rim = np.clip(rim, 0.0, 1.0) * shapes.ramp(0.64 - y, 0.08)
        image = shapes.lerp(image, 0.86, 0.95 * rim)
    return _commit(canvas, image)


@register("Mass")
def paint_mass(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """One large, lobulated, sharp round opacity in the upper and lateral lung."""
    del anatomy
    x, y = canvas.x, canvas.y
    side = anatomy_lib.pick_side(rng)
    radius = rng.uniform(0.055, 0.085)
    # Clear of the heart, whose silhouette it would merge with.
    cx, cy = 0.5 + side * rng.uniform(0.2, 0.27), rng.uniform(0.24 + radius * 0.5, 0.5)
    theta = np.arctan2(y - cy, x - cx)
    bumps = (
        1.0 + 0.08 * np.cos(3 * theta + rng.uniform(0, 6.3)) + 0.05 * np.cos(5 * theta + rng.uniform(0, 6.3))
    )
    distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    alpha = rng.uniform(0.8, 0.95) * shapes.ramp(radius * bumps - distance, 0.008)
    return _commit(canvas, shapes.lerp(canvas.image, 0.86, alpha))


@register("Nodule")
def paint_nodule(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """1-3 small, bright, sharp round opacities anywhere in the lungs; the box holds them all."""
    del anatomy
    x, y, image = canvas.x, canvas.y, canvas.image
    for _ in range(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1])):
        cx, cy = anatomy_lib.random_lung_point(rng, anatomy_lib.pick_side(rng))
        radius = rng.uniform(0.017, 0.026)
        nodule = shapes.ramp(radius - np.sqrt((x - cx) ** 2 + (y - cy) ** 2), 0.006)
        image = shapes.lerp(image, 0.86, rng.uniform(0.75, 1.0) * nodule)
    return _commit(canvas, image)


@register("Hernia")
def paint_hernia(canvas: Canvas, rng: np.random.Generator, anatomy: Anatomy) -> Box | None:
    """A round retrocardiac bubble above the diaphragm: air over fluid, with a bright wall."""
    x, y = canvas.x, canvas.y
    radius = rng.uniform(0.06, 0.08)
    cx = 0.5 + rng.uniform(-0.03, 0.04)
    cy = float(min(anatomy.bottom)) - radius - rng.uniform(0.0, 0.04)
    distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    sac = shapes.ramp(radius - distance, 0.006)
    level = cy + rng.uniform(-0.2, 0.3) * radius
    image = shapes.lerp(canvas.image, 0.12, 0.9 * sac * shapes.ramp(level - y, 0.004))
    image = shapes.lerp(image, 0.8, 0.6 * sac * shapes.ramp(y - level, 0.004))
    image = image + 0.15 * (shapes.ramp(radius + 0.006 - distance, 0.006) - sac)
    return _commit(canvas, image)


def _commit(canvas: Canvas, image: np.ndarray) -> Box | None:
    """Replaces the canvas' image with `image` and returns the box of what changed."""
    before, canvas.image = canvas.image, image
    return canvas.changed_box(before)
