"""Evaluates a training run on the test (and val) split and writes its reports.

    python -m trainer.evaluate --run_dir=runs/demo

reads `runs/demo/config.json` for the records directory, predicts every image of the test and
val splits with `runs/demo/export/` (its `serve_pixels` signature; or `checkpoints/best.keras`),
and writes to `runs/demo/reports/`:

    auc.json            everything (per-finding AUC with 95% patient-bootstrap CI, PR AUC,
                        prevalence, Youden threshold, sensitivity/specificity, means, subgroups
                        by sex, age band and view), the split, the manifest's sha256, the model
    auc.csv             one row per finding of the test split
    auc.md              readable tables, beside the published AUCs
    MODEL_CARD.md       the model, its weights (sha256) and why, its data, recipe, results, use
    index.html          all of the above on one self-contained page (figures embedded)
    thresholds.json     per-finding Youden-J thresholds chosen on val, with the Platt scaling
                        fitted there (read by trainer.prediction.predictor)
    predictions.csv     per image: split, metadata, true labels, 15 probabilities (and the 15
                        calibrated ones, `calibrated_<label>`, when the calibration was fitted)
    box_rejects.jsonl   the box file's rows that could not be scored, each with its reason
    roc_curves.png, training_curves.png, label_distribution.png, label_cooccurrence.png,
    reliability_diagram.png, gradcam_boxes.png, gradcam_mean.png

When it scored the run's export on the run's records into `runs/demo/reports/`, it also writes
the thresholds and the calibration into the export (`trainer.model.export.write_operating_point`),
so that the export's `serving_default` returns `calibrated_probabilities` and `findings` beside
the model's `probabilities` (--noserve_operating_point leaves the export as it is).

`auc.md` also holds the calibration (ECE before and after Platt scaling), the Grad-CAM
localization against NIH's `BBox_List_2017.csv` when the records' data directory (or
--boxes_csv) has one, and with --tta=hflip the AUCs with and without the flip.

Cross-dataset evaluation: with `--records_dir` naming another data set's records (a manifest
whose label vocabulary differs from the run's), the model is scored on the labels both
vocabularies share (`trainer.evaluation.vocabularies`), the reports go to
`runs/demo/reports_on_<data set>/` unless --output_dir says otherwise, and `auc.json` ("cross_dataset")
and `auc.md` name the labels compared and those left out:

    python -m trainer.evaluate --run_dir=runs/demo --records_dir=data/tfrecords-chexpert

Every label's metrics count only the images where the records know it (`label_mask`: uncertain
and unmentioned labels are left out).

Same run, flags and records give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from cxr_cli import config_flags, console
from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.evaluation import calibration as calibration_lib
from trainer.evaluation import metrics, vocabularies
from trainer.evaluation import tta as tta_lib
from trainer.evaluation.localization import boxes as boxes_lib
from trainer.evaluation.report import figures as plots
from trainer.evaluation.report import files, formatting, markdown, model_card, page, published, tables
from trainer.model import export as export_lib
from trainer.model import run_dir as run_dir_lib

MODEL_SOURCES = ("auto", "export", "checkpoint")
CALIBRATION_METHODS = ("platt", "none")
# Where a cross-dataset evaluation writes by default, inside the run directory.
CROSS_DATASET_REPORTS_DIR = "reports_on_{dataset}"
# Records per Grad-CAM call (each brings its labelled findings' maps along): bounds the memory
# of the backward pass at large image sizes.
GRADCAM_BATCH_SIZE = 16

_log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The evaluation's settings; trainer/evaluate.py turns them into flags.


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The evaluation binary's settings (each field is a flag of the same name)."""

    run_dir: str = config_flags.field("runs/demo", "Run directory written by trainer.train.")
    split: str = config_flags.field("test", "Headline split.", tuple(manifest_lib.SPLITS))
    also_val: bool = config_flags.field(True, "Also evaluate val and choose the thresholds there.")
    bootstrap_resamples: int = config_flags.field(
        1000, "Patient-level bootstrap resamples for the 95% CIs (0: none)."
    )
    seed: int = config_flags.field(0, "Bootstrap RNG seed.")
    batch_size: int = config_flags.field(64, "Images per model call.")
    model: str = config_flags.field("auto", "export, checkpoint, or auto.", MODEL_SOURCES)
    records_dir: str | None = config_flags.field(
        None,
        "Records to evaluate; default: the run's. Another data set's records are scored on the labels "
        "both vocabularies share (reports in RUN_DIR/reports_on_<data set>).",
    )
    output_dir: str | None = config_flags.field(None, "Where to write; default: RUN_DIR/reports.")
    tta: str = config_flags.field(
        "none",
        "hflip: mean of the image's and its mirror image's probabilities (AUCs without it beside).",
        tta_lib.TTA_MODES,
    )
    calibration: str = config_flags.field(
        "platt", "Per-label Platt scaling fitted on val, or none.", CALIBRATION_METHODS
    )
    localization: bool = config_flags.field(
        True, "Score Grad-CAM maps of the boxed findings against the box file."
    )
    boxes_csv: str | None = config_flags.field(
        None, "Box file; default: BBox_List_2017.csv[.gz] in the records' data_dir."
    )
    boxes_image_size: int = config_flags.field(
        boxes_lib.NIH_IMAGE_SIZE, "Side of the images the box coordinates refer to."
    )
    mean_maps: bool = config_flags.field(True, "Also average a Grad-CAM map of every image of the split.")
    serve_operating_point: bool = config_flags.field(
        True,
        "Write the thresholds and calibration chosen here into the run's export (its serving_default), "
        "when this evaluation scores that export on the run's records into RUN_DIR/reports.",
    )

    def __post_init__(self) -> None:
        if self.split not in manifest_lib.SPLITS:
            raise console.ValidationError(
                f"EvaluateConfig.split must be one of {manifest_lib.SPLITS}, got {self.split!r}."
            )
        if self.model not in MODEL_SOURCES:
            raise console.ValidationError(
                f"EvaluateConfig.model: the model source must be one of {MODEL_SOURCES}, got {self.model!r}."
            )
        if self.batch_size < 1:
            raise console.ValidationError(f"EvaluateConfig.batch_size must be >= 1, got {self.batch_size}.")
        if self.tta not in tta_lib.TTA_MODES:
            raise console.ValidationError(
                f"EvaluateConfig.tta must be one of {tta_lib.TTA_MODES}, got {self.tta!r}."
            )
        if self.calibration not in CALIBRATION_METHODS:
            raise console.ValidationError(
                f"EvaluateConfig.calibration must be one of {CALIBRATION_METHODS}, got {self.calibration!r}."
            )
        if self.boxes_image_size < 1:
            raise console.ValidationError(
                f"EvaluateConfig.boxes_image_size must be >= 1, got {self.boxes_image_size}."
            )
        if self.bootstrap_resamples < 0:
            raise console.ValidationError(
                f"EvaluateConfig.bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}."
            )

    @property
    def bootstrap(self) -> metrics.BootstrapConfig:
        """The patient-level bootstrap of every interval."""
        return metrics.BootstrapConfig(resamples=self.bootstrap_resamples, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """The model's output on one split, in record order.

    Attributes:
      split: split name.
      probabilities: float32 [N, L], the columns of the compared labels.
      labels: int64 [N, L], the same columns.
      metadata: `schema.METADATA_KEYS` -> numpy [N] (strings decoded).
      plain_probabilities: float32 [N, L] of the images as they are, when `probabilities`
        come from a test-time augmentation (else None).
      known: bool [N, L], True where the records know the label; None when every label of
        every image is known (every NIH record).
    """

    split: str
    probabilities: np.ndarray
    labels: np.ndarray
    metadata: dict[str, np.ndarray]
    plain_probabilities: np.ndarray | None = None
    known: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A loaded model: `fn(uint8 [B, N, N, 1]) -> float32 [B, 15]`, where it came from, and N.

    Attributes:
      weights: the model's weights in Keras order (None for an export written before the
        export carried them); what Grad-CAM is given, so that it explains the model scored.
      weights_sha256: `trainer.model.export.weights_sha256` of `weights`, naming them in the reports.
    """

    fn: Callable[[np.ndarray], np.ndarray]
    path: str
    source: str
    image_size: int
    weights: list[np.ndarray] | None = None
    weights_sha256: str | None = None


def load_predictor(run_dir: str, *, source: str = "auto", labels: Sequence[str] = schema.LABELS) -> Predictor:
    """Loads the run's model for evaluation on record pixels.

    Args:
      run_dir: the run directory.
      source: "export" (`export/`, signature `serve_pixels`), "checkpoint"
        (`checkpoints/best.keras`), or "auto" (the export when present, else the checkpoint).
      labels: the run's vocabulary (config.json's labels), which the export's labels.json must list.

    Returns:
      A `Predictor`.

    Raises:
      ValueError: unknown source, the chosen model is missing, or the export's labels.json
        lists other labels than `labels`.
    """
    if source not in MODEL_SOURCES:
        raise console.ValidationError(f"model source must be one of {MODEL_SOURCES}, got {source!r}.")
    export_dir = run_dir_lib.path(run_dir, run_dir_lib.EXPORT_DIR)
    checkpoint = run_dir_lib.path(run_dir, run_dir_lib.BEST_CHECKPOINT)
    has_export = tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb"))
    if source == "auto":
        source = "export" if has_export else "checkpoint"
    if source == "export":
        if not has_export:
            raise console.ValidationError(
                f"{export_dir} holds no SavedModel; export the run or use --model=checkpoint."
            )
        return _load_export(export_dir, labels)
    if not tf.io.gfile.exists(checkpoint):
        raise console.ValidationError(
            f"{checkpoint} does not exist, and neither does a SavedModel in {export_dir}."
        )
    return _load_checkpoint(checkpoint)


def _load_export(export_dir: str, labels: Sequence[str]) -> Predictor:
    """The export's `serve_pixels` signature (the model alone, whatever its serving_default applies);
    its labels.json must list `labels`, the run's vocabulary (`open_run` pairs it with the records')."""
    image_size = int(export_lib.read_labels(export_dir, expected=labels)["image_size"])
    loaded = tf.saved_model.load(export_dir)
    signature = loaded.signatures[export_lib.SERVE_PIXELS]

    def fn(images: np.ndarray) -> np.ndarray:
        return signature(images=tf.constant(images, tf.uint8))[export_lib.PROBABILITIES].numpy()

    # Keep the loaded object alive as long as the signature is used.
    fn.loaded = loaded  # type: ignore[attr-defined]
    weights = export_lib.weights_of(loaded)
    digest = None if weights is None else export_lib.weights_sha256(weights)
    return Predictor(fn, export_dir, "export", image_size, weights, digest)


def _load_checkpoint(checkpoint: str) -> Predictor:
    from trainer.model import models

    model = models.load_model(checkpoint)
    image_size = int(model.input_shape[1])

    def keras_fn(images: np.ndarray) -> np.ndarray:
        return np.asarray(model(tf.constant(images, tf.uint8), training=False), dtype=np.float32)

    weights = model.get_weights()
    return Predictor(
        keras_fn, checkpoint, "checkpoint", image_size, weights, export_lib.weights_sha256(weights)
    )


def predict_split(
    predictor: Predictor,
    records_dir: str,
    manifest: manifest_lib.Manifest,
    split: str,
    *,
    batch_size: int = 64,
    tta: str = "none",
    shared: vocabularies.SharedLabels | None = None,
) -> SplitPredictions:
    """Runs the model over every record of `split`, in record order.

    With `tta` other than "none", `probabilities` are the augmented ones and
    `plain_probabilities` those of the same call without augmentation (`trainer.evaluation.tta`).
    With `shared`, the columns are the compared labels (`shared.compared`): the model's outputs
    `shared.model_indices` against the records' labels `shared.records_indices`.

    Raises:
      ValueError: the split is missing or empty, its image size is not the model's, or an
        unknown tta mode.
    """
    if tta not in tta_lib.TTA_MODES:
        raise console.ValidationError(f"tta must be one of {tta_lib.TTA_MODES}, got {tta!r}.")
    if split not in manifest.splits or manifest.splits[split].records == 0:
        raise console.ValidationError(
            f"Records directory {records_dir!r} has no {split!r} records to evaluate."
        )
    if manifest.image_size != predictor.image_size:
        raise console.ValidationError(
            f"The records in {records_dir!r} are {manifest.image_size}x{manifest.image_size} but the model "
            f"{predictor.path!r} takes {predictor.image_size}x{predictor.image_size}; evaluate on the records "
            f"the run was trained on (--records_dir)."
        )
    # Evaluation mode: fixed order, one pass, the last partial batch kept.
    batches = dataset_lib.build_dataset(
        records_dir, split, batch_size=batch_size, training=False, with_metadata=True, label_state=True
    )
    progress = console.Progress(
        manifest.splits[split].records, description=f"evaluate {split}", unit="images"
    )
    chunks = _predict_batches(predictor, batches, tta=tta, progress=progress)
    progress.close()
    model_columns = list(shared.model_indices) if shared is not None else slice(None)
    records_columns = list(shared.records_indices) if shared is not None else slice(None)
    known = np.concatenate(chunks["known"])[:, records_columns] > 0.5
    return SplitPredictions(
        split=split,
        probabilities=np.concatenate(chunks["augmented"]).astype(np.float32)[:, model_columns],
        labels=np.rint(np.concatenate(chunks["labels"])).astype(np.int64)[:, records_columns],
        metadata=_decoded_metadata(chunks["metadata"]),
        plain_probabilities=None
        if tta == "none"
        else np.concatenate(chunks["plain"]).astype(np.float32)[:, model_columns],
        known=None if known.all() else known,
    )


def _predict_batches(
    predictor: Predictor, batches: tf.data.Dataset, *, tta: str, progress: console.Progress
) -> dict[str, Any]:
    """The model's outputs and the records' labels, label mask and metadata, batch by batch."""
    chunks: dict[str, Any] = {"augmented": [], "plain": [], "labels": [], "known": []}
    chunks["metadata"] = {key: [] for key in schema.METADATA_KEYS}
    for images, state, batch_metadata in batches:
        without, augmented = tta_lib.predict_both(predictor.fn, images.numpy(), mode=tta)
        chunks["augmented"].append(augmented)
        chunks["plain"].append(without)
        chunks["labels"].append(state[schema.LABELS_KEY].numpy())
        chunks["known"].append(state[schema.LABEL_MASK_KEY].numpy())
        for key, value in batch_metadata.items():
            chunks["metadata"][key].append(value.numpy())
        progress.advance(len(images))
    return chunks


def _decoded_metadata(metadata: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    meta = {}
    for key, chunks in metadata.items():
        values = np.concatenate(chunks)
        meta[key] = np.array([v.decode("utf-8") for v in values]) if values.dtype == object else values
    return meta


def summarize_split(
    predictions: SplitPredictions,
    *,
    bootstrap: metrics.BootstrapConfig,
    reference_thresholds: dict[str, float | None] | None = None,
    labels: tuple[str, ...] = schema.LABELS,
) -> dict[str, Any]:
    """`metrics.summarize` of one split (its `labels`, over the known ones), with subgroups by
    sex, age band and view position."""
    meta = predictions.metadata
    subgroups = {
        "sex": [str(sex) or metrics.UNKNOWN_SUBGROUP for sex in meta[schema.SEX_KEY]],
        "age_band": [metrics.age_band(int(age)) for age in meta[schema.AGE_KEY]],
        "view_position": [str(view) or metrics.UNKNOWN_SUBGROUP for view in meta[schema.VIEW_POSITION_KEY]],
    }
    return metrics.summarize(
        predictions.labels,
        predictions.probabilities,
        patient_ids=meta[schema.PATIENT_ID_KEY],
        subgroups=subgroups,
        labels=labels,
        bootstrap=bootstrap,
        reference_thresholds=reference_thresholds,
        known=predictions.known,
    )


@dataclasses.dataclass(frozen=True)
class EvaluationRun:
    """What an evaluation reads before predicting: the run's config, its records and model."""

    run_dir: str
    config: dict[str, Any]
    records_dir: str
    manifest: manifest_lib.Manifest
    output_dir: str
    predictor: Predictor
    # The labels the model's and the records' vocabularies share (all of them, same order,
    # when the records are the run's own kind).
    shared: vocabularies.SharedLabels

    @property
    def labels(self) -> tuple[str, ...]:
        """The compared labels, by the model's names: the columns of every summary."""
        return self.shared.compared


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Evaluates the run's model and writes the reports (see the module docstring).

    With `config.also_val` (and val records), the thresholds are chosen on val and their
    sensitivity/specificity reported on `config.split`, and the Platt scaling is fitted there.

    Args:
      config: the evaluation's settings (validated when it was built).

    Returns:
      The report dict written as `auc.json`.

    Raises:
      ValueError: a missing run config, model, records directory or split, or an unreadable
        box file, named.
    """
    run = open_run(config)
    predictions = predict_splits(run, splits_to_predict(config, run.manifest), config)
    summaries, threshold_split = summarize_splits(
        predictions, config.split, bootstrap=config.bootstrap, labels=run.labels
    )
    fitted, calibration_report = calibrate(predictions, method=config.calibration, labels=run.labels)
    located = localize_headline(run, predictions[config.split], config) if config.localization else None
    report = build_report(
        run,
        config,
        summaries,
        threshold_split=threshold_split,
        tta=tta_summary(
            predictions[config.split],
            summaries[config.split],
            bootstrap=config.bootstrap,
            mode=config.tta,
            labels=run.labels,
        ),
        calibration=calibration_report,
        localization=located,
    )
    write_reports(
        run.output_dir,
        report,
        predictions,
        run.manifest,
        history_path=run_dir_lib.path(run.run_dir, run_dir_lib.HISTORY_FILE),
        calibration=fitted,
        localization=located,
        run_config=run.config,
    )
    if config.serve_operating_point:
        serve_operating_point(run, report, fitted)
    return report


def open_run(config: EvaluateConfig) -> EvaluationRun:
    """Reads the run's config and the records' manifest, and loads the model.

    Raises:
      ValueError: no run config, no records directory named, or no model, naming the file.
    """
    run_config = run_dir_lib.read_config(config.run_dir)
    records_dir = config.records_dir or run_config.get("records_dir")
    if not records_dir:
        raise console.ValidationError(
            f"{run_dir_lib.path(config.run_dir, run_dir_lib.CONFIG_FILE)} names no records_dir; pass --records_dir."
        )
    manifest = manifest_lib.read_manifest(records_dir)
    shared = _shared_labels(run_config, manifest)
    return EvaluationRun(
        run_dir=config.run_dir,
        config=run_config,
        records_dir=records_dir,
        manifest=manifest,
        output_dir=_output_dir(config, shared, manifest),
        predictor=load_predictor(config.run_dir, source=config.model, labels=_run_labels(run_config)),
        shared=shared,
    )


def reports_dir(config: EvaluateConfig) -> str:
    """Where `evaluate(config)` writes: --output_dir, else RUN_DIR/reports, or for another data
    set's records RUN_DIR/reports_on_<data set>.

    Raises:
      ValueError, ManifestError: as `open_run`, for the run config and the records' manifest.
    """
    run_config = run_dir_lib.read_config(config.run_dir)
    if config.output_dir:
        return config.output_dir
    records_dir = config.records_dir or run_config.get("records_dir")
    manifest = manifest_lib.read_manifest(records_dir, check_shards=False)
    return _output_dir(config, _shared_labels(run_config, manifest), manifest)


def _shared_labels(
    run_config: Mapping[str, Any], manifest: manifest_lib.Manifest
) -> vocabularies.SharedLabels:
    return vocabularies.shared_labels(_run_labels(run_config), manifest.labels)


def _run_labels(run_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The run's vocabulary: config.json's labels (runs that predate them trained on NIH's)."""
    return tuple(run_config.get("labels", schema.LABELS))


