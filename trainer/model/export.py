"""SavedModel export with preprocessing inside the graph; the labels and operating point in its assets.

Signatures:

  serving_default(image_bytes: string [B])     encoded PNGs (or JPEGs) of any mode and size:
      8- or 16-bit gray, gray+alpha, RGB, RGBA, palette. Decoded, converted to gray (alpha
      ignored), resized to the training size with the area filter, rounded to 0..255 like a
      record's pixels, then fed to the model (which scales and standardizes itself). Returns
      {"probabilities": float32 [B, L]} in the order of the labels in `labels.json` (the
      training records' vocabulary: NIH's 15 for NIH records); once an evaluation has
      chosen an operating point (`write_operating_point`), also
      "calibrated_probabilities" (float32 [B, L], the Platt scaling fitted on val) and
      "findings" (int32 [B, L], 1 where the probability reaches the label's threshold).
  serve_pixels(images: uint8 [B, N, N, 1])     pixels already at the training size N;
      {"probabilities"} of the model alone, one pass, never recalibrated.

Assets (`assets/`, tracked by the SavedModel so they travel with it):

  labels.json             {"labels": [...L...], "image_size": N}
  operating_point.json    what `serving_default` applies after the model (when chosen)

The object also holds `model_weights`, the model's weights in Keras order, so that a Keras
model of the same architecture can be given exactly the served weights (`read_weights`) and
their sha256 (`weights_sha256`) names them in every report.

`export_model` saves a plain `tf.Module` rather than Keras' `ExportArchive`, which cannot
hold assets; the round trip against the in-memory model is tested all the same.

Why the evaluation re-writes the export rather than adding a signature beside it: TF Serving,
Vertex and `saved_model_cli` users call `serving_default` and nothing else, so the calibrated
probabilities and the findings must come out of that signature. The re-write loads the
export, keeps its model function and variables as they are (the same weights, bit for bit),
and saves them again under a new `serving_default`; `serve_pixels` stays the model alone, which
is what the evaluation itself scores.

Usage:

    loaded = tf.saved_model.load("runs/demo/export")
    outputs = loaded.signatures["serving_default"](image_bytes=tf.constant([png]))
    outputs["calibrated_probabilities"], outputs["findings"]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrecords import schema

LABELS_FILE = "labels.json"
OPERATING_POINT_FILE = "operating_point.json"
ASSETS_DIR = "assets"
SERVING_DEFAULT = "serving_default"
SERVE_PIXELS = "serve_pixels"
WEIGHTS_COLLECTION = "model_weights"
PROBABILITIES = "probabilities"
CALIBRATED_PROBABILITIES = "calibrated_probabilities"
FINDINGS = "findings"
# What serving_default returns once an operating point is written.
SERVED_OUTPUTS = (PROBABILITIES, CALIBRATED_PROBABILITIES, FINDINGS)
# The test-time augmentations `serving_default` can apply (those of trainer.evaluation.tta).
SERVED_TTA_MODES = ("none", "hflip")
_STAGING_SUFFIX = ".staging"


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


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """What `serving_default` applies after the model: calibration, thresholds, augmentation.

    Attributes:
      slopes, intercepts: per label, p' = sigmoid(slope * logit(p) + intercept), with p clipped
        to [epsilon, 1 - epsilon] first (the evaluation's Platt scaling).
      calibrated: per label, False where the probability passes through unchanged.
      thresholds: per label, a finding is present when the probability >= its threshold.
      epsilon: the clipping before the logit.
      tta: "none", or "hflip" for the mean of the image's and its mirror image's probabilities
        (the augmentation the thresholds and the calibration were chosen with).
      source: where it was chosen, e.g. the thresholds file and split.
      labels: the L labels the per-label values follow, in the model's output order (NIH's 15
        by default, for runs trained on NIH records).
    """

    slopes: tuple[float, ...]
    intercepts: tuple[float, ...]
    calibrated: tuple[bool, ...]
    thresholds: tuple[float, ...]
    epsilon: float
    tta: str = "none"
    source: str = ""
    labels: tuple[str, ...] = schema.LABELS

    def __post_init__(self):
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"OperatingPoint.labels must be distinct names, got {list(self.labels)}.")
        for name in ("slopes", "intercepts", "calibrated", "thresholds"):
            if len(getattr(self, name)) != len(self.labels):
                raise ValueError(
                    f"OperatingPoint.{name} needs {len(self.labels)} values, got {len(getattr(self, name))} "
                    f"(one per label of {list(self.labels)})."
                )
        if self.tta not in SERVED_TTA_MODES:
            raise ValueError(f"OperatingPoint.tta must be one of {SERVED_TTA_MODES}, got {self.tta!r}.")

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "formula": "p' = sigmoid(slope * logit(clip(p, epsilon, 1 - epsilon)) + intercept)",
            "rule": "finding present when probability >= threshold",
            **{
                f.name: _jsonable(getattr(self, f.name))
                for f in dataclasses.fields(self)
                if f.name != "labels"
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str) -> OperatingPoint:
        """Reads `to_json`'s output; raises ValueError naming `where` when malformed."""
        try:
            return cls(**{f.name: _from_jsonable(data[f.name]) for f in dataclasses.fields(cls)})
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: malformed operating point ({e!r}).") from e


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _from_jsonable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def export_model(
    model: keras.Model, export_dir: str, *, image_size: int, labels: Sequence[str] = schema.LABELS
) -> str:
    """Writes `model` as a SavedModel with the two signatures above and `labels.json` in its assets.

    Args:
      model: a model from `trainer.model.models.build_model` (0..255 pixels in, probabilities out).
      export_dir: destination folder (local or gs://); replaced if it exists.
      image_size: the training image size N.
      labels: the names of the model's outputs, in order: the training records' vocabulary
        (NIH's 15 for NIH records).

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
        return {PROBABILITIES: tf.cast(probabilities, tf.float32)}

    # The model's object: its pixel function and its weights in Keras order. A plain module
    # rather than Keras' ExportArchive, which cannot hold the assets around it.
    model_object = tf.Module()
    model_object.serve_pixels = tf.function(
        serve_pixels,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 1], tf.uint8, name="images")],
    )
    setattr(model_object, WEIGHTS_COLLECTION, list(model.weights))
    _write_serving(model_object, export_dir, image_size=image_size, operating_point=None, labels=labels)
    return export_dir


def write_operating_point(export_dir: str, operating_point: OperatingPoint | None) -> str:
    """Re-writes the export so that `serving_default` applies `operating_point` (None: removes it).

    The model function, its variables and `serve_pixels` are kept as loaded: the same weights.

    Raises:
      ValueError: `export_dir` holds no export written by this module, or the operating point's
        labels are not the export's.
    """
    info = read_labels(export_dir)
    if operating_point is not None and list(operating_point.labels) != info["labels"]:
        raise ValueError(
            f"The operating point's labels {list(operating_point.labels)} are not those of the export "
            f"{export_dir} ({info['labels']})."
        )
    _write_serving(
        _model_of(tf.saved_model.load(export_dir)),
        export_dir,
        image_size=int(info["image_size"]),
        operating_point=operating_point,
        labels=info["labels"],
    )
    return export_dir


class _ServingModule(tf.__internal__.tracking.AutoTrackable):
    """The saved object: the model's pixel function, its variables, the assets, the two signatures.

    The base Keras' ExportArchive saves too (a `tf.Module` could not hold the `variables`
    attribute that readers of an ExportArchive's export look up by name).
    """

    def __init__(self, model: Any, *, image_size: int, operating_point: OperatingPoint | None, assets: dict):
        super().__init__()
        self.model = model  # The model object: `serve_pixels` and `model_weights`.
        # Every variable of the model, as ExportArchive lists them (each named by its Keras path).
        self.variables = list(getattr(model, WEIGHTS_COLLECTION, None) or getattr(model, "variables", []))
        self.assets = {name: tf.saved_model.Asset(path) for name, path in assets.items()}
        self._image_size = image_size
        self._point = operating_point

    def serve_pixels(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {PROBABILITIES: self.model.serve_pixels(images)[PROBABILITIES]}

    def serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        size = self._image_size
        pixels = tf.map_fn(
            lambda one: tf.cast(decode_to_training_pixels(one, size), tf.uint8),  # Whole numbers 0..255.
            image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 1], tf.uint8),
        )
        if self._point is None:
            return self.serve_pixels(pixels)
        return apply_operating_point(self.model.serve_pixels, pixels, self._point)


def apply_operating_point(pixels_fn: Any, pixels: tf.Tensor, point: OperatingPoint) -> dict[str, tf.Tensor]:
    """The three outputs of `serving_default` from the model's pixel function (TensorFlow ops).

    The arithmetic is `trainer.evaluation.calibration.Calibration.apply`'s, in float64, so the
    served calibrated probabilities equal the evaluation's; the test-time augmentation is
    `trainer.evaluation.tta.predict_both`'s (one call on the images and their mirror images).
    """
    if point.tta == "hflip":
        both = tf.cast(
            pixels_fn(tf.concat([pixels, tf.reverse(pixels, axis=[2])], 0))[PROBABILITIES], tf.float64
        )
        half = tf.shape(pixels)[0]
        probabilities = tf.cast((both[:half] + both[half:]) / 2.0, tf.float32)
    else:
        probabilities = pixels_fn(pixels)[PROBABILITIES]
    p = tf.cast(probabilities, tf.float64)
    clipped = tf.clip_by_value(p, point.epsilon, 1.0 - point.epsilon)
    z = tf.constant(point.slopes, tf.float64) * (tf.math.log(clipped) - tf.math.log1p(-clipped))
    z += tf.constant(point.intercepts, tf.float64)
    scaled = 0.5 * (1.0 + tf.math.tanh(0.5 * z))  # The overflow-free sigmoid of calibration.py.
    calibrated = tf.where(tf.constant(point.calibrated)[None, :], scaled, p)
    findings = p >= tf.constant(point.thresholds, tf.float64)
    return {
        PROBABILITIES: probabilities,
        CALIBRATED_PROBABILITIES: tf.cast(calibrated, tf.float32),
        FINDINGS: tf.cast(findings, tf.int32),
    }


def _write_serving(
    model: Any,
    export_dir: str,
    *,
    image_size: int,
    operating_point: OperatingPoint | None,
    labels: Sequence[str] = schema.LABELS,
) -> None:
    """Saves `model`'s pixel function with both signatures and the assets into `export_dir`."""
    asset_dir = tempfile.mkdtemp(prefix="export_assets_")
    assets = {"labels": _write_json(os.path.join(asset_dir, LABELS_FILE), _labels_info(image_size, labels))}
    if operating_point is not None:
        assets["operating_point"] = _write_json(
            os.path.join(asset_dir, OPERATING_POINT_FILE), operating_point.to_json()
        )
    module = _ServingModule(model, image_size=image_size, operating_point=operating_point, assets=assets)
    signatures = {
        SERVING_DEFAULT: tf.function(
            module.serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
        ),
        SERVE_PIXELS: tf.function(
            module.serve_pixels,
            input_signature=[tf.TensorSpec([None, image_size, image_size, 1], tf.uint8, name="images")],
        ),
    }
    # Saved beside, then swapped in: the export being re-written is the one loaded.
    staging = export_dir.rstrip("/") + _STAGING_SUFFIX
    _remove(staging)
    tf.saved_model.save(module, staging, signatures=signatures)
    _remove(export_dir)
    _move_tree(staging, export_dir)
    tf.io.gfile.rmtree(asset_dir)


