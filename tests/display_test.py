"""Tests for trainer.training.display: the epoch line, the step progress line, TensorBoard."""

import io
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from tfrecords import contact_sheet
from trainer.training import display as console_callbacks


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _event_tags(log_dir):
    """{run: set of tags} over the event files under log_dir."""
    tags = {}
    for directory, _, names in tf.io.gfile.walk(log_dir):
        for name in names:
            if not name.startswith("events.out.tfevents."):
                continue
            run = os.path.relpath(directory, log_dir)
            for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
                tags.setdefault(run, set()).update(value.tag for value in event.summary.value)
    return tags


class EpochLineTest(tf.test.TestCase, parameterized.TestCase):
    def test_format(self):
        logs = {
            "loss": 0.21543,
            "auc": 0.77134,
            "auc_Atelectasis": 0.5,
            "binary_accuracy": 0.9,
            "val_loss": 0.19981,
            "val_auc": 0.81204,
            "val_auc_Atelectasis": 0.6,
            "lr": 6.4e-5,
        }
        self.assertEqual(
            console_callbacks.format_epoch_line(2, 12, 41.3, logs, improved=True),
            "epoch  3/12  41s  loss 0.2154  auc 0.7713  val_loss 0.1998  val_auc 0.8120  lr 6.40e-05  * best val_auc",
        )
        # Per-class figures and other metrics stay out; what is missing is left out.
        self.assertEqual(
            console_callbacks.format_epoch_line(0, 5, 3725, {"loss": 1.0}), "epoch 1/5  1:02:05  loss 1.0000"
        )

    @parameterized.parameters(
        ("max", [0.6, 0.7, 0.65, float("nan"), 0.71], [True, True, False, False, True]),
        ("min", [0.6, 0.7, 0.5, 0.5, 0.4], [True, False, True, False, True]),
    )
    def test_marks_improvements_like_model_checkpoint(self, mode, values, marks):
        clock, stream = FakeClock(), io.StringIO()
        callback = console_callbacks.EpochLine("val_auc", mode, stream=stream, clock=clock)
        callback.set_params({"epochs": len(values), "steps": 4})
        for epoch, value in enumerate(values):
            callback.on_epoch_begin(epoch)
            clock.now += 2.0
            callback.on_epoch_end(epoch, {"loss": 0.5, "val_auc": value, "lr": 1e-4})
        lines = stream.getvalue().splitlines()
        self.assertLen(lines, len(values))
        self.assertEqual([line.endswith("* best val_auc") for line in lines], marks)
        self.assertTrue(lines[0].startswith("epoch 1/5  2s  loss 0.5000  val_auc 0.6000  lr 1.00e-04"))

    def test_step_progress_only_in_long_epochs(self):
        clock, stream, progress = FakeClock(), io.StringIO(), io.StringIO()
        callback = console_callbacks.EpochLine(stream=stream, progress_stream=progress, clock=clock)
        callback.set_params({"epochs": 2, "steps": 100})
        callback.on_epoch_begin(0)
        for batch in range(100):  # 0.125 s per step: a 12.5 s epoch, no progress line.
            clock.now += 0.125
            callback.on_train_batch_end(batch)
        callback.on_epoch_end(0, {"loss": 1.0})
        self.assertEqual(progress.getvalue(), "")
        callback.on_epoch_begin(1)
        for batch in range(100):  # 1 s per step: past 30 s, the line starts.
            clock.now += 1.0
            callback.on_train_batch_end(batch)
        callback.on_epoch_end(1, {"loss": 1.0})
        # In logs: a line every 30 s from the 30th second; the epoch line, not a final progress
        # line, reports the end.
        self.assertEqual(
            progress.getvalue().splitlines(),
            [
                "epoch 2: 30/100 steps (30%), 1.00 steps/s, ETA 0:01:10",
                "epoch 2: 60/100 steps (60%), 1.00 steps/s, ETA 0:00:40",
                "epoch 2: 90/100 steps (90%), 1.00 steps/s, ETA 0:00:10",
            ],
        )
        self.assertLen(stream.getvalue().splitlines(), 2)

    def test_step_progress_on_a_terminal_is_erased_before_the_epoch_line(self):
        clock, stream, progress = FakeClock(), io.StringIO(), io.StringIO()
        callback = console_callbacks.EpochLine(stream=stream, progress_stream=progress, clock=clock)
        callback._progress_interactive = True
        callback.set_params({"epochs": 1, "steps": 40})
        callback.on_epoch_begin(0)
        for batch in range(40):
            clock.now += 1.0
            callback.on_train_batch_end(batch)
        callback.on_epoch_end(0, {"loss": 1.0})
        text = progress.getvalue()
        self.assertNotIn("\n", text)
        self.assertTrue(text.endswith("\r"))
        self.assertEqual(text.split("\r")[-2].strip(), "")  # Erased.
        self.assertIn("epoch 1: 40/40 steps (100%)", text)


class TensorBoardTest(tf.test.TestCase):
    def test_groups_per_class_aucs_writes_config_and_images_once(self):
        log_dir = os.path.join(self.get_temp_dir(), "tensorboard")
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, 4)).astype("float32")
        y = (x[:, :2] > 0).astype("float32")
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="sigmoid")])
        model.compile(
            "adam",
            "binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc"), keras.metrics.AUC(name="auc_Effusion")],
        )
        png = contact_sheet.render_contact_sheet({"train": []}, columns=2)[0]
        calls = []

        def images_fn():
            calls.append(1)
            return png

        callback = console_callbacks.TensorBoard(
            log_dir, run_config={"epochs": 2, "model": "resunet"}, images_fn=images_fn, write_graph=False
        )
        model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=16, callbacks=[callback], verbose=0)
        self.assertLen(calls, 1)
        tags = _event_tags(log_dir)
        self.assertContainsSubset(
            {
                "epoch_loss",
                "epoch_auc",
                "epoch_learning_rate",
                "auc_per_class/Effusion",
                "augmented_training_images",
                "run_config",
            },
            tags["train"],
        )
        self.assertContainsSubset({"epoch_auc", "auc_per_class/Effusion"}, tags["validation"])
        self.assertNotIn("epoch_auc_Effusion", tags["train"] | tags["validation"])
        self.assertNotIn("evaluation_auc_Effusion_vs_iterations", tags["validation"])
        self.assertIn("evaluation_auc_vs_iterations", tags["validation"])
        images = console_callbacks.images_from_events(log_dir)
        self.assertLen(images, 1)
        with io.BytesIO(png) as f:
            expected = tf.io.decode_png(f.read(), channels=3).numpy()
        self.assertAllEqual(images[0].shape, expected.shape)

    def test_augmented_records_sheet(self):
        records_dir = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_records(records_dir, split_sizes={"train": 6, "val": 2})
        png = console_callbacks.augmented_records_sheet(records_dir, count=4, columns=2)
        image = tf.io.decode_png(png).numpy()
        layout = contact_sheet.sheet_layout([4], 2)
        self.assertEqual(image.shape[:2], (layout.height, layout.width))
        self.assertGreater(image.std(), 10)


if __name__ == "__main__":
    tf.test.main()
