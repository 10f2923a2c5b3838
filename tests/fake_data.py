"""Fake-data builders shared by the tests: tiny PNG bytes, NIH CSV rows, record directories.

Everything is built in the test's temporary directory; nothing is checked in as a blob.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
from PIL import Image

from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib

# NIH's 2017 header, trailing comma included (12 fields; data rows have 11).
NIH_2017_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
NIH_2020_HEADER = NIH_2017_HEADER.rstrip(",")


def multi_hot(*names: str) -> list[int]:
    """A LABELS-ordered multi-hot list with the named labels set."""
    labels = [0] * schema.NUM_LABELS
    for name in names:
        labels[schema.LABELS.index(name)] = 1
    return labels


def image_indices(dataset, *, batches: int | None = None) -> list[bytes]:
    """The image_index of every record, in order (datasets built with_metadata=True)."""
    if batches is not None:
        dataset = dataset.take(batches)
    return [index for batch in dataset for index in batch[2][schema.IMAGE_INDEX_KEY].numpy().tolist()]


def gray_pixels(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """Random uint8 grayscale pixels [H, W]."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)


def png_bytes(pixels: np.ndarray, *, mode: str = "L") -> bytes:
    """Encodes pixels as a PNG of the given PIL mode (L, LA, RGB, RGBA, P, I;16).

    `pixels` is uint8 [H, W] gray; for colour modes the gray value is copied to R=G=B (alpha
    255), for I;16 it is scaled to 16 bits (v * 257).
    """
    image = Image.fromarray(pixels, mode="L")
    if mode == "I;16":
        image = Image.fromarray(pixels.astype(np.uint16) * 257)
        if image.mode != "I;16":
            image = image.convert("I;16")
    elif mode != "L":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def nih_row(
    image_index: str,
    finding_labels: str,
    *,
    follow_up: int = 0,
    patient_id: int = 1,
    age: str = "058Y",
    sex: str = "M",
    view: str = "PA",
    v2020: bool = False,
) -> str:
    """One data row of Data_Entry_2017.csv (or of the v2020 revision with plain integers)."""
    if v2020:
        follow, patient = str(follow_up), str(patient_id)
        age = str(int(age[:-1])) if age[-1:].isalpha() else age
    else:
        follow, patient = f"{follow_up:03d}", f"{patient_id:08d}"
    return f"{image_index},{finding_labels},{follow},{patient},{age},{sex},{view},1024,1024,0.143,0.143"


def metadata_for(index: int, *, patient_id: int | None = None) -> schema.ImageMetadata:
    patient = index // 2 + 1 if patient_id is None else patient_id
    return schema.ImageMetadata(
        image_index=f"{patient:08d}_{index % 2:03d}.png",
        patient_id=patient,
        follow_up=index % 2,
        age=20 + index % 60,
        sex="M" if index % 3 else "F",
        view_position="PA" if index % 4 else "AP",
    )


def random_labels(rng: np.random.Generator) -> np.ndarray:
    """A valid multi-hot vector: No Finding about half the time, else one to three findings."""
    labels = np.zeros([schema.NUM_LABELS], np.int64)
    if rng.random() < 0.5:
        labels[-1] = 1
    else:
        labels[rng.choice(len(schema.FINDINGS), size=rng.integers(1, 4), replace=False)] = 1
    return labels


def write_records(
    records_dir: str,
    *,
    image_size: int = 32,
    image_format: str = "raw",
    split_sizes: dict[str, int] | None = None,
    num_shards: int = 2,
    seed: int = 0,
    rejects: dict[str, int] | None = None,
) -> manifest_lib.Manifest:
    """Writes a tiny valid records directory (shards + manifest) without Beam.

    Each image's mean brightness is tied to its first finding, so a model can learn something.

    Returns:
      The manifest written.
    """
    import tensorflow as tf

    split_sizes = split_sizes or {"train": 24, "val": 8, "test": 8}
    rng = np.random.default_rng(seed)
    os.makedirs(records_dir, exist_ok=True)
    splits = {}
    counter = 0
    for split, size in split_sizes.items():
        shards = []
        label_counts = np.zeros([schema.NUM_LABELS], np.int64)
        patients = set()
        per_shard = np.array_split(np.arange(size), num_shards)
        for shard_index, indices in enumerate(per_shard):
            name = manifest_lib.shard_name(split, shard_index, num_shards)
            path = os.path.join(records_dir, name)
            with tf.io.TFRecordWriter(path) as writer:
                for _ in indices:
                    labels = random_labels(rng)
                    pixels = rng.integers(0, 64, size=(image_size, image_size), dtype=np.uint8)
                    pixels += np.uint8(12 * int(np.argmax(labels)))
                    metadata = metadata_for(counter)
                    counter += 1
                    patients.add(metadata.patient_id)
                    label_counts += labels
                    example = codec.make_example(pixels, metadata, labels, image_format=image_format)
                    writer.write(example.SerializeToString())
            shards.append(
                manifest_lib.ShardInfo(name=name, records=len(indices), sha256=manifest_lib.sha256_file(path))
            )
        splits[split] = manifest_lib.SplitInfo(
            records=size,
            patients=len(patients),
            label_counts=dict(zip(schema.LABELS, label_counts.tolist())),
            shards=tuple(shards),
        )
    rejects = dict(rejects or {})
    manifest = manifest_lib.Manifest(
        options={"image_size": image_size, "image_format": image_format, "split": "patient"},
        splits=splits,
        rejects=rejects,
        input_rows=sum(split_sizes.values()) + sum(rejects.values()),
    )
    manifest_lib.write_manifest(records_dir, manifest)
    return manifest_lib.read_manifest(records_dir)


