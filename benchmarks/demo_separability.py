r"""Are the demo data's planted patterns separable? Per-label test ROC AUC of simple models.

  python -m demo_data.generate --output_dir=data/demo
  python -m benchmarks.demo_separability --data_dir=data/demo --sizes=32,64 --cnn_size=128 --cnn_epochs=12

Reads the generated set like the product does (CSV + official lists, PNGs downsized with an area
filter), trains on train_val_list.txt and tests on test_list.txt (patient-disjoint):
  - a per-label logistic regression (sklearn) on the standardized pixels at each of --sizes;
  - if --cnn_epochs > 0, a tiny Keras CNN (4 conv blocks, sigmoid head over the 15 labels) at
    --cnn_size, as a quick stand-in for the trainer: random flips, shifts and zoom, cosine LR decay,
    and the weights of the epoch with the best mean AUC on the last 10% of train_val_list.txt.
Writes runs/bench/demo_separability.json (per model: per-label AUC, mean AUC, seconds) and prints a
table.
"""

import json
import os
import time

import numpy as np
import pandas as pd
from absl import app, flags
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from demo_data import label_model, layout
from demo_data import render as render_lib
from tfrecords import schema

_DATA_DIR = flags.DEFINE_string(
    "data_dir", "data/demo", "A generated demo set (NIH layout); empty to render --num_images in memory."
)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 2000, "Images to render in memory (without --data_dir).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the in-memory set.")
_SIZES = flags.DEFINE_list("sizes", ["32", "64"], "Pixel sizes for the logistic regression.")
_C = flags.DEFINE_float("c", 0.01, "Inverse L2 strength of the logistic regression.")
_CNN_SIZE = flags.DEFINE_integer("cnn_size", 128, "Image size of the CNN check.")
_CNN_EPOCHS = flags.DEFINE_integer("cnn_epochs", 0, "Epochs of the CNN check; 0 skips it.")
_OUTPUT = flags.DEFINE_string("output", "runs/bench/demo_separability.json", "JSON to write.")


def load(data_dir: str, sizes: list[int]):
    """Returns ({size: float32 [N, size, size]}, multi-hot [N, 15], is_test [N])."""
    frame = pd.read_csv(os.path.join(data_dir, layout.CSV_NAME), dtype=str, keep_default_na=False)
    with open(os.path.join(data_dir, layout.TEST_LIST_NAME)) as f:
        test = set(f.read().split("\n"))
    labels = np.stack([schema.labels_to_multi_hot(v) for v in frame["Finding Labels"]]).astype(np.float32)
    is_test = frame["Image Index"].isin(test).to_numpy()
    images = {size: [] for size in sizes}
    for name in frame["Image Index"]:
        with Image.open(os.path.join(data_dir, layout.IMAGES_SUBDIR, name)) as image:
            image = image.convert("L")
            for size in sizes:
                images[size].append(np.asarray(image.resize((size, size), Image.Resampling.BOX), np.float32))
    return {size: np.stack(v) for size, v in images.items()}, labels, is_test


def render(num_images: int, seed: int, sizes: list[int]):
    """Like `load`, but renders the set in memory at the render size, then downsizes (no 1024 PNGs)."""
    rows = label_model.sample_images(num_images, seed=seed)
    _, test = label_model.split_patients(rows, seed=seed)
    test = set(test)
    labels = np.stack([schema.labels_to_multi_hot(row.finding_labels) for row in rows]).astype(np.float32)
    is_test = np.array([row.image_index in test for row in rows])
    images = {size: [] for size in sizes}
    for i, row in enumerate(rows):
        image = Image.fromarray(
            render_lib.render_image(row.findings, render_lib.image_rng(seed, i), render_lib.RENDER_SIZE)
        )
        for size in sizes:
            images[size].append(np.asarray(image.resize((size, size), Image.Resampling.BOX), np.float32))
    return {size: np.stack(v) for size, v in images.items()}, labels, is_test


