"""A trained run loaded for prediction: one model (the export), its thresholds and calibration.

`trainer.api.load_run` returns a `Run`, and `trainer.prediction.predictor` (`cxr-predict`) drives
the same object, so a notebook and the command line predict through one path:

  - probabilities come from the export's `serving_default` signature (encoded PNG or JPEG bytes
    in, decoding and resizing inside the graph); uint8 arrays are PNG-encoded first, so an
    array and the file holding the same pixels predict the same;
  - when `reports/thresholds.json` stores a calibration (Platt scaling fitted on val by
    `trainer.evaluation.pipeline`), the probabilities returned are the calibrated ones; the
    findings are the labels at or above each label's threshold (chosen on the model's own
    probabilities, so calibrating does not change them);
  - the labels are the run's own vocabulary: the export's `assets/labels.json` (else
    `config.json`'s `labels`; runs that record neither trained on NIH's 15), in the model's
    output order; the thresholds and calibration must be for the same labels;
  - Grad-CAM needs the Keras model: its architecture comes from `checkpoints/best.keras`, its
    weights are the export's (copied variable by variable), and their sha256 is checked against
    every `weights_sha256` the run records, so no output mixes two sets of weights.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from cxr_cli import errors
from tfrecords import schema
from trainer.evaluation import calibration as calibration_lib
from trainer.evaluation import tta as tta_lib
from trainer.evaluation.report import tables as report_tables
from trainer.model import export as export_lib
from trainer.model import run_dir as run_dir_lib

if TYPE_CHECKING:
    import keras
    import pandas as pd

# The threshold of a label the evaluation chose none for (the value thresholds.json names).
DEFAULT_THRESHOLD = report_tables.DEFAULT_THRESHOLD
# The DataFrame's 0/1 finding columns: "finding_Effusion", ..., "finding_No Finding".
FINDING_PREFIX = "finding_"
WEIGHTS_SHA256 = "weights_sha256"
# Where a run may record the sha256 of its weights (key `weights_sha256`), relative to run_dir.
DIGEST_FILES = (
    run_dir_lib.CONFIG_FILE,
    os.path.join(run_dir_lib.EXPORT_DIR, export_lib.ASSETS_DIR, export_lib.LABELS_FILE),
    os.path.join(run_dir_lib.REPORTS_DIR, "auc.json"),
)

ImageInput = str | os.PathLike | bytes | np.ndarray

_log = logging.getLogger(__name__)


def finding_column(label: str) -> str:
    """The DataFrame column holding `label`'s 0/1 finding, e.g. "finding_Effusion"."""
    return FINDING_PREFIX + label


