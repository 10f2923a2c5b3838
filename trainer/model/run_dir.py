"""The run directory: its layout, and the readers every stage uses.

    runs/<name>/config.json             the resolved training configuration (`write_config`)
                history.csv             one row per epoch: epoch, learning_rate, losses, metrics,
                                        per-class AUCs (`read_history`)
                checkpoints/best.keras  the epoch with the best validation mean AUC
                backup/                 BackupAndRestore state (backup/<task>/ per worker under
                                        multi-worker training); deleted when the run completes
                tensorboard/            TensorBoard event files
                export/                 SavedModel + labels.json (trainer.model.export)
                reports/                evaluation reports (trainer.evaluation.pipeline), with thresholds.json
                predictions/            trainer.prediction.predictor's CSV and Grad-CAM overlays

Training writes the first six, `trainer.evaluation.pipeline` the reports, `trainer.prediction.predictor` the
predictions; all of them name these paths through this module.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from cxr_cli import errors

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
CHECKPOINTS_DIR = "checkpoints"
BEST_CHECKPOINT = os.path.join(CHECKPOINTS_DIR, "best.keras")
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
EXPORT_DIR = "export"
REPORTS_DIR = "reports"
THRESHOLDS_FILE = os.path.join(REPORTS_DIR, "thresholds.json")
PREDICTIONS_DIR = "predictions"
# The learning-rate column of history.csv, as Keras' LearningRateScheduler logs it.
LEARNING_RATE_COLUMN = "learning_rate"
# What a replaced run loses: everything a run directory holds.
RUN_OUTPUTS = (
    CONFIG_FILE,
    HISTORY_FILE,
    CHECKPOINTS_DIR,
    BACKUP_DIR,
    TENSORBOARD_DIR,
    EXPORT_DIR,
    REPORTS_DIR,
    PREDICTIONS_DIR,
)
# BackupAndRestore's own file, holding the next epoch to run.
_BACKUP_METADATA = "training_metadata.json"


def path(run_dir: str, name: str) -> str:
    """`run_dir/name`, e.g. `path(run_dir, BEST_CHECKPOINT)`."""
    return os.path.join(run_dir, name)


def read_config(run_dir: str) -> dict[str, Any]:
    """Reads `run_dir/config.json` (written by the trainer).

    Raises:
      ValueError: the run directory or its config is missing or not JSON, naming the path.
    """
    config_path = path(run_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(config_path):
        raise errors.ValidationError(
            f"{config_path} does not exist: is {run_dir!r} a run directory written by "
            "`python -m trainer.train`?"
        )
    with tf.io.gfile.GFile(config_path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise errors.ValidationError(f"{config_path}: not valid JSON ({e}).") from e


def write_config(run_dir: str, config: dict[str, Any]) -> str:
    """Writes `config` as `run_dir/config.json`; returns the path."""
    tf.io.gfile.makedirs(run_dir)
    config_path = path(run_dir, CONFIG_FILE)
    with tf.io.gfile.GFile(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return config_path


def read_history(history_path: str) -> dict[str, list[float]]:
    """Reads a `history.csv` into columns of floats; empty or unreadable cells become NaN.

    Args:
      history_path: the file (usually `path(run_dir, HISTORY_FILE)`).

    Returns:
      {column: [value per epoch]} in the file's column order.

    Raises:
      ValueError: the file has no header or no rows, naming the file.
    """
    with tf.io.gfile.GFile(history_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise errors.ValidationError(f"{history_path}: no epochs recorded (empty history).")
    return {key: [_to_float(row.get(key)) for row in rows] for key in rows[0]}


def _to_float(cell: str | None) -> float:
    try:
        return float(cell) if cell not in (None, "") else math.nan
    except ValueError:
        return math.nan


def truncate_history(history_path: str, next_epoch: int) -> None:
    """Drops rows of epochs >= next_epoch: written just before a kill, never backed up."""
    if not tf.io.gfile.exists(history_path):
        return
    with tf.io.gfile.GFile(history_path) as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) < next_epoch]
    if len(kept) != len(rows):
        with tf.io.gfile.GFile(history_path, "w") as f:
            csv.writer(f).writerows(kept)


def backup_dir(run_dir: str, task: str | None = None) -> str:
    """BackupAndRestore's directory: `backup/`, or `backup/<task>/` for one worker of several."""
    return path(run_dir, BACKUP_DIR) if task is None else os.path.join(run_dir, BACKUP_DIR, task)


def backup_epoch(backup_path: str) -> int:
    """The next epoch recorded by BackupAndRestore in `backup_path` (0 when there is none)."""
    metadata = os.path.join(backup_path, _BACKUP_METADATA)
    if not tf.io.gfile.exists(metadata):
        return 0
    with tf.io.gfile.GFile(metadata) as f:
        return int(json.load(f).get("epoch", 0))


def differences(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every key whose value differs between two config dicts."""
    keys = sorted(set(previous) | set(current))
    return [
        f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in keys if previous.get(k) != current.get(k)
    ]


def remove_outputs(run_dir: str) -> None:
    """Deletes everything a run wrote (`RUN_OUTPUTS`), and nothing else, from `run_dir`."""
    for name in RUN_OUTPUTS:
        target = path(run_dir, name)
        if tf.io.gfile.isdir(target):
            tf.io.gfile.rmtree(target)
        elif tf.io.gfile.exists(target):
            tf.io.gfile.remove(target)


def prepare(
    run_dir: str,
    identity: dict[str, Any],
    *,
    overwrite: bool,
    is_chief: bool,
    ignore: Sequence[str] = (),
) -> bool:
    """Checks `run_dir` against the run's `identity`; returns True when the run resumes.

    A directory holding another run's config.json is refused unless `overwrite`, in which case
    the chief deletes that run's outputs first. Non-chief workers only read.

    Args:
      run_dir: the run directory.
      identity: the fields that define what the run computes (`TrainConfig.identity()`).
      overwrite: replace a different run instead of refusing.
      is_chief: whether this process may delete.
      ignore: fields of the saved config that may differ (they do not change what is computed).

    Returns:
      True when the directory holds this run's backup (resume), else False.

    Raises:
      ValueError: a different run without `overwrite` (the message lists the differences).
    """
    config_path = path(run_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(config_path):
        return tf.io.gfile.exists(path(run_dir, BACKUP_DIR))
    previous = read_config(run_dir).get("train_config", {})
    previous_identity = {k: v for k, v in previous.items() if k not in ignore}
    diff = differences(previous_identity, identity)
    if not diff:
        return tf.io.gfile.exists(path(run_dir, BACKUP_DIR))
    if not overwrite:
        raise errors.ValidationError(
            f"run_dir {run_dir!r} holds a different run ({config_path} differs in {'; '.join(diff)}). "
            "Pass --overwrite to replace it, or choose another --run_dir."
        )
    if is_chief:
        remove_outputs(run_dir)
    return False