def per_label_auc(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    aucs = {}
    for k, name in enumerate(schema.LABELS):
        if 0 < labels[:, k].sum() < len(labels):
            aucs[name] = float(roc_auc_score(labels[:, k], scores[:, k]))
    return aucs


def logistic(images, labels, is_test, c):
    flat = images.reshape(len(images), -1)
    scaler = StandardScaler().fit(flat[~is_test])
    train, test = scaler.transform(flat[~is_test]), scaler.transform(flat[is_test])
    scores = np.zeros((len(test), len(schema.LABELS)), np.float32)
    for k in range(len(schema.LABELS)):
        model = LogisticRegression(C=c, max_iter=300).fit(train, labels[~is_test, k])
        scores[:, k] = model.decision_function(test)
    return per_label_auc(labels[is_test], scores)


def cnn(images, labels, is_test, epochs):
    """A tiny CNN trained like the trainer: flips/shifts/zoom, cosine LR, best epoch by val mean AUC."""
    import keras  # Only this check needs Keras; imported here to keep the logistic path light.

    keras.utils.set_random_seed(0)
    train = np.flatnonzero(~is_test)
    # The last 10% of the train_val rows (sorted by patient, so nearly patient-disjoint) pick the epoch.
    val, train = train[int(0.9 * len(train)) :], train[: int(0.9 * len(train))]
    inputs = keras.Input(images.shape[1:] + (1,))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.RandomFlip("horizontal")(x)
    x = keras.layers.RandomTranslation(0.05, 0.1, fill_mode="reflect")(x)
    x = keras.layers.RandomZoom(0.1, fill_mode="reflect")(x)
    for filters in (16, 32, 64, 96):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(schema.LABELS), activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    steps = epochs * -(-len(train) // 32)
    model.compile(
        keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
        "binary_crossentropy",
        metrics=[keras.metrics.AUC(multi_label=True, num_labels=len(schema.LABELS), name="auc")],
    )
    best = keras.callbacks.EarlyStopping("val_auc", mode="max", patience=epochs, restore_best_weights=True)
    model.fit(
        images[train, ..., None],
        labels[train],
        validation_data=(images[val, ..., None], labels[val]),
        batch_size=32,
        epochs=epochs,
        callbacks=[best],
        verbose=2,
    )
    scores = model.predict(images[is_test, ..., None], batch_size=64, verbose=0)
    return per_label_auc(labels[is_test], scores)


def main(argv):
    del argv
    sizes = [int(v) for v in _SIZES.value]
    cnn_size = _CNN_SIZE.value if _CNN_EPOCHS.value > 0 else None
    start = time.perf_counter()
    all_sizes = sorted(set(sizes + ([cnn_size] if cnn_size else [])))
    if _DATA_DIR.value:
        images, labels, is_test = load(_DATA_DIR.value, all_sizes)
    else:
        images, labels, is_test = render(_NUM_IMAGES.value, _SEED.value, all_sizes)
    print(f"loaded {len(labels)} images ({is_test.sum()} test) in {time.perf_counter() - start:.1f} s")
    results = []
    for size in sizes:
        start = time.perf_counter()
        aucs = logistic(images[size], labels, is_test, _C.value)
        results.append(
            {"model": f"logistic {size}x{size}", "seconds": time.perf_counter() - start, "auc": aucs}
        )
    if cnn_size:
        start = time.perf_counter()
        aucs = cnn(images[cnn_size], labels, is_test, _CNN_EPOCHS.value)
        results.append(
            {
                "model": f"cnn {cnn_size}x{cnn_size} {_CNN_EPOCHS.value} ep",
                "seconds": time.perf_counter() - start,
                "auc": aucs,
            }
        )
    for result in results:
        result["mean_auc"] = float(np.mean(list(result["auc"].values())))
        result["test_positives"] = {n: int(labels[is_test, k].sum()) for k, n in enumerate(schema.LABELS)}
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(results, f, indent=2)
    header = f"{'label':<20} {'test pos':>8} " + " ".join(f"{r['model']:>18}" for r in results)
    print(header)
    for k, name in enumerate(schema.LABELS):
        cells = " ".join(f"{r['auc'].get(name, float('nan')):>18.3f}" for r in results)
        print(f"{name:<20} {int(labels[is_test, k].sum()):>8} {cells}")
    print(f"{'mean':<20} {'':>8} " + " ".join(f"{r['mean_auc']:>18.3f}" for r in results))
    print(f"{'seconds':<20} {'':>8} " + " ".join(f"{r['seconds']:>18.1f}" for r in results))
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
