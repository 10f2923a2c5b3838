"""Renders one synthetic frontal chest X-ray with its findings planted, and where they were planted.

The steps, each drawing from its own random stream so that an image with and without a finding
differ only by that finding's pattern:

  1. pose       a small rotation, scale and shift of the patient (`canvas.Canvas.posed`)
  2. anatomy    the chest's shape (`anatomy.sample_anatomy`), then the findings that change it
  3. chest      body, lung texture (then a pneumothorax), lungs, ribs, clavicles, mediastinum,
                gastric bubble (`anatomy.draw_*`)
  4. findings   every other finding's pattern over the chest (`findings`)
  5. exposure   smooth large-scale variation, grain, contrast, brightness, gamma; 8 bits
  6. size       drawn at min(image_size, render_size), scaled up bilinearly
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

import numpy as np
from PIL import Image

from demo_data import anatomy as anatomy_lib
from demo_data import findings as findings_lib
from demo_data import shapes
from demo_data.canvas import Box, Canvas
from tfrecords import schema

# Images are rendered at most at this size and scaled up bilinearly. The patterns are drawn with
# analytic soft edges a few render pixels wide, so what survives the Beam job's resize to 256 and
# the trainer's 128 is the same either way; `benchmarks/demo_render.py` measures the speed of each
# render size.
RENDER_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Rendering:
    """One rendered image.

    Attributes:
      pixels: uint8 [image_size, image_size].
      boxes: {finding: box in output pixels} of every planted finding that has a box.
    """

    pixels: np.ndarray
    boxes: Mapping[str, Box]


def check_positive(name: str, value: int) -> None:
    """Raises ValueError naming `name` unless `value` is a positive integer (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def image_rng(seed: int, number: int) -> np.random.Generator:
    """The random generator of image `number` (its row in the CSV): independent of worker count."""
    return np.random.default_rng([seed, 1, number])


def render(
    findings: Collection[str], rng: np.random.Generator, image_size: int, *, render_size: int = RENDER_SIZE
) -> Rendering:
    """Renders one image with the given findings planted (see the module docstring and `findings`).

    Args:
      findings: names from `schema.FINDINGS`; empty (or just "No Finding") for a normal image.
      rng: the image's random generator.
      image_size: output height and width in pixels.
      render_size: the image is drawn at min(image_size, render_size) and scaled up bilinearly.

    Returns:
      The pixels and the box of every planted finding whose pattern is local.

    Raises:
      ValueError: an unknown finding, "No Finding" together with a finding, or a non-positive size.
    """
    check_positive("image_size", image_size)
    check_positive("render_size", render_size)
    wanted = _check_findings(findings)
    streams = [np.random.default_rng(s) for s in rng.integers(0, 2**63 - 1, size=2 + len(schema.FINDINGS))]
    base_rng, noise_rng = streams[:2]
    finding_rngs = dict(zip(schema.FINDINGS, streams[2:]))

    size = min(image_size, render_size)
    canvas = Canvas.posed(size, base_rng)
    anatomy = anatomy_lib.sample_anatomy(base_rng)
    boxes: dict[str, Box] = {}
    plant = _planter(wanted, canvas, finding_rngs, anatomy, boxes)
    plant(findings_lib.Stage.ANATOMY)
    anatomy_lib.outline_lungs(canvas, anatomy)
    anatomy_lib.draw_body(canvas, anatomy)
    anatomy_lib.texture_lungs(canvas, anatomy, base_rng)
    plant(findings_lib.Stage.LUNG)
    anatomy_lib.draw_lungs(canvas)
    anatomy_lib.draw_ribs(canvas, anatomy)
    anatomy_lib.draw_clavicles(canvas)
    anatomy_lib.draw_mediastinum(canvas, anatomy)
    anatomy_lib.draw_gastric_bubble(canvas, anatomy, base_rng)
    plant(findings_lib.Stage.OVERLAY)

    pixels = expose(canvas.image, noise_rng)
    if size != image_size:
        pixels = np.asarray(
            Image.fromarray(pixels).resize((image_size, image_size), Image.Resampling.BILINEAR)
        )
    return Rendering(pixels, {name: box.scaled(size, image_size) for name, box in boxes.items()})


def render_image(
    findings: Collection[str], rng: np.random.Generator, image_size: int, *, render_size: int = RENDER_SIZE
) -> np.ndarray:
    """The pixels of `render`: uint8 [image_size, image_size]."""
    return render(findings, rng, image_size, render_size=render_size).pixels


def expose(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure and noise: a smooth large-scale variation, grain, then contrast, brightness, gamma.

    Args:
      image: float32 [size, size], intensities 0..1 (values outside are clipped).
      rng: the exposure's random generator.

    Returns:
      uint8 [size, size].
    """
    image = image + 0.025 * shapes.smooth_noise(rng, image.shape[0], 4)
    image = image + rng.normal(0.0, 0.012, image.shape).astype(np.float32)
    contrast = rng.uniform(0.85, 1.15)
    image = (image - 0.5) * contrast + 0.5 + rng.uniform(-0.05, 0.05)
    image = np.clip(image, 0.0, 1.0) ** rng.uniform(0.85, 1.15)
    return (image * 255.0 + 0.5).astype(np.uint8)


def _check_findings(findings: Collection[str]) -> set[str]:
    wanted = set(findings)
    unknown = wanted - set(schema.LABELS)
    if unknown:
        raise ValueError(f"Unknown finding(s) {sorted(unknown)}; known: {', '.join(schema.FINDINGS)}.")
    if schema.NO_FINDING in wanted and len(wanted) > 1:
        raise ValueError(f"'No Finding' cannot be combined with findings, got {sorted(wanted)}.")
    wanted.discard(schema.NO_FINDING)
    return wanted


def _planter(wanted, canvas, finding_rngs, anatomy, boxes):
    """A function painting the wanted findings of one stage and recording their boxes."""

    def plant(stage: findings_lib.Stage) -> None:
        for finding in findings_lib.painters(stage):
            if finding.name in wanted:
                box = finding.paint(canvas, finding_rngs[finding.name], anatomy)
                if box is not None:
                    boxes[finding.name] = box

    return plant