def _model_of(loaded: Any) -> Any:
    """The model object inside a loaded export (an export written before assets: the root)."""
    return loaded.model if hasattr(loaded, "model") else loaded


def _labels_info(image_size: int, labels: Sequence[str] = schema.LABELS) -> dict[str, Any]:
    return {"labels": list(labels), "image_size": int(image_size)}


def _write_json(path: str, data: Mapping[str, Any]) -> str:
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(data, f, indent=2)
    return path


def _remove(path: str) -> None:
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def _move_tree(source: str, destination: str) -> None:
    """Renames a directory; on a bucket (no directory rename there), copies it file by file."""
    if "://" not in source:
        tf.io.gfile.rename(source, destination)
        return
    for root, _, names in tf.io.gfile.walk(source):
        target = os.path.join(destination, os.path.relpath(root, source))
        tf.io.gfile.makedirs(target)
        for name in names:
            tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, name), overwrite=True)
    _remove(source)


def write_labels(export_dir: str, *, image_size: int, labels: Sequence[str] = schema.LABELS) -> str:
    """Writes `labels.json` = {"labels": [...], "image_size": N} into export_dir; returns its path.

    (An export keeps it in its assets; this writes the file of exports from before that.)
    """
    return _write_json(os.path.join(export_dir, LABELS_FILE), _labels_info(image_size, labels))


