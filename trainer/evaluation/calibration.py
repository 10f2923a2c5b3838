"""Calibration of per-finding probabilities: reliability bins, ECE, and Platt scaling (numpy/sklearn).

Expected calibration error (ECE) of one finding over N images, with `NUM_BINS` equal-width
bins of the predicted probability:

    ECE = sum over bins b of (n_b / N) * |fraction of positives in b - mean probability in b|

Bin b holds the probabilities in (b/B, (b+1)/B], the first bin also 0: the binning of
`sklearn.calibration.calibration_curve(strategy="uniform")`, whose two curves these bins equal
(tests check it). Empty bins contribute nothing.

Recalibration is Platt scaling per finding, fitted on val: p' = sigmoid(a * logit(p) + b).
Why Platt and not a temperature (p' = sigmoid(logit(p) / T)): the trainer's default loss
weights each finding's positives by its negatives / positives ratio, which shifts that
finding's logits by about log(ratio), a different offset per finding; a temperature only
scales logits and cannot remove an offset, Platt's intercept b can. Why per finding: the
offsets and the over- or under-confidence differ per finding. The fit uses Platt's smoothed
targets ((N+ + 1) / (N+ + 2) for positives, 1 / (N- + 2) for negatives), which keep the fit
finite when val separates a finding perfectly, through sklearn's unpenalized logistic
regression with the two targets as sample weights.

Both a and b are fitted, and only a > 0 is kept: then the map is increasing, so AUCs and the
order of images are unchanged, and a threshold chosen on the raw probabilities selects the same
images as its image under the map. A finding with fewer than `MIN_CLASS_COUNT` positive or
negative val images, or whose fit is not increasing, keeps its raw probabilities, with the
reason recorded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import linear_model

from tfrecords import schema
from trainer.evaluation import metrics, vocabularies

# Ten bins of width 0.1: enough to see the curve's shape on a val split of a few hundred
# images, few enough that most bins hold images on the demo set.
NUM_BINS = 10
# Fewer positive (or negative) val images than this leave a finding uncalibrated: a slope and
# an intercept fitted on a handful of images would be a guess.
MIN_CLASS_COUNT = 5
METHOD = "platt"
# Probabilities are clipped to [EPSILON, 1 - EPSILON] before the logit: float32 sigmoids saturate to 0
# and 1. (The export's served calibration reads it from the operating point written with it.)
EPSILON = 1e-7


def bin_indices(y_prob: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """The bin of each probability: b for (b/B, (b+1)/B], 0 for 0 (sklearn's uniform binning)."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    return np.searchsorted(edges[1:-1], np.asarray(y_prob, np.float64))


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Reliability-diagram data of one finding on one split.

    Attributes:
      edges: [B + 1] bin edges, 0 to 1.
      counts: [B] images per bin.
      mean_predicted: [B] mean probability per bin (NaN where empty).
      fraction_positive: [B] share of positive images per bin (NaN where empty).
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_predicted: np.ndarray
    fraction_positive: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error over these bins; NaN without images."""
        total = self.counts.sum()
        if total == 0:
            return math.nan
        used = self.counts > 0
        gaps = np.abs(self.fraction_positive[used] - self.mean_predicted[used])
        return float((self.counts[used] * gaps).sum() / total)

    def to_json(self) -> dict[str, Any]:
        return metrics.to_json_ready(
            {
                "edges": self.edges,
                "counts": self.counts,
                "mean_predicted": self.mean_predicted,
                "fraction_positive": self.fraction_positive,
            }
        )


def reliability(y_true: np.ndarray, y_prob: np.ndarray, *, num_bins: int = NUM_BINS) -> Reliability:
    """Per-bin counts, mean probability and positive share of one finding.

    Args:
      y_true: [N] 0/1 labels.
      y_prob: [N] probabilities in [0, 1].
      num_bins: equal-width bins over [0, 1].

    Raises:
      ValueError: mismatched shapes, labels outside {0, 1}, or probabilities outside [0, 1].
    """
    y_true, y_prob = _check(y_true, y_prob)
    ids = bin_indices(y_prob, num_bins)
    counts = np.bincount(ids, minlength=num_bins)
    sums = np.bincount(ids, weights=y_prob, minlength=num_bins)
    positives = np.bincount(ids, weights=y_true.astype(np.float64), minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(counts > 0, sums / counts, math.nan)
        fraction_positive = np.where(counts > 0, positives / counts, math.nan)
    return Reliability(np.linspace(0.0, 1.0, num_bins + 1), counts, mean_predicted, fraction_positive)


def expected_calibration_error(y_true: np.ndarray, y_prob: np.ndarray, *, num_bins: int = NUM_BINS) -> float:
    """ECE of one finding (see the module docstring); NaN without images."""
    return reliability(y_true, y_prob, num_bins=num_bins).ece


@dataclasses.dataclass(frozen=True)
class PlattScaling:
    """p' = sigmoid(slope * logit(p) + intercept), with slope > 0 (an increasing map)."""

    slope: float
    intercept: float

    def __post_init__(self):
        if not (math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.intercept)):
            raise ValueError(
                f"PlattScaling needs a finite slope > 0 and a finite intercept, got {self.slope}, {self.intercept}."
            )

    def __call__(self, y_prob: np.ndarray) -> np.ndarray:
        return _sigmoid(self.slope * _logit(y_prob) + self.intercept)


