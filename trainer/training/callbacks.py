"""The training run's callbacks, assembled in one place (`build_callbacks`).

Order matters and is fixed here:

  1. `keras.callbacks.LearningRateScheduler(lr_fn)`: sets the epoch's rate at epoch begin (also
     the first epoch after a resume: it is called with the restored epoch index) and logs it
     as `learning_rate`.
  2. `StopOnNaN`: raises on a NaN or infinite loss, keeping the last backup.
  3. `CSVLogger` (chief): `history.csv`, after the scheduler so the row holds the rate, and
     before the backup, so a kill between the two leaves a row that a resume drops.
  4. `BackupAndRestore`: per-epoch state to resume from.
  5. `ModelCheckpoint`: `checkpoints/best.keras` by validation mean AUC.
  6. `TensorBoard` (chief, when installed; `console_callbacks.TensorBoard`: per-class AUCs
     grouped, the run configuration, augmented training records), 7. `EarlyStopping` (when
     its patience is > 0), 8. `console_callbacks.EpochLine` (the compact epoch line, when
     asked for), 9. the caller's extra callbacks.

One rule picks the best epoch for all of them: the highest `MONITOR` (validation mean AUC),
the first epoch to reach it winning a tie (Keras' strict "greater than"). After a resume,
`ModelCheckpoint`, `EarlyStopping` and `EpochLine` start from the best epoch of the
run's `history.csv` (`BestSoFar`), so a worse epoch never replaces `best.keras`, patience
continues where it stopped, and `* best` marks only real improvements. Early stopping stops;
it never puts earlier weights back into the model (`restore_best_weights=False`): the model
holds its last epoch's weights when `fit` returns, and `best.keras` the best epoch's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from trainer.model import run_dir as run_dir_lib
from trainer.training import display as console_callbacks

# What the checkpoint and early stopping follow: the validation mean AUC (`objectives.MeanAUC`).
MONITOR = "val_auc"


class StopOnNaN(keras.callbacks.Callback):
    """Raises a clear error as soon as the training loss is NaN or infinite.

    Raising (rather than `stop_training`) keeps the backup of the last finished epoch, so the
    run can be inspected or resumed, and nothing is exported from broken weights.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            raise FloatingPointError(
                f"Training stopped: the loss became {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1} "
                f"(learning rate {lr:.3g}). Lower --lr_max, use --mixed_precision=none, or check the "
                f"records for bad labels; the last finished epoch is kept in the run's backup/."
            )


@dataclasses.dataclass(frozen=True)
class CallbackPaths:
    """Where this process's callbacks write.

    Attributes:
      history_csv: `history.csv`, or None on non-chief workers (they write no history).
      backup_dir: this worker's BackupAndRestore directory.
      best_checkpoint: `checkpoints/best.keras` (a scratch path on non-chief workers, which must
        save in lockstep with the chief).
      tensorboard_dir: TensorBoard logs, or None.
    """

    history_csv: str | None
    backup_dir: str
    best_checkpoint: str
    tensorboard_dir: str | None


@dataclasses.dataclass(frozen=True)
class BestSoFar:
    """The best epoch of the epochs a resumed run already trained (from its `history.csv`).

    Attributes:
      value: its `MONITOR` value: the score of the weights in `best.keras`.
      epoch: its 0-based index.
      epochs_done: epochs finished before the resume (the first epoch this call trains).
    """

    value: float
    epoch: int
    epochs_done: int

    @property
    def epochs_since(self) -> int:
        """Finished epochs after the best one: EarlyStopping's `wait`."""
        return self.epochs_done - 1 - self.epoch


