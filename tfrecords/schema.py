"""The record contract: label vocabulary, feature keys, and one `tf.train.Example`.

Producer (`beam_pipelines`) and consumer (`tfrecords.dataset`, `trainer`) both import
this module; neither spells a key, a label or a shape on its own.

One record is one grayscale image:

  image           bytes   raw uint8 HxW (row-major) or a PNG, see `image/format`
  image/format    bytes   b"raw" or b"png"
  height, width   int64
  labels          int64   15-long multi-hot vector in `LABELS` order
  image_index     bytes   e.g. b"00000001_000.png"
  patient_id      int64
  follow_up       int64
  age             int64   years
  sex             bytes   b"M" / b"F"
  view_position   bytes   b"PA" / b"AP"

This module imports TensorFlow only inside the functions that need it (and on first access to
`FEATURE_SPEC`): the Beam workers import the labels, keys and `labels_to_multi_hot` from here,
and `import tensorflow` costs 4.4 s and 800 MB per worker process (measured by the Beam job's
author; see `beam_pipelines/nih.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

# The 14 NIH ChestX-ray14 findings in the order of the published tables, then "No Finding",
# which is a label of its own and exclusive of the other 14.
LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
    "No Finding",
)
NUM_LABELS = len(LABELS)
NO_FINDING = "No Finding"
FINDINGS: tuple[str, ...] = LABELS[:-1]  # The 14 findings, without "No Finding".
LABEL_SEPARATOR = "|"

IMAGE_FORMATS = ("raw", "png")

# Feature keys.
IMAGE_KEY = "image"
FORMAT_KEY = "image/format"
HEIGHT_KEY = "height"
WIDTH_KEY = "width"
LABELS_KEY = "labels"
IMAGE_INDEX_KEY = "image_index"
PATIENT_ID_KEY = "patient_id"
FOLLOW_UP_KEY = "follow_up"
AGE_KEY = "age"
SEX_KEY = "sex"
VIEW_POSITION_KEY = "view_position"

# Metadata keys, as yielded next to the images for reports.
METADATA_KEYS = (IMAGE_INDEX_KEY, PATIENT_ID_KEY, FOLLOW_UP_KEY, AGE_KEY, SEX_KEY, VIEW_POSITION_KEY)

# Every key with its type and shape; `FEATURE_SPEC` turns it into TensorFlow's feature spec.
FEATURE_TYPES: dict[str, tuple[str, tuple[int, ...]]] = {
    IMAGE_KEY: ("string", ()),
    FORMAT_KEY: ("string", ()),
    HEIGHT_KEY: ("int64", ()),
    WIDTH_KEY: ("int64", ()),
    LABELS_KEY: ("int64", (NUM_LABELS,)),
    IMAGE_INDEX_KEY: ("string", ()),
    PATIENT_ID_KEY: ("int64", ()),
    FOLLOW_UP_KEY: ("int64", ()),
    AGE_KEY: ("int64", ()),
    SEX_KEY: ("string", ()),
    VIEW_POSITION_KEY: ("string", ()),
}


@functools.cache
def feature_spec() -> dict[str, tf.io.FixedLenFeature]:
    """The `tf.io` feature spec of one record (`FEATURE_SPEC`), built on first use."""
    import tensorflow as tf

    return {
        key: tf.io.FixedLenFeature(list(shape), tf.dtypes.as_dtype(dtype))
        for key, (dtype, shape) in FEATURE_TYPES.items()
    }


def __getattr__(name: str) -> Any:
    # `schema.FEATURE_SPEC` without importing TensorFlow at module import.
    if name == "FEATURE_SPEC":
        return feature_spec()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UnknownLabelError(ValueError):
    """A `Finding Labels` name that is not one of `LABELS`."""


@dataclasses.dataclass(frozen=True)
class ImageMetadata:
    """The per-image fields of one record besides the pixels and labels."""

    image_index: str
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view_position: str


def labels_to_multi_hot(finding_labels: str) -> np.ndarray:
    """Maps a `Finding Labels` string to a multi-hot vector in `LABELS` order.

    Args:
      finding_labels: NIH's `Finding Labels` field, e.g. "Cardiomegaly|Effusion" or
        "No Finding". Surrounding white space around each name is ignored.

    Returns:
      int64 array of shape [NUM_LABELS] with ones at the named labels.

    Raises:
      UnknownLabelError: (a ValueError) a name not in `LABELS`; the message names it.
      ValueError: the string is empty, repeats a label, or combines "No Finding" with a finding.
    """
    names = [name.strip() for name in str(finding_labels).split(LABEL_SEPARATOR)]
    if not any(names):
        raise ValueError(f"Finding Labels is empty: {finding_labels!r}; expected e.g. 'No Finding'.")
    multi_hot = np.zeros([NUM_LABELS], dtype=np.int64)
    for name in names:
        if name not in LABELS:
            raise UnknownLabelError(
                f"Unknown label {name!r} in Finding Labels {finding_labels!r}; "
                f"known labels are: {', '.join(LABELS)}."
            )
        index = LABELS.index(name)
        if multi_hot[index]:
            raise ValueError(f"Label {name!r} repeated in Finding Labels {finding_labels!r}.")
        multi_hot[index] = 1
    if multi_hot[LABELS.index(NO_FINDING)] and multi_hot.sum() > 1:
        raise ValueError(
            f"'No Finding' is exclusive of the other labels, got Finding Labels {finding_labels!r}."
        )
    return multi_hot


def multi_hot_to_labels(multi_hot: Sequence[int] | np.ndarray) -> str:
    """Inverse of `labels_to_multi_hot`: a multi-hot vector back to a `Finding Labels` string."""
    multi_hot = np.asarray(multi_hot)
    if multi_hot.shape != (NUM_LABELS,):
        raise ValueError(f"multi_hot must have shape [{NUM_LABELS}], got {multi_hot.shape}.")
    return LABEL_SEPARATOR.join(name for name, on in zip(LABELS, multi_hot) if on)


def encode_image(pixels: np.ndarray, image_format: str, *, png_compress_level: int = 1) -> bytes:
    """Serializes a grayscale uint8 HxW (or HxWx1) array as `image_format` bytes.

    Args:
      pixels: uint8 array [H, W] or [H, W, 1].
      image_format: "raw" (row-major bytes) or "png".
      png_compress_level: zlib level for PNG (0-9).

    Returns:
      The bytes stored under `IMAGE_KEY`.

    Raises:
      ValueError: wrong dtype, shape or format.
    """
    pixels = _as_gray_2d(pixels)
    if image_format == "raw":
        return pixels.tobytes()
    if image_format == "png":
        from PIL import Image  # Imported lazily: only the PNG path needs it.

        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=png_compress_level)
        return buffer.getvalue()
    raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}.")


def make_example(
    pixels: np.ndarray,
    metadata: ImageMetadata,
    labels: Sequence[int] | np.ndarray,
    *,
    image_format: str = "raw",
    encoded: bytes | None = None,
) -> tf.train.Example:
    """Builds the `tf.train.Example` of one image.

    Args:
      pixels: uint8 grayscale pixels [H, W] or [H, W, 1].
      metadata: the image's `ImageMetadata`.
      labels: multi-hot vector of length `NUM_LABELS` in `LABELS` order.
      image_format: "raw" or "png", how `pixels` are stored.
      encoded: the already encoded bytes of `pixels` in `image_format`, to skip encoding.

    Returns:
      The example, ready for `SerializeToString()`.

    Raises:
      ValueError: bad pixels, labels or format.
    """
    pixels = _as_gray_2d(pixels)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (NUM_LABELS,) or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be a 0/1 vector of length {NUM_LABELS}, got {labels.tolist()}.")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}.")
    if encoded is None:
        encoded = encode_image(pixels, image_format)
    height, width = pixels.shape

    import tensorflow as tf

    def _bytes(value: bytes | str) -> tf.train.Feature:
        if isinstance(value, str):
            value = value.encode("utf-8")
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _ints(values: Sequence[int]) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    feature = {
        IMAGE_KEY: _bytes(encoded),
        FORMAT_KEY: _bytes(image_format),
        HEIGHT_KEY: _ints([height]),
        WIDTH_KEY: _ints([width]),
        LABELS_KEY: _ints(labels),
        IMAGE_INDEX_KEY: _bytes(metadata.image_index),
        PATIENT_ID_KEY: _ints([metadata.patient_id]),
        FOLLOW_UP_KEY: _ints([metadata.follow_up]),
        AGE_KEY: _ints([metadata.age]),
        SEX_KEY: _bytes(metadata.sex),
        VIEW_POSITION_KEY: _bytes(metadata.view_position),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized record (a scalar string tensor) into a dict of tensors.

    Works eagerly and inside `tf.data.Dataset.map`. The image stays encoded; see
    `decode_image`.
    """
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, feature_spec())


