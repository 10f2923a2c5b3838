"""Tests for trainer/model/run_dir.py: the run directory's readers, history truncation, prepare."""

import json
import math
import os

import tensorflow as tf

from trainer.model import run_dir


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


class HistoryTest(tf.test.TestCase):
    def test_read_history_empty_and_bad_cells_are_nan(self):
        path = os.path.join(self.get_temp_dir(), run_dir.HISTORY_FILE)
        _write(path, "epoch,learning_rate,val_auc_Hernia\n0,0.001,\n1,0.002,0.75\n2,0.003,oops\n")
        history = run_dir.read_history(path)
        self.assertEqual(list(history), ["epoch", "learning_rate", "val_auc_Hernia"])
        self.assertEqual(history["epoch"], [0.0, 1.0, 2.0])
        self.assertEqual(history["learning_rate"], [0.001, 0.002, 0.003])
        self.assertTrue(math.isnan(history["val_auc_Hernia"][0]))
        self.assertEqual(history["val_auc_Hernia"][1], 0.75)
        self.assertTrue(math.isnan(history["val_auc_Hernia"][2]))

    def test_read_history_without_rows_names_the_file(self):
        path = os.path.join(self.get_temp_dir(), "empty.csv")
        _write(path, "epoch,loss\n")
        with self.assertRaisesRegex(ValueError, r"empty.csv: no epochs recorded"):
            run_dir.read_history(path)

    def test_truncate_history_drops_epochs_not_backed_up(self):
        path = os.path.join(self.get_temp_dir(), "h.csv")
        _write(path, "epoch,loss\n0,1.0\n1,0.9\n2,0.8\n")
        run_dir.truncate_history(path, next_epoch=2)
        self.assertEqual(run_dir.read_history(path)["epoch"], [0.0, 1.0])
        run_dir.truncate_history(path, next_epoch=5)  # Nothing newer: unchanged.
        self.assertEqual(run_dir.read_history(path)["epoch"], [0.0, 1.0])
        run_dir.truncate_history(os.path.join(self.get_temp_dir(), "missing.csv"), 0)  # No file: no-op.

    def test_backup_epoch(self):
        backup = run_dir.backup_dir(self.get_temp_dir(), "worker-1")
        self.assertEqual(backup, os.path.join(self.get_temp_dir(), run_dir.BACKUP_DIR, "worker-1"))
        self.assertEqual(run_dir.backup_epoch(backup), 0)
        _write(os.path.join(backup, "training_metadata.json"), json.dumps({"epoch": 3}))
        self.assertEqual(run_dir.backup_epoch(backup), 3)


class ConfigAndPrepareTest(tf.test.TestCase):
    def test_read_config_errors_name_the_path(self):
        missing = os.path.join(self.get_temp_dir(), "nothing")
        with self.assertRaisesRegex(ValueError, r"nothing/config.json does not exist: is .* a run directory"):
            run_dir.read_config(missing)
        bad = os.path.join(self.get_temp_dir(), "bad")
        _write(os.path.join(bad, run_dir.CONFIG_FILE), "{not json")
        with self.assertRaisesRegex(ValueError, r"bad/config.json: not valid JSON"):
            run_dir.read_config(bad)

    def test_prepare_new_resumed_refused_and_overwritten(self):
        root = os.path.join(self.get_temp_dir(), "run")
        identity = {"epochs": 3, "lr_max": 0.1}
        self.assertFalse(run_dir.prepare(root, identity, overwrite=False, is_chief=True))  # New run.
        run_dir.write_config(root, {"train_config": {**identity, "verbose": 2}})
        self.assertFalse(run_dir.prepare(root, identity, overwrite=False, is_chief=True, ignore=("verbose",)))
        os.makedirs(os.path.join(root, run_dir.BACKUP_DIR))
        self.assertTrue(run_dir.prepare(root, identity, overwrite=False, is_chief=True, ignore=("verbose",)))
        other = {"epochs": 1, "lr_max": 0.1}
        with self.assertRaisesRegex(ValueError, r"holds a different run .*epochs: 3 -> 1.*--overwrite"):
            run_dir.prepare(root, other, overwrite=False, is_chief=True, ignore=("verbose",))
        # A non-chief worker deletes nothing.
        self.assertFalse(run_dir.prepare(root, other, overwrite=True, is_chief=False, ignore=("verbose",)))
        self.assertTrue(os.path.exists(os.path.join(root, run_dir.CONFIG_FILE)))
        # The chief deletes what a run wrote, and only that.
        _write(os.path.join(root, "notes.txt"), "mine")
        _write(os.path.join(root, run_dir.THRESHOLDS_FILE), "{}")
        self.assertFalse(run_dir.prepare(root, other, overwrite=True, is_chief=True, ignore=("verbose",)))
        self.assertEqual(os.listdir(root), ["notes.txt"])


if __name__ == "__main__":
    tf.test.main()
