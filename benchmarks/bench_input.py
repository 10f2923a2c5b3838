r"""Input pipeline benchmark: the 2023 thesis' Keras 2 generator against our tf.data pipeline.

  python -m benchmarks.bench_input

Side by side in one run, images/s at 256x256, batch 32, over 2,000 demo images:
  * baseline: the 2023 thesis' Keras 2 ImageDataGenerator.flow_from_dataframe over the 1024x1024
    demo PNGs (decode, resize, augment, standardize per image), at each worker setting, run in
    the benchmark-only environment (.venv-bench/, tensorflow 2.21.0 + tf-keras 2.21.0; see
    benchmarks/baseline_keras2.py; never installed into the product's .venv);
  * floor: reading + parsing + decoding our 256x256 raw records in a bare loop (no parallelism,
    no shuffle), and the same in tf.data with only a parallel map;
  * ours: tfrecords.dataset.build_dataset (training variant: shuffled, repeated), reading only,
    with parse per batch (the default) and per record;
  * ours with augmentation on this CPU: build_dataset, then trainer.training.inputs.augment_batches with
    trainer.model.augment.make_augment_fn() (the "dataset" placement);
  * the augmentation alone on a fixed batch (the XLA warp on 0..255 pixels) against TF's
    ImageProjectiveTransformV3 kernel doing the same warp.
Then short training runs (trainer.model.models.build_model ResUNet at 256, batch 32) with the
augmentation in the model (inside the compiled step) and in tf.data, measuring images/s and the
share of step time spent waiting for input.

Writes runs/bench/bench-input.json (one object per case, with images/s, plus the ratios and the
load average seen) and prints a table. Demo PNGs go to data/bench/demo and records to
data/bench/records-256 (reused when present). Other processes share the CPU: compare only the
ratios of one run.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
from absl import app, flags, logging
from PIL import Image

from tfrecords import codec, schema
from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib
from trainer.model import augment as augment_lib
from trainer.training import inputs

_DATA_DIR = flags.DEFINE_string("data_dir", "data/bench", "Where the demo PNGs and records go (reused).")
_OUTPUT = flags.DEFINE_string("output", "runs/bench/bench-input.json", "The JSON report.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 2000, "Demo images (1024x1024 PNGs) and records.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Record and model image size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Batch size everywhere.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 8, "Shards of the benchmark records.")
_READ_BATCHES = flags.DEFINE_integer("read_batches", 150, "Timed batches per tf.data case (~2.4 epochs).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds of the tf.data cases; the best round counts.")
_BASELINE_PYTHON = flags.DEFINE_string(
    "baseline_python", ".venv-bench/bin/python", "Python of the benchmark-only env with tf-keras; '' skips."
)
_BASELINE_SETTINGS = flags.DEFINE_list(
    "baseline_settings",
    ["main", "threads:2", "processes:2", "processes:3"],
    "Keras 2 worker settings: main (no enqueuer), threads:N, processes:N.",
)
_BASELINE_ROUNDS = flags.DEFINE_integer("baseline_rounds", 2, "Rounds of the baseline settings.")
_BASELINE_BATCHES = flags.DEFINE_integer("baseline_batches", 12, "Timed baseline batches per setting.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 3, "Timed training steps per segment; 0 skips training.")
_TRAIN_ROUNDS = flags.DEFINE_integer("train_rounds", 4, "Alternating segments per placement.")
# Batch 32 of the 256x256 ResUNet needs > 5 GB on the CPU; the machine is shared (4 GB each).
_TRAIN_BATCH_SIZE = flags.DEFINE_integer("train_batch_size", 8, "Batch size of the training runs.")
_TRAIN_JIT = flags.DEFINE_list("train_jit", ["true", "false"], "jit_compile settings of the training runs.")

_TIMEOUT_SECONDS = 600


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# ------------------------------------------------------------------------------------------
# Data.


def ensure_demo(demo_dir: str, num_images: int) -> None:
    if tf.io.gfile.exists(os.path.join(demo_dir, "Data_Entry_2017.csv")):
        return
    from demo_data import writer as demo_data

    logging.info("Generating %d demo images into %s", num_images, demo_dir)
    demo_data.generate(demo_dir, num_images=num_images, image_size=1024, seed=0)


def _record_bytes(row: tuple[str, str, int, int, str, str, str], *, image_size: int) -> bytes:
    path, finding_labels, follow_up, patient_id, age, sex, view = row
    with Image.open(path) as image:
        # BOX is PIL's area filter, the Beam job's resize.
        pixels = np.asarray(image.convert("L").resize((image_size, image_size), Image.Resampling.BOX))
    metadata = schema.ImageMetadata(
        image_index=os.path.basename(path),
        patient_id=patient_id,
        follow_up=follow_up,
        age=int(str(age).rstrip("YMD") or 0),
        sex=sex,
        view_position=view,
    )
    labels = schema.labels_to_multi_hot(finding_labels)
    return codec.encode_example(pixels, metadata, labels, image_format="raw")


def ensure_records(
    demo_dir: str, records_dir: str, *, image_size: int, num_shards: int
) -> manifest_lib.Manifest:
    """Writes all demo images as one "train" split of raw records (with codec.encode_example)."""
    try:
        return manifest_lib.read_manifest(records_dir)
    except manifest_lib.ManifestError:
        pass
    table = pd.read_csv(os.path.join(demo_dir, "Data_Entry_2017.csv"), index_col=False)
    images_dir = os.path.join(demo_dir, "images_001", "images")
    rows = [
        (
            os.path.join(images_dir, row["Image Index"]),
            row["Finding Labels"],
            int(row["Follow-up #"]),
            int(row["Patient ID"]),
            str(row["Patient Age"]),
            row["Patient Gender"],
            row["View Position"],
        )
        for _, row in table.iterrows()
    ]
    tf.io.gfile.makedirs(records_dir)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        serialized = pool.map(functools.partial(_record_bytes, image_size=image_size), rows, chunksize=32)
    shards, label_counts = [], np.zeros(schema.NUM_LABELS, np.int64)
    for index, indices in enumerate(np.array_split(np.arange(len(rows)), num_shards)):
        name = manifest_lib.shard_name("train", index, num_shards)
        with tf.io.TFRecordWriter(os.path.join(records_dir, name)) as writer:
            for i in indices:
                writer.write(serialized[i])
                label_counts += schema.labels_to_multi_hot(rows[i][1])
        shards.append(
            manifest_lib.ShardInfo(
                name=name,
                records=len(indices),
                sha256=manifest_lib.sha256_file(os.path.join(records_dir, name)),
            )
        )
    manifest = manifest_lib.Manifest(
        options={"image_size": image_size, "image_format": "raw", "split": "bench"},
        splits={
            "train": manifest_lib.SplitInfo(
                records=len(rows),
                patients=len({row[3] for row in rows}),
                label_counts=dict(zip(schema.LABELS, label_counts.tolist())),
                shards=tuple(shards),
            )
        },
        rejects={},
        input_rows=len(rows),
    )
    manifest_lib.write_manifest(records_dir, manifest)
    return manifest_lib.read_manifest(records_dir)


# ------------------------------------------------------------------------------------------
# Timing.


def time_batches(
    batches: Iterator[Any], num_batches: int, batch_size: int, *, warmup: int = 2
) -> dict[str, float]:
    """Images/s over `num_batches` batches after `warmup` (compilation, first buffer fill)."""
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(batches)
    # Make sure the last batch is really computed.
    np.asarray(tf.nest.flatten(batch)[0])
    seconds = time.perf_counter() - start
    return {
        "images": num_batches * batch_size,
        "seconds": seconds,
        "images_per_second": num_batches * batch_size / seconds,
    }


def _forever(make: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    while True:
        yield from make()


def floor_bare_loop(paths: list[str], image_size: int, batch_size: int, num_batches: int) -> dict[str, float]:
    """Read + parse + decode in a bare Python loop over the files: no parallelism, no shuffle."""

    def batches() -> Iterator[tf.Tensor]:
        for serialized in tf.data.TFRecordDataset(paths).batch(batch_size, drop_remainder=True):
            features = codec.parse_examples(serialized)
            pixels = tf.io.decode_raw(features[schema.IMAGE_KEY], tf.uint8)
            yield (
                tf.reshape(pixels, [-1, image_size, image_size, 1]),
                tf.cast(features[schema.LABELS_KEY], tf.float32),
            )

    return time_batches(_forever(batches), num_batches, batch_size)


def floor_parallel_map(
    paths: list[str], image_size: int, batch_size: int, num_batches: int
) -> dict[str, float]:
    """The same work in tf.data with only a parallel map and prefetch (no shuffle, no interleave)."""

    def parse(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = codec.parse_examples(serialized)
        pixels = tf.io.decode_raw(features[schema.IMAGE_KEY], tf.uint8)
        return tf.reshape(pixels, [-1, image_size, image_size, 1]), tf.cast(
            features[schema.LABELS_KEY], tf.float32
        )

    dataset = (
        tf.data.TFRecordDataset(paths)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return time_batches(iter(dataset), num_batches, batch_size)


def ours(
    records_dir: str, batch_size: int, num_batches: int, *, augment_fn=None, **kwargs
) -> dict[str, float]:
    dataset = dataset_lib.build_dataset(
        records_dir, "train", batch_size=batch_size, training=True, seed=0, **kwargs
    )
    if augment_fn is not None:
        dataset = inputs.augment_batches(dataset, augment_fn, seed=0)
    return time_batches(iter(dataset), num_batches, batch_size)


def augment_alone(image_size: int, batch_size: int, num_batches: int) -> dict[str, dict[str, float]]:
    """The augmentation on one fixed batch: our XLA warp vs TF's ImageProjectiveTransformV3 kernel."""
    images = tf.constant(
        np.random.default_rng(0).integers(0, 256, (batch_size, image_size, image_size, 1)), tf.uint8
    )
    config = augment_lib.AugmentConfig()
    xla_fn = augment_lib.make_augment_fn(config)

    @tf.function
    def kernel_fn(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        transforms = augment_lib.random_transforms(batch_size, image_size, image_size, seed, config)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(images, tf.float32),
            transforms=transforms,
            output_shape=[image_size, image_size],
            fill_value=0.0,
            fill_mode="REFLECT",
            interpolation="BILINEAR",
        )

    results = {}
    for name, fn in (("xla_warp", xla_fn), ("image_projective_transform_v3", kernel_fn)):
        batches = (fn(images, tf.constant([0, step], tf.int64)) for step in range(10**9))
        results[name] = time_batches(batches, num_batches, batch_size)
    return results


