"""Scores of a class activation map (CAM) against ground-truth boxes (numpy only).

A CAM is a float [H, W] map (Grad-CAM in `trainer.model.gradcam`, scaled to [0, 1]) of one finding on
one image; the boxes are that finding's boxes on that image, in the same pixel grid. The
unit of scoring is one (image, finding) pair: its boxes are united into one mask (NIH has one
box per pair, but nothing forbids two nodules on one image). Three scores per pair:

- pointing game: 1 when the map's maximum lies inside the mask (Zhang et al. 2016). Where
  several pixels share the maximum (a flat peak, as bilinear upsampling leaves at the borders),
  the score is the share of them inside the mask: the hit rate of choosing one of them at random.
- energy inside: the share of the map's total mass inside the mask, sum(cam * mask) / sum(cam)
  (the "energy-based pointing game" of Score-CAM, Wang et al. 2020).
- IoU: of the mask with the region where the map is at least `CAM_THRESHOLD` times its maximum.

A map without positive evidence anywhere (all zeros: Grad-CAM's ReLU removed everything)
scores 0 on all three and is counted as empty; it pointed nowhere.

A pixel belongs to a box when its centre (column + 0.5, row + 0.5) lies inside
[x, x + w) x [y, y + h); a box too small to hold any pixel centre takes the pixel that holds
the box's centre, so that every box covers at least one pixel at a coarse record size.

Confidence intervals are percentile bootstraps over patients, with `trainer.evaluation.metrics`' draws and
image weights (the same scheme as the AUCs): a patient's pairs enter a resample together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.evaluation import metrics

# The IoU's region: pixels at or above this fraction of the map's maximum (the "half-max"
# region; Wang et al. 2017 threshold their heatmaps the same way to draw boxes).
CAM_THRESHOLD = 0.5
SCORES = ("pointing_game", "energy_inside", "iou")
_DEFAULT_BOOTSTRAP = metrics.BootstrapConfig()


@dataclasses.dataclass(frozen=True)
class PairScore:
    """The three scores of one (image, finding) pair; `empty` when the map was all zeros."""

    pointing_game: float
    energy_inside: float
    iou: float
    empty: bool

    def as_array(self) -> np.ndarray:
        return np.array([self.pointing_game, self.energy_inside, self.iou], np.float64)


def box_mask(shape: tuple[int, int], boxes: Sequence[tuple[float, float, float, float]]) -> np.ndarray:
    """The union of boxes (x, y, w, h in pixels) as a bool [H, W] mask, by pixel centres.

    Args:
      shape: (height, width) of the map.
      boxes: one or more (x, y, width, height), x to the right, y down.

    Returns:
      bool [H, W]; every box covers at least the pixel holding its centre.

    Raises:
      ValueError: no boxes, or a box with a non-positive size.
    """
    if not boxes:
        raise ValueError("box_mask needs at least one box.")
    height, width = shape
    rows = np.arange(height) + 0.5
    cols = np.arange(width) + 0.5
    mask = np.zeros(shape, bool)
    for x, y, w, h in boxes:
        if not (w > 0 and h > 0):
            raise ValueError(f"box sizes must be positive, got w={w} h={h}.")
        inside = ((rows >= y) & (rows < y + h))[:, None] & ((cols >= x) & (cols < x + w))[None, :]
        if not inside.any():
            row = min(max(int(math.floor(y + h / 2)), 0), height - 1)
            col = min(max(int(math.floor(x + w / 2)), 0), width - 1)
            inside[row, col] = True
        mask |= inside
    return mask


def pointing_game(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's maximal pixels inside the mask (1 or 0 for a single peak); 0 if empty."""
    cam, mask = _check(cam, mask)
    peak = cam.max()
    if peak <= 0:
        return 0.0
    at_peak = cam == peak
    return float(at_peak[mask].sum() / at_peak.sum())


def energy_inside(cam: np.ndarray, mask: np.ndarray) -> float:
    """sum(cam inside the mask) / sum(cam); 0 for an empty map. Negative values count as 0."""
    cam, mask = _check(cam, mask)
    cam = np.maximum(cam, 0.0)
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else 0.0


