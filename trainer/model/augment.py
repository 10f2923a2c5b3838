"""Batch augmentation that compiles under XLA, and per-image standardization.

The 2023 thesis augmented with Keras 2's `ImageDataGenerator` (rotation +-3 deg, width
shift +-10%, height shift +-5%, zoom 0.85-1.15, horizontal flip, reflect fill), one image at
a time on the CPU, then centred and scaled each image by its own mean and standard deviation.
Here the same augmentation works on whole batches, one affine matrix per image, so it can
run inside the compiled training step on the device that trains (`RandomAffine`, a Keras
layer active only when training, so the exported model never augments), or as a `tf.data`
map after batching (`make_augment_fn`, applied by `trainer.training.inputs.augment_batches`).

`tf.raw_ops.ImageProjectiveTransformV3` (behind `tf.image` transforms and Keras'
RandomRotation/RandomZoom/RandomTranslation) has no XLA kernel in TF 2.21, so
`transform_images` re-implements its sampling from XLA-friendly ops: a coordinate grid, the
kernel's reflect indexing, and a gather with bilinear weights. It takes the kernel's
8-number transforms and matches its output (tests/augment_test.py compares both).

Randomness is stateless: the same seed gives the same batch, on any device.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

FILL_MODES = ("reflect", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")
# Standard deviations below this (on the [0, 1] scale, a quarter of one gray level) carry no
# signal; dividing by them would only amplify rounding noise, so a constant image maps to 0.
STANDARDIZE_EPSILON = 1e-3
# Column order of the per-image parameters drawn by `sample_parameters`.
PARAMETER_NAMES = ("rotation", "zoom_x", "zoom_y", "shift_x", "shift_y", "flip_horizontal", "flip_vertical")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Random affine augmentation; the defaults are the 2023 thesis' ImageDataGenerator.

    Attributes:
      rotation_degrees: rotation angle drawn uniformly in [-r, r] degrees, about the centre.
      width_shift: horizontal shift drawn uniformly in [-s, s] times the width.
      height_shift: vertical shift drawn uniformly in [-s, s] times the height.
      zoom: horizontal and vertical scale factors drawn independently in [1 - z, 1 + z], as
        ImageDataGenerator(zoom_range=z) does (a factor above 1 samples a larger area, so the
        content shrinks).
      horizontal_flip: mirror left-right with probability 1/2.
      vertical_flip: mirror top-bottom with probability 1/2 (off: chest X-rays are upright).
      fill_mode: "reflect" ([dcba|abcd|dcba], ImageProjectiveTransformV3's REFLECT) or
        "nearest" (edge pixels repeated) for points sampled outside the image.
      interpolation: "bilinear" or "nearest".
    """

    rotation_degrees: float = 3.0
    width_shift: float = 0.1
    height_shift: float = 0.05
    zoom: float = 0.15
    horizontal_flip: bool = True
    vertical_flip: bool = False
    fill_mode: str = "reflect"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation_degrees <= 180.0:
            raise ValueError(
                f"AugmentConfig.rotation_degrees must be in [0, 180], got {self.rotation_degrees}."
            )
        for name in ("width_shift", "height_shift", "zoom"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1), got {value}.")
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"AugmentConfig.fill_mode must be one of {FILL_MODES}, got {self.fill_mode!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"AugmentConfig.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}."
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AugmentConfig:
        """Builds a config from `dataclasses.asdict` output (e.g. a saved model's config).

        Raises:
          ValueError: an unknown field (named) or an invalid value.
        """
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"AugmentConfig has no field(s) {unknown}; known fields are {sorted(known)}.")
        return cls(**values)