def best_so_far(history_csv: str, epochs_done: int) -> BestSoFar | None:
    """The best epoch among the first `epochs_done` rows of `history_csv`, by the rule above.

    Args:
      history_csv: the run's `history.csv` (may not exist).
      epochs_done: the epoch the run resumes at; later rows (written before a kill, never
        backed up) are ignored.

    Returns:
      None when nothing was trained yet or no epoch has a finite `MONITOR` value.
    """
    if epochs_done <= 0 or not tf.io.gfile.exists(history_csv):
        return None
    history = run_dir_lib.read_history(history_csv)
    scored = [
        (value, int(epoch))
        for epoch, value in zip(history.get("epoch", []), history.get(MONITOR, []))
        if math.isfinite(value) and math.isfinite(epoch) and epoch < epochs_done
    ]
    if not scored:
        return None
    value, epoch = max(scored, key=lambda pair: (pair[0], -pair[1]))  # The first epoch wins a tie.
    return BestSoFar(value=value, epoch=epoch, epochs_done=epochs_done)


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping on `MONITOR`, continuing from a resumed run's best epoch.

    It never restores earlier weights: the model keeps its last epoch's (`best.keras` holds the
    best epoch's), so `--export_weights=final` exports the last epoch.

    Args:
      patience: epochs without a gain before stopping.
      resumed_from: the best epoch before a resume; its value, epoch and the epochs trained
        since become Keras' `best`, `best_epoch` and `wait`.
    """

    def __init__(self, patience: int, *, resumed_from: BestSoFar | None = None):
        super().__init__(monitor=MONITOR, mode="max", patience=patience, restore_best_weights=False)
        self.resumed_from = resumed_from

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.resumed_from is not None:
            self.best = self.resumed_from.value
            self.best_epoch = self.resumed_from.epoch
            self.wait = self.resumed_from.epochs_since


def build_callbacks(
    lr_fn: Callable[[int], float],
    paths: CallbackPaths,
    *,
    early_stopping_patience: int,
    resumed_from: BestSoFar | None = None,
    extra: Sequence[keras.callbacks.Callback] = (),
    epoch_line: bool = False,
    run_config: Mapping[str, Any] | None = None,
    images_fn: Callable[[], bytes] | None = None,
) -> list[keras.callbacks.Callback]:
    """The run's callbacks, in the order of the module docstring.

    Args:
      lr_fn: learning rate of a 0-based epoch index (`lr_schedule.build_lr_fn`).
      paths: where to write.
      early_stopping_patience: epochs without a gain in `MONITOR` before stopping; 0 disables
        early stopping.
      resumed_from: the best epoch before a resume (`best_so_far`); None for a fresh run.
      extra: appended last (tests use this to interrupt a run).
      epoch_line: print one compact line per epoch (run `fit` with verbose=0 beside it).
      run_config: written to TensorBoard as text.
      images_fn: a PNG for TensorBoard's images at the first epoch
        (`console_callbacks.augmented_records_sheet`).

    Returns:
      The list for `model.fit(callbacks=...)`.
    """
    callbacks = _state_callbacks(lr_fn, paths, resumed_from)
    if paths.tensorboard_dir is not None and _tensorboard_installed():
        callbacks.append(
            console_callbacks.TensorBoard(
                paths.tensorboard_dir,
                write_graph=False,
                profile_batch=0,
                run_config=run_config,
                images_fn=images_fn,
            )
        )
    if early_stopping_patience:
        callbacks.append(EarlyStopping(early_stopping_patience, resumed_from=resumed_from))
    if epoch_line:
        initial_best = resumed_from.value if resumed_from is not None else None
        callbacks.append(console_callbacks.EpochLine(MONITOR, "max", initial_best=initial_best))
    return callbacks + list(extra)


def _state_callbacks(
    lr_fn: Callable[[int], float], paths: CallbackPaths, resumed_from: BestSoFar | None
) -> list[keras.callbacks.Callback]:
    """Callbacks 1-5: the rate, the NaN stop, the history, the backup and the best checkpoint."""
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.LearningRateScheduler(lr_fn), StopOnNaN()]
    if paths.history_csv is not None:
        callbacks.append(keras.callbacks.CSVLogger(paths.history_csv, append=True))
    callbacks += [
        keras.callbacks.BackupAndRestore(paths.backup_dir),
        keras.callbacks.ModelCheckpoint(
            paths.best_checkpoint,
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            # After a resume only an epoch better than those already trained replaces best.keras.
            initial_value_threshold=resumed_from.value if resumed_from is not None else None,
        ),
    ]
    return callbacks


def chief_paths(run_dir: str, backup_dir: str) -> CallbackPaths:
    """The chief's paths: everything in the run directory."""
    return CallbackPaths(
        history_csv=run_dir_lib.path(run_dir, run_dir_lib.HISTORY_FILE),
        backup_dir=backup_dir,
        best_checkpoint=run_dir_lib.path(run_dir, run_dir_lib.BEST_CHECKPOINT),
        tensorboard_dir=run_dir_lib.path(run_dir, run_dir_lib.TENSORBOARD_DIR),
    )


def worker_paths(scratch_dir: str, backup_dir: str) -> CallbackPaths:
    """A non-chief worker's paths: its own backup, a scratch checkpoint, no history or logs."""
    return CallbackPaths(
        history_csv=None,
        backup_dir=backup_dir,
        best_checkpoint=run_dir_lib.path(scratch_dir, run_dir_lib.BEST_CHECKPOINT),
        tensorboard_dir=None,
    )


def _tensorboard_installed() -> bool:
    # tf.summary needs the tensorboard package, which TF 2.21 does not pull in.
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        logging.warning(
            "tensorboard is not installed (pip install tensorboard); no TensorBoard logs written."
        )
        return False
    return True
