"""SavedModel export with preprocessing inside the graph, plus `labels.json`.

Signatures (both return {"probabilities": float32 [B, L]} in the order of `labels.json`'s
labels, the training records' vocabulary; NIH's 15 `schema.LABELS` for NIH records):

  serving_default(image_bytes: string [B])     encoded PNGs (or JPEGs) of any mode and size:
      8- or 16-bit gray, gray+alpha, RGB, RGBA, palette. Decoded, converted to gray (alpha
      ignored), resized to the training size with the area filter, rounded to 0..255 like a
      record's pixels, then fed to the model (which scales and standardizes itself).
  serve_pixels(images: uint8 [B, N, N, 1])     pixels already at the training size N.

Usage:

    loaded = tf.saved_model.load("runs/demo/export")
    probs = loaded.signatures["serving_default"](image_bytes=tf.constant([png]))["probabilities"]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfrecords import schema

LABELS_FILE = "labels.json"
SERVING_DEFAULT = "serving_default"
SERVE_PIXELS = "serve_pixels"


def decode_to_training_pixels(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one encoded image of any PNG mode into float32 [N, N, 1] in 0..255.

    Decoding at 16 bits keeps the precision of 16-bit PNGs (8-bit ones are scaled by 257, so
    both land on the same 0..1 range); gray uses the ITU-R 601 weights of
    `tf.image.rgb_to_grayscale`, the same as PIL's "L" conversion up to rounding.
    """
    image = tf.io.decode_image(image_bytes, channels=0, dtype=tf.uint16, expand_animations=False)
    image = tf.cast(image, tf.float32) / 65535.0
    channels = tf.shape(image)[-1]
    # 1: gray, 2: gray + alpha, 3: RGB, 4: RGBA. Alpha is ignored: X-rays are opaque.
    image = tf.cond(
        channels >= 3,
        lambda: tf.image.rgb_to_grayscale(image[..., :3]),
        lambda: image[..., :1],
    )
    image = tf.image.resize(image, [image_size, image_size], method="area")
    # Round like the records' uint8 pixels, so serving sees what training saw.
    return tf.clip_by_value(tf.round(image * 255.0), 0.0, 255.0)


def export_model(
    model: keras.Model, export_dir: str, *, image_size: int, labels: Sequence[str] = schema.LABELS
) -> str:
    """Writes `model` as a SavedModel with the two signatures above, and `labels.json`.

    Args:
      model: a model from `trainer.model.models.build_model` (0..255 pixels in, probabilities out).
      export_dir: destination folder (local or gs://); replaced if it exists.
      image_size: the training image size N.
      labels: the names of the model's outputs, in order (the training records' vocabulary).

    Returns:
      export_dir.

    Raises:
      ValueError: the model's input is not [None, N, N, 1] or its output not [None, len(labels)].
    """
    expected_in = (None, image_size, image_size, 1)
    if tuple(model.input_shape) != expected_in:
        raise ValueError(f"model input shape must be {expected_in}, got {model.input_shape}.")
    if tuple(model.output_shape) != (None, len(labels)):
        raise ValueError(
            f"model output shape must be (None, {len(labels)}) for the labels {list(labels)}, "
            f"got {model.output_shape}."
        )

    def serve_pixels(images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Signatures do not enforce static shapes on their own; a wrong size fails here, clearly.
        images = tf.ensure_shape(images, [None, image_size, image_size, 1])
        probabilities = model(tf.cast(images, tf.float32), training=False)
        return {"probabilities": tf.cast(probabilities, tf.float32)}

    def serve_bytes(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.map_fn(
            lambda one: decode_to_training_pixels(one, image_size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 1], tf.float32),
        )
        probabilities = model(pixels, training=False)
        return {"probabilities": tf.cast(probabilities, tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SERVING_DEFAULT,
        fn=serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
    )
    archive.add_endpoint(
        name=SERVE_PIXELS,
        fn=serve_pixels,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 1], tf.uint8, name="images")],
    )
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rmtree(export_dir)
    archive.write_out(export_dir, verbose=False)
    write_labels(export_dir, image_size=image_size, labels=labels)
    return export_dir


def write_labels(export_dir: str, *, image_size: int, labels: Sequence[str] = schema.LABELS) -> str:
    """Writes `labels.json` = {"labels": [...], "image_size": N} into export_dir; returns its path."""
    path = os.path.join(export_dir, LABELS_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump({"labels": list(labels), "image_size": int(image_size)}, f, indent=2)
    return path


def read_labels(export_dir: str, *, expected: Sequence[str] | None = schema.LABELS) -> dict:
    """Reads and checks `labels.json` of an export.

    Args:
      export_dir: the export.
      expected: the labels the caller needs, in order (NIH's by default); None accepts any
        vocabulary (a non-empty list of distinct names).

    Raises:
      ValueError: missing file, no labels, or labels that differ from `expected`.
    """
    path = os.path.join(export_dir, LABELS_FILE)
    if not tf.io.gfile.exists(path):
        raise ValueError(
            f"{path} does not exist; is {export_dir!r} an export written by trainer.model.export?"
        )
    with tf.io.gfile.GFile(path) as f:
        info = json.load(f)
    labels = info.get("labels")
    if not isinstance(labels, list) or not labels or len(set(labels)) != len(labels):
        raise ValueError(f"{path} must list the model's labels as distinct names, got {labels!r}.")
    if expected is not None and labels != list(expected):
        raise ValueError(f"{path} lists labels {labels}, expected {list(expected)}.")
    return info