def baseline(
    python: str, demo_dir: str, setting: str, num_batches: int, batch_size: int, image_size: int
) -> dict:
    """Runs benchmarks/baseline_keras2.py in the benchmark-only environment."""
    command = [
        python,
        os.path.join(os.path.dirname(__file__), "baseline_keras2.py"),
        f"--csv={os.path.join(demo_dir, 'Data_Entry_2017.csv')}",
        f"--images_dir={os.path.join(demo_dir, 'images_001', 'images')}",
        f"--batches={num_batches}",
        f"--batch_size={batch_size}",
        f"--image_size={image_size}",
    ]
    if setting != "main":
        mode, workers = setting.split(":")
        if mode not in ("threads", "processes"):
            raise ValueError(f"--baseline_settings: {setting!r} is not main, threads:N or processes:N.")
        command.append(f"--workers={int(workers)}")
        if mode == "processes":
            command.append("--multiprocessing")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"Baseline {setting} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_placements(
    records_dir: str, *, jit_compile: bool, image_size: int, batch_size: int, steps: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """Short ResUNet training with the augmentation in the model and in tf.data, alternated.

    Both models are built, compiled and warmed up first; then `rounds` segments of `steps`
    steps alternate between them, so a change of the shared machine's load hits both alike.

    Returns:
      Per placement: images/s and the share of step time spent waiting for input.
    """
    import keras

    from trainer.model import models

    config = augment_lib.AugmentConfig()
    runs = {}
    for placement in ("model", "dataset"):
        keras.utils.set_random_seed(0)
        model = models.build_model(
            "resunet", image_size=image_size, augment=config if placement == "model" else None
        )
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy", jit_compile=jit_compile
        )
        dataset = dataset_lib.build_dataset(
            records_dir, "train", batch_size=batch_size, training=True, seed=0
        )
        if placement == "dataset":
            dataset = inputs.augment_batches(dataset, augment_lib.make_augment_fn(config), seed=0)
        batches = iter(dataset)
        for _ in range(2):  # compile, fill the shuffle buffer
            model.train_on_batch(*next(batches))
        runs[placement] = {"model": model, "batches": batches, "wait": 0.0, "total": 0.0}
    for round_index in range(rounds):
        order = ("model", "dataset") if round_index % 2 == 0 else ("dataset", "model")
        for placement in order:
            run = runs[placement]
            for _ in range(steps):
                start = time.perf_counter()
                images, labels = next(run["batches"])
                got = time.perf_counter()
                run["model"].train_on_batch(images, labels)  # returns host numbers: the step is done
                end = time.perf_counter()
                run["wait"] += got - start
                run["total"] += end - start
    return {
        placement: {
            "model": "trainer.model.models.build_model('resunet', image_size=256) (depth 4, base_filters 16)",
            "placement": placement,
            "batch_size": batch_size,
            "jit_compile": jit_compile,
            "steps": steps * rounds,
            "images_per_second": steps * rounds * batch_size / run["total"],
            "input_wait_share": run["wait"] / run["total"],
            "seconds": run["total"],
            "load_average": _load_average(),
        }
        for placement, run in runs.items()
    }


