"""Writers of the evaluation reports: JSON, CSV, Markdown and figures (matplotlib, Agg).

`trainer.evaluation.pipeline` computes a report dict and calls these; each writer takes plain data, so
tests call them on hand-made arrays. All files go through `tf.io.gfile` (gs:// works) and hold no
time stamps, so the same inputs give byte-identical files.

The report dict (`auc.json` is exactly this):

    {"run_dir", "model_path", "model_source", "records_dir", "manifest_sha256", "split_mode",
     "split": "test",                      # the split the headline numbers come from
     "labels": [...15...],
     "splits": {"test": <metrics.summarize output>, "val": ...},
     "thresholds": {"source_split", "method", "values": {label: float | None}},
     "published": {source: {label: auc}}}
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import tensorflow as tf
from matplotlib import colors as mpl_colors
from matplotlib import patches as mpl_patches
from matplotlib import ticker as mpl_ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as sk_metrics

from tfrecords import schema
from trainer.model import run_dir as run_dir_lib

UNDEFINED = "undefined"
AUC_JSON = "auc.json"
AUC_CSV = "auc.csv"
AUC_MD = "auc.md"
THRESHOLDS_JSON = os.path.basename(run_dir_lib.THRESHOLDS_FILE)
PREDICTIONS_CSV = "predictions.csv"
ROC_PNG = "roc_curves.png"
TRAINING_PNG = "training_curves.png"
DISTRIBUTION_PNG = "label_distribution.png"
COOCCURRENCE_PNG = "label_cooccurrence.png"
RELIABILITY_PNG = "reliability_diagram.png"
LOCALIZATION_PNG = "gradcam_boxes.png"
MEAN_CAM_PNG = "gradcam_mean.png"
BOX_REJECTS_JSONL = "box_rejects.jsonl"

# Published per-finding ROC AUCs on the real NIH ChestX-ray14 data (each with its own split),
# in the order of their tables. "No Finding" was not reported by every paper.
PUBLISHED_AUC: dict[str, dict[str, float | None]] = {
    "Wang et al. 2017": {
        "Atelectasis": 0.716, "Cardiomegaly": 0.807, "Effusion": 0.784, "Infiltration": 0.609,
        "Mass": 0.706, "Nodule": 0.671, "Pneumonia": 0.633, "Pneumothorax": 0.806,
        "Consolidation": 0.708, "Edema": 0.835, "Emphysema": 0.815, "Fibrosis": 0.769,
        "Pleural_Thickening": 0.708, "Hernia": 0.767, "No Finding": None,
    },
    "Yao et al. 2017": {
        "Atelectasis": 0.772, "Cardiomegaly": 0.904, "Effusion": 0.859, "Infiltration": 0.695,
        "Mass": 0.792, "Nodule": 0.717, "Pneumonia": 0.713, "Pneumothorax": 0.841,
        "Consolidation": 0.788, "Edema": 0.882, "Emphysema": 0.829, "Fibrosis": 0.767,
        "Pleural_Thickening": 0.765, "Hernia": 0.914, "No Finding": 0.76,
    },
    "CheXNet 2017": {
        "Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Effusion": 0.8638, "Infiltration": 0.7345,
        "Mass": 0.8676, "Nodule": 0.7802, "Pneumonia": 0.7680, "Pneumothorax": 0.8887,
        "Consolidation": 0.7901, "Edema": 0.8878, "Emphysema": 0.9371, "Fibrosis": 0.8047,
        "Pleural_Thickening": 0.8062, "Hernia": 0.9164, "No Finding": None,
    },
    "ResUNet thesis 2023": {
        "Atelectasis": 0.72, "Cardiomegaly": 0.74, "Effusion": 0.77, "Infiltration": 0.66,
        "Mass": 0.66, "Nodule": 0.60, "Pneumonia": 0.81, "Pneumothorax": 0.70,
        "Consolidation": 0.75, "Edema": 0.90, "Emphysema": 0.78, "Fibrosis": 0.65,
        "Pleural_Thickening": 0.62, "Hernia": 0.83, "No Finding": 0.72,
    },
}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Formatting helpers.


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with `digits` decimals, or "undefined" for None/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return UNDEFINED
    return f"{value:.{digits}f}"


def fmt_ci(low: float | None, high: float | None, digits: int = 3) -> str:
    if low is None or high is None:
        return UNDEFINED
    return f"{low:.{digits}f}–{high:.{digits}f}"


def _write_text(path: str, text: str) -> str:
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
    return path


def _write_bytes(path: str, data: bytes) -> str:
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------------------------------------
# Machine-readable files.


def write_json(path: str, data: Mapping[str, Any]) -> str:
    """Writes strict JSON (undefined values must already be None); returns the path."""
    return _write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


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
    return _write_text(path, buffer.getvalue())


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
) -> str:
    """Writes `thresholds.json`, which `trainer.prediction.predictor` reads.

    {"method": "youden_j", "source_split": "val", "default": 0.5, "labels": [...],
     "thresholds": {label: float | None}, "tta": "none", "calibration": {...} (optional)};
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
        "default": 0.5,
        "labels": list(schema.LABELS),
        "thresholds": {label: thresholds.get(label) for label in schema.LABELS},
        "tta": tta,
    }
    if calibration is not None:
        data["calibration"] = dict(calibration)
    return write_json(path, data)


