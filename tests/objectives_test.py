"""Tests for trainer/model/objectives.py: the masked mean AUC, per-class AUC and the weighted loss."""

import keras
import numpy as np
import tensorflow as tf

from tfrecords import schema
from trainer.model import objectives


class ObjectivesTest(tf.test.TestCase):
    def test_mean_auc_skips_labels_without_both_classes(self):
        # Label 0: scores order positives above negatives -> AUC 1. Label 1: reversed -> AUC 0.
        # Label 2..14: no positive at all -> undefined, skipped (Keras' AUC would count 0).
        y_true = np.zeros((4, schema.NUM_LABELS), np.float32)
        y_true[:2, 0] = 1
        y_true[:2, 1] = 1
        y_pred = np.full((4, schema.NUM_LABELS), 0.5, np.float32)
        y_pred[:, 0] = [0.9, 0.8, 0.2, 0.1]
        y_pred[:, 1] = [0.1, 0.2, 0.8, 0.9]
        metric = objectives.MeanAUC()
        metric.update_state(y_true, y_pred)
        self.assertAllClose(metric.result(), 0.5, atol=1e-3)  # (1 + 0) / 2.
        per_class = [objectives.ClassAUC(i) for i in (0, 1, 2)]
        for m in per_class:
            m.update_state(y_true, y_pred)
        self.assertEqual(per_class[0].name, "auc_Atelectasis")
        self.assertAllClose(per_class[0].result(), 1.0, atol=1e-3)
        self.assertAllClose(per_class[1].result(), 0.0, atol=1e-3)
        self.assertTrue(np.isnan(per_class[2].result()))
        self.assertEqual(objectives.ClassAUC(14).name, "auc_No_Finding")

    def test_shared_class_auc_equals_class_auc(self):
        # Random scores over two batches: each label's AUC read from the MeanAUC's counts must
        # equal a ClassAUC of that label (same thresholds), NaN where a label lacks a class.
        rng = np.random.default_rng(0)
        mean = objectives.MeanAUC()
        shared = [objectives.SharedClassAUC(i, source=mean) for i in range(schema.NUM_LABELS)]
        separate = [objectives.ClassAUC(i) for i in range(schema.NUM_LABELS)]
        for _ in range(2):
            y_true = (rng.random((16, schema.NUM_LABELS)) < 0.3).astype(np.float32)
            y_true[:, 7] = 0  # Label 7 never positive: undefined.
            y_pred = rng.random((16, schema.NUM_LABELS)).astype(np.float32)
            for metric in [mean, *shared, *separate]:
                metric.update_state(y_true, y_pred)
        got = [float(m.result()) for m in shared]
        want = [float(m.result()) for m in separate]
        self.assertTrue(np.isnan(got[7]) and np.isnan(want[7]))
        self.assertAllClose(np.delete(got, 7), np.delete(want, 7), atol=1e-6)
        self.assertEqual([m.name for m in shared], [m.name for m in separate])
        self.assertEqual(shared[0].variables, [])  # Nothing of its own to update or save.
        mean.reset_state()
        self.assertTrue(np.isnan(float(shared[0].result())))

    def test_shared_class_auc_without_source(self):
        metric = objectives.SharedClassAUC(2)
        with self.assertRaisesRegex(ValueError, "auc_Consolidation: no source MeanAUC"):
            metric.result()

    def test_weighted_bce(self):
        # One label, p = 0.25: positive term -log(0.25) * w, negative term -log(0.75).
        weights = np.ones(schema.NUM_LABELS, np.float32)
        weights[0] = 3.0
        loss = objectives.WeightedBinaryCrossentropy(weights)
        y_true = np.zeros((2, schema.NUM_LABELS), np.float32)
        y_true[0, 0] = 1
        y_pred = np.full((2, schema.NUM_LABELS), 0.25, np.float32)
        per_label = np.full((2, schema.NUM_LABELS), -np.log(0.75))
        per_label[0, 0] = -3.0 * np.log(0.25)
        self.assertAllClose(loss(y_true, y_pred), per_label.mean(), rtol=1e-5)
        # All weights 1 equals the plain binary cross-entropy.
        plain = objectives.WeightedBinaryCrossentropy(np.ones(schema.NUM_LABELS))
        self.assertAllClose(
            plain(y_true, y_pred), keras.losses.BinaryCrossentropy()(y_true, y_pred), rtol=1e-5
        )

    def test_metric_label(self):
        self.assertEqual(objectives.metric_label("No Finding"), "No_Finding")
        self.assertEqual(objectives.metric_label("Pleural_Thickening"), "Pleural_Thickening")

    def test_round_trip_through_keras_serialization(self):
        weights = np.arange(1, schema.NUM_LABELS + 1, dtype=np.float32)
        loss = objectives.WeightedBinaryCrossentropy(weights)
        restored = keras.losses.deserialize(
            keras.losses.serialize(loss), custom_objects=objectives.custom_objects()
        )
        self.assertAllClose(restored.pos_weights, weights)
        metric = objectives.ClassAUC(3)
        restored = keras.metrics.deserialize(
            keras.metrics.serialize(metric), custom_objects=objectives.custom_objects()
        )
        self.assertEqual((restored.class_index, restored.name), (3, metric.name))


if __name__ == "__main__":
    tf.test.main()