def fit_platt(y_true: np.ndarray, y_prob: np.ndarray) -> PlattScaling | str:
    """Fits Platt scaling of one finding with smoothed targets.

    Returns:
      The fitted `PlattScaling`, or the reason it was not fitted (too few positives or
      negatives, or a fit that does not increase).
    """
    y_true, y_prob = _check(y_true, y_prob)
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if min(positives, negatives) < MIN_CLASS_COUNT:
        return (
            f"{positives} positive and {negatives} negative images; the fit needs {MIN_CLASS_COUNT} of each"
        )
    target = np.where(y_true, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    logits = _logit(y_prob)[:, None]
    # Each image twice, once per class, weighted by its smoothed target: cross-entropy with soft labels.
    model = linear_model.LogisticRegression(C=np.inf, max_iter=1000)
    model.fit(
        np.concatenate([logits, logits]),
        np.r_[np.ones(len(target)), np.zeros(len(target))],
        sample_weight=np.r_[target, 1.0 - target],
    )
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if not (math.isfinite(slope) and slope > 0 and math.isfinite(intercept)):
        return f"the fitted slope {slope:.4g} is not positive: on val the probabilities do not rise with the finding"
    return PlattScaling(slope, intercept)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Per-label Platt scaling fitted on one split, and why any label was left as it is.

    Attributes:
      source_split: the split it was fitted on.
      scalings: label -> its `PlattScaling`, or None (raw probabilities kept).
      reasons: label -> why it was not fitted (only for the None ones).
      labels: label order of the probability columns it applies to.
    """

    source_split: str
    scalings: Mapping[str, PlattScaling | None]
    reasons: Mapping[str, str]
    labels: tuple[str, ...] = schema.LABELS

    def apply(self, y_prob: np.ndarray) -> np.ndarray:
        """Calibrated probabilities [N, L] (float32); uncalibrated labels unchanged.

        Raises:
          ValueError: y_prob is not [N, len(labels)].
        """
        y_prob = np.asarray(y_prob)
        if y_prob.ndim != 2 or y_prob.shape[1] != len(self.labels):
            raise ValueError(f"probabilities must be [N, {len(self.labels)}], got {y_prob.shape}.")
        out = np.array(y_prob, np.float64)
        for k, label in enumerate(self.labels):
            scaling = self.scalings.get(label)
            if scaling is not None:
                out[:, k] = scaling(out[:, k])
        return out.astype(np.float32)

    def apply_threshold(self, label: str, threshold: float | None) -> float | None:
        """A raw-probability threshold's image under the label's map (None stays None)."""
        scaling = self.scalings.get(label)
        if threshold is None or scaling is None:
            return threshold
        return float(scaling(np.array([threshold]))[0])

    def to_json(self) -> dict[str, Any]:
        return {
            "method": METHOD,
            "formula": "p' = sigmoid(slope * logit(p) + intercept)",
            "source_split": self.source_split,
            "labels": list(self.labels),
            "parameters": {
                label: None if s is None else {"slope": s.slope, "intercept": s.intercept}
                for label, s in ((label, self.scalings.get(label)) for label in self.labels)
            },
            "not_fitted": {label: self.reasons[label] for label in self.labels if label in self.reasons},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str = "calibration") -> Calibration:
        """Reads `to_json`'s output.

        Raises:
          ValueError: another method, or malformed parameters, naming `where`.
        """
        try:
            if data["method"] != METHOD:
                raise ValueError(f"{where}: calibration method must be {METHOD!r}, got {data['method']!r}.")
            labels = tuple(data["labels"])
            scalings = {
                label: None if p is None else PlattScaling(float(p["slope"]), float(p["intercept"]))
                for label, p in ((label, data["parameters"].get(label)) for label in labels)
            }
            return cls(str(data["source_split"]), scalings, dict(data.get("not_fitted", {})), labels)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{where}: malformed calibration ({e!r}).") from e


def fit(
    y_true: np.ndarray, y_prob: np.ndarray, *, source_split: str, labels: Sequence[str] = schema.LABELS
) -> Calibration:
    """Fits Platt scaling for every label (column) of one split's predictions.

    Args:
      y_true: [N, L] 0/1 labels.
      y_prob: [N, L] probabilities.
      source_split: the split's name, recorded.
      labels: the L label names.
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    if y_true.shape != y_prob.shape or y_true.ndim != 2 or y_true.shape[1] != len(labels):
        raise ValueError(
            f"y_true and y_prob must both be [N, {len(labels)}], got {y_true.shape} and {y_prob.shape}."
        )
    scalings: dict[str, PlattScaling | None] = {}
    reasons: dict[str, str] = {}
    for k, label in enumerate(labels):
        fitted = fit_platt(y_true[:, k], y_prob[:, k])
        if isinstance(fitted, str):
            scalings[label] = None
            reasons[label] = fitted
        else:
            scalings[label] = fitted
    return Calibration(source_split, scalings, reasons, tuple(labels))


def summarize(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    *,
    labels: Sequence[str] = schema.LABELS,
    num_bins: int = NUM_BINS,
) -> dict[str, Any]:
    """ECE and reliability bins of every label on one split, JSON-ready.

    Args:
      y_true, y_prob: [N, L] 0/1 labels and probabilities.
      labels: the L label names (the run's vocabulary; NIH's 15 by default).
      num_bins: equal-width probability bins.

    Returns:
      {"num_bins", "findings": [{"label", "ece", "bins": Reliability.to_json()}], "mean_ece_14"
      (the mean ECE over the findings: every label but the data set's "no finding" label, as
      `trainer.evaluation.vocabularies.is_no_finding` knows it; the 14 findings for NIH's labels),
      "mean_ece_labels" (the labels that mean is over)}.

    Raises:
      ValueError: y_true or y_prob not [N, len(labels)].
    """
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob)
    if y_true.shape != y_prob.shape or y_true.ndim != 2 or y_true.shape[1] != len(labels):
        raise ValueError(
            f"y_true and y_prob must both be [N, {len(labels)}], got {y_true.shape} and {y_prob.shape}."
        )
    findings = []
    for k, label in enumerate(labels):
        bins = reliability(y_true[:, k], y_prob[:, k], num_bins=num_bins)
        findings.append({"label": label, "ece": bins.ece, "bins": bins.to_json()})
    averaged = [f for f in findings if not vocabularies.is_no_finding(f["label"])]
    return metrics.to_json_ready({
        "num_bins": num_bins,
        "findings": findings,
        "mean_ece_14": metrics.nan_mean([f["ece"] for f in averaged]),
        "mean_ece_labels": [f["label"] for f in averaged],
    })  # fmt: skip


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))  # Overflow-free.


def _check(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, np.float64)
    if y_true.ndim != 1 or y_true.shape != y_prob.shape:
        raise ValueError(f"y_true and y_prob must both be [N], got {y_true.shape} and {y_prob.shape}.")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1.")
    if not (np.isfinite(y_prob).all() and (y_prob >= 0).all() and (y_prob <= 1).all()):
        raise ValueError("y_prob must hold probabilities in [0, 1].")
    return y_true.astype(bool), y_prob
