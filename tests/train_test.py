"""Tests for trainer/training/runner.py, trainer/training/task.py and trainer/train.py on tiny records (32x32, ResUNet depth 2,
width 4)."""

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.evaluation import pipeline as evaluate
from trainer.model import export
from trainer.model import run_dir as run_dir_lib
from trainer.training import callbacks as callbacks_lib
from trainer.training import config as config_lib
from trainer.training import inputs, task
from trainer.training import runner as train_lib
from trainer.training import schedule as lr_schedule

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STRATEGY = lambda: train_lib.create_strategy("auto")  # noqa: E731
# One step per epoch: the tests check the mechanics, not learning.
_TINY = dict(
    depth=2, base_filters=4, batch_size_per_replica=8, steps_per_epoch=1, verbose=0, early_stopping_patience=0
)


def _history_rows(run_dir):
    with open(os.path.join(run_dir, run_dir_lib.HISTORY_FILE)) as f:
        return list(csv.DictReader(f))


class _RaiseAfterEpoch(keras.callbacks.Callback):
    """Simulates a crash right after `epoch` (0-based) finished and was backed up."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"simulated crash after epoch {epoch}")


class _RecordSteps(keras.callbacks.Callback):
    """Records (epoch, batch) of each train-batch end, validation batch ends per pass, steps run."""

    def __init__(self):
        super().__init__()
        self.batch_ends, self.val_batch_ends, self._epoch, self.iterations = [], [], 0, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ends.append((self._epoch, batch))

    def on_test_begin(self, logs=None):
        self.val_batch_ends.append([])

    def on_test_batch_end(self, batch, logs=None):
        self.val_batch_ends[-1].append(batch)

    def on_train_end(self, logs=None):
        self.iterations = int(self.model.optimizer.iterations.numpy())


class _WeightsPerEpoch(keras.callbacks.Callback):
    """Records the sha256 of the model's weights at each epoch end (what ModelCheckpoint saves)."""

    def __init__(self):
        super().__init__()
        self.digests = {}

    def on_epoch_end(self, epoch, logs=None):
        self.digests[epoch] = train_lib.weights_digest(self.model)


class _ForceValAuc(keras.callbacks.Callback):
    """Overrides `val_auc` of chosen epochs; placed first, every later callback sees the value."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        if epoch in self.values:
            logs[callbacks_lib.MONITOR] = self.values[epoch]


@contextlib.contextmanager
def _forced_val_auc(values):
    """Runs `train` with `_ForceValAuc(values)` ahead of the run's own callbacks."""
    build = callbacks_lib.build_callbacks

    def build_first(*args, **kwargs):
        return [_ForceValAuc(values), *build(*args, **kwargs)]

    with mock.patch.object(callbacks_lib, "build_callbacks", build_first):
        yield


def _export_weights_digest(export_dir, like):
    """sha256 of the weights read back from the SavedModel in `export_dir`, in `like`'s order.

    The SavedModel's variables are matched to the Keras model's weights by name (the export
    also holds variables that are no weights, e.g. the dropout's seed).
    """
    by_name = {v.name.removesuffix(":0"): v for v in tf.saved_model.load(export_dir).variables}
    digest = hashlib.sha256()
    for weight in like.weights:
        digest.update(np.ascontiguousarray(by_name[weight.path].numpy()).tobytes())
    return digest.hexdigest()


# Label weights 2**-(j + 1): a record's fingerprint is exact in float32, and sums of a few
# dozen of them too.
_LABEL_WEIGHTS = tf.constant([2.0 ** -(j + 1) for j in range(schema.NUM_LABELS)], tf.float32)


