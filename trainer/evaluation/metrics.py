"""Per-finding classification metrics for multi-label chest X-ray predictions (numpy/sklearn only).

Everything here takes plain arrays: `y_true` int/bool [N, L], `y_score` float [N, L], one row per
image, and where needed the images' patient ids. Nothing reads files or models.

A metric that a split cannot define (a finding with no positive or no negative image, so there
is no ROC curve) is NaN here and `None` ("undefined") in the JSON-ready summaries; it is never
an exception and never a 0, which would read as a (terrible) measurement.

The confidence interval of an AUC is a percentile bootstrap that resamples *patients*, not
images: NIH has up to ~180 images of one patient, strongly correlated, and resampling images
would pretend they are independent and give intervals that are too narrow.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as sk_metrics

from tfrecords import schema
from trainer.evaluation import vocabularies

# Age bands of the subgroup table: lower edges of the bands after the first ("0-17").
DEFAULT_AGE_EDGES: tuple[int, ...] = (18, 40, 60, 80)
# Bootstrap AUCs are computed in blocks of resamples so that a block's [resamples, images]
# arrays stay around this many elements (16 MB of float64 each), whatever the split's size.
# Measured at the NIH test split's size (benchmarks/bench_bootstrap.py --nih_scale): 10M
# elements: 30.2 s and 1.7 GB peak resident; 2M elements: 21.7 s and 1.2 GB (TensorFlow's
# import included), side by side on 2 busy cores.
_BLOCK_ELEMENTS = 2_000_000


@dataclasses.dataclass(frozen=True)
class BootstrapConfig:
    """How confidence intervals are computed.

    Attributes:
      resamples: number of patient-level bootstrap resamples; 0 skips the intervals.
      seed: seed of the resampling RNG (numpy PCG64), so reports are reproducible.
      confidence: two-sided coverage of the percentile interval, in (0, 1).
    """

    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self):
        if self.resamples < 0:
            raise ValueError(f"BootstrapConfig.resamples must be >= 0, got {self.resamples}.")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"BootstrapConfig.confidence must be in (0, 1), got {self.confidence}.")


def is_defined(y_true: np.ndarray) -> bool:
    """Whether ROC AUC is defined for one finding: both classes occur."""
    y_true = np.asarray(y_true).astype(bool)
    return bool(y_true.any() and not y_true.all())


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC of one finding; NaN when the labels hold only one class.

    Args:
      y_true: [N] 0/1 labels.
      y_score: [N] scores (higher means more likely positive).

    Returns:
      The AUC in [0, 1], ties counted as one half; NaN if undefined.
    """
    y_true = np.asarray(y_true).astype(bool)
    if not is_defined(y_true):
        return math.nan
    return float(sk_metrics.roc_auc_score(y_true, np.asarray(y_score, dtype=np.float64)))


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """PR AUC (sklearn's average precision) of one finding; NaN when the labels hold one class."""
    y_true = np.asarray(y_true).astype(bool)
    if not is_defined(y_true):
        # sklearn returns 0.0 (with a warning) without positives; that would read as a measurement.
        return math.nan
    return float(sk_metrics.average_precision_score(y_true, np.asarray(y_score, dtype=np.float64)))


