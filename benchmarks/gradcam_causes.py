"""Does a trained model read the image's edges? Occlusion, input gradients and the augmentation's fill.

    .venv/bin/python -m benchmarks.gradcam_causes --run_dir=runs/demo [--records_dir=...] [--split=test]

For the split's images, per band of a tenth of the image at each edge (top, bottom, left, right):
- occlusion: the band replaced by the image's mean gray; mean |change| of the 14 findings'
  probabilities and the split's mean AUC before and after;
- input gradients: the share of |d logit / d pixel| (summed over the 14 findings) in the band
  (a tenth of the image's area per band would be an even spread);
- the images: the band's mean gray;
- the augmentation of the run (its `augment_*` fields): the share of the band's pixels that
  training fills from outside the image (reflect or nearest fill), over 2,000 draws;
- the head: each pooled layer's share of the logits (|mean of its map|, summed over findings);
- edges: the Spearman rank correlation between each image's Grad-CAM map (of its most probable
  finding) and the image's edge strength (Sobel magnitude), both area-averaged onto the
  bottleneck's grid, for the trained model and for the same architecture re-initialized: a map
  that follows anatomical edges (clavicles, diaphragm, chest wall) scores high.
Prints one JSON object and writes it to runs/bench/gradcam_causes.json.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from tfrecords import dataset as dataset_lib
from tfrecords import schema
from trainer.evaluation.localization import sanity
from trainer.model import augment as augment_lib
from trainer.model import gradcam, models
from trainer.model import run_dir as run_dir_lib

FINDINGS = len(schema.FINDINGS)


def bands(size: int) -> dict[str, tuple[slice, slice]]:
    edge = max(1, round(size / 10))
    whole = slice(0, size)
    return {
        "top": (slice(0, edge), whole),
        "bottom": (slice(size - edge, size), whole),
        "left": (whole, slice(0, edge)),
        "right": (whole, slice(size - edge, size)),
    }


def mean_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    values = [
        roc_auc_score(labels[:, k], probabilities[:, k])
        for k in range(FINDINGS)
        if 0 < labels[:, k].sum() < len(labels)
    ]
    return float(np.mean(values))


def input_gradients(model, pixels: np.ndarray) -> np.ndarray:
    """Mean |d(sum of the 14 logits) / d pixel| over the images, [N, N]."""
    total = np.zeros(pixels.shape[1:3])
    for start in range(0, len(pixels), 64):
        batch = tf.constant(pixels[start : start + 64])
        with tf.GradientTape() as tape:
            tape.watch(batch)
            p = tf.clip_by_value(model(batch, training=False)[:, :FINDINGS], 1e-7, 1 - 1e-7)
            target = tf.reduce_sum(tf.math.log(p / (1.0 - p)))
        total += np.abs(tape.gradient(target, batch).numpy()[..., 0]).sum(axis=0)
    return total / len(pixels)


def fill_shares(config: dict, size: int, draws: int = 2000) -> np.ndarray:
    """[N, N] share of draws in which the training augmentation fills the pixel from outside the image."""
    fields = {
        k[len("augment_") :]: v
        for k, v in config.items()
        if k.startswith("augment_") and k != "augment_placement"
    }
    augment = augment_lib.AugmentConfig(**fields)
    transforms = augment_lib.random_transforms(
        draws, size, size, tf.constant([1, 2], tf.int64), augment
    ).numpy()
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    outside = np.zeros((size, size))
    for t in transforms:
        in_x, in_y = t[0] * x + t[1] * y + t[2], t[3] * x + t[4] * y + t[5]
        outside += (in_x < 0) | (in_x > size - 1) | (in_y < 0) | (in_y > size - 1)
    return outside / draws


def head_shares(model, pixels: np.ndarray) -> dict[str, float]:
    """Each pooled layer's share of |logit - bias|, from the default Grad-CAM's per-layer features."""
    explainer = gradcam.GradCam(model)
    shares = {}
    for name in explainer.layer_names:
        shares[name] = 0.0
    batch = pixels[:64]
    for k in range(FINDINGS):
        features, grads = explainer._features_and_gradients(batch, [k] * len(batch))
        for name, a, g in zip(explainer.layer_names, features, grads):
            weights = tf.reduce_sum(g, axis=(1, 2), keepdims=True)
            shares[name] += float(
                tf.reduce_mean(tf.abs(tf.reduce_mean(tf.reduce_sum(weights * a, -1), (1, 2))))
            )
    total = sum(shares.values())
    return {name: value / total for name, value in shares.items()}


def edge_following(model, pixels: np.ndarray, probabilities: np.ndarray, images: int = 128) -> dict:
    """Mean rank correlation of Grad-CAM maps with the images' Sobel edge strength, trained and random."""
    pixels, probabilities = pixels[:images], probabilities[:images]
    top = [int(np.argmax(p[:FINDINGS])) for p in probabilities]
    size = pixels.shape[1]
    trained = gradcam.GradCam(model)
    grid = int(model.get_layer(trained.layer_names[-1]).output.shape[1])
    sobel = tf.image.sobel_edges(tf.constant(pixels / 255.0, tf.float32))
    edges = tf.image.resize(tf.norm(sobel, axis=-1), (grid, grid), method="area").numpy()[..., 0]
    result = {"images": len(pixels), "grid": grid}
    for name, explainer in (("trained", trained), ("random_weights", trained.randomized(seed=0))):
        maps = explainer.batch_maps(pixels, top, output_size=(size, size))
        coarse = tf.image.resize(maps[..., None], (grid, grid), method="area").numpy()[..., 0]
        values = [sanity.rank_correlation(c, e) for c, e in zip(coarse, edges)]
        result[f"{name}_spearman"] = float(np.nanmean(values))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", default="runs/demo")
    parser.add_argument("--records_dir", default=None, help="Default: the run's.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", default="runs/bench/gradcam_causes.json")
    args = parser.parse_args()
    config = run_dir_lib.read_config(args.run_dir)
    records_dir = args.records_dir or config["records_dir"]
    model = models.load_model(run_dir_lib.path(args.run_dir, run_dir_lib.BEST_CHECKPOINT))
    batches = dataset_lib.build_dataset(records_dir, args.split, batch_size=64, training=False)
    pixels, labels = map(
        np.concatenate, zip(*[(x.numpy().astype(np.float32), y.numpy()) for x, y in batches])
    )
    probabilities = model.predict(pixels, batch_size=64, verbose=0)
    size = pixels.shape[1]
    gradients, fill = input_gradients(model, pixels), fill_shares(config, size)
    result = {"run_dir": args.run_dir, "images": len(pixels), "mean_auc": mean_auc(labels, probabilities)}
    for name, (rows, cols) in bands(size).items():
        occluded = pixels.copy()
        occluded[:, rows, cols] = pixels.mean(axis=(1, 2, 3))[:, None, None, None]
        after = model.predict(occluded, batch_size=64, verbose=0)
        result[name] = {
            "occluded_mean_abs_change": float(np.abs(after - probabilities)[:, :FINDINGS].mean()),
            "occluded_mean_auc": mean_auc(labels, after),
            "input_gradient_share": float(gradients[rows, cols].sum() / gradients.sum()),
            "mean_gray": float(pixels[:, rows, cols].mean()),
            "augmentation_fill_share": float(fill[rows, cols].mean()),
        }
    result["centre_mean_gray"] = float(pixels[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4].mean())
    result["augmentation_fill_share_centre"] = float(
        fill[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4].mean()
    )
    result["head_shares"] = head_shares(model, pixels)
    result["edges"] = edge_following(model, pixels, probabilities)
    print(json.dumps(result))
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
