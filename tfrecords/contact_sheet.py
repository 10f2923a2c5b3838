"""Contact sheets of records: a grid of images with their image index, labels, age, sex and view.

`trainer.inspect` writes one per records directory; the trainer writes one of augmented
training records to TensorBoard (`trainer/training/display.py`). Drawn with matplotlib's
object API on an Agg canvas (no global backend is selected).
"""

from __future__ import annotations

import dataclasses
import io
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib

# Contact sheet geometry, in inches at `SHEET_DPI`: each tile is an image with three caption
# lines under it; each split's block starts with a title line.
SHEET_DPI = 100
TILE_INCHES = 1.6
CAPTION_INCHES = 0.55
TITLE_INCHES = 0.3


@dataclasses.dataclass(frozen=True)
class Sample:
    """One record, decoded for display."""

    split: str
    image: np.ndarray  # uint8 [H, W], or float [H, W] after augmentation.
    labels: np.ndarray  # [len(label_names)] 0/1
    metadata: schema.ImageMetadata
    label_names: tuple[str, ...] = schema.LABELS  # The records' vocabulary (the manifest's).


@dataclasses.dataclass(frozen=True)
class SheetLayout:
    """The contact sheet's grid and size in pixels."""

    rows: int
    columns: int
    width: int
    height: int


def read_samples(
    records_dir: str, manifest: manifest_lib.Manifest, split: str, count: int, *, label: str | None = None
) -> list[Sample]:
    """The first `count` records of `split` in shard order, of those with `label` when given.

    Raises:
      ValueError: `label` is not one of the manifest's labels.
    """
    names = tuple(manifest.labels)
    label_index = None
    if label is not None:
        if label not in names:
            raise ValueError(f"--label must be one of {', '.join(names)}; got {label!r}.")
        label_index = names.index(label)
    paths = manifest_lib.shard_paths(records_dir, manifest, split)
    samples: list[Sample] = []
    if count <= 0:
        return samples
    for serialized in tf.data.TFRecordDataset(paths):
        features = codec.parse_example(serialized, len(names))
        labels = features[schema.LABELS_KEY].numpy()
        if label_index is not None and not labels[label_index]:
            continue
        image = codec.decode_image(features, image_format=manifest.image_format).numpy()[..., 0]
        samples.append(
            Sample(split=split, image=image, labels=labels, metadata=_metadata(features), label_names=names)
        )
        if len(samples) == count:
            break
    return samples


def _metadata(features: Mapping[str, tf.Tensor]) -> schema.ImageMetadata:
    def text(key: str) -> str:
        return features[key].numpy().decode("utf-8", "replace")

    return schema.ImageMetadata(
        image_index=text(schema.IMAGE_INDEX_KEY),
        patient_id=int(features[schema.PATIENT_ID_KEY]),
        follow_up=int(features[schema.FOLLOW_UP_KEY]),
        age=int(features[schema.AGE_KEY]),
        sex=text(schema.SEX_KEY),
        view_position=text(schema.VIEW_POSITION_KEY),
    )


def augment_samples(samples: Sequence[Sample], transform: Callable[[np.ndarray], np.ndarray]) -> list[Sample]:
    """The same records after a transform of the whole batch, e.g. the training augmentation.

    The contract knows no augmentation of its own: the consumer passes its own in
    (`trainer.model.augment.sheet_transform`), so this module never imports the trainer.

    Args:
      samples: from `read_samples`.
      transform: uint8 [N, H, W, 1] images -> float [N, H, W, 1] (or [N, H, W]) images to draw.
    """
    if not samples:
        return []
    images = np.stack([sample.image for sample in samples])[..., None]
    transformed = np.asarray(transform(images))
    if transformed.ndim == 4:
        transformed = transformed[..., 0]
    return [dataclasses.replace(sample, image=image) for sample, image in zip(samples, transformed)]


def sheet_layout(counts: Sequence[int], columns: int) -> SheetLayout:
    """The grid for splits of `counts` samples, `columns` tiles per row (each split on its own rows)."""
    rows = sum(max(1, math.ceil(count / columns)) for count in counts)
    width = columns * TILE_INCHES
    height = rows * (TILE_INCHES + CAPTION_INCHES) + len(counts) * TITLE_INCHES
    return SheetLayout(
        rows=rows, columns=columns, width=round(width * SHEET_DPI), height=round(height * SHEET_DPI)
    )


def caption(sample: Sample) -> str:
    """Three lines under a tile: image index; labels; age, sex and view."""
    labels = ", ".join(name for name, on in zip(sample.label_names, sample.labels) if on) or "(no label)"
    labels = textwrap.shorten(labels, width=34, placeholder="...")
    meta = sample.metadata
    return f"{meta.image_index}\n{labels}\n{meta.age} y, {meta.sex}, {meta.view_position}"


def render_contact_sheet(
    samples_by_split: Mapping[str, Sequence[Sample]], *, columns: int = 8, title: str = ""
) -> tuple[bytes, SheetLayout]:
    """Draws the samples as a grid, one block of rows per split.

    Returns:
      (the PNG's bytes, the layout: grid and size in pixels).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    splits = list(samples_by_split)
    layout = sheet_layout([len(samples_by_split[s]) for s in splits], columns)
    figure = Figure(figsize=(layout.width / SHEET_DPI, layout.height / SHEET_DPI), dpi=SHEET_DPI)
    FigureCanvasAgg(figure)
    top = 1.0
    row_height = (TILE_INCHES + CAPTION_INCHES) * SHEET_DPI / layout.height
    title_height = TITLE_INCHES * SHEET_DPI / layout.height
    for split in splits:
        samples = samples_by_split[split]
        heading = f"{split}: {len(samples)} record(s)" + (f", {title}" if title else "")
        figure.text(0.01, top - title_height / 2, heading, fontsize=9, weight="bold", va="center")
        top -= title_height
        for i, sample in enumerate(samples):
            row, column = divmod(i, columns)
            _draw_tile(figure, sample, column, columns, top - row * row_height, row_height)
        top -= max(1, math.ceil(len(samples) / columns)) * row_height
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=SHEET_DPI, facecolor="white")
    return buffer.getvalue(), layout


def write_contact_sheet(
    path: str, samples_by_split: Mapping[str, Sequence[Sample]], *, columns: int = 8, title: str = ""
) -> SheetLayout:
    """`render_contact_sheet`, written to `path` (local or a `tf.io.gfile` URL); returns the layout."""
    png, layout = render_contact_sheet(samples_by_split, columns=columns, title=title)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(png)
    return layout


def _draw_tile(figure: Any, sample: Sample, column: int, columns: int, top: float, row_height: float) -> None:
    image_height = row_height * TILE_INCHES / (TILE_INCHES + CAPTION_INCHES)
    width = 1.0 / columns
    axes = figure.add_axes(
        (column * width + 0.05 * width, top - image_height, 0.9 * width, 0.95 * image_height)
    )
    image = sample.image
    if image.dtype == np.uint8:
        axes.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:  # Standardized floats: the display spans each image's own range.
        axes.imshow(image, cmap="gray", interpolation="nearest")
    axes.set_axis_off()
    figure.text(
        column * width + width / 2,
        top - image_height - 0.004,
        caption(sample),
        fontsize=5.5,
        ha="center",
        va="top",
        linespacing=1.25,
    )