@dataclasses.dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold (predict positive when score >= threshold) and its rates."""

    threshold: float
    sensitivity: float
    specificity: float


_UNDEFINED_POINT = OperatingPoint(math.nan, math.nan, math.nan)


def youden_threshold(y_true: np.ndarray, y_score: np.ndarray) -> OperatingPoint:
    """The threshold maximizing Youden's J = sensitivity + specificity - 1.

    Among the ROC curve's finite thresholds (sklearn's first one is +inf, "predict nothing"),
    ties go to the highest threshold. Undefined (NaN) when the labels hold one class.
    """
    y_true = np.asarray(y_true).astype(bool)
    if not is_defined(y_true):
        return _UNDEFINED_POINT
    fpr, tpr, thresholds = sk_metrics.roc_curve(y_true, np.asarray(y_score, dtype=np.float64))
    youden = np.where(np.isfinite(thresholds), tpr - fpr, -np.inf)
    best = int(np.argmax(youden))
    return OperatingPoint(float(thresholds[best]), float(tpr[best]), float(1.0 - fpr[best]))


def rates_at(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> OperatingPoint:
    """Sensitivity and specificity of `score >= threshold` (e.g. a threshold chosen on val)."""
    y_true = np.asarray(y_true).astype(bool)
    if not is_defined(y_true) or not np.isfinite(threshold):
        return _UNDEFINED_POINT
    predicted = np.asarray(y_score) >= threshold
    sensitivity = float(predicted[y_true].mean())
    specificity = float((~predicted[~y_true]).mean())
    return OperatingPoint(float(threshold), sensitivity, specificity)


def patient_bootstrap_draws(patient_ids: np.ndarray, *, resamples: int, seed: int) -> np.ndarray:
    """Draws `resamples` bootstrap samples of patients, with replacement.

    Args:
      patient_ids: [N] the patient of each image.
      resamples: number of bootstrap samples R.
      seed: RNG seed.

    Returns:
      int64 [R, P]: per resample, P indices into `np.unique(patient_ids)` (P = number of
      distinct patients); every image of a drawn patient enters the sample, once per draw.
    """
    num_patients = len(np.unique(np.asarray(patient_ids)))
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_patients, size=(resamples, num_patients), dtype=np.int64)


def image_weights(patient_ids: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Per resample, how many times each image is in the sample: its patient's draw count.

    Args:
      patient_ids: [N] the patient of each image.
      draws: [R, P] from `patient_bootstrap_draws`.

    Returns:
      float64 [R, N] multiplicities; images of one patient always have the same one.
    """
    _, inverse = np.unique(np.asarray(patient_ids), return_inverse=True)
    num_patients = int(inverse.max()) + 1 if inverse.size else 0
    rows = draws.shape[0]
    counts = np.zeros((rows, num_patients), np.float64)
    np.add.at(counts, (np.repeat(np.arange(rows), draws.shape[1]), draws.ravel()), 1.0)
    return counts[:, inverse]