def write_labeled_records(
    records_dir: str,
    split_labels: dict[str, list[list[int]] | np.ndarray],
    *,
    image_size: int = 8,
    image_format: str = "raw",
    num_shards: int = 1,
    seed: int = 0,
    split_pixels: dict[str, np.ndarray] | None = None,
) -> manifest_lib.Manifest:
    """Writes a records directory whose records carry exactly the given multi-hot labels.

    Args:
      records_dir: output directory.
      split_labels: per split, one 15-long multi-hot vector per record, in record order
        (records are dealt to `num_shards` shards in contiguous runs).
      image_size, image_format, num_shards, seed: as in `write_records`.
      split_pixels: optional per split uint8 [records, image_size, image_size] pixels; random
        where not given.

    Returns:
      The manifest written (label counts computed from `split_labels`).
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    os.makedirs(records_dir, exist_ok=True)
    splits = {}
    counter = 0
    for split, labels_list in split_labels.items():
        all_labels = np.asarray(labels_list, np.int64).reshape(-1, schema.NUM_LABELS)
        shards = []
        patients = set()
        for shard_index, indices in enumerate(np.array_split(np.arange(len(all_labels)), num_shards)):
            name = manifest_lib.shard_name(split, shard_index, num_shards)
            path = os.path.join(records_dir, name)
            with tf.io.TFRecordWriter(path) as writer:
                for index in indices:
                    pixels = rng.integers(0, 256, size=(image_size, image_size), dtype=np.uint8)
                    if split_pixels is not None and split in split_pixels:
                        pixels = np.asarray(split_pixels[split][index], np.uint8)
                    metadata = metadata_for(counter)
                    counter += 1
                    patients.add(metadata.patient_id)
                    example = codec.make_example(
                        pixels, metadata, all_labels[index], image_format=image_format
                    )
                    writer.write(example.SerializeToString())
            shards.append(
                manifest_lib.ShardInfo(name=name, records=len(indices), sha256=manifest_lib.sha256_file(path))
            )
        splits[split] = manifest_lib.SplitInfo(
            records=len(all_labels),
            patients=len(patients),
            label_counts=dict(zip(schema.LABELS, all_labels.sum(axis=0).tolist())),
            shards=tuple(shards),
        )
    manifest = manifest_lib.Manifest(
        options={"image_size": image_size, "image_format": image_format, "split": "patient"},
        splits=splits,
        rejects={},
        input_rows=sum(split.records for split in splits.values()),
    )
    manifest_lib.write_manifest(records_dir, manifest)
    return manifest_lib.read_manifest(records_dir)


# CheXpert-style labels for records of a vocabulary other than NIH's (the first five of the
# CheXpert observations, in its order).
CHEXPERT_LIKE_LABELS = ("No Finding", "Cardiomegaly", "Edema", "Pneumothorax", "Pleural Effusion")


def label_state(values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CheXpert-style values (1.0 positive, 0.0 negative, -1.0 uncertain, NaN not mentioned) to
    the records' (labels, label_mask, label_uncertain) int64 arrays of the same shape."""
    values = np.asarray(values, np.float64)
    labels = (values == 1.0).astype(np.int64)
    mask = ((values == 1.0) | (values == 0.0)).astype(np.int64)
    uncertain = (values == -1.0).astype(np.int64)
    return labels, mask, uncertain