# ------------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    del argv
    image_size, batch_size, read_batches = _IMAGE_SIZE.value, _BATCH_SIZE.value, _READ_BATCHES.value
    demo_dir = os.path.join(_DATA_DIR.value, "demo")
    records_dir = os.path.join(_DATA_DIR.value, f"records-{image_size}")
    ensure_demo(demo_dir, _NUM_IMAGES.value)
    manifest = ensure_records(demo_dir, records_dir, image_size=image_size, num_shards=_NUM_SHARDS.value)
    paths = manifest_lib.shard_paths(records_dir, manifest, "train")
    report: dict[str, Any] = {
        "image_size": image_size,
        "batch_size": batch_size,
        "records": manifest.splits["train"].records,
        "cpu_count": os.cpu_count(),
        "load_average_start": _load_average(),
        "cases": {},
    }
    cases = report["cases"]

    def run(name: str, fn: Callable[[], dict]) -> None:
        logging.info("Running %s (load %s)", name, _load_average())
        cases[name] = {**fn(), "load_average": _load_average()}
        logging.info("%s: %s", name, cases[name])

    # The tf.data cases take a second or two each and the CPU is shared: run them in rounds,
    # round robin, and keep each case's best round (the one least disturbed by other processes).
    read_cases: dict[str, Callable[[], dict]] = {
        "floor_bare_loop": lambda: floor_bare_loop(paths, image_size, batch_size, read_batches),
        "floor_parallel_map": lambda: floor_parallel_map(paths, image_size, batch_size, read_batches),
        "ours_read": lambda: ours(records_dir, batch_size, read_batches),
        "ours_read_parse_per_record": lambda: ours(
            records_dir, batch_size, read_batches, parse_after_batch=False
        ),
        "ours_augment": lambda: ours(
            records_dir, batch_size, read_batches, augment_fn=augment_lib.make_augment_fn()
        ),
    }
    rounds: dict[str, list[dict]] = {name: [] for name in read_cases}
    names = list(read_cases)
    for round_index in range(_ROUNDS.value):
        # Each round starts at another case, so no case always runs first (order effects).
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            fn = read_cases[name]
            rounds[name].append({**fn(), "load_average": _load_average()})
            logging.info(
                "round %d %s: %.0f images/s", round_index, name, rounds[name][-1]["images_per_second"]
            )
    for name, results in rounds.items():
        rates = [result["images_per_second"] for result in results]
        cases[name] = {
            **max(results, key=lambda r: r["images_per_second"]),
            "rounds_images_per_second": rates,
        }
    for name, result in augment_alone(image_size, batch_size, 40).items():
        cases[f"augment_alone_{name}"] = {**result, "load_average": _load_average()}
    if _BASELINE_PYTHON.value:
        # The baseline against our augmented pipeline, alternated in rounds so both see the
        # same load; each keeps its best round.
        augment_fn = augment_lib.make_augment_fn()
        side_by_side: dict[str, list[dict]] = {}
        for round_index in range(_BASELINE_ROUNDS.value):
            for setting in _BASELINE_SETTINGS.value:
                name = f"baseline_keras2[{setting}]"
                side_by_side.setdefault(name, []).append(
                    {
                        **baseline(
                            _BASELINE_PYTHON.value,
                            demo_dir,
                            setting,
                            _BASELINE_BATCHES.value,
                            batch_size,
                            image_size,
                        ),
                        "load_average": _load_average(),
                    }
                )
                logging.info(
                    "round %d %s: %.1f images/s",
                    round_index,
                    name,
                    side_by_side[name][-1]["images_per_second"],
                )
                side_by_side.setdefault("ours_augment_beside_baseline", []).append(
                    {
                        **ours(records_dir, batch_size, read_batches, augment_fn=augment_fn),
                        "load_average": _load_average(),
                    }
                )
        for name, results in side_by_side.items():
            rates = [result["images_per_second"] for result in results]
            cases[name] = {
                **max(results, key=lambda r: r["images_per_second"]),
                "rounds_images_per_second": rates,
            }
    if _TRAIN_STEPS.value > 0:
        for jit in _TRAIN_JIT.value:
            logging.info("Training placements, jit_compile=%s (load %s)", jit, _load_average())
            results = train_placements(
                records_dir,
                jit_compile=jit.lower() == "true",
                image_size=image_size,
                batch_size=_TRAIN_BATCH_SIZE.value,
                steps=_TRAIN_STEPS.value,
                rounds=_TRAIN_ROUNDS.value,
            )
            for placement, result in results.items():
                cases[f"train_{placement}_jit_{jit}"] = result
                logging.info("train_%s_jit_%s: %s", placement, jit, result)

    rate = {name: case["images_per_second"] for name, case in cases.items()}
    ratios: dict[str, Any] = {
        "ours_read_vs_floor_bare_loop": rate["ours_read"] / rate["floor_bare_loop"],
        "ours_read_vs_floor_parallel_map": rate["ours_read"] / rate["floor_parallel_map"],
        "parse_per_batch_vs_per_record": rate["ours_read"] / rate["ours_read_parse_per_record"],
        "xla_warp_vs_image_projective_transform_v3": (
            rate["augment_alone_xla_warp"] / rate["augment_alone_image_projective_transform_v3"]
        ),
    }
    baselines = {name: value for name, value in rate.items() if name.startswith("baseline_keras2")}
    if baselines:
        best = max(baselines, key=baselines.get)
        ratios["baseline_best_setting"] = best
        ratios["ours_augment_vs_best_baseline"] = rate["ours_augment"] / baselines[best]
        ratios["ours_augment_beside_baseline_vs_best_baseline"] = (
            rate["ours_augment_beside_baseline"] / baselines[best]
        )
        ratios["ours_read_vs_best_baseline"] = rate["ours_read"] / baselines[best]
    for jit in _TRAIN_JIT.value if _TRAIN_STEPS.value > 0 else []:
        model_case, dataset_case = f"train_model_jit_{jit}", f"train_dataset_jit_{jit}"
        ratios[f"train_dataset_vs_model_placement_jit_{jit}"] = rate[dataset_case] / rate[model_case]
    report["ratios"] = ratios
    report["load_average_end"] = _load_average()
    tf.io.gfile.makedirs(os.path.dirname(_OUTPUT.value))
    with tf.io.gfile.GFile(_OUTPUT.value, "w") as f:
        json.dump(report, f, indent=2)

    print(f"\n{'case':52s} {'images/s':>10s} {'extra':>30s}")
    for name, case in cases.items():
        extra = f"input wait {case['input_wait_share']:.1%}" if "input_wait_share" in case else ""
        print(f"{name:52s} {case['images_per_second']:10.1f} {extra:>30s}")
    print()
    for name, value in ratios.items():
        print(f"{name:52s} {value if isinstance(value, str) else f'{value:.2f}x'}")
    print(
        f"\nload average start {report['load_average_start']} end {report['load_average_end']}; wrote {_OUTPUT.value}"
    )


if __name__ == "__main__":
    sys.exit(app.run(main))
