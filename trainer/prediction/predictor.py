"""Runs a trained model on PNG files: probabilities, findings above threshold, Grad-CAM.

    python -m trainer.predict --run_dir=runs/demo --images=data/demo/images_001/images --gradcam

reads every PNG under --images (a file, a folder searched recursively, or a glob; any mode,
8 or 16 bits, any size), predicts through the exported SavedModel's `serving_default` signature
(encoded bytes in, decoding and resizing inside the graph) and writes
`runs/demo/predictions/predictions.csv`: per image its path, error (empty if fine), the 15
probabilities and the findings at or above each finding's threshold from
`runs/demo/reports/thresholds.json` (0.5 where that file or a threshold is missing; the run
says so). When that file also stores a calibration (Platt scaling fitted on val by
`trainer.evaluation.pipeline`), the probabilities written are the calibrated ones (column `calibrated` = 1;
--nocalibrate keeps the model's); the findings are the same either way. --tta=hflip predicts
the mean of each image's and its mirror image's probabilities. An unreadable image gets a row
with its error; the others are still predicted.
With --gradcam, `runs/demo/predictions/gradcam/<image>_gradcam_<Finding>.png` shows, at the
image's size, where the model looked for each of its top findings (Grad-CAM on the ResUNet's
"decoder_output" layer of `checkpoints/best.keras`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from cxr_cli import errors
from tfrecords import schema
from trainer.evaluation import calibration as calibration_lib
from trainer.evaluation import tta as tta_lib
from trainer.model import run_dir as run_dir_lib

DEFAULT_THRESHOLD = 0.5
PNG_SUFFIXES = (".png",)

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImagePrediction:
    """One image's result: probabilities [15] and findings, or the error that stopped it."""

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
      values: label -> threshold on the model's probabilities.
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


def list_images(images: str | Sequence[str]) -> list[str]:
    """The PNG files named by `images`: files, folders (searched recursively) or globs, sorted.

    Raises:
      ValueError: a path that does not exist, or nothing found, naming it.
    """
    specs = [images] if isinstance(images, str) else list(images)
    found: list[str] = []
    for spec in specs:
        if any(c in spec for c in "*?["):
            matches = sorted(tf.io.gfile.glob(spec))
            if not matches:
                raise errors.ValidationError(f"--images pattern {spec!r} matches no file.")
            found.extend(matches)
        elif tf.io.gfile.isdir(spec):
            folder = []
            for root, _, files in tf.io.gfile.walk(spec):
                folder.extend(os.path.join(root, f) for f in files if f.lower().endswith(PNG_SUFFIXES))
            if not folder:
                raise errors.ValidationError(
                    f"--images folder {spec!r} holds no .png file (searched recursively)."
                )
            found.extend(sorted(folder))
        elif tf.io.gfile.exists(spec):
            found.append(spec)  # An explicit file is predicted (or reported) whatever its name.
        else:
            raise errors.ValidationError(
                f"--images path {spec!r} does not exist; give PNG files, a folder or a glob."
            )
    return found


