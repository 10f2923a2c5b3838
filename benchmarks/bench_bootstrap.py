"""Patient-bootstrap AUCs: the vectorized `weighted_roc_auc` against a scikit-learn loop.

    .venv/bin/python -m benchmarks.bench_bootstrap [--nih_scale]

Synthetic labels and scores (15 labels, ~10% prevalence, 3 images per patient). Case 1 runs
both methods side by side on the same data (sklearn with fewer resamples, scaled per
resample); `--nih_scale` adds the vectorized method on the official NIH test split's size
(25,596 images, 2,797 patients, 1000 resamples). Writes runs/bench/bootstrap.json and prints
a table. "images/s" counts image-resamples per second (images x resamples x labels / time).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from sklearn import metrics as sk_metrics

from trainer.evaluation import metrics


def _data(num_images: int, num_patients: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((num_images, 15)) < 0.1).astype(np.int64)
    y_score = rng.random((num_images, 15)) + 0.3 * y_true
    patient_ids = np.sort(rng.integers(0, num_patients, num_images))
    return y_true, y_score, patient_ids


def _vectorized(y_true, y_score, patient_ids, resamples):
    start = time.perf_counter()
    aucs = metrics.bootstrap_aucs(y_true, y_score, patient_ids, resamples=resamples, seed=0)
    return time.perf_counter() - start, aucs


def _sklearn(y_true, y_score, patient_ids, resamples):
    draws = metrics.patient_bootstrap_draws(patient_ids, resamples=resamples, seed=0)
    weights = metrics.image_weights(patient_ids, draws)
    start = time.perf_counter()
    aucs = np.array(
        [
            [sk_metrics.roc_auc_score(y_true[:, k], y_score[:, k], sample_weight=w) for k in range(15)]
            for w in weights
        ]
    )
    return time.perf_counter() - start, aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nih_scale", action="store_true", help="Also time the NIH test split's size.")
    parser.add_argument("--output", default="runs/bench/bootstrap.json")
    args = parser.parse_args()

    cases = []
    y_true, y_score, patient_ids = _data(2000, 700)
    vec_time, vec_aucs = _vectorized(y_true, y_score, patient_ids, 1000)
    sk_resamples = 30
    sk_time, sk_aucs = _sklearn(y_true, y_score, patient_ids, sk_resamples)
    max_diff = float(np.nanmax(np.abs(vec_aucs[:sk_resamples] - sk_aucs)))
    sk_time_1000 = sk_time * 1000 / sk_resamples
    for name, seconds in (("vectorized", vec_time), ("sklearn_loop", sk_time_1000)):
        cases.append(
            {
                "case": f"{name} 2000 images x 1000 resamples",
                "seconds": round(seconds, 3),
                "images/s": round(2000 * 1000 * 15 / seconds),
            }
        )
    ratio = {"sklearn_over_vectorized": round(sk_time_1000 / vec_time, 1), "max_abs_difference": max_diff}
    if args.nih_scale:
        y_true, y_score, patient_ids = _data(25596, 2797)
        seconds, _ = _vectorized(y_true, y_score, patient_ids, 1000)
        cases.append(
            {
                "case": "vectorized NIH test size 25596 images x 1000 resamples",
                "seconds": round(seconds, 3),
                "images/s": round(25596 * 1000 * 15 / seconds),
            }
        )
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"cases": cases, "ratios": ratio}, f, indent=2)
    print(f"{'case':60s} {'seconds':>9s} {'images/s':>12s}")
    for case in cases:
        print(f"{case['case']:60s} {case['seconds']:9.2f} {case['images/s']:12d}")
    print(f"sklearn loop / vectorized: {ratio['sklearn_over_vectorized']}x; max |difference| {max_diff:.1e}")


if __name__ == "__main__":
    main()