@dataclasses.dataclass(frozen=True)
class ImagePrediction:
    """One image's result: probabilities [L] (one per label of the run) and findings, or the error
    that stopped it."""

    path: str
    probabilities: np.ndarray | None
    findings: tuple[str, ...]
    error: str = ""
    gradcam_paths: tuple[str, ...] = ()
    calibrated: bool = False  # The probabilities went through the stored calibration.


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Per-label decision thresholds, where they came from, and what was stored with them.

    Attributes:
      values: label -> threshold on the model's probabilities, for every label of the run in the
        model's output order (`labels`).
      source: a readable account of where they came from.
      defaulted: labels that fell back to DEFAULT_THRESHOLD.
      calibration: the Platt scaling stored beside them, or None.
      tta: the test-time augmentation the thresholds were chosen with.
    """

    values: dict[str, float]
    source: str
    defaulted: tuple[str, ...]
    calibration: calibration_lib.Calibration | None = None
    tta: str = "none"

    @property
    def labels(self) -> tuple[str, ...]:
        """The run's labels, in the model's output order."""
        return tuple(self.values)


@dataclasses.dataclass(frozen=True)
class ImageContent:
    """One input as encoded bytes, or the reason it could not be read.

    Attributes:
      source: the path, or "bytes[i]" / "array[i]" for the i-th input given in memory.
      content: encoded image bytes (PNG, JPEG, ...), or None when unreadable.
      error: why it could not be read (empty when `content` is set).
    """

    source: str
    content: bytes | None
    error: str = ""


def read_thresholds(
    run_dir: str, path: str | None = None, *, labels: Sequence[str] = schema.LABELS
) -> Thresholds:
    """Reads the thresholds written by `trainer.evaluation.pipeline`, defaulting to 0.5.

    Args:
      run_dir: the run directory (default file `reports/thresholds.json`).
      path: another thresholds.json.
      labels: the run's labels, in the model's output order (NIH's 15 for runs that predate
        other vocabularies).

    Raises:
      ValueError: `path` given but missing, a malformed file, or a file (or its calibration) for
        other labels than `labels`, naming it.
    """
    labels = tuple(labels)
    path_given = path is not None
    path = path or run_dir_lib.path(run_dir, run_dir_lib.THRESHOLDS_FILE)
    if not tf.io.gfile.exists(path):
        if path_given:
            raise errors.ValidationError(f"--thresholds file {path!r} does not exist.")
        return Thresholds(
            {label: DEFAULT_THRESHOLD for label in labels},
            f"default {DEFAULT_THRESHOLD} ({path} not found; run trainer.evaluate to choose thresholds)",
            labels,
        )
    with tf.io.gfile.GFile(path) as f:
        try:
            data = json.load(f)
            given = dict(data["thresholds"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise errors.ValidationError(f"{path}: expected a JSON object with 'thresholds' ({e}).") from e
    _check_labels(path, "lists the labels", data.get("labels"), labels)
    values, defaulted = {}, []
    for label in labels:
        value = given.get(label)
        if value is None:
            defaulted.append(label)
            value = DEFAULT_THRESHOLD
        values[label] = float(value)
    source = f"{path} (Youden J on {data.get('source_split', '?')})"
    stored = None
    if data.get("calibration") is not None:
        stored = calibration_lib.Calibration.from_json(data["calibration"], where=path)
        _check_labels(path, "stores a calibration of the labels", stored.labels, labels)
    if defaulted:
        source += f"; default {DEFAULT_THRESHOLD} for {', '.join(defaulted)}"
    return Thresholds(values, source, tuple(defaulted), stored, str(data.get("tta", "none")))


def _check_labels(path: str, what: str, found: Sequence[str] | None, labels: tuple[str, ...]) -> None:
    """Raises when a file records other labels than the model's (no record: nothing to check)."""
    if found is not None and tuple(found) != labels:
        raise errors.ValidationError(
            f"{path} {what} {list(found)}, but the model's labels are {list(labels)}: "
            "these thresholds are another run's. Evaluate this run (trainer.evaluation.pipeline)."
        )


def run_labels(run_dir: str, config: dict[str, Any]) -> tuple[str, ...]:
    """The run's labels in the model's output order: the export's `labels.json`, else
    `config.json`'s `labels`, else NIH's 15 (runs from before either recorded them).

    Raises:
      ValueError: the export and config.json name different labels, naming both files.
    """
    export_dir = run_dir_lib.path(run_dir, run_dir_lib.EXPORT_DIR)
    exported = None
    if export_lib.labels_file(export_dir) is not None:
        exported = tuple(export_lib.read_labels(export_dir)["labels"])
    configured = tuple(config["labels"]) if config.get("labels") else None
    if exported and configured and exported != configured:
        raise errors.ValidationError(
            f"{export_dir} serves the labels {list(exported)}, but "
            f"{run_dir_lib.path(run_dir, run_dir_lib.CONFIG_FILE)} lists {list(configured)}: "
            "the run's files describe different models. Re-export the run."
        )
    return exported or configured or tuple(schema.LABELS)


def tf_error_text(error: Exception) -> str:
    """The user-facing line of a TF error: "Invalid PNG. ...", without the graph context.

    A signature call's message reads "Graph execution error: / Detected at node ... /
    <stack traces unavailable> / <the reason> / [[{{node ...}}]] [Op:...]"; keep the reason.
    """
    message = getattr(error, "message", None) or str(error)
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    lines = [line.strip() for line in message.splitlines()]
    reasons = [line.split(" [[")[0].strip() for line in lines if line and not line.startswith(noise)]
    return reasons[-1] if reasons else message.strip()


# ---------------------------------------------------------------------------------------------
# Inputs: paths, encoded bytes and uint8 arrays, all turned into encoded bytes.