def sample_parameters(batch_size: int | tf.Tensor, seed: tf.Tensor, config: AugmentConfig) -> tf.Tensor:
    """Draws each image's augmentation parameters, statelessly.

    Args:
      batch_size: number of images.
      seed: int32/int64 [2] seed for `tf.random.stateless_uniform`.
      config: the ranges.

    Returns:
      float32 [B, 7], columns in `PARAMETER_NAMES` order: rotation (radians), zoom_x, zoom_y,
      shift_x and shift_y (fractions of the width and height), flip_horizontal and
      flip_vertical (0 or 1).
    """
    seed = tf.cast(seed, tf.int64)
    # One draw of [B, 7] uniforms in [0, 1), each column mapped onto its range.
    u = tf.random.stateless_uniform(tf.stack([batch_size, len(PARAMETER_NAMES)]), seed=seed)

    def symmetric(column: int, half_width: float) -> tf.Tensor:
        return (2.0 * u[:, column] - 1.0) * half_width

    def coin(column: int, enabled: bool) -> tf.Tensor:
        return tf.cast(u[:, column] < 0.5, tf.float32) if enabled else tf.zeros_like(u[:, column])

    return tf.stack(
        [
            symmetric(0, math.radians(config.rotation_degrees)),
            1.0 + symmetric(1, config.zoom),
            1.0 + symmetric(2, config.zoom),
            symmetric(3, config.width_shift),
            symmetric(4, config.height_shift),
            coin(5, config.horizontal_flip),
            coin(6, config.vertical_flip),
        ],
        axis=1,
    )


def affine_transforms(parameters: tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor) -> tf.Tensor:
    """Turns per-image parameters into ImageProjectiveTransformV3's 8-number transforms.

    A transform [a0, a1, a2, b0, b1, b2, c0, c1] maps an output pixel (x, y) (column, row) to
    the input point ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1.
    Here c0 = c1 = 0 and the input point is, with centre c = ((W - 1) / 2, (H - 1) / 2):
    flip the output pixel if asked, then c + R(rotation) Z(zoom_x, zoom_y) (p - c) - shift.

    Args:
      parameters: float32 [B, 7] as returned by `sample_parameters`.
      height, width: image size in pixels.

    Returns:
      float32 [B, 8].
    """
    parameters = tf.convert_to_tensor(parameters, tf.float32)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    angle, zoom_x, zoom_y, shift_x, shift_y, flip_h, flip_v = tf.unstack(parameters, axis=1)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # A = R Z, acting on (x - cx, y - cy).
    a00, a01 = cos * zoom_x, -sin * zoom_y
    a10, a11 = sin * zoom_x, cos * zoom_y
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    b0 = cx - shift_x * width - (a00 * cx + a01 * cy)
    b1 = cy - shift_y * height - (a10 * cx + a11 * cy)
    # The flip maps x to (W - 1) - x: x' = fx x + ox with fx = -1, ox = W - 1 (else 1, 0).
    fx, ox = 1.0 - 2.0 * flip_h, flip_h * (width - 1.0)
    fy, oy = 1.0 - 2.0 * flip_v, flip_v * (height - 1.0)
    zeros = tf.zeros_like(angle)
    return tf.stack(
        [
            a00 * fx,
            a01 * fy,
            a00 * ox + a01 * oy + b0,
            a10 * fx,
            a11 * fy,
            a10 * ox + a11 * oy + b1,
            zeros,
            zeros,
        ],
        axis=1,
    )


def _map_coordinate(coordinate: tf.Tensor, size: tf.Tensor, fill_mode: str) -> tf.Tensor:
    """ImageProjectiveTransformV3's MapCoordinate: brings a coordinate inside [0, size - 1]."""
    if fill_mode == "reflect":
        # Reflect [abcd] to [dcba|abcd|dcba], period 2 * size, exactly as the kernel does
        # (including its clamp of (-1, 0) and (size - 1, size) onto the edge pixel).
        period = 2.0 * size
        below = period * tf.floor(-coordinate / period) + coordinate
        below = tf.where(below < -size, below + period, -below - 1.0)
        above = coordinate - period * tf.floor(coordinate / period)
        above = tf.where(above >= size, period - above - 1.0, above)
        coordinate = tf.where(coordinate < 0.0, below, tf.where(coordinate > size - 1.0, above, coordinate))
    return tf.clip_by_value(coordinate, 0.0, size - 1.0)


