"""Tests for trainer/training/keras_compat.py: version guard, apply-and-undo, and the Keras behaviours it waits for.

Each behaviour a workaround exists for is stated as Keras would behave without it, marked
`xfail(strict=True)` with the upstream report: when Keras changes, the test passes, strict
xfail reports it, and the workaround can go. `tests/multi_worker_test.py` (slow) reproduces
the multi-worker failures for real, with two worker processes.
"""

import keras
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

from trainer.training import keras_compat


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
    @pytest.mark.xfail(
        strict=True,
        raises=tf.errors.InvalidArgumentError,
        reason="tensorflow/tensorflow#72388: Keras averages the scalar loss over axis 0 under multi-worker "
        "(Invalid reduction dimension); `_scalar_log_reduce` works around it.",
    )
    def test_keras_reduces_scalar_logs(self):
        strategy = _StandInMultiWorker()
        self.assertTrue(keras_compat.is_multi_worker(strategy))
        logs = keras_tf_trainer.reduce_per_replica({"loss": tf.constant(0.5)}, strategy, "auto")
        self.assertAllClose(logs["loss"], 0.5)

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
        with self.assertRaisesRegex(
            RuntimeError, r"covers Keras 3\.11-3\.15 .* but Keras 3\.16 is installed"
        ):
            keras_compat.check_version((3, 16))
        with self.assertRaisesRegex(RuntimeError, r"Keras 2\.15 is installed"):
            keras_compat.check_version((2, 15))
        # 3.10's epoch iterator yields (step, iterator): the build workaround cannot unpack it.
        with self.assertRaisesRegex(RuntimeError, r"Keras 3\.10 is installed"):
            keras_compat.check_version((3, 10))


class _ValidationIterators(keras.callbacks.Callback):
    """Records each validation pass's iterator, its running loss after each step, the epoch's val_loss."""

    def __init__(self):
        super().__init__()
        self.iterators, self.steps, self.val_losses = [], [], []

    def on_test_begin(self, logs=None):
        self.steps.append([])

    def on_test_batch_end(self, batch, logs=None):
        self.steps[-1].append(float(logs["loss"]))

    def on_test_end(self, logs=None):
        self.iterators.append(self.model._eval_epoch_iterator._current_iterator)

    def on_epoch_end(self, epoch, logs=None):
        self.val_losses.append(logs["val_loss"])


class _KeepIteratorOnly(keras.callbacks.Callback):
    """One validation iterator for the whole fit, as KeepValidationIterator, without its build step."""

    def on_test_begin(self, logs=None):
        epoch_iterator = self.model._eval_epoch_iterator
        if "_get_iterator" not in vars(epoch_iterator):
            kept = iter(epoch_iterator._distributed_dataset)
            epoch_iterator._get_iterator = lambda: kept


class KeepValidationIteratorTest(tf.test.TestCase):
    def _data(self):
        x = tf.reshape(tf.range(12, dtype=tf.float32), (6, 2))
        train = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2).repeat()
        # Three batches of different sizes and values: a pass that starts elsewhere differs.
        val = tf.data.Dataset.from_tensor_slices((x[:5] * [[1.0, -1.0]], x[:5, :1])).batch(2)
        return train, val

    def _fit(self, *extra_callbacks):
        keras.utils.set_random_seed(0)
        train, val = self._data()
        # Built and compiled inside a strategy's scope, as the trainer does: there `evaluate`
        # reads a batch to learn the input shapes before each pass.
        with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
            model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
            # Learning rate 0: the weights stay put, so every pass scores alike only if it
            # reads the same three batches in the same order.
            model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        probe = _ValidationIterators()
        model.fit(
            train,
            validation_data=val.repeat(),
            epochs=3,
            steps_per_epoch=2,
            validation_steps=3,
            callbacks=[probe, *extra_callbacks],
            verbose=0,
        )
        return model, probe

    @pytest.mark.xfail(
        strict=True,
        reason="keras-team/keras#17399: fit starts a new validation iterator every epoch, by design; "
        "KeepValidationIterator keeps one.",
    )
    def test_keras_keeps_its_validation_iterator(self):
        _, probe = self._fit()
        self.assertLen({id(iterator) for iterator in probe.iterators}, 1)

    @pytest.mark.xfail(
        strict=True,
        reason="Keras 3.11-3.15: evaluate's _maybe_symbolic_build(iterator=...) reads a batch before "
        "on_test_begin even when the model is built (no upstream report found); "
        "KeepValidationIterator builds from no batch.",
    )
    def test_keras_reads_no_batch_before_a_pass_of_a_built_model(self):
        # One kept iterator without the callback's build step: the same passes only if
        # `evaluate` reads nothing from it before each pass.
        _, probe = self._fit(_KeepIteratorOnly())
        self.assertEqual(probe.steps[1], probe.steps[0])

    def test_one_iterator_and_the_same_passes(self):
        _, baseline = self._fit()
        model, kept = self._fit(keras_compat.KeepValidationIterator())
        self.assertLen({id(iterator) for iterator in kept.iterators}, 1)
        # The same batches in the same order every epoch: the same running loss after each step.
        self.assertLen(kept.steps[0], 3)
        self.assertEqual(kept.steps[1], kept.steps[0])
        self.assertEqual(kept.steps[2], kept.steps[0])
        self.assertEqual(kept.steps[0], baseline.steps[0])
        self.assertAllClose(kept.val_losses, [baseline.val_losses[0]] * 3)
        # Undone after fit: a later evaluate reads its own fresh pass.
        self.assertNotIn("_maybe_symbolic_build", vars(model))
        _, val = self._data()
        self.assertAllClose(model.evaluate(val, verbose=0), baseline.val_losses[0])


if __name__ == "__main__":
    tf.test.main()