def encode_array(pixels: np.ndarray, *, where: str = "image") -> bytes:
    """PNG bytes of a uint8 gray [H, W] (or [H, W, 1]) or RGB [H, W, 3] array.

    Raises:
      ValueError: another dtype or shape, naming `where`.
    """
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise errors.ValidationError(f"{where}: arrays must be uint8 (0..255), got dtype {pixels.dtype}.")
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] == 3)) or 0 in pixels.shape:
        raise errors.ValidationError(
            f"{where}: arrays must be gray [H, W] or RGB [H, W, 3], got shape {pixels.shape}; "
            "pass a list of arrays for several images."
        )
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L" if pixels.ndim == 2 else "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def read_inputs(images: ImageInput | Sequence[ImageInput]) -> list[ImageContent]:
    """Turns one image or a list of them (paths, encoded bytes, uint8 arrays) into `ImageContent`s.

    A path that cannot be read gives an `ImageContent` with its error (the others are still
    predicted); an array of the wrong dtype or shape is the caller's mistake and raises.

    Raises:
      ValueError: an input of another type, or a bad array, naming its position.
    """
    items = [images] if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) else list(images)
    contents = []
    for i, item in enumerate(items):
        if isinstance(item, (bytes, bytearray)):
            contents.append(ImageContent(f"bytes[{i}]", bytes(item)))
        elif isinstance(item, np.ndarray):
            contents.append(ImageContent(f"array[{i}]", encode_array(item, where=f"images[{i}]")))
        elif isinstance(item, (str, os.PathLike)):
            contents.append(read_file(os.fspath(item)))
        else:
            raise errors.ValidationError(
                f"images[{i}]: expected a file path, encoded image bytes or a uint8 array, "
                f"got {type(item).__name__}."
            )
    return contents


def read_file(path: str) -> ImageContent:
    """The file's bytes, or the reason it could not be read."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return ImageContent(path, f.read())
    except (tf.errors.OpError, OSError) as e:
        return ImageContent(path, None, f"cannot read file: {tf_error_text(e)}")


# ---------------------------------------------------------------------------------------------
# The model: the export's signatures, and the Keras model with the export's weights.


class _Serving:
    """The export's `serving_default`, called on a batch, falling back to one-by-one on errors.

    With a test-time augmentation, each image is decoded by the export's own decoding function
    (`trainer.model.export.decode_to_training_pixels`, what `serving_default` runs inside the graph),
    and the augmented batch goes through the `serve_pixels` signature (`trainer.evaluation.tta`).
    """

    def __init__(self, loaded: Any, image_size: int):
        self._fn = loaded.signatures[export_lib.SERVING_DEFAULT]
        self._pixels_fn = loaded.signatures[export_lib.SERVE_PIXELS]
        self._image_size = image_size

    def __call__(self, contents: list[bytes], *, tta: str = "none") -> list[np.ndarray | str]:
        """Probabilities [L] per image, or the decoding error's text."""
        if tta != "none":
            return self._augmented(contents, tta)
        try:
            return list(self._fn(image_bytes=tf.constant(contents, tf.string))["probabilities"].numpy())
        except tf.errors.InvalidArgumentError:
            pass  # Some image is bad; find which by predicting one at a time.
        results: list[np.ndarray | str] = []
        for content in contents:
            try:
                results.append(
                    self._fn(image_bytes=tf.constant([content], tf.string))["probabilities"].numpy()[0]
                )
            except tf.errors.InvalidArgumentError as e:
                results.append(f"cannot decode image: {tf_error_text(e)}")
        return results

    def _augmented(self, contents: list[bytes], tta: str) -> list[np.ndarray | str]:
        pixels: dict[int, np.ndarray] = {}
        results: dict[int, np.ndarray | str] = {}
        for i, content in enumerate(contents):
            try:
                pixels[i] = decode_pixels(content, self._image_size)
            except tf.errors.InvalidArgumentError as e:
                results[i] = f"cannot decode image: {tf_error_text(e)}"
        if pixels:
            order = sorted(pixels)

            def fn(batch: np.ndarray) -> np.ndarray:
                return self._pixels_fn(images=tf.constant(batch, tf.uint8))["probabilities"].numpy()

            averaged = tta_lib.predict(fn, np.stack([pixels[i] for i in order]), mode=tta)
            results.update(zip(order, averaged))
        return [results[i] for i in range(len(contents))]


