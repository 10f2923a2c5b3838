"""The image being drawn, its coordinate frames, and the boxes of what was drawn on it.

Canonical coordinates: x (left to right) and y (top to bottom) in [0, 1] over the image. The image's
left is the patient's right, as on every PA chest film. For one side of the chest, t = |x - 0.5| is
the distance from the midline; side -1 is the image's left half, +1 its right.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from demo_data import shapes

# A finding's box encloses every pixel its pattern changed by more than this (on the 0..1 scale
# before exposure, about 2.5 grey levels): the soft edges and the faint tails of the patterns are
# inside, what no eye could see is not.
BOX_THRESHOLD = 0.01


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels: columns [x0, x1), rows [y0, y1)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def scaled(self, size: int, image_size: int) -> Box:
        """This box on a `size` render, moved to the render scaled bilinearly to `image_size`.

        A bilinear upscale blends each output pixel from the two nearest render pixels per axis, so
        a render pixel reaches output pixels whose centres lie within one render pixel of its
        centre; the box grows by that reach and is rounded outwards to whole output pixels.

        Args:
          size: the render's height and width.
          image_size: the output's height and width, >= size.

        Returns:
          The box in output pixels, clipped to the image.
        """
        if size == image_size:
            return self
        scale = image_size / size
        return Box(
            max(0, math.floor((self.x0 - 0.5) * scale)),
            max(0, math.floor((self.y0 - 0.5) * scale)),
            min(image_size, math.ceil((self.x1 + 0.5) * scale)),
            min(image_size, math.ceil((self.y1 + 0.5) * scale)),
        )


@dataclasses.dataclass
class Canvas:
    """One image while it is drawn: coordinates, the masks every layer needs, and the pixels.

    Filled in the order the renderer draws: the posed coordinates first, then the lungs (once the
    anatomy is final), then the image itself.

    Attributes:
      size: height and width in render pixels.
      x, y: canonical coordinates of every pixel, float32 [size, size] (the pose applied).
      t_of: {side: distance from the midline on that side}; negative on the other side.
      t_abs: |x - 0.5|.
      lungs: {side: soft mask of that lung}.
      lung: soft mask of both lungs.
      image: the intensities (0 black .. 1 white), float32 [size, size].
      lung_texture: the lungs' own intensities before they are composited into `image`.
      air: where the lung is replaced by free air (a pneumothorax), which hides the ribs partly.
    """

    size: int
    x: np.ndarray
    y: np.ndarray
    t_of: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    t_abs: np.ndarray | None = None
    lungs: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    lung: np.ndarray | None = None
    image: np.ndarray | None = None
    lung_texture: np.ndarray | None = None
    air: np.ndarray | None = None

    @classmethod
    def posed(cls, size: int, rng: np.random.Generator) -> Canvas:
        """A canvas whose coordinates carry the patient's pose, drawn from `rng`.

        A small rotation, scale and shift map the pixels to canonical coordinates, so every
        structure drawn afterwards moves together.
        """
        px, py = shapes.pixel_grid(size)
        angle = rng.uniform(-0.05, 0.05)
        scale = rng.uniform(0.93, 1.05)
        shift_x, shift_y = rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03)
        c, s = math.cos(angle) / scale, math.sin(angle) / scale
        dx, dy = px - 0.5 - shift_x, py - 0.5 - shift_y
        x = (0.5 + c * dx + s * dy).astype(np.float32)
        y = (0.5 - s * dx + c * dy).astype(np.float32)
        return cls(size=size, x=x, y=y)

    def box_where(self, mask: np.ndarray) -> Box | None:
        """The smallest box holding every True pixel of `mask`, or None when there is none."""
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return None
        columns = np.flatnonzero(mask.any(axis=0))
        return Box(int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)

    def changed_box(self, before: np.ndarray) -> Box | None:
        """The box of the pixels where `image` differs from `before` by more than `BOX_THRESHOLD`."""
        return self.box_where(np.abs(self.image - before) > BOX_THRESHOLD)
