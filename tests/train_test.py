"""Tests for trainer/train_lib.py and trainer/train.py on tiny records (32x32, ResUNet depth 2, width 4)."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer import export, lr_schedule, train_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STRATEGY = lambda: train_lib.create_strategy("auto")  # noqa: E731
# One step per epoch: the tests check the mechanics, not learning.
_TINY = dict(depth=2, base_filters=4, batch_size=8, steps_per_epoch=1, verbose=0, early_stopping_patience=0)


def _history_rows(run_dir):
    with open(os.path.join(run_dir, train_lib.HISTORY_FILE)) as f:
        return list(csv.DictReader(f))


class _RaiseAfterEpoch(keras.callbacks.Callback):
    """Simulates a crash right after `epoch` (0-based) finished and was backed up."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated crash after epoch {epoch}")


class TrainConfigTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("unknown_model", dict(model="alexnet"), "TrainConfig.model must be one of"),
        ("zero_batch", dict(batch_size=0), "TrainConfig.batch_size must be an integer >= 1"),
        ("bad_imbalance", dict(class_imbalance="smote"), "class_imbalance must be one of"),
        ("bad_precision", dict(mixed_precision="fp8"), "mixed_precision must be one of"),
        ("bad_xla", dict(xla="maybe"), "xla must be one of"),
        ("bad_placement", dict(augment_placement="gpu"), "augment_placement must be one of"),
        ("lr_min_above_max", dict(lr_min=1.0), "lr_min must be <= lr_max"),
        ("negative_patience", dict(early_stopping_patience=-1), "early_stopping_patience must be an integer"),
        ("bad_decay", dict(exp_decay=1.5), r"exp_decay must be in \(0, 1\]"),
    )
    def test_invalid_fields(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            train_lib.TrainConfig(**kwargs)

    def test_resolve_augment_placement(self):
        self.assertEqual(train_lib.resolve_augment_placement("model", "CPU"), "model")
        self.assertEqual(train_lib.resolve_augment_placement("dataset", "GPU"), "dataset")
        self.assertEqual(train_lib.resolve_augment_placement("auto", "CPU"), "dataset")
        self.assertEqual(train_lib.resolve_augment_placement("auto", "GPU"), "model")

    def test_resolve_jit_compile(self):
        self.assertTrue(train_lib.resolve_jit_compile("on", "CPU"))
        self.assertFalse(train_lib.resolve_jit_compile("off", "GPU"))
        measured = train_lib.XLA_SPEEDUP_BY_DEVICE["CPU"]
        self.assertEqual(train_lib.resolve_jit_compile("auto", "CPU"), all(r > 1 for r in measured.values()))


class MetricsAndLossTest(tf.test.TestCase):
    def test_mean_auc_skips_labels_without_both_classes(self):
        # Label 0: scores order positives above negatives -> AUC 1. Label 1: reversed -> AUC 0.
        # Label 2..14: no positive at all -> undefined, skipped (Keras' AUC would count 0).
        y_true = np.zeros((4, schema.NUM_LABELS), np.float32)
        y_true[:2, 0] = 1
        y_true[:2, 1] = 1
        y_pred = np.full((4, schema.NUM_LABELS), 0.5, np.float32)
        y_pred[:, 0] = [0.9, 0.8, 0.2, 0.1]
        y_pred[:, 1] = [0.1, 0.2, 0.8, 0.9]
        metric = train_lib.MeanAUC()
        metric.update_state(y_true, y_pred)
        self.assertAllClose(metric.result(), 0.5, atol=1e-3)  # (1 + 0) / 2.
        per_class = [train_lib.ClassAUC(i) for i in (0, 1, 2)]
        for m in per_class:
            m.update_state(y_true, y_pred)
        self.assertEqual(per_class[0].name, "auc_Atelectasis")
        self.assertAllClose(per_class[0].result(), 1.0, atol=1e-3)
        self.assertAllClose(per_class[1].result(), 0.0, atol=1e-3)
        self.assertTrue(np.isnan(per_class[2].result()))
        self.assertEqual(train_lib.ClassAUC(14).name, "auc_No_Finding")

    def test_weighted_bce(self):
        # One label, p = 0.25: positive term -log(0.25) * w, negative term -log(0.75).
        weights = np.ones(schema.NUM_LABELS, np.float32)
        weights[0] = 3.0
        loss = train_lib.WeightedBinaryCrossentropy(weights)
        y_true = np.zeros((2, schema.NUM_LABELS), np.float32)
        y_true[0, 0] = 1
        y_pred = np.full((2, schema.NUM_LABELS), 0.25, np.float32)
        per_label = np.full((2, schema.NUM_LABELS), -np.log(0.75))
        per_label[0, 0] = -3.0 * np.log(0.25)
        self.assertAllClose(loss(y_true, y_pred), per_label.mean(), rtol=1e-5)
        # All weights 1 equals the plain binary cross-entropy.
        plain = train_lib.WeightedBinaryCrossentropy(np.ones(schema.NUM_LABELS))
        self.assertAllClose(
            plain(y_true, y_pred), keras.losses.BinaryCrossentropy()(y_true, y_pred), rtol=1e-5
        )

    def test_stop_on_nan_names_epoch_and_batch(self):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        callback = train_lib.StopOnNaN()
        callback.set_model(model)
        callback.on_epoch_begin(2)
        callback.on_train_batch_end(0, {"loss": 0.5})
        with self.assertRaisesRegex(FloatingPointError, r"loss became nan at epoch 3, batch 5"):
            callback.on_train_batch_end(4, {"loss": float("nan")})


class TrainTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.records = os.path.join(tf.compat.v1.test.get_temp_dir(), "records")
        fake_data.write_records(cls.records, image_size=32)

    def _config(self, run_name, **kwargs):
        values = {"records_dir": self.records, **_TINY, **kwargs}
        return train_lib.TrainConfig(run_dir=os.path.join(self.get_temp_dir(), run_name), **values)

    def test_train_resume_and_export(self):
        strategy = train_lib.create_strategy("one_device")
        config = self._config(
            "resume", epochs=3, rampup_epochs=1, sustain_epochs=0, lr_start=1e-3, lr_max=2e-3, exp_decay=0.5
        )
        # 1e-3, then 2e-3, then 2e-3 * 0.5.
        lr_fn = lr_schedule.build_lr_fn(lr_start=1e-3, lr_max=2e-3, rampup_epochs=1, exp_decay=0.5)
        with self.assertRaisesRegex(KeyboardInterrupt, "simulated crash after epoch 0"):
            train_lib.train(config, strategy, extra_callbacks=[_RaiseAfterEpoch(0)])
        self.assertEqual([row["epoch"] for row in _history_rows(config.run_dir)], ["0"])
        self.assertTrue(os.path.exists(os.path.join(config.run_dir, train_lib.BACKUP_DIR)))

        # The same command again continues at epoch 1 with epoch 1's learning rate.
        result = train_lib.train(config, strategy)
        self.assertEqual(result.initial_epoch, 1)
        self.assertEqual(result.epochs_run, 2)
        rows = _history_rows(config.run_dir)
        self.assertEqual([int(row["epoch"]) for row in rows], [0, 1, 2])
        self.assertAllClose([float(row["lr"]) for row in rows], [lr_fn(e) for e in range(3)], rtol=1e-6)
        for column in ("loss", "binary_accuracy", "auc", "val_loss", "val_auc", "val_binary_accuracy"):
            self.assertIn(column, rows[0])
        for label in schema.LABELS:
            self.assertIn(f"val_auc_{label.replace(' ', '_')}", rows[0])
        self.assertFalse(os.path.exists(os.path.join(config.run_dir, train_lib.BACKUP_DIR)))

        saved = json.load(open(os.path.join(config.run_dir, train_lib.CONFIG_FILE)))
        self.assertEqual(saved["image_size"], 32)
        self.assertEqual(saved["records_dir"], self.records)
        self.assertEqual(saved["model"], "resunet")

        # Best checkpoint and export agree with each other on the same images.
        best = keras.models.load_model(os.path.join(config.run_dir, train_lib.BEST_CHECKPOINT))
        self.assertEqual(best.output_shape, (None, schema.NUM_LABELS))
        self.assertEqual(export.read_labels(result.export_dir)["image_size"], 32)
        loaded = tf.saved_model.load(result.export_dir)
        pixels = fake_data.gray_pixels(32, 32)[None, ..., None]
        served = loaded.signatures[export.SERVE_PIXELS](images=tf.constant(pixels))["probabilities"]
        self.assertEqual(served.shape, (1, schema.NUM_LABELS))
        self.assertTrue(np.isfinite(result.best_val_auc))

        # A different config in the same run dir is refused; with overwrite its outputs go.
        other = self._config("resume", epochs=1, lr_max=1e-3)
        with self.assertRaisesRegex(ValueError, r"holds a different run .*epochs: 3 -> 1"):
            train_lib.train(other, strategy)
        self.assertFalse(train_lib.prepare_run_dir(dataclasses_replace(other, overwrite=True), is_chief=True))
        self.assertFalse(os.path.exists(os.path.join(config.run_dir, train_lib.HISTORY_FILE)))
        self.assertFalse(os.path.exists(result.export_dir))

    def _train_variant(self, **kwargs):
        result = train_lib.train(self._config("variant", epochs=1, **kwargs), _STRATEGY())
        self.assertEqual(result.epochs_run, 1)
        self.assertTrue(np.isfinite(result.history["loss"][0]))
        self.assertEqual(result.jit_compile, kwargs.get("xla") == "on")
        self.assertTrue(os.path.exists(os.path.join(result.export_dir, "saved_model.pb")))
        # A mixed-precision run leaves the global policy as it found it.
        self.assertEqual(keras.config.dtype_policy().name, "float32")

    def test_weighted_loss_dataset_augmentation_bf16(self):
        self._train_variant(class_imbalance="weights", augment_placement="dataset", mixed_precision="bf16")

    @pytest.mark.slow
    def test_resample_with_xla(self):
        self._train_variant(class_imbalance="resample", xla="on")

    def test_errors_before_training(self):
        strategy = train_lib.create_strategy("one_device")
        with self.assertRaisesRegex(manifest_lib.ManifestError, "does not exist"):
            train_lib.train(
                train_lib.TrainConfig(records_dir=os.path.join(self.get_temp_dir(), "none")), strategy
            )
        no_manifest = os.path.join(self.get_temp_dir(), "no_manifest")
        fake_data.write_records(no_manifest, image_size=32)
        os.remove(os.path.join(no_manifest, manifest_lib.MANIFEST_NAME))
        with self.assertRaisesRegex(manifest_lib.ManifestError, "manifest"):
            train_lib.train(self._config("x", records_dir=no_manifest), strategy)
        odd = os.path.join(self.get_temp_dir(), "odd")
        fake_data.write_records(odd, image_size=36, split_sizes={"train": 4, "val": 2})
        with self.assertRaisesRegex(ValueError, r"image_size 36 is not a multiple of 2\*\*depth = 8"):
            train_lib.train(self._config("odd_run", records_dir=odd, depth=3), strategy)
        # Nothing was written for the refused runs.
        self.assertFalse(os.path.exists(os.path.join(self.get_temp_dir(), "odd_run")))

    def test_binary_refuses_bad_flags_without_traceback(self):
        run = subprocess.run(
            [sys.executable, "-m", "trainer.train", f"--records_dir={self.records}", "--batch_size=0"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(run.returncode, 1)
        self.assertIn(
            "trainer.train: error: TrainConfig.batch_size must be an integer >= 1, got 0.", run.stderr
        )
        self.assertNotIn("Traceback", run.stderr)


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


class MirroredStrategyTest(tf.test.TestCase):
    def test_two_epochs_on_two_logical_cpus(self):
        # A fresh process: logical devices must be configured before TensorFlow initializes them.
        records = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_records(records, image_size=32)
        run_dir = os.path.join(self.get_temp_dir(), "run")
        script = textwrap.dedent(f"""
            import json, tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            from trainer import train_lib
            strategy = train_lib.create_strategy("mirrored")
            try:
                train_lib.train(train_lib.TrainConfig(records_dir={records!r}, run_dir={run_dir!r} + "_odd",
                                depth=2, base_filters=4, batch_size=7, verbose=0), strategy)
            except ValueError as error:
                odd_error = str(error)
            result = train_lib.train(train_lib.TrainConfig(records_dir={records!r}, run_dir={run_dir!r},
                                     depth=2, base_filters=4, batch_size=8, epochs=2, steps_per_epoch=1, verbose=0,
                                     early_stopping_patience=0), strategy)
            print("RESULT" + json.dumps(dict(replicas=result.num_replicas, epochs=result.epochs_run,
                                             loss=result.history["loss"], odd_error=odd_error)))
        """)
        run = subprocess.run(
            [sys.executable, "-c", script], cwd=_REPO, capture_output=True, text=True, timeout=240
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        result = json.loads(run.stdout.split("RESULT")[-1])
        self.assertEqual(result["replicas"], 2)
        self.assertEqual(result["epochs"], 2)
        self.assertTrue(all(np.isfinite(result["loss"])))
        self.assertIn("batch_size 7 is not divisible by the 2 replicas", result["odd_error"])
        config = json.load(open(os.path.join(run_dir, train_lib.CONFIG_FILE)))
        self.assertEqual(config["num_replicas"], 2)
        self.assertEqual(config["strategy"], "MirroredStrategy")
        # lr_max scaled by the 2 replicas.
        self.assertAllClose(config["lr_max_scaled"], 2 * train_lib.TrainConfig().lr_max)
        self.assertEqual(len(_history_rows(run_dir)), 2)


if __name__ == "__main__":
    tf.test.main()
