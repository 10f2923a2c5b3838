"""The record codec: one grayscale image and its metadata to record bytes, and back.

Encoding is TensorFlow-free: `serialize_example` writes the protobuf wire format of a
`tf.train.Example` directly and `tfrecord_frame` the TFRecord framing, so the Beam workers
that convert images never import TensorFlow (about 4 s and 800 MB per process). The tests
check the bytes against `tf.train.Example(...).SerializeToString(deterministic=True)` for the
same record.

Decoding (`parse_example`, `parse_examples`, `decode_image`) is TensorFlow and works eagerly
and inside `tf.data.Dataset.map`; TensorFlow is imported inside those functions only.

    pixels, metadata, labels ─ encode_example ─► bytes ─ tfrecord_frame ─► shard file
    shard file ─ TFRecordDataset ─► bytes ─ parse_example ─► features ─ decode_image ─► uint8 [H, W, 1]
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tfrecords import schema

if TYPE_CHECKING:
    import tensorflow as tf

# Bytes a record adds to its image: the keys and small features (about 200 bytes) with room.
_RECORD_OVERHEAD_BYTES = 256
# A PNG at zlib level 1 of a 256x256 NIH image is about half its raw size; 0.6 leaves room.
_PNG_SIZE_RATIO = 0.6


# ---------------------------------------------------------------------------------------------
# Encoding, without TensorFlow.


def as_gray_2d(pixels: np.ndarray) -> np.ndarray:
    """Validates grayscale pixels and returns them as a C-contiguous uint8 [H, W] array.

    Raises:
      ValueError: not a non-empty uint8 [H, W] or [H, W, 1] array; the message names dtype and shape.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or 0 in pixels.shape:
        raise ValueError(
            f"pixels must be a non-empty uint8 grayscale array [H, W] or [H, W, 1], "
            f"got dtype {pixels.dtype} and shape {pixels.shape}."
        )
    return np.ascontiguousarray(pixels)


def encode_image(pixels: np.ndarray, image_format: str, *, png_compress_level: int = 1) -> bytes:
    """Serializes grayscale uint8 pixels as the bytes stored under `schema.IMAGE_KEY`.

    Args:
      pixels: uint8 array [H, W] or [H, W, 1].
      image_format: "raw" (row-major bytes) or "png".
      png_compress_level: zlib level for PNG (0-9); 1 is the fastest that still halves the size.

    Returns:
      The encoded image.

    Raises:
      ValueError: wrong dtype, shape or format.
    """
    pixels = as_gray_2d(pixels)
    if image_format == "raw":
        return pixels.tobytes()
    if image_format == "png":
        from PIL import Image  # Only the PNG path needs Pillow.

        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=png_compress_level)
        return buffer.getvalue()
    raise ValueError(f"image_format must be one of {schema.IMAGE_FORMATS}, got {image_format!r}.")


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 negatives are ten-byte two's complement varints.
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    # Feature.bytes_list (field 1) = BytesList{ repeated bytes value = 1 }.
    return _length_delimited(1, _length_delimited(1, value))


def _int64_feature(values: Sequence[int]) -> bytes:
    # Feature.int64_list (field 3) = Int64List{ repeated int64 value = 1 [packed] }.
    packed = b"".join(_varint(int(v)) for v in values)
    return _length_delimited(3, _length_delimited(1, packed))


def _map_order(key: str) -> bytes:
    # Keys in byte order, except that a key sorts after the longer keys it is a prefix of
    # ("image/format" and "image_index" before "image"): the order of the upb protobuf runtime's
    # deterministic serialization, which TensorFlow's `tf.train.Example` uses.
    return key.encode() + b"\xff"


def serialize_example(
    encoded_image: bytes,
    *,
    image_format: str,
    height: int,
    width: int,
    multi_hot: Sequence[int],
    image_index: str,
    patient_id: int,
    follow_up: int,
    age: int,
    sex: str,
    view_position: str,
    label_mask: Sequence[int] | None = None,
    label_uncertain: Sequence[int] | None = None,
) -> bytes:
    """The serialized `tf.train.Example` of one record, written without TensorFlow.

    The hot path of the Beam workers: arguments are not validated here (`encode_example` does).
    The bytes equal `tf.train.Example(...).SerializeToString(deterministic=True)` of the same
    features, which the tests check: map entries sorted by key. (Without `deterministic`, the
    protobuf runtime writes map entries in its hash-table order, which is not part of its API.)

    Args:
      encoded_image: the image as `encode_image` returns it.
      image_format: "raw" or "png", how `encoded_image` is stored.
      height, width: the image's size in pixels.
      multi_hot: zeros and ones in the order of the data set's label vocabulary.
      image_index, patient_id, follow_up, age, sex, view_position: the image's metadata.
      label_mask, label_uncertain: the optional vectors of `schema.LABEL_MASK_KEY` and
        `schema.LABEL_UNCERTAIN_KEY`; None writes no such feature (as for every NIH record).

    Returns:
      The record bytes.
    """
    small = _small_features(
        image_format=image_format,
        height=height,
        width=width,
        multi_hot=multi_hot,
        image_index=image_index,
        patient_id=patient_id,
        follow_up=follow_up,
        age=age,
        sex=sex,
        view_position=view_position,
    )
    if label_mask is not None:
        small[schema.LABEL_MASK_KEY] = _int64_feature(label_mask)
    if label_uncertain is not None:
        small[schema.LABEL_UNCERTAIN_KEY] = _int64_feature(label_uncertain)
    before, after = _small_entries(small)
    image_parts = _image_entry_parts(encoded_image)
    features_len = sum(len(e) for e in before + after) + sum(len(p) for p in image_parts)
    # Example.features = 1.
    return b"".join([_varint(0x0A) + _varint(features_len), *before, *image_parts, *after])