class _RecordCount(keras.metrics.Metric):
    """Records scored since the last reset (summed over replicas)."""

    def __init__(self, name="records_scored"):
        super().__init__(name=name)
        self.total = self.add_variable((), initializer="zeros", name="total", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.total.assign_add(tf.cast(tf.shape(y_true)[0], tf.float32))

    def result(self):
        return self.total


class _LabelFingerprint(_RecordCount):
    """Sum over the records scored of their labels weighed by `_LABEL_WEIGHTS`."""

    def __init__(self):
        super().__init__(name="label_fingerprint")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.total.assign_add(tf.reduce_sum(tf.cast(y_true, tf.float32) * _LABEL_WEIGHTS))


class _ValidationSteps(keras.callbacks.Callback):
    """Per validation pass, (records scored, fingerprint) so far after each step, in order."""

    def __init__(self):
        super().__init__()
        self.passes = []

    def on_test_begin(self, logs=None):
        self.passes.append([])

    def on_test_batch_end(self, batch, logs=None):
        self.passes[-1].append((float(logs["records_scored"]), float(logs["label_fingerprint"])))


def _validation_passes(records_dir, run_dir, *, batch_size_per_replica, epochs=3):
    """Trains as the trainer does (inside the strategy's scope) and returns each epoch's pass.

    Runs under `create_strategy("mirrored")`: every logical CPU device is a replica.
    """
    build_metrics = task.build_metrics
    recorder = _ValidationSteps()
    config = config_lib.TrainConfig(
        records_dir=records_dir,
        run_dir=run_dir,
        **{**_TINY, "batch_size_per_replica": batch_size_per_replica},
        epochs=epochs,
        steps_per_execution=1,  # One logged step per batch.
    )
    with mock.patch.object(
        task, "build_metrics", lambda *labels: [*build_metrics(*labels), _RecordCount(), _LabelFingerprint()]
    ):
        train_lib.train(config, train_lib.create_strategy("mirrored"), extra_callbacks=[recorder])
    return recorder.passes


def _expected_pass(records_dir):
    """(records, fingerprint) of the val split, read directly in one pass."""
    labels = np.concatenate(
        [
            batch[1].numpy()
            for batch in dataset_lib.build_dataset(records_dir, "val", batch_size=64, training=False)
        ]
    )
    return len(labels), float(np.sum(labels.astype(np.float32) * _LABEL_WEIGHTS.numpy()))


class TrainConfigTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("unknown_model", dict(model="alexnet"), "TrainConfig.model must be one of"),
        (
            "zero_batch",
            dict(batch_size_per_replica=0),
            "TrainConfig.batch_size_per_replica must be an integer >= 1",
        ),
        ("bad_imbalance", dict(class_imbalance="smote"), "class_imbalance must be one of"),
        ("bad_precision", dict(mixed_precision="fp8"), "mixed_precision must be one of"),
        ("bad_xla", dict(xla="maybe"), "xla must be one of"),
        ("bad_placement", dict(augment_placement="gpu"), "augment_placement must be one of"),
        ("lr_min_above_max", dict(lr_min=1.0), "lr_min must be <= lr_max"),
        ("bad_export_weights", dict(export_weights="last"), "export_weights must be one of"),
        ("negative_patience", dict(early_stopping_patience=-1), "early_stopping_patience must be an integer"),
        ("bad_decay", dict(exp_decay=1.5), r"exp_decay must be in \(0, 1\]"),
        (
            "zero_steps_per_execution",
            dict(steps_per_execution=0),
            "steps_per_execution must be an integer >= 1",
        ),
        (
            "zero_validation_batch",
            dict(validation_batch_size_per_replica=0),
            "validation_batch_size_per_replica must be None or an integer >= 1",
        ),
    )
    def test_invalid_fields(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            config_lib.TrainConfig(**kwargs)

    def test_resolve_augment_placement(self):
        self.assertEqual(task.resolve_augment_placement("model", "CPU"), "model")
        self.assertEqual(task.resolve_augment_placement("dataset", "GPU"), "dataset")
        self.assertEqual(task.resolve_augment_placement("auto", "CPU"), "dataset")
        self.assertEqual(task.resolve_augment_placement("auto", "GPU"), "model")

    @parameterized.parameters(
        (8, (42, None), 7),
        (1, (42, 6), 1),
        (50, (42, None), 42),
        (8, (42, 6), 6),
        (8, (42, 3), 3),
        (3, (4, 2), 2),
        (5, (7, 6), 1),
    )
    def test_steps_per_execution_divides_every_pass(self, requested, step_counts, expected):
        self.assertEqual(task.whole_epoch_steps_per_execution(requested, *step_counts), expected)

    @parameterized.parameters(
        (192, 32, 1, (6, None)),  # The demo: 6 batches of 32.
        (13, 4, 1, (4, None)),  # 4 + 4 + 4 + 1, one replica.
        (13, 8, 2, (2, None)),  # 4 replica batches: 2 whole steps.
        (9, 8, 2, (2, 4)),  # 3 replica batches: re-batched into 3 + 2 + 2 + 2.
        (13, 6, 2, (3, 6)),  # 5 replica batches: re-batched into 3 + 2 + 2 + 2 + 2 + 2.
    )
    def test_validation_pass(self, records, global_batch, replicas, expected):
        self.assertEqual(task.validation_pass(records, global_batch, replicas), expected)

    def test_validation_pass_needs_a_record_per_replica(self):
        with self.assertRaisesRegex(ValueError, r"val split has 1 records, fewer than the 2 replicas"):
            task.validation_pass(1, 8, 2)

    def test_split_evenly_keeps_the_order(self):
        pass_ = tf.data.Dataset.range(9).batch(4)  # 4 + 4 + 1.
        batches = [batch.numpy().tolist() for batch in inputs.split_evenly(pass_, 9, 4)]
        self.assertEqual(batches, [[0, 1, 2], [3, 4], [5, 6], [7, 8]])

    def test_resolve_jit_compile(self):
        self.assertTrue(task.resolve_jit_compile("on", "CPU"))
        self.assertFalse(task.resolve_jit_compile("off", "GPU"))
        measured = task.XLA_SPEEDUP_BY_DEVICE["CPU"]
        self.assertEqual(task.resolve_jit_compile("auto", "CPU"), all(r > 1 for r in measured.values()))

    def test_global_state_restores_the_dtype_policy(self):
        with train_lib.global_state(0, "mixed_bfloat16"):
            self.assertEqual(keras.config.dtype_policy().name, "mixed_bfloat16")
            first = np.random.random()
        with self.assertRaisesRegex(RuntimeError, "inside"):
            with train_lib.global_state(0, "mixed_float16"):
                self.assertEqual(np.random.random(), first)  # Seeded alike.
                raise RuntimeError("inside")
        self.assertEqual(keras.config.dtype_policy().name, "float32")


class TrainTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.records = os.path.join(tf.compat.v1.test.get_temp_dir(), "records")
        fake_data.write_records(cls.records, image_size=32)

    def _config(self, run_name, **kwargs):
        values = {"records_dir": self.records, **_TINY, **kwargs}
        return config_lib.TrainConfig(run_dir=os.path.join(self.get_temp_dir(), run_name), **values)

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
        self.assertTrue(os.path.exists(os.path.join(config.run_dir, run_dir_lib.BACKUP_DIR)))

        # The same command again continues at epoch 1 with epoch 1's learning rate.
        result = train_lib.train(config, strategy)
        self.assertEqual(result.initial_epoch, 1)
        self.assertEqual(result.epochs_run, 2)
        rows = _history_rows(config.run_dir)
        self.assertEqual([int(row["epoch"]) for row in rows], [0, 1, 2])
        self.assertAllClose(
            [float(row[run_dir_lib.LEARNING_RATE_COLUMN]) for row in rows],
            [lr_fn(e) for e in range(3)],
            rtol=1e-6,
        )
        for column in ("loss", "binary_accuracy", "auc", "val_loss", "val_auc", "val_binary_accuracy"):
            self.assertIn(column, rows[0])
        for label in schema.LABELS:
            self.assertIn(f"val_auc_{label.replace(' ', '_')}", rows[0])
        self.assertFalse(os.path.exists(os.path.join(config.run_dir, run_dir_lib.BACKUP_DIR)))

        saved = json.load(open(os.path.join(config.run_dir, run_dir_lib.CONFIG_FILE)))
        self.assertEqual(saved["image_size"], 32)
        self.assertEqual(saved["records_dir"], self.records)
        self.assertEqual(saved["model"], "resunet")
        # `auto` precision, resolved for this machine, with its reason; validation in one pass
        # of 8 records at batch 8.
        self.assertEqual(saved["mixed_precision"]["requested"], "auto")
        policy = saved["mixed_precision"]["policy"]
        self.assertEqual(saved["dtype_policy"], config_lib.MIXED_PRECISION_POLICIES[policy])
        self.assertTrue(saved["mixed_precision"]["reason"])
        self.assertEqual((saved["validation_batch_size"], saved["validation_steps"]), (8, 1))

        # Best checkpoint and export agree with each other on the same images.
        best = keras.models.load_model(os.path.join(config.run_dir, run_dir_lib.BEST_CHECKPOINT))
        self.assertEqual(best.output_shape, (None, schema.NUM_LABELS))
        # --export_weights=best (the default): the export holds best.keras's weights.
        self.assertEqual(saved["train_config"]["export_weights"], "best")
        self.assertEqual(result.weights_sha256, train_lib.weights_digest(best))
        # Read back from the SavedModel itself.
        self.assertEqual(_export_weights_digest(result.export_dir, best), result.weights_sha256)
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
        self.assertFalse(run_dir_lib.prepare(other.run_dir, other.identity(), overwrite=True, is_chief=True))
        self.assertFalse(os.path.exists(os.path.join(config.run_dir, run_dir_lib.HISTORY_FILE)))
        self.assertFalse(os.path.exists(result.export_dir))

    def test_export_final_is_the_last_epoch_also_when_early_stopping_ends_the_run(self):
        # Epoch 1 scores worse than epoch 0: patience 1 stops after it. `final` exports epoch 1's
        # weights (early stopping restores nothing), best.keras keeps epoch 0's.
        config = self._config("final", epochs=3, early_stopping_patience=1, export_weights="final")
        weights = _WeightsPerEpoch()
        with _forced_val_auc({0: 0.9, 1: 0.1}):
            result = train_lib.train(config, _STRATEGY(), extra_callbacks=[weights])
        self.assertEqual(result.epochs_run, 2)
        self.assertNotEqual(weights.digests[0], weights.digests[1])
        best = keras.models.load_model(os.path.join(config.run_dir, run_dir_lib.BEST_CHECKPOINT))
        self.assertEqual(train_lib.weights_digest(best), weights.digests[0])
        self.assertEqual(result.weights_sha256, weights.digests[1])
        self.assertEqual(_export_weights_digest(result.export_dir, best), weights.digests[1])
        self.assertAllClose(result.best_val_auc, 0.9)
        saved = json.load(open(os.path.join(config.run_dir, run_dir_lib.CONFIG_FILE)))
        self.assertEqual(saved["train_config"]["export_weights"], "final")

    def test_resume_keeps_the_best_epoch(self):
        # Killed after epoch 2 (index 1, the best so far); the resumed epoch 3 scores worse: it
        # must not replace best.keras, nor be marked best, and patience 1 (one epoch without a
        # gain since epoch 2) stops the run after it.
        config = self._config("keep-best", epochs=4, early_stopping_patience=1)
        before = _WeightsPerEpoch()
        with _forced_val_auc({0: 0.6, 1: 0.8}), self.assertRaises(KeyboardInterrupt):
            train_lib.train(config, _STRATEGY(), extra_callbacks=[before, _RaiseAfterEpoch(1)])
        best_path = os.path.join(config.run_dir, run_dir_lib.BEST_CHECKPOINT)
        self.assertEqual(train_lib.weights_digest(keras.models.load_model(best_path)), before.digests[1])

        resumed = dataclasses.replace(config, verbose=2)  # The epoch line; not part of the run's identity.
        stdout = io.StringIO()
        with _forced_val_auc({2: 0.3}), contextlib.redirect_stdout(stdout):
            result = train_lib.train(resumed, _STRATEGY())
        self.assertEqual(result.initial_epoch, 2)
        self.assertEqual(result.epochs_run, 1)  # Stopped early: the wait was restored.
        rows = _history_rows(config.run_dir)
        self.assertEqual([int(row["epoch"]) for row in rows], [0, 1, 2])
        self.assertAllClose([float(row["val_auc"]) for row in rows], [0.6, 0.8, 0.3])
        best = keras.models.load_model(best_path)
        self.assertEqual(train_lib.weights_digest(best), before.digests[1])
        self.assertAllClose(result.best_val_auc, 0.8)
        self.assertEqual(_export_weights_digest(result.export_dir, best), before.digests[1])
        lines = [line for line in stdout.getvalue().splitlines() if line.startswith("epoch")]
        self.assertLen(lines, 1)
        self.assertRegex(lines[0], r"^epoch 3/4 .*val_auc 0\.3000")
        self.assertNotIn("* best", lines[0])

    def _train_variant(self, **kwargs):
        result = train_lib.train(self._config("variant", epochs=1, **kwargs), _STRATEGY())
        self.assertEqual(result.epochs_run, 1)
        self.assertTrue(np.isfinite(result.history["loss"][0]))
        self.assertEqual(result.jit_compile, kwargs.get("xla") == "on")
        self.assertTrue(os.path.exists(os.path.join(result.export_dir, "saved_model.pb")))
        # A mixed-precision run leaves the global policy as it found it.
        self.assertEqual(keras.config.dtype_policy().name, "float32")

    def test_steps_per_execution_keeps_epochs_whole(self):
        # 4 steps per epoch and 8 validation records at batch 4 (2 steps), 3 requested -> 2 per
        # call: two calls per epoch ending at steps 1 and 3, one validation call ending at step
        # 1, and the optimizer ran exactly 4 steps per epoch.
        recorder = _RecordSteps()
        config = self._config(
            "spe", epochs=2, steps_per_epoch=4, steps_per_execution=3, validation_batch_size_per_replica=4
        )
        result = train_lib.train(config, _STRATEGY(), extra_callbacks=[recorder])
        saved = json.load(open(os.path.join(config.run_dir, run_dir_lib.CONFIG_FILE)))
        self.assertEqual(saved["steps_per_execution"], 2)
        self.assertEqual(recorder.batch_ends, [(0, 1), (0, 3), (1, 1), (1, 3)])
        self.assertEqual(recorder.iterations, 8)
        self.assertEqual((saved["validation_batch_size"], saved["validation_steps"]), (4, 2))
        self.assertEqual(len(result.history["val_auc"]), 2)
        self.assertEqual(recorder.val_batch_ends, [[1], [1]])

    def test_weighted_loss_dataset_augmentation_bf16(self):
        self._train_variant(class_imbalance="weights", augment_placement="dataset", mixed_precision="bf16")

    @pytest.mark.slow
    def test_resample_with_xla(self):
        self._train_variant(class_imbalance="resample", xla="on")

    def test_another_vocabulary_sizes_the_head_and_masks_unknown_labels(self):
        # CheXpert-style records: 5 labels, each row with a positive, an uncertain (-1) and an
        # unmentioned (NaN) label; plain (masked) binary cross-entropy, uncertain as ones.
        rng = np.random.default_rng(0)
        values = rng.choice([0.0, 1.0, -1.0, np.nan], size=(24, 5), p=[0.4, 0.3, 0.15, 0.15])
        records = os.path.join(self.get_temp_dir(), "chexpert_records")
        fake_data.write_vocabulary_records(records, {"train": values[:16], "val": values[16:]}, image_size=32)
        config = self._config(
            "chexpert", records_dir=records, epochs=1, class_imbalance="none", uncertain="ones"
        )
        result = train_lib.train(config, _STRATEGY())
        self.assertTrue(np.isfinite(result.history["loss"][0]))
        saved = json.load(open(os.path.join(config.run_dir, run_dir_lib.CONFIG_FILE)))
        self.assertEqual(saved["labels"], list(fake_data.CHEXPERT_LIKE_LABELS))
        self.assertEqual(saved["dataset"], "chexpert")
        self.assertEqual(saved["train_config"]["uncertain"], "ones")
        self.assertEqual(
            export.read_labels(result.export_dir, expected=None)["labels"],
            list(fake_data.CHEXPERT_LIKE_LABELS),
        )
        best = keras.models.load_model(os.path.join(config.run_dir, run_dir_lib.BEST_CHECKPOINT))
        self.assertEqual(best.output_shape, (None, 5))
        self.assertIn("val_auc_Pleural_Effusion", _history_rows(config.run_dir)[0])
        self.assertNotIn("val_auc_Hernia", _history_rows(config.run_dir)[0])
        # The run evaluates on its own records in its own vocabulary, over the known labels.
        report = evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=config.run_dir, split="val", bootstrap_resamples=10, localization=False
            )
        )
        self.assertEqual(report["labels"], list(fake_data.CHEXPERT_LIKE_LABELS))
        self.assertNotIn("cross_dataset", report)
        known = [f["known"] for f in report["splits"]["val"]["findings"]]
        _, mask, _ = fake_data.label_state(values[16:])
        self.assertEqual(known, mask.sum(axis=0).tolist())

    def test_errors_before_training(self):
        strategy = train_lib.create_strategy("one_device")
        with self.assertRaisesRegex(manifest_lib.ManifestError, "does not exist"):
            train_lib.train(
                config_lib.TrainConfig(records_dir=os.path.join(self.get_temp_dir(), "none")), strategy
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
            [
                sys.executable,
                "-m",
                "trainer.train",
                f"--records_dir={self.records}",
                "--batch_size_per_replica=0",
            ],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(run.returncode, 1)
        self.assertIn(
            "trainer.train: error: TrainConfig.batch_size_per_replica must be an integer >= 1, got 0.",
            run.stderr,
        )
        self.assertNotIn("Traceback", run.stderr)


class FullProfileBinaryTest(tf.test.TestCase):
    def test_full_profile_through_the_binary_writes_table_1_rates(self):
        # `python -m trainer.train --profile=full ...`, as a user runs it, on tiny 32x32 records.
        records = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_records(records, image_size=32, split_sizes={"train": 16, "val": 8})
        run_dir = os.path.join(self.get_temp_dir(), "full")
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "trainer.train",
                "--profile=full",
                f"--records_dir={records}",
                f"--run_dir={run_dir}",
                "--epochs=2",
                "--steps_per_epoch=1",
                "--epoch_lines=0",
                "--verbosity=1",  # The effective-configuration block is logged at DEBUG.
            ],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        saved = json.load(open(os.path.join(run_dir, run_dir_lib.CONFIG_FILE)))
        expected = config_lib.get_profile(
            "full", records_dir=records, run_dir=run_dir, epochs=2, steps_per_epoch=1, verbose=0
        )
        self.assertEqual(saved["profile"], "full")
        self.assertEqual(saved["train_config"], expected.to_dict())
        self.assertEqual((saved["batch_size_per_replica"], saved["global_batch_size"]), (16, 16))
        # `auto` precision, resolved for this machine (trainer/training/device.py) and logged with why.
        precision = saved["mixed_precision"]
        self.assertEqual(saved["dtype_policy"], config_lib.MIXED_PRECISION_POLICIES[precision["policy"]])
        self.assertIn(precision["reason"], run.stderr)
        # Table 1 of the 2023 thesis, epochs 0 and 1.
        self.assertAllClose(saved["lr_per_epoch"], [2e-6, 1.425e-5], rtol=1e-9, atol=0)
        rows = _history_rows(run_dir)
        self.assertAllClose(
            [float(row[run_dir_lib.LEARNING_RATE_COLUMN]) for row in rows],
            [2e-6, 1.425e-5],
            rtol=1e-6,
            atol=0,
        )
        # One compact block of the effective configuration at start (with --verbosity=1).
        self.assertEqual(run.stderr.count("Effective training configuration:"), 1)
        self.assertRegex(run.stderr, r"lr_per_epoch\s+= 2e-06, 1\.425e-05")
        self.assertRegex(run.stderr, r"global_batch_size\s+= 16")
        # The weights export/ will hold, named at start-up (both profiles export the best epoch).
        self.assertIn(train_lib.EXPORT_WEIGHTS_LOG["best"], run.stderr)


