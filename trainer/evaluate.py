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
    thresholds.json     per-finding Youden-J thresholds chosen on val (read by trainer.predict)
    predictions.csv     per image: split, metadata, true labels, 15 probabilities
    roc_curves.png, training_curves.png, label_distribution.png, label_cooccurrence.png

Same run, flags and records give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from cxr_cli import console

if __name__ == "__main__":
    console.configure()  # Before TensorFlow loads: quiet unless --verbosity=1 (cxr_cli/console.py).

import numpy as np
import tensorflow as tf

from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer import metrics
from trainer import report as report_lib
from trainer import run_dir as run_dir_lib

MODEL_SOURCES = ("auto", "export", "checkpoint")


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """The model's output on one split, in record order.

    Attributes:
      split: split name.
      probabilities: float32 [N, 15].
      labels: int64 [N, 15].
      metadata: `schema.METADATA_KEYS` -> numpy [N] (strings decoded).
    """

    split: str
    probabilities: np.ndarray
    labels: np.ndarray
    metadata: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A loaded model: `fn(uint8 [B, N, N, 1]) -> float32 [B, 15]`, where it came from, and N."""

    fn: Callable[[np.ndarray], np.ndarray]
    path: str
    source: str
    image_size: int


def load_predictor(run_dir: str, *, source: str = "auto") -> Predictor:
    """Loads the run's model for evaluation on record pixels.

    Args:
      run_dir: the run directory.
      source: "export" (`export/`, signature `serve_pixels`), "checkpoint"
        (`checkpoints/best.keras`), or "auto" (the export when present, else the checkpoint).

    Returns:
      A `Predictor`.

    Raises:
      ValueError: unknown source, or the chosen model is missing.
    """
    if source not in MODEL_SOURCES:
        raise ValueError(f"model source must be one of {MODEL_SOURCES}, got {source!r}.")
    export_dir = run_dir_lib.path(run_dir, run_dir_lib.EXPORT_DIR)
    checkpoint = run_dir_lib.path(run_dir, run_dir_lib.BEST_CHECKPOINT)
    has_export = tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb"))
    if source == "auto":
        source = "export" if has_export else "checkpoint"
    if source == "export":
        if not has_export:
            raise ValueError(f"{export_dir} holds no SavedModel; export the run or use --model=checkpoint.")
        from trainer import export as export_lib  # The trainer's module: labels.json reader.

        image_size = int(export_lib.read_labels(export_dir)["image_size"])
        loaded = tf.saved_model.load(export_dir)
        signature = loaded.signatures[export_lib.SERVE_PIXELS]

        def fn(images: np.ndarray) -> np.ndarray:
            return signature(images=tf.constant(images, tf.uint8))["probabilities"].numpy()

        # Keep the loaded object alive as long as the signature is used.
        fn.loaded = loaded  # type: ignore[attr-defined]
        return Predictor(fn, export_dir, "export", image_size)
    if not tf.io.gfile.exists(checkpoint):
        raise ValueError(f"{checkpoint} does not exist, and neither does a SavedModel in {export_dir}.")
    from trainer import models

    model = models.load_model(checkpoint)
    image_size = int(model.input_shape[1])

    def keras_fn(images: np.ndarray) -> np.ndarray:
        return np.asarray(model(tf.constant(images, tf.uint8), training=False), dtype=np.float32)

    return Predictor(keras_fn, checkpoint, "checkpoint", image_size)


def predict_split(
    predictor: Predictor,
    records_dir: str,
    manifest: manifest_lib.Manifest,
    split: str,
    *,
    batch_size: int = 64,
) -> SplitPredictions:
    """Runs the model over every record of `split`, in record order.

    Raises:
      ValueError: the split is missing or empty, or its image size is not the model's.
    """
    if split not in manifest.splits or manifest.splits[split].records == 0:
        raise ValueError(f"Records directory {records_dir!r} has no {split!r} records to evaluate.")
    if manifest.image_size != predictor.image_size:
        raise ValueError(
            f"The records in {records_dir!r} are {manifest.image_size}x{manifest.image_size} but the model "
            f"{predictor.path!r} takes {predictor.image_size}x{predictor.image_size}; evaluate on the records "
            f"the run was trained on (--records_dir)."
        )
    probabilities, labels, metadata = [], [], {key: [] for key in schema.METADATA_KEYS}
    # Evaluation mode: fixed order, one pass, the last partial batch kept.
    batches = dataset_lib.build_dataset(
        records_dir, split, batch_size=batch_size, training=False, with_metadata=True
    )
    progress = console.Progress(
        manifest.splits[split].records, description=f"evaluate {split}", unit="images"
    )
    for images, batch_labels, batch_metadata in batches:
        probabilities.append(predictor.fn(images.numpy()))
        labels.append(batch_labels.numpy())
        for key, value in batch_metadata.items():
            metadata[key].append(value.numpy())
        progress.advance(len(batch_labels))
    progress.close()
    meta = {}
    for key, chunks in metadata.items():
        values = np.concatenate(chunks)
        meta[key] = np.array([v.decode("utf-8") for v in values]) if values.dtype == object else values
    return SplitPredictions(
        split=split,
        probabilities=np.concatenate(probabilities).astype(np.float32),
        labels=np.rint(np.concatenate(labels)).astype(np.int64),
        metadata=meta,
    )


def summarize_split(
    predictions: SplitPredictions,
    *,
    bootstrap: metrics.BootstrapConfig,
    reference_thresholds: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """`metrics.summarize` of one split, with subgroups by sex, age band and view position."""
    meta = predictions.metadata
    subgroups = {
        "sex": meta[schema.SEX_KEY],
        "age_band": [metrics.age_band(int(age)) for age in meta[schema.AGE_KEY]],
        "view_position": meta[schema.VIEW_POSITION_KEY],
    }
    return metrics.summarize(
        predictions.labels,
        predictions.probabilities,
        patient_ids=meta[schema.PATIENT_ID_KEY],
        subgroups=subgroups,
        bootstrap=bootstrap,
        reference_thresholds=reference_thresholds,
    )


def evaluate(
    run_dir: str,
    *,
    split: str = "test",
    also_val: bool = True,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    model_source: str = "auto",
    records_dir: str | None = None,
    output_dir: str | None = None,
) -> dict[str, Any]:
    """Evaluates the run's model and writes the reports (see the module docstring).

    Args:
      run_dir: the run directory (`config.json`, `export/` or `checkpoints/best.keras`, `history.csv`).
      split: the headline split, "test" by default.
      also_val: also evaluate "val" (when `split` is not val and the records have val images);
        the thresholds are then chosen on val and their sensitivity/specificity reported on `split`.
      bootstrap_resamples: patient-level bootstrap resamples for the 95% intervals (0: none).
      seed: the bootstrap's RNG seed.
      batch_size: images per model call.
      model_source: "auto", "export" or "checkpoint"; see `load_predictor`.
      records_dir: the records to evaluate on; default the run config's `records_dir`.
      output_dir: where to write; default `run_dir/reports`.

    Returns:
      The report dict written as `auc.json`.

    Raises:
      ValueError: a missing run config, model, records directory or split, named.
    """
    if split not in manifest_lib.SPLITS:
        raise ValueError(f"split must be one of {manifest_lib.SPLITS}, got {split!r}.")
    bootstrap = metrics.BootstrapConfig(resamples=bootstrap_resamples, seed=seed)
    config = run_dir_lib.read_config(run_dir)
    records_dir = records_dir or config.get("records_dir")
    if not records_dir:
        raise ValueError(
            f"{run_dir_lib.path(run_dir, run_dir_lib.CONFIG_FILE)} names no records_dir; pass --records_dir."
        )
    output_dir = output_dir or run_dir_lib.path(run_dir, run_dir_lib.REPORTS_DIR)
    manifest = manifest_lib.read_manifest(records_dir)
    predictor = load_predictor(run_dir, source=model_source)

    splits = [split]
    if also_val and split != "val" and manifest.splits.get("val") and manifest.splits["val"].records:
        splits.insert(0, "val")  # Val first: its thresholds are applied to the headline split.
    predictions = {
        name: predict_split(predictor, records_dir, manifest, name, batch_size=batch_size) for name in splits
    }
    summaries: dict[str, Any] = {}
    reference = None
    if "val" in predictions and split != "val":
        summaries["val"] = summarize_split(predictions["val"], bootstrap=bootstrap)
        reference = report_lib.thresholds_from(summaries["val"])
    summaries[split] = summarize_split(
        predictions[split], bootstrap=bootstrap, reference_thresholds=reference
    )
    threshold_split = "val" if reference is not None else split
    thresholds = report_lib.thresholds_from(summaries[threshold_split])

    report = {
        "run_dir": run_dir,
        "model_path": predictor.path,
        "model_source": predictor.source,
        "model_name": config.get("model"),
        "records_dir": records_dir,
        "manifest_sha256": manifest_lib.manifest_sha256(records_dir),
        "split_mode": manifest.options.get("split"),
        "split": split,
        "labels": list(schema.LABELS),
        "splits": {name: summaries[name] for name in [split, *[s for s in summaries if s != split]]},
        "thresholds": {"source_split": threshold_split, "method": "youden_j", "values": thresholds},
        "published": report_lib.PUBLISHED_AUC,
    }
    write_reports(
        output_dir,
        report,
        predictions,
        manifest,
        history_path=run_dir_lib.path(run_dir, run_dir_lib.HISTORY_FILE),
    )
    return report


def write_reports(
    output_dir: str,
    report: dict[str, Any],
    predictions: dict[str, SplitPredictions],
    manifest: manifest_lib.Manifest,
    *,
    history_path: str | None = None,
) -> list[str]:
    """Writes every report file and figure into `output_dir`; returns the paths written."""
    join = lambda name: os.path.join(output_dir, name)  # noqa: E731
    split = report["split"]
    headline = report["splits"][split]
    run_name = os.path.basename(os.path.normpath(report["run_dir"]))
    figures = []
    written = [
        report_lib.plot_roc_curves(
            join(report_lib.ROC_PNG),
            predictions[split].labels,
            predictions[split].probabilities,
            title=f"ROC curves, {run_name}, {split} split ({headline['images']} images, "
            f"{headline['patients']} patients); mean AUC of 14 findings {report_lib.fmt(headline['mean_auc_14'])}",
        )
    ]
    figures.append(report_lib.ROC_PNG)
    if history_path and tf.io.gfile.exists(history_path):
        history = run_dir_lib.read_history(history_path)
        written.append(
            report_lib.plot_training_curves(
                join(report_lib.TRAINING_PNG), history, title=f"Training curves, {run_name}"
            )
        )
        figures.append(report_lib.TRAINING_PNG)
    written.append(
        report_lib.plot_label_distribution(
            join(report_lib.DISTRIBUTION_PNG),
            {name: manifest.label_counts(name) for name in manifest.splits},
            {name: info.records for name, info in manifest.splits.items()},
            title=f"Label prevalence per split ({report['records_dir']})",
        )
    )
    figures.append(report_lib.DISTRIBUTION_PNG)
    written.append(
        report_lib.plot_label_cooccurrence(
            join(report_lib.COOCCURRENCE_PNG),
            predictions[split].labels,
            title=f"Label co-occurrence, {split} split ({headline['images']} images): images with both labels",
        )
    )
    figures.append(report_lib.COOCCURRENCE_PNG)

    report = dict(report, figures=figures)
    written.append(report_lib.write_json(join(report_lib.AUC_JSON), report))
    written.append(report_lib.write_auc_csv(join(report_lib.AUC_CSV), headline, split=split))
    written.append(report_lib.write_thresholds_json(
        join(report_lib.THRESHOLDS_JSON),
        report["thresholds"]["values"],
        source_split=report["thresholds"]["source_split"],
        run_dir=report["run_dir"],
    ))  # fmt: skip
    order = [split, *[s for s in predictions if s != split]]
    written.append(
        report_lib.write_predictions_csv(
            join(report_lib.PREDICTIONS_CSV),
            np.concatenate([predictions[s].probabilities for s in order]),
            np.concatenate([predictions[s].labels for s in order]),
            {
                "split": np.concatenate([[s] * len(predictions[s].labels) for s in order]),
                **{
                    key: np.concatenate([predictions[s].metadata[key] for s in order])
                    for key in schema.METADATA_KEYS
                },
            },
        )
    )
    written.append(report_lib.write_markdown(join(report_lib.AUC_MD), report, figures=figures))
    return written


# ---------------------------------------------------------------------------------------------
# Entry point. Flags are derived from EvaluateConfig when the binary runs, never on import;
# absl and cxr_cli are imported there, so the library above never depends on absl.flags.


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """The evaluation binary's settings (each field is a flag of the same name)."""

    run_dir: str = dataclasses.field(
        default="runs/demo", metadata={"help": "Run directory written by trainer.train."}
    )
    split: str = dataclasses.field(
        default="test", metadata={"help": "Headline split.", "choices": tuple(manifest_lib.SPLITS)}
    )
    also_val: bool = dataclasses.field(
        default=True, metadata={"help": "Also evaluate val and choose the thresholds there."}
    )
    bootstrap_resamples: int = dataclasses.field(
        default=1000, metadata={"help": "Patient-level bootstrap resamples for the 95% CIs (0: none)."}
    )
    seed: int = dataclasses.field(default=0, metadata={"help": "Bootstrap RNG seed."})
    batch_size: int = dataclasses.field(default=64, metadata={"help": "Images per model call."})
    model: str = dataclasses.field(
        default="auto", metadata={"help": "export, checkpoint, or auto.", "choices": MODEL_SOURCES}
    )
    records_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "Records to evaluate; default: the run's."}
    )
    output_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "Where to write; default: RUN_DIR/reports."}
    )

    def __post_init__(self) -> None:
        if self.split not in manifest_lib.SPLITS:
            raise ValueError(
                f"EvaluateConfig.split must be one of {manifest_lib.SPLITS}, got {self.split!r}."
            )
        if self.model not in MODEL_SOURCES:
            raise ValueError(f"EvaluateConfig.model must be one of {MODEL_SOURCES}, got {self.model!r}.")
        if self.batch_size < 1:
            raise ValueError(f"EvaluateConfig.batch_size must be >= 1, got {self.batch_size}.")
        if self.bootstrap_resamples < 0:
            raise ValueError(
                f"EvaluateConfig.bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}."
            )