def read_thresholds(run_dir: str, path: str | None = None) -> Thresholds:
    """Reads the thresholds written by `trainer.evaluation.pipeline`, defaulting to 0.5.

    Args:
      run_dir: the run directory (default file `reports/thresholds.json`).
      path: another thresholds.json.

    Raises:
      ValueError: `path` given but missing, or a malformed file, naming it.
    """
    path_given = path is not None
    path = path or run_dir_lib.path(run_dir, run_dir_lib.THRESHOLDS_FILE)
    if not tf.io.gfile.exists(path):
        if path_given:
            raise errors.ValidationError(f"--thresholds file {path!r} does not exist.")
        return Thresholds(
            {label: DEFAULT_THRESHOLD for label in schema.LABELS},
            f"default {DEFAULT_THRESHOLD} ({path} not found; run trainer.evaluation.pipeline to choose thresholds)",
            tuple(schema.LABELS),
        )
    with tf.io.gfile.GFile(path) as f:
        try:
            data = json.load(f)
            given = dict(data["thresholds"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise errors.ValidationError(f"{path}: expected a JSON object with 'thresholds' ({e}).") from e
    values, defaulted = {}, []
    for label in schema.LABELS:
        value = given.get(label)
        if value is None:
            defaulted.append(label)
            value = DEFAULT_THRESHOLD
        values[label] = float(value)
    source = f"{path} (Youden J on {data.get('source_split', '?')})"
    stored = None
    if data.get("calibration") is not None:
        stored = calibration_lib.Calibration.from_json(data["calibration"], where=path)
    if defaulted:
        source += f"; default {DEFAULT_THRESHOLD} for {', '.join(defaulted)}"
    return Thresholds(values, source, tuple(defaulted), stored, str(data.get("tta", "none")))


def _tf_error_text(error: Exception) -> str:
    """The user-facing line of a TF error: "Invalid PNG. ...", without the graph context.

    A signature call's message reads "Graph execution error: / Detected at node ... /
    <stack traces unavailable> / <the reason> / [[{{node ...}}]] [Op:...]"; keep the reason.
    """
    message = getattr(error, "message", None) or str(error)
    noise = ("Graph execution error", "Detected at node", "<stack traces", "[[")
    lines = [line.strip() for line in message.splitlines()]
    reasons = [line.split(" [[")[0].strip() for line in lines if line and not line.startswith(noise)]
    return reasons[-1] if reasons else message.strip()


class _Serving:
    """The export's `serving_default`, called on a batch, falling back to one-by-one on errors.

    With a test-time augmentation, each image is decoded by the export's own decoding function
    (`trainer.model.export.decode_to_training_pixels`, what `serving_default` runs inside the graph),
    and the augmented batch goes through the `serve_pixels` signature (`trainer.evaluation.tta`).
    """

    def __init__(self, export_dir: str, *, tta: str = "none"):
        if not tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
            raise errors.ValidationError(
                f"{export_dir} holds no SavedModel; train and export the run first (make train)."
            )
        from trainer.model import export as export_lib

        self._loaded = tf.saved_model.load(export_dir)
        self._fn = self._loaded.signatures["serving_default"]
        self._tta = tta
        if tta != "none":
            self._image_size = int(export_lib.read_labels(export_dir)["image_size"])
            self._pixels_fn = self._loaded.signatures[export_lib.SERVE_PIXELS]

    def __call__(self, contents: list[bytes]) -> list[np.ndarray | str]:
        """Probabilities [15] per image, or the decoding error's text."""
        if self._tta != "none":
            return self._augmented(contents)
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
                results.append(f"cannot decode image: {_tf_error_text(e)}")
        return results

    def _augmented(self, contents: list[bytes]) -> list[np.ndarray | str]:
        from trainer.model import export as export_lib

        pixels: dict[int, np.ndarray] = {}
        results: dict[int, np.ndarray | str] = {}
        for i, content in enumerate(contents):
            try:
                decoded = export_lib.decode_to_training_pixels(tf.constant(content), self._image_size)
                pixels[i] = decoded.numpy().astype(np.uint8)  # Whole numbers in 0..255 already.
            except tf.errors.InvalidArgumentError as e:
                results[i] = f"cannot decode image: {_tf_error_text(e)}"
        if pixels:
            order = sorted(pixels)

            def fn(batch: np.ndarray) -> np.ndarray:
                return self._pixels_fn(images=tf.constant(batch, tf.uint8))["probabilities"].numpy()

            averaged = tta_lib.predict(fn, np.stack([pixels[i] for i in order]), mode=self._tta)
            results.update(zip(order, averaged))
        return [results[i] for i in range(len(contents))]


def predict(
    run_dir: str,
    images: str | Sequence[str],
    *,
    output_csv: str | None = None,
    thresholds_path: str | None = None,
    batch_size: int = 16,
    gradcam: bool = False,
    gradcam_dir: str | None = None,
    gradcam_top_k: int = 3,
    tta: str = "none",
    calibrate: bool = True,
) -> tuple[list[ImagePrediction], Thresholds, str]:
    """Predicts every image and writes the CSV (and Grad-CAM overlays).

    The findings are the labels whose probability is at or above the label's threshold. When a
    calibration is stored with the thresholds (and `calibrate`), the reported probabilities are
    the calibrated ones; the map is increasing and the thresholds move with it, so the
    findings are the same either way.

    Args:
      run_dir: the run directory (`export/`, `reports/thresholds.json`, `checkpoints/best.keras`).
      images: PNG file(s), folder(s) or glob(s); see `list_images`.
      output_csv: default `run_dir/predictions/predictions.csv`.
      thresholds_path: default `run_dir/reports/thresholds.json`.
      batch_size: images per model call.
      gradcam: also write Grad-CAM overlays (needs the ResUNet checkpoint).
      gradcam_dir: default `run_dir/predictions/gradcam`.
      gradcam_top_k: findings explained per image (the most probable of the 14).
      tta: "none", or "hflip" for the mean of the image's and its mirror image's probabilities.
      calibrate: apply the calibration stored in the thresholds file, when there is one.

    Returns:
      (one `ImagePrediction` per image in file order, the thresholds used, the CSV path).

    Raises:
      ValueError: bad arguments, no images, missing export or checkpoint.
    """
    if batch_size < 1:
        raise errors.ValidationError(f"batch_size must be >= 1, got {batch_size}.")
    if gradcam_top_k < 1:
        raise errors.ValidationError(f"gradcam_top_k must be >= 1, got {gradcam_top_k}.")
    if tta not in tta_lib.TTA_MODES:
        raise errors.ValidationError(f"tta must be one of {tta_lib.TTA_MODES}, got {tta!r}.")
    paths = list_images(images)
    thresholds = read_thresholds(run_dir, thresholds_path)
    _warn_about_thresholds(thresholds, tta)
    calibration = thresholds.calibration if calibrate else None
    serving = _Serving(run_dir_lib.path(run_dir, run_dir_lib.EXPORT_DIR), tta=tta)
    explainer = _GradCamWriter(run_dir, gradcam_dir, top_k=gradcam_top_k) if gradcam else None

    results: list[ImagePrediction] = []
    for start in range(0, len(paths), batch_size):
        results += _predict_batch(
            paths[start : start + batch_size], serving, thresholds, calibration, explainer
        )

    output_csv = output_csv or os.path.join(run_dir, run_dir_lib.PREDICTIONS_DIR, "predictions.csv")
    write_csv(output_csv, results)
    return results, thresholds, output_csv


def _warn_about_thresholds(thresholds: Thresholds, tta: str) -> None:
    if thresholds.defaulted:
        _log.warning("Thresholds: %s", thresholds.source)
    if thresholds.tta != tta and len(thresholds.defaulted) < len(schema.LABELS):
        _log.warning(
            "The thresholds were chosen with --tta=%s and the images are predicted with --tta=%s; "
            "evaluate the run with --tta=%s for thresholds that match.",
            thresholds.tta,
            tta,
            tta,
        )


def _predict_batch(
    batch_paths: Sequence[str],
    serving: _Serving,
    thresholds: Thresholds,
    calibration: calibration_lib.Calibration | None,
    explainer: _GradCamWriter | None,
) -> list[ImagePrediction]:
    """One model call for the readable files of a batch; unreadable ones get a row with their error."""
    contents: dict[int, bytes] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(batch_paths):
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                contents[i] = f.read()
        except (tf.errors.OpError, OSError) as e:
            errors[i] = f"cannot read file: {_tf_error_text(e)}"
    readable = sorted(contents)
    outputs = dict(zip(readable, serving([contents[i] for i in readable]))) if readable else {}
    results = []
    for i, path in enumerate(batch_paths):
        output = outputs.get(i, errors.get(i))
        if isinstance(output, str):
            results.append(ImagePrediction(path, None, (), error=output))
            continue
        probabilities = np.asarray(output, np.float32)
        findings = tuple(
            label for label, p in zip(schema.LABELS, probabilities) if p >= thresholds.values[label]
        )
        if calibration is not None:
            probabilities = calibration.apply(probabilities[None])[0]
        written: tuple[str, ...] = ()
        if explainer is not None:
            written = explainer.write(path, contents[i], probabilities)
        results.append(
            ImagePrediction(
                path, probabilities, findings, gradcam_paths=written, calibrated=calibration is not None
            )
        )
    return results


def write_csv(path: str, results: Sequence[ImagePrediction]) -> str:
    """Columns: path, image, error, the 15 probabilities, findings ("|"-joined), gradcam files,
    calibrated (1 when the probabilities are calibrated, 0 when they are the model's)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "image", "error", *schema.LABELS, "findings", "gradcam", "calibrated"])
    for result in results:
        probabilities = [""] * schema.NUM_LABELS if result.probabilities is None else [
            f"{p:.6f}" for p in result.probabilities
        ]  # fmt: skip
        writer.writerow([
            result.path, os.path.basename(result.path), result.error, *probabilities,
            schema.LABEL_SEPARATOR.join(result.findings), schema.LABEL_SEPARATOR.join(result.gradcam_paths),
            "" if result.probabilities is None else int(result.calibrated),
        ])  # fmt: skip
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(buffer.getvalue())
    return path


class _GradCamWriter:
    """Loads the run's Keras checkpoint once and writes overlays for each image."""

    def __init__(self, run_dir: str, output_dir: str | None, *, top_k: int):
        from trainer.model import gradcam as gradcam_lib
        from trainer.model import models

        checkpoint = run_dir_lib.path(run_dir, run_dir_lib.BEST_CHECKPOINT)
        if not tf.io.gfile.exists(checkpoint):
            raise errors.ValidationError(
                f"--gradcam needs the Keras model {checkpoint}, which does not exist."
            )
        self._lib = gradcam_lib
        self._cam = gradcam_lib.GradCam(models.load_model(checkpoint))
        self._output_dir = output_dir or os.path.join(run_dir, run_dir_lib.PREDICTIONS_DIR, "gradcam")
        self._top_k = top_k
        tf.io.gfile.makedirs(self._output_dir)

    def write(self, path: str, content: bytes, probabilities: np.ndarray) -> tuple[str, ...]:
        from trainer.model import export as export_lib  # The export's own decoding: what the model saw.

        gray = self._lib.display_gray(content)
        pixels = export_lib.decode_to_training_pixels(tf.constant(content), self._cam.image_size).numpy()
        indices = self._lib.top_findings(probabilities, self._top_k)
        maps = self._cam.maps(pixels, indices, output_size=gray.shape)
        stem = os.path.splitext(os.path.basename(path))[0]
        written = []
        for index, cam in zip(indices, maps):
            label = schema.LABELS[index]
            caption = f"{label}: p={probabilities[index]:.2f} (Grad-CAM)"
            out = os.path.join(self._output_dir, f"{stem}_gradcam_{label}.png")
            with tf.io.gfile.GFile(out, "wb") as f:
                f.write(self._lib.png_encode(self._lib.overlay(gray, cam, caption=caption)))
            written.append(out)
        return tuple(written)


# ---------------------------------------------------------------------------------------------
# The prediction's settings; trainer/predict.py turns them into flags.


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """The prediction binary's settings (each field is a flag of the same name)."""

    run_dir: str = dataclasses.field(
        default="runs/demo", metadata={"help": "Run directory written by trainer.train."}
    )
    images: tuple[str, ...] = dataclasses.field(
        default=("data/demo/images_001/images",),
        metadata={"help": "PNG files, folders (recursive) or globs, comma-separated."},
    )
    output_csv: str | None = dataclasses.field(
        default=None, metadata={"help": "Default: RUN_DIR/predictions/predictions.csv."}
    )
    thresholds: str | None = dataclasses.field(
        default=None, metadata={"help": "Default: RUN_DIR/reports/thresholds.json."}
    )
    batch_size: int = dataclasses.field(default=16, metadata={"help": "Images per model call."})
    gradcam: bool = dataclasses.field(
        default=False, metadata={"help": "Also write Grad-CAM overlays of the top findings."}
    )
    gradcam_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "Default: RUN_DIR/predictions/gradcam."}
    )
    gradcam_top_k: int = dataclasses.field(default=3, metadata={"help": "Findings explained per image."})
    tta: str = dataclasses.field(
        default="none",
        metadata={
            "help": "hflip: mean of the image's and its mirror image's probabilities.",
            "choices": tta_lib.TTA_MODES,
        },
    )
    calibrate: bool = dataclasses.field(
        default=True,
        metadata={"help": "Report calibrated probabilities when the thresholds file stores a calibration."},
    )

    def __post_init__(self) -> None:
        if self.tta not in tta_lib.TTA_MODES:
            raise errors.ValidationError(
                f"PredictConfig.tta must be one of {tta_lib.TTA_MODES}, got {self.tta!r}."
            )
        if not self.images:
            raise errors.ValidationError(
                "PredictConfig.images must name at least one file, folder or glob, got ()."
            )
        if self.batch_size < 1:
            raise errors.ValidationError(f"PredictConfig.batch_size must be >= 1, got {self.batch_size}.")
        if self.gradcam_top_k < 1:
            raise errors.ValidationError(
                f"PredictConfig.gradcam_top_k must be >= 1, got {self.gradcam_top_k}."
            )
