"""The 2023 thesis' input pipeline, timed: Keras 2 ImageDataGenerator.flow_from_dataframe.

Runs only in the benchmark-only environment with tf-keras (never in the product's .venv);
`benchmarks.bench_input` calls it in a subprocess:

  .venv-bench/bin/python benchmarks/baseline_keras2.py --csv=data/bench/demo/Data_Entry_2017.csv \
      --images_dir=data/bench/demo/images_001/images --workers=2 --multiprocessing --batches=15

prints one JSON object: {"setting": ..., "images_per_second": ..., ...}. The generator is
configured exactly as the 2023 thesis: samplewise centring and std normalization, horizontal
flip, height shift 0.05, width shift 0.1, rotation 3, reflect fill, zoom 0.15, 256x256
grayscale, batch 32. Workers are what Keras 2's fit(workers=, use_multiprocessing=) used: an
OrderedEnqueuer over the iterator (workers=0 iterates in the main thread).
"""

import argparse
import json
import os
import time

import pandas as pd
import tf_keras
from tf_keras.preprocessing.image import ImageDataGenerator

# The bench env installs this project too (`make bench-input`); schema loads no TensorFlow.
from tfrecords.schema import LABELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--csv", required=True)
    parser.add_argument("--images_dir", required=True)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--multiprocessing", action="store_true")
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=256)
    args = parser.parse_args()

    table = pd.read_csv(args.csv, usecols=["Image Index", "Finding Labels"])
    table["path"] = [os.path.join(args.images_dir, name) for name in table["Image Index"]]
    table["labels"] = table["Finding Labels"].str.split("|")
    generator = ImageDataGenerator(
        samplewise_center=True,
        samplewise_std_normalization=True,
        horizontal_flip=True,
        vertical_flip=False,
        height_shift_range=0.05,
        width_shift_range=0.1,
        rotation_range=3,
        fill_mode="reflect",
        zoom_range=0.15,
    )
    iterator = generator.flow_from_dataframe(
        table,
        directory=None,
        x_col="path",
        y_col="labels",
        classes=list(LABELS),
        class_mode="categorical",
        target_size=(args.image_size, args.image_size),
        color_mode="grayscale",
        batch_size=args.batch_size,
        shuffle=True,
        seed=0,
    )
    if args.workers > 0:
        enqueuer = tf_keras.utils.OrderedEnqueuer(
            iterator, use_multiprocessing=args.multiprocessing, shuffle=False
        )
        enqueuer.start(workers=args.workers, max_queue_size=10)
        batches = enqueuer.get()
    else:
        enqueuer = None
        batches = iter(iterator)
    images, _ = next(batches)  # warm-up: workers started, first files opened
    start = time.perf_counter()
    count = 0
    for _ in range(args.batches):
        images, _ = next(batches)
        count += len(images)
    seconds = time.perf_counter() - start
    if enqueuer is not None:
        enqueuer.stop()
    mode = "processes" if args.multiprocessing else "threads"
    setting = f"{args.workers} {mode}" if args.workers else "main thread"
    print(
        json.dumps(
            {
                "setting": setting,
                "workers": args.workers,
                "multiprocessing": args.multiprocessing,
                "images": count,
                "seconds": seconds,
                "images_per_second": count / seconds,
                "shape": list(images.shape),
                "tf_keras": tf_keras.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
