"""Soft-edged shapes and smooth noise on the canonical [0, 1] x [0, 1] grid of a demo image.

Every shape returns an opacity in [0, 1] per pixel with a linear edge a few pixels wide, so that a
pattern keeps its shape when the image is resized. Coordinates are float32 arrays of one value per
pixel (see `canvas.Canvas`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image


def ramp(d: np.ndarray | float, width: float) -> np.ndarray:
    """A soft step: 0 for d <= -width/2, 1 for d >= width/2, linear between (cheaper than a sigmoid)."""
    return np.clip(0.5 + np.asarray(d, np.float32) / width, 0.0, 1.0)


def lerp(image: np.ndarray, target: float | np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composites `target` over `image` with opacity `alpha`."""
    return image + (target - image) * alpha


def ellipse(x, y, cx, cy, a, b, *, angle=0.0, edge=0.006):
    """Soft-edged filled ellipse with semi-axes a, b, rotated by angle (radians)."""
    dx, dy = x - cx, y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    rho = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    return ramp((1.0 - rho) * min(a, b), edge)


def segment(x, y, p0, p1, half_width, *, edge=0.004):
    """Soft-edged band of half_width around the segment p0-p1."""
    (x0, y0), (x1, y1) = p0, p1
    vx, vy = x1 - x0, y1 - y0
    h = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy + 1e-12), 0.0, 1.0)
    distance = np.sqrt((x - x0 - h * vx) ** 2 + (y - y0 - h * vy) ** 2)
    return ramp(half_width - distance, edge)


def triangle(x, y, p0, p1, p2, *, edge=0.004):
    """Soft-edged filled triangle."""
    points = (p0, p1, p2)
    # Orientation, so that "inside" is the positive side of every edge.
    area = (p1[0] - p0[0]) * (p2[1] - p0[1]) - (p1[1] - p0[1]) * (p2[0] - p0[0])
    sign = 1.0 if area > 0 else -1.0
    inside = None
    for k in range(3):
        (ax, ay), (bx, by) = points[k], points[(k + 1) % 3]
        length = math.hypot(bx - ax, by - ay) + 1e-12
        distance = sign * ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / length
        step = ramp(distance, edge)
        inside = step if inside is None else np.minimum(inside, step)
    return inside


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1]: `cells` x `cells` normals upscaled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(field, np.float32) * 0.5


@functools.lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of every pixel's centre in [0, 1], each float32 [size, size]."""
    centers = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(centers, centers)
