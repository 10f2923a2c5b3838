"""Tests for trainer/training/callbacks.py: the NaN stop, the Keras LR scheduler with our schedule, assembly order."""

import io
import os

import keras
import numpy as np
import tensorflow as tf

from trainer.model import run_dir as run_dir_lib
from trainer.training import callbacks
from trainer.training import schedule as lr_schedule


class CallbacksTest(tf.test.TestCase):
    def test_stop_on_nan_names_epoch_and_batch(self):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        callback = callbacks.StopOnNaN()
        callback.set_model(model)
        callback.on_epoch_begin(2)
        callback.on_train_batch_end(0, {"loss": 0.5})
        with self.assertRaisesRegex(FloatingPointError, r"loss became nan at epoch 3, batch 5"):
            callback.on_train_batch_end(4, {"loss": float("nan")})

    def _fit(self, lr_fn, epochs=3):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=1.0), loss="mse")
        x, y = np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32)
        scheduler = callbacks.build_callbacks(
            lr_fn, callbacks.worker_paths(self.get_temp_dir(), self.get_temp_dir()), early_stopping_patience=0
        )[0]
        return model, model.fit(x, y, epochs=epochs, verbose=0, callbacks=[scheduler])

    def test_scheduler_sets_and_logs_the_rate_per_epoch(self):
        lr_fn = lr_schedule.build_lr_fn()
        model, history = self._fit(lr_fn)
        # The column history.csv gets.
        self.assertAllClose(
            history.history[run_dir_lib.LEARNING_RATE_COLUMN], [lr_fn(e) for e in range(3)], rtol=1e-6
        )
        self.assertAllClose(float(model.optimizer.learning_rate), lr_fn(2), rtol=1e-6)

    def test_scheduler_rejects_bad_schedule_output(self):
        with self.assertRaisesRegex(ValueError, r"should be a float\. Got: None"):
            self._fit(lambda epoch: None if epoch == 1 else 0.1)

    def test_order_and_paths(self):
        run_dir = self.get_temp_dir()
        paths = callbacks.chief_paths(run_dir, run_dir_lib.backup_dir(run_dir))
        built = callbacks.build_callbacks(lr_schedule.build_lr_fn(), paths, early_stopping_patience=3)
        kinds = [type(c).__name__ for c in built]
        self.assertEqual(
            kinds[:5],
            ["LearningRateScheduler", "StopOnNaN", "CSVLogger", "BackupAndRestore", "ModelCheckpoint"],
        )
        self.assertEqual(kinds[-1], "EarlyStopping")
        self.assertEqual(built[2].filename, os.path.join(run_dir, run_dir_lib.HISTORY_FILE))
        self.assertEqual(built[4].filepath, os.path.join(run_dir, run_dir_lib.BEST_CHECKPOINT))
        worker = callbacks.build_callbacks(
            lr_schedule.build_lr_fn(),
            callbacks.worker_paths("/tmp/scratch", "/tmp/b"),
            early_stopping_patience=0,
        )
        kinds = [type(c).__name__ for c in worker]
        self.assertNotIn("CSVLogger", kinds)
        self.assertNotIn("TensorBoard", kinds)
        self.assertNotIn("EarlyStopping", kinds)

    def _history(self, rows):
        path = os.path.join(self.get_temp_dir(), "history.csv")
        with open(path, "w") as f:
            f.write("epoch,loss,val_auc\n" + "".join(f"{e},0.5,{v}\n" for e, v in rows))
        return path

    def test_best_so_far_reads_the_backed_up_epochs_first_best_wins(self):
        # Epochs 1 and 2 tie at 0.8 (the first wins, as ModelCheckpoint saves only on a strict
        # gain); epoch 3 (0.9) was written before a kill and never backed up: resuming at 3.
        path = self._history([(0, 0.7), (1, 0.8), (2, 0.8), (3, 0.9)])
        best = callbacks.best_so_far(path, epochs_done=3)
        self.assertEqual(best, callbacks.BestSoFar(value=0.8, epoch=1, epochs_done=3))
        self.assertEqual(best.epochs_since, 1)
        self.assertIsNone(callbacks.best_so_far(path, epochs_done=0))
        self.assertIsNone(callbacks.best_so_far(os.path.join(self.get_temp_dir(), "none.csv"), 3))
        self.assertIsNone(callbacks.best_so_far(self._history([(0, "nan")]), epochs_done=1))

    def test_resumed_callbacks_start_from_the_best_so_far(self):
        run_dir = self.get_temp_dir()
        resumed_from = callbacks.BestSoFar(value=0.8, epoch=1, epochs_done=3)
        built = callbacks.build_callbacks(
            lr_schedule.build_lr_fn(),
            callbacks.worker_paths(run_dir, run_dir),
            early_stopping_patience=2,
            resumed_from=resumed_from,
            epoch_line=True,
        )
        checkpoint, stopping = built[3], built[4]
        self.assertEqual(checkpoint.best, 0.8)
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        stopping.set_model(model)
        stopping.on_train_begin()
        self.assertEqual((stopping.best, stopping.best_epoch, stopping.wait), (0.8, 1, 1))
        self.assertFalse(stopping.restore_best_weights)
        # Epoch index 3 without a gain: two epochs since the best, patience 2 is used up.
        stopping.on_epoch_end(3, {callbacks.MONITOR: 0.79})
        self.assertTrue(model.stop_training)
        stream = io.StringIO()
        line = built[5]
        line._stream = stream
        line.set_params({"epochs": 5})
        line.on_epoch_begin(3)
        line.on_epoch_end(3, {callbacks.MONITOR: 0.79})
        line.on_epoch_begin(4)
        line.on_epoch_end(4, {callbacks.MONITOR: 0.81})
        first, second = stream.getvalue().splitlines()
        self.assertNotIn("* best", first)
        self.assertIn("* best", second)


if __name__ == "__main__":
    tf.test.main()