def _output_dir(
    config: EvaluateConfig, shared: vocabularies.SharedLabels, manifest: manifest_lib.Manifest
) -> str:
    if config.output_dir:
        return config.output_dir
    if shared.identical:
        return run_dir_lib.path(config.run_dir, run_dir_lib.REPORTS_DIR)
    # Another data set's scores must not replace the run's own reports (thresholds.json).
    return run_dir_lib.path(config.run_dir, CROSS_DATASET_REPORTS_DIR.format(dataset=manifest.dataset))


def serve_operating_point(
    run: EvaluationRun, report: dict[str, Any], calibration: calibration_lib.Calibration | None
) -> str | None:
    """Writes the report's thresholds and `calibration` into the run's export (`serving_default`).

    Only for the operating point of the run itself: when the model scored was the export, on
    the records the run was trained on, with the reports in the run's own folder. Then the
    export and `reports/thresholds.json` hold the same operating point.

    Returns:
      The export directory re-written, or None (why not is logged).
    """
    own_reports = run_dir_lib.path(run.run_dir, run_dir_lib.REPORTS_DIR)
    reasons = [
        (run.predictor.source != "export", f"the model scored is {run.predictor.path}, not the export"),
        (
            not _same_path(run.records_dir, run.config.get("records_dir")),
            f"the records {run.records_dir} are not the run's",
        ),
        (not _same_path(run.output_dir, own_reports), f"the reports go to {run.output_dir}"),
        (not run.shared.identical, "the records' labels are not the model's"),
    ]
    why_not = [reason for applies, reason in reasons if applies]
    if why_not:
        _log.info("The export's serving_default is left as it is: %s.", "; ".join(why_not))
        return None
    point = operating_point(
        report["thresholds"]["values"],
        calibration,
        tta=report["tta"]["mode"],
        source=f"{run_dir_lib.THRESHOLDS_FILE} (Youden J on {report['thresholds']['source_split']})",
        labels=run.labels,
    )
    return export_lib.write_operating_point(run.predictor.path, point)


