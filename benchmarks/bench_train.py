r"""Training-step throughput of the ResUNet: fp32, bf16, XLA and XLA+bf16, side by side.

    python -m benchmarks.bench_train          # ~4 minutes on 2 idle cores

writes runs/bench/bench-train.json (one object per case with images/s, plus the ratios to
fp32) and prints a table. The model is the full profile's ResUNet (256x256, widths
32-64-128-256, augmentation inside the step); the batch is small (4) so that each case holds
under ~4 GB. Other processes share the CPU: compare the ratios of one run, not absolute
figures across runs; the 1-minute load average before and after is recorded.
`trainer.training.task.XLA_SPEEDUP_BY_DEVICE` (what `--xla=auto` decides from) holds the ratios
measured here.
"""

from __future__ import annotations

import gc
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from tfrecords import schema
from trainer.model import augment, models

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Square image size.")
_DEPTH = flags.DEFINE_integer("depth", 3, "ResUNet depth.")
_BASE_FILTERS = flags.DEFINE_integer("base_filters", 32, "ResUNet first-level width.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Images per training step.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 2, "Untimed steps per case (tracing, compilation).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per case.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Times each case is timed, alternating cases; the best counts.")
_OUTPUT = flags.DEFINE_string("output", "runs/bench/bench-train.json", "Where to write the figures.")

# name -> (dtype policy, jit_compile)
CASES = {
    "fp32": ("float32", False),
    "bf16": ("mixed_bfloat16", False),
    "xla_fp32": ("float32", True),
    "xla_bf16": ("mixed_bfloat16", True),
}


def _load() -> float:
    return os.getloadavg()[0]


def _build(policy: str, jit_compile: bool, image_size: int, depth: int, base_filters: int) -> keras.Model:
    keras.config.set_dtype_policy(policy)
    try:
        model = models.build_model(
            "resunet",
            image_size=image_size,
            depth=depth,
            base_filters=base_filters,
            augment=augment.AugmentConfig(),
        )
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(multi_label=True, num_labels=schema.NUM_LABELS)],
            jit_compile=jit_compile,
        )
    finally:
        keras.config.set_dtype_policy("float32")
    return model


def time_steps(model: keras.Model, images: np.ndarray, labels: np.ndarray, steps: int) -> float:
    """Seconds for `steps` training steps (the loss is fetched, so each step has finished)."""
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return time.perf_counter() - start


def main(argv: list[str]) -> None:
    del argv
    rng = np.random.default_rng(0)
    size, batch = _IMAGE_SIZE.value, _BATCH_SIZE.value
    images = rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
    labels = (rng.random((batch, schema.NUM_LABELS)) < 0.2).astype(np.float32)
    load_before = _load()
    seconds = {name: [] for name in CASES}
    # One case in memory at a time (each is ~2-4 GB); rounds alternate the cases so a change
    # in the machine's load hits all of them alike; the best round counts.
    for _ in range(_ROUNDS.value):
        for name, (policy, jit_compile) in CASES.items():
            model = _build(policy, jit_compile, size, _DEPTH.value, _BASE_FILTERS.value)
            time_steps(model, images, labels, _WARMUP.value)
            seconds[name].append(time_steps(model, images, labels, _STEPS.value))
            del model
            keras.backend.clear_session()
            gc.collect()
    load_after = _load()
    results = []
    for name, (policy, jit_compile) in CASES.items():
        best = min(seconds[name])
        results.append(
            {
                "case": name,
                "dtype_policy": policy,
                "jit_compile": jit_compile,
                "images_per_second": batch * _STEPS.value / best,
                "seconds_per_step": best / _STEPS.value,
                "all_rounds_seconds": seconds[name],
            }
        )
    fp32 = results[0]["images_per_second"]
    bf16 = results[1]["images_per_second"]
    ratios = {
        "bf16/fp32": bf16 / fp32,
        "xla_fp32/fp32": results[2]["images_per_second"] / fp32,
        "xla_bf16/bf16": results[3]["images_per_second"] / bf16,
        "xla_bf16/fp32": results[3]["images_per_second"] / fp32,
    }
    report = {
        "benchmark": "bench-train",
        "model": f"resunet depth={_DEPTH.value} base_filters={_BASE_FILTERS.value}",
        "image_size": size,
        "batch_size": batch,
        "steps": _STEPS.value,
        "rounds": _ROUNDS.value,
        "device": tf.config.list_logical_devices()[0].device_type,
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": load_before, "after": load_after},
        "cases": results,
        "ratios": ratios,
    }
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(report, f, indent=2)
    print(f"{'case':<10} {'images/s':>9} {'s/step':>8}")
    for row in results:
        print(f"{row['case']:<10} {row['images_per_second']:>9.2f} {row['seconds_per_step']:>8.2f}")
    for key, value in ratios.items():
        print(f"{key:<14} {value:.2f}x")
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after; wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