class ValidationPassTest(tf.test.TestCase, parameterized.TestCase):
    """Every epoch scores each validation record exactly once, in the same order."""

    def _assert_one_pass_per_epoch(self, passes, expected):
        self.assertLen(passes, 3)
        for steps in passes:
            self.assertEqual(steps[-1][0], expected[0])  # Records scored: each once.
            self.assertAllClose(steps[-1][1], expected[1], rtol=0, atol=0)  # And the right ones.
        # The same batches in the same order: equal running totals after every step.
        self.assertEqual(passes[1], passes[0])
        self.assertEqual(passes[2], passes[0])

    def test_one_replica_13_records_batch_4(self):
        records = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_records(records, image_size=32, split_sizes={"train": 16, "val": 13})
        passes = _validation_passes(
            records, os.path.join(self.get_temp_dir(), "run"), batch_size_per_replica=4
        )
        self.assertLen(passes[0], 4)  # 4 + 4 + 4 + 1.
        self._assert_one_pass_per_epoch(passes, _expected_pass(records))

    @pytest.mark.slow  # Three trainings in a fresh process with two logical CPU devices.
    def test_two_replicas_uneven_passes(self):
        # 13 records at 4 per replica: 4 replica batches, 2 steps. 9 at 4: 3 replica batches,
        # the second step has one for the first replica only. 13 at 3: 5 replica batches.
        root = self.get_temp_dir()
        cases = [(13, 4), (9, 4), (13, 3)]
        for records, _ in cases:
            fake_data.write_records(
                os.path.join(root, f"records-{records}"),
                image_size=32,
                split_sizes={"train": 16, "val": records},
            )
        script = textwrap.dedent(f"""
            import json, tensorflow as tf
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            from tests import train_test
            out = [train_test._validation_passes({root!r} + f"/records-{{n}}", {root!r} + f"/run-{{n}}-{{b}}",
                                                 batch_size_per_replica=b) for n, b in {cases!r}]
            print("RESULT" + json.dumps(out))
        """)
        run = subprocess.run(
            [sys.executable, "-c", script], cwd=_REPO, capture_output=True, text=True, timeout=600
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        results = json.loads(run.stdout.split("RESULT")[-1])
        for (records, batch), passes in zip(cases, results):
            with self.subTest(records=records, batch_per_replica=batch):
                passes = [[tuple(step) for step in steps] for steps in passes]
                self.assertLen(passes[0], -(-records // (2 * batch)))
                self._assert_one_pass_per_epoch(
                    passes, _expected_pass(os.path.join(root, f"records-{records}"))
                )


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
            from trainer.training import config as config_lib
            from trainer.training import runner as train_lib
            strategy = train_lib.create_strategy("mirrored")
            result = train_lib.train(config_lib.TrainConfig(records_dir={records!r}, run_dir={run_dir!r},
                                     depth=2, base_filters=4, batch_size_per_replica=4, epochs=2, steps_per_epoch=1,
                                     verbose=0, early_stopping_patience=0), strategy)
            print("RESULT" + json.dumps(dict(replicas=result.num_replicas, epochs=result.epochs_run,
                                             loss=result.history["loss"])))
        """)
        run = subprocess.run(
            [sys.executable, "-c", script], cwd=_REPO, capture_output=True, text=True, timeout=240
        )
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        result = json.loads(run.stdout.split("RESULT")[-1])
        self.assertEqual(result["replicas"], 2)
        self.assertEqual(result["epochs"], 2)
        self.assertTrue(all(np.isfinite(result["loss"])))
        config = json.load(open(os.path.join(run_dir, run_dir_lib.CONFIG_FILE)))
        self.assertEqual(config["num_replicas"], 2)
        self.assertEqual(config["strategy"], "MirroredStrategy")
        # 4 images per replica on 2 replicas.
        self.assertEqual(config["batch_size_per_replica"], 4)
        self.assertEqual(config["global_batch_size"], 8)
        # lr_max scaled by the 2 replicas (the demo profile scales).
        self.assertAllClose(config["lr_max_scaled"], 2 * config_lib.TrainConfig().lr_max)
        # The ramp from lr_start to the scaled lr_max over rampup_epochs (the demo profile's 1e-4,
        # 2 x 1e-3 and 2): 1e-4, then 1e-4 + (2e-3 - 1e-4) / 2 = 1.05e-3.
        defaults = config_lib.TrainConfig()
        scaled = 2 * defaults.lr_max
        self.assertAllClose(
            config["lr_per_epoch"],
            [defaults.lr_start, defaults.lr_start + (scaled - defaults.lr_start) / defaults.rampup_epochs],
        )
        self.assertEqual(len(_history_rows(run_dir)), 2)


if __name__ == "__main__":
    tf.test.main()