def decode_pixels(content: bytes, image_size: int) -> np.ndarray:
    """uint8 [N, N, 1]: the pixels the export's `serving_default` feeds the model for `content`.

    Raises:
      tf.errors.InvalidArgumentError: not a decodable image.
    """
    decoded = export_lib.decode_to_training_pixels(tf.constant(content), image_size)
    return decoded.numpy().astype(np.uint8)  # Whole numbers in 0..255 already.


def recorded_digests(run_dir: str) -> dict[str, str]:
    """Every `weights_sha256` the run records, by file (`DIGEST_FILES`)."""
    found = {}
    for name in DIGEST_FILES:
        path = run_dir_lib.path(run_dir, name)
        if not tf.io.gfile.exists(path):
            continue
        with tf.io.gfile.GFile(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise errors.ValidationError(f"{path}: not valid JSON ({e}).") from e
        if isinstance(data, dict) and data.get(WEIGHTS_SHA256):
            found[path] = str(data[WEIGHTS_SHA256])
    return found


def keras_model_with_export_weights(run_dir: str, loaded: Any) -> tuple[keras.Model, str]:
    """The run's Keras model holding exactly the export's weights, and their sha256.

    The architecture is read from `checkpoints/best.keras`; every weight is then replaced by
    the export's variable of the same path, so the model is the export's whatever the
    checkpoint held (`--export_weights=final`). The digest must equal every one the run records.

    Raises:
      ValueError: no checkpoint, a checkpoint and an export of different architectures, or a
        recorded digest that differs, naming the files.
    """
    from trainer.model import models

    checkpoint = run_dir_lib.path(run_dir, run_dir_lib.BEST_CHECKPOINT)
    export_dir = run_dir_lib.path(run_dir, run_dir_lib.EXPORT_DIR)
    if not tf.io.gfile.exists(checkpoint):
        raise errors.ValidationError(f"Grad-CAM needs the Keras model {checkpoint}, which does not exist.")
    model = models.load_model(checkpoint)
    exported = {variable.name.rsplit(":", 1)[0]: variable for variable in loaded.variables}
    values = []
    for weight in model.weights:
        variable = exported.get(weight.path)
        if variable is None or tuple(variable.shape) != tuple(weight.shape):
            raise errors.ValidationError(
                f"{checkpoint} and {export_dir} hold different models: the export has no weight "
                f"{weight.path!r} of shape {tuple(weight.shape)}. Re-export the run (make train)."
            )
        values.append(variable.numpy())
    if export_lib.weights_sha256(model.get_weights()) != export_lib.weights_sha256(values):
        _log.info("%s holds other weights than the export; Grad-CAM uses the export's.", checkpoint)
    model.set_weights(values)
    digest = export_lib.weights_sha256(values)
    for path, recorded in recorded_digests(run_dir).items():
        if recorded != digest:
            raise errors.ValidationError(
                f"{export_dir} holds weights with sha256 {digest}, but {path} records {recorded}: "
                "the run's files describe different weights. Re-export or re-evaluate the run."
            )
    return model, digest


# ---------------------------------------------------------------------------------------------
# The run.


class Run:
    """A trained run: predictions, Grad-CAM maps and records, all from the run's one model.

    Use `trainer.api.load_run`. The export loads on the first prediction, the Keras model on the
    first Grad-CAM map; `dataset` needs neither.

    Attributes:
      run_dir: the run directory.
      config: its `config.json`.
      labels: the run's labels, in the model's output order (`run_labels`).
      thresholds: the decision thresholds and calibration in use.
    """

    def __init__(self, run_dir: str, *, thresholds_path: str | None = None, records_dir: str | None = None):
        self.run_dir = run_dir
        self.export_dir = run_dir_lib.path(run_dir, run_dir_lib.EXPORT_DIR)
        if not tf.io.gfile.exists(os.path.join(self.export_dir, "saved_model.pb")):
            raise errors.ValidationError(
                f"{self.export_dir} holds no SavedModel; train and export the run first (make train)."
            )
        config_path = run_dir_lib.path(run_dir, run_dir_lib.CONFIG_FILE)
        self.config = run_dir_lib.read_config(run_dir) if tf.io.gfile.exists(config_path) else {}
        self.labels = run_labels(run_dir, self.config)
        self.thresholds = read_thresholds(run_dir, thresholds_path, labels=self.labels)
        self._records_dir = records_dir

    def __repr__(self) -> str:
        return f"Run({self.run_dir!r})"

    @functools.cached_property
    def _loaded(self) -> Any:
        return tf.saved_model.load(self.export_dir)

    @functools.cached_property
    def image_size(self) -> int:
        """The model's input size N (images are resized to N x N)."""
        return int(export_lib.read_labels(self.export_dir)["image_size"])

    @functools.cached_property
    def _serving(self) -> _Serving:
        return _Serving(self._loaded, self.image_size)

    @functools.cached_property
    def _keras(self) -> tuple[keras.Model, str]:
        return keras_model_with_export_weights(self.run_dir, self._loaded)

    @functools.cached_property
    def export_weights_sha256(self) -> str | None:
        """sha256 of the export's weights in Keras order, read from the export alone (None for an
        export written without its `model_weights` list)."""
        weights = export_lib.weights_of(self._loaded)
        return None if weights is None else export_lib.weights_sha256(weights)

    @property
    def weights_sha256(self) -> str:
        """sha256 of the export's weights (loads the Keras model to order them as the trainer does)."""
        return self._keras[1]

    def results(
        self,
        contents: Sequence[ImageContent],
        *,
        batch_size: int = 16,
        tta: str = "none",
        calibrate: bool = True,
    ) -> list[ImagePrediction]:
        """One `ImagePrediction` per input, in order; unreadable inputs carry their error.

        Raises:
          ValueError: a bad batch size or test-time augmentation.
        """
        if batch_size < 1:
            raise errors.ValidationError(f"batch_size must be >= 1, got {batch_size}.")
        if tta not in tta_lib.TTA_MODES:
            raise errors.ValidationError(f"tta must be one of {tta_lib.TTA_MODES}, got {tta!r}.")
        calibration = self.thresholds.calibration if calibrate else None
        results: list[ImagePrediction] = []
        for start in range(0, len(contents), batch_size):
            results += self._batch(contents[start : start + batch_size], tta, calibration)
        return results

    def _batch(
        self, batch: Sequence[ImageContent], tta: str, calibration: calibration_lib.Calibration | None
    ) -> list[ImagePrediction]:
        """One model call for the readable inputs of a batch."""
        readable = [i for i, item in enumerate(batch) if item.content is not None]
        outputs = self._serving([batch[i].content for i in readable], tta=tta) if readable else []
        by_index = dict(zip(readable, outputs))
        results = []
        for i, item in enumerate(batch):
            output = by_index.get(i, item.error)
            if isinstance(output, str):
                results.append(ImagePrediction(item.source, None, (), error=output))
                continue
            probabilities = np.asarray(output, np.float32)
            findings = tuple(
                label for label, p in zip(self.labels, probabilities) if p >= self.thresholds.values[label]
            )
            if calibration is not None:
                probabilities = calibration.apply(probabilities[None])[0]
            results.append(
                ImagePrediction(item.source, probabilities, findings, calibrated=calibration is not None)
            )
        return results

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 16,
        tta: str = "none",
        calibrate: bool = True,
    ) -> pd.DataFrame:
        """Probabilities and findings of one image or a list of them.

        Args:
          images: file paths (PNG, JPEG; local or gs://), encoded image bytes, or uint8 arrays
            (gray [H, W] or RGB [H, W, 3], any size), or a list mixing them.
          batch_size: images per model call.
          tta: "none", or "hflip" for the mean of the image's and its mirror image's probabilities.
          calibrate: return calibrated probabilities when the run stores a calibration.

        Returns:
          One row per image, in order: `source` (the path, or "bytes[i]" / "array[i]"), `error`
          (empty when predicted), one probability column per label of the run (`labels`, NaN
          on error), `calibrated`, and one 0/1 column per label (`finding_column(label)`), at the
          threshold the evaluation chose (<NA> where it chose none, or on error).

        Raises:
          ValueError: an input of another type or a bad array, naming its position.
        """
        results = self.results(read_inputs(images), batch_size=batch_size, tta=tta, calibrate=calibrate)
        return to_frame(results, self.thresholds)

    def gradcam(self, image: ImageInput, label: str | int) -> np.ndarray:
        """The Grad-CAM map of one image for one label, at the image's own size.

        Args:
          image: a file path, encoded image bytes or a uint8 array (as `predict` takes).
          label: a label name (one of the run's `labels`) or its index.

        Returns:
          float32 [H, W] in [0, 1]: where the model looked for `label`.

        Raises:
          ValueError: an unknown label, or an image that cannot be read or decoded, named.
        """
        index = label_index(label, self.labels)
        (content,) = read_inputs([image])
        if content.content is None:
            raise errors.ValidationError(f"{content.source}: {content.error}")
        return self.gradcam_maps(content.content, [index], where=content.source)[1][0]

    def gradcam_maps(
        self, content: bytes, indices: Sequence[int], *, where: str = "image"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 gray [H, W] at the image's size, float32 [len(indices), H, W] maps) of one image.

        Raises:
          ValueError: an image that cannot be decoded, naming `where`.
        """
        from trainer.model import gradcam as gradcam_lib

        try:
            gray = gradcam_lib.display_gray(content)
            pixels = decode_pixels(content, self.image_size)
        except tf.errors.InvalidArgumentError as e:
            raise errors.ValidationError(f"{where}: cannot decode image: {tf_error_text(e)}") from e
        model, _ = self._keras
        maps = gradcam_lib.GradCam(model).maps(pixels, list(indices), output_size=gray.shape)
        return gray, np.asarray(maps, np.float32)

    def dataset(self, split: str, *, batch_size: int = 32, with_metadata: bool = False) -> tf.data.Dataset:
        """The evaluation pipeline of one split of the run's records (one pass, fixed order).

        Args:
          split: "train", "val" or "test".
          batch_size: records per batch (the last one may be smaller).
          with_metadata: also yield the records' metadata dict (`tfrecords.dataset.build_dataset`).

        Returns:
          `(images uint8 [B, N, N, 1], labels float32 [B, L])` batches (plus metadata), L the
          records' labels.

        Raises:
          ValueError: no records directory in config.json (pass `records_dir` to `load_run`).
          tfrecords.manifest.ManifestError: no valid records there, or no such split.
        """
        from tfrecords import dataset as dataset_lib

        records_dir = self._records_dir or self.config.get("records_dir")
        if not records_dir:
            raise errors.ValidationError(
                f"{run_dir_lib.path(self.run_dir, run_dir_lib.CONFIG_FILE)} names no records_dir; "
                "pass records_dir= to load_run."
            )
        return dataset_lib.build_dataset(
            records_dir, split, batch_size=batch_size, training=False, with_metadata=with_metadata
        )


def label_index(label: str | int, labels: Sequence[str] = schema.LABELS) -> int:
    """The index in `labels` (the run's) of a label given by name or index.

    Raises:
      ValueError: an unknown name or an index out of range, listing the labels.
    """
    labels = tuple(labels)
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if 0 <= int(label) < len(labels):
            return int(label)
    elif label in labels:
        return labels.index(label)
    raise errors.ValidationError(
        f"label must be one of {list(labels)} or an index 0..{len(labels) - 1}, got {label!r}."
    )


def to_frame(results: Sequence[ImagePrediction], thresholds: Thresholds) -> pd.DataFrame:
    """The DataFrame `Run.predict` returns (see there) from a list of results; its label columns
    are the thresholds' labels (the run's)."""
    import pandas as pd

    labels = thresholds.labels
    probabilities = np.full((len(results), len(labels)), np.nan, np.float32)
    findings = np.zeros((len(results), len(labels)), np.int8)
    for row, result in enumerate(results):
        if result.probabilities is not None:
            probabilities[row] = result.probabilities
            findings[row] = [label in result.findings for label in labels]
    frame = pd.DataFrame({
        "source": [r.path for r in results],
        "error": [r.error for r in results],
    })  # fmt: skip
    for k, label in enumerate(labels):
        frame[label] = probabilities[:, k]
    frame["calibrated"] = [r.calibrated for r in results]
    failed = frame["error"] != ""
    for k, label in enumerate(labels):
        column = pd.array(findings[:, k], dtype="Int8")
        column[failed.to_numpy() | (label in thresholds.defaulted)] = pd.NA
        frame[finding_column(label)] = column
    return frame