def labels_file(export_dir: str) -> str | None:
    """The export's `labels.json` (in its assets, or beside the SavedModel), or None when it has none."""
    candidates = [os.path.join(export_dir, ASSETS_DIR, LABELS_FILE), os.path.join(export_dir, LABELS_FILE)]
    return next((p for p in candidates if tf.io.gfile.exists(p)), None)


def read_labels(export_dir: str, *, expected: Sequence[str] | None = None) -> dict:
    """Reads and checks `labels.json` of an export (in its assets, or beside the SavedModel).

    Args:
      export_dir: the export.
      expected: the labels the caller needs, in order; None (the default) accepts the export's
        own vocabulary, whatever it is (a non-empty list of distinct names).

    Raises:
      ValueError: missing file, no labels, or labels that differ from `expected`.
    """
    path = labels_file(export_dir)
    if path is None:
        raise ValueError(
            f"{os.path.join(export_dir, ASSETS_DIR, LABELS_FILE)} does not exist; "
            f"is {export_dir!r} an export written by trainer.model.export?"
        )
    with tf.io.gfile.GFile(path) as f:
        info = json.load(f)
    labels = info.get("labels")
    if not isinstance(labels, list) or not labels or len(set(labels)) != len(labels):
        raise ValueError(f"{path} must list the model's labels as distinct names, got {labels!r}.")
    if expected is not None and labels != list(expected):
        raise ValueError(f"{path} lists labels {labels}, expected {list(expected)}.")
    return info