def transform_images(
    images: tf.Tensor,
    transforms: tf.Tensor,
    *,
    fill_mode: str = "reflect",
    interpolation: str = "bilinear",
) -> tf.Tensor:
    """Warps each image by its projective transform, with XLA-compilable ops.

    Equivalent to `tf.raw_ops.ImageProjectiveTransformV3(images, transforms, output_shape=[H, W],
    fill_value=0, fill_mode=fill_mode.upper(), interpolation=interpolation.upper())` for
    transforms whose projective denominator stays positive over the image (all affine ones).

    Args:
      images: [B, H, W, C], any real dtype.
      transforms: float32 [B, 8] (see `affine_transforms`).
      fill_mode: "reflect" or "nearest".
      interpolation: "bilinear" or "nearest".

    Returns:
      float32 [B, H, W, C].

    Raises:
      ValueError: unknown fill_mode or interpolation.
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}.")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}.")
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    in_x, in_y = _source_points(transforms, shape[1], shape[2], fill_mode)
    return _sample(images, in_x, in_y, interpolation)


def _source_points(
    transforms: tf.Tensor, height: tf.Tensor, width: tf.Tensor, fill_mode: str
) -> tuple[tf.Tensor, tf.Tensor]:
    """Each output pixel's input point (x, y), float32 [B, H, W] each, brought inside the image."""
    transforms = tf.cast(transforms, tf.float32)
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    # The output pixel grid, broadcast against one row of transform numbers per image.
    x = tf.range(width_f)[tf.newaxis, tf.newaxis, :]
    y = tf.range(height_f)[tf.newaxis, :, tf.newaxis]
    t = transforms[:, :, tf.newaxis, tf.newaxis]
    k = t[:, 6] * x + t[:, 7] * y + 1.0
    in_x = (t[:, 0] * x + t[:, 1] * y + t[:, 2]) / k
    in_y = (t[:, 3] * x + t[:, 4] * y + t[:, 5]) / k
    return _map_coordinate(in_x, width_f, fill_mode), _map_coordinate(in_y, height_f, fill_mode)


def _sample(images: tf.Tensor, in_x: tf.Tensor, in_y: tf.Tensor, interpolation: str) -> tf.Tensor:
    """Reads `images` [B, H, W, C] at the points (in_x, in_y) [B, H, W]; float32 [B, H, W, C]."""
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    # One gather per corner from the flattened batch: index b * H * W + row * W + column.
    flat = tf.reshape(images, tf.stack([-1, channels]))
    offsets = tf.reshape(tf.range(batch) * height * width, [-1, 1, 1])

    def read(rows: tf.Tensor, columns: tf.Tensor) -> tf.Tensor:
        index = offsets + tf.cast(rows, tf.int32) * width + tf.cast(columns, tf.int32)
        return tf.cast(tf.gather(flat, index), tf.float32)

    if interpolation == "nearest":
        # The kernel rounds half away from zero; coordinates are >= 0 here.
        return read(tf.floor(in_y + 0.5), tf.floor(in_x + 0.5))

    x0, y0 = tf.floor(in_x), tf.floor(in_y)
    # The kernel weighs the pixel at floor + 1 by (x - floor); after the mapping that pixel is
    # outside the image only when its weight is 0, so clamping its index changes nothing.
    x1 = tf.minimum(x0 + 1.0, width_f - 1.0)
    y1 = tf.minimum(y0 + 1.0, height_f - 1.0)
    wx = (in_x - x0)[..., tf.newaxis]
    wy = (in_y - y0)[..., tf.newaxis]
    top = (1.0 - wx) * read(y0, x0) + wx * read(y0, x1)
    bottom = (1.0 - wx) * read(y1, x0) + wx * read(y1, x1)
    return (1.0 - wy) * top + wy * bottom


def random_transforms(
    batch_size: int | tf.Tensor,
    height: int | tf.Tensor,
    width: int | tf.Tensor,
    seed: tf.Tensor,
    config: AugmentConfig,
) -> tf.Tensor:
    """Draws one transform per image: `affine_transforms(sample_parameters(...))`, float32 [B, 8]."""
    return affine_transforms(sample_parameters(batch_size, seed, config), height, width)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, config: AugmentConfig | None = None) -> tf.Tensor:
    """Applies one random affine warp per image (stateless: same seed, same output).

    Compiles under `tf.function(jit_compile=True)`. The same seed gives the same output in the
    same mode; XLA and TF kernels draw different streams from one seed (TF's stateless random
    ops are reproducible per device and compiler, not across them).

    Args:
      images: [B, H, W, C] (float32 in [0, 1] in the model; any real dtype works).
      seed: int32/int64 [2] seed.
      config: the ranges; None means `AugmentConfig()` (the 2023 thesis').

    Returns:
      float32 [B, H, W, C].
    """
    config = config or AugmentConfig()
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    transforms = random_transforms(shape[0], shape[1], shape[2], seed, config)
    warped = transform_images(
        images, transforms, fill_mode=config.fill_mode, interpolation=config.interpolation
    )
    warped.set_shape(images.shape)
    return warped