def _same_path(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and os.path.normpath(a) == os.path.normpath(b)


def operating_point(
    thresholds: Mapping[str, float | None],
    calibration: calibration_lib.Calibration | None,
    *,
    tta: str,
    source: str,
    labels: Sequence[str] = schema.LABELS,
) -> export_lib.OperatingPoint:
    """The export's `OperatingPoint` for the model's `labels`: the thresholds (the default where
    undefined) and Platt scalings."""
    scalings = [None if calibration is None else calibration.scalings.get(label) for label in labels]
    values = [thresholds.get(label) for label in labels]
    return export_lib.OperatingPoint(
        slopes=tuple(1.0 if s is None else s.slope for s in scalings),
        intercepts=tuple(0.0 if s is None else s.intercept for s in scalings),
        calibrated=tuple(s is not None for s in scalings),
        thresholds=tuple(tables.DEFAULT_THRESHOLD if v is None else float(v) for v in values),
        epsilon=calibration_lib.EPSILON,
        tta=tta,
        source=source,
        labels=tuple(labels),
    )


def splits_to_predict(config: EvaluateConfig, manifest: manifest_lib.Manifest) -> list[str]:
    """The headline split, preceded by val when it is asked for and the records hold val images."""
    has_val = bool(manifest.splits.get("val") and manifest.splits["val"].records)
    if config.also_val and config.split != "val" and has_val:
        return ["val", config.split]  # Val first: its thresholds are applied to the headline split.
    return [config.split]


def predict_splits(
    run: EvaluationRun, splits: list[str], config: EvaluateConfig
) -> dict[str, SplitPredictions]:
    """`predict_split` of each split, in the order given."""
    return {
        name: predict_split(
            run.predictor,
            run.records_dir,
            run.manifest,
            name,
            batch_size=config.batch_size,
            tta=config.tta,
            shared=run.shared,
        )
        for name in splits
    }


def localize_headline(
    run: EvaluationRun, predictions: SplitPredictions, config: EvaluateConfig
) -> Localization:
    """`localize` of the headline split with the config's box file and settings.

    The box file and the Grad-CAM classes are NIH's: another vocabulary is reported as not scored.
    """
    if run.labels != schema.LABELS:
        message = (
            f"Grad-CAM boxes are scored on NIH's 15 labels; this evaluation compares {len(run.labels)} labels "
            "of another vocabulary. AUCs and calibration above are unaffected."
        )
        return Localization({"split": predictions.split, "status": "other_vocabulary", "message": message})
    return localize(
        run.run_dir,
        run.records_dir,
        run.manifest,
        predictions,
        bootstrap=config.bootstrap,
        boxes_csv=config.boxes_csv,
        boxes_image_size=config.boxes_image_size,
        mean_maps=config.mean_maps,
        # A Grad-CAM call holds the activations of every image for the backward pass.
        batch_size=min(config.batch_size, GRADCAM_BATCH_SIZE),
        weights=run.predictor.weights,
    )


def build_report(
    run: EvaluationRun,
    config: EvaluateConfig,
    summaries: dict[str, Any],
    *,
    threshold_split: str,
    tta: dict[str, Any],
    calibration: dict[str, Any],
    localization: Localization | None,
) -> dict[str, Any]:
    """The report dict written as `auc.json` (the headline split's summary first)."""
    split = config.split
    return {
        "run_dir": run.run_dir,
        "model_path": run.predictor.path,
        "model_source": run.predictor.source,
        "weights_sha256": run.predictor.weights_sha256,
        "model_name": run.config.get("model"),
        "records_dir": run.records_dir,
        "manifest_sha256": manifest_lib.manifest_sha256(run.records_dir),
        "split_mode": run.manifest.options.get("split"),
        "split": split,
        "labels": list(run.labels),
        **cross_dataset_report(run),
        "splits": {name: summaries[name] for name in [split, *[s for s in summaries if s != split]]},
        "thresholds": {
            "source_split": threshold_split,
            "method": "youden_j",
            "values": tables.thresholds_from(summaries[threshold_split]),
        },
        "published": published.PUBLISHED_AUC,
        "tta": tta,
        "calibration": calibration,
        "localization": localization.report
        if localization
        else {"status": "disabled", "message": "--nolocalization"},
    }


def cross_dataset_report(run: EvaluationRun) -> dict[str, Any]:
    """{"cross_dataset": both vocabularies, the labels compared and those left out}, or {} when
    the records' vocabulary is the run's."""
    if run.shared.identical:
        return {}
    return {
        "cross_dataset": {
            "model": {
                "dataset": run.config.get("dataset", "nih"),
                "labels": list(run.shared.model_labels),
            },
            "records": {"dataset": run.manifest.dataset, "labels": list(run.shared.records_labels)},
            **run.shared.to_json(),
        }
    }


def summarize_splits(
    predictions: Mapping[str, SplitPredictions],
    split: str,
    *,
    bootstrap: metrics.BootstrapConfig,
    labels: tuple[str, ...] = schema.LABELS,
) -> tuple[dict[str, Any], str]:
    """Summarizes val (when predicted) and the headline split; returns (summaries, threshold split).

    The operating thresholds are chosen on val when it was predicted and reported on `split`;
    otherwise they are chosen on `split` itself.
    """
    summaries: dict[str, Any] = {}
    reference = None
    if "val" in predictions and split != "val":
        summaries["val"] = summarize_split(predictions["val"], bootstrap=bootstrap, labels=labels)
        reference = tables.thresholds_from(summaries["val"])
    summaries[split] = summarize_split(
        predictions[split], bootstrap=bootstrap, reference_thresholds=reference, labels=labels
    )
    return summaries, "val" if reference is not None else split


def tta_summary(
    predictions: SplitPredictions,
    summary: dict[str, Any],
    *,
    bootstrap: metrics.BootstrapConfig,
    mode: str,
    labels: tuple[str, ...] = schema.LABELS,
) -> dict[str, Any]:
    """The AUCs with and without the test-time augmentation on one split (`{"mode": "none"}` without one).

    Args:
      predictions: the split's predictions, with `plain_probabilities` when `mode` is not "none".
      summary: `summarize_split` of the augmented probabilities.
      bootstrap: interval settings (the same resamples as the headline).
      mode: the `trainer.evaluation.tta` mode.
      labels: the summaries' labels.
    """
    if mode == "none":
        return {"mode": "none"}
    plain = metrics.summarize(
        predictions.labels,
        predictions.plain_probabilities,
        patient_ids=predictions.metadata[schema.PATIENT_ID_KEY],
        labels=labels,
        bootstrap=bootstrap,
        known=predictions.known,
    )
    return {
        "mode": mode,
        "split": predictions.split,
        "findings": [
            {"label": with_["label"], "auc_without": without["auc"], "auc_with": with_["auc"]}
            for without, with_ in zip(plain["findings"], summary["findings"])
        ],
        "mean_auc_14_without": plain["mean_auc_14"],
        "mean_auc_14_without_ci": plain["mean_auc_14_ci"],
        "mean_auc_14_with": summary["mean_auc_14"],
        "mean_auc_14_with_ci": summary["mean_auc_14_ci"],
    }


def calibrate(
    predictions: dict[str, SplitPredictions],
    *,
    method: str,
    source_split: str = "val",
    labels: tuple[str, ...] = schema.LABELS,
) -> tuple[calibration_lib.Calibration | None, dict[str, Any]]:
    """ECE and reliability bins of every split; with "platt", the scaling fitted on `source_split`.

    The calibration needs every label known: records with unknown labels are reported as not
    calibrated, with the reason.

    Returns:
      (the fitted `Calibration` or None, the report's "calibration" dict: method, num_bins,
      splits {name: `calibration.summarize`}, and when fitted source_split, parameters and
      calibrated {name: summary after the scaling}).
    """
    if any(p.known is not None for p in predictions.values()):
        note = (
            "some labels are unknown (uncertain or not mentioned) in the records; calibration needs all known"
        )
        return None, {"method": "none", "num_bins": calibration_lib.NUM_BINS, "splits": {}, "note": note}
    data: dict[str, Any] = {
        "method": method,
        "num_bins": calibration_lib.NUM_BINS,
        "splits": {
            name: calibration_lib.summarize(p.labels, p.probabilities, labels=labels)
            for name, p in predictions.items()
        },
    }
    if method == "none":
        return None, {**data, "note": "--calibration=none"}
    if source_split not in predictions:
        return None, {**data, "method": "none", "note": f"no {source_split} split evaluated to fit it on"}
    fitted = calibration_lib.fit(
        predictions[source_split].labels,
        predictions[source_split].probabilities,
        source_split=source_split,
        labels=labels,
    )
    data.update(
        source_split=source_split,
        parameters=fitted.to_json(),
        calibrated={
            name: calibration_lib.summarize(p.labels, fitted.apply(p.probabilities), labels=labels)
            for name, p in predictions.items()
        },
    )
    return fitted, data


@dataclasses.dataclass(frozen=True)
class Localization:
    """The localization report of one split: the dict for `auc.json`, the figures' data, the boxes read."""

    report: dict[str, Any]
    result: Any = None  # trainer.evaluation.localization.pipeline.LocalizationResult
    box_set: boxes_lib.BoxSet | None = None


def localize(
    run_dir: str,
    records_dir: str,
    manifest: manifest_lib.Manifest,
    predictions: SplitPredictions,
    *,
    bootstrap: metrics.BootstrapConfig,
    boxes_csv: str | None = None,
    boxes_image_size: int = boxes_lib.NIH_IMAGE_SIZE,
    mean_maps: bool = True,
    batch_size: int = 32,
    weights: list[np.ndarray] | None = None,
) -> Localization:
    """Reads the box file and scores the Grad-CAM maps of the split's boxed findings.

    Grad-CAM needs the Keras model: the architecture comes from `checkpoints/best.keras`, the
    weights from `weights` (the scored model's, so that the maps explain the probabilities the
    AUCs come from); without them, the checkpoint's own, said in the report.

    Every outcome is a report, never an exception for a missing box file or a model without
    Grad-CAM support: the "status" is "scored", "no_box_file", "no_boxed_images",
    "no_checkpoint", "unsupported_model" or "weights_mismatch", with a "message" saying why
    when not scored.

    Raises:
      ValueError: an explicit `boxes_csv` that is missing or not NIH's format, naming it.
    """
    split = predictions.split
    path = boxes_csv if boxes_csv is not None else _default_box_file(manifest)
    if path is None:
        return Localization(
            {"split": split, "status": "no_box_file", "message": _no_box_file_message(manifest)}
        )
    box_set = boxes_lib.read_boxes(
        path,
        image_size=manifest.image_size,
        images=set(predictions.metadata[schema.IMAGE_INDEX_KEY]),
        source_size=boxes_image_size,
        images_name=f"{split} records",
    )
    report: dict[str, Any] = {
        "split": split,
        "box_file": _box_file_summary(path, box_set, manifest, boxes_image_size),
    }
    explainer, about = _load_explainer(run_dir, weights)
    report.update(about)
    if explainer is None:
        return Localization(report, None, box_set)
    result = _score_maps(
        explainer,
        records_dir,
        predictions,
        box_set,
        bootstrap=bootstrap,
        batch_size=batch_size,
        mean_maps=mean_maps,
    )
    return _scored(report, result, box_set)


def _scored(report: dict[str, Any], result: Any, box_set: boxes_lib.BoxSet) -> Localization:
    """The localization with its scores, "scored" when any box was on an image of the split."""
    report = {**report, **result.summary}
    if result.summary["overall"]["pairs"]:
        return Localization({**report, "status": "scored"}, result, box_set)
    message = f"none of the box file's rows is on a {report['split']} image."
    return Localization({**report, **_not_scored("no_boxed_images", message)}, result, box_set)


def _default_box_file(manifest: manifest_lib.Manifest) -> str | None:
    """NIH's box file in the records' data directory (or one folder below it), if there is one."""
    data_dir = manifest.options.get("data_dir")
    return boxes_lib.find_box_file(data_dir) if data_dir else None


def _no_box_file_message(manifest: manifest_lib.Manifest) -> str:
    data_dir = manifest.options.get("data_dir")
    where = (
        f"in the records' data directory {data_dir!r} or one folder below it"
        if data_dir
        else "named: the records' manifest records no data_dir"
    )
    return f"no {boxes_lib.BOX_FILE_NAMES[0]}(.gz) {where}; pass --boxes_csv to score Grad-CAM maps against boxes."


def _box_file_summary(
    path: str, box_set: boxes_lib.BoxSet, manifest: manifest_lib.Manifest, source_size: int
) -> dict[str, Any]:
    """The report's "box_file": what was read, kept and rejected."""
    return {
        "path": path,
        "rows": box_set.rows,
        "boxes": len(box_set.boxes),
        "rejects": box_set.reject_counts(),
        "rejects_file": files.BOX_REJECTS_JSONL,
        "source_size": source_size,
        "image_size": manifest.image_size,
    }


def _score_maps(
    explainer: Any,
    records_dir: str,
    predictions: SplitPredictions,
    box_set: boxes_lib.BoxSet,
    *,
    bootstrap: metrics.BootstrapConfig,
    batch_size: int,
    mean_maps: bool,
) -> Any:
    """`localization.pipeline.localize_split` on the split's records and probabilities."""
    from trainer.evaluation.localization import (
        pipeline as localization_eval,
    )  # Reads records with TensorFlow, runs Keras.

    return localization_eval.localize_split(
        explainer,
        records_dir,
        predictions.split,
        box_set,
        probabilities=predictions.probabilities,
        image_indices=list(predictions.metadata[schema.IMAGE_INDEX_KEY]),
        patient_ids=predictions.metadata[schema.PATIENT_ID_KEY],
        bootstrap=bootstrap,
        batch_size=batch_size,
        mean_maps=mean_maps,
    )


def _load_explainer(run_dir: str, weights: list[np.ndarray] | None) -> tuple[Any, dict[str, Any]]:
    """(Grad-CAM on the run's Keras model with `weights`, which weights) or (None, status and why not)."""
    checkpoint = run_dir_lib.path(run_dir, run_dir_lib.BEST_CHECKPOINT)
    if not tf.io.gfile.exists(checkpoint):
        return None, _not_scored(
            "no_checkpoint", f"Grad-CAM needs the Keras model {checkpoint}, which does not exist."
        )
    from trainer.model import gradcam as gradcam_lib
    from trainer.model import models

    model = models.load_model(checkpoint)
    missing = gradcam_lib.missing_layers(model)
    if missing:
        return None, _not_scored(
            "unsupported_model",
            f"the run's model {model.name!r} has no layer named {' or '.join(map(repr, missing))}; Grad-CAM "
            "runs on the ResUNet (--model=resunet). AUCs and calibration above are unaffected.",
        )
    if weights is None:
        # An export written before it carried its weights: the checkpoint's own, said so.
        source = (
            f"{run_dir_lib.BEST_CHECKPOINT} (the scored export does not carry its weights; re-export the run)"
        )
    elif [tuple(w.shape) for w in model.get_weights()] != [tuple(w.shape) for w in weights]:
        return None, _not_scored(
            "weights_mismatch",
            f"the scored model's weights do not fit the architecture of {checkpoint}; Grad-CAM would "
            "explain another model. AUCs and calibration above are unaffected.",
        )
    else:
        model.set_weights(weights)
        source = "the scored model"
    about = {"weights_sha256": export_lib.weights_sha256(model.get_weights()), "weights_source": source}
    return gradcam_lib.GradCam(model), about


def _not_scored(status: str, message: str) -> dict[str, str]:
    return {"status": status, "message": message}


def write_reports(
    output_dir: str,
    report: dict[str, Any],
    predictions: dict[str, SplitPredictions],
    manifest: manifest_lib.Manifest,
    *,
    history_path: str | None = None,
    calibration: calibration_lib.Calibration | None = None,
    localization: Localization | None = None,
    run_config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Writes every report file and figure into `output_dir`; returns the paths written.

    With `run_config` (the run's `config.json`), also the model card.
    """
    join = lambda name: os.path.join(output_dir, name)  # noqa: E731
    split = report["split"]
    headline = report["splits"][split]
    written, figures = _write_base_figures(
        output_dir, report, predictions, manifest, history_path=history_path
    )
    written += _write_extra_figures(output_dir, report, localization, figures)
    if localization is not None and localization.box_set is not None:
        written.append(boxes_lib.write_rejects(join(files.BOX_REJECTS_JSONL), localization.box_set.rejects))

    report = dict(report, figures=figures)
    written.append(files.write_json(join(files.AUC_JSON), report))
    written.append(tables.write_auc_csv(join(files.AUC_CSV), headline, split=split))
    written.append(tables.write_thresholds_json(
        join(files.THRESHOLDS_JSON),
        report["thresholds"]["values"],
        source_split=report["thresholds"]["source_split"],
        run_dir=report["run_dir"],
        calibration=_stored_calibration(calibration, report["thresholds"]["values"]),
        tta=report["tta"]["mode"],
        weights_sha256=report.get("weights_sha256"),
        labels=report["labels"],
    ))  # fmt: skip
    written.append(
        _write_predictions(
            join(files.PREDICTIONS_CSV), predictions, split, calibration, labels=report["labels"]
        )
    )
    written.append(markdown.write_markdown(join(files.AUC_MD), report, figures=figures))
    if run_config is not None:
        history = (
            run_dir_lib.read_history(history_path)
            if history_path and tf.io.gfile.exists(history_path)
            else None
        )
        written.append(
            model_card.write_model_card(
                join(files.MODEL_CARD_MD), report, run_config=run_config, manifest=manifest, history=history
            )
        )
    # Last: the page embeds every file written above.
    written.append(page.write_index(output_dir))
    return written


def _write_predictions(
    path: str,
    predictions: dict[str, SplitPredictions],
    split: str,
    calibration: calibration_lib.Calibration | None,
    *,
    labels: tuple[str, ...] = schema.LABELS,
) -> str:
    """`predictions.csv`: the headline split's images first, with the calibrated probabilities."""
    order = [split, *[s for s in predictions if s != split]]
    probabilities = np.concatenate([predictions[s].probabilities for s in order])
    metadata = {
        "split": np.concatenate([[s] * len(predictions[s].labels) for s in order]),
        **{
            key: np.concatenate([predictions[s].metadata[key] for s in order]) for key in schema.METADATA_KEYS
        },
    }
    return tables.write_predictions_csv(
        path,
        probabilities,
        np.concatenate([predictions[s].labels for s in order]),
        metadata,
        label_names=labels,
        calibrated=None if calibration is None else calibration.apply(probabilities),
    )


def _write_base_figures(
    output_dir: str,
    report: dict[str, Any],
    predictions: dict[str, SplitPredictions],
    manifest: manifest_lib.Manifest,
    *,
    history_path: str | None,
) -> tuple[list[str], list[str]]:
    """ROC curves, training curves, label distribution and co-occurrence; (paths, figure names)."""
    join = lambda name: os.path.join(output_dir, name)  # noqa: E731
    split = report["split"]
    headline = report["splits"][split]
    run_name = os.path.basename(os.path.normpath(report["run_dir"]))
    figures = []
    written = [
        plots.plot_roc_curves(
            join(files.ROC_PNG),
            predictions[split].labels,
            predictions[split].probabilities,
            labels=report["labels"],
            title=f"ROC curves, {run_name}, {split} split ({headline['images']} images, "
            f"{headline['patients']} patients); mean AUC of 14 findings {formatting.fmt(headline['mean_auc_14'])}"
            f"\n{formatting.weights_tag(report.get('weights_sha256'))}",
        )
    ]
    figures.append(files.ROC_PNG)
    if history_path and tf.io.gfile.exists(history_path):
        history = run_dir_lib.read_history(history_path)
        written.append(
            plots.plot_training_curves(
                join(files.TRAINING_PNG), history, title=f"Training curves, {run_name}"
            )
        )
        figures.append(files.TRAINING_PNG)
    written.append(
        plots.plot_label_distribution(
            join(files.DISTRIBUTION_PNG),
            {name: manifest.label_counts(name) for name in manifest.splits},
            {name: info.records for name, info in manifest.splits.items()},
            title=f"Label prevalence per split ({report['records_dir']})",
            labels=manifest.labels,
        )
    )
    figures.append(files.DISTRIBUTION_PNG)
    written.append(
        plots.plot_label_cooccurrence(
            join(files.COOCCURRENCE_PNG),
            predictions[split].labels,
            title=f"Label co-occurrence, {split} split ({headline['images']} images): images with both labels",
            labels=report["labels"],
        )
    )
    figures.append(files.COOCCURRENCE_PNG)
    return written, figures


def _stored_calibration(
    calibration: calibration_lib.Calibration | None, thresholds: dict[str, float | None]
) -> dict[str, Any] | None:
    """The calibration as `thresholds.json` stores it: parameters and the thresholds' images."""
    if calibration is None:
        return None
    return {
        **calibration.to_json(),
        "calibrated_thresholds": {
            label: calibration.apply_threshold(label, t) for label, t in thresholds.items()
        },
    }


def _write_extra_figures(
    output_dir: str, report: dict[str, Any], localization: Localization | None, figures: list[str]
) -> list[str]:
    """The reliability diagram and the Grad-CAM figures; appends their names to `figures`."""
    join = lambda name: os.path.join(output_dir, name)  # noqa: E731
    written = []
    data = report["calibration"]
    series = {name: summary for name, summary in data["splits"].items()}
    series.update({f"{name} after Platt": summary for name, summary in data.get("calibrated", {}).items()})
    unchanged = list(data.get("parameters", {}).get("not_fitted", {}))
    if series:  # None without calibration (records with unknown labels).
        written.append(
            plots.plot_reliability(
                join(files.RELIABILITY_PNG),
                series,
                labels=report["labels"],
                omit={f"{name} after Platt": unchanged for name in data.get("calibrated", {})},
                title=f"Reliability diagrams ({data['num_bins']} bins); ECE per panel in the order of the legend; "
                f"{formatting.weights_tag(report.get('weights_sha256'))}",
            )
        )
        figures.append(files.RELIABILITY_PNG)
    result = localization.result if localization is not None else None
    if result is not None and result.samples:
        written.append(
            plots.plot_cam_overlays(
                join(files.LOCALIZATION_PNG),
                result.samples,
                title=f"Grad-CAM of the boxed finding ({report['split']} split), boxes in white; "
                f"{formatting.weights_tag(localization.report.get('weights_sha256'))}",
            )
        )
        figures.append(files.LOCALIZATION_PNG)
    if result is not None and result.mean_cams is not None:
        mean = result.mean_cams
        written.append(
            plots.plot_mean_cams(
                join(files.MEAN_CAM_PNG),
                mean.overall,
                mean.images,
                mean.by_finding,
                peak_counts=mean.peak_counts,
                title=f"Mean Grad-CAM maps over the {report['split']} split (each map scaled to [0, 1]); "
                f"{formatting.weights_tag(localization.report.get('weights_sha256'))}",
            )
        )
        figures.append(files.MEAN_CAM_PNG)
    return written