def write_predictions_csv(
    path: str,
    probabilities: np.ndarray,
    labels: np.ndarray,
    metadata: Mapping[str, Sequence[Any]],
) -> str:
    """One row per image: its metadata, true `finding_labels`, and the 15 probabilities.

    Args:
      path: output file.
      probabilities: float [N, 15] in `schema.LABELS` order.
      labels: 0/1 [N, 15].
      metadata: column -> N values: "split" (optional, first) and `schema.METADATA_KEYS`.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = [key for key in ("split", *schema.METADATA_KEYS) if key in metadata]
    writer.writerow([*keys, "finding_labels", *schema.LABELS])
    for i in range(probabilities.shape[0]):
        row = [metadata[key][i] for key in keys]
        row.append(schema.multi_hot_to_labels(labels[i]))
        row.extend(f"{p:.6f}" for p in probabilities[i])
        writer.writerow(row)
    return _write_text(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# Markdown.


def write_markdown(path: str, report: Mapping[str, Any], *, figures: Sequence[str] = ()) -> str:
    """Writes `render_markdown(report)` to `path`; returns the path."""
    return _write_text(path, render_markdown(report, figures=figures))


def render_markdown(report: Mapping[str, Any], *, figures: Sequence[str] = ()) -> str:
    """The human-readable report: headline table, published comparison, val, subgroups, figures."""
    split = report["split"]
    summary = report["splits"][split]
    bootstrap = summary["bootstrap"]
    lines = [
        f"# AUC report: {os.path.basename(os.path.normpath(report['run_dir'])) or report['run_dir']}",
        "",
    ]
    lines += [
        f"- Split: **{split}** ({summary['images']} images, {summary['patients']} patients), split mode "
        f"`{report.get('split_mode') or 'unknown'}`",
        f"- Records: `{report['records_dir']}` (manifest sha256 `{report['manifest_sha256']}`)",
        f"- Model: `{report['model_path']}` ({report['model_source']})",
        f"- 95% intervals: percentile bootstrap over {bootstrap['unit']}s, {bootstrap['resamples']} "
        f"resamples, seed {bootstrap['seed']}",
        f"- Thresholds: Youden J on the **{report['thresholds']['source_split']}** split "
        f"(in `{THRESHOLDS_JSON}`, used by `trainer.prediction.predictor`)",
        "",
        f"Mean AUC over the 14 findings: **{fmt(summary['mean_auc_14'])}** "
        f"(95% CI {fmt_ci(*summary['mean_auc_14_ci'])}; {summary['findings_defined']} of 14 defined); "
        f"over all 15 labels: **{fmt(summary['mean_auc_15'])}**.",
        "",
        "An AUC is *undefined* where the split holds no positive (or no negative) image of the finding.",
        "",
        f"## Per finding ({split} split)",
        "",
    ]
    has_reference = "sensitivity_at_reference" in summary["findings"][0]
    header = "| Finding | AUC | 95% CI | PR AUC | Prevalence | Positives | Youden threshold (on this split) | Sensitivity | Specificity |"
    if has_reference:
        header += f" Sens. / spec. at {report['thresholds']['source_split']} threshold |"
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for f in summary["findings"]:
        row = (
            f"| {f['label']} | {fmt(f['auc'])} | {fmt_ci(f['auc_ci_low'], f['auc_ci_high'])} | {fmt(f['pr_auc'])} "
            f"| {fmt(f['prevalence'] * 100 if f['prevalence'] is not None else None, 1)}% | {f['positives']} "
            f"| {fmt(f['threshold'])} | {fmt(f['sensitivity'])} | {fmt(f['specificity'])} |"
        )
        if has_reference:
            row += f" {fmt(f['sensitivity_at_reference'])} / {fmt(f['specificity_at_reference'])} |"
        lines.append(row)
    lines += [
        f"| **Mean of 14 findings** | **{fmt(summary['mean_auc_14'])}** | {fmt_ci(*summary['mean_auc_14_ci'])} |"
        + " |" * (header.count("|") - 4),
        f"| **Mean of 15 labels** | **{fmt(summary['mean_auc_15'])}** | |" + " |" * (header.count("|") - 4),
        "",
    ]
    lines += _published_section(report)
    for other, other_summary in report["splits"].items():
        if other != split:
            lines += _other_split_section(split, summary, other, other_summary)
    lines += _subgroup_section(summary, split)
    lines += tta_section(report)
    lines += calibration_section(report)
    lines += localization_section(report)
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{name}]({name})" for name in figures]
        lines.append("")
    return "\n".join(lines)


def _published_section(report: Mapping[str, Any]) -> list[str]:
    split = report["split"]
    summary = report["splits"][split]
    ours = {f["label"]: f["auc"] for f in summary["findings"]}
    sources = list(PUBLISHED_AUC)
    order = list(PUBLISHED_AUC[sources[0]])  # The published tables' order.
    lines = [
        "## Beside published results",
        "",
        f"The published AUCs below were measured on the **real NIH ChestX-ray14 data, with other splits** "
        f"(each paper its own train/test partition). Ours are from the **{split}** split of "
        f"`{report['records_dir']}` (split mode `{report.get('split_mode') or 'unknown'}`, "
        f"{summary['images']} images). The numbers are not directly comparable; on the synthetic demo "
        f"data the comparison only shows the format.",
        "",
        f"| Finding | Ours ({split}) | " + " | ".join(sources) + " |",
        "|" + "---|" * (len(sources) + 2),
    ]
    for label in order:
        # As published: 0.72 stays 0.72, 0.8094 stays 0.8094.
        cells = [
            f"{PUBLISHED_AUC[s][label]:g}" if PUBLISHED_AUC[s][label] is not None else "–" for s in sources
        ]
        lines.append(f"| {label} | {fmt(ours.get(label))} | " + " | ".join(cells) + " |")
    means = []
    for s in sources:
        values = [PUBLISHED_AUC[s][label] for label in schema.FINDINGS]
        means.append(fmt(float(np.mean(values))))
    lines.append(
        f"| **Mean of 14 findings** | **{fmt(summary['mean_auc_14'])}** | " + " | ".join(means) + " |"
    )
    lines += ["", "(Published means computed from the rows above.)", ""]
    return lines


def _other_split_section(split: str, summary: Mapping, other: str, other_summary: Mapping) -> list[str]:
    lines = [
        f"## {other} split ({other_summary['images']} images, {other_summary['patients']} patients)",
        "",
        f"| Finding | AUC ({other}) | 95% CI ({other}) | AUC ({split}) | Youden threshold ({other}) |",
        "|---|---|---|---|---|",
    ]
    for f_other, f in zip(other_summary["findings"], summary["findings"]):
        lines.append(
            f"| {f['label']} | {fmt(f_other['auc'])} | {fmt_ci(f_other['auc_ci_low'], f_other['auc_ci_high'])} "
            f"| {fmt(f['auc'])} | {fmt(f_other['threshold'])} |"
        )
    lines += [
        f"| **Mean of 14 findings** | **{fmt(other_summary['mean_auc_14'])}** "
        f"| {fmt_ci(*other_summary['mean_auc_14_ci'])} | {fmt(summary['mean_auc_14'])} | |",
        "",
    ]
    return lines


def _subgroup_section(summary: Mapping, split: str) -> list[str]:
    titles = {"sex": "sex", "age_band": "age band in years", "view_position": "view position"}
    lines = []
    for attribute, groups in summary.get("subgroups", {}).items():
        if not groups:
            continue
        values = list(groups)
        lines += [
            f"## AUC by {titles.get(attribute, attribute)} ({split} split)",
            "",
            "Cells: AUC (positives). "
            + "; ".join(
                f"{v}: {groups[v]['images']} images, {groups[v]['patients']} patients" for v in values
            )
            + ".",
            "",
            "| Finding | " + " | ".join(values) + " |",
            "|" + "---|" * (len(values) + 1),
        ]
        for label in summary_labels(summary):
            cells = [f"{fmt(groups[v]['auc'][label])} ({groups[v]['positives'][label]})" for v in values]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append(
            "| **Mean of 14 findings** | "
            + " | ".join(f"**{fmt(groups[v]['mean_auc_14'])}**" for v in values)
            + " |"
        )
        lines.append("")
    return lines


def summary_labels(summary: Mapping[str, Any]) -> list[str]:
    return [f["label"] for f in summary["findings"]]


# ---------------------------------------------------------------------------------------------
# Figures. Each builds a matplotlib Figure (no pyplot global state) and saves a PNG.

_DPI = 110


def _save(figure: Figure, path: str) -> str:
    # The Agg canvas directly, without pyplot: no global backend to choose, works headless.
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # No "Software"/date metadata: identical inputs give identical bytes.
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return _write_bytes(path, buffer.getvalue())


def _label_colors(n: int) -> list:
    # tab20 holds 20 distinguishable colours; one per label.
    cmap = matplotlib.colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def plot_roc_curves(
    path: str,
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    labels: Sequence[str] = schema.LABELS,
    title: str = "",
) -> str:
    """One ROC curve per label, its AUC in the legend (undefined ones listed without a curve)."""
    y_true = np.asarray(y_true).astype(bool)
    figure = Figure(figsize=(11, 7.5))
    ax = figure.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance (AUC 0.5)")
    styles = ["-", "--"]
    for k, (label, color) in enumerate(zip(labels, _label_colors(len(labels)))):
        column = y_true[:, k]
        if column.any() and not column.all():
            fpr, tpr, _ = sk_metrics.roc_curve(column, y_score[:, k])
            auc = sk_metrics.auc(fpr, tpr)
            ax.plot(
                fpr, tpr, color=color, linestyle=styles[k // 10], linewidth=1.6, label=f"{label}  {auc:.3f}"
            )
        else:
            missing = "no positives" if not column.any() else "no negatives"
            ax.plot([], [], color=color, linestyle=":", label=f"{label}  undefined ({missing})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(title or "ROC curves per finding")
    ax.grid(alpha=0.3)
    ax.legend(title="Finding  AUC", loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9, frameon=False)
    figure.tight_layout()
    return _save(figure, path)


def plot_training_curves(path: str, history: Mapping[str, Sequence[float]], *, title: str = "") -> str:
    """Loss, binary accuracy and AUC (train against validation) per epoch, and the learning rate.

    Args:
      path: output PNG.
      history: columns of `history.csv`: epoch, learning_rate, loss, binary_accuracy, auc, val_* (any
        missing column is left out of its panel).
    """
    epochs = np.asarray(history.get("epoch", np.arange(len(next(iter(history.values()))))), dtype=float)
    # Keras counts epochs from 0 in CSVLogger; people count from 1.
    if epochs.size and epochs.min() == 0:
        epochs = epochs + 1
    figure = Figure(figsize=(12, 8))
    panels = [
        ("loss", "Loss (binary cross-entropy)"),
        ("binary_accuracy", "Binary accuracy"),
        ("auc", "ROC AUC"),
    ]
    for index, (key, name) in enumerate(panels):
        ax = figure.add_subplot(2, 2, index + 1)
        for prefix, label, style in (("", "train", "-o"), ("val_", "validation", "-s")):
            if prefix + key in history:
                ax.plot(
                    epochs, np.asarray(history[prefix + key], dtype=float), style, markersize=4, label=label
                )
        if key in ("binary_accuracy", "auc") and f"val_{key}" in history:
            values = np.asarray(history[f"val_{key}"], dtype=float)
            best = int(np.nanargmax(values)) if np.isfinite(values).any() else None
            if best is not None:
                ax.plot(epochs[best], values[best], "*", color="tab:red", markersize=12, zorder=3)
                ax.annotate(
                    f"best val {values[best]:.3f} (epoch {epochs[best]:g})",
                    (epochs[best], values[best]),
                    textcoords="offset points",
                    xytext=(0, -18),
                    ha="right" if best == len(values) - 1 else "center",
                    fontsize=8,
                    color="tab:red",
                )
        ax.set_title(name)
        ax.xaxis.set_major_locator(mpl_ticker.MaxNLocator(integer=True))
        ax.set_xlabel("Epoch")
        ax.set_ylabel(name.split(" (")[0])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9)
    ax = figure.add_subplot(2, 2, 4)
    # Runs before the column took Keras' name logged it as "lr".
    lr_column = next((c for c in (run_dir_lib.LEARNING_RATE_COLUMN, "lr") if c in history), None)
    if lr_column is not None:
        ax.plot(epochs, np.asarray(history[lr_column], dtype=float), "-o", color="tab:purple", markersize=4)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.xaxis.set_major_locator(mpl_ticker.MaxNLocator(integer=True))
    ax.set_title("Learning rate")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Learning rate")
    ax.grid(alpha=0.3)
    figure.suptitle(title or "Training curves", fontsize=14)
    figure.tight_layout()
    return _save(figure, path)


# The one history reader (empty cells become NaN), under the name this module always had.
read_history = run_dir_lib.read_history


def plot_label_distribution(
    path: str, label_counts: Mapping[str, Sequence[int]], records: Mapping[str, int], *, title: str = ""
) -> str:
    """Prevalence (% of images) of each label in each split, as grouped horizontal bars.

    Args:
      path: output PNG.
      label_counts: split -> positives per label in `schema.LABELS` order (from the manifest).
      records: split -> number of images.
    """
    splits = [s for s in ("train", "val", "test") if s in label_counts] + [
        s for s in label_counts if s not in ("train", "val", "test")
    ]
    figure = Figure(figsize=(11, 8))
    ax = figure.add_subplot(1, 1, 1)
    n = len(schema.LABELS)
    height = 0.8 / max(1, len(splits))
    positions = np.arange(n)
    colors = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}
    for i, split in enumerate(splits):
        counts = np.asarray(label_counts[split], dtype=float)
        prevalence = 100.0 * counts / max(1, records[split])
        bars = ax.barh(
            positions + (i - (len(splits) - 1) / 2) * height,
            prevalence,
            height=height,
            color=colors.get(split),
            label=f"{split} ({records[split]} images)",
        )
        ax.bar_label(bars, labels=[f"{p:.1f}" for p in prevalence], fontsize=7, padding=2)
    ax.set_yticks(positions, labels=list(schema.LABELS))
    ax.invert_yaxis()  # First label on top, as in the tables.
    ax.set_xlabel("Prevalence (% of the split's images)")
    ax.set_title(title or "Label prevalence per split")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.08)
    ax.legend(loc="upper right")  # The top rows (rare findings) leave that corner free.
    figure.tight_layout()
    return _save(figure, path)


def plot_label_cooccurrence(path: str, y_true: np.ndarray, *, title: str = "") -> str:
    """Heatmap of how many images carry both labels; the diagonal is each label's count.

    Colour is on a log scale (Infiltration and No Finding dwarf Hernia); every cell shows its count.
    """
    y = np.asarray(y_true, dtype=np.int64)
    counts = y.T @ y
    figure = Figure(figsize=(10.5, 9))
    ax = figure.add_subplot(1, 1, 1)
    norm = mpl_colors.LogNorm(vmin=1, vmax=max(2, int(counts.max())))
    masked = np.ma.masked_where(counts == 0, counts)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    image = ax.imshow(masked, cmap=cmap, norm=norm)
    n = counts.shape[0]
    for i in range(n):
        for j in range(n):
            value = counts[i, j]
            rgba = cmap(norm(max(value, 1)))
            light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5
            ax.text(
                j, i, str(value), ha="center", va="center", fontsize=7,
                color="black" if (light or value == 0) else "white",
                fontweight="bold" if i == j else "normal",
            )  # fmt: skip
    ax.set_xticks(range(n), labels=list(schema.LABELS), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(schema.LABELS))
    ax.set_title(title or f"Label co-occurrence ({y.shape[0]} images): images with both labels")
    colorbar = figure.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("Images (log scale)")
    figure.tight_layout()
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Test-time augmentation, calibration and localization: sections and figures.


def tta_section(report: Mapping[str, Any]) -> list[str]:
    """Markdown: AUCs with and without the test-time augmentation, from the same run."""
    tta = report.get("tta")
    if not tta:
        return []
    lines = ["## Test-time augmentation", ""]
    if tta["mode"] == "none":
        return lines + [
            "Not used: each image is predicted once. `--tta=hflip` averages the probabilities of the image "
            "and its mirror image and reports the AUCs with and without it.",
            "",
        ]
    lines += [
        f"`{tta['mode']}`: each image's probabilities are the mean of the image's and its mirror image's "
        f"(left and right swapped). The tables above use them; below, the same model and images "
        f"({tta['split']} split) without it.",
        "",
        f"| Finding | AUC without | AUC with {tta['mode']} | Difference |",
        "|---|---|---|---|",
    ]
    for f in tta["findings"]:
        difference = (
            None if f["auc_without"] is None or f["auc_with"] is None else f["auc_with"] - f["auc_without"]
        )
        lines.append(
            f"| {f['label']} | {fmt(f['auc_without'])} | {fmt(f['auc_with'])} | {_signed(difference)} |"
        )
    without, with_ = tta["mean_auc_14_without"], tta["mean_auc_14_with"]
    difference = None if without is None or with_ is None else with_ - without
    lines += [
        f"| **Mean of 14 findings** | **{fmt(without)}** ({fmt_ci(*tta['mean_auc_14_without_ci'])}) "
        f"| **{fmt(with_)}** ({fmt_ci(*tta['mean_auc_14_with_ci'])}) | {_signed(difference)} |",
        "",
    ]
    return lines


def calibration_section(report: Mapping[str, Any]) -> list[str]:
    """Markdown: per-label ECE on val and test, before and after the Platt scaling fitted on val."""
    data = report.get("calibration")
    if not data:
        return []
    splits = list(data["splits"])
    lines = [
        "## Calibration",
        "",
        f"Expected calibration error (ECE): over {data['num_bins']} equal-width bins of the predicted "
        "probability, the image-weighted mean gap between a bin's mean probability and its share of "
        f"positive images; 0 is perfect. Reliability diagrams: `{RELIABILITY_PNG}`.",
        "",
    ]
    calibrated = data.get("calibrated", {})
    if data["method"] == "platt":
        lines += [
            f"Recalibration: Platt scaling per label fitted on **{data['source_split']}**, "
            "p' = sigmoid(slope * logit(p) + intercept), stored in "
            f"`{THRESHOLDS_JSON}` and applied by `trainer.prediction.predictor`. It is increasing, so AUCs and the "
            "images above each threshold do not change. ECE after it on the split it was fitted on is "
            "in-sample; on the other split it is the honest figure.",
            "",
        ]
    else:
        lines += [f"Recalibration: none ({data.get('note', 'not requested')}).", ""]
    header = [
        "Label",
        *(f"ECE {s}" for s in splits),
        *(f"ECE {s} after Platt" for s in calibrated),
        "Platt slope / intercept",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    parameters = data.get("parameters", {}).get("parameters", {})
    not_fitted = data.get("parameters", {}).get("not_fitted", {})
    for k, label in enumerate(report["labels"]):
        cells = [fmt(data["splits"][s]["findings"][k]["ece"]) for s in splits]
        cells += [fmt(calibrated[s]["findings"][k]["ece"]) for s in calibrated]
        p = parameters.get(label)
        if p is not None:
            cells.append(f"{p['slope']:.3f} / {p['intercept']:.3f}")
        else:
            cells.append(f"not fitted: {not_fitted[label]}" if label in not_fitted else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    means = [fmt(data["splits"][s]["mean_ece_14"]) for s in splits] + [
        fmt(calibrated[s]["mean_ece_14"]) for s in calibrated
    ]
    lines += ["| **Mean of 14 findings** | " + " | ".join(f"**{m}**" for m in means) + " | |", ""]
    return lines


def localization_section(report: Mapping[str, Any]) -> list[str]:
    """Markdown: the Grad-CAM maps of boxed findings scored against the boxes, or why not."""
    data = report.get("localization")
    if not data:
        return []
    lines = ["## Localization (Grad-CAM against bounding boxes)", ""]
    box_file = data.get("box_file")
    if box_file:
        rejected = {reason: n for reason, n in box_file["rejects"].items() if n}
        lines += [
            f"Box file `{box_file['path']}`: {box_file['rows']} rows, {box_file['boxes']} boxes on the "
            f"{data['split']} split's images, scaled from {box_file['source_size']} to {box_file['image_size']} "
            f"pixels; rejected rows"
            + (": " + ", ".join(f"{reason} {n}" for reason, n in rejected.items()) if rejected else ": none")
            + f" (each with its reason in `{BOX_REJECTS_JSONL}`).",
            "",
        ]
    if data["status"] != "scored":
        return lines + [f"**Not scored:** {data['message']}", ""]
    overall = data["overall"]
    lines += [
        f"For every ({data['split']} image, boxed finding) pair, the Grad-CAM map of that finding at the "
        "records' size against the union of its boxes: **pointing game** (the map's maximum inside a "
        "box; a flat peak counts the share of its pixels inside), **energy inside** (the share of the "
        f"map's mass inside the boxes), **IoU** of the boxes with the region where the map is at least "
        f"{data['cam_threshold']:g} x its maximum. 95% intervals: bootstrap over patients "
        f"({data['bootstrap']['resamples']} resamples). A map without positive evidence scores 0 "
        f"({overall['empty_maps']} of {overall['pairs']}).",
        "",
        "| Finding | Pairs | Patients | Pointing game (95% CI) | Energy inside (95% CI) | IoU (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for f in [*data["findings"], {**overall, "label": "**All pairs**"}]:
        cells = [
            f"{fmt(f[name])} ({fmt_ci(f[f'{name}_ci_low'], f[f'{name}_ci_high'])})" for name in _CAM_SCORES
        ]
        lines.append(f"| {f['label']} | {f['pairs']} | {f['patients']} | " + " | ".join(cells) + " |")
    lines.append("")
    mean_maps = data.get("mean_maps")
    if mean_maps:
        row, col = mean_maps["peak_cell"]
        lines += [
            f"Mean maps (`{MEAN_CAM_PNG}`) over the {mean_maps['images']} images of the split, each image's "
            f"map of its most probable finding: {100 * mean_maps['peak_cell_share']:.1f}% of these maps peak "
            f"in the same cell (row {row}, column {col} of a {mean_maps['grid']}x{mean_maps['grid']} grid). "
            "A share near 100% would mean a map that points at one place whatever the image shows.",
            "",
        ]
    return lines


_CAM_SCORES = ("pointing_game", "energy_inside", "iou")


def _signed(value: float | None) -> str:
    if value is None:
        return UNDEFINED
    text = f"{value:+.3f}"
    return "0.000" if text in ("+0.000", "-0.000") else text  # No sign on what rounds to zero.


def plot_reliability(
    path: str,
    series: Mapping[str, Mapping[str, Any]],
    *,
    labels: Sequence[str] = schema.LABELS,
    omit: Mapping[str, Sequence[str]] | None = None,
    title: str = "",
) -> str:
    """Reliability diagrams as small multiples: one panel per label, one curve per series.

    Args:
      path: output PNG.
      series: name (e.g. "val", "test", "test after Platt") -> `trainer.evaluation.calibration.summarize`
        output of that split.
      labels: panel order (the summaries' label order).
      omit: series name -> labels whose panel leaves that series out (e.g. the labels a
        recalibration left unchanged, whose curve would hide the raw one).
      title: the figure's title.
    """
    omit = omit or {}
    columns = 5
    rows = math.ceil(len(labels) / columns)
    figure = Figure(figsize=(3.1 * columns, 3.0 * rows + 0.6))
    styles = ["-o", "-s", "--^", "--v"]
    for k, label in enumerate(labels):
        ax = figure.add_subplot(rows, columns, k + 1)
        ax.plot([0, 1], [0, 1], ":", color="0.5", linewidth=1)
        eces = []
        for (name, summary), style in zip(series.items(), styles):
            if label in omit.get(name, ()):
                eces.append("–")
                continue
            finding = summary["findings"][k]
            bins = finding["bins"]
            points = [
                (p, q)
                for p, q in zip(bins["mean_predicted"], bins["fraction_positive"])
                if p is not None and q is not None
            ]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, markersize=3, linewidth=1.2, label=name)
            eces.append(fmt(finding["ece"], 2))
        ax.set_title(f"{label}\nECE " + " / ".join(eces), fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k % columns == 0:
            ax.set_ylabel("Share positive", fontsize=8)
        if k >= len(labels) - columns:
            ax.set_xlabel("Mean predicted probability", fontsize=8)
        if k == 0:
            ax.legend(fontsize=7, loc="upper left")
    figure.suptitle(title or "Reliability diagrams (ECE in the order of the legend)", fontsize=12)
    figure.tight_layout()
    return _save(figure, path)


def plot_cam_overlays(path: str, samples: Sequence[Any], *, title: str = "") -> str:
    """Grad-CAM overlays with the ground-truth boxes drawn, a row per finding.

    Args:
      path: output PNG.
      samples: objects with image_index, finding, probability, pixels (uint8 [N, N]), cam
        ([N, N] in [0, 1]), boxes ((x, y, w, h), ...) and score (pointing_game, iou), e.g.
        `trainer.evaluation.localization.pipeline.CamSample`, grouped by finding.
      title: the figure's title.
    """
    findings = list(dict.fromkeys(s.finding for s in samples))
    columns = max([sum(s.finding == f for s in samples) for f in findings] + [1])
    # At least three panels wide, so that the title fits.
    figure = Figure(figsize=(3.0 * max(3, columns), 3.2 * max(1, len(findings)) + 0.5))
    for row, finding in enumerate(findings):
        for col, sample in enumerate(s for s in samples if s.finding == finding):
            ax = figure.add_subplot(max(1, len(findings)), columns, row * columns + col + 1)
            ax.imshow(sample.pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.imshow(sample.cam, cmap="jet", alpha=0.45 * np.asarray(sample.cam), vmin=0, vmax=1)
            for x, y, w, h in sample.boxes:
                # Pixel (i, j) covers [j - 0.5, j + 0.5] in imshow's coordinates.
                ax.add_patch(
                    mpl_patches.Rectangle(
                        (x - 0.5, y - 0.5), w, h, fill=False, edgecolor="white", linewidth=1.5
                    )
                )
            hit = "hit" if sample.score.pointing_game >= 0.5 else "miss"
            ax.set_title(
                f"{finding}: {sample.image_index}\np={sample.probability:.2f}, {hit}, IoU {sample.score.iou:.2f}",
                fontsize=8,
            )
            ax.axis("off")
    if not findings:
        figure.add_subplot(1, 1, 1).text(0.5, 0.5, "No boxed images", ha="center", va="center")
    figure.suptitle(title or "Grad-CAM of the boxed finding, boxes in white", fontsize=12)
    figure.tight_layout()
    return _save(figure, path)


def plot_mean_cams(
    path: str,
    overall: np.ndarray,
    images: int,
    by_finding: Mapping[str, tuple[np.ndarray, int]],
    *,
    peak_counts: np.ndarray | None = None,
    title: str = "",
) -> str:
    """Mean Grad-CAM maps: over all images (each image's most probable finding), then per finding.

    Args:
      path: output PNG.
      overall: [N, N] mean map of every image's most-probable-finding map.
      images: how many images `overall` averages.
      by_finding: finding -> (mean of its map over the images labelled with it, image count).
      peak_counts: [G, G] images whose map peaks in each grid cell; the most common cell is outlined.
      title: the figure's title.
    """
    panels = [("All images, most probable finding", overall, images)] + [
        (label, cam, count) for label, (cam, count) in by_finding.items()
    ]
    columns = 5
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.0 * columns, 3.1 * rows + 0.6))
    for k, (name, cam, count) in enumerate(panels):
        ax = figure.add_subplot(rows, columns, k + 1)
        image = ax.imshow(
            cam, cmap="jet", vmin=0, vmax=max(1e-6, float(np.max(cam))), interpolation="nearest"
        )
        ax.set_title(f"{name}\n({count} images)", fontsize=8)
        ax.axis("off")
        if k == 0:
            figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
            if peak_counts is not None and np.sum(peak_counts):
                grid = peak_counts.shape[0]
                cell = cam.shape[0] / grid
                row, col = np.unravel_index(int(np.argmax(peak_counts)), peak_counts.shape)
                share = peak_counts[row, col] / np.sum(peak_counts)
                ax.add_patch(
                    mpl_patches.Rectangle(
                        (col * cell - 0.5, row * cell - 0.5),
                        cell,
                        cell,
                        fill=False,
                        edgecolor="white",
                        linewidth=1.5,
                    )
                )
                ax.set_title(
                    f"{name}\n({count} images; {100 * share:.0f}% peak in the white cell)", fontsize=8
                )
    figure.suptitle(title or "Mean Grad-CAM maps (each map scaled to [0, 1] before averaging)", fontsize=12)
    figure.tight_layout()
    return _save(figure, path)