def thresholded_iou(cam: np.ndarray, mask: np.ndarray, *, threshold: float = CAM_THRESHOLD) -> float:
    """IoU of the mask with {cam >= threshold * max(cam)}; 0 for an empty map.

    Raises:
      ValueError: threshold outside (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}.")
    cam, mask = _check(cam, mask)
    peak = cam.max()
    if peak <= 0:
        return 0.0
    region = cam >= threshold * peak
    return float((region & mask).sum() / (region | mask).sum())


def score_pair(cam: np.ndarray, mask: np.ndarray, *, threshold: float = CAM_THRESHOLD) -> PairScore:
    """All three scores of one map against one mask."""
    cam, mask = _check(cam, mask)
    return PairScore(
        pointing_game=pointing_game(cam, mask),
        energy_inside=energy_inside(cam, mask),
        iou=thresholded_iou(cam, mask, threshold=threshold),
        empty=bool(cam.max() <= 0),
    )


def summarize(
    scores: np.ndarray,
    findings: Sequence[str],
    patient_ids: np.ndarray,
    *,
    empty: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    bootstrap: metrics.BootstrapConfig = _DEFAULT_BOOTSTRAP,
    threshold: float = CAM_THRESHOLD,
) -> dict[str, Any]:
    """Mean scores per finding and over all pairs, with patient-bootstrap intervals, JSON-ready.

    Args:
      scores: [P, 3] per (image, finding) pair: pointing game, energy inside, IoU (`SCORES`).
      findings: [P] the pair's finding.
      patient_ids: [P] the pair's patient (the resampling unit).
      empty: [P] bool, the pair's map was all zeros (counted in the summary).
      labels: findings to report, in this order (default: those present, sorted).
      bootstrap: interval settings (`resamples=0` skips the intervals).
      threshold: the IoU's `CAM_THRESHOLD`, recorded in the summary.

    Returns:
      {"cam_threshold", "scores", "findings": [{"label", "pairs", "patients", "empty_maps",
      <score>, <score>_ci_low, <score>_ci_high, ...}], "overall": {the same over every pair},
      "bootstrap"}; undefined values are None (a finding without pairs).

    Raises:
      ValueError: arrays of mismatched lengths.
    """
    scores = np.asarray(scores, np.float64).reshape(-1, len(SCORES))
    findings = np.asarray(findings, dtype=object)
    patient_ids = np.asarray(patient_ids)
    empty = np.zeros(len(scores), bool) if empty is None else np.asarray(empty, bool)
    if not len(findings) == len(patient_ids) == len(empty) == len(scores):
        raise ValueError(
            f"scores ({len(scores)}), findings ({len(findings)}), patient_ids ({len(patient_ids)}) and "
            f"empty ({len(empty)}) must have one entry per (image, finding) pair."
        )
    labels = list(labels) if labels is not None else sorted(set(findings.tolist()))
    weights = _bootstrap_weights(patient_ids, bootstrap)
    entries = []
    for label in labels:
        selected = findings == label
        entries.append({"label": label, **_group(scores, selected, patient_ids, empty, weights, bootstrap)})
    everything = np.ones(len(scores), bool)
    summary = {
        "cam_threshold": threshold,
        "scores": list(SCORES),
        "findings": entries,
        "overall": _group(scores, everything, patient_ids, empty, weights, bootstrap),
        "bootstrap": {
            "unit": "patient",
            "resamples": bootstrap.resamples,
            "seed": bootstrap.seed,
            "confidence": bootstrap.confidence,
            "method": "percentile",
        },
    }
    return metrics.to_json_ready(summary)


def _bootstrap_weights(patient_ids: np.ndarray, bootstrap: metrics.BootstrapConfig) -> np.ndarray:
    """[resamples, P] image weights of the patient bootstrap; [0, P] when it is off or there are no pairs."""
    if bootstrap.resamples > 0 and len(patient_ids):
        draws = metrics.patient_bootstrap_draws(
            patient_ids, resamples=bootstrap.resamples, seed=bootstrap.seed
        )
        return metrics.image_weights(patient_ids, draws)
    return np.zeros((0, len(patient_ids)))


def _group(
    scores: np.ndarray,
    selected: np.ndarray,
    patient_ids: np.ndarray,
    empty: np.ndarray,
    weights: np.ndarray,
    bootstrap: metrics.BootstrapConfig,
) -> dict[str, Any]:
    """Means and intervals of the selected pairs; resamples without any of them are left out."""
    entry: dict[str, Any] = {
        "pairs": int(selected.sum()),
        "patients": int(len(np.unique(patient_ids[selected]))),
        "empty_maps": int(empty[selected].sum()),
    }
    for k, name in enumerate(SCORES):
        values = scores[selected, k]
        entry[name] = float(values.mean()) if values.size else math.nan
        low = high = math.nan
        if values.size and weights.shape[0]:
            w = weights[:, selected]
            total = w.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                samples = np.where(total > 0, (w @ values) / total, math.nan)
            low, high = metrics.percentile_interval(samples, bootstrap.confidence)
        entry[f"{name}_ci_low"] = low
        entry[f"{name}_ci_high"] = high
    return entry


def _check(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam = np.asarray(cam, np.float64)
    mask = np.asarray(mask, bool)
    if cam.ndim != 2 or cam.shape != mask.shape:
        raise ValueError(f"cam and mask must both be [H, W] of one size, got {cam.shape} and {mask.shape}.")
    if not np.isfinite(cam).all():
        raise ValueError("cam holds NaN or infinite values.")
    return cam, mask