def write_vocabulary_records(
    records_dir: str,
    split_values: dict[str, list[list[float]] | np.ndarray],
    *,
    labels: tuple[str, ...] = CHEXPERT_LIKE_LABELS,
    dataset: str = "chexpert",
    image_size: int = 8,
    num_shards: int = 1,
    seed: int = 0,
    with_state: bool = True,
    split_pixels: dict[str, np.ndarray] | None = None,
    unknown_metadata: bool = False,
) -> manifest_lib.Manifest:
    """Writes a records directory of another vocabulary, with each label's state.

    Args:
      records_dir: output directory.
      split_values: per split, one row of CheXpert-style values per record (see `label_state`),
        as long as `labels`.
      labels, dataset: the manifest's vocabulary and data set name.
      image_size, num_shards, seed, split_pixels: as in `write_labeled_records` (raw records).
      with_state: write the `label_mask` and `label_uncertain` features (without them, records
        read as all known).
      unknown_metadata: write age -1 and an empty sex and view, as data sets that publish none.

    Returns:
      The manifest read back.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    os.makedirs(records_dir, exist_ok=True)
    splits = {}
    counter = 0
    for split, values in split_values.items():
        positives, mask, uncertain = label_state(np.asarray(values, np.float64).reshape(-1, len(labels)))
        shards, patients = [], set()
        for shard_index, indices in enumerate(np.array_split(np.arange(len(positives)), num_shards)):
            name = manifest_lib.shard_name(split, shard_index, num_shards)
            path = os.path.join(records_dir, name)
            with tf.io.TFRecordWriter(path) as writer:
                for index in indices:
                    pixels = rng.integers(0, 256, size=(image_size, image_size), dtype=np.uint8)
                    if split_pixels is not None and split in split_pixels:
                        pixels = np.asarray(split_pixels[split][index], np.uint8)
                    metadata = metadata_for(counter)
                    if unknown_metadata:
                        metadata = dataclasses.replace(metadata, age=-1, sex="", view_position="")
                    counter += 1
                    patients.add(metadata.patient_id)
                    # An NIH record whose label features are then replaced by this vocabulary's.
                    example = codec.make_example(pixels, metadata, multi_hot("No Finding"))
                    features = example.features.feature
                    features[schema.LABELS_KEY].int64_list.value[:] = positives[index].tolist()
                    if with_state:
                        features[schema.LABEL_MASK_KEY].int64_list.value[:] = mask[index].tolist()
                        features[schema.LABEL_UNCERTAIN_KEY].int64_list.value[:] = uncertain[index].tolist()
                    writer.write(example.SerializeToString())
            shards.append(
                manifest_lib.ShardInfo(name=name, records=len(indices), sha256=manifest_lib.sha256_file(path))
            )
        splits[split] = manifest_lib.SplitInfo(
            records=len(positives),
            patients=len(patients),
            label_counts=dict(zip(labels, positives.sum(axis=0).tolist())),
            shards=tuple(shards),
        )
    manifest = manifest_lib.Manifest(
        options={"image_size": image_size, "image_format": "raw", "split": "patient"},
        splits=splits,
        rejects={},
        input_rows=sum(split.records for split in splits.values()),
        dataset=dataset,
        labels=tuple(labels),
    )
    manifest_lib.write_manifest(records_dir, manifest)
    return manifest_lib.read_manifest(records_dir)


def tiny_keras_model(image_size: int = 32, *, seed: int = 0, num_labels: int = schema.NUM_LABELS):
    """A tiny stand-in for the trainer's model with the same outer contract.

    0..255 pixels [B, N, N, 1] -> /255 -> Conv2D named "decoder_output" (where Grad-CAM looks)
    -> global average pooling -> Dense(num_labels, sigmoid) named "probabilities".
    """
    import keras

    inputs = keras.Input(shape=(image_size, image_size, 1), name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(
        8,
        3,
        padding="same",
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        bias_initializer=keras.initializers.Constant(0.05),
        name="decoder_output",
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        num_labels,
        activation="sigmoid",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
        name="probabilities",
    )(x)
    return keras.Model(inputs, outputs, name="tiny")


def write_fake_run(
    run_dir: str,
    records_dir: str,
    *,
    image_size: int = 32,
    epochs: int = 3,
    seed: int = 0,
    model=None,
    labels: tuple[str, ...] | None = None,
) -> str:
    """Writes a run directory like trainer.train's, with an untrained `tiny_keras_model` (or `model`).

    `config.json` (records_dir, image_size, model), `history.csv` (made-up curves with the
    columns of trainer.train), `checkpoints/best.keras`, and `export/` through
    `trainer.model.export.export_model` (both serving signatures, labels.json).
    `labels`: the run's vocabulary, written to config.json and labels.json with a head of that
    size; None writes a run of NIH's labels whose config.json predates the vocabulary.

    Returns:
      run_dir.
    """
    import json

    from trainer.model import export as export_lib

    vocabulary = tuple(labels) if labels is not None else schema.LABELS
    if model is None:
        model = tiny_keras_model(image_size, seed=seed, num_labels=len(vocabulary))
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    model.save(os.path.join(run_dir, "checkpoints", "best.keras"))
    export_lib.export_model(model, os.path.join(run_dir, "export"), image_size=image_size, labels=vocabulary)
    config = {"records_dir": records_dir, "image_size": image_size, "model": model.name}
    if labels is not None:
        config["labels"] = list(vocabulary)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    per_class = [f"val_auc_{label.replace(' ', '_')}" for label in vocabulary]
    header = [
        "epoch",
        "lr",
        "loss",
        "binary_accuracy",
        "auc",
        "val_loss",
        "val_binary_accuracy",
        "val_auc",
        *per_class,
    ]
    lines = [",".join(header)]
    for epoch in range(epochs):
        values = [
            epoch,
            1e-4 * (epoch + 1) / epochs,
            0.7 / (epoch + 1),
            0.8 + 0.02 * epoch,
            0.55 + 0.05 * epoch,
        ]
        values += [0.75 / (epoch + 1), 0.78 + 0.02 * epoch, 0.52 + 0.04 * epoch]
        values += [0.5 + 0.01 * k * epoch / 15 for k in range(len(per_class))]
        lines.append(",".join(str(round(v, 6)) for v in values))
    with open(os.path.join(run_dir, "history.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return run_dir


def write_nih_layout(
    root: str,
    rows: list[str],
    images: dict[str, bytes],
    *,
    header: str = NIH_2017_HEADER,
    train_val: list[str] | None = None,
    test: list[str] | None = None,
    image_dir: str = "images_001/images",
    csv_name: str = "Data_Entry_2017.csv",
) -> str:
    """Writes a tiny NIH layout: `csv_name` (header + rows), the two lists, and the images.

    Args:
      root: the data directory to create.
      rows: CSV data lines, e.g. from `nih_row`.
      images: file name -> PNG (or any) bytes, written under `root/image_dir/`; a name may hold a
        sub-path ("images_002/images/x.png") to place it elsewhere.
      header: the CSV header line (2017 by default; `NIH_2020_HEADER` for v2020).
      train_val, test: the official lists (without a trailing newline, like NIH's); None skips
        the file.

    Returns:
      `root`.
    """
    os.makedirs(os.path.join(root, image_dir), exist_ok=True)
    with open(os.path.join(root, csv_name), "w") as f:
        f.write("\n".join([header, *rows]) + "\n")
    for name, lines in (("train_val_list.txt", train_val), ("test_list.txt", test)):
        if lines is not None:
            with open(os.path.join(root, name), "w") as f:
                f.write("\n".join(lines))
    for name, data in images.items():
        path = os.path.join(root, name) if "/" in name else os.path.join(root, image_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return root


# NIH's box file header: `Bbox [x,y,w,h]` spans four fields, then three empty columns.
NIH_BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


def write_box_csv(path: str, rows: list[tuple] | list[str], *, header: str = NIH_BBOX_HEADER) -> str:
    """Writes a `BBox_List_2017.csv` (gzip-compressed when `path` ends with .gz).

    Args:
      path: the file to write.
      rows: (image_index, finding, x, y, w, h) tuples, or raw CSV lines for malformed rows.
      header: the header line (NIH's by default).

    Returns:
      `path`.
    """
    import gzip

    lines = [header] + [row if isinstance(row, str) else ",".join(str(v) for v in row) for row in rows]
    data = ("\n".join(lines) + "\n").encode()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)
    return path


def bright_spot_model(image_size: int = 32):
    """A model whose Grad-CAM map is the image itself, scaled to [0, 1] by its maximum.

    pixels / 255 -> 1x1 Conv2D "decoder_output" with weight 1 and no bias (its feature map A is
    the image) -> global average pooling -> Dense(15, sigmoid) "probabilities" with weights 1
    and no bias. Every logit's gradient with respect to A is 1 / (N * N) everywhere, so
    Grad-CAM = ReLU(A / (N * N)) / max = image / max(image): the map points at the brightest pixels.
    """
    import keras

    inputs = keras.Input(shape=(image_size, image_size, 1), name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="decoder_output")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(
        schema.NUM_LABELS,
        activation="sigmoid",
        kernel_initializer="ones",
        bias_initializer="zeros",
        name="probabilities",
    )(x)
    return keras.Model(inputs, outputs, name="bright_spot")
