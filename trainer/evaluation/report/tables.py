"""The machine-readable tables: `auc.csv`, `thresholds.json` and `predictions.csv`."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfrecords import schema
from trainer.evaluation.report import files
from trainer.evaluation.report.formatting import UNDEFINED

# The threshold of a label whose split could not define one (thresholds.json's "default").
DEFAULT_THRESHOLD = 0.5


def write_auc_csv(path: str, summary: Mapping[str, Any], *, split: str) -> str:
    """One row per label, then the two means; undefined cells read "undefined".

    Columns: split, label, auc, auc_ci_low, auc_ci_high, pr_auc, prevalence, positives,
    negatives, threshold, sensitivity, specificity.
    """
    columns = [
        "auc", "auc_ci_low", "auc_ci_high", "pr_auc", "prevalence", "positives", "negatives",
        "threshold", "sensitivity", "specificity",
    ]  # fmt: skip
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["split", "label", *columns])
    for finding in summary["findings"]:
        writer.writerow([split, finding["label"], *(_csv_cell(finding[c]) for c in columns)])
    low, high = summary["mean_auc_14_ci"]
    means = [
        ("mean_14_findings", summary["mean_auc_14"], low, high),
        ("mean_15_labels", summary["mean_auc_15"], None, None),
    ]
    for name, value, low, high in means:
        writer.writerow(
            [split, name, _csv_cell(value), _csv_cell(low), _csv_cell(high)] + [""] * (len(columns) - 3)
        )
    return files.write_text(path, buffer.getvalue())


def _csv_cell(value: Any) -> str:
    if value is None:
        return UNDEFINED
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def thresholds_from(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The Youden-J threshold of each label of a split's summary (None where undefined)."""
    return {finding["label"]: finding["threshold"] for finding in summary["findings"]}


def write_thresholds_json(
    path: str,
    thresholds: Mapping[str, float | None],
    *,
    source_split: str,
    run_dir: str = "",
    calibration: Mapping[str, Any] | None = None,
    tta: str = "none",
    labels: Sequence[str] = schema.LABELS,
    weights_sha256: str | None = None,
) -> str:
    """Writes `thresholds.json`, which `trainer.prediction.predictor` reads (for `labels`).

    {"method": "youden_j", "source_split": "val", "default": 0.5, "labels": [...],
     "thresholds": {label: float | None}, "tta": "none", "weights_sha256": the weights they were
     chosen for, "calibration": {...} (optional)};
    a None threshold means the split could not define one and prediction uses "default" for
    that label. The thresholds apply to the model's own probabilities (with the named test-time
    augmentation); "calibration" (`trainer.evaluation.calibration.Calibration.to_json()`, plus the
    thresholds' images under it as "calibrated_thresholds") maps those probabilities to
    calibrated ones, and the same images are selected on either scale.
    """
    data = {
        "method": "youden_j",
        "rule": "finding present when probability >= threshold",
        "source_split": source_split,
        "run_dir": run_dir,
        "default": DEFAULT_THRESHOLD,
        "labels": list(labels),
        "thresholds": {label: thresholds.get(label) for label in labels},
        "tta": tta,
        "weights_sha256": weights_sha256,
    }
    if calibration is not None:
        data["calibration"] = dict(calibration)
    return files.write_json(path, data)


def write_predictions_csv(
    path: str,
    probabilities: np.ndarray,
    labels: np.ndarray,
    metadata: Mapping[str, Sequence[Any]],
    *,
    label_names: Sequence[str] = schema.LABELS,
    calibrated: np.ndarray | None = None,
) -> str:
    """One row per image: its metadata, true `finding_labels`, the L probabilities (and calibrated).

    Args:
      path: output file.
      probabilities: float [N, L] in `label_names` order.
      labels: 0/1 [N, L].
      metadata: column -> N values: "split" (optional, first) and `schema.METADATA_KEYS`.
      label_names: the L labels (NIH's by default).
      calibrated: float [N, L], the probabilities after the calibration; written as the
        columns `calibrated_<label>` after the L probabilities.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = [key for key in ("split", *schema.METADATA_KEYS) if key in metadata]
    extra = [] if calibrated is None else [calibrated_column(label) for label in label_names]
    writer.writerow([*keys, "finding_labels", *label_names, *extra])
    for i in range(probabilities.shape[0]):
        row = [metadata[key][i] for key in keys]
        row.append(schema.LABEL_SEPARATOR.join(name for name, on in zip(label_names, labels[i]) if on))
        row.extend(f"{p:.6f}" for p in probabilities[i])
        if calibrated is not None:
            row.extend(f"{p:.6f}" for p in calibrated[i])
        writer.writerow(row)
    return files.write_text(path, buffer.getvalue())


def calibrated_column(label: str) -> str:
    """The `predictions.csv` column of a label's calibrated probability."""
    return f"calibrated_{label}"
