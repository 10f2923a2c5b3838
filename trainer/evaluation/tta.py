"""Test-time augmentation: the mean of the model's probabilities over fixed image transforms.

`hflip` averages the probabilities of each image and of its mirror image (left and right
swapped), the one transform of the training augmentation that changes no pixel's value.

Where it runs: in the evaluator and the predictor, around whatever model they loaded (the
export's `serve_pixels` signature or the Keras checkpoint), not inside the exported graph.
So every existing export gets it without being re-exported, the serving signatures stay one
pass per image for the consumers that call them, and an evaluation reports AUCs with and
without it from the same loaded model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TTA_MODES = ("none", "hflip")


def hflip(images: np.ndarray) -> np.ndarray:
    """Mirrors a batch of images [B, H, W, C] left to right."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [batch, height, width, channels], got shape {images.shape}.")
    return images[:, :, ::-1, :]


def predict(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, *, mode: str = "none") -> np.ndarray:
    """The probabilities of `fn` on a batch, averaged over the transforms of `mode`.

    Args:
      fn: the model, [B, H, W, C] images -> [B, L] probabilities.
      images: one batch.
      mode: "none" (one pass) or "hflip" (mean of the image's and its mirror's probabilities,
        both images in one call of `fn`).

    Returns:
      float32 [B, L].

    Raises:
      ValueError: an unknown mode.
    """
    return predict_both(fn, images, mode=mode)[1]


def predict_both(
    fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, *, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities without and with the augmentation of `mode`, from one call of `fn`.

    Returns:
      (float32 [B, L] of the images as they are, float32 [B, L] averaged over `mode`'s
      transforms); the same array twice for "none".

    Raises:
      ValueError: an unknown mode.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}.")
    images = np.asarray(images)
    if mode == "none":
        plain = np.asarray(fn(images), np.float32)
        return plain, plain
    both = np.asarray(fn(np.concatenate([images, hflip(images)])), np.float64)
    plain, mirrored = both[: len(images)], both[len(images) :]
    return plain.astype(np.float32), ((plain + mirrored) / 2.0).astype(np.float32)