def serve(loaded: Any, image_bytes: Sequence[bytes]) -> dict[str, np.ndarray]:
    """Calls a loaded export's `serving_default` on encoded images; its outputs as numpy arrays.

    Args:
      loaded: `tf.saved_model.load(export_dir)`.
      image_bytes: encoded PNGs or JPEGs.

    Returns:
      {"probabilities": float32 [B, L]}, and once an evaluation has written the operating
      point, "calibrated_probabilities" (float32 [B, L]) and "findings" (int32 [B, L]), L the
      export's labels (`read_labels`).
    """
    outputs = loaded.signatures[SERVING_DEFAULT](image_bytes=tf.constant(list(image_bytes), tf.string))
    return {name: value.numpy() for name, value in outputs.items()}


def read_operating_point(export_dir: str) -> OperatingPoint | None:
    """The operating point `serving_default` applies, or None when the export has none."""
    path = os.path.join(export_dir, ASSETS_DIR, OPERATING_POINT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return OperatingPoint.from_json(json.load(f), where=path)


def read_weights(export_dir: str) -> list[np.ndarray] | None:
    """The served weights in Keras order (`model.set_weights` takes them); None for older exports."""
    return weights_of(tf.saved_model.load(export_dir))


def weights_of(loaded: Any) -> list[np.ndarray] | None:
    """`read_weights` of an export already loaded with `tf.saved_model.load`."""
    model = _model_of(loaded)
    if not hasattr(model, WEIGHTS_COLLECTION):
        return None
    return [np.asarray(v.numpy()) for v in getattr(model, WEIGHTS_COLLECTION)]


def weights_sha256(weights: Sequence[np.ndarray]) -> str:
    """sha256 of a model's weights in Keras order (`model.get_weights()`): names one set of weights."""
    digest = hashlib.sha256()
    for value in weights:
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()
