"""Sanity checks for saliency maps, reported beside the localization scores.

- `border_energy_share`: the share of a map's mass in the outer `BORDER_FRACTION` of the image on
  each side. A map that explains the lungs keeps little mass there; a map drawn to the image's
  edges (padding, fill of the augmentation, burned-in markers) shows up as a high share. A map
  spread evenly over the image scores `uniform_border_share()` (0.36 for a 10% border).
- `box_area_share`: the image-blind baseline of the energy inside a box: the share of the
  image the boxes cover, which a uniform map scores, and roughly what a random point scores in
  the pointing game.
- `versus_baseline`: whether a score is clearly above that baseline: its 95% interval's lower
  end above the boxes' area share. A map that does not clear it does not show where the boxed
  findings are, whatever it looks like.
- `randomization_test`: the model-randomization test (Adebayo et al. 2018, "Sanity checks for
  saliency maps"): the maps of the same architecture with re-initialized weights must differ
  from the trained model's; the Spearman rank correlation between the two, per finding, is
  near 1 for a map that explains the architecture rather than the training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

BORDER_FRACTION = 0.1


def border_mask(shape: tuple[int, int], *, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """bool [H, W]: True in the outer `fraction` of the height and width on each side."""
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"The border fraction must be in (0, 0.5), got {fraction}.")
    height, width = shape
    rows, cols = max(1, int(round(height * fraction))), max(1, int(round(width * fraction)))
    mask = np.ones((height, width), bool)
    mask[rows : height - rows, cols : width - cols] = False
    return mask


def uniform_border_share(shape: tuple[int, int] = (100, 100), *, fraction: float = BORDER_FRACTION) -> float:
    """The border share of a flat map: the border's area share."""
    return float(border_mask(shape, fraction=fraction).mean())


def border_energy_share(cam: np.ndarray, *, fraction: float = BORDER_FRACTION) -> float:
    """The share of a non-negative map's mass in its outer border; NaN for an all-zero map.

    Raises:
      ValueError: a map that is not 2-D or has negative values.
    """
    cam = np.asarray(cam, np.float64)
    if cam.ndim != 2:
        raise ValueError(f"A map must be [H, W], got shape {cam.shape}.")
    if (cam < 0).any():
        raise ValueError("A map must be non-negative (Grad-CAM maps are ReLU'd).")
    total = cam.sum()
    if total <= 0:
        return float("nan")
    return float(cam[border_mask(cam.shape, fraction=fraction)].sum() / total)


def box_area_share(mask: np.ndarray) -> float:
    """The share of the image inside the boxes: what a map that ignores the image scores."""
    mask = np.asarray(mask, bool)
    if mask.size == 0:
        raise ValueError("An empty box mask has no area share.")
    return float(mask.mean())


def versus_baseline(ci_low: float | None, baseline: float | None) -> str | None:
    """ "above" when a score's 95% interval starts above the image-blind baseline, else "not_above".

    None when either is missing (no interval: fewer than two patients, or no boxes).
    """
    if ci_low is None or baseline is None or not np.isfinite(ci_low) or not np.isfinite(baseline):
        return None
    return "above" if ci_low > baseline else "not_above"


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels; NaN when either is constant.

    Raises:
      ValueError: maps of different shapes.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"Maps of different sizes: {a.size} and {b.size} pixels.")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def randomization_test(
    trained_maps: Callable[[np.ndarray, Sequence[int]], np.ndarray],
    random_maps: Callable[[np.ndarray, Sequence[int]], np.ndarray],
    pixels: np.ndarray,
    class_indices: Sequence[int],
    labels: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per finding, the mean rank correlation of trained and random-weight maps of the same images.

    Args:
      trained_maps, random_maps: (pixels [B, N, N, 1], B class indices) -> maps [B, H, W], e.g.
        `GradCam.batch_maps` of the trained model and of a re-initialized copy.
      pixels: [B, N, N, 1] images.
      class_indices: B label indices, image i explained for `class_indices[i]`.
      labels: the label names the indices point into.

    Returns:
      finding -> {"spearman": mean correlation over its maps (NaN pairs left out), "maps": count}.

    Raises:
      ValueError: a pixel batch and index list of different lengths.
    """
    if len(pixels) != len(class_indices):
        raise ValueError(f"{len(pixels)} images but {len(class_indices)} class indices.")
    trained = np.asarray(trained_maps(pixels, class_indices))
    random = np.asarray(random_maps(pixels, class_indices))
    per_finding: dict[str, list[float]] = {}
    for a, b, k in zip(trained, random, class_indices):
        per_finding.setdefault(labels[int(k)], []).append(rank_correlation(a, b))
    result = {}
    for label, values in per_finding.items():
        finite = [v for v in values if np.isfinite(v)]
        result[label] = {"spearman": float(np.mean(finite)) if finite else float("nan"), "maps": len(values)}
    return result
