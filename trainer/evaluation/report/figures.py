"""The report's figures: each builds a matplotlib Figure (no pyplot global state) and saves a PNG."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colors as mpl_colors
from matplotlib import patches as mpl_patches
from matplotlib import ticker as mpl_ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as sk_metrics

from tfrecords import schema
from trainer.evaluation.report import files
from trainer.evaluation.report.formatting import fmt
from trainer.model import run_dir as run_dir_lib

_DPI = 110


def _save(figure: Figure, path: str) -> str:
    # The Agg canvas directly, without pyplot: no global backend to choose, works headless.
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # No "Software"/date metadata: identical inputs give identical bytes.
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return files.write_bytes(path, buffer.getvalue())


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


def plot_label_distribution(
    path: str,
    label_counts: Mapping[str, Sequence[int]],
    records: Mapping[str, int],
    *,
    title: str = "",
    labels: Sequence[str] = schema.LABELS,
) -> str:
    """Prevalence (% of images) of each label in each split, as grouped horizontal bars.

    Args:
      path: output PNG.
      label_counts: split -> positives per label in `labels` order (from the manifest).
      records: split -> number of images.
      labels: the label names (the manifest's vocabulary).
    """
    splits = [s for s in ("train", "val", "test") if s in label_counts] + [
        s for s in label_counts if s not in ("train", "val", "test")
    ]
    figure = Figure(figsize=(11, 8))
    ax = figure.add_subplot(1, 1, 1)
    n = len(labels)
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
    ax.set_yticks(positions, labels=list(labels))
    ax.invert_yaxis()  # First label on top, as in the tables.
    ax.set_xlabel("Prevalence (% of the split's images)")
    ax.set_title(title or "Label prevalence per split")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.08)
    ax.legend(loc="upper right")  # The top rows (rare findings) leave that corner free.
    figure.tight_layout()
    return _save(figure, path)


def plot_label_cooccurrence(
    path: str, y_true: np.ndarray, *, title: str = "", labels: Sequence[str] = schema.LABELS
) -> str:
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
    ax.set_xticks(range(n), labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(labels))
    ax.set_title(title or f"Label co-occurrence ({y.shape[0]} images): images with both labels")
    colorbar = figure.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("Images (log scale)")
    figure.tight_layout()
    return _save(figure, path)


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
    # The constrained layout makes room for the title (tight_layout lets it overlap the first row).
    figure.set_layout_engine("constrained")
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
