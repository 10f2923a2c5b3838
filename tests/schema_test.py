"""Tests for tfrecords.schema: label vocabulary, label parsing and the feature spec."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

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


class FeatureSpecTest(tf.test.TestCase):
    def test_spec_covers_every_key_with_its_shape(self):
        spec = schema.FEATURE_SPEC
        self.assertEqual(
            set(spec), set(schema.FEATURE_TYPES) | {schema.LABEL_MASK_KEY, schema.LABEL_UNCERTAIN_KEY}
        )
        self.assertEqual(spec[schema.LABELS_KEY].shape, [schema.NUM_LABELS])
        self.assertEqual(list(spec[schema.LABEL_MASK_KEY].default_value), [1] * schema.NUM_LABELS)
        self.assertEqual(list(spec[schema.LABEL_UNCERTAIN_KEY].default_value), [0] * schema.NUM_LABELS)

    def test_spec_sized_by_vocabulary(self):
        spec = schema.feature_spec(4)
        self.assertEqual(spec[schema.LABELS_KEY].shape, [4])
        self.assertEqual(spec[schema.LABEL_MASK_KEY].shape, [4])
        self.assertEqual(spec[schema.LABEL_UNCERTAIN_KEY].shape, [4])
        with self.assertRaisesRegex(ValueError, "num_labels"):
            schema.feature_spec(0)
        self.assertEqual(spec[schema.IMAGE_KEY].dtype, tf.string)
        self.assertEqual(spec[schema.PATIENT_ID_KEY].dtype, tf.int64)

    def test_unknown_attribute_raises(self):
        with self.assertRaisesRegex(AttributeError, "NO_SUCH_NAME"):
            _ = schema.NO_SUCH_NAME


if __name__ == "__main__":
    tf.test.main()
