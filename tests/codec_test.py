"""Tests for tfrecords.codec: the TensorFlow-free writer against TensorFlow, framing, decoding."""

import io
import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from tests import fake_data
from tfrecords import codec, schema

# Records that exercise every field: sizes, one and several labels, "No Finding", a large
# patient id and age, both sexes and views, a name with several varint-length bytes.
_RECORDS = (
    (16, 16, "Atelectasis|Pneumothorax", schema.ImageMetadata("00000007_003.png", 7, 3, 101, "F", "AP")),
    (6, 5, "No Finding", schema.ImageMetadata("00000001_000.png", 1, 0, 0, "M", "PA")),
    (
        64,
        64,
        "Cardiomegaly|Effusion|Hernia|Mass",
        schema.ImageMetadata("00030805_123.png", 30805, 123, 414, "F", "PA"),
    ),
    (1, 300, "Edema", schema.ImageMetadata("x" * 200 + ".png", 2**40, 2**20, 94, "M", "AP")),
)


def _tf_example(pixels, metadata, labels, image_format, encoded, **vectors) -> tf.train.Example:
    """The record built with TensorFlow's own protobuf classes, field by field.

    `vectors`: label_mask and label_uncertain, written under their keys when given.
    """

    def _bytes(value):
        value = value.encode() if isinstance(value, str) else value
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    height, width = pixels.shape
    feature = {
        schema.IMAGE_KEY: _bytes(encoded),
        schema.FORMAT_KEY: _bytes(image_format),
        schema.HEIGHT_KEY: _ints([height]),
        schema.WIDTH_KEY: _ints([width]),
        schema.LABELS_KEY: _ints(labels),
        schema.IMAGE_INDEX_KEY: _bytes(metadata.image_index),
        schema.PATIENT_ID_KEY: _ints([metadata.patient_id]),
        schema.FOLLOW_UP_KEY: _ints([metadata.follow_up]),
        schema.AGE_KEY: _ints([metadata.age]),
        schema.SEX_KEY: _bytes(metadata.sex),
        schema.VIEW_POSITION_KEY: _bytes(metadata.view_position),
    }
    keys = {"label_mask": schema.LABEL_MASK_KEY, "label_uncertain": schema.LABEL_UNCERTAIN_KEY}
    for name, values in vectors.items():
        feature[keys[name]] = _ints(values)
    return tf.train.Example(features=tf.train.Features(feature=feature))


class EncodeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(record=tuple(range(len(_RECORDS))), image_format=schema.IMAGE_FORMATS)
    def test_wire_writer_bytes_equal_tensorflow(self, record, image_format):
        height, width, finding_labels, metadata = _RECORDS[record]
        pixels = fake_data.gray_pixels(height, width, seed=record)
        labels = schema.labels_to_multi_hot(finding_labels)
        encoded = codec.encode_image(pixels, image_format)

        ours = codec.encode_example(pixels, metadata, labels, image_format=image_format)

        expected = _tf_example(pixels, metadata, labels, image_format, encoded)
        # Byte for byte: protobuf's deterministic serialization fixes the order of map entries.
        self.assertEqual(ours, expected.SerializeToString(deterministic=True))
        self.assertEqual(tf.train.Example.FromString(ours), expected)
        self.assertEqual(codec.make_example(pixels, metadata, labels, image_format=image_format), expected)

    def test_serialize_example_matches_encode_example(self):
        height, width, finding_labels, metadata = _RECORDS[0]
        pixels = fake_data.gray_pixels(height, width)
        labels = schema.labels_to_multi_hot(finding_labels)
        ours = codec.serialize_example(
            codec.encode_image(pixels, "raw"),
            image_format="raw",
            height=height,
            width=width,
            multi_hot=labels.tolist(),
            image_index=metadata.image_index,
            patient_id=metadata.patient_id,
            follow_up=metadata.follow_up,
            age=metadata.age,
            sex=metadata.sex,
            view_position=metadata.view_position,
        )
        self.assertEqual(ours, codec.encode_example(pixels, metadata, labels))

    @parameterized.parameters(
        {"label_mask": [1, 0, 1, 0, 1]},
        {"label_uncertain": [0, 1, 0, 0, 0]},
        {"label_mask": [1, 0, 1, 0, 1], "label_uncertain": [0, 1, 0, 0, 0]},
    )
    def test_optional_label_vectors_equal_tensorflow_for_any_vocabulary(self, **vectors):
        # Five labels (not NIH's 15): the vectors sort between "image_index" and "patient_id".
        pixels = fake_data.gray_pixels(8, 8, seed=3)
        metadata = schema.ImageMetadata("p1/s1/v1.jpg", 12, 0, -1, "", "LATERAL")
        labels = [1, 0, 0, 0, 1]
        ours = codec.encode_example(pixels, metadata, labels, num_labels=5, **vectors)
        expected = _tf_example(pixels, metadata, labels, "raw", pixels.tobytes(), **vectors)
        self.assertEqual(ours, expected.SerializeToString(deterministic=True))
        parsed = codec.parse_example(tf.constant(ours), num_labels=5)
        self.assertAllEqual(parsed[schema.LABEL_MASK_KEY], vectors.get("label_mask", [1] * 5))
        self.assertAllEqual(parsed[schema.LABEL_UNCERTAIN_KEY], vectors.get("label_uncertain", [0] * 5))

    def test_bad_label_mask_raises(self):
        with self.assertRaisesRegex(ValueError, "label_mask must be a 0/1 vector of length 3"):
            codec.encode_example(
                fake_data.gray_pixels(4, 4),
                fake_data.metadata_for(0),
                [1, 0, 0],
                num_labels=3,
                label_mask=[2, 0, 1],
            )

    def test_png_round_trip(self):
        pixels = fake_data.gray_pixels(12, 12, seed=5)
        decoded = np.asarray(Image.open(io.BytesIO(codec.encode_image(pixels[..., None], "png"))))
        self.assertAllEqual(decoded, pixels)

    @parameterized.named_parameters(
        ("float_pixels", np.zeros((4, 4), np.float32), "uint8"),
        ("rgb_pixels", np.zeros((4, 4, 3), np.uint8), "grayscale"),
        ("empty", np.zeros((0, 4), np.uint8), "non-empty"),
    )
    def test_bad_pixels_raise(self, pixels, message):
        with self.assertRaisesRegex(ValueError, message):
            codec.encode_example(pixels, fake_data.metadata_for(0), schema.labels_to_multi_hot("Mass"))

    def test_bad_labels_and_format_raise(self):
        pixels = fake_data.gray_pixels(4, 4)
        with self.assertRaisesRegex(ValueError, "0/1 vector of length 15"):
            codec.encode_example(pixels, fake_data.metadata_for(0), [1, 0])
        with self.assertRaisesRegex(ValueError, "image_format must be one of.*'jpeg'"):
            codec.encode_example(
                pixels, fake_data.metadata_for(0), schema.labels_to_multi_hot("Mass"), image_format="jpeg"
            )
        with self.assertRaisesRegex(ValueError, "image_format must be one of.*'jpeg'"):
            codec.encode_image(pixels, "jpeg")

    def test_tfrecord_frames_are_read_by_tf_data(self):
        path = os.path.join(self.get_temp_dir(), "frames.tfrecord")
        records = [b"", b"a", os.urandom(70000)]
        with open(path, "wb") as f:
            for record in records:
                f.write(codec.tfrecord_frame(record))
        read = [r.numpy() for r in tf.data.TFRecordDataset(path)]
        self.assertEqual(read, records)


class DecodeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("raw", "png")
    def test_round_trip_every_field(self, image_format):
        pixels = fake_data.gray_pixels(6, 5, seed=3)
        metadata = schema.ImageMetadata(
            image_index="00000042_007.png", patient_id=42, follow_up=7, age=61, sex="F", view_position="AP"
        )
        labels = schema.labels_to_multi_hot("Edema|Pneumonia")
        serialized = codec.encode_example(pixels, metadata, labels, image_format=image_format)

        features = codec.parse_example(tf.constant(serialized))
        self.assertEqual(features[schema.FORMAT_KEY].numpy().decode(), image_format)
        self.assertEqual(int(features[schema.HEIGHT_KEY]), 6)
        self.assertEqual(int(features[schema.WIDTH_KEY]), 5)
        self.assertAllEqual(features[schema.LABELS_KEY], labels)
        self.assertEqual(features[schema.IMAGE_INDEX_KEY].numpy(), b"00000042_007.png")
        self.assertEqual(int(features[schema.PATIENT_ID_KEY]), 42)
        self.assertEqual(int(features[schema.FOLLOW_UP_KEY]), 7)
        self.assertEqual(int(features[schema.AGE_KEY]), 61)
        self.assertEqual(features[schema.SEX_KEY].numpy(), b"F")
        self.assertEqual(features[schema.VIEW_POSITION_KEY].numpy(), b"AP")
        self.assertAllEqual(codec.decode_image(features)[..., 0], pixels)
        self.assertAllEqual(codec.decode_image(features, image_format=image_format)[..., 0], pixels)

    @parameterized.parameters("raw", "png")
    def test_decode_in_dataset_map_restores_static_shape(self, image_format):
        records = [
            codec.encode_example(
                fake_data.gray_pixels(8, 8, seed=i),
                fake_data.metadata_for(i),
                fake_data.random_labels(np.random.default_rng(i)),
                image_format=image_format,
            )
            for i in range(3)
        ]
        dataset = tf.data.Dataset.from_tensor_slices(records).map(codec.parse_example)
        dataset = dataset.map(lambda f: codec.decode_image(f, image_size=8, image_format=image_format))
        self.assertEqual(dataset.element_spec.shape.as_list(), [8, 8, 1])
        images = list(dataset.as_numpy_iterator())
        self.assertAllEqual(images[1][..., 0], fake_data.gray_pixels(8, 8, seed=1))

    def test_batch_parse(self):
        records = [
            codec.encode_example(
                fake_data.gray_pixels(4, 4, seed=i),
                fake_data.metadata_for(i),
                schema.labels_to_multi_hot("Mass"),
            )
            for i in range(3)
        ]
        features = codec.parse_examples(tf.constant(records))
        self.assertAllEqual(features[schema.LABELS_KEY].shape, [3, 15])
        self.assertAllEqual(features[schema.LABELS_KEY][:, schema.LABELS.index("Mass")], [1, 1, 1])

    def test_decode_with_unknown_format_raises(self):
        features = codec.parse_example(
            tf.constant(
                codec.encode_example(fake_data.gray_pixels(4, 4), fake_data.metadata_for(0), [0] * 14 + [1])
            )
        )
        with self.assertRaisesRegex(ValueError, "image_format must be one of.*'jpeg'"):
            codec.decode_image(features, image_format="jpeg")


if __name__ == "__main__":
    tf.test.main()