def parse_examples(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses a batch (a 1-D string tensor) of serialized records; see `parse_example`."""
    import tensorflow as tf

    return tf.io.parse_example(serialized, feature_spec())


def decode_image(
    features: Mapping[str, tf.Tensor],
    *,
    image_size: int | None = None,
    image_format: str | None = None,
) -> tf.Tensor:
    """Decodes the image of one parsed record into uint8 [H, W, 1].

    Args:
      features: output of `parse_example`.
      image_format: "raw" or "png" when known for the whole data set (from the manifest),
        which skips the per-record branch on `image/format`; None reads that field.
      image_size: the records' known square size, from the manifest. When given, the
        static shape [image_size, image_size, 1] is restored (needed by batching and by
        XLA); when None the shape comes from the record's height and width at run time.

    Returns:
      uint8 tensor [H, W, 1].
    """
    import tensorflow as tf

    height = tf.cast(features[HEIGHT_KEY], tf.int32)
    width = tf.cast(features[WIDTH_KEY], tf.int32)

    def _raw() -> tf.Tensor:
        flat = tf.io.decode_raw(features[IMAGE_KEY], tf.uint8)
        return tf.reshape(flat, tf.stack([height, width, 1]))

    def _png() -> tf.Tensor:
        return tf.io.decode_png(features[IMAGE_KEY], channels=1, dtype=tf.uint8)

    if image_format == "raw":
        image = _raw()
    elif image_format == "png":
        image = _png()
    elif image_format is None:
        image = tf.cond(tf.equal(features[FORMAT_KEY], b"png"), _png, _raw)
    else:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS} or None, got {image_format!r}.")
    if image_size is not None:
        image = tf.ensure_shape(image, [image_size, image_size, 1])
    else:
        image.set_shape([None, None, 1])
    return image


def _as_gray_2d(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or 0 in pixels.shape:
        raise ValueError(
            f"pixels must be a non-empty uint8 grayscale array [H, W] or [H, W, 1], "
            f"got dtype {pixels.dtype} and shape {pixels.shape}."
        )
    return np.ascontiguousarray(pixels)
