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


def _old_weighted_bce(weights, y_true, y_pred):
    """The weighted loss as it was before labels could be unknown (its exact operations)."""
    y_true = keras.ops.cast(y_true, "float32")
    y_pred = keras.ops.clip(keras.ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
    weights = keras.ops.convert_to_tensor(weights, dtype="float32")
    per_label = -(weights * y_true * keras.ops.log(y_pred) + (1.0 - y_true) * keras.ops.log(1.0 - y_pred))
    return keras.ops.mean(per_label, axis=-1)


class UnknownLabelsTest(tf.test.TestCase):
    """y_true = -1 marks an unknown label: left out of the losses, the AUCs and the accuracy."""

    def _random(self, rows=16, labels=5, seed=0):
        rng = np.random.default_rng(seed)
        y_true = (rng.random((rows, labels)) < 0.4).astype(np.float32)
        y_pred = rng.random((rows, labels)).astype(np.float32)
        return y_true, y_pred

    def test_all_known_losses_are_bit_identical_to_before(self):
        y_true, y_pred = self._random(rows=32, labels=schema.NUM_LABELS)
        weights = np.linspace(0.5, 9.0, schema.NUM_LABELS).astype(np.float32)
        self.assertAllEqual(
            objectives.WeightedBinaryCrossentropy(weights)(y_true, y_pred),
            keras.ops.mean(_old_weighted_bce(weights, y_true, y_pred)),
        )
        self.assertAllEqual(
            objectives.MaskedBinaryCrossentropy()(y_true, y_pred),
            keras.losses.BinaryCrossentropy()(y_true, y_pred),
        )

    def test_all_known_gradients_are_bit_identical_to_before(self):
        y_true, y_pred = self._random(rows=8, labels=schema.NUM_LABELS, seed=1)
        weights = np.linspace(0.5, 9.0, schema.NUM_LABELS).astype(np.float32)
        logits = tf.Variable(np.log(y_pred / (1 - y_pred)))
        with tf.GradientTape(persistent=True) as tape:
            new = objectives.WeightedBinaryCrossentropy(weights)(y_true, tf.sigmoid(logits))
            old = tf.reduce_mean(_old_weighted_bce(weights, y_true, tf.sigmoid(logits)))
        self.assertAllEqual(tape.gradient(new, logits), tape.gradient(old, logits))

    def test_loss_averages_each_image_over_its_known_labels(self):
        # Image 0 knows labels 0 and 2 (p = 0.25 and 0.5, both positive); image 1 knows none.
        # Per image: (-log 0.25 - log 0.5) / 2, and 0; the batch mean halves it.
        y_true = np.array([[1, -1, 1], [-1, -1, -1]], np.float32)
        y_pred = np.array([[0.25, 0.9, 0.5], [0.3, 0.3, 0.3]], np.float32)
        expected = (-np.log(0.25) - np.log(0.5)) / 2 / 2
        self.assertAllClose(objectives.MaskedBinaryCrossentropy()(y_true, y_pred), expected, rtol=1e-5)
        weighted = objectives.WeightedBinaryCrossentropy([2.0, 5.0, 1.0])
        # Positive weight 2 on label 0 and 1 on label 2: (-2 log 0.25 - log 0.5) / 2, halved.
        self.assertAllClose(weighted(y_true, y_pred), (-2 * np.log(0.25) - np.log(0.5)) / 2 / 2, rtol=1e-5)

    def test_unknown_labels_do_not_move_the_loss(self):
        y_true, y_pred = self._random()
        y_true[0, 1] = -1
        loss = objectives.MaskedBinaryCrossentropy()
        changed = y_pred.copy()
        changed[0, 1] = 0.999
        self.assertAllEqual(loss(y_true, y_pred), loss(y_true, changed))

    def test_auc_counts_known_labels_only(self):
        # Label 0 known on all rows; label 1 unknown on the rows that would spoil its AUC.
        y_true, y_pred = self._random(rows=40, labels=2, seed=2)
        unknown = y_pred[:, 1] > 0.7
        masked = y_true.copy()
        masked[unknown, 1] = -1
        metric = objectives.MeanAUC(num_labels=2)
        metric.update_state(masked, y_pred)
        per_label = [objectives.ClassAUC(k) for k in range(2)]
        for m in per_label:
            m.update_state(masked, y_pred)
        # The same as each label's AUC over its known rows alone.
        reference = [keras.metrics.AUC(), keras.metrics.AUC()]
        reference[0].update_state(y_true[:, 0], y_pred[:, 0])
        reference[1].update_state(y_true[~unknown, 1], y_pred[~unknown, 1])
        self.assertAllClose(per_label[0].result(), reference[0].result())
        self.assertAllClose(per_label[1].result(), reference[1].result())
        self.assertAllClose(metric.result(), (reference[0].result() + reference[1].result()) / 2)

    def test_all_known_auc_counts_are_identical_to_unweighted(self):
        y_true, y_pred = self._random(rows=64, labels=schema.NUM_LABELS, seed=3)
        ours = objectives.MeanAUC()
        ours.update_state(y_true, y_pred)
        keras_auc = keras.metrics.AUC(multi_label=True, num_labels=schema.NUM_LABELS)
        keras_auc.update_state(y_true, y_pred)
        for name in ("true_positives", "false_positives", "true_negatives", "false_negatives"):
            self.assertAllEqual(getattr(ours, name), getattr(keras_auc, name))

    def test_binary_accuracy_over_known_labels(self):
        # Known entries: row 0: (1, 0.9) right, (0, 0.8) wrong; row 1: (0, 0.1) right. 2 of 3.
        y_true = np.array([[1, 0, -1], [-1, -1, 0]], np.float32)
        y_pred = np.array([[0.9, 0.8, 0.9], [0.9, 0.9, 0.1]], np.float32)
        metric = objectives.MaskedBinaryAccuracy()
        metric.update_state(y_true, y_pred)
        self.assertAllClose(metric.result(), 2 / 3)
        self.assertEqual(metric.name, "binary_accuracy")

    def test_all_known_binary_accuracy_equals_keras(self):
        y_true, y_pred = self._random(rows=33, labels=schema.NUM_LABELS, seed=4)
        ours, theirs = objectives.MaskedBinaryAccuracy(), keras.metrics.BinaryAccuracy()
        ours.update_state(y_true, y_pred)
        theirs.update_state(y_true, y_pred)
        self.assertAllEqual(ours.result(), theirs.result())


if __name__ == "__main__":
    tf.test.main()
