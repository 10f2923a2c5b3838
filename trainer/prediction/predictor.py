"""Runs a trained model on image files: the `cxr-predict` CSV and Grad-CAM overlays.

    python -m trainer.predict --run_dir=runs/demo --images=data/demo/images_001/images --gradcam

reads every PNG and JPEG under --images (a file, a folder searched recursively, or a glob; any
mode, 8 or 16 bits, any size), predicts them through the run's one model
(`trainer.prediction.loaded_run.Run`, what `trainer.api.load_run` returns: the export's
`serving_default` signature, encoded bytes in, decoding and resizing inside the graph) and writes
`runs/demo/predictions/predictions.csv`: per image its path, error (empty if fine), one
probability per label of the run (its own vocabulary: NIH's 15 for NIH records) and the findings at or above each finding's threshold from
`runs/demo/reports/thresholds.json` (0.5 where that file or a threshold is missing; the run
says so). When that file also stores a calibration (Platt scaling fitted on val by
`trainer.evaluation.pipeline`), the probabilities written are the calibrated ones (column `calibrated` = 1;
--nocalibrate keeps the model's); the findings are the same either way. --tta=hflip predicts
the mean of each image's and its mirror image's probabilities. An unreadable image gets a row
with its error; the others are still predicted.
With --gradcam, `runs/demo/predictions/gradcam/<image>_gradcam_<Finding>.png` shows, at the
image's size, where the model looked for each of its top findings (Grad-CAM of the Keras model
holding the export's weights, checked against the run's recorded sha256).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
from collections.abc import Sequence

import tensorflow as tf

from cxr_cli import config_flags, errors
from tfrecords import schema
from trainer.evaluation import tta as tta_lib
from trainer.evaluation import vocabularies
from trainer.model import run_dir as run_dir_lib
from trainer.prediction import loaded_run

# The result types and readers live with the run; these names are kept for the CLI's callers.
DEFAULT_THRESHOLD = loaded_run.DEFAULT_THRESHOLD
ImagePrediction = loaded_run.ImagePrediction
Thresholds = loaded_run.Thresholds
read_thresholds = loaded_run.read_thresholds
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_log = logging.getLogger(__name__)


def list_images(images: str | Sequence[str]) -> list[str]:
    """The PNG and JPEG files named by `images`: files, folders (searched recursively) or globs, sorted.

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
                folder.extend(os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES))
            if not folder:
                raise errors.ValidationError(
                    f"--images folder {spec!r} holds no .png, .jpg or .jpeg file (searched recursively)."
                )
            found.extend(sorted(folder))
        elif tf.io.gfile.exists(spec):
            found.append(spec)  # An explicit file is predicted (or reported) whatever its name.
        else:
            raise errors.ValidationError(
                f"--images path {spec!r} does not exist; give PNG or JPEG files, a folder or a glob."
            )
    return found


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
      images: PNG or JPEG file(s), folder(s) or glob(s); see `list_images`.
      output_csv: default `run_dir/predictions/predictions.csv`.
      thresholds_path: default `run_dir/reports/thresholds.json`.
      batch_size: images per model call.
      gradcam: also write Grad-CAM overlays (needs the ResUNet's architecture in the checkpoint).
      gradcam_dir: default `run_dir/predictions/gradcam`.
      gradcam_top_k: findings explained per image (the most probable labels but the data set's
        "no finding" label).
      tta: "none", or "hflip" for the mean of the image's and its mirror image's probabilities.
      calibrate: apply the calibration stored in the thresholds file, when there is one.

    Returns:
      (one `ImagePrediction` per image in file order, the thresholds used, the CSV path).

    Raises:
      ValueError: bad arguments, no images, missing export or checkpoint.
    """
    _check_arguments(batch_size, gradcam_top_k, tta)
    paths = list_images(images)
    run = loaded_run.Run(run_dir, thresholds_path=thresholds_path)
    _log.info("Model: %s, weights sha256 %s", run.export_dir, run.export_weights_sha256)
    _warn_about_thresholds(run.thresholds, tta)
    explainer = _GradCamWriter(run, gradcam_dir, top_k=gradcam_top_k) if gradcam else None

    results: list[ImagePrediction] = []
    for start in range(0, len(paths), batch_size):
        # Read one batch at a time: the bytes are needed again for the overlays.
        contents = [loaded_run.read_file(path) for path in paths[start : start + batch_size]]
        batch = run.results(contents, batch_size=batch_size, tta=tta, calibrate=calibrate)
        if explainer is not None:
            batch = [explainer.write(result, content) for result, content in zip(batch, contents)]
        results += batch

    output_csv = output_csv or os.path.join(run_dir, run_dir_lib.PREDICTIONS_DIR, "predictions.csv")
    write_csv(output_csv, results, labels=run.labels, weights_sha256=run.export_weights_sha256 or "")
    return results, run.thresholds, output_csv


def _check_arguments(batch_size: int, gradcam_top_k: int, tta: str) -> None:
    if batch_size < 1:
        raise errors.ValidationError(f"batch_size must be >= 1, got {batch_size}.")
    if gradcam_top_k < 1:
        raise errors.ValidationError(f"gradcam_top_k must be >= 1, got {gradcam_top_k}.")
    if tta not in tta_lib.TTA_MODES:
        raise errors.ValidationError(f"tta must be one of {tta_lib.TTA_MODES}, got {tta!r}.")


def _warn_about_thresholds(thresholds: Thresholds, tta: str) -> None:
    if thresholds.defaulted:
        _log.warning("Thresholds: %s", thresholds.source)
    if thresholds.tta != tta and len(thresholds.defaulted) < len(thresholds.labels):
        _log.warning(
            "The thresholds were chosen with --tta=%s and the images are predicted with --tta=%s; "
            "evaluate the run with --tta=%s for thresholds that match.",
            thresholds.tta,
            tta,
            tta,
        )


def write_csv(
    path: str,
    results: Sequence[ImagePrediction],
    *,
    labels: Sequence[str] = schema.LABELS,
    weights_sha256: str = "",
) -> str:
    """Columns: path, image, error, one probability per label (`labels`, the run's, in the model's
    order), findings ("|"-joined), gradcam files, calibrated (1 when the probabilities are
    calibrated, 0 when they are the model's), weights_sha256 (of the weights that predicted).

    Raises:
      ValueError: a result whose probabilities are not one per label.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["path", "image", "error", *labels, "findings", "gradcam", "calibrated", "weights_sha256"]
    )
    for result in results:
        if result.probabilities is not None and len(result.probabilities) != len(labels):
            raise ValueError(
                f"{result.path}: {len(result.probabilities)} probabilities for the {len(labels)} labels {list(labels)}."
            )
        probabilities = [""] * len(labels) if result.probabilities is None else [
            f"{p:.6f}" for p in result.probabilities
        ]  # fmt: skip
        writer.writerow([
            result.path, os.path.basename(result.path), result.error, *probabilities,
            schema.LABEL_SEPARATOR.join(result.findings), schema.LABEL_SEPARATOR.join(result.gradcam_paths),
            "" if result.probabilities is None else int(result.calibrated), weights_sha256,
        ])  # fmt: skip
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(buffer.getvalue())
    return path


class _GradCamWriter:
    """Writes overlays of each image's top findings, from the run's Keras model (the export's weights)."""

    def __init__(self, run: loaded_run.Run, output_dir: str | None, *, top_k: int):
        from trainer.model import gradcam as gradcam_lib

        self._lib = gradcam_lib
        self._run = run
        # Load the model and check its weights before predicting anything.
        self.weights_sha256 = run.weights_sha256
        self._output_dir = output_dir or os.path.join(run.run_dir, run_dir_lib.PREDICTIONS_DIR, "gradcam")
        self._top_k = top_k
        # The data set's "no finding" label has nothing to localize.
        self._skip = tuple(label for label in run.labels if vocabularies.is_no_finding(label))
        tf.io.gfile.makedirs(self._output_dir)

    def write(self, result: ImagePrediction, content: loaded_run.ImageContent) -> ImagePrediction:
        """The result with the paths of its overlays (none for an image that failed)."""
        if result.probabilities is None or content.content is None:
            return result
        labels = self._run.labels
        indices = self._lib.top_findings(result.probabilities, self._top_k, labels=labels, skip=self._skip)
        gray, maps = self._run.gradcam_maps(content.content, indices, where=result.path)
        stem = os.path.splitext(os.path.basename(result.path))[0]
        written = []
        for index, cam in zip(indices, maps):
            label = labels[index]
            caption = f"{label}: p={result.probabilities[index]:.2f} (Grad-CAM)"
            out = os.path.join(self._output_dir, f"{stem}_gradcam_{label}.png")
            with tf.io.gfile.GFile(out, "wb") as f:
                f.write(self._lib.png_encode(self._lib.overlay(gray, cam, caption=caption)))
            written.append(out)
        return dataclasses.replace(result, gradcam_paths=tuple(written))


# ---------------------------------------------------------------------------------------------
# The prediction's settings; trainer/predict.py turns them into flags.


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """The prediction binary's settings (each field is a flag of the same name)."""

    run_dir: str = config_flags.field("runs/demo", "Run directory written by trainer.train.")
    images: tuple[str, ...] = config_flags.field(
        ("data/demo/images_001/images",), "PNG or JPEG files, folders (recursive) or globs, comma-separated."
    )
    output_csv: str | None = config_flags.field(None, "Default: RUN_DIR/predictions/predictions.csv.")
    thresholds: str | None = config_flags.field(None, "Default: RUN_DIR/reports/thresholds.json.")
    batch_size: int = config_flags.field(16, "Images per model call.")
    gradcam: bool = config_flags.field(False, "Also write Grad-CAM overlays of the top findings.")
    gradcam_dir: str | None = config_flags.field(None, "Default: RUN_DIR/predictions/gradcam.")
    gradcam_top_k: int = config_flags.field(3, "Findings explained per image.")
    tta: str = config_flags.field(
        "none", "hflip: mean of the image's and its mirror image's probabilities.", tta_lib.TTA_MODES
    )
    calibrate: bool = config_flags.field(
        True, "Report calibrated probabilities when the thresholds file stores a calibration."
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
