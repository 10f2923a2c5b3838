"""Tests for trainer/keras_compat.py: version guard, apply-and-undo, and that Keras still has the bug.

`KerasStillNeedsTest` reproduces tensorflow/tensorflow#72388 against Keras' own
`reduce_per_replica` with a stand-in multi-worker strategy: when it fails, Keras has fixed the
scalar reduction and `_scalar_log_reduce` can go. Both bugs are reproduced for real, with two
worker processes, by the slow `tests/multi_worker_test.py`.
"""

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

from trainer import keras_compat


class _StandInMultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
    """Looks like one worker of a multi-worker cluster to Keras; reduces only locally.

    `reduce` does what the real strategy does on each worker before the all-reduce: a local
    `reduce_mean` over `axis` (when given). It records the axis Keras asked for.
    """

    def __init__(self):  # No cluster: nothing of the real strategy is needed.
        self.axes = []

    @property
    def extended(self):
        return type("Extended", (), {"_in_multi_worker_mode": staticmethod(lambda: True)})()

    def reduce(self, reduce_op, value, axis):
        self.axes.append(axis)
        return value if axis is None else tf.reduce_mean(value, axis=axis)

    def experimental_local_results(self, value):
        return (value,)


class KerasStillNeedsTest(tf.test.TestCase):
    def test_keras_reduces_scalar_logs_over_axis_0(self):
        strategy = _StandInMultiWorker()
        self.assertTrue(keras_compat.is_multi_worker(strategy))
        # tensorflow/tensorflow#72388: Keras averages the scalar loss over axis 0.
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, "Invalid reduction dimension"):
            keras_tf_trainer.reduce_per_replica({"loss": tf.constant(0.5)}, strategy, "auto")
        self.assertEqual(strategy.axes, [0])

    def test_workaround_averages_scalars_over_all_replicas(self):
        strategy = _StandInMultiWorker()
        with keras_compat._scalar_log_reduce():
            logs = keras_tf_trainer.reduce_per_replica({"loss": tf.constant(0.5)}, strategy, "auto")
        self.assertAllClose(logs["loss"], 0.5)
        self.assertEqual(strategy.axes, [None])


class ApplyAndUndoTest(tf.test.TestCase):
    def _model(self):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        return model

    def test_patches_are_undone_after_the_block(self):
        original_reduce = keras_tf_trainer.reduce_per_replica
        model = self._model()
        strategy = _StandInMultiWorker()
        with keras_compat.multi_worker_fit(model, strategy):
            self.assertIsNot(keras_tf_trainer.reduce_per_replica, original_reduce)
            self.assertIn("_maybe_symbolic_build", vars(model))
        self.assertIs(keras_tf_trainer.reduce_per_replica, original_reduce)
        self.assertNotIn("_maybe_symbolic_build", vars(model))

    def test_undone_also_when_fit_raises(self):
        original_reduce = keras_tf_trainer.reduce_per_replica
        model = self._model()
        with self.assertRaisesRegex(RuntimeError, "boom"):
            with keras_compat.multi_worker_fit(model, _StandInMultiWorker()):
                raise RuntimeError("boom")
        self.assertIs(keras_tf_trainer.reduce_per_replica, original_reduce)
        self.assertNotIn("_maybe_symbolic_build", vars(model))

    def test_other_strategies_are_left_alone(self):
        original_reduce = keras_tf_trainer.reduce_per_replica
        model = self._model()
        for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"), tf.distribute.get_strategy()):
            with keras_compat.multi_worker_fit(model, strategy):
                self.assertIs(keras_tf_trainer.reduce_per_replica, original_reduce)
                self.assertNotIn("_maybe_symbolic_build", vars(model))


class VersionTest(tf.test.TestCase):
    def test_installed_keras_is_covered(self):
        keras_compat.check_version()  # The pinned Keras is inside the tested range.

    def test_untested_versions_are_refused_with_what_to_do(self):
        with self.assertRaisesRegex(RuntimeError, r"covers Keras 3\.0-3\.15 .* but Keras 3\.16 is installed"):
            keras_compat.check_version((3, 16))
        with self.assertRaisesRegex(RuntimeError, r"Keras 2\.15 is installed"):
            keras_compat.check_version((2, 15))


if __name__ == "__main__":
    tf.test.main()
