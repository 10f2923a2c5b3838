"""What training shows: one compact line per epoch, a step progress line, and TensorBoard.

`EpochLine` prints one line per epoch (epoch, time, loss, mean AUC, val loss, val mean AUC,
learning rate, and `*` when the monitored metric improved, i.e. when `ModelCheckpoint(
save_best_only=True)` on the same monitor writes the best checkpoint), and within an epoch
that runs longer than `progress_after_s` a step progress line (steps, rate, ETA). Run Keras
with `verbose=0` beside it. The per-class AUCs stay out of the console: they are in
history.csv, TensorBoard and the evaluation reports.

`TensorBoard` is Keras' callback with the scalars grouped so the view stays readable:
per-class AUCs under one tag family (`auc_per_class/<Label>`, train and validation runs)
instead of one card each, the learning rate once (`epoch_learning_rate`); and, once at the start of training, the run configuration as text
and a contact sheet of augmented training records (what the model sees, with their labels).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import keras
import numpy as np
import tensorflow as tf

from cxr_cli import console

PER_CLASS_PREFIX = "auc_"
PER_CLASS_FAMILY = "auc_per_class"
IMAGES_TAG = "augmented_training_images"
CONFIG_TAG = "run_config"


def format_epoch_line(
    epoch: int,
    epochs: int,
    seconds: float,
    logs: Mapping[str, Any],
    *,
    improved: bool = False,
    monitor: str = "val_auc",
) -> str:
    """The compact epoch line, e.g.

    `epoch  3/12  41s  loss 0.2154  auc 0.7713  val_loss 0.1998  val_auc 0.8120  lr 6.40e-05  * best val_auc`

    Args:
      epoch: 0-based epoch index (shown 1-based).
      epochs: the number of epochs of the run.
      seconds: the epoch's wall time.
      logs: Keras' epoch logs; missing entries are left out.
      improved: mark the line as the best `monitor` so far.
      monitor: named in the mark.
    """
    width = len(str(epochs))
    parts = [f"epoch {epoch + 1:>{width}}/{epochs}", _format_seconds(seconds)]
    for key in ("loss", "auc", "val_loss", "val_auc"):
        if key in logs:
            parts.append(f"{key} {float(logs[key]):.4f}")
    if "lr" in logs or "learning_rate" in logs:
        parts.append(f"lr {float(logs.get('lr', logs.get('learning_rate'))):.2e}")
    if improved:
        parts.append(f"* best {monitor}")
    return "  ".join(parts)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 600 else console.format_duration(seconds)


class EpochLine(keras.callbacks.Callback):
    """One line per epoch on `stream`, and a step progress line within long epochs.

    Args:
      monitor: the metric whose improvement is marked (as the best checkpoint's monitor).
      mode: "max" or "min", as `ModelCheckpoint`'s.
      initial_best: the best value before this `fit` (a resumed run's, as `ModelCheckpoint`'s
        `initial_value_threshold`); None: the first epoch is the best so far.
      progress_after_s: show the step progress line once an epoch has run this long.
      stream: where the lines go; default stdout (the progress line goes to stderr).
      clock: time source (tests).
    """

    def __init__(
        self,
        monitor: str = "val_auc",
        mode: str = "max",
        *,
        initial_best: float | None = None,
        progress_after_s: float = 30.0,
        stream: TextIO | None = None,
        progress_stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"EpochLine.mode must be 'max' or 'min', got {mode!r}.")
        self.monitor = monitor
        self.mode = mode
        self.progress_after_s = progress_after_s
        self._stream = stream
        self._progress_stream = progress_stream
        self._clock = clock
        if initial_best is None:
            initial_best = -math.inf if mode == "max" else math.inf
        self._best = float(initial_best)
        self._epoch = 0
        self._epoch_start = 0.0
        self._progress: console.Progress | None = None
        self._progress_interactive: bool | None = None  # None: whether stderr is a terminal.

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._epoch_start = self._clock()
        self._progress = None

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._progress is None:
            if self._clock() - self._epoch_start < self.progress_after_s:
                return
            self._progress = console.Progress(
                self.params.get("steps"),
                description=f"epoch {self._epoch + 1}",
                unit="steps",
                stream=self._progress_stream,
                interactive=self._progress_interactive,
                clock=self._clock,
                start=self._epoch_start,  # Rate and ETA over the whole epoch.
            )
        self._progress.update(batch + 1)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        if self._progress is not None:
            self._progress.clear()  # The epoch line below reports the epoch.
            self._progress = None
        value = logs.get(self.monitor)
        improved = False
        if value is not None and not math.isnan(float(value)):
            value = float(value)
            improved = value > self._best if self.mode == "max" else value < self._best
            if improved:
                self._best = value
        epochs = int(self.params.get("epochs") or epoch + 1)
        line = format_epoch_line(
            epoch, epochs, self._clock() - self._epoch_start, logs, improved=improved, monitor=self.monitor
        )
        stream = self._stream or sys.stdout
        stream.write(line + "\n")
        stream.flush()


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback with per-class AUCs grouped, the config and augmented images.

    Args:
      log_dir: as Keras'.
      run_config: written once as text (a JSON code block) under `run_config`.
      images_fn: returns a PNG (bytes) to write once, at the first epoch of this run, under
        `augmented_training_images`; called then, so its cost is paid only when training.
      per_class_prefix: log keys `<prefix><Label>` (and `val_<prefix><Label>`) go under
        `auc_per_class/<Label>` instead of a card each.
      **kwargs: Keras' TensorBoard arguments.
    """

    def __init__(
        self,
        log_dir: str,
        *,
        run_config: Mapping[str, Any] | None = None,
        images_fn: Callable[[], bytes] | None = None,
        per_class_prefix: str = PER_CLASS_PREFIX,
        **kwargs: Any,
    ):
        super().__init__(log_dir, **kwargs)
        self._run_config = run_config
        self._images_fn = images_fn
        self._prefix = per_class_prefix
        self._writers: dict[str, Any] = {}
        self._images_written = False

    def _writer(self, run: str) -> Any:
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._run_config is not None:
            text = "```\n" + json.dumps(dict(self._run_config), indent=2, default=str) + "\n```"
            with self._writer("train").as_default():
                tf.summary.text(CONFIG_TAG, text, step=0)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        if self._images_fn is not None and not self._images_written:
            self._images_written = True
            png = self._images_fn()
            image = tf.io.decode_png(png, channels=3)[None]
            with self._writer("train").as_default():
                tf.summary.image(
                    IMAGES_TAG,
                    image,
                    step=epoch,
                    description="The first training records after the training augmentation.",
                )

    def on_test_end(self, logs: Mapping[str, Any] | None = None) -> None:
        # Keras writes each validation figure again as `evaluation_<name>_vs_iterations`; the
        # per-class ones are under `auc_per_class/` already.
        logs = {key: value for key, value in (logs or {}).items() if not key.startswith(self._prefix)}
        super().on_test_end(logs)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        logs.pop("lr", None)  # Keras writes the optimizer's rate as `learning_rate`.
        per_class = {}
        for key in list(logs):
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            if name.startswith(self._prefix):
                per_class[(run, name[len(self._prefix) :])] = logs.pop(key)
        super().on_epoch_end(epoch, logs)
        for (run, label), value in sorted(per_class.items()):
            with self._writer(run).as_default():
                tf.summary.scalar(f"{PER_CLASS_FAMILY}/{label}", float(value), step=epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        super().on_train_end(logs)
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def augmented_records_sheet(
    records_dir: str,
    *,
    augment_config: Any = None,
    count: int = 16,
    columns: int = 8,
    seed: int = 0,
) -> bytes:
    """A contact sheet (PNG bytes) of the first `count` training records after augmentation.

    The images go through `trainer.model.augment.make_augment_fn(augment_config)` (an
    `AugmentConfig`; None: its defaults), the augmentation the training step applies (affine
    warp, then per-image standardization), with their labels and metadata under each.
    """
    from tfrecords import contact_sheet
    from tfrecords import manifest as manifest_lib
    from trainer.model import augment as augment_lib

    manifest = manifest_lib.read_manifest(records_dir, check_shards=False)
    samples = contact_sheet.read_samples(records_dir, manifest, "train", count)
    samples = contact_sheet.augment_samples(
        samples, augment_lib.sheet_transform(augment_config, seed=(seed, 1))
    )
    png, _ = contact_sheet.render_contact_sheet(
        {"train": samples}, columns=columns, title="after training augmentation"
    )
    return png


def images_from_events(log_dir: str, tag: str = IMAGES_TAG) -> list[np.ndarray]:
    """Decoded images of `tag` in the event files under `log_dir` (for tests and checks)."""
    images = []
    paths = [
        os.path.join(directory, name)
        for directory, _, names in tf.io.gfile.walk(log_dir)
        for name in names
        if name.startswith("events.out.tfevents.")
    ]
    for path in sorted(paths):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    encoded = tf.make_ndarray(value.tensor)[2]  # [width, height, png, ...]
                    images.append(tf.io.decode_png(encoded).numpy())
    return images