def weighted_roc_auc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one finding under each row of image multiplicities, vectorized over rows.

    Equal to `sklearn.metrics.roc_auc_score(y_true, y_score, sample_weight=w)` for each row w
    (and so to the AUC of the images repeated w times), ties between a positive and a negative
    counted as one half: AUC = sum over positives i of w_i * (W_neg(score < s_i) +
    W_neg(score == s_i) / 2), divided by W_pos * W_neg.

    Measured side by side with a loop over `roc_auc_score(..., sample_weight=w)` by
    benchmarks/bench_bootstrap.py (`make bench-bootstrap`; figures in README.md, "Measured
    figures"): much faster, equal to 1e-16; hence this one (tests check they agree).

    Args:
      y_true: [N] 0/1 labels.
      y_score: [N] scores.
      weights: [R, N] non-negative multiplicities.

    Returns:
      float64 [R]; NaN in a row whose sample lacks positives or negatives.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(y_score, kind="stable")
    scores = y_score[order]
    positive = y_true[order]
    # Tie groups in sorted order: [first, last] position of each image's group.
    new_group = np.r_[True, scores[1:] != scores[:-1]]
    first = np.flatnonzero(new_group)[np.cumsum(new_group) - 1]
    last_of_group = np.r_[np.flatnonzero(new_group)[1:], len(scores)] - 1
    last = last_of_group[np.cumsum(new_group) - 1]
    result = np.empty(weights.shape[0], np.float64)
    block = max(1, _BLOCK_ELEMENTS // max(1, len(scores)))
    for start in range(0, weights.shape[0], block):
        w = weights[start : start + block][:, order]
        negative_w = np.where(positive, 0.0, w)
        cum_negative = np.cumsum(negative_w, axis=1)
        # Negative weight strictly below the group, and inside it.
        below = np.where(first > 0, cum_negative[:, np.maximum(first - 1, 0)], 0.0)
        tied = cum_negative[:, last] - below
        w_pos = w[:, positive]
        numerator = (w_pos * (below[:, positive] + 0.5 * tied[:, positive])).sum(axis=1)
        total_pos = w_pos.sum(axis=1)
        total_neg = cum_negative[:, -1] if len(scores) else np.zeros(len(w))
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = numerator / (total_pos * total_neg)
        auc[(total_pos == 0) | (total_neg == 0)] = math.nan
        result[start : start + block] = auc
    return result


def bootstrap_aucs(
    y_true: np.ndarray,
    y_score: np.ndarray,
    patient_ids: np.ndarray,
    *,
    resamples: int,
    seed: int,
    known: np.ndarray | None = None,
) -> np.ndarray:
    """ROC AUC of every finding in every patient-level bootstrap resample.

    Args:
      y_true: [N, L] 0/1 labels.
      y_score: [N, L] scores.
      patient_ids: [N] the patient of each image.
      resamples: number of resamples R.
      seed: RNG seed.
      known: optional bool [N, L], True where the label is known; a finding's AUC counts its
        known images only (the others weigh 0 in every resample). None: all known.

    Returns:
      float64 [R, L]; NaN where a resample lacks positives or negatives of a finding.
    """
    y_true, y_score = _check_arrays(y_true, y_score)
    known = _check_known(known, y_true.shape)
    draws = patient_bootstrap_draws(patient_ids, resamples=resamples, seed=seed)
    weights = image_weights(patient_ids, draws)

    def label_weights(k: int) -> np.ndarray:
        return weights if known[:, k].all() else weights * known[:, k]

    return np.stack(
        [weighted_roc_auc(y_true[:, k], y_score[:, k], label_weights(k)) for k in range(y_true.shape[1])],
        axis=1,
    )


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The two-sided percentile interval of the defined (non-NaN) samples; NaNs if none is."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return float(low), float(high)


def nan_mean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the defined values; NaN when none is (no warning)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


# The subgroup of images whose sex, age or view the records do not know (a negative age, an
# empty sex or view: data sets that publish none, such as a folder per class).
UNKNOWN_SUBGROUP = "unknown"


def age_band(age: int, edges: Sequence[int] = DEFAULT_AGE_EDGES) -> str:
    """The band name of an age in years: with edges (18, 40, 60, 80), "0-17", "18-39", ..., "80+";
    `UNKNOWN_SUBGROUP` for a negative (unknown) age."""
    if age < 0:
        return UNKNOWN_SUBGROUP
    lower = 0
    for edge in edges:
        if age < edge:
            return f"{lower}-{edge - 1}"
        lower = edge
    return f"{lower}+"


def summarize(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    patient_ids: np.ndarray,
    subgroups: Mapping[str, Sequence[str]] | None = None,
    labels: Sequence[str] = schema.LABELS,
    bootstrap: BootstrapConfig = BootstrapConfig(),
    reference_thresholds: Mapping[str, float | None] | None = None,
    known: np.ndarray | None = None,
) -> dict[str, Any]:
    """All metrics of one split, as a JSON-ready dict (undefined values are None); in steps.

    Args:
      y_true: [N, L] 0/1 labels, columns in `labels` order.
      y_score: [N, L] predicted probabilities.
      patient_ids: [N] the patient of each image (the bootstrap's resampling unit).
      subgroups: optional attribute name (e.g. "sex") -> [N] values; AUCs are reported per value.
      labels: the L label names; a "no finding" label (No Finding, NORMAL:
        `vocabularies.is_no_finding`) is excluded from the findings' mean.
      bootstrap: confidence interval settings.
      reference_thresholds: optional label -> threshold chosen elsewhere (on val); the
        sensitivity and specificity at it are reported as `*_at_reference`.
      known: optional bool [N, L], True where the label is known; each label's metrics count
        its known images only, and report their number as `known`. None: all known.

    Returns:
      {"images", "patients", "findings": [per-label dicts], "mean_auc_14", "mean_auc_15",
       "mean_auc_14_ci", "findings_defined", "labels_defined", "subgroups", "bootstrap"}; the
       means are over the findings (labels but "No Finding") and over all labels.

    Raises:
      ValueError: arrays of mismatched shapes, or labels outside {0, 1}.
    """
    report_known = known is not None
    y_true, y_score, patient_ids, known = _check_split(y_true, y_score, patient_ids, labels, known)
    findings_mask = np.array([not vocabularies.is_no_finding(label) for label in labels])
    aucs = _point_aucs(y_true, y_score, known)
    samples = _bootstrap_samples(y_true, y_score, patient_ids, known, bootstrap)
    findings = [
        finding_summary(label, *_known_column(y_true, y_score, known, k), auc=aucs[k], samples=samples[:, k],
                        confidence=bootstrap.confidence, reference_thresholds=reference_thresholds,
                        report_known=report_known)
        for k, label in enumerate(labels)
    ]  # fmt: skip
    defined_findings = findings_mask & np.isfinite(aucs)
    summary = {
        "images": int(y_true.shape[0]),
        "patients": int(len(np.unique(patient_ids))),
        "findings": findings,
        "mean_auc_14": nan_mean(aucs[findings_mask]),
        "mean_auc_14_ci": list(_mean_interval(samples, defined_findings, bootstrap.confidence)),
        "mean_auc_15": nan_mean(aucs),
        "findings_defined": int(defined_findings.sum()),
        "labels_defined": int(np.isfinite(aucs).sum()),
        "subgroups": subgroup_aucs(y_true, y_score, patient_ids, subgroups or {}, labels=labels, known=known),
        "bootstrap": {"unit": "patient", **dataclasses.asdict(bootstrap), "method": "percentile"},
    }
    return to_json_ready(summary)


def _check_split(
    y_true: np.ndarray,
    y_score: np.ndarray,
    patient_ids: np.ndarray,
    labels: Sequence[str],
    known: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arrays of `summarize`, checked: (bool y_true, y_score, patient_ids, bool known)."""
    y_true, y_score = _check_arrays(y_true, y_score)
    patient_ids = np.asarray(patient_ids)
    if patient_ids.shape != (y_true.shape[0],):
        raise ValueError(f"patient_ids must have shape [{y_true.shape[0]}], got {patient_ids.shape}.")
    if len(labels) != y_true.shape[1]:
        raise ValueError(f"labels has {len(labels)} names but the arrays have {y_true.shape[1]} columns.")
    return y_true, y_score, patient_ids, _check_known(known, y_true.shape)


def finding_summary(
    label: str,
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    auc: float,
    samples: np.ndarray,
    confidence: float,
    reference_thresholds: Mapping[str, float | None] | None = None,
    report_known: bool = False,
) -> dict[str, Any]:
    """The metrics of one label over the images where it is known.

    Args:
      label: its name.
      y_true: bool [n] labels of the images where it is known.
      y_score: [n] their scores.
      auc: its ROC AUC over them (NaN when undefined), from `_point_aucs`.
      samples: [R] its bootstrap AUCs.
      confidence: the interval's coverage.
      reference_thresholds: as in `summarize`.
      report_known: also report `known`, the image count n.
    """
    defined = np.isfinite(auc)
    low, high = percentile_interval(samples, confidence) if defined else (math.nan,) * 2
    point = youden_threshold(y_true, y_score)
    entry = {
        "label": label,
        "auc": auc,
        "auc_ci_low": low,
        "auc_ci_high": high,
        "bootstrap_defined": int(np.isfinite(samples).sum()) if defined else 0,
        "pr_auc": average_precision(y_true, y_score),
        "prevalence": float(y_true.mean()) if y_true.shape[0] else math.nan,
        "positives": int(y_true.sum()),
        "negatives": int((~y_true).sum()),
        "threshold": point.threshold,
        "sensitivity": point.sensitivity,
        "specificity": point.specificity,
    }
    if report_known:
        entry["known"] = int(y_true.shape[0])
    if reference_thresholds is not None:
        reference = reference_thresholds.get(label)
        at = rates_at(y_true, y_score, math.nan if reference is None else reference)
        entry.update(
            reference_threshold=reference,
            sensitivity_at_reference=at.sensitivity,
            specificity_at_reference=at.specificity,
        )
    return entry


def _known_column(
    y_true: np.ndarray, y_score: np.ndarray, known: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of label k over the images where it is known."""
    return y_true[known[:, k], k], y_score[known[:, k], k]


def _point_aucs(y_true: np.ndarray, y_score: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Each label's ROC AUC over its known images; NaN where undefined."""
    return np.array([roc_auc(*_known_column(y_true, y_score, known, k)) for k in range(y_true.shape[1])])


def _bootstrap_samples(
    y_true: np.ndarray,
    y_score: np.ndarray,
    patient_ids: np.ndarray,
    known: np.ndarray,
    bootstrap: BootstrapConfig,
) -> np.ndarray:
    """[R, L] bootstrap AUCs, or [0, L] when the bootstrap is off or the split is empty."""
    if bootstrap.resamples > 0 and y_true.shape[0] > 0:
        return bootstrap_aucs(
            y_true, y_score, patient_ids, resamples=bootstrap.resamples, seed=bootstrap.seed, known=known
        )
    return np.full((0, y_true.shape[1]), math.nan)


def _mean_interval(
    samples: np.ndarray, defined_findings: np.ndarray, confidence: float
) -> tuple[float, float]:
    """Interval of the findings' mean AUC from the same resamples, over the findings the split defines."""
    if not (samples.shape[0] and defined_findings.any()):
        return math.nan, math.nan
    with warnings.catch_warnings():
        # A resample may lack every finding's positives: "Mean of empty slice" gives NaN, dropped below.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_samples = np.nanmean(samples[:, defined_findings], axis=1)
    return percentile_interval(mean_samples, confidence)


def subgroup_aucs(
    y_true: np.ndarray,
    y_score: np.ndarray,
    patient_ids: np.ndarray,
    subgroups: Mapping[str, Sequence[str]],
    *,
    labels: Sequence[str] = schema.LABELS,
    known: np.ndarray | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per attribute and value: image and patient counts, positives and AUC per label, 14-mean.

    `known` (bool [N, L], None: all known) limits each label's positives and AUC to its known
    images.

    Returns:
      {attribute: {value: {"images", "patients", "positives": {label: n}, "auc": {label: x},
      "mean_auc_14", "findings_defined"}}}, values sorted; AUCs NaN where undefined.
    """
    y_true, y_score = _check_arrays(y_true, y_score)
    known = _check_known(known, y_true.shape)
    patient_ids = np.asarray(patient_ids)
    findings_mask = np.array([not vocabularies.is_no_finding(label) for label in labels])
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for attribute, values in subgroups.items():
        values = np.asarray([str(v) for v in values])
        if values.shape != (y_true.shape[0],):
            raise ValueError(
                f"subgroup {attribute!r} has {values.shape[0]} values for {y_true.shape[0]} images."
            )
        groups = {}
        for value in sorted(set(values.tolist()), key=_natural_key):
            mask = values == value
            rows = known & mask[:, None]
            aucs = _point_aucs(y_true, y_score, rows)
            groups[value] = {
                "images": int(mask.sum()),
                "patients": int(len(np.unique(patient_ids[mask]))),
                "positives": {label: int(y_true[rows[:, k], k].sum()) for k, label in enumerate(labels)},
                "auc": {label: float(aucs[k]) for k, label in enumerate(labels)},
                "mean_auc_14": nan_mean(aucs[findings_mask]),
                "findings_defined": int((np.isfinite(aucs) & findings_mask).sum()),
            }
        result[attribute] = groups
    return result


def to_json_ready(value: Any) -> Any:
    """Recursively turns NaN/inf into None and numpy scalars into Python ones."""
    if isinstance(value, Mapping):
        return {str(k): to_json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_json_ready(v) for v in value.tolist()]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _natural_key(value: str) -> tuple:
    # "0-17" < "18-39" < "80+" by their leading number; other strings alphabetically.
    head = value.split("-")[0].rstrip("+")
    return (0, int(head), value) if head.isdigit() else (1, 0, value)


def _check_known(known: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """`known` as bool [N, L] (all True when None)."""
    if known is None:
        return np.ones(shape, bool)
    known = np.asarray(known)
    if known.shape != shape:
        raise ValueError(f"known must have the labels' shape {list(shape)}, got {list(known.shape)}.")
    return known.astype(bool)


def _check_arrays(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(
            f"y_true and y_score must both be [images, labels]; got {y_true.shape} and {y_score.shape}."
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1.")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score holds NaN or infinite values; the model's output is broken.")
    return y_true.astype(bool), y_score