def main(argv: list[str], *, holders: dict) -> None:
    """Evaluates the run named by the flags and logs the headline AUC."""
    from absl import app, logging

    from cxr_cli import config_flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_flags.build_config(EvaluateConfig, holders)
    report = evaluate(
        config.run_dir,
        split=config.split,
        also_val=config.also_val,
        bootstrap_resamples=config.bootstrap_resamples,
        seed=config.seed,
        batch_size=config.batch_size,
        model_source=config.model,
        records_dir=config.records_dir,
        output_dir=config.output_dir,
    )
    headline = report["splits"][report["split"]]
    output_dir = config.output_dir or run_dir_lib.path(config.run_dir, run_dir_lib.REPORTS_DIR)
    logging.info(
        "%s split: mean AUC of 14 findings %s (95%% CI %s); reports in %s",
        report["split"],
        report_lib.fmt(headline["mean_auc_14"]),
        report_lib.fmt_ci(*headline["mean_auc_14_ci"]),
        output_dir,
    )
    print(f"Wrote {output_dir}/{report_lib.AUC_MD}")


def run() -> None:
    """Console-script entry point: defines the flags from EvaluateConfig, then runs `main`."""
    import functools

    from absl import app

    from cxr_cli import config_flags

    console.configure()  # As a console script TensorFlow is loaded by now; this sets the rest.
    holders = config_flags.define_from_dataclass(EvaluateConfig)
    app.run(
        console.exit_on_expected_errors(functools.partial(main, holders=holders), program="trainer.evaluate")
    )


if __name__ == "__main__":
    run()
