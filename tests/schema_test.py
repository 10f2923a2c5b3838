"""Tests for tfrecords.schema: labels, example round trip, decoding."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from tfrecords import schema


class LabelsTest(tf.test.TestCase, parameterized.TestCase):
    def test_label_order_matches_design(self):
        self.assertLen(schema.LABELS, 15)
        self.assertEqual(schema.LABELS[0], "Atelectasis")
        self.assertEqual(schema.LABELS[7], "Hernia")
        self.assertEqual(schema.LABELS[-2], "Pneumothorax")
        self.assertEqual(schema.LABELS[-1], "No Finding")
        self.assertNotIn("No Finding", schema.FINDINGS)

    def test_no_finding(self):
        multi_hot = schema.labels_to_multi_hot("No Finding")
        self.assertAllEqual(multi_hot, [0] * 14 + [1])

    def test_multi_label(self):
        multi_hot = schema.labels_to_multi_hot("Cardiomegaly|Effusion|Hernia")
        expected = np.zeros(15, np.int64)
        expected[[1, 4, 7]] = 1
        self.assertAllEqual(multi_hot, expected)
        self.assertEqual(schema.multi_hot_to_labels(multi_hot), "Cardiomegaly|Effusion|Hernia")

    @parameterized.named_parameters(
        ("unknown", "Cardiomegaly|Infiltrate", "Unknown label 'Infiltrate'"),
        ("empty", "", "empty"),
        ("no_finding_with_finding", "No Finding|Mass", "exclusive"),
        ("repeated", "Mass|Mass", "repeated"),
    )
    def test_bad_labels_raise(self, value, message):
        with self.assertRaisesRegex(ValueError, message):
            schema.labels_to_multi_hot(value)


class ExampleTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("raw", "png")
    def test_round_trip_every_field(self, image_format):
        pixels = fake_data.gray_pixels(6, 5, seed=3)
        metadata = schema.ImageMetadata(
            image_index="00000042_007.png", patient_id=42, follow_up=7, age=61, sex="F", view_position="AP"
        )
        labels = schema.labels_to_multi_hot("Edema|Pneumonia")
        serialized = schema.make_example(
            pixels, metadata, labels, image_format=image_format
        ).SerializeToString()

        features = schema.parse_example(tf.constant(serialized))
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
        self.assertAllEqual(schema.decode_image(features)[..., 0], pixels)
        self.assertAllEqual(schema.decode_image(features, image_format=image_format)[..., 0], pixels)

    @parameterized.parameters("raw", "png")
    def test_decode_in_dataset_map_restores_static_shape(self, image_format):
        records = [
            schema.make_example(
                fake_data.gray_pixels(8, 8, seed=i),
                fake_data.metadata_for(i),
                fake_data.random_labels(np.random.default_rng(i)),
                image_format=image_format,
            ).SerializeToString()
            for i in range(3)
        ]
        dataset = tf.data.Dataset.from_tensor_slices(records).map(schema.parse_example)
        dataset = dataset.map(lambda f: schema.decode_image(f, image_size=8, image_format=image_format))
        self.assertEqual(dataset.element_spec.shape.as_list(), [8, 8, 1])
        images = list(dataset.as_numpy_iterator())
        self.assertAllEqual(images[1][..., 0], fake_data.gray_pixels(8, 8, seed=1))

    def test_batch_parse(self):
        records = [
            schema.make_example(
                fake_data.gray_pixels(4, 4, seed=i),
                fake_data.metadata_for(i),
                schema.labels_to_multi_hot("Mass"),
            ).SerializeToString()
            for i in range(3)
        ]
        features = schema.parse_examples(tf.constant(records))
        self.assertAllEqual(features[schema.LABELS_KEY].shape, [3, 15])

    @parameterized.named_parameters(
        ("float_pixels", np.zeros((4, 4), np.float32), "uint8"),
        ("rgb_pixels", np.zeros((4, 4, 3), np.uint8), "grayscale"),
        ("empty", np.zeros((0, 4), np.uint8), "non-empty"),
    )
    def test_bad_pixels_raise(self, pixels, message):
        with self.assertRaisesRegex(ValueError, message):
            schema.make_example(pixels, fake_data.metadata_for(0), schema.labels_to_multi_hot("Mass"))

    def test_bad_labels_and_format_raise(self):
        pixels = fake_data.gray_pixels(4, 4)
        with self.assertRaisesRegex(ValueError, "0/1 vector of length 15"):
            schema.make_example(pixels, fake_data.metadata_for(0), [1, 0])
        with self.assertRaisesRegex(ValueError, "image_format must be one of"):
            schema.make_example(
                pixels, fake_data.metadata_for(0), schema.labels_to_multi_hot("Mass"), image_format="jpeg"
            )


if __name__ == "__main__":
    tf.test.main()