def _small_features(
    *,
    image_format: str,
    height: int,
    width: int,
    multi_hot: Sequence[int],
    image_index: str,
    patient_id: int,
    follow_up: int,
    age: int,
    sex: str,
    view_position: str,
) -> dict[str, bytes]:
    """Every feature but the image, as serialized `Feature` messages by key."""
    return {
        schema.FORMAT_KEY: _bytes_feature(image_format.encode()),
        schema.HEIGHT_KEY: _int64_feature([height]),
        schema.WIDTH_KEY: _int64_feature([width]),
        schema.LABELS_KEY: _int64_feature(multi_hot),
        schema.IMAGE_INDEX_KEY: _bytes_feature(image_index.encode()),
        schema.PATIENT_ID_KEY: _int64_feature([patient_id]),
        schema.FOLLOW_UP_KEY: _int64_feature([follow_up]),
        schema.AGE_KEY: _int64_feature([age]),
        schema.SEX_KEY: _bytes_feature(sex.encode()),
        schema.VIEW_POSITION_KEY: _bytes_feature(view_position.encode()),
    }


def _small_entries(features: Mapping[str, bytes]) -> tuple[list[bytes], list[bytes]]:
    """The map entries of `features` that go before and after the image's, in protobuf's order.

    Features.feature is a map<string, Feature>: each entry is a message {key = 1; value = 2},
    written in the order of protobuf's deterministic serialization (`_map_order`).
    """
    before, after = [], []
    for key in sorted(features, key=_map_order):
        value = _length_delimited(1, key.encode()) + _length_delimited(2, features[key])
        side = before if _map_order(key) < _map_order(schema.IMAGE_KEY) else after
        side.append(_length_delimited(1, value))
    return before, after


def _image_entry_parts(encoded_image: bytes) -> list[bytes]:
    """The image's map entry as headers plus the image, which joined are the whole entry.

    So the image's bytes are copied once (by the caller's final join) rather than once per
    nesting level.
    """
    bytes_list = _varint(0x0A) + _varint(len(encoded_image))  # BytesList.value = 1.
    feature = _varint(0x0A) + _varint(len(bytes_list) + len(encoded_image))  # Feature.bytes_list = 1.
    value_len = len(feature) + len(bytes_list) + len(encoded_image)
    key = _length_delimited(1, schema.IMAGE_KEY.encode())
    entry_head = key + _varint(0x12) + _varint(value_len)  # MapEntry.value = 2.
    entry_len = len(entry_head) + value_len
    image_entry_head = _varint(0x0A) + _varint(entry_len)  # Features.feature = 1.
    return [image_entry_head, entry_head, feature, bytes_list, encoded_image]


def encode_example(
    pixels: np.ndarray,
    metadata: schema.ImageMetadata,
    labels: Sequence[int] | np.ndarray,
    *,
    image_format: str = "raw",
    encoded: bytes | None = None,
    num_labels: int = schema.NUM_LABELS,
    label_mask: Sequence[int] | np.ndarray | None = None,
    label_uncertain: Sequence[int] | np.ndarray | None = None,
) -> bytes:
    """Validates one image with its metadata and labels and returns its record bytes.

    Args:
      pixels: uint8 grayscale pixels [H, W] or [H, W, 1].
      metadata: the image's `schema.ImageMetadata`.
      labels: multi-hot vector of length `schema.NUM_LABELS` in `schema.LABELS` order.
      image_format: "raw" or "png", how `pixels` are stored.
      encoded: the already encoded bytes of `pixels` in `image_format`, to skip encoding.
      num_labels: the length of the data set's label vocabulary (NIH's 15 by default).
      label_mask, label_uncertain: optional 0/1 vectors of that length (see `schema`); None
        writes no such feature.

    Returns:
      The serialized `tf.train.Example`.

    Raises:
      ValueError: bad pixels, labels, mask or format.
    """
    pixels = as_gray_2d(pixels)
    labels = _zero_one(labels, num_labels, "labels")
    label_mask = None if label_mask is None else _zero_one(label_mask, num_labels, "label_mask")
    label_uncertain = (
        None if label_uncertain is None else _zero_one(label_uncertain, num_labels, "label_uncertain")
    )
    if image_format not in schema.IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {schema.IMAGE_FORMATS}, got {image_format!r}.")
    if encoded is None:
        encoded = encode_image(pixels, image_format)
    height, width = pixels.shape
    return serialize_example(
        encoded,
        image_format=image_format,
        height=height,
        width=width,
        multi_hot=labels,
        image_index=metadata.image_index,
        patient_id=metadata.patient_id,
        follow_up=metadata.follow_up,
        age=metadata.age,
        sex=metadata.sex,
        view_position=metadata.view_position,
        label_mask=label_mask,
        label_uncertain=label_uncertain,
    )


