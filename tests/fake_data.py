"""Fake-data builders shared by the tests: tiny PNG bytes, NIH CSV rows, record directories.

Everything is built in the test's temporary directory; nothing is checked in as a blob.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from tfrecords import manifest as manifest_lib
from tfrecords import schema

# NIH's 2017 header, trailing comma included (12 fields; data rows have 11).
NIH_2017_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
NIH_2020_HEADER = NIH_2017_HEADER.rstrip(",")


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
                    example = schema.make_example(pixels, metadata, labels, image_format=image_format)
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