def standardize(images: tf.Tensor, *, epsilon: float = STANDARDIZE_EPSILON) -> tf.Tensor:
    """Per-image standardization: (x - mean) / max(std, epsilon), over each image's pixels.

    As ImageDataGenerator(samplewise_center=True, samplewise_std_normalization=True), except
    that a (near-)constant image maps to zeros instead of being divided by ~0.

    Args:
      images: [B, H, W, C].
      epsilon: lower bound of the divisor.

    Returns:
      float32 [B, H, W, C].
    """
    images = tf.cast(images, tf.float32)
    # tf.nn.moments: where the warp and this run in one XLA-compiled step, XLA fuses them, and
    # that measured faster than means as matrix-vector products (`benchmarks/bench_input.py`).
    mean, variance = tf.nn.moments(images, axes=[1, 2, 3], keepdims=True)
    return (images - mean) / tf.maximum(tf.sqrt(variance), epsilon)


def make_augment_fn(
    config: AugmentConfig | None = None, *, jit_compile: bool = True
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The batch augmentation of the "dataset" placement (`trainer.training.inputs.augment_batches`).

    The returned function takes images [B, H, W, 1] on the 0..255 scale (uint8 records) and an
    int64 [2] seed, and returns the warped images as float32, still on the 0..255 scale: the
    model's input contract in both placements. The model then rescales and standardizes them,
    as it does with unaugmented pixels (the warp is linear in the pixel values, so warping
    before or after the model's rescaling gives the same image).
    """
    config = config or AugmentConfig()

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def augment_fn(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return augment_batch(tf.cast(images, tf.float32), seed, config)

    return augment_fn


# The layer's warp is XLA-compiled even when the model's train step is not (jit_compile=False):
# measured faster on CPU than without XLA (README.md, "Measured figures"). Inside a jit-compiled step it
# is simply inlined.
_compiled_augment_batch = tf.function(augment_batch, jit_compile=True, reduce_retracing=True)


@keras.saving.register_keras_serializable(package="cxr")
class RandomAffine(keras.layers.Layer):
    """Random affine augmentation of a batch, active only when `training=True`.

    Inference (evaluation, export, serving) passes images through unchanged, so an exported
    model never augments. Each training call draws a fresh seed from the layer's
    `keras.random.SeedGenerator`, whose state is a variable (so it works inside a compiled,
    XLA-jitted train step and is checkpointed).
    """

    def __init__(
        self, config: AugmentConfig | Mapping[str, Any] | None = None, seed: int | None = None, **kwargs
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if config is None:
            config = AugmentConfig()
        elif not isinstance(config, AugmentConfig):
            config = AugmentConfig.from_dict(config)
        self.config = config
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="augment_seed")

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        inputs = tf.cast(inputs, tf.float32)
        if not training:
            return inputs
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        return _compiled_augment_batch(inputs, seed, self.config)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "config": dataclasses.asdict(self.config), "seed": self.seed}


@keras.saving.register_keras_serializable(package="cxr")
class Standardize(keras.layers.Layer):
    """Per-image standardization layer; see `standardize`. Same in training and inference."""

    def __init__(self, epsilon: float = STANDARDIZE_EPSILON, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if epsilon <= 0:
            raise ValueError(f"Standardize.epsilon must be positive, got {epsilon}.")
        self.epsilon = float(epsilon)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return standardize(inputs, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


def sheet_transform(config: AugmentConfig | None = None, *, seed: Sequence[int] = (0, 1)) -> Callable:
    """The training augmentation as a numpy batch transform, for contact sheets.

    uint8 [N, H, W, 1] in; the affine warp, then what the model's input layers do (rescale to
    [0, 1] and standardize each image), as float [N, H, W, 1] out.
    """
    augment_fn = make_augment_fn(config, jit_compile=False)

    def transform(images: np.ndarray) -> np.ndarray:
        warped = augment_fn(tf.constant(images, tf.uint8), tf.constant(seed, tf.int64))
        return standardize(warped / 255.0).numpy()

    return transform