def _zero_one(values: Sequence[int] | np.ndarray, length: int, name: str) -> list[int]:
    array = np.asarray(values, dtype=np.int64)
    if array.shape != (length,) or not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must be a 0/1 vector of length {length}, got {array.tolist()}.")
    return array.tolist()


def make_example(
    pixels: np.ndarray,
    metadata: schema.ImageMetadata,
    labels: Sequence[int] | np.ndarray,
    *,
    image_format: str = "raw",
    encoded: bytes | None = None,
    **vectors: Any,
) -> tf.train.Example:
    """`encode_example` as a `tf.train.Example` message (imports TensorFlow); same arguments.

    `vectors`: `encode_example`'s num_labels, label_mask and label_uncertain.
    """
    import tensorflow as tf

    return tf.train.Example.FromString(
        encode_example(pixels, metadata, labels, image_format=image_format, encoded=encoded, **vectors)
    )


def estimated_record_bytes(image_size: int, image_format: str) -> int:
    """Bytes per record at `image_size` x `image_size`, to size shards before any image is read.

    raw is exact to within the metadata (H*W plus about 200 bytes); png is an upper estimate
    from NIH images at zlib level 1.
    """
    pixels = image_size * image_size
    return _RECORD_OVERHEAD_BYTES + (pixels if image_format == "raw" else int(_PNG_SIZE_RATIO * pixels))


def masked_crc(data: bytes) -> int:
    """TFRecord's masked crc32c of `data`, as the framing stores it (little-endian uint32)."""
    import google_crc32c  # The C implementation; pinned in setup.py.

    crc = google_crc32c.value(data)
    return (
        ((crc >> 15) | (crc << 17)) + 0xA282EAD8
    ) & 0xFFFFFFFF  # The mask of tensorflow/core/lib/hash/crc32c.h.


def _masked_crc(data: bytes) -> bytes:
    return struct.pack("<I", masked_crc(data))


def tfrecord_frame(record: bytes) -> bytes:
    """One record in the TFRecord framing: length, masked crc32c of length, data, masked crc."""
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


# ---------------------------------------------------------------------------------------------
# Decoding, with TensorFlow.


def parse_example(serialized: tf.Tensor, num_labels: int = schema.NUM_LABELS) -> dict[str, tf.Tensor]:
    """Parses one serialized record (a scalar string tensor) into a dict of tensors.

    Works eagerly and inside `tf.data.Dataset.map`. The image stays encoded; see
    `decode_image`. `num_labels` is the length of the manifest's `labels`; records without
    `schema.LABEL_MASK_KEY` get a mask of ones.
    """
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, schema.feature_spec(num_labels))


def parse_examples(serialized: tf.Tensor, num_labels: int = schema.NUM_LABELS) -> dict[str, tf.Tensor]:
    """Parses a batch (a 1-D string tensor) of serialized records; see `parse_example`."""
    import tensorflow as tf

    return tf.io.parse_example(serialized, schema.feature_spec(num_labels))


def decode_image(
    features: Mapping[str, tf.Tensor],
    *,
    image_size: int | None = None,
    image_format: str | None = None,
) -> tf.Tensor:
    """Decodes the image of one parsed record into uint8 [H, W, 1].

    Args:
      features: output of `parse_example`.
      image_size: the records' known square size, from the manifest. When given, the
        static shape [image_size, image_size, 1] is restored (needed by batching and by
        XLA); when None the shape comes from the record's height and width at run time.
      image_format: "raw" or "png" when known for the whole data set (from the manifest),
        which skips the per-record branch on `image/format`; None reads that field.

    Returns:
      uint8 tensor [H, W, 1].

    Raises:
      ValueError: `image_format` is not one of `schema.IMAGE_FORMATS` or None.
    """
    import tensorflow as tf

    height = tf.cast(features[schema.HEIGHT_KEY], tf.int32)
    width = tf.cast(features[schema.WIDTH_KEY], tf.int32)

    def _raw() -> tf.Tensor:
        flat = tf.io.decode_raw(features[schema.IMAGE_KEY], tf.uint8)
        return tf.reshape(flat, tf.stack([height, width, 1]))

    def _png() -> tf.Tensor:
        return tf.io.decode_png(features[schema.IMAGE_KEY], channels=1, dtype=tf.uint8)

    if image_format == "raw":
        image = _raw()
    elif image_format == "png":
        image = _png()
    elif image_format is None:
        image = tf.cond(tf.equal(features[schema.FORMAT_KEY], b"png"), _png, _raw)
    else:
        raise ValueError(f"image_format must be one of {schema.IMAGE_FORMATS} or None, got {image_format!r}.")
    if image_size is not None:
        image = tf.ensure_shape(image, [image_size, image_size, 1])
    else:
        image.set_shape([None, None, 1])
    return image
